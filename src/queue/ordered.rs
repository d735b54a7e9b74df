//! Ordered queues: each partition is leased to one live worker, which reads it
//! in batches and processes it strictly in stream order.
//!
//! A coordinator loop (every `heartbeat_ms`) registers the worker, computes
//! which partitions it should own ([`super::assign`]), renews their leases,
//! starts a task for each newly won partition and asks tasks of partitions it
//! should give up to finish their batch and release the lease. A partition
//! task first takes over whatever earlier owners left pending (crash
//! recovery), then reads new entries. Between batches it also sweeps its
//! partition every `lease_ttl_ms` for entries pending with nobody working on
//! them (a failover can leave such entries with the owner's own consumer).
//! A task that stops gracefully waits for its read in progress and hands
//! back, with its lease, the entries it read but never started, so none is
//! left pending for the next owner.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::db::Conn;
use redis::streams::StreamReadReply;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::scripts::SCRIPTS;

use super::worker::{Ctx, Processor, Settled, ensure_group, highest_id, is_nogroup, sleep_or_stop};
use super::{GROUP, Job, JobError, JobEventKind, Priority, QueueError, assign, limiter};

/// A partition this worker runs.
struct Owned {
    /// Asks the partition task to finish its batch and hand the lease back.
    stop: CancellationToken,
    /// Fired by the task when it has exited, whatever the reason.
    done: CancellationToken,
}

pub(crate) async fn run<P: Processor>(ctx: Arc<Ctx<P>>) -> Result<(), QueueError> {
    let opts = ctx.queue.options().clone();
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = JoinSet::new();
    let mut owned: HashMap<u16, Owned> = HashMap::new();
    let mut conn = ctx.queue.redis().conn();
    let mut tick = tokio::time::interval(Duration::from_millis(opts.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        while tasks.try_join_next().is_some() {}
        // A heartbeat waits on Redis (up to the response timeout when Redis
        // is gone): shutdown must not wait for it.
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = heartbeat(&ctx, &mut conn, &mut owned, &mut tasks, &sem) => {
                if let Err(err) = r {
                    tracing::warn!(queue = ctx.queue.name(), %err, "partition heartbeat failed");
                }
            }
        }
    }

    // Graceful stop: partition tasks finish their batch and release their leases.
    for o in owned.values() {
        o.stop.cancel();
    }
    let grace = Duration::from_millis(opts.shutdown_timeout_ms);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            queue = ctx.queue.name(),
            "in-flight batches outlived the shutdown timeout; leaving them pending"
        );
        tasks.abort_all();
    }
    release(&ctx, &mut conn, owned.keys().copied()).await;
    let mut deregister = SCRIPTS.register_worker.prepare_invoke();
    deregister
        .key(ctx.queue.keys().workers(ctx.queue.name()))
        .arg(&ctx.id)
        .arg(0);
    let call = deregister.invoke_async::<Vec<String>>(&mut conn);
    let _ = tokio::time::timeout(CLEANUP_DEADLINE, call).await;
    Ok(())
}

