//! WebSocket sessions, the polling → WebSocket upgrade, and the Engine.IO packets of both
//! transports.

use std::sync::Arc;

use bytes::Bytes;

use super::session::{Transport, Upgrade};
use super::{
    Engine, EngineEvent, SessionKey, UPGRADE_TIMEOUT_MS, Via, WsAdmission, session::EngineSession,
};
use crate::channel::{CloseReason, ConnId, Output};
use crate::engineio;
use crate::http::EngineError;

impl Engine {
    /// What becomes of a WebSocket handshake with this `sid` (see
    /// [`crate::channel::Channel::check_ws_open`]).
    pub fn check_ws_open(&self, sid: Option<&str>) -> Result<WsAdmission, EngineError> {
        let Some(sid) = sid else {
            return Ok(WsAdmission::Accept);
        };
        let transport = self
            .by_sid
            .get(sid)
            .and_then(|key| self.sessions.get(key))
            .map(|session| &session.transport);
        match transport {
            None => Err(EngineError::UnknownSid),
            Some(Transport::Polling { .. }) => Ok(WsAdmission::Accept),
            Some(Transport::Upgrading(_) | Transport::WebSocket { .. }) => {
                let (code, reason) = CloseReason::ProtocolError.close_code();
                Ok(WsAdmission::AcceptAndClose { code, reason })
            }
        }
    }

