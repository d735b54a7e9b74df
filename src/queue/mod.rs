//! The queue engine: durable jobs on Redis Streams.
//!
//! A [`Queue`] is the producer and admin handle; a [`Worker`] runs a
//! [`Processor`] over it. Two kinds of queue share one storage layout:
//!
//! - **ordered** (`commands`): a job's key picks one of P partition streams;
//!   each partition is leased to one live worker at a time and processed
//!   strictly in stream order, in batches. Failed jobs retry in place, so a
//!   key's later jobs never overtake it.
//! - **priority** (`sync`, `analytics`): competing consumers; three priority
//!   streams per partition, higher ones drained first; failed jobs retry
//!   through the delayed set so they never hold a worker.
//!
//! Every state change that must be atomic is one Lua script in `lua/`; all the
//! keys a script touches share the partition's hash tag.

mod assign;
mod competing;
mod dlq;
mod events;
mod job;
mod limiter;
mod ordered;
mod retry;
mod scheduler;
mod stats;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};

use crate::db::streams::parse_entries;
use crate::db::{Redis, now_ms};
use crate::keys::Keys;
use crate::scripts::{SCRIPTS, query_pipeline};

pub use dlq::{DeadLetter, DeadLetters};
pub use events::{CounterSnapshot, Counters, EventsMode, JobEvent, JobEventKind, JobObserver};
pub use job::{AddGuard, AddOutcome, GuardedAdd, Job, JobError, NewJob, Priority};
pub use limiter::{RateLimit, take as take_permits, take_all as take_all_permits};
pub use retry::RetryPolicy;
pub use stats::{PartitionStats, QueueStats};
pub use worker::{FnProcessor, Processor, Worker, process_in_order};

/// Consumer group every worker of every queue joins.
pub const GROUP: &str = "workers";

/// How a queue hands out its jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Per-key order: partitions leased to one worker each.
    #[default]
    Ordered,
    /// Competing consumers with priority levels.
    Priority,
}

/// Everything that shapes one queue. Timeouts are documented in docs/queue.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueOptions {
    pub kind: QueueKind,
    /// Partition streams; ordered queues spread keys over them.
    pub partitions: u16,
    /// Ordered: partitions processed at the same time by one worker.
    /// Priority: jobs in flight at the same time in one worker.
    pub concurrency: usize,
    /// Most entries read (and acknowledged) in one round trip.
    pub batch_size: usize,
    /// How long a read waits for new entries before checking for shutdown.
    pub block_ms: u64,
    /// Ordered queues: settled entries are acknowledged with a later read,
    /// at most this long after the first of them settled (or as soon as
    /// `batch_size` wait), so that one acknowledgement serves many commands
    /// arriving one by one. 0: with the very next read.
    pub ack_delay_ms: u64,
    #[serde(flatten)]
    pub retry: RetryPolicy,
    /// Most jobs per period across all workers of the queue.
    pub rate_limit: Option<RateLimit>,
    /// Most jobs per period for one rate key (graph, user) across all workers.
    pub key_rate_limit: Option<RateLimit>,
    /// A job id seen within this window is not added again (0: no dedupe).
    pub dedupe_window_ms: u64,
    /// An ordered partition's lease, and a worker's registration, last this long
    /// without renewal; a crashed worker's partitions move after at most this.
    pub lease_ttl_ms: u64,
    /// How often leases and registrations are renewed and rebalanced.
    pub heartbeat_ms: u64,
    /// Priority queues: an entry pending this long without its worker renewing
    /// its claim is taken over by another worker.
    pub stall_timeout_ms: u64,
    /// On shutdown, in-flight work gets this long to finish before it is left
    /// pending for another worker.
    pub shutdown_timeout_ms: u64,
    pub events: EventsMode,
    /// Approximate cap of each partition's events stream.
    pub events_max_len: u64,
    /// Approximate cap of each partition's dead-letter stream.
    pub dlq_max_len: u64,
    /// Upper bound on how late a due delayed job is promoted.
    pub promote_interval_ms: u64,
    /// How soon workers notice a pause or resume.
    pub pause_poll_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            kind: QueueKind::Ordered,
            partitions: 16,
            concurrency: 16,
            batch_size: 256,
            block_ms: 1_000,
            ack_delay_ms: 0,
            retry: RetryPolicy::default(),
            rate_limit: None,
            key_rate_limit: None,
            dedupe_window_ms: 600_000,
            lease_ttl_ms: 5_000,
            heartbeat_ms: 1_000,
            stall_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            events: EventsMode::All,
            events_max_len: 10_000,
            dlq_max_len: 100_000,
            promote_interval_ms: 100,
            pause_poll_ms: 250,
        }
    }
}

