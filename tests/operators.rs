//! The operator CLI while work is in flight: `graphq queues` against what
//! Redis itself says, dead-letter replay with a worker running, and progress
//! on stderr for long replays with stdout left to the result.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Proc, TestEnv, eventually, fast};
use graphq::config::{Config, Overrides};
use graphq::graph::{GraphSettings, GraphStore};
use graphq::queue::{FnProcessor, JobError, NewJob, Priority, Queue, QueueOptions, Worker};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The queue options the `graphq` binary runs with (config/default.toml), so
/// the test's producers and workers use the partitions the CLI reads.
fn shipped(name: &str) -> QueueOptions {
    Config::load(None, Vec::new(), &Overrides::default())
        .unwrap()
        .queues[name]
        .clone()
}

/// Runs `graphq ARGS` to completion within `within` (killed and failed
/// otherwise); returns success, stdout and stderr.
fn run_within(env: &TestEnv, args: &[&str], within: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = env
        .graphq()
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("graphq runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`graphq {}` still running after {within:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

fn run(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    run_within(env, args, Duration::from_secs(30))
}

fn run_json(env: &TestEnv, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(env, args);
    assert!(ok, "graphq {}: {stderr}", args.join(" "));
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "graphq {}: stdout is not one JSON document ({e}):\n{stdout}",
            args.join(" ")
        )
    })
}

/// What Redis says about one partition, read with plain commands.
#[derive(Debug, PartialEq)]
struct Seen {
    length: u64,
    pending: u64,
    dead: u64,
    delayed: u64,
    owner: Option<String>,
}

async fn seen_by_redis(env: &TestEnv, q: &Queue) -> (bool, BTreeMap<u16, Seen>) {
    let mut conn = env.conn();
    let k = &env.keys;
    let paused: bool = conn.exists(k.paused(q.name())).await.unwrap();
    let mut out = BTreeMap::new();
    for p in q.partitions() {
        let mut seen = Seen {
            length: 0,
            pending: 0,
            dead: conn.xlen(k.dlq(q.name(), p)).await.unwrap(),
            delayed: conn.zcard(k.delayed(q.name(), p)).await.unwrap(),
            owner: conn.get(k.lease(q.name(), p)).await.unwrap(),
        };
        for prio in Priority::ALL {
            let stream = k.stream(q.name(), p, prio.lane());
            seen.length += conn.xlen::<_, u64>(&stream).await.unwrap();
            // XPENDING's summary: [count, min id, max id, consumers]; no group yet: nothing pending.
            let summary: redis::RedisResult<(u64, redis::Value, redis::Value, redis::Value)> =
                redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg("workers")
                    .query_async(&mut conn)
                    .await;
            seen.pending += summary.map(|s| s.0).unwrap_or(0);
        }
        out.insert(p, seen);
    }
    (paused, out)
}

