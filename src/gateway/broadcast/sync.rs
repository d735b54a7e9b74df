//! SYNC for one subscriber, built off the feed's delivery path. Reading what
//! a SYNC carries (the change log, or the whole state for a reset) runs in a
//! task of its own; meanwhile the feed goes on delivering COMMAND_APPLIED to
//! everyone else, withholds it from the socket being synced, and keeps the
//! frames it delivered since ([`Feed::recent`]). When the SYNC is built the
//! feed sends it, then exactly the versions after the SYNC's from those
//! frames, and the socket is back in the ordered stream: v+1 after v, no
//! gap, no duplicate. A socket has at most one SYNC being built per graph;
//! requests while it is are merged into one more, the latest position wins.
//! How many a socket may ask for is its [`SyncBudget`]'s to say.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::graph::{GraphStore, StoreError};
use crate::protocol::{ServerMessage, SyncStatus, sync_reset};
use crate::queue::RateLimit;

use super::feed::{ClientPosition, Feed, FeedCmd, RETRY, Sub};
use super::{Conn, Frame};

/// A SYNC a socket is owed: being built, or waiting to be retried.
pub(super) struct PendingSync {
    /// The build whose result counts: a result with another ticket was
    /// overtaken (a reset restarted the SYNC) and is dropped.
    ticket: u64,
    /// The position the build answers.
    at: ClientPosition,
    /// A request that came while the build ran: one more SYNC follows,
    /// however many requests came (the latest position wins).
    again: Option<ClientPosition>,
    /// The feed's last version when the build started. A SYNC below it means
    /// the graph went back (Redis restarted from an older file).
    floor: Option<u64>,
    /// A build is under way (false: it failed and waits for the retry timer).
    running: bool,
    /// ERROR UNAVAILABLE was sent: once per SYNC, however many retries.
    told: bool,
    /// The SUBSCRIBE waiting until its SYNC is out (or first failed).
    done: Option<oneshot::Sender<()>>,
}

/// A built SYNC frame and where it puts the socket.
pub(super) struct Built {
    frame: Frame,
    version: u64,
    epoch: String,
}

impl Feed {
    /// Owes `conn` a SYNC from `at`: starts building it, or, when one is
    /// already on its way, merges the request into it. A new subscriber is
    /// added here.
    pub(super) fn start_sync(
        &mut self,
        conn: Arc<Conn>,
        at: ClientPosition,
        done: Option<oneshot::Sender<()>>,
    ) {
        let id = conn.id;
        let sub = self.subs.entry(id).or_insert_with(|| Sub {
            conn,
            last: 0,
            sync: None,
        });
        if let Some(sync) = sub.sync.as_mut() {
            if sync.running {
                sync.again = Some(at);
            } else {
                // Waiting for Redis: the retry answers the latest request.
                sync.at = at;
            }
            match (&sync.done, done) {
                (None, Some(d)) => sync.done = Some(d),
                (_, Some(d)) => {
                    let _ = d.send(());
                }
                _ => {}
            }
            return;
        }
        sub.sync = Some(PendingSync {
            ticket: 0,
            at,
            again: None,
            floor: None,
            running: false,
            told: false,
            done,
        });
        self.launch(id);
    }

    /// Starts building the SYNC `id` is owed, in a task of its own; the
    /// result comes back as [`FeedCmd::Built`].
    fn launch(&mut self, id: u64) {
        self.tickets += 1;
        let ticket = self.tickets;
        let floor = self.last;
        let Some(sync) = self.subs.get_mut(&id).and_then(|s| s.sync.as_mut()) else {
            return;
        };
        sync.ticket = ticket;
        sync.running = true;
        sync.floor = floor;
        let at = sync.at.clone();
        // The feed's own sender, so the result finds it; weak in the feed, so
        // that the feed still ends when everyone else has let go of it.
        let Some(tx) = self.me.upgrade() else { return };
        let store = self.b.inner.store.clone();
        let max = self.b.inner.settings.max_changes;
        let graph = self.graph.clone();
        self.b.inner.tasks.spawn(async move {
            let result = build(&store, &graph, &at, max).await;
            let _ = tx.send(FeedCmd::Built {
                conn_id: id,
                ticket,
                result,
            });
        });
    }

