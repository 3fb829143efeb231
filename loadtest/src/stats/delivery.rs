//! Expected against received: the publish log (when each event was
//! published and to which room), and the loss, surplus, duplicates and
//! misrouted events over a set of finished sessions.
//!
//! A session expects every event of its rooms published inside its window
//! (see [`super::tally`]); what it received inside the window is compared to
//! that count, so sockets that come and go (churn) are judged as exactly as
//! sockets that stay.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::tally::SessionRecord;

/// One published event: its publish time (Unix ns) and its room: `None` for
/// the org room, `Some(i)` for user `i`'s room. A pair keeps the log that is
/// shipped to worker processes small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published(pub u64, pub Option<u32>);

/// Publish times per room, sorted, to count the events in a window.
#[derive(Debug, Default)]
pub struct LogIndex {
    org: Vec<u64>,
    users: HashMap<u32, Vec<u64>>,
}

impl LogIndex {
    pub fn new(log: &[Published]) -> LogIndex {
        let mut index = LogIndex::default();
        for &Published(ts, room) in log {
            match room {
                None => index.org.push(ts),
                Some(user) => index.users.entry(user).or_default().push(ts),
            }
        }
        index.org.sort_unstable();
        for times in index.users.values_mut() {
            times.sort_unstable();
        }
        index
    }

    /// Events user `user`'s session must receive in `[from_ns, until_ns)`:
    /// those of the org room and of its own room.
    pub fn expected(&self, user: u32, from_ns: u64, until_ns: u64) -> u64 {
        let own = self
            .users
            .get(&user)
            .map_or(0, |times| count_in(times, from_ns, until_ns));
        count_in(&self.org, from_ns, until_ns) + own
    }
}

fn count_in(sorted: &[u64], from: u64, until: u64) -> u64 {
    if until <= from {
        return 0;
    }
    let start = sorted.partition_point(|&t| t < from);
    let end = sorted.partition_point(|&t| t < until);
    (end - start) as u64
}

/// Deliveries added up over sessions (and over worker processes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTotals {
    pub sessions: u64,
    /// Sessions the server or the network ended.
    pub dropped_sessions: u64,
    /// Events the sessions had to receive (inside their windows).
    pub expected: u64,
    /// First, correctly routed deliveries (inside a window or not).
    pub delivered: u64,
    /// Of those, inside their session's window.
    pub in_window: u64,
    /// Expected but not received.
    pub lost: u64,
    /// Received inside a window more often than published there (should be
    /// zero; if not, another publisher is at work).
    pub surplus: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unverifiable: u64,
    pub misrouted: u64,
    pub foreign: u64,
}

impl DeliveryTotals {
    pub fn account(records: &[SessionRecord], index: &LogIndex) -> DeliveryTotals {
        let mut totals = DeliveryTotals::default();
        for r in records {
            let expected = index.expected(r.user, r.from_ns, r.until_ns);
            totals.sessions += 1;
            totals.dropped_sessions += u64::from(r.dropped);
            totals.expected += expected;
            totals.delivered += r.delivered;
            totals.in_window += r.in_window;
            totals.lost += expected.saturating_sub(r.in_window);
            totals.surplus += r.in_window.saturating_sub(expected);
            totals.duplicates += r.duplicates;
            totals.reordered += r.reordered;
            totals.unverifiable += r.unverifiable;
            totals.misrouted += r.misrouted;
            totals.foreign += r.foreign;
        }
        totals
    }

    pub fn merge(&mut self, other: &DeliveryTotals) {
        self.sessions += other.sessions;
        self.dropped_sessions += other.dropped_sessions;
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.in_window += other.in_window;
        self.lost += other.lost;
        self.surplus += other.surplus;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.unverifiable += other.unverifiable;
        self.misrouted += other.misrouted;
        self.foreign += other.foreign;
    }

    /// Lost / expected (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }

    /// No loss, no duplicate, nothing misrouted.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.misrouted == 0 && self.surplus == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: u32, from: u64, until: u64, in_window: u64) -> SessionRecord {
        SessionRecord {
            user,
            from_ns: from,
            until_ns: until,
            delivered: in_window,
            in_window,
            ..SessionRecord::default()
        }
    }

    /// Org events at t = 10, 20, ..., 100; user 1 events at 15 and 55; user 2 at 35.
    fn log() -> Vec<Published> {
        let mut log: Vec<Published> = (1..=10).map(|i| Published(i * 10, None)).collect();
        log.extend([Published(15, Some(1)), Published(55, Some(1)), Published(35, Some(2))]);
        log
    }

    #[test]
    fn expected_counts_the_org_and_own_room_inside_the_window() {
        let index = LogIndex::new(&log());
        assert_eq!(index.expected(1, 0, u64::MAX), 12);
        assert_eq!(index.expected(2, 0, u64::MAX), 11);
        assert_eq!(index.expected(3, 0, u64::MAX), 10);
        // [20, 60): org 20..=50 (4) + user 1 at 55 (1).
        assert_eq!(index.expected(1, 20, 60), 5);
        assert_eq!(index.expected(1, 60, 20), 0, "an empty window expects nothing");
    }

    #[test]
    fn loss_surplus_and_counters_add_up_over_sessions() {
        let index = LogIndex::new(&log());
        let mut dup = record(2, 0, u64::MAX, 11);
        dup.duplicates = 3;
        dup.misrouted = 1;
        let mut dropped = record(3, 0, 45, 2);
        dropped.dropped = true;
        let records = vec![record(1, 0, u64::MAX, 12), dup, dropped, record(1, 20, 60, 6)];
        let totals = DeliveryTotals::account(&records, &index);
        assert_eq!(totals.sessions, 4);
        assert_eq!(totals.expected, 12 + 11 + 4 + 5);
        assert_eq!(totals.in_window, 12 + 11 + 2 + 6);
        assert_eq!(totals.lost, 2, "the dropped session missed 2 of its 4");
        assert_eq!(totals.surplus, 1, "the last session got 6 of 5");
        assert_eq!(
            (totals.duplicates, totals.misrouted, totals.dropped_sessions),
            (3, 1, 1)
        );
        assert!(!totals.is_clean());
        assert!((totals.loss_ratio() - 2.0 / 32.0).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_run_is_clean() {
        let index = LogIndex::new(&log());
        let totals = DeliveryTotals::account(&[record(1, 0, u64::MAX, 12), record(2, 0, u64::MAX, 11)], &index);
        assert!(totals.is_clean());
        assert_eq!(totals.loss_ratio(), 0.0);
    }

    #[test]
    fn totals_merge_field_by_field() {
        let index = LogIndex::new(&log());
        let a = DeliveryTotals::account(&[record(1, 0, u64::MAX, 10)], &index);
        let b = DeliveryTotals::account(&[record(2, 0, u64::MAX, 11)], &index);
        let both = DeliveryTotals::account(&[record(1, 0, u64::MAX, 10), record(2, 0, u64::MAX, 11)], &index);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, both);
    }
}
