//! [`GraphStore`]: the one owner of graph and operation keys. It applies
//! commands with `lua/apply_command.lua` and reads graphs back (state,
//! changes since a version); its submodules keep the operation records
//! ([`operations`]: claim, status, reverts), the conflict log
//! ([`conflicts`]), snapshots and verify
//! ([`verify`]), and the records the analytics jobs derive from a graph
//! ([`analytics`]). Only this module, its submodules and the graph scripts
//! touch graph keys, and the only transactions are its reads within one graph.

mod analytics;
mod conflicts;
mod load;
mod node_updates;
mod operations;
mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::db::Redis;
use crate::keys::Keys;
use crate::resp::{BulkReader, Conn, Header, RespError, unexpected};
use crate::scripts::APPLY;

pub use analytics::GraphActivity;
pub use conflicts::{ConflictFilter, ConflictList, LogId};
pub use load::{LoadOutcome, Loaded, LogError};
pub use operations::{Claim, OperationStatus};
pub use verify::VerifyReport;

use super::{
    ApplyContext, ChangeEntry, Command, GraphSettings, GraphState, Outcome, RawGraph, checksum_hex,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored data is not what graphq writes: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Resp(#[from] RespError),
}

/// The graph store. Cheap to clone.
#[derive(Clone)]
pub struct GraphStore {
    redis: Redis,
    keys: Keys,
    settings: GraphSettings,
    /// `ARGV[5]` of apply_command.lua, built once.
    settings_json: String,
    /// Raw connections for [`GraphStore::state_json`].
    /// The raw reader of large states; None in cluster mode, where the
    /// state is read through the cluster client.
    bulk: Option<Arc<BulkReader>>,
    /// The graphs a worker remembers to decide node updates itself
    /// ([`node_updates`]); None when `graph.worker_cache_nodes` is 0.
    nodes: Option<Arc<node_updates::NodeCache>>,
}

/// Answer to "what changed since version N".
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub changes: Vec<ChangeEntry>,
    pub current_version: u64,
    pub epoch: String,
    /// True when entries after `since` were trimmed: the client needs a snapshot.
    #[serde(skip)]
    pub too_old: bool,
}

/// A graph's state as response-ready JSON, with what callers need from it.
#[derive(Clone, Debug)]
pub struct StateJson {
    pub json: String,
    pub version: u64,
    pub epoch: String,
}

