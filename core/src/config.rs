//! Channel configuration: which channels exist and how each behaves.
//!
//! Both hosts read the same source, the `[vars]` table of `wrangler.toml` (Cloudflare's convention for
//! plain configuration). The edge gets it from the Worker's environment, the native binary parses the
//! file; each turns it into a JSON object and calls [`Config::from_vars`], so validation and defaults
//! live here once.
//!
//! ```toml
//! [vars]
//! PING_INTERVAL = 25000          # ms between server pings
//! PING_TIMEOUT = 20000           # ms the client has to answer a ping
//! CONNECT_TIMEOUT = 45000        # ms a new session has to join a namespace
//! MAX_PAYLOAD = 1000000          # bytes per message / polling request
//!
//! [vars.CHANNELS."/"]            # the default channel, reached by a plain `io()`
//! relay = "all"
//!
//! [vars.CHANNELS."chats/:id"]    # `:id` matches one path segment
//! relay = "all"                  # all | others | none
//! namespaces = ["/"]
//! client_rooms = true
//!
//! [vars.CHANNELS."shop/:id".handlers."create product"]   # answered by the app backend
//! schema = { type = "object", properties = { name = { type = "string" } } }
//! ```
//!
//! A channel whose name matches no pattern does not exist: hosts refuse it before creating any state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Channel rules, most specific first, so the first match wins.
    rules: Vec<ChannelRule>,
    /// Policy of the raw Engine.IO echo endpoint at `/engine.io/`, when enabled.
    engine_echo: Option<Arc<ChannelPolicy>>,
    /// Test-only endpoints under `/__debug/` (reset a channel's memory, count wake-ups).
    debug_endpoints: bool,
}

/// One `CHANNELS` entry: a pattern and the policy of every channel it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRule {
    pub pattern: ChannelPattern,
    pub policy: Arc<ChannelPolicy>,
}

/// What a channel does, fully resolved (defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    pub behaviour: BehaviourKind,
    pub relay: RelayMode,
    /// Namespaces clients may connect to; always contains at least one.
    pub namespaces: Vec<String>,
    /// Whether clients may join and leave rooms with the reserved `switchboard:join` / `switchboard:leave`
    /// events.
    pub client_rooms: bool,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Largest accepted WebSocket message or polling request body, in bytes.
    pub max_payload: u64,
    /// Browser origins allowed to connect (`*` allows any). Requests without an `Origin` header
    /// (servers, native apps) are not browsers and are not restricted.
    pub allowed_origins: Vec<String>,
    /// Who may connect: anyone, or holders of a token signed with the JWT secret.
    pub auth: AuthMode,
    /// Private channels: pattern parameter → token claim that must equal it (`user_id = "sub"`).
    pub bind: BTreeMap<String, String>,
    /// Most sockets (namespace connections) the channel admits at once.
    pub max_sockets: Option<u64>,
    /// Most Engine.IO sessions that have not yet joined a namespace the channel holds at once;
    /// further handshakes get 503 until some connect or time out.
    pub max_pending_sessions: u64,
    /// Private channels: the furthest in the future a token's `exp` may be, in seconds. A token
    /// that lives longer is refused, so a leaked token cannot open the channel for years.
    pub max_token_lifetime_s: u64,
    /// Most client events one socket may send per second (a second's worth may come at once);
    /// the excess is refused, and a socket that goes on sending is disconnected.
    pub events_per_second: u64,
    /// The HS256 key of private channels (`JWT_SECRET`), set by the host from its secrets.
    pub jwt_secret: Option<Secret>,
    /// The pattern this policy was declared for (binds the channel's parameters).
    pub pattern: Option<ChannelPattern>,
    /// When set, only client events with these names are relayed; the others are refused (with
    /// an error acknowledgement), so that only the server speaks them.
    pub relay_events: Option<Vec<String>>,
    /// Client events answered by the app backend, by event name.
    pub handlers: BTreeMap<String, Arc<EventHandler>>,
    /// Where handler calls, the connect hook and webhooks go.
    pub backend: Option<Arc<Backend>>,
    /// Lifecycle events posted to the backend's webhook.
    pub webhooks: WebhookEvents,
    /// Client events also posted to the webhook, without waiting for an answer.
    pub webhook_client_events: Vec<String>,
    /// Edge only: the Workers runtime answers client pongs with a noop on the object's behalf, so
    /// heartbeats never wake a hibernating Durable Object. Clients see one extra noop packet per
    /// heartbeat, which Engine.IO clients ignore. Off, the object reads pongs itself (what the
    /// protocol test suites expect). The native server always reads them itself.
    pub pong_auto_response: bool,
    /// Connection-state recovery: a client that comes back within the window keeps its socket id
    /// and rooms and gets the events it missed. Off unless configured.
    pub recovery: Option<RecoveryPolicy>,
    /// Presence: who is in the channel, as users rather than sockets. Off unless configured.
    pub presence: Option<PresencePolicy>,
}

/// How a channel tracks who is in it (`presence` in a channel's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresencePolicy {
    /// Most members (users, and anonymous sockets) at once; a socket that would add one more is
    /// refused at CONNECT.
    pub max_members: usize,
    /// Largest member info (a token's `info` claim, or the connect hook's `user.info`), as JSON.
    pub max_info_bytes: usize,
    /// Changes within this window go out as one `switchboard:presence` event (100 ms by default;
    /// 0: each at once).
    pub coalesce_ms: u64,
    /// Most members one `switchboard:members` answer (or API page) lists.
    pub page_size: usize,
    /// On a channel with recovery, how long a socket whose transport dropped stays a member:
    /// coming back within it makes no leave and no join.
    pub leave_grace_ms: u64,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        Self {
            max_members: DEFAULT_PRESENCE_MEMBERS,
            max_info_bytes: DEFAULT_PRESENCE_INFO_BYTES,
            coalesce_ms: DEFAULT_PRESENCE_COALESCE_MS,
            page_size: DEFAULT_PRESENCE_PAGE,
            leave_grace_ms: DEFAULT_PRESENCE_LEAVE_GRACE_MS,
        }
    }
}

pub const DEFAULT_PRESENCE_MEMBERS: usize = 10_000;
pub const DEFAULT_PRESENCE_INFO_BYTES: usize = 1_024;
pub const DEFAULT_PRESENCE_PAGE: usize = 100;
/// Changes within 100 ms go out together: a burst of joins costs each member a few events, not
/// one per join (n²/2 messages for n sockets joining at once).
pub const DEFAULT_PRESENCE_COALESCE_MS: u64 = 100;
/// A socket.io client retries after 0.5 to 1.5 s at first; five seconds covers a blip.
pub const DEFAULT_PRESENCE_LEAVE_GRACE_MS: u64 = 5_000;
const MAX_PRESENCE_MEMBERS: u64 = 1_000_000;
const MAX_PRESENCE_INFO_BYTES: u64 = 64 * 1024;
const MAX_PRESENCE_PAGE: u64 = 1_000;
const MAX_PRESENCE_COALESCE_MS: u64 = 60_000;

/// A `presence` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceSpec {
    max_members: Option<Value>,
    max_info_bytes: Option<Value>,
    coalesce: Option<Value>,
    page_size: Option<Value>,
    leave_grace: Option<Value>,
}

