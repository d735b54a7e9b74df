//! The jobs of the `sync` and `analytics` queues besides snapshots,
//! described in docs/queue.md ("Jobs graphq runs"):
//!
//! - `BROADCAST_UPDATE {graphId}`: every subscriber of the graph, on every
//!   gateway, gets `SYNC reset` with the current state (after an operator
//!   repaired a graph by hand, say).
//! - `SYNC_CLIENT {graphId, userId}`: that user's sockets on the graph get a
//!   SYNC from the version each has (`in_sync`, `behind` or `reset`).
//! - `RESOLVE_CONFLICT {graphId, userId, nodeId | edgeId, field, value}` or
//!   `{graphId, userId, conflictId, value}`: settles a `MANUAL` conflict by
//!   queueing the chosen value as an ordinary UPDATE_NODE / UPDATE_EDGE /
//!   UPDATE_VIEWPORT on `commands`, so it is ordered, versioned, logged and
//!   broadcast like any edit (and resolves the open conflict in the log).
//!   With `conflictId` the field is the one that conflict names, and the
//!   conflict must be open. Its operation id is derived from the job id: a
//!   redelivered job queues nothing twice.
//! - `CALCULATE_PROGRESS {graphId}`: counts the graph's nodes by
//!   `data.status` into `{g:G}:progress`.
//! - `UPDATE_METRICS {graphId}`: records size and activity of the graph in
//!   `{g:G}:metrics`, with the versions per minute since the previous run.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use graphq::db::now_ms;
use graphq::graph::command::{self, is_entity_id, is_graph_id};
use graphq::graph::{GraphStore, command_job};
use graphq::queue::{Job, JobError, Queue};

pub const BROADCAST_UPDATE: &str = "BROADCAST_UPDATE";
pub const SYNC_CLIENT: &str = "SYNC_CLIENT";
pub const RESOLVE_CONFLICT: &str = "RESOLVE_CONFLICT";
pub const CALCULATE_PROGRESS: &str = "CALCULATE_PROGRESS";
pub const UPDATE_METRICS: &str = "UPDATE_METRICS";

/// `data.status` values that count as finished in `CALCULATE_PROGRESS`.
const DONE: &[&str] = &["done", "complete", "completed"];

/// Handles the jobs above.
#[derive(Clone)]
pub struct JobsHandler {
    store: GraphStore,
    /// Where `RESOLVE_CONFLICT` queues its command; absent in processes that
    /// do not run `commands` (the job then fails permanently, saying so).
    commands: Option<Queue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    graph_id: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resolution {
    graph_id: String,
    user_id: String,
    node_id: Option<String>,
    edge_id: Option<String>,
    #[serde(default)]
    field: String,
    conflict_id: Option<String>,
    value: Value,
}

/// The command type and payload that write `value` to the field a
/// conflict names (a JSON pointer: `/nodes/ID/position`, `/nodes/ID/data/KEY`,
/// `/edges/ID/type`, `/viewport`, ...; docs/graph.md, Conflicts).
fn write_of(pointer: &str, value: &Value) -> Option<(&'static str, Value)> {
    if pointer == "/viewport" {
        return Some(("UPDATE_VIEWPORT", value.clone()));
    }
    let unescape = |s: &str| s.replace("~1", "/").replace("~0", "~");
    let mut parts = pointer.strip_prefix('/')?.splitn(4, '/');
    let kind = match parts.next()? {
        "nodes" => "UPDATE_NODE",
        "edges" => "UPDATE_EDGE",
        _ => return None,
    };
    let id = unescape(parts.next()?);
    let patch = match (parts.next()?, parts.next()) {
        (name @ ("position" | "type" | "data"), None) => json!({ name: value }),
        ("data", Some(key)) => json!({"data": { unescape(key): value }}),
        _ => return None,
    };
    Some((kind, json!({"id": id, "patch": patch})))
}

impl JobsHandler {
    pub fn new(store: GraphStore) -> JobsHandler {
        JobsHandler {
            store,
            commands: None,
        }
    }

    pub fn with_commands(mut self, commands: Queue) -> JobsHandler {
        self.commands = Some(commands);
        self
    }

