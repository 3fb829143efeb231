//! All the run's sockets behind one handle, whether this process holds them
//! ([`Fleet`]) or worker processes do ([`Worker`]): start, read progress,
//! stop with the publish log, and the merged outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::counters::Progress;
use crate::client::fleet::{Fleet, FleetShared};
use crate::config::RunConfig;
use crate::stats::delivery::Published;
use crate::stats::offsets::RoomEnds;
use crate::stats::outcome::FleetOutcome;
use crate::workers::{self, Job, Worker, WorkerState};

pub enum Fleets {
    Local(Fleet),
    Workers(Vec<Worker>),
}

/// Reads the live counters without holding the fleets.
#[derive(Clone)]
pub enum ProgressSource {
    Local(Arc<FleetShared>),
    Workers(Vec<Arc<Mutex<WorkerState>>>),
}

impl ProgressSource {
    pub fn read(&self) -> Progress {
        match self {
            ProgressSource::Local(shared) => shared.counters.read(),
            ProgressSource::Workers(states) => {
                let mut sum = Progress::default();
                for state in states {
                    sum.add(&workers::lock(state).progress);
                }
                sum
            }
        }
    }
}

impl Fleets {
    pub async fn start(config: &RunConfig) -> Result<Fleets, String> {
        if config.procs <= 1 {
            return Ok(Fleets::Local(Fleet::start(config, 0, config.sockets).await?));
        }
        let exe = config.worker_exe.as_deref().ok_or("no worker binary")?;
        let mut worker_config = config.clone();
        worker_config.procs = 1;
        worker_config.progress = None;
        let mut started = Vec::new();
        for (first, count) in workers::shares(config.sockets, config.procs) {
            let job = Job {
                config: worker_config.clone(),
                first,
                count,
            };
            // On error the workers started so far are killed on drop.
            started.push(Worker::spawn(exe, &job).await?);
        }
        Ok(Fleets::Workers(started))
    }

    pub fn progress_source(&self) -> ProgressSource {
        match self {
            Fleets::Local(fleet) => ProgressSource::Local(fleet.shared()),
            Fleets::Workers(workers) => ProgressSource::Workers(workers.iter().map(|w| w.state.clone()).collect()),
        }
    }

    /// A worker that failed, if any.
    pub fn failure(&self) -> Option<String> {
        match self {
            Fleets::Local(_) => None,
            Fleets::Workers(workers) => workers.iter().find_map(Worker::failure),
        }
    }

    /// Stop every socket and merge the outcomes; resuming sockets get up to
    /// `catch_up` to reach the rooms' `ends` first.
    pub async fn finish(self, log: &[Published], ends: &RoomEnds, catch_up: Duration) -> Result<FleetOutcome, String> {
        match self {
            Fleets::Local(fleet) => Ok(fleet.finish(log, ends, catch_up).await),
            Fleets::Workers(mut workers) => {
                for worker in &mut workers {
                    worker.stop(log, ends, catch_up).await?;
                }
                let mut total = FleetOutcome::default();
                for worker in workers {
                    total.merge(&worker.outcome(catch_up).await?);
                }
                Ok(total)
            }
        }
    }
}
