//! One connection as the rest of the node sees it: identity, rooms, and the
//! bounded outbound queue that fan-out pushes into and the session drains.
//!
//! The queue is capped in bytes, and the cap tells a burst from a stalled
//! reader: `ws.send_queue_bytes` holds while the session's last write has
//! been blocked for [`STALL_GRACE`]; while it writes promptly (or waits for
//! frames), a burst may queue up to [`BURST_FACTOR`] times as much. Overflow
//! never blocks the pusher: the queue is emptied, the connection is marked
//! closing as a slow consumer (4009) and its session is woken to close it.
//!
//! A push is the per-recipient cost of fan-out, so the fields it touches sit
//! together at the front of the struct, and waking the session is one
//! lock-free `AtomicWaker` call rather than a waiter list.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::node_queue::{NodeQueue, SHED_CHECK_BYTES};
use crate::close::CloseReason;
use crate::room::RoomName;

/// Node-local connection id; [`crate::hub::Hub::external_id`] gives the
/// opaque string clients and the API see.
pub type ConnId = u64;

/// How a connection reaches its client: the label metrics carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// Server-Sent Events (`GET /v1/sse`): listen-only.
    Sse,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::WebSocket, Transport::Sse];

    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// A frame waiting to be written.
pub struct Queued {
    pub frame: Utf8Bytes,
    /// When the event left the broker; `None` for replies to the client.
    pub received_at: Option<Instant>,
}

/// Frames drained from a connection, oldest first.
pub type Batch = VecDeque<Queued>;

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: the connection is now closing as a slow consumer;
    /// this many frames (the queue and the new one) were dropped.
    Overflowed(u64),
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// How long one write may be blocked before the connection counts as
/// stalled and the cap is `ws.send_queue_bytes`.
pub const STALL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// The hard ceiling, as a multiple of `ws.send_queue_bytes`: what a burst
/// may queue for a client that reads promptly.
pub const BURST_FACTOR: usize = 4;

#[derive(Default)]
struct Outbox {
    frames: Batch,
    bytes: usize,
    /// Boxed: a pointer keeps the outbox small (the fields a push touches
    /// fill the struct's first two cache lines, the waker included).
    closing: Option<Box<CloseReason>>,
    /// Since when the session has been writing the batch it last took;
    /// None while it waits for frames.
    writing_since: Option<Instant>,
    /// The part of `bytes` added to the node's count: it is brought up to
    /// date only in steps of [`NODE_STEP`], so a push to a short queue (the
    /// common case) touches no atomic.
    counted: usize,
}

/// The node's count lags each queue by less than this.
const NODE_STEP: usize = 4096;

impl Outbox {
    /// Empty the byte count (taken, dropped or shed): returns what the node
    /// count held of it.
    fn uncount(&mut self) -> usize {
        self.bytes = 0;
        std::mem::take(&mut self.counted)
    }
}

impl Connection {
    /// Mark the connection closing as a slow consumer (unless it already
    /// closes) and drop its queue: returns the frames dropped.
    fn close_slow(&self, outbox: &mut Outbox) -> u64 {
        if outbox.closing.is_none() {
            outbox.closing = Some(Box::new(CloseReason::SlowConsumer));
        }
        let dropped = std::mem::take(&mut outbox.frames).len() as u64;
        self.node_queue.sub(outbox.uncount());
        dropped
    }
}

#[repr(C, align(64))]
pub struct Connection {
    // Touched by every push (keep first, keep together).
    /// A std mutex: held only to push or swap frames, never across an await,
    /// and contended only between one pusher and the session.
    outbox: Mutex<Outbox>,
    queue_limit: usize,
    /// The node's count of queued bytes, which this queue adds to.
    node_queue: Arc<NodeQueue>,
    /// The session's waker, set while it waits for frames or a close.
    waker: AtomicWaker,
    // Read by the API and the close path.
    pub id: ConnId,
    pub user_id: Arc<str>,
    pub remote: SocketAddr,
    pub transport: Transport,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Rooms joined, for the API and the close path. Written only by the
    /// session; std mutex for the same reason as `outbox`.
    rooms: Mutex<Vec<RoomName>>,
}

