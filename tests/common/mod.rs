//! Test harness: each test gets its own redis-server on a free port (killed by
//! PID when the test ends, panics included) and its own key prefix.
#![allow(dead_code)]

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graphq::db::Redis;
use graphq::keys::Keys;
use graphq::queue::{Queue, QueueOptions};
use graphq::redis_server::{RedisCluster, RedisServer};

pub struct TestEnv {
    /// The test's Redis; in a cluster test, an idle one (nothing uses it).
    pub server: RedisServer,
    /// Set by [`TestEnv::start_cluster`]: what `redis` and child processes use.
    pub cluster: Option<RedisCluster>,
    pub redis: Redis,
    pub prefix: String,
    pub keys: Keys,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        let server = RedisServer::start().expect("redis-server starts (is it installed?)");
        let redis = Redis::connect(&server.url())
            .await
            .expect("connect to test redis");
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let keys = Keys::new(prefix.clone());
        TestEnv {
            server,
            cluster: None,
            redis,
            prefix,
            keys,
        }
    }

    /// A test on a local Redis Cluster of 3 masters and 3 replicas.
    pub async fn start_cluster() -> TestEnv {
        let mut env = TestEnv::start().await;
        let cluster = RedisCluster::start(3).expect("a local redis cluster forms");
        env.redis = Redis::connect_cluster(&cluster.seeds())
            .await
            .expect("connect to the test cluster");
        env.cluster = Some(cluster);
        env
    }

    pub fn queue(&self, name: &str, opts: QueueOptions) -> Queue {
        Queue::new(self.redis.clone(), self.keys.clone(), name, opts).expect("valid queue options")
    }

    pub fn conn(&self) -> graphq::db::Conn {
        self.redis.conn()
    }

    /// The graphq binary wired to this test's Redis and prefix.
    pub fn graphq(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_graphq"));
        cmd.env("GRAPHQ_REDIS_URL", self.server.url())
            .env("GRAPHQ_PREFIX", &self.prefix)
            .env(
                "RUST_LOG",
                std::env::var("TEST_CHILD_LOG").unwrap_or_else(|_| "warn,redis=error".into()),
            )
            .stdin(Stdio::null());
        if let Some(c) = &self.cluster {
            cmd.env("GRAPHQ_REDIS_CLUSTER", c.seed_list());
        }
        cmd
    }
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
    pub async fn start(env: &TestEnv, gateway: graphq::gateway::GatewaySettings) -> Stack {
        use graphq::gateway::{AppState, BroadcastSettings, Broadcaster};
        use graphq::graph::{GraphSettings, GraphStore};
        use graphq::queue::{QueueKind, Worker};
        let shutdown = tokio_util::sync::CancellationToken::new();
        let store = GraphStore::new(
            env.redis.clone(),
            env.keys.clone(),
            GraphSettings::default(),
        );
        let commands = env.queue(
            "commands",
            fast(QueueOptions {
                kind: QueueKind::Ordered,
                partitions: 4,
                ..QueueOptions::default()
            }),
        );
        let worker = Worker::new(
            commands.clone(),
            graphq::workers::GraphqProcessor::new(store.clone()),
        )
        .observer(graphq::metrics::JobMetrics::new("commands"));
        tokio::spawn(worker.run(shutdown.clone()));
        let auth = graphq::auth::Auth::new(SECRET).unwrap();
        let settings = BroadcastSettings {
            max_changes: 1000,
            presence_timeout: Duration::from_millis(gateway.presence_timeout_ms),
        };
        let broadcaster =
            Broadcaster::start(env.redis.clone(), store.clone(), settings, shutdown.clone())
                .await
                .unwrap();
        let state = AppState::new(
            store.clone(),
            commands,
            auth.clone(),
            broadcaster,
            gateway,
            shutdown.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(graphq::gateway::serve(listener, state));
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
