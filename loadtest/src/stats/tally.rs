//! One socket session's account of what it received, kept as it receives:
//! first deliveries, duplicates, events of rooms it is not in, and how many
//! first deliveries fall in its window — the span of publish times in which
//! every event of its rooms must reach it.
//!
//! The window opens at the welcome (PROTOCOL.md: nothing published after
//! the welcome is missed) and closes when the session ends — for a planned
//! close (churn), at the planned time: the session reads on past it until
//! the events published before it have arrived (see `client::session`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::seen::{Seen, SeenWindow};

/// What a finished session reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Index of the user the session authenticated as.
    pub user: u32,
    /// The window, as publish times (Unix ns): `[from_ns, until_ns)`.
    pub from_ns: u64,
    pub until_ns: u64,
    /// Events received for the first time and correctly routed.
    pub delivered: u64,
    /// Of those, how many were published inside the window.
    pub in_window: u64,
    pub duplicates: u64,
    /// First deliveries that came after a higher sequence number.
    pub reordered: u64,
    /// Deliveries too far out of order to tell new from duplicate (counted
    /// as delivered).
    pub unverifiable: u64,
    /// Events of a room the session is not in.
    pub misrouted: u64,
    /// Event frames without the load tester's marker (someone else's events).
    pub foreign: u64,
    /// The server or the network ended the session before the load tester did.
    pub dropped: bool,
}

/// How one received event was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A first, correctly routed delivery: its latency counts.
    First,
    Duplicate,
    Misrouted,
}

/// The live account of one session.
#[derive(Debug)]
pub struct Tally {
    org_room: Arc<str>,
    user_room: String,
    seen: SeenWindow,
    record: SessionRecord,
}

impl Tally {
    /// A session of user `user` (room `user_room`), member of `org_room`,
    /// that expects every event published from `from_ns` until `until_ns`
    /// (`u64::MAX`: until it is ended).
    pub fn new(user: u32, user_room: String, org_room: Arc<str>, from_ns: u64, until_ns: u64) -> Tally {
        Tally {
            org_room,
            user_room,
            seen: SeenWindow::default(),
            record: SessionRecord {
                user,
                from_ns,
                until_ns,
                ..SessionRecord::default()
            },
        }
    }

    fn is_member(&self, room: &str) -> bool {
        room == &*self.org_room || room == self.user_room
    }

    /// An event published to `data_room` with sequence `seq` at `ts_ns`;
    /// `frame_room` is the room the server's frame named, when its protocol
    /// names one.
    pub fn event(&mut self, frame_room: Option<&str>, data_room: &str, seq: u64, ts_ns: u64) -> Verdict {
        let labelled_right = frame_room.is_none_or(|room| room == data_room);
        if !labelled_right || !self.is_member(data_room) {
            self.record.misrouted += 1;
            return Verdict::Misrouted;
        }
        match self.seen.observe(seq) {
            Seen::Duplicate => {
                self.record.duplicates += 1;
                return Verdict::Duplicate;
            }
            Seen::Reordered => self.record.reordered += 1,
            Seen::TooOld => self.record.unverifiable += 1,
            Seen::New => {}
        }
        self.record.delivered += 1;
        if ts_ns >= self.record.from_ns && ts_ns < self.record.until_ns {
            self.record.in_window += 1;
        }
        Verdict::First
    }

    /// The end of the window (publish time, Unix ns).
    pub fn until_ns(&self) -> u64 {
        self.record.until_ns
    }

    /// An event frame that does not carry the load tester's marker.
    pub fn foreign(&mut self) {
        self.record.foreign += 1;
    }

    /// Close the account. `ended_ns` is when the session ended; `dropped`
    /// whether the other side ended it.
    pub fn finish(mut self, ended_ns: u64, dropped: bool) -> SessionRecord {
        self.record.until_ns = self.record.until_ns.min(ended_ns);
        self.record.dropped = dropped;
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(from: u64, until: u64) -> Tally {
        Tally::new(7, "user:lt7".into(), Arc::from("org:lt"), from, until)
    }

    #[test]
    fn counts_first_deliveries_duplicates_and_misrouted_apart() {
        let mut t = tally(100, u64::MAX);
        assert_eq!(t.event(Some("org:lt"), "org:lt", 0, 150), Verdict::First);
        assert_eq!(t.event(Some("org:lt"), "org:lt", 1, 160), Verdict::First);
        assert_eq!(t.event(Some("org:lt"), "org:lt", 1, 160), Verdict::Duplicate);
        assert_eq!(
            t.event(None, "user:lt7", 2, 170),
            Verdict::First,
            "own user room, Socket.IO style"
        );
        assert_eq!(
            t.event(Some("user:lt8"), "user:lt8", 3, 180),
            Verdict::Misrouted,
            "another user's room"
        );
        assert_eq!(
            t.event(Some("org:lt"), "user:lt8", 4, 190),
            Verdict::Misrouted,
            "the frame names another room than the one published to"
        );
        t.foreign();
        let r = t.finish(1_000, false);
        assert_eq!(r.delivered, 3);
        assert_eq!(r.in_window, 3);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.misrouted, 2);
        assert_eq!(r.foreign, 1);
        assert_eq!((r.from_ns, r.until_ns, r.dropped), (100, 1_000, false));
    }

    #[test]
    fn only_events_published_inside_the_window_count_towards_it() {
        let mut t = tally(100, 200);
        assert_eq!(
            t.event(None, "org:lt", 0, 99),
            Verdict::First,
            "published before the welcome"
        );
        assert_eq!(t.event(None, "org:lt", 1, 100), Verdict::First);
        assert_eq!(t.event(None, "org:lt", 2, 199), Verdict::First);
        assert_eq!(
            t.event(None, "org:lt", 3, 200),
            Verdict::First,
            "published after the planned end"
        );
        let r = t.finish(300, false);
        assert_eq!(r.delivered, 4);
        assert_eq!(r.in_window, 2);
        assert_eq!(r.until_ns, 200, "a planned end stays where it was");
    }

    #[test]
    fn reordering_is_counted_but_is_no_loss() {
        let mut t = tally(0, u64::MAX);
        for seq in [0, 2, 1, 3] {
            assert_eq!(t.event(None, "org:lt", seq, 10), Verdict::First);
        }
        let r = t.finish(50, true);
        assert_eq!((r.delivered, r.in_window, r.reordered, r.duplicates), (4, 4, 1, 0));
        assert_eq!(r.until_ns, 50, "a dropped session's window ends when it ended");
        assert!(r.dropped);
    }
}
