// Socket.IO v5 protocol conformance with raw Engine.IO frames, against the
// default channel (/socket.io/) of the conformance configuration, which runs
// the published test-suite server: namespaces "/" and "/custom", "auth" event
// echoing the CONNECT payload, "message" → "message-back", "message-with-ack"
// → ack with the same arguments, connectTimeout 1000 ms.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { CONF, channelPath } from "../lib/config.js";
import { openEngineWs, openSocketIoWs } from "../lib/raw-ws.js";
import { openPolling, push, pollPackets } from "../lib/polling.js";
import { decodeFrame, packet, placeholder, SIO } from "../lib/sio-packet.js";

const PATH = channelPath();

/** Connected to "/" with the "auth" event consumed. Pings are answered. */
async function connected(t, options) {
  const session = await openSocketIoWs(t, PATH, options);
  assert.equal(decodeFrame(session.reply).type, SIO.CONNECT);
  decodeFrame(await session.socket.next()); // "auth" event
  return session.socket;
}

function assertConnectReply(frame, nsp) {
  const reply = decodeFrame(frame);
  assert.equal(reply.type, SIO.CONNECT, `expected CONNECT, got ${frame}`);
  assert.equal(reply.nsp, nsp);
  assert.deepEqual(Object.keys(reply.data), ["sid"], `CONNECT payload: ${frame}`);
  assert.equal(typeof reply.data.sid, "string");
  assert.ok(reply.data.sid.length > 0);
  return reply.data.sid;
}

describe("Socket.IO protocol over WebSocket", () => {
  // Spec: CONNECT "0[nsp,][payload]" → server answers "0[nsp,]{sid}" or
  // CONNECT_ERROR "4[nsp,]{message}". Without a CONNECT within
  // connectTimeout, the server closes the connection.
  describe("connect", () => {
    test("to the main namespace without payload: CONNECT {sid}, then auth {}", async (t) => {
      const { socket, reply } = await openSocketIoWs(t, PATH);
      assertConnectReply(reply, "/");
      assert.deepEqual(decodeFrame(await socket.next()), packet({ type: SIO.EVENT, data: ["auth", {}] }));
    });

    test("to the main namespace with a payload: auth event echoes it", async (t) => {
      const { socket, reply } = await openSocketIoWs(t, PATH, { auth: { token: "123" } });
      assertConnectReply(reply, "/");
      assert.deepEqual(decodeFrame(await socket.next()), packet({ type: SIO.EVENT, data: ["auth", { token: "123" }] }));
    });

    test("to a custom namespace without payload", async (t) => {
      const { socket } = await openEngineWs(t, PATH, { autoPong: true });
      socket.send("40/custom,");
      assertConnectReply(await socket.next(), "/custom");
      assert.deepEqual(decodeFrame(await socket.next()), packet({ type: SIO.EVENT, nsp: "/custom", data: ["auth", {}] }));
    });

    test("to a custom namespace with a payload", async (t) => {
      const { socket } = await openEngineWs(t, PATH, { autoPong: true });
      socket.send('40/custom,{"token":"abc"}');
      assertConnectReply(await socket.next(), "/custom");
      assert.deepEqual(
        decodeFrame(await socket.next()),
        packet({ type: SIO.EVENT, nsp: "/custom", data: ["auth", { token: "abc" }] }),
      );
    });

    test("the Socket.IO sid is not the Engine.IO sid", async (t) => {
      const { handshake, reply } = await openSocketIoWs(t, PATH);
      assert.notEqual(assertConnectReply(reply, "/"), handshake.sid);
    });

    test("to an unknown namespace: CONNECT_ERROR 'Invalid namespace', the connection stays usable", async (t) => {
      const { socket } = await openEngineWs(t, PATH, { autoPong: true });
      socket.send("40/random");
      assert.deepEqual(
        decodeFrame(await socket.next()),
        packet({ type: SIO.CONNECT_ERROR, nsp: "/random", data: { message: "Invalid namespace" } }),
      );
      socket.send("40");
      assertConnectReply(await socket.next(), "/");
    });

    test("an invalid packet instead of CONNECT closes the connection (before connectTimeout)", async (t) => {
      const { socket } = await openEngineWs(t, PATH, { autoPong: true });
      socket.send("4abc");
      await socket.closed(CONF.connectTimeout - 300);
    });

    test("no CONNECT within connectTimeout closes the connection (even with pongs)", async (t) => {
      const { socket } = await openEngineWs(t, PATH, { autoPong: true });
      const started = Date.now();
      await socket.closed(CONF.connectTimeout + 1500);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= CONF.connectTimeout - 300, `closed after ${elapsed} ms, before connectTimeout`);
      assert.ok(socket.pingsSeen >= 1, "heartbeat should have run meanwhile");
    });
  });

  // Spec: DISCONNECT "1[nsp,]" leaves a namespace; the Engine.IO connection
  // stays open (other namespaces keep working).
  describe("disconnect", () => {
    test("leaving the main namespace keeps the Engine.IO connection: next frame is a ping", async (t) => {
      const socket = await connected(t, { autoPong: false });
      socket.send("41");
      assert.equal(await socket.next(2000), "2");
      socket.send("3");
    });

    test("connect then disconnect /custom; the main namespace still works", async (t) => {
      const socket = await connected(t);
      socket.send("40/custom");
      assertConnectReply(await socket.next(), "/custom");
      decodeFrame(await socket.next()); // auth on /custom
      socket.send("41/custom");
      socket.send('42["message","message to main namespace"]');
      assert.deepEqual(
        decodeFrame(await socket.next()),
        packet({ type: SIO.EVENT, data: ["message-back", "message to main namespace"] }),
      );
    });
  });

  // Spec: EVENT "2[nsp,][id][name, ...args]", ACK "3[nsp,]id[args]",
  // BINARY_EVENT/BINARY_ACK "5/6<n>-..." followed by n binary frames whose
  // places are marked {"_placeholder":true,"num":i}.
  describe("events and acks", () => {
    test("plain-text event is echoed as message-back", async (t) => {
      const socket = await connected(t);
      socket.send('42["message",1,"2",{"3":[true]}]');
      assert.deepEqual(
        decodeFrame(await socket.next()),
        packet({ type: SIO.EVENT, data: ["message-back", 1, "2", { 3: [true] }] }),
      );
    });

    test("event with two binary attachments is echoed with both attachments", async (t) => {
      const socket = await connected(t);
      socket.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
      socket.send(Buffer.from([1, 2, 3]));
      socket.send(Buffer.from([4, 5, 6]));
      const [header, first, second] = await socket.nextN(3);
      assert.deepEqual(
        decodeFrame(header),
        packet({ type: SIO.BINARY_EVENT, attachments: 2, data: ["message-back", placeholder(0), placeholder(1)] }),
      );
      assert.deepEqual(first, Buffer.from([1, 2, 3]));
      assert.deepEqual(second, Buffer.from([4, 5, 6]));
    });

    test("event with an ack id gets an ACK with the same id and arguments", async (t) => {
      const socket = await connected(t);
      socket.send('42456["message-with-ack",1,"2",{"3":[false]}]');
      assert.deepEqual(decodeFrame(await socket.next()), packet({ type: SIO.ACK, id: 456, data: [1, "2", { 3: [false] }] }));
    });

    test("binary event with an ack id gets a BINARY_ACK with the attachments", async (t) => {
      const socket = await connected(t);
      socket.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
      socket.send(Buffer.from([1, 2, 3]));
      socket.send(Buffer.from([4, 5, 6]));
      const [header, first, second] = await socket.nextN(3);
      assert.deepEqual(
        decodeFrame(header),
        packet({ type: SIO.BINARY_ACK, attachments: 2, id: 789, data: [placeholder(0), placeholder(1)] }),
      );
      assert.deepEqual(first, Buffer.from([1, 2, 3]));
      assert.deepEqual(second, Buffer.from([4, 5, 6]));
    });
  });

  // Spec: a packet that cannot be decoded is a protocol error and the server
  // closes the connection. (Pings are answered: only the bad packet can
  // explain the close.)
  describe("invalid packets close the connection", () => {
    for (const [what, frame] of [
      ["unknown packet type", "4abc"],
      ["event payload that is not an array", "42{}"],
      ["non-numeric ack id", '42abc["message-with-ack",1,"2",{"3":[false]}]'],
    ]) {
      test(`${what}: ${frame}`, async (t) => {
        const socket = await connected(t);
        socket.send(frame);
        await socket.closed();
      });
    }
  });
});

