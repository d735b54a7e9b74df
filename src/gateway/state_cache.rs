//! Versioned reads (docs/protocol.md, Versioned reads): the `ETag` of a
//! graph's state and changes, `If-None-Match`, and a small bounded cache of
//! recent state bodies keyed by (graph, epoch, version), so that repeated
//! reads of an unchanged graph cost one version check.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

/// The entity tag of a graph at `epoch` and `version`: `"EPOCH:VERSION"`.
pub fn etag(epoch: &str, version: u64) -> String {
    format!("\"{epoch}:{version}\"")
}

/// Whether the request's `If-None-Match` names `tag` (or is `*`). Weak
/// tags (`W/"…"`) compare by their opaque part, as RFC 9110 asks for
/// `If-None-Match`.
pub fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// Recent state bodies, at most `max_graphs` of them (one per graph, its
/// latest version read) and `max_bytes` in total; the least recently used
/// goes first. A body larger than `max_bytes` is not kept.
pub struct StateCache {
    /// `gateway.state_cache_graphs`: most graphs kept (0: no cache).
    max_graphs: usize,
    /// `gateway.state_cache_max_bytes`: most body bytes kept in total.
    max_bytes: usize,
    /// A std Mutex: nothing is awaited while it is held, and each use is a
    /// map look-up or a small scan.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By graph id: one version per graph, the latest read.
    entries: HashMap<String, Entry>,
    /// Sum of the kept bodies' lengths, held under `max_bytes`.
    bytes: usize,
    /// A use counter: the entry with the smallest `used` goes first.
    tick: u64,
}

struct Entry {
    /// The body is the graph at exactly this epoch and version.
    epoch: String,
    version: u64,
    /// The `GET state` body; cloning it shares the bytes.
    body: Bytes,
    /// `tick` at the last get or put, for least-recently-used eviction.
    used: u64,
}

impl StateCache {
    pub fn new(max_graphs: usize, max_bytes: usize) -> StateCache {
        StateCache {
            max_graphs,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_graphs > 0 && self.max_bytes > 0
    }

    /// Whether some version of `graph` is kept.
    pub fn holds(&self, graph: &str) -> bool {
        self.enabled()
            && self
                .inner
                .lock()
                .expect("state cache lock")
                .entries
                .contains_key(graph)
    }

    /// The body of `graph` at exactly (`epoch`, `version`), if kept.
    pub fn get(&self, graph: &str, epoch: &str, version: u64) -> Option<Bytes> {
        let mut inner = self.inner.lock().expect("state cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(graph)?;
        if entry.epoch != epoch || entry.version != version {
            return None;
        }
        entry.used = tick;
        Some(entry.body.clone())
    }

    /// Keeps `body` as `graph`'s state at (`epoch`, `version`), replacing an
    /// older version of it, unless a newer one is already kept.
    pub fn put(&self, graph: &str, epoch: &str, version: u64, body: Bytes) {
        if !self.enabled() || body.len() > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().expect("state cache lock");
        if let Some(old) = inner.entries.get(graph) {
            if old.epoch == epoch && old.version >= version {
                return;
            }
            let len = old.body.len();
            inner.bytes -= len;
            inner.entries.remove(graph);
        }
        while inner.entries.len() >= self.max_graphs || inner.bytes + body.len() > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(g, _)| g.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.body.len();
            }
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.bytes += body.len();
        inner.entries.insert(
            graph.to_string(),
            Entry {
                epoch: epoch.to_string(),
                version,
                body,
                used,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn a_body_is_served_only_at_its_epoch_and_version() {
        let cache = StateCache::new(4, 1000);
        assert!(!cache.holds("g"));
        cache.put("g", "e", 3, body(10));
        assert!(cache.holds("g"));
        assert_eq!(cache.get("g", "e", 3).map(|b| b.len()), Some(10));
        assert!(cache.get("g", "e", 4).is_none());
        assert!(cache.get("g", "other", 3).is_none());
        cache.put("g", "e", 4, body(20));
        assert!(cache.get("g", "e", 3).is_none());
        // A slower reader's older version does not replace the newer one.
        cache.put("g", "e", 2, body(5));
        assert_eq!(cache.get("g", "e", 4).map(|b| b.len()), Some(20));
    }

    #[test]
    fn the_least_recently_used_goes_when_full() {
        let cache = StateCache::new(2, 100);
        cache.put("a", "e", 1, body(40));
        cache.put("b", "e", 1, body(40));
        assert!(cache.get("a", "e", 1).is_some());
        cache.put("c", "e", 1, body(40));
        assert!(cache.get("b", "e", 1).is_none());
        assert!(cache.get("a", "e", 1).is_some() && cache.get("c", "e", 1).is_some());
        // Bytes bound: a 70-byte body leaves room for nothing else.
        cache.put("d", "e", 1, body(70));
        assert!(cache.get("a", "e", 1).is_none() && cache.get("c", "e", 1).is_none());
        cache.put("huge", "e", 1, body(101));
        assert!(cache.get("huge", "e", 1).is_none());
        assert!(!StateCache::new(0, 100).enabled());
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = etag("ab", 7);
        assert_eq!(tag, "\"ab:7\"");
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, &tag));
        headers.insert(
            header::IF_NONE_MATCH,
            "\"x:1\", W/\"ab:7\"".parse().unwrap(),
        );
        assert!(not_modified(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, "\"ab:6\"".parse().unwrap());
        assert!(!not_modified(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(not_modified(&headers, &tag));
    }
}
