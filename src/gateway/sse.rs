//! Server-Sent Events (docs/protocol.md, Server-Sent Events): a graph's
//! stream `GET /api/v2/graphs/{g}/events` and a user's stream of their own
//! outcomes `GET /api/v2/events`.
//!
//! An SSE stream is a [`Conn`] like a WebSocket: the broadcaster's feed
//! fills its bounded queue with the same frames, in the same order, and a
//! stream that cannot keep up is ended. Its response body ([`stream`])
//! turns each frame into an event: its `type` as the event name and, for
//! SYNC and COMMAND_APPLIED, `id: <epoch>:<version>`, which EventSource
//! sends back as `Last-Event-ID` to resume. With Datastar ([`datastar`])
//! the frames become signal patches instead.

mod datastar;
mod stream;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};

use crate::auth::Identity;
use crate::graph::Rejection;
use crate::graph::command::MAX_COMMAND_BYTES;

use super::broadcast::{ClientPosition, Conn};
use super::http::{FromParams, Params, Path, Query, identity, read_body};
use super::{AppError, AppState, accept, check_graph, invalid_command};

use stream::{EventStream, Events, Shape, event_stream_response};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/graphs/{graph_id}/events", get(graph_events))
        .route("/api/v2/events", get(user_events))
        .route(
            "/api/v2/graphs/{graph_id}/datastar/command",
            post(datastar_command),
        )
}

/// `POST /api/v2/graphs/{g}/datastar/command`: a command from a Datastar
/// action, whose body is the page's signals with the command under
/// `command`. Answered, as Datastar actions expect, with an event stream:
/// one signal patch `{"outcome": {"operationId", "accepted", "error":
/// {"code", "message", "field"}}}`, always of that shape (empty strings
/// where nothing applies), so that a client merging signals never meets a
/// value where it held an object.
/// What the command then does arrives on the graph stream.
#[utoipa::path(
    post,
    path = "/api/v2/graphs/{graph_id}/datastar/command",
    tag = "sse",
    params(super::openapi::GraphPath, super::openapi::TokenParam),
    request_body(content = String, content_type = "application/json", description = "The page's Datastar signals, with the command under `command` (docs/protocol.md, Datastar)"),
    responses(
        (status = 200, content_type = "text/event-stream", description = "One `datastar-patch-signals` event: `{\"outcome\": {\"operationId\", \"accepted\", \"error\"}}`"),
        super::openapi::UpgradeRefusals,
    ),
    security(("bearer" = []))
)]
async fn datastar_command(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, true)?;
    let flavor = datastar_flavor(&headers, &q).unwrap_or(datastar::Flavor::Patch);
    // The page's other signals come along: room for them, as for a batch.
    let body = read_body(&state, body, MAX_COMMAND_BYTES * 4).await?;
    let outcome = match datastar::command_of(&body) {
        Err(r) => datastar::outcome("", Some(&invalid_command(r))),
        Ok(cmd) => match accept(&state, &id, &graph, &cmd).await {
            Ok(_) => datastar::outcome(&cmd.operation_id, None),
            Err(e) => datastar::outcome(&cmd.operation_id, Some(&e)),
        },
    };
    let event = flavor.event(&serde_json::json!({ "outcome": outcome }), None);
    Ok(event_stream_response(Body::from(event)))
}

struct SseQuery {
    token: Option<String>,
    client_version: Option<u64>,
    epoch: Option<String>,
    presence: bool,
    /// `?format=datastar` or `datastar-beta`.
    datastar: Option<datastar::Flavor>,
}

impl FromParams for SseQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        let presence = match p.string("presence")? {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(_) => return Err(invalid("presence", "presence is 1 or 0".into())),
        };
        let datastar = match p.string("format")? {
            None | Some("json") => None,
            Some("datastar") => Some(datastar::Flavor::Patch),
            Some("datastar-beta") => Some(datastar::Flavor::Merge),
            Some(_) => {
                return Err(invalid(
                    "format",
                    "format is json, datastar or datastar-beta".into(),
                ));
            }
        };
        Ok(SseQuery {
            token: p.string("token")?.map(str::to_string),
            client_version: p.number("clientVersion")?,
            epoch: p.string("epoch")?.map(str::to_string),
            presence,
            datastar,
        })
    }
}

fn invalid(field: &str, message: String) -> AppError {
    AppError::Rejected(Rejection {
        code: "INVALID_VALUE",
        field: field.to_string(),
        message,
    })
}

