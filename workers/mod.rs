//! The processors graphq runs on its queues, picked by job name.
//!
//! - graph commands (`CREATE_NODE` … `REDO`, on `commands`): [`commands`].
//! - `GENERATE_SNAPSHOT` (on `analytics`): saves a graph's snapshot, the base
//!   `graphq graph verify` replays the log from.
//! - `BROADCAST_UPDATE`, `SYNC_CLIENT`, `RESOLVE_CONFLICT` (on `sync`) and
//!   `CALCULATE_PROGRESS`, `UPDATE_METRICS` (on `analytics`): [`jobs`].
//! - `bench.noop`, `bench.apply`: [`bench`], for benchmarks and engine tests.
//!
//! A job whose name has no handler fails permanently: it is dead-lettered
//! with that reason rather than retried. docs/queue.md lists every job.

pub mod bench;
pub mod commands;
pub mod jobs;

use crate::graph::GraphStore;
use crate::queue::{Job, JobError, Processor, Queue, process_in_order};

pub use bench::{BENCH_APPLY, BENCH_NOOP};
pub use commands::{COMMAND_TYPES, CommandsHandler, GENERATE_SNAPSHOT};

/// Routes each job to its handler by name.
#[derive(Clone)]
pub struct GraphqProcessor {
    bench: bench::BenchHandler,
    commands: CommandsHandler,
    jobs: jobs::JobsHandler,
}

impl GraphqProcessor {
    pub fn new(store: GraphStore) -> Self {
        GraphqProcessor {
            bench: bench::BenchHandler::new(store.redis().clone(), store.keys().clone()),
            jobs: jobs::JobsHandler::new(store.clone()),
            commands: CommandsHandler::new(store),
        }
    }

    /// Lets `RESOLVE_CONFLICT` queue its command on `commands`.
    pub fn with_commands(mut self, commands: Queue) -> Self {
        self.jobs = self.jobs.with_commands(commands);
        self
    }

    /// Snapshots every graph each `every` versions, through `analytics`.
    pub fn with_snapshots(mut self, analytics: Queue, every: u64) -> Self {
        self.commands = self.commands.with_snapshots(analytics, every);
        self
    }
}

fn is_command(job: &Job) -> bool {
    COMMAND_TYPES.contains(&job.name.as_str())
}

impl Processor for GraphqProcessor {
    async fn process(&self, job: &Job) -> Result<(), JobError> {
        match job.name.as_str() {
            BENCH_NOOP => Ok(()),
            BENCH_APPLY => self.bench.apply(job).await,
            GENERATE_SNAPSHOT => {
                let graph = job.key.as_deref().ok_or_else(|| {
                    JobError::Permanent("GENERATE_SNAPSHOT needs a graph id key".into())
                })?;
                self.commands
                    .store()
                    .snapshot(graph)
                    .await
                    .map_err(|e| JobError::Retry(e.to_string()))?;
                Ok(())
            }
            _ if is_command(job) => self.commands.process(job).await,
            name if jobs::JobsHandler::handles(name) => self.jobs.process(job).await,
            other => Err(JobError::Permanent(format!("no handler for job `{other}`"))),
        }
    }

    /// Pipelines batches made only of commands or only of `bench.apply`
    /// jobs; anything else goes one job at a time.
    async fn process_batch(&self, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        if jobs.iter().all(|j| j.name == BENCH_NOOP) {
            return jobs.iter().map(|_| Ok(())).collect();
        }
        if jobs.iter().all(is_command) {
            return self.commands.process_batch(jobs).await;
        }
        if jobs.iter().all(|j| j.name == BENCH_APPLY)
            && let Some(results) = self.bench.apply_pipelined(jobs).await
        {
            return results;
        }
        process_in_order(self, jobs).await
    }

    async fn dead_lettered(&self, job: &Job, error: &str) {
        if is_command(job) {
            self.commands.dead_lettered(job, error).await;
        }
    }
}
