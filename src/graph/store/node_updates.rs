//! Node updates decided by the worker (docs/graph.md, "Node updates decided
//! by the worker").
//!
//! Most commands of a graph editor are `UPDATE_NODE`s, above all drags (a
//! stream of position updates). For those the apply function spends most of
//! its time in Lua reading the node back, deciding and building text. The
//! worker owns the graph's partition and sees every command of it in order,
//! so it can remember the nodes it updates and decide such a command itself:
//! the same checks, the same stored bytes, change, outcome and note as
//! `lua/apply_command.lua` (the per-field versions equal in value). A
//! batch's decided updates of one graph go to Redis as one
//! `lua/commit_node.lua` call, which writes them in order while the graph is
//! still the one the worker decided on (epoch, version and checksum, and the
//! node's per-field versions) and the operation has no outcome yet, and
//! stops at the first where that fails. One call per graph rather than per
//! update matters under load, when a read brings several commands of a
//! graph: Redis spends most of a script call on the call itself (arguments
//! into Lua, the graph's checks), not on the writes.
//!
//! Anything else goes to the apply function as before: other commands, an
//! update that meets a concurrent change or an open conflict or changes
//! nothing, ids that would need escaping, a node the worker cannot read in
//! the stored shape, and every command of a graph after a commit that found
//! the graph changed. Within one batch a graph's commands are either all
//! commits or all applies, so that the updates a commit did not write can be
//! applied again, in order.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::{GraphStore, StoreError};
use crate::graph::command::{data_texts, point_text, type_text};
use crate::graph::{ApplyContext, Command, Op, entity_hash};
use crate::scripts::SCRIPTS;

/// The checksum's modulus (docs/graph.md, Checksum).
const H48: u64 = 1 << 48;

/// What the worker remembers of the graphs it updates nodes in: each graph as
/// it was at one version, and the nodes it read or wrote at that version.
/// A batch takes its graphs out and puts back what it committed, so nothing
/// is copied, and a batch that fails half way leaves them forgotten.
pub(super) struct NodeCache {
    /// Most nodes remembered in all; past it everything is forgotten.
    cap: usize,
    /// `node.data` is MERGE (decided per key); the settings do not change.
    merge_data: bool,
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

/// An update decided by the worker, ready to commit.
struct Decided {
    /// The graph the update was decided on.
    epoch: String,
    version: u64,
    checksum: u64,
    /// What the graph becomes.
    new_version: u64,
    new_checksum: u64,
    node_id: String,
    json: String,
    /// The node's per-field versions as stored when decided, and after.
    old_fv: String,
    fv: String,
    change: String,
    outcome: String,
}

impl NodeCache {
    pub(super) fn new(cap: usize, merge_data: bool) -> NodeCache {
        NodeCache {
            cap,
            merge_data,
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
        if known.nodes.len() > self.cap {
            return;
        }
        if r.nodes + known.nodes.len() > self.cap {
            r.graphs.clear();
            r.nodes = 0;
        }
        r.nodes += known.nodes.len();
        r.graphs.insert(graph_id.to_string(), known);
    }
}

/// The node an `UPDATE_NODE` changes: the commands the worker may decide.
fn update_of(cmd: &Command) -> Option<&str> {
    match &cmd.op {
        Op::UpdateNode { id, .. } => Some(id),
        _ => None,
    }
}

/// Text that the apply function's JSON encoder writes back unchanged
/// between quotes (it escapes control characters, `"`, `\`, `/` and DEL).
fn plain(s: &str) -> bool {
    !s.bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == b'/' || b == 0x7f)
}

/// A stored node split as apply_command.lua's NODE_SHAPE splits it.
struct StoredNode<'a> {
    id: &'a str,
    ty: &'a str,
    position: &'a str,
    data: &'a str,
    /// Without its quotes.
    created_by: &'a str,
}

fn split_node(json: &str) -> Option<StoredNode<'_>> {
    let rest = json.strip_prefix("{\"id\":\"")?;
    let id_end = rest.find('"')?;
    let id = &rest[..id_end];
    let rest = rest[id_end..].strip_prefix("\",\"type\":")?;
    let type_end = rest.find(",\"position\":{")?;
    let ty = &rest[..type_end];
    let rest = &rest[type_end + ",\"position\":".len()..];
    let pos_end = rest.find('}')?;
    let position = &rest[..=pos_end];
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
    ok.then_some(StoredNode {
        id,
        ty,
        position,
        data,
        created_by,
    })
}

