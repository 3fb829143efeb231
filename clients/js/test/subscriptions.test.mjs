// Subscriptions the app asked for, at the edges: one made while offline
// waits past its timeout, one cancelled before it was sent never joins,
// events that were on their way when the app left are not handed over, a
// refused position is not kept (nor resent), a corrupt one is refused before
// it can spoil the auth frame, `internal` is retried, a position passed by
// the room is a reset, and one command that cannot be encoded fails alone.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Node, Redis, connected, launchBrowser, openClient, token, waitFor } from "./harness.mjs";

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

  it("refuses a corrupt stored position or a bad room name itself, and the client still connects", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      const refusals = await page.evaluate(() => {
        // Bounded: refused here, they must not wait for a connection.
        const waiting = () => new Promise((resolve) => setTimeout(() => resolve("waiting"), 2000));
        const outcome = (promise) =>
          Promise.race([promise.then(() => "subscribed", (e) => `${e.name} ${e.code}`), waiting()]);
        return Promise.all([
          outcome(window.client.subscribe("chat:stored", { since: { offset: undefined, epoch: "1" } })),
          outcome(window.client.subscribe("chat:stored", { since: { offset: 3, epoch: "" } })),
          outcome(window.client.subscribe("Chat Room", {})),
        ]);
      });
      assert.deepEqual(refusals, Array(3).fill("GatewayError bad_request"));
      await page.evaluate(() => window.client.connect());
      await connected(page);
      const after = await page.evaluate(() => ({
        connects: window.client.stats.connects,
        positions: Object.keys(window.client.positions()),
        closes: window.states.filter((s) => s.code !== undefined).length,
      }));
      assert.deepEqual(after, { connects: 1, positions: ["user:s1"], closes: 0 });
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("keeps a subscription the server could not take yet (internal) and joins it when it can", async () => {
    const redis = await Redis.start();
    const node = await Node.start({ redis, env: HISTORY });
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint,
        options: { minReconnectDelayMs: 200, maxReconnectDelayMs: 1000 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await redis.kill();
      const refused = await page.evaluate(() =>
        window.client.subscribe("chat:later").then(
          () => "subscribed",
          (e) => `${e.name} ${e.code}`,
        ),
      );
      assert.equal(refused, "ReplyError internal");
      await redis.boot();
      await waitFor("the node ready again", async () => (await fetch(node.http("/ready"))).status === 200);
      await waitFor("the subscription joined", async () => {
        await node.publish("chat:later", "hello", {});
        return page.evaluate(() => window.seen.some((e) => e.room === "chat:later"));
      });
      assert.ok(await page.evaluate(() => window.client.position("chat:later")), "the room is tracked");
      await page.close();
    } finally {
      await node.stop();
      await redis.stop();
    }
  });

  it("a position given while a plain subscribe is on its way, and passed by the room, is reported as a reset", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      let published;
      for (let n = 1; n <= 3; n++) published = await node.publish("chat:passed", "before", { n });
      const epoch = published.positions["chat:passed"].epoch;
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      const position = await page.evaluate((epoch) => {
        window.client.subscribe("chat:passed");
        return window.client.subscribe("chat:passed", { since: { offset: 1, epoch } });
      }, epoch);
      assert.deepEqual(position, { offset: 3, epoch });
      const resets = await page.evaluate(() => window.resets.map((r) => r.room));
      assert.deepEqual(resets, ["chat:passed"], "events 2 and 3 were not delivered: the app is told");
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("a queued publish that cannot be encoded fails alone; the subscribe queued behind it joins", async () => {
    const node = await Node.start({ env: HISTORY });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      const outcomes = await page.evaluate(() => {
        // Bounded: a command stranded by the failure would never settle.
        const stranded = () => new Promise((resolve) => setTimeout(() => resolve("never settled"), 10000));
        const outcome = (promise) =>
          Promise.race([promise.then(() => "done", (e) => `${e.name} ${e.code}`), stranded()]);
        const queued = [
          outcome(window.client.publish("chat:q", "big", { n: 1n })),
          outcome(window.client.subscribe("chat:q")),
        ];
        window.client.connect();
        return Promise.all(queued);
      });
      assert.deepEqual(outcomes, ["GatewayError bad_request", "done"]);
      assert.equal(await page.evaluate(() => window.client.stats.connects), 1);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("keeps the auth frame under the frame limit however many positions it knows", async () => {
    const node = await Node.start({ env: { ...HISTORY, WSGATE_MAX_FRAME_BYTES: "4096" } });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint, options: { maxFrameBytes: 4096 } });
      // Sixty stored positions of long room names: about 6 KB of them.
      await page.evaluate(() => {
        for (let i = 0; i < 60; i++) {
          const room = `chat:stored-${"x".repeat(50)}-${i}`;
          window.client.subscribe(room, { since: { offset: 1, epoch: "1" } }).catch(() => {});
        }
        window.client.connect();
      });
      await connected(page);
      const after = await page.evaluate(() => ({
        connects: window.client.stats.connects,
        tooBig: window.states.some((s) => s.code === 1009),
      }));
      assert.deepEqual(after, { connects: 1, tooBig: false });
      await page.close();
    } finally {
      await node.stop();
    }
  });
});
