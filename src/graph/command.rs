//! Commands: what a client may send, checked before anything is queued.
//!
//! [`parse`] turns untrusted bytes into a [`Command`] or a [`Rejection`] that
//! names the offending field and a stable code; a key given twice in an
//! object is refused ([`check_unique_keys`]). The gateway calls it before
//! queueing; the worker calls it again before applying (defence in depth).
//! [`Command::script_op`] encodes a command for `lua/apply_command.lua`: every
//! user value travels as canonical JSON text, which the script splices into
//! stored entities without re-encoding, so Lua and Rust agree byte for byte.

use serde::Serialize;
use serde_json::{Map, Number, Value, json};

mod unique_keys;
pub use unique_keys::check as check_unique_keys;

/// Largest accepted command, in bytes of JSON.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Deepest nesting allowed inside `data` (a flat object is depth 1).
pub const MAX_DATA_DEPTH: usize = 8;
/// Most operations in one BATCH_UPDATE.
pub const MAX_BATCH_OPS: usize = 500;
/// Longest `type` string.
pub const MAX_TYPE_LEN: usize = 128;

/// Why a command was refused before queueing. `code` is stable; `field` is a
/// dotted path into the command (`payload.node.position.x`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message} ({code})")]
pub struct Rejection {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

fn reject(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        field: field.into(),
        message: message.into(),
    }
}

/// A validated command.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub operation_id: String,
    /// The graph version the client based the command on; absent means "the
    /// current one" (no concurrent change can be detected).
    pub base_version: Option<u64>,
    /// Client clock, ms since the Unix epoch; informational.
    pub timestamp: Option<i64>,
    pub op: Op,
    /// The command as received, re-serialized canonically (sorted keys).
    pub canonical: String,
}

/// `x`/`y` (and `zoom`) as numbers in the client's own notation.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub x: Number,
    pub y: Number,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    CreateNode {
        id: String,
        node_type: Option<String>,
        position: Point,
        data: Map<String, Value>,
    },
    UpdateNode {
        id: String,
        /// `Some(None)` clears the type.
        node_type: Option<Option<String>>,
        position: Option<Point>,
        /// Keys to set, and keys set to `null` (removed).
        data: Option<Map<String, Value>>,
    },
    DeleteNode {
        id: String,
    },
    CreateEdge {
        id: String,
        source: String,
        target: String,
        edge_type: Option<String>,
        data: Map<String, Value>,
    },
    UpdateEdge {
        id: String,
        edge_type: Option<Option<String>>,
        data: Option<Map<String, Value>>,
    },
    DeleteEdge {
        id: String,
    },
    UpdateViewport {
        x: Number,
        y: Number,
        zoom: Number,
    },
    Batch(Vec<Op>),
    Undo,
    Redo,
}

/// Every command type, as clients write it.
pub const COMMAND_TYPES: [&str; 10] = [
    "CREATE_NODE",
    "UPDATE_NODE",
    "DELETE_NODE",
    "CREATE_EDGE",
    "UPDATE_EDGE",
    "DELETE_EDGE",
    "UPDATE_VIEWPORT",
    "BATCH_UPDATE",
    "UNDO",
    "REDO",
];

impl Op {
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::CreateNode { .. } => "CREATE_NODE",
            Op::UpdateNode { .. } => "UPDATE_NODE",
            Op::DeleteNode { .. } => "DELETE_NODE",
            Op::CreateEdge { .. } => "CREATE_EDGE",
            Op::UpdateEdge { .. } => "UPDATE_EDGE",
            Op::DeleteEdge { .. } => "DELETE_EDGE",
            Op::UpdateViewport { .. } => "UPDATE_VIEWPORT",
            Op::Batch(_) => "BATCH_UPDATE",
            Op::Undo => "UNDO",
            Op::Redo => "REDO",
        }
    }
}

