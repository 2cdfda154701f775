//! Per-session state, and the small serializable snapshot a restarted host rebuilds it from.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ConnId, Frames};
use crate::socketio::PartialBinaryPacket;

/// Most token-granted rooms kept per socket (bounds the snapshot a Durable Object stores).
pub const MAX_GRANTED_ROOMS: usize = 32;

/// CORS headers of a held request, kept to answer it later.
pub(super) type HeldRequest = (ConnId, Vec<(&'static str, String)>);

/// How a session currently reaches its client.
#[derive(Debug)]
pub(super) enum Transport {
    /// HTTP long-polling; `held_get` is the GET waiting for something to send.
    Polling {
        held_get: Option<HeldRequest>,
    },
    /// Polling, while a WebSocket probes an upgrade.
    Upgrading {
        held_get: Option<HeldRequest>,
        probe: ConnId,
        /// The probe ping was answered; polls now end with a noop.
        probed: bool,
        deadline: u64,
    },
    WebSocket {
        conn: ConnId,
    },
}

/// A server emit waiting for the client's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PendingAck {
    pub token: u64,
    pub deadline: u64,
}

/// One Socket.IO socket: a session's membership in one namespace.
#[derive(Debug)]
pub(super) struct SocketState {
    pub id: String,
    pub rooms: BTreeSet<String>,
    /// The token's subject, on private channels.
    pub user: Option<String>,
    /// Rooms the token lets this socket join on its own.
    pub granted_rooms: Vec<String>,
    /// Rate limit bucket: (milli-events available, when last refilled). Not snapshotted: a rebuilt
    /// channel starts with a full bucket.
    pub allowance: Option<(u64, u64)>,
    /// Next id for a server emit that asks for an ack.
    pub next_ack_id: u64,
    pub pending_acks: BTreeMap<u64, PendingAck>,
}

impl SocketState {
    pub fn new(id: String) -> Self {
        Self {
            id,
            rooms: BTreeSet::new(),
            user: None,
            granted_rooms: Vec::new(),
            allowance: None,
            next_ack_id: 0,
            pending_acks: BTreeMap::new(),
        }
    }

    /// Takes one event from the token bucket (capacity: one second's worth); false when empty.
    pub fn take_event_allowance(&mut self, rate: u64, now: u64) -> bool {
        let capacity = rate.saturating_mul(1000);
        let (available, refilled_at) = self.allowance.unwrap_or((capacity, now));
        let elapsed = now.saturating_sub(refilled_at);
        let available = available
            .saturating_add(elapsed.saturating_mul(rate))
            .min(capacity);
        if available >= 1000 {
            self.allowance = Some((available - 1000, now));
            true
        } else {
            self.allowance = Some((available, now));
            false
        }
    }

    pub fn from_snapshot(snapshot: SocketSnapshot) -> Self {
        Self {
            id: snapshot.id,
            rooms: snapshot.rooms.into_iter().collect(),
            user: snapshot.user,
            granted_rooms: snapshot.granted_rooms,
            allowance: None,
            next_ack_id: snapshot.next_ack_id,
            pending_acks: snapshot
                .pending_acks
                .into_iter()
                .map(|(id, token, deadline)| (id, PendingAck { token, deadline }))
                .collect(),
        }
    }
}

/// One Engine.IO session.
#[derive(Debug)]
pub(super) struct Session {
    pub sid: String,
    /// When the session opened (host clock), kept across restarts.
    pub connected_at: u64,
    pub transport: Transport,
    /// Frames waiting for the next polling GET.
    pub poll_queue: Vec<Frames>,
    pub next_ping_at: Option<u64>,
    pub pong_deadline: Option<u64>,
    /// Under batched heartbeats: when the unanswered ping of the current round was sent.
    pub awaiting_pong_since: Option<u64>,
    /// Set until the client connects to a first namespace.
    pub connect_deadline: Option<u64>,
    /// Namespace → socket.
    pub sockets: BTreeMap<String, SocketState>,
    /// A binary packet whose attachments are still arriving.
    pub partial: Option<PartialBinaryPacket>,
}

impl Session {
    pub fn new(sid: String, transport: Transport, connected_at: u64) -> Self {
        Self {
            sid,
            connected_at,
            transport,
            poll_queue: Vec::new(),
            next_ping_at: None,
            pong_deadline: None,
            awaiting_pong_since: None,
            connect_deadline: None,
            sockets: BTreeMap::new(),
            partial: None,
        }
    }

    /// The earliest moment something must happen to this session.
    pub fn next_deadline(&self) -> Option<u64> {
        let upgrade = match self.transport {
            Transport::Upgrading { deadline, .. } => Some(deadline),
            _ => None,
        };
        let acks = self
            .sockets
            .values()
            .flat_map(|socket| socket.pending_acks.values().map(|ack| ack.deadline))
            .min();
        [
            self.next_ping_at,
            self.pong_deadline,
            self.connect_deadline,
            upgrade,
            acks,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes acks whose deadline passed and returns their tokens.
    pub fn take_expired_acks(&mut self, now: u64) -> Vec<u64> {
        let mut expired = Vec::new();
        for socket in self.sockets.values_mut() {
            socket.pending_acks.retain(|_, ack| {
                let keep = ack.deadline > now;
                if !keep {
                    expired.push(ack.token);
                }
                keep
            });
        }
        expired
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            sid: self.sid.clone(),
            awaiting_connect: self.connect_deadline.is_some(),
            connected_at: self.connected_at,
            sockets: self
                .sockets
                .iter()
                .map(|(namespace, socket)| SocketSnapshot {
                    namespace: namespace.clone(),
                    id: socket.id.clone(),
                    rooms: socket.rooms.iter().cloned().collect(),
                    user: socket.user.clone(),
                    granted_rooms: socket.granted_rooms.clone(),
                    next_ack_id: socket.next_ack_id,
                    pending_acks: socket
                        .pending_acks
                        .iter()
                        .map(|(id, ack)| (*id, ack.token, ack.deadline))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Everything needed to rebuild a WebSocket session after the host restarts: small and serializable
/// (a Durable Object keeps it as the WebSocket's attachment).
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
