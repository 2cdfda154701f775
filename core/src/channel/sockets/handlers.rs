//! Calls to the app backend: client events answered by a handler, the connect hook, and the
//! lifecycle webhooks' batches.
//!
//! # A call's life
//!
//! 1. Something needs the backend: an event whose name has a handler (its payload already checked
//!    against the handler's JSON Schema), a CONNECT on a channel with `auth = "backend"`, a
//!    webhook batch that is due.
//! 2. [`SocketLayer::start_call`] signs the body and hands the host an
//!    [`Output::BackendCall`]; the call waits in `calls` under a random id, with a timer at its
//!    deadline.
//! 3. The host answers with [`SocketLayer::backend_answer`], or the timer runs out first
//!    ([`SocketLayer::call_timed_out`]); whichever comes first settles the call, exactly once. A
//!    late answer finds nothing and is dropped.
//!
//! A settled event call answers the client's ack (FoalTS's `{ status, data | error }` unless
//! the handler asks for raw arguments) and carries out what the backend asked: emits, rooms, a
//! disconnect. A failure (timeout, non-2xx, not JSON, unreachable, a malformed answer) answers
//! `INTERNAL_SERVER_ERROR`, does nothing else, and is reported as an [`Output::Warning`] for the
//! host's log. Nothing is ever relayed for an event with a handler.
//!
//! Calls of a session are in its snapshot, so a channel rebuilt after hibernation still settles
//! them when the answer arrives, or at their deadline.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::webhooks::{self, Next};
use super::{SocketLayer, SocketTimer, frames_of};
use crate::auth::Grant;
use crate::backend::{self, AnswerError, BackendAnswer};
use crate::behaviour::{Audience, MAX_ROOM_NAME_LEN, MAX_ROOMS_PER_SOCKET};
use crate::channel::engine::{Engine, SessionKey};
use crate::channel::snapshot::{CallSnapshot, CallSnapshotKind};
use crate::channel::{CloseReason, Output};
use crate::config::{AckShape, EventHandler};
use crate::socketio::{self, RESERVED_EVENTS};

/// Backend calls one socket may have in flight; more are refused with `TOO_MANY_CALLS`.
pub const MAX_CALLS_PER_SOCKET: u16 = 16;
/// Backend calls one channel may have in flight.
pub const MAX_CALLS_PER_CHANNEL: usize = 10_000;
/// Most validation errors reported to the client for one payload.
pub const MAX_VALIDATION_ERRORS: usize = 20;
/// Most emits one answer may ask for.
pub const MAX_ANSWER_EMITS: usize = 64;
/// Largest `user.info` or socket `data` a connect hook may keep on a socket, as JSON bytes
/// (they travel in every handler call and in the session's snapshot).
pub const MAX_HOOK_DATA_BYTES: usize = 2048;
/// Longest user id a connect hook may give.
pub const MAX_USER_ID_BYTES: usize = 256;

/// The event a client gets when something it sent without asking for an ack was refused or
/// failed: `["switchboard:error", { event, error: { code, message, … } }]`.
pub const ERROR_EVENT: &str = "switchboard:error";

/// What a client is told when its connect hook failed: nothing about why.
pub const HOOK_FAILED_MESSAGE: &str = "Internal server error";

/// A call waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub deadline: u64,
    pub kind: CallKind,
}

#[derive(Debug)]
pub(crate) enum CallKind {
    /// A client event's handler.
    Event {
        key: SessionKey,
        namespace: String,
        socket_id: String,
        event: String,
        /// The client's ack id, if it asked for one.
        ack_id: Option<u64>,
    },
    /// The connect hook for a socket that will get `socket_id` if admitted.
    Connect {
        key: SessionKey,
        namespace: String,
        socket_id: String,
        grant: Grant,
        /// The CONNECT payload, for the behaviour once admitted (not kept across a rebuild).
        auth: Option<Value>,
    },
    /// A batch of lifecycle webhooks.
    Webhooks,
}

/// A call to make: to which endpoint (`events`, `connect`, `webhooks`), with which body, for how
/// long, and what settles it.
pub(crate) struct CallRequest {
    pub endpoint: &'static str,
    /// The id the backend sees; a new one unless a retry keeps its own.
    pub call_id: Option<String>,
    pub body: Map<String, Value>,
    pub timeout_ms: u64,
    pub kind: CallKind,
}

/// What the connect hook gave an admitted socket.
#[derive(Debug, Default)]
pub(crate) struct HookAdmission {
    pub user: Option<String>,
    pub user_info: Option<Value>,
    pub data: Option<Value>,
    pub rooms: Vec<String>,
}

