//! `switchboard-loadgen`: real Socket.IO connections over WebSocket against any server that speaks
//! Engine.IO v4 / Socket.IO v5 (Switchboard, socket.io, socketioxide, the raw baseline).
//!
//! - `idle`: opens N connections, waits, and reads the server's RSS from `/proc/<pid>/status`, before
//!   and after, to give the memory one idle connection costs.
//! - `fanout`: N receivers in one channel; a sender (a client event relayed to all, or `POST /emit`)
//!   broadcasts `tick` events carrying a sequence number and a send timestamp. Every receiver checks
//!   that it sees every event exactly once and in order, and records the end-to-end latency.
//!   `--rate 0` saturates (a window of events in flight), `--rate R` sends R events per second.
//!
//! - `handler`: ack round trips of client events answered by a backend handler, against the same
//!   trivial backend called directly over HTTP (see `handler.rs`).
//!
//! Everything runs on 127.0.0.1, bounded by `--clients` and `--seconds`; the result is one JSON line.

mod handler;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(about = "Load generator for Socket.IO servers")]
struct Cli {
    /// host:port of the server under test.
    #[arg(long, default_value = "127.0.0.1:3000")]
    server: String,
    /// Engine.IO path of the channel.
    #[arg(long, default_value = "/socket.io/chats/bench/")]
    path: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Memory per idle connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Server process whose RSS is read.
        #[arg(long)]
        pid: u32,
        /// Time to let the server settle after the last connection.
        #[arg(long, default_value_t = 3)]
        settle_seconds: u64,
    },
    /// Broadcast throughput and latency.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events per second; 0 saturates with `window` events in flight.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 8)]
        window: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// `client`: a client event the server relays to everyone; `emit`: POST /emit.
        #[arg(long, default_value = "client")]
        driver: String,
        #[arg(long, default_value = "bench-secret")]
        secret: String,
        /// Bytes of filler in each event.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Server process whose CPU time is read while sending: CPU per delivery does not depend
        /// on how much of the machine the load generator itself takes.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Client events answered by a backend handler, or the backend called directly.
    Handler {
        /// `switchboard`: emits with acks through the channel's `work` handler; `direct`: the
        /// backend called over HTTP.
        #[arg(long, default_value = "switchboard")]
        mode: String,
        /// Port of the trivial backend this process runs (the channel's backend_url).
        #[arg(long, default_value_t = 4300)]
        backend_port: u16,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Calls per second in all; 0 saturates with `window` calls in flight per client.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        pid: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    let cli = Cli::parse();
    match cli.command {
        Command::Handler {
            ref mode,
            backend_port,
            clients,
            rate,
            window,
            seconds,
            pid,
        } => {
            let plan = handler::HandlerPlan {
                backend_port,
                through_switchboard: mode == "switchboard",
                clients,
                rate,
                window,
                seconds,
                server_pid: pid,
            };
            handler::run(&cli.server, &cli.path, plan).await
        }
        Command::Idle {
            clients,
            pid,
            settle_seconds,
        } => idle(&cli.server, &cli.path, clients, pid, settle_seconds).await,
        Command::Fanout {
            clients,
            rate,
            window,
            seconds,
            ref driver,
            ref secret,
            payload,
            pid,
        } => {
            fanout(
                &cli.server,
                &cli.path,
                FanoutPlan {
                    clients,
                    rate,
                    window,
                    seconds,
                    emit_driver: driver == "emit",
                    secret: secret.clone(),
                    payload,
                    server_pid: pid,
                },
            )
            .await
        }
    }
}

/// 10,000 sockets need more than the usual 1,024 descriptors.
fn raise_fd_limit() {
    // Safe libc-free approach: the shell that starts us raises `ulimit -n`; report if it did not.
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
    {
        let soft: u64 = line
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if soft < 12_000 {
            eprintln!("warning: open files limit is {soft}; run `ulimit -n 65536` first");
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket, completes the Engine.IO handshake and joins namespace `/`.
/// Opens `clients` connections, at most 200 handshakes at a time.
async fn connect_many(server: &str, path: &str, clients: usize) -> anyhow::Result<Vec<Socket>> {
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let permit = gate.clone().acquire_owned().await?;
        let (server, path) = (server.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let socket = connect(&server, &path).await;
            drop(permit);
            socket
        }));
    }
    let mut sockets = Vec::with_capacity(clients);
    for task in tasks {
        sockets.push(task.await??);
    }
    Ok(sockets)
}

async fn connect(server: &str, path: &str) -> anyhow::Result<Socket> {
    let stream = TcpStream::connect(server)
        .await
        .with_context(|| format!("connect {server}"))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}{path}?EIO=4&transport=websocket");
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut socket, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let open = next_text(&mut socket).await?;
    if !open.starts_with('0') {
        bail!("expected an Engine.IO open packet, got {open:?}");
    }
    socket.send(Message::text("40")).await?;
    loop {
        let reply = next_text(&mut socket).await?;
        if reply.starts_with("40") {
            return Ok(socket);
        }
        if reply.starts_with("44") {
            bail!("connect refused: {reply}");
        }
    }
}

