// wsgate browser client: one ES module, no dependencies.
//
// It keeps one WebSocket to a wsgate node and makes it look like it never
// drops: it authenticates with the auth frame (the token never goes in the
// URL), refreshes the token in-band before it expires, reconnects with
// full-jitter exponential back-off, resumes every durable room from its last
// position and drops duplicates by offset. The wire protocol it speaks is
// docs/PROTOCOL.md in the wsgate repository (§1 connecting, §2 frames, §4
// close codes, §10 history and recovery, §12 presence).
//
// Served by every node at GET /v1/client.js; the same file is clients/js/
// in the repository, with TypeScript declarations beside it.

/** The connection states, in the order a connection goes through them. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected",
  CLOSED: "closed",
});

/** Every error this client rejects a promise with or emits. */
export class GatewayError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "GatewayError";
    /** A protocol error code (§4), or "disconnected", "closed", "timeout", "token". */
    this.code = code;
  }
}

/** The server answered a command with an `error` frame; `code` is its code. */
export class ReplyError extends GatewayError {
  constructor(code, message) {
    super(code, message);
    this.name = "ReplyError";
  }
}

/** The connection closed before the command was answered. It may or may not have taken effect. */
export class DisconnectedError extends GatewayError {
  constructor(message = "connection closed before the reply") {
    super("disconnected", message);
    this.name = "DisconnectedError";
  }
}

/** The command was abandoned: `close()` was called, or `unsubscribe()` before a waiting subscribe was sent. */
export class ClosedError extends GatewayError {
  constructor(message = "client closed") {
    super("closed", message);
    this.name = "ClosedError";
  }
}

/** No reply within `timeoutMs`. */
export class TimeoutError extends GatewayError {
  constructor(message = "no reply in time") {
    super("timeout", message);
    this.name = "TimeoutError";
  }
}

const DEFAULTS = Object.freeze({
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 20000,
  // After a 1012 (a node draining for a deploy) the first retry waits at
  // most this long: the node already spread its closes over drain_s.
  drainReconnectDelayMs: 250,
  timeoutMs: 10000,
  // A connection that stays up this long resets the back-off.
  stableAfterMs: 5000,
  // Refresh when this much of the token's remaining life is left (capped
  // at maxRefreshLeadMs), so a short token is refreshed well before expiry.
  refreshLeadFraction: 0.25,
  maxRefreshLeadMs: 30000,
  // The server's ws.max_frame_bytes: a bigger publish would close the
  // socket with 1009 (and fail every command in flight), so it is refused
  // here instead.
  maxFrameBytes: 65536,
  debug: false,
});

// Close codes after which reconnecting at once would only repeat the
// refusal (§4): the client waits until the app calls connect() again.
const STOP_CODES = new Set([1002, 1003, 1007, 1008, 4008]);
// The client's own close when the server stopped answering pings.
const CLOSE_NO_PONG = 4000;
/** The least wait before a refresh, and the first retry's back-off. */
const MIN_REFRESH_DELAY_MS = 1000;
/** Most rooms the server takes in one `since` map. */
const MAX_SINCE_ROOMS = 1000;
// What the server takes as a room name and an epoch (PROTOCOL.md §3, §10):
// a position that fails these would make it refuse the whole auth frame.
const ROOM_NAME = /^[a-z0-9_-]{1,32}:[A-Za-z0-9_.@:=+|~-]+$/;
const MAX_ROOM_LEN = 200;
const EPOCH = /^[A-Za-z0-9]{1,64}$/;
// Errors after which a subscribe is tried again, not given up (§4).
const RETRY_CODES = new Set(["internal", "rate_limited"]);
/** Tokens refused at auth (4001 before the welcome) in a row before the client stops. */
const MAX_REFUSED_TOKENS = 2;

/**
 * One connection to wsgate. Create it, register listeners, `connect()`.
 *
 *   const gw = new Gateway("wss://rt.example.com/v1/ws", { getToken });
 *   gw.on("event", (e) => console.log(e.room, e.event, e.data));
 *   gw.connect();
 *   await gw.subscribe("orders:123", { onEvent: render });
 */
