//! `graphq graph load`: a whole graph written in one script
//! (`lua/load_graph.lua`) at a new epoch, with a snapshot; and the change
//! log read page by page for `graphq graph log`.

use serde::Serialize;
use serde_json::json;

use crate::graph::import::Import;
use crate::graph::{ChangeEntry, RawGraph};
use crate::scripts::SCRIPTS;

use super::verify::snapshot_json;
use super::{GraphStore, StoreError};

/// What [`GraphStore::load`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadOutcome {
    /// The graph did not exist; it does now.
    Created,
    /// The graph existed and was replaced (as asked).
    Replaced,
    /// The graph exists and replacing it was not asked for: nothing written.
    Exists,
}

/// The answer of [`GraphStore::load`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Loaded {
    pub graph_id: String,
    pub outcome: LoadOutcome,
    /// The graph's new epoch (empty when nothing was written).
    pub epoch: String,
    pub version: u64,
    pub nodes: usize,
    pub edges: usize,
}

/// Why the change log could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "changes after version {since} are no longer kept (the graph is at version {current}); dump the state instead"
    )]
    TooOld { since: u64, current: u64 },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl GraphStore {
    /// Writes `import` as graph `graph_id` at a new epoch, with a snapshot
    /// at its version, atomically. An existing graph is refused
    /// ([`LoadOutcome::Exists`]) unless `replace`; a replaced graph loses
    /// its change log, undo and redo lists and analytics records, and its
    /// subscribers are told to fetch the new state (`SYNC reset`).
    pub async fn load(
        &self,
        graph_id: &str,
        import: &Import,
        replace: bool,
    ) -> Result<Loaded, StoreError> {
        let k = &self.keys;
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        let graph = &import.graph;
        let snapshot = snapshot_json(RawGraph {
            epoch: epoch.clone(),
            ..graph.clone()
        })?;
        let mut inv = SCRIPTS.load_graph.prepare_invoke();
        inv.key(k.graph_meta(graph_id))
            .key(k.graph_nodes(graph_id))
            .key(k.graph_edges(graph_id))
            .key(k.graph_adjacency(graph_id))
            .key(k.graph_field_versions(graph_id))
            .key(k.graph_log(graph_id))
            .key(k.graph_snapshot(graph_id));
        if replace {
            inv.key(k.graph_progress(graph_id))
                .key(k.graph_metrics(graph_id))
                .key(k.graph_conflicts(graph_id));
            for key in self.history_lists(graph_id).await? {
                inv.key(key);
            }
        }
        inv.arg(if replace { "1" } else { "0" })
            .arg(&epoch)
            .arg(graph.version)
            .arg(graph.checksum.to_string())
            .arg(graph.viewport.as_deref().unwrap_or(""))
            .arg(&snapshot)
            .arg(graph.nodes.len())
            .arg(graph.edges.len())
            .arg(import.adjacency.len())
            .arg(import.field_versions.len());
        for map in [
            &graph.nodes,
            &graph.edges,
            &import.adjacency,
            &import.field_versions,
        ] {
            for (id, text) in map {
                inv.arg(id).arg(text);
            }
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        self.redis.durable(&mut pipe);
        let (answer,): (String,) =
            crate::scripts::query_pipeline(&pipe, &mut self.redis.conn()).await?;
        let outcome = match answer.as_str() {
            "created" => LoadOutcome::Created,
            "replaced" => LoadOutcome::Replaced,
            "exists" => LoadOutcome::Exists,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "load_graph.lua answered {other}"
                )));
            }
        };
        if outcome == LoadOutcome::Replaced {
            self.publish_control(graph_id, &json!({"graphId": graph_id, "control": "reset"}))
                .await?;
        }
        Ok(Loaded {
            graph_id: graph_id.to_string(),
            epoch: if outcome == LoadOutcome::Exists {
                String::new()
            } else {
                epoch
            },
            outcome,
            version: graph.version,
            nodes: graph.nodes.len(),
            edges: graph.edges.len(),
        })
    }

    /// The undo and redo lists of a graph, every user's (found with SCAN on
    /// every master: their names hold user ids no index records).
    async fn history_lists(&self, graph_id: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for (host, port) in self.redis.masters().await? {
            for list in ["undo:*", "redo:*"] {
                let pattern = self.keys.graph_scan_pattern(graph_id, list);
                let mut cursor = 0u64;
                loop {
                    let reply = self
                        .redis
                        .on_node(
                            &host,
                            port,
                            redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(1000),
                        )
                        .await?;
                    let (next, found): (u64, Vec<String>) = redis::from_redis_value(reply)
                        .map_err(|e| StoreError::Corrupt(format!("SCAN answered {e}")))?;
                    keys.extend(found);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every retained change after `since`, oldest first, handed to `each`
    /// page by page (`max_changes` at a time) up to the version the graph
    /// had when the first page was read.
    pub async fn log_since(
        &self,
        graph_id: &str,
        since: u64,
        mut each: impl FnMut(&ChangeEntry) -> std::io::Result<()>,
    ) -> Result<u64, LogError> {
        let mut at = since;
        let mut end = None;
        loop {
            let page = self
                .changes_since(graph_id, at, self.settings.max_changes)
                .await?;
            if page.too_old {
                return Err(LogError::TooOld {
                    since: at,
                    current: page.current_version,
                });
            }
            let end = *end.get_or_insert(page.current_version);
            for change in page.changes.iter().filter(|c| c.version <= end) {
                each(change)?;
                at = change.version;
            }
            if at >= end || page.changes.is_empty() {
                return Ok(end);
            }
        }
    }
}
