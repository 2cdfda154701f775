//! The Worker: a stateless router in front of one Durable Object per channel.
//!
//! Files of the static folder (`[assets]` in `wrangler.toml`) never reach it: Cloudflare serves
//! them first. Everything else comes here and goes where core's [`route`](core_http::route) says.

use switchboard_core::api::{self, API_SECRET_VAR, ApiError};
use switchboard_core::client;
use switchboard_core::config::Config;
use switchboard_core::http::{self as core_http, EngineRequestHead, HttpResponse, Method, Route};
use wasm_bindgen::{JsCast, JsValue};
use worker::{Context, Env, Request, Response, event};

use crate::env_config::config;
use crate::internal::{self, Call};
use crate::object::{query_of, to_worker_response};

/// Durable Object binding of the channel class (see `wrangler.toml`).
pub const CHANNELS_BINDING: &str = "CHANNEL_OBJECTS";

/// Where `edge/entry.mjs` leaves socket.io-client's bundle for the Worker: `{ version, files }`.
const CLIENT_BUNDLE_GLOBAL: &str = "__switchboardClientBundle";

#[event(fetch)]
async fn fetch(request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
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
    match core_http::route(&path) {
        Route::Channel(_) | Route::EngineEcho | Route::BadChannelName(_) => {
            engine_request(request, &env, &ctx, &config, &path).await
        }
        Route::ClientFile(file) => {
            let if_none_match = request.headers().get("if-none-match")?;
            to_worker_response(client_file(file, if_none_match.as_deref()))
        }
        Route::NotFound => to_worker_response(HttpResponse::text(404, "not found")),
        route => {
            let route = api::resolve_channel_route(route, &config);
            let response = api_request(request, &env, &config, route).await;
            to_worker_response(response.unwrap_or_else(|error| error))
        }
    }
}

/// An Engine.IO request: core's front door decides, and only what it admits reaches (or creates)
/// the channel's Durable Object.
async fn engine_request(
    request: Request,
    env: &Env,
    ctx: &Context,
    config: &Config,
    path: &str,
) -> worker::Result<Response> {
    let raw_url = request.inner().url();
    let origin = request.headers().get("origin")?;
    let upgrade = request.headers().get("upgrade")?;
    let head = EngineRequestHead {
        path,
        method: Method::parse(request.method().as_ref()),
        origin: origin.as_deref(),
        query: query_of(&raw_url),
        websocket_upgrade: upgrade.is_some_and(|value| value.eq_ignore_ascii_case("websocket")),
    };
    let admission = match core_http::admit_engine_request(config, &head) {
        Ok(admission) => admission,
        Err(response) => return to_worker_response(response),
    };
    let namespace = env.durable_object(CHANNELS_BINDING)?;
    let stub = namespace.id_from_name(&admission.key)?.get_stub()?;
    if head.websocket_upgrade {
        return stub.fetch_with_request(request).await;
    }
    // A polling request reaches the object even if its client gives up at once: the runtime
    // cancels a Worker's pending subrequests when the client disconnects, unless they run under
    // `waitUntil`. A GET the client aborted must still arrive and be held, so that the client's
    // next GET is a second concurrent poll and ends the session, as engine.io does.
    let (answer, answered) = futures_channel::oneshot::channel();
    ctx.wait_until(async move {
        let _ = answer.send(stub.fetch_with_request(request).await);
    });
    answered
        .await
        .unwrap_or_else(|_| Err(worker::Error::RustError("channel request dropped".into())))
}

/// A file of socket.io-client's bundle, which `edge/entry.mjs` imports at build time.
fn client_file(file: &str, if_none_match: Option<&str>) -> HttpResponse {
    let global = js_sys::global();
    let bundle = js_sys::Reflect::get(&global, &CLIENT_BUNDLE_GLOBAL.into()).unwrap_or_default();
    let version = js_sys::Reflect::get(&bundle, &"version".into())
        .ok()
        .and_then(|value| value.as_string());
    let Some(version) = version else {
        return client::missing_response();
    };
    if let Some(not_modified) = client::not_modified(&version, if_none_match) {
        return not_modified;
    }
    let text = js_sys::Reflect::get(&bundle, &"files".into())
        .and_then(|files| js_sys::Reflect::get(&files, &file.into()))
        .ok()
        .and_then(|value| value.as_string());
    match text {
        Some(text) => client::response(file, text.into(), &version),
        None => client::missing_response(),
    }
}

