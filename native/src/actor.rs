//! One task per live channel: it owns the core [`Channel`] and is the only code that touches it.
//!
//! Connection tasks and HTTP handlers send [`Command`]s; the actor feeds them to the channel with the
//! current time, sleeps until the channel's next timer, and carries out the channel's outputs: frames
//! go to each WebSocket's outbound queue, answers go back to waiting HTTP handlers. When a channel has
//! had no sessions for [`IDLE_LINGER`], its actor leaves the [`Registry`] and ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use switchboard_core::api::{
    self, AckWaits, ApiError, ChannelEmit, ChannelEmitResult, EmitProgress, EmitTokens,
};
use switchboard_core::backend::{BackendAnswer, ClientInfo};
use switchboard_core::channel::{
    Channel, ConnId, FastMap, Frames, Occupancy, Output, RandomSource,
};
use switchboard_core::config::ChannelPolicy;
use switchboard_core::frame::FrameKind;
use switchboard_core::http::{HttpResponse, Method};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WebSocketFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::backend_client;
use crate::limits::SessionSlot;
use crate::outbox::{Outbound, OutboxSender};
use crate::recovery_store::RecoveryStore;

/// How long an empty channel's task lingers before it ends.
pub const IDLE_LINGER: Duration = Duration::from_secs(5);
/// Commands a channel may have queued before senders wait (backpressure on busy channels).
const COMMAND_QUEUE: usize = 1024;
/// Most commands handled before the outputs go to the connections.
const COMMANDS_PER_DRAIN: usize = 32;

/// Encodes a packet's frames as WebSocket frames. Server frames are never masked, so the bytes are
/// the same for every recipient. Text frames hold UTF-8 by construction (core writes them from
/// strings).
fn encode_websocket_frames(frames: &Frames) -> Bytes {
    let capacity = frames.iter().map(|frame| frame.bytes().len() + 10).sum();
    let mut wire = Vec::with_capacity(capacity);
    for frame in frames.iter() {
        let opcode = match frame.kind() {
            FrameKind::Text => OpCode::Data(Data::Text),
            FrameKind::Binary => OpCode::Data(Data::Binary),
        };
        // Formatting into a vector cannot fail.
        let _ = WebSocketFrame::message(frame.bytes().clone(), opcode, true).format(&mut wire);
    }
    Bytes::from(wire)
}

/// What a channel task is asked to do.
#[derive(Debug)]
pub enum Command {
    Polling {
        request: ConnId,
        method: Method,
        sid: Option<String>,
        origin: Option<String>,
        /// Who sent it, on channels whose connect hook wants to know.
        client: Option<Box<ClientInfo>>,
        /// A handshake's count against its address: kept for the session it opens, if any.
        /// Boxed: the command stays small, and few polling requests are handshakes.
        slot: Option<Box<SessionSlot>>,
        /// `None` when the body was larger than the channel's `max_payload`.
        body: Option<Bytes>,
        reply: oneshot::Sender<HttpResponse>,
    },
    PollAborted {
        request: ConnId,
    },
    WsOpen {
        conn: ConnId,
        sid: Option<String>,
        client: Option<Box<ClientInfo>>,
        /// A new session's count against its address: kept for the session, if one opens.
        slot: Option<SessionSlot>,
        outbound: OutboxSender,
    },
    WsText {
        conn: ConnId,
        text: Utf8Bytes,
    },
    WsBinary {
        conn: ConnId,
        bytes: Bytes,
    },
    WsClosed {
        conn: ConnId,
    },
    /// How a call to the app backend ended.
    BackendAnswer {
        call: u64,
        answer: BackendAnswer,
    },
    /// Close every session (server shutting down); answers once the closes are handed to the
    /// connections.
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// A server-side emit (the HTTP API); answers with the number of sockets reached and, for an
    /// emit that asks for them, once every acknowledgement is in.
    Emit {
        /// Boxed: it is far larger than the per-message commands that fill a busy queue.
        emit: Box<ChannelEmit>,
        reply: EmitReply,
    },
    /// Connections, sockets and rooms, for `GET /channels/<channel>`.
    Occupancy {
        reply: oneshot::Sender<Occupancy>,
    },
    /// Kept events, for `GET /channels/<channel>/history`.
    History {
        query: api::HistoryQuery,
        reply: oneshot::Sender<HttpResponse>,
    },
    /// Members, for `GET /channels/<channel>/presence`.
    Presence {
        query: api::HistoryQuery,
        reply: oneshot::Sender<HttpResponse>,
    },
    /// Test-only: drop the channel's in-memory state and rebuild it from the WebSocket sessions'
    /// snapshots, exactly as a Durable Object does after hibernation.
    Rebuild {
        reply: oneshot::Sender<usize>,
    },
    /// Test-only: how many inputs of each kind the channel task handled.
    Stats {
        reply: oneshot::Sender<serde_json::Value>,
    },
}

