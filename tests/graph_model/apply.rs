//! Every operation but UNDO/REDO applied to the working copy: the
//! preconditions that revert a command, and the field-by-field decision
//! under the configured strategies.

use std::collections::BTreeMap;

use graphq::graph::command::canonical;
use graphq::graph::{Conflict, GraphSettings, Op, Strategy};
use serde_json::{Map, Value};

use super::change::{Refs, Tracker};
use super::entity::{
    Entity, Field, Kind, Stamp, all_fields, parse_text, pointer_token, sorted_pairs,
};
use super::graph::Graph;

/// A precondition that failed: the command is reverted with this.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) refs: Refs,
}

/// How a concurrently changed (or not) field is decided.
pub(super) enum Decision {
    /// Apply the command's value; report a conflict when `report`.
    Apply { report: bool },
    /// Keep the server's value; always reported.
    Keep,
}

/// A patch of one entity, in the texts the script receives.
pub(super) struct Patch<'a> {
    pub(super) type_text: Option<String>,
    pub(super) position: Option<String>,
    pub(super) data: Option<DataPatch<'a>>,
}

/// The `data` of a patch.
pub(super) struct DataPatch<'a> {
    /// (key, value text), sorted by key.
    pub(super) set: Vec<(String, String)>,
    /// Keys set to null (removed), sorted.
    pub(super) unset: Vec<String>,
    /// The patch object as sent (removals as null), for conflict values.
    pub(super) object: &'a Map<String, Value>,
}

/// Everything one command needs to decide fields, besides the graph.
pub(super) struct Ctx<'a> {
    pub(super) user: &'a str,
    pub(super) now_ms: u64,
    pub(super) version: u64,
    pub(super) base_version: Option<u64>,
    pub(super) strategies: &'a BTreeMap<String, Strategy>,
    pub(super) settings: &'a GraphSettings,
}

impl Ctx<'_> {
    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            version: self.version,
            user: self.user.to_string(),
        }
    }

    /// "changed concurrently": its version is greater than the command's
    /// baseVersion and its last writer is another user; without baseVersion
    /// nothing is concurrent.
    pub(super) fn concurrent(&self, stamp: Option<&Stamp>) -> bool {
        match (self.base_version, stamp) {
            (Some(base), Some(s)) => s.version > base && s.user != self.user,
            _ => false,
        }
    }

    pub(super) fn decide(&self, concurrent: bool, strategy: Strategy) -> Decision {
        if !concurrent {
            return Decision::Apply { report: false };
        }
        match strategy {
            Strategy::LastWriteWins => Decision::Apply { report: false },
            Strategy::ClientWins => Decision::Apply { report: true },
            // MERGE on a key or a scalar field behaves like SERVER_WINS.
            // DOC CHOICE: the conflict then reports the configured strategy
            // (MERGE), not SERVER_WINS.
            Strategy::ServerWins | Strategy::Manual | Strategy::Merge => Decision::Keep,
        }
    }

    /// The configured strategy of a path; data keys without one default to MERGE.
    pub(super) fn strategy(&self, path: &str) -> Strategy {
        self.strategies
            .get(path)
            .copied()
            .unwrap_or(Strategy::Merge)
    }
}

