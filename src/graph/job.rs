//! The `commands` queue job of a graph command: what the gateway (and
//! `RESOLVE_CONFLICT`) queue and the commands worker reads back. The format
//! is defined here, once, for both sides.
//!
//! A job is `{name: COMMAND_TYPE, key: GRAPH_ID, id: OPERATION_ID, data:
//! {"graphId","userId","command"}}`, rate-limited per user.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::queue::NewJob;

use super::Command;

/// The data of a command job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEnvelope {
    pub graph_id: String,
    pub user_id: String,
    /// The command in canonical form; the worker validates it again.
    pub command: Value,
}

/// The `commands` job for a validated command from `user_id` on `graph_id`.
pub fn command_job(graph_id: &str, user_id: &str, cmd: &Command) -> NewJob {
    let command: Value = serde_json::from_str(&cmd.canonical).unwrap_or(Value::Null);
    let data = serde_json::to_string(&CommandEnvelope {
        graph_id: graph_id.to_string(),
        user_id: user_id.to_string(),
        command,
    })
    .unwrap_or_default();
    NewJob::new(cmd.op.type_name(), data)
        .key(graph_id)
        .id(cmd.operation_id.clone())
        .rate_key(user_id)
}
