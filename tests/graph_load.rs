//! `graphq graph load` and `graphq graph log`, run as the binary against a
//! real Redis: dump → load → dump, refusing to overwrite, the loaded graph
//! taking commands, and the change log as JSON lines.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::TestEnv;
use graphq::graph::{GraphSettings, GraphStore, Outcome};
use redis::AsyncCommands;
use serde_json::{Value, json};

fn run(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = env.graphq();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("graphq runs");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(text.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("graphq exits");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dump(env: &TestEnv, graph: &str) -> Value {
    let (ok, stdout, stderr) = run(env, &["graph", "dump", graph], None);
    assert!(ok, "dump {graph}: {stderr}");
    serde_json::from_str(&stdout).expect("dump prints JSON")
}

fn verify_ok(env: &TestEnv, graph: &str) {
    let (ok, stdout, stderr) = run(env, &["graph", "verify", graph], None);
    assert!(ok, "verify {graph}: {stdout}{stderr}");
}

/// A dump without what names one particular graph: its id and epoch.
fn content(mut state: Value) -> Value {
    let obj = state.as_object_mut().expect("a state object");
    obj.remove("graphId");
    obj.remove("epoch");
    state
}

async fn apply(store: &GraphStore, graph: &str, user: &str, cmd: Value) -> Outcome {
    let outcome = common::apply_as(store, graph, user, cmd).await;
    assert!(
        matches!(outcome, Outcome::Applied { .. }),
        "applied: {outcome:?}"
    );
    outcome
}

/// Graph `g1`: nodes and edges by two users, data keys added out of order,
/// a self-loop, a cascade delete and a viewport.
async fn seeded() -> (TestEnv, GraphStore) {
    let env = TestEnv::start().await;
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    let mut n = 0;
    let mut op = |t: &str, payload: Value| {
        n += 1;
        json!({"operationId": format!("op{n}"), "type": t, "payload": payload})
    };
    for (i, user) in ["alice", "bob", "alice", "bob"].iter().enumerate() {
        let node = json!({"node": {"id": format!("n{i}"), "type": "task",
            "position": {"x": i, "y": 0.25}, "data": {"title": format!("T{i}"), "n": [i, {"k": null}]}}});
        apply(&store, "g1", user, op("CREATE_NODE", node)).await;
    }
    for (id, s, t) in [("e1", "n0", "n1"), ("e2", "n1", "n2"), ("e3", "n2", "n2")] {
        let edge = json!({"edge": {"id": id, "source": s, "target": t, "data": {"w": 1}}});
        apply(&store, "g1", "bob", op("CREATE_EDGE", edge)).await;
    }
    let patch = json!({"id": "n0", "patch": {"data": {"a": "later", "title": null}}});
    apply(&store, "g1", "bob", op("UPDATE_NODE", patch)).await;
    apply(
        &store,
        "g1",
        "alice",
        op("DELETE_NODE", json!({"id": "n3"})),
    )
    .await;
    let viewport = json!({"x": -10, "y": 4.5, "zoom": 1.25});
    apply(&store, "g1", "alice", op("UPDATE_VIEWPORT", viewport)).await;
    (env, store)
}

#[tokio::test]
async fn dump_load_dump_round_trips_and_the_loaded_graph_verifies() {
    let (env, store) = seeded().await;
    let original = dump(&env, "g1");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        serde_json::to_string_pretty(&original).unwrap(),
    )
    .unwrap();
    let path = file.path().to_str().unwrap();

    let (ok, stdout, stderr) = run(&env, &["graph", "load", "g2", path], None);
    assert!(ok, "{stderr}");
    let loaded: Value = serde_json::from_str(stdout.trim()).expect("load prints JSON");
    assert_eq!(loaded["outcome"], "created");
    assert_eq!(loaded["nodes"], 3);
    assert_eq!(loaded["edges"], 3);
    let copy = dump(&env, "g2");
    assert_eq!(copy["graphId"], "g2");
    assert_eq!(copy["epoch"], loaded["epoch"]);
    assert_ne!(copy["epoch"], original["epoch"], "a new epoch");
    for field in ["version", "nodes", "edges", "viewport"] {
        assert_eq!(copy[field], original[field], "{field}");
    }
    verify_ok(&env, "g2");

    // From stdin, a dump of the loaded graph loads to the same state,
    // checksum included.
    let text = serde_json::to_string(&copy).unwrap();
    let (ok, _, stderr) = run(&env, &["graph", "load", "g3", "-"], Some(&text));
    assert!(ok, "{stderr}");
    assert_eq!(content(dump(&env, "g3")), content(copy.clone()));
    verify_ok(&env, "g3");

    // The loaded graph takes commands: conflicts see the loaded field
    // versions, a node delete cascades over the loaded adjacency, and
    // verify replays from the load's snapshot.
    let version = copy["version"].as_u64().unwrap();
    apply(
        &store,
        "g2",
        "carol",
        json!({"operationId": "after1", "type": "DELETE_NODE", "payload": {"id": "n2"}}),
    )
    .await;
    let after = dump(&env, "g2");
    assert_eq!(after["version"], version + 1);
    let edge_ids: Vec<&str> = after["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(edge_ids, ["e1"], "e2 and the self-loop e3 went with n2");
    let (ok, stdout, _) = run(&env, &["graph", "verify", "g2"], None);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "replayed 1 log entries from the snapshot at version {version}"
        )),
        "{stdout}"
    );
}

