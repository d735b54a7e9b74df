//! The gateway and worker survive a Redis restart: they reconnect and
//! resubscribe by themselves, and a subscribed client keeps receiving
//! changes in version order (docs/protocol.md, Guarantees).

mod common;

use std::time::Duration;

use common::ws;
use common::{Stack, TestEnv, eventually};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use graphq::redis_server::{RedisServer, RedisServerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_without_restarting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let port = graphq::redis_server::free_port().unwrap();
    let opts = RedisServerOptions {
        port: Some(port),
        dir: Some(dir.path().to_path_buf()),
        aof: true,
        ..Default::default()
    };
    // AOF, on a port the restarted server can take again.
    let mut env = TestEnv::start_with(opts.clone()).await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let token = s.token("alice", &["g1"], Role::Editor);
    let mut a = ws::Client::with_token(&s.ws, &token).await;
    a.send(json!({"type": "SUBSCRIBE", "graphId": "g1", "clientVersion": 0}))
        .await;
    a.next_of("SYNC").await;
    let create = |op: &str, id: &str| {
        json!({"type": "COMMAND", "graphId": "g1",
        "command": {"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": id, "position": {"x": 0, "y": 0}}}}})
    };
    a.send(create("c1", "n1")).await;
    assert_eq!(a.next_of("COMMAND_APPLIED").await["version"], 1);

    env.server_mut().stop();
    *env.server_mut() = RedisServer::start_with(opts).unwrap();
    // Everything reconnects by itself; commands flow again and arrive in order.
    let store = s.store.clone();
    eventually(
        Duration::from_secs(30),
        "redis answers the store again",
        || async { store.state("g1").await.is_ok() },
    )
    .await;
    let mut sent = 2;
    loop {
        a.send(create(&format!("c{sent}"), &format!("n{sent}")))
            .await;
        let f = a.next().await;
        if f["type"] == "ACCEPTED" {
            break;
        }
        // Refused while the gateway was still reconnecting: try again.
        assert_eq!(f["type"], "ERROR", "{f}");
        assert!(sent < 100, "the gateway never recovered: {f}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        sent += 1;
    }
    let applied = a.next_of("COMMAND_APPLIED").await;
    assert_eq!(
        applied["version"], 2,
        "nothing acknowledged was lost (AOF) and the order holds"
    );
    assert_eq!(s.store.state("g1").await.unwrap().version, 2);
}
