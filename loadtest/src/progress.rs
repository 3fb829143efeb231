//! The status line on stderr while a run goes on: phase, sockets open,
//! events published, deliveries and their rate, durable frames and resumes,
//! and anything wrong so far.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fleets::ProgressSource;

/// What the run is doing, written by the run and read by the printer
/// (std Mutex: a label swap, never held across an await).
pub struct Status {
    pub phase: Mutex<&'static str>,
    pub published: AtomicU64,
    pub planned: u64,
    pub sockets: u64,
    pub started: Instant,
}

impl Status {
    pub fn new(sockets: u64, planned: u64) -> Arc<Status> {
        Arc::new(Status {
            phase: Mutex::new("connecting"),
            published: AtomicU64::new(0),
            planned,
            sockets,
            started: Instant::now(),
        })
    }

    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Prints until dropped.
pub struct Printer(JoinHandle<()>);

impl Drop for Printer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(every: Duration, source: ProgressSource, status: Arc<Status>) -> Printer {
    Printer(tokio::spawn(async move {
        let mut last_delivered = 0;
        let mut last_at = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let p = source.read();
            let now = Instant::now();
            let rate = (p.delivered - last_delivered.min(p.delivered)) as f64 / (now - last_at).as_secs_f64().max(1e-3);
            last_delivered = p.delivered;
            last_at = now;
            let mut line = format!(
                "[{:7.1}s] {:<10} open {}/{} (failed {})",
                status.started.elapsed().as_secs_f64(),
                status.phase(),
                p.open,
                status.sockets,
                p.failed
            );
            if status.planned > 0 {
                line.push_str(&format!(
                    "  published {}/{}  delivered {} ({:.0}/s)",
                    status.published.load(Relaxed),
                    status.planned,
                    p.delivered,
                    rate
                ));
            }
            if p.durable + p.resumes > 0 {
                line.push_str(&format!("  durable {}", p.durable));
                if p.resumes > 0 {
                    line.push_str(&format!(" resumes {} (not recovered {})", p.resumes, p.not_recovered));
                }
                if p.recovered_sockets + p.unrecovered_sockets > 0 {
                    line.push_str(&format!(
                        " storm recovered {} not {}",
                        p.recovered_sockets, p.unrecovered_sockets
                    ));
                }
                if p.offset_errors > 0 {
                    line.push_str(&format!(" offset errors {}", p.offset_errors));
                }
            }
            if p.duplicates + p.misrouted + p.dropped > 0 {
                line.push_str(&format!(
                    "  duplicates {} misrouted {} dropped {}",
                    p.duplicates, p.misrouted, p.dropped
                ));
            }
            eprintln!("{line}");
        }
    }))
}
