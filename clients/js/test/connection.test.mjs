// The connection at its edges: a hidden tab's throttled timers, a connect
// overlapping itself (or a close), a publish too large for the server, and tokens the
// server refuses (4001) — the client keeps or ends the connection as the
// situation needs, and tells the app why.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Node, connected, launchBrowser, openClient, token, waitFor } from "./harness.mjs";

describe("browser connection", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("keeps a quiet socket when the tab's timers fire three times late", async () => {
    const node = await Node.start({ env: { WSGATE_HEARTBEAT_S: "1" } });
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint: () => token({ sub: "h1" }) });
      // A hidden tab: every interval timer fires at a third of its rate.
      await page.evaluate(() => {
        const setIntervalAsAsked = window.setInterval;
        window.ticks = 0;
        window.setInterval = (fn, ms, ...args) =>
          setIntervalAsAsked(
            () => {
              window.ticks += 1;
              fn();
            },
            ms * 3,
            ...args,
          );
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await waitFor("four late heartbeat ticks", () => page.evaluate(() => window.ticks >= 4), { timeoutMs: 30000 });
      const after = await page.evaluate(() => ({ connects: window.client.stats.connects, state: window.client.state }));
      assert.deepEqual(after, { connects: 1, state: "connected" });
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("opens one socket with one token when connect and online overlap a slow getToken", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint: () => token({ sub: "o1" }) });
      await page.evaluate(async () => {
        const mintAsAsked = window.mintToken;
        window.mintToken = async (context) => {
          await new Promise((r) => setTimeout(r, 300));
          return mintAsAsked(context);
        };
        window.client.connect();
        window.client.connect();
        window.dispatchEvent(new Event("online"));
      });
      await connected(page);
      await page.evaluate(() => window.dispatchEvent(new Event("online")));
      await node.publish("user:o1", "marker", {});
      await waitFor("the marker", () => page.evaluate(() => window.seen.length === 1));
      const after = await page.evaluate(() => ({
        tokensAsked: window.tokensAsked,
        states: window.states.map((s) => s.state),
        state: window.client.state,
      }));
      assert.deepEqual(after, { tokensAsked: 1, states: ["connecting", "connected"], state: "connected" });
      assert.equal(await node.metric("wsgate_connections"), 1);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("close() then connect() during a slow getToken connects, and commands made meanwhile wait for it", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint: () => token({ sub: "c1" }) });
      const outcome = await page.evaluate(() => {
        const mintAsAsked = window.mintToken;
        window.mintToken = async (context) => {
          await new Promise((r) => setTimeout(r, 300));
          return mintAsAsked(context);
        };
        // A framework mounting, unmounting and mounting again at once.
        window.client.connect();
        window.client.close();
        window.client.connect();
        const state = window.client.state;
        return window.client.subscribe("user:c1").then(
          () => ({ state, subscribe: "ok" }),
          (e) => ({ state, subscribe: e.name }),
        );
      });
      assert.deepEqual(outcome, { state: "connecting", subscribe: "ok" });
      await connected(page);
      assert.equal(await node.metric("wsgate_connections"), 1);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("refuses a publish larger than the server takes, and the socket and other commands live on", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "b1", roles: ["support"] }),
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await page.evaluate(() => window.client.subscribe("chat:big"));
      const outcomes = await page.evaluate(() =>
        Promise.all([
          window.client.publish("chat:big", "small", { n: 1 }).then(
            () => "published",
            (e) => `${e.name} ${e.code}`,
          ),
          window.client.publish("chat:big", "big", { text: "é".repeat(40000) }).then(
            () => "published",
            (e) => `${e.name} ${e.code} ${e.message}`,
          ),
          window.client.publish("chat:big", "small", { n: 2 }).then(
            () => "published",
            (e) => `${e.name} ${e.code}`,
          ),
        ]),
      );
      assert.equal(outcomes[0], "published");
      assert.match(outcomes[1], /^GatewayError limit_exceeded the publish is 800\d\d bytes, more than maxFrameBytes \(65536\)$/);
      assert.equal(outcomes[2], "published");
      await waitFor("both small events", () => page.evaluate(() => window.seen.length === 2));
      assert.deepEqual(await page.evaluate(() => window.client.stats.connects), 1);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("after a revocation (4001) tells the app why and asks getToken for a new token", async () => {
    const node = await Node.start();
    try {
      let cached = token({ sub: "r1" });
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        // An app that caches its token until the server refuses it.
        mint: (context) => {
          if (context?.refused) cached = token({ sub: "r1", iat: Math.floor(Date.now() / 1000) + 1 });
          return cached;
        },
        options: { minReconnectDelayMs: 100 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await node.disconnect("r1", { reason: "banned", revoke: true });
      await waitFor("a second welcome", () => page.evaluate(() => window.client.stats.connects === 2));
      const seen = await page.evaluate(() => ({ contexts: window.tokenContexts, errors: window.errors }));
      assert.equal(seen.contexts.length, 2);
      assert.deepEqual(seen.contexts[0], { refused: null });
      assert.ok(seen.contexts[1].refused, "the second getToken was told the token was refused");
      assert.ok(
        seen.errors.some((e) => e.code === "unauthorized"),
        `an unauthorized error reached the app: ${JSON.stringify(seen.errors)}`,
      );
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("stops after two refused tokens in a row instead of looping", async () => {
    const node = await Node.start();
    try {
      const revoked = token({ sub: "r2" });
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => revoked,
        options: { minReconnectDelayMs: 50, maxReconnectDelayMs: 100 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await node.disconnect("r2", { revoke: true });
      await waitFor("the client to stop", () =>
        page.evaluate(() => window.states.some((s) => s.code === 4001 && s.willReconnect === false)),
      );
      const after = await page.evaluate(() => ({ tokensAsked: window.tokensAsked, state: window.client.state }));
      assert.deepEqual(after, { tokensAsked: 3, state: "disconnected" });
      // Rejected at once, not queued forever.
      const publish = await page.evaluate(() =>
        window.client.publish("user:r2", "x", {}).then(
          () => "published",
          (e) => e.name,
        ),
      );
      assert.equal(publish, "DisconnectedError");
      await page.close();
    } finally {
      await node.stop();
    }
  });
});
