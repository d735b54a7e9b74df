//! Hostile and malformed input over HTTP and WebSocket (docs/reliability.md: "bad input
//! of any kind gets a clear error and changes nothing").
//!
//! Each table row is one input and the documented answer (status, error
//! `code`, `field`). After every row the Redis key space under the test's
//! prefix is compared with a digest taken before: a refused input must leave
//! every key as it was. Inputs that are valid but look dangerous (Lua in
//! strings, key-like ids, duplicate JSON keys) are applied and must come back
//! byte for byte. Slow or silent HTTP clients are cut off by the gateway's
//! header-read timeout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::ws;
use common::{SECRET, Stack, TestEnv};
use graphq::auth::{Auth, Graphs, Role};
use graphq::gateway::GatewaySettings;
use graphq::queue::{QueueKind, QueueOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Every key under the test's prefix with a type-aware rendering of its
/// content. The worker registry is left out: its scores are heartbeat
/// deadlines that move on their own.
async fn digest(env: &TestEnv) -> BTreeMap<String, String> {
    let mut conn = env.conn();
    let skip = env.keys.workers("commands");
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", env.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.remove(&skip);
    // Rate-limit state (GCRA) expires by itself as time passes; no refused
    // input reaches the limiter, which runs after validation and auth.
    keys.retain(|k| !k.contains(":{rl:"));
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let content = match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{v:?}")
            }
            "hash" => {
                let v: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{v:?}")
            }
            "list" => {
                let v: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{v:?}")
            }
            "set" => {
                let v: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{v:?}")
            }
            "zset" => {
                let v: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{v:?}")
            }
            "stream" => {
                let entries: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let groups: redis::Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{entries:?} {groups:?}")
            }
            other => format!("type {other}"),
        };
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.insert(key, format!("{kind} ttl:{} {content}", ttl > 0));
    }
    out
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => d.push(format!("new key {k}: {v}")),
            Some(old) if old != v => d.push(format!("changed {k}: {old} -> {v}")),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            d.push(format!("removed {k}"));
        }
    }
    d
}

/// Tokens signed with the right secret but made by hand, to reach claims
/// `Auth::mint` refuses to produce.
fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn in_an_hour() -> u64 {
    graphq::db::now_ms() / 1000 + 3600
}

fn unsigned_token() -> String {
    let b64 = |v: &Value| {
        // base64url without padding, by hand: no extra dependency for one test.
        let bytes = v.to_string().into_bytes();
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize]);
            }
        }
        String::from_utf8(out).unwrap()
    };
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "mallory", "graphs": "*", "role": "editor", "exp": in_an_hour()}))
    )
}

/// One HTTP request and the documented answer.
struct Case {
    name: String,
    method: reqwest::Method,
    path: String,
    /// The whole `Authorization` header value, if any.
    auth: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<String>,
}

fn node(id: &str) -> Value {
    json!({"id": id, "position": {"x": 1, "y": 2}})
}

fn command(op: &str, kind: &str, payload: Value) -> Value {
    json!({"operationId": op, "type": kind, "payload": payload})
}

