// Shared assertions.

import assert from "node:assert/strict";
import { BASE_URL, channelPath } from "./config.js";
import { connectClient, record } from "./client.js";

/** HTTP 400 with a JSON body {code: number, message: string}; optionally a specific code. */
export function assertEngineError(response, expectedCode) {
  assert.equal(response.status, 400, `expected HTTP 400, got ${response.status}: ${response.body}`);
  let json;
  try {
    json = JSON.parse(response.body);
  } catch {
    assert.fail(`expected a JSON error body, got ${JSON.stringify(response.body)}`);
  }
  assert.equal(typeof json.code, "number", `error body without numeric code: ${response.body}`);
  assert.equal(typeof json.message, "string", `error body without message: ${response.body}`);
  if (expectedCode !== undefined) assert.equal(json.code, expectedCode, `error body: ${response.body}`);
  return json;
}

/** HTTP 404 with a JSON body carrying a human-readable `message`. */
export function assertUnknownChannel(response) {
  assert.equal(response.status, 404, `expected HTTP 404, got ${response.status}: ${response.body}`);
  let json;
  try {
    json = JSON.parse(response.body);
  } catch {
    assert.fail(`expected a JSON body, got ${JSON.stringify(response.body)}`);
  }
  assert.equal(typeof json.message, "string");
  assert.ok(json.message.length > 0, "empty message");
}

/**
 * The server still serves a fresh, well-behaved client: a socket.io-client
 * connects to the default channel of the conformance server and gets its
 * "message" echoed back. Used after every abuse.
 */
export async function assertServerHealthy(t, { transports = ["websocket"], path = channelPath() } = {}) {
  const socket = await connectClient(t, BASE_URL, { transports, path });
  const echoes = record(socket, "message-back");
  socket.emit("message", "still alive");
  const [args] = await echoes.waitFor(1);
  assert.deepEqual(args, ["still alive"]);
  socket.disconnect();
}