async fn heartbeat<P: Processor>(
    ctx: &Arc<Ctx<P>>,
    conn: &mut Conn,
    owned: &mut HashMap<u16, Owned>,
    tasks: &mut JoinSet<()>,
    sem: &Arc<Semaphore>,
) -> Result<(), QueueError> {
    let opts = ctx.queue.options();
    let keys = ctx.queue.keys();
    let q = ctx.queue.name();
    let live: Vec<String> = SCRIPTS
        .register_worker
        .key(keys.workers(q))
        .arg(&ctx.id)
        .arg(opts.lease_ttl_ms)
        .invoke_async(conn)
        .await?;
    let desired: HashSet<u16> = assign::desired(opts.partitions, &live, &ctx.id)
        .into_iter()
        .collect();

    owned.retain(|_, o| !o.done.is_cancelled());
    for (p, o) in owned.iter() {
        if !desired.contains(p) {
            o.stop.cancel();
        }
    }
    // Renew what we run (including partitions still finishing a batch), claim
    // what we should run.
    let wanted: Vec<u16> = owned
        .keys()
        .copied()
        .chain(desired.iter().copied().filter(|p| !owned.contains_key(p)))
        .collect();
    let mut pipe = redis::pipe();
    let invocations: Vec<_> = wanted
        .iter()
        .map(|p| {
            let mut inv = SCRIPTS.lease_claim.prepare_invoke();
            inv.key(keys.lease(q, *p))
                .arg(&ctx.id)
                .arg(opts.lease_ttl_ms);
            inv
        })
        .collect();
    for inv in &invocations {
        pipe.invoke_script(inv);
    }
    let held: Vec<u8> = crate::scripts::query_pipeline(&pipe, conn).await?;
    for (p, ok) in wanted.into_iter().zip(held) {
        match (owned.get(&p), ok == 1) {
            (Some(o), false) => {
                tracing::warn!(queue = q, partition = p, "lease lost; stopping partition");
                o.stop.cancel();
            }
            (None, true) => {
                let o = Owned {
                    stop: CancellationToken::new(),
                    done: CancellationToken::new(),
                };
                tasks.spawn(partition_task(
                    ctx.clone(),
                    p,
                    o.stop.clone(),
                    o.done.clone(),
                    sem.clone(),
                ));
                owned.insert(p, o);
                tracing::debug!(queue = q, partition = p, "partition acquired");
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a partition task took from its stream, so that a graceful stop can
/// hand back what it read but never started.
#[derive(Default)]
struct Taken {
    /// Highest entry id given to the processor. A task reads in stream
    /// order, so an entry pending with its consumer beyond this one was
    /// delivered and never started: read after the stop, or the rest of a
    /// batch the stop interrupted (behind a rate limit, a retry).
    started: Option<String>,
    /// A takeover was cut short: it may have claimed earlier owners' entries
    /// it never returned, and those stay pending for the next owner.
    claim_cut: bool,
}

impl Taken {
    /// Records that `jobs` go to the processor now. A sweep may take over
    /// entries older than ones already run: the highest stays.
    fn start(&mut self, jobs: &[Job]) {
        if jobs.is_empty() {
            return;
        }
        let ids = jobs.iter().map(|j| j.entry_id.as_str());
        let highest = highest_id(ids.chain(self.started.as_deref()));
        self.started = Some(highest.to_string());
    }

    /// From which entry on pending entries go back to the stream: `Some("-")`
    /// for all of them, None for none.
    fn hand_back_after(&self) -> Option<&str> {
        match (&self.started, self.claim_cut) {
            (Some(id), _) => Some(id),
            (None, false) => Some("-"),
            (None, true) => None,
        }
    }
}

/// Best-effort cleanup calls get this long: when Redis is gone, a lease
/// expires by itself and shutdown must not wait on reconnect backoff.
const CLEANUP_DEADLINE: Duration = Duration::from_millis(500);

async fn release<P>(ctx: &Ctx<P>, conn: &mut Conn, parts: impl Iterator<Item = u16>) {
    let invocations: Vec<_> = parts
        .map(|p| {
            let mut inv = SCRIPTS.lease_release.prepare_invoke();
            inv.key(ctx.queue.keys().lease(ctx.queue.name(), p))
                .arg(&ctx.id);
            inv
        })
        .collect();
    if invocations.is_empty() {
        return;
    }
    // One round trip, one deadline for all of them.
    let mut pipe = redis::pipe();
    for inv in &invocations {
        pipe.invoke_script(inv).ignore();
    }
    match tokio::time::timeout(CLEANUP_DEADLINE, pipe.exec_async(conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "could not release leases; they will expire"),
        Err(_) => tracing::warn!("redis did not answer; the leases will expire"),
    }
}

async fn partition_task<P: Processor>(
    ctx: Arc<Ctx<P>>,
    p: u16,
    stop: CancellationToken,
    done: CancellationToken,
    sem: Arc<Semaphore>,
) {
    let _done = done.drop_guard();
    let stream = ctx
        .queue
        .keys()
        .stream(ctx.queue.name(), p, Priority::Normal.lane());
    let mut conn = match ctx.queue.redis().dedicated().await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(partition = p, %err, "no connection for partition");
            return;
        }
    };
    let mut taken = Taken::default();
    let mut unacked = Vec::new();
    let result = run_partition(
        &ctx,
        &mut conn,
        &stream,
        p,
        &stop,
        &sem,
        &mut taken,
        &mut unacked,
    )
    .await;
    // Settled entries whose ack was to travel with the next read.
    if let Err(err) = ack_with_retry(&ctx, &mut conn, &stream, p, &unacked, &stop).await {
        tracing::warn!(partition = p, %err, "settled entries left unacknowledged; the next owner finds them done");
    }
    let after = match result {
        Ok(()) => taken.hand_back_after(),
        Err(err) => {
            tracing::warn!(queue = ctx.queue.name(), partition = p, %err, "partition stopped; it will be picked up again");
            None
        }
    };
    hand_back(&ctx, &stream, p, after).await;
}

/// Gives the lease of `p` back, and the entries this worker has pending in
/// `stream` after `after` (see `lua/lease_hand_back.lua`).
async fn hand_back<P>(ctx: &Ctx<P>, stream: &str, p: u16, after: Option<&str>) {
    let mut inv = SCRIPTS.lease_hand_back.prepare_invoke();
    inv.key(ctx.queue.keys().lease(ctx.queue.name(), p))
        .key(stream)
        .arg(&ctx.id)
        .arg(GROUP)
        .arg(after.unwrap_or(""))
        .arg(ctx.queue.options().batch_size);
    let mut conn = ctx.queue.redis().conn();
    let call = inv.invoke_async::<(u8, u64)>(&mut conn);
    match tokio::time::timeout(CLEANUP_DEADLINE, call).await {
        Ok(Ok((_, 0))) => {}
        Ok(Ok((_, n))) => {
            tracing::debug!(
                queue = ctx.queue.name(),
                partition = p,
                entries = n,
                "unstarted entries handed back"
            );
        }
        Ok(Err(err)) => tracing::warn!(%err, "could not release a lease; it will expire"),
        Err(_) => tracing::warn!("redis did not answer; the lease will expire"),
    }
}

/// Runs partition `p` until stopped. Entries settled by a batch are
/// acknowledged with the next read, in the same round trip (`unacked` holds
/// them until then; the caller acknowledges what is left when this returns).
#[allow(clippy::too_many_arguments)]
async fn run_partition<P: Processor>(
    ctx: &Arc<Ctx<P>>,
    conn: &mut Conn,
    stream: &str,
    p: u16,
    stop: &CancellationToken,
    sem: &Semaphore,
    taken: &mut Taken,
    unacked: &mut Vec<(String, String)>,
) -> Result<(), QueueError> {
    let opts = ctx.queue.options();
    ensure_group(conn, stream).await?;
    // Entries pending with nobody working on them can appear after the
    // start-up takeover: a worker that lost the lease while Redis failed
    // over may have a read executed for it late (its client retries) and
    // never see the reply; a failover can lose the XACK of entries the owner
    // settled, so they are pending again with the owner's own consumer. A
    // `>` read never returns them, so the owner sweeps between batches, every
    // `lease_ttl_ms`, for entries idle that long: they move no later than a
    // crashed worker's would, and a previous owner still finishing its
    // batch is not robbed of it.
    let sweep_every = Duration::from_millis(opts.lease_ttl_ms);
    let mut next_sweep = tokio::time::Instant::now() + sweep_every;
    // Some(min idle ms) while taking over pending entries, None while reading
    // new ones. At the start everything pending is an earlier owner's.
    let mut take_over = Some(0);
    // The worker's shutdown counts at once, before its coordinator gets to
    // stop this partition: nothing read after it is started.
    let stopping = || stop.is_cancelled() || ctx.shutdown.is_cancelled();
    // When the oldest entry of `unacked` was settled (when its batch ended).
    let mut first_settled: Option<tokio::time::Instant> = None;
    while !stopping() {
        if *ctx.paused.borrow() {
            sleep_or_stop(Duration::from_millis(opts.pause_poll_ms), stop).await;
            continue;
        }
        if take_over.is_none() && tokio::time::Instant::now() >= next_sweep {
            take_over = Some(opts.lease_ttl_ms);
        }
        let read = match take_over {
            // A takeover does not block, so a stop may cut it short; what it
            // claimed then stays pending for the next owner (`Taken`).
            Some(min_idle) => {
                // A takeover must not see this worker's own settled entries.
                ack_with_retry(ctx, conn, stream, p, unacked, stop).await?;
                unacked.clear();
                tokio::select! {
                _ = stop.cancelled() => {
                    taken.claim_cut = true;
                    return Ok(());
                }
                r = ctx.reclaim(conn, stream, p, min_idle, opts.batch_size) => r,
                }
            }
            // A read is awaited even after a stop: it blocks `block_ms` at
            // most, and dropped it may still reach Redis (the request is on
            // its way, or the client retries it) and deliver entries to this
            // consumer after it handed its partition back.
            None => {
                let age = first_settled.map_or(Duration::ZERO, |t| t.elapsed());
                let wait = ack_wait(opts, unacked.len(), age);
                read_new(ctx, conn, stream, p, unacked, wait).await
            }
        };
        if unacked.is_empty() {
            first_settled = None;
        }
        let jobs = match read {
            Ok(jobs) => jobs,
            Err(e) if is_nogroup(&e) => {
                ensure_group(conn, stream).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if jobs.is_empty() {
            if take_over.take().is_some() {
                next_sweep = tokio::time::Instant::now() + sweep_every;
            }
            continue;
        }
        if take_over.is_none() && stopping() {
            // Read after the stop: handed back unstarted, with the lease.
            return Ok(());
        }
        let _permit = sem.acquire().await;
        if !process(ctx, conn, stream, p, jobs, stop, taken, unacked).await? {
            return Ok(());
        }
        if !unacked.is_empty() && first_settled.is_none() {
            first_settled = Some(tokio::time::Instant::now());
        }
    }
    Ok(())
}

/// Whether the read about to start acknowledges the `waiting` settled
/// entries (None), or leaves them to a later read and blocks at most the
/// returned time, so that they are acknowledged no later than
/// `ack_delay_ms` after the first of them settled (`age` ago), or once
/// `batch_size` wait. Deferring changes no outcome: a settled entry is
/// done, and one taken over again after a crash runs again (graph commands
/// are answered as duplicates); only pending counts and the `processed`
/// counter lag by up to `ack_delay_ms`.
fn ack_wait(opts: &super::QueueOptions, waiting: usize, age: Duration) -> Option<Duration> {
    let delay = Duration::from_millis(opts.ack_delay_ms);
    if waiting == 0 {
        return Some(Duration::from_millis(opts.block_ms));
    }
    if waiting >= opts.batch_size || age >= delay {
        return None;
    }
    Some((delay - age).min(Duration::from_millis(opts.block_ms)))
}

/// Reads new entries. With `wait` None it acknowledges `unacked` in the
/// same round trip (the ack runs at once; only the read blocks) and
/// blocks `block_ms`; otherwise it leaves them and blocks at most `wait`.
/// `unacked` is emptied once Redis answered an ack; on an error it stays,
/// to be acknowledged again (an ack is idempotent).
async fn read_new<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    p: u16,
    unacked: &mut Vec<(String, String)>,
    wait: Option<Duration>,
) -> Result<Vec<Job>, QueueError> {
    let opts = ctx.queue.options();
    let mut pipe = redis::pipe();
    let acking = wait.is_none() && !unacked.is_empty();
    if acking {
        pipe.invoke_script(&ctx.ack_invocation(stream, p, unacked, true))
            .ignore();
    }
    // BLOCK 0 would wait forever.
    let block = wait.map_or(opts.block_ms, |w| (w.as_millis() as u64).max(1));
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(&ctx.id)
        .arg("COUNT")
        .arg(opts.batch_size)
        .arg("BLOCK")
        .arg(block)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    let (reply,): (Option<StreamReadReply>,) = crate::scripts::query_pipeline(&pipe, conn).await?;
    if acking {
        unacked.clear();
    }
    let entries = reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default();
    Ok(ctx.decode(conn, stream, p, entries, &HashMap::new()).await)
}

/// Processes one batch in order; what it settles goes to `unacked`, to be
/// acknowledged with the next read. Returns false when the partition must
/// stop (shutdown or lost lease interrupted a retry).
#[allow(clippy::too_many_arguments)]
async fn process<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    p: u16,
    jobs: Vec<Job>,
    stop: &CancellationToken,
    taken: &mut Taken,
    unacked: &mut Vec<(String, String)>,
) -> Result<bool, QueueError> {
    let opts = ctx.queue.options();
    let limited = opts.rate_limit.is_some() || opts.key_rate_limit.is_some();
    let mut keep_going = true;
    let mut i = 0;
    'batch: while i < jobs.len() {
        let rest = &jobs[i..];
        let n = if limited {
            let rate_keys: Vec<Option<&str>> = rest
                .iter()
                .map(|j| j.rate_key.as_deref().or(j.key.as_deref()))
                .collect();
            let (n, wait) = limiter::admit(&ctx.queue, &rate_keys).await?;
            if n == 0 {
                ctx.emit(
                    &rest[0].id,
                    p,
                    JobEventKind::RateLimited {
                        wait_ms: wait.as_millis() as u64,
                    },
                );
                limiter::record_limited(&ctx.queue, p).await;
                if !sleep_or_stop(wait, stop).await {
                    keep_going = false;
                    break 'batch;
                }
                continue;
            }
            n
        } else {
            rest.len()
        };
        let slice = &rest[..n];
        taken.start(slice);
        let mut results = ctx.processor.process_batch(slice).await;
        if results.is_empty() {
            results.push(Err(JobError::Retry("processor returned no result".into())));
        }
        for (job, r) in slice.iter().zip(results) {
            i += 1;
            let settled = match r {
                Ok(()) => Settled::Succeeded,
                Err(e) => retry_in_place(ctx, conn, stream, job, e, stop).await?,
            };
            match settled {
                Settled::Succeeded => {
                    ctx.emit(&job.id, p, JobEventKind::Completed);
                    unacked.push((job.entry_id.clone(), job.id.clone()));
                }
                Settled::Removed => {}
                Settled::Abandoned => {
                    keep_going = false;
                    break 'batch;
                }
            }
        }
    }
    Ok(keep_going)
}

/// Retries a failed job where it stands, so the jobs behind it wait.
async fn retry_in_place<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    job: &Job,
    first_error: JobError,
    stop: &CancellationToken,
) -> Result<Settled, QueueError> {
    let mut failed = job.attempts_made + 1;
    let mut err = first_error;
    let mut outage = Duration::ZERO;
    loop {
        // Redis being away is waited out without spending the job's
        // attempts; any other failure is recorded and counted.
        let counted = !matches!(err, JobError::Unavailable(_));
        let delay = if let JobError::Unavailable(message) = &err {
            outage = (outage * 2).clamp(UNAVAILABLE_MIN_WAIT, UNAVAILABLE_MAX_WAIT);
            tracing::debug!(job = %job.id, error = %message, wait_ms = outage.as_millis() as u64,
                "redis unavailable; trying the job again");
            Some(outage)
        } else {
            outage = Duration::ZERO;
            record_retry(ctx, conn, stream, job, &err, failed).await?
        };
        let Some(delay) = delay else {
            return Ok(Settled::Removed);
        };
        if !sleep_or_stop(delay, stop).await {
            return Ok(Settled::Abandoned);
        }
        match ctx.processor.process(job).await {
            Ok(()) => return Ok(Settled::Succeeded),
            Err(e) => {
                err = e;
                if counted {
                    failed += 1;
                }
            }
        }
    }
}

