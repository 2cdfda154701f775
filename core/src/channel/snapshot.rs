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

/// A backend call in flight, inside a [`SessionSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The host's name for the call.
    pub id: u64,
    pub deadline: u64,
    pub namespace: String,
    /// The call's socket id: the sender's, or the one a connect hook's socket will get.
    pub socket: String,
    #[serde(flatten)]
    pub kind: CallSnapshotKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallSnapshotKind {
    /// A client event's handler; `ack` is the client's ack id, if it asked for one.
    Event { event: String, ack: Option<u64> },
    /// The connect hook, with what the token granted.
    Connect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        granted_rooms: Vec<String>,
        /// When the token expires (ms since the epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
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
