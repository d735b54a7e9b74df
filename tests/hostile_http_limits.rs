//! Hostile HTTP clients that hold connections, and batches refused half-way
//! (issue 17; docs/protocol.md, HTTP, and docs/reliability.md, Connection
//! limits).
//!
//! A gateway must not read a body for a client it has not authenticated,
//! must cut a body that does not arrive in time, must not route demo-only
//! endpoints outside `graphq dev`, and must cap connections per peer address
//! and in total while `/healthz` stays reachable. The connection tests run a
//! separate `graphq gateway` process with small caps and talk raw HTTP/1.1 on
//! TCP sockets, so what they see is what the process does. A non-atomic batch
//! is either queued whole or not at all: a refusal (rate limit, an operation
//! id taken on another graph) leaves no command of it applied.

mod common;

use std::time::Duration;

use common::{Proc, SECRET, Stack, TestEnv, eventually};
use graphq::auth::{Auth, Graphs, Role};
use graphq::gateway::GatewaySettings;
use graphq::queue::RateLimit;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The longest any test here waits for one answer; a wait that long is a
/// failure, never a measurement.
const BOUND: Duration = Duration::from_secs(15);

/// A `graphq gateway` process on a free port with `vars` in its environment
/// (settings as `GRAPHQ_GATEWAY__…`), once it answers `/healthz`.
async fn gateway(env: &TestEnv, vars: &[(&str, &str)]) -> (Proc, String) {
    let port = graphq::redis_server::free_port().unwrap();
    let mut cmd = env.graphq();
    cmd.args(["gateway", "--bind", &format!("127.0.0.1:{port}")])
        .env("GRAPHQ_AUTH_SECRET", SECRET);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd);
    let addr = format!("127.0.0.1:{port}");
    eventually(
        Duration::from_secs(30),
        "gateway answers /healthz",
        || async {
            reqwest::get(format!("http://{addr}/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    (proc, addr)
}

fn token(user: &str) -> String {
    Auth::new(SECRET)
        .unwrap()
        .mint(user, Graphs::All, Role::Editor, Duration::from_secs(600))
        .unwrap()
}

/// A TCP connection to `addr` whose source address is `from` (any address
/// of 127.0.0.0/8 is loopback, so each is a different peer to the gateway).
async fn connect_from(from: &str, addr: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// The status line of the next answer on `tcp`, or None when the server
/// closed the connection without one. Panics when neither happens in time.
async fn answer(tcp: &mut TcpStream, what: &str) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(BOUND, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer and no close within {BOUND:?}"));
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Sends `head` (a request head without its final blank line) and the first
/// bytes of a body, then waits for the answer without sending the rest.
async fn send_head(tcp: &mut TcpStream, head: &str, body_start: &[u8]) -> bool {
    let mut bytes = format!("{head}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(body_start);
    tcp.write_all(&bytes).await.is_ok()
}

/// True when the server closes `tcp`, with or without an answer first.
async fn closed(tcp: &mut TcpStream, what: &str) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, tcp.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const STALLED_COMMAND: &str = "POST /api/v2/graphs/g1/command HTTP/1.1\r\nHost: gw\r\n\
     Content-Type: application/json\r\nContent-Length: 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_body_is_never_read() {
    let env = TestEnv::start().await;
    let (_gw, addr) = gateway(&env, &[]).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    assert!(send_head(&mut tcp, STALLED_COMMAND, b"{\"operati").await);
    let status = answer(&mut tcp, "unauthenticated stalled POST").await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 401 Unauthorized"));
    // Nothing more is read from a client that may not send: the rest of the
    // body is not waited for.
    assert!(closed(&mut tcp, "after the 401").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_after_the_body_timeout() {
    let env = TestEnv::start().await;
    let (_gw, addr) = gateway(&env, &[("GRAPHQ_GATEWAY__BODY_READ_TIMEOUT_MS", "300")]).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "{STALLED_COMMAND}\r\nAuthorization: Bearer {}",
        token("alice")
    );
    assert!(send_head(&mut tcp, &head, b"{\"operati").await);
    let status = answer(&mut tcp, "authenticated stalled POST").await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"));
    assert!(closed(&mut tcp, "after the 408").await);
    // The process still serves.
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_token_route_is_absent_outside_dev() {
    let env = TestEnv::start().await;
    let (_gw, addr) = gateway(&env, &[]).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /api/v2/dev/token HTTP/1.1\r\nHost: gw\r\n\
                Content-Type: application/json\r\nContent-Length: 1000";
    assert!(send_head(&mut tcp, head, b"{\"user\":").await);
    let status = answer(&mut tcp, "POST /api/v2/dev/token on a gateway").await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 404 Not Found"));
}

/// GET of a missing operation without a token: 401 on a connection the
/// gateway serves in full, 503 (or a close) on one it refused.
const PLAIN_GET: &str = "GET /api/v2/operations/none HTTP/1.1\r\nHost: gw";

/// Opens `n` connections from `from` and checks that each is served in full
/// (answered 401, kept open for more requests).
async fn held(from: &str, addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut tcp = connect_from(from, addr).await;
        assert!(send_head(&mut tcp, PLAIN_GET, b"").await);
        let status = answer(&mut tcp, "a connection under the caps").await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 401 Unauthorized"),
            "connection {i} from {from}"
        );
        held.push(tcp);
    }
    held
}

/// A connection beyond a cap: closed at once, or answered 503 for anything
/// but a health probe.
async fn refused(from: &str, addr: &str) {
    let mut tcp = connect_from(from, addr).await;
    if !send_head(&mut tcp, PLAIN_GET, b"").await {
        return;
    }
    let status = answer(&mut tcp, "a connection beyond a cap").await;
    assert!(
        status
            .as_deref()
            .is_none_or(|s| s.starts_with("HTTP/1.1 503")),
        "a connection from {from} beyond the cap was served: {status:?}"
    );
}

/// `/healthz` on a fresh connection from `from`.
async fn healthz_from(from: &str, addr: &str) -> Option<String> {
    let mut tcp = connect_from(from, addr).await;
    assert!(send_head(&mut tcp, "GET /healthz HTTP/1.1\r\nHost: gw", b"").await);
    answer(&mut tcp, "/healthz").await
}

async fn refused_count(addr: &str) -> f64 {
    let text = common::metrics_text(&format!("http://{addr}")).await;
    text.lines()
        .filter(|l| l.starts_with("graphq_http_connections_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_peer_are_capped_and_health_stays_reachable() {
    let env = TestEnv::start().await;
    let (_gw, addr) = gateway(&env, &[("GRAPHQ_GATEWAY__MAX_CONNECTIONS_PER_IP", "20")]).await;
    let _held = held("127.0.0.1", &addr, 20).await;
    for _ in 0..5 {
        refused("127.0.0.1", &addr).await;
    }
    assert_eq!(
        healthz_from("127.0.0.1", &addr).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "/healthz from the capped peer"
    );
    // Another peer is served in full.
    let _other = held("127.0.0.2", &addr, 3).await;
    assert!(refused_count(&addr).await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_total_are_capped_and_health_stays_reachable() {
    let env = TestEnv::start().await;
    let (_gw, addr) = gateway(&env, &[("GRAPHQ_GATEWAY__MAX_CONNECTIONS", "30")]).await;
    let _a = held("127.0.0.1", &addr, 15).await;
    let _b = held("127.0.0.2", &addr, 15).await;
    for _ in 0..5 {
        refused("127.0.0.3", &addr).await;
    }
    assert_eq!(
        healthz_from("127.0.0.4", &addr).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "/healthz at the total cap"
    );
    assert!(refused_count(&addr).await >= 5.0);
}

// ---- Non-atomic batches: queued whole or not at all ----

fn create(op: &str, id: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE",
           "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}})
}

fn batch(prefix: &str, n: usize) -> Value {
    let ops: Vec<Value> = (0..n)
        .map(|i| create(&format!("{prefix}-{i}"), &format!("{prefix}-n{i}")))
        .collect();
    json!({"operations": ops, "atomic": false})
}

async fn post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The graph's node ids once everything queued before a marker command on
/// the same graph has been applied (commands of a graph apply in order). The
/// marker is sent by a user of its own, whose rate limit is untouched.
async fn nodes_after_marker(s: &Stack, graph: &str, marker: &str) -> Vec<String> {
    let token = &s.token("marker-user", &["*"], Role::Editor);
    let (status, body) = post(
        &format!("{}/api/v2/graphs/{graph}/command?wait=10000", s.url),
        token,
        &create(marker, marker),
    )
    .await;
    assert_eq!(status, 200, "the marker is applied: {body}");
    let state = common::state_over_http(&s.url, graph, token).await;
    let mut ids: Vec<String> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .filter(|id| *id != marker)
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_rate_limit_queues_nothing() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            user_rate_limit: Some(RateLimit {
                max: 100,
                duration_ms: 600_000,
            }),
            ..GatewaySettings::default()
        },
    )
    .await;
    let t = s.token("alice", &["*"], Role::Editor);
    let url = format!("{}/api/v2/graphs/g1/batch", s.url);
    let (status, body) = post(&url, &t, &batch("a", 60)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["operations"].as_array().unwrap().len(), 60);
    // 40 permits are left: a batch of 60 is refused whole.
    let (status, body) = post(&url, &t, &batch("b", 60)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    assert!(
        body["error"]["retryAfterMs"].as_u64().unwrap() > 0,
        "{body}"
    );
    let nodes = nodes_after_marker(&s, "g1", "marker").await;
    assert_eq!(
        nodes.len(),
        60,
        "only the admitted batch applied: {nodes:?}"
    );
    assert!(nodes.iter().all(|n| n.starts_with("a-")), "{nodes:?}");
    // A batch no wait would ever admit is a 400, not a 429 to retry forever.
    let (status, body) = post(&url, &t, &batch("c", 101)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_OPERATIONS", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_operation_id_taken_elsewhere_queues_nothing() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["*"], Role::Editor);
    let (status, _) = post(
        &format!("{}/api/v2/graphs/g2/command?wait=10000", s.url),
        &t,
        &create("taken", "x"),
    )
    .await;
    assert_eq!(status, 200);
    let body =
        json!({"atomic": false, "operations": [create("fresh-1", "n-a"), create("taken", "n-b")]});
    let (status, answer) = post(&format!("{}/api/v2/graphs/g1/batch", s.url), &t, &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "OPERATION_ID_IN_USE", "{answer}");
    assert_eq!(
        answer["error"]["field"], "operations.1.operationId",
        "{answer}"
    );
    let nodes = nodes_after_marker(&s, "g1", "marker").await;
    assert!(nodes.is_empty(), "nothing of the refused batch: {nodes:?}");
    // The first item's claim was released: its id is free for any graph.
    let (status, _) = post(
        &format!("{}/api/v2/graphs/g3/command?wait=10000", s.url),
        &t,
        &create("fresh-1", "n-c"),
    )
    .await;
    assert_eq!(status, 200, "the refused batch's claim was released");

    // The same batch without the taken id is queued whole and applied.
    let body = json!({"atomic": false, "operations": [create("fresh-2", "n-a"), create("fresh-3", "n-b")]});
    let (status, answer) = post(&format!("{}/api/v2/graphs/g1/batch", s.url), &t, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["operations"][1]["operationId"], "fresh-3");
    let nodes = nodes_after_marker(&s, "g1", "marker-2").await;
    assert_eq!(nodes, ["marker", "n-a", "n-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_without_an_operation_id_is_missing_a_field_and_changes_nothing() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["*"], Role::Editor);
    let url = format!("{}/api/v2/graphs/g1/batch", s.url);
    let bare = |id: &str| json!({"type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}});
    let body = json!({"operations": [bare("n-a"), bare("n-b")]});
    let (status, answer) = post(&url, &t, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "MISSING_FIELD", "{answer}");
    assert_eq!(answer["error"]["field"], "operationId", "{answer}");
    let nodes = nodes_after_marker(&s, "g1", "marker").await;
    assert!(nodes.is_empty(), "nothing of the refused batch: {nodes:?}");

    // The same batch with the id it lacked is applied, one version for both.
    let body = json!({"operationId": "batch-1", "operations": [bare("n-a"), bare("n-b")]});
    let (status, answer) = post(&format!("{url}?wait=10000"), &t, &body).await;
    assert_eq!(status, 200, "{answer}");
    let nodes = nodes_after_marker(&s, "g1", "marker-2").await;
    assert_eq!(nodes, ["marker", "n-a", "n-b"]);
}