// The same Socket.IO exchange over raw HTTP long-polling. The server may put
// several packets into one GET response or spread them over several polls:
// pollPackets() accepts both.
describe("Socket.IO protocol over HTTP long-polling", () => {
  async function connectOverPolling() {
    const { sid } = await openPolling(PATH);
    const pushed = await push(PATH, sid, "40");
    assert.equal(pushed.status, 200);
    assert.equal(pushed.body, "ok");
    const [connect, auth] = await pollPackets(PATH, sid, 2);
    assertConnectReply(connect, "/");
    assert.deepEqual(decodeFrame(auth), packet({ type: SIO.EVENT, data: ["auth", {}] }));
    return sid;
  }

  test("CONNECT, auth event, then an event round trip", async () => {
    const sid = await connectOverPolling();
    assert.equal((await push(PATH, sid, '42["message","over polling",{"n":[1,2]}]')).body, "ok");
    const [echo] = await pollPackets(PATH, sid, 1);
    assert.deepEqual(decodeFrame(echo), packet({ type: SIO.EVENT, data: ["message-back", "over polling", { n: [1, 2] }] }));
    assert.equal((await push(PATH, sid, "1")).status, 200);
  });

  test("several packets in one POST are all handled, in order", async () => {
    const sid = await connectOverPolling();
    const body = ['42["message","a"]', '42["message","b"]', '423["message-with-ack","c"]'].join("\x1e");
    assert.equal((await push(PATH, sid, body)).body, "ok");
    const packets = (await pollPackets(PATH, sid, 3)).map(decodeFrame);
    assert.deepEqual(packets, [
      packet({ type: SIO.EVENT, data: ["message-back", "a"] }),
      packet({ type: SIO.EVENT, data: ["message-back", "b"] }),
      packet({ type: SIO.ACK, id: 3, data: ["c"] }),
    ]);
  });

  test("binary event: attachment travels base64-encoded ('b' prefix)", async () => {
    const sid = await connectOverPolling();
    const pushed = await push(PATH, sid, '451-["message",{"_placeholder":true,"num":0}]\x1ebAQID');
    assert.equal(pushed.body, "ok");
    const [header, attachment] = await pollPackets(PATH, sid, 2);
    assert.deepEqual(
      decodeFrame(header),
      packet({ type: SIO.BINARY_EVENT, attachments: 1, data: ["message-back", placeholder(0)] }),
    );
    assert.equal(attachment, "bAQID");
  });
});

