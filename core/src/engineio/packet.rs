//! Engine.IO packets and their WebSocket encoding.
//!
//! A text packet is `<type digit><payload>`; a binary message travels as a raw binary frame with no
//! prefix. Decoding is strict: anything a conforming client would never send is an error, so the
//! engine can close the session instead of guessing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::frame::WireFrame;

/// The payload of a ping/pong that probes a new transport during an upgrade.
const PROBE: &str = "probe";

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Handshake JSON text, sent by the server when a session opens.
    Open(String),
    Close,
    /// `2`, or `2probe` while upgrading to WebSocket.
    Ping {
        probe: bool,
    },
    /// `3`, or `3probe` while upgrading to WebSocket.
    Pong {
        probe: bool,
    },
    /// `4<text>`; the text may be empty.
    Message(String),
    /// A WebSocket binary frame, or a `b<base64>` record in a polling payload.
    BinaryMessage(Bytes),
    Upgrade,
    Noop,
}

/// Why an Engine.IO packet or polling payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type '{0}'")]
    UnknownType(char),
    #[error("{packet} packet must not carry a payload")]
    UnexpectedPayload { packet: &'static str },
    #[error("{packet} packet payload must be empty or \"probe\"")]
    InvalidProbe { packet: &'static str },
    #[error("empty polling payload")]
    EmptyPayload,
    #[error("empty record in polling payload")]
    EmptyRecord,
    #[error("polling payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("binary record is not valid base64")]
    InvalidBase64,
}

impl Packet {
    /// Decodes one WebSocket text frame, or one polling record that is not `b`-prefixed.
    ///
    /// `Open` is accepted here because it is well formed; refusing it from a client is the engine's job.
    pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(DecodeError::Empty)?;
        let payload = chars.as_str();
        match kind {
            '0' => Ok(Packet::Open(payload.to_owned())),
            '1' => no_payload("close", payload).map(|()| Packet::Close),
            '2' => probe("ping", payload).map(|probe| Packet::Ping { probe }),
            '3' => probe("pong", payload).map(|probe| Packet::Pong { probe }),
            '4' => Ok(Packet::Message(payload.to_owned())),
            '5' => no_payload("upgrade", payload).map(|()| Packet::Upgrade),
            '6' => no_payload("noop", payload).map(|()| Packet::Noop),
            other => Err(DecodeError::UnknownType(other)),
        }
    }

    /// Decodes one WebSocket binary frame. Engine.IO v4 binary frames carry no type prefix: they are
    /// always messages.
    pub fn decode_binary(bytes: Bytes) -> Packet {
        Packet::BinaryMessage(bytes)
    }

    /// Encodes the packet as one WebSocket message.
    pub fn to_frame(&self) -> WireFrame {
        match self {
            Packet::Open(json) => prefixed('0', json),
            Packet::Close => WireFrame::static_text("1"),
            Packet::Ping { probe: false } => WireFrame::static_text("2"),
            Packet::Ping { probe: true } => WireFrame::static_text("2probe"),
            Packet::Pong { probe: false } => WireFrame::static_text("3"),
            Packet::Pong { probe: true } => WireFrame::static_text("3probe"),
            Packet::Message(text) => prefixed('4', text),
            // `Bytes` is reference-counted: no copy of the payload.
            Packet::BinaryMessage(bytes) => WireFrame::binary(bytes.clone()),
            Packet::Upgrade => WireFrame::static_text("5"),
            Packet::Noop => WireFrame::static_text("6"),
        }
    }
}

fn no_payload(packet: &'static str, payload: &str) -> Result<(), DecodeError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::UnexpectedPayload { packet })
    }
}

fn probe(packet: &'static str, payload: &str) -> Result<bool, DecodeError> {
    match payload {
        "" => Ok(false),
        PROBE => Ok(true),
        _ => Err(DecodeError::InvalidProbe { packet }),
    }
}

/// A text frame `<type><payload>`, allocated once at its final size.
fn prefixed(kind: char, payload: &str) -> WireFrame {
    let mut text = String::with_capacity(1 + payload.len());
    text.push(kind);
    text.push_str(payload);
    WireFrame::text(text)
}

/// The handshake sent in the OPEN packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub sid: String,
    pub upgrades: Vec<String>,
    /// Milliseconds between server pings.
    pub ping_interval: u64,
    /// Milliseconds the client has to answer a ping.
    pub ping_timeout: u64,
    /// Largest polling body, in bytes, the server accepts.
    pub max_payload: u64,
}

