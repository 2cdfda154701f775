//! The Durable Object of one channel: a thin host around a core [`Channel`].
//!
//! Every entry point follows the same loop: make sure the channel is live (rebuilding it from the
//! WebSockets' attachments after hibernation, see [`crate::restore`]), feed it the event with the
//! current time, carry out its outputs, and point the alarm at the channel's next timer. A request
//! the object holds (a long-polling GET, an emit waiting for acknowledgements) runs the channel's
//! timers itself while it waits.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Deref;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use switchboard_core::api::{self, AckWaits, ChannelEmitResult, EmitProgress, EmitTokens};
use switchboard_core::backend::{BackendCall, ClientInfo};
use switchboard_core::channel::{Channel, ConnId, Frames, Output, RandomSource, WsAdmission};
use switchboard_core::config::ChannelPolicy;
use switchboard_core::http::{
    self as core_http, EngineRequestHead, HttpResponse, Method, TransportKind,
};
use wasm_bindgen::prelude::*;
use worker::wasm_bindgen_futures;
use worker::worker_sys::ext::WebSocketExt;
use worker::{
    DurableObject, Env, Headers, Request, Response, State, WebSocket, WebSocketIncomingMessage,
    WebSocketPair, durable_object,
};

use crate::backend;
use crate::env_config::config;
use crate::internal::{self, Call};
use crate::restore::{self, Attachment, KeptSocket};

#[wasm_bindgen]
extern "C" {
    /// The `DurableObjectState` methods the `worker` crate does not bind.
    #[wasm_bindgen(extends = js_sys::Object)]
    type StateExtras;

    /// `getWebSocketAutoResponseTimestamp(ws)`: when the runtime last answered this socket's pong
    /// for us, or null.
    #[wasm_bindgen(method, catch, js_name = getWebSocketAutoResponseTimestamp)]
    fn get_websocket_auto_response_timestamp(
        this: &StateExtras,
        ws: &worker::web_sys::WebSocket,
    ) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    /// `DurableObjectStorage.setAlarm(time, options)`, which the `worker` crate binds only through
    /// a serde bridge the edge otherwise does without.
    #[wasm_bindgen(extends = js_sys::Object)]
    type StorageExtras;

    #[wasm_bindgen(method, js_name = setAlarm)]
    fn set_alarm(this: &StorageExtras, scheduled_time: f64, options: &JsValue) -> js_sys::Promise;
}

/// The options of a storage write that holds nothing up: outgoing messages need not wait for its
/// confirmation (`allowUnconfirmed`), and other events, timers included, need not wait for it to
/// finish (`allowConcurrency`). Local storage writes have been seen to take half a second here.
fn unconfirmed_write() -> JsValue {
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"allowUnconfirmed".into(), &JsValue::TRUE);
    let _ = js_sys::Reflect::set(&options, &"allowConcurrency".into(), &JsValue::TRUE);
    options.into()
}

#[wasm_bindgen]
extern "C" {
    /// `WebSocket.send(data)` for a value already converted to a JS string or array.
    #[wasm_bindgen(extends = js_sys::Object)]
    type SocketExtras;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_value(this: &SocketExtras, data: &JsValue) -> Result<(), JsValue>;
}

/// A packet's frames as JS values: strings for text frames, byte arrays for binary ones.
fn to_js_values(frames: &Frames) -> Vec<JsValue> {
    frames
        .iter()
        .map(|frame| match frame.as_text() {
            Some(text) => JsValue::from_str(text),
            None => js_sys::Uint8Array::from(frame.bytes().as_ref()).into(),
        })
        .collect()
}

type EmitReply = oneshot::Sender<ChannelEmitResult>;

struct Live {
    key: String,
    channel: Channel,
    sockets: HashMap<ConnId, WebSocket>,
    /// Polling requests waiting for their answer.
    waiting: HashMap<ConnId, oneshot::Sender<HttpResponse>>,
    /// API emits waiting for their acknowledgements.
    acks: AckWaits<EmitReply>,
    emit_tokens: EmitTokens,
    next_conn: ConnId,
    /// Backend calls the channel asked for that nobody has started yet.
    calls_to_make: Vec<BackendCall>,
    /// The channel's recovery store was read: its writes may be carried out.
    store_writable: bool,
}

