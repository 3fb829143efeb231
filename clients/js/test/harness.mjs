// What the browser tests stand on: a real redis-server and real wsgate
// nodes on free ports, a round-robin TCP proxy in front of the nodes (the
// load balancer, which can also stall a connection), HS256 tokens, and
// headless Chromium from Debian's package driven by playwright-core.
//
// The gateway binary is $WSGATE_BIN, or target/debug/wsgate of this
// repository (scripts/test builds it first).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../../..");
export const WSGATE_BIN = process.env.WSGATE_BIN ?? path.join(REPO, "target/debug/wsgate");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const SECRET = "browser-test-secret-0123456789abcdef";
export const API_KEY = "browser-test-api-key";
/** The API key config/dev.toml ships (dev only, public). */
export const DEV_API_KEY = "wsgate-dev-only-api-key";
/** How long any wait-for-condition waits before it fails the test. */
export const PATIENCE_MS = 20000;

const ROLES_TOML = `
[permissions.roles]
admin = ["*"]
support = ["orders:read", "chat:read", "chat:publish"]
`;

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Poll `check` until it returns a truthy value; fail with `what` after PATIENCE_MS. */
export async function waitFor(what, check, { timeoutMs = PATIENCE_MS, everyMs = 25 } = {}) {
  const start = Date.now();
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** An HS256 token for the test secret (`iat` now unless given). */
export function token({ sub, org, roles = [], ttlS = 3600, iat }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: String(sub), iat: iat ?? now, exp: now + ttlS };
  if (org) claims.org_id = org;
  if (roles.length) claims.roles = roles;
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
}

/** A redis-server of the test's own, on a free port; restartable on the same port. */
export class Redis {
  static async start({ persistent = false } = {}) {
    const redis = new Redis(await freePort(), persistent);
    await redis.boot();
    return redis;
  }

