//! What one process's sockets end with — connects, failures, unexpected
//! closes, deliveries, latency — and how the outcomes of several worker
//! processes add up to the run's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::delivery::DeliveryTotals;
use super::latency::Latency;
use super::offsets::OffsetTotals;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetOutcome {
    /// Connect attempts (churn reconnects included).
    pub attempted: u64,
    /// Attempts that ended with the welcome.
    pub connected: u64,
    pub failed: u64,
    /// Failed attempts by reason (`tcp`, `timeout`, `http_401`, `closed_4001`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Sessions the other side ended, by reason (`close_1012`, `eof`, ...).
    pub closes: BTreeMap<String, u64>,
    /// Most sockets open at once (summed over processes: each process's
    /// peak, which bounds the run's peak from above).
    pub peak_open: u64,
    pub delivery: DeliveryTotals,
    /// Publish → receipt, first correctly routed deliveries.
    pub latency: Latency,
    /// Start of the TCP connect → the welcome.
    pub connect_latency: Latency,
    /// Durable rooms: the offsets' verdict.
    #[serde(default)]
    pub offsets: OffsetTotals,
    /// A resume's start (its connect) → every room caught up with the
    /// welcome's positions.
    #[serde(default)]
    pub catch_up: Latency,
    /// Storm: when (Unix ns) each socket had caught up after its node's 1012.
    #[serde(default)]
    pub recovered_at_ns: Vec<u64>,
    /// Storm: sockets that resumed after their 1012 but did not recover a room.
    #[serde(default)]
    pub unrecovered_sockets: u64,
    /// Soak, storm: sockets that caught up with their rooms' last offsets
    /// once publishing was over (the others were stopped at `--settle`).
    #[serde(default)]
    pub finished: u64,
}

impl FleetOutcome {
    pub fn merge(&mut self, other: &FleetOutcome) {
        self.attempted += other.attempted;
        self.connected += other.connected;
        self.failed += other.failed;
        add_counts(&mut self.failures, &other.failures);
        add_counts(&mut self.closes, &other.closes);
        self.peak_open += other.peak_open;
        self.delivery.merge(&other.delivery);
        self.latency.merge(&other.latency);
        self.connect_latency.merge(&other.connect_latency);
        self.offsets.merge(&other.offsets);
        self.catch_up.merge(&other.catch_up);
        self.recovered_at_ns.extend_from_slice(&other.recovered_at_ns);
        self.unrecovered_sockets += other.unrecovered_sockets;
        self.finished += other.finished;
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (reason, count) in from {
        *into.entry(reason.clone()).or_default() += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(connected: u64, failed: u64, lost: u64, latencies: &[u64]) -> FleetOutcome {
        let mut latency = Latency::default();
        for &us in latencies {
            latency.record(us);
        }
        FleetOutcome {
            attempted: connected + failed,
            connected,
            failed,
            failures: if failed > 0 {
                BTreeMap::from([("timeout".to_string(), failed)])
            } else {
                BTreeMap::new()
            },
            closes: BTreeMap::from([("close_1012".to_string(), 1)]),
            peak_open: connected,
            delivery: DeliveryTotals {
                sessions: connected,
                expected: 10 * connected,
                delivered: 10 * connected - lost,
                in_window: 10 * connected - lost,
                lost,
                ..DeliveryTotals::default()
            },
            latency,
            connect_latency: Latency::default(),
            offsets: OffsetTotals {
                sockets: connected,
                lost,
                ..OffsetTotals::default()
            },
            catch_up: Latency::default(),
            recovered_at_ns: vec![connected],
            unrecovered_sockets: failed,
            finished: connected,
        }
    }

    #[test]
    fn worker_outcomes_add_up_to_the_runs() {
        let mut total = FleetOutcome::default();
        let parts = [
            outcome(100, 2, 0, &[100, 200]),
            outcome(50, 0, 3, &[300]),
            outcome(25, 1, 0, &[400, 500]),
        ];
        for part in &parts {
            total.merge(part);
        }
        assert_eq!((total.attempted, total.connected, total.failed), (178, 175, 3));
        assert_eq!(total.failures.get("timeout"), Some(&3));
        assert_eq!(total.closes.get("close_1012"), Some(&3));
        assert_eq!(total.delivery.expected, 1750);
        assert_eq!(total.delivery.lost, 3);
        assert_eq!((total.offsets.sockets, total.offsets.lost), (175, 3));
        assert_eq!(total.recovered_at_ns, vec![100, 50, 25]);
        assert_eq!((total.unrecovered_sockets, total.finished), (3, 175));
        let p = total.latency.percentiles();
        assert_eq!((p.count, p.min_us, p.max_us), (5, 100, 500));
        assert_eq!(p.p50_us, 300);
    }

    #[test]
    fn an_outcome_survives_the_trip_through_json() {
        let original = outcome(10, 1, 2, &[5, 50, 500, 5_000]);
        let json = serde_json::to_string(&original).expect("json");
        let back: FleetOutcome = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, original);
    }
}
