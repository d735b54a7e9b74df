//! The dead-letter streams of a queue: one per partition (so the move there is
//! one atomic script on one hash tag), read and replayed as one list.

use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::db::streams::parse_entries;
use crate::scripts::SCRIPTS;

use super::{Priority, Queue, QueueError};

/// One dead job with why it died.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Dead-letter entry id; with the partition it names the entry for show and retry.
    pub id: String,
    pub partition: u16,
    pub job_id: String,
    pub name: String,
    pub key: Option<String>,
    pub data: String,
    pub error: String,
    pub attempts_made: u32,
    pub failed_at: u64,
    /// Every field of the entry as stored, for inspection.
    pub fields: Vec<(String, String)>,
}

impl DeadLetter {
    fn from_entry(partition: u16, id: String, fields: Vec<(String, String)>) -> DeadLetter {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        DeadLetter {
            partition,
            job_id: get("id").unwrap_or_default(),
            name: get("name").unwrap_or_default(),
            key: get("key"),
            data: get("data").unwrap_or_default(),
            error: get("error").unwrap_or_default(),
            attempts_made: get("attemptsMade")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            failed_at: get("failedAt").and_then(|v| v.parse().ok()).unwrap_or(0),
            id,
            fields,
        }
    }

    /// The reference the CLI prints and accepts: `PARTITION/ENTRY_ID`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.partition, self.id)
    }
}

/// Dead-letter operations of one queue.
pub struct DeadLetters {
    queue: Queue,
}

impl DeadLetters {
    pub(crate) fn new(queue: Queue) -> Self {
        DeadLetters { queue }
    }

    fn key(&self, partition: u16) -> String {
        self.queue.keys().dlq(self.queue.name(), partition)
    }

    /// Number of dead jobs in all partitions.
    pub async fn count(&self) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        for p in self.queue.partitions() {
            pipe.xlen(self.key(p));
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.queue.redis().conn()).await?;
        Ok(lens.iter().sum())
    }

    /// Up to `limit` dead jobs, oldest first within each partition.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut pipe = redis::pipe();
        for p in self.queue.partitions() {
            pipe.cmd("XRANGE")
                .arg(self.key(p))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(limit);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.queue.redis().conn()).await?;
        let mut out: Vec<DeadLetter> = replies
            .iter()
            .zip(self.queue.partitions())
            .flat_map(|(raw, p)| {
                parse_entries(raw)
                    .into_iter()
                    .map(move |(id, f)| DeadLetter::from_entry(p, id, f))
            })
            .collect();
        out.sort_by_key(|d| d.failed_at);
        out.truncate(limit);
        Ok(out)
    }

    /// One dead job by `PARTITION/ENTRY_ID` or by job id.
    pub async fn show(&self, reference: &str) -> Result<Option<DeadLetter>, QueueError> {
        if let Some((partition, id)) = self.parse_reference(reference) {
            let raw: Value = redis::cmd("XRANGE")
                .arg(self.key(partition))
                .arg(id)
                .arg(id)
                .query_async(&mut self.queue.redis().conn())
                .await?;
            return Ok(parse_entries(&raw)
                .into_iter()
                .next()
                .map(|(id, f)| DeadLetter::from_entry(partition, id, f)));
        }
        Ok(self
            .list(usize::MAX >> 1)
            .await?
            .into_iter()
            .find(|d| d.job_id == reference))
    }

    fn parse_reference<'a>(&self, reference: &'a str) -> Option<(u16, &'a str)> {
        let (p, id) = reference.split_once('/')?;
        let p: u16 = p.parse().ok()?;
        (p < self.queue.options().partitions).then_some((p, id))
    }

    /// Puts one dead job back into its queue with a fresh attempt count.
    /// Returns the new stream entry id, or None when there is no such dead job.
    pub async fn retry(&self, reference: &str) -> Result<Option<String>, QueueError> {
        let Some(dead) = self.show(reference).await? else {
            return Ok(None);
        };
        let q = self.queue.name();
        let keys = self.queue.keys();
        let p = dead.partition;
        let mut conn = self.queue.redis().conn();
        let entry: Option<String> = SCRIPTS
            .dlq_retry
            .key(keys.dlq(q, p))
            .key(keys.stream(q, p, Priority::High.lane()))
            .key(keys.stream(q, p, Priority::Normal.lane()))
            .key(keys.stream(q, p, Priority::Low.lane()))
            .key(keys.events(q, p))
            .arg(&dead.id)
            .arg(self.queue.options().events_max_len)
            .invoke_async(&mut conn)
            .await?;
        Ok(entry)
    }

    /// Replays every job that is dead when the call starts; returns how many
    /// went back, calling `progress` with that count after each one. Each
    /// partition is walked only up to the entry that was its last at the
    /// start: a job that dies again meanwhile stays dead rather than coming
    /// round again for as long as a worker keeps failing it.
    pub async fn retry_all(&self, mut progress: impl FnMut(usize)) -> Result<usize, QueueError> {
        use redis::streams::StreamRangeReply;
        let mut conn = self.queue.redis().conn();
        let mut requeued = 0;
        for p in self.queue.partitions() {
            let key = self.key(p);
            let last: StreamRangeReply = conn.xrevrange_count(&key, "+", "-", 1).await?;
            let Some(last) = last.ids.into_iter().next().map(|e| e.id) else {
                continue;
            };
            let mut start = "-".to_string();
            loop {
                let batch: StreamRangeReply = conn.xrange_count(&key, &start, &last, 500).await?;
                let Some(end) = batch.ids.last().map(|e| format!("({}", e.id)) else {
                    break;
                };
                for entry in &batch.ids {
                    if self.retry(&format!("{p}/{}", entry.id)).await?.is_some() {
                        requeued += 1;
                        progress(requeued);
                    }
                }
                start = end;
            }
        }
        Ok(requeued)
    }

    /// Deletes every dead job; returns how many there were.
    pub async fn purge(&self) -> Result<u64, QueueError> {
        let n = self.count().await?;
        let mut conn = self.queue.redis().conn();
        for p in self.queue.partitions() {
            // UNLINK: a long stream is freed in the background, not in the
            // command that every other client waits behind.
            let _: () = conn.unlink(self.key(p)).await?;
        }
        Ok(n)
    }
}