/// Applies one operation to the working copy. `Ok` whether or not fields
/// were kept by the server; the tracker says whether anything changed.
pub(super) fn apply_op(
    c: &Ctx,
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    addressed: &mut Refs,
    op: &Op,
) -> Result<(), Failure> {
    // The texts the script receives; using them guarantees the model splices
    // the same bytes as the script.
    let script = op.script_op();
    let text = |name: &str| script.get(name).and_then(Value::as_str).map(str::to_string);
    match op {
        Op::CreateNode { id, data, .. } => {
            addressed.add(Kind::Node, id);
            if g.nodes.contains_key(id) {
                return Err(Failure {
                    code: "ALREADY_EXISTS",
                    message: format!("node {id} already exists"),
                    refs: Refs::node(id),
                });
            }
            if g.nodes.len() as u64 >= c.settings.max_nodes {
                return Err(Failure {
                    code: "LIMIT_EXCEEDED",
                    message: format!("the graph already has {} nodes", c.settings.max_nodes),
                    refs: Refs::node(id),
                });
            }
            let node = Entity {
                kind: Kind::Node,
                id: id.clone(),
                type_text: text("type").unwrap_or_else(|| "null".to_string()),
                position: Some(text("position").unwrap_or_default()),
                endpoints: None,
                data: sorted_pairs(data),
                version: c.version,
                created_by: c.user.to_string(),
                updated_by: c.user.to_string(),
                updated_at: c.now_ms,
            };
            tracker.touch(g, Kind::Node, id);
            let fv = all_fields(&node, c.stamp());
            g.put(node, fv);
            Ok(())
        }
        Op::CreateEdge {
            id,
            source,
            target,
            data,
            ..
        } => {
            addressed.add(Kind::Edge, id);
            if g.edges.contains_key(id) {
                return Err(Failure {
                    code: "ALREADY_EXISTS",
                    message: format!("edge {id} already exists"),
                    refs: Refs::edge(id),
                });
            }
            let endpoint_refs = || {
                let mut refs = Refs::default();
                refs.add(Kind::Node, source);
                refs.add(Kind::Node, target);
                refs
            };
            if !g.nodes.contains_key(source) {
                return Err(Failure {
                    code: "NOT_FOUND",
                    message: format!("source node {source} does not exist"),
                    refs: endpoint_refs(),
                });
            }
            if !g.nodes.contains_key(target) {
                return Err(Failure {
                    code: "NOT_FOUND",
                    message: format!("target node {target} does not exist"),
                    refs: endpoint_refs(),
                });
            }
            if g.edges.len() as u64 >= c.settings.max_edges {
                return Err(Failure {
                    code: "LIMIT_EXCEEDED",
                    message: format!("the graph already has {} edges", c.settings.max_edges),
                    refs: Refs::edge(id),
                });
            }
            let edge = Entity {
                kind: Kind::Edge,
                id: id.clone(),
                type_text: text("type").unwrap_or_else(|| "null".to_string()),
                position: None,
                endpoints: Some((source.clone(), target.clone())),
                data: sorted_pairs(data),
                version: c.version,
                created_by: c.user.to_string(),
                updated_by: c.user.to_string(),
                updated_at: c.now_ms,
            };
            tracker.touch(g, Kind::Edge, id);
            let fv = all_fields(&edge, c.stamp());
            g.attach(edge, fv);
            Ok(())
        }
        Op::UpdateNode { id, data, .. } | Op::UpdateEdge { id, data, .. } => {
            let kind = if matches!(op, Op::UpdateNode { .. }) {
                Kind::Node
            } else {
                Kind::Edge
            };
            addressed.add(kind, id);
            if g.get(kind, id).is_none() {
                return Err(Failure {
                    code: "NOT_FOUND",
                    message: format!("{} {id} does not exist", kind.path()),
                    refs: match kind {
                        Kind::Node => Refs::node(id),
                        Kind::Edge => Refs::edge(id),
                    },
                });
            }
            let patch = Patch {
                type_text: text("type"),
                position: text("position"),
                data: data.as_ref().map(|map| {
                    let set = map
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), canonical(v)))
                        .collect();
                    let unset = map
                        .iter()
                        .filter(|(_, v)| v.is_null())
                        .map(|(k, _)| k.clone())
                        .collect();
                    DataPatch {
                        set,
                        unset,
                        object: map,
                    }
                }),
            };
            update_entity(c, g, tracker, conflicts, kind, id, &patch);
            Ok(())
        }
        Op::DeleteNode { id } => {
            addressed.add(Kind::Node, id);
            if !g.nodes.contains_key(id) {
                return Err(Failure {
                    code: "NOT_FOUND",
                    message: format!("node {id} does not exist"),
                    refs: Refs::node(id),
                });
            }
            g.remove_node_cascading(id, tracker);
            Ok(())
        }
        Op::DeleteEdge { id } => {
            addressed.add(Kind::Edge, id);
            if !g.edges.contains_key(id) {
                return Err(Failure {
                    code: "NOT_FOUND",
                    message: format!("edge {id} does not exist"),
                    refs: Refs::edge(id),
                });
            }
            tracker.touch(g, Kind::Edge, id);
            g.remove_edge(id);
            Ok(())
        }
        Op::UpdateViewport { .. } => {
            addressed.viewport = true;
            let new_text = text("viewport").unwrap_or_default();
            let strategy = c.strategy("viewport");
            let decision = c.decide(c.concurrent(g.viewport_fv.as_ref()), strategy);
            let conflict = Conflict {
                field: "/viewport".to_string(),
                client_value: parse_text(&new_text),
                server_value: g.viewport_value(),
                strategy,
            };
            match decision {
                Decision::Apply { report } => {
                    if report {
                        conflicts.push(conflict);
                    }
                    // DOC CHOICE: setting the value it already has is still
                    // applied (a field only "loses" to a conflict), as for
                    // node and edge fields.
                    tracker.touch_viewport(g);
                    g.viewport = Some(new_text);
                    g.viewport_fv = Some(c.stamp());
                }
                Decision::Keep => conflicts.push(conflict),
            }
            Ok(())
        }
        // The parser never puts these inside a batch; nothing to do.
        Op::Batch(_) | Op::Undo | Op::Redo => Ok(()),
    }
}

