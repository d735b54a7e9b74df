//! The HTTP API (docs/protocol.md, HTTP) against a real gateway, worker and redis-server.

mod common;

use common::{Stack, TestEnv};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use graphq::queue::RateLimit;
use serde_json::{Value, json};

fn create(op: &str, id: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}})
}

async fn post(
    url: &str,
    token: Option<&str>,
    body: String,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_accepted_applied_and_visible_in_state_changes_and_status() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let (status, body, _) = post(
        &format!("{}/api/v2/graphs/g1/command", s.url),
        Some(&t),
        create("op1", "n1").to_string(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], true);
    assert_eq!(body["operationId"], "op1");
    assert!(body["estimatedProcessingTime"].is_u64());

    // ?wait holds the request until the outcome is known.
    let (status, body, _) = post(
        &format!("{}/api/v2/graphs/g1/command?wait=5000", s.url),
        Some(&t),
        create("op2", "n2").to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["status"], "applied");
    assert_eq!(body["outcome"]["version"], 2);

    let (status, state) = get(&format!("{}/api/v2/graphs/g1/state", s.url), &t).await;
    assert_eq!(status, 200);
    assert_eq!(state["version"], 2);
    assert_eq!(state["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(state["checksum"].as_str().unwrap().len(), 12);

    let (status, ch) = get(
        &format!("{}/api/v2/graphs/g1/changes?since=1&limit=10", s.url),
        &t,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ch["currentVersion"], 2);
    assert_eq!(ch["changes"][0]["version"], 2);
    assert_eq!(ch["changes"][0]["operationId"], "op2");

    let (status, op) = get(&format!("{}/api/v2/operations/op1", s.url), &t).await;
    assert_eq!(status, 200);
    assert_eq!(op["status"], "completed");
    assert_eq!(op["graphId"], "g1");
    let (status, _) = get(&format!("{}/api/v2/operations/nope", s.url), &t).await;
    assert_eq!(status, 404);

    // A revert comes back through ?wait too.
    let del = json!({"operationId": "op3", "type": "DELETE_NODE", "payload": {"id": "zz"}});
    let (status, body, _) = post(
        &format!("{}/api/v2/graphs/g1/command?wait=5000", s.url),
        Some(&t),
        del.to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"]["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_spec_shape_and_status_and_change_nothing() {
    let env = TestEnv::start().await;
    let settings = GatewaySettings {
        user_rate_limit: Some(RateLimit {
            max: 3,
            duration_ms: 60_000,
        }),
        ..GatewaySettings::default()
    };
    let s = Stack::start(&env, settings).await;
    let editor = s.token("alice", &["g1"], Role::Editor);
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let url = format!("{}/api/v2/graphs/g1/command", s.url);
    let good = create("ok1", "n1").to_string();

    let (st, b, _) = post(&url, None, good.clone()).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (st, b, _) = post(&url, Some("not.a.token"), good.clone()).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (st, b, _) = post(&url, Some(&viewer), good.clone()).await;
    assert_eq!((st, b["error"]["code"].as_str()), (403, Some("FORBIDDEN")));
    let (st, _, _) = post(
        &format!("{}/api/v2/graphs/g2/command", s.url),
        Some(&editor),
        good.clone(),
    )
    .await;
    assert_eq!(st, 403, "a token never reaches a graph it does not name");
    let (st, b, _) = post(&url, Some(&editor), r#"{"operationId":"x","type":"UPDATE_NODE","payload":{"id":"n1","patch":{"position":{"x":"a","y":1}}}}"#.into()).await;
    assert_eq!(st, 400);
    assert_eq!(b["error"]["code"], "INVALID_TYPE");
    assert_eq!(b["error"]["field"], "payload.patch.position.x");
    let huge = format!(
        r#"{{"operationId":"x","type":"CREATE_NODE","payload":{{"node":{{"id":"n","position":{{"x":1,"y":1}},"data":{{"s":"{}"}}}}}}}}"#,
        "x".repeat(70_000)
    );
    let (st, b, _) = post(&url, Some(&editor), huge).await;
    assert_eq!((st, b["error"]["code"].as_str()), (413, Some("TOO_LARGE")));
    let (st, _) = get(
        &format!("{}/api/v2/graphs/g1/changes?since=abc", s.url),
        &editor,
    )
    .await;
    assert_eq!(st, 400);

    // Nothing above reached Redis as a command.
    assert_eq!(s.store.state("g1").await.unwrap().version, 0);

    // Per-user rate limit: 3 per minute, then 429 with Retry-After; others unaffected.
    for i in 0..3 {
        let (st, _, _) = post(
            &url,
            Some(&editor),
            create(&format!("r{i}"), &format!("r{i}")).to_string(),
        )
        .await;
        assert_eq!(st, 202);
    }
    let (st, b, headers) = post(&url, Some(&editor), create("r9", "r9").to_string()).await;
    assert_eq!(st, 429);
    assert_eq!(b["error"]["code"], "RATE_LIMITED");
    assert!(b["error"]["retryAfterMs"].as_u64().unwrap() > 0);
    assert!(headers.get("retry-after").is_some());
    let bob = s.token("bob", &["g1"], Role::Editor);
    let (st, _, _) = post(&url, Some(&bob), create("b1", "b1").to_string()).await;
    assert_eq!(st, 202, "other users are not limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_older_than_the_log_answer_410_and_health_endpoints_answer() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["*"], Role::Editor);
    // Forge a trimmed log: graph at version 5, log holding only version 5.
    let mut conn = env.conn();
    let _: () = redis::pipe()
        .hset_multiple(
            env.keys.graph_meta("g9"),
            &[("epoch", "e"), ("version", "5"), ("checksum", "0")],
        )
        .ignore()
        .cmd("XADD")
        .arg(env.keys.graph_log("g9"))
        .arg("5-0")
        .arg("operationId")
        .arg("o")
        .arg("userId")
        .arg("u")
        .arg("type")
        .arg("X")
        .arg("timestamp")
        .arg(0)
        .arg("change")
        .arg("{}")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let (st, b) = get(&format!("{}/api/v2/graphs/g9/changes?since=2", s.url), &t).await;
    assert_eq!(st, 410);
    assert_eq!(b["error"]["code"], "TOO_OLD");
    let (st, _) = get(&format!("{}/api/v2/graphs/g9/changes?since=4", s.url), &t).await;
    assert_eq!(st, 200);
    assert_eq!(
        reqwest::get(format!("{}/healthz", s.url))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", s.url))
            .await
            .unwrap()
            .status(),
        200
    );
}
