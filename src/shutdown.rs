//! Graceful shutdown: the draining flag `/ready` and the upgrade path read,
//! and one tracker of the tasks that must finish.
//!
//! Order (as centrifuge does it, driven by `server::run`): mark draining
//! (`/ready` 503, no new sockets) → close the sockets with 1012 one at a
//! time, in random order, at moments spread evenly over `drain_s` → wait for
//! the sessions under a deadline → close the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::task::TaskTracker;

#[derive(Default)]
pub struct Shutdown {
    tracker: TaskTracker,
    draining: AtomicBool,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start draining. Idempotent.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Tracks sessions, so shutdown can wait for them.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Wait for every tracked task, at most `deadline`. True if all finished.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait()).await.is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = ctrl_c => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the node");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn begin_marks_draining_and_wait_sees_tasks_finish() {
        let shutdown = Shutdown::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        shutdown.tracker().spawn(async move {
            let _ = rx.await;
        });
        assert!(!shutdown.is_draining());
        shutdown.begin();
        assert!(shutdown.is_draining());
        assert!(
            !shutdown.wait(Duration::from_millis(50)).await,
            "the task is still running"
        );
        tx.send(()).unwrap();
        assert!(shutdown.wait(Duration::from_secs(5)).await);
    }
}
