// The platform's limit for fan-out on Durable Objects: a minimal hand-written Worker whose Durable
// Object holds hibernatable WebSockets and, on POST /emit, sends one pre-built string to each. It
// speaks just enough Engine.IO/Socket.IO (open packet, namespace connect) for the same load
// generator to drive it; nothing else.
import { DurableObject } from "cloudflare:workers";

export class Baseline extends DurableObject {
  async fetch(request) {
    if (request.headers.get("upgrade") === "websocket") {
      const { 0: client, 1: server } = new WebSocketPair();
      this.ctx.acceptWebSocket(server);
      server.send('0{"sid":"baseline","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}');
      return new Response(null, { status: 101, webSocket: client });
    }
    const { data } = await request.json();
    const frame = `42["tick",${JSON.stringify(data)}]`;
    const sockets = this.ctx.getWebSockets();
    for (const socket of sockets) socket.send(frame);
    return Response.json({ delivered: sockets.length });
  }

  async webSocketMessage(socket, message) {
    if (message === "40") socket.send('40{"sid":"baseline"}');
  }

  async webSocketClose(socket, code) {
    socket.close(code === 1005 ? 1000 : code, "bye");
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    if (request.method === "POST" && url.pathname === "/emit") {
      if (request.headers.get("authorization") !== "Bearer bench-secret") return new Response("unauthorized", { status: 401 });
    }
    return env.BASELINE.get(env.BASELINE.idFromName("chats/bench")).fetch(request);
  },
};
