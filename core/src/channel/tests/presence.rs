//! Presence: members by user, their events, the grace of parked sockets, coalescing, bounds and
//! rebuilds.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};

use super::*;
use crate::config::{PresencePolicy, RecoveryPolicy, RelayMode};
use crate::testing::MemoryStore;

/// A private channel `room/1` with presence (and recovery, if asked): users come from tokens.
/// Heartbeats are slow enough never to end a session while the clock jumps.
fn presence_channel(edit: impl FnOnce(&mut PresencePolicy), recovery: bool) -> Harness {
    presence_channel_beating(edit, recovery, 1_000_000)
}

/// The same, pinging every `ping_interval_ms` (and waiting 200 ms for the pong).
fn presence_channel_beating(
    edit: impl FnOnce(&mut PresencePolicy),
    recovery: bool,
    ping_interval_ms: u64,
) -> Harness {
    use crate::config::{AuthMode, ChannelPattern, Secret};
    // Each change at once, unless a test coalesces.
    let mut presence = PresencePolicy {
        coalesce_ms: 0,
        ..PresencePolicy::default()
    };
    edit(&mut presence);
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.auth = AuthMode::Private;
        policy.jwt_secret = Some(Secret::new("k"));
        policy.pattern = Some(ChannelPattern::parse("room/:id").unwrap());
        policy.presence = Some(presence);
        policy.recovery = recovery.then(RecoveryPolicy::default);
        policy.ping_interval_ms = ping_interval_ms;
    });
    h.channel = Channel::new(
        "room/1",
        h.channel.engine.policy().clone(),
        Box::new(crate::testing::SequenceRandom::new(9)),
    );
    h
}

fn token_for(h: &Harness, user: &str, info: Value) -> String {
    signed(
        json!({"sub": user, "info": info, "exp": h.now / 1000 + 3600, "channels": ["room/:id"]}),
        "k",
    )
}

/// Opens `conn` and connects it as `user`; returns the CONNECT reply and every output.
fn join_as(h: &mut Harness, conn: ConnId, user: &str) -> (Value, Vec<Output>) {
    let token = token_for(h, user, json!({ "name": user.to_uppercase() }));
    join_with(h, conn, json!({ "token": token }))
}

fn join_with(h: &mut Harness, conn: ConnId, auth: Value) -> (Value, Vec<Output>) {
    h.open_ws(conn);
    h.text(conn, &format!("40{auth}"));
    let outputs = h.outputs();
    let texts = texts(&outputs, conn);
    let reply = serde_json::from_str(&texts[0][2..]).expect("a connect reply");
    (reply, outputs)
}

/// The `switchboard:presence` events `conn` received in `outputs`: their changes, as
/// `"+alice"` / `"-alice"`, and the count each carried.
fn presence_seen(outputs: &[Output], conn: ConnId) -> Vec<(Vec<String>, u64)> {
    texts(outputs, conn)
        .iter()
        .filter_map(|text| text.strip_prefix("42"))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|event| event[0] == PRESENCE_EVENT)
        .map(|event| {
            let changes = event[1]["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|change| {
                    let sign = if change["type"] == "join" { "+" } else { "-" };
                    format!("{sign}{}", change["member"]["id"].as_str().unwrap())
                })
                .collect();
            (changes, event[1]["count"].as_u64().unwrap())
        })
        .collect()
}

