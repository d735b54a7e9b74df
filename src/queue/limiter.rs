//! Rate limits shared by every replica, enforced atomically in Redis.
//!
//! A limit is "at most `max` jobs per `duration_ms`" (GCRA: bursts up to
//! `max`, then evenly spaced). A limited job waits; it never fails for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scripts::SCRIPTS;

use super::{Queue, QueueError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub max: u64,
    pub duration_ms: u64,
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), String> {
        if self.max == 0 || self.duration_ms == 0 {
            return Err("rate limits need max > 0 and duration_ms > 0".into());
        }
        Ok(())
    }
}

/// Takes up to `want` permits from the limiter at `key`. Returns how many were
/// granted and, when fewer than asked, how long to wait before asking again.
pub async fn take(
    queue: &Queue,
    key: &str,
    limit: &RateLimit,
    want: usize,
) -> Result<(usize, Duration), QueueError> {
    let (granted, wait) = invoke(queue, key, limit, want, "").await?;
    Ok((granted, wait))
}

/// Takes `want` permits from the limiter at `key` all at once, or none.
/// Returns whether they were granted and, when not, how long to wait until
/// there is room for all of them (`want` must not exceed `limit.max`, or no
/// wait is long enough).
pub async fn take_all(
    queue: &Queue,
    key: &str,
    limit: &RateLimit,
    want: usize,
) -> Result<(bool, Duration), QueueError> {
    let (granted, wait) = invoke(queue, key, limit, want, "all").await?;
    Ok((granted == want, wait))
}

/// One call of `lua/rate_limit.lua`; `mode` is its ARGV[4] ("" or "all").
async fn invoke(
    queue: &Queue,
    key: &str,
    limit: &RateLimit,
    want: usize,
    mode: &str,
) -> Result<(usize, Duration), QueueError> {
    let mut conn = queue.redis().conn();
    let mut inv = SCRIPTS.rate_limit.key(key);
    inv.arg(limit.max).arg(limit.duration_ms).arg(want);
    if !mode.is_empty() {
        inv.arg(mode);
    }
    let (granted, wait_ms): (u64, u64) = inv.invoke_async(&mut conn).await?;
    Ok((granted as usize, Duration::from_millis(wait_ms)))
}

/// How many of `jobs` (in order) may run now under the queue-wide limit and
/// the per-key limit, and how long to wait before the rest. Permits granted to
/// jobs that then do not run because an earlier job was limited are not given
/// back: a limit is never exceeded, it may be briefly under-used.
pub(crate) async fn admit(
    queue: &Queue,
    rate_keys: &[Option<&str>],
) -> Result<(usize, Duration), QueueError> {
    let opts = queue.options();
    let mut allowed = rate_keys.len();
    let mut wait = Duration::ZERO;
    if let Some(limit) = &opts.rate_limit {
        let (g, w) = take(queue, &queue.keys().limiter(queue.name()), limit, allowed).await?;
        allowed = g;
        wait = wait.max(w);
    }
    if let Some(limit) = &opts.key_rate_limit {
        // Ask each key for as many permits as its jobs in the admitted prefix.
        let mut order: Vec<&str> = Vec::new();
        let mut wanted: std::collections::HashMap<&str, usize> = Default::default();
        for k in rate_keys[..allowed].iter().flatten() {
            let n = wanted.entry(k).or_insert(0);
            if *n == 0 {
                order.push(k);
            }
            *n += 1;
        }
        let mut granted: std::collections::HashMap<&str, usize> = Default::default();
        for k in order {
            let key = queue.keys().key_limiter(queue.name(), k);
            let (g, w) = take(queue, &key, limit, wanted[k]).await?;
            granted.insert(k, g);
            if g < wanted[k] {
                wait = wait.max(w);
            }
        }
        // The admitted prefix ends at the first job whose key ran out.
        for (i, k) in rate_keys[..allowed].iter().enumerate() {
            if let Some(k) = k {
                let left = granted.get_mut(k).expect("every key was asked");
                if *left == 0 {
                    allowed = i;
                    break;
                }
                *left -= 1;
            }
        }
    }
    Ok((allowed, wait))
}

/// Counts a wait for a rate limit in the partition's lifetime counters.
pub(crate) async fn record_limited(queue: &Queue, partition: u16) {
    let r: redis::RedisResult<i64> = redis::cmd("HINCRBY")
        .arg(queue.keys().counters(queue.name(), partition))
        .arg("rate_limited")
        .arg(1)
        .query_async(&mut queue.redis().conn())
        .await;
    if let Err(err) = r {
        tracing::debug!(%err, "rate_limited counter not updated");
    }
}
