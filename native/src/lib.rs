//! # switchboard-native
//!
//! Switchboard as a tokio server. The moving parts:
//!
//! - [`transport`]: axum handlers for `/socket.io/<channel>/` (and `/engine.io/` when configured).
//!   Polling requests and WebSocket messages are parsed just enough to be handed to their channel.
//!   Each WebSocket has one small task that reads from the socket and writes what its channel
//!   queued for it, everything queued at once in one system call.
//! - [`actor`]: one task per live channel owning a core [`switchboard_core::channel::Channel`]; it
//!   feeds inputs with the current time, runs timers, and routes outputs back to connections.
//! - [`websocket_io`]: the byte stream under a WebSocket, where broadcasts are written as frames
//!   encoded once for all recipients.
//! - [`outbox`]: the bounded queue from a channel to one WebSocket; a connection that lets it fill
//!   up is dropped as too slow, so one stalled client never holds up the others.
//! - [`settings`]: configuration from `wrangler.toml` `[vars]`, environment overrides, or the
//!   embedded default.
//!
//! [`serve`] runs the server until a shutdown future resolves, then closes every session so clients
//! reconnect elsewhere, and waits for in-flight requests to finish.

pub mod actor;
pub mod api;
mod buffers;
pub mod outbox;
pub mod settings;
pub mod transport;
pub mod websocket_io;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use switchboard_core::config::Config;
use tokio::net::TcpListener;

use crate::actor::Registry;
use crate::transport::{AppState, engine_endpoint};

/// How long shutdown waits for open requests and connections before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The HTTP application.
pub fn app(config: Arc<Config>, registry: Arc<Registry>, api_secret: Option<Arc<str>>) -> Router {
    let state = AppState {
        config,
        registry,
        api_secret,
    };
    Router::new()
        .route("/", any(api::api_endpoint))
        .route("/index.html", any(api::api_endpoint))
        .route("/chat.js", any(api::api_endpoint))
        .route("/chat.css", any(api::api_endpoint))
        .route("/socket.io/socket.io.js", any(api::api_endpoint))
        .route("/emit", any(api::api_endpoint))
        .route("/healthz", any(api::api_endpoint))
        .route("/channels", any(api::api_endpoint))
        .route("/channels/", any(api::api_endpoint))
        .route("/channels/{*rest}", any(api::api_endpoint))
        .route("/__debug/{*rest}", any(api::api_endpoint))
        .route("/socket.io", any(engine_endpoint))
        .route("/socket.io/", any(engine_endpoint))
        .route("/socket.io/{*rest}", any(engine_endpoint))
        .route("/engine.io", any(engine_endpoint))
        .route("/engine.io/", any(engine_endpoint))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then closes all sessions gracefully.
/// `api_secret` authenticates the HTTP API (`None` disables it).
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    api_secret: Option<Arc<str>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Registry::new();
    let app = app(config, registry.clone(), api_secret);
    let (closing_tx, closing_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = closing_tx.send(());
    });
    let server = tokio::spawn(server.into_future());
    // Once the signal arrives, tell every channel to close its sessions: WebSockets get a close
    // frame, held polls their last packet. Clients see a transport close and reconnect.
    if closing_rx.await.is_ok() {
        tracing::info!(
            channels = registry.live_channels(),
            "shutting down: closing all sessions"
        );
        registry.shutdown_all().await;
    }
    // Upgraded connections are not tracked by the HTTP server: wait for the WebSocket tasks to
    // deliver their close frames before the runtime goes away.
    let grace = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while transport::OPEN_WEBSOCKETS.load(std::sync::atomic::Ordering::Acquire) > 0
        && tokio::time::Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio::time::timeout_at(grace, server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) => Err(std::io::Error::other(join_error)),
        Err(_) => {
            tracing::warn!("connections still open after the grace period; exiting anyway");
            Ok(())
        }
    }
}
