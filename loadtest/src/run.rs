//! One run, phase by phase: check the config, raise the open-files limit,
//! sample the servers, open the sockets (here or in workers), hold them
//! (idle) or publish and let deliveries settle — or soak ([`crate::soak`])
//! or storm ([`crate::storm`]) — sample again, stop the sockets with the
//! publish log (and the durable rooms' last offsets, which resuming
//! sockets first catch up with), and build the [`Report`].
//!
//! Every phase waits against the run's deadline (`timeout`), so a run ends
//! however the targets behave.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{PublishVia, RESERVED_FILES, RunConfig, ScenarioKind};
use crate::fleets::{Fleets, ProgressSource};
use crate::procstat::Snapshot;
use crate::progress::{self, Status};
use crate::publish::{self, PublishOutcome};
use crate::report::{Connects, DurableReport, Report, ServerCost};
use crate::rss::RssSeries;
use crate::scrape;
use crate::stats::offsets::RoomEnds;
use crate::storm::StormPhase;
use crate::{soak, storm, target};

/// Deliveries have settled when none arrived for this long.
const QUIET: Duration = Duration::from_secs(1);
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Run the scenario `config` describes and report what happened.
pub async fn run(config: RunConfig) -> Result<Report, String> {
    config.validate()?;
    check_publish_target(&config)?;
    let files = crate::nofile::raise_to_hard();
    let per_process = config.sockets.div_ceil(config.procs as u64);
    if per_process + RESERVED_FILES > files {
        return Err(format!(
            "{per_process} sockets per process exceed the open-files limit ({files}); use --procs {} or more",
            config.sockets.div_ceil(files.saturating_sub(RESERVED_FILES).max(1))
        ));
    }
    let started = Instant::now();
    let deadline = started + config.timeout;
    let mut warnings = Vec::new();
    let before = Snapshot::take(&config.server_pids)?;
    let aux_before = aux_cpu(&config);

    let status = Status::new(config.sockets, config.planned_events());
    let fleets = Fleets::start(&config).await?;
    let source = fleets.progress_source();
    let printer = config
        .progress
        .map(|every| progress::spawn(every, source.clone(), status.clone()));

    // Ramp: every socket's first attempt.
    let ramp_started = Instant::now();
    loop {
        if source.read().ramped >= config.sockets {
            break;
        }
        if let Some(failure) = fleets.failure() {
            return Err(format!("a worker failed: {failure}"));
        }
        if Instant::now() >= deadline {
            warnings.push("the timeout came before every socket had tried to connect".into());
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let ramp = ramp_started.elapsed();
    let connected = sample(&config, &mut warnings);
    let aux_connected = aux_cpu(&config);
    let mut aux_publish: Option<u64> = None;
    let open_after_ramp = source.read().open;

    let mut hold_cpu = None;
    let mut publish_phase = None;
    let mut rss: Option<RssSeries> = None;
    let mut storm_phase: Option<StormPhase> = None;
    // What the nodes counted of the resumes: soak, all of them; storm, B.
    let scrape_urls: Vec<String> = match config.scenario {
        ScenarioKind::Soak => config.urls.clone(),
        ScenarioKind::Storm => config.urls.iter().skip(1).take(1).cloned().collect(),
        _ => Vec::new(),
    };
    let client = reqwest::Client::new();
    let mut recoveries_before = None;
    if !scrape_urls.is_empty() {
        match scrape::all_recoveries(&client, &scrape_urls).await {
            Ok(r) => recoveries_before = Some(r),
            Err(e) => warnings.push(format!("metrics: {e}")),
        }
    }
    match config.scenario {
        ScenarioKind::Idle => {
            status.set_phase("holding");
            let hold_started = Instant::now();
            tokio::time::sleep_until((hold_started + config.duration).min(deadline)).await;
            if let (Some(a), Some(b)) = (&connected, sample(&config, &mut warnings)) {
                let held = hold_started.elapsed().as_secs_f64();
                let cpu = b.cpu_us.saturating_sub(a.cpu_us);
                hold_cpu = Some((cpu, 100.0 * cpu as f64 / 1e6 / held.max(1e-3)));
            }
        }
        ScenarioKind::Soak | ScenarioKind::Storm => {
            let phase = if config.scenario == ScenarioKind::Soak {
                soak::run(&config, &status, &source, deadline, &mut warnings)
                    .await
                    .map(|p| {
                        rss = p.rss;
                        p.publish
                    })
            } else {
                storm::run(&config, &status, &source, deadline, &mut warnings)
                    .await
                    .map(|mut p| {
                        let publish = std::mem::replace(&mut p.publish, PublishPhase::empty());
                        storm_phase = Some(p);
                        publish
                    })
            };
            match phase {
                Ok(phase) => publish_phase = Some(phase),
                Err(e) => {
                    let _ = fleets.finish(&[], &RoomEnds::new(), Duration::ZERO).await;
                    return Err(e);
                }
            }
            status.set_phase("catching up");
        }
        _ => {
            status.set_phase("publishing");
            let at_start = sample(&config, &mut warnings);
            let aux_start = aux_cpu(&config);
            let delivered_before = source.read().delivered;
            let publish_started = Instant::now();
            // Churn's events are spread over exactly `duration`: a second
            // more lets the last one out however the timer wakes.
            let cap = match config.scenario {
                ScenarioKind::Churn => config.duration + Duration::from_secs(1),
                _ => config.duration,
            };
            let until = (publish_started + cap).min(deadline);
            let outcome = match publish::run(&config, &status.published, until).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Stop the sockets before giving up.
                    let _ = fleets.finish(&[], &RoomEnds::new(), Duration::ZERO).await;
                    return Err(e);
                }
            };
            status.set_phase("settling");
            let estimate = expected_estimate(&config, &outcome, &source);
            let last_delivery = settle(&source, estimate, config.settle, deadline).await;
            let at_end = sample(&config, &mut warnings);
            if let (Some(a), Some(b)) = (aux_start, aux_cpu(&config)) {
                aux_publish = Some(b.saturating_sub(a));
            }
            let delivered = source.read().delivered - delivered_before;
            publish_phase = Some(PublishPhase {
                outcome,
                delivered,
                span: last_delivery.saturating_duration_since(publish_started),
                cpu_us: match (at_start, &at_end) {
                    (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
                    _ => None,
                },
            });
        }
    }

    if !config.scenario.resumes() {
        status.set_phase("closing");
    }
    let log = publish_phase
        .as_ref()
        .map(|p| p.outcome.log.as_slice())
        .unwrap_or_default();
    let no_ends = RoomEnds::new();
    let ends = publish_phase.as_ref().map_or(&no_ends, |p| &p.outcome.ends);
    // Resuming sockets catch up with the rooms' last offsets before they
    // are counted: for at most `settle`.
    let catch_up = if config.scenario.resumes() {
        config.settle.min(deadline.saturating_duration_since(Instant::now()))
    } else {
        Duration::ZERO
    };
    let outcome = fleets.finish(log, ends, catch_up).await?;
    let end = sample(&config, &mut warnings);
    drop(printer);

    let server = before.each.first().map(|_| {
        let connected = connected.clone().unwrap_or_default();
        let end = end.clone().unwrap_or_default();
        let per_conn = |total: f64| (open_after_ramp > 0).then(|| total / open_after_ramp as f64);
        let cpu_connect = connected.cpu_us.saturating_sub(before.cpu_us);
        ServerCost {
            pids: config.server_pids.clone(),
            rss_before_bytes: before.rss_bytes,
            rss_connected_bytes: connected.rss_bytes,
            rss_end_bytes: end.rss_bytes,
            rss_per_connection_bytes: per_conn(connected.rss_bytes as f64 - before.rss_bytes as f64),
            cpu_connect_us: cpu_connect,
            cpu_per_connect_us: (outcome.connected > 0).then(|| cpu_connect as f64 / outcome.connected as f64),
            cpu_hold_us: hold_cpu.map(|(cpu, _)| cpu),
            cpu_hold_core_pct: hold_cpu.map(|(_, pct)| pct),
            cpu_publish_us: publish_phase.as_ref().and_then(|p| p.cpu_us),
            cpu_per_delivery_us: publish_phase.as_ref().and_then(|p| {
                p.cpu_us
                    .filter(|_| p.delivered > 0)
                    .map(|cpu| cpu as f64 / p.delivered as f64)
            }),
            cpu_per_event_us: publish_phase.as_ref().and_then(|p| {
                p.cpu_us
                    .filter(|_| p.outcome.sent > 0)
                    .map(|cpu| cpu as f64 / p.outcome.sent as f64)
            }),
            aux_pids: config.aux_pids.clone(),
            aux_cpu_connect_us: aux_before.zip(aux_connected).map(|(a, b)| b.saturating_sub(a)),
            aux_cpu_publish_us: aux_publish,
            aux_cpu_per_delivery_us: publish_phase.as_ref().and_then(|p| {
                aux_publish
                    .filter(|_| p.delivered > 0)
                    .map(|cpu| cpu as f64 / p.delivered as f64)
            }),
            aux_cpu_per_event_us: publish_phase.as_ref().and_then(|p| {
                aux_publish
                    .filter(|_| p.outcome.sent > 0)
                    .map(|cpu| cpu as f64 / p.outcome.sent as f64)
            }),
        }
    });

    if let Some(p) = &publish_phase
        && p.outcome.sent < p.outcome.planned
        && p.outcome.first_error.is_none()
    {
        warnings.push(format!(
            "publishing stopped at the --duration cap (or the timeout): {} of {} events sent",
            p.outcome.sent, p.outcome.planned
        ));
    }
    if let Some(p) = &publish_phase
        && p.outcome.receivers == Some(0)
        && p.outcome.sent > 0
    {
        warnings
            .push("Redis delivered every event to no subscriber: is the target on the same Redis and prefix?".into());
    }
    let durable_publish = config.publish.as_ref().is_some_and(PublishVia::is_durable);
    if let Some(p) = &publish_phase
        && durable_publish
    {
        if p.outcome.offset_breaks.unwrap_or(0) > 0 {
            warnings.push(format!(
                "{} FCALL replies were not their room's previous offset plus 1: another publisher, or a room reset",
                p.outcome.offset_breaks.unwrap_or(0)
            ));
        }
        if p.outcome.acknowledged > 0 && outcome.offsets.received == 0 {
            warnings.push(
                "no event frame carried an offset: are org and user in the nodes' WSGATE_HISTORY_NAMESPACES?".into(),
            );
        }
    }
    if config.scenario.resumes() && outcome.finished < outcome.offsets.sockets {
        warnings.push(format!(
            "{} of {} sockets had not caught up with their rooms' last offsets within --settle",
            outcome.offsets.sockets - outcome.finished,
            outcome.offsets.sockets
        ));
    }
    let server_recoveries = match recoveries_before {
        Some(before) => match scrape::all_recoveries(&client, &scrape_urls).await {
            Ok(after) => Some(after.since(&before)),
            Err(e) => {
                warnings.push(format!("metrics: {e}"));
                None
            }
        },
        None => None,
    };
    let durable = (config.scenario.resumes() || durable_publish).then(|| DurableReport {
        offsets: outcome.offsets.clone(),
        catch_up: outcome.catch_up.percentiles(),
        server_recoveries,
        rss,
        storm: storm_phase.map(|phase| storm_report(phase, &outcome.recovered_at_ns, outcome.unrecovered_sockets)),
    });
    let publish_clean = publish_phase.as_ref().is_none_or(|p| {
        p.outcome.errors == 0 && p.outcome.first_error.is_none() && p.outcome.sent == p.outcome.planned
    });
    let sessions_clean = outcome.failed == 0
        && (config.scenario.reconnects() || outcome.delivery.dropped_sessions == 0)
        && outcome.connected > 0;
    let clean = sessions_clean
        && publish_clean
        && outcome.delivery.is_clean()
        && durable.as_ref().is_none_or(DurableReport::is_clean);
    let deliveries_per_s = publish_phase
        .as_ref()
        .map_or(0.0, |p| p.delivered as f64 / p.span.as_secs_f64().max(1e-3));
    Ok(Report {
        scenario: config.scenario,
        protocol: config.protocol,
        targets: config.urls.clone(),
        procs: config.procs,
        sockets: config.sockets,
        duration_s: started.elapsed().as_secs_f64(),
        connects: Connects {
            attempted: outcome.attempted,
            connected: outcome.connected,
            failed: outcome.failed,
            failures: outcome.failures.clone(),
            peak_open: outcome.peak_open,
            ramp_s: ramp.as_secs_f64(),
            per_s: open_after_ramp as f64 / ramp.as_secs_f64().max(1e-3),
            latency: outcome.connect_latency.percentiles(),
        },
        loss_ratio: outcome.delivery.loss_ratio(),
        delivery: outcome.delivery,
        latency: outcome.latency.percentiles(),
        deliveries_per_s,
        closes: outcome.closes,
        publish: publish_phase.map(|p| p.outcome),
        server,
        durable,
        clean,
        warnings,
    })
}

pub struct PublishPhase {
    pub outcome: PublishOutcome,
    /// First deliveries counted while publishing and settling.
    pub delivered: u64,
    /// From the first event to the last delivery.
    pub span: Duration,
    pub cpu_us: Option<u64>,
}

impl PublishPhase {
    fn empty() -> PublishPhase {
        PublishPhase {
            outcome: PublishOutcome::default(),
            delivered: 0,
            span: Duration::ZERO,
            cpu_us: None,
        }
    }
}

/// The storm's numbers, with each socket's recovery time from the SIGTERM.
fn storm_report(phase: StormPhase, recovered_at_ns: &[u64], unrecovered: u64) -> crate::report::StormReport {
    let mut report = phase.report;
    let mut latency = crate::stats::latency::Latency::default();
    for &at in recovered_at_ns {
        latency.record(at.saturating_sub(phase.sigterm_ns) / 1_000);
    }
    report.recovery = latency.percentiles();
    report.recovered_sockets = recovered_at_ns.len() as u64;
    report.unrecovered_sockets = unrecovered;
    report.all_recovered_s = (report.is_clean())
        .then(|| recovered_at_ns.iter().max())
        .flatten()
        .map(|&last| last.saturating_sub(phase.sigterm_ns) as f64 / 1e9);
    report
}

/// The Redis or HTTP target must be local too.
fn check_publish_target(config: &RunConfig) -> Result<(), String> {
    let url = match &config.publish {
        Some(PublishVia::Redis { url, .. } | PublishVia::Fcall { url, .. }) => url,
        Some(PublishVia::Http { base_url, .. }) => base_url,
        None => return Ok(()),
    };
    let host = target::host_of(url).ok_or_else(|| format!("{url}: no host"))?;
    target::check_local(host, config.allow_remote).map_err(|e| format!("{url}: {e}"))
}

/// A server snapshot; a server that can no longer be read is a warning.
pub(crate) fn sample(config: &RunConfig, warnings: &mut Vec<String>) -> Option<Snapshot> {
    if config.server_pids.is_empty() {
        return None;
    }
    match Snapshot::take(&config.server_pids) {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            warnings.push(e);
            None
        }
    }
}