/// The client-facing error of a failed call.
fn internal_error(error: &AnswerError) -> Value {
    let message = match error {
        AnswerError::Timeout(_) => "The server did not answer in time.",
        _ => "An internal server error has occurred.",
    };
    json!({ "code": "INTERNAL_SERVER_ERROR", "message": message })
}

/// FoalTS's error response: `{ status: "error", error }`.
pub(crate) fn error_response(error: Value) -> Value {
    json!({ "status": "error", "error": error })
}

impl SocketLayer {
    // ---------------------------------------------------------------------------------------------
    // Starting calls

    /// Signs the request's body (which gets the call's unique `id`) and asks the host to POST it
    /// to the backend. Fails without a backend or a signing secret, or when the channel has too
    /// many calls in flight.
    pub(super) fn start_call(
        &mut self,
        engine: &mut Engine,
        request: CallRequest,
        now: u64,
    ) -> Result<u64, AnswerError> {
        let CallRequest {
            endpoint,
            call_id,
            mut body,
            timeout_ms,
            kind,
        } = request;
        let Some(backend) = self.policy.backend.clone() else {
            return Err(AnswerError::Unreachable("no backend is configured".into()));
        };
        let Some(secret) = backend.secret.as_ref() else {
            return Err(AnswerError::Unreachable(format!(
                "{} is not set, so calls cannot be signed",
                backend::WEBHOOK_SECRET_VAR
            )));
        };
        if self.calls.len() >= MAX_CALLS_PER_CHANNEL {
            return Err(AnswerError::Unreachable(format!(
                "{MAX_CALLS_PER_CHANNEL} calls are already waiting for the backend"
            )));
        }
        let id = loop {
            let id = engine.random_u64();
            if !self.calls.contains_key(&id) {
                break id;
            }
        };
        let call_id = call_id.unwrap_or_else(|| engine.new_id(|_| false));
        let mut ordered = Map::with_capacity(body.len() + 1);
        ordered.insert("id".into(), Value::String(call_id.clone()));
        ordered.append(&mut body);
        let call = backend::call(
            id,
            &call_id,
            backend.endpoint(endpoint),
            secret.expose(),
            &Value::Object(ordered),
            timeout_ms,
            now,
        );
        engine.push_output(Output::BackendCall(call));
        let deadline = now + timeout_ms;
        self.calls.insert(id, PendingCall { deadline, kind });
        self.timers.set(SocketTimer::Call(id), deadline);
        Ok(id)
    }

