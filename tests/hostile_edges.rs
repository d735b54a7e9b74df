//! The edges a hostile client probes once the obvious holes are closed
//! (issue 17, "weaker points"): numbers at the end of their range, WebSocket
//! frames that break the protocol, query strings and upgrades the framework
//! would answer in plain text, the case of the auth scheme, token errors that
//! would leak library internals, JSON objects with a key given twice, and the
//! word a resent operation is answered with. Each answer is the one
//! docs/protocol.md documents.

mod common;

use std::time::Duration;

use common::ws;
use common::{Stack, TestEnv};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn create(op: &str, id: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}})
}

/// Sends `req` and returns the status and the body, which must be the
/// documented error shape `{"error": {"code", "message", ...}}` whenever
/// the status is not a success.
async fn answer(req: reqwest::RequestBuilder, what: &str) -> (u16, Value) {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{what}: the answer is not JSON: {status} {text:?}"));
    if status >= 400 {
        assert!(
            body["error"]["code"].is_string()
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
            "{what}: not the documented error shape: {status} {body}"
        );
    }
    (status, body)
}

/// POSTs a command body (text as it is) to g1 and waits up to 5 s.
async fn post_g1(s: &Stack, token: &str, body: &str) -> (u16, Value) {
    let req = reqwest::Client::new()
        .post(format!("{}/api/v2/graphs/g1/command?wait=5000", s.url))
        .bearer_auth(token)
        .body(body.to_string());
    answer(req, body).await
}

// docs/protocol.md, HTTP: `GET …/changes?since=N&limit=M`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_since_the_largest_version_are_none_and_limit_zero_is_refused() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    for i in 1..=3 {
        let (status, b) = post_g1(
            &s,
            &token,
            &create(&format!("c-{i}"), &format!("n{i}")).to_string(),
        )
        .await;
        assert_eq!(
            (status, &b["outcome"]["status"]),
            (200, &json!("applied")),
            "{b}"
        );
    }
    let http = reqwest::Client::new();
    let changes = |query: &str| {
        http.get(format!("{}/api/v2/graphs/g1/changes?{query}", s.url))
            .bearer_auth(&token)
    };

    // `since + 1` must not wrap around to "every change".
    for since in [u64::MAX, u64::MAX - 1] {
        let (status, b) = answer(changes(&format!("since={since}")), "since near u64::MAX").await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(
            b["changes"],
            json!([]),
            "since={since}: nothing comes after it"
        );
        assert_eq!(b["currentVersion"], 3);
    }

    // A limit of 0 asks for nothing: refused, not answered with one change.
    let (status, b) = answer(changes("since=0&limit=0"), "limit=0").await;
    assert_eq!(
        (
            status,
            b["error"]["code"].as_str(),
            b["error"]["field"].as_str()
        ),
        (400, Some("INVALID_VALUE"), Some("limit")),
        "{b}"
    );

    // The ordinary cases are unchanged.
    let (status, b) = answer(changes("since=1&limit=1"), "since=1&limit=1").await;
    assert_eq!(status, 200);
    let versions: Vec<u64> = b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2]);
    let (_, b) = answer(changes("since=3"), "since=3").await;
    assert_eq!(b["changes"], json!([]));
}

/// A WebSocket opened by hand over TCP, so that frames can break the
/// protocol in ways a WebSocket library refuses to produce.
struct RawSocket {
    tcp: TcpStream,
}

impl RawSocket {
    /// The upgrade of `path` with these extra header lines; the status line
    /// of the answer when it is not 101.
    async fn open(url: &str, path: &str, headers: &str) -> Result<RawSocket, String> {
        let addr = url.trim_start_matches("http://");
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        // Byte by byte: nothing after the head may be swallowed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut b))
                .await
                .expect("the upgrade is answered")
                .unwrap();
            assert_eq!(
                n,
                1,
                "closed during the upgrade: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head.lines().next().unwrap_or_default().to_string();
        if status.starts_with("HTTP/1.1 101") {
            Ok(RawSocket { tcp })
        } else {
            Err(status)
        }
    }

    /// One client frame: `first` is FIN, RSV and opcode; the payload is
    /// masked, as a client's must be. Write errors are ignored: the server
    /// may close before it has read all of a frame it refuses.
    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.tcp.write_all(&frame).await;
    }

