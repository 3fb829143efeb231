//! The embedded broker: one node, no dependencies. A publish is handed to
//! the sink on the publisher's task when the room is subscribed, exactly as
//! a Redis node would receive it.
//!
//! Durable rooms keep their history here, in the process: the same size and
//! TTL as in Redis, trimmed exactly; an epoch is made per room when it is
//! first used, so every restart of the process starts new epochs.
//!
//! Presence is kept here too, per node id as in Redis (one process is one
//! node, but the semantics are the broker's: counts summed over nodes, the
//! first join and the last leave announced). Nothing expires: a process
//! that dies takes its members with it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::history::{self, HistoryPage, Position};
use super::presence::{self as presence_wire, Applied, Member, RoomUpdate};
use super::{Broker, BrokerError, EventSink};
use crate::config::{HistoryConfig, PresenceConfig};
use crate::idempotency::{MemoryKeys, Reached};
use crate::revocation::Revocation;
use crate::room::RoomName;

/// How long a room's position outlives its last event (at least the TTL):
/// a client that was told offset N of a quiet room can still resume from it.
pub const POSITION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often idle rooms are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct MemoryBroker {
    sink: Arc<dyn EventSink>,
    /// Rooms subscribed. A std lock: held only for a set lookup or update,
    /// never across an await.
    subscribed: RwLock<HashSet<RoomName>>,
    logs: Arc<DashMap<RoomName, Arc<Mutex<RoomLog>>>>,
    size: usize,
    ttl: Duration,
    idempotency: MemoryKeys,
    /// Per room, per node, per user: connections. A std lock: held for a
    /// map update, never across an await.
    presence: Mutex<HashMap<RoomName, PresenceRoom>>,
    presence_events: bool,
}

/// One room's presence: node → user → connections.
type PresenceRoom = HashMap<String, HashMap<Arc<str>, u32>>;

fn total(room: &PresenceRoom, user: &str) -> u64 {
    room.values()
        .filter_map(|users| users.get(user))
        .map(|&n| u64::from(n))
        .sum()
}

/// One durable room's history.
struct RoomLog {
    epoch: Arc<str>,
    offset: u64,
    /// `(offset, payload, appended at)`, oldest first.
    events: VecDeque<(u64, Bytes, Instant)>,
    touched: Instant,
}

impl RoomLog {
    fn new(now: Instant) -> Self {
        Self {
            epoch: Arc::from(format!("{:016x}", fastrand::u64(..))),
            offset: 0,
            events: VecDeque::new(),
            touched: now,
        }
    }

    fn expire(&mut self, ttl: Duration, now: Instant) {
        while self
            .events
            .front()
            .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= ttl)
        {
            self.events.pop_front();
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

impl MemoryBroker {
    pub fn new(sink: Arc<dyn EventSink>, history: &HistoryConfig, presence: &PresenceConfig) -> Self {
        // In-process: up for as long as the node runs.
        metrics::gauge!(crate::metrics::BROKER_UP).set(1.0);
        let logs: Arc<DashMap<RoomName, Arc<Mutex<RoomLog>>>> = Arc::new(DashMap::new());
        let ttl = Duration::from_secs(history.ttl_s);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&logs), ttl.max(POSITION_TTL)));
        }
        Self {
            sink,
            subscribed: RwLock::new(HashSet::new()),
            logs,
            idempotency: MemoryKeys::default(),
            size: history.size.max(1),
            ttl,
            presence: Mutex::new(HashMap::new()),
            presence_events: presence.events,
        }
    }

    /// Apply one update to the room's state; the announcements it makes.
    fn apply_presence(
        &self,
        node: &str,
        update: &RoomUpdate,
        rooms: &mut HashMap<RoomName, PresenceRoom>,
    ) -> Vec<Bytes> {
        let state = rooms.entry(update.room.clone()).or_default();
        let mut changed: Vec<(Arc<str>, u32)> = update.users.clone();
        if update.replace
            && let Some(mine) = state.get(node)
        {
            for user in mine.keys() {
                if !update.users.iter().any(|(u, _)| u == user) {
                    changed.push((user.clone(), 0));
                }
            }
        }
        let before: Vec<u64> = changed.iter().map(|(user, _)| total(state, user)).collect();
        let mine = state.entry(node.to_string()).or_default();
        for (user, count) in &changed {
            if *count > 0 {
                mine.insert(user.clone(), *count);
            } else {
                mine.remove(user);
            }
        }
        if mine.is_empty() {
            state.remove(node);
        }
        let mut announced = Vec::new();
        if self.presence_events {
            for ((user, _), before) in changed.iter().zip(before) {
                let after = total(state, user);
                if (before == 0) != (after == 0) {
                    announced.push(presence_wire::marker(after > 0, user));
                }
            }
        }
        if state.is_empty() {
            rooms.remove(&update.room);
        }
        announced
    }

    fn with_rooms<T>(&self, f: impl FnOnce(&mut HashSet<RoomName>) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // set itself is always consistent, so keep serving.
        let mut rooms = self.subscribed.write().unwrap_or_else(|p| p.into_inner());
        f(&mut rooms)
    }

    fn is_subscribed(&self, room: &str) -> bool {
        self.subscribed.read().unwrap_or_else(|p| p.into_inner()).contains(room)
    }

    /// Run `f` on the room's log, made (with a new epoch) if it is new or
    /// has outlived its position TTL.
    fn with_log<T>(&self, room: &RoomName, f: impl FnOnce(&mut RoomLog, Instant) -> T) -> T {
        let now = Instant::now();
        let log = self
            .logs
            .entry(room.clone())
            .or_insert_with(|| Arc::new(Mutex::new(RoomLog::new(now))))
            .clone();
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(log.touched) >= self.ttl.max(POSITION_TTL) {
            *log = RoomLog::new(now);
        }
        log.expire(self.ttl, now);
        f(&mut log, now)
    }
}