  constructor(port, persistent) {
    this.port = port;
    this.persistent = persistent;
    this.dir = mkdtempSync(path.join(tmpdir(), "wsgate-redis-"));
    this.child = null;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async boot() {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--dir", this.dir];
    args.push("--appendonly", this.persistent ? "yes" : "no");
    this.child = spawn("redis-server", args, { stdio: "ignore" });
    await waitFor("redis-server to answer PING", () => this.ping());
  }

  ping() {
    return new Promise((resolve) => {
      const socket = net.connect(this.port, "127.0.0.1");
      socket.setTimeout(500);
      socket.on("connect", () => socket.write("PING\r\n"));
      socket.on("data", (data) => {
        socket.destroy();
        resolve(data.toString().startsWith("+PONG"));
      });
      socket.on("error", () => resolve(false));
      socket.on("timeout", () => {
        socket.destroy();
        resolve(false);
      });
    });
  }

  /** SIGKILL and start again on the same port (and, if persistent, the same data). */
  async restart() {
    await this.kill();
    await this.boot();
  }

  async kill() {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    child.kill("SIGKILL");
    await exited(child);
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A wsgate node (the real binary). */
export class Node {
  /**
   * @param {{redis?: Redis, env?: Record<string,string>, config?: string, devConfig?: boolean}} options
   */
  static async start({ redis, env = {}, config, devConfig = false } = {}) {
    const dir = mkdtempSync(path.join(tmpdir(), "wsgate-node-"));
    const configPath = path.join(dir, "wsgate.toml");
    writeFileSync(configPath, config ?? ROLES_TOML);
    const childEnv = {
      PATH: process.env.PATH,
      WSGATE_LISTEN: "127.0.0.1:0",
      WSGATE_LOG: process.env.WSGATE_TEST_LOG ?? "warn",
      WSGATE_DRAIN_S: "1",
      ...(devConfig ? {} : { WSGATE_JWT_SECRET: SECRET, WSGATE_API_KEYS: API_KEY }),
      ...(redis ? { WSGATE_REDIS_URL: redis.url } : {}),
      ...env,
    };
    const args = ["--config", devConfig ? path.join(REPO, "config/dev.toml") : configPath];
    const child = spawn(WSGATE_BIN, args, { env: childEnv, stdio: ["ignore", "pipe", "inherit"] });
    const addr = await new Promise((resolve, reject) => {
      let buffered = "";
      const timer = setTimeout(() => reject(new Error("wsgate did not print its address")), PATIENCE_MS);
      child.stdout.on("data", (chunk) => {
        buffered += chunk;
        const match = buffered.match(/wsgate listening on (?:https?:\/\/)?([\d.]+:\d+)/);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.once("exit", (code) => reject(new Error(`wsgate exited with ${code} before listening`)));
    });
    child.stdout.resume();
    const node = new Node(child, addr, dir);
    node.apiKey = devConfig ? DEV_API_KEY : API_KEY;
    await waitFor("node /ready", async () => (await fetch(node.http("/ready"))).status === 200);
    return node;
  }

  constructor(child, addr, dir) {
    this.child = child;
    this.addr = addr;
    this.dir = dir;
    this.port = Number(addr.split(":")[1]);
  }

  http(pathAndQuery) {
    return `http://${this.addr}${pathAndQuery}`;
  }

  get wsUrl() {
    return `ws://${this.addr}/v1/ws`;
  }

  /** POST /api/v1/publish; returns the reply's data. */
  async publish(room, event, data) {
    const response = await fetch(this.http("/api/v1/publish"), {
      method: "POST",
      headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ rooms: [room], event, data }),
    });
    if (response.status !== 202) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
    return (await response.json()).data;
  }

  /** POST /api/v1/disconnect: close the user's sockets with 4001 (`revoke`: and refuse its tokens so far). */
  async disconnect(user, { reason, revoke = false } = {}) {
    const response = await fetch(this.http("/api/v1/disconnect"), {
      method: "POST",
      headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ user, reason, revoke }),
    });
    if (response.status !== 202) throw new Error(`disconnect answered ${response.status}: ${await response.text()}`);
  }

  /** A sample's value; a bare name sums every label set (`wsgate_connections`). */
  async metric(sample) {
    const text = await (await fetch(this.http("/metrics"))).text();
    let total = 0;
    for (const line of text.split("\n")) {
      const exact = line.startsWith(`${sample} `);
      if (exact || (!sample.includes("{") && line.startsWith(`${sample}{`))) {
        total += Number(line.slice(line.lastIndexOf(" ") + 1));
        if (exact) return total;
      }
    }
    return total;
  }

  /** SIGTERM: the node drains (1012 to every socket within drain_s) and exits. */
  async terminate() {
    this.child.kill("SIGTERM");
    await exited(this.child);
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await exited(this.child);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A round-robin TCP proxy in front of some nodes, as a load balancer is:
 * each new connection goes to the next backend that accepts it. `stall()`
 * stops forwarding from the servers to the clients (a stalled network),
 * `unstall()` lets it flow again.
 */
export class Proxy {
  static async start(backends) {
    const proxy = new Proxy(backends);
    await new Promise((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(backends) {
    this.backends = backends;
    this.next = 0;
    this.stalled = false;
    this.upstreams = new Set();
    this.server = net.createServer((client) => this.accept(client, 0));
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  accept(client, tried) {
    if (tried >= this.backends.length) {
      client.destroy();
      return;
    }
    const backend = this.backends[this.next++ % this.backends.length];
    const upstream = net.connect(backend.port, "127.0.0.1");
    upstream.once("error", () => {
      if (!upstream.connected) this.accept(client, tried + 1);
      else client.destroy();
    });
    upstream.once("connect", () => {
      upstream.connected = true;
      this.upstreams.add(upstream);
      if (this.stalled) upstream.pause();
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("error", () => upstream.destroy());
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => {
        this.upstreams.delete(upstream);
        client.destroy();
      });
    });
  }

  stall() {
    this.stalled = true;
    for (const u of this.upstreams) u.pause();
  }

  unstall() {
    this.stalled = false;
    for (const u of this.upstreams) u.resume();
  }

  async stop() {
    for (const u of this.upstreams) u.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Headless Chromium (Debian's), with nothing that reaches for the internet. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * A page on `origin` (a node: the client is imported from its
 * /v1/client.js) with window.client = a Gateway to `wsUrl` whose tokens come
 * from `mint(context)` in the test (the context getToken was called with,
 * also kept in window.tokenContexts), and window.seen = every event it
 * received.
 */
export async function openClient(browser, { origin, wsUrl, mint, options = {} }) {
  const page = await browser.newPage();
  page.on("pageerror", (err) => console.error("page error:", err));
  await page.exposeFunction("mintToken", async (context) => mint(context));
  await page.goto(origin.http("/health"));
  await page.evaluate(
    async ({ wsUrl, options }) => {
      const module = await import("/v1/client.js");
      window.wsgate = module;
      window.seen = [];
      window.states = [];
      window.resets = [];
      window.errors = [];
      window.tokensAsked = 0;
      window.tokenContexts = [];
      const client = new module.Gateway(wsUrl, {
        ...options,
        getToken: async (context) => {
          window.tokensAsked += 1;
          window.tokenContexts.push(context);
          return window.mintToken(context);
        },
      });
      client.on("event", (e) => window.seen.push({ room: e.room, event: e.event, data: e.data, offset: e.offset, epoch: e.epoch, from: e.from }));
      client.on("state", (s) =>
        window.states.push({ state: s.state, code: s.code, reason: s.reason, willReconnect: s.willReconnect }),
      );
      client.on("reset", (r) => window.resets.push(r));
      client.on("error", (e) => window.errors.push({ code: e.code, message: e.message }));
      window.client = client;
    },
    { wsUrl, options },
  );
  return page;
}

/** Wait until the page's client is connected. */
export function connected(page) {
  return waitFor("the page to be connected", () => page.evaluate(() => window.client.state === "connected"));
}

/**
 * Offsets of `room` the page received, checked: exactly 1..expected, once
 * each, in order. Returns the list for a message.
 */
export async function assertAllOffsets(page, room, expected, assert) {
  const offsets = await page.evaluate((room) => window.seen.filter((e) => e.room === room).map((e) => e.offset), room);
  const want = Array.from({ length: expected }, (_, i) => i + 1);
  const lost = want.filter((o) => !offsets.includes(o)).length;
  const duplicated = offsets.length - new Set(offsets).size;
  const outOfOrder = offsets.filter((o, i) => i > 0 && o <= offsets[i - 1]).length;
  assert.deepEqual({ lost, duplicated, outOfOrder }, { lost: 0, duplicated: 0, outOfOrder: 0 });
  assert.deepEqual(offsets, want);
}

export function artifactDir() {
  const dir = path.join(REPO, "target", "browser-tests");
  mkdirSync(dir, { recursive: true });
  return dir;
}