impl Handshake {
    /// The OPEN packet carrying this handshake as JSON.
    pub fn to_packet(&self) -> Packet {
        // Serializing strings and integers cannot fail, so the fallback is never used; it only keeps
        // this function free of panics.
        Packet::Open(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::frame::FrameKind;

    fn text_of(frame: &WireFrame) -> &str {
        frame.as_text().unwrap_or("<binary>")
    }

    #[test]
    fn decodes_every_text_packet_type() {
        let cases = [
            ("0{\"sid\":\"a\"}", Packet::Open("{\"sid\":\"a\"}".into())),
            ("1", Packet::Close),
            ("2", Packet::Ping { probe: false }),
            ("2probe", Packet::Ping { probe: true }),
            ("3", Packet::Pong { probe: false }),
            ("3probe", Packet::Pong { probe: true }),
            ("4hello", Packet::Message("hello".into())),
            ("4", Packet::Message(String::new())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
        ];
        for (text, expected) in cases {
            assert_eq!(Packet::decode_text(text), Ok(expected), "decoding {text:?}");
        }
    }

    #[test]
    fn message_keeps_its_text_verbatim() {
        let text = "42[\"héllo\",\"\u{1e}\",\"2probe\"]";
        assert_eq!(
            Packet::decode_text(text),
            Ok(Packet::Message(text[1..].to_owned()))
        );
    }

    #[test]
    fn rejects_empty_text() {
        assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
    }

    #[test]
    fn rejects_unknown_types() {
        for (text, kind) in [
            ("7", '7'),
            ("9x", '9'),
            ("bAQID", 'b'),
            ("é4", 'é'),
            (" 4", ' '),
        ] {
            assert_eq!(
                Packet::decode_text(text),
                Err(DecodeError::UnknownType(kind))
            );
        }
        assert_eq!(
            DecodeError::UnknownType('9').to_string(),
            "unknown packet type '9'"
        );
    }

    #[test]
    fn rejects_payload_on_bare_packets() {
        assert_eq!(
            Packet::decode_text("1x"),
            Err(DecodeError::UnexpectedPayload { packet: "close" })
        );
        assert_eq!(
            Packet::decode_text("5probe"),
            Err(DecodeError::UnexpectedPayload { packet: "upgrade" })
        );
        assert_eq!(
            Packet::decode_text("6 "),
            Err(DecodeError::UnexpectedPayload { packet: "noop" })
        );
        assert_eq!(
            DecodeError::UnexpectedPayload { packet: "close" }.to_string(),
            "close packet must not carry a payload"
        );
    }

    #[test]
    fn ping_and_pong_only_carry_probe() {
        for text in ["2prob", "2probe ", "2PROBE", "2x"] {
            assert_eq!(
                Packet::decode_text(text),
                Err(DecodeError::InvalidProbe { packet: "ping" }),
                "decoding {text:?}"
            );
        }
        assert_eq!(
            Packet::decode_text("3probeprobe"),
            Err(DecodeError::InvalidProbe { packet: "pong" })
        );
    }

    #[test]
    fn open_is_accepted_syntactically() {
        assert_eq!(Packet::decode_text("0"), Ok(Packet::Open(String::new())));
    }

    #[test]
    fn binary_frames_are_messages() {
        let bytes = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(
            Packet::decode_binary(bytes.clone()),
            Packet::BinaryMessage(bytes)
        );
        assert_eq!(
            Packet::decode_binary(Bytes::new()),
            Packet::BinaryMessage(Bytes::new())
        );
    }

    #[test]
    fn encodes_text_frames() {
        let cases = [
            (Packet::Open("{}".into()), "0{}"),
            (Packet::Close, "1"),
            (Packet::Ping { probe: false }, "2"),
            (Packet::Ping { probe: true }, "2probe"),
            (Packet::Pong { probe: false }, "3"),
            (Packet::Pong { probe: true }, "3probe"),
            (Packet::Message("hello".into()), "4hello"),
            (Packet::Message(String::new()), "4"),
            (Packet::Upgrade, "5"),
            (Packet::Noop, "6"),
        ];
        for (packet, expected) in cases {
            let frame = packet.to_frame();
            assert_eq!(frame.kind(), FrameKind::Text);
            assert_eq!(text_of(&frame), expected);
            assert_eq!(Packet::decode_text(expected), Ok(packet));
        }
    }

    #[test]
    fn encodes_binary_message_as_raw_bytes() {
        let frame = Packet::BinaryMessage(Bytes::from_static(&[1, 2, 3, 4])).to_frame();
        assert_eq!(frame.kind(), FrameKind::Binary);
        assert_eq!(frame.bytes().as_ref(), &[1, 2, 3, 4]);
    }

    #[test]
    fn handshake_json_uses_protocol_keys_in_order() {
        let handshake = Handshake {
            sid: "lv_VI97HAXpY6yYWAAAC".into(),
            upgrades: vec!["websocket".into()],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1_000_000,
        };
        let packet = handshake.to_packet();
        assert_eq!(
            packet,
            Packet::Open(
                r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
                    .into()
            )
        );
        let frame = packet.to_frame();
        assert!(text_of(&frame).starts_with("0{\"sid\":"));
        let Ok(Packet::Open(json)) = Packet::decode_text(text_of(&frame)) else {
            panic!("the OPEN frame must decode");
        };
        let parsed: Result<Handshake, _> = serde_json::from_str(&json);
        assert_eq!(parsed.ok(), Some(handshake));
    }
}
