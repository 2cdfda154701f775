//! The calls core asks for ([`Output::BackendCall`](switchboard_core::channel::Output)): a signed
//! POST to the app backend, on one pooled keep-alive client for the whole process.
//!
//! The client follows no redirects (a signed call goes where it was configured to, or fails),
//! reads at most [`MAX_ANSWER_BYTES`] of an answer, and gives up a little after the call's
//! timeout: core times the call out on its own clock first, so a late answer changes nothing.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_core::backend::{BackendAnswer, BackendCall, MAX_ANSWER_BYTES};

/// How long opening a connection to the backend may take, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection to the backend is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // rustls on ring: installed once per process (a second install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|err| panic!("the backend's HTTP client cannot be built: {err}"))
    })
}

/// Makes the call and says how it ended.
pub async fn call(call: BackendCall) -> BackendAnswer {
    let mut request = client()
        .post(&call.url)
        .timeout(Duration::from_millis(call.host_timeout_ms()))
        .body(call.body);
    for (name, value) in &call.headers {
        request = request.header(*name, value);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(err) => return BackendAnswer::Failed(describe(&err)),
    };
    let status = response.status().as_u16();
    // Read no more than an answer may hold: a larger one is cut, which core then refuses as
    // not JSON, rather than buffered whole.
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    body.extend_from_slice(&chunk[..MAX_ANSWER_BYTES + 1 - body.len()]);
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(err) => return BackendAnswer::Failed(describe(&err)),
        }
    }
    BackendAnswer::Response {
        status,
        body: Bytes::from(body),
    }
}

/// A short reason for the log: reqwest's error with its causes.
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
