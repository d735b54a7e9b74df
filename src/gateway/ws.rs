//! WebSocket protocol (docs/protocol.md): one socket, many graphs.
//!
//! Each connection runs a send task (drains the bounded queue the
//! broadcaster fills, sends heartbeats, closes with the right code) and a
//! receive loop (parses client frames one at a time, so a client's commands
//! are queued in the order it sent them, and none overtakes one refused for
//! now: `command_gate`), joined by `select!`.
//!
//! A socket holds its token's rights until the token's `exp`, when it is
//! closed with 4003 unless a REFRESH on the same socket renewed them first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::db::now_ms;
use crate::graph::command;
use crate::metrics::{GaugeGuard, WS_CONNECTIONS, WS_SUBSCRIPTIONS};
use crate::protocol::{ClientMessage, CloseCode, RevertError, ServerMessage};

use super::broadcast::{
    ClientPosition, Conn, Outgoing, PresenceState, SyncBudget, SyncPermit, server_time,
};
use super::command_gate::CommandGates;
use super::http::{FromParams, Params, Path, Query, identity, not_websocket};
use super::{AppError, AppState, accept, check_graph, count_refusal, invalid_command};

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade)).route(
        "/api/v2/graphs/{graph_id}/subscribe",
        get(upgrade_subscribed),
    )
}

struct WsQuery {
    token: Option<String>,
    client_version: Option<u64>,
    epoch: Option<String>,
}

impl FromParams for WsQuery {
    fn from_params(p: &Params) -> Result<Self, AppError> {
        Ok(WsQuery {
            token: p.string("token")?.map(str::to_string),
            client_version: p.number("clientVersion")?,
            epoch: p.string("epoch")?.map(str::to_string),
        })
    }
}

/// Opens a WebSocket.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    params(super::openapi::TokenParam),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (docs/protocol.md, WebSocket)"),
        super::openapi::UpgradeRefusals,
    ),
    security(("bearer" = []))
)]
async fn upgrade(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    let ws = ws.map_err(not_websocket)?;
    Ok(on_upgrade(state, id, ws, None))
}

/// Opens a WebSocket already subscribed to one graph.
#[utoipa::path(
    get,
    path = "/api/v2/graphs/{graph_id}/subscribe",
    tag = "websocket",
    params(
        super::openapi::GraphPath,
        super::openapi::TokenParam,
        ("clientVersion" = Option<u64>, Query, description = "The last version the client has"),
        ("epoch" = Option<String>, Query, description = "The epoch of that version"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (docs/protocol.md, WebSocket)"),
        super::openapi::UpgradeRefusals,
    ),
    security(("bearer" = []))
)]
async fn upgrade_subscribed(
    State(state): State<AppState>,
    Path(graph): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let id = identity(&state, &headers, q.token.as_deref())?;
    check_graph(&id, &graph, false)?;
    let ws = ws.map_err(not_websocket)?;
    let at = ClientPosition {
        version: q.client_version,
        epoch: q.epoch,
    };
    Ok(on_upgrade(state, id, ws, Some((graph, at))))
}

fn on_upgrade(
    state: AppState,
    id: Identity,
    ws: WebSocketUpgrade,
    first: Option<(String, ClientPosition)>,
) -> Response {
    let max = state.settings.max_frame_bytes;
    // tungstenite's default 128 KiB read and write buffers per socket make
    // idle connections cost ~135 KiB; frames here are small. A write buffer
    // of 0 also sends each frame at once instead of batching it.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(state, id, socket, first))
        .into_response()
}

/// What one connection remembers.
struct Session {
    state: AppState,
    id: Identity,
    conn: Arc<Conn>,
    /// Subscribed graphs, each counted in `graphq_ws_subscriptions`.
    graphs: HashMap<String, GaugeGuard>,
    /// Last presence sent per graph, whose fields stand for any a later
    /// message leaves out. (The throttle is per user: the broadcaster's.)
    presence_at: HashMap<String, PresenceState>,
    /// SYNCs this socket may still ask for (`gateway.sync_rate_limit`).
    sync_budget: Option<SyncBudget>,
    /// Graphs whose commands are held back behind one refused for now, so
    /// none overtakes it (docs/protocol.md, Rate limit).
    gates: CommandGates,
}

