//! One channel, as a sans-IO state machine: its Engine.IO sessions and its Socket.IO sockets.
//!
//! # Two layers
//!
//! A [`Channel`] is a thin facade over two layers, in the way quinn-proto splits endpoint and
//! connection:
//!
//! - the **engine** (`engine/`) owns Engine.IO sessions, their transports (polling, WebSocket, the
//!   upgrade), heartbeats and its timers. It returns events (a session opened, a message arrived,
//!   a session closed) and never calls up;
//! - the **Socket.IO layer** (`sockets/`) owns namespaces, sockets, rooms, acknowledgements and the
//!   channel's [`Behaviour`](crate::behaviour::Behaviour), and speaks to clients through the engine.
//!
//! Each input goes to the engine, and the engine's events are then routed to the Socket.IO layer
//! (or, for the raw Engine.IO echo server, echoed back) before the input returns.
//!
//! # The run loop
//!
//! A host owns one [`Channel`] per live channel and drives it with three kinds of call:
//!
//! 1. **inputs**, each stamped with the current time in milliseconds: a polling request
//!    ([`Channel::handle_polling`]), a WebSocket opened, a message received or closed
//!    ([`Channel::handle_ws_open`], [`Channel::handle_ws_text`], [`Channel::handle_ws_binary`],
//!    [`Channel::handle_ws_closed`]), a held polling request abandoned by the client
//!    ([`Channel::handle_http_aborted`]), or an emit from the server side ([`Channel::emit`]);
//! 2. **time**: the host asks [`Channel::poll_timeout`] when it must call back, and calls
//!    [`Channel::handle_timeout`] once that moment has passed (pings, ping timeouts, connect timeouts,
//!    ack timeouts);
//! 3. **outputs**: after any input the host drains [`Channel::poll_output`] and carries each
//!    [`Output`] out: write frames to one WebSocket or to many, answer or close something.
//!
//! ```text
//!   host ──handle_*(…, now)──▶ Channel ──poll_output()──▶ Transmit / Broadcast / Respond / …
//!        ◀──poll_timeout()────         ◀──handle_timeout(now)──
//! ```
//!
//! The channel never reads a clock, sleeps, spawns or draws random numbers on its own: time comes in
//! as arguments (milliseconds since the Unix epoch, never going backwards within a run: token
//! expiry compares it with calendar time) and ids come from the host's [`RandomSource`].
//! Connections and HTTP requests are named by host-chosen [`ConnId`]s.
//!
//! # Sharing, not copying
//!
//! An event is encoded once into its final wire frames ([`Frames`]); a broadcast comes out as one
//! [`Output::Broadcast`] naming every WebSocket recipient, and polling recipients queue the same
//! reference-counted frames.
//!
//! # Rebuilding
//!
//! Everything that must survive a restart of the host (a hibernating Durable Object) is in each
//! WebSocket session's [`SessionSnapshot`]: its sid, namespaces, socket ids, rooms and ack counters.
//! [`Channel::restore`] rebuilds an equivalent channel from those snapshots; the host learns when a
//! snapshot changed through [`Output::SessionChanged`].

pub(crate) mod engine;
mod snapshot;
pub(crate) mod sockets;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{BackendAnswer, BackendCall, ClientInfo};
use crate::behaviour::{self, EngineLayer};
use crate::config::ChannelPolicy;
use crate::engineio;
use crate::frame::WireFrame;
use crate::http::{EngineError, HttpResponse, Method, cors_headers};

use engine::{Engine, EngineEvent, Via};
pub use engine::{
    ORDERLY_CLOSE_GRACE_MS, SessionKey, UPGRADE_NOOP_DELAY_MS, UPGRADE_TIMEOUT_MS, WsAdmission,
};
pub use snapshot::{CallSnapshot, CallSnapshotKind};
pub use snapshot::{SessionSnapshot, SocketSnapshot};
use sockets::SocketLayer;
pub use sockets::presence::{
    MAX_CHANGES_PER_EVENT, MEMBERS_EVENT, PRESENCE_EVENT, PresenceError, PresencePage,
};
pub use sockets::recovery::{
    HistoryError, HistoryEvent, MAX_PARKED_SOCKETS, RecoveryStats, StoreOp, StoredState,
};
pub use sockets::{ERROR_EVENT, HOOK_FAILED_MESSAGE, MAX_CALLS_PER_SOCKET, MAX_GRANTED_ROOMS};

