//! A Socket.IO v5 packet followed by its binary attachments.
//!
//! The input is a polling-like body: the first record (up to the first `\x1e`) is the packet's text
//! (without the Engine.IO `4`), every later record one attachment's bytes. Decoding never panics;
//! what decodes encodes back to the same packet; binary packets pass placeholder validation and
//! reassemble after exactly the announced number of attachments, and refuse one more.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_core::socketio::{
    Packet, PartialBinaryPacket, SioDecodeError, validate_placeholders,
};

fuzz_target!(|data: &[u8]| {
    let mut records = data.split(|byte| *byte == 0x1e);
    let Some(Ok(text)) = records.next().map(std::str::from_utf8) else {
        return;
    };
    let attachments: Vec<Bytes> = records.map(Bytes::copy_from_slice).collect();

    let Ok(packet) = Packet::decode(text) else {
        return;
    };
    let encoded = packet.encode();
    assert_eq!(
        Packet::decode(&encoded).as_ref(),
        Ok(&packet),
        "{text:?} decoded, re-encoded as {encoded:?}, decodes differently"
    );
    let frame = packet.to_frame();
    assert_eq!(frame.as_text(), Some(format!("4{encoded}").as_str()));
    let _ = packet.event_name();

    if !packet.kind.is_binary() {
        assert_eq!(packet.attachments, 0);
        return;
    }
    if let Some(data) = &packet.data {
        assert_eq!(validate_placeholders(data, packet.attachments), Ok(()));
    }
    if packet.attachments == 0 {
        return; // complete already: hosts handle it directly
    }

    // Reassembly, with the collector stored and read back half-way as a snapshot would be.
    let mut partial = PartialBinaryPacket::new(packet.clone());
    let mut done = None;
    for (index, attachment) in attachments.iter().enumerate() {
        let result = partial.push(attachment.clone());
        if index + 1 < packet.attachments {
            assert_eq!(result, Ok(None));
            assert_eq!(partial.received(), &attachments[..=index]);
            assert_eq!(partial.packet(), &packet);
            let stored = serde_json::to_string(&partial).expect("a partial packet serializes");
            let restored: PartialBinaryPacket =
                serde_json::from_str(&stored).expect("a stored partial packet reads back");
            assert_eq!(restored, partial);
            partial = restored;
        } else if index + 1 == packet.attachments {
            let expected = (packet.clone(), attachments[..=index].to_vec());
            assert_eq!(result.as_ref(), Ok(&Some(expected)));
            done = result.ok().flatten();
        } else {
            assert_eq!(result, Err(SioDecodeError::UnexpectedAttachment));
        }
    }
    if attachments.len() >= packet.attachments {
        assert!(done.is_some());
    }
});
