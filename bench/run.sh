#!/usr/bin/env bash
# One command for the whole benchmark: builds Switchboard, the load generator and the peers, runs
# each server in turn on 127.0.0.1 under the same load, then the edge against a hand-written JS
# Durable Object under wrangler dev, and writes docs/bench/results.md plus SVG charts.
#
#   bash bench/run.sh            (QUICK=1 for a short smoke run)
#
# A change's cost, against the code before it, in the same run:
#   BEFORE_BIN=<switchboard binary built from the earlier commit> ROUNDS=3 bash bench/run.sh
# measures that binary too ("switchboard-before"), alternating with this one ROUNDS times, and the
# report gives after/before ratios of server CPU per delivery and idle memory. ONLY_SWITCHBOARD=1
# skips the peers and the edge.
#
# Every run is bounded: fixed client counts, fixed durations, servers stopped at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/docs/bench"
RESULTS="$ROOT/target/bench/results.jsonl"
LOGS="$ROOT/target/bench/logs"
mkdir -p "$OUT" "$LOGS"
: >"$RESULTS"

SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
# Longer, so that one scheduling stall of the shared machine does not decide the p99.
LATENCY_SECONDS="${LATENCY_SECONDS:-15}"
IDLE_CLIENTS="${IDLE_CLIENTS:-10000}"
BIG_FANOUT="${BIG_FANOUT:-10000}"
FIXED_RATE="${FIXED_RATE:-100}"
if [ -n "${QUICK:-}" ]; then SECONDS_PER_RUN=2 LATENCY_SECONDS=2 IDLE_CLIENTS=2000 BIG_FANOUT=2000; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# 10,000 clients from one address: the native server's per-IP limits are for the open internet,
# not for load tests (binaries from before those limits ignore these variables).
export SWITCHBOARD_MAX_CONNECTIONS_PER_IP=0 SWITCHBOARD_SESSION_RATE_PER_IP=0 SWITCHBOARD_MAX_SESSIONS_PER_IP=0

step() { printf '\n==> %s\n' "$*"; }

step "building (release)"
cargo build --release -p switchboard-native -p switchboard-loadgen
cargo build --release --manifest-path bench/peers/socketioxide/Cargo.toml
cargo build --release --manifest-path bench/peers/raw/Cargo.toml
(cd bench/peers/socketio && { [ -d node_modules ] || npm ci --no-audit --no-fund; })
(cd tests && { [ -d node_modules ] || npm ci --no-audit --no-fund; })
LOADGEN="$ROOT/target/release/switchboard-loadgen"

PGID=""
stop_server() {
    if [ -n "$PGID" ]; then
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$PGID" 2>/dev/null || true
        PGID=""
    fi
}
trap stop_server EXIT
start_server() { # name port command...
    local name="$1" port="$2"
    shift 2
    setsid "$@" >"$LOGS/$name.log" 2>&1 &
    PGID=$!
    for _ in $(seq 1 600); do
        if node -e "fetch('http://127.0.0.1:$port/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "$name did not start; see $LOGS/$name.log" >&2
    exit 1
}
# The listening process (not the setsid wrapper): RSS is read from it.
server_pid() { ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1; }
record() { # server test json
    python3 -c 'import json,sys; row=json.loads(sys.argv[3]); row.update(server=sys.argv[1], test=sys.argv[2]); print(json.dumps(row))' "$1" "$2" "$3" >>"$RESULTS"
    echo "$1 $2: $3"
}
measure() { # name port driver-supports-idle
    local name="$1" port="$2"
    local target=(--server "127.0.0.1:$port" --path /socket.io/chats/bench/)
    local pid
    pid="$(server_pid "$port")"
    record "$name" idle "$("$LOADGEN" "${target[@]}" idle --clients "$IDLE_CLIENTS" --pid "$pid")"
    record "$name" fanout-1000 "$("$LOADGEN" "${target[@]}" fanout --clients 1000 --seconds "$SECONDS_PER_RUN" --window 64 --pid "$pid")"
    record "$name" fanout-10000 "$("$LOADGEN" "${target[@]}" fanout --clients "$BIG_FANOUT" --seconds "$SECONDS_PER_RUN" --window 16 --pid "$pid")"
    record "$name" latency-1000 "$("$LOADGEN" "${target[@]}" fanout --clients 1000 --seconds "$LATENCY_SECONDS" --rate "$FIXED_RATE" --pid "$pid")"
    record "$name" emit-1000 "$("$LOADGEN" "${target[@]}" fanout --clients 1000 --seconds "$SECONDS_PER_RUN" --driver emit --pid "$pid")"
}

