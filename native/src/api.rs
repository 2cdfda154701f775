//! Everything but the Engine.IO endpoints: the backend's HTTP API (`POST /emit`,
//! `GET /channels/<channel>`, `GET /healthz`, the test-only `/__debug/` endpoints),
//! socket.io-client's browser bundle, and the static folder. Parsing, validation, authentication
//! and answers come from `switchboard_core`; this file only routes to channel tasks and files.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use switchboard_core::api::{self, ApiError, ChannelEmitResult};
use switchboard_core::client;
use switchboard_core::http::{self as core_http, HttpResponse, Method, Route};
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::AppState;
use crate::actor::Command;
use crate::transport::to_axum;

mod bundle {
    include!(concat!(env!("OUT_DIR"), "/client_bundle.rs"));
}

/// The routes of the HTTP API and socket.io-client's bundle.
pub async fn api_endpoint(state: &AppState, route: Route, request: Request) -> Response {
    let route = api::resolve_channel_route(route, &state.config);
    let method = Method::parse(request.method().as_str());
    let authorization = header_text(&request, header::AUTHORIZATION);
    let if_none_match = header_text(&request, header::IF_NONE_MATCH);
    let admitted = || {
        api::admit(
            &route,
            method,
            authorization.as_deref(),
            state.api_secret.as_deref(),
        )
    };
    let response = match route {
        Route::Health => Ok(api::health_response()),
        Route::ClientFile(file) => Ok(client_file(file, if_none_match.as_deref())),
        Route::Emit => match admitted() {
            Ok(()) => emit(state, request).await,
            Err(error) => Err(error),
        },
        Route::ChannelInfo(ref channel) => match admitted() {
            Ok(()) => channel_info(state, channel.clone()).await,
            Err(error) => Err(error),
        },
        Route::ChannelHistory(ref channel) => match admitted() {
            Ok(()) => channel_history(state, channel.clone(), request.uri().query()).await,
            Err(error) => Err(error),
        },
        Route::ChannelPresence(ref channel) => match admitted() {
            Ok(()) => channel_presence(state, channel.clone(), request.uri().query()).await,
            Err(error) => Err(error),
        },
        // Test-only, and still the API's: they take the API secret.
        Route::Debug {
            ref action,
            ref channel,
        } if state.config.debug_endpoints() => match admitted() {
            Ok(()) => Ok(debug(state, action, channel.clone()).await),
            Err(error) => Err(error),
        },
        Route::BadChannelName(problem) => Ok(core_http::bad_channel_response(&problem)),
        _ => Ok(HttpResponse::text(404, "not found")),
    };
    to_axum(response.unwrap_or_else(|error| error.response()))
}

fn header_text(request: &Request, name: header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// A file of socket.io-client's bundle, embedded at build time (`native/build.rs`).
fn client_file(file: &str, if_none_match: Option<&str>) -> HttpResponse {
    let Some((_, bytes)) = bundle::FILES.iter().find(|(name, _)| *name == file) else {
        return client::missing_response();
    };
    client::not_modified(bundle::VERSION, if_none_match)
        .unwrap_or_else(|| client::response(file, Bytes::from_static(bytes), bundle::VERSION))
}

/// A file of the static folder (`[assets] directory`), as Cloudflare's static assets serve it:
/// `/` and `/dir/` are `index.html`, content types by extension, and paths that leave the folder
/// are refused.
pub async fn static_file(state: &AppState, request: Request) -> Response {
    let Some(folder) = state.assets.as_deref() else {
        return to_axum(HttpResponse::text(404, "not found"));
    };
    let served = ServeDir::new(folder)
        .append_index_html_on_directories(true)
        .oneshot(request)
        .await;
    match served {
        Ok(mut response) => {
            // Browsers keep the file but ask again each time (Last-Modified makes that cheap), as
            // Cloudflare's static assets have them do.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=0, must-revalidate"),
            );
            response.map(Body::new)
        }
        Err(never) => match never {},
    }
}

/// How long an emit may wait beyond its own ack timeout for the channel's answer.
const ACK_GRACE: Duration = Duration::from_secs(2);

