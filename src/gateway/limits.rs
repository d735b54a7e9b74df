//! What one client may hold of a gateway: open connections per peer address
//! and in total, with a small reserve beyond the caps so that health probes
//! still get through, and the time a request body may take to arrive
//! (docs/protocol.md, Limits). Without them, clients that never finish a
//! request hold a file descriptor each until the process can accept nothing,
//! `/healthz` included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{AppError, AppState, GatewaySettings};

/// Connections beyond a cap that may still be open at once, each for one
/// health probe: enough for a few monitors, too few to matter as file
/// descriptors.
pub(super) const PROBE_RESERVE: usize = 64;
/// Of [`PROBE_RESERVE`], the most one peer address may hold, so that one
/// flooding peer cannot take the whole reserve.
const PROBE_RESERVE_PER_IP: usize = 4;
/// A reserve connection must send its request head within this long (a
/// silent one would otherwise hold a reserve slot for the full header timeout).
pub(super) const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// What a reserve connection may ask for.
const PROBE_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];
/// File descriptors kept free below the process's limit beyond the
/// connections: Redis connections (shared, blocking reads, pub/sub, the RESP
/// pool), the reserve, the listener, log files.
const FD_HEADROOM: u64 = PROBE_RESERVE as u64 + 256;

/// Counters of the connections a gateway has open, by peer address.
pub(super) struct ConnectionLimits {
    per_ip: usize,
    total: usize,
    /// A std Mutex: nothing is awaited while it is held, and it is held for
    /// a few map operations per connection.
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    full: usize,
    probes: usize,
    /// Per peer: (full connections, reserve connections). Entries at (0, 0)
    /// are removed, so the map holds only peers with open connections.
    by_ip: HashMap<IpAddr, (usize, usize)>,
}

/// What a newly accepted connection may do.
pub(super) enum Admission {
    /// Under both caps: served as usual.
    Full(Slot),
    /// Beyond a cap, within the reserve: one health probe, then closed.
    Probe(Slot),
    /// Beyond a cap with the reserve full: close at once.
    Refused,
}

/// A connection's place in the counts, given back when dropped.
pub(super) struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    probe: bool,
}

impl ConnectionLimits {
    pub(super) fn new(settings: &GatewaySettings) -> Arc<ConnectionLimits> {
        let total = total_cap(settings.max_connections, crate::os::fd_limit());
        if total < settings.max_connections {
            tracing::warn!(
                max_connections = settings.max_connections,
                effective = total,
                "gateway.max_connections lowered to fit the file-descriptor limit"
            );
        }
        // Exported from the start, at 0, so that an alert on its increase
        // has a series to watch before the first refusal.
        for cap in ["per_ip", "total"] {
            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED, "cap" => cap).absolute(0);
        }
        Arc::new(ConnectionLimits {
            per_ip: settings.max_connections_per_ip,
            total,
            open: Mutex::default(),
        })
    }

    /// Counts a connection from `ip` in, or refuses it; a connection beyond
    /// a cap is counted in `graphq_http_connections_refused_total` by cap.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let mut open = self.open.lock().expect("connection counts lock");
        let (full_here, probes_here) = open.by_ip.get(&ip).copied().unwrap_or((0, 0));
        let over = if full_here >= self.per_ip {
            Some("per_ip")
        } else if open.full >= self.total {
            Some("total")
        } else {
            None
        };
        let slot = |probe| Slot {
            limits: self.clone(),
            ip,
            probe,
        };
        let Some(cap) = over else {
            open.full += 1;
            open.by_ip.insert(ip, (full_here + 1, probes_here));
            return Admission::Full(slot(false));
        };
        metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED, "cap" => cap).increment(1);
        if open.probes >= PROBE_RESERVE || probes_here >= PROBE_RESERVE_PER_IP {
            return Admission::Refused;
        }
        open.probes += 1;
        open.by_ip.insert(ip, (full_here, probes_here + 1));
        Admission::Probe(slot(true))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("connection counts lock");
        let Some((full, probes)) = open.by_ip.get(&self.ip).copied() else {
            return;
        };
        let left = if self.probe {
            open.probes = open.probes.saturating_sub(1);
            (full, probes.saturating_sub(1))
        } else {
            open.full = open.full.saturating_sub(1);
            (full.saturating_sub(1), probes)
        };
        if left == (0, 0) {
            open.by_ip.remove(&self.ip);
        } else {
            open.by_ip.insert(self.ip, left);
        }
    }
}

