//! Switchboard on Cloudflare Workers.
//!
//! The Worker is a stateless router: `/socket.io/<channel>/…` goes to the Durable Object named after the
//! channel, and that object drives one [`switchboard_core::channel::Channel`]. This crate is filled in by
//! the edge milestone; for now it only proves that the core links into a wasm-targeted crate.

pub use switchboard_core as core;
