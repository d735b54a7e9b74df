//! An open WebSocket's rights end at its token's `exp` unless it renews the
//! token on the same socket (docs/protocol.md, Token expiry), and the demo
//! mints short tokens to show it; against a real gateway, worker and
//! redis-server.

mod common;

use std::time::{Duration, Instant};

use common::ws::Client;
use common::{Stack, TestEnv};
use graphq::auth::{Graphs, Role};
use graphq::gateway::GatewaySettings;
use serde_json::{Value, json};

/// The lifetime of the short tokens. `exp` is in whole seconds, so such a
/// token expires between 1 and 2 s after it is minted.
const SHORT: Duration = Duration::from_secs(2);

/// The close code of an expired token (docs/protocol.md, Close codes).
const TOKEN_EXPIRED: u16 = 4003;

fn create(op: &str, id: &str) -> Value {
    json!({"type": "COMMAND", "graphId": "g1", "command": {
        "operationId": op, "type": "CREATE_NODE",
        "payload": {"node": {"id": id, "position": {"x": 0, "y": 0}}}}})
}

fn only(graphs: &[&str]) -> Graphs {
    Graphs::Only(graphs.iter().map(|g| g.to_string()).collect())
}

/// A token for `user` on `graphs` that lives `ttl`, and the instant by
/// which it has certainly expired.
fn mint(s: &Stack, user: &str, graphs: &[&str], ttl: Duration) -> (String, Instant) {
    let minted = Instant::now();
    let token = s
        .auth
        .mint(user, only(graphs), Role::Editor, ttl)
        .expect("a valid user id");
    (token, minted + ttl + Duration::from_millis(300))
}

async fn subscribe(c: &mut Client, graph: &str) {
    c.send(json!({"type": "SUBSCRIBE", "graphId": graph, "clientVersion": 0}))
        .await;
    let sync = c.next_of("SYNC").await;
    assert_eq!(sync["graphId"], graph);
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep(t.saturating_duration_since(Instant::now())).await;
}

/// The ids of the nodes of `graph` in the store.
async fn nodes(s: &Stack, graph: &str) -> Vec<String> {
    let state = s.store.state(graph).await.expect("the store answers");
    state
        .nodes
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect()
}

