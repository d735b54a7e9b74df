//! The feed actor of one graph, which alone decides what a subscriber
//! receives next: it subscribes to the graph's channel *before* reading any
//! backlog, answers SUBSCRIBE / REQUEST_SYNC with `SYNC` (in_sync, behind
//! with the exact missed changes, or reset with the full state), and
//! forwards `COMMAND_APPLIED` to each subscriber in strictly increasing
//! version order with no gaps and no duplicates. A gap in what pub/sub
//! delivered (Redis restart, lost message) is filled from the change log; a
//! gap the log cannot fill becomes a `SYNC reset`. What could not be read
//! while Redis was away is retried on the actor's own timers. SYNCs are
//! built off this path ([`super::sync`]): the actor never waits for one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::graph::{ChangeEntry, StoreError};
use crate::protocol::ServerMessage;

use super::note::Note;
use super::presence::Presence;
use super::sync::{Built, PendingSync};
use super::{Applied, Broadcaster, Conn, Frame, until};

/// What a subscriber said it has.
#[derive(Clone, Debug, Default)]
pub struct ClientPosition {
    pub version: Option<u64>,
    pub epoch: Option<String>,
}

/// Who a control note asks to be synced again.
#[derive(Debug)]
pub(super) enum Resync {
    /// Everyone, with the full state (`BROADCAST_UPDATE`).
    Everyone,
    /// One user's sockets, from the version each has (`SYNC_CLIENT`).
    User(String),
}

pub(super) enum FeedCmd {
    Note(Note),
    Presence(Note),
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
    /// A SYNC built for a socket ([`super::sync`]).
    Built {
        conn_id: u64,
        ticket: u64,
        result: Result<Built, StoreError>,
    },
}

/// How soon a catch-up or SYNC that could not read Redis is tried again.
pub(super) const RETRY: Duration = Duration::from_millis(500);

/// One socket subscribed to the feed.
pub(super) struct Sub {
    pub conn: Arc<Conn>,
    /// Highest version this socket has (from SYNC or COMMAND_APPLIED).
    pub last: u64,
    /// A SYNC it is owed (being built, or waiting for Redis): nothing is
    /// delivered to it until that SYNC goes out.
    pub sync: Option<PendingSync>,
}

/// The delivery actor of one graph.
pub(super) struct Feed {
    pub b: Broadcaster,
    pub graph: String,
    /// Highest version delivered through this feed (None before the first SYNC).
    pub last: Option<u64>,
    /// The graph's epoch as of the last SYNC or note. Another one means the
    /// graph was recreated (Redis restarted empty, or wiped): every
    /// subscriber is reset.
    epoch: Option<String>,
    /// When a catch-up that failed (Redis still away) is tried again.
    catch_up_at: Option<Instant>,
    /// When SYNCs that failed are tried again (together).
    pub sync_retry_at: Option<Instant>,
    pub subs: HashMap<u64, Sub>,
    pub presence: HashMap<String, Presence>,
    /// This feed's own queue, for SYNC builds to answer on. Weak: the feed
    /// must still end once the broadcaster and every waiter let go of it.
    pub me: mpsc::WeakUnboundedSender<FeedCmd>,
    /// Numbers the SYNC builds, so a result that was overtaken is known.
    pub tickets: u64,
    /// While a SYNC is being built: every frame delivered since (consecutive
    /// versions, ending at `last`), to catch that socket up once its SYNC is
    /// out. Empty when nobody waits for one.
    pub recent: VecDeque<Arc<Applied>>,
}

impl Feed {
    pub fn new(b: Broadcaster, graph: String, me: mpsc::WeakUnboundedSender<FeedCmd>) -> Feed {
        Feed {
            b,
            graph,
            last: None,
            epoch: None,
            catch_up_at: None,
            sync_retry_at: None,
            subs: HashMap::new(),
            presence: HashMap::new(),
            me,
            tickets: 0,
            recent: VecDeque::new(),
        }
    }

