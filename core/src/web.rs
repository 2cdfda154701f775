//! The chat example both hosts serve when `CHAT_EXAMPLE = true`: a page at `/`, its script and
//! style, and socket.io-client's browser bundle at `/socket.io/socket.io.js` (the path the Socket.IO
//! tutorial's page loads it from). The bundle is installed from npm at build time (see
//! `core/build.rs`), never committed.

use bytes::Bytes;

use crate::http::HttpResponse;

const INDEX_HTML: &str = include_str!("../web/index.html");
const CHAT_JS: &str = include_str!("../web/chat.js");
const CHAT_CSS: &str = include_str!("../web/chat.css");
const SOCKET_IO_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));

/// Path of socket.io-client's bundle; also checked by the router before channel names.
pub const SOCKET_IO_CLIENT_PATH: &str = "/socket.io/socket.io.js";

/// Whether `path` is one of the example's files.
pub fn is_asset(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/chat.js" | "/chat.css" | SOCKET_IO_CLIENT_PATH
    )
}

/// The response for an example file, or `None` when `path` is not one.
pub fn asset(path: &str) -> Option<HttpResponse> {
    let (content_type, body) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            Bytes::from_static(INDEX_HTML.as_bytes()),
        ),
        "/chat.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(CHAT_JS.as_bytes()),
        ),
        "/chat.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(CHAT_CSS.as_bytes()),
        ),
        SOCKET_IO_CLIENT_PATH => {
            if !cfg!(socket_io_bundle) {
                return Some(HttpResponse::text(
                    503,
                    "socket.io-client was not installed when this server was built: install Node.js \
                     and npm, then rebuild (core/build.rs runs `npm ci` in core/web)",
                ));
            }
            (
                "text/javascript; charset=utf-8",
                Bytes::from_static(SOCKET_IO_JS),
            )
        }
        _ => return None,
    };
    Some(HttpResponse {
        status: 200,
        headers: vec![
            ("content-type", content_type.into()),
            ("cache-control", "no-cache".into()),
            ("x-content-type-options", "nosniff".into()),
        ],
        body,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn serves_the_page_and_the_client_bundle() {
        let page = asset("/").unwrap();
        assert_eq!(page.status, 200);
        assert!(
            std::str::from_utf8(&page.body)
                .unwrap()
                .contains("/socket.io/socket.io.js")
        );
        let bundle = asset(SOCKET_IO_CLIENT_PATH).unwrap();
        assert_eq!(
            bundle.status, 200,
            "core/build.rs installs socket.io-client"
        );
        assert!(bundle.body.len() > 10_000);
        assert!(asset("/nope").is_none());
    }
}
