//! The HTTP and WebSocket edges of the native server: they parse what core needs from a request,
//! hand it to the channel's task, and write back what comes out. No protocol decisions are made here.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use switchboard_core::channel::ConnId;
use switchboard_core::config::{ChannelPolicy, Config};
use switchboard_core::http::{
    self as core_http, EngineError, HttpResponse, Method, Route, TransportKind,
};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Command, OUTBOUND_QUEUE, Outbound, Registry, next_conn_id};

/// Shared state of the HTTP server.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    /// The bearer secret of the HTTP API.
    pub api_secret: Option<Arc<str>>,
}

/// Registry key of the raw Engine.IO echo endpoint; channel names never start with '/'.
const ENGINE_ECHO_KEY: &str = "/engine.io";

/// Every Engine.IO request, polling or WebSocket, on any channel.
pub async fn engine_endpoint(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let (key, policy) = match core_http::route(&path) {
        Route::Channel(channel) => match state.config.policy_for(&channel) {
            Some(policy) => (channel, policy.clone()),
            None => return to_axum(core_http::unknown_channel_response(&channel)),
        },
        Route::EngineEcho => match state.config.engine_echo() {
            Some(policy) => (ENGINE_ECHO_KEY.to_string(), policy.clone()),
            None => return StatusCode::NOT_FOUND.into_response(),
        },
        Route::BadChannelName(problem) => {
            return to_axum(core_http::bad_channel_response(&problem));
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let origin = header_text(request.headers(), header::ORIGIN);
    let method = Method::parse(request.method().as_str());
    if method == Method::Options {
        return to_axum(core_http::preflight_response(&policy, origin.as_deref()));
    }
    if let Err(error) = core_http::check_origin(&policy, origin.as_deref()) {
        return to_axum(error.response());
    }
    let query = match core_http::parse_engine_query(request.uri().query()) {
        Ok(query) => query,
        Err(error) => {
            let cors = core_http::cors_headers(&policy, origin.as_deref());
            return to_axum(error.response().with_headers(cors));
        }
    };
    match query.transport {
        TransportKind::WebSocket => {
            let (mut parts, _body) = request.into_parts();
            match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
                Ok(upgrade) => websocket(upgrade, state, key, policy, query.sid),
                // A plain GET asking for the WebSocket transport.
                Err(_) => to_axum(EngineError::BadRequest.response()),
            }
        }
        TransportKind::Polling => {
            let limit = usize::try_from(policy.max_payload).unwrap_or(usize::MAX);
            // Over the limit (or the client went away mid-body): `None`, and core answers 413 and
            // ends the session; nothing oversized is ever buffered.
            let body = to_bytes(request.into_body(), limit).await.ok();
            polling(state, key, policy, method, query.sid, origin, body).await
        }
    }
}

async fn polling(
    state: AppState,
    key: String,
    policy: Arc<ChannelPolicy>,
    method: Method,
    sid: Option<String>,
    origin: Option<String>,
    body: Option<Bytes>,
) -> Response {
    let request = next_conn_id();
    let (reply, answer) = oneshot::channel();
    let command = Command::Polling {
        request,
        method,
        sid,
        origin,
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

fn websocket(
    upgrade: WebSocketUpgrade,
    state: AppState,
    key: String,
    policy: Arc<ChannelPolicy>,
    sid: Option<String>,
) -> Response {
    // Small buffers keep idle connections cheap; the library defaults (128 KiB) dominate memory.
    // Larger messages still arrive whole: the buffer grows for them.
    // The message cap sits a little above max_payload so core, not the library, decides (and closes
    // with a clear code) for the common case.
    let max_message = usize::try_from(policy.max_payload)
        .unwrap_or(usize::MAX)
        .saturating_add(64);
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run_websocket(socket, state, key, policy, sid))
}

/// WebSocket tasks still running; shutdown waits for them to send their close frames.
pub static OPEN_WEBSOCKETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct OpenWebSocket;

impl OpenWebSocket {
    fn new() -> Self {
        OPEN_WEBSOCKETS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenWebSocket
    }
}

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        OPEN_WEBSOCKETS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One task per WebSocket: forwards incoming messages to the channel and writes what it sends back.
async fn run_websocket(
    mut socket: WebSocket,
    state: AppState,
    key: String,
    policy: Arc<ChannelPolicy>,
    sid: Option<String>,
) {
    let _open = OpenWebSocket::new();
    let conn = next_conn_id();
    let (outbound, mut from_channel) = mpsc::channel(OUTBOUND_QUEUE);
    let registry = &state.registry;
    registry
        .send(
            &key,
            &policy,
            Command::WsOpen {
                conn,
                sid,
                outbound,
            },
        )
        .await;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let command = match incoming {
                    Some(Ok(Message::Text(text))) => Command::WsText { conn, text },
                    Some(Ok(Message::Binary(bytes))) => Command::WsBinary { conn, bytes },
                    // The library answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                registry.send(&key, &policy, command).await;
            }
            outgoing = from_channel.recv() => match outgoing {
                Some(Outbound::Messages(messages)) => {
                    match write_batch(&mut socket, &messages, &mut from_channel).await {
                        Ok(Batch::Open) => {}
                        // The channel already forgot this connection.
                        Ok(Batch::Closed) => return,
                        Err(_) => break,
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    // The channel already forgot this connection.
                    return;
                }
                // The channel dropped us (too slow): close without ceremony.
                None => {
                    let frame = CloseFrame { code: 1008, reason: Utf8Bytes::from_static("too slow") };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    break;
                }
            },
        }
    }
    registry
        .send(&key, &policy, Command::WsClosed { conn })
        .await;
}

/// Whether a batch ended with the channel closing the connection.
enum Batch {
    Open,
    Closed,
}

/// Writes one packet's messages, and every packet already queued behind it, then flushes once:
/// under load many events leave in one system call.
async fn write_batch(
    socket: &mut WebSocket,
    first: &[Message],
    queue: &mut mpsc::Receiver<Outbound>,
) -> Result<Batch, axum::Error> {
    for message in first {
        socket.feed(message.clone()).await?;
    }
    let mut budget = 64;
    while budget > 0 {
        match queue.try_recv() {
            Ok(Outbound::Messages(messages)) => {
                for message in messages.iter() {
                    socket.feed(message.clone()).await?;
                }
                budget -= 1;
            }
            Ok(Outbound::Close { code, reason }) => {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                socket.feed(Message::Close(Some(frame))).await?;
                socket.flush().await?;
                return Ok(Batch::Closed);
            }
            Err(_) => break,
        }
    }
    socket.flush().await?;
    Ok(Batch::Open)
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
