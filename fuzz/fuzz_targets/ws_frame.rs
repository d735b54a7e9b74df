//! Untrusted WebSocket text frames → the pure part of the gateway's message
//! dispatch (src/gateway/ws.rs `on_text`): JSON, the message `type`, then
//! `graph::command::from_value` for COMMAND. Never panics, and a command the
//! socket accepts is one HTTP accepts too: its canonical text, posted as a
//! body, parses to the same command.
#![no_main]

use graphq::graph::command::{MAX_COMMAND_BYTES, from_value, parse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Text frames reach the gateway as UTF-8 (tungstenite checks).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(kind) = msg.get("type").and_then(Value::as_str) else {
        return;
    };
    if kind != "COMMAND" {
        return;
    }
    let Some(raw) = msg.get("command") else {
        return;
    };
    let Ok(cmd) = from_value(raw) else {
        return;
    };
    // The gateway refuses larger ones (TOO_LARGE), as HTTP does.
    if cmd.canonical.len() > MAX_COMMAND_BYTES {
        return;
    }
    let http = parse(cmd.canonical.as_bytes())
        .unwrap_or_else(|r| panic!("accepted over WebSocket, refused over HTTP: {r}"));
    assert_eq!(http.op, cmd.op);
    assert_eq!(http.operation_id, cmd.operation_id);
    assert_eq!(http.base_version, cmd.base_version);
    assert_eq!(http.canonical, cmd.canonical);
});
