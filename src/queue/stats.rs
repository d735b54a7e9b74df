//! What `graphq queues` shows, read straight from Redis.

use std::collections::HashMap;

use redis::Value;
use serde::Serialize;

use crate::db::now_ms;
use crate::db::streams::{parse_entries, value_string};

use super::{GROUP, Priority, Queue, QueueError, QueueKind};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PartitionStats {
    pub partition: u16,
    /// Entries in the partition's streams (waiting or in flight).
    pub length: u64,
    /// Entries delivered to a worker and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to any worker.
    pub lag: u64,
    pub delayed: u64,
    pub dead_lettered_now: u64,
    /// Worker holding the partition's lease (ordered queues).
    pub owner: Option<String>,
    /// Age of the oldest entry still in the streams, ms.
    pub oldest_age_ms: Option<u64>,
    /// Lifetime counters: processed, failed, retried, dead_lettered, stalled, rate_limited.
    pub counters: HashMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub kind: String,
    pub paused: bool,
    pub workers: Vec<String>,
    pub partitions: Vec<PartitionStats>,
}

impl QueueStats {
    pub fn total(&self, f: impl Fn(&PartitionStats) -> u64) -> u64 {
        self.partitions.iter().map(f).sum()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.total(|p| p.counters.get(name).copied().unwrap_or(0))
    }
}

pub(crate) async fn read(queue: &Queue) -> Result<QueueStats, QueueError> {
    let q = queue.name();
    let k = queue.keys();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.exists(k.paused(q));
    pipe.zrangebyscore(k.workers(q), now_ms(), "+inf");
    for p in queue.partitions() {
        for prio in Priority::ALL {
            let s = k.stream(q, p, prio.lane());
            pipe.xlen(&s);
            pipe.cmd("XINFO").arg("GROUPS").arg(&s);
            pipe.cmd("XRANGE")
                .arg(&s)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        pipe.zcard(k.delayed(q, p));
        pipe.xlen(k.dlq(q, p));
        pipe.get(k.lease(q, p));
        pipe.hgetall(k.counters(q, p));
    }
    let replies: Vec<redis::RedisResult<Value>> =
        pipe.query_async(&mut queue.redis().conn()).await?;
    let mut it = replies.into_iter().map(|r| r.unwrap_or(Value::Nil));
    let mut next = || it.next().unwrap_or(Value::Nil);
    let paused = matches!(next(), Value::Int(1));
    let workers = strings(&next());
    let now = now_ms();
    let mut partitions = Vec::new();
    for p in queue.partitions() {
        let mut ps = PartitionStats {
            partition: p,
            ..Default::default()
        };
        for _ in Priority::ALL {
            let length = int(&next());
            let (pending, lag) = group_info(&next());
            ps.length += length;
            ps.pending += pending;
            // No lag from Redis: the group does not exist yet (nothing was
            // ever delivered) or Redis cannot count it after deletions. Acked
            // entries are deleted here, so what is not pending is waiting.
            ps.lag += lag.unwrap_or_else(|| length.saturating_sub(pending));
            if let Some(first) = parse_entries(&next()).first() {
                let ms = first
                    .0
                    .split('-')
                    .next()
                    .and_then(|m| m.parse::<u64>().ok());
                if let Some(ms) = ms {
                    let age = now.saturating_sub(ms);
                    ps.oldest_age_ms = Some(ps.oldest_age_ms.map_or(age, |a| a.max(age)));
                }
            }
        }
        ps.delayed = int(&next());
        ps.dead_lettered_now = int(&next());
        ps.owner = value_string(&next());
        let counters = strings(&next());
        ps.counters = counters
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.parse().ok()?)))
            .collect();
        partitions.push(ps);
    }
    Ok(QueueStats {
        queue: q.to_string(),
        kind: match queue.options().kind {
            QueueKind::Ordered => "ordered",
            QueueKind::Priority => "priority",
        }
        .into(),
        paused,
        workers,
        partitions,
    })
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(i) => (*i).max(0) as u64,
        other => value_string(other)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(value_string).collect(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(k, v)| [value_string(k), value_string(v)])
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Pending and lag of our group from an `XINFO GROUPS` reply.
/// Pending count and lag of graphq's consumer group on one stream; lag is
/// `None` when the group is missing or Redis reports it as unknown.
fn group_info(v: &Value) -> (u64, Option<u64>) {
    let Value::Array(groups) = v else {
        return (0, None);
    };
    for g in groups {
        let flat = strings_and_ints(g);
        let get = |name: &str| {
            flat.iter()
                .position(|(k, _)| k == name)
                .map(|i| flat[i].1.clone())
        };
        if get("name").as_deref() == Some(GROUP) {
            let num = |name: &str| get(name).and_then(|s| s.parse().ok());
            return (num("pending").unwrap_or(0), num("lag"));
        }
    }
    (0, None)
}

fn strings_and_ints(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| {
                Some((
                    value_string(kv.first()?)?,
                    value_string(kv.get(1)?).unwrap_or_default(),
                ))
            })
            .collect(),
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((value_string(k)?, value_string(v).unwrap_or_default())))
            .collect(),
        _ => Vec::new(),
    }
}
