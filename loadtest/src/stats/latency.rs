//! Latency distributions in microseconds (HdrHistogram, 3 significant
//! digits, 1 µs to 1 h): the one a process records into from many socket
//! tasks at once, its summary in percentiles, and the form in which a
//! worker process hands its histogram to the parent.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const HIGHEST_US: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// Histograms a process records into; socket `i` uses shard `i % SHARDS`, so
/// a delivery takes an uncontended lock, not one lock for the process.
const SHARDS: usize = 16;

fn empty() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is
    // a programming error caught by the unit tests.
    Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// One distribution, mergeable and serialisable.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self { histogram: empty() }
    }
}

impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.to_pairs() == other.to_pairs()
    }
}

/// The percentiles a report shows, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn record(&mut self, micros: u64) {
        self.histogram.saturating_record(micros);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; saturate anyway.
        if self.histogram.add(&other.histogram).is_err() {
            for (value, count) in other.to_pairs() {
                self.histogram.saturating_record_n(value, count);
            }
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = &self.histogram;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// Every recorded bucket as (highest equivalent value, count). Recording
    /// those pairs into a histogram of the same bounds rebuilds it exactly.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn from_pairs(pairs: &[(u64, u64)]) -> Latency {
        let mut latency = Latency::default();
        for &(value, count) in pairs {
            latency.histogram.saturating_record_n(value, count);
        }
        latency
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_pairs().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(deserializer)?;
        Ok(Latency::from_pairs(&pairs))
    }
}

/// The histograms one process's socket tasks record into.
pub struct SharedLatency {
    // std Mutex: held for one record, never across an await.
    shards: Vec<Mutex<Latency>>,
}

impl Default for SharedLatency {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Latency::default())).collect(),
        }
    }
}

impl SharedLatency {
    pub fn record(&self, shard: usize, micros: u64) {
        let mut latency = self.shards[shard % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        latency.record(micros);
    }

    /// Everything recorded so far, merged.
    pub fn snapshot(&self) -> Latency {
        let mut all = Latency::default();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_give_known_percentiles() {
        let mut latency = Latency::default();
        for us in 1..=1000 {
            latency.record(us);
        }
        let p = latency.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min_us, 1);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p90_us, 900);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.p999_us, 999);
        assert_eq!(p.max_us, 1000);
        assert!((p.mean_us - 500.5).abs() < 0.5, "mean {}", p.mean_us);
    }

    #[test]
    fn a_skewed_set_puts_the_tail_where_it_belongs() {
        // 990 fast deliveries at 100 µs, 10 slow ones at 50 ms.
        let mut latency = Latency::default();
        for _ in 0..990 {
            latency.record(100);
        }
        for _ in 0..10 {
            latency.record(50_000);
        }
        let p = latency.percentiles();
        assert_eq!(p.p50_us, 100);
        assert_eq!(p.p99_us, 100);
        // 3 significant digits: 50 ms is reported within 0.1 %.
        assert!(p.p999_us.abs_diff(50_000) <= 50, "p99.9 {}", p.p999_us);
    }

    #[test]
    fn an_empty_distribution_reports_zeros() {
        assert_eq!(Latency::default().percentiles(), Percentiles::default());
    }

    #[test]
    fn pairs_and_json_round_trip_exactly() {
        let mut latency = Latency::default();
        for us in [0, 1, 7, 1_234, 98_765, 5_000_000, u64::MAX] {
            latency.record(us);
        }
        assert_eq!(Latency::from_pairs(&latency.to_pairs()), latency);
        let json = serde_json::to_string(&latency).expect("json");
        let back: Latency = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, latency);
        assert_eq!(back.percentiles(), latency.percentiles());
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Latency::default(), Latency::default(), Latency::default());
        for us in 1..=500 {
            a.record(us);
            all.record(us);
        }
        for us in 501..=1000 {
            b.record(us * 3);
            all.record(us * 3);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn shards_merge_into_one_snapshot() {
        let shared = SharedLatency::default();
        for i in 0..100 {
            shared.record(i, 10 + i as u64);
        }
        let p = shared.snapshot().percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.min_us, 10);
        assert_eq!(p.max_us, 109);
    }
}
