// Where the servers under test live and what they are configured with.
//
// SWITCHBOARD_URL         server running the *conformance* configuration
// SWITCHBOARD_DEFAULT_URL server running the *default* configuration
//
// Only the base URL (scheme, host, port) differs between targets (native
// server, Cloudflare Worker under `wrangler dev`, ...): every test talks to
// the server over plain HTTP / WebSocket.

function baseUrl(value, fallback) {
  return (value || fallback).replace(/\/+$/, "");
}

export const BASE_URL = baseUrl(process.env.SWITCHBOARD_URL, "http://127.0.0.1:3000");
export const DEFAULT_URL = baseUrl(process.env.SWITCHBOARD_DEFAULT_URL, "http://127.0.0.1:3001");

/** http(s)://host → ws(s)://host */
export function toWs(url) {
  return url.replace(/^http/, "ws");
}

/** Which target runs the servers: "native" or "edge" (set by tests/run.sh). */
export const TARGET = process.env.SWITCHBOARD_TARGET || "native";

/** The API secret the conformance servers are started with (tests/run.sh). */
export const API_SECRET = process.env.SWITCHBOARD_API_SECRET || "conformance-secret";

/** Values the conformance configuration announces / enforces. */
export const CONF = {
  pingInterval: 300,
  pingTimeout: 200,
  connectTimeout: 1000,
  maxPayload: 1_000_000,
  smallMaxPayload: 1000,
};

/** Values of the default configuration. */
export const DEFAULT_CONF = {
  pingInterval: 25_000,
  pingTimeout: 20_000,
};

/** Engine.IO path of a Switchboard channel: "" → "/socket.io/", "relay/1" → "/socket.io/relay/1/". */
export function channelPath(channel = "") {
  return channel ? `/socket.io/${channel}/` : "/socket.io/";
}

/** The raw Engine.IO echo endpoint of the conformance configuration. */
export const ENGINE_PATH = "/engine.io/";

/**
 * Full URL of an Engine.IO endpoint with query parameters.
 * `params` defaults to {EIO: 4}; pass `EIO: undefined` to omit it.
 */
export function endpointUrl(path, params = {}, base = BASE_URL) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries({ EIO: "4", ...params })) {
    if (value !== undefined && value !== null) query.set(key, String(value));
  }
  return `${base}${path}?${query}`;
}

let counter = 0;
/** A channel id no other test (or earlier run against the same server) uses. */
export function uniqueId(prefix = "t") {
  counter += 1;
  const rand = Math.floor(Math.random() * 1e9).toString(36);
  return `${prefix}${Date.now().toString(36)}${process.pid.toString(36)}${rand}${counter}`;
}
