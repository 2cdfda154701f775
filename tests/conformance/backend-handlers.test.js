// Client events answered by the app backend: FoalTS's documented real-time example, the Express
// tutorial's handler, and every way a call can fail. The backend is a real HTTP server
// (tests/lib/backend.js) that Switchboard calls, signed, for the shop/:id and express/:id patterns.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, record } from "../lib/client.js";
import { expectNoEvent, once, withTimeout } from "../lib/wait.js";
import { BACKEND_PORTS, HANG, startBackend } from "../lib/backend.js";
import { debug } from "../lib/api.js";

function join(t, channel, opts = {}) {
  return connectClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"], ...opts });
}

/** emit with an ack and a long enough wait for a backend call; resolves with the first argument. */
function ask(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, response) => {
      if (err) reject(new Error(`no ack for "${event}" within 5000 ms`));
      else resolve(response);
    });
  });
}

// One backend for the file: the channels of both patterns call port 3100. Each test sets what
// it answers.
const backend = await startBackend({ after }, BACKEND_PORTS.shop);
// The product store of FoalTS's example, in the backend.
const products = [];

describe("FoalTS's create product", () => {
  test("the backend saves it, the ack is { status: 'ok', data }, every other client refreshes", async (t) => {
    backend.answer = ({ body }) => {
      if (body.event === "create product") {
        const product = { id: products.length + 1, name: body.args[0].name };
        products.push(product);
        return { body: { data: product, emit: [{ event: "refresh products", to: "others" }] } };
      }
      if (body.event === "list products") return { body: { data: products } };
      return { status: 404 };
    };
    const channel = `shop/${uniqueId()}`;
    const sender = await join(t, channel);
    const others = [await join(t, channel), await join(t, channel)];
    const refreshes = others.map((socket) => record(socket, "refresh products"));
    const senderHears = expectNoEvent(sender, "refresh products", 500);
    const before = backend.calls.length;

    // The client code of FoalTS's documentation.
    const response = await ask(sender, "create product", { name: "product 1" });
    assert.equal(response.status, "ok");
    assert.equal(response.data.name, "product 1");
    assert.ok(products.some((product) => product.id === response.data.id), "the backend saved it");
    for (const refresh of refreshes) assert.deepEqual((await refresh.waitFor(1))[0], []);
    await senderHears;

    // What the backend got: one signed call carrying the channel, its parameters, the socket.
    const [call] = backend.calls.slice(before);
    assert.equal(call.path, "/switchboard/events");
    assert.ok(call.signed, "the call is signed with WEBHOOK_SECRET");
    assert.equal(call.headers["x-switchboard-call"], call.body.id);
    assert.equal(call.body.type, "event");
    assert.equal(call.body.channel, channel);
    assert.deepEqual(call.body.params, { id: channel.split("/")[1] });
    assert.equal(call.body.namespace, "/");
    assert.equal(call.body.socket.id, sender.id);
    assert.deepEqual(call.body.socket.rooms, []);
    assert.equal(call.body.event, "create product");
    assert.deepEqual(call.body.args, [{ name: "product 1" }]);

    // A refreshing client reads the list through another handler.
    const list = await ask(others[0], "list products", {});
    assert.equal(list.status, "ok");
    assert.ok(list.data.some((product) => product.name === "product 1"));
  });

  test("{ name: 42 } and an extra property get VALIDATION_PAYLOAD_ERROR; the backend sees nothing", async (t) => {
    backend.answer = () => ({ body: { data: "should not be called" } });
    const socket = await join(t, `shop/${uniqueId()}`);
    const before = backend.calls.length;
    const wrongType = await ask(socket, "create product", { name: 42 });
    assert.equal(wrongType.status, "error");
    assert.equal(wrongType.error.code, "VALIDATION_PAYLOAD_ERROR");
    assert.ok(wrongType.error.payload.length >= 1);
    const nameError = wrongType.error.payload.find((error) => error.instancePath === "/name");
    assert.ok(nameError, JSON.stringify(wrongType.error.payload));
    assert.equal(typeof nameError.message, "string");
    assert.equal(nameError.keyword, "type");

    const extra = await ask(socket, "create product", { name: "product 2", price: 10 });
    assert.equal(extra.status, "error");
    assert.equal(extra.error.code, "VALIDATION_PAYLOAD_ERROR");
    assert.ok(extra.error.payload.some((error) => error.keyword === "additionalProperties"), JSON.stringify(extra.error.payload));

    const missing = await ask(socket, "create product");
    assert.equal(missing.error.code, "VALIDATION_PAYLOAD_ERROR");
    assert.equal(backend.calls.length, before, "no invalid payload reached the backend");
  });

  test("a backend that throws gets INTERNAL_SERVER_ERROR, and nothing else happens", async (t) => {
    backend.answer = () => {
      throw new Error("database is down");
    };
    const channel = `shop/${uniqueId()}`;
    const socket = await join(t, channel);
    const other = await join(t, channel);
    const quiet = expectNoEvent(other, "try product", 500);
    const response = await ask(socket, "try product", { name: "x" });
    assert.deepEqual(response, {
      status: "error",
      error: { code: "INTERNAL_SERVER_ERROR", message: "An internal server error has occurred." },
    });
    await quiet;
    // Non-JSON and 3xx answers are failures too.
    backend.answer = () => ({ body: "<html>not json</html>" });
    assert.equal((await ask(socket, "try product", {})).error.code, "INTERNAL_SERVER_ERROR");
    backend.answer = () => ({ status: 302, body: {} });
    assert.equal((await ask(socket, "try product", {})).error.code, "INTERNAL_SERVER_ERROR");
    // The channel goes on.
    backend.answer = () => ({ body: { data: "fine" } });
    assert.deepEqual(await ask(socket, "try product", {}), { status: "ok", data: "fine" });
  });

  test("a backend that hangs gets the timeout error within the handler's 500 ms and a small margin", async (t) => {
    backend.answer = () => HANG;
    const socket = await join(t, `shop/${uniqueId()}`);
    const started = Date.now();
    const response = await ask(socket, "try product", {});
    const elapsed = Date.now() - started;
    assert.deepEqual(response, {
      status: "error",
      error: { code: "INTERNAL_SERVER_ERROR", message: "The server did not answer in time." },
    });
    assert.ok(elapsed >= 490, `answered after ${elapsed} ms, before the timeout`);
    assert.ok(elapsed <= 500 + 300, `answered after ${elapsed} ms`);
  });

  test("clients relay only the allow-listed events; forging refresh products is refused", async (t) => {
    const channel = `shop/${uniqueId()}`;
    const forger = await join(t, channel);
    const other = await join(t, channel);
    const chat = record(other, "chat message");
    const noRefresh = expectNoEvent(other, "refresh products", 500);
    const refused = await ask(forger, "refresh products");
    assert.equal(refused.status, "error");
    assert.equal(refused.error.code, "EVENT_NOT_ALLOWED");
    // Without an ack the refusal still arrives, as switchboard:error.
    const [event] = await Promise.all([
      once(forger, "switchboard:error"),
      Promise.resolve(forger.emit("refresh products")),
    ]);
    assert.equal(event[0].event, "refresh products");
    assert.equal(event[0].error.code, "EVENT_NOT_ALLOWED");
    forger.emit("chat message", "hello");
    assert.deepEqual((await chat.waitFor(1))[0], ["hello"]);
    await noRefresh;
  });
});