/// True for an entity id: `[A-Za-z0-9_.:-]{1,128}`.
pub fn is_entity_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// True for a graph id: `[A-Za-z0-9_.-]{1,128}` (no `:`, which separates key segments).
pub fn is_graph_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses and validates one command from JSON bytes.
pub fn parse(bytes: &[u8]) -> Result<Command, Rejection> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(reject(
            "TOO_LARGE",
            "",
            format!(
                "command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                bytes.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| reject("INVALID_JSON", "", format!("not valid JSON: {e}")))?;
    check_unique_keys(bytes)?;
    from_value(&value)
}

/// Validates a command already parsed as JSON (e.g. inside a WebSocket frame).
pub fn from_value(value: &Value) -> Result<Command, Rejection> {
    let obj = value
        .as_object()
        .ok_or_else(|| reject("INVALID_TYPE", "", "a command is a JSON object"))?;
    let operation_id = id_field(obj, "operationId", "operationId")?;
    let kind = str_field(obj, "type", "type")?;
    let base_version = match obj.get("baseVersion") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            reject(
                "INVALID_TYPE",
                "baseVersion",
                "baseVersion is a non-negative integer",
            )
        })?),
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let t = v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0 && *t < 1e15)
                .ok_or_else(|| {
                    reject(
                        "INVALID_VALUE",
                        "timestamp",
                        "timestamp is ms since the Unix epoch",
                    )
                })?;
            Some(t as i64)
        }
    };
    let empty = Value::Object(Map::new());
    let payload = obj.get("payload").unwrap_or(&empty);
    let op = parse_op(kind, payload, "payload", true)?;
    Ok(Command {
        operation_id,
        base_version,
        timestamp,
        op,
        canonical: serde_json::to_string(value).unwrap_or_default(),
    })
}

