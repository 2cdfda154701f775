// Replays the hardening review's attacks at the review's scale against one native server and prints
// what happened, one JSON line per attack: the numbers in the README's security table.
//
//   node bench/attacks.mjs --port 4100 --pid <server pid> [--only name,name]
//
// The server must run the embedded default configuration (chats/:id relays to all). Every attack
// is bounded in count and time; everything stays on 127.0.0.1. Run it once per binary (before and
// after a change), each on a fresh server.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import net from "node:net";

const require = createRequire(new URL("../tests/package.json", import.meta.url));
const { io } = require("socket.io-client");
const WebSocket = require("ws");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const PORT = Number(args.port ?? 4100);
const PID = args.pid;
const ONLY = args.only ? args.only.split(",") : null;
const BASE = `http://127.0.0.1:${PORT}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const rssMb = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${PID}/status`, "utf8"))[1]) / 1024;
const polling = (channel, sid) => `${BASE}/socket.io/${channel}/?EIO=4&transport=polling${sid ? `&sid=${sid}` : ""}`;

async function fetchText(url, init = {}, timeout = 10_000) {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeout) });
    return { status: response.status, body: await response.text() };
  } catch (err) {
    return { status: `error: ${err.name}`, body: "" };
  }
}

async function pollingSocket(channel) {
  const handshake = await fetchText(polling(channel));
  const sid = JSON.parse(handshake.body.slice(1)).sid;
  await fetchText(polling(channel, sid), { method: "POST", body: "40" });
  await fetchText(polling(channel, sid));
  return sid;
}

