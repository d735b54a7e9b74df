//! `?wait=MS` waiters: an HTTP caller waiting for one operation's outcome.
//! A waiter holds the graph's feed and the user's channel (whichever
//! carries the outcome) from before the command is queued until it is
//! answered or gives up.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::Broadcaster;
use super::note::Note;

/// A pending wait for one operation's outcome.
pub struct Waiter {
    broadcaster: Broadcaster,
    graph: String,
    user: String,
    operation_id: String,
    rx: Option<oneshot::Receiver<Value>>,
}

impl Waiter {
    /// The outcome (`{"status":"applied",...}` or `{"status":"reverted",...}`),
    /// or None when `timeout` passed first.
    pub async fn wait(mut self, timeout: Duration) -> Option<Value> {
        let rx = self.rx.take()?;
        let got = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.broadcaster
            .drop_waiter(&self.graph, &self.user, &self.operation_id)
            .await;
        got
    }
}

impl Broadcaster {
    /// Prepares to wait for an operation's outcome: subscribes what carries
    /// it (the graph's feed, the user's channel) before the caller queues it.
    pub async fn waiter(&self, graph: &str, user: &str, operation_id: &str) -> Waiter {
        self.acquire_feed(graph).await;
        self.hold_user(user, None).await;
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .expect("waiters lock")
            .entry(operation_id.to_string())
            .or_default()
            .push(tx);
        Waiter {
            broadcaster: self.clone(),
            graph: graph.to_string(),
            user: user.to_string(),
            operation_id: operation_id.to_string(),
            rx: Some(rx),
        }
    }

    async fn drop_waiter(&self, graph: &str, user: &str, operation_id: &str) {
        self.inner
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(operation_id);
        if self.release_feed(graph) {
            self.stop_feed_channels(graph).await;
        }
        self.release_user(user, None).await;
    }

    /// Hands the note's outcome to whoever waits for its operation.
    pub(super) fn wake_waiters(&self, note: &Note) {
        let Some(op) = note.operation_id.as_deref() else {
            return;
        };
        let Some(waiting) = self.inner.waiters.lock().expect("waiters lock").remove(op) else {
            return;
        };
        // Parsed only when someone waits: most notes have no waiter.
        let outcome: Value = note
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_str(o.get()).ok())
            .unwrap_or(Value::Null);
        for w in waiting {
            let _ = w.send(outcome.clone());
        }
    }
}
