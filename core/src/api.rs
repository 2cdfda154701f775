//! The HTTP API an application backend calls: `POST /emit`, `GET /channels/<channel>`, `GET /healthz`.
//!
//! Parsing, validation, authentication and the shape of every answer live here; hosts only move the
//! validated [`ChannelEmit`]s to the right channel and collect the delivered counts.
//!
//! ```text
//! POST /emit
//! Authorization: Bearer <API_SECRET>
//! { "channel": "chats/42", "event": "message", "data": {"text": "hi"},
//!   "namespace": "/", "rooms": ["moderators"], "except": ["<socket id>"] }
//! → 200 { "delivered": 3, "channels": { "chats/42": { "delivered": 3 } } }
//! ```
//!
//! `"channels": [..]` instead of `"channel"` sends the same event to several channels (a batch);
//! `"args": [..]` instead of `"data"` passes several arguments. With `"ack_timeout": ms`, each
//! recipient named by `rooms` (a socket id is a room, as in socket.io) is asked for an
//! acknowledgement, and the answer waits for every one of them, like socket.io's
//! `io.timeout(ms).emitWithAck()`:
//!
//! ```text
//! { "channel": "chats/42", "event": "ping?", "rooms": ["<socket id>"], "ack_timeout": 5000 }
//! → 200 { "delivered": 1, "channels": { "chats/42": { "delivered": 1,
//!         "acks": [ { "socket": "<socket id>", "args": ["pong!"] } ] } } }
//! ```
//!
//! A socket that does not answer in time has `"error": "timeout"`; one that goes away first,
//! `"error": "disconnected"`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::behaviour::RESERVED_PREFIX;
use crate::channel::{
    AckFailure, AckRequest, Channel, EmitError, HistoryError, HistoryEvent, Occupancy, Output,
    PresenceError, PresencePage, ServerEmit,
};
use crate::config::{ChannelPolicy, Config, validate_channel_name};
use crate::http::{HttpResponse, Method, Route};
use crate::socketio::RESERVED_EVENTS;

/// Name of the secret (a Worker secret, or an environment variable natively) that authenticates the
/// API.
pub const API_SECRET_VAR: &str = "API_SECRET";
/// Most channels one batch emit may name.
pub const MAX_BATCH_CHANNELS: usize = 100;
/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1_000_000;
/// Longest `ack_timeout` an emit may wait for its acknowledgements, in milliseconds.
pub const MAX_ACK_TIMEOUT_MS: u64 = 60_000;

/// An API error: the HTTP status, a machine-readable code, the request field at fault (if one is),
/// and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            code: "unauthorized",
            field: None,
            message: "missing or wrong bearer secret: send `Authorization: Bearer <API_SECRET>`"
                .into(),
        }
    }

    pub fn not_configured() -> Self {
        Self {
            status: 503,
            code: "api_disabled",
            field: None,
            message: format!(
                "the HTTP API is disabled until the {API_SECRET_VAR} secret is set \
                 (.dev.vars or `wrangler secret put {API_SECRET_VAR}` on Cloudflare, an \
                 environment variable natively)"
            ),
        }
    }

    pub fn unknown_channel(field: &str, channel: &str) -> Self {
        Self {
            status: 404,
            code: "unknown_channel",
            field: Some(field.to_string()),
            message: format!("no configured channel pattern matches {channel:?}"),
        }
    }

    /// A channel refused an emit that passed the API's own checks.
    pub fn refused_emit(error: &EmitError) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            field: None,
            message: error.to_string(),
        }
    }

    pub fn method_not_allowed(allowed: &str) -> Self {
        Self {
            status: 405,
            code: "method_not_allowed",
            field: None,
            message: format!("use {allowed}"),
        }
    }

    pub fn response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(field) = &self.field {
            body["field"] = Value::String(field.clone());
        }
        let response = HttpResponse::json(self.status, &body);
        if self.status == 401 {
            response.with_header("www-authenticate", "Bearer")
        } else {
            response
        }
    }
}

