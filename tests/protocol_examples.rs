//! docs/protocol.md, "Every command type, by example": each `curl` runs as
//! printed (address and token swapped in) against a live gateway and is
//! applied; each WebSocket frame, sent on its own graph in the same order, is
//! applied too; every command type has an example.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{Stack, TestEnv, ws};
use graphq::auth::Role;
use graphq::gateway::GatewaySettings;
use serde_json::Value;

/// The section's code blocks: (`sh` blocks, `json` blocks), in order.
fn examples() -> (Vec<String>, Vec<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc
        .find("### Every command type, by example")
        .expect("the examples section");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |e| e + 4)];
    let (mut sh, mut json) = (Vec::new(), Vec::new());
    for block in section.split("```").skip(1).step_by(2) {
        if let Some(code) = block.strip_prefix("sh\n") {
            sh.push(code.to_string());
        } else if let Some(code) = block.strip_prefix("json\n") {
            json.push(code.trim().to_string());
        }
    }
    (sh, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_is_applied_as_printed() {
    let env = TestEnv::start().await;
    let stack = Stack::start(&env, GatewaySettings::default()).await;
    let token = stack.token("alice", &["demo"], Role::Editor);
    let (curls, _) = examples();
    let mut types = BTreeSet::new();
    for (i, curl) in curls.iter().enumerate() {
        let script = curl.replace("http://127.0.0.1:3000", &stack.url);
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("TOKEN", &token)
            .output()
            .expect("bash runs curl");
        assert!(out.status.success(), "{script}: {out:?}");
        let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            answer["outcome"]["status"],
            "applied",
            "example {}: {script}\n{answer}",
            i + 1
        );
        assert_eq!(answer["outcome"]["version"], i as u64 + 1);
        let body = script.split("-d '").nth(1).unwrap();
        let cmd: Value = serde_json::from_str(body.trim_end().trim_end_matches('\'')).unwrap();
        types.insert(cmd["type"].as_str().unwrap().to_string());
    }
    let all: BTreeSet<String> = graphq::graph::command::COMMAND_TYPES
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(types, all, "every command type has an example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_websocket_frame_example_is_applied_and_a_resend_is_recognized() {
    let env = TestEnv::start().await;
    let stack = Stack::start(&env, GatewaySettings::default()).await;
    let token = stack.token("alice", &["demo"], Role::Editor);
    let (curls, frames) = examples();
    assert_eq!(frames.len(), curls.len(), "a frame for every curl");
    let mut socket = ws::Client::with_token(&stack.ws, &token).await;
    socket
        .send(serde_json::json!({"type": "SUBSCRIBE", "graphId": "demo", "clientVersion": 0}))
        .await;
    socket.next_of("SYNC").await;
    for (i, frame) in frames.iter().enumerate() {
        let value: Value = serde_json::from_str(frame).expect("a frame is JSON");
        socket.send(value.clone()).await;
        let applied = socket.next_of("COMMAND_APPLIED").await;
        assert_eq!(applied["version"], i as u64 + 1, "frame {}: {frame}", i + 1);
        assert_eq!(applied["operationId"], value["command"]["operationId"]);
    }
    // The first frame again: a resend, not a second application.
    let first: Value = serde_json::from_str(&frames[0]).unwrap();
    socket.send(first).await;
    let accepted = socket
        .next_matching(|m| m["type"] == "ACCEPTED" && m["operationId"] == "ex-1")
        .await;
    assert_eq!(accepted["duplicate"], true, "{accepted}");
}
