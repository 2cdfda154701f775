//! The Worker: a stateless router in front of one Durable Object per channel.

use switchboard_core::http::{self as core_http, EngineError, HttpResponse, Method, Route};
use worker::{Context, Env, Request, Response, event};

use crate::env_config::config;
use crate::object::{ENGINE_ECHO_OBJECT, to_worker_response};

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
    let url = request.url()?;
    let (object_name, policy) = match core_http::route(url.path()) {
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
        Route::NotFound => return to_worker_response(HttpResponse::text(404, "not found")),
    };
    let origin = request.headers().get("origin")?;
    let method = Method::parse(request.method().as_ref());
    if method == Method::Options {
        return to_worker_response(core_http::preflight_response(&policy, origin.as_deref()));
    }
    // Requests Engine.IO refuses anyway never reach (or create) an object.
    let query = match core_http::parse_engine_query(url.query()) {
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
