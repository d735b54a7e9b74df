//! The Redis connection handle shared by every component.
//!
//! One multiplexed, auto-reconnecting connection carries ordinary commands and
//! pipelines; blocking reads (`XREADGROUP BLOCK`) each get a dedicated
//! connection because a blocked client holds up everything queued behind it.
//!
//! The same handle speaks to one Redis or to a Redis Cluster
//! ([`RedisTarget`]). In cluster mode every command is routed by its key's
//! slot; a pipeline whose commands live in several slots is split into one
//! pipeline per slot (order kept within a slot, which is where graphq needs
//! it: one graph, one queue partition) and keyless commands go where the
//! cluster client routes them (`SCRIPT LOAD` to every master). Transactions
//! (`MULTI`) always stay within one hash tag.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

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
/// master's loss then loses nothing that had reached its replica. Best
/// effort: when no replica answers within the timeout (a shard running on
/// one node, e.g. after a failover) the write stands, with one copy.
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
        let conn = Conn::Single(manager(&client, Some(RESPONSE_TIMEOUT)).await?);
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

    /// A connection for pub/sub: RESP3, pushes delivered to `push`, channels
    /// subscribed again by itself after a reconnect (or, in a cluster, after
    /// the slot's master changed).
    pub async fn subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<Subscriber> {
        match &self.target {
            Target::Single { url, .. } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let client = Client::open(format!("{url}{sep}protocol=resp3"))?;
                let config = manager_config(Some(RESPONSE_TIMEOUT))
                    .set_push_sender(push)
                    .set_automatic_resubscription();
                Ok(Subscriber::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Target::Cluster { nodes } => {
                let conn = ClusterSubscriber::connect(nodes, &push).await?;
                Ok(Subscriber::Cluster(std::sync::Arc::new(
                    ClusterSubscriber {
                        nodes: nodes.clone(),
                        push,
                        conn: std::sync::RwLock::new(conn),
                        channels: std::sync::Mutex::default(),
                        refreshing: std::sync::atomic::AtomicBool::new(false),
                    },
                )))
            }
        }
    }

    /// A new connection of its own, without a response timeout, for commands
    /// that block server-side for up to `block` milliseconds.
    pub async fn dedicated(&self) -> RedisResult<Conn> {
        match &self.target {
            Target::Single { client, .. } => Ok(Conn::Single(manager(client, None).await?)),
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
            (Target::Cluster { .. }, Conn::Cluster(c)) => {
                let slots: Value = c
                    .current()
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        redis::cluster_routing::RoutingInfo::SingleNode(
                            SingleNodeRoutingInfo::RandomPrimary,
                        ),
                    )
                    .await?;
                let mut out: Vec<(String, u16)> = Vec::new();
                let ranges: Vec<Vec<Value>> = redis::from_redis_value(slots)?;
                for range in ranges {
                    let Some(master) = range.get(2) else { continue };
                    let node: Vec<Value> = redis::from_redis_value(master.clone())?;
                    let host: String = redis::from_redis_value(node[0].clone())?;
                    let port: u16 = redis::from_redis_value(node[1].clone())?;
                    if !out.contains(&(host.clone(), port)) {
                        out.push((host, port));
                    }
                }
                Ok(out)
            }
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
            Conn::Cluster(c) => {
                c.current()
                    .route_command(
                        cmd.clone(),
                        redis::cluster_routing::RoutingInfo::SingleNode(
                            SingleNodeRoutingInfo::ByAddress {
                                host: host.to_string(),
                                port,
                            },
                        ),
                    )
                    .await
            }
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

async fn manager(client: &Client, timeout: Option<Duration>) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client.clone(), manager_config(timeout)).await
}

/// Timeouts and reconnect backoff shared by every connection graphq opens.
fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(response_timeout)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(6)
}

