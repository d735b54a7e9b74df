//! Every Redis key graphq writes is named here, and only here.
//!
//! Keys that a Lua script touches together share one hash tag so the script is
//! valid on Redis Cluster: queue-partition keys use `{q:QUEUE:PARTITION}`,
//! queue-wide keys `{q:QUEUE}`, per-key rate limiters `{rl:QUEUE:KEY}` and graph
//! keys `{g:GRAPH_ID}`. docs/operations.md lists them with redis-cli commands.

use crate::queue::Priority;

/// Builds key names under one configurable prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Leading segment of every key, so several deployments (or tests) can share
    /// one Redis without seeing each other.
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key scoped to one queue, outside any partition.
    fn queue(&self, queue: &str, suffix: &str) -> String {
        format!("{}:{{q:{queue}}}:{suffix}", self.prefix)
    }

    /// A key scoped to one partition of a queue.
    fn part(&self, queue: &str, partition: u16, suffix: &str) -> String {
        format!("{}:{{q:{queue}:{partition}}}:{suffix}", self.prefix)
    }

    /// Stream holding the jobs of one priority level of a partition.
    pub fn stream(&self, queue: &str, partition: u16, priority: Priority) -> String {
        self.part(queue, partition, &format!("stream:{}", priority.as_str()))
    }

    /// Lease naming the worker that owns an ordered partition.
    pub fn lease(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "lease")
    }

    /// Sorted set of delayed job ids scored by due time (ms).
    pub fn delayed(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "delayed")
    }

    /// Bodies (JSON) of delayed jobs, by job id.
    pub fn delayed_jobs(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "delayed:jobs")
    }

    /// Marker of a job id seen within the dedupe window.
    pub fn dedupe(&self, queue: &str, partition: u16, job_id: &str) -> String {
        self.part(queue, partition, &format!("dedupe:{job_id}"))
    }

    /// Failed or stalled attempts of entries still in the stream, by entry id.
    pub fn attempts(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "attempts")
    }

    /// Lifetime counters (processed, failed, retried, ...).
    pub fn counters(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "counters")
    }

    /// Capped stream of job lifecycle events.
    pub fn events(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "events")
    }

    /// Dead-letter stream.
    pub fn dlq(&self, queue: &str, partition: u16) -> String {
        self.part(queue, partition, "dlq")
    }

    /// Live workers of a queue, scored by when their registration expires.
    pub fn workers(&self, queue: &str) -> String {
        self.queue(queue, "workers")
    }

    /// Present while the queue is paused.
    pub fn paused(&self, queue: &str) -> String {
        self.queue(queue, "paused")
    }

    /// Queue-wide rate limiter state.
    pub fn limiter(&self, queue: &str) -> String {
        self.queue(queue, "limiter")
    }

    /// Rate limiter state of one key (graph, user) of a queue.
    pub fn key_limiter(&self, queue: &str, key: &str) -> String {
        format!("{}:{{rl:{queue}:{key}}}", self.prefix)
    }

    /// Lease naming the scheduler leader that enqueues repeatable jobs.
    pub fn scheduler_leader(&self, queue: &str) -> String {
        self.queue(queue, "scheduler")
    }

    /// Repeatable job definitions, by name.
    pub fn repeatables(&self, queue: &str) -> String {
        self.queue(queue, "repeat")
    }

    /// Last period slot each repeatable job was enqueued for, by name.
    pub fn repeat_last(&self, queue: &str) -> String {
        self.queue(queue, "repeat:last")
    }

    /// Hash tag shared by every key of one graph.
    pub fn graph(&self, graph_id: &str, suffix: &str) -> String {
        format!("{}:{{g:{graph_id}}}:{suffix}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str) -> &str {
        let start = key.find('{').expect("key has a hash tag");
        let end = key[start..].find('}').expect("tag is closed") + start;
        &key[start + 1..end]
    }

    #[test]
    fn partition_keys_share_one_tag() {
        let k = Keys::new("graphq");
        let keys = [
            k.stream("commands", 3, Priority::Normal),
            k.lease("commands", 3),
            k.delayed("commands", 3),
            k.delayed_jobs("commands", 3),
            k.dedupe("commands", 3, "op{x}"),
            k.attempts("commands", 3),
            k.counters("commands", 3),
            k.events("commands", 3),
            k.dlq("commands", 3),
        ];
        for key in &keys {
            assert_eq!(tag(key), "q:commands:3", "{key}");
            assert!(key.starts_with("graphq:"));
        }
    }

    #[test]
    fn graph_keys_use_graph_tag() {
        let k = Keys::new("p");
        assert_eq!(k.graph("g1", "meta"), "p:{g:g1}:meta");
    }
}
