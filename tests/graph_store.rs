//! The graph store against a real redis-server: each command type, every
//! REVERT code, dedupe, log replay, verify, undo/redo, changes since.

mod common;

use common::TestEnv;
use graphq::graph::command::parse;
use graphq::graph::{ApplyContext, GraphSettings, GraphStore, Outcome, Strategy, checksum_of};
use redis::AsyncCommands;
use serde_json::{Value, json};

struct G {
    env: TestEnv,
    store: GraphStore,
    n: u64,
}

impl G {
    async fn new(settings: GraphSettings) -> G {
        let env = TestEnv::start().await;
        let store = GraphStore::new(env.redis.clone(), env.keys.clone(), settings);
        G { env, store, n: 0 }
    }

    async fn send(&mut self, user: &str, cmd: Value) -> Outcome {
        self.n += 1;
        let mut cmd = cmd;
        if cmd.get("operationId").is_none() {
            cmd["operationId"] = json!(format!("op-{}", self.n));
        }
        let parsed = parse(cmd.to_string().as_bytes()).expect("valid command");
        let ctx = ApplyContext {
            graph_id: "g1".into(),
            user_id: user.into(),
            now_ms: 1_700_000_000_000 + self.n,
            new_epoch: "epoch-1".into(),
        };
        self.store
            .apply(&ctx, &parsed)
            .await
            .expect("store answers")
    }

    async fn node(&self, id: &str) -> Option<Value> {
        let s = self.store.state("g1").await.unwrap();
        s.nodes.into_iter().find(|n| n["id"] == id)
    }
}

fn create_node(id: &str, x: i64) -> Value {
    json!({"type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": x, "y": 0}, "data": {"label": id}}}})
}

fn create_edge(id: &str, s: &str, t: &str) -> Value {
    json!({"type": "CREATE_EDGE", "payload": {"edge": {"id": id, "source": s, "target": t}}})
}

fn code(o: &Outcome) -> &str {
    match o {
        Outcome::Reverted { code, .. } => code,
        Outcome::Applied { .. } => "APPLIED",
        Outcome::Duplicate { .. } => "DUPLICATE",
    }
}

