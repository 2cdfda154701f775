// A thin wrapper around a `ws` WebSocket that buffers every frame so tests can
// read them one by one with a timeout (`next()`), wait for the close
// (`closed()`), or assert silence (`expectNoMessage()`).
//
// Text frames are returned as strings, binary frames as Buffers.

import WebSocket from "ws";
import { BASE_URL, toWs, endpointUrl } from "./config.js";
import { withTimeout } from "./wait.js";

export const DEFAULT_WAIT = 3000;

export class RawSocket {
  /**
   * @param {string} url ws:// URL
   * @param {{autoPong?: boolean, ignoreNoop?: boolean}} options autoPong: answer Engine.IO pings
   *   ("2") with pongs ("3") and hide them from the message queue; ignoreNoop (default true):
   *   drop Engine.IO noop packets ("6"), as clients do.
   */
  constructor(url, { autoPong = false, ignoreNoop = true } = {}) {
    this.url = url;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.isOpen = false;
    this.closeInfo = null;
    this.error = null;
    this.pingsSeen = 0;
    this.ignoreNoop = ignoreNoop;

    this.ws = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => {
        this.isOpen = true;
        resolve();
      });
      this.ws.once("close", () => reject(new Error(`WebSocket ${url} closed before opening (${this.error?.message ?? "no error"})`)));
    });
    this.opened.catch(() => {}); // only an error when someone awaits it
    this.closedPromise = new Promise((resolve) => {
      // `ws` reports the close once the TCP connection is gone, as every client that waits for the
      // server to end the connection sees it. A close frame alone is not a close: a server that
      // sends one and keeps the connection open leaves a real client hanging.
      this.ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), wasOpen: this.isOpen };
        for (const waiter of this.waiters.splice(0)) waiter.reject(new Error(`connection closed (code ${code}) while waiting for a message`));
        resolve(this.closeInfo);
      });
    });
    // e.g. "Unexpected server response: 404": recorded, the close follows.
    this.ws.on("error", (err) => {
      this.error = err;
    });
    this.ws.on("message", (data, isBinary) => {
      const message = isBinary ? Buffer.from(data) : data.toString();
      // Engine.IO noop: clients must ignore it. A Durable Object's WebSocket auto-response answers
      // each pong with one, so the heartbeat costs the object no wake-up.
      if (message === "6" && this.ignoreNoop) return;
      if (message === "2") {
        this.pingsSeen += 1;
        if (this.autoPong) {
          this.send("3");
          return;
        }
      }
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(message);
      else this.queue.push(message);
    });
  }

  open(timeout = DEFAULT_WAIT) {
    return withTimeout(this.opened, timeout, `WebSocket open (${this.url})`);
  }

  /** Next frame (string for text, Buffer for binary). */
  next(timeout = DEFAULT_WAIT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) return Promise.reject(new Error(`connection already closed (code ${this.closeInfo.code}), no message left`));
    let waiter;
    const promise = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiters.push(waiter);
    });
    return withTimeout(promise, timeout, `a WebSocket message (${this.url})`).catch((err) => {
      const index = this.waiters.indexOf(waiter);
      if (index !== -1) this.waiters.splice(index, 1);
      throw err;
    });
  }

  /** Next `count` frames, in order. */
  async nextN(count, timeout = DEFAULT_WAIT) {
    const frames = [];
    for (let i = 0; i < count; i++) frames.push(await this.next(timeout));
    return frames;
  }

  /** Resolves {code, reason, wasOpen} once the connection is closed; rejects after `timeout`. */
  closed(timeout = DEFAULT_WAIT) {
    return withTimeout(this.closedPromise, timeout, `the server to close the WebSocket (${this.url})`);
  }

  /** Fails if a frame (other than an auto-answered ping) arrives within `ms`. */
  async expectNoMessage(ms) {
    try {
      const message = await this.next(ms);
      throw new Error(`expected no message within ${ms} ms, got ${JSON.stringify(String(message))}`);
    } catch (err) {
      if (!/timed out/.test(err.message)) throw err;
    }
  }

  /**
   * The server refused the connection: it closes (HTTP error on the upgrade,
   * or close right after it) without ever sending an Engine.IO open packet.
   */
  async expectRefused(timeout = DEFAULT_WAIT) {
    const info = await this.closed(timeout);
    const opens = this.queue.filter((m) => typeof m === "string" && m.startsWith("0"));
    if (opens.length) throw new Error(`expected the connection to be refused, but got an Engine.IO session: ${opens[0]}`);
    return info;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Abrupt close, used for cleanup: never waits on the peer. */
  terminate() {
    if (!this.closeInfo) this.ws.terminate();
  }
}

/** Opens a raw WebSocket and closes it when test `t` ends. */
export function rawSocket(t, url, options) {
  const socket = new RawSocket(url, options);
  t.after(() => socket.terminate());
  return socket;
}

/** ws:// URL of an Engine.IO endpoint (websocket transport by default). */
export function wsUrl(path, params = {}, base = BASE_URL) {
  return toWs(endpointUrl(path, { transport: "websocket", ...params }, base));
}

/** Parses an Engine.IO OPEN packet ("0{...}"). */
export function parseOpen(frame) {
  if (typeof frame !== "string" || frame[0] !== "0") {
    throw new Error(`expected an Engine.IO open packet, got ${JSON.stringify(String(frame))}`);
  }
  return JSON.parse(frame.slice(1));
}

/**
 * Opens a WebSocket-only Engine.IO session on `path` and reads the handshake.
 * Returns { socket, handshake }.
 */
export async function openEngineWs(t, path, { autoPong = false, ignoreNoop = true, base = BASE_URL, params } = {}) {
  const socket = rawSocket(t, wsUrl(path, params, base), { autoPong, ignoreNoop });
  const handshake = parseOpen(await socket.next());
  return { socket, handshake };
}

/**
 * Opens a WebSocket Engine.IO session on `path` and connects to Socket.IO
 * namespace `nsp` (optionally with an auth payload). Returns
 * { socket, handshake, connect } where `connect` is the decoded CONNECT reply.
 * Frames sent after the CONNECT reply (e.g. the "auth" event) stay queued.
 * Pings are answered automatically unless autoPong is false.
 */
export async function openSocketIoWs(t, path = "/socket.io/", { nsp = "/", auth, autoPong = true, base = BASE_URL } = {}) {
  const { socket, handshake } = await openEngineWs(t, path, { autoPong, base });
  socket.send(connectFrame(nsp, auth));
  const reply = await socket.next();
  return { socket, handshake, reply };
}

/** Engine.IO message frame carrying a Socket.IO CONNECT packet. */
export function connectFrame(nsp = "/", auth) {
  const prefix = nsp === "/" ? "" : `${nsp},`;
  return `40${prefix}${auth === undefined ? "" : JSON.stringify(auth)}`;
}

