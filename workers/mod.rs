//! The processors graphq runs on its queues, picked by job name.
//!
//! - `bench.noop`: does nothing (measures the engine alone).
//! - `bench.apply`: one idempotent Lua mutation per job (`lua/bench_apply.lua`:
//!   bump a version, set a node, append to a per-graph log, publish), the
//!   stand-in for a graph command used by `graphq bench queue` and by the
//!   engine's multi-process tests. Its payload may ask it to sleep first
//!   (`{"sleepMs": N}`) to simulate slow work.
//!
//! A job whose name has no handler fails permanently: it is dead-lettered
//! with that reason rather than retried.

use std::time::Duration;

use serde::Deserialize;

use crate::db::Redis;
use crate::keys::Keys;
use crate::queue::{Job, JobError, Processor, process_in_order};
use crate::scripts::{SCRIPTS, is_noscript};

pub const BENCH_NOOP: &str = "bench.noop";
pub const BENCH_APPLY: &str = "bench.apply";

/// Change-log length kept per graph by `bench.apply`.
const BENCH_LOG_MAX: u64 = 1_000;

/// Routes each job to its handler by name.
#[derive(Clone)]
pub struct GraphqProcessor {
    redis: Redis,
    keys: Keys,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyPayload {
    #[serde(default)]
    node: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    sleep_ms: u64,
}

impl GraphqProcessor {
    pub fn new(redis: Redis, keys: Keys) -> Self {
        GraphqProcessor { redis, keys }
    }

    /// The `bench.apply` script invocation for one job.
    fn apply_invocation(
        &self,
        job: &Job,
        p: &ApplyPayload,
    ) -> Result<redis::ScriptInvocation<'static>, JobError> {
        let graph = job
            .key
            .as_deref()
            .ok_or_else(|| JobError::Permanent("bench.apply needs a key (graph id)".into()))?;
        let mut inv = SCRIPTS.bench_apply.prepare_invoke();
        inv.key(self.keys.graph(graph, "bench:meta"))
            .key(self.keys.graph(graph, "bench:nodes"))
            .key(self.keys.graph(graph, "bench:log"))
            .key(self.keys.graph(graph, "bench:applied"))
            .arg(&job.id)
            .arg(&p.node)
            .arg(&p.value)
            .arg(BENCH_LOG_MAX)
            .arg(self.keys.graph(graph, "bench:events"));
        Ok(inv)
    }
}

fn payload(job: &Job) -> Result<ApplyPayload, JobError> {
    if job.data.is_empty() {
        return Ok(ApplyPayload::default());
    }
    job.json()
        .map_err(|e| JobError::Permanent(format!("payload is not valid JSON: {e}")))
}

fn redis_error(e: redis::RedisError) -> JobError {
    JobError::Retry(format!("redis: {e}"))
}

impl Processor for GraphqProcessor {
    async fn process(&self, job: &Job) -> Result<(), JobError> {
        match job.name.as_str() {
            BENCH_NOOP => Ok(()),
            BENCH_APPLY => {
                let p = payload(job)?;
                if p.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
                }
                let inv = self.apply_invocation(job, &p)?;
                let _: u64 = inv
                    .invoke_async(&mut self.redis.conn())
                    .await
                    .map_err(redis_error)?;
                Ok(())
            }
            other => Err(JobError::Permanent(format!("no handler for job `{other}`"))),
        }
    }

    /// Pipelines a batch of `bench.apply` jobs into one round trip (Redis runs
    /// them in order); anything else goes one at a time.
    async fn process_batch(&self, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        if jobs.iter().all(|j| j.name == BENCH_NOOP) {
            return jobs.iter().map(|_| Ok(())).collect();
        }
        let pipelinable = jobs.iter().all(|j| j.name == BENCH_APPLY);
        let payloads: Vec<Result<ApplyPayload, JobError>> = jobs.iter().map(payload).collect();
        if !pipelinable
            || payloads
                .iter()
                .any(|p| p.as_ref().map_or(true, |p| p.sleep_ms > 0))
        {
            return process_in_order(self, jobs).await;
        }
        let mut invocations = Vec::with_capacity(jobs.len());
        for (job, p) in jobs.iter().zip(&payloads) {
            match p
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| self.apply_invocation(job, p))
            {
                Ok(inv) => invocations.push(inv),
                Err(_) => return process_in_order(self, jobs).await,
            }
        }
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let mut conn = self.redis.conn();
        let mut reply: redis::RedisResult<Vec<u64>> = pipe.query_async(&mut conn).await;
        if matches!(&reply, Err(e) if is_noscript(e)) {
            if let Err(e) = SCRIPTS.load_all(&mut conn).await {
                reply = Err(e);
            } else {
                reply = pipe.query_async(&mut conn).await;
            }
        }
        match reply {
            Ok(_) => jobs.iter().map(|_| Ok(())).collect(),
            // Part of the pipeline may have run; the script is idempotent,
            // so the engine retries from the first job.
            Err(e) => vec![Err(redis_error(e))],
        }
    }
}
