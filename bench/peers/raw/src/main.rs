//! Benchmark peer: the practical fan-out limit on this machine. A bare
//! WebSocket fan-out (axum's `ws`, i.e. tokio-tungstenite) with no Socket.IO
//! library, speaking just enough Engine.IO v4 / Socket.IO v5 for bench/loadgen.
//!
//!   cargo run --release --manifest-path bench/peers/raw/Cargo.toml -- --port 4003
//!
//! Wire behaviour:
//! - WebSocket at /socket.io/chats/bench/ (`?EIO=4&transport=websocket`); on open the
//!   server sends `0{"sid":..,"upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`.
//! - `40` (CONNECT to "/") is answered with `40{"sid":..}` and joins the fan-out set.
//! - every text frame starting with `42` from a connected socket is forwarded as
//!   the same bytes (one shared `Utf8Bytes`, cloned per recipient) to every
//!   connected socket, sender included.
//! - nothing else is answered; a `2` ping goes to every socket every 25 s (one
//!   shared frame from one timer) so clients that watch the heartbeat stay up.
//! - POST /emit (Bearer bench-secret) {"channel","event","data"} builds
//!   `42["<event>",<data>]` once and queues it to every connected socket,
//!   answering 200 {"delivered": <sockets it was queued to>}; wrong secret -> 401.
//! - GET /healthz -> 200.
//!
//! One task per connection, fed by a bounded mpsc of frames. A client whose queue
//! is full cannot keep up and is dropped (removed from the set, connection closed).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Query, State,
        ws::{
            Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const SECRET: &str = "bench-secret";
const CHANNEL: &str = "chats/bench";
const PATH: &str = "/socket.io/chats/bench";
const PING_INTERVAL_MS: u64 = 25_000;
const PING_TIMEOUT_MS: u64 = 20_000;
const MAX_PAYLOAD: usize = 1_000_000;
/// Frames a connection may have queued before it counts as unable to keep up.
const DEFAULT_QUEUE: usize = 1024;

struct Peer {
    tx: mpsc::Sender<Message>,
    /// Wakes the connection task when it is dropped for being too slow.
    kick: Arc<Notify>,
}

struct Hub {
    peers: RwLock<HashMap<u64, Peer>>,
    next_id: AtomicU64,
    sid_seed: RandomState,
    queue: usize,
}

impl Hub {
    /// Queues one pre-encoded frame to every connected socket; a socket whose
    /// queue is full (or whose task is gone) is dropped. Returns the number of
    /// sockets the frame was queued to.
    fn broadcast(&self, frame: &Message) -> usize {
        let mut delivered = 0;
        let mut dropped = Vec::new();
        {
            let peers = self.peers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (id, peer) in peers.iter() {
                match peer.tx.try_send(frame.clone()) {
                    Ok(()) => delivered += 1,
                    Err(_) => dropped.push(*id),
                }
            }
        }
        if !dropped.is_empty() {
            let mut peers = self.peers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            for id in dropped {
                if let Some(peer) = peers.remove(&id) {
                    peer.kick.notify_one();
                }
            }
        }
        delivered
    }

    fn sid(&self, id: u64) -> String {
        // 16 hex chars, unpredictable across runs, unique within one.
        format!("{:016x}", self.sid_seed.hash_one(id))
    }
}

#[derive(Deserialize)]
struct EioQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
}

async fn ws_handler(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<EioQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (Ok(ws), Some("4"), Some("websocket")) = (ws, q.eio.as_deref(), q.transport.as_deref())
    else {
        // Only the WebSocket transport of Engine.IO v4 is spoken here.
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 0, "message": "Transport unknown"})),
        )
            .into_response();
    };
    ws.read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(MAX_PAYLOAD)
        .on_upgrade(move |socket| connection(hub, socket))
}

async fn connection(hub: Arc<Hub>, mut socket: WebSocket) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let sid = hub.sid(id);
    let open = format!(
        r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":{PING_INTERVAL_MS},"pingTimeout":{PING_TIMEOUT_MS},"maxPayload":{MAX_PAYLOAD}}}"#
    );
    if socket.send(Message::text(open)).await.is_err() {
        return;
    }

    let kick = Arc::new(Notify::new());
    let mut rx: Option<mpsc::Receiver<Message>> = None;

    loop {
        tokio::select! {
            _ = kick.notified() => break,
            frame = async {
                match rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    res = socket.send(frame) => if res.is_err() { break },
                    _ = kick.notified() => break,
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if text.starts_with("42") {
                    if rx.is_some() {
                        // The received bytes themselves, shared by every recipient.
                        hub.broadcast(&Message::Text(text));
                    }
                } else if text.as_str() == "40" && rx.is_none() {
                    let reply = format!(r#"40{{"sid":"{sid}"}}"#);
                    if socket.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                    let (tx, new_rx) = mpsc::channel(hub.queue);
                    rx = Some(new_rx);
                    hub.peers
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(id, Peer { tx, kick: kick.clone() });
                }
            }
        }
    }

    hub.peers.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
    let _ = socket.send(Message::Close(None)).await;
}

#[derive(Deserialize)]
struct EmitBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Value,
}

async fn emit(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let authorized = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(SECRET));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        );
    }
    let Ok(msg) = serde_json::from_slice::<EmitBody>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {channel, event, data}"})),
        );
    };
    if msg.channel != CHANNEL {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown channel"})),
        );
    }
    let mut text = String::from("42");
    text.push_str(&serde_json::to_string(&(&msg.event, &msg.data)).expect("JSON value"));
    let delivered = hub.broadcast(&Message::Text(Utf8Bytes::from(text)));
    (StatusCode::OK, Json(json!({ "delivered": delivered })))
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-peer-raw --port <n> [--queue <frames per connection, default {DEFAULT_QUEUE}>]"
    );
    std::process::exit(2);
}

fn parse_args() -> (u16, usize) {
    let mut args = std::env::args().skip(1);
    let (mut port, mut queue) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next(),
            "--queue" => queue = args.next(),
            _ if a.starts_with("--port=") => port = Some(a["--port=".len()..].to_owned()),
            _ if a.starts_with("--queue=") => queue = Some(a["--queue=".len()..].to_owned()),
            _ => usage(),
        }
    }
    let port = match port.or_else(|| std::env::var("PORT").ok()) {
        None => 4003,
        Some(p) => p.parse().unwrap_or_else(|_| usage()),
    };
    let queue = match queue {
        None => DEFAULT_QUEUE,
        Some(q) => q.parse().ok().filter(|&q| q > 0).unwrap_or_else(|| usage()),
    };
    (port, queue)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (port, queue) = parse_args();
    let hub = Arc::new(Hub {
        peers: RwLock::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        sid_seed: RandomState::new(),
        queue,
    });

    // Engine.IO heartbeat: one shared `2` frame to everyone per interval.
    let pinger = hub.clone();
    tokio::spawn(async move {
        let ping = Message::Text(Utf8Bytes::from_static("2"));
        let period = Duration::from_millis(PING_INTERVAL_MS);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            pinger.broadcast(&ping);
        }
    });

    let app = Router::new()
        .route(PATH, get(ws_handler))
        .route(&format!("{PATH}/"), get(ws_handler))
        .route("/emit", post(emit))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD))
        .with_state(hub);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