impl Live {
    /// Requests held open by this object; while there are any, they run the channel's timers.
    fn holds_requests(&self) -> bool {
        !self.waiting.is_empty() || !self.acks.is_empty()
    }
}

/// `crypto.getRandomValues`, through getrandom.
struct WebCrypto;

impl RandomSource for WebCrypto {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if getrandom::fill(dest).is_err() {
            // Never hand out guessable ids; the request fails instead.
            wasm_bindgen::throw_str("crypto.getRandomValues failed");
        }
    }
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

#[durable_object]
pub struct ChannelObject {
    shared: Rc<Shared>,
}

impl Deref for ChannelObject {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// The object's state, shared with the task that makes backend calls, which outlives the
/// handler that started it.
pub struct Shared {
    /// This very value, for the task to hold.
    me: Weak<Shared>,
    state: State,
    env: Env,
    live: RefCell<Option<Live>>,
    /// The alarm last requested, so unchanged deadlines cost no storage call. Shared with the
    /// write in flight, which forgets it if the write fails.
    alarm_at: Rc<Cell<Option<u64>>>,
    /// Set when the object should be reset once the current handler returns (see
    /// [`ChannelObject::take_reset_request`]).
    reset_request: Cell<Option<&'static str>>,
    /// Wake-ups since this instance was constructed, by entry point (the debug stats endpoint).
    wakeups: RefCell<Wakeups>,
    /// The backend calls' task is running (see [`Shared::drive_backend_calls`]).
    driving: Cell<bool>,
    /// Wakes that task when there are new calls to start.
    kick: RefCell<Option<oneshot::Sender<()>>>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Wakeups {
    requests: u64,
    websocket_messages: u64,
    websocket_closes: u64,
    alarms: u64,
}

impl DurableObject for ChannelObject {
    fn new(state: State, env: Env) -> Self {
        console_error_panic_hook::set_once();
        let shared = Rc::new_cyclic(|me| Shared {
            me: me.clone(),
            state,
            env,
            live: RefCell::new(None),
            alarm_at: Rc::new(Cell::new(None)),
            reset_request: Cell::new(None),
            wakeups: RefCell::new(Wakeups::default()),
            driving: Cell::new(false),
            kick: RefCell::new(None),
        });
        Self { shared }
    }

