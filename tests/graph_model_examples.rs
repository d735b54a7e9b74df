//! Hand-computed examples of docs/graph.md, run against the reference model
//! (`tests/graph_model`). Every expected value below was worked out from the
//! doc by hand, not copied from the model's output; together they document
//! the semantics the property test (`tests/graph_props.rs`) relies on. The
//! readings where the doc leaves room are in `tests/graph_model_choices.rs`.

mod graph_model;

use graph_model::Model;
use graph_model::examples::{
    EPOCH, applied, conflict, edge_cmd, node_cmd, plain_edge, plain_node, reverted, send, v,
};
use graphq::graph::{GraphSettings, Outcome, Strategy, checksum_of, entity_hash};
use serde_json::{Value, json};

#[test]
fn create_node_stores_the_fixed_layout_with_sorted_data() {
    let mut m = Model::new(GraphSettings::default());
    let out = send(
        &mut m,
        "alice",
        1000,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "type": "task",
            "position": {"x": 1, "y": 2.5}, "data": {"b": 1, "a": "x", "c": null}}}}),
    );
    // `c: null` is dropped on create; keys are sorted.
    let n1 = r#"{"id":"n1","type":"task","position":{"x":1,"y":2.5},"data":{"a":"x","b":1},"version":1,"createdBy":"alice","updatedBy":"alice","updatedAt":1000}"#;
    assert_eq!(
        out,
        applied(
            1,
            json!({"nodes": [v(n1)], "edges": [], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n1": null}, "edges": {}}}),
            vec![]
        )
    );
    let raw = m.raw();
    assert_eq!(raw.epoch, EPOCH);
    assert_eq!(raw.version, 1);
    assert_eq!(raw.nodes.get("n1").map(String::as_str), Some(n1));
    assert_eq!(raw.checksum, entity_hash(&format!("n{n1}")));
    assert_eq!(raw.checksum, checksum_of(&raw));
}

#[test]
fn update_replaces_keys_in_place_drops_removed_and_appends_new_in_patch_order() {
    let mut m = Model::new(GraphSettings::default());
    send(
        &mut m,
        "alice",
        1000,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0},
            "data": {"z": 1, "m": 2, "q": 3}}}}),
    );
    // Stored data: m, q, z. The patch sets z (replaced in place), adds b and a
    // (appended sorted: a, b), removes q.
    let out = send(
        &mut m,
        "bob",
        2000,
        "o2",
        json!({"type": "UPDATE_NODE", "payload": {"id": "n1",
            "patch": {"data": {"z": 9, "b": [1], "a": {"y": 1, "x": 2}, "q": null}}}}),
    );
    let before = r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"m":2,"q":3,"z":1},"version":1,"createdBy":"alice","updatedBy":"alice","updatedAt":1000}"#;
    let after = r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"m":2,"z":9,"a":{"x":2,"y":1},"b":[1]},"version":2,"createdBy":"alice","updatedBy":"bob","updatedAt":2000}"#;
    assert_eq!(
        out,
        applied(
            2,
            json!({"nodes": [v(after)], "edges": [], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n1": v(before)}, "edges": {}}}),
            vec![]
        )
    );
    assert_eq!(m.raw().nodes.get("n1").map(String::as_str), Some(after));
}

#[test]
fn deleting_a_node_cascades_its_edges_in_attach_order() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", node_cmd("n1", 0, 0));
    send(&mut m, "alice", 2, "o2", node_cmd("n2", 1, 0));
    send(&mut m, "alice", 3, "o3", node_cmd("n3", 2, 0));
    // n1's attach order is e2 (v4), then e1 (v5): the cascade follows it,
    // not the ids' sort order.
    send(&mut m, "alice", 4, "o4", edge_cmd("e2", "n3", "n1"));
    send(&mut m, "alice", 5, "o5", edge_cmd("e1", "n1", "n2"));
    let out = send(
        &mut m,
        "bob",
        6,
        "o6",
        json!({"type": "DELETE_NODE", "payload": {"id": "n1"}}),
    );
    assert_eq!(
        out,
        applied(
            6,
            json!({"nodes": [], "edges": [], "removedNodes": ["n1"], "removedEdges": ["e2", "e1"],
                   "undo": {"nodes": {"n1": v(&plain_node("n1", 0, 0, 1, "alice", "alice", 1))},
                            "edges": {"e2": v(&plain_edge("e2", "n3", "n1", 4, "alice", 4)),
                                      "e1": v(&plain_edge("e1", "n1", "n2", 5, "alice", 5))}}}),
            vec![]
        )
    );
    let raw = m.raw();
    assert_eq!(raw.nodes.keys().collect::<Vec<_>>(), ["n2", "n3"]);
    assert!(raw.edges.is_empty());
    assert_eq!(raw.version, 6);
    // Deleting n2 now cascades nothing: e1 left n2's adjacency with n1.
    let out = send(
        &mut m,
        "bob",
        7,
        "o7",
        json!({"type": "DELETE_NODE", "payload": {"id": "n2"}}),
    );
    let Outcome::Applied { change, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(change["removedEdges"], json!([]));
}

#[test]
fn concurrent_data_under_server_wins_loses_and_a_command_that_only_loses_is_reverted() {
    let settings = GraphSettings {
        conflicts: [("node.data".to_string(), Strategy::ServerWins)].into(),
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"k": 1}}}}),
    );
    // Version 1 by alice > baseVersion 0, and bob is another user: concurrent.
    // The whole data object is one field under SERVER_WINS: bob loses, and
    // as that was the command's only field, it is reverted.
    let out = send(
        &mut m,
        "bob",
        2,
        "o2",
        json!({"type": "UPDATE_NODE", "baseVersion": 0, "payload": {"id": "n1", "patch": {"data": {"k": 2, "j": null}}}}),
    );
    let n1_v1 = r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"k":1},"version":1,"createdBy":"alice","updatedBy":"alice","updatedAt":1}"#;
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "every change conflicted with a newer one",
            json!({"nodes": {"n1": v(n1_v1)}, "edges": {}}),
            vec![conflict(
                "/nodes/n1/data",
                json!({"k": 2, "j": null}),
                json!({"k": 1}),
                Strategy::ServerWins
            )]
        )
    );
    assert_eq!(m.raw().version, 1);

    // Type (LAST_WRITE_WINS) is applied although concurrent; data still loses.
    let out = send(
        &mut m,
        "bob",
        3,
        "o3",
        json!({"type": "UPDATE_NODE", "baseVersion": 0, "payload": {"id": "n1", "patch": {"type": "t", "data": {"k": 3}}}}),
    );
    let n1_v2 = r#"{"id":"n1","type":"t","position":{"x":0,"y":0},"data":{"k":1},"version":2,"createdBy":"alice","updatedBy":"bob","updatedAt":3}"#;
    assert_eq!(
        out,
        applied(
            2,
            json!({"nodes": [v(n1_v2)], "edges": [], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n1": v(n1_v1)}, "edges": {}}}),
            vec![conflict(
                "/nodes/n1/data",
                json!({"k": 3}),
                json!({"k": 1}),
                Strategy::ServerWins
            )]
        )
    );

    // A stale baseVersion alone is no conflict: alice last wrote `k` herself.
    let out = send(
        &mut m,
        "alice",
        4,
        "o4",
        json!({"type": "UPDATE_NODE", "baseVersion": 0, "payload": {"id": "n1", "patch": {"data": {"k": 5}}}}),
    );
    assert!(
        matches!(&out, Outcome::Applied { version: 3, conflicts, .. } if conflicts.is_empty()),
        "{out:?}"
    );
}

#[test]
fn merge_decides_each_key_alone_and_client_wins_reports_what_it_overwrote() {
    let settings = GraphSettings {
        conflicts: [("node.data.c".to_string(), Strategy::ClientWins)].into(),
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"k": 1, "c": 1}}}}),
    );
    // j: never written → applied. k: alice at v1 → kept (default MERGE on a key
    // behaves like SERVER_WINS). c: CLIENT_WINS → applied and reported.
    // Order: keys being set sorted (c, j, k), then removals.
    let out = send(
        &mut m,
        "bob",
        2,
        "o2",
        json!({"type": "UPDATE_NODE", "baseVersion": 0, "payload": {"id": "n1", "patch": {"data": {"k": 2, "j": 2, "c": 2}}}}),
    );
    let n1_v2 = r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"c":2,"k":1,"j":2},"version":2,"createdBy":"alice","updatedBy":"bob","updatedAt":2}"#;
    let Outcome::Applied {
        version,
        change,
        conflicts,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(version, 2);
    assert_eq!(change["nodes"], json!([v(n1_v2)]));
    assert_eq!(
        conflicts,
        vec![
            conflict("/nodes/n1/data/c", json!(2), json!(1), Strategy::ClientWins),
            // DOC CHOICE: the reported strategy is the configured one (MERGE).
            conflict("/nodes/n1/data/k", json!(2), json!(1), Strategy::Merge),
        ]
    );
}