/// The total cap: `configured`, lowered when needed so that the connections
/// and [`FD_HEADROOM`] fit under the file-descriptor limit (and at least half
/// of a small limit stays for connections).
pub(super) fn total_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(fds) = fd_limit else {
        return configured;
    };
    let room = fds.saturating_sub(FD_HEADROOM).max(fds / 2);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// A connection's socket together with its [`Slot`]: the slot lives exactly
/// as long as the socket, through a WebSocket upgrade too (hyper hands the
/// same IO object to the upgraded connection).
pub(super) struct Counted<IO> {
    io: IO,
    _slot: Slot,
}

impl<IO> Counted<IO> {
    pub(super) fn new(io: IO, slot: Slot) -> Counted<IO> {
        Counted { io, _slot: slot }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Middleware of reserve connections: health probes pass, anything else is
/// 503 `TOO_MANY_CONNECTIONS`.
pub(super) async fn probes_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET && PROBE_PATHS.contains(&req.uri().path()) {
        next.run(req).await
    } else {
        AppError::TooManyConnections.into_response()
    }
}

/// Middleware: a request body must arrive whole within
/// `gateway.body_read_timeout_ms` of its head; reading it fails after that
/// (`read_body` answers 408 `BODY_TIMEOUT`, and hyper closes the connection,
/// since the rest of the body was never read).
pub(super) async fn bound_body(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use hyper::body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let deadline = Instant::now() + Duration::from_millis(state.settings.body_read_timeout_ms);
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline,
            sleep: None,
            expired: false,
        })
    });
    next.run(req).await
}

/// The error a body read fails with once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(super) struct BodyTimedOut;

/// Whether a body read failed because of [`bound_body`]'s deadline.
pub(super) fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A body that fails with [`BodyTimedOut`] when it is not over by `deadline`.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Armed at the first read that has to wait, so requests whose body is
    /// read at once (or never) register no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.expired = true;
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, total: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_ip,
            total,
            open: Mutex::default(),
        })
    }

    #[test]
    fn the_total_cap_leaves_headroom_under_the_fd_limit() {
        assert_eq!(total_cap(20_000, None), 20_000);
        assert_eq!(total_cap(20_000, Some(1_048_576)), 20_000);
        assert_eq!(
            total_cap(20_000, Some(10_000)),
            10_000 - FD_HEADROOM as usize
        );
        assert_eq!(total_cap(20_000, Some(256)), 128);
    }

    #[test]
    fn beyond_a_cap_only_the_reserve_and_counts_come_back() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(2, 3);
        let a1 = l.admit(a);
        let a2 = l.admit(a);
        assert!(matches!(
            (&a1, &a2),
            (Admission::Full(_), Admission::Full(_))
        ));
        // a is at its cap; b is not, until the total is reached.
        let probes: Vec<_> = (0..PROBE_RESERVE_PER_IP).map(|_| l.admit(a)).collect();
        assert!(probes.iter().all(|p| matches!(p, Admission::Probe(_))));
        assert!(matches!(l.admit(a), Admission::Refused));
        let b1 = l.admit(b);
        assert!(matches!(b1, Admission::Full(_)));
        assert!(matches!(l.admit(b), Admission::Probe(_)));
        drop(a1);
        let b2 = l.admit(b);
        assert!(matches!(b2, Admission::Full(_)));
        drop((a2, b1, probes));
        let open = l.open.lock().unwrap();
        assert_eq!((open.full, open.probes, open.by_ip.len()), (1, 0, 1));
    }
}
