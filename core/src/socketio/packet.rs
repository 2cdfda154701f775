//! Socket.IO packets: the text format, its strict decoder, and binary attachment reassembly.
//!
//! Wire format (the Engine.IO `4` prefix is not part of it):
//!
//! ```text
//! <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
//! ```
//!
//! `52-/admin,7["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]` is a binary
//! event on `/admin` asking for ack 7, followed by two binary attachments. The decoder accepts what the
//! reference JavaScript parser accepts, minus the forms no conforming client produces (an ack id on
//! CONNECT, an EVENT or ACK without payload, a numeric event name, placeholders that do not match
//! the announced attachments): a peer that sends those is broken and the engine should drop it.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};
use thiserror::Error;

use crate::frame::WireFrame;

/// Most attachments one binary packet may announce. The reference parser allows 10 by default; this is
/// looser so that legitimate large uploads pass, yet bounds what a peer can make us wait for.
pub const MAX_ATTACHMENTS: usize = 1000;

/// Largest ack id: JavaScript peers hold ids as doubles, which are exact up to 2^53 - 1.
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// Event names the JavaScript libraries reserve for themselves.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

const EVENT_PAYLOAD: &str = "a JSON array whose first element is the event name";

/// The type of a Socket.IO packet; on the wire, the digits 0 to 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketKind {
    /// The wire digit, 0 to 6.
    pub fn digit(self) -> u8 {
        match self {
            PacketKind::Connect => 0,
            PacketKind::Disconnect => 1,
            PacketKind::Event => 2,
            PacketKind::Ack => 3,
            PacketKind::ConnectError => 4,
            PacketKind::BinaryEvent => 5,
            PacketKind::BinaryAck => 6,
        }
    }

    /// The kind for a wire digit, `None` outside 0 to 6.
    pub fn from_digit(digit: u8) -> Option<PacketKind> {
        Some(match digit {
            0 => PacketKind::Connect,
            1 => PacketKind::Disconnect,
            2 => PacketKind::Event,
            3 => PacketKind::Ack,
            4 => PacketKind::ConnectError,
            5 => PacketKind::BinaryEvent,
            6 => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether binary attachments follow the packet (and its header announces how many).
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }

    fn from_char(c: char) -> Option<PacketKind> {
        let digit = c.to_digit(10)?;
        PacketKind::from_digit(u8::try_from(digit).ok()?)
    }
}

/// The protocol's name for the kind, as used in error messages.
impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketKind::Connect => "CONNECT",
            PacketKind::Disconnect => "DISCONNECT",
            PacketKind::Event => "EVENT",
            PacketKind::Ack => "ACK",
            PacketKind::ConnectError => "CONNECT_ERROR",
            PacketKind::BinaryEvent => "BINARY_EVENT",
            PacketKind::BinaryAck => "BINARY_ACK",
        })
    }
}

/// Serialized as its wire digit, so stored state reads like the protocol.
impl Serialize for PacketKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.digit())
    }
}

impl<'de> Deserialize<'de> for PacketKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let digit = u8::deserialize(deserializer)?;
        PacketKind::from_digit(digit)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown packet type {digit}")))
    }
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packet {
    pub kind: PacketKind,
    /// `"/"` when the wire omits it. Must start with `/` and must not contain `,`.
    pub namespace: String,
    /// Ack id: on an event, the sender wants an ACK with this id back.
    pub id: Option<u64>,
    /// The JSON payload. Binary packets keep their `{"_placeholder":true,"num":N}` objects.
    pub data: Option<Value>,
    /// Attachments announced by a binary packet (`<n>-`), 0 for the other kinds.
    pub attachments: usize,
}

/// Why a Socket.IO packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SioDecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type '{0}'")]
    UnknownType(char),
    #[error("invalid attachment count: a binary packet starts with \"<type><count>-\"")]
    InvalidAttachments,
    #[error("too many attachments (at most {MAX_ATTACHMENTS})")]
    TooManyAttachments,
    #[error("{0} packet must not announce attachments")]
    UnexpectedAttachments(PacketKind),
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("{0} packet must not carry an ack id")]
    UnexpectedAckId(PacketKind),
    #[error("{0} packet must carry an ack id")]
    MissingAckId(PacketKind),
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0} packet must carry a payload")]
    MissingPayload(PacketKind),
    #[error("{0} packet must not carry a payload")]
    UnexpectedPayload(PacketKind),
    #[error("{kind} payload must be {expected}")]
    InvalidPayload {
        kind: PacketKind,
        expected: &'static str,
    },
    #[error("\"{0}\" is a reserved event name")]
    ReservedEvent(String),
    #[error("attachment placeholder without a valid \"num\"")]
    InvalidPlaceholder,
    #[error("attachment placeholder {num} is out of range ({attachments} announced)")]
    PlaceholderOutOfRange { num: u64, attachments: usize },
    #[error("attachment placeholder {0} appears more than once")]
    DuplicatePlaceholder(u64),
    #[error("no placeholder refers to attachment {0}")]
    MissingPlaceholder(usize),
    #[error("received more binary attachments than announced")]
    UnexpectedAttachment,
}

