//! HTTP API (docs/protocol.md): commands, batches, operation status, state, changes,
//! health. Every answer that is not a success is `{"error": {...}}`, including
//! the ones the framework would word itself: a bad query string
//! ([`Query`]), a path that is not UTF-8 ([`Path`]) and a plain GET of a
//! WebSocket path ([`not_websocket`]).

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{AuthError, Identity};
use crate::graph::command::{self, MAX_BATCH_OPS, MAX_COMMAND_BYTES, Rejection};
use crate::graph::{ConflictFilter, LogId};

use super::broadcast::Waiter;
use super::state_cache::{etag, not_modified};
use super::{AppError, AppState, accept, accept_batch, check_graph, invalid_command, wait_bound};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/graphs/{graph_id}/command", post(post_command))
        .route("/api/v2/graphs/{graph_id}/batch", post(post_batch))
        .route("/api/v2/operations/{operation_id}", get(get_operation))
        .route("/api/v2/graphs/{graph_id}/state", get(get_state))
        .route("/api/v2/graphs/{graph_id}/changes", get(get_changes))
        .route("/api/v2/graphs/{graph_id}/conflicts", get(get_conflicts))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v2/openapi.json", get(openapi_json))
}

/// The caller's identity from `Authorization: Bearer TOKEN` (or `?token=`).
pub(crate) fn identity(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Identity, AppError> {
    let token = bearer_token(headers)
        .or(query_token)
        .ok_or(AppError::Unauthorized(AuthError::Missing))?;
    state.auth.verify(token).map_err(AppError::Unauthorized)
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is
/// case-insensitive (RFC 7235, 2.1): `bearer` and `BEARER` are Bearer too.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// A query string read into `T` ([`FromParams`]). It stands in for axum's
/// `Query`, whose refusals are plain text that names no parameter: here a
/// bad value is a 400 `INVALID_VALUE` in the documented JSON shape with the
/// parameter as `field`, and a parameter given twice is refused rather
/// than one of its values silently taken.
pub(crate) struct Query<T>(pub T);

/// A query's parameters, as given.
pub(crate) struct Params(Vec<(String, String)>);

/// A type read from a query string.
pub(crate) trait FromParams: Sized {
    fn from_params(params: &Params) -> Result<Self, AppError>;
}

impl<S: Send + Sync, T: FromParams> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        // Pairs of strings: decoding them cannot fail on a value.
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| invalid_param("", format!("the query string is not readable: {e}")))?;
        T::from_params(&Params(pairs.0)).map(Query)
    }
}

impl Params {
    /// The value of `name`, if given (once).
    pub(crate) fn string(&self, name: &str) -> Result<Option<&str>, AppError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next();
        if values.next().is_some() {
            return Err(invalid_param(
                name,
                format!("{name} is given more than once"),
            ));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// The value of `name` as a non-negative integer, if given.
    pub(crate) fn number(&self, name: &str) -> Result<Option<u64>, AppError> {
        self.string(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid_param(name, format!("{name} is a non-negative integer")))
            })
            .transpose()
    }
}

fn invalid_param(name: &str, message: String) -> AppError {
    AppError::Rejected(Rejection {
        code: "INVALID_VALUE",
        field: name.into(),
        message,
    })
}

/// The refusal of a request to a WebSocket path that is not a WebSocket
/// upgrade (a plain GET, a missing header): 400 `NOT_WEBSOCKET`, in the
/// documented shape instead of axum's plain text.
pub(crate) fn not_websocket(rejection: WebSocketUpgradeRejection) -> AppError {
    AppError::Rejected(Rejection {
        code: "NOT_WEBSOCKET",
        field: String::new(),
        message: format!(
            "this path opens a WebSocket; send a WebSocket upgrade ({})",
            rejection.body_text()
        ),
    })
}

/// Path parameters: axum's `Path`, whose refusal of a segment that is not
/// UTF-8 after percent-decoding is plain text, answered here as 400
/// `INVALID_ID` in the documented shape.
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => {
                tracing::debug!(reason = %e.body_text(), "path refused");
                Err(AppError::Rejected(Rejection {
                    code: "INVALID_ID",
                    field: String::new(),
                    message: "an id in the path is not UTF-8 once percent-decoded".into(),
                }))
            }
        }
    }
}

struct TokenQuery {
    token: Option<String>,
}

impl FromParams for TokenQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        Ok(TokenQuery {
            token: p.string("token")?.map(str::to_string),
        })
    }
}