fn parse_op(kind: &str, payload: &Value, at: &str, top: bool) -> Result<Op, Rejection> {
    let p = payload
        .as_object()
        .ok_or_else(|| reject("INVALID_TYPE", at, "payload is a JSON object"))?;
    let f = |name: &str| format!("{at}.{name}");
    Ok(match kind {
        "CREATE_NODE" => {
            only(p, at, &["node"])?;
            let node = object(p, "node", &f("node"))?;
            let at = f("node");
            only(node, &at, &["id", "type", "position", "data"])?;
            Op::CreateNode {
                id: id_field(node, "id", &format!("{at}.id"))?,
                node_type: opt_type(node, &format!("{at}.type"))?.flatten(),
                position: point(node.get("position"), &format!("{at}.position"), true)?
                    .ok_or_else(|| {
                        reject(
                            "MISSING_FIELD",
                            format!("{at}.position"),
                            "position is required",
                        )
                    })?,
                data: data_object(node.get("data"), &format!("{at}.data"), false)?
                    .unwrap_or_default(),
            }
        }
        "UPDATE_NODE" => {
            only(p, at, &["id", "patch"])?;
            let id = id_field(p, "id", &f("id"))?;
            let patch = object(p, "patch", &f("patch"))?;
            let pat = f("patch");
            only(patch, &pat, &["position", "type", "data"])?;
            let op = Op::UpdateNode {
                id,
                node_type: opt_type(patch, &format!("{pat}.type"))?,
                position: point(patch.get("position"), &format!("{pat}.position"), false)?,
                data: data_object(patch.get("data"), &format!("{pat}.data"), true)?,
            };
            if patch.is_empty() {
                return Err(reject("EMPTY_PATCH", pat, "the patch changes nothing"));
            }
            op
        }
        "DELETE_NODE" => {
            only(p, at, &["id"])?;
            Op::DeleteNode {
                id: id_field(p, "id", &f("id"))?,
            }
        }
        "CREATE_EDGE" => {
            only(p, at, &["edge"])?;
            let edge = object(p, "edge", &f("edge"))?;
            let at = f("edge");
            only(edge, &at, &["id", "source", "target", "type", "data"])?;
            Op::CreateEdge {
                id: id_field(edge, "id", &format!("{at}.id"))?,
                source: id_field(edge, "source", &format!("{at}.source"))?,
                target: id_field(edge, "target", &format!("{at}.target"))?,
                edge_type: opt_type(edge, &format!("{at}.type"))?.flatten(),
                data: data_object(edge.get("data"), &format!("{at}.data"), false)?
                    .unwrap_or_default(),
            }
        }
        "UPDATE_EDGE" => {
            only(p, at, &["id", "patch"])?;
            let id = id_field(p, "id", &f("id"))?;
            let patch = object(p, "patch", &f("patch"))?;
            let pat = f("patch");
            only(patch, &pat, &["type", "data"])?;
            if patch.is_empty() {
                return Err(reject("EMPTY_PATCH", pat, "the patch changes nothing"));
            }
            Op::UpdateEdge {
                id,
                edge_type: opt_type(patch, &format!("{pat}.type"))?,
                data: data_object(patch.get("data"), &format!("{pat}.data"), true)?,
            }
        }
        "DELETE_EDGE" => {
            only(p, at, &["id"])?;
            Op::DeleteEdge {
                id: id_field(p, "id", &f("id"))?,
            }
        }
        "UPDATE_VIEWPORT" => {
            only(p, at, &["x", "y", "zoom"])?;
            let zoom = number(p, "zoom", &f("zoom"))?;
            if zoom.as_f64().is_none_or(|z| z <= 0.0) {
                return Err(reject(
                    "INVALID_VALUE",
                    f("zoom"),
                    "zoom must be greater than 0",
                ));
            }
            Op::UpdateViewport {
                x: number(p, "x", &f("x"))?,
                y: number(p, "y", &f("y"))?,
                zoom,
            }
        }
        "BATCH_UPDATE" if top => {
            only(p, at, &["operations"])?;
            let ops = p
                .get("operations")
                .ok_or_else(|| reject("MISSING_FIELD", f("operations"), "operations is required"))?
                .as_array()
                .ok_or_else(|| reject("INVALID_TYPE", f("operations"), "operations is an array"))?;
            if ops.is_empty() {
                return Err(reject(
                    "EMPTY_PATCH",
                    f("operations"),
                    "a batch needs at least one operation",
                ));
            }
            if ops.len() > MAX_BATCH_OPS {
                return Err(reject(
                    "TOO_MANY_OPERATIONS",
                    f("operations"),
                    format!(
                        "{} operations; a batch holds at most {MAX_BATCH_OPS}",
                        ops.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(ops.len());
            for (i, item) in ops.iter().enumerate() {
                let iat = format!("{at}.operations.{i}");
                let o = item.as_object().ok_or_else(|| {
                    reject("INVALID_TYPE", iat.as_str(), "an operation is an object")
                })?;
                only(o, &iat, &["type", "payload"])?;
                let k = str_field(o, "type", &format!("{iat}.type"))?;
                if matches!(k, "BATCH_UPDATE" | "UNDO" | "REDO") {
                    return Err(reject(
                        "INVALID_VALUE",
                        format!("{iat}.type"),
                        format!("{k} cannot be part of a batch"),
                    ));
                }
                let empty = Value::Object(Map::new());
                out.push(parse_op(
                    k,
                    o.get("payload").unwrap_or(&empty),
                    &format!("{iat}.payload"),
                    false,
                )?);
            }
            Op::Batch(out)
        }
        "UNDO" | "REDO" if top => {
            only(p, at, &[])?;
            if kind == "UNDO" { Op::Undo } else { Op::Redo }
        }
        other => {
            return Err(reject(
                "UNKNOWN_COMMAND",
                at.replace("payload", "type"),
                format!("unknown command type `{other}`"),
            ));
        }
    })
}

fn only(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), Rejection> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reject(
            "UNKNOWN_FIELD",
            format!("{at}.{k}"),
            format!("unknown field `{k}`"),
        )),
        None => Ok(()),
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a str, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(reject("MISSING_FIELD", at, format!("{name} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(reject("INVALID_TYPE", at, format!("{name} is a string"))),
    }
}

fn id_field(obj: &Map<String, Value>, name: &str, at: &str) -> Result<String, Rejection> {
    let s = str_field(obj, name, at)?;
    if !is_entity_id(s) {
        return Err(reject(
            "INVALID_ID",
            at,
            "ids are 1-128 characters of A-Z a-z 0-9 _ . : -",
        ));
    }
    Ok(s.to_string())
}

fn object<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(reject("MISSING_FIELD", at, format!("{name} is required"))),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(reject("INVALID_TYPE", at, format!("{name} is an object"))),
    }
}

/// `type`: absent → None; null → Some(None); string → Some(Some).
fn opt_type(obj: &Map<String, Value>, at: &str) -> Result<Option<Option<String>>, Rejection> {
    match obj.get("type") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_TYPE_LEN => {
            Ok(Some(Some(s.clone())))
        }
        Some(Value::String(_)) => Err(reject(
            "INVALID_VALUE",
            at,
            format!("type is 1-{MAX_TYPE_LEN} characters"),
        )),
        Some(_) => Err(reject("INVALID_TYPE", at, "type is a string")),
    }
}

fn number(obj: &Map<String, Value>, name: &str, at: &str) -> Result<Number, Rejection> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(reject("MISSING_FIELD", at, format!("{name} is required"))),
        Some(Value::Number(n)) => {
            if n.as_f64().is_some_and(f64::is_finite) {
                Ok(n.clone())
            } else {
                Err(reject(
                    "NOT_FINITE",
                    at,
                    format!("{name} must be a finite number"),
                ))
            }
        }
        Some(_) => Err(reject("INVALID_TYPE", at, format!("{name} is a number"))),
    }
}

