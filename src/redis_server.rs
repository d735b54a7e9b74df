//! A private `redis-server` child process: the test harness starts one per
//! test, and `graphq dev` starts one when no Redis is reachable.
//!
//! The child is killed by PID when the handle drops (also when a test panics),
//! and, on Linux, by the kernel if this process dies first. The tests' local
//! Redis Cluster (tests/common/cluster.rs) is made of such children too.

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
    /// Start the server in a process group of its own, so that a Ctrl-C on
    /// the terminal (SIGINT to the foreground group) reaches only this
    /// process, which stops the server when it is done with it (`graphq dev`).
    pub own_process_group: bool,
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
        if opts.own_process_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
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

    /// Asks the server to shut down (SIGTERM: it finishes writing its
    /// append-only file and exits), and kills it when it has not exited
    /// `within`.
    pub fn terminate(&mut self, within: Duration) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let started = Instant::now();
            while started.elapsed() < within {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.stop();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
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