/// UPDATE_NODE / UPDATE_EDGE after the existence check: field by field
/// under the strategies, in the order of docs/graph.md (Processing order).
pub(super) fn update_entity(
    c: &Ctx,
    g: &mut Graph,
    tracker: &mut Tracker,
    conflicts: &mut Vec<Conflict>,
    kind: Kind,
    id: &str,
    patch: &Patch,
) {
    let Some(old) = g.get(kind, id).cloned() else {
        return;
    };
    let old_fv = g.fv(kind, id);
    let mut new = old.clone();
    let mut new_fv = old_fv.clone();
    let mut changed = false;
    let pointer = format!("/{}/{}", kind.plural(), id);
    let stamp = c.stamp();

    // Scalar fields: type, then position (nodes only).
    let scalars = [
        (Field::Type, "type", patch.type_text.as_ref()),
        (Field::Position, "position", patch.position.as_ref()),
    ];
    for (field, name, wanted) in scalars {
        let Some(wanted) = wanted else { continue };
        if field == Field::Position && kind == Kind::Edge {
            continue;
        }
        let strategy = c.strategy(&format!("{}.{name}", kind.path()));
        let decision = c.decide(c.concurrent(old_fv.get(&field)), strategy);
        let server = match field {
            Field::Position => old.position.clone().unwrap_or_default(),
            _ => old.type_text.clone(),
        };
        let conflict = Conflict {
            field: format!("{pointer}/{name}"),
            client_value: parse_text(wanted),
            server_value: parse_text(&server),
            strategy,
        };
        match decision {
            Decision::Apply { report } => {
                if report {
                    conflicts.push(conflict);
                }
                match field {
                    Field::Position => new.position = Some(wanted.clone()),
                    _ => new.type_text = wanted.clone(),
                }
                new_fv.insert(field, stamp.clone());
                changed = true;
            }
            Decision::Keep => conflicts.push(conflict),
        }
    }

    if let Some(DataPatch { set, unset, object }) = &patch.data {
        let data_path = format!("{}.data", kind.path());
        let data_strategy = c.strategy(&data_path);
        if data_strategy == Strategy::Merge {
            // Each key is its own field: set keys (sorted), then removed keys (sorted).
            let keyed = set
                .iter()
                .map(|(k, v)| (k, Some(v)))
                .chain(unset.iter().map(|k| (k, None)));
            for (key, wanted) in keyed {
                let field = Field::Data(key.clone());
                let strategy = c.strategy(&format!("{data_path}.{key}"));
                let decision = c.decide(c.concurrent(old_fv.get(&field)), strategy);
                let conflict = Conflict {
                    field: format!("{pointer}/data/{}", pointer_token(key)),
                    client_value: wanted.map_or(Value::Null, |v| parse_text(v)),
                    // The value the decision is made against (the working copy
                    // of a batch as earlier operations left it).
                    server_value: old.data_get(key).map_or(Value::Null, |v| parse_text(v)),
                    strategy,
                };
                match decision {
                    Decision::Apply { report } => {
                        if report {
                            conflicts.push(conflict);
                        }
                        match wanted {
                            Some(v) => new.data_set(key, v),
                            None => new.data_remove(key),
                        }
                        // DOC CHOICE: removing a key is a write of that key;
                        // its version is kept so a later stale set conflicts.
                        new_fv.insert(field, stamp.clone());
                        changed = true;
                    }
                    Decision::Keep => conflicts.push(conflict),
                }
            }
        } else {
            // The whole data object is one field, concurrent when any key was.
            // DOC CHOICE: a patch `data: {}` is still that one field (applied
            // or kept like any other), although it names no key.
            let concurrent = old_fv
                .iter()
                .any(|(f, s)| matches!(f, Field::Data(_)) && c.concurrent(Some(s)));
            let decision = c.decide(concurrent, data_strategy);
            let conflict = Conflict {
                field: format!("{pointer}/data"),
                client_value: Value::Object((*object).clone()),
                server_value: old.data_value(),
                strategy: data_strategy,
            };
            match decision {
                Decision::Apply { report } => {
                    if report {
                        conflicts.push(conflict);
                    }
                    for (key, v) in set {
                        new.data_set(key, v);
                        new_fv.insert(Field::Data(key.clone()), stamp.clone());
                    }
                    for key in unset {
                        new.data_remove(key);
                        new_fv.insert(Field::Data(key.clone()), stamp.clone());
                    }
                    changed = true;
                }
                Decision::Keep => conflicts.push(conflict),
            }
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
