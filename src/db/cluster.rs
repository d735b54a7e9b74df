//! Cluster mode: commands routed by their key's slot, pipelines split into
//! one pipeline per slot (order kept within a slot, which is where graphq
//! needs it: one graph, one queue partition), keyless commands sent where the
//! cluster client routes them (`SCRIPT LOAD` to every master), a trailing
//! `WAIT` run on every shard written to, and connections rebuilt from the
//! seed nodes after a failover. Transactions (`MULTI`) always stay within
//! one hash tag.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, Pipeline, RedisResult, Value};

use super::{is_unreachable, now_ms};

/// The same for cluster connections. Retries cover MOVED/ASK redirections and
/// a master's failover (a replica takes a few seconds to be promoted).
pub(super) fn cluster_builder(
    nodes: &[String],
    response_timeout: Option<Duration>,
) -> ClusterClientBuilder {
    let mut b = ClusterClient::builder(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(2_000);
    if let Some(t) = response_timeout {
        b = b.response_timeout(t);
    }
    b
}

/// The connection a lock holds now; a poisoned lock still holds a usable one
/// (nothing is left half-written by a swap).
pub(super) fn current_of(lock: &std::sync::RwLock<ClusterConnection>) -> ClusterConnection {
    match lock.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A cluster connection that is replaced when it loses track of the
/// cluster. The `redis` crate refreshes its slot map on MOVED or CLUSTERDOWN
/// replies, but a request to a master that was killed only fails to connect;
/// until a live node redirects it, the client keeps routing to the dead
/// master. So when a request fails that way, a new connection (which reads
/// the slot map afresh from the seed nodes) is made in the background and
/// used from then on, at most once a second.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: std::sync::Arc<ClusterInner>,
}

struct ClusterInner {
    /// Seed nodes a rebuilt connection reads the slot map from.
    nodes: Vec<String>,
    response_timeout: Option<Duration>,
    /// std locks: never held across an await.
    conn: std::sync::RwLock<ClusterConnection>,
    rebuilt_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Which shards recently had no replica to wait for. Kept here, not in
    /// the `ClusterConnection`, so that it outlives a rebuild.
    short_of_replicas: ShortOfReplicas,
}

/// Least time between two rebuilds of a cluster connection.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

impl ClusterHandle {
    pub(super) async fn connect(
        nodes: &[String],
        response_timeout: Option<Duration>,
    ) -> RedisResult<Self> {
        let conn = cluster_builder(nodes, response_timeout)
            .build()?
            .get_async_connection()
            .await?;
        Ok(ClusterHandle {
            inner: std::sync::Arc::new(ClusterInner {
                nodes: nodes.to_vec(),
                response_timeout,
                conn: std::sync::RwLock::new(conn),
                rebuilt_at: std::sync::Mutex::new(None),
                short_of_replicas: ShortOfReplicas::default(),
            }),
        })
    }

    /// The connection in use now (cheap: a handle on a shared one).
    fn current(&self) -> ClusterConnection {
        current_of(&self.inner.conn)
    }

    /// Sends one command, routed by the cluster client.
    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let r = self.current().req_packed_command(cmd).await;
        self.check(r)
    }

    /// Sends a pipeline; see [`cluster_pipeline`].
    pub(super) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let r = cluster_pipeline(
            &mut self.current(),
            &self.inner.short_of_replicas,
            pipeline,
            offset,
            count,
        )
        .await;
        self.check(r)
    }

    /// Every master's address (`host`, `port`).
    pub(super) async fn masters(&self) -> RedisResult<Vec<(String, u16)>> {
        let slots: Value = self
            .current()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        let mut out: Vec<(String, u16)> = Vec::new();
        let ranges: Vec<Vec<Value>> = redis::from_redis_value(slots)?;
        for range in ranges {
            let Some(master) = range.get(2) else { continue };
            let node: Vec<Value> = redis::from_redis_value(master.clone())?;
            let host: String = redis::from_redis_value(node[0].clone())?;
            let port: u16 = redis::from_redis_value(node[1].clone())?;
            if !out.contains(&(host.clone(), port)) {
                out.push((host, port));
            }
        }
        Ok(out)
    }

    /// Runs `cmd` on the node at `host:port`.
    pub(super) async fn on_node(&self, host: &str, port: u16, cmd: &Cmd) -> RedisResult<Value> {
        self.current()
            .route_command(
                cmd.clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port,
                }),
            )
            .await
    }

    /// Passes `r` through; a failure that says the topology may be stale
    /// starts a rebuild.
    fn check<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r
            && (is_unreachable(e) || e.kind() == redis::ErrorKind::ClusterConnectionNotFound)
        {
            self.rebuild();
        }
        r
    }

    fn rebuild(&self) {
        {
            let Ok(mut at) = self.inner.rebuilt_at.lock() else {
                return;
            };
            if at.is_some_and(|t| t.elapsed() < REBUILD_EVERY) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let built = match cluster_builder(&inner.nodes, inner.response_timeout).build() {
                Ok(client) => client.get_async_connection().await,
                Err(e) => Err(e),
            };
            match built {
                Ok(conn) => {
                    tracing::info!("cluster connection rebuilt from the seed nodes");
                    if let Ok(mut c) = inner.conn.write() {
                        *c = conn;
                    }
                }
                Err(err) => tracing::warn!(%err, "cluster connection not rebuilt yet"),
            }
        });
    }
}

