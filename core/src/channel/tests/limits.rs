//! Every client's queue is bounded, and one client's flood costs the others nothing.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

/// A polling session connected to `/`, with its GET not yet sent; returns its sid.
fn polling_socket(h: &mut Harness, request: ConnId) -> String {
    let sid = h.open_polling(request);
    h.post(request + 1, &sid, "40");
    h.get(request + 2, &sid);
    assert!(body(&response_to(&h.outputs(), request + 2).unwrap()).starts_with("40{"));
    sid
}

#[test]
fn a_polling_client_that_never_polls_is_let_go_at_the_packet_bound() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    let sid = polling_socket(&mut h, 10);
    h.outputs();
    for i in 0..MAX_QUEUED_PACKETS {
        h.emit_to_all(json!(["tick", i]));
    }
    assert_eq!(h.channel.session_count(), 2, "a full queue is still kept");
    h.emit_to_all(json!(["tick", "one too many"]));
    assert_eq!(h.channel.session_count(), 1, "the poller is let go");
    // The WebSocket got everything, in order, and goes on.
    let ticks = texts(&h.outputs(), 1);
    assert_eq!(ticks.len(), MAX_QUEUED_PACKETS + 1);
    assert_eq!(ticks[0], r#"42["tick",0]"#);
    h.get(20, &sid);
    assert_eq!(response_to(&h.outputs(), 20).unwrap().status, 400);
}

#[test]
fn a_polling_client_that_never_polls_is_let_go_at_the_byte_bound() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| policy.max_payload = 2_000_000);
    polling_socket(&mut h, 10);
    let big = "x".repeat(1_000_000);
    for _ in 0..(MAX_QUEUED_BYTES / 1_000_000) {
        h.emit_to_all(json!(["big", big]));
    }
    assert_eq!(h.channel.session_count(), 1);
    h.emit_to_all(json!(["big", big]));
    assert_eq!(h.channel.session_count(), 0, "8 MB waiting is the most");
}

#[test]
fn a_get_takes_at_most_max_payload_and_the_rest_waits() {
    // max_payload is 1000 in the test policy.
    let mut h = Harness::relay(RelayMode::All);
    let sid = polling_socket(&mut h, 10);
    let text = "y".repeat(400);
    for i in 0..5 {
        h.emit_to_all(json!([format!("e{i}"), text]));
    }
    let mut seen = Vec::new();
    for request in 20..23 {
        h.get(request, &sid);
        let polled = body(&response_to(&h.outputs(), request).expect("data waits"));
        assert!(polled.len() <= 1000, "{} bytes", polled.len());
        seen.extend(
            polled
                .split('\u{1e}')
                .map(|record| record[4..6].to_string()),
        );
    }
    assert_eq!(seen, ["e0", "e1", "e2", "e3", "e4"]);
    // A message larger than max_payload on its own still goes, alone.
    h.emit_to_all(json!(["huge", "z".repeat(1200)]));
    h.get(30, &sid);
    assert!(body(&response_to(&h.outputs(), 30).unwrap()).len() > 1000);
}

