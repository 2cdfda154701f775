//! HTTP hygiene of the native server, in-process on 127.0.0.1: slow clients are cut off by the head,
//! idle and body timeouts (but never a long-polling GET the channel holds, nor a WebSocket), the
//! connection caps answer with 503 or 429 while `/healthz` and open connections keep working, and
//! an address opening sessions too fast, or holding too many, is told so. Small limits keep every
//! test short; each is bounded by a timeout of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_core::config::Config;
use switchboard_native::Options;
use switchboard_native::limits::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret";

struct Server {
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Limits small enough for tests; the per-address ones off unless a test sets them.
fn test_limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(1500),
        body_timeout: Duration::from_millis(1000),
        send_timeout: Duration::from_millis(1000),
        max_connections: None,
        max_connections_per_ip: 0,
        session_rate_per_ip: 0.0,
        session_burst_per_ip: 1,
        max_sessions_per_ip: 0,
    }
}

async fn start(limits: Limits) -> Server {
    start_with(limits, None).await
}

async fn start_with(limits: Limits, assets: Option<std::path::PathBuf>) -> Server {
    start_configured(limits, Config::embedded_default(), assets).await
}

async fn start_configured(
    limits: Limits,
    config: Config,
    assets: Option<std::path::PathBuf>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut options = Options::new(Arc::new(config), Some(Arc::from(SECRET)));
    options.limits = limits;
    options.assets = assets;
    tokio::spawn(switchboard_native::serve(listener, options, async {
        let _ = stopped.await;
    }));
    Server {
        address,
        _stop: stop,
    }
}

/// Runs a test's body, failing it if it takes longer than `seconds`.
async fn bounded<T>(seconds: u64, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), test)
        .await
        .expect("the test took too long")
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lowercase names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// Reads one response (its body by `content-length`); `None` if the connection ends first.
async fn read_reply(stream: &mut TcpStream) -> Option<Reply> {
    let mut bytes = Vec::new();
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => bytes.extend_from_slice(&chunk[..read]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => body.extend_from_slice(&chunk[..read]),
        }
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Sends `request` and reads its response.
async fn exchange(stream: &mut TcpStream, request: &str) -> Reply {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(stream)
        .await
        .unwrap_or_else(|| panic!("no answer to {request:?}"))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SECRET}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One request on a connection of its own.
async fn request_once(address: SocketAddr, request: &str) -> Reply {
    let mut stream = TcpStream::connect(address).await.unwrap();
    exchange(&mut stream, request).await
}

/// Waits until the server closes `stream`, reading (and dropping) anything it sends; returns how
/// long that took, or panics after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection past {bound:?}"
    );
    start.elapsed()
}

/// Whether the server has neither answered on `stream` nor closed it, by now.
async fn still_waiting(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(20), stream.peek(&mut byte))
        .await
        .is_err()
}

