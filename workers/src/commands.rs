//! The `commands` processor: applies graph commands with the graph store's
//! Lua script, in partition order, pipelining each batch into one round trip.
//!
//! A job is what [`command_job`](graphq::graph::command_job) builds. Outcomes
//! (applied or reverted) are business results: the script records them and
//! publishes them on the graph's channel for broadcasters. Only failures to
//! reach Redis are job errors (retried, then dead-lettered, which answers the
//! sender with `REVERT DEAD_LETTERED`).

use serde::Deserialize;

use graphq::db::now_ms;
use graphq::graph::command::{self, Command, is_entity_id, is_graph_id};
use graphq::graph::{ApplyContext, CommandEnvelope, GraphStore};
use graphq::queue::{Job, JobError, NewJob, Queue};

/// Job names the commands processor answers to: the command types.
pub use graphq::graph::command::COMMAND_TYPES;

/// Job name of the analytics job that snapshots a graph.
pub const GENERATE_SNAPSHOT: &str = "GENERATE_SNAPSHOT";

/// A job made ready for the script, or the reason it cannot be.
enum Prepared {
    Ready(Box<(ApplyContext, Command)>),
    /// Not a valid command: answered with REVERT INVALID, never retried.
    Invalid {
        graph_id: String,
        user_id: String,
        message: String,
    },
}

#[derive(Clone)]
pub struct CommandsHandler {
    store: GraphStore,
    /// Where GENERATE_SNAPSHOT jobs go, and how often (in versions).
    snapshots: Option<(Queue, u64)>,
}

impl CommandsHandler {
    pub fn new(store: GraphStore) -> Self {
        CommandsHandler {
            store,
            snapshots: None,
        }
    }

    /// Asks for a snapshot of a graph every `every` versions on `analytics`.
    pub fn with_snapshots(mut self, analytics: Queue, every: u64) -> Self {
        if every > 0 {
            self.snapshots = Some((analytics, every));
        }
        self
    }

    pub fn store(&self) -> &GraphStore {
        &self.store
    }

    fn prepare(job: &Job) -> Prepared {
        let envelope: CommandEnvelope = match job.json() {
            Ok(e) => e,
            Err(e) => {
                return Prepared::Invalid {
                    graph_id: job.key.clone().unwrap_or_default(),
                    user_id: String::new(),
                    message: format!("job is not a command envelope: {e}"),
                };
            }
        };
        let invalid = |message: String| Prepared::Invalid {
            graph_id: envelope.graph_id.clone(),
            user_id: envelope.user_id.clone(),
            message,
        };
        if !is_graph_id(&envelope.graph_id) || !is_entity_id(&envelope.user_id) {
            return invalid("graph or user id is malformed".into());
        }
        match command::from_value(&envelope.command) {
            Ok(cmd) => Prepared::Ready(Box::new((
                ApplyContext {
                    graph_id: envelope.graph_id.clone(),
                    user_id: envelope.user_id.clone(),
                    now_ms: now_ms(),
                    new_epoch: uuid::Uuid::new_v4().simple().to_string(),
                },
                cmd,
            ))),
            Err(r) => invalid(r.to_string()),
        }
    }

