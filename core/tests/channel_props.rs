//! Property tests of the channel state machine: any sequence of host inputs, valid or hostile, never
//! panics, and the outputs keep the promises hosts rely on.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;
use switchboard_core::backend::ClientInfo;
use switchboard_core::channel::{Channel, ConnId, Output, ServerEmit};
use switchboard_core::config::{BehaviourKind, ChannelPolicy, RecoveryPolicy, RelayMode};
use switchboard_core::http::Method;
use switchboard_core::testing::{MemoryStore, SequenceRandom};

#[derive(Debug, Clone)]
enum Input {
    WsOpen {
        conn: u8,
        upgrade_of: Option<u8>,
    },
    WsText {
        conn: u8,
        text: String,
    },
    WsBinary {
        conn: u8,
        bytes: Vec<u8>,
    },
    WsClosed {
        conn: u8,
    },
    Get {
        session: Option<u8>,
    },
    Post {
        session: u8,
        body: String,
    },
    Abort {
        request: u8,
    },
    Advance {
        ms: u16,
    },
    PongSeen {
        conn: u8,
        ago: u8,
    },
    Emit {
        room: Option<String>,
    },
    /// The host restarts: the channel is rebuilt from its WebSocket sessions' snapshots.
    Rebuild,
}

/// Texts that exercise real paths more often than random strings would.
fn packet_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("40".to_string()),
        Just("40/admin,".to_string()),
        Just("41".to_string()),
        Just("3".to_string()),
        Just("2probe".to_string()),
        Just("5".to_string()),
        Just("1".to_string()),
        Just(r#"42["ev",1]"#.to_string()),
        Just(r#"421["ev",{"a":[1]}]"#.to_string()),
        Just(r#"42["switchboard:join","r"]"#.to_string()),
        Just(r#"42["switchboard:leave","r"]"#.to_string()),
        Just(r#"451-["bin",{"_placeholder":true,"num":0}]"#.to_string()),
        Just("430[]".to_string()),
        Just(r#"40{"pid":"unknown","offset":"x.1"}"#.to_string()),
        "[0-6][0-9a-z\\[\\]{}\",/-]{0,12}",
        any::<String>(),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0u8..6, proptest::option::of(0u8..4))
            .prop_map(|(conn, upgrade_of)| Input::WsOpen { conn, upgrade_of }),
        (0u8..6, packet_text()).prop_map(|(conn, text)| Input::WsText { conn, text }),
        (0u8..6, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(conn, bytes)| Input::WsBinary { conn, bytes }),
        (0u8..6).prop_map(|conn| Input::WsClosed { conn }),
        proptest::option::of(0u8..4).prop_map(|session| Input::Get { session }),
        (0u8..4, packet_text()).prop_map(|(session, body)| Input::Post { session, body }),
        (0u8..16).prop_map(|request| Input::Abort { request }),
        (0u16..700).prop_map(|ms| Input::Advance { ms }),
        (0u8..6, any::<u8>()).prop_map(|(conn, ago)| Input::PongSeen { conn, ago }),
        proptest::option::of(Just("r".to_string())).prop_map(|room| Input::Emit { room }),
        Just(Input::Rebuild),
    ]
}

fn policy(recovery: bool) -> Arc<ChannelPolicy> {
    Arc::new(ChannelPolicy {
        behaviour: BehaviourKind::Relay,
        relay: RelayMode::All,
        namespaces: vec!["/".into(), "/admin".into()],
        client_rooms: true,
        ping_interval_ms: 300,
        ping_timeout_ms: 200,
        connect_timeout_ms: 1000,
        max_payload: 64,
        allowed_origins: vec!["*".into()],
        recovery: recovery.then(|| RecoveryPolicy {
            max_events: 8,
            ..RecoveryPolicy::default()
        }),
        ..ChannelPolicy::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_input_sequence_is_handled_without_panics(
        inputs in proptest::collection::vec(input(), 1..60),
        batched in any::<bool>(),
        recovery in any::<bool>(),
    ) {
        let mut channel = Channel::new("p", policy(recovery), Box::new(SequenceRandom::new(1))).with_durable_store();
        if batched {
            channel = channel.with_batched_heartbeats();
        }
        let mut store = MemoryStore::default();
        let mut now = 0u64;
        let mut next_request: ConnId = 1_000;
        // Sids handed out by polling handshakes, so later inputs can name real sessions.
        let mut sids: Vec<String> = Vec::new();
        // WebSocket conns the host considers open.
        let mut open: HashSet<ConnId> = HashSet::new();
        let mut answered: HashSet<ConnId> = HashSet::new();
        let mut requests: HashMap<u8, ConnId> = HashMap::new();
        // Sessions announced open and not yet closed: what a host counting sessions holds.
        let mut announced: HashSet<String> = HashSet::new();

        for input in inputs {
            match input {
                Input::WsOpen { conn, upgrade_of } => {
                    let conn = ConnId::from(conn);
                    if open.contains(&conn) {
                        continue; // hosts never reuse a live conn id
                    }
                    open.insert(conn);
                    let sid = upgrade_of.and_then(|i| sids.get(usize::from(i)).cloned());
                    channel.handle_ws_open(conn, sid.as_deref(), ClientInfo::default(), now);
                }
                Input::WsText { conn, text } => {
                    if open.contains(&ConnId::from(conn)) {
                        channel.handle_ws_text(ConnId::from(conn), &text, now);
                    }
                }
                Input::WsBinary { conn, bytes } => {
                    if open.contains(&ConnId::from(conn)) {
                        channel.handle_ws_binary(ConnId::from(conn), Bytes::from(bytes), now);
                    }
                }
                Input::WsClosed { conn } => {
                    if open.remove(&ConnId::from(conn)) {
                        channel.handle_ws_closed(ConnId::from(conn), now);
                    }
                }
                Input::Get { session } => {
                    next_request += 1;
                    requests.insert((next_request % 16) as u8, next_request);
                    let sid = session.and_then(|i| sids.get(usize::from(i)).cloned());
                    channel.handle_polling(next_request, Method::Get, sid.as_deref(), None, ClientInfo::default(), Bytes::new(), now);
                }
                Input::Post { session, body } => {
                    next_request += 1;
                    let sid = sids.get(usize::from(session)).cloned();
                    channel.handle_polling(next_request, Method::Post, sid.as_deref(), None, ClientInfo::default(), Bytes::from(body), now);
                }
                Input::Abort { request } => {
                    if let Some(request) = requests.remove(&request) && !answered.contains(&request) {
                        channel.handle_http_aborted(request, now);
                    }
                }
                Input::Advance { ms } => {
                    now += u64::from(ms);
                    channel.handle_timeout(now);
                }
                Input::PongSeen { conn, ago } => {
                    if open.contains(&ConnId::from(conn)) {
                        channel.handle_pong_seen(ConnId::from(conn), now.saturating_sub(u64::from(ago)));
                    }
                }
                Input::Emit { room } => {
                    let emit = ServerEmit {
                        namespace: "/".into(),
                        args: json!(["server", 1]),
                        rooms: room.into_iter().collect(),
                        ..ServerEmit::default()
                    };
                    prop_assert!(channel.emit(emit, now).is_ok());
                }
                Input::Rebuild => {
                    let snapshots = channel.snapshots();
                    // What the snapshots hold is what the rebuilt channel must hold.
                    let mut sockets: HashMap<String, usize> = HashMap::new();
                    let mut rooms: HashMap<(String, String), Vec<String>> = HashMap::new();
                    for (_, snapshot) in &snapshots {
                        for socket in &snapshot.sockets {
                            *sockets.entry(socket.namespace.clone()).or_default() += 1;
                            for room in &socket.rooms {
                                rooms
                                    .entry((socket.namespace.clone(), room.clone()))
                                    .or_default()
                                    .push(socket.id.clone());
                            }
                        }
                    }
                    let survivors: HashSet<ConnId> = snapshots.iter().map(|(conn, _)| *conn).collect();
                    // Restored sessions are not announced again; the host keeps what it counted.
                    let restored: HashSet<&str> = snapshots.iter().map(|(_, snapshot)| snapshot.sid.as_str()).collect();
                    announced.retain(|sid| restored.contains(sid.as_str()));
                    // Polling sessions and probes do not survive a restart; their conns are gone.
                    open.retain(|conn| survivors.contains(conn));
                    let history = channel.history(None, usize::MAX).ok();
                    channel = Channel::restore("p", policy(recovery), Box::new(SequenceRandom::new(2)), snapshots, now)
                        .with_durable_store();
                    if batched {
                        channel = channel.with_batched_heartbeats();
                    }
                    // The history comes back from the store as it was.
                    let problems = channel.load_stored(store.state(), now);
                    prop_assert!(problems.is_empty(), "{problems:?}");
                    prop_assert_eq!(channel.history(None, usize::MAX).ok(), history);
                    // The rebuilt channel holds exactly what the snapshots held.
                    for namespace in ["/", "/admin"] {
                        prop_assert_eq!(channel.socket_count(namespace), sockets.get(namespace).copied().unwrap_or(0));
                    }
                    for ((namespace, room), mut members) in rooms {
                        members.sort();
                        prop_assert_eq!(channel.room_members(&namespace, &room), members);
                    }
                    prop_assert_eq!(channel.snapshots().len(), survivors.len());
                }
            }
            while let Some(output) = channel.poll_output() {
                match output {
                    Output::Transmit { conn, frames } => {
                        prop_assert!(open.contains(&conn), "transmit to a closed conn {conn}");
                        prop_assert!(!frames.is_empty());
                    }
                    Output::Broadcast { conns, frames } => {
                        prop_assert!(conns.len() > 1, "a broadcast names several conns");
                        let distinct: HashSet<_> = conns.iter().collect();
                        prop_assert_eq!(distinct.len(), conns.len(), "a conn named twice");
                        for conn in &conns {
                            prop_assert!(open.contains(conn), "broadcast to a closed conn {conn}");
                        }
                        prop_assert!(!frames.is_empty());
                    }
                    Output::CloseWebSocket { conn, .. } => {
                        prop_assert!(open.remove(&conn), "close of a conn that is not open {conn}");
                    }
                    Output::Respond { request, response } => {
                        prop_assert!(answered.insert(request), "request {request} answered twice");
                        if response.status == 200
                            && response.body.first() == Some(&b'0')
                            && let Ok(handshake) = serde_json::from_slice::<serde_json::Value>(&response.body[1..])
                            && let Some(sid) = handshake["sid"].as_str()
                        {
                            sids.push(sid.to_string());
                        }
                    }
                    Output::SessionChanged { conn } => {
                        prop_assert!(open.contains(&conn));
                        prop_assert!(channel.snapshot(conn).is_some());
                    }
                    Output::SessionOpened { sid, .. } => {
                        prop_assert!(announced.insert(sid.clone()), "session {sid} opened twice");
                    }
                    Output::SessionClosed { sid } => {
                        prop_assert!(announced.remove(&sid), "session {sid} closed but not open");
                    }
                    Output::AckReceived { .. } | Output::AckUnanswered { .. } => {}
                    Output::Store(ops) => {
                        prop_assert!(recovery, "a store batch without recovery");
                        prop_assert!(!ops.is_empty());
                        store.apply(&ops);
                    }
                    Output::BackendCall(_) | Output::Warning { .. } => {
                        prop_assert!(false, "no backend is configured: {output:?}");
                    }
                }
            }
            // Every open session was announced, and every announced one is still open.
            prop_assert_eq!(announced.len(), channel.session_count());
            // Sockets never outnumber what the sessions could hold (two namespaces each).
            prop_assert!(channel.socket_count("/") <= channel.session_count());
            prop_assert!(channel.socket_count("/admin") <= channel.session_count());
        }
    }
}
