//! The configuration parser: `wrangler.toml` `[vars]` (read as the native host reads it, TOML to
//! JSON), the vars as a JSON object, `CHANNELS` as JSON text (an environment variable override),
//! every other var as a string (environment overrides are strings). Parsing never panics; a
//! configuration that parses is coherent (patterns re-parse, every rule's own channels find a
//! policy, policies keep at least one namespace), and a channel built from each policy survives a
//! short session.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use switchboard_core::backend::ClientInfo;
use switchboard_core::channel::Channel;
use switchboard_core::config::{
    ChannelPattern, ChannelPolicy, Config, keys, validate_channel_name,
};
use switchboard_core::http::Method;
use switchboard_core::testing::SequenceRandom;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.trim_start().starts_with('{') {
        if let Ok(config) = Config::from_json(text) {
            check(&config);
        }
        if let Ok(Value::Object(vars)) = serde_json::from_str::<Value>(text) {
            // The same vars as environment overrides: CHANNELS stays JSON text, the rest strings.
            let mut strings = Map::new();
            for (key, value) in &vars {
                let value = match value {
                    Value::String(text) => Value::String(text.clone()),
                    other => Value::String(other.to_string()),
                };
                strings.insert(key.clone(), value);
            }
            if let Ok(config) = Config::from_vars(&strings) {
                check(&config);
            }
            // The object as the CHANNELS table itself.
            let mut wrapped = Map::new();
            wrapped.insert(keys::CHANNELS.into(), Value::Object(vars));
            if let Ok(config) = Config::from_vars(&wrapped) {
                check(&config);
            }
        }
        return;
    }
    // wrangler.toml: its [vars] table, or the document itself when it has none.
    let Ok(document) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    let vars = document
        .get("vars")
        .cloned()
        .unwrap_or(toml::Value::Table(document));
    if let Ok(Value::Object(vars)) = serde_json::to_value(&vars)
        && let Ok(config) = Config::from_vars(&vars)
    {
        check(&config);
    }
});

fn check(config: &Config) {
    assert!(
        !config.rules().is_empty(),
        "a configuration has at least one channel"
    );
    let config = config
        .clone()
        .with_jwt_secret(Some("jwt"))
        .with_webhook_secret(Some("hook"));
    let _ = (
        config.has_private_channels(),
        config.has_backend_channels(),
        config.debug_endpoints(),
    );
    for rule in config.rules() {
        let pattern = &rule.pattern;
        assert_eq!(
            ChannelPattern::parse(pattern.as_str()).as_ref(),
            Ok(pattern)
        );
        let policy = &rule.policy;
        assert!(
            !policy.namespaces.is_empty(),
            "a policy keeps at least one namespace"
        );
        for namespace in &policy.namespaces {
            assert!(policy.allows_namespace(namespace));
        }
        if policy.auth.needs_token() {
            assert!(
                policy.jwt_secret.is_some(),
                "with_jwt_secret reaches every private channel"
            );
        }
        // A channel of this pattern: every parameter bound to "v".
        let name = if pattern.as_str() == "/" {
            String::new()
        } else {
            pattern
                .as_str()
                .split('/')
                .map(|segment| {
                    if segment.starts_with(':') {
                        "v"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        assert!(
            pattern.matches(&name),
            "{pattern:?} does not match {name:?}"
        );
        if validate_channel_name(&name).is_ok() {
            assert!(
                config.policy_for(&name).is_some(),
                "{name:?} matches a rule but finds no policy"
            );
            drive(&name, policy.clone());
        }
    }
    if let Some(echo) = config.engine_echo() {
        drive(switchboard_core::http::ENGINE_IO_KEY, echo.clone());
    }
}

/// A short life of a channel with this policy: a WebSocket session and a polling session connect,
/// send an event, answer a ping, and time passes until the timers would have fired twice.
fn drive(name: &str, policy: Arc<ChannelPolicy>) {
    let mut channel = Channel::new(name, policy.clone(), Box::new(SequenceRandom::new(3)));
    let mut now = switchboard_fuzz::START_MS;
    let namespace = &policy.namespaces[0];
    let connect = if namespace == "/" {
        "40".to_string()
    } else {
        format!("40{namespace},")
    };
    let event = if namespace == "/" {
        r#"42["chat message","hi"]"#.to_string()
    } else {
        format!(r#"42{namespace},["chat message","hi"]"#)
    };
    channel.handle_ws_open(1, None, ClientInfo::default(), now);
    for text in [connect.as_str(), event.as_str(), "3"] {
        channel.handle_ws_text(1, text, now);
    }
    channel.handle_polling(
        100,
        Method::Get,
        None,
        None,
        ClientInfo::default(),
        Bytes::new(),
        now,
    );
    while channel.poll_output().is_some() {}
    let horizon = now
        + 2 * (policy.ping_interval_ms + policy.ping_timeout_ms).max(policy.connect_timeout_ms)
        + 10_000;
    for _ in 0..64 {
        let Some(deadline) = channel.poll_timeout() else {
            break;
        };
        if deadline > horizon {
            break;
        }
        now = now.max(deadline);
        channel.handle_timeout(now);
        while channel.poll_output().is_some() {}
        if let Some(next) = channel.poll_timeout() {
            assert!(
                next > now,
                "after handle_timeout({now}) the next timer is {next}: {policy:?}"
            );
        }
    }
    channel.handle_ws_closed(1, now);
    channel.close_all(now);
    while channel.poll_output().is_some() {}
}
