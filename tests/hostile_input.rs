//! Hostile and malformed input over HTTP and WebSocket (docs/reliability.md: "bad input
//! of any kind gets a clear error and changes nothing").
//!
//! Each table row is one input and the documented answer (status, error
//! `code`, `field`). After every row the Redis key space under the test's
//! prefix is compared with a digest taken before: a refused input must leave
//! every key as it was. Inputs that are valid but look dangerous (Lua in
//! strings, key-like ids) are applied and must come back
//! byte for byte. Slow or silent HTTP clients are cut off by the gateway's
//! header-read timeout.

mod common;
mod hostile;

use std::time::Duration;

use common::ws;
use common::{Stack, TestEnv};
use graphq::auth::{Auth, Graphs, Role};
use graphq::gateway::GatewaySettings;
use hostile::http_cases::http_cases;
use hostile::ws_cases::{ws_cases, ws_presence_cases};
use hostile::{command, diff, digest, nest, node, seed, settled, signed, unsigned_token};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

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
    assert_eq!(state["viewport"]["y"], json!(-1e308));
    assert_eq!(state["viewport"]["x"].as_f64(), Some(1.2345678901234568e29));
    assert_eq!(state["version"], data_cases.len() + 1);
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