fn resolve_presence(
    value: Option<&Value>,
    key: &str,
) -> Result<Option<PresencePolicy>, ConfigError> {
    let spec: PresenceSpec = match value {
        None | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => PresenceSpec::default(),
        // The table itself as the deserializer: what `from_value` does with an object, without
        // the array form of a struct that it also accepts (never reached here).
        Some(Value::Object(table)) => PresenceSpec::deserialize(table.clone())
            .map_err(|err| ConfigError::new(key, err.to_string()))?,
        Some(_) => {
            return Err(ConfigError::new(
                key,
                "expected true, false, or a table (max_members, max_info_bytes, coalesce, page_size, leave_grace)",
            ));
        }
    };
    let bounded = |value: Option<&Value>,
                   name: &str,
                   min: u64,
                   max: u64|
     -> Result<Option<u64>, ConfigError> {
        let field = format!("{key}.{name}");
        let number = optional_whole_number(value, &field)?;
        match number {
            Some(n) if n < min || n > max => Err(ConfigError::new(
                field,
                format!("must be from {min} to {max}"),
            )),
            _ => Ok(number),
        }
    };
    let defaults = PresencePolicy::default();
    Ok(Some(PresencePolicy {
        max_members: bounded(
            spec.max_members.as_ref(),
            "max_members",
            1,
            MAX_PRESENCE_MEMBERS,
        )?
        .map_or(defaults.max_members, |n| n as usize),
        max_info_bytes: bounded(
            spec.max_info_bytes.as_ref(),
            "max_info_bytes",
            0,
            MAX_PRESENCE_INFO_BYTES,
        )?
        .map_or(defaults.max_info_bytes, |n| n as usize),
        coalesce_ms: bounded(
            spec.coalesce.as_ref(),
            "coalesce",
            0,
            MAX_PRESENCE_COALESCE_MS,
        )?
        .unwrap_or(defaults.coalesce_ms),
        page_size: bounded(spec.page_size.as_ref(), "page_size", 1, MAX_PRESENCE_PAGE)?
            .map_or(defaults.page_size, |n| n as usize),
        leave_grace_ms: bounded(spec.leave_grace.as_ref(), "leave_grace", 0, MAX_MILLIS)?
            .unwrap_or(defaults.leave_grace_ms),
    }))
}

/// How a channel keeps what reconnecting clients need (`recovery` in a channel's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// How long a disconnected socket's state is kept (socket.io's `maxDisconnectionDuration`).
    pub window_ms: u64,
    /// Most events the channel's history holds; the oldest go first.
    pub max_events: usize,
    /// Most bytes (encoded packets and attachments) the channel's history holds.
    pub max_bytes: usize,
    /// A recovered socket skips the connect hook and is not asked for a token again, as long as
    /// the token it connected with has not expired (socket.io's `skipMiddlewares`).
    pub skip_middlewares: bool,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_RECOVERY_WINDOW_MS,
            max_events: DEFAULT_HISTORY_EVENTS,
            max_bytes: DEFAULT_HISTORY_BYTES,
            skip_middlewares: false,
        }
    }
}

/// socket.io's default `maxDisconnectionDuration`: two minutes.
pub const DEFAULT_RECOVERY_WINDOW_MS: u64 = 2 * 60 * 1000;
pub const DEFAULT_HISTORY_EVENTS: usize = 1_000;
pub const DEFAULT_HISTORY_BYTES: usize = 1_000_000;
/// Upper bounds of the history a channel may be configured to keep in memory.
const MAX_HISTORY_EVENTS: u64 = 100_000;
const MAX_HISTORY_BYTES: u64 = 64 * 1024 * 1024;

/// A `recovery` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverySpec {
    window: Option<Value>,
    history_events: Option<Value>,
    history_bytes: Option<Value>,
    skip_middlewares: Option<bool>,
}

fn resolve_recovery(
    value: Option<&Value>,
    key: &str,
) -> Result<Option<RecoveryPolicy>, ConfigError> {
    let spec: RecoverySpec = match value {
        None | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => RecoverySpec::default(),
        // As for presence: the table itself as the deserializer.
        Some(Value::Object(table)) => RecoverySpec::deserialize(table.clone())
            .map_err(|err| ConfigError::new(key, err.to_string()))?,
        Some(_) => {
            return Err(ConfigError::new(
                key,
                "expected true, false, or a table (window, history_events, history_bytes, skip_middlewares)",
            ));
        }
    };
    let bounded = |value: Option<&Value>,
                   name: &str,
                   max: u64|
     -> Result<Option<u64>, ConfigError> {
        let field = format!("{key}.{name}");
        let number = optional_whole_number(value, &field)?;
        match number {
            Some(0) => Err(ConfigError::new(field, "must be greater than zero")),
            Some(n) if n > max => Err(ConfigError::new(field, format!("must be at most {max}"))),
            _ => Ok(number),
        }
    };
    let defaults = RecoveryPolicy::default();
    Ok(Some(RecoveryPolicy {
        window_ms: bounded(spec.window.as_ref(), "window", MAX_MILLIS)?
            .unwrap_or(defaults.window_ms),
        max_events: bounded(
            spec.history_events.as_ref(),
            "history_events",
            MAX_HISTORY_EVENTS,
        )?
        .map_or(defaults.max_events, |n| n as usize),
        max_bytes: bounded(
            spec.history_bytes.as_ref(),
            "history_bytes",
            MAX_HISTORY_BYTES,
        )?
        .map_or(defaults.max_bytes, |n| n as usize),
        skip_middlewares: spec.skip_middlewares.unwrap_or(false),
    }))
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        let defaults = Defaults::default();
        Self {
            behaviour: BehaviourKind::Relay,
            relay: RelayMode::All,
            namespaces: vec!["/".into()],
            client_rooms: false,
            ping_interval_ms: defaults.ping_interval_ms,
            ping_timeout_ms: defaults.ping_timeout_ms,
            connect_timeout_ms: defaults.connect_timeout_ms,
            max_payload: defaults.max_payload,
            allowed_origins: vec!["*".into()],
            auth: AuthMode::Public,
            bind: BTreeMap::new(),
            max_sockets: None,
            max_pending_sessions: DEFAULT_MAX_PENDING_SESSIONS,
            max_token_lifetime_s: DEFAULT_MAX_TOKEN_LIFETIME_S,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            jwt_secret: None,
            pattern: None,
            pong_auto_response: true,
            relay_events: None,
            handlers: BTreeMap::new(),
            backend: None,
            webhooks: WebhookEvents::default(),
            webhook_client_events: Vec::new(),
            recovery: None,
            presence: None,
        }
    }
}

/// Where a channel's backend lives and how long it may take. Handler calls go to `<url>/events`,
/// the connect hook to `<url>/connect`, lifecycle webhooks to `<url>/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub url: String,
    pub timeout_ms: u64,
    /// The HMAC key every call is signed with (`WEBHOOK_SECRET`), set by the host from its
    /// secrets; calls are not made without it.
    pub secret: Option<Secret>,
}

impl Backend {
    /// The URL of one of the backend's endpoints (`events`, `connect`, `webhooks`).
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.url.trim_end_matches('/'))
    }
}

/// A client event the backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHandler {
    /// Checked against the event's first argument before anything reaches the backend.
    pub schema: Option<PayloadSchema>,
    /// How the backend's answer becomes the client's acknowledgement.
    pub ack: AckShape,
    /// How long the backend may take.
    pub timeout_ms: u64,
}