/// The same for cluster connections. Retries cover MOVED/ASK redirections and
/// a master's failover (a replica takes a few seconds to be promoted).
fn cluster_builder(nodes: &[String], response_timeout: Option<Duration>) -> ClusterClientBuilder {
    let mut b = ClusterClient::builder(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(2_000);
    if let Some(t) = response_timeout {
        b = b.response_timeout(t);
    }
    b
}

/// A connection to the single server or to the cluster; commands and
/// pipelines work the same on both.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterHandle),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(h) => Box::pin(async move {
                let r = h.current().req_packed_command(cmd).await;
                h.check(r)
            }),
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
            Conn::Cluster(h) => Box::pin(async move {
                let r = cluster_pipeline(&mut h.current(), pipeline, offset, count).await;
                h.check(r)
            }),
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

/// The connection a lock holds now; a poisoned lock still holds a usable one
/// (nothing is left half-written by a swap).
fn current_of(lock: &std::sync::RwLock<ClusterConnection>) -> ClusterConnection {
    match lock.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A cluster connection that is replaced when it loses track of the
/// cluster. The `redis` crate refreshes its slot map on MOVED or CLUSTERDOWN
/// replies, but a request to a master that was killed only fails to connect;
/// until a live node redirects it, the client keeps routing to the dead
/// master. So when a request fails that way, a new connection (which reads
/// the slot map afresh from the seed nodes) is made in the background and
/// used from then on, at most once a second.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: std::sync::Arc<ClusterInner>,
}