async fn connection(
    state: AppState,
    id: Identity,
    socket: WebSocket,
    first: Option<(String, ClientPosition)>,
) {
    let _open = GaugeGuard::new(WS_CONNECTIONS);
    let conn_id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, rx) = Conn::new(
        conn_id,
        id.user.clone(),
        state.settings.send_queue,
        &state.shutdown,
    );
    let admitted = state
        .broadcaster
        .register(conn.clone(), state.settings.max_sockets_per_user)
        .await;
    let (sink, mut stream) = socket.split();
    let sender = tokio::spawn(send_loop(state.clone(), conn.clone(), sink, rx));
    if !admitted {
        conn.close(CloseCode::TooManyConnections);
        let _ = sender.await;
        return;
    }
    let mut session = Session {
        state: state.clone(),
        id,
        conn: conn.clone(),
        graphs: HashMap::new(),
        presence_at: HashMap::new(),
        sync_budget: state
            .settings
            .sync_rate_limit
            .as_ref()
            .map(|l| SyncBudget::new(l, Instant::now())),
        gates: CommandGates::default(),
    };
    if let Some((graph, at)) = first {
        session.subscribe(&graph, at).await;
    }
    let idle = Duration::from_millis(state.settings.idle_timeout_ms);
    // Registered once: a fresh `cancelled()` per frame would lock the
    // token's waiter list every time. The kick token is a child of the
    // server's shutdown, so one future covers both.
    let kicked = conn.kick.cancelled();
    tokio::pin!(kicked);
    let expiry = tokio::time::sleep(session.until_expiry());
    tokio::pin!(expiry);
    loop {
        let next = tokio::select! {
            _ = &mut kicked => break,
            _ = &mut expiry => {
                if session.expired() {
                    conn.close(CloseCode::TokenExpired);
                    break;
                }
                // Armed for at most a day; the token lives on.
                expiry.as_mut().reset(tokio::time::Instant::now() + session.until_expiry());
                continue;
            }
            n = tokio::time::timeout(idle, stream.next()) => n,
        };
        let frame = match next {
            Err(_) => {
                conn.close(CloseCode::Idle);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                tracing::debug!(%err, "websocket read failed");
                if let Some(code) = read_error_close_code(err) {
                    conn.close(code);
                }
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        match frame {
            Message::Text(t) => {
                let exp = session.id.exp;
                conn.room_for_answers().await;
                session.on_text(t.as_str()).await;
                if session.id.exp != exp {
                    expiry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + session.until_expiry());
                }
            }
            Message::Binary(_) => session.error("UNSUPPORTED_FRAME", "frames are JSON text", None),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    let graphs: Vec<String> = session.graphs.keys().cloned().collect();
    state.broadcaster.unregister(&conn, &graphs).await;
    conn.end();
    let _ = sender.await;
}

/// The close code for a frame the socket could not read: what the client
/// did wrong (RFC 6455, 7.4.1), or None when the connection itself failed
/// and no close frame would arrive.
fn read_error_close_code(err: axum::Error) -> Option<CloseCode> {
    use tungstenite::Error;
    // axum wraps the error of the tungstenite it is built on, which is the
    // version this crate depends on (Cargo.toml).
    let err = err.into_inner().downcast::<Error>().ok()?;
    match *err {
        // Over `max_frame_bytes`: tungstenite refuses it before reading it.
        Error::Capacity(_) => Some(CloseCode::TooLarge),
        Error::Utf8(_) => Some(CloseCode::InvalidPayload),
        Error::Protocol(_) | Error::AttackAttempt => Some(CloseCode::ProtocolError),
        _ => None,
    }
}

async fn send_loop(
    state: AppState,
    conn: Arc<Conn>,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut heartbeat = tokio::time::interval(Duration::from_millis(state.settings.heartbeat_ms));
    heartbeat.tick().await;
    // Registered once, not per frame (10,000 sockets re-registering on every
    // broadcast contend on the token's lock); covers shutdown too.
    let kicked = conn.kick.cancelled();
    tokio::pin!(kicked);
    loop {
        tokio::select! {
            biased;
            _ = &mut kicked => break,
            m = rx.recv() => match m {
                Some(out) => {
                    let t = match out {
                        Outgoing::Text(t) => t,
                        Outgoing::Applied(a) => a.frame.clone(),
                    };
                    if sink.send(Message::Text(t)).await.is_err() {
                        conn.end();
                        return;
                    }
                }
                None => break,
            },
            _ = heartbeat.tick() => {
                let hb = ServerMessage::Heartbeat { server_time: server_time() }.to_json();
                if sink.send(Message::Text(Utf8Bytes::from(hb))).await.is_err() {
                    conn.end();
                    return;
                }
            }
        }
    }
    let code = match conn.close_code() {
        Some(c) => c,
        None if state.shutdown.is_cancelled() => CloseCode::GoingAway,
        None => CloseCode::Normal,
    };
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: code as u16,
            reason: Utf8Bytes::from_static(code.description()),
        })))
        .await;
    let _ = sink.close().await;
}

