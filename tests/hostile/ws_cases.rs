//! The WebSocket tables: frames a connected client may send that must each
//! get an ERROR and leave the socket open.

use serde_json::{Value, json};

use super::{command, nest};

/// A WebSocket frame and the ERROR it must get: (frame, code, field).
pub fn ws_cases() -> Vec<(String, String, &'static str, Option<&'static str>)> {
    let c = |name: &str, frame: String, code: &'static str, field: Option<&'static str>| {
        (name.to_string(), frame, code, field)
    };
    let cmd = |command: Value| {
        json!({"type": "COMMAND", "graphId": "g1", "command": command}).to_string()
    };
    let big_data = |n: usize| {
        command(
            "o1",
            "CREATE_NODE",
            json!({"node": {"id": "x", "position": {"x": 0, "y": 0}, "data": {"s": "x".repeat(n)}}}),
        )
    };
    vec![
        c("not JSON", "hello".into(), "INVALID_JSON", None),
        c("an empty frame", String::new(), "INVALID_JSON", None),
        c("truncated JSON", r#"{"type":"SUBSC"#.into(), "INVALID_JSON", None),
        c("NaN as a bare token", r#"{"type":"COMMAND","graphId":"g1","command":{"operationId":"o1","type":"UPDATE_VIEWPORT","payload":{"x":NaN,"y":0,"zoom":1}}}"#.into(), "INVALID_JSON", None),
        c("Infinity as a bare token", r#"{"type":"PRESENCE","graphId":"g1","cursor":{"x":Infinity,"y":0}}"#.into(), "INVALID_JSON", None),
        c("nesting beyond the JSON parser's limit", format!(r#"{{"type":"HEARTBEAT","x":{}}}"#, nest(5_000)), "INVALID_JSON", None),
        c("a JSON array", "[]".into(), "INVALID_MESSAGE", None),
        c("JSON null", "null".into(), "INVALID_MESSAGE", None),
        c("type a number", r#"{"type":5}"#.into(), "INVALID_MESSAGE", None),
        c("type in lower case", r#"{"type":"subscribe","graphId":"g1"}"#.into(), "UNKNOWN_TYPE", None),
        c("a 60 KiB type", json!({"type": "T".repeat(60 * 1024)}).to_string(), "UNKNOWN_TYPE", None),
        c("Lua as the type", json!({"type": "redis.call('FLUSHALL')"}).to_string(), "UNKNOWN_TYPE", None),
        c("COMMAND without graphId", json!({"type": "COMMAND", "command": command("o1", "DELETE_NODE", json!({"id": "n1"}))}).to_string(), "INVALID_MESSAGE", None),
        c("COMMAND with a numeric graphId", json!({"type": "COMMAND", "graphId": 1, "command": command("o1", "DELETE_NODE", json!({"id": "n1"}))}).to_string(), "INVALID_MESSAGE", None),
        c("COMMAND without command", json!({"type": "COMMAND", "graphId": "g1"}).to_string(), "INVALID_MESSAGE", None),
        c("COMMAND whose command is a string", json!({"type": "COMMAND", "graphId": "g1", "command": "DELETE_NODE n1"}).to_string(), "INVALID_TYPE", Some("")),
        c("COMMAND for a graph id with a hash tag", json!({"type": "COMMAND", "graphId": "{g1}", "command": command("o1", "DELETE_NODE", json!({"id": "n1"}))}).to_string(), "INVALID_ID", Some("graphId")),
        c("COMMAND for a graph id with a newline", json!({"type": "COMMAND", "graphId": "g1\nFLUSHALL", "command": command("o1", "DELETE_NODE", json!({"id": "n1"}))}).to_string(), "INVALID_ID", Some("graphId")),
        c("COMMAND for a graph the token does not name", json!({"type": "COMMAND", "graphId": "g2", "command": command("o1", "DELETE_NODE", json!({"id": "n1"}))}).to_string(), "FORBIDDEN", None),
        c("COMMAND with an unknown type", cmd(command("o1", "EVALSHA", json!({}))), "UNKNOWN_COMMAND", Some("type")),
        c("COMMAND with a bad node id", cmd(command("o1", "DELETE_NODE", json!({"id": "n1 n2"}))), "INVALID_ID", Some("payload.id")),
        c("COMMAND with a string coordinate", cmd(command("o1", "CREATE_NODE", json!({"node": {"id": "x", "position": {"x": "0", "y": 0}}}))), "INVALID_TYPE", Some("payload.node.position.x")),
        c("COMMAND with data nested 9 deep", cmd(command("o1", "UPDATE_NODE", json!({"id": "n1", "patch": {"data": {"a": serde_json::from_str::<Value>(&nest(8)).unwrap()}}}))), "TOO_DEEP", Some("payload.patch.data.a.0.0.0.0.0.0.0")),
        c("COMMAND with a batch of 501", cmd(command("o1", "BATCH_UPDATE", json!({"operations": vec![json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}); 501]}))), "TOO_MANY_OPERATIONS", Some("payload.operations")),
        c("COMMAND over 64 KiB in a frame under the frame limit", cmd(big_data(80 * 1024)), "TOO_LARGE", Some("")),
        c("SUBSCRIBE without graphId", r#"{"type":"SUBSCRIBE"}"#.into(), "INVALID_MESSAGE", None),
        c("SUBSCRIBE at a negative version", r#"{"type":"SUBSCRIBE","graphId":"g1","clientVersion":-1}"#.into(), "INVALID_MESSAGE", None),
        c("SUBSCRIBE at version 1e30", r#"{"type":"SUBSCRIBE","graphId":"g1","clientVersion":1e30}"#.into(), "INVALID_MESSAGE", None),
        c("SUBSCRIBE with a numeric epoch", r#"{"type":"SUBSCRIBE","graphId":"g1","clientVersion":0,"epoch":7}"#.into(), "INVALID_MESSAGE", None),
        c("SUBSCRIBE to a graph id with :", r#"{"type":"SUBSCRIBE","graphId":"g:1","clientVersion":0}"#.into(), "INVALID_ID", Some("graphId")),
        c("SUBSCRIBE to a graph id that is a glob", r#"{"type":"SUBSCRIBE","graphId":"*","clientVersion":0}"#.into(), "INVALID_ID", Some("graphId")),
        c("SUBSCRIBE to a graph the token does not name", r#"{"type":"SUBSCRIBE","graphId":"g2","clientVersion":0}"#.into(), "FORBIDDEN", None),
        c("REQUEST_SYNC with a string version", r#"{"type":"REQUEST_SYNC","graphId":"g1","clientVersion":"3"}"#.into(), "INVALID_MESSAGE", None),
        c("UNSUBSCRIBE without graphId", r#"{"type":"UNSUBSCRIBE"}"#.into(), "INVALID_MESSAGE", None),
        c("PRESENCE on a graph not subscribed", r#"{"type":"PRESENCE","graphId":"g2","cursor":{"x":1,"y":1}}"#.into(), "NOT_SUBSCRIBED", None),
    ]
}

/// Frames that need the socket subscribed to g1 (presence checks).
pub fn ws_presence_cases() -> Vec<(String, String, &'static str)> {
    vec![
        (
            "a cursor with a string x".into(),
            r#"{"type":"PRESENCE","graphId":"g1","cursor":{"x":"far","y":1}}"#.into(),
            "INVALID_MESSAGE",
        ),
        (
            "a cursor that is a list".into(),
            r#"{"type":"PRESENCE","graphId":"g1","cursor":[1,2]}"#.into(),
            "INVALID_MESSAGE",
        ),
        (
            "a selection with a bad id".into(),
            r#"{"type":"PRESENCE","graphId":"g1","selection":["n1","{g:g2}"]}"#.into(),
            "INVALID_MESSAGE",
        ),
        (
            "a selection of 1001 ids".into(),
            json!({"type": "PRESENCE", "graphId": "g1", "selection": vec!["n1"; 1001]}).to_string(),
            "INVALID_MESSAGE",
        ),
    ]
}
