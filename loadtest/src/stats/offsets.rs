//! Offsets, room by room: what one socket was given of each durable room
//! (PROTOCOL.md §10), across all its sessions, and the verdict — lost,
//! duplicated, out of order — once the run knows where each room ended.
//!
//! A socket's first welcome gives each room's position: counting starts
//! after it. Every event frame's offset is recorded (as ranges, so a socket
//! that stays in order costs one range per room, however long the run). A
//! resume that comes back `recovered:true` changes nothing: the missed
//! events must follow. `recovered:false` ends the room's current *span* at
//! the last offset received and starts a new one at the welcome's position
//! (the client resets its expectations, as the protocol tells it to): the
//! offsets in between are `skipped`, not lost, and counted apart.
//!
//! At the end, each room's last span runs to the room's last offset as the
//! publisher's `FCALL` replies gave it ([`RoomEnds`]), or to the last one
//! received if that is higher. **Lost** = offsets inside the spans never
//! received; **duplicated** = an offset received again; **out of order** =
//! an offset received for the first time after a higher one; **unexpected**
//! = an offset at or before the span's start that was never received (the
//! server sent what it said came before), or an epoch the socket was never
//! told.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{Position, Welcome};

/// Each room's last offset, from the publisher's replies.
pub type RoomEnds = BTreeMap<String, u64>;

/// Sockets named in the report's list of offenders, at most.
pub const MAX_OFFENDERS: usize = 20;
/// Lost offsets named per offender, at most.
const MAX_FIRST_LOST: usize = 5;

/// Offsets as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn contains(&self, n: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < n);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= n)
    }

    /// Add `n`; false if it was there already. In-order offsets extend the
    /// last range in constant time.
    pub fn insert(&mut self, n: u64) -> bool {
        if let Some(last) = self.ranges.last_mut() {
            if n == last.1.saturating_add(1) {
                last.1 = n;
                return true;
            }
            if n > last.1 {
                self.ranges.push((n, n));
                return true;
            }
        } else {
            self.ranges.push((n, n));
            return true;
        }
        let i = self.ranges.partition_point(|&(_, hi)| hi < n);
        if self.ranges[i].0 <= n {
            return false;
        }
        // n falls before range i, after range i - 1 (if any).
        let joins_next = self.ranges[i].0 == n + 1;
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == n;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = n,
            (false, true) => self.ranges[i].0 = n,
            (false, false) => self.ranges.insert(i, (n, n)),
        }
        true
    }

    /// How many of `(after, through]` are in the set.
    pub fn count_in(&self, after: u64, through: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(lo, hi)| {
                let lo = lo.max(after.saturating_add(1));
                let hi = hi.min(through);
                if hi >= lo { hi - lo + 1 } else { 0 }
            })
            .sum()
    }

    /// The first `limit` numbers of `(after, through]` not in the set.
    pub fn missing(&self, after: u64, through: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut next = after.saturating_add(1);
        for &(lo, hi) in &self.ranges {
            if out.len() >= limit || next > through {
                break;
            }
            while next < lo && next <= through && out.len() < limit {
                out.push(next);
                next += 1;
            }
            next = next.max(hi.saturating_add(1));
        }
        while next <= through && out.len() < limit {
            out.push(next);
            next += 1;
        }
        out
    }

    /// Ranges held: 1 for a socket that got everything in order.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// Expectations in one epoch: every offset after `start`, up to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    epoch: String,
    start: u64,
    /// The highest offset received, or `start`.
    highest: u64,
    received: RangeSet,
}

impl Span {
    fn new(position: &Position) -> Span {
        Span {
            epoch: position.epoch.clone(),
            start: position.offset,
            highest: position.offset,
            received: RangeSet::default(),
        }
    }
}

/// How one received offset was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time, in order.
    New,
    Duplicate,
    /// First time, after a higher offset.
    OutOfOrder,
    /// Before the span's start, or in an epoch the socket was not told.
    Unexpected,
}

/// One socket's account of one durable room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomLedger {
    /// The last is the current one; earlier ones ended with a `recovered:false`.
    spans: Vec<Span>,
    duplicated: u64,
    out_of_order: u64,
    unexpected: u64,
    recovered: u64,
    not_recovered: u64,
    /// Offsets a `recovered:false` said are gone (same epoch only).
    skipped: u64,
}

