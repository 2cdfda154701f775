#![cfg(not(target_arch = "wasm32"))]
//! Property tests for the Engine.IO and Socket.IO codecs: no input makes a decoder panic, whatever
//! a decoder accepts encodes back to the same packet, and everything the encoders produce decodes to
//! what was encoded.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use switchboard_core::engineio::{self, decode_payload, encode_payload};
use switchboard_core::frame::WireFrame;
use switchboard_core::socketio::RESERVED_EVENTS;
use switchboard_core::socketio::{
    self, MAX_ACK_ID, PacketKind, PartialBinaryPacket, SioDecodeError, placeholder,
    validate_placeholders,
};
// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn json_leaf(floats: bool) -> BoxedStrategy<Value> {
    let mut leaves = vec![
        Just(Value::Null).boxed(),
        any::<bool>().prop_map(Value::from).boxed(),
        any::<i64>().prop_map(Value::from).boxed(),
        any::<u64>().prop_map(Value::from).boxed(),
        any::<String>().prop_map(Value::from).boxed(),
    ];
    if floats {
        leaves.push(
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from)
                .boxed(),
        );
    }
    proptest::strategy::Union::new(leaves).boxed()
}

/// Object keys: anything but the placeholder marker, which would turn data into an attachment.
fn json_key() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("not the placeholder marker", |key| key != "_placeholder")
}

/// Nested JSON values, a few levels deep.
fn json_value(floats: bool) -> BoxedStrategy<Value> {
    json_leaf(floats)
        .prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((json_key(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
        .boxed()
}

fn json_object(floats: bool) -> impl Strategy<Value = Value> {
    prop::collection::vec((json_key(), json_value(floats)), 0..5)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>()))
}

/// Namespaces travel unescaped, so they must avoid `,` (their terminator) and the polling record
/// separator.
fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[^,\u{1e}]{1,12}"]
}

fn ack_id() -> impl Strategy<Value = u64> {
    prop_oneof![0..100u64, 0..=MAX_ACK_ID, Just(MAX_ACK_ID)]
}

fn event_name() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("not reserved", |name| {
        !RESERVED_EVENTS.contains(&name.as_str())
    })
}

/// Where a placeholder goes: its position among the arguments and how deep it is wrapped.
type Slot = (Index, u8);

/// `args` with one placeholder per attachment, each at a chosen position, some nested.
fn with_placeholders(mut args: Vec<Value>, first_free: usize, slots: &[Slot]) -> Value {
    for (num, (position, wrap)) in slots.iter().enumerate() {
        let value = match wrap % 3 {
            0 => placeholder(num),
            1 => json!([placeholder(num)]),
            _ => json!({ "file": placeholder(num) }),
        };
        let free = args.len() + 1 - first_free;
        args.insert(first_free + position.index(free), value);
    }
    Value::Array(args)
}

fn sio(kind: PacketKind, namespace: String, data: Option<Value>) -> socketio::Packet {
    socketio::Packet {
        kind,
        namespace,
        id: None,
        data,
        attachments: 0,
    }
}

/// Any Socket.IO packet the decoder must accept, with or without floats in its data.
fn sio_packet(floats: bool) -> impl Strategy<Value = socketio::Packet> {
    let args = move || prop::collection::vec(json_value(floats), 0..4);
    let slots = || prop::collection::vec((any::<Index>(), any::<u8>()), 0..4);
    let connect_error = prop_oneof![any::<String>().prop_map(Value::from), json_object(floats)];
    prop_oneof![
        (namespace(), prop::option::of(json_object(floats))).prop_map(|(ns, data)| sio(
            PacketKind::Connect,
            ns,
            data
        )),
        namespace().prop_map(|ns| sio(PacketKind::Disconnect, ns, None)),
        (namespace(), connect_error).prop_map(|(ns, data)| sio(
            PacketKind::ConnectError,
            ns,
            Some(data)
        )),
        (
            namespace(),
            event_name(),
            args(),
            prop::option::of(ack_id()),
            slots()
        )
            .prop_map(|(ns, name, mut rest, id, slots)| {
                rest.insert(0, Value::from(name));
                let data = with_placeholders(rest, 1, &slots);
                socketio::Packet::event(&ns, data, id, slots.len())
            }),
        (namespace(), args(), ack_id(), slots()).prop_map(|(ns, args, id, slots)| {
            let data = with_placeholders(args, 0, &slots);
            socketio::Packet::ack(&ns, data, id, slots.len())
        }),
        // Binary kinds may announce no attachment at all.
        (namespace(), event_name()).prop_map(|(ns, name)| sio(
            PacketKind::BinaryEvent,
            ns,
            Some(json!([name]))
        )),
    ]
}

