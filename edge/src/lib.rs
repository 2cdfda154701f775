//! # switchboard-edge
//!
//! Switchboard on Cloudflare Workers. Two parts, both thin:
//!
//! - the **Worker** (`router`) is stateless: it reads the configuration from the environment
//!   (`wrangler.toml` `[vars]`), refuses what no channel pattern matches and what Engine.IO would refuse
//!   anyway, and forwards the rest to the Durable Object named after the channel;
//! - the **Durable Object** (`object::ChannelObject`) holds one core
//!   [`switchboard_core::channel::Channel`]: it feeds it requests, WebSocket messages and alarms with the
//!   current time and carries out its outputs. WebSockets use the Hibernation API; each one's session
//!   snapshot is its attachment, so a woken object rebuilds the channel (rooms, namespaces, acks in
//!   flight) before handling anything. Heartbeats are batched into one alarm per ping interval and
//!   client pongs are answered by the runtime's auto-response, so idle channels cost no wake-ups
//!   beyond that alarm.
//!
//! Calls to the app backend (handlers, the connect hook, webhooks) are made by the object with
//! `fetch` (`backend`), on a task of their own that runs the channel's timers while it waits.
//!
//! The Worker and the object only compile for `wasm32`. What they share and can be tested without
//! the Workers runtime compiles everywhere: [`internal`], the calls the Worker makes to an object,
//! and [`restore`], how an object woken from hibernation plans its rebuild.

#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod env_config;
pub mod internal;
#[cfg(target_arch = "wasm32")]
pub mod object;
pub mod restore;
#[cfg(target_arch = "wasm32")]
pub mod router;
#[cfg(target_arch = "wasm32")]
mod store;
