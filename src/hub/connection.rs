//! One connection as the rest of the node sees it: identity, rooms, and the
//! bounded outbound queue that fan-out pushes into and the session drains.
//!
//! The queue is capped in bytes. Overflow never blocks the pusher: the queue
//! is emptied, the connection is marked closing as a slow consumer (4009) and
//! its session is woken to close it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::close::CloseReason;
use crate::room::RoomName;

/// Node-local connection id; [`Connection::external_id`] is the opaque
/// string clients and the API see.
pub type ConnId = u64;

/// A frame waiting to be written.
pub struct Queued {
    pub frame: Utf8Bytes,
    /// When the event left the broker; `None` for replies to the client.
    pub received_at: Option<Instant>,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Queued>,
    bytes: usize,
    closing: Option<CloseReason>,
}

pub struct Connection {
    pub id: ConnId,
    pub user_id: Arc<str>,
    pub remote: SocketAddr,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    queue_limit: usize,
    /// A std mutex: held only to push or swap frames, never across an await,
    /// and contended only between one pusher and the session.
    outbox: Mutex<Outbox>,
    /// Wakes the session when frames arrive or the connection must close.
    wake: Notify,
    /// Rooms joined, for the API and the close path. Written only by the
    /// session; std mutex for the same reason as `outbox`.
    rooms: Mutex<Vec<RoomName>>,
}

impl Connection {
    pub fn new(id: ConnId, user_id: Arc<str>, remote: SocketAddr, queue_limit: usize) -> Self {
        Self {
            id,
            user_id,
            remote,
            connected_at: unix_now(),
            queue_limit,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            rooms: Mutex::new(Vec::new()),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // Pushes and drains leave the queue consistent at every step, so a
        // poisoned lock is still safe to use; never panic on the fan-out path.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a frame. Never blocks; on overflow the connection starts closing.
    pub fn push(&self, frame: Utf8Bytes, received_at: Option<Instant>) -> Pushed {
        let mut outbox = self.outbox();
        if outbox.closing.is_some() {
            return Pushed::Closed;
        }
        let size = frame.len();
        if outbox.bytes + size > self.queue_limit {
            outbox.closing = Some(CloseReason::SlowConsumer);
            outbox.frames = VecDeque::new();
            outbox.bytes = 0;
            drop(outbox);
            self.wake.notify_one();
            return Pushed::Overflowed;
        }
        outbox.bytes += size;
        outbox.frames.push_back(Queued { frame, received_at });
        drop(outbox);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Ask the session to close. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut outbox = self.outbox();
        if outbox.closing.is_none() {
            outbox.closing = Some(reason);
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// Move every queued frame into `batch`; returns the close reason if the
    /// connection must close instead.
    pub fn drain(&self, batch: &mut Vec<Queued>) -> Result<(), CloseReason> {
        let mut outbox = self.outbox();
        if let Some(reason) = &outbox.closing {
            return Err(reason.clone());
        }
        batch.extend(outbox.frames.drain(..));
        outbox.bytes = 0;
        // An idle socket should not keep the capacity of its busiest moment.
        if outbox.frames.capacity() > 64 {
            outbox.frames.shrink_to(8);
        }
        Ok(())
    }

    /// Wake the session again (a wake-up it consumed while busy).
    pub fn rewake(&self) {
        self.wake.notify_one();
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.outbox().closing.clone()
    }

    /// Resolves when something was pushed or a close was requested.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    pub fn rooms(&self) -> Vec<RoomName> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn has_room(&self, room: &RoomName) -> bool {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).contains(room)
    }

    pub(super) fn add_room(&self, room: RoomName) {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).push(room);
    }

    pub(super) fn remove_room(&self, room: &RoomName) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        match rooms.iter().position(|r| r == room) {
            Some(at) => {
                rooms.swap_remove(at);
                true
            }
            None => false,
        }
    }

    pub(super) fn take_rooms(&self) -> Vec<RoomName> {
        std::mem::take(&mut *self.rooms.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(limit: usize) -> Connection {
        Connection::new(1, Arc::from("u"), "127.0.0.1:1".parse().unwrap(), limit)
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_frees_the_queue() {
        let c = conn(10);
        assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        assert_eq!(c.push(Utf8Bytes::from_static("1"), None), Pushed::Overflowed);
        assert_eq!(c.push(Utf8Bytes::from_static("1"), None), Pushed::Closed);
        let mut batch = Vec::new();
        assert_eq!(c.drain(&mut batch), Err(CloseReason::SlowConsumer));
        assert!(batch.is_empty());
    }

    #[test]
    fn drain_moves_frames_in_order_and_resets_the_budget() {
        let c = conn(10);
        c.push(Utf8Bytes::from_static("a"), None);
        c.push(Utf8Bytes::from_static("b"), None);
        let mut batch = Vec::new();
        c.drain(&mut batch).unwrap();
        let texts: Vec<&str> = batch.iter().map(|q| q.frame.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(c.push(Utf8Bytes::from_static("0123456789"), None), Pushed::Queued);
    }

    #[test]
    fn first_close_reason_wins() {
        let c = conn(10);
        c.close(CloseReason::Draining);
        c.close(CloseReason::SlowConsumer);
        assert_eq!(c.closing(), Some(CloseReason::Draining));
    }
}
