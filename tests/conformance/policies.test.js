// Channel policies from wrangler.toml: private channels with JWTs, parameters bound to claims,
// socket and rate limits, and allowed browser origins.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { BASE_URL, channelPath, endpointUrl, toWs, uniqueId } from "../lib/config.js";
import { connectClient, createClient, emitAck, record, waitConnectError } from "../lib/client.js";
import { expectNoEvent, sleep } from "../lib/wait.js";
import { emit } from "../lib/api.js";
import { request } from "../lib/polling.js";
import { rawSocket } from "../lib/raw-ws.js";
import { signToken } from "../lib/token.js";

const pathOf = (channel) => channelPath(channel).slice(0, -1);
const open = (t, channel, opts = {}) =>
  connectClient(t, BASE_URL, { path: pathOf(channel), transports: ["websocket"], ...opts });
const refused = async (t, channel, auth) => {
  const socket = createClient(t, BASE_URL, { path: pathOf(channel), transports: ["websocket"], auth });
  return (await waitConnectError(socket)).message;
};

describe("private channels", () => {
  test("a token naming the channel admits the client, which then relays", async (t) => {
    const channel = `private/${uniqueId()}`;
    const token = signToken({ sub: "u1", channels: [channel] });
    const a = await open(t, channel, { auth: { token } });
    const b = await open(t, channel, { auth: { token } });
    const rec = record(b, "hi");
    a.emit("hi", 1);
    assert.deepEqual((await rec.waitFor(1))[0], [1]);
  });

  test("a pattern in the token admits any matching channel", async (t) => {
    const channel = `private/${uniqueId()}`;
    await open(t, channel, { auth: { token: signToken({ channels: ["private/:id"] }) } });
  });

  test("every bad token is refused with a clear reason", async (t) => {
    const channel = `private/${uniqueId()}`;
    const past = Math.floor(Date.now() / 1000) - 10;
    const cases = [
      [undefined, /private/],
      [{ token: 42 }, /string/],
      [{ token: "not-a-jwt" }, /JWT|malformed/],
      [{ token: signToken({ channels: [channel] }, { secret: "wrong-secret" }) }, /signature/],
      [{ token: signToken({ channels: [channel], exp: past }) }, /expired/],
      [{ token: signToken({ channels: [channel], exp: undefined }) }, /exp/],
      [{ token: signToken({ channels: [channel] }, { alg: "none" }) }, /HS256|malformed|signature/],
      [{ token: signToken({ channels: [channel] }, { alg: "HS512", hmac: "sha512" }) }, /HS256/],
      [{ token: signToken({ channels: [channel] }, { alg: "RS256" }) }, /HS256/],
      [{ token: signToken({ channels: ["private/other"] }) }, /does not grant/],
      [{ token: signToken({}) }, /channels/],
      [{ token: signToken({ channels: [channel], exp: Math.floor(Date.now() / 1000) + 2 * 86400 }) }, /lives too long/],
      [{ token: signToken({ channels: [channel], exp: 2 ** 64 - 1 }) }, /lives too long|exp/],
    ];
    for (const [auth, reason] of cases) {
      const message = await refused(t, channel, auth);
      assert.match(message, reason, `auth ${JSON.stringify(auth)} → ${message}`);
    }
  });

  test("a refused socket never receives a channel event", async (t) => {
    const channel = `private/${uniqueId()}`;
    const member = await open(t, channel, { auth: { token: signToken({ channels: [channel] }) } });
    const intruder = createClient(t, BASE_URL, { path: pathOf(channel), transports: ["websocket"], auth: { token: signToken({ channels: ["private/x"] }) } });
    intruder.onAny((event) => assert.fail(`refused socket received ${event}`));
    await waitConnectError(intruder);
    const silent = expectNoEvent(intruder, "secret", 400);
    const rec = record(member, "secret");
    member.emit("secret", "for members");
    const { body } = await emit({ channel, event: "secret", data: "from the backend" });
    assert.equal(body.delivered, 1);
    await rec.waitFor(2);
    await silent;
  });

  test("a parameter bound to a claim admits only that user's token", async (t) => {
    const pattern = "users/:user_id/notifications";
    const user = uniqueId("u");
    const own = `users/${user}/notifications`;
    await open(t, own, { auth: { token: signToken({ sub: user, channels: [pattern] }) } });
    const other = `users/${uniqueId("u")}/notifications`;
    const message = await refused(t, other, { token: signToken({ sub: user, channels: [pattern] }) });
    assert.match(message, /sub/);
  });

  test("a token's rooms claim lets the socket join those rooms only", async (t) => {
    const channel = `private/${uniqueId()}`;
    const socket = await open(t, channel, { auth: { token: signToken({ channels: [channel], rooms: ["vip"] }) } });
    assert.deepEqual((await emitAck(socket, "switchboard:join", "vip"))[0], { ok: true, rooms: ["vip"] });
    const [denied] = await emitAck(socket, "switchboard:join", "staff");
    assert.equal(denied.ok, false);
    assert.equal((await emit({ channel, event: "vip only", rooms: ["vip"] })).body.delivered, 1);
  });
});

