//! Hostile subscribers (issue 17): one client's SYNC requests, subscriptions,
//! sockets or presence must not cost everyone else (docs/protocol.md:
//! "Limits"; docs/reliability.md: "Hostile subscribers").
//!
//! Each test is a real gateway and worker on loopback and real sockets. They
//! assert what other users notice (an answer arriving while the flood is
//! still being served, a frame count against the configured interval), never
//! how long something took.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::load::Cluster;
use common::ws::Client;
use common::{Stack, TestEnv};
use futures_util::{SinkExt, StreamExt};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// REQUEST_SYNC frames the flooder sends.
const FLOOD: usize = 3_000;

/// Nodes in the flooded graph: every full SYNC reads and sends all of them.
const NODES: usize = 300;

fn create(op: &str, id: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE",
        "payload": {"node": {"id": id, "position": {"x": 1, "y": 2}}}})
}

/// Creates `NODES` nodes on `graph` in one batch, through HTTP `?wait`.
async fn seed(s: &Stack, graph: &str, token: &str) {
    let operations: Vec<Value> = (0..NODES)
        .map(|i| {
            json!({"type": "CREATE_NODE", "payload": {"node": {
                "id": format!("n{i}"), "position": {"x": i, "y": i},
                "data": {"label": format!("node number {i} of the seeded graph")}}}})
        })
        .collect();
    let cmd = json!({"operationId": "seed", "type": "BATCH_UPDATE",
        "payload": {"operations": operations}});
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/graphs/{graph}/command?wait=10000",
            s.url
        ))
        .bearer_auth(token)
        .json(&cmd)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcome"]["status"], "applied", "{body}");
}