/// Where an API emit's answer goes.
pub type EmitReply = oneshot::Sender<Result<ChannelEmitResult, ApiError>>;

/// Milliseconds since the Unix epoch, read once from the wall clock and advanced by a monotonic
/// clock: token expiry needs calendar time, timers need a clock that never jumps back.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    let (start, wall_ms) = EPOCH.get_or_init(|| {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        (Instant::now(), wall_ms)
    });
    wall_ms + start.elapsed().as_millis() as u64
}

/// A fresh id for a connection or request, unique in this process.
pub fn next_conn_id() -> ConnId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Operating-system randomness for session and socket ids.
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(err) = getrandom::fill(dest) {
            // Without randomness ids would be guessable; refusing to run is the only safe answer.
            panic!("the operating system's random source failed: {err}");
        }
    }
}

/// The live channels of this process, by name.
#[derive(Debug, Default)]
pub struct Registry {
    channels: Mutex<HashMap<String, LiveChannel>>,
    /// Where channels keep their recovery state across restarts (`--data-dir`), if anywhere.
    store: Option<Arc<RecoveryStore>>,
}

/// A registry entry; the generation tells a task apart from the one that replaced it.
#[derive(Debug, Clone)]
struct LiveChannel {
    generation: u64,
    sender: mpsc::Sender<Command>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Whether channels keep their recovery state across restarts (`--data-dir`).
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// A registry whose channels keep their recovery state in `store`.
    pub fn with_store(store: Option<Arc<RecoveryStore>>) -> Arc<Registry> {
        Arc::new(Registry {
            channels: Mutex::default(),
            store,
        })
    }