impl RoomLedger {
    /// A room first seen at `position`.
    pub fn new(position: &Position) -> RoomLedger {
        RoomLedger {
            spans: vec![Span::new(position)],
            duplicated: 0,
            out_of_order: 0,
            unexpected: 0,
            recovered: 0,
            not_recovered: 0,
            skipped: 0,
        }
    }

    fn current(&self) -> &Span {
        // `spans` is never empty: made with one, only ever pushed to.
        &self.spans[self.spans.len() - 1]
    }

    /// Where to resume from: the highest offset received in the current
    /// epoch (or the position given).
    pub fn position(&self) -> Position {
        let span = self.current();
        Position {
            offset: span.highest,
            epoch: span.epoch.clone(),
        }
    }

    /// The highest offset received in the current span (or its start).
    pub fn highest(&self) -> u64 {
        self.current().highest
    }

    pub fn on_event(&mut self, offset: u64, epoch: &str) -> Arrival {
        let arrival = self.place(offset, epoch);
        match arrival {
            Arrival::New => {}
            Arrival::Duplicate => self.duplicated += 1,
            Arrival::OutOfOrder => self.out_of_order += 1,
            Arrival::Unexpected => self.unexpected += 1,
        }
        arrival
    }

    fn place(&mut self, offset: u64, epoch: &str) -> Arrival {
        let (current, earlier) = match self.spans.split_last_mut() {
            Some(split) => split,
            None => return Arrival::Unexpected,
        };
        if current.epoch != epoch {
            return Arrival::Unexpected;
        }
        if offset <= current.start {
            let seen = std::iter::once(&*current)
                .chain(earlier.iter())
                .any(|s| s.epoch == epoch && s.received.contains(offset));
            return if seen { Arrival::Duplicate } else { Arrival::Unexpected };
        }
        if !current.received.insert(offset) {
            return Arrival::Duplicate;
        }
        if offset < current.highest {
            return Arrival::OutOfOrder;
        }
        current.highest = offset;
        Arrival::New
    }

    /// A resume's answer: the welcome's `position` and whether the room
    /// was `recovered`. True if the resume holds: nothing to reset.
    pub fn on_resumed(&mut self, position: &Position, recovered: bool) -> bool {
        let (same_epoch, highest) = {
            let span = self.current();
            (position.epoch == span.epoch, span.highest)
        };
        if recovered && same_epoch && position.offset >= highest {
            self.recovered += 1;
            return true;
        }
        if recovered {
            // Recovered, yet from somewhere else than where it stood.
            self.unexpected += 1;
        } else {
            self.not_recovered += 1;
        }
        if same_epoch {
            self.skipped += position.offset.saturating_sub(highest);
        }
        self.spans.push(Span::new(position));
        false
    }

    /// The verdict, the room having ended at `end` (None: not known, or the
    /// socket did not stay to the end: count to the last offset received).
    pub fn audit(&self, end: Option<u64>) -> RoomAudit {
        let mut audit = RoomAudit {
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            unexpected: self.unexpected,
            recovered: self.recovered,
            not_recovered: self.not_recovered,
            skipped: self.skipped,
            ..RoomAudit::default()
        };
        let last = self.spans.len() - 1;
        for (i, span) in self.spans.iter().enumerate() {
            let through = match end {
                Some(end) if i == last => end.max(span.highest),
                _ => span.highest,
            };
            let expected = through - span.start;
            let received = span.received.count_in(span.start, through);
            audit.expected += expected;
            audit.received += received;
            audit.lost += expected - received;
            if audit.first_lost.len() < MAX_FIRST_LOST {
                let room = MAX_FIRST_LOST - audit.first_lost.len();
                audit
                    .first_lost
                    .extend(span.received.missing(span.start, through, room));
            }
        }
        audit
    }
}

/// One room's verdict for one socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomAudit {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub skipped: u64,
    pub first_lost: Vec<u64>,
}

impl RoomAudit {
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0
    }
}

