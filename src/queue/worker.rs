//! [`Worker`]: runs a [`Processor`] over a queue, and the settling of jobs
//! (acknowledge, retry, dead-letter) shared by both queue kinds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Conn;
use redis::Value;
use redis::streams::StreamId;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::streams::value_string;
use crate::scripts::SCRIPTS;

use super::{
    Counters, GROUP, Job, JobError, JobEvent, JobEventKind, JobObserver, Queue, QueueError,
    QueueKind, competing, ordered, scheduler,
};

/// The work a queue's jobs stand for.
pub trait Processor: Send + Sync + 'static {
    /// Runs one job. `Err(JobError::Retry)` retries with backoff until the
    /// attempts run out; `Err(JobError::Permanent)` dead-letters at once.
    fn process(&self, job: &Job) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Runs jobs of one partition in order and returns their results in order.
    /// It may stop after the first failure (the default does, so one key's
    /// later jobs never run before an earlier failed one is settled); the
    /// engine settles that failure and hands over the rest again. A processor
    /// that pipelines the whole batch to Redis returns every result instead.
    fn process_batch<'a>(
        &'a self,
        jobs: &'a [Job],
    ) -> impl Future<Output = Vec<Result<(), JobError>>> + Send + 'a {
        process_in_order(self, jobs)
    }

    /// Called after a job moved to the dead-letter stream, so the processor
    /// can tell whoever waits for it (graph commands answer REVERT DEAD_LETTERED).
    fn dead_lettered(&self, job: &Job, error: &str) -> impl Future<Output = ()> + Send {
        let _ = (job, error);
        async {}
    }
}

/// Runs jobs one at a time, stopping after the first failure: the default
/// [`Processor::process_batch`], for processors that override it only for
/// some batches.
pub async fn process_in_order<P: Processor + ?Sized>(
    processor: &P,
    jobs: &[Job],
) -> Vec<Result<(), JobError>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let r = processor.process(job).await;
        let failed = r.is_err();
        out.push(r);
        if failed {
            break;
        }
    }
    out
}

/// A processor made of an async closure over an owned job.
pub struct FnProcessor<F>(pub F);

impl<F, Fut> Processor for FnProcessor<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send,
{
    fn process(&self, job: &Job) -> impl Future<Output = Result<(), JobError>> + Send {
        (self.0)(job.clone())
    }
}

/// Runs a processor over one queue until shut down.
pub struct Worker<P: Processor> {
    queue: Queue,
    processor: Arc<P>,
    /// Consumer name in the group and owner id on leases; unique per run.
    id: String,
    events: broadcast::Sender<JobEvent>,
    counters: Arc<Counters>,
    /// Told of every job event (metrics); nothing until one is attached.
    observer: Box<dyn JobObserver>,
    scheduler: bool,
}

/// Everything the tasks of one running worker share.
pub(crate) struct Ctx<P> {
    pub queue: Queue,
    pub processor: Arc<P>,
    pub id: String,
    /// Lifecycle events for subscribers in this process.
    pub events: broadcast::Sender<JobEvent>,
    pub counters: Arc<Counters>,
    /// Told of every event, e.g. to export the same counts to `/metrics`.
    pub observer: Box<dyn JobObserver>,
    /// True while the queue is paused (polled from Redis).
    pub paused: watch::Receiver<bool>,
    /// Tells every task of this worker to stop taking work.
    pub shutdown: CancellationToken,
}

impl<P: Processor> Worker<P> {
    pub fn new(queue: Queue, processor: P) -> Self {
        let id = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker {
            queue,
            processor: Arc::new(processor),
            id,
            events: broadcast::channel(4096).0,
            counters: Arc::new(Counters::default()),
            observer: Box::new(()),
            scheduler: true,
        }
    }

    /// Tells `observer` of every job event from now on (in place of any
    /// observer attached before).
    pub fn observer(mut self, observer: impl JobObserver) -> Self {
        self.observer = Box::new(observer);
        self
    }

