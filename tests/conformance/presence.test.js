// Presence with the real socket.io-client: members are users, not sockets; everyone hears of a
// join or a leave as `switchboard:presence`; `switchboard:members` lists them, a page at a time;
// the API and the webhooks see the same. presence/:id is private (users from tokens) with a 1 s
// leave grace for parked sockets and at most 20 members; crowd/:id coalesces anonymous joins over 500 ms;
// watched-presence/:id posts member_added / member_removed to a backend on port 3103.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { API_SECRET, BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient, createClient, emitAck, record, waitConnected, waitConnectError } from "../lib/client.js";
import { request } from "../lib/polling.js";
import { debug, occupancy } from "../lib/api.js";
import { once, sleep, withTimeout } from "../lib/wait.js";
import { signToken } from "../lib/token.js";
import { BACKEND_PORTS, startBackend } from "../lib/backend.js";

const tokenFor = (user, info = { name: user.toUpperCase() }) => signToken({ sub: user, info, channels: ["presence/:id", "watched-presence/:id"] });

function options(channel, opts = {}) {
  return { path: channelPath(channel).slice(0, -1), transports: ["websocket"], ...opts };
}

function joinAs(t, channel, user, opts = {}) {
  return connectClient(t, BASE_URL, options(channel, { auth: { token: tokenFor(user) }, ...opts }));
}

/** Every `switchboard:presence` change `socket` hears from now on, as "+alice" / "-alice". */
function watch(socket) {
  const events = record(socket, "switchboard:presence");
  return {
    events,
    changes: () => events.received.flatMap(([event]) => event.changes.map((change) => `${change.type === "join" ? "+" : "-"}${change.member.id}`)),
    async waitForChange(expected, timeout = 3000) {
      const started = Date.now();
      while (!this.changes().includes(expected)) {
        if (Date.now() - started > timeout) throw new Error(`no ${expected} within ${timeout} ms; saw ${JSON.stringify(this.changes())}`);
        await sleep(10);
      }
      return Date.now() - started;
    },
  };
}

async function api(path) {
  const response = await request(`${BASE_URL}${path}`, { headers: { authorization: `Bearer ${API_SECRET}` } });
  return { status: response.status, body: JSON.parse(response.body) };
}

const ids = (members) => members.map((member) => member.id);

