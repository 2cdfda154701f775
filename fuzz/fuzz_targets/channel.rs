//! The channel engine driven by a host: any sequence of host inputs (WebSocket sessions and their
//! frames, polling requests, time, server and API emits, backend answers, rebuilds from snapshots),
//! on a channel of each kind of the fuzzing configuration (relay, private, backend handlers, the
//! connect hook, webhooks, the conformance server, the Engine.IO echo endpoint).
//!
//! After every input the host drains `poll_output()` and checks the promises hosts rely on:
//!
//! - nothing is addressed to a WebSocket after the host reported it closed, after the channel
//!   closed it, or after a rebuild dropped it; a request is answered at most once, and only if it
//!   is one of this channel's;
//! - `poll_timeout()` is never in the past: after `handle_timeout(now)` it is later than `now`, and
//!   after any other input it is not before `now` (the host here is always caught up);
//! - one input produces a bounded number of outputs;
//! - a session's stored snapshot (taken at each `SessionChanged`, as the Durable Object does) is its
//!   current snapshot, and survives JSON; a channel rebuilt from snapshots holds what they held;
//! - every acknowledgement a server emit asked for is settled exactly once (answered, timed out
//!   or disconnected), and all of them are settled once time has run far enough;
//! - each session is announced once (`SessionOpened`, naming the request or WebSocket of the
//!   handshake that opened it; restored sessions are not announced again) and ends once
//!   (`SessionClosed`), and all have ended after `close_all`.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use switchboard_core::api::{self, AckWaits, EmitProgress, EmitTokens};
use switchboard_core::backend::{BackendAnswer, ClientInfo};
use switchboard_core::channel::{
    Channel, ConnId, Output, ServerEmit, SessionSnapshot, WsAdmission,
};
use switchboard_core::config::ChannelPolicy;
use switchboard_core::engineio::decode_payload;
use switchboard_core::frame::WireFrame;
use switchboard_core::http::{self, Method};
use switchboard_core::socketio;
use switchboard_core::testing::SequenceRandom;
use switchboard_fuzz::{START_MS, config, tokens};

/// The channels a scenario may run on (one per scenario).
const CHANNELS: &[&str] = &[
    "relay/1",
    "others/1",
    "quiet/1",
    "small/1",
    "limited/1",
    "origin/1",
    "private/1",
    "users/u1/notifications",
    "shop/1",
    "express/1",
    "members/t",
    "vip/t",
    "watched/1",
    "",
    http::ENGINE_IO_KEY,
    // Appended, so that the corpus keeps naming the channels it named.
    "recovery/1",
    "private-recovery/1",
    "presence/1",
    "crowd/1",
];
const NAMESPACES: &[&str] = &["/", "/admin", "/custom", "/nope"];
const EVENTS: &[&str] = &[
    "chat message",
    "create product",
    "list products",
    "try product",
    "whoami",
    "send-message",
    "upload",
    "message",
    "ev",
    "switchboard:join",
    "switchboard:leave",
    "switchboard:other",
    "connect",
    "",
    "switchboard:members",
];
const ROOMS: &[&str] = &["r", "a", "vip-room", "moderators"];
const ORIGINS: &[Option<&str>] = &[
    None,
    Some("http://allowed.example"),
    Some("http://evil.example"),
];
/// Backend answers: a handler's (Foal and raw acks, emits, rooms, disconnect), the connect
/// hook's (admit, refuse), a webhook batch's, and broken ones.
const ANSWERS: &[&str] = &[
    "",
    "{}",
    r#"{"data":{"id":1,"name":"chair"}}"#,
    r#"{"error":{"code":"E_STOCK","message":"out of stock"}}"#,
    r#"{"data":1,"emit":[{"event":"refresh products","to":"others"},{"event":"m","data":{"_binary":"AAEC"},"to":"sender"},{"event":"r","rooms":["r"],"to":"rooms"},{"event":"all"}],"join":["r","s"],"leave":"a"}"#,
    r#"{"disconnect":true}"#,
    r#"{"ack":["ok",{"_binary":"AAECAw=="}]}"#,
    r#"{"ack":"not an array"}"#,
    r#"{"allow":true,"user":{"id":"u1","info":{"name":"Ada"}},"rooms":["r","team"],"data":{"team":"t"}}"#,
    r#"{"allow":true,"user":{"id":7}}"#,
    r#"{"allow":false,"message":"not a member","data":{"why":1}}"#,
    r#"{"allow":"maybe"}"#,
    r#"{"emit":[{"event":"connect"}]}"#,
    r#"{"emit":[{"event":"x","to":"rooms"}]}"#,
    "[1,2,3]",
    "not json",
];
const STATUSES: &[u16] = &[200, 200, 200, 204, 201, 400, 500, 503];

#[derive(Arbitrary, Debug)]
struct Scenario {
    channel: u8,
    batched: bool,
    seed: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A WebSocket handshake: a new session, or the probe of a polling session's upgrade.
    WsOpen {
        upgrade_of: Option<u8>,
        headers: bool,
    },
    WsText {
        conn: u8,
        msg: Msg,
    },
    WsBinary {
        conn: u8,
        bytes: Vec<u8>,
    },
    WsClosed {
        conn: u8,
    },
    /// A polling GET, opening a session without a sid.
    Get {
        session: Option<u8>,
        origin: u8,
        headers: bool,
    },
    Post {
        session: u8,
        records: Vec<Record>,
    },
    PostRaw {
        session: u8,
        body: Vec<u8>,
    },
    /// OPTIONS or another method on the polling endpoint.
    OtherMethod {
        session: Option<u8>,
        options: bool,
    },
    /// A body the host refused to read (too large).
    TooLarge {
        session: u8,
    },
    Abort {
        request: u8,
    },
    /// Time passes: a punctual host fires each timer at its deadline, a late one (a Durable
    /// Object's alarm) once at the end.
    Advance {
        ms: u16,
        punctual: bool,
    },
    PongSeen {
        conn: u8,
        ago: u8,
    },
    Emit {
        namespace: u8,
        rooms: Vec<u8>,
        except: Option<u8>,
        ack: Option<u16>,
        binary: u8,
    },
    EmitWithAck {
        namespace: u8,
        socket: u8,
        timeout: u16,
    },
    /// `POST /emit`, through `api::parse_emit` and `api::start_emit`.
    ApiEmit {
        event: u8,
        rooms: Vec<u8>,
        ack: Option<u16>,
        data: Arg,
    },
    /// How a backend call the channel asked for ended (`None`: an id it never asked for).
    Answer {
        call: Option<u8>,
        status: u8,
        body: u8,
        failed: bool,
    },
    AnswerRaw {
        call: u8,
        body: String,
    },
    /// The host restarts and rebuilds the channel from the snapshots it stored at each
    /// `SessionChanged` (`stored`), or from the channel's snapshots of the moment.
    Rebuild {
        stored: bool,
        seed: u8,
    },
    CloseAll,
}

