//! The WebSocket protocol of docs/protocol.md as types: what a client may
//! send ([`ClientMessage`], read with [`ClientMessage::parse`]), every
//! message the gateway sends ([`ServerMessage`]) and every close code
//! ([`CloseCode`]). The field names here are the wire contract.
//!
//! Server messages borrow what they carry, and JSON that arrives already
//! serialized (a change from the log or a pub/sub note, a command, a
//! state) passes through as [`RawValue`] text, never re-encoded: a frame
//! is serialized once per change, however many subscribers it goes to.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::graph::ChangeEntry;

/// A message from a client. Fields a message does not use are ignored.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Subscribe to a graph from the version (and epoch) the client has.
    Subscribe {
        graph_id: String,
        #[serde(default, deserialize_with = "client_version")]
        client_version: Option<u64>,
        #[serde(default, deserialize_with = "epoch")]
        epoch: Option<String>,
    },
    /// SYNC again a graph the socket is subscribed to.
    RequestSync {
        graph_id: String,
        #[serde(default, deserialize_with = "client_version")]
        client_version: Option<u64>,
        #[serde(default, deserialize_with = "epoch")]
        epoch: Option<String>,
    },
    Unsubscribe {
        graph_id: String,
    },
    /// `command` is validated by `graph::command`, which names the field of
    /// any mistake; [`ClientMessage::parse`] only checks it is there.
    Command {
        graph_id: String,
        #[serde(default)]
        command: Value,
    },
    /// None: the field was left out (the socket's last value stands);
    /// `Some(Value::Null)` clears it.
    Presence {
        graph_id: String,
        #[serde(default, deserialize_with = "present")]
        cursor: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        selection: Option<Value>,
        /// The name to show for the user (the user id stays the id).
        #[serde(default, deserialize_with = "present")]
        name: Option<Value>,
        /// What the user is in the middle of (a drag, a resize): any JSON
        /// object, relayed as is and never stored.
        #[serde(default, deserialize_with = "present")]
        preview: Option<Value>,
    },
    Heartbeat,
    /// Renews the socket's token before its `exp` (docs/protocol.md, Token
    /// expiry): same user, the new token's graphs, role and expiry.
    Refresh {
        token: String,
    },
    /// Any other `type`. [`ClientMessage::parse`] answers it with
    /// UNKNOWN_TYPE and never returns it. Last, as serde requires.
    #[serde(other)]
    Unknown,
}

/// Why a client frame was refused: the `code` and `message` of its ERROR.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "INVALID_MESSAGE",
            message: message.into(),
        }
    }
}

impl ClientMessage {
    /// Reads one text frame. The checks, and so the error a malformed frame
    /// gets, come in this order: JSON, no key given twice in an object
    /// (`DUPLICATE_KEY`), a string `type`, a known type, a string
    /// `graphId`, then the message's own fields.
    pub fn parse(text: &str) -> Result<ClientMessage, Refusal> {
        let msg: Value = serde_json::from_str(text).map_err(|e| Refusal {
            code: "INVALID_JSON",
            message: format!("not valid JSON: {e}"),
        })?;
        // The whole frame, so a key given twice in its command is refused too.
        crate::graph::command::check_unique_keys(text.as_bytes()).map_err(|r| Refusal {
            code: r.code,
            message: r.message,
        })?;
        let Some(kind) = msg.get("type").and_then(Value::as_str) else {
            return Err(Refusal::invalid("every message has a string `type`"));
        };
        match ClientMessage::deserialize(&msg) {
            Ok(ClientMessage::Unknown) => Err(Refusal {
                code: "UNKNOWN_TYPE",
                message: format!("unknown message type `{kind}`"),
            }),
            // Absent, not null: a null command is the validator's to name.
            Ok(ClientMessage::Command { .. }) if msg.get("command").is_none() => {
                Err(Refusal::invalid("COMMAND needs a `command` object"))
            }
            Ok(m) => Ok(m),
            Err(_) if kind == "REFRESH" => Err(Refusal::invalid("REFRESH needs a string `token`")),
            // Every known type but HEARTBEAT (which cannot fail) has a
            // graphId, and its absence is named before any other mistake.
            Err(_) if !msg.get("graphId").is_some_and(Value::is_string) => {
                Err(Refusal::invalid(format!("{kind} needs a string `graphId`")))
            }
            // Custom errors (below) print as their bare message.
            Err(e) => Err(Refusal::invalid(e.to_string())),
        }
    }
}

