//! An event stream's response body ([`EventStream`]): the events of one
//! connection's queue, a heartbeat comment while it is quiet, and its end
//! (the client went, the stream was ended, or the token expired).
//!
//! A body type of its own rather than a stream behind axum's `Sse`: an idle
//! stream holds it for its whole life, so it is kept to one allocation with
//! its timers inline and no task of its own, and a graph's change goes out
//! as the bytes its feed's first stream encoded ([`Applied::event`]), not
//! as a copy per stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use http_body::Frame;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::gateway::AppState;
use crate::gateway::broadcast::{Applied, Conn, Outgoing};
use crate::metrics::{GaugeGuard, SSE_CONNECTIONS};

use super::datastar;

/// How long EventSource waits before it reconnects (the `retry:` hint).
const RETRY: Duration = Duration::from_millis(1000);

/// A far `exp` would overflow an `Instant`: a stream lives a day at most
/// (EventSource then reconnects and resumes).
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);

const HEARTBEAT: &[u8] = b": heartbeat\n\n";

pin_project! {
    /// The body of one event stream. (The macro takes no attributes on
    /// fields but `#[pin]`: they are described in plain comments.)
    pub(super) struct EventStream {
        // Fires when the stream is ended: too slow, or the server stops.
        #[pin]
        kicked: WaitForCancellationFutureOwned,
        // The next heartbeat, or the token's expiry when that comes first.
        #[pin]
        timer: Sleep,
        rx: mpsc::Receiver<Outgoing>,
        events: Events,
        // Events of frames already read, not yet sent (a Datastar SYNC
        // makes several).
        ready: VecDeque<Bytes>,
        heartbeat: Duration,
        // When the token expires: the stream ends then.
        expires: Instant,
        // When the last event or heartbeat went out.
        last_sent: Instant,
        registration: Registration,
    }
}

/// The stream as the broadcaster knows it: dropping the body (whatever
/// ended it) ends the connection and unregisters it.
struct Registration {
    state: AppState,
    conn: Arc<Conn>,
    /// The graph of a graph stream; None for a user stream.
    graph: Option<String>,
    _open: GaugeGuard,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conn.end();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, conn, graphs) = (
            self.state.clone(),
            self.conn.clone(),
            self.graph.take().into_iter().collect::<Vec<_>>(),
        );
        runtime.spawn(async move { state.broadcaster.unregister(&conn, &graphs).await });
    }
}

impl EventStream {
    /// The stream of `conn`, registered (and subscribed to `graph`) by the
    /// caller; it ends at `expires_at_ms` at the latest.
    pub(super) fn new(
        state: AppState,
        conn: Arc<Conn>,
        rx: mpsc::Receiver<Outgoing>,
        graph: Option<String>,
        events: Events,
        expires_at_ms: u64,
    ) -> EventStream {
        let now = Instant::now();
        let heartbeat = Duration::from_millis(state.settings.heartbeat_ms.max(1));
        let life = Duration::from_millis(expires_at_ms.saturating_sub(crate::db::now_ms()));
        let expires = now + life.min(MAX_LIFE);
        let retry = format!("retry: {}\n\n", RETRY.as_millis());
        EventStream {
            kicked: conn.kick.clone().cancelled_owned(),
            timer: tokio::time::sleep_until((now + heartbeat).min(expires)),
            rx,
            events,
            ready: VecDeque::from([Bytes::from(retry)]),
            heartbeat,
            expires,
            last_sent: now,
            registration: Registration {
                state,
                conn,
                graph,
                _open: GaugeGuard::new(SSE_CONNECTIONS),
            },
        }
    }

    /// The response: `text/event-stream`, not to be cached or buffered.
    pub(super) fn into_response(self) -> Response {
        event_stream_response(Body::new(self))
    }
}

/// A response carrying `body` as an event stream.
pub(super) fn event_stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies that buffer responses would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut this = self.project();
        let graph = this.registration.graph.as_deref();
        loop {
            if let Some(event) = this.ready.pop_front() {
                *this.last_sent = Instant::now();
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            if this.kicked.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(out)) => this.events.translate(graph, out, this.ready),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        // Quiet: a heartbeat when one is due, the end at the token's expiry.
        // The timer is not moved per event (that is a timer-wheel update
        // per stream per change): when it fires early, it is set again.
        while this.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= *this.expires {
                this.registration.conn.end();
                return Poll::Ready(None);
            }
            let due = *this.last_sent + *this.heartbeat;
            if now >= due {
                *this.last_sent = now;
                this.timer
                    .as_mut()
                    .reset((now + *this.heartbeat).min(*this.expires));
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HEARTBEAT)))));
            }
            this.timer.as_mut().reset(due.min(*this.expires));
        }
        Poll::Pending
    }
}