/// What one welcome did to a socket's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Rooms it asked to resume.
    pub asked: u32,
    pub recovered: u32,
    pub not_recovered: u32,
}

impl Resumed {
    pub fn all_recovered(&self) -> bool {
        self.not_recovered == 0
    }
}

/// One socket's rooms, across all its sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketLedger {
    pub rooms: BTreeMap<String, RoomLedger>,
    /// Welcomes that answered a resume.
    pub resumes: u64,
    /// Events of a durable room the welcome did not list.
    pub unlisted: u64,
    /// The socket was there when publishing ended: its rooms count to their ends.
    pub to_the_end: bool,
}

impl SocketLedger {
    /// The auth frame's `since`: every room's position.
    pub fn since(&self) -> BTreeMap<String, Position> {
        self.rooms
            .iter()
            .map(|(room, ledger)| (room.clone(), ledger.position()))
            .collect()
    }

    /// A welcome. Rooms seen for the first time start at its positions; the
    /// others were asked to resume (the auth frame gave them all).
    pub fn on_welcome(&mut self, welcome: &Welcome) -> Resumed {
        let mut resumed = Resumed::default();
        for (room, position) in &welcome.positions {
            match self.rooms.get_mut(room) {
                None => {
                    self.rooms.insert(room.clone(), RoomLedger::new(position));
                }
                Some(ledger) => {
                    resumed.asked += 1;
                    let recovered = welcome.recovered.get(room).copied().unwrap_or(false);
                    if ledger.on_resumed(position, recovered) {
                        resumed.recovered += 1;
                    } else {
                        resumed.not_recovered += 1;
                    }
                }
            }
        }
        if resumed.asked > 0 {
            self.resumes += 1;
        }
        resumed
    }

    pub fn on_event(&mut self, room: &str, offset: u64, epoch: &str) -> Arrival {
        match self.rooms.get_mut(room) {
            Some(ledger) => ledger.on_event(offset, epoch),
            None => {
                self.unlisted += 1;
                Arrival::Unexpected
            }
        }
    }

    /// Whether every room has reached its target (rooms without one have).
    pub fn reached(&self, target: impl Fn(&str) -> Option<u64>) -> bool {
        self.rooms
            .iter()
            .all(|(room, ledger)| target(room).is_none_or(|t| ledger.highest() >= t))
    }
}

/// The totals of one kind of room (its namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceTotals {
    pub rooms: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub not_recovered: u64,
}

/// A socket's room that was not clean.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offender {
    /// The socket's user index.
    pub user: u32,
    pub room: String,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// The first offsets it never got.
    pub first_lost: Vec<u64>,
}

/// Offsets added up over sockets (and over worker processes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetTotals {
    /// Sockets that kept a ledger.
    pub sockets: u64,
    /// (socket, room) pairs.
    pub rooms: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Welcomes that answered a resume, and the rooms in them.
    pub resumes: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub skipped: u64,
    pub unlisted: u64,
    /// `org`, `user`, ...
    pub by_namespace: BTreeMap<String, NamespaceTotals>,
    /// The first [`MAX_OFFENDERS`] rooms that were not clean.
    pub offenders: Vec<Offender>,
}

impl OffsetTotals {
    /// Add socket `user`'s ledger, its rooms having ended at `ends`.
    pub fn add(&mut self, user: u32, ledger: &SocketLedger, ends: &RoomEnds) {
        self.sockets += 1;
        self.resumes += ledger.resumes;
        self.unlisted += ledger.unlisted;
        for (room, rl) in &ledger.rooms {
            let end = if ledger.to_the_end {
                Some(ends.get(room).copied().unwrap_or(0))
            } else {
                None
            };
            let a = rl.audit(end);
            self.rooms += 1;
            self.expected += a.expected;
            self.received += a.received;
            self.lost += a.lost;
            self.duplicated += a.duplicated;
            self.out_of_order += a.out_of_order;
            self.unexpected += a.unexpected;
            self.recovered += a.recovered;
            self.not_recovered += a.not_recovered;
            self.skipped += a.skipped;
            let namespace = room.split_once(':').map_or(room.as_str(), |(ns, _)| ns);
            let ns = self.by_namespace.entry(namespace.to_string()).or_default();
            ns.rooms += 1;
            ns.expected += a.expected;
            ns.received += a.received;
            ns.lost += a.lost;
            ns.duplicated += a.duplicated;
            ns.out_of_order += a.out_of_order;
            ns.unexpected += a.unexpected;
            ns.not_recovered += a.not_recovered;
            if !a.is_clean() && self.offenders.len() < MAX_OFFENDERS {
                self.offenders.push(Offender {
                    user,
                    room: room.clone(),
                    lost: a.lost,
                    duplicated: a.duplicated,
                    out_of_order: a.out_of_order,
                    unexpected: a.unexpected,
                    first_lost: a.first_lost,
                });
            }
        }
    }

