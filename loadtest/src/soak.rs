//! The soak's middle phase: durable events at a steady rate for the whole
//! `--duration` while the sockets churn and resume by themselves
//! ([`crate::client::resume`]), with the servers' RSS sampled every
//! `--rss-every` seconds. The run then lets every socket catch up with the
//! rooms' last offsets before it counts ([`crate::fleets::Fleets::finish`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RunConfig;
use crate::fleets::ProgressSource;
use crate::progress::Status;
use crate::publish;
use crate::rss::{RssSeries, Sampler};
use crate::run::{PublishPhase, sample};

pub struct SoakPhase {
    pub publish: PublishPhase,
    pub rss: Option<RssSeries>,
}

pub async fn run(
    config: &RunConfig,
    status: &Status,
    source: &ProgressSource,
    deadline: Instant,
    warnings: &mut Vec<String>,
) -> Result<SoakPhase, String> {
    status.set_phase("soaking");
    let at_start = sample(config, warnings);
    let delivered_before = source.read().delivered;
    let started = Instant::now();
    let sampler = (!config.server_pids.is_empty()).then(|| Sampler::start(&config.server_pids, config.rss_every));
    // The events are spread over exactly `duration`: a second more lets
    // the last one out however the timer wakes.
    let until = (started + config.duration + Duration::from_secs(1)).min(deadline);
    let outcome = publish::run(config, &status.published, until).await;
    let rss = sampler.map(|s| s.finish(started));
    let outcome = outcome?;
    if let Some(e) = rss.as_ref().and_then(|r| r.error.as_ref()) {
        warnings.push(format!("RSS sampling stopped: {e}"));
    }
    let at_end = sample(config, warnings);
    Ok(SoakPhase {
        publish: PublishPhase {
            delivered: source.read().delivered - delivered_before,
            span: started.elapsed(),
            cpu_us: match (at_start, at_end) {
                (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
                _ => None,
            },
            outcome,
        },
        rss,
    })
}
