import WebSocket from "ws";
const t0 = Date.now();
const ws = new WebSocket(process.argv[2]);
ws.on("message", (d) => { console.log(Date.now() - t0, "msg", d.toString()); if (process.argv[3] && d.toString().startsWith("0")) ws.send(process.argv[3]); });
ws.on("close", (c, r) => { console.log(Date.now() - t0, "close", c, r.toString()); process.exit(0); });
setTimeout(() => { console.log("timeout; readyState", ws.readyState); process.exit(1); }, 3000);
