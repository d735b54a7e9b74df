//! The command-body rows of the HTTP table: bodies posted to
//! `/api/v2/graphs/g1/command` with the editor's token that are not JSON,
//! carry numbers JSON or f64 cannot hold, have the wrong types, name unknown
//! commands or fields, use ids that would break key names, patterns or logs,
//! break the data limits, misuse batches, or repeat keys.

use serde_json::{Value, json};

use super::http_cases::{Case, bearer};
use super::{command, nest, node};

/// (name, body, status, code, field) posted to `/api/v2/graphs/g1/command`
/// with the editor's token.
pub fn command_body_cases(editor: &str) -> Vec<Case> {
    let cmd_path = "/api/v2/graphs/g1/command".to_string();
    let post = |name: &str, body: Vec<u8>, status: u16, code: &'static str, field: &str| Case {
        name: name.to_string(),
        method: reqwest::Method::POST,
        path: cmd_path.clone(),
        auth: bearer(editor),
        body,
        status,
        code,
        field: Some(field.to_string()),
    };
    let bad = |name: &str, v: Value, code: &'static str, field: &str| {
        post(name, v.to_string().into_bytes(), 400, code, field)
    };
    let text = |name: &str, t: &str, code: &'static str, field: &str| {
        post(name, t.as_bytes().to_vec(), 400, code, field)
    };
    let create = |data: Value| {
        command(
            "o1",
            "CREATE_NODE",
            json!({"node": {"id": "x", "position": {"x": 0, "y": 0}, "data": data}}),
        )
    };

    vec![
        // Not JSON, or not a JSON object.
        text("plain text", "hello", "INVALID_JSON", ""),
        text("empty body", "", "INVALID_JSON", ""),
        text(
            "truncated JSON",
            r#"{"operationId":"o1","type":"#,
            "INVALID_JSON",
            "",
        ),
        post(
            "invalid UTF-8",
            b"{\"operationId\":\"\xff\xfe\"}".to_vec(),
            400,
            "INVALID_JSON",
            "",
        ),
        text(
            "trailing garbage",
            r#"{"operationId":"o1"} {}"#,
            "INVALID_JSON",
            "",
        ),
        text("single quotes", "{'operationId':'o1'}", "INVALID_JSON", ""),
        text("a comment", "/* hi */ {}", "INVALID_JSON", ""),
        text("a JSON array", "[]", "INVALID_TYPE", ""),
        text("a JSON string", r#""CREATE_NODE""#, "INVALID_TYPE", ""),
        text("a JSON number", "42", "INVALID_TYPE", ""),
        text("JSON null", "null", "INVALID_TYPE", ""),
        // Numbers.
        text(
            "NaN as a bare token",
            r#"{"operationId":"o1","type":"UPDATE_VIEWPORT","payload":{"x":NaN,"y":0,"zoom":1}}"#,
            "INVALID_JSON",
            "",
        ),
        text(
            "Infinity as a bare token",
            r#"{"operationId":"o1","type":"UPDATE_VIEWPORT","payload":{"x":Infinity,"y":0,"zoom":1}}"#,
            "INVALID_JSON",
            "",
        ),
        text(
            "-Infinity as a bare token",
            r#"{"operationId":"o1","type":"UPDATE_VIEWPORT","payload":{"x":-Infinity,"y":0,"zoom":1}}"#,
            "INVALID_JSON",
            "",
        ),
        text(
            "a float overflowing f64",
            r#"{"operationId":"o1","type":"UPDATE_VIEWPORT","payload":{"x":1e400,"y":0,"zoom":1}}"#,
            "INVALID_JSON",
            "",
        ),
        text(
            "overflow deep inside data",
            r#"{"operationId":"o1","type":"CREATE_NODE","payload":{"node":{"id":"x","position":{"x":0,"y":0},"data":{"a":{"b":[-1e999]}}}}}"#,
            "INVALID_JSON",
            "",
        ),
        bad(
            "NaN as a string",
            json!({"operationId": "o1", "type": "UPDATE_VIEWPORT", "payload": {"x": "NaN", "y": 0, "zoom": 1}}),
            "INVALID_TYPE",
            "payload.x",
        ),
        bad(
            "Infinity as a string",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": 0, "y": "Infinity"}}}}),
            "INVALID_TYPE",
            "payload.node.position.y",
        ),
        bad(
            "a boolean coordinate",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": true, "y": 0}}}}),
            "INVALID_TYPE",
            "payload.node.position.x",
        ),
        bad(
            "a null coordinate",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": null, "y": 0}}}}),
            "MISSING_FIELD",
            "payload.node.position.x",
        ),
        bad(
            "zoom zero",
            json!({"operationId": "o1", "type": "UPDATE_VIEWPORT", "payload": {"x": 0, "y": 0, "zoom": 0}}),
            "INVALID_VALUE",
            "payload.zoom",
        ),
        bad(
            "negative zoom",
            json!({"operationId": "o1", "type": "UPDATE_VIEWPORT", "payload": {"x": 0, "y": 0, "zoom": -2}}),
            "INVALID_VALUE",
            "payload.zoom",
        ),
        bad(
            "negative baseVersion",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "baseVersion": -1}),
            "INVALID_TYPE",
            "baseVersion",
        ),
        bad(
            "fractional baseVersion",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "baseVersion": 1.5}),
            "INVALID_TYPE",
            "baseVersion",
        ),
        text(
            "baseVersion beyond u64",
            r#"{"operationId":"o1","type":"DELETE_NODE","payload":{"id":"n1"},"baseVersion":99999999999999999999999}"#,
            "INVALID_TYPE",
            "baseVersion",
        ),
        bad(
            "baseVersion as a string",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "baseVersion": "41"}),
            "INVALID_TYPE",
            "baseVersion",
        ),
        bad(
            "timestamp as words",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "timestamp": "yesterday"}),
            "INVALID_VALUE",
            "timestamp",
        ),
        bad(
            "timestamp 1e300",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "timestamp": 1e300}),
            "INVALID_VALUE",
            "timestamp",
        ),
        bad(
            "negative timestamp",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1"}, "timestamp": -5}),
            "INVALID_VALUE",
            "timestamp",
        ),
        // Wrong types and missing fields.
        bad(
            "operationId missing",
            json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "MISSING_FIELD",
            "operationId",
        ),
        bad(
            "operationId a number",
            json!({"operationId": 7, "type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "INVALID_TYPE",
            "operationId",
        ),
        bad(
            "operationId an object",
            json!({"operationId": {"$ne": null}, "type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "INVALID_TYPE",
            "operationId",
        ),
        bad(
            "type missing",
            json!({"operationId": "o1", "payload": {"id": "n1"}}),
            "MISSING_FIELD",
            "type",
        ),
        bad(
            "type a list",
            json!({"operationId": "o1", "type": ["DELETE_NODE"], "payload": {"id": "n1"}}),
            "INVALID_TYPE",
            "type",
        ),
        bad(
            "payload a list",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": ["n1"]}),
            "INVALID_TYPE",
            "payload",
        ),
        bad(
            "payload a string",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": "n1"}),
            "INVALID_TYPE",
            "payload",
        ),
        bad(
            "node a string",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": "x"}}),
            "INVALID_TYPE",
            "payload.node",
        ),
        bad(
            "position missing",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x"}}}),
            "MISSING_FIELD",
            "payload.node.position",
        ),
        bad(
            "position a list",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": [0, 0]}}}),
            "INVALID_TYPE",
            "payload.node.position",
        ),
        bad(
            "edge without target",
            json!({"operationId": "o1", "type": "CREATE_EDGE", "payload": {"edge": {"id": "e", "source": "n1"}}}),
            "MISSING_FIELD",
            "payload.edge.target",
        ),
        bad(
            "viewport without y",
            json!({"operationId": "o1", "type": "UPDATE_VIEWPORT", "payload": {"x": 0, "zoom": 1}}),
            "MISSING_FIELD",
            "payload.y",
        ),
        bad(
            "empty patch",
            json!({"operationId": "o1", "type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {}}}),
            "EMPTY_PATCH",
            "payload.patch",
        ),
        bad(
            "patch data null",
            json!({"operationId": "o1", "type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": null}}}),
            "INVALID_TYPE",
            "payload.patch.data",
        ),
        bad(
            "data a list",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": 0, "y": 0}, "data": [1]}}}),
            "INVALID_TYPE",
            "payload.node.data",
        ),
        bad(
            "empty node type",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "type": "", "position": {"x": 0, "y": 0}}}}),
            "INVALID_VALUE",
            "payload.node.type",
        ),
        bad(
            "node type of 129 characters",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "type": "t".repeat(129), "position": {"x": 0, "y": 0}}}}),
            "INVALID_VALUE",
            "payload.node.type",
        ),
        // Unknown commands and fields.
        bad(
            "unknown command type",
            json!({"operationId": "o1", "type": "DROP_TABLE", "payload": {}}),
            "UNKNOWN_COMMAND",
            "type",
        ),
        bad(
            "command type in lower case",
            json!({"operationId": "o1", "type": "create_node", "payload": {"node": node("x")}}),
            "UNKNOWN_COMMAND",
            "type",
        ),
        bad(
            "command type with a NUL",
            json!({"operationId": "o1", "type": "CREATE_NODE\u{0}", "payload": {"node": node("x")}}),
            "UNKNOWN_COMMAND",
            "type",
        ),
        bad(
            "Lua in the command type",
            json!({"operationId": "o1", "type": "redis.call('FLUSHALL')", "payload": {}}),
            "UNKNOWN_COMMAND",
            "type",
        ),
        bad(
            "unknown payload field",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n1", "cascade": true}}),
            "UNKNOWN_FIELD",
            "payload.cascade",
        ),
        bad(
            "__proto__ in a patch",
            json!({"operationId": "o1", "type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"__proto__": {"admin": true}}}}),
            "UNKNOWN_FIELD",
            "payload.patch.__proto__",
        ),
        bad(
            "extra key in a position",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": 0, "y": 0, "z": 0}}}}),
            "UNKNOWN_FIELD",
            "payload.node.position.z",
        ),
        // Ids that would break key names, patterns or logs.
        bad(
            "operationId empty",
            json!({"operationId": "", "type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "INVALID_ID",
            "operationId",
        ),
        bad(
            "operationId of 129 characters",
            json!({"operationId": "o".repeat(129), "type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "INVALID_ID",
            "operationId",
        ),
        bad(
            "operationId with a hash tag",
            json!({"operationId": "{g:g2}", "type": "DELETE_NODE", "payload": {"id": "n1"}}),
            "INVALID_ID",
            "operationId",
        ),
        bad(
            "node id with {",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a{b")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with }",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a}b")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with *",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("*")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with a space",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a b")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with a newline",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a\nb")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with CRLF",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a\r\nDEL x")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id with a NUL",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("a\u{0}b")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id non-ASCII",
            json!({"operationId": "o1", "type": "CREATE_NODE", "payload": {"node": node("ñodo")}}),
            "INVALID_ID",
            "payload.node.id",
        ),
        bad(
            "node id a glob",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": "n[0-9]?"}}),
            "INVALID_ID",
            "payload.id",
        ),
        bad(
            "node id a number",
            json!({"operationId": "o1", "type": "DELETE_NODE", "payload": {"id": 1}}),
            "INVALID_TYPE",
            "payload.id",
        ),
        bad(
            "edge source with a slash",
            json!({"operationId": "o1", "type": "CREATE_EDGE", "payload": {"edge": {"id": "e", "source": "../n1", "target": "n1"}}}),
            "INVALID_ID",
            "payload.edge.source",
        ),
        // Data limits.
        bad(
            "data nested 9 deep",
            create(json!({"a": serde_json::from_str::<Value>(&nest(8)).unwrap()})),
            "TOO_DEEP",
            "payload.node.data.a.0.0.0.0.0.0.0",
        ),
        text(
            "nesting beyond the JSON parser's limit",
            &format!(
                r#"{{"operationId":"o1","type":"CREATE_NODE","payload":{{"node":{{"id":"x","position":{{"x":0,"y":0}},"data":{{"a":{}}}}}}}}}"#,
                nest(20_000)
            ),
            "INVALID_JSON",
            "",
        ),
        bad(
            "an empty data key",
            create(json!({"": 1})),
            "INVALID_VALUE",
            "payload.node.data.",
        ),
        bad(
            "a data key of 257 bytes",
            create(json!({"k".repeat(257): 1})),
            "INVALID_VALUE",
            &format!("payload.node.data.{}", "k".repeat(257)),
        ),
        post(
            "a command over 64 KiB",
            create(json!({"s": "x".repeat(70 * 1024)}))
                .to_string()
                .into_bytes(),
            413,
            "TOO_LARGE",
            "",
        ),
        // Batches.
        bad(
            "a batch of 501 operations",
            command(
                "o1",
                "BATCH_UPDATE",
                json!({"operations": vec![json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}); 501]}),
            ),
            "TOO_MANY_OPERATIONS",
            "payload.operations",
        ),
        bad(
            "an empty batch",
            command("o1", "BATCH_UPDATE", json!({"operations": []})),
            "EMPTY_PATCH",
            "payload.operations",
        ),
        bad(
            "a batch inside a batch",
            command(
                "o1",
                "BATCH_UPDATE",
                json!({"operations": [{"type": "BATCH_UPDATE", "payload": {"operations": []}}]}),
            ),
            "INVALID_VALUE",
            "payload.operations.0.type",
        ),
        bad(
            "UNDO inside a batch",
            command(
                "o1",
                "BATCH_UPDATE",
                json!({"operations": [{"type": "UNDO"}]}),
            ),
            "INVALID_VALUE",
            "payload.operations.0.type",
        ),
        bad(
            "a bad id deep in a batch",
            command(
                "o1",
                "BATCH_UPDATE",
                json!({"operations": [{"type": "DELETE_NODE", "payload": {"id": "n1"}}, {"type": "DELETE_NODE", "payload": {"id": "n 2"}}]}),
            ),
            "INVALID_ID",
            "payload.operations.1.payload.id",
        ),
        // A key given twice is refused, whichever value is good
        // (docs/protocol.md, Commands).
        text(
            "duplicate key whose last value is bad",
            r#"{"operationId":"o1","type":"CREATE_NODE","payload":{"node":{"id":"ok","id":"b{a}d","position":{"x":0,"y":0}}}}"#,
            "DUPLICATE_KEY",
            "payload.node.id",
        ),
        text(
            "duplicate type whose last value is unknown",
            r#"{"operationId":"o1","type":"CREATE_NODE","type":"EVAL","payload":{"node":{"id":"x","position":{"x":0,"y":0}}}}"#,
            "DUPLICATE_KEY",
            "type",
        ),
        text(
            "duplicate key whose values are both good",
            r#"{"operationId":"o1","type":"CREATE_NODE","payload":{"node":{"id":"x","position":{"x":0,"y":0},"data":{"k":"first","k":"last"}}}}"#,
            "DUPLICATE_KEY",
            "payload.node.data.k",
        ),
    ]
}
