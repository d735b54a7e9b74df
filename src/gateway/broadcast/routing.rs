//! Which pub/sub channels this gateway listens to, and for how long. A
//! graph's channels (commands and presence) are subscribed only while it
//! has local subscribers or waiters here: each takes a reference on the
//! graph's feed, the first starts the feed (which subscribes before reading
//! anything), the last stops it and unsubscribes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::feed::{ClientPosition, Feed, FeedCmd};
use super::{Broadcaster, Conn};

/// A running feed, as the broadcaster knows it.
pub(super) struct FeedRef {
    pub tx: mpsc::UnboundedSender<FeedCmd>,
    /// Subscribed sockets plus waiters; at zero the feed stops.
    pub refs: usize,
}

impl Broadcaster {
    /// A socket of `conn.user` is open: it hears the user's reverts. False
    /// when the user already has `max_sockets` open on all gateways (0: no
    /// limit); the socket is then not registered and must close (4009).
    pub async fn register(&self, conn: Arc<Conn>, max_sockets: usize) -> bool {
        if !self.admit(&conn, max_sockets).await {
            return false;
        }
        let user = conn.user.clone();
        self.hold_user(&user, Some(conn)).await;
        true
    }

    /// The socket closed: it leaves every graph and its user's channel, and
    /// no longer counts among the user's sockets.
    pub async fn unregister(&self, conn: &Conn, graphs: &[String]) {
        for g in graphs {
            self.unsubscribe(conn, g).await;
        }
        self.release_user(&conn.user, Some(conn.id)).await;
        self.forget_socket(conn).await;
    }

    /// Subscribes a socket to a graph; the feed answers with SYNC.
    pub async fn subscribe(&self, conn: Arc<Conn>, graph: &str, at: ClientPosition) {
        let tx = self.acquire_feed(graph).await;
        let (done_tx, done_rx) = oneshot::channel();
        let _ = tx.send(FeedCmd::Subscribe {
            conn,
            at,
            done: done_tx,
        });
        let _ = done_rx.await;
    }

    /// Answers REQUEST_SYNC through the feed, so the socket's position stays exact.
    pub fn request_sync(&self, conn: Arc<Conn>, graph: &str, at: ClientPosition) -> bool {
        match self.feed_tx(graph) {
            Some(tx) => tx.send(FeedCmd::Sync { conn, at }).is_ok(),
            None => false,
        }
    }

    pub async fn unsubscribe(&self, conn: &Conn, graph: &str) {
        if let Some(tx) = self.feed_tx(graph) {
            let _ = tx.send(FeedCmd::Unsubscribe {
                conn_id: conn.id,
                user: conn.user.clone(),
            });
        }
        if self.release_feed(graph) {
            self.stop_feed_channels(graph).await;
        }
    }

    /// `sharded`: a graph's channel (SSUBSCRIBE in a cluster), not a user's.
    pub(super) async fn subscribe_channel(&self, channel: String, sharded: bool) {
        let mut sub = self.inner.sub.clone();
        if let Err(err) = sub.subscribe(&channel, sharded).await {
            tracing::warn!(channel, %err, "subscribe failed; it is retried after the next reconnect");
        }
    }

    pub(super) async fn unsubscribe_channel(&self, channel: String, sharded: bool) {
        let mut sub = self.inner.sub.clone();
        if let Err(err) = sub.unsubscribe(&channel, sharded).await {
            tracing::debug!(channel, %err, "unsubscribe failed");
        }
    }

    /// Takes a reference on the graph's feed, starting it (and subscribing
    /// its channels, before anything is read) when it is the first.
    pub(super) async fn acquire_feed(&self, graph: &str) -> mpsc::UnboundedSender<FeedCmd> {
        let (tx, start) = {
            let mut feeds = self.inner.feeds.lock().expect("feeds lock");
            if let Some(f) = feeds.get_mut(graph) {
                f.refs += 1;
                (f.tx.clone(), None)
            } else {
                let (tx, rx) = mpsc::unbounded_channel();
                feeds.insert(
                    graph.to_string(),
                    FeedRef {
                        tx: tx.clone(),
                        refs: 1,
                    },
                );
                (tx, Some(rx))
            }
        };
        if let Some(rx) = start {
            let feed = Feed::new(self.clone(), graph.to_string(), tx.downgrade());
            self.inner.tasks.spawn(feed.run(rx));
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let _ = tx.send(FeedCmd::Ready(ready_tx));
        let _ = ready_rx.await;
        tx
    }

    /// Drops a reference; true when it was the last (the feed then stops
    /// once the senders it still has are gone).
    pub(super) fn release_feed(&self, graph: &str) -> bool {
        let mut feeds = self.inner.feeds.lock().expect("feeds lock");
        if let Some(f) = feeds.get_mut(graph) {
            f.refs = f.refs.saturating_sub(1);
            if f.refs == 0 {
                feeds.remove(graph);
                return true;
            }
        }
        false
    }

    pub(super) async fn stop_feed_channels(&self, graph: &str) {
        self.unsubscribe_channel(self.inner.keys.graph_channel(graph), true)
            .await;
        self.unsubscribe_channel(self.inner.keys.presence_channel(graph), true)
            .await;
    }
}
