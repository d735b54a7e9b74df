//! Gateway and worker processes on one Redis: a client on one gateway sees
//! edits sent through another, in version order, and a REVERT reaches the
//! sender's socket on the other gateway; a user over the rate limit who
//! pipelines commands on one socket gets them applied in the order sent.

mod common;

use std::time::Duration;

use common::ws;
use common::{Proc, SECRET, TestEnv, eventually};
use graphq::auth::{Auth, Graphs, Role};
use serde_json::json;

fn gateway(env: &TestEnv) -> (Proc, String) {
    gateway_with(env, &[])
}

/// A gateway process with these environment settings on top.
fn gateway_with(env: &TestEnv, settings: &[(&str, &str)]) -> (Proc, String) {
    let port = graphq::redis_server::free_port().unwrap();
    let mut cmd = env.graphq();
    cmd.args(["gateway", "--bind", &format!("127.0.0.1:{port}")])
        .env("GRAPHQ_AUTH_SECRET", SECRET)
        .envs(settings.iter().copied());
    (Proc::spawn(cmd), format!("127.0.0.1:{port}"))
}

async fn ready(addr: &str) {
    eventually(Duration::from_secs(30), "gateway ready", || async {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

fn token(user: &str) -> String {
    Auth::new(SECRET)
        .unwrap()
        .mint(
            user,
            Graphs::Only(vec!["g1".into()]),
            Role::Editor,
            Duration::from_secs(600),
        )
        .unwrap()
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
        ready(addr).await;
    }

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

/// The answer to one COMMAND: ACCEPTED, or the ERROR code and its retryAfterMs.
#[derive(Debug, PartialEq)]
enum Answer {
    Accepted,
    Refused(String, u64),
}

/// Reads frames until the answer to `op`, keeping the COMMAND_APPLIED seen
/// on the way in `applied` (operation ids, in version order).
async fn answer_to(c: &mut ws::Client, op: &str, applied: &mut Vec<String>) -> Answer {
    loop {
        let f = c.next().await;
        match f["type"].as_str() {
            Some("COMMAND_APPLIED") => {
                applied.push(f["operationId"].as_str().unwrap_or_default().to_string());
            }
            Some("ACCEPTED") if f["operationId"] == op => return Answer::Accepted,
            Some("ERROR") if f["operationId"] == op => {
                let code = f["code"].as_str().unwrap_or_default().to_string();
                return Answer::Refused(code, f["retryAfterMs"].as_u64().unwrap_or(1000));
            }
            Some("ACCEPTED" | "ERROR") => panic!("an answer out of order, waiting for {op}: {f}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_over_the_rate_limit_apply_in_the_order_sent() {
    let env = TestEnv::start().await;
    // Two commands at once, then one per 100 ms.
    let (_g, addr) = gateway_with(
        &env,
        &[
            ("GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX", "2"),
            ("GRAPHQ_GATEWAY__USER_RATE_LIMIT__DURATION_MS", "200"),
        ],
    );
    let _w = worker(&env);
    ready(&addr).await;
    let mut alice = ws::Client::with_token(&format!("ws://{addr}"), &token("alice")).await;
    alice
        .send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    assert_eq!(alice.next_of("SYNC").await["status"], "in_sync");

    // Twenty edits, one every 15 ms, sent without waiting for answers, as a
    // client does: over 300 ms the limiter refills for three more, so
    // without holding back, commands sent after a refused one would be
    // queued before it is sent again.
    let ops: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    for (i, op) in ops.iter().enumerate() {
        let c = json!({"operationId": op, "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        alice
            .send(json!({"type": "COMMAND", "graphId": "g1", "command": c}))
            .await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut applied = Vec::new();
    let mut answers = Vec::new();
    for op in &ops {
        answers.push(answer_to(&mut alice, op, &mut applied).await);
    }
    let first_refused = answers
        .iter()
        .position(|a| *a != Answer::Accepted)
        .expect("the burst goes over the rate limit");
    for (op, a) in ops.iter().zip(&answers).skip(first_refused) {
        assert!(
            matches!(a, Answer::Refused(code, _) if code == "RATE_LIMITED"),
            "{op}, sent after {} was refused and before it was sent again: {a:?}",
            ops[first_refused]
        );
    }

    // Then as the client does: the refused ones again, in order, each
    // after the one before it was accepted, waiting as told.
    for op in &ops[first_refused..] {
        let i: usize = op[1..].parse().unwrap();
        let c = json!({"operationId": op, "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        loop {
            alice
                .send(json!({"type": "COMMAND", "graphId": "g1", "command": c}))
                .await;
            match answer_to(&mut alice, op, &mut applied).await {
                Answer::Accepted => break,
                Answer::Refused(code, wait) => {
                    assert_eq!(code, "RATE_LIMITED");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }
    while applied.len() < ops.len() {
        let f = alice.next_of("COMMAND_APPLIED").await;
        applied.push(f["operationId"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(applied, ops, "applied in the order sent, each once");
}