/// Sends a pipeline to a cluster: one sub-pipeline per slot, all at once,
/// replies put back in the pipeline's order. Keyless commands are sent on
/// their own so the cluster client routes them (e.g. `SCRIPT LOAD` to every
/// master). A trailing `WAIT` ends every slot's sub-pipeline (it must run on
/// the connection that wrote); its reply is the fewest replicas any shard
/// reached. A transaction, or a pipeline within one slot, goes as it is.
async fn cluster_pipeline(
    conn: &mut ClusterConnection,
    short: &ShortOfReplicas,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let wait = cmds
        .last()
        .filter(|c| is_command(c, b"WAIT"))
        .map(|_| cmds.len() - 1);
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    for (i, cmd) in cmds.iter().enumerate().take(wait.unwrap_or(cmds.len())) {
        match command_key(cmd).map(Slot::for_key) {
            Some(slot) => match groups.iter_mut().find(|(s, _)| *s == Some(slot)) {
                Some((_, members)) => members.push(i),
                None => groups.push((Some(slot), vec![i])),
            },
            None => groups.push((None, vec![i])),
        }
    }
    // A lone slot goes as it is, unless a WAIT may have to be left out.
    let single_slot = groups.len() == 1 && groups[0].0.is_some() && wait.is_none();
    if pipeline.is_transaction() || offset != 0 || count != cmds.len() || single_slot {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let wait_arg = |n: usize| -> i64 {
        wait.and_then(|i| cmds[i].args_iter().nth(n))
            .and_then(|a| match a {
                redis::Arg::Simple(v) => std::str::from_utf8(v).ok()?.parse().ok(),
                _ => None,
            })
            .unwrap_or(0)
    };
    let (wanted, timeout_ms) = (wait_arg(1), wait_arg(2));
    let sends = groups.iter().map(|(slot, members)| {
        let mut c = conn.clone();
        let cmds = &cmds;
        // Not on a slot whose master recently had no replica to wait for.
        let wait = wait.filter(|_| slot.is_some_and(|s| !short.skips_wait(s, now_ms())));
        async move {
            match slot {
                None => {
                    RedisResult::Ok((vec![c.req_packed_command(cmds[members[0]]).await?], None))
                }
                Some(slot) => {
                    let mut part = redis::pipe();
                    for &i in members.iter().chain(wait.iter()) {
                        part.add_command(cmds[i].clone());
                    }
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
                        *slot,
                        SlotAddr::Master,
                    ));
                    let mut values = c
                        .route_pipeline(part, 0, members.len() + usize::from(wait.is_some()), route)
                        .await?;
                    let reached = match wait.and_then(|_| values.pop()) {
                        Some(Value::Int(n)) if n < wanted => {
                            Some(settle_short_wait(&mut c, short, *slot, wanted, timeout_ms).await?)
                        }
                        Some(Value::Int(n)) => Some(n),
                        _ => None,
                    };
                    Ok((values, reached))
                }
            }
        }
    });
    let replies = join_all(sends).await;
    let mut out = vec![Value::Nil; cmds.len()];
    let mut fewest: Option<i64> = None;
    for ((slot, members), reply) in groups.iter().zip(replies) {
        let (values, reached) = reply?;
        for (&i, v) in members.iter().zip(values) {
            out[i] = v;
        }
        if let (Some(_), Some(n)) = (slot, reached) {
            fewest = Some(fewest.map_or(n, |f| f.min(n)));
        }
    }
    if let Some(i) = wait {
        out[i] = Value::Int(fewest.unwrap_or(0));
    }
    Ok(out)
}

