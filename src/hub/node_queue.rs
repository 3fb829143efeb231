//! The node-wide bound on queued outbound bytes (`limits.max_queued_bytes`,
//! docs/PROTOCOL.md §7). Every connection's queue is capped on its own; this
//! caps their sum, so that many slow clients together cannot grow the node
//! without bound. Over it, the largest queues are closed first (4009): they
//! hold the most memory and are the furthest behind.
//!
//! A queue adds to the count in steps of 4 KiB (a push to a short queue, the
//! common case, touches no atomic), into a per-thread slot, and a drain
//! subtracts what it added: the count costs fan-out no shared cache line and
//! lags each queue by less than 4 KiB. The sum is read only when a queue is
//! already large ([`SHED_CHECK_BYTES`]) and by the shedder.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// A queue this large makes its push check the node's total.
pub const SHED_CHECK_BYTES: usize = 64 * 1024;
const SLOTS: usize = 64;

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicI64);

pub struct NodeQueue {
    /// 0: no node-wide bound.
    limit: usize,
    slots: Box<[Slot]>,
    shed: tokio::sync::Notify,
}

impl NodeQueue {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            shed: tokio::sync::Notify::new(),
        }
    }

    fn slot(&self) -> &AtomicI64 {
        thread_local! {
            static SLOT: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS
            };
        }
        &self.slots[SLOT.with(|s| *s)].0
    }

    pub fn add(&self, bytes: usize) {
        self.slot()
            .fetch_add(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.slot()
            .fetch_sub(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Queued bytes on the node now (slots are added and subtracted on
    /// different threads: only the sum is meaningful).
    pub fn total(&self) -> usize {
        let sum: i64 = self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        usize::try_from(sum).unwrap_or(0)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn over(&self) -> bool {
        self.limit > 0 && self.total() > self.limit
    }

    /// A push found the node over its bound: wake the shedder.
    pub fn request_shed(&self) {
        self.shed.notify_one();
    }

    pub async fn shed_requested(&self) {
        self.shed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_subtracts_from_any_thread_sum_up() {
        let queue = std::sync::Arc::new(NodeQueue::new(100));
        let adder = queue.clone();
        std::thread::spawn(move || adder.add(150)).join().unwrap();
        assert!(queue.over());
        queue.sub(100);
        assert_eq!(queue.total(), 50);
        assert!(!queue.over());
        assert!(!NodeQueue::new(0).over(), "0 is no bound");
    }
}
