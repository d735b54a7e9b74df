//! The operation records: the operation index, which names an operation's
//! graph and its status until it is decided (claimed by the gateway before
//! queueing, marked `processing` by the worker), and the outcome kept in the
//! graph (written by apply_command.lua, or here for a revert decided outside
//! it).

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::scripts::SCRIPTS;

use super::{GraphStore, StoreError};

/// Status of one operation (`GET /api/v2/operations/{id}`, docs/protocol.md).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    pub operation_id: String,
    pub graph_id: String,
    /// pending | processing | completed | failed
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// What claiming an operation id for a graph found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The id was free; this call claimed it.
    Fresh,
    /// Already claimed for this graph (a resend).
    Own,
    /// Claimed for another graph: refused.
    Taken,
}

impl OperationStatus {
    /// The operation's outcome in the words of a command's outcome
    /// (`?wait`, docs/protocol.md): `{"status": "applied", "version"}` for
    /// a completed operation, `{"status": "reverted", "code", "message"}`
    /// for a failed one; None while it is pending or processing. A resend
    /// is answered with this, so it reads like the first answer did (the
    /// stored record keeps no `change` or `current`).
    pub fn outcome(&self) -> Option<Value> {
        match self.status.as_str() {
            "completed" => Some(serde_json::json!({"status": "applied", "version": self.version})),
            "failed" => {
                let error = self.error.as_ref();
                let field = |name: &str| error.map_or(Value::Null, |e| e[name].clone());
                Some(serde_json::json!({
                    "status": "reverted", "code": field("code"), "message": field("message"),
                }))
            }
            _ => None,
        }
    }
}

impl GraphStore {
    /// The status of an operation, from the operation index (written when it
    /// was accepted) and the graph's outcome record (written when decided).
    pub async fn operation(
        &self,
        operation_id: &str,
    ) -> Result<Option<OperationStatus>, StoreError> {
        let mut conn = self.redis.conn();
        let index: BTreeMap<String, String> =
            conn.hgetall(self.keys.operation(operation_id)).await?;
        let Some(graph_id) = index.get("graphId").cloned() else {
            return Ok(None);
        };
        let outcome: Option<String> = conn
            .get(self.keys.graph_op(&graph_id, operation_id))
            .await?;
        let mut status = OperationStatus {
            operation_id: operation_id.to_string(),
            graph_id,
            status: index
                .get("status")
                .cloned()
                .unwrap_or_else(|| "pending".into()),
            version: None,
            result: None,
            error: None,
        };
        if let Some(text) = outcome {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if v["status"] == "applied" {
                status.status = "completed".into();
                status.version = v["version"].as_u64();
                status.result =
                    Some(serde_json::json!({"type": "COMMAND_APPLIED", "version": v["version"]}));
            } else {
                status.status = "failed".into();
                status.error =
                    Some(serde_json::json!({"code": v["code"], "message": v["message"]}));
            }
        }
        Ok(Some(status))
    }

    /// Records where an operation went and that it is `status` (pending,
    /// processing, failed), until its outcome says otherwise.
    pub async fn mark_operation(
        &self,
        operation_id: &str,
        graph_id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        self.push_mark(&mut pipe, operation_id, graph_id, status);
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// Adds [`Self::mark_operation`]'s commands to `pipe`, replies ignored.
    pub(super) fn push_mark(
        &self,
        pipe: &mut redis::Pipeline,
        operation_id: &str,
        graph_id: &str,
        status: &str,
    ) {
        let key = self.keys.operation(operation_id);
        pipe.hset_multiple(&key, &[("graphId", graph_id), ("status", status)])
            .ignore()
            .expire(&key, self.settings.op_ttl_s as i64)
            .ignore();
    }

    /// Claims `operation_id` for `graph_id` before its command is queued;
    /// false when the id belongs to another graph. Operation ids are global
    /// (`GET /operations/{id}` names no graph), so the claim comes before
    /// anything is queued: a resend finds its own claim, and an id taken on
    /// another graph is refused, whatever queue partition the two graphs
    /// share. HSETNX never overwrites the worker's "processing".
    pub async fn claim_operation(
        &self,
        graph_id: &str,
        operation_id: &str,
    ) -> Result<bool, StoreError> {
        let claims = self.claim_operations(graph_id, &[operation_id]).await?;
        Ok(claims.first() != Some(&Claim::Taken))
    }

    /// The claim of `operation_id` for `graph_id` as a guard of the add that
    /// queues its command ([`crate::queue::Queue::add_guarded`]): the same
    /// record [`Self::claim_operation`] writes, claimed in the same call as
    /// the add.
    pub fn claim_guard<'a>(&self, record: &'a str, graph_id: &'a str) -> (&'a str, &'a str, u64) {
        (record, graph_id, self.settings.op_ttl_s)
    }