/// The backend's HTTP API. The Worker authenticates and validates; each channel's Durable Object
/// delivers and counts.
async fn api_request(
    mut request: Request,
    env: &Env,
    config: &Config,
    route: Route,
) -> Result<HttpResponse, HttpResponse> {
    let method = request.method();
    if let Route::Health = route {
        return Ok(api::health_response());
    }
    if let Route::BadChannelName(problem) = route {
        return Ok(core_http::bad_channel_response(&problem));
    }
    let authorization = request.headers().get("authorization").ok().flatten();
    if let Route::Debug { action, channel } = &route {
        if !config.debug_endpoints() {
            return Ok(HttpResponse::text(404, "not found"));
        }
        // Test-only, and still the API's: they take the API secret.
        api::admit(
            &route,
            Method::parse(method.as_ref()),
            authorization.as_deref(),
            secret(env).as_deref(),
        )
        .map_err(|error| error.response())?;
        let (action, channel) = (action.clone(), channel.clone());
        if config.policy_for(&channel).is_none() {
            return Err(ApiError::unknown_channel("channel", &channel).response());
        }
        let call = match action.as_str() {
            "rebuild" => Call::Rebuild,
            "stats" => Call::Stats,
            _ => return Ok(HttpResponse::text(404, "unknown debug action")),
        };
        let answer: serde_json::Value = call_channel(env, &channel, &call).await?;
        return Ok(HttpResponse::json(200, &answer));
    }
    api::admit(
        &route,
        Method::parse(method.as_ref()),
        authorization.as_deref(),
        secret(env).as_deref(),
    )
    .map_err(|error| error.response())?;
    match route {
        Route::Emit => {
            let body = request.bytes().await.unwrap_or_default();
            let emits = api::parse_emit(&body, config).map_err(|error| error.response())?;
            let mut results = Vec::with_capacity(emits.len());
            for emit in emits {
                let channel = emit.channel.clone();
                // As JSON: the object wrote it from a `ChannelEmitResult`, and the answer is the
                // same.
                let result: serde_json::Value =
                    call_channel(env, &channel, &Call::Emit { emit }).await?;
                results.push((channel, result));
            }
            Ok(api::emit_json_response(&results))
        }
        Route::ChannelHistory(channel) => {
            let Some(policy) = config.policy_for(&channel) else {
                return Err(ApiError::unknown_channel("channel", &channel).response());
            };
            let query =
                api::parse_history_query(request.url().ok().as_ref().and_then(|url| url.query()))
                    .map_err(|error| error.response())?;
            if policy.recovery.is_none() {
                return Ok(api::history_response(
                    &channel,
                    Err(switchboard_core::channel::HistoryError::Off),
                ));
            }
            let answer: serde_json::Value =
                call_channel(env, &channel, &Call::History { query }).await?;
            Ok(HttpResponse::json(200, &answer))
        }
        Route::ChannelPresence(channel) => {
            let Some(policy) = config.policy_for(&channel) else {
                return Err(ApiError::unknown_channel("channel", &channel).response());
            };
            let query =
                api::parse_history_query(request.url().ok().as_ref().and_then(|url| url.query()))
                    .map_err(|error| error.response())?;
            if policy.presence.is_none() {
                return Ok(api::presence_response(
                    &channel,
                    Err(switchboard_core::channel::PresenceError::Off),
                ));
            }
            let answer: serde_json::Value =
                call_channel(env, &channel, &Call::Presence { query }).await?;
            Ok(HttpResponse::json(200, &answer))
        }
        Route::ChannelInfo(channel) => {
            let Some(policy) = config.policy_for(&channel) else {
                return Err(ApiError::unknown_channel("channel", &channel).response());
            };
            // As JSON: the object wrote it from an `Occupancy`, and the answer is the same.
            let occupancy: serde_json::Value =
                call_channel(env, &channel, &Call::Occupancy).await?;
            Ok(api::occupancy_json_response(&channel, &occupancy, policy))
        }
        _ => Ok(HttpResponse::text(404, "not found")),
    }
}

fn secret(env: &Env) -> Option<String> {
    js_sys::Reflect::get(env.as_ref(), &API_SECRET_VAR.into())
        .ok()
        .and_then(|value| value.as_string())
}

/// Makes a [`Call`] to a channel's Durable Object and reads its answer. An error the object
/// answers (a refused emit, say) comes back as the complete response, to be passed on unchanged:
/// the API caller sees what a native server would have said.
async fn call_channel<T: serde::de::DeserializeOwned>(
    env: &Env,
    channel: &str,
    call: &Call,
) -> Result<T, HttpResponse> {
    let body = call_channel_body(env, channel, call).await?;
    serde_json::from_slice(&body).map_err(|err| unavailable(&err))
}

/// [`call_channel`] up to the answer's body: not generic, so that the wasm has one copy of it.
async fn call_channel_body(env: &Env, channel: &str, call: &Call) -> Result<Vec<u8>, HttpResponse> {
    let url = format!("https://channel{}", internal::path(channel));
    // Plain web_sys: the `worker` crate's RequestInit drags in a serde bridge the edge otherwise
    // does not need.
    let init = worker::web_sys::RequestInit::new();
    init.set_method("POST");
    let body = serde_json::to_string(call).map_err(|err| unavailable(&err))?;
    init.set_body(&JsValue::from_str(&body));
    let request = worker::web_sys::Request::new_with_str_and_init(&url, &init)
        .map(Request::from)
        .map_err(|err| unavailable(&js_error(err)))?;
    let namespace = env
        .durable_object(CHANNELS_BINDING)
        .map_err(|err| unavailable(&err))?;
    let stub = namespace
        .id_from_name(channel)
        .and_then(|id| id.get_stub())
        .map_err(|err| unavailable(&err))?;
    let mut response = stub
        .fetch_with_request(request)
        .await
        .map_err(|err| unavailable(&err))?;
    let body = response.bytes().await.map_err(|err| unavailable(&err))?;
    if response.status_code() != 200 {
        return Err(HttpResponse {
            status: response.status_code(),
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        });
    }
    Ok(body)
}

/// The answer to an API call whose channel's Durable Object could not be asked.
fn unavailable(err: &dyn std::fmt::Display) -> HttpResponse {
    ApiError {
        status: 502,
        code: "channel_unavailable",
        field: None,
        message: format!("the channel's Durable Object did not answer: {err}"),
    }
    .response()
}

fn js_error(value: JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|error| String::from(error.message()))
        .unwrap_or_else(|| format!("{value:?}"))
}