export class Gateway {
  constructor(url, options = {}) {
    if (typeof options.getToken !== "function") {
      throw new TypeError("Gateway needs options.getToken: an async function returning a JWT");
    }
    this.url = String(url);
    this.options = { ...DEFAULTS, ...options };
    this.state = State.DISCONNECTED;
    /** The last welcome: conn_id, user_id, rooms, expires_at, heartbeat_s. */
    this.session = null;
    /** Counters worth showing in a debug panel. */
    this.stats = { connects: 0, duplicatesDropped: 0, resets: 0 };

    this._listeners = { event: [], state: [], reset: [], error: [], connected: [], join: [], leave: [] };
    // room → { offset, epoch }: where each durable room stood after the
    // last event handed to the app. Mutated in place per event.
    this._positions = new Map();
    // room → subscription asked for by the app (not the token's own rooms).
    this._subscriptions = new Map();
    // ref → pending command { resolve, reject, timer, kind, room }.
    this._pending = new Map();
    // room → unsubscribes in flight: the room's late events are dropped.
    this._leaving = new Map();
    // Commands that wait for the connection (sent on welcome).
    this._queued = [];
    this._nextRef = 1;
    this._ws = null;
    // Between _open() asking for a token and the socket existing.
    this._opening = false;
    this._attempt = 0;
    this._wantConnected = false;
    // Set by a close code that says "don't come back at once" (1008, 4008):
    // commands fail fast until the app calls connect() again.
    this._stopped = false;
    this._timers = { reconnect: null, refresh: null, heartbeat: null, stable: null, connect: null };
    this._lastFrameAt = 0;
    // When our unanswered ping went out, or null.
    this._pingSentAt = null;
    // The reason of the last 4001, handed to getToken(); and how many
    // tokens in a row were refused before a welcome.
    this._refusedReason = null;
    this._refusedInARow = 0;
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
  }

  /** Listen to "event" | "state" | "reset" | "error" | "connected" | "join" | "leave". Returns a function that removes the listener. */
  on(name, fn) {
    const list = this._listeners[name];
    if (!list) throw new TypeError(`unknown event ${name}`);
    // Copy on write: dispatch iterates the array without copying it.
    this._listeners[name] = [...list, fn];
    return () => this.off(name, fn);
  }

  off(name, fn) {
    const list = this._listeners[name];
    if (list) this._listeners[name] = list.filter((f) => f !== fn);
  }

  /** Open the connection (again, after close() or a stop). Idempotent. */
  connect() {
    this._wantConnected = true;
    this._stopped = false;
    if (globalThis.addEventListener) {
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
    }
    if (this._ws || this._timers.reconnect) return;
    this._attempt = 0;
    this._refusedInARow = 0;
    // close() then connect() while a token is being fetched: that open
    // goes on (it checks _wantConnected after the token came).
    if (this._opening) this._setState(State.CONNECTING, {});
    else this._open();
  }

  /** Close for good: no reconnect; pending commands reject with ClosedError. */
  close() {
    this._wantConnected = false;
    if (globalThis.removeEventListener) {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
    }
    this._clearTimers();
    this._dropSocket(1000, "client closed");
    this._failAll(() => new ClosedError());
    this._setState(State.CLOSED, { code: 1000, reason: "client closed" });
  }

  /**
   * Join a room beyond the token's own. Resolves with the room's position
   * once the server acked (durable rooms), or null. The subscription is kept
   * across reconnects and resumed from its last position; `onEvent` gets its
   * events, `onReset` is called when it comes back `recovered:false`.
   */
  subscribe(room, { onEvent, onReset, since, timeoutMs } = {}) {
    room = String(room);
    const invalid = invalidRoom(room) ?? (since ? invalidPosition(since) : null);
    if (invalid) return Promise.reject(new GatewayError("bad_request", invalid));
    const existing = this._subscriptions.get(room);
    const sub = existing ?? { room, onEvent: null, onReset: null, joined: false, joining: null, resetOnAck: false };
    if (onEvent) sub.onEvent = onEvent;
    if (onReset) sub.onReset = onReset;
    this._subscriptions.set(room, sub);
    if (since && !this._positions.has(room)) {
      this._positions.set(room, { offset: since.offset, epoch: since.epoch });
    }
    if (this.state === State.CONNECTED && (this._isTokenRoom(room) || sub.joined)) {
      return Promise.resolve(this.position(room));
    }
    return sub.joining ?? this._join(sub, timeoutMs);
  }

