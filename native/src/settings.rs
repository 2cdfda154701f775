//! Loading the configuration: `wrangler.toml` `[vars]` (or `[env.<name>.vars]`), overridden by
//! environment variables of the same names, or the embedded default when there is no file; and the
//! static folder its `[assets]` table declares, which the server serves as Cloudflare does. The
//! host's own limits (timeouts, connection caps, session rates and counts) are not channel policy:
//! they come from the command line or `SWITCHBOARD_*` environment variables ([`LimitArgs`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use switchboard_core::config::{Config, EMBEDDED_DEFAULT_VARS, keys};

use crate::limits::{self, Limits};

/// The host's limits on the command line, each also settable by its environment variable.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Seconds a client has to send a request's head, from connecting or from the first byte of a
    /// later request on a kept-alive connection; then the connection is closed.
    #[arg(long, value_name = "SECONDS", env = "SWITCHBOARD_HEADER_TIMEOUT",
          default_value_t = limits::DEFAULT_HEADER_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub header_timeout: f64,
    /// Seconds a kept-alive connection may wait between requests. A long-polling GET held by its
    /// channel is a request in flight, and a WebSocket is never idle here (its heartbeat is the
    /// channel's PING_INTERVAL and PING_TIMEOUT).
    #[arg(long, value_name = "SECONDS", env = "SWITCHBOARD_IDLE_TIMEOUT",
          default_value_t = limits::DEFAULT_IDLE_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub idle_timeout: f64,
    /// Seconds a request's body may take to arrive, from its head; then it is answered 408 and its
    /// connection closed.
    #[arg(long, value_name = "SECONDS", env = "SWITCHBOARD_BODY_TIMEOUT",
          default_value_t = limits::DEFAULT_BODY_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub body_timeout: f64,
    /// Seconds a response may wait on a client that reads none of it; then its connection is
    /// closed. (A WebSocket that does not read is dropped by its own outbox bound instead.)
    #[arg(long, value_name = "SECONDS", env = "SWITCHBOARD_SEND_TIMEOUT",
          default_value_t = limits::DEFAULT_SEND_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub send_timeout: f64,
    /// Connections served at once. Over it, a new connection's requests get 503 and
    /// `connection: close`, except `GET /healthz`; connections already open are not affected.
    /// [default: the open-file limit less 1024; the soft limit is raised to the hard one at start]
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Open connections one client address may have (an IPv4 address, or an IPv6 /64); over it,
    /// its new connections' requests get 429 and `connection: close`. Loopback counts as one
    /// address too: raise it for load tests, and behind a reverse proxy (whose address every
    /// connection has), limit at the proxy and set 0. 0: no limit.
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP",
          default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// New Engine.IO sessions (handshakes, requests without `sid`) one client address may open per
    /// second, sustained, after a burst of --session-burst-per-ip; over it, handshakes get 429 with
    /// `retry-after`. 0: no limit.
    #[arg(long, value_name = "PER_SECOND", env = "SWITCHBOARD_SESSION_RATE_PER_IP",
          default_value_t = limits::DEFAULT_SESSION_RATE_PER_IP, value_parser = rate)]
    pub session_rate_per_ip: f64,
    /// New Engine.IO sessions one client address may open at once, before
    /// --session-rate-per-ip applies.
    #[arg(long, value_name = "N", env = "SWITCHBOARD_SESSION_BURST_PER_IP",
          default_value_t = limits::DEFAULT_SESSION_BURST_PER_IP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub session_burst_per_ip: u32,
    /// Engine.IO sessions one client address may have open at once, across every channel; over
    /// it, its handshakes get 429 (too_many_sessions_open) until some of its sessions end. As for
    /// --max-connections-per-ip, loopback and a reverse proxy count as one address. 0: no limit.
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_SESSIONS_PER_IP",
          default_value_t = limits::DEFAULT_MAX_SESSIONS_PER_IP)]
    pub max_sessions_per_ip: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            body_timeout: Duration::from_secs_f64(self.body_timeout),
            send_timeout: Duration::from_secs_f64(self.send_timeout),
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_connections_per_ip: self.max_connections_per_ip,
            session_rate_per_ip: self.session_rate_per_ip,
            session_burst_per_ip: self.session_burst_per_ip,
            max_sessions_per_ip: self.max_sessions_per_ip,
        }
    }
}

