//! Every key, channel and metric a full run writes is in docs/operations.md,
//! with its type, and the doc lists nothing a run does not write.
//!
//! A gateway and the workers of every queue run in this process exactly as
//! `graphq gateway` and `graphq worker` wire them (`cli::run_gateway`,
//! `cli::run_workers`), with snapshots, rate limits and quick timings turned
//! on through `GRAPHQ_*` settings. Clients then do what a full session does:
//! HTTP and WebSocket commands, presence, undo and redo, a REVERT, a command
//! that is dead-lettered, a rate-limited burst, delayed, repeatable and
//! rate-limited analytics jobs, a paused queue, a benchmark job. A sampler
//! SCANs the prefix all along, so keys that live only for a moment (leases,
//! attempts, delayed jobs, the redo list) are seen too, and a pattern
//! subscription records every channel published on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ws;
use common::{SECRET, TestEnv, eventually};
use futures_util::StreamExt;
use graphq::auth::{Auth, Graphs, Role};
use graphq::config::{Config, Overrides};
use graphq::queue::{NewJob, Priority};
use graphq_workers::app;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Placeholders as the doc may spell them, and the one spelling compared.
const ALIASES: [(&str, &str); 6] = [
    ("QUEUE", "Q"),
    ("PARTITION", "N"),
    ("GRAPH_ID", "G"),
    ("OPID", "OPERATION_ID"),
    ("USER_ID", "USER"),
    ("RATE_KEY", "KEY"),
];

/// A concrete key (or channel) as the pattern the doc would list for it.
fn pattern_of(prefix: &str, key: &str) -> String {
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) else {
        return key.to_string();
    };
    let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) else {
        return format!("P:{rest}");
    };
    let tag: Vec<&str> = rest[open + 1..close].split(':').collect();
    let tag = match tag.as_slice() {
        ["q", _, n] if n.parse::<u16>().is_ok() => "q:Q:N".to_string(),
        ["q", _] => "q:Q".to_string(),
        ["g", _] => "g:G".to_string(),
        ["rl", "gateway", _] => "rl:gateway:USER".to_string(),
        ["rl", _, ..] => "rl:Q:KEY".to_string(),
        ["u", _] => "u:USER".to_string(),
        ["op", ..] => "op:OPERATION_ID".to_string(),
        _ => rest[open + 1..close].to_string(),
    };
    let suffix = &rest[close + 1..];
    // Suffixes that end in an id: everything after the marker is that id.
    let suffix = [
        (":op:", "OPERATION_ID"),
        (":undo:", "USER"),
        (":redo:", "USER"),
        (":dedupe:", "JOB_ID"),
    ]
    .iter()
    .find_map(|(marker, id)| suffix.starts_with(marker).then(|| format!("{marker}{id}")))
    .unwrap_or_else(|| suffix.to_string());
    format!("P:{{{tag}}}{suffix}")
}

/// One documented pattern: its spelling and the type column's first word.
#[derive(Debug)]
struct Documented {
    pattern: String,
    kind: String,
}

/// The key table and the channel table of docs/operations.md's "Keys" section.
fn documented() -> (Vec<Documented>, BTreeSet<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Keys"))
        .expect("docs/operations.md has a Keys section");
    let mut keys = Vec::new();
    let mut channels = BTreeSet::new();
    let mut table = "";
    for line in section.lines() {
        if !line.starts_with('|') {
            table = "";
            continue;
        }
        let cells: Vec<String> = split_row(line);
        let first = cells[0].trim();
        if first == "pattern" || first == "channel" {
            table = if first == "pattern" {
                "keys"
            } else {
                "channels"
            };
            continue;
        }
        let Some(spelled) = first.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        let mut spelled = spelled.to_string();
        for (alias, canonical) in ALIASES {
            spelled = spelled.replace(alias, canonical);
        }
        // `a:b:x|y|z` stands for a:b:x, a:b:y and a:b:z.
        let (stem, last) = spelled.rsplit_once(':').unwrap();
        for alt in last.split('|') {
            let pattern = format!("{stem}:{alt}");
            match table {
                "keys" => keys.push(Documented {
                    pattern,
                    kind: cells[1]
                        .split(|c: char| !c.is_ascii_alphabetic())
                        .next()
                        .unwrap()
                        .to_string(),
                }),
                "channels" => {
                    channels.insert(pattern);
                }
                _ => panic!("a row outside a pattern/channel table: {line}"),
            }
        }
    }
    (keys, channels)
}

