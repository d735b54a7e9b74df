//! `graphq dev` as a newcomer runs it: on its own private redis-server with
//! its data under ./.graphq/ unless a Redis is named, that server stopped on
//! SIGTERM and SIGINT, a startup banner whose curl command works, and no
//! colour codes in output that is not a terminal.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, TestEnv, eventually, graphq_bin};
use redis::AsyncCommands;
use serde_json::Value;

/// A running `graphq dev` and what its banner said.
struct Dev {
    proc: Proc,
    banner: String,
    log: PathBuf,
}

impl Dev {
    /// Starts `graphq dev` in `dir` with `redis_url` as GRAPHQ_REDIS_URL (or
    /// none), on a free port, and waits for its banner.
    fn start(dir: &Path, redis_url: Option<&str>) -> Dev {
        let log = dir.join(format!("dev-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(graphq_bin());
        cmd.arg("dev")
            .current_dir(dir)
            .env_remove("GRAPHQ_REDIS_URL")
            .env_remove("GRAPHQ_REDIS_CLUSTER")
            .env_remove("GRAPHQ_CONFIG")
            .env_remove("GRAPHQ_AUTH_SECRET")
            .env("GRAPHQ_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = redis_url {
            cmd.env("GRAPHQ_REDIS_URL", url);
        }
        let proc = Proc {
            child: cmd.spawn().expect("graphq dev starts"),
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ctrl-C stops everything") {
                return Dev {
                    proc,
                    banner: text,
                    log,
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no banner within 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The banner line that starts with `graphq dev: {prefix}`.
    fn line(&self, prefix: &str) -> &str {
        let wanted = format!("graphq dev: {prefix}");
        self.banner
            .lines()
            .find(|l| l.starts_with(&wanted))
            .unwrap_or_else(|| panic!("no `{wanted}` line in\n{}", self.banner))
    }

    fn base(&self) -> String {
        let line = self.line("gateway on ");
        let url = line["graphq dev: gateway on ".len()..]
            .split(' ')
            .next()
            .unwrap();
        url.to_string()
    }

    /// The pid of the private redis-server the banner names.
    fn private_redis_pid(&self) -> u32 {
        let line = self.line("Redis: a private redis-server (pid ");
        let rest = line.split("(pid ").nth(1).unwrap();
        rest.split(')').next().unwrap().parse().unwrap()
    }

    /// Runs the banner's curl command as printed, through a shell.
    fn run_banner_curl(&self) -> Value {
        let start = self.banner.find("\ncurl ").expect("a curl command") + 1;
        let command: String = self.banner[start..]
            .lines()
            .take_while(|l| !l.starts_with("graphq dev:"))
            .collect::<Vec<_>>()
            .join("\n");
        let out = Command::new("bash")
            .args(["-c", &command])
            .output()
            .expect("bash runs the curl command");
        assert!(out.status.success(), "{command}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("the command answers JSON")
    }

    /// Sends `signal` to graphq and waits for it to exit.
    fn stop_with(&mut self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe {
            libc::kill(self.proc.pid() as libc::pid_t, signal);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                assert!(status.success(), "graphq dev exits cleanly: {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("graphq dev did not stop within 30 s");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn gone(pid: u32) -> bool {
    // A zombie would still be a process: /proc/PID/stat says `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')),
    }
}

async fn wait_gone(pid: u32) {
    eventually(
        Duration::from_secs(10),
        "the private redis-server exits",
        || async move { gone(pid) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_named_redis_dev_runs_on_its_own_and_sigterm_stops_it() {
    // The "other" Redis: a server this test started, with a key in it.
    let other = TestEnv::start().await;
    let mut conn = other.conn();
    let _: () = conn.set("mine", "untouched").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mut dev = Dev::start(dir.path(), None);
    let pid = dev.private_redis_pid();
    assert!(
        dev.line("Redis: a private redis-server")
            .contains(&dir.path().join(".graphq").display().to_string()),
        "{}",
        dev.banner
    );
    assert!(dir.path().join(".graphq").is_dir());
    // The banner's curl command works as printed, and its token too.
    let answer = dev.run_banner_curl();
    assert_eq!(answer["outcome"]["status"], "applied", "{answer}");
    assert!(
        dev.line("more tokens: ")
            .contains(&graphq_bin().display().to_string()),
        "the banner names the binary that runs"
    );

    dev.stop_with(libc::SIGTERM);
    wait_gone(pid).await;
    assert!(
        !dev.log_text().contains('\u{1b}'),
        "no colour codes in a log that is not a terminal"
    );
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    let mine: String = conn.get("mine").await.unwrap();
    assert_eq!(
        (size, mine.as_str()),
        (1, "untouched"),
        "the other Redis holds only its own key"
    );

    // The data stays under ./.graphq/: a second run sees the first's graph.
    let mut again = Dev::start(dir.path(), None);
    let node = answer["outcome"]["change"]["nodes"][0]["id"].clone();
    let token = again
        .line("a token for user `dev`")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let state: Value = reqwest::Client::new()
        .get(format!("{}/api/v2/graphs/demo/state", again.base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["nodes"][0]["id"], node, "{state}");
    let second = again.private_redis_pid();
    again.stop_with(libc::SIGINT);
    wait_gone(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_redis_is_used_and_left_running() {
    let other = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = other.server().url();
    let mut dev = Dev::start(dir.path(), Some(&url));
    assert!(
        dev.line("Redis: ").contains(&url),
        "the banner names the Redis: {}",
        dev.banner
    );
    assert!(!dev.banner.contains("private redis-server"));
    assert!(!dir.path().join(".graphq").exists(), "no private data");
    let answer = dev.run_banner_curl();
    assert_eq!(answer["outcome"]["status"], "applied", "{answer}");
    let mut conn = other.conn();
    let version: Option<u64> = conn
        .hget(
            graphq::keys::Keys::new("graphq").graph_meta("demo"),
            "version",
        )
        .await
        .unwrap();
    assert_eq!(version, Some(1), "the command landed in the named Redis");
    dev.stop_with(libc::SIGTERM);
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG", "the named Redis still runs");
}
