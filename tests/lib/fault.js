// Helpers of the fault suite (tests/fault/): what every attack checks afterwards.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { BASE_URL, TARGET, channelPath } from "./config.js";
import { connectClient, record } from "./client.js";
import { assertServerHealthy } from "./assertions.js";
import { openPolling, poll, push, request } from "./polling.js";

const SERVER_PID = process.env.SWITCHBOARD_SERVER_PID;

/**
 * The server's resident memory in MB. Natively the suite must know the server's process
 * (`SWITCHBOARD_SERVER_PID`, set by tests/run.sh): a memory bound that silently goes unchecked
 * would pass whatever the server does. On the edge, workerd's memory is not the channel's alone,
 * and Cloudflare enforces its own per-object limit: null.
 */
export function rssMb() {
  if (TARGET !== "native") return null;
  assert.ok(SERVER_PID, "set SWITCHBOARD_SERVER_PID to the native server's pid (tests/run.sh does)");
  const status = readFileSync(`/proc/${SERVER_PID}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) / 1024;
}

/** Fails if the server grew by more than `boundMb` since `before` (natively). */
export function assertMemoryBound(t, before, boundMb, what) {
  const after = rssMb();
  if (TARGET !== "native") return;
  t.diagnostic(`${what}: RSS ${before.toFixed(1)} → ${after.toFixed(1)} MB`);
  assert.ok(after - before <= boundMb, `${what}: RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB (bound: +${boundMb} MB)`);
}

export const pathOf = (channel) => channelPath(channel).slice(0, -1);
export const join = (t, channel) => connectClient(t, BASE_URL, { path: pathOf(channel), transports: ["websocket"] });

/** A polling session connected to namespace / of `channel`, its connect reply read. */
export async function pollingSocket(channel) {
  const path = channelPath(channel);
  const { sid } = await openPolling(path);
  assert.equal((await push(path, sid, "40")).status, 200);
  const reply = await poll(path, sid);
  assert.match(reply.body, /^40\{/);
  return { path, sid };
}

/** `count` events from `sender` reach `receiver` once each and in order. */
export async function assertInOrder(t, channel, count = 20) {
  const sender = await join(t, channel);
  const receiver = await join(t, channel);
  const got = record(receiver, "after");
  for (let i = 0; i < count; i++) sender.emit("after", i);
  const received = await got.waitFor(count, 5000);
  assert.deepEqual(received.map(([n]) => n), [...Array(count).keys()]);
}

export async function assertServes(t) {
  const health = await request(`${BASE_URL}/healthz`);
  assert.equal(health.status, 200);
  await assertServerHealthy(t);
}