/// Records failed attempt `failed` of `job` and returns the backoff before
/// the next one; dead-letters the job instead (None) when it is permanent or
/// out of attempts.
async fn record_retry<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    job: &Job,
    err: &JobError,
    failed: u32,
) -> Result<Option<Duration>, QueueError> {
    let policy = &ctx.queue.options().retry;
    let keys = ctx.queue.keys();
    let q = ctx.queue.name();
    let message = err.to_string();
    if matches!(err, JobError::Permanent(_)) || !policy.allows_retry(failed) {
        ctx.dead_letter(conn, stream, job, &message, failed).await?;
        return Ok(None);
    }
    let delay = policy.delay(failed, Ctx::<P>::jitter());
    let _: u32 = SCRIPTS
        .record_failure
        .key(keys.attempts(q, job.partition))
        .key(keys.counters(q, job.partition))
        .key(keys.events(q, job.partition))
        .arg(&job.entry_id)
        .arg(&job.id)
        .arg(&message)
        .arg(delay.as_millis() as u64)
        .arg(ctx.queue.options().events_max_len)
        .invoke_async(conn)
        .await?;
    ctx.emit(
        &job.id,
        job.partition,
        JobEventKind::Retrying {
            attempt: failed,
            delay_ms: delay.as_millis() as u64,
            error: message,
        },
    );
    Ok(Some(delay))
}

