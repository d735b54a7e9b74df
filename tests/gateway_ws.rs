//! The WebSocket protocol (docs/protocol.md, WebSocket) against a real gateway, worker and redis-server.

mod common;

use std::time::Duration;

use common::ws::Client;
use common::{Stack, TestEnv};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn cmd(op: &str, kind: &str, payload: Value) -> Value {
    json!({"operationId": op, "type": kind, "payload": payload})
}

fn create(op: &str, id: &str) -> Value {
    cmd(
        op,
        "CREATE_NODE",
        json!({"node": {"id": id, "position": {"x": 0, "y": 0}}}),
    )
}

async fn client(s: &Stack, user: &str, role: Role) -> Client {
    Client::with_token(&s.ws, &s.token(user, &["g1", "g2"], role)).await
}

async fn subscribed(s: &Stack, user: &str, version: u64) -> (Client, Value) {
    let mut c = client(s, user, Role::Editor).await;
    c.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": version}))
        .await;
    let sync = c.next_of("SYNC").await;
    (c, sync)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_every_subscriber_in_version_order_and_reverts_reach_the_sender() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, sync) = subscribed(&s, "alice", 0).await;
    assert_eq!(sync["status"], "in_sync");
    assert_eq!(sync["version"], 0);
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    // A second socket of alice, not subscribed to g1: it still hears her reverts.
    let mut a2 = client(&s, "alice", Role::Editor).await;

    for i in 0..20 {
        a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create(&format!("a{i}"), &format!("n{i}"))})).await;
    }
    let mut accepted = 0;
    let mut versions = Vec::new();
    while versions.len() < 20 {
        let f = a.next().await;
        match f["type"].as_str().unwrap() {
            "ACCEPTED" => accepted += 1,
            "COMMAND_APPLIED" => versions.push(f["version"].as_u64().unwrap()),
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let mut seen_by_b = Vec::new();
    while seen_by_b.len() < 20 {
        let f = b.next_of("COMMAND_APPLIED").await;
        assert_eq!(f["userId"], "alice");
        seen_by_b.push(f["version"].as_u64().unwrap());
    }
    assert_eq!(
        seen_by_b,
        (1..=20).collect::<Vec<_>>(),
        "others see the edits in order"
    );
    while accepted < 20 {
        assert_eq!(a.next().await["type"], "ACCEPTED");
        accepted += 1;
    }

    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": cmd("bad", "DELETE_NODE", json!({"id": "missing"}))})).await;
    let r = a.next_of("REVERT").await;
    assert_eq!(r["operationId"], "bad");
    assert_eq!(r["error"]["code"], "NOT_FOUND");
    assert_eq!(r["current"]["nodes"]["missing"], Value::Null);
    let r2 = a2.next_of("REVERT").await;
    assert_eq!(
        r2["operationId"], "bad",
        "every socket of the sender hears it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_last_version_gets_exactly_the_missed_changes_or_a_reset() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    for i in 0..10 {
        a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create(&format!("c{i}"), &format!("n{i}"))})).await;
    }
    let mut last = 0;
    while last < 10 {
        last = a.next_of("COMMAND_APPLIED").await["version"]
            .as_u64()
            .unwrap();
    }
    let epoch = s.store.state("g1").await.unwrap().epoch;

    let (_b, sync) = subscribed(&s, "bob", 6).await;
    assert_eq!(sync["status"], "behind");
    let versions: Vec<u64> = sync["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![7, 8, 9, 10],
        "exactly the missed changes, in order"
    );
    assert_eq!(sync["changes"][0]["operationId"], "c6");

    let (_c, sync) = subscribed(&s, "carol", 10).await;
    assert_eq!(sync["status"], "in_sync");
    let (_d, sync) = subscribed(&s, "dan", 99).await;
    assert_eq!(
        sync["status"], "reset",
        "a client ahead of the server is reset"
    );
    assert_eq!(sync["state"]["nodes"].as_array().unwrap().len(), 10);
    assert_eq!(sync["version"], 10);

    let mut e = client(&s, "erin", Role::Editor).await;
    e.send(
        json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 3, "epoch": "another-epoch"}),
    )
    .await;
    assert_eq!(
        e.next_of("SYNC").await["status"],
        "reset",
        "another epoch is reset"
    );
    e.send(json!({"type": "REQUEST_SYNC", "graphId": "g1", "clientVersion": 3, "epoch": epoch}))
        .await;
    let sync = e.next_of("SYNC").await;
    assert_eq!(sync["status"], "behind");
    assert_eq!(sync["changes"].as_array().unwrap().len(), 7);

    // Subscribed at once through the graph's subscribe URL.
    let token = s.token("fay", &["g1"], Role::Viewer);
    let mut f = Client::connect(
        &s.ws,
        &format!("/api/v2/graphs/g1/subscribe?clientVersion=8&token={token}"),
    )
    .await;
    let sync = f.next_of("SYNC").await;
    assert_eq!(sync["status"], "behind");
    assert_eq!(sync["changes"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_reads_and_who_writes() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let refused = Client::try_connect(&s.ws, "/ws").await;
    assert!(refused.is_err(), "no token, no upgrade");
    let forged = graphq::auth::Auth::new("some-other-secret-1234")
        .unwrap()
        .mint(
            "alice",
            graphq::auth::Graphs::All,
            Role::Editor,
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(
        Client::try_connect(&s.ws, &format!("/ws?token={forged}"))
            .await
            .is_err()
    );
    let mut v = client(&s, "vic", Role::Viewer).await;
    v.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    assert_eq!(
        v.next_of("SYNC").await["status"],
        "in_sync",
        "viewers may subscribe"
    );
    v.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("v1", "n1")}))
        .await;
    let e = v.next_of("ERROR").await;
    assert_eq!(e["code"], "FORBIDDEN");
    assert_eq!(e["operationId"], "v1");
    v.send(json!({"type": "SUBSCRIBE", "graphId": "g3", "clientVersion": 0}))
        .await;
    assert_eq!(
        v.next_of("ERROR").await["code"],
        "FORBIDDEN",
        "a graph the token does not name"
    );
    assert_eq!(s.store.state("g1").await.unwrap().version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_socket_keeps_working() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let cases = [
        ("not json", "INVALID_JSON"),
        (r#"{"no":"type"}"#, "INVALID_MESSAGE"),
        (r#"{"type":"DANCE"}"#, "UNKNOWN_TYPE"),
        (r#"{"type":"COMMAND","graphId":"g1"}"#, "INVALID_MESSAGE"),
        (r#"{"type":"SUBSCRIBE"}"#, "INVALID_MESSAGE"),
        (
            r#"{"type":"SUBSCRIBE","graphId":"g1","clientVersion":"x"}"#,
            "INVALID_MESSAGE",
        ),
        (
            r#"{"type":"COMMAND","graphId":"g1","command":{"operationId":"o","type":"CREATE_NODE","payload":{"node":{"id":"a b","position":{"x":0,"y":0}}}}}"#,
            "INVALID_ID",
        ),
        (
            r#"{"type":"COMMAND","graphId":"g:1","command":{"operationId":"o","type":"DELETE_NODE","payload":{"id":"n"}}}"#,
            "INVALID_ID",
        ),
        (
            r#"{"type":"PRESENCE","graphId":"g1","cursor":{"x":"far"}}"#,
            "INVALID_MESSAGE",
        ),
    ];
    for (frame, code) in cases {
        a.send_raw(Message::Text(frame.into())).await;
        let e = a.next_of("ERROR").await;
        assert_eq!(e["code"], code, "{frame}");
    }
    a.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(a.next_of("ERROR").await["code"], "UNSUPPORTED_FRAME");
    // Still working: a valid command goes through.
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("ok", "n1")}))
        .await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 1);
    assert_eq!(
        s.store.state("g1").await.unwrap().version,
        1,
        "no bad frame changed anything"
    );
    // An oversized frame closes the socket with 1009.
    let big = "x".repeat(200 * 1024);
    a.send_raw(Message::Text(big.into())).await;
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4008_and_others_keep_receiving() {
    let env = TestEnv::start().await;
    let settings = GatewaySettings {
        send_queue: 16,
        ..GatewaySettings::default()
    };
    let s = Stack::start(&env, settings).await;
    // The slow client subscribes, then never reads again.
    let (mut slow, _) = subscribed(&s, "slow", 0).await;
    let (mut fine, _) = subscribed(&s, "fine", 0).await;
    let n = 200;
    // The fine client reads all along.
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < n {
            last = fine.next_of("COMMAND_APPLIED").await["version"]
                .as_u64()
                .unwrap();
        }
        last
    });
    // The writer is not subscribed and reads its ACCEPTED frames as it goes.
    let mut writer = client(&s, "writer", Role::Editor).await;
    // About 12 MB in all: more than loopback socket buffers absorb.
    let big = "y".repeat(60 * 1024);
    for i in 0..n {
        let c = cmd(
            &format!("w{i}"),
            "CREATE_NODE",
            json!({"node": {"id": format!("n{i}"), "position": {"x": 0, "y": 0}, "data": {"pad": big}}}),
        );
        writer
            .send(json!({"type": "COMMAND", "graphId": "g1", "command": c}))
            .await;
        assert_eq!(writer.next().await["type"], "ACCEPTED");
    }
    let last = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last, n, "a fast subscriber got everything");
    // Now drain the slow one: it was cut off with 4008 after its queue filled.
    assert_eq!(slow.close_code(Duration::from_secs(10)).await, Some(4008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_others_and_leaving_is_announced() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 10, "y": 20}, "selection": ["n1"]})).await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(p["userId"], "alice");
    assert_eq!(p["cursor"], json!({"x": 10, "y": 20}));
    assert_eq!(p["selection"], json!(["n1"]));
    drop(a);
    let leave = b.next_of("PRESENCE_LEAVE").await;
    assert_eq!(leave["userId"], "alice");
    // Presence is never stored or versioned.
    assert_eq!(s.store.state("g1").await.unwrap().version, 0);
}

