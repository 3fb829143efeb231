//! One open socket, from the welcome to its end: read frames, account each
//! event in the session's [`Tally`] (and, in durable rooms, its offset in
//! the socket's [`SocketLedger`]), answer Engine.IO pings, and end on the
//! fleet's stop signal, at a planned time (churn, soak), when the other
//! side ends it, or — for a resuming socket once publishing is over — when
//! it has caught up with every room's last offset. Every way out files the
//! session's record before the close handshake, so a record survives even a
//! close that hangs.
//!
//! A planned end does not close at once: events published just before it
//! may still be on their way, and closing would count them lost. Events of
//! one publisher to one room arrive in publish order, so the session reads
//! on until an event published [`DRAIN_MARGIN_NS`] after its end arrives
//! (everything before it has then arrived or is lost), or [`DRAIN_MAX`]
//! passes without one (no events are flowing). A resuming socket needs no
//! such care: it leaves at once, cleanly or by dropping the connection, and
//! gets what it missed when it comes back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::dial::Ws;
use super::fleet::FleetShared;
use crate::clock;
use crate::stats::offsets::{Arrival, SocketLedger};
use crate::stats::tally::{Tally, Verdict};
use crate::wire::{self, Inbound};

/// How long our close may take to be answered before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Past a planned end, the session waits for an event published this much
/// later; the margin covers publishers whose events may overtake each other
/// a little (concurrent HTTP requests).
const DRAIN_MARGIN_NS: u64 = 50_000_000;
/// Past a planned end, the session closes after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// A timer that never fires within a run.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The fleet was told to stop.
    Stopped,
    /// Its planned time came (churn, soak).
    Planned,
    /// The other side or the network ended it; the close code, if any.
    Dropped { code: Option<u16> },
    /// Publishing is over and it had every room's last offset (soak, storm).
    Finished,
}

/// How a session leaves at its planned end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// Read on until the events published before the end have arrived,
    /// then close (churn: the publish log judges what it missed).
    Drain,
    /// Close at once (soak: what it misses is resumed).
    Close,
    /// Drop the TCP connection with a reset, no close frame.
    Abort,
}

/// What a session is asked to do besides reading.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Picks the latency histogram.
    pub shard: usize,
    pub planned_end: Option<Instant>,
    pub leave: Leave,
    /// Latency is recorded for events published from here on (Unix ns):
    /// the events a resume brings back are late by design.
    pub live_from_ns: u64,
}

/// A resume being timed: caught up when every room reaches the welcome's
/// position.
#[derive(Clone, Debug)]
pub struct CatchUp {
    pub targets: BTreeMap<String, u64>,
    /// When the reconnect began.
    pub started: Instant,
    /// The first resume after the node's 1012 (storm).
    pub after_drain: bool,
    pub done: bool,
}

impl CatchUp {
    /// Mark the catch-up once the ledger has reached the targets.
    fn check(&mut self, ledger: &SocketLedger, shared: &FleetShared) {
        if self.done || !ledger.reached(|room| self.targets.get(room).copied()) {
            return;
        }
        self.done = true;
        shared.caught_up(self.started.elapsed(), self.after_drain);
    }
}

/// What a resuming socket keeps across a session: its ledger, the catch-up
/// it times, and (through the fleet) the end of publishing.
pub struct Resuming<'a> {
    pub ledger: &'a mut SocketLedger,
    pub catch_up: Option<CatchUp>,
    /// Whether the fleet's wind-down applies (soak, storm).
    pub winds_down: bool,
}

