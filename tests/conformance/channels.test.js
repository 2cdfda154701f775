// Switchboard channels of the conformance configuration, driven by
// socket.io-client:
//   relay/:id   relay = all (sender included), namespaces "/" and "/admin",
//               client rooms allowed
//   others/:id  relay = others (sender excluded), client rooms allowed
//   quiet/:id   relay = none, client rooms disabled
//   small/:id   relay = all, maxPayload 1000
// A client event is any event whose name does not start with "switchboard:";
// if the sender asks for an ack, the server acks with no arguments.
// Every test uses fresh channel ids, so tests never see each other's traffic.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, CONF, channelPath, uniqueId } from "../lib/config.js";
import { sleep, once } from "../lib/wait.js";
import { createClient, connectClient, waitConnected, waitConnectError, record, emitAck } from "../lib/client.js";
import { openPolling, push, poll } from "../lib/polling.js";

/** How long a test waits to be confident an event is NOT delivered. */
const SILENCE = 300;

/** Connects `count` clients to `channel` (namespace `nsp`), one per transport mode in turn. */
async function clients(t, channel, count, { nsp = "/", modes } = {}) {
  const transports = modes ?? [["websocket"], ["polling"], ["polling", "websocket"]];
  const url = nsp === "/" ? BASE_URL : `${BASE_URL}${nsp}`;
  const sockets = [];
  for (let i = 0; i < count; i++) {
    sockets.push(await connectClient(t, url, { path: channelPath(channel), transports: transports[i % transports.length] }));
  }
  return sockets;
}

/** Records every event (name + args) a socket receives. */
function recordAll(socket) {
  const events = [];
  socket.onAny((event, ...args) => events.push([event, ...args]));
  return events;
}

describe("relay channel (relay = all)", () => {
  test("an event reaches every client of the channel, sender included, with the same arguments", async (t) => {
    const [a, b, c] = await clients(t, `relay/${uniqueId()}`, 3);
    const recs = [a, b, c].map((s) => record(s, "greeting"));
    a.emit("greeting", "hello", 42, { nested: [true, null] });
    for (const rec of recs) {
      assert.deepEqual((await rec.waitFor(1))[0], ["hello", 42, { nested: [true, null] }]);
    }
  });

  test("binary attachments are relayed intact", async (t) => {
    const [a, b, c] = await clients(t, `relay/${uniqueId()}`, 3);
    const recs = [a, b, c].map((s) => record(s, "file"));
    b.emit("file", "name.bin", Buffer.from([0, 1, 2, 254, 255]), { thumb: new Uint8Array([7, 7]) });
    for (const rec of recs) {
      const [[name, data, meta]] = await rec.waitFor(1);
      assert.equal(name, "name.bin");
      assert.deepEqual(Buffer.from(data), Buffer.from([0, 1, 2, 254, 255]));
      assert.deepEqual(Buffer.from(meta.thumb), Buffer.from([7, 7]));
    }
  });

  test("events from one sender arrive in order", async (t) => {
    const [a, b] = await clients(t, `relay/${uniqueId()}`, 2);
    const rec = record(b, "seq");
    for (let i = 0; i < 20; i++) a.emit("seq", i);
    const received = await rec.waitFor(20);
    assert.deepEqual(received.map(([n]) => n), [...Array(20).keys()]);
  });

  test("an event with an ack is acked with no arguments, and still relayed", async (t) => {
    const [a, b] = await clients(t, `relay/${uniqueId()}`, 2);
    const rec = record(b, "with-ack");
    const ackArgs = await emitAck(a, "with-ack", "payload");
    assert.deepEqual(ackArgs, []);
    assert.deepEqual((await rec.waitFor(1))[0], ["payload"]);
  });

  test("namespace /admin is isolated from /", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [main] = await clients(t, channel, 1);
    const [admin1, admin2] = await clients(t, channel, 2, { nsp: "/admin" });
    const mainEvents = recordAll(main);
    const adminRec = record(admin2, "announce");
    admin1.emit("announce", "admins only");
    assert.deepEqual((await adminRec.waitFor(1))[0], ["admins only"]);

    const mainRec = record(main, "public");
    const adminEvents = recordAll(admin2);
    main.emit("public", "everyone on /");
    assert.deepEqual((await mainRec.waitFor(1))[0], ["everyone on /"]);
    await sleep(SILENCE);
    assert.deepEqual(mainEvents.filter(([e]) => e === "announce"), []);
    assert.deepEqual(adminEvents, []);
  });

  test("a namespace the channel does not have → connect_error 'Invalid namespace'", async (t) => {
    const socket = createClient(t, `${BASE_URL}/nope`, { path: channelPath(`relay/${uniqueId()}`), transports: ["websocket"] });
    assert.equal((await waitConnectError(socket)).message, "Invalid namespace");
  });

  test("different channel ids are isolated", async (t) => {
    const [one1, one2] = await clients(t, `relay/${uniqueId()}`, 2);
    const [two1] = await clients(t, `relay/${uniqueId()}`, 1);
    const twoEvents = recordAll(two1);
    const rec = record(one2, "hi");
    one1.emit("hi", "channel one");
    await rec.waitFor(1);
    await sleep(SILENCE);
    assert.deepEqual(twoEvents, []);
  });

  test("a client that left no longer receives events", async (t) => {
    const [a, b, c] = await clients(t, `relay/${uniqueId()}`, 3);
    const cEvents = recordAll(c);
    c.disconnect();
    await sleep(100);
    const rec = record(b, "after-leave");
    a.emit("after-leave", 1);
    await rec.waitFor(1);
    await sleep(SILENCE);
    assert.deepEqual(cEvents, []);
  });
});