    /// Runs until every sender is gone or the broadcaster has forgotten the
    /// graph (its last socket or waiter left).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<FeedCmd>) {
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
                _ = until(self.catch_up_at) => FeedCmd::CatchUp,
                _ = until(self.sync_retry_at) => {
                    self.retry_syncs();
                    continue;
                }
            };
            match cmd {
                FeedCmd::Ready(done) => {
                    let _ = done.send(());
                }
                FeedCmd::Subscribe { conn, at, done } => self.start_sync(conn, at, Some(done)),
                FeedCmd::Sync { conn, at } => {
                    if self.subs.contains_key(&conn.id) {
                        self.start_sync(conn, at, None);
                    }
                }
                FeedCmd::Built {
                    conn_id,
                    ticket,
                    result,
                } => self.on_built(conn_id, ticket, result),
                FeedCmd::Unsubscribe { conn_id, user } => {
                    self.subs.remove(&conn_id);
                    if self.subs.is_empty() {
                        // Nobody to keep in order: the next subscriber's SYNC
                        // sets the position afresh (a stale one would make it
                        // fill, or even reset, for nothing).
                        self.last = None;
                        self.epoch = None;
                        self.recent.clear();
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
                    self.catch_up_at = None;
                    if !self.catch_up().await && self.last.is_some() {
                        // Redis is not back yet: try again shortly, for as
                        // long as this feed has subscribers.
                        self.catch_up_at = Some(Instant::now() + RETRY);
                    }
                }
                FeedCmd::Presence(note) => self.on_presence(note),
                FeedCmd::Resync(Resync::Everyone) => self.reset_all_but(None),
                FeedCmd::Resync(Resync::User(user)) => {
                    // Sockets already waiting for a SYNC get a fresh one anyway.
                    let theirs: Vec<(Arc<Conn>, u64)> = self
                        .subs
                        .values()
                        .filter(|s| s.conn.user == user && s.sync.is_none())
                        .map(|s| (s.conn.clone(), s.last))
                        .collect();
                    for (conn, last) in theirs {
                        let at = ClientPosition {
                            version: Some(last),
                            ..ClientPosition::default()
                        };
                        self.start_sync(conn, at, None);
                    }
                }
            }
        }
    }

    /// Whether `seen` is another epoch than the feed's. The empty epoch (the
    /// graph did not exist yet) is not one: the graph's first command makes
    /// its epoch. Records `seen` either way.
    pub(super) fn epoch_changed(&mut self, seen: &str) -> bool {
        let changed = self
            .epoch
            .as_deref()
            .is_some_and(|cur| !cur.is_empty() && cur != seen);
        self.epoch = Some(seen.to_string());
        changed
    }

    async fn on_note(&mut self, note: &Note) {
        let Some(outcome) = note.outcome() else {
            return;
        };
        let Some(v) = outcome.version else {
            return;
        };
        let syncing = || self.subs.values().any(|s| s.sync.is_some());
        let Some(last) = self.last.or_else(|| syncing().then(|| v.saturating_sub(1))) else {
            // No subscriber yet (a waiter only): nothing to order.
            return;
        };
        // Subscribers whose first SYNC is being built: from here on the
        // feed keeps what it delivers, for them to catch up from.
        self.last = Some(last);
        if let Some(epoch) = note.epoch.as_deref()
            && self.epoch_changed(epoch)
        {
            // The graph was recreated since our subscribers synced.
            self.reset_all_but(None);
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
        let frame = applied_from_note(&self.graph, note, v, outcome.change);
        self.deliver(v, frame);
        if let Some(applied_at) = note.applied_at {
            crate::metrics::observe_since(crate::metrics::BROADCAST_LATENCY, applied_at);
        }
        tracing::debug!(
            graph_id = %self.graph,
            operation_id = %note.operation_id.as_deref().unwrap_or(""),
            user_id = %note.user_id.as_deref().unwrap_or(""),
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
                for entry in ch.changes.iter().take((to - from) as usize) {
                    self.deliver(entry.version, applied_from_log(&self.graph, entry));
                }
                true
            }
            Ok(_) => {
                self.reset_all_but(None);
                false
            }
            Err(err) => {
                tracing::warn!(graph = %self.graph, %err, "could not fill a gap from the log");
                false
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
            self.reset_all_but(None);
        } else if ch.current_version > last {
            self.fill(last, ch.current_version).await;
        }
        true
    }

    fn deliver(&mut self, v: u64, frame: Frame) {
        // The epoch goes with the change: an event stream names its events
        // `epoch:version` without reading the frame or Redis.
        let applied = Applied::new(frame, v, self.epoch.clone().unwrap_or_default());
        let mut syncing = false;
        for s in self.subs.values_mut() {
            if s.sync.is_some() {
                syncing = true;
            } else if v == s.last + 1 {
                s.conn.send_applied(&applied);
                s.last = v;
            }
        }
        if syncing {
            // Consecutive up to `v`, at most `max_changes` of them: a socket
            // that needs older ones gets one more SYNC instead.
            if self.recent.back().is_some_and(|last| last.version + 1 != v) {
                self.recent.clear();
            }
            self.recent.push_back(applied);
            if self.recent.len() as u64 > self.b.inner.settings.max_changes {
                self.recent.pop_front();
            }
        } else {
            self.recent.clear();
        }
        self.last = Some(v);
    }
}