impl GraphStore {
    pub fn new(redis: Redis, keys: Keys, settings: GraphSettings) -> GraphStore {
        let settings_json = serde_json::json!({
            "maxNodes": settings.max_nodes,
            "maxEdges": settings.max_edges,
            "logRetention": settings.log_retention,
            "opTtl": settings.op_ttl_s,
            "conflictRetention": settings.conflict_retention.max(1),
            "strategies": settings.strategies(),
        })
        .to_string();
        let bulk = redis
            .connection_info()
            .map(|info| Arc::new(BulkReader::new(info)));
        let nodes = (settings.worker_cache_nodes > 0).then(|| {
            Arc::new(node_updates::NodeCache::new(
                settings.worker_cache_nodes as usize,
                settings.strategies().get("node.data") == Some(&super::Strategy::Merge),
            ))
        });
        GraphStore {
            redis,
            keys,
            settings,
            settings_json,
            bulk,
            nodes,
        }
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.settings
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The script invocation that applies `cmd`, for callers that pipeline.
    pub fn invocation(&self, ctx: &ApplyContext, cmd: &Command) -> redis::Cmd {
        let k = &self.keys;
        let g = ctx.graph_id.as_str();
        let mut call = APPLY.fcall();
        call.arg(10)
            .arg(k.graph_meta(g))
            .arg(k.graph_nodes(g))
            .arg(k.graph_edges(g))
            .arg(k.graph_adjacency(g))
            .arg(k.graph_field_versions(g))
            .arg(k.graph_log(g))
            .arg(k.graph_op(g, &cmd.operation_id))
            .arg(k.graph_undo(g, &ctx.user_id))
            .arg(k.graph_redo(g, &ctx.user_id))
            .arg(k.graph_conflicts(g))
            .arg(&cmd.operation_id)
            .arg(&ctx.user_id)
            .arg(ctx.now_ms)
            .arg(&ctx.new_epoch)
            .arg(&self.settings_json)
            .arg(cmd.op.script_op().to_string())
            .arg(cmd.base_version.map(|v| v.to_string()).unwrap_or_default())
            .arg(cmd.timestamp.unwrap_or(0))
            .arg(cmd.op.type_name())
            .arg(k.graph_channel(g))
            .arg(&cmd.canonical)
            .arg(g)
            .arg(k.user_channel(&ctx.user_id))
            .arg(self.redis.graph_publish_command())
            .arg(k.user_outcomes_channel(&ctx.user_id));
        call
    }

    /// Applies one command atomically and returns what happened.
    pub async fn apply(&self, ctx: &ApplyContext, cmd: &Command) -> Result<Outcome, StoreError> {
        parse_outcome(&self.apply_text(ctx, cmd).await?)
    }

    /// [`Self::apply`], answering the script's text (the outcome, plus
    /// `logged` when the conflict log was written).
    pub async fn apply_text(
        &self,
        ctx: &ApplyContext,
        cmd: &Command,
    ) -> Result<String, StoreError> {
        // A graph changed here is no longer the one remembered.
        if let Some(nodes) = &self.nodes {
            nodes.forget(&ctx.graph_id);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(self.invocation(ctx, cmd));
        self.redis.durable(&mut pipe);
        let (raw,): (String,) =
            crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?;
        Ok(raw)
    }

    /// Applies each command, in order, in one round trip; returns what the
    /// script answered for each, as text. (No `processing` mark: a command
    /// is decided in the same call that takes it; see docs/protocol.md,
    /// Outcomes and statuses.) Node updates are decided here when
    /// `graph.worker_cache_nodes` allows ([`node_updates`]); a commit that finds its
    /// graph changed costs a second round trip.
    /// When this fails part of the batch may have run; applying is
    /// idempotent per operation id, so the whole batch can be sent again.
    pub async fn apply_batch(
        &self,
        batch: &[(&ApplyContext, &Command)],
    ) -> Result<Vec<String>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(nodes) = &self.nodes {
            return self.apply_batch_deciding(nodes, batch).await;
        }
        self.apply_all(batch.iter().copied()).await
    }

    /// One `FCALL` of the apply function per command, in order, in one
    /// round trip.
    async fn apply_all<'a>(
        &self,
        batch: impl Iterator<Item = (&'a ApplyContext, &'a Command)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut pipe = redis::pipe();
        for (ctx, cmd) in batch {
            pipe.add_command(self.invocation(ctx, cmd));
        }
        self.redis.durable(&mut pipe);
        Ok(crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?)
    }

    /// Publishes a control note (`{"graphId", "control", ...}`) on the
    /// graph's channel, next to its outcomes: every gateway with subscribers
    /// of the graph acts on it.
    pub async fn publish_control(&self, graph_id: &str, note: &Value) -> Result<(), StoreError> {
        let channel = self.keys.graph_channel(graph_id);
        self.redis
            .publish_graph(&channel, &note.to_string())
            .await?;
        Ok(())
    }

