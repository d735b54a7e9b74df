//! A local Redis Cluster for the cluster tests: N masters with one replica
//! each, every node a private `redis-server` child on a free loopback port,
//! joined with `redis-cli --cluster create` and killed by PID on drop.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graphq::redis_server::{RedisServer, RedisServerOptions, free_port, ping};

/// A local Redis Cluster: N masters with one replica each, on free loopback
/// ports, joined with `redis-cli --cluster create`. Every node is a
/// [`RedisServer`] child, killed by PID when this drops.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long a node may be unreachable before the cluster fails it over.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;

impl RedisCluster {
    /// Starts `masters` masters and as many replicas and waits until the
    /// cluster is formed: every slot served, every replica in sync.
    pub fn start(masters: usize) -> Result<RedisCluster, String> {
        let mut nodes = Vec::new();
        for _ in 0..masters * 2 {
            nodes.push(
                RedisServer::start_with(RedisServerOptions {
                    port: Some(cluster_port().map_err(|e| e.to_string())?),
                    extra: vec![
                        ("cluster-enabled".into(), "yes".into()),
                        ("cluster-config-file".into(), "nodes.conf".into()),
                        (
                            "cluster-node-timeout".into(),
                            CLUSTER_NODE_TIMEOUT_MS.to_string(),
                        ),
                        // A replica may always take over, however long it was
                        // cut off: there is no other copy to prefer.
                        ("cluster-replica-validity-factor".into(), "0".into()),
                    ],
                    ..RedisServerOptions::default()
                })
                .map_err(|e| e.to_string())?,
            );
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_formed(masters, Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_formed(&self, masters: usize, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ok = self.nodes.iter().all(|n| {
                cli(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && (cli(n.port(), &["ROLE"]).starts_with("master")
                        || cli(n.port(), &["INFO", "replication"])
                            .contains("master_link_status:up"))
            }) && self.master_ports().len() == masters;
            if ok {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "not formed after {within:?}: {}",
                    self.nodes
                        .first()
                        .map(|n| cli(n.port(), &["CLUSTER", "NODES"]))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Seed URLs: every node, so that any of them can be down.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Seed URLs joined by commas, as `--redis-cluster` takes them.
    pub fn seed_list(&self) -> String {
        self.seeds().join(",")
    }

    /// Ports of the masters that serve slots now, as a live node sees it.
    pub fn master_ports(&self) -> Vec<u16> {
        let Some(live) = self.nodes.iter().find(|n| ping(n.port())) else {
            return Vec::new();
        };
        cli(live.port(), &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
            })
            .filter_map(|l| {
                let addr = l.split(' ').nth(1)?;
                addr.split('@').next()?.rsplit(':').next()?.parse().ok()
            })
            .collect()
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port() == port) {
            n.stop();
        }
    }

    /// Waits until `masters` live masters, none of them the node on `dead`,
    /// serve every slot again: the failover after `dead` was killed.
    pub fn wait_failover(&self, dead: u16, masters: usize, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < within {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| ping(n.port())).collect();
            let now = self.master_ports();
            if now.len() == masters
                && !now.contains(&dead)
                && live
                    .iter()
                    .all(|n| cli(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no {masters} masters after {within:?}"))
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port pair for a cluster node",
    ))
}

/// `redis-cli -p PORT ARGS...`, stdout as text ("" when it fails).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
