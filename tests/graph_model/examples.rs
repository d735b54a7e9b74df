//! Builders for the hand-computed examples (`tests/graph_model_examples.rs`,
//! `tests/graph_model_choices.rs`): send a command to the model as a user, and
//! spell expected outcomes and stored entity texts.

use graphq::graph::command::parse;
use graphq::graph::{ApplyContext, Conflict, Outcome, Strategy};
use serde_json::{Value, json};

use super::Model;

pub const EPOCH: &str = "ep-1";

/// Sends `cmd` (a command without `operationId`, which is `op`) as `user` at `now_ms`.
pub fn send(model: &mut Model, user: &str, now_ms: u64, op: &str, mut cmd: Value) -> Outcome {
    cmd["operationId"] = json!(op);
    let parsed = parse(cmd.to_string().as_bytes()).expect("example commands are valid");
    let ctx = ApplyContext {
        graph_id: "g1".into(),
        user_id: user.into(),
        now_ms,
        new_epoch: EPOCH.into(),
    };
    model.apply(&ctx, &parsed)
}

pub fn v(text: &str) -> Value {
    serde_json::from_str(text).expect("example JSON is valid")
}

pub fn applied(version: u64, change: Value, conflicts: Vec<Conflict>) -> Outcome {
    Outcome::Applied {
        version,
        change,
        conflicts,
    }
}

pub fn reverted(code: &str, message: &str, current: Value, conflicts: Vec<Conflict>) -> Outcome {
    Outcome::Reverted {
        code: code.into(),
        message: message.into(),
        current,
        conflicts,
    }
}

pub fn conflict(field: &str, client: Value, server: Value, strategy: Strategy) -> Conflict {
    Conflict {
        field: field.into(),
        client_value: client,
        server_value: server,
        strategy,
    }
}

pub fn node_cmd(id: &str, x: i64, y: i64) -> Value {
    json!({"type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": x, "y": y}}}})
}

pub fn edge_cmd(id: &str, s: &str, t: &str) -> Value {
    json!({"type": "CREATE_EDGE", "payload": {"edge": {"id": id, "source": s, "target": t}}})
}

/// A plain node as stored: type null, empty data.
pub fn plain_node(
    id: &str,
    x: i64,
    y: i64,
    version: u64,
    created: &str,
    updated: &str,
    at: u64,
) -> String {
    format!(
        r#"{{"id":"{id}","type":null,"position":{{"x":{x},"y":{y}}},"data":{{}},"version":{version},"createdBy":"{created}","updatedBy":"{updated}","updatedAt":{at}}}"#
    )
}

pub fn plain_edge(id: &str, s: &str, t: &str, version: u64, user: &str, at: u64) -> String {
    format!(
        r#"{{"id":"{id}","source":"{s}","target":"{t}","type":null,"data":{{}},"version":{version},"createdBy":"{user}","updatedBy":"{user}","updatedAt":{at}}}"#
    )
}