impl QueueOptions {
    /// Rejects settings the engine cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("partitions", self.partitions as u64),
            ("concurrency", self.concurrency as u64),
            ("batch_size", self.batch_size as u64),
            ("attempts", self.retry.attempts as u64),
            ("lease_ttl_ms", self.lease_ttl_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("events_max_len", self.events_max_len),
            ("dlq_max_len", self.dlq_max_len),
            ("promote_interval_ms", self.promote_interval_ms),
            ("pause_poll_ms", self.pause_poll_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.ack_delay_ms >= self.lease_ttl_ms {
            return Err("ack_delay_ms must be less than lease_ttl_ms".into());
        }
        if self.heartbeat_ms * 2 > self.lease_ttl_ms {
            return Err("heartbeat_ms must be at most half of lease_ttl_ms".into());
        }
        for limit in [&self.rate_limit, &self.key_rate_limit]
            .into_iter()
            .flatten()
        {
            limit.validate()?;
        }
        Ok(())
    }
}

/// Failures of the engine itself (not of a job).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("invalid queue options: {0}")]
    InvalidOptions(String),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// Producer and admin handle of one queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    name: Arc<str>,
    opts: QueueOptions,
    keys: Keys,
    redis: Redis,
}

impl Queue {
    pub fn new(
        redis: Redis,
        keys: Keys,
        name: &str,
        opts: QueueOptions,
    ) -> Result<Queue, QueueError> {
        opts.validate().map_err(QueueError::InvalidOptions)?;
        Ok(Queue {
            inner: Arc::new(QueueInner {
                name: name.into(),
                opts,
                keys,
                redis,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    pub fn options(&self) -> &QueueOptions {
        &self.inner.opts
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// The partition a job lands in: by key on ordered queues (so one key's jobs
    /// stay in order), by job id otherwise.
    pub fn partition_for(&self, key: Option<&str>, job_id: &str) -> u16 {
        let p = self.inner.opts.partitions as u64;
        let basis = match self.inner.opts.kind {
            QueueKind::Ordered => key.unwrap_or(job_id),
            QueueKind::Priority => job_id,
        };
        (fnv1a(basis.as_bytes()) % p) as u16
    }

    pub fn partitions(&self) -> impl Iterator<Item = u16> + use<> {
        0..self.inner.opts.partitions
    }

    /// Adds one job.
    pub async fn add(&self, job: NewJob) -> Result<AddOutcome, QueueError> {
        let mut out = self.add_bulk(vec![job]).await?;
        out.pop()
            .ok_or_else(|| QueueError::Reply("no reply to enqueue".into()))
    }

    /// Adds many jobs in one round trip. Each job is added atomically on its
    /// own; the outcomes come back in the order of `jobs`.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<AddOutcome>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut invocations = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let (id, inv) = self.enqueue_invocation(job, &AddGuard::default(), now)?;
            ids.push(id);
            invocations.push(inv);
        }
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        self.inner.redis.durable(&mut pipe);
        let replies: Vec<(String, String)> =
            query_pipeline(&pipe, &mut self.inner.redis.conn()).await?;
        Ok(replies
            .into_iter()
            .zip(ids)
            .map(|((status, reference), job_id)| match status.as_str() {
                "added" => AddOutcome::Added {
                    job_id,
                    entry_id: reference,
                },
                "delayed" => AddOutcome::Delayed { job_id },
                _ => AddOutcome::Duplicate {
                    job_id,
                    first: reference,
                },
            })
            .collect())
    }

    /// Adds one job behind `guard`: the claim and the rate limit are checked
    /// in the same atomic call as the add, and a refusal changes nothing.
    /// One round trip where a claim, a limiter call and an add took three.
    /// Single Redis only: the guard's keys are not in the stream's slot, so
    /// on a cluster the caller takes the three steps apart.
    pub async fn add_guarded(
        &self,
        job: NewJob,
        guard: &AddGuard<'_>,
    ) -> Result<GuardedAdd, QueueError> {
        if self.inner.redis.is_cluster() {
            return Err(QueueError::InvalidJob(
                "a guarded add needs a single Redis; on a cluster, claim, limit and add apart"
                    .into(),
            ));
        }
        let (job_id, inv) = self.enqueue_invocation(&job, guard, now_ms())?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        self.inner.redis.durable(&mut pipe);
        let ((status, reference),): ((String, String),) =
            query_pipeline(&pipe, &mut self.inner.redis.conn()).await?;
        Ok(match status.as_str() {
            "taken" => GuardedAdd::Taken { owner: reference },
            "limited" => GuardedAdd::Limited {
                wait: std::time::Duration::from_millis(reference.parse().unwrap_or(1)),
            },
            "added" => GuardedAdd::Added(AddOutcome::Added {
                job_id,
                entry_id: reference,
            }),
            "delayed" => GuardedAdd::Added(AddOutcome::Delayed { job_id }),
            _ => GuardedAdd::Added(AddOutcome::Duplicate {
                job_id,
                first: reference,
            }),
        })
    }

    /// The `lua/enqueue.lua` call that adds `job` behind `guard`, and the
    /// job's id.
    fn enqueue_invocation(
        &self,
        job: &NewJob,
        guard: &AddGuard<'_>,
        now: u64,
    ) -> Result<(String, redis::ScriptInvocation<'static>), QueueError> {
        let opts = &self.inner.opts;
        let keys = &self.inner.keys;
        let q = self.name();
        if opts.kind == QueueKind::Ordered && job.key.is_none() {
            return Err(QueueError::InvalidJob(format!(
                "queue {q} is ordered: every job needs a key"
            )));
        }
        let explicit = job.id.is_some();
        let id = job
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let part = self.partition_for(job.key.as_deref(), &id);
        let stream = keys.stream(q, part, job.priority.lane());
        let (claim_key, owner, ttl) = guard.claim.unwrap_or((&stream, "", 0));
        // A claim is the job's dedupe record: no marker then (KEYS[1] in
        // its place, as for the other guards when unused).
        let (window, dedupe_key) = if explicit && guard.claim.is_none() {
            (opts.dedupe_window_ms, keys.dedupe(q, part, &id))
        } else {
            (0, stream.clone())
        };
        let (limit_key, max, period) = match guard.limit {
            Some((key, limit)) => (key, limit.max.to_string(), limit.duration_ms.to_string()),
            None => (stream.as_str(), String::new(), String::new()),
        };
        let mut inv = SCRIPTS.enqueue.prepare_invoke();
        inv.key(&stream)
            .key(&dedupe_key)
            .key(keys.delayed(q, part))
            .key(keys.delayed_jobs(q, part))
            .key(keys.events(q, part))
            .key(claim_key)
            .key(limit_key)
            .arg(&id)
            .arg(window)
            .arg(job.delay.as_millis() as u64)
            .arg(opts.events.flag())
            .arg(opts.events_max_len)
            .arg(owner)
            .arg(ttl)
            .arg(max)
            .arg(period);
        for (field, value) in job::new_job_fields(job, &id, now) {
            inv.arg(field).arg(value);
        }
        Ok((id, inv))
    }

    /// Stops every worker of this queue from taking new jobs (within
    /// `pause_poll_ms`); jobs keep being accepted.
    pub async fn pause(&self) -> Result<(), QueueError> {
        let mut conn = self.inner.redis.conn();
        let _: () = conn
            .set(self.inner.keys.paused(self.name()), now_ms())
            .await?;
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), QueueError> {
        let mut conn = self.inner.redis.conn();
        let _: () = conn.del(self.inner.keys.paused(self.name())).await?;
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool, QueueError> {
        let mut conn = self.inner.redis.conn();
        Ok(conn.exists(self.inner.keys.paused(self.name())).await?)
    }

    /// Registers a job that the scheduler leader adds once every `every`.
    /// The job id is derived from the name and the period, so it runs once per
    /// period however many schedulers run.
    pub async fn add_repeatable(
        &self,
        name: &str,
        every: Duration,
        job: NewJob,
    ) -> Result<(), QueueError> {
        scheduler::add_repeatable(self, name, every, job).await
    }

    pub async fn remove_repeatable(&self, name: &str) -> Result<bool, QueueError> {
        let mut conn = self.inner.redis.conn();
        let keys = &self.inner.keys;
        let removed: u32 = conn.hdel(keys.repeatables(self.name()), name).await?;
        let _: u32 = conn.hdel(keys.repeat_last(self.name()), name).await?;
        Ok(removed > 0)
    }

    /// Dead-letter inspection and replay.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.clone())
    }

    /// Lengths, pending counts, owners and counters of every partition.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        stats::read(self).await
    }

    /// Recent lifecycle events of one partition from Redis, oldest first.
    pub async fn recent_events(
        &self,
        partition: u16,
        count: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, QueueError> {
        let mut conn = self.inner.redis.conn();
        let raw: Value = redis::cmd("XREVRANGE")
            .arg(self.inner.keys.events(self.name(), partition))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let mut out = parse_entries(&raw);
        out.reverse();
        Ok(out)
    }
}

/// 64-bit FNV-1a: stable across processes, versions and platforms, which a
/// partition choice must be.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn options_reject_zero_and_inconsistent_values() {
        assert!(QueueOptions::default().validate().is_ok());
        let zero = QueueOptions {
            partitions: 0,
            ..QueueOptions::default()
        };
        assert!(zero.validate().unwrap_err().contains("partitions"));
        let slow = QueueOptions {
            heartbeat_ms: 4_000,
            lease_ttl_ms: 5_000,
            ..QueueOptions::default()
        };
        assert!(slow.validate().is_err());
    }
}
