//! Calls to the app backend: what they carry, how they are signed, and what an answer may say.
//!
//! A channel asks for a call as an output ([`BackendCall`]) and takes the answer back as an input
//! ([`BackendAnswer`]); the hosts only carry the HTTP request. Every call is a signed JSON `POST`:
//!
//! ```text
//! POST <BACKEND_URL>/events        (a handler call; /connect for the connect hook, /webhooks)
//! content-type: application/json
//! x-switchboard-call: <the call's id>
//! x-switchboard-timestamp: <unix seconds>
//! x-switchboard-signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" with WEBHOOK_SECRET>
//! ```
//!
//! A backend checks the signature and that the timestamp is recent (the README shows how, in Node
//! and in Python), and may deduplicate by the call's id, which a retry keeps.

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::socketio::{self, PLACEHOLDER_KEY};

/// The header carrying the call's id.
pub const CALL_HEADER: &str = "x-switchboard-call";
/// The header carrying the call's time, in seconds since the epoch.
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// The secret that signs every call.
pub const WEBHOOK_SECRET_VAR: &str = "WEBHOOK_SECRET";

/// The key of the object that stands for binary data in the JSON a backend sends and receives:
/// `{"_binary": "<base64>"}`.
pub const BINARY_KEY: &str = "_binary";

/// Largest answer a backend may send, in bytes.
pub const MAX_ANSWER_BYTES: usize = 1_000_000;

/// A call the host must make: a `POST` of `body` to `url` with `headers`, answered back to the
/// channel under `id` (see [`crate::channel::Channel::handle_backend_answer`]) however it ends.
/// The channel times the call out itself after `timeout_ms`, on its own clock; the host gives up
/// only later, at [`BackendCall::host_timeout_ms`], so that a slow backend is always reported as
/// a timeout by the channel and never as a host failure that happened to fire first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCall {
    pub id: u64,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub timeout_ms: u64,
}

/// How much longer than the channel's deadline the host keeps a call open, as a backstop.
pub const HOST_TIMEOUT_GRACE_MS: u64 = 1_000;

impl BackendCall {
    /// When the host abandons the call: after the channel has timed it out itself.
    pub fn host_timeout_ms(&self) -> u64 {
        self.timeout_ms + HOST_TIMEOUT_GRACE_MS
    }
}

/// How a backend call ended, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAnswer {
    /// The backend answered (any status).
    Response { status: u16, body: Bytes },
    /// No answer: the backend could not be reached, or the connection failed.
    Failed(String),
}

/// The signature of `body` sent at `timestamp` (seconds): `v1=<hex HMAC-SHA256>` of
/// `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(3 + digest.len() * 2);
    hex.push_str("v1=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Builds a signed call of `body` to `url`.
pub fn call(
    id: u64,
    call_id: &str,
    url: String,
    secret: &str,
    body: &Value,
    timeout_ms: u64,
    now_ms: u64,
) -> BackendCall {
    let body = Bytes::from(body.to_string());
    let timestamp = now_ms / 1000;
    BackendCall {
        id,
        url,
        headers: vec![
            ("content-type", "application/json".to_string()),
            (CALL_HEADER, call_id.to_string()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, signature(secret, timestamp, &body)),
        ],
        body,
        timeout_ms,
    }
}

/// Why an answer is not one the channel can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the backend could not be reached: {0}")]
    Unreachable(String),
    #[error("the backend answered {0}")]
    Status(u16),
    #[error("the backend's answer is not a JSON object")]
    NotJson,
    #[error("the backend did not answer within {0} ms")]
    Timeout(u64),
}

/// The JSON object a backend answered, or why there is none to act on. A 2xx with an empty body
/// is an empty object: nothing to do.
pub fn answer_object(answer: BackendAnswer) -> Result<Map<String, Value>, AnswerError> {
    match answer {
        BackendAnswer::Failed(reason) => Err(AnswerError::Unreachable(reason)),
        BackendAnswer::Response { status, .. } if !(200..300).contains(&status) => {
            Err(AnswerError::Status(status))
        }
        BackendAnswer::Response { body, .. } if body.iter().all(u8::is_ascii_whitespace) => {
            Ok(Map::new())
        }
        BackendAnswer::Response { body, .. } => {
            if body.len() > MAX_ANSWER_BYTES {
                return Err(AnswerError::NotJson);
            }
            match serde_json::from_slice(&body) {
                Ok(Value::Object(object)) => Ok(object),
                _ => Err(AnswerError::NotJson),
            }
        }
    }
}