/// Checks an `Authorization` header against the configured secret, in constant time. `None` for the
/// secret means the API is not configured.
pub fn authorize(header: Option<&str>, secret: Option<&str>) -> Result<(), ApiError> {
    let Some(secret) = secret.filter(|secret| !secret.is_empty()) else {
        return Err(ApiError::not_configured());
    };
    let presented = header
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    // Comparing digests keeps the time independent of where the strings differ and of the
    // secret's length.
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(secret.as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The gate in front of the authenticated endpoints (`POST /emit`, `GET /channels/<channel>`):
/// the method first, then the secret. Both hosts call it, so both answer alike.
pub fn admit(
    route: &Route,
    method: Method,
    authorization: Option<&str>,
    secret: Option<&str>,
) -> Result<(), ApiError> {
    match (route, method) {
        (Route::Emit, Method::Post)
        | (
            Route::ChannelInfo(_) | Route::ChannelHistory(_) | Route::ChannelPresence(_),
            Method::Get,
        )
        | (Route::Debug { .. }, Method::Post) => {}
        (Route::Emit | Route::Debug { .. }, _) => return Err(ApiError::method_not_allowed("POST")),
        _ => return Err(ApiError::method_not_allowed("GET")),
    }
    authorize(authorization, secret)
}

/// One channel's part of an emit, validated against that channel's policy. Serializable so the
/// Worker can hand it to the channel's Durable Object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelEmit {
    pub channel: String,
    pub namespace: String,
    /// The event array: name first, then the arguments.
    pub args: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// Wait this long for every recipient's acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<u64>,
}

impl ChannelEmit {
    /// The emit for the channel; `token` names its acknowledgements when it asks for them.
    pub fn to_server_emit(&self, token: u64) -> ServerEmit {
        ServerEmit {
            namespace: self.namespace.clone(),
            args: self.args.clone(),
            attachments: Vec::new(),
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            ack: self
                .ack_timeout
                .map(|timeout_ms| AckRequest { token, timeout_ms }),
        }
    }
}

/// One socket's answer to an emit that asked for acknowledgements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckAnswer {
    pub socket: String,
    /// The acknowledgement's arguments, binary attachments as placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// The binary attachments, base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// `"timeout"` or `"disconnected"` when the socket did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one channel did with an emit: the sockets reached, and their acknowledgements when the
/// emit asked for them. Serializable so a Durable Object can hand it back to the Worker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelEmitResult {
    pub delivered: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<Vec<AckAnswer>>,
    /// Where the event went in the channel's history (channels with connection-state recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
}

/// Gathers the acknowledgements of one emit from the channel's outputs, for a host to answer the
/// API call once every asked socket has answered or given up.
#[derive(Debug, Clone)]
pub struct AckCollector {
    token: u64,
    awaiting: std::collections::BTreeSet<String>,
    answers: Vec<AckAnswer>,
    delivered: usize,
}

