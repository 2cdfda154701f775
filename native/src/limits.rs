//! What keeps clients, one or many, from exhausting the server before core sees a request: how long
//! a request may take to arrive, how many connections the process and each address may hold, and
//! how fast an address may open Engine.IO sessions and how many it may hold open. Protocol limits
//! (payloads, queues, sockets per channel) are core's; these are the host's, about sockets, file
//! descriptors and memory.
//!
//! Connections are admitted by [`Limiter::admit`] as they are accepted. A connection over a cap is
//! not dropped at once but answered: every request but `GET /healthz` gets a JSON error and
//! `connection: close`, under a short head timeout, so the file descriptor is soon free again and a
//! health check still sees the server alive. Only beyond that (the descriptors kept for files and
//! the app backend's calls, or an address with many refusals already in flight) is a connection
//! closed without a word.
//!
//! Sessions are counted by [`SessionSlot`]s: a handshake takes one for its address
//! ([`Limiter::admit_new_session`]) before it reaches its channel, and the channel's task keeps it
//! for as long as the session the handshake opened lives (core's `Output::SessionOpened` and
//! `Output::SessionClosed`). A slot counts until it is dropped, so a handshake that opens nothing,
//! a session that ends, and a channel task that goes away all give theirs back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::Response;
use switchboard_core::api::ApiError;
use switchboard_core::config::ChannelPolicy;
use switchboard_core::http::{self as core_http, HttpResponse};

use crate::transport::to_axum;

/// Time a client has to send a request's head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a kept-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a request's body may take to arrive, counted from its head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a response may wait on a client that reads none of it.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections one address may have.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;
/// New Engine.IO sessions one address may open per second, sustained.
pub const DEFAULT_SESSION_RATE_PER_IP: f64 = 20.0;
/// New Engine.IO sessions one address may open at once, above the sustained rate.
pub const DEFAULT_SESSION_BURST_PER_IP: u32 = 200;
/// Engine.IO sessions one address may have open at once, across every channel.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 1000;

/// File descriptors the automatic connection cap leaves for everything else (the app backend's
/// calls, static files, the log) and for refusals.
pub const FD_RESERVE: u64 = 1024;
/// File descriptors never used for connections, refusals included.
const FD_HEADROOM: u64 = 128;
/// Connections over the cap that may be in the middle of their refusal at once.
const REFUSAL_BAND: usize = 1024;
/// Refusals one address may have in flight; its further connections are closed unanswered.
const REFUSALS_PER_ADDRESS: u32 = 32;
/// The head timeout of a connection that is only answered to be refused.
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's limits. [`Limits::default`] is what the binary starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// A request's head must be complete this long after the connection opened, or after the first
    /// byte of a later request on a kept-alive connection.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this long. A long-polling
    /// GET the channel holds is a request in flight, and a WebSocket is never idle here (its
    /// heartbeat is core's).
    pub idle_timeout: Duration,
    /// A request's body must have arrived this long after its head, or the request is answered
    /// 408 and its connection closed.
    pub body_timeout: Duration,
    /// A response that cannot be written for this long, the client reading none of it, ends its
    /// connection. (A WebSocket's slow reader is its outbox's business.)
    pub send_timeout: Duration,
    /// Connections served as usual; over it, new ones get 503 (but `GET /healthz`). `None`: the
    /// open-file limit less [`FD_RESERVE`].
    pub max_connections: Option<usize>,
    /// Open connections one address (an IPv4 address, an IPv6 /64) may have; over it, new ones get
    /// 429. 0: no limit.
    pub max_connections_per_ip: usize,
    /// New Engine.IO sessions (handshakes: requests without `sid`) one address may open per second,
    /// sustained; over it, handshakes get 429. 0: no limit.
    pub session_rate_per_ip: f64,
    /// New sessions one address may open at once before the rate applies.
    pub session_burst_per_ip: u32,
    /// Engine.IO sessions one address may have open at once, across every channel (handshakes on
    /// their way to their channel included); over it, handshakes get 429. 0: no limit.
    pub max_sessions_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_connections: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            session_rate_per_ip: DEFAULT_SESSION_RATE_PER_IP,
            session_burst_per_ip: DEFAULT_SESSION_BURST_PER_IP,
            max_sessions_per_ip: DEFAULT_MAX_SESSIONS_PER_IP,
        }
    }
}