#[tokio::test]
async fn load_refuses_an_existing_graph_unless_told_to_replace_it() {
    let (env, store) = seeded().await;
    let mut other = dump(&env, "g1");
    other["nodes"] = json!([other["nodes"][0]]);
    other["edges"] = json!([]);
    let text = serde_json::to_string(&other).unwrap();
    let before = dump(&env, "g1");

    let (ok, _, stderr) = run(&env, &["graph", "load", "g1"], Some(&text));
    assert!(!ok);
    assert!(stderr.contains("graph g1 exists"), "{stderr}");
    assert_eq!(dump(&env, "g1"), before, "nothing written");

    let undo = env.keys.graph_undo("g1", "alice");
    let mut conn = env.conn();
    assert!(conn.exists::<_, bool>(&undo).await.unwrap());
    let (ok, stdout, stderr) = run(&env, &["graph", "load", "g1", "--replace"], Some(&text));
    assert!(ok, "{stderr}");
    assert!(stdout.contains(r#""outcome":"replaced""#), "{stdout}");
    let replaced = dump(&env, "g1");
    assert_eq!(replaced["nodes"], other["nodes"]);
    assert_eq!(replaced["edges"], json!([]));
    assert_ne!(replaced["epoch"], before["epoch"]);
    assert!(
        !conn.exists::<_, bool>(&undo).await.unwrap(),
        "the old graph's undo list went with it"
    );
    verify_ok(&env, "g1");
    // An UNDO has nothing of the old graph to undo.
    let undo = common::apply_as(
        &store,
        "g1",
        "alice",
        json!({"operationId": "u1", "type": "UNDO", "payload": {}}),
    )
    .await;
    assert!(matches!(undo, Outcome::Reverted { .. }), "{undo:?}");
    // `--force` says the same.
    let (ok, _, stderr) = run(&env, &["graph", "load", "g1", "--force"], Some(&text));
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn bad_input_is_refused_with_its_place_and_writes_nothing() {
    let (env, _store) = seeded().await;
    let mut state = dump(&env, "g1");
    state["edges"][0]["source"] = json!("ghost");
    let cases = [
        ("{not json".to_string(), "not JSON"),
        (state.to_string(), "edges.0.source"),
        (
            json!({"version": 1, "nodes": [{"id": "a b", "position": {"x": 0, "y": 0},
                "version": 1, "createdBy": "u", "updatedBy": "u", "updatedAt": 0}]})
            .to_string(),
            "nodes.0.id",
        ),
    ];
    for (input, says) in cases {
        let (ok, _, stderr) = run(&env, &["graph", "load", "fresh"], Some(&input));
        assert!(!ok, "{input}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        let (exists, _, _) = run(&env, &["graph", "dump", "fresh"], None);
        assert!(!exists, "nothing was written for {input}");
    }
    let (ok, _, stderr) = run(&env, &["graph", "load", "no:colon"], Some("{}"));
    assert!(!ok);
    assert!(stderr.contains("not a graph id"), "{stderr}");
}

#[tokio::test]
async fn graph_log_prints_the_changes_after_a_version_as_json_lines() {
    let (env, store) = seeded().await;
    let (ok, stdout, stderr) = run(&env, &["graph", "log", "g1", "--since", "5"], None);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let versions: Vec<u64> = lines
        .iter()
        .map(|l| l["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [6, 7, 8, 9, 10]);
    let expected = store.changes_since("g1", 5, 100).await.unwrap();
    assert_eq!(
        serde_json::to_value(&lines).unwrap(),
        serde_json::to_value(&expected.changes).unwrap()
    );
    assert_eq!(lines[3]["type"], "DELETE_NODE");
    assert_eq!(lines[3]["userId"], "alice");

    let (ok, stdout, _) = run(&env, &["graph", "log", "g1"], None);
    assert!(ok);
    assert_eq!(stdout.lines().count(), 10);

    // A loaded graph has no log before its version: asking for it says so.
    let text = serde_json::to_string(&dump(&env, "g1")).unwrap();
    assert!(run(&env, &["graph", "load", "g2"], Some(&text)).0);
    let (ok, _, stderr) = run(&env, &["graph", "log", "g2", "--since", "3"], None);
    assert!(!ok);
    assert!(stderr.contains("no longer kept"), "{stderr}");
    let (ok, stdout, _) = run(&env, &["graph", "log", "g2", "--since", "10"], None);
    assert!(ok);
    assert_eq!(stdout, "");
}

#[tokio::test]
async fn a_state_larger_than_one_slice_loads_whole_and_verifies() {
    let env = TestEnv::start().await;
    // More entities than one HSET slice of the script (500) in every hash.
    let nodes: Vec<Value> = (0..1200)
        .map(|i| {
            json!({"id": format!("n{i:04}"), "type": null, "position": {"x": i, "y": -i},
                "data": {"i": i}, "version": 1 + i % 7, "createdBy": "ann",
                "updatedBy": "bob", "updatedAt": 1700000000000u64 + i as u64})
        })
        .collect();
    let edges: Vec<Value> = (0..1199)
        .map(|i| {
            json!({"id": format!("e{i:04}"), "source": format!("n{i:04}"),
                "target": format!("n{:04}", i + 1), "type": "next", "data": {},
                "version": 7, "createdBy": "ann", "updatedBy": "ann", "updatedAt": 5})
        })
        .collect();
    let state = json!({"version": 7, "nodes": nodes, "edges": edges,
        "viewport": {"x": 1, "y": 2, "zoom": 0.5}});
    let (ok, stdout, stderr) = run(&env, &["graph", "load", "big"], Some(&state.to_string()));
    assert!(ok, "{stderr}");
    assert!(stdout.contains(r#""nodes":1200,"edges":1199"#), "{stdout}");
    let dumped = dump(&env, "big");
    for field in ["version", "nodes", "edges", "viewport"] {
        assert_eq!(dumped[field], state[field], "{field}");
    }
    verify_ok(&env, "big");
}
