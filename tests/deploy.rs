//! docker-compose.yml and the Dockerfile, checked against the real CLI and
//! configuration. Docker does not run here, so the test reads the files as
//! Compose would and asks graphq whether it would accept what they say: a
//! renamed flag, a renamed config key, a health check probing the wrong port
//! or a tool missing from the image fails here instead of in a deployment.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use graphq::config::{Config, Overrides};
use graphq_workers::cli::{Cli, Command};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&repo_file("docker-compose.yml"))
        .expect("docker-compose.yml is valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn services(compose: &Yaml) -> Vec<(String, Yaml)> {
    compose["services"]
        .as_hash()
        .expect("a services mapping")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("service names are strings").into(),
                v.clone(),
            )
        })
        .collect()
}

/// A scalar as Compose passes it to a process (numbers and booleans as written).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`
/// and `$$`. Variables come from the operator's shell, which the test plays:
/// a default when there is one, otherwise a stand-in long enough to be a
/// valid secret.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("${ is closed");
            let expr = &body[..end];
            let (name, default) = match expr.find([':', '-', '?']) {
                Some(j) => {
                    let op = expr[j..].trim_start_matches(':');
                    let default = op.strip_prefix('-').map(str::to_string);
                    (&expr[..j], default)
                }
                None => (expr, None),
            };
            out.push_str(&default.unwrap_or_else(|| format!("stand-in-for-{name}-0123456789")));
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn command(service: &Yaml) -> Option<Vec<String>> {
    match &service["command"] {
        Yaml::Array(a) => Some(a.iter().map(|v| interpolate(&scalar(v))).collect()),
        Yaml::String(s) => Some(
            interpolate(s)
                .split_whitespace()
                .map(String::from)
                .collect(),
        ),
        Yaml::BadValue => None,
        other => panic!("unexpected command {other:?}"),
    }
}

/// The environment a service's process gets, in either Compose spelling.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| (scalar(k), interpolate(&scalar(v))))
            .collect(),
        Yaml::Array(a) => a
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_string(), interpolate(v))
            })
            .collect(),
        Yaml::BadValue => Vec::new(),
        other => panic!("unexpected environment {other:?}"),
    }
}

/// What `graphq` would run with: the parsed command line and the settings it
/// loads from the defaults, the service's environment and the flags (the same
/// mapping of flags to settings as `graphq_workers::cli::run`).
fn effective(name: &str, service: &Yaml) -> (Cli, Config) {
    let argv = command(service).unwrap_or_else(|| panic!("{name}: no command"));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!(
            "{name}: `{}` is not a graphq command line:\n{e}",
            argv.join(" ")
        )
    });
    assert!(
        cli.config.is_none(),
        "{name}: --config names a file inside the image that this test cannot check"
    );
    let flags = Overrides {
        redis_url: cli.redis.clone(),
        redis_cluster: cli.redis_cluster.clone(),
        prefix: cli.prefix.clone(),
        bind: match &cli.command {
            Command::Dev { bind } | Command::Gateway { bind } => bind.clone(),
            _ => None,
        },
        metrics_bind: match &cli.command {
            Command::Worker { metrics_bind, .. } => metrics_bind.clone(),
            _ => None,
        },
    };
    let config = Config::load(None, environment(service), &flags)
        .unwrap_or_else(|e| panic!("{name}: graphq refuses its settings: {e}"));
    (cli, config)
}

fn is_graphq(service: &Yaml) -> bool {
    command(service).is_some_and(|argv| argv.first().map(String::as_str) == Some("graphq"))
}

/// Environment variables clap reads itself (GRAPHQ_CONFIG), in every subcommand.
fn clap_env_names() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

/// The setting `GRAPHQ_A__B` names (`a.b`) in the loaded configuration, if
/// graphq has one by that name.
fn setting<'a>(config: &'a Value, var: &str) -> Option<&'a Value> {
    let path = var.strip_prefix("GRAPHQ_")?;
    path.split("__")
        .try_fold(config, |v, seg| v.get(seg.to_ascii_lowercase()))
        .filter(|v| !v.is_null())
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

/// The URL a health check requests, and the program it runs.
fn health_probe(name: &str, service: &Yaml) -> (String, String) {
    let test = &service["healthcheck"]["test"];
    let words: Vec<String> = match test {
        Yaml::Array(a) => a.iter().map(scalar).collect(),
        Yaml::String(s) => s.split_whitespace().map(String::from).collect(),
        _ => panic!("{name}: no healthcheck test"),
    };
    let words: Vec<String> = match words.first().map(String::as_str) {
        Some("CMD") => words[1..].to_vec(),
        Some("CMD-SHELL") => words[1..]
            .join(" ")
            .split_whitespace()
            .map(String::from)
            .collect(),
        _ => words,
    };
    let url = words
        .iter()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{name}: the health check requests no http:// URL: {words:?}"))
        .clone();
    (words[0].clone(), url)
}