impl Limits {
    /// The head timeout of a connection answered only to be refused.
    pub fn refusal_header_timeout(&self) -> Duration {
        self.header_timeout.min(REFUSAL_HEADER_TIMEOUT)
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX)
    }
    #[cfg(not(unix))]
    {
        Ok(u64::MAX)
    }
}

/// The open-file limit in force (the soft one), if the platform has one.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection caps for an open-file limit: (served as usual, open at all).
pub fn connection_caps(max_connections: Option<usize>, fd_limit: Option<u64>) -> (usize, usize) {
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let open_at_all = fd_limit.map_or(usize::MAX, |limit| {
        to_usize(limit.saturating_sub(FD_HEADROOM.min(limit / 8)))
    });
    let automatic = fd_limit.map_or(usize::MAX, |limit| {
        if limit >= 4 * FD_RESERVE {
            to_usize(limit - FD_RESERVE)
        } else {
            to_usize(limit / 4 * 3)
        }
    });
    let served = max_connections.unwrap_or(automatic).min(open_at_all);
    (served, open_at_all.min(served.saturating_add(REFUSAL_BAND)))
}

/// Who a connection counts against: an IPv4 address, or the /64 of an IPv6 one (what one subscriber
/// is usually given, so that a single client cannot count as billions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => AddressKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// How a connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// As usual.
    Serve,
    /// The server is at its connection cap: 503.
    Busy,
    /// Its address is at its connection cap: 429.
    AddressFull,
}

/// What is known of one address.
#[derive(Debug, Clone)]
struct Address {
    /// Its connections served as usual.
    connections: usize,
    /// Its connections being refused.
    refusals: u32,
    /// Its Engine.IO sessions open, or handshakes on their way to open one ([`SessionSlot`]s).
    sessions: usize,
    /// Session tokens left, as of `refilled`.
    tokens: f64,
    refilled: Instant,
}

/// The per-address table and its upkeep.
#[derive(Debug)]
struct Addresses {
    by_key: HashMap<AddressKey, Address, foldhash::fast::RandomState>,
    /// Forgotten entries are swept out once the table reaches this size.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

/// The connection counts and session rates of one server.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// Connections served as usual.
    max_served: usize,
    /// Connections open at all, refusals included.
    max_open: usize,
    served: AtomicUsize,
    open: AtomicUsize,
    /// Whether the last connection found the server at its cap (logged once per episode).
    at_cap: AtomicBool,
    addresses: Mutex<Addresses>,
}

