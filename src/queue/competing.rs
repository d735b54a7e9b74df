//! Priority queues: competing consumers over three priority streams per
//! partition, higher levels drained first.
//!
//! A reader task per partition fetches as many jobs as there are free
//! concurrency slots (high first, then normal, then low; blocking on all three
//! when empty) and runs each in its own task. Finished jobs are acknowledged
//! in batches by an acker task. Failed jobs are rescheduled through the
//! delayed set, so a retry never holds a slot. Entries whose worker died are
//! taken over after `stall_timeout_ms`; live workers refresh the claim on what
//! they are running so long jobs are not taken from them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::db::Conn;
use redis::Value;
use redis::streams::StreamReadReply;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::scripts::SCRIPTS;

use super::worker::{Ctx, Processor, ensure_group, is_nogroup, sleep_or_stop};
use super::{GROUP, Job, JobError, JobEventKind, Priority, QueueError, limiter};

/// Entries this worker is running, per stream, so their claims can be refreshed.
/// A std Mutex: nothing is awaited while it is held.
type InFlight = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// A finished job waiting to be acknowledged: (stream, entry id, job id).
type Finished = (String, String, String);

pub(crate) async fn run<P: Processor>(ctx: Arc<Ctx<P>>) -> Result<(), QueueError> {
    let parts = TaskTracker::new();
    for p in ctx.queue.partitions() {
        parts.spawn(run_partition(ctx.clone(), p));
    }
    parts.close();
    parts.wait().await;
    Ok(())
}

async fn run_partition<P: Processor>(ctx: Arc<Ctx<P>>, p: u16) {
    let opts = ctx.queue.options().clone();
    let q = ctx.queue.name().to_string();
    let streams: Vec<String> = Priority::ALL
        .iter()
        .map(|prio| ctx.queue.keys().stream(&q, p, prio.lane()))
        .collect();
    let slots = Arc::new(Semaphore::new(opts.concurrency));
    let in_flight: InFlight = Arc::default();
    let jobs = TaskTracker::new();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Finished>();
    let stop_helpers = CancellationToken::new();
    let helpers = TaskTracker::new();
    helpers.spawn(acker(ctx.clone(), p, ack_rx));
    helpers.spawn(refresher(
        ctx.clone(),
        in_flight.clone(),
        stop_helpers.clone(),
    ));

    let mut conn = loop {
        match ctx.queue.redis().dedicated().await {
            Ok(c) => break c,
            Err(err) => {
                tracing::warn!(queue = %q, %err, "no connection for reader, retrying");
                if !sleep_or_stop(Duration::from_millis(500), &ctx.shutdown).await {
                    return;
                }
            }
        }
    };
    let mut last_reclaim = tokio::time::Instant::now();
    let reclaim_every =
        Duration::from_millis(opts.stall_timeout_ms / 2).max(Duration::from_millis(10));
    let mut backoff = Duration::from_millis(20);
    while !ctx.shutdown.is_cancelled() {
        if *ctx.paused.borrow() {
            sleep_or_stop(Duration::from_millis(opts.pause_poll_ms), &ctx.shutdown).await;
            continue;
        }
        // Wait for at least one free slot, then take as many jobs as slots are free.
        let first = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let free = (slots.available_permits() + 1).min(opts.batch_size);
        let fetched = if last_reclaim.elapsed() >= reclaim_every {
            last_reclaim = tokio::time::Instant::now();
            reclaim(&ctx, &mut conn, &streams, p, free).await
        } else {
            read(&ctx, &mut conn, &streams, p, free).await
        };
        let fetched = match fetched {
            Ok(f) => {
                backoff = Duration::from_millis(20);
                f
            }
            Err(e) => {
                if is_nogroup(&e) {
                    for s in &streams {
                        let _ = ensure_group(&mut conn, s).await;
                    }
                } else {
                    tracing::warn!(queue = %q, %e, "read failed, retrying");
                    sleep_or_stop(backoff, &ctx.shutdown).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                drop(first);
                continue;
            }
        };
        let mut permit = Some(first);
        for (stream, job) in fetched {
            let permit = match permit.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            in_flight
                .lock()
                .expect("in-flight lock")
                .entry(stream.clone())
                .or_default()
                .insert(job.entry_id.clone());
            let ctx = ctx.clone();
            let ack_tx = ack_tx.clone();
            let in_flight = in_flight.clone();
            jobs.spawn(async move {
                let finished = run_job(&ctx, &stream, &job).await;
                if let Some(f) = finished {
                    let _ = ack_tx.send(f);
                }
                if let Some(set) = in_flight.lock().expect("in-flight lock").get_mut(&stream) {
                    set.remove(&job.entry_id);
                }
                drop(permit);
            });
        }
    }

    // Stop reading; let running jobs finish within the grace period; flush acks.
    jobs.close();
    let grace = Duration::from_millis(opts.shutdown_timeout_ms);
    if tokio::time::timeout(grace, jobs.wait()).await.is_err() {
        tracing::warn!(queue = %q, "jobs outlived the shutdown timeout; leaving them pending");
    }
    drop(ack_tx);
    stop_helpers.cancel();
    helpers.close();
    // The acker flushes what finished; with Redis gone it would retry, and
    // unacknowledged jobs are picked up by another worker anyway.
    if tokio::time::timeout(grace, helpers.wait()).await.is_err() {
        tracing::warn!(queue = %q, "acknowledgements not flushed before the shutdown timeout");
    }
}

/// Reads up to `want` new jobs, highest priority first.
async fn read<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    streams: &[String],
    p: u16,
    want: usize,
) -> Result<Vec<(String, Job)>, QueueError> {
    let mut out = Vec::new();
    for stream in streams {
        let left = want - out.len();
        if left == 0 {
            break;
        }
        let reply: Option<StreamReadReply> = xreadgroup(ctx, left, None, &[stream.as_str()])
            .query_async(conn)
            .await?;
        collect(ctx, conn, p, reply, &mut out).await;
    }
    if out.is_empty() {
        let all: Vec<&str> = streams.iter().map(String::as_str).collect();
        let block = ctx.queue.options().block_ms;
        let reply: Option<StreamReadReply> = xreadgroup(ctx, want, Some(block), &all)
            .query_async(conn)
            .await?;
        collect(ctx, conn, p, reply, &mut out).await;
        // One blocking read may return several levels: keep them in priority order.
        out.sort_by_key(|(s, _)| streams.iter().position(|x| x == s));
    }
    Ok(out)
}

