// The static folder of wrangler.toml's [assets] and socket.io-client's bundle, as served by the
// server running the default configuration: natively by the binary, on the edge by Workers Static
// Assets and the Worker.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import { DEFAULT_URL } from "../lib/config.js";
import { request } from "../lib/polling.js";

/** A GET whose path is sent exactly as written (fetch would resolve "..").  */
function rawGet(path) {
  const { hostname, port } = new URL(DEFAULT_URL);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path, method: "GET", timeout: 3000 }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

const CLIENT_FILES = [
  "socket.io.js",
  "socket.io.js.map",
  "socket.io.min.js",
  "socket.io.min.js.map",
  "socket.io.esm.min.js",
  "socket.io.esm.min.js.map",
  "socket.io.msgpack.min.js",
  "socket.io.msgpack.min.js.map",
];

describe("the static folder", () => {
  test("files are served at their paths with their content types; / and /dir/ are index.html", async () => {
    const page = await request(`${DEFAULT_URL}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type"), /^text\/html/);
    assert.match(page.body, /\/socket\.io\/socket\.io\.js/);
    const style = await request(`${DEFAULT_URL}/chat.css`);
    assert.equal(style.status, 200);
    assert.match(style.headers.get("content-type"), /^text\/css/);
    const script = await request(`${DEFAULT_URL}/chat.js`);
    assert.match(script.headers.get("content-type"), /javascript/);
    const tutorial = await request(`${DEFAULT_URL}/tutorial/`);
    assert.equal(tutorial.status, 200);
    assert.match(tutorial.body, /socket\.emit\('chat message'/);
    assert.equal((await request(`${DEFAULT_URL}/no-such-file.txt`)).status, 404);
  });

  test("caches must revalidate", async () => {
    const page = await request(`${DEFAULT_URL}/chat.css`);
    assert.match(page.headers.get("cache-control") ?? "", /max-age=0/);
    assert.ok(page.headers.get("etag") || page.headers.get("last-modified"), "a validator for revalidation");
  });

  test("a path that leaves the folder is refused", async () => {
    for (const path of ["/../wrangler.toml", "/%2e%2e/wrangler.toml", "/tutorial/../../wrangler.toml", "/..%2fwrangler.toml"]) {
      const response = await rawGet(path);
      assert.ok(!response.body.includes("[vars]"), `${path} served a file from outside the folder`);
      assert.notEqual(response.status, 200, `${path} answered 200`);
    }
  });
});

describe("socket.io-client's bundle", () => {
  test("every file socket.io serves is served, with socket.io's types and cache validation", async () => {
    for (const file of CLIENT_FILES) {
      const response = await request(`${DEFAULT_URL}/socket.io/${file}`);
      assert.equal(response.status, 200, file);
      const type = file.endsWith(".map") ? /^application\/json/ : /^application\/javascript/;
      assert.match(response.headers.get("content-type"), type, file);
      assert.ok(response.body.length > 1000, `${file} is ${response.body.length} bytes`);
      const etag = response.headers.get("etag");
      assert.match(etag, /^"\d+\.\d+\.\d+"$/, `${file} etag ${etag}`);
      const again = await request(`${DEFAULT_URL}/socket.io/${file}`, { headers: { "if-none-match": etag } });
      assert.equal(again.status, 304, `${file} revalidated`);
    }
    const minified = await request(`${DEFAULT_URL}/socket.io/socket.io.min.js`);
    assert.match(minified.body, /sourceMappingURL=socket\.io\.min\.js\.map/);
  });
});
