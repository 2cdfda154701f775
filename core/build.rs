//! Puts socket.io-client's browser bundle next to the chat example for `switchboard_core::web`.
//!
//! The bundle comes from npm (it is never committed): `core/web/package.json` pins it, and this
//! script runs `npm ci` there when it is missing, so `cargo run` on a fresh clone serves a working
//! chat. Without npm the build still succeeds; the server then answers `/socket.io/socket.io.js`
//! with a 503 that says how to fix it.

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let web = Path::new(&manifest).join("web");
    let bundle = web.join("node_modules/socket.io-client/dist/socket.io.min.js");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed={}", bundle.display());

    if !bundle.exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&web)
            .status();
        match installed {
            Ok(status) if status.success() => {}
            Ok(status) => println!(
                "cargo:warning=npm ci in core/web failed ({status}); the chat page will lack socket.io-client"
            ),
            Err(err) => println!(
                "cargo:warning=npm not available ({err}); the chat page will lack socket.io-client"
            ),
        }
    }

    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("socket.io.min.js");
    match std::fs::read(&bundle) {
        Ok(bytes) => {
            std::fs::write(&out, bytes).expect("OUT_DIR is writable");
            println!("cargo:rustc-cfg=socket_io_bundle");
        }
        Err(_) => std::fs::write(&out, b"").expect("OUT_DIR is writable"),
    }
    println!("cargo::rustc-check-cfg=cfg(socket_io_bundle)");
}
