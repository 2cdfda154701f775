// The default configuration (server at SWITCHBOARD_DEFAULT_URL): ping
// 25000/20000; default channel "/socket.io/" relays to all (namespace "/"),
// "chats/:id" relays to all with client rooms.
//
// The headline check is the plain Socket.IO chat tutorial's client code:
// `io(url)` with default options (polling first, then upgrade to WebSocket),
// `socket.emit("chat message", msg)`, `socket.on("chat message", ...)`.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";

import { DEFAULT_URL, DEFAULT_CONF, channelPath, endpointUrl, uniqueId } from "../lib/config.js";
import { openPolling, request } from "../lib/polling.js";
import { openEngineWs } from "../lib/raw-ws.js";
import { waitConnected, waitConnectError, waitUpgraded, record, emitAck } from "../lib/client.js";

/** A tutorial-style client: io(url[, {path}]) with default options, closed after the test. */
function tutorialClient(t, opts) {
  const socket = opts ? io(DEFAULT_URL, opts) : io(DEFAULT_URL);
  t.after(() => socket.disconnect());
  return socket;
}

async function chat(t, opts) {
  const run = uniqueId("run"); // tags this test's messages in case others share the channel
  const alice = tutorialClient(t, opts);
  const bob = tutorialClient(t, opts);
  const inbox = new Map([
    [alice, record(alice, "chat message")],
    [bob, record(bob, "chat message")],
  ]);
  await Promise.all([waitConnected(alice), waitConnected(bob)]);
  assert.notEqual(alice.io.engine.id, bob.io.engine.id, "each tutorial client has its own connection");

  // First message right after connecting (typically still on polling)...
  alice.emit("chat message", `alice ${run}: 1`);
  bob.emit("chat message", `bob ${run}: 1`);

  // ...then both clients upgrade to WebSocket...
  await Promise.all([waitUpgraded(alice), waitUpgraded(bob)]);
  assert.equal(alice.io.engine.transport.name, "websocket");
  assert.equal(bob.io.engine.transport.name, "websocket");

  // ...and keep chatting.
  for (const i of [2, 3]) {
    alice.emit("chat message", `alice ${run}: ${i}`);
    bob.emit("chat message", `bob ${run}: ${i}`);
  }

  for (const [client, rec] of inbox) {
    const messages = (await rec.waitFor(6)).map(([msg]) => msg);
    const who = client === alice ? "alice" : "bob";
    // Every message reaches both clients (sender included), exactly once, each sender's in order.
    const from = (name) => messages.filter((m) => m.startsWith(`${name} ${run}:`));
    assert.deepEqual(from("alice"), [1, 2, 3].map((i) => `alice ${run}: ${i}`), `${who}'s inbox: ${JSON.stringify(messages)}`);
    assert.deepEqual(from("bob"), [1, 2, 3].map((i) => `bob ${run}: ${i}`), `${who}'s inbox: ${JSON.stringify(messages)}`);
  }
}

describe("default configuration", () => {
  test("handshakes announce pingInterval 25000 and pingTimeout 20000", async (t) => {
    const { handshake } = await openPolling(channelPath(), { base: DEFAULT_URL });
    assert.equal(handshake.pingInterval, DEFAULT_CONF.pingInterval);
    assert.equal(handshake.pingTimeout, DEFAULT_CONF.pingTimeout);
    assert.deepEqual(handshake.upgrades, ["websocket"]);
    assert.equal(typeof handshake.maxPayload, "number");
    const ws = await openEngineWs(t, channelPath(), { base: DEFAULT_URL });
    assert.equal(ws.handshake.pingInterval, DEFAULT_CONF.pingInterval);
    assert.deepEqual(ws.handshake.upgrades, []);
  });

  test("chat tutorial on the default channel: two clients, polling then WebSocket, everyone gets every message", async (t) => {
    await chat(t);
  });

  test("chat tutorial on chats/42 (io(url, { path }))", async (t) => {
    await chat(t, { path: "/socket.io/chats/42" });
  });

  test("chats/:id rooms: join and leave are acknowledged", async (t) => {
    const socket = tutorialClient(t, { path: "/socket.io/chats/7" });
    await waitConnected(socket);
    assert.deepEqual(await emitAck(socket, "switchboard:join", "lobby"), [{ ok: true, rooms: ["lobby"] }]);
    assert.deepEqual(await emitAck(socket, "switchboard:leave", "lobby"), [{ ok: true, rooms: [] }]);
  });

  test("only namespace / exists on the default channel", async (t) => {
    const socket = io(`${DEFAULT_URL}/admin`, { forceNew: true, reconnection: false, transports: ["websocket"] });
    t.after(() => socket.disconnect());
    assert.equal((await waitConnectError(socket)).message, "Invalid namespace");
  });

  test("channels of the conformance configuration do not exist here → 404", async () => {
    const response = await request(endpointUrl(channelPath("relay/1"), { transport: "polling" }, DEFAULT_URL));
    assert.equal(response.status, 404);
    assert.equal(typeof JSON.parse(response.body).message, "string");
  });
});
