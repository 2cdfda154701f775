//! The native server in-process: what only the host can show (graceful shutdown, routing before any
//! channel exists). Protocol behaviour is covered by the conformance suite in `tests/`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_core::config::Config;
use switchboard_native::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

struct Server {
    address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// This server's WebSocket tasks.
    websockets: tokio_util::task::TaskTracker,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = Options::new(
        Arc::new(Config::embedded_default()),
        Some(Arc::from("test-secret")),
    );
    let websockets = options.websockets.clone();
    let task = tokio::spawn(switchboard_native::serve(listener, options, async {
        let _ = stopped.await;
    }));
    Server {
        address,
        stop: Some(stop),
        task,
        websockets,
    }
}

type TestSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket on `channel` over `tcp` and reads the Engine.IO open packet.
async fn open_websocket(tcp: TcpStream, channel: &str) -> TestSocket {
    let address = tcp.peer_addr().unwrap();
    let url = format!("ws://{address}/socket.io/{channel}/?EIO=4&transport=websocket");
    let (mut socket, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let open = socket.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with("0{"));
    socket
}

/// A WebSocket client connected to the default namespace of `channel`.
async fn join_over(tcp: TcpStream, channel: &str) -> TestSocket {
    let mut socket = open_websocket(tcp, channel).await;
    socket.send(Message::text("40")).await.unwrap();
    let connected = socket.next().await.unwrap().unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(&connected.to_text().unwrap()[2..]).unwrap();
    assert!(reply["sid"].is_string(), "{reply}");
    socket
}

async fn join(address: std::net::SocketAddr, channel: &str) -> TestSocket {
    join_over(TcpStream::connect(address).await.unwrap(), channel).await
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
    let mut socket = join(server.address, "chats/1").await;

    server.stop.take().unwrap().send(()).unwrap();
    // The client sees a close frame saying the server is going away, not a dropped connection
    // (after any event already on its way: presence is on for chats/:id).
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await.unwrap().unwrap() {
                Message::Text(_) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("close arrives");
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

/// POSTs one emit to the HTTP API and returns the status line.
async fn emit(address: std::net::SocketAddr, body: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /emit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer test-secret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_others_get_everything() {
    let server = start().await;
    let mut reader = join(server.address, "chats/slow").await;
    // The slow client takes little into its kernel buffer and then reads nothing at all.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let slow = join_over(tcp.connect(server.address).await.unwrap(), "chats/slow").await;

    // 20 MB of broadcasts: more than the kernel buffers plus the 8 MiB a connection may queue.
    const EMITS: usize = 320;
    let filler = "x".repeat(64 * 1024);
    let receiving = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < EMITS {
            match reader.next().await {
                Some(Ok(Message::Text(text)))
                    if text.starts_with("42") && !text.contains("switchboard:presence") =>
                {
                    let at = text.find("\"n\":").unwrap() + 4;
                    let n: usize = text[at..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    received.push(n);
                }
                Some(Ok(_)) => {}
                other => panic!("the reading client lost its connection: {other:?}"),
            }
        }
        (reader, received)
    });
    for n in 0..EMITS {
        let body = format!(
            r#"{{"channel":"chats/slow","event":"big","data":{{"n":{n},"pad":"{filler}"}}}}"#
        );
        let status = emit(server.address, &body).await;
        assert!(status.contains("200"), "{status}");
    }
    let (reader, received) = tokio::time::timeout(Duration::from_secs(30), receiving)
        .await
        .expect("the reading client gets every event")
        .unwrap();
    assert_eq!(
        received,
        (0..EMITS).collect::<Vec<_>>(),
        "all, once, in order"
    );

    // The slow client was let go. Its task, blocked writing to a client that reads nothing, gives up
    // after a short grace: only the reader's connection is left.
    let open = || server.websockets.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while open() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open(), 1, "the server still holds the slow connection");
    drop((slow, reader));
}

#[tokio::test]
async fn websocket_handshakes_follow_rfc_6455() {
    let server = start().await;
    let path = "/socket.io/chats/1/?EIO=4&transport=websocket";
    let handshake = |version: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    // An unsupported version is told which one the server speaks.
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(handshake("8").as_bytes()).await.unwrap();
    let mut response = vec![0u8; 1024];
    let read = stream.read(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response[..read]).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 426"), "{response}");
    assert!(response.contains("sec-websocket-version: 13"), "{response}");

    // Version 13 is switched, with the accept value of RFC 6455's own example.
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(handshake("13").as_bytes()).await.unwrap();
    let mut response = vec![0u8; 1024];
    let read = stream.read(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response[..read]).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 101"), "{response}");
    assert!(
        response.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{response}"
    );
}

#[tokio::test]
async fn a_close_from_the_client_is_answered() {
    let server = start().await;
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let mut socket = open_websocket(tcp, "chats/1").await;
    socket.close(None).await.unwrap();
    // The server's close reply ends the stream cleanly (no abrupt reset).
    let ending = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
            }
        }
    })
    .await
    .expect("the server answers the close");
    assert!(ending.is_ok(), "{ending:?}");
}

#[tokio::test]
async fn a_crowded_channel_keeps_every_client() {
    let server = start().await;
    // Everyone sends at once, far more than the channel's queue holds, and everyone reads.
    const CLIENTS: usize = 100;
    const EACH: usize = 100;
    let mut sockets = Vec::new();
    for _ in 0..CLIENTS {
        sockets.push(join(server.address, "chats/crowded").await);
    }
    let start_line = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let start_line = start_line.clone();
        clients.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            start_line.wait().await;
            let sending = tokio::spawn(async move {
                for n in 0..EACH {
                    let event = format!(r#"42["say",{{"from":{index},"n":{n}}}]"#);
                    sink.feed(Message::text(event)).await.unwrap();
                }
                sink.flush().await.unwrap();
                sink
            });
            let mut received = 0;
            while received < CLIENTS * EACH {
                match stream.next().await {
                    Some(Ok(Message::Text(text))) if text.starts_with("42") => received += 1,
                    Some(Ok(_)) => {}
                    other => {
                        panic!("client {index} lost its connection after {received}: {other:?}")
                    }
                }
            }
            let _sink = sending.await.unwrap();
            received
        }));
    }
    for client in clients {
        let received = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("every client gets every event")
            .unwrap();
        assert_eq!(received, CLIENTS * EACH);
    }
}