/// Drop the logs of rooms idle past their position TTL.
async fn sweep(logs: std::sync::Weak<DashMap<RoomName, Arc<Mutex<RoomLog>>>>, idle: Duration) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(logs) = logs.upgrade() else { return };
        let now = Instant::now();
        logs.retain(|_, log| {
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            now.saturating_duration_since(log.touched) < idle
        });
    }
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_rooms(|rooms| rooms.insert(room.clone()));
        futures_util::future::ready(Ok(())).boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_rooms(|rooms| rooms.remove(room));
        futures_util::future::ready(Ok(())).boxed()
    }

    fn publish<'a>(&'a self, room: &'a RoomName, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        if self.is_subscribed(room.as_str()) {
            self.sink.deliver(room.as_str(), payload);
        }
        futures_util::future::ready(Ok(())).boxed()
    }

    fn publish_durable<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Position, BrokerError>> {
        // The room's lock is held through the delivery, so concurrent
        // publishers' events reach the sink in offset order, as from Redis.
        let position = self.with_log(room, |log, now| {
            log.offset += 1;
            log.touched = now;
            log.events.push_back((log.offset, payload.clone(), now));
            while log.events.len() > self.size {
                log.events.pop_front();
            }
            if self.is_subscribed(room.as_str()) {
                self.sink
                    .deliver(room.as_str(), history::frame(log.offset, &log.epoch, &payload));
            }
            log.position()
        });
        futures_util::future::ready(Ok(position)).boxed()
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        since: u64,
        limit: usize,
        max_gap: u64,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        let page = self.with_log(room, |log, _| {
            let events = if log.offset.saturating_sub(since) > max_gap {
                Vec::new()
            } else {
                log.events
                    .iter()
                    .filter(|(offset, _, _)| *offset > since)
                    .take(limit)
                    .map(|(offset, payload, _)| (*offset, payload.clone()))
                    .collect()
            };
            HistoryPage {
                position: log.position(),
                events,
            }
        });
        futures_util::future::ready(Ok(page)).boxed()
    }

    fn presence_update<'a>(
        &'a self,
        node: &'a str,
        updates: &'a [RoomUpdate],
    ) -> BoxFuture<'a, Result<Applied, BrokerError>> {
        let mut applied = Vec::with_capacity(updates.len());
        for update in updates {
            // Announced under the lock, as Redis publishes inside the
            // function: a room's joins and leaves keep their order.
            let mut rooms = self.presence.lock().unwrap_or_else(|p| p.into_inner());
            let live = if update.is_beat() {
                rooms.get(&update.room).is_some_and(|state| state.contains_key(node))
            } else {
                let announced = self.apply_presence(node, update, &mut rooms);
                if self.is_subscribed(update.room.as_str()) {
                    for marker in announced {
                        self.sink.deliver(update.room.as_str(), marker);
                    }
                }
                rooms.get(&update.room).is_some_and(|state| state.contains_key(node))
            };
            applied.push(live);
        }
        futures_util::future::ready(Ok(applied)).boxed()
    }

    fn presence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        let rooms = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
        for users in rooms.get(room).into_iter().flat_map(|state| state.values()) {
            for (user, count) in users {
                let sum = sums.entry(user).or_default();
                *sum = sum.saturating_add(u64::from(*count));
            }
        }
        let members = sums
            .into_iter()
            .map(|(user_id, connections)| Member {
                user_id: user_id.to_string(),
                connections,
            })
            .collect();
        futures_util::future::ready(Ok(members)).boxed()
    }

    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.sink.control(payload);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn store_revocation<'a>(
        &'a self,
        _user: &'a str,
        _revocation: Revocation,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        // One node: the control message recorded it in the node's memory.
        futures_util::future::ready(Ok(())).boxed()
    }

    fn revocations(&self, _now: u64) -> BoxFuture<'_, Result<Vec<(String, Revocation)>, BrokerError>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }

    fn idempotent_reached<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Reached, BrokerError>> {
        futures_util::future::ready(Ok(self.idempotency.reached(key))).boxed()
    }

    fn idempotent_record<'a>(
        &'a self,
        key: &'a str,
        room: &'a str,
        position: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.idempotency.record(key, room, position);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn is_up(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }
}
