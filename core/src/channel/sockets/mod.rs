//! The Socket.IO layer of one channel: namespaces, their sockets and rooms, acknowledgements in
//! both directions, and the [`Behaviour`] that decides what client events do.
//!
//! It sits on the [`Engine`]: it takes the engine's session events (opened, message, binary,
//! closed), and speaks back through [`Engine::send`], [`Engine::broadcast`] and
//! [`Engine::close`]. A broadcast is encoded once and handed to the engine with all its
//! recipients.
//!
//! Features that build on sockets live here too, each in its own file: calls to the app backend
//! (`handlers.rs`: event handlers, the connect hook), lifecycle webhooks (`webhooks.rs`),
//! connection-state recovery (`recovery.rs`) and presence (`presence.rs`).

mod handlers;
mod namespace;
pub(crate) mod presence;
pub(crate) mod recovery;
mod socket;
mod tokens;
pub(crate) mod webhooks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::engine::{Engine, SessionKey};
use super::timers::TimerQueue;
use super::{
    AckFailure, CloseReason, EmitError, Emitted, FastMap, Frames, NamespaceOccupancy, Occupancy,
    Output, ServerEmit, SessionSnapshot, SocketSnapshot,
};
use crate::auth::{self, Grant};
use crate::backend::{self, ClientInfo};
use crate::behaviour::{
    Action, Audience, Behaviour, ConnectDecision, IncomingEvent, RESERVED_PREFIX, SocketView,
};
use crate::config::{BehaviourKind, ChannelPolicy};
use crate::frame::WireFrame;
use crate::socketio::{self, PacketKind, PartialBinaryPacket, RESERVED_EVENTS};

pub use handlers::{ERROR_EVENT, HOOK_FAILED_MESSAGE, MAX_CALLS_PER_SOCKET};
use handlers::{HookAdmission, PendingCall, disconnect_reason};
use namespace::Namespace;
use presence::{
    Change, MEMBERS_EVENT, MemberKey, PRESENCE_EVENT, Presence, PresenceError, PresencePage,
};
use recovery::{
    Claim, HistoryError, HistoryEvent, Recovery, SocketRecovery, StoreOp, StoredState, keeps_state,
};
pub use socket::{BINARY_DEADLINE_MS, MAX_GRANTED_ROOMS};
use socket::{
    HookData, PartialPacket, PendingAck, RateVerdict, SioSession, SocketMap, SocketState,
};
pub use tokens::REFRESH_EVENT;
use webhooks::Webhooks;

/// The Socket.IO layer's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SocketTimer {
    /// The session's earliest deadline: its connect timeout, its sockets' ack timeouts.
    Session(SessionKey),
    /// A backend call's deadline.
    Call(u64),
    /// The next webhook batch is due.
    Webhooks,
}

pub(crate) struct SocketLayer {
    /// The channel name (`""` for the default channel).
    name: String,
    /// The channel's values of its pattern's parameters (`chats/:id` on `chats/42`: id = 42).
    params: BTreeMap<String, String>,
    policy: Arc<ChannelPolicy>,
    behaviour: Box<dyn Behaviour>,
    /// Boxed, as the engine's are: a table of 10,000 sessions holds room for up to twice as many,
    /// and an empty slot then costs a pointer rather than a whole session.
    sessions: FastMap<SessionKey, Box<SioSession>>,
    namespaces: BTreeMap<String, Namespace>,
    timers: TimerQueue<SocketTimer>,
    /// Backend calls waiting for their answer, by the host's id.
    calls: FastMap<u64, PendingCall>,
    webhooks: Webhooks,
    /// Sessions not yet in a namespace (see [`SocketLayer::awaiting_connect`]).
    awaiting_connect: usize,
    /// The history and parked sockets, on channels with connection-state recovery.
    recovery: Option<Box<Recovery>>,
    /// The members, on channels with presence.
    presence: Option<Box<Presence>>,
}

impl std::fmt::Debug for SocketLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLayer")
            .field("behaviour", &self.behaviour)
            .field("namespaces", &self.namespaces.len())
            .finish_non_exhaustive()
    }
}

impl SocketLayer {
    /// `epoch` prefixes the offsets of the channel's history, if it keeps one: random, so that an
    /// offset from before a restart that lost the history never names a new event.
    pub fn new(
        name: String,
        policy: Arc<ChannelPolicy>,
        behaviour: Box<dyn Behaviour>,
        epoch: String,
    ) -> Self {
        let params = policy
            .pattern
            .as_ref()
            .and_then(|pattern| pattern.bind(&name))
            .unwrap_or_default();
        let recovery = policy
            .recovery
            .map(|recovery| Box::new(Recovery::new(recovery, epoch)));
        let presence = policy.presence.map(|mut presence| {
            // A parked socket stays a member at most as long as it may still recover.
            let window = policy.recovery.map_or(0, |recovery| recovery.window_ms);
            presence.leave_grace_ms = presence.leave_grace_ms.min(window);
            Box::new(Presence::new(presence))
        });
        Self {
            recovery,
            presence,
            name,
            params,
            policy,
            behaviour,
            sessions: FastMap::default(),
            namespaces: BTreeMap::new(),
            timers: TimerQueue::default(),
            calls: FastMap::default(),
            webhooks: Webhooks::default(),
            awaiting_connect: 0,
        }
    }

    pub fn next_timer(&mut self) -> Option<u64> {
        let recovery = self
            .recovery
            .as_ref()
            .and_then(|recovery| recovery.next_deadline());
        let presence = self
            .presence
            .as_ref()
            .and_then(|presence| presence.next_deadline());
        self.timers
            .next()
            .into_iter()
            .chain(recovery)
            .chain(presence)
            .min()
    }

    /// No backend call or webhook is waiting.
    pub fn is_idle(&self) -> bool {
        self.backend_idle()
    }

