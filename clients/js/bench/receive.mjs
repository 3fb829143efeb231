// Events per second one page processes: the wsgate client (`gw.on("event")`)
// against a bare `WebSocket.onmessage` + `JSON.parse` loop, in the same
// browser run, alternating, on one node, each page in a durable room of its
// own. The measured page's main thread is held busy while the burst is
// published (`redis-cli --pipe` of FCALL wsgate_publish) and queued for it,
// then let go: the rate is then the page's, not the publisher's.
//
//   node clients/js/bench/receive.mjs [events] [rounds]
//
// Needs a built gateway (target/debug/wsgate or $WSGATE_BIN; a release
// build gives the truer node side), redis-server, redis-cli, chromium.

import { spawn } from "node:child_process";
import { Node, Redis, connected, launchBrowser, openClient, token, waitFor } from "../test/harness.mjs";

const EVENTS = Number(process.argv[2] ?? 10000);
const ROUNDS = Number(process.argv[3] ?? 3);

function burst(redis, room, from) {
  const lines = [];
  for (let n = from; n < from + EVENTS; n++) {
    const payload = JSON.stringify({ event: "tick", data: { n, text: "an event of about a hundred bytes, as a UI update is" } });
    const args = ["FCALL", "wsgate_publish", "1", `gw:${room}`, payload];
    lines.push(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  }
  return new Promise((resolve, reject) => {
    const cli = spawn("redis-cli", ["-p", String(redis.port), "--pipe"], { stdio: ["pipe", "ignore", "inherit"] });
    cli.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`redis-cli exited ${code}`))));
    cli.stdin.end(lines.join(""));
  });
}

const redis = await Redis.start();
const node = await Node.start({
  redis,
  env: { WSGATE_HISTORY_NAMESPACES: "org", WSGATE_HISTORY_SIZE: String(EVENTS), WSGATE_SEND_QUEUE_BYTES: String(64 << 20) },
});
const browser = await launchBrowser();
const mint = () => token({ sub: "bench", org: "client" });
try {
  const clientPage = await openClient(browser, { origin: node, wsUrl: node.wsUrl, mint });
  await clientPage.evaluate(() => {
    window.count = 0;
    window.client.on("event", () => {
      window.count += 1;
      if (window.count === 1) window.first = performance.now();
      window.last = performance.now();
    });
    window.client.connect();
  });
  await connected(clientPage);
  const barePage = await browser.newPage();
  await barePage.goto(node.http("/health"));
  await barePage.evaluate(
    ({ url, token }) =>
      new Promise((resolve) => {
        window.count = 0;
        const ws = new WebSocket(url);
        ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
        ws.onmessage = (m) => {
          const frame = JSON.parse(m.data);
          if (frame.type === "welcome") return resolve();
          if (frame.type !== "event") return;
          window.count += 1;
          if (window.count === 1) window.first = performance.now();
          window.last = performance.now();
        };
      }),
    { url: node.wsUrl, token: token({ sub: "bench", org: "bare" }) },
  );

  const HOLD_MS = 5000;
  const results = { client: [], bare: [] };
  let received = await node.metric("wsgate_events_received_total");
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, page] of [["client", clientPage], ["bare", barePage]]) {
      const holdEnd = await page.evaluate((holdMs) => {
        window.count = 0;
        const until = Date.now() + holdMs;
        // Busy until then: the burst queues up for this page meanwhile.
        setTimeout(() => {
          while (Date.now() < until);
        });
        return until;
      }, HOLD_MS);
      await burst(redis, `org:${name}`, (round - 1) * EVENTS + 1);
      received += EVENTS;
      await waitFor("the node to receive the burst", async () => (await node.metric("wsgate_events_received_total")) >= received);
      if (Date.now() > holdEnd) console.log(`round ${round} ${name}: the burst took longer than the hold; this round measures the publisher`);
      await waitFor(`${name} to get ${EVENTS} events`, () => page.evaluate((n) => window.count >= n, EVENTS), {
        timeoutMs: 120000,
      });
      const { first, last } = await page.evaluate(() => ({ first: window.first, last: window.last }));
      const rate = EVENTS / ((last - first) / 1000);
      results[name].push(rate);
      console.log(`round ${round} ${name.padEnd(6)} ${Math.round(rate).toLocaleString("en")} events/s`);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const c = median(results.client);
  const b = median(results.bare);
  console.log(`median: client ${Math.round(c)} events/s, bare ${Math.round(b)} events/s, ratio ${(c / b).toFixed(2)}`);
  const dropped = await clientPage.evaluate(() => window.client.stats.duplicatesDropped);
  console.log(`client duplicates dropped: ${dropped}`);
} finally {
  await browser.close();
  await node.stop();
  await redis.stop();
}