/// How a handler's answer becomes the client's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckShape {
    /// FoalTS's: `{ status: "ok", data }` or `{ status: "error", error }`.
    #[default]
    Foal,
    /// The answer's `ack` array, as the acknowledgement's arguments.
    Raw,
}

/// A compiled JSON Schema (draft 2020-12 unless the schema's `$schema` names draft-07 or another).
#[derive(Clone)]
pub struct PayloadSchema {
    source: Value,
    compiled: Arc<(boon::Schemas, boon::SchemaIndex)>,
}

impl PayloadSchema {
    pub fn compile(source: &Value) -> Result<PayloadSchema, String> {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        let location = "urn:switchboard:handler-schema";
        compiler
            .add_resource(location, source.clone())
            .map_err(|err| format!("{err:#}"))?;
        let index = compiler
            .compile(location, &mut schemas)
            .map_err(|err| format!("{err:#}"))?;
        Ok(PayloadSchema {
            source: source.clone(),
            compiled: Arc::new((schemas, index)),
        })
    }

    /// The value's errors, in the shape AJV (and so FoalTS) reports them: each with the
    /// instance's path, the schema's path, the keyword and a message. Empty when it is valid.
    pub fn errors(&self, value: &Value) -> Vec<Value> {
        let (schemas, index) = &*self.compiled;
        let Err(error) = schemas.validate(value, *index) else {
            return Vec::new();
        };
        let basic = serde_json::to_value(error.basic_output()).unwrap_or_default();
        let mut errors = Vec::new();
        for unit in basic["errors"].as_array().into_iter().flatten() {
            // Leaves only: a unit whose error is a message, not a wrapper of its causes.
            let Some(message) = unit["error"].as_str() else {
                continue;
            };
            let mut keyword_location = unit["keywordLocation"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // boon 0.6 names the `additionalProperties` keyword `additionalProperty` in its
            // locations; clients (and AJV, which FoalTS uses) know it by its real name.
            if let Some(parent) = keyword_location.strip_suffix("/additionalProperty") {
                keyword_location = format!("{parent}/additionalProperties");
            }
            let keyword = keyword_location.rsplit('/').next().unwrap_or_default();
            errors.push(serde_json::json!({
                "instancePath": unit["instanceLocation"].as_str().unwrap_or_default(),
                "schemaPath": format!("#{keyword_location}"),
                "keyword": keyword,
                "message": message,
            }));
        }
        errors
    }
}

impl PartialEq for PayloadSchema {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PayloadSchema {}

impl std::fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PayloadSchema").field(&self.source).finish()
    }
}

/// The lifecycle events a channel posts to its backend's webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookEvents {
    /// The channel's first socket connected.
    pub channel_occupied: bool,
    /// The channel's last socket left.
    pub channel_vacated: bool,
    pub socket_connected: bool,
    pub socket_disconnected: bool,
    /// A user (or anonymous socket) became a member, on a channel with presence.
    pub member_added: bool,
    /// A member's last socket left.
    pub member_removed: bool,
}

impl WebhookEvents {
    pub const NAMES: [&'static str; 6] = [
        "channel_occupied",
        "channel_vacated",
        "socket_connected",
        "socket_disconnected",
        "member_added",
        "member_removed",
    ];

    pub fn any(&self) -> bool {
        self.channel_occupied
            || self.channel_vacated
            || self.socket_connected
            || self.socket_disconnected
            || self.member_added
            || self.member_removed
    }
}

/// Who may connect to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone who can reach the server.
    #[default]
    Public,
    /// Only clients presenting a JWT (HS256) in the CONNECT `auth` payload (`{ token }`) whose
    /// `channels` claim names the channel.
    Private,
    /// The backend's connect hook decides each CONNECT.
    Backend,
    /// A valid token first, then the connect hook, which sees the token's claims.
    PrivateAndBackend,
}

impl AuthMode {
    /// A token is checked.
    pub fn needs_token(self) -> bool {
        matches!(self, AuthMode::Private | AuthMode::PrivateAndBackend)
    }

    /// The backend's connect hook is asked.
    pub fn asks_backend(self) -> bool {
        matches!(self, AuthMode::Backend | AuthMode::PrivateAndBackend)
    }

    fn parse(value: &Value) -> Result<AuthMode, String> {
        let names: Vec<&str> = match value {
            Value::String(name) => vec![name.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let (mut private, mut backend) = (false, false);
        for name in &names {
            match *name {
                "public" if names.len() == 1 => {}
                "private" => private = true,
                "backend" => backend = true,
                other => {
                    return Err(format!(
                        "{other:?} is not an auth mode: use \"public\", \"private\", \"backend\" or [\"private\", \"backend\"]"
                    ));
                }
            }
        }
        if names.is_empty() {
            return Err(
                "expected \"public\", \"private\", \"backend\" or [\"private\", \"backend\"]"
                    .into(),
            );
        }
        Ok(match (private, backend) {
            (false, false) => AuthMode::Public,
            (true, false) => AuthMode::Private,
            (false, true) => AuthMode::Backend,
            (true, true) => AuthMode::PrivateAndBackend,
        })
    }
}

/// A secret value: compared normally, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl ChannelPolicy {
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|allowed| allowed == namespace)
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == "*") || self.lists_origin(origin)
    }

    /// Whether `origin` is named in `allowed_origins` (not merely let in by `"*"`).
    pub fn lists_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| allowed != "*" && allowed.eq_ignore_ascii_case(origin))
    }
}

/// Which [`crate::behaviour::Behaviour`] drives a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BehaviourKind {
    /// The product: client events are relayed according to [`RelayMode`].
    Relay,
    /// The Socket.IO v5 protocol test server (auth echo, `message` → `message-back`, acks).
    Conformance,
    /// The Engine.IO v4 protocol test server: every message is echoed back, no Socket.IO layer.
    EngineEcho,
}

/// Where a client's event goes in a relay channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Every socket in the namespace, sender included (the chat tutorial's `io.emit`).
    All,
    /// Every socket in the namespace except the sender (`socket.broadcast.emit`).
    Others,
    /// Nobody: clients only receive what the server emits.
    None,
}

/// Engine-wide defaults that each channel pattern may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Defaults {
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    connect_timeout_ms: u64,
    max_payload: u64,
    pong_auto_response: bool,
}

impl Default for Defaults {
    // The values socket.io ships with, so clients tuned for it behave the same here.
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 45_000,
            max_payload: 1_000_000,
            pong_auto_response: true,
        }
    }
}

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The variable names this crate reads from `[vars]`.
pub mod keys {
    pub const PING_INTERVAL: &str = "PING_INTERVAL";
    pub const PING_TIMEOUT: &str = "PING_TIMEOUT";
    pub const CONNECT_TIMEOUT: &str = "CONNECT_TIMEOUT";
    pub const MAX_PAYLOAD: &str = "MAX_PAYLOAD";
    pub const PONG_AUTO_RESPONSE: &str = "PONG_AUTO_RESPONSE";
    pub const BACKEND_URL: &str = "BACKEND_URL";
    pub const BACKEND_TIMEOUT: &str = "BACKEND_TIMEOUT";
    pub const ENGINE_IO_ECHO: &str = "ENGINE_IO_ECHO";
    pub const DEBUG_ENDPOINTS: &str = "DEBUG_ENDPOINTS";
    pub const CHANNELS: &str = "CHANNELS";
    /// Every key above, for hosts that must look variables up one by one (the Worker environment
    /// cannot be enumerated).
    pub const ALL: &[&str] = &[
        PING_INTERVAL,
        PING_TIMEOUT,
        CONNECT_TIMEOUT,
        MAX_PAYLOAD,
        PONG_AUTO_RESPONSE,
        BACKEND_URL,
        BACKEND_TIMEOUT,
        ENGINE_IO_ECHO,
        DEBUG_ENDPOINTS,
        CHANNELS,
    ];
}

