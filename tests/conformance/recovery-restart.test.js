// Connection-state recovery across a restart: a client connected when the server stops comes back,
// once it is up again, with its id, its room and the events emitted meanwhile.
//
// - natively, the binary the suite runs (SWITCHBOARD_BIN) with --data-dir, stopped with SIGTERM;
// - on the edge, `wrangler dev` with --persist-to, killed outright (as a deploy drops every
//   WebSocket without the object hearing of it), then started again on the same storage.
//
// The test runs its own server on 127.0.0.1:3007, with the default configuration (chats/:id keeps a
// two-minute window), and a fresh data directory.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath, resolve } from "node:path";

import { io } from "socket.io-client";
import { once, sleep } from "../lib/wait.js";
import { API_SECRET, TARGET } from "../lib/config.js";

const PORT = 3007;
const BASE = `http://127.0.0.1:${PORT}`;
const ROOT = resolve(import.meta.dirname, "../..");
const BIN = process.env.SWITCHBOARD_BIN;
const EDGE = TARGET === "edge";

function startServer(dataDir) {
  const [command, args] = EDGE
    ? [joinPath(ROOT, "tests/node_modules/.bin/wrangler"), ["dev", "--ip", "127.0.0.1", "--port", String(PORT), "--var", `API_SECRET:${API_SECRET}`,
        "--persist-to", dataDir, "--show-interactive-dev-session=false"]]
    : [BIN, ["--host", "127.0.0.1", "--port", String(PORT), "--config", "wrangler.toml", "--data-dir", dataDir]];
  // Its own process group, so that the edge's workerd goes with wrangler.
  return spawn(command, args, {
    cwd: ROOT,
    detached: true,
    env: { ...process.env, API_SECRET, RUST_LOG: "warn", WRANGLER_SEND_METRICS: "false" },
    stdio: "ignore",
  });
}

async function waitUp() {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${BASE}/healthz`)).ok) return;
    } catch {}
    await sleep(50);
  }
  throw new Error("the server did not start");
}

async function stop(server) {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((done) => server.once("exit", done));
  try {
    process.kill(-server.pid, EDGE ? "SIGKILL" : "SIGTERM");
  } catch {}
  await exited;
}

const skip = !EDGE && !BIN ? "natively, SWITCHBOARD_BIN names the server binary" : false;

test(`${EDGE ? "the edge, killed and started again on its storage" : "natively with --data-dir, stopped and started again"}: the client recovers its id, its room and what was emitted meanwhile`, { skip, timeout: 28_000 }, async (t) => {
  const dataDir = mkdtempSync(joinPath(tmpdir(), "switchboard-recovery-"));
  let server = startServer(dataDir);
  t.after(async () => {
    await stop(server);
    rmSync(dataDir, { recursive: true, force: true });
  });
  await waitUp();
  const channel = `chats/restart-${Date.now()}`;
  const socket = io(BASE, { path: `/socket.io/${channel}`, transports: ["websocket"], forceNew: true, reconnectionDelay: 200, randomizationFactor: 0 });
  t.after(() => socket.disconnect());
  await once(socket, "connect", 5000);
  const id = socket.id;
  await new Promise((done) => socket.emit("switchboard:join", "team", done));
  const news = [];
  socket.on("news", (value) => news.push(value));

  await stop(server);
  server = startServer(dataDir);
  await waitUp();
  for (const [data, rooms] of [["to everyone", undefined], ["to the team", ["team"]]]) {
    const response = await fetch(`${BASE}/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_SECRET}`, "content-type": "application/json" },
      body: JSON.stringify({ channel, event: "news", data, ...(rooms ? { rooms } : {}) }),
    });
    assert.equal(response.status, 200);
  }
  for (let i = 0; i < 250 && !(socket.connected && news.length >= 2); i++) await sleep(20);
  assert.equal(socket.connected, true);
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, id);
  assert.deepEqual(news, ["to everyone", "to the team"]);
});
