// Presence's cost: N socket.io-client sockets join one channel, all at once, and the run ends once
// every socket has connected and (on a presence channel) every socket has heard of the join of a
// sentinel socket that connects after all of them: each socket hears the joins after its own (an
// app asks for the list of those before it with `switchboard:members`), so the sentinel's join
// reaching everyone means every change went out. Reports the time, and the messages each join
// cost: every packet the sockets received, over N (without presence: the CONNECT reply alone).
//
//   node bench/presence.mjs --url http://127.0.0.1:4100 --channel chats/bench [--clients 1000]
//
// Over WebSocket, in this one process. Prints one JSON line.

import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/package.json", import.meta.url));
const { io } = require("socket.io-client");

const arg = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index > 0 ? process.argv[index + 1] : fallback;
};
const SERVER = arg("url", "http://127.0.0.1:4100");
const CHANNEL = arg("channel", "chats/bench");
const CLIENTS = Number(arg("clients", 1000));
const DEADLINE_MS = Number(arg("deadline", 60_000));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const channel = `${CHANNEL}-${process.pid}-${Date.now()}`;
let frames = 0;
let presenceEvents = 0;
const sockets = [];
const seenJoins = [];
let sentinel = null;
const started = performance.now();
for (let n = 0; n < CLIENTS; n++) {
  const socket = io(SERVER, { path: `/socket.io/${channel}`, transports: ["websocket"], reconnection: false, forceNew: true, timeout: DEADLINE_MS });
  const seen = new Set();
  seenJoins.push(seen);
  socket.io.on("packet", () => frames++);
  socket.on("switchboard:presence", ({ changes = [] } = {}) => {
    presenceEvents++;
    for (const change of changes) if (change.type === "join") seen.add(change.member.id);
  });
  sockets.push(socket);
}

let presence = null;
let connectedAt = null;
let result;
for (;;) {
  const elapsed = performance.now() - started;
  const connected = sockets.filter((socket) => socket.connected).length;
  if (connected === CLIENTS && connectedAt === null) {
    connectedAt = elapsed;
    // Is this a presence channel? Ask once.
    presence = await new Promise((resolve) =>
      sockets[0].timeout(5000).emit("switchboard:members", (err, list) => resolve(!err && list && !list.error && typeof list.count === "number")),
    );
    if (presence) {
      const last = io(SERVER, { path: `/socket.io/${channel}`, transports: ["websocket"], reconnection: false, forceNew: true });
      await new Promise((resolve) => last.once("connect", resolve));
      sentinel = last.id;
      sockets.push(last);
    }
  }
  const everyoneSeen = presence === false || (presence === true && sentinel !== null && seenJoins.every((seen) => seen.has(sentinel)));
  if (connectedAt !== null && everyoneSeen) {
    result = { ok: true, ms: Math.round(elapsed) };
    break;
  }
  if (elapsed > DEADLINE_MS) {
    const short = seenJoins.filter((seen) => !seen.has(sentinel)).length;
    result = { ok: false, ms: Math.round(elapsed), connected, sockets_missing_joins: short };
    break;
  }
  await sleep(10);
}
// Let late frames in, then count.
await sleep(200);
for (const socket of sockets) socket.disconnect();
console.log(
  JSON.stringify({
    ...result,
    clients: CLIENTS,
    presence,
    connected_ms: connectedAt === null ? null : Math.round(connectedAt),
    frames_received: frames,
    presence_events: presenceEvents,
    messages_per_join: Number((frames / CLIENTS).toFixed(2)),
  }),
);
process.exit(result.ok ? 0 : 1);
