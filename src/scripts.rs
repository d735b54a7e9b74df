//! The Lua scripts graphq runs in Redis, compiled into the binary from `lua/`.
//!
//! Each script is loaded once per Redis (lazily, by SHA) and invoked with
//! `EVALSHA`; [`redis::Script`] reloads it on `NOSCRIPT`, e.g. after a Redis
//! restart. The apply script is a function library instead ([`APPLY`],
//! `FCALL`). Pipelines cannot reload mid-flight: send them with
//! [`query_pipeline`], which loads every script and library and resends when
//! Redis lacks one.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;

/// Every script, by the operation it performs.
pub struct Scripts {
    pub enqueue: Script,
    pub promote: Script,
    pub ack: Script,
    pub record_failure: Script,
    pub reschedule: Script,
    pub dead_letter: Script,
    pub dlq_retry: Script,
    pub reclaim: Script,
    pub lease_claim: Script,
    pub lease_release: Script,
    pub lease_hand_back: Script,
    pub register_worker: Script,
    pub rate_limit: Script,
    pub record_revert: Script,
    pub save_progress: Script,
    pub load_graph: Script,
    pub commit_node: Script,
}

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("../lua/enqueue.lua")),
    promote: Script::new(include_str!("../lua/promote.lua")),
    ack: Script::new(include_str!("../lua/ack.lua")),
    record_failure: Script::new(include_str!("../lua/record_failure.lua")),
    reschedule: Script::new(include_str!("../lua/reschedule.lua")),
    dead_letter: Script::new(include_str!("../lua/dead_letter.lua")),
    dlq_retry: Script::new(include_str!("../lua/dlq_retry.lua")),
    reclaim: Script::new(include_str!("../lua/reclaim.lua")),
    lease_claim: Script::new(include_str!("../lua/lease_claim.lua")),
    lease_release: Script::new(include_str!("../lua/lease_release.lua")),
    lease_hand_back: Script::new(include_str!("../lua/lease_hand_back.lua")),
    register_worker: Script::new(include_str!("../lua/register_worker.lua")),
    rate_limit: Script::new(include_str!("../lua/rate_limit.lua")),
    record_revert: Script::new(include_str!("../lua/record_revert.lua")),
    save_progress: Script::new(include_str!("../lua/save_progress.lua")),
    load_graph: Script::new(include_str!("../lua/load_graph.lua")),
    commit_node: Script::new(include_str!("../lua/commit_node.lua")),
});

impl Scripts {
    fn all(&self) -> [&Script; 17] {
        [
            &self.enqueue,
            &self.promote,
            &self.ack,
            &self.record_failure,
            &self.reschedule,
            &self.dead_letter,
            &self.dlq_retry,
            &self.reclaim,
            &self.lease_claim,
            &self.lease_release,
            &self.lease_hand_back,
            &self.register_worker,
            &self.rate_limit,
            &self.record_revert,
            &self.save_progress,
            &self.load_graph,
            &self.commit_node,
        ]
    }

    /// Loads every script into the script cache of the Redis behind `conn`,
    /// and every function library (`FUNCTION LOAD REPLACE`; on a cluster,
    /// the cluster client sends both to every master).
    pub async fn load_all<C: ConnectionLike>(&self, conn: &mut C) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for script in self.all() {
            pipe.load_script(script).ignore();
        }
        pipe.cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&APPLY.code)
            .ignore();
        pipe.exec_async(conn).await
    }
}

/// A Redis Function library of `lua/` (Redis 7.0+). Its helpers are created
/// once, when the library is loaded, instead of on every call as a script's
/// are: for the 800-line apply script that was a third of its cost.
///
/// The library and its one function are named after a hash of the file
/// (`graphq_apply_<12 hex>`), so gateways and workers of two graphq versions
/// sharing a Redis (a rolling deploy) each call their own. The file is plain
/// Lua ending in `redis.register_function(FUNCTION_NAME, …)`; loading
/// prepends the `#!lua name=` line Redis requires and that name.
pub struct Library {
    /// The name of the library and of its function.
    pub function: String,
    code: String,
}

impl Library {
    fn new(stem: &str, source: &str) -> Library {
        let hash = sha1_smol::Sha1::from(source).digest().to_string();
        let function = format!("graphq_{stem}_{}", &hash[..12]);
        let code = format!("#!lua name={function}\nlocal FUNCTION_NAME = '{function}'\n{source}");
        Library { function, code }
    }

    /// `FCALL <function>`, to which the caller adds numkeys, keys and args.
    pub fn fcall(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.function);
        cmd
    }
}

/// `lua/apply_command.lua`: applies one graph command (docs/graph.md).
pub static APPLY: LazyLock<Library> =
    LazyLock::new(|| Library::new("apply", include_str!("../lua/apply_command.lua")));

/// True when a pipeline failed because Redis lacks a script or function of
/// ours: a restart without persistence, `SCRIPT FLUSH` / `FUNCTION FLUSH`,
/// a failover to a node that never had it.
fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || err.to_string().contains("Function not found")
}

/// Sends a pipeline of script invocations; when Redis has forgotten the
/// scripts, loads them all and sends the pipeline once more.
///
/// Usually nothing ran the first time: every EVALSHA failed the same way.
/// If another process loads the scripts while this pipeline is half way
/// through, its tail did run and runs again. Every pipeline built on this
/// is idempotent (acks, lease claims, applies deduped by operation id,
/// enqueues deduped by job id) except a bulk add of jobs without ids, which
/// may then enqueue some twice: at-least-once, as the queue promises.
pub async fn query_pipeline<T, C>(pipe: &redis::Pipeline, conn: &mut C) -> redis::RedisResult<T>
where
    T: redis::FromRedisValue,
    C: ConnectionLike,
{
    match pipe.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            SCRIPTS.load_all(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    /// Every script says which keys and arguments it takes and what it returns,
    /// and touches keys only through KEYS (the cluster rule).
    #[test]
    fn every_script_has_a_header_and_declares_its_keys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.display();
            let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("--")).collect();
            assert!(
                header.iter().any(|l| l.starts_with("-- KEYS[1]:")),
                "{name}: KEYS header"
            );
            assert!(
                header.iter().any(|l| l.starts_with("-- ARGV[1]:")),
                "{name}: ARGV header"
            );
            assert!(
                header.iter().any(|l| l.starts_with("-- Returns:")),
                "{name}: Returns header"
            );
            assert!(
                !text.contains("redis.call('KEYS'"),
                "{name}: no KEYS command"
            );
            for line in text.lines().filter(|l| !l.trim_start().starts_with("--")) {
                assert!(
                    !line.contains("loadstring"),
                    "{name}: no code built from strings"
                );
            }
            // The benchmark job's script belongs to `graphq bench` (the
            // workers crate's `bench` feature), which registers it itself.
            if path.file_name().is_some_and(|f| f != "bench_apply.lua") {
                seen += 1;
            }
        }
        let libraries = 1;
        assert_eq!(
            seen,
            super::SCRIPTS.all().len() + libraries,
            "every file in lua/ but the benchmark's is registered"
        );
    }
}
