//! The graph proper: entities, adjacency in attach order and field versions,
//! cloned as the working copy of one command.

use std::collections::BTreeMap;

use serde_json::Value;

use super::change::Tracker;
use super::entity::{Entity, FieldVersions, Kind, Stamp, parse_text};

/// The graph proper: what a command reads and writes. Cloned as the working
/// copy of a command so that a reverted command (or batch) changes nothing.
#[derive(Clone, Debug, Default)]
pub(super) struct Graph {
    pub(super) nodes: BTreeMap<String, Entity>,
    pub(super) edges: BTreeMap<String, Entity>,
    /// node id → ids of edges touching it, in attach order.
    pub(super) adj: BTreeMap<String, Vec<String>>,
    pub(super) node_fv: BTreeMap<String, FieldVersions>,
    pub(super) edge_fv: BTreeMap<String, FieldVersions>,
    pub(super) viewport: Option<String>,
    pub(super) viewport_fv: Option<Stamp>,
}

impl Graph {
    pub(super) fn entities(&self, kind: Kind) -> &BTreeMap<String, Entity> {
        match kind {
            Kind::Node => &self.nodes,
            Kind::Edge => &self.edges,
        }
    }

    pub(super) fn get(&self, kind: Kind, id: &str) -> Option<&Entity> {
        self.entities(kind).get(id)
    }

    pub(super) fn fv(&self, kind: Kind, id: &str) -> FieldVersions {
        let map = match kind {
            Kind::Node => &self.node_fv,
            Kind::Edge => &self.edge_fv,
        };
        map.get(id).cloned().unwrap_or_default()
    }

    /// Stores an entity and its field versions (create or update).
    pub(super) fn put(&mut self, entity: Entity, fv: FieldVersions) {
        let id = entity.id.clone();
        match entity.kind {
            Kind::Node => {
                self.nodes.insert(id.clone(), entity);
                self.node_fv.insert(id, fv);
            }
            Kind::Edge => {
                self.edges.insert(id.clone(), entity);
                self.edge_fv.insert(id, fv);
            }
        }
    }

    /// Stores a new edge and appends it to its endpoints' adjacency.
    /// DOC CHOICE: a self-loop (source == target) is listed once, so a cascade
    /// never names the same edge twice.
    pub(super) fn attach(&mut self, edge: Entity, fv: FieldVersions) {
        if let Some((s, t)) = edge.endpoints.clone() {
            self.adj.entry(s.clone()).or_default().push(edge.id.clone());
            if t != s {
                self.adj.entry(t).or_default().push(edge.id.clone());
            }
        }
        self.put(edge, fv);
    }

    /// Removes an edge and its id from its endpoints' adjacency.
    pub(super) fn remove_edge(&mut self, id: &str) {
        if let Some(edge) = self.edges.remove(id)
            && let Some((s, t)) = &edge.endpoints
        {
            for end in [s, t] {
                if let Some(list) = self.adj.get_mut(end) {
                    list.retain(|e| e != id);
                }
            }
        }
        self.edge_fv.remove(id);
    }

    /// Edges touching a node, in attach order.
    pub(super) fn edges_of(&self, node: &str) -> Vec<String> {
        self.adj.get(node).cloned().unwrap_or_default()
    }

    /// Removes a node and, first, every edge touching it (recording each as
    /// touched so it lands in the change), in attach order.
    pub(super) fn remove_node_cascading(&mut self, id: &str, tracker: &mut Tracker) {
        tracker.touch(self, Kind::Node, id);
        for edge in self.edges_of(id) {
            tracker.touch(self, Kind::Edge, &edge);
            self.remove_edge(&edge);
        }
        self.nodes.remove(id);
        self.node_fv.remove(id);
        self.adj.remove(id);
    }

    /// The stored value of an entity as JSON, `null` when absent.
    pub(super) fn value_of(&self, kind: Kind, id: &str) -> Value {
        self.get(kind, id).map_or(Value::Null, Entity::value)
    }

    pub(super) fn viewport_value(&self) -> Value {
        self.viewport.as_deref().map_or(Value::Null, parse_text)
    }
}
