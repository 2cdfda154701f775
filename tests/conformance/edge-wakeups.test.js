// Heartbeats must not defeat Durable Object hibernation: one alarm per ping interval pings every
// socket, and client pongs are answered by the runtime's WebSocket auto-response without waking the
// object. Only meaningful on the edge; the native server has no wake-ups to count.

import { test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, CONF, TARGET, channelPath, uniqueId } from "../lib/config.js";
import { connectClient } from "../lib/client.js";
import { sleep } from "../lib/wait.js";
import { debug } from "../lib/api.js";

test("idle clients: one alarm per ping interval, and pongs never wake the object", { skip: TARGET !== "edge" && "counts Durable Object wake-ups (edge only)" }, async (t) => {
  const channel = `relay/${uniqueId()}`;
  const path = channelPath(channel).slice(0, -1);
  const sockets = [];
  for (let i = 0; i < 5; i++) sockets.push(await connectClient(t, BASE_URL, { path, transports: ["websocket"] }));
  // Each socket's first ping comes on its own timer, one interval after it opened (a one-off wake-up
  // per socket); from then on the channel's rounds ping them all together.
  await sleep(CONF.pingInterval + 150);
  let pings = 0;
  for (const s of sockets) s.io.engine.on("ping", () => (pings += 1));

  const before = (await debug("stats", channel)).body;
  const intervals = 6;
  await sleep(intervals * CONF.pingInterval + 100);
  const after = (await debug("stats", channel)).body;

  const alarms = after.alarms - before.alarms;
  const messages = after.websocket_messages - before.websocket_messages;
  assert.equal(messages, 0, "pongs are answered by the runtime, never delivered to the object");
  assert.ok(alarms >= intervals - 2 && alarms <= intervals + 1, `one alarm per interval for all sockets (${alarms} alarms over ${intervals} intervals)`);
  assert.ok(pings >= 5 * (intervals - 2), `every socket was pinged each round (${pings} pings)`);
  for (const s of sockets) assert.equal(s.connected, true, "clients stay connected on auto-responded pongs");
});
