//! The graph store: commands applied atomically in Redis by
//! `lua/apply_command.lua`, and the queries that read graphs back.
//! docs/graph.md is the exact semantics. [`job`] is the queue job that
//! carries a command from the gateway to the worker.

pub mod command;
pub mod import;
pub mod job;
mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use command::{Command, Op, Rejection};
pub use job::{CommandEnvelope, command_job};
pub use store::{
    Changes, Claim, ConflictFilter, ConflictList, GraphActivity, GraphStore, LoadOutcome, Loaded,
    LogError, LogId, OperationStatus, StateJson, StoreError, VerifyReport,
};

/// How a concurrently changed field is resolved (docs/graph.md, Conflicts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    LastWriteWins,
    Merge,
    ServerWins,
    ClientWins,
    Manual,
}

/// Settings of the graph store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GraphSettings {
    /// Most nodes one graph may hold.
    pub max_nodes: u64,
    /// Most edges one graph may hold.
    pub max_edges: u64,
    /// Change-log entries kept per graph (approximately).
    pub log_retention: u64,
    /// How long an operation's outcome is kept for dedupe and status, seconds.
    pub op_ttl_s: u64,
    /// Conflict-log records kept per graph (approximately).
    pub conflict_retention: u64,
    /// Most changes returned in one "changes since" answer or SYNC.
    pub max_changes: u64,
    /// A snapshot (the base `verify` replays from) is taken every this many
    /// versions; keep it below `log_retention`. 0 turns snapshots off.
    pub snapshot_every: u64,
    /// Strategy per field path (`node.position`, `node.data.KEY`, ...);
    /// paths not listed use the defaults of docs/graph.md.
    pub conflicts: BTreeMap<String, Strategy>,
    /// Nodes a worker remembers so that it decides `UPDATE_NODE` commands
    /// itself and sends Redis a short commit (docs/graph.md, "Node updates
    /// decided by the worker"). 0: every command goes through the apply
    /// function.
    pub worker_cache_nodes: u64,
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            max_nodes: 100_000,
            max_edges: 200_000,
            log_retention: 10_000,
            op_ttl_s: 3_600,
            conflict_retention: 1_000,
            max_changes: 1_000,
            snapshot_every: 1_000,
            conflicts: BTreeMap::new(),
            worker_cache_nodes: 20_000,
        }
    }
}

impl GraphSettings {
    /// The strategy table the script and the model read: defaults, then the
    /// configured paths.
    pub fn strategies(&self) -> BTreeMap<String, Strategy> {
        let mut s = BTreeMap::from([
            ("node.position".to_string(), Strategy::LastWriteWins),
            ("node.type".to_string(), Strategy::LastWriteWins),
            ("node.data".to_string(), Strategy::Merge),
            ("edge.type".to_string(), Strategy::LastWriteWins),
            ("edge.data".to_string(), Strategy::Merge),
            ("viewport".to_string(), Strategy::LastWriteWins),
        ]);
        s.extend(self.conflicts.clone());
        s
    }
}

/// Who applies a command, when, and to which graph.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyContext {
    pub graph_id: String,
    pub user_id: String,
    /// The worker's clock (ms); stamped as `updatedAt`.
    pub now_ms: u64,
    /// Epoch given to the graph if this command creates it.
    pub new_epoch: String,
}

/// One field a command could not simply apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub field: String,
    pub client_value: Value,
    pub server_value: Value,
    pub strategy: Strategy,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Applied {
        version: u64,
        change: Value,
        #[serde(default)]
        conflicts: Vec<Conflict>,
    },
    Reverted {
        code: String,
        message: String,
        #[serde(default)]
        current: Value,
        #[serde(default)]
        conflicts: Vec<Conflict>,
    },
    /// The operation id was decided before; `stored` is that decision
    /// (`{"status":"applied","version":V}` or `{"status":"reverted",...}`).
    Duplicate { stored: Value },
}

/// A graph's full state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphState {
    pub graph_id: String,
    /// Empty for a graph that was never written.
    pub epoch: String,
    pub version: u64,
    /// Sorted by id.
    pub nodes: Vec<Value>,
    /// Sorted by id.
    pub edges: Vec<Value>,
    pub viewport: Option<Value>,
    /// 12 hex digits.
    pub checksum: String,
}

/// One change-log entry as clients receive it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEntry {
    pub version: u64,
    pub operation_id: String,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: i64,
    /// The change exactly as logged (see docs/graph.md).
    #[schema(value_type = Object)]
    pub change: Box<serde_json::value::RawValue>,
}

impl ChangeEntry {
    /// The change as a JSON value, for callers that inspect it.
    pub fn change_value(&self) -> Value {
        serde_json::from_str(self.change.get()).unwrap_or(Value::Null)
    }
}

/// The stored bytes of a graph, for exact comparison and checksums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawGraph {
    pub epoch: String,
    pub version: u64,
    /// The checksum as the store keeps it (decimal of the 48-bit sum).
    pub checksum: u64,
    pub nodes: BTreeMap<String, String>,
    pub edges: BTreeMap<String, String>,
    pub viewport: Option<String>,
}

/// `H(x)`: the first 12 hex digits of sha1(x) as an integer (48 bits).
pub fn entity_hash(x: &str) -> u64 {
    let hex = sha1_smol::Sha1::from(x).digest().to_string();
    u64::from_str_radix(&hex[..12], 16).unwrap_or(0)
}

/// The checksum of stored entities: Σ H over nodes ("n"+json), edges
/// ("e"+json) and the viewport ("v"+json), mod 2^48.
pub fn checksum_of(raw: &RawGraph) -> u64 {
    let mut sum: u64 = 0;
    for json in raw.nodes.values() {
        sum = sum.wrapping_add(entity_hash(&format!("n{json}")));
    }
    for json in raw.edges.values() {
        sum = sum.wrapping_add(entity_hash(&format!("e{json}")));
    }
    if let Some(v) = &raw.viewport {
        sum = sum.wrapping_add(entity_hash(&format!("v{v}")));
    }
    sum % (1 << 48)
}

/// A checksum as clients see it.
pub fn checksum_hex(sum: u64) -> String {
    format!("{sum:012x}")
}