describe("others channel (relay = others)", () => {
  test("an event reaches every other client but not the sender", async (t) => {
    const [a, b, c] = await clients(t, `others/${uniqueId()}`, 3);
    const aEvents = recordAll(a);
    const recs = [b, c].map((s) => record(s, "note"));
    a.emit("note", "not for me", Buffer.from([1]));
    for (const rec of recs) {
      const [[text, data]] = await rec.waitFor(1);
      assert.equal(text, "not for me");
      assert.deepEqual(Buffer.from(data), Buffer.from([1]));
    }
    await sleep(SILENCE);
    assert.deepEqual(aEvents, []);
  });

  test("an event with an ack is acked with no arguments", async (t) => {
    const [a] = await clients(t, `others/${uniqueId()}`, 2);
    assert.deepEqual(await emitAck(a, "note", "x"), []);
  });
});

describe("quiet channel (relay = none)", () => {
  test("client events reach nobody", async (t) => {
    const [a, b, c] = await clients(t, `quiet/${uniqueId()}`, 3);
    const events = [a, b, c].map(recordAll);
    a.emit("shout", "anyone?");
    b.emit("shout", Buffer.from([1, 2]));
    await sleep(SILENCE);
    assert.deepEqual(events, [[], [], []]);
  });

  test("switchboard:join is refused: client rooms are disabled", async (t) => {
    const [a] = await clients(t, `quiet/${uniqueId()}`, 1);
    const [reply] = await emitAck(a, "switchboard:join", "room-a");
    assert.equal(reply.ok, false);
    assert.equal(typeof reply.error, "string");
  });
});

// switchboard:join / switchboard:leave with an ack: {ok: true, rooms} (sorted,
// without the socket's own id), or {ok: false, error} for a bad room name.
describe("client rooms", () => {
  test("join and leave acks list the socket's rooms, sorted", async (t) => {
    const [a] = await clients(t, `relay/${uniqueId()}`, 1);
    assert.deepEqual(await emitAck(a, "switchboard:join", "room-b"), [{ ok: true, rooms: ["room-b"] }]);
    assert.deepEqual(await emitAck(a, "switchboard:join", "room-a"), [{ ok: true, rooms: ["room-a", "room-b"] }]);
    assert.deepEqual(await emitAck(a, "switchboard:join", "room-a"), [{ ok: true, rooms: ["room-a", "room-b"] }]);
    assert.deepEqual(await emitAck(a, "switchboard:leave", "room-b"), [{ ok: true, rooms: ["room-a"] }]);
    assert.deepEqual(await emitAck(a, "switchboard:leave", "room-a"), [{ ok: true, rooms: [] }]);
  });

  test("non-string or empty room names are rejected", async (t) => {
    const [a] = await clients(t, `relay/${uniqueId()}`, 1);
    for (const bad of [42, "", null, { room: "x" }]) {
      const [reply] = await emitAck(a, "switchboard:join", bad);
      assert.equal(reply.ok, false, `join ${JSON.stringify(bad)} → ${JSON.stringify(reply)}`);
      assert.equal(typeof reply.error, "string");
    }
    const [reply] = await emitAck(a, "switchboard:leave", 7);
    assert.equal(reply.ok, false);
    assert.equal(typeof reply.error, "string");
  });

  test("rooms work on the others channel and control events are never relayed", async (t) => {
    const [a, b] = await clients(t, `others/${uniqueId()}`, 2);
    const bEvents = recordAll(b);
    assert.deepEqual(await emitAck(a, "switchboard:join", "room-a"), [{ ok: true, rooms: ["room-a"] }]);
    assert.deepEqual(await emitAck(a, "switchboard:leave", "room-a"), [{ ok: true, rooms: [] }]);
    a.emit("switchboard:join", "no-ack-room");
    await sleep(SILENCE);
    assert.deepEqual(bEvents, []);
  });
});

