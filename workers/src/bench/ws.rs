//! `graphq bench e2e` and `graphq bench fanout`: WebSocket load against a
//! running gateway (BENCHMARKS.md), or SSE load with `--transport sse`
//! ([`super::sse`]). Tokens are minted with GRAPHQ_AUTH_SECRET.
//!
//! Every operation id carries its submit time (µs since the run started),
//! so any client that receives COMMAND_APPLIED knows the latency without a
//! shared map: submit-to-own-APPLIED for the sender, submit-to-others-APPLIED
//! for everyone else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use graphq::auth::{Auth, Graphs, Role};

use super::Percentiles;
use super::process_cpu::{CpuPerCommand, Processes};
use super::redis_cost::{RedisCost, RedisCounters};
use super::sse::{self, Transport};

#[derive(Debug, thiserror::Error)]
pub enum WsBenchError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("auth: {0}")]
    Auth(#[from] graphq::auth::AuthError),
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

#[derive(Clone, Debug, clap::Args)]
pub struct E2eArgs {
    /// Gateway base URL, e.g. ws://127.0.0.1:3000 (http:// works too).
    #[arg(long, default_value = "ws://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    #[arg(long, default_value_t = 20)]
    pub graphs: usize,
    /// Commands per second across all clients.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Seconds of steady sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Also try these rates (comma-separated) and report the highest one
    /// sustained (achieved ≥ 95 % of target, nothing lost).
    #[arg(long, value_delimiter = ',')]
    pub ramp: Vec<u64>,
    /// The gateway's Redis: when given, each round also reports Redis CPU
    /// and Redis commands per applied command (INFO cpu and commandstats
    /// before and after). One Redis only, not a cluster.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// PIDs of the gateways (comma-separated): each round also reports their
    /// CPU time per applied command (Linux /proc).
    #[arg(long, value_delimiter = ',')]
    pub gateway_pid: Vec<u32>,
    /// PIDs of the workers, as `--gateway-pid`.
    #[arg(long, value_delimiter = ',')]
    pub worker_pid: Vec<u32>,
    /// `sse`: each client hears its graph's event stream and sends
    /// commands as HTTP requests.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
}

#[derive(Debug, Serialize)]
pub struct E2eReport {
    pub bench: &'static str,
    pub transport: Transport,
    pub clients: usize,
    pub graphs: usize,
    pub rate: u64,
    pub duration_s: u64,
    pub sent: u64,
    pub applied: u64,
    pub reverted: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub achieved_per_s: u64,
    pub own_applied_ms: Percentiles,
    pub others_applied_ms: Percentiles,
    /// Submit to the gateway's answer that it queued the command (ACCEPTED
    /// over WebSocket, the 202 over HTTP): admission alone, without the
    /// worker and the delivery.
    pub accepted_ms: Percentiles,
    /// Highest rate of `--ramp` (or `--rate`) sustained, commands/s.
    pub highest_sustained_rate: u64,
    pub ramp: Vec<RampStep>,
    /// What Redis spent per applied command (with `--redis-url`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCost>,
    /// CPU time per applied command, µs: of the gateways and workers named
    /// by `--gateway-pid` / `--worker-pid`, and of this load generator.
    pub cpu_us_per_command: CpuPerCommand,
}

#[derive(Debug, Serialize)]
pub struct RampStep {
    pub rate: u64,
    pub achieved_per_s: u64,
    pub lost: u64,
    pub own_p99_ms: f64,
    /// Redis CPU per applied command at this rate, µs (with `--redis-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_command: Option<f64>,
}

fn ws_base(url: &str) -> String {
    url.replacen("http://", "ws://", 1)
        .trim_end_matches('/')
        .to_string()
}

/// Shared tallies of one run.
#[derive(Default)]
pub(super) struct Tally {
    pub sent: AtomicU64,
    applied: AtomicU64,
    reverted: AtomicU64,
    duplicated: AtomicU64,
    /// When the last outcome of a measured command arrived, µs since start.
    last_outcome_us: AtomicU64,
    /// Latencies in µs; a std Mutex because nothing is awaited while held.
    own: Mutex<Vec<u64>>,
    others: Mutex<Vec<u64>>,
    pub accepted: Mutex<Vec<u64>>,
}

/// `client-seq-micros` → (client, micros).
pub(super) fn decode_op(op: &str) -> Option<(usize, u64)> {
    let mut parts = op.split('-');
    let client = parts.next()?.strip_prefix('c')?.parse().ok()?;
    // Setup commands (`c{i}-init-{run}`) carry no send time: not measured.
    // What follows the time (the run) only keeps ids unique across runs.
    let _seq: u64 = parts.next()?.parse().ok()?;
    let micros = parts.next()?.parse().ok()?;
    Some((client, micros))
}

pub async fn e2e(secret: &str, args: &E2eArgs) -> Result<E2eReport, WsBenchError> {
    graphq::os::raise_fd_limit();
    let mut rates = vec![args.rate];
    rates.extend(args.ramp.iter().copied().filter(|r| *r != args.rate));
    let mut main = None;
    let mut ramp = Vec::new();
    let mut highest = 0;
    for (round, rate) in rates.into_iter().enumerate() {
        let r = e2e_round(secret, args, rate, round).await?;
        let sustained = r.lost == 0 && r.achieved_per_s as f64 >= rate as f64 * 0.95;
        if sustained {
            highest = highest.max(rate);
        }
        ramp.push(RampStep {
            rate,
            achieved_per_s: r.achieved_per_s,
            lost: r.lost,
            own_p99_ms: r.own_applied_ms.p99,
            redis_cpu_us_per_command: r.redis.as_ref().map(|c| c.redis_cpu_us_per_command),
        });
        if main.is_none() {
            main = Some(r);
        }
    }
    let mut report = main.ok_or_else(|| WsBenchError::Protocol("no round ran".into()))?;
    report.highest_sustained_rate = highest;
    report.ramp = ramp;
    Ok(report)
}

async fn e2e_round(
    secret: &str,
    args: &E2eArgs,
    rate: u64,
    round: usize,
) -> Result<E2eReport, WsBenchError> {
    let auth = Auth::new(secret)?;
    let base = ws_base(&args.url);
    let run = format!(
        "{}r{round}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let clients = args.clients.max(1);
    let graphs = args.graphs.max(1);
    let per_client = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    let duration = Duration::from_secs(args.duration);
    let ready = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let token = auth.mint(
            &format!("bench-{i}"),
            Graphs::All,
            Role::Editor,
            Duration::from_secs(3600),
        )?;
        let url = format!("{base}/ws?token={token}");
        let graph = format!("bench-{run}-{}", i % graphs);
        let (tally, ready, run) = (tally.clone(), ready.clone(), run.clone());
        let (transport, addr) = (args.transport, sse::authority(&base));
        tasks.spawn(async move {
            match transport {
                Transport::Ws => {
                    e2e_client(
                        i, &run, &url, &graph, per_client, duration, started, tally, ready,
                    )
                    .await
                }
                Transport::Sse => {
                    sse::e2e_client(
                        i, &run, &addr, &token, &graph, per_client, duration, started, tally, ready,
                    )
                    .await
                }
            }
        });
    }
    ready.wait().await;
    let send_started = started.elapsed();
    let before = match &args.redis_url {
        Some(url) => Some(RedisCounters::read(url).await.map_err(redis_error)?),
        None => None,
    };
    let processes = Processes {
        gateways: args.gateway_pid.clone(),
        workers: args.worker_pid.clone(),
    };
    let cpu_before = processes.read();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(%e, "bench client failed");
        }
    }
    // From the start signal to the last outcome: a rate above capacity
    // shows as a long drain, and so as achieved below target.
    let last = Duration::from_micros(tally.last_outcome_us.load(Ordering::Relaxed));
    let elapsed = last.saturating_sub(send_started);
    let us = |v: &Mutex<Vec<u64>>| {
        let list = v.lock().map(|l| l.clone()).unwrap_or_default();
        Percentiles::of(list.into_iter().map(Duration::from_micros).collect())
    };
    let sent = tally.sent.load(Ordering::Relaxed);
    let applied = tally.applied.load(Ordering::Relaxed);
    let reverted = tally.reverted.load(Ordering::Relaxed);
    let redis = match (&args.redis_url, before) {
        (Some(url), Some(before)) => {
            let after = RedisCounters::read(url).await.map_err(redis_error)?;
            Some(before.cost_until(&after, applied))
        }
        _ => None,
    };
    let cpu_us_per_command = cpu_before.per_command_until(&processes.read(), applied);
    Ok(E2eReport {
        bench: "e2e",
        transport: args.transport,
        clients,
        graphs,
        rate,
        duration_s: args.duration,
        sent,
        applied,
        reverted,
        lost: sent.saturating_sub(applied + reverted),
        duplicated: tally.duplicated.load(Ordering::Relaxed),
        achieved_per_s: (applied as f64 / elapsed.as_secs_f64().max(args.duration as f64)) as u64,
        own_applied_ms: us(&tally.own),
        others_applied_ms: us(&tally.others),
        accepted_ms: us(&tally.accepted),
        highest_sustained_rate: 0,
        ramp: Vec::new(),
        redis,
        cpu_us_per_command,
    })
}

