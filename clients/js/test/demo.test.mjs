// The demo page (dev config only): it loads /v1/client.js, connects with a
// token from /dev/token, and shows an event published through the API in
// its log. The screenshot is kept under target/browser-tests/.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Node, artifactDir, launchBrowser, waitFor } from "./harness.mjs";

describe("demo page", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("connects, lists its rooms with offsets and logs an event published through the API", async () => {
    const node = await Node.start({ devConfig: true });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const pageErrors = [];
      page.on("pageerror", (err) => pageErrors.push(err.message));
      await page.goto(node.http("/"));
      await waitFor("the demo to connect", async () => (await page.textContent("#state")) === "connected");
      await node.publish("user:42", "order:updated", { id: 7, status: "shipped" });
      await waitFor("the event in the log", async () =>
        (await page.textContent("#log")).includes('user:42 #1 order:updated {"id":7,"status":"shipped"}'),
      );
      const rooms = await page.$$eval("#rooms tr", (rows) => rows.map((r) => r.textContent));
      assert.ok(rooms.some((r) => r.startsWith("user:421")), `user:42 at offset 1: ${rooms}`);
      assert.ok(rooms.some((r) => r.startsWith("org:acme")), `${rooms}`);

      // Publishing from the page's form reaches the page itself (echo).
      await page.fill('#publish input[name="room"]', "chat:lobby");
      await page.fill('#subscribe input[name="room"]', "chat:lobby");
      await page.click('#subscribe button');
      await waitFor("subscribed to chat:lobby", async () => (await page.textContent("#log")).includes("subscribed chat:lobby"));
      await page.click('#publish button');
      await waitFor("its own message in the log", async () =>
        (await page.textContent("#log")).includes('chat:lobby #1 message {"text":"hello"} from 42'),
      );
      const screenshot = path.join(artifactDir(), "demo.png");
      await page.screenshot({ path: screenshot, fullPage: true });
      assert.deepEqual(pageErrors, []);
      await page.close();
    } finally {
      await node.stop();
    }
  });
});