    /// The next frame from the server: (opcode, payload); None at the end.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.tcp.read_exact(&mut h).await.ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.tcp.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                self.tcp.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// The code of the server's close frame (frames before it skipped);
    /// None when the connection ends without one.
    async fn close_code(&mut self) -> Option<u16> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (opcode, payload) = self.next_frame().await?;
                if opcode == 0x8 {
                    return Some(match payload.get(..2) {
                        Some(c) => u16::from_be_bytes([c[0], c[1]]),
                        None => 1005,
                    });
                }
            }
        })
        .await
        .expect("the server closes the socket")
    }
}

// docs/protocol.md, WebSocket, Close codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_close_with_their_own_codes() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let path = format!("/ws?token={token}");
    const FIN_TEXT: u8 = 0x81;
    let cases: Vec<(&str, u8, Vec<u8>, u16)> = vec![
        (
            "a text frame that is not UTF-8",
            FIN_TEXT,
            vec![b'{', 0xff, 0xfe, b'}'],
            1007,
        ),
        (
            "a continuation frame without a start",
            0x80,
            br#"{"type":"HEARTBEAT"}"#.to_vec(),
            1002,
        ),
        (
            "a reserved bit set",
            FIN_TEXT | 0x40,
            br#"{"type":"HEARTBEAT"}"#.to_vec(),
            1002,
        ),
        ("a reserved opcode", 0x83, b"x".to_vec(), 1002),
        (
            "a frame over the 128 KiB limit",
            FIN_TEXT,
            vec![b' '; 129 * 1024],
            1009,
        ),
    ];
    for (name, first, payload, code) in cases {
        let mut raw = RawSocket::open(&s.url, &path, "")
            .await
            .unwrap_or_else(|status| panic!("{name}: upgrade refused: {status}"));
        raw.send_frame(first, &payload).await;
        assert_eq!(raw.close_code().await, Some(code), "{name}");
    }

    // A well-formed exchange on a raw socket still works: the failures
    // above are the frames', not the hand-made client's.
    let mut raw = RawSocket::open(&s.url, &path, "").await.unwrap();
    raw.send_frame(FIN_TEXT, br#"{"type":"HEARTBEAT"}"#).await;
    let (opcode, payload) = tokio::time::timeout(Duration::from_secs(10), raw.next_frame())
        .await
        .unwrap()
        .unwrap();
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((opcode, &reply["type"]), (0x1, &json!("HEARTBEAT")));
}

// docs/protocol.md, HTTP: "Errors are {"error": {...}}", for every error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings_and_plain_gets_of_websocket_paths_get_json_errors() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let http = reqwest::Client::new();
    let body = create("q-1", "n1").to_string();
    let cases = [
        (
            "wait=-1",
            http.post(format!("{}/api/v2/graphs/g1/command?wait=-1", s.url))
                .bearer_auth(&token)
                .body(body.clone()),
            400,
            "INVALID_VALUE",
            Some("wait"),
        ),
        (
            "wait in words",
            http.post(format!("{}/api/v2/graphs/g1/batch?wait=soon", s.url))
                .bearer_auth(&token)
                .body(json!({"operations": [create("q-2", "n2")]}).to_string()),
            400,
            "INVALID_VALUE",
            Some("wait"),
        ),
        (
            "token twice",
            http.get(format!(
                "{}/api/v2/graphs/g1/state?token={token}&token={token}",
                s.url
            )),
            400,
            "INVALID_VALUE",
            Some("token"),
        ),
        (
            "token twice on an operation",
            http.get(format!("{}/api/v2/operations/q-1?token=a&token=b", s.url)),
            400,
            "INVALID_VALUE",
            Some("token"),
        ),
        (
            "clientVersion=abc",
            http.get(format!(
                "{}/api/v2/graphs/g1/subscribe?clientVersion=abc&token={token}",
                s.url
            )),
            400,
            "INVALID_VALUE",
            Some("clientVersion"),
        ),
        (
            "GET /ws without an upgrade",
            http.get(format!("{}/ws?token={token}", s.url)),
            400,
            "NOT_WEBSOCKET",
            None,
        ),
        (
            "GET …/subscribe without an upgrade",
            http.get(format!("{}/api/v2/graphs/g1/subscribe", s.url))
                .bearer_auth(&token),
            400,
            "NOT_WEBSOCKET",
            None,
        ),
        (
            "a graph id that is not UTF-8",
            http.get(format!("{}/api/v2/graphs/%FF/state", s.url))
                .bearer_auth(&token),
            400,
            "INVALID_ID",
            None,
        ),
        (
            "an operation id that is not UTF-8",
            http.get(format!("{}/api/v2/operations/%C3%28", s.url))
                .bearer_auth(&token),
            400,
            "INVALID_ID",
            None,
        ),
        (
            "GET /ws without an upgrade or a token",
            http.get(format!("{}/ws", s.url)),
            401,
            "UNAUTHORIZED",
            None,
        ),
    ];
    for (name, req, status, code, field) in cases {
        let (got, b) = answer(req, name).await;
        assert_eq!(
            (got, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {b}"
        );
        if let Some(field) = field {
            assert_eq!(b["error"]["field"], field, "{name}: {b}");
        }
    }
    // Nothing was queued by the refused command.
    let (status, _) = answer(
        http.get(format!("{}/api/v2/operations/q-1", s.url))
            .bearer_auth(&token),
        "the refused command's operation",
    )
    .await;
    assert_eq!(status, 404);
    // A WebSocket given a bad clientVersion is refused in the same words.
    assert_eq!(
        ws::Client::try_connect(
            &s.ws,
            &format!("/api/v2/graphs/g1/subscribe?clientVersion=-1&token={token}")
        )
        .await
        .err(),
        Some(Some(400))
    );
}