/// A WAIT on `slot`'s master reached fewer than `wanted` replicas within
/// its timeout. Which of two things happened decides what the write is worth:
/// - the master has fewer replicas connected than wanted (it lost them, or
///   was just promoted): no wait can do better. The write stands with the
///   copies it has, and WAITs on the slot are left out for [`DEGRADED_FOR`].
/// - its replicas are connected but lagging (a busy machine): they get a
///   longer wait, and a write still unconfirmed after it is an error
///   (`TRYAGAIN`), so that nobody is told a single-copy write is safe; the
///   caller resends, and the write is idempotent.
///
/// Returns how many replicas the write reached.
async fn settle_short_wait(
    conn: &mut ClusterConnection,
    short: &ShortOfReplicas,
    slot: Slot,
    wanted: i64,
    timeout_ms: i64,
) -> RedisResult<i64> {
    let on_master = || {
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
            slot,
            SlotAddr::Master,
        )))
    };
    let role = conn.route_command(redis::cmd("ROLE"), on_master()).await?;
    let connected = match &role {
        Value::Array(parts) => match parts.get(2) {
            Some(Value::Array(replicas)) => replicas.len() as i64,
            _ => 0,
        },
        _ => 0,
    };
    if connected < wanted {
        tracing::debug!(
            connected,
            wanted,
            "a master has too few replicas to wait for; its writes go unconfirmed for a while"
        );
        short.mark(slot, now_ms());
        return Ok(connected);
    }
    let mut again = redis::cmd("WAIT");
    again
        .arg(wanted)
        .arg(timeout_ms.max(1) * LAGGING_WAIT_FACTOR);
    let reached = match conn.route_command(again, on_master()).await? {
        Value::Int(n) => n,
        _ => 0,
    };
    if reached < wanted {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
            "NOREPLICAS",
            format!("a write reached {reached} of {wanted} replicas; resend it"),
        )));
    }
    Ok(reached)
}

/// The second wait for lagging replicas, in multiples of the configured WAIT
/// timeout.
const LAGGING_WAIT_FACTOR: i64 = 10;

/// How long a slot's writes go without WAIT after its master was found with
/// too few replicas. WAIT blocks the connection it runs on, and every request
/// multiplexed behind it: a shard running on one node would otherwise hold
/// each write for the whole WAIT timeout, one after another.
const DEGRADED_FOR: Duration = Duration::from_secs(5);

/// When each shard was last found with too few replicas to wait for, in ms
/// since the Unix epoch, by the slot written to. A shard is known here by its
/// slots, not its master's address: the cluster client keeps the slot map to
/// itself, and a slot's owner is what a write reaches. One connection's
/// memory: another connection finds out for itself, with one short WAIT.
#[derive(Default)]
struct ShortOfReplicas {
    /// A std lock: never held across an await.
    since: std::sync::Mutex<HashMap<Slot, u64>>,
}

impl ShortOfReplicas {
    /// Whether writes to `slot` leave out their WAIT at `now` (ms).
    fn skips_wait(&self, slot: Slot, now: u64) -> bool {
        let since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        since
            .get(&slot)
            .is_some_and(|at| now.saturating_sub(*at) < DEGRADED_FOR.as_millis() as u64)
    }

