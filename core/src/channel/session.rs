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
        /// When the GET that arrived after the probe gets its noop (see
        /// [`super::UPGRADE_NOOP_DELAY_MS`]).
        noop_at: Option<u64>,
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

/// A session's sockets by namespace, sorted by namespace.
///
/// A session almost always has one or two namespaces, so a sorted vector beats a `BTreeMap` here:
/// the map's first node reserves room for eleven entries, which made it the largest single cost
/// of an idle connection (about 1.9 KB of its 8).
#[derive(Debug, Default)]
pub(super) struct SocketMap(Vec<(String, SocketState)>);

impl SocketMap {
    fn position(&self, namespace: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(existing, _)| existing.as_str().cmp(namespace))
    }

    pub fn get(&self, namespace: &str) -> Option<&SocketState> {
        let index = self.position(namespace).ok()?;
        Some(&self.0[index].1)
    }

    pub fn get_mut(&mut self, namespace: &str) -> Option<&mut SocketState> {
        let index = self.position(namespace).ok()?;
        Some(&mut self.0[index].1)
    }

    /// Adds or replaces the socket of `namespace`.
    pub fn insert(&mut self, namespace: String, socket: SocketState) {
        match self.position(&namespace) {
            Ok(index) => self.0[index].1 = socket,
            Err(index) => {
                // Exact growth: a vector's first allocation would otherwise hold four sockets.
                self.0.reserve_exact(1);
                self.0.insert(index, (namespace, socket));
            }
        }
    }

    pub fn remove(&mut self, namespace: &str) -> Option<SocketState> {
        let index = self.position(namespace).ok()?;
        Some(self.0.remove(index).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(namespace, _)| namespace)
    }

    pub fn values(&self) -> impl Iterator<Item = &SocketState> {
        self.0.iter().map(|(_, socket)| socket)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut SocketState> {
        self.0.iter_mut().map(|(_, socket)| socket)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SocketState)> {
        self.0.iter().map(|(namespace, socket)| (namespace, socket))
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
    pub sockets: SocketMap,
    /// A binary packet whose attachments are still arriving.
    /// Boxed: rare, and large next to the rest of an idle session.
    pub partial: Option<Box<PartialBinaryPacket>>,
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
            sockets: SocketMap::default(),
            partial: None,
        }
    }

    /// The earliest moment something must happen to this session.
    pub fn next_deadline(&self) -> Option<u64> {
        let (upgrade, upgrade_noop) = match self.transport {
            Transport::Upgrading {
                deadline, noop_at, ..
            } => (Some(deadline), noop_at),
            _ => (None, None),
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
            upgrade_noop,
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
