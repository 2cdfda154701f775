//! An Engine.IO v4 polling body (records separated by `\x1e`, binary records `b<base64>`): decoding
//! never panics, the record-at-a-time decoder (`PayloadRecords`) agrees with `decode_payload`, and
//! what decodes encodes back to a body that decodes to the same packets.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_core::engineio::{
    Packet, PayloadRecords, decode_payload, encode_payload, record_len,
};
use switchboard_core::frame::WireFrame;

fuzz_target!(|body: &[u8]| {
    let decoded = decode_payload(body);
    // A POST's body is checked whole, then handed over a record at a time.
    match PayloadRecords::new(Bytes::copy_from_slice(body)) {
        Ok(mut records) => {
            let packets = decoded
                .as_ref()
                .expect("PayloadRecords took a body decode_payload refused");
            for (index, packet) in packets.iter().enumerate() {
                assert!(
                    !records.is_done(),
                    "done after {index} of {} records",
                    packets.len()
                );
                assert_eq!(records.next().as_ref(), Some(packet), "record {index}");
            }
            assert!(records.is_done());
            assert_eq!(records.next(), None);
        }
        Err(error) => assert_eq!(decoded.as_ref().err(), Some(&error)),
    }
    let Ok(packets) = decoded else {
        return;
    };
    assert!(
        !packets.is_empty(),
        "a decoded body has at least one packet"
    );
    let frames: Vec<WireFrame> = packets.iter().map(Packet::to_frame).collect();
    let encoded = encode_payload(&frames);
    let separators = frames.len() - 1;
    let expected_len: usize = frames.iter().map(record_len).sum::<usize>() + separators;
    assert_eq!(
        encoded.len(),
        expected_len,
        "record_len agrees with encode_payload"
    );
    assert_eq!(
        decode_payload(&encoded).as_ref(),
        Ok(&packets),
        "re-encoded body {encoded:?} decodes differently"
    );
    // Text records travel verbatim: a body without binary records comes back byte for byte.
    if !packets
        .iter()
        .any(|p| matches!(p, Packet::BinaryMessage(_)))
    {
        assert_eq!(&encoded[..], body);
    }
});
