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
///
/// Kept small (see `a_socket_stays_small`): an idle connection is mostly this, its session and
/// its transport. What only some sockets have (a user, acks awaited, hook data, recovery) is
/// boxed, so a public channel's socket pays a pointer for each.
#[derive(Debug)]
pub(crate) struct SocketState {
    pub id: String,
    pub rooms: BTreeSet<String>,
    /// Who the token or the connect hook says the socket is, and what its token grants.
    identity: Option<Box<Identity>>,
    /// The rate limit's token bucket. Not snapshotted: a rebuilt channel starts with a full one.
    pub allowance: Allowance,
    /// Server emits waiting for this socket's acknowledgement.
    acks: Option<Box<ServerAcks>>,
    /// Handler calls this socket has waiting for the backend.
    pub calls_in_flight: u16,
    /// What the connect hook kept on the socket. Boxed: most sockets have none.
    pub hook: Option<Box<HookData>>,
    /// Its private id and where the history stood, on channels with connection-state recovery.
    pub recovery: Option<Box<SocketRecovery>>,
}

/// Who a socket is, on private channels and behind a connect hook.
#[derive(Debug, Default)]
struct Identity {
    /// The token's subject, or the hook's `user.id`.
    user: Option<String>,
    /// Rooms the token lets this socket join on its own.
    granted_rooms: Vec<String>,
    /// When its token expires (ms since the epoch): the socket is disconnected then unless the
    /// client refreshed the token.
    expires_at: Option<u64>,
}

/// The server emits a socket has yet to acknowledge.
#[derive(Debug, Default)]
struct ServerAcks {
    /// Next id for a server emit that asks for an ack.
    next_id: u64,
    pending: BTreeMap<u64, PendingAck>,
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
            identity: None,
            allowance: Allowance::default(),
            acks: None,
            calls_in_flight: 0,
            hook: None,
            recovery: None,
        }
    }

    /// The token's subject or the hook's user id.
    pub fn user(&self) -> Option<&str> {
        self.identity.as_ref()?.user.as_deref()
    }

    /// Rooms the token lets this socket join on its own.
    pub fn granted_rooms(&self) -> &[String] {
        self.identity
            .as_ref()
            .map_or(&[], |identity| &identity.granted_rooms)
    }

    /// When the socket's token expires, if it has one that does.
    pub fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref()?.expires_at
    }

    /// Sets who the socket is; boxed only when there is something to keep.
    pub fn set_identity(
        &mut self,
        user: Option<String>,
        mut granted_rooms: Vec<String>,
        expires_at: Option<u64>,
    ) {
        granted_rooms.truncate(MAX_GRANTED_ROOMS);
        self.identity =
            (user.is_some() || !granted_rooms.is_empty() || expires_at.is_some()).then(|| {
                Box::new(Identity {
                    user,
                    granted_rooms,
                    expires_at,
                })
            });
    }

    /// The token's grant changed (a refresh): same user, new rooms and expiry.
    pub fn set_grant(&mut self, granted_rooms: Vec<String>, expires_at: Option<u64>) {
        let user = self.identity.take().and_then(|identity| identity.user);
        self.set_identity(user, granted_rooms, expires_at);
    }

    /// The connect hook named the user.
    pub fn set_user(&mut self, user: String) {
        let identity = self.identity.take().map(|identity| *identity);
        let Identity {
            granted_rooms,
            expires_at,
            ..
        } = identity.unwrap_or_default();
        self.set_identity(Some(user), granted_rooms, expires_at);
    }

    /// The id the next server emit asking this socket for an ack may take (at least).
    pub fn next_ack_id(&self) -> u64 {
        self.acks.as_ref().map_or(0, |acks| acks.next_id)
    }

    /// Server emits waiting for this socket's ack, by ack id.
    pub fn pending_acks(&self) -> impl Iterator<Item = (u64, &PendingAck)> {
        self.acks
            .iter()
            .flat_map(|acks| acks.pending.iter().map(|(id, ack)| (*id, ack)))
    }

    /// Waits for ack `id`; the next one takes a later id.
    pub fn await_ack(&mut self, id: u64, pending: PendingAck) {
        let acks = self.acks.get_or_insert_default();
        acks.next_id = acks.next_id.max(id + 1);
        acks.pending.insert(id, pending);
    }

    /// The emit ack `id` answers, if it is still awaited.
    pub fn take_pending_ack(&mut self, id: u64) -> Option<PendingAck> {
        self.acks.as_mut()?.pending.remove(&id)
    }

    /// Keeps only the awaited acks `keep` (given the socket's id) says to.
    pub fn retain_pending_acks(&mut self, mut keep: impl FnMut(&String, &PendingAck) -> bool) {
        if let Some(acks) = self.acks.as_mut() {
            acks.pending.retain(|_, ack| keep(&self.id, ack));
        }
    }

    /// Restores what a snapshot kept of the socket's acks.
    pub fn restore_acks(&mut self, next_id: u64, pending: BTreeMap<u64, PendingAck>) {
        self.acks =
            (next_id > 0 || !pending.is_empty()).then(|| Box::new(ServerAcks { next_id, pending }));
    }

    /// What connection-state recovery keeps of this socket in `namespace`.
    pub fn record(&self, namespace: &str, since: u64) -> SocketRecord {
        SocketRecord {
            namespace: namespace.to_string(),
            sid: self.id.clone(),
            rooms: self.rooms.iter().cloned().collect(),
            user: self.user().map(str::to_string),
            granted_rooms: self.granted_rooms().to_vec(),
            expires_at: self.expires_at(),
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
            .flat_map(|socket| socket.pending_acks().map(|(_, ack)| ack.deadline))
            .min();
        // While a connect hook decides, the connect timeout waits for its answer (the call has a
        // deadline of its own).
        let connect = self.connect_deadline.filter(|_| self.pending_connects == 0);
        let partial = self.partial.as_ref().map(|partial| partial.deadline);
        let expiry = self
            .sockets
            .values()
            .filter_map(SocketState::expires_at)
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
        assert!(std::mem::size_of::<super::SocketState>() <= 104);
        assert_eq!(std::mem::size_of::<super::Allowance>(), 16);
    }
}
