//! The demo editor and its JavaScript client (`web/`), compiled into the
//! binary and served at `/`, the Datastar example page and Datastar's
//! client (`/datastar.html`, `/datastar.js`), plus the demo's token
//! endpoint, which only `graphq dev` turns on (other modes never mint
//! tokens; docs/protocol.md, Auth).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Graphs, Role};
use crate::graph::Rejection;

use super::{AppError, AppState};

/// Path, content type and text of every file under `web/` that is served.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/graphq-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/graphq-client.js"),
    ),
    (
        "/device-store.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/device-store.js"),
    ),
    (
        "/graphq-sse.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/graphq-sse.js"),
    ),
    (
        "/editor.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/editor.js"),
    ),
    (
        "/editor.css",
        "text/css; charset=utf-8",
        include_str!("../../web/editor.css"),
    ),
    (
        "/sw.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/sw.js"),
    ),
    (
        "/example.html",
        "text/html; charset=utf-8",
        include_str!("../../web/example.html"),
    ),
    (
        "/datastar.html",
        "text/html; charset=utf-8",
        include_str!("../../web/datastar.html"),
    ),
];

/// The demo's files as (path, content type).
pub(super) fn files() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES
        .iter()
        .map(|&(path, content_type, _)| (path, content_type))
}

/// Datastar's client script, as its npm package (a devDependency of `web/`)
/// ships it: read when asked for, not compiled in, so building graphq needs
/// no `npm ci`. Without it, `/datastar.js` is a 404 that says so.
const DATASTAR_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/web/node_modules/@starfederation/datastar/dist/datastar.js"
);

async fn datastar_js() -> Result<impl axum::response::IntoResponse, AppError> {
    let text = tokio::fs::read_to_string(DATASTAR_JS).await.map_err(|_| {
        AppError::NotFound(format!(
            "Datastar's client is not installed: run `npm ci` in web/ ({DATASTAR_JS})"
        ))
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    ))
}

/// The demo's files, served in every mode.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/datastar.js", get(datastar_js));
    for &(path, content_type, text) in FILES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    text,
                )
            }),
        );
    }
    router
}

/// The longest (and default) life of a demo token.
const DEV_TOKEN_TTL_S: u64 = 24 * 3600;

/// The demo's token endpoint, routed only under `graphq dev`: elsewhere the
/// path does not exist, so a body sent to it is never read.
pub fn dev_routes() -> Router<AppState> {
    Router::new().route("/api/v2/dev/token", post(dev_token))
}

/// The demo's token request (only under `graphq dev`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevTokenRequest {
    user: String,
    /// `editor` (default) or `viewer`.
    #[serde(default)]
    role: Option<String>,
    /// Shorter lives let the demo show a socket renewing its token
    /// (REFRESH) and reconnecting after 4003.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /api/v2/dev/token {"user", "role"?, "ttlSeconds"?}` → `{"token",
/// "userId"}`: an editor (or viewer) token for every graph, valid for
/// `ttlSeconds` (1 to 86,400; default 24 hours). Routed by [`dev_routes`]
/// only, so it exists only under `graphq dev`.
#[utoipa::path(
    post,
    path = "/api/v2/dev/token",
    tag = "demo",
    request_body(content = DevTokenRequest),
    responses(
        (status = 200, description = "A token for every graph (only under `graphq dev`)", body = super::openapi::DevToken),
        (status = 400, description = "INVALID_JSON or INVALID_FIELD", body = super::openapi::ErrorBody),
    )
)]
async fn dev_token(
    State(state): State<AppState>,
    body: Result<Json<DevTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let invalid = |code, field: &str, message: String| {
        AppError::Rejected(Rejection {
            code,
            field: field.to_string(),
            message,
        })
    };
    let Ok(Json(req)) = body else {
        return Err(invalid(
            "INVALID_JSON",
            "",
            "expected {\"user\": NAME, \"role\"?: \"editor\"|\"viewer\"}".into(),
        ));
    };
    let role = match req.role.as_deref() {
        None | Some("editor") => Role::Editor,
        Some("viewer") => Role::Viewer,
        Some(_) => {
            return Err(invalid(
                "INVALID_FIELD",
                "role",
                "role is editor or viewer".into(),
            ));
        }
    };
    let ttl = match req.ttl_seconds {
        None => DEV_TOKEN_TTL_S,
        Some(s) if (1..=DEV_TOKEN_TTL_S).contains(&s) => s,
        Some(_) => {
            return Err(invalid(
                "INVALID_FIELD",
                "ttlSeconds",
                format!("ttlSeconds is 1 to {DEV_TOKEN_TTL_S}"),
            ));
        }
    };
    let token = state
        .auth
        .mint(&req.user, Graphs::All, role, Duration::from_secs(ttl))
        .map_err(|err| invalid("INVALID_FIELD", "user", err.to_string()))?;
    Ok(Json(json!({"token": token, "userId": req.user})))
}