describe("the Express tutorial's send-message", () => {
  test("the backend saves the message and everyone gets message-saved { success: true }", async (t) => {
    const saved = [];
    backend.answer = ({ body }) => {
      saved.push(body.args[0]);
      return { body: { emit: [{ event: "message-saved", data: { success: true } }] } };
    };
    const channel = `express/${uniqueId()}`;
    const sender = await join(t, channel);
    const other = await join(t, channel);
    const heard = [sender, other].map((socket) => record(socket, "message-saved"));
    const noRelay = expectNoEvent(other, "send-message", 500);
    sender.emit("send-message", { text: "hi", user: "ada" });
    for (const rec of heard) assert.deepEqual((await rec.waitFor(1))[0], [{ success: true }]);
    assert.deepEqual(saved, [{ text: "hi", user: "ada" }]);
    await noRelay;
  });

  test("binary arguments reach the backend as base64, and a raw ack carries binary back", async (t) => {
    backend.answer = ({ body }) => ({
      body: {
        ack: [{ size: Buffer.from(body.args[0].file._binary, "base64").length, echo: body.args[0].file }],
        join: ["uploads"],
        emit: [{ event: "uploaded", to: "rooms", rooms: ["uploads"], args: [body.args[0].name] }],
      },
    });
    const socket = await join(t, `express/${uniqueId()}`);
    const uploaded = record(socket, "uploaded");
    const ack = await withTimeout(
      new Promise((resolve) => socket.emit("upload", { name: "a.bin", file: Buffer.from([1, 2, 3, 250]) }, (...args) => resolve(args))),
      5000,
      "the upload's ack",
    );
    assert.equal(ack[0].size, 4);
    assert.deepEqual([...Buffer.from(ack[0].echo)], [1, 2, 3, 250], "binary comes back as binary");
    assert.deepEqual((await uploaded.waitFor(1))[0], ["a.bin"], "joined the room before the emit to it");
  });

  test("the backend can disconnect the sender, after answering it", async (t) => {
    backend.answer = () => ({ body: { data: "bye", disconnect: true } });
    const socket = await join(t, `express/${uniqueId()}`);
    const disconnected = once(socket, "disconnect", 5000);
    const response = await ask(socket, "send-message", {});
    assert.deepEqual(response, { status: "ok", data: "bye" });
    assert.equal((await disconnected)[0], "io server disconnect");
  });
});

