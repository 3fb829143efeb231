//! The hub: every live connection of this node, sharded, each shard with its
//! members of each room in a concurrent map, and the fan-out of events.
//!
//! - [`connection`]: one connection's handle and bounded send queue.
//! - [`subscriptions`]: node-wide member counts per room and the broker
//!   subscribe/unsubscribe that follow the first join and the last leave.
//! - [`durable`]: durable rooms' delivery order, joining connections held
//!   while their history is read, and the repair of gaps.
//!
//! The hub is the one owner of membership: a connection becomes a member of
//! a room here ([`Hub::admit`], then [`Hub::settle`] for a durable room that
//! needed a history read) and stops being one here ([`Hub::leave`],
//! [`Hub::unregister`]), and each change is reported to [`Presence`] for
//! the rooms that have it.
//!
//! Fan-out encodes an event's client frame once and pushes the same
//! refcounted bytes to every member, shard by shard, without awaiting and
//! without a global lock: it holds one shard's read lock on the room's
//! member map at a time, and each push takes the recipient's queue lock
//! (and wakes its writer). Joins and leaves in other shards go on meanwhile.

pub mod connection;
pub mod durable;
pub mod node_queue;
pub mod subscriptions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::broker::{Broker, EventSink, HistoryPage, Position, history, presence as presence_wire};
use crate::close::CloseReason;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::{BackendEvent, Joined, encode_event, encode_presence_change};
use crate::revocation::{Revocation, Revocations};
use crate::room::RoomName;
pub use connection::{Batch, ConnId, Connection, Pushed, Queued, Transport};
use durable::{Effects, Hold, LiveEvent, Resolved, Tails};
use node_queue::NodeQueue;

/// Repair reads in flight at once after a reconnect, so that a node with
/// many durable rooms does not flood Redis.
const CONCURRENT_REPAIRS: usize = 64;

/// Members of one room within one shard: id beside handle, so a leave scans
/// a dense array without touching every connection.
type Members = Vec<(ConnId, Arc<Connection>)>;

struct Shard {
    rooms: DashMap<RoomName, Members>,
}

/// A node-to-node control message, sent through the broker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Close every socket of `user` on every node with 4001; with `revoke`,
    /// first refuse the user's tokens issued before its cutoff.
    Disconnect {
        user: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revoke: Option<Revocation>,
    },
}

/// The hub's bounds, from `ws.send_queue_bytes` and `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// One connection's send queue (`ws.send_queue_bytes`).
    pub queue_limit: usize,
    /// Plain events larger than this are dropped.
    pub max_event_bytes: usize,
    /// Connections of one user on this node; 0 is unlimited.
    pub max_per_user: usize,
    /// Bytes queued for all sockets together; 0 is unlimited.
    pub max_queued_bytes: usize,
}

/// Why a connection could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyConnections;

/// How [`Hub::admit`] went.
pub enum Admission {
    /// A member now; a durable room's position (and recovery) if durable.
    Live(Option<Joined>),
    /// Held in a durable room: read its history, then [`Hub::settle`].
    Held,
}

/// How [`Hub::settle`] went.
pub enum Settled {
    Joined(Joined),
    /// The client's offset is ahead of the room's. `release` is true when
    /// the caller must release the room's subscription.
    Ahead {
        position: Position,
        release: bool,
    },
    /// The connection closed meanwhile; its close path releases the room.
    Gone,
}

pub struct Hub {
    node_id: String,
    shards: Box<[Shard]>,
    /// Every connection of each user on this node: the per-user limit, the
    /// API's listing and the disconnect command read it.
    users: DashMap<Arc<str>, Vec<Arc<Connection>>>,
    next_id: AtomicU64,
    queue_limit: usize,
    /// Plain events larger than this are dropped (`limits.max_event_bytes`).
    max_event_bytes: usize,
    max_per_user: usize,
    metrics: Metrics,
    received: Counter,
    /// Rate-limits the warning about invalid payloads to one a second.
    last_invalid_log: AtomicU64,
    tails: Arc<Tails>,
    /// The broker, for repair reads. Weak: the broker holds the hub as its sink.
    broker: OnceLock<Weak<dyn Broker>>,
    repairs: tokio::sync::Semaphore,
    /// Bytes queued for every socket of the node, and its bound.
    node_queue: Arc<NodeQueue>,
    /// Tokens revoked by the server API, refused on this node.
    revocations: Revocations,
    /// Told of every membership change in a presence room.
    presence: OnceLock<Arc<Presence>>,
    me: Weak<Hub>,
}

