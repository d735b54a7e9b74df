//! The order of one socket's commands after a refusal for now.
//!
//! A client pipelines commands: by the time a `RATE_LIMITED` (or
//! `UNAVAILABLE`) for one of them reaches it, the ones it sent after are
//! already on their way. Were they judged on their own, one arriving after
//! the limiter refilled would be queued before the refused one, which the
//! client sends again only later: edits would apply out of the order made.
//! So once a command of a graph is refused for now on a socket, that
//! socket's later commands of the graph are refused the same way, unqueued,
//! until the refused operation id comes again (docs/protocol.md, Rate limit).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::AppError;

/// Graphs one socket holds back at once (a bound on memory: ids are up to
/// 128 bytes each). Past it, the oldest gate opens to make room.
pub(crate) const MAX_GATES: usize = 64;

/// A gate opens by itself this long after its refusal: a client that gave
/// up the refused command (it learned the command was applied from an
/// earlier connection's send, say) is not refused for ever. The commands
/// the gate is for were on their way when the refusal was sent, and arrive
/// long before this.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(30);

/// The gates of one socket, by graph.
#[derive(Default)]
pub(crate) struct CommandGates {
    gates: HashMap<String, Gate>,
}

struct Gate {
    /// The refused command's operation id: the one command let through.
    operation_id: String,
    /// When it was refused (gates open after [`MAX_HOLD`]; the oldest
    /// makes room first).
    refused_at: Instant,
    /// What later commands are refused with until the gate opens.
    refusal: Refusal,
}

#[derive(Clone, Copy)]
enum Refusal {
    /// `RATE_LIMITED`, retry at this instant.
    RateLimited(Instant),
    /// `UNAVAILABLE`.
    Unavailable,
}

impl CommandGates {
    /// `None` when the command may be judged on its own; else the refusal
    /// to answer it with. The refused operation id itself opens the gate.
    pub(crate) fn check(
        &mut self,
        graph: &str,
        operation_id: &str,
        now: Instant,
    ) -> Option<AppError> {
        let gate = self.gates.get(graph)?;
        if gate.operation_id == operation_id || now >= gate.refused_at + MAX_HOLD {
            self.gates.remove(graph);
            return None;
        }
        Some(match gate.refusal {
            Refusal::RateLimited(retry_at) => AppError::RateLimited {
                retry_after_ms: (retry_at.saturating_duration_since(now).as_millis() as u64).max(1),
            },
            Refusal::Unavailable => AppError::Unavailable(format!(
                "held behind {} on this socket, refused for now",
                gate.operation_id
            )),
        })
    }

    /// Closes the graph's gate behind `operation_id` if `err` refused it for
    /// now; other outcomes leave the gates as they are.
    pub(crate) fn refused(
        &mut self,
        graph: &str,
        operation_id: &str,
        err: &AppError,
        now: Instant,
    ) {
        let refusal = match err {
            AppError::RateLimited { retry_after_ms } => {
                Refusal::RateLimited(now + Duration::from_millis(*retry_after_ms))
            }
            AppError::Unavailable(_) => Refusal::Unavailable,
            _ => return,
        };
        if !self.gates.contains_key(graph) && self.gates.len() >= MAX_GATES {
            self.gates.retain(|_, g| now < g.refused_at + MAX_HOLD);
            if self.gates.len() >= MAX_GATES {
                let oldest = self
                    .gates
                    .iter()
                    .min_by_key(|(_, g)| g.refused_at)
                    .map(|(graph, _)| graph.clone());
                if let Some(oldest) = oldest {
                    self.gates.remove(&oldest);
                }
            }
        }
        self.gates.insert(
            graph.to_string(),
            Gate {
                operation_id: operation_id.to_string(),
                refused_at: now,
                refusal,
            },
        );
    }

    /// The socket left the graph: its commands of it start afresh.
    pub(crate) fn open(&mut self, graph: &str) {
        self.gates.remove(graph);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(ms: u64) -> AppError {
        AppError::RateLimited { retry_after_ms: ms }
    }

    #[test]
    fn later_commands_wait_until_the_refused_one_comes_again() {
        let mut gates = CommandGates::default();
        let t0 = Instant::now();
        assert!(gates.check("g", "a", t0).is_none());
        gates.refused("g", "a", &limited(100), t0);

        // Even after the wait is over: "a" has not come back.
        let later = gates.check("g", "b", t0 + Duration::from_millis(40));
        assert!(matches!(
            later,
            Some(AppError::RateLimited { retry_after_ms: 60 })
        ));
        let past = gates.check("g", "c", t0 + Duration::from_millis(500));
        assert!(matches!(
            past,
            Some(AppError::RateLimited { retry_after_ms: 1 })
        ));
        assert!(
            gates.check("other", "b", t0).is_none(),
            "other graphs are not held"
        );

        assert!(
            gates
                .check("g", "a", t0 + Duration::from_millis(500))
                .is_none()
        );
        assert!(
            gates
                .check("g", "b", t0 + Duration::from_millis(500))
                .is_none()
        );
    }

    #[test]
    fn only_refusals_for_now_close_a_gate_and_unavailable_holds_with_its_code() {
        let mut gates = CommandGates::default();
        let t0 = Instant::now();
        gates.refused("g", "a", &AppError::Forbidden("no".into()), t0);
        assert!(gates.check("g", "b", t0).is_none());
        gates.refused("g", "a", &AppError::Unavailable("redis".into()), t0);
        assert_eq!(
            gates
                .check("g", "b", t0)
                .map(|e| e.code().to_string())
                .as_deref(),
            Some("UNAVAILABLE")
        );
    }

    #[test]
    fn a_gate_opens_after_its_longest_hold_or_when_the_graph_is_left() {
        let mut gates = CommandGates::default();
        let t0 = Instant::now();
        gates.refused("g", "a", &limited(10), t0);
        assert!(
            gates
                .check("g", "b", t0 + MAX_HOLD - Duration::from_millis(1))
                .is_some()
        );
        assert!(gates.check("g", "b", t0 + MAX_HOLD).is_none());

        gates.refused("g", "a", &limited(10), t0);
        gates.open("g");
        assert!(gates.check("g", "b", t0).is_none());
    }

    #[test]
    fn at_most_max_gates_the_oldest_opening_first() {
        let mut gates = CommandGates::default();
        let t0 = Instant::now();
        for i in 0..MAX_GATES + 1 {
            let at = t0 + Duration::from_millis(i as u64);
            gates.refused(&format!("g{i}"), "a", &limited(10_000), at);
        }
        assert_eq!(gates.gates.len(), MAX_GATES);
        let now = t0 + Duration::from_secs(1);
        assert!(
            gates.check("g0", "b", now).is_none(),
            "the oldest made room"
        );
        assert!(gates.check("g1", "b", now).is_some());
        assert!(gates.check(&format!("g{MAX_GATES}"), "b", now).is_some());
    }
}
