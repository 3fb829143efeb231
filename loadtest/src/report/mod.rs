//! The run's result: the numbers (serialised as the one JSON line on
//! stdout), a human summary, and a markdown report for `--out`. Durable
//! rooms' numbers (offsets, recoveries, RSS over time, the storm) are in
//! [`durable`].

pub mod durable;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

pub use self::durable::{DurableReport, NodeCost, StormReport};
use crate::config::{Protocol, ScenarioKind};
use crate::publish::PublishOutcome;
use crate::stats::delivery::DeliveryTotals;
use crate::stats::latency::Percentiles;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: ScenarioKind,
    pub protocol: Protocol,
    pub targets: Vec<String>,
    pub procs: usize,
    pub sockets: u64,
    /// The whole run, seconds.
    pub duration_s: f64,
    pub connects: Connects,
    pub publish: Option<PublishOutcome>,
    pub delivery: DeliveryTotals,
    pub loss_ratio: f64,
    /// Publish → receipt.
    pub latency: Percentiles,
    /// First deliveries per second, from the first event to the last delivery.
    pub deliveries_per_s: f64,
    /// Sessions the other side ended, by reason.
    pub closes: BTreeMap<String, u64>,
    pub server: Option<ServerCost>,
    /// Durable rooms: offsets, recoveries, and the soak's and storm's own numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableReport>,
    /// Every socket connected, no session dropped, nothing lost, duplicated
    /// or misrouted, every event accepted.
    pub clean: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Connects {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub peak_open: u64,
    /// Until every socket's first attempt had finished.
    pub ramp_s: f64,
    pub per_s: f64,
    /// TCP connect → welcome.
    pub latency: Percentiles,
}

