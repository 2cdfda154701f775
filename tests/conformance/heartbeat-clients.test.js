// Production heartbeats on the edge: the Workers runtime answers each client pong ("3") with a
// noop ("6") so that pongs never wake the Durable Object. Three Socket.IO clients that nobody here
// wrote must ignore that extra noop over hours' worth of heartbeats: socket.io-client (in this
// process), python-socketio and rust_socketio (child processes, installed by tests/run.sh).
//
// The channel pings every 80 ms (`heartbeat/:id` in the conformance configuration), so 300 rounds,
// about two hours at the default 25 s interval, take 24 s. Natively there is no auto-response and
// so no noop: the test runs on both targets, and checks the noops only on the edge.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { BASE_URL, TARGET, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, emitAck } from "../lib/client.js";
import { openSocketIoWs } from "../lib/raw-ws.js";
import { sleep, withTimeout } from "../lib/wait.js";

const PING_INTERVAL = 80;
const ROUNDS = 300;
const SECONDS = (PING_INTERVAL * ROUNDS) / 1000;

/** Runs a client program; resolves with the JSON line it prints. */
function runClient(command, args) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (chunk) => (out += chunk));
      child.stderr.on("data", (chunk) => (err += chunk));
      child.on("error", reject);
      child.on("close", (code) => {
        const line = out.trim().split("\n").pop();
        try {
          resolve(JSON.parse(line));
        } catch {
          reject(new Error(`${command} exited with ${code} and no report: ${out}${err}`));
        }
      });
    }),
    (SECONDS + 30) * 1000,
    `${command} to finish`,
  );
}

function assertLivedThrough(report) {
  assert.deepEqual(report.errors, [], `${report.client} saw errors`);
  assert.deepEqual(report.disconnects, [], `${report.client} was disconnected`);
  assert.ok(report.connected_for_ms >= SECONDS * 1000, `${report.client} stayed ${report.connected_for_ms} ms`);
  assert.deepEqual(report.ack, [], `${report.client} got the relay's empty acknowledgement`);
}

test(`three real clients live through ${ROUNDS} heartbeats of a channel whose pongs are auto-answered`, { timeout: (SECONDS + 60) * 1000 }, async (t) => {
  const python = process.env.SWITCHBOARD_PYTHON_CLIENT;
  const rust = process.env.SWITCHBOARD_RUST_CLIENT;
  assert.ok(python, "SWITCHBOARD_PYTHON_CLIENT names python-socketio's interpreter (tests/run.sh sets it)");
  assert.ok(rust, "SWITCHBOARD_RUST_CLIENT names the rust_socketio client binary (tests/run.sh sets it)");
  const path = channelPath(`heartbeat/${uniqueId()}`);

  // A raw observer in the same channel counts the noops that answer its own pongs.
  const { socket: observer, handshake } = await openSocketIoWs(t, path, { autoPong: true });
  assert.equal(handshake.pingInterval, PING_INTERVAL);
  let noops = 0;
  observer.ws.on("message", (data) => {
    if (data.toString() === "6") noops += 1;
  });

  const node = await connectClient(t, BASE_URL, { path: path.slice(0, -1), transports: ["websocket"] });
  let pings = 0;
  let nodeNoops = 0;
  const nodeDisconnects = [];
  node.io.engine.on("ping", () => (pings += 1));
  node.io.engine.on("packet", (packet) => packet.type === "noop" && (nodeNoops += 1));
  node.on("disconnect", (reason) => nodeDisconnects.push(reason));

  const others = Promise.all([
    runClient(python, [new URL("../clients/python/heartbeat.py", import.meta.url).pathname, BASE_URL, path, String(SECONDS)]),
    runClient(rust, [BASE_URL, path, String(SECONDS)]),
  ]);
  await sleep(SECONDS * 1000);
  const ackArgs = await emitAck(node, "still here", { from: "node" });
  const reports = await others;

  assert.deepEqual(nodeDisconnects, [], "socket.io-client was disconnected");
  assert.deepEqual(ackArgs, [], "socket.io-client got the relay's empty acknowledgement");
  assert.ok(pings >= ROUNDS * 0.8, `socket.io-client saw ${pings} pings in ${ROUNDS} intervals`);
  for (const report of reports) assertLivedThrough(report);
  if (TARGET === "edge") {
    assert.ok(nodeNoops >= ROUNDS * 0.8, `socket.io-client got ${nodeNoops} noops: the auto-response is on`);
    assert.ok(noops >= ROUNDS * 0.8, `the observer got ${noops} noops`);
  } else {
    assert.equal(nodeNoops, 0, "the native server sends no noops");
  }
});
