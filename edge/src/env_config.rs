//! The configuration, read from the Worker environment once per isolate.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};
use switchboard_core::auth::JWT_SECRET_VAR;
use switchboard_core::backend::WEBHOOK_SECRET_VAR;
use switchboard_core::config::{Config, keys};
use worker::Env;

thread_local! {
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

/// The parsed configuration; an invalid one is an error naming the key, returned on every request
/// (the Worker cannot refuse to start).
pub fn config(env: &Env) -> worker::Result<Rc<Config>> {
    if let Some(config) = CONFIG.with(|cell| cell.borrow().clone()) {
        return Ok(config);
    }
    let mut vars = Map::new();
    for key in keys::ALL {
        // Vars arrive as JS values: strings, or numbers, booleans and tables for JSON-typed vars.
        // Going through JSON text keeps integers integers.
        let Ok(value) = js_sys::Reflect::get(env.as_ref(), &(*key).into()) else {
            continue;
        };
        if value.is_undefined() {
            continue;
        }
        let Some(text) = js_sys::JSON::stringify(&value)
            .ok()
            .and_then(|text| text.as_string())
        else {
            continue;
        };
        if let Ok(value) = serde_json::from_slice::<Value>(text.as_bytes()) {
            vars.insert((*key).to_string(), value);
        }
    }
    let secret = |name: &str| {
        js_sys::Reflect::get(env.as_ref(), &name.into())
            .ok()
            .and_then(|value| value.as_string())
    };
    let config = Config::from_vars(&vars)
        .map_err(|err| worker::Error::RustError(err.to_string()))?
        .with_jwt_secret(secret(JWT_SECRET_VAR).as_deref())
        .with_webhook_secret(secret(WEBHOOK_SECRET_VAR).as_deref());
    if config.has_backend_channels() && secret(WEBHOOK_SECRET_VAR).is_none_or(|s| s.is_empty()) {
        worker::console_warn!(
            "switchboard: channels call the app backend but {WEBHOOK_SECRET_VAR} is not set: no call is made (wrangler secret put {WEBHOOK_SECRET_VAR})"
        );
    }
    let config = Rc::new(config);
    CONFIG.with(|cell| *cell.borrow_mut() = Some(config.clone()));
    Ok(config)
}
