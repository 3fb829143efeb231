//! The broker: how events reach this node and how this node publishes.
//!
//! One small interface, two implementations: [`memory::MemoryBroker`] (one
//! node, no dependencies: the embedded default) and [`redis::RedisBroker`]
//! (many nodes on Redis pub/sub, through fred). [`history`] holds what both
//! share of durable rooms: positions and the framing of durable events.
//!
//! Guarantees every implementation gives, checked by the conformance suite in
//! `tests/broker_conformance.rs`:
//! - an event published to a room reaches every node subscribed to that room
//!   at that moment, at most once (pub/sub: no history, no retry);
//! - [`Broker::publish_durable`] records the event in the room's history and
//!   publishes it atomically: it gets the room's next offset (the previous
//!   plus one, the first is 1) in the room's epoch, and reaches subscribers
//!   framed with that position ([`history::frame`]), in offset order;
//! - [`Broker::history`] returns the room's position and the kept events
//!   after an offset, read at one instant; a room's epoch exists from its
//!   first read or write and changes only when its history is lost;
//! - events of one publisher to one room arrive in publish order;
//! - `subscribe` resolves only once the subscription is live, so an event
//!   published after it resolves is delivered;
//! - the node is subscribed only to rooms it asked for: no pattern
//!   subscription, so a node receives traffic only for rooms it serves;
//! - [`Broker::presence_update`] sets one node's members of a room (counts
//!   per user) and [`Broker::presence`] sums the counts of every node whose
//!   entry is live: a node that stops updating drops out after
//!   `presence.ttl_s`. With `presence.events`, a user's first connection
//!   anywhere and its last one leaving are published to the room as
//!   [`presence::marker`]s, decided on the summed counts;
//! - the sink is called from the broker's reader and must not block it.

pub mod history;
pub mod memory;
pub mod presence;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::idempotency::Reached;
use crate::revocation::Revocation;
use crate::room::RoomName;
pub use history::{HistoryPage, Position};

/// Where the broker hands what it receives. Implemented by the hub.
pub trait EventSink: Send + Sync + 'static {
    /// An event payload (docs/PROTOCOL.md §5) arrived on `room`'s channel.
    /// Must return quickly: it runs on the broker's reader.
    fn deliver(&self, room: &str, payload: Bytes);
    /// A node-to-node control message arrived (e.g. disconnect a user).
    fn control(&self, payload: Bytes);
    /// The broker reconnected and every live room is subscribed again:
    /// events published meanwhile were not received.
    fn resubscribed(&self) {}
    /// The broker is up: connected for the first time, or again.
    fn connected(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker is unavailable")]
    Unavailable,
    #[error("broker did not answer in time")]
    Timeout,
    #[error("broker error: {0}")]
    Backend(String),
}

pub trait Broker: Send + Sync + 'static {
    /// Start receiving `room`'s events; resolves once the subscription is live.
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Stop receiving `room`'s events.
    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Publish an event payload to every node subscribed to `room`.
    fn publish<'a>(&'a self, room: &'a RoomName, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Append an event payload to `room`'s history and publish it, in one
    /// atomic step; returns the event's position. The payload is one the
    /// gateway has parsed (a [`crate::protocol::BackendEvent`]): it is not
    /// checked again.
    fn publish_durable<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Position, BrokerError>>;
    /// `room`'s current position and at most `limit` kept events after
    /// offset `since`, oldest first. When more than `max_gap` events follow
    /// `since`, no events are read (the caller could not use a partial range).
    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        since: u64,
        limit: usize,
        max_gap: u64,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>>;
    /// Apply `node`'s presence updates, in one round trip; per update,
    /// whether the node's entry in the room is live after it.
    fn presence_update<'a>(
        &'a self,
        node: &'a str,
        updates: &'a [presence::RoomUpdate],
    ) -> BoxFuture<'a, Result<presence::Applied, BrokerError>>;
    /// The users in `room` on every live node, by user id.
    fn presence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<Vec<presence::Member>, BrokerError>>;
    /// Send a control message to every node, this one included.
    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Keep `user`'s revocation where nodes that start or reconnect later
    /// find it (the memory broker has no other node: nothing to keep).
    fn store_revocation<'a>(&'a self, user: &'a str, revocation: Revocation) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// The rooms a publish with this `Idempotency-Key` reached, and the
    /// positions it got there.
    fn idempotent_reached<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Reached, BrokerError>>;
    /// Record that the publish with this key reached `room`.
    fn idempotent_record<'a>(
        &'a self,
        key: &'a str,
        room: &'a str,
        position: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Every stored revocation still in force at `now`.
    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<(String, Revocation)>, BrokerError>>;
    /// True while connected with every requested subscription live.
    fn is_up(&self) -> bool;
    /// `memory` or `redis`: the `source` label of received events.
    fn kind(&self) -> &'static str;
    /// Disconnect at shutdown.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Channel name of a room.
pub fn room_channel(prefix: &str, room: &str) -> String {
    let mut channel = String::with_capacity(prefix.len() + room.len());
    channel.push_str(prefix);
    channel.push_str(room);
    channel
}

/// The hash of stored revocations: field = user, value = a JSON
/// [`Revocation`]. `$` keeps it apart from every room's keys.
pub fn revocations_key(prefix: &str) -> String {
    format!("{prefix}$revocations")
}

/// The hash of what one `Idempotency-Key` reached: field = room.
pub fn idempotency_key(prefix: &str, key: &str) -> String {
    format!("{prefix}$idem:{key}")
}

/// The control channel. `$` cannot occur in a room name, so it never
/// collides with a room's channel.
pub fn control_channel(prefix: &str) -> String {
    format!("{prefix}$control")
}

/// Build the configured broker: Redis when a URL is set, memory otherwise.
pub async fn from_config(
    config: &crate::config::Config,
    sink: Arc<dyn EventSink>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    match &config.redis.url {
        Some(url) => Ok(Arc::new(redis::RedisBroker::connect(
            url.expose(),
            &config.redis,
            &config.history,
            &config.presence,
            config.limits.max_event_bytes,
            sink,
        )?)),
        None => Ok(Arc::new(memory::MemoryBroker::new(
            sink,
            &config.history,
            &config.presence,
        ))),
    }
}
