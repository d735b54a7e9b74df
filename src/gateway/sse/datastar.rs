//! A graph stream in Datastar's terms: `datastar-patch-signals` events
//! (encoded by the `datastar` crate) that keep a `graph` signal equal to the
//! graph. The first carries the whole graph, `{"graph": {"id", "epoch",
//! "version", "nodes": {id: node}, "edges": {id: edge}, "viewport"}}`; each
//! change after it is a JSON merge patch (RFC 7386) of that object, so
//! folding every patch gives `GET state` (nodes and edges keyed by id,
//! without `checksum`; a key whose value is null is absent, as merge patches
//! have it).

use axum::body::Bytes;
use datastar::prelude::PatchSignals;
use serde_json::{Map, Value, json};

use crate::graph::{Command, Rejection, command};

use super::AppError;
use super::stream::encode;

/// Which of Datastar's event vocabularies a client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Datastar 1.0: `datastar-patch-signals`, a JSON merge patch (a
    /// `null` removes the key).
    Patch,
    /// The client of Datastar's npm package (1.0.0-beta.11, the newest
    /// there): `datastar-merge-signals`, where a `null` stays as a value,
    /// and `datastar-remove-signals` to clear a signal.
    Merge,
}

impl Flavor {
    /// The event that patches `signals` into the client's.
    pub fn event(self, signals: &Value, id: Option<String>) -> Bytes {
        match self {
            Flavor::Patch => {
                let mut e = PatchSignals::new(signals.to_string());
                if let Some(id) = id {
                    e = e.id(id);
                }
                Bytes::from(e.into_datastar_event().to_string())
            }
            // The same `signals` line under the older event name (the
            // `datastar` crate writes only the 1.0 events).
            Flavor::Merge => encode(
                "datastar-merge-signals",
                &format!("signals {signals}"),
                id.as_deref(),
            ),
        }
    }

    /// The event that clears the `graph` signal before a whole graph.
    fn clear(self) -> Bytes {
        match self {
            Flavor::Patch => self.event(&json!({"graph": null}), None),
            Flavor::Merge => encode("datastar-remove-signals", "paths graph", None),
        }
    }
}

/// The command in a Datastar action's body (the page's signals).
pub(super) fn command_of(body: &[u8]) -> Result<Command, Rejection> {
    let refusal = |code, message: &str| Rejection {
        code,
        field: "command".into(),
        message: message.into(),
    };
    let signals: Value = serde_json::from_slice(body)
        .map_err(|_| refusal("INVALID_JSON", "the body is the page's signals as JSON"))?;
    command::check_unique_keys(body)?;
    let Some(raw) = signals.get("command").filter(|c| c.is_object()) else {
        return Err(refusal(
            "MISSING_FIELD",
            "the signals carry the command under `command`",
        ));
    };
    let cmd = command::from_value(raw)?;
    if cmd.canonical.len() > command::MAX_COMMAND_BYTES {
        return Err(refusal("TOO_LARGE", "a command is at most 64 KiB"));
    }
    Ok(cmd)
}

/// The `outcome` signal of a command: accepted, or refused with `err`.
pub(super) fn outcome(operation_id: &str, err: Option<&AppError>) -> Value {
    let (code, message, field) = match err {
        None => (String::new(), String::new(), String::new()),
        Some(e) => (
            e.code().to_string(),
            e.message(),
            match e {
                AppError::Rejected(r) => r.field.clone(),
                _ => String::new(),
            },
        ),
    };
    json!({"operationId": operation_id, "accepted": err.is_none(),
        "error": {"code": code, "message": message, "field": field}})
}

/// One Datastar stream's position.
pub(super) struct Signals {
    flavor: Flavor,
    /// A whole graph replaces what the client holds, which a merge patch
    /// alone cannot do: once the client may hold a graph (it resumed, or a
    /// graph was sent before), `{"graph": null}` goes first.
    holds_graph: bool,
}

impl Signals {
    pub fn new(flavor: Flavor, resumed: bool) -> Signals {
        Signals {
            flavor,
            holds_graph: resumed,
        }
    }

    /// The events of one frame (its `type` is `kind`); `id` is its event id.
    pub fn translate(&mut self, kind: &str, text: &str, id: Option<String>) -> Vec<Bytes> {
        if kind != "SYNC" && kind != "COMMAND_APPLIED" {
            return Vec::new();
        }
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let patches = match kind {
            "SYNC" => self.sync(&frame, &mut events),
            _ => vec![change_patch(&frame["change"], &frame["version"])],
        };
        let last = patches.len().saturating_sub(1);
        for (i, p) in patches.iter().enumerate() {
            // Only the last one stands for the whole frame's version.
            events.push(self.flavor.event(p, id.clone().filter(|_| i == last)));
        }
        events
    }

    /// The patches of a SYNC; a clearing event first goes to `events`.
    fn sync(&mut self, frame: &Value, events: &mut Vec<Bytes>) -> Vec<Value> {
        match frame["status"].as_str() {
            Some("reset") => {
                if self.holds_graph {
                    events.push(self.flavor.clear());
                }
                self.holds_graph = true;
                vec![json!({"graph": whole_graph(&frame["state"])})]
            }
            Some("behind") => frame["changes"]
                .as_array()
                .map(|changes| {
                    changes
                        .iter()
                        .map(|c| change_patch(&c["change"], &c["version"]))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// The `graph` signal of a state (`GET state`, `SYNC reset`).
pub(super) fn whole_graph(state: &Value) -> Value {
    json!({
        "id": state["graphId"],
        "epoch": state["epoch"],
        "version": state["version"],
        "nodes": by_id(&state["nodes"]),
        "edges": by_id(&state["edges"]),
        "viewport": state["viewport"],
    })
}

fn by_id(list: &Value) -> Value {
    let mut map = Map::new();
    for e in list.as_array().into_iter().flatten() {
        if let Some(id) = e["id"].as_str() {
            map.insert(id.to_string(), e.clone());
        }
    }
    Value::Object(map)
}

/// The merge patch of one change (docs/graph.md, The change): each created
/// or updated entity as the difference from its value before (the change's
/// `undo`), each removed one `null`, the viewport when it changed.
pub(super) fn change_patch(change: &Value, version: &Value) -> Value {
    let undo = &change["undo"];
    let mut graph = Map::new();
    graph.insert("version".into(), version.clone());
    for (list, removed, kind) in [
        ("nodes", "removedNodes", "nodes"),
        ("edges", "removedEdges", "edges"),
    ] {
        let mut patch = Map::new();
        for e in change[list].as_array().into_iter().flatten() {
            if let Some(id) = e["id"].as_str() {
                patch.insert(id.to_string(), diff(&undo[kind][id], e));
            }
        }
        for id in change[removed].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str() {
                patch.insert(id.to_string(), Value::Null);
            }
        }
        if !patch.is_empty() {
            graph.insert(kind.into(), Value::Object(patch));
        }
    }
    if let Some(viewport) = change.get("viewport") {
        graph.insert("viewport".into(), diff(&undo["viewport"], viewport));
    }
    json!({ "graph": graph })
}

/// The merge patch that turns `old` into `new` (RFC 7386, 2): keys gone
/// are `null`, objects on both sides are compared key by key.
fn diff(old: &Value, new: &Value) -> Value {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return new.clone();
    };
    let mut patch = Map::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in new {
        match old.get(k) {
            Some(o) if o == v => {}
            Some(o) => {
                patch.insert(k.clone(), diff(o, v));
            }
            None => {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(patch)
}
