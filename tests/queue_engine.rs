//! The queue engine against a real redis-server, one worker process (this
//! one): key order, priorities, pause, dedupe, stalled jobs, partition
//! leases, shutdown, stats and script reloads. Retries, delays, repeatable
//! jobs, rate limits and dead letters are in `tests/queue_retries.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::queue::{Running, ordered, priority, processed, start, total_len};
use common::{TestEnv, eventually};
use graphq::queue::{
    AddGuard, AddOutcome, FnProcessor, GuardedAdd, JobError, JobEventKind, NewJob, Priority, Queue,
    QueueOptions, RateLimit, Worker,
};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

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

/// Jobs arriving one by one are read one by one; with `ack_delay_ms` their
/// acknowledgements go out together, and still nothing stays pending once
/// the partition is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_settled_one_by_one_share_one_acknowledgement() {
    let env = TestEnv::start().await;
    let q = env.queue(
        "commands",
        QueueOptions {
            ack_delay_ms: 2_000,
            lease_ttl_ms: 10_000,
            ..ordered(1)
        },
    );
    let w = start(&q, FnProcessor(|_job: graphq::queue::Job| async { Ok(()) }));
    let acks_before = env.command_calls("xack").await;
    let started = std::time::Instant::now();
    for i in 0..9u32 {
        q.add(NewJob::new("step", i.to_string()).key("g"))
            .await
            .unwrap();
        let n = u64::from(i) + 1;
        eventually(Duration::from_secs(10), "the job processed", || async {
            processed(&w) == n
        })
        .await;
    }
    let one_by_one = started.elapsed();
    eventually(Duration::from_secs(10), "nothing left pending", || async {
        let stats = q.stats().await.unwrap();
        stats.total(|p| p.pending) == 0 && total_len(&env, &q).await == 0
    })
    .await;
    let acks = env.command_calls("xack").await - acks_before;
    // Each job was processed before the next was added, so each came with a
    // read of its own; a read acknowledges only once the oldest settled
    // entry is 2 s old: one acknowledgement per 2 s the jobs took, and one
    // for the last of them.
    let most = 1 + one_by_one.as_millis() as u64 / 2_000;
    assert!(
        acks <= most,
        "{acks} acknowledgements for 9 jobs added one by one in {one_by_one:?}"
    );
    assert_eq!(q.stats().await.unwrap().counter("processed"), 9);
    w.shutdown().await;
}

fn rand_u64(below: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % below as u128) as u64
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
async fn a_guarded_add_is_refused_whole_by_a_foreign_claim_or_an_empty_limiter() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(4));
    let limit = RateLimit {
        max: 2,
        duration_ms: 60_000,
    };
    let mut conn = env.redis.conn();
    let guard = |owner: &'static str, record: &'static str| AddGuard {
        claim: Some((record, owner, 30)),
        limit: Some(("t:{lim}", &limit)),
    };
    let job = |id: &str| NewJob::new("x", "1").key("g").id(id.to_string());
    // Claimed and queued.
    let first = q
        .add_guarded(job("a"), &guard("g1", "t:{op:a}"))
        .await
        .unwrap();
    assert!(
        matches!(first, GuardedAdd::Added(AddOutcome::Added { .. })),
        "{first:?}"
    );
    let claim: HashMap<String, String> = conn.hgetall("t:{op:a}").await.unwrap();
    assert_eq!(claim["graphId"], "g1");
    assert_eq!(claim["status"], "pending");
    // Another owner's claim: nothing queued, no permit taken.
    let taken = q
        .add_guarded(job("a"), &guard("g2", "t:{op:a}"))
        .await
        .unwrap();
    assert_eq!(taken, GuardedAdd::Taken { owner: "g1".into() });
    // The owner's resend is a duplicate of the first add, answered with its
    // entry, and takes no permit: the claim dedupes before the limiter.
    let again = q
        .add_guarded(job("a"), &guard("g1", "t:{op:a}"))
        .await
        .unwrap();
    let GuardedAdd::Added(AddOutcome::Added { entry_id, .. }) = &first else {
        unreachable!()
    };
    assert!(
        matches!(&again, GuardedAdd::Added(AddOutcome::Duplicate { first, .. }) if first == entry_id),
        "{again:?}"
    );
    let claim: HashMap<String, String> = conn.hgetall("t:{op:a}").await.unwrap();
    assert_eq!(&claim["entry"], entry_id);
    // The second permit goes to a new job; then none is left: refused with a
    // wait, and nothing claimed or queued.
    let second = q
        .add_guarded(job("b"), &guard("g1", "t:{op:b}"))
        .await
        .unwrap();
    assert!(
        matches!(second, GuardedAdd::Added(AddOutcome::Added { .. })),
        "{second:?}"
    );
    let limited = q
        .add_guarded(job("c"), &guard("g1", "t:{op:c}"))
        .await
        .unwrap();
    let GuardedAdd::Limited { wait } = limited else {
        panic!("no permit left: {limited:?}")
    };
    assert!(wait > Duration::from_secs(1), "{wait:?}");
    let exists: bool = conn.exists("t:{op:c}").await.unwrap();
    assert!(!exists, "a refused add claims nothing");
    assert_eq!(total_len(&env, &q).await, 2);
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