fn engine_packet() -> impl Strategy<Value = engineio::Packet> {
    use engineio::Packet;
    prop_oneof![
        any::<String>().prop_map(Packet::Open),
        Just(Packet::Close),
        any::<bool>().prop_map(|probe| Packet::Ping { probe }),
        any::<bool>().prop_map(|probe| Packet::Pong { probe }),
        any::<String>().prop_map(Packet::Message),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Packet::BinaryMessage(b.into())),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

/// An Engine.IO packet that can travel over polling: its text must not contain the separator.
fn polling_packet() -> impl Strategy<Value = engineio::Packet> {
    engine_packet().prop_filter("no record separator in text", |packet| {
        !matches!(packet, engineio::Packet::Open(text) | engineio::Packet::Message(text)
            if text.contains('\u{1e}'))
    })
}

/// Text that looks like a Socket.IO packet, to reach past the first checks of the decoder.
fn sio_like_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![9 => (0u8..=6).prop_map(|d| d.to_string()), 1 => "[7-9x]"];
    let attachments = prop_oneof![
        3 => (0u8..5).prop_map(|n| format!("{n}-")),
        1 => "([0-9]{0,5}-?)?",
    ];
    let placeholders = prop::collection::vec(0u8..5, 0..4).prop_map(|nums| {
        let mut args = vec![json!("ev")];
        args.extend(nums.into_iter().map(|num| placeholder(num.into())));
        Value::Array(args).to_string()
    });
    let payload = prop_oneof![
        json_value(true).prop_map(|value| value.to_string()),
        json_value(true).prop_map(|value| json!(["ev", value]).to_string()),
        placeholders,
        Just(String::new()),
        "[\\[\\]{}\",:0-9a-z _-]{0,12}",
    ];
    (
        kind,
        attachments,
        "(/[a-z/,]{0,5},?)?",
        prop_oneof!["", "[0-9]{1,3}", "[0-9]{15,20}"],
        payload,
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(|(kind, attachments, ns, id, payload, cut, truncate)| {
            let binary = kind == "5" || kind == "6";
            let attachments = if binary { attachments } else { String::new() };
            let payload = if truncate && !payload.is_empty() {
                let boundaries: Vec<usize> = payload.char_indices().map(|(i, _)| i).collect();
                let end = boundaries
                    .get(cut.index(boundaries.len()))
                    .copied()
                    .unwrap_or(0);
                payload.get(..end).unwrap_or_default().to_owned()
            } else {
                payload
            };
            format!("{kind}{attachments}{ns}{id}{payload}")
        })
}

/// Bytes that look like a polling body: mostly valid records, some broken, some empty.
fn payload_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let record = prop_oneof![
        3 => "4[ -~]{0,8}",
        2 => prop::sample::select(vec!["1", "2", "2probe", "3", "3probe", "5", "6"])
            .prop_map(str::to_owned),
        2 => prop::collection::vec(any::<u8>(), 0..8)
            .prop_map(|bytes| format!("b{}", base64_of(&bytes))),
        1 => "[0-7b][a-zA-Z0-9+/=]{0,6}",
        1 => Just(String::new()),
    ];
    prop::collection::vec(record, 1..6).prop_map(|records| records.join("\u{1e}").into_bytes())
}

fn base64_of(bytes: &[u8]) -> String {
    let frame = WireFrame::binary(bytes.to_vec());
    let body = encode_payload([&frame]);
    String::from_utf8_lossy(body.get(1..).unwrap_or_default()).into_owned()
}

