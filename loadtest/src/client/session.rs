//! One open socket, from the welcome to its end: read frames, account each
//! event in the session's [`Tally`], answer Engine.IO pings, and end on the
//! fleet's stop signal, at a planned time (churn), or when the other side
//! ends it. Every way out files the session's record before the close
//! handshake, so a record survives even a close that hangs.
//!
//! A planned end does not close at once: events published just before it
//! may still be on their way, and closing would count them lost. Events of
//! one publisher to one room arrive in publish order, so the session reads
//! on until an event published [`DRAIN_MARGIN_NS`] after its end arrives
//! (everything before it has then arrived or is lost), or [`DRAIN_MAX`]
//! passes without one (no events are flowing).

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
    /// Its planned time came (churn).
    Planned,
    /// The other side or the network ended it.
    Dropped,
}

/// Drive `ws` until it ends; `shard` picks the latency histogram.
pub async fn drive(
    mut ws: Ws,
    mut tally: Tally,
    shard: usize,
    planned_end: Option<Instant>,
    stop: &CancellationToken,
    shared: &FleetShared,
) -> Ending {
    // Made once and polled by reference: a fresh `cancelled()` per frame
    // would join and leave the token's waiter list (one lock shared by
    // every socket) on each delivery.
    let stopped = stop.cancelled();
    let timer = tokio::time::sleep_until(planned_end.unwrap_or_else(|| Instant::now() + NEVER));
    tokio::pin!(stopped, timer);
    let mut draining = false;
    let drained_at = tally.until_ns().saturating_add(DRAIN_MARGIN_NS);
    let drop_reason = loop {
        let message = tokio::select! {
            biased;
            _ = &mut stopped => break None,
            _ = &mut timer => {
                if draining {
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
                break Some(frame.map_or_else(|| "close".to_string(), |f| format!("close_{}", u16::from(f.code))));
            }
            // Pings are answered by tungstenite itself on the next read.
            Some(Ok(_)) => continue,
            Some(Err(_)) => break Some("error".to_string()),
            None => break Some("eof".to_string()),
        };
        match wire::parse(shared.protocol, text.as_str()) {
            Inbound::Event {
                frame_room,
                marker: Some(marker),
                ..
            } => {
                let received = clock::now_ns();
                let counter = match tally.event(frame_room.as_deref(), &marker.room, marker.seq, marker.ts) {
                    Verdict::First => {
                        shared.latency.record(shard, received.saturating_sub(marker.ts) / 1_000);
                        &shared.counters.delivered
                    }
                    Verdict::Duplicate => &shared.counters.duplicates,
                    Verdict::Misrouted => &shared.counters.misrouted,
                };
                counter.fetch_add(1, Relaxed);
                if draining && marker.ts >= drained_at {
                    break None;
                }
            }
            Inbound::Event { marker: None, .. } => tally.foreign(),
            Inbound::EnginePing => {
                if ws.send(Message::text("3")).await.is_err() {
                    break Some("error".to_string());
                }
            }
            Inbound::Disconnect => break Some("socketio_disconnect".to_string()),
            Inbound::Other => {}
        }
    };
    let dropped = drop_reason.is_some();
    shared.file(tally.finish(clock::now_ns(), dropped), drop_reason);
    if dropped {
        return Ending::Dropped;
    }
    let ending = if stop.is_cancelled() {
        Ending::Stopped
    } else {
        Ending::Planned
    };
    close(ws).await;
    ending
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
