//! The conflict log and versioned reads (docs/graph.md, The conflict log;
//! docs/protocol.md, Conflicts and Versioned reads) against a real
//! `graphq gateway`, `graphq worker` and redis-server: MANUAL conflicts
//! listed open with both values until a later write resolves them,
//! LAST_WRITE_WINS decisions logged and counted in `/metrics`, the
//! operator's `graphq graph conflicts`, and `ETag` / `If-None-Match` on
//! `GET state` and `GET changes`.

mod common;

use std::time::Duration;

use common::{Proc, SECRET, TestEnv, eventually};
use graphq::auth::{Auth, Graphs, Role};
use serde_json::{Value, json};

/// A gateway and a worker as separate processes, with `node.data.title`
/// under MANUAL.
struct Processes {
    gateway: String,
    worker: String,
    auth: Auth,
    _config: tempfile::NamedTempFile,
    _procs: Vec<Proc>,
}

impl Processes {
    async fn start(env: &TestEnv) -> Processes {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            "[graph.conflicts]\n\"node.data.title\" = \"MANUAL\"\n",
        )
        .unwrap();
        let config_path = config.path().to_str().unwrap().to_string();
        let gw_port = graphq::redis_server::free_port().unwrap();
        let metrics_port = graphq::redis_server::free_port().unwrap();
        let mut cmd = env.graphq();
        cmd.args(["--config", &config_path])
            .args(["gateway", "--bind", &format!("127.0.0.1:{gw_port}")])
            .env("GRAPHQ_AUTH_SECRET", SECRET);
        let gateway = Proc::spawn(cmd);
        let mut cmd = env.graphq();
        cmd.args(["--config", &config_path])
            .args(["worker", "--queue", "commands", "--queue", "sync"])
            .env("GRAPHQ_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
            .env("GRAPHQ_QUEUES__COMMANDS__BLOCK_MS", "200");
        let worker = Proc::spawn(cmd);
        let p = Processes {
            gateway: format!("http://127.0.0.1:{gw_port}"),
            worker: format!("http://127.0.0.1:{metrics_port}"),
            auth: Auth::new(SECRET).unwrap(),
            _config: config,
            _procs: vec![gateway, worker],
        };
        for base in [&p.gateway, &p.worker] {
            eventually(Duration::from_secs(30), "ready", || async {
                reqwest::get(format!("{base}/readyz"))
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        p
    }

    fn token(&self, user: &str) -> String {
        self.auth
            .mint(user, Graphs::All, Role::Editor, Duration::from_secs(600))
            .unwrap()
    }

    /// Sends a command as `user` and waits for its outcome.
    async fn send(&self, user: &str, graph: &str, cmd: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/api/v2/graphs/{graph}/command?wait=10000",
                self.gateway
            ))
            .bearer_auth(self.token(user))
            .json(&cmd)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the outcome arrives in time");
        r.json::<Value>().await.unwrap()["outcome"].clone()
    }

    async fn conflicts(&self, graph: &str, query: &str) -> Value {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/v2/graphs/{graph}/conflicts{query}",
                self.gateway
            ))
            .bearer_auth(self.token("operator"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// `graphq_conflicts_total` of the worker for one strategy and outcome.
    async fn counted(&self, strategy: &str, outcome: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.worker))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("graphq_conflicts_total{"))
            .filter(|l| l.contains(&format!("strategy=\"{strategy}\"")))
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }
}

fn update(op: &str, base: u64, patch: Value) -> Value {
    json!({"operationId": op, "type": "UPDATE_NODE", "baseVersion": base,
        "payload": {"id": "n1", "patch": patch}})
}

