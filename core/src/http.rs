//! The HTTP surface both hosts share: URL routing, the front door of Engine.IO requests, query
//! parsing, error bodies and CORS.
//!
//! Hosts ask [`route`] where a path goes, and [`admit_engine_request`] whether an Engine.IO request
//! may reach its channel; every status code and error body a client can see is decided here, so
//! native and edge answer alike.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{ChannelPolicy, Config, validate_channel_name};

/// Prefix of every Engine.IO endpoint: `/socket.io/<channel>/`.
pub const SOCKET_IO_PREFIX: &str = "/socket.io";
/// The raw Engine.IO endpoint of the Engine.IO test server (enabled by `ENGINE_IO_ECHO`).
pub const ENGINE_IO_PATH: &str = "/engine.io";
/// What hosts name the echo endpoint's channel by (a live channel, a Durable Object); channel names
/// never start with '/', so it cannot collide with one.
pub const ENGINE_IO_KEY: &str = "/engine.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Options,
    Other,
}

impl Method {
    pub fn parse(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// An HTTP response for the host to write as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "text/plain; charset=UTF-8".into())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Where a request path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The Engine.IO endpoint of a channel (`""` is the default channel).
    Channel(String),
    /// The raw Engine.IO echo endpoint (only when configured).
    EngineEcho,
    /// A path under `/socket.io/` whose channel name is malformed.
    BadChannelName(String),
    /// `POST /emit`.
    Emit,
    /// `GET /channels/<channel>` (`/channels/` alone is the default channel).
    ChannelInfo(String),
    /// `GET /channels/<channel>/history`: the events kept for connection-state recovery
    /// (`/channels/history` is the default channel's).
    ChannelHistory(String),
    /// `GET /channels/<channel>/presence`: the channel's members (`/channels/presence` is the
    /// default channel's).
    ChannelPresence(String),
    /// `GET /healthz`.
    Health,
    /// A file of socket.io-client's browser bundle (see [`crate::client`]).
    ClientFile(&'static str),
    /// `/__debug/<action>/<channel>`: test-only endpoints, when enabled.
    Debug { action: String, channel: String },
    /// Anything else: a file of the static folder, if the host serves one, or nothing.
    NotFound,
}

/// Maps a request path to its endpoint. `/socket.io/chats/42/` → channel `chats/42`; `/socket.io/` →
/// the default channel. The trailing slash is optional.
pub fn route(path: &str) -> Route {
    match path {
        "/emit" => return Route::Emit,
        "/healthz" => return Route::Health,
        _ => {}
    }
    if let Some(file) = crate::client::file_for_path(path) {
        return Route::ClientFile(file);
    }
    if let Some(rest) = path.strip_prefix("/channels") {
        let trimmed = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(channel_rest) = trimmed.strip_suffix("/history") {
            return match channel_from_rest(channel_rest) {
                Some(Ok(channel)) => Route::ChannelHistory(channel),
                Some(Err(problem)) => Route::BadChannelName(problem),
                None => Route::NotFound,
            };
        }
        if let Some(channel_rest) = trimmed.strip_suffix("/presence") {
            return match channel_from_rest(channel_rest) {
                Some(Ok(channel)) => Route::ChannelPresence(channel),
                Some(Err(problem)) => Route::BadChannelName(problem),
                None => Route::NotFound,
            };
        }
        return match channel_from_rest(rest) {
            Some(Ok(channel)) => Route::ChannelInfo(channel),
            Some(Err(problem)) => Route::BadChannelName(problem),
            None => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/__debug/") {
        let (action, rest) = rest.split_once('/').unwrap_or((rest, ""));
        return match channel_from_rest(&format!("/{rest}")) {
            Some(Ok(channel)) => Route::Debug {
                action: action.to_string(),
                channel,
            },
            Some(Err(problem)) => Route::BadChannelName(problem),
            None => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix(ENGINE_IO_PATH) {
        if rest.is_empty() || rest == "/" {
            return Route::EngineEcho;
        }
        return Route::NotFound;
    }
    let Some(rest) = path.strip_prefix(SOCKET_IO_PREFIX) else {
        return Route::NotFound;
    };
    match channel_from_rest(rest) {
        Some(Ok(channel)) => Route::Channel(channel),
        Some(Err(problem)) => Route::BadChannelName(problem),
        None => Route::NotFound,
    }
}

/// The channel named by what follows a prefix: `""` or `"/"` is the default channel, `"/a/b/"` is
/// `a/b`; `None` when the rest does not start a new path segment.
fn channel_from_rest(rest: &str) -> Option<Result<String, String>> {
    let channel = match rest {
        "" | "/" => "",
        _ => {
            let inner = rest.strip_prefix('/')?;
            inner.strip_suffix('/').unwrap_or(inner)
        }
    };
    Some(validate_channel_name(channel).map(|()| channel.to_string()))
}

/// The Engine.IO transport a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling,
    WebSocket,
}

/// The parsed Engine.IO query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineQuery {
    pub transport: TransportKind,
    pub sid: Option<String>,
}

/// Engine.IO error codes, as the reference server numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    TransportUnknown = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
    /// Not one of engine.io's: the channel has as many sessions waiting to connect as it admits.
    Busy = 6,
}

impl EngineError {
    pub fn message(self) -> &'static str {
        match self {
            EngineError::TransportUnknown => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
            EngineError::Busy => "Too many sessions waiting to connect; try again later",
        }
    }

    /// The 400 (403, 503) response with the `{code, message}` body Engine.IO clients understand.
    pub fn response(self) -> HttpResponse {
        let status = match self {
            EngineError::Forbidden => 403,
            EngineError::Busy => 503,
            _ => 400,
        };
        HttpResponse::json(
            status,
            &serde_json::json!({ "code": self as u8, "message": self.message() }),
        )
    }
}

/// Parses `EIO=4&transport=…&sid=…`. Only protocol version 4 is spoken.
pub fn parse_engine_query(query: Option<&str>) -> Result<EngineQuery, EngineError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => eio = Some(value),
            "transport" => transport = Some(value),
            "sid" => sid = Some(value),
            _ => {}
        }
    }
    if eio != Some("4") {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    let transport = match transport {
        Some("polling") => TransportKind::Polling,
        Some("websocket") => TransportKind::WebSocket,
        _ => return Err(EngineError::TransportUnknown),
    };
    let sid = match sid {
        None => None,
        // Sids are base64url; anything else cannot be ours.
        Some(value)
            if !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(value.to_string())
        }
        Some(_) => return Err(EngineError::UnknownSid),
    };
    Ok(EngineQuery { transport, sid })
}

