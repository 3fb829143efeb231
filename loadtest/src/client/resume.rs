//! A resuming socket (soak, storm): one [`SocketLedger`] across all its
//! sessions, and every reconnect gives back the ledger's positions in the
//! auth frame's `since` (PROTOCOL.md §10).
//!
//! - **Soak**: each session lives a random time (mean `sockets /
//!   churn_rate`), then leaves — a clean close, or a dropped connection for
//!   `abrupt_share` of them — stays away up to `away`, and comes back on the
//!   next node (round-robin over the targets).
//! - **Storm**: every socket starts on the first node and stays; when that
//!   node closes it with 1012 (draining), it resumes on the second node at
//!   once (or after up to `away`, so that it has events to recover). The
//!   first resume after the 1012 that recovers every room is timed until
//!   the socket has caught up with the welcome's positions.
//!
//! Any other drop (1011 after lost continuity, a reset) is resumed too,
//! after a short pause (in a storm, on node B whatever node A's reason). Once publishing is over (the fleet's wind-down) a
//! socket stops leaving, comes back if it is away, and ends as soon as it
//! has every room's last offset.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::fleet::{self, Context, RETRY_MAX, RETRY_MIN};
use super::lifetime;
use super::session::{self, CatchUp, Ending, Leave, Plan, Resuming};
use crate::config::ScenarioKind;
use crate::stats::offsets::SocketLedger;
use crate::stats::tally::Tally;
use crate::wire;

/// The storm's close code for a draining node.
const DRAINING: u16 = 1012;

/// Socket slot `j` (user `index`), until stopped or finished.
pub(super) async fn socket(context: Arc<Context>, j: u64, index: u64) {
    let shared = context.shared.clone();
    let mut ledger = SocketLedger {
        to_the_end: true,
        ..SocketLedger::default()
    };
    if fleet::pace(&context, j).await {
        run(&context, j, index, &mut ledger).await;
    }
    shared.file_ledger(fleet::user_of(index), ledger);
}

async fn run(context: &Context, j: u64, index: u64, ledger: &mut SocketLedger) {
    let config = &context.config;
    let shared = &context.shared;
    let storm = config.scenario == ScenarioKind::Storm;
    let nodes = context.dialer.targets.len().max(1);
    let mut target = if storm { 0 } else { (index % nodes as u64) as usize };
    let mut first_attempt = true;
    let mut sessions = 0u64;
    let mut retry = RETRY_MIN;
    // The socket's node closed it with 1012: its next recovery is timed.
    let mut after_drain = false;
    while !context.stop.is_cancelled() {
        if sessions > 0 && shared.wind_down.is_cancelled() && shared.has_every_end(ledger) {
            shared.counters.finished.fetch_add(1, Relaxed);
            return;
        }
        let started = Instant::now();
        let since = ledger.since();
        let opened = fleet::open(context, index, Some(target), Some(&since)).await;
        if first_attempt {
            shared.counters.ramped.fetch_add(1, Relaxed);
            first_attempt = false;
        }
        let Some((ws, welcome, welcomed_at)) = opened else {
            if !pause(context, retry, false).await {
                return;
            }
            retry = (retry * 2).min(RETRY_MAX);
            continue;
        };
        retry = RETRY_MIN;
        let welcome = wire::welcome(&welcome).unwrap_or_default();
        let resumed = ledger.on_welcome(&welcome);
        if resumed.asked > 0 {
            shared.counters.resumes.fetch_add(1, Relaxed);
            shared
                .counters
                .not_recovered
                .fetch_add(u64::from(resumed.not_recovered), Relaxed);
        }
        if after_drain && !resumed.all_recovered() {
            shared.counters.unrecovered_sockets.fetch_add(1, Relaxed);
            after_drain = false;
        }
        let catch_up = (resumed.asked > 0 && resumed.all_recovered()).then(|| CatchUp {
            targets: welcome
                .positions
                .iter()
                .map(|(room, p)| (room.clone(), p.offset))
                .collect(),
            started,
            after_drain,
            done: false,
        });
        let churns = config.scenario == ScenarioKind::Soak && !shared.wind_down.is_cancelled();
        let (planned_end, leave) = if churns {
            let mean = config.mean_lifetime();
            let life = if sessions == 0 {
                lifetime::first(mean, fastrand::f64(), fastrand::f64())
            } else {
                lifetime::next(mean, fastrand::f64())
            };
            let leave = if fastrand::f64() < config.abrupt_share {
                Leave::Abort
            } else {
                Leave::Close
            };
            (Some(Instant::now() + life), leave)
        } else {
            (None, Leave::Close)
        };
        sessions += 1;
        // The offsets judge these sessions, not the publish log: an empty
        // window expects nothing of them.
        let tally = Tally::new(
            fleet::user_of(index),
            config.user_room(index),
            shared.org_room.clone(),
            welcomed_at,
            welcomed_at,
        );
        let plan = Plan {
            shard: j as usize,
            planned_end,
            leave,
            live_from_ns: welcomed_at,
        };
        let mut resuming = Resuming {
            ledger: &mut *ledger,
            catch_up,
            winds_down: true,
        };
        let ending = session::drive(ws, tally, plan, &context.stop, shared, Some(&mut resuming)).await;
        if resuming.catch_up.as_ref().is_some_and(|c| c.done && c.after_drain) {
            after_drain = false;
        }
        match ending {
            Ending::Stopped => return,
            Ending::Finished => {
                shared.counters.finished.fetch_add(1, Relaxed);
                return;
            }
            Ending::Planned => {
                let away = config.away.mul_f64(fastrand::f64());
                if !pause(context, away, true).await {
                    return;
                }
                target = (target + 1) % nodes;
            }
            Ending::Dropped { code } => {
                if storm && target == 0 {
                    // The storm: to the other node, at once or after up to
                    // `away`. Only a 1012 is a drain to time: a node A that
                    // ends sockets otherwise leaves them unrecovered.
                    target = 1 % nodes;
                    after_drain = code == Some(DRAINING);
                    if !config.away.is_zero() && !pause(context, config.away.mul_f64(fastrand::f64()), false).await {
                        return;
                    }
                    continue;
                }
                if !storm && code == Some(DRAINING) {
                    target = (target + 1) % nodes;
                }
                if !pause(context, RETRY_MIN, false).await {
                    return;
                }
            }
        }
    }
}

/// Stay away for `how_long` — less if `wake` and publishing ends
/// meanwhile; false if the fleet was stopped.
async fn pause(context: &Context, how_long: Duration, wake: bool) -> bool {
    let wind_down = async {
        if wake {
            context.shared.wind_down.cancelled().await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(how_long) => true,
        _ = wind_down => !context.stop.is_cancelled(),
        _ = context.stop.cancelled() => false,
    }
}