impl AckCollector {
    /// For an emit with ack `token` that reached `delivered` sockets and asked `awaiting` for an
    /// acknowledgement.
    pub fn new(token: u64, delivered: usize, awaiting: Vec<String>) -> Self {
        Self {
            token,
            awaiting: crate::sort::collect_map(awaiting),
            answers: Vec::new(),
            delivered,
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// Takes in an output of the channel if it answers this emit. Returns whether it did.
    pub fn record(&mut self, output: &Output) -> bool {
        let answer = match output {
            Output::AckReceived {
                token,
                socket,
                args,
                attachments,
            } if *token == self.token && self.awaiting.contains(socket) => AckAnswer {
                socket: socket.clone(),
                args: Some(args.clone()),
                attachments: attachments
                    .iter()
                    .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                    .collect(),
                error: None,
            },
            Output::AckUnanswered {
                token,
                socket,
                reason,
            } if *token == self.token && self.awaiting.contains(socket) => AckAnswer {
                socket: socket.clone(),
                args: None,
                attachments: Vec::new(),
                error: Some(
                    match reason {
                        AckFailure::Timeout => "timeout",
                        AckFailure::Disconnected => "disconnected",
                    }
                    .to_string(),
                ),
            },
            _ => return false,
        };
        self.awaiting.remove(&answer.socket);
        self.answers.push(answer);
        true
    }

    /// Every asked socket has answered or given up.
    pub fn is_complete(&self) -> bool {
        self.awaiting.is_empty()
    }

    /// The result, answers in the order the sockets' ids sort.
    pub fn finish(mut self) -> ChannelEmitResult {
        crate::sort::sort_by(&mut self.answers, |a, b| a.socket.cmp(&b.socket));
        ChannelEmitResult {
            delivered: self.delivered,
            acks: Some(self.answers),
            offset: None,
        }
    }
}

/// Parses and validates a `POST /emit` body into one [`ChannelEmit`] per channel.
pub fn parse_emit(body: &[u8], config: &Config) -> Result<Vec<ChannelEmit>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError {
            status: 413,
            code: "payload_too_large",
            field: None,
            message: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid("body", format!("not valid JSON: {err}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid("body", "expected a JSON object"));
    };
    const KNOWN: &[&str] = &[
        "channel",
        "channels",
        "event",
        "data",
        "args",
        "namespace",
        "rooms",
        "except",
        "ack_timeout",
    ];
    if let Some(unknown) = fields.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!("unknown field; expected one of {}", KNOWN.join(", ")),
        ));
    }

    let channels = match (fields.remove("channel"), fields.remove("channels")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "channels",
                "give either `channel` or `channels`, not both",
            ));
        }
        (Some(channel), None) => vec![(channel_name(&channel, "channel")?, "channel")],
        (None, Some(Value::Array(list))) => {
            if list.is_empty() || list.len() > MAX_BATCH_CHANNELS {
                return Err(ApiError::invalid(
                    "channels",
                    format!("expected 1 to {MAX_BATCH_CHANNELS} channel names"),
                ));
            }
            let mut names = Vec::with_capacity(list.len());
            for channel in &list {
                let name = channel_name(channel, "channels")?;
                if names.iter().any(|(existing, _)| existing == &name) {
                    return Err(ApiError::invalid(
                        "channels",
                        format!("{name:?} is listed twice"),
                    ));
                }
                names.push((name, "channels"));
            }
            names
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "channels",
                "expected an array of channel names",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "channel",
                "missing: name the channel (`channel`) or channels (`channels`)",
            ));
        }
    };

    let event = match fields.remove("event") {
        Some(Value::String(event)) if !event.is_empty() => event,
        Some(_) => return Err(ApiError::invalid("event", "expected a non-empty string")),
        None => return Err(ApiError::invalid("event", "missing: the event name")),
    };
    if RESERVED_EVENTS.contains(&event.as_str()) || event.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::invalid(
            "event",
            format!("{event:?} is reserved and cannot be emitted"),
        ));
    }
    let mut args = vec![Value::String(event)];
    match (fields.remove("data"), fields.remove("args")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "args",
                "give either `data` (one argument) or `args` (several), not both",
            ));
        }
        (Some(data), None) => args.push(data),
        (None, Some(Value::Array(list))) => args.extend(list),
        (None, Some(_)) => return Err(ApiError::invalid("args", "expected an array")),
        (None, None) => {}
    }
    if contains_placeholder(&args) {
        return Err(ApiError::invalid(
            "data",
            "objects with `_placeholder` are reserved for binary attachments",
        ));
    }
    let args = Value::Array(args);

    let namespace = match fields.remove("namespace") {
        None => "/".to_string(),
        Some(Value::String(namespace)) if namespace.starts_with('/') => namespace,
        Some(_) => {
            return Err(ApiError::invalid(
                "namespace",
                "expected a string starting with '/'",
            ));
        }
    };
    let rooms = string_list(fields.remove("rooms"), "rooms")?;
    let except = string_list(fields.remove("except"), "except")?;
    let ack_timeout = match fields.remove("ack_timeout") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(ms) if (1..=MAX_ACK_TIMEOUT_MS).contains(&ms) => Some(ms),
            _ => {
                return Err(ApiError::invalid(
                    "ack_timeout",
                    format!("expected milliseconds, from 1 to {MAX_ACK_TIMEOUT_MS}"),
                ));
            }
        },
    };
    if ack_timeout.is_some() && rooms.is_empty() {
        return Err(ApiError::invalid(
            "rooms",
            "an emit that waits for acknowledgements names its recipients: rooms, where a \
             socket's id is a room of its own",
        ));
    }

    let mut emits = Vec::with_capacity(channels.len());
    for (channel, field) in channels {
        let Some(policy) = config.policy_for(&channel) else {
            return Err(ApiError::unknown_channel(field, &channel));
        };
        if !policy.allows_namespace(&namespace) {
            return Err(ApiError::invalid(
                "namespace",
                format!("channel {channel:?} has no namespace {namespace:?}"),
            ));
        }
        emits.push(ChannelEmit {
            channel,
            namespace: namespace.clone(),
            args: args.clone(),
            rooms: rooms.clone(),
            except: except.clone(),
            ack_timeout,
        });
    }
    Ok(emits)
}