#[test]
fn every_graphq_command_line_parses_with_the_real_cli() {
    let compose = compose();
    let mut seen = BTreeSet::new();
    for (name, service) in services(&compose) {
        if !is_graphq(&service) {
            continue;
        }
        let (cli, _) = effective(&name, &service);
        seen.insert(match cli.command {
            Command::Gateway { .. } => "gateway",
            Command::Worker { .. } => "worker",
            _ => "other",
        });
    }
    assert_eq!(
        seen,
        BTreeSet::from(["gateway", "worker"]),
        "a gateway and workers"
    );
}

#[test]
fn every_graphq_variable_is_a_setting_graphq_reads() {
    let compose = compose();
    let clap_env = clap_env_names();
    let mut checked = 0;
    for (name, service) in services(&compose) {
        if !is_graphq(&service) {
            continue;
        }
        let (_, config) = effective(&name, &service);
        let loaded = serde_json::to_value(&config).unwrap();
        for (var, value) in environment(&service) {
            if !var.starts_with("GRAPHQ_") || clap_env.contains(&var) {
                continue;
            }
            let landed = setting(&loaded, &var).unwrap_or_else(|| {
                panic!("{name}: graphq has no setting {var} (config keys: config/default.toml)")
            });
            assert_eq!(
                as_text(landed),
                value,
                "{name}: {var}={value} did not reach the configuration"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} variables checked");
}

#[test]
fn the_checker_itself_catches_a_misspelt_variable() {
    let config = serde_json::to_value(
        Config::load(
            None,
            [
                (
                    "GRAPHQ_METRICS_BIND".to_string(),
                    "0.0.0.0:9091".to_string(),
                ),
                ("GRAPHQ_QUEUES__COMMANDS__PARTITIONS".into(), "8".into()),
            ],
            &Overrides::default(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        as_text(setting(&config, "GRAPHQ_METRICS_BIND").unwrap()),
        "0.0.0.0:9091"
    );
    assert_eq!(
        as_text(setting(&config, "GRAPHQ_QUEUES__COMMANDS__PARTITIONS").unwrap()),
        "8"
    );
    assert!(setting(&config, "GRAPHQ_METRIC_BIND").is_none());
    assert!(setting(&config, "GRAPHQ_QUEUES__COMMAND__PARTITIONS").is_none());
    assert!(
        setting(&config, "GRAPHQ_AUTH_SECRET").is_none(),
        "unset is not read"
    );
    assert_eq!(
        interpolate("${GRAPHQ_AUTH_SECRET:?set it}"),
        "stand-in-for-GRAPHQ_AUTH_SECRET-0123456789"
    );
    assert_eq!(interpolate("a${X:-b}c$$"), "abc$");
}

#[test]
fn health_checks_probe_readyz_where_each_process_listens() {
    let compose = compose();
    let mut probed = 0;
    for (name, service) in services(&compose) {
        if !is_graphq(&service) {
            continue;
        }
        let (cli, config) = effective(&name, &service);
        let listen = match cli.command {
            Command::Gateway { .. } | Command::Dev { .. } => config.bind.clone(),
            Command::Worker { .. } => config.metrics_bind.clone().unwrap_or_else(|| {
                panic!("{name}: a worker serves /readyz only with GRAPHQ_METRICS_BIND")
            }),
            _ => continue,
        };
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name}: listens on {listen}, unreachable from other containers"
        );
        let (program, url) = health_probe(&name, &service);
        let authority = url["http://".len()..].split('/').next().unwrap();
        let path = &url["http://".len() + authority.len()..];
        assert_eq!(path, "/readyz", "{name}: probes {url}");
        assert!(
            authority.starts_with("127.0.0.1:") || authority.starts_with("localhost:"),
            "{name}: probes {url} from inside its own container"
        );
        assert_eq!(
            port_of(authority),
            port_of(&listen),
            "{name}: probes {url} but listens on {listen}"
        );
        assert!(
            runtime_packages().contains(&program),
            "{name}: the health check runs `{program}`, which the image does not install"
        );
        probed += 1;
    }
    assert_eq!(probed, 2, "the gateway and the worker are probed");
}

#[test]
fn processes_share_one_redis_prefix_and_queue_layout_and_start_after_redis() {
    let compose = compose();
    let all = services(&compose);
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let mut configs = Vec::new();
    for (name, service) in &all {
        if !is_graphq(service) {
            continue;
        }
        let (cli, config) = effective(name, service);
        let host = config
            .redis_url
            .strip_prefix("redis://")
            .and_then(|r| r.split([':', '/']).next())
            .unwrap_or_default();
        assert!(
            names.contains(host),
            "{name}: GRAPHQ_REDIS_URL {} names no service",
            config.redis_url
        );
        assert_eq!(
            scalar(&service["depends_on"][host]["condition"]),
            "service_healthy",
            "{name}: starts before {host} is healthy"
        );
        if matches!(cli.command, Command::Gateway { .. }) {
            assert!(
                config.auth_secret.is_some(),
                "{name}: a gateway refuses to start without GRAPHQ_AUTH_SECRET"
            );
        }
        // Docker sends SIGKILL after stop_grace_period (10 s when unset):
        // a worker must get its whole drain time first.
        let grace = match &service["stop_grace_period"] {
            Yaml::BadValue => Duration::from_secs(10),
            v => humantime::parse_duration(&scalar(v)).expect("a duration"),
        };
        let drain = config
            .queues
            .values()
            .map(|q| q.shutdown_timeout_ms)
            .max()
            .unwrap();
        assert!(
            grace > Duration::from_millis(drain),
            "{name}: stop_grace_period {grace:?} cuts a {drain} ms drain short"
        );
        configs.push((name.clone(), config));
    }
    let (first, base) = &configs[0];
    for (name, c) in &configs[1..] {
        assert_eq!(c.redis_url, base.redis_url, "{name} and {first}: one Redis");
        assert_eq!(c.prefix, base.prefix, "{name} and {first}: one prefix");
        assert_eq!(
            c.queues, base.queues,
            "{name} and {first}: gateways and workers must agree on partitions"
        );
    }
}

#[test]
fn three_workers_and_redis_with_an_append_only_file() {
    let compose = compose();
    let all = services(&compose);
    let workers: Vec<&Yaml> = all
        .iter()
        .filter(|(n, s)| {
            is_graphq(s) && matches!(effective(n, s).0.command, Command::Worker { .. })
        })
        .map(|(_, s)| s)
        .collect();
    assert_eq!(workers.len(), 1, "one worker service, scaled by replicas");
    assert_eq!(workers[0]["deploy"]["replicas"].as_i64(), Some(3));

    let redis = &compose["services"]["redis"];
    let argv = command(redis).expect("redis has a command");
    assert_eq!(argv[0], "redis-server");
    let flag = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .map(|i| argv[i + 1].as_str())
    };
    assert_eq!(flag("--appendonly"), Some("yes"), "{argv:?}");
    assert_eq!(
        flag("--appendfsync"),
        Some("always"),
        "appendfsync always: nothing accepted is lost (docs/operations.md)"
    );
    assert!(
        !redis["healthcheck"]["test"].is_badvalue(),
        "redis has a health check"
    );
    let data = redis["volumes"]
        .as_vec()
        .expect("redis keeps /data in a volume")
        .iter()
        .map(scalar)
        .collect::<Vec<_>>();
    assert!(data.iter().any(|v| v.ends_with(":/data")), "{data:?}");
}

/// Packages the runtime stage of the Dockerfile installs with apt-get.
fn runtime_packages() -> BTreeSet<String> {
    let dockerfile = repo_file("Dockerfile").replace("\\\n", " ");
    let runtime = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    let mut out = BTreeSet::new();
    for line in runtime
        .lines()
        .filter(|l| l.trim_start().starts_with("RUN "))
    {
        for part in line.split("&&") {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "install")
                && words[..i].contains(&"apt-get")
            {
                out.extend(
                    words[i + 1..]
                        .iter()
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                );
            }
        }
    }
    out
}

#[test]
fn the_image_has_graphq_on_the_path_and_a_small_build_context() {
    let dockerfile = repo_file("Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.starts_with("debian:bookworm-slim"),
        "runtime stage: {}",
        runtime.lines().next().unwrap()
    );
    assert!(
        runtime.contains("/usr/local/bin/graphq"),
        "compose runs `graphq`: the binary must be on the PATH"
    );
    assert!(runtime_packages().contains("ca-certificates"));
    let ignore = repo_file(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "target/ (gigabytes of build output) stays out of the build context"
    );
}
