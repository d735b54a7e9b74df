//! Prometheus metrics (`GET /metrics` on the gateway, and on the worker's
//! `metrics_bind`). Names and meanings are listed in docs/operations.md.
//!
//! Two kinds of figures:
//! - what this process did: job counters, WebSocket connections and
//!   subscriptions, latency histograms. Sum them over replicas.
//! - the state of each queue, read from Redis when scraped (length, pending,
//!   lag, delayed, dead letters, oldest job age, paused). Every replica
//!   reports the same values: take `max` over replicas, not `sum`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, counter, describe_counter, describe_gauge, describe_histogram, gauge,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::queue::{JobEventKind, JobObserver, Queue, QueueStats};

/// Seconds; from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Accepted (queued) to applied, observed by the worker.
pub const COMMAND_LATENCY: &str = "graphq_command_latency_seconds";
/// Applied to handed to subscribers' sockets, observed by the gateway.
pub const BROADCAST_LATENCY: &str = "graphq_broadcast_latency_seconds";
pub const WS_CONNECTIONS: &str = "graphq_ws_connections";
pub const WS_SUBSCRIPTIONS: &str = "graphq_ws_subscriptions";
pub const SSE_CONNECTIONS: &str = "graphq_sse_connections";
/// Connections the gateway accepted beyond a connection cap (label `cap`:
/// `per_ip` or `total`), served one health probe at most.
pub const HTTP_CONNECTIONS_REFUSED: &str = "graphq_http_connections_refused_total";

/// WebSockets the gateway closed, by close code (label `code`; `4008`: a
/// client too slow to take its frames).
pub const WS_CLOSES: &str = "graphq_ws_closes_total";
/// 1 when Redis answered this scrape's reads of the queues, 0 when it did not.
pub const REDIS_UP: &str = "graphq_redis_up";

/// What `/metrics` answers with (Prometheus text format 0.0.4).
/// Conflict decisions and resolutions the commands worker logged, by
/// `strategy` and `outcome`.
pub const CONFLICTS: &str = "graphq_conflicts_total";
/// Every (strategy, outcome) a conflict-log record can have
/// (docs/graph.md, The conflict log), exported at 0 from start.
pub const CONFLICT_KINDS: [(&str, &str); 6] = [
    ("LAST_WRITE_WINS", "applied"),
    ("CLIENT_WINS", "applied"),
    ("SERVER_WINS", "kept"),
    ("MERGE", "kept"),
    ("MANUAL", "open"),
    ("MANUAL", "resolved"),
];
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same
/// handle. Must run inside a Tokio runtime (a task keeps histograms drained).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            describe();
            for (strategy, outcome) in CONFLICT_KINDS {
                counter!(CONFLICTS, "strategy" => strategy, "outcome" => outcome).absolute(0);
            }
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

fn describe() {
    for (name, help) in [
        (
            "graphq_jobs_processed_total",
            "Jobs this process completed.",
        ),
        (
            "graphq_jobs_failed_total",
            "Jobs this process gave up on (dead-lettered).",
        ),
        (
            "graphq_jobs_retried_total",
            "Failed attempts this process scheduled again.",
        ),
        (
            "graphq_jobs_dead_lettered_total",
            "Jobs this process moved to the dead-letter stream.",
        ),
        (
            "graphq_jobs_rate_limited_total",
            "Jobs this process held back by a rate limit.",
        ),
        (
            "graphq_jobs_stalled_total",
            "Jobs this process took over from a stalled worker.",
        ),
        (
            "graphq_commands_accepted_total",
            "Commands this gateway queued.",
        ),
        (
            "graphq_commands_rejected_total",
            "Commands this gateway refused, by error code.",
        ),
        (
            CONFLICTS,
            "Conflict decisions (by strategy and outcome) and MANUAL resolutions this worker logged.",
        ),
        (
            HTTP_CONNECTIONS_REFUSED,
            "Connections beyond a connection cap (per peer address or in total), served a health probe at most.",
        ),
        (
            WS_CLOSES,
            "WebSockets this gateway closed, by close code (4008: too slow).",
        ),
    ] {
        describe_counter!(name, help);
    }
    // Shown from the start, so that alerts and dashboards see 0 before the
    // first slow client rather than no series.
    counter!(WS_CLOSES, "code" => "4008").absolute(0);
    for (name, help) in [
        (
            "graphq_queue_length",
            "Entries in the queue's streams (waiting or in flight).",
        ),
        (
            "graphq_queue_pending",
            "Entries delivered to a worker and not yet acknowledged.",
        ),
        (
            "graphq_queue_lag",
            "Entries not yet delivered to any worker.",
        ),
        (
            "graphq_queue_delayed",
            "Jobs waiting for their time (delayed or backing off).",
        ),
        (
            "graphq_queue_dead_letters",
            "Entries in the dead-letter streams.",
        ),
        (
            "graphq_queue_oldest_job_age_seconds",
            "Age of the oldest entry still in the streams.",
        ),
        ("graphq_queue_paused", "1 when the queue is paused."),
        (
            "graphq_queue_workers",
            "Workers registered on the queue (heartbeat not expired).",
        ),
        (
            "graphq_queue_partitions_unowned",
            "Partitions of an ordered queue that no worker holds the lease of.",
        ),
        (
            REDIS_UP,
            "1 when Redis answered this scrape's reads of the queues, 0 when it did not.",
        ),
        (
            WS_CONNECTIONS,
            "Open WebSocket connections on this gateway.",
        ),
        (
            WS_SUBSCRIPTIONS,
            "Graph subscriptions of those connections.",
        ),
        (
            SSE_CONNECTIONS,
            "Open Server-Sent Events streams on this gateway.",
        ),
    ] {
        describe_gauge!(name, help);
    }
    // Exported from the start (at 0), not only once a stream has opened.
    gauge!(SSE_CONNECTIONS).increment(0.0);
    describe_histogram!(
        COMMAND_LATENCY,
        metrics::Unit::Seconds,
        "From a command being queued (ACCEPTED) to the worker applying it."
    );
    describe_histogram!(
        BROADCAST_LATENCY,
        metrics::Unit::Seconds,
        "From a command being applied to its COMMAND_APPLIED being handed to the subscribers' sockets."
    );
}