impl Hub {
    pub fn new(
        node_id: String,
        shards: usize,
        limits: HubLimits,
        broker_kind: &'static str,
        tails: Arc<Tails>,
    ) -> Arc<Self> {
        let shards = shards.max(1);
        let HubLimits {
            queue_limit,
            max_event_bytes,
            max_per_user,
            max_queued_bytes,
        } = limits;
        Arc::new_cyclic(|me| Self {
            node_queue: Arc::new(NodeQueue::new(max_queued_bytes)),
            tails,
            broker: OnceLock::new(),
            repairs: tokio::sync::Semaphore::new(CONCURRENT_REPAIRS),
            revocations: Revocations::default(),
            presence: OnceLock::new(),
            me: me.clone(),
            node_id,
            shards: (0..shards).map(|_| Shard { rooms: DashMap::new() }).collect(),
            users: DashMap::new(),
            next_id: AtomicU64::new(1),
            queue_limit,
            max_event_bytes,
            max_per_user,
            metrics: Metrics::new(),
            received: Metrics::events_received(broker_kind),
            last_invalid_log: AtomicU64::new(0),
        })
    }

    /// Give the hub the broker it reads repairs from.
    pub fn attach_broker(&self, broker: &Arc<dyn Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    /// Give the hub the presence tracker it reports membership to.
    pub fn attach_presence(&self, presence: Arc<Presence>) {
        let _ = self.presence.set(presence);
    }

    /// `conn` is in `room` now (its room list; the member map is separate).
    fn add_room(&self, room: &RoomName, conn: &Connection) {
        conn.add_room(room.clone());
        if let Some(presence) = self.presence.get() {
            presence.joined(room, &conn.user_id);
        }
    }

    /// `conn` is out of `room`; false if it was not in it.
    fn drop_room(&self, room: &RoomName, conn: &Connection) -> bool {
        let was_in = conn.remove_room(room);
        if was_in && let Some(presence) = self.presence.get() {
            presence.left(room, &conn.user_id);
        }
        was_in
    }

    /// Bytes queued for this node's sockets now.
    pub fn queued_bytes(&self) -> usize {
        self.node_queue.total()
    }

    /// Keep the node under `limits.max_queued_bytes` for as long as it runs:
    /// when a push finds it over, close the largest queues first (4009)
    /// until it is back under 90 % of the bound.
    pub fn spawn_shedder(self: &Arc<Self>) {
        if self.node_queue.limit() == 0 {
            return;
        }
        let hub = Arc::downgrade(self);
        let queue = self.node_queue.clone();
        tokio::spawn(async move {
            loop {
                queue.shed_requested().await;
                let Some(hub) = hub.upgrade() else { return };
                hub.shed_largest();
                // A flood keeps requesting: one round per 10 ms is enough.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
    }

    fn shed_largest(&self) {
        let target = self.node_queue.limit() / 10 * 9;
        let mut queues: Vec<(usize, Arc<Connection>)> =
            self.connections().into_iter().map(|c| (c.queued_bytes(), c)).collect();
        queues.sort_unstable_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        let mut shed = 0;
        for (bytes, conn) in queues {
            if bytes == 0 || self.node_queue.total() <= target {
                break;
            }
            Metrics::messages_dropped("queue_limit", conn.shed());
            shed += 1;
        }
        if shed > 0 {
            tracing::warn!(
                closed = shed,
                queued_bytes = self.node_queue.total(),
                limit = self.node_queue.limit(),
                "over limits.max_queued_bytes: closed the largest queues (4009)"
            );
        }
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Load every revocation in force from the broker, in the background.
    pub fn reload_revocations(&self) {
        let (Some(hub), Some(broker)) = (self.me.upgrade(), self.broker.get().and_then(Weak::upgrade)) else {
            return;
        };
        tokio::spawn(async move {
            match broker.revocations(crate::hub::connection::unix_now()).await {
                Ok(all) => {
                    for (user, revocation) in all {
                        hub.revocations.record(&user, revocation);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot load the token revocations"),
            }
        });
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn shard(&self, id: ConnId) -> &Shard {
        // `shards` is never empty (see `new`).
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    /// The id clients and the API see: node id and local id.
    pub fn external_id(&self, id: ConnId) -> String {
        format!("{}-{id:x}", self.node_id)
    }

    /// The local id of an external id, if it belongs to this node.
    pub fn local_id(&self, external: &str) -> Option<ConnId> {
        let hex = external.strip_prefix(self.node_id.as_str())?.strip_prefix('-')?;
        u64::from_str_radix(hex, 16).ok()
    }

    /// Register a new authenticated connection, enforcing the per-user limit.
    pub fn register(
        &self,
        user_id: Arc<str>,
        remote: SocketAddr,
        transport: Transport,
    ) -> Result<Arc<Connection>, TooManyConnections> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection::new(
            id,
            user_id.clone(),
            remote,
            transport,
            self.queue_limit,
            self.node_queue.clone(),
        ));
        let mut entry = self.users.entry(user_id).or_default();
        if self.max_per_user > 0 && entry.len() >= self.max_per_user {
            return Err(TooManyConnections);
        }
        entry.push(conn.clone());
        drop(entry);
        self.metrics.connections[transport as usize].increment(1.0);
        self.metrics.connections_opened[transport as usize].increment(1);
        Ok(conn)
    }

    /// Remove a connection from the user index and from every room of its
    /// shard; returns the rooms it was in, for the broker-side release.
    pub fn unregister(&self, conn: &Connection) -> Vec<RoomName> {
        let rooms = conn.take_rooms();
        for room in &rooms {
            self.remove_member(room, conn);
            if let Some(presence) = self.presence.get() {
                presence.left(room, &conn.user_id);
            }
        }
        if let dashmap::Entry::Occupied(mut entry) = self.users.entry(conn.user_id.clone()) {
            entry.get_mut().retain(|c| c.id != conn.id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
        self.metrics.connections[conn.transport as usize].decrement(1.0);
        rooms
    }

    /// Make `conn` a member of `room`. The caller has made the room live
    /// on the broker first. A durable room's member gets its position; with
    /// `since`, also the events it missed. `preamble` (the subscribe ack) is
    /// queued before them.
    pub fn admit(
        &self,
        room: &RoomName,
        conn: &Arc<Connection>,
        since: Option<&Position>,
        preamble: impl FnOnce(&Joined) -> Option<Utf8Bytes>,
    ) -> Admission {
        let Some(tail) = self.tails.get(room.as_str()) else {
            self.insert_member(room, conn);
            self.add_room(room, conn);
            return Admission::Live(None);
        };
        let mut tail = durable::lock(&tail);
        self.add_room(room, conn);
        match tail.hold(conn, since, Instant::now()) {
            Hold::Served {
                position,
                recovered,
                frames,
            } => {
                let joined = Joined { position, recovered };
                self.queue_joined(conn, &joined, frames, preamble, "node");
                self.insert_member(room, conn);
                Admission::Live(Some(joined))
            }
            Hold::Held => Admission::Held,
        }
    }

    /// A held connection's history read came back: merge it with the live
    /// events buffered meanwhile and make the connection a member.
    pub fn settle(
        &self,
        room: &RoomName,
        conn: &Arc<Connection>,
        since: Option<&Position>,
        page: &HistoryPage,
        preamble: impl FnOnce(&Joined) -> Option<Utf8Bytes>,
    ) -> Settled {
        let Some(tail) = self.tails.get(room.as_str()) else {
            return Settled::Gone;
        };
        let mut tail = durable::lock(&tail);
        let epoch = page.position.epoch.clone();
        let encode = |offset: u64, payload: &Bytes| self.encode_kept(room.as_str(), offset, &epoch, payload);
        let (resolved, effects) = tail.resolve(conn.id, since, page, encode, Instant::now());
        let settled = match resolved {
            Resolved::Joined {
                position,
                recovered,
                frames,
                live,
            } => {
                let joined = Joined { position, recovered };
                self.queue_joined(conn, &joined, frames, preamble, "broker");
                if live {
                    self.insert_member(room, conn);
                }
                Settled::Joined(joined)
            }
            Resolved::Ahead(position) => Settled::Ahead {
                position,
                release: self.drop_room(room, conn),
            },
            Resolved::Gone => Settled::Gone,
        };
        self.apply(room, effects);
        settled
    }

    /// A held connection's read failed: it leaves the room. True when the
    /// caller must release the room's subscription.
    pub fn abandon(&self, room: &RoomName, conn: &Connection) -> bool {
        self.remove_member(room, conn);
        self.drop_room(room, conn)
    }

    fn queue_joined(
        &self,
        conn: &Connection,
        joined: &Joined,
        frames: Vec<Utf8Bytes>,
        preamble: impl FnOnce(&Joined) -> Option<Utf8Bytes>,
        read_from: &'static str,
    ) {
        if let Some(recovered) = joined.recovered {
            Metrics::recovery(recovered, read_from);
        }
        if let Some(frame) = preamble(joined) {
            conn.push(frame, None);
        }
        if !frames.is_empty() {
            self.metrics.events_recovered.increment(frames.len() as u64);
        }
        for frame in frames {
            conn.push_recovered(frame);
        }
    }

    /// Carry out what a step of a durable room's tail decided, under its lock.
    fn apply(&self, room: &RoomName, effects: Effects) {
        for event in &effects.deliver {
            self.fan_out(room.as_str(), &event.frame, event.skip, event.received_at);
        }
        for conn in &effects.promoted {
            self.insert_member(room, conn);
        }
        if effects.recovered > 0 {
            self.metrics.events_recovered.increment(effects.recovered);
        }
        if effects.close_members {
            tracing::warn!(%room, "durable room lost continuity (gap or new epoch); its members resume");
            self.close_members(room.as_str(), CloseReason::InsufficientState);
        }
        for conn in &effects.close_held {
            conn.close(CloseReason::InsufficientState);
        }
        if let Some(from) = effects.repair_from {
            self.spawn_repair(room.clone(), from);
        }
    }

    fn spawn_repair(&self, room: RoomName, from: u64) {
        let Some(hub) = self.me.upgrade() else { return };
        tokio::spawn(async move { hub.repair(room, from).await });
    }

    /// Read what the node missed of `room` after `from` and hand it to the tail.
    async fn repair(&self, room: RoomName, from: u64) {
        let size = self.tails.config().size;
        let page = match self.broker.get().and_then(Weak::upgrade) {
            Some(broker) => {
                let _permit = self.repairs.acquire().await;
                broker.history(&room, from, size, size as u64).await.map_err(|error| {
                    tracing::warn!(%room, %error, "repair read failed");
                })
            }
            None => Err(()),
        };
        let Some(tail) = self.tails.get(room.as_str()) else {
            return;
        };
        let mut tail = durable::lock(&tail);
        let epoch = page
            .as_ref()
            .map(|p| p.position.epoch.clone())
            .unwrap_or_else(|_| Arc::from(""));
        let encode = |offset: u64, payload: &Bytes| self.encode_kept(room.as_str(), offset, &epoch, payload);
        let effects = tail.repaired(from, page.as_ref().map_err(|_| ()), encode, Instant::now());
        self.apply(&room, effects);
    }

    /// A durable event this node cannot read: its room's members may not
    /// be shown the stream without it (docs/PROTOCOL.md §10).
    fn lose_unreadable(&self, room: &str, offset: u64, epoch: &str) {
        if let Some((name, tail)) = self.tails.get_named(room) {
            let effects = durable::lock(&tail).unreadable(offset, Arc::from(epoch));
            self.apply(&name, effects);
        }
    }

    /// The frame of an event read back from history.
    fn encode_kept(&self, room: &str, offset: u64, epoch: &str, payload: &Bytes) -> Option<Utf8Bytes> {
        match BackendEvent::parse(payload) {
            Ok(event) => Some(encode_event(room, &event, Some((offset, epoch)))),
            Err(error) => {
                self.drop_invalid(room, &error);
                None
            }
        }
    }

    /// Close every member of `room` on this node, live and held.
    fn close_members(&self, room: &str, reason: CloseReason) {
        for shard in self.shards.iter() {
            if let Some(members) = shard.rooms.get(room) {
                for (_, conn) in members.iter() {
                    conn.close(reason.clone());
                }
            }
        }
    }

    /// Put `conn` in `room`'s members on its shard.
    fn insert_member(&self, room: &RoomName, conn: &Arc<Connection>) {
        self.shard(conn.id)
            .rooms
            .entry(room.clone())
            .or_default()
            .push((conn.id, conn.clone()));
    }

    /// Remove `conn` from `room`; false if it was not a member.
    pub fn leave(&self, room: &RoomName, conn: &Connection) -> bool {
        if self.drop_room(room, conn) {
            self.remove_member(room, conn);
            true
        } else {
            false
        }
    }

    /// Take `conn` out of `room`: from its shard's members, and from the
    /// room's held joins if it was still joining.
    fn remove_member(&self, room: &RoomName, conn: &Connection) {
        if let Some(tail) = self.tails.get(room.as_str()) {
            durable::lock(&tail).remove_held(conn.id);
        }
        let shard = self.shard(conn.id);
        let now_empty = match shard.rooms.get_mut(room) {
            Some(mut members) => {
                if let Some(at) = members.iter().position(|(id, _)| *id == conn.id) {
                    members.swap_remove(at);
                }
                members.is_empty()
            }
            None => false,
        };
        if now_empty {
            shard.rooms.remove_if(room, |_, members| members.is_empty());
        }
    }

    /// Push one encoded frame to every member of `room` on this node,
    /// except `skip`. Returns the number of sockets it was queued for.
    pub fn fan_out(&self, room: &str, frame: &Utf8Bytes, skip: Option<ConnId>, received_at: Instant) -> usize {
        let mut queued = 0;
        for shard in self.shards.iter() {
            let Some(members) = shard.rooms.get(room) else {
                continue;
            };
            for (id, conn) in members.iter() {
                if Some(*id) == skip {
                    continue;
                }
                match conn.push(frame.clone(), Some(received_at)) {
                    Pushed::Queued => queued += 1,
                    Pushed::Overflowed(dropped) => self.metrics.dropped_slow_consumer.increment(dropped),
                    Pushed::Closed => {}
                }
            }
        }
        queued
    }

    /// This node's connections of one user.
    pub fn user_connections(&self, user: &str) -> Vec<Arc<Connection>> {
        self.users.get(user).map(|c| c.clone()).unwrap_or_default()
    }

    /// Close every socket of `user` on this node; returns how many.
    pub fn disconnect_user(&self, user: &str, reason: &str) -> usize {
        let conns = self.user_connections(user);
        for conn in &conns {
            conn.close(CloseReason::Disconnected(reason.to_string()));
        }
        conns.len()
    }

    /// Every connection of this node, at this moment.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.users.iter().flat_map(|e| e.value().clone()).collect()
    }

    /// Ask every connection to close (shutdown), without waiting.
    pub fn close_all(&self, reason: CloseReason) {
        for entry in self.users.iter() {
            for conn in entry.value() {
                conn.close(reason.clone());
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.users.iter().map(|e| e.value().len()).sum()
    }

    /// An event payload that cannot be read: counted, logged, not delivered.
    fn drop_invalid(&self, room: &str, error: &str) {
        self.metrics.events_invalid.increment(1);
        self.log_invalid(room, error);
    }

    fn log_invalid(&self, room: &str, error: &str) {
        let now = connection::unix_now();
        let last = self.last_invalid_log.load(Ordering::Relaxed);
        if now > last
            && self
                .last_invalid_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                room,
                error,
                "dropped an invalid event payload (logged at most once a second)"
            );
        } else {
            tracing::debug!(room, error, "dropped an invalid event payload");
        }
    }
}

impl EventSink for Hub {
    fn deliver(&self, room: &str, message: Bytes) {
        let received_at = Instant::now();
        if let Some(marker) = presence_wire::unmark(&message) {
            // A join or leave: not an event, no position, past any tail.
            let (kind, frame) = match marker {
                presence_wire::Marker::Join(user) => ("join", encode_presence_change("join", room, user)),
                presence_wire::Marker::Leave(user) => ("leave", encode_presence_change("leave", room, user)),
            };
            Metrics::presence_event(kind);
            self.fan_out(room, &frame, None, received_at);
            return;
        }
        self.received.increment(1);
        let Some((position, payload)) = history::unframe(&message) else {
            self.drop_invalid(room, "malformed durable event header");
            return;
        };
        let event = match BackendEvent::parse(payload) {
            Ok(event) => event,
            Err(error) => {
                self.drop_invalid(room, &error);
                if let Some((offset, epoch)) = position {
                    self.lose_unreadable(room, offset, epoch);
                }
                return;
            }
        };
        // A plain PUBLISH too large for the members' queues would close them
        // all as slow consumers: drop it, count it. (Durable events are
        // bounded by the Redis Function, and dropping one would be a gap.)
        if position.is_none() && message.len() > self.max_event_bytes {
            self.metrics.dropped_too_large.increment(1);
            self.log_invalid(room, "larger than limits.max_event_bytes");
            return;
        }
        let skip = event.skip.as_deref().and_then(|s| self.local_id(s));
        let frame = encode_event(room, &event, position);
        let tail = if self.tails.config().enabled() {
            self.tails.get_named(room)
        } else {
            None
        };
        match tail {
            // A durable room: delivered in offset order by its tail.
            Some((name, tail)) => {
                let mut tail = durable::lock(&tail);
                let effects = tail.live(LiveEvent {
                    position: position.map(|(offset, epoch)| (offset, Arc::from(epoch))),
                    frame,
                    skip,
                    received_at,
                });
                self.apply(&name, effects);
            }
            None => {
                self.fan_out(room, &frame, skip, received_at);
            }
        }
    }

    fn connected(&self) {
        // Revocations stored before this node started, or while it was cut
        // off from Redis, reached Redis but not this node.
        self.reload_revocations();
        // What Redis held of this node's presence may be lost with it.
        if let Some(presence) = self.presence.get() {
            presence.resync();
        }
    }

    fn resubscribed(&self) {
        // Events published while this node was not subscribed were missed:
        // check every durable room against the broker and repair the gaps.
        for (room, tail) in self.tails.all() {
            let from = durable::lock(&tail).start_check();
            if let Some(from) = from {
                self.spawn_repair(room, from);
            }
        }
    }

    fn control(&self, payload: Bytes) {
        match serde_json::from_slice::<Control>(&payload) {
            Ok(Control::Disconnect { user, reason, revoke }) => {
                // Refuse first: a socket closed now must not reconnect with
                // the same token.
                if let Some(revocation) = revoke {
                    self.revocations.record(&user, revocation);
                }
                let closed = self.disconnect_user(&user, &reason);
                tracing::info!(user_id = %user, closed, "disconnect command");
            }
            Err(error) => tracing::warn!(%error, "ignored an invalid control message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        let tails = Arc::new(Tails::new(crate::config::HistoryConfig::default()));
        let limits = HubLimits {
            queue_limit: 1 << 20,
            max_event_bytes: 60 * 1024,
            max_per_user: 2,
            max_queued_bytes: 0,
        };
        Hub::new("n1".into(), 4, limits, "memory", tails)
    }

    fn join(hub: &Hub, room: &RoomName, conn: &Arc<Connection>) {
        assert!(matches!(hub.admit(room, conn, None, |_| None), Admission::Live(None)));
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn drain(conn: &Connection) -> Vec<String> {
        let mut batch = Batch::new();
        let _ = conn.drain(&mut batch);
        batch.iter().map(|q| q.frame.to_string()).collect()
    }

    #[test]
    fn events_reach_members_only_and_respect_skip() {
        let hub = hub();
        let room = RoomName::new("user:42").unwrap();
        let a = hub.register("42".into(), addr(), Transport::WebSocket).unwrap();
        let b = hub.register("42".into(), addr(), Transport::WebSocket).unwrap();
        let other = hub.register("43".into(), addr(), Transport::WebSocket).unwrap();
        join(&hub, &room, &a);
        join(&hub, &room, &b);
        hub.deliver("user:42", Bytes::from_static(br#"{"event":"e","data":1}"#));
        assert_eq!(drain(&a).len(), 1);
        assert_eq!(drain(&b).len(), 1);
        assert!(drain(&other).is_empty());

        let skip = format!(r#"{{"event":"e","skip":"{}"}}"#, hub.external_id(a.id));
        hub.deliver("user:42", Bytes::from(skip));
        assert!(drain(&a).is_empty());
        assert_eq!(drain(&b).len(), 1);
    }

    #[test]
    fn per_user_limit_and_unregister() {
        let hub = hub();
        let a = hub.register("7".into(), addr(), Transport::WebSocket).unwrap();
        let _b = hub.register("7".into(), addr(), Transport::WebSocket).unwrap();
        assert!(matches!(
            hub.register("7".into(), addr(), Transport::WebSocket),
            Err(TooManyConnections)
        ));
        let room = RoomName::new("org:x").unwrap();
        join(&hub, &room, &a);
        assert_eq!(hub.unregister(&a), vec![room.clone()]);
        assert_eq!(
            hub.fan_out("org:x", &Utf8Bytes::from_static("x"), None, Instant::now()),
            0
        );
        assert!(hub.register("7".into(), addr(), Transport::WebSocket).is_ok());
    }

    #[test]
    fn control_disconnect_closes_the_users_sockets() {
        let hub = hub();
        let a = hub.register("9".into(), addr(), Transport::WebSocket).unwrap();
        let b = hub.register("10".into(), addr(), Transport::WebSocket).unwrap();
        hub.control(Bytes::from_static(
            br#"{"type":"disconnect","user":"9","reason":"banned"}"#,
        ));
        assert_eq!(a.closing(), Some(CloseReason::Disconnected("banned".into())));
        assert_eq!(b.closing(), None);
    }

    #[test]
    fn presence_markers_become_join_and_leave_frames_for_the_rooms_members() {
        let hub = hub();
        let room = RoomName::new("chat:1").unwrap();
        let a = hub.register("7".into(), addr(), Transport::WebSocket).unwrap();
        let outside = hub.register("8".into(), addr(), Transport::WebSocket).unwrap();
        join(&hub, &room, &a);
        hub.deliver("chat:1", presence_wire::marker(true, "42"));
        hub.deliver("chat:1", presence_wire::marker(false, "42"));
        assert_eq!(
            drain(&a),
            vec![
                r#"{"type":"join","room":"chat:1","user_id":"42"}"#,
                r#"{"type":"leave","room":"chat:1","user_id":"42"}"#
            ]
        );
        assert!(drain(&outside).is_empty());
    }

    #[tokio::test]
    async fn membership_changes_reach_the_presence_tracker() {
        let config = crate::config::PresenceConfig {
            namespaces: vec!["chat".into()],
            ..Default::default()
        };
        let sink = hub();
        let broker: Arc<dyn Broker> = Arc::new(crate::broker::memory::MemoryBroker::new(
            sink,
            &Default::default(),
            &config,
        ));
        let hub = hub();
        let presence = Presence::new(config, "n1");
        presence.attach_broker(&broker);
        hub.attach_presence(presence.clone());
        let (chat, own) = (RoomName::new("chat:1").unwrap(), RoomName::new("user:7").unwrap());
        let a = hub.register("7".into(), addr(), Transport::WebSocket).unwrap();
        let b = hub.register("7".into(), addr(), Transport::WebSocket).unwrap();
        for conn in [&a, &b] {
            join(&hub, &chat, conn);
            join(&hub, &own, conn);
        }
        presence.flush().await.unwrap();
        let listed = |n| {
            vec![crate::broker::presence::Member {
                user_id: "7".into(),
                connections: n,
            }]
        };
        assert_eq!(presence.list(&chat).await.unwrap(), listed(2));
        assert!(presence.list(&own).await.unwrap().is_empty(), "user: has no presence");
        assert!(hub.leave(&chat, &a));
        presence.flush().await.unwrap();
        assert_eq!(presence.list(&chat).await.unwrap(), listed(1));
        hub.unregister(&b);
        presence.flush().await.unwrap();
        assert!(presence.list(&chat).await.unwrap().is_empty());
    }

    #[test]
    fn external_ids_round_trip() {
        let hub = hub();
        assert_eq!(hub.local_id(&hub.external_id(255)), Some(255));
        assert_eq!(hub.local_id("other-ff"), None);
    }
}