/// CORS headers for a polling response to a request from `origin`; none when the origin is absent or
/// not allowed (the browser then blocks the response, as it should).
pub fn cors_headers(policy: &ChannelPolicy, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let Some(origin) = origin else {
        return Vec::new();
    };
    if policy.lists_origin(origin) {
        // An origin the channel names: its pages may send cookies along.
        vec![
            ("access-control-allow-origin", origin.to_string()),
            ("access-control-allow-credentials", "true".into()),
            ("vary", "Origin".into()),
        ]
    } else if policy.allows_origin(origin) {
        // Let in by `"*"` only: any page may connect, but a browser sends it no credentials, so a
        // page of another site cannot ride on the user's cookies.
        vec![("access-control-allow-origin", "*".into())]
    } else {
        Vec::new()
    }
}

/// Refuses browsers from origins the channel does not allow (`403`, Engine.IO code 4). Requests
/// without an `Origin` header come from servers or native apps and pass.
pub fn check_origin(policy: &ChannelPolicy, origin: Option<&str>) -> Result<(), EngineError> {
    match origin {
        Some(origin) if !policy.allows_origin(origin) => Err(EngineError::Forbidden),
        _ => Ok(()),
    }
}

/// The answer to a CORS preflight (`OPTIONS`) on a polling endpoint.
pub fn preflight_response(policy: &ChannelPolicy, origin: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse {
        status: 204,
        headers: cors_headers(policy, origin),
        body: Bytes::new(),
    };
    if !response.headers.is_empty() {
        response
            .headers
            .push(("access-control-allow-methods", "GET, POST, OPTIONS".into()));
        response
            .headers
            .push(("access-control-allow-headers", "content-type".into()));
        response
            .headers
            .push(("access-control-max-age", "86400".into()));
    }
    response
}

/// The 404 for a channel no pattern matches.
pub fn unknown_channel_response(channel: &str) -> HttpResponse {
    HttpResponse::json(
        404,
        &serde_json::json!({
            "error": "unknown_channel",
            "message": format!("no configured channel pattern matches {channel:?}"),
        }),
    )
}