fn xreadgroup<P>(ctx: &Ctx<P>, count: usize, block: Option<u64>, streams: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(&ctx.id)
        .arg("COUNT")
        .arg(count);
    if let Some(ms) = block {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS");
    for s in streams {
        cmd.arg(*s);
    }
    for _ in streams {
        cmd.arg(">");
    }
    cmd
}

async fn collect<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    p: u16,
    reply: Option<StreamReadReply>,
    out: &mut Vec<(String, Job)>,
) {
    for k in reply.map(|r| r.keys).unwrap_or_default() {
        let jobs = ctx.decode(conn, &k.key, p, k.ids, &HashMap::new()).await;
        out.extend(jobs.into_iter().map(|j| (k.key.clone(), j)));
    }
}

/// Takes over entries left pending longer than the stall timeout.
async fn reclaim<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    streams: &[String],
    p: u16,
    want: usize,
) -> Result<Vec<(String, Job)>, QueueError> {
    let idle = ctx.queue.options().stall_timeout_ms;
    let mut out = Vec::new();
    for stream in streams {
        let jobs = ctx.reclaim(conn, stream, p, idle, want).await?;
        out.extend(jobs.into_iter().map(|j| (stream.clone(), j)));
    }
    if out.is_empty() {
        return read(ctx, conn, streams, p, want).await;
    }
    Ok(out)
}

