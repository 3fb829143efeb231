//! Writing to the socket: single frames now (welcome, pings), and drained
//! batches, every frame fed and one flush, bounded by the write timeout.

use std::time::Duration;

use futures_util::{FutureExt, SinkExt};
use tokio_tungstenite::tungstenite::Message;

use super::Session;
use super::close::classify;
use crate::close::CloseReason;
use crate::hub::Batch;

impl Session {
    /// Write one frame now (welcome, pings), bounded by the write timeout.
    pub(super) async fn write_now(&mut self, message: Message) -> Result<(), CloseReason> {
        let timeout = Duration::from_secs(self.gw.config.ws.write_timeout_s);
        match tokio::time::timeout(timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(classify(error)),
            Err(_) => Err(CloseReason::SlowConsumer),
        }
    }

    /// Write a drained batch: every frame fed, one flush. A write that makes
    /// no progress within the write timeout, or a close request that arrives
    /// meanwhile (e.g. the queue overflowed), ends the connection.
    pub(super) async fn write_batch(&mut self, batch: &mut Batch) -> Result<(), CloseReason> {
        let oldest = batch.iter().find_map(|q| q.received_at);
        let events = batch.iter().filter(|q| q.received_at.is_some()).count() as u64;
        let write_timeout = Duration::from_secs(self.gw.config.ws.write_timeout_s);
        let result = {
            let ws = &mut self.ws;
            let conn = &self.conn;
            let write = async {
                for queued in batch.drain(..) {
                    ws.feed(Message::Text(queued.frame)).await?;
                }
                ws.flush().await
            };
            tokio::pin!(write);
            // Most writes complete at once (the socket has room): no timer
            // is armed for them.
            match write.as_mut().now_or_never() {
                Some(result) => result.map_err(classify),
                None => {
                    // A blocked write is rare: its timer lives on the heap
                    // rather than in every socket's future.
                    let stall = Box::pin(tokio::time::sleep(write_timeout));
                    tokio::select! {
                        result = &mut write => result.map_err(classify),
                        _ = stall => Err(CloseReason::SlowConsumer),
                        reason = conn.closed() => Err(reason),
                    }
                }
            }
        };
        batch.clear();
        // The batch swaps places with the queue on every drain: after a burst,
        // give the memory back rather than keep two large buffers per socket.
        if batch.capacity() > 256 {
            batch.shrink_to(16);
        }
        result?;
        let metrics = self.gw.hub.metrics();
        metrics.messages_delivered.increment(events);
        if let Some(oldest) = oldest {
            crate::metrics::record_sampled(&metrics.delivery_latency, oldest);
        }
        Ok(())
    }
}