/// The sid of a new polling session on `path`.
async fn polling_handshake(address: SocketAddr, path: &str) -> String {
    let reply = request_once(address, &get(&format!("{path}?EIO=4&transport=polling"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).unwrap();
    open["sid"].as_str().unwrap().to_string()
}

type TestSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket client connected to the default namespace of `channel`.
async fn join(address: SocketAddr, channel: &str) -> TestSocket {
    let tcp = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/socket.io/{channel}/?EIO=4&transport=websocket");
    let (mut socket, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let open = socket.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with("0{"));
    socket.send(Message::text("40")).await.unwrap();
    let connected = socket.next().await.unwrap().unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(&connected.to_text().unwrap()[2..]).unwrap();
    assert!(reply["sid"].is_string(), "{reply}");
    socket
}

/// The next Socket.IO event a WebSocket client receives, without the offset that connection-state
/// recovery (on for `chats/:id` in the embedded default) appends: `42["tick",1]`. Presence
/// events (presence is on there too) are skipped, as a client without a handler for them would.
async fn next_event(socket: &mut TestSocket) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.starts_with("42") => {
                let mut event: serde_json::Value = serde_json::from_str(&text[2..]).unwrap();
                if event[0] == "switchboard:presence" {
                    continue;
                }
                if let Some(items) = event.as_array_mut()
                    && items.len() > 2
                    && items
                        .last()
                        .is_some_and(|last| last.as_str().is_some_and(|s| s.contains('.')))
                {
                    items.pop();
                }
                return format!("42{event}");
            }
            Some(Ok(_)) => {}
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
}

fn emit_request(channel: &str, n: usize) -> String {
    post(
        "/emit",
        &format!(r#"{{"channel":"{channel}","event":"tick","data":{n}}}"#),
    )
}

#[tokio::test]
async fn slowloris_connections_are_closed_by_the_head_timeout() {
    bounded(15, async {
        let server = start(test_limits()).await;
        let bound = Duration::from_millis(500 + 2000);
        let open = |sent: &'static [u8]| async move {
            let mut stream = TcpStream::connect(server.address).await.unwrap();
            stream.write_all(sent).await.unwrap();
            stream
        };
        // Nothing at all, half a request line, unfinished headers.
        let mut idle = open(b"").await;
        let mut request_line = open(b"GET /heal").await;
        let mut headers = open(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n").await;
        // A head dripping in a byte at a time: activity does not restart its clock.
        let mut drip = open(b"GET /healthz HTTP/1.1\r\n").await;
        let dripping = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if drip.write_all(b"X").await.is_err() {
                    return start.elapsed();
                }
                if start.elapsed() > Duration::from_secs(6) {
                    panic!("the server took a head sent a byte at a time for 6 s");
                }
            }
        });
        let (a, b, c) = tokio::join!(
            closed_within(&mut idle, bound),
            closed_within(&mut request_line, bound),
            closed_within(&mut headers, bound),
        );
        for took in [a, b, c] {
            assert!(took >= Duration::from_millis(300), "closed early: {took:?}");
        }
        let dripped = dripping.await.unwrap();
        assert!(dripped < Duration::from_secs(4), "{dripped:?}");
    })
    .await;
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_closed() {
    bounded(15, async {
        let server = start(test_limits()).await;
        // A promised 10 MB is over the API's limit: refused at once, on the header alone.
        let mut oversized = TcpStream::connect(server.address).await.unwrap();
        let head = format!(
            "POST /emit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SECRET}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{\"channel\""
        );
        oversized.write_all(head.as_bytes()).await.unwrap();
        let reply = read_reply(&mut oversized).await.expect("an immediate 413");
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(reply.json()["error"], "payload_too_large");
        // Ten bytes of a promised ten thousand, to the API.
        let mut api = TcpStream::connect(server.address).await.unwrap();
        let head = format!(
            "POST /emit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SECRET}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{\"channel\""
        );
        api.write_all(head.as_bytes()).await.unwrap();
        // Ten bytes of a promised thousand, to a polling session.
        let sid = polling_handshake(server.address, "/socket.io/").await;
        let mut polling = TcpStream::connect(server.address).await.unwrap();
        let head = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000\r\n\r\n4hello wor"
        );
        polling.write_all(head.as_bytes()).await.unwrap();

        let start = Instant::now();
        for stream in [&mut api, &mut polling] {
            let reply = read_reply(stream).await.expect("a 408 before the close");
            assert_eq!(reply.status, 408, "{reply:?}");
            assert_eq!(reply.header("connection"), Some("close"));
            assert_eq!(reply.json()["error"], "request_timeout");
            closed_within(stream, Duration::from_secs(2)).await;
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(4), "{took:?}");
    })
    .await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    bounded(15, async {
        let server = start(test_limits()).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        assert_eq!(exchange(&mut stream, &get("/healthz")).await.status, 200);
        // Longer than the head timeout: between requests it does not apply.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(exchange(&mut stream, &get("/healthz")).await.status, 200);
        let idle = closed_within(&mut stream, Duration::from_millis(1500 + 2500)).await;
        assert!(
            idle >= Duration::from_millis(1200),
            "closed early: {idle:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_held_long_polling_get_and_a_websocket_outlive_every_timeout() {
    bounded(20, async {
        let server = start(test_limits()).await;
        let mut socket = join(server.address, "chats/held").await;
        let sid = polling_handshake(server.address, "/socket.io/").await;
        let mut held = TcpStream::connect(server.address).await.unwrap();
        let poll = get(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
        held.write_all(poll.as_bytes()).await.unwrap();

        // Past the head, idle and body timeouts together.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            still_waiting(&mut held).await,
            "the held GET was answered or cut before its channel had anything for it"
        );

        // The channel answers the held GET once it has something for it.
        let connect = request_once(
            server.address,
            &post(
                &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
                "40",
            ),
        )
        .await;
        assert_eq!(connect.status, 200, "{connect:?}");
        let reply = read_reply(&mut held).await.expect("the held GET's answer");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.body.starts_with("40{"), "{reply:?}");

        // The WebSocket still receives.
        let emitted = request_once(server.address, &emit_request("chats/held", 1)).await;
        assert_eq!(emitted.json()["delivered"], 1, "{emitted:?}");
        assert_eq!(next_event(&mut socket).await, r#"42["tick",1]"#);
    })
    .await;
}

#[tokio::test]
async fn over_the_connection_cap_new_requests_get_503_but_health_checks_and_open_connections_work()
{
    bounded(15, async {
        let server = start(Limits {
            max_connections: Some(2),
            ..test_limits()
        })
        .await;
        // Two connections served: a WebSocket, and a kept-alive one.
        let mut socket = join(server.address, "chats/cap").await;
        let mut kept = TcpStream::connect(server.address).await.unwrap();
        assert_eq!(exchange(&mut kept, &get("/healthz")).await.status, 200);

        // A third: refused with a JSON body, then closed.
        let mut third = TcpStream::connect(server.address).await.unwrap();
        let refused = exchange(&mut third, &get("/socket.io/?EIO=4&transport=polling")).await;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert_eq!(refused.header("connection"), Some("close"));
        assert_eq!(refused.json()["error"], "server_busy");
        assert!(refused.json()["message"].is_string());
        closed_within(&mut third, Duration::from_secs(2)).await;

        // Health checks are still answered.
        let health = request_once(server.address, &get("/healthz")).await;
        assert_eq!(health.status, 200, "{health:?}");

        // The connections already open work: the API call reaches the WebSocket.
        for n in 0..3 {
            let emitted = exchange(&mut kept, &emit_request("chats/cap", n)).await;
            assert_eq!(emitted.json()["delivered"], 1, "{emitted:?}");
            assert_eq!(next_event(&mut socket).await, format!(r#"42["tick",{n}]"#));
        }
    })
    .await;
}

#[tokio::test]
async fn an_address_over_its_connection_cap_gets_429() {
    bounded(15, async {
        let server = start(Limits {
            max_connections_per_ip: 2,
            ..test_limits()
        })
        .await;
        let mut first = TcpStream::connect(server.address).await.unwrap();
        assert_eq!(exchange(&mut first, &get("/healthz")).await.status, 200);
        let mut second = TcpStream::connect(server.address).await.unwrap();
        assert_eq!(exchange(&mut second, &get("/healthz")).await.status, 200);

        let mut third = TcpStream::connect(server.address).await.unwrap();
        let refused = exchange(&mut third, &get("/socket.io/?EIO=4&transport=polling")).await;
        assert_eq!(refused.status, 429, "{refused:?}");
        assert_eq!(refused.header("connection"), Some("close"));
        assert_eq!(refused.header("content-type"), Some("application/json"));
        let body = refused.json();
        assert_eq!(body["error"], "too_many_connections");
        assert!(
            body["message"].as_str().unwrap().contains("at most 2"),
            "{body}"
        );
        closed_within(&mut third, Duration::from_secs(2)).await;

        // Once one closes, the address may connect again.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let reply =
                request_once(server.address, &get("/socket.io/?EIO=4&transport=polling")).await;
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 429, "{reply:?}");
            assert!(
                Instant::now() < deadline,
                "the closed connection still counts"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(second);
    })
    .await;
}

#[tokio::test]
async fn an_address_opening_sessions_too_fast_gets_429() {
    bounded(15, async {
        let server = start(Limits {
            session_rate_per_ip: 0.01,
            session_burst_per_ip: 2,
            ..test_limits()
        })
        .await;
        let sid = polling_handshake(server.address, "/socket.io/").await;
        polling_handshake(server.address, "/socket.io/chats/1/").await;

        // A third handshake, polling or WebSocket, is refused.
        let refused = request_once(
            server.address,
            &get("/socket.io/chats/2/?EIO=4&transport=polling"),
        )
        .await;
        assert_eq!(refused.status, 429, "{refused:?}");
        assert_eq!(refused.json()["error"], "too_many_sessions");
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{refused:?}");
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            server.address
        );
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
            }
            other => panic!("expected a 429 to the WebSocket handshake, got {other:?}"),
        }

        // Requests of a session already open are not handshakes.
        let connect = request_once(
            server.address,
            &post(
                &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
                "40",
            ),
        )
        .await;
        assert_eq!(connect.status, 200, "{connect:?}");
        assert_eq!(connect.body, "ok");
        // Nor are other endpoints limited.
        assert_eq!(
            request_once(server.address, &get("/healthz")).await.status,
            200
        );
    })
    .await;
}

/// The status of a polling handshake on `path`.
async fn handshake_status(address: SocketAddr, path: &str) -> Reply {
    request_once(address, &get(&format!("{path}?EIO=4&transport=polling"))).await
}

/// Retries a polling handshake on `path` until it is answered 200 (it may be refused 429 meanwhile:
/// a session's end reaches the count just after its client hears of it); returns the sid.
async fn handshake_once_room(address: SocketAddr, path: &str, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reply = handshake_status(address, path).await;
        if reply.status == 200 {
            let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).unwrap();
            return open["sid"].as_str().unwrap().to_string();
        }
        assert_eq!(reply.status, 429, "{reply:?}");
        assert!(Instant::now() < deadline, "{why}: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a polling and a WebSocket handshake on `path` are refused for the session cap.
async fn assert_session_cap(address: SocketAddr, path: &str, cap: usize) {
    let refused = handshake_status(address, path).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let body = refused.json();
    assert_eq!(body["error"], "too_many_sessions_open", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("at most {cap}")),
        "{body}"
    );
    let url = format!("ws://{address}{path}?EIO=4&transport=websocket");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("expected a 429 to the WebSocket handshake, got {other:?}"),
    }
}

