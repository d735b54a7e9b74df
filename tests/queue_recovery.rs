//! What a Redis failover or a graceful stop leaves in an ordered partition,
//! set up by hand against a real redis-server, and the engine recovering
//! from it (docs/reliability.md, "What a failover, or a stop, leaves in an
//! ordered partition"): entries pending with a consumer that will never
//! settle them, a group that is gone, and entries a stopping worker read
//! but never started.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::queue::{Running, ordered, processed, start};
use common::{TestEnv, eventually};
use graphq::queue::{FnProcessor, GROUP, Job, NewJob, Priority, Queue, QueueOptions};
use redis::AsyncCommands;

/// A worker on `q` that records the ids of the jobs it runs, in order.
fn recording(q: &Queue) -> (Running, Arc<Mutex<Vec<String>>>) {
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = ran.clone();
    let w = start(
        q,
        FnProcessor(move |job: Job| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(job.id);
                Ok(())
            }
        }),
    );
    (w, ran)
}

/// The one partition's stream of a one-partition ordered queue.
fn stream(env: &TestEnv, q: &Queue) -> String {
    env.keys.stream(q.name(), 0, Priority::Normal.lane())
}

/// Pauses the queue and waits until the worker's read in progress (if any)
/// has ended, so that entries added now stay where the test puts them.
async fn pause_reads(q: &Queue) {
    q.pause().await.unwrap();
    // block_ms (200) + pause_poll_ms (50) of `fast`, with room to spare.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
}

/// Adds jobs `ids` and delivers them to `consumer` as a read of that
/// consumer would: they are pending with it, and the group's last
/// delivered id is past them. Returns their entry ids.
async fn deliver(env: &TestEnv, q: &Queue, ids: &[&str], consumer: &str) -> Vec<String> {
    for id in ids {
        q.add(NewJob::new("step", "").key("g").id(*id))
            .await
            .unwrap();
    }
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(stream(env, q))
        .arg(">")
        .query_async(&mut env.conn())
        .await
        .unwrap();
    let entries: Vec<String> = reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|e| e.id)
        .collect();
    assert_eq!(entries.len(), ids.len(), "the test's read got the jobs");
    entries
}

async fn pending_and_lag(q: &Queue) -> (u64, u64) {
    let s = q.stats().await.unwrap();
    (s.total(|p| p.pending), s.total(|p| p.lag))
}

/// Nothing pending, nothing waiting, nothing left in the stream.
async fn drained(q: &Queue) -> bool {
    let s = q.stats().await.unwrap();
    s.total(|p| p.pending + p.lag + p.length) == 0
}

/// A failover can lose the acknowledgement of entries the owner had settled
/// (they are pending again with the owner's own consumer) and the reply of a
/// read that delivered entries (pending with the owner, never seen by it). A
/// `>` read never returns them: before the sweep, the partition stayed
/// undrained for good, or the owner's next acknowledgement trimmed them away
/// unrun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_pending_with_the_owner_itself_are_taken_over_and_run() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let (w, ran) = recording(&q);
    q.add(NewJob::new("step", "").key("g").id("a"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a runs", || async {
        processed(&w) == 1
    })
    .await;

    pause_reads(&q).await;
    deliver(&env, &q, &["lost-reply", "lost-ack"], &w.id).await;
    assert_eq!(pending_and_lag(&q).await, (2, 0));
    q.resume().await.unwrap();
    // Newer work: its acknowledgement must not trim the stranded entries away.
    q.add(NewJob::new("step", "").key("g").id("d"))
        .await
        .unwrap();

    eventually(Duration::from_secs(15), "the partition drains", || async {
        drained(&q).await
    })
    .await;
    // At least once: the settled one runs again (processors are idempotent).
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(
        ran,
        ["a", "d", "lost-ack", "lost-reply"],
        "each job ran once"
    );
    let stats = q.stats().await.unwrap();
    assert!(
        stats.counter("stalled") >= 1,
        "taken over, as after a crash"
    );
    w.shutdown().await;
}

/// A worker that lost its lease during a failover can have a read executed
/// for it after the new owner started (its Redis client retries the read
/// once the replica is promoted): the entries are pending with a consumer
/// that no longer reads the partition, and the new owner's start-up
/// takeover came too early to see them. This is what
/// `cluster::a_master_killed_under_load_fails_over_and_nothing_acknowledged_is_lost`
/// ran into (71 entries pending with the other, live worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_former_owner_read_after_losing_the_lease_are_taken_over() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let (w, ran) = recording(&q);
    q.add(NewJob::new("step", "").key("g").id("a"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a runs", || async {
        processed(&w) == 1
    })
    .await;

    pause_reads(&q).await;
    deliver(&env, &q, &["b", "c"], "former-owner").await;
    // Newer work, read in one batch: acknowledging it must neither trim the
    // older pending entries away nor leave settled ones in the stream.
    let newer = ["d1", "d2", "d3"].map(|id| NewJob::new("step", "").key("g").id(id));
    q.add_bulk(newer.to_vec()).await.unwrap();
    q.resume().await.unwrap();

    eventually(Duration::from_secs(15), "the partition drains", || async {
        drained(&q).await
    })
    .await;
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c", "d1", "d2", "d3"], "each job ran once");
    w.shutdown().await;
}