/// A drag in progress travels as a preview in presence, with the name the
/// user chose: relayed to the others, kept while later frames leave it
/// out, cleared by null, and never versioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gesture_preview_and_a_display_name_travel_in_presence_and_change_nothing() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    let preview = json!({"nodes": {"n1": {"x": 140, "y": 60}}});
    a.send(
        json!({"type": "PRESENCE", "graphId": "g1", "name": "Alice Liddell", "preview": preview}),
    )
    .await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(
        (&p["name"], &p["preview"]),
        (&json!("Alice Liddell"), &preview)
    );
    // The throttle drops updates closer than 50 ms.
    tokio::time::sleep(Duration::from_millis(80)).await;
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 1, "y": 2}}))
        .await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(
        (&p["name"], &p["preview"]),
        (&json!("Alice Liddell"), &preview),
        "{p}"
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "preview": null}))
        .await;
    let p = b.next_of("PRESENCE").await;
    assert!(
        p.get("preview").is_none(),
        "the drop clears the preview: {p}"
    );
    assert_eq!(p["name"], "Alice Liddell");
    for bad in [
        json!({"name": "   "}),
        json!({"name": "x".repeat(65)}),
        json!({"preview": [1]}),
    ] {
        let mut frame = json!({"type": "PRESENCE", "graphId": "g1"});
        frame
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        a.send(frame).await;
        assert_eq!(a.next_of("ERROR").await["code"], "INVALID_MESSAGE", "{bad}");
    }
    assert_eq!(s.store.state("g1").await.unwrap().version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_editors_converge_to_the_same_state_and_checksum() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let mut clients = Vec::new();
    for u in ["u1", "u2", "u3"] {
        clients.push(subscribed(&s, u, 0).await.0);
    }
    clients[0]
        .send(json!({"type": "COMMAND", "graphId": "g1", "command": create("seed", "shared")}))
        .await;
    // Everyone edits the node once it exists.
    for c in clients.iter_mut() {
        assert_eq!(c.next_of("COMMAND_APPLIED").await["version"], 1);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for k in 0..30 {
            let patch =
                json!({"position": {"x": i * 100 + k, "y": k}, "data": {format!("k{}", k % 3): i}});
            c.send(json!({"type": "COMMAND", "graphId": "g1",
                "command": cmd(&format!("u{i}-{k}"), "UPDATE_NODE", json!({"id": "shared", "patch": patch}))})).await;
        }
    }
    let expected = 91;
    for c in clients.iter_mut() {
        let mut want = 2;
        while want <= expected {
            let f = c.next_of("COMMAND_APPLIED").await;
            assert_eq!(
                f["version"].as_u64().unwrap(),
                want,
                "strictly increasing, no gaps, no duplicates"
            );
            want += 1;
        }
    }
    let state = s.store.state("g1").await.unwrap();
    assert_eq!(state.version, expected);
    let raw = s.store.raw("g1").await.unwrap();
    assert_eq!(raw.checksum, graphq::graph::checksum_of(&raw));
    let report = s.store.verify("g1").await.unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_get_heartbeats_and_silent_ones_are_closed() {
    let env = TestEnv::start().await;
    let settings = GatewaySettings {
        heartbeat_ms: 100,
        idle_timeout_ms: 600,
        ..GatewaySettings::default()
    };
    let s = Stack::start(&env, settings).await;
    let mut c = client(&s, "quiet", Role::Viewer).await;
    // The server's heartbeats arrive on their own.
    for _ in 0..2 {
        let v = c.next_frame().await;
        assert_eq!(v["type"], "HEARTBEAT");
        assert!(v["serverTime"].as_u64().unwrap() > 0);
    }
    // A client that keeps sending HEARTBEAT stays open past the idle timeout...
    let mut talker = client(&s, "talker", Role::Viewer).await;
    for _ in 0..8 {
        talker.send(json!({"type": "HEARTBEAT"})).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    talker
        .send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    assert_eq!(
        talker.next_of("SYNC").await["status"],
        "in_sync",
        "still open after 1.2 s"
    );
    // ...while the silent one is closed with 4002.
    assert_eq!(c.close_code(Duration::from_secs(5)).await, Some(4002));
}

/// Makes version `v` exist without publishing it, as if its notification
/// was lost on the way (Redis restart, network blip).
async fn silent_version(env: &TestEnv, v: u64, change: &str) {
    let mut conn = env.conn();
    let _: () = redis::pipe()
        .hset(env.keys.graph_meta("g1"), "version", v)
        .ignore()
        .cmd("XADD")
        .arg(env.keys.graph_log("g1"))
        .arg(format!("{v}-0"))
        .arg("operationId")
        .arg(format!("lost-{v}"))
        .arg("userId")
        .arg("ghost")
        .arg("type")
        .arg("UPDATE_VIEWPORT")
        .arg("timestamp")
        .arg(0)
        .arg("change")
        .arg(change)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_filled_from_the_log_or_turns_into_a_reset() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("c1", "n1")}))
        .await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 1);

    // Version 2 happens without a notification; version 3 reveals the gap.
    let change = r#"{"nodes":[],"edges":[],"removedNodes":[],"removedEdges":[],"undo":{"nodes":{},"edges":{}}}"#;
    silent_version(&env, 2, change).await;
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("c3", "n3")}))
        .await;
    let filled = a.next_of("COMMAND_APPLIED").await;
    assert_eq!(
        filled["version"], 2,
        "the missing version comes first, from the log"
    );
    assert_eq!(filled["operationId"], "lost-2");
    assert_eq!(filled["command"], Value::Null);
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 3);

    // Version 4 is lost and the log was trimmed past it: a reset.
    silent_version(&env, 4, change).await;
    let _: () = redis::cmd("XTRIM")
        .arg(env.keys.graph_log("g1"))
        .arg("MINID")
        .arg("5-0")
        .query_async(&mut env.conn())
        .await
        .unwrap();
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("c5", "n5")}))
        .await;
    let sync = a.next_of("SYNC").await;
    assert_eq!(sync["status"], "reset");
    assert!(sync["version"].as_u64().unwrap() >= 5);
    assert!(sync["state"]["nodes"].as_array().unwrap().len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_reaches_the_sender_with_both_values() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("c1", "n1")}))
        .await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 1);
    assert_eq!(b.next_of("COMMAND_APPLIED").await["version"], 1);
    let patch = |op: &str, color: &str, size: Option<i64>| {
        let mut data = json!({"color": color});
        if let Some(sz) = size {
            data["size"] = json!(sz);
        }
        json!({"type": "COMMAND", "graphId": "g1", "command":
            {"operationId": op, "type": "UPDATE_NODE", "baseVersion": 1, "payload": {"id": "n1", "patch": {"data": data}}}})
    };
    b.send(patch("b2", "blue", None)).await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 2);
    // Alice, still at version 1, changes the same key and another one.
    a.send(patch("a3", "red", Some(3))).await;
    let c = a.next_of("CONFLICT").await;
    assert_eq!(c["operationId"], "a3");
    assert_eq!(c["field"], "/nodes/n1/data/color");
    assert_eq!(c["clientValue"], "red");
    assert_eq!(c["serverValue"], "blue");
    assert_eq!(c["strategy"], "MERGE");
    let state = s.store.state("g1").await.unwrap();
    assert_eq!(state.nodes[0]["data"], json!({"color": "blue", "size": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_not_refreshed_in_time_is_announced_gone() {
    let env = TestEnv::start().await;
    let settings = GatewaySettings {
        presence_timeout_ms: 600,
        presence_interval_ms: 0,
        ..GatewaySettings::default()
    };
    let s = Stack::start(&env, settings).await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    // Alice refreshes her presence for twice the timeout: she stays present.
    let refreshes = 12;
    for x in 1..=refreshes {
        a.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": x, "y": 1}}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for x in 1..=refreshes {
        let p = b.next().await;
        assert_eq!(
            (p["type"].as_str(), p["userId"].as_str()),
            (Some("PRESENCE"), Some("alice")),
            "not gone while she refreshes: {p}"
        );
        assert_eq!(p["cursor"]["x"], x);
    }
    // Alice stays connected but sends no presence: after the timeout she is gone.
    let leave = b.next().await;
    assert_eq!(leave["type"], "PRESENCE_LEAVE", "{leave}");
    assert_eq!(leave["userId"], "alice");
    a.send(json!({"type": "HEARTBEAT"})).await;
}

/// A client that resends an operation id after a reconnect hears how it
/// ended, even when the outcome was announced while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_operation_that_already_settled_is_answered_with_its_outcome() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let http = reqwest::Client::new();
    let token = s.token("alice", &["g1"], Role::Editor);
    // Both settle while alice has no socket: one applies, one is reverted.
    for (c, status) in [
        (create("ok-1", "a"), 200),
        (
            cmd(
                "bad-1",
                "UPDATE_NODE",
                json!({"id": "ghost", "patch": {"data": {"x": 1}}}),
            ),
            200,
        ),
    ] {
        let r = http
            .post(format!("{}/api/v2/graphs/g1/command?wait=5000", s.url))
            .bearer_auth(&token)
            .json(&c)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }

    let mut a = client(&s, "alice", Role::Editor).await;
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("ok-1", "a")}))
        .await;
    let accepted = a.next_of("ACCEPTED").await;
    assert_eq!(accepted["operationId"], "ok-1");
    assert_eq!(accepted["duplicate"], true);
    assert_eq!(accepted["status"], "completed");
    assert_eq!(accepted["version"], 1);

    a.send(json!({"type": "COMMAND", "graphId": "g1",
        "command": cmd("bad-1", "UPDATE_NODE", json!({"id": "ghost", "patch": {"data": {"x": 1}}}))}))
        .await;
    let accepted = a.next_of("ACCEPTED").await;
    assert_eq!(accepted["operationId"], "bad-1");
    assert_eq!(accepted["duplicate"], true);
    assert!(accepted.get("status").is_none(), "{accepted}");
    let revert = a.next_of("REVERT").await;
    assert_eq!(revert["operationId"], "bad-1");
    assert_eq!(revert["error"]["code"], "NOT_FOUND");

    // Nothing was applied twice.
    assert_eq!(s.store.state("g1").await.unwrap().version, 1);
}

