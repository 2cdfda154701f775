//! One session's Socket.IO state: its sockets (one per namespace it joined), a binary packet still
//! collecting its attachments, and the connect deadline.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::recovery::{SocketRecord, SocketRecovery};
use crate::backend::ClientInfo;
use crate::socketio::PartialBinaryPacket;

/// Most token-granted rooms kept per socket (bounds the snapshot a Durable Object stores).
pub const MAX_GRANTED_ROOMS: usize = 32;

/// A server emit waiting for the client's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingAck {
    pub token: u64,
    pub deadline: u64,
}

/// One Socket.IO socket: a session's membership in one namespace.
#[derive(Debug)]
pub(crate) struct SocketState {
    pub id: String,
    pub rooms: BTreeSet<String>,
    /// The token's subject, on private channels.
    pub user: Option<String>,
    /// Rooms the token lets this socket join on its own.
    pub granted_rooms: Vec<String>,
    /// When its token expires (ms since the epoch), on private channels: the socket is
    /// disconnected then unless the client refreshed the token.
    pub expires_at: Option<u64>,
    /// The rate limit's token bucket. Not snapshotted: a rebuilt channel starts with a full one.
    pub allowance: Allowance,
    /// Next id for a server emit that asks for an ack.
    pub next_ack_id: u64,
    pub pending_acks: BTreeMap<u64, PendingAck>,
    /// Handler calls this socket has waiting for the backend.
    pub calls_in_flight: u16,
    /// What the connect hook kept on the socket. Boxed: most sockets have none.
    pub hook: Option<Box<HookData>>,
    /// Its private id and where the history stood, on channels with connection-state recovery.
    pub recovery: Option<Box<SocketRecovery>>,
}

/// What a connect hook kept on a socket, sent along with each of its handler calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HookData {
    /// The hook's `user.info`.
    pub user_info: Option<Value>,
    pub data: Option<Value>,
}

impl SocketState {
    pub fn new(id: String) -> Self {
        Self {
            id,
            rooms: BTreeSet::new(),
            user: None,
            granted_rooms: Vec::new(),
            expires_at: None,
            allowance: Allowance::default(),
            next_ack_id: 0,
            pending_acks: BTreeMap::new(),
            calls_in_flight: 0,
            hook: None,
            recovery: None,
        }
    }

    /// What connection-state recovery keeps of this socket in `namespace`.
    pub fn record(&self, namespace: &str, since: u64) -> SocketRecord {
        SocketRecord {
            namespace: namespace.to_string(),
            sid: self.id.clone(),
            rooms: self.rooms.iter().cloned().collect(),
            user: self.user.clone(),
            granted_rooms: self.granted_rooms.clone(),
            expires_at: self.expires_at,
            user_info: self.hook.as_ref().and_then(|hook| hook.user_info.clone()),
            data: self.hook.as_ref().and_then(|hook| hook.data.clone()),
            since,
            disconnected_at: None,
            presence_left: false,
        }
    }

    /// Takes one event from the token bucket (capacity: one second's worth).
    pub fn take_event_allowance(&mut self, rate: u64, now: u64) -> RateVerdict {
        let bucket = &mut self.allowance;
        let capacity = rate.saturating_mul(1000);
        let (available, refilled_at) = match bucket.refilled_at {
            // Never used: full.
            0 => (capacity, now),
            at => (u64::from(bucket.available), at),
        };
        let elapsed = now.saturating_sub(refilled_at);
        let available = available
            .saturating_add(elapsed.saturating_mul(rate))
            .min(capacity);
        // At most the capacity, and rates are at most a million a second: it fits.
        let store = |available: u64| u32::try_from(available).unwrap_or(u32::MAX);
        bucket.refilled_at = now.max(1);
        if available >= 1000 {
            bucket.available = store(available - 1000);
            bucket.refused_in_a_row = 0;
            return RateVerdict::Allowed;
        }
        bucket.available = store(available);
        bucket.refused_in_a_row = bucket.refused_in_a_row.saturating_add(1);
        if u64::from(bucket.refused_in_a_row) > rate {
            RateVerdict::Flooding
        } else {
            RateVerdict::Refused {
                first: bucket.refused_in_a_row == 1,
            }
        }
    }
}

/// A socket's token bucket for client events, in 16 bytes: milli-events available, when it was
/// last refilled (0: never, so full), and the events refused since the last one allowed (see
/// [`RateVerdict`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Allowance {
    pub refilled_at: u64,
    pub available: u32,
    pub refused_in_a_row: u32,
}

/// What the rate limit says of one client event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateVerdict {
    Allowed,
    /// Over the rate: the event is refused and the client told (`first` of a run of refusals).
    Refused {
        first: bool,
    },
    /// Another second's worth of events refused in a row: the client ignores the refusals, and
    /// its socket is disconnected.
    Flooding,
}

/// A session's sockets by namespace, sorted by namespace.
///
/// A session almost always has one or two namespaces, so a sorted vector beats a `BTreeMap` here:
/// the map's first node reserves room for eleven entries, which made it the largest single cost
/// of an idle connection (about 1.9 KB of its 8).
#[derive(Debug, Default)]
pub(crate) struct SocketMap(Vec<(String, SocketState)>);

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

    pub fn drain(&mut self) -> impl Iterator<Item = (String, SocketState)> + '_ {
        self.0.drain(..)
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

/// How long a binary packet's attachments may take to arrive after its header. A client sends
/// them right after it; one that stops halfway would otherwise keep them buffered for good.
pub const BINARY_DEADLINE_MS: u64 = 10_000;

/// A binary packet still collecting its attachments, and when it must be complete.
#[derive(Debug)]
pub(crate) struct PartialPacket {
    pub packet: PartialBinaryPacket,
    pub deadline: u64,
}

/// What the Socket.IO layer keeps per Engine.IO session.
#[derive(Debug, Default)]
pub(crate) struct SioSession {
    /// Namespace → socket.
    pub sockets: SocketMap,
    /// A binary packet whose attachments are still arriving.
    /// Boxed: rare, and large next to the rest of an idle session.
    pub partial: Option<Box<PartialPacket>>,
    /// Set until the client connects to a first namespace.
    pub connect_deadline: Option<u64>,
    /// The handshake's headers and address, kept on channels whose connect hook sees them.
    pub client: Option<Box<ClientInfo>>,
    /// Connect hooks in flight for this session.
    pub pending_connects: u8,
}

impl SioSession {
    /// The earliest moment something must happen to this session's sockets.
    pub fn next_deadline(&self) -> Option<u64> {
        let acks = self
            .sockets
            .values()
            .flat_map(|socket| socket.pending_acks.values().map(|ack| ack.deadline))
            .min();
        // While a connect hook decides, the connect timeout waits for its answer (the call has a
        // deadline of its own).
        let connect = self.connect_deadline.filter(|_| self.pending_connects == 0);
        let partial = self.partial.as_ref().map(|partial| partial.deadline);
        let expiry = self
            .sockets
            .values()
            .filter_map(|socket| socket.expires_at)
            .min();
        [connect, acks, partial, expiry].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    /// Every connected socket carries one: its size is idle memory per connection (the benchmark
    /// measures it whole). Grow it on purpose, not by accident.
    #[test]
    fn a_socket_stays_small() {
        assert!(std::mem::size_of::<super::SocketState>() <= 184);
        assert_eq!(std::mem::size_of::<super::Allowance>(), 16);
    }
}
