//! Drives a channel from both ends with a manual clock, as a host would.

mod backend;
mod limits;
mod presence;
mod recovery;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::backend::ClientInfo;
use crate::config::{BehaviourKind, ChannelPolicy, RelayMode};
use crate::testing::SequenceRandom;

fn policy(behaviour: BehaviourKind, relay: RelayMode) -> Arc<ChannelPolicy> {
    Arc::new(ChannelPolicy {
        behaviour,
        relay,
        namespaces: vec!["/".into(), "/admin".into()],
        client_rooms: true,
        ping_interval_ms: 300,
        ping_timeout_ms: 200,
        connect_timeout_ms: 1000,
        max_payload: 1000,
        allowed_origins: vec!["*".into()],
        ..ChannelPolicy::default()
    })
}

/// A channel plus a clock and the outputs seen so far.
struct Harness {
    channel: Channel,
    now: u64,
}

impl Harness {
    fn new(behaviour: BehaviourKind, relay: RelayMode) -> Self {
        Self {
            channel: Channel::new(
                "test",
                policy(behaviour, relay),
                Box::new(SequenceRandom::new(7)),
            ),
            now: 1_000,
        }
    }

    fn relay(relay: RelayMode) -> Self {
        Self::new(BehaviourKind::Relay, relay)
    }

    /// A relay channel whose policy `edit` adjusts.
    fn relay_with(relay: RelayMode, edit: impl FnOnce(&mut ChannelPolicy)) -> Self {
        let mut policy = (*policy(BehaviourKind::Relay, relay)).clone();
        edit(&mut policy);
        Self {
            channel: Channel::new("x", Arc::new(policy), Box::new(SequenceRandom::new(5))),
            now: 1_000,
        }
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.channel.poll_output()).collect()
    }

    /// Opens a WebSocket session and returns its sid.
    fn open_ws(&mut self, conn: ConnId) -> String {
        self.channel
            .handle_ws_open(conn, None, ClientInfo::default(), self.now);
        let texts = texts(&self.outputs(), conn);
        let open = texts.first().expect("handshake sent");
        let handshake: Value = serde_json::from_str(&open[1..]).expect("handshake is JSON");
        assert_eq!(handshake["upgrades"], json!([]));
        handshake["sid"].as_str().expect("sid").to_string()
    }

    /// Opens a WebSocket session connected to `namespace` and returns the socket id.
    fn connect(&mut self, conn: ConnId, namespace: &str) -> String {
        if self.channel.snapshot(conn).is_none() {
            self.open_ws(conn);
        }
        let packet = if namespace == "/" {
            "40".to_string()
        } else {
            format!("40{namespace},")
        };
        self.text(conn, &packet);
        let texts = texts(&self.outputs(), conn);
        let reply = texts.first().expect("connect reply");
        let json_start = reply.find('{').expect("connect payload");
        let payload: Value = serde_json::from_str(&reply[json_start..]).unwrap();
        payload["sid"].as_str().expect("socket id").to_string()
    }

    fn text(&mut self, conn: ConnId, text: &str) {
        self.channel.handle_ws_text(conn, text, self.now);
    }

    /// Moves the clock forward by `ms`, firing each timer at its own deadline, in order, as a
    /// punctual host would.
    fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        while let Some(deadline) = self.channel.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            self.channel.handle_timeout(self.now);
        }
        self.now = target;
    }

    /// A server emit to the whole namespace `/`; returns how many sockets it reached.
    fn emit_to_all(&mut self, args: Value) -> usize {
        self.emit_to(&[], args)
    }

    /// A server emit to `rooms` (a socket's id is a room of its own) of namespace `/`; returns
    /// how many sockets it reached.
    fn emit_to(&mut self, rooms: &[&str], args: Value) -> usize {
        let emit = ServerEmit {
            namespace: "/".into(),
            args,
            rooms: rooms.iter().map(|room| room.to_string()).collect(),
            ..ServerEmit::default()
        };
        self.channel
            .emit(emit, self.now)
            .expect("a valid emit")
            .delivered
    }

    /// Opens a polling session with request `request` and returns its sid.
    fn open_polling(&mut self, request: ConnId) -> String {
        self.channel.handle_polling(
            request,
            Method::Get,
            None,
            None,
            ClientInfo::default(),
            Bytes::new(),
            self.now,
        );
        let text = body(&response_to(&self.outputs(), request).expect("handshake answered"));
        let handshake: Value = serde_json::from_str(&text[1..]).expect("handshake is JSON");
        handshake["sid"].as_str().expect("sid").to_string()
    }

    fn get(&mut self, request: ConnId, sid: &str) {
        self.channel.handle_polling(
            request,
            Method::Get,
            Some(sid),
            None,
            ClientInfo::default(),
            Bytes::new(),
            self.now,
        );
    }

    fn post(&mut self, request: ConnId, sid: &str, body: &str) {
        self.channel.handle_polling(
            request,
            Method::Post,
            Some(sid),
            None,
            ClientInfo::default(),
            Bytes::from(body.to_string()),
            self.now,
        );
    }
}

/// Text frames transmitted to `conn`, in order.
fn texts(outputs: &[Output], conn: ConnId) -> Vec<String> {
    frames_to(outputs, conn)
        .iter()
        .filter_map(|frame| frame.as_text().map(str::to_string))
        .collect()
}

