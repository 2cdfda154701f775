//! The Worker's calls to a channel's Durable Object, defined once for both ends.
//!
//! The Worker sends a [`Call`] as the JSON body of a POST to [`path`] on the object; the object
//! answers 200 with the call's JSON result, or with the API error a native server would give, which
//! the Worker passes on unchanged. Clients never reach these paths: the Worker forwards only
//! Engine.IO requests to objects.

use serde::{Deserialize, Serialize};
use switchboard_core::api::{ChannelEmit, HistoryQuery};

/// Path prefix of the internal calls.
pub const PREFIX: &str = "/__internal/";

/// The path of a call to `channel`'s object (the channel is there for logs; the body says what).
pub fn path(channel: &str) -> String {
    format!("{PREFIX}{channel}")
}

/// What the Worker asks of a channel's object: `{"call": "<name>", ...its fields}`. Read through
/// `CallFields`, which spares the wasm serde's buffered `Content` machinery that an internally
/// tagged enum's `Deserialize` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", try_from = "CallFields")]
pub enum Call {
    /// A server emit; answers a [`switchboard_core::api::ChannelEmitResult`].
    Emit { emit: ChannelEmit },
    /// Answers the channel's [`switchboard_core::channel::Occupancy`].
    Occupancy,
    /// Answers `GET /channels/<channel>/history` as a native server would.
    History { query: HistoryQuery },
    /// Answers `GET /channels/<channel>/presence` as a native server would.
    Presence { query: HistoryQuery },
    /// Test-only: forget the channel's memory and rebuild it from the sockets' attachments, as
    /// after hibernation; answers `{"rebuilt_sessions": n}`.
    Rebuild,
    /// Test-only: the object's wake-ups by kind; answers them as JSON.
    Stats,
}

/// A [`Call`] as sent; the Worker writes the `call` name first, and fields that the named call
/// does not have are not looked at.
#[derive(Deserialize)]
struct CallFields {
    call: CallName,
    emit: Option<ChannelEmit>,
    query: Option<HistoryQuery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CallName {
    Emit,
    Occupancy,
    History,
    Presence,
    Rebuild,
    Stats,
}

impl TryFrom<CallFields> for Call {
    type Error = &'static str;

    fn try_from(fields: CallFields) -> Result<Self, Self::Error> {
        const NO_QUERY: &str = "missing field `query`";
        let CallFields { call, emit, query } = fields;
        Ok(match call {
            CallName::Emit => Call::Emit {
                emit: emit.ok_or("missing field `emit`")?,
            },
            CallName::Occupancy => Call::Occupancy,
            CallName::History => Call::History {
                query: query.ok_or(NO_QUERY)?,
            },
            CallName::Presence => Call::Presence {
                query: query.ok_or(NO_QUERY)?,
            },
            CallName::Rebuild => Call::Rebuild,
            CallName::Stats => Call::Stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_survive_the_trip() {
        for call in [Call::Occupancy, Call::Rebuild, Call::Stats] {
            let text = serde_json::to_string(&call).unwrap();
            assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call);
        }
        let emit = Call::Emit {
            emit: ChannelEmit {
                channel: "chats/1".into(),
                namespace: "/".into(),
                args: serde_json::json!(["m", 1]),
                rooms: vec!["r".into()],
                except: Vec::new(),
                ack_timeout: Some(100),
            },
        };
        let text = serde_json::to_string(&emit).unwrap();
        assert!(text.starts_with(r#"{"call":"emit""#), "{text}");
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), emit);
        let query = HistoryQuery {
            after: Some("1.2".into()),
            limit: 10,
        };
        for call in [
            Call::History {
                query: query.clone(),
            },
            Call::Presence { query },
        ] {
            let text = serde_json::to_string(&call).unwrap();
            assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call);
        }
        for bad in [
            r#"{"call":"emit"}"#,
            r#"{"call":"history"}"#,
            r#"{"call":"nothing"}"#,
            r#"{}"#,
        ] {
            assert!(serde_json::from_str::<Call>(bad).is_err(), "{bad}");
        }
    }
}