fn nest(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// The HTTP table: (name, body, status, code, field) posted to
/// `/api/v2/graphs/g1/command` with the editor's token, then the rows that
/// vary the path, the token or the method.
fn http_cases(editor: &str, viewer: &str, other_graph: &str) -> Vec<Case> {
    let bearer = |t: &str| Some(format!("Bearer {t}"));
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
    let good = command("o1", "CREATE_NODE", json!({"node": node("x")}))
        .to_string()
        .into_bytes();

    let mut cases = vec![
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
        // Duplicate keys: the last one wins, as the canonical text stored
        // later says; a bad last value is refused.
        text(
            "duplicate key whose last value is bad",
            r#"{"operationId":"o1","type":"CREATE_NODE","payload":{"node":{"id":"ok","id":"b{a}d","position":{"x":0,"y":0}}}}"#,
            "INVALID_ID",
            "payload.node.id",
        ),
        text(
            "duplicate type whose last value is unknown",
            r#"{"operationId":"o1","type":"CREATE_NODE","type":"EVAL","payload":{"node":{"id":"x","position":{"x":0,"y":0}}}}"#,
            "UNKNOWN_COMMAND",
            "type",
        ),
    ];

    let batch_path = "/api/v2/graphs/g1/batch".to_string();
    let op = json!({"operationId": "b1", "type": "DELETE_NODE", "payload": {"id": "n1"}});
    let mut rows = vec![
        // Auth (docs/protocol.md, Auth).
        ("no token", cmd_path.clone(), None, 401, "UNAUTHORIZED"),
        (
            "an empty bearer",
            cmd_path.clone(),
            Some("Bearer ".into()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a garbage token",
            cmd_path.clone(),
            bearer("not.a.token"),
            401,
            "UNAUTHORIZED",
        ),
        (
            "Basic auth instead of a bearer",
            cmd_path.clone(),
            Some("Basic YWxpY2U6cGFzcw==".into()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token signed with another secret",
            cmd_path.clone(),
            bearer(
                &Auth::new("another-secret-of-enough-length")
                    .unwrap()
                    .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(600))
                    .unwrap(),
            ),
            401,
            "UNAUTHORIZED",
        ),
        (
            "an expired token",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "editor", "exp": graphq::db::now_ms() / 1000 - 5}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "an unsigned token (alg none)",
            cmd_path.clone(),
            bearer(&unsigned_token()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token without exp",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "editor"}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token with role admin",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "admin", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token whose user id has a hash tag",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "{g:g1}", "graphs": "*", "role": "editor", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token whose graphs is a glob",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "g*", "role": "editor", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token for another graph",
            cmd_path.clone(),
            bearer(other_graph),
            403,
            "FORBIDDEN",
        ),
        (
            "a viewer's command",
            cmd_path.clone(),
            bearer(viewer),
            403,
            "FORBIDDEN",
        ),
        (
            "a viewer's batch",
            batch_path.clone(),
            bearer(viewer),
            403,
            "FORBIDDEN",
        ),
        // Graph ids in the path.
        (
            "a graph id with :",
            "/api/v2/graphs/g:1/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a hash tag",
            "/api/v2/graphs/%7Bg1%7D/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with *",
            "/api/v2/graphs/*/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a space",
            "/api/v2/graphs/g%201/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a newline",
            "/api/v2/graphs/g%0A1/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id of 129 characters",
            format!("/api/v2/graphs/{}/command", "g".repeat(129)),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
    ];
    for (name, path, auth, status, code) in rows.drain(..) {
        let field = match code {
            "INVALID_ID" => Some("graphId".to_string()),
            _ => None,
        };
        cases.push(Case {
            name: name.to_string(),
            method: reqwest::Method::POST,
            path,
            auth,
            body: good.clone(),
            status,
            code,
            field,
        });
    }
    let batch = |name: &str, body: Value, status: u16, code: &'static str, field: &str| Case {
        name: name.to_string(),
        method: reqwest::Method::POST,
        path: batch_path.clone(),
        auth: bearer(editor),
        body: body.to_string().into_bytes(),
        status,
        code,
        field: Some(field.to_string()),
    };
    let mut bad_third = vec![op.clone(); 5];
    bad_third[3] = json!({"operationId": "b4", "type": "DELETE_NODE", "payload": {"id": "n*"}});
    for (i, o) in bad_third.iter_mut().enumerate() {
        if i != 3 {
            o["operationId"] = json!(format!("b{i}"));
        }
    }
    cases.extend([
        batch(
            "a batch body of 501 commands",
            json!({"operations": vec![op.clone(); 501]}),
            400,
            "TOO_MANY_OPERATIONS",
            "operations",
        ),
        batch(
            "a batch body without operations",
            json!({"ops": [op.clone()]}),
            400,
            "MISSING_FIELD",
            "operations",
        ),
        batch(
            "a batch body whose operations is an object",
            json!({"operations": {"0": op.clone()}}),
            400,
            "MISSING_FIELD",
            "operations",
        ),
        batch(
            "a non-atomic batch with one bad command",
            json!({"atomic": false, "operations": bad_third}),
            400,
            "INVALID_ID",
            "operations.3.payload.id",
        ),
        Case {
            name: "a batch body over 256 KiB".into(),
            method: reqwest::Method::POST,
            path: batch_path.clone(),
            auth: bearer(editor),
            body: json!({"operations": [op.clone()], "pad": "p".repeat(300 * 1024)})
                .to_string()
                .into_bytes(),
            status: 413,
            code: "TOO_LARGE",
            field: None,
        },
    ]);
    let get = |name: &str,
               path: &str,
               auth: Option<String>,
               status: u16,
               code: &'static str,
               field: Option<&str>| Case {
        name: name.to_string(),
        method: reqwest::Method::GET,
        path: path.to_string(),
        auth,
        body: Vec::new(),
        status,
        code,
        field: field.map(str::to_string),
    };
    cases.extend([
        get(
            "changes since a negative version",
            "/api/v2/graphs/g1/changes?since=-1",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("since"),
        ),
        get(
            "changes since beyond u64",
            "/api/v2/graphs/g1/changes?since=99999999999999999999999",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("since"),
        ),
        get(
            "changes with a limit in words",
            "/api/v2/graphs/g1/changes?limit=all",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("limit"),
        ),
        get(
            "state of a graph the token does not name",
            "/api/v2/graphs/g2/state",
            bearer(editor),
            403,
            "FORBIDDEN",
            None,
        ),
        get(
            "state without a token",
            "/api/v2/graphs/g1/state",
            None,
            401,
            "UNAUTHORIZED",
            None,
        ),
        get(
            "state with a token in the query of another secret",
            &format!(
                "/api/v2/graphs/g1/state?token={}",
                Auth::new("another-secret-of-enough-length")
                    .unwrap()
                    .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(600))
                    .unwrap()
            ),
            None,
            401,
            "UNAUTHORIZED",
            None,
        ),
        get(
            "an operation id that is a glob",
            "/api/v2/operations/*",
            bearer(editor),
            404,
            "NOT_FOUND",
            None,
        ),
        get(
            "an operation id with a hash tag",
            "/api/v2/operations/%7Bg:g1%7D",
            bearer(editor),
            404,
            "NOT_FOUND",
            None,
        ),
    ]);
    cases
}

/// Waits until the worker has acknowledged `n` jobs in all, so that nothing
/// the seed started is still writing when the digest is taken.
async fn settled(env: &TestEnv, n: u64) {
    let q = env.queue(
        "commands",
        QueueOptions {
            kind: QueueKind::Ordered,
            partitions: 4,
            ..QueueOptions::default()
        },
    );
    common::eventually(
        Duration::from_secs(10),
        "the seed is acknowledged",
        || async {
            let st = q.stats().await.unwrap();
            st.counter("processed") == n && st.total(|p| p.pending) == 0
        },
    )
    .await;
}

async fn seed(s: &Stack, token: &str) {
    let client = reqwest::Client::new();
    for c in [
        command(
            "seed-1",
            "CREATE_NODE",
            json!({"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"title": "first"}}}),
        ),
        command("seed-2", "CREATE_NODE", json!({"node": node("n2")})),
        command(
            "seed-3",
            "CREATE_EDGE",
            json!({"edge": {"id": "e1", "source": "n1", "target": "n2"}}),
        ),
    ] {
        let r = client
            .post(format!("{}/api/v2/graphs/g1/command?wait=5000", s.url))
            .bearer_auth(token)
            .body(c.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["outcome"]["status"], "applied", "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_get_their_documented_error_and_change_nothing() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let editor = s.token("alice", &["g1"], Role::Editor);
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let other = s.token("alice", &["g2"], Role::Editor);
    seed(&s, &editor).await;
    settled(&env, 3).await;
    let cases = http_cases(&editor, &viewer, &other);
    let client = reqwest::Client::new();
    let before = digest(&env).await;
    assert!(before.len() > 5, "the seed wrote keys: {before:?}");
    for case in &cases {
        let mut req = client
            .request(case.method.clone(), format!("{}{}", s.url, case.path))
            .body(case.body.clone());
        if let Some(auth) = &case.auth {
            req = req.header("authorization", auth);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: the error is not JSON: {status} {text:?}", case.name));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (case.status, Some(case.code)),
            "{}: {body}",
            case.name
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: a message says why: {body}",
            case.name
        );
        if let Some(field) = &case.field
            && case.status == 400
        {
            assert_eq!(body["error"]["field"], json!(field), "{}", case.name);
        }
        let changed = diff(&before, &digest(&env).await);
        assert!(
            changed.is_empty(),
            "{} changed Redis: {changed:#?}",
            case.name
        );
    }
    // A 4 MiB body is answered 413 after the first 64 KiB: the client need
    // not send the rest (a client that does may see the connection close).
    let addr = s.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v2/graphs/g1/command HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {editor}\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![b' '; 128 * 1024]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("TOO_LARGE") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer to a 4 MiB body")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
    let changed = diff(&before, &digest(&env).await);
    assert!(
        changed.is_empty(),
        "a 4 MiB body changed Redis: {changed:#?}"
    );

    // Everything stayed as the seed left it.
    let state = s.store.state("g1").await.unwrap();
    assert_eq!(
        (state.version, state.nodes.len(), state.edges.len()),
        (3, 2, 1)
    );
}

/// A WebSocket frame and the ERROR it must get: (frame, code, field).
fn ws_cases() -> Vec<(String, String, &'static str, Option<&'static str>)> {
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
fn ws_presence_cases() -> Vec<(String, String, &'static str)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_frames_get_errors_change_nothing_and_keep_the_socket() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let editor = s.token("alice", &["g1"], Role::Editor);
    seed(&s, &editor).await;
    settled(&env, 3).await;

    // Upgrades refused before any socket opens.
    let other_secret = Auth::new("another-secret-of-enough-length")
        .unwrap()
        .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(600))
        .unwrap();
    let expired = signed(
        json!({"sub": "alice", "graphs": "*", "role": "editor", "exp": graphq::db::now_ms() / 1000 - 5}),
    );
    let upgrades = [
        ("no token", "/ws".to_string(), 401),
        ("a garbage token", "/ws?token=abc".to_string(), 401),
        (
            "a token of another secret",
            format!("/ws?token={other_secret}"),
            401,
        ),
        ("an expired token", format!("/ws?token={expired}"), 401),
        (
            "an unsigned token",
            format!("/ws?token={}", unsigned_token()),
            401,
        ),
        (
            "a graph the token does not name",
            format!("/api/v2/graphs/g2/subscribe?token={editor}"),
            403,
        ),
        (
            "a graph id with a hash tag",
            format!("/api/v2/graphs/%7Bg1%7D/subscribe?token={editor}"),
            400,
        ),
    ];
    let before = digest(&env).await;
    for (name, path, status) in upgrades {
        match ws::Client::try_connect(&s.ws, &path).await {
            Err(Some(refused)) => assert_eq!(refused, status, "{name}"),
            Err(None) => panic!("{name}: the upgrade got no HTTP answer"),
            Ok(_) => panic!("{name}: the upgrade was not refused"),
        }
    }
    let changed = diff(&before, &digest(&env).await);
    assert!(
        changed.is_empty(),
        "refused upgrades changed Redis: {changed:#?}"
    );

    let mut a = ws::Client::with_token(&s.ws, &editor).await;
    let cases = ws_cases();
    for (name, frame, code, field) in &cases {
        a.send_raw(Message::Text(frame.clone().into())).await;
        let e = a.next().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("ERROR"), Some(*code)),
            "{name}: {e}"
        );
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {e}"
        );
        if let Some(field) = field {
            assert_eq!(e["field"], json!(field), "{name}: {e}");
        }
        let changed = diff(&before, &digest(&env).await);
        assert!(changed.is_empty(), "{name} changed Redis: {changed:#?}");
    }
    a.send_raw(Message::Binary(vec![0, 159, 146, 150].into()))
        .await;
    assert_eq!(a.next_of("ERROR").await["code"], "UNSUPPORTED_FRAME");

    a.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 3}))
        .await;
    assert_eq!(a.next_of("SYNC").await["status"], "in_sync");
    for (name, frame, code) in ws_presence_cases() {
        a.send_raw(Message::Text(frame.into())).await;
        let e = a.next().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("ERROR"), Some(code)),
            "{name}: {e}"
        );
    }
    // A viewer's command.
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let mut v = ws::Client::with_token(&s.ws, &viewer).await;
    v.send(json!({"type": "COMMAND", "graphId": "g1", "command": command("v1", "DELETE_NODE", json!({"id": "n1"}))}))
        .await;
    let e = v.next_of("ERROR").await;
    assert_eq!(
        (e["code"].as_str(), e["operationId"].as_str()),
        (Some("FORBIDDEN"), Some("v1"))
    );
    let changed = diff(&before, &digest(&env).await);
    assert!(
        changed.is_empty(),
        "presence or a viewer changed Redis: {changed:#?}"
    );

    // The socket survived all of it: a valid command still goes through.
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": command("ok", "DELETE_EDGE", json!({"id": "e1"}))}))
        .await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 4);
    // A frame over the gateway's limit (128 KiB) closes the socket with 1009.
    a.send_raw(Message::Text("x".repeat(129 * 1024).into()))
        .await;
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_looking_but_valid_data_is_stored_verbatim() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1", "g2"], Role::Editor);
    // A bystander graph: whatever g1 receives must not touch it.
    let client = reqwest::Client::new();
    let send = |graph: &str, body: String| {
        client
            .post(format!("{}/api/v2/graphs/{graph}/command?wait=5000", s.url))
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    let r = send(
        "g2",
        command("g2-1", "CREATE_NODE", json!({"node": node("keep")})).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let bystander = s.store.raw("g2").await.unwrap();

    let lua = "]]..redis.call('FLUSHALL')..[[";
    let data_cases: Vec<(&str, &str, Value)> = vec![
        (
            "lua-1",
            "lua",
            json!({"title": lua, "code": "redis.call(\"DEL\", KEYS[1]) return 1", "end": "]==] --"}),
        ),
        (
            "keys-1",
            "a:b:c",
            json!({"key": "graphq:{g:g2}:nodes", "glob": "*", "tag": "{g:g2}"}),
        ),
        (
            "ctrl-1",
            "ctrl",
            json!({"nul": "a\u{0}b", "crlf": "x\r\nDEL y\r\n", "quote": "\"\\'", "emoji": "🦀", "bom": "\u{feff}"}),
        ),
        (
            "cjson-1",
            "cjson",
            json!({"empty_obj": {}, "empty_list": [], "big": 1e308, "tiny": 5e-324, "neg_zero": -0.0, "int": 9007199254740993u64}),
        ),
        (
            "deep-1",
            "deep",
            json!({"a": serde_json::from_str::<Value>(&nest(7)).unwrap()}),
        ),
        (
            "proto-1",
            "proto",
            json!({"__proto__": {"admin": true}, "constructor": "x"}),
        ),
    ];
    for (op, id, data) in &data_cases {
        let c = command(
            op,
            "CREATE_NODE",
            json!({"node": {"id": id, "type": "redis.call('SHUTDOWN')", "position": {"x": 0, "y": 0}, "data": data}}),
        );
        let r = send("g1", c.to_string()).await.unwrap();
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["outcome"]["status"], "applied", "{op}: {b}");
    }
    // Duplicate keys: the last wins, and what is stored is what was checked.
    let dup = r#"{"operationId":"dup-1","type":"CREATE_NODE","payload":{"node":{"id":"b{a}d","id":"dup","position":{"x":0,"y":0},"data":{"k":"first","k":"last"}}}}"#;
    let b: Value = send("g1", dup.into()).await.unwrap().json().await.unwrap();
    assert_eq!(b["outcome"]["status"], "applied", "{b}");
    // A huge but finite number is a number like any other.
    let huge = r#"{"operationId":"huge-1","type":"UPDATE_VIEWPORT","payload":{"x":123456789012345678901234567890,"y":-1e308,"zoom":1e-300}}"#;
    let b: Value = send("g1", huge.into()).await.unwrap().json().await.unwrap();
    assert_eq!(b["outcome"]["status"], "applied", "{b}");

    let state: Value = client
        .get(format!("{}/api/v2/graphs/g1/state", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nodes = state["nodes"].as_array().unwrap();
    for (op, id, data) in &data_cases {
        let n = nodes
            .iter()
            .find(|n| n["id"] == *id)
            .unwrap_or_else(|| panic!("{op}: node {id} stored"));
        assert_eq!(&n["data"], data, "{op}: data comes back verbatim");
        assert_eq!(n["type"], "redis.call('SHUTDOWN')");
    }
    let dup = nodes
        .iter()
        .find(|n| n["id"] == "dup")
        .expect("the last id wins");
    assert_eq!(dup["data"], json!({"k": "last"}));
    assert!(nodes.iter().all(|n| n["id"] != "b{a}d"));
    assert_eq!(state["viewport"]["y"], json!(-1e308));
    assert_eq!(state["viewport"]["x"].as_f64(), Some(1.2345678901234568e29));
    assert_eq!(state["version"], data_cases.len() + 2);
    // The scripts did not run any of it: the other graph is untouched and
    // g1's stored state checks out.
    assert_eq!(s.store.raw("g2").await.unwrap(), bystander);
    let report = s.store.verify("g1").await.unwrap();
    assert!(report.ok(), "{report:?}");
}

/// Reads until the server closes the connection; false when it stayed open
/// past `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_silent_http_clients_are_cut_off() {
    let env = TestEnv::start().await;
    let settings = GatewaySettings {
        header_read_timeout_ms: 500,
        ..GatewaySettings::default()
    };
    let s = Stack::start(&env, settings).await;
    let addr = s.url.trim_start_matches("http://").to_string();

    // A client that connects and never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a silent connection stayed open for 5 s"
    );

    // A slowloris: the request head trickles in a byte every 100 ms and would
    // take ~10 s to complete.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(60)
    );
    let mut cut = false;
    for b in head.bytes() {
        if slow.write_all(&[b]).await.is_err() {
            cut = true;
            break;
        }
        // Anything the server does before the head is complete (close, or
        // an error status) means it gave up on us.
        let mut buf = [0u8; 256];
        if tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickled request head was served");

    // A keep-alive connection that goes quiet after a request is closed too,
    // while a prompt client is served as usual.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)).await,
        "an idle keep-alive connection stayed open"
    );
    let r = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    assert_eq!(r.status(), 200);
}
