//! Untrusted bytes → `graph::command::parse`, the check every HTTP command
//! passes before it is queued. Never panics; what it accepts is stable: its
//! canonical text parses again to the same command (the worker re-validates
//! that text), and the script encoding carries only valid JSON texts.
#![no_main]

use graphq::graph::command::{Command, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = parse(data) {
        check_accepted(&cmd);
    }
});

fn check_accepted(cmd: &Command) {
    let again = parse(cmd.canonical.as_bytes())
        .unwrap_or_else(|r| panic!("canonical text refused: {r}: {}", cmd.canonical));
    assert_eq!(again.op, cmd.op, "canonical text means the same command");
    assert_eq!(again.canonical, cmd.canonical, "canonical text is a fixed point");
    let script = cmd.op.script_op();
    check_texts(&script);
}

/// Every user value the script splices is a JSON text of its own.
fn check_texts(v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, item) in m {
                if matches!(k.as_str(), "position" | "type" | "viewport")
                    && let Value::String(text) = item
                {
                    serde_json::from_str::<Value>(text)
                        .unwrap_or_else(|e| panic!("{k} text {text:?}: {e}"));
                }
                if k == "data"
                    && let Value::Array(pairs) = item
                {
                    for pair in pairs {
                        for text in pair.as_array().expect("a [key, value] pair") {
                            serde_json::from_str::<Value>(text.as_str().expect("texts"))
                                .unwrap_or_else(|e| panic!("data text {text}: {e}"));
                        }
                    }
                }
                check_texts(item);
            }
        }
        Value::Array(items) => items.iter().for_each(check_texts),
        _ => {}
    }
}
