//! The OpenAPI 3 document of the HTTP API, served at `/api/v2/openapi.json`.
//! Paths come from the `#[utoipa::path]` attributes of the handlers in
//! `http.rs`, `ws.rs` and `web.rs`; response shapes from the types the
//! handlers answer with (`GraphState`, `Changes`, `ConflictList`, `OperationStatus`); the
//! request bodies the handlers parse by hand (commands are checked field by
//! field, docs/protocol.md) are described by the schema types below. The
//! demo's static files are added from `web.rs`'s table, and the demo token
//! endpoint only when the router serves it. `tests/openapi.rs` checks the
//! document against the routes the gateway serves.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::graph::{ChangeEntry, Changes, ConflictList, GraphState, OperationStatus};

/// Every code an HTTP error body may carry.
pub const ERROR_CODES: &[&str] = &[
    // a request that is not a valid command, batch or query
    "INVALID_JSON",
    "DUPLICATE_KEY",
    "INVALID_TYPE",
    "INVALID_VALUE",
    "INVALID_ID",
    "INVALID_FIELD",
    "MISSING_FIELD",
    "UNKNOWN_FIELD",
    "UNKNOWN_COMMAND",
    "EMPTY_PATCH",
    "NOT_FINITE",
    "TOO_DEEP",
    "TOO_MANY_OPERATIONS",
    "NOT_WEBSOCKET",
    // who may do what
    "UNAUTHORIZED",
    "FORBIDDEN",
    // the rest
    "NOT_FOUND",
    "TOO_OLD",
    "OPERATION_ID_IN_USE",
    "TOO_LARGE",
    "BODY_TIMEOUT",
    "RATE_LIMITED",
    "UNAVAILABLE",
    "TOO_MANY_CONNECTIONS",
];

/// `{"error": {...}}`: every answer that is not a success.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable code; see the enum.
    #[schema(schema_with = error_code)]
    pub code: String,
    /// For people, not for programs.
    pub message: String,
    /// The offending field as a dotted path (`payload.node.position.x`);
    /// empty when the whole request is meant.
    pub field: Option<String>,
    /// With RATE_LIMITED: when to retry (also the Retry-After header, in s).
    pub retry_after_ms: Option<u64>,
}

fn error_code() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ERROR_CODES.iter().copied()))
        .build()
}

/// The graph of a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it only describes parameters
pub struct GraphPath {
    /// The graph: [A-Za-z0-9_.-], 1 to 128 characters.
    graph_id: String,
}

/// The token as a query parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // never built: it only describes parameters
pub struct TokenParam {
    /// The token, when no Authorization header can be sent (WebSocket
    /// upgrades from browsers); given twice, 400 INVALID_VALUE.
    token: Option<String>,
}

/// The refusals of the command and batch routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum CommandRefusals {
    /// Not a valid command or batch (`field` names the place; in a batch,
    /// under `operations.N`): INVALID_JSON, DUPLICATE_KEY, INVALID_TYPE,
    /// INVALID_VALUE, INVALID_ID, MISSING_FIELD, UNKNOWN_FIELD,
    /// UNKNOWN_COMMAND, EMPTY_PATCH, NOT_FINITE, TOO_DEEP, TOO_MANY_OPERATIONS.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// UNAUTHORIZED: no token, or one that is not valid.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// FORBIDDEN: the token does not grant editing this graph.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// BODY_TIMEOUT: the body did not arrive within gateway.body_read_timeout_ms.
    #[response(status = 408)]
    BodyTimeout(ErrorBody),
    /// OPERATION_ID_IN_USE: an operation id belongs to a command on another
    /// graph; nothing was queued.
    #[response(status = 409)]
    InUse(ErrorBody),
    /// TOO_LARGE: a command over 64 KiB, a batch over 256 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// RATE_LIMITED: the user's command rate (Retry-After, retryAfterMs).
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// UNAVAILABLE (Redis) or TOO_MANY_CONNECTIONS.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The refusals of a WebSocket upgrade.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum UpgradeRefusals {
    /// NOT_WEBSOCKET: not a WebSocket upgrade; INVALID_VALUE: a bad query
    /// parameter.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// UNAUTHORIZED: no token, or one that is not valid.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// FORBIDDEN: the token does not reach the graph.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// TOO_MANY_CONNECTIONS.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A command (docs/protocol.md, Commands).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"operationId": "op-1", "type": "CREATE_NODE",
    "payload": {"node": {"id": "n1", "type": "task", "position": {"x": 10, "y": 20}, "data": {"title": "Write"}}}}))]
