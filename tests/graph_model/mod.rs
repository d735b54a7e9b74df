//! A plain-Rust reference model of ONE graph in the graph store, written from
//! docs/graph.md alone (not from `lua/apply_command.lua`), so the property
//! test in `tests/graph_props.rs` can compare the two on every outcome and
//! every stored byte.
//!
//! The model keeps exactly what the script stores: entities whose JSON text
//! is a pure function of their fields (so `raw()` renders the stored bytes),
//! adjacency lists in attach order, per-field versions, the viewport text,
//! version, epoch, the outcomes of decided operations, and per-user undo/redo
//! stacks of changes. It never talks to Redis.
//!
//! Where the doc leaves room, the model takes its most literal reading; each
//! such choice is marked `DOC CHOICE` below.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use graphq::graph::command::canonical;
use graphq::graph::{
    ApplyContext, Command, Conflict, GraphSettings, Op, Outcome, RawGraph, Strategy, checksum_of,
};
use serde_json::{Map, Value, json};

/// "the user's last 100 changes" (docs/graph.md, What is stored).
const STACK_CAP: usize = 100;
const CONFLICT_MESSAGE: &str = "every change conflicted with a newer one";

/// Nodes and edges share most rules; `Kind` says which one an entity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Node,
    Edge,
}

impl Kind {
    /// Prefix of strategy paths (`node.type`, `edge.data.KEY`).
    fn path(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Edge => "edge",
        }
    }

    /// First segment of JSON pointers and of `current` / change keys.
    fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Edge => "edges",
        }
    }
}

/// One stored node or edge. Every user value is kept as the canonical JSON
/// text the Rust side produced, because the script splices texts verbatim.
#[derive(Clone, Debug, PartialEq)]
struct Entity {
    kind: Kind,
    id: String,
    /// `"text"` or `null`.
    type_text: String,
    /// Nodes only: `{"x":..,"y":..}`.
    position: Option<String>,
    /// Edges only: (source, target).
    endpoints: Option<(String, String)>,
    /// (unquoted key, value text) in stored order.
    data: Vec<(String, String)>,
    version: u64,
    created_by: String,
    updated_by: String,
    updated_at: u64,
}

impl Entity {
    /// The stored bytes, in the fixed layout of docs/graph.md (Entity JSON).
    fn json(&self) -> String {
        let data = self
            .data
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), v))
            .collect::<Vec<_>>()
            .join(",");
        let middle = match (&self.position, &self.endpoints) {
            (Some(pos), _) => format!("\"type\":{},\"position\":{}", self.type_text, pos),
            (None, Some((s, t))) => format!(
                "\"source\":\"{s}\",\"target\":\"{t}\",\"type\":{}",
                self.type_text
            ),
            // Unreachable by construction: every entity is built as one or the other.
            (None, None) => format!("\"type\":{}", self.type_text),
        };
        format!(
            "{{\"id\":\"{}\",{middle},\"data\":{{{data}}},\"version\":{},\"createdBy\":\"{}\",\"updatedBy\":\"{}\",\"updatedAt\":{}}}",
            self.id, self.version, self.created_by, self.updated_by, self.updated_at
        )
    }

    fn value(&self) -> Value {
        parse_text(&self.json())
    }

    fn data_get(&self, key: &str) -> Option<&String> {
        self.data.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces a key in place, or appends it when new (docs: "a replaced key
    /// keeps its place ... a new key is appended").
    fn data_set(&mut self, key: &str, text: &str) {
        match self.data.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = text.to_string(),
            None => self.data.push((key.to_string(), text.to_string())),
        }
    }

    fn data_remove(&mut self, key: &str) {
        self.data.retain(|(k, _)| k != key);
    }

    fn data_value(&self) -> Value {
        Value::Object(
            self.data
                .iter()
                .map(|(k, v)| (k.clone(), parse_text(v)))
                .collect::<Map<String, Value>>(),
        )
    }

    /// "equals after in content (type, position or endpoints, data)".
    /// DOC CHOICE: data is compared as a JSON object (key order ignored).
    fn same_content(&self, other: &Entity) -> bool {
        let as_map = |e: &Entity| e.data.iter().cloned().collect::<BTreeMap<String, String>>();
        self.type_text == other.type_text
            && self.position == other.position
            && self.endpoints == other.endpoints
            && as_map(self) == as_map(other)
    }
}

/// A field of an entity that has its own version (docs: `fv`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Type,
    Position,
    Data(String),
}

/// Who last set a field, at which graph version.
#[derive(Clone, Debug, PartialEq)]
struct Stamp {
    version: u64,
    user: String,
}

