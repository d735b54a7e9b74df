//! Test harness: a test that needs Redis gets its own redis-server on a free
//! port, or a local Redis Cluster (killed by PID when the test ends, panics
//! included), and its own key prefix; a test that also needs the gateway and
//! a worker asks for a [`Stack`] on top. Tests of pure logic start nothing.
#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod queue;
pub mod sse;
pub mod ws;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cluster::RedisCluster;
use graphq::db::Redis;
use graphq::keys::Keys;
use graphq::queue::{Queue, QueueOptions};
use graphq::redis_server::{RedisServer, RedisServerOptions};

pub struct TestEnv {
    /// The test's own redis-server; None in a cluster test, where `cluster`
    /// is what everything uses.
    server: Option<RedisServer>,
    /// Set by [`TestEnv::start_cluster`]: what `redis` and child processes use.
    pub cluster: Option<RedisCluster>,
    pub redis: Redis,
    pub prefix: String,
    pub keys: Keys,
}

impl TestEnv {
    /// A test on its own redis-server with default options.
    pub async fn start() -> TestEnv {
        TestEnv::start_with(RedisServerOptions::default()).await
    }

    /// A test on its own redis-server started with `opts` (a fixed port to
    /// restart it on, a data directory, AOF).
    pub async fn start_with(opts: RedisServerOptions) -> TestEnv {
        let server = RedisServer::start_with(opts).expect("redis-server starts (is it installed?)");
        let redis = Redis::connect(&server.url())
            .await
            .expect("connect to test redis");
        TestEnv::new(Some(server), None, redis)
    }

    /// A test on a local Redis Cluster of 3 masters and 3 replicas, and no
    /// single server.
    pub async fn start_cluster() -> TestEnv {
        let cluster = RedisCluster::start(3).expect("a local redis cluster forms");
        let redis = Redis::connect_cluster(&cluster.seeds())
            .await
            .expect("connect to the test cluster");
        TestEnv::new(None, Some(cluster), redis)
    }

    fn new(server: Option<RedisServer>, cluster: Option<RedisCluster>, redis: Redis) -> TestEnv {
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let keys = Keys::new(prefix.clone());
        TestEnv {
            server,
            cluster,
            redis,
            prefix,
            keys,
        }
    }

    /// The test's single redis-server; panics in a cluster test.
    pub fn server(&self) -> &RedisServer {
        self.server
            .as_ref()
            .expect("a single-server test (a cluster test has none)")
    }

    /// The test's single redis-server, to stop or replace; panics in a cluster test.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        self.server
            .as_mut()
            .expect("a single-server test (a cluster test has none)")
    }

    pub fn queue(&self, name: &str, opts: QueueOptions) -> Queue {
        Queue::new(self.redis.clone(), self.keys.clone(), name, opts).expect("valid queue options")
    }

    pub fn conn(&self) -> graphq::db::Conn {
        self.redis.conn()
    }

    /// How many times Redis ran `command` (lowercase, as `INFO
    /// commandstats` names it) since it started.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn())
            .await
            .unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The graphq binary wired to this test's Redis and prefix.
    pub fn graphq(&self) -> Command {
        let mut cmd = Command::new(graphq_bin());
        cmd.env("GRAPHQ_PREFIX", &self.prefix)
            .env(
                "RUST_LOG",
                std::env::var("TEST_CHILD_LOG").unwrap_or_else(|_| "warn,redis=error".into()),
            )
            .stdin(Stdio::null());
        match (&self.server, &self.cluster) {
            (_, Some(c)) => cmd.env("GRAPHQ_REDIS_CLUSTER", c.seed_list()),
            (Some(server), None) => cmd.env("GRAPHQ_REDIS_URL", server.url()),
            (None, None) => unreachable!("every TestEnv has a server or a cluster"),
        };
        cmd
    }
}

/// The `graphq` binary, which the workers crate builds (a test of this crate
/// cannot ask Cargo for another crate's binary). `$GRAPHQ_BIN` when set
/// (`scripts/test` builds the workspace first and sets it); otherwise Cargo
/// builds it once per test process, into this test's own target directory,
/// so it is never older than the code under test.
pub fn graphq_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GRAPHQ_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary sits in target/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "graphq-workers",
            "--bin",
            "graphq",
        ]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build of the graphq binary failed");
        profile_dir.join("graphq")
    })
}