    async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        let path = request.path();
        if let Some(channel) = path.strip_prefix(internal::PREFIX) {
            let body = request.bytes().await.unwrap_or_default();
            let response = match serde_json::from_slice::<Call>(&body) {
                Ok(call) => self.internal(channel, call).await,
                Err(err) => HttpResponse::text(400, format!("bad internal call: {err}")),
            };
            return to_worker_response(response);
        }
        self.wakeups.borrow_mut().requests += 1;
        let config = config(&self.env)?;
        let raw_url = request.inner().url();
        let origin = request.headers().get("origin")?;
        let method = Method::parse(request.method().as_ref());
        // The Worker already let this request through the same front door; asking again is how the
        // object learns the channel, its policy and the query.
        let head = EngineRequestHead {
            path: &path,
            method,
            origin: origin.as_deref(),
            query: query_of(&raw_url),
            websocket_upgrade: request
                .headers()
                .get("upgrade")?
                .is_some_and(|value| value.eq_ignore_ascii_case("websocket")),
        };
        let admission = match core_http::admit_engine_request(&config, &head) {
            Ok(admission) => admission,
            Err(response) => return to_worker_response(response),
        };
        let (key, policy, query) = (admission.key, admission.policy, admission.query);
        // Only a connect hook is shown who the client is; other channels keep nothing of it.
        let client = if policy.auth.asks_backend() {
            client_info(request.headers())
        } else {
            ClientInfo::default()
        };
        self.ensure_live(Some((&key, &policy)));
        let now = now_ms();
        match query.transport {
            TransportKind::WebSocket => {
                self.open_websocket(&key, query.sid.as_deref(), client, now)
            }
            TransportKind::Polling => {
                // A body announced as larger than the limit is never read into memory.
                let announced: u64 = request
                    .headers()
                    .get("content-length")?
                    .and_then(|length| length.parse().ok())
                    .unwrap_or(0);
                let body = if method != Method::Post {
                    Some(Bytes::new())
                } else if announced > policy.max_payload {
                    // Discard it chunk by chunk: nothing is buffered, and the client's connection
                    // stays usable for its next request.
                    if let Ok(mut stream) = request.stream() {
                        use futures_util::StreamExt;
                        while let Some(chunk) = stream.next().await {
                            if chunk.is_err() {
                                break;
                            }
                        }
                    }
                    None
                } else {
                    Some(Bytes::from(request.bytes().await?))
                };
                let (reply, answer) = oneshot::channel();
                {
                    let mut guard = self.live.borrow_mut();
                    let Some(live) = guard.as_mut() else {
                        return to_worker_response(HttpResponse::text(503, "channel unavailable"));
                    };
                    let id = live.next_conn;
                    live.next_conn += 1;
                    live.waiting.insert(id, reply);
                    match body {
                        Some(body) => live.channel.handle_polling(
                            id,
                            method,
                            query.sid.as_deref(),
                            origin.as_deref(),
                            client,
                            body,
                            now,
                        ),
                        None => live.channel.handle_polling_too_large(
                            id,
                            query.sid.as_deref(),
                            origin.as_deref(),
                            now,
                        ),
                    }
                }
                self.carry_out();
                let answered = self.wait_running_timers(answer).await;
                // This request no longer runs the timers: the alarm may have to.
                self.carry_out();
                match answered {
                    Ok(response) => to_worker_response(response),
                    Err(_) => to_worker_response(HttpResponse::text(503, "channel restarted")),
                }
            }
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        self.wakeups.borrow_mut().websocket_messages += 1;
        self.ensure_live(None);
        let Some(conn) = self.conn_of(&ws) else {
            return Ok(());
        };
        {
            let mut guard = self.live.borrow_mut();
            let Some(live) = guard.as_mut() else {
                return Ok(());
            };
            let now = now_ms();
            match message {
                WebSocketIncomingMessage::String(text) => {
                    live.channel.handle_ws_text(conn, &text, now);
                }
                WebSocketIncomingMessage::Binary(bytes) => {
                    live.channel.handle_ws_binary(conn, Bytes::from(bytes), now);
                }
            }
        }
        self.carry_out();
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.socket_gone(ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.socket_gone(ws);
        Ok(())
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.wakeups.borrow_mut().alarms += 1;
        self.alarm_at.set(None);
        self.ensure_live(None);
        self.run_due_timers();
        self.carry_out();
        Response::empty()
    }
}

#[wasm_bindgen]
impl ChannelObject {
    /// Asked by `edge/entry.mjs` after every handler: whether the object wants to be reset, and
    /// why. The reset itself (`ctx.abort()`) ends JavaScript execution on the spot, so it happens
    /// there, once the handler has returned, and never inside wasm, where it would cut the async
    /// executor short.
    #[wasm_bindgen(js_name = takeResetRequest)]
    pub fn take_reset_request(&self) -> Option<String> {
        self.reset_request.take().map(str::to_string)
    }
}

impl Shared {
    /// The Worker's calls: server emits, occupancy, and the test-only rebuild and stats.
    async fn internal(&self, channel: &str, call: Call) -> HttpResponse {
        let key = channel.to_string();
        let policy = match self.policy(&key) {
            Ok(Some(policy)) => policy,
            _ => return core_http::unknown_channel_response(&key),
        };
        match call {
            Call::Emit { emit } => {
                self.ensure_live(Some((&key, &policy)));
                let waiting = {
                    let mut guard = self.live.borrow_mut();
                    let Some(live) = guard.as_mut() else {
                        return HttpResponse::text(503, "channel unavailable");
                    };
                    let Live {
                        channel,
                        emit_tokens,
                        acks,
                        ..
                    } = live;
                    match api::start_emit(channel, emit_tokens, &emit, now_ms()) {
                        EmitProgress::Done(Err(error)) => return error.response(),
                        EmitProgress::Done(Ok(result)) => Err(result),
                        EmitProgress::AwaitingAcks(collector) => {
                            let (reply, answer) = oneshot::channel();
                            acks.push(collector, reply);
                            Ok(answer)
                        }
                    }
                };
                self.carry_out();
                let result = match waiting {
                    Err(done) => done,
                    Ok(answer) => {
                        let result = self.wait_running_timers(answer).await;
                        self.carry_out();
                        result.unwrap_or_default()
                    }
                };
                HttpResponse::json(200, &serde_json::to_value(result).unwrap_or_default())
            }
            call => self.internal_now(&key, &policy, call),
        }
    }