/// The 400 for a malformed channel name.
pub fn bad_channel_response(problem: &str) -> HttpResponse {
    HttpResponse::json(
        400,
        &serde_json::json!({ "error": "bad_channel_name", "message": problem }),
    )
}

/// What a host knows of an Engine.IO request before it hands it to a channel.
#[derive(Debug, Clone, Copy)]
pub struct EngineRequestHead<'a> {
    pub path: &'a str,
    pub method: Method,
    pub origin: Option<&'a str>,
    pub query: Option<&'a str>,
    /// The request asks to upgrade to a WebSocket (`Upgrade: websocket`).
    pub websocket_upgrade: bool,
}

/// An Engine.IO request let through the front door: which channel (or the echo endpoint) it is
/// for, that channel's policy, and its parsed query.
#[derive(Debug, Clone)]
pub struct EngineAdmission {
    /// The channel name, or [`ENGINE_IO_KEY`] for the echo endpoint.
    pub key: String,
    pub policy: Arc<ChannelPolicy>,
    pub query: EngineQuery,
}

/// The front door of every Engine.IO request, for both hosts: the route, the channel's policy (or
/// the echo endpoint's, or a refusal for a bad or unknown name), CORS preflight, the origin check,
/// the Engine.IO query, and a WebSocket request that is not an upgrade. An `Err` is the complete
/// answer; nothing about the request reaches (or creates) a channel.
pub fn admit_engine_request(
    config: &Config,
    head: &EngineRequestHead<'_>,
) -> Result<EngineAdmission, HttpResponse> {
    let (key, policy) = match route(head.path) {
        Route::Channel(channel) => match config.policy_for(&channel) {
            Some(policy) => (channel, policy.clone()),
            None => return Err(unknown_channel_response(&channel)),
        },
        Route::EngineEcho => match config.engine_echo() {
            Some(policy) => (ENGINE_IO_KEY.to_string(), policy.clone()),
            None => return Err(HttpResponse::text(404, "not found")),
        },
        Route::BadChannelName(problem) => return Err(bad_channel_response(&problem)),
        _ => return Err(HttpResponse::text(404, "not found")),
    };
    if head.method == Method::Options {
        return Err(preflight_response(&policy, head.origin));
    }
    check_origin(&policy, head.origin).map_err(EngineError::response)?;
    let query = parse_engine_query(head.query).map_err(|error| {
        error
            .response()
            .with_headers(cors_headers(&policy, head.origin))
    })?;
    if query.transport == TransportKind::WebSocket && !head.websocket_upgrade {
        return Err(EngineError::BadRequest.response());
    }
    Ok(EngineAdmission { key, policy, query })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn routes_channels_by_path() {
        assert_eq!(route("/socket.io/"), Route::Channel(String::new()));
        assert_eq!(route("/socket.io"), Route::Channel(String::new()));
        assert_eq!(
            route("/socket.io/chats/42/"),
            Route::Channel("chats/42".into())
        );
        assert_eq!(
            route("/socket.io/chats/42"),
            Route::Channel("chats/42".into())
        );
        assert_eq!(route("/engine.io/"), Route::EngineEcho);
        assert_eq!(route("/socket.iox/"), Route::NotFound);
        assert_eq!(route("/other"), Route::NotFound);
        assert_eq!(route("/emit"), Route::Emit);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(
            route("/socket.io/socket.io.js"),
            Route::ClientFile("socket.io.js")
        );
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(
            route("/channels/chats/1"),
            Route::ChannelInfo("chats/1".into())
        );
        assert_eq!(route("/channels/"), Route::ChannelInfo(String::new()));
        assert_eq!(
            route("/channels/chats/1/history"),
            Route::ChannelHistory("chats/1".into())
        );
        assert_eq!(
            route("/channels/history"),
            Route::ChannelHistory(String::new())
        );
        assert_eq!(
            route("/channels/chats/1/presence"),
            Route::ChannelPresence("chats/1".into())
        );
        assert_eq!(
            route("/channels/presence"),
            Route::ChannelPresence(String::new())
        );
        assert_eq!(route("/channelsx"), Route::NotFound);
        assert_eq!(
            route("/__debug/reset/chats/1"),
            Route::Debug {
                action: "reset".into(),
                channel: "chats/1".into()
            }
        );
        assert!(matches!(
            route("/socket.io/a//b/"),
            Route::BadChannelName(_)
        ));
        assert!(matches!(
            route("/socket.io/../x/"),
            Route::BadChannelName(_)
        ));
    }

    #[test]
    fn parses_engine_queries() {
        assert_eq!(
            parse_engine_query(Some("EIO=4&transport=polling&t=abc")),
            Ok(EngineQuery {
                transport: TransportKind::Polling,
                sid: None
            })
        );
        assert_eq!(
            parse_engine_query(Some("EIO=4&transport=websocket&sid=abc_-1")),
            Ok(EngineQuery {
                transport: TransportKind::WebSocket,
                sid: Some("abc_-1".into())
            })
        );
        assert_eq!(
            parse_engine_query(Some("transport=polling")),
            Err(EngineError::UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse_engine_query(Some("EIO=3&transport=polling")),
            Err(EngineError::UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse_engine_query(Some("EIO=4&transport=abc")),
            Err(EngineError::TransportUnknown)
        );
        assert_eq!(
            parse_engine_query(Some("EIO=4&transport=polling&sid=a%20b")),
            Err(EngineError::UnknownSid)
        );
        assert_eq!(
            parse_engine_query(None),
            Err(EngineError::UnsupportedProtocolVersion)
        );
    }

    #[test]
    fn the_front_door_admits_only_what_engine_io_would_serve() {
        let config = Config::from_json(
            r#"{"ENGINE_IO_ECHO": true, "CHANNELS": {"/": {}, "shop/:id": {"allowed_origins": ["https://shop.example"]}}}"#,
        )
        .unwrap();
        let head = |path, method, origin, query, websocket_upgrade| EngineRequestHead {
            path,
            method,
            origin,
            query,
            websocket_upgrade,
        };
        let ok = admit_engine_request(
            &config,
            &head(
                "/socket.io/",
                Method::Get,
                None,
                Some("EIO=4&transport=polling"),
                false,
            ),
        )
        .unwrap();
        assert_eq!(ok.key, "");
        let echo = admit_engine_request(
            &config,
            &head(
                "/engine.io/",
                Method::Get,
                None,
                Some("EIO=4&transport=websocket"),
                true,
            ),
        )
        .unwrap();
        assert_eq!(echo.key, ENGINE_IO_KEY);
        let status = |head: EngineRequestHead<'_>| {
            admit_engine_request(&config, &head)
                .map(|_| 200)
                .unwrap_or_else(|response| response.status)
        };
        let polling = Some("EIO=4&transport=polling");
        assert_eq!(
            status(head("/socket.io/nope/", Method::Get, None, polling, false)),
            404
        );
        assert_eq!(
            status(head("/socket.io/a//b/", Method::Get, None, polling, false)),
            400
        );
        assert_eq!(
            status(head("/socket.io/", Method::Get, None, Some("EIO=3"), false)),
            400
        );
        let shop = "/socket.io/shop/1/";
        assert_eq!(
            status(head(
                shop,
                Method::Get,
                Some("https://evil.example"),
                polling,
                false
            )),
            403
        );
        assert_eq!(
            status(head(
                shop,
                Method::Get,
                Some("https://shop.example"),
                polling,
                false
            )),
            200
        );
        assert_eq!(
            status(head(
                shop,
                Method::Options,
                Some("https://shop.example"),
                None,
                false
            )),
            204
        );
        // A WebSocket transport on a plain GET is not an upgrade.
        let websocket = Some("EIO=4&transport=websocket");
        assert_eq!(
            status(head("/socket.io/", Method::Get, None, websocket, false)),
            400
        );
        // A bad query's error carries CORS headers, so the browser lets the page read it.
        let refused = admit_engine_request(
            &config,
            &head(
                shop,
                Method::Get,
                Some("https://shop.example"),
                Some("EIO=4"),
                false,
            ),
        )
        .unwrap_err();
        assert_eq!(
            refused.header("access-control-allow-origin"),
            Some("https://shop.example")
        );
    }

    #[test]
    fn error_bodies_carry_code_and_message() {
        let response = EngineError::UnknownSid.response();
        assert_eq!(response.status, 400);
        assert_eq!(
            response.body,
            Bytes::from_static(br#"{"code":1,"message":"Session ID unknown"}"#)
        );
    }
}