/// A child process killed by PID when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::null());
        if std::env::var("TEST_CHILD_LOG").is_err() {
            cmd.stderr(Stdio::null());
        }
        Proc {
            child: cmd.spawn().expect("spawn graphq"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for a clean exit.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        if started.elapsed() > within {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/v2/graphs/{graph}/state` of the gateway at `base` (its
/// `http://host:port`), as `token` sees it.
pub async fn state_over_http(base: &str, graph: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v2/graphs/{graph}/state"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The text of `GET /metrics` at `base` (`http://host:port`).
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Queue options with short timeouts so recovery happens within a test.
pub fn fast(opts: QueueOptions) -> QueueOptions {
    QueueOptions {
        lease_ttl_ms: 1_000,
        heartbeat_ms: 100,
        block_ms: 200,
        pause_poll_ms: 50,
        promote_interval_ms: 20,
        shutdown_timeout_ms: 3_000,
        ..opts
    }
}

/// A gateway and a worker in this process, on a free port, against `env`.
pub struct Stack {
    pub url: String,
    pub ws: String,
    pub auth: graphq::auth::Auth,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub store: graphq::graph::GraphStore,
}

pub const SECRET: &str = "test-secret-0123456789abcdef";

impl Stack {
    /// Starts both through the composition root, as `graphq dev` does, with
    /// only the `commands` queue (4 partitions, fast recovery) configured.
    pub async fn start(env: &TestEnv, gateway: graphq::gateway::GatewaySettings) -> Stack {
        use graphq::config::{Config, Overrides};
        use graphq::queue::QueueKind;
        use graphq_workers::app;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut config = Config::load(None, Vec::new(), &Overrides::default())
            .expect("the shipped defaults load");
        config.prefix = env.prefix.clone();
        config.graph = graphq::graph::GraphSettings::default();
        config.gateway = gateway;
        config.queues = [(
            "commands".to_string(),
            fast(QueueOptions {
                kind: QueueKind::Ordered,
                partitions: 4,
                ..QueueOptions::default()
            }),
        )]
        .into_iter()
        .collect();
        let store = app::graph_store(&config, env.redis.clone());
        let processor = app::processor(&config, &env.redis).expect("commands is configured");
        app::start_workers(&config, &env.redis, &[], processor, &shutdown)
            .expect("the commands worker starts");
        let auth = graphq::auth::Auth::new(SECRET).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = app::start_gateway(
            &config,
            env.redis.clone(),
            auth.clone(),
            listener,
            &shutdown,
        )
        .await
        .expect("the gateway starts");
        let addr = gateway.addr;
        Stack {
            url: format!("http://{addr}"),
            ws: format!("ws://{addr}"),
            auth,
            shutdown,
            store,
        }
    }

    pub fn token(&self, user: &str, graphs: &[&str], role: graphq::auth::Role) -> String {
        let graphs = if graphs == ["*"] {
            graphq::auth::Graphs::All
        } else {
            graphq::auth::Graphs::Only(graphs.iter().map(|g| g.to_string()).collect())
        };
        self.auth
            .mint(user, graphs, role, Duration::from_secs(600))
            .unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Applies one command (JSON) to `graph` as `user`, the way the worker would;
/// panics on anything but an answer from the script.
#[allow(dead_code)] // not every test binary seeds graphs
pub async fn apply_as(
    store: &graphq::graph::GraphStore,
    graph: &str,
    user: &str,
    cmd: serde_json::Value,
) -> graphq::graph::Outcome {
    let ctx = graphq::graph::ApplyContext {
        graph_id: graph.into(),
        user_id: user.into(),
        now_ms: 1,
        new_epoch: "e1".into(),
    };
    let cmd = graphq::graph::command::parse(cmd.to_string().as_bytes()).expect("valid command");
    store.apply(&ctx, &cmd).await.expect("the store answers")
}