async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => bail!("timed out waiting for the server"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(message)) => match message? {
                Message::Text(text) => return Ok(text.to_string()),
                Message::Close(_) => bail!("connection closed"),
                _ => {}
            },
        }
    }
}

/// CPU time (user + system, all threads) a process has used, in seconds.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start with field 3, the state;
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields.get(index).context("short stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

async fn idle(
    server: &str,
    path: &str,
    clients: usize,
    pid: u32,
    settle: u64,
) -> anyhow::Result<()> {
    // One warm-up connection so lazily created state (the channel itself) is not counted.
    let warm = connect(server, path).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let sockets = connect_many(server, path, clients).await?;
    // Keep them alive and answering pings while the server settles.
    let mut keepers = Vec::new();
    for mut socket in sockets {
        keepers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message
                    && text.as_str() == "2"
                {
                    let _ = socket.send(Message::text("3")).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = rss_kib(pid)?;
    let per_connection = (after.saturating_sub(before) as f64 * 1024.0) / clients as f64;
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_connection": per_connection.round(),
        })
    );
    for keeper in keepers {
        keeper.abort();
    }
    drop(warm);
    Ok(())
}

struct FanoutPlan {
    clients: usize,
    rate: u64,
    window: u64,
    seconds: u64,
    emit_driver: bool,
    secret: String,
    payload: usize,
    server_pid: Option<u32>,
}

/// What every receiver reports at the end.
#[derive(Default)]
struct ReceiverReport {
    /// Distinct events received.
    received: u64,
    /// Events that arrived after a later one.
    out_of_order: u64,
    /// Events received more than once.
    duplicates: u64,
    highest: Option<u64>,
    /// Bit n is set once event n arrived.
    seen: Vec<u64>,
}

impl ReceiverReport {
    fn record(&mut self, n: u64) {
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        match self.highest {
            Some(highest) if n < highest => self.out_of_order += 1,
            _ => self.highest = Some(n),
        }
    }
}