#[derive(Arbitrary, Debug)]
enum Record {
    Msg(Msg),
    Binary(Vec<u8>),
    BadBase64,
}

#[derive(Arbitrary, Debug)]
enum Msg {
    Connect {
        namespace: u8,
        auth: Auth,
    },
    Disconnect {
        namespace: u8,
    },
    Event {
        namespace: u8,
        event: u8,
        ack: Option<u8>,
        arg: Arg,
    },
    /// A binary event announcing `count` attachments (sent as WebSocket binary frames after it,
    /// when `then` is set).
    BinaryEvent {
        namespace: u8,
        event: u8,
        ack: Option<u8>,
        count: u8,
        then: bool,
    },
    Ack {
        namespace: u8,
        id: u8,
        arg: Arg,
        binary: bool,
    },
    Join(u8),
    Leave(u8),
    Ping,
    Pong,
    PingProbe,
    PongProbe,
    Upgrade,
    Close,
    Noop,
    Open,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Token(u8),
    Raw(String),
    NotAnObject,
    /// Connection-state recovery: a private id the channel handed out (see [`LEARNED`]), and an
    /// offset it sent, or none.
    Recover { pid: u8, offset: Option<u8> },
}

thread_local! {
    /// Private ids (CONNECT replies) and offsets (last arguments of events) the channel sent, for
    /// CONNECTs that try to recover: `render` has no host to ask.
    static LEARNED: std::cell::RefCell<(Vec<String>, Vec<String>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

#[derive(Arbitrary, Debug, Clone)]
enum Arg {
    None,
    Int(i32),
    Str(String),
    Product { name: Option<String>, extra: bool },
    Long(u16),
    Json(String),
}

impl Arg {
    fn value(&self) -> Option<Value> {
        match self {
            Arg::None => None,
            Arg::Int(n) => Some(json!(n)),
            Arg::Str(text) => Some(json!(text)),
            Arg::Product { name, extra } => {
                let mut product = serde_json::Map::new();
                if let Some(name) = name {
                    product.insert("name".into(), json!(name));
                }
                if *extra {
                    product.insert("price".into(), json!(12.5));
                }
                Some(Value::Object(product))
            }
            Arg::Long(n) => Some(json!("x".repeat(usize::from(*n) % 4096))),
            Arg::Json(text) => Some(serde_json::from_str(text).unwrap_or_else(|_| json!(text))),
        }
    }
}

/// `SWITCHBOARD_FUZZ_DEBUG=1`: print the scenario, each step and each output.
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| {
        std::env::var_os("SWITCHBOARD_FUZZ_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

fn pick<T>(items: &[T], index: u8) -> &T {
    &items[usize::from(index) % items.len()]
}

/// `""` for the default namespace, else `"/admin,"`.
fn namespace_prefix(namespace: u8) -> String {
    match *pick(NAMESPACES, namespace) {
        "/" => String::new(),
        other => format!("{other},"),
    }
}

/// The Engine.IO text of a message, and the binary frames that follow it.
fn render(msg: &Msg) -> (String, Vec<Bytes>) {
    let ns = |namespace: &u8| namespace_prefix(*namespace);
    let id = |ack: &Option<u8>| ack.map(|id| id.to_string()).unwrap_or_default();
    match msg {
        Msg::Connect { namespace, auth } => {
            let payload = match auth {
                Auth::None => String::new(),
                Auth::Token(index) => json!({ "token": pick(tokens(), *index) }).to_string(),
                Auth::Raw(text) => text.clone(),
                Auth::NotAnObject => "[1]".into(),
                Auth::Recover { pid, offset } => LEARNED.with_borrow(|(pids, offsets)| {
                    let pid = pids.get(usize::from(*pid) % pids.len().max(1)).cloned();
                    let offset = offset.and_then(|index| {
                        offsets.get(usize::from(index) % offsets.len().max(1)).cloned()
                    });
                    json!({ "pid": pid.unwrap_or_else(|| "unknown".into()), "offset": offset })
                        .to_string()
                }),
            };
            (format!("40{}{payload}", ns(namespace)), Vec::new())
        }
        Msg::Disconnect { namespace } => (format!("41{}", ns(namespace)), Vec::new()),
        Msg::Event {
            namespace,
            event,
            ack,
            arg,
        } => {
            let mut args = vec![json!(pick(EVENTS, *event))];
            args.extend(arg.value());
            (
                format!("42{}{}{}", ns(namespace), id(ack), Value::Array(args)),
                Vec::new(),
            )
        }
        Msg::BinaryEvent {
            namespace,
            event,
            ack,
            count,
            then,
        } => {
            let count = usize::from(*count % 3);
            let mut args = vec![json!(pick(EVENTS, *event))];
            args.extend((0..count).map(socketio::placeholder));
            let text = format!(
                "45{count}-{}{}{}",
                ns(namespace),
                id(ack),
                Value::Array(args)
            );
            let attachments = if *then {
                (0..count)
                    .map(|i| Bytes::from(vec![i as u8; i + 1]))
                    .collect()
            } else {
                Vec::new()
            };
            (text, attachments)
        }
        Msg::Ack {
            namespace,
            id,
            arg,
            binary,
        } => {
            if *binary {
                let args = json!([socketio::placeholder(0)]);
                (
                    format!("461-{}{id}{args}", ns(namespace)),
                    vec![Bytes::from_static(b"\x01\x02")],
                )
            } else {
                let args = Value::Array(arg.value().into_iter().collect());
                (format!("43{}{id}{args}", ns(namespace)), Vec::new())
            }
        }
        Msg::Join(room) => (
            format!("42{}", json!(["switchboard:join", pick(ROOMS, *room)])),
            Vec::new(),
        ),
        Msg::Leave(room) => (
            format!("42{}", json!(["switchboard:leave", pick(ROOMS, *room)])),
            Vec::new(),
        ),
        Msg::Ping => ("2".into(), Vec::new()),
        Msg::Pong => ("3".into(), Vec::new()),
        Msg::PingProbe => ("2probe".into(), Vec::new()),
        Msg::PongProbe => ("3probe".into(), Vec::new()),
        Msg::Upgrade => ("5".into(), Vec::new()),
        Msg::Close => ("1".into(), Vec::new()),
        Msg::Noop => ("6".into(), Vec::new()),
        Msg::Open => ("0{}".into(), Vec::new()),
        Msg::Raw(text) => (text.clone(), Vec::new()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// The host holds it open.
    Open,
    /// The channel asked the host to close it; frames may still arrive until the host reports it
    /// closed.
    Closing,
    /// Closed, reported or dropped by a rebuild: nothing may be addressed to it.
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Pending,
    Answered,
    Aborted,
    /// Dropped by a restart of the host: the rebuilt channel never heard of it.
    Dropped,
}

/// Token of the emits this host makes itself (`Step::Emit`), above the API's (`EmitTokens`).
const OWN_TOKENS: u64 = 1 << 40;
const MAX_IDS: usize = 32;
/// Steps run per scenario.
const MAX_STEPS: usize = 256;

struct Host {
    name: &'static str,
    policy: Arc<ChannelPolicy>,
    batched: bool,
    channel: Channel,
    now: u64,
    /// Every WebSocket ever opened, in order.
    conns: Vec<ConnId>,
    conn_state: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    requests: Vec<ConnId>,
    request_state: HashMap<ConnId, Request>,
    next_request: ConnId,
    sids: Vec<String>,
    socket_ids: Vec<String>,
    /// Backend calls the channel asked for that the host has not answered.
    calls: Vec<u64>,
    /// The snapshot stored at the last `SessionChanged` of each WebSocket.
    stored: HashMap<ConnId, Option<SessionSnapshot>>,
    /// (token, socket) of acknowledgements asked by this host's own emits and not settled.
    awaiting: HashSet<(u64, String)>,
    /// Acknowledgements asked before a rebuild: the rebuilt channel may settle each once.
    restored_acks: HashSet<(u64, String)>,
    next_token: u64,
    emit_tokens: EmitTokens,
    ack_waits: AckWaits<()>,
    /// Outputs of the input being handled, for the bound.
    outputs_this_input: usize,
    rebuilds: u64,
    /// Sessions announced by `SessionOpened` (or restored) and not closed yet.
    open_sids: HashSet<String>,
    /// Every sid ever announced.
    announced: HashSet<String>,
    /// The request or WebSocket of the handshake the current input makes, if it makes one.
    handshake: Option<ConnId>,
}

impl Host {
    fn new(name: &'static str, policy: Arc<ChannelPolicy>, batched: bool, seed: u8) -> Host {
        let mut channel = Channel::new(
            name,
            policy.clone(),
            Box::new(SequenceRandom::new(seed.into())),
        );
        if batched {
            channel = channel.with_batched_heartbeats();
        }
        Host {
            name,
            policy,
            batched,
            channel,
            now: START_MS,
            conns: Vec::new(),
            conn_state: HashMap::new(),
            next_conn: 1,
            requests: Vec::new(),
            request_state: HashMap::new(),
            next_request: 1 << 32,
            sids: Vec::new(),
            socket_ids: Vec::new(),
            calls: Vec::new(),
            stored: HashMap::new(),
            awaiting: HashSet::new(),
            restored_acks: HashSet::new(),
            next_token: OWN_TOKENS,
            emit_tokens: EmitTokens::default(),
            ack_waits: AckWaits::default(),
            outputs_this_input: 0,
            rebuilds: 0,
            open_sids: HashSet::new(),
            announced: HashSet::new(),
            handshake: None,
        }
    }

    fn client(headers: bool) -> ClientInfo {
        if headers {
            ClientInfo::from_request(
                [
                    ("Cookie", "session=abc"),
                    ("User-Agent", "fuzz"),
                    ("Origin", "http://allowed.example"),
                    ("X-Other", "dropped"),
                ],
                Some("192.0.2.1".into()),
            )
        } else {
            ClientInfo::default()
        }
    }

    /// A WebSocket the host would still deliver frames from (open, or closing at the channel's
    /// request).
    fn live_conn(&self, index: u8) -> Option<ConnId> {
        if self.conns.is_empty() {
            return None;
        }
        let conn = *pick(&self.conns, index);
        matches!(self.conn_state[&conn], Conn::Open | Conn::Closing).then_some(conn)
    }

    fn sid(&self, index: u8) -> Option<String> {
        if self.sids.is_empty() {
            return None;
        }
        // One in eight names no session of ours.
        if index % 8 == 7 {
            return Some("AAAAAAAAAAAAAAAAAAAA".into());
        }
        Some(pick(&self.sids, index).clone())
    }

    fn room(&self, index: u8) -> String {
        let rooms = ROOMS.len() + self.socket_ids.len();
        let index = usize::from(index) % rooms;
        match ROOMS.get(index) {
            Some(room) => (*room).to_string(),
            None => self.socket_ids[index - ROOMS.len()].clone(),
        }
    }

    fn new_request(&mut self) -> ConnId {
        self.next_request += 1;
        self.requests.push(self.next_request);
        self.request_state
            .insert(self.next_request, Request::Pending);
        self.next_request
    }

    fn live_sessions(&self) -> usize {
        self.conn_state
            .values()
            .filter(|state| **state != Conn::Gone)
            .count()
            + self
                .request_state
                .values()
                .filter(|state| **state == Request::Pending)
                .count()
    }

    // ---------------------------------------------------------------------------------------------
    // Steps

    fn step(&mut self, step: &Step) {
        if debug() {
            eprintln!("{} {step:?}", self.now - START_MS);
        }
        self.outputs_this_input = 0;
        self.handshake = None;
        let records = match step {
            Step::Post { records, .. } => records.len(),
            Step::PostRaw { body, .. } => body.iter().filter(|b| **b == 0x1e).count() + 1,
            _ => 1,
        };
        // Generous: a record may reach every session, each with a few outputs (frames, a
        // snapshot change, an ack settled, a backend call, a webhook).
        let budget = 64 + 16 * (records + 1) * (self.live_sessions() + self.socket_ids.len() + 1);
        match step {
            Step::WsOpen {
                upgrade_of,
                headers,
            } => {
                let sid = upgrade_of.and_then(|index| self.sid(index));
                match self.channel.check_ws_open(sid.as_deref()) {
                    // Refused with an HTTP error, or completed and closed by the host itself.
                    Err(_) | Ok(WsAdmission::AcceptAndClose { .. }) => {}
                    Ok(WsAdmission::Accept) => {
                        let conn = self.next_conn;
                        self.next_conn += 1;
                        self.conns.push(conn);
                        self.conn_state.insert(conn, Conn::Open);
                        self.handshake = Some(conn);
                        self.channel.handle_ws_open(
                            conn,
                            sid.as_deref(),
                            Self::client(*headers),
                            self.now,
                        );
                    }
                }
                self.after_input("ws open", budget);
            }
            Step::WsText { conn, msg } => {
                let Some(conn) = self.live_conn(*conn) else {
                    return;
                };
                let (text, attachments) = render(msg);
                self.channel.handle_ws_text(conn, &text, self.now);
                self.after_input("ws text", budget);
                for attachment in attachments {
                    if self.conn_state[&conn] == Conn::Gone {
                        break;
                    }
                    self.outputs_this_input = 0;
                    self.channel.handle_ws_binary(conn, attachment, self.now);
                    self.after_input("ws binary attachment", budget);
                }
            }
            Step::WsBinary { conn, bytes } => {
                let Some(conn) = self.live_conn(*conn) else {
                    return;
                };
                self.channel
                    .handle_ws_binary(conn, Bytes::copy_from_slice(bytes), self.now);
                self.after_input("ws binary", budget);
            }
            Step::WsClosed { conn } => {
                let Some(conn) = self.live_conn(*conn) else {
                    return;
                };
                self.conn_state.insert(conn, Conn::Gone);
                self.channel.handle_ws_closed(conn, self.now);
                self.after_input("ws closed", budget);
            }
            Step::Get {
                session,
                origin,
                headers,
            } => {
                let sid = session.and_then(|index| self.sid(index));
                let request = self.new_request();
                self.handshake = Some(request);
                self.channel.handle_polling(
                    request,
                    Method::Get,
                    sid.as_deref(),
                    *pick(ORIGINS, *origin),
                    Self::client(*headers),
                    Bytes::new(),
                    self.now,
                );
                self.after_input("polling get", budget);
            }
            Step::Post { session, records } => {
                let mut body = Vec::new();
                for (index, record) in records.iter().enumerate() {
                    if index > 0 {
                        body.push(0x1e);
                    }
                    match record {
                        Record::Msg(msg) => body.extend_from_slice(render(msg).0.as_bytes()),
                        Record::Binary(bytes) => {
                            body.push(b'b');
                            body.extend_from_slice(STANDARD.encode(bytes).as_bytes());
                        }
                        Record::BadBase64 => body.extend_from_slice(b"b!!"),
                    }
                }
                self.post(*session, body, budget);
            }
            Step::PostRaw { session, body } => self.post(*session, body.clone(), budget),
            Step::OtherMethod { session, options } => {
                let sid = session.and_then(|index| self.sid(index));
                let request = self.new_request();
                let method = if *options {
                    Method::Options
                } else {
                    Method::Other
                };
                self.channel.handle_polling(
                    request,
                    method,
                    sid.as_deref(),
                    Some("http://allowed.example"),
                    ClientInfo::default(),
                    Bytes::new(),
                    self.now,
                );
                self.after_input("polling other method", budget);
            }
            Step::TooLarge { session } => {
                let sid = self.sid(*session);
                let request = self.new_request();
                self.channel
                    .handle_polling_too_large(request, sid.as_deref(), None, self.now);
                self.after_input("polling too large", budget);
            }
            Step::Abort { request } => {
                let pending: Vec<ConnId> = self
                    .requests
                    .iter()
                    .copied()
                    .filter(|r| self.request_state[r] == Request::Pending)
                    .collect();
                if pending.is_empty() {
                    return;
                }
                let request = *pick(&pending, *request);
                self.request_state.insert(request, Request::Aborted);
                self.channel.handle_http_aborted(request, self.now);
                self.after_input("http aborted", budget);
            }
            Step::Advance { ms, punctual } => self.advance(u64::from(*ms), *punctual),
            Step::PongSeen { conn, ago } => {
                let Some(conn) = self.live_conn(*conn) else {
                    return;
                };
                self.channel
                    .handle_pong_seen(conn, self.now.saturating_sub(u64::from(*ago)));
                self.after_input("pong seen", budget);
            }
            Step::Emit {
                namespace,
                rooms,
                except,
                ack,
                binary,
            } => {
                let binary = usize::from(*binary % 3);
                let mut args = vec![json!("server"), json!({ "n": 1 })];
                args.extend((0..binary).map(socketio::placeholder));
                let token = self.next_token;
                self.next_token += 1;
                let emit = ServerEmit {
                    namespace: pick(NAMESPACES, *namespace).to_string(),
                    args: Value::Array(args),
                    attachments: (0..binary).map(|i| Bytes::from(vec![7; i])).collect(),
                    rooms: rooms.iter().take(4).map(|room| self.room(*room)).collect(),
                    except: except.iter().map(|room| self.room(*room)).collect(),
                    ack: ack.map(|timeout| switchboard_core::channel::AckRequest {
                        token,
                        timeout_ms: u64::from(timeout % 5000) + 1,
                    }),
                };
                if let Ok(emitted) = self.channel.emit(emit, self.now) {
                    assert!(ack.is_some() || emitted.awaiting_ack.is_empty());
                    for socket in emitted.awaiting_ack {
                        assert!(self.awaiting.insert((token, socket)), "socket asked twice");
                    }
                }
                self.after_input("server emit", budget);
            }
            Step::EmitWithAck {
                namespace,
                socket,
                timeout,
            } => {
                if self.socket_ids.is_empty() {
                    return;
                }
                let socket = pick(&self.socket_ids, *socket).clone();
                let token = self.next_token;
                self.next_token += 1;
                let result = self.channel.emit_with_ack(
                    pick::<&str>(NAMESPACES, *namespace),
                    &socket,
                    json!(["question?", 1]),
                    Vec::new(),
                    token,
                    u64::from(*timeout % 5000) + 1,
                    self.now,
                );
                if result.is_ok() {
                    self.awaiting.insert((token, socket));
                }
                self.after_input("emit with ack", budget);
            }
            Step::ApiEmit {
                event,
                rooms,
                ack,
                data,
            } => {
                let mut body = serde_json::Map::new();
                body.insert("channel".into(), json!(api::display_channel(self.name)));
                body.insert("event".into(), json!(pick(EVENTS, *event)));
                if let Some(data) = data.value() {
                    body.insert("data".into(), data);
                }
                let rooms: Vec<String> =
                    rooms.iter().take(4).map(|room| self.room(*room)).collect();
                if !rooms.is_empty() {
                    body.insert("rooms".into(), json!(rooms));
                }
                if let Some(timeout) = ack {
                    body.insert("ack_timeout".into(), json!(timeout % 5000));
                }
                let body = Value::Object(body).to_string();
                let Ok(emits) = api::parse_emit(body.as_bytes(), config()) else {
                    return;
                };
                for emit in emits {
                    assert_eq!(emit.channel, self.name, "the emit went to another channel");
                    match api::start_emit(&mut self.channel, &mut self.emit_tokens, &emit, self.now)
                    {
                        EmitProgress::Done(Ok(_)) => {}
                        EmitProgress::Done(Err(error)) => {
                            panic!("the channel refused an emit parse_emit accepted: {error:?}")
                        }
                        EmitProgress::AwaitingAcks(collector) => self.ack_waits.push(collector, ()),
                    }
                }
                self.after_input("api emit", budget);
            }
            Step::Answer {
                call,
                status,
                body,
                failed,
            } => {
                let id = match call {
                    None => 0xdead_beef,
                    Some(index) if !self.calls.is_empty() => {
                        let index = usize::from(*index) % self.calls.len();
                        self.calls.swap_remove(index)
                    }
                    Some(_) => return,
                };
                let answer = if *failed {
                    BackendAnswer::Failed("connection refused".into())
                } else {
                    BackendAnswer::Response {
                        status: *pick(STATUSES, *status),
                        body: Bytes::from_static(pick(ANSWERS, *body).as_bytes()),
                    }
                };
                self.channel.handle_backend_answer(id, answer, self.now);
                self.after_input("backend answer", budget);
            }
            Step::AnswerRaw { call, body } => {
                if self.calls.is_empty() {
                    return;
                }
                let index = usize::from(*call) % self.calls.len();
                let id = self.calls.swap_remove(index);
                let answer = BackendAnswer::Response {
                    status: 200,
                    body: Bytes::copy_from_slice(body.as_bytes()),
                };
                self.channel.handle_backend_answer(id, answer, self.now);
                self.after_input("backend answer (raw)", budget);
            }
            Step::Rebuild { stored, seed } => self.rebuild(*stored, *seed),
            Step::CloseAll => {
                self.channel.close_all(self.now);
                self.after_input("close all", budget);
            }
        }
    }

    fn post(&mut self, session: u8, body: Vec<u8>, budget: usize) {
        let Some(sid) = self.sid(session) else { return };
        let request = self.new_request();
        self.channel.handle_polling(
            request,
            Method::Post,
            Some(&sid),
            None,
            ClientInfo::default(),
            Bytes::from(body),
            self.now,
        );
        self.after_input("polling post", budget);
    }

    fn advance(&mut self, ms: u64, punctual: bool) {
        let target = self.now + ms;
        if punctual {
            let mut rounds = 0;
            while let Some(deadline) = self.channel.poll_timeout() {
                if deadline > target {
                    break;
                }
                rounds += 1;
                assert!(
                    rounds < 100_000,
                    "timers never stop coming due before {target}"
                );
                self.now = self.now.max(deadline);
                self.timeout();
            }
            self.now = target;
        } else {
            self.now = target;
            self.timeout();
        }
    }

    fn timeout(&mut self) {
        self.outputs_this_input = 0;
        let budget = 64 + 16 * (self.live_sessions() + self.socket_ids.len() + 1);
        self.channel.handle_timeout(self.now);
        self.after_input("timeout", budget);
        if let Some(next) = self.channel.poll_timeout() {
            assert!(
                next > self.now,
                "after handle_timeout({}) poll_timeout is {next}, not in the future ({} ms behind)",
                self.now,
                self.now - next
            );
        }
    }

    fn rebuild(&mut self, from_stored: bool, seed: u8) {
        // The host restarts: its held requests and in-flight acknowledgement waits are gone.
        for state in self.request_state.values_mut() {
            if *state == Request::Pending {
                *state = Request::Dropped;
            }
        }
        self.ack_waits = AckWaits::default();
        self.emit_tokens = EmitTokens::default();
        self.restored_acks.extend(self.awaiting.drain());
        let snapshots: Vec<(ConnId, SessionSnapshot)> = if from_stored {
            self.conns
                .iter()
                .filter(|conn| self.conn_state[conn] == Conn::Open)
                .filter_map(|conn| Some((*conn, self.stored.get(conn)?.clone()?)))
                .collect()
        } else {
            self.channel.snapshots()
        };
        // What the snapshots hold is what the rebuilt channel must hold.
        let mut sockets: HashMap<String, usize> = HashMap::new();
        let mut rooms: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (conn, snapshot) in &snapshots {
            assert_eq!(
                self.conn_state[conn],
                Conn::Open,
                "a snapshot of a closed conn {conn}"
            );
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
        // Sockets without a session (probes, closing ones, polling upgrades) are closed by the
        // host: orphans.
        let survivors: HashSet<ConnId> = snapshots.iter().map(|(conn, _)| *conn).collect();
        // The host forgets the sessions it did not restore; the restored ones stay counted.
        self.open_sids = snapshots
            .iter()
            .map(|(_, snapshot)| snapshot.sid.clone())
            .collect();
        self.handshake = None;
        for (conn, state) in self.conn_state.iter_mut() {
            if !survivors.contains(conn) {
                *state = Conn::Gone;
            }
        }
        // Real hosts draw real randomness: each incarnation of the channel its own sequence.
        self.rebuilds += 1;
        let random = Box::new(SequenceRandom::new((self.rebuilds << 8) + u64::from(seed)));
        let mut rebuilt = if self.batched {
            // As the Durable Object does it.
            let mut channel =
                Channel::new(self.name, self.policy.clone(), random).with_batched_heartbeats();
            channel.restore_sessions(snapshots.clone(), self.now);
            channel
        } else {
            Channel::restore(
                self.name,
                self.policy.clone(),
                random,
                snapshots.clone(),
                self.now,
            )
        };
        // Recovery state is kept where the host keeps it (here: memory), not in the snapshots.
        let history = self.channel.history(None, usize::MAX).ok();
        rebuilt.adopt_recovery_state(&mut self.channel);
        self.channel = rebuilt;
        assert_eq!(
            self.channel.history(None, usize::MAX).ok(),
            history,
            "the history survives a rebuild"
        );
        if self.name != http::ENGINE_IO_KEY {
            for namespace in NAMESPACES {
                assert_eq!(
                    self.channel.socket_count(namespace),
                    sockets.get(*namespace).copied().unwrap_or(0),
                    "sockets of {namespace} after a rebuild"
                );
            }
            for ((namespace, room), mut members) in rooms {
                members.sort();
                let mut found = self.channel.room_members(&namespace, &room);
                found.sort();
                assert_eq!(
                    found, members,
                    "members of {room} in {namespace} after a rebuild"
                );
            }
        }
        assert_eq!(self.channel.snapshots().len(), survivors.len());
        self.outputs_this_input = 0;
        let budget = 64 + 16 * (self.live_sessions() + self.socket_ids.len() + 1);
        self.after_input("rebuild", budget);
    }

    // ---------------------------------------------------------------------------------------------
    // Outputs and promises

    fn after_input(&mut self, what: &str, budget: usize) {
        self.drain(what, budget);
        if let Some(next) = self.channel.poll_timeout() {
            assert!(
                next >= self.now,
                "after {what} at {} poll_timeout is {next}, in the past ({} ms behind)",
                self.now,
                self.now - next
            );
        }
        // Every session's stored snapshot is its snapshot now: SessionChanged said when it changed.
        for conn in self.conns.clone() {
            if self.conn_state[&conn] != Conn::Open {
                continue;
            }
            let Some(current) = self.channel.snapshot(conn) else {
                continue;
            };
            let stored = self.stored.get(&conn).cloned().flatten();
            if stored.as_ref() == Some(&current) {
                continue;
            }
            assert_eq!(
                stored.as_ref(),
                Some(&current),
                "the snapshot of conn {conn} changed without SessionChanged (after {what})"
            );
        }
    }

    fn drain(&mut self, what: &str, budget: usize) {
        while let Some(output) = self.channel.poll_output() {
            self.outputs_this_input += 1;
            assert!(
                self.outputs_this_input <= budget,
                "more than {budget} outputs for one input ({what})"
            );
            self.check_output(output);
        }
    }

    fn addressed(&self, conn: ConnId, output: &str) {
        match self.conn_state.get(&conn) {
            Some(Conn::Open) => {}
            Some(state) => panic!("{output} addressed to conn {conn}, which is {state:?}"),
            None => panic!("{output} addressed to conn {conn}, which the host never opened"),
        }
    }

    fn check_output(&mut self, output: Output) {
        if debug() {
            eprintln!("  {} {output:?}", self.now - START_MS);
        }
        match output {
            Output::Transmit { conn, frames } => {
                self.addressed(conn, "Transmit");
                assert!(!frames.is_empty(), "an empty Transmit");
                self.learn(&frames);
            }
            Output::Broadcast { conns, frames } => {
                assert!(
                    conns.len() > 1,
                    "a broadcast names several conns: {conns:?}"
                );
                let distinct: HashSet<_> = conns.iter().collect();
                assert_eq!(distinct.len(), conns.len(), "a conn named twice: {conns:?}");
                for conn in &conns {
                    self.addressed(*conn, "Broadcast");
                }
                assert!(!frames.is_empty(), "an empty Broadcast");
                self.learn(&frames);
            }
            Output::CloseWebSocket { conn, .. } => {
                self.addressed(conn, "CloseWebSocket");
                self.conn_state.insert(conn, Conn::Closing);
                self.stored.insert(conn, None);
            }
            Output::Respond { request, response } => {
                match self.request_state.get(&request) {
                    Some(Request::Pending) => {}
                    Some(state) => panic!("Respond to request {request}, which is {state:?}"),
                    None => panic!("Respond to request {request}, never made"),
                }
                self.request_state.insert(request, Request::Answered);
                assert!((100..600).contains(&response.status));
                if response.status == 200
                    && let Ok(packets) = decode_payload(&response.body)
                {
                    let frames: Vec<WireFrame> = packets.iter().map(|p| p.to_frame()).collect();
                    self.learn(&frames);
                }
            }
            Output::SessionChanged { conn } => {
                self.addressed(conn, "SessionChanged");
                let snapshot = self.channel.snapshot(conn);
                if let Some(snapshot) = &snapshot {
                    // Stored as JSON text, as the Durable Object stores attachments.
                    let text = serde_json::to_string(snapshot).expect("a snapshot serializes");
                    let back: SessionSnapshot =
                        serde_json::from_str(&text).expect("a stored snapshot reads back");
                    assert_eq!(&back, snapshot, "a snapshot changes through JSON: {text}");
                }
                self.stored.insert(conn, snapshot);
            }
            ref answer @ (Output::AckReceived {
                token, ref socket, ..
            }
            | Output::AckUnanswered {
                token, ref socket, ..
            }) => {
                if token >= OWN_TOKENS {
                    let key = (token, socket.clone());
                    assert!(
                        self.awaiting.remove(&key) || self.restored_acks.remove(&key),
                        "acknowledgement settled twice, or never asked: {answer:?}"
                    );
                } else if let Some((result, ())) = self.ack_waits.record(answer) {
                    assert!(result.acks.is_some());
                }
            }
            Output::BackendCall(call) => {
                assert!(
                    call.timeout_ms > 0 && call.host_timeout_ms() > call.timeout_ms,
                    "{call:?}"
                );
                assert!(
                    call.url.starts_with("http://backend.test/switchboard/"),
                    "{}",
                    call.url
                );
                assert!(!self.calls.contains(&call.id), "call id {} reused", call.id);
                self.calls.push(call.id);
            }
            Output::SessionOpened { sid, conn } => {
                assert_eq!(
                    self.handshake.take(),
                    Some(conn),
                    "SessionOpened {sid:?} names {conn}, not the handshake of this input"
                );
                assert!(!sid.is_empty());
                assert!(
                    self.announced.insert(sid.clone()),
                    "session {sid:?} announced twice"
                );
                self.open_sids.insert(sid);
            }
            Output::SessionClosed { sid } => {
                assert!(
                    self.open_sids.remove(&sid),
                    "SessionClosed {sid:?}: not open (closed twice, never announced, or forgotten at a rebuild)"
                );
            }
            Output::Warning { .. } => {}
            // Outputs core gains later (none promised anything checked here yet).
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Reads session ids (handshakes) and socket ids (CONNECT answers) out of what was sent.
    fn learn(&mut self, frames: &[WireFrame]) {
        for text in switchboard_fuzz::texts(frames) {
            learn_recovery(text);
            let id = if let Some(json) = text.strip_prefix('0') {
                serde_json::from_str::<Value>(json).ok().and_then(|v| {
                    v.get("sid")
                        .and_then(Value::as_str)
                        .map(|sid| (true, sid.to_string()))
                })
            } else if let Some(rest) = text.strip_prefix("40") {
                rest.find('{')
                    .and_then(|start| serde_json::from_str::<Value>(&rest[start..]).ok())
                    .and_then(|v| {
                        v.get("sid")
                            .and_then(Value::as_str)
                            .map(|sid| (false, sid.to_string()))
                    })
            } else {
                None
            };
            match id {
                Some((true, sid)) if self.sids.len() < MAX_IDS && !self.sids.contains(&sid) => {
                    self.sids.push(sid)
                }
                Some((false, socket))
                    if self.socket_ids.len() < MAX_IDS && !self.socket_ids.contains(&socket) =>
                {
                    self.socket_ids.push(socket)
                }
                _ => {}
            }
        }
    }

    /// Time runs far past every deadline: every acknowledgement asked since the last rebuild is
    /// settled by then.
    fn finish(&mut self) {
        for _ in 0..4 {
            self.advance(30_000, true);
        }
        assert!(
            self.awaiting.is_empty(),
            "acknowledgements never settled: {:?}",
            self.awaiting
        );
        self.outputs_this_input = 0;
        let budget = 64 + 16 * (self.live_sessions() + self.socket_ids.len() + 1);
        self.channel.close_all(self.now);
        self.after_input("close all (end)", budget);
        assert!(
            self.open_sids.is_empty(),
            "sessions never closed (no SessionClosed after close_all): {:?}",
            self.open_sids
        );
    }
}

// -------------------------------------------------------------------------------------------------
// Scripts: a readable form of a scenario, for the seed corpus and for writing down a bug. An input
// starting with `#script` is read line by line (see fuzz/README.md); anything else is decoded with
// `arbitrary`.

const SCRIPT_HEADER: &[u8] = b"#script\n";

fn number<T: std::str::FromStr + Default>(word: Option<&str>) -> T {
    word.and_then(|word| word.parse().ok()).unwrap_or_default()
}

fn unescape(text: &str) -> Vec<u8> {
    text.replace("\\x1e", "\x1e").into_bytes()
}

fn parse_script(text: &str) -> Scenario {
    let mut scenario = Scenario {
        channel: 0,
        batched: false,
        seed: 0,
        steps: Vec::new(),
    };
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut words = rest.split_whitespace();
        // The text after the first `n` words, verbatim.
        let tail = |n: usize| rest.splitn(n + 1, ' ').nth(n).unwrap_or("").to_string();
        let step = match command {
            "channel" => {
                let name = rest.trim();
                let name = if name == "/" { "" } else { name };
                scenario.channel = CHANNELS.iter().position(|c| *c == name).unwrap_or(0) as u8;
                continue;
            }
            "batched" => {
                scenario.batched = true;
                continue;
            }
            "seed" => {
                scenario.seed = number(words.next());
                continue;
            }
            "open" => Step::WsOpen {
                upgrade_of: None,
                headers: true,
            },
            "upgrade" => Step::WsOpen {
                upgrade_of: Some(number(words.next())),
                headers: false,
            },
            "text" => Step::WsText {
                conn: number(words.next()),
                msg: Msg::Raw(tail(1)),
            },
            "token" => Step::WsText {
                conn: number(words.next()),
                msg: Msg::Connect {
                    namespace: number(words.next()),
                    auth: Auth::Token(number(words.next())),
                },
            },
            "binary" => Step::WsBinary {
                conn: number(words.next()),
                bytes: unescape(&tail(1)),
            },
            "close" => Step::WsClosed {
                conn: number(words.next()),
            },
            "get" => Step::Get {
                session: words.next().map(|w| w.parse().unwrap_or_default()),
                origin: 0,
                headers: true,
            },
            "post" => Step::PostRaw {
                session: number(words.next()),
                body: unescape(&tail(1)),
            },
            "options" => Step::OtherMethod {
                session: words.next().map(|w| w.parse().unwrap_or_default()),
                options: true,
            },
            "too-large" => Step::TooLarge {
                session: number(words.next()),
            },
            "abort" => Step::Abort {
                request: number(words.next()),
            },
            "advance" => Step::Advance {
                ms: number(words.next()),
                punctual: words.next() != Some("late"),
            },
            "pong-seen" => Step::PongSeen {
                conn: number(words.next()),
                ago: number(words.next()),
            },
            "emit" => {
                let namespace = number(words.next());
                let ack = words.next().and_then(|w| w.parse().ok());
                Step::Emit {
                    namespace,
                    rooms: words.map(|w| w.parse().unwrap_or_default()).collect(),
                    except: None,
                    ack,
                    binary: 0,
                }
            }
            "emit-ack" => Step::EmitWithAck {
                namespace: number(words.next()),
                socket: number(words.next()),
                timeout: number(words.next()),
            },
            "api-emit" => {
                let event = number(words.next());
                let ack = words.next().and_then(|w| w.parse().ok());
                Step::ApiEmit {
                    event,
                    rooms: words.map(|w| w.parse().unwrap_or_default()).collect(),
                    ack,
                    data: Arg::Int(1),
                }
            }
            "answer" => Step::Answer {
                call: Some(number(words.next())),
                status: number(words.next()),
                body: number(words.next()),
                failed: false,
            },
            "answer-raw" => Step::AnswerRaw {
                call: number(words.next()),
                body: tail(1),
            },
            "fail" => Step::Answer {
                call: Some(number(words.next())),
                status: 0,
                body: 0,
                failed: true,
            },
            "rebuild" => Step::Rebuild {
                stored: words.next() == Some("stored"),
                seed: 0,
            },
            "close-all" => Step::CloseAll,
            _ => continue,
        };
        scenario.steps.push(step);
    }
    scenario
}

fn scenario_of(data: &[u8]) -> Option<Scenario> {
    match data.strip_prefix(SCRIPT_HEADER) {
        Some(script) => Some(parse_script(std::str::from_utf8(script).ok()?)),
        None => Scenario::arbitrary_take_rest(arbitrary::Unstructured::new(data)).ok(),
    }
}

/// Keeps the private ids and offsets `text` (a frame the channel sent) carries.
fn learn_recovery(text: &str) {
    let Some(rest) = text.strip_prefix('4') else {
        return;
    };
    let Some(start) = rest.find(['{', '[']) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<Value>(&rest[start..]) else {
        return;
    };
    LEARNED.with_borrow_mut(|(pids, offsets)| {
        if let Some(pid) = value.get("pid").and_then(Value::as_str)
            && pids.len() < MAX_IDS
        {
            pids.push(pid.to_string());
        }
        if let Some(offset) = value.as_array().and_then(|items| items.last()).and_then(Value::as_str)
            && offset.contains('.')
            && offsets.len() < MAX_IDS
        {
            offsets.push(offset.to_string());
        }
    });
}

fuzz_target!(|data: &[u8]| {
    LEARNED.with_borrow_mut(|(pids, offsets)| {
        pids.clear();
        offsets.clear();
    });
    let Some(scenario) = scenario_of(data) else {
        return;
    };
    let name = *pick(CHANNELS, scenario.channel);
    if debug() {
        eprintln!(
            "channel {name:?}, batched {}, seed {}",
            scenario.batched, scenario.seed
        );
    }
    let config = config();
    let policy = if name == http::ENGINE_IO_KEY {
        config
            .engine_echo()
            .expect("the echo endpoint is enabled")
            .clone()
    } else {
        config
            .policy_for(name)
            .expect("a configured channel")
            .clone()
    };
    let mut host = Host::new(name, policy, scenario.batched, scenario.seed);
    for step in scenario.steps.iter().take(MAX_STEPS) {
        host.step(step);
    }
    host.finish();
});