fn client_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("clientVersion is a non-negative integer")),
    }
}

fn epoch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(e) => Ok(Some(e)),
        _ => Err(serde::de::Error::custom("epoch is a string")),
    }
}

/// Present (null included) as opposed to absent, which `default` makes None.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A message from the gateway. Fields are written in the order declared,
/// `type` first.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    /// The answer to SUBSCRIBE and REQUEST_SYNC. `reset` carries the state,
    /// which [`sync_reset`] splices in.
    Sync {
        graph_id: &'a str,
        epoch: &'a str,
        version: u64,
        status: SyncStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        changes: Option<&'a [ChangeEntry]>,
    },
    /// The command is in the queue. A resend says `duplicate`, and for a
    /// completed operation `status: "completed"` and its `version`.
    Accepted {
        graph_id: &'a str,
        operation_id: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// Version `version` of the graph. `command` is null when the change
    /// came from the log, which keeps no command text.
    CommandApplied {
        graph_id: &'a str,
        operation_id: &'a str,
        version: u64,
        user_id: &'a str,
        command: Option<&'a RawValue>,
        change: &'a RawValue,
    },
    /// The sender's command was not applied. `current` is left out when
    /// the REVERT is repeated for a resend.
    Revert {
        graph_id: &'a str,
        operation_id: &'a str,
        error: RevertError<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        current: Option<&'a RawValue>,
    },
    /// A field the sender's command changed was changed by someone else first.
    Conflict {
        graph_id: &'a str,
        operation_id: &'a str,
        field: Option<&'a RawValue>,
        client_value: Option<&'a RawValue>,
        server_value: Option<&'a RawValue>,
        strategy: Option<&'a RawValue>,
    },
    Presence {
        graph_id: &'a str,
        user_id: &'a str,
        cursor: Option<&'a RawValue>,
        selection: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        preview: Option<&'a RawValue>,
    },
    PresenceLeave {
        graph_id: &'a str,
        user_id: &'a str,
    },
    /// A refused frame or command; the socket stays open.
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        operation_id: Option<&'a str>,
    },
    Heartbeat {
        server_time: u64,
    },
    /// The answer to a REFRESH that was accepted: the socket now holds the
    /// new token, whose rights end at `expires_at` (ms since the Unix epoch).
    Refreshed {
        expires_at: u64,
    },
    /// The gateway ended a subscription: after a REFRESH, the new token no
    /// longer grants the graph (`code` FORBIDDEN).
    Unsubscribed {
        graph_id: &'a str,
        code: &'a str,
        message: &'a str,
    },
}

/// What a SYNC tells the client to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// It has the graph's version.
    InSync,
    /// Apply `changes`, oldest first.
    Behind,
    /// Replace everything with `state`.
    Reset,
}

/// The `error` of a REVERT.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RevertError<'a> {
    /// From the outcome the graph script published.
    Outcome {
        code: Option<&'a RawValue>,
        message: Option<&'a RawValue>,
    },
    /// As the operation index keeps it (a REVERT repeated for a resend).
    Stored(Option<&'a Value>),
}

impl ServerMessage<'_> {
    /// The frame's text.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and already-valid JSON text: nothing here
        // can fail to serialize.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// `SYNC reset` with the graph's `state`, JSON text as the store read it:
/// spliced in rather than parsed and re-encoded (it can be megabytes).
pub fn sync_reset(graph_id: &str, epoch: &str, version: u64, state: &str) -> String {
    let mut frame = ServerMessage::Sync {
        graph_id,
        epoch,
        version,
        status: SyncStatus::Reset,
        changes: None,
    }
    .to_json();
    frame.pop(); // the closing brace
    frame.reserve(state.len() + 10);
    frame.push_str(",\"state\":");
    frame.push_str(state);
    frame.push('}');
    frame
}

