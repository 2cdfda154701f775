// The fault suite: each attack of the hardening review, replayed against the server under test,
// bounded in count and time, on 127.0.0.1. After each, the server must hold: healthy clients of the
// same channel got every event in order, `/healthz` answers, a new client connects, and (natively,
// where the process is known) its memory stayed under a stated bound (tests/lib/fault.js).
//
// Admission: sessions that never connect, packets that never complete.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { assertInOrder, assertServes } from "../lib/fault.js";
import { push, request } from "../lib/polling.js";
import { openEngineWs, rawSocket, wsUrl } from "../lib/raw-ws.js";
import { sleep } from "../lib/wait.js";

describe("fault suite: admission", () => {
  test("sessions that never CONNECT are bounded per channel", async (t) => {
    // The fault channels hold at most 50 of them (max_pending_sessions; 1,000 by default).
    const channel = `fault/${uniqueId()}`;
    const path = channelPath(channel);
    const statuses = new Map();
    for (let i = 0; i < 60; i++) {
      const { status, body } = await request(`${BASE_URL}${path}?EIO=4&transport=polling`);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status === 503) assert.match(JSON.parse(body).message, /waiting to connect/);
    }
    assert.deepEqual([...statuses], [[200, 50], [503, 10]]);
    // A WebSocket handshake is refused too.
    const ws = rawSocket(t, wsUrl(path));
    await ws.expectRefused();
    // They time out (the fault channels' connect timeout is 2 s), and the channel admits again.
    await sleep(2500);
    await assertInOrder(t, channel);
    await assertServes(t);
  });

  test("a binary packet whose attachments stop coming ends its session at the 10 s deadline", { timeout: 20_000 }, async (t) => {
    const channel = `fault/${uniqueId()}`;
    const sockets = [];
    for (let i = 0; i < 5; i++) {
      const { socket } = await openEngineWs(t, channelPath(channel), { autoPong: true });
      socket.send("40");
      assert.match(await socket.next(), /^40\{/);
      // 3 attachments announced, 2 sent.
      socket.send('453-["files",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]');
      socket.send(Buffer.from("one"));
      socket.send(Buffer.from("two"));
      sockets.push(socket);
    }
    const started = Date.now();
    for (const socket of sockets) {
      const { code } = await socket.closed(12_000);
      assert.equal(code, 1002);
    }
    const waited = Date.now() - started;
    assert.ok(waited >= 9_000 && waited <= 11_500, `closed after ${waited} ms`);
    await assertInOrder(t, channel);
    await assertServes(t);
  });
});
