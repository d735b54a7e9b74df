//! Shared pieces of the hostile-input tests (`tests/hostile_input.rs`): the
//! digest of the Redis key space that proves a refused input changed nothing,
//! tokens made by hand to reach claims `Auth::mint` refuses to produce, the
//! command builders the tables use, and the seed every test starts from. The
//! tables of cases live in the submodules, one per protocol.

pub mod command_bodies;
pub mod http_cases;
pub mod ws_cases;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{self, SECRET, Stack, TestEnv};
use graphq::queue::{QueueKind, QueueOptions};
use serde_json::{Value, json};

/// Every key under the test's prefix with a type-aware rendering of its
/// content. The worker registry is left out: its scores are heartbeat
/// deadlines that move on their own.
pub async fn digest(env: &TestEnv) -> BTreeMap<String, String> {
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
    // Open sockets are counted per user (`{u:USER}:sockets`, refreshed on a
    // timer): the test's own sockets write it, no refused input does.
    keys.retain(|k| !k.ends_with(":sockets"));
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

pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
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
pub fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn in_an_hour() -> u64 {
    graphq::db::now_ms() / 1000 + 3600
}

pub fn unsigned_token() -> String {
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

pub fn node(id: &str) -> Value {
    json!({"id": id, "position": {"x": 1, "y": 2}})
}

pub fn command(op: &str, kind: &str, payload: Value) -> Value {
    json!({"operationId": op, "type": kind, "payload": payload})
}

pub fn nest(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Waits until the worker has acknowledged `n` jobs in all, so that nothing
/// the seed started is still writing when the digest is taken.
pub async fn settled(env: &TestEnv, n: u64) {
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

pub async fn seed(s: &Stack, token: &str) {
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
