//! One WebSocket connection, from the upgraded socket to the close frame, in
//! a single task: read client frames, write what the hub queued (in batches,
//! one flush each), send heartbeats, watch expiry and the drain signal.
//!
//! - [`commands`]: what each client command does.
//!
//! Every way out goes through [`Session::finish`], the one close path:
//! stop the queue, deregister, send the close frame, wait briefly for the
//! client's reply, then release the rooms on the broker.

mod commands;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

use crate::auth::{AuthError, Identity};
use crate::close::CloseReason;
use crate::gateway::Gateway;
use crate::hub::{Batch, Connection};
use crate::limits::{Strikes, TokenBucket};
use crate::metrics::Metrics;
use crate::protocol::{ClientFrame, Command, encode_welcome};

pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// How long a closing socket may take to send our close frame and answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// The window over which rate-limit refusals add up to a 4008 close.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Run a connection to its end. `identity` is set when the token came with
/// the upgrade request; otherwise the first frame must carry it.
pub async fn run(gw: Arc<Gateway>, ws: WsStream, identity: Option<Identity>, remote: SocketAddr) {
    // Opening (auth frame, registration, joins, welcome) and closing happen
    // once: they are boxed, so the future every socket holds for its whole
    // life carries only what serving needs.
    let Some((mut session, span)) = Box::pin(open(gw, ws, identity, remote)).await else {
        return;
    };
    async move {
        let reason = session.serve().await;
        Box::pin(session.finish(reason)).await;
    }
    .instrument(span)
    .await
}

/// Authenticate (if the upgrade carried no token), register, join the
/// token's rooms and welcome. None when the connection ended instead.
async fn open(
    gw: Arc<Gateway>,
    mut ws: WsStream,
    identity: Option<Identity>,
    remote: SocketAddr,
) -> Option<(Box<Session>, tracing::Span)> {
    let identity = match identity {
        Some(identity) => identity,
        None => match await_auth_frame(&gw, &mut ws).await {
            Ok(identity) => identity,
            Err(Refused::Gone) => return None,
            Err(Refused::Auth(error)) => {
                Metrics::auth_failure(error.reason());
                tracing::debug!(%remote, reason = error.reason(), "auth frame refused");
                let reason = CloseReason::Unauthorized(error.to_string());
                Metrics::connection_closed(reason.label());
                send_close(&mut ws, &reason).await;
                return None;
            }
        },
    };
    let conn = match gw.hub.register(identity.user_id.clone(), remote) {
        Ok(conn) => conn,
        Err(_) => {
            let reason = CloseReason::Policy("too many connections for this user".into());
            Metrics::connection_closed(reason.label());
            send_close(&mut ws, &reason).await;
            return None;
        }
    };
    if gw.shutdown.is_draining() {
        // Registered after the drain closed everyone: leave with them.
        conn.close(CloseReason::Draining);
    }
    let conn_id = gw.hub.external_id(conn.id);
    // A debug span: entered on every poll, it costs a few percent of the
    // fan-out at info level. Lines logged at info and above name conn_id and
    // user_id themselves.
    let span = tracing::debug_span!("session", conn_id = %conn_id, user_id = %identity.user_id);
    let now = Instant::now();
    let mut session = Box::new(Session {
        expires: instant_of_unix(identity.expires_at),
        bucket: TokenBucket::new(gw.config.limits.client_rate, gw.config.limits.client_burst, now),
        strikes: Strikes::new(gw.config.limits.client_max_violations, STRIKE_WINDOW, now),
        last_seen: now,
        next_ping: now + gw.heartbeat(),
        gw,
        conn,
        conn_id,
        identity,
        ws,
    });
    match session.start().instrument(span.clone()).await {
        Ok(()) => Some((session, span)),
        Err(reason) => {
            session.finish(reason).instrument(span).await;
            None
        }
    }
}

enum Refused {
    Auth(AuthError),
    /// The client left; nothing to answer.
    Gone,
}

