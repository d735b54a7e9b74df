//! The operator CLI against a real Redis.

mod common;

use common::TestEnv;
use graphq::graph::{GraphSettings, GraphStore};
use redis::AsyncCommands;
use serde_json::{Value, json};

async fn seeded() -> (TestEnv, GraphStore) {
    let env = TestEnv::start().await;
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    for i in 0..5 {
        let c = json!({"operationId": format!("c{i}"), "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        common::apply_as(&store, "g1", "ops", c).await;
        store
            .mark_operation(&format!("c{i}"), "g1", "processing")
            .await
            .unwrap();
    }
    (env, store)
}

fn run(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = env.graphq().args(args).output().expect("graphq runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn graph_dump_prints_the_state_clients_would_get() {
    let (env, store) = seeded().await;
    let (ok, stdout, stderr) = run(&env, &["graph", "dump", "g1"]);
    assert!(ok, "{stderr}");
    let dumped: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        dumped,
        serde_json::to_value(store.state("g1").await.unwrap()).unwrap()
    );
    let (ok, _, stderr) = run(&env, &["graph", "dump", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[tokio::test]
async fn graph_verify_passes_then_catches_a_hand_edit() {
    let (env, _store) = seeded().await;
    let (ok, stdout, _) = run(&env, &["graph", "verify", "g1"]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("replayed 5 log entries from the empty graph"),
        "{stdout}"
    );
    let mut conn = env.conn();
    let _: () = conn.hdel(env.keys.graph_nodes("g1"), "n3").await.unwrap();
    let (ok, stdout, _) = run(&env, &["graph", "verify", "g1", "--json"]);
    assert!(!ok, "a tampered graph fails verify");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("checksum mismatch")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("node n3 should exist")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn op_shows_the_status_of_an_operation() {
    let (env, _store) = seeded().await;
    let (ok, stdout, _) = run(&env, &["op", "c2"]);
    assert!(ok);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(status["version"], 3);
    assert_eq!(status["graphId"], "g1");
    let (ok, _, stderr) = run(&env, &["op", "unknown-op"]);
    assert!(!ok);
    assert!(stderr.contains("no operation"), "{stderr}");
}

#[tokio::test]
async fn token_prints_a_token_the_gateway_accepts_and_needs_the_secret() {
    let env = TestEnv::start().await;
    let secret = "cli-test-secret-0123456789";
    let out = env
        .graphq()
        .env("GRAPHQ_AUTH_SECRET", secret)
        .args([
            "token", "--user", "alice", "--graph", "g1", "--role", "viewer", "--ttl", "30m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.lines().count(), 1, "the token alone on stdout");
    let id = graphq::auth::Auth::new(secret)
        .unwrap()
        .verify(token)
        .unwrap();
    assert_eq!(id.user, "alice");
    assert!(id.can_read("g1") && !id.can_write("g1") && !id.can_read("g2"));
    let (ok, _, stderr) = run(&env, &["token", "--user", "alice", "--graph", "g1"]);
    assert!(!ok);
    assert!(stderr.contains("GRAPHQ_AUTH_SECRET"), "{stderr}");
}

/// A long replay reports progress on stderr; stdout keeps the report alone.
#[tokio::test]
async fn graph_verify_of_a_long_log_shows_progress() {
    let env = TestEnv::start().await;
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    for i in 0..2100 {
        let c = json!({"operationId": format!("l{i}"), "type": "UPDATE_VIEWPORT",
            "payload": {"x": i, "y": 0, "zoom": 1}});
        common::apply_as(&store, "long", "ops", c).await;
    }
    let (ok, stdout, stderr) = run(&env, &["graph", "verify", "long", "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("stdout is the JSON report alone");
    assert_eq!(report["replayedEntries"], 2100);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("replayed "))
        .collect();
    assert_eq!(
        progress,
        [
            "replayed 1000/2100 log entries of graph long",
            "replayed 2000/2100 log entries of graph long"
        ]
    );
}
