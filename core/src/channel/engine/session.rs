//! One Engine.IO session: its transport, what waits for its next poll, and its heartbeat.

use crate::channel::{ConnId, Frames};

/// A small name for a session inside one channel, handed out in increasing order and never reused,
/// so a stale key can never name a newer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub(crate) u64);

/// CORS headers of a held request, kept to answer it later.
pub(crate) type HeldRequest = (ConnId, Vec<(&'static str, String)>);

/// How a session currently reaches its client.
#[derive(Debug)]
pub(crate) enum Transport {
    /// HTTP long-polling; `held_get` is the GET waiting for something to send.
    Polling {
        held_get: Option<HeldRequest>,
    },
    /// Polling, while a WebSocket probes an upgrade.
    Upgrading {
        held_get: Option<HeldRequest>,
        probe: ConnId,
        /// The probe ping was answered; polls now end with a noop.
        probed: bool,
        deadline: u64,
        /// When the GET that arrived after the probe gets its noop (see
        /// [`super::UPGRADE_NOOP_DELAY_MS`]).
        noop_at: Option<u64>,
    },
    WebSocket {
        conn: ConnId,
    },
}

impl Transport {
    pub fn is_websocket(&self) -> bool {
        matches!(self, Transport::WebSocket { .. })
    }

    /// The GET waiting for data, on a polling (or upgrading) session.
    pub fn held_get(&mut self) -> Option<&mut Option<HeldRequest>> {
        match self {
            Transport::Polling { held_get } | Transport::Upgrading { held_get, .. } => {
                Some(held_get)
            }
            Transport::WebSocket { .. } => None,
        }
    }
}

/// A session's heartbeat, on its own timer (polling, or WebSocket without batched rounds) or on
/// the channel's rounds.
#[derive(Debug, Default)]
pub(crate) struct Heartbeat {
    pub next_ping_at: Option<u64>,
    pub pong_deadline: Option<u64>,
    /// Under batched heartbeats: when the oldest unanswered ping of the rounds was sent.
    pub awaiting_pong_since: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct EngineSession {
    pub sid: String,
    /// When the session opened (host clock), kept across restarts.
    pub opened_at: u64,
    pub transport: Transport,
    /// Frames waiting for the next polling GET.
    pub poll_queue: Vec<Frames>,
    pub heartbeat: Heartbeat,
}

impl EngineSession {
    pub fn new(sid: String, transport: Transport, opened_at: u64) -> Self {
        Self {
            sid,
            opened_at,
            transport,
            poll_queue: Vec::new(),
            heartbeat: Heartbeat::default(),
        }
    }

    /// The earliest moment something must happen to this session on its own timer.
    pub fn next_deadline(&self) -> Option<u64> {
        let (upgrade, upgrade_noop) = match self.transport {
            Transport::Upgrading {
                deadline, noop_at, ..
            } => (Some(deadline), noop_at),
            _ => (None, None),
        };
        [
            self.heartbeat.next_ping_at,
            self.heartbeat.pong_deadline,
            upgrade,
            upgrade_noop,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