/// Wait for `{"type":"auth","token":...}` within `auth_timeout`.
async fn await_auth_frame(gw: &Gateway, ws: &mut WsStream) -> Result<Identity, Refused> {
    let deadline = tokio::time::sleep(Duration::from_secs(gw.config.ws.auth_timeout_s));
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            _ = &mut deadline => return Err(Refused::Auth(AuthError::Timeout)),
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                Metrics::client_frame("auth");
                return match ClientFrame::parse(&text) {
                    Ok(ClientFrame {
                        command: Command::Auth { token },
                        ..
                    }) => gw.verifier.verify(&token).map_err(Refused::Auth),
                    _ => Err(Refused::Auth(AuthError::Missing)),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_) | Message::Frame(_))) => return Err(Refused::Auth(AuthError::Malformed)),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(Refused::Gone),
        }
    }
}

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
}

impl Session {
    /// Join the token's rooms, then welcome: the rooms are live first.
    async fn start(&mut self) -> Result<(), CloseReason> {
        let max_rooms = self.gw.config.limits.max_rooms_per_connection;
        let rooms: Vec<_> = self.identity.own_rooms().into_iter().take(max_rooms).collect();
        for room in &rooms {
            self.gw.join(&self.conn, room).await.map_err(|error| {
                tracing::warn!(conn_id = %self.conn_id, user_id = %self.identity.user_id, %room, %error, "cannot join a token room");
                CloseReason::Internal("broker unavailable: retry later".into())
            })?;
        }
        let welcome = encode_welcome(
            &self.conn_id,
            &self.identity.user_id,
            &rooms,
            self.identity.expires_at,
            self.gw.config.ws.heartbeat_s,
        );
        self.write_now(Message::Text(welcome)).await?;
        tracing::debug!(rooms = rooms.len(), "connected");
        Ok(())
    }

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

    /// Write one frame now (welcome, pings), bounded by the write timeout.
    async fn write_now(&mut self, message: Message) -> Result<(), CloseReason> {
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
    async fn write_batch(&mut self, batch: &mut Batch) -> Result<(), CloseReason> {
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

    /// The one close path.
    async fn finish(self: Box<Self>, reason: CloseReason) {
        let mut this = *self;
        this.conn.close(reason.clone());
        let rooms = this.gw.hub.unregister(&this.conn);
        Metrics::connection_closed(reason.label());
        match &reason {
            CloseReason::ClientGone => tracing::debug!("client left"),
            reason => tracing::debug!(code = reason.code(), reason = reason.label(), "closing"),
        }
        send_close(&mut this.ws, &reason).await;
        drop(this.ws);
        for room in &rooms {
            this.gw.subscriptions.release(room).await;
        }
    }
}

/// Send the close frame (if the peer may still read) and wait briefly for
/// its answer, so the client sees the code rather than a reset.
async fn send_close(ws: &mut WsStream, reason: &CloseReason) {
    if !reason.sends_frame() {
        // The client closed: tungstenite has queued the reply to its close
        // frame; flush it so the client sees a clean close, not a reset.
        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
        return;
    }
    let frame = CloseFrame {
        code: reason.code().into(),
        reason: reason.text().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The close reason of a failed read or write.
fn classify(error: WsError) -> CloseReason {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Capacity(_) => CloseReason::MessageTooBig,
        // The client dropped the TCP connection without a close frame.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseReason::ClientGone,
        WsError::Protocol(p) => CloseReason::Protocol(p.to_string()),
        WsError::Utf8(_) => CloseReason::Protocol("invalid UTF-8 in a text frame".into()),
        _ => CloseReason::ClientGone,
    }
}

/// The `Instant` of a Unix timestamp (in the past: now).
fn instant_of_unix(unix_s: u64) -> Instant {
    let target = UNIX_EPOCH + Duration::from_secs(unix_s);
    let now = Instant::now();
    match target.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}
