//! Server-Sent Events (docs/protocol.md, Server-Sent Events) against a real
//! gateway, worker and redis-server, read by a plain HTTP/1.1 client.

mod common;

use std::time::Duration;

use common::sse::{SseClient, SseEvent};
use common::ws::Client;
use common::{Stack, TestEnv};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};

fn create(op: &str, id: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}})
}

/// Posts a command and waits for its outcome.
async fn run(s: &Stack, token: &str, graph: &str, cmd: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/graphs/{graph}/command?wait=5000", s.url))
        .bearer_auth(token)
        .body(cmd.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json::<Value>().await.unwrap()["outcome"].clone()
}

async fn state(s: &Stack, token: &str, graph: &str) -> Value {
    common::state_over_http(&s.url, graph, token).await
}

fn events_url(s: &Stack, graph: &str) -> String {
    format!("{}/api/v2/graphs/{graph}/events", s.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_comes_first_then_every_version_in_order_with_epoch_version_ids() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            heartbeat_ms: 100,
            ..GatewaySettings::default()
        },
    )
    .await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let mut sse = SseClient::with_token(&events_url(&s, "g1"), &t).await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");

    let sync = sse.next().await.unwrap();
    assert_eq!(sync.event, "SYNC");
    assert_eq!(sync.json()["status"], "reset");
    assert_eq!(sync.json()["version"], 0);
    assert_eq!(
        sync.id.as_deref(),
        Some(":0"),
        "a graph never written has no epoch"
    );
    assert_eq!(sse.retry, Some(1000), "a retry hint comes before the SYNC");

    for i in 1..=5 {
        run(&s, &t, "g1", create(&format!("op{i}"), &format!("n{i}"))).await;
    }
    let epoch = state(&s, &t, "g1").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!epoch.is_empty());
    for v in 1..=5u64 {
        let e = sse.next().await.unwrap();
        assert_eq!(e.event, "COMMAND_APPLIED");
        assert_eq!(e.id, Some(format!("{epoch}:{v}")));
        let data = e.json();
        assert_eq!(data["version"], v);
        assert_eq!(data["operationId"], format!("op{v}"));
        assert_eq!(data["userId"], "alice");
    }
    // An idle stream keeps proxies from timing it out with comments.
    tokio::time::sleep(Duration::from_millis(400)).await;
    run(&s, &t, "g1", create("op6", "n6")).await;
    let e = sse.next().await.unwrap();
    assert_eq!(e.id, Some(format!("{epoch}:6")));
    assert!(sse.comments >= 1, "heartbeat comments on an idle stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_exactly_what_was_missed() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let auth = format!("Bearer {t}");
    run(&s, &t, "g1", create("op1", "n1")).await;
    let mut first = SseClient::with_token(&events_url(&s, "g1"), &t).await;
    let sync = first.next().await.unwrap();
    let epoch = sync.json()["epoch"].as_str().unwrap().to_string();
    assert_eq!(sync.id, Some(format!("{epoch}:1")));
    run(&s, &t, "g1", create("op2", "n2")).await;
    let last = first.next().await.unwrap().id.unwrap();
    assert_eq!(last, format!("{epoch}:2"));
    drop(first);

    for i in 3..=5 {
        run(&s, &t, "g1", create(&format!("op{i}"), &format!("n{i}"))).await;
    }
    let headers = [("authorization", auth.as_str()), ("last-event-id", &last)];
    let mut resumed = SseClient::open(&events_url(&s, "g1"), &headers)
        .await
        .unwrap();
    let sync = resumed.next().await.unwrap();
    assert_eq!(sync.event, "SYNC");
    assert_eq!(sync.json()["status"], "behind");
    assert_eq!(sync.id, Some(format!("{epoch}:5")));
    let missed: Vec<u64> = sync.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(missed, [3, 4, 5]);
    run(&s, &t, "g1", create("op6", "n6")).await;
    let next = resumed.next().await.unwrap();
    assert_eq!(
        (next.event.as_str(), next.json()["version"].as_u64()),
        ("COMMAND_APPLIED", Some(6))
    );

    // A first connect may give its position in the query instead.
    let url = format!("{}?clientVersion=6&epoch={epoch}", events_url(&s, "g1"));
    let mut at = SseClient::with_token(&url, &t).await;
    assert_eq!(at.next().await.unwrap().json()["status"], "in_sync");

    // Another epoch (the history the client has is gone): the full state.
    let headers = [
        ("authorization", auth.as_str()),
        ("last-event-id", "gone:3"),
    ];
    let mut other = SseClient::open(&events_url(&s, "g1"), &headers)
        .await
        .unwrap();
    let sync = other.next().await.unwrap().json();
    assert_eq!(sync["status"], "reset");
    assert_eq!(sync["state"]["nodes"].as_array().unwrap().len(), 6);

    // A Last-Event-ID that is no id of ours is refused and changes nothing.
    let headers = [("authorization", auth.as_str()), ("last-event-id", "seven")];
    let (status, body) = SseClient::open(&events_url(&s, "g1"), &headers)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_VALUE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_needs_a_token_that_names_the_graph() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (status, body) = SseClient::open(&events_url(&s, "g1"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let (status, _) = SseClient::open(&format!("{}/api/v2/events", s.url), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    let other = s.token("alice", &["g2"], Role::Editor);
    let (status, body) = SseClient::open(&format!("{}?token={other}", events_url(&s, "g1")), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    // A query it cannot read is refused by name, before any event.
    let t = s.token("alice", &["g1"], Role::Editor);
    for (query, field) in [("format=xml", "format"), ("presence=yes", "presence")] {
        let url = format!("{}?{query}&token={t}", events_url(&s, "g1"));
        let (status, body) = SseClient::open(&url, &[]).await.err().unwrap();
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field))
        );
    }
    // EventSource cannot set headers: ?token= it is. Viewers may read.
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let mut sse = SseClient::open(&format!("{}?token={viewer}", events_url(&s, "g1")), &[])
        .await
        .unwrap();
    assert_eq!(sse.next().await.unwrap().event, "SYNC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_stream_hears_every_outcome_of_its_own_commands_only() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let alice = s.token("alice", &["*"], Role::Editor);
    let bob = s.token("bob", &["*"], Role::Editor);
    let mut mine = SseClient::with_token(&format!("{}/api/v2/events", s.url), &alice).await;

    run(&s, &bob, "g1", create("b1", "nb")).await;
    run(&s, &alice, "g1", create("a1", "n1")).await;
    let reverted = run(&s, &alice, "g1", create("a2", "n1")).await;
    assert_eq!(reverted["status"], "reverted");
    run(&s, &alice, "g2", create("a3", "n1")).await;

    let applied = mine.next().await.unwrap();
    assert_eq!(applied.event, "COMMAND_APPLIED");
    let data = applied.json();
    assert_eq!(
        (data["operationId"].as_str(), data["graphId"].as_str()),
        (Some("a1"), Some("g1"))
    );
    assert_eq!(data["version"], 2);
    assert_eq!(data["change"]["nodes"][0]["id"], "n1");
    let revert = mine.next().await.unwrap();
    assert_eq!(revert.event, "REVERT");
    assert_eq!(revert.json()["operationId"], "a2");
    assert_eq!(revert.json()["error"]["code"], "ALREADY_EXISTS");
    let other_graph = mine.next().await.unwrap();
    assert_eq!(other_graph.event, "COMMAND_APPLIED");
    assert_eq!(other_graph.json()["graphId"], "g2");
    assert_eq!(other_graph.json()["operationId"], "a3");
    assert!(
        mine.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing else: bob's command is not alice's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_only_when_asked_for() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let alice = s.token("alice", &["g1"], Role::Editor);
    let bob = s.token("bob", &["g1"], Role::Editor);
    let url = format!("{}?presence=1", events_url(&s, "g1"));
    let mut with = SseClient::with_token(&url, &alice).await;
    let mut without = SseClient::with_token(&events_url(&s, "g1"), &alice).await;
    assert_eq!(with.next().await.unwrap().event, "SYNC");
    assert_eq!(without.next().await.unwrap().event, "SYNC");

    let mut b = Client::with_token(&s.ws, &bob).await;
    b.send(json!({"type": "SUBSCRIBE", "graphId": "g1"})).await;
    b.next_of("SYNC").await;
    b.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 3, "y": 4}}))
        .await;
    let p = with.next_named("PRESENCE").await.json();
    assert_eq!(
        (p["userId"].as_str(), p["cursor"]["x"].as_u64()),
        (Some("bob"), Some(3))
    );
    drop(b);
    with.next_named("PRESENCE_LEAVE").await;
    // The other stream heard neither; the next thing it hears is a change.
    run(&s, &alice, "g1", create("a1", "n1")).await;
    assert_eq!(without.next().await.unwrap().event, "COMMAND_APPLIED");
}