/// Why the gateway closed a socket (docs/protocol.md, "Close codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client left, or the socket ended without a reason to give.
    Normal = 1000,
    /// The gateway is shutting down; reconnect and resubscribe.
    GoingAway = 1001,
    /// A frame that breaks the WebSocket protocol: a continuation without
    /// a start, a reserved bit or opcode, an unmasked frame.
    ProtocolError = 1002,
    /// A text frame that is not UTF-8.
    InvalidPayload = 1007,
    /// A frame larger than `gateway.max_frame_bytes`.
    TooLarge = 1009,
    /// Nothing received for `gateway.idle_timeout_ms`.
    Idle = 4002,
    /// The token's `exp` passed without a REFRESH: reconnect with a new token.
    TokenExpired = 4003,
    /// The send queue overflowed: the client did not keep up.
    TooSlow = 4008,
    /// The user already has `gateway.max_sockets_per_user` open sockets.
    TooManyConnections = 4009,
}

impl CloseCode {
    /// Every close code, for checks that cover them all.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::TooLarge,
        CloseCode::Idle,
        CloseCode::TooSlow,
        CloseCode::TokenExpired,
        CloseCode::TooManyConnections,
    ];

    /// The reason sent in the close frame.
    pub fn description(self) -> &'static str {
        match self {
            CloseCode::Normal => "",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::InvalidPayload => "text frame is not UTF-8",
            CloseCode::TooLarge => "frame too large",
            CloseCode::Idle => "silent for too long",
            CloseCode::TooSlow => "too slow: send queue full; resubscribe",
            CloseCode::TokenExpired => "token expired",
            CloseCode::TooManyConnections => "too many connections",
        }
    }

    pub fn from_u16(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| *c as u16 == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn client_messages_parse_into_their_variants() {
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"SUBSCRIBE","graphId":"g1","clientVersion":3,"epoch":"e"}"#
            ),
            Ok(ClientMessage::Subscribe {
                graph_id: "g1".into(),
                client_version: Some(3),
                epoch: Some("e".into()),
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"REQUEST_SYNC","graphId":"g1","clientVersion":null}"#),
            Ok(ClientMessage::RequestSync {
                graph_id: "g1".into(),
                client_version: None,
                epoch: None,
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"UNSUBSCRIBE","graphId":"g1"}"#),
            Ok(ClientMessage::Unsubscribe {
                graph_id: "g1".into()
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"COMMAND","graphId":"g1","command":{"a":1}}"#),
            Ok(ClientMessage::Command {
                graph_id: "g1".into(),
                command: serde_json::json!({"a": 1}),
            })
        );
        // Left out and null differ: null clears, absent keeps.
        assert_eq!(
            ClientMessage::parse(r#"{"type":"PRESENCE","graphId":"g1","selection":null}"#),
            Ok(ClientMessage::Presence {
                graph_id: "g1".into(),
                cursor: None,
                selection: Some(Value::Null),
                name: None,
                preview: None,
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"HEARTBEAT","extra":[1]}"#),
            Ok(ClientMessage::Heartbeat)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"REFRESH","token":"t"}"#),
            Ok(ClientMessage::Refresh { token: "t".into() })
        );
    }

    #[test]
    fn malformed_client_messages_get_the_documented_errors() {
        let refused = |text: &str| ClientMessage::parse(text).unwrap_err();
        assert_eq!(refused("nope").code, "INVALID_JSON");
        assert!(refused("nope").message.starts_with("not valid JSON: "));
        assert_eq!(
            refused("[]"),
            Refusal::invalid("every message has a string `type`")
        );
        assert_eq!(
            refused(r#"{"type":5}"#),
            Refusal::invalid("every message has a string `type`")
        );
        assert_eq!(
            refused(r#"{"type":"DANCE","graphId":7}"#),
            Refusal {
                code: "UNKNOWN_TYPE",
                message: "unknown message type `DANCE`".into()
            }
        );
        // A key given twice, in the frame or in its command, comes next.
        for text in [
            r#"{"type":"SUBSCRIBE","type":"DANCE","graphId":"g1"}"#,
            r#"{"type":"COMMAND","graphId":"g1","command":{"type":"A","type":"B"}}"#,
        ] {
            assert_eq!(refused(text).code, "DUPLICATE_KEY", "{text}");
        }
        assert!(
            refused(r#"{"type":"COMMAND","graphId":"g1","command":{"type":"A","type":"B"}}"#)
                .message
                .contains("`command.type`")
        );
        // graphId is named first, whatever else is wrong.
        assert_eq!(
            refused(r#"{"type":"SUBSCRIBE","clientVersion":"x"}"#),
            Refusal::invalid("SUBSCRIBE needs a string `graphId`")
        );
        assert_eq!(
            refused(r#"{"type":"COMMAND","graphId":1}"#),
            Refusal::invalid("COMMAND needs a string `graphId`")
        );
        assert_eq!(
            refused(r#"{"type":"COMMAND","graphId":"g1"}"#),
            Refusal::invalid("COMMAND needs a `command` object")
        );
        for bad in ["-1", "1e30", "\"3\"", "2.5"] {
            assert_eq!(
                refused(&format!(
                    r#"{{"type":"REQUEST_SYNC","graphId":"g1","clientVersion":{bad}}}"#
                )),
                Refusal::invalid("clientVersion is a non-negative integer"),
                "{bad}"
            );
        }
        assert_eq!(
            refused(r#"{"type":"SUBSCRIBE","graphId":"g1","epoch":7}"#),
            Refusal::invalid("epoch is a string")
        );
        for bad in [r#"{"type":"REFRESH"}"#, r#"{"type":"REFRESH","token":7}"#] {
            assert_eq!(
                refused(bad),
                Refusal::invalid("REFRESH needs a string `token`"),
                "{bad}"
            );
        }
        // A null command is left to the command validator.
        assert!(
            ClientMessage::parse(r#"{"type":"COMMAND","graphId":"g1","command":null}"#).is_ok()
        );
    }

    #[test]
    fn server_messages_have_the_documented_shapes() {
        let change = raw(r#"{"op":"node.create","id":"n1"}"#);
        let command = raw(r#"{"operationId":"o1","type":"CREATE_NODE"}"#);
        let (code, message, null) = (raw(r#""NOT_FOUND""#), raw(r#""no node n9""#), raw("null"));
        let stored = serde_json::json!({"code": "NOT_FOUND"});
        let (field, ours, theirs) = (raw(r#""data.label""#), raw(r#""a""#), raw(r#""b""#));
        let cursor = raw(r#"{"x":1,"y":2}"#);
        let cases: Vec<(ServerMessage, &str)> = vec![
            (
                ServerMessage::Sync {
                    graph_id: "g1",
                    epoch: "e1",
                    version: 4,
                    status: SyncStatus::InSync,
                    changes: None,
                },
                r#"{"type":"SYNC","graphId":"g1","epoch":"e1","version":4,"status":"in_sync"}"#,
            ),
            (
                ServerMessage::Sync {
                    graph_id: "g1",
                    epoch: "e1",
                    version: 4,
                    status: SyncStatus::Behind,
                    changes: Some(&[]),
                },
                r#"{"type":"SYNC","graphId":"g1","epoch":"e1","version":4,"status":"behind","changes":[]}"#,
            ),
            (
                ServerMessage::Accepted {
                    graph_id: "g1",
                    operation_id: "o1",
                    duplicate: false,
                    status: None,
                    version: None,
                },
                r#"{"type":"ACCEPTED","graphId":"g1","operationId":"o1"}"#,
            ),
            (
                ServerMessage::Accepted {
                    graph_id: "g1",
                    operation_id: "o1",
                    duplicate: true,
                    status: Some("completed"),
                    version: Some(9),
                },
                r#"{"type":"ACCEPTED","graphId":"g1","operationId":"o1","duplicate":true,"status":"completed","version":9}"#,
            ),
            (
                ServerMessage::CommandApplied {
                    graph_id: "g1",
                    operation_id: "o1",
                    version: 5,
                    user_id: "alice",
                    command: Some(&command),
                    change: &change,
                },
                r#"{"type":"COMMAND_APPLIED","graphId":"g1","operationId":"o1","version":5,"userId":"alice","command":{"operationId":"o1","type":"CREATE_NODE"},"change":{"op":"node.create","id":"n1"}}"#,
            ),
            (
                ServerMessage::Revert {
                    graph_id: "g1",
                    operation_id: "o1",
                    error: RevertError::Outcome {
                        code: Some(&code),
                        message: Some(&message),
                    },
                    current: Some(&null),
                },
                r#"{"type":"REVERT","graphId":"g1","operationId":"o1","error":{"code":"NOT_FOUND","message":"no node n9"},"current":null}"#,
            ),
            (
                ServerMessage::Revert {
                    graph_id: "g1",
                    operation_id: "o1",
                    error: RevertError::Stored(Some(&stored)),
                    current: None,
                },
                r#"{"type":"REVERT","graphId":"g1","operationId":"o1","error":{"code":"NOT_FOUND"}}"#,
            ),
            (
                ServerMessage::Conflict {
                    graph_id: "g1",
                    operation_id: "o1",
                    field: Some(&field),
                    client_value: Some(&ours),
                    server_value: Some(&theirs),
                    strategy: None,
                },
                r#"{"type":"CONFLICT","graphId":"g1","operationId":"o1","field":"data.label","clientValue":"a","serverValue":"b","strategy":null}"#,
            ),
            (
                ServerMessage::Presence {
                    graph_id: "g1",
                    user_id: "bob",
                    cursor: Some(&cursor),
                    selection: None,
                    name: None,
                    preview: None,
                },
                r#"{"type":"PRESENCE","graphId":"g1","userId":"bob","cursor":{"x":1,"y":2},"selection":null}"#,
            ),
            (
                ServerMessage::PresenceLeave {
                    graph_id: "g1",
                    user_id: "bob",
                },
                r#"{"type":"PRESENCE_LEAVE","graphId":"g1","userId":"bob"}"#,
            ),
            (
                ServerMessage::Error {
                    code: "RATE_LIMITED",
                    message: "slow down",
                    field: None,
                    retry_after_ms: Some(40),
                    operation_id: Some("o1"),
                },
                r#"{"type":"ERROR","code":"RATE_LIMITED","message":"slow down","retryAfterMs":40,"operationId":"o1"}"#,
            ),
            (
                ServerMessage::Error {
                    code: "TOO_LARGE",
                    message: "m",
                    field: Some(""),
                    retry_after_ms: None,
                    operation_id: None,
                },
                r#"{"type":"ERROR","code":"TOO_LARGE","message":"m","field":""}"#,
            ),
            (
                ServerMessage::Heartbeat { server_time: 17 },
                r#"{"type":"HEARTBEAT","serverTime":17}"#,
            ),
            (
                ServerMessage::Refreshed {
                    expires_at: 1_763_800_000_000,
                },
                r#"{"type":"REFRESHED","expiresAt":1763800000000}"#,
            ),
            (
                ServerMessage::Unsubscribed {
                    graph_id: "g2",
                    code: "FORBIDDEN",
                    message: "m",
                },
                r#"{"type":"UNSUBSCRIBED","graphId":"g2","code":"FORBIDDEN","message":"m"}"#,
            ),
        ];
        for (message, want) in cases {
            assert_eq!(message.to_json(), want);
        }
    }

    #[test]
    fn a_reset_sync_carries_the_state_text_unchanged() {
        let state = r#"{"graphId":"g\"1","nodes":[{"id":"n1","data":{"z":1,"a":2}}]}"#;
        let frame = sync_reset("g\"1", "e1", 7, state);
        assert_eq!(
            frame,
            format!(
                r#"{{"type":"SYNC","graphId":"g\"1","epoch":"e1","version":7,"status":"reset","state":{state}}}"#
            )
        );
        let parsed: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed["state"]["nodes"][0]["id"], "n1");
    }

    #[test]
    fn close_codes_are_distinct_and_described() {
        let mut numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| *c as u16).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), CloseCode::ALL.len());
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_u16(code as u16), Some(code));
        }
        assert_eq!(CloseCode::TooSlow as u16, 4008);
        assert_eq!(CloseCode::TooManyConnections as u16, 4009);
        assert_eq!(CloseCode::Idle as u16, 4002);
        assert_eq!(CloseCode::TokenExpired as u16, 4003);
        assert_eq!(CloseCode::TooLarge as u16, 1009);
        assert_eq!(CloseCode::InvalidPayload as u16, 1007);
        assert_eq!(CloseCode::ProtocolError as u16, 1002);
        assert_eq!(CloseCode::GoingAway as u16, 1001);
        assert_eq!(CloseCode::from_u16(0), None);
    }
}