    /// The parts of a handler call that say who is calling: channel, parameters, namespace.
    fn call_body(&self, kind: &str, namespace: &str) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("type".into(), kind.into());
        body.insert("channel".into(), self.name.clone().into());
        body.insert(
            "params".into(),
            Value::Object(crate::sort::collect_map(
                self.params
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone()))),
            )),
        );
        body.insert("namespace".into(), namespace.into());
        body
    }

    /// A client event whose name has a handler: checked against its schema, then sent to the
    /// backend. Returns without a call when the payload is invalid or the call cannot be made,
    /// having answered the client.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_handler(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        event: &str,
        handler: &EventHandler,
        args: &Value,
        attachments: &[Bytes],
        ack_id: Option<u64>,
        now: u64,
    ) {
        let payload = args.get(1).unwrap_or(&Value::Null);
        if let Some(schema) = &handler.schema {
            let mut errors = schema.errors(payload);
            if !errors.is_empty() {
                errors.truncate(MAX_VALIDATION_ERRORS);
                let error = json!({ "code": "VALIDATION_PAYLOAD_ERROR", "payload": errors });
                self.answer_error(engine, key, namespace, event, ack_id, error);
                return;
            }
        }
        let Some(socket) = self.socket(key, namespace) else {
            return;
        };
        if socket.calls_in_flight >= MAX_CALLS_PER_SOCKET {
            let error = json!({
                "code": "TOO_MANY_CALLS",
                "message": format!("at most {MAX_CALLS_PER_SOCKET} events may wait for the server at once"),
            });
            self.answer_error(engine, key, namespace, event, ack_id, error);
            return;
        }
        let socket_id = socket.id.clone();
        let mut body = self.call_body("event", namespace);
        body.insert("socket".into(), self.socket_json(key, namespace));
        body.insert("event".into(), event.into());
        let rest = match args {
            Value::Array(items) => Value::Array(items.get(1..).unwrap_or_default().to_vec()),
            _ => Value::Array(Vec::new()),
        };
        body.insert(
            "args".into(),
            backend::with_binary_inline(&rest, attachments),
        );
        let kind = CallKind::Event {
            key,
            namespace: namespace.to_string(),
            socket_id,
            event: event.to_string(),
            ack_id,
        };
        let request = CallRequest {
            endpoint: "events",
            call_id: None,
            body,
            timeout_ms: handler.timeout_ms,
            kind,
        };
        match self.start_call(engine, request, now) {
            Ok(_) => {
                if let Some(socket) = self.socket_mut(key, namespace) {
                    socket.calls_in_flight += 1;
                }
                engine.session_changed(key);
            }
            Err(error) => {
                engine.push_output(Output::Warning {
                    message: format!(
                        "channel {:?}: handler {event:?} not called: {error}",
                        self.name
                    ),
                });
                self.answer_error(
                    engine,
                    key,
                    namespace,
                    event,
                    ack_id,
                    internal_error(&error),
                );
            }
        }
    }

    /// What a handler call says of its socket: id, user, rooms and the connect hook's data.
    fn socket_json(&self, key: SessionKey, namespace: &str) -> Value {
        let Some(socket) = self.socket(key, namespace) else {
            return Value::Null;
        };
        json!({
            "id": socket.id,
            "user": super::socket_user_json(socket),
            "rooms": socket.rooms,
            "data": socket.hook.as_ref().and_then(|hook| hook.data.clone()),
        })
    }

    /// Asks the connect hook whether a socket may join `namespace`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_connect_hook(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        socket_id: String,
        grant: Grant,
        auth: Option<&Value>,
        now: u64,
    ) {
        let mut body = self.call_body("connect", namespace);
        body.insert("socket".into(), json!({ "id": socket_id }));
        body.insert("auth".into(), auth.cloned().unwrap_or(Value::Null));
        body.insert(
            "user".into(),
            match &grant.subject {
                Some(subject) => json!({ "id": subject }),
                None => Value::Null,
            },
        );
        let client = self
            .sessions
            .get(&key)
            .and_then(|session| session.client.as_deref());
        body.insert(
            "headers".into(),
            client.map_or_else(|| json!({}), |client| client.headers_json()),
        );
        body.insert(
            "address".into(),
            client
                .and_then(|client| client.address.clone())
                .map_or(Value::Null, Value::String),
        );
        let kind = CallKind::Connect {
            key,
            namespace: namespace.to_string(),
            socket_id,
            grant,
            auth: auth.cloned(),
        };
        let timeout_ms = self
            .policy
            .backend
            .as_ref()
            .map_or(crate::config::DEFAULT_BACKEND_TIMEOUT_MS, |backend| {
                backend.timeout_ms
            });
        let request = CallRequest {
            endpoint: "connect",
            call_id: None,
            body,
            timeout_ms,
            kind,
        };
        match self.start_call(engine, request, now) {
            Ok(_) => {
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.pending_connects = session.pending_connects.saturating_add(1);
                }
                engine.session_changed(key);
                self.schedule(key);
            }
            Err(error) => {
                engine.push_output(Output::Warning {
                    message: format!("channel {:?}: connect hook not called: {error}", self.name),
                });
                let frames = frames_of(
                    &socketio::Packet::connect_error(namespace, HOOK_FAILED_MESSAGE),
                    Vec::new(),
                );
                engine.send(key, &frames);
            }
        }
    }

    /// Whether session `key` waits for the connect hook's answer about `namespace`.
    pub(super) fn connect_pending(&self, key: SessionKey, namespace: &str) -> bool {
        self.sessions
            .get(&key)
            .is_some_and(|session| session.pending_connects > 0)
            && self.calls.values().any(|call| {
                matches!(&call.kind, CallKind::Connect { key: k, namespace: ns, .. } if *k == key && ns == namespace)
            })
    }

    // ---------------------------------------------------------------------------------------------
    // Settling calls

    /// The host's answer to call `id` (see
    /// [`crate::channel::Channel::handle_backend_answer`]). An answer to a call already settled
    /// (timed out, or from a channel that no longer exists) is dropped.
    pub fn handle_backend_answer(
        &mut self,
        engine: &mut Engine,
        id: u64,
        answer: BackendAnswer,
        now: u64,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.timers.cancel(SocketTimer::Call(id));
        self.settle(engine, call.kind, answer, now);
    }

    /// Call `id` ran out of time.
    pub(super) fn call_timed_out(&mut self, engine: &mut Engine, id: u64, now: u64) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let timeout = match &call.kind {
            CallKind::Event { event, .. } => self
                .policy
                .handlers
                .get(event)
                .map_or(0, |handler| handler.timeout_ms),
            _ => self
                .policy
                .backend
                .as_ref()
                .map_or(0, |backend| backend.timeout_ms),
        };
        self.settle_failed(engine, call.kind, AnswerError::Timeout(timeout), now);
    }

    fn settle(&mut self, engine: &mut Engine, kind: CallKind, answer: BackendAnswer, now: u64) {
        if let CallKind::Webhooks = kind {
            self.webhooks_settled(engine, answer, now);
            return;
        }
        match backend::answer_object(answer) {
            Ok(object) => match kind {
                CallKind::Event {
                    key,
                    namespace,
                    socket_id,
                    event,
                    ack_id,
                } => self.event_answered(
                    engine, key, &namespace, &socket_id, &event, ack_id, object, now,
                ),
                CallKind::Connect {
                    key,
                    namespace,
                    socket_id,
                    grant,
                    auth,
                } => self
                    .connect_answered(engine, key, &namespace, socket_id, grant, auth, object, now),
                CallKind::Webhooks => {}
            },
            Err(error) => self.settle_failed(engine, kind, error, now),
        }
    }

    fn settle_failed(&mut self, engine: &mut Engine, kind: CallKind, error: AnswerError, now: u64) {
        match kind {
            CallKind::Event {
                key,
                namespace,
                socket_id,
                event,
                ack_id,
            } => {
                engine.push_output(Output::Warning {
                    message: format!("channel {:?}: handler {event:?} failed: {error}", self.name),
                });
                if self.call_done(key, &namespace, &socket_id) {
                    self.answer_error(
                        engine,
                        key,
                        &namespace,
                        &event,
                        ack_id,
                        internal_error(&error),
                    );
                }
                // The call leaves the session's snapshot, whether or not its sender is still
                // there.
                engine.session_changed(key);
            }
            CallKind::Connect { key, namespace, .. } => {
                engine.push_output(Output::Warning {
                    message: format!("channel {:?}: connect hook failed: {error}", self.name),
                });
                if self.connect_done(key) {
                    let frames = frames_of(
                        &socketio::Packet::connect_error(&namespace, HOOK_FAILED_MESSAGE),
                        Vec::new(),
                    );
                    engine.send(key, &frames);
                    engine.session_changed(key);
                    self.schedule(key);
                }
            }
            CallKind::Webhooks => self.webhooks_failed(engine, &error.to_string(), now),
        }
    }

    /// The sender's count of calls in flight goes down; false when the sender is gone.
    fn call_done(&mut self, key: SessionKey, namespace: &str, socket_id: &str) -> bool {
        match self.socket_mut(key, namespace) {
            Some(socket) if socket.id == socket_id => {
                socket.calls_in_flight = socket.calls_in_flight.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// The session's count of connect hooks in flight goes down; false when the session is gone.
    fn connect_done(&mut self, key: SessionKey) -> bool {
        match self.sessions.get_mut(&key) {
            Some(session) => {
                session.pending_connects = session.pending_connects.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event_answered(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        socket_id: &str,
        event: &str,
        ack_id: Option<u64>,
        answer: Map<String, Value>,
        now: u64,
    ) {
        let shape = self
            .policy
            .handlers
            .get(event)
            .map_or(AckShape::Foal, |handler| handler.ack);
        let sender_here = self.call_done(key, namespace, socket_id);
        let answer = match HandlerAnswer::parse(answer, shape) {
            Ok(answer) => answer,
            Err(problem) => {
                engine.push_output(Output::Warning {
                    message: format!(
                        "channel {:?}: handler {event:?}: the backend's answer is malformed: {problem}",
                        self.name
                    ),
                });
                if sender_here {
                    let error = AnswerError::NotJson;
                    self.answer_error(
                        engine,
                        key,
                        namespace,
                        event,
                        ack_id,
                        internal_error(&error),
                    );
                }
                // The call leaves the session's snapshot either way.
                engine.session_changed(key);
                return;
            }
        };
        // Rooms first, so that an emit to a room the sender just joined reaches it too.
        if sender_here {
            for room in answer.leave {
                self.leave(key, namespace, &room);
            }
            for room in answer.join {
                if self.socket_mut(key, namespace).is_some_and(|socket| {
                    socket.rooms.contains(&room) || socket.rooms.len() < MAX_ROOMS_PER_SOCKET
                }) {
                    self.join(key, namespace, room);
                }
            }
        }
        let sender = sender_here.then_some(key);
        for emit in answer.emits {
            match emit.target {
                Target::Sender => {
                    if let Some(sender) = sender {
                        let frames =
                            self.sender_frames(sender, namespace, emit.args, emit.attachments, now);
                        engine.send(sender, &frames);
                    }
                }
                Target::Audience(audience) => {
                    // A sender that left has no session to leave out; the sender's socket id
                    // still does.
                    let mut audience = audience;
                    if audience.except_sender && sender.is_none() {
                        audience.except.push(socket_id.to_string());
                    }
                    let (frames, _) = self.broadcast_frames(
                        namespace,
                        emit.args,
                        emit.attachments,
                        &audience,
                        Some(socket_id),
                        now,
                    );
                    self.broadcast(engine, namespace, &audience, Some(key), &frames);
                }
            }
        }
        if !sender_here {
            // The call leaves the session's snapshot.
            engine.session_changed(key);
            return;
        }
        if let Some(id) = ack_id {
            let count = answer.ack_attachments.len();
            let frames = frames_of(
                &socketio::Packet::ack(namespace, answer.ack, id, count),
                answer.ack_attachments,
            );
            engine.send(key, &frames);
        }
        if answer.disconnect {
            self.server_disconnect(engine, key, namespace, "server namespace disconnect", now);
        }
        // Rooms, and the session's calls in flight, are in its snapshot.
        engine.session_changed(key);
    }

    #[allow(clippy::too_many_arguments)]
    fn connect_answered(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        socket_id: String,
        grant: Grant,
        auth: Option<Value>,
        answer: Map<String, Value>,
        now: u64,
    ) {
        if !self.connect_done(key) {
            return;
        }
        let refuse = |engine: &mut Engine, message: &str, data: Option<Value>| {
            let frames = frames_of(
                &socketio::Packet::connect_error_with_data(namespace, message, data),
                Vec::new(),
            );
            engine.send(key, &frames);
        };
        match parse_hook_answer(answer) {
            Ok(HookDecision::Refuse { message, data }) => {
                refuse(engine, &message, data);
            }
            Ok(HookDecision::Admit(admission)) => {
                self.admit(
                    engine,
                    key,
                    namespace,
                    socket_id,
                    grant,
                    Some(admission),
                    auth.as_ref(),
                    now,
                );
            }
            Err(problem) => {
                engine.push_output(Output::Warning {
                    message: format!(
                        "channel {:?}: connect hook: the backend's answer is malformed: {problem}",
                        self.name
                    ),
                });
                refuse(engine, HOOK_FAILED_MESSAGE, None);
            }
        }
        engine.session_changed(key);
        self.schedule(key);
    }

    /// Answers a client's event with an error: its ack in FoalTS's shape if it asked for one,
    /// otherwise a [`ERROR_EVENT`] naming the event, so that a refusal is never silent.
    pub(super) fn answer_error(
        &self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        event: &str,
        ack_id: Option<u64>,
        error: Value,
    ) {
        let packet = match ack_id {
            Some(id) => socketio::Packet::ack(namespace, json!([error_response(error)]), id, 0),
            None => socketio::Packet::event(
                namespace,
                json!([ERROR_EVENT, { "event": event, "error": error }]),
                None,
                0,
            ),
        };
        engine.send(key, &frames_of(&packet, Vec::new()));
    }

    // ---------------------------------------------------------------------------------------------
    // Lifecycle webhooks

    /// Queues a lifecycle event (`fields` gain `type`, `at`, `channel` and `params`).
    pub(super) fn webhook(
        &mut self,
        engine: &mut Engine,
        kind: &str,
        mut fields: Map<String, Value>,
        now: u64,
    ) {
        let mut event = self.call_body(kind, "");
        event.remove("namespace");
        event.insert("at".into(), now.into());
        event.append(&mut fields);
        let event = Value::Object(event);
        let size = event.to_string().len();
        let (dropped, next) = self.webhooks.push(event, size, now);
        if dropped && self.webhooks.dropped_unreported == 1 {
            engine.push_output(Output::Warning {
                message: format!(
                    "channel {:?}: the webhook queue is full ({} events or {} bytes): events are dropped until the backend catches up",
                    self.name,
                    webhooks::MAX_QUEUED,
                    webhooks::MAX_QUEUED_BYTES
                ),
            });
        }
        if let Next::SendAt(at) = next {
            self.timers.set(SocketTimer::Webhooks, at);
        }
    }

    /// Sends the next webhook batch if one is due.
    pub(super) fn send_webhooks(&mut self, engine: &mut Engine, now: u64) {
        if self.webhooks.in_flight.is_some() {
            return;
        }
        let timeout_ms = self
            .policy
            .backend
            .as_ref()
            .map_or(crate::config::DEFAULT_BACKEND_TIMEOUT_MS, |backend| {
                backend.timeout_ms
            });
        let fresh_id = engine.new_id(|_| false);
        let Some(batch) = self.webhooks.due_batch(now, || fresh_id) else {
            if let Some(at) = self.webhooks.send_at {
                self.timers.set(SocketTimer::Webhooks, at);
            }
            return;
        };
        let call_id = batch.call_id.clone();
        let mut body = Map::new();
        body.insert("type".into(), "webhooks".into());
        body.insert("events".into(), Value::Array(batch.events.clone()));
        let request = CallRequest {
            endpoint: "webhooks",
            call_id: Some(call_id),
            body,
            timeout_ms,
            kind: CallKind::Webhooks,
        };
        match self.start_call(engine, request, now) {
            Ok(id) => self.webhooks.in_flight = Some(id),
            Err(error) => self.webhooks_failed(engine, &error.to_string(), now),
        }
    }

    fn webhooks_settled(&mut self, engine: &mut Engine, answer: BackendAnswer, now: u64) {
        match answer {
            BackendAnswer::Response { status, .. } if (200..300).contains(&status) => {
                let dropped = std::mem::take(&mut self.webhooks.dropped_unreported);
                if dropped > 0 {
                    engine.push_output(Output::Warning {
                        message: format!(
                            "channel {:?}: {dropped} webhook events were dropped",
                            self.name
                        ),
                    });
                }
                if let Next::SendAt(at) = self.webhooks.delivered(now) {
                    self.timers.set(SocketTimer::Webhooks, at);
                }
            }
            other => {
                let reason = match other {
                    BackendAnswer::Response { status, .. } => {
                        format!("the backend answered {status}")
                    }
                    BackendAnswer::Failed(reason) => {
                        format!("the backend could not be reached: {reason}")
                    }
                };
                self.webhooks_failed(engine, &reason, now);
            }
        }
    }

    fn webhooks_failed(&mut self, engine: &mut Engine, reason: &str, now: u64) {
        let attempts = self
            .webhooks
            .batch
            .as_ref()
            .map_or(0, |batch| batch.attempts);
        let events = self
            .webhooks
            .batch
            .as_ref()
            .map_or(0, |batch| batch.events.len());
        let (dropped, next) = self.webhooks.failed(now);
        let message = if dropped > 0 {
            format!(
                "channel {:?}: a webhook batch of {dropped} events failed {attempts} times and is dropped: {reason}",
                self.name
            )
        } else {
            format!(
                "channel {:?}: a webhook batch of {events} events failed (attempt {attempts} of {}), retrying: {reason}",
                self.name,
                webhooks::MAX_ATTEMPTS
            )
        };
        engine.push_output(Output::Warning { message });
        if let Next::SendAt(at) = next {
            self.timers.set(SocketTimer::Webhooks, at);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Rebuilding

    /// The calls in flight of session `key`, for its snapshot.
    pub(super) fn call_snapshots(&self, key: SessionKey) -> Vec<CallSnapshot> {
        let mut calls: Vec<CallSnapshot> = self
            .calls
            .iter()
            .filter_map(|(id, call)| {
                let (namespace, socket, kind) = match &call.kind {
                    CallKind::Event {
                        key: owner,
                        namespace,
                        socket_id,
                        event,
                        ack_id,
                    } if *owner == key => (
                        namespace,
                        socket_id,
                        CallSnapshotKind::Event {
                            event: event.clone(),
                            ack: *ack_id,
                        },
                    ),
                    CallKind::Connect {
                        key: owner,
                        namespace,
                        socket_id,
                        grant,
                        ..
                    } if *owner == key => (
                        namespace,
                        socket_id,
                        CallSnapshotKind::Connect {
                            user: grant.subject.clone(),
                            granted_rooms: grant.rooms.clone(),
                            expires_at: grant.expires_at_ms,
                        },
                    ),
                    _ => return None,
                };
                Some(CallSnapshot {
                    id: *id,
                    deadline: call.deadline,
                    namespace: namespace.clone(),
                    socket: socket.clone(),
                    kind,
                })
            })
            .collect();
        crate::sort::sort_by_key(&mut calls, |call| call.id);
        calls
    }

    /// Puts a rebuilt session's calls back in flight.
    pub(super) fn restore_calls(&mut self, key: SessionKey, calls: Vec<CallSnapshot>, now: u64) {
        for call in calls {
            let kind = match call.kind {
                CallSnapshotKind::Event { event, ack } => {
                    if let Some(socket) = self.socket_mut(key, &call.namespace) {
                        socket.calls_in_flight = socket.calls_in_flight.saturating_add(1);
                    }
                    CallKind::Event {
                        key,
                        namespace: call.namespace,
                        socket_id: call.socket,
                        event,
                        ack_id: ack,
                    }
                }
                CallSnapshotKind::Connect {
                    user,
                    granted_rooms,
                    expires_at,
                } => {
                    if let Some(session) = self.sessions.get_mut(&key) {
                        session.pending_connects = session.pending_connects.saturating_add(1);
                    }
                    CallKind::Connect {
                        key,
                        namespace: call.namespace,
                        socket_id: call.socket,
                        grant: Grant {
                            subject: user,
                            rooms: granted_rooms,
                            expires_at_ms: expires_at,
                            // Not in the call's snapshot: the hook's answer gives the info.
                            info: None,
                        },
                        auth: None,
                    }
                }
            };
            let deadline = call.deadline.max(now);
            self.calls.insert(call.id, PendingCall { deadline, kind });
            self.timers.set(SocketTimer::Call(call.id), deadline);
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Reading answers

/// Who an emit of an answer goes to.
#[derive(Debug)]
enum Target {
    Sender,
    Audience(Audience),
}

#[derive(Debug)]
struct AnswerEmit {
    args: Value,
    attachments: Vec<Bytes>,
    target: Target,
}

/// A handler's answer, checked whole before any of it is carried out.
#[derive(Debug)]
struct HandlerAnswer {
    ack: Value,
    ack_attachments: Vec<Bytes>,
    emits: Vec<AnswerEmit>,
    join: Vec<String>,
    leave: Vec<String>,
    disconnect: bool,
}

impl HandlerAnswer {
    fn parse(mut answer: Map<String, Value>, shape: AckShape) -> Result<HandlerAnswer, String> {
        let ack = match shape {
            AckShape::Foal => match answer.remove("error") {
                Some(error) if !error.is_null() => json!([error_response(error)]),
                _ => {
                    let mut ok = Map::with_capacity(2);
                    ok.insert("status".into(), "ok".into());
                    if let Some(data) = answer.remove("data") {
                        ok.insert("data".into(), data);
                    }
                    json!([ok])
                }
            },
            AckShape::Raw => match answer.remove("ack") {
                None | Some(Value::Null) => json!([]),
                Some(Value::Array(args)) => Value::Array(args),
                Some(_) => return Err("\"ack\" must be an array of the ack's arguments".into()),
            },
        };
        let (ack, ack_attachments) = backend::binary_out_of_line(&ack)
            .ok_or("a \"_binary\" value of the ack is not base64")?;
        let emits = match answer.remove("emit") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(emits)) if emits.len() <= MAX_ANSWER_EMITS => emits
                .iter()
                .enumerate()
                .map(|(index, emit)| {
                    parse_emit(emit).map_err(|problem| format!("emit[{index}]: {problem}"))
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(format!("at most {MAX_ANSWER_EMITS} emits per answer"));
            }
            Some(_) => return Err("\"emit\" must be an array".into()),
        };
        let join = room_list(answer.remove("join"), "join")?;
        let leave = room_list(answer.remove("leave"), "leave")?;
        let disconnect = match answer.remove("disconnect") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(disconnect)) => disconnect,
            Some(_) => return Err("\"disconnect\" must be true or false".into()),
        };
        Ok(HandlerAnswer {
            ack,
            ack_attachments,
            emits,
            join,
            leave,
            disconnect,
        })
    }
}

fn parse_emit(emit: &Value) -> Result<AnswerEmit, String> {
    let Value::Object(emit) = emit else {
        return Err("must be an object with \"event\"".into());
    };
    let name = match emit.get("event") {
        Some(Value::String(name))
            if !name.is_empty() && !RESERVED_EVENTS.contains(&name.as_str()) =>
        {
            name.clone()
        }
        _ => {
            return Err(
                "\"event\" must be a non-empty event name that Socket.IO does not reserve".into(),
            );
        }
    };
    let mut args = vec![Value::String(name)];
    match (emit.get("args"), emit.get("data")) {
        (Some(Value::Array(rest)), None) => args.extend(rest.iter().cloned()),
        (None, Some(data)) => args.push(data.clone()),
        (None, None) => {}
        (Some(_), None) => return Err("\"args\" must be an array".into()),
        (Some(_), Some(_)) => return Err("give \"args\" or \"data\", not both".into()),
    }
    let (args, attachments) = backend::binary_out_of_line(&Value::Array(args))
        .ok_or("a \"_binary\" value is not base64")?;
    let rooms = room_list(emit.get("rooms").cloned(), "rooms")?;
    let to = match emit.get("to") {
        None | Some(Value::Null) => None,
        Some(Value::String(to)) => Some(to.as_str()),
        Some(_) => return Err("\"to\" must be a string".into()),
    };
    let audience = |rooms, except_sender| {
        Target::Audience(Audience {
            rooms,
            except: Vec::new(),
            except_sender,
        })
    };
    let target = match (to, rooms.is_empty()) {
        (None | Some("channel"), true) => audience(Vec::new(), false),
        (None | Some("rooms"), false) => audience(rooms, false),
        (Some("others"), _) => audience(rooms, true),
        (Some("sender"), true) => Target::Sender,
        (Some("rooms"), true) => return Err("\"to\": \"rooms\" needs \"rooms\"".into()),
        (Some("sender" | "channel"), false) => {
            return Err("\"rooms\" goes with \"to\": \"rooms\" or \"others\"".into());
        }
        (Some(_), _) => {
            return Err("\"to\" must be \"sender\", \"channel\", \"others\" or \"rooms\"".into());
        }
    };
    Ok(AnswerEmit {
        args,
        attachments,
        target,
    })
}

/// A list of room names from an answer.
fn room_list(value: Option<Value>, name: &str) -> Result<Vec<String>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(room)) => vec![Value::String(room)],
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("\"{name}\" must be a list of room names")),
    };
    if items.len() > MAX_ROOMS_PER_SOCKET {
        return Err(format!(
            "\"{name}\" lists more than {MAX_ROOMS_PER_SOCKET} rooms"
        ));
    }
    let mut rooms = BTreeSet::new();
    for item in items {
        match item {
            Value::String(room) if !room.is_empty() && room.len() <= MAX_ROOM_NAME_LEN => {
                rooms.insert(room);
            }
            _ => {
                return Err(format!(
                    "\"{name}\": a room name is a non-empty string of at most {MAX_ROOM_NAME_LEN} bytes"
                ));
            }
        }
    }
    Ok(rooms.into_iter().collect())
}

/// What the connect hook decided.
#[derive(Debug)]
enum HookDecision {
    Admit(HookAdmission),
    Refuse {
        message: String,
        data: Option<Value>,
    },
}

fn parse_hook_answer(mut answer: Map<String, Value>) -> Result<HookDecision, String> {
    let bounded = |value: Option<Value>, name: &str| -> Result<Option<Value>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) if value.to_string().len() <= MAX_HOOK_DATA_BYTES => Ok(Some(value)),
            Some(_) => Err(format!(
                "\"{name}\" is larger than {MAX_HOOK_DATA_BYTES} bytes of JSON"
            )),
        }
    };
    match answer.remove("allow") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let message = match answer.remove("message") {
                Some(Value::String(message)) if message.len() <= MAX_HOOK_DATA_BYTES => message,
                _ => "Not authorized".to_string(),
            };
            return Ok(HookDecision::Refuse {
                message,
                data: bounded(answer.remove("data"), "data")?,
            });
        }
        _ => return Err("\"allow\" must be true or false".into()),
    }
    let (user, user_info) = match answer.remove("user") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(mut user)) => {
            let id = match user.remove("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) if id.len() <= MAX_USER_ID_BYTES => Some(id),
                Some(Value::Number(id)) => Some(id.to_string()),
                Some(_) => {
                    return Err(format!(
                        "\"user.id\" must be a string of at most {MAX_USER_ID_BYTES} bytes, or a number"
                    ));
                }
            };
            (id, bounded(user.remove("info"), "user.info")?)
        }
        Some(_) => return Err("\"user\" must be an object with \"id\" and \"info\"".into()),
    };
    Ok(HookDecision::Admit(HookAdmission {
        user,
        user_info,
        data: bounded(answer.remove("data"), "data")?,
        rooms: room_list(answer.remove("rooms"), "rooms")?,
    }))
}

/// The Socket.IO reason a session's sockets give for going away, as socket.io names them.
pub(crate) fn disconnect_reason(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::ClientClose | CloseReason::TransportClosed | CloseReason::PollAborted => {
            "transport close"
        }
        CloseReason::PingTimeout => "ping timeout",
        CloseReason::ServerShutdown => "server shutting down",
        CloseReason::ProtocolError => "parse error",
        CloseReason::ConnectTimeout
        | CloseReason::DuplicatePoll
        | CloseReason::PayloadTooLarge
        | CloseReason::TooSlow => "transport error",
    }
}