fn redis_error(e: redis::RedisError) -> WsBenchError {
    WsBenchError::Protocol(format!("reading Redis counters: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn e2e_client(
    i: usize,
    run: &str,
    url: &str,
    graph: &str,
    every: Duration,
    duration: Duration,
    started: Instant,
    tally: Arc<Tally>,
    ready: Arc<tokio::sync::Barrier>,
) -> Result<(), WsBenchError> {
    let setup = e2e_setup(i, run, url, graph).await;
    // Every client reaches the start line once, set up or not: the run
    // starts when all have.
    ready.wait().await;
    let (mut tx, mut rx) = setup?;
    let send = |v: Value| Message::Text(v.to_string().into());
    let node = format!("n{i}");
    let tally_rx = tally.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Latencies are kept per client and merged once, and frames are read into
    // borrowed fields only: the load generator shares the machine with what
    // it measures, so its own CPU is kept small.
    let reader = tokio::spawn(async move {
        let mut outcomes = Outcomes::new(i);
        loop {
            let m = tokio::select! {
                _ = &mut stop_rx => break,
                m = rx.next() => m,
            };
            match m {
                Some(Ok(Message::Text(t))) => outcomes.frame(&t, started, &tally_rx),
                Some(Ok(_)) => continue,
                _ => break,
            }
        }
        outcomes.finish(&tally_rx);
    });
    let mut pacer = Pacer::start(i, every, duration, started, run, &node).await;
    while let Some(c) = pacer.next().await {
        tx.send(send(
            json!({"type": "COMMAND", "graphId": graph, "command": c}),
        ))
        .await?;
        tally.sent.fetch_add(1, Ordering::Relaxed);
    }
    wind_down(&tally, stop_tx, reader).await;
    let _ = tx.close().await;
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a client's socket, subscribes to its graph and creates its node.
async fn e2e_setup(
    i: usize,
    run: &str,
    url: &str,
    graph: &str,
) -> Result<
    (
        futures_util::stream::SplitSink<Socket, Message>,
        futures_util::stream::SplitStream<Socket>,
    ),
    WsBenchError,
> {
    let socket = connect(url).await?;
    let (mut tx, mut rx) = socket.split();
    let send = |v: Value| Message::Text(v.to_string().into());
    tx.send(send(
        json!({"type": "SUBSCRIBE", "graphId": graph, "clientVersion": 0}),
    ))
    .await?;
    // The SYNC first: a change made before it would be folded into it, and
    // the setup command's COMMAND_APPLIED never heard.
    let setup = tokio::time::timeout(SETUP_WAIT, async {
        until_heard(&mut rx, |v| v["type"] == "SYNC").await
    });
    setup.await.map_err(|_| setup_timeout("SYNC"))??;
    // Operation ids are unique per run: graphq dedupes them (per queue
    // partition for 10 minutes, and by outcome for an hour), so an id
    // reused from an earlier run would be answered as a duplicate and never
    // applied again.
    let init_op = format!("c{i}-init-{run}");
    let create = json!({"operationId": init_op, "type": "CREATE_NODE",
        "payload": {"node": {"id": format!("n{i}"), "position": {"x": 0, "y": 0}}}});
    tx.send(send(
        json!({"type": "COMMAND", "graphId": graph, "command": create}),
    ))
    .await?;
    // Wait until our node exists, reading what arrives meanwhile: its
    // COMMAND_APPLIED, or a later SYNC that already holds it.
    let node = format!("n{i}");
    let mut syncs = 0;
    let setup = tokio::time::timeout(SETUP_WAIT, async {
        until_heard(&mut rx, |v| {
            if v["type"] == "SYNC" {
                syncs += 1;
                return sync_holds(v, &init_op, &node);
            }
            (v["type"] == "COMMAND_APPLIED" || v["type"] == "REVERT")
                && v["operationId"] == init_op.as_str()
        })
        .await
    });
    setup.await.map_err(|_| {
        setup_timeout(&format!(
            "the setup command's outcome ({syncs} more SYNC meanwhile)"
        ))
    })??;
    Ok((tx, rx))
}

/// Whether a SYNC already holds the setup command's change: `behind` with
/// it among the changes, or `reset` with the node in the state.
pub(super) fn sync_holds(sync: &Value, operation_id: &str, node: &str) -> bool {
    let listed = |list: &Value, key: &str, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|e| e[key] == want))
    };
    listed(&sync["changes"], "operationId", operation_id)
        || listed(&sync["state"]["nodes"], "id", node)
}

