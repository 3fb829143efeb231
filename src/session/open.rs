//! Opening a connection: the auth frame (when the upgrade carried no token),
//! registration, the token's rooms — resumed from the client's positions
//! where it gave them — and the welcome, sent only once every room is live.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::close::{classify, send_close};
use super::{STRIKE_WINDOW, Session, WsStream, instant_of_unix};
use crate::auth::{AuthError, Identity};
use crate::close::CloseReason;
use crate::gateway::{Gateway, JoinError, SocketSlot};
use crate::hub::Transport;
use crate::limits::{Strikes, TokenBucket};
use crate::metrics::Metrics;
use crate::protocol::{ClientFrame, Command, ErrorCode, Joined, Since, WelcomeInfo, encode_welcome};

/// How a socket authenticates.
pub enum Credentials {
    /// The token came with the upgrade request (and `since` from its query).
    Verified(Identity, Since),
    /// The first frame must carry both; the slot counts the socket against
    /// `limits.max_pending_auth` until it has.
    AuthFrame(SocketSlot),
}

/// Run a connection to its end.
pub async fn run(gw: Arc<Gateway>, ws: WsStream, credentials: Credentials, remote: SocketAddr) {
    // Opening (auth frame, registration, joins, welcome) and closing happen
    // once: they are boxed, so the future every socket holds for its whole
    // life carries only what serving needs.
    let Some((mut session, span)) = Box::pin(open(gw, ws, credentials, remote)).await else {
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
    credentials: Credentials,
    remote: SocketAddr,
) -> Option<(Box<Session>, tracing::Span)> {
    let (identity, since) = match credentials {
        Credentials::Verified(identity, since) => (identity, since),
        // The pending slot is given back once the frame is read, either way.
        Credentials::AuthFrame(_pending) => match await_auth_frame(&gw, &mut ws).await {
            Ok(identity) => identity,
            Err(refused) => {
                let reason = match refused {
                    Refused::Auth(error) => {
                        Metrics::auth_failure(error.reason());
                        tracing::debug!(%remote, reason = error.reason(), "auth frame refused");
                        CloseReason::Unauthorized(error.to_string())
                    }
                    Refused::Invalid(message) => {
                        Metrics::auth_failure("malformed");
                        tracing::debug!(%remote, %message, "auth frame refused");
                        CloseReason::Unauthorized(message)
                    }
                    Refused::Closed(reason) => reason,
                };
                // The client's own close is answered (send_close echoes it)
                // but, as after auth, not counted as a refusal.
                if reason != CloseReason::ClientGone {
                    Metrics::connection_closed(reason.label(), Transport::WebSocket);
                }
                send_close(&mut ws, &reason).await;
                return None;
            }
        },
    };
    let conn = match gw.hub.register(identity.user_id.clone(), remote, Transport::WebSocket) {
        Ok(conn) => conn,
        Err(_) => {
            let reason = CloseReason::Policy("too many connections for this user".into());
            Metrics::connection_closed(reason.label(), Transport::WebSocket);
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
        publisher: Default::default(),
        gw,
        conn,
        conn_id,
        identity,
        ws,
    });
    match session.start(since).instrument(span.clone()).await {
        Ok(()) => Some((session, span)),
        Err(reason) => {
            session.finish(reason).instrument(span).await;
            None
        }
    }
}

enum Refused {
    Auth(AuthError),
    /// A first frame that is not a well-formed auth frame: what is wrong.
    Invalid(String),
    /// The socket ended before auth: the client closed (answered with its
    /// own close), or sent what the WebSocket layer refuses (an oversized
    /// frame: 1009, invalid UTF-8 or a protocol violation: 1002).
    Closed(CloseReason),
}

/// Wait for `{"type":"auth","token":...,"since":...}` within `auth_timeout`.
async fn await_auth_frame(gw: &Gateway, ws: &mut WsStream) -> Result<(Identity, Since), Refused> {
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
                        command: Command::Auth { token, since },
                        ..
                    }) => {
                        // Verifying (a key-set refetch, at worst) counts
                        // against the auth timeout too.
                        match tokio::time::timeout_at(deadline.deadline(), gw.authenticate(&token)).await {
                            Ok(verified) => verified.map(|id| (id, since)).map_err(Refused::Auth),
                            Err(_) => Err(Refused::Auth(AuthError::Timeout)),
                        }
                    }
                    Ok(frame) => Err(Refused::Invalid(format!(
                        "the first frame must be auth, not {}",
                        frame.command.kind()
                    ))),
                    Err(error) => Err(Refused::Invalid(format!("invalid auth frame: {}", error.message))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_) | Message::Frame(_))) => {
                return Err(Refused::Invalid(
                    "the first frame must be a JSON text auth frame".into(),
                ));
            }
            Some(Ok(Message::Close(_))) | None => return Err(Refused::Closed(CloseReason::ClientGone)),
            Some(Err(error)) => return Err(Refused::Closed(classify(error))),
        }
    }
}

impl Session {
    /// Join the token's rooms, resuming each from `since` where given, then
    /// welcome: the rooms are live first. The missed events are queued
    /// behind the welcome. (Positions of rooms outside the token's are
    /// ignored: those are resumed with `subscribe`.)
    pub(super) async fn start(&mut self, since: Since) -> Result<(), CloseReason> {
        let max_rooms = self.gw.config.limits.max_rooms_per_connection;
        let rooms: Vec<_> = self.identity.own_rooms().into_iter().take(max_rooms).collect();
        let mut durable = Vec::new();
        for room in &rooms {
            let joined = match self.gw.join(&self.conn, room, since.get(room), |_| None).await {
                Err(JoinError::Ahead(position)) => {
                    self.reply_error(
                        None,
                        ErrorCode::BadRequest,
                        &format!(
                            "'since' for {room} is ahead of the room (its offset is {}): not resumed",
                            position.offset
                        ),
                    );
                    self.gw.join(&self.conn, room, None, |_| None).await.map(|joined| {
                        joined.map(|j| Joined {
                            recovered: Some(false),
                            ..j
                        })
                    })
                }
                other => other,
            };
            match joined {
                Ok(Some(joined)) => durable.push((room.clone(), joined)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(conn_id = %self.conn_id, user_id = %self.identity.user_id, %room, %error, "cannot join a token room");
                    return Err(CloseReason::Internal("broker unavailable: retry later".into()));
                }
            }
        }
        let welcome = encode_welcome(&WelcomeInfo {
            conn_id: &self.conn_id,
            user_id: &self.identity.user_id,
            rooms: &rooms,
            expires_at: self.identity.expires_at,
            heartbeat_s: self.gw.config.ws.heartbeat_s,
            durable: &durable,
        });
        self.write_now(Message::Text(welcome)).await?;
        tracing::debug!(rooms = rooms.len(), "connected");
        Ok(())
    }
}
