//! Presence (docs/PROTOCOL.md §12): this node's members of every presence
//! room, kept in the broker so that any node can list a room's users
//! cluster-wide.
//!
//! The hub reports each membership change ([`Presence::joined`],
//! [`Presence::left`]); nothing here runs per event. One tracker task per
//! node ([`Presence::spawn`]) batches the changes: it waits
//! [`BATCH_WINDOW`] after the first one, then sends the absolute count of
//! every user that changed as one [`Broker::presence_update`] (one pipeline
//! in Redis), so a connect or a disconnect costs O(its rooms) and a burst
//! of them shares round trips. Every third of `presence.ttl_s` it
//! heartbeats the rooms it holds; a heartbeat that finds the node's entry
//! gone (it expired, Redis lost it), and every reconnect of the broker
//! ([`Presence::resync`]), write the rooms' full state again. A node that
//! dies stops heartbeating, and its members drop out within the TTL.
//!
//! Counts are absolute and the task is the only writer of this node's
//! entries, so a failed write is simply retried with the newer state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::broker::presence::{Member, RoomUpdate};
use crate::broker::{Broker, BrokerError};
use crate::config::PresenceConfig;
use crate::metrics::Metrics;
use crate::room::RoomName;

/// How long the tracker gathers changes after the first before it writes.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Rooms per broker call (one pipeline each).
const MAX_BATCH: usize = 500;
/// Wait before retrying a write that failed, doubled per failure in a row
/// up to [`RETRY_MAX`]. (A broker that comes back calls [`Presence::resync`],
/// which writes at once.)
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Presence {
    config: PresenceConfig,
    /// This process's id in the broker's presence keys: random per start,
    /// so a restarted node never inherits its previous entries.
    node: String,
    /// A std mutex: held for map updates, never across an await.
    state: Mutex<State>,
    wake: Notify,
    /// Held for every write: the tracker's and the final one at shutdown
    /// run one after the other, so the last state is the last written.
    writing: tokio::sync::Mutex<()>,
    /// Writes failed in a row: the retry back-off, and one warning a streak.
    failures: AtomicU32,
    /// Weak: the broker holds the hub, which holds this.
    broker: OnceLock<Weak<dyn Broker>>,
}

#[derive(Default)]
struct State {
    /// Room → user → this node's connections of it.
    rooms: HashMap<RoomName, HashMap<Arc<str>, u32>>,
    /// What the next write carries.
    dirty: HashMap<RoomName, Dirty>,
}

#[derive(Default)]
struct Dirty {
    /// Write the room's whole state (after a reconnect or a lost entry).
    replace: bool,
    users: HashSet<Arc<str>>,
}

