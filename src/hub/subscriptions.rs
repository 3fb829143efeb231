//! Node-wide member counts per room, and the broker subscription that follows
//! them: the first local member subscribes the room (rolled back if the broker
//! refuses); after the last one leaves, the room lingers subscribed for
//! [`LINGER`] and is unsubscribed only if nobody came back (as centrifuge
//! does), so a quick leave and join does not churn Redis.
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
use std::time::Duration;

use dashmap::DashMap;
use metrics::Gauge;

use super::durable::Tails;
use crate::broker::{Broker, BrokerError};
use crate::room::RoomName;

const STRIPES: usize = 256;
/// How long a room stays subscribed after its last member leaves: a member
/// that comes back within it (a reconnect, a page reload, an unsubscribe
/// then subscribe) finds the room live, and Redis sees no churn.
pub const LINGER: Duration = Duration::from_secs(2);

pub struct Subscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Arc<dyn Broker>,
    /// Members on this node per subscribed room. An entry exists only while
    /// the room is subscribed on the broker; 0 while it lingers.
    counts: DashMap<RoomName, usize>,
    /// Serialise first-join / last-leave per room. Tokio mutexes: held across
    /// the broker's await.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    rooms_gauge: Gauge,
    tails: Arc<Tails>,
    linger: Duration,
}

impl Subscriptions {
    pub fn new(broker: Arc<dyn Broker>, tails: Arc<Tails>) -> Self {
        Self::with_linger(broker, tails, LINGER)
    }

    pub fn with_linger(broker: Arc<dyn Broker>, tails: Arc<Tails>, linger: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                tails,
                broker,
                counts: DashMap::new(),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                hasher: Default::default(),
                rooms_gauge: metrics::gauge!(crate::metrics::ROOMS),
                linger,
            }),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Count one more member of `room`, subscribing it first if it is not
    /// subscribed here (a lingering room is taken back as it is). When this
    /// returns Ok the room is live on the broker.
    pub async fn acquire(&self, room: &RoomName) -> Result<(), BrokerError> {
        let inner = &self.inner;
        if let Some(mut count) = inner.counts.get_mut(room)
            && *count > 0
        {
            *count += 1;
            return Ok(());
        }
        let _serial = inner.stripe(room).lock().await;
        if let Some(mut count) = inner.counts.get_mut(room) {
            if *count == 0 {
                inner.rooms_gauge.increment(1.0);
            }
            *count += 1;
            return Ok(());
        }
        inner.broker.subscribe(room).await?;
        inner.tails.open(room);
        inner.counts.insert(room.clone(), 1);
        inner.rooms_gauge.increment(1.0);
        Ok(())
    }

    /// Count one member less. After the last one the room lingers for
    /// [`LINGER`], then is unsubscribed if nobody came back meanwhile.
    pub async fn release(&self, room: &RoomName) {
        let inner = &self.inner;
        let _serial = inner.stripe(room).lock().await;
        let last = match inner.counts.get_mut(room) {
            Some(mut count) if *count > 0 => {
                *count -= 1;
                *count == 0
            }
            _ => false,
        };
        if !last {
            return;
        }
        inner.rooms_gauge.decrement(1.0);
        if inner.linger.is_zero() {
            inner.unsubscribe_if_empty(room).await;
            return;
        }
        let lingering = self.inner.clone();
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lingering.linger).await;
            let _serial = lingering.stripe(&room).lock().await;
            lingering.unsubscribe_if_empty(&room).await;
        });
    }

    /// Every room with members here, with their count, sorted by name.
    pub fn rooms(&self, prefix: &str) -> Vec<(RoomName, usize)> {
        let mut rooms: Vec<(RoomName, usize)> = self
            .inner
            .counts
            .iter()
            .filter(|e| *e.value() > 0 && e.key().as_str().starts_with(prefix))
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms
    }
}

impl Inner {
    fn stripe(&self, room: &RoomName) -> &tokio::sync::Mutex<()> {
        &self.stripes[(self.hasher.hash_one(room) as usize) % STRIPES]
    }

    /// Unsubscribe a room nobody rejoined. The caller holds its stripe.
    async fn unsubscribe_if_empty(&self, room: &RoomName) {
        if self.counts.remove_if(room, |_, count| *count == 0).is_none() {
            return;
        }
        self.tails.close(room);
        if let Err(error) = self.broker.unsubscribe(room).await {
            tracing::debug!(%room, %error, "unsubscribe failed; the broker drops it on reconnect");
        }
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
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(seen.clone(), &history, &Default::default()));
        let subs = Subscriptions::with_linger(broker.clone(), Arc::new(Tails::new(history)), Duration::ZERO);
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

    #[tokio::test(start_paused = true)]
    async fn a_room_left_and_joined_again_within_the_linger_is_never_unsubscribed() {
        let seen = Arc::new(Seen::default());
        let history = crate::config::HistoryConfig::default();
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(seen.clone(), &history, &Default::default()));
        let subs = Subscriptions::new(broker.clone(), Arc::new(Tails::new(history)));
        let room = RoomName::new("org:acme").unwrap();
        let delivered = || seen.0.lock().unwrap().len();
        subs.acquire(&room).await.unwrap();
        subs.release(&room).await;
        assert!(subs.rooms("").is_empty(), "no members: not listed");
        broker.publish(&room, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(delivered(), 1, "still subscribed while it lingers");
        tokio::time::sleep(LINGER / 2).await;
        subs.acquire(&room).await.unwrap();
        tokio::time::sleep(LINGER * 2).await;
        broker.publish(&room, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(delivered(), 2, "taken back: the linger's end does not unsubscribe it");
        subs.release(&room).await;
        tokio::time::sleep(LINGER * 2).await;
        broker.publish(&room, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(delivered(), 2, "unsubscribed once the linger passed with nobody back");
    }
}
