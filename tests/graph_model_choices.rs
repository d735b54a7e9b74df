//! Readings of docs/graph.md where the text leaves room (see the DOC CHOICE
//! comments in tests/graph_model), run against the reference model. Each
//! example pins one reading down; like `tests/graph_model_examples.rs`, every
//! expected value was worked out by hand.

mod graph_model;

use graph_model::Model;
use graph_model::examples::{applied, conflict, node_cmd, plain_node, reverted, send, v};
use graphq::graph::{GraphSettings, Outcome, Strategy};
use serde_json::{Value, json};

#[test]
fn choice_a_batch_reverted_by_a_precondition_still_reports_earlier_conflicts() {
    let mut m = Model::new(GraphSettings::default());
    send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"k": 1}}}}),
    );
    // "conflicts accumulate across operations": operation 0 loses `k`, then
    // operation 1 fails the batch.
    let out = send(
        &mut m,
        "bob",
        2,
        "o2",
        json!({"type": "BATCH_UPDATE", "baseVersion": 0, "payload": {"operations": [
            {"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {"k": 2}}}},
            {"type": "DELETE_NODE", "payload": {"id": "n9"}},
        ]}}),
    );
    assert_eq!(
        out,
        reverted(
            "NOT_FOUND",
            "operation 1: node n9 does not exist",
            json!({"nodes": {"n9": null}, "edges": {}}),
            vec![conflict(
                "/nodes/n1/data/k",
                json!(2),
                json!(1),
                Strategy::Merge
            )]
        )
    );
}

#[test]
fn choice_a_batch_that_creates_and_deletes_a_node_is_applied_and_undo_remembers_it() {
    let mut m = Model::new(GraphSettings::default());
    // No field lost, so it is not a CONFLICT; n1 was touched, so undo has it.
    let out = send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "BATCH_UPDATE", "payload": {"operations": [
            node_cmd("n1", 0, 0),
            {"type": "DELETE_NODE", "payload": {"id": "n1"}},
        ]}}),
    );
    assert_eq!(
        out,
        applied(
            1,
            json!({"nodes": [], "edges": [], "removedNodes": [], "removedEdges": [],
                   "undo": {"nodes": {"n1": null}, "edges": {}}}),
            vec![]
        )
    );
    // Bob creates n1. Alice's batch left no trace of n1 (no before, no
    // after), so undoing it finds nothing to revert and leaves bob's n1 alone:
    // reverted, without a conflict.
    send(&mut m, "bob", 2, "o2", node_cmd("n1", 0, 0));
    let bobs = plain_node("n1", 0, 0, 2, "bob", "bob", 2);
    let out = send(&mut m, "alice", 3, "o3", json!({"type": "UNDO"}));
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "the graph no longer shows that change",
            json!({"nodes": {"n1": v(&bobs)}, "edges": {}}),
            vec![]
        )
    );
}

#[test]
fn choice_setting_the_viewport_it_already_has_is_applied() {
    let mut m = Model::new(GraphSettings::default());
    let vp = json!({"type": "UPDATE_VIEWPORT", "payload": {"x": 1, "y": 2, "zoom": 1}});
    send(&mut m, "alice", 1, "o1", vp.clone());
    let out = send(&mut m, "alice", 2, "o2", vp);
    assert_eq!(
        out,
        applied(
            2,
            json!({"nodes": [], "edges": [], "removedNodes": [], "removedEdges": [],
                   "viewport": {"x": 1, "y": 2, "zoom": 1},
                   "undo": {"nodes": {}, "edges": {}, "viewport": {"x": 1, "y": 2, "zoom": 1}}}),
            vec![]
        )
    );
}

#[test]
fn choice_a_viewport_removed_by_undo_keeps_a_field_version() {
    let settings = GraphSettings {
        conflicts: [("viewport".to_string(), Strategy::ServerWins)].into(),
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    send(
        &mut m,
        "bob",
        1,
        "o1",
        json!({"type": "UPDATE_VIEWPORT", "payload": {"x": 1, "y": 1, "zoom": 1}}),
    );
    // v2: bob's undo removes the viewport; that write is bob's at version 2.
    send(&mut m, "bob", 2, "o2", json!({"type": "UNDO"}));
    let out = send(
        &mut m,
        "alice",
        3,
        "o3",
        json!({"type": "UPDATE_VIEWPORT", "baseVersion": 1, "payload": {"x": 5, "y": 5, "zoom": 1}}),
    );
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "every change conflicted with a newer one",
            json!({"nodes": {}, "edges": {}, "viewport": null}),
            vec![conflict(
                "/viewport",
                json!({"x": 5, "y": 5, "zoom": 1}),
                Value::Null,
                Strategy::ServerWins
            )]
        )
    );
}

#[test]
fn choice_conflict_fields_are_escaped_json_pointers() {
    let mut m = Model::new(GraphSettings::default());
    send(
        &mut m,
        "alice",
        1,
        "o1",
        json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"a/b~c": 1}}}}),
    );
    let out = send(
        &mut m,
        "bob",
        2,
        "o2",
        json!({"type": "UPDATE_NODE", "baseVersion": 0, "payload": {"id": "n1", "patch": {"data": {"a/b~c": 2}}}}),
    );
    let Outcome::Reverted { conflicts, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(conflicts[0].field, "/nodes/n1/data/a~1b~0c");
}

#[test]
fn choice_an_empty_data_patch_is_one_field_unless_data_merges() {
    let n1 = || json!({"type": "CREATE_NODE", "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}, "data": {"k": 1}}}});
    let empty = |base: Option<u64>| {
        let mut c = json!({"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {}}}});
        if let Some(b) = base {
            c["baseVersion"] = json!(b);
        }
        c
    };
    // MERGE (default): no key, no field: "every field loses" holds vacuously.
    let mut m = Model::new(GraphSettings::default());
    send(&mut m, "alice", 1, "o1", n1());
    let out = send(&mut m, "alice", 2, "o2", empty(None));
    assert!(
        matches!(&out, Outcome::Reverted { code, conflicts, .. } if code == "CONFLICT" && conflicts.is_empty()),
        "{out:?}"
    );

    // Another strategy: the data object is one field, even when empty.
    let settings = GraphSettings {
        conflicts: [("node.data".to_string(), Strategy::ServerWins)].into(),
        ..GraphSettings::default()
    };
    let mut m = Model::new(settings);
    send(&mut m, "alice", 1, "o1", n1());
    let out = send(&mut m, "bob", 2, "o2", empty(Some(0)));
    assert_eq!(
        out,
        reverted(
            "CONFLICT",
            "every change conflicted with a newer one",
            json!({"nodes": {"n1": v(r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"k":1},"version":1,"createdBy":"alice","updatedBy":"alice","updatedAt":1}"#)}, "edges": {}}),
            vec![conflict(
                "/nodes/n1/data",
                json!({}),
                json!({"k": 1}),
                Strategy::ServerWins
            )]
        )
    );
    let out = send(&mut m, "alice", 3, "o3", empty(Some(0)));
    let Outcome::Applied {
        version, change, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(version, 2);
    assert_eq!(
        change["nodes"],
        json!([v(
            r#"{"id":"n1","type":null,"position":{"x":0,"y":0},"data":{"k":1},"version":2,"createdBy":"alice","updatedBy":"alice","updatedAt":3}"#
        )])
    );
}