/// What the server processes spent, from /proc (summed over the pids).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerCost {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    pub rss_connected_bytes: u64,
    pub rss_end_bytes: u64,
    /// (RSS after the ramp − RSS before) / sockets open after the ramp.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU from before the first connect to after the ramp.
    pub cpu_connect_us: u64,
    pub cpu_per_connect_us: Option<f64>,
    /// Idle: CPU while the sockets were held, and as a share of one core.
    pub cpu_hold_us: Option<u64>,
    pub cpu_hold_core_pct: Option<f64>,
    /// From the first event to the end of the settle.
    pub cpu_publish_us: Option<u64>,
    pub cpu_per_delivery_us: Option<f64>,
    pub cpu_per_event_us: Option<f64>,
    /// `--aux-pid` processes (e.g. Redis), summed: CPU over the same phases.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aux_pids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_cpu_connect_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_cpu_publish_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_cpu_per_delivery_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_cpu_per_event_us: Option<f64>,
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"report: {e}"}}"#))
    }

    /// A few lines for a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let c = &self.connects;
        let _ = writeln!(
            out,
            "wsgate-loadtest {} · {} · {} target(s) · {} sockets · {} process(es) · {:.1} s",
            self.scenario.as_str(),
            self.protocol.as_str(),
            self.targets.len(),
            self.sockets,
            self.procs,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "connects  {}/{} ok, {} failed{} in {:.2} s ({:.0}/s); handshake p50 {} p99 {} max {}; peak open {}",
            c.connected,
            c.attempted,
            c.failed,
            counts_suffix(&c.failures),
            c.ramp_s,
            c.per_s,
            micros(c.latency.p50_us),
            micros(c.latency.p99_us),
            micros(c.latency.max_us),
            c.peak_open
        );
        if let Some(p) = &self.publish {
            let rate = if p.elapsed_s > 0.0 {
                p.sent as f64 / p.elapsed_s
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "publish   {}/{} events in {:.2} s ({:.0}/s); {} acknowledged, {} errors{}{}",
                p.sent,
                p.planned,
                p.elapsed_s,
                rate,
                p.acknowledged,
                p.errors,
                p.receivers
                    .map(|r| format!("; {r} subscriber receipts"))
                    .unwrap_or_default(),
                p.first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            );
            let d = &self.delivery;
            if self.scenario.resumes() {
                // Resumed sessions get events from before their welcome: the
                // offsets below judge them, not the publish log.
                let _ = writeln!(
                    out,
                    "delivery  {} delivered (judged by their offsets below), duplicates {}, misrouted {}, foreign {}",
                    d.delivered, d.duplicates, d.misrouted, d.foreign
                );
            } else {
                let _ = writeln!(
                    out,
                    "delivery  {} expected, {} delivered, lost {} ({:.4} %), duplicates {}, misrouted {}, surplus {}, reordered {}, foreign {}",
                    d.expected,
                    d.delivered,
                    d.lost,
                    100.0 * self.loss_ratio,
                    d.duplicates,
                    d.misrouted,
                    d.surplus,
                    d.reordered,
                    d.foreign
                );
            }
            let l = &self.latency;
            let _ = writeln!(
                out,
                "latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
                micros(l.p50_us),
                micros(l.p90_us),
                micros(l.p99_us),
                micros(l.p999_us),
                micros(l.max_us),
                l.count
            );
            let _ = writeln!(out, "rate      {:.0} deliveries/s", self.deliveries_per_s);
        }
        let _ = writeln!(
            out,
            "sessions  {} (dropped by the other side: {}{})",
            self.delivery.sessions,
            self.delivery.dropped_sessions,
            counts_suffix(&self.closes)
        );
        if let Some(s) = &self.server {
            let mut line = format!(
                "server    RSS {} → {} → {}",
                bytes(s.rss_before_bytes),
                bytes(s.rss_connected_bytes),
                bytes(s.rss_end_bytes)
            );
            if let Some(per) = s.rss_per_connection_bytes {
                let _ = write!(line, " ({} per connection)", bytes_f(per));
            }
            if let Some(per) = s.cpu_per_connect_us {
                let _ = write!(line, "; CPU {} per connect", micros_f(per));
            }
            if let (Some(cpu), Some(pct)) = (s.cpu_hold_us, s.cpu_hold_core_pct) {
                let _ = write!(line, "; CPU {} while holding ({pct:.2} % of a core)", micros(cpu));
            }
            if let Some(per) = s.cpu_per_delivery_us {
                let _ = write!(line, "; CPU {} per delivery", micros_f(per));
            }
            if let Some(per) = s.cpu_per_event_us {
                let _ = write!(line, ", {} per event", micros_f(per));
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(d) = &self.durable {
            d.human(&mut out);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning   {warning}");
        }
        let _ = writeln!(out, "result    {}", if self.clean { "CLEAN" } else { "NOT CLEAN" });
        out
    }

    /// The report as markdown, for `--out`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# wsgate-loadtest: {} against {}\n",
            self.scenario.as_str(),
            self.protocol.as_str()
        );
        let _ = writeln!(out, "Targets: {}  ", self.targets.join(", "));
        let _ = writeln!(
            out,
            "{} sockets over {} process(es); the run took {:.1} s. Result: **{}**.\n",
            self.sockets,
            self.procs,
            self.duration_s,
            if self.clean { "clean" } else { "not clean" }
        );
        let _ = writeln!(out, "| measure | value |\n|---|---|");
        let c = &self.connects;
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "| {name} | {value} |");
        };
        row("connected / attempted", format!("{} / {}", c.connected, c.attempted));
        row("failed connects", format!("{}{}", c.failed, counts_suffix(&c.failures)));
        row("ramp", format!("{:.2} s ({:.0} connects/s)", c.ramp_s, c.per_s));
        row(
            "handshake p50 / p99 / max",
            format!(
                "{} / {} / {}",
                micros(c.latency.p50_us),
                micros(c.latency.p99_us),
                micros(c.latency.max_us)
            ),
        );
        if let Some(p) = &self.publish {
            let d = &self.delivery;
            let l = &self.latency;
            row("events sent / planned", format!("{} / {}", p.sent, p.planned));
            row(
                "publish rate",
                format!(
                    "{:.0}/s",
                    if p.elapsed_s > 0.0 {
                        p.sent as f64 / p.elapsed_s
                    } else {
                        0.0
                    }
                ),
            );
            row("publish errors", p.errors.to_string());
            row("expected / delivered", format!("{} / {}", d.expected, d.delivered));
            row("lost", format!("{} ({:.4} %)", d.lost, 100.0 * self.loss_ratio));
            row(
                "duplicates / misrouted / surplus",
                format!("{} / {} / {}", d.duplicates, d.misrouted, d.surplus),
            );
            row(
                "latency p50 / p90 / p99 / p99.9 / max",
                format!(
                    "{} / {} / {} / {} / {}",
                    micros(l.p50_us),
                    micros(l.p90_us),
                    micros(l.p99_us),
                    micros(l.p999_us),
                    micros(l.max_us)
                ),
            );
            row("deliveries per second", format!("{:.0}", self.deliveries_per_s));
        }
        row(
            "sessions dropped by the server",
            format!("{}{}", self.delivery.dropped_sessions, counts_suffix(&self.closes)),
        );
        if let Some(s) = &self.server {
            row(
                "server RSS before / connected / end",
                format!(
                    "{} / {} / {}",
                    bytes(s.rss_before_bytes),
                    bytes(s.rss_connected_bytes),
                    bytes(s.rss_end_bytes)
                ),
            );
            if let Some(v) = s.rss_per_connection_bytes {
                row("server RSS per connection", bytes_f(v));
            }
            if let Some(v) = s.cpu_per_connect_us {
                row("server CPU per connect", micros_f(v));
            }
            if let Some(v) = s.cpu_hold_core_pct {
                row("server CPU while holding", format!("{v:.2} % of a core"));
            }
            if let Some(v) = s.cpu_per_delivery_us {
                row("server CPU per delivery", micros_f(v));
            }
            if let Some(v) = s.cpu_per_event_us {
                row("server CPU per event", micros_f(v));
            }
        }
        if let Some(d) = &self.durable {
            d.markdown(&mut out);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "\n> warning: {warning}");
        }
        let _ = writeln!(out, "\n```json\n{}\n```", self.json());
        out
    }
}