#[test]
fn a_polling_post_is_handled_a_turn_at_a_time() {
    let mut h = Harness::relay_with(RelayMode::Others, |policy| {
        policy.events_per_second = 1_000_000;
        policy.max_payload = 100_000;
    });
    h.connect(1, "/");
    let sid = polling_socket(&mut h, 10);
    h.outputs();
    let records = |from: usize, to: usize| {
        (from..to)
            .map(|i| format!(r#"42["n",{i}]"#))
            .collect::<Vec<_>>()
            .join("\u{1e}")
    };
    h.post(20, &sid, &records(0, 100));
    let out = h.outputs();
    assert_eq!(body(&response_to(&out, 20).unwrap()), "ok");
    let mut received = texts(&out, 1);
    assert_eq!(received.len(), RECORDS_PER_TURN, "one turn per input");
    assert!(h.channel.poll_timeout().is_some_and(|at| at <= h.now));
    h.channel.handle_timeout(h.now);
    received.extend(texts(&h.outputs(), 1));
    assert_eq!(received.len(), 2 * RECORDS_PER_TURN);
    // A second POST of the same session waits behind the first: order is kept.
    h.post(21, &sid, &records(100, 110));
    received.extend(texts(&h.outputs(), 1));
    while h.channel.poll_timeout().is_some_and(|at| at <= h.now) {
        h.channel.handle_timeout(h.now);
        received.extend(texts(&h.outputs(), 1));
    }
    let expected: Vec<String> = (0..110).map(|i| format!(r#"42["n",{i}]"#)).collect();
    assert_eq!(received, expected);
    assert!(h.channel.poll_timeout().is_none_or(|at| at > h.now));
}

#[test]
fn a_polling_flood_passes_the_default_rate_and_is_disconnected() {
    let mut h = Harness::relay_with(RelayMode::Others, |policy| {
        policy.events_per_second = crate::config::DEFAULT_EVENTS_PER_SECOND;
        policy.max_payload = 1_000_000;
    });
    h.connect(1, "/");
    let sid = polling_socket(&mut h, 10);
    h.outputs();
    let flood = vec![r#"42["a"]"#; 125_000].join("\u{1e}");
    h.post(20, &sid, &flood);
    let mut relayed = texts(&h.outputs(), 1).len();
    while h.channel.poll_timeout().is_some_and(|at| at <= h.now) {
        h.channel.handle_timeout(h.now);
        relayed += texts(&h.outputs(), 1).len();
    }
    assert_eq!(relayed, 100, "one second's worth, then nothing");
    h.get(21, &sid);
    let polled = body(&response_to(&h.outputs(), 21).unwrap());
    assert!(polled.contains("RATE_LIMITED"), "{polled}");
    assert!(polled.ends_with("\u{1e}41"), "{polled}");
    assert_eq!(h.channel.socket_count("/"), 1);
}

#[test]
fn a_binary_packet_whose_attachments_stop_coming_ends_its_session_at_the_deadline() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.ping_interval_ms = 60_000;
        policy.ping_timeout_ms = 60_000;
    });
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    // 3 attachments announced, 2 sent.
    let placeholders = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}"#;
    h.text(1, &format!(r#"453-["files",{placeholders}]"#));
    for _ in 0..2 {
        h.channel
            .handle_ws_binary(1, Bytes::from_static(b"part"), h.now);
    }
    h.advance(crate::channel::sockets::BINARY_DEADLINE_MS - 1);
    assert!(
        closed(&h.outputs(), 1).is_none(),
        "still within its deadline"
    );
    h.advance(1);
    assert_eq!(closed(&h.outputs(), 1), Some(1002));
    assert_eq!(h.channel.socket_count("/"), 1);

    // A complete one in time is relayed, and leaves no deadline behind.
    h.text(2, r#"451-["file",{"_placeholder":true,"num":0}]"#);
    h.channel
        .handle_ws_binary(2, Bytes::from_static(b"whole"), h.now);
    assert_eq!(texts(&h.outputs(), 2).len(), 1);
    assert!(
        h.channel
            .poll_timeout()
            .is_none_or(|at| at >= h.now + 50_000)
    );
}

#[test]
fn a_channel_holds_a_bounded_number_of_sessions_waiting_to_connect() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| policy.max_pending_sessions = 3);
    for conn in 1..=3 {
        h.open_ws(conn);
    }
    // The fourth handshake: 503 before a WebSocket is accepted, 1013 if it already was.
    assert_eq!(h.channel.check_ws_open(None), Err(EngineError::Busy));
    h.channel
        .handle_ws_open(4, None, ClientInfo::default(), h.now);
    assert_eq!(closed(&h.outputs(), 4), Some(1013));
    h.channel.handle_polling(
        5,
        Method::Get,
        None,
        None,
        ClientInfo::default(),
        Bytes::new(),
        h.now,
    );
    let refused = response_to(&h.outputs(), 5).unwrap();
    assert_eq!(refused.status, 503);
    assert!(body(&refused).contains("try again later"));
    assert_eq!(h.channel.session_count(), 3);
    // Sessions that connect, or go away, make room.
    h.text(1, "40");
    h.channel.handle_ws_closed(2, h.now);
    h.outputs();
    h.open_ws(6);
    h.open_ws(7);
    assert_eq!(h.channel.check_ws_open(None), Err(EngineError::Busy));
    // A rebuilt channel counts the same.
    let snapshots: Vec<_> = [1, 3, 6, 7]
        .into_iter()
        .map(|conn| (conn, h.channel.snapshot(conn).unwrap()))
        .collect();
    let rebuilt = Channel::restore(
        "x",
        h.channel.engine.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(9)),
        snapshots,
        h.now,
    );
    assert_eq!(rebuilt.check_ws_open(None), Err(EngineError::Busy));
    // Upgrades of sessions that exist are not handshakes.
    assert!(
        h.channel
            .check_ws_open(Some("unknown"))
            .is_err_and(|e| e == EngineError::UnknownSid)
    );
}

/// A private channel `private/7` with a long heartbeat (the clock jumps in the token tests).
fn private_channel(edit: impl FnOnce(&mut ChannelPolicy)) -> Harness {
    use crate::config::{AuthMode, ChannelPattern, Secret};
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.auth = AuthMode::Private;
        policy.jwt_secret = Some(Secret::new("k"));
        policy.pattern = Some(ChannelPattern::parse("private/:id").unwrap());
        policy.ping_interval_ms = 1_000_000;
        policy.ping_timeout_ms = 1_000_000;
        edit(policy);
    });
    h.channel = Channel::new(
        "private/7",
        h.channel.engine.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(5)),
    );
    h
}

