//! Node moves decided by the worker (docs/graph.md, "Moves decided by the
//! worker").
//!
//! Most commands of a graph editor are drags: an `UPDATE_NODE` that sets only
//! a position. For those the apply function spends most of its time in Lua
//! reading the node back, deciding and building text. The worker owns the
//! graph's partition and sees every command of it in order, so it can
//! remember the nodes it moves and decide such a command itself: the same
//! checks, the same stored bytes, change, outcome and note as
//! `lua/apply_command.lua`, sent as one short `lua/commit_move.lua` call
//! that writes only if the graph is still the one the worker decided on
//! (epoch, version and checksum) and the operation has no outcome yet.
//!
//! Anything else goes to the apply function as before: other commands, a
//! move that meets a concurrent change or an open conflict, ids that would
//! need escaping, a node the worker cannot read in the stored shape, and
//! every command of a graph after a commit that found the graph changed.
//! Within one batch a graph's commands are either all commits or all
//! applies, so that a commit that fails can be applied again in order.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::{GraphStore, StoreError};
use crate::graph::command::point_text;
use crate::graph::{ApplyContext, Command, Op, entity_hash};
use crate::scripts::SCRIPTS;

/// The checksum's modulus (docs/graph.md, Checksum).
const H48: u64 = 1 << 48;

/// What the worker remembers of the graphs it moves nodes in: each graph as
/// it was at one version, and the nodes it read or wrote at that version.
/// A batch takes its graphs out and puts back what it committed, so nothing
/// is copied, and a batch that fails half way leaves them forgotten.
pub(super) struct MoveCache {
    /// Most nodes remembered in all; past it everything is forgotten.
    cap: usize,
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    graphs: HashMap<String, Known>,
    /// Nodes in all of `graphs`.
    nodes: usize,
}

#[derive(Debug)]
struct Known {
    epoch: String,
    version: u64,
    checksum: u64,
    /// Node id -> (stored JSON, per-field versions JSON).
    nodes: HashMap<String, (String, String)>,
}

/// A move decided by the worker, ready to commit.
struct Move {
    /// The graph the move was decided on.
    epoch: String,
    version: u64,
    checksum: u64,
    /// What the graph becomes.
    new_version: u64,
    new_checksum: u64,
    node_id: String,
    json: String,
    fv: String,
    change: String,
    outcome: String,
}

