//! One process's share of the sockets: socket `first + j` for `j` in
//! `0..count`, each a task that connects (paced, with a bounded number of
//! handshakes in flight) and then holds its session — once (idle, fanout,
//! targeted), over and over with random lifetimes (churn), or resuming
//! from its positions each time (soak, storm: [`super::resume`]) — until
//! the fleet is stopped or the run's deadline passes.
//!
//! The stop comes with the publish log and, when events were published
//! durably, each room's last offset. Resuming sockets first get to catch
//! up with those (the wind-down), for at most the given time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::counters::{Counters, Progress};
use super::dial::{Dialer, Hello, Ws};
use super::lifetime;
use super::resume;
use super::session::{self, Ending, Leave, Plan, Resuming};
use crate::clock;
use crate::config::{Protocol, PublishVia, RunConfig, ScenarioKind};
use crate::stats::delivery::{DeliveryTotals, LogIndex, Published};
use crate::stats::latency::{Latency, SharedLatency};
use crate::stats::offsets::{OffsetTotals, RoomEnds, SocketLedger};
use crate::stats::outcome::FleetOutcome;
use crate::stats::tally::{SessionRecord, Tally};
use crate::target::Target;
use crate::token::Minter;
use crate::wire::{self, Position};

/// How long stopped sockets get to finish their close handshakes.
const FINISH_WAIT: Duration = Duration::from_secs(15);
/// Back-off after a failed reconnect (churn), doubling to the maximum.
pub(super) const RETRY_MIN: Duration = Duration::from_millis(100);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the socket tasks of a fleet share. The std Mutexes are held for a
/// push or an increment, never across an await.
pub struct FleetShared {
    pub protocol: Protocol,
    pub org_room: Arc<str>,
    pub counters: Counters,
    pub latency: SharedLatency,
    connect_latency: Mutex<Latency>,
    records: Mutex<Vec<SessionRecord>>,
    failures: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    /// Offset ledgers: one per socket (soak, storm) or per session.
    ledgers: Mutex<Vec<(u32, SocketLedger)>>,
    catch_up: Mutex<Latency>,
    recovered_at_ns: Mutex<Vec<u64>>,
    /// Each room's last offset, known once publishing is over.
    pub ends: OnceLock<RoomEnds>,
    /// Publishing is over: resuming sockets catch up with `ends` and end.
    pub wind_down: CancellationToken,
}

impl FleetShared {
    /// File a finished session; `drop_reason` when the other side ended it.
    pub fn file(&self, record: SessionRecord, drop_reason: Option<String>) {
        self.counters.closed(drop_reason.is_some());
        if let Some(reason) = drop_reason {
            *lock(&self.closes).entry(reason).or_default() += 1;
        }
        lock(&self.records).push(record);
    }

    fn failed(&self, label: String) {
        self.counters.failed.fetch_add(1, Relaxed);
        *lock(&self.failures).entry(label).or_default() += 1;
    }

    /// File a socket's (or a session's) offset ledger.
    pub fn file_ledger(&self, user: u32, ledger: SocketLedger) {
        lock(&self.ledgers).push((user, ledger));
    }

    /// A resume caught up, `took` after its reconnect began.
    pub fn caught_up(&self, took: Duration, after_drain: bool) {
        lock(&self.catch_up).record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if after_drain {
            lock(&self.recovered_at_ns).push(clock::now_ns());
            self.counters.recovered_sockets.fetch_add(1, Relaxed);
        }
    }