fn counts_suffix(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join(", "))
}

/// Microseconds in the unit that reads best.
pub fn micros(us: u64) -> String {
    micros_f(us as f64)
}

pub fn micros_f(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

pub fn bytes(n: u64) -> String {
    bytes_f(n as f64)
}

pub fn bytes_f(n: f64) -> String {
    if n.abs() < 1024.0 {
        format!("{n:.0} B")
    } else if n.abs() < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(micros(850), "850.0 µs");
        assert_eq!(micros(1_500), "1.50 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8 * 1024 + 512), "8.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn the_summary_names_the_result_and_json_is_one_line() {
        let report = Report {
            scenario: ScenarioKind::Fanout,
            protocol: Protocol::Wsgate,
            targets: vec!["ws://127.0.0.1:1/v1/ws".into()],
            procs: 1,
            sockets: 10,
            duration_s: 1.0,
            connects: Connects::default(),
            publish: Some(PublishOutcome::default()),
            delivery: DeliveryTotals::default(),
            loss_ratio: 0.0,
            latency: Percentiles::default(),
            deliveries_per_s: 0.0,
            closes: BTreeMap::new(),
            server: Some(ServerCost::default()),
            durable: None,
            clean: true,
            warnings: vec!["something".into()],
        };
        assert!(report.human().contains("result    CLEAN"));
        assert!(!report.json().contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
        assert_eq!(json["scenario"], "fanout");
        assert!(
            report
                .markdown()
                .starts_with("# wsgate-loadtest: fanout against wsgate")
        );
        assert!(
            json.get("durable").is_none(),
            "no durable section without durable rooms"
        );
    }

    #[test]
    fn a_soak_report_shows_offsets_recoveries_and_rss() {
        let mut offsets = crate::stats::offsets::OffsetTotals {
            sockets: 50,
            rooms: 100,
            expected: 1000,
            received: 998,
            lost: 2,
            resumes: 40,
            recovered: 80,
            ..Default::default()
        };
        offsets.offenders.push(crate::stats::offsets::Offender {
            user: 3,
            room: "org:lt".into(),
            lost: 2,
            duplicated: 0,
            out_of_order: 0,
            unexpected: 0,
            first_lost: vec![17, 18],
        });
        let report = Report {
            scenario: ScenarioKind::Soak,
            protocol: Protocol::Wsgate,
            targets: vec!["ws://127.0.0.1:1/v1/ws".into()],
            procs: 1,
            sockets: 50,
            duration_s: 60.0,
            connects: Connects::default(),
            publish: Some(PublishOutcome::default()),
            delivery: DeliveryTotals::default(),
            loss_ratio: 0.0,
            latency: Percentiles::default(),
            deliveries_per_s: 0.0,
            closes: BTreeMap::new(),
            server: None,
            durable: Some(DurableReport {
                offsets,
                rss: Some(crate::rss::RssSeries {
                    pids: vec![7],
                    every_s: 5.0,
                    samples: vec![crate::rss::RssSample {
                        t_s: 0.0,
                        rss_bytes: 1 << 20,
                        each_bytes: vec![1 << 20],
                    }],
                    growth_second_half_pct: Some(1.5),
                    peak_bytes: 1 << 20,
                    error: None,
                }),
                ..DurableReport::default()
            }),
            clean: false,
            warnings: Vec::new(),
        };
        let human = report.human();
        assert!(human.contains("offsets   "), "{human}");
        assert!(human.contains("lost 2"), "{human}");
        assert!(human.contains("org:lt"), "{human}");
        assert!(human.contains("+1.50 %"), "{human}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
        assert_eq!(json["durable"]["offsets"]["lost"], 2);
        assert_eq!(json["durable"]["rss"]["growth_second_half_pct"], 1.5);
        let md = report.markdown();
        assert!(md.contains("| offsets lost / duplicated / out of order |"), "{md}");
        assert!(md.contains("| t (s) | RSS |"), "{md}");
    }
}
