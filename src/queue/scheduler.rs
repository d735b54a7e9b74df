//! Time-driven work: promoting due delayed jobs (every worker, for every
//! partition; the script is atomic so doing it twice is harmless) and adding
//! repeatable jobs (only the worker holding the scheduler lease).
//!
//! A repeatable job is added at most once per period slot: its job id is
//! `repeat:NAME:SLOT` and goes through the dedupe window, so even two leaders
//! during a lease handover cannot add it twice. A slot missed while no leader
//! ran is skipped, not caught up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::db::now_ms;
use crate::scripts::SCRIPTS;

use super::worker::{Ctx, Processor, sleep_or_stop};
use super::{NewJob, Priority, Queue, QueueError};

/// A repeatable job as stored in `{q:QUEUE}:repeat`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Repeatable {
    every_ms: u64,
    name: String,
    data: String,
    key: Option<String>,
    priority: Priority,
}

pub(crate) async fn add_repeatable(
    queue: &Queue,
    name: &str,
    every: Duration,
    job: NewJob,
) -> Result<(), QueueError> {
    let every_ms = every.as_millis() as u64;
    if every_ms == 0 {
        return Err(QueueError::InvalidJob(
            "a repeatable job needs every > 0".into(),
        ));
    }
    let def = Repeatable {
        every_ms,
        name: job.name,
        data: job.data,
        key: job.key,
        priority: job.priority,
    };
    let json = serde_json::to_string(&def).map_err(|e| QueueError::InvalidJob(e.to_string()))?;
    let mut conn = queue.redis().conn();
    let _: () = conn
        .hset(queue.keys().repeatables(queue.name()), name, json)
        .await?;
    Ok(())
}

pub(crate) async fn promote_loop<P: Processor>(ctx: Arc<Ctx<P>>, stop: CancellationToken) {
    let opts = ctx.queue.options();
    let keys = ctx.queue.keys();
    let q = ctx.queue.name();
    let interval = Duration::from_millis(opts.promote_interval_ms);
    let mut conn = ctx.queue.redis().conn();
    let invocations: Vec<_> = ctx
        .queue
        .partitions()
        .map(|p| {
            let mut inv = SCRIPTS.promote.prepare_invoke();
            inv.key(keys.delayed(q, p))
                .key(keys.delayed_jobs(q, p))
                .key(keys.stream(q, p, Priority::High.lane()))
                .key(keys.stream(q, p, Priority::Normal.lane()))
                .key(keys.stream(q, p, Priority::Low.lane()))
                .arg(opts.batch_size);
            inv
        })
        .collect();
    let mut pipe = redis::pipe();
    for inv in &invocations {
        pipe.invoke_script(inv);
    }
    loop {
        let mut next = interval;
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            r = crate::scripts::query_pipeline::<Vec<(u64, i64)>, _>(&pipe, &mut conn) => r,
        };
        match reply {
            Ok(replies) => {
                for (moved, wait) in replies {
                    if moved as usize >= opts.batch_size {
                        next = Duration::ZERO;
                    } else if wait >= 0 {
                        next = next.min(Duration::from_millis(wait as u64));
                    }
                }
            }
            Err(err) => tracing::debug!(%err, "promotion failed, retrying"),
        }
        if !sleep_or_stop(next, &stop).await {
            return;
        }
    }
}

pub(crate) async fn repeat_loop<P: Processor>(ctx: Arc<Ctx<P>>, stop: CancellationToken) {
    let opts = ctx.queue.options();
    let keys = ctx.queue.keys();
    let q = ctx.queue.name();
    let mut conn = ctx.queue.redis().conn();
    let mut tick = Duration::from_millis(opts.heartbeat_ms);
    loop {
        let mut claim = SCRIPTS.lease_claim.prepare_invoke();
        claim
            .key(keys.scheduler_leader(q))
            .arg(&ctx.id)
            .arg(opts.lease_ttl_ms);
        let leader = tokio::select! {
            _ = stop.cancelled() => return,
            r = claim.invoke_async::<u8>(&mut conn) => r,
        };
        if matches!(leader, Ok(1)) {
            let due = tokio::select! {
                _ = stop.cancelled() => return,
                r = run_due(&ctx.queue, &mut conn) => r,
            };
            match due {
                Ok(shortest) => {
                    if let Some(every) = shortest {
                        tick = Duration::from_millis((every / 4).clamp(10, opts.heartbeat_ms));
                    }
                }
                Err(err) => tracing::warn!(queue = q, %err, "repeatable jobs not added this round"),
            }
        }
        if !sleep_or_stop(tick, &stop).await {
            let mut release = SCRIPTS.lease_release.prepare_invoke();
            release.key(keys.scheduler_leader(q)).arg(&ctx.id);
            let call = release.invoke_async::<u8>(&mut conn);
            let _ = tokio::time::timeout(Duration::from_millis(500), call).await;
            return;
        }
    }
}

/// Adds every repeatable job whose current slot has not been added yet.
/// Returns the shortest period, to tick often enough.
async fn run_due(queue: &Queue, conn: &mut crate::db::Conn) -> Result<Option<u64>, QueueError> {
    let keys = queue.keys();
    let q = queue.name();
    let defs: HashMap<String, String> = conn.hgetall(keys.repeatables(q)).await?;
    if defs.is_empty() {
        return Ok(None);
    }
    let last: HashMap<String, u64> = conn.hgetall(keys.repeat_last(q)).await?;
    let now = now_ms();
    let mut shortest = u64::MAX;
    for (name, json) in defs {
        let Ok(def) = serde_json::from_str::<Repeatable>(&json) else {
            tracing::warn!(queue = q, name, "unreadable repeatable job definition");
            continue;
        };
        shortest = shortest.min(def.every_ms);
        let slot = now / def.every_ms;
        if last.get(&name).is_some_and(|l| *l >= slot) {
            continue;
        }
        let mut job = NewJob::new(def.name, def.data)
            .id(format!("repeat:{name}:{slot}"))
            .priority(def.priority);
        job.key = def.key;
        queue.add(job).await?;
        let _: () = conn.hset(keys.repeat_last(q), &name, slot).await?;
    }
    Ok(Some(shortest))
}
