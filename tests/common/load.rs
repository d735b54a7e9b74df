//! Load and convergence checks shared by the fault tests and the cluster
//! tests: a set of `graphq` processes on one test Redis (or cluster), load
//! clients over WebSocket, and `finish`, which checks what a user would
//! notice: every client reaches the graph's `(epoch, version)`, saw versions
//! without gaps or duplicates, every gateway answers the same checksum,
//! `graph verify` passes, and every ACCEPTED command is in the change log
//! exactly once.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ws::Client;
use super::{Proc, SECRET, TestEnv, eventually};
use graphq::auth::{Auth, Graphs, Role};
use graphq::graph::{GraphSettings, GraphStore};
use graphq::queue::{Queue, QueueKind, QueueOptions};
use graphq::redis_server::free_port;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One fault test at a time: each runs several processes on two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Settings every process of a test shares, so that partitions agree and a
/// dead worker's leases move within a second.
pub const QUEUE_ENV: [(&str, &str); 5] = [
    ("GRAPHQ_QUEUES__COMMANDS__LEASE_TTL_MS", "1000"),
    ("GRAPHQ_QUEUES__COMMANDS__HEARTBEAT_MS", "200"),
    ("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200"),
    ("GRAPHQ_QUEUES__COMMANDS__BACKOFF_BASE_MS", "20"),
    ("GRAPHQ_QUEUES__COMMANDS__SHUTDOWN_TIMEOUT_MS", "1000"),
];

pub struct Cluster {
    pub env: TestEnv,
    /// Gateway processes and their addresses; None once killed.
    pub gateways: Vec<Option<(Proc, String)>>,
    pub workers: Vec<Proc>,
    /// Where clients may connect, shared with them.
    pub live: Arc<Mutex<Vec<String>>>,
    pub extra: Vec<(String, String)>,
    pub store: GraphStore,
    pub auth: Auth,
}

