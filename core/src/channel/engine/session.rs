//! One Engine.IO session: its transport, what waits for its next poll, and its heartbeat.

use std::collections::VecDeque;

use crate::channel::{ConnId, Frames, MAX_QUEUED_BYTES, MAX_QUEUED_PACKETS};
use crate::engineio;

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
    /// Polling, while a WebSocket probes an upgrade. Boxed: it lasts a round trip or two, and
    /// every session's transport would otherwise be its size.
    Upgrading(Box<Upgrade>),
    WebSocket {
        conn: ConnId,
    },
}

/// A polling session's upgrade in progress.
#[derive(Debug)]
pub(crate) struct Upgrade {
    pub held_get: Option<HeldRequest>,
    pub probe: ConnId,
    /// The probe ping was answered; polls now end with a noop.
    pub probed: bool,
    pub deadline: u64,
    /// When the GET that arrived after the probe gets its noop (see
    /// [`super::UPGRADE_NOOP_DELAY_MS`]).
    pub noop_at: Option<u64>,
}

impl Transport {
    pub fn is_websocket(&self) -> bool {
        matches!(self, Transport::WebSocket { .. })
    }

    /// The GET waiting for data, on a polling (or upgrading) session.
    pub fn held_get(&mut self) -> Option<&mut Option<HeldRequest>> {
        match self {
            Transport::Polling { held_get } => Some(held_get),
            Transport::Upgrading(upgrade) => Some(&mut upgrade.held_get),
            Transport::WebSocket { .. } => None,
        }
    }
}

/// What a session's heartbeat waits for, on its own timer (polling, or WebSocket without batched
/// rounds) or on the channel's rounds: one thing at a time, so one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heartbeat {
    /// Nothing: on the rounds, with no ping of theirs unanswered.
    #[default]
    Quiet,
    /// Its next ping, on its own timer.
    PingAt(u64),
    /// The deadline for the answer to its ping, on its own timer.
    PongBy(u64),
    /// On the rounds: when the oldest of their pings it has not answered was sent.
    PongSince(u64),
}

impl Heartbeat {
    pub fn next_ping_at(self) -> Option<u64> {
        match self {
            Heartbeat::PingAt(at) => Some(at),
            _ => None,
        }
    }

    pub fn pong_deadline(self) -> Option<u64> {
        match self {
            Heartbeat::PongBy(at) => Some(at),
            _ => None,
        }
    }

    pub fn awaiting_pong_since(self) -> Option<u64> {
        match self {
            Heartbeat::PongSince(since) => Some(since),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct EngineSession {
    pub sid: String,
    /// When the session opened (host clock), kept across restarts.
    pub opened_at: u64,
    pub transport: Transport,
    /// Frames waiting for the next polling GET.
    pub poll_queue: PollQueue,
    pub heartbeat: Heartbeat,
}

impl EngineSession {
    pub fn new(sid: String, transport: Transport, opened_at: u64) -> Self {
        Self {
            sid,
            opened_at,
            transport,
            poll_queue: PollQueue::default(),
            heartbeat: Heartbeat::default(),
        }
    }

    /// The earliest moment something must happen to this session on its own timer.
    pub fn next_deadline(&self) -> Option<u64> {
        let (upgrade, upgrade_noop) = match &self.transport {
            Transport::Upgrading(upgrade) => (Some(upgrade.deadline), upgrade.noop_at),
            _ => (None, None),
        };
        [
            self.heartbeat.next_ping_at(),
            self.heartbeat.pong_deadline(),
            upgrade,
            upgrade_noop,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// What waits for a polling session's next GET, bounded like a WebSocket's outbox: at most
/// [`MAX_QUEUED_PACKETS`] packets and [`MAX_QUEUED_BYTES`] bytes (as encoded in a polling body).
/// A session whose client does not poll fast enough is closed as too slow, never buffered.
///
/// Allocated on first use: a WebSocket session (nearly every idle one) never queues here, and
/// pays one pointer for it.
#[derive(Debug, Default)]
pub(crate) struct PollQueue(Option<Box<Queued>>);

#[derive(Debug, Default)]
struct Queued {
    messages: VecDeque<Frames>,
    packets: usize,
    bytes: usize,
}

/// The queue is over its bound: the session must be closed as too slow.
#[derive(Debug)]
pub(crate) struct QueueFull;

impl PollQueue {
    pub fn is_empty(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|queued| queued.messages.is_empty())
    }

    /// Queues one message (a packet and its binary attachments) that takes `bytes` in a polling
    /// body ([`body_len`], computed once per broadcast, not per recipient). The first message of
    /// an empty queue is always taken, whatever its size: `max_payload` bounds it already.
    pub fn push(&mut self, frames: &Frames, bytes: usize) -> Result<(), QueueFull> {
        let queued = self.0.get_or_insert_with(Box::default);
        if !queued.messages.is_empty()
            && (queued.packets + frames.len() > MAX_QUEUED_PACKETS
                || queued.bytes + bytes > MAX_QUEUED_BYTES)
        {
            return Err(QueueFull);
        }
        queued.packets += frames.len();
        queued.bytes += bytes;
        queued.messages.push_back(frames.clone());
        Ok(())
    }

    /// The next GET's body: whole messages from the front, as many as fit in `max_body` bytes,
    /// and always at least one. The rest waits for the next GET, as engine.io does.
    pub fn take_body(&mut self, max_body: u64) -> Option<bytes::Bytes> {
        let queued = self.0.as_mut()?;
        let mut taken = 0;
        let mut size = 0usize;
        for frames in &queued.messages {
            let next = body_len(frames);
            if taken > 0 && (size + next) as u64 > max_body {
                break;
            }
            size += next;
            taken += 1;
        }
        if taken == 0 {
            return None;
        }
        let body = engineio::encode_payload(
            queued
                .messages
                .range(..taken)
                .flat_map(|frames| frames.iter()),
        );
        for frames in queued.messages.drain(..taken) {
            queued.packets -= frames.len();
            queued.bytes -= body_len(&frames);
        }
        Some(body)
    }

    /// Everything queued, in order (the session upgraded to WebSocket); the queue's memory goes.
    pub fn take_all(&mut self) -> impl Iterator<Item = Frames> + use<> {
        self.0
            .take()
            .map(|queued| queued.messages)
            .unwrap_or_default()
            .into_iter()
    }
}

/// The bytes a message takes in a polling body, separators included.
pub(crate) fn body_len(frames: &Frames) -> usize {
    frames
        .iter()
        .map(|frame| engineio::record_len(frame) + 1)
        .sum()
}

#[cfg(test)]
mod tests {
    /// Every session carries one (see `a_socket_stays_small`): a WebSocket session's poll queue
    /// is one pointer.
    #[test]
    fn a_session_stays_small() {
        assert_eq!(
            std::mem::size_of::<super::PollQueue>(),
            std::mem::size_of::<usize>()
        );
        assert!(std::mem::size_of::<super::EngineSession>() <= 96);
    }
}
