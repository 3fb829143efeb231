// SSE in the browser's own EventSource: it reads events, and when its node
// goes away it reconnects through the load balancer to a new node,
// sends Last-Event-ID, and ends with every offset exactly once.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Node, Proxy, Redis, launchBrowser, token, waitFor } from "./harness.mjs";

describe("SSE in Chromium", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("EventSource resumes from Last-Event-ID after its node is replaced", async () => {
    const redis = await Redis.start();
    const env = { WSGATE_HISTORY_NAMESPACES: "org,user" };
    const first = await Node.start({ redis, env });
    const proxy = await Proxy.start([first]);
    let second;
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${proxy.port}/health`);
      const sseToken = token({ sub: "es", org: "sse" });
      await page.evaluate((sseToken) => {
        window.seen = [];
        window.opens = 0;
        const source = new EventSource(`/v1/sse?token=${sseToken}`);
        source.onopen = () => (window.opens += 1);
        source.addEventListener("wsgate:welcome", (e) => {
          window.welcome = JSON.parse(e.data);
          window.welcomes = (window.welcomes ?? 0) + 1;
        });
        source.onerror = () => (window.errors = (window.errors ?? 0) + 1);
        source.addEventListener("tick", (e) => {
          const frame = JSON.parse(e.data);
          window.seen.push(frame.offset);
          window.lastId = e.lastEventId;
        });
        window.source = source;
      }, sseToken);
      await waitFor("the stream open", () => page.evaluate(() => window.welcome !== undefined));

      let published = 0;
      const publish = async (node, count) => {
        for (let i = 0; i < count; i++) {
          await node.publish("org:sse", "tick", { n: ++published });
        }
      };
      await publish(first, 20);
      await waitFor("20 events", () => page.evaluate(() => window.seen.length === 20));

      // The load balancer takes the node out of rotation as it drains; a
      // new node joins; events go on meanwhile.
      second = await Node.start({ redis, env });
      proxy.backends = [second];
      await first.terminate();
      await publish(second, 30);
      await waitFor("the stream back, with every event", () => page.evaluate(() => window.seen.length >= 50), {
        timeoutMs: 30000,
      });
      await publish(second, 10);
      await waitFor("live events after the resume", () => page.evaluate(() => window.seen.length >= 60));
      const { seen, opens, welcome, welcomes } = await page.evaluate(() => ({
        seen: window.seen,
        opens: window.opens,
        welcome: window.welcome,
        welcomes: window.welcomes,
        errors: window.errors,
      }));
      assert.deepEqual(seen, Array.from({ length: 60 }, (_, i) => i + 1), "every offset once, in order");
      // One reconnect; the browser may also retry once while the old
      // node's connection winds down (an open with no welcome).
      assert.ok(opens >= 2, `reconnected: ${opens} opens`);
      assert.equal(welcomes, 2, "two streams: before and after the node was replaced");
      assert.equal(welcome.recovered["org:sse"], true, "the second welcome says it recovered");
      await page.close();
    } finally {
      await proxy.stop();
      await first.stop();
      await second?.stop();
      await redis.stop();
    }
  });
});