fn member_ids(h: &Harness) -> Vec<String> {
    h.channel
        .presence(None, usize::MAX)
        .unwrap()
        .members
        .iter()
        .map(|member| member["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_user_with_two_tabs_is_one_member_who_leaves_with_the_last() {
    let mut h = presence_channel(|_| {}, false);
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "alice");
    join_as(&mut h, 3, "bob");
    assert_eq!(member_ids(&h), ["alice", "bob"]);
    let page = h.channel.presence(None, 10).unwrap();
    assert_eq!(
        page.members[0],
        json!({ "id": "alice", "info": { "name": "ALICE" } })
    );
    assert_eq!(h.channel.occupancy().members, Some(2));

    // Alice closes one tab: nobody hears of it.
    h.channel.handle_ws_closed(1, h.now);
    let outputs = h.outputs();
    assert!(presence_seen(&outputs, 3).is_empty());
    assert_eq!(member_ids(&h), ["alice", "bob"]);

    // Her last tab: Bob sees her leave, with the count after it.
    h.channel.handle_ws_closed(2, h.now);
    let outputs = h.outputs();
    assert_eq!(
        presence_seen(&outputs, 3),
        [(vec!["-alice".to_string()], 1)]
    );
    assert_eq!(member_ids(&h), ["bob"]);
}

#[test]
fn a_join_reaches_every_socket_the_joiner_included_once() {
    let mut h = presence_channel(|_| {}, false);
    join_as(&mut h, 1, "alice");
    h.open_ws(2);
    let token = token_for(&h, "bob", Value::Null);
    h.text(2, &format!(r#"40{{"token":"{token}"}}"#));
    let outputs = h.outputs();
    assert_eq!(presence_seen(&outputs, 1), [(vec!["+bob".to_string()], 2)]);
    // The joiner gets its CONNECT reply first, then its own join.
    let texts = texts(&outputs, 2);
    assert!(texts[0].starts_with("40"), "{texts:?}");
    assert_eq!(presence_seen(&outputs, 2), [(vec!["+bob".to_string()], 2)]);
    // A member without info shows none.
    let page = h.channel.presence(None, 10).unwrap();
    assert_eq!(page.members[1], json!({ "id": "bob" }));
}

#[test]
fn anonymous_sockets_count_as_themselves() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| {
        policy.presence = Some(PresencePolicy {
            coalesce_ms: 0,
            ..PresencePolicy::default()
        });
    });
    let one = h.connect(1, "/");
    let two = h.connect(2, "/");
    let page = h.channel.presence(None, 10).unwrap();
    assert_eq!(page.count, 2);
    let mut expected = vec![
        json!({ "id": one, "anonymous": true }),
        json!({ "id": two, "anonymous": true }),
    ];
    expected.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(page.members, expected);
    // What a socket without a user declares of itself is shown, as anonymous.
    h.open_ws(3);
    h.text(3, r#"40{"info":{"nick":"Zoe"}}"#);
    let third: Value = serde_json::from_str(&texts(&h.outputs(), 3)[0][2..]).unwrap();
    let page = h.channel.presence(None, 10).unwrap();
    assert!(
        page.members
            .contains(&json!({ "id": third["sid"], "anonymous": true, "info": { "nick": "Zoe" } })),
        "{:?}",
        page.members
    );
}

#[test]
fn a_silent_socket_leaves_at_its_ping_timeout() {
    let mut h = presence_channel_beating(|_| {}, true, 300);
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    h.outputs();
    // Bob answers every ping; Alice's socket went dark without a close.
    let mut left_at = None;
    for _ in 0..20 {
        h.advance(50);
        let outputs = h.outputs();
        if texts(&outputs, 2).iter().any(|text| text == "2") {
            h.text(2, "3");
        }
        let seen = presence_seen(&outputs, 2);
        if !seen.is_empty() {
            assert_eq!(seen, [(vec!["-alice".to_string()], 1)]);
            left_at = Some(h.now);
            break;
        }
    }
    // Ping interval 300 + timeout 200 (with recovery on: a ping timeout has no extra grace).
    let left_at = left_at.expect("alice left");
    assert!(left_at - 1_000 <= 550, "left after {} ms", left_at - 1_000);
}

#[test]
fn a_recovered_socket_makes_no_leave_and_no_join() {
    let mut h = presence_channel(|presence| presence.leave_grace_ms = 2_000, true);
    let (reply, _) = join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    h.outputs();
    h.channel.handle_ws_closed(1, h.now);
    h.advance(1_000);
    let token = token_for(&h, "alice", json!({ "name": "ALICE" }));
    let (again, _) = join_with(&mut h, 3, json!({ "token": token, "pid": reply["pid"] }));
    assert_eq!(again["sid"], reply["sid"], "recovered");
    h.advance(5_000);
    let outputs = h.outputs();
    assert!(
        presence_seen(&outputs, 2).is_empty(),
        "{:?}",
        presence_seen(&outputs, 2)
    );
    assert_eq!(member_ids(&h), ["alice", "bob"]);
}

#[test]
fn a_parked_socket_leaves_when_its_grace_runs_out() {
    let mut h = presence_channel(|presence| presence.leave_grace_ms = 2_000, true);
    let (reply, _) = join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    h.outputs();
    h.channel.handle_ws_closed(1, h.now);
    h.advance(1_900);
    assert!(presence_seen(&h.outputs(), 2).is_empty());
    h.advance(200);
    assert_eq!(
        presence_seen(&h.outputs(), 2),
        [(vec!["-alice".to_string()], 1)]
    );
    // Recovered later (within the recovery window): a join again.
    let token = token_for(&h, "alice", json!({ "name": "ALICE" }));
    let (again, outputs) = join_with(&mut h, 3, json!({ "token": token, "pid": reply["pid"] }));
    assert_eq!(again["sid"], reply["sid"]);
    assert_eq!(
        presence_seen(&outputs, 2),
        [(vec!["+alice".to_string()], 2)]
    );
}

#[test]
fn the_list_survives_a_rebuild_from_snapshots_without_events() {
    let mut h = presence_channel(|_| {}, false);
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "alice");
    join_as(&mut h, 3, "bob");
    let policy = h.channel.policy().clone();
    let snapshots = h.channel.snapshots();
    let mut rebuilt = Harness {
        channel: Channel::restore(
            "room/1",
            policy,
            Box::new(crate::testing::SequenceRandom::new(3)),
            snapshots,
            h.now,
        ),
        now: h.now,
    };
    assert!(presence_seen(&rebuilt.outputs(), 3).is_empty());
    assert_eq!(member_ids(&rebuilt), ["alice", "bob"]);
    let page = rebuilt.channel.presence(None, 10).unwrap();
    assert_eq!(page.members[0]["info"], json!({ "name": "ALICE" }));
    // Its counts are right: Alice leaves with her second tab only.
    rebuilt.channel.handle_ws_closed(1, rebuilt.now);
    assert!(presence_seen(&rebuilt.outputs(), 3).is_empty());
    rebuilt.channel.handle_ws_closed(2, rebuilt.now);
    assert_eq!(
        presence_seen(&rebuilt.outputs(), 3),
        [(vec!["-alice".to_string()], 1)]
    );
}

#[test]
fn a_parked_socket_in_its_grace_survives_a_restart_of_a_durable_host_and_leaves_once() {
    let mut h = presence_channel(|presence| presence.leave_grace_ms = 2_000, true);
    let policy = h.channel.policy().clone();
    h.channel = Channel::new(
        "room/1",
        policy.clone(),
        Box::new(crate::testing::SequenceRandom::new(4)),
    )
    .with_durable_store();
    let mut store = MemoryStore::default();
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    store.apply_all(&h.outputs());
    h.channel.handle_ws_closed(1, h.now);
    store.apply_all(&h.outputs());
    // The host goes down 500 ms later, and is back with Bob's socket (from its snapshot).
    h.advance(500);
    let snapshots: Vec<_> = h
        .channel
        .snapshots()
        .into_iter()
        .filter(|(conn, _)| *conn == 2)
        .collect();
    let restart = |store: &MemoryStore, now: u64| {
        let mut channel = Channel::restore(
            "room/1",
            policy.clone(),
            Box::new(crate::testing::SequenceRandom::new(5)),
            snapshots.clone(),
            now,
        )
        .with_durable_store();
        assert!(channel.load_stored(store.state(), now).is_empty());
        Harness { channel, now }
    };
    let mut back = restart(&store, h.now);
    assert_eq!(member_ids(&back), ["alice", "bob"], "alice is in her grace");
    back.advance(1_400);
    assert!(presence_seen(&back.outputs(), 2).is_empty());
    back.advance(200);
    let outputs = back.outputs();
    assert_eq!(
        presence_seen(&outputs, 2),
        [(vec!["-alice".to_string()], 1)]
    );
    store.apply_all(&outputs);
    // Down again and back: her leave was announced, and is not announced twice.
    let mut again = restart(&store, back.now + 100);
    again.advance(10);
    assert!(presence_seen(&again.outputs(), 2).is_empty());
    assert_eq!(member_ids(&again), ["bob"]);
}

#[test]
fn joins_within_the_window_go_out_together_and_every_one_is_accounted_for() {
    let mut h = presence_channel(|presence| presence.coalesce_ms = 100, false);
    join_as(&mut h, 1, "watcher");
    h.advance(200);
    h.outputs();
    let mut seen = Vec::new();
    for conn in 2..202 {
        let (_, outputs) = join_as(&mut h, conn, &format!("user{conn:03}"));
        seen.extend(presence_seen(&outputs, 1));
    }
    h.advance(150);
    seen.extend(presence_seen(&h.outputs(), 1));
    assert!(seen.len() <= 2, "{} events", seen.len());
    let joined: Vec<String> = seen.into_iter().flat_map(|(changes, _)| changes).collect();
    assert_eq!(joined.len(), 200);
    let expected: Vec<String> = (2..202).map(|conn| format!("+user{conn:03}")).collect();
    assert_eq!(joined, expected);
}

#[test]
fn a_burst_longer_than_an_event_holds_is_split() {
    let mut h = presence_channel(|presence| presence.coalesce_ms = 10_000, false);
    join_as(&mut h, 1, "watcher");
    h.advance(20_000);
    h.outputs();
    let mut seen = Vec::new();
    for conn in 2..(2 + MAX_CHANGES_PER_EVENT as u64 + 10) {
        let (_, outputs) = join_as(&mut h, conn, &format!("u{conn:04}"));
        seen.extend(presence_seen(&outputs, 1));
    }
    assert_eq!(seen.len(), 1, "the full event went out at once");
    assert_eq!(seen[0].0.len(), MAX_CHANGES_PER_EVENT);
    h.advance(10_000);
    let rest = presence_seen(&h.outputs(), 1);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0.len(), 10);
}