describe("small channel (maxPayload 1000)", () => {
  test("handshake announces maxPayload 1000", async () => {
    const { handshake } = await openPolling(channelPath(`small/${uniqueId()}`));
    assert.equal(handshake.maxPayload, CONF.smallMaxPayload);
  });

  test("a WebSocket message over 1000 bytes disconnects its sender; the others keep working", async (t) => {
    const [sender, b, c] = await clients(t, `small/${uniqueId()}`, 3, { modes: [["websocket"]] });
    const fits = record(c, "fits");
    sender.emit("fits", "x".repeat(500));
    assert.equal((await fits.waitFor(1))[0][0].length, 500);

    const disconnected = once(sender, "disconnect", 3000);
    sender.emit("too-big", "x".repeat(2000));
    await disconnected;

    const later = record(c, "later");
    b.emit("later", "still relayed");
    assert.deepEqual((await later.waitFor(1))[0], ["still relayed"]);
  });

  test("a polling POST over 1000 bytes → 413 and the session is closed", async () => {
    const path = channelPath(`small/${uniqueId()}`);
    const { sid } = await openPolling(path);
    assert.equal((await push(path, sid, "40")).body, "ok");
    assert.equal((await push(path, sid, `42["fits","${"y".repeat(800)}"]`)).body, "ok");
    const tooBig = await push(path, sid, `42["too-big","${"x".repeat(1500)}"]`);
    assert.equal(tooBig.status, 413);
    assert.equal((await poll(path, sid)).status, 400);
  });
});

describe("several channels in one process", () => {
  // socket.io-client caches Managers by host + path, so clients on different
  // channel paths get separate Engine.IO connections, while namespaces of the
  // same path share one.
  test("relay/1, relay/2 and the default channel side by side", async (t) => {
    const one = uniqueId();
    const two = uniqueId();
    const r1 = createClient(t, BASE_URL, { forceNew: false, path: channelPath(`relay/${one}`) });
    const r1admin = createClient(t, `${BASE_URL}/admin`, { forceNew: false, path: channelPath(`relay/${one}`) });
    const r2 = createClient(t, BASE_URL, { forceNew: false, path: channelPath(`relay/${two}`) });
    const def = createClient(t, BASE_URL, { forceNew: false });
    await Promise.all([r1, r1admin, r2, def].map((s) => waitConnected(s)));

    assert.equal(r1.io, r1admin.io, "namespaces of one channel share a Manager");
    const ids = [r1, r2, def].map((s) => s.io.engine.id);
    assert.equal(new Set(ids).size, 3, `engine ids ${ids}`);
    assert.equal(r1admin.io.engine.id, r1.io.engine.id);

    const [r1Events, r1adminEvents, r2Events] = [r1, r1admin, r2].map(recordAll);
    const defEcho = record(def, "message-back");
    r1.emit("ping-one", 1);
    r2.emit("ping-two", 2);
    def.emit("message", "default channel");
    assert.deepEqual((await defEcho.waitFor(1))[0], ["default channel"]);
    await sleep(SILENCE);
    assert.deepEqual(r1Events, [["ping-one", 1]]);
    assert.deepEqual(r2Events, [["ping-two", 2]]);
    assert.deepEqual(r1adminEvents, []);
  });
});