/// A `CHANNELS` entry as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelSpec {
    behaviour: Option<BehaviourKind>,
    relay: Option<RelayMode>,
    namespaces: Option<Vec<String>>,
    client_rooms: Option<bool>,
    auth: Option<Value>,
    bind: Option<BTreeMap<String, String>>,
    max_sockets: Option<Value>,
    events_per_second: Option<Value>,
    max_pending_sessions: Option<Value>,
    max_token_lifetime: Option<Value>,
    ping_interval: Option<Value>,
    ping_timeout: Option<Value>,
    connect_timeout: Option<Value>,
    max_payload: Option<Value>,
    allowed_origins: Option<Vec<String>>,
    pong_auto_response: Option<bool>,
    relay_events: Option<Vec<String>>,
    /// Each entry is read as a `HandlerSpec` when the policy is resolved: one deserializer
    /// for the table less in the Worker's wasm.
    handlers: Option<Map<String, Value>>,
    backend_url: Option<String>,
    webhooks: Option<Value>,
    webhook_events: Option<Vec<String>>,
    recovery: Option<Value>,
    presence: Option<Value>,
}

/// A `handlers` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerSpec {
    schema: Option<Value>,
    ack: Option<AckShape>,
    timeout: Option<Value>,
}

/// The configuration used when no file is present: the plain Socket.IO chat tutorial works against it
/// (`io()` on the default channel, `chat message` relayed to everyone), and `chats/:id` channels
/// work the same way.
pub const EMBEDDED_DEFAULT_VARS: &str = r#"{
    "CHANNELS": {
        "/": { "relay": "all" },
        "chats/:id": { "relay": "all", "client_rooms": true, "recovery": true, "presence": true }
    }
}"#;

impl Config {
    /// Reads the `[vars]` table (as JSON). Unknown variables are ignored: the Worker environment holds
    /// secrets and bindings too.
    pub fn from_vars(vars: &Map<String, Value>) -> Result<Config, ConfigError> {
        let defaults = Defaults {
            ping_interval_ms: optional_whole_number(
                vars.get(keys::PING_INTERVAL),
                keys::PING_INTERVAL,
            )?
            .unwrap_or(Defaults::default().ping_interval_ms),
            ping_timeout_ms: optional_whole_number(
                vars.get(keys::PING_TIMEOUT),
                keys::PING_TIMEOUT,
            )?
            .unwrap_or(Defaults::default().ping_timeout_ms),
            connect_timeout_ms: optional_whole_number(
                vars.get(keys::CONNECT_TIMEOUT),
                keys::CONNECT_TIMEOUT,
            )?
            .unwrap_or(Defaults::default().connect_timeout_ms),
            max_payload: optional_whole_number(vars.get(keys::MAX_PAYLOAD), keys::MAX_PAYLOAD)?
                .unwrap_or(Defaults::default().max_payload),
            pong_auto_response: match vars.get(keys::PONG_AUTO_RESPONSE) {
                None => Defaults::default().pong_auto_response,
                value => optional_bool(value, keys::PONG_AUTO_RESPONSE)?,
            },
        };
        validate_engine_numbers(&defaults, "")?;
        let backend = BackendDefaults {
            url: match vars.get(keys::BACKEND_URL) {
                None => None,
                Some(Value::String(url)) if !url.is_empty() => Some(url.clone()),
                Some(_) => {
                    return Err(ConfigError::new(
                        keys::BACKEND_URL,
                        "expected the backend's base URL, e.g. \"https://app.example.com/switchboard\"",
                    ));
                }
            },
            timeout_ms: optional_whole_number(
                vars.get(keys::BACKEND_TIMEOUT),
                keys::BACKEND_TIMEOUT,
            )?
            .unwrap_or(DEFAULT_BACKEND_TIMEOUT_MS),
        };
        if backend.timeout_ms == 0 || backend.timeout_ms > MAX_BACKEND_TIMEOUT_MS {
            return Err(ConfigError::new(
                keys::BACKEND_TIMEOUT,
                format!("must be from 1 to {MAX_BACKEND_TIMEOUT_MS}"),
            ));
        }

        let channels = match vars.get(keys::CHANNELS) {
            None => {
                return Err(ConfigError::new(
                    keys::CHANNELS,
                    "missing: declare at least one channel pattern, e.g. [vars.CHANNELS.\"chats/:id\"]",
                ));
            }
            Some(Value::String(text)) => {
                serde_json::from_slice::<Value>(text.as_bytes()).map_err(|err| {
                    ConfigError::new(keys::CHANNELS, format!("not valid JSON: {err}"))
                })?
            }
            Some(other) => other.clone(),
        };
        let Value::Object(channels) = channels else {
            return Err(ConfigError::new(
                keys::CHANNELS,
                "expected a table of channel patterns",
            ));
        };
        if channels.is_empty() {
            return Err(ConfigError::new(
                keys::CHANNELS,
                "declare at least one channel pattern",
            ));
        }

        let mut rules = Vec::with_capacity(channels.len());
        for (pattern_text, spec) in &channels {
            let key = format!("{}.\"{}\"", keys::CHANNELS, pattern_text);
            let pattern = ChannelPattern::parse(pattern_text)
                .map_err(|problem| ConfigError::new(&key, problem))?;
            let spec: ChannelSpec = serde_json::from_value(spec.clone())
                .map_err(|err| ConfigError::new(&key, err.to_string()))?;
            let policy = resolve_policy(spec, &defaults, &backend, &key, &pattern)?;
            if policy.behaviour == BehaviourKind::EngineEcho {
                return Err(ConfigError::new(
                    format!("{key}.behaviour"),
                    "engine-echo is not a channel behaviour; set ENGINE_IO_ECHO = true instead",
                ));
            }
            rules.push(ChannelRule {
                pattern,
                policy: Arc::new(policy),
            });
        }
        // Most specific first: a literal segment beats a parameter at the first place they differ.
        crate::sort::sort_by_key(&mut rules, |rule| {
            std::cmp::Reverse(rule.pattern.specificity())
        });

        let debug_endpoints =
            optional_bool(vars.get(keys::DEBUG_ENDPOINTS), keys::DEBUG_ENDPOINTS)?;
        let engine_echo = optional_bool(vars.get(keys::ENGINE_IO_ECHO), keys::ENGINE_IO_ECHO)?
            .then(|| {
                Arc::new(ChannelPolicy {
                    behaviour: BehaviourKind::EngineEcho,
                    relay: RelayMode::None,
                    ping_interval_ms: defaults.ping_interval_ms,
                    ping_timeout_ms: defaults.ping_timeout_ms,
                    connect_timeout_ms: defaults.connect_timeout_ms,
                    max_payload: defaults.max_payload,
                    pong_auto_response: defaults.pong_auto_response,
                    ..ChannelPolicy::default()
                })
            });

        Ok(Config {
            rules,
            engine_echo,
            debug_endpoints,
        })
    }

