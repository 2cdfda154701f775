// Engine.IO v4 protocol conformance, over HTTP long-polling and WebSocket.
//
// Runs against the raw Engine.IO echo endpoint (/engine.io/) and, for
// everything that does not need an echo, again against the Socket.IO default
// channel (/socket.io/), as the published Socket.IO v5 test suite does.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { CONF, ENGINE_PATH, channelPath, endpointUrl } from "../lib/config.js";
import { sleep } from "../lib/wait.js";
import { rawSocket, wsUrl, parseOpen, openEngineWs } from "../lib/raw-ws.js";
import { request, openPolling, poll, push, pollingUrl } from "../lib/polling.js";
import { decodeFrame, SIO } from "../lib/sio-packet.js";
import { assertEngineError } from "../lib/assertions.js";

// Closes that must be caused by the packet under test, not by a timeout: on
// /socket.io/ an idle connection is also closed after connectTimeout.
const PROMPT_CLOSE = CONF.connectTimeout - 300;

const HANDSHAKE_KEYS = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"];

function assertHandshake(handshake, upgrades) {
  assert.deepEqual(Object.keys(handshake).sort(), HANDSHAKE_KEYS, `handshake keys: ${JSON.stringify(handshake)}`);
  assert.equal(typeof handshake.sid, "string");
  assert.ok(handshake.sid.length > 0, "empty sid");
  assert.deepEqual(handshake.upgrades, upgrades);
  assert.equal(handshake.pingInterval, CONF.pingInterval);
  assert.equal(handshake.pingTimeout, CONF.pingTimeout);
  assert.equal(handshake.maxPayload, CONF.maxPayload);
}

/** After an upgrade, proves the WebSocket carries the session. */
async function assertSessionWorksOverWs(path, ws) {
  if (path === ENGINE_PATH) {
    ws.send("4hello");
    assert.equal(await ws.next(), "4hello");
  } else {
    ws.send("40");
    const reply = decodeFrame(await ws.next());
    assert.equal(reply.type, SIO.CONNECT);
    assert.equal(typeof reply.data.sid, "string");
  }
}