    /// The calls answered at once: no await, so they stay out of the state machine of
    /// [`Shared::internal`].
    #[inline(never)]
    fn internal_now(&self, key: &str, policy: &Arc<ChannelPolicy>, call: Call) -> HttpResponse {
        let json = |value: serde_json::Value| HttpResponse::json(200, &value);
        match call {
            // Answered by the caller, which waits for the acknowledgements.
            Call::Emit { .. } => HttpResponse::text(500, "emit is not answered at once"),
            Call::History { query } => {
                self.ensure_live(Some((key, policy)));
                let history = self
                    .live
                    .borrow()
                    .as_ref()
                    .map(|live| live.channel.history(query.after.as_deref(), query.limit));
                let response = match history {
                    Some(history) => api::history_response(key, history),
                    None => HttpResponse::text(503, "channel unavailable"),
                };
                self.carry_out();
                response
            }
            Call::Presence { query } => {
                self.ensure_live(Some((key, policy)));
                let page = self
                    .live
                    .borrow()
                    .as_ref()
                    .map(|live| live.channel.presence(query.after.as_deref(), query.limit));
                let response = match page {
                    Some(page) => api::presence_response(key, page),
                    None => HttpResponse::text(503, "channel unavailable"),
                };
                self.carry_out();
                response
            }
            Call::Occupancy => {
                self.ensure_live(Some((key, policy)));
                let occupancy = self
                    .live
                    .borrow()
                    .as_ref()
                    .map(|live| live.channel.occupancy())
                    .unwrap_or_default();
                json(serde_json::to_value(occupancy).unwrap_or_default())
            }
            Call::Rebuild => {
                // Forget everything in memory, as hibernation does, and rebuild from the sockets'
                // attachments right away.
                *self.live.borrow_mut() = None;
                self.ensure_live(Some((key, policy)));
                let sessions = self
                    .live
                    .borrow()
                    .as_ref()
                    .map_or(0, |live| live.channel.session_count());
                self.carry_out();
                json(serde_json::json!({ "rebuilt_sessions": sessions }))
            }
            Call::Stats => {
                let mut stats = serde_json::to_value(&*self.wakeups.borrow()).unwrap_or_default();
                stats["sessions"] = self
                    .live
                    .borrow()
                    .as_ref()
                    .map_or(0, |live| live.channel.session_count())
                    .into();
                stats["recovery"] = self
                    .live
                    .borrow()
                    .as_ref()
                    .and_then(|live| live.channel.recovery_stats())
                    .and_then(|recovery| serde_json::to_value(recovery).ok())
                    .unwrap_or_default();
                json(stats)
            }
        }
    }

    fn policy(&self, key: &str) -> worker::Result<Option<Arc<ChannelPolicy>>> {
        let config = config(&self.env)?;
        Ok(if key == core_http::ENGINE_IO_KEY {
            config.engine_echo().cloned()
        } else {
            config.policy_for(key).cloned()
        })
    }