describe("presence", () => {
  test("two users, one with two tabs: the list and the events as the tabs close one by one", async (t) => {
    const channel = `presence/${uniqueId()}`;
    const bob = await joinAs(t, channel, "bob");
    const seen = watch(bob);
    const tab1 = await joinAs(t, channel, "alice");
    const tab2 = await joinAs(t, channel, "alice");
    await seen.waitForChange("+alice");
    await sleep(100);
    // Bob's own join may come before or after he started watching.
    const before = seen.changes().length;

    const [list] = await emitAck(bob, "switchboard:members");
    assert.deepEqual(list.members, [
      { id: "alice", info: { name: "ALICE" } },
      { id: "bob", info: { name: "BOB" } },
    ]);
    assert.equal(list.count, 2);
    assert.equal(list.next, null);
    const listed = await api(`/channels/${channel}/presence`);
    assert.equal(listed.status, 200);
    assert.deepEqual(ids(listed.body.members), ["alice", "bob"]);
    assert.equal((await occupancy(channel)).body.members, 2);

    tab1.disconnect();
    await sleep(300);
    assert.deepEqual(seen.changes().slice(before), [], "one tab closing is no leave");
    assert.equal((await api(`/channels/${channel}/presence`)).body.count, 2);

    tab2.disconnect();
    await seen.waitForChange("-alice");
    const leave = seen.events.received.at(-1)[0];
    assert.equal(leave.count, 1);
    assert.deepEqual(leave.changes, [{ type: "leave", member: { id: "alice", info: { name: "ALICE" } } }]);
    assert.deepEqual(ids((await api(`/channels/${channel}/presence`)).body.members), ["bob"]);
    assert.equal((await occupancy(channel)).body.members, 1);
  });

  test("a socket that dies without a close leaves at the ping timeout", async (t) => {
    const channel = `presence/${uniqueId()}`;
    const bob = await joinAs(t, channel, "bob");
    const seen = watch(bob);
    // A real client in a process of its own, frozen with SIGSTOP: its TCP connection stays up, it
    // just never answers a ping again.
    const script = `
      import { io } from "socket.io-client";
      const socket = io(process.argv[1], { path: process.argv[2], transports: ["websocket"], auth: { token: process.argv[3] }, reconnection: false });
      socket.on("connect", () => console.log("connected"));
      socket.on("connect_error", (err) => { console.log("error " + err.message); process.exit(1); });`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script, BASE_URL, channelPath(channel).slice(0, -1), tokenFor("zed")], {
      cwd: new URL("..", import.meta.url),
      stdio: ["ignore", "pipe", "inherit"],
    });
    t.after(() => child.kill("SIGKILL"));
    const line = await withTimeout(new Promise((resolve) => child.stdout.once("data", (data) => resolve(String(data)))), 5000, "the child client");
    assert.match(line, /connected/);
    await seen.waitForChange("+zed");
    child.kill("SIGSTOP");
    const stoppedAt = Date.now();
    // Pings every 300 ms with 200 ms to answer (the conformance heartbeat): gone within a second
    // or two, and not before its ping went unanswered.
    await seen.waitForChange("-zed", 4000);
    const took = Date.now() - stoppedAt;
    assert.ok(took >= 150, `left after ${took} ms`);
    assert.deepEqual(ids((await api(`/channels/${channel}/presence`)).body.members), ["bob"]);
  });

  test("a blip that recovery covers makes no leave and no join; a longer absence does", async (t) => {
    const channel = `presence/${uniqueId()}`;
    const bob = await joinAs(t, channel, "bob");
    const seen = watch(bob);
    const alice = await joinAs(t, channel, "alice", { reconnection: true, reconnectionDelay: 200, randomizationFactor: 0 });
    await seen.waitForChange("+alice");
    const before = seen.changes().length;

    alice.io.engine.close();
    await once(alice, "connect", 5000);
    assert.equal(alice.recovered, true);
    await sleep(1500);
    assert.deepEqual(seen.changes().slice(before), [], "no leave/join pair for a recovered socket");
    assert.deepEqual(ids((await api(`/channels/${channel}/presence`)).body.members), ["alice", "bob"]);

    // Away past the 1 s grace: she leaves, and joins again when she is back.
    alice.io.reconnectionDelay(2500);
    alice.io.engine.close();
    await seen.waitForChange("-alice", 3000);
    await once(alice, "connect", 6000);
    for (let waited = 0; seen.changes().filter((change) => change === "+alice").length < 2; waited += 10) {
      assert.ok(waited < 3000, `no second join: ${JSON.stringify(seen.changes())}`);
      await sleep(10);
    }
    assert.deepEqual(seen.changes().slice(before), ["-alice", "+alice"]);
  });

  test("the list is intact after a rebuild from snapshots", async (t) => {
    const channel = `presence/${uniqueId()}`;
    const bob = await joinAs(t, channel, "bob");
    const seen = watch(bob);
    const tab1 = await joinAs(t, channel, "alice");
    const tab2 = await joinAs(t, channel, "alice");
    await seen.waitForChange("+alice");
    await sleep(100);
    const before = seen.changes().length;
    // Right after a ping: a rebuilt channel pings again an interval later (natively, a session's
    // own timer restarts), which must come within the client's ping timeout.
    await once(bob.io.engine, "ping", 2000);
    const rebuilt = await debug("rebuild", channel);
    assert.equal(rebuilt.status, 200, JSON.stringify(rebuilt.body));
    assert.equal(rebuilt.body.rebuilt_sessions, 3);
    const [list] = await emitAck(bob, "switchboard:members");
    assert.deepEqual(list.members, [
      { id: "alice", info: { name: "ALICE" } },
      { id: "bob", info: { name: "BOB" } },
    ]);
    assert.deepEqual(seen.changes().slice(before), [], "a rebuild announces nothing");
    // The counts came back too: Alice leaves with her second tab, not her first.
    tab1.disconnect();
    await sleep(300);
    assert.deepEqual(seen.changes().slice(before), []);
    tab2.disconnect();
    await seen.waitForChange("-alice");
  });

  test("members by page, and the member cap and info size refused with a clear error", async (t) => {
    const channel = `presence/${uniqueId()}`;
    const watcher = await joinAs(t, channel, "u00");
    for (let n = 1; n < 12; n++) await joinAs(t, channel, `u${String(n).padStart(2, "0")}`);
    const [first] = await emitAck(watcher, "switchboard:members");
    assert.equal(first.count, 12);
    assert.equal(first.members.length, 10, "page_size is 10");
    assert.ok(first.next);
    const [second] = await emitAck(watcher, "switchboard:members", { after: first.next });
    assert.deepEqual(ids([...first.members, ...second.members]), Array.from({ length: 12 }, (_, n) => `u${String(n).padStart(2, "0")}`));
    assert.equal(second.next, null);
    const paged = await api(`/channels/${channel}/presence?limit=5&after=${encodeURIComponent(first.next)}`);
    assert.deepEqual(ids(paged.body.members), ["u10", "u11"]);
    const badCursor = await api(`/channels/${channel}/presence?after=nonsense`);
    assert.equal(badCursor.status, 400);
    assert.equal(badCursor.body.error, "invalid_cursor");

    const big = createClient(t, BASE_URL, options(channel, { auth: { token: tokenFor("big", { bio: "x".repeat(300) }) } }));
    assert.match((await waitConnectError(big)).message, /presence takes at most 200/);

    const full = `presence/${uniqueId()}`;
    for (let batch = 0; batch < 2; batch++) {
      await Promise.all(Array.from({ length: 10 }, (_, n) => joinAs(t, full, `m${batch * 10 + n}`)));
    }
    const extra = createClient(t, BASE_URL, options(full, { auth: { token: tokenFor("one-too-many") } }));
    assert.equal((await waitConnectError(extra)).message, "presence is full: at most 20 members");
    // Another tab of a member is no new member.
    await joinAs(t, full, "m7");
  });

  test("the API and webhooks: member_added once per user, member_removed with the last socket", async (t) => {
    const backend = await startBackend(t, BACKEND_PORTS.watchedPresence, () => ({ status: 204, body: "" }));
    const channel = `watched-presence/${uniqueId()}`;
    const tab1 = await joinAs(t, channel, "alice");
    const tab2 = await joinAs(t, channel, "alice");
    const bob = await joinAs(t, channel, "bob");
    assert.deepEqual(ids((await api(`/channels/${channel}/presence`)).body.members), ["alice", "bob"]);
    const events = () =>
      backend.calls
        .flatMap((call) => call.body.events)
        .filter((event) => event.channel === channel)
        .map((event) => `${event.type} ${event.member.id}`);
    tab1.disconnect();
    tab2.disconnect();
    // Separate connections: Bob goes once Alice is gone, so that the order is known.
    for (let waited = 0; waited < 5000 && events().length < 3; waited += 50) await sleep(50);
    bob.disconnect();
    for (let waited = 0; waited < 5000 && events().length < 4; waited += 50) await sleep(50);
    assert.deepEqual(events(), ["member_added alice", "member_added bob", "member_removed alice", "member_removed bob"]);
    const added = backend.calls.flatMap((call) => call.body.events).find((event) => event.channel === channel);
    assert.deepEqual(added.member, { id: "alice", info: { name: "ALICE" } });
    assert.equal((await api(`/channels/${channel}/presence`)).body.count, 0);

    // A channel without presence says so.
    const off = await api(`/channels/relay/${uniqueId()}/presence`);
    assert.equal(off.status, 404);
    assert.equal(off.body.error, "presence_off");
    assert.equal((await occupancy(`relay/${uniqueId()}`)).body.members, undefined);
  });

  test("200 joins within the coalescing window reach a member as a few events, every join accounted for", async (t) => {
    const channel = `crowd/${uniqueId()}`;
    const watcher = await connectClient(t, BASE_URL, options(channel));
    const seen = watch(watcher);
    await seen.waitForChange(`+${watcher.id}`, 2000);
    const before = seen.events.received.length;
    // From four loopback addresses: the native server lets one address open 200 sessions at once.
    // 25 at a time (wrangler dev stalls some of a few hundred simultaneous WebSocket handshakes).
    const crowd = [];
    for (let batch = 0; batch < 8; batch++) {
      const sockets = Array.from({ length: 25 }, (_, n) =>
        createClient(t, BASE_URL, options(channel, { localAddress: `127.0.0.${2 + ((batch * 25 + n) % 4)}` })),
      );
      await Promise.all(sockets.map((socket) => waitConnected(socket)));
      crowd.push(...sockets);
    }
    const expected = new Set(crowd.map((socket) => `+${socket.id}`));
    const started = Date.now();
    while ([...expected].some((change) => !seen.changes().includes(change))) {
      if (Date.now() - started > 10_000) {
        const missing = [...expected].filter((c) => !seen.changes().includes(c));
        const listed = ids((await api(`/channels/${channel}/presence?limit=1000`)).body.members);
        throw new Error(`missing joins: ${missing} (listed: ${missing.map((c) => listed.includes(c.slice(1)))}); events ${seen.events.received.length}, changes ${seen.changes().length}`);
      }
      await sleep(20);
    }
    const events = seen.events.received.slice(before);
    const joins = events.flatMap(([event]) => event.changes);
    assert.equal(joins.length, 200, "each join once");
    assert.ok(events.length <= 8, `${events.length} events for 200 joins`);
    assert.equal(events.at(-1)[0].count, 201);
    // Every other member heard the same few events.
    const [list] = await emitAck(crowd[0], "switchboard:members", { limit: 1000 });
    assert.equal(list.count, 201);
  });
});