/// Counts the conflict-log records of one command: `STRATEGY:outcome`
/// texts, as apply_command.lua answers them in `logged`.
pub fn count_conflicts<'a>(logged: impl IntoIterator<Item = &'a str>) {
    for kind in logged {
        if let Some((strategy, outcome)) = CONFLICT_KINDS
            .iter()
            .find(|(s, o)| kind.strip_prefix(*s).and_then(|r| r.strip_prefix(':')) == Some(*o))
        {
            counter!(CONFLICTS, "strategy" => *strategy, "outcome" => *outcome).increment(1);
        }
    }
}

/// The Prometheus text: queue gauges refreshed from Redis first (a queue
/// Redis does not answer for keeps its last values).
pub async fn render(queues: &[Queue]) -> String {
    let handle = install();
    let mut answered = true;
    for queue in queues {
        match queue.stats().await {
            Ok(stats) => set_queue_gauges(&stats),
            Err(err) => {
                answered = false;
                tracing::warn!(%err, queue = queue.name(), "queue gauges not refreshed");
            }
        }
    }
    gauge!(REDIS_UP).set(if answered { 1.0 } else { 0.0 });
    handle.render()
}

fn set_queue_gauges(stats: &QueueStats) {
    let queue = stats.queue.clone();
    let set = |name: &'static str, value: f64| gauge!(name, "queue" => queue.clone()).set(value);
    set("graphq_queue_length", stats.total(|p| p.length) as f64);
    set("graphq_queue_pending", stats.total(|p| p.pending) as f64);
    set("graphq_queue_lag", stats.total(|p| p.lag) as f64);
    set("graphq_queue_delayed", stats.total(|p| p.delayed) as f64);
    set(
        "graphq_queue_dead_letters",
        stats.total(|p| p.dead_lettered_now) as f64,
    );
    let oldest_ms = stats
        .partitions
        .iter()
        .filter_map(|p| p.oldest_age_ms)
        .max();
    set(
        "graphq_queue_oldest_job_age_seconds",
        oldest_ms.unwrap_or(0) as f64 / 1000.0,
    );
    set("graphq_queue_paused", if stats.paused { 1.0 } else { 0.0 });
    set("graphq_queue_workers", stats.workers.len() as f64);
    // Priority queues have no leases: every worker reads every partition.
    if stats.kind == "ordered" {
        let unowned = stats.partitions.iter().filter(|p| p.owner.is_none());
        set("graphq_queue_partitions_unowned", unowned.count() as f64);
    }
}

/// Job counters of one queue in this process, resolved once: the observer a
/// worker is given (`Worker::observer`) so that its jobs show on `/metrics`.
pub struct JobMetrics {
    processed: Counter,
    failed: Counter,
    retried: Counter,
    dead_lettered: Counter,
    rate_limited: Counter,
    stalled: Counter,
}

impl JobMetrics {
    /// Installs the recorder first (see [`install`]): counters resolved
    /// before it would count nowhere.
    pub fn new(queue: &str) -> JobMetrics {
        install();
        let c = |name: &'static str| counter!(name, "queue" => queue.to_string());
        JobMetrics {
            processed: c("graphq_jobs_processed_total"),
            failed: c("graphq_jobs_failed_total"),
            retried: c("graphq_jobs_retried_total"),
            dead_lettered: c("graphq_jobs_dead_lettered_total"),
            rate_limited: c("graphq_jobs_rate_limited_total"),
            stalled: c("graphq_jobs_stalled_total"),
        }
    }
}

impl JobObserver for JobMetrics {
    fn on_event(&self, kind: &JobEventKind) {
        match kind {
            JobEventKind::Completed => self.processed.increment(1),
            JobEventKind::Retrying { .. } => self.retried.increment(1),
            JobEventKind::DeadLettered { .. } => {
                self.failed.increment(1);
                self.dead_lettered.increment(1);
            }
            JobEventKind::Stalled => self.stalled.increment(1),
            JobEventKind::RateLimited { .. } => self.rate_limited.increment(1),
        }
    }
}

/// A gauge raised while the guard lives (a connection, a subscription).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(name: &'static str) -> GaugeGuard {
        let gauge = gauge!(name);
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Observes the time since `since_ms` (ms since the Unix epoch) in seconds.
pub fn observe_since(histogram: &'static str, since_ms: u64) {
    let elapsed_ms = crate::db::now_ms().saturating_sub(since_ms);
    metrics::histogram!(histogram).record(elapsed_ms as f64 / 1000.0);
}
