//! `graphq graph load`: a graph's state in the shape `GET state` answers
//! (and `graphq graph dump` prints), checked entity by entity with the rules
//! of the commands that create them, and turned into the exact texts the
//! store keeps. The store then writes them in one script
//! (`GraphStore::load`).
//!
//! Stored entities are written as `apply_command.lua` writes them (`id`,
//! `source`/`target`, `type`, `position`, `data` with its keys sorted,
//! `version`, `createdBy`, `updatedBy`, `updatedAt`), so loading a dump and
//! dumping again gives the same nodes, edges and viewport.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::command::{self, Op, Rejection, canonical, data_texts, point_text, type_text};
use super::{GraphSettings, RawGraph, checksum_of};

/// A graph ready to be written: the text of every field the store keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    /// Entities, viewport, version and checksum (the epoch is left empty:
    /// the store gives the graph a new one).
    pub graph: RawGraph,
    /// Node id → JSON array of the ids of its edges (nodes with edges only).
    pub adjacency: BTreeMap<String, String>,
    /// `n:ID` / `e:ID` → the per-field versions conflict detection reads:
    /// every field at its entity's version, by its `updatedBy`.
    pub field_versions: BTreeMap<String, String>,
}

fn refuse(code: &'static str, field: String, message: String) -> Rejection {
    Rejection {
        code,
        field,
        message,
    }
}

/// Checks a dumped state and builds what the store writes. Field paths in
/// refusals point into the state (`nodes.3.position.x`).
pub fn prepare(state: &Value, settings: &GraphSettings) -> Result<Import, Rejection> {
    let obj = state.as_object().ok_or_else(|| {
        refuse(
            "INVALID_TYPE",
            String::new(),
            "a graph state is a JSON object".into(),
        )
    })?;
    let version = match obj.get("version") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            refuse(
                "INVALID_TYPE",
                "version".into(),
                "version is a non-negative integer".into(),
            )
        })?,
    };
    let list = |name: &str| -> Result<Vec<Value>, Rejection> {
        match obj.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(refuse(
                "INVALID_TYPE",
                name.into(),
                format!("{name} is an array"),
            )),
        }
    };
    let (nodes, edges) = (list("nodes")?, list("edges")?);
    for (name, items, max) in [
        ("nodes", &nodes, settings.max_nodes),
        ("edges", &edges, settings.max_edges),
    ] {
        if items.len() as u64 > max {
            return Err(refuse(
                "LIMIT_EXCEEDED",
                name.into(),
                format!("{} {name}; a graph may hold {max}", items.len()),
            ));
        }
    }
    let mut import = Import {
        graph: RawGraph {
            version,
            ..RawGraph::default()
        },
        adjacency: BTreeMap::new(),
        field_versions: BTreeMap::new(),
    };
    let mut adjacency: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let at = format!("nodes.{i}");
        let (op, stamp) = entity(node, &at, "node", version)?;
        let Op::CreateNode {
            id,
            node_type,
            position,
            data,
        } = op
        else {
            unreachable!("a CREATE_NODE payload parses to CreateNode");
        };
        let text = format!(
            "{{\"id\":{},\"type\":{},\"position\":{},\"data\":{}{}}}",
            canonical(&Value::String(id.clone())),
            type_text(&node_type),
            point_text(&position),
            data_text(&data),
            stamp.text()
        );
        let fv = field_versions(&data, &stamp, true);
        insert(&mut import.graph.nodes, &id, text, &at, "node")?;
        import.field_versions.insert(format!("n:{id}"), fv);
    }
    for (i, edge) in edges.iter().enumerate() {
        let at = format!("edges.{i}");
        let (op, stamp) = entity(edge, &at, "edge", version)?;
        let Op::CreateEdge {
            id,
            source,
            target,
            edge_type,
            data,
        } = op
        else {
            unreachable!("a CREATE_EDGE payload parses to CreateEdge");
        };
        for (end, node) in [("source", &source), ("target", &target)] {
            if !import.graph.nodes.contains_key(node) {
                return Err(refuse(
                    "NOT_FOUND",
                    format!("{at}.{end}"),
                    format!("edge {id}: node {node} is not among the nodes"),
                ));
            }
        }
        let text = format!(
            "{{\"id\":{},\"source\":{},\"target\":{},\"type\":{},\"data\":{}{}}}",
            canonical(&Value::String(id.clone())),
            canonical(&Value::String(source.clone())),
            canonical(&Value::String(target.clone())),
            type_text(&edge_type),
            data_text(&data),
            stamp.text()
        );
        let fv = field_versions(&data, &stamp, false);
        insert(&mut import.graph.edges, &id, text, &at, "edge")?;
        import.field_versions.insert(format!("e:{id}"), fv);
        adjacency
            .entry(source.clone())
            .or_default()
            .push(id.clone());
        if target != source {
            adjacency.entry(target).or_default().push(id);
        }
    }
    import.adjacency = adjacency
        .into_iter()
        .map(|(node, ids)| (node, canonical(&json!(ids))))
        .collect();
    import.graph.viewport = match obj.get("viewport") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let cmd = command::from_value(
                &json!({"operationId": "load", "type": "UPDATE_VIEWPORT", "payload": v}),
            )
            .map_err(|r| relocate(r, "payload", "viewport"))?;
            match cmd.op {
                Op::UpdateViewport { x, y, zoom } => {
                    Some(canonical(&json!({"x": x, "y": y, "zoom": zoom})))
                }
                _ => unreachable!("an UPDATE_VIEWPORT payload parses to UpdateViewport"),
            }
        }
    };
    import.graph.checksum = checksum_of(&import.graph);
    Ok(import)
}

