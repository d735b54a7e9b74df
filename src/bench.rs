//! `graphq bench`: load generators whose JSON output BENCHMARKS.md records.
//!
//! `bench queue` measures the engine alone: it enqueues N jobs (pipelined,
//! several producers), then runs one in-process worker until all are done.
//! It works under its own throwaway key prefix and deletes it afterwards.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::db::Redis;
use crate::keys::Keys;
use crate::queue::{EventsMode, NewJob, Queue, QueueError, QueueKind, QueueOptions, Worker};
use crate::workers::{BENCH_APPLY, BENCH_NOOP, GraphqProcessor};

/// What each benchmark job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handler {
    Noop,
    Apply,
}

#[derive(Clone, Debug, clap::Args)]
pub struct QueueBenchArgs {
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Partitions processed at once (ordered) or jobs in flight (priority).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Handler::Noop)]
    pub handler: Handler,
    /// Distinct job keys (graphs) the jobs are spread over.
    #[arg(long, default_value_t = 100)]
    pub graphs: usize,
    #[arg(long, default_value_t = 16)]
    pub partitions: u16,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Concurrent producers during the enqueue phase.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Jobs per enqueue pipeline.
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
    #[arg(long, value_enum, default_value_t = Kind::Ordered)]
    pub kind: Kind,
    /// Whether completed/added events go to the Redis events stream.
    #[arg(long, value_enum, default_value_t = Events::All)]
    pub events: Events,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ordered,
    Priority,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Events {
    All,
    Failures,
}

#[derive(Debug, Serialize)]
pub struct QueueBenchReport {
    pub bench: &'static str,
    pub handler: Handler,
    pub kind: Kind,
    pub events: Events,
    pub jobs: usize,
    pub concurrency: usize,
    pub partitions: u16,
    pub batch_size: usize,
    pub graphs: usize,
    pub enqueue_ms: u64,
    pub enqueue_per_s: u64,
    pub process_ms: u64,
    pub process_per_s: u64,
    pub dead_lettered: u64,
}

pub async fn queue(
    redis: Redis,
    base_prefix: &str,
    args: &QueueBenchArgs,
) -> Result<QueueBenchReport, QueueError> {
    let prefix = format!(
        "{base_prefix}:bench:{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let keys = Keys::new(prefix.clone());
    let opts = QueueOptions {
        kind: match args.kind {
            Kind::Ordered => QueueKind::Ordered,
            Kind::Priority => QueueKind::Priority,
        },
        partitions: args.partitions,
        concurrency: args.concurrency,
        batch_size: args.batch_size,
        events: match args.events {
            Events::All => EventsMode::All,
            Events::Failures => EventsMode::Failures,
        },
        heartbeat_ms: 200,
        ..QueueOptions::default()
    };
    let queue = Queue::new(redis.clone(), keys.clone(), "bench", opts)?;
    let name = match args.handler {
        Handler::Noop => BENCH_NOOP,
        Handler::Apply => BENCH_APPLY,
    };
    let result = run_queue_bench(&queue, &redis, &keys, name, args).await;
    cleanup(&redis, &prefix).await;
    result
}

async fn run_queue_bench(
    queue: &Queue,
    redis: &Redis,
    keys: &Keys,
    name: &str,
    args: &QueueBenchArgs,
) -> Result<QueueBenchReport, QueueError> {
    crate::scripts::SCRIPTS.load_all(&mut redis.conn()).await?;
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| {
            let data = format!(r#"{{"node":"n{}","value":"v{i}"}}"#, i % 100);
            NewJob::new(name, data).key(format!("g{}", i % args.graphs.max(1)))
        })
        .collect();
    let chunks: Vec<Vec<NewJob>> = jobs
        .chunks(args.chunk.max(1))
        .map(<[NewJob]>::to_vec)
        .collect();
    let chunks = Arc::new(tokio::sync::Mutex::new(chunks.into_iter()));

    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let queue = queue.clone();
        let chunks = chunks.clone();
        producers.spawn(async move {
            loop {
                let next = chunks.lock().await.next();
                let Some(chunk) = next else {
                    return Ok::<(), QueueError>(());
                };
                queue.add_bulk(chunk).await?;
            }
        });
    }
    while let Some(r) = producers.join_next().await {
        r.map_err(|e| QueueError::Reply(e.to_string()))??;
    }
    let enqueue = started.elapsed();

    let worker = Worker::new(
        queue.clone(),
        GraphqProcessor::new(crate::graph::GraphStore::new(
            redis.clone(),
            keys.clone(),
            Default::default(),
        )),
    )
    .without_scheduler();
    let counters = worker.counters();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = Duration::from_secs(600);
    loop {
        let done = counters.processed.load(Ordering::Relaxed)
            + counters.dead_lettered.load(Ordering::Relaxed);
        if done >= args.jobs as u64 || started.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let process = started.elapsed();
    shutdown.cancel();
    let _ = run.await;
    let per_s = |n: usize, d: Duration| (n as f64 / d.as_secs_f64().max(1e-9)) as u64;
    Ok(QueueBenchReport {
        bench: "queue",
        handler: args.handler,
        kind: args.kind,
        events: args.events,
        jobs: args.jobs,
        concurrency: args.concurrency,
        partitions: args.partitions,
        batch_size: args.batch_size,
        graphs: args.graphs,
        enqueue_ms: enqueue.as_millis() as u64,
        enqueue_per_s: per_s(args.jobs, enqueue),
        process_ms: process.as_millis() as u64,
        process_per_s: per_s(args.jobs, process),
        dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
    })
}

/// Deletes every key under `prefix` (SCAN, never KEYS).
pub async fn cleanup(redis: &Redis, prefix: &str) {
    let mut conn = redis.conn();
    let mut cursor: u64 = 0;
    loop {
        let r: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = r else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> =
                redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
