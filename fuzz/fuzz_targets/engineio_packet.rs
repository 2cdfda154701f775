//! One Engine.IO packet, as a WebSocket text frame and as a binary frame: decoding never panics,
//! and a decoded packet encodes back to exactly the frame it came from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_core::engineio::{DecodeError, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match Packet::decode_text(text) {
            Ok(packet) => {
                let frame = packet.to_frame();
                assert_eq!(
                    frame.as_text(),
                    Some(text),
                    "{packet:?} re-encodes differently"
                );
                assert_eq!(Packet::decode_text(text), Ok(packet));
            }
            Err(DecodeError::Empty) => assert!(text.is_empty()),
            Err(_) => assert!(!text.is_empty()),
        }
    }
    let bytes = Bytes::copy_from_slice(data);
    let packet = Packet::decode_binary(bytes.clone());
    assert_eq!(packet, Packet::BinaryMessage(bytes.clone()));
    let frame = packet.to_frame();
    assert!(!frame.is_text());
    assert_eq!(frame.bytes(), &bytes);
});
