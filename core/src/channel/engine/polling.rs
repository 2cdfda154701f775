//! HTTP long-polling: the handshake GET, held GETs answered when there is something to send, and
//! POSTs carrying the client's packets.

use bytes::Bytes;

use super::session::{HeldRequest, Transport};
use super::{Engine, SessionKey, UPGRADE_NOOP_DELAY_MS};
use crate::channel::{CloseReason, ConnId};
use crate::engineio;
use crate::http::{EngineError, HttpResponse, Method};

impl Engine {
    /// A polling request on this channel's Engine.IO endpoint. A POST's packets come back to the
    /// caller, which hands them to [`Engine::handle_packet`] one by one, so that what each packet
    /// causes is done before the next is looked at.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_polling(
        &mut self,
        request: ConnId,
        method: Method,
        sid: Option<&str>,
        cors: Vec<(&'static str, String)>,
        body: Bytes,
        now: u64,
    ) -> Option<(SessionKey, engineio::PayloadRecords)> {
        let Some(sid) = sid else {
            if method == Method::Get {
                self.open_polling_session(request, cors, now);
            } else {
                self.respond_error(request, EngineError::BadHandshakeMethod, cors);
            }
            return None;
        };
        let open = self
            .by_sid
            .get(sid)
            .copied()
            .filter(|key| self.catch_up(*key, now));
        let Some(key) = open else {
            if method == Method::Get && self.closing_polls.remove(sid).is_some() {
                // The GET that raced its client's close: end it as engine.io's orderly close does.
                self.respond(
                    request,
                    HttpResponse::text(200, Bytes::from_static(b"6")).with_headers(cors),
                );
            } else {
                self.respond_error(request, EngineError::UnknownSid, cors);
            }
            return None;
        };
        let session = self.sessions.get_mut(&key)?;
        match method {
            Method::Get => {
                let Some(held) = session.transport.held_get() else {
                    // Upgraded sessions no longer poll; the WebSocket goes on.
                    self.respond_error(request, EngineError::BadRequest, cors);
                    return None;
                };
                if held.is_some() {
                    self.respond_error(request, EngineError::BadRequest, cors);
                    self.close(key, CloseReason::DuplicatePoll);
                    return None;
                }
                *held = Some((request, cors));
                if let Transport::Upgrading(upgrade) = &mut session.transport
                    && upgrade.probed
                    && session.poll_queue.is_empty()
                {
                    upgrade.noop_at = Some(now + UPGRADE_NOOP_DELAY_MS);
                }
                self.held_polls.insert(request, key);
                self.flush_polling(key);
                self.schedule(key);
                None
            }
            Method::Post => {
                if session.transport.is_websocket() {
                    self.respond_error(request, EngineError::BadRequest, cors);
                    return None;
                }
                if body.len() as u64 > self.policy.max_payload {
                    self.respond(
                        request,
                        HttpResponse::text(413, "payload too large").with_headers(cors),
                    );
                    self.close(key, CloseReason::PayloadTooLarge);
                    return None;
                }
                match engineio::PayloadRecords::new(body) {
                    Ok(packets) => {
                        // Answer first: the packets may close the session, and the POST itself
                        // succeeded.
                        self.respond(request, HttpResponse::text(200, "ok").with_headers(cors));
                        Some((key, packets))
                    }
                    Err(_) => {
                        self.respond_error(request, EngineError::BadRequest, cors);
                        self.close(key, CloseReason::ProtocolError);
                        None
                    }
                }
            }
            Method::Options | Method::Other => {
                self.respond_error(request, EngineError::BadRequest, cors);
                None
            }
        }
    }

    /// A polling request whose body the host refused to read because it is larger than the
    /// channel's `max_payload`: `413`, and the session ends, as for an oversize body read in full.
    pub fn handle_polling_too_large(
        &mut self,
        request: ConnId,
        sid: Option<&str>,
        cors: Vec<(&'static str, String)>,
    ) {
        self.respond(
            request,
            HttpResponse::text(413, "payload too large").with_headers(cors),
        );
        if let Some(key) = sid.and_then(|sid| self.by_sid.get(sid).copied()) {
            self.close(key, CloseReason::PayloadTooLarge);
        }
    }

    /// The client gave up on a request (connection dropped). A held GET going away ends its session,
    /// as the reference server does: the client is gone or broken.
    pub fn handle_http_aborted(&mut self, request: ConnId) {
        let Some(key) = self.held_polls.remove(&request) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            if let Some(held) = session.transport.held_get() {
                *held = None;
            }
            self.close(key, CloseReason::PollAborted);
        }
    }

    fn open_polling_session(
        &mut self,
        request: ConnId,
        cors: Vec<(&'static str, String)>,
        now: u64,
    ) {
        let key = self.open_session(Transport::Polling { held_get: None }, request, now);
        let Some(sid) = self.sid(key) else {
            return;
        };
        let handshake = self.handshake(sid, vec!["websocket".into()]).to_frame();
        let body = engineio::encode_payload([&handshake]);
        self.respond(request, HttpResponse::text(200, body).with_headers(cors));
    }

    /// Answers the held GET of a polling session if there is one and something to send.
    pub(super) fn flush_polling(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let (held_get, noop_now) = match &mut session.transport {
            Transport::Polling { held_get } => (held_get, false),
            Transport::Upgrading(upgrade) => {
                let noop_now = upgrade.probed && upgrade.noop_at.is_none();
                (&mut upgrade.held_get, noop_now)
            }
            Transport::WebSocket { .. } => return,
        };
        if held_get.is_none() {
            return;
        }
        let body = if let Some(body) = session.poll_queue.take_body(self.policy.max_payload) {
            body
        } else if noop_now {
            // An upgrade is under way: end the poll cleanly so the client can switch.
            Bytes::from_static(b"6")
        } else {
            return;
        };
        let Some((request, cors)): Option<HeldRequest> = held_get.take() else {
            return;
        };
        self.held_polls.remove(&request);
        self.respond(request, HttpResponse::text(200, body).with_headers(cors));
    }
}