#[test]
fn the_member_cap_and_the_info_size_are_refused_clearly() {
    let mut h = presence_channel(
        |presence| {
            presence.max_members = 2;
            presence.max_info_bytes = 64;
        },
        false,
    );
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    let (refused, _) = join_as(&mut h, 3, "carol");
    assert_eq!(
        refused,
        json!({ "message": "presence is full: at most 2 members" })
    );
    // Another tab of a member is not a new member.
    assert!(join_as(&mut h, 4, "bob").0["sid"].is_string());
    let token = token_for(&h, "alice", json!({ "bio": "x".repeat(100) }));
    let (refused, _) = join_with(&mut h, 5, json!({ "token": token }));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("presence takes at most 64"),
        "{refused}"
    );
}

#[test]
fn members_are_listed_by_page_over_the_members_event() {
    let mut h = presence_channel(|presence| presence.page_size = 2, false);
    for (conn, user) in [(1, "dan"), (2, "ada"), (3, "cy"), (4, "bo"), (5, "eve")] {
        join_as(&mut h, conn, user);
    }
    h.outputs();
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for ack in 1..10 {
        let query = match &after {
            Value::Null => json!({}),
            cursor => json!({ "after": cursor }),
        };
        h.text(1, &format!(r#"42{ack}["switchboard:members",{query}]"#));
        let texts = texts(&h.outputs(), 1);
        let answer: Value = serde_json::from_str(&texts[0][2 + ack.to_string().len()..]).unwrap();
        let page = &answer[0];
        assert_eq!(page["count"], 5);
        assert!(page["members"].as_array().unwrap().len() <= 2);
        ids.extend(
            page["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|member| member["id"].as_str().unwrap().to_string()),
        );
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
    }
    assert_eq!(ids, ["ada", "bo", "cy", "dan", "eve"]);
    // A cursor that is none gets a clear error.
    h.text(1, r#"4299["switchboard:members",{"after":"nonsense"}]"#);
    let texts = texts(&h.outputs(), 1);
    assert!(texts[0].contains("INVALID_CURSOR"), "{texts:?}");
}

#[test]
fn without_presence_the_members_event_says_so_and_nothing_else_changes() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.connect(2, "/");
    let outputs = h.outputs();
    assert!(presence_seen(&outputs, 1).is_empty());
    assert_eq!(h.channel.occupancy().members, None);
    h.text(1, r#"421["switchboard:members"]"#);
    let texts = texts(&h.outputs(), 1);
    assert!(texts[0].contains("PRESENCE_OFF"), "{texts:?}");
}

#[test]
fn the_server_may_not_emit_presence_events() {
    let mut h = presence_channel(|_| {}, false);
    let refused = h.channel.emit(
        ServerEmit {
            namespace: "/".into(),
            args: json!([PRESENCE_EVENT, {}]),
            ..ServerEmit::default()
        },
        h.now,
    );
    assert_eq!(
        refused,
        Err(EmitError::ReservedEvent(PRESENCE_EVENT.to_string()))
    );
}

#[test]
fn another_user_presenting_a_parked_pid_gets_a_new_id_and_the_parked_one_still_leaves() {
    let mut h = presence_channel(|presence| presence.leave_grace_ms = 2_000, true);
    let (reply, _) = join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    h.outputs();
    h.channel.handle_ws_closed(1, h.now);
    let token = token_for(&h, "mallory", Value::Null);
    let (other, outputs) = join_with(&mut h, 3, json!({ "token": token, "pid": reply["pid"] }));
    assert_ne!(other["sid"], reply["sid"], "not recovered, so not her id");
    assert_eq!(
        presence_seen(&outputs, 2),
        [(vec!["+mallory".to_string()], 3)]
    );
    h.advance(2_100);
    assert_eq!(
        presence_seen(&h.outputs(), 2),
        [(vec!["-alice".to_string()], 2)]
    );
    assert_eq!(member_ids(&h), ["bob", "mallory"]);
}

#[test]
fn a_rebuilt_channel_sends_coalesced_changes_when_the_window_closes() {
    let mut h = presence_channel(|presence| presence.coalesce_ms = 100, false);
    join_as(&mut h, 1, "alice");
    join_as(&mut h, 2, "bob");
    h.advance(200);
    let snapshots = h.channel.snapshots();
    let mut rebuilt = Harness {
        channel: Channel::restore(
            "room/1",
            h.channel.policy().clone(),
            Box::new(crate::testing::SequenceRandom::new(3)),
            snapshots,
            h.now,
        ),
        now: h.now,
    };
    rebuilt.outputs();
    rebuilt.channel.handle_ws_closed(1, rebuilt.now);
    assert!(
        presence_seen(&rebuilt.outputs(), 2).is_empty(),
        "not before the window closes"
    );
    rebuilt.advance(150);
    assert_eq!(
        presence_seen(&rebuilt.outputs(), 2),
        [(vec!["-alice".to_string()], 1)]
    );
}
