//! The conflict log of a graph (docs/graph.md, The conflict log): the
//! records apply_command.lua appends (`conflict`, `resolution`), read back
//! as a list of conflicts, each with its status and resolution.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{GraphStore, StoreError};

/// Which conflicts a listing keeps.
#[derive(Clone, Debug, Default)]
pub struct ConflictFilter {
    /// A log id (`MS-SEQ`): only conflicts logged or resolved after it.
    pub since: Option<LogId>,
    /// `open`, `resolved` or `decided`.
    pub status: Option<String>,
    /// Only conflicts of commands this user sent.
    pub user: Option<String>,
}

/// A conflict-log id, `MS-SEQ` as Redis stream ids are (`MS` alone is
/// `MS-0`): milliseconds, then the sequence within them, compared in that
/// order as Redis orders the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogId(u64, u64);

impl LogId {
    pub fn parse(text: &str) -> Option<LogId> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(LogId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

/// What `GET …/conflicts` answers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictList {
    /// The graph listed, so a saved answer says what it is about.
    pub graph_id: String,
    /// Oldest first: the log's records, each with `id`, `status` and
    /// `resolution` added.
    pub conflicts: Vec<Value>,
    /// The newest log id read: the `since` of the next poll.
    pub last_id: Option<String>,
}

impl GraphStore {
    /// The graph's logged conflicts, oldest first, each with `id`, `status`
    /// (`open` | `resolved` for MANUAL, `decided` for the others) and
    /// `resolution` (null, or how it was resolved).
    pub async fn conflicts(
        &self,
        graph_id: &str,
        filter: &ConflictFilter,
    ) -> Result<ConflictList, StoreError> {
        let raw: redis::Value = redis::cmd("XRANGE")
            .arg(self.keys.graph_conflicts(graph_id))
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis.conn())
            .await?;
        let entries = crate::db::streams::parse_entries(&raw);
        let corrupt = |id: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("conflict log entry {id}: {e}"))
        };
        // (conflict, when it last changed), in log order.
        let mut list: Vec<(Map<String, Value>, LogId)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (id, fields) in &entries {
            let at = LogId::parse(id).ok_or_else(|| corrupt(id, &"not a stream id"))?;
            for (kind, text) in fields {
                let Value::Object(mut record) =
                    serde_json::from_str(text).map_err(|e| corrupt(id, &e))?
                else {
                    return Err(corrupt(id, &"not an object"));
                };
                if kind == "resolution" {
                    let resolves = record.remove("resolves");
                    let found = resolves
                        .as_ref()
                        .and_then(Value::as_str)
                        .and_then(|r| index.get(r));
                    let Some((conflict, changed)) = found.and_then(|&i| list.get_mut(i)) else {
                        continue; // its conflict is no longer kept
                    };
                    record.remove("graphId");
                    record.remove("field");
                    record.insert("id".into(), Value::String(id.clone()));
                    conflict.insert("status".into(), "resolved".into());
                    conflict.insert("resolution".into(), Value::Object(record));
                    *changed = at;
                } else {
                    let status = if record["outcome"] == "open" {
                        "open"
                    } else {
                        "decided"
                    };
                    let mut conflict = Map::new();
                    conflict.insert("id".into(), Value::String(id.clone()));
                    conflict.extend(record);
                    conflict.insert("status".into(), status.into());
                    conflict.insert("resolution".into(), Value::Null);
                    index.insert(id.clone(), list.len());
                    list.push((conflict, at));
                }
            }
        }
        let keep = |(c, changed): &(Map<String, Value>, LogId)| {
            filter.since.is_none_or(|since| *changed > since)
                && filter.status.as_deref().is_none_or(|s| c["status"] == s)
                && filter.user.as_deref().is_none_or(|u| c["userId"] == u)
        };
        Ok(ConflictList {
            graph_id: graph_id.to_string(),
            conflicts: list
                .into_iter()
                .filter(keep)
                .map(|(c, _)| Value::Object(c))
                .collect(),
            last_id: entries.last().map(|(id, _)| id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LogId;

    #[test]
    fn log_ids_parse_and_order_as_stream_ids() {
        assert_eq!(LogId::parse("17-3"), Some(LogId(17, 3)));
        assert_eq!(LogId::parse("17"), Some(LogId(17, 0)));
        assert!(LogId::parse("17-3") < LogId::parse("18-0"));
        assert!(LogId::parse("9-9") < LogId::parse("10-0"));
        for bad in ["", "-1", "1-", "a-1", "1-2-3", "+1", "99999999999999999999"] {
            assert_eq!(LogId::parse(bad), None, "{bad}");
        }
    }
}
