//! Worker processes, both ends of the pipe. When one process may not open
//! all the sockets (20,000 files here), the parent re-runs its own binary as
//! `wsgate-loadtest worker` K times; each worker holds its share and talks
//! JSON lines:
//!
//! ```text
//! parent → worker stdin   {"config":{..},"first":0,"count":5000}   the job
//! worker → parent stdout  {"progress":{..}}                         every 250 ms
//! parent → worker stdin   {"stop":{"log":[[ts,user],..]}}           publishing is over
//!                          (+ "ends":{room:offset}, "catch_up_ms")  durable rooms: where they ended
//! worker → parent stdout  {"outcome":{..}} | {"failed":"why"}       its totals, then exit
//! ```
//!
//! A worker whose stdin closes stops as if told to (with an empty log), and
//! every worker stops by itself at the run's timeout, so none outlives a
//! parent that died.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::counters::Progress;
use crate::client::fleet::Fleet;
use crate::config::RunConfig;
use crate::stats::delivery::Published;
use crate::stats::offsets::RoomEnds;
use crate::stats::outcome::FleetOutcome;

const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long a worker waits for its job line.
const JOB_WAIT: Duration = Duration::from_secs(30);
/// How long the parent waits for a worker's outcome after the stop.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub config: RunConfig,
    pub first: u64,
    pub count: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    Progress(Progress),
    Outcome(Box<FleetOutcome>),
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    Stop {
        log: Vec<Published>,
        /// Each durable room's last offset.
        #[serde(default, skip_serializing_if = "RoomEnds::is_empty")]
        ends: RoomEnds,
        /// How long resuming sockets may take to catch up with `ends`.
        #[serde(default, skip_serializing_if = "is_zero")]
        catch_up_ms: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// ------------------------------------------------------------ worker side

/// The body of `wsgate-loadtest worker`: read the job from stdin, hold the
/// sockets, report on stdout.
pub async fn serve() -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let (lines, writer) = stdout_writer();
    let job_line = tokio::time::timeout(JOB_WAIT, stdin.next_line())
        .await
        .map_err(|_| "no job on stdin".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("stdin closed before the job")?;
    let job: Job = serde_json::from_str(&job_line).map_err(|e| format!("bad job: {e}"))?;
    let fleet = match Fleet::start(&job.config, job.first, job.count).await {
        Ok(fleet) => fleet,
        Err(e) => {
            send(&lines, &FromWorker::Failed(e.clone())).await;
            drop(lines);
            let _ = writer.await;
            return Err(e);
        }
    };
    let reporter = {
        let shared = fleet.shared();
        let lines = lines.clone();
        tokio::spawn(async move {
            loop {
                send(&lines, &FromWorker::Progress(shared.counters.read())).await;
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        })
    };
    // The stop line, or the end of stdin, or the run's own timeout.
    let wait = job.config.timeout + Duration::from_secs(5);
    let (log, ends, catch_up_ms) = match tokio::time::timeout(wait, stdin.next_line()).await {
        Ok(Ok(Some(line))) => match serde_json::from_str::<ToWorker>(&line) {
            Ok(ToWorker::Stop { log, ends, catch_up_ms }) => (log, ends, catch_up_ms),
            Err(e) => {
                eprintln!("wsgate-loadtest worker: bad stop line: {e}");
                Default::default()
            }
        },
        _ => Default::default(),
    };
    let outcome = fleet.finish(&log, &ends, Duration::from_millis(catch_up_ms)).await;
    reporter.abort();
    send(&lines, &FromWorker::Outcome(Box::new(outcome))).await;
    drop(lines);
    let _ = writer.await;
    Ok(())
}

/// One task owns stdout, so lines never interleave.
fn stdout_writer() -> (mpsc::Sender<String>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    (tx, writer)
}

async fn send(lines: &mpsc::Sender<String>, message: &FromWorker) {
    if let Ok(line) = serde_json::to_string(message) {
        let _ = lines.send(line).await;
    }
}

// ------------------------------------------------------------ parent side

/// What the parent knows of a worker; written by the task that reads the
/// worker's stdout (std Mutex: held for an assignment, never across an await).
#[derive(Debug, Default)]
pub struct WorkerState {
    pub progress: Progress,
    pub done: Option<Result<FleetOutcome, String>>,
}

pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    pub state: Arc<Mutex<WorkerState>>,
    reader: JoinHandle<()>,
}

pub fn lock(state: &Mutex<WorkerState>) -> std::sync::MutexGuard<'_, WorkerState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    pub async fn spawn(exe: &Path, job: &Job) -> Result<Worker, String> {
        let mut child = Command::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker {}: {e}", exe.display()))?;
        let mut stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let mut line = serde_json::to_string(job).map_err(|e| e.to_string())?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("worker did not take its job: {e}"))?;
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let reader = tokio::spawn(read_reports(BufReader::new(stdout), state.clone()));
        Ok(Worker {
            child,
            stdin,
            state,
            reader,
        })
    }

    /// Why the worker failed, if it did.
    pub fn failure(&self) -> Option<String> {
        match &lock(&self.state).done {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// Send the stop with the publish log and the rooms' ends.
    pub async fn stop(&mut self, log: &[Published], ends: &RoomEnds, catch_up: Duration) -> Result<(), String> {
        let stop = ToWorker::Stop {
            log: log.to_vec(),
            ends: ends.clone(),
            catch_up_ms: u64::try_from(catch_up.as_millis()).unwrap_or(u64::MAX),
        };
        let mut line = serde_json::to_string(&stop).map_err(|e| e.to_string())?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("worker gone before the stop: {e}"))
    }

    /// Wait (bounded: `catch_up` longer for resuming sockets) for the
    /// outcome; the process is reaped either way.
    pub async fn outcome(mut self, catch_up: Duration) -> Result<FleetOutcome, String> {
        let _ = tokio::time::timeout(OUTCOME_WAIT + catch_up, &mut self.reader).await;
        self.reader.abort();
        let result = lock(&self.state)
            .done
            .take()
            .unwrap_or_else(|| Err("worker ended without an outcome".into()));
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        result
    }
}