/// Where a stream resumes: `Last-Event-ID: <epoch>:<version>` (what
/// EventSource sends on a reconnect) before `?clientVersion=&epoch=`.
fn position(headers: &HeaderMap, q: &SseQuery) -> Result<ClientPosition, AppError> {
    let Some(last) = headers.get("last-event-id") else {
        return Ok(ClientPosition {
            version: q.client_version,
            epoch: q.epoch.clone(),
        });
    };
    let bad = || {
        invalid(
            "Last-Event-ID",
            "Last-Event-ID is EPOCH:VERSION, an id of this stream".into(),
        )
    };
    let text = last.to_str().map_err(|_| bad())?;
    // Empty: the browser's way of saying it has seen no id yet.
    if text.is_empty() {
        return Ok(ClientPosition::default());
    }
    let (epoch, version) = text.rsplit_once(':').ok_or_else(bad)?;
    Ok(ClientPosition {
        version: Some(version.parse().map_err(|_| bad())?),
        epoch: Some(epoch.to_string()),
    })
}

/// Datastar's actions say who they are with `Datastar-Request: true`.
fn datastar_flavor(headers: &HeaderMap, q: &SseQuery) -> Option<datastar::Flavor> {
    q.datastar.or_else(|| {
        headers
            .get("datastar-request")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
            .then_some(datastar::Flavor::Patch)
    })
}

#[utoipa::path(
    get,
    path = "/api/v2/graphs/{graph_id}/events",
    tag = "sse",
    params(
        super::openapi::GraphPath,
        super::openapi::TokenParam,
        ("clientVersion" = Option<u64>, Query, description = "The last version the client has (first connects; a reconnect sends Last-Event-ID)"),
        ("epoch" = Option<String>, Query, description = "The epoch of that version"),
        ("presence" = Option<String>, Query, description = "`1`: PRESENCE and PRESENCE_LEAVE events too"),
        ("format" = Option<String>, Query, description = "`datastar`: Datastar signal patches (as with the `Datastar-Request: true` header)"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", description = "SYNC, then COMMAND_APPLIED events with `id: EPOCH:VERSION` (docs/protocol.md, Server-Sent Events)"),
        super::openapi::UpgradeRefusals,
    ),
    security(("bearer" = []))
)]
async fn graph_events(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let at = position(&headers, &q)?;
    let shape = match datastar_flavor(&headers, &q) {
        Some(flavor) => Shape::Datastar(datastar::Signals::new(flavor, at.version.is_some())),
        None => Shape::Json,
    };
    let events = Events {
        presence: q.presence,
        shape,
        epoch: String::new(),
    };
    open(state, id, false, Some((graph, at)), events).await
}

#[utoipa::path(
    get,
    path = "/api/v2/events",
    tag = "sse",
    params(super::openapi::TokenParam),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The outcomes of this user's own commands on any graph: COMMAND_APPLIED, REVERT, CONFLICT (docs/protocol.md, Server-Sent Events)"),
        super::openapi::UpgradeRefusals,
    ),
    security(("bearer" = []))
)]
async fn user_events(
    State(state): State<AppState>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    let events = Events {
        presence: false,
        shape: Shape::Json,
        epoch: String::new(),
    };
    open(state, id, true, None, events).await
}

/// Registers the stream with the broadcaster (and subscribes it to its
/// graph) and answers with its events. A user already holding
/// `max_sockets_per_user` connections is refused with 503
/// TOO_MANY_CONNECTIONS, as a WebSocket is closed with 4009.
async fn open(
    state: AppState,
    id: Identity,
    own_applied: bool,
    graph: Option<(String, ClientPosition)>,
    events: Events,
) -> Result<Response, AppError> {
    let conn_id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, rx) = Conn::with_own_applied(
        conn_id,
        id.user.clone(),
        state.settings.send_queue,
        &state.shutdown,
        own_applied,
    );
    if !state
        .broadcaster
        .register(conn.clone(), state.settings.max_sockets_per_user)
        .await
    {
        return Err(AppError::TooManyConnections);
    }
    let name = graph.as_ref().map(|(g, _)| g.clone());
    if let Some((g, at)) = graph {
        state.broadcaster.subscribe(conn.clone(), &g, at).await;
    }
    // Its whole life is its body's: until the client goes (the body is
    // dropped), the stream is ended (too slow, token expired) or the server
    // shuts down.
    let expires = id.expires_at_ms();
    Ok(EventStream::new(state, conn, rx, name, events, expires).into_response())
}
