//! Codec benchmarks: the per-message costs on the hot path of a realtime server.
//!
//! - `decode`: an incoming event frame (Engine.IO + Socket.IO) and a polling POST body.
//! - `encode`: an outgoing event frame and a polling GET body of 10 frames.
//! - `broadcast_1000`: one ~100-byte event to 1,000 recipients, encoded once and shared versus
//!   encoded per recipient; the gap is why hosts fan out [`WireFrame`] clones.
//!
//! Run with `cargo bench -p switchboard-core --bench codec -- --quick`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use switchboard_core::engineio::{self, decode_payload, encode_payload};
use switchboard_core::frame::WireFrame;
use switchboard_core::socketio::{self, placeholder};

const RECIPIENTS: usize = 1000;

/// A typical chat event, about 100 bytes on the wire.
fn chat_event() -> socketio::Packet {
    socketio::Packet::event(
        "/chat",
        json!([
            "message",
            {"room": "lobby", "user": "alice", "text": "hello everyone, how is it going?", "ts": 1_700_000_000_000u64}
        ]),
        Some(42),
        0,
    )
}

/// Ten frames as queued for a polling client: events, a ping, and a binary event with its attachment.
fn polling_frames() -> Vec<WireFrame> {
    let mut frames: Vec<WireFrame> = (0..7).map(|_| chat_event().to_frame()).collect();
    frames.push(engineio::Packet::Ping { probe: false }.to_frame());
    frames.push(socketio::Packet::event("/", json!(["file", placeholder(0)]), None, 1).to_frame());
    frames.push(WireFrame::binary(Bytes::from(vec![0xA5; 64])));
    frames
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");

    let frame = chat_event().to_frame();
    let text = frame.as_text().unwrap_or_default().to_owned();
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("event_text_frame", |b| {
        b.iter(|| match engineio::Packet::decode_text(black_box(&text)) {
            Ok(engineio::Packet::Message(message)) => socketio::Packet::decode(&message).ok(),
            _ => None,
        })
    });

    let body = encode_payload(&polling_frames());
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("polling_payload_10_records", |b| {
        b.iter(|| decode_payload(black_box(&body)))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");

    let packet = chat_event();
    group.bench_function("event_frame", |b| b.iter(|| black_box(&packet).to_frame()));

    let frames = polling_frames();
    group.bench_function("polling_payload_10_frames", |b| {
        b.iter(|| encode_payload(black_box(&frames)))
    });
    group.finish();
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast_1000");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    let packet = chat_event();

    group.bench_function("encode_once_clone_frame", |b| {
        b.iter(|| {
            let frame = black_box(&packet).to_frame();
            (0..RECIPIENTS)
                .map(|_| frame.clone())
                .collect::<Vec<WireFrame>>()
        })
    });
    group.bench_function("encode_per_recipient", |b| {
        b.iter(|| {
            (0..RECIPIENTS)
                .map(|_| black_box(&packet).to_frame())
                .collect::<Vec<WireFrame>>()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode, broadcast);
criterion_main!(benches);
