//! Calls to the app backend, driven as a host would: the channel's `BackendCall` outputs are
//! answered (or not) by the test, with the clock in its hands.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;

use super::*;
use crate::backend::{self, BackendAnswer, BackendCall};
use crate::config::{
    AckShape, AuthMode, Backend, ChannelPattern, EventHandler, PayloadSchema, Secret, WebhookEvents,
};

const SECRET: &str = "webhook-secret";

/// A relay channel `shop/1` (pattern `shop/:id`) with a backend and these handlers.
fn shop(edit: impl FnOnce(&mut ChannelPolicy)) -> Harness {
    let mut policy = (*policy(BehaviourKind::Relay, RelayMode::All)).clone();
    policy.pattern = Some(ChannelPattern::parse("shop/:id").unwrap());
    // Heartbeats out of the way: these tests move the clock without answering pings.
    policy.ping_interval_ms = 600_000;
    policy.ping_timeout_ms = 600_000;
    policy.backend = Some(Arc::new(Backend {
        url: "http://backend.test/hooks/".into(),
        timeout_ms: 2_000,
        secret: Some(Secret::new(SECRET)),
    }));
    let mut handlers = BTreeMap::new();
    handlers.insert(
        "create product".to_string(),
        Arc::new(EventHandler {
            schema: Some(
                PayloadSchema::compile(&json!({
                    "type": "object",
                    "properties": { "name": { "type": "string" } },
                    "required": ["name"],
                    "additionalProperties": false,
                }))
                .unwrap(),
            ),
            ack: AckShape::Foal,
            timeout_ms: 500,
        }),
    );
    policy.handlers = handlers;
    edit(&mut policy);
    Harness {
        channel: Channel::new(
            "shop/1",
            Arc::new(policy),
            Box::new(SequenceRandom::new(11)),
        ),
        now: 1_700_000_000_000,
    }
}

fn handler(ack: AckShape, timeout_ms: u64) -> Arc<EventHandler> {
    Arc::new(EventHandler {
        schema: None,
        ack,
        timeout_ms,
    })
}

fn calls(outputs: &[Output]) -> Vec<BackendCall> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::BackendCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

fn warnings(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn call_body(call: &BackendCall) -> Value {
    serde_json::from_slice(&call.body).unwrap()
}

fn header<'a>(call: &'a BackendCall, name: &str) -> &'a str {
    call.headers
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_default()
}

fn ok(body: Value) -> BackendAnswer {
    BackendAnswer::Response {
        status: 200,
        body: Bytes::from(body.to_string()),
    }
}