/// What a stream sends its client.
pub(super) enum Shape {
    /// Each frame's JSON as it is, named by its `type`.
    Json,
    /// Datastar signal patches of the graph.
    Datastar(datastar::Signals),
}

/// One stream's translation of frames into events.
pub(super) struct Events {
    /// Whether PRESENCE and PRESENCE_LEAVE are wanted.
    pub presence: bool,
    pub shape: Shape,
    /// The graph's epoch as of the last SYNC, for the ids of changes that
    /// came without one.
    pub epoch: String,
}

/// What the translation reads of a frame; the rest is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(rename = "graphId", borrow, default)]
    graph_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<std::borrow::Cow<'a, str>>,
}

impl Events {
    /// Appends the events of one queued frame to `ready` (none for a frame
    /// this stream does not carry). `graph` is the stream's graph.
    fn translate(&mut self, graph: Option<&str>, out: Outgoing, ready: &mut VecDeque<Bytes>) {
        match out {
            Outgoing::Applied(a) => self.applied(graph, &a, ready),
            Outgoing::Text(frame) => self.frame(graph, frame.as_str(), ready),
        }
    }

    /// A graph's change: the event its feed's first stream encoded.
    fn applied(&mut self, graph: Option<&str>, a: &Applied, ready: &mut VecDeque<Bytes>) {
        if graph.is_none() {
            ready.push_back(encode("COMMAND_APPLIED", a.frame.as_str(), None));
            return;
        }
        let epoch = if a.epoch.is_empty() {
            &self.epoch
        } else {
            &a.epoch
        };
        let id = format!("{epoch}:{}", a.version);
        match &mut self.shape {
            Shape::Json if !a.epoch.is_empty() => ready.push_back(
                a.event
                    .get_or_init(|| encode("COMMAND_APPLIED", a.frame.as_str(), Some(&id)))
                    .clone(),
            ),
            Shape::Json => ready.push_back(encode("COMMAND_APPLIED", a.frame.as_str(), Some(&id))),
            Shape::Datastar(signals) => {
                ready.extend(signals.translate("COMMAND_APPLIED", a.frame.as_str(), Some(id)))
            }
        }
    }

    /// Any other frame, read for its type (and, for SYNC, the epoch).
    fn frame(&mut self, graph: Option<&str>, text: &str, ready: &mut VecDeque<Bytes>) {
        let Ok(head) = serde_json::from_str::<Head>(text) else {
            tracing::warn!("unreadable frame for an SSE stream");
            return;
        };
        let kind = head.kind.as_ref();
        if let Some(epoch) = head.epoch.as_deref().filter(|_| kind == "SYNC") {
            self.epoch = epoch.to_string();
        }
        let other_graph = matches!((graph, &head.graph_id), (Some(g), Some(h)) if g != h);
        let wanted = match kind {
            "PRESENCE" | "PRESENCE_LEAVE" => self.presence,
            // The user's outcomes on other graphs belong to their streams.
            "REVERT" | "CONFLICT" => !other_graph,
            _ => true,
        };
        if !wanted {
            return;
        }
        let id = match (kind, head.version) {
            ("SYNC" | "COMMAND_APPLIED", Some(v)) if graph.is_some() => {
                Some(format!("{}:{v}", self.epoch))
            }
            _ => None,
        };
        match &mut self.shape {
            Shape::Json => ready.push_back(encode(kind, text, id.as_deref())),
            Shape::Datastar(signals) => ready.extend(signals.translate(kind, text, id)),
        }
    }
}

/// One event in the SSE format: its name, its id and its data (a line
/// break in it starts another `data:` line).
pub(super) fn encode(name: &str, data: &str, id: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(name.len() + data.len() + id.map_or(0, str::len) + 32);
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.push_str("data: ");
        out.push_str(&rest[..end]);
        out.push('\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_its_name_data_and_id() {
        assert_eq!(
            encode("COMMAND_APPLIED", r#"{"version":3}"#, Some("e1:3")),
            "event: COMMAND_APPLIED\nid: e1:3\ndata: {\"version\":3}\n\n"
        );
        assert_eq!(
            encode("PRESENCE", "{}", None),
            "event: PRESENCE\ndata: {}\n\n"
        );
    }

    #[test]
    fn every_line_of_the_data_is_a_data_line() {
        assert_eq!(
            encode("x", "a\nb\r\nc\rd", None),
            "event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }
}