/// A host-chosen name for one WebSocket connection or one HTTP request; unique within a channel.
pub type ConnId = u64;

/// The frames of one packet (a text frame, then any binary attachments), shared by every recipient.
pub type Frames = Arc<[WireFrame]>;

/// Packets a client may have waiting for it (a WebSocket's outbox in the host, a polling session's
/// queue here) before it counts as too slow and is let go.
pub const MAX_QUEUED_PACKETS: usize = 1024;
/// Payload bytes a client may have waiting for it before it counts as too slow. A single packet is
/// always accepted into an empty queue, whatever its size (the channel's `max_payload` bounds it).
pub const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// A hash map for the lookups made once per delivery. Its keys are ids this server generated
/// (sids, connection ids, session keys), so a fast hash with a per-process seed is enough: clients
/// can look keys up but never choose the keys stored.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where ids come from. The host supplies real randomness; tests supply a fixed sequence.
pub trait RandomSource: Send {
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

/// What the host must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write these frames, in order, to this WebSocket.
    Transmit { conn: ConnId, frames: Frames },
    /// Write these frames, in order, to each of these WebSockets: one packet for many recipients,
    /// which the host converts for its transport once.
    Broadcast { conns: Vec<ConnId>, frames: Frames },
    /// Close this WebSocket with this close code and reason.
    CloseWebSocket {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// Answer this HTTP request.
    Respond {
        request: ConnId,
        response: HttpResponse,
    },
    /// The snapshot of the session on this WebSocket changed; a host that can hibernate stores it.
    SessionChanged { conn: ConnId },
    /// The engine opened session `sid` for the handshake made by `conn` (a polling request or a
    /// WebSocket). A host that bounds the sessions one client may hold counts it against whoever
    /// sent that handshake until [`Output::SessionClosed`] names the same sid. A handshake that is
    /// refused opens nothing and produces none. Sessions rebuilt by [`Channel::restore`] are not
    /// announced again: the host keeps what it counted for them before.
    SessionOpened { sid: String, conn: ConnId },
    /// The engine ended session `sid`, whatever the reason (the client, a timeout, a protocol
    /// error, a full queue, [`Channel::close_all`]); a restored session too. Each session ends
    /// once. Only a channel that is dropped, or replaced by [`Channel::restore`], loses sessions
    /// without this: its host forgets those that are not in the snapshots it restored from.
    SessionClosed { sid: String },
    /// Socket `socket` answered a server emit that asked for an acknowledgement (see
    /// [`ServerEmit::ack`]).
    AckReceived {
        token: u64,
        socket: String,
        args: Value,
        attachments: Vec<Bytes>,
    },
    /// Socket `socket` will never answer a server emit that asked for an acknowledgement.
    AckUnanswered {
        token: u64,
        socket: String,
        reason: AckFailure,
    },
    /// Make this call to the app backend, then hand how it ended to
    /// [`Channel::handle_backend_answer`] under the call's id. The channel times the call out on
    /// its own; the host may stop waiting after the call's `timeout_ms` too.
    BackendCall(BackendCall),
    /// Something the operator should know (a backend failing, webhook events dropped); hosts
    /// log it. Never shown to clients.
    Warning { message: String },
    /// Write these to the channel's recovery store, in order, as one batch (one per input): only
    /// on a channel made [`Channel::with_durable_store`].
    Store(Vec<StoreOp>),
}

/// Why an acknowledgement will never come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckFailure {
    /// Not within the emit's timeout.
    Timeout,
    /// The socket went away first.
    Disconnected,
}

/// Why a session ended. Hosts may log it; clients see the matching close or disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet.
    ClientClose,
    /// The WebSocket went away.
    TransportClosed,
    /// A held polling request was abandoned by the client.
    PollAborted,
    /// No pong within the ping timeout.
    PingTimeout,
    /// No namespace CONNECT within the connect timeout.
    ConnectTimeout,
    /// Two polling GETs at once.
    DuplicatePoll,
    /// A message or request body above the channel's `max_payload`.
    PayloadTooLarge,
    /// Malformed input; the client broke the protocol.
    ProtocolError,
    /// The server is shutting down.
    ServerShutdown,
    /// More was waiting for the client than a queue may hold: it does not read fast enough.
    TooSlow,
}

