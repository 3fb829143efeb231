// Subscriptions the app asked for, at the edges: one made while offline
// waits past its timeout, one cancelled before it was sent never joins,
// events that were on their way when the app left are not handed over, and
// a refused position is not kept (nor resent).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Node, connected, launchBrowser, openClient, token, waitFor } from "./harness.mjs";

const HISTORY = { WSGATE_HISTORY_NAMESPACES: "user,chat" };
const mint = () => token({ sub: "s1", org: "acme", roles: ["support"] });

/** Publish a marker to the page's own room and wait for it: what was sent before it has been handled. */
async function barrier(node, page, n) {
  await node.publish("user:s1", "marker", { n });
  await waitFor(`marker ${n}`, () => page.evaluate((n) => window.seen.some((e) => e.event === "marker" && e.data.n === n), n));
}

describe("browser subscriptions", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("a subscribe made while offline waits for the connection past its timeout", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint, options: { timeoutMs: 500 } });
      await page.evaluate(() => {
        window.subscribed = window.client.subscribe("chat:wait").then(
          (position) => ({ position }),
          (e) => ({ error: e.name }),
        );
      });
      // Longer than timeoutMs before there is any connection to send it on.
      await new Promise((r) => setTimeout(r, 1200));
      await page.evaluate(() => window.client.connect());
      const outcome = await page.evaluate(() => window.subscribed);
      assert.equal(outcome.error, undefined, "not timed out while waiting for the connection");
      assert.equal(outcome.position.offset, 0);
      await node.publish("chat:wait", "hello", {});
      await waitFor("the room's event", () => page.evaluate(() => window.seen.some((e) => e.room === "chat:wait")));
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("unsubscribe cancels a subscribe still waiting for the connection", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      const outcome = page.evaluate(() => {
        const subscribed = window.client.subscribe("chat:never").then(
          () => "subscribed",
          (e) => `${e.name} ${e.code}`,
        );
        window.client.unsubscribe("chat:never");
        return subscribed;
      });
      assert.equal(await outcome, "ClosedError closed");
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await node.publish("chat:never", "leaked", {});
      await barrier(node, page, 1);
      const seen = await page.evaluate(() => window.seen.map((e) => e.room));
      assert.deepEqual(seen, ["user:s1"], "the room was never joined");
      assert.equal(await page.evaluate(() => window.client.position("chat:never")), null);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("events on their way when the app unsubscribed are dropped and leave no position", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await page.evaluate(() => window.client.subscribe("chat:late"));
      // In one task of the page: three events are published (synchronous
      // requests to the API), given time to arrive, and the app
      // unsubscribes; the events are handled only after that task.
      await page.evaluate((apiKey) => {
        for (let n = 1; n <= 3; n++) {
          const request = new XMLHttpRequest();
          request.open("POST", "/api/v1/publish", false);
          request.setRequestHeader("authorization", `Bearer ${apiKey}`);
          request.setRequestHeader("content-type", "application/json");
          request.send(JSON.stringify({ rooms: ["chat:late"], event: "late", data: { n } }));
          if (request.status !== 202) throw new Error(`publish answered ${request.status}`);
        }
        const end = Date.now() + 1000;
        while (Date.now() < end);
        window.client.unsubscribe("chat:late");
      }, node.apiKey);
      await barrier(node, page, 1);
      assert.deepEqual(await page.evaluate(() => window.seen.filter((e) => e.room === "chat:late")), []);
      assert.equal(await page.evaluate(() => window.client.position("chat:late")), null);
      assert.deepEqual(await page.evaluate(() => Object.keys(window.client.positions())), ["user:s1"]);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("a refused position is dropped: forbidden forgets it, one ahead of the room joins afresh with a reset", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const { positions } = await node.publish("chat:ahead", "one", {});
      const room = positions["chat:ahead"];
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      await page.evaluate(() => window.client.connect());
      await connected(page);

      const forbidden = await page.evaluate(() =>
        window.client.subscribe("secret:1", { since: { offset: 3, epoch: "1" } }).then(
          () => "subscribed",
          (e) => `${e.name} ${e.code}`,
        ),
      );
      assert.equal(forbidden, "ReplyError forbidden");
      assert.equal(await page.evaluate(() => window.client.position("secret:1")), null);

      // Ahead of the room (e.g. a Redis restored from an older backup).
      const ahead = await page.evaluate(
        (epoch) =>
          window.client.subscribe("chat:ahead", { since: { offset: 99, epoch } }).then(
            (position) => ({ position }),
            (e) => ({ error: `${e.name} ${e.code}` }),
          ),
        room.epoch,
      );
      assert.deepEqual(ahead, { position: { offset: 1, epoch: room.epoch } });
      const resets = await page.evaluate(() => window.resets.map((r) => [r.room, r.position]));
      assert.deepEqual(resets, [["chat:ahead", { offset: 1, epoch: room.epoch }]]);
      await node.publish("chat:ahead", "two", {});
      const got = await waitFor("the next event", async () =>
        (await page.evaluate(() => window.seen)).find((e) => e.room === "chat:ahead"),
      );
      assert.equal(got.offset, 2);
      await page.close();
    } finally {
      await node.stop();
    }
  });
});
