// The backend HTTP API: POST /emit (single, batch, rooms, except), delivered counts,
// GET /channels/<channel>, GET /healthz, and the errors a backend gets for bad requests.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, emitAck, record } from "../lib/client.js";
import { expectNoEvent } from "../lib/wait.js";
import { debug, emit, occupancy } from "../lib/api.js";
import { request } from "../lib/polling.js";

/** `count` clients on `channel` (relay/<id>), connected over WebSocket. */
async function clients(t, channel, count) {
  const list = [];
  for (let i = 0; i < count; i++) {
    list.push(await connectClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"] }));
  }
  return list;
}

describe("POST /emit", () => {
  test("reaches every socket of the channel and reports the count", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a, b, c] = await clients(t, channel, 3);
    const recs = [a, b, c].map((s) => record(s, "news"));
    const other = (await clients(t, `relay/${uniqueId()}`, 1))[0];
    const silent = expectNoEvent(other, "news", 400);

    const { status, body } = await emit({ channel, event: "news", data: { n: 1 } });
    assert.equal(status, 200);
    assert.deepEqual(body, { delivered: 3, channels: { [channel]: { delivered: 3 } } });
    for (const rec of recs) assert.deepEqual((await rec.waitFor(1))[0], [{ n: 1 }]);
    await silent;
  });

  test("args passes several arguments", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a] = await clients(t, channel, 1);
    const rec = record(a, "multi");
    const { body } = await emit({ channel, event: "multi", args: [1, "two", [3]] });
    assert.equal(body.delivered, 1);
    assert.deepEqual((await rec.waitFor(1))[0], [1, "two", [3]]);
  });

  test("rooms and except narrow the audience", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a, b, c, d] = await clients(t, channel, 4);
    for (const s of [a, b, c]) assert.equal((await emitAck(s, "switchboard:join", "red"))[0].ok, true);
    await emitAck(d, "switchboard:join", "blue");
    const recs = [a, b, c, d].map((s) => record(s, "alert"));

    const { status, body } = await emit({ channel, event: "alert", data: "x", rooms: ["red"], except: [b.id] });
    assert.equal(status, 200);
    assert.equal(body.delivered, 2);
    await recs[0].waitFor(1);
    await recs[2].waitFor(1);
    await expectNoEvent(b, "alert", 300);
    assert.equal(recs[3].received.length, 0);

    const union = await emit({ channel, event: "alert", data: "y", rooms: ["red", "blue"] });
    assert.equal(union.body.delivered, 4);
  });

  test("a client cannot join another socket's id, so an emit to that id reaches its socket alone", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [victim, thief] = await clients(t, channel, 2);
    const [reply] = await emitAck(thief, "switchboard:join", victim.id);
    assert.equal(reply.ok, false);
    assert.match(reply.error, /another socket's id/);
    const rec = record(victim, "secret");
    const { body } = await emit({ channel, event: "secret", data: "for the victim", rooms: [victim.id] });
    assert.equal(body.delivered, 1);
    assert.deepEqual((await rec.waitFor(1))[0], ["for the victim"]);
    await expectNoEvent(thief, "secret", 300);
  });

  test("a batch sends one event to several channels, with a count per channel", async (t) => {
    const one = `relay/${uniqueId()}`;
    const two = `relay/${uniqueId()}`;
    const idle = `relay/${uniqueId()}`;
    const socketsOne = await clients(t, one, 2);
    const socketsTwo = await clients(t, two, 1);
    const recs = [...socketsOne, ...socketsTwo].map((s) => record(s, "batch"));
    const { status, body } = await emit({ channels: [one, two, idle], event: "batch", data: 7 });
    assert.equal(status, 200);
    assert.deepEqual(body, {
      delivered: 3,
      channels: { [one]: { delivered: 2 }, [two]: { delivered: 1 }, [idle]: { delivered: 0 } },
    });
    for (const rec of recs) assert.deepEqual((await rec.waitFor(1))[0], [7]);
  });

  test("a namespace can be targeted", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const main = await connectClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"] });
    const admin = await connectClient(t, `${BASE_URL}/admin`, { path: channelPath(channel).slice(0, -1), transports: ["websocket"] });
    const rec = record(admin, "ops");
    const silent = expectNoEvent(main, "ops", 300);
    const { body } = await emit({ channel, event: "ops", data: 1, namespace: "/admin" });
    assert.equal(body.delivered, 1);
    await rec.waitFor(1);
    await silent;
  });

  test("a wrong or missing secret gets 401 and nothing is emitted", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a] = await clients(t, channel, 1);
    const silent = expectNoEvent(a, "nope", 400);
    for (const secret of [null, "wrong", "conformance-secre", "conformance-secretX", ""]) {
      const { status, body } = await emit({ channel, event: "nope", data: 1 }, { secret });
      assert.equal(status, 401, `secret ${JSON.stringify(secret)}`);
      assert.equal(body.error, "unauthorized");
    }
    await silent;
  });

  test("bad bodies get 400 naming the field", async () => {
    const channel = `relay/${uniqueId()}`;
    const cases = [
      ["not json", "body"],
      [[1, 2], "body"],
      [{ event: "e" }, "channel"],
      [{ channel }, "event"],
      [{ channel, event: "" }, "event"],
      [{ channel, event: 5 }, "event"],
      [{ channel, event: "disconnect" }, "event"],
      [{ channel, event: "e", args: "x" }, "args"],
      [{ channel, event: "e", data: 1, args: [1] }, "args"],
      [{ channel, event: "e", rooms: "r" }, "rooms"],
      [{ channel, event: "e", except: [1] }, "except"],
      [{ channel, event: "e", namespace: "/nope" }, "namespace"],
      [{ channel: "relay//x", event: "e" }, "channel"],
      [{ channels: [], event: "e" }, "channels"],
      [{ channel, event: "e", colour: "red" }, "colour"],
    ];
    for (const [payload, field] of cases) {
      const { status, body } = await emit(payload);
      assert.equal(status, 400, JSON.stringify(payload));
      assert.equal(body.field, field, JSON.stringify(payload));
      assert.equal(typeof body.message, "string");
    }
  });

  test("an unknown channel gets 404", async () => {
    const { status, body } = await emit({ channel: "nope/1", event: "e" });
    assert.equal(status, 404);
    assert.equal(body.error, "unknown_channel");
  });

  test("other methods get 405", async () => {
    const response = await request(`${BASE_URL}/emit`);
    assert.equal(response.status, 405);
  });
});

