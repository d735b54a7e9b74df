//! Two gateway processes and two worker processes on one Redis: a client on
//! one gateway sees edits sent through the other, in version order, and a
//! REVERT reaches the sender's socket on the other gateway.

mod common;

use std::time::Duration;

use common::ws;
use common::{Proc, SECRET, TestEnv, eventually};
use graphq::auth::{Auth, Graphs, Role};
use serde_json::json;

fn gateway(env: &TestEnv) -> (Proc, String) {
    let port = graphq::redis_server::free_port().unwrap();
    let mut cmd = env.graphq();
    cmd.args(["gateway", "--bind", &format!("127.0.0.1:{port}")])
        .env("GRAPHQ_AUTH_SECRET", SECRET);
    (Proc::spawn(cmd), format!("127.0.0.1:{port}"))
}

fn worker(env: &TestEnv) -> Proc {
    let mut cmd = env.graphq();
    cmd.args(["worker", "--queue", "commands"])
        .env("GRAPHQ_QUEUES__COMMANDS__HEARTBEAT_MS", "200")
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200");
    Proc::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_reverts_cross_gateways() {
    let env = TestEnv::start().await;
    let (_ga, a_addr) = gateway(&env);
    let (_gb, b_addr) = gateway(&env);
    let _w1 = worker(&env);
    let _w2 = worker(&env);
    for addr in [&a_addr, &b_addr] {
        eventually(Duration::from_secs(30), "gateway ready", || async {
            reqwest::get(format!("http://{addr}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    let auth = Auth::new(SECRET).unwrap();
    let token = |u: &str| {
        auth.mint(
            u,
            Graphs::Only(vec!["g1".into()]),
            Role::Editor,
            Duration::from_secs(600),
        )
        .unwrap()
    };

    let mut alice_on_a = ws::Client::with_token(&format!("ws://{a_addr}"), &token("alice")).await;
    alice_on_a
        .send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    assert_eq!(alice_on_a.next_of("SYNC").await["status"], "in_sync");
    // Bob has a socket on A that is not subscribed to anything...
    let mut bob_on_a = ws::Client::with_token(&format!("ws://{a_addr}"), &token("bob")).await;
    // ...and sends his commands through B.
    let mut bob_on_b = ws::Client::with_token(&format!("ws://{b_addr}"), &token("bob")).await;
    for i in 0..30 {
        let c = json!({"operationId": format!("b{i}"), "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        bob_on_b
            .send(json!({"type": "COMMAND", "graphId": "g1", "command": c}))
            .await;
    }
    for want in 1..=30u64 {
        let f = alice_on_a.next_of("COMMAND_APPLIED").await;
        assert_eq!(
            f["version"].as_u64(),
            Some(want),
            "in version order across gateways"
        );
        assert_eq!(f["userId"], "bob");
    }
    let bad = json!({"operationId": "bad", "type": "CREATE_EDGE",
        "payload": {"edge": {"id": "e", "source": "n0", "target": "ghost"}}});
    bob_on_b
        .send(json!({"type": "COMMAND", "graphId": "g1", "command": bad}))
        .await;
    let revert = bob_on_a.next_of("REVERT").await;
    assert_eq!(revert["operationId"], "bad");
    assert_eq!(revert["error"]["code"], "NOT_FOUND");
    assert_eq!(revert["current"]["nodes"]["ghost"], serde_json::Value::Null);
}