/// Microseconds since the run started (sender and receivers share the process clock).
fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Pulls `"n":123` and `"t":456` out of `42["tick",{...}]` without a JSON parser.
fn field(text: &str, name: &str) -> Option<u64> {
    let at = text.find(name)? + name.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn fanout(server: &str, path: &str, plan: FanoutPlan) -> anyhow::Result<()> {
    let start = Instant::now();
    let progress = Arc::new(AtomicU64::new(0)); // highest n seen by receiver 0, plus one
    let deliveries = Arc::new(AtomicU64::new(0)); // all receivers, for the throughput window
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let stop = Arc::new(tokio::sync::Notify::new());

    // Receivers.
    let sockets = connect_many(server, path, plan.clients).await?;
    let mut receivers = Vec::with_capacity(plan.clients);
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let progress = progress.clone();
        let deliveries = deliveries.clone();
        let histogram = histogram.clone();
        let stop = stop.clone();
        receivers.push(tokio::spawn(async move {
            let mut report = ReceiverReport::default();
            let mut local = Histogram::<u64>::new(3).expect("valid sigfig");
            loop {
                let message = tokio::select! {
                    message = socket.next() => message,
                    () = stop.notified() => break,
                };
                let Some(Ok(message)) = message else { break };
                let Message::Text(text) = message else {
                    continue;
                };
                let text = text.as_str();
                if text == "2" {
                    let _ = socket.send(Message::text("3")).await;
                    continue;
                }
                if !text.starts_with("42[\"tick\"") {
                    continue;
                }
                let (Some(n), Some(sent)) = (field(text, "\"n\":"), field(text, "\"t\":")) else {
                    continue;
                };
                let now = micros(start);
                let _ = local.record(now.saturating_sub(sent).max(1));
                report.record(n);
                deliveries.fetch_add(1, Ordering::Relaxed);
                if index == 0 {
                    progress.fetch_max(n + 1, Ordering::AcqRel);
                }
            }
            let _ = histogram.lock().await.add(&local);
            report
        }));
    }

    // Sender.
    let filler = "x".repeat(plan.payload);
    // The sender's own copies of the broadcasts are read (and its pings answered) by a task of
    // their own, so the server never sees the sender as a slow client.
    let mut sender_sink = None;
    let mut sender_reader = None;
    if !plan.emit_driver {
        let (mut sink, mut stream) = connect(server, path).await?.split();
        let (pongs, mut pong_requests) = tokio::sync::mpsc::unbounded_channel::<()>();
        sender_reader = Some(tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && text.as_str() == "2"
                {
                    let _ = pongs.send(());
                }
            }
        }));
        let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Message>(1024);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = outgoing.recv() => match frame {
                        Some(frame) => { if sink.send(frame).await.is_err() { break; } }
                        None => break,
                    },
                    Some(()) = pong_requests.recv() => {
                        if sink.send(Message::text("3")).await.is_err() { break; }
                    }
                }
            }
        });
        sender_sink = Some(frames);
    }
    let mut http = if plan.emit_driver {
        Some(HttpClient::connect(server).await?)
    } else {
        None
    };
    let server_pid = plan.server_pid.map(|pid| pid.to_string());
    let cpu_at_start = (
        server_pid.as_deref().map(cpu_seconds).transpose()?,
        cpu_seconds("self")?,
    );
    let send_start = Instant::now();
    let deadline = send_start + Duration::from_secs(plan.seconds);
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        if plan.rate == 0 {
            // Saturation: keep `window` events in flight, paced by receiver 0.
            while sent >= progress.load(Ordering::Acquire) + plan.window {
                if Instant::now() >= deadline {
                    break;
                }
                tokio::task::yield_now().await;
            }
        } else {
            let offset = sent
                .saturating_mul(1_000_000)
                .checked_div(plan.rate)
                .unwrap_or(0);
            let due = send_start + Duration::from_micros(offset);
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        let data = format!(
            "{{\"n\":{sent},\"t\":{},\"pad\":\"{filler}\"}}",
            micros(start)
        );
        if let Some(frames) = sender_sink.as_ref() {
            frames
                .send(Message::text(format!("42[\"tick\",{data}]")))
                .await?;
        } else if let Some(http) = http.as_mut() {
            http.emit(&plan.secret, &data).await?;
        }
        sent += 1;
    }
    let sending = send_start.elapsed();
    let delivered_while_sending = deliveries.load(Ordering::Relaxed);
    let server_cpu = match (server_pid.as_deref(), cpu_at_start.0) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let loadgen_cpu = cpu_seconds("self")? - cpu_at_start.1;
    // Let the last events reach every receiver, not just receiver 0: a slow receiver is late, not
    // lost. Give up after 3 s without any delivery (or 30 s in all); what is missing then is lost.
    let expected = sent * plan.clients as u64;
    let give_up = Instant::now() + Duration::from_secs(30);
    let (mut last_count, mut last_change) = (deliveries.load(Ordering::Relaxed), Instant::now());
    while last_count < expected
        && Instant::now() < give_up
        && last_change.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let count = deliveries.load(Ordering::Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
    }
    // Anything extra (a duplicate) would arrive right behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_waiters();
    if let Some(reader) = sender_reader {
        reader.abort();
    }
    let mut total = ReceiverReport::default();
    let mut incomplete = 0u64;
    for receiver in receivers {
        // Wake any receiver that missed the notification.
        stop.notify_waiters();
        let report = receiver.await?;
        if report.received != sent {
            incomplete += 1;
        }
        total.received += report.received;
        total.out_of_order += report.out_of_order;
        total.duplicates += report.duplicates;
    }
    let histogram = histogram.lock().await;
    println!(
        "{}",
        serde_json::json!({
            "clients": plan.clients,
            "driver": if plan.emit_driver { "emit" } else { "client" },
            "rate": plan.rate,
            "events_sent": sent,
            "events_per_second": (sent as f64 / sending.as_secs_f64()).round(),
            "deliveries": total.received,
            "deliveries_per_second": (delivered_while_sending as f64 / sending.as_secs_f64()).round(),
            "lost": expected.saturating_sub(total.received),
            "duplicates": total.duplicates,
            "out_of_order": total.out_of_order,
            "receivers_incomplete": incomplete,
            // CPU used while sending, in cores (1.0 = one core busy the whole time).
            "server_cores": server_cpu.map(|cpu| cpu / sending.as_secs_f64()),
            "loadgen_cores": loadgen_cpu / sending.as_secs_f64(),
            "server_cpu_ns_per_delivery": server_cpu
                .map(|cpu| (cpu * 1e9 / delivered_while_sending.max(1) as f64).round()),
            "latency_us": {
                "p50": histogram.value_at_quantile(0.5),
                "p99": histogram.value_at_quantile(0.99),
                "max": histogram.max(),
            },
        })
    );
    Ok(())
}

/// A keep-alive HTTP/1.1 client for `POST /emit`, just enough for the benchmark.
struct HttpClient {
    stream: TcpStream,
    server: String,
    buffer: Vec<u8>,
}

impl HttpClient {
    async fn connect(server: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            server: server.to_string(),
            buffer: Vec::with_capacity(4096),
        })
    }

    async fn emit(&mut self, secret: &str, data: &str) -> anyhow::Result<()> {
        let body = format!("{{\"channel\":\"chats/bench\",\"event\":\"tick\",\"data\":{data}}}");
        let request = format!(
            "POST /emit HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.server,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        // Read one response: headers, then Content-Length bytes.
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                bail!("server closed the HTTP connection");
            }
            self.buffer.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&self.buffer);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = &text[..end];
                if !head.starts_with("HTTP/1.1 200") {
                    bail!("emit failed: {head}");
                }
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buffer.len() >= end + 4 + length {
                    return Ok(());
                }
            }
        }
    }
}
