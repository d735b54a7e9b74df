//! The `sync` and `analytics` jobs (docs/queue.md, Jobs graphq runs) against a real gateway, worker
//! and redis-server: what a subscriber sees, what lands in Redis.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::ws::Client;
use common::{Stack, TestEnv, eventually, fast};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use graphq::graph::GraphStore;
use graphq::queue::{NewJob, Queue, QueueKind, QueueOptions, RetryPolicy, Worker};
use graphq_workers::GraphqProcessor;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The Stack's `commands` queue as another process would open it.
fn commands(env: &TestEnv) -> Queue {
    env.queue(
        "commands",
        fast(QueueOptions {
            kind: QueueKind::Ordered,
            partitions: 4,
            ..QueueOptions::default()
        }),
    )
}

fn side(env: &TestEnv, name: &str) -> Queue {
    env.queue(
        name,
        fast(QueueOptions {
            kind: QueueKind::Priority,
            partitions: 1,
            retry: RetryPolicy {
                attempts: 2,
                backoff_base_ms: 10,
                ..RetryPolicy::default()
            },
            ..QueueOptions::default()
        }),
    )
}

/// Workers for `sync` and `analytics`, stopped on drop.
struct SideWorkers {
    sync: Queue,
    analytics: Queue,
    stop: CancellationToken,
}

impl SideWorkers {
    fn start(env: &TestEnv, store: &GraphStore) -> SideWorkers {
        let stop = CancellationToken::new();
        let (sync, analytics) = (side(env, "sync"), side(env, "analytics"));
        for q in [&sync, &analytics] {
            let processor = GraphqProcessor::new(store.clone()).with_commands(commands(env));
            tokio::spawn(Worker::new(q.clone(), processor).run(stop.clone()));
        }
        SideWorkers {
            sync,
            analytics,
            stop,
        }
    }
}

impl Drop for SideWorkers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn subscribed(s: &Stack, user: &str) -> Client {
    let token = s.token(user, &["g1"], Role::Editor);
    let mut c = Client::with_token(&s.ws, &token).await;
    c.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    c.next_of("SYNC").await;
    c
}

async fn apply(c: &mut Client, op: &str, kind: &str, payload: Value) -> Value {
    c.send(json!({"type": "COMMAND", "graphId": "g1",
        "command": {"operationId": op, "type": kind, "payload": payload}}))
        .await;
    loop {
        let m = c.next_of("COMMAND_APPLIED").await;
        if m["operationId"] == op {
            return m;
        }
    }
}