    /// The graph's epoch and version: one HMGET, the check before serving a
    /// cached state or answering 304. A graph never written is `("", 0)`.
    pub async fn version_of(&self, graph_id: &str) -> Result<(String, u64), StoreError> {
        let (epoch, version): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.graph_meta(graph_id))
            .arg("epoch")
            .arg("version")
            .query_async(&mut self.redis.conn())
            .await?;
        Ok((epoch.unwrap_or_default(), version.unwrap_or(0)))
    }

    /// The stored bytes of a graph, read atomically.
    pub async fn raw(&self, graph_id: &str) -> Result<RawGraph, StoreError> {
        let k = &self.keys;
        let (meta, nodes, edges): (
            BTreeMap<String, String>,
            BTreeMap<String, String>,
            BTreeMap<String, String>,
        ) = redis::pipe()
            .atomic()
            .hgetall(k.graph_meta(graph_id))
            .hgetall(k.graph_nodes(graph_id))
            .hgetall(k.graph_edges(graph_id))
            .query_async(&mut self.redis.conn())
            .await?;
        let num = |name: &str| {
            meta.get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(RawGraph {
            epoch: meta.get("epoch").cloned().unwrap_or_default(),
            version: num("version"),
            checksum: num("checksum"),
            nodes,
            edges,
            viewport: meta.get("viewport").cloned(),
        })
    }

    /// The full state as clients receive it.
    pub async fn state(&self, graph_id: &str) -> Result<GraphState, StoreError> {
        let raw = self.raw(graph_id).await?;
        let parse = |json: &String| {
            serde_json::from_str::<Value>(json)
                .map_err(|e| StoreError::Corrupt(format!("entity: {e}")))
        };
        Ok(GraphState {
            graph_id: graph_id.to_string(),
            epoch: raw.epoch.clone(),
            version: raw.version,
            nodes: raw.nodes.values().map(parse).collect::<Result<_, _>>()?,
            edges: raw.edges.values().map(parse).collect::<Result<_, _>>()?,
            viewport: raw.viewport.as_ref().map(parse).transpose()?,
            checksum: checksum_hex(raw.checksum),
        })
    }

    /// The full state as the JSON clients receive (docs/protocol.md, Commands: the state shape), built by
    /// splicing the stored entity texts (HVALS: each carries its id): no
    /// parse, no re-encode. This is the
    /// hot path of `GET state` and of `SYNC reset` for large graphs.
    pub async fn state_json(&self, graph_id: &str) -> Result<StateJson, StoreError> {
        let k = &self.keys;
        let (meta, nodes, edges) = (
            k.graph_meta(graph_id),
            k.graph_nodes(graph_id),
            k.graph_edges(graph_id),
        );
        let mut parts = StateParts::default();
        let Some(bulk) = &self.bulk else {
            return self.state_json_cluster(graph_id).await;
        };
        let mut conn = bulk.checkout().await?;
        let read = async {
            conn.send(&[
                &[b"MULTI"],
                &[b"HGETALL", meta.as_bytes()],
                &[b"HVALS", nodes.as_bytes()],
                &[b"HVALS", edges.as_bytes()],
                &[b"EXEC"],
            ])
            .await
            .map_err(RespError::from)?;
            read_state(&mut conn, &mut parts).await
        };
        tokio::time::timeout(STATE_READ_TIMEOUT, read)
            .await
            .map_err(|_| RespError::Io(std::io::ErrorKind::TimedOut.into()))??;
        // Only a connection whose replies were read to the end is reused.
        bulk.checkin(conn);
        parts.into_state(graph_id)
    }

    /// [`Self::state_json`] through the cluster client: the same transaction
    /// on the graph's shard, entity texts spliced as they are.
    async fn state_json_cluster(&self, graph_id: &str) -> Result<StateJson, StoreError> {
        let k = &self.keys;
        type Texts = Vec<Vec<u8>>;
        let (meta, nodes, edges): (BTreeMap<String, String>, Texts, Texts) = redis::pipe()
            .atomic()
            .hgetall(k.graph_meta(graph_id))
            .hvals(k.graph_nodes(graph_id))
            .hvals(k.graph_edges(graph_id))
            .query_async(&mut self.redis.conn())
            .await?;
        let join = |texts: Vec<Vec<u8>>| {
            let mut out = Vec::with_capacity(texts.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
            out.push(b'[');
            for (i, t) in texts.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&t);
            }
            out.push(b']');
            out
        };
        StateParts {
            meta,
            nodes: join(nodes),
            edges: join(edges),
        }
        .into_state(graph_id)
    }

    /// Change-log entries after `since`, oldest first, at most `limit`
    /// (capped at `max_changes`; callers refuse 0). `too_old` when an entry
    /// after `since` is no longer kept. Any `since` is safe, `u64::MAX`
    /// included: the range starts at the stream id `since-1`, which lies
    /// between entry `since` and entry `since + 1` (entries are `V-0`), so
    /// no `since + 1` is computed that could wrap to 0 and list everything.
    pub async fn changes_since(
        &self,
        graph_id: &str,
        since: u64,
        limit: u64,
    ) -> Result<Changes, StoreError> {
        let k = &self.keys;
        let limit = limit.clamp(1, self.settings.max_changes);
        let (meta, first, entries): (BTreeMap<String, String>, redis::Value, redis::Value) =
            redis::pipe()
                .atomic()
                .hgetall(k.graph_meta(graph_id))
                .cmd("XRANGE")
                .arg(k.graph_log(graph_id))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .cmd("XRANGE")
                .arg(k.graph_log(graph_id))
                .arg(format!("{since}-1"))
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut self.redis.conn())
                .await?;
        let current = meta
            .get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let epoch = meta.get("epoch").cloned().unwrap_or_default();
        let oldest = crate::db::streams::parse_entries(&first)
            .first()
            .and_then(|(id, _)| entry_version(id));
        // `since + 1` cannot wrap here: `since < current`.
        let too_old = since < current
            && match oldest {
                Some(o) => o > since + 1,
                None => true,
            };
        let changes = if too_old {
            Vec::new()
        } else {
            crate::db::streams::parse_entries(&entries)
                .into_iter()
                .map(|(id, fields)| change_entry(&id, fields))
                .collect::<Result<_, _>>()?
        };
        Ok(Changes {
            changes,
            current_version: current,
            epoch,
            too_old,
        })
    }
}