/// Runs one job to its outcome for this delivery. Returns what to acknowledge.
async fn run_job<P: Processor>(ctx: &Ctx<P>, stream: &str, job: &Job) -> Option<Finished> {
    let opts = ctx.queue.options();
    if opts.rate_limit.is_some() || opts.key_rate_limit.is_some() {
        let key = job.rate_key.as_deref().or(job.key.as_deref());
        loop {
            match limiter::admit(&ctx.queue, &[key]).await {
                Ok((1, _)) => break,
                Ok((_, wait)) => {
                    ctx.emit(
                        &job.id,
                        job.partition,
                        JobEventKind::RateLimited {
                            wait_ms: wait.as_millis() as u64,
                        },
                    );
                    limiter::record_limited(&ctx.queue, job.partition).await;
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "rate limiter unreachable; job stays pending");
                    return None;
                }
            }
        }
    }
    let err = match ctx.processor.process(job).await {
        Ok(()) => return Some((stream.to_string(), job.entry_id.clone(), job.id.clone())),
        Err(e) => e,
    };
    let mut conn = ctx.queue.redis().conn();
    let failed = job.attempts_made + 1;
    let message = err.to_string();
    let result = if matches!(err, JobError::Permanent(_)) || !opts.retry.allows_retry(failed) {
        ctx.dead_letter(&mut conn, stream, job, &message, failed)
            .await
    } else {
        reschedule(ctx, &mut conn, stream, job, failed, &message).await
    };
    if let Err(e) = result {
        tracing::warn!(job_id = %job.id, %e, "could not settle a failed job; it stays pending");
    }
    None
}

async fn reschedule<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    job: &Job,
    failed: u32,
    message: &str,
) -> Result<(), QueueError> {
    let opts = ctx.queue.options();
    let keys = ctx.queue.keys();
    let q = ctx.queue.name();
    let p = job.partition;
    let delay = opts.retry.delay(failed, Ctx::<P>::jitter());
    let mut inv = SCRIPTS.reschedule.prepare_invoke();
    inv.key(stream)
        .key(keys.attempts(q, p))
        .key(keys.delayed(q, p))
        .key(keys.delayed_jobs(q, p))
        .key(keys.counters(q, p))
        .key(keys.events(q, p))
        .arg(GROUP)
        .arg(&job.entry_id)
        .arg(&job.id)
        .arg(delay.as_millis() as u64)
        .arg(message)
        .arg(opts.events_max_len);
    for (f, v) in job.fields(failed) {
        inv.arg(f).arg(v);
    }
    let moved: u8 = inv.invoke_async(conn).await?;
    if moved == 1 {
        ctx.emit(
            &job.id,
            p,
            JobEventKind::Retrying {
                attempt: failed,
                delay_ms: delay.as_millis() as u64,
                error: message.to_string(),
            },
        );
    }
    Ok(())
}

/// Acknowledges finished jobs in batches, grouped by stream.
async fn acker<P: Processor>(ctx: Arc<Ctx<P>>, p: u16, mut rx: mpsc::UnboundedReceiver<Finished>) {
    let mut conn = ctx.queue.redis().conn();
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 512).await > 0 {
        let mut by_stream: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (stream, entry, job) in buf.drain(..) {
            by_stream.entry(stream).or_default().push((entry, job));
        }
        for (stream, done) in by_stream {
            let mut delay = Duration::from_millis(20);
            // Retry through Redis hiccups; an unacknowledged job would run again.
            for _ in 0..8 {
                match ctx.ack(&mut conn, &stream, p, &done, false).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(%err, "ack failed, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// Keeps the claims of running jobs fresh so they are not taken as stalled.
async fn refresher<P: Processor>(ctx: Arc<Ctx<P>>, in_flight: InFlight, stop: CancellationToken) {
    let every = Duration::from_millis((ctx.queue.options().stall_timeout_ms / 3).max(5));
    let mut conn = ctx.queue.redis().conn();
    while sleep_or_stop(every, &stop).await {
        let snapshot: Vec<(String, Vec<String>)> = in_flight
            .lock()
            .expect("in-flight lock")
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(s, ids)| (s.clone(), ids.iter().cloned().collect()))
            .collect();
        for (stream, ids) in snapshot {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&stream)
                .arg(GROUP)
                .arg(&ctx.id)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID");
            if let Err(err) = cmd.query_async::<Value>(&mut conn).await {
                tracing::debug!(%err, "could not refresh in-flight claims");
            }
        }
    }
}
