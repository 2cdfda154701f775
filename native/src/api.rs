//! The backend's HTTP API on the native server: `POST /emit`, `GET /channels/<channel>`,
//! `GET /healthz`, and the test-only `/__debug/` endpoints. Parsing, validation, authentication and
//! answers come from `switchboard_core::api`; this file only routes to channel tasks.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use switchboard_core::api::{self, ApiError};
use switchboard_core::http::{self as core_http, HttpResponse, Method, Route};
use switchboard_core::web;
use tokio::sync::oneshot;

use crate::actor::Command;
use crate::transport::{AppState, to_axum};

/// Every API request.
pub async fn api_endpoint(State(state): State<AppState>, request: Request) -> Response {
    let route = core_http::route(request.uri().path());
    let method = request.method().clone();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let admitted = api::admit(
        &route,
        Method::parse(method.as_str()),
        authorization.as_deref(),
        state.api_secret.as_deref(),
    );
    let response = match route {
        Route::Health => Ok(api::health_response()),
        Route::Asset(path) if state.config.chat_example() => {
            Ok(web::asset(&path).unwrap_or_else(|| HttpResponse::text(404, "not found")))
        }
        Route::Emit => match admitted {
            Ok(()) => emit(&state, request).await,
            Err(error) => Err(error),
        },
        Route::ChannelInfo(channel) => match admitted {
            Ok(()) => channel_info(&state, channel).await,
            Err(error) => Err(error),
        },
        Route::Debug { action, channel } if state.config.debug_endpoints() => {
            Ok(debug(&state, &action, channel).await)
        }
        Route::BadChannelName(problem) => Ok(core_http::bad_channel_response(&problem)),
        _ => Ok(HttpResponse::text(404, "not found")),
    };
    to_axum(response.unwrap_or_else(|error| error.response()))
}

async fn emit(state: &AppState, request: Request) -> Result<HttpResponse, ApiError> {
    let body = to_bytes(request.into_body(), api::MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError {
            status: 413,
            code: "payload_too_large",
            field: None,
            message: format!("the body is larger than {} bytes", api::MAX_BODY_BYTES),
        })?;
    let emits = api::parse_emit(&body, &state.config)?;
    let mut delivered = Vec::with_capacity(emits.len());
    for emit in emits {
        let (reply, answer) = oneshot::channel();
        let command = Command::Emit {
            emit: Box::new(emit.to_server_emit()),
            reply,
        };
        // A channel without a live task has no sockets: nothing to deliver, nothing to start.
        let count = if state.registry.send_if_live(&emit.channel, command).await {
            match answer.await {
                Ok(Ok(emitted)) => emitted.delivered,
                Ok(Err(error)) => {
                    return Err(ApiError {
                        status: 400,
                        code: "invalid_request",
                        field: None,
                        message: error.to_string(),
                    });
                }
                Err(_) => 0,
            }
        } else {
            0
        };
        delivered.push((emit.channel, count));
    }
    Ok(api::emit_response(&delivered))
}

async fn channel_info(state: &AppState, channel: String) -> Result<HttpResponse, ApiError> {
    if state.config.policy_for(&channel).is_none() {
        return Err(ApiError::unknown_channel("channel", &channel));
    }
    let occupancy = state
        .registry
        .ask_if_live(&channel, |reply| Command::Occupancy { reply })
        .await
        .unwrap_or_default();
    Ok(api::occupancy_response(&channel, &occupancy))
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
