// Lifecycle webhooks (watched/:id, backend on port 3102): what happened in a channel, posted to
// the backend signed and in batches, never holding up a client, and retried until the backend
// is back.

import { after, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, record } from "../lib/client.js";
import { sleep } from "../lib/wait.js";
import { BACKEND_PORTS, startBackend } from "../lib/backend.js";

function join(t, channel) {
  return connectClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"] });
}

/** The events of the webhook calls about `channel`, in order. */
function eventsOf(calls, channel) {
  return calls.flatMap((call) => call.body.events).filter((event) => event.channel === channel);
}

const aboutChannel = (channel) => (call) => call.body?.events?.some((event) => event.channel === channel);

test("occupied, connected, client events, disconnected with the reason, vacated: signed and batched", async (t) => {
  const backend = await startBackend(t, BACKEND_PORTS.watched, () => ({ status: 204, body: "" }));
  const id = uniqueId();
  const channel = `watched/${id}`;
  const sockets = [await join(t, channel), await join(t, channel), await join(t, channel)];
  const chat = record(sockets[1], "chat message");
  const started = Date.now();
  sockets[0].emit("chat message", "hello", { n: 1 });
  // The relay does not wait for the webhook.
  await chat.waitFor(1);
  assert.ok(Date.now() - started < 1000);
  const ids = sockets.map((socket) => socket.id);
  for (const socket of sockets) socket.disconnect();

  const wanted = (calls) => eventsOf(calls, channel).some((event) => event.type === "channel_vacated");
  let calls = [];
  for (let waited = 0; waited < 5000 && !wanted(calls); waited += 50) {
    await sleep(50);
    calls = backend.calls.filter(aboutChannel(channel));
  }
  const events = eventsOf(calls, channel);
  assert.deepEqual(
    events.map((event) => event.type),
    [
      "channel_occupied",
      "socket_connected",
      "socket_connected",
      "socket_connected",
      "client_event",
      "socket_disconnected",
      "socket_disconnected",
      "socket_disconnected",
      "channel_vacated",
    ],
  );
  assert.ok(calls.length < events.length, `batched: ${events.length} events in ${calls.length} calls`);
  for (const call of calls) {
    assert.equal(call.path, "/switchboard/webhooks");
    assert.ok(call.signed, "each batch is signed");
    assert.equal(call.body.type, "webhooks");
    assert.equal(call.headers["x-switchboard-call"], call.body.id);
  }
  assert.deepEqual(
    events.filter((event) => event.type === "socket_connected").map((event) => event.socket.id),
    ids,
  );
  const clientEvent = events.find((event) => event.type === "client_event");
  assert.equal(clientEvent.event, "chat message");
  assert.deepEqual(clientEvent.args, ["hello", { n: 1 }]);
  assert.equal(clientEvent.socket.id, ids[0]);
  for (const event of events) {
    assert.deepEqual(event.params, { id });
    assert.equal(typeof event.at, "number");
  }
  for (const event of events.filter((event) => event.type === "socket_disconnected")) {
    assert.equal(event.namespace, "/");
    assert.equal(event.reason, "client namespace disconnect");
  }
});

test("a failed batch is retried with the same call id, and delivered once the backend is back", async (t) => {
  // First the backend answers 503: the batch comes again, later, with the same id.
  let failures = 1;
  const backend = await startBackend(t, BACKEND_PORTS.watched, () => (failures-- > 0 ? { status: 503 } : { status: 200 }));
  const channel = `watched/${uniqueId()}`;
  const socket = await join(t, channel);
  const [first, retry] = await backend.waitForCalls(2, aboutChannel(channel));
  assert.equal(retry.headers["x-switchboard-call"], first.headers["x-switchboard-call"]);
  assert.deepEqual(retry.body.events, first.body.events);
  assert.ok(retry.at - first.at >= 200, `retried ${retry.at - first.at} ms later`);
  await backend.close();

  // Then nothing listens at all: the events wait, and arrive when the backend is back.
  socket.disconnect();
  await sleep(700);
  const back = await startBackend(t, BACKEND_PORTS.watched, () => ({ status: 200 }));
  const [delivered] = await back.waitForCalls(1, aboutChannel(channel), 10_000);
  assert.deepEqual(
    delivered.body.events.map((event) => event.type),
    ["socket_disconnected", "channel_vacated"],
  );
  assert.ok(delivered.signed);
});
