//! The broadcaster: what one gateway hears from Redis and who it tells.
//!
//! One RESP3 connection per gateway carries every subscription (it
//! resubscribes by itself after a reconnect). A graph's channels are
//! subscribed only while this gateway has local subscribers or waiters for it
//! (reference-counted), and a user's channel only while that user has a
//! socket or a waiter here.
//!
//! Each subscribed graph has a feed actor that owns the graph's delivery
//! order: it subscribes to the channel *before* reading any backlog, answers
//! SUBSCRIBE / REQUEST_SYNC with `SYNC` (in_sync, behind with the exact missed
//! changes, or reset with the full state), and forwards `COMMAND_APPLIED` to
//! each subscriber in strictly increasing version order with no gaps and no
//! duplicates. A gap in what pub/sub delivered (Redis restart, lost message)
//! is filled from the change log; a gap the log cannot fill becomes a
//! `SYNC reset`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value as RValue};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::{Redis, Subscriber, now_ms};
use crate::graph::{ChangeEntry, GraphStore};
use crate::keys::Keys;

/// A text frame. Shared by every subscriber it goes to: cloning it bumps a
/// reference count instead of copying the text.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// A frame queued for one socket.
#[derive(Debug)]
pub enum Outgoing {
    Text(Frame),
}

/// The broadcaster's handle on one WebSocket connection.
pub struct Conn {
    pub id: u64,
    pub user: String,
    /// Bounded: a client that cannot keep up is closed rather than buffered.
    tx: mpsc::Sender<Outgoing>,
    /// Fired to close the socket; `close_code` says with which code.
    pub kick: CancellationToken,
    pub close_code: AtomicU16,
    /// Set with `kick` by [`Conn::end`]: checked per queued frame, where
    /// the token's own check would take its lock (10,000 times per change
    /// during a large fanout).
    ended: AtomicBool,
}

/// Close code for a client whose send queue overflowed (SPEC §5).
pub const CLOSE_TOO_SLOW: u16 = 4008;

impl Conn {
    /// `shutdown` is the server's: when it fires, the connection is kicked too.
    pub fn new(
        id: u64,
        user: String,
        queue: usize,
        shutdown: &CancellationToken,
    ) -> (Arc<Conn>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let conn = Conn {
            id,
            user,
            tx,
            kick: shutdown.child_token(),
            close_code: AtomicU16::new(0),
            ended: AtomicBool::new(false),
        };
        (Arc::new(conn), rx)
    }

    /// Queues a frame; a full queue closes the connection with 4008.
    pub fn send(&self, frame: Frame) {
        if self.ended.load(Ordering::Relaxed) {
            return;
        }
        if self.tx.try_send(Outgoing::Text(frame)).is_err() {
            self.close(CLOSE_TOO_SLOW);
        }
    }

    pub fn send_json(&self, v: &Value) {
        self.send(Frame::from(v.to_string()));
    }

    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.end();
    }

    /// Ends the connection: nothing more is queued, and its socket closes.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        self.kick.cancel();
    }
}

/// What a subscriber said it has.
#[derive(Clone, Debug, Default)]
pub struct ClientPosition {
    pub version: Option<u64>,
    pub epoch: Option<String>,
}

/// Who a control note asks to be synced again.
#[derive(Debug)]
enum Resync {
    /// Everyone, with the full state (`BROADCAST_UPDATE`).
    Everyone,
    /// One user's sockets, from the version each has (`SYNC_CLIENT`).
    User(String),
}

enum FeedCmd {
    Note(Arc<Value>),
    Presence(Value),
    Subscribe {
        conn: Arc<Conn>,
        at: ClientPosition,
        done: oneshot::Sender<()>,
    },
    Sync {
        conn: Arc<Conn>,
        at: ClientPosition,
    },
    Unsubscribe {
        conn_id: u64,
        user: String,
    },
    /// Pub/sub may have lost messages (reconnect): catch up from the log.
    CatchUp,
    /// From a `sync` job (`BROADCAST_UPDATE`, `SYNC_CLIENT`): SYNC again the
    /// graph's subscribers, or one user's.
    Resync(Resync),
    /// Sent once the feed's channels are subscribed.
    Ready(oneshot::Sender<()>),
}

