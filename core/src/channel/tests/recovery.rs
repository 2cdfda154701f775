//! Connection-state recovery: offsets, parked sockets, missed events, bounds and the store.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};

use super::*;
use crate::config::{RecoveryPolicy, RelayMode};
use crate::testing::MemoryStore;

fn recovery_harness(edit: impl FnOnce(&mut RecoveryPolicy)) -> Harness {
    let mut recovery = RecoveryPolicy::default();
    edit(&mut recovery);
    Harness::relay_with(RelayMode::All, |policy| policy.recovery = Some(recovery))
}

/// Connects `conn` to `/` with `auth` and returns the CONNECT reply's payload and what followed.
fn connect_with(h: &mut Harness, conn: ConnId, auth: Option<Value>) -> (Value, Vec<String>) {
    h.open_ws(conn);
    let packet = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_string(),
    };
    h.text(conn, &packet);
    let texts = texts(&h.outputs(), conn);
    let reply = texts.first().expect("a connect reply");
    let payload = serde_json::from_str(&reply[2..]).expect("connect payload");
    (payload, texts[1..].to_vec())
}

fn emit(h: &mut Harness, rooms: &[&str], args: Value) -> Emitted {
    h.channel
        .emit(
            ServerEmit {
                namespace: "/".into(),
                args,
                rooms: rooms.iter().map(|room| room.to_string()).collect(),
                ..ServerEmit::default()
            },
            h.now,
        )
        .expect("a valid emit")
}

/// The event arrays of `42[...]` frames.
fn events(texts: &[String]) -> Vec<Value> {
    texts
        .iter()
        .filter_map(|text| text.strip_prefix("42"))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

#[test]
fn the_connect_reply_carries_a_pid_and_each_event_its_offset() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    assert!(
        reply["sid"].is_string() && reply["pid"].is_string(),
        "{reply}"
    );
    let emitted = emit(&mut h, &[], json!(["news", 1]));
    let offset = emitted.offset.expect("an offset");
    let got = events(&texts(&h.outputs(), 1));
    assert_eq!(got, vec![json!(["news", 1, offset])]);
}

#[test]
fn without_recovery_nothing_changes() {
    let mut h = Harness::relay(RelayMode::All);
    let (reply, _) = connect_with(&mut h, 1, None);
    assert_eq!(reply.as_object().unwrap().len(), 1, "{reply}");
    assert_eq!(emit(&mut h, &[], json!(["news"])).offset, None);
    assert_eq!(events(&texts(&h.outputs(), 1)), vec![json!(["news"])]);
}

#[test]
fn a_client_back_within_the_window_gets_its_id_rooms_and_missed_events_in_order() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    let (sid, pid) = (reply["sid"].clone(), reply["pid"].clone());
    h.text(1, r#"42["switchboard:join","room-a"]"#);
    let first = emit(&mut h, &[], json!(["e", 0])).offset.unwrap();
    h.outputs();
    // The transport drops: the socket is parked, not forgotten.
    h.channel.handle_ws_closed(1, h.now);
    h.outputs();
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(emit(&mut h, &[], json!(["e", i])).offset.unwrap());
        sent.push(emit(&mut h, &["room-a"], json!(["r", i])).offset.unwrap());
        emit(&mut h, &["room-b"], json!(["other", i]));
    }
    h.advance(5_000);
    let (reply, after) = connect_with(&mut h, 2, Some(json!({ "pid": pid, "offset": first })));
    assert_eq!(reply["sid"], sid);
    assert_eq!(reply["pid"], pid);
    let offsets: Vec<Value> = events(&after)
        .into_iter()
        .map(|event| event.as_array().unwrap().last().unwrap().clone())
        .collect();
    assert_eq!(offsets, sent.iter().map(|o| json!(o)).collect::<Vec<_>>());
    // Its room came back: a new emit to it arrives.
    emit(&mut h, &["room-a"], json!(["again"]));
    assert_eq!(events(&texts(&h.outputs(), 2)).len(), 1);
}