    /// Parses a JSON object of vars (the form of [`EMBEDDED_DEFAULT_VARS`]).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_slice(text.as_bytes())
            .map_err(|err| ConfigError::new("vars", format!("not valid JSON: {err}")))?;
        match value {
            Value::Object(vars) => Config::from_vars(&vars),
            _ => Err(ConfigError::new("vars", "expected a table")),
        }
    }

    /// The built-in configuration used when no file is present.
    pub fn embedded_default() -> Config {
        // The embedded text is a constant checked by a unit test, so this cannot fail at run time;
        // falling back keeps the function total anyway.
        Config::from_json(EMBEDDED_DEFAULT_VARS).unwrap_or_else(|_| Config {
            rules: Vec::new(),
            engine_echo: None,
            debug_endpoints: false,
        })
    }

    /// The policy of `channel` (a validated channel name, `""` for the default channel), or `None` when
    /// no pattern matches it.
    pub fn policy_for(&self, channel: &str) -> Option<&Arc<ChannelPolicy>> {
        self.rules
            .iter()
            .find(|rule| rule.pattern.matches(channel))
            .map(|rule| &rule.policy)
    }

    /// The policy of the raw Engine.IO echo endpoint, if enabled.
    pub fn engine_echo(&self) -> Option<&Arc<ChannelPolicy>> {
        self.engine_echo.as_ref()
    }

    /// Gives every private channel the key that signs its tokens (`JWT_SECRET`, a secret the host
    /// reads from its environment).
    pub fn with_jwt_secret(mut self, secret: Option<&str>) -> Config {
        let secret = secret.filter(|s| !s.is_empty()).map(Secret::new);
        for rule in &mut self.rules {
            if rule.policy.auth.needs_token() {
                let mut policy = (*rule.policy).clone();
                policy.jwt_secret = secret.clone();
                rule.policy = Arc::new(policy);
            }
        }
        self
    }

    /// Gives every channel with a backend the key its calls are signed with (`WEBHOOK_SECRET`, a
    /// secret the host reads from its environment).
    pub fn with_webhook_secret(mut self, secret: Option<&str>) -> Config {
        let secret = secret.filter(|s| !s.is_empty()).map(Secret::new);
        for rule in &mut self.rules {
            if let Some(backend) = &rule.policy.backend {
                let mut policy = (*rule.policy).clone();
                policy.backend = Some(Arc::new(Backend {
                    secret: secret.clone(),
                    ..(**backend).clone()
                }));
                rule.policy = Arc::new(policy);
            }
        }
        self
    }

    /// Whether any channel is private (then `JWT_SECRET` is needed).
    pub fn has_private_channels(&self) -> bool {
        self.rules.iter().any(|rule| rule.policy.auth.needs_token())
    }

    /// Whether any channel calls a backend (then `WEBHOOK_SECRET` is needed).
    pub fn has_backend_channels(&self) -> bool {
        self.rules.iter().any(|rule| rule.policy.backend.is_some())
    }

    /// Whether the test-only `/__debug/` endpoints are enabled (`DEBUG_ENDPOINTS = true`).
    pub fn debug_endpoints(&self) -> bool {
        self.debug_endpoints
    }

    pub fn rules(&self) -> &[ChannelRule] {
        &self.rules
    }
}

/// The backend settings every pattern starts from (`BACKEND_URL`, `BACKEND_TIMEOUT`).
struct BackendDefaults {
    url: Option<String>,
    timeout_ms: u64,
}

/// How long a backend call may take unless configured otherwise.
pub const DEFAULT_BACKEND_TIMEOUT_MS: u64 = 5_000;

/// Client events one socket may send per second unless its pattern says otherwise: far above
/// what a person types or a page sends, far below what a flood needs.
pub const DEFAULT_EVENTS_PER_SECOND: u64 = 100;

/// Sessions waiting for their first namespace CONNECT that a channel holds at once unless its
/// pattern says otherwise: room for a crowd arriving together, not for a client opening
/// sessions in a loop.
pub const DEFAULT_MAX_PENDING_SESSIONS: u64 = 1_000;

/// How far in the future a private channel accepts a token's `exp` unless its pattern says
/// otherwise (`max_token_lifetime`, seconds): one day.
pub const DEFAULT_MAX_TOKEN_LIFETIME_S: u64 = 24 * 60 * 60;

