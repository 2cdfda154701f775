//! Private channels: the JWT a client presents when it connects.
//!
//! The application backend signs a token (HS256, with the `JWT_SECRET` it shares with Switchboard) and
//! the client passes it in the Socket.IO CONNECT payload: `io(url, { path, auth: { token } })`.
//!
//! ```json
//! { "sub": "u1", "exp": 1767225600, "channels": ["chats/42", "users/:user_id/notifications"],
//!   "rooms": ["moderators"] }
//! ```
//!
//! - `exp` (seconds since the epoch) is required; `nbf` is honoured when present.
//! - `channels` lists the channels the token opens: exact names, or patterns whose `:params` match any
//!   segment. When the channel's configuration binds a parameter to a claim (`bind = { user_id =
//!   "sub" }`), the channel's value of that parameter must equal the claim: the token of `u1` opens
//!   `users/u1/notifications` and no other user's.
//! - `rooms` (optional) lists rooms the socket may join with `switchboard:join`, even where the
//!   channel does not let every client choose its rooms.
//!
//! Only HS256 is accepted: a token whose header names another algorithm (`none`, `RS256`, …) is
//! refused before its signature is looked at.

use hmac::{Hmac, Mac};
use jwt::{AlgorithmType, Header, Token, VerifyWithKey};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::Value;
use sha2::Sha256;

use crate::config::{ChannelPattern, ChannelPolicy};

/// Name of the secret that signs private channels' tokens.
pub const JWT_SECRET_VAR: &str = "JWT_SECRET";

/// What a valid token grants the socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// The token's subject, if any.
    pub subject: Option<String>,
    /// Rooms the socket may join on its own.
    pub rooms: Vec<String>,
    /// When the token expires (ms since the epoch): the socket is disconnected then, unless the
    /// client sends a fresh token first (`switchboard:refresh`).
    pub expires_at_ms: Option<u64>,
    /// The token's `info` claim (a name, an avatar): what presence shows of the user.
    pub info: Option<Value>,
}

/// A token's claims: the four this module reads by name, and the others (`sub`, `info`, the claims
/// a channel binds) by key.
#[derive(Debug)]
struct Claims {
    exp: Option<Value>,
    nbf: Option<Value>,
    channels: Option<Value>,
    rooms: Option<Value>,
    other: serde_json::Map<String, Value>,
}