impl MoveCache {
    pub(super) fn new(cap: usize) -> MoveCache {
        MoveCache {
            cap,
            inner: Mutex::new(Remembered::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        // A panic while holding the lock leaves nothing half-written that a
        // commit would trust: every commit checks the graph in Redis.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `graph_id` out (None when it is not remembered).
    fn take(&self, graph_id: &str) -> Option<Known> {
        let mut r = self.lock();
        let known = r.graphs.remove(graph_id)?;
        r.nodes -= known.nodes.len();
        Some(known)
    }

    pub(super) fn forget(&self, graph_id: &str) {
        self.take(graph_id);
    }

    fn put(&self, graph_id: &str, known: Known) {
        let mut r = self.lock();
        if let Some(old) = r.graphs.remove(graph_id) {
            r.nodes -= old.nodes.len();
        }
        if r.nodes + known.nodes.len() > self.cap {
            r.graphs.clear();
            r.nodes = 0;
        }
        r.nodes += known.nodes.len();
        r.graphs.insert(graph_id.to_string(), known);
    }
}

/// The position an `UPDATE_NODE` sets, when that is all it does.
fn move_of(cmd: &Command) -> Option<(&str, String)> {
    match &cmd.op {
        Op::UpdateNode {
            id,
            node_type: None,
            position: Some(p),
            data: None,
        } => Some((id, point_text(p))),
        _ => None,
    }
}

/// Text that the apply function's JSON encoder writes back unchanged
/// between quotes (it escapes control characters, `"`, `\`, `/` and DEL).
fn plain(s: &str) -> bool {
    !s.bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == b'/' || b == 0x7f)
}

/// A stored node split as apply_command.lua's NODE_SHAPE splits it:
/// (id, type, data, createdBy without its quotes).
fn split_node(json: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = json.strip_prefix("{\"id\":\"")?;
    let id_end = rest.find('"')?;
    let id = &rest[..id_end];
    let rest = rest[id_end..].strip_prefix("\",\"type\":")?;
    let type_end = rest.find(",\"position\":{")?;
    let ty = &rest[..type_end];
    let rest = &rest[type_end + ",\"position\":".len()..];
    let pos_end = rest.find('}')?;
    let rest = rest[pos_end + 1..].strip_prefix(",\"data\":")?;
    let data_end = rest.rfind(",\"version\":")?;
    let data = &rest[..data_end];
    let tail = &rest[data_end + ",\"version\":".len()..];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (version, tail) = tail.split_once(",\"createdBy\":\"")?;
    let (created_by, tail) = tail.split_once("\",\"updatedBy\":\"")?;
    let (updated_by, tail) = tail.split_once("\",\"updatedAt\":")?;
    let updated_at = tail.strip_suffix('}')?;
    let ok = digits(version)
        && digits(updated_at)
        && !created_by.contains('"')
        && !updated_by.contains('"');
    ok.then_some((id, ty, data, created_by))
}

/// Decides a move on `known` (the graph as the worker remembers it) the way
/// the apply function would, and advances `known` past it; None when the
/// apply function must decide it.
fn decide(known: &mut Known, ctx: &ApplyContext, cmd: &Command) -> Option<Move> {
    let (id, position) = move_of(cmd)?;
    if !plain(&cmd.operation_id) || !plain(&known.epoch) || !plain(&ctx.user_id) {
        return None;
    }
    let (old, fv_text) = known.nodes.get(id)?;
    let (stored_id, ty, data, created_by) = split_node(old)?;
    let mut fv: Map<String, Value> = serde_json::from_str(fv_text).ok()?;
    // An open MANUAL conflict on the position is settled by this write: the
    // apply function logs that.
    let field = format!("/nodes/{id}/position");
    if fv.get("open").and_then(|o| o.get(&field)).is_some() {
        return None;
    }
    // A change of the position after the client's base version by someone
    // else is a conflict for the strategy to decide.
    if let (Some(base), Some(entry)) = (cmd.base_version, fv.get("position")) {
        let at = entry.get(0)?.as_f64()?;
        let by = entry.get(1)?.as_str()?;
        if at > base as f64 && by != ctx.user_id {
            return None;
        }
    }
    let user = &ctx.user_id;
    let now = ctx.now_ms;
    let new_version = known.version + 1;
    let json = format!(
        "{{\"id\":\"{stored_id}\",\"type\":{ty},\"position\":{position},\"data\":{data},\"version\":{new_version},\"createdBy\":\"{created_by}\",\"updatedBy\":\"{user}\",\"updatedAt\":{now}}}"
    );
    fv.insert("position".into(), json!([new_version, user]));
    fv.entry("data").or_insert_with(|| json!({}));
    let fv = Value::Object(fv).to_string();
    let new_checksum = (known.checksum + H48 - entity_hash(&format!("n{old}")) % H48
        + entity_hash(&format!("n{json}")))
        % H48;
    let change = format!(
        "{{\"nodes\":[{json}],\"edges\":[],\"removedNodes\":[],\"removedEdges\":[],\"undo\":{{\"nodes\":{{\"{id}\":{old}}},\"edges\":{{}}}}}}"
    );
    let outcome = format!(
        "{{\"status\":\"applied\",\"version\":{new_version},\"change\":{change},\"conflicts\":[]}}"
    );
    let decided = Move {
        epoch: known.epoch.clone(),
        version: known.version,
        checksum: known.checksum,
        new_version,
        new_checksum,
        node_id: id.to_string(),
        json: json.clone(),
        fv: fv.clone(),
        change,
        outcome,
    };
    known.version = new_version;
    known.checksum = new_checksum;
    known.nodes.insert(id.to_string(), (json, fv));
    Some(decided)
}

/// How one command of a batch is sent.
enum Plan {
    Apply,
    Commit(Box<Move>),
}

impl GraphStore {
    /// Reads what deciding moves of `graph_id` needs and `known` lacks: the
    /// graph's epoch, version and checksum, and the nodes `ids` with their
    /// per-field versions, in one transaction. None when the graph does not
    /// exist (the apply function answers for it).
    async fn remember(
        &self,
        graph_id: &str,
        known: Option<Known>,
        ids: &[&str],
    ) -> Result<Option<Known>, StoreError> {
        let k = &self.keys;
        let fv_fields: Vec<String> = ids.iter().map(|id| format!("n:{id}")).collect();
        type Fields = Vec<Option<String>>;
        let (meta, nodes, fvs): (Fields, Fields, Fields) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(k.graph_meta(graph_id))
            .arg("epoch")
            .arg("version")
            .arg("checksum")
            .cmd("HMGET")
            .arg(k.graph_nodes(graph_id))
            .arg(ids)
            .cmd("HMGET")
            .arg(k.graph_field_versions(graph_id))
            .arg(&fv_fields)
            .query_async(&mut self.redis.conn())
            .await?;
        let number = |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<u64>().ok());
        let (Some(epoch), Some(version), Some(checksum)) =
            (meta[0].clone(), number(&meta[1]), number(&meta[2]))
        else {
            return Ok(None);
        };
        let mut known = match known {
            Some(k) if k.epoch == epoch && k.version == version && k.checksum == checksum => k,
            _ => Known {
                epoch,
                version,
                checksum,
                nodes: HashMap::new(),
            },
        };
        for ((id, node), fv) in ids.iter().zip(nodes).zip(fvs) {
            if let (Some(node), Some(fv)) = (node, fv) {
                known.nodes.insert(id.to_string(), (node, fv));
            }
        }
        Ok(Some(known))
    }

    /// [`GraphStore::apply_batch`] with moves decided here (module doc).
    pub(super) async fn apply_batch_deciding(
        &self,
        cache: &MoveCache,
        batch: &[(&ApplyContext, &Command)],
    ) -> Result<Vec<String>, StoreError> {
        // Graphs whose every command in the batch is a move.
        let mut moves_only: HashMap<&str, bool> = HashMap::new();
        for (ctx, cmd) in batch {
            let m = move_of(cmd).is_some();
            moves_only
                .entry(ctx.graph_id.as_str())
                .and_modify(|all| *all &= m)
                .or_insert(m);
        }
        // Take out what is remembered of the graphs of moves and read what
        // is not, one transaction per graph; forget the others.
        let mut working: HashMap<&str, Known> = HashMap::new();
        for (graph, all) in &moves_only {
            let known = cache.take(graph);
            if !*all {
                continue;
            }
            let mut missing: Vec<&str> = Vec::new();
            for (_, cmd) in batch.iter().filter(|(c, _)| c.graph_id == *graph) {
                if let Some((id, _)) = move_of(cmd) {
                    let remembered = known.as_ref().is_some_and(|k| k.nodes.contains_key(id));
                    if !remembered && !missing.contains(&id) {
                        missing.push(id);
                    }
                }
            }
            let known = if missing.is_empty() {
                known
            } else {
                self.remember(graph, known, &missing).await?
            };
            if let Some(known) = known {
                working.insert(graph, known);
            }
        }
        // Decide, graph by graph; a graph with one undecidable command goes
        // to the apply function whole (and is forgotten).
        let mut plans: Vec<Plan> = batch.iter().map(|_| Plan::Apply).collect();
        working.retain(|graph, known| {
            let mut decided = Vec::new();
            for (i, (ctx, cmd)) in batch.iter().enumerate() {
                if ctx.graph_id != *graph {
                    continue;
                }
                match decide(known, ctx, cmd) {
                    Some(m) => decided.push((i, m)),
                    None => return false,
                }
            }
            for (i, m) in decided {
                plans[i] = Plan::Commit(Box::new(m));
            }
            true
        });

        let mut pipe = redis::pipe();
        for ((ctx, cmd), plan) in batch.iter().zip(&plans) {
            match plan {
                Plan::Apply => {
                    pipe.add_command(self.invocation(ctx, cmd));
                }
                Plan::Commit(m) => {
                    pipe.invoke_script(&self.commit_invocation(ctx, cmd, m));
                }
            }
        }
        self.redis.durable(&mut pipe);
        let replies: Vec<redis::Value> =
            crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?;

        let mut texts: Vec<Option<String>> = Vec::with_capacity(batch.len());
        // Graphs with a commit that found the graph changed: from there on
        // their commands go to the apply function, in order.
        let mut redo: Vec<usize> = Vec::new();
        let mut changed: Vec<&str> = Vec::new();
        for (i, (((ctx, _), plan), reply)) in batch.iter().zip(&plans).zip(replies).enumerate() {
            let graph = ctx.graph_id.as_str();
            match plan {
                Plan::Apply => {
                    let text: String = redis::from_redis_value(reply)
                        .map_err(|e| StoreError::Corrupt(format!("apply answered {e}")))?;
                    texts.push(Some(text));
                }
                Plan::Commit(m) => {
                    if changed.contains(&graph) || reply == redis::Value::Nil {
                        if !changed.contains(&graph) {
                            changed.push(graph);
                        }
                        redo.push(i);
                        texts.push(None);
                    } else {
                        texts.push(Some(m.outcome.clone()));
                    }
                }
            }
        }
        // What was committed is remembered; a graph that changed is not.
        for (graph, known) in working {
            if !changed.contains(&graph) {
                cache.put(graph, known);
            }
        }
        if !redo.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &redo {
                let (ctx, cmd) = batch[i];
                pipe.add_command(self.invocation(ctx, cmd));
            }
            self.redis.durable(&mut pipe);
            let again: Vec<String> =
                crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?;
            for (i, text) in redo.into_iter().zip(again) {
                texts[i] = Some(text);
            }
        }
        Ok(texts.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn commit_invocation(
        &self,
        ctx: &ApplyContext,
        cmd: &Command,
        m: &Move,
    ) -> redis::ScriptInvocation<'static> {
        let k = &self.keys;
        let g = ctx.graph_id.as_str();
        let user = ctx.user_id.as_str();
        let timestamp = cmd.timestamp.unwrap_or(0);
        let note = format!(
            "{{\"graphId\":\"{g}\",\"epoch\":\"{}\",\"operationId\":\"{}\",\"userId\":\"{user}\",\"type\":\"{}\",\"timestamp\":{timestamp},\"appliedAt\":{},\"command\":{},\"outcome\":{}}}",
            m.epoch,
            cmd.operation_id,
            cmd.op.type_name(),
            ctx.now_ms,
            cmd.canonical,
            m.outcome
        );
        let mut inv = SCRIPTS.commit_move.prepare_invoke();
        inv.key(k.graph_meta(g))
            .key(k.graph_nodes(g))
            .key(k.graph_field_versions(g))
            .key(k.graph_log(g))
            .key(k.graph_op(g, &cmd.operation_id))
            .key(k.graph_undo(g, user))
            .key(k.graph_redo(g, user))
            .arg(&m.epoch)
            .arg(m.version)
            .arg(m.checksum)
            .arg(m.new_version)
            .arg(m.new_checksum)
            .arg(&m.node_id)
            .arg(&m.json)
            .arg(format!("n:{}", m.node_id))
            .arg(&m.fv)
            .arg(&cmd.operation_id)
            .arg(user)
            .arg(cmd.op.type_name())
            .arg(timestamp)
            .arg(&m.change)
            .arg(self.settings.log_retention)
            .arg(self.settings.op_ttl_s)
            .arg(format!(
                "{{\"status\":\"applied\",\"version\":{}}}",
                m.new_version
            ))
            .arg(self.redis.graph_publish_command())
            .arg(k.graph_channel(g))
            .arg(note)
            .arg(k.user_outcomes_channel(user));
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"{"id":"n1","type":"box","position":{"x":1,"y":2},"data":{"label":"a,\"version\":1"},"version":7,"createdBy":"u1","updatedBy":"u2","updatedAt":1700000000000}"#;

