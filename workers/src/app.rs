//! The composition root: builds graphq's parts from a [`Config`] and starts
//! them. `graphq gateway`, `graphq worker`, `graphq dev` and the test harness
//! all assemble gateways and workers here, so there is one way to do it.

use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use graphq::auth::Auth;
use graphq::config::Config;
use graphq::db::Redis;
use graphq::gateway::{AppState, BroadcastSettings, Broadcaster};
use graphq::graph::GraphStore;
use graphq::keys::Keys;
use graphq::queue::{Processor, Queue, QueueError, Worker};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::GraphqProcessor;

/// Why a part could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("redis at {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("unknown queue `{0}` (configured: {1})")]
    UnknownQueue(String, String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to the Redis (or cluster) of `config`, retrying for `patience`.
pub async fn connect(config: &Config, patience: Duration) -> Result<Redis, StartError> {
    let target = config.redis_target();
    Redis::connect_with_retry(&target, patience)
        .await
        .map(|r| r.with_wait(config.redis_wait()))
        .map_err(|source| StartError::Connect {
            url: target.describe(),
            source,
        })
}

pub fn graph_store(config: &Config, redis: Redis) -> GraphStore {
    GraphStore::new(
        redis,
        Keys::new(config.prefix.clone()),
        config.graph.clone(),
    )
}

/// The queue `name` as configured.
pub fn queue(config: &Config, redis: &Redis, name: &str) -> Result<Queue, StartError> {
    let opts = config.queues.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.queues.keys().map(String::as_str).collect();
        StartError::UnknownQueue(name.to_string(), known.join(", "))
    })?;
    Ok(Queue::new(
        redis.clone(),
        Keys::new(config.prefix.clone()),
        name,
        opts.clone(),
    )?)
}

/// The production processor: graph commands, snapshots (when `analytics`
/// is configured) and the jobs of the other queues.
pub fn processor(config: &Config, redis: &Redis) -> Result<GraphqProcessor, StartError> {
    let mut processor = GraphqProcessor::new(graph_store(config, redis.clone()));
    if config.queues.contains_key("commands") {
        processor = processor.with_commands(queue(config, redis, "commands")?);
    }
    if config.queues.contains_key("analytics") {
        let analytics = queue(config, redis, "analytics")?;
        processor = processor.with_snapshots(analytics, config.graph.snapshot_every);
    }
    Ok(processor)
}

/// Workers started by [`start_workers`].
pub struct Workers {
    tasks: TaskTracker,
}

impl Workers {
    /// Waits until every worker has stopped (after the shutdown token fired).
    pub async fn stopped(self) {
        self.tasks.wait().await;
        tracing::info!("workers stopped");
    }
}

/// Starts one worker per queue in `only` (every configured queue when empty),
/// each running `processor` until `shutdown` fires.
pub fn start_workers<P: Processor + Clone>(
    config: &Config,
    redis: &Redis,
    only: &[String],
    processor: P,
    shutdown: &CancellationToken,
) -> Result<Workers, StartError> {
    let names: Vec<String> = if only.is_empty() {
        config.queues.keys().cloned().collect()
    } else {
        only.to_vec()
    };
    let tasks = TaskTracker::new();
    for name in &names {
        let worker = Worker::new(queue(config, redis, name)?, processor.clone())
            .observer(graphq::metrics::JobMetrics::new(name));
        tracing::info!(queue = %name, worker = worker.id(), "worker started");
        let shutdown = shutdown.clone();
        let name = name.clone();
        tasks.spawn(async move {
            if let Err(err) = worker.run(shutdown).await {
                tracing::error!(queue = %name, %err, "worker stopped with an error");
            }
        });
    }
    tasks.close();
    Ok(Workers { tasks })
}

/// A gateway serving on its listener.
pub struct Gateway {
    /// Where it listens (the port the OS chose when bound to port 0).
    pub addr: std::net::SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Waits until the gateway has stopped serving (after `shutdown` fired).
    pub async fn stopped(self) -> std::io::Result<()> {
        let served = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        tracing::info!("gateway stopped");
        served
    }
}

/// Starts the HTTP API and WebSocket endpoint on `listener`, with its
/// broadcaster, until `shutdown` fires.
pub async fn start_gateway(
    config: &Config,
    redis: Redis,
    auth: Auth,
    listener: TcpListener,
    shutdown: &CancellationToken,
) -> Result<Gateway, StartError> {
    let store = graph_store(config, redis.clone());
    let commands = queue(config, &redis, "commands")?;
    let broadcaster = Broadcaster::start(
        redis.clone(),
        store.clone(),
        BroadcastSettings {
            max_changes: config.graph.max_changes,
            presence_timeout: Duration::from_millis(config.gateway.presence_timeout_ms),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|source| StartError::Connect {
        url: config.redis_target().describe(),
        source,
    })?;
    let state = AppState::new(
        store,
        commands,
        auth,
        broadcaster,
        config.gateway.clone(),
        shutdown.clone(),
    );
    let addr = listener.local_addr()?;
    tracing::info!(bind = %addr, "gateway listening");
    let task = tokio::spawn(graphq::gateway::serve(listener, state));
    Ok(Gateway { addr, task })
}

/// Serves `/metrics`, `/healthz` and `/readyz` for a process without a
/// gateway (`graphq worker --metrics-bind`), until `shutdown` fires.
pub fn serve_worker_metrics(
    listener: TcpListener,
    redis: Redis,
    queues: Vec<Queue>,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    graphq::metrics::install();
    let queues = std::sync::Arc::new(queues);
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let queues = queues.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, graphq::metrics::CONTENT_TYPE)],
                        graphq::metrics::render(&queues).await,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { r#"{"status":"ok"}"# }))
        .route(
            "/readyz",
            get(move || {
                let redis = redis.clone();
                async move { graphq::gateway::readiness(&redis).await }
            }),
        );
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    })
}
