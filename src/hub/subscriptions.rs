//! Node-wide member counts per room, and the broker subscription that follows
//! them: the first local member subscribes the room (rolled back if the broker
//! refuses), the last one to leave unsubscribes it.
//!
//! Joins and leaves of one room are serialised by a striped async lock, held
//! across the broker round trip on purpose: a second joiner waits for the
//! first one's SUBSCRIBE, so nobody is told a room is live before it is.
//! Joins of a room that is already live skip the lock entirely.
//!
//! A durable room's tail ([`super::durable::Tails`]) lives exactly as long
//! as its subscription: opened once the room is live, closed before it is
//! unsubscribed, so a tail never holds a position from an earlier
//! subscription whose events this node did not all receive.

use std::hash::BuildHasher;
use std::sync::Arc;

use dashmap::DashMap;
use metrics::Gauge;

use super::durable::Tails;
use crate::broker::{Broker, BrokerError};
use crate::room::RoomName;

const STRIPES: usize = 256;

pub struct Subscriptions {
    broker: Arc<dyn Broker>,
    /// Members on this node per live room. An entry exists only while the
    /// room is subscribed on the broker.
    counts: DashMap<RoomName, usize>,
    /// Serialise first-join / last-leave per room. Tokio mutexes: held across
    /// the broker's await.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    rooms_gauge: Gauge,
    tails: Arc<Tails>,
}

impl Subscriptions {
    pub fn new(broker: Arc<dyn Broker>, tails: Arc<Tails>) -> Self {
        Self {
            tails,
            broker,
            counts: DashMap::new(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
            rooms_gauge: metrics::gauge!(crate::metrics::ROOMS),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    fn stripe(&self, room: &RoomName) -> &tokio::sync::Mutex<()> {
        &self.stripes[(self.hasher.hash_one(room) as usize) % STRIPES]
    }

    /// Count one more member of `room`, subscribing it first if it is new
    /// here. When this returns Ok the room is live on the broker.
    pub async fn acquire(&self, room: &RoomName) -> Result<(), BrokerError> {
        if let Some(mut count) = self.counts.get_mut(room)
            && *count > 0
        {
            *count += 1;
            return Ok(());
        }
        let _serial = self.stripe(room).lock().await;
        if let Some(mut count) = self.counts.get_mut(room) {
            *count += 1;
            return Ok(());
        }
        self.broker.subscribe(room).await?;
        self.tails.open(room);
        self.counts.insert(room.clone(), 1);
        self.rooms_gauge.increment(1.0);
        Ok(())
    }

    /// Count one member less; unsubscribe the room after its last member.
    pub async fn release(&self, room: &RoomName) {
        let _serial = self.stripe(room).lock().await;
        let last = match self.counts.get_mut(room) {
            Some(mut count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if !last {
            return;
        }
        self.counts.remove_if(room, |_, count| *count == 0);
        self.tails.close(room);
        self.rooms_gauge.decrement(1.0);
        if let Err(error) = self.broker.unsubscribe(room).await {
            tracing::debug!(%room, %error, "unsubscribe failed; the broker drops it on reconnect");
        }
    }

    /// Every live room with its member count, sorted by name.
    pub fn rooms(&self, prefix: &str) -> Vec<(RoomName, usize)> {
        let mut rooms: Vec<(RoomName, usize)> = self
            .counts
            .iter()
            .filter(|e| e.key().as_str().starts_with(prefix))
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::EventSink;
    use crate::broker::memory::MemoryBroker;
    use bytes::Bytes;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);
    impl EventSink for Seen {
        fn deliver(&self, room: &str, _payload: Bytes) {
            self.0.lock().unwrap().push(room.to_string());
        }
        fn control(&self, _payload: Bytes) {}
    }

    #[tokio::test]
    async fn subscribes_on_first_join_and_unsubscribes_after_last_leave() {
        let seen = Arc::new(Seen::default());
        let history = crate::config::HistoryConfig::default();
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(seen.clone(), &history));
        let subs = Subscriptions::new(broker.clone(), Arc::new(Tails::new(history)));
        let room = RoomName::new("org:acme").unwrap();
        subs.acquire(&room).await.unwrap();
        subs.acquire(&room).await.unwrap();
        assert_eq!(subs.rooms("org:"), vec![(room.clone(), 2)]);
        subs.release(&room).await;
        broker.publish(&room, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(seen.0.lock().unwrap().len(), 1, "still subscribed with one member");
        subs.release(&room).await;
        broker.publish(&room, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(seen.0.lock().unwrap().len(), 1, "unsubscribed after the last member");
        assert!(subs.rooms("").is_empty());
    }
}