# Each server fresh, alone on the machine, same load.
TMP_CWD="$(mktemp -d)" # no wrangler.toml there: Switchboard runs its embedded default (chats/:id)
# The embedded default's chats/:id, with the per-socket event rate raised: the fan-out driver sends
# thousands of events a second from one socket, and the peers have no such limit.
BENCH_CHANNELS='{"/":{"relay":"all"},"chats/:id":{"relay":"all","client_rooms":true,"events_per_second":1000000}}'
run_switchboard() { # name binary
    step "$1 (native)"
    start_server "$1" 4100 env -C "$TMP_CWD" API_SECRET=bench-secret CHANNELS="$BENCH_CHANNELS" RUST_LOG=warn "$2" --port 4100
    measure "$1" 4100
    stop_server
}
# The same, with connection-state recovery on: what stamping and keeping every event costs.
BENCH_CHANNELS_RECOVERY='{"/":{"relay":"all"},"chats/:id":{"relay":"all","client_rooms":true,"events_per_second":1000000,"recovery":true}}'
run_switchboard_recovery() {
    step "switchboard with recovery (native)"
    start_server switchboard-recovery 4100 env -C "$TMP_CWD" API_SECRET=bench-secret CHANNELS="$BENCH_CHANNELS_RECOVERY" RUST_LOG=warn \
        "$ROOT/target/release/switchboard" --port 4100
    measure switchboard-recovery 4100
    stop_server
}
for _ in $(seq 1 "${ROUNDS:-1}"); do
    run_switchboard switchboard "$ROOT/target/release/switchboard"
    if [ -n "${BEFORE_BIN:-}" ]; then
        run_switchboard switchboard-before "$BEFORE_BIN"
    fi
    run_switchboard_recovery
done

# A reconnect storm (bench/storm.mjs): STORM_CLIENTS clients drop at once while events flow.
STORM_CLIENTS="${STORM_CLIENTS:-1000}"
if [ -n "${QUICK:-}" ]; then STORM_CLIENTS=200; fi
storm() { # name port [restart command]
    local name="$1" port="$2"
    shift 2
    local result
    if result="$(node bench/storm.mjs --url "http://127.0.0.1:$port" --clients "$STORM_CLIENTS" "$@")"; then :; fi
    [ -n "$result" ] && record "$name" storm "$result"
}
step "reconnect storm: switchboard (native, recovery in memory)"
start_server switchboard-storm 4100 env -C "$TMP_CWD" API_SECRET=bench-secret CHANNELS="$BENCH_CHANNELS_RECOVERY" RUST_LOG=warn \
    "$ROOT/target/release/switchboard" --port 4100
storm switchboard 4100
stop_server
# Backend handlers: the ack round trip of a client event through a handler to a trivial backend
# (run by the load generator on :4300), against that backend called directly over HTTP, in
# alternating rounds; then handler calls/s at saturation. One channel, so one channel actor.
HANDLER_CHANNELS='{"bench/:id":{"relay_events":[],"events_per_second":1000000,"handlers":{"work":{"schema":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}}}}}'
step "backend handlers (native)"
start_server switchboard-handlers 4100 env -C "$TMP_CWD" API_SECRET=bench-secret WEBHOOK_SECRET=bench-webhook-secret \
    BACKEND_URL=http://127.0.0.1:4300/switchboard CHANNELS="$HANDLER_CHANNELS" RUST_LOG=warn \
    "$ROOT/target/release/switchboard" --port 4100
handler() { # mode test args...
    local mode="$1" test="$2"
    shift 2
    record "switchboard" "$test" "$("$LOADGEN" --server 127.0.0.1:4100 --path /socket.io/bench/1/ handler \
        --mode "$mode" --pid "$(server_pid 4100)" "$@")"
}
for _ in $(seq 1 "${HANDLER_ROUNDS:-3}"); do
    handler direct handler-direct-1000 --rate 1000 --clients 100 --seconds "$LATENCY_SECONDS"
    handler switchboard handler-1000 --rate 1000 --clients 100 --seconds "$LATENCY_SECONDS"
done
handler direct handler-direct-saturation --rate 0 --clients 50 --window 8 --seconds "$SECONDS_PER_RUN"
handler switchboard handler-saturation --rate 0 --clients 50 --window 8 --seconds "$SECONDS_PER_RUN"
stop_server

if [ -n "${ONLY_SWITCHBOARD:-}" ]; then
    step "report"
    python3 bench/report.py "$RESULTS" "$ROOT/target/bench/report" "$(nproc) cores, $(date -u +%Y-%m-%d)"
    exit 0
fi

step "socketioxide"
start_server socketioxide 4101 "$ROOT/bench/peers/socketioxide/target/release/bench-peer-socketioxide" --port 4101
measure socketioxide 4101
stop_server

step "socket.io"
start_server socket.io 4102 node "$ROOT/bench/peers/socketio/server.mjs" --port 4102
measure socket.io 4102
stop_server

