//! Generated cases for the model-based property test (`tests/graph_props.rs`):
//! random steps by three users over a small id space, drawn as indices into
//! fixed tables so they shrink well, and the exact command text each step
//! sends given the graph at that moment.

use graphq::graph::GraphSettings;
// `Strategy` is proptest's trait here; the conflict strategy goes by this name.
use graphq::graph::Strategy as Resolution;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::graph_model::Model;

pub const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Ids n0..n5 / e0..e5 are created; n6 never is, so edges to it always fail.
const NODE_IDS: usize = 6;
const EDGE_IDS: usize = 6;
const TYPES: [&str; 3] = ["task", "note", "group"];
const DATA_KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Data values as client JSON text. Some are awkward on purpose: the script
/// must splice them verbatim (`/` that cjson would escape, an empty object vs
/// an empty array, integers past 2^53, exponents, unicode).
const VALUES: [&str; 14] = [
    "1",
    "2",
    "-3",
    "0.1",
    "\"a\"",
    "\"b/c\"",
    "\"é\\\"\"",
    "true",
    "[1,\"x\"]",
    "{\"z\":1,\"a\":[true]}",
    "{}",
    "[]",
    "9007199254740993",
    "1e300",
];
const COORDS: [&str; 7] = ["0", "1", "2", "-2.5", "1e2", "0.1", "100"];
const ZOOMS: [&str; 4] = ["1", "0.5", "2", "1.25"];
/// Strategy paths the cases configure, to reach every strategy on every kind
/// of field.
const PATHS: [&str; 9] = [
    "node.position",
    "node.type",
    "node.data",
    "node.data.k1",
    "edge.type",
    "edge.data",
    "edge.data.k0",
    "viewport",
    "node.data.k2",
];
const STRATEGIES: [Resolution; 5] = [
    Resolution::LastWriteWins,
    Resolution::Merge,
    Resolution::ServerWins,
    Resolution::ClientWins,
    Resolution::Manual,
];

/// An entity id chosen when the step runs: usually one that exists then
/// (so updates and deletes mostly find their target), otherwise any id of
/// the id space (collisions, missing ids).
#[derive(Clone, Debug)]
struct Pick {
    existing: bool,
    index: Index,
}

impl Pick {
    /// `existing`: the ids present now; `space`: how many ids `prefix0..` the
    /// pick may name otherwise.
    fn resolve(&self, prefix: &str, existing: &[String], space: usize) -> String {
        if self.existing && !existing.is_empty() {
            existing[self.index.index(existing.len())].clone()
        } else {
            format!("{prefix}{}", self.index.index(space))
        }
    }
}

/// The id of an entity to create: usually one that is free when the step
/// runs, otherwise any id of the space (collisions: ALREADY_EXISTS).
#[derive(Clone, Debug)]
struct NewId {
    fresh: bool,
    index: Index,
}

impl NewId {
    fn resolve(&self, prefix: &str, existing: &[String], space: usize) -> String {
        let free: Vec<String> = (0..space)
            .map(|i| format!("{prefix}{i}"))
            .filter(|id| !existing.contains(id))
            .collect();
        if self.fresh && !free.is_empty() {
            free[self.index.index(free.len())].clone()
        } else {
            format!("{prefix}{}", self.index.index(space))
        }
    }
}

/// The ids that exist when a step runs.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub nodes: Vec<String>,
    pub edges: Vec<String>,
}

/// One generated operation, as indices into the tables above (small, and
/// shrinks well).
#[derive(Clone, Debug)]
enum OpSpec {
    CreateNode {
        id: NewId,
        ty: Option<usize>,
        pos: (usize, usize),
        data: Vec<(usize, usize)>,
    },
    UpdateNode {
        id: Pick,
        /// `Some(None)` clears the type.
        ty: Option<Option<usize>>,
        pos: Option<(usize, usize)>,
        /// `None` value: remove the key.
        data: Option<Vec<(usize, Option<usize>)>>,
    },
    DeleteNode {
        id: Pick,
    },
    CreateEdge {
        id: NewId,
        source: Pick,
        target: Pick,
        ty: Option<usize>,
        data: Vec<(usize, usize)>,
    },
    UpdateEdge {
        id: Pick,
        ty: Option<Option<usize>>,
        data: Option<Vec<(usize, Option<usize>)>>,
    },
    DeleteEdge {
        id: Pick,
    },
    Viewport {
        x: usize,
        y: usize,
        zoom: usize,
    },
}