fn resolve_policy(
    spec: ChannelSpec,
    defaults: &Defaults,
    backend: &BackendDefaults,
    key: &str,
    pattern: &ChannelPattern,
) -> Result<ChannelPolicy, ConfigError> {
    let field = |name: &str| format!("{key}.{name}");
    let namespaces = spec.namespaces.unwrap_or_else(|| vec!["/".into()]);
    if namespaces.is_empty() {
        return Err(ConfigError::new(
            field("namespaces"),
            "declare at least one namespace",
        ));
    }
    for namespace in &namespaces {
        if !namespace.starts_with('/') || namespace.contains(',') {
            return Err(ConfigError::new(
                field("namespaces"),
                format!("{namespace:?} must start with '/' and contain no ','"),
            ));
        }
    }
    let engine = Defaults {
        ping_interval_ms: optional_whole_number(
            spec.ping_interval.as_ref(),
            &field("ping_interval"),
        )?
        .unwrap_or(defaults.ping_interval_ms),
        ping_timeout_ms: optional_whole_number(spec.ping_timeout.as_ref(), &field("ping_timeout"))?
            .unwrap_or(defaults.ping_timeout_ms),
        connect_timeout_ms: optional_whole_number(
            spec.connect_timeout.as_ref(),
            &field("connect_timeout"),
        )?
        .unwrap_or(defaults.connect_timeout_ms),
        max_payload: optional_whole_number(spec.max_payload.as_ref(), &field("max_payload"))?
            .unwrap_or(defaults.max_payload),
        pong_auto_response: spec
            .pong_auto_response
            .unwrap_or(defaults.pong_auto_response),
    };
    validate_engine_numbers(&engine, &format!("{key}."))?;
    let allowed_origins = spec.allowed_origins.unwrap_or_else(|| vec!["*".into()]);
    if allowed_origins.is_empty() {
        return Err(ConfigError::new(
            field("allowed_origins"),
            "list at least one origin, or \"*\"",
        ));
    }
    let auth = match &spec.auth {
        None => AuthMode::Public,
        Some(value) => {
            AuthMode::parse(value).map_err(|problem| ConfigError::new(field("auth"), problem))?
        }
    };
    let bind = spec.bind.unwrap_or_default();
    for (param, claim) in &bind {
        if !auth.needs_token() {
            return Err(ConfigError::new(
                field("bind"),
                "binds parameters to token claims, so it needs auth = \"private\"",
            ));
        }
        if !pattern.has_param(param) {
            return Err(ConfigError::new(
                field("bind"),
                format!("{param:?} is not a parameter of the pattern (write it without ':')"),
            ));
        }
        if claim.is_empty() {
            return Err(ConfigError::new(
                field("bind"),
                format!("{param:?} must name a claim"),
            ));
        }
    }
    let webhooks = resolve_webhooks(spec.webhooks.as_ref(), &field("webhooks"))?;
    let recovery = resolve_recovery(spec.recovery.as_ref(), &field("recovery"))?;
    let presence = resolve_presence(spec.presence.as_ref(), &field("presence"))?;
    let mut handlers = BTreeMap::new();
    for (event, handler) in spec.handlers.unwrap_or_default() {
        // The error `from_value` gave for the whole entry when the table was deserialized with it.
        let handler = HandlerSpec::deserialize(handler)
            .map_err(|err| ConfigError::new(key, err.to_string()))?;
        let handler_key = format!("{key}.handlers.\"{event}\"");
        if event.is_empty()
            || crate::socketio::RESERVED_EVENTS.contains(&event.as_str())
            || event.starts_with("switchboard:")
        {
            return Err(ConfigError::new(
                &handler_key,
                "a reserved event name cannot have a handler",
            ));
        }
        let schema =
            match &handler.schema {
                None => None,
                Some(schema) => Some(PayloadSchema::compile(schema).map_err(|problem| {
                    ConfigError::new(format!("{handler_key}.schema"), problem)
                })?),
            };
        let timeout_ms =
            optional_whole_number(handler.timeout.as_ref(), &format!("{handler_key}.timeout"))?
                .unwrap_or(backend.timeout_ms);
        if timeout_ms == 0 || timeout_ms > MAX_BACKEND_TIMEOUT_MS {
            return Err(ConfigError::new(
                format!("{handler_key}.timeout"),
                format!("must be from 1 to {MAX_BACKEND_TIMEOUT_MS}"),
            ));
        }
        handlers.insert(
            event,
            Arc::new(EventHandler {
                schema,
                ack: handler.ack.unwrap_or_default(),
                timeout_ms,
            }),
        );
    }
    let backend_url = spec.backend_url.or_else(|| backend.url.clone());
    let needs_backend = !handlers.is_empty()
        || auth.asks_backend()
        || webhooks.any()
        || spec
            .webhook_events
            .as_ref()
            .is_some_and(|events| !events.is_empty());
    let backend_of = match backend_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(Arc::new(Backend {
                url,
                timeout_ms: backend.timeout_ms,
                secret: None,
            }))
        }
        Some(url) => {
            return Err(ConfigError::new(
                field("backend_url"),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        None if needs_backend => {
            return Err(ConfigError::new(
                key,
                "handlers, auth = \"backend\" and webhooks call the app backend: set BACKEND_URL (or backend_url here)",
            ));
        }
        None => None,
    };
    let positive = |value: Option<&Value>, name: &str| -> Result<Option<u64>, ConfigError> {
        let number = optional_whole_number(value, &field(name))?;
        if number == Some(0) {
            return Err(ConfigError::new(field(name), "must be greater than zero"));
        }
        if number.is_some_and(|n| n > MAX_RATE) {
            return Err(ConfigError::new(
                field(name),
                format!("must be at most {MAX_RATE}"),
            ));
        }
        Ok(number)
    };
    Ok(ChannelPolicy {
        behaviour: spec.behaviour.unwrap_or(BehaviourKind::Relay),
        relay: spec.relay.unwrap_or(RelayMode::All),
        namespaces,
        client_rooms: spec.client_rooms.unwrap_or(false),
        ping_interval_ms: engine.ping_interval_ms,
        ping_timeout_ms: engine.ping_timeout_ms,
        connect_timeout_ms: engine.connect_timeout_ms,
        max_payload: engine.max_payload,
        allowed_origins,
        auth,
        bind,
        max_sockets: positive(spec.max_sockets.as_ref(), "max_sockets")?,
        max_pending_sessions: positive(spec.max_pending_sessions.as_ref(), "max_pending_sessions")?
            .unwrap_or(DEFAULT_MAX_PENDING_SESSIONS),
        max_token_lifetime_s: optional_whole_number(
            spec.max_token_lifetime.as_ref(),
            &field("max_token_lifetime"),
        )?
        .filter(|seconds| *seconds > 0)
        .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME_S),
        events_per_second: positive(spec.events_per_second.as_ref(), "events_per_second")?
            .unwrap_or(DEFAULT_EVENTS_PER_SECOND),
        jwt_secret: None,
        pattern: Some(pattern.clone()),
        pong_auto_response: engine.pong_auto_response,
        relay_events: spec.relay_events,
        handlers,
        backend: backend_of,
        webhooks,
        webhook_client_events: spec.webhook_events.unwrap_or_default(),
        recovery,
        presence,
    })
}

fn resolve_webhooks(value: Option<&Value>, key: &str) -> Result<WebhookEvents, ConfigError> {
    let mut events = WebhookEvents::default();
    let names: Vec<&str> = match value {
        None | Some(Value::Bool(false)) => return Ok(events),
        Some(Value::Bool(true)) => WebhookEvents::NAMES.to_vec(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(_) => {
            return Err(ConfigError::new(
                key,
                "expected true, or a list of lifecycle events",
            ));
        }
    };
    for name in names {
        match name {
            "channel_occupied" => events.channel_occupied = true,
            "channel_vacated" => events.channel_vacated = true,
            "socket_connected" => events.socket_connected = true,
            "socket_disconnected" => events.socket_disconnected = true,
            "member_added" => events.member_added = true,
            "member_removed" => events.member_removed = true,
            other => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{other:?} is not a lifecycle event; use {}",
                        WebhookEvents::NAMES.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(events)
}

/// Upper bounds that keep every deadline and budget far from overflow.
const MAX_MILLIS: u64 = 24 * 60 * 60 * 1000;
/// Longest a backend call may be given.
pub const MAX_BACKEND_TIMEOUT_MS: u64 = 60_000;
const MAX_PAYLOAD_LIMIT: u64 = 100 * 1024 * 1024;
const MAX_RATE: u64 = 1_000_000;

fn validate_engine_numbers(values: &Defaults, prefix: &str) -> Result<(), ConfigError> {
    let limits = [
        (
            "PING_INTERVAL",
            "ping_interval",
            values.ping_interval_ms,
            MAX_MILLIS,
        ),
        (
            "PING_TIMEOUT",
            "ping_timeout",
            values.ping_timeout_ms,
            MAX_MILLIS,
        ),
        (
            "CONNECT_TIMEOUT",
            "connect_timeout",
            values.connect_timeout_ms,
            MAX_MILLIS,
        ),
        (
            "MAX_PAYLOAD",
            "max_payload",
            values.max_payload,
            MAX_PAYLOAD_LIMIT,
        ),
    ];
    for (global, local, value, max) in limits {
        if value > max {
            let key = if prefix.is_empty() {
                global.to_string()
            } else {
                format!("{prefix}{local}")
            };
            return Err(ConfigError::new(key, format!("must be at most {max}")));
        }
    }
    let checks = [
        ("PING_INTERVAL", "ping_interval", values.ping_interval_ms),
        ("PING_TIMEOUT", "ping_timeout", values.ping_timeout_ms),
        (
            "CONNECT_TIMEOUT",
            "connect_timeout",
            values.connect_timeout_ms,
        ),
        ("MAX_PAYLOAD", "max_payload", values.max_payload),
    ];
    for (global, local, value) in checks {
        if value == 0 {
            let key = if prefix.is_empty() {
                global.to_string()
            } else {
                format!("{prefix}{local}")
            };
            return Err(ConfigError::new(key, "must be greater than zero"));
        }
    }
    Ok(())
}

fn optional_bool(value: Option<&Value>, key: &str) -> Result<bool, ConfigError> {
    match value {
        None | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) => Ok(true),
        Some(Value::String(text)) if text == "false" => Ok(false),
        Some(Value::String(text)) if text == "true" => Ok(true),
        Some(other) => Err(ConfigError::new(
            key,
            format!("expected true or false, got {other}"),
        )),
    }
}

/// A non-negative integer, written as a number or as a string of digits (Worker vars are often strings).
fn optional_whole_number(value: Option<&Value>, key: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(|| {
            ConfigError::new(
                key,
                format!("expected a whole non-negative number, got {number}"),
            )
        }),
        Some(Value::String(text)) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            ConfigError::new(
                key,
                format!("expected a whole non-negative number, got {text:?}"),
            )
        }),
        Some(other) => Err(ConfigError::new(
            key,
            format!("expected a whole non-negative number, got {other}"),
        )),
    }
}

