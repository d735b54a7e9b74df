//! A private `redis-server` child process: the test harness starts one per
//! test, and `graphq dev` starts one when no Redis is reachable.
//!
//! The child is killed by PID when the handle drops (also when a test panics),
//! and, on Linux, by the kernel if this process dies first. [`RedisCluster`]
//! starts several such children and joins them into a Redis Cluster.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    #[error("redis-server could not be started ({0}); install it (apt-get install redis-server)")]
    Spawn(std::io::Error),
    #[error("redis-server did not answer on port {port} within {waited:?}: {log}")]
    NotReady {
        port: u16,
        waited: Duration,
        log: String,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the local Redis Cluster did not form: {0}")]
    Cluster(String),
}

/// How to start the server.
#[derive(Clone, Debug, Default)]
pub struct RedisServerOptions {
    /// Port to listen on; a free one is picked when absent.
    pub port: Option<u16>,
    /// Data directory; a temporary one (removed on drop) when absent.
    pub dir: Option<PathBuf>,
    /// Turn on the append-only file with `appendfsync always`.
    pub aof: bool,
    /// Extra `--name value` arguments.
    pub extra: Vec<(String, String)>,
}

/// A running redis-server owned by this process.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Set when `dir` is ours to delete.
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a throwaway server: free port, temporary directory, no persistence.
    pub fn start() -> Result<RedisServer, RedisServerError> {
        Self::start_with(RedisServerOptions::default())
    }

    pub fn start_with(opts: RedisServerOptions) -> Result<RedisServer, RedisServerError> {
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let (dir, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("graphq-redis-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .arg("--daemonize")
            .arg("no");
        if opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        for (k, v) in &opts.extra {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(RedisServerError::Spawn)?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            _tmp: tmp,
        };
        server.wait_ready(Duration::from_secs(10))?;
        Ok(server)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), RedisServerError> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(RedisServerError::NotReady {
            port: self.port,
            waited: started.elapsed(),
            log: std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    pub fn start(masters: usize) -> Result<RedisCluster, RedisServerError> {
        let mut nodes = Vec::new();
        for _ in 0..masters * 2 {
            nodes.push(RedisServer::start_with(RedisServerOptions {
                port: Some(cluster_port()?),
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
            })?);
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(RedisServerError::Spawn)?;
        if !out.status.success() {
            return Err(RedisServerError::Cluster(
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_formed(masters, Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_formed(&self, masters: usize, within: Duration) -> Result<(), RedisServerError> {
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
                return Err(RedisServerError::Cluster(format!(
                    "not formed after {within:?}: {}",
                    self.nodes
                        .first()
                        .map(|n| cli(n.port(), &["CLUSTER", "NODES"]))
                        .unwrap_or_default()
                )));
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
    pub fn wait_failover(
        &self,
        dead: u16,
        masters: usize,
        within: Duration,
    ) -> Result<(), RedisServerError> {
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
        Err(RedisServerError::Cluster(format!(
            "no {masters} masters after {within:?}"
        )))
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

/// Asks the OS for a free loopback port. Another process could take it before
/// redis-server binds; startup then fails loudly rather than sharing a server.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when something on `port` answers PING like Redis (a server that
/// wants a password first answers `-NOAUTH`, which counts).
pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