/// The `--aux-pid` processes' CPU, summed (None without any, or unreadable).
fn aux_cpu(config: &RunConfig) -> Option<u64> {
    if config.aux_pids.is_empty() {
        return None;
    }
    Snapshot::take(&config.aux_pids).ok().map(|s| s.cpu_us)
}

/// How many first deliveries to expect, when it can be known from here: lets
/// the settle end as soon as everything has arrived.
fn expected_estimate(config: &RunConfig, outcome: &PublishOutcome, source: &ProgressSource) -> Option<u64> {
    let sent = outcome.log.len() as u64;
    let open = source.read().open;
    match config.scenario {
        ScenarioKind::Fanout => Some(sent * open),
        ScenarioKind::Targeted if open == config.sockets => Some(sent),
        _ => None,
    }
}

/// Wait until deliveries reach `estimate`, or stop arriving for [`QUIET`],
/// or `cap` passes; returns when the last delivery was seen.
async fn settle(source: &ProgressSource, estimate: Option<u64>, cap: Duration, deadline: Instant) -> Instant {
    let started = Instant::now();
    let mut last = source.read().delivered;
    let mut last_growth = started;
    loop {
        let now = Instant::now();
        if estimate.is_some_and(|e| last >= e) || now - last_growth >= QUIET || now - started >= cap || now >= deadline
        {
            return last_growth;
        }
        tokio::time::sleep(POLL).await;
        let delivered = source.read().delivered;
        if delivered > last {
            last = delivered;
            last_growth = Instant::now();
        }
    }
}
