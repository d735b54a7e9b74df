//! The Redis connection handle shared by every component.
//!
//! One multiplexed, auto-reconnecting connection carries ordinary commands and
//! pipelines; blocking reads (`XREADGROUP BLOCK`) each get a dedicated
//! connection because a blocked client holds up everything queued behind it.
//!
//! The same handle speaks to one Redis or to a Redis Cluster
//! ([`RedisTarget`]). This module owns the handle ([`Redis`], [`Conn`]) and
//! what is the same in both modes; the rest lives in:
//!
//! - `single`: connections to one server.
//! - `cluster`: routing by slot, pipelines split per slot, `WAIT` for
//!   replicas, connections rebuilt from the seeds after a failover.
//! - `pubsub`: the [`Subscriber`] of a gateway.
//! - `streams`: reading stream replies (`XRANGE` and the like).
//!
//! Nothing here knows about queues, graphs or the gateway.

mod cluster;
mod pubsub;
mod single;
pub(crate) mod streams;

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub use cluster::ClusterHandle;
pub use pubsub::{ClusterSubscriber, Subscriber};

/// How long an ordinary command may take before the caller sees an error.
/// Generous, because a Redis that pauses (AOF rewrite, CLIENT PAUSE) should
/// slow graphq down rather than fail it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where graphq keeps its data: one Redis, or a Redis Cluster known by some of
/// its nodes (`--redis-cluster`, `GRAPHQ_REDIS_CLUSTER`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// For messages: the URL, or the seed nodes joined by commas.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Single(url) => url.clone(),
            RedisTarget::Cluster(nodes) => format!("cluster {}", nodes.join(",")),
        }
    }
}

/// A cheap-to-clone handle to one Redis server or one Redis Cluster.
#[derive(Clone)]
pub struct Redis {
    target: Target,
    /// Shared connection for everything that does not block.
    conn: Conn,
    /// In a cluster: replicas an acknowledged write waits for, and how long.
    wait: Wait,
}

/// `WAIT replicas timeout_ms` after writes that are acknowledged to someone
/// (an enqueue answered ACCEPTED, an applied command): in a cluster, a
/// master's loss then loses nothing that had reached its replica. A shard
/// with no replica left (lost, or its master just promoted) cannot do better:
/// the write stands with one copy. A lagging replica gets a longer wait, and
/// a write still unconfirmed after it fails (`cluster` has the details).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub replicas: u32,
    pub timeout_ms: u64,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            replicas: 1,
            timeout_ms: 100,
        }
    }
}

#[derive(Clone)]
enum Target {
    Single {
        /// Kept to open dedicated connections for blocking reads.
        client: Client,
        /// As configured; pub/sub connections are opened from it with RESP3.
        url: String,
    },
    Cluster {
        nodes: Vec<String>,
    },
}

impl Redis {
    /// Connects once; fails when Redis is unreachable right now. Callers that
    /// must wait for Redis use [`Redis::connect_with_retry`].
    pub async fn connect(url: &str) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let conn = Conn::Single(single::manager(&client, Some(RESPONSE_TIMEOUT)).await?);
        Ok(Redis {
            target: Target::Single {
                client,
                url: url.to_string(),
            },
            conn,
            wait: Wait::default(),
        })
    }

    /// Connects to a Redis Cluster through any of `nodes` (seed URLs); the
    /// rest of the cluster is discovered from them.
    pub async fn connect_cluster(nodes: &[String]) -> RedisResult<Self> {
        let conn = ClusterHandle::connect(nodes, Some(RESPONSE_TIMEOUT)).await?;
        Ok(Redis {
            target: Target::Cluster {
                nodes: nodes.to_vec(),
            },
            conn: Conn::Cluster(conn),
            wait: Wait::default(),
        })
    }

    /// Connects to a target once.
    pub async fn open(target: &RedisTarget) -> RedisResult<Self> {
        match target {
            RedisTarget::Single(url) => Self::connect(url).await,
            RedisTarget::Cluster(nodes) => Self::connect_cluster(nodes).await,
        }
    }

    /// Connects, retrying with capped exponential backoff until `give_up` passes.
    pub async fn connect_with_retry(target: &RedisTarget, give_up: Duration) -> RedisResult<Self> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match Self::open(target).await {
                Ok(redis) => return Ok(redis),
                Err(err) if started.elapsed() + delay < give_up => {
                    tracing::warn!(%err, "redis not reachable yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sets what [`Self::durable`] waits for.
    pub fn with_wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Ends a pipeline of writes that someone is told about with `WAIT` (in
    /// a cluster, when replicas are wanted): see [`Wait`]. The reply is
    /// ignored; [`Conn`] sends the WAIT to every shard the pipeline wrote to.
    pub fn durable(&self, pipe: &mut Pipeline) {
        if self.is_cluster() && self.wait.replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.wait.replicas)
                .arg(self.wait.timeout_ms)
                .ignore();
        }
    }

    /// Whether this handle speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// Address and credentials of the single server, for connections not
    /// made by the `redis` crate; None in cluster mode.
    pub fn connection_info(&self) -> Option<&redis::ConnectionInfo> {
        match &self.target {
            Target::Single { client, .. } => Some(client.get_connection_info()),
            Target::Cluster { .. } => None,
        }
    }

    /// The shared connection. Cloning it is cheap and shares the socket(s).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// A new connection of its own, without a response timeout, for commands
    /// that block server-side for up to `block` milliseconds.
    pub async fn dedicated(&self) -> RedisResult<Conn> {
        match &self.target {
            Target::Single { client, .. } => Ok(Conn::Single(single::manager(client, None).await?)),
            Target::Cluster { nodes } => {
                Ok(Conn::Cluster(ClusterHandle::connect(nodes, None).await?))
            }
        }
    }

    /// Publishes on a graph's channel: `SPUBLISH` in a cluster (the message
    /// stays on the shard that owns the graph), `PUBLISH` otherwise.
    pub async fn publish_graph(&self, channel: &str, message: &str) -> RedisResult<i64> {
        redis::cmd(self.graph_publish_command())
            .arg(channel)
            .arg(message)
            .query_async(&mut self.conn())
            .await
    }

    /// The command that publishes on graph channels (see [`Self::publish_graph`]);
    /// scripts are told it too.
    pub fn graph_publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Every master's address (`host`, `port`); the single server's in
    /// single mode. For commands that must run on each node (SCAN).
    pub async fn masters(&self) -> RedisResult<Vec<(String, u16)>> {
        match (&self.target, &self.conn) {
            (Target::Cluster { .. }, Conn::Cluster(c)) => c.masters().await,
            (Target::Single { client, .. }, _) => match &client.get_connection_info().addr() {
                redis::ConnectionAddr::Tcp(host, port) => Ok(vec![(host.clone(), *port)]),
                _ => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }

    /// Runs `cmd` on the node at `host:port` (cluster) or on the server.
    pub async fn on_node(&self, host: &str, port: u16, cmd: &Cmd) -> RedisResult<Value> {
        match &self.conn {
            Conn::Cluster(c) => c.on_node(host, port, cmd).await,
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// A connection to the single server or to the cluster; commands and
/// pipelines work the same on both.
#[derive(Clone)]
pub enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(ClusterHandle),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(h) => Box::pin(async move { h.command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(h) => Box::pin(async move { h.pipeline(pipeline, offset, count).await }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// Whether `e` says the server could not be reached at all (the connection
/// failed, dropped or timed out), as opposed to a reply from Redis.
pub fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