fn entry_version(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

fn change_entry(id: &str, fields: Vec<(String, String)>) -> Result<ChangeEntry, StoreError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("log entry {id}: {what}"));
    Ok(ChangeEntry {
        version: entry_version(id).ok_or_else(|| corrupt("id is not <version>-0"))?,
        operation_id: get("operationId").unwrap_or_default(),
        user_id: get("userId").unwrap_or_default(),
        kind: get("type").unwrap_or_default(),
        timestamp: get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0),
        change: RawValue::from_string(get("change").ok_or_else(|| corrupt("no change"))?)
            .map_err(|e| corrupt(&e.to_string()))?,
    })
}

/// Parses what apply_command.lua returns.
fn parse_outcome(raw: &str) -> Result<Outcome, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("outcome {raw}: {e}")))
}

/// Longest a full state read may take before the connection is given up.
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The pieces of a state read: the meta hash, and nodes and edges as JSON
/// arrays of their stored texts.
#[derive(Default)]
struct StateParts {
    meta: BTreeMap<String, String>,
    nodes: Vec<u8>,
    edges: Vec<u8>,
}

impl StateParts {
    fn into_state(self, graph_id: &str) -> Result<StateJson, StoreError> {
        let meta = |name: &str| self.meta.get(name).map(String::as_str);
        let checksum = meta("checksum").and_then(|c| c.parse().ok()).unwrap_or(0);
        let epoch = meta("epoch").unwrap_or("").to_string();
        let version = meta("version").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut out = Vec::with_capacity(self.nodes.len() + self.edges.len() + 256);
        out.extend_from_slice(b"{\"graphId\":");
        out.extend_from_slice(Value::String(graph_id.to_string()).to_string().as_bytes());
        out.extend_from_slice(b",\"epoch\":");
        out.extend_from_slice(Value::String(epoch.clone()).to_string().as_bytes());
        out.extend_from_slice(format!(",\"version\":{version},\"nodes\":").as_bytes());
        out.extend_from_slice(&self.nodes);
        out.extend_from_slice(b",\"edges\":");
        out.extend_from_slice(&self.edges);
        out.extend_from_slice(b",\"viewport\":");
        out.extend_from_slice(meta("viewport").unwrap_or("null").as_bytes());
        out.extend_from_slice(format!(",\"checksum\":\"{}\"}}", checksum_hex(checksum)).as_bytes());
        let json = String::from_utf8(out).map_err(|_| {
            StoreError::Corrupt(format!("graph {graph_id}: an entity is not UTF-8"))
        })?;
        Ok(StateJson {
            version,
            epoch,
            json,
        })
    }
}

/// Reads the replies to `MULTI, HGETALL meta, HVALS nodes, HVALS edges,
/// EXEC`, copying each node and edge text once into `parts`.
async fn read_state(conn: &mut Conn, parts: &mut StateParts) -> Result<(), StoreError> {
    for _ in 0..4 {
        conn.status().await?; // OK, then QUEUED three times
    }
    if conn.array().await? != 3 {
        return Err(RespError::Protocol("EXEC did not answer 3 replies".into()).into());
    }
    let fields = conn.array().await?;
    for _ in 0..fields / 2 {
        let name = String::from_utf8_lossy(&conn.bulk().await?).into_owned();
        let value = String::from_utf8_lossy(&conn.bulk().await?).into_owned();
        parts.meta.insert(name, value);
    }
    for out in [&mut parts.nodes, &mut parts.edges] {
        let count = conn.array().await?;
        out.reserve(count * 160 + 2);
        out.push(b'[');
        for i in 0..count {
            if i > 0 {
                out.push(b',');
            }
            match conn.header().await? {
                Header::Bulk(Some(len)) => conn.bulk_into(len, out).await?,
                other => return Err(unexpected(other).into()),
            }
        }
        out.push(b']');
    }
    Ok(())
}
