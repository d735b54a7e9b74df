//! The `graphq` command line: flag definitions and what each subcommand does.
//! `main.rs` parses and calls [`run`], which reads the configuration, sets up
//! logging and starts what the subcommand asks for through [`crate::app`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use graphq::config::{Config, ConfigError, Overrides};
use graphq::db::Redis;
use graphq::graph::GraphStore;
use graphq::queue::{DeadLetter, Queue, QueueError, QueueStats};
use graphq::redis_server::{RedisServer, RedisServerError, RedisServerOptions};

use crate::app::{self, StartError, connect, graph_store, queue};

#[derive(Debug, Parser)]
#[command(
    name = "graphq",
    version,
    about = "Realtime command queue for collaborative graph editors"
)]
pub struct Cli {
    /// Settings file layered over config/default.toml.
    #[arg(long, global = true, env = "GRAPHQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL (also GRAPHQ_REDIS_URL).
    #[arg(long, global = true)]
    pub redis: Option<String>,
    /// Redis Cluster seed nodes, URL[,URL...] (also GRAPHQ_REDIS_CLUSTER);
    /// switches to cluster mode.
    #[arg(long, global = true)]
    pub redis_cluster: Option<String>,
    /// Key prefix (also GRAPHQ_PREFIX).
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process, with the demo editor. Runs on a private
    /// redis-server (data under ./.graphq/) unless a Redis is named with
    /// --redis or GRAPHQ_REDIS_URL.
    Dev {
        /// Listen address (also GRAPHQ_BIND).
        #[arg(long)]
        bind: Option<String>,
    },
    /// HTTP API, WebSocket endpoint and broadcaster.
    Gateway {
        /// Listen address (also GRAPHQ_BIND).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Queue consumers for all queues, or the ones named.
    Worker {
        /// Only this queue (repeatable).
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// Serve /metrics, /healthz and /readyz here (also GRAPHQ_METRICS_BIND).
        #[arg(long)]
        metrics_bind: Option<String>,
    },
    /// Per queue: length, pending, owners, lag, delayed, dead letters, counters.
    Queues {
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter inspection and replay.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Graph state as JSON, or a consistency check of it.
    Graph {
        #[command(subcommand)]
        action: GraphAction,
    },
    /// Status of one operation.
    Op { operation_id: String },
    /// Mint an access token (printed alone on stdout). Needs GRAPHQ_AUTH_SECRET.
    Token {
        #[arg(long)]
        user: String,
        /// A graph the token reaches (repeatable); `*` for every graph.
        #[arg(long = "graph", required = true)]
        graphs: Vec<String>,
        #[arg(long, value_enum, default_value_t = graphq::auth::Role::Editor)]
        role: graphq::auth::Role,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Load generators (JSON on stdout), and a worker that also runs the
    /// synthetic `bench.*` jobs.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Dead jobs of a queue, oldest first.
    List {
        queue: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One dead job, by PARTITION/ENTRY_ID or job id.
    Show {
        queue: String,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a dead job (or, without ID, every dead job) back into its queue.
    /// Replaying many prints progress on stderr.
    Retry {
        queue: String,
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete every dead job of a queue.
    Purge {
        queue: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GraphAction {
    /// The graph's full state (as `GET …/state` answers) on stdout.
    Dump { graph_id: String },
    /// Recompute the checksum and replay the retained log from a snapshot;
    /// exits with status 1 when anything does not add up.
    Verify {
        graph_id: String,
        #[arg(long)]
        json: bool,
    },
    /// The graph's conflict log (docs/graph.md, The conflict log), oldest first.
    Conflicts {
        graph_id: String,
        /// Only MANUAL conflicts still waiting for a resolution.
        #[arg(long)]
        open: bool,
        /// The list as `GET …/conflicts` answers it.
        #[arg(long)]
        json: bool,
    },
    /// Create a graph from a state in the shape `dump` prints (a file, or
    /// `-`/nothing for stdin), atomically, at a new epoch with a snapshot.
    /// Refuses a graph that exists unless --replace.
    Load {
        graph_id: String,
        file: Option<PathBuf>,
        /// Replace the graph when it exists (its log, undo/redo lists and
        /// analytics records go; its subscribers get a fresh state).
        #[arg(long, alias = "force")]
        replace: bool,
    },
    /// The retained change log after version --since, one JSON object per
    /// line, oldest first.
    Log {
        graph_id: String,
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

#[cfg(feature = "bench")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue and processing throughput of the queue engine alone.
    Queue(crate::bench::QueueBenchArgs),
    /// Graph store: script applies per second, state and changes-since latency.
    Graph(crate::bench::GraphBenchArgs),
    /// WebSocket clients sending at a steady rate through a running gateway.
    E2e(crate::bench::ws::E2eArgs),
    /// One change reaching N subscribers of a running gateway.
    Fanout(crate::bench::ws::FanoutArgs),
    /// `graphq worker` that also runs `bench.noop` and `bench.apply` jobs
    /// (the engine's multi-process tests use it; production workers do not).
    Worker {
        /// Only this queue (repeatable).
        #[arg(long = "queue")]
        queues: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    RedisServer(#[from] RedisServerError),
    #[error("{0}")]
    NotFound(String),
    #[error("graph {0} is inconsistent")]
    Inconsistent(String),
    #[error(transparent)]
    Store(#[from] graphq::graph::StoreError),
    #[error(transparent)]
    Auth(#[from] graphq::auth::AuthError),
    #[error("GRAPHQ_AUTH_SECRET is not set; tokens cannot be minted or checked without it")]
    NoSecret,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] graphq::graph::LogError),
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let bind = match &cli.command {
        Command::Dev { bind } | Command::Gateway { bind } => bind.clone(),
        _ => None,
    };
    let metrics_bind = match &cli.command {
        Command::Worker { metrics_bind, .. } => metrics_bind.clone(),
        _ => None,
    };
    let flags = Overrides {
        redis_url: cli.redis.clone(),
        redis_cluster: cli.redis_cluster.clone(),
        prefix: cli.prefix.clone(),
        bind,
        metrics_bind,
    };
    let config = Config::from_process(cli.config.as_deref(), &flags)?;
    init_logging(config.log_format);
    match cli.command {
        Command::Dev { .. } => {
            // The gateway runs in this process: small pages, as for
            // `graphq gateway` (a redis-server it starts inherits this too,
            // which is what Redis asks for).
            graphq::os::no_huge_pages();
            let named = redis_named(cli.redis.as_deref(), &config)?;
            dev(config, named).await
        }
        Command::Gateway { .. } => {
            graphq::os::raise_fd_limit();
            graphq::os::no_huge_pages();
            let secret = config.auth_secret.clone().ok_or(CliError::NoSecret)?;
            let auth = graphq::auth::Auth::new(&secret)?;
            let redis = connect(&config, Duration::from_secs(60)).await?;
            let shutdown = shutdown_signal();
            let listener = tokio::net::TcpListener::bind(&config.bind).await?;
            let gateway = app::start_gateway(&config, redis, auth, listener, &shutdown).await?;
            Ok(gateway.stopped().await?)
        }
        Command::Worker { queues, .. } => {
            let redis = connect(&config, Duration::from_secs(60)).await?;
            let processor = app::processor(&config, &redis)?;
            run_workers(&config, redis, &queues, processor).await
        }
        Command::Queues { json } => {
            let redis = connect(&config, Duration::from_secs(2)).await?;
            let mut all = Vec::new();
            for name in config.queues.keys() {
                all.push(queue(&config, &redis, name)?.stats().await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                print!("{}", queues_table(&all));
            }
            Ok(())
        }
        Command::Dlq { action } => {
            let redis = connect(&config, Duration::from_secs(2)).await?;
            dlq(&config, &redis, action).await
        }
        Command::Graph { action } => {
            let redis = connect(&config, Duration::from_secs(2)).await?;
            let store = graph_store(&config, redis);
            graph(&store, action).await
        }
        Command::Op { operation_id } => {
            let redis = connect(&config, Duration::from_secs(2)).await?;
            let store = graph_store(&config, redis);
            let status = store
                .operation(&operation_id)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("no operation {operation_id}")))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
            Ok(())
        }
        Command::Token {
            user,
            graphs,
            role,
            ttl,
        } => {
            let secret = config.auth_secret.as_deref().ok_or(CliError::NoSecret)?;
            let auth = graphq::auth::Auth::new(secret)?;
            let graphs = if graphs.iter().any(|g| g == "*") {
                graphq::auth::Graphs::All
            } else {
                if let Some(bad) = graphs
                    .iter()
                    .find(|g| !graphq::graph::command::is_graph_id(g))
                {
                    return Err(CliError::Auth(graphq::auth::AuthError::Invalid(format!(
                        "`{bad}` is not a graph id"
                    ))));
                }
                graphq::auth::Graphs::Only(graphs)
            };
            println!("{}", auth.mint(&user, graphs, role, ttl)?);
            Ok(())
        }
        #[cfg(feature = "bench")]
        Command::Bench { which } => {
            if let BenchCommand::Worker { queues } = &which {
                let redis = connect(&config, Duration::from_secs(60)).await?;
                let processor = crate::bench::jobs::BenchProcessor::new(
                    app::processor(&config, &redis)?,
                    redis.clone(),
                    graphq::keys::Keys::new(config.prefix.clone()),
                );
                return run_workers(&config, redis, queues, processor).await;
            }
            let ws_error = |e: crate::bench::ws::WsBenchError| CliError::NotFound(e.to_string());
            match &which {
                BenchCommand::E2e(args) => {
                    let secret = config.auth_secret.as_deref().ok_or(CliError::NoSecret)?;
                    let report = crate::bench::ws::e2e(secret, args)
                        .await
                        .map_err(ws_error)?;
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    return Ok(());
                }
                BenchCommand::Fanout(args) => {
                    let secret = config.auth_secret.as_deref().ok_or(CliError::NoSecret)?;
                    let report = crate::bench::ws::fanout(secret, args)
                        .await
                        .map_err(ws_error)?;
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    return Ok(());
                }
                _ => {}
            }
            let redis = connect(&config, Duration::from_secs(2)).await?;
            match which {
                BenchCommand::E2e(_) | BenchCommand::Fanout(_) | BenchCommand::Worker { .. } => {}
                BenchCommand::Queue(args) => {
                    let report = crate::bench::queue(redis, &config.prefix, &args).await?;
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                }
                BenchCommand::Graph(args) => {
                    let report = crate::bench::graph(redis, &config.prefix, &args).await?;
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                }
            }
            Ok(())
        }
    }
}

/// Runs workers for the selected queues (all when `only` is empty) until
/// SIGINT/SIGTERM, with the metrics listener when `metrics_bind` is set.
async fn run_workers<P: graphq::queue::Processor + Clone>(
    config: &Config,
    redis: Redis,
    only: &[String],
    processor: P,
) -> Result<(), CliError> {
    let shutdown = shutdown_signal();
    if let Some(bind) = &config.metrics_bind {
        let names: Vec<String> = if only.is_empty() {
            config.queues.keys().cloned().collect()
        } else {
            only.to_vec()
        };
        let watched = names
            .iter()
            .map(|name| queue(config, &redis, name))
            .collect::<Result<Vec<_>, _>>()?;
        let listener = tokio::net::TcpListener::bind(bind).await?;
        tracing::info!(%bind, "worker metrics listening");
        app::serve_worker_metrics(listener, redis.clone(), watched, shutdown.clone());
    }
    app::start_workers(config, &redis, only, processor, &shutdown)?
        .stopped()
        .await;
    Ok(())
}

/// Log lines on stderr, as configured; the level from RUST_LOG (default info).
fn init_logging(format: graphq::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: redirected to a file, escape codes are noise.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (tests run several commands in one process) keeps the first.
    let _ = match format {
        graphq::config::LogFormat::Json => logs.json().try_init(),
        graphq::config::LogFormat::Human => logs.try_init(),
    };
}

/// True when the Redis to use was named: `--redis`, `--redis-cluster`, their
/// variables, or a settings file that changes the default URL.
fn redis_named(cli_redis: Option<&str>, config: &Config) -> Result<bool, CliError> {
    let var_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let defaults = Config::load(None, Vec::new(), &Overrides::default())?;
    Ok(cli_redis.is_some()
        || var_set("GRAPHQ_REDIS_URL")
        || config.redis_cluster.is_some()
        || config.redis_url != defaults.redis_url)
}

/// `graphq dev`: gateway, workers and the demo in one process. Unless a Redis
/// is named, on a private redis-server with its data under `./.graphq/`,
/// stopped when this process stops (SIGINT, SIGTERM, or an error).
async fn dev(mut config: Config, redis_named: bool) -> Result<(), CliError> {
    let mut private = None;
    let redis_line = if redis_named {
        format!(
            "Redis: {} (named by --redis / GRAPHQ_REDIS_URL / the settings), prefix `{}`",
            config.redis_target().describe(),
            config.prefix
        )
    } else {
        let dir = std::env::current_dir()?.join(".graphq");
        let server = RedisServer::start_with(RedisServerOptions {
            dir: Some(dir.clone()),
            aof: true,
            own_process_group: true,
            ..RedisServerOptions::default()
        })?;
        config.redis_url = server.url();
        let line = format!(
            "Redis: a private redis-server (pid {}) on {} with its data in {} \
             (stopped with graphq dev; --redis URL or GRAPHQ_REDIS_URL uses another)",
            server.pid(),
            server.url(),
            dir.display()
        );
        private = Some(server);
        line
    };
    let served = dev_on(config, &redis_line).await;
    if let Some(mut server) = private {
        // After the workers drained: they needed Redis until then.
        server.terminate(Duration::from_secs(5));
    }
    served
}

async fn dev_on(mut config: Config, redis_line: &str) -> Result<(), CliError> {
    let redis = connect(&config, Duration::from_secs(5)).await?;
    let secret = match config.auth_secret.clone() {
        Some(s) => s,
        None => {
            // A fresh secret per run: dev tokens never outlive the dev server.
            let s = format!("dev-{}", uuid::Uuid::new_v4().simple());
            config.auth_secret = Some(s.clone());
            s
        }
    };
    config.gateway.dev_tokens = true;
    let auth = graphq::auth::Auth::new(&secret)?;
    let token = auth.mint(
        "dev",
        graphq::auth::Graphs::All,
        graphq::auth::Role::Editor,
        Duration::from_secs(24 * 3600),
    )?;
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&config.bind).await?;
    let addr = listener.local_addr()?;
    let processor = app::processor(&config, &redis)?;
    let workers = app::start_workers(&config, &redis, &[], processor, &shutdown)?;
    let gateway = app::start_gateway(&config, redis, auth, listener, &shutdown).await?;
    eprint!("{}", dev_banner(&config, addr, redis_line, &token, &secret));
    let served = gateway.stopped().await;
    shutdown.cancel();
    workers.stopped().await;
    Ok(served?)
}

/// What `graphq dev` prints once it serves: where, on which Redis, a
/// command to try, and how to mint more tokens with this very binary.
fn dev_banner(
    config: &Config,
    addr: std::net::SocketAddr,
    redis_line: &str,
    token: &str,
    secret: &str,
) -> String {
    // A wildcard address is reached on the loopback.
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let id = &run[..8];
    let command = serde_json::json!({
        "operationId": format!("first-{id}"),
        "type": "CREATE_NODE",
        "payload": {"node": {"id": format!("n-{id}"), "position": {"x": 0, "y": 0}}},
    });
    let binary = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "graphq".into());
    let queues = config.queues.keys().cloned().collect::<Vec<_>>().join(", ");
    format!(
        "graphq dev: gateway on http://{host} (HTTP API and /ws), workers for {queues}\n\
         graphq dev: {redis_line}\n\
         graphq dev: open the demo editor at http://{host}/ (two windows, two names: live collaboration)\n\
         graphq dev: a token for user `dev` on every graph (24 h): {token}\n\
         graphq dev: try a command:\n\
         curl -sS -X POST 'http://{host}/api/v2/graphs/demo/command?wait=5000' \\\n  \
         -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n  \
         -d '{command}'\n\
         graphq dev: more tokens: GRAPHQ_AUTH_SECRET={secret} {binary} token --user NAME --graph GRAPH\n\
         graphq dev: Ctrl-C stops everything\n"
    )
}

async fn graph(store: &GraphStore, action: GraphAction) -> Result<(), CliError> {
    match action {
        GraphAction::Dump { graph_id } => {
            let state = store.state(&graph_id).await?;
            if state.epoch.is_empty() {
                return Err(CliError::NotFound(format!(
                    "graph {graph_id} does not exist"
                )));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            );
            Ok(())
        }
        GraphAction::Load {
            graph_id,
            file,
            replace,
        } => {
            if !graphq::graph::command::is_graph_id(&graph_id) {
                return Err(CliError::Invalid(format!("`{graph_id}` is not a graph id")));
            }
            let text = match file.as_deref() {
                None => std::io::read_to_string(std::io::stdin())?,
                Some(p) if p.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| CliError::Invalid(format!("{}: {e}", p.display())))?,
            };
            let state: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Invalid(format!("the input is not JSON: {e}")))?;
            let import = graphq::graph::import::prepare(&state, store.settings())
                .map_err(|r| CliError::Invalid(format!("{r}")))?;
            let loaded = store.load(&graph_id, &import, replace).await?;
            if loaded.outcome == graphq::graph::LoadOutcome::Exists {
                return Err(CliError::Invalid(format!(
                    "graph {graph_id} exists; nothing was written (--replace replaces it)"
                )));
            }
            println!("{}", serde_json::to_string(&loaded).unwrap_or_default());
            Ok(())
        }
        GraphAction::Log { graph_id, since } => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            store
                .log_since(&graph_id, since, |change| {
                    serde_json::to_writer(&mut out, change)?;
                    out.write_all(b"\n")
                })
                .await?;
            out.flush()?;
            Ok(())
        }
        GraphAction::Verify { graph_id, json } => {
            let report = store
                .verify_with_progress(&graph_id, |done, total| {
                    if done % PROGRESS_EVERY as u64 == 0 {
                        eprintln!("replayed {done}/{total} log entries of graph {graph_id}");
                    }
                })
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("graph {} at version {}", report.graph_id, report.version);
                println!(
                    "checksum: stored {} computed {}",
                    report.stored_checksum, report.computed_checksum
                );
                if let Some(from) = &report.replayed_from {
                    println!(
                        "replayed {} log entries from the {from}",
                        report.replayed_entries
                    );
                }
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
                if report.ok() {
                    println!("ok");
                }
            }
            if report.ok() {
                Ok(())
            } else {
                Err(CliError::Inconsistent(graph_id))
            }
        }
        GraphAction::Conflicts {
            graph_id,
            open,
            json,
        } => {
            let filter = graphq::graph::ConflictFilter {
                status: open.then(|| "open".to_string()),
                ..Default::default()
            };
            let list = store.conflicts(&graph_id, &filter).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return Ok(());
            }
            for c in &list.conflicts {
                println!("{}", conflict_line(c));
            }
            println!("{} conflicts", list.conflicts.len());
            Ok(())
        }
    }
}

/// One conflict as `graphq graph conflicts` prints it: id, status,
/// strategy, field, the two users and the two values.
fn conflict_line(c: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut line = format!(
        "{} {} {} {} v{}: {} wrote {} over {} by {}",
        text(&c["id"]),
        text(&c["status"]),
        text(&c["strategy"]),
        text(&c["field"]),
        c["version"],
        text(&c["userId"]),
        c["clientValue"],
        c["serverValue"],
        text(&c["serverUserId"]),
    );
    if let Some(r) = c["resolution"].as_object() {
        line.push_str(&format!(
            "; resolved by {} with {}",
            r.get("userId").map_or_else(String::new, text),
            r.get("value").cloned().unwrap_or_default()
        ));
    }
    line
}

async fn dlq(config: &Config, redis: &Redis, action: DlqAction) -> Result<(), CliError> {
    match action {
        DlqAction::List {
            queue: name,
            limit,
            json,
        } => {
            let dead = queue(config, redis, &name)?
                .dead_letters()
                .list(limit)
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&dead).unwrap_or_default()
                );
            } else {
                print!("{}", dlq_table(&dead));
            }
        }
        DlqAction::Show {
            queue: name,
            id,
            json,
        } => {
            let dead = queue(config, redis, &name)?
                .dead_letters()
                .show(&id)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("no dead job {id} in {name}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&dead).unwrap_or_default()
                );
            } else {
                for (k, v) in &dead.fields {
                    println!("{k:>14}  {v}");
                }
            }
        }
        DlqAction::Retry {
            queue: name,
            id,
            json,
        } => {
            let q = queue(config, redis, &name)?;
            match id {
                Some(id) => {
                    let entry =
                        q.dead_letters().retry(&id).await?.ok_or_else(|| {
                            CliError::NotFound(format!("no dead job {id} in {name}"))
                        })?;
                    if json {
                        let out =
                            serde_json::json!({"queue": name, "requeued": 1, "entries": [entry]});
                        println!("{out}");
                    } else {
                        println!("requeued {id} as {entry}");
                    }
                }
                None => {
                    let n = retry_every_dead_job(&q).await?;
                    if json {
                        println!("{}", serde_json::json!({"queue": name, "requeued": n}));
                    } else {
                        println!("requeued {n} jobs");
                    }
                }
            }
        }
        DlqAction::Purge { queue: name, json } => {
            let n = queue(config, redis, &name)?.dead_letters().purge().await?;
            if json {
                println!("{}", serde_json::json!({"queue": name, "purged": n}));
            } else {
                println!("purged {n} dead jobs from {name}");
            }
        }
    }
    Ok(())
}

