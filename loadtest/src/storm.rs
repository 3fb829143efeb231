//! The storm's middle phase: durable events at a steady rate; after
//! `--warmup` seconds node A is sent SIGTERM (`--drain-pid`), closes every
//! socket with 1012 within its drain time, and every socket resumes on node
//! B ([`crate::client::resume`]). The phase waits (at most `--duration`
//! seconds) until every socket that was open at the SIGTERM has recovered
//! and caught up, measures node B meanwhile — its CPU (`--server-pid`) and
//! its `wsgate_events_recovered_total` (`/metrics`) — then publishes
//! `--cooldown` seconds more and stops the publisher.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::RunConfig;
use crate::fleets::ProgressSource;
use crate::progress::Status;
use crate::publish::{self, PublishOutcome};
use crate::report::{NodeCost, StormReport};
use crate::run::{POLL, PublishPhase, sample};
use crate::scrape;

pub struct StormPhase {
    pub publish: PublishPhase,
    /// Without the per-socket times, which come with the fleet's outcome.
    pub report: StormReport,
    pub sigterm_ns: u64,
}

/// Send SIGTERM to `pid`: a real process other than this one.
pub fn sigterm(pid: u32) -> Result<(), String> {
    let target = i32::try_from(pid).ok().filter(|&p| p > 1);
    let Some(target) = target.filter(|&p| p as u32 != std::process::id()) else {
        return Err(format!("will not send SIGTERM to pid {pid}"));
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // `target` is a single positive pid (never 0 or -1, which would signal
    // process groups).
    let rc = unsafe { libc::kill(target, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("SIGTERM to pid {pid}: {}", std::io::Error::last_os_error()))
    }
}

pub async fn run(
    config: &RunConfig,
    status: &std::sync::Arc<Status>,
    source: &ProgressSource,
    deadline: Instant,
    warnings: &mut Vec<String>,
) -> Result<StormPhase, String> {
    let drained_pid = config.drain_pid.ok_or("the storm needs --drain-pid")?;
    let (node_a, node_b) = match config.urls.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => return Err("the storm needs two --url".into()),
    };
    if config.server_pids.contains(&drained_pid) {
        warnings.push(format!(
            "--server-pid {drained_pid} is the drained node: node B's CPU includes it until it exits"
        ));
    }
    status.set_phase("publishing");
    let at_start = sample(config, warnings);
    let delivered_before = source.read().delivered;
    let started = Instant::now();
    let stop = CancellationToken::new();
    let publisher = {
        let config = config.clone();
        let status = status.clone();
        let stop = stop.clone();
        let until =
            (started + config.warmup + config.duration + config.cooldown + Duration::from_secs(1)).min(deadline);
        tokio::spawn(async move { publish::run_until(&config, &status.published, until, &stop).await })
    };

    tokio::time::sleep_until((started + config.warmup).min(deadline)).await;
    if publisher.is_finished() {
        // It can only have given up.
        let outcome = publisher.await.map_err(|e| format!("publisher: {e}"))??;
        return Err(format!(
            "the publisher stopped before the SIGTERM: {}",
            outcome.first_error.unwrap_or_else(|| "no error".into())
        ));
    }
    let client = reqwest::Client::new();
    let b_before = match scrape::recoveries(&client, &node_b).await {
        Ok(r) => Some(r),
        Err(e) => {
            warnings.push(format!("node B's metrics: {e}"));
            None
        }
    };
    let cpu_before = sample(config, warnings);
    let sockets_at_sigterm = source.read().open;
    if let Err(e) = sigterm(drained_pid) {
        stop.cancel();
        let _ = publisher.await;
        return Err(e);
    }
    let sigterm_ns = clock::now_ns();
    let sigterm_at = Instant::now();
    status.set_phase("storm");
    let cap = (sigterm_at + config.duration).min(deadline);
    loop {
        let p = source.read();
        if p.recovered_sockets + p.unrecovered_sockets >= sockets_at_sigterm {
            break;
        }
        if Instant::now() >= cap {
            warnings.push(format!(
                "{} s after the SIGTERM, {} of {} sockets had recovered ({} not recovered)",
                config.duration.as_secs_f64(),
                p.recovered_sockets,
                sockets_at_sigterm,
                p.unrecovered_sockets
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let cpu_after = sample(config, warnings);
    let b_after = match scrape::recoveries(&client, &node_b).await {
        Ok(r) => Some(r),
        Err(e) => {
            warnings.push(format!("node B's metrics: {e}"));
            None
        }
    };
    status.set_phase("cooling down");
    tokio::time::sleep_until((Instant::now() + config.cooldown).min(deadline)).await;
    stop.cancel();
    let outcome: PublishOutcome = publisher.await.map_err(|e| format!("publisher: {e}"))??;
    let at_end = sample(config, warnings);

    let progress = source.read();
    let cpu_us = match (&cpu_before, &cpu_after) {
        (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
        _ => None,
    };
    let b_delta = match (&b_before, &b_after) {
        (Some(a), Some(b)) => Some(b.since(a)),
        _ => None,
    };
    let node_b_cost = (!config.server_pids.is_empty() || b_delta.is_some()).then(|| NodeCost {
        pids: config.server_pids.clone(),
        cpu_us,
        events_recovered: b_delta.map(|d| d.events_recovered),
        recoveries: b_delta.map(|d| d.recovered + d.not_recovered),
        cpu_per_recovered_event_us: match (cpu_us, b_delta) {
            (Some(cpu), Some(d)) if d.events_recovered > 0.0 => Some(cpu as f64 / d.events_recovered),
            _ => None,
        },
        cpu_per_resume_us: cpu_us
            .filter(|_| progress.recovered_sockets > 0)
            .map(|cpu| cpu as f64 / progress.recovered_sockets as f64),
    });
    Ok(StormPhase {
        publish: PublishPhase {
            delivered: progress.delivered - delivered_before,
            span: started.elapsed(),
            cpu_us: match (at_start, at_end) {
                (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
                _ => None,
            },
            outcome,
        },
        report: StormReport {
            drained_pid,
            drained_url: node_a,
            resumed_url: node_b,
            sockets_at_sigterm,
            recovered_sockets: progress.recovered_sockets,
            unrecovered_sockets: progress.unrecovered_sockets,
            node_b: node_b_cost,
            ..StormReport::default()
        },
        sigterm_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_refuses_pids_that_would_signal_more_than_one_process() {
        for pid in [0, 1, u32::MAX, std::process::id()] {
            assert!(sigterm(pid).is_err(), "pid {pid}");
        }
    }
}