#[tokio::test]
async fn commands_change_the_graph_and_bump_the_version_by_one() {
    let mut g = G::new(GraphSettings::default()).await;
    let o = g.send("alice", create_node("n1", 10)).await;
    let Outcome::Applied {
        version, change, ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert_eq!(*version, 1);
    assert_eq!(change["nodes"][0]["data"]["label"], "n1");
    assert_eq!(change["undo"]["nodes"]["n1"], Value::Null);
    g.send("alice", create_node("n2", 20)).await;
    g.send("bob", create_edge("e1", "n1", "n2")).await;
    let o = g
        .send("bob", json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"position": {"x": 5, "y": 6}, "data": {"color": "red", "label": null}}}}))
        .await;
    assert_eq!(code(&o), "APPLIED");
    let n1 = g.node("n1").await.unwrap();
    assert_eq!(n1["position"], json!({"x": 5, "y": 6}));
    assert_eq!(n1["data"], json!({"color": "red"}));
    assert_eq!(n1["version"], 4);
    assert_eq!(n1["createdBy"], "alice");
    assert_eq!(n1["updatedBy"], "bob");

    // Deleting a node takes its edges with it, in one version.
    let o = g
        .send(
            "alice",
            json!({"type": "DELETE_NODE", "payload": {"id": "n2"}}),
        )
        .await;
    let Outcome::Applied {
        version, change, ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert_eq!(*version, 5);
    assert_eq!(change["removedNodes"], json!(["n2"]));
    assert_eq!(change["removedEdges"], json!(["e1"]));
    let state = g.store.state("g1").await.unwrap();
    assert_eq!(state.version, 5);
    assert_eq!(state.epoch, "epoch-1");
    assert!(state.edges.is_empty());
    assert_eq!(state.nodes.len(), 1);

    let o = g
        .send(
            "alice",
            json!({"type": "UPDATE_VIEWPORT", "payload": {"x": 1, "y": 2, "zoom": 1.5}}),
        )
        .await;
    assert_eq!(code(&o), "APPLIED");
    assert_eq!(
        g.store.state("g1").await.unwrap().viewport,
        Some(json!({"x": 1, "y": 2, "zoom": 1.5}))
    );
    let raw = g.store.raw("g1").await.unwrap();
    assert_eq!(
        raw.checksum,
        checksum_of(&raw),
        "incremental checksum matches a recount"
    );

    // The spliced JSON of GET state says exactly what the parsed state says.
    let mut fast: Value =
        serde_json::from_str(&g.store.state_json("g1").await.unwrap().json).unwrap();
    for list in ["nodes", "edges"] {
        fast[list]
            .as_array_mut()
            .unwrap()
            .sort_by_key(|e| e["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        fast,
        serde_json::to_value(g.store.state("g1").await.unwrap()).unwrap()
    );
}

#[tokio::test]
async fn every_revert_code_and_nothing_changes() {
    let settings = GraphSettings {
        max_nodes: 2,
        max_edges: 1,
        ..GraphSettings::default()
    };
    let mut g = G::new(settings).await;
    g.send("a", create_node("n1", 0)).await;
    g.send("a", create_node("n2", 0)).await;
    g.send("a", create_edge("e1", "n1", "n2")).await;
    let before = g.store.raw("g1").await.unwrap();
    let cases = [
        (
            create_node("n1", 0),
            "ALREADY_EXISTS",
            "node n1 already exists",
        ),
        (
            create_node("n3", 0),
            "LIMIT_EXCEEDED",
            "the graph already has 2 nodes",
        ),
        (
            json!({"type": "UPDATE_NODE", "payload": {"id": "nx", "patch": {"type": "t"}}}),
            "NOT_FOUND",
            "node nx does not exist",
        ),
        (
            json!({"type": "DELETE_EDGE", "payload": {"id": "ex"}}),
            "NOT_FOUND",
            "edge ex does not exist",
        ),
        (
            create_edge("e1", "n1", "n2"),
            "ALREADY_EXISTS",
            "edge e1 already exists",
        ),
        (
            create_edge("e2", "n1", "nx"),
            "NOT_FOUND",
            "target node nx does not exist",
        ),
        (
            create_edge("e2", "n2", "n1"),
            "LIMIT_EXCEEDED",
            "the graph already has 1 edges",
        ),
        (json!({"type": "UNDO", "payload": {}}), "APPLIED_OR", ""),
        (
            json!({"type": "REDO", "payload": {}}),
            "INVALID",
            "nothing to redo",
        ),
        (
            json!({"type": "BATCH_UPDATE", "payload": {"operations": [
                {"type": "DELETE_EDGE", "payload": {"id": "e1"}},
                {"type": "DELETE_NODE", "payload": {"id": "n9"}}]}}),
            "NOT_FOUND",
            "operation 1: node n9 does not exist",
        ),
    ];
    for (cmd, want, message) in cases {
        if want == "APPLIED_OR" {
            continue;
        }
        let o = g.send("b", cmd.clone()).await;
        match &o {
            Outcome::Reverted {
                code, message: m, ..
            } => {
                assert_eq!((code.as_str(), m.as_str()), (want, message), "{cmd}");
            }
            other => panic!("{cmd}: expected {want}, got {other:?}"),
        }
        assert_eq!(
            g.store.raw("g1").await.unwrap(),
            before,
            "a revert changes nothing: {cmd}"
        );
    }
    // The current values name what the command touched.
    let o = g.send("b", create_edge("e2", "n1", "nx")).await;
    let Outcome::Reverted { current, .. } = o else {
        panic!()
    };
    assert_eq!(current["nodes"]["nx"], Value::Null);
    assert_eq!(current["nodes"]["n1"]["id"], "n1");
}

#[tokio::test]
async fn conflicts_follow_the_strategy_of_each_field() {
    let mut settings = GraphSettings::default();
    settings
        .conflicts
        .insert("node.data.title".into(), Strategy::Manual);
    settings
        .conflicts
        .insert("node.position".into(), Strategy::ServerWins);
    let mut g = G::new(settings).await;
    g.send("alice", create_node("n1", 0)).await; // v1
    // Bob changes color, title and the position at v2, based on v1.
    g.send("bob", json!({"type": "UPDATE_NODE", "baseVersion": 1, "payload": {"id": "n1", "patch": {"position": {"x": 1, "y": 1}, "data": {"color": "blue", "title": "B"}}}})).await;
    // Alice, still at v1, changes size (other key), color (same key), title and position.
    let o = g
        .send("alice", json!({"type": "UPDATE_NODE", "baseVersion": 1, "payload": {"id": "n1", "patch": {"position": {"x": 9, "y": 9}, "data": {"size": 3, "color": "red", "title": "A"}}}}))
        .await;
    let Outcome::Applied { conflicts, .. } = &o else {
        panic!("{o:?}")
    };
    let fields: Vec<(&str, Strategy)> = conflicts
        .iter()
        .map(|c| (c.field.as_str(), c.strategy))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("/nodes/n1/position", Strategy::ServerWins),
            ("/nodes/n1/data/color", Strategy::Merge),
            ("/nodes/n1/data/title", Strategy::Manual),
        ]
    );
    assert_eq!(conflicts[2].client_value, json!("A"));
    assert_eq!(conflicts[2].server_value, json!("B"));
    let n1 = g.node("n1").await.unwrap();
    assert_eq!(
        n1["data"],
        json!({"label": "n1", "color": "blue", "title": "B", "size": 3}),
        "other key merged, same key kept"
    );
    assert_eq!(n1["position"], json!({"x": 1, "y": 1}));
    // A stale baseVersion alone is not a conflict: bob's own later edit wins.
    let o = g.send("bob", json!({"type": "UPDATE_NODE", "baseVersion": 1, "payload": {"id": "n1", "patch": {"data": {"color": "green"}}}})).await;
    let Outcome::Applied { conflicts, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(conflicts.is_empty());
    // Everything lost: reverted with CONFLICT, version unchanged.
    let v = g.store.raw("g1").await.unwrap().version;
    let o = g.send("alice", json!({"type": "UPDATE_NODE", "baseVersion": 1, "payload": {"id": "n1", "patch": {"data": {"color": "red"}}}})).await;
    assert_eq!(code(&o), "CONFLICT");
    assert_eq!(g.store.raw("g1").await.unwrap().version, v);
}

#[tokio::test]
async fn a_resent_operation_is_answered_from_its_first_outcome() {
    let mut g = G::new(GraphSettings::default()).await;
    let cmd = json!({"operationId": "same-op", "type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}}}});
    assert_eq!(code(&g.send("a", cmd.clone()).await), "APPLIED");
    let again = g.send("a", cmd.clone()).await;
    assert_eq!(
        again,
        Outcome::Duplicate {
            stored: json!({"status": "applied", "version": 1})
        }
    );
    let raw = g.store.raw("g1").await.unwrap();
    assert_eq!(raw.version, 1, "a duplicate never bumps the version");
    // A reverted operation stays reverted, even once it could succeed.
    let del = json!({"operationId": "del-missing", "type": "DELETE_NODE", "payload": {"id": "n2"}});
    assert_eq!(code(&g.send("a", del.clone()).await), "NOT_FOUND");
    g.send("a", create_node("n2", 0)).await;
    assert!(matches!(g.send("a", del).await, Outcome::Duplicate { .. }));
    assert!(g.node("n2").await.is_some());
}

#[tokio::test]
async fn undo_and_redo_revert_only_what_nobody_else_changed() {
    let mut g = G::new(GraphSettings::default()).await;
    g.send("alice", create_node("n1", 0)).await;
    g.send("alice", json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"position": {"x": 50, "y": 50}, "data": {"color": "red"}}}})).await;
    // Bob changes the color afterwards.
    g.send("bob", json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {"color": "blue"}}}})).await;
    let o = g
        .send("alice", json!({"type": "UNDO", "payload": {}}))
        .await;
    let Outcome::Applied {
        conflicts, version, ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert_eq!(*version, 4, "undo is a versioned command");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, "/nodes/n1/data/color");
    let n1 = g.node("n1").await.unwrap();
    assert_eq!(
        n1["position"],
        json!({"x": 0, "y": 0}),
        "alice's move is undone"
    );
    assert_eq!(n1["data"]["color"], "blue", "bob's color stays");
    let o = g
        .send("alice", json!({"type": "REDO", "payload": {}}))
        .await;
    assert_eq!(code(&o), "APPLIED");
    assert_eq!(
        g.node("n1").await.unwrap()["position"],
        json!({"x": 50, "y": 50})
    );
    // Undo twice more: the move, then the creation.
    g.send("alice", json!({"type": "UNDO", "payload": {}}))
        .await;
    let o = g
        .send("alice", json!({"type": "UNDO", "payload": {}}))
        .await;
    assert_eq!(code(&o), "CONFLICT", "bob changed the node alice created");
    let o = g
        .send("alice", json!({"type": "UNDO", "payload": {}}))
        .await;
    assert_eq!(code(&o), "INVALID");
    // Undo of a delete brings the node and its edges back.
    let mut g = G::new(GraphSettings::default()).await;
    g.send("a", create_node("n1", 0)).await;
    g.send("a", create_node("n2", 0)).await;
    g.send("a", create_edge("e1", "n1", "n2")).await;
    g.send("a", json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}))
        .await;
    let before_delete_edges = 1;
    let o = g.send("a", json!({"type": "UNDO", "payload": {}})).await;
    assert_eq!(code(&o), "APPLIED");
    let s = g.store.state("g1").await.unwrap();
    assert_eq!(s.nodes.len(), 2);
    assert_eq!(s.edges.len(), before_delete_edges);
    let raw = g.store.raw("g1").await.unwrap();
    assert_eq!(raw.checksum, checksum_of(&raw));
}

