//! Durable rooms on this node (docs/PROTOCOL.md §10): for each, how far its
//! stream has been delivered to the room's live members, the connections
//! still joining it, and a window of recent frames to resume from.
//!
//! A [`Tail`] is the one owner of "who gets which offset" in its room. Live
//! events, joins and repairs all run under its lock, so none interleave:
//!
//! - **Live events** are delivered once, in offset order: an offset already
//!   delivered is dropped, the next one is delivered, and a jump starts a
//!   repair from the broker's history (events that arrive meanwhile wait).
//!   If the history cannot fill the jump, or the epoch changed, the room's
//!   members are closed so that they resume and learn `recovered:false`:
//!   a gap is never delivered silently. An event whose payload this node
//!   cannot read is such a gap too, live or in the history.
//! - **Joins** follow Centrifugo's subscribe-then-read: the room is live on
//!   the broker first, then the connection is *held* (its live events are
//!   buffered), then its history is read, then history and buffer are merged
//!   by offset and the connection becomes a live member. When the node's
//!   own window already covers the client's position, no read is needed.
//!
//! The lock is a std mutex: it is held for in-memory work only (a fan-out,
//! a merge), never across an await.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::connection::{ConnId, Connection};
use crate::broker::{HistoryPage, Position};
use crate::config::HistoryConfig;
use crate::room::RoomName;

/// How long a room's window keeps frames after the last resume into it: long
/// enough for the clients of a drained node to come back.
const WINDOW_HOLD: Duration = Duration::from_secs(60);
/// Live events buffered for one joining connection, or for a repair, before
/// giving up on it (a read normally takes a millisecond).
const MAX_BUFFERED: usize = 10_000;

/// Every durable room live on this node.
pub struct Tails {
    tails: DashMap<RoomName, Arc<Mutex<Tail>>>,
    history: HistoryConfig,
}

impl Tails {
    pub fn new(history: HistoryConfig) -> Self {
        Self {
            tails: DashMap::new(),
            history,
        }
    }

    pub fn is_durable(&self, room: &RoomName) -> bool {
        self.history.is_durable(room.namespace())
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.history
    }

    /// The room's tail, if it is durable and live here.
    pub fn get(&self, room: &str) -> Option<Arc<Mutex<Tail>>> {
        self.tails.get(room).map(|t| t.clone())
    }

    /// The same, with the room's name.
    pub fn get_named(&self, room: &str) -> Option<(RoomName, Arc<Mutex<Tail>>)> {
        self.tails.get(room).map(|t| (t.key().clone(), t.value().clone()))
    }

    /// Called when the room becomes live on the broker.
    pub fn open(&self, room: &RoomName) {
        if self.is_durable(room) {
            self.tails
                .insert(room.clone(), Arc::new(Mutex::new(Tail::new(self.history.size))));
        }
    }

    /// Called after the room's last member left, before it is unsubscribed.
    pub fn close(&self, room: &RoomName) {
        self.tails.remove(room);
    }

    /// Every durable room live here, for the position check after a reconnect.
    pub fn all(&self) -> Vec<(RoomName, Arc<Mutex<Tail>>)> {
        self.tails
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }
}

pub fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    // Every step leaves the tail consistent; a poisoned lock is still usable.
    tail.lock().unwrap_or_else(|p| p.into_inner())
}

/// A live event of a durable room, encoded once.
#[derive(Clone)]
pub struct LiveEvent {
    pub position: Option<(u64, Arc<str>)>,
    pub frame: Utf8Bytes,
    pub skip: Option<ConnId>,
    pub received_at: Instant,
}

/// What the hub must do after a step of the tail, still under its lock.
#[derive(Default)]
#[must_use]
pub struct Effects {
    /// Frames for the room's live members, in order.
    pub deliver: Vec<LiveEvent>,
    /// Held connections that are now live members (their frames are queued).
    pub promoted: Vec<Arc<Connection>>,
    /// Read the history from this offset and call [`Tail::repaired`].
    pub repair_from: Option<u64>,
    /// Continuity is lost: close every member of the room, live and held.
    pub close_members: bool,
    /// Held connections to close (their buffer overflowed).
    pub close_held: Vec<Arc<Connection>>,
    /// Missed events queued for promoted connections (from their history
    /// reads), for `wsgate_events_recovered_total`.
    pub recovered: u64,
}

