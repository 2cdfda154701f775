//! Tokens that expire. A socket of a private channel holds its token's `exp`; when it passes,
//! the socket is told why and disconnected, unless the client sent a fresh token first:
//!
//! ```js
//! socket.emit("switchboard:refresh", { token: newToken }, (answer) => { /* answer.status */ });
//! ```
//!
//! The fresh token is checked as at CONNECT (signature, channel, bound claims, lifetime) and must
//! name the same user; the socket then keeps going until the new `exp`, its rooms untouched.

use serde_json::{Value, json};

use super::SocketLayer;
use super::frames_of;
use crate::auth;
use crate::channel::engine::{Engine, SessionKey};
use crate::socketio;

/// The reserved event a client emits with a fresh token.
pub const REFRESH_EVENT: &str = "switchboard:refresh";

impl SocketLayer {
    /// Tells each socket of session `key` whose token expired why, then disconnects it.
    pub(super) fn expire_tokens(&mut self, engine: &mut Engine, key: SessionKey, now: u64) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let expired: Vec<String> = session
            .sockets
            .iter()
            .filter(|(_, socket)| socket.expires_at().is_some_and(|at| at <= now))
            .map(|(namespace, _)| namespace.to_string())
            .collect();
        for namespace in expired {
            let error = json!({
                "code": "TOKEN_EXPIRED",
                "message": "the token expired: refresh it with switchboard:refresh before its exp, or connect again with a new one",
            });
            self.answer_error(engine, key, &namespace, REFRESH_EVENT, None, error);
            self.server_disconnect(engine, key, &namespace, "token expired", now);
        }
    }

    /// `switchboard:refresh` with `{ token }`: a fresh token for the socket, or an error saying
    /// why not (the socket then keeps its current token, and its expiry).
    pub(super) fn refresh_token(
        &mut self,
        engine: &mut Engine,
        key: SessionKey,
        namespace: &str,
        args: &Value,
        ack_id: Option<u64>,
        now: u64,
    ) {
        let refused = |message: String| json!({ "code": "INVALID_TOKEN", "message": message });
        if !self.policy.auth.needs_token() {
            let error = refused("this channel takes no token".into());
            self.answer_error(engine, key, namespace, REFRESH_EVENT, ack_id, error);
            return;
        }
        // `{ token }`, as in the CONNECT payload, or the token alone.
        let auth = match args.get(1) {
            Some(Value::String(token)) => json!({ "token": token }),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        let grant =
            match auth::verify_connect(Some(&auth), &self.policy, &self.name, &self.params, now) {
                Ok(grant) => grant,
                Err(reason) => {
                    self.answer_error(
                        engine,
                        key,
                        namespace,
                        REFRESH_EVENT,
                        ack_id,
                        refused(reason),
                    );
                    return;
                }
            };
        // With a connect hook, the hook named the user; otherwise the token did, and a fresh
        // token must not turn the socket into someone else.
        let checks_subject = !self.policy.auth.asks_backend();
        let Some(socket) = self.socket_mut(key, namespace) else {
            return;
        };
        if checks_subject && grant.subject.as_deref() != socket.user() {
            let error = refused("the new token is for another user".into());
            self.answer_error(engine, key, namespace, REFRESH_EVENT, ack_id, error);
            return;
        }
        socket.set_grant(grant.rooms, grant.expires_at_ms);
        if let Some(id) = ack_id {
            let answer = json!([{ "status": "ok", "data": { "expires_at": grant.expires_at_ms } }]);
            let frames = frames_of(&socketio::Packet::ack(namespace, answer, id, 0), Vec::new());
            engine.send(key, &frames);
        }
        engine.session_changed(key);
        self.schedule(key);
    }
}