impl CloseReason {
    /// WebSocket close code and reason for this ending.
    pub fn close_code(self) -> (u16, &'static str) {
        match self {
            CloseReason::PayloadTooLarge => (1009, "message too big"),
            CloseReason::ProtocolError => (1002, "protocol error"),
            CloseReason::PingTimeout => (1000, "ping timeout"),
            CloseReason::ConnectTimeout => (1000, "connect timeout"),
            CloseReason::ServerShutdown => (1001, "server shutting down"),
            CloseReason::TooSlow => (1008, "too slow"),
            _ => (1000, "session closed"),
        }
    }
}

/// An emit from the server side (the HTTP API, a backend) into one namespace of the channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerEmit {
    pub namespace: String,
    /// The full event array: event name first, then the arguments (binary as placeholders).
    pub args: Value,
    pub attachments: Vec<Bytes>,
    /// Empty means the whole namespace; otherwise the union of these rooms. As in socket.io, a
    /// socket's id is a room of its own.
    pub rooms: Vec<String>,
    /// Socket ids left out.
    pub except: Vec<String>,
    /// Ask every recipient for an acknowledgement: each answers as [`Output::AckReceived`], or
    /// comes out as [`Output::AckUnanswered`] after the timeout or when it goes away.
    pub ack: Option<AckRequest>,
}

/// An acknowledgement asked of a server emit's recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRequest {
    /// Names the emit in the outputs that answer it.
    pub token: u64,
    pub timeout_ms: u64,
}

/// What a server emit reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Emitted {
    /// Sockets the event was delivered to.
    pub delivered: usize,
    /// The sockets asked for an acknowledgement, when the emit asked for one.
    pub awaiting_ack: Vec<String>,
    /// The offset the event was kept under, on a channel with connection-state recovery (an
    /// emit that asks for acks is not kept, as in socket.io).
    pub offset: Option<String>,
}

/// Why a server emit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("namespace {0:?} is not configured for this channel")]
    UnknownNamespace(String),
    #[error("no socket {0:?} in this namespace")]
    UnknownSocket(String),
    #[error("event must be a JSON array whose first element is a non-empty event name")]
    InvalidEvent,
    #[error("event name {0:?} is reserved by Socket.IO")]
    ReservedEvent(String),
    #[error("binary attachments do not match the placeholders: {0}")]
    Attachments(String),
}

/// Connections, sockets and rooms, for `GET /channels/<channel>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Occupancy {
    /// Open Engine.IO sessions (connections).
    pub connections: usize,
    /// Members (users, and anonymous sockets), on a channel with presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// Namespace → its sockets and rooms.
    pub namespaces: BTreeMap<String, NamespaceOccupancy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceOccupancy {
    pub sockets: usize,
    /// Room → number of sockets in it.
    pub rooms: BTreeMap<String, usize>,
}

/// The state machine of one channel. See the module docs for the run loop.
pub struct Channel {
    name: String,
    engine: Engine,
    sockets: SocketLayer,
    /// The raw Engine.IO echo server has no Socket.IO layer: messages come straight back.
    echo: bool,
    /// Who made the request being handled, for a session it opens.
    client: Option<ClientInfo>,
    /// Records of polling POSTs still to be handled, a turn of [`RECORDS_PER_TURN`] at a time.
    posted: VecDeque<PostedRecords>,
}

/// How many records of one polling POST are handled per input before the host gets the outputs.
/// A POST may carry a hundred thousand small packets; handled at once, their broadcasts would
/// overflow every other client's queue in one go. A turn at a time, the host writes to its
/// clients between turns, as it does between WebSocket messages.
pub const RECORDS_PER_TURN: usize = 32;

/// The rest of one polling POST, waiting for its next turn.
#[derive(Debug)]
struct PostedRecords {
    key: SessionKey,
    packets: engineio::PayloadRecords,
    /// When the POST arrived: the next turn is due at once.
    since: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .field("sockets", &self.sockets)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A new, empty channel. `name` is the channel name (`""` for the default channel).
    pub fn new(
        name: impl Into<String>,
        policy: Arc<ChannelPolicy>,
        random: Box<dyn RandomSource>,
    ) -> Channel {
        let name = name.into();
        let behaviour = behaviour::for_policy(&policy);
        let echo = behaviour.engine_layer() == EngineLayer::Echo;
        let mut engine = Engine::new(policy.clone(), random);
        let epoch = match policy.recovery {
            Some(_) => engine.new_id(|_| false)[..8].to_string(),
            None => String::new(),
        };
        Channel {
            sockets: SocketLayer::new(name.clone(), policy, behaviour, epoch),
            engine,
            name,
            echo,
            client: None,
            posted: VecDeque::new(),
        }
    }