test("a malformed answer is an internal error and none of it is carried out", async (t) => {
  // A reserved event name makes the whole answer invalid, the join included.
  backend.answer = () => ({ body: { emit: [{ event: "connect" }], join: ["lobby"] } });
  const socket = await join(t, `express/${uniqueId()}`);
  const response = await ask(socket, "send-message", {});
  assert.equal(response.error.code, "INTERNAL_SERVER_ERROR");
  backend.answer = ({ body }) => ({ body: { data: body.socket.rooms } });
  assert.deepEqual((await ask(socket, "send-message", {})).data, []);
});

describe("a channel rebuilt from its snapshots (as after hibernation)", () => {
  test("still answers a call that was in flight", async (t) => {
    let release;
    const released = new Promise((resolve) => (release = resolve));
    backend.answer = async () => {
      await released;
      return { body: { data: "saved before the rebuild finished" } };
    };
    const channel = `shop/${uniqueId()}`;
    const socket = await join(t, channel);
    const before = backend.calls.length;
    const answered = ask(socket, "try product", {});
    await backend.waitForCalls(before + 1);
    const { status, body } = await debug("rebuild", channel);
    assert.equal(status, 200);
    assert.equal(body.rebuilt_sessions, 1);
    release();
    assert.deepEqual(await answered, { status: "ok", data: "saved before the rebuild finished" });
  });

  test("or times it out cleanly at its deadline", async (t) => {
    backend.answer = () => HANG;
    const channel = `shop/${uniqueId()}`;
    const socket = await join(t, channel);
    const before = backend.calls.length;
    const started = Date.now();
    const answered = ask(socket, "try product", {});
    await backend.waitForCalls(before + 1);
    await debug("rebuild", channel);
    const response = await answered;
    assert.equal(response.error.message, "The server did not answer in time.");
    assert.ok(Date.now() - started <= 500 + 300, `after ${Date.now() - started} ms`);
    // The channel works on after the rebuild.
    backend.answer = () => ({ body: { data: 1 } });
    assert.deepEqual(await ask(socket, "try product", {}), { status: "ok", data: 1 });
  });
});
