//! The queue engine against a real redis-server, one worker process (this one).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestEnv, eventually, fast};
use graphq::queue::{
    AddOutcome, Counters, FnProcessor, JobError, JobEventKind, NewJob, Priority, Processor, Queue,
    QueueKind, QueueOptions, RateLimit, RetryPolicy, Worker,
};
use redis::AsyncCommands;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Running {
    stop: CancellationToken,
    handle: JoinHandle<Result<(), graphq::queue::QueueError>>,
    counters: Arc<Counters>,
    id: String,
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("worker stops within 10 s")
            .expect("worker task did not panic")
            .expect("worker ended cleanly");
    }
}

fn start<P: Processor>(queue: &Queue, p: P) -> Running {
    let worker = Worker::new(queue.clone(), p);
    let counters = worker.counters();
    let id = worker.id().to_string();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    Running {
        stop,
        handle,
        counters,
        id,
    }
}

fn ordered(partitions: u16) -> QueueOptions {
    fast(QueueOptions {
        kind: QueueKind::Ordered,
        partitions,
        concurrency: partitions as usize,
        ..QueueOptions::default()
    })
}

fn priority() -> QueueOptions {
    fast(QueueOptions {
        kind: QueueKind::Priority,
        partitions: 1,
        concurrency: 8,
        ..QueueOptions::default()
    })
}

/// The millisecond part of a stream entry id: when Redis wrote the entry.
fn entry_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .expect("a stream entry id")
}

/// A partition's failure events (`retrying`, `dead_lettered`) as the engine
/// recorded them: when Redis wrote each, by its clock, and the announced
/// delay before the next attempt (retries only).
async fn failures(env: &TestEnv, q: &str, partition: u16) -> Vec<(u64, Option<u64>)> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(env.keys.events(q, partition))
        .arg("-")
        .arg("+")
        .query_async(&mut env.conn())
        .await
        .unwrap();
    entries
        .into_iter()
        .filter(|(_, f)| matches!(f["event"].as_str(), "retrying" | "dead_lettered"))
        .map(|(id, f)| (entry_ms(&id), f.get("delayMs").map(|d| d.parse().unwrap())))
        .collect()
}

async fn total_len(env: &TestEnv, q: &Queue) -> u64 {
    let mut conn = env.conn();
    let mut n = 0;
    for p in q.partitions() {
        for prio in Priority::ALL {
            let len: u64 = conn
                .xlen(env.keys.stream(q.name(), p, prio.lane()))
                .await
                .unwrap();
            n += len;
        }
    }
    n
}

fn processed(r: &Running) -> u64 {
    r.counters.processed.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_jobs_run_in_key_order_and_leave_nothing_behind() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(4));
    let mut jobs = Vec::new();
    for i in 0..300u32 {
        let key = format!("graph-{}", i % 10);
        jobs.push(NewJob::new("step", (i / 10).to_string()).key(key));
    }
    q.add_bulk(jobs).await.unwrap();

    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let s = seen.clone();
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_micros(rand_u64(2000))).await;
                let n: u32 = job
                    .data
                    .parse()
                    .map_err(|_| JobError::Permanent("bad".into()))?;
                s.lock()
                    .unwrap()
                    .entry(job.key.unwrap())
                    .or_default()
                    .push(n);
                Ok(())
            }
        }),
    );
    eventually(Duration::from_secs(20), "300 jobs processed", || async {
        processed(&w) == 300
    })
    .await;
    for (key, order) in seen.lock().unwrap().iter() {
        assert_eq!(order, &(0..30).collect::<Vec<_>>(), "order of {key}");
    }
    assert_eq!(
        total_len(&env, &q).await,
        0,
        "processed entries are deleted"
    );
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.counter("processed"), 300);
    assert_eq!(stats.total(|p| p.pending), 0);
    w.shutdown().await;
}