    /// Makes sure the channel is in memory. After hibernation (or eviction) the object starts empty;
    /// the channel is rebuilt from the attachments of the WebSockets the runtime kept for us.
    fn ensure_live(&self, request_key: Option<(&str, &Arc<ChannelPolicy>)>) {
        if self.live.borrow().is_some() {
            return;
        }
        let sockets = self.state.get_websockets();
        let kept = sockets
            .iter()
            .map(|ws| KeptSocket {
                attachment: load_attachment(ws),
                open: AsRef::<worker::web_sys::WebSocket>::as_ref(ws).ready_state()
                    == worker::web_sys::WebSocket::OPEN,
            })
            .collect();
        let plan = restore::plan(kept);
        for index in &plan.orphans {
            let _ = sockets[*index].close(Some(1001), Some("session lost"));
        }
        let (key, policy) = match request_key {
            Some((key, policy)) => (key.to_string(), policy.clone()),
            None => {
                let Some(key) = plan.channel else { return };
                match self.policy(&key) {
                    Ok(Some(policy)) => (key, policy),
                    // The channel's pattern was removed from the configuration.
                    _ => {
                        for (index, _, _) in &plan.restored {
                            let _ = sockets[*index]
                                .close(Some(1008), Some("channel no longer configured"));
                        }
                        return;
                    }
                }
            }
        };
        if policy.pong_auto_response {
            // Client pongs ("3") are answered with a noop ("6") by the runtime without waking us;
            // the alarm reads when each socket last did so. The setting outlives hibernation; it
            // is renewed here because only now is the channel, and so its policy, known.
            if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("3", "6") {
                self.state.set_websocket_auto_response(&pair);
            }
        }
        let keeps_recovery = policy.recovery.is_some();
        let mut channel = Channel::new(key.clone(), policy, Box::new(WebCrypto))
            .with_batched_heartbeats()
            .with_durable_store();
        let mut live_sockets = HashMap::new();
        let mut snapshots = Vec::new();
        for (index, conn, snapshot) in plan.restored {
            live_sockets.insert(conn, sockets[index].clone());
            snapshots.push((conn, snapshot));
        }
        channel.restore_sessions(snapshots, now_ms());
        let mut store_writable = keeps_recovery;
        if keeps_recovery {
            // The history and the parked sockets, from the object's SQLite storage.
            match crate::store::load(&self.state.storage().sql()) {
                Ok(state) => {
                    for problem in channel.load_stored(state, now_ms()) {
                        worker::console_warn!("switchboard: {problem}");
                    }
                }
                Err(error) => {
                    // Writing on would overwrite what could not be read: memory only, until
                    // the next rebuild reads it again.
                    worker::console_error!("switchboard: recovery store read: {error}");
                    store_writable = false;
                }
            }
        }
        *self.live.borrow_mut() = Some(Live {
            key,
            channel,
            sockets: live_sockets,
            waiting: HashMap::new(),
            acks: AckWaits::default(),
            emit_tokens: EmitTokens::default(),
            next_conn: plan.next_conn,
            calls_to_make: Vec::new(),
            store_writable,
        });
    }

    fn conn_of(&self, ws: &WebSocket) -> Option<ConnId> {
        self.state
            .get_tags(ws)
            .iter()
            .find_map(|tag| tag.strip_prefix("c:").and_then(|n| n.parse().ok()))
    }

    fn socket_gone(&self, ws: WebSocket) {
        self.wakeups.borrow_mut().websocket_closes += 1;
        self.ensure_live(None);
        let mut closed_by_us = true;
        if let Some(conn) = self.conn_of(&ws) {
            let mut guard = self.live.borrow_mut();
            if let Some(live) = guard.as_mut() {
                closed_by_us = live.sockets.remove(&conn).is_none();
                live.channel.handle_ws_closed(conn, now_ms());
            }
        }
        // Complete the closing handshake when the client started it. The runtime reports such a
        // socket as CLOSING here, not OPEN; after a close of our own this is a no-op.
        let _ = ws.close(Some(1000), Some("closed"));
        self.carry_out();
        if closed_by_us && self.is_empty() {
            // The client answered a close of ours, and nothing else lives here. If it had never
            // sent a frame before, the runtime keeps its connection open after this close (a
            // workerd bug, docs/edge-close.md) until the object is reset; resetting an empty
            // object loses nothing.
            self.reset_request.set(Some(
                "a closed WebSocket keeps its connection until the object resets (docs/edge-close.md)",
            ));
        }
    }

    /// Runs the channel's timers that are due, after telling it which pongs the runtime answered
    /// for us since the last round.
    fn run_due_timers(&self) {
        let mut guard = self.live.borrow_mut();
        let Some(live) = guard.as_mut() else {
            return;
        };
        let extras: &StateExtras = self.state.as_raw().unchecked_ref();
        for (conn, ws) in &live.sockets {
            if let Ok(value) = extras.get_websocket_auto_response_timestamp(ws.as_ref())
                && let Some(date) = value.dyn_ref::<js_sys::Date>()
            {
                live.channel.handle_pong_seen(*conn, date.get_time() as u64);
            }
        }
        live.channel.handle_timeout(now_ms());
    }

