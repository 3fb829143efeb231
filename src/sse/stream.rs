//! The writer of an SSE connection: a task that drains the connection's
//! queue (byte-capped, as for a WebSocket), turns each event frame into an
//! SSE event with its resume `id:`, and hands the chunks to the response
//! body through a channel of one.
//!
//! The task, not the body, owns the connection: hyper stops polling a body
//! whose socket does not drain, and a stalled reader must still be closed
//! (its queue overflows, or a chunk waits longer than `write_timeout_s`),
//! leave its rooms and free its slot, as on WebSocket.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::resume::Positions;
use crate::close::CloseReason;
use crate::gateway::{Gateway, SocketSlot};
use crate::http::Body;
use crate::hub::{Batch, Connection, Transport};
use crate::metrics::Metrics;

/// How long a reconnecting `EventSource` waits (the `retry:` field).
const RETRY_MS: &str = "1000";

/// Start the writer task; returns the response body it feeds.
pub fn spawn(
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    slot: SocketSlot,
    expires_at: u64,
    positions: Positions,
    welcome: Bytes,
) -> Body {
    let (chunks, mut body) = mpsc::channel::<Bytes>(1);
    let mut first = format!("retry: {RETRY_MS}\n").into_bytes();
    write_event(&mut first, "wsgate:welcome", &positions, &welcome);
    // The channel is new and holds one: this cannot fail.
    let _ = chunks.try_send(Bytes::from(first));
    let writer = Writer {
        expires: crate::session::instant_of_unix(expires_at),
        gw: gw.clone(),
        conn,
        positions,
        _slot: slot,
    };
    gw.shutdown.tracker().spawn(writer.run(chunks));
    let stream = futures_util::stream::poll_fn(move |cx| {
        body.poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))))
    });
    StreamBody::new(stream).boxed_unsync()
}

struct Writer {
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    positions: Positions,
    expires: Instant,
    /// Held for the connection's life: it counts against `max_connections`.
    _slot: SocketSlot,
}

impl Writer {
    async fn run(mut self, chunks: mpsc::Sender<Bytes>) {
        let reason = self.serve(&chunks).await;
        // A comment: EventSource ignores it, a person with curl sees why.
        let _ = chunks.try_send(Bytes::from(format!(": closed {} {}\n\n", reason.code(), reason.text())));
        drop(chunks);
        finish(&self.gw, &self.conn, reason).await;
    }

    async fn serve(&mut self, chunks: &mpsc::Sender<Bytes>) -> CloseReason {
        let heartbeat = self.gw.heartbeat().max(Duration::from_secs(1));
        let mut ticks = tokio::time::interval_at((Instant::now() + heartbeat).into(), heartbeat);
        let expiry = tokio::time::sleep_until(self.expires.into());
        tokio::pin!(expiry);
        let write_timeout = Duration::from_secs(self.gw.config.ws.write_timeout_s);
        let mut batch = Batch::new();
        loop {
            let chunk = tokio::select! {
                biased;
                _ = chunks.closed() => return CloseReason::ClientGone,
                taken = self.conn.next_batch(&mut batch) => match taken {
                    Err(reason) => return reason,
                    Ok(()) => self.encode(&mut batch),
                },
                _ = ticks.tick() => Bytes::from_static(b":\n\n"),
                _ = &mut expiry => return CloseReason::TokenExpired,
            };
            // The body takes one chunk at a time: waiting here is the
            // socket not draining.
            tokio::select! {
                sent = chunks.send(chunk) => if sent.is_err() { return CloseReason::ClientGone },
                reason = self.conn.closed() => return reason,
                _ = tokio::time::sleep(write_timeout) => return CloseReason::SlowConsumer,
            }
        }
    }

    /// One chunk for every frame of the batch.
    fn encode(&mut self, batch: &mut Batch) -> Bytes {
        let mut out = Vec::with_capacity(batch.iter().map(|q| q.frame.len() + 64).sum());
        let events = batch.len() as u64;
        for queued in batch.drain(..) {
            let frame = queued.frame.as_str();
            let Ok(peek) = serde_json::from_str::<Peek<'_>>(frame) else {
                continue;
            };
            if let (Some(offset), Some(epoch)) = (peek.offset, peek.epoch.as_deref()) {
                self.positions.advance(&peek.room, offset, epoch);
            }
            let name = if peek.kind == "event" {
                peek.event.as_deref()
            } else {
                None
            };
            write_event(&mut out, name.unwrap_or(&peek.kind), &self.positions, frame.as_bytes());
        }
        if batch.capacity() > 256 {
            batch.shrink_to(16);
        }
        self.gw.hub.metrics().messages_delivered.increment(events);
        Bytes::from(out)
    }
}

/// The parts of an event frame the SSE event needs.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Cow<'a, str>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
}

/// `event:`, `id:` (the resume token, when the connection has durable
/// rooms) and `data:` — one `data:` line per line of the JSON, which SSE
/// joins back with newlines.
fn write_event(out: &mut Vec<u8>, name: &str, positions: &Positions, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    // Event names hold no control characters (PROTOCOL.md §2).
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    if !positions.is_empty() {
        out.extend_from_slice(b"id: ");
        positions.write_token(out);
        out.push(b'\n');
    }
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The one close path of an SSE connection: out of the hub, counted, its
/// rooms released on the broker.
pub async fn finish(gw: &Gateway, conn: &Connection, reason: CloseReason) {
    conn.close(reason.clone());
    Metrics::connection_closed(reason.label(), Transport::Sse);
    tracing::debug!(user_id = %conn.user_id, reason = reason.label(), "SSE stream closed");
    gw.remove(conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Position;
    use crate::room::RoomName;

    #[test]
    fn an_event_is_named_carries_the_resume_token_and_splits_lines() {
        let mut positions = Positions::default();
        let mut out = Vec::new();
        write_event(&mut out, "tick", &positions, br#"{"a":1}"#);
        assert_eq!(String::from_utf8_lossy(&out), "event: tick\ndata: {\"a\":1}\n\n");
        positions.set(
            &RoomName::new("user:42").unwrap(),
            &Position {
                offset: 3,
                epoch: Arc::from("e1"),
            },
        );
        out.clear();
        write_event(&mut out, "tick", &positions, b"{\"a\":\r\n1}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "event: tick\nid: user:42/3/e1\ndata: {\"a\":\ndata: 1}\n\n"
        );
    }
}
