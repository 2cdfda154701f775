// The connect hook (`auth = "backend"`): the app backend decides each namespace CONNECT, as
// Northle's channel authorizer and FoalTS's onConnection do. The backend is a real HTTP server
// on port 3101 (members/:team and vip/:team); unreachable/:team points at a port nobody serves.

import { after, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, TARGET, channelPath, uniqueId } from "../lib/config.js";
import { createClient, record, waitConnectError, waitConnected } from "../lib/client.js";
import { emit } from "../lib/api.js";
import { BACKEND_PORTS, startBackend } from "../lib/backend.js";
import { signToken } from "../lib/token.js";

const backend = await startBackend({ after }, BACKEND_PORTS.members);

function client(t, channel, opts = {}) {
  return createClient(t, BASE_URL, { path: channelPath(channel).slice(0, -1), transports: ["websocket"], ...opts });
}

function ask(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

test("admitted with a user, rooms and data, which later handler calls carry", async (t) => {
  backend.answer = ({ body }) => {
    if (body.type === "connect") {
      return {
        body: {
          allow: body.auth?.ticket === "t-1",
          user: { id: "ada", info: { name: "Ada Lovelace" } },
          rooms: [`team-${body.params.team}`, "everyone"],
          data: { plan: "pro" },
        },
      };
    }
    return { body: { data: body.socket } };
  };
  const team = uniqueId();
  const channel = `members/${team}`;
  const socket = client(t, channel, { auth: { ticket: "t-1" }, extraHeaders: { cookie: "session=abc", "user-agent": "hook-test", "x-private": "never sent" } });
  await waitConnected(socket);

  const [hook] = backend.calls.filter((call) => call.body?.type === "connect" && call.body.channel === channel);
  assert.ok(hook.signed, "the hook's call is signed");
  assert.equal(hook.path, "/switchboard/connect");
  assert.deepEqual(hook.body.params, { team });
  assert.equal(hook.body.namespace, "/");
  assert.deepEqual(hook.body.auth, { ticket: "t-1" });
  assert.equal(hook.body.socket.id, socket.id, "the socket id the client then gets");
  assert.equal(hook.body.headers.cookie, "session=abc");
  assert.equal(hook.body.headers["user-agent"], "hook-test");
  assert.equal(hook.body.headers["x-private"], undefined, "only the allow-listed headers are forwarded");
  if (TARGET === "native") assert.equal(hook.body.address, "127.0.0.1");

  // The rooms were joined: a server emit to one reaches the socket.
  const news = record(socket, "news");
  const { body } = await emit({ channel, event: "news", rooms: [`team-${team}`], data: 1 });
  assert.equal(body.delivered, 1);
  await news.waitFor(1);
  // And a handler call says who the socket is.
  const whoami = await ask(socket, "whoami");
  assert.equal(whoami.status, "ok");
  assert.deepEqual(whoami.data.user, { id: "ada", info: { name: "Ada Lovelace" } });
  assert.deepEqual(whoami.data.data, { plan: "pro" });
  assert.deepEqual([...whoami.data.rooms].sort(), ["everyone", `team-${team}`]);
});

test("refused with the backend's message and data, as socket.io delivers middleware errors", async (t) => {
  backend.answer = () => ({ body: { allow: false, message: "banned", data: { until: "tomorrow" } } });
  const socket = client(t, `members/${uniqueId()}`);
  const err = await waitConnectError(socket);
  assert.equal(err.message, "banned");
  assert.deepEqual(err.data, { until: "tomorrow" });
  assert.equal(socket.connected, false);
});

test("refused, with a generic message, when the backend fails or is down", async (t) => {
  for (const answer of [
    () => ({ status: 500, body: "stack trace with secrets" }),
    () => ({ body: "not json" }),
    () => ({ body: { user: { id: 1 } } }), // no decision
  ]) {
    backend.answer = answer;
    const err = await waitConnectError(client(t, `members/${uniqueId()}`));
    assert.equal(err.message, "Internal server error");
    assert.equal(err.data, undefined, "nothing of the failure reaches the client");
  }
  const started = Date.now();
  const err = await waitConnectError(client(t, `unreachable/${uniqueId()}`));
  assert.equal(err.message, "Internal server error");
  assert.ok(Date.now() - started < 2500, "within the backend timeout");
});

test("a JWT and the hook combine: the token first, then the hook, which sees its subject", async (t) => {
  backend.answer = ({ body }) => ({ body: { allow: body.user?.id === "u-7", rooms: ["vips"] } });
  const team = uniqueId();
  const channel = `vip/${team}`;
  const before = backend.calls.length;
  const noToken = await waitConnectError(client(t, channel));
  assert.match(noToken.message, /private/);
  assert.equal(backend.calls.length, before, "the backend is not asked without a valid token");
  const token = signToken({ sub: "u-7", channels: [channel] });
  const socket = client(t, channel, { auth: { token } });
  await waitConnected(socket);
  const other = signToken({ sub: "u-8", channels: [channel] });
  const refused = await waitConnectError(client(t, channel, { auth: { token: other } }));
  assert.equal(refused.message, "Not authorized");
});
