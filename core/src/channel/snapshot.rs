//! What a host that can be restarted (a hibernating Durable Object) keeps of each WebSocket
//! session: small and serializable, stored as the WebSocket's attachment.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::ClientInfo;

/// Everything needed to rebuild a WebSocket session after the host restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    pub sid: String,
    /// True until the client joins its first namespace (the connect timeout still applies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_connect: bool,
    /// When the session opened (host clock, milliseconds since the epoch).
    #[serde(default)]
    pub connected_at: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketSnapshot>,
    /// The handshake's forwarded headers and address, on channels whose connect hook sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// Backend calls made for this session and not answered yet: a rebuilt channel still answers
    /// them when the answer comes, or times them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallSnapshot>,
}

/// A backend call in flight, inside a [`SessionSnapshot`]. Its JSON is one flat object, the
/// call's fields then its kind's (`"kind": "event"` or `"connect"`), as `#[serde(flatten)]` of an
/// internally tagged enum would write it; it goes through `CallSnapshotFields` instead, which
/// spares the edge wasm serde's buffered `Content` machinery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CallSnapshotFields", into = "CallSnapshotFields")]
pub struct CallSnapshot {
    /// The host's name for the call.
    pub id: u64,
    pub deadline: u64,
    pub namespace: String,
    /// The call's socket id: the sender's, or the one a connect hook's socket will get.
    pub socket: String,
    pub kind: CallSnapshotKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallSnapshotKind {
    /// A client event's handler; `ack` is the client's ack id, if it asked for one.
    Event { event: String, ack: Option<u64> },
    /// The connect hook, with what the token granted.
    Connect {
        user: Option<String>,
        granted_rooms: Vec<String>,
        /// When the token expires (ms since the epoch).
        expires_at: Option<u64>,
    },
}

/// A [`CallSnapshot`] as stored: the fields of both kinds, those of the other kind left out.
#[derive(Serialize, Deserialize)]
struct CallSnapshotFields {
    id: u64,
    deadline: u64,
    namespace: String,
    socket: String,
    kind: CallKindName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    /// Written for every event call (`null` when the client asked for no ack), never for a
    /// connect hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    granted_rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CallKindName {
    Event,
    Connect,
}

impl From<CallSnapshot> for CallSnapshotFields {
    fn from(call: CallSnapshot) -> Self {
        let mut fields = CallSnapshotFields {
            id: call.id,
            deadline: call.deadline,
            namespace: call.namespace,
            socket: call.socket,
            kind: CallKindName::Event,
            event: None,
            ack: None,
            user: None,
            granted_rooms: Vec::new(),
            expires_at: None,
        };
        match call.kind {
            CallSnapshotKind::Event { event, ack } => {
                fields.event = Some(event);
                fields.ack = Some(ack);
            }
            CallSnapshotKind::Connect {
                user,
                granted_rooms,
                expires_at,
            } => {
                fields.kind = CallKindName::Connect;
                fields.user = user;
                fields.granted_rooms = granted_rooms;
                fields.expires_at = expires_at;
            }
        }
        fields
    }
}

impl TryFrom<CallSnapshotFields> for CallSnapshot {
    type Error = &'static str;

    fn try_from(fields: CallSnapshotFields) -> Result<Self, Self::Error> {
        let kind = match fields.kind {
            CallKindName::Event => CallSnapshotKind::Event {
                event: fields.event.ok_or("missing field `event`")?,
                ack: fields.ack.flatten(),
            },
            CallKindName::Connect => CallSnapshotKind::Connect {
                user: fields.user,
                granted_rooms: fields.granted_rooms,
                expires_at: fields.expires_at,
            },
        };
        Ok(CallSnapshot {
            id: fields.id,
            deadline: fields.deadline,
            namespace: fields.namespace,
            socket: fields.socket,
            kind,
        })
    }
}

/// One namespace membership inside a [`SessionSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSnapshot {
    pub namespace: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    /// The token's subject, on private channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Rooms the token lets the socket join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_rooms: Vec<String>,
    #[serde(default)]
    pub next_ack_id: u64,
    /// (ack id, host token, deadline) of server emits still waiting for an ack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_acks: Vec<(u64, u64, u64)>,
    /// What the connect hook said of the user (`user.info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<Value>,
    /// Data the connect hook kept on the socket, sent with each handler call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// When the socket's token expires (ms since the epoch), on private channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Connection-state recovery: the socket's private id, and the history's newest event when
    /// it connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn call(kind: CallSnapshotKind) -> CallSnapshot {
        CallSnapshot {
            id: 7,
            deadline: 9,
            namespace: "/".into(),
            socket: "s1".into(),
            kind,
        }
    }

    /// The stored form of calls, which attachments written by earlier builds also have.
    #[test]
    fn calls_are_stored_as_flat_objects() {
        let cases = [
            (
                call(CallSnapshotKind::Event {
                    event: "e".into(),
                    ack: None,
                }),
                r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"event","event":"e","ack":null}"#,
            ),
            (
                call(CallSnapshotKind::Event {
                    event: "e".into(),
                    ack: Some(3),
                }),
                r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"event","event":"e","ack":3}"#,
            ),
            (
                call(CallSnapshotKind::Connect {
                    user: None,
                    granted_rooms: Vec::new(),
                    expires_at: None,
                }),
                r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"connect"}"#,
            ),
            (
                call(CallSnapshotKind::Connect {
                    user: Some("u".into()),
                    granted_rooms: vec!["r".into()],
                    expires_at: Some(5),
                }),
                r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"connect","user":"u","granted_rooms":["r"],"expires_at":5}"#,
            ),
        ];
        for (call, text) in cases {
            assert_eq!(serde_json::to_string(&call).unwrap(), text);
            assert_eq!(serde_json::from_str::<CallSnapshot>(text).unwrap(), call);
        }
        // An event call without `ack` (as `Option` fields may be) still reads.
        let text =
            r#"{"kind":"event","event":"e","id":7,"deadline":9,"namespace":"/","socket":"s1"}"#;
        assert_eq!(
            serde_json::from_str::<CallSnapshot>(text).unwrap().kind,
            CallSnapshotKind::Event {
                event: "e".into(),
                ack: None
            }
        );
        for bad in [
            r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"event"}"#,
            r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1","kind":"other"}"#,
            r#"{"id":7,"deadline":9,"namespace":"/","socket":"s1"}"#,
        ] {
            assert!(serde_json::from_str::<CallSnapshot>(bad).is_err(), "{bad}");
        }
    }
}