fn node(id: &str, status: Option<&str>) -> Value {
    let mut n = json!({"node": {"id": id, "position": {"x": 0, "y": 0}, "data": {"label": id}}});
    if let Some(s) = status {
        n["node"]["data"]["status"] = json!(s);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_update_resets_every_subscriber_and_sync_client_one_user() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let workers = SideWorkers::start(&env, &s.store);
    let mut alice = subscribed(&s, "alice").await;
    let mut bob = subscribed(&s, "bob").await;
    apply(&mut alice, "a1", "CREATE_NODE", node("n1", None)).await;
    bob.next_of("COMMAND_APPLIED").await;

    workers
        .sync
        .add(
            NewJob::new(
                "SYNC_CLIENT",
                json!({"graphId": "g1", "userId": "bob"}).to_string(),
            )
            .key("g1"),
        )
        .await
        .unwrap();
    let sync = bob.next_of("SYNC").await;
    assert_eq!(sync["status"], "in_sync", "bob is up to date: {sync}");
    assert_eq!(sync["version"], 1);
    // Alice was not asked: her next frame is the reset below, not a SYNC now.
    workers
        .sync
        .add(NewJob::new("BROADCAST_UPDATE", json!({"graphId": "g1"}).to_string()).key("g1"))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        let sync = c.next_of("SYNC").await;
        assert_eq!(sync["status"], "reset", "{sync}");
        assert_eq!(sync["state"]["nodes"][0]["id"], "n1");
    }
    // Both keep receiving changes in order afterwards.
    apply(&mut alice, "a2", "CREATE_NODE", node("n2", None)).await;
    assert_eq!(bob.next_of("COMMAND_APPLIED").await["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_conflict_queues_the_chosen_value_as_a_command_once() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let workers = SideWorkers::start(&env, &s.store);
    let mut alice = subscribed(&s, "alice").await;
    apply(&mut alice, "a1", "CREATE_NODE", node("n1", None)).await;

    let job = json!({"graphId": "g1", "userId": "bob", "nodeId": "n1", "field": "data.label", "value": "chosen"});
    workers
        .sync
        .add(
            NewJob::new("RESOLVE_CONFLICT", job.to_string())
                .id("r1")
                .key("g1"),
        )
        .await
        .unwrap();
    let applied = alice.next_of("COMMAND_APPLIED").await;
    assert_eq!(applied["operationId"], "resolve-r1");
    assert_eq!(applied["userId"], "bob");
    assert_eq!(applied["version"], 2);
    let state = s.store.state("g1").await.unwrap();
    assert_eq!(state.nodes[0]["data"]["label"], "chosen");

    // The same job delivered again (a crash before its ack) queues nothing new.
    let dup = graphq::queue::Job {
        id: "r1".into(),
        name: "RESOLVE_CONFLICT".into(),
        key: Some("g1".into()),
        rate_key: None,
        data: job.to_string(),
        priority: graphq::queue::Priority::Normal,
        attempts_made: 1,
        enqueued_at: 0,
        entry_id: "0-1".into(),
        partition: 0,
    };
    let processor = GraphqProcessor::new(s.store.clone()).with_commands(commands(&env));
    graphq::queue::Processor::process(&processor, &dup)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.store.state("g1").await.unwrap().version, 2);

    // A resolution that names no valid field fails for good, with the reason.
    workers
        .sync
        .add(NewJob::new("RESOLVE_CONFLICT", json!({"graphId": "g1", "userId": "bob", "nodeId": "n1", "field": "colour", "value": 1}).to_string()).key("g1"))
        .await
        .unwrap();
    let dlq = workers.sync.dead_letters();
    eventually(Duration::from_secs(5), "dead-lettered", || async {
        dlq.count().await.unwrap() == 1
    })
    .await;
    let dead = dlq.list(1).await.unwrap();
    assert!(
        dead[0]
            .error
            .contains("`field` is `position`, `type` or `data.KEY`"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].attempts_made, 1, "bad data is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_metrics_are_recorded_per_graph() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let workers = SideWorkers::start(&env, &s.store);
    let mut alice = subscribed(&s, "alice").await;
    for (i, status) in [Some("done"), Some("todo"), Some("done"), None]
        .into_iter()
        .enumerate()
    {
        apply(
            &mut alice,
            &format!("a{i}"),
            "CREATE_NODE",
            node(&format!("n{i}"), status),
        )
        .await;
    }
    let mut conn = env.conn();
    let progress_key = env.keys.graph_progress("g1");
    workers
        .analytics
        .add(NewJob::new("CALCULATE_PROGRESS", "{}").key("g1"))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "progress written", || {
        let mut conn = conn.clone();
        let key = progress_key.clone();
        async move { conn.exists::<_, bool>(&key).await.unwrap() }
    })
    .await;
    let progress: HashMap<String, String> = conn.hgetall(&progress_key).await.unwrap();
    assert_eq!(progress["nodes"], "4");
    assert_eq!(progress["done"], "2");
    assert_eq!(progress["ratio"], "0.5000");
    assert_eq!(progress["status:done"], "2");
    assert_eq!(progress["status:todo"], "1");
    assert_eq!(progress["status:none"], "1");
    assert_eq!(progress["version"], "4");

    let metrics_key = env.keys.graph_metrics("g1");
    let run_metrics = || async {
        let before: Option<String> = env.conn().hget(&metrics_key, "updatedAt").await.unwrap();
        workers
            .analytics
            .add(NewJob::new(
                "UPDATE_METRICS",
                json!({"graphId": "g1"}).to_string(),
            ))
            .await
            .unwrap();
        eventually(Duration::from_secs(5), "metrics written", || async {
            let now: Option<String> = env.conn().hget(&metrics_key, "updatedAt").await.unwrap();
            now.is_some() && now != before
        })
        .await;
        env.conn()
            .hgetall::<_, HashMap<String, String>>(&metrics_key)
            .await
            .unwrap()
    };
    let first = run_metrics().await;
    assert_eq!(first["version"], "4");
    assert_eq!(first["nodes"], "4");
    assert_eq!(first["logEntries"], "4");
    assert!(
        !first.contains_key("versionsPerMinute"),
        "no earlier run to compare with"
    );
    apply(&mut alice, "a9", "DELETE_NODE", json!({"id": "n3"})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = run_metrics().await;
    assert_eq!(second["version"], "5");
    assert_eq!(second["nodes"], "3");
    let rate: f64 = second["versionsPerMinute"].parse().unwrap();
    assert!(rate > 0.0, "{second:?}");
}