impl Presence {
    pub fn new(config: PresenceConfig, node_id: &str) -> Arc<Self> {
        Arc::new(Self {
            config,
            node: format!("{node_id}-{:08x}", fastrand::u32(..)),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            failures: AtomicU32::new(0),
            broker: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// This process's node id in the broker's presence keys.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether `room` has presence.
    pub fn tracks(&self, room: &RoomName) -> bool {
        self.config.is_tracked(room.namespace())
    }

    pub fn attach_broker(&self, broker: &Arc<dyn Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The maps are valid even if a holder panicked; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection of `user` became a member of `room`.
    pub fn joined(&self, room: &RoomName, user: &Arc<str>) {
        if !self.tracks(room) {
            return;
        }
        let mut state = self.state();
        let count = state
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(user.clone())
            .or_default();
        *count = count.saturating_add(1);
        state.dirty.entry(room.clone()).or_default().users.insert(user.clone());
        drop(state);
        self.wake.notify_one();
    }

    /// A connection of `user` stopped being a member of `room`.
    pub fn left(&self, room: &RoomName, user: &Arc<str>) {
        if !self.tracks(room) {
            return;
        }
        let mut state = self.state();
        let Some(users) = state.rooms.get_mut(room) else { return };
        if let Some(count) = users.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                users.remove(user);
            }
        }
        if users.is_empty() {
            state.rooms.remove(room);
        }
        state.dirty.entry(room.clone()).or_default().users.insert(user.clone());
        drop(state);
        self.wake.notify_one();
    }

    /// The broker (re)connected: what it holds of this node may be lost, so
    /// write every room's full state again.
    pub fn resync(&self) {
        let mut state = self.state();
        let rooms: Vec<RoomName> = state.rooms.keys().cloned().collect();
        for room in rooms {
            state.dirty.entry(room).or_default().replace = true;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The users in `room` on every node.
    pub async fn list(&self, room: &RoomName) -> Result<Vec<Member>, BrokerError> {
        self.broker()?.presence(room).await
    }

    fn broker(&self) -> Result<Arc<dyn Broker>, BrokerError> {
        self.broker
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::Unavailable)
    }

    /// The heartbeat period: a third of the TTL.
    fn beat_every(&self) -> Duration {
        Duration::from_millis((self.config.ttl_ms() / 3).max(100))
    }

    /// Run the tracker for as long as the node runs (nothing to do without
    /// presence). At shutdown the server writes the last changes with
    /// [`Presence::flush`] before it closes the broker.
    pub fn spawn(self: &Arc<Self>) {
        if !self.config.enabled() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(me.beat_every());
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = me.wake.notified() => {
                        tokio::time::sleep(BATCH_WINDOW).await;
                        if me.flush().await.is_err() {
                            tokio::time::sleep(me.retry_after()).await;
                            me.wake.notify_one();
                        }
                    }
                    _ = beat.tick() => me.beat().await,
                }
            }
        });
    }

    fn retry_after(&self) -> Duration {
        let failures = self.failures.load(Ordering::Relaxed).min(8);
        RETRY_AFTER
            .saturating_mul(1 << failures.saturating_sub(1))
            .min(RETRY_MAX)
    }

    /// Write every pending change; on failure they stay pending.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let _writing = self.writing.lock().await;
        let updates = self.take_dirty();
        if updates.is_empty() {
            return Ok(());
        }
        let result = self.send(&updates).await;
        if result.is_err() {
            self.restore(&updates);
        }
        result.map(drop)
    }

    /// Heartbeat every room this node holds; rooms whose entry is gone are
    /// written in full.
    async fn beat(&self) {
        let _writing = self.writing.lock().await;
        let rooms: Vec<RoomName> = self.state().rooms.keys().cloned().collect();
        if rooms.is_empty() {
            return;
        }
        let beats: Vec<RoomUpdate> = rooms.into_iter().map(RoomUpdate::beat).collect();
        if let Ok(applied) = self.send(&beats).await {
            let lost: Vec<&RoomName> = beats
                .iter()
                .zip(applied)
                .filter(|(_, live)| !live)
                .map(|(update, _)| &update.room)
                .collect();
            if !lost.is_empty() {
                tracing::info!(
                    rooms = lost.len(),
                    "presence entries lost in the broker; writing them again"
                );
                let mut state = self.state();
                for room in lost {
                    state.dirty.entry(room.clone()).or_default().replace = true;
                }
                drop(state);
                self.wake.notify_one();
            }
        }
    }

    /// Send updates in batches; per update, whether the node's entry is live.
    async fn send(&self, updates: &[RoomUpdate]) -> Result<Vec<bool>, BrokerError> {
        let broker = self.broker()?;
        let mut applied = Vec::with_capacity(updates.len());
        for batch in updates.chunks(MAX_BATCH) {
            match broker.presence_update(&self.node, batch).await {
                Ok(live) => {
                    Metrics::presence_updates("ok", batch.len());
                    applied.extend(live);
                    if self.failures.swap(0, Ordering::Relaxed) > 0 {
                        tracing::info!("presence updates written again");
                    }
                }
                Err(error) => {
                    Metrics::presence_updates("error", batch.len());
                    if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%error, rooms = batch.len(), "presence update failed; retrying");
                    } else {
                        tracing::debug!(%error, rooms = batch.len(), "presence update failed again");
                    }
                    return Err(error);
                }
            }
        }
        Ok(applied)
    }

    /// The pending changes as updates with the current counts.
    fn take_dirty(&self) -> Vec<RoomUpdate> {
        let mut state = self.state();
        let dirty = std::mem::take(&mut state.dirty);
        dirty
            .into_iter()
            .map(|(room, dirty)| {
                let current = state.rooms.get(&room);
                let users = if dirty.replace {
                    current
                        .map(|users| users.iter().map(|(u, n)| (u.clone(), *n)).collect())
                        .unwrap_or_default()
                } else {
                    dirty
                        .users
                        .into_iter()
                        .map(|user| {
                            let count = current.and_then(|users| users.get(&user)).copied().unwrap_or(0);
                            (user, count)
                        })
                        .collect()
                };
                RoomUpdate {
                    room,
                    users,
                    replace: dirty.replace,
                }
            })
            .collect()
    }

    /// Put back what a failed write carried (the counts are re-read then).
    fn restore(&self, updates: &[RoomUpdate]) {
        let mut state = self.state();
        for update in updates {
            let dirty = state.dirty.entry(update.room.clone()).or_default();
            dirty.replace |= update.replace;
            dirty.users.extend(update.users.iter().map(|(u, _)| u.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{EventSink, presence::Marker, presence::unmark};
    use bytes::Bytes;

    #[derive(Default)]
    struct Markers(Mutex<Vec<String>>);
    impl EventSink for Markers {
        fn deliver(&self, _room: &str, payload: Bytes) {
            if let Some(marker) = unmark(&payload) {
                let text = match marker {
                    Marker::Join(u) => format!("join {u}"),
                    Marker::Leave(u) => format!("leave {u}"),
                };
                self.0.lock().unwrap().push(text);
            }
        }
        fn control(&self, _payload: Bytes) {}
    }

    fn config() -> PresenceConfig {
        PresenceConfig {
            namespaces: vec!["chat".into()],
            ttl_s: 3,
            events: true,
        }
    }

    #[tokio::test]
    async fn changes_are_batched_and_counted_once_per_user() {
        let sink = Arc::new(Markers::default());
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(sink.clone(), &Default::default(), &config()));
        let room = RoomName::new("chat:1").unwrap();
        broker.subscribe(&room).await.unwrap();
        let presence = Presence::new(config(), "n1");
        presence.attach_broker(&broker);
        let user: Arc<str> = Arc::from("42");
        presence.joined(&room, &user);
        presence.joined(&room, &user);
        presence.joined(&RoomName::new("user:42").unwrap(), &user);
        presence.flush().await.unwrap();
        let listed = presence.list(&room).await.unwrap();
        assert_eq!(
            listed,
            vec![Member {
                user_id: "42".into(),
                connections: 2
            }]
        );
        presence.left(&room, &user);
        presence.flush().await.unwrap();
        assert_eq!(presence.list(&room).await.unwrap()[0].connections, 1);
        presence.left(&room, &user);
        // A join and leave inside one batch cancel out.
        let other: Arc<str> = Arc::from("7");
        presence.joined(&room, &other);
        presence.left(&room, &other);
        presence.flush().await.unwrap();
        assert!(presence.list(&room).await.unwrap().is_empty());
        assert_eq!(*sink.0.lock().unwrap(), vec!["join 42", "leave 42"]);
        // After a reconnect the full state is written again.
        presence.joined(&room, &user);
        presence.flush().await.unwrap();
        presence.resync();
        presence.flush().await.unwrap();
        assert_eq!(presence.list(&room).await.unwrap().len(), 1);
    }
}
