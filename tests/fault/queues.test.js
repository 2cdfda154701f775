// The fault suite: each attack of the hardening review, replayed against the server under test,
// bounded in count and time, on 127.0.0.1. After each, the server must hold: healthy clients of the
// same channel got every event in order, `/healthz` answers, a new client connects, and (natively,
// where the process is known) its memory stayed under a stated bound (tests/lib/fault.js).
//
// Queues: clients that do not read, and floods of packets.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { uniqueId } from "../lib/config.js";
import { record } from "../lib/client.js";
import { assertInOrder, assertMemoryBound, assertServes, join, pollingSocket, rssMb } from "../lib/fault.js";
import { poll, push, splitPayload } from "../lib/polling.js";
import { sleep } from "../lib/wait.js";

describe("fault suite: queues", () => {
  test("a poller that never GETs in a busy channel is let go, not buffered", async (t) => {
    const channel = `fault/${uniqueId()}`;
    const receiver = await join(t, channel);
    const sender = await join(t, channel);
    const { path, sid } = await pollingSocket(channel);
    // The attacker keeps its session alive with pongs, never reading.
    let stop = false;
    const pongs = (async () => {
      while (!stop) {
        await push(path, sid, "3").catch(() => {});
        await sleep(100);
      }
    })();
    const before = rssMb();
    const big = "x".repeat(900_000);
    const got = record(receiver, "big");
    // Paced by the healthy receiver, which reads as fast as it can: a burst of megabytes faster
    // than any client reads would (rightly) drop it as too slow.
    for (let i = 0; i < 60; i++) {
      sender.emit("big", i, big);
      await got.waitFor(i + 1, 5000);
    }
    const received = got.received;
    stop = true;
    await pongs;
    assert.deepEqual(received.map(([n]) => n), [...Array(60).keys()], "the healthy client got every event, in order");
    // 54 MB were relayed; the poller may hold at most 8 MiB of it.
    assertMemoryBound(t, before, 40, "60 relayed 900 KB events with a poller that never reads");
    const after = await poll(path, sid);
    assert.equal(after.status, 400, "the poller's session is gone");
    await assertInOrder(t, channel);
    await assertServes(t);
  });

  test("POSTs of a million bytes of acked events, never read, cost the server their size, not 24 times it", async (t) => {
    const channel = `fault/${uniqueId()}`;
    const { path, sid } = await pollingSocket(channel);
    const before = rssMb();
    // A pong first: the attacker's session stays alive while it floods.
    const body = "3\x1e" + Array(110_000).fill('421["a"]').join("\x1e");
    for (let i = 0; i < 10; i++) {
      const answer = await push(path, sid, body, { timeout: 10_000 });
      assert.equal(answer.status, 200);
    }
    assertMemoryBound(t, before, 48, "10 POSTs of 1 MB of 421[\"a\"]");
    // The flood was refused past the rate, and the socket disconnected.
    const polled = await poll(path, sid, { timeout: 5000 });
    const packets = splitPayload(polled.body);
    // One second's worth relayed (to itself too: relay = "all") and acked, as many refusals, then
    // the disconnect.
    assert.ok(packets.length <= 400, `${packets.length} packets waited for the attacker`);
    assert.ok(packets.some((packet) => packet.includes("RATE_LIMITED")), polled.body.slice(0, 300));
    assert.ok(packets.includes("41"), "the flooding socket was disconnected");
    await assertInOrder(t, channel);
    await assertServes(t);
  });

  test("one POST of 125,000 events does not drop the channel's WebSocket clients as slow", async (t) => {
    const channel = `fault/${uniqueId()}`;
    const listeners = [];
    for (let i = 0; i < 5; i++) listeners.push(await join(t, channel));
    const floods = listeners.map((socket) => record(socket, "a"));
    const dropped = listeners.map((socket) => new Promise((resolve) => socket.once("disconnect", resolve)));
    const { path, sid } = await pollingSocket(channel);
    const body = Array(125_000).fill('42["a"]').join("\x1e");
    assert.equal((await push(path, sid, body, { timeout: 10_000 })).status, 200);
    await sleep(1000);
    for (const [i, socket] of listeners.entries()) {
      assert.ok(socket.connected, `listener ${i} was dropped (${await Promise.race([dropped[i], "still here"])})`);
      // About one second's worth of the flood: the default rate limit's burst of 100, plus what
      // refilled while the records were handled.
      assert.ok(floods[i].received.length <= 150, `listener ${i} got ${floods[i].received.length} flood events`);
    }
    await assertInOrder(t, channel);
    await assertServes(t);
  });
});
