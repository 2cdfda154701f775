// A channel rebuilt from its sockets' snapshots behaves as before: what a Durable Object does
// after hibernation (the native server rebuilds through the same core code on request).

import { test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, emitAck, record } from "../lib/client.js";
import { expectNoEvent } from "../lib/wait.js";
import { debug, emit, occupancy } from "../lib/api.js";

test("after the channel's memory is dropped, rooms, namespaces and relay still work", async (t) => {
  const channel = `relay/${uniqueId()}`;
  const path = channelPath(channel).slice(0, -1);
  const open = (ns = "") => connectClient(t, `${BASE_URL}${ns}`, { path, transports: ["websocket"] });
  const [a, b, c, d] = [await open(), await open(), await open(), await open()];
  const admin = await open("/admin");
  for (const s of [a, b]) await emitAck(s, "switchboard:join", "red");
  await emitAck(c, "switchboard:join", "blue");
  const before = (await occupancy(channel)).body;

  const rebuilt = await debug("rebuild", channel);
  assert.equal(rebuilt.status, 200);
  assert.equal(rebuilt.body.rebuilt_sessions, 5);
  assert.deepEqual((await occupancy(channel)).body, before, "same sockets, namespaces and rooms");

  // A room broadcast reaches exactly the room.
  const recs = [a, b, c, d, admin].map((s) => record(s, "red alert"));
  const { body } = await emit({ channel, event: "red alert", data: 1, rooms: ["red"] });
  assert.equal(body.delivered, 2);
  await recs[0].waitFor(1);
  await recs[1].waitFor(1);
  await expectNoEvent(c, "red alert", 300);
  assert.equal(recs[3].received.length + recs[4].received.length, 0);

  // The socket ids clients know still address them, and relay and room changes keep working.
  const { body: exceptBody } = await emit({ channel, event: "red alert", data: 2, rooms: ["red"], except: [a.id] });
  assert.equal(exceptBody.delivered, 1);
  const relayed = [a, b, c, d].map((s) => record(s, "hello"));
  d.emit("hello", "after rebuild");
  for (const rec of relayed) assert.deepEqual((await rec.waitFor(1))[0], ["after rebuild"]);
  assert.deepEqual((await emitAck(c, "switchboard:join", "red"))[0], { ok: true, rooms: ["blue", "red"] });
  assert.equal((await emit({ channel, event: "x", rooms: ["red"] })).body.delivered, 3);
  assert.equal((await emit({ channel, event: "x", namespace: "/admin" })).body.delivered, 1);
});