struct CommandQuery {
    wait: Option<u64>,
    token: Option<String>,
}

impl FromParams for CommandQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        Ok(CommandQuery {
            wait: p.number("wait")?,
            token: p.string("token")?.map(str::to_string),
        })
    }
}

/// The whole body, read only after the caller was authenticated (a client
/// without a token never gets to make the gateway wait for one), within
/// `gateway.body_read_timeout_ms` (the `bound_body` middleware).
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
    limit: usize,
) -> Result<Bytes, AppError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if super::limits::is_body_timeout(&err) {
            AppError::BodyTimeout(state.settings.body_read_timeout_ms)
        } else {
            AppError::TooLarge(limit)
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, AppError> {
    let value = serde_json::from_slice(bytes).map_err(|e| {
        AppError::Rejected(Rejection {
            code: "INVALID_JSON",
            field: String::new(),
            message: format!("not valid JSON: {e}"),
        })
    })?;
    command::check_unique_keys(bytes).map_err(AppError::Rejected)?;
    Ok(value)
}

/// Queue one command.
#[utoipa::path(
    post,
    path = "/api/v2/graphs/{graph_id}/command",
    tag = "commands",
    params(
        super::openapi::GraphPath,
        ("wait" = Option<u64>, Query, description = "Wait up to this many ms (capped by gateway.wait_max_ms) for the outcome"),
        super::openapi::TokenParam,
    ),
    request_body(content = super::openapi::CommandBody, description = "One command, at most 64 KiB"),
    responses(
        (status = 202, description = "Queued (also the answer when `wait` ran out)", body = super::openapi::Accepted),
        (status = 200, description = "With `wait`: the outcome arrived in time", body = super::openapi::Waited),
        super::openapi::CommandRefusals,
    ),
    security(("bearer" = []))
)]
async fn post_command(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<CommandQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, true)?;
    let bytes = read_body(&state, body, MAX_COMMAND_BYTES).await?;
    let cmd = command::parse(&bytes).map_err(invalid_command)?;
    submit(&state, &id, &graph, &cmd, q.wait).await
}