async fn emit(state: &AppState, request: Request) -> Result<HttpResponse, ApiError> {
    let too_large = || ApiError {
        status: 413,
        code: "payload_too_large",
        field: None,
        message: format!("the body is larger than {} bytes", api::MAX_BODY_BYTES),
    };
    // Refused on its Content-Length alone, without waiting for a body that may never come.
    if crate::transport::declared_length(&request)
        .is_some_and(|length| length > api::MAX_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let body = to_bytes(request.into_body(), api::MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    let emits = api::parse_emit(&body, &state.config)?;
    let mut results = Vec::with_capacity(emits.len());
    for emit in emits {
        let channel = emit.channel.clone();
        let wait = emit
            .ack_timeout
            .map_or(ACK_GRACE, |ms| Duration::from_millis(ms) + ACK_GRACE);
        let (reply, answer) = oneshot::channel();
        let command = Command::Emit {
            emit: Box::new(emit),
            reply,
        };
        // A channel without a live task has no sockets: nothing to deliver, nothing to start.
        // Unless it keeps its history in the data directory: sockets parked there before a
        // restart may come back for the event. (In memory, parked sockets keep their task alive.)
        let keeps_history = state.registry.has_store()
            && state
                .config
                .policy_for(&channel)
                .is_some_and(|policy| policy.recovery.is_some());
        let sent = match state.config.policy_for(&channel) {
            Some(policy) if keeps_history => {
                state.registry.send(&channel, policy, command).await;
                true
            }
            _ => state.registry.send_if_live(&channel, command).await,
        };
        let result = if sent {
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(Ok(result))) => result,
                Ok(Ok(Err(error))) => return Err(error),
                // The channel's task ended first (it had gone idle); it reached no one.
                Ok(Err(_)) | Err(_) => ChannelEmitResult::default(),
            }
        } else {
            ChannelEmitResult::default()
        };
        results.push((channel, result));
    }
    Ok(api::emit_response(&results))
}

/// The policy of a channel a request names, or the `unknown_channel` error.
fn known_policy<'a>(
    state: &'a AppState,
    channel: &str,
) -> Result<&'a std::sync::Arc<switchboard_core::config::ChannelPolicy>, ApiError> {
    state
        .config
        .policy_for(channel)
        .ok_or_else(|| ApiError::unknown_channel("channel", channel))
}

async fn channel_info(state: &AppState, channel: String) -> Result<HttpResponse, ApiError> {
    let policy = known_policy(state, &channel)?;
    let occupancy = state
        .registry
        .ask_if_live(&channel, |reply| Command::Occupancy { reply })
        .await
        .unwrap_or_default();
    Ok(api::occupancy_response(&channel, &occupancy, policy))
}

async fn channel_history(
    state: &AppState,
    channel: String,
    query: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let policy = known_policy(state, &channel)?;
    let query = api::parse_history_query(query)?;
    if policy.recovery.is_none() {
        // The channel answers the same, without starting it.
        return Ok(api::history_response(
            &channel,
            Err(switchboard_core::channel::HistoryError::Off),
        ));
    }
    // Started if need be: with a data directory, the history outlives the channel's task.
    let (reply, answer) = oneshot::channel();
    state
        .registry
        .send(&channel, policy, Command::History { query, reply })
        .await;
    Ok(answer
        .await
        .unwrap_or_else(|_| HttpResponse::text(503, "channel unavailable")))
}

async fn channel_presence(
    state: &AppState,
    channel: String,
    query: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let policy = known_policy(state, &channel)?;
    let query = api::parse_history_query(query)?;
    if policy.presence.is_none() {
        return Ok(api::presence_response(
            &channel,
            Err(switchboard_core::channel::PresenceError::Off),
        ));
    }
    // A channel without a live task has no members.
    let page = state
        .registry
        .ask_if_live(&channel, |reply| Command::Presence { query, reply })
        .await;
    Ok(page.unwrap_or_else(|| {
        api::presence_response(
            &channel,
            Ok(switchboard_core::channel::PresencePage {
                members: Vec::new(),
                count: 0,
                next: None,
            }),
        )
    }))
}

async fn debug(state: &AppState, action: &str, channel: String) -> HttpResponse {
    match action {
        "rebuild" => {
            let sessions = state
                .registry
                .ask_if_live(&channel, |reply| Command::Rebuild { reply })
                .await
                .unwrap_or(0);
            HttpResponse::json(200, &serde_json::json!({ "rebuilt_sessions": sessions }))
        }
        "stats" => {
            let stats = state
                .registry
                .ask_if_live(&channel, |reply| Command::Stats { reply })
                .await
                .unwrap_or_else(|| serde_json::json!({}));
            HttpResponse::json(200, &stats)
        }
        _ => HttpResponse::text(404, "unknown debug action"),
    }
}