impl Session {
    fn error(&self, code: &str, message: &str, operation_id: Option<&str>) {
        self.conn.send_message(&ServerMessage::Error {
            code,
            message,
            field: None,
            retry_after_ms: None,
            operation_id,
        });
    }

    /// The ERROR for a refused command: what an HTTP client gets as
    /// `{"error": ...}` (see [`AppError::body`]), plus the operation id.
    fn app_error(&self, err: &AppError, operation_id: Option<&str>) {
        let message = err.message();
        self.conn.send_message(&ServerMessage::Error {
            code: err.code(),
            message: &message,
            field: match err {
                AppError::Rejected(r) => Some(&r.field),
                _ => None,
            },
            retry_after_ms: match err {
                AppError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
            operation_id,
        });
    }

    async fn on_text(&mut self, text: &str) {
        // The expiry timer may not have fired yet: nothing, a COMMAND least
        // of all, is taken from a socket whose token has expired.
        if self.expired() {
            return self.conn.close(CloseCode::TokenExpired);
        }
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(refusal) => return self.error(refusal.code, &refusal.message, None),
        };
        match msg {
            ClientMessage::Subscribe {
                graph_id,
                client_version,
                epoch,
            } => {
                let at = ClientPosition {
                    version: client_version,
                    epoch,
                };
                self.subscribe(&graph_id, at).await;
            }
            ClientMessage::RequestSync {
                graph_id,
                client_version,
                epoch,
            } => {
                let at = ClientPosition {
                    version: client_version,
                    epoch,
                };
                if !self.graphs.contains_key(&graph_id) {
                    self.subscribe(&graph_id, at).await;
                } else {
                    self.resync(&graph_id, at);
                }
            }
            ClientMessage::Unsubscribe { graph_id } => {
                self.gates.open(&graph_id);
                if self.graphs.remove(&graph_id).is_some() {
                    self.state
                        .broadcaster
                        .unsubscribe(&self.conn, &graph_id)
                        .await;
                }
            }
            ClientMessage::Command { graph_id, command } => {
                self.on_command(&graph_id, &command).await;
            }
            ClientMessage::Presence {
                graph_id,
                cursor,
                selection,
                name,
                preview,
            } => {
                let update = [cursor, selection, name, preview];
                self.on_presence(&graph_id, update, text.len()).await
            }
            ClientMessage::Heartbeat => self.conn.send_message(&ServerMessage::Heartbeat {
                server_time: server_time(),
            }),
            ClientMessage::Refresh { token } => self.refresh(&token).await,
            // `parse` answers unknown types itself.
            ClientMessage::Unknown => {}
        }
    }

