//! UNDO and REDO: reverting a popped change onto the working copy, field by
//! field, keeping what someone else changed since as a conflict.

use graphq::graph::{Conflict, Strategy};
use serde_json::Value;

use super::apply::Ctx;
use super::change::{Change, Tracker};
use super::entity::{Entity, Field, Kind, all_fields, parse_text, pointer_token};
use super::graph::Graph;

/// One field an undone change changed, with its three values (`None`: absent).
pub(super) struct RevertedField {
    pub(super) field: Field,
    /// JSON pointer suffix after `/nodes/ID/`.
    pub(super) suffix: String,
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
    pub(super) current: Option<String>,
}

/// Reverts change `change` onto the working copy (docs/graph.md, Undo and
/// redo). Processing order: nodes to re-create, updates (nodes, then edges),
/// edges to re-create, edges to delete, nodes to delete, then the viewport.
/// An entity's category comes from C (before/after), not from the graph now.
/// DOC CHOICE: "updates" covers node and edge updates (nodes first), and the
/// viewport comes last ("... then the viewport").
pub(super) fn revert(
    c: &Ctx,
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    change: &Change,
) {
    let recreated = |list: &[(String, Option<Entity>)], kind: Kind| -> Vec<(String, Entity)> {
        list.iter()
            .filter_map(|(id, before)| match (before, change.after(kind, id)) {
                (Some(b), None) => Some((id.clone(), b.clone())),
                _ => None,
            })
            .collect()
    };
    let updated =
        |list: &[(String, Option<Entity>)], kind: Kind| -> Vec<(String, Entity, Entity)> {
            list.iter()
                .filter_map(|(id, before)| match (before, change.after(kind, id)) {
                    (Some(b), Some(a)) => Some((id.clone(), b.clone(), a.clone())),
                    _ => None,
                })
                .collect()
        };
    let created =
        |list: &[(String, Option<Entity>)], kind: Kind| -> Vec<(String, Option<Entity>)> {
            list.iter()
                .filter(|(_, before)| before.is_none())
                .map(|(id, _)| (id.clone(), change.after(kind, id).cloned()))
                .collect()
        };

    for (id, before) in recreated(&change.undo_nodes, Kind::Node) {
        revert_deletion(c, g, tracker, conflicts, Kind::Node, &id, &before);
    }
    for (id, before, after) in updated(&change.undo_nodes, Kind::Node) {
        revert_update(c, g, tracker, conflicts, Kind::Node, &id, &before, &after);
    }
    for (id, before, after) in updated(&change.undo_edges, Kind::Edge) {
        revert_update(c, g, tracker, conflicts, Kind::Edge, &id, &before, &after);
    }
    for (id, before) in recreated(&change.undo_edges, Kind::Edge) {
        revert_deletion(c, g, tracker, conflicts, Kind::Edge, &id, &before);
    }
    for (id, after) in created(&change.undo_edges, Kind::Edge) {
        revert_creation(g, tracker, conflicts, Kind::Edge, &id, after.as_ref());
    }
    for (id, after) in created(&change.undo_nodes, Kind::Node) {
        revert_creation(g, tracker, conflicts, Kind::Node, &id, after.as_ref());
    }

    if let Some(before) = &change.undo_viewport {
        let after = change.viewport.clone().flatten();
        let current = g.viewport.clone();
        // Like any field, the viewport is reverted only when C changed it.
        if after == *before {
            return;
        }
        if current == after {
            // DOC CHOICE: setting back to "did not exist" removes the viewport,
            // and that write is stamped like any other (as a removed data key).
            tracker.touch_viewport(g);
            g.viewport = before.clone();
            g.viewport_fv = Some(c.stamp());
        } else if current != *before {
            conflicts.push(Conflict {
                field: "/viewport".to_string(),
                client_value: before.as_deref().map_or(Value::Null, parse_text),
                server_value: g.viewport_value(),
                strategy: Strategy::ServerWins,
            });
        }
    }
}

/// A whole-entity revert conflict: the newer value by someone else is kept.
pub(super) fn entity_conflict(kind: Kind, id: &str, wanted: Value, server: Value) -> Conflict {
    Conflict {
        field: format!("/{}/{}", kind.plural(), id),
        client_value: wanted,
        server_value: server,
        strategy: Strategy::ServerWins,
    }
}