    /// Recovery keeps something a client could come back for (see
    /// [`crate::channel::Channel::holds_recovery_state`]).
    pub fn holds_recovery_state(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|recovery| recovery.holds_state())
    }

    /// No backend call or webhook is waiting.
    pub fn backend_idle(&self) -> bool {
        self.calls.is_empty() && self.webhooks.is_idle()
    }

    /// Webhook events dropped so far (queue full, or out of attempts).
    pub fn webhooks_dropped(&self) -> u64 {
        self.webhooks.dropped
    }

    // ---------------------------------------------------------------------------------------------
    // Engine events

    /// A new Engine.IO session: it has the connect timeout to join a namespace. `client` is
    /// kept for the connect hook, on channels that have one.
    pub fn opened(&mut self, key: SessionKey, client: Option<ClientInfo>, now: u64) {
        let session = SioSession {
            connect_deadline: Some(now + self.policy.connect_timeout_ms),
            client: client
                .filter(|_| self.policy.auth.asks_backend())
                .map(Box::new),
            ..SioSession::default()
        };
        self.sessions.insert(key, Box::new(session));
        self.awaiting_connect += 1;
        self.schedule(key);
    }

    /// Sessions that have not yet joined a namespace: a channel admits a bounded number of them
    /// (`max_pending_sessions`), or one client could open sessions faster than they time out.
    pub fn awaiting_connect(&self) -> usize {
        self.awaiting_connect
    }

    /// The session ended: its sockets leave their namespaces and rooms, and pending acks are
    /// reported unanswered.
    pub fn closed(&mut self, engine: &mut Engine, key: SessionKey, reason: CloseReason, now: u64) {
        let Some(mut session) = self.sessions.remove(&key) else {
            return;
        };
        if session.connect_deadline.is_some() {
            self.awaiting_connect -= 1;
        }
        self.timers.cancel(SocketTimer::Session(key));
        for (namespace, socket) in session.sockets.drain() {
            self.forget_socket(
                engine,
                key,
                &namespace,
                socket,
                disconnect_reason(reason),
                now,
            );
        }
    }

    /// A text message: a Socket.IO packet, or the first part of a binary one.
    pub fn text(&mut self, engine: &mut Engine, key: SessionKey, text: &str, now: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.partial.is_some() {
            // A binary packet is missing attachments; a text packet now breaks the stream.
            engine.close(key, CloseReason::ProtocolError);
            return;
        }
        let packet = match socketio::Packet::decode(text) {
            Ok(packet) => packet,
            Err(_) => {
                engine.close(key, CloseReason::ProtocolError);
                return;
            }
        };
        match packet.kind {
            PacketKind::BinaryEvent | PacketKind::BinaryAck if packet.attachments > 0 => {
                session.partial = Some(Box::new(PartialPacket {
                    packet: PartialBinaryPacket::new(packet),
                    deadline: now + BINARY_DEADLINE_MS,
                }));
                self.schedule(key);
            }
            _ => self.packet(engine, key, packet, Vec::new(), now),
        }
    }

    /// A binary message: the next attachment of the binary packet being collected.
    pub fn binary(&mut self, engine: &mut Engine, key: SessionKey, bytes: Bytes, now: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(partial) = session.partial.as_mut().map(|partial| &mut partial.packet) else {
            // Binary data nobody announced.
            engine.close(key, CloseReason::ProtocolError);
            return;
        };
        // One packet's attachments together obey the payload limit, or a client could make the
        // server hold a thousand maximal frames.
        let buffered: usize = partial.received().iter().map(Bytes::len).sum();
        if (buffered + bytes.len()) as u64 > self.policy.max_payload {
            engine.close(key, CloseReason::PayloadTooLarge);
            return;
        }
        match partial.push(bytes) {
            Ok(None) => {}
            Ok(Some((packet, attachments))) => {
                session.partial = None;
                self.packet(engine, key, packet, attachments, now);
                self.schedule(key);
            }
            Err(_) => engine.close(key, CloseReason::ProtocolError),
        }
    }

    /// Runs every Socket.IO timer due at `now`: connect timeouts, ack timeouts, backend calls'
    /// timeouts and webhook batches.
    pub fn handle_timeout(&mut self, engine: &mut Engine, now: u64) {
        if let Some(recovery) = self.recovery.as_mut()
            && recovery.next_deadline().is_some_and(|at| at <= now)
        {
            recovery.prune(now);
        }
        self.presence_timeout(engine, now);
        while let Some(timer) = self.timers.pop_due(now) {
            let key = match timer {
                SocketTimer::Session(key) => key,
                SocketTimer::Call(id) => {
                    self.call_timed_out(engine, id, now);
                    continue;
                }
                SocketTimer::Webhooks => {
                    self.send_webhooks(engine, now);
                    continue;
                }
            };
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            if session.pending_connects == 0 && session.connect_deadline.is_some_and(|at| at <= now)
            {
                engine.close(key, CloseReason::ConnectTimeout);
                continue;
            }
            if session
                .partial
                .as_ref()
                .is_some_and(|partial| partial.deadline <= now)
            {
                // Its attachments never all came.
                engine.close(key, CloseReason::ProtocolError);
                continue;
            }
            let expired = session
                .sockets
                .values()
                .any(|socket| socket.expires_at().is_some_and(|at| at <= now));
            let mut acks_timed_out = false;
            for socket in session.sockets.values_mut() {
                socket.retain_pending_acks(|id, ack| {
                    let keep = ack.deadline > now;
                    if !keep {
                        acks_timed_out = true;
                        engine.push_output(Output::AckUnanswered {
                            token: ack.token,
                            socket: id.clone(),
                            reason: AckFailure::Timeout,
                        });
                    }
                    keep
                });
            }
            if acks_timed_out {
                // The acks left the session's snapshot.
                engine.session_changed(key);
            }
            if expired {
                self.expire_tokens(engine, key, now);
            }
            self.schedule(key);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Socket.IO packets

    fn packet(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        packet: socketio::Packet,
        attachments: Vec<Bytes>,
        now: u64,
    ) {
        match packet.kind {
            PacketKind::Connect => {
                self.connect(engine, key, &packet.namespace, packet.data.as_ref(), now);
            }
            PacketKind::Disconnect => {
                self.disconnect(engine, key, &packet.namespace, now);
                engine.session_changed(key);
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                self.event(engine, key, packet, attachments, now);
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some(id) = packet.id else {
                    engine.close(key, CloseReason::ProtocolError);
                    return;
                };
                let Some(socket) = self
                    .sessions
                    .get_mut(&key)
                    .and_then(|session| session.sockets.get_mut(&packet.namespace))
                else {
                    return;
                };
                // An ack nobody waits for (unknown id, or already timed out) is dropped quietly.
                if let Some(pending) = socket.take_pending_ack(id) {
                    engine.push_output(Output::AckReceived {
                        token: pending.token,
                        socket: socket.id.clone(),
                        args: packet.data.unwrap_or(Value::Array(Vec::new())),
                        attachments,
                    });
                    engine.session_changed(key);
                    self.schedule(key);
                }
            }
            // Only servers send CONNECT_ERROR.
            PacketKind::ConnectError => engine.close(key, CloseReason::ProtocolError),
        }
    }

    fn refuse_connect(engine: &mut Engine, key: SessionKey, namespace: &str, reason: &str) {
        let frames = frames_of(
            &socketio::Packet::connect_error(namespace, reason),
            Vec::new(),
        );
        engine.send(key, &frames);
    }

    fn connect(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        auth: Option<&Value>,
        now: u64,
    ) {
        if !self.policy.allows_namespace(namespace) {
            Self::refuse_connect(engine, key, namespace, "Invalid namespace");
            return;
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        if let Some(existing) = session.sockets.get(namespace) {
            // Already connected: confirm again rather than create a second socket (with its
            // private id: a reply without one would make the client forget it).
            let reply = match &existing.recovery {
                Some(state) => {
                    socketio::Packet::connect_ok_recoverable(namespace, &existing.id, &state.pid)
                }
                None => socketio::Packet::connect_ok(namespace, &existing.id),
            };
            engine.send(key, &frames_of(&reply, Vec::new()));
            return;
        }
        if self.connect_pending(key, namespace) {
            // The connect hook is deciding about this namespace already.
            return;
        }
        // A client coming back with a private id: the parked socket it names, if it may recover.
        let recovering = self
            .recovery
            .as_ref()
            .and_then(|recovery| recovery.find(auth, namespace, now).ok().flatten())
            .filter(|record| {
                !self
                    .namespaces
                    .get(namespace)
                    .is_some_and(|ns| ns.sockets.contains_key(&record.sid))
            })
            .cloned();
        let skip_checks = recovering.as_ref().is_some_and(|record| {
            self.policy
                .recovery
                .is_some_and(|policy| policy.skip_middlewares)
                && record.expires_at.is_none_or(|at| at > now)
        });
        // Private channels: the token decides, before anything else is revealed. A recovered
        // socket that skips the checks keeps what its token granted, until that token expires.
        let grant = if skip_checks && let Some(record) = &recovering {
            Grant {
                subject: record.user.clone(),
                rooms: record.granted_rooms.clone(),
                expires_at_ms: record.expires_at,
                info: record.user_info.clone(),
            }
        } else if self.policy.auth.needs_token() {
            match auth::verify_connect(auth, &self.policy, &self.name, &self.params, now) {
                Ok(grant) => grant,
                Err(reason) => {
                    Self::refuse_connect(engine, key, namespace, &reason);
                    return;
                }
            }
        } else {
            Grant::default()
        };
        // A token checked again must be the same user's: anyone else connects as new.
        let recovering = recovering.filter(|record| {
            skip_checks || !self.policy.auth.needs_token() || record.user == grant.subject
        });
        if let Some(reason) = self.full() {
            Self::refuse_connect(engine, key, namespace, &reason);
            return;
        }
        let socket_id = match &recovering {
            Some(record) => record.sid.clone(),
            None => self.new_socket_id(engine, namespace),
        };
        if self.policy.auth.asks_backend() && !skip_checks {
            self.call_connect_hook(engine, key, namespace, socket_id, grant, auth, now);
            return;
        }
        self.admit(engine, key, namespace, socket_id, grant, None, auth, now);
    }

    /// Why the channel takes no more sockets, if it is full.
    fn full(&self) -> Option<String> {
        let max = self.policy.max_sockets?;
        let sockets: usize = self.namespaces.values().map(|ns| ns.sockets.len()).sum();
        (sockets as u64 >= max).then(|| format!("channel is full: at most {max} sockets"))
    }

    /// A fresh socket id (see [`SocketLayer::id_is_taken`]).
    fn new_socket_id(&self, engine: &mut Engine, namespace: &str) -> String {
        engine.new_id(|id| self.id_is_taken(namespace, id))
    }

    /// Whether a new socket of `namespace` may not take `id`: a live or parked socket has it, or
    /// a room is named so (which would receive what is sent to the new socket).
    fn id_is_taken(&self, namespace: &str, id: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(|namespace| {
            namespace.sockets.contains_key(id) || namespace.rooms.contains_key(id)
        }) || self
            .recovery
            .as_ref()
            .is_some_and(|recovery| recovery.parks_sid(id))
    }

    /// Whether `name` is the id of a socket of `namespace`, or of a socket parked for recovery.
    fn is_socket_id(&self, namespace: &str, name: &str) -> bool {
        self.namespaces
            .get(namespace)
            .is_some_and(|namespace| namespace.sockets.contains_key(name))
            || self
                .recovery
                .as_ref()
                .is_some_and(|recovery| recovery.parks_sid(name))
    }

    /// Lets a socket into `namespace`, once the token and the connect hook (if any) agreed: the
    /// behaviour has the last word, then the client gets its CONNECT reply.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        mut socket_id: String,
        grant: Grant,
        hook: Option<HookAdmission>,
        auth: Option<&Value>,
        now: u64,
    ) {
        match self.sessions.get(&key) {
            Some(session) if session.sockets.get(namespace).is_none() => {}
            // Gone, or connected meanwhile.
            _ => return,
        }
        if hook.is_some() {
            // The channel may have filled up, or the id been taken, while the hook decided.
            if let Some(reason) = self.full() {
                Self::refuse_connect(engine, key, namespace, &reason);
                return;
            }
            if self
                .namespaces
                .get(namespace)
                .is_some_and(|ns| ns.sockets.contains_key(&socket_id))
            {
                socket_id = self.new_socket_id(engine, namespace);
            }
        }
        // Presence: the member this socket makes (or adds to), within the channel's bounds.
        let member_user = hook
            .as_ref()
            .and_then(|hook| hook.user.as_deref())
            .or(grant.subject.as_deref());
        // Who has no user may say what to show of it (`auth.info`): anonymous, and shown as such.
        let self_declared = || {
            auth.and_then(|auth| auth.get("info"))
                .filter(|info| !info.is_null())
                .cloned()
        };
        let member_info = hook
            .as_ref()
            .and_then(|hook| hook.user_info.clone())
            .or_else(|| grant.info.clone())
            .or_else(|| match (&self.presence, member_user) {
                (Some(_), None) => self_declared(),
                _ => None,
            });
        let member = self.presence.as_ref().map(|presence| {
            let key = MemberKey::of(member_user, &socket_id);
            let admitted = presence.check_admission(&key, member_info.as_ref());
            (key, admitted)
        });
        let mut member = match member {
            Some((_, Err(reason))) => {
                Self::refuse_connect(engine, key, namespace, &reason);
                return;
            }
            Some((member, Ok(()))) => Some(member),
            None => None,
        };
        let no_rooms = BTreeSet::new();
        let is_socket_id = |name: &str| self.is_socket_id(namespace, name);
        let view = SocketView {
            id: &socket_id,
            namespace,
            rooms: &no_rooms,
            granted_rooms: &grant.rooms,
            is_socket_id: &is_socket_id,
        };
        let actions = match self.behaviour.on_connect(view, auth) {
            ConnectDecision::Reject(message) => {
                Self::refuse_connect(engine, key, namespace, &message);
                return;
            }
            ConnectDecision::Accept(actions) => actions,
        };
        if !self.sessions.contains_key(&key) {
            return;
        }
        // The parked socket this CONNECT recovers, with the events it missed: the same user's,
        // and only the rooms its token (checked again) still grants, unless clients may join
        // rooms on their own.
        let user = hook
            .as_ref()
            .and_then(|hook| hook.user.as_deref())
            .or(grant.subject.as_deref());
        let claim = Claim {
            sid: &socket_id,
            user,
            granted_rooms: (self.policy.auth.needs_token() && !self.policy.client_rooms)
                .then_some(grant.rooms.as_slice()),
        };
        let recovered = self
            .recovery
            .as_mut()
            .and_then(|recovery| recovery.take(auth, namespace, &claim, now));
        // Not recovered after all (another user, or what it missed is gone, or its window ran
        // out while the hook decided): the id it was offered may still be parked, or a room may
        // be named so by now, so this one takes a new id.
        if recovered.is_none()
            && (self.id_is_taken(namespace, &socket_id)
                || self
                    .presence
                    .as_ref()
                    .is_some_and(|presence| presence.in_grace(&socket_id)))
        {
            socket_id = self.new_socket_id(engine, namespace);
            if let Some(MemberKey::Anonymous(id)) = member.as_mut() {
                *id = socket_id.clone();
            }
        }
        let recovery_state = match (&recovered, &mut self.recovery) {
            (Some((pid, _, _)), Some(recovery)) => Some(Box::new(SocketRecovery {
                pid: pid.clone(),
                since: recovery.head(),
            })),
            (None, Some(recovery)) => Some(Box::new(SocketRecovery {
                pid: engine.new_id(|_| false),
                since: recovery.head(),
            })),
            _ => None,
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.connect_deadline.take().is_some() {
            self.awaiting_connect -= 1;
        }
        let mut socket = SocketState::new(socket_id.clone());
        socket.recovery = recovery_state;
        socket.set_identity(grant.subject, grant.rooms, grant.expires_at_ms);
        // The token's `info` claim is the user's info, unless the hook gives one (or, on a
        // presence channel, what a socket without a user declared).
        let token_info =
            if socket.user().is_none() && hook.as_ref().is_none_or(|hook| hook.user.is_none()) {
                grant.info.or_else(|| member_info.clone())
            } else {
                grant.info
            };
        let mut hook_rooms = Vec::new();
        if let Some(hook) = hook {
            if let Some(user) = hook.user {
                socket.set_user(user);
            }
            if hook.user_info.is_some() || hook.data.is_some() {
                socket.hook = Some(Box::new(HookData {
                    user_info: hook.user_info,
                    data: hook.data,
                }));
            }
            hook_rooms = hook.rooms;
        }
        let mut missed = Vec::new();
        if let Some((_, record, frames)) = recovered {
            if socket.hook.is_none() && (record.user_info.is_some() || record.data.is_some()) {
                socket.hook = Some(Box::new(HookData {
                    user_info: record.user_info,
                    data: record.data,
                }));
            }
            hook_rooms.splice(0..0, record.rooms);
            missed = frames;
        }
        if let Some(info) = token_info {
            match socket.hook.as_mut() {
                Some(hook) if hook.user_info.is_none() => hook.user_info = Some(info),
                Some(_) => {}
                None => {
                    socket.hook = Some(Box::new(HookData {
                        user_info: Some(info),
                        data: None,
                    }))
                }
            }
        }
        let info = socket.hook.as_ref().and_then(|hook| hook.user_info.clone());
        let user = socket_user_json(&socket);
        let connect_reply = match &socket.recovery {
            Some(recovery) => {
                socketio::Packet::connect_ok_recoverable(namespace, &socket_id, &recovery.pid)
            }
            None => socketio::Packet::connect_ok(namespace, &socket_id),
        };
        session.sockets.insert(namespace.to_string(), socket);
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .sockets
            .insert(socket_id.clone(), key);
        engine.send(key, &frames_of(&connect_reply, Vec::new()));
        // What it missed comes first, in order, before anything new.
        for frames in &missed {
            engine.send(key, frames);
        }
        for room in hook_rooms {
            self.join(key, namespace, room);
        }
        self.recovery_socket_changed(key, namespace);
        if let (Some(presence), Some(member)) = (self.presence.as_mut(), member) {
            let change = presence.socket_joined(member, info, &socket_id, now);
            self.presence_webhook(engine, change, now);
        }
        self.apply_actions(engine, key, namespace, None, actions, now);
        engine.session_changed(key);
        self.schedule(key);
        if self.policy.webhooks.channel_occupied && self.total_sockets() == 1 {
            self.webhook(engine, "channel_occupied", Map::new(), now);
        }
        if self.policy.webhooks.socket_connected {
            let mut fields = Map::new();
            fields.insert("namespace".into(), namespace.into());
            fields.insert("socket".into(), json!({ "id": socket_id, "user": user }));
            self.webhook(engine, "socket_connected", fields, now);
        }
    }

    fn total_sockets(&self) -> usize {
        self.namespaces.values().map(|ns| ns.sockets.len()).sum()
    }

    fn socket(&self, key: SessionKey, namespace: &str) -> Option<&SocketState> {
        self.sessions
            .get(&key)
            .and_then(|session| session.sockets.get(namespace))
    }

    fn socket_mut(&mut self, key: SessionKey, namespace: &str) -> Option<&mut SocketState> {
        self.sessions
            .get_mut(&key)
            .and_then(|session| session.sockets.get_mut(namespace))
    }

    /// Removes the session's socket from `namespace` and from all its rooms: the client left it.
    fn disconnect(&mut self, engine: &mut Engine, key: SessionKey, namespace: &str, now: u64) {
        let Some(socket) = self
            .sessions
            .get_mut(&key)
            .and_then(|session| session.sockets.remove(namespace))
        else {
            return;
        };
        self.forget_socket(
            engine,
            key,
            namespace,
            socket,
            "client namespace disconnect",
            now,
        );
        self.schedule(key);
    }

    /// Takes a socket out of its namespace and rooms; its pending acks go unanswered. `reason`
    /// is socket.io's name for why it went.
    /// The server ends the session's socket in `namespace`: the client hears a DISCONNECT (and
    /// does not reconnect on its own, as after socket.io's `socket.disconnect()`).
    pub(super) fn server_disconnect(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        reason: &str,
        now: u64,
    ) {
        let frames = frames_of(&socketio::Packet::disconnect(namespace), Vec::new());
        engine.send(key, &frames);
        if let Some(socket) = self
            .sessions
            .get_mut(&key)
            .and_then(|session| session.sockets.remove(namespace))
        {
            self.forget_socket(engine, key, namespace, socket, reason, now);
            self.schedule(key);
        }
        engine.session_changed(key);
    }

    fn forget_socket(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        socket: SocketState,
        reason: &str,
        now: u64,
    ) {
        for (_, pending) in socket.pending_acks() {
            engine.push_output(Output::AckUnanswered {
                token: pending.token,
                socket: socket.id.clone(),
                reason: AckFailure::Disconnected,
            });
        }
        // Parked, the socket stays its member's for the leave grace, unless it stopped
        // answering (its ping timeout was its grace).
        let mut parked_as = None;
        if let (Some(recovery), Some(state)) = (self.recovery.as_mut(), &socket.recovery) {
            if keeps_state(reason) {
                let mut record = socket.record(namespace, state.since);
                let grace = self
                    .presence
                    .as_ref()
                    .is_some_and(|presence| presence.leave_grace_ms() > 0)
                    && reason != "ping timeout";
                if grace {
                    parked_as = Some(state.pid.clone());
                } else {
                    record.presence_left = true;
                }
                recovery.park(state.pid.clone(), record, now);
            } else {
                recovery.forget(&state.pid);
            }
        }
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.sockets.remove(&socket.id);
            for room in &socket.rooms {
                ns.leave(room, key);
            }
            if ns.sockets.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
        if let Some(presence) = self.presence.as_mut() {
            let member = MemberKey::of(socket.user(), &socket.id);
            let change = presence.socket_left(member, &socket.id, parked_as, now);
            self.presence_webhook(engine, change, now);
        }
        if self.policy.webhooks.socket_disconnected {
            let mut fields = Map::new();
            fields.insert("namespace".into(), namespace.into());
            fields.insert(
                "socket".into(),
                json!({ "id": socket.id, "user": socket_user_json(&socket) }),
            );
            fields.insert("reason".into(), reason.into());
            self.webhook(engine, "socket_disconnected", fields, now);
        }
        if self.policy.webhooks.channel_vacated && self.total_sockets() == 0 {
            self.webhook(engine, "channel_vacated", Map::new(), now);
        }
    }

    fn event(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        packet: socketio::Packet,
        attachments: Vec<Bytes>,
        now: u64,
    ) {
        let namespace = packet.namespace.as_str();
        // Events for a namespace the client has not joined are ignored, as socket.io does.
        // (Borrowed field by field: the policy is read while the socket is held.)
        let Some(socket) = self
            .sessions
            .get_mut(&key)
            .and_then(|session| session.sockets.get_mut(namespace))
        else {
            return;
        };
        let rate = self.policy.events_per_second;
        match socket.take_event_allowance(rate, now) {
            RateVerdict::Allowed => {}
            RateVerdict::Refused { first } => {
                // Over its rate: the event goes nowhere, and only this socket pays. An ack request
                // learns why; otherwise the first refusal of a run says so once.
                if packet.id.is_some() || first {
                    let name = packet.event_name().unwrap_or_default().to_string();
                    self.answer_error(engine, key, namespace, &name, packet.id, rate_limited(rate));
                }
                return;
            }
            RateVerdict::Flooding => {
                let name = packet.event_name().unwrap_or_default().to_string();
                self.answer_error(engine, key, namespace, &name, None, rate_limited(rate));
                self.server_disconnect(engine, key, namespace, "rate limit exceeded", now);
                return;
            }
        }
        let Some(args) = packet.data.as_ref() else {
            return;
        };
        let Some(name) = packet.event_name() else {
            engine.close(key, CloseReason::ProtocolError);
            return;
        };
        if name == REFRESH_EVENT {
            let args = args.clone();
            self.refresh_token(engine, key, namespace, &args, packet.id, now);
            return;
        }
        if name == MEMBERS_EVENT {
            let query = args.get(1).cloned();
            self.answer_members(engine, key, namespace, query.as_ref(), packet.id);
            return;
        }
        if self
            .policy
            .webhook_client_events
            .iter()
            .any(|event| event == name)
        {
            let mut fields = Map::new();
            fields.insert("namespace".into(), namespace.into());
            fields.insert(
                "socket".into(),
                json!({ "id": socket.id, "user": socket_user_json(socket) }),
            );
            fields.insert("event".into(), name.into());
            let rest = match args {
                Value::Array(items) => Value::Array(items.get(1..).unwrap_or_default().to_vec()),
                _ => Value::Array(Vec::new()),
            };
            fields.insert(
                "args".into(),
                backend::with_binary_inline(&rest, &attachments),
            );
            self.webhook(engine, "client_event", fields, now);
        }
        // An event with a handler goes to the backend, and only there.
        if let Some(handler) = self.policy.handlers.get(name).cloned() {
            self.call_handler(
                engine,
                key,
                namespace,
                name,
                &handler,
                args,
                &attachments,
                packet.id,
                now,
            );
            return;
        }
        // With an allow-list, only the events it names are relayed; the others are the server's.
        if self.policy.behaviour == BehaviourKind::Relay
            && !name.starts_with(RESERVED_PREFIX)
            && let Some(allowed) = &self.policy.relay_events
            && !allowed.iter().any(|event| event == name)
        {
            let error = json!({
                "code": "EVENT_NOT_ALLOWED",
                "message": format!("clients may not send {name:?} on this channel"),
            });
            self.answer_error(engine, key, namespace, name, packet.id, error);
            return;
        }
        let Some(socket) = self.socket(key, namespace) else {
            return;
        };
        let is_socket_id = |name: &str| self.is_socket_id(namespace, name);
        let view = SocketView {
            id: &socket.id,
            namespace,
            rooms: &socket.rooms,
            granted_rooms: socket.granted_rooms(),
            is_socket_id: &is_socket_id,
        };
        let event = IncomingEvent {
            name,
            args,
            attachments: &attachments,
            wants_ack: packet.id.is_some(),
        };
        let actions = self.behaviour.on_event(view, event);
        self.apply_actions(engine, key, namespace, packet.id, actions, now);
    }

    /// Carries out a behaviour's decisions for the socket of session `key` in `namespace`.
    fn apply_actions(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        mut ack_id: Option<u64>,
        actions: Vec<Action>,
        now: u64,
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
                        engine.send(key, &frames);
                    }
                }
                Action::EmitToSender { args, attachments } => {
                    let frames = self.sender_frames(key, namespace, args, attachments, now);
                    engine.send(key, &frames);
                }
                Action::Broadcast {
                    audience,
                    args,
                    attachments,
                } => {
                    let sender = self.socket(key, namespace).map(|socket| socket.id.clone());
                    let (frames, _) = self.broadcast_frames(
                        namespace,
                        args,
                        attachments,
                        &audience,
                        sender.as_deref(),
                        now,
                    );
                    self.broadcast(engine, namespace, &audience, Some(key), &frames);
                }
                Action::Join(room) => rooms_changed |= self.join(key, namespace, room),
                Action::Leave(room) => rooms_changed |= self.leave(key, namespace, &room),
            }
        }
        if rooms_changed {
            engine.session_changed(key);
        }
    }

    fn join(&mut self, key: SessionKey, namespace: &str, room: String) -> bool {
        let Some(socket) = self.socket_mut(key, namespace) else {
            return false;
        };
        if !socket.rooms.insert(room.clone()) {
            return false;
        }
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .join(room, key);
        self.recovery_socket_changed(key, namespace);
        true
    }

    fn leave(&mut self, key: SessionKey, namespace: &str, room: &str) -> bool {
        let Some(socket) = self.socket_mut(key, namespace) else {
            return false;
        };
        if !socket.rooms.remove(room) {
            return false;
        }
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.leave(room, key);
        }
        self.recovery_socket_changed(key, namespace);
        true
    }

    /// A durable host keeps each connected socket's recoverable state as it changes.
    fn recovery_socket_changed(&mut self, key: SessionKey, namespace: &str) {
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        let Some(socket) = self
            .sessions
            .get(&key)
            .and_then(|session| session.sockets.get(namespace))
        else {
            return;
        };
        if let Some(state) = &socket.recovery {
            recovery.socket_changed(&state.pid, &socket.record(namespace, state.since));
        }
    }

    /// Encodes an event for the socket of session `key` alone. On a channel with recovery it is
    /// kept too, addressed to the socket's id, as socket.io keeps `socket.emit` then: the client
    /// takes every event's last string argument for its offset.
    fn sender_frames(
        &mut self,
        key: SessionKey,
        namespace: &str,
        args: Value,
        attachments: Vec<Bytes>,
        now: u64,
    ) -> Frames {
        let socket_id = match (&self.recovery, self.socket(key, namespace)) {
            (Some(_), Some(socket)) => socket.id.clone(),
            _ => {
                let count = attachments.len();
                return frames_of(
                    &socketio::Packet::event(namespace, args, None, count),
                    attachments,
                );
            }
        };
        let audience = Audience {
            rooms: vec![socket_id],
            except: Vec::new(),
            except_sender: false,
        };
        self.broadcast_frames(namespace, args, attachments, &audience, None, now)
            .0
    }

    /// Encodes an event for a broadcast once. On a channel with recovery, the event gets the
    /// next offset as its last argument and is kept in the history, with its audience; returns
    /// that offset.
    fn broadcast_frames(
        &mut self,
        namespace: &str,
        mut args: Value,
        attachments: Vec<Bytes>,
        audience: &Audience,
        sender: Option<&str>,
        now: u64,
    ) -> (Frames, Option<String>) {
        let count = attachments.len();
        let Some(recovery) = self.recovery.as_mut() else {
            let frames = frames_of(
                &socketio::Packet::event(namespace, args, None, count),
                attachments,
            );
            return (frames, None);
        };
        let seq = recovery.stamp(&mut args);
        let frames = frames_of(
            &socketio::Packet::event(namespace, args, None, count),
            attachments,
        );
        let mut except = audience.except.clone();
        if audience.except_sender
            && let Some(sender) = sender
        {
            except.push(sender.to_string());
        }
        recovery.keep(seq, namespace, audience.rooms.clone(), except, &frames, now);
        (frames, Some(recovery.offset_of(seq)))
    }

    /// Sends `frames` to every socket of `namespace` in the audience; returns how many received it.
    fn broadcast(
        &self,
        engine: &mut Engine,
        namespace: &str,
        audience: &Audience,
        sender: Option<SessionKey>,
        frames: &Frames,
    ) -> usize {
        let Some(ns) = self.namespaces.get(namespace) else {
            return 0;
        };
        let except = self.except_keys(ns, audience, sender);
        engine.broadcast(ns.recipients(&audience.rooms, &except), frames)
    }

    /// The sessions an audience leaves out, by key.
    fn except_keys(
        &self,
        ns: &Namespace,
        audience: &Audience,
        sender: Option<SessionKey>,
    ) -> Vec<SessionKey> {
        let mut except: Vec<SessionKey> = audience
            .except
            .iter()
            .filter_map(|id| ns.sockets.get(id).copied())
            .collect();
        if audience.except_sender
            && let Some(sender) = sender
        {
            except.push(sender);
        }
        except
    }

    // ---------------------------------------------------------------------------------------------
    // Server-side emits

    /// See [`crate::channel::Channel::emit`].
    pub fn emit(
        &mut self,
        engine: &mut Engine,
        emit: ServerEmit,
        now: u64,
    ) -> Result<Emitted, EmitError> {
        self.check_emit(&emit.namespace, &emit.args, &emit.attachments)?;
        let audience = Audience {
            rooms: emit.rooms,
            except: emit.except,
            except_sender: false,
        };
        let count = emit.attachments.len();
        let Some(ack) = emit.ack else {
            let (frames, offset) = self.broadcast_frames(
                &emit.namespace,
                emit.args,
                emit.attachments,
                &audience,
                None,
                now,
            );
            let delivered = self.broadcast(engine, &emit.namespace, &audience, None, &frames);
            return Ok(Emitted {
                delivered,
                awaiting_ack: Vec::new(),
                offset,
            });
        };
        // One ack id for every recipient, as socket.io's broadcasts with acks do, so that the
        // event is still encoded once: the next id none of them has used.
        let Some(ns) = self.namespaces.get(&emit.namespace) else {
            return Ok(Emitted::default());
        };
        let except = self.except_keys(ns, &audience, None);
        let recipients: Vec<SessionKey> = ns.recipients(&audience.rooms, &except).collect();
        let namespace = emit.namespace.as_str();
        let socket_of = |sessions: &FastMap<SessionKey, Box<SioSession>>, key: &SessionKey| {
            sessions
                .get(key)
                .and_then(|session| session.sockets.get(namespace))
                .map(SocketState::next_ack_id)
        };
        let id = recipients
            .iter()
            .filter_map(|key| socket_of(&self.sessions, key))
            .max()
            .unwrap_or(0);
        let mut awaiting_ack = Vec::with_capacity(recipients.len());
        for key in &recipients {
            let Some(socket) = self
                .sessions
                .get_mut(key)
                .and_then(|session| session.sockets.get_mut(namespace))
            else {
                continue;
            };
            socket.await_ack(
                id,
                PendingAck {
                    token: ack.token,
                    deadline: now + ack.timeout_ms,
                },
            );
            awaiting_ack.push(socket.id.clone());
        }
        let frames = frames_of(
            &socketio::Packet::event(namespace, emit.args, Some(id), count),
            emit.attachments,
        );
        let delivered = engine.broadcast(recipients.iter().copied(), &frames);
        for key in recipients {
            engine.session_changed(key);
            self.schedule(key);
        }
        Ok(Emitted {
            delivered,
            awaiting_ack,
            offset: None,
        })
    }

    /// Whether `namespace` has a socket `socket_id`, for an emit to that one socket.
    pub fn check_socket(&self, namespace: &str, socket_id: &str) -> Result<(), EmitError> {
        match self.namespaces.get(namespace) {
            Some(ns) if ns.sockets.contains_key(socket_id) => Ok(()),
            _ => Err(EmitError::UnknownSocket(socket_id.to_string())),
        }
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
        if RESERVED_EVENTS.contains(&name.as_str()) || name == PRESENCE_EVENT {
            return Err(EmitError::ReservedEvent(name.clone()));
        }
        socketio::validate_placeholders(args, attachments.len())
            .map_err(|err| EmitError::Attachments(err.to_string()))
    }

    // ---------------------------------------------------------------------------------------------
    // Looking in

    pub fn socket_count(&self, namespace: &str) -> usize {
        self.namespaces
            .get(namespace)
            .map_or(0, |namespace| namespace.sockets.len())
    }

    /// Members of `room` in `namespace`, as socket ids, sorted.
    pub fn room_members(&self, namespace: &str, room: &str) -> Vec<String> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let Some(members) = ns.rooms.get(room) else {
            return Vec::new();
        };
        ns.sockets
            .iter()
            .filter(|(_, key)| members.contains(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn occupancy(&self, connections: usize) -> Occupancy {
        Occupancy {
            connections,
            members: self.presence.as_ref().map(|presence| presence.count()),
            namespaces: crate::sort::collect_map(self.namespaces.iter().map(
                |(name, namespace)| {
                    let rooms = crate::sort::collect_map(
                        namespace
                            .rooms
                            .iter()
                            .map(|(room, members)| (room.clone(), members.len())),
                    );
                    (
                        name.clone(),
                        NamespaceOccupancy {
                            sockets: namespace.sockets.len(),
                            rooms,
                        },
                    )
                },
            )),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Rebuilding

    /// This layer's part of a session's snapshot: whether it still awaits its CONNECT, its
    /// sockets, its client's headers and its calls in flight.
    pub fn snapshot(&self, key: SessionKey, snapshot: &mut SessionSnapshot) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let sockets = session
            .sockets
            .iter()
            .map(|(namespace, socket)| SocketSnapshot {
                namespace: namespace.clone(),
                id: socket.id.clone(),
                rooms: socket.rooms.iter().cloned().collect(),
                user: socket.user().map(str::to_string),
                granted_rooms: socket.granted_rooms().to_vec(),
                next_ack_id: socket.next_ack_id(),
                pending_acks: socket
                    .pending_acks()
                    .map(|(id, ack)| (id, ack.token, ack.deadline))
                    .collect(),
                user_info: socket.hook.as_ref().and_then(|hook| hook.user_info.clone()),
                data: socket.hook.as_ref().and_then(|hook| hook.data.clone()),
                expires_at: socket.expires_at(),
                pid: socket.recovery.as_ref().map(|state| state.pid.clone()),
                since: socket.recovery.as_ref().map(|state| state.since),
            })
            .collect();
        snapshot.awaiting_connect = session.connect_deadline.is_some();
        snapshot.sockets = sockets;
        snapshot.client = session.client.as_deref().cloned();
        snapshot.calls = self.call_snapshots(key);
    }

    /// Rebuilds session `key`'s sockets from its snapshot.
    pub fn restore(&mut self, key: SessionKey, snapshot: SessionSnapshot, now: u64) {
        let mut session = SioSession::default();
        if snapshot.awaiting_connect {
            // The original deadline, not a fresh one: a host that restores at every wake-up must
            // not keep a silent socket alive forever.
            session.connect_deadline = Some(
                snapshot
                    .connected_at
                    .saturating_add(self.policy.connect_timeout_ms)
                    .max(now),
            );
            self.awaiting_connect += 1;
        }
        session.client = snapshot.client.map(Box::new);
        let mut sockets = SocketMap::default();
        for socket in snapshot.sockets {
            if let Some(presence) = self.presence.as_mut() {
                let member = MemberKey::of(socket.user.as_deref(), &socket.id);
                presence.restore_socket(member, socket.user_info.clone());
            }
            let namespace = self.namespaces.entry(socket.namespace.clone()).or_default();
            namespace.sockets.insert(socket.id.clone(), key);
            for room in &socket.rooms {
                namespace.join(room.clone(), key);
            }
            let mut state = SocketState::new(socket.id);
            state.rooms = crate::sort::collect_map(socket.rooms);
            state.set_identity(socket.user, socket.granted_rooms, socket.expires_at);
            let pending = socket.pending_acks.into_iter();
            state.restore_acks(
                socket.next_ack_id,
                crate::sort::collect_map(
                    pending.map(|(id, token, deadline)| (id, PendingAck { token, deadline })),
                ),
            );
            state.hook = (socket.user_info.is_some() || socket.data.is_some()).then(|| {
                Box::new(HookData {
                    user_info: socket.user_info,
                    data: socket.data,
                })
            });
            state.recovery = socket.pid.map(|pid| {
                Box::new(SocketRecovery {
                    pid,
                    since: socket.since.unwrap_or(0),
                })
            });
            sockets.insert(socket.namespace, state);
        }
        session.sockets = sockets;
        self.sessions.insert(key, Box::new(session));
        self.restore_calls(key, snapshot.calls, now);
        self.schedule(key);
    }

    // ---------------------------------------------------------------------------------------------
    // Connection-state recovery

    /// Moves the recovery state of `from` here (a rebuild by a host that keeps it in memory).
    pub fn adopt_recovery(&mut self, from: &mut SocketLayer) {
        if self.recovery.is_some() && from.recovery.is_some() {
            self.recovery = from.recovery.take();
        }
        if let (Some(presence), Some(from)) = (self.presence.as_mut(), from.presence.as_mut()) {
            presence.adopt_in_grace(from);
        }
    }

    pub fn make_recovery_durable(&mut self) {
        if let Some(recovery) = self.recovery.as_mut() {
            recovery.make_durable();
        }
    }

    pub fn take_store_ops(&mut self) -> Option<Vec<StoreOp>> {
        let ops = self.recovery.as_mut()?.take_ops();
        (!ops.is_empty()).then_some(ops)
    }

    pub fn load_recovery(&mut self, state: StoredState, now: u64) -> Vec<String> {
        let Some(recovery) = self.recovery.as_mut() else {
            return Vec::new();
        };
        let namespaces = &self.namespaces;
        let problems = recovery.load(
            state,
            |namespace, sid| {
                namespaces
                    .get(namespace)
                    .is_some_and(|ns| ns.sockets.contains_key(sid))
            },
            now,
        );
        // Parked sockets whose leave was not announced yet are members until their grace ends.
        if let Some(presence) = self.presence.as_mut() {
            let grace = presence.leave_grace_ms();
            for (pid, record) in recovery.parked() {
                let live = namespaces
                    .get(&record.namespace)
                    .is_some_and(|ns| ns.sockets.contains_key(&record.sid));
                if record.presence_left || live {
                    continue;
                }
                let member = MemberKey::of(record.user.as_deref(), &record.sid);
                let deadline = record.disconnected_at.unwrap_or(now).saturating_add(grace);
                presence.restore_in_grace(
                    member,
                    record.user_info.clone(),
                    &record.sid,
                    pid.clone(),
                    deadline,
                );
            }
        }
        problems
    }

    pub fn recovery_stats(&self) -> Option<recovery::RecoveryStats> {
        self.recovery.as_ref().map(|recovery| recovery.stats())
    }

    pub fn history(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<HistoryEvent>, Option<String>), HistoryError> {
        let recovery = self.recovery.as_ref().ok_or(HistoryError::Off)?;
        Ok((
            recovery.history_after(after, limit)?,
            recovery.latest_offset(),
        ))
    }

    // ---------------------------------------------------------------------------------------------
    // Presence

    /// After each input: the presence changes due go out to every socket of the channel, one
    /// event per namespace, encoded once.
    pub fn flush_presence(&mut self, engine: &mut Engine, now: u64) {
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        for args in presence.take_due_events(now) {
            for (name, ns) in &self.namespaces {
                let frames = frames_of(
                    &socketio::Packet::event(name, args.clone(), None, 0),
                    Vec::new(),
                );
                engine.broadcast(ns.sockets.values().copied(), &frames);
            }
        }
    }

    /// Ends the leave grace of parked sockets whose grace ran out.
    fn presence_timeout(&mut self, engine: &mut Engine, now: u64) {
        let Some(presence) = self.presence.as_mut() else {
            return;
        };
        if presence.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        let (changes, announced) = presence.handle_timeout(now);
        if let Some(recovery) = self.recovery.as_mut() {
            for pid in &announced {
                recovery.mark_presence_left(pid);
            }
        }
        for change in changes {
            self.presence_webhook(engine, Some(change), now);
        }
    }

    fn presence_webhook(&mut self, engine: &mut Engine, change: Option<Change>, now: u64) {
        let Some(change) = change else {
            return;
        };
        let wanted = if change.joined {
            self.policy.webhooks.member_added
        } else {
            self.policy.webhooks.member_removed
        };
        if wanted {
            let kind = if change.joined {
                "member_added"
            } else {
                "member_removed"
            };
            let mut fields = Map::new();
            fields.insert("member".into(), change.member);
            self.webhook(engine, kind, fields, now);
        }
    }

    /// Answers `socket.emit("switchboard:members", { after, limit }, ack)`.
    fn answer_members(
        &self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        query: Option<&Value>,
        ack_id: Option<u64>,
    ) {
        let Some(id) = ack_id else {
            return;
        };
        let after = query
            .and_then(|query| query.get("after"))
            .and_then(Value::as_str);
        let limit = query
            .and_then(|query| query.get("limit"))
            .and_then(Value::as_u64)
            .map_or(usize::MAX, |limit| {
                usize::try_from(limit).unwrap_or(usize::MAX)
            });
        match self.presence(after, limit) {
            Ok(page) => {
                let answer = json!([{
                    "members": page.members,
                    "count": page.count,
                    "next": page.next,
                }]);
                let packet = socketio::Packet::ack(namespace, answer, id, 0);
                engine.send(key, &frames_of(&packet, Vec::new()));
            }
            Err(error) => {
                let code = match error {
                    PresenceError::Off => "PRESENCE_OFF",
                    PresenceError::InvalidCursor(_) => "INVALID_CURSOR",
                };
                let error = json!({ "code": code, "message": error.to_string() });
                self.answer_error(engine, key, namespace, MEMBERS_EVENT, Some(id), error);
            }
        }
    }

    /// A page of the member list (see [`crate::channel::Channel::presence`]).
    pub fn presence(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresencePage, PresenceError> {
        self.presence
            .as_ref()
            .ok_or(PresenceError::Off)?
            .page(after, limit)
    }

    /// Puts the session's next deadline on the timer queue.
    fn schedule(&mut self, key: SessionKey) {
        let deadline = self
            .sessions
            .get(&key)
            .and_then(|session| session.next_deadline());
        self.timers
            .set_or_cancel(SocketTimer::Session(key), deadline);
    }
}

/// A socket's user as calls and webhooks show it: `{ id, info }`, or null. Info without a user
/// id is marked `anonymous`, as presence shows it: on a presence channel it may be what the
/// client declared in its CONNECT `auth.info`, which nobody vouches for.
fn socket_user_json(socket: &SocketState) -> Value {
    let info = socket.hook.as_ref().and_then(|hook| hook.user_info.clone());
    match (socket.user(), info) {
        (None, None) => Value::Null,
        (None, Some(info)) => json!({ "id": null, "anonymous": true, "info": info }),
        (id, info) => json!({ "id": id, "info": info }),
    }
}

/// Encodes a packet once, followed by its binary attachments.
pub(crate) fn frames_of(packet: &socketio::Packet, attachments: Vec<Bytes>) -> Frames {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(packet.to_frame());
    frames.extend(attachments.into_iter().map(WireFrame::binary));
    Arc::from(frames)
}

/// The error a socket over its event rate gets.
fn rate_limited(rate: u64) -> Value {
    json!({
        "code": "RATE_LIMITED",
        "message": format!("rate limit exceeded: at most {rate} events per second"),
    })
}