/// Who last wrote an entity, and when: the fields the store stamps.
struct Stamp {
    version: u64,
    created_by: String,
    updated_by: String,
    updated_at: u64,
}

impl Stamp {
    /// The stamp's fields as they end a stored entity.
    fn text(&self) -> String {
        format!(
            ",\"version\":{},\"createdBy\":\"{}\",\"updatedBy\":\"{}\",\"updatedAt\":{}",
            self.version, self.created_by, self.updated_by, self.updated_at
        )
    }
}

/// One dumped node or edge: its content checked as the payload of a
/// CREATE_NODE / CREATE_EDGE command, its stamp checked against `version`.
fn entity(value: &Value, at: &str, kind: &str, version: u64) -> Result<(Op, Stamp), Rejection> {
    let obj = value.as_object().ok_or_else(|| {
        refuse(
            "INVALID_TYPE",
            at.to_string(),
            format!("a {kind} is a JSON object"),
        )
    })?;
    let mut content = Map::new();
    let mut stamp = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "version" | "createdBy" | "updatedBy" | "updatedAt" => {
                stamp.insert(k.clone(), v.clone())
            }
            _ => content.insert(k.clone(), v.clone()),
        };
    }
    let kind_upper = kind.to_ascii_uppercase();
    let cmd = command::from_value(&json!({
        "operationId": "load",
        "type": format!("CREATE_{kind_upper}"),
        "payload": {kind: content},
    }))
    .map_err(|r| relocate(r, &format!("payload.{kind}"), at))?;
    let number = |name: &str| {
        stamp.get(name).and_then(Value::as_u64).ok_or_else(|| {
            refuse(
                "INVALID_TYPE",
                format!("{at}.{name}"),
                format!("{name} is a non-negative integer"),
            )
        })
    };
    let user = |name: &str| {
        stamp
            .get(name)
            .and_then(Value::as_str)
            .filter(|u| command::is_entity_id(u))
            .map(str::to_string)
            .ok_or_else(|| {
                refuse(
                    "INVALID_ID",
                    format!("{at}.{name}"),
                    format!("{name} is a user id ([A-Za-z0-9_.:-], 1 to 128 characters)"),
                )
            })
    };
    let stamp = Stamp {
        version: number("version")?,
        created_by: user("createdBy")?,
        updated_by: user("updatedBy")?,
        updated_at: number("updatedAt")?,
    };
    if stamp.version == 0 || stamp.version > version {
        return Err(refuse(
            "INVALID_VALUE",
            format!("{at}.version"),
            format!(
                "an entity's version is between 1 and the graph's version ({version}); this one is {}",
                stamp.version
            ),
        ));
    }
    Ok((cmd.op, stamp))
}

/// A refusal of a command built around a dumped entity, pointed back at it.
fn relocate(mut r: Rejection, from: &str, to: &str) -> Rejection {
    if let Some(rest) = r.field.strip_prefix(from) {
        r.field = format!("{to}{rest}");
    }
    r
}

