//! The durable rooms' part of the report: the offsets' verdict (lost,
//! duplicated, out of order, by namespace, and the first offenders), the
//! resumes and what the servers counted of them, the soak's RSS over time
//! and the storm's recovery time and cost.

use std::fmt::Write;

use serde::Serialize;

use super::{bytes, micros, micros_f};
use crate::rss::RssSeries;
use crate::scrape::Recoveries;
use crate::stats::latency::Percentiles;
use crate::stats::offsets::OffsetTotals;

#[derive(Clone, Debug, Default, Serialize)]
pub struct DurableReport {
    pub offsets: OffsetTotals,
    /// A resume's reconnect → every room caught up with the welcome's positions.
    pub catch_up: Percentiles,
    /// What the nodes' `/metrics` counted over the run (the storm: node B).
    pub server_recoveries: Option<Recoveries>,
    /// Soak: the servers' VmRSS over the publishing phase.
    pub rss: Option<RssSeries>,
    pub storm: Option<StormReport>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StormReport {
    /// Node A, sent SIGTERM.
    pub drained_pid: u32,
    pub drained_url: String,
    /// Node B, where the sockets resume.
    pub resumed_url: String,
    /// Sockets open on node A at the SIGTERM.
    pub sockets_at_sigterm: u64,
    /// Resumed after their 1012, recovered every room and caught up.
    pub recovered_sockets: u64,
    /// Resumed after their 1012 but some room came back `recovered:false`.
    pub unrecovered_sockets: u64,
    /// SIGTERM → the last socket caught up, when every socket recovered.
    pub all_recovered_s: Option<f64>,
    /// SIGTERM → each socket's catch-up.
    pub recovery: Percentiles,
    /// Node B over the storm (SIGTERM → the last recovery).
    pub node_b: Option<NodeCost>,
}

/// What node B spent on the storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeCost {
    pub pids: Vec<u32>,
    /// CPU (user + system) from the SIGTERM to the last recovery.
    pub cpu_us: Option<u64>,
    /// The increase of B's `wsgate_events_recovered_total`, and its resumes.
    pub events_recovered: Option<f64>,
    pub recoveries: Option<f64>,
    pub cpu_per_recovered_event_us: Option<f64>,
    /// The same CPU per resume (each resume is a handshake, a join per
    /// room and its missed events: when few events were missed, this is
    /// the number that says what a storm costs).
    pub cpu_per_resume_us: Option<f64>,
}

impl StormReport {
    pub fn is_clean(&self) -> bool {
        self.sockets_at_sigterm > 0
            && self.unrecovered_sockets == 0
            && self.recovered_sockets >= self.sockets_at_sigterm
    }
}

impl DurableReport {
    /// Nothing lost, duplicated or out of order; every resume recovered;
    /// in a storm, every socket recovered.
    pub fn is_clean(&self) -> bool {
        self.offsets.is_clean()
            && self.offsets.not_recovered == 0
            && self.storm.as_ref().is_none_or(StormReport::is_clean)
    }

    pub fn human(&self, out: &mut String) {
        let o = &self.offsets;
        let _ = writeln!(
            out,
            "offsets   {} ledgers, {} rooms: expected {}, received {}, lost {}, duplicated {}, out of order {}, unexpected {}{}",
            o.sockets,
            o.rooms,
            o.expected,
            o.received,
            o.lost,
            o.duplicated,
            o.out_of_order,
            o.unexpected,
            if o.unlisted > 0 {
                format!(", in unlisted rooms {}", o.unlisted)
            } else {
                String::new()
            }
        );
        for (ns, n) in &o.by_namespace {
            let _ = writeln!(
                out,
                "  {ns:<7} {} rooms: expected {}, received {}, lost {}, duplicated {}, out of order {}, not recovered {}",
                n.rooms, n.expected, n.received, n.lost, n.duplicated, n.out_of_order, n.not_recovered
            );
        }
        if o.resumes > 0 {
            let c = &self.catch_up;
            let _ = writeln!(
                out,
                "resumes   {} (rooms recovered {}, not recovered {}, {} offsets skipped); caught up p50 {} p99 {} max {}",
                o.resumes,
                o.recovered,
                o.not_recovered,
                o.skipped,
                micros(c.p50_us),
                micros(c.p99_us),
                micros(c.max_us)
            );
        }
        if let Some(r) = &self.server_recoveries {
            let _ = writeln!(
                out,
                "servers   recoveries: recovered {:.0}, not recovered {:.0}; events recovered {:.0}",
                r.recovered, r.not_recovered, r.events_recovered
            );
        }
        for offender in &o.offenders {
            let _ = writeln!(
                out,
                "offender  user {} {}: lost {}{}, duplicated {}, out of order {}, unexpected {}",
                offender.user,
                offender.room,
                offender.lost,
                first_lost(&offender.first_lost),
                offender.duplicated,
                offender.out_of_order,
                offender.unexpected
            );
        }
        if let Some(rss) = &self.rss {
            let first = rss.samples.first().map_or(0, |s| s.rss_bytes);
            let last = rss.samples.last().map_or(0, |s| s.rss_bytes);
            let _ = writeln!(
                out,
                "rss       {} samples every {:.0} s: {} → {} (peak {}); over the second half {}{}",
                rss.samples.len(),
                rss.every_s,
                bytes(first),
                bytes(last),
                bytes(rss.peak_bytes),
                growth(rss.growth_second_half_pct),
                rss.error
                    .as_deref()
                    .map(|e| format!("; stopped: {e}"))
                    .unwrap_or_default()
            );
        }
        if let Some(s) = &self.storm {
            let all = match s.all_recovered_s {
                Some(t) => format!("all {} recovered {:.2} s after the SIGTERM", s.recovered_sockets, t),
                None => format!(
                    "{} of {} recovered ({} not)",
                    s.recovered_sockets, s.sockets_at_sigterm, s.unrecovered_sockets
                ),
            };
            let _ = writeln!(
                out,
                "storm     pid {} drained; {all}; per socket p50 {} p99 {} max {}",
                s.drained_pid,
                micros(s.recovery.p50_us),
                micros(s.recovery.p99_us),
                micros(s.recovery.max_us)
            );
            if let Some(b) = &s.node_b {
                let _ = writeln!(
                    out,
                    "node B    CPU {} for {} recovered events and {} room resumes: {} per recovered event, {} per resumed socket",
                    b.cpu_us.map_or_else(|| "?".into(), micros),
                    b.events_recovered.map_or_else(|| "?".into(), |n| format!("{n:.0}")),
                    b.recoveries.map_or_else(|| "?".into(), |n| format!("{n:.0}")),
                    b.cpu_per_recovered_event_us.map_or_else(|| "?".into(), micros_f),
                    b.cpu_per_resume_us.map_or_else(|| "?".into(), micros_f)
                );
            }
        }
    }