/// Alice's command to g2 over HTTP, waiting up to 5 s for its outcome.
async fn post_to_g2(s: &Stack, command: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/v2/graphs/g2/command?wait=5000", s.url))
        .bearer_auth(s.token("alice", &["g2"], Role::Editor))
        .json(&command)
        .send()
        .await
        .unwrap()
}

/// Operation ids are global: an id that a command on one graph has is
/// refused on another graph, over WebSocket and HTTP, and that graph stays
/// unchanged; a resend on the first graph is still a harmless duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_id_taken_on_another_graph_is_refused() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let mut a = client(&s, "alice", Role::Editor).await;
    a.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    a.next_of("SYNC").await;
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("same-1", "a")}))
        .await;
    // The sender's COMMAND_APPLIED may overtake its ACCEPTED (the worker
    // applies as soon as the command is queued): wait for both, in any order.
    let (mut accepted, mut applied) = (false, false);
    while !(accepted && applied) {
        let f = a.next().await;
        match f["type"].as_str() {
            Some("ACCEPTED") => accepted = true,
            Some("COMMAND_APPLIED") => {
                assert_eq!(f["operationId"], "same-1", "{f}");
                applied = true;
            }
            _ => {}
        }
    }

    a.send(json!({"type": "COMMAND", "graphId": "g2", "command": create("same-1", "b")}))
        .await;
    let refused = a.next().await;
    assert_eq!(refused["type"], "ERROR", "{refused}");
    assert_eq!(refused["code"], "OPERATION_ID_IN_USE");
    assert_eq!(refused["operationId"], "same-1");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("another graph"),
        "{refused}"
    );

    let r = post_to_g2(&s, create("same-1", "b")).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "OPERATION_ID_IN_USE");

    // The resend where the id belongs is still answered as a duplicate.
    a.send(json!({"type": "COMMAND", "graphId": "g1", "command": create("same-1", "a")}))
        .await;
    let again = a.next_of("ACCEPTED").await;
    assert_eq!(again["duplicate"], true, "{again}");
    // g2 takes commands with ids of their own, and the refused one was
    // never queued: g2's first version is the next command's, applied in order.
    let r = post_to_g2(&s, create("other-1", "b")).await;
    assert_eq!(r.status(), 200);
    let g2 = s.store.state("g2").await.unwrap();
    assert_eq!(g2.version, 1, "only other-1 applied on g2");
    let g1 = s.store.state("g1").await.unwrap();
    assert_eq!(g1.version, 1, "same-1 applied once, on g1");
}