/// Frames written to `conn`, in order, whether sent to it alone or in a broadcast.
fn frames_to(outputs: &[Output], conn: ConnId) -> Vec<WireFrame> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Transmit { conn: to, frames } if *to == conn => Some(frames.to_vec()),
            Output::Broadcast { conns, frames } if conns.contains(&conn) => Some(frames.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Every (connection, frames) written, a broadcast counting once per recipient.
fn deliveries(outputs: &[Output]) -> Vec<(ConnId, Frames)> {
    outputs
        .iter()
        .flat_map(|output| match output {
            Output::Transmit { conn, frames } => vec![(*conn, frames.clone())],
            Output::Broadcast { conns, frames } => {
                conns.iter().map(|conn| (*conn, frames.clone())).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn response_to(outputs: &[Output], request: ConnId) -> Option<HttpResponse> {
    outputs.iter().find_map(|output| match output {
        Output::Respond {
            request: to,
            response,
        } if *to == request => Some(response.clone()),
        _ => None,
    })
}

fn closed(outputs: &[Output], conn: ConnId) -> Option<u16> {
    outputs.iter().find_map(|output| match output {
        Output::CloseWebSocket { conn: to, code, .. } if *to == conn => Some(*code),
        _ => None,
    })
}

fn body(response: &HttpResponse) -> String {
    String::from_utf8(response.body.to_vec()).unwrap()
}

#[test]
fn websocket_session_connects_and_relays_to_all() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"42["chat message","hi"]"#);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec![r#"42["chat message","hi"]"#]);
    assert_eq!(texts(&out, 2), vec![r#"42["chat message","hi"]"#]);
}

#[test]
fn a_broadcast_is_encoded_once_and_shared() {
    let mut h = Harness::relay(RelayMode::All);
    for conn in 1..=50 {
        h.connect(conn, "/");
    }
    h.outputs();
    h.text(1, r#"42["news",{"n":1}]"#);
    let out = h.outputs();
    let shared = deliveries(&out);
    assert_eq!(shared.len(), 50);
    // Every recipient holds the very same allocation, named in one output.
    assert!(
        shared
            .iter()
            .all(|(_, frames)| Arc::ptr_eq(frames, &shared[0].1))
    );
    assert_eq!(out.len(), 1, "one output for the whole broadcast: {out:?}");
}

#[test]
fn relay_others_skips_the_sender_and_none_reaches_nobody() {
    let mut h = Harness::relay(RelayMode::Others);
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"421["ev",1]"#);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec!["431[]"], "sender only gets its ack");
    assert_eq!(texts(&out, 2), vec![r#"42["ev",1]"#]);

    let mut h = Harness::relay(RelayMode::None);
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"42["ev",1]"#);
    let out = h.outputs();
    assert!(texts(&out, 1).is_empty());
    assert!(texts(&out, 2).is_empty());
}

#[test]
fn a_client_cannot_join_another_sockets_id_and_emits_to_an_id_always_reach_that_socket() {
    let mut h = Harness::relay(RelayMode::All);
    let victim = h.connect(1, "/");
    let thief = h.connect(2, "/");
    h.outputs();
    h.text(2, &format!(r#"421["switchboard:join","{victim}"]"#));
    let refused = texts(&h.outputs(), 2);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].starts_with(r#"431[{"error":"that room name is another socket's id"#),
        "{refused:?}"
    );
    assert!(h.channel.room_members("/", &victim).is_empty());
    // Its own id is a room it is already in; asking is harmless.
    h.text(2, &format!(r#"422["switchboard:join","{thief}"]"#));
    assert_eq!(texts(&h.outputs(), 2).len(), 1);

    // An emit to the victim's id reaches the victim alone.
    assert_eq!(h.emit_to(&[&victim], json!(["private"])), 1);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec![r#"42["private"]"#]);
    assert!(texts(&out, 2).is_empty());
}

#[test]
fn namespaces_are_isolated_and_unknown_ones_refused() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.connect(2, "/admin");
    h.outputs();
    h.text(1, r#"42["ev"]"#);
    let out = h.outputs();
    assert_eq!(texts(&out, 1).len(), 1);
    assert!(texts(&out, 2).is_empty());

    h.text(2, "40/nope,");
    assert_eq!(
        texts(&h.outputs(), 2),
        vec![r#"44/nope,{"message":"Invalid namespace"}"#]
    );
}

#[test]
fn rooms_join_leave_broadcast_and_cleanup_on_disconnect() {
    let mut h = Harness::relay(RelayMode::All);
    let a = h.connect(1, "/");
    let b = h.connect(2, "/");
    let c = h.connect(3, "/");
    h.outputs();
    h.text(1, r#"421["switchboard:join","red"]"#);
    h.text(2, r#"422["switchboard:join","red"]"#);
    h.text(3, r#"423["switchboard:join","blue"]"#);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec![r#"431[{"ok":true,"rooms":["red"]}]"#]);
    assert_eq!(h.channel.room_members("/", "red").len(), 2);

    let reached = h
        .channel
        .emit(
            ServerEmit {
                namespace: "/".into(),
                args: json!(["alert", 1]),
                rooms: vec!["red".into()],
                except: vec![b.clone()],
                ..ServerEmit::default()
            },
            h.now,
        )
        .unwrap()
        .delivered;
    assert_eq!(reached, 1);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec![r#"42["alert",1]"#]);
    assert!(texts(&out, 2).is_empty() && texts(&out, 3).is_empty());

    // Union of rooms, each socket once.
    let reached = h
        .channel
        .emit(
            ServerEmit {
                namespace: "/".into(),
                args: json!(["x"]),
                rooms: vec!["red".into(), "blue".into(), "red".into()],
                ..ServerEmit::default()
            },
            h.now,
        )
        .unwrap()
        .delivered;
    assert_eq!(reached, 3);
    h.outputs();

    h.text(1, r#"424["switchboard:leave","red"]"#);
    assert_eq!(
        texts(&h.outputs(), 1),
        vec![r#"434[{"ok":true,"rooms":[]}]"#]
    );
    assert_eq!(h.channel.room_members("/", "red"), vec![b.clone()]);

    // Disconnecting leaves every room.
    h.channel.handle_ws_closed(2, h.now);
    assert!(h.channel.room_members("/", "red").is_empty());
    assert_eq!(h.channel.socket_count("/"), 2);
    let _ = (a, c);
}

#[test]
fn acks_flow_in_both_directions() {
    let mut h = Harness::new(BehaviourKind::Conformance, RelayMode::All);
    let socket = h.connect(1, "/");
    h.outputs();
    h.text(1, r#"42456["message-with-ack",1,"2",{"3":[false]}]"#);
    assert_eq!(
        texts(&h.outputs(), 1),
        vec![r#"43456[1,"2",{"3":[false]}]"#]
    );

    // Server → client, answered.
    h.channel
        .emit_with_ack(
            "/",
            &socket,
            json!(["question"]),
            Vec::new(),
            77,
            5_000,
            h.now,
        )
        .unwrap();
    assert_eq!(texts(&h.outputs(), 1), vec![r#"420["question"]"#]);
    h.text(1, r#"430["answer"]"#);
    assert_eq!(
        h.outputs(),
        vec![
            Output::AckReceived {
                token: 77,
                socket: socket.clone(),
                args: json!(["answer"]),
                attachments: vec![]
            },
            Output::SessionChanged { conn: 1 }
        ]
    );
    // A second answer with the same id, or an unknown id, is ignored.
    h.text(1, r#"430["again"]"#);
    h.text(1, "43999[]");
    assert!(h.outputs().is_empty());

    // Server → client, unanswered until the timeout.
    h.channel
        .emit_with_ack("/", &socket, json!(["q2"]), Vec::new(), 78, 500, h.now)
        .unwrap();
    h.outputs();
    h.text(1, "3"); // keep the heartbeat happy
    h.advance(250);
    h.text(1, "3");
    h.advance(260);
    assert!(h.outputs().contains(&Output::AckUnanswered {
        token: 78,
        socket: socket.clone(),
        reason: AckFailure::Timeout,
    }));
}

#[test]
fn an_emit_to_a_room_asks_each_socket_for_its_ack_with_one_shared_frame() {
    let mut h = Harness::relay(RelayMode::All);
    let a = h.connect(1, "/");
    let b = h.connect(2, "/");
    let c = h.connect(3, "/");
    for conn in 1..=3 {
        h.text(conn, r#"42["switchboard:join","team"]"#);
    }
    // b has used ack id 0 already: the shared id is one none of them has used.
    h.channel
        .emit_with_ack("/", &b, json!(["warm-up"]), Vec::new(), 1, 60_000, h.now)
        .unwrap();
    h.text(2, r#"430[]"#);
    h.outputs();

    let emitted = h
        .channel
        .emit(
            ServerEmit {
                namespace: "/".into(),
                args: json!(["vote?"]),
                rooms: vec!["team".into()],
                ack: Some(AckRequest {
                    token: 7,
                    timeout_ms: 500,
                }),
                ..ServerEmit::default()
            },
            h.now,
        )
        .unwrap();
    assert_eq!(emitted.delivered, 3);
    let mut awaiting = emitted.awaiting_ack.clone();
    awaiting.sort();
    let mut expected = vec![a.clone(), b.clone(), c.clone()];
    expected.sort();
    assert_eq!(awaiting, expected);
    let out = h.outputs();
    let shared = deliveries(&out);
    assert_eq!(shared.len(), 3);
    assert!(shared.iter().all(|(_, f)| Arc::ptr_eq(f, &shared[0].1)));
    assert_eq!(texts(&out, 1), vec![r#"421["vote?"]"#]);

    let mut collector = crate::api::AckCollector::new(7, 3, emitted.awaiting_ack);
    // a answers, c goes away, b stays silent.
    h.text(1, r#"431["yes"]"#);
    h.channel.handle_ws_closed(3, h.now);
    for output in h.outputs() {
        collector.record(&output);
    }
    assert!(!collector.is_complete());
    h.text(2, "3");
    h.advance(250);
    h.text(2, "3");
    h.advance(250);
    for output in h.outputs() {
        collector.record(&output);
    }
    assert!(collector.is_complete());
    let result = collector.finish();
    let by_socket: std::collections::BTreeMap<_, _> = result
        .acks
        .unwrap()
        .into_iter()
        .map(|answer| (answer.socket.clone(), answer))
        .collect();
    assert_eq!(by_socket[&a].args, Some(json!(["yes"])));
    assert_eq!(by_socket[&b].error.as_deref(), Some("timeout"));
    assert_eq!(by_socket[&c].error.as_deref(), Some("disconnected"));
}

#[test]
fn binary_events_keep_their_attachments() {
    let mut h = Harness::new(BehaviourKind::Conformance, RelayMode::All);
    h.connect(1, "/");
    h.outputs();
    h.text(
        1,
        r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    );
    h.channel
        .handle_ws_binary(1, Bytes::from_static(&[1, 2, 3]), h.now);
    assert!(h.outputs().is_empty(), "waits for the second attachment");
    h.channel
        .handle_ws_binary(1, Bytes::from_static(&[4, 5, 6]), h.now);
    let frames = frames_to(&h.outputs(), 1);
    assert_eq!(
        frames[0].as_text(),
        Some(r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
    );
    assert_eq!(frames[1].bytes().as_ref(), &[1, 2, 3]);
    assert_eq!(frames[2].bytes().as_ref(), &[4, 5, 6]);

    // Binary relayed to others too.
    let mut h = Harness::relay(RelayMode::Others);
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.text(1, r#"451-["file",{"_placeholder":true,"num":0}]"#);
    h.channel
        .handle_ws_binary(1, Bytes::from_static(b"abc"), h.now);
    let frames = frames_to(&h.outputs(), 2);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].bytes().as_ref(), b"abc");
}

#[test]
fn heartbeat_pings_and_times_out() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.outputs();
    h.advance(299);
    assert!(texts(&h.outputs(), 1).is_empty());
    h.advance(1);
    assert_eq!(texts(&h.outputs(), 1), vec!["2"]);
    h.advance(100);
    h.text(1, "3");
    h.advance(299);
    assert!(h.outputs().is_empty());
    h.advance(1);
    assert_eq!(texts(&h.outputs(), 1), vec!["2"]);
    // No pong this time.
    h.advance(200);
    let out = h.outputs();
    assert_eq!(closed(&out, 1), Some(1000));
    assert_eq!(h.channel.session_count(), 0);
}

#[test]
fn heartbeat_deadlines_count_from_when_the_ping_was_due() {
    let mut h = Harness::relay(RelayMode::All);
    let sid = h.open_polling(1);
    h.post(2, &sid, "40");
    h.outputs();
    // The host's timer fires 150 ms late: the ping goes out, but the answer is still due at
    // 300 + 200 ms after the handshake, not 200 ms after the late timer.
    h.now += 450;
    h.channel.handle_timeout(h.now);
    assert_eq!(h.channel.poll_timeout(), Some(1_000 + 500));
    // A GET at exactly that moment finds the session gone, even before the host's timer runs.
    h.now = 1_000 + 500;
    h.get(3, &sid);
    assert_eq!(response_to(&h.outputs(), 3).unwrap().status, 400);
    assert_eq!(h.channel.session_count(), 0);

    // No timer ran at all: an input after both deadlines still sees the session as closed.
    let sid = h.open_polling(4);
    h.now += 500;
    h.get(5, &sid);
    assert_eq!(response_to(&h.outputs(), 5).unwrap().status, 400);

    // Over WebSocket too: a pong that arrives after the deadline does not save the session.
    h.connect(6, "/");
    h.outputs();
    h.now += 500;
    h.text(6, "3");
    assert_eq!(closed(&h.outputs(), 6), Some(1000));
}

#[test]
fn a_client_close_with_no_get_waiting_is_orderly() {
    let mut h = Harness::relay(RelayMode::All);
    let sid = h.open_polling(1);
    h.post(2, &sid, "40");
    h.outputs();
    h.post(3, &sid, "1");
    assert_eq!(response_to(&h.outputs(), 3).unwrap().status, 200);
    // The socket is gone at once; only the answer to the racing GET is kept.
    assert_eq!(h.channel.session_count(), 0);
    assert_eq!(h.channel.socket_count("/"), 0);
    h.get(4, &sid);
    let released = response_to(&h.outputs(), 4).unwrap();
    assert_eq!((released.status, body(&released)), (200, "6".to_string()));
    h.get(5, &sid);
    assert_eq!(response_to(&h.outputs(), 5).unwrap().status, 400);
    assert!(h.channel.is_idle());

    // Kept only for a grace period.
    let sid = h.open_polling(6);
    h.post(7, &sid, "1");
    assert!(!h.channel.is_idle());
    h.advance(ORDERLY_CLOSE_GRACE_MS);
    h.outputs();
    assert!(h.channel.is_idle());
    h.get(8, &sid);
    assert_eq!(response_to(&h.outputs(), 8).unwrap().status, 400);
}

#[test]
fn connect_timeout_closes_silent_sessions() {
    let mut h = Harness::relay(RelayMode::All);
    h.open_ws(1);
    h.advance(300);
    h.text(1, "3");
    h.advance(700);
    assert_eq!(closed(&h.outputs(), 1), Some(1000));
    assert_eq!(h.channel.session_count(), 0);
}

#[test]
fn polling_session_exchanges_packets() {
    let mut h = Harness::new(BehaviourKind::Conformance, RelayMode::All);
    h.channel.handle_polling(
        10,
        Method::Get,
        None,
        Some("http://a.example"),
        ClientInfo::default(),
        Bytes::new(),
        h.now,
    );
    let out = h.outputs();
    let handshake = response_to(&out, 10).unwrap();
    // Let in by "*": any origin, no credentials.
    assert_eq!(handshake.header("access-control-allow-origin"), Some("*"));
    assert_eq!(handshake.header("access-control-allow-credentials"), None);
    let text = body(&handshake);
    let value: Value = serde_json::from_str(&text[1..]).unwrap();
    assert_eq!(value["upgrades"], json!(["websocket"]));
    let sid = value["sid"].as_str().unwrap().to_string();

    // A GET with nothing to send is held.
    h.get(11, &sid);
    assert!(h.outputs().is_empty());
    // The POST answers "ok" and the held GET receives the replies.
    h.post(12, &sid, "40\u{1e}42[\"message\",\"x\"]");
    let out = h.outputs();
    assert_eq!(body(&response_to(&out, 12).unwrap()), "ok");
    // The held GET is answered as soon as there is something to send; the rest waits for the next.
    assert!(body(&response_to(&out, 11).unwrap()).starts_with("40{\"sid\":"));
    h.get(13, &sid);
    let polled = body(&response_to(&h.outputs(), 13).unwrap());
    let records: Vec<&str> = polled.split('\u{1e}').collect();
    assert_eq!(records, [r#"42["auth",{}]"#, r#"42["message-back","x"]"#]);
}

#[test]
fn polling_errors_follow_the_protocol() {
    let mut h = Harness::relay(RelayMode::All);
    h.channel.handle_polling(
        1,
        Method::Post,
        None,
        None,
        ClientInfo::default(),
        Bytes::new(),
        h.now,
    );
    assert_eq!(response_to(&h.outputs(), 1).unwrap().status, 400);
    h.get(2, "unknown");
    let response = response_to(&h.outputs(), 2).unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(
        body(&response),
        r#"{"code":1,"message":"Session ID unknown"}"#
    );

    // Duplicate GET: the second gets 400, the first a close packet, the session ends.
    let sid = h.open_polling(3);
    h.get(4, &sid);
    h.get(5, &sid);
    let out = h.outputs();
    assert_eq!(response_to(&out, 5).unwrap().status, 400);
    assert_eq!(body(&response_to(&out, 4).unwrap()), "1");
    h.get(6, &sid);
    assert_eq!(response_to(&h.outputs(), 6).unwrap().status, 400);

    // Oversize POST: 413 and the session ends.
    let sid = h.open_polling(7);
    h.post(8, &sid, &format!("4{}", "x".repeat(1000)));
    assert_eq!(response_to(&h.outputs(), 8).unwrap().status, 413);
    assert_eq!(h.channel.session_count(), 0);
}

#[test]
fn aborted_poll_and_client_close_end_the_session() {
    let mut h = Harness::relay(RelayMode::All);
    let sid = h.open_polling(1);
    h.get(2, &sid);
    h.channel.handle_http_aborted(2, h.now);
    assert_eq!(h.channel.session_count(), 0);

    let sid = h.open_polling(3);
    h.get(4, &sid);
    h.post(5, &sid, "1");
    let out = h.outputs();
    assert_eq!(body(&response_to(&out, 4).unwrap()), "6");
    assert_eq!(h.channel.session_count(), 0);
}

#[test]
fn upgrade_from_polling_to_websocket() {
    let mut h = Harness::relay(RelayMode::All);
    let sid = h.open_polling(1);
    h.post(2, &sid, "40");
    h.get(3, &sid);
    h.outputs();
    h.get(4, &sid);
    h.channel
        .handle_ws_open(100, Some(&sid), ClientInfo::default(), h.now);
    h.text(100, "2probe");
    let out = h.outputs();
    assert_eq!(texts(&out, 100), vec!["3probe"]);
    assert_eq!(
        body(&response_to(&out, 4).unwrap()),
        "6",
        "held GET ends with a noop"
    );
    // Events during the upgrade wait for the new transport.
    h.emit_to_all(json!(["during"]));
    h.text(100, "5");
    let out = h.outputs();
    assert_eq!(texts(&out, 100), vec![r#"42["during"]"#]);
    assert!(out.contains(&Output::SessionChanged { conn: 100 }));
    // Polling is over for this sid; a second WebSocket is refused.
    h.get(5, &sid);
    assert_eq!(response_to(&h.outputs(), 5).unwrap().status, 400);
    h.channel
        .handle_ws_open(101, Some(&sid), ClientInfo::default(), h.now);
    assert!(closed(&h.outputs(), 101).is_some());
    h.text(100, r#"42["hi"]"#);
    assert_eq!(texts(&h.outputs(), 100), vec![r#"42["hi"]"#]);
}

#[test]
fn a_get_racing_the_upgrade_packet_is_refused_and_one_racing_the_probe_gets_a_noop() {
    let mut h = Harness::relay(RelayMode::All);
    let sid = h.open_polling(1);
    h.post(2, &sid, "40");
    h.get(3, &sid);
    h.outputs();
    h.channel
        .handle_ws_open(100, Some(&sid), ClientInfo::default(), h.now);
    h.text(100, "2probe");
    h.outputs();
    // A GET that reaches the channel after the probe but before the client's "5", which it sent
    // first on the other connection, is held rather than answered...
    h.get(4, &sid);
    assert!(response_to(&h.outputs(), 4).is_none());
    // ...and refused once the upgrade completes: to the client it came after the upgrade.
    h.text(100, "5");
    assert_eq!(response_to(&h.outputs(), 4).unwrap().status, 400);

    // A GET that raced the probe itself gets its noop shortly after, so the client can pause.
    let sid = h.open_polling(10);
    h.post(11, &sid, "40");
    h.get(12, &sid);
    h.outputs();
    h.channel
        .handle_ws_open(200, Some(&sid), ClientInfo::default(), h.now);
    h.text(200, "2probe");
    h.outputs();
    h.get(13, &sid);
    h.advance(UPGRADE_NOOP_DELAY_MS - 1);
    assert!(response_to(&h.outputs(), 13).is_none());
    h.advance(1);
    assert_eq!(body(&response_to(&h.outputs(), 13).unwrap()), "6");
    // Data waiting for it goes out at once, noop or not.
    h.get(14, &sid);
    h.emit_to_all(json!(["now"]));
    assert_eq!(
        body(&response_to(&h.outputs(), 14).unwrap()),
        r#"42["now"]"#
    );
}

#[test]
fn a_second_websocket_for_a_session_is_accepted_then_closed() {
    let mut h = Harness::relay(RelayMode::All);
    assert_eq!(
        h.channel.check_ws_open(Some("nobody")),
        Err(EngineError::UnknownSid)
    );
    let sid = h.open_polling(1);
    // Upgrading or upgraded, a second socket for the session gets a handshake and a close, not an
    // HTTP error (engine.io does the same), and the first goes on.
    assert_eq!(h.channel.check_ws_open(Some(&sid)), Ok(WsAdmission::Accept));
    h.channel
        .handle_ws_open(100, Some(&sid), ClientInfo::default(), h.now);
    assert!(matches!(
        h.channel.check_ws_open(Some(&sid)),
        Ok(WsAdmission::AcceptAndClose { code: 1002, .. })
    ));
    h.channel
        .handle_ws_open(101, Some(&sid), ClientInfo::default(), h.now);
    assert!(closed(&h.outputs(), 101).is_some());
    h.text(100, "2probe");
    assert_eq!(texts(&h.outputs(), 100), vec!["3probe"]);
}

#[test]
fn bad_input_closes_only_the_offender() {
    let cases: &[&str] = &[
        "abc",
        "4abc",
        "42{}",
        r#"42abc["x"]"#,
        r#"42["message","#,
        r#"42["connect"]"#,
        "0",
        "",
    ];
    for case in cases {
        let mut h = Harness::relay(RelayMode::All);
        h.connect(1, "/");
        h.connect(2, "/");
        h.outputs();
        h.text(1, case);
        let out = h.outputs();
        assert!(
            closed(&out, 1).is_some(),
            "{case:?} should close the session"
        );
        // The other client is unaffected.
        h.text(2, r#"42["still","here"]"#);
        assert_eq!(texts(&h.outputs(), 2), vec![r#"42["still","here"]"#]);
    }
    // Unannounced binary, and oversize messages.
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.channel
        .handle_ws_binary(1, Bytes::from_static(b"\xff\x00"), h.now);
    assert!(closed(&h.outputs(), 1).is_some());
    h.text(2, &format!(r#"42["big","{}"]"#, "x".repeat(1000)));
    assert_eq!(closed(&h.outputs(), 2), Some(1009));
}

#[test]
fn engine_echo_returns_every_message() {
    let mut h = Harness::new(BehaviourKind::EngineEcho, RelayMode::None);
    h.open_ws(1);
    h.text(1, "4hello");
    h.channel
        .handle_ws_binary(1, Bytes::from_static(&[1, 2]), h.now);
    let frames = frames_to(&h.outputs(), 1);
    assert_eq!(frames[0].as_text(), Some("4hello"));
    assert_eq!(frames[1], WireFrame::binary(Bytes::from_static(&[1, 2])));
    // No Socket.IO layer, so no connect timeout: answered pings keep it open past it.
    for _ in 0..3 {
        h.advance(300);
        h.text(1, "3");
    }
    h.advance(200);
    assert_eq!(h.channel.session_count(), 1);
}

#[test]
fn server_emits_are_validated() {
    let mut h = Harness::relay(RelayMode::All);
    let emit = |args: Value, namespace: &str| ServerEmit {
        namespace: namespace.into(),
        args,
        ..ServerEmit::default()
    };
    assert_eq!(
        h.channel.emit(emit(json!(["x"]), "/nope"), h.now),
        Err(EmitError::UnknownNamespace("/nope".into()))
    );
    assert_eq!(
        h.channel.emit(emit(json!([]), "/"), h.now),
        Err(EmitError::InvalidEvent)
    );
    assert_eq!(
        h.channel.emit(emit(json!({"a": 1}), "/"), h.now),
        Err(EmitError::InvalidEvent)
    );
    assert_eq!(
        h.channel.emit(emit(json!(["disconnect"]), "/"), h.now),
        Err(EmitError::ReservedEvent("disconnect".into()))
    );
    assert!(matches!(
        h.channel.emit(
            emit(json!(["x", {"_placeholder": true, "num": 0}]), "/"),
            h.now
        ),
        Err(EmitError::Attachments(_))
    ));
    assert_eq!(
        h.channel
            .emit(emit(json!(["x"]), "/"), h.now)
            .map(|emitted| emitted.delivered),
        Ok(0)
    );
}

/// Feeds the same inputs to a channel and to its rebuilt copy and checks they answer alike.
#[test]
fn a_rebuilt_channel_behaves_the_same() {
    let mut original = Harness::relay(RelayMode::All);
    let a = original.connect(1, "/");
    let b = original.connect(2, "/");
    let c = original.connect(3, "/");
    original.connect(3, "/admin");
    original.text(1, r#"42["switchboard:join","red"]"#);
    original.text(2, r#"42["switchboard:join","red"]"#);
    original.text(2, r#"42["switchboard:join","green"]"#);
    original.text(3, r#"42["switchboard:join","blue"]"#);
    original
        .channel
        .emit_with_ack("/", &a, json!(["q"]), Vec::new(), 9, 60_000, original.now)
        .unwrap();
    original.outputs();

    let snapshots: Vec<(ConnId, SessionSnapshot)> = [1, 2, 3]
        .into_iter()
        .map(|conn| {
            let snapshot = original.channel.snapshot(conn).unwrap();
            // What a Durable Object stores: the serialized form.
            let stored = serde_json::to_string(&snapshot).unwrap();
            assert!(stored.len() < 1024, "snapshots stay small: {stored}");
            (conn, serde_json::from_str(&stored).unwrap())
        })
        .collect();
    let mut rebuilt = Harness {
        channel: Channel::restore(
            "test",
            original.channel.policy().clone(),
            Box::new(SequenceRandom::new(99)),
            snapshots,
            original.now,
        ),
        now: original.now,
    };

    for h in [&mut original, &mut rebuilt] {
        assert_eq!(h.channel.session_count(), 3);
        let reached = h
            .channel
            .emit(
                ServerEmit {
                    namespace: "/".into(),
                    args: json!(["red alert"]),
                    rooms: vec!["red".into()],
                    except: vec![b.clone()],
                    ..ServerEmit::default()
                },
                h.now,
            )
            .unwrap()
            .delivered;
        assert_eq!(reached, 1);
        let out = h.outputs();
        assert_eq!(texts(&out, 1), vec![r#"42["red alert"]"#]);
        assert!(texts(&out, 2).is_empty() && texts(&out, 3).is_empty());

        // Namespaces survive: /admin holds only socket 3's second socket.
        let reached = h
            .channel
            .emit(
                ServerEmit {
                    namespace: "/admin".into(),
                    args: json!(["admins"]),
                    ..ServerEmit::default()
                },
                h.now,
            )
            .unwrap()
            .delivered;
        assert_eq!(reached, 1);
        assert_eq!(texts(&h.outputs(), 3), vec![r#"42/admin,["admins"]"#]);

        // The ack in flight is still awaited, and new ack ids do not collide with it.
        h.text(1, r#"430["yes"]"#);
        assert!(h.outputs().contains(&Output::AckReceived {
            token: 9,
            socket: a.clone(),
            args: json!(["yes"]),
            attachments: vec![]
        }));
        h.channel
            .emit_with_ack("/", &a, json!(["q2"]), Vec::new(), 10, 60_000, h.now)
            .unwrap();
        assert_eq!(texts(&h.outputs(), 1), vec![r#"421["q2"]"#]);

        // Relay and rooms keep working, and disconnects clean up.
        h.text(2, r#"42["switchboard:leave","green"]"#);
        h.text(3, r#"42["hello"]"#);
        let out = h.outputs();
        assert_eq!(texts(&out, 1), vec![r#"42["hello"]"#]);
        h.channel.handle_ws_closed(2, h.now);
        assert!(h.channel.room_members("/", "red") == vec![a.clone()]);
        assert_eq!(h.channel.room_members("/", "blue"), vec![c.clone()]);
        // Heartbeats run after the rebuild.
        h.advance(300);
        assert_eq!(texts(&h.outputs(), 1), vec!["2"]);
    }
}

#[test]
fn shutdown_closes_every_transport() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    let sid = h.open_polling(2);
    h.get(3, &sid);
    h.channel.close_all(h.now);
    let out = h.outputs();
    assert_eq!(closed(&out, 1), Some(1001));
    assert_eq!(body(&response_to(&out, 3).unwrap()), "1");
    assert!(h.channel.is_idle());
}

#[test]
fn batched_heartbeats_wake_once_per_interval_for_all_websockets() {
    let mut h = Harness::relay(RelayMode::All);
    h.channel = Channel::new(
        "test",
        policy(BehaviourKind::Relay, RelayMode::All),
        Box::new(SequenceRandom::new(3)),
    )
    .with_batched_heartbeats();
    // Sockets arrive at different times; each gets its first ping one interval after it opened,
    // then joins the rounds.
    for conn in 1..=20 {
        h.connect(conn, "/");
        h.now += 7;
    }
    h.outputs();
    let settled = h.now + 300;
    while let Some(deadline) = h.channel.poll_timeout() {
        if deadline > settled {
            break;
        }
        h.now = deadline;
        h.channel.handle_timeout(h.now);
        h.outputs();
        for conn in 1..=20 {
            h.channel.handle_pong_seen(conn, h.now + 1);
        }
    }
    h.now = settled;
    let mut wakeups = 0;
    let end = h.now + 5 * 300;
    while let Some(deadline) = h.channel.poll_timeout() {
        if deadline > end {
            break;
        }
        h.now = deadline;
        h.channel.handle_timeout(h.now);
        wakeups += 1;
        let out = h.outputs();
        // Every round pings every socket at once; pongs are observed, never sent as messages.
        assert_eq!(texts(&out, 1), vec!["2"]);
        assert_eq!(deliveries(&out).len(), 20);
        for conn in 1..=20 {
            h.channel.handle_pong_seen(conn, h.now + 3);
        }
    }
    assert_eq!(
        wakeups, 5,
        "one wake-up per ping interval, whatever the socket count"
    );
    assert_eq!(h.channel.session_count(), 20);

    // A socket that stops answering is closed at the next round; the others stay.
    h.now += 300;
    h.channel.handle_timeout(h.now);
    h.outputs();
    for conn in 2..=20 {
        h.channel.handle_pong_seen(conn, h.now + 1);
    }
    // A pong timestamp older than the ping does not count.
    h.channel.handle_pong_seen(1, h.now - 1);
    h.now += 300;
    h.channel.handle_timeout(h.now);
    let out = h.outputs();
    assert!(closed(&out, 1).is_some());
    assert_eq!(h.channel.session_count(), 19);
    // A real pong message counts too.
    h.text(2, "3");
    for conn in 3..=20 {
        h.channel.handle_pong_seen(conn, h.now + 1);
    }
    h.now += 300;
    h.channel.handle_timeout(h.now);
    assert_eq!(h.channel.session_count(), 19);
}

#[test]
fn batched_heartbeats_first_ping_a_socket_a_full_interval_after_it_opened() {
    let mut h = Harness::relay(RelayMode::All);
    h.channel = Channel::new(
        "test",
        policy(BehaviourKind::Relay, RelayMode::All),
        Box::new(SequenceRandom::new(3)),
    )
    .with_batched_heartbeats();
    h.connect(1, "/");
    h.advance(290);
    // Opens 10 ms before the round: no ping then, as engine.io's first ping waits an interval.
    h.connect(2, "/");
    h.outputs();
    h.advance(10);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec!["2"]);
    assert!(texts(&out, 2).is_empty());
    h.channel.handle_pong_seen(1, h.now + 1);
    // Its first ping comes on its own timer, exactly one interval after it opened...
    h.advance(289);
    assert!(texts(&h.outputs(), 2).is_empty());
    h.advance(1);
    assert_eq!(texts(&h.outputs(), 2), vec!["2"]);
    h.channel.handle_pong_seen(2, h.now + 1);
    // ...and then it is pinged with everyone at the rounds.
    h.advance(10);
    let out = h.outputs();
    assert_eq!(texts(&out, 1), vec!["2"]);
    assert_eq!(texts(&out, 2), vec!["2"]);
}

#[test]
fn batched_heartbeats_give_each_ping_its_full_answer_time() {
    // A ping timeout longer than the interval (80 ms rounds, 1 s to answer): a pong that is late
    // for one round is not a dead socket; one missing for the whole answer time is.
    let mut policy = (*policy(BehaviourKind::Relay, RelayMode::All)).clone();
    policy.ping_interval_ms = 80;
    policy.ping_timeout_ms = 1_000;
    let mut h = Harness::relay(RelayMode::All);
    h.channel = Channel::new("test", Arc::new(policy), Box::new(SequenceRandom::new(3)))
        .with_batched_heartbeats();
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    h.advance(80);
    let first_ping = h.now;
    h.outputs();
    // Socket 1 misses a few rounds, then answers; it is pinged again meanwhile.
    for _ in 0..5 {
        h.channel.handle_pong_seen(2, h.now + 1);
        h.advance(80);
        assert_eq!(texts(&h.outputs(), 1), vec!["2"]);
    }
    h.channel.handle_pong_seen(1, h.now + 1);
    h.channel.handle_pong_seen(2, h.now + 1);
    h.advance(80);
    assert_eq!(h.channel.session_count(), 2);
    // Socket 2 stops answering: it goes at the first round past its oldest ping's answer time.
    let unanswered = h.now;
    while h.now < unanswered + 1_000 {
        h.channel.handle_pong_seen(1, h.now + 1);
        assert_eq!(
            h.channel.session_count(),
            2,
            "closed at {}",
            h.now - first_ping
        );
        h.advance(80);
    }
    assert_eq!(h.channel.session_count(), 1);
    assert!(closed(&h.outputs(), 2).is_some());
}

#[test]
fn batched_heartbeats_keep_polling_sessions_precise() {
    let mut h = Harness::relay(RelayMode::All);
    h.channel = Channel::new(
        "test",
        policy(BehaviourKind::Relay, RelayMode::All),
        Box::new(SequenceRandom::new(3)),
    )
    .with_batched_heartbeats();
    let sid = h.open_polling(1);
    h.post(2, &sid, "40");
    h.get(3, &sid);
    h.outputs();
    h.get(4, &sid);
    h.advance(300);
    assert_eq!(body(&response_to(&h.outputs(), 4).unwrap()), "2");
    h.advance(200);
    assert_eq!(
        h.channel.session_count(),
        0,
        "ping timeout is exact for polling"
    );
}

fn signed(claims: Value, secret: &str) -> String {
    use hmac::{Hmac, Mac};
    use jwt::SignWithKey;
    let key = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    claims.sign_with_key(&key).unwrap()
}

#[test]
fn private_channels_admit_only_valid_tokens() {
    use crate::config::{AuthMode, ChannelPattern, Secret};
    let mut policy = (*policy(BehaviourKind::Relay, RelayMode::All)).clone();
    policy.auth = AuthMode::Private;
    policy.jwt_secret = Some(Secret::new("k"));
    policy.pattern = Some(ChannelPattern::parse("private/:id").unwrap());
    let mut h = Harness::relay(RelayMode::All);
    h.channel = Channel::new(
        "private/7",
        Arc::new(policy),
        Box::new(SequenceRandom::new(5)),
    );
    let exp = h.now / 1000 + 60;
    h.open_ws(1);
    h.text(1, "40");
    let refused = texts(&h.outputs(), 1);
    assert!(
        refused[0].starts_with("44{\"message\":\"this channel is private"),
        "{refused:?}"
    );
    // The refused socket gets nothing the channel says.
    h.emit_to_all(json!(["secret"]));
    assert!(texts(&h.outputs(), 1).is_empty());

    let token = signed(
        json!({"sub": "u", "exp": exp, "channels": ["private/:id"]}),
        "k",
    );
    h.text(1, &format!(r#"40{{"token":"{token}"}}"#));
    assert!(texts(&h.outputs(), 1)[0].starts_with("40{\"sid\""));
    let wrong = signed(json!({"exp": exp, "channels": ["private/8"]}), "k");
    h.open_ws(2);
    h.text(2, &format!(r#"40{{"token":"{wrong}"}}"#));
    assert!(texts(&h.outputs(), 2)[0].contains("does not grant"));
    // The subject survives a rebuild.
    let snapshot = h.channel.snapshot(1).unwrap();
    assert_eq!(snapshot.sockets[0].user.as_deref(), Some("u"));
}

#[test]
fn rate_limits_refuse_the_excess_and_disconnect_a_flood() {
    let mut h = Harness::relay_with(RelayMode::Others, |policy| {
        policy.events_per_second = 3;
        // The clock jumps below; no heartbeat falls due meanwhile.
        policy.ping_interval_ms = 60_000;
    });
    h.connect(1, "/");
    h.connect(2, "/");
    h.outputs();
    for i in 0..3 {
        h.text(1, &format!(r#"42["spam",{i}]"#));
    }
    assert_eq!(
        texts(&h.outputs(), 2).len(),
        3,
        "a second's burst gets through"
    );
    // Over the rate: an ack request learns why; then the run of refusals is silent.
    h.text(1, r#"429["spam","over"]"#);
    h.text(1, r#"42["spam","over"]"#);
    let out = h.outputs();
    assert!(texts(&out, 2).is_empty());
    assert_eq!(
        texts(&out, 1),
        vec![
            r#"439[{"error":{"code":"RATE_LIMITED","message":"rate limit exceeded: at most 3 events per second"},"status":"error"}]"#
        ]
    );
    // The other socket is not limited by the first one's excess.
    h.text(2, r#"42["fine"]"#);
    assert_eq!(texts(&h.outputs(), 1), vec![r#"42["fine"]"#]);
    // The allowance refills with time, and the run of refusals starts again.
    h.now += 1000;
    h.text(1, r#"42["later"]"#);
    assert_eq!(texts(&h.outputs(), 2), vec![r#"42["later"]"#]);
    // A flood: the burst passes, the first refusal is announced, and a second's worth of
    // refusals later the socket is disconnected; what it sends afterwards goes nowhere.
    for i in 0..10 {
        h.text(1, &format!(r#"42["flood",{i}]"#));
    }
    let out = h.outputs();
    assert_eq!(texts(&out, 2).len(), 2);
    let to_abuser = texts(&out, 1);
    assert_eq!(to_abuser.len(), 3, "{to_abuser:?}");
    assert!(to_abuser[0].starts_with(r#"42["switchboard:error",{"error":{"code":"RATE_LIMITED""#));
    assert!(to_abuser[1].starts_with(r#"42["switchboard:error""#));
    assert_eq!(to_abuser[2], "41");
    h.now += 1000;
    h.text(1, r#"42["after"]"#);
    assert!(texts(&h.outputs(), 2).is_empty());
    assert_eq!(h.channel.socket_count("/"), 1);
}

#[test]
fn max_sockets_refuses_beyond_the_limit() {
    let mut h = Harness::relay_with(RelayMode::All, |policy| policy.max_sockets = Some(2));
    h.connect(1, "/");
    h.connect(2, "/");
    h.open_ws(3);
    h.text(3, "40");
    assert_eq!(
        texts(&h.outputs(), 3),
        vec![r#"44{"message":"channel is full: at most 2 sockets"}"#]
    );
    h.channel.handle_ws_closed(1, h.now);
    h.text(3, "40");
    assert!(texts(&h.outputs(), 3)[0].starts_with("40{"));
}

/// A Durable Object that hibernates between rounds restores at every alarm: the restored channel
/// must ping at once and close the socket that stopped answering.
#[test]
fn batched_heartbeats_survive_a_restore_at_every_round() {
    let batched = || {
        Channel::new(
            "test",
            policy(BehaviourKind::Relay, RelayMode::All),
            Box::new(SequenceRandom::new(3)),
        )
        .with_batched_heartbeats()
    };
    let mut h = Harness::relay(RelayMode::All);
    h.channel = batched();
    h.connect(1, "/");
    h.connect(2, "/");
    h.open_ws(3); // never joins a namespace
    h.outputs();
    let mut pinged_at = None;
    for round in 0..4 {
        // Hibernation: only the snapshots survive; the alarm wakes a fresh object.
        let snapshots = h.channel.snapshots();
        h.now += 300;
        let mut fresh = batched();
        fresh.restore_sessions(snapshots, h.now);
        h.channel = fresh;
        // The runtime answered pongs for socket 1 only.
        if let Some(at) = pinged_at {
            h.channel.handle_pong_seen(1, at + 2);
        }
        h.channel.handle_timeout(h.now);
        let out = h.outputs();
        assert_eq!(
            texts(&out, 1),
            vec!["2"],
            "round {round}: socket 1 is pinged"
        );
        if round >= 1 {
            assert!(
                closed(&out, 2).is_some() || h.channel.snapshot(2).is_none(),
                "round {round}: socket 2 never answered"
            );
        }
        pinged_at = Some(h.now);
    }
    // The never-connected socket hit its connect timeout (1000 ms) despite the restarts.
    assert!(h.channel.snapshot(3).is_none());
    assert_eq!(h.channel.session_count(), 1);
}

#[test]
fn binary_attachments_obey_the_payload_limit_together() {
    let mut h = Harness::relay(RelayMode::All);
    h.connect(1, "/");
    h.outputs();
    let placeholders: Vec<String> = (0..5)
        .map(|n| format!(r#"{{"_placeholder":true,"num":{n}}}"#))
        .collect();
    h.text(1, &format!(r#"455-["big",{}]"#, placeholders.join(",")));
    for _ in 0..3 {
        h.channel
            .handle_ws_binary(1, Bytes::from(vec![0u8; 300]), h.now);
    }
    assert!(
        closed(&h.outputs(), 1).is_none(),
        "900 bytes fit in max_payload 1000"
    );
    h.channel
        .handle_ws_binary(1, Bytes::from(vec![0u8; 300]), h.now);
    assert_eq!(closed(&h.outputs(), 1), Some(1009), "1200 bytes do not");
}
