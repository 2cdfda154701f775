//! The HTTP long-polling body format.
//!
//! A polling body carries several packets: records separated by the record separator byte (`0x1e`).
//! A text record is the packet exactly as it would travel in a WebSocket text frame; a binary record is
//! `b` followed by the standard, padded base64 of the bytes. Nothing escapes the separator: base64
//! never produces it and Socket.IO messages are JSON, which escapes control characters, so a raw
//! Engine.IO message containing `0x1e` simply cannot travel over polling (as in the reference server).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::packet::{DecodeError, Packet};
use crate::frame::WireFrame;

/// The byte between two records of a polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Marks a record as base64-encoded binary.
const BINARY_PREFIX: char = 'b';

/// Decodes the body of a polling POST into its packets.
///
/// The whole body is rejected on the first bad record: a client that sends one is broken, and
/// delivering half of its packets would reorder what it meant to say.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let body = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    if body.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    body.split(char::from(RECORD_SEPARATOR))
        .map(decode_record)
        .collect()
}

/// A polling POST's body, checked whole and then decoded a record at a time: a body of a million
/// bytes may hold a hundred thousand records, and the channel handles them in turns (see
/// [`crate::channel::RECORDS_PER_TURN`]) holding only the body, not every decoded packet.
#[derive(Debug)]
pub struct PayloadRecords {
    body: Bytes,
    /// Where the next record starts.
    next: usize,
}

impl PayloadRecords {
    /// Checks every record of `body` (the whole body is refused on the first bad one, as
    /// [`decode_payload`] does).
    pub fn new(body: Bytes) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(&body).map_err(|_| DecodeError::InvalidUtf8)?;
        if text.is_empty() {
            return Err(DecodeError::EmptyPayload);
        }
        for record in text.split(char::from(RECORD_SEPARATOR)) {
            decode_record(record)?;
        }
        Ok(Self { body, next: 0 })
    }

    /// Whether every record was taken.
    pub fn is_done(&self) -> bool {
        self.next > self.body.len()
    }
}

impl Iterator for PayloadRecords {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        let rest = self.body.get(self.next..)?;
        let end = memchr_separator(rest).unwrap_or(rest.len());
        let record = std::str::from_utf8(&rest[..end]).ok()?;
        self.next += end + 1;
        // Checked in `new`; a record cannot turn bad since.
        decode_record(record).ok()
    }
}

fn memchr_separator(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|byte| *byte == RECORD_SEPARATOR)
}

fn decode_record(record: &str) -> Result<Packet, DecodeError> {
    if record.is_empty() {
        return Err(DecodeError::EmptyRecord);
    }
    match record.strip_prefix(BINARY_PREFIX) {
        Some(base64) => STANDARD
            .decode(base64)
            .map(|bytes| Packet::BinaryMessage(Bytes::from(bytes)))
            .map_err(|_| DecodeError::InvalidBase64),
        None => Packet::decode_text(record),
    }
}

/// Encodes frames as the body of a polling GET response, in one allocation.
///
/// Text frames are copied verbatim (they already carry their Engine.IO type), binary frames become
/// `b<base64>` records.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a WireFrame>) -> Bytes {
    // Two passes (size, then write) need the frames twice; a vector of references is cheap.
    let frames: Vec<&WireFrame> = frames.into_iter().collect();
    let separators = frames.len().saturating_sub(1);
    let size = frames
        .iter()
        .map(|frame| record_len(frame))
        .fold(separators, usize::saturating_add);

    let mut body = String::with_capacity(size);
    for (index, frame) in frames.iter().enumerate() {
        if index > 0 {
            body.push(char::from(RECORD_SEPARATOR));
        }
        match frame.as_text() {
            Some(text) => body.push_str(text),
            None => {
                body.push(BINARY_PREFIX);
                STANDARD.encode_string(frame.bytes(), &mut body);
            }
        }
    }
    Bytes::from(body)
}