  /** Leave a room joined with subscribe(). Resolves when the server acked (or at once when offline). */
  unsubscribe(room) {
    room = String(room);
    if (!this._subscriptions.delete(room)) return Promise.resolve();
    // A subscribe still waiting for the connection is abandoned, so it
    // cannot join the room behind the app's back.
    for (const [ref, pending] of this._pending) {
      if (pending.kind === "subscribe" && pending.room === room && !pending.sent) {
        this._abandon(ref, new ClosedError(`unsubscribed from ${room} before the subscribe was sent`));
      }
    }
    if (this._isTokenRoom(room)) return Promise.resolve();
    this._positions.delete(room);
    if (this.state !== State.CONNECTED) return Promise.resolve();
    this._leaving.set(room, (this._leaving.get(room) ?? 0) + 1);
    return this._command({ kind: "unsubscribe", room })
      .then(
        () => undefined,
        (err) => {
          // Not subscribed, or the connection went (and the room with it):
          // the room is left either way.
          if (err instanceof ReplyError && err.code === "not_found") return undefined;
          if (err instanceof DisconnectedError || err instanceof ClosedError) return undefined;
          throw err;
        },
      )
      .finally(() => {
        const left = (this._leaving.get(room) ?? 0) - 1;
        if (left > 0) this._leaving.set(room, left);
        else this._leaving.delete(room);
      });
  }

  /**
   * Publish into a room (the token's roles must grant it). Resolves with the
   * event's position in a durable room, else null. Waits for the connection
   * when called while (re)connecting; rejects with DisconnectedError if the
   * socket closes before the ack: the event may or may not have been sent.
   */
  publish(room, event, data = null, { echo = true, timeoutMs } = {}) {
    const frame = { kind: "publish", room: String(room), event: String(event), data };
    if (!echo) frame.echo = false;
    return this._command(frame, timeoutMs).then((ack) => ack.position ?? null);
  }

  /**
   * Who is in a presence room, cluster-wide (PROTOCOL.md §12): resolves with
   * [{user_id, connections}]. Needs subscribe permission for the room; a
   * room without presence rejects with ReplyError("bad_request").
   */
  presence(room, { timeoutMs } = {}) {
    return this._command({ kind: "presence", room: String(room) }, timeoutMs).then((reply) => reply.users ?? []);
  }

  /** The last position of a durable room ({offset, epoch}), or null. Store it to resume after a page reload. */
  position(room) {
    const p = this._positions.get(room);
    return p ? { offset: p.offset, epoch: p.epoch } : null;
  }

  /** Every known position, as the `since` map of the protocol. */
  positions() {
    const out = {};
    for (const [room, p] of this._positions) out[room] = { offset: p.offset, epoch: p.epoch };
    return out;
  }

  // ---- connection lifecycle ------------------------------------------------

  async _open() {
    this._timers.reconnect = null;
    if (!this._wantConnected || this._ws || this._opening) return;
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      // Back when the browser says it is online again.
      this._setState(State.DISCONNECTED, { reason: "offline" });
      return;
    }
    this._setState(State.CONNECTING, {});
    let token;
    this._opening = true;
    try {
      token = await this.options.getToken({ refused: this._refusedReason });
      if (typeof token !== "string" || token === "") throw new Error("getToken() returned no token");
    } catch (cause) {
      this._emit("error", new GatewayError("token", `getToken failed: ${cause?.message ?? cause}`));
      this._scheduleReconnect(null);
      return;
    } finally {
      this._opening = false;
    }
    if (!this._wantConnected || this._ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (cause) {
      this._emit("error", new GatewayError("bad_request", `cannot open ${this.url}: ${cause?.message ?? cause}`));
      this._wantConnected = false;
      this._setState(State.DISCONNECTED, { reason: "bad url" });
      return;
    }
    this._ws = ws;
    this._log("connecting", this.url);
    this._timers.connect = setTimeout(() => {
      this._log("no welcome in time");
      this._dropSocket(CLOSE_NO_PONG, "no welcome in time");
      this._afterClose(1006, "no welcome in time");
    }, this.options.timeoutMs);
    ws.onopen = () => {
      const auth = { type: "auth", token };
      const since = this._authSince(this.options.maxFrameBytes - utf8Length(token) - 64);
      if (since) auth.since = since;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (message) => this._onFrame(message.data);
    ws.onclose = (close) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._afterClose(close.code, close.reason);
    };
    ws.onerror = () => {
      // Always followed by a close event; the close decides what happens.
    };
  }

