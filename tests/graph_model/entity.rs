//! Entities as the model stores them: nodes and edges whose JSON text is a
//! pure function of their fields, the per-field versions, and the helpers
//! that turn user values into the canonical texts the script splices.

use std::collections::BTreeMap;

use graphq::graph::command::canonical;
use serde_json::{Map, Value};

/// Nodes and edges share most rules; `Kind` says which one an entity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Node,
    Edge,
}

impl Kind {
    /// Prefix of strategy paths (`node.type`, `edge.data.KEY`).
    pub(super) fn path(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Edge => "edge",
        }
    }

    /// First segment of JSON pointers and of `current` / change keys.
    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Edge => "edges",
        }
    }
}

/// One stored node or edge. Every user value is kept as the canonical JSON
/// text the Rust side produced, because the script splices texts verbatim.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entity {
    pub(super) kind: Kind,
    pub(super) id: String,
    /// `"text"` or `null`.
    pub(super) type_text: String,
    /// Nodes only: `{"x":..,"y":..}`.
    pub(super) position: Option<String>,
    /// Edges only: (source, target).
    pub(super) endpoints: Option<(String, String)>,
    /// (unquoted key, value text) in stored order.
    pub(super) data: Vec<(String, String)>,
    pub(super) version: u64,
    pub(super) created_by: String,
    pub(super) updated_by: String,
    pub(super) updated_at: u64,
}

impl Entity {
    /// The stored bytes, in the fixed layout of docs/graph.md (Entity JSON).
    pub(super) fn json(&self) -> String {
        let data = self
            .data
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), v))
            .collect::<Vec<_>>()
            .join(",");
        let middle = match (&self.position, &self.endpoints) {
            (Some(pos), _) => format!("\"type\":{},\"position\":{}", self.type_text, pos),
            (None, Some((s, t))) => format!(
                "\"source\":\"{s}\",\"target\":\"{t}\",\"type\":{}",
                self.type_text
            ),
            // Unreachable by construction: every entity is built as one or the other.
            (None, None) => format!("\"type\":{}", self.type_text),
        };
        format!(
            "{{\"id\":\"{}\",{middle},\"data\":{{{data}}},\"version\":{},\"createdBy\":\"{}\",\"updatedBy\":\"{}\",\"updatedAt\":{}}}",
            self.id, self.version, self.created_by, self.updated_by, self.updated_at
        )
    }

    pub(super) fn value(&self) -> Value {
        parse_text(&self.json())
    }

    pub(super) fn data_get(&self, key: &str) -> Option<&String> {
        self.data.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces a key in place, or appends it when new (docs: "a replaced key
    /// keeps its place ... a new key is appended").
    pub(super) fn data_set(&mut self, key: &str, text: &str) {
        match self.data.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = text.to_string(),
            None => self.data.push((key.to_string(), text.to_string())),
        }
    }

    pub(super) fn data_remove(&mut self, key: &str) {
        self.data.retain(|(k, _)| k != key);
    }

    pub(super) fn data_value(&self) -> Value {
        Value::Object(
            self.data
                .iter()
                .map(|(k, v)| (k.clone(), parse_text(v)))
                .collect::<Map<String, Value>>(),
        )
    }

    /// "equals after in content (type, position or endpoints, data)".
    /// DOC CHOICE: data is compared as a JSON object (key order ignored).
    pub(super) fn same_content(&self, other: &Entity) -> bool {
        let as_map = |e: &Entity| e.data.iter().cloned().collect::<BTreeMap<String, String>>();
        self.type_text == other.type_text
            && self.position == other.position
            && self.endpoints == other.endpoints
            && as_map(self) == as_map(other)
    }
}

/// A field of an entity that has its own version (docs: `fv`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Field {
    Type,
    Position,
    Data(String),
}

/// Who last set a field, at which graph version.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stamp {
    pub(super) version: u64,
    pub(super) user: String,
}

pub(super) type FieldVersions = BTreeMap<Field, Stamp>;

/// Field versions of a new entity: "all its fields get the new version".
pub(super) fn all_fields(entity: &Entity, stamp: Stamp) -> FieldVersions {
    let mut fv = FieldVersions::new();
    fv.insert(Field::Type, stamp.clone());
    if entity.position.is_some() {
        fv.insert(Field::Position, stamp.clone());
    }
    for (k, _) in &entity.data {
        fv.insert(Field::Data(k.clone()), stamp.clone());
    }
    fv
}

/// Create-time data: (key, canonical value text), sorted by key (byte
/// order, which is how serde_json's map iterates).
pub(super) fn sorted_pairs(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = data
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), canonical(v)))
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
}

/// A key as canonical JSON text (what the script receives as "quoted key").
pub(super) fn quote(key: &str) -> String {
    canonical(&Value::String(key.to_string()))
}

/// DOC CHOICE: `field` is a JSON pointer, so a data key is escaped as RFC
/// 6901 says (`~` → `~0`, `/` → `~1`).
pub(super) fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Parses JSON text the model itself produced (or the canonical text of a
/// user value); failing would be a bug in the model.
pub(super) fn parse_text(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("model produced invalid JSON {text:?}: {e}"))
}
