//! The queue engine across real `graphq worker` processes: order, crash
//! recovery after SIGKILL, and a rate limit shared between replicas.
//!
//! Jobs use the `bench.apply` handler (so the workers are `graphq bench
//! worker`): one idempotent Lua write per job that appends the job to its
//! graph's log, so the log shows the order jobs took effect in and whether
//! any took effect twice. A production `graphq worker` does not run them.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Proc, TestEnv, eventually};
use graphq::queue::{NewJob, QueueKind, QueueOptions};
use redis::AsyncCommands;

/// These tests time things and run several processes: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: u16 = 16;

fn commands_opts() -> QueueOptions {
    QueueOptions {
        kind: QueueKind::Ordered,
        partitions: PARTITIONS,
        ..QueueOptions::default()
    }
}

/// `graphq bench worker`: a production worker that also runs `bench.*` jobs.
fn worker(env: &TestEnv, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = env.graphq();
    cmd.args(["bench", "worker", "--queue", "commands"])
        .env("GRAPHQ_QUEUES__COMMANDS__LEASE_TTL_MS", "1000")
        .env("GRAPHQ_QUEUES__COMMANDS__HEARTBEAT_MS", "200")
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc::spawn(cmd)
}

/// Jobs numbered per graph: job n of graph g carries value n.
fn numbered_jobs(graphs: usize, per_graph: usize, sleep_ms: impl Fn(usize) -> u64) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    for n in 0..per_graph {
        for g in 0..graphs {
            let data = format!(
                r#"{{"node":"n","value":"{n}","sleepMs":{}}}"#,
                sleep_ms(n * graphs + g)
            );
            jobs.push(
                NewJob::new("bench.apply", data)
                    .key(format!("g{g}"))
                    .id(format!("g{g}-{n}")),
            );
        }
    }
    jobs
}

async fn applied_total(env: &TestEnv, graphs: usize) -> u64 {
    let mut conn = env.conn();
    let mut total = 0;
    for g in 0..graphs {
        let v: Option<u64> = conn
            .hget(env.keys.graph(&format!("g{g}"), "bench:meta"), "version")
            .await
            .unwrap();
        total += v.unwrap_or(0);
    }
    total
}

/// Every graph's log holds values 0..per_graph exactly once, in order.
async fn assert_logs_in_order_exactly_once(env: &TestEnv, graphs: usize, per_graph: usize) {
    let mut conn = env.conn();
    for g in 0..graphs {
        let key = env.keys.graph(&format!("g{g}"), "bench:log");
        let entries: redis::streams::StreamRangeReply = conn.xrange_all(&key).await.unwrap();
        let values: Vec<usize> = entries
            .ids
            .iter()
            .map(|e| e.get::<String>("value").unwrap().parse().unwrap())
            .collect();
        assert_eq!(values, (0..per_graph).collect::<Vec<_>>(), "log of g{g}");
        let version: u64 = conn
            .hget(env.keys.graph(&format!("g{g}"), "bench:meta"), "version")
            .await
            .unwrap();
        assert_eq!(version, per_graph as u64, "version of g{g}");
    }
}

