//! The notes Redis pushes to the broadcaster, as the graph script
//! (`lua/apply_command.lua`), `sync` jobs and presence publishers write
//! them. A note is read once; the JSON it carries on to clients (command,
//! change, conflict values, cursor) stays text, spliced into frames as is.

use serde::Deserialize;
use serde_json::value::RawValue;

/// One message from a graph's, a user's or a presence channel.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Note {
    #[serde(default)]
    pub graph_id: String,
    /// The graph's epoch when the command was applied.
    pub epoch: Option<String>,
    pub operation_id: Option<String>,
    pub user_id: Option<String>,
    /// When the worker applied it (ms): the broadcast latency starts here.
    pub applied_at: Option<u64>,
    /// The command as the client sent it (canonical text).
    pub command: Option<Box<RawValue>>,
    /// `{"status": "applied" | "reverted", ...}`: read with [`Outcome`].
    pub outcome: Option<Box<RawValue>>,
    /// `reset` or `sync`, from a `sync` job (`BROADCAST_UPDATE`, `SYNC_CLIENT`).
    pub control: Option<String>,
    /// Presence: where the user points and what it selected.
    pub cursor: Option<Box<RawValue>>,
    pub selection: Option<Box<RawValue>>,
    /// Presence: the name shown for the user, and a gesture in progress.
    pub name: Option<Box<RawValue>>,
    pub preview: Option<Box<RawValue>>,
    /// Presence: the user left the graph.
    #[serde(default)]
    pub leave: bool,
}

impl Note {
    /// The outcome's fields, borrowed from the note's text. None when the
    /// note has no readable outcome.
    pub fn outcome(&self) -> Option<Outcome<'_>> {
        let text = self.outcome.as_deref()?.get();
        match serde_json::from_str(text) {
            Ok(o) => Some(o),
            Err(err) => {
                tracing::warn!(%err, "unreadable outcome in a notification");
                None
            }
        }
    }
}

/// A command's outcome as the graph script publishes it.
#[derive(Debug, Deserialize)]
pub(super) struct Outcome<'a> {
    pub status: Option<String>,
    /// Applied: the version it made, and its change.
    pub version: Option<u64>,
    #[serde(borrow)]
    pub change: Option<&'a RawValue>,
    /// Reverted: why, and the entity as it is now (`null` when none).
    #[serde(borrow)]
    pub code: Option<&'a RawValue>,
    #[serde(borrow)]
    pub message: Option<&'a RawValue>,
    #[serde(borrow, default = "null")]
    pub current: &'a RawValue,
    #[serde(borrow, default)]
    pub conflicts: Vec<Conflict<'a>>,
}

/// A field the command changed that someone else had changed first.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Conflict<'a> {
    #[serde(borrow)]
    pub field: Option<&'a RawValue>,
    #[serde(borrow)]
    pub client_value: Option<&'a RawValue>,
    #[serde(borrow)]
    pub server_value: Option<&'a RawValue>,
    #[serde(borrow)]
    pub strategy: Option<&'a RawValue>,
}

fn null() -> &'static RawValue {
    RawValue::NULL
}