  _afterClose(code, reason) {
    this._clearTimers();
    this._ws = null;
    this._pingSentAt = null;
    this._leaving.clear();
    for (const sub of this._subscriptions.values()) sub.joined = false;
    const wasConnected = this.state === State.CONNECTED;
    this._log("closed", code, reason);
    // Commands in flight may or may not have taken effect: reject them.
    // Queued ones (not sent yet) wait for the next connection.
    for (const [ref, pending] of this._pending) {
      if (pending.sent) {
        this._pending.delete(ref);
        clearTimeout(pending.timer);
        if (pending.kind === "subscribe" && this._subscriptions.get(pending.room) === pending.sub) {
          // The subscription outlives the socket: re-queue it (its
          // timeout starts again when it is sent).
          pending.sent = false;
          pending.timer = null;
          this._pending.set(ref, pending);
          this._queued.push(ref);
        } else {
          pending.reject(new DisconnectedError(`connection closed (${code}${reason ? ` ${reason}` : ""})`));
        }
      }
    }
    if (!this._wantConnected) return;
    // Emitted once the state says what happens next, so a listener sees it.
    let refused = null;
    if (code === 4001) {
      // The token expired, was refused or revoked, or the server logged the
      // user out: the next getToken() is told why, so it can fetch a new
      // token rather than hand back a cached one.
      this._refusedReason = reason || "unauthorized";
      refused = new GatewayError("unauthorized", `closed with 4001: ${reason ?? ""}`);
      if (!wasConnected && ++this._refusedInARow >= MAX_REFUSED_TOKENS) {
        // getToken() keeps giving tokens the server refuses: looping would not help.
        this._wantConnected = false;
        this._stopped = true;
        this._failAll(() => new DisconnectedError(`tokens refused (4001 ${reason ?? ""}): call connect() again`));
        this._setState(State.DISCONNECTED, { code, reason, willReconnect: false });
        this._emit("error", refused);
        return;
      }
    }
    if (STOP_CODES.has(code) || (code === 1000 && !/heartbeat/i.test(reason ?? ""))) {
      // The server asked us not to come back at once (§4).
      this._wantConnected = false;
      this._stopped = true;
      this._failAll(() => new DisconnectedError(`closed by the server (${code} ${reason ?? ""})`));
      this._emit("error", new GatewayError(code === 1000 ? "disconnected" : "policy", `closed with ${code}: ${reason ?? ""}`));
      this._setState(State.DISCONNECTED, { code, reason, willReconnect: false });
      return;
    }
    if (code === 1012) this._attempt = 0;
    this._setState(State.DISCONNECTED, { code, reason, willReconnect: true, wasConnected });
    if (refused) this._emit("error", refused);
    this._scheduleReconnect(code);
  }

  _scheduleReconnect(code) {
    if (!this._wantConnected || this._timers.reconnect) return;
    const o = this.options;
    // Full jitter: uniform in [0, min(max, min·2^attempt)].
    const cap =
      code === 1012 && this._attempt === 0
        ? o.drainReconnectDelayMs
        : this._backoffCap(this._attempt);
    this._attempt += 1;
    const delay = Math.random() * cap;
    this._log("reconnect in", Math.round(delay), "ms");
    this._timers.reconnect = setTimeout(() => this._open(), delay);
  }

  /** The exponential back-off's bound before the `attempt`-th retry: min·2^attempt, at most max. */
  _backoffCap(attempt) {
    const o = this.options;
    return Math.min(o.maxReconnectDelayMs, o.minReconnectDelayMs * 2 ** Math.min(attempt, 30));
  }

  _online() {
    if (!this._wantConnected || this._ws || this._opening) return;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._attempt = 0;
    this._open();
  }

  _offline() {
    if (!this._ws) return;
    // The socket is dead or about to be; don't wait for a timeout to say so.
    this._dropSocket(1000, "browser offline");
    this._afterClose(1006, "browser offline");
  }

  _dropSocket(code, reason) {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onclose = ws.onmessage = ws.onopen = null;
    try {
      ws.close(code, reason);
    } catch {
      ws.close();
    }
  }

