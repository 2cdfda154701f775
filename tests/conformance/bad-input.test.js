// Hostile or broken input. Whatever a client sends, the server must answer
// (never hang), drop only the offending connection/session, and keep serving
// everyone else: every test ends by checking that a fresh, well-behaved
// socket.io-client still gets its message echoed.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { BASE_URL, CONF, ENGINE_PATH, channelPath, endpointUrl, uniqueId } from "../lib/config.js";
import { sleep } from "../lib/wait.js";
import { rawSocket, wsUrl, openEngineWs, openSocketIoWs } from "../lib/raw-ws.js";
import { request, openPolling, poll, push, pollPackets } from "../lib/polling.js";
import { decodeFrame, packet, SIO } from "../lib/sio-packet.js";
import { connectClient, record } from "../lib/client.js";
import { assertEngineError, assertServerHealthy } from "../lib/assertions.js";

const PATH = channelPath();

/** Raw WebSocket connected to "/" of `path`, pings answered, greeting frames consumed. */
async function connectedRaw(t, path = PATH) {
  const { socket, reply } = await openSocketIoWs(t, path);
  assert.equal(decodeFrame(reply).type, SIO.CONNECT);
  if (path === PATH) await socket.next(); // the test-suite server's "auth" event
  return socket;
}

describe("garbage over WebSocket", () => {
  // Spec (Socket.IO): a binary frame is only valid as an announced attachment;
  // anything else cannot be decoded, which is a protocol error.
  test("random binary frame before CONNECT: that connection is closed", async (t) => {
    const { socket } = await openEngineWs(t, PATH, { autoPong: true });
    socket.send(randomBytes(64));
    await socket.closed(CONF.connectTimeout - 300);
    await assertServerHealthy(t);
  });

  // RFC 6455: a text frame that is not UTF-8 fails the WebSocket connection. The native server
  // does exactly that. workerd instead decodes the frame lossily before the Worker sees it, so
  // on the edge the echo channel answers with replacement characters. Either way the invalid
  // bytes never come back and the server keeps serving.
  test("text frame with invalid UTF-8: closed, or decoded lossily by the runtime", async (t) => {
    const { socket } = await openEngineWs(t, ENGINE_PATH, { autoPong: true });
    socket.ws.send(Buffer.from([0x34, 0xff, 0xfe, 0xc3]), { binary: false });
    const outcome = await Promise.race([
      socket.closed().then(() => "closed"),
      socket.next().then((message) => message),
    ]);
    if (outcome !== "closed") {
      assert.equal(typeof outcome, "string");
      assert.match(outcome, /^4\uFFFD+$/u, `unexpected echo ${JSON.stringify(outcome)}`);
    }
    await assertServerHealthy(t);
  });

  for (const [what, frames] of [
    ["empty Socket.IO packet '4'", ["4"]],
    ["truncated JSON", ['42["message",']],
    ["non-numeric ack id", ['42abc["message"]']],
    ["reserved event name 'connect'", ['42["connect"]']],
    ["reserved event name 'disconnect'", ['42["disconnect","x"]']],
    ["binary frame nobody announced", [Buffer.from([1, 2, 3])]],
    ["text frame where an announced attachment is due", ['451-["message",{"_placeholder":true,"num":0}]', '42["message"]']],
  ]) {
    test(`after CONNECT, ${what}: that connection is closed`, async (t) => {
      const socket = await connectedRaw(t);
      for (const frame of frames) socket.send(frame);
      await socket.closed();
      await assertServerHealthy(t);
    });
  }

  test("ack for an unknown id ('43999[]') is ignored; the connection keeps working", async (t) => {
    const socket = await connectedRaw(t);
    socket.send("43999[]");
    socket.send('42["message","after a stray ack"]');
    assert.deepEqual(decodeFrame(await socket.next()), packet({ type: SIO.EVENT, data: ["message-back", "after a stray ack"] }));
    await assertServerHealthy(t);
  });

  // A reserved event name must never be relayed: socket.io-client treats a
  // received "connect" event as a protocol error and would drop the receiver.
  test("'42[\"connect\"]' on a relay channel is not relayed to the other clients", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const victim = await connectClient(t, BASE_URL, { path: channelPath(channel), transports: ["websocket"] });
    const events = [];
    victim.onAny((...args) => events.push(args));
    const disconnects = record(victim, "disconnect");
    const socket = await connectedRaw(t, channelPath(channel));
    socket.send('42["connect"]');
    await socket.closed();
    await sleep(300);
    assert.deepEqual(events, []);
    assert.deepEqual(disconnects.received, []);
    const mine = record(victim, "still-fine");
    victim.emit("still-fine", 1);
    assert.deepEqual((await mine.waitFor(1))[0], [1]);
  });
});