    async fn reject(
        &self,
        job: &Job,
        graph_id: &str,
        user_id: &str,
        message: &str,
    ) -> Result<(), JobError> {
        if !is_graph_id(graph_id) {
            // No graph to answer on: nothing a client could be waiting for.
            tracing::warn!(job_id = %job.id, message, "dropping a command job without a valid graph id");
            return Ok(());
        }
        self.store
            .record_revert(graph_id, user_id, &job.id, &job.name, "INVALID", message)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Queues a snapshot when an applied command reached a multiple of
    /// `snapshot_every`.
    async fn after(&self, ctx: &ApplyContext, applied_version: Option<u64>) {
        let (Some((analytics, every)), Some(version)) = (&self.snapshots, applied_version) else {
            return;
        };
        if version % every == 0 {
            let job = NewJob::new(GENERATE_SNAPSHOT, "")
                .key(ctx.graph_id.clone())
                .id(format!("snapshot:{}:{version}", ctx.graph_id));
            if let Err(err) = analytics.add(job).await {
                tracing::warn!(%err, graph_id = %ctx.graph_id, "snapshot job not queued");
            }
        }
    }

    pub async fn process(&self, job: &Job) -> Result<(), JobError> {
        match Self::prepare(job) {
            Prepared::Invalid {
                graph_id,
                user_id,
                message,
            } => self.reject(job, &graph_id, &user_id, &message).await,
            Prepared::Ready(ready) => {
                let (ctx, cmd) = *ready;
                self.store
                    .mark_operation(&cmd.operation_id, &ctx.graph_id, "processing")
                    .await
                    .map_err(store_error)?;
                let text = self
                    .store
                    .apply_text(&ctx, &cmd)
                    .await
                    .map_err(store_error)?;
                let head = outcome_head(&text);
                settled(job, &ctx, &cmd, head.as_ref());
                let applied = head.as_ref().filter(|h| h.status == "applied");
                self.after(&ctx, applied.and_then(|h| h.version)).await;
                Ok(())
            }
        }
    }

    /// One round trip for the whole batch: mark each operation processing and
    /// apply it, in order. Invalid jobs are answered first, on their own.
    pub async fn process_batch(&self, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        let prepared: Vec<Prepared> = jobs.iter().map(Self::prepare).collect();
        let batch: Vec<(&ApplyContext, &Command)> = prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Ready(r) => Some((&r.0, &r.1)),
                Prepared::Invalid { .. } => None,
            })
            .collect();
        let mut results: Vec<Result<(), JobError>> = Vec::with_capacity(jobs.len());
        let outcomes = match self.store.apply_batch(&batch).await {
            Ok(o) => o,
            // Part of the pipeline may have run; apply is idempotent per
            // operation id, so the engine retries from the first job.
            Err(e) => return vec![Err(store_error(e))],
        };
        let mut outcomes = outcomes.into_iter();
        for (job, p) in jobs.iter().zip(&prepared) {
            match p {
                Prepared::Invalid {
                    graph_id,
                    user_id,
                    message,
                } => {
                    results.push(self.reject(job, graph_id, user_id, message).await);
                }
                Prepared::Ready(r) => {
                    let outcome = outcomes.next();
                    let head = outcome.as_deref().and_then(outcome_head);
                    settled(job, &r.0, &r.1, head.as_ref());
                    if self.snapshots.is_some() {
                        let applied = head.filter(|h| h.status == "applied");
                        self.after(&r.0, applied.and_then(|h| h.version)).await;
                    }
                    results.push(Ok(()));
                }
            }
        }
        results
    }

    /// Retries ran out: the sender hears REVERT DEAD_LETTERED.
    pub async fn dead_lettered(&self, job: &Job, error: &str) {
        let (graph_id, user_id) = match job.json::<CommandEnvelope>() {
            Ok(e) => (e.graph_id, e.user_id),
            Err(_) => (job.key.clone().unwrap_or_default(), String::new()),
        };
        if !is_graph_id(&graph_id) {
            return;
        }
        // Redis appends where in which script an error arose; the sender
        // needs the error, not our script's SHA and line.
        let error = error.split(" script: ").next().unwrap_or(error);
        let message = format!("gave up after retries: {error}");
        if let Err(err) = self
            .store
            .record_revert(
                &graph_id,
                &user_id,
                &job.id,
                &job.name,
                "DEAD_LETTERED",
                &message,
            )
            .await
        {
            tracing::error!(%err, job_id = %job.id, "could not answer a dead-lettered command");
        }
    }
}

/// Records a command the script answered: its latency since it was queued,
/// the conflicts it logged, and a debug line with what became of it.
fn settled(job: &Job, ctx: &ApplyContext, cmd: &Command, head: Option<&OutcomeHead>) {
    graphq::metrics::observe_since(graphq::metrics::COMMAND_LATENCY, job.enqueued_at);
    if let Some(h) = head {
        graphq::metrics::count_conflicts(h.logged.iter().map(String::as_str));
    }
    let status = head.map_or("unknown", |h| h.status.as_str());
    let version = head.and_then(|h| h.version);
    let code = head.and_then(|h| h.code.as_deref());
    tracing::debug!(
        graph_id = %ctx.graph_id,
        operation_id = %cmd.operation_id,
        user_id = %ctx.user_id,
        status,
        version,
        code,
        "command settled"
    );
}

/// The head of an outcome the script returned, read without building the
/// change.
#[derive(Deserialize)]
struct OutcomeHead {
    status: String,
    version: Option<u64>,
    code: Option<String>,
    /// `STRATEGY:outcome` of each conflict-log record the command wrote.
    #[serde(default)]
    logged: Vec<String>,
}

fn outcome_head(outcome: &str) -> Option<OutcomeHead> {
    serde_json::from_str(outcome).ok()
}

/// A store failure as the queue should treat it: Redis unreachable is not
/// the command's fault (see [`JobError::Unavailable`]).
fn store_error(e: graphq::graph::StoreError) -> JobError {
    match &e {
        graphq::graph::StoreError::Redis(r) => JobError::from_redis(r),
        graphq::graph::StoreError::Resp(graphq::resp::RespError::Io(_)) => {
            JobError::Unavailable(e.to_string())
        }
        _ => JobError::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::outcome_head;

    #[test]
    fn the_head_of_an_outcome_is_read_without_the_change() {
        let applied = r#"{"status":"applied","version":12,"change":{"nodes":[{"version":3}]},"conflicts":[]}"#;
        let head = outcome_head(applied).unwrap();
        assert_eq!((head.status.as_str(), head.version), ("applied", Some(12)));
        let reverted =
            r#"{"status":"reverted","code":"NOT_FOUND","message":"m","current":{},"conflicts":[]}"#;
        let head = outcome_head(reverted).unwrap();
        assert_eq!(head.status, "reverted");
        assert_eq!(head.code.as_deref(), Some("NOT_FOUND"));
        assert_eq!(head.version, None);
        let duplicate = r#"{"status":"duplicate","stored":{"status":"applied","version":4}}"#;
        assert_eq!(outcome_head(duplicate).unwrap().version, None);
        assert!(outcome_head("not json").is_none());
    }
}
