//! One channel's Engine.IO sessions and Socket.IO sockets, as a sans-IO state machine.
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
//!    [`Output`] out: write frames to a WebSocket, answer or close something.
//!
//! ```text
//!   host ──handle_*(…, now)──▶ Channel ──poll_output()──▶ Transmit / Respond / CloseWebSocket / …
//!        ◀──poll_timeout()────         ◀──handle_timeout(now)──
//! ```
//!
//! The channel never reads a clock, sleeps, spawns or draws random numbers on its own: time comes in
//! as arguments (milliseconds since the Unix epoch, never going backwards within a run: token
//! expiry compares it with calendar time) and ids come from the host's [`RandomSource`]. Connections and HTTP requests are named
//! by host-chosen [`ConnId`]s.
//!
//! # Sharing, not copying
//!
//! An event is encoded once into its final wire frames ([`Frames`]) and the same reference-counted
//! frames are handed to every recipient, whether it is on a WebSocket or waiting in a polling queue.
//!
//! # Rebuilding
//!
//! Everything that must survive a restart of the host (a hibernating Durable Object) is in each
//! WebSocket session's [`SessionSnapshot`]: its sid, namespaces, socket ids, rooms and ack counters.
//! [`Channel::restore`] rebuilds an equivalent channel from those snapshots; the host learns when a
//! snapshot changed through [`Output::SessionChanged`].

mod session;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use crate::auth::{self, Grant};
use crate::behaviour::{self, Action, Audience, Behaviour, ConnectDecision, EngineLayer};
use crate::behaviour::{IncomingEvent, SocketView};
use crate::config::{AuthMode, ChannelPolicy};
use crate::engineio::{self, Handshake};
use crate::frame::WireFrame;
use crate::http::{EngineError, HttpResponse, Method, cors_headers};
use crate::socketio::{self, PacketKind, PartialBinaryPacket, RESERVED_EVENTS};

use session::{PendingAck, Session, SocketState, Transport};
pub use session::{SessionSnapshot, SocketSnapshot};

/// A host-chosen name for one WebSocket connection or one HTTP request; unique within a channel.
pub type ConnId = u64;

/// The frames of one packet (a text frame, then any binary attachments), shared by every recipient.
pub type Frames = Arc<[WireFrame]>;

/// A hash map for the lookups made once per delivery. Its keys are ids this server generated
/// (sids, connection ids), so a fast hash with a per-process seed is enough: clients can look keys
/// up but never choose the keys stored.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where ids come from. The host supplies real randomness; tests supply a fixed sequence.
pub trait RandomSource: Send {
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

/// How long a polling client may take to finish an upgrade to WebSocket once it opened the probe.
pub const UPGRADE_TIMEOUT_MS: u64 = 10_000;

/// How long a GET that arrives after the upgrade probe waits before its noop. A client that sent
/// the probe pauses polling, so such a GET either raced the probe (it gets its noop a little later,
/// as engine.io's 100 ms upgrade check gives it) or raced the upgrade packet on another connection
/// (the upgrade completes meanwhile and the GET is refused, as if it had arrived after it).
pub const UPGRADE_NOOP_DELAY_MS: u64 = 100;

/// How long a polling session closed by its client, with no GET waiting, keeps an answer for the
/// GET that may still be on its way: that GET gets a noop ("6"), as engine.io's orderly close does,
/// instead of racing the close.
pub const ORDERLY_CLOSE_GRACE_MS: u64 = 2_000;

/// What the host must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write these frames, in order, to this WebSocket.
    Transmit { conn: ConnId, frames: Frames },
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
    /// A client answered a server emit made with [`Channel::emit_with_ack`].
    AckReceived {
        token: u64,
        args: Value,
        attachments: Vec<Bytes>,
    },
    /// A server emit made with [`Channel::emit_with_ack`] will never be answered: it timed out or the
    /// socket went away.
    AckUnanswered { token: u64 },
}

/// The answer to [`Channel::check_ws_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsAdmission {
    /// Complete the handshake and hand the socket to [`Channel::handle_ws_open`].
    Accept,
    /// Complete the handshake, then close the socket with this code and reason; the channel never
    /// sees it.
    AcceptAndClose { code: u16, reason: &'static str },
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
}

impl CloseReason {
    /// WebSocket close code and reason for this ending.
    fn close_code(self) -> (u16, &'static str) {
        match self {
            CloseReason::PayloadTooLarge => (1009, "message too big"),
            CloseReason::ProtocolError => (1002, "protocol error"),
            CloseReason::PingTimeout => (1000, "ping timeout"),
            CloseReason::ConnectTimeout => (1000, "connect timeout"),
            CloseReason::ServerShutdown => (1001, "server shutting down"),
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
    /// Empty means the whole namespace; otherwise the union of these rooms.
    pub rooms: Vec<String>,
    /// Socket ids left out.
    pub except: Vec<String>,
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

/// One namespace's membership: sockets and rooms, keyed by socket id.
#[derive(Debug, Default)]
struct Namespace {
    /// Socket id → sid of the session that owns it.
    sockets: BTreeMap<String, String>,
    /// Room → socket ids in it.
    rooms: BTreeMap<String, BTreeSet<String>>,
}

/// The state machine of one channel. See the module docs for the run loop.
pub struct Channel {
    name: String,
    /// The channel's values of its pattern's parameters (`chats/:id` on `chats/42`: id = 42).
    params: BTreeMap<String, String>,
    policy: Arc<ChannelPolicy>,
    behaviour: Box<dyn Behaviour>,
    random: Box<dyn RandomSource>,
    /// Boxed: the table then holds a pointer per session, not a whole session per bucket (and a
    /// table has up to twice the buckets it has sessions).
    sessions: FastMap<String, Box<Session>>,
    /// WebSocket connection → sid, for active and probing connections.
    websockets: FastMap<ConnId, String>,
    /// Held polling GET → sid.
    held_polls: FastMap<ConnId, String>,
    /// Polling sessions their client closed while no GET was waiting: sid → until when the next GET
    /// is answered with a noop (see [`ORDERLY_CLOSE_GRACE_MS`]).
    closing_polls: FastMap<String, u64>,
    namespaces: BTreeMap<String, Namespace>,
    /// (deadline, sid); entries go stale when a session's deadline moves and are skipped then.
    timers: BinaryHeap<Reverse<(u64, String)>>,
    outputs: VecDeque<Output>,
    ping: Frames,
    /// When set, WebSocket sessions are pinged together in rounds (see
    /// [`Channel::with_batched_heartbeats`]); this is the next round.
    ping_round: Option<u64>,
    batched_heartbeats: bool,
}

/// Timer key of the channel-wide ping round; sids are never empty.
const PING_ROUND_KEY: &str = "";

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("sessions", &self.sessions.len())
            .field("behaviour", &self.behaviour)
            .finish_non_exhaustive()
    }
}

/// Where an Engine.IO packet came from within its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The session's active transport (its WebSocket, or a polling POST).
    Active,
    /// The WebSocket opened to probe an upgrade.
    Probe(ConnId),
}