fn point(v: Option<&Value>, at: &str, required: bool) -> Result<Option<Point>, Rejection> {
    match v {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(reject("MISSING_FIELD", at, "position is required")),
        Some(Value::Object(o)) => {
            only(o, at, &["x", "y"])?;
            Ok(Some(Point {
                x: number(o, "x", &format!("{at}.x"))?,
                y: number(o, "y", &format!("{at}.y"))?,
            }))
        }
        Some(_) => Err(reject("INVALID_TYPE", at, "position is an object {x, y}")),
    }
}

/// `data`: an object whose values nest at most [`MAX_DATA_DEPTH`] deep.
/// In a patch, `null` values mean "remove this key".
fn data_object(
    v: Option<&Value>,
    at: &str,
    patch: bool,
) -> Result<Option<Map<String, Value>>, Rejection> {
    let obj = match v {
        None => return Ok(None),
        Some(Value::Null) if patch => return Err(reject("INVALID_TYPE", at, "data is an object")),
        Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(reject("INVALID_TYPE", at, "data is an object")),
    };
    for (k, val) in obj {
        if k.is_empty() || k.len() > 256 {
            return Err(reject(
                "INVALID_VALUE",
                format!("{at}.{k}"),
                "data keys are 1-256 bytes",
            ));
        }
        if !patch && val.is_null() {
            continue;
        }
        check_value(val, &format!("{at}.{k}"), 2)?;
    }
    let mut out = obj.clone();
    if !patch {
        out.retain(|_, v| !v.is_null());
    }
    Ok(Some(out))
}