    /// `slot`'s master was found at `now` (ms) with too few replicas.
    fn mark(&self, slot: Slot, now: u64) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        since.retain(|_, at| now.saturating_sub(*at) < DEGRADED_FOR.as_millis() as u64);
        since.insert(slot, now);
    }
}

fn is_command(cmd: &Cmd, name: &[u8]) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(n)) if n.eq_ignore_ascii_case(name))
}

/// The key a command is routed by, for the commands graphq sends: the first
/// key of `EVALSHA`/`EVAL`, the first stream of `XREAD`/`XREADGROUP`, the
/// channel of `SPUBLISH`, nothing for keyless commands, and the first
/// argument otherwise.
fn command_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(v) => Some(v),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVALSHA" | b"EVAL" | b"EVALSHA_RO" | b"EVAL_RO" | b"FCALL" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                return None;
            }
            args.get(3)?
        }
        // Container commands: the key follows the subcommand.
        b"XGROUP" | b"XINFO" | b"OBJECT" | b"MEMORY" => args.get(2)?,
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        b"PUBLISH" | b"SCRIPT" | b"FUNCTION" | b"PING" | b"INFO" | b"MULTI" | b"EXEC"
        | b"CLUSTER" | b"CLIENT" | b"CONFIG" | b"DBSIZE" | b"TIME" | b"FLUSHALL" | b"FLUSHDB"
        | b"WAIT" | b"SCAN" => {
            return None;
        }
        _ => args.get(1)?,
    };
    Some(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::{DEGRADED_FOR, ShortOfReplicas, Slot, command_key};

    #[test]
    fn a_shard_without_replicas_skips_wait_alone_and_for_a_while() {
        let short = ShortOfReplicas::default();
        let (lost, healthy) = (Slot::for_key("{g:a}"), Slot::for_key("{g:b}"));
        assert_ne!(lost, healthy);
        let t = 1_000_000;
        assert!(!short.skips_wait(lost, t));
        short.mark(lost, t);
        assert!(short.skips_wait(lost, t + 1));
        assert!(!short.skips_wait(healthy, t + 1), "other shards still wait");
        let window = DEGRADED_FOR.as_millis() as u64;
        assert!(short.skips_wait(lost, t + window - 1));
        assert!(
            !short.skips_wait(lost, t + window),
            "the shard is asked again"
        );
        // Another connection (here: another memory) has not found out yet.
        assert!(!ShortOfReplicas::default().skips_wait(lost, t + 1));
    }

    #[test]
    fn commands_are_routed_by_the_key_graphq_means() {
        let key = |c: &redis::Cmd| command_key(c).map(|k| String::from_utf8(k).unwrap());
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg("abc")
            .arg(2)
            .arg("p:{g:a}:meta")
            .arg("p:{g:a}:nodes")
            .arg("x");
        assert_eq!(key(&evalsha).as_deref(), Some("p:{g:a}:meta"));
        let mut keyless = redis::cmd("EVALSHA");
        keyless.arg("abc").arg(0).arg("x");
        assert_eq!(key(&keyless), None);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg("p:{q:c:1}")
            .arg(">");
        assert_eq!(key(&read).as_deref(), Some("p:{q:c:1}"));
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg("return 1");
        assert_eq!(key(&load), None);
        let mut hset = redis::cmd("HSET");
        hset.arg("p:{op:x}").arg("status").arg("pending");
        assert_eq!(key(&hset).as_deref(), Some("p:{op:x}"));
        let mut spublish = redis::cmd("SPUBLISH");
        spublish.arg("p:{g:a}:events").arg("m");
        assert_eq!(key(&spublish).as_deref(), Some("p:{g:a}:events"));
        assert_eq!(key(&redis::cmd("PING")), None);
        let mut group = redis::cmd("XGROUP");
        group
            .arg("CREATE")
            .arg("p:{q:c:2}")
            .arg("g")
            .arg("0")
            .arg("MKSTREAM");
        assert_eq!(key(&group).as_deref(), Some("p:{q:c:2}"));
    }
}