#[test]
fn undo_then_redo_then_undo_back_to_nothing() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1000, "o1", node_cmd("n1", 0, 0));
    send(
        &mut m,
        "alice",
        2000,
        "o2",
        json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"position": {"x": 5, "y": 5}}}}),
    );
    let v2 = plain_node("n1", 5, 5, 2, "alice", "alice", 2000);
    let v3 = plain_node("n1", 0, 0, 3, "alice", "alice", 3000);
    let v4 = plain_node("n1", 5, 5, 4, "alice", "alice", 4000);
    let v5 = plain_node("n1", 0, 0, 5, "alice", "alice", 5000);
    let update = |version: u64, after: &str, before: &str| {
        applied(
            version,
            json!({"nodes": [v(after)], "edges": [], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n1": v(before)}, "edges": {}}}),
            vec![],
        )
    };

    // UNDO: the position is still what o2 set, so it goes back.
    let out = send(&mut m, "alice", 3000, "o3", json!({"type": "UNDO"}));
    assert_eq!(out, update(3, &v3, &v2));
    // REDO reverts the undo's change.
    let out = send(&mut m, "alice", 4000, "o4", json!({"type": "REDO"}));
    assert_eq!(out, update(4, &v4, &v3));
    let out = send(&mut m, "alice", 4500, "o5", json!({"type": "REDO"}));
    assert_eq!(
        out,
        reverted(
            "INVALID",
            "nothing to redo",
            json!({"nodes": {}, "edges": {}}),
            vec![]
        )
    );
    // UNDO pops the redo's change, then the create: n1 has o1's content again
    // (versions differ, content does not), so it is deleted.
    let out = send(&mut m, "alice", 5000, "o6", json!({"type": "UNDO"}));
    assert_eq!(out, update(5, &v5, &v4));
    let out = send(&mut m, "alice", 6000, "o7", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        applied(
            6,
            json!({"nodes": [], "edges": [], "removedNodes": ["n1"], "removedEdges": [],
                   "undo": {"nodes": {"n1": v(&v5)}, "edges": {}}}),
            vec![]
        )
    );
    let out = send(&mut m, "alice", 7000, "o8", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        reverted(
            "INVALID",
            "nothing to undo",
            json!({"nodes": {}, "edges": {}}),
            vec![]
        )
    );
    let raw = m.raw();
    assert_eq!((raw.version, raw.nodes.len(), raw.checksum), (6, 0, 0));
}

#[test]
fn undo_of_a_create_someone_changed_since_is_a_conflict_and_the_change_is_gone() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", node_cmd("n1", 0, 0));
    send(
        &mut m,
        "bob",
        2,
        "o2",
        json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"position": {"x": 7, "y": 0}}}}),
    );
    let n1_v2 = plain_node("n1", 7, 0, 2, "alice", "bob", 2);
    let out = send(&mut m, "alice", 3, "o3", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "the graph no longer shows that change",
            json!({"nodes": {"n1": v(&n1_v2)}, "edges": {}}),
            vec![conflict(
                "/nodes/n1",
                Value::Null,
                v(&n1_v2),
                Strategy::ServerWins
            )]
        )
    );
    let out = send(&mut m, "alice", 4, "o4", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        reverted(
            "INVALID",
            "nothing to undo",
            json!({"nodes": {}, "edges": {}}),
            vec![]
        )
    );
    assert_eq!(m.raw().version, 2);
}