pub struct CommandBody {
    /// Made by the client (a UUID); makes the command idempotent.
    pub operation_id: String,
    #[serde(rename = "type")]
    #[schema(schema_with = command_type)]
    pub kind: String,
    /// The type's payload (docs/protocol.md, Commands); may be left out for
    /// UNDO and REDO.
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// The graph version the edit was based on (conflict detection).
    pub base_version: Option<u64>,
    /// The client's clock, ms since the Unix epoch.
    pub timestamp: Option<u64>,
}

fn command_type() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(crate::graph::command::COMMAND_TYPES))
        .build()
}

/// A batch of commands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchBody {
    /// 1 to 500 commands.
    pub operations: Vec<CommandBody>,
    /// All or nothing as one BATCH_UPDATE (default), or each on its own.
    pub atomic: Option<bool>,
    /// The atomic batch's operation id (default: the first command's).
    pub operation_id: Option<String>,
}

/// 202: the command is in the queue.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub accepted: bool,
    pub operation_id: String,
    /// A rough guess from the backlog, ms.
    pub estimated_processing_time: u64,
}

/// 200 with `?wait=MS`: the outcome arrived in time.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Waited {
    pub operation_id: String,
    pub graph_id: String,
    /// `{"status": "applied", "version", ...}` or `{"status": "reverted",
    /// "code", "message", ...}`.
    #[schema(value_type = Object)]
    pub outcome: Value,
}

/// 202 for a non-atomic batch.
#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    pub accepted: bool,
    pub operations: Vec<BatchItemAccepted>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemAccepted {
    pub accepted: bool,
    pub operation_id: String,
}

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevToken {
    pub token: String,
    pub user_id: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token from `graphq token` (HS256); also accepted as `?token=`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "graphq HTTP API",
        description = "Commands, batches, operation status, graph state and changes, health \
                       and metrics; the WebSocket protocol is in docs/protocol.md.",
        license(name = "MIT")
    ),
    paths(
        super::http::post_command,
        super::http::post_batch,
        super::http::get_operation,
        super::http::get_state,
        super::http::get_changes,
        super::http::get_conflicts,
        super::http::healthz,
        super::http::readyz,
        super::http::metrics,
        super::http::openapi_json,
        super::ws::upgrade,
        super::ws::upgrade_subscribed,
        super::sse::graph_events,
        super::sse::user_events,
        super::sse::datastar_command,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        CommandBody,
        BatchBody,
        Accepted,
        Waited,
        BatchAccepted,
        BatchItemAccepted,
        Health,
        GraphState,
        Changes,
        ConflictList,
        ChangeEntry,
        OperationStatus,
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

#[derive(OpenApi)]
#[openapi(
    paths(super::web::dev_token),
    components(schemas(super::web::DevTokenRequest, DevToken))
)]
struct DevDoc;

/// The document of the router [`super::app`] builds: the demo token
/// endpoint only when it is routed.
pub fn document(dev_tokens: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if dev_tokens {
        doc.merge(DevDoc::openapi());
    }
    let datastar = std::iter::once(("/datastar.js", "text/javascript; charset=utf-8"));
    for (path, content_type) in super::web::files().chain(datastar) {
        let item = utoipa::openapi::path::PathItemBuilder::new()
            .operation(
                utoipa::openapi::HttpMethod::Get,
                utoipa::openapi::path::OperationBuilder::new()
                    .tag("demo")
                    .summary(Some(format!("The demo editor's {path}")))
                    .response(
                        "200",
                        utoipa::openapi::ResponseBuilder::new()
                            .description("The file")
                            .content(content_type, Default::default()),
                    ),
            )
            .build();
        doc.paths.paths.insert(path.to_string(), item);
    }
    doc
}
