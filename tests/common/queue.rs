//! Queue workers run as tasks of the test process, and the queue shapes and
//! stream counts the queue tests share (`tests/queue_engine.rs`,
//! `tests/queue_retries.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use graphq::queue::{Counters, Priority, Processor, Queue, QueueKind, QueueOptions, Worker};
use redis::AsyncCommands;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestEnv, fast};

/// A worker started by [`start`].
pub struct Running {
    /// Cancelled by [`Running::shutdown`] to stop the worker.
    pub stop: CancellationToken,
    /// The worker task, awaited on shutdown to see it end cleanly.
    pub handle: JoinHandle<Result<(), graphq::queue::QueueError>>,
    /// What the worker has done so far, read while it runs.
    pub counters: Arc<Counters>,
    /// The worker's consumer id, as it appears in leases and pending lists.
    pub id: String,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("worker stops within 10 s")
            .expect("worker task did not panic")
            .expect("worker ended cleanly");
    }
}

pub fn start<P: Processor>(queue: &Queue, p: P) -> Running {
    let worker = Worker::new(queue.clone(), p);
    let counters = worker.counters();
    let id = worker.id().to_string();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    Running {
        stop,
        handle,
        counters,
        id,
    }
}

pub fn ordered(partitions: u16) -> QueueOptions {
    fast(QueueOptions {
        kind: QueueKind::Ordered,
        partitions,
        concurrency: partitions as usize,
        ..QueueOptions::default()
    })
}

pub fn priority() -> QueueOptions {
    fast(QueueOptions {
        kind: QueueKind::Priority,
        partitions: 1,
        concurrency: 8,
        ..QueueOptions::default()
    })
}

pub async fn total_len(env: &TestEnv, q: &Queue) -> u64 {
    let mut conn = env.conn();
    let mut n = 0;
    for p in q.partitions() {
        for prio in Priority::ALL {
            let len: u64 = conn
                .xlen(env.keys.stream(q.name(), p, prio.lane()))
                .await
                .unwrap();
            n += len;
        }
    }
    n
}

pub fn processed(r: &Running) -> u64 {
    r.counters.processed.load(Ordering::Relaxed)
}