// docs/protocol.md, Auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_token_errors_are_plain() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let http = reqwest::Client::new();
    let state = |auth: String| {
        http.get(format!("{}/api/v2/graphs/g1/state", s.url))
            .header("authorization", auth)
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, b) = answer(state(format!("{scheme} {token}")), scheme).await;
        assert_eq!(status, 200, "{scheme}: {b}");
        assert_eq!(b["graphId"], "g1");
    }
    // The WebSocket upgrade reads the header the same way.
    let raw = RawSocket::open(&s.url, "/ws", &format!("Authorization: bearer {token}\r\n")).await;
    assert!(raw.is_ok(), "{:?}", raw.err());

    // Tokens that are not valid, each for a reason the library words in
    // its own terms: the answer is one documented sentence.
    let bad = [
        ("garbage", "garbage".to_string()),
        (
            "role admin",
            hand_signed(
                json!({"sub": "alice", "graphs": "*", "role": "admin", "exp": 9_999_999_999u64}),
            ),
        ),
        (
            "no exp",
            hand_signed(json!({"sub": "alice", "graphs": "*", "role": "editor"})),
        ),
        (
            "graphs as a glob",
            hand_signed(
                json!({"sub": "alice", "graphs": "g*", "role": "editor", "exp": 9_999_999_999u64}),
            ),
        ),
        (
            "a bad user id",
            hand_signed(
                json!({"sub": "{g:g1}", "graphs": "*", "role": "editor", "exp": 9_999_999_999u64}),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(br#"{"sub":"alice","graphs":"*","role":"editor","exp":9999999999}"#)
            ),
        ),
    ];
    for (name, t) in bad {
        let (status, b) = answer(state(format!("Bearer {t}")), name).await;
        assert_eq!(
            (
                status,
                b["error"]["code"].as_str(),
                b["error"]["message"].as_str()
            ),
            (401, Some("UNAUTHORIZED"), Some("the token is not valid")),
            "{name}: {b}"
        );
    }
}

/// base64url without padding, as JWTs use it.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    out
}

/// A token signed with the test secret whose claims `Auth::mint` would
/// refuse to write.
fn hand_signed(claims: Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap()
}

