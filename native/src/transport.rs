//! The HTTP and WebSocket edges of the native server: they parse what core needs from a request,
//! hand it to the channel's task, and write back what comes out. No protocol decisions are made here.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use switchboard_core::backend::ClientInfo;
use switchboard_core::channel::ConnId;
use switchboard_core::config::ChannelPolicy;
use switchboard_core::http::{
    self as core_http, EngineError, EngineRequestHead, HttpResponse, Method, TransportKind,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::AppState;
use crate::actor::{Command, Registry, next_conn_id};
use crate::limits::SessionSlot;
use crate::outbox::{Outbound, OutboxReceiver, outbox};
use crate::websocket_io::WebSocketIo;

/// Every Engine.IO request, polling or WebSocket, on any channel: core's front door decides
/// whether it reaches its channel.
pub async fn engine_endpoint(state: AppState, request: Request) -> Response {
    let origin = header_text(request.headers(), header::ORIGIN);
    let method = Method::parse(request.method().as_str());
    let head = EngineRequestHead {
        path: request.uri().path(),
        method,
        origin: origin.as_deref(),
        query: request.uri().query(),
        websocket_upgrade: has_token(request.headers(), header::UPGRADE, "websocket"),
    };
    let admission = match core_http::admit_engine_request(&state.config, &head) {
        Ok(admission) => admission,
        Err(response) => return to_axum(response),
    };
    let (key, policy, query) = (admission.key, admission.policy, admission.query);
    // A handshake (no sid) opens a session: its address may hold too many already, or open them
    // too fast. Its slot counts the session it opens for as long as that lives.
    let slot = match query.sid {
        Some(_) => None,
        None => match state
            .limiter
            .admit_new_session(&request, &policy, origin.as_deref())
        {
            Ok(slot) => slot,
            Err(refusal) => return *refusal,
        },
    };
    // Only a connect hook is shown who the client is; other channels keep nothing of it.
    let client = policy
        .auth
        .asks_backend()
        .then(|| Box::new(client_info(&request)));
    match query.transport {
        TransportKind::WebSocket => {
            let opening = Box::new(Opening {
                sid: query.sid,
                client,
                slot,
            });
            websocket(request, state, key, policy, opening)
        }
        TransportKind::Polling => {
            let limit = usize::try_from(policy.max_payload).unwrap_or(usize::MAX);
            // Over the limit (or the client went away mid-body): `None`, and core answers 413 and
            // ends the session; nothing oversized is ever buffered. A Content-Length over the
            // limit is refused at once, without waiting for a body that may never come.
            let body = if declared_length(&request).is_some_and(|length| length > limit as u64) {
                None
            } else {
                to_bytes(request.into_body(), limit).await.ok()
            };
            let head = PollingHead {
                method,
                sid: query.sid,
                origin,
                client,
                slot: slot.map(Box::new),
            };
            polling(state, key, policy, head, body).await
        }
    }
}

/// The body length a request's `Content-Length` announces, if it has a valid one.
pub fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The forwarded headers of a request and its client's address (the TCP peer).
fn client_info(request: &Request) -> ClientInfo {
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string());
    ClientInfo::from_request(headers, address)
}

/// What a polling request says besides its body.
struct PollingHead {
    method: Method,
    sid: Option<String>,
    origin: Option<String>,
    client: Option<Box<ClientInfo>>,
    /// A handshake's count against its address (see [`crate::limits::SessionSlot`]).
    slot: Option<Box<SessionSlot>>,
}

/// What a WebSocket handshake says besides its socket. Boxed on its way to the connection's task,
/// whose future keeps its arguments' space for the connection's whole life.
struct Opening {
    /// `None` for a new session; a sid for the upgrade of a polling one.
    sid: Option<String>,
    client: Option<Box<ClientInfo>>,
    /// A new session's count against its address (see [`crate::limits::SessionSlot`]).
    slot: Option<SessionSlot>,
}

impl Opening {
    /// Its parts, the box freed here: taking the box is the point, which clippy cannot see.
    #[allow(clippy::boxed_local)]
    fn into_parts(
        self: Box<Self>,
    ) -> (Option<String>, Option<Box<ClientInfo>>, Option<SessionSlot>) {
        let Opening { sid, client, slot } = *self;
        (sid, client, slot)
    }
}