type FieldVersions = BTreeMap<Field, Stamp>;

/// The graph proper: what a command reads and writes. Cloned as the working
/// copy of a command so that a reverted command (or batch) changes nothing.
#[derive(Clone, Debug, Default)]
struct Graph {
    nodes: BTreeMap<String, Entity>,
    edges: BTreeMap<String, Entity>,
    /// node id → ids of edges touching it, in attach order.
    adj: BTreeMap<String, Vec<String>>,
    node_fv: BTreeMap<String, FieldVersions>,
    edge_fv: BTreeMap<String, FieldVersions>,
    viewport: Option<String>,
    viewport_fv: Option<Stamp>,
}

impl Graph {
    fn entities(&self, kind: Kind) -> &BTreeMap<String, Entity> {
        match kind {
            Kind::Node => &self.nodes,
            Kind::Edge => &self.edges,
        }
    }

    fn get(&self, kind: Kind, id: &str) -> Option<&Entity> {
        self.entities(kind).get(id)
    }

    fn fv(&self, kind: Kind, id: &str) -> FieldVersions {
        let map = match kind {
            Kind::Node => &self.node_fv,
            Kind::Edge => &self.edge_fv,
        };
        map.get(id).cloned().unwrap_or_default()
    }

    /// Stores an entity and its field versions (create or update).
    fn put(&mut self, entity: Entity, fv: FieldVersions) {
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
    fn attach(&mut self, edge: Entity, fv: FieldVersions) {
        if let Some((s, t)) = edge.endpoints.clone() {
            self.adj.entry(s.clone()).or_default().push(edge.id.clone());
            if t != s {
                self.adj.entry(t).or_default().push(edge.id.clone());
            }
        }
        self.put(edge, fv);
    }

    /// Removes an edge and its id from its endpoints' adjacency.
    fn remove_edge(&mut self, id: &str) {
        if let Some(edge) = self.edges.remove(id) {
            if let Some((s, t)) = &edge.endpoints {
                for end in [s, t] {
                    if let Some(list) = self.adj.get_mut(end) {
                        list.retain(|e| e != id);
                    }
                }
            }
        }
        self.edge_fv.remove(id);
    }

    /// Edges touching a node, in attach order.
    fn edges_of(&self, node: &str) -> Vec<String> {
        self.adj.get(node).cloned().unwrap_or_default()
    }

    /// Removes a node and, first, every edge touching it (recording each as
    /// touched so it lands in the change), in attach order.
    fn remove_node_cascading(&mut self, id: &str, tracker: &mut Tracker) {
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
    fn value_of(&self, kind: Kind, id: &str) -> Value {
        self.get(kind, id).map_or(Value::Null, Entity::value)
    }

    fn viewport_value(&self) -> Value {
        self.viewport.as_deref().map_or(Value::Null, parse_text)
    }
}

/// A change object (docs/graph.md, The change), kept structured so undo can
/// work on entity fields; `value()` renders what clients receive.
#[derive(Clone, Debug, Default)]
struct Change {
    nodes: Vec<Entity>,
    edges: Vec<Entity>,
    removed_nodes: Vec<String>,
    removed_edges: Vec<String>,
    /// `Some` when the viewport changed; the inner `None` is a viewport an
    /// undo removed (it did not exist before the undone command).
    viewport: Option<Option<String>>,
    undo_nodes: Vec<(String, Option<Entity>)>,
    undo_edges: Vec<(String, Option<Entity>)>,
    /// `Some` when the viewport was touched: its value before.
    undo_viewport: Option<Option<String>>,
}

impl Change {
    fn value(&self) -> Value {
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

    fn after(&self, kind: Kind, id: &str) -> Option<&Entity> {
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
struct Tracker {
    nodes: Vec<(String, Option<Entity>)>,
    edges: Vec<(String, Option<Entity>)>,
    viewport: Option<Option<String>>,
}

impl Tracker {
    /// Call before changing an entity; only the first call per entity counts.
    fn touch(&mut self, g: &Graph, kind: Kind, id: &str) {
        let list = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Edge => &mut self.edges,
        };
        if !list.iter().any(|(seen, _)| seen == id) {
            list.push((id.to_string(), g.get(kind, id).cloned()));
        }
    }

    fn touch_viewport(&mut self, g: &Graph) {
        if self.viewport.is_none() {
            self.viewport = Some(g.viewport.clone());
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.edges.is_empty() && self.viewport.is_none()
    }

    /// The change, from the before-values and the final graph.
    /// DOC CHOICE (net effect): `nodes`/`edges` list the touched entities that
    /// exist at the end, `removed*` those that existed before and not at the
    /// end, all in first-touch order. An entity created and deleted by one
    /// batch is in neither list but stays in `undo` (with `null`).
    fn finish(self, g: &Graph) -> Change {
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
struct Refs {
    nodes: Vec<String>,
    edges: Vec<String>,
    viewport: bool,
}

impl Refs {
    fn node(id: &str) -> Refs {
        Refs {
            nodes: vec![id.to_string()],
            ..Refs::default()
        }
    }

    fn edge(id: &str) -> Refs {
        Refs {
            edges: vec![id.to_string()],
            ..Refs::default()
        }
    }

    fn add(&mut self, kind: Kind, id: &str) {
        let list = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Edge => &mut self.edges,
        };
        if !list.iter().any(|x| x == id) {
            list.push(id.to_string());
        }
    }
}

/// A precondition that failed: the command is reverted with this.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
    refs: Refs,
}

/// How a concurrently changed (or not) field is decided.
enum Decision {
    /// Apply the command's value; report a conflict when `report`.
    Apply { report: bool },
    /// Keep the server's value; always reported.
    Keep,
}

/// A patch of one entity, in the texts the script receives.
struct Patch<'a> {
    type_text: Option<String>,
    position: Option<String>,
    data: Option<DataPatch<'a>>,
}

/// The `data` of a patch.
struct DataPatch<'a> {
    /// (key, value text), sorted by key.
    set: Vec<(String, String)>,
    /// Keys set to null (removed), sorted.
    unset: Vec<String>,
    /// The patch object as sent (removals as null), for conflict values.
    object: &'a Map<String, Value>,
}

/// One field an undone change changed, with its three values (`None`: absent).
struct RevertedField {
    field: Field,
    /// JSON pointer suffix after `/nodes/ID/`.
    suffix: String,
    before: Option<String>,
    after: Option<String>,
    current: Option<String>,
}

/// Everything one command needs to decide fields, besides the graph.
struct Ctx<'a> {
    user: &'a str,
    now_ms: u64,
    version: u64,
    base_version: Option<u64>,
    strategies: &'a BTreeMap<String, Strategy>,
    settings: &'a GraphSettings,
}

impl Ctx<'_> {
    fn stamp(&self) -> Stamp {
        Stamp {
            version: self.version,
            user: self.user.to_string(),
        }
    }

    /// "changed concurrently": its version is greater than the command's
    /// baseVersion and its last writer is another user; without baseVersion
    /// nothing is concurrent.
    fn concurrent(&self, stamp: Option<&Stamp>) -> bool {
        match (self.base_version, stamp) {
            (Some(base), Some(s)) => s.version > base && s.user != self.user,
            _ => false,
        }
    }

    fn decide(&self, concurrent: bool, strategy: Strategy) -> Decision {
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
    fn strategy(&self, path: &str) -> Strategy {
        self.strategies
            .get(path)
            .copied()
            .unwrap_or(Strategy::Merge)
    }
}

/// The reference model of one graph.
pub struct Model {
    settings: GraphSettings,
    strategies: BTreeMap<String, Strategy>,
    /// `None` until the first command creates `meta`.
    epoch: Option<String>,
    version: u64,
    graph: Graph,
    /// operationId → stored outcome (`{"status":"applied","version":V}` or
    /// `{"status":"reverted","code":..,"message":..}`).
    decided: HashMap<String, Value>,
    /// user → changes, newest first.
    undo: HashMap<String, VecDeque<Change>>,
    redo: HashMap<String, VecDeque<Change>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Stack {
    Undo,
    Redo,
}

impl Model {
    pub fn new(settings: GraphSettings) -> Model {
        Model {
            strategies: settings.strategies(),
            settings,
            epoch: None,
            version: 0,
            graph: Graph::default(),
            decided: HashMap::new(),
            undo: HashMap::new(),
            redo: HashMap::new(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Depth of a user's undo stack (for tests that want to aim UNDO/REDO).
    pub fn undo_depth(&self, user: &str) -> usize {
        self.undo.get(user).map_or(0, VecDeque::len)
    }

    pub fn redo_depth(&self, user: &str) -> usize {
        self.redo.get(user).map_or(0, VecDeque::len)
    }

    /// The stored bytes, as `GraphStore::raw` reads them.
    pub fn raw(&self) -> RawGraph {
        let mut raw = RawGraph {
            epoch: self.epoch.clone().unwrap_or_default(),
            version: self.version,
            checksum: 0,
            nodes: self
                .graph
                .nodes
                .iter()
                .map(|(id, e)| (id.clone(), e.json()))
                .collect(),
            edges: self
                .graph
                .edges
                .iter()
                .map(|(id, e)| (id.clone(), e.json()))
                .collect(),
            viewport: self.graph.viewport.clone(),
        };
        raw.checksum = checksum_of(&raw);
        raw
    }

    /// Applies one command the way `apply_command.lua` must.
    pub fn apply(&mut self, ctx: &ApplyContext, cmd: &Command) -> Outcome {
        // DOC CHOICE: "The first command to a graph without meta creates it"
        // — even when that command is then reverted.
        if self.epoch.is_none() {
            self.epoch = Some(ctx.new_epoch.clone());
        }
        if let Some(stored) = self.decided.get(&cmd.operation_id) {
            return Outcome::Duplicate {
                stored: stored.clone(),
            };
        }
        let outcome = match &cmd.op {
            Op::Undo => self.undo_redo(ctx, Stack::Undo),
            Op::Redo => self.undo_redo(ctx, Stack::Redo),
            _ => self.apply_ops(ctx, cmd),
        };
        let stored = match &outcome {
            Outcome::Applied { version, .. } => json!({"status": "applied", "version": version}),
            Outcome::Reverted { code, message, .. } => {
                json!({"status": "reverted", "code": code, "message": message})
            }
            Outcome::Duplicate { stored } => stored.clone(),
        };
        self.decided.insert(cmd.operation_id.clone(), stored);
        outcome
    }

    /// `current` of a revert: the values as stored before the command.
    fn current(&self, refs: &Refs) -> Value {
        let map = |kind: Kind, ids: &[String]| {
            Value::Object(
                ids.iter()
                    .map(|id| (id.clone(), self.graph.value_of(kind, id)))
                    .collect(),
            )
        };
        let mut current = json!({
            "nodes": map(Kind::Node, &refs.nodes),
            "edges": map(Kind::Edge, &refs.edges),
        });
        if refs.viewport {
            current["viewport"] = self.graph.viewport_value();
        }
        current
    }

    fn ctx<'a>(&'a self, ctx: &'a ApplyContext, base_version: Option<u64>) -> Ctx<'a> {
        Ctx {
            user: &ctx.user_id,
            now_ms: ctx.now_ms,
            version: self.version + 1,
            base_version,
            strategies: &self.strategies,
            settings: &self.settings,
        }
    }

    /// Every command but UNDO/REDO: its operations in order on one working
    /// copy, one version.
    fn apply_ops(&mut self, actx: &ApplyContext, cmd: &Command) -> Outcome {
        let (ops, is_batch): (Vec<&Op>, bool) = match &cmd.op {
            Op::Batch(ops) => (ops.iter().collect(), true),
            op => (vec![op], false),
        };
        let c = self.ctx(actx, cmd.base_version);
        let mut work = self.graph.clone();
        let mut tracker = Tracker::default();
        let mut conflicts = Vec::new();
        let mut addressed = Refs::default();
        for (i, op) in ops.iter().enumerate() {
            if let Err(failure) = apply_op(
                &c,
                &mut work,
                &mut tracker,
                &mut conflicts,
                &mut addressed,
                op,
            ) {
                let message = if is_batch {
                    format!("operation {i}: {}", failure.message)
                } else {
                    failure.message
                };
                // DOC CHOICE: "conflicts accumulate across operations" has no
                // exception, so a batch reverted by operation I still reports
                // the conflicts operations 0..I ran into.
                return Outcome::Reverted {
                    code: failure.code.to_string(),
                    message,
                    current: self.current(&failure.refs),
                    conflicts,
                };
            }
        }
        // DOC CHOICE: "When every field of a command loses" is read as "the
        // command changed nothing" (vacuously true for a patch with no field).
        if tracker.is_empty() {
            return Outcome::Reverted {
                code: "CONFLICT".to_string(),
                message: CONFLICT_MESSAGE.to_string(),
                current: self.current(&addressed),
                conflicts,
            };
        }
        let version = c.version;
        let user = c.user.to_string();
        let change = tracker.finish(&work);
        self.graph = work;
        self.version = version;
        let value = change.value();
        push_capped(self.undo.entry(user.clone()).or_default(), change);
        // "An applied command pushes its change onto the undo stack and
        // clears the redo stack."
        self.redo.remove(&user);
        Outcome::Applied {
            version,
            change: value,
            conflicts,
        }
    }

    /// UNDO / REDO: pop a change and revert it.
    fn undo_redo(&mut self, actx: &ApplyContext, from: Stack) -> Outcome {
        let user = actx.user_id.clone();
        let popped = match from {
            Stack::Undo => self.undo.get_mut(&user),
            Stack::Redo => self.redo.get_mut(&user),
        }
        .and_then(VecDeque::pop_front);
        let Some(change) = popped else {
            let message = match from {
                Stack::Undo => "nothing to undo",
                Stack::Redo => "nothing to redo",
            };
            return Outcome::Reverted {
                code: "INVALID".to_string(),
                message: message.to_string(),
                current: json!({"nodes": {}, "edges": {}}),
                conflicts: Vec::new(),
            };
        };
        let c = self.ctx(actx, None);
        let mut work = self.graph.clone();
        let mut tracker = Tracker::default();
        let mut conflicts = Vec::new();
        revert(&c, &mut work, &mut tracker, &mut conflicts, &change);
        if tracker.is_empty() {
            // "can revert nothing ... CONFLICT; the popped change is gone."
            // DOC CHOICE: `current` lists every entity of the popped change's
            // `undo` (and the viewport when it has one).
            let refs = Refs {
                nodes: change.undo_nodes.iter().map(|(id, _)| id.clone()).collect(),
                edges: change.undo_edges.iter().map(|(id, _)| id.clone()).collect(),
                viewport: change.undo_viewport.is_some(),
            };
            return Outcome::Reverted {
                code: "CONFLICT".to_string(),
                message: "the graph no longer shows that change".to_string(),
                current: self.current(&refs),
                conflicts,
            };
        }
        let version = c.version;
        let own = tracker.finish(&work);
        self.graph = work;
        self.version = version;
        let value = own.value();
        // DOC CHOICE: UNDO and REDO do not clear the redo stack.
        let target = match from {
            Stack::Undo => self.redo.entry(user).or_default(),
            Stack::Redo => self.undo.entry(user).or_default(),
        };
        push_capped(target, own);
        Outcome::Applied {
            version,
            change: value,
            conflicts,
        }
    }
}

fn push_capped(stack: &mut VecDeque<Change>, change: Change) {
    stack.push_front(change);
    stack.truncate(STACK_CAP);
}

/// Applies one operation to the working copy. `Ok` whether or not fields
/// were kept by the server; the tracker says whether anything changed.
fn apply_op(
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
fn update_entity(
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

/// Reverts change `change` onto the working copy (docs/graph.md, Undo and
/// redo). Processing order: nodes to re-create, updates (nodes, then edges),
/// edges to re-create, edges to delete, nodes to delete, then the viewport.
/// An entity's category comes from C (before/after), not from the graph now.
/// DOC CHOICE: "updates" covers node and edge updates (nodes first), and the
/// viewport comes last ("... then the viewport").
fn revert(
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
fn entity_conflict(kind: Kind, id: &str, wanted: Value, server: Value) -> Conflict {
    Conflict {
        field: format!("/{}/{}", kind.plural(), id),
        client_value: wanted,
        server_value: server,
        strategy: Strategy::ServerWins,
    }
}

/// "deleted by C": re-create with before's content when absent now.
fn revert_deletion(
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
    if let Some((s, t)) = &before.endpoints {
        if !g.nodes.contains_key(s) || !g.nodes.contains_key(t) {
            conflicts.push(entity_conflict(kind, id, before.value(), Value::Null));
            return;
        }
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
fn revert_creation(
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
fn revert_update(
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

/// Field versions of a new entity: "all its fields get the new version".
fn all_fields(entity: &Entity, stamp: Stamp) -> FieldVersions {
    let mut fv = FieldVersions::new();
    fv.insert(Field::Type, stamp.clone());
    if entity.position.is_some() {
        fv.insert(Field::Position, stamp.clone());
    }
    for (k, _) in &entity.data {
        fv.insert(Field::Data(k.clone()), stamp.clone());
    }
    fv
}

/// Create-time data: (key, canonical value text), sorted by key (byte
/// order, which is how serde_json's map iterates).
fn sorted_pairs(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = data
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), canonical(v)))
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
}

/// A key as canonical JSON text (what the script receives as "quoted key").
fn quote(key: &str) -> String {
    canonical(&Value::String(key.to_string()))
}

/// DOC CHOICE: `field` is a JSON pointer, so a data key is escaped as RFC
/// 6901 says (`~` → `~0`, `/` → `~1`).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Parses JSON text the model itself produced (or the canonical text of a
/// user value); failing would be a bug in the model.
fn parse_text(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("model produced invalid JSON {text:?}: {e}"))
}
