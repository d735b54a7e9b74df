//! The queue engine's failure and timing paths against a real redis-server,
//! one worker process (this one): retries and their backoff, permanent
//! failures, delayed and repeatable jobs, per-key rate limits, and dead
//! letters (capped, replayed, purged). Ordering, leases and the rest of the
//! engine are in `tests/queue_engine.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::queue::{Running, ordered, priority, processed, start, total_len};
use common::{TestEnv, eventually};
use graphq::queue::{
    AddOutcome, FnProcessor, JobError, NewJob, Priority, QueueOptions, RateLimit, RetryPolicy,
};
use redis::AsyncCommands;

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
