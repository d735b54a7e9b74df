//! Fault injection against real `graphq` processes on loopback (docs/reliability.md).
//!
//! Each test holds a steady load of WebSocket clients (each sends
//! CREATE_NODE commands at a fixed rate, resends what was not ACCEPTED after
//! a reconnect or an UNAVAILABLE, and resubscribes with its last version),
//! injects a fault, then stops the load and checks what a user would
//! notice: every client reaches the graph's `(epoch, version)`, saw versions
//! without gaps or duplicates, every gateway answers the same checksum,
//! `graph verify` passes, and every ACCEPTED command is in the change log
//! exactly once. The tests run one at a time (two cores, many processes).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::load::*;
use common::ws;
use common::{TestEnv, eventually};
use graphq::redis_server::{RedisServer, RedisServerOptions, free_port};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_workers_under_load_loses_nothing_and_applies_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(TestEnv::start().await, 1, 3, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "w", 6, &["wa", "wb", "wc"], 25);
    progress(&clients, 25, "load flows").await;
    c.workers[0].kill9();
    progress(&clients, 25, "load flows after the first kill").await;
    c.workers[1].kill9();
    progress(&clients, 25, "load flows on the last worker").await;
    let accepted = finish(&c, &clients, Duration::from_secs(30)).await;
    assert!(accepted >= 450, "{accepted}");
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_gateway_moves_its_clients_to_the_other_and_they_catch_up() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(TestEnv::start().await, 2, 2, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "g", 6, &["ga", "gb"], 25);
    progress(&clients, 25, "load flows").await;
    c.kill_gateway(0);
    progress(&clients, 25, "load flows through the other gateway").await;
    let moved = clients
        .iter()
        .filter(|cl| cl.seen.lock().unwrap().reconnects > 0)
        .count();
    assert!(
        moved >= 3,
        "the clients of the killed gateway reconnected: {moved}"
    );
    finish(&c, &clients, Duration::from_secs(30)).await;
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_command_is_dead_lettered_and_its_partition_keeps_flowing() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(
        TestEnv::start().await,
        1,
        2,
        &[("GRAPHQ_QUEUES__COMMANDS__ATTEMPTS", "3")],
    )
    .await;
    let queue = c.commands_queue();
    let poison = "pz";
    // A load graph on the same partition as the poisoned one.
    let neighbour = (0..10_000)
        .map(|i| format!("n{i}"))
        .find(|g| queue.partition_for(Some(g), "") == queue.partition_for(Some(poison), ""))
        .unwrap();
    // Every attempt fails inside Redis: the graph's nodes key has the wrong type.
    let _: () = redis::cmd("SET")
        .arg(c.env.keys.graph_nodes(poison))
        .arg("not a hash")
        .query_async(&mut c.env.conn())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "p", 4, &[&neighbour, "other"], 25);
    progress(&clients, 10, "load flows").await;
    let mut sender = ws::Client::with_token(
        &format!("ws://{}", c.addr(0)),
        &c.token("mallory", &[poison]),
    )
    .await;
    sender
        .send(json!({"type": "COMMAND", "graphId": poison, "command":
            {"operationId": "poison-1", "type": "CREATE_NODE", "payload": {"node": {"id": "x", "position": {"x": 0, "y": 0}}}}}))
        .await;
    assert_eq!(sender.next().await["type"], "ACCEPTED");
    let revert = sender.next_of("REVERT").await;
    assert_eq!(
        (
            revert["operationId"].as_str(),
            revert["error"]["code"].as_str()
        ),
        (Some("poison-1"), Some("DEAD_LETTERED"))
    );
    let dead = queue.dead_letters().list(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, "poison-1");
    assert!(dead[0].error.contains("WRONGTYPE"), "{}", dead[0].error);
    assert_eq!(dead[0].attempts_made, 3);
    let status = c.store.operation("poison-1").await.unwrap().unwrap();
    assert_eq!(status.status, "failed");
    progress(&clients, 25, "the poisoned partition keeps flowing").await;
    finish(&c, &clients, Duration::from_secs(30)).await;
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_five_seconds_stalls_requests_then_the_backlog_drains() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(TestEnv::start().await, 1, 2, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "r", 4, &["ra", "rb"], 25);
    progress(&clients, 25, "load flows").await;
    let redis_pid = c.env.server().pid() as i32;
    unsafe {
        libc::kill(redis_pid, libc::SIGSTOP);
    }
    let paused_at = Instant::now();
    // An HTTP command sent during the pause either fails clearly or waits
    // for Redis; it never claims success it did not have.
    let url = format!("http://{}/api/v2/graphs/ra/command", c.addr(0));
    let token = c.token("httpuser", &["ra"]);
    let probe = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .body(
                json!({"operationId": "during-pause", "type": "CREATE_NODE",
                "payload": {"node": {"id": "during-pause", "position": {"x": 0, "y": 0}}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    unsafe {
        libc::kill(redis_pid, libc::SIGCONT);
    }
    let (status, answered) = tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(status, 202 | 503),
        "answer during a pause: {status}"
    );
    let answered_after = answered - paused_at;
    progress(&clients, 25, "load flows after the pause").await;
    finish(&c, &clients, Duration::from_secs(30)).await;
    if status == 202 {
        assert!(
            logged(&c, "ra").await.contains(&"during-pause".to_string()),
            "accepted during the pause, then lost"
        );
    }
    eprintln!("probe answered {status} after {answered_after:?}");
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_aof_under_load_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = RedisServerOptions {
        port: Some(free_port().unwrap()),
        dir: Some(dir.path().to_path_buf()),
        aof: true,
        ..Default::default()
    };
    let env = TestEnv::start_with(opts.clone()).await;
    let mut c = Cluster::start(env, 1, 2, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "a", 4, &["aa", "ab"], 25);
    progress(&clients, 25, "load flows").await;
    c.env.server_mut().stop();
    *c.env.server_mut() = RedisServer::start_with(opts.clone()).unwrap();
    progress(&clients, 25, "load flows after the restart").await;
    let before: HashMap<String, String> = {
        let mut m = HashMap::new();
        for g in ["aa", "ab"] {
            m.insert(g.to_string(), epoch_of(&c, g).await);
        }
        m
    };
    finish(&c, &clients, Duration::from_secs(30)).await;
    for g in ["aa", "ab"] {
        assert_eq!(
            epoch_of(&c, g).await,
            before[g],
            "{g}: history kept, same epoch"
        );
    }

    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gives_clients_a_new_epoch_and_nothing_crashes() {
    let _serial = SERIAL.lock().await;
    // No AOF and no RDB: what the restarted server holds is nothing.
    let opts = RedisServerOptions {
        port: Some(free_port().unwrap()),
        ..Default::default()
    };
    let env = TestEnv::start_with(opts.clone()).await;
    let mut c = Cluster::start(env, 1, 2, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "e", 4, &["ea", "eb"], 25);
    progress(&clients, 25, "load flows").await;
    // Quiet first, so that nothing acknowledged is in flight when the data
    // goes: what was applied before is checked, then forgotten with it.
    finish(&c, &clients, Duration::from_secs(30)).await;
    let mut old = HashMap::new();
    for g in ["ea", "eb"] {
        old.insert(g, epoch_of(&c, g).await);
    }
    let resets_before: Vec<u64> = clients
        .iter()
        .map(|cl| {
            let mut s = cl.seen.lock().unwrap();
            s.accepted.clear();
            s.resets
        })
        .collect();
    c.env.server_mut().stop();
    *c.env.server_mut() = RedisServer::start_with(opts.clone()).unwrap();
    for cl in &clients {
        cl.sending.store(true, Ordering::SeqCst);
    }
    progress(&clients, 25, "load flows on the empty Redis").await;
    finish(&c, &clients, Duration::from_secs(30)).await;
    for g in ["ea", "eb"] {
        let now = epoch_of(&c, g).await;
        assert!(!now.is_empty() && now != old[g], "{g}: a new epoch");
    }
    for (cl, before) in clients.iter().zip(resets_before) {
        let s = cl.seen.lock().unwrap();
        assert!(s.resets > before, "{}: was never reset", cl.user);
    }
    assert_processes_running(&c);
    stop_load(&stop, clients);
}

/// How many commands a second the flooding client sends: 20 times the
/// default per-user limit of 200.
const FLOOD_PER_TICK: u64 = 40;
const FLOOD_TICK: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_is_rate_limited_and_the_others_keep_going() {
    let _serial = SERIAL.lock().await;
    // The default per-user limit: 200 commands a second.
    let c = Cluster::start(TestEnv::start().await, 1, 2, &[]).await;
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "n", 4, &["fa", "fb"], 25);
    progress(&clients, 25, "load flows (warm-up)").await;

    let mut flood =
        ws::Client::with_token(&format!("ws://{}", c.addr(0)), &c.token("flood", &["fc"])).await;
    let flooding = CancellationToken::new();
    let flooder = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            // What the flood's commands were answered with, by type (ERROR by code).
            let mut answers = HashMap::<String, u64>::new();
            let count = |f: Value, answers: &mut HashMap<String, u64>| {
                let kind = match f["type"].as_str() {
                    Some("ERROR") => f["code"].as_str().unwrap_or("ERROR").to_string(),
                    Some(other) => other.to_string(),
                    None => return,
                };
                *answers.entry(kind).or_default() += 1;
            };
            let mut tick = tokio::time::interval(FLOOD_TICK);
            let mut sent = 0u64;
            while !flooding.is_cancelled() {
                // Answers first, but sending in bursts of 40 a tick. The
                // gateway answers a command held behind a refused one at
                // once, without Redis, so its answers come as fast as the
                // flood sends: the socket stays open only because the
                // gateway reads more slowly while half its send queue waits
                // (docs/protocol.md, close code 4008).
                tokio::select! {
                    biased;
                    f = flood.recv() => count(f.expect("the flood's socket stays open"), &mut answers),
                    _ = tick.tick() => {
                        for _ in 0..FLOOD_PER_TICK {
                            sent += 1;
                            let op = format!("flood-{sent}");
                            flood.send(json!({"type": "COMMAND", "graphId": "fc", "command": {
                                "operationId": op, "type": "CREATE_NODE",
                                "payload": {"node": {"id": op, "position": {"x": sent, "y": 0}}}}}))
                                .await;
                        }
                    }
                }
            }
            // Every flood command gets an answer; a backlogged gateway may
            // take a moment to work through the last ones.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while answers.values().sum::<u64>() < sent {
                match tokio::time::timeout_at(deadline, flood.recv()).await {
                    Ok(Some(f)) => count(f, &mut answers),
                    _ => break,
                }
            }
            (sent, answers)
        })
    };
    progress(&clients, 100, "load during the flood").await;
    flooding.cancel();
    let (sent, answers) = flooder.await.unwrap();
    let accepted = answers.get("ACCEPTED").copied().unwrap_or(0);
    let limited = answers.get("RATE_LIMITED").copied().unwrap_or(0);
    eprintln!("flood: {sent} sent, {accepted} accepted, {limited} rate limited");
    assert_eq!(
        accepted + limited,
        sent,
        "every flood command answered: {answers:?}"
    );
    assert!(limited > sent / 2, "the flood was not limited: {answers:?}");
    finish(&c, &clients, Duration::from_secs(30)).await;
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4008_and_gateway_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(
        TestEnv::start().await,
        1,
        1,
        &[
            ("GRAPHQ_GATEWAY__SEND_QUEUE", "64"),
            ("GRAPHQ_GATEWAY__USER_RATE_LIMIT__MAX", "100000"),
        ],
    )
    .await;
    let gw = c.gateway_pid(0);
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "s", 2, &["big"], 10);
    progress(&clients, 5, "load flows").await;
    // The slow client subscribes later, then never reads again.
    let mut slow =
        ws::Client::with_token(&format!("ws://{}", c.addr(0)), &c.token("slow", &["big"])).await;
    // 500 commands with every subscriber reading (the allocator settles),
    // then 1,000 (~48 MiB) with the slow client subscribed too: buffering
    // for it without bound would grow the gateway by at least that much.
    let pad = "z".repeat(48 * 1024);
    let url = format!("http://{}/api/v2/graphs/big/command", c.addr(0));
    let token = c.token("writer", &["big"]);
    let http = reqwest::Client::new();
    let mut rss = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // At the current version: a full-state SYNC of ~24 MB would
            // exceed the test client's own frame limit.
            let version = c.store.state("big").await.unwrap().version;
            slow.send(json!({"type": "SUBSCRIBE", "graphId": "big", "clientVersion": version}))
                .await;
        }
        for i in 0..500 * (round + 1) {
            let id = format!("big-{round}-{i}");
            let body = json!({"operationId": id, "type": "CREATE_NODE",
                "payload": {"node": {"id": id, "position": {"x": 0, "y": 0}, "data": {"pad": pad}}}});
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        let want = 500 + 1000 * round;
        eventually(
            Duration::from_secs(60),
            "the big commands are applied",
            || async {
                c.store
                    .state("big")
                    .await
                    .is_ok_and(|s| s.nodes.len() >= want)
            },
        )
        .await;
        rss.push(rss_kib(gw));
    }
    let (rss_before, rss_after) = (rss[0], rss[1]);
    assert_eq!(slow.close_code(Duration::from_secs(10)).await, Some(4008));
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!("gateway RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        growth_mib < 24,
        "gateway RSS grew by {growth_mib} MiB while ~48 MiB went to a client that never reads"
    );
    finish(&c, &clients, Duration::from_secs(60)).await;
    stop_load(&stop, clients);
}