for (const path of [ENGINE_PATH, channelPath()]) {
  describe(`Engine.IO on ${path}`, () => {
    // Spec: the server answers a GET without sid with an open packet
    // "0{sid, upgrades, pingInterval, pingTimeout, maxPayload}". Polling
    // sessions may upgrade to websocket; WebSocket sessions have no upgrades.
    // Missing/invalid mandatory query parameters → HTTP 400 (JSON
    // {code, message} like the Node server), or a refused WebSocket.
    describe("handshake", () => {
      test("polling handshake returns an open packet with exactly the five handshake fields", async () => {
        const response = await request(endpointUrl(path, { transport: "polling" }));
        assert.equal(response.status, 200);
        assert.ok(response.body.startsWith("0"), `body: ${response.body}`);
        assertHandshake(JSON.parse(response.body.slice(1)), ["websocket"]);
      });

      test("WebSocket handshake returns an open packet with no upgrades", async (t) => {
        const ws = rawSocket(t, wsUrl(path));
        const handshake = parseOpen(await ws.next());
        assertHandshake(handshake, []);
      });

      test("each handshake gets a distinct sid", async () => {
        const a = await openPolling(path);
        const b = await openPolling(path);
        assert.notEqual(a.sid, b.sid);
      });

      test("missing or non-numeric EIO parameter → 400 code 5 (unsupported protocol version)", async () => {
        assertEngineError(await request(endpointUrl(path, { EIO: undefined, transport: "polling" })), 5);
        assertEngineError(await request(endpointUrl(path, { EIO: "abc", transport: "polling" })), 5);
      });

      test("EIO=3 → 400 code 5 (only protocol v4 is supported)", async () => {
        assertEngineError(await request(endpointUrl(path, { EIO: 3, transport: "polling" })), 5);
      });

      test("missing or unknown transport → 400 code 0 (transport unknown)", async () => {
        assertEngineError(await request(endpointUrl(path, {})), 0);
        assertEngineError(await request(endpointUrl(path, { transport: "abc" })), 0);
      });

      test("POST or PUT handshake → 400 code 2 (bad handshake method)", async () => {
        const url = endpointUrl(path, { transport: "polling" });
        assertEngineError(await request(url, { method: "POST", body: "" }), 2);
        assertEngineError(await request(url, { method: "PUT", body: "" }), 2);
      });

      test("plain HTTP GET (no Upgrade) with transport=websocket → 400 code 3 (bad request)", async () => {
        assertEngineError(await request(endpointUrl(path, { transport: "websocket" })), 3);
      });

      test("WebSocket with missing or invalid EIO is refused", async (t) => {
        await rawSocket(t, wsUrl(path, { EIO: undefined })).expectRefused();
        await rawSocket(t, wsUrl(path, { EIO: "abc" })).expectRefused();
        await rawSocket(t, wsUrl(path, { EIO: 3 })).expectRefused();
      });

      test("WebSocket with missing or unknown transport is refused", async (t) => {
        await rawSocket(t, wsUrl(path, { transport: undefined })).expectRefused();
        await rawSocket(t, wsUrl(path, { transport: "abc" })).expectRefused();
      });
    });

    // Spec: a request carrying an unknown sid → HTTP 400 (Node: code 1
    // "Session ID unknown").
    describe("unknown session", () => {
      test("GET with an unknown sid → 400 code 1", async () => {
        assertEngineError(await poll(path, "no-such-session-id"), 1);
      });

      test("POST with an unknown sid → 400 code 1", async () => {
        assertEngineError(await push(path, "no-such-session-id", "4hello"), 1);
      });
    });

    if (path === ENGINE_PATH) {
      // Spec: polling payloads are packets separated by \x1e, binary packets
      // base64-encoded with a "b" prefix; a POST is answered 200 "ok". Over
      // WebSocket each packet is one frame, binary sent as is. The echo
      // server sends every message back unchanged.
      describe("message echo over polling", () => {
        test("one plain-text packet", async () => {
          const { sid } = await openPolling(path);
          const pushed = await push(path, sid, "4hello");
          assert.equal(pushed.status, 200);
          assert.equal(pushed.body, "ok");
          const polled = await poll(path, sid);
          assert.equal(polled.status, 200);
          assert.equal(polled.body, "4hello");
        });

        test("several plain-text packets in one payload", async () => {
          const { sid } = await openPolling(path);
          const pushed = await push(path, sid, "4test1\x1e4test2\x1e4test3");
          assert.equal(pushed.status, 200);
          assert.equal(pushed.body, "ok");
          const polled = await poll(path, sid);
          assert.equal(polled.status, 200);
          assert.equal(polled.body, "4test1\x1e4test2\x1e4test3");
        });

        test("plain-text and base64 binary packets in one payload", async () => {
          const { sid } = await openPolling(path);
          const pushed = await push(path, sid, "4hello\x1ebAQIDBA==");
          assert.equal(pushed.status, 200);
          assert.equal(pushed.body, "ok");
          const polled = await poll(path, sid);
          assert.equal(polled.status, 200);
          assert.equal(polled.body, "4hello\x1ebAQIDBA==");
        });

        test("non-ASCII text survives the round trip", async () => {
          const { sid } = await openPolling(path);
          assert.equal((await push(path, sid, "4héllo €")).body, "ok");
          assert.equal((await poll(path, sid)).body, "4héllo €");
        });
      });

      describe("message echo over WebSocket", () => {
        test("a plain-text packet", async (t) => {
          const { socket } = await openEngineWs(t, path);
          socket.send("4hello");
          assert.equal(await socket.next(), "4hello");
        });

        test("a binary packet", async (t) => {
          const { socket } = await openEngineWs(t, path);
          socket.send(Buffer.from([1, 2, 3, 4]));
          const echoed = await socket.next();
          assert.ok(Buffer.isBuffer(echoed), `expected a binary frame, got ${JSON.stringify(echoed)}`);
          assert.deepEqual(echoed, Buffer.from([1, 2, 3, 4]));
        });
      });
    }

    // Spec: a malformed packet is a protocol error; the session is closed.
    describe("invalid packet format", () => {
      test("polling: POST of a malformed payload → 400, then the session is gone", async () => {
        const { sid } = await openPolling(path);
        const pushed = await push(path, sid, "abc");
        assert.equal(pushed.status, 400, `POST answered ${pushed.status}: ${pushed.body}`);
        assert.equal((await poll(path, sid)).status, 400);
      });

      test("WebSocket: a malformed frame closes the connection", async (t) => {
        // Pings are answered so only the malformed frame can explain the close.
        const { socket } = await openEngineWs(t, path, { autoPong: true });
        socket.send("abc");
        await socket.closed(PROMPT_CLOSE);
      });
    });

    // Spec: a client must not have two GET requests pending; if it does the
    // server answers 400 and closes the session (the pending one gets a
    // close packet). A GET aborted by the client also closes the session.
    describe("polling request misuse", () => {
      test("duplicate concurrent GET: first gets a close packet, second 400/500, session gone", async () => {
        const { sid } = await openPolling(path);
        const first = poll(path, sid);
        await sleep(50);
        const second = await poll(path, sid, { extra: { t: "dup" } });
        const firstResponse = await first;
        assert.equal(firstResponse.status, 200);
        assert.equal(firstResponse.body, "1");
        assert.ok([400, 500].includes(second.status), `second GET answered ${second.status}`);
        assert.equal((await poll(path, sid)).status, 400);
      });

      test("an aborted GET closes the session", async () => {
        const { sid } = await openPolling(path);
        const controller = new AbortController();
        const aborted = poll(path, sid, { signal: controller.signal }).catch(() => {});
        await sleep(50);
        controller.abort();
        await aborted;
        await sleep(100);
        // Well before the ping timeout: a live session would answer with a ping.
        assert.equal((await poll(path, sid)).status, 400);
      });
    });

    // Spec: the server sends a ping ("2") every pingInterval; the client
    // answers with a pong ("3") within pingTimeout or the session is closed.
    describe("heartbeat", () => {
      test("polling: three ping/pong rounds, pings pingInterval apart", async () => {
        const { sid } = await openPolling(path);
        for (let i = 0; i < 3; i++) {
          const started = Date.now();
          const polled = await poll(path, sid, { timeout: 2000 });
          assert.equal(polled.status, 200);
          assert.equal(polled.body, "2");
          assert.ok(Date.now() - started >= CONF.pingInterval - 150, `ping came after ${Date.now() - started} ms`);
          const pong = await push(path, sid, "3");
          assert.equal(pong.status, 200);
        }
      });

      test("polling: no pong → session closed after pingInterval + pingTimeout", async () => {
        const { sid } = await openPolling(path);
        await sleep(CONF.pingInterval + CONF.pingTimeout + 300);
        assert.equal((await poll(path, sid)).status, 400);
      });

      test("polling: a poll at exactly pingInterval + pingTimeout finds the session closed", async () => {
        // The published suites poll at this very moment. The deadline counts from when the ping
        // was due, not from when a (possibly late) timer sent it; several sessions at once make a
        // late timer on any of them show.
        const polls = await Promise.all(
          Array.from({ length: 8 }, async () => {
            const { sid } = await openPolling(path);
            await sleep(CONF.pingInterval + CONF.pingTimeout);
            return poll(path, sid);
          }),
        );
        assert.deepEqual(polls.map((p) => p.status), polls.map(() => 400), `bodies: ${polls.map((p) => p.body).join(" | ")}`);
      });

      test("WebSocket: after each pong the next frame is the next ping, nothing in between", async (t) => {
        // Noops are not ignored here: the protocol's ping/pong exchange has no third packet.
        // Three rounds fit in the connect timeout of /socket.io/.
        const { socket } = await openEngineWs(t, path, { ignoreNoop: false });
        for (let i = 0; i < 3; i++) {
          assert.equal(await socket.next(2000), "2", i === 0 ? "the first ping" : `the frame after pong ${i}`);
          socket.send("3");
        }
      });

      test("WebSocket: three ping/pong rounds keep the session open", async (t) => {
        const { socket } = await openEngineWs(t, path);
        for (let i = 0; i < 3; i++) {
          assert.equal(await socket.next(2000), "2");
          socket.send("3");
        }
        assert.equal(socket.closeInfo, null);
      });

      test("WebSocket: no pong → the server closes the connection", async (t) => {
        const { socket } = await openEngineWs(t, path);
        assert.equal(await socket.next(2000), "2");
        // Within pingTimeout of the unanswered ping (plus slack).
        await socket.closed(CONF.pingTimeout + 400);
      });
    });

    // Spec: a close packet ("1") from the client ends the session; a pending
    // GET is released (with a noop "6").
    describe("close", () => {
      test("polling: POST '1' releases the pending GET with '6' and ends the session", async () => {
        const { sid } = await openPolling(path);
        const pending = poll(path, sid);
        await sleep(50);
        const closing = await push(path, sid, "1");
        assert.equal(closing.status, 200);
        const released = await pending;
        assert.equal(released.status, 200);
        assert.equal(released.body, "6");
        assert.equal((await poll(path, sid)).status, 400);
      });

      test("polling: a close POST that arrives before the GET still ends that GET with a noop", async () => {
        // An orderly close, as engine.io does it: with no GET pending, the close waits for the next
        // GET, which gets "6"; after that the session is gone.
        const { sid } = await openPolling(path);
        const closing = await push(path, sid, "1");
        assert.equal(closing.status, 200);
        const released = await poll(path, sid);
        assert.equal(released.status, 200, `GET after the close answered ${released.status}: ${released.body}`);
        assert.equal(released.body, "6");
        assert.equal((await poll(path, sid)).status, 400);
      });

      test("polling: GET and close POST sent at the same time: the GET gets '6', then the session is gone", async () => {
        // The published suites' "forcefully closes the session": which request reaches the server
        // first must not matter. Several sessions at once, so both orders happen.
        const sessions = await Promise.all(Array.from({ length: 8 }, () => openPolling(path)));
        const results = await Promise.all(
          sessions.map(({ sid }) => Promise.all([poll(path, sid), push(path, sid, "1")])),
        );
        for (const [released, closing] of results) {
          assert.equal(closing.status, 200);
          assert.equal(released.status, 200, `GET answered ${released.status}: ${released.body}`);
          assert.equal(released.body, "6");
        }
        const after = await Promise.all(sessions.map(({ sid }) => poll(path, sid)));
        assert.deepEqual(after.map((p) => p.status), sessions.map(() => 400));
      });

      test("WebSocket: sending '1' makes the server close the connection", async (t) => {
        // Pings are answered so only the close packet can explain the close.
        const { socket } = await openEngineWs(t, path, { autoPong: true });
        socket.send("1");
        await socket.closed(PROMPT_CLOSE);
      });
    });

    // Spec: upgrade = WebSocket with the polling sid, "2probe" → "3probe",
    // pending GET released with noop "6", client sends "5"; from then on
    // polling requests for that sid are rejected and a second WebSocket for
    // the same sid is closed.
    describe("upgrade from polling to WebSocket", () => {
      async function upgrade(t, { withPendingGet = false } = {}) {
        const { sid } = await openPolling(path);
        const ws = rawSocket(t, wsUrl(path, { sid }), { autoPong: true });
        await ws.open();
        let pending;
        if (withPendingGet) {
          pending = poll(path, sid);
          await sleep(50);
        }
        ws.send("2probe");
        assert.equal(await ws.next(), "3probe");
        return { sid, ws, pending };
      }

      test("probe, noop for the pending GET, upgrade, then the session runs over WebSocket", async (t) => {
        const { ws, pending } = await upgrade(t, { withPendingGet: true });
        const released = await pending;
        assert.equal(released.status, 200);
        assert.equal(released.body, "6");
        ws.send("5");
        await assertSessionWorksOverWs(path, ws);
      });

      test("polling requests with the same sid are rejected after the upgrade", async (t) => {
        const { sid, ws } = await upgrade(t);
        ws.send("5");
        await sleep(100);
        assert.equal((await poll(path, sid)).status, 400);
        await assertSessionWorksOverWs(path, ws);
      });

      test("a poll sent right after the upgrade packet is refused", async (t) => {
        // No pause between "5" and the GET, as in the published suites: the GET must not be
        // answered as part of the upgrade.
        const { sid, ws } = await upgrade(t);
        ws.send("5");
        const polled = await poll(path, sid);
        assert.equal(polled.status, 400, `GET answered ${polled.status}: ${polled.body}`);
        await assertSessionWorksOverWs(path, ws);
      });

      test("a second WebSocket with the same sid, right after the upgrade, is accepted and then closed", async (t) => {
        // engine.io completes the second handshake (101) and closes that socket; a client that
        // sees an HTTP error instead reports an error event, which a plain `ws` user does not
        // expect.
        const { sid, ws } = await upgrade(t);
        ws.send("5");
        const second = rawSocket(t, wsUrl(path, { sid }), { autoPong: true });
        await second.open();
        await second.closed();
        assert.equal(second.error, null, `the second WebSocket saw an error: ${second.error?.message}`);
        assert.deepEqual(second.queue, [], "the second WebSocket got no Engine.IO packets");
        await assertSessionWorksOverWs(path, ws);
      });

      test("a second WebSocket with the same sid is closed after the upgrade", async (t) => {
        const { sid, ws } = await upgrade(t);
        ws.send("5");
        await sleep(100);
        const second = rawSocket(t, wsUrl(path, { sid }), { autoPong: true });
        await second.expectRefused();
        await assertSessionWorksOverWs(path, ws);
      });
    });
  });
}

