// Raw HTTP long-polling helpers (fetch with timeouts).

import { BASE_URL, endpointUrl } from "./config.js";

export const HTTP_TIMEOUT = 3000;

/** fetch() that fails with a readable error after `timeout` ms. */
export async function request(url, { timeout = HTTP_TIMEOUT, signal, ...init } = {}) {
  const timeoutSignal = AbortSignal.timeout(timeout);
  const combined = signal ? AbortSignal.any([signal, timeoutSignal]) : timeoutSignal;
  try {
    const response = await fetch(url, { ...init, signal: combined });
    const body = await response.text();
    return { status: response.status, headers: response.headers, body };
  } catch (err) {
    if (timeoutSignal.aborted) throw new Error(`${init.method ?? "GET"} ${url} got no complete response within ${timeout} ms`);
    throw err;
  }
}

/** URL of the polling transport of `path` for session `sid` (no sid → handshake). */
export function pollingUrl(path, sid, base = BASE_URL, extra = {}) {
  return endpointUrl(path, { transport: "polling", sid, ...extra }, base);
}

/** Opens a polling session; returns { sid, handshake, response }. */
export async function openPolling(path, { base = BASE_URL } = {}) {
  const response = await request(pollingUrl(path, undefined, base));
  if (response.status !== 200 || response.body[0] !== "0") {
    throw new Error(`polling handshake on ${path} failed: HTTP ${response.status} ${response.body}`);
  }
  const handshake = JSON.parse(response.body.slice(1));
  return { sid: handshake.sid, handshake, response };
}

/** Long-poll GET. */
export function poll(path, sid, { base = BASE_URL, timeout, signal, extra } = {}) {
  return request(pollingUrl(path, sid, base, extra), { timeout, signal });
}

/** POST a payload (string or bytes). */
export function push(path, sid, body, { base = BASE_URL, timeout, headers } = {}) {
  return request(pollingUrl(path, sid, base), {
    method: "POST",
    body,
    timeout,
    headers: { "Content-Type": "text/plain;charset=UTF-8", ...headers },
  });
}

/** Splits a polling payload into its Engine.IO packets. */
export function splitPayload(body) {
  return body === "" ? [] : body.split("\x1e");
}

/**
 * Polls until `count` non-ping packets were received (pings are answered
 * with a POSTed pong). Returns the packets. Used where the server may
 * batch packets into one response or spread them over several.
 */
export async function pollPackets(path, sid, count, { base = BASE_URL, timeout = 4000 } = {}) {
  const deadline = Date.now() + timeout;
  const packets = [];
  while (packets.length < count) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error(`expected ${count} packets, got ${JSON.stringify(packets)}`);
    const response = await poll(path, sid, { base, timeout: remaining });
    if (response.status !== 200) throw new Error(`poll failed with HTTP ${response.status}: ${response.body} (got so far: ${JSON.stringify(packets)})`);
    for (const packet of splitPayload(response.body)) {
      if (packet === "2") {
        const pong = await push(path, sid, "3", { base });
        if (pong.status !== 200) throw new Error(`pong POST failed with HTTP ${pong.status}`);
      } else {
        packets.push(packet);
      }
    }
  }
  return packets;
}