impl Limiter {
    pub fn new(limits: Limits, fd_limit: Option<u64>) -> Arc<Self> {
        let (max_served, max_open) = connection_caps(limits.max_connections, fd_limit);
        Arc::new(Self {
            limits,
            max_served,
            max_open,
            served: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            at_cap: AtomicBool::new(false),
            addresses: Mutex::new(Addresses {
                by_key: HashMap::default(),
                sweep_at: FIRST_SWEEP,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// (served as usual, open at all): the caps in force.
    pub fn caps(&self) -> (usize, usize) {
        (self.max_served, self.max_open)
    }

    /// Connections open now, refusals included.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn table(&self) -> MutexGuard<'_, Addresses> {
        // The table holds only counts; one updated halfway by a panicking thread is still usable.
        self.addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection just accepted from `ip`: how to serve it, or `None` to close it at once.
    /// The permit counts it until dropped, which is when its socket closes.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<ConnectionPermit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_open {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.note_cap(true);
            return None;
        }
        let key = AddressKey::of(ip);
        let per_address = self.limits.max_connections_per_ip;
        let mut table = self.table();
        let address = table.entry(key, &self.limits, now);
        let admission = if per_address != 0 && address.connections >= per_address {
            if address.refusals >= REFUSALS_PER_ADDRESS {
                drop(table);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            address.refusals += 1;
            Admission::AddressFull
        } else if self.served.load(Ordering::Acquire) >= self.max_served {
            Admission::Busy
        } else {
            address.connections += 1;
            self.served.fetch_add(1, Ordering::AcqRel);
            Admission::Serve
        };
        table.forget_if_unused(key, &self.limits, now);
        drop(table);
        self.note_cap(admission == Admission::Busy);
        Some(ConnectionPermit {
            limiter: self.clone(),
            key,
            admission,
        })
    }

    fn note_cap(&self, at_cap: bool) {
        if self.at_cap.swap(at_cap, Ordering::Relaxed) != at_cap && at_cap {
            tracing::warn!(
                served = self.max_served,
                open = self.open.load(Ordering::Relaxed),
                "at the connection cap: new connections are refused (503) until some close"
            );
        }
    }

    fn release(&self, key: AddressKey, admission: Admission) {
        let now = Instant::now();
        match admission {
            Admission::Serve => {
                let mut table = self.table();
                if let Some(address) = table.by_key.get_mut(&key) {
                    address.connections = address.connections.saturating_sub(1);
                }
                self.served.fetch_sub(1, Ordering::AcqRel);
                table.forget_if_unused(key, &self.limits, now);
            }
            Admission::AddressFull => {
                let mut table = self.table();
                if let Some(address) = table.by_key.get_mut(&key) {
                    address.refusals = address.refusals.saturating_sub(1);
                }
                table.forget_if_unused(key, &self.limits, now);
            }
            Admission::Busy => {}
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes one new-session token for `ip`; `Err` says how long until the next one.
    pub fn take_session(&self, ip: IpAddr) -> Result<(), Duration> {
        self.take_session_at(ip, Instant::now())
    }

    fn take_session_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.limits.session_rate_per_ip;
        if rate <= 0.0 {
            return Ok(());
        }
        let key = AddressKey::of(ip);
        let mut table = self.table();
        let address = table.entry(key, &self.limits, now);
        refill(address, &self.limits, now);
        if address.tokens >= 1.0 {
            address.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - address.tokens) / rate))
        }
    }

    /// Counts one more session for `ip`, unless it already has `max_sessions_per_ip`; `None` when
    /// there is no such limit (nothing is counted then).
    fn reserve_session(self: &Arc<Self>, ip: IpAddr) -> Result<Option<SessionSlot>, ()> {
        let most = self.limits.max_sessions_per_ip;
        if most == 0 {
            return Ok(None);
        }
        let key = AddressKey::of(ip);
        let mut table = self.table();
        let address = table.entry(key, &self.limits, Instant::now());
        if address.sessions >= most {
            return Err(());
        }
        address.sessions += 1;
        Ok(Some(SessionSlot {
            limiter: self.clone(),
            key,
        }))
    }

    /// Sessions counted for `ip` now.
    pub fn sessions_of(&self, ip: IpAddr) -> usize {
        self.table()
            .by_key
            .get(&AddressKey::of(ip))
            .map_or(0, |address| address.sessions)
    }

    fn release_session(&self, key: AddressKey) {
        let mut table = self.table();
        if let Some(address) = table.by_key.get_mut(&key) {
            address.sessions = address.sessions.saturating_sub(1);
        }
        table.forget_if_unused(key, &self.limits, Instant::now());
    }

    /// Admits a handshake (a request without `sid`): the slot its session will count in, or the
    /// refusal of an address that already holds `max_sessions_per_ip` sessions or opens them
    /// faster than its rate. The request carries its peer in `ConnectInfo`; without one nothing is
    /// refused or counted. A handshake refused for the count takes no rate token.
    pub fn admit_new_session(
        self: &Arc<Self>,
        request: &axum::extract::Request,
        policy: &ChannelPolicy,
        origin: Option<&str>,
    ) -> Result<Option<SessionSlot>, Box<Response>> {
        let Some(axum::extract::ConnectInfo(peer)) = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        else {
            return Ok(None);
        };
        let limits = &self.limits;
        let cors = || core_http::cors_headers(policy, origin);
        let Ok(slot) = self.reserve_session(peer.ip()) else {
            let refusal = ApiError {
                status: 429,
                code: "too_many_sessions_open",
                field: None,
                message: format!(
                    "too many open sessions from this address (at most {}); close some first",
                    limits.max_sessions_per_ip
                ),
            }
            .response()
            .with_headers(cors());
            return Err(Box::new(to_axum(refusal)));
        };
        if let Err(wait) = self.take_session(peer.ip()) {
            let refusal = ApiError {
                status: 429,
                code: "too_many_sessions",
                field: None,
                message: format!(
                    "too many new sessions from this address (at most {} at once, then {} a \
                     second); retry later",
                    limits.session_burst_per_ip, limits.session_rate_per_ip
                ),
            }
            .response()
            .with_header("retry-after", retry_after(wait))
            .with_headers(cors());
            return Err(Box::new(to_axum(refusal)));
        }
        Ok(slot)
    }
}

/// Counts one Engine.IO session (or a handshake on its way to open one) against its address until
/// dropped. See the module docs.
pub struct SessionSlot {
    limiter: Arc<Limiter>,
    key: AddressKey,
}

impl std::fmt::Debug for SessionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SessionSlot").field(&self.key).finish()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.limiter.release_session(self.key);
    }
}