#[tokio::test]
async fn the_log_replays_to_the_same_state_and_verify_catches_tampering() {
    let mut g = G::new(GraphSettings::default()).await;
    for i in 0..20 {
        g.send("a", create_node(&format!("n{i}"), i)).await;
    }
    g.send("b", create_edge("e1", "n1", "n2")).await;
    g.send("b", json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}))
        .await;
    g.send("a", json!({"type": "UNDO", "payload": {}})).await;
    let report = g.store.verify("g1").await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.replayed_entries, 23);
    assert_eq!(report.replayed_from.as_deref(), Some("empty graph"));

    // Changes since a version: exactly the missed ones, in order.
    let ch = g.store.changes_since("g1", 20, 100).await.unwrap();
    assert_eq!(
        ch.changes.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![21, 22, 23]
    );
    assert_eq!(ch.current_version, 23);
    assert!(!ch.too_old);
    assert!(
        g.store
            .changes_since("g1", 23, 100)
            .await
            .unwrap()
            .changes
            .is_empty()
    );

    // Tamper with a node by hand: verify notices.
    let mut conn = g.env.conn();
    let key = g.env.keys.graph_nodes("g1");
    let json: String = conn.hget(&key, "n5").await.unwrap();
    let _: () = conn
        .hset(&key, "n5", json.replace("\"x\":5", "\"x\":6"))
        .await
        .unwrap();
    let report = g.store.verify("g1").await.unwrap();
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("checksum mismatch")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("node n5 differs")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_trimmed_log_is_too_old_and_a_snapshot_keeps_verify_possible() {
    let settings = GraphSettings {
        log_retention: 10,
        ..GraphSettings::default()
    };
    let mut g = G::new(settings).await;
    for i in 0..150 {
        g.send("a", create_node(&format!("n{i}"), i)).await;
        if i == 99 {
            g.store.snapshot("g1").await.unwrap();
        }
    }
    let ch = g.store.changes_since("g1", 3, 100).await.unwrap();
    assert!(ch.too_old, "entries 4.. were trimmed");
    let ch = g.store.changes_since("g1", 145, 100).await.unwrap();
    assert!(!ch.too_old);
    assert_eq!(ch.changes.len(), 5);
    let report = g.store.verify("g1").await.unwrap();
    // Approximate trimming may keep more than 10 entries, but not back to 100.
    assert!(
        report.ok() || report.problems[0].contains("cannot replay"),
        "{report:?}"
    );
    g.store.snapshot("g1").await.unwrap();
    let report = g.store.verify("g1").await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        report.replayed_from.as_deref(),
        Some("snapshot at version 150")
    );
}