    /// A build finished: hand the socket over, or arrange a retry.
    pub(super) fn on_built(&mut self, id: u64, ticket: u64, result: Result<Built, StoreError>) {
        let current = self
            .subs
            .get(&id)
            .and_then(|s| s.sync.as_ref())
            .is_some_and(|s| s.ticket == ticket);
        if !current {
            return;
        }
        let err = match result {
            Ok(built) => return self.hand_over(id, built),
            Err(err) => err,
        };
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let Some(sync) = sub.sync.as_mut() else {
            return;
        };
        if !sync.told {
            tracing::warn!(graph = %self.graph, %err, "SYNC failed; retrying");
            sub.conn.send_message(&ServerMessage::Error {
                code: "UNAVAILABLE",
                message: "could not read the graph; a SYNC follows once Redis answers",
                field: None,
                retry_after_ms: None,
                operation_id: None,
            });
            sync.told = true;
        }
        // Still subscribed: the SYNC is retried until it goes out (or the
        // socket leaves), for the latest position asked.
        sync.running = false;
        if let Some(again) = sync.again.take() {
            sync.at = again;
        }
        if let Some(done) = sync.done.take() {
            let _ = done.send(());
        }
        self.sync_retry_at
            .get_or_insert_with(|| Instant::now() + RETRY);
    }

    /// Sends the SYNC, then the versions after it that the feed delivered
    /// while it was built, and puts the socket back in the ordered stream.
    fn hand_over(&mut self, id: u64, built: Built) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let Some(sync) = sub.sync.take() else { return };
        sub.conn.send(built.frame);
        sub.last = built.version;
        if let Some(done) = sync.done {
            let _ = done.send(());
        }
        let conn = sub.conn.clone();
        let mut again = sync.again;
        if self.epoch_changed(&built.epoch) {
            // Another history than the feed's: the others start over too.
            self.reset_all_but(Some(id));
        } else {
            match self.last {
                None => self.last = Some(built.version),
                Some(last) if built.version < last => {
                    if !self.catch_up_sub(id) {
                        if sync.floor.is_some_and(|f| built.version < f) {
                            // The graph went back: the feed follows it, and the
                            // next note fills or resets from there.
                            self.last = Some(built.version);
                        } else {
                            // The frames it needs were not kept: one more SYNC,
                            // from where it is (unless it asked for one anyway).
                            again = again.or(Some(ClientPosition {
                                version: Some(built.version),
                                epoch: Some(built.epoch),
                            }));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if !self.subs.values().any(|s| s.sync.is_some()) {
            self.recent.clear();
        }
        if let Some(at) = again {
            self.start_sync(conn, at, None);
        }
    }

    /// Sends `id` the kept frames after its version; false when they do not
    /// reach back far enough.
    fn catch_up_sub(&mut self, id: u64) -> bool {
        let Some(sub) = self.subs.get_mut(&id) else {
            return false;
        };
        let covered = self
            .recent
            .front()
            .is_some_and(|first| first.version <= sub.last + 1)
            && self.recent.back().map(|a| a.version) == self.last;
        if !covered {
            return false;
        }
        for applied in &self.recent {
            if applied.version == sub.last + 1 {
                sub.conn.send_applied(applied);
                sub.last = applied.version;
            }
        }
        true
    }

    /// Every subscriber but `keep` gets `SYNC reset` with the full state.
    pub(super) fn reset_all_but(&mut self, keep: Option<u64>) {
        self.recent.clear();
        self.last = keep.and_then(|id| self.subs.get(&id)).map(|s| s.last);
        let others: Vec<u64> = self
            .subs
            .keys()
            .copied()
            .filter(|id| Some(*id) != keep)
            .collect();
        for id in others {
            let Some(sub) = self.subs.get_mut(&id) else {
                continue;
            };
            let (told, done) = match sub.sync.take() {
                Some(s) => (s.told, s.done),
                None => (false, None),
            };
            // Whatever was being built for it answered another history.
            sub.sync = Some(PendingSync {
                ticket: 0,
                at: ClientPosition::default(),
                again: None,
                floor: None,
                running: false,
                told,
                done,
            });
            self.launch(id);
        }
    }

    /// The retry timer fired: SYNCs that failed are built again.
    pub(super) fn retry_syncs(&mut self) {
        self.sync_retry_at = None;
        let waiting: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.sync.as_ref().is_some_and(|p| !p.running))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.launch(id);
        }
    }
}

/// The SYNC frame for a socket at `at` (docs/protocol.md, "SYNC").
pub(super) async fn build(
    store: &GraphStore,
    g: &str,
    at: &ClientPosition,
    max: u64,
) -> Result<Built, StoreError> {
    // changes_since also says where the graph is now.
    let ch = store.changes_since(g, at.version.unwrap_or(0), max).await?;
    let current = ch.current_version;
    let other_epoch = at.epoch.as_deref().is_some_and(|e| e != ch.epoch);
    let status = match at.version {
        _ if other_epoch => SyncStatus::Reset,
        None => SyncStatus::Reset,
        Some(v) if v > current => SyncStatus::Reset,
        Some(v) if v == current => SyncStatus::InSync,
        Some(v) if !ch.too_old && ch.changes.len() as u64 == current - v => SyncStatus::Behind,
        Some(_) => SyncStatus::Reset,
    };
    if status != SyncStatus::Reset {
        let frame = ServerMessage::Sync {
            graph_id: g,
            epoch: &ch.epoch,
            version: current,
            status,
            changes: (status == SyncStatus::Behind).then_some(ch.changes.as_slice()),
        };
        return Ok(Built {
            frame: Frame::from(frame.to_json()),
            version: current,
            epoch: ch.epoch,
        });
    }
    // Unknown, ahead, other epoch, or further behind than the log or cap
    // reaches: the full state.
    let state = store.state_json(g).await?;
    let frame = sync_reset(g, &state.epoch, state.version, &state.json);
    Ok(Built {
        frame: Frame::from(frame),
        version: state.version,
        epoch: state.epoch,
    })
}

/// One socket's budget of SYNC requests: a token bucket of `max` requests
/// refilled over `duration_ms` (`gateway.sync_rate_limit`). A refused
/// socket is told once how long to wait; requests before then are dropped
/// without another ERROR, so a flood cannot fill its own send queue with them.
#[derive(Debug)]
pub struct SyncBudget {
    tokens: f64,
    at: std::time::Instant,
    /// Told SYNC_RATE_LIMITED, until then.
    refused_until: Option<std::time::Instant>,
}

/// What a SYNC request may do, by [`SyncBudget::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum SyncPermit {
    Granted,
    /// Refused: answer ERROR SYNC_RATE_LIMITED with this `retryAfterMs`.
    Refused(u64),
    /// Refused again within the wait already announced: drop it silently.
    Dropped,
}

impl SyncBudget {
    pub fn new(limit: &RateLimit, now: std::time::Instant) -> SyncBudget {
        SyncBudget {
            tokens: limit.max as f64,
            at: now,
            refused_until: None,
        }
    }

