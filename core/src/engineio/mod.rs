//! Engine.IO v4: the transport layer under Socket.IO.
//!
//! An Engine.IO packet is a one-digit type followed by an optional payload. Over WebSocket each packet
//! is its own frame ([`packet`]); over HTTP long-polling several packets share one body, separated by
//! the record separator byte ([`payload`]). Everything here is pure encoding and decoding: timers,
//! sessions and upgrades belong to the engine.

pub mod packet;
pub mod payload;

pub use packet::*;
pub use payload::*;
