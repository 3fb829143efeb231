// The browser client in real headless Chromium against the real gateway:
// connect and receive, a round trip between two pages, token refresh, a
// 4009 and its recovery, and a 1008 that must not turn into a loop.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Node,
  Proxy,
  Redis,
  assertAllOffsets,
  connected,
  launchBrowser,
  openClient,
  token,
  waitFor,
} from "./harness.mjs";

describe("browser client", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("connects with the auth frame and receives events of its rooms", async () => {
    const node = await Node.start({ env: { WSGATE_HISTORY_NAMESPACES: "user" } });
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "u1", org: "acme" }),
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      const session = await page.evaluate(() => window.client.session);
      assert.deepEqual(session.rooms.sort(), ["org:acme", "user:u1"]);
      await node.publish("user:u1", "hello", { n: 1 });
      await node.publish("org:acme", "news", { n: 2 });
      const seen = await waitFor("two events", async () => {
        const seen = await page.evaluate(() => window.seen);
        return seen.length === 2 && seen;
      });
      assert.deepEqual(
        seen.map((e) => [e.room, e.event, e.data, e.offset]),
        [
          ["user:u1", "hello", { n: 1 }, 1],
          ["org:acme", "news", { n: 2 }, undefined],
        ],
      );
      // The token went in the auth frame: the URL the page opened has none.
      assert.equal(await page.evaluate(() => window.client.url.includes("token")), false);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("round-trips subscribe and publish between two pages, and rejects a forbidden room", async () => {
    const redis = await Redis.start();
    const a = await Node.start({ redis });
    const b = await Node.start({ redis });
    try {
      const mint = (sub) => () => token({ sub, org: "acme", roles: ["support"] });
      const alice = await openClient(browser, { origin: a, wsUrl: a.wsUrl, mint: mint("alice") });
      const bob = await openClient(browser, { origin: b, wsUrl: b.wsUrl, mint: mint("bob") });
      for (const page of [alice, bob]) await page.evaluate(() => window.client.connect());
      await alice.evaluate(() => window.client.subscribe("chat:lobby"));
      const forbidden = await alice.evaluate(() =>
        window.client.subscribe("orders:1").then(
          () => "subscribed",
          (e) => `${e.name} ${e.code}`,
        ),
      );
      assert.equal(forbidden, "subscribed", "support may read orders");
      const refused = await alice.evaluate(() =>
        window.client.publish("orders:1", "x", {}).then(
          () => "published",
          (e) => `${e.name} ${e.code}`,
        ),
      );
      assert.equal(refused, "ReplyError forbidden");
      await bob.evaluate(() => window.client.publish("chat:lobby", "msg", { text: "hi alice" }));
      const got = await waitFor("alice to get bob's message", async () =>
        (await alice.evaluate(() => window.seen)).find((e) => e.room === "chat:lobby"),
      );
      assert.deepEqual([got.event, got.data, got.from], ["msg", { text: "hi alice" }, "bob"]);
      // Unsubscribed: the next message does not arrive.
      await alice.evaluate(() => window.client.unsubscribe("chat:lobby"));
      await bob.evaluate(() => window.client.publish("chat:lobby", "msg", { text: "gone" }));
      await bob.evaluate(() => window.client.subscribe("chat:lobby"));
      await alice.evaluate(() => window.client.publish("chat:lobby", "msg", { text: "marker" }));
      await waitFor("bob to see the marker", async () =>
        (await bob.evaluate(() => window.seen)).some((e) => e.data?.text === "marker"),
      );
      const aliceTexts = (await alice.evaluate(() => window.seen)).map((e) => e.data?.text);
      assert.deepEqual(aliceTexts, ["hi alice"]);
      await alice.close();
      await bob.close();
    } finally {
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });

  it("lists a presence room's users cluster-wide and hears joins and leaves", async () => {
    const redis = await Redis.start();
    const env = { WSGATE_PRESENCE_NAMESPACES: "org", WSGATE_PRESENCE_EVENTS: "true" };
    const a = await Node.start({ redis, env });
    const b = await Node.start({ redis, env });
    try {
      const mint = (sub) => () => token({ sub, org: "acme" });
      const alice = await openClient(browser, { origin: a, wsUrl: a.wsUrl, mint: mint("alice") });
      await alice.evaluate(() => {
        window.presenceChanges = [];
        for (const kind of ["join", "leave"]) {
          window.client.on(kind, (c) => window.presenceChanges.push(`${kind} ${c.room} ${c.userId}`));
        }
        window.client.connect();
      });
      await connected(alice);
      const bob = await openClient(browser, { origin: b, wsUrl: b.wsUrl, mint: mint("bob") });
      await bob.evaluate(() => window.client.connect());
      await connected(bob);
      await waitFor("alice to hear bob join", () =>
        alice.evaluate(() => window.presenceChanges.includes("join org:acme bob")),
      );
      const users = await waitFor("both users in presence", async () => {
        const users = await alice.evaluate(() => window.client.presence("org:acme"));
        return users.length === 2 && users;
      });
      assert.deepEqual(
        users.map((u) => [u.user_id, u.connections]).sort(),
        [
          ["alice", 1],
          ["bob", 1],
        ],
      );
      const refused = await alice.evaluate(() =>
        window.client.presence("user:alice").then(
          () => "listed",
          (e) => `${e.name} ${e.code}`,
        ),
      );
      assert.equal(refused, "ReplyError bad_request", "user: rooms keep no presence");
      await bob.close();
      await waitFor("alice to hear bob leave", () =>
        alice.evaluate(() => window.presenceChanges.includes("leave org:acme bob")),
      );
      await alice.close();
    } finally {
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });

  it("refreshes a short-lived token in-band, without reconnecting", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "short", ttlS: 3 }),
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      // Three refreshes span three expiries of the first token.
      await waitFor("three refreshes", () => page.evaluate(() => window.tokensAsked >= 4), { timeoutMs: 15000 });
      const state = await page.evaluate(() => ({
        state: window.client.state,
        connects: window.client.stats.connects,
        states: window.states,
        errors: window.errors,
      }));
      assert.equal(state.state, "connected");
      assert.equal(state.connects, 1, `never reconnected: ${JSON.stringify(state.states)}`);
      assert.deepEqual(state.errors, []);
      assert.equal(await node.metric('wsgate_connections_closed_total{reason="token_expired",transport="ws"}'), 0);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("retries a refresh that failed, before the token expires, without reconnecting", async () => {
    const node = await Node.start();
    try {
      let minted = 0;
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => {
          minted += 1;
          // The first refresh finds the issuer down.
          if (minted === 2) throw new Error("issuer unavailable");
          return token({ sub: "retry", ttlS: 4 });
        },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      // Two good refreshes after the failed one span the first token's expiry.
      await waitFor("refreshes after the failure", () => page.evaluate(() => window.tokensAsked >= 4), { timeoutMs: 15000 });
      const state = await page.evaluate(() => ({
        state: window.client.state,
        connects: window.client.stats.connects,
        errors: window.errors,
      }));
      assert.equal(state.state, "connected");
      assert.equal(state.connects, 1, "never reconnected");
      assert.deepEqual(state.errors.map((e) => e.code), ["token"], "the failure was reported once");
      assert.equal(await node.metric('wsgate_connections_closed_total{reason="token_expired",transport="ws"}'), 0);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("runs the README's unsubscribe-then-close without an unhandled rejection", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "readme", roles: ["support"] }),
      });
      const unhandled = await page.evaluate(async () => {
        const seen = [];
        window.addEventListener("unhandledrejection", (e) => seen.push(String(e.reason)));
        await window.client.connect();
        await window.client.subscribe("orders:123");
        window.client.unsubscribe("orders:123");
        window.client.close();
        await new Promise((resolve) => setTimeout(resolve, 500));
        return seen;
      });
      assert.deepEqual(unhandled, []);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("after a 4009 (a stalled network) resumes and gets every dropped event exactly once", async () => {
    const node = await Node.start({
      env: { WSGATE_HISTORY_NAMESPACES: "user", WSGATE_SEND_QUEUE_BYTES: "65536", WSGATE_WRITE_TIMEOUT_S: "60" },
    });
    const proxy = await Proxy.start([node]);
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: proxy.wsUrl,
        mint: () => token({ sub: "slow" }),
        options: { minReconnectDelayMs: 100 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await node.publish("user:slow", "before", { n: 0 });
      await waitFor("the first event", () => page.evaluate(() => window.seen.length === 1));
      // Stall the network, then publish far more than the send queue and
      // the socket buffers hold: the node closes the socket with 4009.
      proxy.stall();
      const padding = "x".repeat(2000);
      let published = 1;
      const slow = 'wsgate_connections_closed_total{reason="slow_consumer",transport="ws"}';
      while ((await node.metric(slow)) === 0) {
        await node.publish("user:slow", "burst", { n: published, padding });
        published += 1;
        assert.ok(published < 20000, "the node never closed the stalled socket");
      }
      for (let i = 0; i < 50; i++, published++) await node.publish("user:slow", "after", { n: published });
      proxy.unstall();
      await waitFor("every event after resuming", () => page.evaluate((n) => window.seen.length >= n, published), {
        timeoutMs: 30000,
      });
      const states = await page.evaluate(() => window.states);
      assert.ok(
        states.some((s) => s.code === 4009),
        `the page saw the 4009: ${JSON.stringify(states)}`,
      );
      assert.equal(await page.evaluate(() => window.client.state), "connected");
      assert.deepEqual(await page.evaluate(() => window.resets), []);
      await assertAllOffsets(page, "user:slow", published, assert);
      await page.close();
    } finally {
      await proxy.stop();
      await node.stop();
    }
  });

  it("pauses while the browser is offline and resumes every room when it is back", async () => {
    const node = await Node.start({ env: { WSGATE_HISTORY_NAMESPACES: "user" } });
    try {
      const page = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint: () => token({ sub: "roamer" }),
        options: { minReconnectDelayMs: 20, maxReconnectDelayMs: 40 },
      });
      await page.evaluate(() => window.client.connect());
      await connected(page);
      await node.publish("user:roamer", "n", { n: 1 });
      await waitFor("the first event", () => page.evaluate(() => window.seen.length === 1));
      await page.context().setOffline(true);
      await waitFor("disconnected while offline", () => page.evaluate(() => window.client.state === "disconnected"));
      await waitFor("the node to see the socket go", async () => (await node.metric("wsgate_connections")) === 0);
      for (let n = 2; n <= 6; n++) await node.publish("user:roamer", "n", { n });
      // Offline, it does not spin: with a 20–40 ms back-off a loop would
      // have asked for dozens of tokens by now.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await page.evaluate(() => window.tokensAsked), 1);
      await page.context().setOffline(false);
      await waitFor("all six events", () => page.evaluate(() => window.seen.length === 6));
      assert.equal(await page.evaluate(() => window.client.state), "connected");
      await assertAllOffsets(page, "user:roamer", 6, assert);
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("rejects pending commands with typed errors on close", async () => {
    const node = await Node.start();
    try {
      const page = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint: () => token({ sub: "closer", roles: ["support"] }) });
      const outcome = await page.evaluate(async () => {
        const { ClosedError, GatewayError } = window.wsgate;
        // Queued before the connection exists, and in flight when closed.
        const queued = window.client.subscribe("chat:a");
        window.client.connect();
        await new Promise((resolve) => window.client.on("connected", resolve));
        const inFlight = window.client.publish("chat:a", "x", {});
        window.client.close();
        const settle = (p) =>
          p.then(
            () => "resolved",
            (e) => `${e.name} ${e.code} ${e instanceof ClosedError} ${e instanceof GatewayError}`,
          );
        const afterClose = await settle(window.client.publish("chat:a", "y"));
        return { queued: await settle(queued), inFlight: await settle(inFlight), afterClose, state: window.client.state };
      });
      // The subscribe was answered before close() or rejected by it: never left hanging.
      assert.ok(["resolved", "ClosedError closed true true"].includes(outcome.queued), outcome.queued);
      assert.equal(outcome.inFlight, "ClosedError closed true true");
      assert.equal(outcome.afterClose, "ClosedError closed true true");
      assert.equal(outcome.state, "closed");
      await page.close();
    } finally {
      await node.stop();
    }
  });

  it("stops on 1008 (too many connections) instead of looping", async () => {
    const node = await Node.start({ env: { WSGATE_MAX_CONNECTIONS_PER_USER: "1" } });
    try {
      const mint = () => token({ sub: "one-tab" });
      const first = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
      await first.evaluate(() => window.client.connect());
      await connected(first);
      const second = await openClient(browser, {
        origin: node,
        wsUrl: node.wsUrl,
        mint,
        options: { minReconnectDelayMs: 20, maxReconnectDelayMs: 40 },
      });
      await second.evaluate(() => window.client.connect());
      await waitFor("the second tab to be refused", () =>
        second.evaluate(() => window.states.some((s) => s.code === 1008)),
      );
      // With a 20–40 ms back-off a loop would have made dozens of attempts.
      await new Promise((r) => setTimeout(r, 1000));
      const after = await second.evaluate(async () => ({
        state: window.client.state,
        tokensAsked: window.tokensAsked,
        publish: await window.client.publish("user:one-tab", "x").then(
          () => "published",
          (e) => e.name,
        ),
      }));
      assert.equal(after.state, "disconnected");
      assert.equal(after.tokensAsked, 1);
      assert.equal(after.publish, "DisconnectedError");
      assert.equal(await first.evaluate(() => window.client.state), "connected");
      await first.close();
      await second.close();
    } finally {
      await node.stop();
    }
  });
});