#[tokio::test]
async fn a_graph_whose_history_was_lost_comes_back_with_a_new_epoch() {
    let env = TestEnv::start().await;
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    let apply = |op: &'static str, epoch: &'static str| {
        let store = store.clone();
        async move {
            let c = json!({"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": op, "position": {"x": 0, "y": 0}}}});
            let ctx = ApplyContext {
                graph_id: "g1".into(),
                user_id: "u".into(),
                now_ms: 1,
                new_epoch: epoch.into(),
            };
            store
                .apply(&ctx, &parse(c.to_string().as_bytes()).unwrap())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        store.state("g1").await.unwrap().epoch,
        "",
        "a graph never written has no epoch"
    );
    apply("a", "first").await;
    apply("b", "ignored-graph-exists").await;
    let s = store.state("g1").await.unwrap();
    assert_eq!((s.epoch.as_str(), s.version), ("first", 2));
    // Redis loses everything (restart without persistence).
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut env.conn())
        .await
        .unwrap();
    apply("c", "second").await;
    let s = store.state("g1").await.unwrap();
    assert_eq!(
        (s.epoch.as_str(), s.version),
        ("second", 1),
        "new epoch, history restarts"
    );
}

#[tokio::test]
async fn undo_history_keeps_the_last_hundred_changes() {
    let mut g = G::new(GraphSettings::default()).await;
    for i in 0..105 {
        g.send("alice", create_node(&format!("n{i}"), i)).await;
    }
    for k in 0..100 {
        let o = g
            .send("alice", json!({"type": "UNDO", "payload": {}}))
            .await;
        assert_eq!(code(&o), "APPLIED", "undo number {k}");
    }
    let o = g
        .send("alice", json!({"type": "UNDO", "payload": {}}))
        .await;
    assert_eq!(
        code(&o),
        "INVALID",
        "the 101st undo finds nothing: history is capped at 100"
    );
    // The five oldest creations were beyond the cap and stay.
    let s = g.store.state("g1").await.unwrap();
    let ids: Vec<&str> = s.nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["n0", "n1", "n2", "n3", "n4"]);
}

