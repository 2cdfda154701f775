// The backend HTTP API, as an application server would call it.

import { API_SECRET, BASE_URL } from "./config.js";
import { request } from "./polling.js";

/** POST /emit with the conformance secret (or `secret`); resolves {status, body}. */
export async function emit(payload, { secret = API_SECRET, base = BASE_URL } = {}) {
  const headers = { "content-type": "application/json" };
  if (secret !== null) headers.authorization = `Bearer ${secret}`;
  const body = typeof payload === "string" ? payload : JSON.stringify(payload);
  const response = await request(`${base}/emit`, { method: "POST", headers, body });
  return { status: response.status, body: parse(response.body) };
}

/** GET /channels/<channel>; resolves {status, body}. */
export async function occupancy(channel, { secret = API_SECRET, base = BASE_URL } = {}) {
  const headers = secret === null ? {} : { authorization: `Bearer ${secret}` };
  const response = await request(`${base}/channels/${channel}`, { headers });
  return { status: response.status, body: parse(response.body) };
}

/** Test-only endpoints (`DEBUG_ENDPOINTS = true`): rebuild a channel from snapshots, read stats. */
export async function debug(action, channel, { base = BASE_URL, secret = API_SECRET } = {}) {
  const headers = secret === null ? {} : { authorization: `Bearer ${secret}` };
  const response = await request(`${base}/__debug/${action}/${channel}`, { method: "POST", headers });
  return { status: response.status, body: parse(response.body) };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