/// What the flooder's reader has seen.
#[derive(Default)]
struct FloodTally {
    syncs: AtomicUsize,
    refusals: AtomicUsize,
    /// The answer to the HEARTBEAT sent after the flood: every REQUEST_SYNC
    /// before it has been read by the gateway.
    heartbeat: AtomicBool,
    closed: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sync_flood_is_refused_and_does_not_delay_anyone_else() {
    let tally = request_sync_flood(GatewaySettings::default()).await;
    // The flooder was told why.
    assert!(tally.refusals.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sync_budget_a_flood_is_merged_and_built_off_the_delivery_path() {
    let tally = request_sync_flood(GatewaySettings {
        sync_rate_limit: None,
        ..GatewaySettings::default()
    })
    .await;
    assert_eq!(tally.refusals.load(Ordering::SeqCst), 0);
}

/// A viewer floods REQUEST_SYNC on a graph of `NODES` nodes; other users'
/// WebSocket and HTTP commands and a new subscription must be answered while
/// the flood is far from served. Then the flooder's socket still works.
async fn request_sync_flood(settings: GatewaySettings) -> Arc<FloodTally> {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            // Only the HEARTBEAT the flooder asks for, none on a timer.
            heartbeat_ms: 600_000,
            ..settings
        },
    )
    .await;
    let editor = |u: &str| s.token(u, &["g1"], Role::Editor);
    seed(&s, "g1", &editor("alice")).await;

    let mut alice = Client::with_token(&s.ws, &editor("alice")).await;
    alice
        .send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 1}))
        .await;
    assert_eq!(alice.next_of("SYNC").await["status"], "in_sync");

    // The flooder: a viewer, reading everything it is sent on its own task.
    let viewer = s.token("vic", &["g1"], Role::Viewer);
    let (socket, _) = tokio_tungstenite::connect_async(format!("{}/ws?token={viewer}", s.ws))
        .await
        .unwrap();
    let (mut sink, mut stream) = socket.split();
    let tally = Arc::new(FloodTally::default());
    let reader = {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                // Reset SYNCs are large: only their start is read, so the
                // reader keeps up (a lagging one would be closed as too slow).
                if t.starts_with(r#"{"type":"SYNC""#) {
                    tally.syncs.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("ERROR") if v["code"] == "SYNC_RATE_LIMITED" => {
                        assert!(v["retryAfterMs"].as_u64().is_some(), "{v}");
                        tally.refusals.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("HEARTBEAT") => tally.heartbeat.store(true, Ordering::SeqCst),
                    _ => {}
                }
            }
            tally.closed.store(true, Ordering::SeqCst);
        })
    };
    let text = |v: Value| Message::Text(v.to_string().into());
    sink.send(text(json!({"type": "SUBSCRIBE", "graphId": "g1"})))
        .await
        .unwrap();
    common::eventually(Duration::from_secs(10), "the flooder's first SYNC", || {
        let n = tally.syncs.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    for _ in 0..FLOOD {
        sink.feed(text(json!({"type": "REQUEST_SYNC", "graphId": "g1"})))
            .await
            .unwrap();
    }
    sink.send(text(json!({"type": "HEARTBEAT"}))).await.unwrap();
    common::eventually(
        Duration::from_secs(120),
        "the gateway read the whole flood",
        || {
            let seen = tally.heartbeat.load(Ordering::SeqCst);
            async move { seen }
        },
    )
    .await;

    // Now other users act; each answer must come while the flood is far
    // from served (it is queued in front of them if SYNCs block the graph).
    let served = |what: &str| {
        let n = tally.syncs.load(Ordering::SeqCst);
        eprintln!("{what}: the flooder had {n} SYNCs");
        assert!(
            !tally.closed.load(Ordering::SeqCst),
            "{what}: the flooder was disconnected instead of refused"
        );
        assert!(
            n < FLOOD / 3,
            "{what} waited until the flooder had {n} of its {FLOOD} SYNCs"
        );
        n
    };
    alice
        .send(json!({"type": "COMMAND", "graphId": "g1", "command": create("a1", "a1")}))
        .await;
    let applied = tokio::time::timeout(
        Duration::from_secs(120),
        alice.next_matching(|v| v["type"] == "COMMAND_APPLIED" && v["operationId"] == "a1"),
    )
    .await
    .expect("alice's COMMAND_APPLIED");
    assert_eq!(applied["version"], 2);
    served("alice's COMMAND_APPLIED");

    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/graphs/g1/command?wait=60000", s.url))
        .bearer_auth(editor("bob"))
        .json(&create("b1", "b1"))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcome"]["status"], "applied", "{body}");
    served("bob's HTTP ?wait answer");

    let mut carol = Client::with_token(&s.ws, &editor("carol")).await;
    carol
        .send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    let sync = tokio::time::timeout(Duration::from_secs(120), carol.next_of("SYNC"))
        .await
        .expect("carol's SYNC");
    assert_eq!(sync["version"], 3);
    served("carol's SYNC");

    // The flooder's socket still works: after the refusal window it gets a
    // SYNC again, at the current version.
    let before = tally.syncs.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.syncs.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "no SYNC for the flooder after the window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = json!({"type": "REQUEST_SYNC", "graphId": "g1", "clientVersion": 3});
        sink.send(text(again)).await.unwrap();
    }
    eprintln!(
        "flood of {FLOOD}: {} SYNCs, {} refusals",
        tally.syncs.load(Ordering::SeqCst),
        tally.refusals.load(Ordering::SeqCst)
    );
    drop(sink);
    reader.abort();
    tally
}