#[test]
fn a_parked_sockets_id_cannot_be_joined_as_a_room_so_nobody_hears_what_it_missed() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    let (sid, pid) = (
        reply["sid"].as_str().unwrap().to_string(),
        reply["pid"].clone(),
    );
    connect_with(&mut h, 2, None);
    h.channel.handle_ws_closed(1, h.now);
    h.outputs();
    h.text(2, &format!(r#"421["switchboard:join","{sid}"]"#));
    let refused = texts(&h.outputs(), 2);
    assert!(refused[0].contains(r#""ok":false"#), "{refused:?}");
    let missed = emit(&mut h, &[&sid], json!(["for you"]));
    assert_eq!(missed.delivered, 0);
    assert!(h.outputs().is_empty());
    // The socket comes back under its id and gets it; once it is live again the name stays
    // refused.
    let (again, after) = connect_with(&mut h, 3, Some(json!({ "pid": pid })));
    assert_eq!(again["sid"], json!(sid));
    assert_eq!(events(&after)[0][0], json!("for you"));
    h.text(2, &format!(r#"422["switchboard:join","{sid}"]"#));
    assert!(texts(&h.outputs(), 2)[0].contains(r#""ok":false"#));
}

#[test]
fn a_client_that_saw_no_event_yet_recovers_from_where_it_connected() {
    let mut h = recovery_harness(|_| {});
    emit(&mut h, &[], json!(["before"]));
    let (reply, _) = connect_with(&mut h, 1, None);
    h.channel.handle_ws_closed(1, h.now);
    emit(&mut h, &[], json!(["missed"]));
    h.outputs();
    let (again, after) = connect_with(&mut h, 2, Some(json!({ "pid": reply["pid"] })));
    assert_eq!(again["sid"], reply["sid"]);
    let names: Vec<Value> = events(&after).iter().map(|e| e[0].clone()).collect();
    assert_eq!(names, vec![json!("missed")]);
}

#[test]
fn an_explicit_disconnect_an_unknown_pid_and_an_expired_window_get_a_new_socket() {
    let mut h = recovery_harness(|recovery| recovery.window_ms = 10_000);
    // The client said goodbye: nothing kept.
    let (reply, _) = connect_with(&mut h, 1, None);
    h.text(1, "41");
    h.channel.handle_ws_closed(1, h.now);
    let (again, _) = connect_with(&mut h, 2, Some(json!({ "pid": reply["pid"] })));
    assert_ne!(again["sid"], reply["sid"]);
    // Unknown.
    let (unknown, _) = connect_with(&mut h, 3, Some(json!({ "pid": "nobody", "offset": "x.1" })));
    assert!(unknown["sid"].is_string() && unknown["pid"] != json!("nobody"));
    // Too late.
    h.channel.handle_ws_closed(3, h.now);
    h.advance(10_001);
    let (late, _) = connect_with(&mut h, 4, Some(json!({ "pid": unknown["pid"] })));
    assert_ne!(late["sid"], unknown["sid"]);
}

#[test]
fn an_offset_older_than_the_history_is_not_recovered() {
    let mut h = recovery_harness(|recovery| recovery.max_events = 3);
    let (reply, _) = connect_with(&mut h, 1, None);
    let first = emit(&mut h, &[], json!(["e", 0])).offset.unwrap();
    h.channel.handle_ws_closed(1, h.now);
    for i in 1..=5 {
        emit(&mut h, &[], json!(["e", i]));
    }
    h.outputs();
    let (again, after) = connect_with(
        &mut h,
        2,
        Some(json!({ "pid": reply["pid"], "offset": first })),
    );
    assert_ne!(again["sid"], reply["sid"], "events were lost: no recovery");
    assert!(events(&after).is_empty());
}

#[test]
fn the_history_keeps_its_bounds_the_oldest_going_first() {
    let mut h = recovery_harness(|recovery| recovery.max_events = 1_000);
    let mut offsets = Vec::new();
    for i in 0..1_001 {
        offsets.push(emit(&mut h, &[], json!(["e", i])).offset.unwrap());
    }
    let (kept, latest) = h.channel.history(None, 10_000).unwrap();
    assert_eq!(kept.len(), 1_000);
    assert_eq!(kept[0].offset, offsets[1], "the first event was evicted");
    assert_eq!(latest.as_deref(), Some(offsets[1_000].as_str()));
    assert_eq!(kept[0].event, json!(["e", 1]), "shown without its offset");
    // After the evicted first event, nothing is missing yet; one more and there is.
    assert_eq!(
        h.channel
            .history(Some(&offsets[0]), 10_000)
            .unwrap()
            .0
            .len(),
        1_000
    );
    emit(&mut h, &[], json!(["e", 1_001]));
    assert!(matches!(
        h.channel.history(Some(&offsets[0]), 10),
        Err(HistoryError::UnknownOffset(_))
    ));
    assert!(matches!(
        h.channel.history(Some("another-epoch.5"), 10),
        Err(HistoryError::UnknownOffset(_))
    ));
    let (page, _) = h.channel.history(Some(&offsets[998]), 10).unwrap();
    assert_eq!(page.len(), 3);
    // Bytes bound.
    let mut h = recovery_harness(|recovery| recovery.max_bytes = 1_000);
    for i in 0..100 {
        emit(&mut h, &[], json!(["payload", "x".repeat(90), i]));
    }
    let (kept, _) = h.channel.history(None, 1_000).unwrap();
    assert!(kept.len() < 10 && !kept.is_empty(), "{}", kept.len());
}

#[test]
fn a_burst_of_100_000_events_and_10_001_parked_sockets_stay_within_the_bounds() {
    let mut h = recovery_harness(|recovery| {
        recovery.max_events = 1_000;
        recovery.max_bytes = 200_000;
    });
    for i in 0..100_000 {
        emit(&mut h, &[], json!(["burst", "x".repeat(i % 500), i]));
        if i % 10_000 == 0 {
            let stats = h.channel.recovery_stats().unwrap();
            assert!(stats.events <= 1_000 && stats.bytes <= 200_000, "{stats:?}");
        }
    }
    let stats = h.channel.recovery_stats().unwrap();
    assert!(stats.events <= 1_000 && stats.bytes <= 200_000, "{stats:?}");
    assert!(stats.events > 100, "{stats:?}");
    // The newest are the ones kept.
    let (kept, _) = h.channel.history(None, usize::MAX).unwrap();
    assert_eq!(kept.last().unwrap().event[2], json!(99_999));
    for conn in 0..=(MAX_PARKED_SOCKETS as u64) {
        connect_with(&mut h, 100 + conn, None);
        h.channel.handle_ws_closed(100 + conn, h.now);
        h.outputs();
    }
    assert_eq!(
        h.channel.recovery_stats().unwrap().parked_sockets,
        MAX_PARKED_SOCKETS
    );
    // Past the window everything parked goes, and the channel may be dropped.
    h.advance(RecoveryPolicy::default().window_ms + 1);
    let stats = h.channel.recovery_stats().unwrap();
    assert_eq!(stats.parked_sockets, 0);
    assert!(!h.channel.holds_recovery_state());
}

#[test]
fn acked_emits_are_not_kept_and_relays_are() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    let socket = reply["sid"].as_str().unwrap().to_string();
    h.channel
        .emit_with_ack("/", &socket, json!(["ask"]), Vec::new(), 1, 1_000, h.now)
        .unwrap();
    assert_eq!(h.channel.history(None, 10).unwrap().0.len(), 0);
    // A client relay is a broadcast: kept, and the sender left out of it on recovery.
    h.text(1, r#"42["chat","hi"]"#);
    let (kept, _) = h.channel.history(None, 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0].except.is_empty(),
        "relay = all reaches the sender too"
    );
}

#[test]
fn a_durable_host_gets_one_batch_per_input_and_a_reload_recovers() {
    let policy = {
        let mut policy = (*policy(BehaviourKind::Relay, RelayMode::All)).clone();
        policy.recovery = Some(RecoveryPolicy::default());
        Arc::new(policy)
    };
    let mut h = Harness {
        channel: Channel::new("x", policy.clone(), Box::new(SequenceRandom::new(3)))
            .with_durable_store(),
        now: 1_000,
    };
    let mut store = MemoryStore::default();
    let (reply, _) = connect_with(&mut h, 1, None);
    h.text(1, r#"42["switchboard:join","a"]"#);
    let seen = h.outputs();
    store.apply_all(&seen);
    emit(&mut h, &["a"], json!(["to a", 1]));
    let outputs = h.outputs();
    let batches = outputs
        .iter()
        .filter(|o| matches!(o, Output::Store(_)))
        .count();
    assert_eq!(batches, 1, "one write batch for one broadcast");
    store.apply_all(&outputs);
    // The host dies without a close; a new channel loads what was stored.
    let mut h = Harness {
        channel: Channel::new("x", policy, Box::new(SequenceRandom::new(4))).with_durable_store(),
        now: 2_000,
    };
    let problems = h.channel.load_stored(store.state(), h.now);
    assert!(problems.is_empty(), "{problems:?}");
    // The socket stored as connected is stored again as parked from now, so that a later start
    // does not park it afresh.
    let reparked = h.outputs();
    store.apply_all(&reparked);
    let record = &store.sockets[reply["pid"].as_str().unwrap()];
    assert!(record.contains("\"disconnected_at\":2000"), "{record}");
    let (again, after) = connect_with(&mut h, 7, Some(json!({ "pid": reply["pid"] })));
    assert_eq!(again["sid"], reply["sid"]);
    assert_eq!(events(&after).len(), 1);
    assert_eq!(events(&after)[0][0], json!("to a"));
    // The recovered socket is in its room again.
    assert_eq!(
        h.channel.room_members("/", "a"),
        vec![reply["sid"].as_str().unwrap().to_string()]
    );
}

#[test]
fn a_rebuilt_channel_keeps_each_sockets_pid() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    let snapshots = h.channel.snapshots();
    assert_eq!(
        snapshots[0].1.sockets[0].pid.as_ref(),
        reply["pid"].as_str().map(str::to_string).as_ref()
    );
    let policy = h.channel.policy().clone();
    let mut rebuilt = Harness {
        channel: Channel::restore(
            "x",
            policy,
            Box::new(SequenceRandom::new(9)),
            snapshots,
            h.now,
        ),
        now: h.now,
    };
    rebuilt.outputs();
    rebuilt.channel.handle_ws_closed(1, rebuilt.now);
    let (again, _) = connect_with(&mut rebuilt, 2, Some(json!({ "pid": reply["pid"] })));
    assert_eq!(again["sid"], reply["sid"]);
}

/// A private channel with recovery, where clients join only the rooms their token grants.
fn private_recovery() -> Harness {
    use crate::config::{AuthMode, ChannelPattern, Secret};
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.auth = AuthMode::Private;
        policy.jwt_secret = Some(Secret::new("k"));
        policy.pattern = Some(ChannelPattern::parse("private/:id").unwrap());
        policy.client_rooms = false;
        policy.recovery = Some(RecoveryPolicy::default());
    });
    h.channel = Channel::new(
        "private/7",
        h.channel.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(5)),
    );
    h
}

fn grant(h: &Harness, sub: &str, rooms: &[&str]) -> String {
    super::signed(
        json!({"sub": sub, "exp": h.now / 1000 + 60, "channels": ["private/:id"], "rooms": rooms}),
        "k",
    )
}

#[test]
fn a_token_checked_again_decides_who_recovers_and_which_rooms_come_back() {
    let mut h = private_recovery();
    let token = grant(&h, "ada", &["vip"]);
    let (reply, _) = connect_with(&mut h, 1, Some(json!({ "token": token })));
    h.text(1, r#"421["switchboard:join","vip"]"#);
    h.outputs();
    assert_eq!(h.channel.room_members("/", "vip").len(), 1);
    h.channel.handle_ws_closed(1, h.now);
    emit(&mut h, &["vip"], json!(["secret"]));
    h.outputs();
    // Someone else's token with Ada's pid: a new socket.
    let mallory = grant(&h, "mallory", &["vip"]);
    let (other, _) = connect_with(
        &mut h,
        2,
        Some(json!({ "token": mallory, "pid": reply["pid"] })),
    );
    assert_ne!(other["sid"], reply["sid"]);
    // Ada again, with a token that no longer grants vip: her socket, without vip or its events.
    let demoted = grant(&h, "ada", &[]);
    let (again, after) = connect_with(
        &mut h,
        3,
        Some(json!({ "token": demoted, "pid": reply["pid"] })),
    );
    assert_eq!(again["sid"], reply["sid"]);
    assert!(events(&after).is_empty(), "{after:?}");
    assert!(h.channel.room_members("/", "vip").is_empty());
}

#[test]
fn hostile_offsets_and_a_repeated_connect_are_handled() {
    let mut h = recovery_harness(|_| {});
    let (reply, _) = connect_with(&mut h, 1, None);
    let offset = emit(&mut h, &[], json!(["e"])).offset.unwrap();
    let epoch = offset.split('.').next().unwrap().to_string();
    h.outputs();
    // A second CONNECT to the same namespace confirms again, pid included.
    h.text(1, "40");
    let again: Value = serde_json::from_str(&texts(&h.outputs(), 1)[0][2..]).unwrap();
    assert_eq!(again, reply);
    h.channel.handle_ws_closed(1, h.now);
    for hostile in [
        format!("{epoch}.18446744073709551615"),
        format!("{epoch}.-1"),
        format!("{epoch}."),
        ".".to_string(),
        String::new(),
    ] {
        let (fresh, _) = connect_with(
            &mut h,
            10,
            Some(json!({ "pid": reply["pid"], "offset": hostile })),
        );
        assert_ne!(fresh["sid"], reply["sid"]);
        h.channel.handle_ws_closed(10, h.now);
        h.outputs();
    }
    assert!(matches!(
        h.channel.history(Some("not-an-offset"), 1),
        Err(HistoryError::InvalidOffset(_))
    ));
    assert!(matches!(
        h.channel
            .history(Some(&format!("{epoch}.18446744073709551615")), 1),
        Err(HistoryError::UnknownOffset(_))
    ));
    // The real offset still recovers.
    let (back, _) = connect_with(
        &mut h,
        11,
        Some(json!({ "pid": reply["pid"], "offset": offset })),
    );
    assert_eq!(back["sid"], reply["sid"]);
}

#[test]
fn events_to_the_sender_alone_are_kept_for_it() {
    // The protocol test server answers `message` to its sender alone.
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.behaviour = BehaviourKind::Conformance;
        policy.recovery = Some(RecoveryPolicy::default());
    });
    h.channel = Channel::new(
        "x",
        h.channel.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(5)),
    );
    let (reply, after) = connect_with(&mut h, 1, None);
    let socket = reply["sid"].as_str().unwrap().to_string();
    h.text(1, r#"42["message","hi"]"#);
    let back = events(&texts(&h.outputs(), 1));
    let connect_event = events(&after);
    assert_eq!(connect_event[0][0], json!("auth"));
    assert_eq!(back[0][0], json!("message-back"));
    // Both carry their offset last, so the client's offset stays one of the channel's.
    let (kept, latest) = h.channel.history(None, 10).unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|event| event.rooms == vec![socket.clone()]));
    assert_eq!(
        back[0].as_array().unwrap().last().unwrap(),
        &json!(latest.unwrap())
    );
}
