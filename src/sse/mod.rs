//! `GET /v1/sse`: Server-Sent Events for clients that only listen
//! (PROTOCOL.md §11). A connection is registered in the hub like a
//! WebSocket one — the same rooms, the same byte-capped queue, the same
//! per-user limit and drain — and only its writer differs: [`stream`] turns
//! the queue into SSE chunks.
//!
//! - [`resume`]: the `id:` of each event, read back from `Last-Event-ID`;
//! - [`stream`]: the pump from the connection's queue to the response body,
//!   heartbeats, expiry, and the one close path.

pub mod resume;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::auth::{AuthError, Identity};
use crate::close::CloseReason;
use crate::gateway::{Gateway, JoinError};
use crate::http::upgrade::token_of;
use crate::http::{Body, admission, error};
use crate::hub::{Connection, Transport};
use crate::metrics::Metrics;
use crate::permissions::Action;
use crate::protocol::{Joined, Since, WelcomeInfo, encode_welcome};
use crate::room::RoomName;
use resume::Positions;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let slot = match admission::admit(&gw, &req, remote) {
        Ok(slot) => slot,
        Err(refusal) => return retry_later(refusal),
    };
    let identity = match token_of(&req).and_then(|token| token.ok_or(AuthError::Missing)) {
        Ok(token) => match gw.authenticate(&token).await {
            Ok(identity) => identity,
            Err(e) => return unauthorized(&e),
        },
        Err(e) => return unauthorized(&e),
    };
    let rooms = match rooms_of(&gw, &req, &identity) {
        Ok(rooms) => rooms,
        Err(refusal) => return refusal,
    };
    let since = match since_of(&req) {
        Ok(since) => since,
        Err(message) => {
            Metrics::handshake_refused("bad_request");
            return error(StatusCode::BAD_REQUEST, "bad_request", &message);
        }
    };
    let Ok(conn) = gw.hub.register(identity.user_id.clone(), remote, Transport::Sse) else {
        Metrics::connection_closed("policy", Transport::Sse);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_exceeded",
            "too many connections for this user",
        );
    };
    if gw.shutdown.is_draining() {
        conn.close(CloseReason::Draining);
    }
    let (positions, welcome) = match join_all(&gw, &conn, &identity, &rooms, &since).await {
        Ok(joined) => joined,
        Err(reason) => {
            let message = reason.text().to_string();
            stream::finish(&gw, &conn, reason).await;
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
        }
    };
    event_stream(stream::spawn(gw, conn, slot, identity.expires_at, positions, welcome))
}

fn event_stream(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // The stream ends only when the connection should go (a drain, a slow
    // reader): its reconnect must open a new TCP connection, which a load
    // balancer can send to another node, not reuse this one.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An `EventSource` gives up for good on any status but 200, so a refusal
/// that means "not here, not now" (503: draining, broker down, at capacity;
/// 429: handshake rate) is answered with an empty stream that tells it when
/// to come back: `retry:` 1–5 s, jittered. Other refusals stand.
fn retry_later(refusal: Response<Body>) -> Response<Body> {
    let status = refusal.status();
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return refusal;
    }
    let retry_ms = fastrand::u64(1_000..=5_000);
    let reason = status.canonical_reason().unwrap_or("unavailable");
    let body = format!("retry: {retry_ms}\n: {} {reason}: retry later\n\n", status.as_u16());
    event_stream(http_body_util::BodyExt::boxed_unsync(http_body_util::Full::new(
        bytes::Bytes::from(body),
    )))
}

/// The token's own rooms, then those of `?rooms=a,b`, each permission-checked
/// as a `subscribe` would be.
#[allow(clippy::result_large_err)]
fn rooms_of(gw: &Gateway, req: &Request<Incoming>, identity: &Identity) -> Result<Vec<RoomName>, Response<Body>> {
    let mut rooms = identity.own_rooms();
    let query = req.uri().query().unwrap_or("");
    let asked = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "rooms")
        .map(|(_, value)| value.into_owned())
        .collect::<Vec<_>>();
    for name in asked
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let room = RoomName::new(name).map_err(|e| {
            Metrics::handshake_refused("bad_request");
            error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())
        })?;
        if rooms.contains(&room) {
            continue;
        }
        if !gw.permissions.allows(identity, &room, Action::Read) {
            Metrics::handshake_refused("forbidden");
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("not allowed to subscribe to {room}"),
            ));
        }
        rooms.push(room);
    }
    let max = gw.config.limits.max_rooms_per_connection;
    if rooms.len() > max {
        Metrics::handshake_refused("bad_request");
        return Err(error(
            StatusCode::BAD_REQUEST,
            "limit_exceeded",
            &format!("at most {max} rooms per connection"),
        ));
    }
    Ok(rooms)
}

/// Positions to resume from: `Last-Event-ID` (what a reconnecting
/// `EventSource` sends), else `?last_event_id=` for clients that cannot set
/// headers.
fn since_of(req: &Request<Incoming>) -> Result<Since, String> {
    if let Some(value) = req.headers().get("last-event-id") {
        let value = value.to_str().map_err(|_| "Last-Event-ID is not ASCII".to_string())?;
        return resume::parse(value);
    }
    let query = req.uri().query().unwrap_or("");
    match form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "last_event_id") {
        Some((_, value)) => resume::parse(&value),
        None => Ok(Since::new()),
    }
}

/// Join every room (resuming the durable ones from `since`), then build the
/// welcome. The missed events are queued as the joins go; the welcome is
/// written before them.
async fn join_all(
    gw: &Gateway,
    conn: &Arc<Connection>,
    identity: &Identity,
    rooms: &[RoomName],
    since: &Since,
) -> Result<(Positions, bytes::Bytes), CloseReason> {
    let mut durable: Vec<(RoomName, Joined)> = Vec::new();
    let mut positions = Positions::default();
    for room in rooms {
        let resume_from = since.get(room).filter(|_| gw.is_durable(room));
        let joined = match gw.join(conn, room, resume_from, |_| None).await {
            // A position ahead of the room (e.g. Redis restored from an
            // older snapshot): join afresh and say it did not recover.
            Err(JoinError::Ahead(_)) => gw.join(conn, room, None, |_| None).await.map(|joined| {
                joined.map(|j| Joined {
                    recovered: Some(false),
                    ..j
                })
            }),
            other => other,
        };
        match joined {
            Ok(Some(joined)) => {
                // Recovered: the client stands at its own position until the
                // missed events (already queued) move it.
                match (joined.recovered, resume_from) {
                    (Some(true), Some(from)) => positions.set(room, from),
                    _ => positions.set(room, &joined.position),
                }
                durable.push((room.clone(), joined));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(user_id = %identity.user_id, %room, %error, "cannot join a room of an SSE stream");
                return Err(CloseReason::Internal("broker unavailable: retry later".into()));
            }
        }
    }
    let welcome = encode_welcome(&WelcomeInfo {
        conn_id: &gw.hub.external_id(conn.id),
        user_id: &identity.user_id,
        rooms,
        expires_at: identity.expires_at,
        heartbeat_s: gw.config.ws.heartbeat_s,
        durable: &durable,
    });
    Ok((positions, bytes::Bytes::from(welcome)))
}

fn unauthorized(e: &AuthError) -> Response<Body> {
    Metrics::auth_failure(e.reason());
    Metrics::handshake_refused("unauthorized");
    error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())
}
