// A real app backend for the tests: an HTTP server on 127.0.0.1 that Switchboard calls (handlers,
// the connect hook, webhooks), as the conformance configuration points each channel pattern at
// one port. It checks every call's signature itself and records each call; what it answers is
// up to the test (`backend.answer = (call) => …`).

import http from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";

import { withTimeout } from "./wait.js";

/** The secret the servers under test sign with (tests/run.sh exports it). */
export const WEBHOOK_SECRET = process.env.SWITCHBOARD_WEBHOOK_SECRET || "conformance-webhook-secret";

/** Ports of the conformance configuration's backends (wrangler.toml). */
export const BACKEND_PORTS = { shop: 3100, members: 3101, watched: 3102, watchedPresence: 3103 };

/** An answer that never comes: the backend holds the request until it is closed. */
export const HANG = Symbol("hang");

/** Whether a call carries a valid signature of its timestamp and raw body. */
export function signatureValid(headers, raw, secret = WEBHOOK_SECRET) {
  const timestamp = headers["x-switchboard-timestamp"];
  const expected = `v1=${createHmac("sha256", secret).update(`${timestamp}.`).update(raw).digest("hex")}`;
  const given = String(headers["x-switchboard-signature"] ?? "");
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

/**
 * Starts a backend on `port` (stopped when test context `t` ends, or by `close()`). Each call is
 * recorded as { path, headers, raw, body, signed, at }; `answer(call)` returns
 * { status?, body? } (body JSON-encoded unless a string), HANG, or throws (a 500).
 */
export async function startBackend(t, port, answer = () => ({ body: {} })) {
  const calls = [];
  const waiters = [];
  const sockets = new Set();
  const backend = {
    calls,
    answer,
    /** Resolves with the calls recorded once `count` of them match `filter`. */
    waitForCalls(count, filter = () => true, timeout = 5000) {
      const matching = () => calls.filter(filter);
      if (matching().length >= count) return Promise.resolve(matching());
      const promise = new Promise((resolve) => waiters.push({ count, filter, resolve }));
      return withTimeout(promise, timeout, `${count} backend call(s) (got ${matching().length})`);
    },
    close,
  };
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    let body = null;
    try {
      body = JSON.parse(raw.toString());
    } catch {}
    const call = { path: req.url, headers: req.headers, raw, body, signed: signatureValid(req.headers, raw), at: Date.now() };
    calls.push(call);
    for (const waiter of [...waiters]) {
      const matching = calls.filter(waiter.filter);
      if (matching.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(matching);
      }
    }
    let reply;
    try {
      reply = await backend.answer(call);
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(`the backend threw: ${err.message}`);
      return;
    }
    if (reply === HANG) return;
    const { status = 200, body: replyBody = {} } = reply ?? {};
    res.writeHead(status, { "content-type": "application/json" });
    res.end(typeof replyBody === "string" ? replyBody : JSON.stringify(replyBody));
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  let closed = false;
  function close() {
    if (closed) return Promise.resolve();
    closed = true;
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  }
  t.after(close);
  return backend;
}