/// The command's `baseVersion`, relative to the graph's version when sent.
#[derive(Clone, Debug)]
enum Base {
    Absent,
    /// current version minus this (saturating): 0 is up to date.
    Behind(u64),
}

#[derive(Clone, Debug)]
enum Action {
    Send {
        ops: Vec<OpSpec>,
        batch: bool,
        base: Base,
    },
    /// `aim`: sent by a user who has something to undo, when anyone has.
    Undo {
        aim: bool,
    },
    Redo {
        aim: bool,
    },
    /// Resend an earlier command verbatim (same operationId, same user).
    Resend(Index),
}

#[derive(Clone, Debug)]
pub struct Step {
    user: usize,
    action: Action,
}

#[derive(Clone, Debug)]
pub struct Case {
    conflicts: Vec<(usize, usize)>,
    max_nodes: Option<u64>,
    max_edges: Option<u64>,
    pub steps: Vec<Step>,
}

impl Case {
    pub fn settings(&self) -> GraphSettings {
        let mut settings = GraphSettings::default();
        for &(path, strategy) in &self.conflicts {
            settings
                .conflicts
                .insert(PATHS[path].to_string(), STRATEGIES[strategy]);
        }
        if let Some(n) = self.max_nodes {
            settings.max_nodes = n;
        }
        if let Some(n) = self.max_edges {
            settings.max_edges = n;
        }
        settings
    }
}

fn data_set() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..DATA_KEYS.len(), 0..VALUES.len()), 0..=3)
}

/// A non-empty data patch; about a third of the entries remove their key.
fn data_patch() -> impl Strategy<Value = Vec<(usize, Option<usize>)>> {
    prop::collection::vec(
        (
            0..DATA_KEYS.len(),
            prop::option::weighted(0.65, 0..VALUES.len()),
        ),
        1..=3,
    )
}

fn type_patch() -> impl Strategy<Value = Option<Option<usize>>> {
    prop::option::weighted(0.35, prop::option::weighted(0.8, 0..TYPES.len()))
}

fn point() -> impl Strategy<Value = (usize, usize)> {
    (0..COORDS.len(), 0..COORDS.len())
}

fn pick(existing: f64) -> impl Strategy<Value = Pick> {
    (prop::bool::weighted(existing), any::<Index>())
        .prop_map(|(existing, index)| Pick { existing, index })
}

fn new_id() -> impl Strategy<Value = NewId> {
    (prop::bool::weighted(0.75), any::<Index>()).prop_map(|(fresh, index)| NewId { fresh, index })
}

fn create_node() -> impl Strategy<Value = OpSpec> {
    (
        new_id(),
        prop::option::weighted(0.6, 0..TYPES.len()),
        point(),
        data_set(),
    )
        .prop_map(|(id, ty, pos, data)| OpSpec::CreateNode { id, ty, pos, data })
}

