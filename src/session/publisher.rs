//! A connection's client publishes, off the session's loop. Publishing waits
//! for the broker (up to its timeout when Redis is slow); the session must
//! go on writing events and answering pings meanwhile. So the session hands
//! each publish to this task and returns to its loop; the task publishes
//! them one after another — one client's events to a room keep their order —
//! and queues each `ack` or `error` on the connection, like any reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::gateway::{Gateway, PublishError};
use crate::hub::{Connection, Pushed};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, Joined, encode_ack, encode_ack_with_position, encode_error};
use crate::room::RoomName;

/// Publishes a connection may have waiting for the broker, at most: more
/// than the rate limit's burst, so a client within its rate is refused only
/// when the broker falls behind. Their bytes count too: at most
/// `ws.send_queue_bytes` waiting. Past either, a publish is refused
/// (`rate_limited`) rather than queued without bound.
pub const MAX_IN_FLIGHT: usize = 256;

struct Job {
    reference: Option<String>,
    room: RoomName,
    payload: Bytes,
}

/// The session's end of its publishing task, started on its first publish.
#[derive(Default)]
pub struct Publisher {
    jobs: Option<mpsc::Sender<Job>>,
    /// Payload bytes handed over and not yet published.
    waiting_bytes: Arc<AtomicUsize>,
}

impl Publisher {
    /// Hand a checked publish (permission, size) to the task. False when
    /// [`MAX_IN_FLIGHT`] publishes or `ws.send_queue_bytes` already wait.
    pub fn submit(
        &mut self,
        gw: &Arc<Gateway>,
        conn: &Arc<Connection>,
        reference: Option<&str>,
        room: RoomName,
        payload: Bytes,
    ) -> bool {
        let size = payload.len();
        if self.waiting_bytes.load(Ordering::Relaxed).saturating_add(size) > gw.config.ws.send_queue_bytes {
            return false;
        }
        let waiting = self.waiting_bytes.clone();
        let jobs = self
            .jobs
            .get_or_insert_with(|| spawn(gw.clone(), conn.clone(), waiting));
        let job = Job {
            reference: reference.map(String::from),
            room,
            payload,
        };
        let sent = jobs.try_send(job).is_ok();
        if sent {
            self.waiting_bytes.fetch_add(size, Ordering::Relaxed);
        }
        sent
    }
}

/// The task ends when the session drops its [`Publisher`] (and the jobs
/// already handed over are done).
fn spawn(gw: Arc<Gateway>, conn: Arc<Connection>, waiting_bytes: Arc<AtomicUsize>) -> mpsc::Sender<Job> {
    let (jobs, mut queue) = mpsc::channel::<Job>(MAX_IN_FLIGHT);
    tokio::spawn(async move {
        while let Some(job) = queue.recv().await {
            let reference = job.reference.as_deref();
            let size = job.payload.len();
            let published = gw.publish_payload(&job.room, job.payload, "client").await;
            waiting_bytes.fetch_sub(size, Ordering::Relaxed);
            let reply = match published {
                Ok(None) => encode_ack(reference, None),
                Ok(Some(position)) => encode_ack_with_position(
                    reference,
                    &Joined {
                        position,
                        recovered: None,
                    },
                ),
                Err(error @ PublishError::TooLarge { .. }) => {
                    Metrics::command_error(ErrorCode::LimitExceeded.as_str());
                    encode_error(reference, ErrorCode::LimitExceeded, &error.to_string())
                }
                Err(PublishError::Broker(error)) => {
                    tracing::warn!(user_id = %conn.user_id, room = %job.room, %error, "publish failed");
                    Metrics::command_error(ErrorCode::Internal.as_str());
                    encode_error(reference, ErrorCode::Internal, "broker unavailable: retry later")
                }
            };
            if let Pushed::Overflowed(dropped) = conn.push(reply, None) {
                gw.hub.metrics().dropped_slow_consumer.increment(dropped);
            }
        }
    });
    jobs
}