/// A presence update that leaves out a field keeps its last value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keeps_the_field_a_message_leaves_out() {
    let env = TestEnv::start().await;
    let s = Stack::start(
        &env,
        GatewaySettings {
            presence_interval_ms: 0,
            ..GatewaySettings::default()
        },
    )
    .await;
    let (mut a, _) = subscribed(&s, "alice", 0).await;
    let (mut b, _) = subscribed(&s, "bob", 0).await;
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 1, "y": 2}, "selection": ["n1"]}))
        .await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(p["selection"], json!(["n1"]));
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "cursor": {"x": 5, "y": 6}}))
        .await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(p["cursor"], json!({"x": 5, "y": 6}));
    assert_eq!(p["selection"], json!(["n1"]), "selection kept");
    a.send(json!({"type": "PRESENCE", "graphId": "g1", "selection": []}))
        .await;
    let p = b.next_of("PRESENCE").await;
    assert_eq!(p["cursor"], json!({"x": 5, "y": 6}), "cursor kept");
    assert_eq!(p["selection"], json!([]));
}

/// Shutting the gateway down closes every socket with 1001 (docs/protocol.md, Close codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (mut subscribed, _) = subscribed(&s, "alice", 0).await;
    let mut idle = client(&s, "bob", Role::Viewer).await;
    s.shutdown.cancel();
    assert_eq!(
        subscribed.close_code(Duration::from_secs(5)).await,
        Some(1001)
    );
    assert_eq!(idle.close_code(Duration::from_secs(5)).await, Some(1001));
}
