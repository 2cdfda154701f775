//! The calls core asks for ([`Output::BackendCall`](switchboard_core::channel::Output)), made with
//! `fetch`: to the backend's public URL, or through a service binding named [`SERVICE_BINDING`]
//! when the Worker has one (then the URL's path is kept and its host does not matter).
//!
//! Redirects are not followed (a signed call goes where it was configured to, or fails), an
//! answer is read up to [`MAX_ANSWER_BYTES`], and the call is aborted a little after its timeout:
//! core times it out on its own clock first.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use switchboard_core::backend::{BackendAnswer, BackendCall, MAX_ANSWER_BYTES};
use worker::{
    AbortController, AbortSignal, Delay, Env, Fetch, Headers, Request, Response, web_sys,
};

/// The service binding that, when present, carries every backend call (a Worker of the app).
pub const SERVICE_BINDING: &str = "BACKEND";

/// Makes the call and says how it ended.
pub async fn call(env: &Env, call: BackendCall) -> BackendAnswer {
    let host_timeout_ms = call.host_timeout_ms();
    let timeout = Delay::from(Duration::from_millis(host_timeout_ms));
    let abort = AbortController::default();
    let signal = abort.signal();
    let sent = send(env, &call, &signal);
    futures_util::pin_mut!(sent);
    match select(sent, timeout).await {
        Either::Left((answer, _)) => answer,
        Either::Right(((), _)) => {
            abort.abort();
            BackendAnswer::Failed(format!("timed out after {host_timeout_ms} ms"))
        }
    }
}

async fn send(env: &Env, call: &BackendCall, signal: &AbortSignal) -> BackendAnswer {
    let headers = Headers::new();
    for (name, value) in &call.headers {
        if headers.set(name, value).is_err() {
            return BackendAnswer::Failed(format!("header {name} cannot be sent"));
        }
    }
    // Plain web_sys, as in the router: the `worker` crate's RequestInit drags in a serde bridge
    // (for its `cf` options) that the edge otherwise does not need.
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(headers.as_ref());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_body(&js_sys::Uint8Array::from(call.body.as_ref()).into());
    let request = web_sys::Request::new_with_str_and_init(&call.url, &init).map(Request::from);
    let response = match env.service(SERVICE_BINDING) {
        Ok(service) => match request {
            Ok(request) => service.fetch_request(request).await,
            Err(err) => Err(worker::Error::from(err)),
        },
        Err(_) => match request {
            Ok(request) => Fetch::Request(request).send_with_signal(signal).await,
            Err(err) => {
                let err = err
                    .as_string()
                    .unwrap_or_else(|| "invalid URL or options for Request".into());
                return BackendAnswer::Failed(format!("bad request: {err}"));
            }
        },
    };
    match response {
        Ok(response) => read(response).await,
        Err(err) => BackendAnswer::Failed(err.to_string()),
    }
}

/// The status and at most one byte more than an answer may hold (core refuses a longer one).
async fn read(mut response: Response) -> BackendAnswer {
    let status = response.status_code();
    let mut body = BytesMut::new();
    if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => return BackendAnswer::Failed(err.to_string()),
            };
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                body.extend_from_slice(&chunk[..MAX_ANSWER_BYTES + 1 - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
    }
    BackendAnswer::Response {
        status,
        body: Bytes::from(body),
    }
}
