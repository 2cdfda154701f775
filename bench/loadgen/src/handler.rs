//! `handler`: the cost of answering client events through a backend handler.
//!
//! The load generator runs the backend itself: a trivial HTTP server (hyper) on 127.0.0.1 that
//! answers every call at once with `{"data":{"ok":true}}`. Then, at a fixed rate or saturating:
//!
//! - `--mode switchboard`: Socket.IO clients emit `work` with an ack on a channel whose `work`
//!   handler calls that backend; a call's time is from the emit to its ack;
//! - `--mode direct`: the same number of keep-alive HTTP connections POST the body Switchboard
//!   would send straight to the backend; a call's time is the request's round trip.
//!
//! The difference between the two, in one run, is what the handler costs: the WebSocket hop, the
//! schema check, signing, the call, and the ack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::{connect_many, cpu_seconds};

pub struct HandlerPlan {
    pub backend_port: u16,
    pub through_switchboard: bool,
    pub clients: usize,
    /// Calls per second in all; 0 saturates with `window` calls in flight per client.
    pub rate: u64,
    pub window: usize,
    pub seconds: u64,
    pub server_pid: Option<u32>,
}

/// What a call to the backend looks like, for the direct mode: the size and shape of the body
/// Switchboard sends.
const DIRECT_BODY: &str = r#"{"id":"kq3Hh0aZbX1cD2eF3gH4","type":"event","channel":"bench/1","params":{"id":"1"},"namespace":"/","socket":{"id":"hxV1aZbX1cD2eF3gH4iJ","user":null,"rooms":[],"data":null},"event":"work","args":[{"n":1}]}"#;

