//! HTTP API (docs/protocol.md): commands, batches, operation status, state, changes,
//! health. Every answer that is not a success is `{"error": {...}}`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{AuthError, Identity};
use crate::graph::command::{self, MAX_BATCH_OPS, MAX_COMMAND_BYTES, Rejection};

use super::{AppError, AppState, accept, accept_batch, check_graph, invalid_command, wait_bound};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/graphs/{graph_id}/command", post(post_command))
        .route("/api/v2/graphs/{graph_id}/batch", post(post_batch))
        .route("/api/v2/operations/{operation_id}", get(get_operation))
        .route("/api/v2/graphs/{graph_id}/state", get(get_state))
        .route("/api/v2/graphs/{graph_id}/changes", get(get_changes))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The caller's identity from `Authorization: Bearer TOKEN` (or `?token=`).
pub(crate) fn identity(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Identity, AppError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = bearer
        .or(query_token)
        .ok_or(AppError::Unauthorized(AuthError::Missing))?;
    state.auth.verify(token).map_err(AppError::Unauthorized)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct CommandQuery {
    wait: Option<u64>,
    token: Option<String>,
}

/// The whole body, read only after the caller was authenticated (a client
/// without a token never gets to make the gateway wait for one), within
/// `gateway.body_read_timeout_ms` (the `bound_body` middleware).
async fn read_body(state: &AppState, body: Body, limit: usize) -> Result<Bytes, AppError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if super::limits::is_body_timeout(&err) {
            AppError::BodyTimeout(state.settings.body_read_timeout_ms)
        } else {
            AppError::TooLarge(limit)
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, AppError> {
    serde_json::from_slice(bytes).map_err(|e| {
        AppError::Rejected(Rejection {
            code: "INVALID_JSON",
            field: String::new(),
            message: format!("not valid JSON: {e}"),
        })
    })
}

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
        // A resend of an operation that was decided long ago hears nothing on
        // pub/sub: its stored outcome answers instead.
        let outcome = match w.wait(wait_bound(state, ms)).await {
            Some(o) => Some(o),
            None if !fresh => state
                .store
                .operation(&cmd.operation_id)
                .await?
                .map(|s| json!(s)),
            None => None,
        };
        if let Some(outcome) = outcome {
            let body =
                json!({"operationId": cmd.operation_id, "graphId": graph, "outcome": outcome});
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
    }
    let body = json!({
        "accepted": true,
        "operationId": cmd.operation_id,
        "estimatedProcessingTime": estimated_ms(state).await,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A rough guess in ms from the backlog: a few ms, plus about 1 ms per 200
/// jobs waiting. The backlog is read at most once a second (reading every
/// partition's stats per request would cost more than the request).
async fn estimated_ms(state: &AppState) -> u64 {
    {
        let cached = state.estimate.lock().expect("estimate lock");
        if let Some((at, ms)) = *cached
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return ms;
        }
    }
    let fresh = match state.commands.stats().await {
        Ok(s) => 5 + s.total(|p| p.lag) / 200,
        Err(_) => 5,
    };
    *state.estimate.lock().expect("estimate lock") = Some((std::time::Instant::now(), fresh));
    fresh
}

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
        let op_id = v["operationId"]
            .as_str()
            .or_else(|| ops[0]["operationId"].as_str())
            .unwrap_or_default();
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

async fn get_state(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let s = state.store.state_json(&graph).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], s.json).into_response())
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
    token: Option<String>,
}

async fn get_changes(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<ChangesQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let number = |v: &Option<String>, name: &str, default: u64| -> Result<u64, AppError> {
        match v {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                AppError::Rejected(Rejection {
                    code: "INVALID_VALUE",
                    field: name.into(),
                    message: format!("{name} is a non-negative integer"),
                })
            }),
        }
    };
    let since = number(&q.since, "since", 0)?;
    let limit = number(&q.limit, "limit", state.store.settings().max_changes)?;
    let ch = state.store.changes_since(&graph, since, limit).await?;
    if ch.too_old {
        return Err(AppError::Gone(format!(
            "changes after version {since} are no longer kept; fetch the state (version {})",
            ch.current_version
        )));
    }
    Ok(Json(ch).into_response())
}

/// Prometheus text: this gateway's figures and the `commands` queue's state.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(std::slice::from_ref(&state.commands)).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    readiness(&state.redis).await
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
