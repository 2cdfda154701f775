//! Heartbeats: the server pings, the client answers within the ping timeout or its session ends.
//!
//! A session is pinged on its own timer, or, with batched heartbeats, WebSocket sessions are
//! pinged together in one round per interval (see
//! [`crate::channel::Channel::with_batched_heartbeats`]). Deadlines count from when an event was
//! due, not from when a possibly late timer fired.

use super::session::{Heartbeat, Transport};
use super::{Engine, EngineTimer, SessionKey};
use crate::channel::{CloseReason, ConnId, Output};

impl Engine {
    /// Puts a session on its heartbeat schedule: its first ping a full interval from now, on its
    /// own timer. Under batched heartbeats a WebSocket session then joins the channel's rounds
    /// (see [`Engine::join_rounds`]): its first ping is as punctual as engine.io's, and from then
    /// on it costs no wake-up of its own.
    pub(super) fn start_heartbeat(&mut self, key: SessionKey, now: u64) {
        let interval = self.policy.ping_interval_ms;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.heartbeat = Heartbeat::PingAt(now + interval);
        self.schedule(key);
    }

    /// Moves a WebSocket session onto the channel's rounds, its oldest unanswered ping sent at
    /// `awaiting_since` (if one is).
    pub(super) fn join_rounds(&mut self, key: SessionKey, awaiting_since: Option<u64>, now: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.heartbeat = awaiting_since.map_or(Heartbeat::Quiet, Heartbeat::PongSince);
        if self.timers.get(EngineTimer::PingRound).is_none() {
            self.timers
                .set(EngineTimer::PingRound, now + self.policy.ping_interval_ms);
        }
        self.schedule(key);
    }

    /// Whether `key` is a WebSocket session its batched heartbeats ping in rounds.
    fn pinged_in_rounds(&self, key: SessionKey) -> bool {
        self.batched_heartbeats
            && self
                .sessions
                .get(&key)
                .is_some_and(|session| session.transport.is_websocket())
    }

    /// The client answered a ping.
    pub(super) fn handle_pong(&mut self, key: SessionKey, now: u64) {
        let interval = self.policy.ping_interval_ms;
        if let Some(session) = self.sessions.get_mut(&key) {
            session.heartbeat = match session.heartbeat {
                // The rounds' ping answered: the next round pings it again.
                Heartbeat::PongSince(_) => Heartbeat::Quiet,
                _ => Heartbeat::PingAt(now + interval),
            };
        }
        self.schedule(key);
    }

    /// The host saw WebSocket `conn` answer a ping at `at` without the message reaching the channel
    /// (a Durable Object's WebSocket auto-response).
    /// Only pings sent by the rounds are answered this way; a session's first, on its own timer,
    /// is followed by the rounds too, which check its answer.
    pub fn handle_pong_seen(&mut self, conn: ConnId, at: u64) {
        let Some(key) = self.websockets.get(&conn) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(key)
            && session
                .heartbeat
                .awaiting_pong_since()
                .is_some_and(|since| at >= since)
        {
            session.heartbeat = Heartbeat::Quiet;
        }
    }

    /// One heartbeat round over every WebSocket session on the rounds (batched heartbeats only). A
    /// session is closed at the first round after its oldest unanswered ping is past its answer
    /// time.
    pub(super) fn run_ping_round(&mut self, now: u64) {
        let ping_timeout = self.policy.ping_timeout_ms;
        let mut pinged = Vec::new();
        let mut expired = Vec::new();
        for (key, session) in self.sessions.iter_mut() {
            let Transport::WebSocket { conn } = session.transport else {
                continue;
            };
            let heartbeat = &mut session.heartbeat;
            if heartbeat.next_ping_at().is_some() {
                // Still waiting for its first ping, on its own timer.
                continue;
            }
            match heartbeat.awaiting_pong_since() {
                // The oldest unanswered ping is past its answer time.
                Some(since) if now >= since.saturating_add(ping_timeout) => {
                    expired.push(*key);
                    continue;
                }
                // Still within its answer time (a ping timeout longer than the interval): ping
                // again; an answer to either ping counts.
                Some(_) => {}
                None => *heartbeat = Heartbeat::PongSince(now),
            }
            pinged.push(conn);
        }
        for key in expired {
            self.close(key, CloseReason::PingTimeout);
        }
        match pinged.len() {
            0 => {}
            1 => self.outputs.push_back(Output::Transmit {
                conn: pinged[0],
                frames: self.ping.clone(),
            }),
            _ => self.outputs.push_back(Output::Broadcast {
                conns: pinged,
                frames: self.ping.clone(),
            }),
        }
        let any_websocket = self
            .sessions
            .values()
            .any(|session| session.transport.is_websocket());
        if any_websocket {
            self.timers
                .set(EngineTimer::PingRound, now + self.policy.ping_interval_ms);
        }
    }

    /// Runs whatever is due for one session at `now`. A ping due at T must be answered by
    /// T + ping timeout, so a late ping whose answer time has passed too ends the session at once.
    pub(super) fn run_session_timers(&mut self, key: SessionKey, now: u64) {
        let ping_timeout = self.policy.ping_timeout_ms;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let ping_due = session.heartbeat.next_ping_at().filter(|at| *at <= now);
        if let Some(due) = ping_due {
            session.heartbeat = Heartbeat::PongBy(due + ping_timeout);
            let ping = self.ping.clone();
            self.send(key, &ping);
            if self.pinged_in_rounds(key) {
                // Its answer, and every ping after it, are the rounds' business now.
                self.join_rounds(key, Some(due), now);
            }
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session
            .heartbeat
            .pong_deadline()
            .is_some_and(|at| at <= now)
        {
            self.close(key, CloseReason::PingTimeout);
            return;
        }
        let mut noop_due = false;
        let upgrade_expired = match &mut session.transport {
            Transport::Upgrading(upgrade) => {
                if upgrade.noop_at.is_some_and(|at| at <= now) {
                    upgrade.noop_at = None;
                    noop_due = true;
                }
                (upgrade.deadline <= now).then_some(upgrade.probe)
            }
            _ => None,
        };
        if let Some(probe) = upgrade_expired {
            self.push_close(probe, CloseReason::ProtocolError);
            self.abandon_upgrade(key, probe);
        } else if noop_due {
            self.flush_polling(key);
        }
        self.schedule(key);
    }
}