#[test]
fn undo_of_a_delete_recreates_the_node_before_its_edges() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", node_cmd("n1", 0, 0));
    send(&mut m, "alice", 2, "o2", node_cmd("n2", 1, 1));
    send(&mut m, "alice", 3, "o3", edge_cmd("e1", "n1", "n2"));
    send(
        &mut m,
        "bob",
        4,
        "o4",
        json!({"type": "DELETE_NODE", "payload": {"id": "n2"}}),
    );
    let out = send(&mut m, "bob", 5, "o5", json!({"type": "UNDO"}));
    // Re-created with before's content, keeping createdBy (alice).
    let n2 = plain_node("n2", 1, 1, 5, "alice", "bob", 5);
    let e1 = r#"{"id":"e1","source":"n1","target":"n2","type":null,"data":{},"version":5,"createdBy":"alice","updatedBy":"bob","updatedAt":5}"#;
    assert_eq!(
        out,
        applied(
            5,
            json!({"nodes": [v(&n2)], "edges": [v(e1)], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n2": null}, "edges": {"e1": null}}}),
            vec![]
        )
    );
    assert_eq!(m.raw().edges.get("e1").map(String::as_str), Some(e1));
}

#[test]
fn a_batch_fails_whole_with_the_operation_index_and_pre_command_values() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", node_cmd("n1", 0, 0));
    let out = send(
        &mut m,
        "alice",
        2,
        "o2",
        json!({"type": "BATCH_UPDATE", "payload": {"operations": [
            node_cmd("n2", 1, 1),
            edge_cmd("e1", "n1", "n2"),
            edge_cmd("e2", "n2", "n9"),
        ]}}),
    );
    // n2 exists only in the batch's working copy: `current` shows it as null.
    assert_eq!(
        out,
        reverted(
            "NOT_FOUND",
            "operation 2: target node n9 does not exist",
            json!({"nodes": {"n2": null, "n9": null}, "edges": {}}),
            vec![]
        )
    );
    let raw = m.raw();
    assert_eq!((raw.version, raw.nodes.len(), raw.edges.len()), (1, 1, 0));

    // A batch that succeeds is one version; lists are in touch order.
    let out = send(
        &mut m,
        "alice",
        3,
        "o3",
        json!({"type": "BATCH_UPDATE", "payload": {"operations": [
            node_cmd("n2", 1, 1),
            edge_cmd("e1", "n1", "n2"),
            {"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {"a": 1}}}},
        ]}}),
    );
    let n1_before = plain_node("n1", 0, 0, 1, "alice", "alice", 1);
    let n1_after = r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"a":1},"version":2,"createdBy":"alice","updatedBy":"alice","updatedAt":3}"#;
    assert_eq!(
        out,
        applied(
            2,
            json!({"nodes": [v(&plain_node("n2", 1, 1, 2, "alice", "alice", 3)), v(n1_after)],
                   "edges": [v(&plain_edge("e1", "n1", "n2", 2, "alice", 3))],
                   "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n2": null, "n1": v(&n1_before)}, "edges": {"e1": null}}}),
            vec![]
        )
    );
}