struct ClusterInner {
    nodes: Vec<String>,
    response_timeout: Option<Duration>,
    /// std locks: never held across an await.
    conn: std::sync::RwLock<ClusterConnection>,
    rebuilt_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Least time between two rebuilds of a cluster connection.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

impl ClusterHandle {
    async fn connect(nodes: &[String], response_timeout: Option<Duration>) -> RedisResult<Self> {
        let conn = cluster_builder(nodes, response_timeout)
            .build()?
            .get_async_connection()
            .await?;
        Ok(ClusterHandle {
            inner: std::sync::Arc::new(ClusterInner {
                nodes: nodes.to_vec(),
                response_timeout,
                conn: std::sync::RwLock::new(conn),
                rebuilt_at: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The connection in use now (cheap: a handle on a shared one).
    pub fn current(&self) -> ClusterConnection {
        current_of(&self.inner.conn)
    }

    /// Passes `r` through; a failure that says the topology may be stale
    /// starts a rebuild.
    fn check<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r
            && (is_unreachable(e) || e.kind() == redis::ErrorKind::ClusterConnectionNotFound)
        {
            self.rebuild();
        }
        r
    }

    fn rebuild(&self) {
        {
            let Ok(mut at) = self.inner.rebuilt_at.lock() else {
                return;
            };
            if at.is_some_and(|t| t.elapsed() < REBUILD_EVERY) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let built = match cluster_builder(&inner.nodes, inner.response_timeout).build() {
                Ok(client) => client.get_async_connection().await,
                Err(e) => Err(e),
            };
            match built {
                Ok(conn) => {
                    tracing::info!("cluster connection rebuilt from the seed nodes");
                    if let Ok(mut c) = inner.conn.write() {
                        *c = conn;
                    }
                }
                Err(err) => tracing::warn!(%err, "cluster connection not rebuilt yet"),
            }
        });
    }
}

/// Sends a pipeline to a cluster: one sub-pipeline per slot, all at once,
/// replies put back in the pipeline's order. Keyless commands are sent on
/// their own so the cluster client routes them (e.g. `SCRIPT LOAD` to every
/// master). A trailing `WAIT` ends every slot's sub-pipeline (it must run on
/// the connection that wrote); its reply is the fewest replicas any shard
/// reached. A transaction, or a pipeline within one slot, goes as it is.
async fn cluster_pipeline(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let wait = cmds
        .last()
        .filter(|c| is_command(c, b"WAIT"))
        .map(|_| cmds.len() - 1);
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    for (i, cmd) in cmds.iter().enumerate().take(wait.unwrap_or(cmds.len())) {
        match command_key(cmd).map(Slot::for_key) {
            Some(slot) => match groups.iter_mut().find(|(s, _)| *s == Some(slot)) {
                Some((_, members)) => members.push(i),
                None => groups.push((Some(slot), vec![i])),
            },
            None => groups.push((None, vec![i])),
        }
    }
    // A lone slot goes as it is, unless a WAIT may have to be left out.
    let single_slot = groups.len() == 1 && groups[0].0.is_some() && wait.is_none();
    if pipeline.is_transaction() || offset != 0 || count != cmds.len() || single_slot {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let wait_arg = |n: usize| -> i64 {
        wait.and_then(|i| cmds[i].args_iter().nth(n))
            .and_then(|a| match a {
                redis::Arg::Simple(v) => std::str::from_utf8(v).ok()?.parse().ok(),
                _ => None,
            })
            .unwrap_or(0)
    };
    let (wanted, timeout_ms) = (wait_arg(1), wait_arg(2));
    let sends = groups.iter().map(|(slot, members)| {
        let mut c = conn.clone();
        let cmds = &cmds;
        // Not on a slot whose master recently had no replica to wait for.
        let wait = wait.filter(|_| slot.is_some_and(|s| !degraded(&s)));
        async move {
            match slot {
                None => {
                    RedisResult::Ok((vec![c.req_packed_command(cmds[members[0]]).await?], None))
                }
                Some(slot) => {
                    let mut part = redis::pipe();
                    for &i in members.iter().chain(wait.iter()) {
                        part.add_command(cmds[i].clone());
                    }
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
                        *slot,
                        SlotAddr::Master,
                    ));
                    let mut values = c
                        .route_pipeline(part, 0, members.len() + usize::from(wait.is_some()), route)
                        .await?;
                    let reached = match wait.and_then(|_| values.pop()) {
                        Some(Value::Int(n)) if n < wanted => {
                            Some(settle_short_wait(&mut c, *slot, wanted, timeout_ms).await?)
                        }
                        Some(Value::Int(n)) => Some(n),
                        _ => None,
                    };
                    Ok((values, reached))
                }
            }
        }
    });
    let replies = join_all(sends).await;
    let mut out = vec![Value::Nil; cmds.len()];
    let mut fewest: Option<i64> = None;
    for ((slot, members), reply) in groups.iter().zip(replies) {
        let (values, reached) = reply?;
        for (&i, v) in members.iter().zip(values) {
            out[i] = v;
        }
        if let (Some(_), Some(n)) = (slot, reached) {
            fewest = Some(fewest.map_or(n, |f| f.min(n)));
        }
    }
    if let Some(i) = wait {
        out[i] = Value::Int(fewest.unwrap_or(0));
    }
    Ok(out)
}

/// A WAIT on `slot`'s master reached fewer than `wanted` replicas within
/// its timeout. Which of two things happened decides what the write is worth:
/// - the master has fewer replicas connected than wanted (it lost them, or
///   was just promoted): no wait can do better. The write stands with the
///   copies it has, and WAITs on the slot are left out for [`DEGRADED_FOR`].
/// - its replicas are connected but lagging (a busy machine): they get a
///   longer wait, and a write still unconfirmed after it is an error
///   (`TRYAGAIN`), so that nobody is told a single-copy write is safe; the
///   caller resends, and the write is idempotent.
///
/// Returns how many replicas the write reached.
async fn settle_short_wait(
    conn: &mut ClusterConnection,
    slot: Slot,
    wanted: i64,
    timeout_ms: i64,
) -> RedisResult<i64> {
    let on_master = || {
        redis::cluster_routing::RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_slot(slot, SlotAddr::Master),
        ))
    };
    let role = conn.route_command(redis::cmd("ROLE"), on_master()).await?;
    let connected = match &role {
        Value::Array(parts) => match parts.get(2) {
            Some(Value::Array(replicas)) => replicas.len() as i64,
            _ => 0,
        },
        _ => 0,
    };
    if connected < wanted {
        tracing::debug!(
            connected,
            wanted,
            "a master has too few replicas to wait for; its writes go unconfirmed for a while"
        );
        mark_degraded(slot);
        return Ok(connected);
    }
    let mut again = redis::cmd("WAIT");
    again
        .arg(wanted)
        .arg(timeout_ms.max(1) * LAGGING_WAIT_FACTOR);
    let reached = match conn.route_command(again, on_master()).await? {
        Value::Int(n) => n,
        _ => 0,
    };
    if reached < wanted {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
            "NOREPLICAS",
            format!("a write reached {reached} of {wanted} replicas; resend it"),
        )));
    }
    Ok(reached)
}

