//! Snapshots and `graphq graph verify`: the checksum recomputed from the
//! stored entities, and the retained log replayed from a snapshot (or the
//! empty graph) to check it reproduces the stored state byte for byte.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::graph::{RawGraph, checksum_hex, checksum_of};

use super::{GraphStore, StoreError, entry_version};

/// What `graphq graph verify` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub graph_id: String,
    pub version: u64,
    pub stored_checksum: String,
    pub computed_checksum: String,
    /// Where the replay started: "empty graph" or "snapshot at version N".
    pub replayed_from: Option<String>,
    pub replayed_entries: u64,
    /// Everything that does not add up; empty when the graph is consistent.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The parts of a log entry's change that replay needs, as exact texts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplayChange<'a> {
    #[serde(borrow)]
    nodes: Vec<&'a RawValue>,
    #[serde(borrow)]
    edges: Vec<&'a RawValue>,
    removed_nodes: Vec<String>,
    removed_edges: Vec<String>,
    #[serde(default, borrow)]
    viewport: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// A stored snapshot: exact entity texts at one version.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    epoch: String,
    version: u64,
    nodes: BTreeMap<String, String>,
    edges: BTreeMap<String, String>,
    viewport: Option<String>,
}

/// The stored text of a snapshot of `raw`.
pub(super) fn snapshot_json(raw: RawGraph) -> Result<String, StoreError> {
    let snap = Snapshot {
        epoch: raw.epoch,
        version: raw.version,
        nodes: raw.nodes,
        edges: raw.edges,
        viewport: raw.viewport,
    };
    serde_json::to_string(&snap).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl GraphStore {
    /// Saves the current state as the graph's snapshot (base for replay when
    /// the log has been trimmed). Returns its version.
    pub async fn snapshot(&self, graph_id: &str) -> Result<u64, StoreError> {
        let raw = self.raw(graph_id).await?;
        let version = raw.version;
        let json = snapshot_json(raw)?;
        let _: () = self
            .redis
            .conn()
            .set(self.keys.graph_snapshot(graph_id), json)
            .await?;
        Ok(version)
    }

    /// Recomputes the checksum from the stored entities, and replays the
    /// retained log from a snapshot (or from the empty graph) to check that
    /// it reproduces the stored state exactly.
    pub async fn verify(&self, graph_id: &str) -> Result<VerifyReport, StoreError> {
        self.verify_with_progress(graph_id, |_, _| {}).await
    }

    /// [`GraphStore::verify`], calling `progress(replayed, retained)` after
    /// each replayed log entry (for long replays on a terminal).
    pub async fn verify_with_progress(
        &self,
        graph_id: &str,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<VerifyReport, StoreError> {
        let raw = self.raw(graph_id).await?;
        let computed = checksum_of(&raw);
        let mut report = VerifyReport {
            graph_id: graph_id.to_string(),
            version: raw.version,
            stored_checksum: checksum_hex(raw.checksum),
            computed_checksum: checksum_hex(computed),
            replayed_from: None,
            replayed_entries: 0,
            problems: Vec::new(),
        };
        if computed != raw.checksum {
            report.problems.push(format!(
                "checksum mismatch: stored {} but the entities sum to {}",
                report.stored_checksum, report.computed_checksum
            ));
        }
        let mut conn = self.redis.conn();
        let snapshot: Option<String> = conn.get(self.keys.graph_snapshot(graph_id)).await?;
        let log: redis::Value = redis::cmd("XRANGE")
            .arg(self.keys.graph_log(graph_id))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let entries = crate::db::streams::parse_entries(&log);
        let oldest = entries.first().and_then(|(id, _)| entry_version(id));
        let snapshot: Option<Snapshot> = snapshot
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .filter(|s: &Snapshot| {
                s.epoch == raw.epoch && oldest.is_none_or(|o| s.version + 1 >= o)
            });
        let mut state = match snapshot {
            Some(s) => {
                report.replayed_from = Some(format!("snapshot at version {}", s.version));
                RawGraph {
                    epoch: s.epoch,
                    version: s.version,
                    checksum: 0,
                    nodes: s.nodes,
                    edges: s.edges,
                    viewport: s.viewport,
                }
            }
            None if oldest.is_none_or(|o| o == 1) => {
                report.replayed_from = Some("empty graph".into());
                RawGraph {
                    epoch: raw.epoch.clone(),
                    ..RawGraph::default()
                }
            }
            None => {
                report.problems.push(format!(
                    "cannot replay: the log starts at version {} and no snapshot reaches it",
                    oldest.unwrap_or(0)
                ));
                return Ok(report);
            }
        };
        for (id, fields) in &entries {
            let Some(v) = entry_version(id) else {
                report
                    .problems
                    .push(format!("log entry {id} is not <version>-0"));
                continue;
            };
            if v <= state.version {
                continue;
            }
            if v != state.version + 1 {
                report
                    .problems
                    .push(format!("log jumps from version {} to {v}", state.version));
                return Ok(report);
            }
            let change = fields
                .iter()
                .find(|(f, _)| f == "change")
                .map(|(_, c)| c.as_str());
            let Some(change) = change else {
                report
                    .problems
                    .push(format!("log entry {id} has no change"));
                return Ok(report);
            };
            if let Err(e) = replay(&mut state, change) {
                report.problems.push(format!("log entry {id}: {e}"));
                return Ok(report);
            }
            state.version = v;
            report.replayed_entries += 1;
            progress(report.replayed_entries, entries.len() as u64);
        }
        if state.version != raw.version {
            report.problems.push(format!(
                "replay reached version {} but the graph is at {}",
                state.version, raw.version
            ));
        }
        for (what, replayed, stored) in [
            ("node", &state.nodes, &raw.nodes),
            ("edge", &state.edges, &raw.edges),
        ] {
            for (id, json) in stored {
                match replayed.get(id) {
                    None => report.problems.push(format!(
                        "{what} {id} is stored but the log never created it"
                    )),
                    Some(r) if r != json => report
                        .problems
                        .push(format!("{what} {id} differs from what the log says")),
                    Some(_) => {}
                }
            }
            for id in replayed.keys().filter(|id| !stored.contains_key(*id)) {
                report
                    .problems
                    .push(format!("{what} {id} should exist according to the log"));
            }
        }
        if state.viewport != raw.viewport {
            report
                .problems
                .push("viewport differs from what the log says".into());
        }
        if checksum_of(&state) != raw.checksum && report.problems.is_empty() {
            report
                .problems
                .push("replayed state has a different checksum".into());
        }
        Ok(report)
    }
}

/// Applies one change's upserts and removals to a raw state.
fn replay(state: &mut RawGraph, change: &str) -> Result<(), String> {
    let c: ReplayChange = serde_json::from_str(change).map_err(|e| e.to_string())?;
    for id in &c.removed_edges {
        state.edges.remove(id);
    }
    for id in &c.removed_nodes {
        state.nodes.remove(id);
    }
    for (raw, map) in [(&c.nodes, &mut state.nodes), (&c.edges, &mut state.edges)] {
        for entity in raw {
            let id: IdOnly = serde_json::from_str(entity.get()).map_err(|e| e.to_string())?;
            map.insert(id.id, entity.get().to_string());
        }
    }
    if let Some(v) = c.viewport {
        state.viewport = (v.get() != "null").then(|| v.get().to_string());
    }
    Ok(())
}