async fn polling(
    state: AppState,
    key: String,
    policy: Arc<ChannelPolicy>,
    head: PollingHead,
    body: Option<Bytes>,
) -> Response {
    let request = next_conn_id();
    let (reply, answer) = oneshot::channel();
    let command = Command::Polling {
        request,
        method: head.method,
        sid: head.sid,
        origin: head.origin,
        client: head.client,
        slot: head.slot,
        body,
        reply,
    };
    state.registry.send(&key, &policy, command).await;
    // If the client goes away while its GET is held, this future is dropped and the guard tells the
    // channel, which ends the session as the protocol requires.
    let mut guard = AbortGuard {
        registry: state.registry.clone(),
        key,
        policy,
        request: Some(request),
    };
    let response = answer.await;
    guard.request = None;
    match response {
        Ok(response) => to_axum(response),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

struct AbortGuard {
    registry: Arc<Registry>,
    key: String,
    policy: Arc<ChannelPolicy>,
    request: Option<ConnId>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            self.registry
                .send_later(&self.key, &self.policy, Command::PollAborted { request });
        }
    }
}

/// Answers a WebSocket handshake (RFC 6455 section 4.2) and starts the connection's task.
///
/// The upgrade is done here with hyper and tokio-tungstenite rather than through axum's
/// `WebSocketUpgrade`: that one keeps its handshake state alive in the connection task for the
/// connection's whole life, and an idle connection's memory is mostly its task.
fn websocket(
    mut request: Request,
    state: AppState,
    key: String,
    policy: Arc<ChannelPolicy>,
    opening: Box<Opening>,
) -> Response {
    let accept = match handshake(&request) {
        Handshake::Accept(accept) => accept,
        // A plain GET asking for the WebSocket transport.
        Handshake::NotAnUpgrade => return to_axum(EngineError::BadRequest.response()),
        Handshake::WrongVersion => {
            // RFC 6455 section 4.4: say which version this server speaks.
            return Response::builder()
                .status(StatusCode::UPGRADE_REQUIRED)
                .header(header::SEC_WEBSOCKET_VERSION, "13")
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::UPGRADE_REQUIRED.into_response());
        }
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let tracker = state.websockets.clone();
    tracker.spawn(async move {
        // Fulfilled once the 101 below is written; fails if the client left first.
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket = WebSocketStream::from_raw_socket(
            WebSocketIo::new(TokioIo::new(upgraded)),
            Role::Server,
            Some(websocket_config(&policy)),
        )
        .await;
        run_websocket(&mut socket, &state.registry, &key, &policy, opening).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

enum Handshake {
    /// A valid WebSocket handshake; the `Sec-WebSocket-Accept` value to answer with.
    Accept(String),
    NotAnUpgrade,
    /// A WebSocket handshake for a protocol version other than 13.
    WrongVersion,
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Checks a WebSocket handshake request (RFC 6455 section 4.2.1).
fn handshake(request: &Request) -> Handshake {
    let headers = request.headers();
    let upgrade = request.method() == axum::http::Method::GET
        && request.version() == axum::http::Version::HTTP_11
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
        // hyper can hand the connection over (it cannot for some requests, e.g. HTTP/2).
        && request
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| upgrade) else {
        return Handshake::NotAnUpgrade;
    };
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|version| version == "13");
    if !version_13 {
        return Handshake::WrongVersion;
    }
    Handshake::Accept(derive_accept_key(key.as_bytes()))
}

/// Bytes read per system call, and the read buffer an idle connection keeps. Socket.IO messages
/// from clients are mostly far smaller; a larger message is still read whole, in several calls.
const READ_BUFFER: usize = 512;

fn websocket_config(policy: &ChannelPolicy) -> WebSocketConfig {
    // Small buffers keep idle connections cheap; the library defaults (128 KiB) dominate memory.
    // Larger messages still arrive whole: the buffer grows for them. The library hands what it
    // writes straight to `WebSocketIo`, which buffers it until the flush.
    // The message cap sits a little above max_payload so core, not the library, decides (and closes
    // with a clear code) for the common case.
    let max_message = usize::try_from(policy.max_payload)
        .unwrap_or(usize::MAX)
        .saturating_add(64);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        // What tungstenite itself may hold while `WebSocketIo` pushes back (only pongs and close
        // frames pass through it), so a client that pings without reading cannot grow it without
        // bound. A client stalled that far may miss its close frame; it is dropped all the same.
        .max_write_buffer_size(4 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

type Socket = WebSocketStream<WebSocketIo<TokioIo<Upgraded>>>;

/// One task per WebSocket: forwards incoming messages to the channel and writes what it sends back.
///
/// Its future is most of what an idle connection costs, so it is kept small: arguments are
/// borrowed from the spawning block (an owned argument would take its space twice), and the rare
/// wait for a full channel queue is boxed.
async fn run_websocket(
    socket: &mut Socket,
    registry: &Arc<Registry>,
    key: &str,
    policy: &Arc<ChannelPolicy>,
    opening: Box<Opening>,
) {
    let conn = next_conn_id();
    let (outbound, mut from_channel) = outbox();
    // Unboxed in a call of its own, so that the box is freed now, not when this future ends.
    let (sid, client, slot) = opening.into_parts();
    let open = Command::WsOpen {
        conn,
        sid,
        client,
        slot,
        outbound,
    };
    registry.send(key, policy, open).await;
    // A message for a channel whose queue is full. While it waits, the socket is not read (order
    // is kept) but what the channel sends keeps being written: a crowded channel must not turn its
    // clients into slow consumers.
    let mut forwarding: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
    let mut answer_close = false;
    loop {
        tokio::select! {
            () = async {
                match forwarding.as_mut() {
                    Some(forward) => forward.await,
                    None => std::future::pending().await,
                }
            }, if forwarding.is_some() => {
                forwarding = None;
            }
            incoming = socket.next(), if forwarding.is_none() => {
                let command = match incoming {
                    Some(Ok(Message::Text(text))) => Command::WsText { conn, text },
                    Some(Ok(Message::Binary(bytes))) => Command::WsBinary { conn, bytes },
                    // The library queues the pong itself; it leaves with the next write.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        answer_close = true;
                        break;
                    }
                    Some(Err(_)) | None => break,
                };
                if let Err(command) = registry.try_send(key, policy, command) {
                    forwarding = Some(Box::pin(registry.send_waiting(key, policy, command)));
                }
            }
            batch = from_channel.recv_all() => {
                // The rare paths below are boxed: inline, their futures would enlarge every
                // connection's task for its whole life.
                let Some(mut batch) = batch else {
                    // The channel dropped us (too slow): close without ceremony.
                    let rest = finish(socket, &mut from_channel);
                    let _ = Box::pin(tokio::time::timeout(RELEASE_GRACE, rest)).await;
                    break;
                };
                let used = batch.len();
                let close = queue_batch(socket, &mut batch);
                from_channel.recycle(batch, used);
                if let Some(frame) = close {
                    // The channel already forgot this connection.
                    let send = socket.send(Message::Close(Some(frame)));
                    let _ = Box::pin(tokio::time::timeout(RELEASE_GRACE, send)).await;
                    return;
                }
                let flushed = tokio::select! {
                    // The write first: it usually completes at once, and then the release is never
                    // even looked at.
                    biased;
                    flushed = socket.flush() => flushed,
                    // The channel let go of this connection while the write waits on a client that
                    // does not read: it gets a short grace to take the rest, then it is dropped.
                    () = from_channel.released() => {
                        let rest = finish(socket, &mut from_channel);
                        let _ = Box::pin(tokio::time::timeout(RELEASE_GRACE, rest)).await;
                        return;
                    }
                };
                if flushed.is_err() {
                    break;
                }
            }
        }
    }
    // A message already read from the client still reaches the channel, ahead of the close.
    if let Some(forward) = forwarding {
        forward.await;
    }
    registry.send(key, policy, Command::WsClosed { conn }).await;
    if answer_close {
        // tungstenite has queued the close reply the protocol asks for. It hands the reply to
        // `WebSocketIo` but, the connection being over, does not flush it: flush both.
        let reply = async {
            let _ = socket.flush().await;
            let _ = socket.get_mut().flush().await;
        };
        let _ = Box::pin(tokio::time::timeout(CLOSE_REPLY_GRACE, reply)).await;
    }
}

/// How long a client that closed may take to read the close reply.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(1);

/// How long a connection the channel has let go of may still take to write what is left.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// Writes what is left for a connection the channel has let go of, ending with a close frame.
async fn finish(socket: &mut Socket, from_channel: &mut OutboxReceiver) {
    loop {
        if socket.flush().await.is_err() {
            return;
        }
        let close = match from_channel.recv_all().await {
            Some(mut rest) => queue_batch(socket, &mut rest),
            // Dropped without a close of its own: it could not keep up.
            None => Some(CloseFrame {
                code: CloseCode::Policy,
                reason: Utf8Bytes::from_static("too slow"),
            }),
        };
        if let Some(frame) = close {
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    }
}

/// Puts a batch's frames into the socket's buffer, to leave in one system call with the next flush.
/// Returns the close frame that ends the batch, if the channel closed the connection (nothing after
/// it is sent). Leaves `batch` empty.
fn queue_batch(socket: &mut Socket, batch: &mut VecDeque<Outbound>) -> Option<CloseFrame> {
    while let Some(outbound) = batch.pop_front() {
        match outbound {
            Outbound::Frames(frames) => socket.get_mut().push_frames(&frames),
            Outbound::Close { code, reason } => {
                batch.clear();
                return Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(reason),
                });
            }
        }
    }
    None
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// Writes a core response as an axum one.
pub fn to_axum(response: HttpResponse) -> Response {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            builder = builder.header(*name, value);
        }
    }
    builder
        .body(Body::from(response.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