fn channel_name(value: &Value, field: &str) -> Result<String, ApiError> {
    let Value::String(name) = value else {
        return Err(ApiError::invalid(
            field,
            "expected a channel name (a string)",
        ));
    };
    // The default channel is written "/" in the API, as in the configuration.
    let name = if name == "/" { "" } else { name.as_str() };
    validate_channel_name(name).map_err(|problem| ApiError::invalid(field, problem))?;
    Ok(name.to_string())
}

fn string_list(value: Option<Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) if !text.is_empty() => Ok(text),
                _ => Err(ApiError::invalid(
                    field,
                    "expected an array of non-empty strings",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(
            field,
            "expected an array of non-empty strings",
        )),
    }
}

fn contains_placeholder(values: &[Value]) -> bool {
    values.iter().any(|value| match value {
        Value::Object(map) => {
            map.contains_key("_placeholder")
                || map
                    .values()
                    .any(|v| contains_placeholder(std::slice::from_ref(v)))
        }
        Value::Array(items) => contains_placeholder(items),
        _ => false,
    })
}

/// Where a `POST /emit` stands on one channel once the channel has done its part.
#[derive(Debug)]
pub enum EmitProgress {
    /// Answered: the sockets reached (and, for an emit that asked for acknowledgements from no
    /// one, an empty list of them), or the channel's refusal.
    Done(Result<ChannelEmitResult, ApiError>),
    /// Waiting for acknowledgements; feed the channel's outputs to an [`AckWaits`].
    AwaitingAcks(AckCollector),
}

/// Emits `emit` into `channel`, as a host does for `POST /emit`. `tokens` hands out the names of
/// the emits that wait for acknowledgements; a host keeps one per channel.
pub fn start_emit(
    channel: &mut Channel,
    tokens: &mut EmitTokens,
    emit: &ChannelEmit,
    now: u64,
) -> EmitProgress {
    let token = tokens.next();
    match channel.emit(emit.to_server_emit(token), now) {
        Err(error) => EmitProgress::Done(Err(ApiError::refused_emit(&error))),
        Ok(emitted) if emit.ack_timeout.is_none() => EmitProgress::Done(Ok(ChannelEmitResult {
            delivered: emitted.delivered,
            acks: None,
            offset: emitted.offset,
        })),
        Ok(emitted) => {
            let collector = AckCollector::new(token, emitted.delivered, emitted.awaiting_ack);
            if collector.is_complete() {
                EmitProgress::Done(Ok(collector.finish()))
            } else {
                EmitProgress::AwaitingAcks(collector)
            }
        }
    }
}

