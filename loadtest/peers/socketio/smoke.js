// Smoke check of server.js over raw WebSocket (Engine.IO v4 / Socket.IO v5),
// with no socket.io-client: shows the exact wire a load generator must speak.
//
//   PORT=3000 REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=secret node smoke.js [--wait-ping]
//
// Exits 0 and prints "smoke: ok" when every check passed.
"use strict";

const WebSocket = require("ws");
const jwt = require("jsonwebtoken");
const { createClient } = require("redis");

const PORT = Number(process.env.PORT || 3000);
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const JWT_SECRET = process.env.JWT_SECRET || "secret";
const WAIT_PING = process.argv.includes("--wait-ping");
const URL = `ws://127.0.0.1:${PORT}/socket.io/?EIO=4&transport=websocket`;

function token(claims, secret = JWT_SECRET) {
  return jwt.sign(claims, secret, { algorithm: "HS256", expiresIn: 3600 });
}

// A minimal client: queues every text frame, answers Engine.IO pings.
function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(URL);
    const frames = [];
    let waiter = null;
    ws.pings = 0;
    ws.on("message", (data) => {
      const text = data.toString();
      if (text === "2") {
        ws.pings += 1;
        ws.send("3"); // Engine.IO pong
        return;
      }
      frames.push(text);
      if (waiter) {
        const w = waiter;
        waiter = null;
        w();
      }
    });
    ws.next = (ms = 2000) =>
      new Promise((res, rej) => {
        if (frames.length) return res(frames.shift());
        const timer = setTimeout(() => {
          waiter = null;
          rej(new Error(`no frame within ${ms} ms`));
        }, ms);
        waiter = () => {
          clearTimeout(timer);
          res(frames.shift());
        };
      });
    ws.pending = () => frames.splice(0);
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`  ok: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const redis = createClient({ url: REDIS_URL });
  redis.on("error", () => {});
  await redis.connect();

  // 1. handshake
  const ws = await connect();
  const open = await ws.next();
  console.log(`< ${open}`);
  check(open.startsWith("0{"), "Engine.IO open packet 0{...}");
  const info = JSON.parse(open.slice(1));
  check(typeof info.sid === "string" && info.pingInterval > 0, `open has sid, pingInterval=${info.pingInterval}`);
  const good = token({ sub: "42", org_id: "acme", roles: ["support", "viewer"] });
  ws.send(`40${JSON.stringify({ token: good })}`);
  const connected = await ws.next();
  console.log(`< ${connected}`);
  check(/^40\{"sid":"[^"]+"\}$/.test(connected), "Socket.IO CONNECT ack 40{\"sid\":...}");

  // 2. events to each of the socket's rooms
  const cases = [
    ["gw:user:42", { event: "e", data: { x: 1 } }, '42["e",{"x":1}]'],
    ["gw:org:acme", { event: "order:updated", data: { id: 7 } }, '42["order:updated",{"id":7}]'],
    ["gw:role:support", { event: "n", data: [1, "two", null] }, '42["n",[1,"two",null]]'],
    ["gw:role:viewer", { event: "s", data: "str" }, '42["s","str"]'],
    ["gw:user:42", { event: "nodata" }, '42["nodata",null]'],
  ];
  for (const [channel, payload, want] of cases) {
    await redis.publish(channel, JSON.stringify(payload));
    const got = await ws.next();
    console.log(`< ${got}`);
    check(got === want, `${channel} arrives as ${want}`);
  }

  // 3. other rooms do not arrive; invalid JSON is ignored and the server lives on
  await redis.publish("gw:user:43", JSON.stringify({ event: "not-mine", data: 1 }));
  await redis.publish("gw:org:other", JSON.stringify({ event: "not-mine", data: 1 }));
  await redis.publish("gw:user:42", "{not json");
  await redis.publish("gw:user:42", JSON.stringify({ data: "no event" }));
  await redis.publish("gw:user:42", JSON.stringify({ event: "connect", data: "reserved" }));
  await redis.publish("gw:user:42", JSON.stringify({ event: "after", data: true }));
  const after = await ws.next();
  console.log(`< ${after}`);
  check(after === '42["after",true]', "foreign rooms and invalid payloads skipped; next event arrives");
  await sleep(100);
  check(ws.pending().length === 0, "nothing else queued");

  // 4. bad tokens are refused in the middleware
  for (const [what, tok] of [
    ["wrong secret", token({ sub: "42" }, "other-secret")],
    ["expired", jwt.sign({ sub: "42", exp: Math.floor(Date.now() / 1000) - 10 }, JWT_SECRET)],
    ["missing", undefined],
  ]) {
    const bad = await connect();
    await bad.next(); // 0{...}
    bad.send(tok === undefined ? "40" : `40${JSON.stringify({ token: tok })}`);
    const refused = await bad.next();
    console.log(`< ${refused}`);
    check(refused === '44{"message":"unauthorized"}', `${what} token refused with 44{"message":"unauthorized"}`);
    bad.close();
  }

  // 5. optional: wait for one Engine.IO ping (pingInterval, 25 s by default)
  if (WAIT_PING) {
    await sleep(info.pingInterval + 1000);
    check(ws.pings >= 1, `received ${ws.pings} ping(s) "2" and answered "3"`);
    await redis.publish("gw:user:42", JSON.stringify({ event: "still", data: 1 }));
    check((await ws.next()) === '42["still",1]', "still connected after ping/pong");
  }

  ws.close();
  await redis.quit();
  console.log("smoke: ok");
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err.message);
    process.exit(1);
  },
);
