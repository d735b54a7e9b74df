//! Settings: `config/default.toml` (compiled in), then the `--config` file,
//! then `GRAPHQ_*` environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::gateway::GatewaySettings;
use crate::graph::GraphSettings;
use crate::queue::QueueOptions;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Redis to connect to.
    pub redis_url: String,
    /// Redis Cluster seed nodes, comma-separated; when set, graphq runs in
    /// cluster mode and `redis_url` is not used.
    #[serde(default)]
    pub redis_cluster: Option<String>,
    /// Cluster mode: replicas an acknowledged write waits for (0: none).
    pub redis_wait_replicas: u32,
    /// Cluster mode: how long that wait may take, ms.
    pub redis_wait_timeout_ms: u64,
    /// Leading segment of every key.
    pub prefix: String,
    /// HTTP/WebSocket listen address.
    pub bind: String,
    /// Secret that signs access tokens (GRAPHQ_AUTH_SECRET). Never in a file
    /// that is committed; `graphq dev` makes one up when it is missing.
    #[serde(default)]
    pub auth_secret: Option<String>,
    /// Options of each queue, by name.
    pub queues: BTreeMap<String, QueueOptions>,
    /// Graph store limits, retention and conflict strategies.
    #[serde(default)]
    pub graph: GraphSettings,
    /// WebSocket and HTTP limits and timeouts.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// `human` or `json` (GRAPHQ_LOG_FORMAT); the level comes from RUST_LOG.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where `graphq worker` serves `/metrics`, `/healthz` and `/readyz`
    /// (GRAPHQ_METRICS_BIND, `--metrics-bind`); absent: not served. The
    /// gateway serves them on its own listener.
    #[serde(default)]
    pub metrics_bind: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, for a terminal.
    #[default]
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Values from command-line flags; `None` leaves the lower layers in charge.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// One Redis, or the cluster named by `redis_cluster` when it is set.
    pub fn redis_target(&self) -> crate::db::RedisTarget {
        let nodes: Vec<String> = self
            .redis_cluster
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if nodes.is_empty() {
            crate::db::RedisTarget::Single(self.redis_url.clone())
        } else {
            crate::db::RedisTarget::Cluster(nodes)
        }
    }

    /// What a cluster write acknowledged to someone waits for.
    pub fn redis_wait(&self) -> crate::db::Wait {
        crate::db::Wait {
            replicas: self.redis_wait_replicas,
            timeout_ms: self.redis_wait_timeout_ms,
        }
    }

    /// Loads every layer. `env` is the environment to read (the process
    /// environment in production; a fixed list in tests).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            fig = fig.merge(Toml::file(path));
        }
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("GRAPHQ_")?.to_string(), v)))
            .collect();
        // The environment is passed in rather than read here, so tests stay hermetic.
        fig = fig.merge(env_layer(&vars));
        fig = fig.merge(Serialized::defaults(flags));
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (name, q) in &config.queues {
            q.validate()
                .map_err(|e| ConfigError::Invalid(format!("queues.{name}: {e}")))?;
        }
        Ok(config)
    }

    /// Loads with the process environment.
    pub fn from_process(file: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
        Self::load(file, std::env::vars(), flags)
    }
}

/// `GRAPHQ_A__B=v` becomes `{a: {b: v}}`, with `v` read as a TOML value when it
/// parses as one (numbers, booleans) and as a string otherwise.
fn env_layer(vars: &[(String, String)]) -> Serialized<toml::Table> {
    let mut root = toml::Table::new();
    for (name, raw) in vars {
        let path: Vec<String> = name.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value = parse_env_value(raw);
        let mut table = &mut root;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                table.insert(seg.clone(), value.clone());
            } else {
                let entry = table
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                table = entry.as_table_mut().expect("just made a table");
            }
        }
    }
    Serialized::defaults(root)
}

fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_describe_the_three_queues() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.prefix, "graphq");
        assert_eq!(c.queues["commands"].partitions, 16);
        assert_eq!(c.queues["sync"].kind, crate::queue::QueueKind::Priority);
        assert_eq!(c.queues["analytics"].retry.attempts, 3);
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("graphq.toml");
        std::fs::write(
            &file,
            "prefix = \"from-file\"\nbind = \"0.0.0.0:1\"\n[queues.commands]\npartitions = 4\n",
        )
        .unwrap();
        let vars = env(&[
            ("GRAPHQ_PREFIX", "from-env"),
            ("GRAPHQ_QUEUES__COMMANDS__BATCH_SIZE", "32"),
            ("OTHER_PREFIX", "ignored"),
        ]);
        let flags = Overrides {
            prefix: Some("from-flag".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&file), vars.clone(), &flags).unwrap();
        assert_eq!(c.prefix, "from-flag");
        assert_eq!(c.bind, "0.0.0.0:1");
        assert_eq!(c.queues["commands"].partitions, 4);
        assert_eq!(c.queues["commands"].batch_size, 32);
        // Keys the file did not mention keep their defaults.
        assert_eq!(c.queues["commands"].lease_ttl_ms, 5000);
        let c = Config::load(Some(&file), vars, &Overrides::default()).unwrap();
        assert_eq!(c.prefix, "from-env");
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let vars = env(&[("GRAPHQ_QUEUES__COMMANDS__PARTITIONS", "0")]);
        let err = Config::load(None, vars, &Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("queues.commands: partitions"),
            "{err}"
        );
        let vars = env(&[("GRAPHQ_QUEUES__COMMANDS__PARTITIONS", "many")]);
        assert!(Config::load(None, vars, &Overrides::default()).is_err());
        let missing = Config::load(
            Some(Path::new("/nonexistent.toml")),
            env(&[]),
            &Overrides::default(),
        );
        assert!(matches!(missing, Err(ConfigError::MissingFile(_))));
    }
}