    /// A WebSocket upgrade, accepted and handed to the channel: no await in it, so it stays out
    /// of the state machine of [`DurableObject::fetch`].
    #[inline(never)]
    fn open_websocket(
        &self,
        key: &str,
        sid: Option<&str>,
        client: ClientInfo,
        now: u64,
    ) -> worker::Result<Response> {
        let pair = WebSocketPair::new()?;
        let response = {
            let mut guard = self.live.borrow_mut();
            let Some(live) = guard.as_mut() else {
                return to_worker_response(HttpResponse::text(503, "channel unavailable"));
            };
            match live.channel.check_ws_open(sid) {
                Err(error) => return to_worker_response(error.response()),
                Ok(WsAdmission::AcceptAndClose { code, reason }) => {
                    // Not hibernatable: the runtime completes the close of such a socket
                    // at once, where a hibernatable one closed outside its own message
                    // handler keeps its connection open (docs/edge-close.md).
                    pair.server.accept()?;
                    pair.server.close(Some(code), Some(reason))?;
                    return Response::from_websocket(pair.client);
                }
                Ok(WsAdmission::Accept) => {}
            }
            let conn = live.next_conn;
            live.next_conn += 1;
            self.state
                .accept_websocket_with_tags(&pair.server, &[&conn_tag(conn)]);
            store_attachment(
                &pair.server,
                &Attachment {
                    conn,
                    channel: key.to_string(),
                    session: None,
                },
            );
            live.sockets.insert(conn, pair.server.clone());
            live.channel.handle_ws_open(conn, sid, client, now);
            Response::from_websocket(pair.client)
        };
        self.carry_out();
        response
    }