fn refill(address: &mut Address, limits: &Limits, now: Instant) {
    let elapsed = now
        .saturating_duration_since(address.refilled)
        .as_secs_f64();
    address.tokens = (address.tokens + elapsed * limits.session_rate_per_ip)
        .min(f64::from(limits.session_burst_per_ip));
    address.refilled = now;
}

impl Addresses {
    fn entry(&mut self, key: AddressKey, limits: &Limits, now: Instant) -> &mut Address {
        if self.by_key.len() >= self.sweep_at && !self.by_key.contains_key(&key) {
            self.by_key
                .retain(|_, address| !is_unused(address, limits, now));
            self.sweep_at = FIRST_SWEEP.max(self.by_key.len() * 2);
        }
        self.by_key.entry(key).or_insert_with(|| Address {
            connections: 0,
            refusals: 0,
            sessions: 0,
            tokens: f64::from(limits.session_burst_per_ip),
            refilled: now,
        })
    }

    fn forget_if_unused(&mut self, key: AddressKey, limits: &Limits, now: Instant) {
        if self
            .by_key
            .get(&key)
            .is_some_and(|address| is_unused(address, limits, now))
        {
            self.by_key.remove(&key);
        }
    }
}

/// No connections, no sessions, and a full bucket of session tokens: nothing to remember.
fn is_unused(address: &Address, limits: &Limits, now: Instant) -> bool {
    if address.connections != 0 || address.refusals != 0 || address.sessions != 0 {
        return false;
    }
    let rate = limits.session_rate_per_ip;
    rate <= 0.0 || {
        let elapsed = now
            .saturating_duration_since(address.refilled)
            .as_secs_f64();
        address.tokens + elapsed * rate >= f64::from(limits.session_burst_per_ip)
    }
}

/// Counts one connection against its server and its address until dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<Limiter>,
    key: AddressKey,
    admission: Admission,
}

impl ConnectionPermit {
    pub fn admission(&self) -> Admission {
        self.admission
    }

    pub fn limits(&self) -> &Limits {
        &self.limiter.limits
    }

    /// How long this connection has to send a request's head.
    pub fn header_timeout(&self) -> Duration {
        match self.admission {
            Admission::Serve => self.limiter.limits.header_timeout,
            Admission::Busy | Admission::AddressFull => {
                self.limiter.limits.refusal_header_timeout()
            }
        }
    }

