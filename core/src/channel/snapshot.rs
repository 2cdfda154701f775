//! What a host that can be restarted (a hibernating Durable Object) keeps of each WebSocket
//! session: small and serializable, stored as the WebSocket's attachment.

use serde::{Deserialize, Serialize};

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
}