    async fn on_command(&mut self, g: &str, raw: &Value) {
        let op = raw.get("operationId").and_then(Value::as_str);
        let cmd = match command::from_value(raw) {
            // The frame limit is twice the command limit: without
            // this a frame could carry a command HTTP refuses.
            Ok(c) if c.canonical.len() > command::MAX_COMMAND_BYTES => {
                let r = command::Rejection {
                    code: "TOO_LARGE",
                    field: String::new(),
                    message: format!(
                        "command is {} bytes; the limit is {}",
                        c.canonical.len(),
                        command::MAX_COMMAND_BYTES
                    ),
                };
                return self.app_error(&invalid_command(r), op);
            }
            Ok(c) => c,
            Err(r) => return self.app_error(&invalid_command(r), op),
        };
        if let Some(held) = self.gates.check(g, &cmd.operation_id, Instant::now()) {
            count_refusal(held.code());
            tracing::debug!(
                graph_id = g,
                operation_id = %cmd.operation_id,
                user_id = %self.id.user,
                code = held.code(),
                "command held behind one refused for now"
            );
            return self.app_error(&held, Some(&cmd.operation_id));
        }
        match accept(&self.state, &self.id, g, &cmd).await {
            Ok(true) => self.conn.send_message(&ServerMessage::Accepted {
                graph_id: g,
                operation_id: &cmd.operation_id,
                duplicate: false,
                status: None,
                version: None,
            }),
            Ok(false) => self.accepted_again(g, &cmd.operation_id).await,
            Err(e) => {
                self.gates.refused(g, &cmd.operation_id, &e, Instant::now());
                self.app_error(&e, Some(&cmd.operation_id))
            }
        }
    }

    /// `update`: cursor, selection, name and preview, each None when the
    /// message left it out (the socket's last value for it stands).
    /// `bytes`: the frame's size.
    async fn on_presence(&mut self, g: &str, update: [Option<Value>; 4], bytes: usize) {
        if !self.graphs.contains_key(g) {
            return self.error(
                "NOT_SUBSCRIBED",
                "subscribe to the graph before sending presence",
                None,
            );
        }
        let last = self.presence_at.get(g).cloned().unwrap_or_default();
        let [cursor, selection, name, preview] = update;
        let p = PresenceState {
            cursor: cursor.unwrap_or(last.cursor),
            selection: selection.unwrap_or(last.selection),
            name: name.unwrap_or(last.name),
            preview: preview.unwrap_or(last.preview),
        };
        let (cursor, selection) = (&p.cursor, &p.selection);
        let cursor_ok = cursor.is_null()
            || (cursor["x"].as_f64().is_some_and(f64::is_finite)
                && cursor["y"].as_f64().is_some_and(f64::is_finite));
        let selection_ok = selection.is_null()
            || selection.as_array().is_some_and(|a| {
                a.len() <= 1000
                    && a.iter()
                        .all(|s| s.as_str().is_some_and(command::is_entity_id))
            });
        let name_ok = p.name.is_null()
            || p.name.as_str().is_some_and(|n| {
                let n = n.trim();
                !n.is_empty() && n.chars().count() <= 64 && !n.chars().any(char::is_control)
            });
        let preview_ok = p.preview.is_null() || p.preview.is_object();
        if !cursor_ok || !selection_ok || !name_ok || !preview_ok {
            return self.error(
                "INVALID_MESSAGE",
                "cursor is {x, y}; selection is a list of ids; name is 1 to 64 characters; preview is an object",
                None,
            );
        }
        // Every gateway relays it to every subscriber: the size is bounded.
        let max = self.state.settings.max_presence_bytes;
        if bytes > max {
            let message = format!("a PRESENCE frame is at most {max} bytes; this one is {bytes}");
            return self.error("PRESENCE_TOO_LARGE", &message, None);
        }
        let interval = Duration::from_millis(self.state.settings.presence_interval_ms);
        self.state
            .broadcaster
            .offer_presence(&self.id.user, g, &p, interval)
            .await;
        self.presence_at.insert(g.to_string(), p);
    }