    pub fn take(&mut self, limit: &RateLimit, now: std::time::Instant) -> SyncPermit {
        let max = limit.max.max(1) as f64;
        let per_ms = max / limit.duration_ms.max(1) as f64;
        let elapsed = now.duration_since(self.at).as_secs_f64() * 1000.0;
        self.tokens = (self.tokens + elapsed * per_ms).min(max);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_until = None;
            return SyncPermit::Granted;
        }
        if self.refused_until.is_some_and(|u| now < u) {
            return SyncPermit::Dropped;
        }
        let wait_ms = ((1.0 - self.tokens) / per_ms).ceil().max(1.0) as u64;
        self.refused_until = Some(now + Duration::from_millis(wait_ms));
        SyncPermit::Refused(wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_budget_grants_a_burst_then_refuses_once_per_wait() {
        let limit = RateLimit {
            max: 3,
            duration_ms: 300,
        };
        let t0 = std::time::Instant::now();
        let mut b = SyncBudget::new(&limit, t0);
        for _ in 0..3 {
            assert_eq!(b.take(&limit, t0), SyncPermit::Granted);
        }
        assert_eq!(b.take(&limit, t0), SyncPermit::Refused(100));
        assert_eq!(b.take(&limit, t0), SyncPermit::Dropped);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(b.take(&limit, ms(50)), SyncPermit::Dropped);
        // One request per 100 ms comes back.
        assert_eq!(b.take(&limit, ms(100)), SyncPermit::Granted);
        assert_eq!(b.take(&limit, ms(100)), SyncPermit::Refused(100));
        // An idle socket gets its whole burst back, no more.
        for _ in 0..3 {
            assert_eq!(b.take(&limit, ms(10_000)), SyncPermit::Granted);
        }
        assert_eq!(b.take(&limit, ms(10_000)), SyncPermit::Refused(100));
    }
}
