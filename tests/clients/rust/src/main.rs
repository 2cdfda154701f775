//! rust_socketio against a Switchboard channel for a number of heartbeats.
//!
//! Usage: `heartbeat-client <origin> <socket.io path> <seconds>`
//!
//! Connects over WebSocket only, stays connected for `<seconds>` while the server pings, then emits
//! an event that asks for an acknowledgement. Prints one JSON line: how long it stayed connected,
//! every disconnect and error it saw, and whether the acknowledgement came back.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_socketio::{ClientBuilder, Event, Payload, TransportType};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, origin, path, seconds] = args.as_slice() else {
        eprintln!("usage: heartbeat-client <origin> <socket.io path> <seconds>");
        std::process::exit(2);
    };
    let seconds: f64 = seconds.parse().expect("seconds is a number");
    let disconnects = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = format!("{}{}", origin.trim_end_matches('/'), path);

    let started = Instant::now();
    let on_close = disconnects.clone();
    let on_error = errors.clone();
    let connected = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on(Event::Close, move |payload, _| {
            on_close.lock().unwrap().push(format!("{payload:?}"));
        })
        .on(Event::Error, move |payload, _| {
            on_error.lock().unwrap().push(format!("{payload:?}"));
        })
        .connect();
    let mut ack = serde_json::Value::Null;
    let mut connected_for_ms = 0;
    let mut unexpected_closes = Vec::new();
    match connected {
        Ok(client) => {
            let deadline = started + Duration::from_secs_f64(seconds);
            while Instant::now() < deadline && disconnects.lock().unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            }
            connected_for_ms = started.elapsed().as_millis();
            if disconnects.lock().unwrap().is_empty() {
                let (tx, rx) = mpsc::channel();
                let sent = client.emit_with_ack(
                    "still here",
                    json!({ "from": "rust" }),
                    Duration::from_secs(5),
                    move |payload: Payload, _| {
                        // rust_socketio hands over an ack's whole argument array as one value.
                        let args = match payload {
                            #[allow(deprecated)]
                            Payload::Text(mut values) if values.len() == 1 => values.remove(0),
                            other => json!(format!("unexpected ack payload: {other:?}")),
                        };
                        let _ = tx.send(args);
                    },
                );
                match sent {
                    Ok(()) => {
                        ack = rx
                            .recv_timeout(Duration::from_secs(5))
                            .unwrap_or(serde_json::Value::Null)
                    }
                    Err(error) => errors.lock().unwrap().push(error.to_string()),
                }
                // Our own disconnect below reports a close too; only the ones before it count.
                unexpected_closes = disconnects.lock().unwrap().clone();
                let _ = client.disconnect();
            } else {
                unexpected_closes = disconnects.lock().unwrap().clone();
            }
        }
        Err(error) => errors.lock().unwrap().push(error.to_string()),
    }
    let report = json!({
        "client": "rust_socketio",
        "connected_for_ms": connected_for_ms,
        "disconnects": unexpected_closes,
        "errors": errors.lock().unwrap().clone(),
        "ack": ack,
    });
    println!("{report}");
}