    /// A resent operation id. Its outcome may have been announced while the
    /// client was away (a REVERT to a user with no socket reaches nobody; a
    /// `SYNC reset` names no operations), so a settled one is answered now:
    /// ACCEPTED with `"duplicate": true` plus `"status": "completed"` and
    /// the version it made, or ACCEPTED then the REVERT again.
    async fn accepted_again(&mut self, graph: &str, operation_id: &str) {
        let settled = match self.state.store.operation(operation_id).await {
            Ok(Some(op)) if op.graph_id == graph => Some(op),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(%err, operation_id, "status of a resent operation unknown");
                None
            }
        };
        let completed = settled.as_ref().filter(|op| op.status == "completed");
        self.conn.send_message(&ServerMessage::Accepted {
            graph_id: graph,
            operation_id,
            duplicate: true,
            status: completed.map(|_| "completed"),
            version: completed.and_then(|op| op.version),
        });
        if let Some(op) = settled.as_ref().filter(|op| op.status == "failed") {
            self.conn.send_message(&ServerMessage::Revert {
                graph_id: graph,
                operation_id,
                error: RevertError::Stored(op.error.as_ref()),
                current: None,
            });
        }
    }

    async fn subscribe(&mut self, graph: &str, at: ClientPosition) {
        if let Err(e) = check_graph(&self.id, graph, false) {
            return self.app_error(&e, None);
        }
        if self.graphs.contains_key(graph) {
            return self.resync(graph, at);
        }
        let max = self.state.settings.max_subscriptions_per_socket;
        if self.graphs.len() >= max {
            let message =
                format!("a socket may subscribe to {max} graphs; unsubscribe from one first");
            return self.error("TOO_MANY_SUBSCRIPTIONS", &message, None);
        }
        self.graphs
            .insert(graph.to_string(), GaugeGuard::new(WS_SUBSCRIPTIONS));
        self.state
            .broadcaster
            .subscribe(self.conn.clone(), graph, at)
            .await;
    }

    /// A fresh SYNC of a subscribed graph, within the socket's budget.
    fn resync(&mut self, graph: &str, at: ClientPosition) {
        if let (Some(budget), Some(limit)) = (
            self.sync_budget.as_mut(),
            self.state.settings.sync_rate_limit.as_ref(),
        ) {
            match budget.take(limit, Instant::now()) {
                SyncPermit::Granted => {}
                SyncPermit::Dropped => return,
                SyncPermit::Refused(retry_after_ms) => {
                    let message = format!("too many SYNC requests; retry in {retry_after_ms} ms");
                    return self.conn.send_message(&ServerMessage::Error {
                        code: "SYNC_RATE_LIMITED",
                        message: &message,
                        field: None,
                        retry_after_ms: Some(retry_after_ms),
                        operation_id: None,
                    });
                }
            }
        }
        self.state
            .broadcaster
            .request_sync(self.conn.clone(), graph, at);
    }
}

/// The ERROR code of a refused REFRESH; the socket keeps its old token.
const REFRESH_REFUSED: &str = "AUTH_REFRESH_REFUSED";

/// The longest the expiry timer sleeps at once: a far `exp` would overflow
/// an `Instant`, so the timer wakes, finds the token alive, and sleeps again.
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The token's lifecycle on an open socket (docs/protocol.md, Token expiry).
impl Session {
    fn expired(&self) -> bool {
        now_ms() >= self.id.expires_at_ms()
    }

    fn until_expiry(&self) -> Duration {
        Duration::from_millis(self.id.expires_at_ms().saturating_sub(now_ms())).min(MAX_EXPIRY_WAIT)
    }

    /// Takes a new token for the same user: its graphs, role and expiry
    /// replace the old ones, and subscriptions it no longer grants end
    /// with UNSUBSCRIBED. A refused token changes nothing.
    async fn refresh(&mut self, token: &str) {
        let id = match self.state.auth.verify(token) {
            Err(e) => return self.error(REFRESH_REFUSED, &e.to_string(), None),
            Ok(id) if id.user != self.id.user => {
                return self.error(
                    REFRESH_REFUSED,
                    "the token names another user; a socket keeps its user",
                    None,
                );
            }
            // `verify` allows the second of `exp` itself; the socket does not.
            Ok(id) if now_ms() >= id.expires_at_ms() => {
                return self.error(REFRESH_REFUSED, "token expired", None);
            }
            Ok(id) => id,
        };
        let revoked: Vec<String> = self
            .graphs
            .keys()
            .filter(|g| !id.can_read(g))
            .cloned()
            .collect();
        for graph in revoked {
            self.graphs.remove(&graph);
            self.state.broadcaster.unsubscribe(&self.conn, &graph).await;
            let message = format!("the token does not grant graph {graph}");
            self.conn.send_message(&ServerMessage::Unsubscribed {
                graph_id: &graph,
                code: "FORBIDDEN",
                message: &message,
            });
        }
        self.conn.send_message(&ServerMessage::Refreshed {
            expires_at: id.expires_at_ms(),
        });
        self.id = id;
    }
}