fn rand_u64(below: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % below as u128) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_growing_backoff_then_dead_letter_and_replay() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        retry: RetryPolicy {
            attempts: 4,
            backoff_base_ms: 60,
            backoff_cap_ms: 10_000,
            backoff_jitter: 0.5,
        },
        ..ordered(1)
    };
    let q = env.queue("commands", opts);
    q.add(NewJob::new("poison", r#"{"n":1}"#).key("g").id("poison-1"))
        .await
        .unwrap();
    q.add(NewJob::new("fine", "").key("g").id("after-poison"))
        .await
        .unwrap();

    let attempts = Arc::new(AtomicU32::new(0));
    let healed = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, h, d) = (attempts.clone(), healed.clone(), done.clone());
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let (a, h, d) = (a.clone(), h.clone(), d.clone());
            async move {
                if job.name == "poison" && !h.load(Ordering::SeqCst) {
                    a.fetch_add(1, Ordering::SeqCst);
                    return Err(JobError::Retry("boom".into()));
                }
                d.lock().unwrap().push(job.id.clone());
                Ok(())
            }
        }),
    );
    let dlq = q.dead_letters();
    eventually(
        Duration::from_secs(10),
        "poison job dead-lettered",
        || async { dlq.count().await.unwrap() == 1 },
    )
    .await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "one first try and three retries"
    );
    // Three retries, then the dead letter, as the engine recorded them.
    let failed = failures(&env, "commands", 0).await;
    assert_eq!(failed.len(), 4, "{failed:?}");
    let delays: Vec<u64> = failed.iter().filter_map(|f| f.1).collect();
    assert_eq!(delays.len(), 3, "{failed:?}");
    // Delay after failure n is in [base*2^(n-1)/2, base*2^(n-1)].
    for (i, delay) in delays.iter().enumerate() {
        let full = 60u64 << i;
        assert!(
            (full / 2..=full).contains(delay),
            "delay {i} = {delay} ms, expected {} to {full}",
            full / 2
        );
    }
    assert!(delays[2] > delays[0], "delays grow: {delays:?}");
    // Each retry waited its delay: by Redis' clock, the next failure was
    // recorded at least that much later.
    for w in failed.windows(2) {
        let (at, delay) = (w[0].0, w[0].1.unwrap());
        assert!(w[1].0 >= at + delay, "retried before its delay: {failed:?}");
    }

    let dead = dlq.list(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, "poison-1");
    assert_eq!(dead[0].error, "boom");
    assert_eq!(dead[0].attempts_made, 4);
    assert_eq!(dead[0].data, r#"{"n":1}"#, "original payload kept");
    // The partition kept flowing after the poison job.
    eventually(
        Duration::from_secs(5),
        "job behind the poison one",
        || async { done.lock().unwrap().contains(&"after-poison".to_string()) },
    )
    .await;

    healed.store(true, Ordering::SeqCst);
    let entry = dlq.retry(&dead[0].reference()).await.unwrap();
    assert!(entry.is_some(), "replay returns the new entry id");
    eventually(Duration::from_secs(5), "replayed job processed", || async {
        done.lock().unwrap().contains(&"poison-1".to_string())
    })
    .await;
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert!(
        dlq.retry(&dead[0].reference()).await.unwrap().is_none(),
        "a replayed entry is gone"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_skips_retries() {
    let env = TestEnv::start().await;
    let q = env.queue("sync", priority());
    q.add(NewJob::new("bad", "x").id("p1")).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let w = start(
        &q,
        FnProcessor(move |_job| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err(JobError::Permanent("cannot ever work".into()))
            }
        }),
    );
    let dlq = q.dead_letters();
    eventually(Duration::from_secs(5), "dead-lettered", || async {
        dlq.count().await.unwrap() == 1
    })
    .await;
    let dead = dlq.show("p1").await.unwrap().expect("found by job id");
    assert_eq!(dead.error, "cannot ever work");
    assert_eq!(dead.attempts_made, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(q.stats().await.unwrap().counter("dead_lettered"), 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_queue_retries_through_the_delayed_set() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        retry: RetryPolicy {
            attempts: 3,
            backoff_base_ms: 80,
            backoff_cap_ms: 1_000,
            backoff_jitter: 0.0,
        },
        ..priority()
    };
    let q = env.queue("sync", opts);
    q.add(NewJob::new("flaky", "").id("f1")).await.unwrap();
    // Each delivery's stream entry id and attempt count.
    let attempts: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let a = attempts.clone();
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let a = a.clone();
            async move {
                a.lock().unwrap().push((job.entry_id, job.attempts_made));
                if job.attempts_made < 2 {
                    Err(JobError::Retry("not yet".into()))
                } else {
                    Ok(())
                }
            }
        }),
    );
    eventually(Duration::from_secs(5), "third attempt succeeds", || async {
        processed(&w) == 1
    })
    .await;
    let seen = attempts.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "attempt count travels with the job"
    );
    // A retry is a new entry, written by the delayed set's promotion once
    // due: by Redis' clock, at least the backoff after the failed delivery.
    let gap1 = entry_ms(&seen[1].0) - entry_ms(&seen[0].0);
    let gap2 = entry_ms(&seen[2].0) - entry_ms(&seen[1].0);
    assert!(
        gap1 >= 80 && gap2 >= 160,
        "backoff 80 then 160 ms: got {gap1} and {gap2}"
    );
    assert_eq!(q.dead_letters().count().await.unwrap(), 0);
    assert_eq!(q.stats().await.unwrap().counter("retried"), 2);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_wait_until_due() {
    let env = TestEnv::start().await;
    let q = env.queue("analytics", priority());
    // The stream entry the job was delivered from.
    let ran: Arc<Mutex<Option<String>>> = Arc::default();
    let r = ran.clone();
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let r = r.clone();
            async move {
                *r.lock().unwrap() = Some(job.entry_id);
                Ok(())
            }
        }),
    );
    let added_ms = graphq::db::now_ms();
    let out = q
        .add(NewJob::new("later", "").delay(Duration::from_millis(400)))
        .await
        .unwrap();
    let AddOutcome::Delayed { job_id } = out else {
        panic!("not delayed: {out:?}");
    };
    let mut conn = env.conn();
    let waiting: u64 = conn.zcard(env.keys.delayed("analytics", 0)).await.unwrap();
    assert_eq!(waiting, 1);
    let due: u64 = conn
        .zscore(env.keys.delayed("analytics", 0), &job_id)
        .await
        .unwrap();
    assert!(due >= added_ms + 400, "due {due}, added at {added_ms}");
    eventually(Duration::from_secs(5), "delayed job ran", || async {
        ran.lock().unwrap().is_some()
    })
    .await;
    // Promoted into the stream, by Redis' clock, not before it was due.
    let entry = ran.lock().unwrap().clone().unwrap();
    assert!(entry_ms(&entry) >= due, "entry {entry}, due {due}");
    let waiting: u64 = conn.zcard(env.keys.delayed("analytics", 0)).await.unwrap();
    assert_eq!(waiting, 0);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_jobs_run_once_per_period_across_three_schedulers() {
    let env = TestEnv::start().await;
    let q = env.queue("analytics", priority());
    q.add_repeatable(
        "tick",
        Duration::from_millis(250),
        NewJob::new("UPDATE_METRICS", "{}"),
    )
    .await
    .unwrap();
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let replicas: Vec<Running> = (0..3)
        .map(|_| {
            let ids = ids.clone();
            start(
                &q,
                FnProcessor(move |job: graphq::queue::Job| {
                    let ids = ids.clone();
                    async move {
                        ids.lock().unwrap().push(job.id);
                        Ok(())
                    }
                }),
            )
        })
        .collect();
    eventually(Duration::from_secs(10), "eight periods ran", || async {
        ids.lock().unwrap().len() >= 8
    })
    .await;
    for r in &replicas {
        r.stop.cancel();
    }
    for r in replicas {
        r.shutdown().await;
    }
    let ids = ids.lock().unwrap().clone();
    let mut slots: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    slots.sort();
    let n = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), n, "no period ran twice: {ids:?}");
    assert_eq!(
        slots[n - 1] - slots[0] + 1,
        n as u64,
        "no period was skipped: {ids:?}"
    );
    assert!(ids.iter().all(|id| id.starts_with("repeat:tick:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_taking_jobs_and_resume_restarts() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(2));
    let w = start(&q, FnProcessor(|_job| async { Ok(()) }));
    q.pause().await.unwrap();
    assert!(q.is_paused().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.add(NewJob::new("x", "").key("g1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(processed(&w), 0, "nothing runs while paused");
    assert_eq!(total_len(&env, &q).await, 1, "the job waits in its stream");
    q.resume().await.unwrap();
    eventually(Duration::from_secs(5), "job runs after resume", || async {
        processed(&w) == 1
    })
    .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_the_same_job_id_twice_enqueues_once() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(4));
    let first = q
        .add(NewJob::new("x", "1").key("g").id("op-1"))
        .await
        .unwrap();
    let second = q
        .add(NewJob::new("x", "2").key("g").id("op-1"))
        .await
        .unwrap();
    let AddOutcome::Added { entry_id, .. } = &first else {
        panic!("first add queues: {first:?}")
    };
    assert_eq!(
        second,
        AddOutcome::Duplicate {
            job_id: "op-1".into(),
            first: entry_id.clone()
        }
    );
    assert_eq!(total_len(&env, &q).await, 1);
    let w = start(&q, FnProcessor(|_job| async { Ok(()) }));
    eventually(Duration::from_secs(5), "processed", || async {
        processed(&w) == 1
    })
    .await;
    // Still a duplicate after processing, within the window.
    let third = q
        .add(NewJob::new("x", "3").key("g").id("op-1"))
        .await
        .unwrap();
    assert!(matches!(third, AddOutcome::Duplicate { .. }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processed(&w), 1);
    w.shutdown().await;
}

#[tokio::test]
async fn ordered_queue_refuses_jobs_without_a_key() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(4));
    let err = q.add(NewJob::new("x", "")).await.unwrap_err();
    assert!(err.to_string().contains("needs a key"), "{err}");
    assert_eq!(total_len(&env, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_drain_first() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        concurrency: 1,
        ..priority()
    };
    let q = env.queue("sync", opts);
    q.pause().await.unwrap();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let o = order.clone();
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let o = o.clone();
            async move {
                o.lock().unwrap().push(job.name);
                Ok(())
            }
        }),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for prio in [Priority::Low, Priority::Normal, Priority::High] {
        for _ in 0..5 {
            q.add(NewJob::new(prio.as_str(), "").priority(prio))
                .await
                .unwrap();
        }
    }
    q.resume().await.unwrap();
    eventually(Duration::from_secs(5), "all 15 ran", || async {
        processed(&w) == 15
    })
    .await;
    let got = order.lock().unwrap().clone();
    let want: Vec<String> = ["high", "normal", "low"]
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.to_string(), 5))
        .collect();
    assert_eq!(got, want);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_by_a_dead_consumer_is_taken_over_after_the_stall_timeout() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        stall_timeout_ms: 300,
        ..priority()
    };
    let q = env.queue("sync", opts);
    let stream = env.keys.stream("sync", 0, Priority::Normal.lane());
    let mut conn = env.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    q.add(NewJob::new("orphan", "").id("o1")).await.unwrap();
    // A consumer that reads the job and dies without acknowledging it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("dead-consumer")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let worker = Worker::new(q.clone(), FnProcessor(|_job| async { Ok(()) }));
    let mut events = worker.events();
    let counters = worker.counters();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    eventually(Duration::from_secs(5), "orphan processed", || async {
        counters.processed.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    assert!(kinds.contains(&JobEventKind::Stalled), "{kinds:?}");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(a) if a.first() == Some(&redis::Value::Int(0))),
        "{pending:?}"
    );
    let attempts: HashMap<String, String> =
        conn.hgetall(env.keys.attempts("sync", 0)).await.unwrap();
    assert!(
        attempts.is_empty(),
        "attempt records are removed with the entry"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_dead_lettered_and_the_queue_goes_on() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let stream = env.keys.stream("commands", 0, Priority::Normal.lane());
    let mut conn = env.conn();
    let _: String = conn
        .xadd(&stream, "*", &[("garbage", "yes")])
        .await
        .unwrap();
    q.add(NewJob::new("ok", "").key("g")).await.unwrap();
    let w = start(&q, FnProcessor(|_job| async { Ok(()) }));
    eventually(Duration::from_secs(5), "valid job processed", || async {
        processed(&w) == 1
    })
    .await;
    let dead = q.dead_letters().list(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("malformed job"), "{}", dead[0].error);
    assert!(dead[0].fields.contains(&("garbage".into(), "yes".into())));
    w.shutdown().await;
}