    /// Waits for the answer of a request the object holds (a long-polling GET, an emit waiting for
    /// acknowledgements). The request keeps the object awake, so meanwhile the channel's timers
    /// run on time from here, on a JavaScript timer, rather than on the alarm alone, which the
    /// runtime may deliver tens of milliseconds late (enough to miss a 200 ms ping timeout or a 1 s
    /// connect timeout by the protocol's own clock).
    async fn wait_running_timers<T>(
        &self,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, oneshot::Canceled> {
        let mut answered = None;
        let waiting = async { answered = Some(answer.await) };
        self.run_timers_until(std::pin::pin!(waiting)).await;
        answered.unwrap_or(Err(oneshot::Canceled))
    }

    /// The loop of [`Shared::wait_running_timers`], once for every kind of answer.
    async fn run_timers_until(&self, mut done: std::pin::Pin<&mut dyn Future<Output = ()>>) {
        use futures_util::future::{Either, select};
        loop {
            let next_timer = self
                .live
                .borrow_mut()
                .as_mut()
                .and_then(|live| live.channel.poll_timeout());
            let Some(at) = next_timer else {
                return done.await;
            };
            let delay = worker::Delay::from(Duration::from_millis(at.saturating_sub(now_ms())));
            match select(done.as_mut(), delay).await {
                Either::Left(((), _)) => return,
                Either::Right(((), _)) => {
                    self.run_due_timers();
                    self.carry_out();
                }
            }
        }
    }

    /// Nothing lives in this object: no session, no request waiting, no open WebSocket.
    fn is_empty(&self) -> bool {
        let live_is_empty = self.live.borrow().as_ref().is_none_or(|live| {
            live.channel.is_idle() && !live.holds_requests() && live.sockets.is_empty()
        });
        live_is_empty
            && self.state.get_websockets().iter().all(|ws| {
                AsRef::<worker::web_sys::WebSocket>::as_ref(ws).ready_state()
                    != worker::web_sys::WebSocket::OPEN
            })
    }

    /// Carries out the channel's outputs (backend calls go to their own task), then points the
    /// alarm at its next timer.
    fn carry_out(&self) {
        let (next_timer, calls_waiting) = {
            let mut guard = self.live.borrow_mut();
            let Some(live) = guard.as_mut() else {
                return;
            };
            let mut gone = Vec::new();
            loop {
                while let Some(output) = live.channel.poll_output() {
                    match output {
                        Output::Transmit { conn, frames } => {
                            let values = to_js_values(&frames);
                            send_values(&live.sockets, conn, &values, &mut gone);
                        }
                        Output::Broadcast { conns, frames } => {
                            // Converted to JS values once, sent to every recipient.
                            let values = to_js_values(&frames);
                            for conn in conns {
                                send_values(&live.sockets, conn, &values, &mut gone);
                            }
                        }
                        Output::CloseWebSocket { conn, code, reason } => {
                            if let Some(ws) = live.sockets.remove(&conn) {
                                // Forget the session first: a socket still closing must not come
                                // back as a live session if the object restarts.
                                store_attachment(
                                    &ws,
                                    &Attachment {
                                        conn,
                                        channel: live.key.clone(),
                                        session: None,
                                    },
                                );
                                let _ = ws.close(Some(code), Some(reason));
                            }
                        }
                        Output::Respond { request, response } => {
                            if let Some(reply) = live.waiting.remove(&request) {
                                let _ = reply.send(response);
                            }
                        }
                        Output::SessionChanged { conn } => {
                            if let Some(ws) = live.sockets.get(&conn) {
                                let attachment = Attachment {
                                    conn,
                                    channel: live.key.clone(),
                                    session: live.channel.snapshot(conn),
                                };
                                store_attachment(ws, &attachment);
                            }
                        }
                        ref
                        answer @ (Output::AckReceived { .. } | Output::AckUnanswered { .. }) => {
                            if let Some((result, reply)) = live.acks.record(answer) {
                                let _ = reply.send(result);
                            }
                        }
                        Output::BackendCall(call) => live.calls_to_make.push(call),
                        // Only the native server counts sessions per client address; an object
                        // sees one channel, not the client's sessions across channels.
                        Output::SessionOpened { .. } | Output::SessionClosed { .. } => {}
                        Output::Warning { message } => {
                            worker::console_warn!("switchboard: {message}");
                        }
                        Output::Store(ops) if live.store_writable => {
                            if let Err(error) =
                                crate::store::apply(&self.state.storage().sql(), ops)
                            {
                                worker::console_error!(
                                    "switchboard: recovery store write: {error}"
                                );
                            }
                        }
                        Output::Store(_) => {}
                    }
                }
                if gone.is_empty() {
                    break;
                }
                // Sockets that failed to send are gone; closing them may produce more outputs.
                for conn in gone.drain(..) {
                    live.sockets.remove(&conn);
                    live.channel.handle_ws_closed(conn, now_ms());
                }
            }
            // Held requests run the timers while they wait (see `wait_running_timers`); the alarm
            // is for when nothing else wakes the object, and is armed again when the last one is
            // answered.
            let next_timer = if live.holds_requests() {
                None
            } else {
                live.channel.poll_timeout()
            };
            (next_timer, !live.calls_to_make.is_empty())
        };
        if calls_waiting {
            self.drive_backend_calls();
        }
        self.arm_alarm(next_timer);
    }

    /// Points the alarm at `next_timer`, if that is earlier than where it points.
    fn arm_alarm(&self, next_timer: Option<u64>) {
        // The alarm only ever moves earlier. A timer that moved later (a pong pushes the next
        // ping back) or went away leaves the alarm as it is: an early alarm finds nothing due and
        // re-arms. Each alarm is a storage write: billed, and seen here to stall the object's
        // thread for hundreds of milliseconds on a busy local disk.
        let Some(at) = next_timer else {
            return;
        };
        if self.alarm_at.get().is_some_and(|armed| armed <= at) {
            return;
        }
        self.alarm_at.set(Some(at));
        // Nothing waits for the write: neither this handler nor the object's outgoing messages
        // (`unconfirmed_write`). A write that fails forgets the armed time, so the next change
        // arms again.
        let storage = match self.state.as_raw().storage() {
            Ok(storage) => storage,
            Err(err) => {
                worker::console_error!("switchboard: no storage for the alarm: {err:?}");
                self.alarm_at.set(None);
                return;
            }
        };
        let storage: &StorageExtras = storage.unchecked_ref();
        let written = wasm_bindgen_futures::JsFuture::from(
            storage.set_alarm(at as f64, &unconfirmed_write()),
        );
        let alarm_at = self.alarm_at.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(err) = written.await {
                worker::console_error!("switchboard: could not set the alarm: {err:?}");
                alarm_at.set(None);
            }
        });
    }

