#!/usr/bin/env bash
# Builds the Worker (edge/build/) for wrangler: `[build] command` in wrangler.toml runs this.
# Works offline: worker-build is pointed at locally installed wasm-bindgen, wasm-opt and esbuild
# instead of downloading them. Installs the pinned tools when missing.
set -euo pipefail

EDGE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$EDGE")"
NODE_BIN="$ROOT/tests/node_modules/.bin"

WORKER_BUILD_VERSION=0.8.7     # equal to the `worker` crate
WASM_BINDGEN_VERSION=0.2.130   # equal to the `wasm-bindgen` crate in Cargo.lock

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
    cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
    # Without --locked: the locked build asks for a crate version the registry lacks.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [ ! -x "$NODE_BIN/wasm-opt" ] || [ ! -x "$NODE_BIN/esbuild" ]; then
    (cd "$ROOT/tests" && npm ci --no-audit --no-fund)
fi
# socket.io-client's bundle, which edge/entry.mjs imports for the Worker to serve.
if [ ! -f "$ROOT/client/node_modules/socket.io-client/package.json" ]; then
    (cd "$ROOT/client" && npm ci --no-audit --no-fund --ignore-scripts)
fi

cd "$EDGE"
# wrangler runs this at every start; skip the build when nothing it depends on changed.
# The stamp is written last, so a build that was cut short (wrangler restarts its build when a
# watched file changes) is never taken for a finished one.
OUTPUT="$EDGE/build/index_bg.wasm"
STAMP="$EDGE/build/.complete"
if [ -f "$STAMP" ] && [ -z "${SWITCHBOARD_FORCE_BUILD:-}" ] &&
    [ -z "$(find "$EDGE/src" "$ROOT/core/src" "$EDGE/Cargo.toml" "$ROOT/core/Cargo.toml" \
        "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$EDGE/build.sh" -newer "$STAMP" -print -quit)" ]; then
    echo "edge wasm up to date: $(wc -c <"$OUTPUT") bytes, $(gzip -9 -c "$OUTPUT" | wc -c) bytes gzip -9"
    exit 0
fi
rm -f "$STAMP"
# Size over speed for the wasm only (the native build keeps the workspace's release profile).
CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
WASM_BINDGEN_BIN="$(command -v wasm-bindgen)" \
ESBUILD_BIN="$NODE_BIN/esbuild" \
    worker-build --release
"$NODE_BIN/wasm-opt" build/index_bg.wasm -Oz --enable-exception-handling --strip-debug --strip-producers -o build/index_bg.wasm
touch "$STAMP"
echo "edge wasm: $(wc -c <build/index_bg.wasm) bytes, $(gzip -9 -c build/index_bg.wasm | wc -c) bytes gzip -9"