describe("garbage over HTTP long-polling", () => {
  test("non-UTF-8 bytes in a POST body are answered (200 or 400), never crash the server", async (t) => {
    for (const path of [ENGINE_PATH, PATH]) {
      const { sid } = await openPolling(path);
      if (path === PATH) {
        assert.equal((await push(path, sid, "40")).body, "ok");
        await pollPackets(path, sid, 2); // CONNECT + auth
      }
      const body = Buffer.concat([Buffer.from('42["message","'), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from('"]')]);
      const response = await push(path, sid, body);
      assert.ok([200, 400].includes(response.status), `${path}: POST answered ${response.status}`);
    }
    await assertServerHealthy(t);
    await assertServerHealthy(t, { transports: ["polling"] });
  });

  test("Socket.IO garbage in a POST closes the session", async (t) => {
    const { sid } = await openPolling(PATH);
    assert.equal((await push(PATH, sid, "40")).body, "ok");
    await pollPackets(PATH, sid, 2);
    const pushed = await push(PATH, sid, '42["message",');
    assert.ok([200, 400].includes(pushed.status), `POST answered ${pushed.status}`);
    // The pending poll is released (close/noop) or refused; then the sid is gone.
    const first = await poll(PATH, sid);
    if (first.status === 200) assert.match(first.body, /(^|\x1e)[16]$/, `got ${JSON.stringify(first.body)}`);
    else assert.equal(first.status, 400);
    assert.equal((await poll(PATH, sid)).status, 400);
    await assertServerHealthy(t);
  });

  test("duplicate GET on a relay channel closes only that session", async (t) => {
    const path = channelPath(`relay/${uniqueId()}`);
    const bystander = await openPolling(path);
    const { sid } = await openPolling(path);
    const first = poll(path, sid);
    await sleep(50);
    const second = await poll(path, sid, { extra: { t: "dup" } });
    assert.ok([400, 500].includes(second.status));
    assert.equal((await first).status, 200);
    assert.equal((await poll(path, sid)).status, 400);
    // The other session on the same channel is untouched: it gets its ping.
    const other = await poll(path, bystander.sid, { timeout: 2000 });
    assert.equal(other.status, 200);
    assert.equal(other.body, "2");
    await assertServerHealthy(t);
  });
});

describe("bad session / protocol parameters", () => {
  test("EIO=3 → 400 on every kind of channel, WebSocket refused", async (t) => {
    for (const path of [ENGINE_PATH, PATH, channelPath(`relay/${uniqueId()}`)]) {
      assertEngineError(await request(endpointUrl(path, { EIO: 3, transport: "polling" })), 5);
      await rawSocket(t, wsUrl(path, { EIO: 3 })).expectRefused();
    }
    await assertServerHealthy(t);
  });

  test("unknown sid: GET and POST → 400 code 1, WebSocket refused", async (t) => {
    for (const path of [ENGINE_PATH, PATH, channelPath(`relay/${uniqueId()}`)]) {
      assertEngineError(await poll(path, "AAAAAAAAAAAAAAAAAAAA"), 1);
      assertEngineError(await push(path, "AAAAAAAAAAAAAAAAAAAA", "40"), 1);
      await rawSocket(t, wsUrl(path, { sid: "AAAAAAAAAAAAAAAAAAAA" }), { autoPong: true }).expectRefused();
    }
    await assertServerHealthy(t);
  });

  test("a sid is only valid on the channel that issued it", async (t) => {
    const home = channelPath(`relay/${uniqueId()}`);
    const elsewhere = channelPath(`relay/${uniqueId()}`);
    const { sid } = await openPolling(home);
    assert.equal((await poll(elsewhere, sid)).status, 400);
    assert.equal((await push(elsewhere, sid, "40")).status, 400);
    assert.equal((await poll(PATH, sid)).status, 400);
    await assertServerHealthy(t);
  });

  test("unknown namespace then a valid one on the same connection", async (t) => {
    const { socket } = await openEngineWs(t, channelPath(`relay/${uniqueId()}`), { autoPong: true });
    socket.send("40/nope,");
    const error = decodeFrame(await socket.next());
    assert.equal(error.type, SIO.CONNECT_ERROR);
    assert.equal(error.nsp, "/nope");
    assert.equal(typeof error.data.message, "string");
    socket.send("40/admin,");
    const ok = decodeFrame(await socket.next());
    assert.equal(ok.type, SIO.CONNECT);
    assert.equal(ok.nsp, "/admin");
    await assertServerHealthy(t);
  });

  test("a burst of 50 abandoned handshakes does not stop the server", async (t) => {
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        i % 2 ? request(endpointUrl(PATH, { transport: "polling" })) : request(endpointUrl(PATH, { transport: "abc" })),
      ),
    );
    await assertServerHealthy(t);
    await assertServerHealthy(t, { transports: ["polling"] });
  });
});
