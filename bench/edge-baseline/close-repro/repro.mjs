// Does a server-initiated close of a hibernatable WebSocket tear the TCP connection down?
// One line per variant: time from the server's close frame reaching the client to the `ws` 'close'
// event (which `ws` emits only once the TCP connection is gone). Findings: docs/edge-close.md.
//
// Run (two shells, from this folder):
//   WRANGLER_SEND_METRICS=false npx --yes wrangler@4.86.0 dev --ip 127.0.0.1 --port 8910 \
//     --inspector-port 8960 --persist-to /tmp/edge-close-repro-state
//   PORT=8910 node repro.mjs            # all variants, ~20 s; or name variants as arguments
// (../../../tests/node_modules/.bin/wrangler is the same wrangler 4.86.0, if installed. wrangler dev
// leaves its bundle in .wrangler/tmp here; .wrangler/ is git-ignored. Stop it by process group:
// `kill -- -<pgid>`, since killing npx alone leaves workerd running.)
// `ws` is taken from this folder's node_modules if present, else from ../../../tests/node_modules;
// otherwise run `npm install --no-save --no-package-lock ws` here.
// Env: PORT (8910), LIMIT_MS (5000, the bound for each variant; the two *-idle/-busy variants
// wait 15 s), ONLY_SERIAL=1 to run the variants one after another (~2.5 min) instead of all at once
// (each variant uses its own object, so running them together changes timings only slightly).
import { createRequire } from "node:module";

async function loadWs() {
  try {
    return (await import("ws")).default;
  } catch {
    const require = createRequire(new URL("../../../tests/package.json", import.meta.url));
    return require("ws");
  }
}
const WebSocket = await loadWs();

const PORT = process.env.PORT ?? "8910";
const BASE = `127.0.0.1:${PORT}`;
const LIMIT = Number(process.env.LIMIT_MS ?? 5000);
const LONG = 15000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// [name, what the client does] — the object's side of each variant is in worker.js.
const VARIANTS = [
  ["alarm-close", "alarm() closes A; no storage call in that alarm"],
  ["alarm-setalarm-then-close", "alarm(): await setAlarm(), then close"],
  ["alarm-close-then-setalarm", "alarm(): close, then await setAlarm()"],
  ["alarm-put-then-close", "alarm(): await storage.put(), then close"],
  ["alarm-close-then-put", "alarm(): close, then await storage.put()"],
  ["alarm-await1-close", "alarm(): await 1 ms timer, then close"],
  ["alarm-await10-close", "alarm(): await 10 ms timer, then close"],
  ["alarm-send-await1-close", "alarm(): send('x'), await 1 ms, close"],
  ["fetch-close", "external HTTP request to the object; its fetch() closes A"],
  ["other-socket-message-close", "socket B's webSocketMessage() closes A"],
  ["alarm-close-wsclose-close", "alarm() closes; webSocketClose() calls close() again"],
  ["alarm-close-wsclose-await-close", "alarm() closes; webSocketClose() awaits 1 ms, close()"],
  ["own-message-close", "A sends a message; its own webSocketMessage() closes A"],
  ["own-message-settimeout-close", "A sends a message; a timer 200 ms after that handler closes A"],
  ["nonhib-settimeout-close", "control: ws.accept() (not hibernatable), timer closes"],
  ["alarm-close-after-client-message", "A sends one text message at +100 ms; alarm() closes at +300"],
  ["alarm-close-after-automsg", "same, but the message is answered by setWebSocketAutoResponse"],
  ["alarm-close-after-client-ping", "A sends a WebSocket ping control frame at +100 ms; alarm closes"],
  ["alarm-close-after-http", "an unrelated HTTP request to the object at +100 ms; alarm closes"],
  ["alarm-close-after-other-socket-message", "socket B sends a message at +100 ms; alarm closes A"],
  ["alarm-close-gc", "alarm closes; webSocketClose() then allocates ~240 MB of garbage"],
  ["alarm-close-abort-0", "alarm: close, then ctx.abort() at once (B connected: cost)"],
  ["alarm-close-abort-200", "alarm: close, 200 ms later ctx.abort() (B connected: cost)"],
  ["alarm-close-idle", "alarm closes; nothing else happens (waits 15 s: idle eviction)"],
  ["alarm-close-busy", "alarm closes; socket B sends a message every second (waits 15 s)"],
  ["client-close-reply", "client closes first; webSocketClose() answers with close()"],
  ["client-close-noreply", "client closes first; webSocketClose() does not call close()"],
];

