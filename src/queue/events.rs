//! Job lifecycle events and counters.
//!
//! Every event goes to subscribers in this process (a broadcast channel), to
//! the worker's [`JobObserver`] (metrics) and, depending on [`EventsMode`], to
//! the partition's capped events stream in Redis, where any process or
//! redis-cli can read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Which events reach the Redis events stream. Failures always do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsMode {
    /// added, completed, retrying, stalled, dead_lettered, replayed.
    #[default]
    All,
    /// Only retrying, stalled, dead_lettered, replayed: saves a write per job.
    Failures,
}

impl EventsMode {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            EventsMode::All => "1",
            EventsMode::Failures => "0",
        }
    }
}

/// What happened to a job, as seen by the worker that handled it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventKind {
    Completed,
    Retrying {
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    DeadLettered {
        attempts: u32,
        error: String,
    },
    /// Taken over from a consumer that stopped responding.
    Stalled,
    /// Waited for a shared rate limit.
    RateLimited {
        wait_ms: u64,
    },
}

/// Watches what happens to a worker's jobs, e.g. to count them for
/// `/metrics`: the engine reports its events and leaves what they mean to
/// whoever attached the observer (`Worker::observer`). Called on the worker's
/// own tasks for every event, so it must be quick and cannot fail.
pub trait JobObserver: Send + Sync + 'static {
    fn on_event(&self, kind: &JobEventKind);
}

/// Observes nothing: a worker's observer until one is attached.
impl JobObserver for () {
    fn on_event(&self, _: &JobEventKind) {}
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobEvent {
    pub queue: Arc<str>,
    pub job_id: String,
    pub partition: u16,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

/// Counters of one worker, for metrics. Totals across replicas live in Redis
/// (`{q:QUEUE:N}:counters`) and are read by `Queue::stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub processed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub rate_limited: AtomicU64,
    pub stalled: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub rate_limited: u64,
    pub stalled: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            processed: get(&self.processed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            rate_limited: get(&self.rate_limited),
            stalled: get(&self.stalled),
        }
    }
}
