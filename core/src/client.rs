//! socket.io-client's browser bundle, served at `/socket.io/<file>` as socket.io serves it by
//! default (`serveClient`): the same files, content types and cache validation.
//!
//! The bytes are the hosts' business: they take them from npm at build time (`client/`), never
//! from the repository. This module decides which paths exist and how each answer looks, so that
//! both hosts answer alike.

use bytes::Bytes;

use crate::http::HttpResponse;

/// The files socket.io serves, under `/socket.io/`.
pub const CLIENT_FILES: [&str; 8] = [
    "socket.io.js",
    "socket.io.js.map",
    "socket.io.min.js",
    "socket.io.min.js.map",
    "socket.io.esm.min.js",
    "socket.io.esm.min.js.map",
    "socket.io.msgpack.min.js",
    "socket.io.msgpack.min.js.map",
];

/// Where the files live in the npm package `socket.io-client`.
pub const PACKAGE_DIST: &str = "socket.io-client/dist";

/// The client file a request path names, if it names one.
pub fn file_for_path(path: &str) -> Option<&'static str> {
    let name = path
        .strip_prefix(crate::http::SOCKET_IO_PREFIX)?
        .strip_prefix('/')?;
    CLIENT_FILES.iter().copied().find(|file| *file == name)
}

/// The `304` for a GET whose `If-None-Match` names the bundle of socket.io-client `version`, as
/// socket.io answers: the version is the ETag. Hosts ask this first and only fetch the bytes when
/// it is `None`.
pub fn not_modified(version: &str, if_none_match: Option<&str>) -> Option<HttpResponse> {
    let etag = etag(version);
    let weak = format!("W/{etag}");
    let matches = if_none_match?
        .split(',')
        .map(str::trim)
        .any(|tag| tag == etag || tag == weak || tag == "*");
    matches.then(|| HttpResponse {
        status: 304,
        headers: cache_headers(version),
        body: Bytes::new(),
    })
}

/// The answer to a GET of client file `file` whose bytes are `body`, from the bundle of
/// socket.io-client `version`, with socket.io's content types and cache headers.
pub fn response(file: &str, body: Bytes, version: &str) -> HttpResponse {
    let content_type = if file.ends_with(".map") {
        "application/json; charset=utf-8"
    } else {
        "application/javascript; charset=utf-8"
    };
    HttpResponse {
        status: 200,
        headers: cache_headers(version),
        body,
    }
    .with_header("content-type", content_type)
}

fn etag(version: &str) -> String {
    format!("\"{version}\"")
}

/// Caches keep the file but ask again each time, cheaply, with the ETag.
fn cache_headers(version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("etag", etag(version)),
        ("cache-control", "public, max-age=0".to_string()),
    ]
}

/// The answer when the host was built without the bundle (npm was missing).
pub fn missing_response() -> HttpResponse {
    HttpResponse::text(
        503,
        "socket.io-client's bundle was not installed when this server was built: install Node.js \
         and npm, then rebuild (the build runs `npm ci` in client/)",
    )
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn serves_the_files_socket_io_serves_and_nothing_else() {
        assert_eq!(
            file_for_path("/socket.io/socket.io.js"),
            Some("socket.io.js")
        );
        assert_eq!(
            file_for_path("/socket.io/socket.io.min.js.map"),
            Some("socket.io.min.js.map")
        );
        assert_eq!(file_for_path("/socket.io/other.js"), None);
        assert_eq!(file_for_path("/socket.io.js"), None);
        assert_eq!(file_for_path("/socket.io/chats/socket.io.js"), None);
    }

    #[test]
    fn answers_like_socket_io() {
        let ok = response("socket.io.js", Bytes::from_static(b"js"), "4.8.4");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("etag"), Some("\"4.8.4\""));
        assert_eq!(ok.header("cache-control"), Some("public, max-age=0"));
        assert_eq!(
            ok.header("content-type"),
            Some("application/javascript; charset=utf-8")
        );
        let map = response("socket.io.js.map", Bytes::new(), "4.8.4");
        assert_eq!(
            map.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        for tag in ["\"4.8.4\"", "W/\"4.8.4\"", "\"x\", \"4.8.4\""] {
            let cached = not_modified("4.8.4", Some(tag)).expect(tag);
            assert_eq!(cached.status, 304, "{tag}");
            assert!(cached.body.is_empty());
        }
        assert!(not_modified("4.8.4", Some("\"4.0\"")).is_none());
        assert!(not_modified("4.8.4", None).is_none());
    }
}