step "reconnect storm: socket.io with connectionStateRecovery"
start_server socket.io-recovery 4102 node "$ROOT/bench/peers/socketio/server.mjs" --port 4102 --recovery
storm socket.io-recovery 4102
stop_server

step "raw baseline"
start_server raw 4103 "$ROOT/bench/peers/raw/target/release/bench-peer-raw" --port 4103
measure raw 4103
stop_server

# --- the edge ---------------------------------------------------------------------------------------
WRANGLER="$ROOT/tests/node_modules/.bin/wrangler"
export WRANGLER_SEND_METRICS=false
step "edge: Switchboard under wrangler dev"
start_server switchboard-edge 4200 "$WRANGLER" dev --ip 127.0.0.1 --port 4200 --var API_SECRET:bench-secret \
    --persist-to "$ROOT/target/bench/wrangler-switchboard" --show-interactive-dev-session=false
record switchboard-edge edge-emit-1000 "$("$LOADGEN" --server 127.0.0.1:4200 fanout --clients 1000 --seconds "$SECONDS_PER_RUN" --driver emit)"
WASM="$ROOT/edge/build/index_bg.wasm"
record switchboard-edge wasm "{\"raw_bytes\": $(wc -c <"$WASM"), \"gzip_bytes\": $(gzip -9 -c "$WASM" | wc -c)}"
stop_server

step "reconnect storm: the edge, restarting wrangler dev under its clients"
EDGE_STORM_STATE="$ROOT/target/bench/wrangler-storm"
rm -rf "$EDGE_STORM_STATE"
edge_storm_server() {
    setsid "$WRANGLER" dev --ip 127.0.0.1 --port 4202 --var API_SECRET:bench-secret \
        --persist-to "$EDGE_STORM_STATE" --show-interactive-dev-session=false >>"$LOGS/switchboard-edge-storm.log" 2>&1 &
    echo $! >"$ROOT/target/bench/edge-storm.pgid"
}
edge_storm_server
for _ in $(seq 1 600); do curl -sf -o /dev/null http://127.0.0.1:4202/healthz && break; sleep 0.2; done
# The restart: every WebSocket drops at once and the objects start again from their storage.
export -f edge_storm_server
export WRANGLER EDGE_STORM_STATE LOGS ROOT BENCH_CHANNELS_RECOVERY
storm switchboard-edge 4202 --restart 'kill -KILL -- -"$(cat "$ROOT/target/bench/edge-storm.pgid")"; sleep 0.5; edge_storm_server; for _ in $(seq 1 600); do curl -sf -o /dev/null http://127.0.0.1:4202/healthz && break; sleep 0.1; done'
kill -KILL -- -"$(cat "$ROOT/target/bench/edge-storm.pgid")" 2>/dev/null || true

# Presence: PRESENCE_CLIENTS sockets join one channel at once (bench/presence.mjs), on the same
# channel with presence off, on, and on with the shipped 100 ms coalescing window.
PRESENCE_CLIENTS="${PRESENCE_CLIENTS:-1000}"
presence_run() { # name channels-json
    step "presence: $1 (native)"
    start_server "switchboard-$1" 4100 env -C "$TMP_CWD" API_SECRET=bench-secret CHANNELS="$2" RUST_LOG=warn \
        "$ROOT/target/release/switchboard" --port 4100
    local result
    if result="$(node bench/presence.mjs --url http://127.0.0.1:4100 --channel chats/bench --clients "$PRESENCE_CLIENTS")"; then :; fi
    [ -n "$result" ] && record "switchboard-$1" presence-join "$result"
    stop_server
}
for _ in 1 2; do
    presence_run presence-off '{"chats/:id":{"relay":"all"}}'
    presence_run presence-on '{"chats/:id":{"relay":"all","presence":{"coalesce":0}}}'
    presence_run presence-coalesced '{"chats/:id":{"relay":"all","presence":{"coalesce":100}}}'
done

step "edge: the JS Durable Object baseline under wrangler dev"
start_server js-durable-object 4201 "$WRANGLER" dev --config bench/edge-baseline/wrangler.toml --ip 127.0.0.1 --port 4201 \
    --persist-to "$ROOT/target/bench/wrangler-baseline" --show-interactive-dev-session=false
record js-durable-object edge-emit-1000 "$("$LOADGEN" --server 127.0.0.1:4201 fanout --clients 1000 --seconds "$SECONDS_PER_RUN" --driver emit)"
stop_server

step "report"
MACHINE="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m), $(date -u +%Y-%m-%d)"
python3 bench/report.py "$RESULTS" "$OUT" "$MACHINE"
cp "$RESULTS" "$OUT/results.jsonl"
