//! The records the analytics jobs keep per graph: its progress (nodes by
//! `data.status`, `CALCULATE_PROGRESS`) and its size and activity
//! (`UPDATE_METRICS`). The jobs decide what goes in them; the store reads
//! the graph for them and writes the records.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use crate::scripts::SCRIPTS;

use super::{GraphStore, StoreError};

/// What `UPDATE_METRICS` needs to know about a graph, read in one round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphActivity {
    /// The graph's version (0 for a graph never written).
    pub version: u64,
    pub nodes: u64,
    pub edges: u64,
    /// Entries its change log still holds.
    pub log_entries: u64,
    /// The metrics record as the previous run left it (empty before the
    /// first): the base of versions per minute.
    pub previous: BTreeMap<String, String>,
}

impl GraphStore {
    /// Replaces the graph's progress record with `fields`, atomically and
    /// whole: a status no node has any more must not linger.
    pub async fn save_progress(
        &self,
        graph_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut invocation = SCRIPTS
            .save_progress
            .key(self.keys.graph_progress(graph_id));
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        let _: u64 = invocation.invoke_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// The graph's size, its version, and its previous metrics record.
    pub async fn activity(&self, graph_id: &str) -> Result<GraphActivity, StoreError> {
        let k = &self.keys;
        let (meta, nodes, edges, log_entries, previous): (
            BTreeMap<String, String>,
            u64,
            u64,
            u64,
            BTreeMap<String, String>,
        ) = redis::pipe()
            .hgetall(k.graph_meta(graph_id))
            .hlen(k.graph_nodes(graph_id))
            .hlen(k.graph_edges(graph_id))
            .xlen(k.graph_log(graph_id))
            .hgetall(k.graph_metrics(graph_id))
            .query_async(&mut self.redis.conn())
            .await?;
        let version = meta
            .get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(GraphActivity {
            version,
            nodes,
            edges,
            log_entries,
            previous,
        })
    }

    /// Writes `fields` into the graph's metrics record (fields not named
    /// keep their values).
    pub async fn save_metrics(
        &self,
        graph_id: &str,
        fields: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let _: () = self
            .redis
            .conn()
            .hset_multiple(self.keys.graph_metrics(graph_id), fields)
            .await?;
        Ok(())
    }
}