/// Length of a frame's record in a polling payload.
pub fn record_len(frame: &WireFrame) -> usize {
    if frame.is_text() {
        frame.len()
    } else {
        // Padded base64 writes 4 characters for every started group of 3 bytes.
        1 + frame.len().div_ceil(3).saturating_mul(4)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn payload_records_are_the_packets_of_decode_payload_one_at_a_time() {
        for body in [
            &b"4hello\x1e2\x1e4world"[..],
            b"4a",
            b"bAQID\x1e4x",
            b"4\x1e4",
        ] {
            let mut records = PayloadRecords::new(Bytes::copy_from_slice(body)).unwrap();
            let mut taken = Vec::new();
            while !records.is_done() {
                taken.push(records.next().expect("a record until done"));
            }
            assert_eq!(records.next(), None);
            assert_eq!(Ok(taken), decode_payload(body), "{body:?}");
        }
        for bad in [
            &b""[..],
            b"4a\x1e",
            b"4a\x1e\x1e4b",
            b"bnot base64!",
            b"\xff",
        ] {
            assert_eq!(
                PayloadRecords::new(Bytes::copy_from_slice(bad)).map(|_| ()),
                decode_payload(bad).map(|_| ()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decodes_the_spec_examples() {
        assert_eq!(
            decode_payload(b"4hello\x1e2\x1e4world"),
            Ok(vec![
                Packet::Message("hello".into()),
                Packet::Ping { probe: false },
                Packet::Message("world".into()),
            ])
        );
        assert_eq!(
            decode_payload(b"4hello\x1ebAQIDBA=="),
            Ok(vec![
                Packet::Message("hello".into()),
                Packet::BinaryMessage(Bytes::from_static(&[1, 2, 3, 4])),
            ])
        );
        assert_eq!(
            decode_payload(b"42[\"hello\"]\x1e42[\"world\"]"),
            Ok(vec![
                Packet::Message("2[\"hello\"]".into()),
                Packet::Message("2[\"world\"]".into()),
            ])
        );
    }

    #[test]
    fn decodes_a_single_record() {
        assert_eq!(decode_payload(b"1"), Ok(vec![Packet::Close]));
        assert_eq!(
            decode_payload(b"b"),
            Ok(vec![Packet::BinaryMessage(Bytes::new())])
        );
    }

    #[test]
    fn rejects_empty_body_and_empty_records() {
        assert_eq!(decode_payload(b""), Err(DecodeError::EmptyPayload));
        assert_eq!(decode_payload(b"\x1e"), Err(DecodeError::EmptyRecord));
        assert_eq!(decode_payload(b"4a\x1e"), Err(DecodeError::EmptyRecord));
        assert_eq!(decode_payload(b"\x1e4a"), Err(DecodeError::EmptyRecord));
        assert_eq!(
            decode_payload(b"4a\x1e\x1e4b"),
            Err(DecodeError::EmptyRecord)
        );
    }

    #[test]
    fn rejects_invalid_utf8() {
        assert_eq!(decode_payload(b"4\xff"), Err(DecodeError::InvalidUtf8));
        assert_eq!(
            decode_payload(b"4a\x1e4\xc3"),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn rejects_invalid_base64() {
        for body in [
            &b"bAQIDBA"[..],    // missing padding
            b"bAQIDBA=",        // wrong padding
            b"bAQ*DBA==",       // not in the alphabet
            b"bAQ-DBA==",       // URL-safe alphabet
            b"4a\x1eb!",        // bad second record
            b"bAQIDBA==\x1eb=", // bad last record
        ] {
            assert_eq!(
                decode_payload(body),
                Err(DecodeError::InvalidBase64),
                "decoding {body:?}"
            );
        }
    }

    #[test]
    fn rejects_a_bad_text_record() {
        assert_eq!(
            decode_payload(b"4a\x1e9"),
            Err(DecodeError::UnknownType('9'))
        );
        assert_eq!(
            decode_payload(b"2probe\x1e1close"),
            Err(DecodeError::UnexpectedPayload { packet: "close" })
        );
    }

    #[test]
    fn encodes_text_and_binary_frames() {
        let frames = [
            WireFrame::static_text("4hello"),
            WireFrame::binary(Bytes::from_static(&[1, 2, 3, 4])),
            WireFrame::static_text("2"),
        ];
        let body = encode_payload(&frames);
        assert_eq!(body.as_ref(), b"4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(body.len(), frames.iter().map(record_len).sum::<usize>() + 2);
    }

    #[test]
    fn encodes_edge_cases() {
        assert_eq!(encode_payload(&[]).as_ref(), b"");
        assert_eq!(
            encode_payload(&[WireFrame::binary(Bytes::new())]).as_ref(),
            b"b"
        );
        for len in 0..8 {
            let frame = WireFrame::binary(vec![0xAB; len]);
            let body = encode_payload([&frame]);
            assert_eq!(body.len(), record_len(&frame), "{len} bytes");
        }
    }

    #[test]
    fn encoded_payload_decodes_back() {
        let frames = [
            Packet::Message("42[\"a\"]".into()).to_frame(),
            Packet::BinaryMessage(Bytes::from_static(b"\x00\x1e\xff")).to_frame(),
            Packet::Noop.to_frame(),
        ];
        assert_eq!(
            decode_payload(&encode_payload(&frames)),
            Ok(vec![
                Packet::Message("42[\"a\"]".into()),
                Packet::BinaryMessage(Bytes::from_static(b"\x00\x1e\xff")),
                Packet::Noop,
            ])
        );
    }
}