/// Drive `ws` until it ends. `durable` when the socket keeps an offset
/// ledger.
pub async fn drive(
    mut ws: Ws,
    mut tally: Tally,
    plan: Plan,
    stop: &CancellationToken,
    shared: &FleetShared,
    mut durable: Option<&mut Resuming<'_>>,
) -> Ending {
    // Made once and polled by reference: a fresh `cancelled()` per frame
    // would join and leave the token's waiter list (one lock shared by
    // every socket) on each delivery.
    let stopped = stop.cancelled();
    let timer = tokio::time::sleep_until(plan.planned_end.unwrap_or_else(|| Instant::now() + NEVER));
    let winds_down = durable.as_ref().is_some_and(|d| d.winds_down);
    let wind_down = winds_down.then(|| shared.wind_down.clone());
    let wound = async move {
        match wind_down {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped, timer, wound);
    let mut draining = false;
    let mut winding = false;
    let mut finished = false;
    let drained_at = tally.until_ns().saturating_add(DRAIN_MARGIN_NS);
    // A resume that missed nothing has caught up before any frame.
    if let Some(d) = durable.as_deref_mut()
        && let Some(catch_up) = &mut d.catch_up
    {
        catch_up.check(d.ledger, shared);
    }
    let drop_reason = loop {
        let message = tokio::select! {
            biased;
            _ = &mut stopped => break None,
            _ = &mut wound, if !winding => {
                winding = true;
                if durable.as_deref().is_some_and(|d| shared.has_every_end(d.ledger)) {
                    finished = true;
                    break None;
                }
                continue;
            }
            _ = &mut timer => {
                if winding {
                    // Publishing is over: no more planned ends.
                    timer.as_mut().reset(Instant::now() + NEVER);
                    continue;
                }
                if draining || plan.leave != Leave::Drain {
                    break None;
                }
                draining = true;
                timer.as_mut().reset(Instant::now() + DRAIN_MAX);
                continue;
            }
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                break Some((code.map_or_else(|| "close".to_string(), |c| format!("close_{c}")), code));
            }
            // Pings are answered by tungstenite itself on the next read.
            Some(Ok(_)) => continue,
            Some(Err(_)) => break Some(("error".to_string(), None)),
            None => break Some(("eof".to_string(), None)),
        };
        match wire::parse(shared.protocol, text.as_str()) {
            Inbound::Event {
                frame_room,
                marker,
                stamp,
            } => {
                if let (Some(stamp), Some(room), Some(d)) = (&stamp, frame_room.as_deref(), durable.as_deref_mut()) {
                    shared.counters.durable.fetch_add(1, Relaxed);
                    if d.ledger.on_event(room, stamp.offset, &stamp.epoch) != Arrival::New {
                        shared.counters.offset_errors.fetch_add(1, Relaxed);
                    }
                    if let Some(catch_up) = &mut d.catch_up {
                        catch_up.check(d.ledger, shared);
                    }
                    // Ends after this event is accounted below.
                    finished = winding && shared.has_every_end(d.ledger);
                }
                let Some(marker) = marker else {
                    tally.foreign();
                    if finished {
                        break None;
                    }
                    continue;
                };
                let received = clock::now_ns();
                let counter = match tally.event(frame_room.as_deref(), &marker.room, marker.seq, marker.ts) {
                    Verdict::First => {
                        if marker.ts >= plan.live_from_ns {
                            shared
                                .latency
                                .record(plan.shard, received.saturating_sub(marker.ts) / 1_000);
                        }
                        &shared.counters.delivered
                    }
                    Verdict::Duplicate => &shared.counters.duplicates,
                    Verdict::Misrouted => &shared.counters.misrouted,
                };
                counter.fetch_add(1, Relaxed);
                if finished || (draining && marker.ts >= drained_at) {
                    break None;
                }
            }
            Inbound::EnginePing => {
                if ws.send(Message::text("3")).await.is_err() {
                    break Some(("error".to_string(), None));
                }
            }
            Inbound::Disconnect => break Some(("socketio_disconnect".to_string(), None)),
            Inbound::Other => {}
        }
    };
    let dropped = drop_reason.is_some();
    let code = drop_reason.as_ref().and_then(|(_, code)| *code);
    shared.file(
        tally.finish(clock::now_ns(), dropped),
        drop_reason.map(|(reason, _)| reason),
    );
    if dropped {
        return Ending::Dropped { code };
    }
    let ending = if finished {
        Ending::Finished
    } else if stop.is_cancelled() {
        Ending::Stopped
    } else {
        Ending::Planned
    };
    if ending == Ending::Planned && plan.leave == Leave::Abort {
        abort(ws);
    } else {
        close(ws).await;
    }
    ending
}

/// Drop the connection without a close frame: a reset, as a crashed client
/// or a lost network would leave it.
fn abort(ws: Ws) {
    // Without the reset the kernel still ends the stream with a FIN; the
    // server sees no close frame either way.
    let _ = ws.get_ref().set_zero_linger();
    drop(ws);
}

/// Send a normal close and wait (bounded) for the answer, discarding what
/// still arrives.
async fn close(mut ws: Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