/// COMMAND_APPLIED from the graph script's note: serialized once, then
/// shared by every subscriber.
pub(super) fn applied_from_note(
    graph: &str,
    note: &Note,
    version: u64,
    change: Option<&RawValue>,
) -> Frame {
    let frame = ServerMessage::CommandApplied {
        graph_id: graph,
        operation_id: note.operation_id.as_deref().unwrap_or_default(),
        version,
        user_id: note.user_id.as_deref().unwrap_or_default(),
        command: note.command.as_deref(),
        change: change.unwrap_or(RawValue::NULL),
    };
    Frame::from(frame.to_json())
}

/// COMMAND_APPLIED rebuilt from a log entry (the log keeps no command text).
fn applied_from_log(graph: &str, e: &ChangeEntry) -> Frame {
    let frame = ServerMessage::CommandApplied {
        graph_id: graph,
        operation_id: &e.operation_id,
        version: e.version,
        user_id: &e.user_id,
        command: None,
        change: &e.change,
    };
    Frame::from(frame.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note as `lua/apply_command.lua` publishes it.
    fn note(command: &str) -> Note {
        let text = format!(
            r#"{{"graphId":"g1","epoch":"e1","operationId":"o1","userId":"alice","type":"CREATE_NODE","timestamp":1700000000000,"appliedAt":1700000000001,"command":{command},"outcome":{{"status":"applied","version":7,"change":{{"op":"node.create","node":{{"id":"n1","data":{{"z":1,"a":0.5}}}}}},"conflicts":[]}}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    fn applied(note: &Note) -> Frame {
        let outcome = note.outcome().unwrap();
        applied_from_note("g1", note, outcome.version.unwrap(), outcome.change)
    }

    #[test]
    fn command_applied_is_the_same_from_a_note_and_from_the_log() {
        let entry: ChangeEntry = serde_json::from_str(
            r#"{"version":7,"operationId":"o1","userId":"alice","type":"CREATE_NODE","timestamp":1700000000000,"change":{"op":"node.create","node":{"id":"n1","data":{"z":1,"a":0.5}}}}"#,
        )
        .unwrap();
        let from_log = applied_from_log("g1", &entry);
        assert_eq!(applied(&note("null")).as_str(), from_log.as_str());
        // The change's text is passed on as the script wrote it.
        assert_eq!(
            from_log.as_str(),
            r#"{"type":"COMMAND_APPLIED","graphId":"g1","operationId":"o1","version":7,"userId":"alice","command":null,"change":{"op":"node.create","node":{"id":"n1","data":{"z":1,"a":0.5}}}}"#
        );
        // A live note also carries the command.
        assert_eq!(
            applied(&note(r#"{"operationId":"o1","type":"CREATE_NODE"}"#)).as_str(),
            from_log.as_str().replace(
                r#""command":null"#,
                r#""command":{"operationId":"o1","type":"CREATE_NODE"}"#
            )
        );
    }
}
