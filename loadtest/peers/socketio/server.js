// Socket.IO 4.8 + @socket.io/redis-adapter peer for the wsgate benchmarks,
// written the way the common tutorial writes it:
//   - JWT (HS256) from socket.handshake.auth.token, checked in io.use();
//   - each socket joins user:<sub>, org:<org_id>, role:<r> for each role;
//   - the redis adapter (pub + sub clients) for multi-node;
//   - one more Redis client PSUBSCRIBEs gw:* and, for every message
//     {"event","data"} on gw:<room>, does io.to(room).emit(event, data).
//
// Env: PORT (default 3000), REDIS_URL (default redis://127.0.0.1:6379),
//      JWT_SECRET (required).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");
const jwt = require("jsonwebtoken");

const PORT = Number(process.env.PORT || 3000);
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const JWT_SECRET = process.env.JWT_SECRET;
const PREFIX = "gw:";

if (!JWT_SECRET) {
  console.error("JWT_SECRET is required");
  process.exit(64);
}

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    // No CORS, no polling-only tricks: defaults, as in the tutorial.
  });

  // Redis adapter: one client to publish, a duplicate to subscribe.
  const pubClient = createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  // A third client for the backend events (gw:*).
  const eventClient = pubClient.duplicate();
  for (const [name, client] of [
    ["pub", pubClient],
    ["sub", subClient],
    ["events", eventClient],
  ]) {
    client.on("error", (err) => console.error(`redis ${name} client error:`, err.message));
  }
  await Promise.all([pubClient.connect(), subClient.connect(), eventClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));

  io.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    if (typeof token !== "string" || token.length === 0) {
      return next(new Error("unauthorized"));
    }
    try {
      const claims = jwt.verify(token, JWT_SECRET, { algorithms: ["HS256"] });
      if (claims.sub === undefined || claims.sub === null || typeof claims.exp !== "number") {
        return next(new Error("unauthorized"));
      }
      socket.data.user = claims;
      next();
    } catch (err) {
      next(new Error("unauthorized"));
    }
  });

  io.on("connection", (socket) => {
    const { sub, org_id: orgId, roles } = socket.data.user;
    const rooms = [`user:${sub}`];
    if (orgId !== undefined && orgId !== null) rooms.push(`org:${orgId}`);
    if (Array.isArray(roles)) for (const role of roles) rooms.push(`role:${role}`);
    socket.join(rooms);
  });

  // Backend events: PUBLISH gw:<room> {"event":"...","data":...}
  await eventClient.pSubscribe(`${PREFIX}*`, (message, channel) => {
    let payload;
    try {
      payload = JSON.parse(message);
    } catch {
      return; // invalid JSON: ignored
    }
    if (!payload || typeof payload.event !== "string") return;
    const room = channel.slice(PREFIX.length);
    try {
      io.to(room).emit(payload.event, payload.data);
    } catch (err) {
      // e.g. a reserved event name ("connect", "disconnect", ...)
    }
  });

  await new Promise((resolve) => httpServer.listen(PORT, "127.0.0.1", resolve));
  console.log(`listening on ${httpServer.address().port}`);

  let stopping = false;
  const shutdown = async (signal) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: shutting down`);
    const force = setTimeout(() => process.exit(0), 5000);
    force.unref();
    try {
      io.close(); // disconnects every socket and closes the HTTP server
      await Promise.allSettled([pubClient.quit(), subClient.quit(), eventClient.quit()]);
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main().catch((err) => {
  console.error("fatal:", err);
  process.exit(1);
});
