//! Graph commands through the queue engine: the `commands` processor applies
//! them in order, records operation status, publishes outcomes, answers bad
//! jobs with INVALID and exhausted ones with DEAD_LETTERED.

mod common;

use std::time::Duration;

use common::{TestEnv, eventually, fast};
use futures_util::StreamExt;
use graphq::graph::command::parse;
use graphq::graph::command_job;
use graphq::graph::{GraphSettings, GraphStore};
use graphq::queue::{NewJob, Queue, QueueKind, QueueOptions, RetryPolicy, Worker};
use graphq_workers::GraphqProcessor;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn commands_queue(env: &TestEnv, attempts: u32) -> Queue {
    env.queue(
        "commands",
        fast(QueueOptions {
            kind: QueueKind::Ordered,
            partitions: 4,
            retry: RetryPolicy {
                attempts,
                backoff_base_ms: 10,
                ..RetryPolicy::default()
            },
            ..QueueOptions::default()
        }),
    )
}

fn cmd(op: &str, kind: &str, payload: Value) -> graphq::graph::Command {
    parse(
        json!({"operationId": op, "type": kind, "payload": payload})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
}

/// Everything published about `graph`: its channel and its users' channels,
/// each note with `"channel": "graph" | "user"` added. The graph's channel
/// carries applied outcomes; a user's two, every outcome of the user's
/// commands (reverts and conflicts on one, the rest on the other).
async fn subscribe(env: &TestEnv, graph: &str) -> impl futures_util::Stream<Item = Value> {
    let client = redis::Client::open(env.server().url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(env.keys.graph_channel(graph))
        .await
        .unwrap();
    for user in ["alice", "bob"] {
        pubsub.subscribe(env.keys.user_channel(user)).await.unwrap();
        pubsub
            .subscribe(env.keys.user_outcomes_channel(user))
            .await
            .unwrap();
    }
    let graph_channel = env.keys.graph_channel(graph);
    pubsub.into_on_message().map(move |m| {
        let mut note = serde_json::from_str::<Value>(&m.get_payload::<String>().unwrap()).unwrap();
        let from = if m.get_channel_name() == graph_channel {
            "graph"
        } else {
            "user"
        };
        note["channel"] = json!(from);
        note
    })
}

/// The next note, leaving out a user channel's copy of an applied outcome
/// (the graph's channel carries it too).
async fn next_outcome(messages: &mut (impl futures_util::Stream<Item = Value> + Unpin)) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap();
        if m["channel"] == "graph" || m["outcome"]["status"] != "applied" {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_applied_in_order_and_their_outcomes_published() {
    let env = TestEnv::start().await;
    let q = commands_queue(&env, 3);
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    let mut messages = Box::pin(subscribe(&env, "g1").await);
    let mut jobs = vec![command_job(
        "g1",
        "alice",
        &cmd(
            "c0",
            "CREATE_NODE",
            json!({"node": {"id": "n", "position": {"x": 0, "y": 0}}}),
        ),
    )];
    for i in 1..50 {
        let c = cmd(
            &format!("c{i}"),
            "UPDATE_NODE",
            json!({"id": "n", "patch": {"data": {"step": i}}}),
        );
        jobs.push(command_job("g1", "alice", &c));
    }
    // A job that is not a valid command, and one for a node that does not exist.
    jobs.push(
        NewJob::new(
            "UPDATE_NODE",
            r#"{"graphId":"g1","userId":"alice","command":{"type":"UPDATE_NODE"}}"#,
        )
        .key("g1")
        .id("broken"),
    );
    jobs.push(command_job(
        "g1",
        "bob",
        &cmd("missing", "DELETE_NODE", json!({"id": "zz"})),
    ));
    // Producers of command jobs claim their operation ids first, as the
    // gateway does: the claim is the record `GET /operations/{id}` reads.
    let ids: Vec<String> = jobs.iter().filter_map(|j| j.id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.claim_operations("g1", &ids).await.unwrap();
    q.add_bulk(jobs).await.unwrap();

    let stop = CancellationToken::new();
    let worker = Worker::new(q.clone(), GraphqProcessor::new(store.clone()));
    let run = tokio::spawn(worker.run(stop.clone()));

    let mut seen = Vec::new();
    // 50 applied on the graph's channel; all 52 outcomes on alice's and bob's.
    while seen.len() < 102 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} messages: {:?}", seen.len(), seen.last()))
            .unwrap();
        seen.push(m);
    }
    for channel in ["graph", "user"] {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|m| m["channel"] == channel)
            .filter_map(|m| m["outcome"]["version"].as_u64())
            .collect();
        assert_eq!(
            versions,
            (1..=50).collect::<Vec<_>>(),
            "published in version order on the {channel} channel"
        );
    }
    assert_eq!(
        seen.iter().filter(|m| m["channel"] == "user").count(),
        52,
        "the senders hear every outcome"
    );
    let broken = seen.iter().find(|m| m["operationId"] == "broken").unwrap();
    assert_eq!(broken["outcome"]["code"], "INVALID");
    let missing = seen.iter().find(|m| m["operationId"] == "missing").unwrap();
    assert_eq!(missing["outcome"]["code"], "NOT_FOUND");
    assert_eq!(missing["userId"], "bob");

    let state = store.state("g1").await.unwrap();
    assert_eq!(state.version, 50);
    assert_eq!(state.nodes[0]["data"]["step"], 49);
    let op = store.operation("c7").await.unwrap().unwrap();
    assert_eq!((op.status.as_str(), op.version), ("completed", Some(8)));
    let op = store.operation("missing").await.unwrap().unwrap();
    assert_eq!(op.status, "failed");
    assert_eq!(op.error.unwrap()["code"], "NOT_FOUND");
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_command_answers_dead_lettered_and_the_partition_flows_on() {
    let env = TestEnv::start().await;
    let q = commands_queue(&env, 2);
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    let mut messages = Box::pin(subscribe(&env, "g1").await);
    // Make every attempt fail inside Redis: the graph's nodes key holds the
    // wrong type, so the script errors (WRONGTYPE) each time.
    let mut conn = env.conn();
    let _: () = redis::cmd("SET")
        .arg(env.keys.graph_nodes("g1"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    q.add(command_job(
        "g1",
        "alice",
        &cmd(
            "poison",
            "CREATE_NODE",
            json!({"node": {"id": "n", "position": {"x": 0, "y": 0}}}),
        ),
    ))
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let run =
        tokio::spawn(Worker::new(q.clone(), GraphqProcessor::new(store.clone())).run(stop.clone()));
    let m = next_outcome(&mut messages).await;
    assert_eq!(m["operationId"], "poison");
    assert_eq!(m["userId"], "alice");
    assert_eq!(m["outcome"]["code"], "DEAD_LETTERED");
    let message = m["outcome"]["message"].as_str().unwrap();
    assert!(message.contains("WRONGTYPE"), "{message}");
    assert!(
        !message.contains("script"),
        "no script internals: {message}"
    );
    assert_eq!(q.dead_letters().count().await.unwrap(), 1);
    // Fix the data; the next command on the same partition goes through.
    let _: () = redis::cmd("DEL")
        .arg(env.keys.graph_nodes("g1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    q.add(command_job(
        "g1",
        "alice",
        &cmd(
            "after",
            "CREATE_NODE",
            json!({"node": {"id": "m", "position": {"x": 0, "y": 0}}}),
        ),
    ))
    .await
    .unwrap();
    let m = next_outcome(&mut messages).await;
    assert_eq!(m["operationId"], "after");
    assert_eq!(m["outcome"]["status"], "applied");

    // Replaying the dead letter applies the command after all: the operator
    // fixed what made it fail, so the engine's giving up is not its outcome.
    let op = store.operation("poison").await.unwrap().unwrap();
    assert_eq!(op.status, "failed");
    let dead = q.dead_letters().list(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        q.dead_letters()
            .retry(&dead[0].reference())
            .await
            .unwrap()
            .is_some()
    );
    let m = next_outcome(&mut messages).await;
    assert_eq!(m["operationId"], "poison");
    assert_eq!(m["outcome"]["status"], "applied", "{m}");
    let op = store.operation("poison").await.unwrap().unwrap();
    assert_eq!(op.status, "completed");
    assert_eq!(q.dead_letters().count().await.unwrap(), 0);
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_every_n_versions_through_analytics() {
    let env = TestEnv::start().await;
    let q = commands_queue(&env, 3);
    let analytics = env.queue(
        "analytics",
        fast(QueueOptions {
            kind: QueueKind::Priority,
            partitions: 1,
            ..QueueOptions::default()
        }),
    );
    let settings = GraphSettings {
        snapshot_every: 10,
        ..GraphSettings::default()
    };
    let store = GraphStore::new(env.redis.clone(), env.keys.clone(), settings);
    let processor = GraphqProcessor::new(store.clone()).with_snapshots(analytics.clone(), 10);
    let jobs: Vec<NewJob> = (0..25)
        .map(|i| {
            command_job(
                "g1",
                "a",
                &cmd(
                    &format!("c{i}"),
                    "CREATE_NODE",
                    json!({"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}),
                ),
            )
        })
        .collect();
    q.add_bulk(jobs).await.unwrap();
    let stop = CancellationToken::new();
    let a = tokio::spawn(Worker::new(q.clone(), processor.clone()).run(stop.clone()));
    let b = tokio::spawn(Worker::new(analytics.clone(), processor).run(stop.clone()));
    eventually(Duration::from_secs(10), "snapshot taken", || async {
        let mut conn = env.conn();
        let snap: Option<String> = redis::cmd("GET")
            .arg(env.keys.graph_snapshot("g1"))
            .query_async(&mut conn)
            .await
            .unwrap();
        snap.is_some() && store.state("g1").await.unwrap().version == 25
    })
    .await;
    let report = store.verify("g1").await.unwrap();
    assert!(report.ok(), "{report:?}");
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}
