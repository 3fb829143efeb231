//! The servers' resident memory over a run: `VmRSS` of every `--server-pid`
//! sampled every few seconds by a background task, and what the series
//! says — above all how much it grew over the second half of the run, when
//! every buffer and history should have reached its steady size.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::procstat;

/// One reading: seconds since sampling started, the sum, and each pid's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RssSample {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub each_bytes: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RssSeries {
    pub pids: Vec<u32>,
    pub every_s: f64,
    pub samples: Vec<RssSample>,
    /// (last − the sample at half time) / the sample at half time, in %.
    pub growth_second_half_pct: Option<f64>,
    /// Highest sample.
    pub peak_bytes: u64,
    /// Why sampling stopped early, if it did.
    pub error: Option<String>,
}

impl RssSeries {
    fn finish(mut self) -> RssSeries {
        self.growth_second_half_pct = growth_second_half(&self.samples);
        self.peak_bytes = self.samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
        self
    }
}

/// Growth from the first sample at or after half the series' span to the
/// last sample, in percent; `None` with fewer than three samples.
pub fn growth_second_half(samples: &[RssSample]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let first = samples.first()?;
    let last = samples.last()?;
    let half = first.t_s + (last.t_s - first.t_s) / 2.0;
    let mid = samples.iter().find(|s| s.t_s >= half)?;
    (mid.rss_bytes > 0).then(|| 100.0 * (last.rss_bytes as f64 - mid.rss_bytes as f64) / mid.rss_bytes as f64)
}

/// Samples until [`Sampler::finish`].
pub struct Sampler {
    task: JoinHandle<()>,
    series: Arc<Mutex<RssSeries>>,
    pids: Vec<u32>,
}

fn lock(series: &Mutex<RssSeries>) -> std::sync::MutexGuard<'_, RssSeries> {
    series.lock().unwrap_or_else(|e| e.into_inner())
}

fn take(pids: &[u32]) -> Result<(u64, Vec<u64>), String> {
    let mut each = Vec::with_capacity(pids.len());
    for &pid in pids {
        let sample = procstat::sample(pid).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
        each.push(sample.rss_bytes);
    }
    Ok((each.iter().sum(), each))
}

impl Sampler {
    /// Sample `pids` now and then every `every`.
    pub fn start(pids: &[u32], every: Duration) -> Sampler {
        let series = Arc::new(Mutex::new(RssSeries {
            pids: pids.to_vec(),
            every_s: every.as_secs_f64(),
            ..RssSeries::default()
        }));
        let task = {
            let series = series.clone();
            let pids = pids.to_vec();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
                loop {
                    ticks.tick().await;
                    if !Self::record(&series, &pids, started) {
                        return;
                    }
                }
            })
        };
        Sampler {
            task,
            series,
            pids: pids.to_vec(),
        }
    }

    /// One sample; false once a pid cannot be read.
    fn record(series: &Mutex<RssSeries>, pids: &[u32], started: Instant) -> bool {
        let t_s = started.elapsed().as_secs_f64();
        match take(pids) {
            Ok((rss_bytes, each_bytes)) => {
                lock(series).samples.push(RssSample {
                    t_s,
                    rss_bytes,
                    each_bytes,
                });
                true
            }
            Err(e) => {
                lock(series).error = Some(e);
                false
            }
        }
    }

    /// Stop sampling, with one last sample, and the series.
    pub fn finish(self, started: Instant) -> RssSeries {
        self.task.abort();
        if lock(&self.series).error.is_none() {
            Self::record(&self.series, &self.pids, started);
        }
        let series = std::mem::take(&mut *lock(&self.series));
        series.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(f64, u64)]) -> Vec<RssSample> {
        points
            .iter()
            .map(|&(t_s, rss_bytes)| RssSample {
                t_s,
                rss_bytes,
                each_bytes: vec![rss_bytes],
            })
            .collect()
    }

    #[test]
    fn growth_is_measured_over_the_second_half() {
        // Grows fast while warming up, then 10 % from 30 s to 60 s.
        let s = series(&[
            (0.0, 10),
            (10.0, 80),
            (20.0, 95),
            (30.0, 100),
            (40.0, 103),
            (50.0, 106),
            (60.0, 110),
        ]);
        let g = growth_second_half(&s).expect("enough samples");
        assert!((g - 10.0).abs() < 1e-9, "{g}");
        // Half time falls between samples: the first one after it.
        let s = series(&[(0.0, 100), (6.0, 100), (11.0, 200), (14.0, 150)]);
        assert_eq!(growth_second_half(&s), Some(-25.0));
        assert_eq!(growth_second_half(&series(&[(0.0, 1), (1.0, 2)])), None);
    }

    #[tokio::test]
    async fn this_process_can_be_sampled_over_time() {
        let started = Instant::now();
        let sampler = Sampler::start(&[std::process::id()], Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(110)).await;
        let series = sampler.finish(started);
        assert!(series.samples.len() >= 4, "{series:?}");
        assert!(series.samples.iter().all(|s| s.rss_bytes > 0));
        assert!(series.growth_second_half_pct.is_some());
        assert!(series.error.is_none());
        let gone = Sampler::start(&[u32::MAX], Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let series = gone.finish(started);
        assert!(series.samples.is_empty());
        assert!(series.error.is_some());
    }
}
