// The official socket.io-client against the default channel of the
// conformance configuration (the published Socket.IO test-suite server), in
// each transport mode a real application may use: polling only, WebSocket
// only, and the default (polling first, then upgrade to WebSocket).

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, CONF } from "../lib/config.js";
import { sleep } from "../lib/wait.js";
import {
  createClient,
  connectClient,
  waitConnected,
  waitConnectError,
  waitUpgraded,
  record,
  emitAck,
} from "../lib/client.js";

const MODES = [
  { name: "polling only", opts: { transports: ["polling"] }, finalTransport: "polling" },
  { name: "WebSocket only", opts: { transports: ["websocket"] }, finalTransport: "websocket" },
  { name: "default transports (polling, then upgrade)", opts: {}, finalTransport: "websocket" },
];

for (const mode of MODES) {
  // The Socket.IO test-suite server emits "auth" with the CONNECT payload on
  // connection, echoes "message" as "message-back" (binary included) and acks
  // "message-with-ack" with its arguments.
  describe(`socket.io-client, ${mode.name}`, () => {
    for (const nsp of ["/", "/custom"]) {
      test(`connects to ${nsp} and receives its auth object back`, async (t) => {
        const socket = createClient(t, nsp === "/" ? BASE_URL : `${BASE_URL}${nsp}`, {
          ...mode.opts,
          auth: { token: "x" },
        });
        const auth = record(socket, "auth");
        await waitConnected(socket);
        assert.deepEqual((await auth.waitFor(1))[0], [{ token: "x" }]);
        if (mode.finalTransport === "websocket") await waitUpgraded(socket);
        assert.equal(socket.io.engine.transport.name, mode.finalTransport);
      });
    }

    test("message round trip with strings, numbers and nested objects", async (t) => {
      const socket = await connectClient(t, BASE_URL, mode.opts);
      const echoes = record(socket, "message-back");
      const args = ["text", "", "ünïcödé ✓", 0, -1.5, 1e21, true, null, { a: { b: [1, "two", { c: false }] }, empty: {} }, [[], [1]]];
      socket.emit("message", ...args);
      socket.emit("message", "second");
      const [first, second] = await echoes.waitFor(2);
      assert.deepEqual(first, args);
      assert.deepEqual(second, ["second"]);
    });

    test("message round trip with binary (Buffer, Uint8Array, nested)", async (t) => {
      const socket = await connectClient(t, BASE_URL, mode.opts);
      const echoes = record(socket, "message-back");
      socket.emit("message", Buffer.from([1, 2, 3]), new Uint8Array([0, 255, 128]), {
        nested: Buffer.from("hello"),
        list: [Buffer.alloc(0), "text"],
      });
      const [[buffer, uint8, object]] = await echoes.waitFor(1);
      assert.deepEqual(Buffer.from(buffer), Buffer.from([1, 2, 3]));
      assert.deepEqual(Buffer.from(uint8), Buffer.from([0, 255, 128]));
      assert.deepEqual(Buffer.from(object.nested), Buffer.from("hello"));
      assert.deepEqual(Buffer.from(object.list[0]), Buffer.alloc(0));
      assert.equal(object.list[1], "text");
    });

    test("emitWithAck returns what the server acked", async (t) => {
      const socket = await connectClient(t, BASE_URL, mode.opts);
      assert.deepEqual(await socket.timeout(3000).emitWithAck("message-with-ack", { n: 42 }), { n: 42 });
      const ackArgs = await emitAck(socket, "message-with-ack", 1, "2", { 3: [false] }, Buffer.from([9, 8]));
      assert.equal(ackArgs.length, 4);
      assert.deepEqual(ackArgs.slice(0, 3), [1, "2", { 3: [false] }]);
      assert.deepEqual(Buffer.from(ackArgs[3]), Buffer.from([9, 8]));
    });

    test("stays connected across several heartbeats (ping every 300 ms)", async (t) => {
      const socket = await connectClient(t, BASE_URL, mode.opts);
      const disconnects = record(socket, "disconnect");
      let pings = 0;
      socket.io.on("ping", () => pings++);
      await sleep(5 * CONF.pingInterval);
      assert.deepEqual(disconnects.received, []);
      assert.ok(socket.connected);
      assert.ok(pings >= 3, `only ${pings} pings in 1.5 s`);
      const echoes = record(socket, "message-back");
      socket.emit("message", "after heartbeats");
      assert.deepEqual((await echoes.waitFor(1))[0], ["after heartbeats"]);
    });

    test("disconnect() then connect() gets a new session that works", async (t) => {
      const socket = await connectClient(t, BASE_URL, mode.opts);
      const firstId = socket.id;
      socket.disconnect();
      assert.equal(socket.connected, false);
      await sleep(50);
      socket.connect();
      await waitConnected(socket);
      assert.notEqual(socket.id, firstId);
      const echoes = record(socket, "message-back");
      socket.emit("message", "reconnected");
      assert.deepEqual((await echoes.waitFor(1))[0], ["reconnected"]);
    });
  });
}

describe("socket.io-client namespace errors", () => {
  // Spec: connecting to a namespace the server does not have → CONNECT_ERROR
  // {"message":"Invalid namespace"}, surfaced as connect_error.
  for (const mode of MODES.slice(0, 2)) {
    test(`connect_error "Invalid namespace" for /nope (${mode.name})`, async (t) => {
      const socket = createClient(t, `${BASE_URL}/nope`, mode.opts);
      const err = await waitConnectError(socket);
      assert.equal(err.message, "Invalid namespace");
      assert.equal(socket.connected, false);
    });
  }

  test("a bad namespace on a shared connection does not break the good one", async (t) => {
    const good = createClient(t, BASE_URL, { forceNew: true, transports: ["websocket"] });
    await waitConnected(good);
    const bad = good.io.socket("/nope"); // same Manager, so same Engine.IO connection; connects at once
    t.after(() => bad.disconnect());
    assert.equal((await waitConnectError(bad)).message, "Invalid namespace");
    const echoes = record(good, "message-back");
    good.emit("message", "still here");
    assert.deepEqual((await echoes.waitFor(1))[0], ["still here"]);
  });
});

