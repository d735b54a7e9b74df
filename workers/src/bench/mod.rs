//! `graphq bench`: load generators whose JSON output BENCHMARKS.md records.
//! `queue` and `graph` measure the engine and the store alone; [`ws`] holds
//! `e2e` and `fanout`, which drive a running gateway over WebSocket (or over
//! Server-Sent Events and HTTP: [`sse`]).
//!
//! `bench queue` measures the engine alone: it enqueues N jobs (pipelined,
//! several producers), then runs one in-process worker until all are done.
//! It works under its own throwaway key prefix and deletes it afterwards.

pub mod jobs;
pub mod process_cpu;
pub mod redis_cost;
pub mod sse;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use graphq::db::Redis;
use graphq::keys::Keys;
use graphq::queue::{EventsMode, NewJob, Queue, QueueError, QueueKind, QueueOptions, Worker};

use crate::GraphqProcessor;
use jobs::{BENCH_APPLY, BENCH_NOOP, BenchProcessor};

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
    graphq::scripts::SCRIPTS.load_all(&mut redis.conn()).await?;
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
        BenchProcessor::new(
            GraphqProcessor::new(graphq::graph::GraphStore::new(
                redis.clone(),
                keys.clone(),
                Default::default(),
            )),
            redis.clone(),
            keys.clone(),
        ),
    )
    .observer(graphq::metrics::JobMetrics::new(queue.name()))
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