/// The second wait for lagging replicas, in multiples of the configured WAIT
/// timeout.
const LAGGING_WAIT_FACTOR: i64 = 10;

/// How long a slot's writes go without WAIT after its master was found with
/// too few replicas. WAIT blocks the connection it runs on, and every request
/// multiplexed behind it: a shard running on one node would otherwise hold
/// each write for the whole WAIT timeout, one after another.
const DEGRADED_FOR: Duration = Duration::from_secs(5);

/// When each slot's master was last found with too few replicas, in ms since
/// the Unix epoch.
static DEGRADED_AT: std::sync::LazyLock<std::sync::Mutex<HashMap<Slot, u64>>> =
    std::sync::LazyLock::new(Default::default);

fn degraded(slot: &Slot) -> bool {
    let map = DEGRADED_AT.lock().unwrap_or_else(|p| p.into_inner());
    map.get(slot)
        .is_some_and(|at| now_ms().saturating_sub(*at) < DEGRADED_FOR.as_millis() as u64)
}

fn mark_degraded(slot: Slot) {
    let mut map = DEGRADED_AT.lock().unwrap_or_else(|p| p.into_inner());
    let now = now_ms();
    map.retain(|_, at| now.saturating_sub(*at) < DEGRADED_FOR.as_millis() as u64);
    map.insert(slot, now);
}

fn is_command(cmd: &Cmd, name: &[u8]) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(n)) if n.eq_ignore_ascii_case(name))
}

/// The key a command is routed by, for the commands graphq sends: the first
/// key of `EVALSHA`/`EVAL`, the first stream of `XREAD`/`XREADGROUP`, the
/// channel of `SPUBLISH`, nothing for keyless commands, and the first
/// argument otherwise.
fn command_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(v) => Some(v),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVALSHA" | b"EVAL" | b"EVALSHA_RO" | b"EVAL_RO" | b"FCALL" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                return None;
            }
            args.get(3)?
        }
        // Container commands: the key follows the subcommand.
        b"XGROUP" | b"XINFO" | b"OBJECT" | b"MEMORY" => args.get(2)?,
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        b"PUBLISH" | b"SCRIPT" | b"PING" | b"INFO" | b"MULTI" | b"EXEC" | b"CLUSTER"
        | b"CLIENT" | b"CONFIG" | b"DBSIZE" | b"TIME" | b"FLUSHALL" | b"FLUSHDB" | b"WAIT"
        | b"SCAN" => {
            return None;
        }
        _ => args.get(1)?,
    };
    Some(key.to_vec())
}

/// The pub/sub connection of a gateway.
#[derive(Clone)]
pub enum Subscriber {
    Single(ConnectionManager),
    Cluster(std::sync::Arc<ClusterSubscriber>),
}

impl Subscriber {
    /// Subscribes a channel. `sharded` channels (a graph's) use SSUBSCRIBE in
    /// a cluster, so their messages stay on the graph's shard; others
    /// (a user's) use SUBSCRIBE, which a cluster delivers everywhere.
    pub async fn subscribe(&mut self, channel: &str, sharded: bool) -> RedisResult<()> {
        match self {
            Subscriber::Single(c) => c.subscribe(channel).await,
            Subscriber::Cluster(c) => {
                if let Ok(mut set) = c.channels.lock() {
                    set.insert((channel.to_string(), sharded));
                }
                ClusterSubscriber::join(&mut c.current(), channel, sharded).await
            }
        }
    }

    pub async fn unsubscribe(&mut self, channel: &str, sharded: bool) -> RedisResult<()> {
        match self {
            Subscriber::Single(c) => c.unsubscribe(channel).await,
            Subscriber::Cluster(c) => {
                if let Ok(mut set) = c.channels.lock() {
                    set.remove(&(channel.to_string(), sharded));
                }
                let mut conn = c.current();
                if sharded {
                    conn.sunsubscribe(channel).await
                } else {
                    conn.unsubscribe(channel).await
                }
            }
        }
    }

