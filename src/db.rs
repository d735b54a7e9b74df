//! The Redis connection handle shared by every component.
//!
//! One multiplexed, auto-reconnecting connection carries ordinary commands and
//! pipelines; blocking reads (`XREADGROUP BLOCK`) each get a dedicated
//! connection because a blocked client holds up everything queued behind it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};

/// How long an ordinary command may take before the caller sees an error.
/// Generous, because a Redis that pauses (AOF rewrite, CLIENT PAUSE) should
/// slow graphq down rather than fail it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap-to-clone handle to one Redis server.
#[derive(Clone)]
pub struct Redis {
    /// Kept to open dedicated connections for blocking reads.
    client: Client,
    /// As configured; pub/sub connections are opened from it with RESP3.
    url: String,
    /// Shared connection for everything that does not block.
    conn: ConnectionManager,
}

impl Redis {
    /// Connects once; fails when Redis is unreachable right now. Callers that
    /// must wait for Redis use [`Redis::connect_with_retry`].
    pub async fn connect(url: &str) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let conn = manager(&client, Some(RESPONSE_TIMEOUT)).await?;
        Ok(Redis {
            client,
            conn,
            url: url.to_string(),
        })
    }

    /// Connects, retrying with capped exponential backoff until `give_up` passes.
    pub async fn connect_with_retry(url: &str, give_up: Duration) -> RedisResult<Self> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match Self::connect(url).await {
                Ok(redis) => return Ok(redis),
                Err(err) if started.elapsed() + delay < give_up => {
                    tracing::warn!(%err, "redis not reachable yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Address and credentials, for connections not made by the `redis` crate.
    pub fn connection_info(&self) -> &redis::ConnectionInfo {
        self.client.get_connection_info()
    }

    /// The shared connection. Cloning it is cheap and shares the socket.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection for pub/sub: RESP3, pushes delivered to `push`, channels
    /// subscribed again by itself after a reconnect.
    pub async fn subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<ConnectionManager> {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let client = Client::open(format!("{}{sep}protocol=resp3", self.url))?;
        let config = manager_config(Some(RESPONSE_TIMEOUT))
            .set_push_sender(push)
            .set_automatic_resubscription();
        ConnectionManager::new_with_config(client, config).await
    }

    /// A new connection of its own, without a response timeout, for commands
    /// that block server-side for up to `block` milliseconds.
    pub async fn dedicated(&self) -> RedisResult<ConnectionManager> {
        manager(&self.client, None).await
    }
}

async fn manager(client: &Client, timeout: Option<Duration>) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client.clone(), manager_config(timeout)).await
}

/// Timeouts and reconnect backoff shared by every connection graphq opens.
fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(response_timeout)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(6)
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