impl Packet {
    /// Decodes the text of an Engine.IO message (without its leading `4`).
    pub fn decode(text: &str) -> Result<Packet, SioDecodeError> {
        let mut chars = text.chars();
        let first = chars.next().ok_or(SioDecodeError::Empty)?;
        let kind = PacketKind::from_char(first).ok_or(SioDecodeError::UnknownType(first))?;
        let mut rest = chars.as_str();

        let mut attachments = 0;
        if kind.is_binary() {
            (attachments, rest) = split_attachments(rest)?;
        }

        let mut namespace = "/";
        if rest.starts_with('/') {
            (namespace, rest) = rest.split_once(',').unwrap_or((rest, ""));
        }

        let (digits, rest) = split_digits(rest);
        let id = match digits {
            "" => None,
            digits => Some(parse_ack_id(digits)?),
        };
        if id.is_some() && rest.starts_with('-') && !kind.is_binary() {
            // "21-[...]": an attachment count on a kind that has none.
            return Err(SioDecodeError::UnexpectedAttachments(kind));
        }

        let data = match rest {
            "" => None,
            json => Some(
                serde_json::from_slice::<Value>(json.as_bytes())
                    .map_err(|error| SioDecodeError::InvalidJson(error.to_string()))?,
            ),
        };

        check_ack_id(kind, id)?;
        check_data(kind, data.as_ref())?;
        if let Some(data) = &data
            && kind.is_binary()
        {
            validate_placeholders(data, attachments)?;
        }

        Ok(Packet {
            kind,
            namespace: namespace.to_owned(),
            id,
            data,
            attachments,
        })
    }

    /// Encodes the packet (without the Engine.IO `4`), in one allocation.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        into_text(out)
    }

    /// The Engine.IO message frame `4<packet>`, built in one allocation.
    pub fn to_frame(&self) -> WireFrame {
        let mut out = Vec::with_capacity(self.encoded_len().saturating_add(1));
        out.push(b'4');
        self.write_to(&mut out);
        WireFrame::text(into_text(out))
    }

    /// CONNECT accepted: `{"sid": socket_id}`.
    pub fn connect_ok(namespace: &str, socket_id: &str) -> Packet {
        Packet::new(
            PacketKind::Connect,
            namespace,
            Some(object("sid", socket_id)),
        )
    }

    /// CONNECT accepted on a channel with connection-state recovery: `{"sid": socket_id, "pid":
    /// private_id}`. The private id is what the client shows to recover this socket later.
    pub fn connect_ok_recoverable(namespace: &str, socket_id: &str, private_id: &str) -> Packet {
        let mut map = Map::with_capacity(2);
        map.insert("sid".to_owned(), Value::String(socket_id.to_owned()));
        map.insert("pid".to_owned(), Value::String(private_id.to_owned()));
        Packet::new(PacketKind::Connect, namespace, Some(Value::Object(map)))
    }

    /// CONNECT refused: `{"message": message}`.
    pub fn connect_error(namespace: &str, message: &str) -> Packet {
        Packet::new(
            PacketKind::ConnectError,
            namespace,
            Some(object("message", message)),
        )
    }

    /// CONNECT refused with data for the client, as socket.io's middleware errors carry it:
    /// `{"message": message, "data": data}`.
    pub fn connect_error_with_data(namespace: &str, message: &str, data: Option<Value>) -> Packet {
        let mut payload = Map::with_capacity(2);
        payload.insert("message".into(), Value::String(message.to_string()));
        if let Some(data) = data {
            payload.insert("data".into(), data);
        }
        Packet::new(
            PacketKind::ConnectError,
            namespace,
            Some(Value::Object(payload)),
        )
    }

    pub fn disconnect(namespace: &str) -> Packet {
        Packet::new(PacketKind::Disconnect, namespace, None)
    }

    /// An event; `args` is the whole array, event name first. With attachments it is a BINARY_EVENT
    /// and `args` must hold one placeholder per attachment.
    pub fn event(namespace: &str, args: Value, id: Option<u64>, attachments: usize) -> Packet {
        let kind = if attachments > 0 {
            PacketKind::BinaryEvent
        } else {
            PacketKind::Event
        };
        Packet {
            id,
            attachments,
            ..Packet::new(kind, namespace, Some(args))
        }
    }

    /// The answer to event `id`; `args` is an array. With attachments it is a BINARY_ACK.
    pub fn ack(namespace: &str, args: Value, id: u64, attachments: usize) -> Packet {
        let kind = if attachments > 0 {
            PacketKind::BinaryAck
        } else {
            PacketKind::Ack
        };
        Packet {
            id: Some(id),
            attachments,
            ..Packet::new(kind, namespace, Some(args))
        }
    }

    /// The name of an event: the first element of its array.
    pub fn event_name(&self) -> Option<&str> {
        match (self.kind, &self.data) {
            (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(args))) => {
                args.first()?.as_str()
            }
            _ => None,
        }
    }

    fn new(kind: PacketKind, namespace: &str, data: Option<Value>) -> Packet {
        Packet {
            kind,
            namespace: namespace.to_owned(),
            id: None,
            data,
            attachments: 0,
        }
    }

    fn has_default_namespace(&self) -> bool {
        self.namespace.is_empty() || self.namespace == "/"
    }

    /// Writes the encoding as bytes: `serde_json` writes to a byte buffer about twice as fast as
    /// through `fmt::Write`.
    fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.kind.digit() + b'0');
        // Writing to a `Vec` cannot fail, hence the ignored results. Integers go through `serde_json`
        // too: it formats them without the `fmt` machinery.
        if self.kind.is_binary() {
            let _ = serde_json::to_writer(&mut *out, &self.attachments);
            out.push(b'-');
        }
        if !self.has_default_namespace() {
            out.extend_from_slice(self.namespace.as_bytes());
            out.push(b',');
        }
        if let Some(id) = self.id {
            let _ = serde_json::to_writer(&mut *out, &id);
        }
        if let Some(data) = &self.data {
            let _ = serde_json::to_writer(&mut *out, data);
        }
    }

    /// Length of the encoding, exact except for floats, whose length is bounded from above; so the
    /// buffer is allocated once and never grows.
    fn encoded_len(&self) -> usize {
        let mut len = 1;
        if self.kind.is_binary() {
            len += decimal_len(self.attachments as u64) + 1;
        }
        if !self.has_default_namespace() {
            len += self.namespace.len() + 1;
        }
        if let Some(id) = self.id {
            len += decimal_len(id);
        }
        if let Some(data) = &self.data {
            len = len.saturating_add(json_len(data));
        }
        len
    }
}

