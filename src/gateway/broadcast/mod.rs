//! The broadcaster: what one gateway hears from Redis and who it tells.
//!
//! One RESP3 connection per gateway carries every subscription (it
//! resubscribes by itself after a reconnect). This module owns the
//! [`Broadcaster`] handle, its start and drain, and the push loop that
//! routes each note Redis delivers: graph notes to the graph's feed actor
//! ([`feed`]: SYNC, ordered COMMAND_APPLIED, gap fill), user notes to the
//! user's sockets ([`user`]: REVERT, CONFLICT), presence to the feed
//! ([`presence`]), outcomes to `?wait` callers ([`waiters`]). Which
//! channels are subscribed, and for how long, is [`routing`]'s; how many
//! sockets each user has open across gateways, [`sockets`]'.

mod conn;
mod feed;
mod note;
mod presence;
mod routing;
mod sockets;
mod sync;
mod user;
mod waiters;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value as RValue};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::{Redis, Subscriber, now_ms};
use crate::graph::GraphStore;
use crate::keys::Keys;

pub use conn::{Applied, Conn, Frame, Outgoing};
pub use feed::ClientPosition;
pub use presence::PresenceState;
pub use sync::{SyncBudget, SyncPermit};
pub use waiters::Waiter;

use feed::{FeedCmd, Resync};
use note::Note;
use routing::FeedRef;
use user::UserRef;

/// Settings the broadcaster needs.
#[derive(Clone, Debug)]
pub struct BroadcastSettings {
    /// Most missed changes sent as `behind`; beyond it, a reset.
    pub max_changes: u64,
    /// A user whose presence was not refreshed for this long has left.
    pub presence_timeout: Duration,
}

struct Inner {
    store: GraphStore,
    keys: Keys,
    settings: BroadcastSettings,
    /// The pub/sub connection (subscribe/unsubscribe only).
    sub: Subscriber,
    /// For PUBLISH of presence.
    redis: Redis,
    /// The push loop and every feed actor, so that a shutdown can wait
    /// for them to finish.
    tasks: TaskTracker,
    /// The server's; the push loop stops when it fires. Feeds stop once
    /// their sockets (which the same token closes) have left.
    shutdown: CancellationToken,
    /// These are std Mutexes, not tokio ones: nothing is awaited while held.
    feeds: Mutex<HashMap<String, FeedRef>>,
    users: Mutex<HashMap<String, UserRef>>,
    /// Operation id → callers waiting for its outcome (`?wait=MS`).
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<serde_json::Value>>>>,
    /// This gateway's name in the per-user socket sets: socket ids are only
    /// unique within one process.
    instance: String,
    /// (user, graph) → when presence of the user was last published from
    /// here, whichever of its sockets sent it (the throttle is per user),
    /// and the update waiting for the interval's end.
    presence_sent: Mutex<HashMap<(String, String), presence::Throttle>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    inner: Arc<Inner>,
}

/// How long after a lost pub/sub connection every feed checks the log: by
/// then a single server's connection has resubscribed.
const RECONNECT_CATCH_UP: Duration = Duration::from_millis(200);

impl Broadcaster {
    pub async fn start(
        redis: Redis,
        store: GraphStore,
        settings: BroadcastSettings,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<Broadcaster> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let sub = redis.subscriber(push_tx).await?;
        let keys = store.keys().clone();
        let b = Broadcaster {
            inner: Arc::new(Inner {
                store,
                keys,
                settings,
                sub,
                redis,
                tasks: TaskTracker::new(),
                shutdown,
                feeds: Mutex::default(),
                users: Mutex::default(),
                waiters: Mutex::default(),
                instance: uuid::Uuid::new_v4().simple().to_string(),
                presence_sent: Mutex::default(),
            }),
        };
        b.inner.tasks.spawn(b.clone().pushes(push_rx));
        b.inner.tasks.spawn(b.clone().refresh_loop());
        Ok(b)
    }

