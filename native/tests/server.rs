//! The native server in-process: what only the host can show (graceful shutdown, routing before any
//! channel exists). Protocol behaviour is covered by the conformance suite in `tests/`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_core::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

struct Server {
    address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Arc::new(Config::embedded_default());
    let task = tokio::spawn(switchboard_native::serve(
        listener,
        config,
        Some(Arc::from("test-secret")),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        address,
        stop: Some(stop),
        task,
    }
}

/// A bare HTTP/1.1 GET; returns the status line and body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn unknown_channels_are_refused_before_any_state_exists() {
    let server = start().await;
    let (status, body) = http_get(
        server.address,
        "/socket.io/no/such/channel/?EIO=4&transport=polling",
    )
    .await;
    assert!(status.contains("404"), "{status}");
    assert!(body.contains("unknown_channel"), "{body}");
    let (status, _) = http_get(server.address, "/socket.io/bad..name/x//y/?EIO=4").await;
    assert!(status.contains("400"), "{status}");
}

#[tokio::test]
async fn shutdown_closes_websockets_and_returns() {
    let mut server = start().await;
    let url = format!(
        "ws://{}/socket.io/chats/1/?EIO=4&transport=websocket",
        server.address
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = socket.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with("0{"));
    socket.send(Message::text("40")).await.unwrap();
    let connected = socket.next().await.unwrap().unwrap();
    assert!(connected.to_text().unwrap().starts_with("40{\"sid\""));

    server.stop.take().unwrap().send(()).unwrap();
    // The client sees a close frame saying the server is going away, not a dropped connection.
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("close arrives")
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(socket);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