function client(channel) {
  const socket = io(BASE, { path: `/socket.io/${channel}`, transports: ["websocket"], forceNew: true, reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

const attacks = {
  // A polling session that never GETs (its pongs keep it alive) in a channel relaying 1,000
  // events of 900 KB.
  async "idle-poller"() {
    const channel = `chats/idle-poller-${Date.now()}`;
    const receiver = await client(channel);
    const sender = await client(channel);
    const sid = await pollingSocket(channel);
    let stop = false;
    const pongs = (async () => {
      while (!stop) {
        await fetchText(polling(channel, sid), { method: "POST", body: "3" });
        await sleep(1000);
      }
    })();
    const before = rssMb();
    let peak = before;
    let received = 0;
    receiver.on("big", () => received++);
    const big = "x".repeat(900_000);
    for (let i = 0; i < 1000; i++) {
      sender.emit("big", i, big);
      while (received <= i && receiver.connected) await sleep(1);
      if (i % 50 === 0) peak = Math.max(peak, rssMb());
    }
    peak = Math.max(peak, rssMb());
    stop = true;
    await pongs;
    const poll = await fetchText(polling(channel, sid), {}, 20_000);
    receiver.close();
    sender.close();
    return { rss_before_mb: before, rss_peak_mb: peak, receiver_got: received, poller_get: poll.status, poller_body_bytes: poll.body.length };
  },

  // A lone client POSTing 20 bodies of 1 MB of `421["a"]` (events asking for acks), never GETting.
  async "ack-flood"() {
    const channel = `chats/ack-flood-${Date.now()}`;
    const sid = await pollingSocket(channel);
    const before = rssMb();
    let peak = before;
    const body = "3\x1e" + Array(110_000).fill('421["a"]').join("\x1e");
    const statuses = [];
    for (let i = 0; i < 20; i++) {
      statuses.push((await fetchText(polling(channel, sid), { method: "POST", body })).status);
      peak = Math.max(peak, rssMb());
    }
    await sleep(2000);
    peak = Math.max(peak, rssMb());
    const poll = await fetchText(polling(channel, sid));
    return { rss_before_mb: before, rss_peak_mb: peak, posts: statuses.join(","), attacker_get_bytes: poll.body.length };
  },

  // One 1 MB POST of 125,000 `42["a"]` in a channel with 20 healthy WebSocket clients.
  async "post-flood"() {
    const channel = `chats/post-flood-${Date.now()}`;
    const healthy = await Promise.all(Array.from({ length: 20 }, () => client(channel)));
    let closed = 0;
    let flood = 0;
    for (const socket of healthy) {
      socket.on("disconnect", () => closed++);
      socket.on("a", () => flood++);
    }
    const sid = await pollingSocket(channel);
    const body = Array(125_000).fill('42["a"]').join("\x1e");
    const post = await fetchText(polling(channel, sid), { method: "POST", body });
    await sleep(3000);
    const closedByServer = closed;
    for (const socket of healthy) socket.close();
    return { post: post.status, healthy_clients: 20, healthy_closed: closedByServer, flood_events_per_client: flood / 20 };
  },

  // Polling sessions that CONNECT and then only pong, opened as fast as one client can.
  async "polling-sessions"() {
    const before = rssMb();
    let opened = 0;
    let refused = 0;
    const statuses = new Map();
    const started = Date.now();
    const channel = `chats/sessions-${Date.now()}`;
    while (Date.now() - started < 20_000 && opened < 100_000) {
      const batch = await Promise.all(Array.from({ length: 100 }, async () => {
        const handshake = await fetchText(polling(channel));
        if (handshake.status !== 200) return handshake.status;
        const sid = JSON.parse(handshake.body.slice(1)).sid;
        const connect = await fetchText(polling(channel, sid), { method: "POST", body: "40" });
        return connect.status;
      }));
      for (const status of batch) {
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === 200) opened++;
        else refused++;
      }
      if (refused > 5_000) break;
    }
    return { seconds: (Date.now() - started) / 1000, opened, refused, statuses: Object.fromEntries(statuses), rss_before_mb: before, rss_after_mb: rssMb() };
  },

  // Engine.IO sessions that never CONNECT, opened as fast as one client can for 5 s.
  async "half-open"() {
    const channel = `chats/half-open-${Date.now()}`;
    const statuses = new Map();
    const started = Date.now();
    while (Date.now() - started < 5_000) {
      const batch = await Promise.all(Array.from({ length: 100 }, () => fetchText(polling(channel))));
      for (const { status } of batch) statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    const live = await fetchText(`${BASE}/healthz`);
    return { seconds: 5, statuses: Object.fromEntries(statuses), healthz: live.status };
  },

  // 50 sessions each sending a binary packet that announces 1,000 attachments and sends 999.
  async "binary-partial"() {
    const channel = `chats/binary-${Date.now()}`;
    const before = rssMb();
    const placeholders = Array.from({ length: 1000 }, (_, num) => `{"_placeholder":true,"num":${num}}`).join(",");
    const sockets = [];
    for (let i = 0; i < 50; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${PORT}/socket.io/${channel}/?EIO=4&transport=websocket`);
      const closed = new Promise((resolve) => ws.once("close", (code) => resolve({ code, at: Date.now() })));
      await new Promise((resolve) => ws.once("message", resolve));
      ws.on("message", (data) => data.toString() === "2" && ws.send("3"));
      ws.send("40");
      ws.send(`451000-["files",${placeholders}]`);
      for (let n = 0; n < 999; n++) ws.send(Buffer.alloc(1000, n % 256));
      sockets.push({ ws, closed, sentAt: Date.now() });
    }
    await sleep(1000);
    const held = rssMb();
    const results = await Promise.race([Promise.all(sockets.map((s) => s.closed)), sleep(30_000).then(() => null)]);
    const after = rssMb();
    for (const { ws } of sockets) ws.terminate();
    return {
      rss_before_mb: before, rss_held_mb: held, rss_after_mb: after,
      closed: results ? results.length : 0,
      close_codes: results ? [...new Set(results.map((r) => r.code))] : [],
      closed_after_s: results ? Math.max(...results.map((r, i) => (r.at - sockets[i].sentAt) / 1000)) : null,
    };
  },

  // 5 kinds of slowloris connections; how long the server keeps each open (up to 70 s).
  async slowloris() {
    const kinds = {
      "idle TCP": "",
      "partial request line": "GET /healthz HT",
      "unfinished headers": "GET /healthz HTTP/1.1\r\nHost: x\r\n",
      "stalled body": "POST /emit HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n0123456789",
      "idle keep-alive": "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    const results = await Promise.all(Object.entries(kinds).map(([kind, bytes]) => new Promise((resolve) => {
      const started = Date.now();
      const socket = net.connect(PORT, "127.0.0.1", () => bytes && socket.write(bytes));
      socket.on("data", () => {});
      socket.on("error", () => {});
      const timer = setTimeout(() => { socket.destroy(); resolve([kind, "still open at 70 s"]); }, 70_000);
      socket.on("close", () => { clearTimeout(timer); resolve([kind, `closed after ${((Date.now() - started) / 1000).toFixed(1)} s`]); });
    })));
    return Object.fromEntries(results);
  },
};

for (const [name, attack] of Object.entries(attacks)) {
  if (ONLY && !ONLY.includes(name)) continue;
  const started = Date.now();
  const result = await attack().catch((err) => ({ error: String(err) }));
  const health = await fetchText(`${BASE}/healthz`);
  console.log(JSON.stringify({ attack: name, ...result, healthz_after: health.status, seconds: (Date.now() - started) / 1000 }));
}
process.exit(0);
