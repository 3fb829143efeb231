//! The publisher: events at a steady rate to the scenario's rooms, through
//! Redis (`PUBLISH gw:<room>`, or durably `FCALL wsgate_publish`) or the
//! HTTP API, each carrying its sequence number, publish time and room in
//! its data, and the log of what was published for the receivers'
//! accounting; a durable publish also gives each room's last offset.
//!
//! - [`resp`]: pipelined `PUBLISH` or `FCALL` on one Redis connection.
//! - [`http`]: `POST /api/v1/publish`, a bounded number in flight.
//!
//! Pacing: the number of events due by now is `elapsed × rate`; whatever is
//! due is sent in one batch (one write for Redis), so high rates cost one
//! wake-up per timer tick instead of one per event.

pub mod http;
pub mod resp;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{PublishVia, RunConfig, ScenarioKind};
use crate::stats::delivery::Published;
use crate::stats::offsets::RoomEnds;
use crate::wire;

/// Events sent in one write at most.
const MAX_BATCH: u64 = 1024;
/// How long to wait for the replies of the last events.
const REPLY_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// What was published, in order; not part of the report.
    #[serde(skip)]
    pub log: Vec<Published>,
    pub planned: u64,
    pub sent: u64,
    /// Acknowledged by Redis (an integer reply) or by the API (202).
    pub acknowledged: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Redis `PUBLISH` only: subscriber connections reached, summed over
    /// events (for wsgate: the nodes subscribed to the room).
    pub receivers: Option<u64>,
    /// From the first event to the last one sent.
    pub elapsed_s: f64,
    /// `FCALL` only: each room's last offset; not part of the report.
    #[serde(skip)]
    pub ends: RoomEnds,
    /// `FCALL` only: the durable rooms published to, and the replies whose
    /// offset was not the room's previous one plus 1 (another publisher, or
    /// a room whose history was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_rooms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_breaks: Option<u64>,
}

/// Events the publisher was told were not published, and the first reason.
#[derive(Debug, Default)]
pub struct Failures {
    pub first: Option<String>,
    pub seqs: Vec<u64>,
}

impl Failures {
    fn add(&mut self, seq: u64, why: &str) {
        self.first.get_or_insert_with(|| why.to_string());
        self.seqs.push(seq);
    }
}

/// std Mutex: held for a push, never across an await.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drop the events that were refused from the log: the receivers must not
/// expect them. `log[i]` is event `i`.
fn without_refused(log: Vec<Published>, refused: &[u64]) -> Vec<Published> {
    if refused.is_empty() {
        return log;
    }
    let refused: std::collections::HashSet<u64> = refused.iter().copied().collect();
    log.into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(&(*i as u64)))
        .map(|(_, p)| p)
        .collect()
}

/// Each room's last offset, from the `FCALL` replies (`offsets[i]` is event
/// `i`'s, 0 when refused), and how often a room's offset did not follow its
/// previous one.
fn room_ends(config: &RunConfig, log: &[Published], offsets: &[u64]) -> (RoomEnds, u64) {
    let org_room = config.org_room();
    let mut ends = RoomEnds::new();
    let mut breaks = 0;
    for (published, &offset) in log.iter().zip(offsets) {
        if offset == 0 {
            continue;
        }
        let room = match published.1 {
            Some(user) => config.user_room(u64::from(user)),
            None => org_room.clone(),
        };
        let last = ends.entry(room).or_insert(offset - 1);
        if offset != *last + 1 {
            breaks += 1;
        }
        *last = offset;
    }
    (ends, breaks)
}

/// The room of event `seq`: `None` for the org room, `Some(i)` for user `i`'s.
fn pick_room(config: &RunConfig, rng: &mut fastrand::Rng) -> Option<u32> {
    let users = u32::try_from(config.sockets).unwrap_or(u32::MAX);
    match config.scenario {
        ScenarioKind::Targeted => Some(rng.u32(..users)),
        ScenarioKind::Soak | ScenarioKind::Storm if rng.f64() < config.user_share => Some(rng.u32(..users)),
        _ => None,
    }
}

enum Sink {
    Redis(resp::RespPublisher),
    Http(http::HttpPublisher),
}

/// Publish the scenario's events until all are sent or `until` comes.
/// `progress` follows the number sent.
pub async fn run(config: &RunConfig, progress: &AtomicU64, until: Instant) -> Result<PublishOutcome, String> {
    run_until(config, progress, until, &CancellationToken::new()).await
}