async fn lease_owners(env: &TestEnv) -> HashMap<String, usize> {
    let mut conn = env.conn();
    let mut owners = HashMap::new();
    for p in 0..PARTITIONS {
        let owner: Option<String> = conn.get(env.keys.lease("commands", p)).await.unwrap();
        if let Some(o) = owner {
            *owners.entry(o).or_insert(0) += 1;
        }
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_with_three_worker_processes_and_random_delays() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start().await;
    let q = env.queue("commands", commands_opts());
    let (graphs, per_graph) = (12, 60);
    let mut workers = vec![worker(&env, &[]), worker(&env, &[])];
    eventually(
        Duration::from_secs(20),
        "two workers share the partitions",
        || async { lease_owners(&env).await.len() == 2 },
    )
    .await;
    q.add_bulk(numbered_jobs(graphs, per_graph, |i| (i as u64 * 7919) % 8))
        .await
        .unwrap();
    // A third worker joins mid-run: partitions move while their jobs flow.
    eventually(Duration::from_secs(30), "some work done", || async {
        applied_total(&env, graphs).await >= 100
    })
    .await;
    workers.push(worker(&env, &[]));
    let mut saw_three_owners = false;
    let started = std::time::Instant::now();
    loop {
        saw_three_owners |= lease_owners(&env).await.len() == 3;
        if applied_total(&env, graphs).await == (graphs * per_graph) as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "all jobs applied within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_three_owners,
        "the three processes shared the partitions"
    );
    assert_logs_in_order_exactly_once(&env, graphs, per_graph).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_worker_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start().await;
    let q = env.queue("commands", commands_opts());
    let (graphs, per_graph) = (20, 60);
    let mut victim = worker(&env, &[]);
    let _survivor = worker(&env, &[]);
    eventually(
        Duration::from_secs(20),
        "two workers share the partitions",
        || async {
            let owners = lease_owners(&env).await;
            owners.len() == 2 && owners.values().all(|n| *n == 8)
        },
    )
    .await;
    q.add_bulk(numbered_jobs(graphs, per_graph, |_| 5))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "a fifth of the work done",
        || async { applied_total(&env, graphs).await >= 240 },
    )
    .await;
    victim.kill9();
    let at_kill = applied_total(&env, graphs).await;
    assert!(
        at_kill < (graphs * per_graph) as u64,
        "killed while work remained"
    );
    eventually(Duration::from_secs(60), "every job applied", || async {
        applied_total(&env, graphs).await == (graphs * per_graph) as u64
    })
    .await;
    assert_logs_in_order_exactly_once(&env, graphs, per_graph).await;
    let stats = q.stats().await.unwrap();
    assert!(
        stats.counter("stalled") > 0,
        "the survivor took over entries the victim had in flight"
    );
    assert_eq!(q.dead_letters().count().await.unwrap(), 0);
    // Settled entries are acknowledged (and deleted) within `ack_delay_ms`.
    eventually(
        Duration::from_secs(5),
        "nothing left in the streams",
        || async { q.stats().await.unwrap().total(|p| p.length) == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_rate_limit_holds_within_ten_percent_across_two_processes() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start().await;
    let q = env.queue("commands", commands_opts());
    let limit = [
        ("GRAPHQ_QUEUES__COMMANDS__RATE_LIMIT__MAX", "50"),
        ("GRAPHQ_QUEUES__COMMANDS__RATE_LIMIT__DURATION_MS", "250"),
    ];
    let _a = worker(&env, &limit);
    let _b = worker(&env, &limit);
    eventually(
        Duration::from_secs(20),
        "two workers share the partitions",
        || async {
            let owners = lease_owners(&env).await;
            owners.len() == 2 && owners.values().all(|n| *n == 8)
        },
    )
    .await;
    let (graphs, per_graph) = (32, 25);
    q.add_bulk(numbered_jobs(graphs, per_graph, |_| 0))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "all 800 applied", || async {
        applied_total(&env, graphs).await == (graphs * per_graph) as u64
    })
    .await;

    // When each job took effect, by Redis' clock (bench.apply logs it).
    let mut conn = env.conn();
    let mut times = Vec::new();
    for g in 0..graphs {
        let entries: redis::streams::StreamRangeReply = conn
            .xrange_all(env.keys.graph(&format!("g{g}"), "bench:log"))
            .await
            .unwrap();
        times.extend(
            entries
                .ids
                .iter()
                .map(|e| e.get::<String>("at").unwrap().parse::<u64>().unwrap()),
        );
    }
    times.sort();
    assert_eq!(times.len(), 800);
    // After the initial burst of 50, permits come at 200/s.
    let steady = &times[50..];
    let secs = (steady[steady.len() - 1] - steady[0]) as f64 / 1e6;
    let rate = (steady.len() - 1) as f64 / secs;
    assert!(
        (180.0..=220.0).contains(&rate),
        "ran at {rate:.1} jobs/s; the shared limit is 200/s"
    );
    let limited = q.stats().await.unwrap().counter("rate_limited");
    assert!(limited > 0);
}

/// SIGTERM: the worker exits cleanly and leaves no lease to expire.
async fn stop_and_expect_leases_back(w: &mut Proc, env: &TestEnv) {
    let status = w
        .terminate(Duration::from_secs(15))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        lease_owners(env).await.is_empty(),
        "leases released, not left to expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_worker_and_hands_its_partitions_back() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start().await;
    let q = env.queue("commands", commands_opts());
    let mut w = worker(&env, &[]);
    eventually(
        Duration::from_secs(20),
        "worker owns every partition",
        || async { lease_owners(&env).await.values().sum::<usize>() == PARTITIONS as usize },
    )
    .await;
    // Slow jobs, so some are in flight when the signal arrives.
    q.add_bulk(numbered_jobs(4, 5, |_| 200)).await.unwrap();
    eventually(Duration::from_secs(10), "work started", || async {
        applied_total(&env, 4).await >= 1
    })
    .await;
    stop_and_expect_leases_back(&mut w, &env).await;
    let mut conn = env.conn();
    let registered: Vec<String> = conn
        .zrange(env.keys.workers("commands"), 0, -1)
        .await
        .unwrap();
    assert!(registered.is_empty(), "deregistered: {registered:?}");
    // What was in flight finished; nothing is stuck as pending.
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.total(|p| p.pending), 0);
    // A new worker finishes the rest, in order, once each.
    let _next = worker(&env, &[]);
    eventually(Duration::from_secs(30), "all applied", || async {
        applied_total(&env, 4).await == 20
    })
    .await;
    assert_logs_in_order_exactly_once(&env, 4, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_an_idle_worker_releases_its_leases_without_a_warning() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start().await;
    // Long blocking reads: when the signal comes, every partition has one in
    // flight on its own connection.
    let mut cmd = env.graphq();
    cmd.args(["worker", "--queue", "commands"])
        .env("GRAPHQ_QUEUES__COMMANDS__HEARTBEAT_MS", "200")
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "5000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut w = Proc {
        child: cmd.spawn().expect("spawn graphq"),
    };
    eventually(
        Duration::from_secs(20),
        "worker owns every partition",
        || async { lease_owners(&env).await.values().sum::<usize>() == PARTITIONS as usize },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_and_expect_leases_back(&mut w, &env).await;
    let mut log = String::new();
    if let Some(mut err) = w.child.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut log).unwrap();
    }
    assert!(
        !log.contains("WARN"),
        "a graceful stop of a healthy worker warns of nothing:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_worker_promptly_even_when_redis_is_gone() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::start().await;
    let mut w = worker(&env, &[]);
    eventually(
        Duration::from_secs(20),
        "worker owns every partition",
        || async { lease_owners(&env).await.values().sum::<usize>() == PARTITIONS as usize },
    )
    .await;
    env.server_mut().stop();
    // Leases and registration simply expire; nothing waits on reconnects
    // long enough to keep the worker from exiting.
    let status = w
        .terminate(Duration::from_secs(20))
        .expect("worker exits after SIGTERM without Redis");
    assert!(status.success(), "{status:?}");
}