function open(v, room, role) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${BASE}/ws?v=${v}&room=${room}&role=${role}`);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error("open timed out"));
    }, 5000);
    ws.on("open", () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function run(v) {
  const room = `${v}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const limit = v.endsWith("-idle") || v.endsWith("-busy") ? LONG : LIMIT;
  const needsB = ["other-socket-message-close", "alarm-close-after-other-socket-message",
    "alarm-close-abort-0", "alarm-close-abort-200", "alarm-close-busy"].includes(v);
  const a = await open(v, room, "a");
  const b = needsB ? await open(v, room, "b") : null;
  const t0 = Date.now();
  let tFrame = null;
  let tClose = null;
  let aCode = null;
  let bClosed = null;
  a.on("error", () => {});
  b?.on("error", () => {});
  b?.on("close", (code) => (bClosed = { code, at: Date.now() - t0 }));
  const poll = setInterval(() => {
    if (tFrame === null && a.readyState === WebSocket.CLOSING) tFrame = Date.now();
  }, 1);
  const closed = new Promise((resolve) => a.on("close", (code) => {
    aCode = code;
    resolve((tClose = Date.now()));
  }));
  let ticker = null;
  if (v === "alarm-close-busy") ticker = setInterval(() => b.readyState === 1 && b.send("noop"), 1000);

  await sleep(100);
  if (v === "alarm-close-after-client-message") a.send("noop");
  if (v === "alarm-close-after-automsg") a.send("ping");
  if (v === "alarm-close-after-client-ping") a.ping();
  if (v === "alarm-close-after-http") await (await fetch(`http://${BASE}/report?room=${room}`)).text();
  if (v === "alarm-close-after-other-socket-message") b.send("noop");
  await sleep(200);
  if (v === "fetch-close") await (await fetch(`http://${BASE}/close-now?v=${v}&room=${room}`)).text();
  if (v === "other-socket-message-close") b.send("close-a");
  if (v.startsWith("own-message")) a.send("close-me");
  const clientCloses = v.startsWith("client-close");
  if (clientCloses) {
    a.close(1000, "client bye");
    tFrame = Date.now();
  }

  await Promise.race([closed, sleep(limit)]);
  clearInterval(poll);
  clearInterval(ticker);
  if (tFrame === null && tClose !== null) tFrame = tClose;

  let report;
  try {
    report = await (await fetch(`http://${BASE}/report?room=${room}`)).json();
  } catch (e) {
    report = { events: [], error: String(e) };
  }
  a.terminate();
  b?.terminate();

  const what = clientCloses ? "client's close()" : "close frame";
  let result;
  if (tClose === null) {
    result = tFrame === null
      ? `no close frame within ${limit / 1000} s`
      : `NEVER within ${limit / 1000} s (${what} at +${tFrame - t0} ms)`;
  } else {
    result = `${tClose - tFrame} ms after the ${what} (at +${tFrame - t0} ms, code ${aCode})`;
  }
  const seen = report.events?.find((e) => e.what === "webSocketClose");
  const server = seen
    ? `webSocketClose(code ${seen.code}, wasClean ${seen.wasClean}, readyState ${seen.readyState})`
    : v.includes("abort")
      ? "object was reset"
      : v.startsWith("nonhib")
        ? "-"
        : "webSocketClose not seen (object restarted?)";
  const other = b ? `; B: ${bClosed ? `closed ${bClosed.code} at +${bClosed.at} ms` : "still open"}` : "";
  return `${v.padEnd(40)} ${result.padEnd(58)} ${server}${other}`;
}


const health = await fetch(`http://${BASE}/healthz`).then((r) => r.text(), (e) => String(e));
if (health !== "ok") {
  console.log(`no worker on ${BASE} (${health}); start wrangler dev first (see the top of repro.mjs)`);
  process.exit(1);
}
const names = process.argv.slice(2).length ? process.argv.slice(2) : VARIANTS.map(([n]) => n);
// Every wait above is bounded; this is only a backstop.
const budget = process.env.ONLY_SERIAL ? names.length * (LIMIT + 2000) + 2 * LONG : LONG + LIMIT;
const hardStop = setTimeout(() => {
  console.log("repro.mjs: overall time limit reached");
  process.exit(2);
}, budget + 30000);
const safe = (v) => run(v).catch((e) => `${v.padEnd(40)} error: ${e.message}`);
let lines;
if (process.env.ONLY_SERIAL) {
  lines = [];
  for (const v of names) lines.push(await safe(v));
} else {
  lines = await Promise.all(names.map((v, i) => sleep(i * 40).then(() => safe(v))));
}
console.log(`${"variant".padEnd(40)} ${"time to TCP close".padEnd(58)} server side`);
for (const line of lines) console.log(line);
clearTimeout(hardStop);
