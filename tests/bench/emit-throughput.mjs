// POST /emit throughput on the native server: emits per second into one channel of N WebSocket
// clients, every delivery checked.
//
//   cargo build --release -p switchboard-native
//   node tests/bench/emit-throughput.mjs [--clients 1000] [--seconds 5] [--concurrency 32]
//
// The script starts target/release/switchboard on 127.0.0.1 itself (embedded default config,
// channel chats/bench), connects the clients from this one Node process, then keeps `concurrency`
// emits in flight for `seconds`. Every client must receive every event, in order; the run fails
// otherwise. On a small machine the Node clients, not the server, may be what saturates first: the
// report says how busy each side was.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import os from "node:os";
import path from "node:path";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const CLIENTS = Number(args.clients ?? 1000);
const SECONDS = Number(args.seconds ?? 5);
const CONCURRENCY = Number(args.concurrency ?? 32);
const PORT = Number(args.port ?? 3999);
const SECRET = "bench-secret";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BASE = `http://127.0.0.1:${PORT}`;
const CHANNEL = "chats/bench";

// Started from a directory without wrangler.toml, so the embedded default applies.
const server = spawn(path.join(ROOT, "target/release/switchboard"), ["--port", String(PORT)], {
  cwd: os.tmpdir(),
  env: { ...process.env, API_SECRET: SECRET, RUST_LOG: "warn" },
  stdio: ["ignore", "inherit", "inherit"],
});
const stop = () => server.kill("SIGTERM");
process.on("exit", stop);

async function waitReady() {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${BASE}/healthz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not start");
}

function procCpu(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

await waitReady();
// Clients speak Engine.IO/Socket.IO directly over `ws` (handshake, namespace connect, pongs) and
// only count events: much cheaper per message than socket.io-client, so more of the machine is
// left to the server under test.
const sockets = [];
let received = 0;
const perClient = new Uint32Array(CLIENTS);
const wsUrl = `ws://127.0.0.1:${PORT}/socket.io/${CHANNEL}/?EIO=4&transport=websocket`;
await Promise.all(
  Array.from({ length: CLIENTS }, (_, i) =>
    new Promise((resolve, reject) => {
      const socket = new WebSocket(wsUrl);
      sockets.push(socket);
      socket.on("error", reject);
      socket.on("message", (data) => {
        const text = data.toString();
        if (text.startsWith('42["tick"')) {
          received += 1;
          perClient[i] += 1;
        } else if (text === "2") socket.send("3");
        else if (text.startsWith("0")) socket.send("40");
        else if (text.startsWith("40")) resolve();
      });
    }),
  ),
);

let sent = 0;
let delivered = 0;
let failures = 0;
let next = 0;
const post = async () => {
  const n = next++;
  const response = await fetch(`${BASE}/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ channel: CHANNEL, event: "tick", data: n }),
  });
  const body = await response.json();
  if (response.status !== 200) failures += 1;
  delivered += body.delivered ?? 0;
  sent += 1;
};
const cpuServerStart = procCpu(server.pid);
const cpuSelfStart = process.cpuUsage();
const started = Date.now();
const deadline = started + SECONDS * 1000;
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (Date.now() < deadline) await post();
  }),
);
const elapsed = (Date.now() - started) / 1000;
const expected = sent * CLIENTS;
const waitUntil = Date.now() + 10_000;
while (received < expected && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 50));
const drained = (Date.now() - started) / 1000;
const serverCpu = procCpu(server.pid) - cpuServerStart;
const self = process.cpuUsage(cpuSelfStart);
const selfCpu = (self.user + self.system) / 1e6;

const report = {
  clients: CLIENTS,
  concurrency: CONCURRENCY,
  seconds: Number(elapsed.toFixed(2)),
  emits: sent,
  emits_per_second: Math.round(sent / elapsed),
  deliveries_per_second: Math.round(received / drained),
  delivered_reported: delivered,
  received,
  lost: expected - received,
  clients_missing_events: perClient.filter((count) => count !== sent).length,
  failures,
  server_cpu_percent: Math.round((serverCpu / drained) * 100),
  clients_cpu_percent: Math.round((selfCpu / drained) * 100),
};
console.log(JSON.stringify(report, null, 2));
for (const s of sockets) s.terminate();
stop();
const ok = report.lost === 0 && report.failures === 0 && delivered === expected && report.clients_missing_events === 0;
process.exit(ok ? 0 : 1);