struct Held {
    conn: Arc<Connection>,
    buffered: Vec<LiveEvent>,
    /// Resolved, waiting for the live stream to reach `through` (the read
    /// saw events that the node has not received yet).
    ready: Option<Ready>,
}

struct Ready {
    through: Position,
    frames: Vec<Utf8Bytes>,
}

/// Recent frames, contiguous and ending at the tail's offset: a resume from
/// any offset in `start..=offset` needs no broker read. Frames are kept only
/// while clients resume into the room.
struct Window {
    start: u64,
    frames: VecDeque<(u64, Utf8Bytes)>,
    active_until: Option<Instant>,
    cap: usize,
}

impl Window {
    fn reset(&mut self, at: u64) {
        self.start = at;
        self.frames.clear();
    }

    fn is_active(&mut self, now: Instant) -> bool {
        match self.active_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.active_until = None;
                self.frames = VecDeque::new();
                false
            }
            None => false,
        }
    }

    /// Keep frames from now on (or for longer), starting at `at`.
    fn activate(&mut self, at: u64, now: Instant) {
        if !self.is_active(now) {
            self.reset(at);
        }
        self.active_until = Some(now + WINDOW_HOLD);
    }

    fn push(&mut self, offset: u64, frame: &Utf8Bytes, now: Instant) {
        if !self.is_active(now) {
            self.start = offset;
            return;
        }
        self.frames.push_back((offset, frame.clone()));
        if self.frames.len() > self.cap {
            self.frames.pop_front();
        }
        self.start = self.frames.front().map_or(offset, |(o, _)| o - 1);
    }

    /// A read from `since` covered events older than the window: keep them
    /// too, so that clients further behind are answered from memory (the
    /// first client back after a drain is not always the one furthest
    /// behind).
    fn extend_back(&mut self, read: &[(u64, Utf8Bytes)], since: Option<u64>, now: Instant) {
        let Some(since) = since else { return };
        if !self.is_active(now) || since >= self.start {
            return;
        }
        let older: Vec<&(u64, Utf8Bytes)> = read.iter().filter(|(o, _)| *o <= self.start).collect();
        let contiguous = older.len() as u64 == self.start - since
            && older.iter().enumerate().all(|(i, (o, _))| *o == since + 1 + i as u64);
        if !contiguous || older.len() + self.frames.len() > self.cap {
            return;
        }
        for (offset, frame) in older.into_iter().rev() {
            self.frames.push_front((*offset, frame.clone()));
        }
        self.start = since;
    }

    fn frames_after(&self, since: u64) -> Vec<Utf8Bytes> {
        self.frames
            .iter()
            .filter(|(o, _)| *o > since)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

pub struct Tail {
    /// The last offset delivered to live members, in its epoch. None until
    /// the first read or live event.
    known: Option<Position>,
    window: Window,
    held: Vec<Held>,
    /// Live events waiting for a repair read.
    repairing: Option<Vec<LiveEvent>>,
}

/// How a join begins.
pub enum Hold {
    /// The window covered it: `frames` are the missed events; the connection
    /// may become a live member at once.
    Served {
        position: Position,
        recovered: Option<bool>,
        frames: Vec<Utf8Bytes>,
    },
    /// Held: read the broker's history, then call [`Tail::resolve`].
    Held,
}

/// How a join ends.
pub enum Resolved {
    /// Queue the preamble, then `frames`; `live` says whether the connection
    /// is a live member now or will be promoted by a later live event.
    Joined {
        position: Position,
        recovered: Option<bool>,
        frames: Vec<Utf8Bytes>,
        live: bool,
    },
    /// The client's offset is ahead of the room's.
    Ahead(Position),
    /// The connection is no longer held (it closed meanwhile).
    Gone,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            known: None,
            window: Window {
                start: 0,
                frames: VecDeque::new(),
                active_until: None,
                cap: cap.max(1),
            },
            held: Vec::new(),
            repairing: None,
        }
    }

    #[cfg(test)]
    fn known(&self) -> Option<&Position> {
        self.known.as_ref()
    }

    /// A live event from the broker.
    pub fn live(&mut self, event: LiveEvent) -> Effects {
        let mut effects = Effects::default();
        self.accept(event, &mut effects);
        self.promote_ready(&mut effects);
        effects
    }

    fn accept(&mut self, event: LiveEvent, effects: &mut Effects) {
        let Some((offset, epoch)) = event.position.clone() else {
            // A plain publish into a durable room: at-most-once, no offset.
            return self.deliver(event, effects);
        };
        if let Some(pending) = &mut self.repairing {
            if pending.len() >= MAX_BUFFERED {
                self.repairing = None;
                self.lose_continuity(Position { offset, epoch }, effects);
            } else {
                pending.push(event);
            }
            return;
        }
        match &self.known {
            None => {
                self.known = Some(Position { offset, epoch });
                self.window.reset(offset);
                self.deliver(event, effects);
            }
            Some(known) if known.epoch != epoch => self.lose_continuity(Position { offset, epoch }, effects),
            Some(known) if offset <= known.offset => {}
            Some(known) if offset == known.offset + 1 => {
                self.known = Some(Position { offset, epoch });
                self.deliver(event, effects);
            }
            Some(known) => {
                effects.repair_from = Some(known.offset);
                self.repairing = Some(vec![event]);
            }
        }
    }

    fn deliver(&mut self, event: LiveEvent, effects: &mut Effects) {
        if let Some((offset, _)) = &event.position {
            self.window.push(*offset, &event.frame, event.received_at);
        }
        for held in &mut self.held {
            if event.skip == Some(held.conn.id) {
                continue;
            }
            if held.buffered.len() >= MAX_BUFFERED {
                effects.close_held.push(held.conn.clone());
            } else {
                held.buffered.push(event.clone());
            }
        }
        effects.deliver.push(event);
    }

    /// A live event whose payload cannot be read. The Redis Function refuses
    /// what it recognises as unreadable, but its JSON decoder accepts more
    /// than this node's (invalid UTF-8, `NaN`, duplicate fields), and no
    /// member may be shown a stream that silently skips the event.
    pub fn unreadable(&mut self, offset: u64, epoch: Arc<str>) -> Effects {
        let mut effects = Effects::default();
        match &self.known {
            Some(known) if known.epoch == epoch && offset <= known.offset => {}
            _ => self.lose_continuity(Position { offset, epoch }, &mut effects),
        }
        effects
    }

    /// The members can no longer be shown a contiguous stream: close them;
    /// the room continues from `at`.
    fn lose_continuity(&mut self, at: Position, effects: &mut Effects) {
        effects.close_members = true;
        effects.close_held.extend(self.held.drain(..).map(|h| h.conn));
        self.window.reset(at.offset);
        self.known = Some(at);
        // A repair in flight no longer applies: its result is ignored.
        self.repairing = None;
    }

    /// A connection joins, resuming from `since` if given.
    pub fn hold(&mut self, conn: &Arc<Connection>, since: Option<&Position>, now: Instant) -> Hold {
        if since.is_some()
            && let Some(known) = &self.known
        {
            self.window.activate(known.offset, now);
        }
        if self.repairing.is_none()
            && let Some(known) = &self.known
        {
            match since {
                None => {
                    return Hold::Served {
                        position: known.clone(),
                        recovered: None,
                        frames: Vec::new(),
                    };
                }
                Some(since)
                    if since.epoch == known.epoch
                        && since.offset <= known.offset
                        && since.offset >= self.window.start =>
                {
                    return Hold::Served {
                        position: known.clone(),
                        recovered: Some(true),
                        frames: self.window.frames_after(since.offset),
                    };
                }
                Some(_) => {}
            }
        }
        self.held.push(Held {
            conn: conn.clone(),
            buffered: Vec::new(),
            ready: None,
        });
        Hold::Held
    }

    /// A held connection's history read came back. `encode` turns a kept
    /// payload into its frame (None for a payload that cannot be read, which
    /// live members did not get either).
    pub fn resolve(
        &mut self,
        conn: ConnId,
        since: Option<&Position>,
        page: &HistoryPage,
        encode: impl Fn(u64, &Bytes) -> Option<Utf8Bytes>,
        now: Instant,
    ) -> (Resolved, Effects) {
        let mut effects = Effects::default();
        let Some(at) = self.held.iter().position(|h| h.conn.id == conn) else {
            return (Resolved::Gone, effects);
        };
        let read = &page.position;
        let mut recovered = match since {
            None => None,
            Some(since) if since.epoch == read.epoch && since.offset > read.offset => {
                self.held.swap_remove(at);
                return (Resolved::Ahead(read.clone()), effects);
            }
            Some(since) => Some(since.epoch == read.epoch && page.covers(since.offset)),
        };
        let recovered_events: Vec<(u64, Utf8Bytes)> = match (since, recovered) {
            (Some(since), Some(true)) => {
                let missed: Option<Vec<(u64, Utf8Bytes)>> = page
                    .events
                    .iter()
                    .filter(|(o, _)| *o > since.offset)
                    .map(|(o, payload)| encode(*o, payload).map(|f| (*o, f)))
                    .collect();
                // One missed event that cannot be read is a gap.
                missed.unwrap_or_else(|| {
                    recovered = Some(false);
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        match &self.known {
            None => {
                self.known = Some(read.clone());
                self.window.reset(read.offset);
                if let (Some(since), Some(true)) = (since, recovered)
                    && recovered_events.len() as u64 == read.offset - since.offset
                {
                    // Seed the window with what was just read, for the next
                    // clients resuming into this room.
                    self.window.activate(read.offset, now);
                    self.window.start = since.offset;
                    self.window.frames = recovered_events.iter().cloned().collect();
                }
            }
            Some(known) if known.epoch != read.epoch => {
                // The read is newer than anything the live stream brought:
                // the room's history was lost meanwhile.
                self.lose_continuity(read.clone(), &mut effects);
                return (Resolved::Gone, effects);
            }
            Some(known) if known.offset < read.offset => {
                // The read saw events still on their way to this node: wait
                // for them, or the connection would get them twice.
                self.window.extend_back(&recovered_events, since.map(|s| s.offset), now);
                self.held[at].ready = Some(Ready {
                    through: read.clone(),
                    frames: recovered_events.into_iter().map(|(_, f)| f).collect(),
                });
                return (
                    Resolved::Joined {
                        position: read.clone(),
                        recovered,
                        frames: Vec::new(),
                        live: false,
                    },
                    effects,
                );
            }
            Some(_) => self.window.extend_back(&recovered_events, since.map(|s| s.offset), now),
        }
        let held = self.held.swap_remove(at);
        let frames = merge(
            recovered_events.into_iter().map(|(_, f)| f).collect(),
            held.buffered,
            read,
        );
        (
            Resolved::Joined {
                position: read.clone(),
                recovered,
                frames,
                live: true,
            },
            effects,
        )
    }

    /// Promote every held connection whose read the live stream has caught up with.
    fn promote_ready(&mut self, effects: &mut Effects) {
        let Some(known) = &self.known else { return };
        let mut at = 0;
        while at < self.held.len() {
            let caught_up = self.held[at]
                .ready
                .as_ref()
                .is_some_and(|r| r.through.epoch == known.epoch && r.through.offset <= known.offset);
            if !caught_up {
                at += 1;
                continue;
            }
            let held = self.held.swap_remove(at);
            let Some(ready) = held.ready else { continue };
            effects.recovered += ready.frames.len() as u64;
            for frame in merge(ready.frames, held.buffered, &ready.through) {
                held.conn.push_recovered(frame);
            }
            effects.promoted.push(held.conn);
        }
    }

    /// Forget a connection that leaves while held.
    pub fn remove_held(&mut self, conn: ConnId) {
        self.held.retain(|h| h.conn.id != conn);
    }

    /// Check the node against the broker (after a reconnect): a repair read
    /// from the last delivered offset. None when one already runs or the
    /// room has no position yet.
    pub fn start_check(&mut self) -> Option<u64> {
        if self.repairing.is_some() {
            return None;
        }
        let known = self.known.as_ref()?;
        self.repairing = Some(Vec::new());
        Some(known.offset)
    }

    /// A repair read came back (`Err` if it failed): deliver what the node
    /// missed, then the events that waited, or close the members when the
    /// history cannot fill the gap.
    pub fn repaired(
        &mut self,
        from: u64,
        page: Result<&HistoryPage, ()>,
        encode: impl Fn(u64, &Bytes) -> Option<Utf8Bytes>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(pending) = self.repairing.take() else {
            return effects;
        };
        let newest_pending = pending.iter().rev().find_map(|e| e.position.clone());
        let Some(known) = self.known.clone() else {
            return effects;
        };
        let filled = match page {
            Ok(page) if page.position.epoch == known.epoch && known.offset == from && page.covers(from) => page,
            other => {
                let at = newest_seen(newest_pending, known, other.ok());
                self.lose_continuity(at, &mut effects);
                return effects;
            }
        };
        for (offset, payload) in &filled.events {
            let Some(frame) = encode(*offset, payload) else {
                // Unreadable: a gap the history cannot fill after all.
                let at = newest_seen(newest_pending, known, Some(filled));
                self.lose_continuity(at, &mut effects);
                return effects;
            };
            self.accept(
                LiveEvent {
                    position: Some((*offset, known.epoch.clone())),
                    frame,
                    skip: None,
                    received_at: now,
                },
                &mut effects,
            );
        }
        for event in pending {
            self.accept(event, &mut effects);
        }
        self.promote_ready(&mut effects);
        effects
    }
}

/// Where a room continues after a repair that could not fill its gap: the
/// newest position anyone has seen (a live event waiting for the repair,
/// the tail's own, or the read's; a read in another epoch is newer).
fn newest_seen(pending: Option<(u64, Arc<str>)>, known: Position, read: Option<&HistoryPage>) -> Position {
    let at = pending
        .map(|(offset, epoch)| Position { offset, epoch })
        .unwrap_or(known);
    match read {
        Some(page) if page.position.epoch != at.epoch || page.position.offset > at.offset => page.position.clone(),
        _ => at,
    }
}

/// Recovered frames, then the buffered live events the read did not
/// include: plain ones, and durable ones after the read's position.
fn merge(mut frames: Vec<Utf8Bytes>, buffered: Vec<LiveEvent>, read: &Position) -> Vec<Utf8Bytes> {
    frames.extend(
        buffered
            .into_iter()
            .filter(|e| match &e.position {
                None => true,
                Some((offset, epoch)) => *epoch != read.epoch || *offset > read.offset,
            })
            .map(|e| e.frame),
    );
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::connection::Batch;

    fn conn(id: ConnId) -> Arc<Connection> {
        Arc::new(Connection::new(
            id,
            Arc::from("u"),
            "127.0.0.1:1".parse().unwrap(),
            crate::hub::Transport::WebSocket,
            1 << 20,
            Arc::new(crate::hub::node_queue::NodeQueue::new(0)),
        ))
    }

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: Arc::from(epoch),
        }
    }

    fn frame(offset: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("e{offset}"))
    }

    fn live(offset: u64, epoch: &str) -> LiveEvent {
        LiveEvent {
            position: Some((offset, Arc::from(epoch))),
            frame: frame(offset),
            skip: None,
            received_at: Instant::now(),
        }
    }

    fn page(at: Position, events: std::ops::Range<u64>) -> HistoryPage {
        HistoryPage {
            position: at,
            events: events.map(|o| (o, Bytes::from(format!("e{o}")))).collect(),
        }
    }

    fn encode(offset: u64, _: &Bytes) -> Option<Utf8Bytes> {
        Some(frame(offset))
    }

    fn delivered(effects: &Effects) -> Vec<String> {
        effects.deliver.iter().map(|e| e.frame.to_string()).collect()
    }

    fn queued(conn: &Connection) -> Vec<String> {
        let mut batch = Batch::new();
        let _ = conn.drain(&mut batch);
        batch.iter().map(|q| q.frame.to_string()).collect()
    }

    fn frames(resolved: &Resolved) -> Vec<String> {
        match resolved {
            Resolved::Joined { frames, .. } => frames.iter().map(|f| f.to_string()).collect(),
            _ => panic!("not joined"),
        }
    }

    #[test]
    fn live_events_are_delivered_once_in_order_and_a_jump_starts_a_repair() {
        let mut tail = Tail::new(100);
        assert_eq!(delivered(&tail.live(live(5, "a"))), ["e5"]);
        assert_eq!(delivered(&tail.live(live(6, "a"))), ["e6"]);
        assert!(delivered(&tail.live(live(6, "a"))).is_empty(), "duplicate dropped");
        let effects = tail.live(live(9, "a"));
        assert!(effects.deliver.is_empty());
        assert_eq!(effects.repair_from, Some(6));
        assert!(tail.live(live(10, "a")).deliver.is_empty(), "waits for the repair");
        let effects = tail.repaired(6, Ok(&page(pos(9, "a"), 7..10)), encode, Instant::now());
        assert_eq!(delivered(&effects), ["e7", "e8", "e9", "e10"]);
        assert!(!effects.close_members);
        assert_eq!(tail.known(), Some(&pos(10, "a")));
    }

    #[test]
    fn a_gap_the_history_cannot_fill_or_a_new_epoch_closes_the_members() {
        let mut tail = Tail::new(100);
        let _ = tail.live(live(1, "a"));
        let effects = tail.live(live(5, "a"));
        assert_eq!(effects.repair_from, Some(1));
        let effects = tail.repaired(1, Ok(&page(pos(5, "a"), 4..6)), encode, Instant::now());
        assert!(effects.close_members && effects.deliver.is_empty());
        assert_eq!(tail.known(), Some(&pos(5, "a")));
        let effects = tail.live(live(1, "b"));
        assert!(effects.close_members, "a new epoch is a lost history");
        assert_eq!(tail.known(), Some(&pos(1, "b")));
    }

    /// Joined with `recovered:false`, and nothing of the gap sent.
    fn assert_not_recovered(resolved: &Resolved, why: &str) {
        assert!(
            matches!(
                resolved,
                Resolved::Joined {
                    recovered: Some(false),
                    ..
                }
            ),
            "{why}"
        );
        assert!(frames(resolved).is_empty(), "{why}");
    }

    /// `encode` that cannot read the payload at `bad`.
    fn encode_all_but(bad: u64) -> impl Fn(u64, &Bytes) -> Option<Utf8Bytes> {
        move |offset, payload| (offset != bad).then(|| encode(offset, payload)).flatten()
    }

    #[test]
    fn an_unreadable_event_is_a_gap_live_in_a_repair_and_in_a_resume() {
        // Live: the members are closed; the room goes on after it.
        let mut tail = Tail::new(100);
        let _ = tail.live(live(1, "a"));
        assert!(!tail.unreadable(1, Arc::from("a")).close_members, "already delivered");
        assert!(tail.unreadable(2, Arc::from("a")).close_members);
        assert_eq!(tail.known(), Some(&pos(2, "a")));
        assert_eq!(delivered(&tail.live(live(3, "a"))), ["e3"]);

        // In a repair: delivered up to it, then the members are closed.
        let _ = tail.live(live(6, "a"));
        let effects = tail.repaired(3, Ok(&page(pos(6, "a"), 4..7)), encode_all_but(5), Instant::now());
        assert_eq!(delivered(&effects), ["e4"]);
        assert!(effects.close_members);
        assert_eq!(tail.known(), Some(&pos(6, "a")));

        // In a resume: not recovered, and nothing of the gap is sent.
        let c = conn(1);
        let _ = tail.hold(&c, Some(&pos(3, "a")), Instant::now());
        let (resolved, _) = tail.resolve(
            1,
            Some(&pos(3, "a")),
            &page(pos(6, "a"), 4..7),
            encode_all_but(5),
            Instant::now(),
        );
        assert_not_recovered(&resolved, "an unreadable missed event");
    }

    #[test]
    fn a_held_join_gets_history_then_buffered_events_without_duplicates() {
        let mut tail = Tail::new(100);
        let _ = tail.live(live(3, "a"));
        let c = conn(1);
        assert!(matches!(tail.hold(&c, Some(&pos(1, "a")), Instant::now()), Hold::Held));
        // Live events arrive while the read is in flight; 4 is also in the read.
        let effects = tail.live(live(4, "a"));
        assert_eq!(delivered(&effects), ["e4"]);
        let _ = tail.live(live(5, "a"));
        let (resolved, _) = tail.resolve(1, Some(&pos(1, "a")), &page(pos(4, "a"), 2..5), encode, Instant::now());
        assert_eq!(frames(&resolved), ["e2", "e3", "e4", "e5"]);
        assert!(matches!(
            resolved,
            Resolved::Joined {
                recovered: Some(true),
                live: true,
                ..
            }
        ));
        assert!(tail.held.is_empty());
    }

    #[test]
    fn a_read_ahead_of_the_live_stream_waits_for_it() {
        let mut tail = Tail::new(100);
        let _ = tail.live(live(3, "a"));
        let c = conn(1);
        let _ = tail.hold(&c, Some(&pos(2, "a")), Instant::now());
        // The read already saw 4 and 5; the node has not received them yet.
        let (resolved, _) = tail.resolve(1, Some(&pos(2, "a")), &page(pos(5, "a"), 3..6), encode, Instant::now());
        assert!(matches!(resolved, Resolved::Joined { live: false, .. }));
        let effects = tail.live(live(4, "a"));
        assert!(effects.promoted.is_empty());
        let effects = tail.live(live(5, "a"));
        assert_eq!(effects.promoted.len(), 1);
        assert_eq!(queued(&c), ["e3", "e4", "e5"], "4 and 5 once, from the history");
        let effects = tail.live(live(6, "a"));
        assert_eq!(
            delivered(&effects),
            ["e6"],
            "then live (to the members, now including c)"
        );
    }

    #[test]
    fn unrecoverable_and_ahead_positions_are_reported() {
        let mut tail = Tail::new(100);
        let c = conn(1);
        let _ = tail.hold(&c, Some(&pos(1, "old")), Instant::now());
        let (resolved, _) = tail.resolve(
            1,
            Some(&pos(1, "old")),
            &page(pos(7, "a"), 5..8),
            encode,
            Instant::now(),
        );
        assert_not_recovered(&resolved, "a new epoch");

        let d = conn(2);
        let _ = tail.hold(&d, Some(&pos(1, "a")), Instant::now());
        let (resolved, _) = tail.resolve(2, Some(&pos(1, "a")), &page(pos(7, "a"), 5..8), encode, Instant::now());
        assert_not_recovered(&resolved, "trimmed");

        let e = conn(3);
        let _ = tail.hold(&e, Some(&pos(1, "a")), Instant::now());
        let _ = tail.live(live(8, "a"));
        let e2 = conn(4);
        let _ = tail.hold(&e2, Some(&pos(99, "a")), Instant::now());
        let (resolved, _) = tail.resolve(4, Some(&pos(99, "a")), &page(pos(8, "a"), 1..1), encode, Instant::now());
        assert!(matches!(resolved, Resolved::Ahead(p) if p.offset == 8));
    }

    #[test]
    fn the_window_serves_resumes_without_a_read() {
        let mut tail = Tail::new(100);
        let now = Instant::now();
        let c = conn(1);
        let _ = tail.hold(&c, Some(&pos(2, "a")), now);
        let (resolved, _) = tail.resolve(1, Some(&pos(2, "a")), &page(pos(5, "a"), 3..6), encode, now);
        assert_eq!(frames(&resolved), ["e3", "e4", "e5"]);
        let _ = tail.live(live(6, "a"));
        match tail.hold(&conn(2), Some(&pos(4, "a")), now) {
            Hold::Served {
                frames,
                recovered,
                position,
            } => {
                let frames: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
                assert_eq!(frames, ["e5", "e6"]);
                assert_eq!(recovered, Some(true));
                assert_eq!(position, pos(6, "a"));
            }
            Hold::Held => panic!("the window covers offset 4"),
        }
        assert!(
            matches!(tail.hold(&conn(3), Some(&pos(1, "a")), now), Hold::Held),
            "older than the window"
        );
        assert!(
            matches!(tail.hold(&conn(4), None, now), Hold::Served { .. }),
            "a plain join needs no read"
        );
    }
}
