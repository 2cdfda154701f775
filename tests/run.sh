#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), then runs
#   1. the Rust tests of every crate (core natively, native host, config),
#   2. the core's tests again under wasm32 in Node (wasm-bindgen-test),
#   3. the conformance suite in tests/ (real socket.io-client + raw protocol requests) against the
#      native binary: conformance configuration on 127.0.0.1:3000, default configuration on :3001.
# Usage: bash tests/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate in Cargo.lock
CONFORMANCE_PORT="${CONFORMANCE_PORT:-3000}"
DEFAULT_PORT="${DEFAULT_PORT:-3001}"

step() { printf '\n==> %s\n' "$*"; }

# --- prerequisites ------------------------------------------------------------------------------
step "checking prerequisites"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
    # Without --locked: the locked build asks for a crate version the registry lacks.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
    (cd tests && npm ci --no-audit --no-fund)
fi

# --- Rust tests ---------------------------------------------------------------------------------
step "cargo test (native)"
cargo test --workspace

step "cargo test (core under wasm32, in Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p switchboard-core --target wasm32-unknown-unknown

# --- conformance suite against the native binary ------------------------------------------------
step "building the native server"
cargo build -p switchboard-native
BIN="$ROOT/target/debug/switchboard"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

LOGS="$ROOT/target/test-logs"
mkdir -p "$LOGS"
"$BIN" --host 127.0.0.1 --port "$CONFORMANCE_PORT" --config wrangler.toml --env conformance \
    >"$LOGS/native-conformance.log" 2>&1 &
PIDS+=($!)
"$BIN" --host 127.0.0.1 --port "$DEFAULT_PORT" --config wrangler.toml \
    >"$LOGS/native-default.log" 2>&1 &
PIDS+=($!)

wait_for() { # url
    node -e '
        const url = process.argv[1];
        const deadline = Date.now() + 30000;
        (async function poll() {
            try { await fetch(url); process.exit(0); } catch {}
            if (Date.now() > deadline) { console.error("server did not start: " + url); process.exit(1); }
            setTimeout(poll, 100);
        })();' "$1"
}
wait_for "http://127.0.0.1:$CONFORMANCE_PORT/socket.io/?EIO=4&transport=polling"
wait_for "http://127.0.0.1:$DEFAULT_PORT/socket.io/?EIO=4&transport=polling"

step "conformance suite against native"
(cd tests && SWITCHBOARD_URL="http://127.0.0.1:$CONFORMANCE_PORT" \
    SWITCHBOARD_DEFAULT_URL="http://127.0.0.1:$DEFAULT_PORT" npm test) || {
    echo "conformance suite failed; server logs are in $LOGS" >&2
    exit 1
}
echo "all tests passed"
