//! deploy/: the Grafana dashboard and the Prometheus alert rules, checked
//! against what a live gateway and worker export on `/metrics`, against
//! `promtool`, and against the runbooks of docs/operations.md they name.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::ws;
use common::{Proc, SECRET, TestEnv, eventually};
use graphq::auth::Role;
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/graphq.json"))
        .expect("the dashboard is JSON")
}

fn yaml(path: &str) -> Yaml {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

/// Every alert rule of deploy/prometheus/alerts.yml.
fn alerts() -> Vec<Yaml> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("rules").clone())
        .collect()
}

/// The PromQL of every dashboard panel.
fn panel_queries(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_string())
        .collect()
}

/// The graphq metric names a query reads (`graphq_…`).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("graphq_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Names of the series a `/metrics` page holds (histograms as
/// `_bucket`, `_sum` and `_count`).
async fn exported(base: &str) -> BTreeSet<String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_on_a_live_metrics_page() {
    let env = TestEnv::start().await;
    let gw_port = graphq::redis_server::free_port().unwrap();
    let metrics_port = graphq::redis_server::free_port().unwrap();
    let quiet = |mut cmd: std::process::Command| {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Proc::spawn(cmd)
    };
    let mut cmd = env.graphq();
    cmd.args(["gateway", "--bind", &format!("127.0.0.1:{gw_port}")])
        .env("GRAPHQ_AUTH_SECRET", SECRET);
    let _gateway = quiet(cmd);
    let mut cmd = env.graphq();
    cmd.args(["worker"])
        .env("GRAPHQ_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
        .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200");
    let _worker = quiet(cmd);
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
    // Work that makes every kind of figure appear: a subscriber, an
    // applied command (both latencies), a refused one.
    let token = graphq::auth::Auth::new(SECRET)
        .unwrap()
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
    sub.send(json!({"type": "SUBSCRIBE", "graphId": "watched", "clientVersion": 0}))
        .await;
    sub.next_of("SYNC").await;
    let http = reqwest::Client::new();
    let command = |id: &str| {
        json!({"operationId": id, "type": "CREATE_NODE",
            "payload": {"node": {"id": "a", "position": {"x": 0, "y": 0}}}})
    };
    let r = http
        .post(format!(
            "{gateway}/api/v2/graphs/watched/command?wait=10000"
        ))
        .bearer_auth(&token)
        .json(&command("m1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sub.next_of("COMMAND_APPLIED").await;
    let r = http
        .post(format!("{gateway}/api/v2/graphs/watched/command"))
        .bearer_auth(&token)
        .json(&command("not an id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The worker records the command's latency as it acknowledges the job,
    // which may be a moment after subscribers hear of it.
    let scrape_both = || async {
        let mut live = exported(&gateway).await;
        live.extend(exported(&worker).await);
        live
    };
    eventually(
        Duration::from_secs(10),
        "both latency histograms exported",
        || async {
            let live = scrape_both().await;
            live.contains("graphq_command_latency_seconds_bucket")
                && live.contains("graphq_broadcast_latency_seconds_bucket")
        },
    )
    .await;
    let live = scrape_both().await;

    let mut named = BTreeSet::new();
    for query in panel_queries(&dashboard()) {
        named.extend(metric_names(&query));
    }
    let dashboard_names = named.len();
    for rule in alerts() {
        named.extend(metric_names(rule["expr"].as_str().expect("an expr")));
    }
    assert!(
        dashboard_names >= 15,
        "the dashboard covers the metrics: {named:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|n| !live.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not on /metrics: {missing:?}\nexported: {live:?}"
    );
}

/// promtool, which Debian's `prometheus` package ships (scripts/ensure-deps
/// installs it). Missing, the test fails: it does not skip.
fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo("."))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool could not be run ({e}): install it with scripts/ensure-deps \
                 (Debian package `prometheus`)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_prometheus_config() {
    let rules = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(
        rules.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{rules}"
    );
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

/// GitHub-style anchors of the headings of a Markdown text.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_names_a_runbook_of_operations_md_and_a_severity() {
    let headings = anchors(&read("docs/operations.md"));
    let rules = alerts();
    assert!(rules.len() >= 5, "{rules:?}");
    let mut runbooks = BTreeSet::new();
    for rule in rules {
        let name = rule["alert"].as_str().expect("an alert name");
        let runbook = rule["annotations"]["runbook"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a runbook annotation"));
        let anchor = runbook
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: {runbook} is not in docs/operations.md"));
        assert!(
            headings.contains(anchor),
            "{name}: no heading for #{anchor} in {headings:?}"
        );
        runbooks.insert(anchor.to_string());
        assert!(
            ["critical", "warning", "info"]
                .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: a severity"
        );
    }
    // The runbooks the rules were written for.
    for runbook in [
        "a-stuck-partition",
        "replay-the-dead-letter-stream",
        "redis-restart",
        "scaling-workers",
    ] {
        assert!(runbooks.contains(runbook), "no alert for {runbook}");
    }
}

#[test]
fn the_monitoring_profile_loads_the_rules_and_the_dashboard() {
    let provisioned = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = provisioned["datasources"][0]["uid"]
        .as_str()
        .expect("a uid");
    let board = dashboard();
    let mut ids = BTreeSet::new();
    for panel in board["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().expect("a panel id")));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "{}",
            panel["title"]
        );
    }
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(prometheus["rule_files"][0].as_str(), Some("alerts.yml"));

    let compose = yaml("docker-compose.yml");
    for service in ["prometheus", "grafana"] {
        let s = &compose["services"][service];
        assert_eq!(
            s["profiles"][0].as_str(),
            Some("monitoring"),
            "{service} runs only with --profile monitoring"
        );
        for volume in s["volumes"].as_vec().expect("volumes") {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                repo(source).exists(),
                "{service} mounts {source}, which exists"
            );
        }
    }
    let grafana_mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let dashboards = yaml("deploy/grafana/provisioning/dashboards/graphq.yml");
    let path = dashboards["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        grafana_mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/dashboards:")
                && m.split(':').nth(1) == Some(path)),
        "the dashboards folder is mounted where the provider reads: {grafana_mounts:?}"
    );
}