/// Collects the binary attachments that follow a BINARY_EVENT or BINARY_ACK header.
///
/// A packet announcing 0 attachments is already complete: handle it directly instead of collecting.
/// Once [`push`](Self::push) has returned the finished packet this collector is spent; drop it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialBinaryPacket {
    packet: Packet,
    received: Vec<Bytes>,
}

impl PartialBinaryPacket {
    pub fn new(packet: Packet) -> Self {
        // The cap keeps a hand-built packet with an absurd count from reserving memory up front.
        let received = Vec::with_capacity(packet.attachments.min(MAX_ATTACHMENTS));
        Self { packet, received }
    }

    /// Adds one attachment; returns the packet and its attachments, in order, once all the
    /// announced attachments have arrived.
    pub fn push(
        &mut self,
        attachment: Bytes,
    ) -> Result<Option<(Packet, Vec<Bytes>)>, SioDecodeError> {
        if self.received.len() >= self.packet.attachments {
            return Err(SioDecodeError::UnexpectedAttachment);
        }
        self.received.push(attachment);
        if self.received.len() < self.packet.attachments {
            return Ok(None);
        }
        // Move the parts out instead of cloning; what stays behind announces no attachments, so a
        // further push is refused.
        let spent = Packet::new(self.packet.kind, "", None);
        let packet = std::mem::replace(&mut self.packet, spent);
        Ok(Some((packet, std::mem::take(&mut self.received))))
    }

    /// The header packet, placeholders included.
    pub fn packet(&self) -> &Packet {
        &self.packet
    }

    /// The attachments received so far.
    pub fn received(&self) -> &[Bytes] {
        &self.received
    }
}

/// Checks that every placeholder in `data` has a `num` below `attachments` and that each index
/// `0..attachments` appears exactly once.
pub fn validate_placeholders(data: &Value, attachments: usize) -> Result<(), SioDecodeError> {
    if attachments > MAX_ATTACHMENTS {
        return Err(SioDecodeError::TooManyAttachments);
    }
    let mut seen = vec![false; attachments];
    // An explicit stack, so that a deeply nested value built in code cannot overflow the call stack.
    let mut pending = vec![data];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
                let num = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .ok_or(SioDecodeError::InvalidPlaceholder)?;
                let slot = usize::try_from(num)
                    .ok()
                    .and_then(|index| seen.get_mut(index))
                    .ok_or(SioDecodeError::PlaceholderOutOfRange { num, attachments })?;
                if *slot {
                    return Err(SioDecodeError::DuplicatePlaceholder(num));
                }
                *slot = true;
            }
            Value::Object(map) => pending.extend(map.values()),
            _ => {}
        }
    }
    match seen.iter().position(|found| !found) {
        Some(index) => Err(SioDecodeError::MissingPlaceholder(index)),
        None => Ok(()),
    }
}

/// The key that marks a binary placeholder.
pub const PLACEHOLDER_KEY: &str = "_placeholder";

/// The JSON that stands for attachment `num`: `{"_placeholder":true,"num":num}`.
pub fn placeholder(num: usize) -> Value {
    let mut map = Map::with_capacity(2);
    map.insert("_placeholder".to_owned(), Value::Bool(true));
    map.insert("num".to_owned(), Value::from(num));
    Value::Object(map)
}

/// Splits `"<count>-rest"` into the count and the rest.
fn split_attachments(text: &str) -> Result<(usize, &str), SioDecodeError> {
    let (digits, rest) = split_digits(text);
    let rest = rest
        .strip_prefix('-')
        .filter(|_| !digits.is_empty())
        .ok_or(SioDecodeError::InvalidAttachments)?;
    // Only digits remain, so a parse failure is an overflow: too many as well.
    let count = digits
        .parse::<usize>()
        .ok()
        .filter(|count| *count <= MAX_ATTACHMENTS)
        .ok_or(SioDecodeError::TooManyAttachments)?;
    Ok((count, rest))
}

/// Splits off the leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .bytes()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(text.len());
    // `end` follows ASCII digits, so it is a char boundary and the split cannot fail.
    text.split_at_checked(end).unwrap_or((text, ""))
}

