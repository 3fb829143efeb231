//! One WebSocket connection, from the upgraded socket to the close frame, in
//! a single task: read client frames, write what the hub queued (in batches,
//! one flush each), send heartbeats, watch expiry and the drain signal.
//!
//! - [`open`]: the auth frame, registration, the token's rooms (resumed from
//!   the client's positions) and the welcome;
//! - [`commands`]: what each client command does;
//! - [`publisher`]: client publishes, off the loop, in order;
//! - [`writer`]: writing frames and batches to the socket;
//! - [`close`]: the close path of a registered connection,
//!   [`Session::finish`]: stop the queue, deregister, send the close frame,
//!   wait briefly for the client's reply, then release the rooms on the
//!   broker. A socket refused before it was registered (in [`open`]) has
//!   nothing to undo and only gets its close frame.

mod close;
mod commands;
mod open;
mod publisher;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::auth::Identity;
use crate::close::CloseReason;
use crate::gateway::Gateway;
use crate::hub::{Batch, Connection};
use crate::limits::{Strikes, TokenBucket};
use crate::metrics::Metrics;
use close::classify;
pub use open::{Credentials, run};

pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// The window over which rate-limit refusals add up to a 4008 close.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

struct Session {
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    conn_id: String,
    identity: Identity,
    ws: WsStream,
    /// When the token expires (moved by `refresh`).
    expires: Instant,
    bucket: TokenBucket,
    strikes: Strikes,
    last_seen: Instant,
    next_ping: Instant,
    /// Client publishes, handed to their own task.
    publisher: publisher::Publisher,
}

impl Session {
    /// The loop: frames in, events out, timers. (Draining closes the socket
    /// through its queue, like any other close request: see `server`.)
    async fn serve(&mut self) -> CloseReason {
        let mut batch = Batch::new();
        let timer = tokio::time::sleep_until(self.next_deadline().into());
        tokio::pin!(timer);
        let mut armed_for = self.next_deadline();
        loop {
            tokio::select! {
                // Fixed order: reads first (rarely ready, and a client's pongs
                // must not wait behind a stream of events), then writes.
                biased;
                inbound = self.ws.next() => {
                    let message = match inbound {
                        None => return CloseReason::ClientGone,
                        Some(Err(error)) => return classify(error),
                        Some(Ok(message)) => message,
                    };
                    self.last_seen = Instant::now();
                    // Commands are rare next to idle time: their state is boxed.
                    if let Some(reason) = Box::pin(self.on_message(message)).await {
                        return reason;
                    }
                }
                taken = self.conn.next_batch(&mut batch) => {
                    if let Err(reason) = taken {
                        return reason;
                    }
                    if let Err(reason) = self.write_batch(&mut batch).await {
                        return reason;
                    }
                }
                _ = &mut timer => {
                    if let Some(reason) = Box::pin(self.on_timer()).await {
                        return reason;
                    }
                    // The timer has fired: re-arm it even if nothing moved the
                    // deadline, or a finished timer would spin the loop.
                    timer.as_mut().reset(self.next_deadline().max(Instant::now() + Duration::from_millis(1)).into());
                    armed_for = self.next_deadline();
                    continue;
                }
            }
            let deadline = self.next_deadline();
            if deadline != armed_for {
                timer.as_mut().reset(deadline.into());
                armed_for = deadline;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        self.next_ping.min(self.expires)
    }

    async fn on_timer(&mut self) -> Option<CloseReason> {
        let now = Instant::now();
        if now >= self.expires {
            return Some(CloseReason::TokenExpired);
        }
        if now >= self.next_ping {
            let heartbeat = self.gw.heartbeat();
            if now.saturating_duration_since(self.last_seen) >= heartbeat * 2 {
                return Some(CloseReason::HeartbeatTimeout);
            }
            self.next_ping = now + heartbeat;
            if let Err(reason) = self.write_now(Message::Ping(Default::default())).await {
                return Some(reason);
            }
        }
        None
    }

    async fn on_message(&mut self, message: Message) -> Option<CloseReason> {
        let now = Instant::now();
        if !self.bucket.try_take(now) {
            self.gw.hub.metrics().rate_limited.increment(1);
            if self.strikes.strike(now) {
                return Some(CloseReason::RateLimited);
            }
            if matches!(message, Message::Text(_) | Message::Binary(_)) {
                self.reply_error(
                    None,
                    crate::protocol::ErrorCode::RateLimited,
                    "rate limit exceeded: slow down",
                );
            }
            return None;
        }
        match message {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => {
                Metrics::client_frame("binary");
                self.reply_error(
                    None,
                    crate::protocol::ErrorCode::BadRequest,
                    "binary frames are not supported: send JSON text",
                );
                None
            }
            Message::Close(_) => Some(CloseReason::ClientGone),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// Queue a reply behind whatever is already queued for this socket.
    fn reply(&self, frame: Utf8Bytes) {
        // Replies share the queue's byte budget: a client that sends
        // commands but never reads ends as a slow consumer.
        if let crate::hub::Pushed::Overflowed(dropped) = self.conn.push(frame, None) {
            self.gw.hub.metrics().dropped_slow_consumer.increment(dropped);
        }
    }
}

/// The `Instant` of a Unix timestamp (in the past: now). Checked: a moment
/// past what `Instant` can hold (tokens are refused beyond year 9999, so
/// only a strange clock gets here) is taken as a century from now.
pub(crate) fn instant_of_unix(unix_s: u64) -> Instant {
    let now = Instant::now();
    let ahead = UNIX_EPOCH
        .checked_add(Duration::from_secs(unix_s))
        .and_then(|target| target.duration_since(SystemTime::now()).ok());
    match ahead {
        Some(ahead) => now
            .checked_add(ahead)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now),
        None => now,
    }
}

/// Where an unrepresentable expiry lands.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_arithmetic_never_panics() {
        let now = Instant::now();
        assert!(instant_of_unix(0) <= Instant::now());
        assert!(instant_of_unix(crate::auth::MAX_EXP) > now);
        assert!(instant_of_unix(u64::MAX) >= now);
        assert!(instant_of_unix(1 << 63) >= now);
    }
}