/// Queues one command and answers 202, or 200 with its outcome when `wait`
/// is given and the outcome arrives in time.
async fn submit(
    state: &AppState,
    id: &Identity,
    graph: &str,
    cmd: &command::Command,
    wait: Option<u64>,
) -> Result<Response, AppError> {
    let waiter = match wait {
        Some(_) => Some(
            state
                .broadcaster
                .waiter(graph, &id.user, &cmd.operation_id)
                .await,
        ),
        None => None,
    };
    let fresh = accept(state, id, graph, cmd).await?;
    if let (Some(w), Some(ms)) = (waiter, wait) {
        let outcome =
            await_outcome(state, w, &cmd.operation_id, fresh, wait_bound(state, ms)).await?;
        if let Some(outcome) = outcome {
            let body =
                json!({"operationId": cmd.operation_id, "graphId": graph, "outcome": outcome});
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
    }
    let body = json!({
        "accepted": true,
        "operationId": cmd.operation_id,
        "estimatedProcessingTime": estimated_ms(state),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The outcome a `?wait` caller is answered with, or None when `bound`
/// passed first. A resend (not `fresh`) of an operation decided long ago
/// hears nothing on pub/sub: its stored outcome answers, at once when it is
/// already there, in the same words as a first answer (`applied` or
/// `reverted`, see [`OperationStatus::outcome`]).
///
/// [`OperationStatus::outcome`]: crate::graph::OperationStatus::outcome
async fn await_outcome(
    state: &AppState,
    waiter: Waiter,
    operation_id: &str,
    fresh: bool,
    bound: std::time::Duration,
) -> Result<Option<Value>, AppError> {
    let stored = || async {
        let status = state.store.operation(operation_id).await?;
        Ok::<_, AppError>(status.and_then(|s| s.outcome()))
    };
    // A failed look-up here only means waiting, as for a fresh command.
    if !fresh && let Ok(Some(outcome)) = stored().await {
        // Waiting no time still releases what the waiter holds.
        waiter.wait(std::time::Duration::ZERO).await;
        return Ok(Some(outcome));
    }
    match waiter.wait(bound).await {
        Some(outcome) => Ok(Some(outcome)),
        None if !fresh => stored().await,
        None => Ok(None),
    }
}

/// A rough guess in ms from the backlog: a few ms, plus about 1 ms per 200
/// jobs waiting. The backlog is read at most once a second, by one task in
/// the background (a read is a pipeline over every partition): no answer
/// waits for it, and the requests that find the estimate stale while it is
/// read do not each start one more (at 2,000 commands/s every second's
/// refresh was a burst of whole-queue reads that Redis served before the
/// commands).
fn estimated_ms(state: &AppState) -> u64 {
    const DEFAULT_MS: u64 = 5;
    let mut estimate = state.estimate.lock().expect("estimate lock");
    let known = estimate.ms.map(|(_, ms)| ms).unwrap_or(DEFAULT_MS);
    let fresh = estimate
        .ms
        .is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1));
    if fresh || estimate.reading {
        return known;
    }
    estimate.reading = true;
    drop(estimate);
    let state = state.clone();
    tokio::spawn(async move {
        let ms = match state.commands.stats().await {
            Ok(s) => DEFAULT_MS + s.total(|p| p.lag) / 200,
            Err(_) => DEFAULT_MS,
        };
        let mut estimate = state.estimate.lock().expect("estimate lock");
        estimate.ms = Some((std::time::Instant::now(), ms));
        estimate.reading = false;
    });
    known
}

/// Queue a batch: atomic (one BATCH_UPDATE) or each command on its own.
#[utoipa::path(
    post,
    path = "/api/v2/graphs/{graph_id}/batch",
    tag = "commands",
    params(
        super::openapi::GraphPath,
        ("wait" = Option<u64>, Query, description = "Atomic batches: wait up to this many ms for the outcome"),
        super::openapi::TokenParam,
    ),
    request_body(content = super::openapi::BatchBody, description = "1 to 500 commands, at most 256 KiB"),
    responses(
        (status = 202, description = "Queued: an atomic batch answers as one command (Accepted); a non-atomic one with every operation id (BatchAccepted)", body = super::openapi::BatchAccepted),
        (status = 200, description = "Atomic batch with `wait`: the outcome arrived in time", body = super::openapi::Waited),
        super::openapi::CommandRefusals,
    ),
    security(("bearer" = []))
)]
async fn post_batch(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<CommandQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, true)?;
    let bytes = read_body(&state, body, MAX_COMMAND_BYTES * 4).await?;
    let v = parse_json(&bytes)?;
    let reject = |code, field: &str, message: &str| {
        AppError::Rejected(Rejection {
            code,
            field: field.into(),
            message: message.into(),
        })
    };
    let ops = v["operations"].as_array().ok_or_else(|| {
        reject(
            "MISSING_FIELD",
            "operations",
            "operations is an array of commands",
        )
    })?;
    if ops.is_empty() || ops.len() > MAX_BATCH_OPS {
        return Err(reject(
            "TOO_MANY_OPERATIONS",
            "operations",
            "a batch holds 1 to 500 commands",
        ));
    }
    let atomic = v["atomic"].as_bool().unwrap_or(true);
    if atomic {
        // All or nothing: one BATCH_UPDATE, one version. Its operation id is
        // the batch's `operationId`, or the first command's.
        let op_id = match v.get("operationId").filter(|v| !v.is_null()) {
            Some(given) => given.as_str().unwrap_or_default(),
            None => ops[0]["operationId"].as_str().ok_or_else(|| {
                reject(
                    "MISSING_FIELD",
                    "operationId",
                    "an atomic batch needs an operationId (or one on its first command)",
                )
            })?,
        };
        let inner: Vec<Value> = ops
            .iter()
            .map(|c| json!({"type": c["type"], "payload": c.get("payload").cloned().unwrap_or(json!({}))}))
            .collect();
        let batch =
            json!({"operationId": op_id, "type": "BATCH_UPDATE", "payload": {"operations": inner}});
        let cmd = command::from_value(&batch).map_err(AppError::Rejected)?;
        return submit(&state, &id, &graph, &cmd, q.wait).await;
    }
    // Not atomic: each command on its own, all validated, then queued whole
    // or not at all (`accept_batch`).
    let cmds: Vec<command::Command> = ops
        .iter()
        .enumerate()
        .map(|(i, c)| {
            command::from_value(c).map_err(|mut r| {
                r.field = format!(
                    "operations.{i}{}{}",
                    if r.field.is_empty() { "" } else { "." },
                    r.field
                );
                invalid_command(r)
            })
        })
        .collect::<Result<_, _>>()?;
    accept_batch(&state, &id, &graph, &cmds).await?;
    let accepted: Vec<Value> = cmds
        .iter()
        .map(|c| json!({"accepted": true, "operationId": c.operation_id}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "operations": accepted})),
    )
        .into_response())
}

