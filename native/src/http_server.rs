//! The HTTP/1.1 server under the [`Router`]: an accept loop that admits each connection through the
//! [`Limiter`], and one hyper connection per socket, with the timeouts slow clients need.
//!
//! A connection is always in one of four phases, which its socket ([`WatchedIo`]) and its requests
//! share:
//!
//! - **head**: a request's head is arriving (from the connection's start, or from the first byte
//!   of a later request): it must be complete within `header_timeout`;
//! - **busy**: a request is in flight, from its head until its response is written. No read
//!   timeout runs: a long-polling GET the channel holds is busy, not idle. Its body is bounded by
//!   `body_timeout` from the head, and a write the client takes nothing of by `send_timeout`;
//! - **idle**: between requests: the connection is closed after `idle_timeout`;
//! - **upgraded**: a WebSocket. Nothing here times it out; its heartbeat is core's.
//!
//! Refused connections ([`Admission::Busy`], [`Admission::AddressFull`]) are served by the same
//! code without keep-alive and with a short head timeout: `GET /healthz` is answered as usual,
//! anything else with the refusal and `connection: close`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_core::http::{self as core_http, Route};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::limits::{self, Admission, ConnectionPermit, Limiter};

/// How long the accept loop pauses when the process is out of file descriptors.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets requests in
/// flight finish, and returns once every connection has (upgraded ones are no longer its).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limiter: Arc<Limiter>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_out_of_files(&error) => {
                tracing::error!(%error, "cannot accept: out of file descriptors");
                tokio::time::sleep(OUT_OF_FILES_PAUSE).await;
                continue;
            }
            // The client gave up before it was accepted, or the like: only that one is lost.
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        // Beyond every cap: closed at once, the descriptor freed.
        let Some(permit) = limiter.admit(peer.ip()) else {
            continue;
        };
        let connection = serve_connection(stream, peer, permit, router.clone(), stopping.clone());
        connections.spawn(connection);
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_out_of_files(error: &io::Error) -> bool {
    // EMFILE and ENFILE (Linux, the BSDs and macOS alike); std names neither.
    matches!(error.raw_os_error(), Some(23 | 24))
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
    router: Router,
    stopping: CancellationToken,
) {
    let refused = permit.admission() != Admission::Serve;
    let header_timeout = permit.header_timeout();
    let (idle_timeout, body_timeout) = (permit.limits().idle_timeout, permit.limits().body_timeout);
    let state = Arc::new(ConnectionState {
        phase: AtomicU8::new(HEAD),
        body_timed_out: AtomicBool::new(false),
        permit,
    });
    let io = WatchedIo::new(stream, state.clone());
    let service = hyper::service::service_fn(move |request| {
        // Called as soon as the head is parsed, before the future is first polled.
        state.phase.store(BUSY, Ordering::Release);
        state.body_timed_out.store(false, Ordering::Relaxed);
        handle(request, peer, state.clone(), router.clone(), body_timeout)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(!refused)
        // A backstop only: `WatchedIo` applies the head and idle timeouts, each on its own.
        .header_read_timeout(header_timeout + idle_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.cancelled() => {
            // Requests in flight finish (held polls get their last packet as the channels close);
            // an idle connection closes now.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// Phases of a connection (see the module docs).
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const UPGRADED: u8 = 3;

/// What a connection's socket and its requests share. Dropped with the socket (after an upgrade,
/// the WebSocket's), which is when its permit stops counting it.
struct ConnectionState {
    phase: AtomicU8,
    /// The body of the request in flight did not arrive in time.
    body_timed_out: AtomicBool,
    permit: ConnectionPermit,
}

impl ConnectionState {
    fn finish_request(&self) {
        // An upgraded connection stays so.
        let _ = self
            .phase
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Relaxed);
    }
}

async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: Arc<ConnectionState>,
    router: Router,
    body_timeout: Duration,
) -> Result<Response<TrackedBody>, Infallible> {
    let refusal = state
        .permit
        .refusal()
        .filter(|_| !is_health_check(&request));
    let response = match refusal {
        Some(refusal) => refusal,
        None => {
            let deadline = Instant::now() + body_timeout;
            let mut request = request.map(|body| DeadlineBody {
                body,
                deadline,
                timer: None,
                state: state.clone(),
            });
            // The client's address, as axum's `ConnectInfo` extractor finds it.
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if state.body_timed_out.load(Ordering::Relaxed) {
                limits::body_timeout_response(body_timeout)
            } else {
                response
            }
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        state.phase.store(UPGRADED, Ordering::Release);
    }
    Ok(response.map(|body| TrackedBody { body, state }))
}

fn is_health_check<B>(request: &Request<B>) -> bool {
    request.method() == axum::http::Method::GET
        && core_http::route(request.uri().path()) == Route::Health
}

/// What a connection's timer is running for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Nothing,
    /// The head phase's timeout.
    Head,
    /// The idle phase's timeout.
    Idle,
    /// A write of the busy phase waiting on a client that does not read.
    Send,
}

/// A connection's socket, which applies the timeouts of its phase: head and idle while it waits
/// to read, and, while busy, the send timeout of a write the client does not take.
struct WatchedIo {
    stream: TcpStream,
    state: Arc<ConnectionState>,
    /// Dropped once the connection is upgraded, so that a WebSocket keeps none.
    timer: Option<Pin<Box<Sleep>>>,
    armed: Armed,
}

impl WatchedIo {
    fn new(stream: TcpStream, state: Arc<ConnectionState>) -> Self {
        let mut io = Self {
            stream,
            state,
            timer: None,
            armed: Armed::Nothing,
        };
        // The first request's head is due from the start.
        io.arm(Armed::Head);
        io
    }

    fn arm(&mut self, armed: Armed) {
        let permit = &self.state.permit;
        let after = match armed {
            Armed::Head => permit.header_timeout(),
            Armed::Idle => permit.limits().idle_timeout,
            Armed::Send => permit.limits().send_timeout,
            Armed::Nothing => {
                self.armed = Armed::Nothing;
                return;
            }
        };
        let deadline = Instant::now() + after;
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = armed;
    }

    fn phase(&self) -> u8 {
        self.state.phase.load(Ordering::Acquire)
    }

    fn upgraded(&mut self) {
        self.timer = None;
        self.armed = Armed::Nothing;
    }

    /// Whether the armed timeout has passed; `cx` is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match (&mut self.timer, self.armed) {
            (Some(timer), Armed::Head | Armed::Idle | Armed::Send) => {
                timer.as_mut().poll(cx).is_ready()
            }
            _ => false,
        }
    }

    /// A read waits: whether the head or idle timeout has passed.
    fn read_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        match self.phase() {
            // Head is only entered with its timer armed (at the start, or by `poll_read`).
            HEAD => {}
            IDLE if self.armed != Armed::Idle => self.arm(Armed::Idle),
            IDLE => {}
            UPGRADED => {
                self.upgraded();
                return false;
            }
            // Busy: reads have no timeout (a held GET), only a stalled write has.
            _ if self.armed == Armed::Send => return false,
            _ => self.armed = Armed::Nothing,
        }
        self.expired(cx)
    }

    /// A write waits: whether the client has read nothing of it for the send timeout.
    fn write_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        match self.phase() {
            BUSY if self.armed != Armed::Send => self.arm(Armed::Send),
            BUSY => {}
            UPGRADED => {
                self.upgraded();
                return false;
            }
            // The last bytes of a response, flushed once the connection is already idle: the
            // idle timeout bounds them.
            _ => return false,
        }
        self.expired(cx)
    }

    /// A write went through: the client reads.
    fn wrote(&mut self) {
        if self.armed == Armed::Send {
            self.armed = Armed::Nothing;
        }
    }

    fn write_result<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.wrote();
                Poll::Ready(result)
            }
            Poll::Pending if self.write_timed_out(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client reads no response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The first byte of a new request starts its head's clock.
                if buf.filled().len() > before
                    && this.phase() == IDLE
                    && this
                        .state
                        .phase
                        .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    this.arm(Armed::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if this.read_timed_out(cx) => {
                let what = if this.armed == Armed::Head {
                    "request head not received in time"
                } else {
                    "idle connection"
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_result(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_result(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP stream's flush is immediate: nothing waits here.
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A request body that must have arrived by `deadline`; past it, reading fails and the request is
/// answered 408 whatever its handler says.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    /// Made the first time the body has to be waited for.
    timer: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnectionState>,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        this.state.body_timed_out.store(true, Ordering::Relaxed);
        let error = io::Error::new(io::ErrorKind::TimedOut, "request body not received in time");
        Poll::Ready(Some(Err(error.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that tells its connection when the response is over (hyper drops it once it
/// is written): the connection is then idle.
struct TrackedBody {
    body: axum::body::Body,
    state: Arc<ConnectionState>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.finish_request();
    }
}