#[test]
fn a_repeated_operation_id_returns_the_stored_outcome_and_changes_nothing() {
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", node_cmd("n1", 0, 0));
    send(
        &mut m,
        "alice",
        2,
        "o2",
        json!({"type": "DELETE_NODE", "payload": {"id": "n9"}}),
    );
    let before = m.raw();
    // Same id, even with another body and user: already decided.
    let out = send(&mut m, "bob", 3, "o1", node_cmd("n5", 0, 0));
    assert_eq!(
        out,
        Outcome::Duplicate {
            stored: json!({"status": "applied", "version": 1})
        }
    );
    let out = send(
        &mut m,
        "alice",
        4,
        "o2",
        json!({"type": "DELETE_NODE", "payload": {"id": "n9"}}),
    );
    assert_eq!(
        out,
        Outcome::Duplicate {
            stored: json!({"status": "reverted", "code": "NOT_FOUND", "message": "node n9 does not exist"})
        }
    );
    assert_eq!(m.raw(), before);
}

#[test]
fn limits_already_exists_and_the_first_command_creates_meta() {
    let settings = GraphSettings {
        max_nodes: 1,
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    // A reverted first command still creates meta (epoch, version 0).
    let out = send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "DELETE_EDGE", "payload": {"id": "e1"}}),
    );
    assert_eq!(
        out,
        reverted(
            "NOT_FOUND",
            "edge e1 does not exist",
            json!({"nodes": {}, "edges": {"e1": null}}),
            vec![]
        )
    );
    let raw = m.raw();
    assert_eq!(
        (raw.epoch.as_str(), raw.version, raw.checksum),
        (EPOCH, 0, 0)
    );

    send(&mut m, "alice", 2, "o2", node_cmd("n1", 0, 0));
    let out = send(&mut m, "alice", 3, "o3", node_cmd("n2", 0, 0));
    assert_eq!(
        out,
        reverted(
            "LIMIT_EXCEEDED",
            "the graph already has 1 nodes",
            json!({"nodes": {"n2": null}, "edges": {}}),
            vec![]
        )
    );
    let out = send(&mut m, "bob", 4, "o4", node_cmd("n1", 3, 3));
    assert_eq!(
        out,
        reverted(
            "ALREADY_EXISTS",
            "node n1 already exists",
            json!({"nodes": {"n1": v(&plain_node("n1", 0, 0, 1, "alice", "alice", 2))}, "edges": {}}),
            vec![]
        )
    );
}