impl Channel {
    /// A new, empty channel. `name` is the channel name (`""` for the default channel).
    pub fn new(
        name: impl Into<String>,
        policy: Arc<ChannelPolicy>,
        random: Box<dyn RandomSource>,
    ) -> Channel {
        let behaviour = behaviour::for_policy(&policy);
        let name = name.into();
        let params = policy
            .pattern
            .as_ref()
            .and_then(|pattern| pattern.bind(&name))
            .unwrap_or_default();
        Channel {
            params,
            name,
            policy,
            behaviour,
            random,
            sessions: FastMap::default(),
            websockets: FastMap::default(),
            held_polls: FastMap::default(),
            closing_polls: FastMap::default(),
            namespaces: BTreeMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            ping: Arc::from(vec![engineio::Packet::Ping { probe: false }.to_frame()]),
            ping_round: None,
            batched_heartbeats: false,
        }
    }

    /// Pings all WebSocket sessions together, once per ping interval, instead of each on its own
    /// schedule. A host that pays for every wake-up (a Durable Object) then wakes once per interval
    /// whatever the number of sockets. A session is closed at the first round after its oldest
    /// unanswered ping's answer time (the ping timeout) ran out, so a dead socket is found within
    /// one interval of its deadline. Pongs may be
    /// reported without a message, from a timestamp the host observed ([`Channel::handle_pong_seen`]).
    /// Polling sessions keep their own precise timers (they keep the host awake anyway).
    pub fn with_batched_heartbeats(mut self) -> Channel {
        self.batched_heartbeats = true;
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
            if self.sessions.contains_key(&snapshot.sid) || self.websockets.contains_key(&conn) {
                // Two sockets claiming one session: keep the first, drop the impostor.
                self.push_close(conn, CloseReason::ProtocolError);
                continue;
            }
            let sid = snapshot.sid.clone();
            let mut session = Session::new(
                sid.clone(),
                Transport::WebSocket { conn },
                snapshot.connected_at,
            );
            if snapshot.awaiting_connect {
                // The original deadline, not a fresh one: a host that restores at every wake-up
                // must not keep a silent socket alive forever.
                session.connect_deadline = Some(
                    snapshot
                        .connected_at
                        .saturating_add(self.policy.connect_timeout_ms)
                        .max(now),
                );
            }
            for socket in snapshot.sockets {
                let namespace = self.namespaces.entry(socket.namespace.clone()).or_default();
                namespace.sockets.insert(socket.id.clone(), sid.clone());
                for room in &socket.rooms {
                    namespace
                        .rooms
                        .entry(room.clone())
                        .or_default()
                        .insert(socket.id.clone());
                }
                session
                    .sockets
                    .insert(socket.namespace.clone(), SocketState::from_snapshot(socket));
            }
            self.websockets.insert(conn, sid.clone());
            self.sessions.insert(sid.clone(), Box::new(session));
            self.start_heartbeat(&sid, now);
            if self.batched_heartbeats
                && let Some(session) = self.sessions.get_mut(&sid)
            {
                // Who answered the last round is unknown after a restart. Any socket old enough to
                // have been pinged must show a pong (see `handle_pong_seen`) newer than one interval
                // plus the allowed answer time ago, or it is closed at the next round.
                let window = self
                    .policy
                    .ping_interval_ms
                    .saturating_add(self.policy.ping_timeout_ms);
                let threshold = now.saturating_sub(window);
                if session.connected_at <= threshold {
                    session.awaiting_pong_since = Some(threshold);
                }
            }
        }
        if self.batched_heartbeats && !self.sessions.is_empty() {
            // The wake-up that restored us is, most likely, the round's alarm: run it now.
            self.ping_round = Some(now);
            self.timers.push(Reverse((now, PING_ROUND_KEY.to_string())));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &Arc<ChannelPolicy> {
        &self.policy
    }

    /// Number of open Engine.IO sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of sockets connected to `namespace`.
    pub fn socket_count(&self, namespace: &str) -> usize {
        self.namespaces
            .get(namespace)
            .map_or(0, |namespace| namespace.sockets.len())
    }

    /// Members of `room` in `namespace`, as socket ids.
    pub fn room_members(&self, namespace: &str, room: &str) -> Vec<String> {
        self.namespaces
            .get(namespace)
            .and_then(|namespace| namespace.rooms.get(room))
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Connections, sockets and room sizes, for `GET /channels/<channel>`.
    pub fn occupancy(&self) -> crate::api::Occupancy {
        crate::api::Occupancy {
            connections: self.sessions.len(),
            namespaces: self
                .namespaces
                .iter()
                .map(|(name, namespace)| {
                    let rooms = namespace
                        .rooms
                        .iter()
                        .map(|(room, members)| (room.clone(), members.len()))
                        .collect();
                    (
                        name.clone(),
                        crate::api::NamespaceOccupancy {
                            sockets: namespace.sockets.len(),
                            rooms,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Snapshots of every WebSocket session, keyed by connection: what a restarted host rebuilds
    /// from (see [`Channel::restore`]).
    pub fn snapshots(&self) -> Vec<(ConnId, SessionSnapshot)> {
        self.websockets
            .keys()
            .filter_map(|conn| Some((*conn, self.snapshot(*conn)?)))
            .collect()
    }

    /// True when nothing is open or pending: the host may drop the channel.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.outputs.is_empty() && self.closing_polls.is_empty()
    }

    /// The snapshot of the session carried by WebSocket `conn`, if it is an active one.
    pub fn snapshot(&self, conn: ConnId) -> Option<SessionSnapshot> {
        let sid = self.websockets.get(&conn)?;
        let session = self.sessions.get(sid)?;
        match session.transport {
            Transport::WebSocket { conn: active } if active == conn => Some(session.snapshot()),
            _ => None,
        }
    }

    /// Closes every session, e.g. because the server is shutting down. Clients see their transport
    /// close and reconnect.
    pub fn close_all(&mut self) {
        let sids: Vec<String> = self.sessions.keys().cloned().collect();
        for sid in sids {
            self.close_session(&sid, CloseReason::ServerShutdown);
        }
    }

    /// The next output for the host, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the host must call [`Channel::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        // Drop entries left behind by moved deadlines, so the host is not woken for nothing.
        while let Some(Reverse((deadline, key))) = self.timers.peek() {
            if self.timer_is_current(*deadline, key) {
                return Some(*deadline);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_is_current(&self, deadline: u64, key: &str) -> bool {
        if key == PING_ROUND_KEY {
            return self.ping_round == Some(deadline);
        }
        if self.closing_polls.get(key) == Some(&deadline) {
            return true;
        }
        self.sessions
            .get(key)
            .is_some_and(|session| session.next_deadline() == Some(deadline))
    }

    /// Runs every timer due at `now`: pings, ping/connect/upgrade timeouts and ack timeouts.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(Reverse((deadline, _))) = self.timers.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, key))) = self.timers.pop() else {
                break;
            };
            // Skip entries left behind when a deadline moved.
            if !self.timer_is_current(deadline, &key) {
                continue;
            }
            if key == PING_ROUND_KEY {
                self.run_ping_round(now);
            } else if self.closing_polls.remove(&key).is_none() {
                self.run_session_timers(&key, now);
            }
        }
    }

    /// One heartbeat round over every WebSocket session (batched heartbeats only).
    fn run_ping_round(&mut self, now: u64) {
        self.ping_round = None;
        let websocket_sids: Vec<String> = self
            .sessions
            .values()
            .filter(|session| matches!(session.transport, Transport::WebSocket { .. }))
            .map(|session| session.sid.clone())
            .collect();
        let ping = self.ping.clone();
        let ping_timeout = self.policy.ping_timeout_ms;
        for sid in &websocket_sids {
            let Some(session) = self.sessions.get_mut(sid) else {
                continue;
            };
            match session.awaiting_pong_since {
                // The oldest unanswered ping is past its answer time.
                Some(since) if now >= since.saturating_add(ping_timeout) => {
                    self.close_session(sid, CloseReason::PingTimeout);
                    continue;
                }
                // Still within its answer time (a ping timeout longer than the interval): ping
                // again; an answer to either ping counts.
                Some(_) => {}
                None => session.awaiting_pong_since = Some(now),
            }
            self.deliver(sid, &ping);
        }
        self.schedule_ping_round(now);
    }

    /// Schedules the next round if any WebSocket session needs it.
    fn schedule_ping_round(&mut self, now: u64) {
        if self.ping_round.is_some() {
            return;
        }
        let any_websocket = self
            .sessions
            .values()
            .any(|session| matches!(session.transport, Transport::WebSocket { .. }));
        if any_websocket {
            let at = now + self.policy.ping_interval_ms;
            self.ping_round = Some(at);
            self.timers.push(Reverse((at, PING_ROUND_KEY.to_string())));
        }
    }

    /// Puts a session on its heartbeat schedule: its own timer, or the channel's rounds for a
    /// WebSocket session under batched heartbeats.
    fn start_heartbeat(&mut self, sid: &str, now: u64) {
        let batched = self.batched_heartbeats;
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        if batched && matches!(session.transport, Transport::WebSocket { .. }) {
            session.next_ping_at = None;
            session.pong_deadline = None;
            session.awaiting_pong_since = None;
            self.schedule_ping_round(now);
        } else {
            session.next_ping_at = Some(now + self.policy.ping_interval_ms);
        }
        self.schedule(sid);
    }

    /// The host saw WebSocket `conn` answer a ping at `at` without the message reaching the channel
    /// (a Durable Object's WebSocket auto-response).
    pub fn handle_pong_seen(&mut self, conn: ConnId, at: u64) {
        let Some(sid) = self.websockets.get(&conn) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(sid)
            && session.awaiting_pong_since.is_some_and(|since| at >= since)
        {
            session.awaiting_pong_since = None;
        }
    }

    /// Runs whatever is due for one session at `now`. Deadlines count from when the event was due,
    /// not from when a (possibly late) timer fired: a ping due at T must be answered by
    /// T + ping timeout, so a late ping whose answer time has passed too ends the session at once.
    fn run_session_timers(&mut self, sid: &str, now: u64) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        if session.connect_deadline.is_some_and(|at| at <= now) {
            self.close_session(sid, CloseReason::ConnectTimeout);
            return;
        }
        if let Some(ping_due) = session.next_ping_at.filter(|at| *at <= now) {
            session.next_ping_at = None;
            session.pong_deadline = Some(ping_due + self.policy.ping_timeout_ms);
            let ping = self.ping.clone();
            self.deliver(sid, &ping);
        }
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        if session.pong_deadline.is_some_and(|at| at <= now) {
            self.close_session(sid, CloseReason::PingTimeout);
            return;
        }
        let expired = session.take_expired_acks(now);
        let mut noop_due = false;
        let upgrade_expired = match &mut session.transport {
            Transport::Upgrading {
                probe,
                deadline,
                noop_at,
                ..
            } => {
                if noop_at.is_some_and(|at| at <= now) {
                    *noop_at = None;
                    noop_due = true;
                }
                (*deadline <= now).then_some(*probe)
            }
            _ => None,
        };
        self.outputs.extend(
            expired
                .into_iter()
                .map(|token| Output::AckUnanswered { token }),
        );
        if let Some(probe) = upgrade_expired {
            self.push_close(probe, CloseReason::ProtocolError);
            self.abandon_upgrade(sid, probe);
        } else if noop_due {
            self.flush_polling(sid);
        }
        self.schedule(sid);
    }

    /// Before an input for session `sid` is handled at `now`, runs what was already due for it, so
    /// the input sees the session as it is at `now` whatever the host's timer precision. Returns
    /// whether the session is still open.
    fn catch_up(&mut self, sid: &str, now: u64) -> bool {
        let due = self
            .sessions
            .get(sid)
            .and_then(|session| session.next_deadline())
            .is_some_and(|deadline| deadline <= now);
        if due {
            self.run_session_timers(sid, now);
        }
        self.sessions.contains_key(sid)
    }

    /// Puts the session's next deadline on the timer heap.
    fn schedule(&mut self, sid: &str) {
        if let Some(deadline) = self
            .sessions
            .get(sid)
            .and_then(|session| session.next_deadline())
        {
            self.timers.push(Reverse((deadline, sid.to_string())));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // HTTP long-polling

    /// A polling request (GET, POST or any other method) on this channel's Engine.IO endpoint.
    ///
    /// `sid` is the query's `sid`; `origin` the request's `Origin` header, used for CORS. The answer
    /// comes as [`Output::Respond`], immediately or, for a GET with nothing to send yet, later.
    pub fn handle_polling(
        &mut self,
        request: ConnId,
        method: Method,
        sid: Option<&str>,
        origin: Option<&str>,
        body: Bytes,
        now: u64,
    ) {
        let cors = cors_headers(&self.policy, origin);
        let Some(sid) = sid else {
            if method == Method::Get {
                self.open_polling_session(request, cors, now);
            } else {
                self.respond_error(request, EngineError::BadHandshakeMethod, cors);
            }
            return;
        };
        if !self.catch_up(sid, now) {
            if method == Method::Get && self.closing_polls.remove(sid).is_some() {
                // The GET that raced its client's close: end it as engine.io's orderly close does.
                self.respond(
                    request,
                    HttpResponse::text(200, Bytes::from_static(b"6")).with_headers(cors),
                );
            } else {
                self.respond_error(request, EngineError::UnknownSid, cors);
            }
            return;
        }
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let sid = sid.to_string();
        match method {
            Method::Get => {
                let held = match &mut session.transport {
                    Transport::Polling { held_get, .. } | Transport::Upgrading { held_get, .. } => {
                        held_get
                    }
                    Transport::WebSocket { .. } => {
                        // Upgraded sessions no longer poll; the WebSocket goes on.
                        self.respond_error(request, EngineError::BadRequest, cors);
                        return;
                    }
                };
                if held.is_some() {
                    self.respond_error(request, EngineError::BadRequest, cors);
                    self.close_session(&sid, CloseReason::DuplicatePoll);
                    return;
                }
                *held = Some((request, cors));
                if let Transport::Upgrading {
                    probed: true,
                    noop_at,
                    ..
                } = &mut session.transport
                    && session.poll_queue.is_empty()
                {
                    *noop_at = Some(now + UPGRADE_NOOP_DELAY_MS);
                }
                self.held_polls.insert(request, sid.clone());
                self.flush_polling(&sid);
                self.schedule(&sid);
            }
            Method::Post => {
                if matches!(session.transport, Transport::WebSocket { .. }) {
                    self.respond_error(request, EngineError::BadRequest, cors);
                    return;
                }
                if body.len() as u64 > self.policy.max_payload {
                    self.respond(
                        request,
                        HttpResponse::text(413, "payload too large").with_headers(cors),
                    );
                    self.close_session(&sid, CloseReason::PayloadTooLarge);
                    return;
                }
                let packets = match engineio::decode_payload(&body) {
                    Ok(packets) => packets,
                    Err(_) => {
                        self.respond_error(request, EngineError::BadRequest, cors);
                        self.close_session(&sid, CloseReason::ProtocolError);
                        return;
                    }
                };
                // Answer first: the packets may close the session, and the POST itself succeeded.
                self.respond(request, HttpResponse::text(200, "ok").with_headers(cors));
                for packet in packets {
                    if !self.sessions.contains_key(&sid) {
                        break;
                    }
                    self.handle_engine_packet(&sid, Via::Active, packet, now);
                }
            }
            Method::Options | Method::Other => {
                self.respond_error(request, EngineError::BadRequest, cors);
            }
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
    ) {
        let cors = cors_headers(&self.policy, origin);
        self.respond(
            request,
            HttpResponse::text(413, "payload too large").with_headers(cors),
        );
        if let Some(sid) = sid {
            self.close_session(sid, CloseReason::PayloadTooLarge);
        }
    }

    /// The client gave up on a request (connection dropped). A held GET going away ends its session,
    /// as the reference server does: the client is gone or broken.
    pub fn handle_http_aborted(&mut self, request: ConnId, _now: u64) {
        let Some(sid) = self.held_polls.remove(&request) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&sid) {
            match &mut session.transport {
                Transport::Polling { held_get, .. } | Transport::Upgrading { held_get, .. } => {
                    *held_get = None;
                }
                Transport::WebSocket { .. } => {}
            }
            self.close_session(&sid, CloseReason::PollAborted);
        }
    }

    fn open_polling_session(
        &mut self,
        request: ConnId,
        cors: Vec<(&'static str, String)>,
        now: u64,
    ) {
        let sid = self.new_session(Transport::Polling { held_get: None }, now);
        let handshake = self.handshake(&sid, vec!["websocket".into()]).to_frame();
        let body = engineio::encode_payload([&handshake]);
        self.respond(request, HttpResponse::text(200, body).with_headers(cors));
    }

    /// Answers the held GET of a polling session if there is one and something to send.
    fn flush_polling(&mut self, sid: &str) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let (held_get, noop_now) = match &mut session.transport {
            Transport::Polling { held_get } => (held_get, false),
            Transport::Upgrading {
                held_get,
                probed,
                noop_at,
                ..
            } => (held_get, *probed && noop_at.is_none()),
            Transport::WebSocket { .. } => return,
        };
        if held_get.is_none() {
            return;
        }
        let body = if !session.poll_queue.is_empty() {
            let body = engineio::encode_payload(
                session.poll_queue.iter().flat_map(|frames| frames.iter()),
            );
            session.poll_queue.clear();
            body
        } else if noop_now {
            // An upgrade is under way: end the poll cleanly so the client can switch.
            Bytes::from_static(b"6")
        } else {
            return;
        };
        let Some((request, cors)) = held_get.take() else {
            return;
        };
        self.held_polls.remove(&request);
        self.respond(request, HttpResponse::text(200, body).with_headers(cors));
    }

    // ---------------------------------------------------------------------------------------------
    // WebSocket

    /// A WebSocket opened on this channel. Without `sid` it starts a new session; with one it is the
    /// probe of an upgrade from polling.
    pub fn handle_ws_open(&mut self, conn: ConnId, sid: Option<&str>, now: u64) {
        let Some(sid) = sid else {
            let sid = self.new_session(Transport::WebSocket { conn }, now);
            self.websockets.insert(conn, sid.clone());
            let handshake = self.handshake(&sid, Vec::new()).to_frame();
            self.outputs.push_back(Output::Transmit {
                conn,
                frames: Arc::from(vec![handshake]),
            });
            self.outputs.push_back(Output::SessionChanged { conn });
            return;
        };
        let Some(session) = self.sessions.get_mut(sid) else {
            self.push_close(conn, CloseReason::ProtocolError);
            return;
        };
        match &session.transport {
            Transport::Polling { held_get } => {
                session.transport = Transport::Upgrading {
                    held_get: held_get.clone(),
                    probe: conn,
                    probed: false,
                    deadline: now + UPGRADE_TIMEOUT_MS,
                    noop_at: None,
                };
                self.websockets.insert(conn, sid.to_string());
                self.schedule(sid);
            }
            // One WebSocket per session: a second one is refused, the first goes on.
            Transport::Upgrading { .. } | Transport::WebSocket { .. } => {
                self.push_close(conn, CloseReason::ProtocolError);
            }
        }
    }

    /// What becomes of a WebSocket handshake with this `sid`, asked before the host answers it: an
    /// unknown session is refused with an HTTP error, as engine.io does. A session that already
    /// has its WebSocket (or a probe) gets the handshake completed and the new socket closed at
    /// once, again as engine.io does; a host that cannot close a socket promptly once it is
    /// handed to the channel (a Durable Object's hibernatable sockets) closes it itself.
    pub fn check_ws_open(&self, sid: Option<&str>) -> Result<WsAdmission, EngineError> {
        let Some(sid) = sid else {
            return Ok(WsAdmission::Accept);
        };
        match self.sessions.get(sid).map(|session| &session.transport) {
            None => Err(EngineError::UnknownSid),
            Some(Transport::Polling { .. }) => Ok(WsAdmission::Accept),
            Some(Transport::Upgrading { .. } | Transport::WebSocket { .. }) => {
                let (code, reason) = CloseReason::ProtocolError.close_code();
                Ok(WsAdmission::AcceptAndClose { code, reason })
            }
        }
    }

    /// A text message arrived on WebSocket `conn`.
    pub fn handle_ws_text(&mut self, conn: ConnId, text: &str, now: u64) {
        let Some((sid, via)) = self.websocket_session(conn) else {
            return;
        };
        if !self.catch_up(&sid, now) {
            return;
        }
        if text.len() as u64 > self.policy.max_payload {
            self.close_on(&sid, via, CloseReason::PayloadTooLarge);
            return;
        }
        match engineio::Packet::decode_text(text) {
            Ok(packet) => self.handle_engine_packet(&sid, via, packet, now),
            Err(_) => self.close_on(&sid, via, CloseReason::ProtocolError),
        }
    }

    /// A binary message arrived on WebSocket `conn`.
    pub fn handle_ws_binary(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        let Some((sid, via)) = self.websocket_session(conn) else {
            return;
        };
        if !self.catch_up(&sid, now) {
            return;
        }
        if bytes.len() as u64 > self.policy.max_payload {
            self.close_on(&sid, via, CloseReason::PayloadTooLarge);
            return;
        }
        self.handle_engine_packet(&sid, via, engineio::Packet::decode_binary(bytes), now);
    }

    /// WebSocket `conn` closed (by the client or the network). The host must not send to it again.
    pub fn handle_ws_closed(&mut self, conn: ConnId, _now: u64) {
        let Some((sid, via)) = self.websocket_session(conn) else {
            return;
        };
        match via {
            Via::Probe(probe) => self.abandon_upgrade(&sid, probe),
            Via::Active => {
                // The socket is already gone: don't ask the host to close it again.
                self.websockets.remove(&conn);
                if let Some(session) = self.sessions.get_mut(&sid) {
                    session.transport = Transport::Polling { held_get: None };
                }
                self.close_session(&sid, CloseReason::TransportClosed);
            }
        }
    }

    fn websocket_session(&self, conn: ConnId) -> Option<(String, Via)> {
        let sid = self.websockets.get(&conn)?;
        let session = self.sessions.get(sid)?;
        let via = match session.transport {
            Transport::Upgrading { probe, .. } if probe == conn => Via::Probe(conn),
            _ => Via::Active,
        };
        Some((sid.clone(), via))
    }

    /// Ends the session, or just the probe WebSocket when that is where the problem came from.
    fn close_on(&mut self, sid: &str, via: Via, reason: CloseReason) {
        match via {
            Via::Active => self.close_session(sid, reason),
            Via::Probe(probe) => {
                self.push_close(probe, reason);
                self.abandon_upgrade(sid, probe);
            }
        }
    }

    /// The probe WebSocket failed or timed out: the session stays on polling.
    fn abandon_upgrade(&mut self, sid: &str, probe: ConnId) {
        self.websockets.remove(&probe);
        if let Some(session) = self.sessions.get_mut(sid)
            && let Transport::Upgrading { held_get, .. } = &mut session.transport
        {
            session.transport = Transport::Polling {
                held_get: held_get.take(),
            };
            self.flush_polling(sid);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Engine.IO packets

    fn handle_engine_packet(&mut self, sid: &str, via: Via, packet: engineio::Packet, now: u64) {
        use engineio::Packet as P;
        if let Via::Probe(probe) = via {
            match packet {
                P::Ping { probe: true } => {
                    self.outputs.push_back(Output::Transmit {
                        conn: probe,
                        frames: Arc::from(vec![P::Pong { probe: true }.to_frame()]),
                    });
                    if let Some(session) = self.sessions.get_mut(sid)
                        && let Transport::Upgrading { probed, .. } = &mut session.transport
                    {
                        *probed = true;
                    }
                    // A waiting GET ends with a noop so the client can pause polling.
                    self.flush_polling(sid);
                }
                P::Upgrade => self.complete_upgrade(sid, probe, now),
                _ => self.close_on(sid, via, CloseReason::ProtocolError),
            }
            return;
        }
        match packet {
            P::Pong { probe: false } => {
                if let Some(session) = self.sessions.get_mut(sid)
                    && session.awaiting_pong_since.take().is_none()
                {
                    session.pong_deadline = None;
                    session.next_ping_at = Some(now + self.policy.ping_interval_ms);
                }
                self.schedule(sid);
            }
            P::Close => self.client_close(sid, now),
            P::Message(text) => match self.behaviour.engine_layer() {
                EngineLayer::Echo => {
                    let frames: Frames = Arc::from(vec![P::Message(text).to_frame()]);
                    self.deliver(sid, &frames);
                }
                EngineLayer::SocketIo => self.handle_socketio_text(sid, &text, now),
            },
            P::BinaryMessage(bytes) => match self.behaviour.engine_layer() {
                EngineLayer::Echo => {
                    let frames: Frames = Arc::from(vec![WireFrame::binary(bytes)]);
                    self.deliver(sid, &frames);
                }
                EngineLayer::SocketIo => self.handle_socketio_attachment(sid, bytes, now),
            },
            // Harmless leftovers of an upgrade.
            P::Noop | P::Upgrade => {}
            // Clients never open sessions or ping the server in Engine.IO v4.
            P::Open(_) | P::Ping { .. } | P::Pong { probe: true } => {
                self.close_session(sid, CloseReason::ProtocolError);
            }
        }
    }

    fn complete_upgrade(&mut self, sid: &str, probe: ConnId, now: u64) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let Transport::Upgrading {
            held_get, probed, ..
        } = &mut session.transport
        else {
            return;
        };
        if !*probed {
            self.close_on(sid, Via::Probe(probe), CloseReason::ProtocolError);
            return;
        }
        let held_get = held_get.take();
        session.transport = Transport::WebSocket { conn: probe };
        let queued = std::mem::take(&mut session.poll_queue);
        if let Some((request, cors)) = held_get {
            // The probe already ended the GET waiting then; this one came after it and raced the
            // upgrade packet: refuse it as a GET after the upgrade.
            self.held_polls.remove(&request);
            self.respond_error(request, EngineError::BadRequest, cors);
        }
        for frames in queued {
            self.outputs.push_back(Output::Transmit {
                conn: probe,
                frames,
            });
        }
        self.outputs
            .push_back(Output::SessionChanged { conn: probe });
        if self.batched_heartbeats {
            self.start_heartbeat(sid, now);
        } else {
            self.schedule(sid);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Socket.IO packets

    fn handle_socketio_text(&mut self, sid: &str, text: &str, now: u64) {
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        if session.partial.is_some() {
            // A binary packet is missing attachments; a text packet now breaks the stream.
            self.close_session(sid, CloseReason::ProtocolError);
            return;
        }
        let packet = match socketio::Packet::decode(text) {
            Ok(packet) => packet,
            Err(_) => {
                self.close_session(sid, CloseReason::ProtocolError);
                return;
            }
        };
        match packet.kind {
            PacketKind::BinaryEvent | PacketKind::BinaryAck if packet.attachments > 0 => {
                if let Some(session) = self.sessions.get_mut(sid) {
                    session.partial = Some(Box::new(PartialBinaryPacket::new(packet)));
                }
            }
            _ => self.handle_socketio_packet(sid, packet, Vec::new(), now),
        }
    }

    fn handle_socketio_attachment(&mut self, sid: &str, bytes: Bytes, now: u64) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(partial) = session.partial.as_mut() else {
            // Binary data nobody announced.
            self.close_session(sid, CloseReason::ProtocolError);
            return;
        };
        // One packet's attachments together obey the payload limit, or a client could make the
        // server hold a thousand maximal frames.
        let buffered: usize = partial.received().iter().map(Bytes::len).sum();
        if (buffered + bytes.len()) as u64 > self.policy.max_payload {
            self.close_session(sid, CloseReason::PayloadTooLarge);
            return;
        }
        match partial.push(bytes) {
            Ok(None) => {}
            Ok(Some((packet, attachments))) => {
                session.partial = None;
                self.handle_socketio_packet(sid, packet, attachments, now);
            }
            Err(_) => self.close_session(sid, CloseReason::ProtocolError),
        }
    }

    fn handle_socketio_packet(
        &mut self,
        sid: &str,
        packet: socketio::Packet,
        attachments: Vec<Bytes>,
        now: u64,
    ) {
        match packet.kind {
            PacketKind::Connect => {
                self.connect_socket(sid, &packet.namespace, packet.data.as_ref(), now)
            }
            PacketKind::Disconnect => {
                self.disconnect_socket(sid, &packet.namespace);
                self.session_changed(sid);
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                self.dispatch_event(sid, packet, attachments, now);
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some(id) = packet.id else {
                    self.close_session(sid, CloseReason::ProtocolError);
                    return;
                };
                let Some(session) = self.sessions.get_mut(sid) else {
                    return;
                };
                // An ack nobody waits for (unknown id, or already timed out) is dropped quietly.
                let resolved = session
                    .sockets
                    .get_mut(&packet.namespace)
                    .and_then(|socket| socket.pending_acks.remove(&id));
                if let Some(pending) = resolved {
                    self.outputs.push_back(Output::AckReceived {
                        token: pending.token,
                        args: packet.data.unwrap_or(Value::Array(Vec::new())),
                        attachments,
                    });
                    self.session_changed(sid);
                }
            }
            // Only servers send CONNECT_ERROR.
            PacketKind::ConnectError => self.close_session(sid, CloseReason::ProtocolError),
        }
    }

    fn refuse_connect(&mut self, sid: &str, namespace: &str, reason: &str) {
        let frames = frames_of(
            &socketio::Packet::connect_error(namespace, reason),
            Vec::new(),
        );
        self.deliver(sid, &frames);
    }

    fn connect_socket(&mut self, sid: &str, namespace: &str, auth: Option<&Value>, now: u64) {
        if !self.policy.allows_namespace(namespace) {
            self.refuse_connect(sid, namespace, "Invalid namespace");
            return;
        }
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        if let Some(existing) = session.sockets.get(namespace) {
            // Already connected: confirm again rather than create a second socket.
            let frames = frames_of(
                &socketio::Packet::connect_ok(namespace, &existing.id),
                Vec::new(),
            );
            self.deliver(sid, &frames);
            return;
        }
        // Private channels: the token decides, before anything else is revealed.
        let grant = match self.policy.auth {
            AuthMode::Public => Grant::default(),
            AuthMode::Private => {
                match auth::verify_connect(auth, &self.policy, &self.name, &self.params, now) {
                    Ok(grant) => grant,
                    Err(reason) => {
                        self.refuse_connect(sid, namespace, &reason);
                        return;
                    }
                }
            }
        };
        if let Some(max) = self.policy.max_sockets {
            let sockets: usize = self.namespaces.values().map(|ns| ns.sockets.len()).sum();
            if sockets as u64 >= max {
                self.refuse_connect(
                    sid,
                    namespace,
                    &format!("channel is full: at most {max} sockets"),
                );
                return;
            }
        }
        let socket_id = self.new_id(|channel, id| {
            channel
                .namespaces
                .get(namespace)
                .is_some_and(|ns| ns.sockets.contains_key(id))
        });
        let no_rooms = BTreeSet::new();
        let view = SocketView {
            id: &socket_id,
            namespace,
            rooms: &no_rooms,
            granted_rooms: &grant.rooms,
        };
        match self.behaviour.on_connect(view, auth) {
            ConnectDecision::Reject(message) => {
                let frames = frames_of(
                    &socketio::Packet::connect_error(namespace, &message),
                    Vec::new(),
                );
                self.deliver(sid, &frames);
            }
            ConnectDecision::Accept(actions) => {
                let Some(session) = self.sessions.get_mut(sid) else {
                    return;
                };
                session.connect_deadline = None;
                let mut socket = SocketState::new(socket_id.clone());
                socket.user = grant.subject;
                socket.granted_rooms = grant.rooms;
                socket.granted_rooms.truncate(session::MAX_GRANTED_ROOMS);
                socket.allowance = self
                    .policy
                    .events_per_second
                    .map(|rate| (rate.saturating_mul(1000), now));
                session.sockets.insert(namespace.to_string(), socket);
                self.namespaces
                    .entry(namespace.to_string())
                    .or_default()
                    .sockets
                    .insert(socket_id.clone(), sid.to_string());
                let frames = frames_of(
                    &socketio::Packet::connect_ok(namespace, &socket_id),
                    Vec::new(),
                );
                self.deliver(sid, &frames);
                self.apply_actions(sid, namespace, None, actions);
                self.session_changed(sid);
                self.schedule(sid);
            }
        }
    }

    /// Removes the session's socket from `namespace` and from all its rooms.
    fn disconnect_socket(&mut self, sid: &str, namespace: &str) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(socket) = session.sockets.remove(namespace) else {
            return;
        };
        self.outputs.extend(
            socket
                .pending_acks
                .values()
                .map(|pending| Output::AckUnanswered {
                    token: pending.token,
                }),
        );
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.sockets.remove(&socket.id);
            for room in &socket.rooms {
                if let Some(members) = ns.rooms.get_mut(room) {
                    members.remove(&socket.id);
                    if members.is_empty() {
                        ns.rooms.remove(room);
                    }
                }
            }
            if ns.sockets.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
    }

    fn dispatch_event(
        &mut self,
        sid: &str,
        packet: socketio::Packet,
        attachments: Vec<Bytes>,
        now: u64,
    ) {
        let namespace = packet.namespace.as_str();
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        // Events for a namespace the client has not joined are ignored, as socket.io does.
        let Some(socket) = session.sockets.get_mut(namespace) else {
            return;
        };
        if let Some(rate) = self.policy.events_per_second
            && !socket.take_event_allowance(rate, now)
        {
            // Over its rate: the event goes nowhere. Only this socket pays; an ack request learns why.
            if let Some(id) = packet.id {
                let reason = format!("rate limit exceeded: at most {rate} events per second");
                let frames = frames_of(
                    &socketio::Packet::ack(
                        namespace,
                        serde_json::json!([{ "ok": false, "error": reason }]),
                        id,
                        0,
                    ),
                    Vec::new(),
                );
                self.deliver(sid, &frames);
            }
            return;
        }
        let Some(socket) = self
            .sessions
            .get(sid)
            .and_then(|session| session.sockets.get(namespace))
        else {
            return;
        };
        let Some(args) = packet.data.as_ref() else {
            return;
        };
        let Some(name) = packet.event_name() else {
            self.close_session(sid, CloseReason::ProtocolError);
            return;
        };
        let view = SocketView {
            id: &socket.id,
            namespace,
            rooms: &socket.rooms,
            granted_rooms: &socket.granted_rooms,
        };
        let event = IncomingEvent {
            name,
            args,
            attachments: &attachments,
            wants_ack: packet.id.is_some(),
        };
        let actions = self.behaviour.on_event(view, event);
        self.apply_actions(sid, namespace, packet.id, actions);
    }

    /// Carries out a behaviour's decisions for the socket of session `sid` in `namespace`.
    fn apply_actions(
        &mut self,
        sid: &str,
        namespace: &str,
        mut ack_id: Option<u64>,
        actions: Vec<Action>,
    ) {
        let mut rooms_changed = false;
        for action in actions {
            match action {
                Action::Ack { args, attachments } => {
                    // Each ack request is answered at most once.
                    if let Some(id) = ack_id.take() {
                        let count = attachments.len();
                        let frames = frames_of(
                            &socketio::Packet::ack(namespace, args, id, count),
                            attachments,
                        );
                        self.deliver(sid, &frames);
                    }
                }
                Action::EmitToSender { args, attachments } => {
                    let count = attachments.len();
                    let frames = frames_of(
                        &socketio::Packet::event(namespace, args, None, count),
                        attachments,
                    );
                    self.deliver(sid, &frames);
                }
                Action::Broadcast {
                    audience,
                    args,
                    attachments,
                } => {
                    let sender = self.socket_id(sid, namespace);
                    let count = attachments.len();
                    let frames = frames_of(
                        &socketio::Packet::event(namespace, args, None, count),
                        attachments,
                    );
                    self.broadcast(namespace, &audience, sender.as_deref(), &frames);
                }
                Action::Join(room) => {
                    rooms_changed |= self.join_room(sid, namespace, room);
                }
                Action::Leave(room) => {
                    rooms_changed |= self.leave_room(sid, namespace, &room);
                }
            }
        }
        if rooms_changed {
            self.session_changed(sid);
        }
    }

    fn socket_id(&self, sid: &str, namespace: &str) -> Option<String> {
        Some(self.sessions.get(sid)?.sockets.get(namespace)?.id.clone())
    }

    fn join_room(&mut self, sid: &str, namespace: &str, room: String) -> bool {
        let Some(socket) = self
            .sessions
            .get_mut(sid)
            .and_then(|session| session.sockets.get_mut(namespace))
        else {
            return false;
        };
        if !socket.rooms.insert(room.clone()) {
            return false;
        }
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .rooms
            .entry(room)
            .or_default()
            .insert(socket.id.clone());
        true
    }

    fn leave_room(&mut self, sid: &str, namespace: &str, room: &str) -> bool {
        let Some(socket) = self
            .sessions
            .get_mut(sid)
            .and_then(|session| session.sockets.get_mut(namespace))
        else {
            return false;
        };
        if !socket.rooms.remove(room) {
            return false;
        }
        if let Some(ns) = self.namespaces.get_mut(namespace)
            && let Some(members) = ns.rooms.get_mut(room)
        {
            members.remove(&socket.id);
            if members.is_empty() {
                ns.rooms.remove(room);
            }
        }
        true
    }

    /// Sends `frames` to every socket of `namespace` in the audience; returns how many received it.
    fn broadcast(
        &mut self,
        namespace: &str,
        audience: &Audience,
        sender: Option<&str>,
        frames: &Frames,
    ) -> usize {
        // Split borrows: recipients are read from the namespace while their sessions and the
        // outputs are written, with no per-recipient copy of anything but the shared frame.
        let Channel {
            namespaces,
            sessions,
            outputs,
            ..
        } = self;
        let Some(ns) = namespaces.get(namespace) else {
            return 0;
        };
        let excluded = |socket_id: &str| {
            (audience.except_sender && Some(socket_id) == sender)
                || audience.except.iter().any(|except| except == socket_id)
        };
        if audience.rooms.is_empty() {
            outputs.reserve(ns.sockets.len());
        }
        let mut recipients = 0;
        // Polling sessions are answered after the loop (that needs the whole channel).
        let mut polling: Vec<String> = Vec::new();
        let mut deliver = |sid: &str| {
            recipients += 1;
            let Some(session) = sessions.get_mut(sid) else {
                return;
            };
            match session.transport {
                Transport::WebSocket { conn } => outputs.push_back(Output::Transmit {
                    conn,
                    frames: frames.clone(),
                }),
                Transport::Polling { .. } | Transport::Upgrading { .. } => {
                    session.poll_queue.push(frames.clone());
                    polling.push(sid.to_string());
                }
            }
        };
        if audience.rooms.is_empty() {
            for (socket_id, sid) in &ns.sockets {
                if !excluded(socket_id) {
                    deliver(sid);
                }
            }
        } else {
            // A socket in several of the rooms gets the event once.
            let mut members = BTreeSet::new();
            for room in &audience.rooms {
                if let Some(room_members) = ns.rooms.get(room) {
                    members.extend(room_members.iter().map(String::as_str));
                }
            }
            for socket_id in members {
                if !excluded(socket_id)
                    && let Some(sid) = ns.sockets.get(socket_id)
                {
                    deliver(sid);
                }
            }
        }
        for sid in polling {
            self.flush_polling(&sid);
        }
        recipients
    }

    // ---------------------------------------------------------------------------------------------
    // Server-side emits

    /// Emits an event from the server to `emit.namespace`, or to rooms of it, except some sockets.
    /// The event is encoded once. Returns the number of sockets it was delivered to.
    pub fn emit(&mut self, emit: ServerEmit, _now: u64) -> Result<usize, EmitError> {
        self.check_emit(&emit.namespace, &emit.args, &emit.attachments)?;
        let count = emit.attachments.len();
        let frames = frames_of(
            &socketio::Packet::event(&emit.namespace, emit.args, None, count),
            emit.attachments,
        );
        let audience = Audience {
            rooms: emit.rooms,
            except: emit.except,
            except_sender: false,
        };
        Ok(self.broadcast(&emit.namespace, &audience, None, &frames))
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
        self.check_emit(namespace, &args, &attachments)?;
        let sid = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.sockets.get(socket_id))
            .cloned()
            .ok_or_else(|| EmitError::UnknownSocket(socket_id.to_string()))?;
        let socket = self
            .sessions
            .get_mut(&sid)
            .and_then(|session| session.sockets.get_mut(namespace))
            .ok_or_else(|| EmitError::UnknownSocket(socket_id.to_string()))?;
        let id = socket.next_ack_id;
        socket.next_ack_id += 1;
        socket.pending_acks.insert(
            id,
            PendingAck {
                token,
                deadline: now + timeout_ms,
            },
        );
        let count = attachments.len();
        let frames = frames_of(
            &socketio::Packet::event(namespace, args, Some(id), count),
            attachments,
        );
        self.deliver(&sid, &frames);
        self.session_changed(&sid);
        self.schedule(&sid);
        Ok(())
    }

    fn check_emit(
        &self,
        namespace: &str,
        args: &Value,
        attachments: &[Bytes],
    ) -> Result<(), EmitError> {
        if !self.policy.allows_namespace(namespace) {
            return Err(EmitError::UnknownNamespace(namespace.to_string()));
        }
        let name = match args {
            Value::Array(items) => match items.first() {
                Some(Value::String(name)) if !name.is_empty() => name,
                _ => return Err(EmitError::InvalidEvent),
            },
            _ => return Err(EmitError::InvalidEvent),
        };
        if RESERVED_EVENTS.contains(&name.as_str()) {
            return Err(EmitError::ReservedEvent(name.clone()));
        }
        socketio::validate_placeholders(args, attachments.len())
            .map_err(|err| EmitError::Attachments(err.to_string()))
    }

    // ---------------------------------------------------------------------------------------------
    // Sessions

    fn new_session(&mut self, transport: Transport, now: u64) -> String {
        let sid = self.new_id(|channel, id| {
            channel.sessions.contains_key(id) || channel.closing_polls.contains_key(id)
        });
        let mut session = Session::new(sid.clone(), transport, now);
        if self.behaviour.engine_layer() == EngineLayer::SocketIo {
            session.connect_deadline = Some(now + self.policy.connect_timeout_ms);
        }
        self.sessions.insert(sid.clone(), Box::new(session));
        self.start_heartbeat(&sid, now);
        sid
    }

    fn handshake(&self, sid: &str, upgrades: Vec<String>) -> engineio::Packet {
        Handshake {
            sid: sid.to_string(),
            upgrades,
            ping_interval: self.policy.ping_interval_ms,
            ping_timeout: self.policy.ping_timeout_ms,
            max_payload: self.policy.max_payload,
        }
        .to_packet()
    }

    /// A fresh random id (20 base64url characters, 120 bits) that `taken` says is not in use.
    fn new_id(&mut self, taken: impl Fn(&Channel, &str) -> bool) -> String {
        loop {
            let mut bytes = [0u8; 15];
            self.random.fill_bytes(&mut bytes);
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            if !taken(self, &id) {
                return id;
            }
        }
    }

    /// Queues frames for a session on whatever transport it uses now.
    fn deliver(&mut self, sid: &str, frames: &Frames) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        match session.transport {
            Transport::WebSocket { conn } => self.outputs.push_back(Output::Transmit {
                conn,
                frames: frames.clone(),
            }),
            Transport::Polling { .. } | Transport::Upgrading { .. } => {
                session.poll_queue.push(frames.clone());
                self.flush_polling(sid);
            }
        }
    }

    fn session_changed(&mut self, sid: &str) {
        if let Some(Session {
            transport: Transport::WebSocket { conn },
            ..
        }) = self.sessions.get(sid).map(|session| &**session)
        {
            self.outputs
                .push_back(Output::SessionChanged { conn: *conn });
        }
    }

    /// The client sent a close packet. A polling session with no GET waiting keeps, for a short
    /// grace, the answer of the GET that may still be on its way (engine.io's orderly close);
    /// everything else about the session ends now.
    fn client_close(&mut self, sid: &str, now: u64) {
        let orderly = matches!(
            self.sessions.get(sid).map(|session| &session.transport),
            Some(Transport::Polling { held_get: None })
        );
        self.close_session(sid, CloseReason::ClientClose);
        if orderly {
            let until = now + ORDERLY_CLOSE_GRACE_MS;
            self.closing_polls.insert(sid.to_string(), until);
            self.timers.push(Reverse((until, sid.to_string())));
        }
    }

    /// Ends a session: its sockets leave their namespaces and rooms, pending acks are reported
    /// unanswered, and its transport is closed.
    fn close_session(&mut self, sid: &str, reason: CloseReason) {
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        let namespaces: Vec<String> = session.sockets.keys().cloned().collect();
        for namespace in namespaces {
            self.disconnect_socket(sid, &namespace);
        }
        let Some(session) = self.sessions.remove(sid) else {
            return;
        };
        match session.transport {
            Transport::WebSocket { conn } => {
                self.websockets.remove(&conn);
                self.push_close(conn, reason);
            }
            Transport::Polling { held_get } => self.end_held_poll(held_get, reason),
            Transport::Upgrading {
                held_get, probe, ..
            } => {
                self.websockets.remove(&probe);
                self.push_close(probe, reason);
                self.end_held_poll(held_get, reason);
            }
        }
    }

    /// A GET still waiting when its session ends gets a last word: noop when the client asked to
    /// close, a close packet otherwise.
    fn end_held_poll(
        &mut self,
        held_get: Option<(ConnId, Vec<(&'static str, String)>)>,
        reason: CloseReason,
    ) {
        if let Some((request, cors)) = held_get {
            self.held_polls.remove(&request);
            let body: &'static [u8] = if reason == CloseReason::ClientClose {
                b"6"
            } else {
                b"1"
            };
            self.respond(
                request,
                HttpResponse::text(200, Bytes::from_static(body)).with_headers(cors),
            );
        }
    }

    fn push_close(&mut self, conn: ConnId, reason: CloseReason) {
        let (code, reason) = reason.close_code();
        self.outputs
            .push_back(Output::CloseWebSocket { conn, code, reason });
    }

    fn respond(&mut self, request: ConnId, response: HttpResponse) {
        self.outputs
            .push_back(Output::Respond { request, response });
    }

    fn respond_error(
        &mut self,
        request: ConnId,
        error: EngineError,
        cors: Vec<(&'static str, String)>,
    ) {
        self.respond(request, error.response().with_headers(cors));
    }
}

/// Encodes a packet once, followed by its binary attachments.
fn frames_of(packet: &socketio::Packet, attachments: Vec<Bytes>) -> Frames {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(packet.to_frame());
    frames.extend(attachments.into_iter().map(WireFrame::binary));
    Arc::from(frames)
}
