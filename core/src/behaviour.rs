//! What a channel does with its clients' events.
//!
//! The engine ([`crate::channel::Channel`]) owns sessions, namespaces, rooms and delivery. A
//! [`Behaviour`] only decides: it looks at one socket and one event and answers with [`Action`]s
//! (ack the sender, broadcast, join a room, …) that the engine carries out. Behaviours hold no state of
//! their own, so a channel rebuilt after hibernation behaves exactly as before.
//!
//! Two behaviours ship:
//! - [`RelayBehaviour`], the product, driven by [`ChannelPolicy`]: client events are relayed to the
//!   namespace (all, others, or none) and clients may manage their rooms with reserved events;
//! - [`ConformanceBehaviour`], the test servers documented with the Socket.IO v5 and Engine.IO v4
//!   protocol test suites.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::{BehaviourKind, ChannelPolicy, RelayMode};

/// Reserved event a client emits to join a room: `socket.emit("switchboard:join", "room", ack)`.
pub const JOIN_EVENT: &str = "switchboard:join";
/// Reserved event a client emits to leave a room: `socket.emit("switchboard:leave", "room", ack)`.
pub const LEAVE_EVENT: &str = "switchboard:leave";
/// Prefix of every reserved event; such events are never relayed.
pub const RESERVED_PREFIX: &str = "switchboard:";
/// Longest room name accepted from a client, in bytes.
pub const MAX_ROOM_NAME_LEN: usize = 128;
/// Most rooms one socket may be in at once (bounds per-socket state, which must stay small).
pub const MAX_ROOMS_PER_SOCKET: usize = 32;

/// A read-only view of the socket an event came from.
#[derive(Clone, Copy)]
pub struct SocketView<'a> {
    /// The Socket.IO socket id (per namespace, public).
    pub id: &'a str,
    pub namespace: &'a str,
    pub rooms: &'a BTreeSet<String>,
    /// Rooms the socket's token lets it join even where clients may not choose rooms.
    pub granted_rooms: &'a [String],
    /// Whether a name is the id of another socket of the channel, live or parked for recovery.
    /// A socket's id is a room of its own (emits to it reach that socket), so a client may not
    /// join a room of that name: it would receive what is sent to the other socket.
    pub is_socket_id: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for SocketView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketView")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("rooms", &self.rooms)
            .field("granted_rooms", &self.granted_rooms)
            .finish_non_exhaustive()
    }
}

/// An event (or ack) received from a client, attachments already collected.
#[derive(Debug, Clone, Copy)]
pub struct IncomingEvent<'a> {
    /// The event name (first array element).
    pub name: &'a str,
    /// The whole JSON array, event name first, binary attachments as placeholders.
    pub args: &'a Value,
    pub attachments: &'a [Bytes],
    /// Whether the client asked for an acknowledgement.
    pub wants_ack: bool,
}

/// Who receives a broadcast inside the sender's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience {
    /// Empty means the whole namespace; otherwise the union of these rooms.
    pub rooms: Vec<String>,
    /// Socket ids left out.
    pub except: Vec<String>,
    /// Whether the sender itself is left out.
    pub except_sender: bool,
}

/// What a behaviour asks the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer the sender's ack request (ignored if it made none). `args` is a JSON array.
    Ack {
        args: Value,
        attachments: Vec<Bytes>,
    },
    /// Emit an event to the sender only. `args` is the full array, event name first.
    EmitToSender {
        args: Value,
        attachments: Vec<Bytes>,
    },
    /// Emit an event to an audience in the sender's namespace, encoded once for all of them.
    Broadcast {
        audience: Audience,
        args: Value,
        attachments: Vec<Bytes>,
    },
    /// Put the sender in a room.
    Join(String),
    /// Take the sender out of a room.
    Leave(String),
}

/// The answer to a namespace CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectDecision {
    /// Admit the socket, then carry out these actions (after the CONNECT reply is sent).
    Accept(Vec<Action>),
    /// Refuse with a CONNECT_ERROR carrying this message.
    Reject(String),
}

/// Which protocol layer a channel speaks above Engine.IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLayer {
    /// Socket.IO v5 packets inside Engine.IO messages (the normal case).
    SocketIo,
    /// No upper layer: every Engine.IO message is echoed back (the Engine.IO test server).
    Echo,
}

/// A channel's behaviour. Implementations are stateless; they decide, the engine acts.
pub trait Behaviour: Send + Sync + std::fmt::Debug {
    fn engine_layer(&self) -> EngineLayer {
        EngineLayer::SocketIo
    }