    pub fn merge(&mut self, other: &OffsetTotals) {
        self.sockets += other.sockets;
        self.rooms += other.rooms;
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.resumes += other.resumes;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.skipped += other.skipped;
        self.unlisted += other.unlisted;
        for (name, o) in &other.by_namespace {
            let ns = self.by_namespace.entry(name.clone()).or_default();
            ns.rooms += o.rooms;
            ns.expected += o.expected;
            ns.received += o.received;
            ns.lost += o.lost;
            ns.duplicated += o.duplicated;
            ns.out_of_order += o.out_of_order;
            ns.unexpected += o.unexpected;
            ns.not_recovered += o.not_recovered;
        }
        let room = MAX_OFFENDERS.saturating_sub(self.offenders.len());
        self.offenders.extend(other.offenders.iter().take(room).cloned());
    }

    /// Nothing lost, duplicated, out of order or unexpected.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0 && self.unlisted == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn welcome(positions: &[(&str, u64, &str)], recovered: &[(&str, bool)]) -> Welcome {
        Welcome {
            positions: positions
                .iter()
                .map(|&(room, offset, epoch)| (room.to_string(), at(offset, epoch)))
                .collect(),
            recovered: recovered.iter().map(|&(room, r)| (room.to_string(), r)).collect(),
        }
    }

    #[test]
    fn range_sets_merge_and_count() {
        let mut s = RangeSet::default();
        for n in [5, 6, 7, 10, 9, 1, 3, 2] {
            assert!(s.insert(n), "{n} is new");
        }
        assert!(!s.insert(6));
        assert!(!s.insert(1));
        assert_eq!(s.ranges, vec![(1, 3), (5, 7), (9, 10)]);
        assert!(s.insert(4));
        assert_eq!(s.ranges, vec![(1, 7), (9, 10)]);
        assert!(s.insert(8));
        assert_eq!(s.ranges, vec![(1, 10)]);
        assert!(s.contains(1) && s.contains(10) && !s.contains(0) && !s.contains(11));
        assert_eq!(s.count_in(0, 10), 10);
        assert_eq!(s.count_in(3, 5), 2);
        assert_eq!(s.count_in(10, 20), 0);
        let mut gaps = RangeSet::default();
        for n in [2, 3, 6, 9] {
            gaps.insert(n);
        }
        assert_eq!(gaps.missing(0, 10, 10), vec![1, 4, 5, 7, 8, 10]);
        assert_eq!(gaps.missing(0, 10, 3), vec![1, 4, 5]);
        assert_eq!(gaps.missing(3, 6, 10), vec![4, 5]);
        assert_eq!(RangeSet::default().missing(5, 7, 10), vec![6, 7]);
        assert_eq!(gaps.count_in(0, 10), 4);
    }

    #[test]
    fn a_room_received_in_order_is_clean() {
        let mut room = RoomLedger::new(&at(10, "e"));
        for offset in 11..=20 {
            assert_eq!(room.on_event(offset, "e"), Arrival::New);
        }
        assert_eq!(room.position(), at(20, "e"));
        let a = room.audit(Some(20));
        assert_eq!((a.expected, a.received, a.lost), (10, 10, 0));
        assert!(a.is_clean());
        assert_eq!(room.spans[0].received.ranges(), 1);
    }

    #[test]
    fn offsets_never_received_up_to_the_end_are_lost() {
        let mut room = RoomLedger::new(&at(0, "e"));
        for offset in [1, 2, 4, 5] {
            room.on_event(offset, "e");
        }
        // The room ended at 8: 3, 6, 7 and 8 never came.
        let a = room.audit(Some(8));
        assert_eq!((a.expected, a.received, a.lost), (8, 4, 4));
        assert_eq!(a.first_lost, vec![3, 6, 7, 8]);
        // A socket that left before the end is judged up to what it got.
        let a = room.audit(None);
        assert_eq!((a.expected, a.lost, a.first_lost.clone()), (5, 1, vec![3]));
        // The end known from the publisher never shortens the span.
        assert_eq!(room.audit(Some(2)).expected, 5);
    }

    #[test]
    fn duplicates_and_out_of_order_are_told_apart() {
        let mut room = RoomLedger::new(&at(0, "e"));
        assert_eq!(room.on_event(1, "e"), Arrival::New);
        assert_eq!(room.on_event(3, "e"), Arrival::New);
        assert_eq!(room.on_event(2, "e"), Arrival::OutOfOrder);
        assert_eq!(room.on_event(2, "e"), Arrival::Duplicate);
        assert_eq!(room.on_event(3, "e"), Arrival::Duplicate);
        assert_eq!(room.on_event(4, "e"), Arrival::New);
        let a = room.audit(Some(4));
        assert_eq!((a.lost, a.duplicated, a.out_of_order, a.unexpected), (0, 2, 1, 0));
        assert!(!a.is_clean());
        assert_eq!(room.position(), at(4, "e"));
    }

    #[test]
    fn events_before_the_start_or_of_another_epoch_are_unexpected() {
        let mut room = RoomLedger::new(&at(10, "e"));
        assert_eq!(
            room.on_event(10, "e"),
            Arrival::Unexpected,
            "the welcome's position itself"
        );
        assert_eq!(room.on_event(3, "e"), Arrival::Unexpected);
        assert_eq!(room.on_event(11, "other"), Arrival::Unexpected);
        assert_eq!(room.on_event(11, "e"), Arrival::New);
        let a = room.audit(Some(11));
        assert_eq!((a.lost, a.unexpected), (0, 3));
    }

    #[test]
    fn a_recovered_resume_keeps_counting_across_sessions() {
        let mut socket = SocketLedger::default();
        let first = socket.on_welcome(&welcome(&[("org:lt", 5, "e"), ("user:lt1", 0, "u")], &[]));
        assert_eq!(first, Resumed::default(), "nothing to resume on the first welcome");
        socket.on_event("org:lt", 6, "e");
        socket.on_event("org:lt", 7, "e");
        assert_eq!(socket.since().get("org:lt"), Some(&at(7, "e")));
        assert_eq!(socket.since().get("user:lt1"), Some(&at(0, "u")));
        // Away while 8..=10 were published; back on another node.
        let back = socket.on_welcome(&welcome(
            &[("org:lt", 10, "e"), ("user:lt1", 0, "u")],
            &[("org:lt", true), ("user:lt1", true)],
        ));
        assert_eq!(
            back,
            Resumed {
                asked: 2,
                recovered: 2,
                not_recovered: 0
            }
        );
        assert!(!socket.reached(|room| (room == "org:lt").then_some(10)));
        for offset in 8..=12 {
            assert_eq!(socket.on_event("org:lt", offset, "e"), Arrival::New);
        }
        assert!(socket.reached(|room| (room == "org:lt").then_some(10)));
        socket.to_the_end = true;
        let mut totals = OffsetTotals::default();
        totals.add(1, &socket, &RoomEnds::from([("org:lt".to_string(), 12)]));
        assert_eq!((totals.expected, totals.received, totals.lost), (7, 7, 0));
        assert_eq!((totals.resumes, totals.recovered, totals.not_recovered), (1, 2, 0));
        assert!(totals.is_clean());
        assert_eq!(totals.by_namespace["org"].expected, 7);
        assert_eq!(totals.by_namespace["user"].expected, 0);
    }

    #[test]
    fn not_recovered_resets_to_the_welcome_and_the_gap_is_skipped_not_lost() {
        let mut socket = SocketLedger::default();
        socket.on_welcome(&welcome(&[("org:lt", 0, "e1")], &[]));
        for offset in 1..=4 {
            socket.on_event("org:lt", offset, "e1");
        }
        // Trimmed: the room is at 50, the history no longer has 5.
        let trimmed = socket.on_welcome(&welcome(&[("org:lt", 50, "e1")], &[("org:lt", false)]));
        assert_eq!(trimmed.not_recovered, 1);
        assert!(!trimmed.all_recovered());
        assert_eq!(socket.since().get("org:lt"), Some(&at(50, "e1")));
        assert_eq!(
            socket.on_event("org:lt", 20, "e1"),
            Arrival::Unexpected,
            "inside the skipped gap"
        );
        assert_eq!(
            socket.on_event("org:lt", 3, "e1"),
            Arrival::Duplicate,
            "received in the old span"
        );
        socket.on_event("org:lt", 51, "e1");
        // Redis lost everything: a new epoch, counting from its position.
        let lost = socket.on_welcome(&welcome(&[("org:lt", 2, "e2")], &[("org:lt", false)]));
        assert_eq!(lost.not_recovered, 1);
        assert_eq!(
            socket.on_event("org:lt", 52, "e1"),
            Arrival::Unexpected,
            "the old epoch"
        );
        socket.on_event("org:lt", 3, "e2");
        socket.to_the_end = true;
        let mut totals = OffsetTotals::default();
        totals.add(0, &socket, &RoomEnds::from([("org:lt".to_string(), 4)]));
        // Spans: (0, 4] got 4; (50, 51] got 1; (2, 4] got 1 of 2.
        assert_eq!((totals.expected, totals.received, totals.lost), (4 + 1 + 2, 6, 1));
        assert_eq!((totals.not_recovered, totals.skipped), (2, 46));
        assert_eq!((totals.duplicated, totals.unexpected), (1, 2));
        assert_eq!(totals.offenders.len(), 1);
        assert_eq!(totals.offenders[0].first_lost, vec![4]);
    }

    #[test]
    fn a_resume_missing_from_recovered_or_from_elsewhere_is_not_recovered() {
        let mut socket = SocketLedger::default();
        socket.on_welcome(&welcome(&[("org:lt", 0, "e")], &[]));
        socket.on_event("org:lt", 1, "e");
        let silent = socket.on_welcome(&welcome(&[("org:lt", 1, "e")], &[]));
        assert_eq!(silent.not_recovered, 1, "no answer for a room it asked about");
        let behind = socket.on_welcome(&welcome(&[("org:lt", 0, "e")], &[("org:lt", true)]));
        assert_eq!(behind.not_recovered, 1, "recovered, but behind what it had");
        assert_eq!(socket.rooms["org:lt"].audit(None).unexpected, 1);
    }

    #[test]
    fn events_of_rooms_the_welcome_did_not_list_are_counted() {
        let mut socket = SocketLedger::default();
        socket.on_welcome(&welcome(&[("org:lt", 0, "e")], &[]));
        assert_eq!(socket.on_event("user:lt9", 1, "x"), Arrival::Unexpected);
        let mut totals = OffsetTotals::default();
        totals.add(0, &socket, &RoomEnds::new());
        assert_eq!(totals.unlisted, 1);
        assert!(!totals.is_clean());
    }

    #[test]
    fn totals_merge_field_by_field_and_offenders_stay_bounded() {
        let mut lossy = SocketLedger {
            to_the_end: true,
            ..SocketLedger::default()
        };
        lossy.on_welcome(&welcome(&[("org:lt", 0, "e")], &[]));
        let ends = RoomEnds::from([("org:lt".to_string(), 3)]);
        let mut a = OffsetTotals::default();
        let mut all = OffsetTotals::default();
        for user in 0..MAX_OFFENDERS as u32 {
            a.add(user, &lossy, &ends);
            all.add(user, &lossy, &ends);
        }
        let mut b = OffsetTotals::default();
        b.add(99, &lossy, &ends);
        all.add(99, &lossy, &ends);
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.offenders.len(), MAX_OFFENDERS);
        assert_eq!(a.lost, 3 * (MAX_OFFENDERS as u64 + 1));
        let json = serde_json::to_string(&a).expect("json");
        let back: OffsetTotals = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, a);
    }
}
