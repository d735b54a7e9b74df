//! Presence: cursors and selections, relayed through Redis pub/sub to every
//! gateway serving the graph and never stored. Each feed remembers who it
//! has heard from and when, relays PRESENCE and PRESENCE_LEAVE to its other
//! subscribers, and announces as gone whoever went quiet for
//! `presence_timeout`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::protocol::ServerMessage;

use super::feed::Feed;
use super::note::Note;
use super::{Broadcaster, Frame};

/// What a socket last said of its user on a graph: each field stands until
/// a PRESENCE sets it again (`null` clears it).
#[derive(Clone, Default)]
pub struct PresenceState {
    pub cursor: Value,
    pub selection: Value,
    pub name: Value,
    pub preview: Value,
}

/// One user heard from on a graph.
pub(super) struct Presence {
    /// A user silent for longer than `presence_timeout` has left.
    pub last_seen: Instant,
}

/// Throttle entries kept before the stale ones are swept: an entry older
/// than the interval with nothing waiting throttles nothing, so dropping it
/// changes nothing.
const PRESENCE_SENT_SWEEP: usize = 1024;

/// The presence throttle of one user on one graph at this gateway.
pub(super) struct Throttle {
    /// When the user's presence was last published from here.
    at: std::time::Instant,
    /// The newest update that came too soon after `at`: it goes out when
    /// the interval is over (a task is waiting for that while it is Some).
    waiting: Option<PresenceState>,
}

impl Broadcaster {
    /// Publishes `p` as `user`'s presence on `graph` to every gateway
    /// serving it, at most once per `interval` for the user (whichever of
    /// its sockets here sent it). An update that comes sooner waits for the
    /// interval's end, and of several that wait only the newest goes: a
    /// burst is thinned, and the state it ends on always reaches the others.
    pub async fn offer_presence(
        &self,
        user: &str,
        graph: &str,
        p: &PresenceState,
        interval: Duration,
    ) {
        let now = std::time::Instant::now();
        let key = (user.to_string(), graph.to_string());
        let wait = {
            let mut sent = self.inner.presence_sent.lock().expect("presence lock");
            if sent.len() >= PRESENCE_SENT_SWEEP {
                sent.retain(|_, t| t.waiting.is_some() || now.duration_since(t.at) < interval);
            }
            match sent.get_mut(&key) {
                Some(t) if now.duration_since(t.at) < interval => {
                    let scheduled = t.waiting.is_some();
                    t.waiting = Some(p.clone());
                    if scheduled {
                        // The waiting task sends this one instead.
                        return;
                    }
                    Some(interval - now.duration_since(t.at))
                }
                _ => {
                    sent.insert(
                        key.clone(),
                        Throttle {
                            at: now,
                            waiting: None,
                        },
                    );
                    None
                }
            }
        };
        let Some(wait) = wait else {
            return self.publish_presence(graph, user, p).await;
        };
        let b = self.clone();
        self.inner.tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let waiting = {
                let mut sent = b.inner.presence_sent.lock().expect("presence lock");
                sent.get_mut(&key).and_then(|t| {
                    t.at = std::time::Instant::now();
                    t.waiting.take()
                })
            };
            // None: the user left the graph meanwhile (`publish_leave`).
            if let Some(p) = waiting {
                b.publish_presence(&key.1, &key.0, &p).await;
            }
        });
    }

    /// Publishes a presence update (cursor, selection, name, preview) to
    /// every gateway serving the graph.
    async fn publish_presence(&self, graph: &str, user: &str, p: &PresenceState) {
        let note = json!({"graphId": graph, "userId": user, "cursor": p.cursor,
            "selection": p.selection, "name": p.name, "preview": p.preview});
        self.publish(self.inner.keys.presence_channel(graph), note)
            .await;
    }

    pub async fn publish_leave(&self, graph: &str, user: &str) {
        // An update still waiting for its interval would bring the user
        // back after the leave.
        if let Some(t) = self
            .inner
            .presence_sent
            .lock()
            .expect("presence lock")
            .get_mut(&(user.to_string(), graph.to_string()))
        {
            t.waiting = None;
        }
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
}

impl Feed {
    /// A presence note from any gateway (this one included).
    pub(super) fn on_presence(&mut self, note: Note) {
        let Some(user) = note.user_id else {
            return;
        };
        if note.leave {
            self.leave(&user);
            return;
        }
        self.presence.insert(
            user.clone(),
            Presence {
                last_seen: Instant::now(),
            },
        );
        let frame = ServerMessage::Presence {
            graph_id: &self.graph,
            user_id: &user,
            cursor: note.cursor.as_deref(),
            selection: note.selection.as_deref(),
            name: note.name.as_deref(),
            preview: note.preview.as_deref(),
        };
        self.tell_others(&user, Frame::from(frame.to_json()));
    }

    /// PRESENCE_LEAVE, once, for a user this feed knew to be present.
    fn leave(&mut self, user: &str) {
        if self.presence.remove(user).is_none() {
            return;
        }
        let frame = ServerMessage::PresenceLeave {
            graph_id: &self.graph,
            user_id: user,
        };
        self.tell_others(user, Frame::from(frame.to_json()));
    }

    /// To every subscriber but the user's own sockets.
    fn tell_others(&self, user: &str, frame: Frame) {
        for s in self.subs.values() {
            if s.conn.user != user {
                s.conn.send(frame.clone());
            }
        }
    }

    pub(super) fn expire_presence(&mut self) {
        let timeout = self.b.inner.settings.presence_timeout;
        let gone: Vec<String> = self
            .presence
            .iter()
            .filter(|(_, p)| p.last_seen.elapsed() > timeout)
            .map(|(u, _)| u.clone())
            .collect();
        for user in gone {
            self.leave(&user);
        }
    }
}