fn status(code: u16, body: &'static str) -> BackendAnswer {
    BackendAnswer::Response {
        status: code,
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// The JSON of a packet sent to `conn` that starts with `prefix` (`43` for an ack, `42` for an
/// event), after the prefix and any ack id.
fn payloads(outputs: &[Output], conn: ConnId, prefix: &str) -> Vec<Value> {
    texts(outputs, conn)
        .iter()
        .filter_map(|text| text.strip_prefix(prefix))
        .map(|rest| {
            serde_json::from_str(rest.trim_start_matches(|c: char| c.is_ascii_digit())).unwrap()
        })
        .collect()
}

#[test]
fn foals_create_product_goes_to_the_backend_and_its_answer_comes_back() {
    let mut h = shop(|_| {});
    let sender = h.connect(1, "/");
    h.connect(2, "/");
    h.connect(3, "/");
    h.outputs();

    h.text(1, r#"425["create product",{"name":"product 1"}]"#);
    let out = h.outputs();
    // Nothing is relayed: the event is the backend's.
    assert!(texts(&out, 2).is_empty() && texts(&out, 3).is_empty());
    let [call] = calls(&out).try_into().unwrap();
    assert_eq!(call.url, "http://backend.test/hooks/events");
    assert_eq!(call.timeout_ms, 500);
    let body = call_body(&call);
    assert_eq!(body["type"], "event");
    assert_eq!(body["channel"], "shop/1");
    assert_eq!(body["params"], json!({ "id": "1" }));
    assert_eq!(body["namespace"], "/");
    assert_eq!(body["socket"]["id"], sender.as_str());
    assert_eq!(body["socket"]["rooms"], json!([]));
    assert_eq!(body["event"], "create product");
    assert_eq!(body["args"], json!([{ "name": "product 1" }]));
    // Signed over the timestamp and the body, named by the same id in header and body.
    let timestamp: u64 = header(&call, backend::TIMESTAMP_HEADER).parse().unwrap();
    assert_eq!(timestamp, h.now / 1000);
    assert_eq!(
        header(&call, backend::SIGNATURE_HEADER),
        backend::signature(SECRET, timestamp, &call.body)
    );
    assert_eq!(
        header(&call, backend::CALL_HEADER),
        body["id"].as_str().unwrap()
    );

    h.channel.handle_backend_answer(
        call.id,
        ok(json!({
            "data": { "id": 1, "name": "product 1" },
            "emit": [{ "event": "refresh products", "to": "others" }],
        })),
        h.now,
    );
    let out = h.outputs();
    assert_eq!(
        payloads(&out, 1, "43"),
        vec![json!([{ "status": "ok", "data": { "id": 1, "name": "product 1" } }])]
    );
    for other in [2, 3] {
        assert_eq!(texts(&out, other), vec![r#"42["refresh products"]"#]);
    }
    // A second answer to the same call changes nothing.
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "data": 2 })), h.now);
    assert!(h.outputs().is_empty());
    assert!(h.channel.is_idle() || h.channel.session_count() == 3);
}

#[test]
fn invalid_payloads_never_reach_the_backend() {
    let mut h = shop(|_| {});
    h.connect(1, "/");
    h.outputs();
    for (payload, path) in [
        (r#"{"name":42}"#, "/name"),
        (r#"{"name":"ok","price":3}"#, ""),
        ("", ""),
    ] {
        let text = if payload.is_empty() {
            r#"427["create product"]"#.to_string()
        } else {
            format!(r#"427["create product",{payload}]"#)
        };
        h.text(1, &text);
        let out = h.outputs();
        assert!(calls(&out).is_empty(), "{payload}");
        let [ack] = payloads(&out, 1, "43").try_into().unwrap();
        let response = &ack[0];
        assert_eq!(response["status"], "error");
        assert_eq!(response["error"]["code"], "VALIDATION_PAYLOAD_ERROR");
        let errors = response["error"]["payload"].as_array().unwrap();
        assert!(!errors.is_empty());
        assert!(
            errors
                .iter()
                .all(|error| error["message"].is_string() && error["instancePath"] == path),
            "{payload}: {errors:?}"
        );
    }
    // Without an ack request the client still hears of it.
    h.text(1, r#"42["create product",{"name":42}]"#);
    let out = h.outputs();
    let [event] = payloads(&out, 1, "42").try_into().unwrap();
    assert_eq!(event[0], ERROR_EVENT);
    assert_eq!(event[1]["event"], "create product");
    assert_eq!(event[1]["error"]["code"], "VALIDATION_PAYLOAD_ERROR");
}

#[test]
fn draft_07_schemas_are_understood() {
    let schema = PayloadSchema::compile(&json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": { "tags": { "type": "array", "items": [{ "type": "string" }], "additionalItems": false } },
    }))
    .unwrap();
    assert!(schema.errors(&json!({ "tags": ["a"] })).is_empty());
    // `additionalItems` is draft-07's; 2020-12 would ignore it.
    assert_eq!(schema.errors(&json!({ "tags": ["a", "b"] })).len(), 1);
    assert!(PayloadSchema::compile(&json!({ "type": "nope" })).is_err());
}

#[test]
fn every_backend_failure_is_an_internal_error_and_a_warning() {
    let failures = [
        (status(500, "oops"), "answered 500"),
        (status(200, "not json"), "not a JSON object"),
        (
            BackendAnswer::Failed("connection refused".into()),
            "could not be reached",
        ),
        (ok(json!({ "emit": "everyone" })), "malformed"),
        (ok(json!({ "emit": [{ "event": "connect" }] })), "malformed"),
    ];
    for (answer, logged) in failures {
        let mut h = shop(|_| {});
        h.connect(1, "/");
        h.connect(2, "/");
        h.outputs();
        h.text(1, r#"421["create product",{"name":"x"}]"#);
        let [call] = calls(&h.outputs()).try_into().unwrap();
        h.channel.handle_backend_answer(call.id, answer, h.now);
        let out = h.outputs();
        let [ack] = payloads(&out, 1, "43").try_into().unwrap();
        assert_eq!(
            ack,
            json!([{ "status": "error", "error": { "code": "INTERNAL_SERVER_ERROR", "message": "An internal server error has occurred." } }])
        );
        // Nothing else happens, to anyone.
        assert!(texts(&out, 2).is_empty());
        let warnings = warnings(&out);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(logged) && w.contains("create product")),
            "{warnings:?}"
        );
        assert!(h.channel.is_idle() || h.channel.session_count() == 2);
    }
}

#[test]
fn a_backend_that_hangs_times_out_at_the_handlers_deadline() {
    let mut h = shop(|_| {});
    h.connect(1, "/");
    h.outputs();
    h.text(1, r#"423["create product",{"name":"x"}]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.advance(499);
    assert!(payloads(&h.outputs(), 1, "43").is_empty());
    h.advance(1);
    let out = h.outputs();
    let [ack] = payloads(&out, 1, "43").try_into().unwrap();
    assert_eq!(ack[0]["error"]["code"], "INTERNAL_SERVER_ERROR");
    assert_eq!(
        ack[0]["error"]["message"],
        "The server did not answer in time."
    );
    assert!(warnings(&out)[0].contains("did not answer within 500 ms"));
    // The answer that comes too late is dropped.
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "data": 1 })), h.now);
    assert!(h.outputs().is_empty());
}

