//! Benchmark peer: socketioxide on axum, speaking the same wire contract as
//! Switchboard's bench channel so bench/loadgen can drive it unchanged.
//!
//!   cargo run --release --manifest-path bench/peers/socketioxide/Cargo.toml -- --port 4002
//!
//! - Engine.IO v4 / Socket.IO v5 at /socket.io/chats/bench/ (polling + websocket)
//! - client emits `tick` with any args -> `io.emit("tick", args)` to the whole
//!   namespace, sender included (encoded once by the local adapter)
//! - POST /emit (Bearer bench-secret) {"channel","event","data"} -> broadcast,
//!   200 {"delivered": io.sockets().len()}; wrong secret -> 401
//! - GET /healthz -> 200
//!
//! socketioxide's defaults are kept (as its users run it) except the path and
//! max_payload; the ping settings are spelled out although they equal the defaults.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::IntoResponse,
    routing::{get, post},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser::SerializeTuple};
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef},
};

const SECRET: &str = "bench-secret";
const CHANNEL: &str = "chats/bench";
const MAX_PAYLOAD: usize = 1_000_000;

/// All the arguments of an event, relayed as they came.
///
/// socketioxide treats tuple-like types as "several arguments" (a plain
/// `Data<Value>` would only see the first one): deserializing through
/// `deserialize_tuple` collects every argument after the event name, and
/// serializing through `serialize_tuple` emits them back as separate arguments,
/// like socket.io's `io.emit("tick", ...args)`.
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> de::Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(v) = seq.next_element::<Value>()? {
                    args.push(v);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut t = serializer.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

#[derive(Deserialize)]
struct EmitBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Value,
}

async fn emit(State(io): State<SocketIo>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
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
    let msg: EmitBody = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "expected {channel, event, data}"})),
            );
        }
    };
    if msg.channel != CHANNEL {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown channel"})),
        );
    }
    // Local sockets of the "/" namespace, counted the way socketioxide exposes them.
    let delivered = io.sockets().len();
    // Per-socket failures (a full internal buffer) are socketioxide's to handle:
    // the packet is dropped for that socket, the others still get it.
    let _ = io.emit(msg.event, &msg.data).await;
    (StatusCode::OK, Json(json!({ "delivered": delivered })))
}

fn parse_port() -> u16 {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    while let Some(a) = args.next() {
        if a == "--port" {
            port = args.next();
        } else if let Some(p) = a.strip_prefix("--port=") {
            port = Some(p.to_owned());
        }
    }
    let port = port.or_else(|| std::env::var("PORT").ok());
    match port {
        None => 4002,
        Some(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("usage: bench-peer-socketioxide --port <n>");
            std::process::exit(2);
        }),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = parse_port();

    let (layer, io) = SocketIo::builder()
        .req_path("/socket.io/chats/bench")
        .ping_interval(Duration::from_millis(25_000))
        .ping_timeout(Duration::from_millis(20_000))
        .max_payload(MAX_PAYLOAD as u64)
        // Packets queued per socket before it counts as too slow: the same bound as Switchboard's
        // (socketioxide's default is 128).
        .max_buffer_size(1024)
        .build_layer();

    io.ns("/", async |socket: SocketRef| {
        socket.on("tick", async |io: SocketIo, Data::<Args>(args)| {
            let _ = io.emit("tick", &args).await;
        });
    });

    let app = Router::new()
        .route("/emit", post(emit))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD))
        .with_state(io)
        .layer(layer);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
