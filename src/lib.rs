//! # wsgate — a real-time WebSocket gateway
//!
//! Browsers connect to `/v1/ws` with a JWT; the node places each socket in
//! its `user:`, `org:` and `role:` rooms and fans out every event that
//! backends publish to a room's Redis channel (or to the HTTP API), on every
//! node. The contract is `docs/PROTOCOL.md`.
//!
//! ## Map
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line: `serve` (default), `check-config`, `token`, `tail`, `publish` |
//! | [`config`] | the validated config: defaults < file < `WSGATE_*` < flags |
//! | [`telemetry`] | tracing set-up (text or JSON) |
//! | [`metrics`] | metric names, descriptions, the Prometheus recorder |
//! | [`server`] | the listener, HTTP connections, the drain on SIGTERM |
//! | [`tls`] | optional rustls on the listener |
//! | [`client_tls`] | rustls for the node's own clients: Redis (`rediss://`), the CLI's `wss://` and `https://` |
//! | [`http`] | routes: the upgrade, `/health` `/ready` `/metrics`, `/api/v1`, `/v1/client.js`, the dev demo |
//! | [`gateway`] | the node's shared state and its join/leave/publish |
//! | [`auth`] | JWT → [`auth::Identity`] and its own rooms; keys, JWKS, token signing |
//! | [`idempotency`] | `Idempotency-Key` on API publishes: what each key reached |
//! | [`revocation`] | tokens revoked by the server API, refused on every node |
//! | [`permissions`] | roles → grants, the room rules |
//! | [`presence`] | this node's members of presence rooms, batched into the broker, heartbeated |
//! | [`room`] | validated room names |
//! | [`protocol`] | wire frames: parse client commands, encode once |
//! | [`session`] | one connection's task: reader, batched writer, timers, the close path |
//! | [`sse`] | `GET /v1/sse`: listen-only connections, resumable with `Last-Event-ID` |
//! | [`hub`] | connection shards, room members, fan-out, per-room broker subscriptions |
//! | [`broker`] | the broker interface, `memory` and `redis` implementations |
//! | [`limits`] | token buckets for client frames and handshakes per IP |
//! | [`close`] | close reasons → close codes and metric labels |
//! | [`shutdown`] | the drain signal and the task tracker |
//! | [`fingerprint`] | content hashes that version generated and embedded files |
#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod cli;
pub mod client_tls;
pub mod close;
pub mod config;
pub mod fingerprint;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod permissions;
pub mod presence;
pub mod protocol;
pub mod revocation;
pub mod room;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sse;
pub mod telemetry;
pub mod tls;
