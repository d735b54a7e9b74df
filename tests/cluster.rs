//! graphq on a Redis Cluster: a local cluster of 3 masters and 3 replicas
//! (6 redis-server processes on free loopback ports, joined with
//! `redis-cli --cluster create`, killed by PID afterwards), with real
//! `graphq gateway` and `graphq worker` processes started with
//! `GRAPHQ_REDIS_CLUSTER`. The tests run one at a time.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::cluster::RedisCluster;
use common::load::*;
use common::{TestEnv, eventually};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_flow_in_order_across_shards_and_moved_clients_catch_up() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(TestEnv::start_cluster().await, 2, 2, &[]).await;
    let graphs = ["ca", "cb", "cc", "cd", "ce", "cf"];
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "c", 12, &graphs, 20);
    progress(&clients, 20, "load flows on the cluster").await;
    // Half the clients lose their gateway: they reconnect to the other one
    // with the version they have and get exactly what they missed.
    c.kill_gateway(0);
    progress(&clients, 20, "load flows after the move").await;
    let accepted = finish(&c, &clients, Duration::from_secs(60)).await;
    let moved = clients
        .iter()
        .filter(|cl| cl.seen.lock().unwrap().reconnects > 0)
        .count();
    assert!(moved >= 1, "no client was moved");
    // The graphs live on more than one shard.
    let owners: HashSet<u16> = graphs
        .iter()
        .map(|g| owner_of(c.env.cluster.as_ref().unwrap(), &c.env.keys.graph_meta(g)))
        .collect();
    assert!(
        owners.len() >= 2,
        "all six graphs on one master: {owners:?}"
    );
    eprintln!("{accepted} commands accepted, {moved} clients moved, graphs on {owners:?}");
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_graphs_spread_over_every_master_and_operator_commands_work() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(TestEnv::start_cluster().await, 1, 1, &[]).await;
    let http = reqwest::Client::new();
    let graphs: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
    for g in &graphs {
        let r = http
            .post(format!(
                "http://{}/api/v2/graphs/{g}/command?wait=10000",
                c.addr(0)
            ))
            .bearer_auth(c.token("op", &[g]))
            .body(
                json!({"operationId": format!("{g}-1"), "type": "CREATE_NODE",
                "payload": {"node": {"id": "n1", "position": {"x": 1, "y": 2}}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{g}: applied within the wait");
    }
    // Every master holds graph keys and queue partitions.
    let masters = c.env.cluster.as_ref().unwrap().master_ports();
    assert_eq!(masters.len(), 3);
    let mut graphs_on: HashMap<u16, HashSet<String>> = HashMap::new();
    let mut partitions_on: HashMap<u16, usize> = HashMap::new();
    for &port in &masters {
        let keys = scan(&c, port).await;
        for k in &keys {
            if let Some(g) = tag(k, "{g:") {
                graphs_on.entry(port).or_default().insert(g);
            }
            if tag(k, "{q:commands:").is_some() {
                *partitions_on.entry(port).or_default() += 1;
            }
        }
    }
    for &port in &masters {
        let n = graphs_on.get(&port).map_or(0, HashSet::len);
        assert!(n >= 10, "master {port} holds {n} of the 100 graphs");
        assert!(
            partitions_on.get(&port).copied().unwrap_or(0) > 0,
            "master {port} holds no queue partition"
        );
    }
    let total: usize = graphs_on.values().map(HashSet::len).sum();
    assert_eq!(total, 100, "each graph's keys on exactly one master");

    // `graphq queues` sees every partition on every master. The processed
    // counters count acknowledgements, which follow the applies within
    // `ack_delay_ms`.
    let commands_queue = || {
        let out = c.command(&["queues", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let queues: Value = serde_json::from_slice(&out.stdout).unwrap();
        queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "commands")
            .unwrap()
            .clone()
    };
    let processed = |commands: &Value| -> u64 {
        commands["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["counters"]["processed"].as_u64().unwrap_or(0))
            .sum()
    };
    eventually(
        Duration::from_secs(10),
        "the commands queue's processed counters reach 100",
        || async { processed(&commands_queue()) == 100 },
    )
    .await;
    let commands = commands_queue();
    assert_eq!(commands["partitions"].as_array().unwrap().len(), 16);
    assert_eq!(processed(&commands), 100, "{commands}");
    // `graphq graph verify` and `dump` read a graph wherever it lives.
    for g in ["g0", "g42", "g99"] {
        let out = c.command(&["graph", "verify", g]).output().unwrap();
        assert!(
            out.status.success(),
            "{g}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = c.command(&["graph", "dump", g]).output().unwrap();
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["version"], 1);
        assert_eq!(state["nodes"][0]["id"], "n1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_and_nothing_acknowledged_is_lost() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(TestEnv::start_cluster().await, 1, 2, &[]).await;
    let graphs = ["fa", "fb", "fc", "fd", "fe", "ff"];
    let stop = CancellationToken::new();
    let clients = start_load(&c, &stop, "f", 6, &graphs, 25);
    progress(&clients, 25, "load flows on the cluster").await;
    // The master of the first graph dies; its replica takes over.
    let victim = owner_of(
        c.env.cluster.as_ref().unwrap(),
        &c.env.keys.graph_meta(graphs[0]),
    );
    let cluster = c.env.cluster.as_mut().unwrap();
    cluster.kill(victim);
    let killed_at = std::time::Instant::now();
    cluster
        .wait_failover(victim, 3, Duration::from_secs(30))
        .expect("a replica is promoted");
    let promoted_after = killed_at.elapsed();
    progress(&clients, 25, "load flows after the failover").await;
    drain_or_report(&c, &clients, Duration::from_secs(60)).await;
    let accepted = finish(&c, &clients, Duration::from_secs(60)).await;
    let new_owner = owner_of(
        c.env.cluster.as_ref().unwrap(),
        &c.env.keys.graph_meta(graphs[0]),
    );
    assert_ne!(new_owner, victim);
    assert_processes_running(&c);
    let stalled = c
        .commands_queue()
        .stats()
        .await
        .map_or(0, |s| s.counter("stalled"));
    eprintln!(
        "failover: replica promoted after {promoted_after:?}; {accepted} commands accepted, none lost; \
         {stalled} entries taken over"
    );
    stop_load(&stop, clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_across_slots_answers_in_order_and_waits_for_replicas() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start_cluster().await;
    let keys: Vec<String> = (0..30)
        .map(|i| format!("{}:{{g:p{i}}}:k", env.prefix))
        .collect();
    // Writes to 30 slots (all three masters), reads interleaved with them,
    // a keyless command in the middle, and a WAIT at the end.
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        pipe.cmd("SET").arg(k).arg(i).ignore();
        pipe.cmd("INCR").arg(k);
        if i == 15 {
            pipe.cmd("PING");
        }
    }
    env.redis.durable(&mut pipe);
    let replies: Vec<redis::Value> = pipe.query_async(&mut env.redis.conn()).await.unwrap();
    let mut want: Vec<redis::Value> = (0..30).map(|i| redis::Value::Int(i + 1)).collect();
    want.insert(16, redis::Value::SimpleString("PONG".into()));
    assert_eq!(replies, want, "replies in the pipeline's order");
    // The WAIT ran where the writes did: every key is on a replica already.
    let cluster = env.cluster.as_ref().unwrap();
    let masters = cluster.master_ports();
    let replicas: Vec<u16> = cluster
        .seeds()
        .iter()
        .filter_map(|u| u.rsplit(':').next()?.parse().ok())
        .filter(|p| !masters.contains(p))
        .collect();
    assert_eq!(replicas.len(), 3);
    for (i, k) in keys.iter().enumerate() {
        let on_a_replica = replicas.iter().any(|&port| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "printf 'READONLY\\nGET %s\\n' '{k}' | redis-cli -p {port}"
                ))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == (i + 1).to_string())
        });
        assert!(on_a_replica, "{k} is on no replica");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_replica_confirmed_is_refused_unless_the_master_has_no_replica() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::start_cluster().await;
    let key = format!("{}:{{g:lag}}:k", env.prefix);
    let write = |n: u32| {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(n).ignore();
        env.redis.durable(&mut pipe);
        let mut conn = env.redis.conn();
        async move {
            let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            r
        }
    };
    write(1).await.unwrap();
    let cluster = env.cluster.as_ref().unwrap();
    let master = owner_of(cluster, &key);
    let replica = replica_of(master).expect("the master has a replica");
    let replica_pid = cluster.node(replica).unwrap().pid();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &replica_pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {replica_pid}");
    };

    // A replica that is connected but does not answer: the write is not
    // confirmed, and the caller hears so instead of being told it is safe.
    let waits = waits_on(master);
    signal("-STOP");
    let refused = write(2).await;
    signal("-CONT");
    let err = refused.expect_err("a write its replica never confirmed was reported safe");
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    assert_eq!(
        waits_on(master) - waits,
        2,
        "a lagging replica gets a second, longer WAIT before the write is refused"
    );
    // Once the replica answers again, writes are confirmed again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match write(3).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() > deadline => panic!("never confirmed: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    // A master with no replica left cannot do better than one copy: the
    // write stands, and the next ones stop waiting for a replica.
    env.cluster.as_mut().unwrap().kill(replica);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while replica_of(master).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the master still lists its replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write(4).await.unwrap();
    let waits = waits_on(master);
    write(5).await.unwrap();
    assert_eq!(
        waits_on(master),
        waits,
        "a write still waited for a replica that is gone"
    );
    assert_eq!(redis_cli(master, &["GET", &key]).trim(), "5");
}

/// Stops the load and waits for every command to be accepted and the
/// commands queue to drain, as `finish` does first; when the queue does not
/// drain, fails with what each partition still holds and who holds it, so a
/// failure says which recovery did not happen (docs/reliability.md).
async fn drain_or_report(c: &Cluster, clients: &[LoadClient], within: Duration) {
    for cl in clients {
        cl.sending.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    eventually(within, "every sent command is accepted", || async {
        clients.iter().all(|cl| {
            let mut s = cl.seen.lock().unwrap();
            s.resend |= !s.pending.is_empty();
            s.pending.is_empty()
        })
    })
    .await;
    let queue = c.commands_queue();
    let started = std::time::Instant::now();
    loop {
        let stats = queue.stats().await;
        if stats
            .as_ref()
            .is_ok_and(|s| s.total(|p| p.pending + p.lag + p.delayed) == 0)
        {
            return;
        }
        if started.elapsed() > within {
            panic!(
                "the queue did not drain within {within:?}:\n{}",
                queue_report(c, stats).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per partition that still holds something: length, pending, lag, delayed,
/// lease owner, and which consumers the pending entries belong to.
async fn queue_report(
    c: &Cluster,
    stats: Result<graphq::queue::QueueStats, graphq::queue::QueueError>,
) -> String {
    let stats = match stats {
        Ok(s) => s,
        Err(e) => return format!("stats unreadable: {e}"),
    };
    let mut out = format!("live workers: {:?}\n", stats.workers);
    for p in &stats.partitions {
        if p.length + p.pending + p.lag + p.delayed == 0 {
            continue;
        }
        let stream = c.env.keys.stream("commands", p.partition, "normal");
        let mut summary = redis::cmd("XPENDING");
        summary.arg(&stream).arg(graphq::queue::GROUP);
        let pel: redis::RedisResult<redis::Value> = summary.query_async(&mut c.env.conn()).await;
        out.push_str(&format!(
            "partition {}: length {} pending {} lag {} delayed {} owner {:?}; XPENDING {:?}\n",
            p.partition, p.length, p.pending, p.lag, p.delayed, p.owner, pel
        ));
    }
    out
}

/// How many WAIT commands the node on `port` has run, by its own count.
fn waits_on(port: u16) -> u64 {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The port of the first replica the master on `master` lists, if any.
fn replica_of(master: u16) -> Option<u16> {
    // ROLE on a master: role, offset, then host, port, offset per replica.
    redis_cli(master, &["ROLE"])
        .lines()
        .nth(3)
        .and_then(|p| p.trim().parse().ok())
}

/// The port of the master serving `key`'s slot now.
fn owner_of(cluster: &RedisCluster, key: &str) -> u16 {
    let masters = cluster.master_ports();
    let slot: u32 = redis_cli(masters[0], &["CLUSTER", "KEYSLOT", key])
        .trim()
        .parse()
        .unwrap();
    let serves = |port: u16| {
        redis_cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("myself"))
            .flat_map(|l| l.split(' ').skip(8).map(str::to_string).collect::<Vec<_>>())
            .any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((&range, &range));
                a.parse::<u32>().is_ok_and(|a| a <= slot)
                    && b.parse::<u32>().is_ok_and(|b| slot <= b)
            })
    };
    masters
        .into_iter()
        .find(|&p| serves(p))
        .unwrap_or_else(|| panic!("no master serves {key}"))
}

/// Every key of this test on one master (SCAN through graphq's own routing).
async fn scan(c: &Cluster, port: u16) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let cmd = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", c.env.prefix))
            .arg("COUNT")
            .arg(1000)
            .clone();
        let reply = c.env.redis.on_node("127.0.0.1", port, &cmd).await.unwrap();
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply).unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The id inside `{prefix...}` of a key: `tag("p:{g:a}:meta", "{g:")` is "a".
fn tag(key: &str, prefix: &str) -> Option<String> {
    let start = key.find(prefix)? + prefix.len();
    let end = key[start..].find('}')? + start;
    Some(key[start..end].to_string())
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