/// The same, also ending when `stop` is cancelled: then what was sent is
/// what was planned (the storm publishes for as long as it takes).
pub async fn run_until(
    config: &RunConfig,
    progress: &AtomicU64,
    until: Instant,
    stop: &CancellationToken,
) -> Result<PublishOutcome, String> {
    let mut planned = config.planned_events();
    let mut sink = match &config.publish {
        Some(PublishVia::Redis { url, .. }) => {
            Sink::Redis(resp::RespPublisher::connect(url, resp::Command::Publish).await?)
        }
        Some(PublishVia::Fcall { url, .. }) => {
            Sink::Redis(resp::RespPublisher::connect(url, resp::Command::Fcall).await?)
        }
        Some(PublishVia::Http { base_url, api_key }) => {
            Sink::Http(http::HttpPublisher::new(base_url, api_key, config.http_concurrency)?)
        }
        None => return Err("nowhere to publish: no Redis URL and no HTTP API".into()),
    };
    let durable = config.publish.as_ref().is_some_and(PublishVia::is_durable);
    let prefix = match &config.publish {
        Some(PublishVia::Redis { channel_prefix, .. } | PublishVia::Fcall { channel_prefix, .. }) => {
            channel_prefix.as_str()
        }
        _ => "",
    };
    let org_room = config.org_room();
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut log = Vec::with_capacity(usize::try_from(planned).unwrap_or(0));
    let mut first_error = None;
    let start = Instant::now();
    let mut seq = 0;
    while seq < planned {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if stop.is_cancelled() {
            planned = seq;
            break;
        }
        let due = (((now - start).as_secs_f64() * config.rate) as u64 + 1).min(planned);
        if due <= seq {
            let next = start + Duration::from_secs_f64(seq as f64 / config.rate);
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(until)) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        let n = (due - seq).min(MAX_BATCH);
        let mut redis_batch = Vec::new();
        let mut http_batch = Vec::new();
        for s in seq..seq + n {
            let user = pick_room(config, &mut rng);
            let room = match user {
                Some(user) => config.user_room(u64::from(user)),
                None => org_room.clone(),
            };
            let ts = clock::now_ns();
            let data = wire::event_data(s, ts, &room, config.payload_bytes);
            log.push(Published(ts, user));
            match sink {
                Sink::Redis(_) => redis_batch.push((
                    format!("{prefix}{room}"),
                    format!(r#"{{"event":"{}","data":{data}}}"#, config.event_name),
                )),
                Sink::Http(_) => http_batch.push((
                    s,
                    format!(
                        r#"{{"rooms":["{room}"],"event":"{}","data":{data}}}"#,
                        config.event_name
                    ),
                )),
            }
        }
        let sent = match &mut sink {
            Sink::Redis(redis) => redis.publish(&redis_batch).await,
            Sink::Http(http) => http.publish(http_batch).await,
        };
        if let Err(e) = sent {
            // What was not written was not published.
            log.truncate(usize::try_from(seq).unwrap_or(usize::MAX));
            first_error = Some(e);
            break;
        }
        seq += n;
        progress.store(seq, Relaxed);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let mut outcome = PublishOutcome {
        planned,
        sent: seq,
        elapsed_s,
        first_error,
        ..PublishOutcome::default()
    };
    let failures = match sink {
        Sink::Redis(redis) => {
            let replies = redis.finish(REPLY_WAIT).await;
            outcome.acknowledged = replies.ok.load(Relaxed);
            outcome.errors = replies.errors.load(Relaxed);
            if durable {
                let (ends, breaks) = room_ends(config, &log, &lock(&replies.offsets));
                outcome.durable_rooms = Some(ends.len() as u64);
                outcome.offset_breaks = Some(breaks);
                outcome.ends = ends;
            } else {
                outcome.receivers = Some(replies.receivers.load(Relaxed));
            }
            std::mem::take(&mut *lock(&replies.failures))
        }
        Sink::Http(http) => {
            let replies = http.finish(REPLY_WAIT).await;
            outcome.acknowledged = replies.accepted.load(Relaxed);
            outcome.errors = replies.errors.load(Relaxed);
            std::mem::take(&mut *lock(&replies.failures))
        }
    };
    if outcome.first_error.is_none() {
        outcome.first_error = failures.first;
    }
    outcome.log = without_refused(log, &failures.seqs);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_events_leave_the_log() {
        let log: Vec<Published> = (0..5).map(|i| Published(100 + i, None)).collect();
        let kept = without_refused(log.clone(), &[1, 3]);
        assert_eq!(
            kept,
            vec![Published(100, None), Published(102, None), Published(104, None)]
        );
        assert_eq!(without_refused(log.clone(), &[]), log);
    }

    #[test]
    fn room_ends_follow_the_last_offset_of_each_room() {
        let config = RunConfig::default();
        let log = vec![
            Published(1, None),
            Published(2, Some(3)),
            Published(3, None),
            Published(4, Some(3)),
            Published(5, None),
            Published(6, Some(4)),
        ];
        // The org room was at 10 before the run; user 3's fourth event was refused.
        let (ends, breaks) = room_ends(&config, &log, &[11, 1, 12, 0, 13, 1]);
        assert_eq!(
            ends,
            RoomEnds::from([
                ("org:lt".to_string(), 13),
                ("user:lt3".to_string(), 1),
                ("user:lt4".to_string(), 1)
            ])
        );
        assert_eq!(breaks, 0);
        let (_, breaks) = room_ends(&config, &log[..3], &[11, 1, 15]);
        assert_eq!(breaks, 1, "14 was published by someone else, or the room was reset");
    }

    #[test]
    fn soak_and_storm_spread_events_over_the_org_and_the_users_rooms() {
        let mut config = RunConfig {
            scenario: ScenarioKind::Soak,
            sockets: 10,
            user_share: 0.25,
            ..RunConfig::default()
        };
        let mut rng = fastrand::Rng::with_seed(3);
        let picks: Vec<_> = (0..4000).map(|_| pick_room(&config, &mut rng)).collect();
        let users = picks.iter().filter(|p| p.is_some()).count();
        assert!((800..1200).contains(&users), "{users} of 4000 to users");
        assert!(picks.iter().flatten().all(|&u| u < 10));
        config.scenario = ScenarioKind::Fanout;
        assert_eq!(pick_room(&config, &mut rng), None);
    }
}
