//! What a job is: the fields a producer sets, how they sit in a stream entry,
//! and what a processor may answer.

use super::limiter::RateLimit;
use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::db::streams::value_string;

/// Priority level of a job; on competing-consumer queues higher levels drain first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Levels in the order workers drain them.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The stream lane of this level in a partition's keys.
    pub fn lane(self) -> &'static str {
        self.as_str()
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// A job as a producer describes it.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    /// Kind of work, e.g. `UPDATE_NODE` or `CALCULATE_PROGRESS`.
    pub name: String,
    /// Opaque payload, usually JSON.
    pub data: String,
    /// Caller-chosen id; a second add with the same id inside the dedupe window
    /// is answered with the first add's result. Generated when absent.
    pub id: Option<String>,
    /// Ordering key (the graph id): on ordered queues it picks the partition.
    pub key: Option<String>,
    /// Key of the per-key rate limit (defaults to `key`).
    pub rate_key: Option<String>,
    pub priority: Priority,
    /// Run no earlier than this from now.
    pub delay: Duration,
}

impl NewJob {
    pub fn new(name: impl Into<String>, data: impl Into<String>) -> Self {
        NewJob {
            name: name.into(),
            data: data.into(),
            ..NewJob::default()
        }
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn rate_key(mut self, key: impl Into<String>) -> Self {
        self.rate_key = Some(key.into());
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A job handed to a processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub key: Option<String>,
    pub rate_key: Option<String>,
    pub data: String,
    pub priority: Priority,
    /// Attempts that already failed or were cut short by a crash.
    pub attempts_made: u32,
    /// When the job was first added, ms since the Unix epoch.
    pub enqueued_at: u64,
    /// Stream entry id of this delivery.
    pub entry_id: String,
    /// Partition the job lives in.
    pub partition: u16,
}

impl Job {
    /// Parses the payload as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// The stream-entry fields of this job, with `attempts` as given.
    pub(crate) fn fields(&self, attempts: u32) -> Vec<(&'static str, String)> {
        entry_fields(
            &self.id,
            &self.name,
            &self.data,
            self.priority,
            attempts,
            self.enqueued_at,
            self.key.as_deref(),
            self.rate_key.as_deref(),
        )
    }

    /// Decodes a stream entry. Entries written by hand (redis-cli) may lack
    /// fields; the error names the first missing one.
    pub(crate) fn from_entry(
        entry_id: &str,
        partition: u16,
        map: &HashMap<String, Value>,
    ) -> Result<Job, String> {
        let get = |name: &str| map.get(name).and_then(value_string);
        let need = |name: &str| get(name).ok_or_else(|| format!("entry has no `{name}` field"));
        Ok(Job {
            id: need("id")?,
            name: get("name").unwrap_or_default(),
            key: get("key"),
            rate_key: get("rk"),
            data: get("data").unwrap_or_default(),
            priority: get("priority")
                .and_then(|p| Priority::parse(&p))
                .unwrap_or_default(),
            attempts_made: get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
            enqueued_at: get("ts").and_then(|a| a.parse().ok()).unwrap_or(0),
            entry_id: entry_id.to_string(),
            partition,
        })
    }
}

/// Fields of a new job as they go into a stream entry.
pub(crate) fn new_job_fields(job: &NewJob, id: &str, now_ms: u64) -> Vec<(&'static str, String)> {
    entry_fields(
        id,
        &job.name,
        &job.data,
        job.priority,
        0,
        now_ms,
        job.key.as_deref(),
        job.rate_key.as_deref(),
    )
}

/// The one layout of a job in a stream entry; [`Job::from_entry`] reads it back.
#[allow(clippy::too_many_arguments)]
fn entry_fields(
    id: &str,
    name: &str,
    data: &str,
    priority: Priority,
    attempts: u32,
    ts: u64,
    key: Option<&str>,
    rate_key: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", id.to_string()),
        ("name", name.to_string()),
        ("data", data.to_string()),
        ("priority", priority.as_str().to_string()),
        ("attempts", attempts.to_string()),
        ("ts", ts.to_string()),
    ];
    if let Some(k) = key {
        f.push(("key", k.to_string()));
    }
    if let Some(k) = rate_key {
        f.push(("rk", k.to_string()));
    }
    f
}

/// Why a processor did not finish a job. Business outcomes (a rejected graph
/// command) are not errors: the processor records them and returns `Ok`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Worth trying again after a backoff.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help; the job goes to the dead-letter stream at once.
    #[error("{0}")]
    Permanent(String),
    /// The store could not be reached (connection lost, a cluster failing
    /// over): not the job's fault. An ordered queue tries again after a
    /// backoff without spending an attempt; a priority queue counts it as a
    /// retry.
    #[error("{0}")]
    Unavailable(String),
}

impl JobError {
    /// `Unavailable` when Redis could not be reached (I/O, timeout, a cluster
    /// redirect or failover, a master refusing writes without its replicas),
    /// `Retry` for any other Redis error.
    pub fn from_redis(e: &redis::RedisError) -> JobError {
        let message = format!("redis: {e}");
        if crate::db::is_unreachable(e)
            || e.is_cluster_error()
            || e.code() == Some("NOREPLICAS")
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            )
        {
            JobError::Unavailable(message)
        } else {
            JobError::Retry(message)
        }
    }
}

/// What adding a job did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Queued; runnable now.
    Added { job_id: String, entry_id: String },
    /// Queued in the delayed set; promoted into the stream when due.
    Delayed { job_id: String },
    /// A job with this id was added within the dedupe window; nothing changed.
    /// `first` is what that add returned (entry id or job id).
    Duplicate { job_id: String, first: String },
}

/// Checks made in the same atomic call as an add ([`Queue::add_guarded`]):
/// a claim of the job for an owner `(record key, owner, TTL s)`, refused when
/// another owner holds it; one permit of a rate limiter `(state key, limit)`.
///
/// [`Queue::add_guarded`]: super::Queue::add_guarded
#[derive(Clone, Copy, Debug, Default)]
pub struct AddGuard<'a> {
    pub claim: Option<(&'a str, &'a str, u64)>,
    pub limit: Option<(&'a str, &'a RateLimit)>,
}

/// What a guarded add did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardedAdd {
    /// Both guards let it through; the add's own outcome.
    Added(AddOutcome),
    /// The claim belongs to `owner`: nothing changed.
    Taken { owner: String },
    /// No permit: nothing changed; ask again after `wait`.
    Limited { wait: Duration },
}

impl AddOutcome {
    pub fn job_id(&self) -> &str {
        match self {
            AddOutcome::Added { job_id, .. }
            | AddOutcome::Delayed { job_id }
            | AddOutcome::Duplicate { job_id, .. } => job_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobError;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn redis_away_is_not_the_jobs_fault_but_a_script_error_is() {
        let away = [
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            RedisError::from((ErrorKind::Server(ServerErrorKind::TryAgain), "slot moving")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::MasterDown), "link down")),
        ];
        for e in &away {
            assert!(
                matches!(JobError::from_redis(e), JobError::Unavailable(_)),
                "{e}"
            );
        }
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ));
        assert!(matches!(JobError::from_redis(&script), JobError::Retry(_)));
    }
}
