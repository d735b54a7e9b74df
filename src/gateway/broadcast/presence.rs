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
/// than the interval throttles nothing, so dropping it changes nothing.
const PRESENCE_SENT_SWEEP: usize = 1024;

impl Broadcaster {
    /// Whether `user` may publish presence on `graph` now: not when any of
    /// its sockets here did less than `interval` ago. Records the permit.
    pub fn presence_permit(&self, user: &str, graph: &str, interval: Duration) -> bool {
        let now = std::time::Instant::now();
        let mut sent = self.inner.presence_sent.lock().expect("presence lock");
        let key = (user.to_string(), graph.to_string());
        if sent
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return false;
        }
        if sent.len() >= PRESENCE_SENT_SWEEP {
            sent.retain(|_, t| now.duration_since(*t) < interval);
        }
        sent.insert(key, now);
        true
    }

    /// Publishes a presence update (cursor, selection, name, preview) to
    /// every gateway serving the graph.
    pub async fn publish_presence(&self, graph: &str, user: &str, p: &PresenceState) {
        let note = json!({"graphId": graph, "userId": user, "cursor": p.cursor,
            "selection": p.selection, "name": p.name, "preview": p.preview});
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