/// The backend: answers every request with a small JSON ack, at once.
async fn serve_backend(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("the backend cannot listen on 127.0.0.1:{port}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        // Read the call whole, as a real backend would.
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(br#"{"data":{"ok":true}}"#)))
                                .expect("a valid response"),
                        )
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

pub async fn run(server: &str, path: &str, plan: HandlerPlan) -> anyhow::Result<()> {
    serve_backend(plan.backend_port).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let per_client_interval =
        (plan.rate > 0).then(|| Duration::from_secs_f64(plan.clients as f64 / plan.rate as f64));
    let sockets = if plan.through_switchboard {
        connect_many(server, path, plan.clients).await?
    } else {
        Vec::new()
    };
    let server_pid = plan.server_pid.map(|pid| pid.to_string());
    let cpu_at_start = server_pid.as_deref().map(cpu_seconds).transpose()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(plan.seconds);
    let mut sockets = sockets.into_iter();
    let mut tasks = Vec::with_capacity(plan.clients);
    for index in 0..plan.clients {
        // Clients start spread over one interval, so that a fixed rate is even.
        let offset = per_client_interval
            .map(|interval| interval.mul_f64(index as f64 / plan.clients as f64))
            .unwrap_or_default();
        let (histogram, errors, calls) = (histogram.clone(), errors.clone(), calls.clone());
        let schedule = Schedule {
            first: start + offset,
            deadline,
            interval: per_client_interval,
            window: plan.window,
        };
        let socket = if plan.through_switchboard {
            Some(sockets.next().context("a socket per client")?)
        } else {
            None
        };
        let backend = format!("127.0.0.1:{}", plan.backend_port);
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("valid sigfig");
            let result = match socket {
                Some(socket) => socket_client(socket, &schedule, &mut local).await,
                None => direct_client(&backend, &schedule, &mut local).await,
            };
            match result {
                Ok(count) => {
                    calls.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                }
                Err(err) => {
                    eprintln!("a client failed: {err:#}");
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _ = histogram.lock().await.add(&local);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = match (server_pid.as_deref(), cpu_at_start) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let calls = calls.load(std::sync::atomic::Ordering::Relaxed);
    let histogram = histogram.lock().await;
    println!(
        "{}",
        serde_json::json!({
            "mode": if plan.through_switchboard { "switchboard" } else { "direct" },
            "clients": plan.clients,
            "rate": plan.rate,
            "window": if plan.rate == 0 { Some(plan.window) } else { None },
            "calls": calls,
            "calls_per_second": (calls as f64 / elapsed).round(),
            "clients_failed": errors.load(std::sync::atomic::Ordering::Relaxed),
            "server_cores": server_cpu.map(|cpu| cpu / elapsed),
            "server_cpu_us_per_call": server_cpu.map(|cpu| (cpu * 1e6 / calls.max(1) as f64).round()),
            "latency_us": {
                "p50": histogram.value_at_quantile(0.5),
                "p99": histogram.value_at_quantile(0.99),
                "max": histogram.max(),
            },
        })
    );
    Ok(())
}

/// When one client sends.
struct Schedule {
    first: Instant,
    deadline: Instant,
    /// Between two calls at a fixed rate; `None` saturates.
    interval: Option<Duration>,
    /// Calls in flight at once when saturating.
    window: usize,
}

/// How long calls still in flight at the deadline may take to come back.
const GRACE: Duration = Duration::from_secs(5);

/// One Socket.IO client emitting `work` with acks; returns how many acks it received.
async fn socket_client(
    mut socket: crate::Socket,
    schedule: &Schedule,
    histogram: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut next_send = schedule.first;
    let mut answered = 0;
    loop {
        let now = Instant::now();
        if now >= schedule.deadline && in_flight.is_empty() {
            return Ok(answered);
        }
        if now >= schedule.deadline + GRACE {
            bail!("{} acks never came", in_flight.len());
        }
        let sending = now < schedule.deadline;
        if sending && schedule.interval.is_none() {
            while in_flight.len() < schedule.window {
                send_work(&mut socket, &mut in_flight, &mut next_id).await?;
            }
        }
        let timed = sending && schedule.interval.is_some();
        tokio::select! {
            () = tokio::time::sleep_until(next_send.into()), if timed => {
                send_work(&mut socket, &mut in_flight, &mut next_id).await?;
                next_send += schedule.interval.unwrap_or_default();
            }
            () = tokio::time::sleep_until((schedule.deadline + GRACE).into()) => {}
            message = socket.next() => {
                let Some(message) = message else { bail!("the server closed the connection") };
                let Message::Text(text) = message? else { continue };
                let text = text.as_str();
                if text == "2" {
                    socket.send(Message::text("3")).await?;
                    continue;
                }
                let Some(rest) = text.strip_prefix("43") else { continue };
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let id: u64 = digits.parse().context("an ack id")?;
                if !rest[digits.len()..].starts_with(r#"[{"status":"ok""#) && !rest[digits.len()..].starts_with(r#"[{"data""#) {
                    bail!("the handler failed: {text}");
                }
                if let Some(sent) = in_flight.remove(&id) {
                    let _ = histogram.record((sent.elapsed().as_micros() as u64).max(1));
                    answered += 1;
                }
            }
        }
    }
}

async fn send_work(
    socket: &mut crate::Socket,
    in_flight: &mut HashMap<u64, Instant>,
    next_id: &mut u64,
) -> anyhow::Result<()> {
    let id = *next_id;
    *next_id += 1;
    in_flight.insert(id, Instant::now());
    socket
        .send(Message::text(format!(r#"42{id}["work",{{"n":{id}}}]"#)))
        .await?;
    Ok(())
}

/// Keep-alive HTTP/1.1 connections POSTing to the backend directly (one when at a fixed rate,
/// `window` when saturating, each one call at a time); returns how many answers came.
async fn direct_client(
    backend: &str,
    schedule: &Schedule,
    histogram: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let connections = if schedule.interval.is_some() {
        1
    } else {
        schedule.window
    };
    let mut runs = Vec::with_capacity(connections);
    for _ in 0..connections {
        runs.push(direct_connection(backend, schedule));
    }
    let mut answered = 0;
    for result in futures_util::future::join_all(runs).await {
        let (count, local) = result?;
        answered += count;
        histogram.add(&local)?;
    }
    Ok(answered)
}

async fn direct_connection(
    backend: &str,
    schedule: &Schedule,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let stream = TcpStream::connect(backend).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut next_send = schedule.first;
    let mut answered = 0;
    while Instant::now() < schedule.deadline {
        if let Some(interval) = schedule.interval {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += interval;
            if Instant::now() >= schedule.deadline {
                break;
            }
        }
        let request = hyper::Request::post("/switchboard/events")
            .header("host", backend)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(DIRECT_BODY.as_bytes())))?;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            bail!("the backend answered {}", response.status());
        }
        response.into_body().collect().await?;
        let _ = histogram.record((sent.elapsed().as_micros() as u64).max(1));
        answered += 1;
    }
    Ok((answered, histogram))
}
