//! The gateway: the HTTP API, the WebSocket protocol, Server-Sent Events
//! and the broadcaster, behind access tokens (docs/protocol.md).
//!
//! [`app`] builds the router from an [`AppState`], so tests can drive it
//! without a socket; [`serve`] runs it until shutdown. Commands from HTTP and
//! WebSocket take the same path ([`accept`]): validate, authorize,
//! rate-limit per user, queue, answer.

pub mod broadcast;
mod command_gate;
mod http;
pub use http::readiness;
mod limits;
mod openapi;
mod sse;
pub mod state_cache;
mod web;
mod ws;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthError, Identity};
use crate::db::Redis;
use crate::graph::command::{Command, Rejection, is_graph_id};
use crate::graph::{Claim, GraphStore, command_job};
use crate::queue::{AddGuard, AddOutcome, GuardedAdd, Queue, RateLimit};

pub use broadcast::{BroadcastSettings, Broadcaster};

/// Settings of the gateway (`[gateway]` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// Frames queued per socket before a client counts as too slow (4008).
    pub send_queue: usize,
    /// A socket that sent nothing for this long gets a HEARTBEAT.
    pub heartbeat_ms: u64,
    /// A socket silent for this long is closed (4002).
    pub idle_timeout_ms: u64,
    /// An HTTP connection that has not sent a whole request head within this
    /// long is closed (slow or silent clients would otherwise hold it forever).
    pub header_read_timeout_ms: u64,
    /// Largest WebSocket frame accepted; larger ones close the socket (1009).
    pub max_frame_bytes: usize,
    /// Upper bound of `?wait=MS`.
    pub wait_max_ms: u64,
    /// Presence updates of one user on one graph closer together than this
    /// are dropped (whichever of the user's sockets on this gateway sent them).
    pub presence_interval_ms: u64,
    /// Presence not refreshed for this long counts as gone.
    pub presence_timeout_ms: u64,
    /// Commands per user across every gateway (RATE_LIMITED beyond).
    pub user_rate_limit: Option<RateLimit>,
    /// `POST /api/v2/dev/token` mints tokens for the demo page. Only
    /// `graphq dev` turns this on; it is never read from configuration.
    #[serde(skip)]
    pub dev_tokens: bool,
    /// A request body not received whole within this long of its head is
    /// cut: 408 BODY_TIMEOUT, connection closed. A client that stops
    /// half-way would otherwise hold a connection forever.
    pub body_read_timeout_ms: u64,
    /// Open connections from one peer address; beyond it a connection may
    /// only ask for a health probe (or is closed at once).
    pub max_connections_per_ip: usize,
    /// Open connections in total (lowered to fit under the file-descriptor
    /// limit); beyond it, as for `max_connections_per_ip`.
    pub max_connections: usize,
    /// SYNCs one socket may ask for (REQUEST_SYNC, or SUBSCRIBE to a graph
    /// it already has) per window; beyond it, ERROR SYNC_RATE_LIMITED. None:
    /// no limit. A SYNC can mean reading a whole graph: without a budget one
    /// socket keeps the gateway reading Redis for everyone else's time.
    pub sync_rate_limit: Option<RateLimit>,
    /// Graphs one socket may be subscribed to at once; beyond it, ERROR
    /// TOO_MANY_SUBSCRIPTIONS (the socket stays open).
    pub max_subscriptions_per_socket: usize,
    /// Open sockets per user across every gateway (counted in Redis); a
    /// socket beyond it is closed with 4009. 0: no limit.
    pub max_sockets_per_user: usize,
    /// Largest PRESENCE frame relayed; larger ones get ERROR PRESENCE_TOO_LARGE.
    pub max_presence_bytes: usize,
    /// Graphs whose latest state body `GET state` keeps in memory (0: no cache).
    pub state_cache_graphs: usize,
    /// Bytes of state bodies kept in total; a larger body is not kept.
    pub state_cache_max_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            send_queue: 1024,
            heartbeat_ms: 15_000,
            idle_timeout_ms: 45_000,
            header_read_timeout_ms: 30_000,
            max_frame_bytes: 128 * 1024,
            wait_max_ms: 30_000,
            presence_interval_ms: 50,
            presence_timeout_ms: 30_000,
            user_rate_limit: Some(RateLimit {
                max: 200,
                duration_ms: 1_000,
            }),
            dev_tokens: false,
            body_read_timeout_ms: 10_000,
            max_connections_per_ip: 256,
            max_connections: 20_000,
            sync_rate_limit: Some(RateLimit {
                max: 10,
                duration_ms: 1_000,
            }),
            max_subscriptions_per_socket: 100,
            max_sockets_per_user: 50,
            max_presence_bytes: 2048,
            state_cache_graphs: 16,
            state_cache_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The last backlog-based processing estimate, and whether a fresh one is