#[test]
fn the_viewport_is_a_field_in_meta_and_in_the_checksum() {
    let settings = GraphSettings {
        conflicts: [("viewport".to_string(), Strategy::Manual)].into(),
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    let vp = |x: i64| json!({"type": "UPDATE_VIEWPORT", "payload": {"x": x, "y": 2, "zoom": 1.5}});
    let out = send(&mut m, "alice", 1, "o1", vp(1));
    assert_eq!(
        out,
        applied(
            1,
            json!({"nodes": [], "edges": [], "removedNodes": [], "removedEdges": [],
                   "viewport": {"x": 1, "y": 2, "zoom": 1.5},
                   "undo": {"nodes": {}, "edges": {}, "viewport": null}}),
            vec![]
        )
    );
    let text = r#"{"x":1,"y":2,"zoom":1.5}"#;
    let raw = m.raw();
    assert_eq!(raw.viewport.as_deref(), Some(text));
    assert_eq!(raw.checksum, entity_hash(&format!("v{text}")));

    // MANUAL keeps the server's value and carries both values.
    let mut stale = vp(3);
    stale["baseVersion"] = json!(0);
    let out = send(&mut m, "bob", 2, "o2", stale);
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "every change conflicted with a newer one",
            json!({"nodes": {}, "edges": {}, "viewport": v(text)}),
            vec![conflict(
                "/viewport",
                json!({"x": 3, "y": 2, "zoom": 1.5}),
                v(text),
                Strategy::Manual
            )]
        )
    );

    // DOC CHOICE: undoing the first viewport removes it again.
    let out = send(&mut m, "alice", 3, "o3", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        applied(
            2,
            json!({"nodes": [], "edges": [], "removedNodes": [], "removedEdges": [],
                   "viewport": null,
                   "undo": {"nodes": {}, "edges": {}, "viewport": v(text)}}),
            vec![]
        )
    );
    assert_eq!(m.raw().viewport, None);
}