/// `data` as stored: keys sorted, values as canonical text.
fn data_text(data: &Map<String, Value>) -> String {
    let (set, _) = data_texts(data);
    let pairs: Vec<String> = set.iter().map(|[k, v]| format!("{k}:{v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// The per-field versions of a freshly written entity: every field at the
/// entity's version, by whoever updated it last.
fn field_versions(data: &Map<String, Value>, stamp: &Stamp, node: bool) -> String {
    let at = json!([stamp.version, stamp.updated_by]);
    let (set, _) = data_texts(data);
    let data: Map<String, Value> = set.into_iter().map(|[k, _]| (k, at.clone())).collect();
    let mut fv = json!({"type": at, "data": data});
    if node {
        fv["position"] = at;
    }
    canonical(&fv)
}

fn insert(
    map: &mut BTreeMap<String, String>,
    id: &str,
    text: String,
    at: &str,
    kind: &str,
) -> Result<(), Rejection> {
    if map.insert(id.to_string(), text).is_some() {
        return Err(refuse(
            "ALREADY_EXISTS",
            format!("{at}.id"),
            format!("{kind} {id} is given twice"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, data: Value) -> Value {
        json!({"id": id, "type": "task", "position": {"x": 1, "y": 2.5}, "data": data,
               "version": 2, "createdBy": "ann", "updatedBy": "bob", "updatedAt": 1700000000000u64})
    }

    #[test]
    fn entities_are_stored_as_the_script_stores_them() {
        let state = json!({"version": 3, "nodes": [node("a", json!({"z": 1, "b": [true]}))],
            "edges": [{"id": "e1", "source": "a", "target": "a", "type": null, "data": {},
                       "version": 3, "createdBy": "ann", "updatedBy": "ann", "updatedAt": 5}],
            "viewport": {"x": 0, "y": 0, "zoom": 1.5}});
        let import = prepare(&state, &GraphSettings::default()).unwrap();
        assert_eq!(
            import.graph.nodes["a"],
            r#"{"id":"a","type":"task","position":{"x":1,"y":2.5},"data":{"b":[true],"z":1},"version":2,"createdBy":"ann","updatedBy":"bob","updatedAt":1700000000000}"#
        );
        assert_eq!(
            import.graph.edges["e1"],
            r#"{"id":"e1","source":"a","target":"a","type":null,"data":{},"version":3,"createdBy":"ann","updatedBy":"ann","updatedAt":5}"#
        );
        // A self-loop is listed once in its node's adjacency.
        assert_eq!(import.adjacency["a"], r#"["e1"]"#);
        assert_eq!(
            import.field_versions["n:a"],
            r#"{"data":{"\"b\"":[2,"bob"],"\"z\"":[2,"bob"]},"position":[2,"bob"],"type":[2,"bob"]}"#
        );
        assert_eq!(
            import.graph.viewport.as_deref(),
            Some(r#"{"x":0,"y":0,"zoom":1.5}"#)
        );
        assert_eq!(import.graph.checksum, checksum_of(&import.graph));
    }

    #[test]
    fn bad_entities_are_refused_with_their_place() {
        let settings = GraphSettings::default();
        let cases = [
            (
                json!({"version": 2, "nodes": [node("a", json!({})), node("a", json!({}))]}),
                "nodes.1.id",
                "ALREADY_EXISTS",
            ),
            (
                json!({"version": 1, "nodes": [node("a", json!({}))]}),
                "nodes.0.version",
                "INVALID_VALUE",
            ),
            (
                json!({"version": 2, "nodes": [{"id": "a", "position": {"x": "1", "y": 0},
                    "version": 1, "createdBy": "u", "updatedBy": "u", "updatedAt": 0}]}),
                "nodes.0.position.x",
                "INVALID_TYPE",
            ),
            (
                json!({"version": 2, "nodes": [], "edges": [{"id": "e", "source": "x",
                    "target": "y", "version": 1, "createdBy": "u", "updatedBy": "u",
                    "updatedAt": 0}]}),
                "edges.0.source",
                "NOT_FOUND",
            ),
            (
                json!({"version": 2, "nodes": [node("a", json!({}))], "viewport": {"x": 0, "y": 0, "zoom": 0}}),
                "viewport.zoom",
                "INVALID_VALUE",
            ),
        ];
        for (state, field, code) in cases {
            let r = prepare(&state, &settings).unwrap_err();
            assert_eq!((r.field.as_str(), r.code), (field, code), "{state}");
        }
    }
}