async fn read_reports(stdout: BufReader<tokio::process::ChildStdout>, state: Arc<Mutex<WorkerState>>) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let message = match serde_json::from_str::<FromWorker>(&line) {
            Ok(message) => message,
            Err(e) => {
                lock(&state).done = Some(Err(format!("unreadable worker line: {e}")));
                return;
            }
        };
        let mut state = lock(&state);
        match message {
            FromWorker::Progress(progress) => state.progress = progress,
            FromWorker::Outcome(outcome) => {
                state.done = Some(Ok(*outcome));
                return;
            }
            FromWorker::Failed(e) => {
                state.done = Some(Err(e));
                return;
            }
        }
    }
    let mut state = lock(&state);
    if state.done.is_none() {
        state.done = Some(Err("worker exited without an outcome".into()));
    }
}

/// Socket shares: worker `k` of `procs` holds `[first, first + count)`.
pub fn shares(sockets: u64, procs: usize) -> Vec<(u64, u64)> {
    let procs = procs.max(1) as u64;
    (0..procs)
        .map(|k| {
            let first = sockets * k / procs;
            let next = sockets * (k + 1) / procs;
            (first, next - first)
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_socket_once() {
        let shares = shares(10_001, 3);
        assert_eq!(shares.len(), 3);
        assert_eq!(shares[0].0, 0);
        let mut next = 0;
        for &(first, count) in &shares {
            assert_eq!(first, next);
            next = first + count;
        }
        assert_eq!(next, 10_001);
        assert!(shares.iter().all(|&(_, c)| c == 3333 || c == 3334));
        assert_eq!(super::shares(2, 4).len(), 2, "no empty workers");
    }

    #[test]
    fn messages_round_trip_as_json_lines() {
        let progress = FromWorker::Progress(Progress {
            connected: 5,
            ..Progress::default()
        });
        let back: FromWorker = serde_json::from_str(&serde_json::to_string(&progress).expect("json")).expect("parse");
        assert!(matches!(back, FromWorker::Progress(p) if p.connected == 5));
        let stop = ToWorker::Stop {
            log: vec![Published(1, None), Published(2, Some(9))],
            ends: RoomEnds::new(),
            catch_up_ms: 0,
        };
        let line = serde_json::to_string(&stop).expect("json");
        assert_eq!(line, r#"{"stop":{"log":[[1,null],[2,9]]}}"#);
        let durable = ToWorker::Stop {
            log: Vec::new(),
            ends: RoomEnds::from([("org:lt".to_string(), 40)]),
            catch_up_ms: 5000,
        };
        let line = serde_json::to_string(&durable).expect("json");
        assert_eq!(line, r#"{"stop":{"log":[],"ends":{"org:lt":40},"catch_up_ms":5000}}"#);
        let ToWorker::Stop { ends, catch_up_ms, .. } = serde_json::from_str(&line).expect("parse");
        assert_eq!((ends.get("org:lt"), catch_up_ms), (Some(&40), 5000));
    }
}
