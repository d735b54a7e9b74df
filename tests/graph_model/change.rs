//! What a command did: the change object clients receive (with its `undo`),
//! the tracker that records before-values in first-touch order, and the ids
//! a revert's `current` shows.

use serde_json::{Value, json};

use super::entity::{Entity, Kind, parse_text};
use super::graph::Graph;

/// A change object (docs/graph.md, The change), kept structured so undo can
/// work on entity fields; `value()` renders what clients receive.
#[derive(Clone, Debug, Default)]
pub(super) struct Change {
    pub(super) nodes: Vec<Entity>,
    pub(super) edges: Vec<Entity>,
    pub(super) removed_nodes: Vec<String>,
    pub(super) removed_edges: Vec<String>,
    /// `Some` when the viewport changed; the inner `None` is a viewport an
    /// undo removed (it did not exist before the undone command).
    pub(super) viewport: Option<Option<String>>,
    pub(super) undo_nodes: Vec<(String, Option<Entity>)>,
    pub(super) undo_edges: Vec<(String, Option<Entity>)>,
    /// `Some` when the viewport was touched: its value before.
    pub(super) undo_viewport: Option<Option<String>>,
}

impl Change {
    pub(super) fn value(&self) -> Value {
        let entity_list = |list: &[Entity]| Value::Array(list.iter().map(Entity::value).collect());
        let undo_map = |list: &[(String, Option<Entity>)]| {
            Value::Object(
                list.iter()
                    .map(|(id, e)| (id.clone(), e.as_ref().map_or(Value::Null, Entity::value)))
                    .collect(),
            )
        };
        let mut undo = json!({
            "nodes": undo_map(&self.undo_nodes),
            "edges": undo_map(&self.undo_edges),
        });
        if let Some(before) = &self.undo_viewport {
            undo["viewport"] = before.as_deref().map_or(Value::Null, parse_text);
        }
        let mut change = json!({
            "nodes": entity_list(&self.nodes),
            "edges": entity_list(&self.edges),
            "removedNodes": self.removed_nodes,
            "removedEdges": self.removed_edges,
        });
        if let Some(after) = &self.viewport {
            change["viewport"] = after.as_deref().map_or(Value::Null, parse_text);
        }
        change["undo"] = undo;
        change
    }

    pub(super) fn after(&self, kind: Kind, id: &str) -> Option<&Entity> {
        let list = match kind {
            Kind::Node => &self.nodes,
            Kind::Edge => &self.edges,
        };
        list.iter().find(|e| e.id == id)
    }
}

/// Records, in first-touch order, the value of every entity (and the
/// viewport) before the command changed it, then turns that into the change.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    pub(super) nodes: Vec<(String, Option<Entity>)>,
    pub(super) edges: Vec<(String, Option<Entity>)>,
    pub(super) viewport: Option<Option<String>>,
}

impl Tracker {
    /// Call before changing an entity; only the first call per entity counts.
    pub(super) fn touch(&mut self, g: &Graph, kind: Kind, id: &str) {
        let list = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Edge => &mut self.edges,
        };
        if !list.iter().any(|(seen, _)| seen == id) {
            list.push((id.to_string(), g.get(kind, id).cloned()));
        }
    }

    pub(super) fn touch_viewport(&mut self, g: &Graph) {
        if self.viewport.is_none() {
            self.viewport = Some(g.viewport.clone());
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.edges.is_empty() && self.viewport.is_none()
    }

    /// The change, from the before-values and the final graph.
    /// DOC CHOICE (net effect): `nodes`/`edges` list the touched entities that
    /// exist at the end, `removed*` those that existed before and not at the
    /// end, all in first-touch order. An entity created and deleted by one
    /// batch is in neither list but stays in `undo` (with `null`).
    pub(super) fn finish(self, g: &Graph) -> Change {
        let mut change = Change::default();
        for (kind, touched) in [(Kind::Node, &self.nodes), (Kind::Edge, &self.edges)] {
            for (id, before) in touched {
                match g.get(kind, id) {
                    Some(now) => match kind {
                        Kind::Node => change.nodes.push(now.clone()),
                        Kind::Edge => change.edges.push(now.clone()),
                    },
                    None if before.is_some() => match kind {
                        Kind::Node => change.removed_nodes.push(id.clone()),
                        Kind::Edge => change.removed_edges.push(id.clone()),
                    },
                    None => {}
                }
            }
        }
        if let Some(before) = self.viewport {
            change.viewport = Some(g.viewport.clone());
            change.undo_viewport = Some(before);
        }
        change.undo_nodes = self.nodes;
        change.undo_edges = self.edges;
        change
    }
}

/// What a revert's `current` lists: ids whose pre-command values are shown.
#[derive(Debug, Default)]
pub(super) struct Refs {
    pub(super) nodes: Vec<String>,
    pub(super) edges: Vec<String>,
    pub(super) viewport: bool,
}

impl Refs {
    pub(super) fn node(id: &str) -> Refs {
        Refs {
            nodes: vec![id.to_string()],
            ..Refs::default()
        }
    }

    pub(super) fn edge(id: &str) -> Refs {
        Refs {
            edges: vec![id.to_string()],
            ..Refs::default()
        }
    }

    pub(super) fn add(&mut self, kind: Kind, id: &str) {
        let list = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Edge => &mut self.edges,
        };
        if !list.iter().any(|x| x == id) {
            list.push(id.to_string());
        }
    }
}