    /// Waits, at most `within`, for the push loop and every feed to end
    /// once the shutdown token has fired (feeds end as their sockets
    /// leave). Returns whether they all did.
    pub async fn drain(&self, within: Duration) -> bool {
        self.inner.tasks.close();
        let drained = tokio::time::timeout(within, self.inner.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                tasks = self.inner.tasks.len(),
                "broadcaster tasks still running after the drain timeout"
            );
        }
        drained
    }

    /// Keeps this gateway's sockets counted (see [`sockets`]) until shutdown.
    async fn refresh_loop(self) {
        let mut tick = tokio::time::interval(sockets::SOCKET_REFRESH);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => self.refresh_sockets().await,
            }
        }
    }

    /// Routes every message Redis pushes to us. After a lost connection it
    /// has every feed check the log (pub/sub drops what was published
    /// meanwhile), on timers of its own rather than detached tasks.
    async fn pushes(self, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
        let shutdown = self.inner.shutdown.clone();
        // One per lost connection, each RECONNECT_CATCH_UP after it.
        let mut catch_ups: VecDeque<Instant> = VecDeque::new();
        // A cluster connection being rebuilt: says when it is in place.
        let mut rebuilt: Option<oneshot::Receiver<()>> = None;
        loop {
            let push = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
                _ = until(catch_ups.front().copied()) => {
                    catch_ups.pop_front();
                    self.catch_up_all();
                    continue;
                }
                done = resolved(&mut rebuilt) => {
                    rebuilt = None;
                    if done.is_ok() {
                        self.catch_up_all();
                    }
                    continue;
                }
            };
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1))
                    else {
                        continue;
                    };
                    let (Some(channel), Some(payload)) = (text(channel), text(payload)) else {
                        continue;
                    };
                    self.route(&channel, &payload);
                }
                PushKind::Disconnection => {
                    // In a cluster the lost node may be gone for good: the
                    // subscriptions move to whoever serves their slots now.
                    if let Some(r) = self.inner.sub.refresh() {
                        rebuilt = Some(r);
                    }
                    catch_ups.push_back(Instant::now() + RECONNECT_CATCH_UP);
                }
                _ => {}
            }
        }
    }

    fn route(&self, channel: &str, payload: &str) {
        let note: Note = match serde_json::from_str(payload) {
            Ok(note) => note,
            Err(err) => {
                tracing::warn!(channel, %err, "unreadable notification");
                return;
            }
        };
        if channel.ends_with(":presence") {
            if let Some(f) = self.feed_tx(&note.graph_id) {
                let _ = f.send(FeedCmd::Presence(note));
            }
            return;
        }
        let is_user_channel = channel.contains(":{u:");
        if let Some(control) = note.control.as_deref() {
            let resync = match (control, note.user_id.as_deref()) {
                ("reset", _) => Resync::Everyone,
                ("sync", Some(user)) => Resync::User(user.to_string()),
                _ => {
                    tracing::warn!(channel, control, "unknown control note");
                    return;
                }
            };
            if let Some(f) = self.feed_tx(&note.graph_id) {
                let _ = f.send(FeedCmd::Resync(resync));
            }
            return;
        }
        self.wake_waiters(&note);
        if is_user_channel {
            self.to_user(&note);
        } else if let Some(f) = self.feed_tx(&note.graph_id) {
            let _ = f.send(FeedCmd::Note(note));
        }
    }

    fn feed_tx(&self, graph: &str) -> Option<mpsc::UnboundedSender<FeedCmd>> {
        self.inner
            .feeds
            .lock()
            .expect("feeds lock")
            .get(graph)
            .map(|f| f.tx.clone())
    }

    fn catch_up_all(&self) {
        for f in self.inner.feeds.lock().expect("feeds lock").values() {
            let _ = f.tx.send(FeedCmd::CatchUp);
        }
    }
}

/// Completes at `deadline`; never without one. For a timer that may or may
/// not be set in a `select!`.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What `rx` resolves to; never while there is none.
async fn resolved(rx: &mut Option<oneshot::Receiver<()>>) -> Result<(), oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

fn text(v: &RValue) -> Option<String> {
    match v {
        RValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
        RValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Milliseconds, for HEARTBEAT frames.
pub fn server_time() -> u64 {
    now_ms()
}
