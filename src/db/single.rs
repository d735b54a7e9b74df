//! Connections to a single Redis server: the auto-reconnecting
//! `ConnectionManager` and the timeouts and backoff every such connection
//! shares (the shared one, dedicated ones for blocking reads, pub/sub).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};

/// An auto-reconnecting connection; `timeout` bounds each response (None
/// for connections that block server-side).
pub(super) async fn manager(
    client: &Client,
    timeout: Option<Duration>,
) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client.clone(), manager_config(timeout)).await
}

/// Timeouts and reconnect backoff shared by every single-server connection
/// graphq opens.
pub(super) fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(response_timeout)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(6)
}
