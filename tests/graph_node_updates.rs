//! Node updates decided by the worker (docs/graph.md, "Node updates decided
//! by the worker"): what subscribers, the change log, undo and operation records
//! see must be what the apply function would have made, byte for byte; a
//! graph changed behind the worker's back, a resent operation and a new
//! worker after a crash must all come out as they do without it.
//! (`tests/graph_props.rs` checks outcomes and stored entities against the
//! model over random cases.)

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::TestEnv;
use futures_util::StreamExt;
use graphq::graph::command::parse;
use graphq::graph::{ApplyContext, Command, GraphSettings, GraphStore, Outcome, checksum_of};
use graphq::keys::Keys;
use serde_json::{Value, json};

fn cmd(op: &str, kind: &str, payload: Value, base: Option<u64>) -> Command {
    let mut c =
        json!({"operationId": op, "type": kind, "payload": payload, "timestamp": 1700000000123u64});
    if let Some(b) = base {
        c["baseVersion"] = json!(b);
    }
    parse(c.to_string().as_bytes()).expect("a valid command")
}

fn move_to(op: &str, x: f64, y: f64, base: Option<u64>) -> Command {
    cmd(
        op,
        "UPDATE_NODE",
        json!({"id": "n1", "patch": {"position": {"x": x, "y": y}}}),
        base,
    )
}

fn ctx(user: &str, step: u64) -> ApplyContext {
    ApplyContext {
        graph_id: "g".into(),
        user_id: user.into(),
        now_ms: 1_700_000_000_000 + step,
        new_epoch: "epoch-1".into(),
    }
}

/// A store on its own key prefix; `decides`: whether it decides node
/// updates itself.
fn store(env: &TestEnv, tag: &str, decides: bool) -> GraphStore {
    let settings = GraphSettings {
        worker_cache_nodes: if decides { 1_000 } else { 0 },
        ..GraphSettings::default()
    };
    GraphStore::new(
        env.redis.clone(),
        Keys::new(format!("{}{tag}", env.prefix)),
        settings,
    )
}

/// Every note published on `keys`' graph and user channels, as text, in order.
async fn listen(
    env: &TestEnv,
    keys: &Keys,
) -> impl futures_util::Stream<Item = (String, String)> + Unpin {
    let client = redis::Client::open(env.server().url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let graph = keys.graph_channel("g");
    pubsub.subscribe(&graph).await.expect("subscribe");
    for user in ["alice", "bob"] {
        pubsub
            .subscribe(keys.user_channel(user))
            .await
            .expect("subscribe");
        pubsub
            .subscribe(keys.user_outcomes_channel(user))
            .await
            .expect("subscribe");
    }
    Box::pin(pubsub.into_on_message().map(move |m| {
        let channel: String = m.get_channel_name().to_string();
        let which = if channel == graph {
            "graph".to_string()
        } else {
            channel.rsplit(':').next().unwrap_or("").to_string()
        };
        (which, m.get_payload::<String>().unwrap_or_default())
    }))
}

async fn next_notes(
    notes: &mut (impl futures_util::Stream<Item = (String, String)> + Unpin),
    n: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(1), notes.next()).await {
            Ok(Some(note)) => out.push(note),
            _ => break,
        }
    }
    out
}

/// A stream's entries: id and fields.
async fn entries(env: &TestEnv, key: String) -> Vec<(String, BTreeMap<String, String>)> {
    redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async::<redis::streams::StreamRangeReply>(&mut env.conn())
        .await
        .unwrap()
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value_ref::<String>(v).unwrap_or_default(),
                    )
                })
                .collect();
            (e.id, fields)
        })
        .collect()
}

/// What a user or an operator can read of graph "g" under `keys`, with the
/// per-field versions decoded (their JSON key order is not part of them).
async fn everything(env: &TestEnv, keys: &Keys, ops: &[String]) -> BTreeMap<String, Value> {
    let mut conn = env.conn();
    let mut out = BTreeMap::new();
    let mut hash = async |key: String| -> HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    out.insert("meta".into(), json!(hash(keys.graph_meta("g")).await));
    out.insert("nodes".into(), json!(hash(keys.graph_nodes("g")).await));
    let fv = hash(keys.graph_field_versions("g")).await;
    let fv: BTreeMap<String, Value> = fv
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect();
    out.insert("field versions".into(), json!(fv));
    let log = entries(env, keys.graph_log("g")).await;
    out.insert("change log".into(), json!(log));
    // The conflict log by value (its entry ids are Redis' clock).
    let conflicts: Vec<BTreeMap<String, String>> = entries(env, keys.graph_conflicts("g"))
        .await
        .into_iter()
        .map(|(_, fields)| fields)
        .collect();
    out.insert("conflict log".into(), json!(conflicts));
    for user in ["alice", "bob"] {
        for (what, key) in [
            ("undo", keys.graph_undo("g", user)),
            ("redo", keys.graph_redo("g", user)),
        ] {
            let list: Vec<String> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.insert(format!("{what} {user}"), json!(list));
        }
    }
    for op in ops {
        let record: Option<String> = redis::cmd("GET")
            .arg(keys.graph_op("g", op))
            .query_async(&mut conn)
            .await
            .unwrap();
        out.insert(format!("outcome {op}"), json!(record));
    }
    out
}