fn close_session(path: &str, sid: &str) -> String {
    post(&format!("{path}?EIO=4&transport=polling&sid={sid}"), "1")
}

#[tokio::test]
async fn an_address_holding_its_most_sessions_gets_429_until_one_ends() {
    bounded(15, async {
        let server = start(Limits {
            max_sessions_per_ip: 5,
            ..test_limits()
        })
        .await;
        // Five polling sessions that stay open, on two channels: the count is the address's.
        let mut sids = Vec::new();
        for path in ["/socket.io/"; 3]
            .into_iter()
            .chain(["/socket.io/chats/1/"; 2])
        {
            sids.push((path, polling_handshake(server.address, path).await));
        }

        // The sixth handshake, polling or WebSocket, on any channel, is refused.
        assert_session_cap(server.address, "/socket.io/chats/2/", 5).await;
        assert_session_cap(server.address, "/socket.io/", 5).await;
        // Health checks, and the requests of sessions already open, are not handshakes.
        assert_eq!(
            request_once(server.address, &get("/healthz")).await.status,
            200
        );
        let (path, sid) = &sids[1];
        let connect = request_once(
            server.address,
            &post(&format!("{path}?EIO=4&transport=polling&sid={sid}"), "40"),
        )
        .await;
        assert_eq!((connect.status, connect.body.as_str()), (200, "ok"));

        // A session its client closes makes room for one more.
        let (path, sid) = &sids[0];
        let closed = request_once(server.address, &close_session(path, sid)).await;
        assert_eq!((closed.status, closed.body.as_str()), (200, "ok"));
        handshake_once_room(
            server.address,
            "/socket.io/chats/2/",
            "a closed session still counts",
        )
        .await;
        assert_session_cap(server.address, "/socket.io/", 5).await;

        // WebSocket sessions count too, until their socket closes.
        let (path, sid) = &sids[1];
        let closed = request_once(server.address, &close_session(path, sid)).await;
        assert_eq!(closed.status, 200, "{closed:?}");
        let socket = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let url = format!(
                    "ws://{}/socket.io/chats/3/?EIO=4&transport=websocket",
                    server.address
                );
                match tokio_tungstenite::connect_async(url).await {
                    Ok((mut socket, _)) => {
                        let open = socket.next().await.unwrap().unwrap();
                        assert!(open.to_text().unwrap().starts_with("0{"));
                        break socket;
                    }
                    Err(tokio_tungstenite::tungstenite::Error::Http(response))
                        if response.status() == 429 =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
        })
        .await
        .expect("a closed session still counts");
        assert_session_cap(server.address, "/socket.io/", 5).await;
        drop(socket);
        handshake_once_room(
            server.address,
            "/socket.io/",
            "a closed WebSocket still counts",
        )
        .await;
        assert_session_cap(server.address, "/socket.io/", 5).await;
    })
    .await;
}