/// Bounds of the wait before retrying a job that found Redis unavailable.
const UNAVAILABLE_MIN_WAIT: Duration = Duration::from_millis(50);
const UNAVAILABLE_MAX_WAIT: Duration = Duration::from_secs(2);

/// Acknowledges, retrying through Redis hiccups: an entry processed but never
/// acknowledged would be processed again by the next owner.
async fn ack_with_retry<P: Processor>(
    ctx: &Ctx<P>,
    conn: &mut Conn,
    stream: &str,
    p: u16,
    done: &[(String, String)],
    stop: &CancellationToken,
) -> Result<(), QueueError> {
    if done.is_empty() {
        return Ok(());
    }
    // Quietly: their Completed events went out when they were settled.
    let ack = ctx.ack_invocation(stream, p, done, true);
    let mut delay = Duration::from_millis(20);
    loop {
        match ack.invoke_async::<u64>(conn).await {
            Ok(_) => return Ok(()),
            Err(err) if !stop.is_cancelled() => {
                tracing::warn!(partition = p, %err, "ack failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_entries_wait_for_an_ack_at_most_ack_delay_ms() {
        let opts = super::super::QueueOptions {
            ack_delay_ms: 50,
            batch_size: 4,
            block_ms: 1_000,
            ..Default::default()
        };
        let ms = Duration::from_millis;
        // Nothing to acknowledge: a full blocking read.
        assert_eq!(ack_wait(&opts, 0, ms(0)), Some(ms(1_000)));
        // Young entries wait; the read blocks only until they are due.
        assert_eq!(ack_wait(&opts, 1, ms(10)), Some(ms(40)));
        // Due by age, or by count.
        assert_eq!(ack_wait(&opts, 1, ms(50)), None);
        assert_eq!(ack_wait(&opts, 4, ms(0)), None);
        // 0: every read acknowledges.
        let eager = super::super::QueueOptions {
            ack_delay_ms: 0,
            ..opts
        };
        assert_eq!(ack_wait(&eager, 1, ms(0)), None);
    }
}