/// How long a client waits for its SYNC and its setup command's outcome:
/// a client that never hears them fails instead of holding every other one
/// at the start line.
pub(super) const SETUP_WAIT: Duration = Duration::from_secs(30);

pub(super) fn setup_timeout(what: &str) -> WsBenchError {
    WsBenchError::Protocol(format!("{what} not heard within {SETUP_WAIT:?}"))
}

/// Reads frames until one that `wanted` picks; an ERROR frame or a close
/// fails the client.
async fn until_heard(
    rx: &mut futures_util::stream::SplitStream<Socket>,
    mut wanted: impl FnMut(&Value) -> bool,
) -> Result<(), WsBenchError> {
    loop {
        let Some(m) = rx.next().await else {
            return Err(WsBenchError::Protocol("closed before start".into()));
        };
        match m? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if wanted(&v) {
                    return Ok(());
                }
                if v["type"] == "ERROR" {
                    return Err(WsBenchError::Protocol(format!("setup refused: {t}")));
                }
            }
            Message::Close(Some(f)) => {
                return Err(WsBenchError::Protocol(format!(
                    "closed before start: {} {}",
                    f.code, f.reason
                )));
            }
            _ => {}
        }
    }
}

/// A client's sending schedule: one UPDATE_NODE of its node every `every`
/// for `duration`, each carrying its send time in its operation id.
pub(super) struct Pacer {
    tick: tokio::time::Interval,
    begin: Instant,
    duration: Duration,
    started: Instant,
    client: usize,
    seq: u64,
    run: String,
    node: String,
}