/// Folds a Datastar event's signal patch into `signals` (RFC 7386).
fn fold(signals: &mut Value, e: &SseEvent) {
    assert_eq!(e.event, "datastar-patch-signals");
    let patch = e
        .data
        .lines()
        .find_map(|l| l.strip_prefix("signals "))
        .expect("a signals line");
    merge(signals, &serde_json::from_str(patch).unwrap());
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `GET state` as the `graph` signal holds it: entities by id, no
/// checksum, null-valued keys left out (a merge patch's null removes).
fn as_signal(state: &Value) -> Value {
    fn by_id(list: &Value) -> Value {
        Value::Object(
            list.as_array()
                .unwrap()
                .iter()
                .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
                .collect(),
        )
    }
    let mut graph = json!({"id": state["graphId"], "epoch": state["epoch"], "version": state["version"],
        "nodes": by_id(&state["nodes"]), "edges": by_id(&state["edges"]), "viewport": state["viewport"]});
    let mut folded = json!({});
    merge(&mut folded, &json!({"graph": graph.take()}));
    folded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastar_patches_fold_into_the_state() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let auth = format!("Bearer {t}");
    run(&s, &t, "g1", json!({"operationId": "c0", "type": "CREATE_NODE", "payload": {"node":
        {"id": "n0", "type": "task", "position": {"x": 0, "y": 0}, "data": {"label": "first", "keep": 1}}}})).await;
    let headers = [
        ("authorization", auth.as_str()),
        ("datastar-request", "true"),
    ];
    let mut ds = SseClient::open(&events_url(&s, "g1"), &headers)
        .await
        .unwrap();
    let mut signals = json!({});
    let first = ds.next().await.unwrap();
    fold(&mut signals, &first);
    assert_eq!(signals, as_signal(&state(&s, &t, "g1").await));

    let commands = [
        json!({"operationId": "c1", "type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 1, "y": 1}, "data": {"a": {"deep": 1}}}}}),
        json!({"operationId": "c2", "type": "CREATE_EDGE", "payload": {"edge": {"id": "e1", "source": "n0", "target": "n1", "data": {"w": 2}}}}),
        json!({"operationId": "c3", "type": "UPDATE_NODE", "payload": {"id": "n0", "patch": {"type": null, "data": {"label": null, "status": "done"}}}}),
        json!({"operationId": "c4", "type": "UPDATE_VIEWPORT", "payload": {"x": 5, "y": 6, "zoom": 1.5}}),
        json!({"operationId": "c5", "type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {"a": {"other": 2}}}}}),
        json!({"operationId": "c6", "type": "DELETE_NODE", "payload": {"id": "n1"}}),
        json!({"operationId": "c7", "type": "BATCH_UPDATE", "payload": {"operations": [
            {"type": "CREATE_NODE", "payload": {"node": {"id": "n2", "position": {"x": 2, "y": 2}}}},
            {"type": "UPDATE_NODE", "payload": {"id": "n2", "patch": {"position": {"x": 9, "y": 9}}}}]}}),
        json!({"operationId": "c8", "type": "UNDO"}),
        json!({"operationId": "c9", "type": "UNDO"}),
    ];
    for c in commands {
        let outcome = run(&s, &t, "g1", c.clone()).await;
        assert_eq!(outcome["status"], "applied", "{c}");
        let e = ds.next().await.unwrap();
        fold(&mut signals, &e);
        let now = state(&s, &t, "g1").await;
        assert_eq!(
            e.id,
            Some(format!(
                "{}:{}",
                now["epoch"].as_str().unwrap(),
                now["version"]
            ))
        );
        assert_eq!(signals, as_signal(&now), "after {c}");
    }

    // Resumed (Datastar's own reconnect sends Last-Event-ID): a client that
    // falls too far behind for the log is handed the graph again, its old
    // one cleared first.
    let url = format!("{}?format=datastar", events_url(&s, "g1"));
    let headers = [
        ("authorization", auth.as_str()),
        ("last-event-id", "gone:1"),
    ];
    let mut again = SseClient::open(&url, &headers).await.unwrap();
    let mut stale = json!({"graph": {"nodes": {"ghost": {"id": "ghost"}}}});
    fold(&mut stale, &again.next().await.unwrap());
    fold(&mut stale, &again.next().await.unwrap());
    assert_eq!(stale, as_signal(&state(&s, &t, "g1").await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_keep_up_is_ended_and_resumes_by_last_event_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            send_queue: 4,
            ..GatewaySettings::default()
        },
    )
    .await;
    let t = s.token("alice", &["g1"], Role::Editor);
    // A client that reads nothing, with a small receive window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = s.url.trim_start_matches("http://").parse().unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    let head = format!(
        "GET /api/v2/graphs/g1/events?token={t} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // Changes of about 50 KB each: far more than the socket buffers hold.
    let big = "x".repeat(50_000);
    let last = 150u64;
    for v in 1..=last {
        let cmd = json!({"operationId": format!("op{v}"), "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{v}"), "position": {"x": 0, "y": 0}, "data": {"blob": big}}}});
        assert_eq!(run(&s, &t, "g1", cmd).await["status"], "applied");
    }
    // What the stream holds ends before the last version: it was cut off.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            // The chunked body's end.
            if got.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stream ended");
    let text = String::from_utf8_lossy(&got);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    let seen = ids.last().expect("some events got through").to_string();
    let seen_version: u64 = seen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(seen_version < last, "cut off before the end: {seen}");
    // Resuming from the last id it read gets exactly the rest.
    let auth = format!("Bearer {t}");
    let headers = [("authorization", auth.as_str()), ("last-event-id", &seen)];
    let mut resumed = SseClient::open(&events_url(&s, "g1"), &headers)
        .await
        .unwrap();
    let sync = resumed.next().await.unwrap().json();
    assert_eq!(sync["status"], "behind");
    let versions: Vec<u64> = sync["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (seen_version + 1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datastar_action_posts_a_command_from_its_signals() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let url = format!("{}/api/v2/graphs/g1/datastar/command", s.url);
    let post = |body: String, token: Option<String>| {
        let mut req = reqwest::Client::new()
            .post(&url)
            .header("datastar-request", "true")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // The action sends every signal of the page; the command is one of them.
    let signals = json!({"graph": {"version": 0}, "label": "x", "command": create("d1", "n1")});
    let resp = post(signals.to_string(), Some(t.clone())).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: datastar-patch-signals"), "{text}");
    let outcome = |text: &str| -> Value {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("data: signals "))
            .unwrap();
        serde_json::from_str::<Value>(line).unwrap()["outcome"].clone()
    };
    assert_eq!(
        outcome(&text),
        json!({"operationId": "d1", "accepted": true, "error": {"code": "", "message": "", "field": ""}})
    );
    common::eventually(Duration::from_secs(10), "d1 applied", || async {
        state(&s, &t, "g1").await["version"] == 1
    })
    .await;

    // Without a command among the signals: refused, nothing queued.
    let resp = post(json!({"label": "x"}).to_string(), Some(t.clone()))
        .await
        .unwrap();
    let refused = outcome(&resp.text().await.unwrap());
    assert_eq!(refused["accepted"], false);
    assert_eq!(refused["error"]["code"], "MISSING_FIELD");
    let resp = post(
        json!({"command": {"type": "CREATE_NODE"}}).to_string(),
        Some(t.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome(&resp.text().await.unwrap())["error"]["code"],
        "MISSING_FIELD"
    );
    // No token, or a viewer's: refused before anything is read.
    let resp = post(signals.to_string(), None).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let resp = post(signals.to_string(), Some(viewer)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(state(&s, &t, "g1").await["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_count_among_the_users_connections() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            max_sockets_per_user: 1,
            ..GatewaySettings::default()
        },
    )
    .await;
    let t = s.token("alice", &["g1"], Role::Editor);
    let mut first = SseClient::with_token(&events_url(&s, "g1"), &t).await;
    assert_eq!(first.next().await.unwrap().event, "SYNC");
    let auth = format!("Bearer {t}");
    let (status, body) = SseClient::open(
        &format!("{}/api/v2/events", s.url),
        &[("authorization", &auth)],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "TOO_MANY_CONNECTIONS");
    // Once the first stream is gone, its place is free again.
    drop(first);
    common::eventually(Duration::from_secs(10), "a stream again", || async {
        SseClient::open(
            &format!("{}/api/v2/events", s.url),
            &[("authorization", &auth)],
        )
        .await
        .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_and_frees_its_place() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            max_sockets_per_user: 1,
            ..GatewaySettings::default()
        },
    )
    .await;
    let graphs = graphq::auth::Graphs::Only(vec!["g1".to_string()]);
    let short = s
        .auth
        .mint("alice", graphs, Role::Editor, Duration::from_secs(3))
        .unwrap();
    let mut sse = SseClient::with_token(&events_url(&s, "g1"), &short).await;
    assert_eq!(sse.next().await.unwrap().event, "SYNC");
    // Then the stream ends by itself (an EventSource would reconnect with a
    // new token); `next` fails the test when neither an event nor the end
    // comes within its wait.
    while let Some(e) = sse.next().await {
        assert_ne!(e.event, "SYNC", "one SYNC, then nothing");
    }
    let t = s.token("alice", &["g1"], Role::Editor);
    // ... and no longer counts among the user's connections.
    common::eventually(Duration::from_secs(10), "a stream again", || async {
        SseClient::open(
            &events_url(&s, "g1"),
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await
        .is_ok()
    })
    .await;
}
