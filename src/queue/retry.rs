//! Retry policy: how many attempts, and how long to wait between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with bounded jitter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries.
    pub attempts: u32,
    /// Delay after the first failed attempt, before jitter.
    pub backoff_base_ms: u64,
    /// No delay exceeds this.
    pub backoff_cap_ms: u64,
    /// Fraction of each delay that is random, in [0, 1]. At 0.5 the delay after
    /// failure n lies in [d/2, d] with d = base * 2^(n-1), so consecutive delays
    /// never overlap and always grow until the cap.
    pub backoff_jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff_base_ms: 100,
            backoff_cap_ms: 30_000,
            backoff_jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt once `failed` attempts have failed (`failed >= 1`).
    /// `unit` is a random number in [0, 1).
    pub fn delay(&self, failed: u32, unit: f64) -> Duration {
        let exp = failed.saturating_sub(1).min(40);
        let full = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_cap_ms) as f64;
        let jitter = self.backoff_jitter.clamp(0.0, 1.0);
        Duration::from_millis((full * (1.0 - jitter * unit.clamp(0.0, 1.0))).round() as u64)
    }

    /// Whether another attempt is allowed once `failed` attempts have failed.
    pub fn allows_retry(&self, failed: u32) -> bool {
        failed < self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
            backoff_jitter: 0.0,
        };
        let ms: Vec<u64> = (1..=6)
            .map(|n| p.delay(n, 0.7).as_millis() as u64)
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_within_bounds_and_delays_still_grow() {
        let p = RetryPolicy::default();
        for n in 1..8 {
            let full = (100u64 << (n - 1)).min(30_000);
            for unit in [0.0, 0.25, 0.5, 0.99] {
                let d = p.delay(n, unit).as_millis() as u64;
                assert!(d <= full && d >= full / 2, "n={n} unit={unit} d={d}");
            }
            assert!(p.delay(n + 1, 0.99) >= p.delay(n, 0.0));
        }
    }

    #[test]
    fn attempts_count_the_first_try() {
        let p = RetryPolicy::default();
        assert!(p.allows_retry(1));
        assert!(p.allows_retry(2));
        assert!(!p.allows_retry(3));
    }
}
