// A reconnect storm: N connected clients all lose their connection at once while events keep
// flowing, then all come back with connection-state recovery. Measures the time from the drop
// until every client has recovered (same socket id, `socket.recovered`) and holds every event
// emitted since it connected, without a gap and without a duplicate.
//
//   node bench/storm.mjs --url http://127.0.0.1:4100 [--clients 1000] [--rate 50] [--restart "<cmd>"]
//
// The clients are socket.io-client's, in this one process, over WebSocket; events are emitted with
// POST /emit (Bearer bench-secret) to channel chats/bench at --rate per second, each carrying its
// sequence number. Without --restart the drop is each client closing its transport
// (`socket.io.engine.close()`, what a network blip looks like to the server); with --restart the
// command is run to restart the server instead (the edge under wrangler dev: every WebSocket
// drops, the Durable Object starts again from its storage). Prints one JSON line.

import { execSync } from "node:child_process";
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/package.json", import.meta.url));
const { io } = require("socket.io-client");

const arg = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index > 0 ? process.argv[index + 1] : fallback;
};
const SERVER = arg("url", "http://127.0.0.1:4100");
const CLIENTS = Number(arg("clients", 1000));
const RATE = Number(arg("rate", 50));
const RESTART = arg("restart", null);
const DEADLINE_MS = Number(arg("deadline", 60_000));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let emitted = 0;
let emitting = true;
async function emitter() {
  while (emitting) {
    const seq = ++emitted;
    try {
      const response = await fetch(`${SERVER}/emit`, {
        method: "POST",
        headers: { authorization: "Bearer bench-secret", "content-type": "application/json" },
        body: JSON.stringify({ channel: "chats/bench", event: "tick", data: seq }),
      });
      // A server still starting may refuse it: then it was never emitted either.
      if (!response.ok) throw new Error(`emit: ${response.status}`);
    } catch {
      // The server is down (restart): this sequence number never existed for anyone.
      emitted--;
      await sleep(50);
      continue;
    }
    await sleep(1000 / RATE);
  }
}

const clients = [];
for (let i = 0; i < CLIENTS; i++) {
  const socket = io(SERVER, {
    path: "/socket.io/chats/bench",
    transports: ["websocket"],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 2000,
  });
  const client = { socket, id: null, seen: [], distinct: new Set(), duplicates: 0, recovered: false };
  socket.on("tick", (seq) => {
    if (client.distinct.has(seq)) client.duplicates++;
    client.distinct.add(seq);
    client.seen.push(seq);
  });
  socket.on("connect", () => {
    if (client.id === null) client.id = socket.id;
    else client.recovered = socket.recovered && socket.id === client.id;
  });
  clients.push(client);
}
const started = Date.now();
while (clients.some((client) => client.id === null)) {
  if (Date.now() - started > DEADLINE_MS) throw new Error("clients did not all connect");
  await sleep(50);
}
const connectMs = Date.now() - started;
const flowing = emitter();
// Every client has events before the drop.
while (clients.some((client) => client.seen.length < 5)) await sleep(20);

const dropAt = Date.now();
if (RESTART) execSync(RESTART, { stdio: "inherit", shell: "/bin/bash" });
else for (const client of clients) client.socket.io.engine.close();

/** A client is whole once it is recovered and holds every sequence number from its first on. */
const whole = (client, upTo) => {
  if (!client.recovered) return false;
  const first = client.seen[0];
  return client.distinct.size >= upTo - first + 1 && client.distinct.has(upTo);
};
let allRecoveredMs = null;
while (Date.now() - dropAt < DEADLINE_MS) {
  const upTo = Math.max(...clients.map((client) => client.seen.at(-1) ?? 0));
  if (clients.every((client) => client.recovered) && clients.every((client) => whole(client, upTo))) {
    allRecoveredMs = Date.now() - dropAt;
    break;
  }
  await sleep(20);
}
emitting = false;
await flowing;
await sleep(500);
// Nothing lost: every client holds every event from its first to the last one emitted.
let lost = 0;
for (const client of clients) {
  for (let seq = client.seen[0]; seq <= emitted; seq++) if (!client.distinct.has(seq)) lost++;
}
const result = {
  drop: RESTART ? "server restart" : "transport close",
  clients: CLIENTS,
  connect_ms: connectMs,
  all_recovered_ms: allRecoveredMs,
  recovered: clients.filter((client) => client.recovered).length,
  events_emitted: emitted,
  lost,
  duplicates: clients.reduce((sum, client) => sum + client.duplicates, 0),
};
console.log(JSON.stringify(result));
for (const client of clients) client.socket.disconnect();
process.exit(allRecoveredMs === null ? 1 : 0);
