//! The bodies the server parses from the outside: `POST /emit` (`api::parse_emit`), a backend's
//! answer (`backend::answer_object`, and its `{"_binary": …}` values), and the CONNECT `auth`
//! payload of a private channel (`auth::verify_connect`).
//!
//! Parsing never panics. An emit body that parses is coherent (one emit per named channel, each
//! within its policy), survives the Worker → Durable Object hop (JSON) unchanged, and is never
//! refused by the channel it was validated for.
#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_core::api::{
    self, ChannelEmit, EmitProgress, EmitTokens, MAX_ACK_TIMEOUT_MS, MAX_BATCH_CHANNELS,
};
use switchboard_core::auth;
use switchboard_core::backend::{self, BackendAnswer, ClientInfo};
use switchboard_core::channel::Channel;
use switchboard_core::socketio;
use switchboard_core::testing::SequenceRandom;
use switchboard_fuzz::{START_MS, config};

fuzz_target!(|data: &[u8]| {
    emit_body(data);
    backend_answer(data);
    connect_auth(data);
});

fn emit_body(body: &[u8]) {
    let config = config();
    let emits = match api::parse_emit(body, config) {
        Ok(emits) => emits,
        Err(error) => {
            let response = error.response();
            assert!(response.status >= 400, "{error:?}");
            return;
        }
    };
    assert!((1..=MAX_BATCH_CHANNELS).contains(&emits.len()));
    let mut results = Vec::new();
    for emit in &emits {
        let policy = config
            .policy_for(&emit.channel)
            .expect("a parsed emit names a channel");
        assert!(policy.allows_namespace(&emit.namespace));
        let name = emit
            .args
            .as_array()
            .and_then(|args| args.first())
            .and_then(Value::as_str);
        assert!(name.is_some_and(|name| !name.is_empty()), "{:?}", emit.args);
        if let Some(timeout) = emit.ack_timeout {
            assert!((1..=MAX_ACK_TIMEOUT_MS).contains(&timeout));
            assert!(!emit.rooms.is_empty());
        }
        // The Worker hands each channel's part to its Durable Object as JSON.
        let text = serde_json::to_string(emit).expect("a ChannelEmit serializes");
        let back: ChannelEmit = serde_json::from_str(&text).expect("a ChannelEmit reads back");
        assert_eq!(&back, emit);

        // The channel the emit was validated for takes it, with one socket in the namespace.
        let mut channel = Channel::new(
            emit.channel.clone(),
            policy.clone(),
            Box::new(SequenceRandom::new(9)),
        );
        channel.handle_ws_open(1, None, ClientInfo::default(), START_MS);
        let connect = if emit.namespace == "/" {
            "40".to_string()
        } else {
            format!("40{},", emit.namespace)
        };
        channel.handle_ws_text(1, &connect, START_MS);
        while channel.poll_output().is_some() {}
        let mut tokens = EmitTokens::default();
        match api::start_emit(&mut channel, &mut tokens, emit, START_MS) {
            EmitProgress::Done(Ok(result)) => results.push((emit.channel.clone(), result)),
            EmitProgress::Done(Err(error)) => {
                panic!("a channel refused an emit that parse_emit accepted: {error:?} for {emit:?}")
            }
            EmitProgress::AwaitingAcks(collector) => {
                assert!(emit.ack_timeout.is_some());
                let _ = collector.token();
            }
        }
        while channel.poll_output().is_some() {}
    }
    let response = api::emit_response(&results);
    assert_eq!(response.status, 200);
}

fn backend_answer(body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    for status in [200, 204, 500] {
        let answer = BackendAnswer::Response {
            status,
            body: body.clone(),
        };
        let Ok(object) = backend::answer_object(answer) else {
            continue;
        };
        assert!((200..300).contains(&status));
        for value in object.values() {
            // What a backend sends as {"_binary": …} becomes placeholders and attachments, and
            // travels back to a backend inline again.
            if let Some((placeholders, attachments)) = backend::binary_out_of_line(value) {
                let inline = backend::with_binary_inline(&placeholders, &attachments);
                let again = backend::binary_out_of_line(&inline);
                assert!(
                    again.is_some(),
                    "re-inlined binary does not read back: {inline}"
                );
                if !contains_key(value, socketio::PLACEHOLDER_KEY) {
                    assert_eq!(again, Some((placeholders, attachments)));
                }
            }
        }
    }
    let _ = backend::answer_object(BackendAnswer::Failed(String::from_utf8_lossy(&body).into()));
}

fn contains_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| contains_key(v, key)),
        Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

fn connect_auth(body: &[u8]) {
    let Ok(auth_payload) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let config = config();
    for channel in ["private/1", "users/u1/notifications", "vip/t"] {
        let policy = config.policy_for(channel).expect("configured");
        let params: BTreeMap<String, String> = policy
            .pattern
            .as_ref()
            .and_then(|pattern| pattern.bind(channel))
            .unwrap_or_default();
        for now in [START_MS, u64::MAX / 2] {
            if let Ok(grant) =
                auth::verify_connect(Some(&auth_payload), policy, channel, &params, now)
            {
                let _ = grant.subject;
            }
        }
    }
}
