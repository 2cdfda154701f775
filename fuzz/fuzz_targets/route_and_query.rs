//! The front door both hosts share: URL routing, the Engine.IO query, request admission (route,
//! channel policy, preflight, origin, query, upgrade), the API gate, CORS and the client bundle's
//! caching, for an arbitrary request head.
//!
//! The input reads like an HTTP request head: a first line `METHOD TARGET` (the target split at
//! its first `?` into path and query), then `Name: value` header lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::api;
use switchboard_core::backend::ClientInfo;
use switchboard_core::config::{Config, validate_channel_name};
use switchboard_core::http::{
    self, EngineRequestHead, Method, Route, TransportKind, check_origin, cors_headers,
    parse_engine_query, preflight_response,
};
use switchboard_fuzz::{API_SECRET, config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let first = lines.next().unwrap_or("");
    let (method_text, target) = first.split_once(' ').unwrap_or((first, ""));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    };
    let method = Method::parse(method_text);
    let origin = header("origin");
    let upgrade = header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket"));

    // Routing.
    let route = http::route(path);
    match &route {
        Route::Channel(channel) | Route::ChannelInfo(channel) => {
            assert_eq!(
                validate_channel_name(channel),
                Ok(()),
                "{path:?} routed to {channel:?}"
            );
        }
        Route::Debug { channel, .. } => assert_eq!(validate_channel_name(channel), Ok(())),
        Route::ClientFile(file) => {
            assert_eq!(switchboard_core::client::file_for_path(path), Some(*file));
        }
        _ => {}
    }
    assert_eq!(
        http::route(path),
        route,
        "routing is a function of the path"
    );

    // The Engine.IO query.
    let parsed = parse_engine_query(query);
    if let Ok(parsed) = &parsed
        && let Some(sid) = &parsed.sid
    {
        assert!(!sid.is_empty() && sid.len() <= 64);
        assert!(
            sid.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    if let Err(error) = parsed {
        let response = error.response();
        assert!(response.status == 400 || response.status == 403);
    }

    // Admission, against the fuzzing configuration and the embedded default.
    let head = EngineRequestHead {
        path,
        method,
        origin,
        query,
        websocket_upgrade: upgrade,
    };
    static EMBEDDED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    let configs: [&Config; 2] = [config(), EMBEDDED.get_or_init(Config::embedded_default)];
    for config in configs {
        match http::admit_engine_request(config, &head) {
            Ok(admission) => {
                assert_ne!(
                    method,
                    Method::Options,
                    "a preflight is answered at the door"
                );
                assert_eq!(Ok(admission.query.clone()), parse_engine_query(query));
                if admission.query.transport == TransportKind::WebSocket {
                    assert!(upgrade, "a WebSocket request that is not an upgrade got in");
                }
                assert_eq!(check_origin(&admission.policy, origin), Ok(()));
                if admission.key == http::ENGINE_IO_KEY {
                    assert_eq!(route, Route::EngineEcho);
                    assert_eq!(config.engine_echo(), Some(&admission.policy));
                } else {
                    assert_eq!(route, Route::Channel(admission.key.clone()));
                    assert_eq!(config.policy_for(&admission.key), Some(&admission.policy));
                }
                let _ = cors_headers(&admission.policy, origin);
                let _ = preflight_response(&admission.policy, origin);
            }
            Err(response) => {
                assert!((200..600).contains(&response.status));
                if method == Method::Options && response.status == 204 {
                    assert!(response.body.is_empty());
                }
            }
        }
        if let Route::Channel(channel) | Route::ChannelInfo(channel) = &route
            && let Some(policy) = config.policy_for(channel)
        {
            let _ = policy.allows_origin(origin.unwrap_or(""));
            if let Some(pattern) = &policy.pattern {
                assert!(pattern.matches(channel));
                let _ = pattern.bind(channel);
            }
        }
    }

    // The API gate: method first, then the bearer secret.
    let authorization = header("authorization");
    for secret in [Some(API_SECRET), None, Some("")] {
        if matches!(route, Route::Emit | Route::ChannelInfo(_)) {
            let admitted = api::admit(&route, method, authorization, secret);
            if let Err(error) = &admitted {
                let response = error.response();
                assert_eq!(response.status, error.status);
            }
            if admitted.is_ok() {
                assert_eq!(secret, Some(API_SECRET));
            }
        }
        let authorized = api::authorize(authorization, secret);
        if authorized.is_ok() {
            assert_eq!(secret, Some(API_SECRET));
        }
    }

    // The client bundle's caching, and the headers a connect hook is shown.
    let _ = switchboard_core::client::not_modified("1.2.3", header("if-none-match"));
    let client = ClientInfo::from_request(
        headers.iter().copied(),
        header("x-address").map(String::from),
    );
    for (name, value) in &client.headers {
        assert!(switchboard_core::backend::FORWARDED_HEADERS.contains(&name.as_str()));
        assert!(value.len() <= switchboard_core::backend::MAX_FORWARDED_HEADER_BYTES);
    }
    let _ = client.headers_json();
    let _ = api::display_channel(path);
});