    /// The key of an operation's claim record, for [`Self::claim_guard`].
    pub fn claim_record(&self, operation_id: &str) -> String {
        self.keys.operation(operation_id)
    }

    /// [`Self::claim_operation`] for every id of a batch, in one round trip,
    /// saying for each whether this call made the claim (so that a refused
    /// batch can release exactly those).
    pub async fn claim_operations(
        &self,
        graph_id: &str,
        operation_ids: &[&str],
    ) -> Result<Vec<Claim>, StoreError> {
        let mut pipe = redis::pipe();
        for operation_id in operation_ids {
            let index = self.keys.operation(operation_id);
            pipe.cmd("HSETNX")
                .arg(&index)
                .arg("status")
                .arg("pending")
                .ignore()
                .cmd("HSETNX")
                .arg(&index)
                .arg("graphId")
                .arg(graph_id)
                .expire(&index, self.settings.op_ttl_s as i64)
                .ignore()
                .hget(&index, "graphId");
        }
        let replies: Vec<(u8, Option<String>)> = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(replies
            .into_iter()
            .map(|(made, owner)| match owner {
                _ if made == 1 => Claim::Fresh,
                Some(g) if g != graph_id => Claim::Taken,
                _ => Claim::Own,
            })
            .collect())
    }

    /// Gives back claims [`Self::claim_operations`] made for a batch that was
    /// then refused, before anything of it was queued. A claim is only ever
    /// released by the request that made it a moment before, so the one
    /// overlap is the same operation id sent at once on another request to
    /// the same graph; its worker writes the index again when it applies it.
    pub async fn release_operations(&self, operation_ids: &[&str]) -> Result<(), StoreError> {
        if operation_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for operation_id in operation_ids {
            pipe.del(self.keys.operation(operation_id)).ignore();
        }
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// Records a revert for an operation that never reached the script (not
    /// a valid command, or dead-lettered) and notifies subscribers. Does
    /// nothing when the operation already has an outcome.
    pub async fn record_revert(
        &self,
        graph_id: &str,
        user_id: &str,
        operation_id: &str,
        kind: &str,
        code: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let stored = serde_json::json!({"status": "reverted", "code": code, "message": message});
        let outcome = serde_json::json!({
            "status": "reverted", "code": code, "message": message,
            "current": {"nodes": {}, "edges": {}}, "conflicts": [],
        });
        let note = serde_json::json!({
            "graphId": graph_id, "operationId": operation_id, "userId": user_id, "type": kind,
            "timestamp": 0, "command": Value::Null, "outcome": outcome,
        });
        let recorded: u8 = SCRIPTS
            .record_revert
            .key(self.keys.graph_op(graph_id, operation_id))
            .arg(stored.to_string())
            .arg(self.settings.op_ttl_s)
            .arg(self.keys.user_channel(user_id))
            .arg(note.to_string())
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(recorded == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(word: &str, version: Option<u64>, error: Option<Value>) -> OperationStatus {
        OperationStatus {
            operation_id: "o1".into(),
            graph_id: "g1".into(),
            status: word.into(),
            version,
            result: None,
            error,
        }
    }

    #[test]
    fn a_settled_operation_reads_as_the_outcome_of_its_command() {
        assert_eq!(
            status("completed", Some(7), None).outcome(),
            Some(json!({"status": "applied", "version": 7}))
        );
        let error = json!({"code": "NOT_FOUND", "message": "node n1 does not exist"});
        assert_eq!(
            status("failed", None, Some(error)).outcome(),
            Some(
                json!({"status": "reverted", "code": "NOT_FOUND", "message": "node n1 does not exist"})
            )
        );
        assert_eq!(status("pending", None, None).outcome(), None);
        assert_eq!(status("processing", None, None).outcome(), None);
    }
}