impl Pacer {
    pub async fn start(
        client: usize,
        every: Duration,
        duration: Duration,
        started: Instant,
        run: &str,
        node: &str,
    ) -> Pacer {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Spread the clients' ticks over one interval.
        tokio::time::sleep(every.mul_f64(client as f64 / 200.0 % 1.0)).await;
        Pacer {
            tick,
            begin: Instant::now(),
            duration,
            started,
            client,
            seq: 0,
            run: run.to_string(),
            node: node.to_string(),
        }
    }

    /// The next command, at its time; None once the run is over.
    pub async fn next(&mut self) -> Option<Value> {
        if self.begin.elapsed() >= self.duration {
            return None;
        }
        self.tick.tick().await;
        self.seq += 1;
        let (i, seq, run) = (self.client, self.seq, &self.run);
        let t0 = self.started.elapsed().as_micros() as u64;
        Some(
            json!({"operationId": format!("c{i}-{seq}-{t0}-{run}"), "type": "UPDATE_NODE",
            "payload": {"id": self.node, "patch": {"position": {"x": seq, "y": i}}}}),
        )
    }
}

/// Waits for the outcomes still owed, then stops the client's reader.
pub(super) async fn wind_down(
    tally: &Tally,
    stop: tokio::sync::oneshot::Sender<()>,
    reader: tokio::task::JoinHandle<()>,
) {
    drain(tally).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    let _ = reader.await;
}