/// `GET state` reads over raw connections of its own: they log in and pick
/// the database the URL names, and a read that failed does not poison the
/// next one.
#[tokio::test]
async fn state_reads_honour_password_and_database_and_recover_from_errors() {
    use graphq::redis_server::{RedisServer, RedisServerOptions};
    let server = RedisServer::start_with(RedisServerOptions {
        extra: vec![("requirepass".into(), "s3cret".into())],
        ..RedisServerOptions::default()
    })
    .expect("redis-server starts");
    let url = server.url().replace("redis://", "redis://:s3cret@") + "/3";
    let redis = graphq::db::Redis::connect(&url)
        .await
        .expect("connects with the password");
    let keys = graphq::keys::Keys::new("pw");
    let store = GraphStore::new(redis.clone(), keys.clone(), GraphSettings::default());
    let ctx = ApplyContext {
        graph_id: "g1".into(),
        user_id: "alice".into(),
        now_ms: 1_700_000_000_000,
        new_epoch: "epoch-1".into(),
    };
    for (i, cmd) in [
        create_node("a", 1),
        create_node("b", 2),
        create_edge("e", "a", "b"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = cmd;
        cmd["operationId"] = json!(format!("op-{i}"));
        let parsed = parse(cmd.to_string().as_bytes()).expect("valid command");
        store.apply(&ctx, &parsed).await.expect("applied");
    }
    let read = store.state_json("g1").await.expect("state read");
    let state: Value = serde_json::from_str(&read.json).expect("state is JSON");
    assert_eq!(state["version"], 3);
    assert_eq!(state["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(state["edges"][0]["id"], "e");

    // The data is in database 3, not 0.
    let mut db0 = redis::Client::open(server.url().replace("redis://", "redis://:s3cret@"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let in_db0: Vec<String> = db0.keys("*").await.unwrap();
    assert!(in_db0.is_empty(), "{in_db0:?}");

    // A key of the wrong type makes the read fail with Redis's error...
    let mut conn = redis.conn();
    let edges = keys.graph_edges("g1");
    let _: () = conn.del(&edges).await.unwrap();
    let _: () = conn.set(&edges, "not a hash").await.unwrap();
    let err = store.state_json("g1").await.expect_err("WRONGTYPE");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // ...and once repaired the next reads work.
    let _: () = conn.del(&edges).await.unwrap();
    for _ in 0..3 {
        let state: Value =
            serde_json::from_str(&store.state_json("g1").await.unwrap().json).unwrap();
        assert_eq!(state["nodes"].as_array().map(Vec::len), Some(2));
        assert_eq!(state["edges"], json!([]));
    }
}