impl Connection {
    pub fn new(
        id: ConnId,
        user_id: Arc<str>,
        remote: SocketAddr,
        transport: Transport,
        queue_limit: usize,
        node_queue: Arc<NodeQueue>,
    ) -> Self {
        Self {
            outbox: Mutex::new(Outbox::default()),
            queue_limit,
            node_queue,
            waker: AtomicWaker::new(),
            id,
            user_id,
            remote,
            transport,
            connected_at: unix_now(),
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
        let after = outbox.bytes + frame.len();
        // The clock is read only past the soft cap, off the common path.
        let overflow = after > self.queue_limit
            && (after > self.queue_limit.saturating_mul(BURST_FACTOR)
                || outbox.writing_since.is_some_and(|since| since.elapsed() >= STALL_GRACE));
        let pushed = if overflow {
            // The queue and the frame that did not fit.
            Pushed::Overflowed(self.close_slow(&mut outbox) + 1)
        } else {
            outbox.bytes = after;
            outbox.frames.push_back(Queued { frame, received_at });
            if after - outbox.counted >= NODE_STEP {
                self.node_queue.add(after - outbox.counted);
                outbox.counted = after;
                if after >= SHED_CHECK_BYTES && self.node_queue.over() {
                    self.node_queue.request_shed();
                }
            }
            Pushed::Queued
        };
        drop(outbox);
        self.waker.wake();
        pushed
    }

    /// Queue a frame of a resume (missed events, and the live ones buffered
    /// while they were read) outside the byte budget: a resume is bounded by
    /// the history size, and counting it would close a client that resumes
    /// after a long absence as a slow consumer, again and again.
    pub fn push_recovered(&self, frame: Utf8Bytes) {
        let mut outbox = self.outbox();
        if outbox.closing.is_some() {
            return;
        }
        outbox.frames.push_back(Queued {
            frame,
            received_at: None,
        });
        drop(outbox);
        self.waker.wake();
    }

    /// Close as a slow consumer now and free the queue (the node is over
    /// `limits.max_queued_bytes`): returns the frames dropped.
    pub fn shed(&self) -> u64 {
        let dropped = self.close_slow(&mut self.outbox());
        self.waker.wake();
        dropped
    }

    /// Bytes queued now (counted against the caps).
    pub fn queued_bytes(&self) -> usize {
        self.outbox().bytes
    }

    /// Ask the session to close. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut outbox = self.outbox();
        if outbox.closing.is_none() {
            outbox.closing = Some(Box::new(reason));
        }
        drop(outbox);
        self.waker.wake();
    }

    /// Take every queued frame: `batch` (empty, kept by the session) and the
    /// queue swap places, so neither the frames nor the buffers are copied.
    /// Returns the close reason instead if the connection must close.
    pub fn drain(&self, batch: &mut Batch) -> Result<(), CloseReason> {
        self.take(&mut self.outbox(), batch).unwrap_or(Ok(()))
    }

    /// The close reason, or the queued frames swapped into `batch`, or None
    /// when there is nothing to take.
    fn take(&self, outbox: &mut Outbox, batch: &mut Batch) -> Option<Result<(), CloseReason>> {
        debug_assert!(batch.is_empty());
        if let Some(reason) = &outbox.closing {
            return Some(Err(reason.as_ref().clone()));
        }
        if outbox.frames.is_empty() {
            // The session is about to wait: nothing it holds is blocked.
            outbox.writing_since = None;
            return None;
        }
        std::mem::swap(&mut outbox.frames, batch);
        // Taken for writing: no longer queued.
        self.node_queue.sub(outbox.uncount());
        outbox.writing_since = Some(Instant::now());
        Some(Ok(()))
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.outbox().closing.as_deref().cloned()
    }

