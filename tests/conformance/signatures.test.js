// The README's code, run as written: the signature checks in Node and in Python accept a real call
// from Switchboard and refuse a forged signature, an altered body and an old timestamp; the Node
// backend example answers FoalTS's create product.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { pathToFileURL } from "node:url";

import { BASE_URL, channelPath, uniqueId } from "../lib/config.js";
import { connectClient } from "../lib/client.js";
import { sleep } from "../lib/wait.js";
import { BACKEND_PORTS, WEBHOOK_SECRET, startBackend } from "../lib/backend.js";

const README = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const workdir = mkdtempSync(joinPath(tmpdir(), "switchboard-readme-"));
after(() => rmSync(workdir, { recursive: true, force: true }));

/** The code block that follows `<!-- snippet: name -->` in the README. */
function snippet(name) {
  const match = README.match(new RegExp(`<!-- snippet: ${name} -->\\n\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``));
  assert.ok(match, `README has the ${name} snippet`);
  return match[1];
}

/** A real call: the connect hook's, captured by a backend on the members/:team port. */
async function realCall(t) {
  const backend = await startBackend(t, BACKEND_PORTS.members, () => ({ body: { allow: true } }));
  await connectClient(t, BASE_URL, { path: channelPath(`members/${uniqueId()}`).slice(0, -1), transports: ["websocket"] });
  const [call] = await backend.waitForCalls(1);
  await backend.close();
  return { headers: call.headers, raw: call.raw };
}

/** The variants each snippet must judge: [name, headers, raw body, expected]. */
function cases(call) {
  const flip = (signature) => signature.slice(0, -1) + (signature.endsWith("0") ? "1" : "0");
  const old = Math.floor(Date.now() / 1000) - 3600;
  const resigned = `v1=${createHmac("sha256", WEBHOOK_SECRET).update(`${old}.`).update(call.raw).digest("hex")}`;
  return [
    ["the real call", call.headers, call.raw, true],
    ["a forged signature", { ...call.headers, "x-switchboard-signature": flip(call.headers["x-switchboard-signature"]) }, call.raw, false],
    ["another secret's signature", { ...call.headers, "x-switchboard-signature": `v1=${createHmac("sha256", "guess").update(`${call.headers["x-switchboard-timestamp"]}.`).update(call.raw).digest("hex")}` }, call.raw, false],
    ["an altered body", call.headers, Buffer.concat([call.raw, Buffer.from(" ")]), false],
    ["an old timestamp, correctly signed", { ...call.headers, "x-switchboard-timestamp": String(old), "x-switchboard-signature": resigned }, call.raw, false],
    ["no signature", { "x-switchboard-timestamp": call.headers["x-switchboard-timestamp"] }, call.raw, false],
  ];
}

test("the README's Node snippet accepts a real call and refuses forgeries and replays", async (t) => {
  const file = joinPath(workdir, "verify.mjs");
  writeFileSync(file, snippet("verify-node"));
  const { verifySwitchboard } = await import(pathToFileURL(file));
  for (const [name, headers, raw, expected] of cases(await realCall(t))) {
    assert.equal(verifySwitchboard(WEBHOOK_SECRET, headers, raw), expected, name);
  }
});

test("the README's Python snippet accepts a real call and refuses forgeries and replays", async (t) => {
  const file = joinPath(workdir, "verify.py");
  const harness = `
import base64, json, sys
for case in json.load(sys.stdin):
    print(json.dumps(verify_switchboard(case["secret"], case["headers"], base64.b64decode(case["body"]))))
`;
  writeFileSync(file, snippet("verify-python") + harness);
  const variants = cases(await realCall(t));
  const input = variants.map(([, headers, raw]) => ({ secret: WEBHOOK_SECRET, headers, body: raw.toString("base64") }));
  const run = spawnSync("python3", [file], { input: JSON.stringify(input), encoding: "utf8", timeout: 20_000 });
  assert.equal(run.status, 0, run.stderr);
  const results = run.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(
    variants.map(([name], index) => [name, results[index]]),
    variants.map(([name, , , expected]) => [name, expected]),
  );
});

test("the README's Node backend answers FoalTS's create product", async (t) => {
  const file = joinPath(workdir, "backend.mjs");
  // The example as written, on the port the conformance configuration gives shop/:id.
  const code = snippet("verify-node") + snippet("backend-node").replace(".listen(8080)", `.listen(${BACKEND_PORTS.shop}, "127.0.0.1")`);
  writeFileSync(file, code);
  const child = spawn(process.execPath, [file], { env: { ...process.env, WEBHOOK_SECRET }, stdio: ["ignore", "ignore", "pipe"] });
  t.after(() => child.kill());
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  // Wait until it listens.
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`http://127.0.0.1:${BACKEND_PORTS.shop}/`, { method: "POST" }).then(() => true, () => false);
    if (up) break;
    await sleep(50);
  }
  const socket = await connectClient(t, BASE_URL, { path: channelPath(`shop/${uniqueId()}`).slice(0, -1), transports: ["websocket"] });
  const response = await new Promise((resolve, reject) =>
    socket.timeout(5000).emit("create product", { name: "product 1" }, (err, answer) => (err ? reject(err) : resolve(answer))),
  );
  assert.deepEqual(response, { status: "ok", data: { id: 1, name: "product 1" } }, stderr);
});