struct FeedRef {
    tx: mpsc::UnboundedSender<FeedCmd>,
    /// Subscribed sockets plus waiters; at zero the feed stops.
    refs: usize,
}

struct UserRef {
    conns: HashMap<u64, Arc<Conn>>,
    waiters: usize,
}

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
    /// This is a std Mutex, not a tokio one: nothing is awaited while held.
    feeds: Mutex<HashMap<String, FeedRef>>,
    users: Mutex<HashMap<String, UserRef>>,
    /// Operation id → callers waiting for its outcome (`?wait=MS`).
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Value>>>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    inner: Arc<Inner>,
}

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
                feeds: Mutex::default(),
                users: Mutex::default(),
                waiters: Mutex::default(),
            }),
        };
        tokio::spawn(b.clone().pushes(push_rx, shutdown));
        Ok(b)
    }

    /// Routes every message Redis pushes to us.
    async fn pushes(self, mut rx: mpsc::UnboundedReceiver<PushInfo>, shutdown: CancellationToken) {
        loop {
            let push = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
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
                    // Messages published while we were away are lost; once
                    // resubscribed, every feed checks the log. In a cluster
                    // the lost node may be gone for good: the subscriptions
                    // move to whoever serves their slots now.
                    if let Some(rebuilt) = self.inner.sub.refresh() {
                        let b = self.clone();
                        tokio::spawn(async move {
                            if rebuilt.await.is_ok() {
                                b.catch_up_all();
                            }
                        });
                    }
                    let b = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        b.catch_up_all();
                    });
                }
                _ => {}
            }
        }
    }

    fn route(&self, channel: &str, payload: &str) {
        let Ok(note) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!(channel, "unreadable notification");
            return;
        };
        let graph = note["graphId"].as_str().unwrap_or_default().to_string();
        if channel.ends_with(":presence") {
            if let Some(f) = self.feed_tx(&graph) {
                let _ = f.send(FeedCmd::Presence(note));
            }
            return;
        }
        let is_user_channel = channel.contains(":{u:");
        if let Some(control) = note["control"].as_str() {
            let resync = match (control, note["userId"].as_str()) {
                ("reset", _) => Resync::Everyone,
                ("sync", Some(user)) => Resync::User(user.to_string()),
                _ => {
                    tracing::warn!(channel, control, "unknown control note");
                    return;
                }
            };
            if let Some(f) = self.feed_tx(&graph) {
                let _ = f.send(FeedCmd::Resync(resync));
            }
            return;
        }
        let note = Arc::new(note);
        self.wake_waiters(&note);
        if is_user_channel {
            self.to_user(&note);
        } else if let Some(f) = self.feed_tx(&graph) {
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

    fn wake_waiters(&self, note: &Value) {
        let Some(op) = note["operationId"].as_str() else {
            return;
        };
        let waiting = self.inner.waiters.lock().expect("waiters lock").remove(op);
        for w in waiting.into_iter().flatten() {
            let _ = w.send(note["outcome"].clone());
        }
    }

    /// REVERT and CONFLICT frames to every socket of the sender on this gateway.
    fn to_user(&self, note: &Value) {
        let Some(user) = note["userId"].as_str() else {
            return;
        };
        let conns: Vec<Arc<Conn>> = match self.inner.users.lock().expect("users lock").get(user) {
            Some(u) => u.conns.values().cloned().collect(),
            None => return,
        };
        if conns.is_empty() {
            return;
        }
        let mut frames = Vec::new();
        let outcome = &note["outcome"];
        if outcome["status"] == "reverted" {
            frames.push(json!({
                "type": "REVERT", "graphId": note["graphId"], "operationId": note["operationId"],
                "error": {"code": outcome["code"], "message": outcome["message"]},
                "current": outcome["current"],
            }));
        }
        for c in outcome["conflicts"].as_array().into_iter().flatten() {
            frames.push(json!({
                "type": "CONFLICT", "graphId": note["graphId"], "operationId": note["operationId"],
                "field": c["field"], "clientValue": c["clientValue"], "serverValue": c["serverValue"],
                "strategy": c["strategy"],
            }));
        }
        for f in frames {
            let f = Frame::from(f.to_string());
            for c in &conns {
                c.send(f.clone());
            }
        }
    }

    fn catch_up_all(&self) {
        for f in self.inner.feeds.lock().expect("feeds lock").values() {
            let _ = f.tx.send(FeedCmd::CatchUp);
        }
    }

    /// A socket of `conn.user` is open: it hears the user's reverts.
    pub async fn register(&self, conn: Arc<Conn>) {
        let user = conn.user.clone();
        self.hold_user(&user, Some(conn)).await;
    }

    /// The socket closed: it leaves every graph and its user's channel.
    pub async fn unregister(&self, conn: &Conn, graphs: &[String]) {
        for g in graphs {
            self.unsubscribe(conn, g).await;
        }
        self.release_user(&conn.user, Some(conn.id)).await;
    }

    /// Takes a reference on a user's channel for a socket (or, with None, a
    /// waiter); the first one subscribes it.
    async fn hold_user(&self, user: &str, conn: Option<Arc<Conn>>) {
        let first = {
            let mut users = self.inner.users.lock().expect("users lock");
            let u = users.entry(user.to_string()).or_insert_with(|| UserRef {
                conns: HashMap::new(),
                waiters: 0,
            });
            let first = u.conns.is_empty() && u.waiters == 0;
            match conn {
                Some(c) => {
                    u.conns.insert(c.id, c);
                }
                None => u.waiters += 1,
            }
            first
        };
        if first {
            self.subscribe_channel(self.inner.keys.user_channel(user), false)
                .await;
        }
    }

    /// Drops what [`Self::hold_user`] took; the last one unsubscribes.
    async fn release_user(&self, user: &str, conn_id: Option<u64>) {
        let last = {
            let mut users = self.inner.users.lock().expect("users lock");
            match users.get_mut(user) {
                Some(u) => {
                    match conn_id {
                        Some(id) => {
                            u.conns.remove(&id);
                        }
                        None => u.waiters = u.waiters.saturating_sub(1),
                    }
                    let last = u.conns.is_empty() && u.waiters == 0;
                    if last {
                        users.remove(user);
                    }
                    last
                }
                None => false,
            }
        };
        if last {
            self.unsubscribe_channel(self.inner.keys.user_channel(user), false)
                .await;
        }
    }

    /// `sharded`: a graph's channel (SSUBSCRIBE in a cluster), not a user's.
    async fn subscribe_channel(&self, channel: String, sharded: bool) {
        let mut sub = self.inner.sub.clone();
        if let Err(err) = sub.subscribe(&channel, sharded).await {
            tracing::warn!(channel, %err, "subscribe failed; it is retried after the next reconnect");
        }
    }

    async fn unsubscribe_channel(&self, channel: String, sharded: bool) {
        let mut sub = self.inner.sub.clone();
        if let Err(err) = sub.unsubscribe(&channel, sharded).await {
            tracing::debug!(channel, %err, "unsubscribe failed");
        }
    }

    /// Takes a reference on the graph's feed, starting it (and subscribing
    /// its channels, before anything is read) when it is the first.
    async fn acquire_feed(&self, graph: &str) -> mpsc::UnboundedSender<FeedCmd> {
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
            let feed = Feed::new(self.clone(), graph.to_string());
            tokio::spawn(feed.run(rx));
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let _ = tx.send(FeedCmd::Ready(ready_tx));
        let _ = ready_rx.await;
        tx
    }

    /// Drops a reference; the last one stops the feed and its subscriptions.
    fn release_feed(&self, graph: &str) -> bool {
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

    async fn stop_feed_channels(&self, graph: &str) {
        self.unsubscribe_channel(self.inner.keys.graph_channel(graph), true)
            .await;
        self.unsubscribe_channel(self.inner.keys.presence_channel(graph), true)
            .await;
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

    /// Publishes a cursor/selection update to every gateway serving the graph.
    pub async fn publish_presence(
        &self,
        graph: &str,
        user: &str,
        cursor: &Value,
        selection: &Value,
    ) {
        let note =
            json!({"graphId": graph, "userId": user, "cursor": cursor, "selection": selection});
        self.publish(self.inner.keys.presence_channel(graph), note)
            .await;
    }

    pub async fn publish_leave(&self, graph: &str, user: &str) {
        let note = json!({"graphId": graph, "userId": user, "leave": true});
        self.publish(self.inner.keys.presence_channel(graph), note)
            .await;
    }

    async fn publish(&self, channel: String, note: Value) {
        let r = self
            .inner
            .redis
            .publish_graph(&channel, &note.to_string())
            .await;
        if let Err(err) = r {
            tracing::debug!(%err, "presence not published");
        }
    }

    /// Prepares to wait for an operation's outcome: subscribes what carries
    /// it (the graph's feed, the user's channel) before the caller queues it.
    pub async fn waiter(&self, graph: &str, user: &str, operation_id: &str) -> Waiter {
        self.acquire_feed(graph).await;
        self.hold_user(user, None).await;
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .expect("waiters lock")
            .entry(operation_id.to_string())
            .or_default()
            .push(tx);
        Waiter {
            broadcaster: self.clone(),
            graph: graph.to_string(),
            user: user.to_string(),
            operation_id: operation_id.to_string(),
            rx: Some(rx),
        }
    }

    async fn drop_waiter(&self, graph: &str, user: &str, operation_id: &str) {
        self.inner
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(operation_id);
        if self.release_feed(graph) {
            self.stop_feed_channels(graph).await;
        }
        self.release_user(user, None).await;
    }
}

/// A pending wait for one operation's outcome.
pub struct Waiter {
    broadcaster: Broadcaster,
    graph: String,
    user: String,
    operation_id: String,
    rx: Option<oneshot::Receiver<Value>>,
}

impl Waiter {
    /// The outcome (`{"status":"applied",...}` or `{"status":"reverted",...}`),
    /// or None when `timeout` passed first.
    pub async fn wait(mut self, timeout: Duration) -> Option<Value> {
        let rx = self.rx.take()?;
        let got = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.broadcaster
            .drop_waiter(&self.graph, &self.user, &self.operation_id)
            .await;
        got
    }
}

fn text(v: &RValue) -> Option<String> {
    match v {
        RValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
        RValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One socket subscribed to the feed.
struct Sub {
    conn: Arc<Conn>,
    /// Highest version this socket has (from SYNC or COMMAND_APPLIED).
    last: u64,
    /// Its SYNC could not be read (Redis away): nothing is delivered to it
    /// until the SYNC, retried by the feed, goes out.
    waiting: bool,
}

struct Presence {
    last_seen: Instant,
}

/// The delivery actor of one graph.
struct Feed {
    b: Broadcaster,
    graph: String,
    /// Highest version delivered through this feed (None before the first SYNC).
    last: Option<u64>,
    /// The graph's epoch as of the last SYNC or note. Another one means the
    /// graph was recreated (Redis restarted empty, or wiped): every
    /// subscriber is reset.
    epoch: Option<String>,
    /// A catch-up that failed (Redis still away) is tried again; set while one
    /// is scheduled.
    retrying: bool,
    subs: HashMap<u64, Sub>,
    presence: HashMap<String, Presence>,
}

impl Feed {
    fn new(b: Broadcaster, graph: String) -> Feed {
        Feed {
            b,
            graph,
            last: None,
            epoch: None,
            retrying: false,
            subs: HashMap::new(),
            presence: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<FeedCmd>) {
        let keys = &self.b.inner.keys;
        // Subscribe first: anything published from now on reaches us, so
        // reading the backlog afterwards leaves no hole.
        self.b
            .subscribe_channel(keys.graph_channel(&self.graph), true)
            .await;
        self.b
            .subscribe_channel(keys.presence_channel(&self.graph), true)
            .await;
        let timeout = self.b.inner.settings.presence_timeout;
        let mut sweep = tokio::time::interval(
            (timeout / 3).clamp(Duration::from_millis(50), Duration::from_secs(5)),
        );
        loop {
            let cmd = tokio::select! {
                c = rx.recv() => match c { Some(c) => c, None => return },
                _ = sweep.tick() => {
                    self.expire_presence();
                    if self.b.feed_tx(&self.graph).is_none() {
                        return;
                    }
                    continue;
                }
            };
            match cmd {
                FeedCmd::Ready(done) => {
                    let _ = done.send(());
                }
                FeedCmd::Subscribe { conn, at, done } => {
                    self.sync(conn, at).await;
                    let _ = done.send(());
                }
                FeedCmd::Sync { conn, at } => {
                    if self.subs.contains_key(&conn.id) {
                        self.sync(conn, at).await;
                    }
                }
                FeedCmd::Unsubscribe { conn_id, user } => {
                    self.subs.remove(&conn_id);
                    if self.subs.is_empty() {
                        // Nobody to keep in order: the next subscriber's SYNC
                        // sets the position afresh (a stale one would make it
                        // fill, or even reset, for nothing).
                        self.last = None;
                        self.epoch = None;
                    }
                    // Every gateway (this one included) forgets the user's
                    // presence when the leave note comes back.
                    if !self.subs.values().any(|s| s.conn.user == user)
                        && self.presence.contains_key(&user)
                    {
                        self.b.publish_leave(&self.graph, &user).await;
                    }
                    if self.b.feed_tx(&self.graph).is_none() {
                        return;
                    }
                }
                FeedCmd::Note(note) => self.on_note(&note).await,
                FeedCmd::CatchUp => {
                    self.retrying = false;
                    if !self.catch_up().await && !self.retrying && self.last.is_some() {
                        // Redis is not back yet: ask again shortly, for as
                        // long as this feed has subscribers.
                        self.retrying = true;
                        if let Some(tx) = self.b.feed_tx(&self.graph) {
                            tokio::spawn(async move {
                                tokio::time::sleep(CATCH_UP_RETRY).await;
                                let _ = tx.send(FeedCmd::CatchUp);
                            });
                        }
                    }
                }
                FeedCmd::Presence(note) => self.on_presence(note),
                FeedCmd::Resync(Resync::Everyone) => self.reset_all().await,
                FeedCmd::Resync(Resync::User(user)) => {
                    let theirs: Vec<(Arc<Conn>, u64)> = self
                        .subs
                        .values()
                        .filter(|s| s.conn.user == user && !s.waiting)
                        .map(|s| (s.conn.clone(), s.last))
                        .collect();
                    for (conn, last) in theirs {
                        let at = ClientPosition {
                            version: Some(last),
                            ..ClientPosition::default()
                        };
                        self.sync(conn, at).await;
                    }
                }
            }
        }
    }

    /// Answers a (re)subscription with SYNC and records the socket's version.
    /// When the graph turns out to be on another epoch than the feed's, the
    /// other subscribers are reset too.
    async fn sync(&mut self, conn: Arc<Conn>, at: ClientPosition) {
        let id = conn.id;
        if let Some(epoch) = self.sync_one(conn, at).await
            && self.epoch_changed(&epoch)
        {
            self.reset_all_but(Some(id)).await;
        }
    }

    /// Whether `seen` is another epoch than the feed's. The empty epoch (the
    /// graph did not exist yet) is not one: the graph's first command makes
    /// its epoch. Records `seen` either way.
    fn epoch_changed(&mut self, seen: &str) -> bool {
        let changed = self
            .epoch
            .as_deref()
            .is_some_and(|cur| !cur.is_empty() && cur != seen);
        self.epoch = Some(seen.to_string());
        changed
    }

    /// SYNC for one socket; returns the epoch it was synced to.
    async fn sync_one(&mut self, conn: Arc<Conn>, at: ClientPosition) -> Option<String> {
        let store = &self.b.inner.store;
        let max = self.b.inner.settings.max_changes;
        let (frame, version, epoch) = match self.sync_frame(store, &at, max).await {
            Ok(f) => f,
            Err(err) => {
                let told = self.subs.get(&conn.id).is_some_and(|s| s.waiting);
                if !told {
                    tracing::warn!(graph = %self.graph, %err, "SYNC failed; retrying");
                    conn.send_json(&json!({"type": "ERROR", "code": "UNAVAILABLE", "message": "could not read the graph; a SYNC follows once Redis answers"}));
                }
                // Still subscribed: the SYNC is retried until it goes out
                // (or the socket leaves).
                let retry = FeedCmd::Sync {
                    conn: conn.clone(),
                    at,
                };
                self.subs.insert(
                    conn.id,
                    Sub {
                        conn,
                        last: 0,
                        waiting: true,
                    },
                );
                if let Some(tx) = self.b.feed_tx(&self.graph) {
                    tokio::spawn(async move {
                        tokio::time::sleep(CATCH_UP_RETRY).await;
                        let _ = tx.send(retry);
                    });
                }
                return None;
            }
        };
        conn.send(frame);
        self.last = Some(self.last.map_or(version, |l| l.min(version)));
        self.subs.insert(
            conn.id,
            Sub {
                conn,
                last: version,
                waiting: false,
            },
        );
        Some(epoch)
    }

    async fn sync_frame(
        &self,
        store: &GraphStore,
        at: &ClientPosition,
        max: u64,
    ) -> Result<(Frame, u64, String), crate::graph::StoreError> {
        let g = &self.graph;
        // changes_since also says where the graph is now.
        let ch = store.changes_since(g, at.version.unwrap_or(0), max).await?;
        let current = ch.current_version;
        let other_epoch = at.epoch.as_deref().is_some_and(|e| e != ch.epoch);
        let status = match at.version {
            _ if other_epoch => "reset",
            None => "reset",
            Some(v) if v > current => "reset",
            Some(v) if v == current => "in_sync",
            Some(v) if !ch.too_old && ch.changes.len() as u64 == current - v => "behind",
            Some(_) => "reset",
        };
        if status == "in_sync" {
            let f = json!({"type": "SYNC", "graphId": g, "epoch": ch.epoch, "version": current, "status": "in_sync"});
            return Ok((Frame::from(f.to_string()), current, ch.epoch));
        }
        if status == "behind" {
            let f = json!({"type": "SYNC", "graphId": g, "epoch": ch.epoch, "version": current,
                "status": "behind", "changes": ch.changes});
            return Ok((Frame::from(f.to_string()), current, ch.epoch));
        }
        // Unknown, ahead, other epoch, or further behind than the log or cap
        // reaches: the full state.
        let state = store.state_json(g).await?;
        let f = format!(
            r#"{{"type":"SYNC","graphId":{},"epoch":{},"version":{},"status":"reset","state":{}}}"#,
            Value::String(g.clone()),
            Value::String(state.epoch.clone()),
            state.version,
            state.json,
        );
        Ok((Frame::from(f), state.version, state.epoch))
    }

    async fn on_note(&mut self, note: &Value) {
        let Some(v) = note["outcome"]["version"].as_u64() else {
            return;
        };
        let Some(last) = self.last else {
            // No subscriber yet (a waiter only): nothing to order.
            return;
        };
        if let Some(epoch) = note["epoch"].as_str()
            && self.epoch_changed(epoch)
        {
            // The graph was recreated since our subscribers synced.
            self.reset_all_but(None).await;
            return;
        }
        if v <= last {
            return;
        }
        if v > last + 1 && !self.fill(last, v - 1).await {
            return;
        }
        if self.last.is_some_and(|l| v <= l) {
            return;
        }
        let frame = json!({
            "type": "COMMAND_APPLIED", "graphId": self.graph, "operationId": note["operationId"],
            "version": v, "userId": note["userId"], "command": note["command"],
            "change": note["outcome"]["change"],
        });
        self.deliver(v, Frame::from(frame.to_string()));
        if let Some(applied_at) = note["appliedAt"].as_u64() {
            crate::metrics::observe_since(crate::metrics::BROADCAST_LATENCY, applied_at);
        }
        tracing::debug!(
            graph_id = %self.graph,
            operation_id = %note["operationId"].as_str().unwrap_or(""),
            user_id = %note["userId"].as_str().unwrap_or(""),
            version = v,
            subscribers = self.subs.len(),
            "COMMAND_APPLIED delivered"
        );
    }

    /// Sends versions (from, to] from the log. Returns false when the log
    /// could not fill the gap and everyone was reset instead.
    async fn fill(&mut self, from: u64, to: u64) -> bool {
        let store = self.b.inner.store.clone();
        match store.changes_since(&self.graph, from, to - from).await {
            // Exactly from+1..=to, in order; anything else (trimmed, a hole)
            // is a gap the log cannot fill.
            Ok(ch)
                if !ch.too_old
                    && ch.changes.len() as u64 >= to - from
                    && ch
                        .changes
                        .iter()
                        .take((to - from) as usize)
                        .zip(from + 1..)
                        .all(|(e, want)| e.version == want) =>
            {
                for entry in ch.changes.into_iter().take((to - from) as usize) {
                    let v = entry.version;
                    self.deliver(v, Frame::from(applied_from_log(&self.graph, &entry)));
                }
                true
            }
            Ok(_) => {
                self.reset_all().await;
                false
            }
            Err(err) => {
                tracing::warn!(graph = %self.graph, %err, "could not fill a gap from the log");
                false
            }
        }
    }

    async fn reset_all(&mut self) {
        self.reset_all_but(None).await;
    }

    /// Every subscriber but `keep` gets `SYNC reset` with the full state.
    async fn reset_all_but(&mut self, keep: Option<u64>) {
        let conns: Vec<Arc<Conn>> = self
            .subs
            .values()
            .filter(|s| Some(s.conn.id) != keep)
            .map(|s| s.conn.clone())
            .collect();
        let kept = keep.and_then(|id| self.subs.remove(&id));
        self.subs.clear();
        self.last = kept.as_ref().map(|s| s.last);
        if let Some(s) = kept {
            self.subs.insert(s.conn.id, s);
        }
        for c in conns {
            if let Some(epoch) = self.sync_one(c, ClientPosition::default()).await {
                self.epoch = Some(epoch);
            }
        }
    }

    /// Delivers what pub/sub may have dropped while the connection was down.
    /// A graph that went back in version or changed epoch (Redis restarted
    /// empty or from an older file) resets every subscriber. Returns false
    /// when Redis could not be read.
    async fn catch_up(&mut self) -> bool {
        let Some(last) = self.last else { return true };
        let store = self.b.inner.store.clone();
        let ch = match store.changes_since(&self.graph, last, 1).await {
            Ok(ch) => ch,
            Err(err) => {
                tracing::debug!(graph = %self.graph, %err, "catch-up deferred");
                return false;
            }
        };
        if self.epoch_changed(&ch.epoch) || ch.current_version < last {
            tracing::info!(graph = %self.graph, epoch = %ch.epoch, version = ch.current_version,
                "graph recreated or rolled back; resetting its subscribers");
            self.reset_all_but(None).await;
        } else if ch.current_version > last {
            self.fill(last, ch.current_version).await;
        }
        true
    }

    fn deliver(&mut self, v: u64, frame: Frame) {
        for s in self.subs.values_mut() {
            if !s.waiting && v == s.last + 1 {
                s.conn.send(frame.clone());
                s.last = v;
            }
        }
        self.last = Some(v);
    }

    fn on_presence(&mut self, note: Value) {
        let Some(user) = note["userId"].as_str().map(str::to_string) else {
            return;
        };
        let frame = if note["leave"] == true {
            if self.presence.remove(&user).is_none() {
                return;
            }
            json!({"type": "PRESENCE_LEAVE", "graphId": self.graph, "userId": user})
        } else {
            self.presence.insert(
                user.clone(),
                Presence {
                    last_seen: Instant::now(),
                },
            );
            json!({"type": "PRESENCE", "graphId": self.graph, "userId": user,
                "cursor": note["cursor"], "selection": note["selection"]})
        };
        let frame = Frame::from(frame.to_string());
        for s in self.subs.values() {
            if s.conn.user != user {
                s.conn.send(frame.clone());
            }
        }
    }

    fn expire_presence(&mut self) {
        let timeout = self.b.inner.settings.presence_timeout;
        let gone: Vec<String> = self
            .presence
            .iter()
            .filter(|(_, p)| p.last_seen.elapsed() > timeout)
            .map(|(u, _)| u.clone())
            .collect();
        for user in gone {
            self.on_presence(json!({"userId": user, "leave": true}));
        }
    }
}

/// COMMAND_APPLIED rebuilt from a log entry (the log keeps no command text).
fn applied_from_log(graph: &str, e: &ChangeEntry) -> String {
    format!(
        r#"{{"type":"COMMAND_APPLIED","graphId":{},"operationId":{},"version":{},"userId":{},"command":null,"change":{}}}"#,
        Value::String(graph.to_string()),
        Value::String(e.operation_id.clone()),
        e.version,
        Value::String(e.user_id.clone()),
        e.change.get()
    )
}

/// How soon a catch-up that could not read Redis is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(500);

/// Milliseconds, for HEARTBEAT frames.
pub fn server_time() -> u64 {
    now_ms()
}