    /// A client asks to join `socket.namespace` (already checked against the policy) with this auth
    /// payload.
    fn on_connect(&self, socket: SocketView<'_>, auth: Option<&Value>) -> ConnectDecision;

    /// A client emitted an event.
    fn on_event(&self, socket: SocketView<'_>, event: IncomingEvent<'_>) -> Vec<Action>;
}

/// Builds the behaviour a policy names.
pub fn for_policy(policy: &ChannelPolicy) -> Box<dyn Behaviour> {
    match policy.behaviour {
        BehaviourKind::Relay => Box::new(RelayBehaviour {
            relay: policy.relay,
            client_rooms: policy.client_rooms,
        }),
        BehaviourKind::Conformance => Box::new(ConformanceBehaviour {
            layer: EngineLayer::SocketIo,
        }),
        BehaviourKind::EngineEcho => Box::new(ConformanceBehaviour {
            layer: EngineLayer::Echo,
        }),
    }
}

/// The product behaviour: relays client events as configured and lets clients manage rooms.
#[derive(Debug, Clone)]
pub struct RelayBehaviour {
    pub relay: RelayMode,
    pub client_rooms: bool,
}

impl RelayBehaviour {
    fn room_request(&self, socket: SocketView<'_>, event: IncomingEvent<'_>) -> Vec<Action> {
        let joining = event.name == JOIN_EVENT;
        let reply = |value: Value| Action::Ack {
            args: json!([value]),
            attachments: Vec::new(),
        };
        let refuse = |message: &str| vec![reply(json!({ "ok": false, "error": message }))];

        let room = match event.args.get(1) {
            Some(Value::String(room)) if !room.is_empty() && room.len() <= MAX_ROOM_NAME_LEN => {
                room.clone()
            }
            _ => {
                return refuse(&format!(
                    "expected a room name: a non-empty string of at most {MAX_ROOM_NAME_LEN} bytes"
                ));
            }
        };
        if joining && room != socket.id && (socket.is_socket_id)(&room) {
            return refuse("that room name is another socket's id: a client may not join it");
        }
        // Joining needs the channel's permission or the token's; leaving is always allowed.
        if joining && !self.client_rooms && !socket.granted_rooms.contains(&room) {
            return refuse(
                "this socket may not join that room: the channel does not let clients choose rooms and the token does not grant it",
            );
        }
        let mut rooms = socket.rooms.clone();
        let action = if joining {
            if !rooms.contains(&room) && rooms.len() >= MAX_ROOMS_PER_SOCKET {
                return refuse(&format!(
                    "a socket may be in at most {MAX_ROOMS_PER_SOCKET} rooms"
                ));
            }
            rooms.insert(room.clone());
            Action::Join(room)
        } else {
            rooms.remove(&room);
            Action::Leave(room)
        };
        vec![action, reply(json!({ "ok": true, "rooms": rooms }))]
    }
}

impl Behaviour for RelayBehaviour {
    fn on_connect(&self, _socket: SocketView<'_>, _auth: Option<&Value>) -> ConnectDecision {
        ConnectDecision::Accept(Vec::new())
    }

    fn on_event(&self, socket: SocketView<'_>, event: IncomingEvent<'_>) -> Vec<Action> {
        if event.name == JOIN_EVENT || event.name == LEAVE_EVENT {
            return self.room_request(socket, event);
        }
        if event.name.starts_with(RESERVED_PREFIX) {
            return vec![Action::Ack {
                args: json!([{ "ok": false, "error": format!("unknown reserved event {:?}", event.name) }]),
                attachments: Vec::new(),
            }];
        }
        let mut actions = Vec::with_capacity(2);
        let except_sender = match self.relay {
            RelayMode::All => Some(false),
            RelayMode::Others => Some(true),
            RelayMode::None => None,
        };
        if let Some(except_sender) = except_sender {
            actions.push(Action::Broadcast {
                audience: Audience {
                    except_sender,
                    ..Audience::default()
                },
                args: event.args.clone(),
                attachments: event.attachments.to_vec(),
            });
        }
        // An empty ack tells the sender the server took the event.
        actions.push(Action::Ack {
            args: json!([]),
            attachments: Vec::new(),
        });
        actions
    }
}

/// The servers the Socket.IO v5 and Engine.IO v4 protocol test suites are written against.
#[derive(Debug, Clone)]
pub struct ConformanceBehaviour {
    layer: EngineLayer,
}

impl Behaviour for ConformanceBehaviour {
    fn engine_layer(&self) -> EngineLayer {
        self.layer
    }

    fn on_connect(&self, _socket: SocketView<'_>, auth: Option<&Value>) -> ConnectDecision {
        let auth = auth.cloned().unwrap_or_else(|| json!({}));
        ConnectDecision::Accept(vec![Action::EmitToSender {
            args: json!(["auth", auth]),
            attachments: Vec::new(),
        }])
    }

    fn on_event(&self, _socket: SocketView<'_>, event: IncomingEvent<'_>) -> Vec<Action> {
        let rest = match event.args {
            Value::Array(items) => items.get(1..).unwrap_or_default().to_vec(),
            _ => Vec::new(),
        };
        match event.name {
            "message" => {
                let mut args = Vec::with_capacity(rest.len() + 1);
                args.push(Value::from("message-back"));
                args.extend(rest);
                vec![Action::EmitToSender {
                    args: Value::Array(args),
                    attachments: event.attachments.to_vec(),
                }]
            }
            "message-with-ack" => vec![Action::Ack {
                args: Value::Array(rest),
                attachments: event.attachments.to_vec(),
            }],
            _ => Vec::new(),
        }
    }
}