/// The status of each answer.
fn statuses(answers: &[String]) -> Vec<String> {
    answers
        .iter()
        .map(|a| {
            serde_json::from_str::<Value>(a).unwrap()["status"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Runs `batches` through a store that sends everything to the apply
/// function and one that decides node updates, and asserts that both give
/// the same answers to every batch, then the same notes in the same order
/// and the same stored state. Returns the deciding store, its answers to
/// each batch and the `EVALSHA` calls each batch cost it.
async fn side_by_side(
    env: &TestEnv,
    batches: &[Vec<(&ApplyContext, &Command)>],
) -> (GraphStore, Vec<Vec<String>>, Vec<u64>) {
    let plain = store(env, "a", false);
    let deciding = store(env, "b", true);
    let mut plain_notes = listen(env, plain.keys()).await;
    let mut deciding_notes = listen(env, deciding.keys()).await;
    let (mut ops, mut answers, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for batch in batches {
        let a = plain.apply_batch(batch).await.expect("apply");
        let before = env.command_calls("evalsha").await;
        let b = deciding.apply_batch(batch).await.expect("apply");
        calls.push(env.command_calls("evalsha").await - before);
        let ids: Vec<&String> = batch.iter().map(|(_, c)| &c.operation_id).collect();
        assert_eq!(a, b, "answers differ for {ids:?}");
        ops.extend(ids.into_iter().cloned());
        answers.push(b);
    }
    // Applied outcomes go to the graph's channel and the sender's outcomes
    // channel; conflicts and duplicates to the sender's channel.
    let sent = ops.len();
    let a = next_notes(&mut plain_notes, 2 * sent).await;
    let b = next_notes(&mut deciding_notes, 2 * sent).await;
    assert!(a.len() >= sent, "only {} notes", a.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "note {i} differs");
    }
    assert_eq!(a.len(), b.len(), "as many notes");
    drop((plain_notes, deciding_notes));
    assert_eq!(
        everything(env, plain.keys(), &ops).await,
        everything(env, deciding.keys(), &ops).await
    );
    (deciding, answers, calls)
}

/// The same commands, in the same batches, through a store that decides
/// node updates and one that sends everything to the apply function: the same
/// answers, notes, stored bytes, change log, undo lists and outcome records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_the_worker_decides_look_exactly_like_applied_ones() {
    let env = TestEnv::start().await;
    let create = cmd(
        "c0",
        "CREATE_NODE",
        json!({"node": {"id": "n1", "type": "task/x", "position": {"x": 0, "y": 0}, "data": {"label": "a/b \"q\"", "n": 1e300}}}),
        None,
    );
    let label = cmd(
        "c5",
        "UPDATE_NODE",
        json!({"id": "n1", "patch": {"data": {"label": "z"}}}),
        None,
    );
    let undo = cmd("c7", "UNDO", json!({}), None);
    let batches: Vec<Vec<(ApplyContext, Command)>> = vec![
        vec![(ctx("alice", 0), create)],
        vec![(ctx("alice", 1), move_to("c1", 1.0, 2.0, None))],
        vec![
            (ctx("alice", 2), move_to("c2", 1.5, -2.25, Some(2))),
            (ctx("bob", 3), move_to("c3", 100.0, 0.1, None)),
        ],
        // Alice moves on from version 2: bob's move came after, a conflict
        // (LAST_WRITE_WINS logs it): the apply function decides this one.
        vec![(ctx("alice", 4), move_to("c4", 7.0, 7.0, Some(2)))],
        vec![
            (ctx("bob", 5), label),
            (ctx("bob", 6), move_to("c6", 3.0, 3.0, None)),
        ],
        vec![
            (ctx("bob", 7), undo),
            (ctx("alice", 8), move_to("c8", 4.0, 4.0, None)),
        ],
        vec![
            (ctx("alice", 9), move_to("c9", 5.0, 5.0, None)),
            (ctx("alice", 10), move_to("c10", 6.0, 6.0, Some(9))),
        ],
        // Resent: already decided.
        vec![(ctx("alice", 11), move_to("c9", 5.0, 5.0, None))],
        // A new type, a new key, a removed key and a move in one command;
        // then bob edits the label from a version before alice's edit
        // (MERGE: another key, no conflict) and alice from before bob's
        // (the same key: a conflict, which the apply function decides).
        vec![(
            ctx("alice", 12),
            cmd(
                "c12",
                "UPDATE_NODE",
                json!({"id": "n1", "patch": {"type": null, "position": {"x": 1, "y": 1}, "data": {"n": null, "z/~": [1, {"b": "}"}]}}}),
                None,
            ),
        )],
        vec![(
            ctx("bob", 13),
            cmd(
                "c13",
                "UPDATE_NODE",
                json!({"id": "n1", "patch": {"data": {"label": "bob"}}}),
                Some(11),
            ),
        )],
        vec![(
            ctx("alice", 14),
            cmd(
                "c14",
                "UPDATE_NODE",
                json!({"id": "n1", "patch": {"data": {"label": "alice"}}}),
                Some(12),
            ),
        )],
    ];
    let refs: Vec<Vec<(&ApplyContext, &Command)>> = batches
        .iter()
        .map(|b| b.iter().map(|(c, m)| (c, m)).collect())
        .collect();
    let (deciding, _, calls) = side_by_side(&env, &refs).await;
    let commits: u64 = calls.iter().sum();
    assert!(commits >= 7, "only {commits} batches were sent as commits");
    let raw = deciding.raw("g").await.expect("raw");
    assert_eq!(raw.checksum, checksum_of(&raw));
    // c14 met bob's label and was reverted (MERGE keeps the server's value).
    assert_eq!(raw.version, 13);
}

/// A graph's node updates in one batch go to Redis as one commit call. When
/// one of them was decided already (a resent operation), the ones before it
/// are committed, and it and the rest are answered by the apply function:
/// the answers, notes and stored bytes are those of a store that applies
/// every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_s_updates_in_one_batch_are_committed_in_one_call() {
    let env = TestEnv::start().await;
    let create = cmd(
        "c0",
        "CREATE_NODE",
        json!({"node": {"id": "n1", "position": {"x": 0, "y": 0}}}),
        None,
    );
    let warm = move_to("c1", 1.0, 1.0, None);
    let users = ["alice", "bob", "alice", "bob", "bob", "alice"];
    let moves: Vec<(ApplyContext, Command)> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let step = i as u64 + 2;
            (
                ctx(user, step),
                move_to(&format!("c{step}"), step as f64, -(step as f64), None),
            )
        })
        .collect();
    // c3 again in the middle of new moves: c8 is committed, c3 is a
    // duplicate, c9 and c10 are applied after it.
    let resent = moves[1].clone();
    let more: Vec<(ApplyContext, Command)> = (8..11)
        .map(|step| {
            (
                ctx("bob", step),
                move_to(&format!("c{step}"), 0.5, step as f64, None),
            )
        })
        .collect();
    let last = [more[0].clone(), resent, more[1].clone(), more[2].clone()];

    let (c0, c1) = (ctx("alice", 0), ctx("alice", 1));
    let batches: Vec<Vec<(&ApplyContext, &Command)>> = vec![
        vec![(&c0, &create)],
        vec![(&c1, &warm)],
        moves.iter().map(|(c, m)| (c, m)).collect(),
        last.iter().map(|(c, m)| (c, m)).collect(),
    ];
    let (deciding, answers, calls) = side_by_side(&env, &batches).await;
    assert_eq!(
        &calls[2..],
        [1, 1],
        "one commit call per batch of the graph"
    );
    assert_eq!(
        statuses(&answers[3]),
        vec!["applied", "duplicate", "applied", "applied"]
    );
    let raw = deciding.raw("g").await.expect("raw");
    assert_eq!(raw.checksum, checksum_of(&raw));
    // create, warm-up, six moves, c8, c9, c10 (c3 resent is a duplicate).
    assert_eq!(raw.version, 11);
}

