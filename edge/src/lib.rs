//! # switchboard-edge
//!
//! Switchboard on Cloudflare Workers. Two parts, both thin:
//!
//! - the **Worker** ([`router`]) is stateless: it reads the configuration from the environment
//!   (`wrangler.toml` `[vars]`), refuses what no channel pattern matches and what Engine.IO would refuse
//!   anyway, and forwards the rest to the Durable Object named after the channel;
//! - the **Durable Object** ([`object::ChannelObject`]) holds one core
//!   [`switchboard_core::channel::Channel`]: it feeds it requests, WebSocket messages and alarms with the
//!   current time and carries out its outputs. WebSockets use the Hibernation API; each one's session
//!   snapshot is its attachment, so a woken object rebuilds the channel (rooms, namespaces, acks in
//!   flight) before handling anything. Heartbeats are batched into one alarm per ping interval and
//!   client pongs are answered by the runtime's auto-response, so idle channels cost no wake-ups
//!   beyond that alarm.
//!
//! Everything here only compiles for `wasm32`; on other targets the crate is empty.

#[cfg(target_arch = "wasm32")]
mod env_config;
#[cfg(target_arch = "wasm32")]
pub mod object;
#[cfg(target_arch = "wasm32")]
pub mod router;