fn seen_by_cli(report: &Value, queue: &str) -> (bool, BTreeMap<u16, Seen>) {
    let q = report
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .unwrap_or_else(|| panic!("no {queue} in {report}"));
    let n = |v: &Value| v.as_u64().unwrap();
    let parts = q["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                n(&p["partition"]) as u16,
                Seen {
                    length: n(&p["length"]),
                    pending: n(&p["pending"]),
                    dead: n(&p["dead_lettered_now"]),
                    delayed: n(&p["delayed"]),
                    owner: p["owner"].as_str().map(String::from),
                },
            )
        })
        .collect();
    (q["paused"].as_bool().unwrap(), parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_json_agrees_with_redis_per_partition_while_jobs_are_in_flight() {
    let env = TestEnv::start().await;
    // Scripts loaded before the worker starts: a bulk enqueue that meets an
    // empty script cache while another process fills it can add some jobs
    // twice (query_pipeline re-sends the whole pipeline), which is not what
    // this test is about.
    graphq::scripts::SCRIPTS
        .load_all(&mut env.conn())
        .await
        .unwrap();
    // A worker that reads at most two entries at a time, so a backlog
    // behind a held job stays undelivered (lag).
    let commands = env.queue(
        "commands",
        fast(QueueOptions {
            batch_size: 2,
            ..shipped("commands")
        }),
    );
    let release = CancellationToken::new();
    let r = release.clone();
    let worker = Worker::new(
        commands.clone(),
        FnProcessor(move |job: graphq::queue::Job| {
            let r = r.clone();
            async move {
                match job.name.as_str() {
                    "hold" => {
                        r.cancelled().await;
                        Ok(())
                    }
                    "poison" => Err(JobError::Permanent("poisoned".into())),
                    _ => Ok(()),
                }
            }
        }),
    );
    let counters = worker.counters();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));

    // First jobs that settle: most complete, some are dead-lettered.
    let settled: Vec<NewJob> = (0..20)
        .map(|k| {
            NewJob::new(if k % 4 == 0 { "poison" } else { "ok" }, "").key(format!("graph-{k}"))
        })
        .collect();
    let (settle_ok, settle_dead) = (15u64, 5u64);
    commands.add_bulk(settled).await.unwrap();
    let dlq = commands.dead_letters();
    eventually(Duration::from_secs(20), "the first jobs settle", || async {
        counters
            .processed
            .load(std::sync::atomic::Ordering::Relaxed)
            == settle_ok
            && dlq.count().await.unwrap() == settle_dead
    })
    .await;
    // Their acknowledgements go out within `ack_delay_ms`: after that,
    // nothing but the held partitions moves while the CLI reads.
    eventually(
        Duration::from_secs(10),
        "the settled jobs are acknowledged",
        || async { commands.stats().await.unwrap().total(|p| p.pending) == 0 },
    )
    .await;
    // Then a held job at the head of a few partitions, with a backlog behind it.
    let mut held = std::collections::HashSet::new();
    for k in [100, 101, 102] {
        let key = format!("graph-{k}");
        held.insert(commands.partition_for(Some(&key), ""));
        let mut jobs = vec![NewJob::new("hold", "").key(&key)];
        jobs.extend((0..4).map(|_| NewJob::new("ok", "").key(&key)));
        commands.add_bulk(jobs).await.unwrap();
    }

    // sync: paused with jobs waiting. analytics: jobs due in an hour.
    let sync = env.queue("sync", shipped("sync"));
    sync.pause().await.unwrap();
    sync.add_bulk(
        (0..7)
            .map(|i| NewJob::new("SYNC_CLIENT", i.to_string()))
            .collect(),
    )
    .await
    .unwrap();
    let analytics = env.queue("analytics", shipped("analytics"));
    for i in 0..3 {
        analytics
            .add(NewJob::new("CALCULATE_PROGRESS", i.to_string()).delay(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    analytics
        .add(NewJob::new("UPDATE_METRICS", ""))
        .await
        .unwrap();

    eventually(
        Duration::from_secs(10),
        "the held partitions are in flight",
        || async {
            let (_, parts) = seen_by_redis(&env, &commands).await;
            eprintln!(
                "{:?}",
                held.iter().map(|p| (p, &parts[p])).collect::<Vec<_>>()
            );
            held.iter().all(|p| parts[p].pending >= 1)
        },
    )
    .await;

    let mut before = Vec::new();
    for q in [&commands, &sync, &analytics] {
        before.push(seen_by_redis(&env, q).await);
    }
    let report = run_json(&env, &["queues", "--json"]);
    for (q, redis_view) in [&commands, &sync, &analytics].iter().zip(&before) {
        let (paused, parts) = seen_by_cli(&report, q.name());
        assert_eq!(paused, redis_view.0, "{}: paused", q.name());
        assert_eq!(parts.len(), q.options().partitions as usize);
        for (p, seen) in &redis_view.1 {
            assert_eq!(&parts[p], seen, "{} partition {p}", q.name());
        }
        assert_eq!(
            seen_by_redis(&env, q).await.1,
            redis_view.1,
            "{}: nothing moved while the CLI read",
            q.name()
        );
    }
    // What an operator reads off that: work held in flight, a backlog
    // behind it, dead letters, a paused queue, jobs waiting for their time.
    let cmd = seen_by_cli(&report, "commands").1;
    for p in &held {
        assert!(
            cmd[p].pending >= 1,
            "partition {p}: the held job is in flight"
        );
        assert!(cmd[p].length > cmd[p].pending, "partition {p}: a backlog");
        assert!(cmd[p].owner.is_some(), "partition {p} has an owner");
    }
    assert_eq!(cmd.values().map(|s| s.dead).sum::<u64>(), settle_dead);
    let q = |name: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == name)
            .unwrap()
            .clone()
    };
    let commands_json = q("commands");
    let lag: u64 = commands_json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_u64().unwrap())
        .sum();
    assert_eq!(
        lag,
        cmd.values().map(|s| s.length - s.pending).sum::<u64>(),
        "lag: entries not delivered yet"
    );
    let processed: u64 = commands_json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["counters"]["processed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(processed, settle_ok);
    assert!(seen_by_cli(&report, "sync").0, "sync is paused");
    assert_eq!(seen_by_cli(&report, "sync").1[&0].length, 7);
    assert_eq!(seen_by_cli(&report, "analytics").1[&0].delayed, 3);
    assert_eq!(seen_by_cli(&report, "analytics").1[&0].length, 1);

    // The table says the same as the JSON, row by row.
    let (ok, table, _) = run(&env, &["queues"]);
    assert!(ok);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    for (queue, parts) in [("commands", &cmd)] {
        for (p, seen) in parts.iter() {
            let row = rows
                .iter()
                .find(|r| r[0] == queue && r[1] == p.to_string())
                .unwrap_or_else(|| panic!("no row for {queue} {p}:\n{table}"));
            assert_eq!(row[2], seen.length.to_string(), "LENGTH of {queue} {p}");
            assert_eq!(row[3], seen.pending.to_string(), "PENDING of {queue} {p}");
            assert_eq!(row[6], seen.dead.to_string(), "DLQ of {queue} {p}");
        }
    }
    assert!(
        rows.iter().any(|r| r[0] == "sync" && r[10] == "yes"),
        "{table}"
    );

    // Released, the backlog drains and the numbers follow.
    release.cancel();
    eventually(Duration::from_secs(20), "the backlog drains", || async {
        let report = run_json(&env, &["queues", "--json"]);
        let parts = seen_by_cli(&report, "commands").1;
        parts.values().all(|s| s.length == 0 && s.pending == 0)
    })
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A graph with a few nodes, applied the way the worker would.
async fn seed_graph(env: &TestEnv, graph: &str, nodes: usize) {
    let store = GraphStore::new(
        env.redis.clone(),
        env.keys.clone(),
        GraphSettings::default(),
    );
    for i in 0..nodes {
        let c = json!({"operationId": format!("{graph}-c{i}"), "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        common::apply_as(&store, graph, "ops", c).await;
    }
}

/// A `graphq worker` process for one queue, with retries quick enough for a test.
fn worker_process(env: &TestEnv, queue: &str) -> Proc {
    let up = queue.to_ascii_uppercase();
    let mut cmd = env.graphq();
    cmd.args(["worker", "--queue", queue])
        .env(format!("GRAPHQ_QUEUES__{up}__BACKOFF_BASE_MS"), "10")
        .env(format!("GRAPHQ_QUEUES__{up}__PROMOTE_INTERVAL_MS"), "20")
        .env(format!("GRAPHQ_QUEUES__{up}__BLOCK_MS"), "200")
        .env(format!("GRAPHQ_QUEUES__{up}__HEARTBEAT_MS"), "200");
    Proc::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_snapshot_job_replayed_after_the_data_is_repaired_runs() {
    let env = TestEnv::start().await;
    seed_graph(&env, "g1", 5).await;
    // Someone broke the graph's meta hash: snapshots of g1 fail (WRONGTYPE).
    let meta = env.keys.graph_meta("g1");
    let aside = format!("{meta}:aside");
    let mut conn = env.conn();
    let _: () = conn.rename(&meta, &aside).await.unwrap();
    let _: () = conn.set(&meta, "not a hash").await.unwrap();

    let _worker = worker_process(&env, "analytics");
    let analytics = env.queue("analytics", shipped("analytics"));
    analytics
        .add(
            NewJob::new("GENERATE_SNAPSHOT", "")
                .key("g1")
                .id("snapshot:g1:by-hand"),
        )
        .await
        .unwrap();
    let mut dead = Value::Null;
    eventually(
        Duration::from_secs(20),
        "the snapshot job is dead-lettered",
        || {
            let found = run_json(&env, &["dlq", "list", "analytics", "--json"]);
            let done = found.as_array().is_some_and(|a| a.len() == 1);
            dead = found;
            async move { done }
        },
    )
    .await;
    let job = &dead[0];
    assert_eq!(job["name"], "GENERATE_SNAPSHOT");
    assert_eq!(job["attempts_made"], 3, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("WRONGTYPE"),
        "{job}"
    );
    let reference = format!("{}/{}", job["partition"], job["id"].as_str().unwrap());
    let (ok, shown, _) = run(&env, &["dlq", "show", "analytics", &reference]);
    assert!(ok && shown.contains("GENERATE_SNAPSHOT"), "{shown}");

    // Repair, then replay.
    let _: () = conn.del(&meta).await.unwrap();
    let _: () = conn.rename(&aside, &meta).await.unwrap();
    let replayed = run_json(&env, &["dlq", "retry", "analytics", &reference, "--json"]);
    assert_eq!(replayed["requeued"], 1);
    eventually(
        Duration::from_secs(10),
        "the snapshot is written",
        || async {
            env.conn()
                .exists::<_, bool>(env.keys.graph_snapshot("g1"))
                .await
                .unwrap()
        },
    )
    .await;
    let report = run_json(&env, &["queues", "--json"]);
    let analytics_report = report
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "analytics")
        .unwrap();
    let p0 = &analytics_report["partitions"][0];
    assert_eq!(p0["dead_lettered_now"], 0);
    assert_eq!(p0["counters"]["processed"], 1);
    assert_eq!(p0["counters"]["dead_lettered"], 1);
    let (ok, _, stderr) = run(&env, &["dlq", "retry", "analytics", &reference]);
    assert!(
        !ok && stderr.contains("no dead job"),
        "a replayed job is gone: {stderr}"
    );
    let (ok, verified, _) = run(&env, &["graph", "verify", "g1"]);
    assert!(ok, "{verified}");
    assert!(
        verified.contains("replayed 0 log entries from the snapshot at version 5"),
        "verify starts from the replayed job's snapshot:\n{verified}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_thousands_of_dead_jobs_shows_progress_and_ends_though_they_die_again() {
    let env = TestEnv::start().await;
    // Scripts loaded up front, as in the first test.
    graphq::scripts::SCRIPTS
        .load_all(&mut env.conn())
        .await
        .unwrap();
    let _worker = worker_process(&env, "commands");
    let commands = env.queue("commands", shipped("commands"));
    // No processor handles this name: each attempt dead-letters it at once.
    const N: usize = 2500;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::new("RETIRED_JOB_TYPE", i.to_string()).key(format!("g{}", i % 64)))
            .collect();
        commands.add_bulk(jobs).await.unwrap();
    }
    let dlq = commands.dead_letters();
    eventually(Duration::from_secs(60), "2500 dead jobs", || async {
        dlq.count().await.unwrap() == N as u64
    })
    .await;

    // The worker keeps killing what is replayed; the replay still ends, after
    // the jobs that were dead when it started.
    let (ok, stdout, stderr) = run_within(
        &env,
        &["dlq", "retry", "commands", "--json"],
        Duration::from_secs(120),
    );
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}):\n{stdout}"));
    assert_eq!(result, json!({"queue": "commands", "requeued": N}));
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("requeued "))
        .collect();
    assert_eq!(
        progress,
        [
            "requeued 1000/2500 dead jobs of commands",
            "requeued 2000/2500 dead jobs of commands"
        ],
        "progress on stderr:\n{stderr}"
    );
    eventually(
        Duration::from_secs(60),
        "every replayed job ran and died again",
        || async {
            commands.stats().await.unwrap().counter("dead_lettered") == 2 * N as u64
                && dlq.count().await.unwrap() == N as u64
        },
    )
    .await;

    let purged = run_json(&env, &["dlq", "purge", "commands", "--json"]);
    assert_eq!(purged, json!({"queue": "commands", "purged": N}));
    assert_eq!(dlq.count().await.unwrap(), 0);
    let (ok, stdout, _) = run(&env, &["dlq", "retry", "commands"]);
    assert!(ok);
    assert_eq!(stdout, "requeued 0 jobs\n");
}