  _clearTimers() {
    for (const name of Object.keys(this._timers)) {
      clearTimeout(this._timers[name]);
      clearInterval(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _setState(state, detail) {
    if (this.state === state && state !== State.DISCONNECTED) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...detail });
  }

  // ---- frames in -----------------------------------------------------------

  _onFrame(text) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this._emit("error", new GatewayError("bad_request", "the server sent a frame that is not JSON"));
      return;
    }
    switch (frame.type) {
      case "event":
        this._onEvent(frame);
        break;
      case "ack":
      case "pong":
      case "presence":
        this._settle(frame.ref, frame, null);
        break;
      case "join":
      case "leave":
        // A user's first connection entered a presence room, or its last left.
        this._emit(frame.type, { room: frame.room, userId: frame.user_id });
        break;
      case "error":
        if (frame.ref !== undefined && this._pending.has(frame.ref)) {
          this._settle(frame.ref, null, new ReplyError(frame.code, frame.message));
        } else {
          this._emit("error", new ReplyError(frame.code, frame.message));
        }
        break;
      case "welcome":
        this._onWelcome(frame);
        break;
      default:
        // A newer server may add frame types: ignore what we don't know.
        break;
    }
  }

  _onEvent(frame) {
    // Sent before the server took our unsubscribe: the app has left.
    if (this._leaving.has(frame.room)) return;
    const offset = frame.offset;
    if (offset !== undefined) {
      const known = this._positions.get(frame.room);
      if (known === undefined) {
        this._positions.set(frame.room, { offset, epoch: frame.epoch });
      } else if (known.epoch === frame.epoch) {
        if (offset <= known.offset) {
          // Already handed to the app (a resume overlapping live delivery).
          this.stats.duplicatesDropped += 1;
          return;
        }
        known.offset = offset;
      } else {
        known.offset = offset;
        known.epoch = frame.epoch;
      }
    }
    const sub = this._subscriptions.get(frame.room);
    if (sub !== undefined && sub.onEvent !== null) this._call(sub.onEvent, frame);
    const listeners = this._listeners.event;
    for (let i = 0; i < listeners.length; i++) this._call(listeners[i], frame);
  }

  _onWelcome(welcome) {
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this.session = welcome;
    this.stats.connects += 1;
    const recovered = welcome.recovered ?? {};
    const positions = welcome.positions ?? {};
    for (const room of welcome.rooms ?? []) {
      const given = positions[room];
      if (given === undefined) continue;
      const known = this._positions.get(room);
      if (known === undefined) {
        this._positions.set(room, { offset: given.offset, epoch: given.epoch });
      } else if (recovered[room] === false) {
        this._reset(room, given);
      } else if (recovered[room] === undefined && !samePosition(known, given)) {
        // Not resumed, yet the room moved on from our position: say so
        // rather than continue past a gap.
        this._reset(room, given);
      }
      // recovered:true: keep ours; the missed events follow the welcome.
    }
    // Positions of rooms this connection is not in, nor asked for, are
    // stale: forget them rather than resend them in every auth frame.
    for (const room of this._positions.keys()) {
      if (!this._isTokenRoom(room) && !this._subscriptions.has(room)) this._positions.delete(room);
    }
    this._refusedReason = null;
    this._refusedInARow = 0;
    this._scheduleRefresh(welcome.expires_at);
    this._startHeartbeat(welcome.heartbeat_s);
    this._timers.stable = setTimeout(() => {
      this._attempt = 0;
    }, this.options.stableAfterMs);
    this._setState(State.CONNECTED, { connId: welcome.conn_id });
    this._emit("connected", welcome);
    // A subscribe that waited for the connection to a room the token turns
    // out to grant is answered here (the room was resumed with the auth
    // frame; subscribing again with a position would be refused).
    for (const ref of [...this._queued]) {
      const pending = this._pending.get(ref);
      if (pending && pending.kind === "subscribe" && this._isTokenRoom(pending.room)) {
        this._queued = this._queued.filter((r) => r !== ref);
        this._settle(ref, { type: "ack", position: this.position(pending.room) }, null);
      }
    }
    // Re-join the app's rooms, then send what waited for the connection.
    for (const sub of this._subscriptions.values()) {
      if (!this._isTokenRoom(sub.room) && !sub.joining) this._resubscribe(sub);
    }
    const queued = this._queued;
    this._queued = [];
    for (const ref of queued) this._send(ref);
  }

  _reset(room, position) {
    const known = this._positions.get(room);
    if (known) {
      known.offset = position.offset;
      known.epoch = position.epoch;
    } else {
      this._positions.set(room, { offset: position.offset, epoch: position.epoch });
    }
    this.stats.resets += 1;
    const sub = this._subscriptions.get(room);
    if (sub && sub.onReset) this._call(sub.onReset, { room, position: this.position(room) });
    this._emit("reset", { room, position: this.position(room) });
  }

  _resubscribe(sub) {
    this._join(sub).catch((err) => {
      if (!(err instanceof DisconnectedError || err instanceof ClosedError)) this._emit("error", err);
    });
  }

  // One subscribe of `sub` (from subscribe() or a reconnect), resolving with
  // the room's position. It is sent with the room's position when there is
  // one; the subscription ends only when the server refuses it.
  _join(sub, timeoutMs) {
    const room = sub.room;
    const current = () => this._subscriptions.get(room) === sub;
    const joining = this._command({ kind: "subscribe", room, sub }, timeoutMs)
      .catch((err) => {
        if (err instanceof ReplyError && err.code === "bad_request" && this._positions.has(room) && current()) {
          // Our position is not valid there (e.g. ahead of a restored
          // Redis): join afresh and tell the app to reload.
          this._positions.delete(room);
          sub.resetOnAck = true;
          return this._command({ kind: "subscribe", room, sub }, timeoutMs);
        }
        throw err;
      })
      .then(
        (ack) => this._subscribed(sub, ack),
        (err) => {
          if (err instanceof ReplyError && RETRY_CODES.has(err.code) && current()) {
            // The server could not take it now (e.g. its Redis is away):
            // keep the subscription and its position, and try again.
            this._retryJoin(sub);
          } else if (err instanceof ReplyError && current()) {
            // Refused (forbidden, bad_request): the subscription ends, and
            // so does its position, which would only be refused again.
            this._subscriptions.delete(room);
            if (!this._isTokenRoom(room)) this._positions.delete(room);
          }
          throw err;
        },
      )
      .finally(() => {
        if (sub.joining === joining) sub.joining = null;
      });
    sub.joining = joining;
    return joining;
  }

  // Join `sub` again after a back-off, if it is still wanted and nothing
  // else (a reconnect) joined it meanwhile.
  _retryJoin(sub) {
    sub.retries = (sub.retries ?? 0) + 1;
    const cap = this._backoffCap(sub.retries);
    setTimeout(() => {
      if (this._subscriptions.get(sub.room) !== sub || sub.joining || sub.joined) return;
      if (this.state === State.CONNECTED) this._resubscribe(sub);
    }, cap / 2 + Math.random() * (cap / 2));
  }

  _subscribed(sub, ack) {
    const room = sub.room;
    // Left (or subscribed anew) while the ack was on its way: nothing to record.
    if (this._subscriptions.get(room) !== sub) return null;
    sub.joined = true;
    sub.retries = 0;
    if (ack.position) {
      const given = ack.position;
      const known = this._positions.get(room);
      if (known === undefined) this._positions.set(room, { offset: given.offset, epoch: given.epoch });
      // Not resumed (a position given while a plain subscribe was on its
      // way), yet the room moved on from ours: say so, as for a refusal.
      const skipped = known !== undefined && ack.recovered === undefined && !samePosition(known, given);
      if (sub.resetOnAck || ack.recovered === false || skipped) this._reset(room, given);
    }
    sub.resetOnAck = false;
    return this.position(room);
  }

  // ---- frames out ----------------------------------------------------------

  _command(fields, timeoutMs) {
    if (this.state === State.CLOSED) return Promise.reject(new ClosedError());
    if (this._stopped) return Promise.reject(new DisconnectedError("stopped by the server: call connect() first"));
    const ref = String(this._nextRef++);
    return new Promise((resolve, reject) => {
      const pending = { ...fields, resolve, reject, sent: false, timeoutMs: timeoutMs ?? this.options.timeoutMs };
      // A subscription waits for the connection as long as it takes: its
      // timeout starts when it is sent. Any other command's runs from now.
      pending.timer = fields.kind === "subscribe" ? null : this._timeout(ref, pending.timeoutMs);
      this._pending.set(ref, pending);
      // (CONNECTED without a socket: inside a listener called as it closed.)
      if (this.state === State.CONNECTED && this._ws) this._send(ref);
      else this._queued.push(ref);
    });
  }

  _timeout(ref, ms) {
    return setTimeout(() => {
      const pending = this._pending.get(ref);
      if (!pending) return;
      this._abandon(ref, new TimeoutError(`no reply to ${pending.kind} within ${ms} ms`));
      if (pending.kind === "subscribe" && pending.sent && this._ws) {
        // Whether the server joined the room is unknown: start over, as
        // centrifuge-js does; the subscription is resumed on the next connection.
        this._dropSocket(CLOSE_NO_PONG, "subscribe timeout");
        this._afterClose(1006, "subscribe timeout");
      }
    }, ms);
  }

  // Fail a command that is pending (sent or not) and forget it.
  _abandon(ref, error) {
    const pending = this._pending.get(ref);
    if (!pending) return;
    this._pending.delete(ref);
    clearTimeout(pending.timer);
    this._queued = this._queued.filter((r) => r !== ref);
    pending.reject(error);
  }

  _send(ref) {
    const pending = this._pending.get(ref);
    if (!pending || !this._ws) return;
    const frame = { type: pending.kind, ref };
    if (pending.room !== undefined) frame.room = pending.room;
    if (pending.kind === "subscribe") {
      const known = this._positions.get(pending.room);
      if (known) frame.since = { offset: known.offset, epoch: known.epoch };
    } else if (pending.kind === "publish") {
      frame.event = pending.event;
      frame.data = pending.data;
      if (pending.echo === false) frame.echo = false;
    } else if (pending.kind === "refresh") {
      frame.token = pending.token;
    }
    let text;
    try {
      text = JSON.stringify(frame);
    } catch (cause) {
      // e.g. a BigInt in the data: this command fails, the others go on.
      this._abandon(ref, new GatewayError("bad_request", `cannot encode the ${pending.kind}: ${cause?.message ?? cause}`));
      return;
    }
    const max = this.options.maxFrameBytes;
    if (pending.kind === "publish" && text.length * 3 > max && utf8Length(text) > max) {
      this._abandon(
        ref,
        new GatewayError("limit_exceeded", `the publish is ${utf8Length(text)} bytes, more than maxFrameBytes (${max})`),
      );
      return;
    }
    if (pending.timer === null) pending.timer = this._timeout(ref, pending.timeoutMs);
    pending.sent = true;
    this._ws.send(text);
  }

  _settle(ref, value, error) {
    const pending = ref === undefined ? undefined : this._pending.get(ref);
    if (!pending) return;
    this._pending.delete(ref);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(value);
  }

  _failAll(makeError) {
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(makeError());
    }
    this._pending.clear();
    this._queued = [];
  }

  // ---- token refresh and heartbeat ----------------------------------------

  _scheduleRefresh(expiresAt) {
    clearTimeout(this._timers.refresh);
    if (typeof expiresAt !== "number") return;
    const remaining = expiresAt * 1000 - Date.now();
    const lead = Math.min(this.options.maxRefreshLeadMs, Math.max(0, remaining) * this.options.refreshLeadFraction);
    // At least a second: with a clock far ahead of the server's, every ack
    // would otherwise ask for the next refresh at once.
    const delay = Math.max(MIN_REFRESH_DELAY_MS, remaining - lead);
    // setTimeout holds at most 2^31-1 ms; a longer wait is re-armed.
    const capped = Math.min(delay, 2 ** 31 - 1);
    this._timers.refresh = setTimeout(() => {
      if (capped < delay) this._scheduleRefresh(expiresAt);
      else this._refresh();
    }, capped);
  }

  async _refresh(attempt = 0) {
    let token;
    try {
      token = await this.options.getToken({ refused: null });
    } catch (cause) {
      this._emit("error", new GatewayError("token", `getToken failed: ${cause?.message ?? cause}`));
      this._retryRefresh(attempt);
      return;
    }
    if (this.state !== State.CONNECTED) return;
    try {
      const ack = await this._command({ kind: "refresh", token });
      this._refreshed(ack);
    } catch (err) {
      if (err instanceof DisconnectedError || err instanceof ClosedError) return;
      this._emit("error", err);
      // e.g. a key the server has yet to fetch (unknown_key): try again.
      this._retryRefresh(attempt);
    }
  }

  // A refresh failed: try again, backing off, while the current token is
  // still valid (past its expiry the server closes with 4001 and the
  // reconnect asks for a token anyway).
  _retryRefresh(attempt) {
    const expiresAt = this.session?.expires_at;
    if (typeof expiresAt !== "number" || this.state !== State.CONNECTED) return;
    const remaining = expiresAt * 1000 - Date.now();
    if (remaining <= 0) return;
    const delay = Math.min(MIN_REFRESH_DELAY_MS * 2 ** Math.min(attempt, 5), remaining / 2);
    clearTimeout(this._timers.refresh);
    this._timers.refresh = setTimeout(() => this._refresh(attempt + 1), delay);
  }

  // The refreshed token's grants replace the old ones (§2): rooms it no
  // longer entitles were left by the server; its new own rooms joined.
  _refreshed(ack) {
    if (this.session) {
      this.session.expires_at = ack.expires_at;
      if (Array.isArray(ack.rooms)) this.session.rooms = ack.rooms;
    }
    for (const [room, position] of Object.entries(ack.positions ?? {})) {
      if (!this._positions.has(room)) this._positions.set(room, { offset: position.offset, epoch: position.epoch });
    }
    for (const room of ack.left ?? []) {
      this._subscriptions.delete(room);
      this._positions.delete(room);
      const error = new ReplyError("forbidden", `left ${room}: the refreshed token does not grant it`);
      error.room = room;
      this._emit("error", error);
    }
    this._scheduleRefresh(ack.expires_at);
  }

  _startHeartbeat(heartbeatS) {
    clearInterval(this._timers.heartbeat);
    const intervalMs = Math.max(1, Number(heartbeatS) || 25) * 1000;
    // The server pings us; browsers hide those pings, so we ping too when
    // nothing arrived for an interval, and take the server for gone when
    // our ping stays unanswered for an interval. Only an unanswered ping
    // counts: a hidden tab's timers fire as rarely as once a minute, and a
    // quiet socket is not a dead one.
    this._pingSentAt = null;
    this._timers.heartbeat = setInterval(() => {
      const now = Date.now();
      const unanswered = this._pingSentAt !== null && this._lastFrameAt < this._pingSentAt;
      if (unanswered && now - this._pingSentAt >= intervalMs) {
        this._log("no answer to our ping");
        this._dropSocket(CLOSE_NO_PONG, "no pong");
        this._afterClose(1006, "no pong");
        return;
      }
      if (!unanswered && now - this._lastFrameAt >= intervalMs) {
        this._pingSentAt = now;
        this._command({ kind: "ping" }).catch(() => {});
      }
    }, intervalMs);
  }

  // ---- helpers -------------------------------------------------------------

  _isTokenRoom(room) {
    return this.session !== null && Array.isArray(this.session.rooms) && this.session.rooms.includes(room);
  }

  // The auth frame's positions. The server resumes the token's own rooms
  // from theirs and ignores the rest (those are resumed by subscribe); the
  // client cannot tell the token's rooms before its first welcome, so it
  // sends every position it knows, the token's known rooms first, at most
  // as many as the server takes and as fit in `budget` bytes (a bigger
  // frame would be closed with 1009 on every attempt).
  _authSince(budget) {
    if (this._positions.size === 0) return null;
    const rooms = [...this._positions.keys()];
    rooms.sort((a, b) => Number(this._isTokenRoom(b)) - Number(this._isTokenRoom(a)));
    const since = {};
    let bytes = 2;
    for (const room of rooms.slice(0, MAX_SINCE_ROOMS)) {
      const position = this.position(room);
      // Room names and epochs are ASCII (checked when they were given).
      bytes += room.length + JSON.stringify(position).length + 4;
      if (bytes > budget) break;
      since[room] = position;
    }
    return since;
  }

  _emit(name, value) {
    const list = this._listeners[name];
    for (let i = 0; i < list.length; i++) this._call(list[i], value);
    if (name === "error" && list.length === 0) this._log("error", value);
  }

  _call(fn, value) {
    try {
      fn(value);
    } catch (err) {
      // An app listener that throws must not break the connection.
      setTimeout(() => {
        throw err;
      });
    }
  }

  _log(...args) {
    if (this.options.debug) console.debug("[wsgate]", ...args);
  }
}

function samePosition(a, b) {
  return a.offset === b.offset && a.epoch === b.epoch;
}

/** Why the server would refuse `room` as a room name, or null. */
function invalidRoom(room) {
  if (room.length <= MAX_ROOM_LEN && ROOM_NAME.test(room)) return null;
  return `invalid room name ${JSON.stringify(room.slice(0, 64))}: namespace:id, at most ${MAX_ROOM_LEN} characters`;
}

/** Why the server would refuse `since` as a position, or null. */
function invalidPosition(since) {
  if (Number.isSafeInteger(since.offset) && since.offset >= 0 && typeof since.epoch === "string" && EPOCH.test(since.epoch)) {
    return null;
  }
  return `invalid since ${JSON.stringify(since)}: {offset: an integer ≥ 0, epoch: the string the server sent}`;
}

/** UTF-8 bytes of a string, without encoding it. */
function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i += 1;
    } else bytes += 3;
  }
  return bytes;
}

export default Gateway;