// Server → client acknowledgements, like socket.io's io.timeout(ms).emitWithAck(): the answer waits
// for every socket the emit names (a socket's id is a room of its own) and carries each answer, or
// why there is none.
describe("POST /emit with ack_timeout", () => {
  test("one socket answers: its arguments come back in the response", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a] = await clients(t, channel, 1);
    a.on("ask", (question, callback) => callback({ answer: question.n * 2 }, "ok"));
    const started = Date.now();
    const { status, body } = await emit({ channel, event: "ask", data: { n: 21 }, rooms: [a.id], ack_timeout: 3000 });
    assert.equal(status, 200);
    assert.deepEqual(body, {
      delivered: 1,
      channels: { [channel]: { delivered: 1, acks: [{ socket: a.id, args: [{ answer: 42 }, "ok"] }] } },
    });
    assert.ok(Date.now() - started < 2000, "the answer does not wait for the timeout");
  });

  test("a room where one socket answers and one times out", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a, b, c] = await clients(t, channel, 3);
    for (const s of [a, b]) await emitAck(s, "switchboard:join", "jury");
    a.on("verdict?", (callback) => callback("guilty"));
    b.on("verdict?", () => {}); // never answers
    const reached = record(c, "verdict?");
    const timeout = 400;
    const started = Date.now();
    const { status, body } = await emit({ channel, event: "verdict?", rooms: ["jury"], ack_timeout: timeout });
    const took = Date.now() - started;
    assert.equal(status, 200);
    assert.equal(body.channels[channel].delivered, 2);
    const acks = Object.fromEntries(body.channels[channel].acks.map((ack) => [ack.socket, ack]));
    assert.deepEqual(acks[a.id], { socket: a.id, args: ["guilty"] });
    assert.deepEqual(acks[b.id], { socket: b.id, error: "timeout" });
    assert.equal(Object.keys(acks).length, 2);
    assert.ok(took >= timeout - 20 && took < timeout + 1500, `answered after ${took} ms for a ${timeout} ms timeout`);
    assert.equal(reached.received.length, 0, "the socket outside the room got nothing");
  });

  test("a socket that disconnects before answering", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a] = await clients(t, channel, 1);
    const id = a.id;
    a.on("slow?", () => setTimeout(() => a.disconnect(), 50));
    const started = Date.now();
    const { status, body } = await emit({ channel, event: "slow?", rooms: [id], ack_timeout: 5000 });
    assert.equal(status, 200);
    assert.deepEqual(body.channels[channel].acks, [{ socket: id, error: "disconnected" }]);
    assert.ok(Date.now() - started < 3000, "the answer comes with the disconnect, not the timeout");
  });

  test("an ack timeout needs named recipients", async () => {
    const { status, body } = await emit({ channel: `relay/${uniqueId()}`, event: "q", ack_timeout: 1000 });
    assert.equal(status, 400);
    assert.equal(body.field, "rooms");
  });
});

describe("GET /channels/<channel>", () => {
  test("reports connections, sockets, namespaces and room sizes", async (t) => {
    const channel = `relay/${uniqueId()}`;
    const [a, b] = await clients(t, channel, 2);
    await emitAck(a, "switchboard:join", "red");
    await emitAck(b, "switchboard:join", "red");
    await emitAck(b, "switchboard:join", "blue");
    const { status, body } = await occupancy(channel);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      channel,
      connections: 2,
      sockets: 2,
      namespaces: { "/": { sockets: 2, rooms: { blue: 1, red: 2 } } },
    });
    const empty = await occupancy(`relay/${uniqueId()}`);
    assert.deepEqual(empty.body.sockets, 0);
  });

  test("needs the secret and a known channel", async () => {
    assert.equal((await occupancy("relay/1", { secret: "wrong" })).status, 401);
    assert.equal((await occupancy("nope/1")).status, 404);
  });
});

test("the test-only /__debug/ endpoints take the API secret too", async () => {
  for (const secret of [null, "wrong"]) {
    const { status, body } = await debug("stats", "relay/1", { secret });
    assert.equal(status, 401, `secret ${JSON.stringify(secret)}`);
    assert.equal(body.error, "unauthorized");
  }
  assert.equal((await debug("stats", "relay/1")).status, 200);
});

test("GET /healthz answers ok", async () => {
  const response = await request(`${BASE_URL}/healthz`);
  assert.equal(response.status, 200);
  assert.deepEqual(JSON.parse(response.body), { status: "ok" });
});
