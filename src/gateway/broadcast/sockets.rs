//! How many sockets each user has open, on every gateway together: one
//! sorted set per user in Redis (`keys::user_sockets`), socket id → when
//! the entry expires. A socket is admitted when the count with it is within
//! `gateway.max_sockets_per_user`; each gateway refreshes its sockets'
//! entries on a timer and removes them when they close, so a gateway that
//! crashed stops counting within [`SOCKET_TTL`].
//!
//! Admission adds first and counts after, without a script: two sockets
//! racing for the last place may both be refused (never both admitted).
//! Redis being away admits: the count is a guard, not a gate to the graph.

use std::time::Duration;

use crate::db::now_ms;

use super::{Broadcaster, Conn};

/// How long a socket's entry counts without a refresh.
const SOCKET_TTL: Duration = Duration::from_secs(60);

/// How often a gateway refreshes the entries of its open sockets.
pub(super) const SOCKET_REFRESH: Duration = Duration::from_secs(20);

impl Broadcaster {
    /// The socket's id in the user's set: unique across gateways.
    fn socket_id(&self, conn: &Conn) -> String {
        format!("{}:{}", self.inner.instance, conn.id)
    }

    /// Counts the socket among its user's; false (and not counted) when the
    /// user already has `max` open. `max` 0: no limit, nothing counted.
    pub(super) async fn admit(&self, conn: &Conn, max: usize) -> bool {
        if max == 0 {
            return true;
        }
        let key = self.inner.keys.user_sockets(&conn.user);
        let member = self.socket_id(conn);
        let now = now_ms();
        let ttl = SOCKET_TTL.as_millis() as u64;
        let mut redis = self.inner.redis.conn();
        let counted: redis::RedisResult<(u64, u64, u64, bool)> = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .cmd("ZADD")
            .arg(&key)
            .arg(now + ttl)
            .arg(&member)
            .cmd("ZCARD")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl)
            .query_async(&mut redis)
            .await;
        let open = match counted {
            Ok((_, _, open, _)) => open,
            Err(err) => {
                tracing::warn!(%err, user = %conn.user, "sockets not counted; admitting");
                return true;
            }
        };
        if open <= max as u64 {
            return true;
        }
        self.forget_socket(conn).await;
        tracing::info!(user = %conn.user, open, max, "socket refused: too many connections");
        false
    }

    /// The socket closed: it no longer counts.
    pub(super) async fn forget_socket(&self, conn: &Conn) {
        let key = self.inner.keys.user_sockets(&conn.user);
        let mut redis = self.inner.redis.conn();
        let removed: redis::RedisResult<u64> = redis::cmd("ZREM")
            .arg(&key)
            .arg(self.socket_id(conn))
            .query_async(&mut redis)
            .await;
        if let Err(err) = removed {
            tracing::debug!(%err, "socket entry not removed; it expires");
        }
    }

    /// Pushes back the expiry of every socket open here, in one pipeline.
    pub(super) async fn refresh_sockets(&self) {
        let entries: Vec<(String, Vec<String>)> = {
            let users = self.inner.users.lock().expect("users lock");
            users
                .iter()
                .filter(|(_, u)| !u.conns.is_empty())
                .map(|(user, u)| {
                    let ids = u.conns.values().map(|c| self.socket_id(c)).collect();
                    (self.inner.keys.user_sockets(user), ids)
                })
                .collect()
        };
        if entries.is_empty() {
            return;
        }
        let ttl = SOCKET_TTL.as_millis() as u64;
        let expires = now_ms() + ttl;
        let mut pipe = redis::pipe();
        for (key, ids) in &entries {
            let cmd = pipe.cmd("ZADD").arg(key).arg("XX");
            for id in ids {
                cmd.arg(expires).arg(id);
            }
            pipe.ignore().cmd("PEXPIRE").arg(key).arg(ttl).ignore();
        }
        let mut redis = self.inner.redis.conn();
        let done: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
        if let Err(err) = done {
            tracing::debug!(%err, "socket entries not refreshed; retried on the next tick");
        }
    }
}