// docs/protocol.md, Commands: a key given twice is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_twice_is_refused_over_http_and_websocket() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let (status, b) = post_g1(&s, &token, &create("seed-1", "n1").to_string()).await;
    assert_eq!(
        (status, &b["outcome"]["status"]),
        (200, &json!("applied")),
        "{b}"
    );

    let http_cases = [
        (
            r#"{"operationId":"d-1","type":"CREATE_NODE","type":"DELETE_NODE","payload":{"id":"n1"}}"#,
            "type",
        ),
        (
            r#"{"operationId":"d-2","type":"DELETE_NODE","payload":{"id":"n2","id":"n1"}}"#,
            "payload.id",
        ),
        (
            r#"{"operationId":"d-3","type":"BATCH_UPDATE","payload":{"operations":[{"type":"UPDATE_VIEWPORT","payload":{"x":0,"y":0,"zoom":1}},{"type":"DELETE_NODE","payload":{"id":"n1","id":"n1"}}]}}"#,
            "payload.operations.1.payload.id",
        ),
        (
            r#"{"operationId":"d-4","operationId":"d-5","type":"DELETE_NODE","payload":{"id":"n1"}}"#,
            "operationId",
        ),
    ];
    for (body, field) in http_cases {
        let (status, b) = post_g1(&s, &token, body).await;
        assert_eq!(
            (
                status,
                b["error"]["code"].as_str(),
                b["error"]["field"].as_str()
            ),
            (400, Some("DUPLICATE_KEY"), Some(field)),
            "{body}: {b}"
        );
        assert!(
            b["error"]["message"].as_str().unwrap().contains('`'),
            "the message names the key: {b}"
        );
    }
    // The batch endpoint reads its body the same way.
    let batch = r#"{"operations":[{"operationId":"d-6","type":"DELETE_NODE","payload":{"id":"n1"}}],"atomic":true,"atomic":false}"#;
    let (status, b) = answer(
        reqwest::Client::new()
            .post(format!("{}/api/v2/graphs/g1/batch?wait=5000", s.url))
            .bearer_auth(&token)
            .body(batch),
        "batch",
    )
    .await;
    assert_eq!(
        (
            status,
            b["error"]["code"].as_str(),
            b["error"]["field"].as_str()
        ),
        (400, Some("DUPLICATE_KEY"), Some("atomic")),
        "{b}"
    );

    // Over WebSocket: in the command, and in the frame around it.
    let mut a = ws::Client::with_token(&s.ws, &token).await;
    let frames = [
        r#"{"type":"COMMAND","graphId":"g1","command":{"operationId":"w-1","type":"CREATE_NODE","type":"DELETE_NODE","payload":{"id":"n1"}}}"#,
        r#"{"type":"COMMAND","graphId":"g2","graphId":"g1","command":{"operationId":"w-2","type":"DELETE_NODE","payload":{"id":"n1"}}}"#,
        r#"{"type":"SUBSCRIBE","type":"COMMAND","graphId":"g1","command":{"operationId":"w-3","type":"DELETE_NODE","payload":{"id":"n1"}}}"#,
    ];
    for frame in frames {
        a.send_raw(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
            .await;
        let e = a.next_of("ERROR").await;
        assert_eq!(e["code"], "DUPLICATE_KEY", "{frame}: {e}");
    }
    // The socket stays open.
    a.send(json!({"type": "HEARTBEAT"})).await;
    a.next_of("HEARTBEAT").await;

    // n1 is still there: none of it was applied.
    let st = s.store.state("g1").await.unwrap();
    assert_eq!((st.version, st.nodes.len()), (1, 1));
}

// docs/protocol.md, HTTP (`?wait`) and Guarantees (a resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_operation_is_answered_with_the_documented_words() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let ok = create("r-1", "n1").to_string();
    let bad = json!({"operationId": "r-2", "type": "DELETE_NODE", "payload": {"id": "ghost"}})
        .to_string();

    let (status, first) = post_g1(&s, &token, &ok).await;
    assert_eq!(
        (status, &first["outcome"]["status"]),
        (200, &json!("applied")),
        "{first}"
    );
    let (status, again) = post_g1(&s, &token, &ok).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["operationId"], "r-1");
    assert_eq!(
        again["outcome"]["status"], "applied",
        "the same word as the first answer: {again}"
    );
    assert_eq!(again["outcome"]["version"], 1, "{again}");

    let (status, first) = post_g1(&s, &token, &bad).await;
    assert_eq!(
        (status, &first["outcome"]["status"]),
        (200, &json!("reverted")),
        "{first}"
    );
    let (status, again) = post_g1(&s, &token, &bad).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outcome"]["status"], "reverted", "{again}");
    assert_eq!(again["outcome"]["code"], "NOT_FOUND", "{again}");

    // The operation's status uses the status words, as documented.
    let http = reqwest::Client::new();
    for (op, word) in [("r-1", "completed"), ("r-2", "failed")] {
        let (_, b) = answer(
            http.get(format!("{}/api/v2/operations/{op}", s.url))
                .bearer_auth(&token),
            op,
        )
        .await;
        assert_eq!(b["status"], word, "{b}");
    }
    assert_eq!(s.store.state("g1").await.unwrap().version, 1);
}