/// "deleted by C": re-create with before's content when absent now.
pub(super) fn revert_deletion(
    c: &Ctx,
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    kind: Kind,
    id: &str,
    before: &Entity,
) {
    if let Some(current) = g.get(kind, id) {
        conflicts.push(entity_conflict(kind, id, before.value(), current.value()));
        return;
    }
    if let Some((s, t)) = &before.endpoints
        && (!g.nodes.contains_key(s) || !g.nodes.contains_key(t))
    {
        conflicts.push(entity_conflict(kind, id, before.value(), Value::Null));
        return;
    }
    // DOC CHOICE: before's content in before's own data-key order, keeping
    // createdBy; version, updatedBy and updatedAt are this revert's. The
    // node/edge limits are not checked (only CREATE_* lists LIMIT_EXCEEDED).
    let entity = Entity {
        version: c.version,
        updated_by: c.user.to_string(),
        updated_at: c.now_ms,
        ..before.clone()
    };
    tracker.touch(g, kind, id);
    let fv = all_fields(&entity, c.stamp());
    match kind {
        Kind::Node => g.put(entity, fv),
        Kind::Edge => g.attach(entity, fv),
    }
}

/// "created by C": delete it when it still has the content C gave it.
pub(super) fn revert_creation(
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    kind: Kind,
    id: &str,
    after: Option<&Entity>,
) {
    // An entity C created and deleted again (no before, no after) left no
    // trace to revert, whatever happened to its id since.
    let Some(after) = after else {
        return;
    };
    let Some(current) = g.get(kind, id) else {
        return;
    };
    if after.same_content(current) {
        match kind {
            Kind::Node => g.remove_node_cascading(id, tracker),
            Kind::Edge => {
                tracker.touch(g, kind, id);
                g.remove_edge(id);
            }
        }
    } else {
        conflicts.push(entity_conflict(kind, id, Value::Null, current.value()));
    }
}

/// "updated by C": each field C changed goes back to before when it still
/// has C's value.
#[allow(clippy::too_many_arguments)]
pub(super) fn revert_update(
    c: &Ctx,
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    kind: Kind,
    id: &str,
    before: &Entity,
    after: &Entity,
) {
    let Some(current) = g.get(kind, id).cloned() else {
        conflicts.push(entity_conflict(kind, id, before.value(), Value::Null));
        return;
    };
    let pointer = format!("/{}/{}", kind.plural(), id);
    let stamp = c.stamp();
    let mut new = current.clone();
    let mut new_fv = g.fv(kind, id);
    let mut changed = false;
    let text_value = |t: Option<&String>| t.map_or(Value::Null, |v| parse_text(v));

    // Every field C changed: type, position, data keys of before, then new
    // keys of after.
    let mut fields: Vec<RevertedField> = Vec::new();
    if before.type_text != after.type_text {
        fields.push(RevertedField {
            field: Field::Type,
            suffix: "type".into(),
            before: Some(before.type_text.clone()),
            after: Some(after.type_text.clone()),
            current: Some(current.type_text.clone()),
        });
    }
    // DOC CHOICE: endpoints are not a revertible field (only type, position,
    // data are listed), even if a batch re-created an edge with new ones.
    if kind == Kind::Node && before.position != after.position {
        fields.push(RevertedField {
            field: Field::Position,
            suffix: "position".into(),
            before: before.position.clone(),
            after: after.position.clone(),
            current: current.position.clone(),
        });
    }
    let before_keys = before.data.iter().map(|(k, _)| k.clone());
    let new_keys = after
        .data
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| before.data_get(k).is_none());
    for key in before_keys.chain(new_keys) {
        let (b, a) = (
            before.data_get(&key).cloned(),
            after.data_get(&key).cloned(),
        );
        if b != a {
            fields.push(RevertedField {
                suffix: format!("data/{}", pointer_token(&key)),
                current: current.data_get(&key).cloned(),
                field: Field::Data(key),
                before: b,
                after: a,
            });
        }
    }

    for f in fields {
        if f.current == f.after {
            // "a data key absent before is removed; one absent after is appended"
            match (&f.field, &f.before) {
                (Field::Type, Some(t)) => new.type_text = t.clone(),
                (Field::Position, Some(p)) => new.position = Some(p.clone()),
                (Field::Data(key), Some(v)) => new.data_set(key, v),
                (Field::Data(key), None) => new.data_remove(key),
                // Type and position always exist; nothing else to set.
                _ => {}
            }
            new_fv.insert(f.field, stamp.clone());
            changed = true;
        } else if f.current != f.before {
            conflicts.push(Conflict {
                field: format!("{pointer}/{}", f.suffix),
                client_value: text_value(f.before.as_ref()),
                server_value: text_value(f.current.as_ref()),
                strategy: Strategy::ServerWins,
            });
        }
    }

    if changed {
        tracker.touch(g, kind, id);
        new.version = c.version;
        new.updated_by = c.user.to_string();
        new.updated_at = c.now_ms;
        g.put(new, new_fv);
    }
}
