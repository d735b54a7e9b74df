//! The broadcaster's handle on one connection, a WebSocket or an SSE
//! stream ([`Conn`]): its bounded send queue of shared [`Frame`]s, and how
//! it is told to close.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{CloseCode, ServerMessage};

/// A text frame. Shared by every subscriber it goes to: cloning it bumps a
/// reference count instead of copying the text.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// How often [`Conn::room_for_answers`] looks at the queue again.
const ANSWER_ROOM_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// A frame queued for one socket.
#[derive(Debug)]
pub enum Outgoing {
    Text(Frame),
    /// A graph's COMMAND_APPLIED, shared by every subscriber of the graph.
    Applied(Arc<Applied>),
}

/// COMMAND_APPLIED of one change, made once by the graph's feed for every
/// subscriber: the frame a WebSocket sends, and what an event stream needs
/// besides to name the event, so that no stream reads the frame again.
#[derive(Debug)]
pub struct Applied {
    pub frame: Frame,
    pub version: u64,
    /// The graph's epoch when the change was made (the event id is
    /// `epoch:version`).
    pub epoch: String,
    /// The change as a Server-Sent Event: encoded by the first stream that
    /// sends it, then shared by the rest (one copy per change, not per
    /// stream).
    pub event: OnceLock<axum::body::Bytes>,
}

impl Applied {
    pub fn new(frame: Frame, version: u64, epoch: String) -> Arc<Applied> {
        Arc::new(Applied {
            frame,
            version,
            epoch,
            event: OnceLock::new(),
        })
    }
}

/// The broadcaster's handle on one connection.
pub struct Conn {
    pub id: u64,
    pub user: String,
    /// A user stream (`GET /api/v2/events`): it also hears COMMAND_APPLIED
    /// of the user's own commands on any graph, from the user's channel.
    pub own_applied: bool,
    /// Bounded: a client that cannot keep up is closed rather than buffered.
    tx: mpsc::Sender<Outgoing>,
    /// Fired to close the socket; `close_code` says with which code.
    pub kick: CancellationToken,
    /// A [`CloseCode`] as a number, 0 while none was chosen: the first
    /// reason to close wins.
    close_code: AtomicU16,
    /// Set with `kick` by [`Conn::end`]: checked per queued frame, where
    /// the token's own check would take its lock (10,000 times per change
    /// during a large fanout).
    ended: AtomicBool,
}

impl Conn {
    /// `shutdown` is the server's: when it fires, the connection is kicked too.
    pub fn new(
        id: u64,
        user: String,
        queue: usize,
        shutdown: &CancellationToken,
    ) -> (Arc<Conn>, mpsc::Receiver<Outgoing>) {
        Conn::with_own_applied(id, user, queue, shutdown, false)
    }

    /// [`Conn::new`], for a user stream when `own_applied`.
    pub fn with_own_applied(
        id: u64,
        user: String,
        queue: usize,
        shutdown: &CancellationToken,
        own_applied: bool,
    ) -> (Arc<Conn>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let conn = Conn {
            id,
            user,
            own_applied,
            tx,
            kick: shutdown.child_token(),
            close_code: AtomicU16::new(0),
            ended: AtomicBool::new(false),
        };
        (Arc::new(conn), rx)
    }

    /// Queues a frame; a full queue closes the connection as too slow.
    pub fn send(&self, frame: Frame) {
        self.queue(Outgoing::Text(frame));
    }

    /// Queues a graph's change (a reference to it, shared).
    pub fn send_applied(&self, applied: &Arc<Applied>) {
        self.queue(Outgoing::Applied(applied.clone()));
    }

    fn queue(&self, out: Outgoing) {
        if self.ended.load(Ordering::Relaxed) {
            return;
        }
        if self.tx.try_send(out).is_err() {
            self.close(CloseCode::TooSlow);
        }
    }

    /// Returns once at most half of the send queue is taken (or the
    /// connection ended). The receive loop waits on it before it reads the
    /// next frame, so a client that sends faster than it reads its answers
    /// is slowed at its own socket (its frames wait in TCP buffers) instead
    /// of filling the queue: the other half stays free for what its graphs
    /// broadcast, and only a client that stops reading those is closed as
    /// too slow.
    pub async fn room_for_answers(&self) {
        let half = self.tx.max_capacity() / 2;
        while self.tx.capacity() < half && !self.ended.load(Ordering::Relaxed) {
            tokio::select! {
                _ = self.kick.cancelled() => return,
                _ = tokio::time::sleep(ANSWER_ROOM_POLL) => {}
            }
        }
    }

    /// Serializes a message for this socket alone. Frames for many sockets
    /// are serialized once and queued with [`Conn::send`].
    pub fn send_message(&self, message: &ServerMessage) {
        self.send(Frame::from(message.to_json()));
    }

    pub fn close(&self, code: CloseCode) {
        let first =
            self.close_code
                .compare_exchange(0, code as u16, Ordering::SeqCst, Ordering::SeqCst);
        if first.is_ok() {
            metrics::counter!(crate::metrics::WS_CLOSES, "code" => (code as u16).to_string())
                .increment(1);
        }
        self.end();
    }

    /// Why the socket was closed, if a reason was given.
    pub fn close_code(&self) -> Option<CloseCode> {
        CloseCode::from_u16(self.close_code.load(Ordering::SeqCst))
    }

    /// Ends the connection: nothing more is queued, and its socket closes.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        self.kick.cancel();
    }
}