/// Index just past the JSON string that opens at `i`.
fn skip_string(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match s.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// Index just past the JSON value that starts at `i` (no whitespace, as
/// graphq writes it).
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => skip_string(s, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            loop {
                match s.get(j)? {
                    b'"' => j = skip_string(s, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => Some(
            s[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))
                .map_or(s.len(), |k| i + k),
        ),
    }
}

/// A stored `data` object as (quoted key, value text) pairs in stored order,
/// split as the apply function splits it; None for text it would write
/// differently.
fn data_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let s = text.as_bytes();
    let mut pairs = Vec::new();
    if text != "{}" {
        if s.first() != Some(&b'{') {
            return None;
        }
        let mut i = 1;
        loop {
            let key_end = skip_string(s, i)?;
            if s.get(key_end) != Some(&b':') {
                return None;
            }
            let value_end = skip_value(s, key_end + 1)?;
            // A key twice is not what graphq writes.
            if pairs
                .iter()
                .any(|(k, _): &(String, String)| Some(k.as_str()) == text.get(i..key_end))
            {
                return None;
            }
            pairs.push((
                text.get(i..key_end)?.to_string(),
                text.get(key_end + 1..value_end)?.to_string(),
            ));
            match s.get(value_end)? {
                b'}' if value_end + 1 == s.len() => break,
                b',' => i = value_end + 1,
                _ => return None,
            }
        }
    }
    (encode_data(&pairs) == text).then_some(pairs)
}

fn encode_data(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// A data key as a JSON pointer segment (RFC 6901), as conflict paths name it.
fn pointer_key(quoted: &str) -> Option<String> {
    let key: String = serde_json::from_str(quoted).ok()?;
    Some(key.replace('~', "~0").replace('/', "~1"))
}

/// Decides an `UPDATE_NODE` on `known` (the graph as the worker remembers
/// it) the way the apply function would, and advances `known` past it; None
/// when the apply function must decide it: a field it writes was changed
/// after the command's base version by another user, or has an open MANUAL
/// conflict, or nothing would change. `merge_data`: `node.data` is MERGE.
fn decide(
    known: &mut Known,
    ctx: &ApplyContext,
    cmd: &Command,
    merge_data: bool,
) -> Option<Decided> {
    let Op::UpdateNode {
        id,
        node_type,
        position,
        data,
    } = &cmd.op
    else {
        return None;
    };
    let user = ctx.user_id.as_str();
    if !plain(&cmd.operation_id) || !plain(&known.epoch) || !plain(user) {
        return None;
    }
    let (old, fv_text) = known.nodes.get(id.as_str())?;
    let stored = split_node(old)?;
    let mut fv: Map<String, Value> = serde_json::from_str(fv_text).ok()?;
    let mut field_versions = fv
        .get("data")
        .map_or(Some(Map::new()), |d| d.as_object().cloned())?;

    // The conflict checks of the apply function, for the fields written.
    let open = |path: String| fv.get("open").and_then(|o| o.get(&path)).is_some();
    let concurrent = |entry: Option<&Value>| -> Option<bool> {
        match (cmd.base_version, entry) {
            (Some(base), Some(e)) => {
                let at = e.get(0)?.as_f64()?;
                Some(at > base as f64 && e.get(1)?.as_str()? != user)
            }
            _ => Some(false),
        }
    };
    let new_type = node_type.as_ref().map(type_text);
    let new_position = position.as_ref().map(point_text);
    let (set, unset) = data.as_ref().map(data_texts).unwrap_or_default();
    for (name, written) in [
        ("type", new_type.is_some()),
        ("position", new_position.is_some()),
    ] {
        if written && (concurrent(fv.get(name))? || open(format!("/nodes/{id}/{name}"))) {
            return None;
        }
    }
    let keys: Vec<&String> = set.iter().map(|[k, _]| k).chain(&unset).collect();
    if data.is_some() {
        if merge_data {
            for k in &keys {
                if concurrent(field_versions.get(k.as_str()))?
                    || open(format!("/nodes/{id}/data/{}", pointer_key(k)?))
                {
                    return None;
                }
            }
        } else {
            for entry in field_versions.values() {
                if concurrent(Some(entry))? {
                    return None;
                }
            }
            if open(format!("/nodes/{id}/data")) {
                return None;
            }
        }
    }
    // With MERGE, an empty data patch changes nothing; the apply function
    // answers that with a revert.
    let changes_data = data.is_some() && (!merge_data || !keys.is_empty());
    if new_type.is_none() && new_position.is_none() && !changes_data {
        return None;
    }

    let new_version = known.version + 1;
    let stamp = json!([new_version, user]);
    let data_text = if data.is_some() {
        let mut pairs = data_pairs(stored.data)?;
        for [k, v] in &set {
            match pairs.iter_mut().find(|(key, _)| key == k) {
                Some(pair) => pair.1 = v.clone(),
                None => pairs.push((k.clone(), v.clone())),
            }
        }
        pairs.retain(|(key, _)| !unset.contains(key));
        encode_data(&pairs)
    } else {
        stored.data.to_string()
    };
    let json = format!(
        "{{\"id\":\"{}\",\"type\":{},\"position\":{},\"data\":{data_text},\"version\":{new_version},\"createdBy\":\"{}\",\"updatedBy\":\"{user}\",\"updatedAt\":{}}}",
        stored.id,
        new_type.as_deref().unwrap_or(stored.ty),
        new_position.as_deref().unwrap_or(stored.position),
        stored.created_by,
        ctx.now_ms
    );
    if new_type.is_some() {
        fv.insert("type".into(), stamp.clone());
    }
    if new_position.is_some() {
        fv.insert("position".into(), stamp.clone());
    }
    if data.is_some() {
        for k in &keys {
            field_versions.insert((*k).clone(), stamp.clone());
        }
    }
    fv.insert("data".into(), Value::Object(field_versions));
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
    let decided = Decided {
        epoch: known.epoch.clone(),
        version: known.version,
        checksum: known.checksum,
        new_version,
        new_checksum,
        node_id: id.to_string(),
        json: json.clone(),
        old_fv: fv_text.clone(),
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
    Commit(Box<Decided>),
}

/// What one call of the pipeline answers for: a command sent to the apply
/// function, or a graph's commits (the batch positions of all its commands).
enum Call<'a> {
    Apply(usize),
    Commits(&'a str, Vec<usize>),
}

impl GraphStore {
    /// Reads what deciding updates of `graph_id` needs and `known` lacks: the
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

    /// [`GraphStore::apply_batch`] with node updates decided here (module doc).
    pub(super) async fn apply_batch_deciding(
        &self,
        cache: &NodeCache,
        batch: &[(&ApplyContext, &Command)],
    ) -> Result<Vec<String>, StoreError> {
        // Graphs whose every command in the batch is a node update.
        let mut updates_only: HashMap<&str, bool> = HashMap::new();
        for (ctx, cmd) in batch {
            let m = update_of(cmd).is_some();
            updates_only
                .entry(ctx.graph_id.as_str())
                .and_modify(|all| *all &= m)
                .or_insert(m);
        }
        // Take out what is remembered of the graphs of node updates and read what
        // is not, one transaction per graph; forget the others.
        let mut working: HashMap<&str, Known> = HashMap::new();
        for (graph, all) in &updates_only {
            let known = cache.take(graph);
            if !*all {
                continue;
            }
            let mut needed: Vec<&str> = Vec::new();
            for (_, cmd) in batch.iter().filter(|(c, _)| c.graph_id == *graph) {
                if let Some(id) = update_of(cmd)
                    && !needed.contains(&id)
                {
                    needed.push(id);
                }
            }
            // One unknown node: read them all, so that they are all of the
            // version the read finds.
            let all_known = needed
                .iter()
                .all(|id| known.as_ref().is_some_and(|k| k.nodes.contains_key(*id)));
            let known = if all_known {
                known
            } else {
                self.remember(graph, known, &needed).await?
            };
            if let Some(known) = known {
                working.insert(graph, known);
            }
        }
        // Decide, graph by graph; a graph with one undecidable command goes
        // to the apply function whole (and is forgotten).
        let mut plans: Vec<Plan> = batch.iter().map(|_| Plan::Apply).collect();
        // The batch positions of each committing graph's commands, in order.
        let mut commits: HashMap<&str, Vec<usize>> = HashMap::new();
        working.retain(|graph, known| {
            let mut decided = Vec::new();
            for (i, (ctx, cmd)) in batch.iter().enumerate() {
                if ctx.graph_id != *graph {
                    continue;
                }
                match decide(known, ctx, cmd, cache.merge_data) {
                    Some(m) => decided.push((i, m)),
                    None => return false,
                }
            }
            let mine = commits.entry(graph).or_default();
            for (i, m) in decided {
                plans[i] = Plan::Commit(Box::new(m));
                mine.push(i);
            }
            true
        });

        // One call per command for the apply function; one per graph for its
        // commits, at the place of the graph's first command.
        let mut pipe = redis::pipe();
        let mut calls: Vec<Call> = Vec::new();
        for (i, ((ctx, cmd), plan)) in batch.iter().zip(&plans).enumerate() {
            match plan {
                Plan::Apply => {
                    pipe.add_command(self.invocation(ctx, cmd));
                    calls.push(Call::Apply(i));
                }
                Plan::Commit(_) => {
                    let graph = ctx.graph_id.as_str();
                    // Sent with the graph's first command already.
                    let Some(mine) = commits.remove(graph) else {
                        continue;
                    };
                    let updates = mine.iter().filter_map(|&j| match &plans[j] {
                        Plan::Commit(m) => Some((batch[j].0, batch[j].1, m.as_ref())),
                        Plan::Apply => None,
                    });
                    pipe.invoke_script(&self.commit_invocation(graph, updates));
                    calls.push(Call::Commits(graph, mine));
                }
            }
        }
        self.redis.durable(&mut pipe);
        let replies: Vec<redis::Value> =
            crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?;

        let mut texts: Vec<Option<String>> = vec![None; batch.len()];
        // The updates a commit did not write (the graph changed, or the
        // operation was decided already) go to the apply function, in order,
        // and the graph is forgotten.
        let mut redo: Vec<usize> = Vec::new();
        let mut changed: Vec<&str> = Vec::new();
        for (call, reply) in calls.into_iter().zip(replies) {
            match call {
                Call::Apply(i) => {
                    let text: String = redis::from_redis_value(reply)
                        .map_err(|e| StoreError::Corrupt(format!("apply answered {e}")))?;
                    texts[i] = Some(text);
                }
                Call::Commits(graph, mine) => {
                    let written: usize = redis::from_redis_value(reply)
                        .map_err(|e| StoreError::Corrupt(format!("commit answered {e}")))?;
                    for (n, &i) in mine.iter().enumerate() {
                        match &plans[i] {
                            Plan::Commit(m) if n < written => texts[i] = Some(m.outcome.clone()),
                            _ => redo.push(i),
                        }
                    }
                    if written < mine.len() {
                        changed.push(graph);
                    }
                }
            }
        }
        redo.sort_unstable();
        // What was committed is remembered; a graph that changed is not.
        for (graph, known) in working {
            if !changed.contains(&graph) {
                cache.put(graph, known);
            }
        }
        if !redo.is_empty() {
            let again = self.apply_all(redo.iter().map(|&i| batch[i])).await?;
            for (i, text) in redo.into_iter().zip(again) {
                texts[i] = Some(text);
            }
        }
        Ok(texts.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// One `lua/commit_node.lua` call for the decided updates of `graph`,
    /// in order.
    fn commit_invocation<'a>(
        &self,
        graph: &str,
        updates: impl Iterator<Item = (&'a ApplyContext, &'a Command, &'a Decided)>,
    ) -> redis::ScriptInvocation<'static> {
        let k = &self.keys;
        let mut inv = SCRIPTS.commit_node.prepare_invoke();
        inv.key(k.graph_meta(graph))
            .key(k.graph_nodes(graph))
            .key(k.graph_field_versions(graph))
            .key(k.graph_log(graph));
        for (n, (ctx, cmd, m)) in updates.enumerate() {
            let user = ctx.user_id.as_str();
            // The graph as the first update was decided on.
            if n == 0 {
                inv.arg(&m.epoch)
                    .arg(m.version)
                    .arg(m.checksum)
                    .arg(self.settings.log_retention)
                    .arg(self.settings.op_ttl_s)
                    .arg(self.redis.graph_publish_command())
                    .arg(k.graph_channel(graph));
            }
            let timestamp = cmd.timestamp.unwrap_or(0);
            let note = format!(
                "{{\"graphId\":\"{graph}\",\"epoch\":\"{}\",\"operationId\":\"{}\",\"userId\":\"{user}\",\"type\":\"{}\",\"timestamp\":{timestamp},\"appliedAt\":{},\"command\":{},\"outcome\":{}}}",
                m.epoch,
                cmd.operation_id,
                cmd.op.type_name(),
                ctx.now_ms,
                cmd.canonical,
                m.outcome
            );
            inv.key(k.graph_op(graph, &cmd.operation_id))
                .key(k.graph_undo(graph, user))
                .key(k.graph_redo(graph, user))
                .arg(m.new_version)
                .arg(m.new_checksum)
                .arg(&m.node_id)
                .arg(&m.json)
                .arg(format!("n:{}", m.node_id))
                .arg(&m.fv)
                .arg(&m.old_fv)
                .arg(&cmd.operation_id)
                .arg(user)
                .arg(cmd.op.type_name())
                .arg(timestamp)
                .arg(&m.change)
                .arg(format!(
                    "{{\"status\":\"applied\",\"version\":{}}}",
                    m.new_version
                ))
                .arg(note)
                .arg(k.user_outcomes_channel(user));
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"{"id":"n1","type":"box","position":{"x":1,"y":2},"data":{"label":"a,\"version\":1"},"version":7,"createdBy":"u1","updatedBy":"u2","updatedAt":1700000000000}"#;

    #[test]
    fn a_stored_node_splits_as_the_script_splits_it() {
        let node = split_node(NODE).unwrap();
        assert_eq!(node.id, "n1");
        assert_eq!(node.ty, "\"box\"");
        assert_eq!(node.position, r#"{"x":1,"y":2}"#);
        assert_eq!(node.data, r#"{"label":"a,\"version\":1"}"#);
        assert_eq!(node.created_by, "u1");
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

    #[test]
    fn stored_data_splits_into_its_pairs_in_order() {
        let text = r#"{"b":{"x":[1,"}"]},"a":"q\"\\","c":1e300,"d":null}"#;
        let pairs = data_pairs(text).unwrap();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec![r#""b""#, r#""a""#, r#""c""#, r#""d""#]);
        assert_eq!(pairs[0].1, r#"{"x":[1,"}"]}"#);
        assert_eq!(pairs[1].1, r#""q\"\\""#);
        assert_eq!(data_pairs("{}"), Some(vec![]));
        // Text that is not an object as graphq writes it is left to the
        // apply function.
        assert_eq!(data_pairs(r#"{"a":1,}"#), None);
        assert_eq!(data_pairs(r#"{a:1}"#), None);
        assert_eq!(data_pairs(r#"{"a":1,"a":2}"#), None);
        assert_eq!(data_pairs(r#"{"a":1"#), None);
        assert_eq!(data_pairs("[]"), None);
    }

    #[test]
    fn a_data_key_becomes_a_pointer_segment() {
        assert_eq!(pointer_key(r#""a/b~c""#).as_deref(), Some("a~1b~0c"));
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
        let cache = NodeCache::new(10, true);
        cache.put("a", known(4));
        cache.put("b", known(4));
        // Replacing a graph counts its nodes once.
        cache.put("b", known(5));
        assert_eq!(cache.lock().nodes, 9);
        cache.put("c", known(3));
        assert!(cache.take("a").is_none() && cache.take("b").is_none());
        assert_eq!(cache.take("c").map(|k| k.nodes.len()), Some(3));
        assert_eq!(cache.lock().nodes, 0);
        // A graph bigger than the cap alone is not remembered at all.
        cache.put("d", known(11));
        assert!(cache.take("d").is_none());
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
