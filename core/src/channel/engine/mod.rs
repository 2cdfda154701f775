//! The Engine.IO engine of one channel: sessions, their transports (long-polling, WebSocket, the
//! upgrade between them), heartbeats and the timers they need.
//!
//! The engine knows nothing of Socket.IO. It turns host inputs into [`EngineEvent`]s (a session
//! opened, a message or binary message arrived, a session closed) that the layer above takes with
//! [`Engine::poll_event`]; it never calls up. The layer above speaks back through
//! [`Engine::send`], [`Engine::broadcast`] and [`Engine::close`]. What the host must do comes out
//! of [`Engine::poll_output`].
//!
//! Sessions are named by a [`SessionKey`] inside the channel; the sid, which clients send, is
//! looked up once per input.

mod heartbeat;
mod polling;
pub(crate) mod session;
mod websocket;

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use super::timers::TimerQueue;
use super::{CloseReason, ConnId, FastMap, Frames, Output, RandomSource};
use crate::config::ChannelPolicy;
use crate::engineio::{self, Handshake};
use crate::http::{EngineError, HttpResponse};

pub use session::SessionKey;
use session::{EngineSession, Transport};

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

/// What happened to a session, for the layer above.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineEvent {
    Opened(SessionKey),
    Message(SessionKey, String),
    Binary(SessionKey, Bytes),
    Closed(SessionKey, CloseReason),
}

/// The engine's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum EngineTimer {
    /// The session's earliest deadline: its ping, its pong, its upgrade.
    Session(SessionKey),
    /// The channel-wide heartbeat round of batched heartbeats.
    PingRound,
    /// The oldest orderly-close answer runs out.
    OrderlyCloses,
}

/// Where an Engine.IO packet came from within its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The session's active transport (its WebSocket, or a polling POST).
    Active,
    /// The WebSocket opened to probe an upgrade.
    Probe(ConnId),
}

/// The answer to [`crate::channel::Channel::check_ws_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsAdmission {
    /// Complete the handshake and hand the socket to the channel.
    Accept,
    /// Complete the handshake, then close the socket with this code and reason; the channel never
    /// sees it.
    AcceptAndClose { code: u16, reason: &'static str },
}

pub(crate) struct Engine {
    policy: Arc<ChannelPolicy>,
    random: Box<dyn RandomSource>,
    /// Boxed: the table then holds a pointer per session, not a whole session per bucket (and a
    /// table has up to twice the buckets it has sessions).
    sessions: FastMap<SessionKey, Box<EngineSession>>,
    next_key: u64,
    by_sid: FastMap<String, SessionKey>,
    /// WebSocket connection → session, for active and probing connections.
    websockets: FastMap<ConnId, SessionKey>,
    /// Held polling GET → session.
    held_polls: FastMap<ConnId, SessionKey>,
    /// Polling sessions their client closed while no GET was waiting: sid → until when the next
    /// GET is answered with a noop; `closing_order` lists them oldest first.
    closing_polls: FastMap<String, u64>,
    closing_order: VecDeque<(u64, String)>,
    timers: TimerQueue<EngineTimer>,
    events: VecDeque<EngineEvent>,
    outputs: VecDeque<Output>,
    /// The ping packet, encoded once.
    ping: Frames,
    batched_heartbeats: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(policy: Arc<ChannelPolicy>, random: Box<dyn RandomSource>) -> Engine {
        Engine {
            policy,
            random,
            sessions: FastMap::default(),
            next_key: 1,
            by_sid: FastMap::default(),
            websockets: FastMap::default(),
            held_polls: FastMap::default(),
            closing_polls: FastMap::default(),
            closing_order: VecDeque::new(),
            timers: TimerQueue::default(),
            events: VecDeque::new(),
            outputs: VecDeque::new(),
            ping: Arc::from(vec![engineio::Packet::Ping { probe: false }.to_frame()]),
            batched_heartbeats: false,
        }
    }

    /// See [`crate::channel::Channel::with_batched_heartbeats`].
    pub fn batch_heartbeats(&mut self) {
        self.batched_heartbeats = true;
    }

    pub fn policy(&self) -> &Arc<ChannelPolicy> {
        &self.policy
    }

    // ---------------------------------------------------------------------------------------------
    // What comes out

    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn push_output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub fn next_timer(&mut self) -> Option<u64> {
        self.timers.next()
    }