impl Cluster {
    pub async fn start(
        env: TestEnv,
        gateways: usize,
        workers: usize,
        extra: &[(&str, &str)],
    ) -> Cluster {
        let store = GraphStore::new(
            env.redis.clone(),
            env.keys.clone(),
            GraphSettings::default(),
        );
        let mut c = Cluster {
            env,
            gateways: Vec::new(),
            workers: Vec::new(),
            live: Arc::new(Mutex::new(Vec::new())),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            store,
            auth: Auth::new(SECRET).unwrap(),
        };
        for _ in 0..gateways {
            c.add_gateway().await;
        }
        for _ in 0..workers {
            c.add_worker();
        }
        c
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.env.graphq();
        cmd.args(args).env("GRAPHQ_AUTH_SECRET", SECRET);
        for (k, v) in QUEUE_ENV {
            cmd.env(k, v);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    pub async fn add_gateway(&mut self) {
        let addr = format!("127.0.0.1:{}", free_port().unwrap());
        let p = Proc::spawn(self.command(&["gateway", "--bind", &addr]));
        eventually(Duration::from_secs(30), "gateway ready", || async {
            reqwest::get(format!("http://{addr}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        self.live.lock().unwrap().push(addr.clone());
        self.gateways.push(Some((p, addr)));
    }

    pub fn add_worker(&mut self) {
        let p = Proc::spawn(self.command(&["worker", "--queue", "commands"]));
        self.workers.push(p);
    }

    pub fn kill_gateway(&mut self, i: usize) {
        let (mut p, addr) = self.gateways[i].take().unwrap();
        self.live.lock().unwrap().retain(|a| *a != addr);
        p.kill9();
    }

    pub fn gateway_pid(&self, i: usize) -> u32 {
        self.gateways[i].as_ref().unwrap().0.pid()
    }

    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i].pid()
    }

    pub fn addr(&self, i: usize) -> String {
        self.gateways[i].as_ref().unwrap().1.clone()
    }

    pub fn token(&self, user: &str, graphs: &[&str]) -> String {
        self.auth
            .mint(
                user,
                Graphs::Only(graphs.iter().map(|g| g.to_string()).collect()),
                Role::Editor,
                Duration::from_secs(600),
            )
            .unwrap()
    }

    pub fn commands_queue(&self) -> Queue {
        self.env.queue(
            "commands",
            QueueOptions {
                kind: QueueKind::Ordered,
                partitions: 16,
                ..QueueOptions::default()
            },
        )
    }
}

/// What one load client saw and did.
#[derive(Default, Debug)]
pub struct Seen {
    pub epoch: String,
    pub version: Option<u64>,
    pub sent: u64,
    pub accepted: HashSet<String>,
    /// Sent and not yet ACCEPTED, by sequence number: resent after a
    /// reconnect or an UNAVAILABLE/RATE_LIMITED answer.
    pub pending: BTreeMap<u64, Value>,
    pub resend: bool,
    /// Ask the gateway for a SYNC (which carries the epoch) at the next tick.
    pub request_sync: bool,
    pub reverted: Vec<(String, String)>,
    pub gaps: Vec<String>,
    pub duplicates: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub errors: HashMap<String, u64>,
}

pub struct LoadClient {
    pub user: String,
    pub graph: String,
    pub seen: Arc<Mutex<Seen>>,
    pub sending: Arc<AtomicBool>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts `clients` clients over `graphs`, each sending `rate` commands a second.
pub fn start_load(
    c: &Cluster,
    stop: &CancellationToken,
    prefix: &str,
    clients: usize,
    graphs: &[&str],
    rate: u64,
) -> Vec<LoadClient> {
    (0..clients)
        .map(|i| {
            let user = format!("{prefix}{i}");
            let graph = graphs[i % graphs.len()].to_string();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let sending = Arc::new(AtomicBool::new(true));
            let task = tokio::spawn(run_client(
                c.live.clone(),
                i,
                c.token(&user, &[&graph]),
                user.clone(),
                graph.clone(),
                seen.clone(),
                sending.clone(),
                stop.clone(),
                Duration::from_millis(1000 / rate),
            ));
            LoadClient {
                user,
                graph,
                seen,
                sending,
                task,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    live: Arc<Mutex<Vec<String>>>,
    index: usize,
    token: String,
    user: String,
    graph: String,
    seen: Arc<Mutex<Seen>>,
    sending: Arc<AtomicBool>,
    stop: CancellationToken,
    period: Duration,
) {
    let mut attempt = index;
    let mut seq = 0u64;
    'connect: loop {
        if stop.is_cancelled() {
            return;
        }
        let addr = {
            let live = live.lock().unwrap();
            if live.is_empty() {
                return;
            }
            live[attempt % live.len()].clone()
        };
        attempt += 1;
        let (base, path) = (format!("ws://{addr}"), format!("/ws?token={token}"));
        let connecting = Client::try_connect(&base, &path);
        let mut client = match tokio::time::timeout(Duration::from_secs(2), connecting).await {
            Ok(Ok(c)) => c,
            _ => {
                // Redis or the gateway is down: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (version, epoch, pending) = {
            let s = seen.lock().unwrap();
            (
                s.version,
                s.epoch.clone(),
                s.pending.values().cloned().collect::<Vec<_>>(),
            )
        };
        let mut sub = json!({"type": "SUBSCRIBE", "graphId": graph});
        if let Some(v) = version {
            sub["clientVersion"] = json!(v);
            sub["epoch"] = json!(epoch);
        } else {
            sub["clientVersion"] = json!(0);
        }
        let mut out = vec![sub];
        out.extend(
            pending
                .into_iter()
                .map(|c| json!({"type": "COMMAND", "graphId": graph, "command": c})),
        );
        for m in out {
            if client.try_send(&m).await.is_err() {
                seen.lock().unwrap().reconnects += 1;
                continue 'connect;
            }
        }
        let mut tick = tokio::time::interval(period);
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let mut batch = Vec::new();
                    let mut sync_request = None;
                    {
                        let mut s = seen.lock().unwrap();
                        if std::mem::take(&mut s.resend) {
                            batch.extend(s.pending.values().cloned());
                        }
                        if std::mem::take(&mut s.request_sync) {
                            let mut m = json!({"type": "REQUEST_SYNC", "graphId": graph,
                                "clientVersion": s.version.unwrap_or(0)});
                            if !s.epoch.is_empty() {
                                m["epoch"] = json!(s.epoch);
                            }
                            sync_request = Some(m);
                        }
                        if sending.load(Ordering::SeqCst) {
                            seq += 1;
                            let op = format!("{user}-{seq}");
                            let cmd = json!({"operationId": op, "type": "CREATE_NODE",
                                "payload": {"node": {"id": op, "position": {"x": seq, "y": index}}}});
                            s.pending.insert(seq, cmd.clone());
                            s.sent += 1;
                            batch.push(cmd);
                        }
                    }
                    let frames = batch
                        .into_iter()
                        .map(|cmd| json!({"type": "COMMAND", "graphId": graph, "command": cmd}))
                        .chain(sync_request);
                    for m in frames {
                        if client.try_send(&m).await.is_err() {
                            seen.lock().unwrap().reconnects += 1;
                            continue 'connect;
                        }
                    }
                    continue;
                }
                f = client.recv() => f,
            };
            let Some(f) = frame else {
                seen.lock().unwrap().reconnects += 1;
                continue 'connect;
            };
            let mut s = seen.lock().unwrap();
            match f["type"].as_str().unwrap_or_default() {
                "ACCEPTED" => {
                    let op = f["operationId"].as_str().unwrap().to_string();
                    s.pending.retain(|_, c| c["operationId"] != op.as_str());
                    s.accepted.insert(op);
                }
                "COMMAND_APPLIED" => {
                    let v = f["version"].as_u64().unwrap();
                    match s.version {
                        Some(last) if v <= last => s.duplicates += 1,
                        Some(last) if v != last + 1 => {
                            let gap = format!("{last} -> {v}");
                            s.gaps.push(gap);
                            s.version = Some(v);
                        }
                        _ => s.version = Some(v),
                    }
                }
                "SYNC" => {
                    let v = f["version"].as_u64().unwrap();
                    match f["status"].as_str().unwrap() {
                        "behind" => {
                            let first = f["changes"][0]["version"].as_u64();
                            let last = s.version.unwrap_or(0);
                            if first != Some(last + 1) {
                                let gap = format!("SYNC behind from {last}: {first:?}");
                                s.gaps.push(gap);
                            }
                        }
                        "reset" => s.resets += 1,
                        _ => {}
                    }
                    s.version = Some(v);
                    s.epoch = f["epoch"].as_str().unwrap_or_default().to_string();
                }
                "REVERT" => {
                    let op = f["operationId"].as_str().unwrap_or_default().to_string();
                    let code = f["error"]["code"].as_str().unwrap_or_default().to_string();
                    s.reverted.push((op, code));
                }
                "ERROR" => {
                    let code = f["code"].as_str().unwrap_or_default().to_string();
                    if matches!(code.as_str(), "UNAVAILABLE" | "RATE_LIMITED") {
                        s.resend = true;
                    }
                    *s.errors.entry(code).or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

/// The graph's epoch, retried while the test's own connection reconnects.
pub async fn epoch_of(c: &Cluster, graph: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = c.store.state(graph).await {
            return s.epoch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis does not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Operation ids in a graph's change log, in order.
pub async fn logged(c: &Cluster, graph: &str) -> Vec<String> {
    let mut conn = c.env.conn();
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(c.env.keys.graph_log(graph))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, m)| m["operationId"].clone())
        .collect()
}

/// Stops sending, waits for every command to be accepted and every client
/// to reach its graph's version, then checks convergence and exactly-once.
/// Returns the number of commands accepted.
pub async fn finish(c: &Cluster, clients: &[LoadClient], within: Duration) -> u64 {
    for cl in clients {
        cl.sending.store(false, Ordering::SeqCst);
    }
    eventually(within, "every sent command is accepted", || async {
        clients.iter().all(|cl| {
            let mut s = cl.seen.lock().unwrap();
            if !s.pending.is_empty() {
                s.resend = true;
            }
            s.pending.is_empty()
        })
    })
    .await;
    let graphs: HashSet<&str> = clients.iter().map(|cl| cl.graph.as_str()).collect();
    let queue = c.commands_queue();
    eventually(within, "the queue drains", || async {
        queue
            .stats()
            .await
            .is_ok_and(|s| s.total(|p| p.pending + p.lag + p.delayed) == 0)
    })
    .await;
    eventually(
        within,
        "every client reaches its graph's version",
        || async {
            let mut states = HashMap::new();
            for g in &graphs {
                match c.store.state(g).await {
                    Ok(st) => states.insert(*g, (st.epoch, st.version)),
                    Err(_) => return false,
                };
            }
            clients.iter().all(|cl| {
                let mut s = cl.seen.lock().unwrap();
                let (epoch, version) = &states[cl.graph.as_str()];
                // COMMAND_APPLIED carries no epoch; a SYNC tells it.
                if s.version == Some(*version) && s.epoch != *epoch {
                    s.request_sync = true;
                }
                s.version == Some(*version) && s.epoch == *epoch
            })
        },
    )
    .await;
    let mut accepted_total = 0;
    for g in graphs {
        let log = logged(c, g).await;
        let unique: HashSet<&String> = log.iter().collect();
        assert_eq!(unique.len(), log.len(), "{g}: a command was applied twice");
        let state = c.store.state(g).await.unwrap();
        assert_eq!(
            state.version as usize,
            log.len(),
            "{g}: one log entry per version"
        );
        for cl in clients.iter().filter(|cl| cl.graph == g) {
            let s = cl.seen.lock().unwrap();
            assert!(s.gaps.is_empty(), "{}: gaps {:?}", cl.user, s.gaps);
            assert_eq!(s.duplicates, 0, "{}: duplicate versions", cl.user);
            assert!(
                s.reverted.is_empty(),
                "{}: reverted {:?}",
                cl.user,
                s.reverted
            );
            for op in &s.accepted {
                assert!(unique.contains(op), "{}: accepted {op} was lost", cl.user);
            }
            accepted_total += s.accepted.len() as u64;
        }
        // Every live gateway answers the same state and checksum.
        let mut checksums = HashSet::new();
        let addrs = c.live.lock().unwrap().clone();
        for addr in addrs {
            let token = c.token("checker", &[g]);
            let st = super::state_over_http(&format!("http://{addr}"), g, &token).await;
            assert_eq!(
                (st["epoch"].as_str(), st["version"].as_u64()),
                (Some(state.epoch.as_str()), Some(state.version))
            );
            checksums.insert(st["checksum"].as_str().unwrap().to_string());
        }
        assert_eq!(checksums.len(), 1, "{g}: gateways agree on the checksum");
        let report = c.store.verify(g).await.unwrap();
        assert!(report.ok(), "{g}: {report:?}");
    }
    accepted_total
}

pub fn stop_load(stop: &CancellationToken, clients: Vec<LoadClient>) {
    stop.cancel();
    for cl in clients {
        cl.task.abort();
    }
}

/// Waits until every client has had at least `n` commands accepted since `from`.
pub async fn progress(clients: &[LoadClient], n: usize, what: &str) {
    let from: Vec<usize> = clients
        .iter()
        .map(|cl| cl.seen.lock().unwrap().accepted.len())
        .collect();
    eventually(Duration::from_secs(30), what, || async {
        clients
            .iter()
            .zip(&from)
            .all(|(cl, f)| cl.seen.lock().unwrap().accepted.len() >= f + n)
    })
    .await;
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Asserts that every gateway not killed by the test and every worker is
/// still running: nothing crashed under the fault.
pub fn assert_processes_running(c: &Cluster) {
    let pids = c
        .gateways
        .iter()
        .flatten()
        .map(|(p, _)| p.pid())
        .chain(c.workers.iter().map(|w| w.pid()));
    for pid in pids {
        assert!(running(pid), "process {pid} died");
    }
}

/// Whether a child process is still running (not exited, not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}
