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
//! such choice is marked `DOC CHOICE` in the code.
//!
//! Layout: `entity` (nodes, edges, field versions, JSON texts), `graph` (the
//! working copy), `change` (change objects and the tracker that builds them),
//! `apply` (every operation but UNDO/REDO), `undo` (reverting a change), and
//! `examples` (builders shared by the hand-computed example tests); `Model`
//! itself (below) owns the version, epoch, decided operations and stacks.
#![allow(dead_code)]

mod apply;
mod change;
mod entity;
pub mod examples;
mod graph;
mod undo;

use std::collections::{BTreeMap, HashMap, VecDeque};

use graphq::graph::{
    ApplyContext, Command, GraphSettings, Op, Outcome, RawGraph, Strategy, checksum_of,
};
use serde_json::{Value, json};

use apply::{Ctx, apply_op};
use change::{Change, Refs, Tracker};
use entity::Kind;
use graph::Graph;
use undo::revert;

/// "the user's last 100 changes" (docs/graph.md, What is stored).
const STACK_CAP: usize = 100;
const CONFLICT_MESSAGE: &str = "every change conflicted with a newer one";

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