/// A channel pattern such as `chats/:id`; `/` (or the empty string) names the default channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl ChannelPattern {
    pub fn parse(text: &str) -> Result<ChannelPattern, String> {
        if text.is_empty() || text == "/" {
            return Ok(ChannelPattern {
                text: "/".into(),
                segments: Vec::new(),
            });
        }
        let mut segments = Vec::new();
        for segment in text.split('/') {
            if let Some(name) = segment.strip_prefix(':') {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter {segment:?} must be ':' followed by letters, digits or '_'"
                    ));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if is_valid_segment(segment) {
                segments.push(Segment::Literal(segment.to_string()));
            } else {
                return Err(format!(
                    "segment {segment:?} is not allowed: use letters, digits, '-', '_', '.', '~' \
                     or a ':param', separated by single '/'"
                ));
            }
        }
        Ok(ChannelPattern {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, channel: &str) -> bool {
        self.bind(channel).is_some()
    }

    /// Matches `channel` and returns the bound parameters (`chats/:id` on `chats/42` gives `id = 42`).
    pub fn bind(&self, channel: &str) -> Option<BTreeMap<String, String>> {
        if channel.is_empty() {
            return self.segments.is_empty().then(BTreeMap::new);
        }
        let mut params = BTreeMap::new();
        let mut parts = channel.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), part.to_string());
                }
            }
        }
        parts.next().is_none().then_some(params)
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|segment| matches!(segment, Segment::Param(param) if param == name))
    }

    /// Literal segments rank above parameters, position by position.
    fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|segment| matches!(segment, Segment::Literal(_)))
            .collect()
    }
}

/// Longest channel name accepted, in bytes; it also bounds Durable Object names.
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        && segment != "."
        && segment != ".."
}