    #[test]
    fn a_stored_node_splits_as_the_script_splits_it() {
        let (id, ty, data, created_by) = split_node(NODE).unwrap();
        assert_eq!(id, "n1");
        assert_eq!(ty, "\"box\"");
        assert_eq!(data, r#"{"label":"a,\"version\":1"}"#);
        assert_eq!(created_by, "u1");
    }

    #[test]
    fn text_of_another_shape_is_left_to_the_apply_function() {
        for other in [
            r#"{"type":"box","id":"n1","position":{"x":1,"y":2},"data":{},"version":7,"createdBy":"u1","updatedBy":"u2","updatedAt":1}"#,
            r#"{"id":"n1","type":"box","position":{"x":1,"y":2},"data":{},"version":7,"createdBy":"u1","updatedBy":"u2"}"#,
            r#"{"id":"n1","type":"box","position":{"x":1,"y":2},"data":{},"version":x,"createdBy":"u1","updatedBy":"u2","updatedAt":1}"#,
            "",
        ] {
            assert!(split_node(other).is_none(), "{other}");
        }
    }

    fn known(nodes: usize) -> Known {
        Known {
            epoch: "e".into(),
            version: 1,
            checksum: 0,
            nodes: (0..nodes)
                .map(|i| (format!("n{i}"), (String::new(), String::new())))
                .collect(),
        }
    }

    #[test]
    fn the_cache_forgets_everything_rather_than_grow_past_its_cap() {
        let cache = MoveCache::new(10);
        cache.put("a", known(4));
        cache.put("b", known(4));
        // Replacing a graph counts its nodes once.
        cache.put("b", known(5));
        assert_eq!(cache.lock().nodes, 9);
        cache.put("c", known(3));
        assert!(cache.take("a").is_none() && cache.take("b").is_none());
        assert_eq!(cache.take("c").map(|k| k.nodes.len()), Some(3));
        assert_eq!(cache.lock().nodes, 0);
    }

    #[test]
    fn only_text_the_encoder_leaves_alone_is_plain() {
        assert!(plain("c1-42-run:7.x_y"));
        assert!(!plain("a/b"));
        assert!(!plain("a\"b"));
        assert!(!plain("a\\b"));
        assert!(!plain("a\nb"));
    }
}
