//! What the fuzz targets share: a configuration with one channel of each kind (modelled on the
//! conformance environment of `wrangler.toml`, with short timers), the secrets hosts would set, and
//! HS256 tokens for its private channels.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_core::config::Config;

/// The `JWT_SECRET` the fuzzing hosts run with.
pub const JWT_SECRET: &str = "fuzz-jwt-secret";
/// The `WEBHOOK_SECRET` (backend calls are only made with one).
pub const WEBHOOK_SECRET: &str = "fuzz-webhook-secret";
/// The `API_SECRET`.
pub const API_SECRET: &str = "fuzz-api-secret";
/// Where the channel targets' clocks start (milliseconds since the epoch): tokens compare with
/// calendar time.
pub const START_MS: u64 = 1_700_000_000_000;

/// `[vars]` as JSON: a relay channel of each mode and limit, private channels, backend handler
/// channels, a connect hook, webhooks, the Socket.IO conformance server on the default channel
/// and the Engine.IO echo endpoint.
pub const VARS: &str = r#"{
    "PING_INTERVAL": 300,
    "PING_TIMEOUT": 200,
    "CONNECT_TIMEOUT": 1000,
    "MAX_PAYLOAD": 10000,
    "PONG_AUTO_RESPONSE": false,
    "ENGINE_IO_ECHO": true,
    "DEBUG_ENDPOINTS": true,
    "BACKEND_URL": "http://backend.test/switchboard",
    "BACKEND_TIMEOUT": 700,
    "CHANNELS": {
        "/": { "behaviour": "conformance", "namespaces": ["/", "/custom"] },
        "relay/:id": { "relay": "all", "namespaces": ["/", "/admin"], "client_rooms": true, "pong_auto_response": true },
        "others/:id": { "relay": "others", "client_rooms": true },
        "quiet/:id": { "relay": "none" },
        "small/:id": { "relay": "all", "max_payload": 200 },
        "limited/:id": { "relay": "all", "max_sockets": 3, "events_per_second": 5 },
        "origin/:id": { "relay": "all", "allowed_origins": ["http://allowed.example"] },
        "private/:id": { "auth": "private", "relay": "all" },
        "users/:user_id/notifications": { "auth": "private", "bind": { "user_id": "sub" }, "relay": "none" },
        "shop/:id": {
            "relay_events": ["chat message"],
            "handlers": {
                "create product": { "schema": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"], "additionalProperties": false } },
                "list products": {},
                "try product": { "timeout": 500 }
            }
        },
        "express/:id": {
            "relay_events": [],
            "handlers": { "send-message": {}, "upload": { "ack": "raw" } }
        },
        "members/:team": { "auth": "backend", "handlers": { "whoami": {} } },
        "vip/:team": { "auth": ["private", "backend"], "client_rooms": true },
        "watched/:id": { "relay": "all", "webhooks": true, "webhook_events": ["chat message"] },
        "recovery/:id": { "relay": "all", "client_rooms": true, "recovery": { "window": 3000, "history_events": 8, "history_bytes": 2000 } },
        "private-recovery/:id": { "auth": "private", "relay": "all", "recovery": { "skip_middlewares": true } },
        "presence/:id": { "auth": "private", "relay": "all", "recovery": { "window": 3000 }, "presence": { "leave_grace": 500, "max_members": 4, "max_info_bytes": 64, "page_size": 2 }, "webhooks": ["member_added", "member_removed"] },
        "crowd/:id": { "relay": "all", "presence": { "coalesce": 200, "page_size": 3 } }
    }
}"#;

/// The configuration above, with the secrets set, built once per process.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_json(VARS)
            .expect("the fuzzing configuration is valid")
            .with_jwt_secret(Some(JWT_SECRET))
            .with_webhook_secret(Some(WEBHOOK_SECRET))
    })
}

/// An HS256 JWT of `claims` signed with `secret`, as an app backend makes them.
pub fn hs256(claims: &Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// Tokens a client may present on the private channels: valid ones, and each way to be wrong.
pub fn tokens() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let now_s = START_MS / 1000;
        let channels = json!(["private/1", "users/:user_id/notifications", "vip/:team", "presence/:id"]);
        let claims = |sub: &str, exp: u64| {
            json!({ "sub": sub, "exp": exp, "channels": channels, "rooms": ["vip-room", "r"], "info": { "name": sub } })
        };
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims("u1", now_s + 3600).to_string())
        );
        vec![
            // Valid for an hour, for every private channel of the configuration (u1's own).
            hs256(&claims("u1", now_s + 3600), JWT_SECRET),
            // Expires a few seconds into the run: sockets outlive their token.
            hs256(&claims("u1", now_s + 5), JWT_SECRET),
            // Another user: `users/u1/notifications` refuses it.
            hs256(&claims("u2", now_s + 3600), JWT_SECRET),
            // Expired.
            hs256(&claims("u1", now_s - 10), JWT_SECRET),
            // Not valid yet.
            hs256(
                &json!({ "sub": "u1", "exp": now_s + 3600, "nbf": now_s + 60, "channels": channels }),
                JWT_SECRET,
            ),
            // Opens no channel here.
            hs256(
                &json!({ "sub": "u1", "exp": now_s + 3600, "channels": ["elsewhere/1"] }),
                JWT_SECRET,
            ),
            // Signed with another key.
            hs256(&claims("u1", now_s + 3600), "not-the-secret"),
            none_alg,
            "not.a.jwt".to_string(),
        ]
    })
}

/// The text frames of a list of frames, for reading ids out of what the server sent.
pub fn texts(frames: &[switchboard_core::frame::WireFrame]) -> impl Iterator<Item = &str> {
    frames.iter().filter_map(|frame| frame.as_text())
}