/// Metric name → type, from the table of the "Metrics" section.
fn documented_metrics() -> BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Metrics"))
        .expect("docs/operations.md has a Metrics section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells = split_row(l);
            (cells[0].trim_matches('`').to_string(), cells[1].clone())
        })
        .collect()
}

/// The cells of a Markdown table row; `\|` stays inside its cell as `|`.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().unwrap().push('|');
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

/// Keys (with their type) and channels seen under the prefix.
#[derive(Default)]
struct Seen {
    keys: BTreeMap<String, String>,
    channels: BTreeSet<String>,
}

async fn sample(redis: &graphq::db::Redis, prefix: &str, seen: &Mutex<Seen>) {
    let mut conn = redis.conn();
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in batch {
            if seen.lock().unwrap().keys.contains_key(&key) {
                continue;
            }
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if kind != "none" {
                seen.lock().unwrap().keys.insert(key, kind);
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    seen.lock().unwrap().channels.extend(channels);
}

fn settings(env: &TestEnv, bind: &str) -> Config {
    let vars = [
        ("GRAPHQ_GRAPH__SNAPSHOT_EVERY", "5"),
        ("GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX", "20"),
        ("GRAPHQ_GATEWAY__USER_RATE_LIMIT__DURATION_MS", "60000"),
        // Limiter state lives about one emission interval (period / max):
        // long enough here for the sampler to see it.
        ("GRAPHQ_QUEUES__ANALYTICS__RATE_LIMIT__MAX", "10"),
        ("GRAPHQ_QUEUES__ANALYTICS__RATE_LIMIT__DURATION_MS", "1000"),
        ("GRAPHQ_QUEUES__ANALYTICS__KEY_RATE_LIMIT__MAX", "10"),
        (
            "GRAPHQ_QUEUES__ANALYTICS__KEY_RATE_LIMIT__DURATION_MS",
            "1000",
        ),
        // A failing command retries for about 0.6 s: long enough to be seen.
        ("GRAPHQ_QUEUES__COMMANDS__BACKOFF_BASE_MS", "200"),
    ];
    let mut env_vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for q in ["COMMANDS", "SYNC", "ANALYTICS"] {
        for (k, v) in [
            ("LEASE_TTL_MS", "1000"),
            ("HEARTBEAT_MS", "100"),
            ("BLOCK_MS", "200"),
            ("PROMOTE_INTERVAL_MS", "20"),
            ("PAUSE_POLL_MS", "50"),
            ("SHUTDOWN_TIMEOUT_MS", "2000"),
        ] {
            env_vars.push((format!("GRAPHQ_QUEUES__{q}__{k}"), v.to_string()));
        }
    }
    // Other queues' backoffs stay short.
    env_vars.push((
        "GRAPHQ_QUEUES__ANALYTICS__BACKOFF_BASE_MS".into(),
        "10".into(),
    ));
    env_vars.push(("GRAPHQ_QUEUES__SYNC__BACKOFF_BASE_MS".into(), "10".into()));
    let flags = Overrides {
        redis_url: Some(env.server().url()),
        prefix: Some(env.prefix.clone()),
        bind: Some(bind.to_string()),
        metrics_bind: None,
        ..Overrides::default()
    };
    Config::load(None, env_vars, &flags).unwrap()
}

fn cmd(op: &str, kind: &str, payload: Value) -> Value {
    json!({"operationId": op, "type": kind, "payload": payload})
}

fn node(id: &str, x: i64) -> Value {
    json!({"node": {"id": id, "position": {"x": x, "y": 0}, "data": {"label": id}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_channel_and_metric_of_a_full_run_is_documented_and_nothing_else_is() {
    let env = TestEnv::start().await;
    let port = graphq::redis_server::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let config = settings(&env, &addr);
    let stop = CancellationToken::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sampler = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let (redis, prefix) = (env.redis.clone(), env.prefix.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                sample(&redis, &prefix, &seen).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Every channel a message is published on, subscribed or not.
    let listener = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let mut pubsub = redis::Client::open(env.server().url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        pubsub
            .psubscribe(format!("{}:*", env.prefix))
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(m) = messages.next() => {
                        seen.lock().unwrap().channels.insert(m.get_channel_name().to_string());
                    }
                }
            }
        })
    };
    // What `graphq dev` runs, plus the benchmark's jobs (whose keys are
    // documented too): the production processor with `bench.*` routed.
    let processor = graphq_workers::bench::jobs::BenchProcessor::new(
        app::processor(&config, &env.redis).unwrap(),
        env.redis.clone(),
        env.keys.clone(),
    );
    let workers = app::start_workers(&config, &env.redis, &[], processor, &stop).unwrap();
    let bound = tokio::net::TcpListener::bind(&config.bind).await.unwrap();
    let gateway = app::start_gateway(
        &config,
        env.redis.clone(),
        Auth::new(SECRET).unwrap(),
        bound,
        &stop,
    )
    .await
    .unwrap();
    let http = format!("http://{addr}");
    eventually(Duration::from_secs(20), "the gateway is ready", || async {
        reqwest::get(format!("{http}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let auth = Auth::new(SECRET).unwrap();
    let token = |user: &str| {
        auth.mint(
            user,
            Graphs::Only(vec!["main".into(), "broken".into()]),
            Role::Editor,
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let client = reqwest::Client::new();
    let post = |user: &str, graph: &str, body: Value, wait: bool| {
        let url = format!(
            "{http}/api/v2/graphs/{graph}/command{}",
            if wait { "?wait=5000" } else { "" }
        );
        client.post(url).bearer_auth(token(user)).json(&body).send()
    };

    // Two editors on one graph over WebSocket, with presence.
    let mut alice = ws::Client::with_token(&format!("ws://{addr}"), &token("alice")).await;
    alice
        .send(json!({"type": "SUBSCRIBE", "graphId": "main", "clientVersion": 0}))
        .await;
    assert_eq!(alice.next_of("SYNC").await["status"], "in_sync");
    let mut bob = ws::Client::with_token(&format!("ws://{addr}"), &token("bob")).await;
    bob.send(json!({"type": "SUBSCRIBE", "graphId": "main", "clientVersion": 0}))
        .await;
    bob.next_of("SYNC").await;
    bob.send(
        json!({"type": "PRESENCE", "graphId": "main", "cursor": {"x": 1, "y": 2}, "selection": []}),
    )
    .await;
    assert_eq!(alice.next_of("PRESENCE").await["userId"], "bob");

    // Commands over HTTP (waiting for the outcome) and WebSocket; a batch.
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        let r = post(
            "alice",
            "main",
            cmd(&format!("create-{id}"), "CREATE_NODE", node(id, i as i64)),
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    bob.send(json!({"type": "COMMAND", "graphId": "main", "command":
        cmd("bob-edge", "CREATE_EDGE", json!({"edge": {"id": "e1", "source": "n1", "target": "n2"}}))}))
        .await;
    bob.next_of("ACCEPTED").await;
    let batch = json!({"operations": [
        cmd("batch-1", "UPDATE_NODE", json!({"id": "n1", "patch": {"data": {"label": "one"}}})),
        cmd("batch-2", "UPDATE_VIEWPORT", json!({"x": 0, "y": 0, "zoom": 2})),
    ]});
    let r = client
        .post(format!("{http}/api/v2/graphs/main/batch"))
        .bearer_auth(token("alice"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Undo and redo of alice's last command; the redo list lives in between.
    let undo = |op: &'static str, kind: &'static str| {
        let r = post("alice", "main", cmd(op, kind, json!({})), true);
        async move {
            let body: Value = r.await.unwrap().json().await.unwrap();
            assert_eq!(body["outcome"]["status"], "applied", "{body}");
        }
    };
    undo("alice-undo", "UNDO").await;
    eventually(
        Duration::from_secs(5),
        "the sampler saw the redo list",
        || async {
            seen.lock()
                .unwrap()
                .keys
                .contains_key(&env.keys.graph_redo("main", "alice"))
        },
    )
    .await;
    undo("alice-redo", "REDO").await;
    // Bob moves n1 from version 0: a LAST_WRITE_WINS conflict, logged.
    let mut stale = cmd(
        "bob-move",
        "UPDATE_NODE",
        json!({"id": "n1", "patch": {"position": {"x": 7, "y": 7}}}),
    );
    stale["baseVersion"] = json!(0);
    let r = post("bob", "main", stale, true).await.unwrap();
    assert_eq!(r.status(), 200);
    // A command the worker reverts.
    let r = post(
        "alice",
        "main",
        cmd(
            "ghost-edge",
            "CREATE_EDGE",
            json!({"edge": {"id": "e2", "source": "n1", "target": "ghost"}}),
        ),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(alice.next_of("REVERT").await["operationId"], "ghost-edge");
    // A graph whose data is broken: its command is retried, then dead-lettered.
    let mut conn = env.conn();
    let _: () = conn
        .set(env.keys.graph_meta("broken"), "not a hash")
        .await
        .unwrap();
    post(
        "alice",
        "broken",
        cmd("doomed", "CREATE_NODE", node("n1", 0)),
        false,
    )
    .await
    .unwrap();
    let dead = alice.next_of("REVERT").await;
    assert_eq!(dead["error"]["code"], "DEAD_LETTERED", "{dead}");
    let _: () = conn.del(env.keys.graph_meta("broken")).await.unwrap();
    // One user's burst beyond the per-user limit (20 in this run).
    let mut limited = false;
    for i in 0..25 {
        let r = post(
            "carol",
            "main",
            cmd(
                &format!("carol-{i}"),
                "UPDATE_NODE",
                json!({"id": "n3", "patch": {"position": {"x": i, "y": 1}}}),
            ),
            false,
        )
        .await
        .unwrap();
        limited |= r.status() == 429;
    }
    assert!(limited, "carol was rate limited");
    // Analytics: a delayed job, a repeatable one, jobs of every priority; a
    // job type no worker handles (dead-lettered); a paused sync queue.
    let queue = |name: &str| {
        graphq::queue::Queue::new(
            env.redis.clone(),
            env.keys.clone(),
            name,
            config.queues[name].clone(),
        )
        .unwrap()
    };
    let analytics = queue("analytics");
    analytics
        .add(
            NewJob::new("GENERATE_SNAPSHOT", "")
                .key("main")
                .id("later")
                .delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    analytics
        .add_repeatable(
            "main-snapshots",
            Duration::from_millis(1000),
            NewJob::new("GENERATE_SNAPSHOT", "").key("main"),
        )
        .await
        .unwrap();
    // Without a graph these die at once: a dead-letter stream per priority.
    for prio in Priority::ALL {
        analytics
            .add(NewJob::new("CALCULATE_PROGRESS", "{}").priority(prio))
            .await
            .unwrap();
    }
    for name in ["CALCULATE_PROGRESS", "UPDATE_METRICS"] {
        analytics
            .add(NewJob::new(name, "{}").key("main"))
            .await
            .unwrap();
    }
    let sync = queue("sync");
    sync.pause().await.unwrap();
    sync.add(NewJob::new("SYNC_CLIENT", "{}").priority(Priority::High))
        .await
        .unwrap();
    // The benchmark's job, on the commands queue as `graphq bench` sends it.
    queue("commands")
        .add(
            NewJob::new(
                graphq_workers::bench::jobs::BENCH_APPLY,
                r#"{"node":"n1","value":"v"}"#,
            )
            .key("bench-graph"),
        )
        .await
        .unwrap();

    eventually(
        Duration::from_secs(20),
        "a snapshot, progress, metrics, the repeatable job and the dead letters",
        || async {
            let mut conn = env.conn();
            let snapshot: bool = conn.exists(env.keys.graph_snapshot("main")).await.unwrap();
            let repeated: bool = conn
                .exists(env.keys.repeat_last("analytics"))
                .await
                .unwrap();
            let dead = analytics.dead_letters().count().await.unwrap() >= 3;
            let progress: bool = conn.exists(env.keys.graph_progress("main")).await.unwrap();
            let metrics: bool = conn.exists(env.keys.graph_metrics("main")).await.unwrap();
            snapshot && repeated && dead && progress && metrics
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the sampler saw the paused queue",
        || async {
            seen.lock()
                .unwrap()
                .keys
                .contains_key(&env.keys.paused("sync"))
        },
    )
    .await;
    sync.resume().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the sync job ran (and died)",
        || async { sync.dead_letters().count().await.unwrap() == 1 },
    )
    .await;
    // A last look, then shut down. The recorder is the process's: the
    // gateway's /metrics shows the workers' figures of this run too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exported = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.cancel();
    sampler.await.unwrap();
    listener.await.unwrap();
    sample(&env.redis, &env.prefix, &seen).await;
    workers.stopped().await;
    gateway.stopped().await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let (doc_keys, doc_channels) = documented();
    let doc_patterns: BTreeMap<&str, &str> = doc_keys
        .iter()
        .map(|d| (d.pattern.as_str(), d.kind.as_str()))
        .collect();
    let mut problems = Vec::new();
    let mut written: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Written by this test to break a graph, not by graphq.
    let hand_made = env.keys.graph_meta("broken");
    for (key, kind) in seen.keys.iter().filter(|(k, _)| **k != hand_made) {
        let pattern = pattern_of(&env.prefix, key);
        match doc_patterns.get(pattern.as_str()) {
            None => problems.push(format!("{key} ({kind}): no row for {pattern}")),
            Some(doc_kind) if doc_kind != kind => problems.push(format!(
                "{key}: documented as {doc_kind}, Redis says {kind}"
            )),
            _ => {}
        }
        written.insert(pattern, (key.clone(), kind.clone()));
    }
    for d in &doc_keys {
        if !written.contains_key(&d.pattern) {
            problems.push(format!("documented {} was never written", d.pattern));
        }
    }
    let channels: BTreeSet<String> = seen
        .channels
        .iter()
        .map(|c| pattern_of(&env.prefix, c))
        .collect();
    for c in &channels {
        if !doc_channels.contains(c) {
            problems.push(format!("channel {c} is not documented"));
        }
    }
    for c in &doc_channels {
        if !channels.contains(c) {
            problems.push(format!(
                "documented channel {c} had no subscriber in the run"
            ));
        }
    }
    let families: BTreeMap<String, String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    let doc_metrics = documented_metrics();
    for (name, kind) in &families {
        match doc_metrics.get(name) {
            None => problems.push(format!("metric {name} ({kind}) is not documented")),
            Some(doc_kind) if doc_kind != kind => problems.push(format!(
                "metric {name}: documented as {doc_kind}, exported as {kind}"
            )),
            _ => {}
        }
    }
    for name in doc_metrics.keys() {
        if !families.contains_key(name) {
            problems.push(format!("documented metric {name} was not exported"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/operations.md and the keys do not agree:\n  {}\n\nwritten:\n{:#?}",
        problems.join("\n  "),
        written
    );
}

#[test]
fn keys_become_the_patterns_the_doc_uses() {
    let p = |k: &str| pattern_of("pre", k);
    assert_eq!(
        p("pre:{q:commands:12}:stream:normal"),
        "P:{q:Q:N}:stream:normal"
    );
    assert_eq!(
        p("pre:{q:analytics:0}:dedupe:snapshot:g1:5"),
        "P:{q:Q:N}:dedupe:JOB_ID"
    );
    assert_eq!(p("pre:{q:sync}:repeat:last"), "P:{q:Q}:repeat:last");
    assert_eq!(p("pre:{g:my.graph}:op:7f1c-aa"), "P:{g:G}:op:OPERATION_ID");
    assert_eq!(p("pre:{g:g}:undo:alice"), "P:{g:G}:undo:USER");
    assert_eq!(p("pre:{rl:gateway:bob}"), "P:{rl:gateway:USER}");
    assert_eq!(p("pre:{rl:analytics:main}"), "P:{rl:Q:KEY}");
    assert_eq!(p("pre:{op:abc:def}"), "P:{op:OPERATION_ID}");
    assert_eq!(p("pre:{u:carol}:events"), "P:{u:USER}:events");
    assert_eq!(
        p("other:{g:g}:meta"),
        "other:{g:g}:meta",
        "another prefix stays as is"
    );
    assert_eq!(
        split_row(r"| `P:{q:Q:N}:stream:high\|normal` | stream |"),
        ["`P:{q:Q:N}:stream:high|normal`", "stream"]
    );
}