    /// Leaves repeatable jobs to other replicas (delayed jobs are still promoted).
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = false;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Lifecycle events of the jobs this worker handles.
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Processes jobs until `shutdown` fires, then stops reading, lets
    /// in-flight jobs finish within `shutdown_timeout_ms`, hands back its
    /// partitions and deregisters.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        let (paused_tx, paused) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            observer: self.observer,
            queue: self.queue,
            processor: self.processor,
            id: self.id,
            events: self.events,
            counters: self.counters,
            paused,
            shutdown,
        });
        SCRIPTS.load_all(&mut ctx.queue.redis().conn()).await?;
        let helpers = TaskTracker::new();
        let stop_helpers = CancellationToken::new();
        helpers.spawn(watch_pause(ctx.clone(), paused_tx, stop_helpers.clone()));
        helpers.spawn(scheduler::promote_loop(ctx.clone(), stop_helpers.clone()));
        if self.scheduler {
            helpers.spawn(scheduler::repeat_loop(ctx.clone(), stop_helpers.clone()));
        }
        helpers.close();

        let result = match ctx.queue.options().kind {
            QueueKind::Ordered => ordered::run(ctx.clone()).await,
            QueueKind::Priority => competing::run(ctx.clone()).await,
        };
        stop_helpers.cancel();
        helpers.wait().await;
        result
    }
}