/// Checks a channel name taken from a URL: `""` (the default channel) or segments of letters, digits,
/// `-`, `_`, `.` and `~`, separated by single slashes.
pub fn validate_channel_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(format!(
            "channel name is longer than {MAX_CHANNEL_NAME_LEN} bytes"
        ));
    }
    if name.split('/').all(is_valid_segment) {
        Ok(())
    } else {
        Err(format!(
            "channel name {name:?} is not valid: use letters, digits, '-', '_', '.' and '~' in \
             segments separated by single '/'"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn vars(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test vars are objects"),
        }
    }

    #[test]
    fn embedded_default_serves_the_chat_tutorial() {
        let config = Config::from_json(EMBEDDED_DEFAULT_VARS).expect("embedded default is valid");
        let default = config.policy_for("").expect("default channel exists");
        assert_eq!(default.relay, RelayMode::All);
        assert_eq!(default.behaviour, BehaviourKind::Relay);
        assert_eq!(default.namespaces, vec!["/".to_string()]);
        assert!(config.policy_for("chats/42").is_some());
        assert!(config.policy_for("nope").is_none());
        assert!(config.engine_echo().is_none());
        assert_eq!(Config::embedded_default(), config);
    }

    #[test]
    fn literal_patterns_win_over_parameters() {
        let config = Config::from_vars(&vars(json!({
            "CHANNELS": {
                "chats/:id": { "relay": "all" },
                "chats/lobby": { "relay": "none" },
            }
        })))
        .unwrap();
        assert_eq!(
            config.policy_for("chats/lobby").unwrap().relay,
            RelayMode::None
        );
        assert_eq!(config.policy_for("chats/7").unwrap().relay, RelayMode::All);
        assert!(config.policy_for("chats/7/extra").is_none());
        assert!(config.policy_for("chats").is_none());
    }

    #[test]
    fn pattern_binds_parameters() {
        let pattern = ChannelPattern::parse("users/:user_id/notifications").unwrap();
        let params = pattern.bind("users/u1/notifications").unwrap();
        assert_eq!(params.get("user_id").map(String::as_str), Some("u1"));
        assert!(pattern.bind("users/u1/other").is_none());
    }

    #[test]
    fn numbers_may_be_strings_and_patterns_override_globals() {
        let config = Config::from_vars(&vars(json!({
            "PING_INTERVAL": "300",
            "PING_TIMEOUT": 200,
            "CHANNELS": { "/": {}, "small/:id": { "max_payload": 1000 } }
        })))
        .unwrap();
        let default = config.policy_for("").unwrap();
        assert_eq!(default.ping_interval_ms, 300);
        assert_eq!(default.ping_timeout_ms, 200);
        assert_eq!(default.max_payload, 1_000_000);
        assert_eq!(config.policy_for("small/1").unwrap().max_payload, 1000);
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let err = Config::from_vars(&vars(json!({
            "CHANNELS": { "chats/:id": { "relay": "everyone" } }
        })))
        .unwrap_err();
        assert_eq!(err.key, "CHANNELS.\"chats/:id\"");
        assert!(err.problem.contains("everyone"), "{}", err.problem);

        let err = Config::from_vars(&vars(json!({
            "CHANNELS": { "chats/:id": { "relya": "all" } }
        })))
        .unwrap_err();
        assert!(err.problem.contains("relya"), "{}", err.problem);

        let err = Config::from_vars(&vars(
            json!({ "PING_INTERVAL": "soon", "CHANNELS": {"/": {}} }),
        ))
        .unwrap_err();
        assert_eq!(err.key, "PING_INTERVAL");

        let err = Config::from_vars(&vars(json!({ "CHANNELS": { "a//b": {} } }))).unwrap_err();
        assert!(err.problem.contains("segment"), "{}", err.problem);

        let err = Config::from_vars(&vars(json!({}))).unwrap_err();
        assert_eq!(err.key, "CHANNELS");

        let err = Config::from_vars(&vars(json!({
            "CHANNELS": { "x": { "namespaces": ["admin"] } }
        })))
        .unwrap_err();
        assert_eq!(err.key, "CHANNELS.\"x\".namespaces");

        let err = Config::from_vars(&vars(json!({
            "CHANNELS": { "x": { "max_payload": 0 } }
        })))
        .unwrap_err();
        assert_eq!(err.key, "CHANNELS.\"x\".max_payload");
    }

    #[test]
    fn channel_names_are_validated() {
        assert!(validate_channel_name("").is_ok());
        assert!(validate_channel_name("chats/42").is_ok());
        assert!(validate_channel_name("chats//42").is_err());
        assert!(validate_channel_name("chats/../x").is_err());
        assert!(validate_channel_name("chats/4 2").is_err());
        assert!(validate_channel_name(&"a".repeat(201)).is_err());
    }

    #[test]
    fn pong_auto_response_is_on_unless_turned_off() {
        let config = Config::from_vars(&vars(json!({
            "PONG_AUTO_RESPONSE": false,
            "ENGINE_IO_ECHO": true,
            "CHANNELS": { "/": {}, "busy/:id": { "pong_auto_response": true } }
        })))
        .unwrap();
        assert!(!config.policy_for("").unwrap().pong_auto_response);
        assert!(!config.engine_echo().unwrap().pong_auto_response);
        assert!(config.policy_for("busy/1").unwrap().pong_auto_response);
        let config = Config::from_json(EMBEDDED_DEFAULT_VARS).unwrap();
        assert!(config.policy_for("chats/1").unwrap().pong_auto_response);
    }

    #[test]
    fn engine_echo_is_opt_in() {
        let config = Config::from_vars(&vars(json!({
            "ENGINE_IO_ECHO": true,
            "CHANNELS": { "/": {} }
        })))
        .unwrap();
        assert_eq!(
            config.engine_echo().unwrap().behaviour,
            BehaviourKind::EngineEcho
        );
    }

    #[test]
    fn handlers_hooks_and_webhooks_are_read_and_checked() {
        let config = Config::from_vars(&vars(json!({
            "BACKEND_URL": "https://app.example/switchboard",
            "BACKEND_TIMEOUT": 3000,
            "CHANNELS": {
                "shop/:id": {
                    "relay_events": ["chat"],
                    "auth": ["private", "backend"],
                    "webhooks": ["socket_connected", "channel_vacated"],
                    "webhook_events": ["chat"],
                    "handlers": {
                        "create product": {
                            "schema": { "type": "object", "required": ["name"] },
                        },
                        "ping": { "ack": "raw", "timeout": 250 },
                    },
                },
                "other/:id": { "backend_url": "http://127.0.0.1:9/x", "webhooks": true },
                "plain/:id": {},
            }
        })))
        .unwrap()
        .with_webhook_secret(Some("s"));
        let shop = config.policy_for("shop/1").unwrap();
        assert_eq!(shop.auth, AuthMode::PrivateAndBackend);
        assert_eq!(
            shop.relay_events.as_deref(),
            Some(&["chat".to_string()][..])
        );
        let backend = shop.backend.as_ref().unwrap();
        assert_eq!(
            backend.endpoint("events"),
            "https://app.example/switchboard/events"
        );
        assert_eq!(backend.timeout_ms, 3000);
        assert_eq!(backend.secret.as_ref().map(Secret::expose), Some("s"));
        let create = &shop.handlers["create product"];
        let extra = PayloadSchema::compile(&json!({ "additionalProperties": false })).unwrap();
        assert_eq!(
            extra.errors(&json!({ "price": 1 })),
            vec![json!({
                "instancePath": "",
                "schemaPath": "#/additionalProperties",
                "keyword": "additionalProperties",
                "message": "additionalProperties 'price' not allowed",
            })]
        );
        assert_eq!((create.ack, create.timeout_ms), (AckShape::Foal, 3000));
        assert!(
            !create
                .schema
                .as_ref()
                .unwrap()
                .errors(&json!({}))
                .is_empty()
        );
        assert_eq!(shop.handlers["ping"].ack, AckShape::Raw);
        assert_eq!(shop.handlers["ping"].timeout_ms, 250);
        assert!(shop.webhooks.socket_connected && shop.webhooks.channel_vacated);
        assert!(!shop.webhooks.channel_occupied);
        assert_eq!(shop.webhook_client_events, ["chat"]);
        let other = config.policy_for("other/1").unwrap();
        assert_eq!(other.backend.as_ref().unwrap().url, "http://127.0.0.1:9/x");
        assert!(other.webhooks.channel_occupied && other.webhooks.socket_disconnected);
        // A channel that needs no backend still knows where it is (and calls nothing).
        assert!(config.policy_for("plain/1").unwrap().handlers.is_empty());
        assert!(config.has_backend_channels() && config.has_private_channels());

        let problem = |channel: Value| {
            Config::from_vars(&vars(json!({ "CHANNELS": { "x": channel } }))).unwrap_err()
        };
        let err = problem(json!({ "auth": "backend" }));
        assert!(err.problem.contains("BACKEND_URL"), "{}", err.problem);
        let err = problem(json!({ "backend_url": "ftp://x", "webhooks": true }));
        assert_eq!(err.key, "CHANNELS.\"x\".backend_url");
        let err = problem(json!({ "auth": "magic" }));
        assert_eq!(err.key, "CHANNELS.\"x\".auth");
        let err = problem(json!({ "backend_url": "http://b", "webhooks": ["sometimes"] }));
        assert!(err.problem.contains("sometimes"), "{}", err.problem);
        let err = problem(
            json!({ "backend_url": "http://b", "handlers": { "a": { "schema": { "type": 5 } } } }),
        );
        assert_eq!(err.key, "CHANNELS.\"x\".handlers.\"a\".schema");
        let err = problem(json!({ "backend_url": "http://b", "handlers": { "connect": {} } }));
        assert!(err.problem.contains("reserved"), "{}", err.problem);
        let err =
            problem(json!({ "backend_url": "http://b", "handlers": { "a": { "timeout": 0 } } }));
        assert_eq!(err.key, "CHANNELS.\"x\".handlers.\"a\".timeout");
        let err =
            problem(json!({ "backend_url": "http://b", "handlers": { "a": { "acks": "raw" } } }));
        assert!(err.problem.contains("acks"), "{}", err.problem);
        let err = Config::from_vars(&vars(
            json!({ "BACKEND_TIMEOUT": 600000, "CHANNELS": { "x": {} } }),
        ))
        .unwrap_err();
        assert_eq!(err.key, "BACKEND_TIMEOUT");
    }

    /// What serde says about a malformed `handlers` or `bind` table, under the channel's key: the
    /// messages `from_value` gives for the whole entry, also since handlers are read one by one.
    #[test]
    fn malformed_handler_and_bind_tables_keep_their_messages() {
        let problem = |channel: Value| {
            let err =
                Config::from_vars(&vars(json!({ "CHANNELS": { "x": channel } }))).unwrap_err();
            assert_eq!(err.key, "CHANNELS.\"x\"");
            err.problem
        };
        let backend = |mut channel: Value| {
            channel["backend_url"] = "http://b".into();
            channel
        };
        for (channel, message) in [
            (
                json!({ "handlers": { "a": { "acks": "raw" } } }),
                "unknown field `acks`, expected one of `schema`, `ack`, `timeout`",
            ),
            (
                json!({ "handlers": { "a": "text" } }),
                "invalid type: string \"text\", expected struct HandlerSpec",
            ),
            (
                json!({ "handlers": { "a": { "ack": "loud" } } }),
                "unknown variant `loud`, expected `foal` or `raw`",
            ),
            (
                json!({ "handlers": { "a": null } }),
                "invalid type: null, expected struct HandlerSpec",
            ),
            (
                json!({ "handlers": 5 }),
                "invalid type: integer `5`, expected a map",
            ),
            (
                json!({ "handlers": ["a"] }),
                "invalid type: sequence, expected a map",
            ),
            (
                json!({ "auth": "private", "bind": { "id": 5 } }),
                "invalid type: integer `5`, expected a string",
            ),
            (
                json!({ "auth": "private", "bind": "id" }),
                "invalid type: string \"id\", expected a map",
            ),
        ] {
            assert_eq!(problem(backend(channel)), message);
        }
    }
}