/// Dead jobs requeued between two progress lines on stderr.
const PROGRESS_EVERY: usize = 1000;

/// Replays every job that is dead when the command starts, with a progress
/// line on stderr every [`PROGRESS_EVERY`] jobs (stdout keeps the result).
async fn retry_every_dead_job(q: &Queue) -> Result<usize, CliError> {
    let dlq = q.dead_letters();
    let total = dlq.count().await?;
    let requeued = dlq
        .retry_all(|n| {
            if n % PROGRESS_EVERY == 0 {
                eprintln!("requeued {n}/{total} dead jobs of {}", q.name());
            }
        })
        .await?;
    Ok(requeued)
}

fn queues_table(all: &[QueueStats]) -> String {
    let mut out = format!(
        "{:<10} {:>4} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>8} {:>10} {:<8} {}\n",
        "QUEUE",
        "PART",
        "LENGTH",
        "PENDING",
        "LAG",
        "DELAYED",
        "DLQ",
        "PROCESSED",
        "FAILED",
        "OLDEST_MS",
        "PAUSED",
        "OWNER"
    );
    for q in all {
        for p in &q.partitions {
            let c = |k: &str| p.counters.get(k).copied().unwrap_or(0);
            out.push_str(&format!(
                "{:<10} {:>4} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>8} {:>10} {:<8} {}\n",
                q.queue,
                p.partition,
                p.length,
                p.pending,
                p.lag,
                p.delayed,
                p.dead_lettered_now,
                c("processed"),
                c("failed"),
                p.oldest_age_ms
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                if q.paused { "yes" } else { "no" },
                p.owner.as_deref().unwrap_or("-"),
            ));
        }
    }
    out
}

fn dlq_table(dead: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<28} {:<38} {:<16} {:>8}  {}\n",
        "REF", "JOB", "NAME", "ATTEMPTS", "ERROR"
    );
    for d in dead {
        out.push_str(&format!(
            "{:<28} {:<38} {:<16} {:>8}  {}\n",
            d.reference(),
            d.job_id,
            d.name,
            d.attempts_made,
            d.error
        ));
    }
    out
}

/// Fires on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; draining");
        t.cancel();
    });
    token
}
