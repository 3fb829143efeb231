// Recovery in the browser: a 1012 drain of one of two nodes while events
// flow (the page ends with every offset exactly once), `reset` after Redis
// restarts without its data, and a page reload that resumes the token's own
// room from a stored position.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Node, Proxy, Redis, assertAllOffsets, connected, launchBrowser, openClient, token, waitFor } from "./harness.mjs";

describe("browser recovery", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("a 1012 drain of one of two nodes: every page ends with every offset exactly once", async () => {
    const redis = await Redis.start();
    const env = { WSGATE_HISTORY_NAMESPACES: "org", WSGATE_DRAIN_S: "2" };
    const a = await Node.start({ redis, env });
    const b = await Node.start({ redis, env });
    const proxy = await Proxy.start([a, b]);
    try {
      const pages = [];
      for (let i = 0; i < 6; i++) {
        const page = await openClient(browser, {
          origin: b,
          wsUrl: proxy.wsUrl,
          mint: () => token({ sub: `p${i}`, org: "drain" }),
        });
        await page.evaluate(() => window.client.connect());
        await connected(page);
        pages.push(page);
      }
      const onA = await a.metric("wsgate_connections");
      assert.ok(onA >= 1, `the proxy spread the pages over both nodes (${onA} on A)`);

      // A steady publisher (≥ 100 events/s) through the surviving node.
      let published = 0;
      let publishing = true;
      const publisher = (async () => {
        while (publishing) {
          const started = Date.now();
          await b.publish("org:drain", "tick", { n: published + 1 });
          published += 1;
          await new Promise((r) => setTimeout(r, Math.max(0, 8 - (Date.now() - started))));
        }
      })();
      await waitFor("some events before the drain", () => published >= 50);
      await a.terminate();
      await waitFor("every page back on B", async () => (await b.metric("wsgate_connections")) === pages.length);
      await waitFor("some events after the drain", async () => published >= 50 + 300);
      publishing = false;
      await publisher;

      for (const page of pages) {
        await waitFor("the page to catch up", () =>
          page.evaluate((n) => window.seen.filter((e) => e.room === "org:drain").length >= n, published),
        );
        await assertAllOffsets(page, "org:drain", published, assert);
        assert.deepEqual(await page.evaluate(() => window.resets), []);
      }
      const drained = await Promise.all(
        pages.map((p) => p.evaluate(() => window.states.some((s) => s.code === 1012))),
      );
      assert.equal(drained.filter(Boolean).length, onA, "the pages that were on A saw 1012");
      for (const page of pages) await page.close();
    } finally {
      await proxy.stop();
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });

  it("emits reset when Redis restarts without its data, then continues in the new epoch", async () => {
    const redis = await Redis.start({ persistent: false });
    const node = await Node.start({ redis, env: { WSGATE_HISTORY_NAMESPACES: "org" } });
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "r1", org: "lost" }),
        options: { minReconnectDelayMs: 100 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      for (let n = 1; n <= 3; n++) await node.publish("org:lost", "before", { n });
      await waitFor("three events", () => page.evaluate(() => window.seen.length === 3));
      const oldEpoch = await page.evaluate(() => window.client.position("org:lost").epoch);

      await redis.restart();
      await waitFor("reset for org:lost", () =>
        page.evaluate(() => window.resets.some((r) => r.room === "org:lost")),
      );
      await connected(page);
      await waitFor("the node ready again", async () => (await fetch(node.http("/ready"))).status === 200);
      await node.publish("org:lost", "after", { n: 4 });
      const last = await waitFor("the event after the restart", async () =>
        (await page.evaluate(() => window.seen)).find((e) => e.event === "after"),
      );
      assert.notEqual(last.epoch, oldEpoch);
      assert.equal(last.offset, 1, "a new epoch starts again at 1");
      const position = await page.evaluate(() => window.client.position("org:lost"));
      assert.deepEqual(position, { offset: 1, epoch: last.epoch });
      await page.close();
    } finally {
      await node.stop();
      await redis.stop();
    }
  });

  it("a reloaded page resumes the token's own room from its stored position, with nothing lost", async () => {
    const node = await Node.start({ env: { WSGATE_HISTORY_NAMESPACES: "user" } });
    try {
      const mint = () => token({ sub: "reload" });
      const first = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      await first.evaluate(() => window.client.connect());
      await connected(first);
      for (let n = 1; n <= 3; n++) await node.publish("user:reload", "before", { n });
      await waitFor("three events", () => first.evaluate(() => window.seen.length === 3));
      const stored = await first.evaluate(() => window.client.position("user:reload"));
      await first.close();

      // Published while no page is open.
      for (let n = 4; n <= 6; n++) await node.publish("user:reload", "away", { n });

      // The reloaded page gives the stored position back before its first
      // connection, when it cannot know user:reload is the token's room.
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      const subscribed = page.evaluate(
        (since) =>
          window.client.subscribe("user:reload", { since }).then(
            (position) => ({ position }),
            (e) => ({ error: `${e.name} ${e.code} ${e.message}` }),
          ),
        stored,
      );
      await page.evaluate(() => window.client.connect());
      const outcome = await subscribed;
      assert.equal(outcome.error, undefined, "the token's room is resumed, not subscribed again");
      assert.equal(outcome.position.epoch, stored.epoch);
      await node.publish("user:reload", "live", { n: 7 });
      await waitFor("the live event", () => page.evaluate(() => window.seen.some((e) => e.event === "live")));
      const offsets = await page.evaluate(() => window.seen.map((e) => e.offset));
      assert.deepEqual(offsets, [4, 5, 6, 7], "the missed events, once and in order, then the live one");
      assert.deepEqual(await page.evaluate(() => window.resets), []);
      const welcome = await page.evaluate(() => window.client.session.recovered);
      assert.deepEqual(welcome, { "user:reload": true });
      await page.close();
    } finally {
      await node.stop();
    }
  });
});