    /// Publishing is over and `ledger` has every room's last offset.
    pub fn has_every_end(&self, ledger: &SocketLedger) -> bool {
        self.ends
            .get()
            .is_some_and(|ends| ledger.reached(|room| ends.get(room).copied()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a socket task reads.
pub(super) struct Context {
    pub(super) config: RunConfig,
    pub(super) shared: Arc<FleetShared>,
    pub(super) dialer: Dialer,
    minter: Minter,
    gate: Semaphore,
    pub(super) stop: CancellationToken,
    ramp_start: Instant,
}

pub struct Fleet {
    shared: Arc<FleetShared>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    deadline: JoinHandle<()>,
}

impl Fleet {
    /// Resolve the targets and start sockets `first..first + count`. The
    /// fleet stops by itself after `config.timeout`.
    pub async fn start(config: &RunConfig, first: u64, count: u64) -> Result<Fleet, String> {
        let mut targets = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            targets.push(Target::resolve(url, config.protocol, config.allow_remote).await?);
        }
        let minter = Minter::hs256(
            &config.secret,
            &config.org,
            &config.roles,
            config.token_ttl.as_secs().max(1),
        )?;
        let shared = Arc::new(FleetShared {
            protocol: config.protocol,
            org_room: Arc::from(config.org_room()),
            counters: Counters::default(),
            latency: SharedLatency::default(),
            connect_latency: Mutex::new(Latency::default()),
            records: Mutex::new(Vec::with_capacity(usize::try_from(count).unwrap_or(0))),
            failures: Mutex::new(BTreeMap::new()),
            closes: Mutex::new(BTreeMap::new()),
            ledgers: Mutex::new(Vec::new()),
            catch_up: Mutex::new(Latency::default()),
            recovered_at_ns: Mutex::new(Vec::new()),
            ends: OnceLock::new(),
            wind_down: CancellationToken::new(),
        });
        let stop = CancellationToken::new();
        let context = Arc::new(Context {
            dialer: Dialer {
                protocol: config.protocol,
                targets: targets.into(),
                sources: Arc::<[IpAddr]>::from(config.source_ips.as_slice()),
                timeout: config.connect_timeout,
            },
            config: config.clone(),
            shared: shared.clone(),
            minter,
            gate: Semaphore::new(config.connect_concurrency),
            stop: stop.clone(),
            ramp_start: Instant::now(),
        });
        let mut tasks = JoinSet::new();
        for j in 0..count {
            let context = context.clone();
            tasks.spawn(async move { socket(context, j, first + j).await });
        }
        let deadline = {
            let stop = stop.clone();
            let timeout = config.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                stop.cancel();
            })
        };
        Ok(Fleet {
            shared,
            stop,
            tasks,
            deadline,
        })
    }

    pub fn shared(&self) -> Arc<FleetShared> {
        self.shared.clone()
    }

    pub fn progress(&self) -> Progress {
        self.shared.counters.read()
    }

    /// Stop every socket, wait (bounded) for them, and account the sessions
    /// against the publish log and the offsets against the rooms' `ends`.
    /// Resuming sockets first get up to `catch_up` to reach the ends.
    pub async fn finish(mut self, log: &[Published], ends: &RoomEnds, catch_up: Duration) -> FleetOutcome {
        let _ = self.shared.ends.set(ends.clone());
        if !catch_up.is_zero() {
            self.shared.wind_down.cancel();
            let until = Instant::now() + catch_up;
            while let Ok(Some(_)) = tokio::time::timeout_at(until, self.tasks.join_next()).await {}
        }
        self.stop.cancel();
        let until = Instant::now() + FINISH_WAIT;
        while let Ok(Some(_)) = tokio::time::timeout_at(until, self.tasks.join_next()).await {}
        self.tasks.abort_all();
        self.deadline.abort();
        let records = std::mem::take(&mut *lock(&self.shared.records));
        let delivery = DeliveryTotals::account(&records, &LogIndex::new(log));
        let mut offsets = OffsetTotals::default();
        for (user, ledger) in std::mem::take(&mut *lock(&self.shared.ledgers)) {
            offsets.add(user, &ledger, ends);
        }
        let progress = self.shared.counters.read();
        FleetOutcome {
            attempted: progress.attempted,
            connected: progress.connected,
            failed: progress.failed,
            failures: std::mem::take(&mut *lock(&self.shared.failures)),
            closes: std::mem::take(&mut *lock(&self.shared.closes)),
            peak_open: progress.peak_open,
            delivery,
            latency: self.shared.latency.snapshot(),
            connect_latency: lock(&self.shared.connect_latency).clone(),
            offsets,
            catch_up: lock(&self.shared.catch_up).clone(),
            recovered_at_ns: std::mem::take(&mut *lock(&self.shared.recovered_at_ns)),
            unrecovered_sockets: progress.unrecovered_sockets,
            finished: progress.finished,
        }
    }
}

/// A fleet dropped without `finish` (the run failed) stops its sockets and
/// its deadline timer; the JoinSet aborts the socket tasks.
impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        self.deadline.abort();
    }
}

/// Wait for socket `j`'s turn to connect; false if stopped meanwhile.
pub(super) async fn pace(context: &Context, j: u64) -> bool {
    let rate = context.config.connect_rate;
    if rate > 0.0 {
        let at = context.ramp_start + Duration::from_secs_f64(j as f64 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = context.stop.cancelled() => return false,
        }
    }
    true
}

