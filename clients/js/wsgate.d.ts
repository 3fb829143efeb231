// TypeScript declarations for wsgate.js (the wsgate browser client).

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export declare const State: {
  readonly CONNECTING: "connecting";
  readonly CONNECTED: "connected";
  readonly DISCONNECTED: "disconnected";
  readonly CLOSED: "closed";
};

/** Where a durable room stood after event `offset` (docs/PROTOCOL.md §10). */
export interface Position {
  offset: number;
  epoch: string;
}

/** An event frame, exactly as the server sent it. */
export interface GatewayEvent<T = unknown> {
  type: "event";
  room: string;
  event: string;
  data: T;
  /** Durable rooms only. */
  offset?: number;
  epoch?: string;
  /** The user id of the client that published it, when a client did. */
  from?: string;
  /** The backend's id, when it gave one. */
  id?: string;
}

export interface Welcome {
  type: "welcome";
  conn_id: string;
  user_id: string;
  rooms: string[];
  expires_at: number;
  heartbeat_s: number;
  positions?: Record<string, Position>;
  recovered?: Record<string, boolean>;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  code?: number;
  reason?: string;
  willReconnect?: boolean;
  wasConnected?: boolean;
  connId?: string;
}

export interface Reset {
  room: string;
  /** The position to continue from after reloading the room's state. */
  position: Position | null;
}

export interface GatewayOptions {
  /**
   * Returns a JWT; called on every (re)connect and before expiry.
   * `refused` is the reason the server gave when it closed the last
   * connection with 4001 (the token expired, was revoked, or is bad): fetch
   * a new token then rather than hand back a cached one. After two tokens in
   * a row are refused before a welcome the client stops (state
   * "disconnected", willReconnect false) until connect() is called again.
   */
  getToken: (context: { refused: string | null }) => string | Promise<string>;
  /** Back-off floor and ceiling (full jitter). Defaults 500 and 20000. */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** The first retry after a 1012 waits at most this long. Default 250. */
  drainReconnectDelayMs?: number;
  /**
   * How long a command (and the welcome) may take. Default 10000. It runs
   * from the call, the wait for a connection included, except for
   * subscribe: a subscription waits for the connection as long as it
   * takes, and its timeout runs from when it is sent (on expiry the client
   * reconnects, and the subscription is resumed).
   */
  timeoutMs?: number;
  /** A connection up this long resets the back-off. Default 5000. */
  stableAfterMs?: number;
  /** Refresh when this share of the token's life is left. Default 0.25. */
  refreshLeadFraction?: number;
  /** ...but never earlier than this before expiry. Default 30000. */
  maxRefreshLeadMs?: number;
  /**
   * The server's ws.max_frame_bytes. Default 65536. A larger publish is
   * refused here (GatewayError "limit_exceeded") instead of being sent and
   * closing the socket with 1009.
   */
  maxFrameBytes?: number;
  /** Log to console.debug. */
  debug?: boolean;
}

export interface SubscribeOptions<T = unknown> {
  onEvent?: (event: GatewayEvent<T>) => void;
  onReset?: (reset: Reset) => void;
  /**
   * Resume from a stored position (e.g. after a page reload). One the
   * server could not take (not an integer offset ≥ 0 and the epoch string
   * it sent) rejects with GatewayError "bad_request" and is not kept.
   */
  since?: Position;
  timeoutMs?: number;
}

export interface PublishOptions {
  /** false: the publishing connection does not get its own event. */
  echo?: boolean;
  timeoutMs?: number;
}

/** A presence room's member: a user and how many connections it has there. */
export interface PresenceMember {
  user_id: string;
  connections: number;
}

/** A user's first connection entered a presence room, or its last one left. */
export interface PresenceChange {
  room: string;
  userId: string;
}

export interface GatewayEvents {
  event: GatewayEvent;
  state: StateChange;
  reset: Reset;
  error: GatewayError;
  connected: Welcome;
  /** Only in presence rooms with presence.events on. */
  join: PresenceChange;
  leave: PresenceChange;
}

export declare class GatewayError extends Error {
  /**
   * A protocol error code (e.g. "forbidden", "limit_exceeded"; "unauthorized"
   * for a 4001 close), or "disconnected", "closed", "timeout", "token", "policy".
   */
  readonly code: string;
  /** The room a `forbidden` error names when a refreshed token no longer grants it. */
  room?: string;
}
export declare class ReplyError extends GatewayError {}
export declare class DisconnectedError extends GatewayError {}
/** The command was abandoned: close() was called, or unsubscribe() before a waiting subscribe was sent. */
export declare class ClosedError extends GatewayError {}
export declare class TimeoutError extends GatewayError {}

export declare class Gateway {
  constructor(url: string, options: GatewayOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** The last welcome, or null before the first. */
  readonly session: Welcome | null;
  readonly stats: { connects: number; duplicatesDropped: number; resets: number };

  on<K extends keyof GatewayEvents>(name: K, fn: (value: GatewayEvents[K]) => void): () => void;
  off<K extends keyof GatewayEvents>(name: K, fn: (value: GatewayEvents[K]) => void): void;

  connect(): void;
  close(): void;

  subscribe<T = unknown>(room: string, options?: SubscribeOptions<T>): Promise<Position | null>;
  unsubscribe(room: string): Promise<void>;
  publish(room: string, event: string, data?: unknown, options?: PublishOptions): Promise<Position | null>;

  /** Who is in a presence room, cluster-wide. */
  presence(room: string, options?: { timeoutMs?: number }): Promise<PresenceMember[]>;

  position(room: string): Position | null;
  positions(): Record<string, Position>;
}

export default Gateway;