    /// Runs every engine timer due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                EngineTimer::Session(key) => self.run_session_timers(key, now),
                EngineTimer::PingRound => self.run_ping_round(now),
                EngineTimer::OrderlyCloses => self.expire_orderly_closes(now),
            }
        }
    }

    /// Nothing is open or pending.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.outputs.is_empty() && self.closing_polls.is_empty()
    }

    // ---------------------------------------------------------------------------------------------
    // Sessions, for the layer above

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_open(&self, key: SessionKey) -> bool {
        self.sessions.contains_key(&key)
    }

    pub fn sid(&self, key: SessionKey) -> Option<&str> {
        self.sessions.get(&key).map(|session| session.sid.as_str())
    }

    pub fn opened_at(&self, key: SessionKey) -> Option<u64> {
        self.sessions.get(&key).map(|session| session.opened_at)
    }

    /// The session carried by WebSocket `conn`, if that is its active transport.
    pub fn key_of_websocket(&self, conn: ConnId) -> Option<SessionKey> {
        let key = *self.websockets.get(&conn)?;
        match self.sessions.get(&key)?.transport {
            Transport::WebSocket { conn: active } if active == conn => Some(key),
            _ => None,
        }
    }

    /// Every session whose active transport is a WebSocket, with its connection.
    pub fn websocket_sessions(&self) -> impl Iterator<Item = (ConnId, SessionKey)> + '_ {
        self.sessions
            .iter()
            .filter_map(|(key, session)| match session.transport {
                Transport::WebSocket { conn } => Some((conn, *key)),
                _ => None,
            })
    }

    /// A fresh random id (20 base64url characters, 120 bits) that `taken` says is not in use.
    pub fn new_id(&mut self, taken: impl Fn(&str) -> bool) -> String {
        loop {
            let id = random_id(&mut *self.random);
            if !taken(&id) {
                return id;
            }
        }
    }

    /// A random number, for names the host and the channel share (backend call ids).
    pub fn random_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.random.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// Queues frames for a session on whatever transport it uses now.
    pub fn send(&mut self, key: SessionKey, frames: &Frames) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        match session.transport {
            Transport::WebSocket { conn } => self.outputs.push_back(Output::Transmit {
                conn,
                frames: frames.clone(),
            }),
            Transport::Polling { .. } | Transport::Upgrading(_) => {
                if session
                    .poll_queue
                    .push(frames, session::body_len(frames))
                    .is_err()
                {
                    self.close(key, CloseReason::TooSlow);
                    return;
                }
                self.flush_polling(key);
            }
        }
    }

    /// Sends the same frames to many sessions: one [`Output::Broadcast`] names every WebSocket
    /// recipient; polling recipients get them in their queues. Returns how many sessions it
    /// reached.
    pub fn broadcast(
        &mut self,
        recipients: impl IntoIterator<Item = SessionKey>,
        frames: &Frames,
    ) -> usize {
        let mut conns = Vec::new();
        let mut polling = Vec::new();
        let mut too_slow = Vec::new();
        // What the message takes in a polling body, once for every polling recipient.
        let mut polling_len = None;
        let mut reached = 0;
        for key in recipients {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            reached += 1;
            match session.transport {
                Transport::WebSocket { conn } => conns.push(conn),
                Transport::Polling { .. } | Transport::Upgrading(_) => {
                    let bytes = *polling_len.get_or_insert_with(|| session::body_len(frames));
                    match session.poll_queue.push(frames, bytes) {
                        Ok(()) => polling.push(key),
                        Err(_) => too_slow.push(key),
                    }
                }
            }
        }
        match conns.len() {
            0 => {}
            1 => self.outputs.push_back(Output::Transmit {
                conn: conns[0],
                frames: frames.clone(),
            }),
            _ => self.outputs.push_back(Output::Broadcast {
                conns,
                frames: frames.clone(),
            }),
        }
        for key in polling {
            self.flush_polling(key);
        }
        for key in too_slow {
            self.close(key, CloseReason::TooSlow);
        }
        reached
    }

    /// Tells the host that the snapshot of `key` changed (only WebSocket sessions are kept by a
    /// restarted host).
    pub fn session_changed(&mut self, key: SessionKey) {
        if let Some(Transport::WebSocket { conn }) =
            self.sessions.get(&key).map(|session| &session.transport)
        {
            self.outputs
                .push_back(Output::SessionChanged { conn: *conn });
        }
    }

    /// Ends a session: its transport is closed (a waiting GET gets its last packet) and the layer
    /// above hears [`EngineEvent::Closed`].
    pub fn close(&mut self, key: SessionKey, reason: CloseReason) {
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        self.by_sid.remove(&session.sid);
        self.timers.cancel(EngineTimer::Session(key));
        match session.transport {
            Transport::WebSocket { conn } => {
                self.websockets.remove(&conn);
                self.push_close(conn, reason);
            }
            Transport::Polling { held_get } => self.end_held_poll(held_get, reason),
            Transport::Upgrading(upgrade) => {
                self.websockets.remove(&upgrade.probe);
                self.push_close(upgrade.probe, reason);
                self.end_held_poll(upgrade.held_get, reason);
            }
        }
        self.outputs
            .push_back(Output::SessionClosed { sid: session.sid });
        self.events.push_back(EngineEvent::Closed(key, reason));
    }

    /// Closes every session (the server is shutting down).
    pub fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Rebuilding

    /// Adds a WebSocket session from what a restarted host kept of it. Returns `None` (and closes
    /// the connection) when its sid or connection is already taken.
    pub fn restore_websocket(
        &mut self,
        conn: ConnId,
        sid: String,
        opened_at: u64,
        now: u64,
    ) -> Option<SessionKey> {
        if self.by_sid.contains_key(&sid) || self.websockets.contains_key(&conn) {
            // Two sockets claiming one session: keep the first, drop the impostor.
            self.push_close(conn, CloseReason::ProtocolError);
            return None;
        }
        let key = self.insert(EngineSession::new(
            sid,
            Transport::WebSocket { conn },
            opened_at,
        ));
        self.websockets.insert(conn, key);
        if self.batched_heartbeats {
            // Who answered the last round is unknown after a restart. Any socket old enough to
            // have been pinged must show a pong (see `handle_pong_seen`) newer than one interval
            // plus the allowed answer time ago, or it is closed at the next round.
            let window = self
                .policy
                .ping_interval_ms
                .saturating_add(self.policy.ping_timeout_ms);
            let threshold = now.saturating_sub(window);
            let awaiting = (opened_at <= threshold).then_some(threshold);
            self.join_rounds(key, awaiting, now);
        } else {
            self.start_heartbeat(key, now);
        }
        Some(key)
    }

    /// After a restore: the wake-up that restored us is, most likely, the round's alarm, so the
    /// round runs now.
    pub fn run_round_now(&mut self, now: u64) {
        if self.batched_heartbeats && !self.sessions.is_empty() {
            self.timers.set(EngineTimer::PingRound, now);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Inside the engine

    fn insert(&mut self, session: EngineSession) -> SessionKey {
        let key = SessionKey(self.next_key);
        self.next_key += 1;
        self.by_sid.insert(session.sid.clone(), key);
        self.sessions.insert(key, Box::new(session));
        key
    }

    /// Opens a new session on `transport` for the handshake made by `conn`, announces it (to the
    /// layer above and to the host), and returns its key.
    fn open_session(&mut self, transport: Transport, conn: ConnId, now: u64) -> SessionKey {
        let sid = loop {
            let id = random_id(&mut *self.random);
            if !self.by_sid.contains_key(&id) && !self.closing_polls.contains_key(&id) {
                break id;
            }
        };
        self.outputs.push_back(Output::SessionOpened {
            sid: sid.clone(),
            conn,
        });
        let key = self.insert(EngineSession::new(sid, transport, now));
        self.start_heartbeat(key, now);
        self.events.push_back(EngineEvent::Opened(key));
        key
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

    /// Puts the session's own next deadline on the timer queue.
    fn schedule(&mut self, key: SessionKey) {
        let deadline = self
            .sessions
            .get(&key)
            .and_then(|session| session.next_deadline());
        self.timers
            .set_or_cancel(EngineTimer::Session(key), deadline);
    }

    /// Before an input for session `key` is handled at `now`, runs what was already due for it, so
    /// the input sees the session as it is at `now` whatever the host's timer precision. Returns
    /// whether the session is still open.
    fn catch_up(&mut self, key: SessionKey, now: u64) -> bool {
        let due = self
            .sessions
            .get(&key)
            .and_then(|session| session.next_deadline())
            .is_some_and(|deadline| deadline <= now);
        if due {
            self.run_session_timers(key, now);
        }
        self.sessions.contains_key(&key)
    }

    /// The client sent a close packet. A polling session with no GET waiting keeps, for a short
    /// grace, the answer of the GET that may still be on its way (engine.io's orderly close);
    /// everything else about the session ends now.
    fn client_close(&mut self, key: SessionKey, now: u64) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let orderly = matches!(session.transport, Transport::Polling { held_get: None })
            .then(|| session.sid.clone());
        self.close(key, CloseReason::ClientClose);
        if let Some(sid) = orderly {
            let until = now + ORDERLY_CLOSE_GRACE_MS;
            self.closing_polls.insert(sid.clone(), until);
            self.closing_order.push_back((until, sid));
            if self.timers.get(EngineTimer::OrderlyCloses).is_none() {
                self.timers.set(EngineTimer::OrderlyCloses, until);
            }
        }
    }

    fn expire_orderly_closes(&mut self, now: u64) {
        while let Some((until, _)) = self.closing_order.front() {
            if *until > now {
                self.timers.set(EngineTimer::OrderlyCloses, *until);
                return;
            }
            let Some((until, sid)) = self.closing_order.pop_front() else {
                return;
            };
            if self.closing_polls.get(&sid) == Some(&until) {
                self.closing_polls.remove(&sid);
            }
        }
    }

    /// A GET still waiting when its session ends gets a last word: noop when the client asked to
    /// close, a close packet otherwise.
    fn end_held_poll(&mut self, held_get: Option<session::HeldRequest>, reason: CloseReason) {
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

/// 120 random bits as 20 base64url characters.
fn random_id(random: &mut dyn RandomSource) -> String {
    let mut bytes = [0u8; 15];
    random.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