    /// Pings all WebSocket sessions together, once per ping interval, instead of each on its own
    /// schedule. A host that pays for every wake-up (a Durable Object) then wakes once per interval
    /// whatever the number of sockets. A session is closed at the first round after its oldest
    /// unanswered ping's answer time (the ping timeout) ran out, so a dead socket is found within
    /// one interval of its deadline. Pongs may be reported without a message, from a timestamp the
    /// host observed ([`Channel::handle_pong_seen`]). Polling sessions keep their own precise
    /// timers (they keep the host awake anyway).
    pub fn with_batched_heartbeats(mut self) -> Channel {
        self.engine.batch_heartbeats();
        self
    }

    /// Rebuilds a channel from the snapshots of its WebSocket sessions, as stored by a host that was
    /// restarted (a Durable Object woken from hibernation). Heartbeats restart from `now`.
    pub fn restore(
        name: impl Into<String>,
        policy: Arc<ChannelPolicy>,
        random: Box<dyn RandomSource>,
        sessions: impl IntoIterator<Item = (ConnId, SessionSnapshot)>,
        now: u64,
    ) -> Channel {
        let mut channel = Channel::new(name, policy, random);
        channel.restore_sessions(sessions, now);
        channel
    }

    /// Adds sessions from their snapshots to this channel (see [`Channel::restore`]).
    pub fn restore_sessions(
        &mut self,
        sessions: impl IntoIterator<Item = (ConnId, SessionSnapshot)>,
        now: u64,
    ) {
        for (conn, snapshot) in sessions {
            let sid = snapshot.sid.clone();
            let Some(key) = self
                .engine
                .restore_websocket(conn, sid, snapshot.connected_at, now)
            else {
                continue;
            };
            if !self.echo {
                self.sockets.restore(key, snapshot, now);
            }
        }
        self.engine.run_round_now(now);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &Arc<ChannelPolicy> {
        self.engine.policy()
    }

    /// Number of open Engine.IO sessions.
    pub fn session_count(&self) -> usize {
        self.engine.session_count()
    }

    /// Number of sockets connected to `namespace`.
    pub fn socket_count(&self, namespace: &str) -> usize {
        self.sockets.socket_count(namespace)
    }

    /// Members of `room` in `namespace`, as socket ids.
    pub fn room_members(&self, namespace: &str, room: &str) -> Vec<String> {
        self.sockets.room_members(namespace, room)
    }

    /// Connections, sockets and room sizes, for `GET /channels/<channel>`.
    pub fn occupancy(&self) -> Occupancy {
        self.sockets.occupancy(self.engine.session_count())
    }

    /// Snapshots of every WebSocket session, keyed by connection: what a restarted host rebuilds
    /// from (see [`Channel::restore`]).
    pub fn snapshots(&self) -> Vec<(ConnId, SessionSnapshot)> {
        self.engine
            .websocket_sessions()
            .filter_map(|(conn, key)| Some((conn, self.snapshot_of(key)?)))
            .collect()
    }

    /// True when nothing is open or pending (no session, no backend call, no webhook waiting):
    /// the host may drop the channel.
    pub fn is_idle(&self) -> bool {
        self.engine.is_idle() && self.sockets.is_idle() && self.posted.is_empty()
    }

    /// Connection-state recovery keeps something a client could still come back for: a parked
    /// socket, or an event younger than the window. A host that keeps nothing across restarts
    /// (no [`Channel::with_durable_store`]) keeps the channel alive until this is false; the
    /// channel's timers say when it may change.
    pub fn holds_recovery_state(&self) -> bool {
        self.sockets.holds_recovery_state()
    }

    /// Backend calls are in flight or webhooks wait to be sent: a host that runs them on a task of
    /// their own keeps it (and the channel's timers) running until this is false.
    pub fn backend_busy(&self) -> bool {
        !self.sockets.backend_idle()
    }

    /// Webhook events this channel dropped so far (queue full, or out of attempts).
    pub fn webhooks_dropped(&self) -> u64 {
        self.sockets.webhooks_dropped()
    }

    /// The snapshot of the session carried by WebSocket `conn`, if it is an active one.
    pub fn snapshot(&self, conn: ConnId) -> Option<SessionSnapshot> {
        self.snapshot_of(self.engine.key_of_websocket(conn)?)
    }

    fn snapshot_of(&self, key: SessionKey) -> Option<SessionSnapshot> {
        let mut snapshot = SessionSnapshot {
            sid: self.engine.sid(key)?.to_string(),
            awaiting_connect: false,
            connected_at: self.engine.opened_at(key)?,
            sockets: Vec::new(),
            client: None,
            calls: Vec::new(),
        };
        self.sockets.snapshot(key, &mut snapshot);
        Some(snapshot)
    }

    /// Closes every session, e.g. because the server is shutting down. Clients see their transport
    /// close and reconnect.
    pub fn close_all(&mut self, now: u64) {
        self.engine.close_all(CloseReason::ServerShutdown);
        self.route_events(now);
    }

    /// The next output for the host, if any. Storage writes come first: what a client is sent
    /// is in the store by the time it could ask for it again.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(ops) = self.sockets.take_store_ops() {
            return Some(Output::Store(ops));
        }
        self.engine.poll_output()
    }

    // ---------------------------------------------------------------------------------------------
    // Connection-state recovery

    /// The host keeps the channel's recovery state (history and parked sockets) across restarts:
    /// from now on every change comes out as [`Output::Store`], and the host hands what it kept
    /// back with [`Channel::load_stored`] when it starts the channel again. A channel without
    /// recovery configured has nothing to store.
    pub fn with_durable_store(mut self) -> Channel {
        self.sockets.make_recovery_durable();
        self
    }

    /// Takes over the recovery state of `from`, the channel this one was rebuilt from (see
    /// [`Channel::restore`]), for a host that keeps it in memory rather than in a store.
    pub fn adopt_recovery_state(&mut self, from: &mut Channel) {
        self.sockets.adopt_recovery(&mut from.sockets);
    }

    /// Takes back what the host stored for this channel, after any [`Channel::restore`]. Sockets
    /// stored as connected that the channel does not hold now went away while the host was down:
    /// they are parked from `now`. Returns problems worth a log line (unreadable rows, skipped).
    pub fn load_stored(&mut self, state: StoredState, now: u64) -> Vec<String> {
        self.sockets.load_recovery(state, now)
    }

    /// How much connection-state recovery keeps, on a channel that has it.
    pub fn recovery_stats(&self) -> Option<RecoveryStats> {
        self.sockets.recovery_stats()
    }

    /// Kept events after offset `after` (from the oldest without it), at most `limit`, and the
    /// offset of the newest kept event.
    pub fn history(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<HistoryEvent>, Option<String>), HistoryError> {
        self.sockets.history(after, limit)
    }

    /// Members after cursor `after` (from the first without it), at most `limit` and at most the
    /// channel's `page_size`, on a channel with presence.
    pub fn presence(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresencePage, PresenceError> {
        self.sockets.presence(after, limit)
    }

    /// When the host must call [`Channel::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        [
            self.engine.next_timer(),
            self.sockets.next_timer(),
            self.posted.front().map(|posted| posted.since),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due at `now`: pings, ping/connect/upgrade timeouts and ack timeouts, and
    /// the next turn of each polling POST still being handled.
    pub fn handle_timeout(&mut self, now: u64) {
        for posted in std::mem::take(&mut self.posted) {
            self.take_turn(posted.key, posted.packets, now);
        }
        self.engine.handle_timeout(now);
        self.route_events(now);
        self.sockets.handle_timeout(&mut self.engine, now);
        self.route_events(now);
    }

    /// The host saw WebSocket `conn` answer a ping at `at` without the message reaching the channel
    /// (a Durable Object's WebSocket auto-response).
    pub fn handle_pong_seen(&mut self, conn: ConnId, at: u64) {
        self.engine.handle_pong_seen(conn, at);
    }

    // ---------------------------------------------------------------------------------------------
    // Inputs

    /// A polling request (GET, POST or any other method) on this channel's Engine.IO endpoint.
    ///
    /// `sid` is the query's `sid`; `origin` the request's `Origin` header, used for CORS;
    /// `client` who sent it, which a connect hook sees if this request opens a session. The
    /// answer comes as [`Output::Respond`], immediately or, for a GET with nothing to send yet,
    /// later.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_polling(
        &mut self,
        request: ConnId,
        method: Method,
        sid: Option<&str>,
        origin: Option<&str>,
        client: ClientInfo,
        body: Bytes,
        now: u64,
    ) {
        let cors = cors_headers(self.engine.policy(), origin);
        if sid.is_none() && method == Method::Get && !self.admits_new_session() {
            let response = EngineError::Busy.response().with_headers(cors);
            self.engine
                .push_output(Output::Respond { request, response });
            return;
        }
        self.client = Some(client);
        let posted = self
            .engine
            .handle_polling(request, method, sid, cors, body, now);
        self.route_events(now);
        self.client = None;
        if let Some((key, packets)) = posted {
            // The session's earlier records go first, all of them: one body waits per session.
            if let Some(index) = self.posted.iter().position(|posted| posted.key == key) {
                let earlier = self.posted.remove(index).map(|posted| posted.packets);
                self.handle_records(key, earlier.into_iter().flatten(), usize::MAX, now);
            }
            self.take_turn(key, packets, now);
        }
    }

    /// Handles up to [`RECORDS_PER_TURN`] of a POST's records; the rest wait for the next turn.
    fn take_turn(&mut self, key: SessionKey, mut packets: engineio::PayloadRecords, now: u64) {
        self.handle_records(key, &mut packets, RECORDS_PER_TURN, now);
        if !packets.is_done() && self.engine.is_open(key) {
            self.posted.push_back(PostedRecords {
                key,
                packets,
                since: now,
            });
        }
    }

    /// One packet at a time, each fully handled before the next is looked at: a packet may close
    /// the session, and what follows it then never counts.
    fn handle_records(
        &mut self,
        key: SessionKey,
        packets: impl Iterator<Item = engineio::Packet>,
        most: usize,
        now: u64,
    ) {
        for packet in packets.take(most) {
            if !self.engine.is_open(key) {
                break;
            }
            self.engine.handle_packet(key, Via::Active, packet, now);
            self.route_events(now);
        }
    }

    /// A polling request whose body the host refused to read because it is larger than the
    /// channel's `max_payload` (its `Content-Length` said so, or reading hit the limit): `413`,
    /// and the session ends, as for an oversize body read in full.
    pub fn handle_polling_too_large(
        &mut self,
        request: ConnId,
        sid: Option<&str>,
        origin: Option<&str>,
        now: u64,
    ) {
        let cors = cors_headers(self.engine.policy(), origin);
        self.engine.handle_polling_too_large(request, sid, cors);
        self.route_events(now);
    }

    /// The client gave up on a request (connection dropped). A held GET going away ends its session,
    /// as the reference server does: the client is gone or broken.
    pub fn handle_http_aborted(&mut self, request: ConnId, now: u64) {
        self.engine.handle_http_aborted(request);
        self.route_events(now);
    }

    /// What becomes of a WebSocket handshake with this `sid`, asked before the host answers it: an
    /// unknown session is refused with an HTTP error, as engine.io does. A session that already
    /// has its WebSocket (or a probe) gets the handshake completed and the new socket closed at
    /// once, again as engine.io does; a host that cannot close a socket promptly once it is
    /// handed to the channel (a Durable Object's hibernatable sockets) closes it itself.
    pub fn check_ws_open(&self, sid: Option<&str>) -> Result<WsAdmission, EngineError> {
        if sid.is_none() && !self.admits_new_session() {
            return Err(EngineError::Busy);
        }
        self.engine.check_ws_open(sid)
    }

    /// Whether a handshake may open one more session: the channel holds at most
    /// `max_pending_sessions` that have not yet joined a namespace.
    fn admits_new_session(&self) -> bool {
        self.echo
            || (self.sockets.awaiting_connect() as u64) < self.engine.policy().max_pending_sessions
    }

    /// A WebSocket opened on this channel. Without `sid` it starts a new session; with one it is the
    /// probe of an upgrade from polling. `client` is who opened it (see
    /// [`Channel::handle_polling`]).
    pub fn handle_ws_open(
        &mut self,
        conn: ConnId,
        sid: Option<&str>,
        client: ClientInfo,
        now: u64,
    ) {
        if sid.is_none() && !self.admits_new_session() {
            // A host that accepts before asking (natively) closes it here: try again later.
            self.engine.push_output(Output::CloseWebSocket {
                conn,
                code: 1013,
                reason: "too many sessions waiting to connect",
            });
            return;
        }
        self.client = Some(client);
        self.engine.handle_ws_open(conn, sid, now);
        self.route_events(now);
        self.client = None;
    }

    /// How a backend call ended (see [`Output::BackendCall`]): the backend's response, or why
    /// there was none. Settles the call: the client's ack, the answer's emits and rooms, the
    /// connect hook's decision, a webhook batch delivered or retried later.
    pub fn handle_backend_answer(&mut self, call: u64, answer: BackendAnswer, now: u64) {
        self.sockets
            .handle_backend_answer(&mut self.engine, call, answer, now);
        self.route_events(now);
    }

    /// A text message arrived on WebSocket `conn`.
    pub fn handle_ws_text(&mut self, conn: ConnId, text: &str, now: u64) {
        self.engine.handle_ws_text(conn, text, now);
        self.route_events(now);
    }

    /// A binary message arrived on WebSocket `conn`.
    pub fn handle_ws_binary(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        self.engine.handle_ws_binary(conn, bytes, now);
        self.route_events(now);
    }

    /// WebSocket `conn` closed (by the client or the network). The host must not send to it again.
    pub fn handle_ws_closed(&mut self, conn: ConnId, now: u64) {
        self.engine.handle_ws_closed(conn);
        self.route_events(now);
    }

    /// Emits an event from the server to `emit.namespace`, or to rooms of it, except some sockets,
    /// optionally asking each recipient for an acknowledgement. The event is encoded once.
    pub fn emit(&mut self, emit: ServerEmit, now: u64) -> Result<Emitted, EmitError> {
        let emitted = self.sockets.emit(&mut self.engine, emit, now);
        self.route_events(now);
        emitted
    }

    /// Emits an event to one socket and asks it for an acknowledgement. The answer arrives as
    /// [`Output::AckReceived`] with this `token`, or [`Output::AckUnanswered`] after `timeout_ms`
    /// or when the socket goes away.
    #[allow(clippy::too_many_arguments)]
    pub fn emit_with_ack(
        &mut self,
        namespace: &str,
        socket_id: &str,
        args: Value,
        attachments: Vec<Bytes>,
        token: u64,
        timeout_ms: u64,
        now: u64,
    ) -> Result<(), EmitError> {
        self.sockets.check_socket(namespace, socket_id)?;
        let emit = ServerEmit {
            namespace: namespace.to_string(),
            args,
            attachments,
            rooms: vec![socket_id.to_string()],
            except: Vec::new(),
            ack: Some(AckRequest { token, timeout_ms }),
        };
        self.emit(emit, now).map(|_| ())
    }

    /// Hands every event the engine produced to the layer above, until there are none.
    fn route_events(&mut self, now: u64) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                EngineEvent::Opened(key) => {
                    if !self.echo {
                        self.sockets.opened(key, self.client.take(), now);
                    }
                }
                EngineEvent::Message(key, text) => {
                    // A packet handled earlier in this input may have closed the session.
                    if !self.engine.is_open(key) {
                        continue;
                    }
                    if self.echo {
                        let frames: Frames =
                            Arc::from(vec![engineio::Packet::Message(text).to_frame()]);
                        self.engine.send(key, &frames);
                    } else {
                        self.sockets.text(&mut self.engine, key, &text, now);
                    }
                }
                EngineEvent::Binary(key, bytes) => {
                    if !self.engine.is_open(key) {
                        continue;
                    }
                    if self.echo {
                        let frames: Frames = Arc::from(vec![WireFrame::binary(bytes)]);
                        self.engine.send(key, &frames);
                    } else {
                        self.sockets.binary(&mut self.engine, key, bytes, now);
                    }
                }
                EngineEvent::Closed(key, reason) => {
                    self.sockets.closed(&mut self.engine, key, reason, now);
                }
            }
        }
        // What this input changed in presence, once for all of it.
        self.sockets.flush_presence(&mut self.engine, now);
    }
}