    /// Wait until frames are queued, then take them all (as [`Self::drain`]);
    /// or the close reason once a close is requested. One lock per wake-up:
    /// the waker is registered under the lock, so a push after it is
    /// released finds the waker.
    pub async fn next_batch(&self, batch: &mut Batch) -> Result<(), CloseReason> {
        poll_fn(|cx| {
            let mut outbox = self.outbox();
            if let Some(taken) = self.take(&mut outbox, batch) {
                return Poll::Ready(taken);
            }
            self.waker.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Resolves with the close reason once a close is requested.
    pub async fn closed(&self) -> CloseReason {
        poll_fn(|cx| {
            let outbox = self.outbox();
            if let Some(reason) = &outbox.closing {
                return Poll::Ready(reason.as_ref().clone());
            }
            self.waker.register(cx.waker());
            Poll::Pending
        })
        .await
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

impl Drop for Connection {
    fn drop(&mut self) {
        // Frames still queued when the connection goes leave the node's count.
        let counted = self
            .outbox
            .get_mut()
            .map_or_else(|p| p.into_inner().counted, |o| o.counted);
        self.node_queue.sub(counted);
    }
}

/// Seconds since the Unix epoch (0 on a clock before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(limit: usize) -> Connection {
        Connection::new(
            1,
            Arc::from("u"),
            "127.0.0.1:1".parse().unwrap(),
            Transport::WebSocket,
            limit,
            Arc::new(NodeQueue::new(0)),
        )
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_frees_the_queue() {
        let c = conn(10);
        c.outbox().writing_since = Instant::now().checked_sub(STALL_GRACE);
        assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        assert_eq!(c.push(Utf8Bytes::from_static("1"), None), Pushed::Overflowed(3));
        assert_eq!(c.push(Utf8Bytes::from_static("1"), None), Pushed::Closed);
        let mut batch = Batch::new();
        assert_eq!(c.drain(&mut batch), Err(CloseReason::SlowConsumer));
        assert!(batch.is_empty());
    }

    #[test]
    fn a_burst_may_pass_the_cap_while_writes_flow_but_not_past_the_ceiling() {
        let c = conn(10);
        // The session waits (nothing taken yet): a burst fills up to 4× the cap.
        for _ in 0..8 {
            assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        }
        assert_eq!(c.push(Utf8Bytes::from_static("1"), None), Pushed::Overflowed(9));
        // A session that took a batch just now is writing promptly.
        let c = conn(10);
        c.push(Utf8Bytes::from_static("x"), None);
        c.drain(&mut Batch::new()).unwrap();
        for _ in 0..3 {
            assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        }
    }

    #[test]
    fn a_write_blocked_past_the_grace_gets_the_plain_cap() {
        let c = conn(10);
        c.push(Utf8Bytes::from_static("x"), None);
        c.drain(&mut Batch::new()).unwrap();
        c.outbox().writing_since = Instant::now().checked_sub(STALL_GRACE);
        assert_eq!(c.push(Utf8Bytes::from_static("12345"), None), Pushed::Queued);
        assert_eq!(c.push(Utf8Bytes::from_static("123456"), None), Pushed::Overflowed(2));
    }

    #[test]
    fn drain_moves_frames_in_order_and_resets_the_budget() {
        let c = conn(10);
        c.push(Utf8Bytes::from_static("a"), None);
        c.push(Utf8Bytes::from_static("b"), None);
        let mut batch = Batch::new();
        c.drain(&mut batch).unwrap();
        let texts: Vec<&str> = batch.iter().map(|q| q.frame.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(c.push(Utf8Bytes::from_static("0123456789"), None), Pushed::Queued);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_session_is_woken_by_pushes_from_another_thread_and_by_close() {
        let c = Arc::new(conn(1 << 20));
        for round in 0..200 {
            let pusher = c.clone();
            let push = std::thread::spawn(move || pusher.push(Utf8Bytes::from_static("x"), None));
            let mut batch = Batch::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), c.next_batch(&mut batch))
                .await
                .unwrap_or_else(|_| panic!("round {round}: the push did not wake the waiter"))
                .unwrap();
            push.join().unwrap();
            assert_eq!(batch.len(), 1);
        }
        let closer = c.clone();
        std::thread::spawn(move || closer.close(CloseReason::Draining));
        let reason = tokio::time::timeout(std::time::Duration::from_secs(5), c.closed())
            .await
            .unwrap();
        assert_eq!(reason, CloseReason::Draining);
    }

    #[test]
    fn first_close_reason_wins() {
        let c = conn(10);
        c.close(CloseReason::Draining);
        c.close(CloseReason::SlowConsumer);
        assert_eq!(c.closing(), Some(CloseReason::Draining));
    }
}