/// A group created on the old master after its last write that reached the
/// replica is missing on the promoted one (NOGROUP): the owner creates it
/// again and runs what is in the stream. (This recovered before the sweep
/// too; it is here so that the whole list of what a failover leaves is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_missing_after_a_failover_is_created_again_and_nothing_is_skipped() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let (w, ran) = recording(&q);
    q.add(NewJob::new("step", "").key("g").id("a"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a runs", || async {
        processed(&w) == 1
    })
    .await;
    let _: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream(&env, &q))
        .arg(GROUP)
        .query_async(&mut env.conn())
        .await
        .unwrap();
    q.add(NewJob::new("step", "").key("g").id("b"))
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "b runs", || async {
        processed(&w) == 2
    })
    .await;
    assert_eq!(*ran.lock().unwrap(), ["a", "b"]);
    assert!(drained(&q).await);
    w.shutdown().await;
}

/// A stopping worker can hold entries it never started: what its last read
/// brought (delivered: pending with it), the rest of a batch behind a rate
/// limit or a retry. They go back to the stream with the lease, nothing
/// stays pending, and the next owner reads them in order as new work,
/// without a takeover or a spent attempt. Before, they stayed pending until
/// the next owner took them over (the `left: 12` / `left: 4` of
/// `queue_processes::sigterm_drains_the_worker_and_hands_its_partitions_back`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_back_entries_it_read_but_never_started() {
    let env = TestEnv::start().await;
    let q = env.queue("commands", ordered(1));
    let (w, _) = recording(&q);
    q.add(NewJob::new("step", "").key("g").id("a"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a runs", || async {
        processed(&w) == 1
    })
    .await;

    pause_reads(&q).await;
    // What a read answered after the stop delivered.
    deliver(&env, &q, &["b", "c"], &w.id).await;
    w.shutdown().await;
    assert_eq!(
        pending_and_lag(&q).await,
        (0, 2),
        "handed back: waiting, not pending"
    );
    let lease: Option<String> = env.conn().get(env.keys.lease(q.name(), 0)).await.unwrap();
    assert_eq!(lease, None, "and the lease with them");

    q.resume().await.unwrap();
    let (next, ran) = recording(&q);
    eventually(Duration::from_secs(10), "b and c run", || async {
        processed(&next) == 2
    })
    .await;
    assert_eq!(*ran.lock().unwrap(), ["b", "c"], "in order");
    let stats = q.stats().await.unwrap();
    assert_eq!(
        stats.counter("stalled"),
        0,
        "read as new work, not taken over"
    );
    assert_eq!(stats.total(|p| p.pending + p.lag + p.length), 0);
    let attempts: std::collections::HashMap<String, String> = env
        .conn()
        .hgetall(env.keys.attempts(q.name(), 0))
        .await
        .unwrap();
    assert!(attempts.is_empty(), "no attempt spent: {attempts:?}");
    next.shutdown().await;
}

/// The race behind `left: 12` itself: a stop while the partition's read is
/// blocked in Redis, and a job added in that instant. The read is served
/// with the job whether or not the worker still waits for it; a worker that
/// dropped the read (the old code) left the job pending with itself. Now the
/// stop waits for the read (at most `block_ms`) and hands the job back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_its_read_and_hands_back_what_the_read_brought() {
    let env = TestEnv::start().await;
    let opts = QueueOptions {
        block_ms: 2_000,
        ..ordered(1)
    };
    let q = env.queue("commands", opts);
    let (w, ran) = recording(&q);
    eventually(
        Duration::from_secs(10),
        "the worker holds the lease",
        || async {
            let owner: Option<String> = env.conn().get(env.keys.lease(q.name(), 0)).await.unwrap();
            owner.as_deref() == Some(w.id.as_str())
        },
    )
    .await;
    // Long enough for the partition task to be blocked in its read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.stop.cancel();
    q.add(NewJob::new("step", "").key("g").id("late"))
        .await
        .unwrap();
    w.shutdown().await;
    assert!(
        ran.lock().unwrap().is_empty(),
        "nothing runs after the stop"
    );
    assert_eq!(
        pending_and_lag(&q).await,
        (0, 1),
        "handed back: waiting, not pending"
    );

    let (next, ran) = recording(&q);
    eventually(Duration::from_secs(10), "the job runs", || async {
        processed(&next) == 1
    })
    .await;
    assert_eq!(*ran.lock().unwrap(), ["late"]);
    assert_eq!(q.stats().await.unwrap().counter("stalled"), 0);
    next.shutdown().await;
}