fn create_edge(existing: f64) -> impl Strategy<Value = OpSpec> {
    (
        new_id(),
        pick(existing),
        pick(existing),
        prop::option::weighted(0.5, 0..TYPES.len()),
        data_set(),
    )
        .prop_map(|(id, source, target, ty, data)| OpSpec::CreateEdge {
            id,
            source,
            target,
            ty,
            data,
        })
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        4 => create_node(),
        5 => (pick(0.92), type_patch(), prop::option::weighted(0.5, point()), prop::option::weighted(0.6, data_patch()))
            .prop_map(|(id, ty, pos, data)| {
                // The parser rejects an empty patch; make it move the node.
                let pos = if ty.is_none() && pos.is_none() && data.is_none() { Some((1, 1)) } else { pos };
                OpSpec::UpdateNode { id, ty, pos, data }
            }),
        1 => pick(0.85).prop_map(|id| OpSpec::DeleteNode { id }),
        3 => create_edge(0.9),
        2 => (pick(0.92), type_patch(), prop::option::weighted(0.8, data_patch()))
            .prop_map(|(id, ty, data)| {
                let data = if ty.is_none() && data.is_none() { Some(vec![(0, Some(0))]) } else { data };
                OpSpec::UpdateEdge { id, ty, data }
            }),
        1 => pick(0.85).prop_map(|id| OpSpec::DeleteEdge { id }),
        1 => (0..COORDS.len(), 0..COORDS.len(), 0..ZOOMS.len())
            .prop_map(|(x, y, zoom)| OpSpec::Viewport { x, y, zoom }),
    ]
}

/// Operations inside a batch: mostly updates, so that a batch applies more
/// often than it fails (each op can fail it whole).
fn batch_op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        2 => create_node(),
        5 => (pick(0.95), type_patch(), prop::option::weighted(0.5, point()), prop::option::weighted(0.6, data_patch()))
            .prop_map(|(id, ty, pos, data)| {
                let pos = if ty.is_none() && pos.is_none() && data.is_none() { Some((1, 1)) } else { pos };
                OpSpec::UpdateNode { id, ty, pos, data }
            }),
        1 => pick(0.95).prop_map(|id| OpSpec::DeleteNode { id }),
        2 => create_edge(0.95),
        3 => (pick(0.95), type_patch(), prop::option::weighted(0.8, data_patch()))
            .prop_map(|(id, ty, data)| {
                let data = if ty.is_none() && data.is_none() { Some(vec![(0, Some(0))]) } else { data };
                OpSpec::UpdateEdge { id, ty, data }
            }),
        1 => pick(0.95).prop_map(|id| OpSpec::DeleteEdge { id }),
        1 => (0..COORDS.len(), 0..COORDS.len(), 0..ZOOMS.len())
            .prop_map(|(x, y, zoom)| OpSpec::Viewport { x, y, zoom }),
    ]
}

fn base() -> impl Strategy<Value = Base> {
    prop_oneof![
        4 => Just(Base::Absent),
        5 => (0u64..5).prop_map(Base::Behind),
        1 => Just(Base::Behind(u64::MAX)),
    ]
}

/// One or two actions by one user (an UNDO is sometimes followed by a REDO,
/// which is what makes the redo stack non-empty).
fn actions() -> impl Strategy<Value = Vec<Action>> {
    prop_oneof![
        14 => (op_spec(), base()).prop_map(|(op, base)| vec![Action::Send { ops: vec![op], batch: false, base }]),
        3 => (prop::collection::vec(batch_op_spec(), 2..=5), base())
            .prop_map(|(ops, base)| vec![Action::Send { ops, batch: true, base }]),
        3 => prop::bool::weighted(0.85).prop_map(|aim| vec![Action::Undo { aim }]),
        1 => prop::bool::weighted(0.85).prop_map(|aim| vec![Action::Redo { aim }]),
        1 => Just(vec![Action::Undo { aim: true }, Action::Redo { aim: true }]),
        1 => any::<Index>().prop_map(|i| vec![Action::Resend(i)]),
        // A drag: a few moves of one node (the commonest command of an
        // editor, which the worker decides itself).
        3 => (pick(0.95), prop::collection::vec(point(), 1..=4), base()).prop_map(|(id, points, base)| {
            points
                .into_iter()
                .map(|p| Action::Send {
                    ops: vec![OpSpec::UpdateNode { id: id.clone(), ty: None, pos: Some(p), data: None }],
                    batch: false,
                    base: base.clone(),
                })
                .collect()
        }),
    ]
}