/// What one client heard: its latencies, kept per client and merged once.
pub(super) struct Outcomes {
    client: usize,
    own: Vec<u64>,
    others: Vec<u64>,
    accepted: Vec<u64>,
    last_version: u64,
}

impl Outcomes {
    pub fn new(client: usize) -> Outcomes {
        Outcomes {
            client,
            own: Vec::new(),
            others: Vec::new(),
            accepted: Vec::new(),
            last_version: 0,
        }
    }

    /// One message (a frame's text, an event's data), read into borrowed
    /// fields only: the load generator shares the machine with what it
    /// measures, so its own CPU is kept small.
    pub fn frame(&mut self, text: &str, started: Instant, tally: &Tally) {
        let Ok(f) = serde_json::from_str::<Seen>(text) else {
            return;
        };
        let now = started.elapsed().as_micros() as u64;
        let op = f.operation_id.and_then(decode_op);
        match f.kind {
            "COMMAND_APPLIED" => {
                let version = f.version.unwrap_or(0);
                if version <= self.last_version {
                    tally.duplicated.fetch_add(1, Ordering::Relaxed);
                }
                self.last_version = self.last_version.max(version);
                if let Some((client, t0)) = op {
                    let lat = now.saturating_sub(t0);
                    if client == self.client {
                        tally.applied.fetch_add(1, Ordering::Relaxed);
                        tally.last_outcome_us.fetch_max(now, Ordering::Relaxed);
                        self.own.push(lat);
                    } else {
                        self.others.push(lat);
                    }
                }
            }
            "ACCEPTED" => {
                if let Some((_, t0)) = op.filter(|(c, _)| *c == self.client) {
                    self.accepted.push(now.saturating_sub(t0));
                }
            }
            "REVERT" if op.is_some_and(|(c, _)| c == self.client) => {
                tally.reverted.fetch_add(1, Ordering::Relaxed);
                tally.last_outcome_us.fetch_max(now, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub fn finish(self, tally: &Tally) {
        if let Ok(mut l) = tally.own.lock() {
            l.extend(self.own);
        }
        if let Ok(mut l) = tally.others.lock() {
            l.extend(self.others);
        }
        if let Ok(mut l) = tally.accepted.lock() {
            l.extend(self.accepted);
        }
    }
}

/// Waits for the outcomes of what every client sent, for as long as they keep
/// coming: a backlog left by a rate above capacity drains here, so "lost"
/// counts only what stopped arriving, and the next ramp step does not start
/// behind the last one's queue.
async fn drain(tally: &Tally) {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let done = tally.applied.load(Ordering::Relaxed) + tally.reverted.load(Ordering::Relaxed);
        if done >= tally.sent.load(Ordering::Relaxed) {
            return;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > DRAIN_STALL {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long the drain waits without a single outcome arriving.
const DRAIN_STALL: Duration = Duration::from_secs(5);

/// The fields of a server frame the e2e load generator looks at.
#[derive(serde::Deserialize)]
struct Seen<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    version: Option<u64>,
    #[serde(rename = "operationId", default, borrow)]
    operation_id: Option<&'a str>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value = "ws://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Changes sent, one every 200 ms.
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
    /// PID of the gateway, to measure its memory per idle connection.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// `sse`: the subscribers are event streams (the changes are still
    /// sent over one WebSocket).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub bench: &'static str,
    pub transport: Transport,
    pub subscribers: usize,
    pub connected: usize,
    pub messages: usize,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub latency_ms: Percentiles,
    pub connect_s: f64,
    /// Gateway resident memory growth per idle subscribed connection.
    pub gateway_kib_per_connection: Option<f64>,
}

pub async fn fanout(secret: &str, args: &FanoutArgs) -> Result<FanoutReport, WsBenchError> {
    graphq::os::raise_fd_limit();
    let auth = Auth::new(secret)?;
    let base = ws_base(&args.url);
    let graph = format!("fanout-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let token = auth.mint(
        "fanout",
        Graphs::All,
        Role::Editor,
        Duration::from_secs(3600),
    )?;
    let url = format!("{base}/ws?token={token}");
    let started = Instant::now();
    let rss_before = args.gateway_pid.and_then(rss_kib);
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let mut subs = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let connect_started = Instant::now();
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    for _ in 0..args.subscribers {
        let (url, graph, lat, delivered, connected, gate) = (
            url.clone(),
            graph.clone(),
            latencies.clone(),
            delivered.clone(),
            connected.clone(),
            gate.clone(),
        );
        let mut done = done_tx.subscribe();
        if args.transport == Transport::Sse {
            let addr = sse::authority(&base);
            let path = format!("/api/v2/graphs/{graph}/events?clientVersion=0&token={token}");
            subs.spawn(async move {
                let permit = gate.acquire_owned().await;
                let mut mine = Vec::new();
                sse::fanout_subscriber(
                    &addr,
                    &path,
                    || {
                        connected.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    },
                    |data| count_applied(data, started, &delivered, &mut mine),
                    async move {
                        let _ = done.recv().await;
                    },
                )
                .await;
                if let Ok(mut l) = lat.lock() {
                    l.extend(mine);
                }
            });
            continue;
        }
        subs.spawn(async move {
            let permit = gate.acquire_owned().await;
            // Not split: a subscriber only reads once subscribed, and the
            // split halves would share a lock taken on every frame.
            let Ok(mut socket) = connect(&url).await else {
                return;
            };
            let sub =
                json!({"type": "SUBSCRIBE", "graphId": graph, "clientVersion": 0}).to_string();
            if socket.send(Message::Text(sub.into())).await.is_err() {
                return;
            }
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("\"SYNC\"") => break,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            connected.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            // Kept per subscriber and merged once at the end, and the done
            // signal registered once: 10,000 subscribers taking a shared
            // lock per frame would make the load generator what is measured.
            let mut mine = Vec::new();
            let finished = done.recv();
            tokio::pin!(finished);
            loop {
                tokio::select! {
                    _ = &mut finished => break,
                    m = socket.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if t.contains("\"type\":\"COMMAND_APPLIED\"") {
                                count_applied(&t, started, &delivered, &mut mine);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
            let _ = socket.close(None).await;
        });
    }
    // Wait until every subscriber is in (or stops making progress).
    let mut last = (0, Instant::now());
    loop {
        let n = connected.load(Ordering::Relaxed) as usize;
        if n >= args.subscribers {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = args.gateway_pid.and_then(rss_kib);
    let n = connected.load(Ordering::Relaxed) as usize;

    let socket = connect(&url).await?;
    let (mut tx, _rx) = socket.split();
    for k in 0..args.messages {
        let t0 = started.elapsed().as_micros() as u64;
        let c = if k == 0 {
            json!({"operationId": format!("c0-{k}-{t0}-{graph}"), "type": "CREATE_NODE",
                "payload": {"node": {"id": "n", "position": {"x": 0, "y": 0}}}})
        } else {
            json!({"operationId": format!("c0-{k}-{t0}-{graph}"), "type": "UPDATE_NODE",
                "payload": {"id": "n", "patch": {"position": {"x": k, "y": 0}}}})
        };
        tx.send(Message::Text(
            json!({"type": "COMMAND", "graphId": graph, "command": c})
                .to_string()
                .into(),
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected = (n * args.messages) as u64;
    let wait_until = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = done_tx.send(());
    // Each subscriber hands in its latencies as it finishes.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while subs.join_next().await.is_some() {}
    })
    .await;
    let list = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if n > 0 => Some((a.saturating_sub(b)) as f64 / n as f64),
        _ => None,
    };
    subs.abort_all();
    Ok(FanoutReport {
        bench: "fanout",
        transport: args.transport,
        subscribers: args.subscribers,
        connected: n,
        messages: args.messages,
        deliveries_expected: expected,
        deliveries: delivered.load(Ordering::Relaxed),
        latency_ms: Percentiles::of(list.into_iter().map(Duration::from_micros).collect()),
        connect_s,
        gateway_kib_per_connection: per_conn,
    })
}

/// Counts one COMMAND_APPLIED a fanout subscriber received, with its
/// latency. A scan, not a parse: 10,000 subscribers parsing every frame
/// would make the load generator what is measured.
fn count_applied(frame: &str, started: Instant, delivered: &AtomicU64, mine: &mut Vec<u64>) {
    let now = started.elapsed().as_micros() as u64;
    if let Some((_, t0)) = operation_id_of(frame).and_then(decode_op) {
        delivered.fetch_add(1, Ordering::Relaxed);
        mine.push(now.saturating_sub(t0));
    }
}

/// Opens one load-generator client socket, without Nagle's delay.
/// tungstenite's default 128 KiB read buffer is zeroed on every read: with
/// 10,000 subscribers that memset was over half of the load generator's CPU
/// (perf), and so part of what the fanout benchmark measured; the clients
/// read with 4 KiB, as the gateway does.
async fn connect(
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    Ok(socket)
}

/// The value of the first `"operationId":"…"` in a frame (ids contain no quotes).
pub(super) fn operation_id_of(frame: &str) -> Option<&str> {
    let start = frame.find("\"operationId\":\"")? + "\"operationId\":\"".len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

/// Resident memory of a process, KiB (Linux /proc).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_id_is_found_without_parsing() {
        let frame = r#"{"change":{},"command":{"operationId":"c3-7-1234"},"operationId":"c3-7-1234","type":"COMMAND_APPLIED"}"#;
        assert_eq!(operation_id_of(frame), Some("c3-7-1234"));
        assert_eq!(operation_id_of(frame).and_then(decode_op), Some((3, 1234)));
        assert_eq!(operation_id_of("{}"), None);
    }

    #[test]
    fn a_sync_that_holds_the_setup_change_ends_the_wait() {
        let behind = json!({"type": "SYNC", "status": "behind",
            "changes": [{"version": 3, "operationId": "c1-init-r"}]});
        let reset = json!({"type": "SYNC", "status": "reset",
            "state": {"nodes": [{"id": "n10"}, {"id": "n1"}]}});
        assert!(sync_holds(&behind, "c1-init-r", "n1"));
        assert!(sync_holds(&reset, "c1-init-r", "n1"));
        assert!(!sync_holds(&behind, "c2-init-r", "n2"));
        assert!(!sync_holds(&reset, "c2-init-r", "n2"));
        assert!(!sync_holds(
            &json!({"type": "SYNC", "status": "in_sync"}),
            "c1-init-r",
            "n1"
        ));
    }

    #[test]
    fn setup_commands_are_not_measured() {
        // Their time field is 0: counting one read late would add the whole
        // connection phase to the latencies.
        assert_eq!(decode_op("c3-init-ab12r0"), None);
        assert_eq!(decode_op("c3-1-250-ab12r0"), Some((3, 250)));
    }
}