#[tokio::test]
async fn handshakes_that_open_nothing_and_sessions_lost_to_a_rebuild_stop_counting() {
    bounded(15, async {
        // The default channel holds one session waiting for its CONNECT at most: further
        // WebSocket handshakes there are accepted, then closed with 1013, having opened nothing.
        let config = Config::from_json(
            r#"{
                "DEBUG_ENDPOINTS": true,
                "CHANNELS": {
                    "/": { "relay": "all", "max_pending_sessions": 1 },
                    "chats/:id": { "relay": "all" }
                }
            }"#,
        )
        .unwrap();
        let server = start_configured(
            Limits {
                max_sessions_per_ip: 3,
                ..test_limits()
            },
            config,
            None,
        )
        .await;
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            server.address
        );
        let (mut waiting, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let open = waiting.next().await.unwrap().unwrap();
        assert!(open.to_text().unwrap().starts_with("0{"));
        for _ in 0..4 {
            let (mut refused, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            match refused.next().await {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013),
                other => panic!("expected a 1013 close, got {other:?}"),
            }
        }
        // Only the waiting WebSocket counts: two more sessions fit, a third does not.
        let why = "a handshake that opened nothing still counts";
        handshake_once_room(server.address, "/socket.io/chats/1/", why).await;
        handshake_once_room(server.address, "/socket.io/chats/1/", why).await;
        assert_session_cap(server.address, "/socket.io/chats/2/", 3).await;

        // A rebuild loses the polling sessions (their slots go) and keeps the WebSocket one (its
        // slot stays).
        for (channel, kept) in [("chats/1", 0), ("", 1)] {
            let rebuilt = request_once(
                server.address,
                &post(&format!("/__debug/rebuild/{channel}"), ""),
            )
            .await;
            assert_eq!(rebuilt.status, 200, "{rebuilt:?}");
            assert_eq!(rebuilt.json()["rebuilt_sessions"], kept, "{rebuilt:?}");
        }
        handshake_once_room(
            server.address,
            "/socket.io/chats/2/",
            "rebuilt away, still counts",
        )
        .await;
        handshake_once_room(
            server.address,
            "/socket.io/chats/2/",
            "rebuilt away, still counts",
        )
        .await;
        assert_session_cap(server.address, "/socket.io/chats/2/", 3).await;

        // The restored session still counts until it ends.
        drop(waiting);
        handshake_once_room(
            server.address,
            "/socket.io/chats/3/",
            "a restored session leaked",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_reads_none_of_its_response_is_dropped_after_the_send_timeout() {
    bounded(20, async {
        const SIZE: usize = 32 * 1024 * 1024;
        let folder =
            std::env::temp_dir().join(format!("switchboard-http-limits-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("big.bin"), vec![b'x'; SIZE]).unwrap();
        let server = start_with(test_limits(), Some(folder.clone())).await;

        // Far more than the kernel buffers hold, to a client that takes little and reads nothing.
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(4096).unwrap();
        let mut stream = tcp.connect(server.address).await.unwrap();
        stream.write_all(get("/big.bin").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000 + 2000)).await;

        // What the kernel had buffered arrives, then the end, long before the whole file.
        let mut received = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received += read,
            }
            assert!(received < SIZE, "the server was still sending");
        }
        std::fs::remove_dir_all(&folder).unwrap();
    })
    .await;
}