/// SUBSCRIBE and waits for the answer: the SYNC, or the ERROR's code.
async fn subscribe(c: &mut Client, graph: &str) -> Result<Value, String> {
    c.send(json!({"type": "SUBSCRIBE", "graphId": graph, "clientVersion": 0}))
        .await;
    let v = c
        .next_matching(|v| v["type"] == "SYNC" || v["type"] == "ERROR")
        .await;
    match v["type"].as_str() {
        Some("SYNC") => Ok(v),
        _ => Err(v["code"].as_str().unwrap_or_default().to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_cap_are_refused_and_the_socket_keeps_working() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            max_subscriptions_per_socket: 5,
            ..GatewaySettings::default()
        },
    )
    .await;
    let mut c = Client::with_token(&s.ws, &s.token("mallory", &["*"], Role::Viewer)).await;
    for i in 0..5 {
        subscribe(&mut c, &format!("g{i}")).await.unwrap();
    }
    assert_eq!(
        subscribe(&mut c, "g5").await.unwrap_err(),
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // REQUEST_SYNC subscribes too, and is refused the same way.
    c.send(json!({"type": "REQUEST_SYNC", "graphId": "g6"}))
        .await;
    let e = c.next_of("ERROR").await;
    assert_eq!(e["code"], "TOO_MANY_SUBSCRIPTIONS", "{e}");
    // A graph it already has is not a new subscription.
    assert_eq!(subscribe(&mut c, "g4").await.unwrap()["graphId"], "g4");
    // Leaving one makes room.
    c.send(json!({"type": "UNSUBSCRIBE", "graphId": "g0"}))
        .await;
    assert_eq!(subscribe(&mut c, "g5").await.unwrap()["graphId"], "g5");
    c.send(json!({"type": "HEARTBEAT"})).await;
    c.next_of("HEARTBEAT").await;
}

/// Whether a fresh socket is let in: it subscribes and gets its SYNC, or is
/// closed first.
async fn admitted(c: &mut Client) -> Result<(), Option<u16>> {
    let _ = c
        .try_send(&json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.recv().await {
                Some(v) if v["type"] == "SYNC" => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .expect("a SYNC or a close within 10 s");
    if first { Ok(()) } else { Err(None) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_the_per_user_cap_are_closed_with_4009_on_every_gateway() {
    let c = Cluster::start(
        TestEnv::start().await,
        2,
        1,
        &[("GRAPHQ_GATEWAY__MAX_SOCKETS_PER_USER", "3")],
    )
    .await;
    let ws = |i: usize| format!("ws://{}", c.addr(i));
    let alice = c.token("alice", &["g1"]);
    let mut open = Vec::new();
    // Three sockets over two gateways: the count is shared.
    for i in [0, 1, 0] {
        let mut s = Client::with_token(&ws(i), &alice).await;
        admitted(&mut s).await.expect("within the cap");
        open.push(s);
    }
    for i in [1, 0] {
        let mut extra = Client::with_token(&ws(i), &alice).await;
        assert_eq!(
            extra.close_code(Duration::from_secs(10)).await,
            Some(4009),
            "a fourth socket of alice on gateway {i}"
        );
    }
    // Other users are not affected.
    let mut bob = Client::with_token(&ws(1), &c.token("bob", &["g1"])).await;
    admitted(&mut bob).await.expect("bob's socket");
    // The ones still open work.
    for s in open.iter_mut() {
        s.send(json!({"type": "HEARTBEAT"})).await;
        s.next_of("HEARTBEAT").await;
    }
    // Closing one lets a new one in.
    drop(open.pop());
    common::eventually(Duration::from_secs(10), "a socket in a freed place", || {
        let (url, alice) = (ws(1), alice.clone());
        async move {
            let mut s = Client::with_token(&url, &alice).await;
            admitted(&mut s).await.is_ok()
        }
    })
    .await;
}

/// A gateway relaying one presence update per user every `interval_ms`,
/// and olga watching g1 on it.
async fn presence_stack(env: &TestEnv, interval_ms: u64) -> (Stack, Client) {
    let s = Stack::start(
        env,
        GatewaySettings {
            presence_interval_ms: interval_ms,
            ..GatewaySettings::default()
        },
    )
    .await;
    let mut observer = Client::with_token(&s.ws, &s.token("olga", &["g1"], Role::Viewer)).await;
    subscribe(&mut observer, "g1").await.unwrap();
    (s, observer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_throttled_per_user_not_per_socket() {
    const INTERVAL_MS: u64 = 200;
    const SOCKETS: usize = 20;
    const FRAMES: usize = 100;
    let env = TestEnv::start().await;
    let (s, mut observer) = presence_stack(&env, INTERVAL_MS).await;
    let alice = s.token("alice", &["g1"], Role::Viewer);
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut c = Client::with_token(&s.ws, &alice).await;
        subscribe(&mut c, "g1").await.unwrap();
        sockets.push(c);
    }
    let started = Instant::now();
    let senders: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                for k in 0..FRAMES {
                    c.send(json!({"type": "PRESENCE", "graphId": "g1",
                        "cursor": {"x": i, "y": k}}))
                        .await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                c
            })
        })
        .collect();
    let mut relayed = 0u64;
    let mut senders_done = None;
    loop {
        // Counting goes on for two intervals after the last frame is sent.
        let until = senders_done
            .map(|d: Instant| d + Duration::from_millis(2 * INTERVAL_MS))
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
        let wait = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, observer.recv()).await {
            Ok(Some(v)) if v["type"] == "PRESENCE" && v["userId"] == "alice" => relayed += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the observer was disconnected"),
            Err(_) if senders_done.is_some() => break,
            Err(_) => {
                if senders.iter().all(|t| t.is_finished()) {
                    senders_done = Some(Instant::now());
                }
            }
        }
    }
    let elapsed = started.elapsed().as_millis() as u64;
    for t in senders {
        t.await.unwrap();
    }
    // One frame per interval, plus the first; doubled for slack.
    let allowed = 2 * (elapsed / INTERVAL_MS + 1);
    assert!(relayed >= 1, "presence is still relayed");
    assert!(
        relayed <= allowed,
        "{relayed} PRESENCE frames of one user in {elapsed} ms; at most {allowed} expected \
         with presence_interval_ms = {INTERVAL_MS}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_a_burst_ends_on_reaches_others_though_it_came_inside_the_interval() {
    // Long enough that the second update surely comes inside it.
    const INTERVAL_MS: u64 = 300;
    let env = TestEnv::start().await;
    let (s, mut observer) = presence_stack(&env, INTERVAL_MS).await;
    let mut alice = Client::with_token(&s.ws, &s.token("alice", &["g1"], Role::Viewer)).await;
    subscribe(&mut alice, "g1").await.unwrap();
    // A view that moves three times in a row: the first goes out at once,
    // the last must follow, the middle one may be skipped.
    let sent = Instant::now();
    for x in [1, 2, 3] {
        alice
            .send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": x, "y": 0}}))
            .await;
    }
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.last() != Some(&3) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, observer.recv()).await {
            Ok(Some(v)) if v["type"] == "PRESENCE" && v["userId"] == "alice" => {
                heard.push(v["cursor"]["x"].as_i64().unwrap_or(-1));
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the observer was disconnected"),
            Err(_) => panic!("alice's last cursor never reached the observer; heard {heard:?}"),
        }
    }
    assert_eq!(
        heard.first(),
        Some(&1),
        "the first update goes out at once: {heard:?}"
    );
    assert!(
        heard.len() <= 2,
        "one update per interval, not three: {heard:?}"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(INTERVAL_MS),
        "the last update waited for the interval's end"
    );
    // And nothing after it: the one waiting was sent once.
    let more = tokio::time::timeout(Duration::from_millis(2 * INTERVAL_MS), async {
        loop {
            match observer.recv().await {
                Some(v) if v["type"] == "PRESENCE" => return Some(v),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(more.is_err(), "a presence relayed twice: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_presence_is_refused_and_not_relayed() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            presence_interval_ms: 0,
            ..GatewaySettings::default()
        },
    )
    .await;
    let max = GatewaySettings::default().max_presence_bytes;
    let mut observer = Client::with_token(&s.ws, &s.token("olga", &["g1"], Role::Viewer)).await;
    subscribe(&mut observer, "g1").await.unwrap();
    let mut alice = Client::with_token(&s.ws, &s.token("alice", &["g1"], Role::Viewer)).await;
    subscribe(&mut alice, "g1").await.unwrap();
    // Valid ids, under the 1,000 ids a selection may have, over the bytes.
    let selection: Vec<String> = (0..400).map(|i| format!("node-{i:05}")).collect();
    let big = json!({"type": "PRESENCE", "graphId": "g1", "selection": selection});
    assert!(big.to_string().len() > max);
    alice.send(big).await;
    let e = alice.next_of("ERROR").await;
    assert_eq!(e["code"], "PRESENCE_TOO_LARGE", "{e}");
    // The next presence the observer sees is the small one after it.
    alice
        .send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 1, "y": 2}}))
        .await;
    let p = observer.next_of("PRESENCE").await;
    assert_eq!(p["cursor"], json!({"x": 1, "y": 2}), "{p}");
    assert_eq!(p["selection"], Value::Null, "{p}");
}