#[test]
fn a_backend_may_join_a_socket_to_another_sockets_id_and_both_then_hear_it() {
    let mut h = shop(|policy| {
        let handlers = &mut policy.handlers;
        handlers.insert("watch".into(), handler(AckShape::Raw, 1_000));
    });
    h.connect(1, "/");
    let watched = h.connect(2, "/");
    h.outputs();
    h.text(1, &format!(r#"429["watch","{watched}"]"#));
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "join": [watched] })), h.now);
    h.outputs();
    // The socket is in the room of its own id even though that room now has other members.
    assert_eq!(h.emit_to(&[&watched], json!(["note"])), 2);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec![r#"42["note"]"#]);
    assert_eq!(texts(&out, 2), vec![r#"42["note"]"#]);
}

#[test]
fn answers_emit_to_rooms_join_and_leave_and_disconnect() {
    let mut h = shop(|policy| {
        let handlers = &mut policy.handlers;
        handlers.insert("enter".into(), handler(AckShape::Raw, 1_000));
    });
    let a = h.connect(1, "/");
    h.connect(2, "/");
    h.connect(3, "/");
    h.text(2, r#"42["switchboard:join","lobby"]"#);
    h.text(1, r#"42["switchboard:join","old"]"#);
    h.outputs();

    h.text(1, r#"429["enter","lobby"]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(call_body(&call)["socket"]["rooms"], json!(["old"]));
    h.channel.handle_backend_answer(
        call.id,
        ok(json!({
            "ack": ["welcome", { "_binary": "AQID" }],
            "join": ["lobby"],
            "leave": ["old"],
            "emit": [
                { "event": "joined", "data": { "who": a }, "rooms": ["lobby"] },
                { "event": "private", "args": [1, 2], "to": "sender" },
                { "event": "all", "to": "channel" },
            ],
        })),
        h.now,
    );
    let out = h.outputs();
    // The sender joined before the emit to the room, so it hears it too; the raw ack keeps
    // its binary.
    let sender = texts(&out, 1);
    assert_eq!(
        sender,
        vec![
            format!(r#"42["joined",{{"who":"{a}"}}]"#),
            r#"42["private",1,2]"#.to_string(),
            r#"42["all"]"#.to_string(),
            r#"461-9["welcome",{"_placeholder":true,"num":0}]"#.to_string(),
        ]
    );
    assert_eq!(
        texts(&out, 2),
        vec![
            format!(r#"42["joined",{{"who":"{a}"}}]"#),
            r#"42["all"]"#.to_string()
        ]
    );
    assert_eq!(texts(&out, 3), vec![r#"42["all"]"#]);
    assert_eq!(h.channel.room_members("/", "old"), Vec::<String>::new());
    assert_eq!(h.channel.room_members("/", "lobby").len(), 2);

    // A disconnect comes after the ack.
    h.text(1, r#"4210["enter","x"]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.channel.handle_backend_answer(
        call.id,
        ok(json!({ "ack": ["bye"], "disconnect": true })),
        h.now,
    );
    assert_eq!(texts(&h.outputs(), 1), vec![r#"4310["bye"]"#, "41"]);
    assert_eq!(h.channel.socket_count("/"), 2);
}

#[test]
fn emits_reach_the_channel_even_when_the_sender_left_first() {
    let mut h = shop(|_| {});
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"42["create product",{"name":"x"}]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.channel.handle_ws_closed(1, h.now);
    h.channel.handle_backend_answer(
        call.id,
        ok(json!({ "emit": [{ "event": "refresh products", "to": "others" }] })),
        h.now,
    );
    assert_eq!(texts(&h.outputs(), 2), vec![r#"42["refresh products"]"#]);
}

#[test]
fn a_socket_has_a_bounded_number_of_calls_in_flight() {
    let mut h = shop(|_| {});
    h.connect(1, "/");
    h.outputs();
    for n in 0..MAX_CALLS_PER_SOCKET {
        h.text(1, &format!(r#"42{n}["create product",{{"name":"x"}}]"#));
    }
    assert_eq!(calls(&h.outputs()).len(), MAX_CALLS_PER_SOCKET as usize);
    h.text(1, r#"42999["create product",{"name":"x"}]"#);
    let out = h.outputs();
    assert!(calls(&out).is_empty());
    assert_eq!(
        payloads(&out, 1, "43")[0][0]["error"]["code"],
        "TOO_MANY_CALLS"
    );
}

#[test]
fn without_a_secret_nothing_is_called() {
    let mut h = shop(|policy| {
        policy.backend = Some(Arc::new(Backend {
            url: "http://backend.test".into(),
            timeout_ms: 1_000,
            secret: None,
        }));
    });
    h.connect(1, "/");
    h.outputs();
    h.text(1, r#"421["create product",{"name":"x"}]"#);
    let out = h.outputs();
    assert!(calls(&out).is_empty());
    assert_eq!(
        payloads(&out, 1, "43")[0][0]["error"]["code"],
        "INTERNAL_SERVER_ERROR"
    );
    assert!(warnings(&out)[0].contains("WEBHOOK_SECRET"));
}

#[test]
fn an_allow_list_relays_only_the_events_it_names() {
    let mut h = shop(|policy| policy.relay_events = Some(vec!["chat".into()]));
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"42["chat","hi"]"#);
    assert_eq!(texts(&h.outputs(), 2), vec![r#"42["chat","hi"]"#]);
    h.text(1, r#"424["refresh products"]"#);
    let out = h.outputs();
    assert!(texts(&out, 2).is_empty());
    assert_eq!(
        payloads(&out, 1, "43")[0][0]["error"]["code"],
        "EVENT_NOT_ALLOWED"
    );
    h.text(1, r#"42["refresh products"]"#);
    let out = h.outputs();
    assert!(texts(&out, 2).is_empty());
    assert_eq!(
        payloads(&out, 1, "42")[0][1]["error"]["code"],
        "EVENT_NOT_ALLOWED"
    );
    // Reserved events are not the list's business.
    h.text(1, r#"425["switchboard:join","r"]"#);
    assert_eq!(payloads(&h.outputs(), 1, "43")[0][0]["ok"], true);
}

fn hooked(auth: AuthMode) -> Harness {
    shop(|policy| policy.auth = auth)
}

fn open_with_client(h: &mut Harness, conn: ConnId) {
    let client = ClientInfo::from_request(
        [
            ("Cookie", "session=abc"),
            ("User-Agent", "test-agent"),
            ("X-Secret-Header", "never forwarded"),
        ],
        Some("192.0.2.1".into()),
    );
    h.channel.handle_ws_open(conn, None, client, h.now);
    h.outputs();
}

/// Admits the socket of `conn` to `/` through the connect hook (which says yes), with `auth`;
/// returns its CONNECT reply.
fn connect_through_hook(h: &mut Harness, conn: ConnId, auth: &str) -> Value {
    open_with_client(h, conn);
    h.text(conn, &format!("40{auth}"));
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "allow": true })), h.now);
    serde_json::from_str(&texts(&h.outputs(), conn)[0][2..]).unwrap()
}

#[test]
fn a_socket_whose_recovery_lapsed_while_its_hook_decided_takes_a_new_id() {
    let mut h = shop(|policy| {
        policy.auth = AuthMode::Backend;
        policy.recovery = Some(crate::config::RecoveryPolicy {
            window_ms: 10_000,
            ..Default::default()
        });
    });
    let victim = connect_through_hook(&mut h, 1, "");
    let sid = victim["sid"].as_str().unwrap().to_string();
    connect_through_hook(&mut h, 2, "");
    h.channel.handle_ws_closed(1, h.now);
    h.advance(9_000);
    // Back with its pid just in time; the window passes while the hook decides.
    open_with_client(&mut h, 3);
    h.text(3, &format!(r#"40{{"pid":{}}}"#, victim["pid"]));
    let [call] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(call_body(&call)["socket"]["id"], sid.as_str());
    h.advance(1_500);
    h.outputs();
    // No longer parked: another client may take the name as a room.
    h.text(2, &format!(r#"421["switchboard:join","{sid}"]"#));
    assert_eq!(payloads(&h.outputs(), 2, "43")[0][0]["ok"], true);
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "allow": true })), h.now);
    let reply: Value = serde_json::from_str(&texts(&h.outputs(), 3)[0][2..]).unwrap();
    assert_ne!(
        reply["sid"],
        sid.as_str(),
        "the room would hear what is sent to it"
    );
    // What is sent to the new socket reaches it alone.
    let new_sid = reply["sid"].as_str().unwrap().to_string();
    assert_eq!(h.emit_to(&[&new_sid], json!(["yours"])), 1);
}

#[test]
fn the_connect_hook_admits_with_a_user_rooms_and_data() {
    let mut h = hooked(AuthMode::Backend);
    open_with_client(&mut h, 1);
    h.text(1, r#"40{"ticket":"t-1"}"#);
    let out = h.outputs();
    assert!(texts(&out, 1).is_empty(), "no answer before the hook's");
    let [call] = calls(&out).try_into().unwrap();
    assert_eq!(call.url, "http://backend.test/hooks/connect");
    let body = call_body(&call);
    assert_eq!(body["type"], "connect");
    assert_eq!(body["params"], json!({ "id": "1" }));
    assert_eq!(body["auth"], json!({ "ticket": "t-1" }));
    assert_eq!(
        body["headers"],
        json!({ "cookie": "session=abc", "user-agent": "test-agent" })
    );
    assert_eq!(body["address"], "192.0.2.1");
    let socket_id = body["socket"]["id"].as_str().unwrap().to_string();

    // The hook takes its time: past the connect timeout, the session waits for it.
    h.advance(1_500);
    h.outputs();
    h.channel.handle_backend_answer(
        call.id,
        ok(json!({
            "allow": true,
            "user": { "id": 42, "info": { "name": "Ada" } },
            "rooms": ["team-7"],
            "data": { "plan": "pro" },
        })),
        h.now,
    );
    let out = h.outputs();
    assert_eq!(
        texts(&out, 1),
        vec![format!(r#"40{{"sid":"{socket_id}"}}"#)]
    );
    assert_eq!(
        h.channel.room_members("/", "team-7"),
        vec![socket_id.clone()]
    );
    // The user and data travel with every handler call.
    h.text(1, r#"42["create product",{"name":"x"}]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    let socket = &call_body(&call)["socket"];
    assert_eq!(
        socket["user"],
        json!({ "id": "42", "info": { "name": "Ada" } })
    );
    assert_eq!(socket["data"], json!({ "plan": "pro" }));
    assert_eq!(socket["rooms"], json!(["team-7"]));
    // The connect timeout no longer applies.
    h.advance(5_000);
    assert!(closed(&h.outputs(), 1).is_none());
}

#[test]
fn the_connect_hook_refuses_with_its_message_and_data_or_generically_when_it_fails() {
    let mut h = hooked(AuthMode::Backend);
    open_with_client(&mut h, 1);
    h.text(1, "40");
    let [call] = calls(&h.outputs()).try_into().unwrap();
    h.channel.handle_backend_answer(
        call.id,
        ok(json!({ "allow": false, "message": "banned", "data": { "until": "tomorrow" } })),
        h.now,
    );
    assert_eq!(
        payloads(&h.outputs(), 1, "44"),
        vec![json!({ "message": "banned", "data": { "until": "tomorrow" } })]
    );
    assert_eq!(h.channel.socket_count("/"), 0);

    for failure in [
        status(503, "down"),
        BackendAnswer::Failed("refused".into()),
        ok(json!({ "user": { "id": 1 } })),
    ] {
        let mut h = hooked(AuthMode::Backend);
        open_with_client(&mut h, 1);
        h.text(1, "40");
        let [call] = calls(&h.outputs()).try_into().unwrap();
        h.channel.handle_backend_answer(call.id, failure, h.now);
        let out = h.outputs();
        assert_eq!(
            texts(&out, 1),
            vec![format!(r#"44{{"message":"{HOOK_FAILED_MESSAGE}"}}"#)]
        );
        assert_eq!(warnings(&out).len(), 1);
        // Then the connect timeout ends the session, as for any client that never joins.
        h.advance(1_000);
        assert!(closed(&h.outputs(), 1).is_some());
    }
    // A hook that never answers refuses at the backend's timeout.
    let mut h = hooked(AuthMode::Backend);
    open_with_client(&mut h, 1);
    h.text(1, "40");
    h.outputs();
    h.advance(2_000);
    assert_eq!(
        texts(&h.outputs(), 1),
        vec![format!(r#"44{{"message":"{HOOK_FAILED_MESSAGE}"}}"#)]
    );
}

#[test]
fn a_token_and_the_hook_combine() {
    let mut h = shop(|policy| {
        policy.auth = AuthMode::PrivateAndBackend;
        policy.jwt_secret = Some(Secret::new("jwt"));
    });
    open_with_client(&mut h, 1);
    // No token: refused before the backend is asked.
    h.text(1, "40");
    let out = h.outputs();
    assert!(calls(&out).is_empty());
    assert!(texts(&out, 1)[0].starts_with("44"));
    let exp = h.now / 1000 + 60;
    let token = super::signed(
        json!({ "sub": "u-9", "exp": exp, "channels": ["shop/1"] }),
        "jwt",
    );
    h.text(1, &format!(r#"40{{"token":"{token}"}}"#));
    let [call] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(call_body(&call)["user"], json!({ "id": "u-9" }));
    h.channel
        .handle_backend_answer(call.id, ok(json!({ "allow": true })), h.now);
    assert!(texts(&h.outputs(), 1)[0].starts_with("40{"));
}

#[test]
fn calls_in_flight_survive_a_rebuild() {
    let mut h = hooked(AuthMode::Backend);
    open_with_client(&mut h, 1);
    h.text(1, "40");
    let [hook] = calls(&h.outputs()).try_into().unwrap();
    h.channel.handle_backend_answer(
        hook.id,
        ok(json!({ "allow": true, "data": { "n": 1 } })),
        h.now,
    );
    h.outputs();
    h.text(1, r#"427["create product",{"name":"x"}]"#);
    h.text(1, r#"428["create product",{"name":"y"}]"#);
    let [first, second] = calls(&h.outputs()).try_into().unwrap();
    open_with_client(&mut h, 2);
    h.text(2, "40");
    let [pending_hook] = calls(&h.outputs()).try_into().unwrap();

    let stored: Vec<(ConnId, SessionSnapshot)> = h
        .channel
        .snapshots()
        .into_iter()
        .map(|(conn, snapshot)| {
            let text = serde_json::to_string(&snapshot).unwrap();
            (conn, serde_json::from_str(&text).unwrap())
        })
        .collect();
    let policy = h.channel.policy().clone();
    let mut h = Harness {
        channel: Channel::restore(
            "shop/1",
            policy,
            Box::new(SequenceRandom::new(3)),
            stored,
            h.now,
        ),
        now: h.now + 10,
    };
    // An answer still reaches its client, with the connect hook's data kept.
    h.channel
        .handle_backend_answer(first.id, ok(json!({ "data": "saved" })), h.now);
    assert_eq!(
        payloads(&h.outputs(), 1, "43"),
        vec![json!([{ "status": "ok", "data": "saved" }])]
    );
    h.channel
        .handle_backend_answer(pending_hook.id, ok(json!({ "allow": true })), h.now);
    assert!(texts(&h.outputs(), 2)[0].starts_with("40{\"sid\""));
    // The other one times out at its original deadline.
    h.advance(500);
    let out = h.outputs();
    assert_eq!(
        payloads(&out, 1, "43")[0][0]["error"]["message"],
        "The server did not answer in time."
    );
    let _ = second;
    h.text(1, r#"42["create product",{"name":"z"}]"#);
    let [call] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(call_body(&call)["socket"]["data"], json!({ "n": 1 }));
}

fn webhooked(events: WebhookEvents, client_events: Vec<String>) -> Harness {
    shop(|policy| {
        policy.webhooks = events;
        policy.webhook_client_events = client_events;
    })
}

fn all_lifecycle_events() -> WebhookEvents {
    WebhookEvents {
        channel_occupied: true,
        channel_vacated: true,
        socket_connected: true,
        socket_disconnected: true,
        member_added: true,
        member_removed: true,
    }
}

#[test]
fn what_an_anonymous_client_declares_reaches_the_backend_marked_anonymous() {
    let mut h = shop(|policy| {
        policy.webhooks = all_lifecycle_events();
        policy.presence = Some(crate::config::PresencePolicy::default());
    });
    h.open_ws(1);
    h.text(1, r#"40{"info":{"nick":"Ada"}}"#);
    h.outputs();
    h.advance(webhooks_delay());
    let [batch] = calls(&h.outputs()).try_into().unwrap();
    let body = call_body(&batch);
    let connected = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "socket_connected")
        .expect("a socket_connected event")
        .clone();
    assert_eq!(
        connected["socket"]["user"],
        json!({ "id": null, "anonymous": true, "info": { "nick": "Ada" } })
    );
}

#[test]
fn lifecycle_webhooks_are_batched_signed_and_retried() {
    let mut h = webhooked(all_lifecycle_events(), vec!["chat".into()]);
    let a = h.connect(1, "/");
    let b = h.connect(2, "/");
    h.text(1, r#"42["chat","hello"]"#);
    let out = h.outputs();
    assert!(calls(&out).is_empty(), "a batch waits a moment for more");
    h.advance(webhooks_delay());
    let [batch] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(batch.url, "http://backend.test/hooks/webhooks");
    let body = call_body(&batch);
    assert_eq!(body["type"], "webhooks");
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "channel_occupied",
            "socket_connected",
            "socket_connected",
            "client_event"
        ]
    );
    assert_eq!(events[1]["socket"]["id"], a.as_str());
    assert_eq!(events[1]["channel"], "shop/1");
    assert_eq!(events[1]["params"], json!({ "id": "1" }));
    assert_eq!(events[3]["event"], "chat");
    assert_eq!(events[3]["args"], json!(["hello"]));
    let timestamp: u64 = header(&batch, backend::TIMESTAMP_HEADER).parse().unwrap();
    assert_eq!(
        header(&batch, backend::SIGNATURE_HEADER),
        backend::signature(SECRET, timestamp, &batch.body)
    );

    // The backend is down: the same batch comes again, later each time, with the same id.
    h.channel
        .handle_backend_answer(batch.id, status(502, ""), h.now);
    assert_eq!(warnings(&h.outputs()).len(), 1);
    h.advance(249);
    assert!(calls(&h.outputs()).is_empty());
    h.advance(1);
    let [retry] = calls(&h.outputs()).try_into().unwrap();
    assert_eq!(
        header(&retry, backend::CALL_HEADER),
        header(&batch, backend::CALL_HEADER)
    );
    assert_eq!(call_body(&retry)["events"], body["events"]);
    h.channel
        .handle_backend_answer(retry.id, BackendAnswer::Failed("refused".into()), h.now);
    h.advance(499);
    assert!(calls(&h.outputs()).is_empty());
    h.advance(1);
    let [retry] = calls(&h.outputs()).try_into().unwrap();
    // It comes back: delivered, and what happened meanwhile goes in the next batch.
    h.channel.handle_ws_closed(2, h.now);
    h.channel
        .handle_backend_answer(retry.id, status(204, ""), h.now);
    h.outputs();
    h.channel.handle_ws_closed(1, h.now);
    h.advance(webhooks_delay());
    let [next] = calls(&h.outputs()).try_into().unwrap();
    let events = call_body(&next)["events"].clone();
    assert_eq!(events[0]["type"], "socket_disconnected");
    assert_eq!(events[0]["socket"]["id"], b.as_str());
    assert_eq!(events[0]["reason"], "transport close");
    assert_eq!(events[2]["type"], "channel_vacated");
    assert!(!h.channel.is_idle(), "a batch in flight keeps the channel");
    h.channel
        .handle_backend_answer(next.id, status(200, "{}"), h.now);
    assert!(h.channel.is_idle());
}

fn webhooks_delay() -> u64 {
    crate::channel::sockets::webhooks::BATCH_DELAY_MS
}
