// The fault suite: each attack of the hardening review, replayed against the server under test,
// bounded in count and time, on 127.0.0.1. After each, the server must hold: healthy clients of the
// same channel got every event in order, `/healthz` answers, a new client connects, and (natively,
// where the process is known) its memory stayed under a stated bound (tests/lib/fault.js).
//
// The HTTP layer, natively (on Cloudflare the platform owns it).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

import { BASE_URL, TARGET, channelPath, uniqueId } from "../lib/config.js";
import { assertServes, pollingSocket } from "../lib/fault.js";
import { poll, request } from "../lib/polling.js";
import { sleep } from "../lib/wait.js";

describe("fault suite: http", () => {
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