/// One socket slot: connect, hold, and for churn reconnect, until stopped.
async fn socket(context: Arc<Context>, j: u64, index: u64) {
    if context.config.scenario.resumes() {
        return resume::socket(context, j, index).await;
    }
    let config = &context.config;
    if !pace(&context, j).await {
        return;
    }
    let churn = config.scenario == ScenarioKind::Churn;
    // Durable events: each session keeps a ledger of its offsets.
    let ledgers = config.publish.as_ref().is_some_and(PublishVia::is_durable);
    let mut first_attempt = true;
    let mut retry = RETRY_MIN;
    while !context.stop.is_cancelled() {
        let opened = open(&context, index, None, None).await;
        if first_attempt {
            context.shared.counters.ramped.fetch_add(1, Relaxed);
        }
        let Some((ws, welcome, welcomed_at)) = opened else {
            if !churn {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = context.stop.cancelled() => return,
            }
            retry = (retry * 2).min(RETRY_MAX);
            first_attempt = false;
            continue;
        };
        retry = RETRY_MIN;
        let (planned_end, until_ns) = if churn {
            let mean = config.mean_lifetime();
            let life = if first_attempt {
                lifetime::first(mean, fastrand::f64(), fastrand::f64())
            } else {
                lifetime::next(mean, fastrand::f64())
            };
            let life_ns = u64::try_from(life.as_nanos()).unwrap_or(u64::MAX);
            (Some(Instant::now() + life), welcomed_at.saturating_add(life_ns))
        } else {
            (None, u64::MAX)
        };
        first_attempt = false;
        let tally = Tally::new(
            user_of(index),
            config.user_room(index),
            context.shared.org_room.clone(),
            welcomed_at,
            until_ns.max(welcomed_at),
        );
        let plan = Plan {
            shard: j as usize,
            planned_end,
            leave: Leave::Drain,
            live_from_ns: 0,
        };
        let mut ledger = SocketLedger::default();
        let mut durable = ledgers.then(|| {
            ledger.on_welcome(&wire::welcome(&welcome).unwrap_or_default());
            Resuming {
                ledger: &mut ledger,
                catch_up: None,
                winds_down: false,
            }
        });
        let ending = session::drive(ws, tally, plan, &context.stop, &context.shared, durable.as_mut()).await;
        if ledgers {
            // A session that stayed to the end expects every room's last offset.
            ledger.to_the_end = ending == Ending::Stopped;
            context.shared.file_ledger(user_of(index), ledger);
        }
        match ending {
            Ending::Stopped | Ending::Finished => return,
            Ending::Planned => {}
            Ending::Dropped { .. } if !churn => return,
            Ending::Dropped { .. } => {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_MIN) => {}
                    _ = context.stop.cancelled() => return,
                }
            }
        }
    }
}

/// One connect attempt: the welcomed socket, its welcome and the time of
/// it. `target` picks the node (None: socket `index`'s own, round-robin);
/// `since` sends the token in an auth frame that resumes from there.
pub(super) async fn open(
    context: &Context,
    index: u64,
    target: Option<usize>,
    since: Option<&BTreeMap<String, Position>>,
) -> Option<(Ws, String, u64)> {
    let shared = &context.shared;
    let token = match context.minter.mint(&context.config.user_id(index)) {
        Ok(token) => token,
        Err(_) => {
            shared.failed("token".into());
            return None;
        }
    };
    let permit = tokio::select! {
        permit = context.gate.acquire() => permit.ok()?,
        _ = context.stop.cancelled() => return None,
    };
    shared.counters.attempted.fetch_add(1, Relaxed);
    let started = Instant::now();
    let frame = since.map(|since| wire::auth_frame(&token, since));
    let dial = async {
        match (target, &frame) {
            (Some(target), Some(frame)) => context.dialer.dial_to(target, index, &token, Hello::Frame(frame)).await,
            (Some(target), None) => context.dialer.dial_to(target, index, &token, Hello::Header).await,
            (None, _) => context.dialer.dial(index, &token).await,
        }
    };
    let dialed = tokio::select! {
        dialed = dial => dialed,
        _ = context.stop.cancelled() => return None,
    };
    drop(permit);
    match dialed {
        Ok((ws, welcome)) => {
            let welcomed_at = clock::now_ns();
            shared.counters.opened();
            lock(&shared.connect_latency).record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            Some((ws, welcome, welcomed_at))
        }
        Err(e) => {
            shared.failed(e.label());
            None
        }
    }
}

/// Users are numbered by socket; the validated config keeps them in u32.
pub(super) fn user_of(index: u64) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}