/// A timeout in seconds: positive, at most a day, fractions allowed.
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value > 0.0 && value <= 86_400.0 => Ok(value),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// A rate per second: 0 (no limit) or positive.
fn rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("{text:?} is not a rate per second (0 or more)")),
    }
}

/// Where the configuration came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(String),
    Embedded,
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    /// The static folder of `[assets] directory`, relative paths taken from the file's folder.
    pub assets: Option<PathBuf>,
}

/// Reads the configuration. A missing file is fine only when `required` is false (the path was not
/// given explicitly); then the embedded default applies, with no static folder.
pub fn load(
    path: &Path,
    environment: Option<&str>,
    required: bool,
    overrides: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Loaded> {
    let mut assets = None;
    let (mut vars, source) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let document: toml::Table =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            assets = assets_directory(&document, environment).map(|directory| {
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                base.join(directory)
            });
            (
                vars_from_document(&document, environment)
                    .with_context(|| format!("{}", path.display()))?,
                Source::File(path.display().to_string()),
            )
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            if environment.is_some() {
                bail!(
                    "--env needs a configuration file, and {} does not exist",
                    path.display()
                );
            }
            let Value::Object(vars) = serde_json::from_str(EMBEDDED_DEFAULT_VARS)? else {
                bail!("embedded default is not a table");
            };
            (vars, Source::Embedded)
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    for key in keys::ALL {
        if let Some(value) = overrides(key) {
            // CHANNELS is JSON; the others are plain strings that `Config` parses itself.
            let value = match *key {
                keys::CHANNELS => serde_json::from_str(&value)
                    .with_context(|| format!("environment variable {key} is not valid JSON"))?,
                _ => Value::String(value),
            };
            vars.insert((*key).to_string(), value);
        }
    }
    let config = Config::from_vars(&vars)?;
    Ok(Loaded {
        config,
        source,
        assets,
    })
}

/// `[assets] directory`, or `[env.<environment>.assets] directory`, which Wrangler lets an
/// environment override.
fn assets_directory(document: &toml::Table, environment: Option<&str>) -> Option<String> {
    let directory = |table: Option<&toml::Value>| {
        table?
            .get("assets")?
            .get("directory")?
            .as_str()
            .map(str::to_string)
    };
    let top = document
        .get("assets")
        .and_then(|assets| assets.get("directory"));
    environment
        .and_then(|name| directory(document.get("env").and_then(|envs| envs.get(name))))
        .or_else(|| top.and_then(|value| value.as_str()).map(str::to_string))
}

/// The `[vars]` table of a wrangler.toml, or `[env.<environment>.vars]`, as JSON.
pub fn vars_from_toml(text: &str, environment: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    vars_from_document(&toml::from_str(text)?, environment)
}

fn vars_from_document(
    document: &toml::Table,
    environment: Option<&str>,
) -> anyhow::Result<Map<String, Value>> {
    let vars = match environment {
        None => document.get("vars"),
        Some(name) => document
            .get("env")
            .and_then(|envs| envs.get(name))
            .with_context(|| format!("no [env.{name}] section"))?
            .get("vars"),
    };
    let Some(vars) = vars else {
        bail!(
            "no [{}vars] table",
            environment.map(|e| format!("env.{e}.")).unwrap_or_default()
        );
    };
    match serde_json::to_value(vars)? {
        Value::Object(map) => Ok(map),
        _ => bail!("[vars] must be a table"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn limits_default_to_the_documented_values_and_parse_from_flags() {
        let defaults = Cli::try_parse_from(["switchboard"])
            .unwrap()
            .limits
            .limits();
        assert_eq!(defaults, Limits::default());
        let set = Cli::try_parse_from([
            "switchboard",
            "--header-timeout",
            "0.5",
            "--idle-timeout",
            "120",
            "--body-timeout",
            "5",
            "--send-timeout",
            "7",
            "--max-connections",
            "5000",
            "--max-connections-per-ip",
            "0",
            "--session-rate-per-ip",
            "0",
            "--session-burst-per-ip",
            "10",
            "--max-sessions-per-ip",
            "0",
        ])
        .unwrap()
        .limits
        .limits();
        assert_eq!(
            set,
            Limits {
                header_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(120),
                body_timeout: Duration::from_secs(5),
                send_timeout: Duration::from_secs(7),
                max_connections: Some(5000),
                max_connections_per_ip: 0,
                session_rate_per_ip: 0.0,
                session_burst_per_ip: 10,
                max_sessions_per_ip: 0,
            }
        );
        for bad in [
            ["--header-timeout", "0"],
            ["--idle-timeout", "-1"],
            ["--body-timeout", "soon"],
            ["--max-connections", "0"],
            ["--session-rate-per-ip", "-2"],
            ["--session-burst-per-ip", "0"],
            ["--max-sessions-per-ip", "-1"],
        ] {
            let args = ["switchboard", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?} accepted");
        }
    }

    const FILE: &str = r#"
name = "x"
[vars]
PING_INTERVAL = 1000
[vars.CHANNELS."/"]
relay = "others"
[env.conformance.vars]
PING_INTERVAL = 300
[env.conformance.vars.CHANNELS."/"]
behaviour = "conformance"
namespaces = ["/", "/custom"]
"#;

    #[test]
    fn reads_top_level_and_environment_vars() {
        let top = Config::from_vars(&vars_from_toml(FILE, None).unwrap()).unwrap();
        assert_eq!(top.policy_for("").unwrap().ping_interval_ms, 1000);
        let conformance =
            Config::from_vars(&vars_from_toml(FILE, Some("conformance")).unwrap()).unwrap();
        let policy = conformance.policy_for("").unwrap();
        assert_eq!(policy.ping_interval_ms, 300);
        assert!(policy.allows_namespace("/custom"));
        assert!(vars_from_toml(FILE, Some("missing")).is_err());
    }

    #[test]
    fn missing_default_file_falls_back_to_embedded_and_env_overrides() {
        let loaded = load(
            Path::new("/nonexistent/wrangler.toml"),
            None,
            false,
            |key| (key == "PING_INTERVAL").then(|| "1234".to_string()),
        )
        .unwrap();
        assert_eq!(loaded.source, Source::Embedded);
        assert_eq!(loaded.assets, None);
        assert_eq!(loaded.config.policy_for("").unwrap().ping_interval_ms, 1234);
        assert!(
            load(Path::new("/nonexistent/wrangler.toml"), None, true, |_| {
                None
            })
            .is_err()
        );
    }

    #[test]
    fn the_static_folder_is_relative_to_the_file_and_environments_may_override_it() {
        let dir = std::env::temp_dir().join(format!("switchboard-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wrangler.toml");
        std::fs::write(
            &file,
            format!("{FILE}\n[assets]\ndirectory = \"public\"\n[env.conformance.assets]\ndirectory = \"other\"\n"),
        )
        .unwrap();
        assert_eq!(
            load(&file, None, true, |_| None).unwrap().assets,
            Some(dir.join("public"))
        );
        assert_eq!(
            load(&file, Some("conformance"), true, |_| None)
                .unwrap()
                .assets,
            Some(dir.join("other"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_config_names_the_key() {
        let err = load(Path::new("/nonexistent"), None, false, |key| {
            (key == "MAX_PAYLOAD").then(|| "lots".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("MAX_PAYLOAD"), "{err}");
    }
}
