//! Live counters of one process's sockets, bumped by every socket task and
//! read by the progress line (and by a worker's progress reports).
//!
//! Relaxed atomics: each counter is read on its own for display, never used
//! to order other memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct Counters {
    pub attempted: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Sockets whose first connect attempt has finished, either way.
    pub ramped: AtomicU64,
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub misrouted: AtomicU64,
    pub dropped: AtomicU64,
    /// Event frames that carried an offset (durable rooms).
    pub durable: AtomicU64,
    /// Offsets received twice, out of order, or unexpected.
    pub offset_errors: AtomicU64,
    /// Welcomes that answered a resume; rooms they did not recover.
    pub resumes: AtomicU64,
    pub not_recovered: AtomicU64,
    /// Storm: sockets that resumed after their node's 1012, recovered every
    /// room and caught up; and those that resumed but did not recover one.
    pub recovered_sockets: AtomicU64,
    pub unrecovered_sockets: AtomicU64,
    /// Soak, storm: sockets done once publishing ended (caught up, or given up).
    pub finished: AtomicU64,
}

/// A reading of [`Counters`], also what a worker reports to its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub ramped: u64,
    pub open: u64,
    pub peak_open: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub misrouted: u64,
    pub dropped: u64,
    #[serde(default)]
    pub durable: u64,
    #[serde(default)]
    pub offset_errors: u64,
    #[serde(default)]
    pub resumes: u64,
    #[serde(default)]
    pub not_recovered: u64,
    #[serde(default)]
    pub recovered_sockets: u64,
    #[serde(default)]
    pub unrecovered_sockets: u64,
    #[serde(default)]
    pub finished: u64,
}

impl Counters {
    pub fn opened(&self) {
        self.connected.fetch_add(1, Relaxed);
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
    }

    pub fn closed(&self, dropped: bool) {
        self.open.fetch_sub(1, Relaxed);
        if dropped {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn read(&self) -> Progress {
        Progress {
            attempted: self.attempted.load(Relaxed),
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            ramped: self.ramped.load(Relaxed),
            open: self.open.load(Relaxed),
            peak_open: self.peak_open.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            misrouted: self.misrouted.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            durable: self.durable.load(Relaxed),
            offset_errors: self.offset_errors.load(Relaxed),
            resumes: self.resumes.load(Relaxed),
            not_recovered: self.not_recovered.load(Relaxed),
            recovered_sockets: self.recovered_sockets.load(Relaxed),
            unrecovered_sockets: self.unrecovered_sockets.load(Relaxed),
            finished: self.finished.load(Relaxed),
        }
    }
}

impl Progress {
    /// The sum of several processes' readings.
    pub fn add(&mut self, other: &Progress) {
        self.attempted += other.attempted;
        self.connected += other.connected;
        self.failed += other.failed;
        self.ramped += other.ramped;
        self.open += other.open;
        self.peak_open += other.peak_open;
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.misrouted += other.misrouted;
        self.dropped += other.dropped;
        self.durable += other.durable;
        self.offset_errors += other.offset_errors;
        self.resumes += other.resumes;
        self.not_recovered += other.not_recovered;
        self.recovered_sockets += other.recovered_sockets;
        self.unrecovered_sockets += other.unrecovered_sockets;
        self.finished += other.finished;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_peak_follow_opens_and_closes() {
        let c = Counters::default();
        c.opened();
        c.opened();
        c.closed(false);
        c.opened();
        c.closed(true);
        let p = c.read();
        assert_eq!((p.connected, p.open, p.peak_open, p.dropped), (3, 1, 2, 1));
        let mut sum = p;
        sum.add(&p);
        assert_eq!((sum.connected, sum.open), (6, 2));
    }
}