/// What `#[derive(Deserialize)]` with `#[serde(flatten)] other` accepts (a JSON object, a named
/// claim at most once), without serde's buffered `Content` machinery, which only this type and
/// two others needed in the edge wasm.
impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;
        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = Claims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("struct Claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                const NAMED: [&str; 4] = ["exp", "nbf", "channels", "rooms"];
                let mut named: [Option<Option<Value>>; 4] = Default::default();
                let mut other = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    match NAMED.iter().position(|name| *name == key) {
                        Some(slot) if named[slot].is_some() => {
                            return Err(A::Error::duplicate_field(NAMED[slot]));
                        }
                        Some(slot) => named[slot] = Some(map.next_value()?),
                        None => {
                            let value = map.next_value()?;
                            other.insert(key, value);
                        }
                    }
                }
                let [exp, nbf, channels, rooms] = named.map(Option::flatten);
                Ok(Claims {
                    exp,
                    nbf,
                    channels,
                    rooms,
                    other,
                })
            }
        }
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// Checks the CONNECT `auth` payload of a socket joining `channel` (whose params were bound by the
/// matching pattern). `now_ms` is the host's clock. The error is the reason given to the client.
pub fn verify_connect(
    auth: Option<&Value>,
    policy: &ChannelPolicy,
    channel: &str,
    channel_params: &std::collections::BTreeMap<String, String>,
    now_ms: u64,
) -> Result<Grant, String> {
    let Some(secret) = policy.jwt_secret.as_ref() else {
        return Err("this channel is private but the server has no JWT_SECRET configured".into());
    };
    let token = match auth.and_then(|auth| auth.get("token")) {
        Some(Value::String(token)) if !token.is_empty() => token,
        Some(_) => return Err("auth.token must be a string".into()),
        None => {
            return Err("this channel is private: connect with auth: { token }".into());
        }
    };
    let key = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| "the server's JWT_SECRET cannot be used as an HMAC key".to_string())?;
    let verified: Token<Header, Claims, _> = token.as_str().verify_with_key(&key).map_err(
        |err| match err {
            jwt::Error::AlgorithmMismatch(presented, _) => {
                let presented = format!("{presented:?}").to_ascii_uppercase();
                format!(
                    "token algorithm {presented} is not accepted: tokens must be signed with HS256"
                )
            }
            jwt::Error::InvalidSignature | jwt::Error::RustCryptoMac(_) => {
                "token signature is invalid".to_string()
            }
            jwt::Error::NoClaimsComponent
            | jwt::Error::NoHeaderComponent
            | jwt::Error::NoSignatureComponent
            | jwt::Error::TooManyComponents => {
                "token is not a JWT (header.claims.signature)".into()
            }
            _ => "token is malformed".to_string(),
        },
    )?;
    if verified.header().algorithm != AlgorithmType::Hs256 {
        return Err("tokens must be signed with HS256".into());
    }
    let claims = verified.claims();
    let now_s = now_ms / 1000;
    let exp = match claims.exp.as_ref().and_then(Value::as_u64) {
        None => return Err("token has no valid exp claim".into()),
        Some(exp) if exp <= now_s => return Err("token expired".into()),
        Some(exp) if exp - now_s > policy.max_token_lifetime_s => {
            return Err(format!(
                "token lives too long: its exp may be at most {} s away",
                policy.max_token_lifetime_s
            ));
        }
        Some(exp) => exp,
    };
    if let Some(nbf) = &claims.nbf {
        match nbf.as_u64() {
            Some(nbf) if nbf <= now_s => {}
            Some(_) => return Err("token is not valid yet (nbf)".into()),
            None => return Err("token nbf claim is not a number".into()),
        }
    }
    let Some(Value::Array(channels)) = &claims.channels else {
        return Err("token has no channels claim (an array of channel names or patterns)".into());
    };
    let opens_channel = channels.iter().any(|entry| {
        entry
            .as_str()
            .and_then(|text| ChannelPattern::parse(text).ok())
            .is_some_and(|pattern| pattern.matches(channel))
    });
    if !opens_channel {
        return Err(format!("token does not grant channel {channel:?}"));
    }
    for (param, claim) in &policy.bind {
        let expected = channel_params.get(param);
        let presented = match claims.other.get(claim) {
            Some(Value::String(value)) => Some(value.clone()),
            Some(Value::Number(value)) => Some(value.to_string()),
            _ => None,
        };
        if expected.is_none() || presented.as_ref() != expected {
            return Err(format!(
                "token claim {claim:?} does not match the channel's {param:?}"
            ));
        }
    }
    let rooms = match &claims.rooms {
        None => Vec::new(),
        Some(Value::Array(rooms)) => rooms
            .iter()
            .filter_map(|room| room.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Err("token rooms claim must be an array of room names".into()),
    };
    let subject = claims
        .other
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Grant {
        subject,
        rooms,
        expires_at_ms: Some(exp.saturating_mul(1000)),
        info: claims
            .other
            .get("info")
            .filter(|info| !info.is_null())
            .cloned(),
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::collections::BTreeMap;

    use jwt::SignWithKey;
    use serde_json::json;

    use super::*;
    use crate::config::{AuthMode, Secret};

    const SECRET: &str = "test-jwt-secret";
    const NOW_MS: u64 = 1_800_000_000_000;

    fn policy(bind: &[(&str, &str)]) -> ChannelPolicy {
        ChannelPolicy {
            auth: AuthMode::Private,
            bind: bind
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            jwt_secret: Some(Secret::new(SECRET)),
            ..ChannelPolicy::default()
        }
    }

    fn sign(claims: Value, secret: &str) -> String {
        let key = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        claims.sign_with_key(&key).unwrap()
    }

    fn check(
        token: Value,
        channel: &str,
        params: &[(&str, &str)],
        policy: &ChannelPolicy,
    ) -> Result<Grant, String> {
        let params: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        verify_connect(
            Some(&json!({ "token": token })),
            policy,
            channel,
            &params,
            NOW_MS,
        )
    }

    fn exp() -> u64 {
        NOW_MS / 1000 + 60
    }

    #[test]
    fn a_valid_token_opens_its_channels() {
        let token = sign(
            json!({"sub": "u1", "exp": exp(), "channels": ["chats/42"], "rooms": ["mods"]}),
            SECRET,
        );
        let grant = check(json!(token), "chats/42", &[("id", "42")], &policy(&[])).unwrap();
        assert_eq!(grant.subject.as_deref(), Some("u1"));
        assert_eq!(grant.rooms, vec!["mods"]);
        let err = check(json!(token), "chats/43", &[("id", "43")], &policy(&[])).unwrap_err();
        assert!(err.contains("does not grant"), "{err}");
    }

    #[test]
    fn patterns_with_bound_parameters_admit_only_the_subject() {
        let policy = policy(&[("user_id", "sub")]);
        let token = sign(
            json!({"sub": "u1", "exp": exp(), "channels": ["users/:user_id/notifications"]}),
            SECRET,
        );
        assert!(
            check(
                json!(token),
                "users/u1/notifications",
                &[("user_id", "u1")],
                &policy
            )
            .is_ok()
        );
        let err = check(
            json!(token),
            "users/u2/notifications",
            &[("user_id", "u2")],
            &policy,
        )
        .unwrap_err();
        assert!(err.contains("\"sub\""), "{err}");
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let p = policy(&[]);
        let good = json!({"sub": "u1", "exp": exp(), "channels": ["chats/1"]});
        let reasons = [
            (
                verify_connect(None, &p, "chats/1", &BTreeMap::new(), NOW_MS),
                "private",
            ),
            (check(json!(5), "chats/1", &[], &p), "string"),
            (check(json!("garbage"), "chats/1", &[], &p), "JWT"),
            (
                check(
                    json!(sign(good.clone(), "other-secret")),
                    "chats/1",
                    &[],
                    &p,
                ),
                "signature",
            ),
            (
                check(
                    json!(sign(
                        json!({"exp": NOW_MS / 1000 - 1, "channels": ["chats/1"]}),
                        SECRET
                    )),
                    "chats/1",
                    &[],
                    &p,
                ),
                "expired",
            ),
            (
                check(
                    json!(sign(json!({"channels": ["chats/1"]}), SECRET)),
                    "chats/1",
                    &[],
                    &p,
                ),
                "exp",
            ),
            (
                check(
                    json!(sign(
                        json!({"exp": exp(), "nbf": exp(), "channels": ["chats/1"]}),
                        SECRET
                    )),
                    "chats/1",
                    &[],
                    &p,
                ),
                "not valid yet",
            ),
            (
                check(
                    json!(sign(json!({"exp": exp()}), SECRET)),
                    "chats/1",
                    &[],
                    &p,
                ),
                "channels",
            ),
        ];
        for (result, expected) in reasons {
            let err = result.unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused() {
        use base64::Engine as _;
        let b64 = |value: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let claims = b64(json!({"exp": exp(), "channels": ["chats/1"]}));
        // alg "none" with an empty signature.
        let none = format!("{}.{claims}.", b64(json!({"alg": "none", "typ": "JWT"})));
        // An HS512 or RS256 header over a valid HS256 signature of the same bytes.
        for alg in ["none", "HS512", "RS256"] {
            let header = b64(json!({"alg": alg, "typ": "JWT"}));
            let key = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            let mut mac = key.clone();
            mac.update(format!("{header}.{claims}").as_bytes());
            let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(mac.finalize().into_bytes());
            let token = format!("{header}.{claims}.{signature}");
            let err = check(json!(token), "chats/1", &[], &policy(&[])).unwrap_err();
            assert!(
                err.contains("HS256") || err.contains("malformed"),
                "{alg}: {err}"
            );
        }
        assert!(check(json!(none), "chats/1", &[], &policy(&[])).is_err());
    }

    #[test]
    fn a_missing_secret_refuses_everyone() {
        let mut p = policy(&[]);
        p.jwt_secret = None;
        let token = sign(json!({"exp": exp(), "channels": ["chats/1"]}), SECRET);
        assert!(
            check(json!(token), "chats/1", &[], &p)
                .unwrap_err()
                .contains("JWT_SECRET")
        );
    }
}