/// Names for the emits of one channel that wait for acknowledgements.
#[derive(Debug, Default)]
pub struct EmitTokens(u64);

impl EmitTokens {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// The emits of one channel waiting for acknowledgements, each with what its host answers it
/// through (`R`, a reply channel).
#[derive(Debug)]
pub struct AckWaits<R> {
    waiting: Vec<(AckCollector, R)>,
}

impl<R> Default for AckWaits<R> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
        }
    }
}

impl<R> AckWaits<R> {
    pub fn push(&mut self, collector: AckCollector, reply: R) {
        self.waiting.push((collector, reply));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes in an output of the channel. When it completes an emit, returns that emit's result
    /// and reply, for the host to answer.
    pub fn record(&mut self, output: &Output) -> Option<(ChannelEmitResult, R)> {
        let index = self
            .waiting
            .iter_mut()
            .position(|(collector, _)| collector.record(output))?;
        if !self.waiting[index].0.is_complete() {
            return None;
        }
        let (collector, reply) = self.waiting.swap_remove(index);
        Some((collector.finish(), reply))
    }
}

/// The `POST /emit` answer: the total and each channel's delivered count (and acknowledgements).
pub fn emit_response(results: &[(String, ChannelEmitResult)]) -> HttpResponse {
    let results: Vec<(String, Value)> = results
        .iter()
        .map(|(channel, result)| {
            (
                channel.clone(),
                serde_json::to_value(result).unwrap_or_default(),
            )
        })
        .collect();
    emit_json_response(&results)
}

/// [`emit_response`] from each channel's result as JSON (as a Durable Object hands it to the
/// Worker, which then needs no `Deserialize` of it).
pub fn emit_json_response(results: &[(String, Value)]) -> HttpResponse {
    let total: u64 = results
        .iter()
        .filter_map(|(_, result)| result["delivered"].as_u64())
        .sum();
    let channels: Map<String, Value> = crate::sort::collect_map(
        results
            .iter()
            .map(|(channel, result)| (display_channel(channel), result.clone())),
    );
    HttpResponse::json(200, &json!({ "delivered": total, "channels": channels }))
}

/// How a channel name appears in API answers: the default channel as "/".
pub fn display_channel(channel: &str) -> String {
    if channel.is_empty() {
        "/".to_string()
    } else {
        channel.to_string()
    }
}

/// Events one history request returns unless it asks for fewer (`limit`), and at most.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 1_000;

/// A history request's query: `after=<offset>` (optional) and `limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub after: Option<String>,
    pub limit: usize,
}

/// `/channels/<x>/history` names the history of channel `x` (and `/channels/<x>/presence` its
/// members), unless `x` is no channel and `x/history` is one: then it is that channel's
/// information, as before history and presence existed.
pub fn resolve_channel_route(route: Route, config: &Config) -> Route {
    let (channel, suffix) = match &route {
        Route::ChannelHistory(channel) => (channel, "history"),
        Route::ChannelPresence(channel) => (channel, "presence"),
        _ => return route,
    };
    if config.policy_for(channel).is_some() {
        return route;
    }
    let whole = if channel.is_empty() {
        suffix.to_string()
    } else {
        format!("{channel}/{suffix}")
    };
    if config.policy_for(&whole).is_some() {
        Route::ChannelInfo(whole)
    } else {
        route
    }
}

/// Reads `after` and `limit` from a query string (without `?`).
pub fn parse_history_query(query: Option<&str>) -> Result<HistoryQuery, ApiError> {
    let mut parsed = HistoryQuery {
        after: None,
        limit: DEFAULT_HISTORY_LIMIT,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "after" if !value.is_empty() => parsed.after = Some(value.into_owned()),
            "limit" => match value.parse::<usize>() {
                Ok(limit) if (1..=MAX_HISTORY_LIMIT).contains(&limit) => parsed.limit = limit,
                _ => {
                    return Err(ApiError {
                        status: 400,
                        code: "invalid_limit",
                        field: Some("limit".into()),
                        message: format!("limit must be from 1 to {MAX_HISTORY_LIMIT}"),
                    });
                }
            },
            _ => {}
        }
    }
    Ok(parsed)
}

