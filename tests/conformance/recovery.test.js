// Connection-state recovery with the real socket.io-client: a client whose transport drops comes
// back with its socket id, its rooms and every event it missed, once each and in order, as
// socket.io 4.6+ promises; after the window, with an unknown pid, or with an expired token, it does
// not. The recovery/:id pattern keeps a 3 s window and 50 events.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { API_SECRET, BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, createClient, emitAck, record, waitConnected, waitConnectError } from "../lib/client.js";
import { request } from "../lib/polling.js";
import { debug, emit } from "../lib/api.js";
import { once, sleep } from "../lib/wait.js";
import { signToken } from "../lib/token.js";

function join(t, channel, opts = {}) {
  return connectClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"], ...opts });
}

async function emitTo(channel, event, args, rooms) {
  const { status, body } = await emit({ channel, event, args, ...(rooms ? { rooms } : {}) });
  assert.equal(status, 200, JSON.stringify(body));
  return body;
}

async function history(channel, query = "") {
  const response = await request(`${BASE_URL}/channels/${channel}/history${query}`, {
    headers: { authorization: `Bearer ${API_SECRET}` },
  });
  return { status: response.status, body: JSON.parse(response.body) };
}

/** Waits until the server no longer counts `socketId` in the channel (its transport close arrived). */
async function waitGone(channel, count) {
  for (let i = 0; i < 100; i++) {
    const response = await request(`${BASE_URL}/channels/${channel}`, { headers: { authorization: `Bearer ${API_SECRET}` } });
    if (JSON.parse(response.body).sockets === count) return;
    await sleep(20);
  }
  throw new Error(`the channel never got down to ${count} sockets`);
}

describe("connection-state recovery", () => {
  test("a blip: same id, same rooms, all 10 missed events once each and in order", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    const socket = await join(t, channel, { reconnection: true, reconnectionDelay: 300, randomizationFactor: 0 });
    const stayer = await join(t, channel);
    assert.equal((await emitAck(socket, "switchboard:join", "team"))[0].ok, true);
    const id = socket.id;
    const news = record(socket, "news");
    const stayerNews = record(stayer, "news");
    assert.equal(socket.recovered, false);

    socket.io.engine.close();
    await waitGone(channel, 1);
    for (let i = 1; i <= 5; i++) {
      await emitTo(channel, "news", [`all-${i}`]);
      await emitTo(channel, "news", [`team-${i}`], ["team"]);
    }
    await once(socket, "connect", 5000);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    const got = await news.waitFor(10);
    const expected = [];
    for (let i = 1; i <= 5; i++) expected.push(`all-${i}`, `team-${i}`);
    assert.deepEqual(got.map((args) => args[0]), expected);
    // Each carries its offset last, as socket.io-client expects.
    assert.ok(got.every((args) => typeof args[1] === "string"));
    assert.equal((await stayerNews.waitFor(5)).length, 5, "the one that stayed got the channel's five");
    // Its room came back with it.
    await emitTo(channel, "news", ["team-again"], ["team"]);
    assert.equal((await news.waitFor(11))[10][0], "team-again");
    await sleep(100);
    assert.equal(news.received.length, 11, "nothing twice");
  });

  test("a channel rebuilt from storage between the drop and the return (hibernation) still recovers", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    const socket = await join(t, channel);
    const id = socket.id;
    const news = record(socket, "news");
    socket.io.engine.close();
    await waitGone(channel, 0);
    const { status } = await debug("rebuild", channel);
    assert.equal(status, 200);
    await emitTo(channel, "news", ["while away"]);
    socket.connect();
    await waitConnected(socket);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    assert.equal((await news.waitFor(1))[0][0], "while away");
  });

  test("after the window: a new socket, recovered false", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    const socket = await join(t, channel);
    const id = socket.id;
    socket.io.engine.close();
    await sleep(3300);
    socket.connect();
    await waitConnected(socket);
    assert.equal(socket.recovered, false);
    assert.notEqual(socket.id, id);
  });

  test("an explicit disconnect is not recovered, and an unknown pid connects as new", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    const socket = await join(t, channel);
    const id = socket.id;
    socket.disconnect();
    socket.connect();
    await waitConnected(socket);
    assert.equal(socket.recovered, false);
    assert.notEqual(socket.id, id);
    const stranger = await join(t, channel, { auth: { pid: "not-a-session", offset: "nope.1" } });
    assert.equal(stranger.recovered, false);
    assert.ok(stranger.id);
  });

  test("a socket of a private channel whose token expired meanwhile is refused", async (t) => {
    const channel = `private-recovery/${uniqueId()}`;
    const token = signToken({ sub: "ada", channels: [channel], exp: Math.floor(Date.now() / 1000) + 2 });
    const socket = await join(t, channel, { auth: { token } });
    socket.io.engine.close();
    await sleep(2300);
    socket.connect();
    const error = await waitConnectError(socket);
    assert.match(error.message, /expired|token/i);
  });

  test("the history API and the offset an emit returns", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    await join(t, channel);
    const offsets = [];
    for (let i = 0; i < 3; i++) {
      const body = await emitTo(channel, "news", [i]);
      offsets.push(body.channels[channel].offset);
    }
    assert.ok(offsets.every((offset) => typeof offset === "string"));
    const all = await history(channel);
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.events.map((event) => event.offset), offsets);
    assert.deepEqual(all.body.events[0].event, ["news", 0]);
    assert.equal(all.body.latest, offsets[2]);
    const page = await history(channel, `?after=${encodeURIComponent(offsets[0])}&limit=1`);
    assert.deepEqual(page.body.events.map((event) => event.offset), [offsets[1]]);
    assert.equal((await history(channel, "?after=elsewhere.1")).status, 410);
    assert.equal((await history(channel, "?limit=0")).status, 400);
    assert.equal((await history(`relay/${uniqueId()}`)).status, 404, "no recovery, no history");
  });

  test("the 51st event evicts the oldest", async (t) => {
    const channel = `recovery/${uniqueId()}`;
    await join(t, channel);
    for (let i = 0; i < 51; i++) await emitTo(channel, "news", [i]);
    const kept = await history(channel, "?limit=1000");
    assert.equal(kept.body.events.length, 50);
    assert.deepEqual(kept.body.events[0].event, ["news", 1]);
  });
});
