//! `graphq bench e2e` and `graphq bench fanout` (SPEC §8) against a running
//! gateway and worker: their JSON carries the fields SPEC names, and at a
//! rate far below capacity every command comes back exactly once, in every
//! round of a ramp.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Proc, SECRET, TestEnv, eventually};
use serde_json::Value;

struct Stack {
    _gateway: Proc,
    _worker: Proc,
    gateway_pid: u32,
    addr: String,
}

/// One partition for graph commands: every graph shares it, so an operation
/// id the load generator reused across rounds would be deduplicated (and
/// never applied) every time, not only when two graphs happen to collide.
const ONE_PARTITION: (&str, &str) = ("GRAPHQ_QUEUES__COMMANDS__PARTITIONS", "1");

async fn stack(env: &TestEnv) -> Stack {
    let port = graphq::redis_server::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut gw = env.graphq();
    gw.args(["gateway", "--bind", &addr])
        .env("GRAPHQ_AUTH_SECRET", SECRET)
        .env(ONE_PARTITION.0, ONE_PARTITION.1);
    let gateway = Proc::spawn(gw);
    let mut wk = env.graphq();
    wk.args(["worker", "--queue", "commands"])
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200")
        .env(ONE_PARTITION.0, ONE_PARTITION.1);
    let worker = Proc::spawn(wk);
    eventually(Duration::from_secs(30), "gateway ready", || async {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    Stack {
        gateway_pid: gateway.pid(),
        _gateway: gateway,
        _worker: worker,
        addr,
    }
}

/// Runs `graphq bench ARGS` and parses the one JSON document it prints.
fn bench(env: &TestEnv, args: &[&str]) -> Value {
    let mut cmd = env.graphq();
    cmd.arg("bench")
        .args(args)
        .env("GRAPHQ_AUTH_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    let env = TestEnv::start().await;
    let s = stack(&env).await;
    let url = format!("ws://{}", s.addr);
    let r = bench(
        &env,
        &[
            "e2e",
            "--url",
            &url,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_delivers_each_change_to_every_subscriber() {
    let env = TestEnv::start().await;
    let s = stack(&env).await;
    let url = format!("ws://{}", s.addr);
    let pid = s.gateway_pid.to_string();
    let r = bench(
        &env,
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