/// What became of one operation.
#[utoipa::path(
    get,
    path = "/api/v2/operations/{operation_id}",
    tag = "commands",
    params(
        ("operation_id" = String, Path, description = "The command's operationId"),
        super::openapi::TokenParam,
    ),
    responses(
        (status = 200, description = "pending, processing, completed or failed", body = crate::graph::OperationStatus),
        (status = 400, description = "INVALID_VALUE (query) or INVALID_ID (path)", body = super::openapi::ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = super::openapi::ErrorBody),
        (status = 404, description = "NOT_FOUND: no such operation, or on a graph the token does not reach", body = super::openapi::ErrorBody),
        (status = 503, description = "UNAVAILABLE or TOO_MANY_CONNECTIONS", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_operation(
    State(state): State<AppState>,
    Path(op): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    let status = state
        .store
        .operation(&op)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no operation {op}")))?;
    // An operation is visible to whoever may read its graph.
    if !id.can_read(&status.graph_id) {
        return Err(AppError::NotFound(format!("no operation {op}")));
    }
    Ok(Json(status).into_response())
}

/// A graph's full state.
#[utoipa::path(
    get,
    path = "/api/v2/graphs/{graph_id}/state",
    tag = "graphs",
    params(super::openapi::GraphPath, super::openapi::TokenParam),
    responses(
        (status = 200, description = "The state; a graph never written has epoch \"\" and version 0. Header ETag: \"EPOCH:VERSION\"", body = crate::graph::GraphState),
        (status = 304, description = "Not Modified: If-None-Match names the current ETag (docs/protocol.md, Versioned reads)"),
        (status = 400, description = "INVALID_ID or INVALID_VALUE", body = super::openapi::ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = super::openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN: the token does not reach this graph", body = super::openapi::ErrorBody),
        (status = 503, description = "UNAVAILABLE or TOO_MANY_CONNECTIONS", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_state(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let conditional = headers.contains_key(header::IF_NONE_MATCH);
    // A graph the cache holds nothing of is read at once: one round trip.
    if conditional || state.state_cache.holds(&graph) {
        // One HMGET decides whether the graph must be read at all.
        let (epoch, version) = state.store.version_of(&graph).await?;
        let tag = etag(&epoch, version);
        if conditional && not_modified(&headers, &tag) {
            return Ok(unchanged(tag));
        }
        if let Some(body) = state.state_cache.get(&graph, &epoch, version) {
            return Ok(json_with_tag(tag, body));
        }
    }
    let s = state.store.state_json(&graph).await?;
    let body = Bytes::from(s.json);
    state
        .state_cache
        .put(&graph, &s.epoch, s.version, body.clone());
    Ok(json_with_tag(etag(&s.epoch, s.version), body))
}

/// 200 with a JSON body and its `ETag`.
fn json_with_tag(tag: String, body: Bytes) -> Response {
    with_tag(
        tag,
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    )
}

/// 304: the caller's copy (its `If-None-Match`) is current.
fn unchanged(tag: String) -> Response {
    with_tag(tag, StatusCode::NOT_MODIFIED.into_response())
}

/// `response` with `ETag: tag` (an epoch graphq did not write, and so
/// cannot be a header value, leaves the response without one).
fn with_tag(tag: String, mut response: Response) -> Response {
    if let Ok(value) = header::HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

struct ChangesQuery {
    since: Option<u64>,
    limit: Option<u64>,
    token: Option<String>,
}

impl FromParams for ChangesQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        let since = p.number("since")?;
        let limit = p.number("limit")?;
        // `limit=0` asks for nothing; answering with one change (the store
        // reads at least one) or with none would both surprise.
        if limit == Some(0) {
            return Err(invalid_param("limit", "limit is at least 1".into()));
        }
        Ok(ChangesQuery {
            since,
            limit,
            token: p.string("token")?.map(str::to_string),
        })
    }
}

/// The changes after a version, oldest first.
#[utoipa::path(
    get,
    path = "/api/v2/graphs/{graph_id}/changes",
    tag = "graphs",
    params(
        super::openapi::GraphPath,
        ("since" = Option<u64>, Query, description = "Changes after this version (default 0)"),
        ("limit" = Option<u64>, Query, description = "At most this many (1 or more; capped by graph.max_changes)"),
        super::openapi::TokenParam,
    ),
    responses(
        (status = 200, description = "The changes. Header ETag: \"EPOCH:VERSION\"", body = crate::graph::Changes),
        (status = 304, description = "Not Modified: If-None-Match names the current ETag"),
        (status = 400, description = "INVALID_VALUE (since, limit) or INVALID_ID", body = super::openapi::ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = super::openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN", body = super::openapi::ErrorBody),
        (status = 410, description = "TOO_OLD: changes after `since` are no longer kept; fetch the state", body = super::openapi::ErrorBody),
        (status = 503, description = "UNAVAILABLE or TOO_MANY_CONNECTIONS", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_changes(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<ChangesQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    if headers.contains_key(header::IF_NONE_MATCH) {
        let (epoch, version) = state.store.version_of(&graph).await?;
        let tag = etag(&epoch, version);
        if not_modified(&headers, &tag) {
            return Ok(unchanged(tag));
        }
    }
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(state.store.settings().max_changes);
    let ch = state.store.changes_since(&graph, since, limit).await?;
    if ch.too_old {
        return Err(AppError::Gone(format!(
            "changes after version {since} are no longer kept; fetch the state (version {})",
            ch.current_version
        )));
    }
    let tag = etag(&ch.epoch, ch.current_version);
    Ok(with_tag(tag, Json(ch).into_response()))
}

/// `GET …/conflicts?since=&status=&user=&token=`, checked.
struct ConflictsQuery {
    filter: ConflictFilter,
    token: Option<String>,
}

impl FromParams for ConflictsQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        let since = p
            .string("since")?
            .map(|s| {
                LogId::parse(s)
                    .ok_or_else(|| invalid_param("since", "since is a conflict id (MS-SEQ)".into()))
            })
            .transpose()?;
        let status = p.string("status")?;
        if let Some(s) = status
            && !["open", "resolved", "decided"].contains(&s)
        {
            return Err(invalid_param(
                "status",
                "status is open, resolved or decided".into(),
            ));
        }
        Ok(ConflictsQuery {
            filter: ConflictFilter {
                since,
                status: status.map(str::to_string),
                user: p.string("user")?.map(str::to_string),
            },
            token: p.string("token")?.map(str::to_string),
        })
    }
}

/// The graph's conflict log (docs/protocol.md, Conflicts).
#[utoipa::path(
    get,
    path = "/api/v2/graphs/{graph_id}/conflicts",
    tag = "graphs",
    params(
        super::openapi::GraphPath,
        ("since" = Option<String>, Query, description = "Only conflicts logged or resolved after this conflict id (MS-SEQ)"),
        ("status" = Option<String>, Query, description = "open, resolved or decided"),
        ("user" = Option<String>, Query, description = "Only conflicts of commands this user sent"),
        super::openapi::TokenParam,
    ),
    responses(
        (status = 200, description = "The conflicts, oldest first", body = crate::graph::ConflictList),
        (status = 400, description = "INVALID_VALUE (since, status) or INVALID_ID", body = super::openapi::ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = super::openapi::ErrorBody),
        (status = 403, description = "FORBIDDEN", body = super::openapi::ErrorBody),
        (status = 503, description = "UNAVAILABLE or TOO_MANY_CONNECTIONS", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_conflicts(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<ConflictsQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let list = state.store.conflicts(&graph, &q.filter).await?;
    Ok(Json(list).into_response())
}

/// Prometheus text: this gateway's figures and the `commands` queue's state.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4 (docs/operations.md, Metrics)", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(std::slice::from_ref(&state.commands)).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// Ready when Redis answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Redis answers", body = super::openapi::Health),
        (status = 503, description = "UNAVAILABLE: Redis does not answer", body = super::openapi::ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    readiness(&state.redis).await
}

/// The process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Always, while the process runs", body = super::openapi::Health))
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v2/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document of this gateway's routes", content_type = "application/json"))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(super::openapi::document(state.settings.dev_tokens)).into_response()
}

/// `/readyz` of the gateway and of the worker's metrics listener: ready when
/// Redis answers PING, 503 UNAVAILABLE otherwise.
pub async fn readiness(redis: &crate::db::Redis) -> Response {
    let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut redis.conn()).await;
    match pong {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => AppError::Unavailable(format!("redis: {e}")).into_response(),
    }
}
