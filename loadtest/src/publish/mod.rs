//! The publisher: events at a steady rate to the scenario's rooms, through
//! Redis (`PUBLISH gw:<room>`) or the HTTP API, each carrying its sequence
//! number, publish time and room in its data, and the log of what was
//! published for the receivers' accounting.
//!
//! - [`resp`]: pipelined `PUBLISH` on one Redis connection.
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

use crate::clock;
use crate::config::{PublishVia, RunConfig, ScenarioKind};
use crate::stats::delivery::Published;
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
    /// Redis only: subscriber connections reached, summed over events (for
    /// wsgate: the nodes subscribed to the room).
    pub receivers: Option<u64>,
    /// From the first event to the last one sent.
    pub elapsed_s: f64,
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

enum Sink {
    Redis(resp::RespPublisher),
    Http(http::HttpPublisher),
}

/// Publish the scenario's events until all are sent or `until` comes.
/// `progress` follows the number sent.
pub async fn run(config: &RunConfig, progress: &AtomicU64, until: Instant) -> Result<PublishOutcome, String> {
    let planned = config.planned_events();
    let mut sink = match &config.publish {
        Some(PublishVia::Redis { url, .. }) => Sink::Redis(resp::RespPublisher::connect(url).await?),
        Some(PublishVia::Http { base_url, api_key }) => {
            Sink::Http(http::HttpPublisher::new(base_url, api_key, config.http_concurrency)?)
        }
        None => return Err("nowhere to publish: no Redis URL and no HTTP API".into()),
    };
    let prefix = match &config.publish {
        Some(PublishVia::Redis { channel_prefix, .. }) => channel_prefix.as_str(),
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
        let due = (((now - start).as_secs_f64() * config.rate) as u64 + 1).min(planned);
        if due <= seq {
            let next = start + Duration::from_secs_f64(seq as f64 / config.rate);
            tokio::time::sleep_until(next.min(until)).await;
            continue;
        }
        let n = (due - seq).min(MAX_BATCH);
        let mut redis_batch = Vec::new();
        let mut http_batch = Vec::new();
        for s in seq..seq + n {
            let user = match config.scenario {
                ScenarioKind::Targeted => Some(rng.u32(..u32::try_from(config.sockets).unwrap_or(u32::MAX))),
                _ => None,
            };
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
            outcome.receivers = Some(replies.receivers.load(Relaxed));
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
}