/// The `GET /channels/<channel>/presence` answer: a page of the channel's members (`after`, the
/// previous page's `next`; `limit`, at most the channel's page size).
pub fn presence_response(channel: &str, page: Result<PresencePage, PresenceError>) -> HttpResponse {
    match page {
        Ok(page) => HttpResponse::json(
            200,
            &json!({
                "channel": display_channel(channel),
                "count": page.count,
                "members": page.members,
                "next": page.next,
            }),
        ),
        Err(error) => {
            let (status, code, field) = match &error {
                PresenceError::Off => (404, "presence_off", None),
                PresenceError::InvalidCursor(_) => (400, "invalid_cursor", Some("after".into())),
            };
            ApiError {
                status,
                code,
                field,
                message: error.to_string(),
            }
            .response()
        }
    }
}

/// The `GET /channels/<channel>/history` answer, from what the channel keeps.
pub fn history_response(
    channel: &str,
    history: Result<(Vec<HistoryEvent>, Option<String>), HistoryError>,
) -> HttpResponse {
    match history {
        Ok((events, latest)) => {
            let events: Vec<Value> = events
                .into_iter()
                .map(|event| {
                    json!({
                        "offset": event.offset,
                        "namespace": event.namespace,
                        "event": event.event,
                        "rooms": event.rooms,
                        "except": event.except,
                        "emitted_at": event.emitted_at,
                    })
                })
                .collect();
            HttpResponse::json(
                200,
                &json!({
                    "channel": display_channel(channel),
                    "events": events,
                    "latest": latest,
                }),
            )
        }
        Err(error) => {
            let (status, code) = match &error {
                HistoryError::Off => (404, "history_off"),
                HistoryError::UnknownOffset(_) => (410, "offset_gone"),
                HistoryError::InvalidOffset(_) => (400, "invalid_offset"),
            };
            ApiError {
                status,
                code,
                field: (!matches!(error, HistoryError::Off)).then(|| "after".into()),
                message: error.to_string(),
            }
            .response()
        }
    }
}

/// The `GET /channels/<channel>` answer.
/// `policy` is the channel's: a channel with presence reports its member count (0 when it is not
/// live).
pub fn occupancy_response(
    channel: &str,
    occupancy: &Occupancy,
    policy: &ChannelPolicy,
) -> HttpResponse {
    occupancy_json_response(
        channel,
        &serde_json::to_value(occupancy).unwrap_or_default(),
        policy,
    )
}

/// [`occupancy_response`] from the occupancy's JSON (as a Durable Object hands it to the Worker,
/// which then needs no `Deserialize` of it).
pub fn occupancy_json_response(
    channel: &str,
    occupancy: &Value,
    policy: &ChannelPolicy,
) -> HttpResponse {
    let namespaces = &occupancy["namespaces"];
    let sockets: u64 = namespaces
        .as_object()
        .into_iter()
        .flat_map(|namespaces| namespaces.values())
        .filter_map(|namespace| namespace["sockets"].as_u64())
        .sum();
    let mut body = json!({
        "channel": display_channel(channel),
        "connections": occupancy["connections"],
        "sockets": sockets,
        "namespaces": namespaces,
    });
    if policy.presence.is_some() {
        body["members"] = json!(occupancy["members"].as_u64().unwrap_or(0));
    }
    HttpResponse::json(200, &body)
}