pub fn case() -> impl Strategy<Value = Case> {
    let limit = || prop::option::weighted(0.3, prop_oneof![Just(2u64), Just(4u64)]);
    let send = |op| Action::Send {
        ops: vec![op],
        batch: false,
        base: Base::Absent,
    };
    // A case opens with a few nodes and edges so that later updates, deletes
    // and conflicts have something to work on; then random steps (at most
    // 40 in all).
    let opening = (
        prop::collection::vec((0..USERS.len(), create_node()), 1..=4),
        prop::collection::vec((0..USERS.len(), create_edge(1.0)), 0..=3),
    )
        .prop_map(move |(nodes, edges)| {
            nodes
                .into_iter()
                .chain(edges)
                .map(|(user, op)| Step {
                    user,
                    action: send(op),
                })
                .collect::<Vec<_>>()
        });
    let steps = (0..USERS.len(), actions()).prop_map(|(user, actions)| {
        actions
            .into_iter()
            .map(|action| Step { user, action })
            .collect::<Vec<_>>()
    });
    (
        prop::collection::vec((0..PATHS.len(), 0..STRATEGIES.len()), 0..=3),
        limit(),
        limit(),
        opening,
        prop::collection::vec(steps, 1..=30),
    )
        .prop_map(|(conflicts, max_nodes, max_edges, opening, steps)| Case {
            conflicts,
            max_nodes,
            max_edges,
            steps: opening
                .into_iter()
                .chain(steps.into_iter().flatten())
                .take(40)
                .collect(),
        })
}

/// Client JSON text for a literal of the tables (always valid JSON).
fn lit(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("table literal {text:?} is not JSON: {e}"))
}

fn point_json((x, y): (usize, usize)) -> Value {
    json!({"x": lit(COORDS[x]), "y": lit(COORDS[y])})
}

fn data_json(pairs: &[(usize, usize)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|&(k, v)| (DATA_KEYS[k].to_string(), lit(VALUES[v])))
            .collect(),
    )
}

fn patch_json(pairs: &[(usize, Option<usize>)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|&(k, v)| {
                (
                    DATA_KEYS[k].to_string(),
                    v.map_or(Value::Null, |v| lit(VALUES[v])),
                )
            })
            .collect(),
    )
}

fn type_json(ty: Option<usize>) -> Value {
    ty.map_or(Value::Null, |t| json!(TYPES[t]))
}

/// `{"type": ..., "payload": ...}` of one operation.
fn op_json(op: &OpSpec, world: &World) -> Value {
    // References may name n6, which is never created.
    let node = |p: &Pick| p.resolve("n", &world.nodes, NODE_IDS + 1);
    let edge = |p: &Pick| p.resolve("e", &world.edges, EDGE_IDS);
    match op {
        OpSpec::CreateNode { id, ty, pos, data } => {
            let mut node = json!({"id": id.resolve("n", &world.nodes, NODE_IDS), "position": point_json(*pos), "data": data_json(data)});
            if let Some(t) = ty {
                node["type"] = json!(TYPES[*t]);
            }
            json!({"type": "CREATE_NODE", "payload": {"node": node}})
        }
        OpSpec::UpdateNode { id, ty, pos, data } => {
            let mut patch = json!({});
            if let Some(t) = ty {
                patch["type"] = type_json(*t);
            }
            if let Some(p) = pos {
                patch["position"] = point_json(*p);
            }
            if let Some(d) = data {
                patch["data"] = patch_json(d);
            }
            json!({"type": "UPDATE_NODE", "payload": {"id": node(id), "patch": patch}})
        }
        OpSpec::DeleteNode { id } => json!({"type": "DELETE_NODE", "payload": {"id": node(id)}}),
        OpSpec::CreateEdge {
            id,
            source,
            target,
            ty,
            data,
        } => {
            let mut new_edge = json!({"id": id.resolve("e", &world.edges, EDGE_IDS), "source": node(source),
                                      "target": node(target), "data": data_json(data)});
            if let Some(t) = ty {
                new_edge["type"] = json!(TYPES[*t]);
            }
            json!({"type": "CREATE_EDGE", "payload": {"edge": new_edge}})
        }
        OpSpec::UpdateEdge { id, ty, data } => {
            let mut patch = json!({});
            if let Some(t) = ty {
                patch["type"] = type_json(*t);
            }
            if let Some(d) = data {
                patch["data"] = patch_json(d);
            }
            json!({"type": "UPDATE_EDGE", "payload": {"id": edge(id), "patch": patch}})
        }
        OpSpec::DeleteEdge { id } => json!({"type": "DELETE_EDGE", "payload": {"id": edge(id)}}),
        OpSpec::Viewport { x, y, zoom } => json!({"type": "UPDATE_VIEWPORT", "payload": {
            "x": lit(COORDS[*x]), "y": lit(COORDS[*y]), "zoom": lit(ZOOMS[*zoom])}}),
    }
}

