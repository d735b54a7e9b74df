//! Per-user channels: a user's channel is subscribed while the user has a
//! socket or a waiter on this gateway, and the REVERT and CONFLICT frames
//! its notes carry go to every socket of that user here, subscribed to the
//! graph or not. Applied commands without conflicts go to the user's
//! outcomes channel instead, subscribed only while the user has a stream of
//! their own outcomes here (`GET /api/v2/events`): sockets hear those from
//! the graph's feed, so a gateway of WebSockets alone never receives them
//! twice. COMMAND_APPLIED from either channel goes only to those streams.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::{RevertError, ServerMessage};

use super::feed::applied_from_note;
use super::note::Note;
use super::{Broadcaster, Conn, Frame};

/// Who holds a user's channel on this gateway.
pub(super) struct UserRef {
    pub conns: HashMap<u64, Arc<Conn>>,
    pub waiters: usize,
    /// How many of `conns` are streams of the user's own outcomes.
    pub streams: usize,
}

impl Broadcaster {
    /// REVERT and CONFLICT frames to every socket of the sender on this gateway.
    pub(super) fn to_user(&self, note: &Note) {
        let Some(user) = note.user_id.as_deref() else {
            return;
        };
        let conns: Vec<Arc<Conn>> = match self.inner.users.lock().expect("users lock").get(user) {
            Some(u) => u.conns.values().cloned().collect(),
            None => return,
        };
        if conns.is_empty() {
            return;
        }
        let Some(outcome) = note.outcome() else {
            return;
        };
        let graph_id = note.graph_id.as_str();
        let operation_id = note.operation_id.as_deref().unwrap_or_default();
        if let Some(v) = outcome
            .version
            .filter(|_| outcome.status.as_deref() == Some("applied"))
        {
            let mut own = conns.iter().filter(|c| c.own_applied).peekable();
            if own.peek().is_some() {
                let frame = applied_from_note(graph_id, note, v, outcome.change);
                for c in own {
                    c.send(frame.clone());
                }
            }
        }
        let mut frames = Vec::new();
        if outcome.status.as_deref() == Some("reverted") {
            frames.push(ServerMessage::Revert {
                graph_id,
                operation_id,
                error: RevertError::Outcome {
                    code: outcome.code,
                    message: outcome.message,
                },
                current: Some(outcome.current),
            });
        }
        for c in &outcome.conflicts {
            frames.push(ServerMessage::Conflict {
                graph_id,
                operation_id,
                field: c.field,
                client_value: c.client_value,
                server_value: c.server_value,
                strategy: c.strategy,
            });
        }
        for f in frames {
            let f = Frame::from(f.to_json());
            for c in &conns {
                c.send(f.clone());
            }
        }
    }

    /// Takes a reference on a user's channel for a socket (or, with None, a
    /// waiter); the first one subscribes it.
    pub(super) async fn hold_user(&self, user: &str, conn: Option<Arc<Conn>>) {
        let (first, first_stream) = {
            let mut users = self.inner.users.lock().expect("users lock");
            let u = users.entry(user.to_string()).or_insert_with(|| UserRef {
                conns: HashMap::new(),
                waiters: 0,
                streams: 0,
            });
            let first = u.conns.is_empty() && u.waiters == 0;
            let mut first_stream = false;
            match conn {
                Some(c) => {
                    if c.own_applied {
                        u.streams += 1;
                        first_stream = u.streams == 1;
                    }
                    u.conns.insert(c.id, c);
                }
                None => u.waiters += 1,
            }
            (first, first_stream)
        };
        if first {
            self.subscribe_channel(self.inner.keys.user_channel(user), false)
                .await;
        }
        if first_stream {
            self.subscribe_channel(self.inner.keys.user_outcomes_channel(user), false)
                .await;
        }
    }

    /// Drops what [`Self::hold_user`] took; the last one unsubscribes.
    pub(super) async fn release_user(&self, user: &str, conn_id: Option<u64>) {
        let (last, last_stream) = {
            let mut users = self.inner.users.lock().expect("users lock");
            match users.get_mut(user) {
                Some(u) => {
                    let mut last_stream = false;
                    match conn_id {
                        Some(id) => {
                            if u.conns.remove(&id).is_some_and(|c| c.own_applied) {
                                u.streams -= 1;
                                last_stream = u.streams == 0;
                            }
                        }
                        None => u.waiters = u.waiters.saturating_sub(1),
                    }
                    let last = u.conns.is_empty() && u.waiters == 0;
                    if last {
                        users.remove(user);
                    }
                    (last, last_stream)
                }
                None => (false, false),
            }
        };
        if last_stream {
            self.unsubscribe_channel(self.inner.keys.user_outcomes_channel(user), false)
                .await;
        }
        if last {
            self.unsubscribe_channel(self.inner.keys.user_channel(user), false)
                .await;
        }
    }
}
