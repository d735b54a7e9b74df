//! `bench.noop` and `bench.apply`: the synthetic jobs of `graphq bench queue`
//! and of the engine's multi-process tests (`graphq bench worker`).
//!
//! `bench.apply` is one idempotent Lua write per job (`lua/bench_apply.lua`:
//! bump a version, set a node, append to a per-graph log, publish). Its payload
//! may ask it to sleep first (`{"sleepMs": N}`) to simulate slow work.

use std::time::Duration;

use serde::Deserialize;

use std::sync::LazyLock;

use graphq::db::Redis;
use graphq::keys::Keys;
use graphq::queue::{Job, JobError, Processor, process_in_order};

use crate::GraphqProcessor;

/// The benchmark's script: not among the product's scripts, so production
/// workers never load it.
static BENCH_APPLY_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../../lua/bench_apply.lua")));

pub const BENCH_NOOP: &str = "bench.noop";
pub const BENCH_APPLY: &str = "bench.apply";

/// Change-log length kept per graph by `bench.apply`.
const BENCH_LOG_MAX: u64 = 1_000;

#[derive(Clone)]
pub struct BenchHandler {
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

fn payload(job: &Job) -> Result<ApplyPayload, JobError> {
    if job.data.is_empty() {
        return Ok(ApplyPayload::default());
    }
    job.json()
        .map_err(|e| JobError::Permanent(format!("payload is not valid JSON: {e}")))
}

fn redis_error(e: redis::RedisError) -> JobError {
    JobError::from_redis(&e)
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

impl BenchHandler {
    pub fn new(redis: Redis, keys: Keys) -> Self {
        BenchHandler { redis, keys }
    }

    fn invocation(
        &self,
        job: &Job,
        p: &ApplyPayload,
    ) -> Result<redis::ScriptInvocation<'static>, JobError> {
        let graph = job
            .key
            .as_deref()
            .ok_or_else(|| JobError::Permanent("bench.apply needs a key (graph id)".into()))?;
        let mut inv = BENCH_APPLY_SCRIPT.prepare_invoke();
        inv.key(self.keys.graph(graph, "bench:meta"))
            .key(self.keys.graph(graph, "bench:nodes"))
            .key(self.keys.graph(graph, "bench:log"))
            .key(self.keys.graph(graph, "bench:applied"))
            .arg(&job.id)
            .arg(&p.node)
            .arg(&p.value)
            .arg(BENCH_LOG_MAX)
            .arg(self.keys.graph(graph, "bench:events"))
            .arg(self.redis.graph_publish_command());
        Ok(inv)
    }

    pub async fn apply(&self, job: &Job) -> Result<(), JobError> {
        let p = payload(job)?;
        if p.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
        }
        let _: u64 = self
            .invocation(job, &p)?
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Pipelines a batch of `bench.apply` jobs into one round trip (Redis runs
    /// them in order). None when the batch cannot be pipelined (a job sleeps
    /// or is malformed): the caller then runs it job by job.
    pub async fn apply_pipelined(&self, jobs: &[Job]) -> Option<Vec<Result<(), JobError>>> {
        let mut invocations = Vec::with_capacity(jobs.len());
        for job in jobs {
            let p = payload(job).ok().filter(|p| p.sleep_ms == 0)?;
            invocations.push(self.invocation(job, &p).ok()?);
        }
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let mut conn = self.redis.conn();
        let mut sent = pipe.query_async::<Vec<u64>>(&mut conn).await;
        if let Err(e) = &sent
            && is_noscript(e)
        {
            // Redis forgot the script (restart): nothing ran; load it and resend.
            sent = match BENCH_APPLY_SCRIPT
                .prepare_invoke()
                .load_async(&mut conn)
                .await
            {
                Ok(_) => pipe.query_async(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        Some(match sent {
            Ok(_) => jobs.iter().map(|_| Ok(())).collect(),
            // Part of the pipeline may have run; the script is idempotent, so
            // the engine retries from the first job.
            Err(e) => vec![Err(redis_error(e))],
        })
    }
}

/// The production processor plus the `bench.*` jobs: what `graphq bench
/// queue` and `graphq bench worker` run.
#[derive(Clone)]
pub struct BenchProcessor {
    bench: BenchHandler,
    product: GraphqProcessor,
}

impl BenchProcessor {
    pub fn new(product: GraphqProcessor, redis: Redis, keys: Keys) -> Self {
        BenchProcessor {
            bench: BenchHandler::new(redis, keys),
            product,
        }
    }
}

impl Processor for BenchProcessor {
    async fn process(&self, job: &Job) -> Result<(), JobError> {
        match job.name.as_str() {
            BENCH_NOOP => Ok(()),
            BENCH_APPLY => self.bench.apply(job).await,
            _ => self.product.process(job).await,
        }
    }

    /// Pipelines batches made only of `bench.apply` jobs; batches of other
    /// jobs go to the product's processor.
    async fn process_batch(&self, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        let is_bench = |j: &Job| j.name == BENCH_NOOP || j.name == BENCH_APPLY;
        if jobs.iter().all(|j| j.name == BENCH_NOOP) {
            return jobs.iter().map(|_| Ok(())).collect();
        }
        if jobs.iter().all(|j| j.name == BENCH_APPLY)
            && let Some(results) = self.bench.apply_pipelined(jobs).await
        {
            return results;
        }
        if !jobs.iter().any(is_bench) {
            return self.product.process_batch(jobs).await;
        }
        process_in_order(self, jobs).await
    }

    async fn dead_lettered(&self, job: &Job, error: &str) {
        self.product.dead_lettered(job, error).await;
    }
}