/// Socket.IO arguments (binary as placeholders) with their attachments put back in as
/// `{"_binary": "<base64>"}`, for a backend that speaks JSON.
pub fn with_binary_inline(args: &Value, attachments: &[Bytes]) -> Value {
    match args {
        Value::Object(map) if map.get(PLACEHOLDER_KEY) == Some(&Value::Bool(true)) => {
            let bytes = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|num| attachments.get(num as usize));
            match bytes {
                Some(bytes) => {
                    json!({ BINARY_KEY: base64::engine::general_purpose::STANDARD.encode(bytes) })
                }
                None => args.clone(),
            }
        }
        Value::Object(map) => {
            Value::Object(crate::sort::collect_map(map.iter().map(|(key, value)| {
                (key.clone(), with_binary_inline(value, attachments))
            })))
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| with_binary_inline(item, attachments))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The reverse of [`with_binary_inline`]: a backend's JSON with `{"_binary": …}` objects turned
/// into Socket.IO placeholders and attachments. `None` when some `_binary` is not valid base64.
pub fn binary_out_of_line(value: &Value) -> Option<(Value, Vec<Bytes>)> {
    fn walk(value: &Value, attachments: &mut Vec<Bytes>) -> Option<Value> {
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key(BINARY_KEY) => {
                let text = map[BINARY_KEY].as_str()?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?;
                attachments.push(Bytes::from(bytes));
                Some(socketio::placeholder(attachments.len() - 1))
            }
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, value) in map {
                    out.insert(key.clone(), walk(value, attachments)?);
                }
                Some(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .map(|item| walk(item, attachments))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            other => Some(other.clone()),
        }
    }
    let mut attachments = Vec::new();
    let value = walk(value, &mut attachments)?;
    Some((value, attachments))
}

/// The handshake request's headers the connect hook is shown; the others never leave the server.
pub const FORWARDED_HEADERS: [&str; 4] = ["cookie", "authorization", "origin", "user-agent"];
/// Longest header value kept for the connect hook, in bytes; a longer one is left out.
pub const MAX_FORWARDED_HEADER_BYTES: usize = 4096;

/// Who opened a session, as the connect hook sees it: the forwarded headers of the handshake
/// request and the client's address. Kept with the session (and its snapshot) only on channels
/// whose connect hook needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Lower-case header name → value, for the names in [`FORWARDED_HEADERS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl ClientInfo {
    /// Keeps the forwarded headers of a request (`(name, value)` pairs, any case) and its
    /// client's address.
    pub fn from_request<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        address: Option<String>,
    ) -> ClientInfo {
        let mut kept = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if FORWARDED_HEADERS.contains(&name.as_str())
                && value.len() <= MAX_FORWARDED_HEADER_BYTES
                && !kept.iter().any(|(existing, _)| *existing == name)
            {
                kept.push((name, value.to_string()));
            }
        }
        ClientInfo {
            headers: kept,
            address,
        }
    }

    /// The headers as a JSON object, for the connect hook's body.
    pub fn headers_json(&self) -> Value {
        Value::Object(crate::sort::collect_map(
            self.headers
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone()))),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn signs_the_timestamp_and_the_body() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently.
        let signed = signature("secret", 1_700_000_000, b"{}");
        assert!(signed.starts_with("v1="));
        assert_eq!(signed.len(), 3 + 64);
        assert_ne!(signed, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(signed, signature("other", 1_700_000_000, b"{}"));
        assert_ne!(signed, signature("secret", 1_700_000_000, b"{ }"));
        let call = call(
            1,
            "abc",
            "http://b/events".into(),
            "secret",
            &json!({}),
            100,
            1_700_000_000_999,
        );
        let header = |name| {
            call.headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(header(TIMESTAMP_HEADER).as_deref(), Some("1700000000"));
        assert_eq!(header(SIGNATURE_HEADER), Some(signed));
        assert_eq!(header(CALL_HEADER).as_deref(), Some("abc"));
    }

    #[test]
    fn answers_that_cannot_be_acted_on_say_why() {
        let response = |status, body: &'static str| BackendAnswer::Response {
            status,
            body: Bytes::from_static(body.as_bytes()),
        };
        assert_eq!(
            answer_object(response(500, "{}")),
            Err(AnswerError::Status(500))
        );
        assert_eq!(
            answer_object(response(200, "nope")),
            Err(AnswerError::NotJson)
        );
        assert_eq!(
            answer_object(response(200, "[1]")),
            Err(AnswerError::NotJson)
        );
        assert_eq!(answer_object(response(204, "")), Ok(Map::new()));
        assert!(matches!(
            answer_object(BackendAnswer::Failed("refused".into())),
            Err(AnswerError::Unreachable(_))
        ));
    }

    #[test]
    fn binary_goes_inline_for_the_backend_and_back() {
        let args = json!(["file", {"name": "a", "data": {"_placeholder": true, "num": 0}}]);
        let inline = with_binary_inline(&args, &[Bytes::from_static(&[1, 2, 3])]);
        assert_eq!(
            inline,
            json!(["file", {"name": "a", "data": {"_binary": "AQID"}}])
        );
        let (back, attachments) = binary_out_of_line(&inline).unwrap();
        assert_eq!(back, args);
        assert_eq!(attachments, vec![Bytes::from_static(&[1, 2, 3])]);
        assert!(binary_out_of_line(&json!([{"_binary": "!!"}])).is_none());
    }
}