// Switchboard routing and CORS on the polling transport.
describe("HTTP routing and CORS", () => {
  test("a channel no pattern matches → 404 with a JSON message (polling)", async () => {
    const response = await request(endpointUrl(channelPath("nope/1"), { transport: "polling" }));
    assert.equal(response.status, 404, `got ${response.status}: ${response.body}`);
    const json = JSON.parse(response.body);
    assert.equal(typeof json.message, "string");
    assert.ok(json.message.length > 0);
  });

  test("a channel no pattern matches refuses the WebSocket", async (t) => {
    await rawSocket(t, wsUrl(channelPath("nope/1"))).expectRefused();
  });

  test("a known pattern with an extra path segment is not a channel", async () => {
    const response = await request(endpointUrl(channelPath("relay/1/extra"), { transport: "polling" }));
    assert.equal(response.status, 404, `got ${response.status}: ${response.body}`);
  });

  test("with allowed_origins = [\"*\"], any page may poll, without credentials", async () => {
    for (const origin of ["http://example.com", "null"]) {
      const response = await request(pollingUrl(channelPath()), { headers: { Origin: origin } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("access-control-allow-origin"), "*");
      assert.equal(response.headers.get("access-control-allow-credentials"), null, "no cookies for any page");
    }
  });

  test("engine endpoint and error responses carry CORS headers too", async () => {
    const handshake = await request(pollingUrl(ENGINE_PATH), { headers: { Origin: "http://example.com" } });
    assert.equal(handshake.headers.get("access-control-allow-origin"), "*");
    const error = await request(pollingUrl(channelPath(), "no-such-session-id"), { headers: { Origin: "http://example.com" } });
    assert.equal(error.status, 400);
    assert.equal(error.headers.get("access-control-allow-origin"), "*");
  });

  test("OPTIONS preflight → 204 allowing GET and POST", async () => {
    const response = await request(pollingUrl(channelPath()), {
      method: "OPTIONS",
      headers: {
        Origin: "http://example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
      },
    });
    assert.equal(response.status, 204);
    const methods = (response.headers.get("access-control-allow-methods") ?? "").toUpperCase().split(/\s*,\s*/);
    assert.ok(methods.includes("GET") && methods.includes("POST"), `Access-Control-Allow-Methods: ${methods}`);
    assert.equal(response.headers.get("access-control-allow-origin"), "*");
  });
});


