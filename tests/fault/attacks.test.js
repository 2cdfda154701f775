// The fault suite: each attack of the hardening review, replayed against the server under test,
// bounded in count and time, on 127.0.0.1. After each, the server must hold: healthy clients of the
// same channel got every event in order, `/healthz` answers, a new client connects, and (natively,
// where the process is known) its memory stayed under a stated bound.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { BASE_URL, TARGET, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, record } from "../lib/client.js";
import { assertServerHealthy } from "../lib/assertions.js";
import { openPolling, poll, push, request, splitPayload } from "../lib/polling.js";
import { openEngineWs, rawSocket, wsUrl } from "../lib/raw-ws.js";
import net from "node:net";
import { sleep } from "../lib/wait.js";

const SERVER_PID = process.env.SWITCHBOARD_SERVER_PID;

/** The server's resident memory in MB, when the suite knows its process (native). */
function rssMb() {
  if (!SERVER_PID) return null;
  try {
    const status = readFileSync(`/proc/${SERVER_PID}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) / 1024;
  } catch {
    return null;
  }
}

/** Fails if the server grew by more than `boundMb` since `before` (natively). */
function assertMemoryBound(t, before, boundMb, what) {
  const after = rssMb();
  if (before === null || after === null) return;
  t.diagnostic(`${what}: RSS ${before.toFixed(1)} → ${after.toFixed(1)} MB`);
  assert.ok(after - before <= boundMb, `${what}: RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB (bound: +${boundMb} MB)`);
}

const pathOf = (channel) => channelPath(channel).slice(0, -1);
const join = (t, channel) => connectClient(t, BASE_URL, { path: pathOf(channel), transports: ["websocket"] });

/** A polling session connected to namespace / of `channel`, its connect reply read. */
async function pollingSocket(channel) {
  const path = channelPath(channel);
  const { sid } = await openPolling(path);
  assert.equal((await push(path, sid, "40")).status, 200);
  const reply = await poll(path, sid);
  assert.match(reply.body, /^40\{/);
  return { path, sid };
}

/** `count` events from `sender` reach `receiver` once each and in order. */
async function assertInOrder(t, channel, count = 20) {
  const sender = await join(t, channel);
  const receiver = await join(t, channel);
  const got = record(receiver, "after");
  for (let i = 0; i < count; i++) sender.emit("after", i);
  const received = await got.waitFor(count, 5000);
  assert.deepEqual(received.map(([n]) => n), [...Array(count).keys()]);
}

async function assertServes(t) {
  const health = await request(`${BASE_URL}/healthz`);
  assert.equal(health.status, 200);
  await assertServerHealthy(t);
}

describe("fault suite", () => {
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

  // The HTTP layer is the host's: on Cloudflare the platform owns it (see the README's security
  // table). Natively, with the default timeouts.
  test("slowloris: connections that never finish their request are closed at the header timeout", { skip: TARGET !== "native", timeout: 20_000 }, async (t) => {
    const url = new URL(BASE_URL);
    const kinds = ["", "GET /healthz HT", "GET /healthz HTTP/1.1\r\nHost: x\r\n"];
    const started = Date.now();
    const closedAfter = await Promise.all(kinds.map((bytes) => new Promise((resolve) => {
      const socket = net.connect(Number(url.port), url.hostname, () => bytes && socket.write(bytes));
      socket.on("data", () => {});
      socket.on("error", () => {});
      socket.on("close", () => resolve(Date.now() - started));
      t.after(() => socket.destroy());
    })));
    for (const ms of closedAfter) assert.ok(ms >= 9_000 && ms <= 12_000, `closed after ${ms} ms (header timeout: 10 s)`);
    await assertServes(t);
  });

  test("a body promised larger than max_payload is refused at once, not waited for", { skip: TARGET !== "native" }, async (t) => {
    const channel = `fault/${uniqueId()}`;
    const { path, sid } = await pollingSocket(channel);
    const url = new URL(BASE_URL);
    const started = Date.now();
    const reply = await new Promise((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(`POST ${path}?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n4hello wor`);
      });
      let text = "";
      socket.on("data", (chunk) => {
        text += chunk;
        if (text.includes("\r\n\r\n")) resolve(text);
      });
      socket.on("error", reject);
      t.after(() => socket.destroy());
    });
    assert.match(reply, /^HTTP\/1\.1 413/);
    assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
    assert.equal((await poll(path, sid)).status, 400, "and the session ends");
    await assertServes(t);
  });

  test("a burst of handshakes from one address is cut at the per-address rate", { skip: TARGET !== "native", timeout: 30_000 }, async (t) => {
    const channel = `fault/${uniqueId()}`;
    const statuses = new Map();
    let refusal;
    for (let i = 0; i < 300; i++) {
      const response = await request(`${BASE_URL}${channelPath(channel)}?EIO=4&transport=polling`);
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      if (response.status === 429) refusal = response;
    }
    assert.ok((statuses.get(429) ?? 0) > 0, JSON.stringify([...statuses]));
    assert.equal(JSON.parse(refusal.body).error, "too_many_sessions");
    assert.ok(refusal.headers.get("retry-after"), "says when to come back");
    assert.equal((await request(`${BASE_URL}/healthz`)).status, 200);
    // The allowance refills (20 a second): the suite's later tests need new sessions again.
    await sleep(10_000);
    await assertServes(t);
  });
});

test("the suite knows where it runs", () => {
  assert.ok(["native", "edge"].includes(TARGET));
});