    pub fn handles(name: &str) -> bool {
        [
            BROADCAST_UPDATE,
            SYNC_CLIENT,
            RESOLVE_CONFLICT,
            CALCULATE_PROGRESS,
            UPDATE_METRICS,
        ]
        .contains(&name)
    }

    pub async fn process(&self, job: &Job) -> Result<(), JobError> {
        match job.name.as_str() {
            BROADCAST_UPDATE => {
                let graph = graph_of(job)?;
                self.control(&graph, json!({"graphId": graph, "control": "reset"}))
                    .await
            }
            SYNC_CLIENT => {
                let graph = graph_of(job)?;
                let user = job
                    .json::<Target>()
                    .ok()
                    .and_then(|t| t.user_id)
                    .filter(|u| is_entity_id(u))
                    .ok_or_else(|| bad(job, "needs a valid `userId`"))?;
                self.control(
                    &graph,
                    json!({"graphId": graph, "control": "sync", "userId": user}),
                )
                .await
            }
            RESOLVE_CONFLICT => self.resolve(job).await,
            CALCULATE_PROGRESS => self.progress(&graph_of(job)?).await,
            UPDATE_METRICS => self.metrics(&graph_of(job)?).await,
            other => Err(JobError::Permanent(format!("no handler for job `{other}`"))),
        }
    }

    /// Publishes a control note on the graph's channel: every gateway with
    /// subscribers of the graph acts on it.
    async fn control(&self, graph: &str, note: Value) -> Result<(), JobError> {
        self.store
            .publish_control(graph, &note)
            .await
            .map_err(retry)
    }

    async fn resolve(&self, job: &Job) -> Result<(), JobError> {
        let r: Resolution = job.json().map_err(|e| {
            bad(
                job,
                &format!("is not {{graphId, userId, nodeId|edgeId, field, value}}: {e}"),
            )
        })?;
        if !is_graph_id(&r.graph_id) || !is_entity_id(&r.user_id) {
            return Err(bad(job, "needs a valid `graphId` and `userId`"));
        }
        let (kind, payload) = match (&r.conflict_id, &r.node_id, &r.edge_id) {
            (Some(conflict), None, None) => self.write_of_conflict(job, &r, conflict).await?,
            (None, Some(id), None) | (None, None, Some(id)) => {
                let kind = if r.node_id.is_some() {
                    "UPDATE_NODE"
                } else {
                    "UPDATE_EDGE"
                };
                let patch = match r.field.split_once('.') {
                    None if r.field == "position" || r.field == "type" => {
                        json!({ r.field.clone(): r.value })
                    }
                    Some(("data", key)) if !key.is_empty() => json!({"data": { key: r.value }}),
                    _ => return Err(bad(job, "`field` is `position`, `type` or `data.KEY`")),
                };
                (kind, json!({"id": id, "patch": patch}))
            }
            _ => {
                return Err(bad(
                    job,
                    "names exactly one of `conflictId`, `nodeId` and `edgeId`",
                ));
            }
        };
        let cmd = command::from_value(&json!({
            "operationId": format!("resolve-{}", job.id),
            "type": kind,
            "payload": payload,
        }))
        .map_err(|e| {
            bad(
                job,
                &format!("does not make a valid command: {} ({})", e.message, e.field),
            )
        })?;
        let commands = self.commands.as_ref().ok_or_else(|| {
            JobError::Permanent("this worker has no `commands` queue to resolve into".into())
        })?;
        // Like the gateway, claim the operation id before queueing: its
        // record is what `GET /operations/{id}` reads.
        if !self
            .store
            .claim_operation(&r.graph_id, &cmd.operation_id)
            .await
            .map_err(retry)?
        {
            return Err(JobError::Permanent(format!(
                "operation id {} is in use on another graph",
                cmd.operation_id
            )));
        }
        commands
            .add(command_job(&r.graph_id, &r.user_id, &cmd))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        Ok(())
    }

    /// The write that settles open conflict `id` of the job's graph.
    async fn write_of_conflict(
        &self,
        job: &Job,
        r: &Resolution,
        id: &str,
    ) -> Result<(&'static str, Value), JobError> {
        let open = graphq::graph::ConflictFilter {
            status: Some("open".into()),
            ..Default::default()
        };
        let list = self
            .store
            .conflicts(&r.graph_id, &open)
            .await
            .map_err(retry)?;
        let conflict = list
            .conflicts
            .iter()
            .find(|c| c["id"] == id)
            .ok_or_else(|| bad(job, &format!("names conflict {id}, which is not open")))?;
        let field = conflict["field"].as_str().unwrap_or_default();
        write_of(field, &r.value)
            .ok_or_else(|| bad(job, &format!("names conflict {id} on {field}, not a field")))
    }