async fn lease_owners(env: &TestEnv, q: &Queue) -> HashMap<String, usize> {
    let mut conn = env.conn();
    let mut owners = HashMap::new();
    for p in q.partitions() {
        let owner: Option<String> = conn.get(env.keys.lease(q.name(), p)).await.unwrap();
        *owners
            .entry(owner.unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_sixteen_partitions_and_rebalance_when_one_leaves() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(16));
    let workers: Vec<Running> = (0..3)
        .map(|_| start(&q, FnProcessor(|_job| async { Ok(()) })))
        .collect();
    let ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
    eventually(Duration::from_secs(10), "6/5/5 split", || async {
        let owners = lease_owners(&env, &q).await;
        let mut sizes: Vec<usize> = ids
            .iter()
            .map(|id| owners.get(id).copied().unwrap_or(0))
            .collect();
        sizes.sort();
        if sizes != vec![5, 5, 6] {
            eprintln!("owners {owners:?} ids {ids:?}");
        }
        sizes == vec![5, 5, 6]
    })
    .await;

    let mut workers = workers;
    let leaving = workers.remove(0);
    let left_id = leaving.id.clone();
    leaving.shutdown().await;
    // Handed back, not left to expire: no lease names the stopped worker.
    let owners = lease_owners(&env, &q).await;
    assert!(!owners.contains_key(&left_id), "{owners:?}");
    let mut conn = env.conn();
    let registered: Vec<String> = conn
        .zrange(env.keys.workers("commands"), 0, -1)
        .await
        .unwrap();
    assert!(
        !registered.contains(&left_id),
        "a stopped worker deregisters"
    );
    let stayed: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
    eventually(Duration::from_secs(10), "8/8 split", || async {
        let owners = lease_owners(&env, &q).await;
        stayed.iter().all(|id| owners.get(id) == Some(&8))
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let owners = lease_owners(&env, &q).await;
    assert_eq!(
        owners.get("-"),
        Some(&16),
        "all leases released on shutdown: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_job_finish() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let w = start(
        &q,
        FnProcessor(move |_job| {
            let s = s.clone();
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(())
            }
        }),
    );
    q.add(NewJob::new("slow", "").key("g")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("job started");
    let counters = w.counters.clone();
    w.shutdown().await;
    assert_eq!(
        counters.processed.load(Ordering::Relaxed),
        1,
        "finished, not dropped"
    );
    assert_eq!(total_len(&env, &q).await, 0, "and acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_dead_letters_stay_capped() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        events_max_len: 100,
        dlq_max_len: 100,
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        ..ordered(1)
    };
    let q = env.queue("commands", opts);
    let jobs: Vec<NewJob> = (0..1500)
        .map(|i| NewJob::new(if i % 2 == 0 { "ok" } else { "bad" }, "").key("g"))
        .collect();
    q.add_bulk(jobs).await.unwrap();
    let w = start(
        &q,
        FnProcessor(|job: graphq::queue::Job| async move {
            if job.name == "bad" {
                Err(JobError::Retry("no".into()))
            } else {
                Ok(())
            }
        }),
    );
    eventually(Duration::from_secs(20), "all settled", || async {
        processed(&w) + w.counters.dead_lettered.load(Ordering::Relaxed) == 1500
    })
    .await;
    let mut conn = env.conn();
    let events: u64 = conn.xlen(env.keys.events("commands", 0)).await.unwrap();
    let dead: u64 = conn.xlen(env.keys.dlq("commands", 0)).await.unwrap();
    // Approximate trimming keeps whole radix-tree nodes (100 entries each).
    assert!(events <= 300, "events stream has {events} entries");
    assert!(dead <= 300, "dead-letter stream has {dead} entries");
    assert_eq!(total_len(&env, &q).await, 0);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_agree_with_what_redis_says() {
    let env = TestEnv::start().await;
    let q = env.queue("sync", priority());
    let jobs: Vec<NewJob> = (0..50).map(|i| NewJob::new("j", i.to_string())).collect();
    q.add_bulk(jobs).await.unwrap();
    // No worker has read the queue yet (no consumer group): all of it is lag.
    let before = q.stats().await.unwrap();
    assert_eq!(before.total(|p| p.lag), 50);
    assert_eq!(before.total(|p| p.pending), 0);
    let stream = env.keys.stream("sync", 0, Priority::Normal.lane());
    let mut conn = env.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("c1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stats = q.stats().await.unwrap();
    let xlen: u64 = conn.xlen(&stream).await.unwrap();
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stats.total(|p| p.length), xlen);
    assert_eq!(stats.total(|p| p.pending), pending.0);
    assert_eq!(stats.total(|p| p.lag), 40);
    assert!(stats.partitions[0].oldest_age_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_key_rate_limit_holds_each_keys_jobs_back_and_runs_them_all() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        key_rate_limit: Some(RateLimit {
            max: 10,
            duration_ms: 500,
        }),
        ..priority()
    };
    let q = env.queue("sync", opts);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let r = runs.clone();
    let w = start(
        &q,
        FnProcessor(move |job: graphq::queue::Job| {
            let r = r.clone();
            async move {
                *r.lock().unwrap().entry(job.key.unwrap()).or_default() += 1;
                Ok(())
            }
        }),
    );
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| NewJob::new("j", "").key(if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    q.add_bulk(jobs).await.unwrap();
    eventually(Duration::from_secs(10), "all 60 ran", || async {
        processed(&w) == 60
    })
    .await;
    // Each key: a burst of 10, then 20 more held back by its own limiter.
    // How fast each key then runs is a figure for the queue benchmark.
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs, HashMap::from([("a".into(), 30), ("b".into(), 30)]));
    assert!(q.stats().await.unwrap().counter("rate_limited") > 0);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_count_survives_a_crashed_worker() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        retry: RetryPolicy {
            attempts: 5,
            backoff_base_ms: 60_000,
            backoff_cap_ms: 60_000,
            backoff_jitter: 0.0,
        },
        ..ordered(1)
    };
    let q = env.queue("commands", opts);
    q.add(NewJob::new("fails", "").key("g").id("j1"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let failing = |seen: Arc<Mutex<Vec<u32>>>| {
        FnProcessor(move |job: graphq::queue::Job| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.attempts_made);
                Err(JobError::Retry("still failing".into()))
            }
        })
    };
    // The first worker fails once, records it, and sleeps a minute of backoff...
    let crashed = start(&q, failing(seen.clone()));
    eventually(Duration::from_secs(5), "first failure recorded", || async {
        let mut conn = env.conn();
        let n: HashMap<String, u32> = conn
            .hgetall(env.keys.attempts("commands", 0))
            .await
            .unwrap();
        n.values().any(|v| *v == 1)
    })
    .await;
    // ...and dies without a word: no lease release, no acknowledgement.
    crashed.handle.abort();
    let _ = crashed.handle.await;
    let next = start(&q, failing(seen.clone()));
    eventually(
        Duration::from_secs(10),
        "the next owner runs it",
        || async { seen.lock().unwrap().len() == 2 },
    )
    .await;
    // One recorded failure plus the crash itself: the count did not start over.
    assert_eq!(*seen.lock().unwrap(), vec![0, 2]);
    next.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), next.handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_can_be_reused_once_the_dedupe_window_has_passed() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        dedupe_window_ms: 200,
        ..ordered(1)
    };
    let q = env.queue("commands", opts);
    assert!(matches!(
        q.add(NewJob::new("x", "").key("g").id("same"))
            .await
            .unwrap(),
        AddOutcome::Added { .. }
    ));
    assert!(matches!(
        q.add(NewJob::new("x", "").key("g").id("same"))
            .await
            .unwrap(),
        AddOutcome::Duplicate { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        q.add(NewJob::new("x", "").key("g").id("same"))
            .await
            .unwrap(),
        AddOutcome::Added { .. }
    ));
    assert_eq!(total_len(&env, &q).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_every_dead_letter_stream_of_the_queue() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        ..ordered(4)
    };
    let q = env.queue("commands", opts);
    let jobs: Vec<NewJob> = (0..12)
        .map(|i| NewJob::new("bad", "").key(format!("g{i}")))
        .collect();
    q.add_bulk(jobs).await.unwrap();
    let w = start(
        &q,
        FnProcessor(|_job| async { Err(JobError::Retry("no".into())) }),
    );
    let dlq = q.dead_letters();
    eventually(Duration::from_secs(5), "12 dead", || async {
        dlq.count().await.unwrap() == 12
    })
    .await;
    let partitions_used = dlq
        .list(100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.partition)
        .collect::<std::collections::HashSet<_>>();
    assert!(
        partitions_used.len() > 1,
        "dead letters spread over partitions"
    );
    assert_eq!(dlq.purge().await.unwrap(), 12);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert!(dlq.list(100).await.unwrap().is_empty());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_forgotten_by_redis_are_loaded_again() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(2));
    q.add(NewJob::new("x", "").key("g")).await.unwrap();
    let w = start(&q, FnProcessor(|_job| async { Ok(()) }));
    eventually(Duration::from_secs(5), "first job", || async {
        processed(&w) == 1
    })
    .await;
    // As after a Redis restart: the script cache is empty.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut env.conn())
        .await
        .unwrap();
    let jobs: Vec<NewJob> = (0..10)
        .map(|i| NewJob::new("x", "").key(format!("g{i}")))
        .collect();
    q.add_bulk(jobs)
        .await
        .expect("the enqueue pipeline reloads the scripts");
    eventually(Duration::from_secs(10), "the worker goes on", || async {
        processed(&w) == 11
    })
    .await;
    w.shutdown().await;
}