    /// A WebSocket opened on this channel. Without `sid` it starts a new session; with one it is the
    /// probe of an upgrade from polling.
    pub fn handle_ws_open(&mut self, conn: ConnId, sid: Option<&str>, now: u64) {
        let Some(sid) = sid else {
            let key = self.open_session(Transport::WebSocket { conn }, conn, now);
            self.websockets.insert(conn, key);
            let Some(sid) = self.sid(key) else {
                return;
            };
            let handshake = self.handshake(sid, Vec::new()).to_frame();
            self.outputs.push_back(Output::Transmit {
                conn,
                frames: Arc::from(vec![handshake]),
            });
            self.outputs.push_back(Output::SessionChanged { conn });
            return;
        };
        let Some(key) = self.by_sid.get(sid).copied() else {
            self.push_close(conn, CloseReason::ProtocolError);
            return;
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        match &session.transport {
            Transport::Polling { held_get } => {
                session.transport = Transport::Upgrading(Box::new(Upgrade {
                    held_get: held_get.clone(),
                    probe: conn,
                    probed: false,
                    deadline: now + UPGRADE_TIMEOUT_MS,
                    noop_at: None,
                }));
                self.websockets.insert(conn, key);
                self.schedule(key);
            }
            // One WebSocket per session: a second one is refused, the first goes on.
            Transport::Upgrading(_) | Transport::WebSocket { .. } => {
                self.push_close(conn, CloseReason::ProtocolError);
            }
        }
    }

    /// A text message arrived on WebSocket `conn`.
    pub fn handle_ws_text(&mut self, conn: ConnId, text: &str, now: u64) {
        let Some((key, via)) = self.websocket_session(conn, now) else {
            return;
        };
        if text.len() as u64 > self.policy.max_payload {
            self.close_on(key, via, CloseReason::PayloadTooLarge);
            return;
        }
        match engineio::Packet::decode_text(text) {
            Ok(packet) => self.handle_packet(key, via, packet, now),
            Err(_) => self.close_on(key, via, CloseReason::ProtocolError),
        }
    }

    /// A binary message arrived on WebSocket `conn`.
    pub fn handle_ws_binary(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        let Some((key, via)) = self.websocket_session(conn, now) else {
            return;
        };
        if bytes.len() as u64 > self.policy.max_payload {
            self.close_on(key, via, CloseReason::PayloadTooLarge);
            return;
        }
        self.handle_packet(key, via, engineio::Packet::decode_binary(bytes), now);
    }

    /// WebSocket `conn` closed (by the client or the network). The host must not send to it again.
    pub fn handle_ws_closed(&mut self, conn: ConnId) {
        let Some(key) = self.websockets.get(&conn).copied() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        match &session.transport {
            Transport::Upgrading(upgrade) if upgrade.probe == conn => {
                self.abandon_upgrade(key, conn)
            }
            _ => {
                // The socket is already gone: don't ask the host to close it again.
                self.websockets.remove(&conn);
                session.transport = Transport::Polling { held_get: None };
                self.close(key, CloseReason::TransportClosed);
            }
        }
    }

    /// The session of WebSocket `conn`, caught up to `now`, and whether `conn` is its probe.
    fn websocket_session(&mut self, conn: ConnId, now: u64) -> Option<(SessionKey, Via)> {
        let key = *self.websockets.get(&conn)?;
        if !self.catch_up(key, now) {
            return None;
        }
        let via = match &self.sessions.get(&key)?.transport {
            Transport::Upgrading(upgrade) if upgrade.probe == conn => Via::Probe(conn),
            _ => Via::Active,
        };
        Some((key, via))
    }

    /// Ends the session, or just the probe WebSocket when that is where the problem came from.
    fn close_on(&mut self, key: SessionKey, via: Via, reason: CloseReason) {
        match via {
            Via::Active => self.close(key, reason),
            Via::Probe(probe) => {
                self.push_close(probe, reason);
                self.abandon_upgrade(key, probe);
            }
        }
    }

    /// The probe WebSocket failed or timed out: the session stays on polling.
    pub(super) fn abandon_upgrade(&mut self, key: SessionKey, probe: ConnId) {
        self.websockets.remove(&probe);
        if let Some(session) = self.sessions.get_mut(&key)
            && let Transport::Upgrading(upgrade) = &mut session.transport
        {
            session.transport = Transport::Polling {
                held_get: upgrade.held_get.take(),
            };
            self.flush_polling(key);
            self.schedule(key);
        }
    }

    /// One Engine.IO packet of session `key`, from its active transport or its probe.
    pub fn handle_packet(&mut self, key: SessionKey, via: Via, packet: engineio::Packet, now: u64) {
        use engineio::Packet as P;
        if !self.sessions.contains_key(&key) {
            return;
        }
        if let Via::Probe(probe) = via {
            match packet {
                P::Ping { probe: true } => {
                    self.outputs.push_back(Output::Transmit {
                        conn: probe,
                        frames: Arc::from(vec![P::Pong { probe: true }.to_frame()]),
                    });
                    if let Some(session) = self.sessions.get_mut(&key)
                        && let Transport::Upgrading(upgrade) = &mut session.transport
                    {
                        upgrade.probed = true;
                    }
                    // A waiting GET ends with a noop so the client can pause polling.
                    self.flush_polling(key);
                }
                P::Upgrade => self.complete_upgrade(key, probe, now),
                _ => self.close_on(key, via, CloseReason::ProtocolError),
            }
            return;
        }
        match packet {
            P::Pong { probe: false } => self.handle_pong(key, now),
            P::Close => self.client_close(key, now),
            P::Message(text) => self.events.push_back(EngineEvent::Message(key, text)),
            P::BinaryMessage(bytes) => self.events.push_back(EngineEvent::Binary(key, bytes)),
            // Harmless leftovers of an upgrade.
            P::Noop | P::Upgrade => {}
            // Clients never open sessions or ping the server in Engine.IO v4.
            P::Open(_) | P::Ping { .. } | P::Pong { probe: true } => {
                self.close(key, CloseReason::ProtocolError);
            }
        }
    }

    fn complete_upgrade(&mut self, key: SessionKey, probe: ConnId, now: u64) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let EngineSession { transport, .. } = &mut **session;
        let Transport::Upgrading(upgrade) = transport else {
            return;
        };
        if !upgrade.probed {
            self.close_on(key, Via::Probe(probe), CloseReason::ProtocolError);
            return;
        }
        let held_get = upgrade.held_get.take();
        session.transport = Transport::WebSocket { conn: probe };
        let queued = session.poll_queue.take_all();
        if let Some((request, cors)) = held_get {
            // The probe already ended the GET waiting then; this one came after it and raced the
            // upgrade packet: refuse it as a GET after the upgrade.
            self.held_polls.remove(&request);
            self.respond_error(request, EngineError::BadRequest, cors);
        }
        for frames in queued {
            self.outputs.push_back(Output::Transmit {
                conn: probe,
                frames,
            });
        }
        self.outputs
            .push_back(Output::SessionChanged { conn: probe });
        if self.batched_heartbeats {
            // Pinged so far on its own timer over polling; the rounds take it from here.
            self.start_heartbeat(key, now);
        } else {
            self.schedule(key);
        }
    }
}
