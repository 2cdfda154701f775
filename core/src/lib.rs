//! # switchboard-core
//!
//! The runtime-independent heart of Switchboard: the Engine.IO v4 and Socket.IO v5 protocols and the
//! state machine of one channel, with no sockets, clocks, timers, threads or randomness of its own.
//! The same code runs inside a Cloudflare Durable Object (`switchboard-edge`, wasm32) and inside a
//! tokio task (`switchboard-native`).
//!
//! - [`engineio`] and [`socketio`]: strict packet codecs. Malformed input is a typed error, never a
//!   panic.
//! - [`frame`]: [`frame::WireFrame`], one encoded WebSocket message, shared by reference count.
//! - [`channel`]: [`channel::Channel`], one channel's sessions, namespaces, rooms, heartbeats and
//!   acks, driven by `handle_*` inputs, [`channel::Channel::handle_timeout`] and drained with
//!   [`channel::Channel::poll_output`]. Its module docs describe the run loop.
//! - [`behaviour`]: what a channel does with client events (relay, or the protocol test servers).
//! - [`config`]: channel patterns and policies, read from `wrangler.toml` `[vars]`.
//! - [`http`]: URL routing, the front door of Engine.IO requests, query parsing, error bodies and
//!   CORS, shared by both hosts.
//! - [`client`]: socket.io-client's browser bundle, served as socket.io serves it (the bytes come
//!   from the hosts' builds).
//! - [`api`]: the backend's HTTP API (`POST /emit`, `GET /channels/<channel>`): parsing, validation,
//!   authentication and answers.

pub mod api;
pub mod auth;
pub mod backend;
pub mod behaviour;
pub mod channel;
pub mod client;
pub mod config;
pub mod engineio;
pub mod frame;
pub mod http;
pub mod socketio;
mod sort;
pub mod testing;