async fn watch_pause<P>(ctx: Arc<Ctx<P>>, tx: watch::Sender<bool>, stop: CancellationToken) {
    let key = ctx.queue.keys().paused(ctx.queue.name());
    let every = Duration::from_millis(ctx.queue.options().pause_poll_ms);
    let mut conn = ctx.queue.redis().conn();
    loop {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&key);
        let paused: Result<bool, _> = tokio::select! {
            _ = stop.cancelled() => return,
            r = exists.query_async(&mut conn) => r,
        };
        if let Ok(p) = paused {
            tx.send_if_modified(|old| std::mem::replace(old, p) != p);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How a failed job ended up.
pub(crate) enum Settled {
    /// Retried in place and succeeded: acknowledge it with the others.
    Succeeded,
    /// Dead-lettered (or rescheduled): already out of the stream.
    Removed,
    /// Shutdown or lease loss interrupted the retries; the entry stays pending
    /// for the next owner, with its attempts recorded.
    Abandoned,
}

impl<P: Processor> Ctx<P> {
    pub fn emit(&self, job_id: &str, partition: u16, kind: JobEventKind) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        match &kind {
            JobEventKind::Completed => c.processed.fetch_add(1, Relaxed),
            JobEventKind::Retrying { .. } => c.retried.fetch_add(1, Relaxed),
            JobEventKind::DeadLettered { .. } => {
                c.failed.fetch_add(1, Relaxed);
                c.dead_lettered.fetch_add(1, Relaxed)
            }
            JobEventKind::Stalled => c.stalled.fetch_add(1, Relaxed),
            JobEventKind::RateLimited { .. } => c.rate_limited.fetch_add(1, Relaxed),
        };
        self.observer.on_event(&kind);
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(JobEvent {
                queue: self.queue.name_arc(),
                job_id: job_id.to_string(),
                partition,
                kind,
            });
        }
    }

    /// Acknowledges and deletes processed entries of one stream. With `trim`,
    /// every entry up to the highest of `done` goes (ordered partitions only:
    /// there, everything older is settled).
    pub async fn ack(
        &self,
        conn: &mut Conn,
        stream: &str,
        partition: u16,
        done: &[(String, String)],
        trim: bool,
    ) -> Result<(), QueueError> {
        if done.is_empty() {
            return Ok(());
        }
        let inv = self.ack_invocation(stream, partition, done, trim);
        let _: u64 = inv.invoke_async(conn).await?;
        for (_, job) in done {
            self.emit(job, partition, JobEventKind::Completed);
        }
        Ok(())
    }

    /// The `lua/ack.lua` call that acknowledges `done` (entry id, job id
    /// pairs; not empty), for callers that pipeline it with their next read.
    pub(crate) fn ack_invocation(
        &self,
        stream: &str,
        partition: u16,
        done: &[(String, String)],
        trim: bool,
    ) -> redis::ScriptInvocation<'static> {
        let q = self.queue.name();
        let keys = self.queue.keys();
        let opts = self.queue.options();
        let mut inv = SCRIPTS.ack.prepare_invoke();
        inv.key(stream)
            .key(keys.attempts(q, partition))
            .key(keys.counters(q, partition))
            .key(keys.events(q, partition))
            .arg(GROUP)
            .arg(opts.events.flag())
            .arg(opts.events_max_len)
            .arg(if trim {
                highest_id(done.iter().map(|d| d.0.as_str()))
            } else {
                ""
            });
        for (entry, job) in done {
            inv.arg(entry).arg(job);
        }
        inv
    }

    /// Moves a job to the dead-letter stream with its error.
    pub async fn dead_letter(
        &self,
        conn: &mut Conn,
        stream: &str,
        job: &Job,
        error: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        let fields = job.fields(job.attempts_made);
        let moved = self
            .dead_letter_raw(
                conn,
                stream,
                job.partition,
                &job.entry_id,
                &job.id,
                error,
                attempts,
                &fields,
            )
            .await?;
        if moved {
            self.processor.dead_lettered(job, error).await;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn dead_letter_raw(
        &self,
        conn: &mut Conn,
        stream: &str,
        partition: u16,
        entry_id: &str,
        job_id: &str,
        error: &str,
        attempts: u32,
        fields: &[(impl AsRef<str>, String)],
    ) -> Result<bool, QueueError> {
        let q = self.queue.name();
        let keys = self.queue.keys();
        let opts = self.queue.options();
        let mut inv = SCRIPTS.dead_letter.prepare_invoke();
        inv.key(stream)
            .key(keys.attempts(q, partition))
            .key(keys.dlq(q, partition))
            .key(keys.counters(q, partition))
            .key(keys.events(q, partition))
            .arg(GROUP)
            .arg(entry_id)
            .arg(job_id)
            .arg(error)
            .arg(attempts)
            .arg(opts.dlq_max_len)
            .arg(opts.events_max_len);
        for (f, v) in fields {
            inv.arg(f.as_ref()).arg(v);
        }
        let moved: Option<String> = inv.invoke_async(conn).await?;
        if moved.is_some() {
            tracing::warn!(queue = q, job_id, error, attempts, "job dead-lettered");
            self.emit(
                job_id,
                partition,
                JobEventKind::DeadLettered {
                    attempts,
                    error: error.to_string(),
                },
            );
        }
        Ok(moved.is_some())
    }

    /// Decodes entries read from `stream`; entries that are not jobs (written
    /// by hand, say) go straight to the dead-letter stream.
    pub async fn decode(
        &self,
        conn: &mut Conn,
        stream: &str,
        partition: u16,
        entries: Vec<StreamId>,
        extra_attempts: &HashMap<String, u32>,
    ) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(entries.len());
        for e in entries {
            match Job::from_entry(&e.id, partition, &e.map) {
                Ok(mut job) => {
                    job.attempts_made += extra_attempts.get(&e.id).copied().unwrap_or(0);
                    jobs.push(job);
                }
                Err(why) => {
                    let fields: Vec<(String, String)> = e
                        .map
                        .iter()
                        .map(|(k, v)| (k.clone(), value_string(v).unwrap_or_default()))
                        .collect();
                    let error = format!("malformed job: {why}");
                    if let Err(err) = self
                        .dead_letter_raw(conn, stream, partition, &e.id, &e.id, &error, 0, &fields)
                        .await
                    {
                        tracing::error!(%err, "could not dead-letter a malformed entry");
                    }
                }
            }
        }
        jobs
    }

    /// Takes over up to `count` entries of `stream` pending for at least
    /// `min_idle_ms` with another consumer (a takeover counts as an attempt).
    /// Jobs whose attempts are spent go to the dead-letter stream; the rest
    /// are returned to run again.
    pub async fn reclaim(
        &self,
        conn: &mut Conn,
        stream: &str,
        partition: u16,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let opts = self.queue.options();
        let keys = self.queue.keys();
        let q = self.queue.name();
        let raw: Value = SCRIPTS
            .reclaim
            .key(stream)
            .key(keys.attempts(q, partition))
            .key(keys.counters(q, partition))
            .key(keys.events(q, partition))
            .arg(GROUP)
            .arg(&self.id)
            .arg(min_idle_ms)
            .arg(count)
            .arg(opts.events_max_len)
            .invoke_async(conn)
            .await?;
        let (entries, attempts) = parse_reclaimed(&raw);
        let jobs = self
            .decode(conn, stream, partition, entries, &attempts)
            .await;
        let mut runnable = Vec::with_capacity(jobs.len());
        for job in jobs {
            self.emit(&job.id, partition, JobEventKind::Stalled);
            if opts.retry.allows_retry(job.attempts_made) {
                runnable.push(job);
            } else {
                let error = "gave up: its worker stopped while processing it";
                self.dead_letter(conn, stream, &job, error, job.attempts_made)
                    .await?;
            }
        }
        Ok(runnable)
    }

    /// A random number in [0, 1) for backoff jitter.
    pub fn jitter() -> f64 {
        rand::random::<f64>()
    }
}

