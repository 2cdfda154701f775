//! # switchboard-native
//!
//! Switchboard as a tokio server. The moving parts:
//!
//! - [`transport`]: the Engine.IO endpoints, `/socket.io/<channel>/` (and `/engine.io/` when
//!   configured). Polling requests and WebSocket messages are parsed just enough to be handed to
//!   their channel. Each WebSocket has one small task that reads from the socket and writes what
//!   its channel queued for it, everything queued at once in one system call.
//! - [`api`]: the backend's HTTP API, socket.io-client's bundle, and the static folder.
//! - [`actor`]: one task per live channel owning a core [`switchboard_core::channel::Channel`]; it
//!   feeds inputs with the current time, runs timers, and routes outputs back to connections.
//! - [`websocket_io`]: the byte stream under a WebSocket, where broadcasts are written as frames
//!   encoded once for all recipients.
//! - [`outbox`]: the bounded queue from a channel to one WebSocket; a connection that lets it fill
//!   up is dropped as too slow, so one stalled client never holds up the others.
//! - `backend_client`: the calls to the app backend that core asks for (handlers, the connect
//!   hook, webhooks), on one pooled keep-alive HTTP client.
//! - [`settings`]: configuration from `wrangler.toml` `[vars]`, environment overrides, or the
//!   embedded default, and the static folder of its `[assets]`; the command line's limits.
//! - [`limits`]: what keeps clients from exhausting the server before core sees a request:
//!   connection caps (the process's, derived from its open-file limit, and each address's), the
//!   rate of new Engine.IO sessions per address and how many it may hold open, and the answers
//!   to those refused.
//! - `http_server`: the accept loop and hyper's HTTP/1.1 connections under the router, with the
//!   head, idle and body timeouts (never on a held long-polling GET or a WebSocket).
//!
//! Every request goes through one handler, [`front_door`], which asks core where it goes, as the
//! Worker does on the edge. [`serve`] runs the server until a shutdown future resolves, then closes
//! every session so clients reconnect elsewhere, and waits for in-flight requests and WebSocket
//! tasks to finish.

pub mod actor;
pub mod api;
mod backend_client;
mod buffers;
mod http_server;
pub mod limits;
pub mod outbox;
pub mod recovery_store;
pub mod settings;
pub mod transport;
pub mod websocket_io;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use switchboard_core::config::Config;
use switchboard_core::http::{self as core_http, Route};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::actor::Registry;
use crate::limits::{Limiter, Limits};

/// How long shutdown waits for open requests and connections before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a server is started with.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: Arc<Config>,
    /// The bearer secret of the HTTP API (`None` disables it).
    pub api_secret: Option<Arc<str>>,
    /// The static folder served for every path nothing else answers (`[assets] directory`).
    pub assets: Option<PathBuf>,
    /// Tracks the WebSocket tasks, which the HTTP server no longer sees once upgraded; shutdown
    /// waits for them to deliver their close frames. Pass a clone to count them from outside.
    pub websockets: TaskTracker,
    /// Timeouts, connection caps, session rates and counts ([`Limits::default`] unless set).
    pub limits: Limits,
    /// Where connection-state recovery is kept across restarts (`--data-dir`); in memory only
    /// when `None`.
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(config: Arc<Config>, api_secret: Option<Arc<str>>) -> Self {
        Self {
            config,
            api_secret,
            assets: None,
            websockets: TaskTracker::new(),
            limits: Limits::default(),
            data_dir: None,
        }
    }
}

/// Shared state of the HTTP server.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub api_secret: Option<Arc<str>>,
    pub assets: Option<Arc<PathBuf>>,
    pub websockets: TaskTracker,
    /// Connection counts, session rates and counts, shared with the accept loop and the channels'
    /// tasks (through the handshakes' session slots).
    pub limiter: Arc<Limiter>,
}

/// The HTTP application: every request goes to [`front_door`].
pub fn app(options: &Options, registry: Arc<Registry>, limiter: Arc<Limiter>) -> Router {
    let state = AppState {
        config: options.config.clone(),
        registry,
        api_secret: options.api_secret.clone(),
        assets: options.assets.clone().map(Arc::new),
        websockets: options.websockets.clone(),
        limiter,
    };
    Router::new().fallback(front_door).with_state(state)
}

/// Where every request goes: core decides by the path, as the Worker does on the edge.
pub async fn front_door(State(state): State<AppState>, request: Request) -> Response {
    match core_http::route(request.uri().path()) {
        Route::Channel(_) | Route::EngineEcho | Route::BadChannelName(_) => {
            transport::engine_endpoint(state, request).await
        }
        Route::NotFound => api::static_file(&state, request).await,
        route => api::api_endpoint(&state, route, request).await,
    }
}

/// Serves on `listener` until `shutdown` resolves, then closes all sessions gracefully.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = match &options.data_dir {
        Some(dir) => {
            let store = recovery_store::RecoveryStore::open(dir).map_err(std::io::Error::other)?;
            tracing::info!(dir = %dir.display(), "connection-state recovery is kept in the data directory");
            Some(store)
        }
        None => None,
    };
    let registry = Registry::with_store(store);
    let websockets = options.websockets.clone();
    let limiter = Limiter::new(options.limits.clone(), limits::fd_limit());
    let (served, open) = limiter.caps();
    tracing::info!(
        served,
        open,
        per_ip = options.limits.max_connections_per_ip,
        sessions_per_ip = options.limits.max_sessions_per_ip,
        "connection and session caps (per_ip 0: no limit)"
    );
    let app = app(&options, registry.clone(), limiter.clone());
    let (closing_tx, closing_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http_server::run(listener, app, limiter, async move {
        shutdown.await;
        let _ = closing_tx.send(());
    }));
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
    websockets.close();
    if tokio::time::timeout_at(grace, websockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = websockets.len(),
            "WebSockets still open after the grace period"
        );
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