    async fn progress(&self, graph: &str) -> Result<(), JobError> {
        let state = self.store.state(graph).await.map_err(retry)?;
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        for node in &state.nodes {
            let status = node["data"]["status"].as_str().unwrap_or("none");
            *by_status.entry(status.to_string()).or_default() += 1;
        }
        let total = state.nodes.len() as u64;
        let done: u64 = DONE.iter().filter_map(|s| by_status.get(*s)).sum();
        let mut fields: Vec<(String, String)> = vec![
            ("version".into(), state.version.to_string()),
            ("nodes".into(), total.to_string()),
            ("edges".into(), state.edges.len().to_string()),
            ("done".into(), done.to_string()),
            (
                "ratio".into(),
                format!(
                    "{:.4}",
                    if total == 0 {
                        0.0
                    } else {
                        done as f64 / total as f64
                    }
                ),
            ),
            ("computedAt".into(), now_ms().to_string()),
        ];
        fields.extend(
            by_status
                .into_iter()
                .map(|(s, n)| (format!("status:{s}"), n.to_string())),
        );
        self.store
            .save_progress(graph, &fields)
            .await
            .map_err(retry)
    }

    async fn metrics(&self, graph: &str) -> Result<(), JobError> {
        let activity = self.store.activity(graph).await.map_err(retry)?;
        let version = activity.version;
        let now = now_ms();
        let mut fields = vec![
            ("version", version.to_string()),
            ("nodes", activity.nodes.to_string()),
            ("edges", activity.edges.to_string()),
            ("logEntries", activity.log_entries.to_string()),
            ("updatedAt", now.to_string()),
        ];
        let previous = |f: &str| activity.previous.get(f).and_then(|v| v.parse::<u64>().ok());
        if let (Some(v0), Some(t0)) = (previous("version"), previous("updatedAt"))
            && now > t0
            && version >= v0
        {
            let per_minute = (version - v0) as f64 * 60_000.0 / (now - t0) as f64;
            fields.push(("versionsPerMinute", format!("{per_minute:.2}")));
        }
        self.store.save_metrics(graph, &fields).await.map_err(retry)
    }
}

/// The graph a job is about: its key, or `graphId` in its data.
fn graph_of(job: &Job) -> Result<String, JobError> {
    let from_data = || job.json::<Target>().ok().and_then(|t| t.graph_id);
    job.key
        .clone()
        .or_else(from_data)
        .filter(|g| is_graph_id(g))
        .ok_or_else(|| bad(job, "needs a valid graph id (job key or `graphId`)"))
}

/// Bad job data never gets better by retrying.
fn bad(job: &Job, what: &str) -> JobError {
    JobError::Permanent(format!("{} {what}", job.name))
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::write_of;
    use serde_json::json;

    #[test]
    fn a_conflicts_field_becomes_the_write_that_settles_it() {
        let v = json!("x");
        assert_eq!(
            write_of("/nodes/n1/data/a~1b~0c", &v),
            Some((
                "UPDATE_NODE",
                json!({"id": "n1", "patch": {"data": {"a/b~c": "x"}}})
            ))
        );
        assert_eq!(
            write_of("/edges/e1/type", &v),
            Some(("UPDATE_EDGE", json!({"id": "e1", "patch": {"type": "x"}})))
        );
        assert_eq!(
            write_of("/nodes/n1/data", &json!({"k": 1})),
            Some((
                "UPDATE_NODE",
                json!({"id": "n1", "patch": {"data": {"k": 1}}})
            ))
        );
        assert_eq!(
            write_of("/viewport", &v),
            Some(("UPDATE_VIEWPORT", v.clone()))
        );
        for bad in [
            "/nodes/n1",
            "/nodes/n1/colour",
            "/graphs/g/type",
            "nodes/n1/type",
            "",
        ] {
            assert_eq!(write_of(bad, &v), None, "{bad}");
        }
    }
}