/// being read.
#[derive(Default)]
pub struct Estimate {
    /// The estimate in ms, and when it was read (None: never yet).
    pub ms: Option<(std::time::Instant, u64)>,
    /// A read of the queue's stats is under way: no other one starts.
    pub reading: bool,
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

pub struct Shared {
    pub store: GraphStore,
    pub commands: Queue,
    pub auth: Auth,
    pub broadcaster: Broadcaster,
    pub settings: GatewaySettings,
    pub redis: Redis,
    /// Tells every socket to close with 1001.
    pub shutdown: CancellationToken,
    pub next_conn: AtomicU64,
    /// The `estimatedProcessingTime` answered with accepted commands. A std
    /// Mutex: nothing is awaited while it is held.
    pub estimate: std::sync::Mutex<Estimate>,
    /// Users the shared rate limit refused, and until when. Until then this
    /// gateway refuses them without asking Redis: no permit frees up before
    /// the instant the limiter named (other gateways can only push it later),
    /// so a flooding client costs Redis one script call per refusal window,
    /// not one per command.
    pub refused_until: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Recent `GET state` bodies by (graph, epoch, version).
    pub state_cache: state_cache::StateCache,
}

impl AppState {
    pub fn new(
        store: GraphStore,
        commands: Queue,
        auth: Auth,
        broadcaster: Broadcaster,
        settings: GatewaySettings,
        shutdown: CancellationToken,
    ) -> AppState {
        let redis = store.redis().clone();
        crate::metrics::install();
        let state_cache = state_cache::StateCache::new(
            settings.state_cache_graphs,
            settings.state_cache_max_bytes,
        );
        AppState {
            inner: Arc::new(Shared {
                store,
                commands,
                auth,
                broadcaster,
                settings,
                redis,
                shutdown,
                next_conn: AtomicU64::new(1),
                estimate: std::sync::Mutex::default(),
                refused_until: std::sync::Mutex::default(),
                state_cache,
            }),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// The router: HTTP API, WebSocket endpoints, health, and the demo's token
/// endpoint only under `graphq dev` (elsewhere the path is not routed at
/// all, so its body is never read). Every request body is bounded in time.
pub fn app(state: AppState) -> Router {
    let mut router = http::routes()
        .merge(ws::routes())
        .merge(sse::routes())
        .merge(web::routes());
    if state.settings.dev_tokens {
        router = router.merge(web::dev_routes());
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::bound_body,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` fires, then waits for open
/// HTTP exchanges to finish (upgraded WebSockets close on their own) and,
/// for a bounded time, for the broadcaster's tasks.
///
/// Connections are served with hyper directly rather than `axum::serve`,
/// which sets no timer and so no header-read timeout: a client trickling its
/// request head byte by byte would hold a connection and a task forever.
/// Connections are counted per peer address and in total (`limits`): beyond
/// a cap, a connection is served one health probe at most, so `/healthz`,
/// `/readyz` and `/metrics` stay reachable while the caps are reached.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let shutdown = state.shutdown.clone();
    let header_timeout = Duration::from_millis(state.settings.header_read_timeout_ms);
    let broadcaster = state.broadcaster.clone();
    let caps = limits::ConnectionLimits::new(&state.settings);
    let router = app(state);
    let probe_router = router
        .clone()
        .layer(axum::middleware::from_fn(limits::probes_only));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small frames must leave at once: with Nagle's algorithm a frame sent
        // right after another (ACCEPTED, then COMMAND_APPLIED) waits for the
        // client's delayed ACK, about 40 ms.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
        let (slot, router, probe) = match caps.admit(peer.ip()) {
            limits::Admission::Full(slot) => (slot, router.clone(), false),
            limits::Admission::Probe(slot) => (slot, probe_router.clone(), true),
            // Closed at once: accepting and dropping costs the descriptor
            // for microseconds, where leaving it in the backlog would not
            // tell the client anything.
            limits::Admission::Refused => continue,
        };
        let service = hyper_util::service::TowerToHyperService::new(router);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new());
            if probe {
                builder
                    .header_read_timeout(header_timeout.min(limits::PROBE_HEADER_TIMEOUT))
                    .keep_alive(false);
            } else {
                builder.header_read_timeout(header_timeout);
            }
            let io = TokioIo::new(limits::Counted::new(tcp, slot));
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "connection ended");
                    }
                    return;
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    connections.close();
    connections.wait().await;
    broadcaster.drain(BROADCASTER_DRAIN).await;
    Ok(())
}

/// How long a stopping gateway waits for its feeds to see their sockets
/// leave (and announce their users gone).
const BROADCASTER_DRAIN: Duration = Duration::from_secs(5);

/// An error answered to an HTTP client: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub enum AppError {
    Rejected(Rejection),
    Unauthorized(AuthError),
    Forbidden(String),
    NotFound(String),
    Gone(String),
    // The operation id (held here) is taken by a command on another graph.
    OperationIdInUse(String),
    TooLarge(usize),
    RateLimited {
        retry_after_ms: u64,
    },
    Unavailable(String),
    /// The request body did not arrive within this many ms.
    BodyTimeout(u64),
    /// A connection beyond a connection cap asked for more than a probe.
    TooManyConnections,
    /// Why one command of a batch refused the whole batch; `field` is under
    /// `operations.{index}`.
    BatchItem {
        index: usize,
        field: &'static str,
        error: Box<AppError>,
    },
}

impl AppError {
    pub fn code(&self) -> &str {
        match self {
            AppError::Rejected(r) => r.code,
            AppError::Unauthorized(_) => "UNAUTHORIZED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Gone(_) => "TOO_OLD",
            AppError::OperationIdInUse(_) => "OPERATION_ID_IN_USE",
            AppError::TooLarge(_) => "TOO_LARGE",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::BodyTimeout(_) => "BODY_TIMEOUT",
            AppError::TooManyConnections => "TOO_MANY_CONNECTIONS",
            AppError::BatchItem { error, .. } => error.code(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            AppError::Rejected(r) => r.message.clone(),
            AppError::Unauthorized(e) => e.to_string(),
            AppError::Forbidden(m) | AppError::NotFound(m) | AppError::Gone(m) => m.clone(),
            AppError::OperationIdInUse(operation_id) => format!(
                "operationId `{operation_id}` belongs to a command on another graph; \
                 every command needs an id of its own"
            ),
            AppError::TooLarge(limit) => format!("request body is larger than {limit} bytes"),
            AppError::RateLimited { retry_after_ms } => {
                format!("too many commands; retry in {retry_after_ms} ms")
            }
            // Details of server-side failures are logged, not shown.
            AppError::Unavailable(_) => "the service is unavailable; retry later".into(),
            AppError::BodyTimeout(ms) => {
                format!("the request body did not arrive within {ms} ms")
            }
            AppError::TooManyConnections => {
                "too many open connections; only /healthz, /readyz and /metrics are served \
                 on this one"
                    .into()
            }
            AppError::BatchItem { index, error, .. } => {
                format!(
                    "operations.{index}: {}; nothing of the batch was queued",
                    error.message()
                )
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AppError::Rejected(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::OperationIdInUse(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BatchItem { error, .. } => error.status(),
        }
    }

    /// The `error` object shared by HTTP bodies and WebSocket ERROR frames.
    pub fn body(&self) -> serde_json::Value {
        let mut e = json!({"code": self.code(), "message": self.message()});
        if let AppError::Rejected(r) = self {
            e["field"] = json!(r.field);
        }
        if let AppError::BatchItem { index, field, .. } = self {
            e["field"] = json!(format!("operations.{index}.{field}"));
        }
        if let AppError::RateLimited { retry_after_ms } = self {
            e["retryAfterMs"] = json!(retry_after_ms);
        }
        e
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Unavailable(detail) = &self {
            tracing::error!(detail, "request failed");
        }
        let mut resp = (self.status(), axum::Json(json!({"error": self.body()}))).into_response();
        if let AppError::RateLimited { retry_after_ms } = self {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(v) = secs.to_string().parse() {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<crate::graph::StoreError> for AppError {
    fn from(e: crate::graph::StoreError) -> Self {
        AppError::Unavailable(e.to_string())
    }
}

impl From<crate::queue::QueueError> for AppError {
    fn from(e: crate::queue::QueueError) -> Self {
        AppError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        AppError::Unavailable(e.to_string())
    }
}

pub(crate) fn check_graph(id: &Identity, graph: &str, write: bool) -> Result<(), AppError> {
    if !is_graph_id(graph) {
        return Err(AppError::Rejected(Rejection {
            code: "INVALID_ID",
            field: "graphId".into(),
            message: "graph ids are 1-128 characters of A-Z a-z 0-9 _ . -".into(),
        }));
    }
    if !id.can_read(graph) {
        return Err(AppError::Forbidden(format!(
            "the token does not grant graph {graph}"
        )));
    }
    if write && !id.can_write(graph) {
        return Err(AppError::Forbidden("viewers cannot send commands".into()));
    }
    Ok(())
}

/// Queues a validated command for `id` on `graph`: authorization, the
/// per-user rate limit, the queue (idempotent by operation id), then the
/// operation index. Returns whether it was new (false: a resend).
pub async fn accept(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmd: &Command,
) -> Result<bool, AppError> {
    let accepted = queue_command(state, id, graph, cmd).await;
    match &accepted {
        Ok(fresh) => {
            metrics::counter!("graphq_commands_accepted_total").increment(1);
            tracing::debug!(
                graph_id = graph,
                operation_id = %cmd.operation_id,
                user_id = %id.user,
                duplicate = !fresh,
                "command accepted"
            );
        }
        Err(err) => {
            count_refusal(err.code());
            tracing::debug!(
                graph_id = graph,
                operation_id = %cmd.operation_id,
                user_id = %id.user,
                code = err.code(),
                "command refused"
            );
        }
    }
    accepted
}

/// Queues the commands of a non-atomic batch whole or not at all. Every
/// check that can refuse runs before anything is queued: authorization, the
/// user's rate permits for the whole batch (one limiter call, all or none),
/// then an operation-id claim per command. On a refusal, the claims this
/// batch made are released and the error names the command. The queue adds
/// are one pipeline; only Redis failing during it leaves part queued, and a
/// resend of the same batch is safe (operation ids dedupe). Returns, per
/// command, whether it was new.
pub async fn accept_batch(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmds: &[Command],
) -> Result<Vec<bool>, AppError> {
    let accepted = queue_batch(state, id, graph, cmds).await;
    match &accepted {
        Ok(_) => {
            metrics::counter!("graphq_commands_accepted_total").increment(cmds.len() as u64);
            tracing::debug!(
                graph_id = graph,
                user_id = %id.user,
                commands = cmds.len(),
                "batch accepted"
            );
        }
        Err(err) => {
            metrics::counter!("graphq_commands_rejected_total", "code" => err.code().to_string())
                .increment(cmds.len() as u64);
            tracing::debug!(
                graph_id = graph,
                user_id = %id.user,
                commands = cmds.len(),
                code = err.code(),
                "batch refused"
            );
        }
    }
    accepted
}

async fn queue_batch(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmds: &[Command],
) -> Result<Vec<bool>, AppError> {
    check_graph(id, graph, true)?;
    if let Some(limit) = &state.settings.user_rate_limit {
        if cmds.len() as u64 > limit.max {
            // No wait would ever grant this many at once: RATE_LIMITED would
            // have the client retry forever.
            return Err(AppError::Rejected(Rejection {
                code: "TOO_MANY_OPERATIONS",
                field: "operations".into(),
                message: format!(
                    "a non-atomic batch needs one rate permit per command, and a user gets at \
                     most {} at once; send smaller batches or an atomic one",
                    limit.max
                ),
            }));
        }
        take_user_permits(state, &id.user, limit, cmds.len()).await?;
    }
    let ids: Vec<&str> = cmds.iter().map(|c| c.operation_id.as_str()).collect();
    let claims = state.store.claim_operations(graph, &ids).await?;
    if let Some(index) = claims.iter().position(|c| *c == Claim::Taken) {
        let fresh: Vec<&str> = ids
            .iter()
            .zip(&claims)
            .filter(|(_, c)| **c == Claim::Fresh)
            .map(|(op, _)| *op)
            .collect();
        if let Err(err) = state.store.release_operations(&fresh).await {
            // The claims expire with `graph.op_ttl_s`; until then those ids
            // stay tied to this graph, which a resend of the batch accepts.
            tracing::warn!(%err, graph_id = graph, "claims of a refused batch not released");
        }
        return Err(AppError::BatchItem {
            index,
            field: "operationId",
            error: Box::new(AppError::OperationIdInUse(ids[index].to_string())),
        });
    }
    let jobs = cmds
        .iter()
        .map(|c| command_job(graph, &id.user, c))
        .collect();
    let outcomes = state.commands.add_bulk(jobs).await?;
    Ok(outcomes
        .iter()
        .map(|o| !matches!(o, AddOutcome::Duplicate { .. }))
        .collect())
}

/// A command that did not validate: counted by its code, then answered.
pub(crate) fn invalid_command(rejection: Rejection) -> AppError {
    count_refusal(rejection.code);
    AppError::Rejected(rejection)
}

fn count_refusal(code: &str) {
    metrics::counter!("graphq_commands_rejected_total", "code" => code.to_string()).increment(1);
}

async fn queue_command(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmd: &Command,
) -> Result<bool, AppError> {
    check_graph(id, graph, true)?;
    if !state.store.redis().is_cluster() {
        return admit_command(state, id, graph, cmd).await;
    }
    // On a cluster the limiter, the claim and the stream live in different
    // slots: three calls.
    if let Some(limit) = &state.settings.user_rate_limit {
        take_user_permits(state, &id.user, limit, 1).await?;
    }
    // Operation ids are global, so the id is claimed for this graph before
    // anything is queued (see `GraphStore::claim_operation`).
    if !state
        .store
        .claim_operation(graph, &cmd.operation_id)
        .await?
    {
        return Err(AppError::OperationIdInUse(cmd.operation_id.clone()));
    }
    let outcome = state
        .commands
        .add(command_job(graph, &id.user, cmd))
        .await?;
    Ok(!matches!(outcome, AddOutcome::Duplicate { .. }))
}

/// A command's admission in one call (single Redis): the operation-id
/// claim, the user's rate permit and the add, checked and made atomically
/// (`lua/enqueue.lua` with its guards); a refusal changes nothing.
async fn admit_command(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmd: &Command,
) -> Result<bool, AppError> {
    let limiter = state.store.keys().key_limiter("gateway", &id.user);
    let limit = match &state.settings.user_rate_limit {
        Some(limit) => {
            refused_locally(state, &id.user)?;
            Some((limiter.as_str(), limit))
        }
        None => None,
    };
    let record = state.store.claim_record(&cmd.operation_id);
    let guard = AddGuard {
        claim: Some(state.store.claim_guard(&record, graph)),
        limit,
    };
    let job = command_job(graph, &id.user, cmd);
    match state.commands.add_guarded(job, &guard).await? {
        GuardedAdd::Added(outcome) => {
            state
                .refused_until
                .lock()
                .expect("refused_until lock")
                .remove(&id.user);
            Ok(!matches!(outcome, AddOutcome::Duplicate { .. }))
        }
        GuardedAdd::Taken { .. } => Err(AppError::OperationIdInUse(cmd.operation_id.clone())),
        GuardedAdd::Limited { wait } => Err(remember_refusal(state, &id.user, 1, wait)),
    }
}

/// RATE_LIMITED at once while a refusal of this user is remembered.
fn refused_locally(state: &AppState, user: &str) -> Result<(), AppError> {
    let now = std::time::Instant::now();
    let refused = state
        .refused_until
        .lock()
        .expect("refused_until lock")
        .get(user)
        .copied();
    match refused.filter(|u| *u > now) {
        Some(until) => Err(AppError::RateLimited {
            retry_after_ms: (until - now).as_millis().max(1) as u64,
        }),
        None => Ok(()),
    }
}

/// Remembers a refusal of `n` permits (only of one: a refusal of many says
/// nothing about one) and answers RATE_LIMITED.
fn remember_refusal(state: &AppState, user: &str, n: usize, wait: Duration) -> AppError {
    if n == 1 {
        let now = std::time::Instant::now();
        let mut refused = state.refused_until.lock().expect("refused_until lock");
        if refused.len() >= REFUSED_USERS_MAX {
            refused.retain(|_, until| *until > now);
        }
        if refused.len() < REFUSED_USERS_MAX {
            refused.insert(user.to_string(), now + wait);
        }
    }
    AppError::RateLimited {
        retry_after_ms: wait.as_millis() as u64,
    }
}

/// `n` permits of the user's shared rate limit, all or none, or
/// RATE_LIMITED with how long to wait. A refusal of one permit is remembered
/// locally until the wait is over (a refusal of many says nothing about one).
async fn take_user_permits(
    state: &AppState,
    user: &str,
    limit: &RateLimit,
    n: usize,
) -> Result<(), AppError> {
    refused_locally(state, user)?;
    let key = state.store.keys().key_limiter("gateway", user);
    let (granted, wait) = crate::queue::take_all_permits(&state.commands, &key, limit, n).await?;
    if granted {
        state
            .refused_until
            .lock()
            .expect("refused_until lock")
            .remove(user);
        return Ok(());
    }
    Err(remember_refusal(state, user, n, wait))
}

/// Most users remembered as refused at once (a bound on memory; beyond it,
/// refusals are asked of Redis each time).
const REFUSED_USERS_MAX: usize = 10_000;

pub(crate) fn wait_bound(state: &AppState, ms: u64) -> Duration {
    Duration::from_millis(ms.min(state.settings.wait_max_ms))
}
