//! `switchboard`: the native server binary. See the crate docs of `switchboard_native`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use switchboard_core::api::API_SECRET_VAR;
use switchboard_core::auth::JWT_SECRET_VAR;
use switchboard_core::backend::WEBHOOK_SECRET_VAR;
use switchboard_native::settings::{self, LimitArgs, Source};
use switchboard_native::{Options, limits};
use tracing_subscriber::EnvFilter;

/// Realtime channels for Socket.IO clients.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "SWITCHBOARD_HOST")]
    host: String,
    /// Port to listen on.
    #[arg(long, short, default_value_t = 3000, env = "SWITCHBOARD_PORT")]
    port: u16,
    /// Configuration file; its `[vars]` table is read. Without one, an embedded default applies.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Read `[env.<NAME>.vars]` instead of `[vars]` (wrangler environments).
    #[arg(long = "env", value_name = "NAME", env = "SWITCHBOARD_ENV")]
    environment: Option<String>,
    /// Keep connection-state recovery (channel history, disconnected sockets) in SQLite here,
    /// so that a restart loses nothing; in memory only without it.
    #[arg(long, value_name = "DIR", env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

const DEFAULT_CONFIG: &str = "./wrangler.toml";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    // Connections are capped below the open-file limit; first make that limit as high as allowed.
    match limits::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }

    let required = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let settings::Loaded {
        config,
        source,
        assets,
    } = settings::load(&path, cli.environment.as_deref(), required, |key| {
        std::env::var(key).ok()
    })?;
    match &source {
        Source::File(file) => tracing::info!(
            config = %file,
            env = cli.environment.as_deref().unwrap_or("(top level)"),
            patterns = config.rules().len(),
            "configuration loaded"
        ),
        Source::Embedded => tracing::info!(
            "no {DEFAULT_CONFIG}: using the embedded default (default channel and chats/:id, relay to all)"
        ),
    }

    let jwt_secret = std::env::var(JWT_SECRET_VAR).ok();
    if config.has_private_channels() && jwt_secret.as_deref().unwrap_or("").is_empty() {
        tracing::warn!(
            "private channels are configured but {JWT_SECRET_VAR} is not set: they will refuse every client"
        );
    }
    let config = config.with_jwt_secret(jwt_secret.as_deref());
    let webhook_secret = std::env::var(WEBHOOK_SECRET_VAR).ok();
    if config.has_backend_channels() && webhook_secret.as_deref().unwrap_or("").is_empty() {
        tracing::warn!(
            "channels call the app backend but {WEBHOOK_SECRET_VAR} is not set: calls cannot be signed, so none is made (handlers answer INTERNAL_SERVER_ERROR, connect hooks refuse)"
        );
    }
    let config = config.with_webhook_secret(webhook_secret.as_deref());

    let address: SocketAddr = format!("{}:{}", cli.host, cli.port)
        .parse()
        .with_context(|| format!("invalid --host/--port {}:{}", cli.host, cli.port))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let api_secret = match std::env::var(API_SECRET_VAR) {
        Ok(secret) if !secret.is_empty() => secret,
        _ => {
            // A fresh secret per run keeps the API usable locally without ever leaving it open.
            let secret = random_secret()?;
            tracing::info!(
                "{API_SECRET_VAR} is not set; the HTTP API secret for this run is {secret} \
                 (set {API_SECRET_VAR} to choose one)"
            );
            secret
        }
    };
    if let Some(folder) = &assets {
        tracing::info!(folder = %folder.display(), "serving the static folder of [assets]");
    }
    tracing::info!("switchboard listening on http://{address}");
    let mut options = Options::new(Arc::new(config), Some(Arc::from(api_secret)));
    options.assets = assets;
    options.limits = cli.limits.limits();
    options.data_dir = cli.data_dir;
    switchboard_native::serve(listener, options, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// 32 random characters from the operating system's generator.
fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..32].to_string())
}

/// Ctrl-C, or SIGTERM on Unix (what process managers send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
