//! The pub/sub connection of a gateway ([`Subscriber`]): RESP3 pushes
//! delivered to a channel, and every channel subscribed again after a
//! reconnect (one server) or after a failover (a cluster, where graph
//! channels are sharded: SSUBSCRIBE on the graph's shard).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisResult};

use super::cluster::{cluster_builder, current_of};
use super::single::manager_config;
use super::{RESPONSE_TIMEOUT, Redis, Target};

impl Redis {
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