/// One command as sent: who sent it and its exact JSON text.
#[derive(Clone, Debug)]
pub struct Sent {
    pub user: usize,
    pub text: String,
}

/// What a step needs to know about the graph to build its command.
pub struct Now<'a> {
    pub version: u64,
    pub world: World,
    /// Users whose undo / redo stack is not empty, in `USERS` order.
    pub can_undo: Vec<usize>,
    pub can_redo: Vec<usize>,
    pub sent: &'a [Sent],
}

impl Now<'_> {
    pub fn of<'a>(model: &Model, sent: &'a [Sent]) -> Now<'a> {
        let raw = model.raw();
        Now {
            version: model.version(),
            world: World {
                nodes: raw.nodes.keys().cloned().collect(),
                edges: raw.edges.keys().cloned().collect(),
            },
            can_undo: (0..USERS.len())
                .filter(|&u| model.undo_depth(USERS[u]) > 0)
                .collect(),
            can_redo: (0..USERS.len())
                .filter(|&u| model.redo_depth(USERS[u]) > 0)
                .collect(),
            sent,
        }
    }
}

/// The user aimed at: the step's own when it can, else the next one who can.
fn aimed(user: usize, aim: bool, able: &[usize]) -> usize {
    if !aim || able.is_empty() || able.contains(&user) {
        return user;
    }
    able.iter().copied().find(|&u| u > user).unwrap_or(able[0])
}

/// The sender and command text of a step, or `None` when it has nothing to
/// send (a resend before anything was sent).
pub fn command_text(step_no: usize, step: &Step, now: &Now) -> Option<(usize, String)> {
    let sent = now.sent;
    let version = now.version;
    let mut user = step.user;
    let op_id = format!("op-{step_no}");
    let timestamp = 1_700_000_000_000u64 + step_no as u64;
    let cmd = match &step.action {
        Action::Resend(index) => {
            if sent.is_empty() {
                return None;
            }
            let earlier = &sent[index.index(sent.len())];
            return Some((earlier.user, earlier.text.clone()));
        }
        Action::Undo { aim } => {
            user = aimed(user, *aim, &now.can_undo);
            json!({"operationId": op_id, "type": "UNDO", "timestamp": timestamp})
        }
        Action::Redo { aim } => {
            user = aimed(user, *aim, &now.can_redo);
            json!({"operationId": op_id, "type": "REDO", "timestamp": timestamp})
        }
        Action::Send { ops, batch, base } => {
            let mut cmd = if *batch {
                json!({"type": "BATCH_UPDATE", "payload": {"operations": ops.iter().map(|op| op_json(op, &now.world)).collect::<Vec<_>>()}})
            } else {
                op_json(&ops[0], &now.world)
            };
            cmd["operationId"] = json!(op_id);
            cmd["timestamp"] = json!(timestamp);
            if let Base::Behind(lag) = base {
                cmd["baseVersion"] = json!(version.saturating_sub(*lag));
            }
            cmd
        }
    };
    Some((user, cmd.to_string()))
}
