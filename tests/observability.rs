//! What operators watch: `/metrics` on gateway and worker (Prometheus text
//! whose figures move with the work), JSON logs whose lines carry the graph
//! and operation ids from the gateway through the worker and back, and the
//! demo token endpoint that only `graphq dev` opens.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::ws;
use common::{Proc, SECRET, Stack, TestEnv, eventually};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};

/// Every sample of a scrape, by metric name and sorted labels; panics when
/// the text is not valid Prometheus exposition format.
fn scrape_parse(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = format!("{}{{{}}}", sample.metric, labels.join(","));
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    // Every line is a comment or a sample: the parser skips what it does not
    // know, so check that nothing was skipped.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            line.rsplit_once(' ')
                .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
            "not a sample line: {line}"
        );
    }
    out
}

async fn scrape(base: &str) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    scrape_parse(&response.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metrics_parse_and_move_with_work() {
    let env = TestEnv::start().await;
    let stack = Stack::start(&env, GatewaySettings::default()).await;
    let before = scrape(&stack.url).await;
    assert!(
        before.contains_key("graphq_queue_length{queue=commands}"),
        "queue gauges are read from Redis: {:?}",
        before.keys().collect::<Vec<_>>()
    );

    let token = stack.token("alice", &["g1"], Role::Editor);
    let mut sub = ws::Client::with_token(&stack.ws, &token).await;
    sub.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    sub.next_of("SYNC").await;
    let during = scrape(&stack.url).await;
    assert!(get(&during, "graphq_ws_connections{}") >= 1.0);
    assert!(get(&during, "graphq_ws_subscriptions{}") >= 1.0);

    let http = reqwest::Client::new();
    for i in 0..5 {
        let cmd = json!({"operationId": format!("m{i}"), "type": "CREATE_NODE",
            "payload": {"node": {"id": format!("n{i}"), "position": {"x": i, "y": 0}}}});
        let r = http
            .post(format!("{}/api/v2/graphs/g1/command?wait=5000", stack.url))
            .bearer_auth(&token)
            .json(&cmd)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        sub.next_of("COMMAND_APPLIED").await;
    }
    // Bad input is counted by its code.
    let r = http
        .post(format!("{}/api/v2/graphs/g1/command", stack.url))
        .bearer_auth(&token)
        .json(&json!({"operationId": "bad", "type": "CREATE_NODE", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let after = scrape(&stack.url).await;
    let moved = |key: &str| get(&after, key) - get(&before, key);
    // Other tests in this binary share the process-wide recorder, so the
    // figures grow by at least what this test did.
    assert!(moved("graphq_commands_accepted_total{}") >= 5.0);
    assert!(moved("graphq_jobs_processed_total{queue=commands}") >= 5.0);
    assert!(
        moved("graphq_command_latency_seconds{}") >= 5.0,
        "histogram count"
    );
    assert!(
        moved("graphq_broadcast_latency_seconds{}") >= 5.0,
        "histogram count"
    );
    let rejected: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("graphq_commands_rejected_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(rejected >= 1.0, "{after:?}");
    drop(sub);
    eventually(
        Duration::from_secs(5),
        "the socket is counted out",
        || async {
            get(&scrape(&stack.url).await, "graphq_ws_connections{}")
                < get(&during, "graphq_ws_connections{}")
        },
    )
    .await;
}

#[tokio::test]
async fn demo_tokens_only_under_dev() {
    let env = TestEnv::start().await;
    let http = reqwest::Client::new();
    let plain = Stack::start(&env, GatewaySettings::default()).await;
    let r = http
        .post(format!("{}/api/v2/dev/token", plain.url))
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a gateway outside dev mints nothing");

    let dev = Stack::start(
        &env,
        GatewaySettings {
            dev_tokens: true,
            ..GatewaySettings::default()
        },
    )
    .await;
    let r = http
        .post(format!("{}/api/v2/dev/token", dev.url))
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["userId"], "alice");
    let token = body["token"].as_str().unwrap();
    let identity = dev.auth.verify(token).unwrap();
    assert_eq!(identity.user, "alice");
    let r = http
        .get(format!("{}/api/v2/graphs/any/state", dev.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an editor token for every graph");

    for bad in [
        json!({"user": "no spaces allowed"}),
        json!({"user": "bob", "role": "admin"}),
        json!({}),
    ] {
        let r = http
            .post(format!("{}/api/v2/dev/token", dev.url))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // The page and its scripts are served.
    for (path, kind) in [
        ("/", "text/html"),
        ("/graphq-client.js", "text/javascript"),
        ("/device-store.js", "text/javascript"),
        ("/sw.js", "text/javascript"),
    ] {
        let r = http.get(format!("{}{path}", dev.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
}

/// JSON lines of a child's stderr.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// True when the line, or one of the spans it is in, has `field = value`.
fn carries(line: &Value, field: &str, value: &str) -> bool {
    let here = line["fields"][field] == value || line[field] == value;
    let spans = line["spans"]
        .as_array()
        .is_some_and(|s| s.iter().any(|span| span[field] == value));
    here || spans || line["span"][field] == value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_and_logs_follow_an_operation_across_processes() {
    let env = TestEnv::start().await;
    let logs = tempfile::tempdir().unwrap();
    let spawn_logged = |mut cmd: std::process::Command, name: &str| {
        let file = std::fs::File::create(logs.path().join(name)).unwrap();
        cmd.env("RUST_LOG", "graphq=debug")
            .env("GRAPHQ_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(file);
        Proc {
            child: cmd.spawn().expect("spawn graphq"),
        }
    };
    let gw_port = graphq::redis_server::free_port().unwrap();
    let metrics_port = graphq::redis_server::free_port().unwrap();
    let mut cmd = env.graphq();
    cmd.args(["gateway", "--bind", &format!("127.0.0.1:{gw_port}")])
        .env("GRAPHQ_AUTH_SECRET", SECRET);
    let _gateway = spawn_logged(cmd, "gateway.log");
    let mut cmd = env.graphq();
    cmd.args(["worker", "--queue", "commands"])
        .env("GRAPHQ_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200");
    let _worker = spawn_logged(cmd, "worker.log");
    let gateway = format!("http://127.0.0.1:{gw_port}");
    let worker = format!("http://127.0.0.1:{metrics_port}");
    for base in [&gateway, &worker] {
        eventually(Duration::from_secs(30), "ready", || async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    let auth = graphq::auth::Auth::new(SECRET).unwrap();
    let token = auth
        .mint(
            "alice",
            graphq::auth::Graphs::All,
            Role::Editor,
            Duration::from_secs(600),
        )
        .unwrap();
    let mut sub = ws::Client::connect(
        &format!("ws://127.0.0.1:{gw_port}"),
        &format!("/ws?token={token}"),
    )
    .await;
    sub.send(json!({"type": "SUBSCRIBE", "graphId": "traced", "clientVersion": 0}))
        .await;
    sub.next_of("SYNC").await;
    let r = reqwest::Client::new()
        .post(format!("{gateway}/api/v2/graphs/traced/command?wait=10000"))
        .bearer_auth(&token)
        .json(&json!({"operationId": "op-traced-1", "type": "CREATE_NODE",
            "payload": {"node": {"id": "a", "position": {"x": 0, "y": 0}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sub.next_of("COMMAND_APPLIED").await["operationId"],
        "op-traced-1"
    );

    // The worker counts the job once it is acknowledged, which may be a
    // moment after subscribers hear COMMAND_APPLIED.
    let processed = "graphq_jobs_processed_total{queue=commands}";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut m = scrape(&worker).await;
    while get(&m, processed) == 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = scrape(&worker).await;
    }
    assert_eq!(get(&m, processed), 1.0);
    assert_eq!(get(&m, "graphq_command_latency_seconds{}"), 1.0);
    assert!(
        m.contains_key("graphq_queue_pending{queue=commands}"),
        "queue gauges of the worker's queues: {m:?}"
    );

    // The operation can be followed through the logs of both processes.
    let follow = |file: &str, message: &'static str| {
        let path = logs.path().join(file);
        move || {
            let path = path.clone();
            async move {
                json_lines(&path).iter().any(|l| {
                    l["fields"]["message"] == message
                        && carries(l, "operation_id", "op-traced-1")
                        && carries(l, "graph_id", "traced")
                })
            }
        }
    };
    eventually(
        Duration::from_secs(5),
        "gateway logs the accept",
        follow("gateway.log", "command accepted"),
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "worker logs the apply",
        follow("worker.log", "command settled"),
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "gateway logs the delivery",
        follow("gateway.log", "COMMAND_APPLIED delivered"),
    )
    .await;
}