    /// Delivers `command` to the channel's task, starting one if needed.
    ///
    /// The fast path enqueues while holding the registry lock, and a retiring task checks its queue
    /// under the same lock, so a command can never land in a task that has decided to end. Only when
    /// the queue is full does the sender wait outside the lock (a full queue is never retired).
    ///
    /// The fast path runs when this is called, not when the future is first polled; the returned
    /// future is small (the rare wait is boxed), which keeps every connection task's future small.
    pub fn send<'a>(
        self: &'a Arc<Self>,
        key: &'a str,
        policy: &'a Arc<ChannelPolicy>,
        command: Command,
    ) -> impl Future<Output = ()> + Send + 'a {
        match self.try_send(key, policy, command) {
            Ok(()) => Either::Left(std::future::ready(())),
            Err(command) => Either::Right(Box::pin(self.send_waiting(key, policy, command))),
        }
    }

    /// Enqueues without waiting; gives the command back when the channel's queue is full.
    pub fn try_send(
        self: &Arc<Self>,
        key: &str,
        policy: &Arc<ChannelPolicy>,
        command: Command,
    ) -> Result<(), Command> {
        let mut command = command;
        let mut channels = self.lock();
        loop {
            let live = Self::live(&mut channels, self, key, policy);
            match live.sender.try_send(command) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(returned)) => return Err(returned),
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    channels.remove(key);
                    command = returned;
                }
            }
        }
    }

    /// The slow path of [`Registry::send`]: waits for room in the channel's queue.
    pub async fn send_waiting(
        self: &Arc<Self>,
        key: &str,
        policy: &Arc<ChannelPolicy>,
        command: Command,
    ) {
        let mut command = command;
        loop {
            let live = Self::live(&mut self.lock(), self, key, policy);
            match live.sender.send(command).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    self.forget(key, live.generation);
                    command = match self.try_send(key, policy, returned) {
                        Ok(()) => return,
                        Err(command) => command,
                    };
                }
            }
        }
    }

    /// Like [`Registry::send`] but usable from `Drop`: never waits.
    pub fn send_later(self: &Arc<Self>, key: &str, policy: &Arc<ChannelPolicy>, command: Command) {
        let registry = self.clone();
        let key = key.to_string();
        let policy = policy.clone();
        tokio::spawn(async move { registry.send(&key, &policy, command).await });
    }

    /// Asks every live channel to close its sessions.
    pub async fn shutdown_all(&self) {
        let senders: Vec<_> = self
            .lock()
            .values()
            .map(|live| live.sender.clone())
            .collect();
        let mut acknowledgements = Vec::with_capacity(senders.len());
        for sender in senders {
            let (done, acknowledged) = oneshot::channel();
            if sender.send(Command::Shutdown { done }).await.is_ok() {
                acknowledgements.push(acknowledged);
            }
        }
        for acknowledged in acknowledgements {
            let _ = acknowledged.await;
        }
    }

    /// Delivers `command` only if the channel has a live task; an idle channel has no sockets to
    /// reach, so emits and queries need not start one. Returns whether it was delivered.
    pub async fn send_if_live(&self, key: &str, command: Command) -> bool {
        let sender = self.lock().get(key).map(|live| live.sender.clone());
        match sender {
            Some(sender) => sender.send(command).await.is_ok(),
            None => false,
        }
    }

    /// Asks a live channel a question and waits for its answer; `None` when the channel has no
    /// live task (or it ended before answering).
    pub async fn ask_if_live<T>(
        &self,
        key: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        if !self.send_if_live(key, command(reply)).await {
            return None;
        }
        answer.await.ok()
    }

    pub fn live_channels(&self) -> usize {
        self.lock().len()
    }

    fn live(
        channels: &mut HashMap<String, LiveChannel>,
        registry: &Arc<Registry>,
        key: &str,
        policy: &Arc<ChannelPolicy>,
    ) -> LiveChannel {
        use std::sync::atomic::{AtomicU64, Ordering};
        static GENERATION: AtomicU64 = AtomicU64::new(1);

        if let Some(live) = channels.get(key) {
            return live.clone();
        }
        let (sender, receiver) = mpsc::channel(COMMAND_QUEUE);
        let live = LiveChannel {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            sender,
        };
        channels.insert(key.to_string(), live.clone());
        let mut channel = Channel::new(key, policy.clone(), Box::new(OsRandom));
        let store = registry.store.clone().filter(|_| policy.recovery.is_some());
        if store.is_some() {
            channel = channel.with_durable_store();
        }
        let actor = ChannelActor {
            store,
            key: key.to_string(),
            policy: policy.clone(),
            channel,
            generation: live.generation,
            receiver,
            registry: registry.clone(),
            websockets: FastMap::default(),
            handshakes: FastMap::default(),
            sessions: FastMap::default(),
            waiting: HashMap::new(),
            acks: AckWaits::default(),
            emit_tokens: EmitTokens::default(),
            stats: Stats::default(),
        };
        tokio::spawn(actor.run());
        tracing::debug!(channel = key, "channel task started");
        live
    }

    /// Removes `key` if it is still the task of this generation (a newer one may have replaced it).
    fn forget(&self, key: &str, generation: u64) {
        let mut channels = self.lock();
        if channels
            .get(key)
            .is_some_and(|current| current.generation == generation)
        {
            channels.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveChannel>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep serving.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct ChannelActor {
    /// The recovery store, on a channel with recovery when the server has a data directory.
    store: Option<Arc<RecoveryStore>>,
    key: String,
    policy: Arc<ChannelPolicy>,
    channel: Channel,
    generation: u64,
    receiver: mpsc::Receiver<Command>,
    registry: Arc<Registry>,
    websockets: FastMap<ConnId, OutboxSender>,
    /// The slots of handshakes handed to the channel since outputs were last drained, by request
    /// or connection. Core announces the session a handshake opens (`Output::SessionOpened`)
    /// during that very input, so once the outputs are drained the slots left here opened
    /// nothing, and go.
    handshakes: FastMap<ConnId, SessionSlot>,
    /// The slots of open sessions, by sid, until `Output::SessionClosed`; dropped with the task.
    sessions: FastMap<String, SessionSlot>,
    /// HTTP handlers waiting for their answer.
    waiting: HashMap<ConnId, oneshot::Sender<HttpResponse>>,
    /// API emits waiting for their acknowledgements.
    acks: AckWaits<EmitReply>,
    emit_tokens: EmitTokens,
    stats: Stats,
}

/// Inputs handled, by kind (for the test-only stats endpoint).
#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    websocket_messages: u64,
    timers: u64,
}

impl ChannelActor {
    async fn run(mut self) {
        // What an earlier run of this channel kept (read here, not under the registry's lock).
        self.load_stored();
        let mut idle_since: Option<Instant> = None;
        loop {
            let timer = self.channel.poll_timeout();
            let linger = idle_since.map(|since| since + IDLE_LINGER);
            tokio::select! {
                command = self.receiver.recv() => match command {
                    Some(command) => {
                        self.handle(command);
                        // Take what else is already queued before passing outputs on: under load a
                        // connection then gets several events per wake-up and per write.
                        for _ in 1..COMMANDS_PER_DRAIN {
                            match self.receiver.try_recv() {
                                Ok(command) => self.handle(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = sleep_until_ms(timer), if timer.is_some() => {
                    self.stats.timers += 1;
                    self.channel.handle_timeout(now_ms());
                }
                () = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now).into()), if linger.is_some() => {
                    if self.try_retire() {
                        return;
                    }
                }
            }
            self.drain_outputs();
            // Recovery state in memory alone lives as long as the channel's task.
            let idle = self.channel.is_idle()
                && self.waiting.is_empty()
                && self.acks.is_empty()
                && (self.store.is_some() || !self.channel.holds_recovery_state());
            idle_since = match (idle, idle_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
            let due_now = self
                .channel
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now_ms());
            if !self.receiver.is_empty() || due_now {
                // Still busy (more commands, or the next turn of a polling POST): let the
                // connections write what this slice gave them before the next one, so a flood
                // cannot outrun every client's queue at once.
                tokio::task::yield_now().await;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::Polling {
                request,
                method,
                sid,
                origin,
                client,
                slot,
                body,
                reply,
            } => {
                self.stats.requests += 1;
                self.waiting.insert(request, reply);
                if let Some(slot) = slot {
                    self.handshakes.insert(request, *slot);
                }
                match body {
                    Some(body) => self.channel.handle_polling(
                        request,
                        method,
                        sid.as_deref(),
                        origin.as_deref(),
                        client.map(|client| *client).unwrap_or_default(),
                        body,
                        now,
                    ),
                    None => self.channel.handle_polling_too_large(
                        request,
                        sid.as_deref(),
                        origin.as_deref(),
                        now,
                    ),
                }
            }
            Command::PollAborted { request } => {
                if self.waiting.remove(&request).is_some() {
                    self.channel.handle_http_aborted(request, now);
                }
            }
            Command::WsOpen {
                conn,
                sid,
                client,
                slot,
                outbound,
            } => {
                self.websockets.insert(conn, outbound);
                if let Some(slot) = slot {
                    self.handshakes.insert(conn, slot);
                }
                let client = client.map(|client| *client).unwrap_or_default();
                self.channel
                    .handle_ws_open(conn, sid.as_deref(), client, now);
            }
            Command::BackendAnswer { call, answer } => {
                self.channel.handle_backend_answer(call, answer, now);
            }
            Command::WsText { conn, text } => {
                self.stats.websocket_messages += 1;
                self.channel.handle_ws_text(conn, text.as_str(), now);
            }
            Command::WsBinary { conn, bytes } => {
                self.stats.websocket_messages += 1;
                self.channel.handle_ws_binary(conn, bytes, now);
            }
            Command::WsClosed { conn } => {
                self.websockets.remove(&conn);
                self.channel.handle_ws_closed(conn, now);
            }
            Command::Shutdown { done } => {
                self.channel.close_all(now);
                self.drain_outputs();
                let _ = done.send(());
            }
            Command::Emit { emit, reply } => {
                match api::start_emit(&mut self.channel, &mut self.emit_tokens, &emit, now) {
                    EmitProgress::Done(result) => {
                        let _ = reply.send(result);
                    }
                    EmitProgress::AwaitingAcks(collector) => self.acks.push(collector, reply),
                }
            }
            Command::Occupancy { reply } => {
                let _ = reply.send(self.channel.occupancy());
            }
            Command::History { query, reply } => {
                let history = self.channel.history(query.after.as_deref(), query.limit);
                let _ = reply.send(api::history_response(&self.key, history));
            }
            Command::Presence { query, reply } => {
                let page = self.channel.presence(query.after.as_deref(), query.limit);
                let _ = reply.send(api::presence_response(&self.key, page));
            }
            Command::Rebuild { reply } => {
                // What the old channel already said is carried out first, as a Durable Object
                // does before it hibernates (and the sessions it announced are counted).
                self.drain_outputs();
                let snapshots = self.channel.snapshots();
                let count = snapshots.len();
                // Polling sessions and probes cannot be rebuilt; their connections go, as on the
                // edge, and so do their sessions' slots. Restored sessions are not announced
                // again: theirs are kept.
                let keep: std::collections::HashSet<ConnId> =
                    snapshots.iter().map(|(conn, _)| *conn).collect();
                let restored: std::collections::HashSet<&str> = snapshots
                    .iter()
                    .map(|(_, snapshot)| snapshot.sid.as_str())
                    .collect();
                self.sessions
                    .retain(|sid, _| restored.contains(sid.as_str()));
                self.websockets.retain(|conn, _| keep.contains(conn));
                self.waiting.clear();
                let mut rebuilt = Channel::restore(
                    self.key.clone(),
                    self.policy.clone(),
                    Box::new(OsRandom),
                    snapshots,
                    now,
                );
                // The recovery state comes back from where it is kept, as on the edge.
                if self.store.is_some() {
                    self.channel = rebuilt.with_durable_store();
                    self.load_stored();
                } else {
                    rebuilt.adopt_recovery_state(&mut self.channel);
                    self.channel = rebuilt;
                }
                let _ = reply.send(count);
            }
            Command::Stats { reply } => {
                let _ = reply.send(serde_json::json!({
                    "requests": self.stats.requests,
                    "websocket_messages": self.stats.websocket_messages,
                    "timers": self.stats.timers,
                    "sessions": self.channel.session_count(),
                    "webhooks_dropped": self.channel.webhooks_dropped(),
                    "recovery": self.channel.recovery_stats(),
                }));
            }
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(output) = self.channel.poll_output() {
            match output {
                Output::Transmit { conn, frames } => {
                    let wire = encode_websocket_frames(&frames);
                    self.push_frames(conn, wire);
                }
                Output::Broadcast { conns, frames } => {
                    // Encoded once; every recipient's connection appends the same bytes.
                    let wire = encode_websocket_frames(&frames);
                    for conn in conns {
                        self.push_frames(conn, wire.clone());
                    }
                }
                Output::CloseWebSocket { conn, code, reason } => {
                    if let Some(outbound) = self.websockets.remove(&conn) {
                        let _ = outbound.push(Outbound::Close { code, reason });
                    }
                }
                Output::Respond { request, response } => {
                    if let Some(reply) = self.waiting.remove(&request) {
                        let _ = reply.send(response);
                    }
                }
                // Native sessions live in memory; nothing to persist.
                Output::SessionChanged { .. } => {}
                Output::SessionOpened { sid, conn } => {
                    if let Some(slot) = self.handshakes.remove(&conn) {
                        self.sessions.insert(sid, slot);
                    }
                }
                Output::SessionClosed { sid } => {
                    self.sessions.remove(&sid);
                }
                ref answer @ (Output::AckReceived { .. } | Output::AckUnanswered { .. }) => {
                    if let Some((result, reply)) = self.acks.record(answer) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Output::BackendCall(call) => {
                    // The call runs on its own; its answer comes back as a command, if the
                    // channel still lives (a channel with calls in flight is not idle, so it
                    // does, unless the server is stopping).
                    let registry = self.registry.clone();
                    let key = self.key.clone();
                    let id = call.id;
                    tokio::spawn(async move {
                        let answer = backend_client::call(call).await;
                        let command = Command::BackendAnswer { call: id, answer };
                        registry.send_if_live(&key, command).await;
                    });
                }
                Output::Warning { message } => {
                    tracing::warn!(channel = %self.key, "{message}");
                }
                Output::Store(ops) => {
                    if let Some(store) = &self.store
                        && let Err(error) = store.apply(&self.key, &ops)
                    {
                        tracing::error!(channel = %self.key, %error, "recovery store write failed");
                    }
                }
            }
        }
        // Every handshake handled so far has had its session announced: the rest opened none
        // (refused, or a 1013 close).
        self.handshakes.clear();
    }

    /// Hands the channel what the store kept for it, if it keeps anything.
    fn load_stored(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        match store.load(&self.key) {
            Ok(state) => {
                for problem in self.channel.load_stored(state, now_ms()) {
                    tracing::warn!(channel = %self.key, "{problem}");
                }
            }
            Err(error) => {
                // Writing on would overwrite what could not be read (its epoch, its offsets):
                // this run of the channel keeps its recovery state in memory only.
                tracing::error!(channel = %self.key, %error, "recovery store read failed; keeping this channel's recovery in memory");
                self.store = None;
            }
        }
    }

    /// Queues a packet's WebSocket frames for `conn`. A connection that cannot keep up is dropped
    /// rather than buffered for without bound: dropping its sender ends its task, which closes the
    /// socket.
    fn push_frames(&mut self, conn: ConnId, wire: Bytes) {
        let Some(outbound) = self.websockets.get(&conn) else {
            return;
        };
        if outbound.push(Outbound::Frames(wire)).is_err() {
            tracing::debug!(channel = %self.key, conn, "dropping a WebSocket that cannot keep up");
            self.websockets.remove(&conn);
            self.channel.handle_ws_closed(conn, now_ms());
        }
    }

    /// Ends this task if the channel is still empty. Commands that raced in are handed to a new task.
    fn try_retire(&mut self) -> bool {
        {
            let mut channels = self.registry.lock();
            if !self.receiver.is_empty() {
                return false;
            }
            if channels
                .get(&self.key)
                .is_some_and(|current| current.generation == self.generation)
            {
                channels.remove(&self.key);
            }
            self.receiver.close();
        }
        while let Ok(command) = self.receiver.try_recv() {
            self.registry.send_later(&self.key, &self.policy, command);
        }
        tracing::debug!(channel = %self.key, "channel task ended (idle)");
        true
    }
}

async fn sleep_until_ms(deadline: Option<u64>) {
    let now = now_ms();
    let wait = deadline.unwrap_or(now).saturating_sub(now);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}