fn token(sub: &str, exp_s: u64) -> String {
    signed(
        json!({"sub": sub, "exp": exp_s, "channels": ["private/:id"]}),
        "k",
    )
}

#[test]
fn a_socket_is_disconnected_when_its_token_expires_unless_refreshed() {
    let mut h = private_channel(|_| {});
    let now_s = h.now / 1000;
    for conn in [1, 2] {
        h.open_ws(conn);
        h.text(
            conn,
            &format!(r#"40{{"token":"{}"}}"#, token("u", now_s + 10)),
        );
    }
    h.outputs();
    h.advance(5_000);
    // Socket 1 refreshes; a token of another user, or one that lives too long, is refused.
    let other = token("mallory", now_s + 30);
    h.text(
        1,
        &format!(r#"421["switchboard:refresh",{{"token":"{other}"}}]"#),
    );
    assert!(texts(&h.outputs(), 1)[0].contains("the new token is for another user"));
    let forever = token("u", now_s + 10 * 24 * 3600);
    h.text(
        1,
        &format!(r#"422["switchboard:refresh",{{"token":"{forever}"}}]"#),
    );
    assert!(texts(&h.outputs(), 1)[0].contains("token lives too long"));
    let fresh = token("u", now_s + 30);
    h.text(
        1,
        &format!(r#"423["switchboard:refresh",{{"token":"{fresh}"}}]"#),
    );
    assert_eq!(
        texts(&h.outputs(), 1),
        vec![format!(
            r#"433[{{"data":{{"expires_at":{}}},"status":"ok"}}]"#,
            (now_s + 30) * 1000
        )]
    );
    // At the first token's exp, socket 2 is told and let go; socket 1 goes on.
    h.advance(5_000);
    let out = h.outputs();
    let to_2 = texts(&out, 2);
    assert_eq!(to_2.len(), 2, "{to_2:?}");
    assert!(to_2[0].contains("TOKEN_EXPIRED"));
    assert_eq!(to_2[1], "41");
    assert!(texts(&out, 1).is_empty());
    assert_eq!(h.emit_to_all(json!(["still here"])), 1);
    // The fresh expiry survives a rebuild, and holds there.
    let rebuilt = Channel::restore(
        "private/7",
        h.channel.engine.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(9)),
        [(1, h.channel.snapshot(1).unwrap())],
        h.now,
    );
    h.channel = rebuilt;
    h.outputs();
    h.advance(19_000);
    assert!(texts(&h.outputs(), 1).is_empty());
    h.advance(1_000);
    assert_eq!(
        texts(&h.outputs(), 1).last().map(String::as_str),
        Some("41")
    );
    assert_eq!(h.channel.socket_count("/"), 0);
}

#[test]
fn a_token_that_lives_longer_than_the_channel_allows_is_refused() {
    let mut h = private_channel(|policy| policy.max_token_lifetime_s = 3600);
    let now_s = h.now / 1000;
    h.open_ws(1);
    h.text(
        1,
        &format!(r#"40{{"token":"{}"}}"#, token("u", now_s + 3601)),
    );
    assert!(
        texts(&h.outputs(), 1)[0]
            .contains("token lives too long: its exp may be at most 3600 s away")
    );
    h.text(
        1,
        &format!(r#"40{{"token":"{}"}}"#, token("u", now_s + 3600)),
    );
    assert!(texts(&h.outputs(), 1)[0].starts_with("40{\"sid\""));
    // A huge exp (2^64 - 1) is no way around it.
    h.open_ws(2);
    let huge = signed(
        json!({"sub": "u", "exp": u64::MAX, "channels": ["private/:id"]}),
        "k",
    );
    h.text(2, &format!(r#"40{{"token":"{huge}"}}"#));
    assert!(texts(&h.outputs(), 2)[0].starts_with("44"));
}

/// What the host heard of sessions opening and closing, in order.
fn session_outputs(outputs: &[Output]) -> Vec<Output> {
    outputs
        .iter()
        .filter(|output| {
            matches!(
                output,
                Output::SessionOpened { .. } | Output::SessionClosed { .. }
            )
        })
        .cloned()
        .collect()
}

fn opened(sid: &str, conn: ConnId) -> Output {
    Output::SessionOpened {
        sid: sid.to_string(),
        conn,
    }
}

fn ended(sid: &str) -> Output {
    Output::SessionClosed {
        sid: sid.to_string(),
    }
}

#[test]
fn the_host_hears_each_session_open_and_close_once() {
    let mut h = Harness::relay(RelayMode::All);
    // A polling session: opened by its handshake request, closed by its client.
    h.channel.handle_polling(
        10,
        Method::Get,
        None,
        None,
        ClientInfo::default(),
        Bytes::new(),
        h.now,
    );
    let out = h.outputs();
    let text = body(&response_to(&out, 10).unwrap());
    let handshake: Value = serde_json::from_str(&text[1..]).unwrap();
    let polling = handshake["sid"].as_str().unwrap().to_string();
    assert_eq!(session_outputs(&out), vec![opened(&polling, 10)]);
    h.post(11, &polling, "1");
    assert_eq!(session_outputs(&h.outputs()), vec![ended(&polling)]);
    // A WebSocket session: opened by its connection, closed when the connection goes.
    h.channel
        .handle_ws_open(20, None, ClientInfo::default(), h.now);
    let out = h.outputs();
    let handshake: Value = serde_json::from_str(&texts(&out, 20)[0][1..]).unwrap();
    let websocket = handshake["sid"].as_str().unwrap().to_string();
    assert_eq!(session_outputs(&out), vec![opened(&websocket, 20)]);
    h.channel.handle_ws_closed(20, h.now);
    assert_eq!(session_outputs(&h.outputs()), vec![ended(&websocket)]);
    // Nothing more, whatever happens next: no session is closed twice.
    h.advance(10_000);
    h.channel.close_all(h.now);
    assert!(session_outputs(&h.outputs()).is_empty());
    assert_eq!(h.channel.session_count(), 0);
}

#[test]
fn a_refused_handshake_opens_nothing_and_shutdown_and_timeouts_close_what_is_open() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| policy.max_pending_sessions = 2);
    let first = h.open_polling(10);
    let second = h.open_ws(20);
    // Over max_pending_sessions: refused (503 for polling, 1013 for a WebSocket), nothing opened.
    h.channel.handle_polling(
        30,
        Method::Get,
        None,
        None,
        ClientInfo::default(),
        Bytes::new(),
        h.now,
    );
    h.channel
        .handle_ws_open(31, None, ClientInfo::default(), h.now);
    let out = h.outputs();
    assert_eq!(response_to(&out, 30).unwrap().status, 503);
    assert_eq!(closed(&out, 31), Some(1013));
    assert!(session_outputs(&out).is_empty(), "{out:?}");
    // A session that never joins a namespace times out: its close is announced.
    h.advance(1_000);
    let mut gone = session_outputs(&h.outputs());
    gone.sort_by_key(|output| format!("{output:?}"));
    let mut both = vec![ended(&first), ended(&second)];
    both.sort_by_key(|output| format!("{output:?}"));
    assert_eq!(gone, both);
    // Shutdown closes the rest, each announced once.
    let third = h.open_ws(40);
    h.channel.close_all(h.now);
    assert_eq!(session_outputs(&h.outputs()), vec![ended(&third)]);
}
