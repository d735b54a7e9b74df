//! `graphq bench e2e` and `graphq bench fanout` (BENCHMARKS.md) against a running
//! gateway and worker: their JSON carries the fields BENCHMARKS.md records, and at a
//! rate far below capacity every command comes back exactly once, in every
//! round of a ramp.

mod common;

use std::process::Stdio;

use common::TestEnv;
use common::load::Cluster;
use serde_json::Value;

/// One partition for graph commands: every graph shares it, so an operation
/// id the load generator reused across rounds would be deduplicated (and
/// never applied) every time, not only when two graphs happen to collide.
const ONE_PARTITION: (&str, &str) = ("GRAPHQ_QUEUES__COMMANDS__PARTITIONS", "1");

/// `graphq bench fanout` opens every socket as one user, as
/// benches/gateway.sh does; the per-user socket cap is lifted for it there too.
const SOCKETS_UNCAPPED: (&str, &str) = ("GRAPHQ_GATEWAY__MAX_SOCKETS_PER_USER", "0");

/// One gateway and one worker on the test's Redis.
async fn stack() -> Cluster {
    Cluster::start(
        TestEnv::start().await,
        1,
        1,
        &[ONE_PARTITION, SOCKETS_UNCAPPED],
    )
    .await
}

/// Runs `graphq bench ARGS` and parses the one JSON document it prints.
fn bench(c: &Cluster, args: &[&str]) -> Value {
    let mut cmd = c.command(&["bench"]);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().expect("graphq bench runs");
    assert!(
        out.status.success(),
        "graphq bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_percentiles(v: &Value, what: &str) {
    let p: Vec<f64> = ["p50", "p95", "p99", "max"]
        .iter()
        .map(|k| {
            v[*k]
                .as_f64()
                .unwrap_or_else(|| panic!("{what}.{k} in {v}"))
        })
        .collect();
    assert!(p[0] > 0.0, "{what}: latencies were measured: {v}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{what} ordered: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_reports_every_command_once_with_its_latencies() {
    let c = stack().await;
    let url = format!("ws://{}", c.addr(0));
    let redis = c.env.server().url();
    let (gateway, worker) = (c.gateway_pid(0).to_string(), c.worker_pid(0).to_string());
    let r = bench(
        &c,
        &[
            "e2e",
            "--url",
            &url,
            "--redis-url",
            &redis,
            "--gateway-pid",
            &gateway,
            "--worker-pid",
            &worker,
            "--clients",
            "4",
            "--graphs",
            "2",
            "--rate",
            "40",
            "--duration",
            "2",
            "--ramp",
            "60",
        ],
    );
    assert_eq!(r["bench"], "e2e");
    let sent = r["sent"].as_u64().unwrap();
    // 40 commands/s for 2 s, give or take a tick per client.
    assert!((70..=90).contains(&sent), "sent {sent}: {r}");
    assert_eq!(r["applied"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["reverted"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    let achieved = r["achieved_per_s"].as_u64().unwrap();
    assert!((35..=45).contains(&achieved), "achieved {achieved}: {r}");
    // Two clients per graph: each sees its own changes and the other's.
    assert_percentiles(&r["own_applied_ms"], "own_applied_ms");
    assert_percentiles(&r["others_applied_ms"], "others_applied_ms");
    let ramp = r["ramp"].as_array().unwrap();
    let rates: Vec<u64> = ramp.iter().map(|s| s["rate"].as_u64().unwrap()).collect();
    assert_eq!(rates, [40, 60], "{r}");
    assert!(ramp.iter().all(|s| s["lost"] == 0), "{r}");
    assert_eq!(r["highest_sustained_rate"], 60, "{r}");
    // What Redis spent: every applied command ran at least its apply
    // script, and Redis counted CPU time for it.
    let cpu = r["redis_cpu_us_per_command"].as_f64().unwrap_or(0.0);
    assert!(cpu > 0.0, "Redis CPU per command: {r}");
    let by_name = &r["redis_commands_by_name"];
    assert!(by_name["evalsha"].as_f64().unwrap_or(0.0) >= 1.0, "{r}");
    assert!(
        by_name.get("info").is_none(),
        "the measurement's own reads are left out: {r}"
    );
    let total = r["redis_commands_per_command"].as_f64().unwrap_or(0.0);
    let summed: f64 = by_name
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_f64)
        .sum();
    assert!((total - summed).abs() < 1e-6 && total > 1.0, "{r}");
    assert!(
        ramp.iter()
            .all(|s| s["redis_cpu_us_per_command"].as_f64().is_some()),
        "each ramp step has its Redis CPU: {r}"
    );
    // Where the rest of a command's CPU went: the gateway admitted and
    // delivered, the worker applied, the load generator sent and heard.
    // (CPU time comes in clock ticks of 10 ms: at this low rate one part
    // alone may spend less than a tick in the round, all three cannot.)
    let share = &r["cpu_us_per_command"];
    let parts: Vec<f64> = ["gateway", "worker", "load_generator"]
        .iter()
        .map(|part| {
            share[*part]
                .as_f64()
                .unwrap_or_else(|| panic!("{part} CPU per command: {r}"))
        })
        .collect();
    assert!(parts.iter().sum::<f64>() > 0.0, "CPU per command: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_delivers_each_change_to_every_subscriber() {
    let c = stack().await;
    let url = format!("ws://{}", c.addr(0));
    let pid = c.gateway_pid(0).to_string();
    let r = bench(
        &c,
        &[
            "fanout",
            "--url",
            &url,
            "--subscribers",
            "50",
            "--messages",
            "3",
            "--gateway-pid",
            &pid,
        ],
    );
    assert_eq!(r["bench"], "fanout");
    assert_eq!(r["connected"], 50, "{r}");
    assert_eq!(r["deliveries_expected"], 150, "{r}");
    assert_eq!(r["deliveries"], 150, "{r}");
    assert_percentiles(&r["latency_ms"], "latency_ms");
    assert!(
        r["gateway_kib_per_connection"].as_f64().is_some(),
        "memory per connection measured: {r}"
    );
}