    /// Starts the channel's waiting backend calls: on the task that makes them, which is started
    /// here if it is not running, or woken if it is.
    fn drive_backend_calls(&self) {
        if self.driving.get() {
            if let Some(kick) = self.kick.borrow_mut().take() {
                let _ = kick.send(());
            }
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.driving.set(true);
        wasm_bindgen_futures::spawn_local(async move {
            me.make_backend_calls().await;
            me.driving.set(false);
        });
    }

    /// The task that makes backend calls. It runs while the channel has calls in flight or
    /// webhooks waiting, and meanwhile runs the channel's timers itself (a call's timeout, a
    /// webhook retry), as a held request does: its pending `fetch` and timer also keep the object
    /// from hibernating away from an answer it still expects.
    async fn make_backend_calls(&self) {
        use futures_util::stream::FuturesUnordered;
        use futures_util::{StreamExt, future};

        let mut in_flight = FuturesUnordered::new();
        loop {
            let (calls, busy, next_timer) = {
                let mut guard = self.live.borrow_mut();
                let Some(live) = guard.as_mut() else {
                    break;
                };
                let calls = std::mem::take(&mut live.calls_to_make);
                (
                    calls,
                    live.channel.backend_busy(),
                    live.channel.poll_timeout(),
                )
            };
            for call in calls {
                let env = self.env.clone();
                in_flight.push(async move {
                    let id = call.id;
                    (id, backend::call(&env, call).await)
                });
            }
            if in_flight.is_empty() && !busy {
                break;
            }
            let (kick, kicked) = oneshot::channel();
            *self.kick.borrow_mut() = Some(kick);
            let wait = next_timer.map_or(60_000, |at| at.saturating_sub(now_ms()));
            let delay = worker::Delay::from(Duration::from_millis(wait));
            let answered = async {
                if in_flight.is_empty() {
                    future::pending().await
                } else {
                    in_flight.next().await
                }
            };
            futures_util::pin_mut!(answered);
            match future::select(answered, future::select(delay, kicked)).await {
                future::Either::Left((Some((id, answer)), _)) => {
                    if let Some(live) = self.live.borrow_mut().as_mut() {
                        live.channel.handle_backend_answer(id, answer, now_ms());
                    }
                    self.carry_out();
                }
                future::Either::Left((None, _)) => {}
                future::Either::Right((future::Either::Left(((), _)), _)) => {
                    self.run_due_timers();
                    self.carry_out();
                }
                // New calls to start.
                future::Either::Right((future::Either::Right(_), _)) => {}
            }
        }
        *self.kick.borrow_mut() = None;
    }
}

/// Sends a packet's frames, already JS values, to WebSocket `conn`; a socket that fails is gone.
fn send_values(
    sockets: &HashMap<ConnId, WebSocket>,
    conn: ConnId,
    values: &[JsValue],
    gone: &mut Vec<ConnId>,
) {
    let Some(ws) = sockets.get(&conn) else {
        return;
    };
    let socket: &SocketExtras = ws.as_ref().unchecked_ref();
    if values.iter().any(|value| socket.send_value(value).is_err()) {
        gone.push(conn);
    }
}

/// Stores the attachment as JSON text: smaller code than a structured-clone mapping, and the same
/// serialization the core's tests check.
fn store_attachment(ws: &WebSocket, attachment: &Attachment) {
    if let Ok(text) = serde_json::to_string(attachment) {
        let _ = ws.as_ref().serialize_attachment(JsValue::from_str(&text));
    }
}

fn load_attachment(ws: &WebSocket) -> Option<Attachment> {
    let text = ws.as_ref().deserialize_attachment().ok()?.as_string()?;
    serde_json::from_slice(text.as_bytes()).ok()
}

/// The forwarded headers of a request and its client's address, which Cloudflare gives as
/// `CF-Connecting-IP`.
fn client_info(headers: &Headers) -> ClientInfo {
    let pairs: Vec<(String, String)> = headers.entries().collect();
    let address = headers.get("cf-connecting-ip").ok().flatten();
    ClientInfo::from_request(
        pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
        address,
    )
}

/// The query string of a serialized URL (without `?` and fragment).
pub fn query_of(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    Some(query.split_once('#').map_or(query, |(query, _)| query))
}

fn conn_tag(conn: ConnId) -> String {
    format!("c:{conn}")
}

/// Writes a core response as a Workers one.
pub fn to_worker_response(response: HttpResponse) -> worker::Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(response.body.to_vec())?
        .with_status(response.status)
        .with_headers(headers))
}
