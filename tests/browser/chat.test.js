// The chat example and the plain tutorial page, both served from the static folder (public/), in
// headless Chromium (Debian's package, driven by playwright-core), against the server running the
// default configuration.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

import { DEFAULT_URL, TARGET } from "../lib/config.js";
import { emit } from "../lib/api.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SCREENSHOT = path.resolve(HERE, "../../docs/chat.png");
const WAIT = 10_000;

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // The machine's network is closed: keep Chromium from phoning home.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => {
  await browser?.close();
});

/** A fresh browser profile with one page. */
async function newPage(t) {
  const context = await browser.newContext({ viewport: { width: 900, height: 560 } });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  return page;
}

/** Opens the chat example on chats/<channel> as <nick> and waits until it is online. */
async function openChat(t, channel, nick) {
  const page = await newPage(t);
  await page.goto(`${DEFAULT_URL}/#${new URLSearchParams({ channel, nick })}`);
  await page.locator("#status[data-state=online]").waitFor();
  return page;
}

const messageTexts = (page) => page.locator("#messages li:not(.system)").allTextContents();

async function waitForMessage(page, text) {
  await page.locator("#messages li", { hasText: text }).first().waitFor();
}

describe("chat example", () => {
  test("two pages in chats/1 talk; typing shows; backend emits appear; chats/2 hears nothing; reload rejoins", async (t) => {
    const alice = await openChat(t, "1", "Alice");
    const bob = await openChat(t, "1", "Bob");
    const carol = await openChat(t, "2", "Carol");

    // Each page shows who is in its channel (presence), by nickname.
    await alice.locator("#members", { hasText: "Bob" }).waitFor();
    assert.match(await alice.locator("#members").textContent(), /^Here: .*Alice.*Bob/);
    await bob.locator("#members", { hasText: "Alice" }).waitFor();
    await carol.locator("#members", { hasText: "Carol" }).waitFor();
    assert.doesNotMatch(await carol.locator("#members").textContent(), /Alice|Bob/);

    // A message typed in one page appears in both.
    await alice.fill("#text", "hello from Alice");
    await alice.press("#text", "Enter");
    await waitForMessage(alice, "hello from Alice");
    await waitForMessage(bob, "hello from Alice");

    // Typing in one page shows an indicator in the other.
    await bob.locator("#text").pressSequentially("typing so", { delay: 20 });
    await alice.locator("#typing", { hasText: "Bob is typing…" }).waitFor();
    assert.equal(await bob.locator("#typing").textContent(), "", "no indicator for one's own typing");

    // A backend emit appears in both.
    const { status, body } = await emit({ channel: "chats/1", event: "chat message", data: "posted by the backend" }, { base: DEFAULT_URL });
    assert.equal(status, 200);
    assert.equal(body.delivered, 2);
    await waitForMessage(alice, "posted by the backend");
    await waitForMessage(bob, "posted by the backend");

    // The page in chats/2 saw none of it.
    await carol.waitForTimeout(300);
    assert.deepEqual(await messageTexts(carol), []);

    // A page that reloads rejoins its channel and keeps receiving.
    await bob.reload();
    await bob.locator("#status[data-state=online]").waitFor();
    assert.equal(await bob.locator("#status").textContent(), "online in chats/1");
    await alice.fill("#text", "welcome back, Bob");
    await alice.press("#text", "Enter");
    await waitForMessage(bob, "welcome back, Bob");

    if (TARGET === "native") {
      await alice.fill("#text", "");
      await alice.screenshot({ path: SCREENSHOT });
    }

    // Bob's page goes away: once the grace for a dropped connection has passed, he is gone from
    // Alice's list.
    await bob.context().close();
    await alice.waitForFunction(() => !document.getElementById("members").textContent.includes("Bob"), null, { timeout: 15_000 });
    assert.match(await alice.locator("#members").textContent(), /Alice/);
  });
});

describe("the plain Socket.IO chat tutorial", () => {
  test("its unmodified page, served from the static folder, works against the default channel", async (t) => {
    // public/tutorial/index.html, served by the server itself (Workers Static Assets on the edge),
    // loads /socket.io/socket.io.js and connects with a plain io().
    const open = async () => {
      const page = await newPage(t);
      await page.goto(`${DEFAULT_URL}/tutorial/`);
      await page.waitForFunction(() => window.socket?.connected === true || (typeof socket !== "undefined" && socket.connected));
      return page;
    };
    const first = await open();
    const second = await open();
    await first.fill("#input", "tutorial message");
    await first.press("#input", "Enter");
    for (const page of [first, second]) {
      await page.locator("#messages li", { hasText: "tutorial message" }).waitFor();
    }
    await second.fill("#input", "and a reply");
    await second.click("#form > button");
    for (const page of [first, second]) {
      await page.locator("#messages li", { hasText: "and a reply" }).waitFor();
    }
  });
});