/// The highest stream entry id (`MS-SEQ`) of `ids`, compared numerically.
pub(crate) fn highest_id<'a>(ids: impl Iterator<Item = &'a str>) -> &'a str {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    ids.max_by_key(|id| parse(id)).unwrap_or("")
}

/// Creates the consumer group of `stream` (and the stream) unless it exists.
pub(crate) async fn ensure_group(conn: &mut Conn, stream: &str) -> Result<(), QueueError> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// True when a read failed because the stream or group vanished (Redis
/// restarted empty, or someone deleted the key): recreate and go on.
pub(crate) fn is_nogroup(err: &QueueError) -> bool {
    matches!(err, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
}

/// Sleeps for `d` unless `stop` fires first; returns false when it fired.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Parses a reply of `reclaim.lua`: `{cursor, {{id, {k, v, ...}, attempts}, ...}}`.
fn parse_reclaimed(v: &Value) -> (Vec<StreamId>, HashMap<String, u32>) {
    let mut entries = Vec::new();
    let mut attempts = HashMap::new();
    let Value::Array(top) = v else {
        return (entries, attempts);
    };
    let Some(Value::Array(items)) = top.get(1) else {
        return (entries, attempts);
    };
    for item in items {
        let Value::Array(parts) = item else { continue };
        let (Some(id), Some(Value::Array(flat)), Some(n)) = (
            parts.first().and_then(value_string),
            parts.get(1),
            parts
                .get(2)
                .and_then(value_string)
                .and_then(|s| s.parse::<u32>().ok()),
        ) else {
            continue;
        };
        let map = flat
            .chunks(2)
            .filter_map(|kv| Some((value_string(kv.first()?)?, kv.get(1)?.clone())))
            .collect();
        attempts.insert(id.clone(), n);
        entries.push(StreamId {
            id,
            map,
            ..Default::default()
        });
    }
    (entries, attempts)
}

#[cfg(test)]
mod tests {
    use super::highest_id;

    #[test]
    fn highest_id_compares_numerically_not_as_text() {
        let ids = ["9-5", "10-0", "10-2", "9-99"];
        assert_eq!(highest_id(ids.into_iter()), "10-2");
        assert_eq!(highest_id(std::iter::empty()), "");
    }
}
