// A Durable Object that closes hibernatable WebSockets from different handlers, one variant per
// object. The client (repro.mjs) opens /ws?v=<variant>&room=<unique>&role=a|b and measures how long
// the TCP connection outlives the server's close frame. See docs/edge-close.md.
import { DurableObject } from "cloudflare:workers";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.events = [];
  }

  note(what, extra = {}) {
    this.events.push({ what, at: Date.now(), ...extra });
  }

  variantOf(ws) {
    const tag = this.ctx.getTags(ws).find((t) => t.startsWith("v:"));
    return tag ? tag.slice(2) : "";
  }

  // Every server-initiated close of socket A goes through here; `v` picks what surrounds it.
  async closeA(ws, v) {
    if (v === "alarm-setalarm-then-close") await this.ctx.storage.setAlarm(Date.now() + 60_000);
    if (v === "alarm-put-then-close") await this.ctx.storage.put("k", Date.now());
    if (v === "alarm-await1-close") await sleep(1);
    if (v === "alarm-await10-close") await sleep(10);
    if (v === "alarm-send-await1-close") {
      ws.send("x");
      await sleep(1);
    }
    ws.close(1000, "bye");
    this.note("closed", { readyState: ws.readyState });
    if (v === "alarm-close-then-setalarm") await this.ctx.storage.setAlarm(Date.now() + 60_000);
    if (v === "alarm-close-then-put") await this.ctx.storage.put("k", Date.now());
    if (v === "alarm-close-abort-0") this.ctx.abort("reset after close");
    if (v === "alarm-close-abort-200") {
      await sleep(200);
      this.ctx.abort("reset after close");
    }
  }

  async fetch(request) {
    const url = new URL(request.url);
    const v = url.searchParams.get("v") ?? "";
    if (request.headers.get("upgrade") === "websocket") {
      const role = url.searchParams.get("role") ?? "a";
      const { 0: client, 1: server } = new WebSocketPair();
      if (v === "nonhib-settimeout-close") {
        server.accept();
        setTimeout(() => server.close(1000, "bye"), 300);
      } else {
        if (v === "alarm-close-after-automsg") {
          this.ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
        }
        this.ctx.acceptWebSocket(server, [role, "v:" + v]);
        if (role === "a" && v.startsWith("alarm")) await this.ctx.storage.setAlarm(Date.now() + 300);
      }
      return new Response(null, { status: 101, webSocket: client });
    }
    if (url.pathname === "/close-now") {
      for (const ws of this.ctx.getWebSockets("a")) await this.closeA(ws, v);
      return new Response("closed");
    }
    if (url.pathname === "/report") {
      return Response.json({ events: this.events, sockets: this.ctx.getWebSockets().length });
    }
    return new Response("not found", { status: 404 });
  }

  async alarm() {
    for (const ws of this.ctx.getWebSockets("a")) await this.closeA(ws, this.variantOf(ws));
  }

  async webSocketMessage(ws, message) {
    const v = this.variantOf(ws);
    if (message === "close-me") {
      if (v === "own-message-settimeout-close") setTimeout(() => this.closeA(ws, v), 200);
      else await this.closeA(ws, v);
    }
    if (message === "close-a") for (const a of this.ctx.getWebSockets("a")) await this.closeA(a, v);
  }

  async webSocketClose(ws, code, reason, wasClean) {
    const v = this.variantOf(ws);
    this.note("webSocketClose", { code, reason, wasClean, readyState: ws.readyState });
    if (v === "alarm-close-wsclose-close" || v === "client-close-reply") ws.close(1000, "bye");
    if (v === "alarm-close-wsclose-await-close") {
      await sleep(1);
      ws.close(1000, "bye");
    }
    if (v === "alarm-close-gc") {
      // Garbage to provoke V8 collections once nothing references the closed socket any more.
      setTimeout(() => {
        let n = 0;
        for (let i = 0; i < 300; i++) n += new Array(100_000).fill(i).length;
        this.note("garbage", { n });
      }, 10);
    }
  }

  async webSocketError(ws, error) {
    this.note("webSocketError", { error: String(error) });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    const room = url.searchParams.get("room") ?? "default";
    return env.ROOM.get(env.ROOM.idFromName(room)).fetch(request);
  },
};