/// Deletes every key under `prefix` (SCAN on every master, never KEYS).
pub async fn cleanup(redis: &Redis, prefix: &str) {
    let Ok(masters) = redis.masters().await else {
        return;
    };
    let mut conn = redis.conn();
    for (host, port) in masters {
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .clone();
            let r = redis.on_node(&host, port, &scan).await;
            let Some((next, keys)) = r
                .ok()
                .and_then(|v| redis::from_redis_value::<(u64, Vec<String>)>(v).ok())
            else {
                break;
            };
            // One UNLINK per key: in a cluster they live in different slots.
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.unlink(k).ignore();
            }
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct GraphBenchArgs {
    /// Commands to apply in the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    pub commands: usize,
    /// Graphs the commands are spread over.
    #[arg(long, default_value_t = 1)]
    pub graphs: usize,
    /// Commands per pipeline.
    #[arg(long, default_value_t = 256)]
    pub pipeline: usize,
    /// Size of the graph whose full state is read.
    #[arg(long, default_value_t = 10_000)]
    pub state_nodes: usize,
    #[arg(long, default_value_t = 20_000)]
    pub state_edges: usize,
    /// Timed reads of the state and of changes-since.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GraphBenchReport {
    pub bench: &'static str,
    pub graphs: usize,
    pub commands: usize,
    pub pipeline: usize,
    pub apply_per_s: u64,
    pub state_nodes: usize,
    pub state_edges: usize,
    pub state_ms: Percentiles,
    /// The same graph through `GET state`'s path with a warm cache: the
    /// version check, then the cached body.
    pub state_cached_ms: Percentiles,
    pub changes_since_100_ms: Percentiles,
}

/// Graph-store benchmark: script applies per second, then latency of a full
/// state read of a large graph (from Redis, and as `GET state` serves it
/// with a warm cache) and of a 100-entry changes-since.
pub async fn graph(
    redis: Redis,
    base_prefix: &str,
    args: &GraphBenchArgs,
) -> Result<GraphBenchReport, graphq::graph::StoreError> {
    let prefix = format!(
        "{base_prefix}:bench:{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let result = run_graph_bench(&redis, &prefix, args).await;
    cleanup(&redis, &prefix).await;
    result
}

fn bench_command(op_id: String, kind: &str, payload: serde_json::Value) -> graphq::graph::Command {
    let json = serde_json::json!({"operationId": op_id, "type": kind, "payload": payload});
    graphq::graph::command::from_value(&json).expect("benchmark commands are valid")
}

async fn run_graph_bench(
    redis: &Redis,
    prefix: &str,
    args: &GraphBenchArgs,
) -> Result<GraphBenchReport, graphq::graph::StoreError> {
    use graphq::graph::{ApplyContext, GraphSettings, GraphStore};
    use serde_json::json;
    let settings = GraphSettings {
        max_nodes: 1_000_000,
        max_edges: 1_000_000,
        ..GraphSettings::default()
    };
    let store = GraphStore::new(redis.clone(), Keys::new(prefix), settings);
    graphq::scripts::SCRIPTS.load_all(&mut redis.conn()).await?;
    let ctx = |g: usize| ApplyContext {
        graph_id: format!("g{g}"),
        user_id: "bench".into(),
        now_ms: graphq::db::now_ms(),
        new_epoch: "bench".into(),
    };
    let graphs = args.graphs.max(1);
    // One node per graph to update, then the timed updates (data and position).
    for g in 0..graphs {
        store
            .apply(
                &ctx(g),
                &bench_command(
                    format!("seed-{g}"),
                    "CREATE_NODE",
                    json!({"node": {"id": "n", "position": {"x": 0, "y": 0}}}),
                ),
            )
            .await?;
    }
    let commands: Vec<(ApplyContext, graphq::graph::Command)> = (0..args.commands)
        .map(|i| {
            let payload =
                json!({"id": "n", "patch": {"position": {"x": i, "y": i}, "data": {"step": i}}});
            (
                ctx(i % graphs),
                bench_command(format!("op-{i}"), "UPDATE_NODE", payload),
            )
        })
        .collect();
    let mut conn = redis.conn();
    let started = Instant::now();
    for chunk in commands.chunks(args.pipeline.max(1)) {
        let mut pipe = redis::pipe();
        for (c, cmd) in chunk {
            pipe.add_command(store.invocation(c, cmd)).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let apply = started.elapsed();

    // A large graph, built in batches.
    let big = ApplyContext {
        graph_id: "big".into(),
        ..ctx(0)
    };
    let node_ops: Vec<serde_json::Value> = (0..args.state_nodes)
        .map(|i| json!({"type": "CREATE_NODE", "payload": {"node": {"id": format!("n{i}"), "type": "box",
            "position": {"x": i % 100 * 120, "y": i / 100 * 80}, "data": {"label": format!("Node {i}")}}}}))
        .collect();
    let n = args.state_nodes.max(2);
    let edge_ops: Vec<serde_json::Value> = (0..args.state_edges)
        .map(|i| {
            json!({"type": "CREATE_EDGE", "payload": {"edge": {"id": format!("e{i}"),
            "source": format!("n{}", i % n), "target": format!("n{}", (i * 7 + 1) % n)}}})
        })
        .collect();
    for (b, ops) in node_ops.chunks(500).chain(edge_ops.chunks(500)).enumerate() {
        let cmd = bench_command(
            format!("build-{b}"),
            "BATCH_UPDATE",
            json!({"operations": ops}),
        );
        store.apply(&big, &cmd).await?;
    }
    let mut state_samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        let body = store.state_json("big").await?;
        std::hint::black_box(body.json);
        state_samples.push(t.elapsed());
    }
    let cache = graphq::gateway::state_cache::StateCache::new(16, 64 * 1024 * 1024);
    let mut cached_samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        let (epoch, version) = store.version_of("big").await?;
        let body = match cache.get("big", &epoch, version) {
            Some(body) => body,
            None => {
                let s = store.state_json("big").await?;
                let body = axum::body::Bytes::from(s.json);
                cache.put("big", &s.epoch, s.version, body.clone());
                body
            }
        };
        std::hint::black_box(body);
        cached_samples.push(t.elapsed());
    }
    // The first sample filled the cache: the rest are warm.
    if !cached_samples.is_empty() {
        cached_samples.remove(0);
    }
    let version = store.raw("big").await?.version;
    // 100 small changes so changes-since returns typical entries.
    for i in 0..100 {
        let cmd = bench_command(
            format!("move-{i}"),
            "UPDATE_NODE",
            json!({"id": "n1", "patch": {"position": {"x": i, "y": 1}}}),
        );
        store.apply(&big, &cmd).await?;
    }
    let mut since_samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let t = Instant::now();
        let ch = store.changes_since("big", version, 100).await?;
        let body = serde_json::to_vec(&ch).unwrap_or_default();
        std::hint::black_box(body);
        since_samples.push(t.elapsed());
    }
    Ok(GraphBenchReport {
        bench: "graph",
        graphs,
        commands: args.commands,
        pipeline: args.pipeline,
        apply_per_s: (args.commands as f64 / apply.as_secs_f64().max(1e-9)) as u64,
        state_nodes: args.state_nodes,
        state_edges: args.state_edges,
        state_ms: Percentiles::of(state_samples),
        state_cached_ms: Percentiles::of(cached_samples),
        changes_since_100_ms: Percentiles::of(since_samples),
    })
}
