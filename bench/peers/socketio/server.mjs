// Benchmark peer: a stock socket.io server speaking the same wire contract as
// Switchboard's bench channel, so bench/loadgen can drive it unchanged.
//
//   node bench/peers/socketio/server.mjs --port 4001      (env PORT as fallback)
//   ... --recovery   turns on socket.io's connectionStateRecovery (2 minutes, skipMiddlewares), for
//                    bench/storm.mjs
//
// - Engine.IO v4 / Socket.IO v5 at /socket.io/chats/bench/ (default transports)
// - client emits `tick` with any args  -> io.emit("tick", ...args) (sender included)
// - POST /emit (Bearer bench-secret) {"channel","event","data"} -> broadcast,
//   200 {"delivered": <sockets in the namespace>}; wrong secret -> 401
// - GET /healthz -> 200
//
// socket.io's defaults are kept (this is the peer as its users run it) except
// the path, maxHttpBufferSize and serveClient; ping settings are spelled out
// although they equal the defaults.
import http from "node:http";
import { Server } from "socket.io";

const SECRET = "bench-secret";
const CHANNEL = "chats/bench";
const MAX_BODY = 1e6;

function parsePort(argv, env) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port" && i + 1 < argv.length) return Number(argv[i + 1]);
    if (a.startsWith("--port=")) return Number(a.slice("--port=".length));
  }
  if (env.PORT) return Number(env.PORT);
  return 4001;
}

const port = parsePort(process.argv.slice(2), process.env);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("usage: node server.mjs --port <n>");
  process.exit(2);
}

function reply(res, status, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

let io;

const httpServer = http.createServer((req, res) => {
  const path = (req.url || "/").split("?", 1)[0];
  if (path === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
    return reply(res, 200, { ok: true });
  }
  if (path === "/emit") {
    if (req.method !== "POST") return reply(res, 405, { error: "method not allowed" });
    if (req.headers.authorization !== `Bearer ${SECRET}`) {
      req.resume();
      return reply(res, 401, { error: "unauthorized" });
    }
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (c) => {
      size += c.length;
      if (size > MAX_BODY) tooLarge = true;
      else chunks.push(c);
    });
    req.on("end", () => {
      if (tooLarge) return reply(res, 413, { error: "payload too large" });
      let msg;
      try {
        msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return reply(res, 400, { error: "expected {channel, event, data}" });
      }
      if (msg === null || typeof msg !== "object" || typeof msg.event !== "string") {
        return reply(res, 400, { error: "expected {channel, event, data}" });
      }
      if (msg.channel !== CHANNEL) return reply(res, 404, { error: "unknown channel" });
      const nsp = io.of("/");
      const delivered = nsp.sockets.size;
      nsp.emit(msg.event, msg.data);
      return reply(res, 200, { delivered });
    });
    req.on("error", () => res.destroy());
    return;
  }
  reply(res, 404, { error: "not found" });
});

const recovery = process.argv.includes("--recovery");

io = new Server(httpServer, {
  ...(recovery ? { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true } } : {}),
  path: "/socket.io/chats/bench",
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("tick", (...args) => {
    // An ack callback is not payload: drop it rather than broadcasting with acks.
    if (typeof args[args.length - 1] === "function") args.pop();
    io.emit("tick", ...args);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`ready on 127.0.0.1:${httpServer.address().port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
