//! The embedded broker: one node, no dependencies. A publish is handed to
//! the sink on the publisher's task when the room is subscribed, exactly as
//! a Redis node would receive it.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Broker, BrokerError, EventSink};
use crate::room::RoomName;

pub struct MemoryBroker {
    sink: Arc<dyn EventSink>,
    /// Rooms subscribed. A std lock: held only for a set lookup or update,
    /// never across an await.
    subscribed: RwLock<HashSet<RoomName>>,
}

impl MemoryBroker {
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        // In-process: up for as long as the node runs.
        metrics::gauge!(crate::metrics::BROKER_UP).set(1.0);
        Self {
            sink,
            subscribed: RwLock::new(HashSet::new()),
        }
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

    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.sink.control(payload);
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
