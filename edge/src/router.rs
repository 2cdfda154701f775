//! The Worker: a stateless router in front of one Durable Object per channel.

use switchboard_core::api::{self, API_SECRET_VAR, ApiError, ChannelEmit};
use switchboard_core::channel::Occupancy;
use switchboard_core::config::Config;
use switchboard_core::http::{self as core_http, EngineError, HttpResponse, Method, Route};
use switchboard_core::web;
use wasm_bindgen::JsValue;
use worker::{Context, Env, Request, Response, event};

use crate::env_config::config;
use crate::object::{ENGINE_ECHO_OBJECT, INTERNAL_PREFIX, query_of, to_worker_response};

/// Durable Object binding of the channel class (see `wrangler.toml`).
pub const CHANNELS_BINDING: &str = "CHANNEL_OBJECTS";

#[event(fetch)]
async fn fetch(request: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let config = match config(&env) {
        Ok(config) => config,
        Err(err) => {
            return to_worker_response(HttpResponse::json(
                500,
                &serde_json::json!({ "error": "invalid_configuration", "message": err.to_string() }),
            ));
        }
    };
    let path = request.path();
    let raw_url = request.inner().url();
    let route = core_http::route(&path);
    match route {
        Route::Asset(asset) => {
            let response = match web::asset(&asset) {
                Some(response) if config.chat_example() => response,
                _ => HttpResponse::text(404, "not found"),
            };
            return to_worker_response(response);
        }
        Route::Emit | Route::ChannelInfo(_) | Route::Health | Route::Debug { .. } => {
            let response = api_request(request, &env, &config, route).await;
            return to_worker_response(response.unwrap_or_else(|error| error.response()));
        }
        _ => {}
    }
    let (object_name, policy) = match route {
        Route::Channel(channel) => match config.policy_for(&channel) {
            Some(policy) => (channel, policy.clone()),
            // Refused here, before any Durable Object exists for the name.
            None => return to_worker_response(core_http::unknown_channel_response(&channel)),
        },
        Route::EngineEcho => match config.engine_echo() {
            Some(policy) => (ENGINE_ECHO_OBJECT.to_string(), policy.clone()),
            None => return to_worker_response(HttpResponse::text(404, "not found")),
        },
        Route::BadChannelName(problem) => {
            return to_worker_response(core_http::bad_channel_response(&problem));
        }
        _ => return to_worker_response(HttpResponse::text(404, "not found")),
    };
    let origin = request.headers().get("origin")?;
    let method = Method::parse(request.method().as_ref());
    if method == Method::Options {
        return to_worker_response(core_http::preflight_response(&policy, origin.as_deref()));
    }
    if let Err(error) = core_http::check_origin(&policy, origin.as_deref()) {
        return to_worker_response(error.response());
    }
    // Requests Engine.IO refuses anyway never reach (or create) an object.
    let query = match core_http::parse_engine_query(query_of(&raw_url)) {
        Ok(query) => query,
        Err(error) => {
            let cors = core_http::cors_headers(&policy, origin.as_deref());
            return to_worker_response(error.response().with_headers(cors));
        }
    };
    let is_upgrade = request
        .headers()
        .get("upgrade")?
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if query.transport == core_http::TransportKind::WebSocket && !is_upgrade {
        return to_worker_response(EngineError::BadRequest.response());
    }
    let namespace = env.durable_object(CHANNELS_BINDING)?;
    let stub = namespace.id_from_name(&object_name)?.get_stub()?;
    stub.fetch_with_request(request).await
}

/// The backend's HTTP API. The Worker authenticates and validates; each channel's Durable Object
/// delivers and counts.
async fn api_request(
    mut request: Request,
    env: &Env,
    config: &Config,
    route: Route,
) -> Result<HttpResponse, ApiError> {
    let method = request.method();
    if let Route::Health = route {
        return Ok(api::health_response());
    }
    if let Route::Debug { action, channel } = route {
        if !config.debug_endpoints() {
            return Ok(HttpResponse::text(404, "not found"));
        }
        if config.policy_for(&channel).is_none() {
            return Err(ApiError::unknown_channel("channel", &channel));
        }
        return internal_call(env, &channel, &action, None).await;
    }
    let authorization = request.headers().get("authorization").ok().flatten();
    api::admit(
        &route,
        Method::parse(method.as_ref()),
        authorization.as_deref(),
        secret(env).as_deref(),
    )?;
    match route {
        Route::Emit => {
            let body = request.bytes().await.unwrap_or_default();
            let emits = api::parse_emit(&body, config)?;
            let mut delivered = Vec::with_capacity(emits.len());
            for emit in &emits {
                let answer = internal_call(env, &emit.channel, "emit", Some(emit)).await?;
                let count = serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|value| value["delivered"].as_u64())
                    .unwrap_or(0);
                delivered.push((emit.channel.clone(), count as usize));
            }
            Ok(api::emit_response(&delivered))
        }
        Route::ChannelInfo(channel) => {
            if config.policy_for(&channel).is_none() {
                return Err(ApiError::unknown_channel("channel", &channel));
            }
            let answer = internal_call(env, &channel, "occupancy", None).await?;
            let occupancy: Occupancy = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(api::occupancy_response(&channel, &occupancy))
        }
        _ => Ok(HttpResponse::text(404, "not found")),
    }
}

fn secret(env: &Env) -> Option<String> {
    js_sys::Reflect::get(env.as_ref(), &API_SECRET_VAR.into())
        .ok()
        .and_then(|value| value.as_string())
}

/// Calls a channel's Durable Object on a path only the Worker can reach (the Worker forwards client
/// requests only under `/socket.io/`).
async fn internal_call(
    env: &Env,
    channel: &str,
    action: &str,
    emit: Option<&ChannelEmit>,
) -> Result<HttpResponse, ApiError> {
    let unavailable = |err: worker::Error| ApiError {
        status: 502,
        code: "channel_unavailable",
        field: None,
        message: format!("the channel's Durable Object did not answer: {err}"),
    };
    let url = format!("https://channel{INTERNAL_PREFIX}{action}/{channel}");
    // Plain web_sys: the `worker` crate's RequestInit drags in a serde bridge the edge otherwise
    // does not need.
    let init = worker::web_sys::RequestInit::new();
    init.set_method("POST");
    if let Some(emit) = emit {
        let body = serde_json::to_string(emit).unwrap_or_default();
        init.set_body(&JsValue::from_str(&body));
    }
    let request = worker::web_sys::Request::new_with_str_and_init(&url, &init)
        .map(Request::from)
        .map_err(|err| unavailable(err.into()))?;
    let namespace = env.durable_object(CHANNELS_BINDING).map_err(unavailable)?;
    let stub = namespace
        .id_from_name(channel)
        .and_then(|id| id.get_stub())
        .map_err(unavailable)?;
    let mut response = stub
        .fetch_with_request(request)
        .await
        .map_err(unavailable)?;
    let body = response.bytes().await.map_err(unavailable)?;
    Ok(HttpResponse {
        status: response.status_code(),
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
    })
}
