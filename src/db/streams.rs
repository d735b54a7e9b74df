//! Reading Redis stream replies: entries of `XRANGE`, `XREVRANGE` and the
//! like as ids with their field pairs, and reply values as text. Shared by
//! the queue engine and the graph store, which both keep streams.

use redis::Value;

/// Parses an array of stream entries (`XRANGE` shape) into id and field pairs.
pub(crate) fn parse_entries(raw: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(entries) = raw else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            let id = value_string(parts.first()?)?;
            let Value::Array(flat) = parts.get(1)? else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((value_string(kv.first()?)?, value_string(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// Reads a Redis reply element as UTF-8 text.
pub(crate) fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}