/// Bob, with a long token, creates `id` on g1 and waits until it is applied:
/// everything queued on g1 before it has been applied too.
async fn applied_by_bob(s: &Stack, op: &str, id: &str) {
    let mut bob = Client::with_token(&s.ws, &s.token("bob", &["g1", "g2"], Role::Editor)).await;
    subscribe(&mut bob, "g1").await;
    bob.send(create(op, id)).await;
    bob.next_matching(|f| f["type"] == "COMMAND_APPLIED" && f["operationId"] == op)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_when_its_token_expires_and_later_commands_are_not_applied() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (token, expired) = mint(&s, "alice", &["g1"], SHORT);
    let mut a = Client::with_token(&s.ws, &token).await;
    subscribe(&mut a, "g1").await;

    sleep_until(expired).await;
    // The socket may already be closed; if it is not, this must not count.
    let _ = a.try_send(&create("late", "n-late")).await;
    assert_eq!(
        a.close_code(Duration::from_secs(5)).await,
        Some(TOKEN_EXPIRED),
        "the socket is closed with the token-expired code"
    );
    applied_by_bob(&s, "control", "n-control").await;
    let ids = nodes(&s, "g1").await;
    assert!(ids.contains(&"n-control".to_string()));
    assert!(
        !ids.contains(&"n-late".to_string()),
        "a command sent after exp was applied: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_refreshes_its_token_stays_open_past_the_first_expiry() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (token, expired) = mint(&s, "alice", &["g1"], SHORT);
    let mut a = Client::with_token(&s.ws, &token).await;
    subscribe(&mut a, "g1").await;

    let (fresh, _) = mint(&s, "alice", &["g1"], Duration::from_secs(600));
    a.send(json!({"type": "REFRESH", "token": fresh})).await;
    let refreshed = a.next().await;
    assert_eq!(refreshed["type"], "REFRESHED", "{refreshed}");
    let expires_at = refreshed["expiresAt"].as_u64().expect("expiresAt in ms");
    assert!(expires_at > graphq::db::now_ms() + 500_000, "{refreshed}");

    sleep_until(expired).await;
    a.send(create("after", "n-after")).await;
    let applied = a
        .next_matching(|f| f["type"] == "COMMAND_APPLIED" || f["type"] == "ERROR")
        .await;
    assert_eq!(applied["type"], "COMMAND_APPLIED", "{applied}");
    assert_eq!(applied["operationId"], "after");
    assert!(nodes(&s, "g1").await.contains(&"n-after".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_naming_another_user_is_refused_and_the_old_expiry_stands() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (token, expired) = mint(&s, "alice", &["g1"], SHORT);
    let mut a = Client::with_token(&s.ws, &token).await;

    let (bobs, _) = mint(&s, "bob", &["g1"], Duration::from_secs(600));
    a.send(json!({"type": "REFRESH", "token": bobs})).await;
    let refused = a.next().await;
    assert_eq!(refused["type"], "ERROR", "{refused}");
    assert_eq!(refused["code"], "AUTH_REFRESH_REFUSED", "{refused}");
    // A token that does not verify is refused the same way.
    a.send(json!({"type": "REFRESH", "token": "not-a-token"}))
        .await;
    assert_eq!(a.next().await["code"], "AUTH_REFRESH_REFUSED");

    sleep_until(expired).await;
    assert_eq!(
        a.close_code(Duration::from_secs(5)).await,
        Some(TOKEN_EXPIRED),
        "the socket is still closed at the first token's exp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_no_longer_grants_a_graph_ends_its_subscription() {
    let env = TestEnv::start().await;
    let s = Stack::start(&env, GatewaySettings::default()).await;
    let (token, _) = mint(&s, "alice", &["g1", "g2"], Duration::from_secs(600));
    let mut a = Client::with_token(&s.ws, &token).await;
    subscribe(&mut a, "g1").await;
    subscribe(&mut a, "g2").await;

    let (narrower, _) = mint(&s, "alice", &["g1"], Duration::from_secs(600));
    a.send(json!({"type": "REFRESH", "token": narrower})).await;
    let ended = a.next().await;
    assert_eq!(ended["type"], "UNSUBSCRIBED", "{ended}");
    assert_eq!(ended["graphId"], "g2");
    assert_eq!(ended["code"], "FORBIDDEN");
    assert_eq!(a.next().await["type"], "REFRESHED");

    // Bob's edit of g2 is applied before his edit of g1; alice hears only g1.
    let mut bob = Client::with_token(&s.ws, &s.token("bob", &["g1", "g2"], Role::Editor)).await;
    subscribe(&mut bob, "g2").await;
    bob.send(json!({"type": "COMMAND", "graphId": "g2", "command": {
        "operationId": "b-g2", "type": "CREATE_NODE",
        "payload": {"node": {"id": "n1", "position": {"x": 0, "y": 0}}}}}))
        .await;
    bob.next_of("COMMAND_APPLIED").await;
    applied_by_bob(&s, "b-g1", "n1").await;
    let heard = a.next_of("COMMAND_APPLIED").await;
    assert_eq!(
        heard["graphId"], "g1",
        "no change of an ended subscription arrives: {heard}"
    );
    // And the new token's graphs are what the socket may use now.
    a.send(json!({"type": "SUBSCRIBE", "graphId": "g2"})).await;
    assert_eq!(a.next_of("ERROR").await["code"], "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_tokens_may_be_short_lived_so_the_demo_shows_renewal() {
    let env = TestEnv::start().await;
    let dev = Stack::start(
        &env,
        GatewaySettings {
            dev_tokens: true,
            ..GatewaySettings::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let mint = |body: Value| {
        http.post(format!("{}/api/v2/dev/token", dev.url))
            .json(&body)
            .send()
    };
    let r = mint(json!({"user": "alice", "ttlSeconds": 2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let id = dev.auth.verify(body["token"].as_str().unwrap()).unwrap();
    assert!(id.expires_at_ms() <= graphq::db::now_ms() + 2_000);
    let id = dev
        .auth
        .verify(
            mint(json!({"user": "alice"}))
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["token"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert!(
        id.expires_at_ms() > graphq::db::now_ms() + 23 * 3600 * 1000,
        "a day by default"
    );
    for ttl in [json!(0), json!(86_401), json!("soon")] {
        let r = mint(json!({"user": "alice", "ttlSeconds": ttl}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{ttl}");
    }
}