    /// After a lost node (a `Disconnection` push): in a cluster, a new
    /// pub/sub connection is made from the seed nodes and every channel
    /// subscribed again, retried until the cluster serves them all (a
    /// failover takes seconds). Nothing to do on a single server, whose
    /// connection resubscribes by itself. The receiver hears when the new
    /// connection is in place (None: nothing to do, or a refresh is already
    /// under way).
    pub fn refresh(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        match self {
            Subscriber::Cluster(c) => c.clone().refresh(),
            Subscriber::Single(_) => None,
        }
    }
}

/// A cluster pub/sub connection that can be rebuilt; see [`Subscriber::refresh`].
pub struct ClusterSubscriber {
    nodes: Vec<String>,
    push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    conn: std::sync::RwLock<ClusterConnection>,
    /// Every channel subscribed now, and whether it is sharded.
    channels: std::sync::Mutex<std::collections::HashSet<(String, bool)>>,
    refreshing: std::sync::atomic::AtomicBool,
}

impl ClusterSubscriber {
    async fn connect(
        nodes: &[String],
        push: &tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<ClusterConnection> {
        cluster_builder(nodes, Some(RESPONSE_TIMEOUT))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push.clone())
            .build()?
            .get_async_connection()
            .await
    }

    fn current(&self) -> ClusterConnection {
        current_of(&self.conn)
    }

    async fn join(conn: &mut ClusterConnection, channel: &str, sharded: bool) -> RedisResult<()> {
        if sharded {
            conn.ssubscribe(channel).await
        } else {
            conn.subscribe(channel).await
        }
    }

    fn refresh(self: std::sync::Arc<Self>) -> Option<tokio::sync::oneshot::Receiver<()>> {
        use std::sync::atomic::Ordering;
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            for _ in 0..120 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(mut conn) = Self::connect(&self.nodes, &self.push).await else {
                    continue;
                };
                let channels: Vec<(String, bool)> = match self.channels.lock() {
                    Ok(set) => set.iter().cloned().collect(),
                    Err(_) => Vec::new(),
                };
                let mut all = true;
                for (channel, sharded) in &channels {
                    all &= Self::join(&mut conn, channel, *sharded).await.is_ok();
                }
                if all {
                    if let Ok(mut c) = self.conn.write() {
                        *c = conn;
                    }
                    tracing::info!(
                        channels = channels.len(),
                        "cluster pub/sub connection rebuilt"
                    );
                    let _ = done.send(());
                    break;
                }
            }
            self.refreshing.store(false, Ordering::SeqCst);
        });
        Some(rx)
    }
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::command_key;

    #[test]
    fn commands_are_routed_by_the_key_graphq_means() {
        let key = |c: &redis::Cmd| command_key(c).map(|k| String::from_utf8(k).unwrap());
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg("abc")
            .arg(2)
            .arg("p:{g:a}:meta")
            .arg("p:{g:a}:nodes")
            .arg("x");
        assert_eq!(key(&evalsha).as_deref(), Some("p:{g:a}:meta"));
        let mut keyless = redis::cmd("EVALSHA");
        keyless.arg("abc").arg(0).arg("x");
        assert_eq!(key(&keyless), None);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg("p:{q:c:1}")
            .arg(">");
        assert_eq!(key(&read).as_deref(), Some("p:{q:c:1}"));
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg("return 1");
        assert_eq!(key(&load), None);
        let mut hset = redis::cmd("HSET");
        hset.arg("p:{op:x}").arg("status").arg("pending");
        assert_eq!(key(&hset).as_deref(), Some("p:{op:x}"));
        let mut spublish = redis::cmd("SPUBLISH");
        spublish.arg("p:{g:a}:events").arg("m");
        assert_eq!(key(&spublish).as_deref(), Some("p:{g:a}:events"));
        assert_eq!(key(&redis::cmd("PING")), None);
        let mut group = redis::cmd("XGROUP");
        group
            .arg("CREATE")
            .arg("p:{q:c:2}")
            .arg("g")
            .arg("0")
            .arg("MKSTREAM");
        assert_eq!(key(&group).as_deref(), Some("p:{q:c:2}"));
    }
}
