// socket.io-client helpers. Every client created here is disconnected when the
// test ends, never reconnects on its own, and every wait has a timeout.

import { io } from "socket.io-client";
import { once, withTimeout } from "./wait.js";

export const CONNECT_WAIT = 5000;

/** Creates a client (own Manager unless opts.forceNew === false) closed at the end of test `t`. */
export function createClient(t, url, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: CONNECT_WAIT, ...opts });
  t.after(() => socket.disconnect());
  return socket;
}

/** Resolves when `socket` connects, rejects on connect_error or timeout. */
export function waitConnected(socket, timeout = CONNECT_WAIT) {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect;
  let onError;
  const promise = new Promise((resolve, reject) => {
    onConnect = () => resolve(socket);
    onError = (err) => reject(new Error(`connect_error: ${err?.message ?? err}`));
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(promise, timeout, "socket.io-client connect").finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/** Creates a client and waits until it is connected. */
export async function connectClient(t, url, opts) {
  const socket = createClient(t, url, opts);
  await waitConnected(socket);
  return socket;
}

/** Resolves with the Error of the next connect_error (rejects if the socket connects instead). */
export function waitConnectError(socket, timeout = CONNECT_WAIT) {
  let onConnect;
  let onError;
  const promise = new Promise((resolve, reject) => {
    onConnect = () => reject(new Error("expected connect_error, but the socket connected"));
    onError = (err) => resolve(err);
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(promise, timeout, "connect_error").finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/**
 * Records every `event` received by `socket` (argument arrays) from now on.
 * `rec.waitFor(n)` resolves once n were received (rejects after a timeout).
 */
export function record(socket, event) {
  const received = [];
  const waiters = [];
  socket.on(event, (...args) => {
    received.push(args);
    for (const waiter of [...waiters]) {
      if (received.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(received.slice());
      }
    }
  });
  return {
    received,
    waitFor(count = 1, timeout = 3000) {
      if (received.length >= count) return Promise.resolve(received.slice());
      const promise = new Promise((resolve) => waiters.push({ count, resolve }));
      return withTimeout(promise, timeout, `${count} "${event}" event(s) (got ${received.length})`);
    },
  };
}

/** Waits until the client's Engine.IO transport is WebSocket (upgrade done). */
export async function waitUpgraded(socket, timeout = 5000) {
  const engine = socket.io.engine;
  if (engine?.transport?.name === "websocket") return;
  await once(engine, "upgrade", timeout);
}

/** emitWithAck with a timeout; resolves with the ack arguments (array). */
export function emitAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(3000).emit(event, ...args, (err, ...ackArgs) => {
      if (err) reject(new Error(`no ack for "${event}" within 3000 ms`));
      else resolve(ackArgs);
    });
  });
}