fn parse_ack_id(digits: &str) -> Result<u64, SioDecodeError> {
    digits
        .parse::<u64>()
        .ok()
        .filter(|id| *id <= MAX_ACK_ID)
        .ok_or(SioDecodeError::InvalidAckId)
}

fn check_ack_id(kind: PacketKind, id: Option<u64>) -> Result<(), SioDecodeError> {
    match (kind, id) {
        (PacketKind::Connect | PacketKind::Disconnect | PacketKind::ConnectError, Some(_)) => {
            Err(SioDecodeError::UnexpectedAckId(kind))
        }
        (PacketKind::Ack | PacketKind::BinaryAck, None) => Err(SioDecodeError::MissingAckId(kind)),
        _ => Ok(()),
    }
}

fn check_data(kind: PacketKind, data: Option<&Value>) -> Result<(), SioDecodeError> {
    let invalid = |expected| Err(SioDecodeError::InvalidPayload { kind, expected });
    match (kind, data) {
        (PacketKind::Connect, None | Some(Value::Object(_))) => Ok(()),
        (PacketKind::Connect, Some(_)) => invalid("a JSON object"),
        (PacketKind::Disconnect, None) => Ok(()),
        (PacketKind::Disconnect, Some(_)) => Err(SioDecodeError::UnexpectedPayload(kind)),
        (_, None) => Err(SioDecodeError::MissingPayload(kind)),
        (PacketKind::ConnectError, Some(Value::String(_) | Value::Object(_))) => Ok(()),
        (PacketKind::ConnectError, Some(_)) => invalid("a JSON string or object"),
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(args))) => {
            match args.first() {
                Some(Value::String(name)) if RESERVED_EVENTS.contains(&name.as_str()) => {
                    Err(SioDecodeError::ReservedEvent(name.clone()))
                }
                Some(Value::String(_)) => Ok(()),
                _ => invalid(EVENT_PAYLOAD),
            }
        }
        (PacketKind::Event | PacketKind::BinaryEvent, Some(_)) => invalid(EVENT_PAYLOAD),
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => Ok(()),
        (PacketKind::Ack | PacketKind::BinaryAck, Some(_)) => invalid("a JSON array"),
    }
}

/// The encoded bytes as a `String`. They are UTF-8 by construction (string pieces and `serde_json`
/// output), so the check always passes; the lossy fallback only keeps this free of panics and `unsafe`.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn object(key: &str, value: &str) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(key.to_owned(), Value::String(value.to_owned()));
    Value::Object(map)
}

/// Number of decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Length of `value` as compact JSON (what `serde_json` writes): exact, except for floats, which get
/// the longest length their shortest representation can have. Only a capacity hint: an underestimate
/// costs a reallocation, never correctness.
fn json_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(number) => number_len(number),
        Value::String(text) => string_len(text),
        Value::Array(items) => items
            .iter()
            .map(json_len)
            .fold(2 + items.len().saturating_sub(1), usize::saturating_add),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                string_len(key)
                    .saturating_add(json_len(value))
                    .saturating_add(1)
            })
            .fold(2 + map.len().saturating_sub(1), usize::saturating_add),
    }
}

fn number_len(number: &Number) -> usize {
    if let Some(n) = number.as_u64() {
        decimal_len(n)
    } else if let Some(n) = number.as_i64() {
        1 + decimal_len(n.unsigned_abs())
    } else {
        // The longest shortest-round-trip form of an f64, e.g. "-2.2250738585072014e-308".
        24
    }
}