fn check_value(v: &Value, at: &str, depth: usize) -> Result<(), Rejection> {
    match v {
        Value::Number(n) if !n.as_f64().is_some_and(f64::is_finite) => {
            Err(reject("NOT_FINITE", at, "numbers must be finite"))
        }
        Value::Array(items) => {
            if depth > MAX_DATA_DEPTH {
                return Err(reject(
                    "TOO_DEEP",
                    at,
                    format!("data nests at most {MAX_DATA_DEPTH} levels"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{at}.{i}"), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if depth > MAX_DATA_DEPTH {
                return Err(reject(
                    "TOO_DEEP",
                    at,
                    format!("data nests at most {MAX_DATA_DEPTH} levels"),
                ));
            }
            for (k, item) in map {
                check_value(item, &format!("{at}.{k}"), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Canonical JSON text of a value: compact, object keys sorted.
pub fn canonical(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn point_text(p: &Point) -> String {
    canonical(&json!({"x": p.x, "y": p.y}))
}

pub(crate) fn type_text(t: &Option<String>) -> String {
    canonical(&t.as_ref().map_or(Value::Null, |s| Value::String(s.clone())))
}

/// Data pairs as `[quoted key, value text]`, sorted by key; in a patch, keys
/// set to null go to the second list (quoted keys to remove).
pub(crate) fn data_texts(data: &Map<String, Value>) -> (Vec<[String; 2]>, Vec<String>) {
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for (k, v) in data {
        let qk = canonical(&Value::String(k.clone()));
        if v.is_null() {
            unset.push(qk);
        } else {
            set.push([qk, canonical(v)]);
        }
    }
    (set, unset)
}

impl Op {
    /// The operation as `apply_command.lua` reads it (decoded there with cjson;
    /// user values stay opaque text).
    pub fn script_op(&self) -> Value {
        match self {
            Op::CreateNode {
                id,
                node_type,
                position,
                data,
            } => {
                let (set, _) = data_texts(data);
                json!({"t": "CREATE_NODE", "id": id, "type": type_text(node_type), "position": point_text(position), "data": set})
            }
            Op::UpdateNode {
                id,
                node_type,
                position,
                data,
            } => {
                let (set, unset) = data.as_ref().map(data_texts).unwrap_or_default();
                let mut op = json!({"t": "UPDATE_NODE", "id": id, "data": set, "unset": unset});
                if let Some(t) = node_type {
                    op["type"] = Value::String(type_text(t));
                }
                if let Some(p) = position {
                    op["position"] = Value::String(point_text(p));
                }
                op["hasData"] = Value::Bool(data.is_some());
                op
            }
            Op::DeleteNode { id } => json!({"t": "DELETE_NODE", "id": id}),
            Op::CreateEdge {
                id,
                source,
                target,
                edge_type,
                data,
            } => {
                let (set, _) = data_texts(data);
                json!({"t": "CREATE_EDGE", "id": id, "source": source, "target": target, "type": type_text(edge_type), "data": set})
            }
            Op::UpdateEdge {
                id,
                edge_type,
                data,
            } => {
                let (set, unset) = data.as_ref().map(data_texts).unwrap_or_default();
                let mut op = json!({"t": "UPDATE_EDGE", "id": id, "data": set, "unset": unset});
                if let Some(t) = edge_type {
                    op["type"] = Value::String(type_text(t));
                }
                op["hasData"] = Value::Bool(data.is_some());
                op
            }
            Op::DeleteEdge { id } => json!({"t": "DELETE_EDGE", "id": id}),
            Op::UpdateViewport { x, y, zoom } => {
                json!({"t": "UPDATE_VIEWPORT", "viewport": canonical(&json!({"x": x, "y": y, "zoom": zoom}))})
            }
            Op::Batch(ops) => {
                json!({"t": "BATCH_UPDATE", "ops": ops.iter().map(Op::script_op).collect::<Vec<_>>()})
            }
            Op::Undo => json!({"t": "UNDO"}),
            Op::Redo => json!({"t": "REDO"}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> Rejection {
        parse(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_valid_update_parses() {
        let c = parse(br#"{"operationId":"op-1","type":"UPDATE_NODE","payload":{"id":"n1","patch":{"position":{"x":10,"y":20.5},"data":{"a":1,"b":null}}},"baseVersion":41,"timestamp":1763800000000}"#).unwrap();
        assert_eq!(c.operation_id, "op-1");
        assert_eq!(c.base_version, Some(41));
        let Op::UpdateNode { position, data, .. } = &c.op else {
            panic!()
        };
        assert_eq!(position.as_ref().unwrap().y.as_f64(), Some(20.5));
        assert!(data.as_ref().unwrap()["b"].is_null());
        let s = c.op.script_op();
        assert_eq!(s["position"], r#"{"x":10,"y":20.5}"#);
        assert_eq!(s["data"], json!([["\"a\"", "1"]]));
        assert_eq!(s["unset"], json!(["\"b\""]));
    }

    #[test]
    fn rejections_name_the_field_and_a_stable_code() {
        let cases = [
            ("not json", "INVALID_JSON", ""),
            ("[]", "INVALID_TYPE", ""),
            (
                r#"{"type":"DELETE_NODE","payload":{"id":"n"}}"#,
                "MISSING_FIELD",
                "operationId",
            ),
            (
                r#"{"operationId":"a b","type":"DELETE_NODE","payload":{"id":"n"}}"#,
                "INVALID_ID",
                "operationId",
            ),
            (
                r#"{"operationId":"o","type":"DROP_TABLE","payload":{}}"#,
                "UNKNOWN_COMMAND",
                "type",
            ),
            (
                r#"{"operationId":"o","type":"DELETE_NODE","payload":{"id":"{x}"}}"#,
                "INVALID_ID",
                "payload.id",
            ),
            (
                r#"{"operationId":"o","type":"CREATE_NODE","payload":{"node":{"id":"n","position":{"x":"1","y":2}}}}"#,
                "INVALID_TYPE",
                "payload.node.position.x",
            ),
            (
                r#"{"operationId":"o","type":"CREATE_NODE","payload":{"node":{"id":"n"}}}"#,
                "MISSING_FIELD",
                "payload.node.position",
            ),
            (
                r#"{"operationId":"o","type":"UPDATE_NODE","payload":{"id":"n","patch":{}}}"#,
                "EMPTY_PATCH",
                "payload.patch",
            ),
            (
                r#"{"operationId":"o","type":"UPDATE_NODE","payload":{"id":"n","patch":{"label":"x"}}}"#,
                "UNKNOWN_FIELD",
                "payload.patch.label",
            ),
            (
                r#"{"operationId":"o","type":"UPDATE_VIEWPORT","payload":{"x":0,"y":0,"zoom":0}}"#,
                "INVALID_VALUE",
                "payload.zoom",
            ),
            (
                r#"{"operationId":"o","type":"UPDATE_VIEWPORT","payload":{"x":1e999,"y":0,"zoom":1}}"#,
                "INVALID_JSON",
                "",
            ),
            (
                r#"{"operationId":"o","type":"CREATE_NODE","payload":{"node":{"id":"n","position":{"x":1,"y":2},"data":{"a":[[[[[[[[[1]]]]]]]]]}}}}"#,
                "TOO_DEEP",
                "payload.node.data.a.0.0.0.0.0.0.0",
            ),
            (
                r#"{"operationId":"o","type":"BATCH_UPDATE","payload":{"operations":[{"type":"UNDO"}]}}"#,
                "INVALID_VALUE",
                "payload.operations.0.type",
            ),
            (
                r#"{"operationId":"o","type":"DELETE_EDGE","payload":{"id":"e"},"baseVersion":-1}"#,
                "INVALID_TYPE",
                "baseVersion",
            ),
        ];
        for (input, code, field) in cases {
            let e = err(input);
            assert_eq!((e.code, e.field.as_str()), (code, field), "{input}: {e}");
        }
    }

    #[test]
    fn size_and_batch_limits_hold() {
        let big = format!(
            r#"{{"operationId":"o","type":"CREATE_NODE","payload":{{"node":{{"id":"n","position":{{"x":1,"y":2}},"data":{{"s":"{}"}}}}}}}}"#,
            "x".repeat(MAX_COMMAND_BYTES)
        );
        assert_eq!(err(&big).code, "TOO_LARGE");
        let op = r#"{"type":"DELETE_NODE","payload":{"id":"n"}}"#;
        let ops = vec![op; MAX_BATCH_OPS + 1].join(",");
        let batch = format!(
            r#"{{"operationId":"o","type":"BATCH_UPDATE","payload":{{"operations":[{ops}]}}}}"#
        );
        assert_eq!(err(&batch).code, "TOO_MANY_OPERATIONS");
        let ops = vec![op; MAX_BATCH_OPS].join(",");
        let batch = format!(
            r#"{{"operationId":"o","type":"BATCH_UPDATE","payload":{{"operations":[{ops}]}}}}"#
        );
        assert!(parse(batch.as_bytes()).is_ok());
    }

    #[test]
    fn depth_eight_is_allowed_nine_is_not() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let cmd = |n| {
            format!(
                r#"{{"operationId":"o","type":"UPDATE_NODE","payload":{{"id":"n","patch":{{"data":{{"a":{}}}}}}}}}"#,
                nest(n)
            )
        };
        assert!(parse(cmd(7).as_bytes()).is_ok());
        assert_eq!(err(&cmd(8)).code, "TOO_DEEP");
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_command() {
        // Found by fuzz/command_parse: without serde_json's float_roundtrip a
        // long mantissa parsed to one f64 and its canonical text to the next.
        let c = parse(br#"{"operationId":"o","type":"UPDATE_NODE","payload":{"id":"n1","patch":{"position":{"x":10,"y":266666666666666666666666666666666666666666666666666660}}}}"#).unwrap();
        let again = parse(c.canonical.as_bytes()).unwrap();
        assert_eq!(again.op, c.op);
        assert_eq!(again.canonical, c.canonical);
    }

    #[test]
    fn ids_follow_their_patterns() {
        assert!(is_entity_id("node:1.a_b-c"));
        assert!(!is_entity_id(""));
        assert!(!is_entity_id(&"a".repeat(129)));
        assert!(!is_entity_id("a b"));
        assert!(is_graph_id("g-1.x_y"));
        assert!(!is_graph_id("g:1"));
        assert!(!is_graph_id("g{1}"));
    }
}