fn frame_text(frame: &WireFrame) -> String {
    frame.as_text().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Decoders never panic, and what they accept re-encodes faithfully
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn engine_text_decoding_never_panics(text in any::<String>()) {
        if let Ok(packet) = engineio::Packet::decode_text(&text) {
            // Engine.IO text has a single spelling: re-encoding gives back the input.
            prop_assert_eq!(frame_text(&packet.to_frame()), text);
        }
    }

    #[test]
    fn engine_text_decoding_of_short_packets(text in "[0-9b]?(probe|prob|[ -~]{0,3})") {
        if let Ok(packet) = engineio::Packet::decode_text(&text) {
            prop_assert_eq!(frame_text(&packet.to_frame()), text);
        }
    }

    #[test]
    fn payload_decoding_never_panics(body in any::<Vec<u8>>()) {
        let _ = decode_payload(&body);
    }

    #[test]
    fn payload_decoding_of_payload_like_bodies(body in payload_like_bytes()) {
        if let Ok(packets) = decode_payload(&body) {
            let records = body.split(|b| *b == engineio::RECORD_SEPARATOR).count();
            prop_assert_eq!(packets.len(), records);
            // Re-encoding gives back the body, record for record.
            let frames: Vec<WireFrame> = packets.iter().map(engineio::Packet::to_frame).collect();
            prop_assert_eq!(encode_payload(&frames), Bytes::from(body));
        }
    }

    #[test]
    fn sio_decoding_never_panics(text in any::<String>()) {
        if let Ok(packet) = socketio::Packet::decode(&text) {
            prop_assert_eq!(socketio::Packet::decode(&packet.encode()), Ok(packet));
        }
    }

    #[test]
    fn sio_decoding_of_packet_like_text(text in sio_like_text()) {
        if let Ok(packet) = socketio::Packet::decode(&text) {
            prop_assert_eq!(socketio::Packet::decode(&packet.encode()), Ok(packet));
        }
    }

    #[test]
    fn placeholder_validation_never_panics(data in json_value(false), attachments in 0usize..2000) {
        let _ = validate_placeholders(&data, attachments);
    }

    #[test]
    fn binary_reassembly_follows_the_announced_count(
        announced in 0usize..6,
        pushes in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..10),
    ) {
        let data = Value::Array((0..announced).map(placeholder).collect());
        let header = socketio::Packet::ack("/", data, 1, announced);
        let mut partial = PartialBinaryPacket::new(header.clone());
        for (index, attachment) in pushes.iter().enumerate() {
            let count = index + 1;
            let result = partial.push(Bytes::from(attachment.clone()));
            if count < announced {
                prop_assert_eq!(result, Ok(None));
                prop_assert_eq!(partial.received().len(), count);
            } else if count == announced {
                let expected: Vec<Bytes> = pushes[..count].iter().cloned().map(Bytes::from).collect();
                prop_assert_eq!(result, Ok(Some((header.clone(), expected))));
            } else {
                prop_assert_eq!(result, Err(SioDecodeError::UnexpectedAttachment));
            }
        }
    }

    #[test]
    fn binary_reassembly_of_any_header_never_panics(
        attachments in any::<usize>(),
        pushes in 0usize..4,
    ) {
        let header = socketio::Packet::event("/", json!(["x"]), None, attachments);
        let mut partial = PartialBinaryPacket::new(header);
        for _ in 0..pushes {
            let _ = partial.push(Bytes::from_static(b"x"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoders round-trip
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn engine_packets_round_trip(packet in engine_packet()) {
        let frame = packet.to_frame();
        let decoded = match frame.as_text() {
            Some(text) => engineio::Packet::decode_text(text),
            None => Ok(engineio::Packet::decode_binary(frame.bytes().clone())),
        };
        prop_assert_eq!(decoded, Ok(packet));
    }

    #[test]
    fn polling_payloads_round_trip(packets in prop::collection::vec(polling_packet(), 1..10)) {
        let frames: Vec<WireFrame> = packets.iter().map(engineio::Packet::to_frame).collect();
        let body = encode_payload(&frames);
        prop_assert_eq!(decode_payload(&body), Ok(packets));
    }

    #[test]
    fn sio_packets_round_trip(packet in sio_packet(true)) {
        let text = packet.encode();
        prop_assert_eq!(socketio::Packet::decode(&text), Ok(packet.clone()));

        // Wrapped in an Engine.IO message, over WebSocket and over polling.
        let frame = packet.to_frame();
        prop_assert_eq!(frame_text(&frame), format!("4{text}"));
        let body = encode_payload([&frame, &frame]);
        let message = engineio::Packet::Message(text);
        prop_assert_eq!(decode_payload(&body), Ok(vec![message.clone(), message]));
    }

    #[test]
    fn sio_encoding_allocates_exactly_once(packet in sio_packet(false)) {
        // Without floats the size is computed exactly, so the buffer never grows or over-reserves.
        let text = packet.encode();
        prop_assert_eq!(text.capacity(), text.len());
    }

    #[test]
    fn sio_binary_packets_reassemble(
        packet in sio_packet(true),
        attachments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 6),
    ) {
        if packet.kind.is_binary() && packet.attachments > 0 {
            let decoded = socketio::Packet::decode(&packet.encode());
            prop_assert_eq!(decoded.as_ref(), Ok(&packet));
            let mut partial = PartialBinaryPacket::new(packet.clone());
            let mut done = None;
            for attachment in attachments.iter().take(packet.attachments) {
                prop_assert!(done.is_none());
                done = partial.push(Bytes::from(attachment.clone())).ok().flatten();
            }
            let expected: Vec<Bytes> =
                attachments.iter().take(packet.attachments).cloned().map(Bytes::from).collect();
            prop_assert_eq!(done, Some((packet, expected)));
        }
    }
}