fn create_n1(op: &str) -> Value {
    json!({"operationId": op, "type": "CREATE_NODE", "payload": {"node": {"id": "n1",
        "position": {"x": 0, "y": 0}, "data": {"title": "first"}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_conflict_is_listed_open_with_both_values_until_a_later_write_resolves_it() {
    let env = TestEnv::start().await;
    let p = Processes::start(&env).await;
    assert_eq!(p.send("alice", "g", create_n1("c1")).await["version"], 1);
    let first = update("a1", 1, json!({"data": {"title": "alice's"}}));
    assert_eq!(p.send("alice", "g", first).await["status"], "applied");
    // Bob edited from version 1 too: the server keeps alice's title.
    let lost = p
        .send(
            "bob",
            "g",
            update("b1", 1, json!({"data": {"title": "bob's"}})),
        )
        .await;
    assert_eq!(lost["code"], "CONFLICT", "{lost}");

    let open = p.conflicts("g", "?status=open").await;
    let list = open["conflicts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{open}");
    let c = &list[0];
    assert_eq!(c["field"], "/nodes/n1/data/title");
    assert_eq!(c["strategy"], "MANUAL");
    assert_eq!(c["status"], "open");
    assert_eq!(
        (&c["userId"], &c["clientValue"]),
        (&json!("bob"), &json!("bob's"))
    );
    assert_eq!(
        (&c["serverUserId"], &c["serverValue"]),
        (&json!("alice"), &json!("alice's"))
    );
    assert_eq!(
        (&c["baseVersion"], &c["serverVersion"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(c["operationId"], "b1");
    // Bob, reconnecting, asks for his own open conflicts; alice has none.
    assert_eq!(
        p.conflicts("g", "?status=open&user=bob").await["conflicts"],
        open["conflicts"]
    );
    assert_eq!(
        p.conflicts("g", "?user=alice").await["conflicts"],
        json!([])
    );
    let bad = reqwest::Client::new()
        .get(format!(
            "{}/api/v2/graphs/g/conflicts?since=yesterday",
            p.gateway
        ))
        .bearer_auth(p.token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["field"],
        "since"
    );

    // Bob settles it: his title, written from the current version.
    let settle = update("b2", 2, json!({"data": {"title": "bob's"}}));
    assert_eq!(p.send("bob", "g", settle).await["version"], 3);
    let all = p.conflicts("g", "").await;
    let c = &all["conflicts"][0];
    assert_eq!(c["status"], "resolved", "{all}");
    assert_eq!(c["resolution"]["userId"], "bob");
    assert_eq!(c["resolution"]["value"], "bob's");
    assert_eq!(c["resolution"]["operationId"], "b2");
    assert_eq!(c["resolution"]["version"], 3);
    assert_eq!(
        p.conflicts("g", "?status=open").await["conflicts"],
        json!([])
    );
    // Nothing changed after the last id read.
    let since = all["lastId"].as_str().unwrap();
    assert_eq!(
        p.conflicts("g", &format!("?since={since}")).await["conflicts"],
        json!([])
    );
    assert_eq!(p.counted("MANUAL", "open").await, Some(1.0));
    assert_eq!(p.counted("MANUAL", "resolved").await, Some(1.0));

    // An operator settles another open conflict by naming it: RESOLVE_CONFLICT
    // with `conflictId` writes the chosen value to the field it names.
    let lost = p
        .send(
            "carol",
            "g",
            update("k1", 2, json!({"data": {"title": "carol's"}})),
        )
        .await;
    assert_eq!(lost["code"], "CONFLICT", "{lost}");
    let open = p.conflicts("g", "?status=open&user=carol").await;
    let id = open["conflicts"][0]["id"].as_str().unwrap().to_string();
    let config = graphq::config::Config::load(None, Vec::new(), &Default::default()).unwrap();
    let sync = env.queue("sync", config.queues["sync"].clone());
    let job = json!({"graphId": "g", "userId": "operator", "conflictId": id, "value": "agreed"});
    sync.add(graphq::queue::NewJob::new("RESOLVE_CONFLICT", job.to_string()).key("g"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the named conflict resolved",
        || async { p.conflicts("g", "?status=open").await["conflicts"] == json!([]) },
    )
    .await;
    let last = p.conflicts("g", "?status=resolved").await["conflicts"][1].clone();
    assert_eq!(
        (&last["id"], &last["resolution"]["userId"]),
        (&json!(id), &json!("operator"))
    );
    assert_eq!(last["resolution"]["value"], "agreed");

    let out = env
        .graphq()
        .args(["graph", "conflicts", "g"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("resolved MANUAL /nodes/n1/data/title"),
        "{text}"
    );
    assert!(text.contains("resolved by bob with \"bob's\""), "{text}");
    let out = env
        .graphq()
        .args(["graph", "conflicts", "g", "--open"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 conflicts\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_write_wins_conflict_is_logged_and_counted() {
    let env = TestEnv::start().await;
    let p = Processes::start(&env).await;
    // Exported from start, before any conflict.
    assert_eq!(p.counted("LAST_WRITE_WINS", "applied").await, Some(0.0));
    p.send("alice", "g", create_n1("c1")).await;
    let moved = update("a1", 1, json!({"position": {"x": 5, "y": 5}}));
    p.send("alice", "g", moved).await;
    let outcome = p
        .send(
            "bob",
            "g",
            update("b1", 1, json!({"position": {"x": 9, "y": 9}})),
        )
        .await;
    // Applied, and not reported to bob as a CONFLICT: the strategy says so.
    assert_eq!(outcome["status"], "applied");
    assert_eq!(outcome["conflicts"], json!([]));
    let list = p.conflicts("g", "").await;
    let c = &list["conflicts"][0];
    assert_eq!(c["strategy"], "LAST_WRITE_WINS", "{list}");
    assert_eq!(
        (&c["outcome"], &c["status"]),
        (&json!("applied"), &json!("decided"))
    );
    assert_eq!(c["field"], "/nodes/n1/position");
    assert_eq!(c["clientValue"], json!({"x": 9, "y": 9}));
    assert_eq!(c["serverValue"], json!({"x": 5, "y": 5}));
    assert_eq!(c["version"], 3);
    assert_eq!(p.counted("LAST_WRITE_WINS", "applied").await, Some(1.0));
    // A command without a conflict logs nothing.
    p.send(
        "bob",
        "g",
        update("b2", 3, json!({"position": {"x": 1, "y": 1}})),
    )
    .await;
    assert_eq!(
        p.conflicts("g", "").await["conflicts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_changes_answer_304_for_the_current_etag_and_200_after_a_change() {
    let env = TestEnv::start().await;
    let p = Processes::start(&env).await;
    p.send("alice", "g", create_n1("c1")).await;
    let client = reqwest::Client::new();
    let get = |path: &str, tag: Option<&str>| {
        let mut req = client
            .get(format!("{}/api/v2/graphs/g/{path}", p.gateway))
            .bearer_auth(p.token("alice"));
        if let Some(t) = tag {
            req = req.header("If-None-Match", t);
        }
        req.send()
    };
    let first = get("state", None).await.unwrap();
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = first.json().await.unwrap();
    assert_eq!(tag, format!("\"{}:1\"", body["epoch"].as_str().unwrap()));
    // Served again (from the cache) with the same tag and body.
    let again = get("state", None).await.unwrap();
    assert_eq!(again.headers()["etag"], tag.as_str());
    assert_eq!(again.json::<Value>().await.unwrap(), body);

    let same = get("state", Some(&tag)).await.unwrap();
    assert_eq!(same.status(), 304);
    assert_eq!(same.headers()["etag"], tag.as_str());
    assert!(same.bytes().await.unwrap().is_empty());
    let changes = get("changes?since=0", Some(&tag)).await.unwrap();
    assert_eq!(changes.status(), 304);

    let moved = update("a1", 1, json!({"position": {"x": 5, "y": 5}}));
    p.send("alice", "g", moved).await;
    let after = get("state", Some(&tag)).await.unwrap();
    assert_eq!(after.status(), 200);
    let new_tag = after.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(new_tag, tag.replace(":1\"", ":2\""));
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["nodes"][0]["position"], json!({"x": 5, "y": 5}));
    let changes = get("changes?since=0", Some(&tag)).await.unwrap();
    assert_eq!(changes.status(), 200);
    assert_eq!(changes.headers()["etag"], new_tag.as_str());
    assert_eq!(
        changes.json::<Value>().await.unwrap()["changes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// The store alone (`apply_as`): the rarer paths of the log.
mod store {
    use super::*;
    use common::apply_as;
    use graphq::graph::{ConflictFilter, GraphSettings, GraphStore, Strategy};

    async fn list(store: &GraphStore, status: Option<&str>) -> Vec<Value> {
        let filter = ConflictFilter {
            status: status.map(str::to_string),
            ..Default::default()
        };
        store.conflicts("g", &filter).await.unwrap().conflicts
    }

    fn manual_store(env: &TestEnv) -> GraphStore {
        let settings = GraphSettings {
            conflicts: [
                ("node.data.title".to_string(), Strategy::Manual),
                ("viewport".to_string(), Strategy::Manual),
            ]
            .into(),
            ..GraphSettings::default()
        };
        GraphStore::new(env.redis.clone(), env.keys.clone(), settings)
    }

    fn title(op: &str, base: u64, value: &str) -> Value {
        update(op, base, json!({"data": {"title": value}}))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_manual_conflict_supersedes_the_open_one_and_undo_resolves_it() {
        let env = TestEnv::start().await;
        let store = manual_store(&env);
        apply_as(&store, "g", "alice", create_n1("c1")).await;
        apply_as(&store, "g", "bob", title("b1", 0, "bob's")).await;
        apply_as(&store, "g", "carol", title("k1", 0, "carol's")).await;
        let all = list(&store, None).await;
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0]["status"], "resolved");
        assert_eq!(all[0]["resolution"]["supersededBy"], all[1]["id"]);
        assert_eq!(all[0]["resolution"]["value"], Value::Null);
        assert_eq!(all[1]["status"], "open");
        assert_eq!(all[1]["clientValue"], "carol's");

        // Alice changes the title and undoes it: the undo writes the field too.
        apply_as(&store, "g", "alice", title("a1", 1, "second")).await;
        let resolved = list(&store, Some("resolved")).await;
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[1]["resolution"]["value"], "second");
        assert_eq!(list(&store, Some("open")).await, Vec::<Value>::new());
        apply_as(&store, "g", "bob", title("b2", 0, "again")).await;
        assert_eq!(list(&store, Some("open")).await.len(), 1);
        let undo = json!({"operationId": "a2", "type": "UNDO", "payload": {}});
        apply_as(&store, "g", "alice", undo).await;
        let last = list(&store, None).await.pop().unwrap();
        assert_eq!(last["status"], "resolved", "{last}");
        assert_eq!(last["resolution"]["value"], "first");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_viewport_waits_too_and_a_command_reverted_for_another_reason_logs_nothing() {
        let env = TestEnv::start().await;
        let store = manual_store(&env);
        let viewport = |op: &str, base: u64, zoom: u64| {
            json!({"operationId": op, "type": "UPDATE_VIEWPORT", "baseVersion": base,
                "payload": {"x": 0, "y": 0, "zoom": zoom}})
        };
        apply_as(&store, "g", "alice", viewport("a1", 0, 1)).await;
        apply_as(&store, "g", "bob", viewport("b1", 0, 2)).await;
        let open = list(&store, Some("open")).await;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["field"], "/viewport");
        assert_eq!(open[0]["serverValue"]["zoom"], 1);
        apply_as(&store, "g", "alice", viewport("a2", 1, 3)).await;
        assert_eq!(list(&store, Some("open")).await, Vec::<Value>::new());

        // A batch whose conflict is followed by a missing node: nothing applied, nothing logged.
        apply_as(&store, "g", "alice", create_n1("c1")).await;
        let batch = json!({"operationId": "b2", "type": "BATCH_UPDATE", "baseVersion": 0,
            "payload": {"operations": [
                {"type": "UPDATE_NODE", "payload": {"id": "n1", "patch": {"data": {"title": "x"}}}},
                {"type": "DELETE_NODE", "payload": {"id": "ghost"}}]}});
        let before = list(&store, None).await.len();
        apply_as(&store, "g", "bob", batch).await;
        assert_eq!(list(&store, None).await.len(), before);
    }
}
