//! Every Redis key graphq writes is named here, and only here.
//!
//! Keys that a Lua script touches together share one hash tag so the script is
//! valid on Redis Cluster: queue-partition keys use `{q:QUEUE:PARTITION}`,
//! queue-wide keys `{q:QUEUE}`, per-key rate limiters `{rl:QUEUE:KEY}` and graph
//! keys `{g:GRAPH_ID}`. docs/operations.md lists them with redis-cli commands.

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

    /// Stream holding the jobs of one priority lane (`high`, `normal`, `low`:
    /// the queue's `Priority::lane`) of a partition.
    pub fn stream(&self, queue: &str, partition: u16, lane: &str) -> String {
        self.part(queue, partition, &format!("stream:{lane}"))
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

    /// A key of one graph; every graph key shares the tag `{g:GRAPH_ID}`.
    pub fn graph(&self, graph_id: &str, suffix: &str) -> String {
        format!("{}:{{g:{graph_id}}}:{suffix}", self.prefix)
    }

    /// A SCAN pattern for the keys of one graph whose suffix matches `glob`
    /// (the prefix and the graph id are matched literally).
    pub fn graph_scan_pattern(&self, graph_id: &str, glob: &str) -> String {
        let mut out = String::new();
        for c in self.graph(graph_id, "").chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out + glob
    }

    /// Graph meta hash: epoch, version, checksum, viewport.
    pub fn graph_meta(&self, g: &str) -> String {
        self.graph(g, "meta")
    }

    pub fn graph_nodes(&self, g: &str) -> String {
        self.graph(g, "nodes")
    }

    pub fn graph_edges(&self, g: &str) -> String {
        self.graph(g, "edges")
    }

    /// Node id → ids of the edges touching it.
    pub fn graph_adjacency(&self, g: &str) -> String {
        self.graph(g, "adj")
    }

    /// Per-field versions for conflict detection.
    pub fn graph_field_versions(&self, g: &str) -> String {
        self.graph(g, "fv")
    }

    /// Change log stream, entry id `<version>-0`.
    pub fn graph_log(&self, g: &str) -> String {
        self.graph(g, "log")
    }

    /// Conflict log stream: conflict decisions and resolutions (docs/graph.md).
    pub fn graph_conflicts(&self, g: &str) -> String {
        self.graph(g, "conflicts")
    }

    /// Outcome of one operation on the graph (dedupe and status).
    pub fn graph_op(&self, g: &str, operation_id: &str) -> String {
        self.graph(g, &format!("op:{operation_id}"))
    }

    pub fn graph_undo(&self, g: &str, user: &str) -> String {
        self.graph(g, &format!("undo:{user}"))
    }

    pub fn graph_redo(&self, g: &str, user: &str) -> String {
        self.graph(g, &format!("redo:{user}"))
    }

    /// Snapshot of the whole graph at some version (base for log replay).
    pub fn graph_snapshot(&self, g: &str) -> String {
        self.graph(g, "snapshot")
    }

    /// Nodes by `data.status` (`CALCULATE_PROGRESS`).
    pub fn graph_progress(&self, g: &str) -> String {
        self.graph(g, "progress")
    }

    /// Size and activity (`UPDATE_METRICS`).
    pub fn graph_metrics(&self, g: &str) -> String {
        self.graph(g, "metrics")
    }

    /// Pub/sub channel of the graph's outcomes.
    pub fn graph_channel(&self, g: &str) -> String {
        self.graph(g, "events")
    }

    /// Pub/sub channel of one user: reverts and conflicts of its commands.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}:events", self.prefix)
    }

    /// Pub/sub channel of one user's applied commands without conflicts,
    /// for the user's own streams (`GET /api/v2/events`) only: sockets hear
    /// those from the graph's channel, so they do not subscribe to it.
    pub fn user_outcomes_channel(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}:outcomes", self.prefix)
    }

    /// Open WebSockets of one user on every gateway: socket id → when its
    /// entry expires (ms), refreshed while the socket is open.
    pub fn user_sockets(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}:sockets", self.prefix)
    }

    /// Pub/sub channel of a graph's presence (cursors, selections).
    pub fn presence_channel(&self, g: &str) -> String {
        self.graph(g, "presence")
    }

    /// Operation index: graph id and pre-outcome status of an operation id.
    pub fn operation(&self, operation_id: &str) -> String {
        format!("{}:{{op:{operation_id}}}", self.prefix)
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
            k.stream("commands", 3, "normal"),
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