describe("tokens that expire", () => {
  test("a socket is told and disconnected at its token's exp, unless it refreshed the token", async (t) => {
    const channel = `private/${uniqueId()}`;
    const soon = Math.floor(Date.now() / 1000) + 2;
    const expiring = await open(t, channel, { auth: { token: signToken({ sub: "u1", channels: [channel], exp: soon }) } });
    const refreshing = await open(t, channel, { auth: { token: signToken({ sub: "u1", channels: [channel], exp: soon }) } });
    const told = record(expiring, "switchboard:error");
    const gone = new Promise((resolve) => expiring.once("disconnect", resolve));

    const [wrongUser] = await emitAck(refreshing, "switchboard:refresh", { token: signToken({ sub: "u2", channels: [channel] }) });
    assert.equal(wrongUser.error.code, "INVALID_TOKEN");
    const later = Math.floor(Date.now() / 1000) + 60;
    const [refreshed] = await emitAck(refreshing, "switchboard:refresh", { token: signToken({ sub: "u1", channels: [channel], exp: later }) });
    assert.deepEqual(refreshed, { status: "ok", data: { expires_at: later * 1000 } });

    assert.equal(await gone, "io server disconnect");
    assert.ok(Date.now() >= soon * 1000 - 50, "not before its exp");
    assert.equal(told.received[0][0].error.code, "TOKEN_EXPIRED");
    // The refreshed socket still gets the channel's events; the expired one gets none.
    const news = record(refreshing, "news");
    assert.equal((await emit({ channel, event: "news", data: 1 })).body.delivered, 1);
    await news.waitFor(1);
  });
});

describe("limits", () => {
  test("max_sockets: the channel refuses sockets beyond its limit", async (t) => {
    const channel = `limited/${uniqueId()}`;
    for (let i = 0; i < 3; i++) await open(t, channel);
    assert.match(await refused(t, channel), /full/);
  });

  test("events_per_second: the excess is refused and the abuser told, others are not slowed", async (t) => {
    const channel = `limited/${uniqueId()}`;
    const abuser = await open(t, channel);
    const polite = await open(t, channel);
    const listener = await open(t, channel);
    const flood = record(listener, "flood");
    const fine = record(listener, "fine");
    const told = record(abuser, "switchboard:error");
    // One second's burst (5) passes; the next event asking for an ack learns why it did not.
    for (let i = 0; i < 5; i++) abuser.emit("flood", i);
    const [refusal] = await emitAck(abuser, "flood", "one more");
    assert.deepEqual(refusal, {
      status: "error",
      error: { code: "RATE_LIMITED", message: "rate limit exceeded: at most 5 events per second" },
    });
    assert.equal(told.received.length, 0, "an ack request is told by its ack");

    const sentAt = Date.now();
    polite.emit("fine", 1);
    await fine.waitFor(1, 1000);
    const latency = Date.now() - sentAt;
    assert.ok(latency < 500, `the polite socket's event took ${latency} ms`);
    await sleep(200);
    assert.ok(flood.received.length >= 5 && flood.received.length <= 7, `${flood.received.length} flood events got through`);
    assert.deepEqual(flood.received.slice(0, 5).map(([n]) => n), [0, 1, 2, 3, 4], "the first ones, in order");
    assert.ok(abuser.connected, "a little over the rate is refused, not disconnected");
  });

  test("events_per_second: a socket that floods on is told once, then disconnected", async (t) => {
    const channel = `limited/${uniqueId()}`;
    const abuser = await open(t, channel);
    const listener = await open(t, channel);
    const flood = record(listener, "flood");
    const told = record(abuser, "switchboard:error");
    const disconnected = new Promise((resolve) => abuser.once("disconnect", resolve));
    for (let i = 0; i < 200; i++) abuser.emit("flood", i);
    assert.equal(await disconnected, "io server disconnect", "no reconnection on its own");
    assert.ok(told.received.length >= 1 && told.received.length <= 2, `${told.received.length} errors`);
    assert.equal(told.received[0][0].error.code, "RATE_LIMITED");
    await sleep(200);
    assert.ok(flood.received.length >= 5 && flood.received.length <= 7, `${flood.received.length} flood events got through`);
    // The listener is untouched, and the channel takes the abuser back if it reconnects.
    const again = await open(t, channel);
    const back = record(listener, "back");
    again.emit("back", 1);
    await back.waitFor(1, 1000);
  });
});

describe("allowed origins", () => {
  test("a page from another origin is refused; the allowed origin and non-browsers pass", async (t) => {
    const channel = `origin/${uniqueId()}`;
    const url = endpointUrl(channelPath(channel), { transport: "polling" });
    const evil = await request(url, { headers: { origin: "http://evil.example" } });
    assert.equal(evil.status, 403);
    assert.equal(JSON.parse(evil.body).code, 4);
    const good = await request(url, { headers: { origin: "http://allowed.example" } });
    assert.equal(good.status, 200);
    assert.equal(good.headers.get("access-control-allow-origin"), "http://allowed.example");
    assert.equal(good.headers.get("access-control-allow-credentials"), "true", "a named origin may send cookies");
    assert.equal((await request(url)).status, 200);

    // No Origin header over WebSocket either: a server-side client is let in.
    const ws = rawSocket(t, toWs(endpointUrl(channelPath(channel), { transport: "websocket" })));
    assert.match(await ws.next(), /^0\{/);
  });

  test("a WebSocket from another origin is refused", async (t) => {
    const channel = `origin/${uniqueId()}`;
    const url = toWs(endpointUrl(channelPath(channel), { transport: "websocket" }));
    const { default: WebSocket } = await import("ws");
    const socket = new WebSocket(url, { headers: { origin: "http://evil.example" } });
    const outcome = await new Promise((resolve) => {
      socket.on("unexpected-response", (_req, res) => resolve(res.statusCode));
      socket.on("open", () => resolve("open"));
      socket.on("error", () => resolve("error"));
    });
    socket.terminate();
    assert.equal(outcome, 403);
  });
});