    /// The answer to every request of a refused connection (`GET /healthz` excepted).
    pub fn refusal(&self) -> Option<Response> {
        let (max_served, _) = self.limiter.caps();
        let error = match self.admission {
            Admission::Serve => return None,
            Admission::Busy => ApiError {
                status: 503,
                code: "server_busy",
                field: None,
                message: format!(
                    "the server is at its connection limit ({max_served}); retry later"
                ),
            },
            Admission::AddressFull => ApiError {
                status: 429,
                code: "too_many_connections",
                field: None,
                message: format!(
                    "too many open connections from this address (at most {}); close some or \
                     retry later",
                    self.limiter.limits.max_connections_per_ip
                ),
            },
        };
        Some(closing(error.response().with_header("retry-after", "5")))
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.release(self.key, self.admission);
    }
}

/// The answer to a request whose body did not arrive in time.
pub fn body_timeout_response(timeout: Duration) -> Response {
    closing(
        ApiError {
            status: 408,
            code: "request_timeout",
            field: None,
            message: format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        }
        .response(),
    )
}

/// `response`, telling the client this connection ends with it.
fn closing(response: HttpResponse) -> Response {
    let mut response = to_axum(response);
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

/// Whole seconds, rounded up, as `Retry-After` wants them.
fn retry_after(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: Limits) -> Arc<Limiter> {
        Limiter::new(limits, Some(100_000))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn caps_follow_the_open_file_limit() {
        assert_eq!(connection_caps(None, Some(20_000)), (18_976, 19_872));
        // A small limit keeps a quarter for everything else.
        assert_eq!(connection_caps(None, Some(1024)), (768, 896));
        // An explicit cap never reaches past the descriptors kept back, and refusals stay bounded.
        assert_eq!(
            connection_caps(Some(50_000), Some(20_000)),
            (19_872, 19_872)
        );
        assert_eq!(connection_caps(Some(10), Some(20_000)), (10, 1034));
        assert_eq!(connection_caps(None, None), (usize::MAX, usize::MAX));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(one), AddressKey::of(same));
        assert_ne!(AddressKey::of(one), AddressKey::of(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(AddressKey::of(mapped), AddressKey::of(A));
    }

    #[test]
    fn an_address_over_its_cap_is_refused_then_closed_and_others_are_not() {
        let limiter = limiter(Limits {
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let served: Vec<_> = (0..2).map(|_| limiter.admit(A).unwrap()).collect();
        assert!(
            served
                .iter()
                .all(|permit| permit.admission() == Admission::Serve)
        );
        let refused: Vec<_> = (0..REFUSALS_PER_ADDRESS)
            .map(|_| limiter.admit(A).unwrap())
            .collect();
        assert!(
            refused
                .iter()
                .all(|permit| permit.admission() == Admission::AddressFull)
        );
        assert!(limiter.admit(A).is_none(), "too many refusals in flight");
        assert_eq!(limiter.admit(B).unwrap().admission(), Admission::Serve);
        drop(refused);
        drop(served);
        assert_eq!(limiter.admit(A).unwrap().admission(), Admission::Serve);
        assert_eq!(limiter.open_connections(), 0);
        assert!(
            limiter.table().by_key.is_empty(),
            "nothing left to remember"
        );
    }

    #[test]
    fn over_the_server_cap_connections_are_busy_then_closed() {
        let limiter = Limiter::new(
            Limits {
                max_connections: Some(1),
                ..Limits::default()
            },
            Some(10_000),
        );
        let first = limiter.admit(A).unwrap();
        assert_eq!(first.admission(), Admission::Serve);
        let busy: Vec<_> = (0..REFUSAL_BAND).map(|_| limiter.admit(B)).collect();
        assert!(
            busy.iter()
                .all(|permit| permit.as_ref().unwrap().admission() == Admission::Busy)
        );
        assert!(limiter.admit(B).is_none(), "beyond the refusal band");
        let refusal = busy[0].as_ref().unwrap().refusal().unwrap();
        assert_eq!(refusal.status(), 503);
        assert_eq!(refusal.headers()["connection"], "close");
        drop(first);
        assert_eq!(limiter.admit(B).unwrap().admission(), Admission::Serve);
    }

    #[test]
    fn sessions_are_rate_limited_per_address() {
        let limiter = limiter(Limits {
            session_rate_per_ip: 2.0,
            session_burst_per_ip: 3,
            ..Limits::default()
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_session_at(A, start).is_ok());
        }
        let wait = limiter.take_session_at(A, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.take_session_at(B, start).is_ok(), "per address");
        let later = start + Duration::from_millis(500);
        assert!(limiter.take_session_at(A, later).is_ok());
        assert!(limiter.take_session_at(A, later).is_err());
        // A rate of 0 turns the limit off.
        let off = self::limiter(Limits {
            session_rate_per_ip: 0.0,
            ..Limits::default()
        });
        assert!((0..10_000).all(|_| off.take_session_at(A, start).is_ok()));
    }

    #[test]
    fn the_table_forgets_addresses_with_nothing_to_remember() {
        let limiter = limiter(Limits {
            session_rate_per_ip: 10.0,
            session_burst_per_ip: 5,
            ..Limits::default()
        });
        let start = Instant::now();
        for n in 0..(FIRST_SWEEP as u32 * 3) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            limiter.take_session_at(ip, start).unwrap();
        }
        assert_eq!(limiter.table().by_key.len(), FIRST_SWEEP * 3);
        // A second later their buckets are full again: the next sweep forgets them.
        let later = start + Duration::from_secs(1);
        for n in 0..(FIRST_SWEEP as u32 * 2) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + n));
            limiter.take_session_at(ip, later).unwrap();
        }
        let table = limiter.table();
        assert!(!table.by_key.contains_key(&AddressKey::V4(0x0a00_0000)));
        assert!(
            table.by_key.len() <= FIRST_SWEEP * 2,
            "{}",
            table.by_key.len()
        );
    }

    #[test]
    fn sessions_count_per_address_until_their_slots_drop() {
        let limiter = limiter(Limits {
            max_sessions_per_ip: 3,
            session_rate_per_ip: 10.0,
            session_burst_per_ip: 5,
            ..Limits::default()
        });
        let slots: Vec<_> = (0..3)
            .map(|_| limiter.reserve_session(A).unwrap().unwrap())
            .collect();
        assert!(limiter.reserve_session(A).is_err(), "at the cap");
        assert_eq!(limiter.sessions_of(A), 3);
        let other = limiter.reserve_session(B).unwrap();
        assert!(other.is_some(), "per address");
        // A sweep of the table (once many addresses have full buckets again) keeps an address
        // that holds sessions.
        let start = Instant::now();
        for n in 0..(FIRST_SWEEP as u32 * 2) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 + n));
            limiter.take_session_at(ip, start).unwrap();
        }
        let later = start + Duration::from_secs(10);
        for n in 0..(FIRST_SWEEP as u32 * 2) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0d00_0000 + n));
            limiter.take_session_at(ip, later).unwrap();
        }
        assert!(limiter.table().by_key.len() < FIRST_SWEEP * 4, "swept");
        assert_eq!(limiter.sessions_of(A), 3);
        drop(slots);
        assert_eq!(limiter.sessions_of(A), 0);
        assert!(limiter.reserve_session(A).unwrap().is_some());
        drop(other);
        assert_eq!(limiter.sessions_of(B), 0);
        assert!(
            !limiter.table().by_key.contains_key(&AddressKey::of(B)),
            "nothing left to remember of B"
        );
        // 0 turns the cap off, and nothing is counted.
        let off = self::limiter(Limits {
            max_sessions_per_ip: 0,
            ..Limits::default()
        });
        assert!((0..10_000).all(|_| off.reserve_session(A).unwrap().is_none()));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after(Duration::from_millis(10)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
    }
}