    pub fn markdown(&self, out: &mut String) {
        let o = &self.offsets;
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "| {name} | {value} |");
        };
        row("offset ledgers / rooms", format!("{} / {}", o.sockets, o.rooms));
        row(
            "offsets expected / received",
            format!("{} / {}", o.expected, o.received),
        );
        row(
            "offsets lost / duplicated / out of order",
            format!("{} / {} / {}", o.lost, o.duplicated, o.out_of_order),
        );
        row(
            "offsets unexpected",
            format!("{} (+{} in unlisted rooms)", o.unexpected, o.unlisted),
        );
        for (ns, n) in &o.by_namespace {
            row(
                &format!("`{ns}` rooms: lost / duplicated / out of order"),
                format!("{} / {} / {} of {}", n.lost, n.duplicated, n.out_of_order, n.expected),
            );
        }
        row(
            "resumes (rooms recovered / not recovered)",
            format!("{} ({} / {})", o.resumes, o.recovered, o.not_recovered),
        );
        if o.resumes > 0 {
            let c = &self.catch_up;
            row(
                "resume → caught up p50 / p99 / max",
                format!("{} / {} / {}", micros(c.p50_us), micros(c.p99_us), micros(c.max_us)),
            );
        }
        if let Some(r) = &self.server_recoveries {
            row(
                "servers: recovered / not recovered / events recovered",
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    r.recovered, r.not_recovered, r.events_recovered
                ),
            );
        }
        if let Some(s) = &self.storm {
            row("storm: drained pid", s.drained_pid.to_string());
            row(
                "storm: sockets recovered / at the SIGTERM",
                format!(
                    "{} / {} ({} not recovered)",
                    s.recovered_sockets, s.sockets_at_sigterm, s.unrecovered_sockets
                ),
            );
            row(
                "storm: SIGTERM → last socket recovered",
                s.all_recovered_s
                    .map_or_else(|| "not every socket recovered".into(), |t| format!("{t:.2} s")),
            );
            row(
                "storm: SIGTERM → recovered p50 / p99 / max",
                format!(
                    "{} / {} / {}",
                    micros(s.recovery.p50_us),
                    micros(s.recovery.p99_us),
                    micros(s.recovery.max_us)
                ),
            );
            if let Some(b) = &s.node_b {
                row(
                    "node B: CPU / recovered events / room resumes",
                    format!(
                        "{} / {} / {}",
                        b.cpu_us.map_or_else(|| "?".into(), micros),
                        b.events_recovered.map_or_else(|| "?".into(), |n| format!("{n:.0}")),
                        b.recoveries.map_or_else(|| "?".into(), |n| format!("{n:.0}"))
                    ),
                );
                row(
                    "node B: CPU per recovered event",
                    b.cpu_per_recovered_event_us.map_or_else(|| "?".into(), micros_f),
                );
                row(
                    "node B: CPU per resumed socket",
                    b.cpu_per_resume_us.map_or_else(|| "?".into(), micros_f),
                );
            }
        }
        if let Some(rss) = &self.rss {
            row("RSS growth over the second half", growth(rss.growth_second_half_pct));
        }
        if !o.offenders.is_empty() {
            let _ = writeln!(
                out,
                "\n| user | room | lost | duplicated | out of order | unexpected | first lost |\n|---|---|---|---|---|---|---|"
            );
            for f in &o.offenders {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {:?} |",
                    f.user, f.room, f.lost, f.duplicated, f.out_of_order, f.unexpected, f.first_lost
                );
            }
        }
        if let Some(rss) = &self.rss {
            let _ = writeln!(out, "\n| t (s) | RSS |\n|---|---|");
            for s in &rss.samples {
                let _ = writeln!(out, "| {:.1} | {} |", s.t_s, bytes(s.rss_bytes));
            }
        }
    }
}

fn growth(pct: Option<f64>) -> String {
    pct.map_or_else(|| "? (too few samples)".into(), |p| format!("{p:+.2} %"))
}

fn first_lost(offsets: &[u64]) -> String {
    if offsets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = offsets.iter().map(u64::to_string).collect();
    format!(" (first: {})", list.join(", "))
}