/// Another worker (a handover, or an operator's tool) changes the graph: the
/// next move the first worker decides from what it remembers finds the graph
/// changed, writes nothing, and is applied by the apply function instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_changed_behind_the_worker_is_applied_afresh() {
    let env = TestEnv::start().await;
    let first = store(&env, "s", true);
    let second = store(&env, "s", true);
    let create = cmd(
        "c0",
        "CREATE_NODE",
        json!({"node": {"id": "n1", "position": {"x": 0, "y": 0}}}),
        None,
    );
    let c0 = ctx("alice", 0);
    first.apply_batch(&[(&c0, &create)]).await.unwrap();
    let (c1, m1) = (ctx("alice", 1), move_to("c1", 1.0, 1.0, None));
    first.apply_batch(&[(&c1, &m1)]).await.unwrap();
    // The second worker moves the node twice and renames it.
    let (c2, m2) = (ctx("bob", 2), move_to("c2", 2.0, 2.0, None));
    let (c3, m3) = (
        ctx("bob", 3),
        cmd(
            "c3",
            "UPDATE_NODE",
            json!({"id": "n1", "patch": {"type": "renamed"}}),
            None,
        ),
    );
    second.apply_batch(&[(&c2, &m2), (&c3, &m3)]).await.unwrap();
    // The first still remembers version 2; its two moves must land at 5 and 6.
    let (c4, m4) = (ctx("alice", 4), move_to("c4", 4.0, 4.0, None));
    let (c5, m5) = (ctx("alice", 5), move_to("c5", 5.0, 5.0, None));
    let answers = first.apply_batch(&[(&c4, &m4), (&c5, &m5)]).await.unwrap();
    let versions: Vec<Option<u64>> = answers
        .iter()
        .map(|a| match serde_json::from_str::<Outcome>(a).unwrap() {
            Outcome::Applied { version, .. } => Some(version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![Some(5), Some(6)]);
    let raw = first.raw("g").await.unwrap();
    assert_eq!(raw.version, 6);
    assert_eq!(raw.checksum, checksum_of(&raw));
    let node: Value = serde_json::from_str(&raw.nodes["n1"]).unwrap();
    assert_eq!(
        node["type"], "renamed",
        "the second worker's rename is kept"
    );
    assert_eq!(node["position"], json!({"x": 5.0, "y": 5.0}));
    assert_eq!(node["version"], 6);

    // A new worker after a crash gets the last batch again, plus a new move.
    let third = store(&env, "s", true);
    let (c6, m6) = (ctx("alice", 6), move_to("c6", 6.0, 6.0, None));
    let answers = third
        .apply_batch(&[(&c4, &m4), (&c5, &m5), (&c6, &m6)])
        .await
        .unwrap();
    assert_eq!(
        statuses(&answers),
        vec!["duplicate", "duplicate", "applied"]
    );
    let raw = third.raw("g").await.unwrap();
    assert_eq!(raw.version, 7);
    assert_eq!(raw.checksum, checksum_of(&raw));
}

/// A conflict revert marks an open MANUAL conflict on a node without a new
/// version. When another worker made it, the first worker's memory of the
/// node lacks the mark: its next write of the field must still go to the
/// apply function, which resolves the conflict and logs that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_conflict_marked_by_another_worker_is_resolved_and_logged() {
    let env = TestEnv::start().await;
    let settings = GraphSettings {
        worker_cache_nodes: 1_000,
        conflicts: BTreeMap::from([("node.position".to_string(), graphq::graph::Strategy::Manual)]),
        ..GraphSettings::default()
    };
    let keys = Keys::new(format!("{}m", env.prefix));
    let first = GraphStore::new(env.redis.clone(), keys.clone(), settings.clone());
    let second = GraphStore::new(env.redis.clone(), keys.clone(), settings);
    let create = cmd(
        "c0",
        "CREATE_NODE",
        json!({"node": {"id": "n1", "position": {"x": 0, "y": 0}}}),
        None,
    );
    let (c0, c1) = (ctx("alice", 0), ctx("alice", 1));
    first.apply_batch(&[(&c0, &create)]).await.unwrap();
    let m1 = move_to("c1", 1.0, 1.0, None);
    first.apply_batch(&[(&c1, &m1)]).await.unwrap();
    // Bob moves from version 1: alice moved since, MANUAL keeps it open.
    let (c2, m2) = (ctx("bob", 2), move_to("c2", 2.0, 2.0, Some(1)));
    let bob = second.apply_batch(&[(&c2, &m2)]).await.unwrap();
    assert!(bob[0].contains("\"code\":\"CONFLICT\""), "{}", bob[0]);
    let field_versions = async || -> String {
        redis::cmd("HGET")
            .arg(keys.graph_field_versions("g"))
            .arg("n:n1")
            .query_async(&mut env.conn())
            .await
            .unwrap()
    };
    let marked = field_versions().await;
    assert!(marked.contains("open"), "{marked}");
    // Alice moves again through the first worker: her write resolves it.
    let (c3, m3) = (ctx("alice", 3), move_to("c3", 3.0, 3.0, None));
    let alice = first.apply_batch(&[(&c3, &m3)]).await.unwrap();
    assert!(alice[0].contains("\"MANUAL:resolved\""), "{}", alice[0]);
    let fv = field_versions().await;
    assert!(!fv.contains("open"), "{fv}");
    let log = entries(&env, keys.graph_conflicts("g")).await;
    assert_eq!(log.len(), 2, "a conflict and its resolution: {log:?}");
    assert!(log[1].1.contains_key("resolution"), "{log:?}");
}