/// The `GET /healthz` answer.
pub fn health_response() -> HttpResponse {
    HttpResponse::json(200, &json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn config() -> Config {
        Config::from_json(
            r#"{"CHANNELS": {"/": {}, "chats/:id": {"namespaces": ["/", "/admin"]}}}"#,
        )
        .unwrap()
    }

    fn field_of(body: &str) -> Option<String> {
        parse_emit(body.as_bytes(), &config()).unwrap_err().field
    }

    #[test]
    fn parses_single_and_batch_emits() {
        let emits = parse_emit(
            br#"{"channel":"chats/1","event":"m","data":{"a":1},"rooms":["r"],"except":["x"]}"#,
            &config(),
        )
        .unwrap();
        assert_eq!(emits.len(), 1);
        assert_eq!(emits[0].args, json!(["m", {"a": 1}]));
        assert_eq!(emits[0].rooms, vec!["r"]);
        assert_eq!(emits[0].namespace, "/");

        let emits = parse_emit(
            br#"{"channels":["chats/1","chats/2","/"],"event":"m","args":[1,2],"namespace":"/"}"#,
            &config(),
        )
        .unwrap();
        assert_eq!(emits.len(), 3);
        assert_eq!(emits[2].channel, "");
        assert_eq!(emits[1].args, json!(["m", 1, 2]));
    }

    #[test]
    fn an_ack_timeout_needs_named_recipients_and_a_sane_bound() {
        let emits = parse_emit(
            br#"{"channel":"chats/1","event":"q","rooms":["abc"],"ack_timeout":5000}"#,
            &config(),
        )
        .unwrap();
        assert_eq!(emits[0].ack_timeout, Some(5000));
        assert_eq!(
            emits[0].to_server_emit(9).ack,
            Some(AckRequest {
                token: 9,
                timeout_ms: 5000
            })
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"q","ack_timeout":5000}"#),
            Some("rooms".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"q","rooms":["a"],"ack_timeout":0}"#),
            Some("ack_timeout".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"q","rooms":["a"],"ack_timeout":600000}"#),
            Some("ack_timeout".into())
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("nope"), Some("body".into()));
        assert_eq!(field_of("[1]"), Some("body".into()));
        assert_eq!(field_of(r#"{"event":"m"}"#), Some("channel".into()));
        assert_eq!(field_of(r#"{"channel":"chats/1"}"#), Some("event".into()));
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":""}"#),
            Some("event".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"disconnect"}"#),
            Some("event".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"switchboard:join"}"#),
            Some("event".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","args":3}"#),
            Some("args".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","args":[],"data":1}"#),
            Some("args".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","rooms":"r"}"#),
            Some("rooms".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","except":[1]}"#),
            Some("except".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","namespace":"/x"}"#),
            Some("namespace".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats//1","event":"m"}"#),
            Some("channel".into())
        );
        assert_eq!(
            field_of(r#"{"channels":[],"event":"m"}"#),
            Some("channels".into())
        );
        assert_eq!(
            field_of(r#"{"channels":["chats/1","chats/1"],"event":"m"}"#),
            Some("channels".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","colour":1}"#),
            Some("colour".into())
        );
        assert_eq!(
            field_of(r#"{"channel":"chats/1","event":"m","data":{"_placeholder":true,"num":0}}"#),
            Some("data".into())
        );
        let unknown = parse_emit(br#"{"channel":"rooms/1","event":"m"}"#, &config()).unwrap_err();
        assert_eq!((unknown.status, unknown.code), (404, "unknown_channel"));
    }

    #[test]
    fn authorization_is_checked() {
        assert!(authorize(Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert_eq!(
            authorize(Some("Bearer s3cre"), Some("s3cret"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authorize(Some("Bearer s3cretX"), Some("s3cret"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authorize(Some("s3cret"), Some("s3cret"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(authorize(None, Some("s3cret")).unwrap_err().status, 401);
        assert_eq!(
            authorize(Some("Bearer "), Some("")).unwrap_err().status,
            503
        );
        assert_eq!(authorize(Some("Bearer x"), None).unwrap_err().status, 503);
    }

    #[test]
    fn the_gate_checks_the_method_then_the_secret() {
        let emit = Route::Emit;
        let info = Route::ChannelInfo("x".into());
        assert!(admit(&emit, Method::Post, Some("Bearer s"), Some("s")).is_ok());
        assert!(admit(&info, Method::Get, Some("Bearer s"), Some("s")).is_ok());
        assert_eq!(
            admit(&emit, Method::Get, None, Some("s"))
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            admit(&info, Method::Post, None, Some("s"))
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            admit(&emit, Method::Post, None, Some("s"))
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn answers_from_json_equal_the_typed_answers() {
        // The Worker reads a Durable Object's results as JSON text: same responses as native.
        let through_text = |value: Value| -> Value {
            serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap()
        };
        let results = vec![
            (
                "chats/1".to_string(),
                ChannelEmitResult {
                    delivered: 2,
                    acks: Some(vec![
                        AckAnswer {
                            socket: "a".into(),
                            args: Some(json!([1, {"x": null}])),
                            attachments: vec!["AQI=".into()],
                            error: None,
                        },
                        AckAnswer {
                            socket: "b".into(),
                            args: None,
                            attachments: Vec::new(),
                            error: Some("timeout".into()),
                        },
                    ]),
                    offset: Some("1.2".into()),
                },
            ),
            ("".to_string(), ChannelEmitResult::default()),
        ];
        let as_json: Vec<(String, Value)> = results
            .iter()
            .map(|(channel, result)| {
                (
                    channel.clone(),
                    through_text(serde_json::to_value(result).unwrap()),
                )
            })
            .collect();
        assert_eq!(
            emit_json_response(&as_json).body,
            emit_response(&results).body
        );

        let mut namespace = crate::channel::NamespaceOccupancy {
            sockets: 3,
            ..Default::default()
        };
        namespace.rooms.insert("r".into(), 2);
        let mut occupancy = Occupancy {
            connections: 4,
            members: Some(2),
            ..Default::default()
        };
        occupancy.namespaces.insert("/".into(), namespace.clone());
        occupancy.namespaces.insert("/admin".into(), namespace);
        let json = through_text(serde_json::to_value(&occupancy).unwrap());
        for policy in [
            ChannelPolicy::default(),
            ChannelPolicy {
                presence: Some(Default::default()),
                ..ChannelPolicy::default()
            },
        ] {
            let typed = occupancy_response("chats/1", &occupancy, &policy);
            assert_eq!(
                occupancy_json_response("chats/1", &json, &policy).body,
                typed.body
            );
            let body: Value = serde_json::from_slice(&typed.body).unwrap();
            assert_eq!(body["sockets"], 6);
        }
    }

    #[test]
    fn a_channel_named_history_keeps_its_information_route() {
        let config = Config::from_json(
            r#"{"CHANNELS": {"chats/:id": {"recovery": true}, "logs/history": {}}}"#,
        )
        .unwrap();
        let resolve = |path| resolve_channel_route(crate::http::route(path), &config);
        assert_eq!(
            resolve("/channels/chats/1/history"),
            Route::ChannelHistory("chats/1".into())
        );
        assert_eq!(
            resolve("/channels/logs/history"),
            Route::ChannelInfo("logs/history".into())
        );
        assert_eq!(
            resolve("/channels/nothing/history"),
            Route::ChannelHistory("nothing".into())
        );
    }

    #[test]
    fn responses_have_the_documented_shape() {
        let delivered = |delivered| ChannelEmitResult {
            delivered,
            ..ChannelEmitResult::default()
        };
        let response = emit_response(&[
            ("chats/1".into(), delivered(2)),
            (String::new(), delivered(1)),
        ]);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body,
            json!({"delivered": 3, "channels": {"chats/1": {"delivered": 2}, "/": {"delivered": 1}}})
        );
        let error = ApiError::invalid("event", "bad").response();
        assert_eq!(error.status, 400);
        let body: Value = serde_json::from_slice(&error.body).unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_request", "field": "event", "message": "bad"})
        );
    }
}
