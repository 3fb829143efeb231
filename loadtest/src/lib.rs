//! # wsgate-loadtest — the load generator
//!
//! Opens many authenticated WebSocket sockets to wsgate (or to a peer: the
//! bare broadcaster, Socket.IO), publishes events through Redis (plain or
//! durable) or the HTTP API, and measures what arrives: loss, duplicates,
//! misrouted events, latency percentiles, deliveries per second, and the
//! servers' CPU and memory; in durable rooms, every socket's offsets across
//! its reconnects and resumes (soak, storm). The binary is a thin CLI over
//! [`run`]; the root crate's integration tests call [`run`] in-process.
//!
//! ## Map
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line → [`RunConfig`] |
//! | [`config`] | what a run is asked to do, and its validation |
//! | [`run`](mod@run) | the phases of a run: ramp, hold or publish, settle, stop, report |
//! | [`soak`] | the soak's middle phase: durable events for `--duration`, RSS sampled |
//! | [`storm`] | the storm's middle phase: SIGTERM to node A, every socket resumes on B, B measured |
//! | [`fleets`] | all sockets behind one handle: this process's or the workers' |
//! | [`workers`] | worker processes: the JSON-lines protocol, both ends |
//! | [`client`] | sockets: dial, one session, one process's fleet, live counters |
//! | [`publish`] | the paced publisher: pipelined Redis `PUBLISH` or `FCALL wsgate_publish`, or the HTTP API |
//! | [`wire`] | the frames: parse what targets send (offsets, welcome positions); the marker in event data; the auth frame |
//! | [`stats`] | loss/duplicate/misrouted accounting, per-room offsets, latency histograms, merges |
//! | [`procstat`] | server CPU and RSS from /proc |
//! | [`rss`] | the servers' RSS over time, and its growth |
//! | [`scrape`] | the nodes' recovery counters from `/metrics` |
//! | [`report`] | the report: JSON line, human summary, markdown |
//! | [`progress`] | the status line on stderr |
//! | [`target`] | target URLs, per-protocol paths, the loopback rule |
//! | [`token`] | HS256 tokens for the simulated users |
//! | [`clock`] | the Unix-nanosecond clock events are stamped with |
//! | [`nofile`] | raising the open-files limit |

pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod fleets;
pub mod nofile;
pub mod procstat;
pub mod progress;
pub mod publish;
pub mod report;
pub mod rss;
pub mod run;
pub mod scrape;
pub mod soak;
pub mod stats;
pub mod storm;
pub mod target;
pub mod token;
pub mod wire;
pub mod workers;

pub use config::{Protocol, PublishVia, RunConfig, ScenarioKind};
pub use report::Report;
pub use run::run;