fn string_len(text: &str) -> usize {
    text.bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6, // \u00XX
            _ => 1,
        })
        .fold(2, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn decode(text: &str) -> Packet {
        match Packet::decode(text) {
            Ok(packet) => packet,
            Err(error) => panic!("{text:?} should decode: {error}"),
        }
    }

    fn error(text: &str) -> SioDecodeError {
        match Packet::decode(text) {
            Ok(packet) => panic!("{text:?} should be rejected, got {packet:?}"),
            Err(error) => error,
        }
    }

    fn packet(
        kind: PacketKind,
        namespace: &str,
        id: Option<u64>,
        data: Option<Value>,
        attachments: usize,
    ) -> Packet {
        Packet {
            kind,
            namespace: namespace.into(),
            id,
            data,
            attachments,
        }
    }

    /// Decodes `text`, checks it against `expected`, and checks that encoding gives `text` back.
    fn assert_wire(text: &str, expected: Packet) {
        assert_eq!(decode(text), expected, "decoding {text:?}");
        assert_eq!(expected.encode(), text, "encoding {expected:?}");
    }

    #[test]
    fn spec_examples_round_trip() {
        use PacketKind::*;
        let p0 = || Some(placeholder(0));
        assert_wire("0", packet(Connect, "/", None, None, 0));
        assert_wire(
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
            packet(
                Connect,
                "/admin",
                None,
                Some(json!({"sid": "oSO0OpakMV_3jnilAAAA"})),
                0,
            ),
        );
        assert_wire(
            r#"4{"message":"Not authorized"}"#,
            packet(
                ConnectError,
                "/",
                None,
                Some(json!({"message": "Not authorized"})),
                0,
            ),
        );
        assert_wire(
            r#"2["foo"]"#,
            packet(Event, "/", None, Some(json!(["foo"])), 0),
        );
        assert_wire(
            r#"2/admin,["bar"]"#,
            packet(Event, "/admin", None, Some(json!(["bar"])), 0),
        );
        assert_wire(
            r#"51-["baz",{"_placeholder":true,"num":0}]"#,
            packet(BinaryEvent, "/", None, Some(json!(["baz", p0()])), 1),
        );
        assert_wire(
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            packet(
                BinaryEvent,
                "/admin",
                None,
                Some(json!(["baz", p0(), placeholder(1)])),
                2,
            ),
        );
        assert_wire(
            r#"212["foo"]"#,
            packet(Event, "/", Some(12), Some(json!(["foo"])), 0),
        );
        assert_wire(
            r#"3/admin,13["bar"]"#,
            packet(Ack, "/admin", Some(13), Some(json!(["bar"])), 0),
        );
        assert_wire(
            r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
            packet(BinaryAck, "/", Some(15), Some(json!(["bar", p0()])), 1),
        );
        assert_wire("1", packet(Disconnect, "/", None, None, 0));
        assert_wire("1/admin,", packet(Disconnect, "/admin", None, None, 0));
        assert_wire(
            r#"61-/admin,1[{"_placeholder":true,"num":0}]"#,
            packet(BinaryAck, "/admin", Some(1), Some(json!([p0()])), 1),
        );
        // From the protocol's test suite, without the Engine.IO "4".
        assert_wire(
            r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            packet(
                BinaryEvent,
                "/",
                None,
                Some(json!(["message", p0(), placeholder(1)])),
                2,
            ),
        );
        assert_wire(
            r#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            packet(
                BinaryAck,
                "/",
                Some(789),
                Some(json!([p0(), placeholder(1)])),
                2,
            ),
        );
    }

    #[test]
    fn decodes_through_the_engine_message() {
        use crate::engineio;
        let frame = r#"452-["hello",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let Ok(engineio::Packet::Message(text)) = engineio::Packet::decode_text(frame) else {
            panic!("an Engine.IO message");
        };
        let packet = decode(&text);
        assert_eq!(
            (packet.kind, packet.attachments),
            (PacketKind::BinaryEvent, 2)
        );
        assert_eq!(packet.to_frame().as_text(), Some(frame));

        // Announcing two attachments but referring to one is refused.
        assert_eq!(
            error(r#"52-["hello",{"_placeholder":true,"num":0}]"#),
            SioDecodeError::MissingPlaceholder(1)
        );
    }

    #[test]
    fn namespace_without_comma_runs_to_the_end() {
        assert_eq!(
            decode("0/admin"),
            packet(PacketKind::Connect, "/admin", None, None, 0)
        );
        assert_eq!(
            decode("1/a/b"),
            packet(PacketKind::Disconnect, "/a/b", None, None, 0)
        );
        assert_eq!(
            decode("0/,"),
            packet(PacketKind::Connect, "/", None, None, 0)
        );
        assert_eq!(
            decode("0/admin,{\"token\":\"123\"}").data,
            Some(json!({"token": "123"}))
        );
    }

    #[test]
    fn text_not_starting_with_slash_is_not_a_namespace() {
        assert!(matches!(
            error(r#"2admin,["a"]"#),
            SioDecodeError::InvalidJson(_)
        ));
    }

    #[test]
    fn ack_ids() {
        let max = format!("2{MAX_ACK_ID}[\"a\"]");
        assert_eq!(decode(&max).id, Some(MAX_ACK_ID));
        assert_eq!(decode(r#"2007["a"]"#).id, Some(7));
        assert_eq!(decode(r#"2/chat,0["a"]"#).id, Some(0));
        assert_eq!(decode(r#"2["a"]"#).id, None);
        assert_eq!(
            error(&format!("2{}[\"a\"]", MAX_ACK_ID + 1)),
            SioDecodeError::InvalidAckId
        );
        assert_eq!(
            error(r#"2184467440737095516150["a"]"#),
            SioDecodeError::InvalidAckId
        );
        assert_eq!(SioDecodeError::InvalidAckId.to_string(), "invalid ack id");
    }

    #[test]
    fn garbage_between_header_and_json_is_invalid() {
        assert!(matches!(
            error(r#"2abc["a"]"#),
            SioDecodeError::InvalidJson(_)
        ));
        assert!(matches!(
            error(r#"21abc["a"]"#),
            SioDecodeError::InvalidJson(_)
        ));
        assert!(matches!(
            error(r#"2["a"]x"#),
            SioDecodeError::InvalidJson(_)
        ));
        assert!(matches!(error(r#"2["a""#), SioDecodeError::InvalidJson(_)));
        assert!(matches!(error("2 "), SioDecodeError::InvalidJson(_)));
        assert!(
            error("2[")
                .to_string()
                .starts_with("payload is not valid JSON: ")
        );
    }

    #[test]
    fn json_may_be_surrounded_by_whitespace() {
        assert_eq!(decode("2 [\"a\"] ").data, Some(json!(["a"])));
    }

    #[test]
    fn rejects_empty_and_unknown_types() {
        assert_eq!(error(""), SioDecodeError::Empty);
        assert_eq!(error("7"), SioDecodeError::UnknownType('7'));
        assert_eq!(error("9[]"), SioDecodeError::UnknownType('9'));
        assert_eq!(error("x"), SioDecodeError::UnknownType('x'));
        assert_eq!(error("٣"), SioDecodeError::UnknownType('٣'));
        assert_eq!(
            SioDecodeError::UnknownType('9').to_string(),
            "unknown packet type '9'"
        );
    }

    #[test]
    fn binary_header_needs_a_count_and_dash() {
        for text in [
            r#"5["a"]"#,
            r#"5-["a"]"#,
            r#"51["a"]"#,
            r#"5x-["a"]"#,
            r#"5+1-["a"]"#,
            r#"5 1-["a"]"#,
            "5",
            "61",
        ] {
            assert_eq!(error(text), SioDecodeError::InvalidAttachments, "{text:?}");
        }
    }

    #[test]
    fn binary_header_caps_the_count() {
        let mut data = vec![json!("big")];
        data.extend((0..MAX_ATTACHMENTS).map(placeholder));
        let at_cap = format!("5{MAX_ATTACHMENTS}-{}", Value::Array(data));
        assert_eq!(decode(&at_cap).attachments, MAX_ATTACHMENTS);

        let over = format!("5{}-[\"a\"]", MAX_ATTACHMENTS + 1);
        assert_eq!(error(&over), SioDecodeError::TooManyAttachments);
        assert_eq!(
            error(r#"599999999999999999999999-["a"]"#),
            SioDecodeError::TooManyAttachments
        );
        assert_eq!(
            SioDecodeError::TooManyAttachments.to_string(),
            "too many attachments (at most 1000)"
        );
    }

    #[test]
    fn binary_packet_may_announce_zero_attachments() {
        let packet = decode(r#"50-["a"]"#);
        assert_eq!(packet.kind, PacketKind::BinaryEvent);
        assert_eq!(packet.attachments, 0);
        assert_eq!(packet.encode(), r#"50-["a"]"#);
    }

    #[test]
    fn non_binary_kinds_must_not_announce_attachments() {
        assert_eq!(
            error(r#"21-["a"]"#),
            SioDecodeError::UnexpectedAttachments(PacketKind::Event)
        );
        assert_eq!(
            error(r#"31-["a"]"#),
            SioDecodeError::UnexpectedAttachments(PacketKind::Ack)
        );
        assert!(matches!(
            error(r#"2-["a"]"#),
            SioDecodeError::InvalidJson(_)
        ));
    }

    #[test]
    fn payload_rules_per_kind() {
        use PacketKind::*;
        use SioDecodeError::*;
        let invalid = |kind, expected| InvalidPayload { kind, expected };
        let cases = [
            ("0[]", invalid(Connect, "a JSON object")),
            (r#"0"x""#, invalid(Connect, "a JSON object")),
            ("0null", invalid(Connect, "a JSON object")),
            ("1{}", UnexpectedPayload(Disconnect)),
            ("1/admin,[]", UnexpectedPayload(Disconnect)),
            ("4", MissingPayload(ConnectError)),
            ("4[]", invalid(ConnectError, "a JSON string or object")),
            ("4/a,null", invalid(ConnectError, "a JSON string or object")),
            ("2", MissingPayload(Event)),
            ("2/admin,", MissingPayload(Event)),
            ("21", MissingPayload(Event)),
            ("2[]", invalid(Event, EVENT_PAYLOAD)),
            ("2[1]", invalid(Event, EVENT_PAYLOAD)),
            ("2[null]", invalid(Event, EVENT_PAYLOAD)),
            (r#"2{"a":1}"#, invalid(Event, EVENT_PAYLOAD)),
            (r#"2"a""#, invalid(Event, EVENT_PAYLOAD)),
            ("50-[]", invalid(BinaryEvent, EVENT_PAYLOAD)),
            ("50-{}", invalid(BinaryEvent, EVENT_PAYLOAD)),
            ("31", MissingPayload(Ack)),
            ("31{}", invalid(Ack, "a JSON array")),
            ("60-1{}", invalid(BinaryAck, "a JSON array")),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
        assert_eq!(
            invalid(Event, EVENT_PAYLOAD).to_string(),
            "EVENT payload must be a JSON array whose first element is the event name"
        );
    }

    #[test]
    fn accepted_payloads_per_kind() {
        assert_eq!(decode("0{}").data, Some(json!({})));
        assert_eq!(decode(r#"4"nope""#).data, Some(json!("nope")));
        assert_eq!(decode("3/a,1[]").data, Some(json!([])));
        assert_eq!(
            decode(r#"2["a",1,{"b":[null]}]"#).data,
            Some(json!(["a", 1, {"b": [null]}]))
        );
        assert_eq!(decode(r#"2["connected"]"#).event_name(), Some("connected"));
    }

    #[test]
    fn reserved_event_names_are_rejected() {
        for name in RESERVED_EVENTS {
            assert_eq!(
                error(&format!("2[\"{name}\"]")),
                SioDecodeError::ReservedEvent(name.into())
            );
            assert_eq!(
                error(&format!(
                    "51-[\"{name}\",{{\"_placeholder\":true,\"num\":0}}]"
                )),
                SioDecodeError::ReservedEvent(name.into())
            );
        }
        assert_eq!(
            SioDecodeError::ReservedEvent("connect".into()).to_string(),
            "\"connect\" is a reserved event name"
        );
    }

    #[test]
    fn ack_id_rules_per_kind() {
        use PacketKind::*;
        assert_eq!(error("01{}"), SioDecodeError::UnexpectedAckId(Connect));
        assert_eq!(error("11"), SioDecodeError::UnexpectedAckId(Disconnect));
        assert_eq!(
            error(r#"41"x""#),
            SioDecodeError::UnexpectedAckId(ConnectError)
        );
        assert_eq!(error("3[]"), SioDecodeError::MissingAckId(Ack));
        assert_eq!(
            error(r#"61-[{"_placeholder":true,"num":0}]"#),
            SioDecodeError::MissingAckId(BinaryAck)
        );
        assert_eq!(
            decode(r#"51-9["a",{"_placeholder":true,"num":0}]"#).id,
            Some(9)
        );
    }

    #[test]
    fn binary_placeholders_must_match_the_count() {
        use SioDecodeError::*;
        let cases = [
            (r#"51-["a"]"#, MissingPlaceholder(0)),
            (
                r#"51-["a",{"_placeholder":true,"num":1}]"#,
                PlaceholderOutOfRange {
                    num: 1,
                    attachments: 1,
                },
            ),
            (
                r#"52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
                DuplicatePlaceholder(0),
            ),
            (r#"51-["a",{"_placeholder":true}]"#, InvalidPlaceholder),
            (
                r#"51-["a",{"_placeholder":true,"num":-1}]"#,
                InvalidPlaceholder,
            ),
            (
                r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
                InvalidPlaceholder,
            ),
            (
                r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
                InvalidPlaceholder,
            ),
            (
                r#"50-["a",{"_placeholder":true,"num":0}]"#,
                PlaceholderOutOfRange {
                    num: 0,
                    attachments: 0,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
    }

    #[test]
    fn placeholders_may_be_nested_anywhere() {
        let text =
            r#"52-["a",{"x":[{"_placeholder":true,"num":1}]},[[{"_placeholder":true,"num":0}]]]"#;
        assert_eq!(decode(text).attachments, 2);
        // Objects that merely look similar are data.
        let plain = r#"51-["a",{"_placeholder":false,"num":7},{"_placeholder":true,"num":0}]"#;
        assert_eq!(decode(plain).attachments, 1);
    }

    #[test]
    fn placeholders_are_not_checked_on_plain_events() {
        let text = r#"2["a",{"_placeholder":true,"num":5}]"#;
        assert_eq!(decode(text).attachments, 0);
    }

    #[test]
    fn validate_placeholders_directly() {
        let data = json!(["a", placeholder(1), {"deep": [placeholder(0)]}]);
        assert_eq!(validate_placeholders(&data, 2), Ok(()));
        assert_eq!(
            validate_placeholders(&data, 3),
            Err(SioDecodeError::MissingPlaceholder(2))
        );
        assert_eq!(
            validate_placeholders(&json!([]), MAX_ATTACHMENTS + 1),
            Err(SioDecodeError::TooManyAttachments)
        );
        assert_eq!(validate_placeholders(&json!("x"), 0), Ok(()));
    }

    #[test]
    fn placeholder_json() {
        assert_eq!(
            placeholder(3).to_string(),
            r#"{"_placeholder":true,"num":3}"#
        );
    }

    #[test]
    fn constructors_encode_as_expected() {
        assert_eq!(Packet::connect_ok("/", "abc").encode(), r#"0{"sid":"abc"}"#);
        assert_eq!(
            Packet::connect_ok("/admin", "abc").encode(),
            r#"0/admin,{"sid":"abc"}"#
        );
        assert_eq!(
            Packet::connect_error("/admin", "Not authorized").encode(),
            r#"4/admin,{"message":"Not authorized"}"#
        );
        assert_eq!(Packet::disconnect("/").encode(), "1");
        assert_eq!(Packet::disconnect("/chat").encode(), "1/chat,");
        assert_eq!(
            Packet::event("/", json!(["hey", "Jude"]), None, 0).encode(),
            r#"2["hey","Jude"]"#
        );
        let binary = Packet::event("/up", json!(["file", placeholder(0)]), Some(4), 1);
        assert_eq!(binary.kind, PacketKind::BinaryEvent);
        assert_eq!(
            binary.encode(),
            r#"51-/up,4["file",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(Packet::ack("/", json!([]), 3, 0).encode(), "33[]");
        let binary_ack = Packet::ack("/", json!([placeholder(0)]), 15, 1);
        assert_eq!(binary_ack.kind, PacketKind::BinaryAck);
        assert_eq!(
            binary_ack.encode(),
            r#"61-15[{"_placeholder":true,"num":0}]"#
        );
        // Every constructor's output is accepted by the decoder.
        for packet in [
            Packet::connect_ok("/a", "s"),
            Packet::connect_error("/", "no"),
            Packet::disconnect("/a"),
            Packet::event("/", json!(["x"]), Some(1), 0),
            binary,
            Packet::ack("/a", json!([1]), 2, 0),
            binary_ack,
        ] {
            assert_eq!(decode(&packet.encode()), packet);
        }
    }

    #[test]
    fn empty_namespace_is_encoded_as_default() {
        let packet = Packet::event("", json!(["a"]), None, 0);
        assert_eq!(packet.encode(), r#"2["a"]"#);
    }

    #[test]
    fn to_frame_prefixes_the_engine_message_type() {
        let packet = Packet::event("/chat", json!(["msg", "hi"]), Some(3), 0);
        let frame = packet.to_frame();
        assert!(frame.is_text());
        assert_eq!(frame.as_text(), Some(r#"42/chat,3["msg","hi"]"#));
    }

    #[test]
    fn event_name() {
        assert_eq!(decode(r#"2["chat",1]"#).event_name(), Some("chat"));
        assert_eq!(
            decode(r#"51-["up",{"_placeholder":true,"num":0}]"#).event_name(),
            Some("up")
        );
        assert_eq!(decode("31[]").event_name(), None);
        assert_eq!(decode(r#"31["chat"]"#).event_name(), None);
        assert_eq!(decode("0").event_name(), None);
    }

    #[test]
    fn encoded_len_is_exact_without_floats() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(9),
            json!(10),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!("plain"),
            json!("quote\" backslash\\ newline\n tab\t nul\u{0} bell\u{7} del\u{7f} é 😀"),
            json!("\u{8}\u{c}\r\u{1e}\u{1f}"),
            json!([]),
            json!({}),
            json!([1, [2, [3]], {"k\n": {"": null}}]),
        ];
        for value in values {
            assert_eq!(json_len(&value), value.to_string().len(), "{value}");
        }
        let packet = Packet::event("/ns", json!(["a", {"b": [1, -2, "c"]}]), Some(123), 0);
        assert_eq!(packet.encoded_len(), packet.encode().len());
        let binary = Packet::ack("/", json!([placeholder(0)]), 0, 1);
        assert_eq!(binary.encoded_len(), binary.encode().len());
    }

    #[test]
    fn encoded_len_bounds_floats() {
        for float in [
            0.1,
            -2.2250738585072014e-308,
            f64::MAX,
            f64::MIN_POSITIVE,
            -0.0,
            1e21,
        ] {
            let value = json!(float);
            assert!(json_len(&value) >= value.to_string().len(), "{value}");
        }
    }

    #[test]
    fn kind_digits_round_trip() {
        for digit in 0..=6 {
            let kind = PacketKind::from_digit(digit);
            assert_eq!(kind.map(PacketKind::digit), Some(digit));
        }
        assert_eq!(PacketKind::from_digit(7), None);
        assert_eq!(PacketKind::ConnectError.to_string(), "CONNECT_ERROR");
    }

    #[test]
    fn packet_serializes_with_kind_as_digit() {
        let packet = decode(r#"61-/a,5[{"_placeholder":true,"num":0}]"#);
        let json = serde_json::to_value(&packet).ok();
        assert_eq!(
            json,
            Some(json!({
                "kind": 6,
                "namespace": "/a",
                "id": 5,
                "data": [{"_placeholder": true, "num": 0}],
                "attachments": 1
            }))
        );
        let back: Option<Packet> = json.and_then(|json| serde_json::from_value(json).ok());
        assert_eq!(back, Some(packet));
        assert!(serde_json::from_value::<PacketKind>(json!(7)).is_err());
    }

    #[test]
    fn partial_binary_packet_collects_in_order() {
        let header =
            decode(r#"52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
        let mut partial = PartialBinaryPacket::new(header.clone());
        assert_eq!(partial.packet(), &header);
        assert_eq!(partial.push(Bytes::from_static(b"one")), Ok(None));
        assert_eq!(partial.received(), &[Bytes::from_static(b"one")]);
        let done = partial.push(Bytes::from_static(b"two"));
        assert_eq!(
            done,
            Ok(Some((
                header,
                vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
            )))
        );
        // Spent: nothing more is accepted.
        assert_eq!(
            partial.push(Bytes::from_static(b"three")),
            Err(SioDecodeError::UnexpectedAttachment)
        );
    }

    #[test]
    fn partial_binary_packet_hands_over_buffers_without_copying() {
        let header = decode(r#"61-1[{"_placeholder":true,"num":0}]"#);
        let mut partial = PartialBinaryPacket::new(header);
        let data = Bytes::from(vec![7; 64]);
        let pointer = data.as_ptr();
        let Ok(Some((_, buffers))) = partial.push(data) else {
            panic!("one attachment completes the packet");
        };
        assert_eq!(buffers.first().map(|b| b.as_ptr()), Some(pointer));
    }

    #[test]
    fn partial_binary_packet_with_nothing_announced_refuses_attachments() {
        let mut partial = PartialBinaryPacket::new(decode(r#"50-["a"]"#));
        assert_eq!(
            partial.push(Bytes::new()),
            Err(SioDecodeError::UnexpectedAttachment)
        );
    }

    #[test]
    fn partial_binary_packet_serializes() {
        let header =
            decode(r#"52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
        let mut partial = PartialBinaryPacket::new(header.clone());
        assert_eq!(partial.push(Bytes::from_static(&[1, 2, 255])), Ok(None));

        let json = serde_json::to_value(&partial).ok();
        assert_eq!(
            json.as_ref().and_then(|json| json.get("received")),
            Some(&json!([[1, 2, 255]]))
        );
        let restored: Option<PartialBinaryPacket> =
            json.and_then(|json| serde_json::from_value(json).ok());
        let Some(mut restored) = restored else {
            panic!("the state must deserialize");
        };
        assert_eq!(restored.packet(), &header);
        assert_eq!(
            restored.push(Bytes::from_static(&[3])),
            Ok(Some((
                header,
                vec![Bytes::from_static(&[1, 2, 255]), Bytes::from_static(&[3])]
            )))
        );
    }
}
