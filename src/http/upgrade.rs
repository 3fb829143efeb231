//! `GET /v1/ws`: every check that can refuse a socket before the upgrade
//! (draining, broker down, origin, per-IP handshake rate, a bad header or
//! query token), then the 101 answer and the session task.
//!
//! The query token is read here and nowhere else; the request URI is never
//! logged, so the token cannot reach a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Body, admission, error};
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::protocol::{Since, parse_since};
use crate::session::{self, Credentials};

pub async fn handle(gw: Arc<Gateway>, mut req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    if !is_websocket_upgrade(&req) {
        Metrics::handshake_refused("not_websocket");
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "this endpoint speaks WebSocket (version 13) only",
        );
    }
    let slot = match admission::admit(&gw, &req, remote) {
        Ok(slot) => slot,
        Err(refusal) => return refusal,
    };
    let identity = match token_of(&req) {
        Ok(None) => None,
        Ok(Some(token)) => match gw.authenticate(&token).await {
            Ok(identity) => Some(identity),
            Err(e) => return unauthorized(&e),
        },
        Err(e) => return unauthorized(&e),
    };
    // With the token in the request, positions come with it too (`?since=`);
    // otherwise the auth frame carries them.
    let identity = match identity {
        None => None,
        Some(identity) => match since_of(&req) {
            Ok(since) => Some((identity, since)),
            Err(message) => {
                Metrics::handshake_refused("bad_request");
                return error(StatusCode::BAD_REQUEST, "bad_request", &message);
            }
        },
    };
    // A socket without a token will send it in its first frame; until then
    // it counts against limits.max_pending_auth.
    let credentials = match identity {
        Some((identity, since)) => Credentials::Verified(identity, since),
        None => match gw.reserve_pending_auth() {
            Some(pending) => Credentials::AuthFrame(pending),
            None => {
                Metrics::handshake_refused("pending_auth");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "too many sockets waiting for their auth frame: retry later",
                );
            }
        },
    };
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let session_gw = gw.clone();
    gw.shutdown.tracker().spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = session_gw.ws_config;
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                session::run(session_gw, ws, credentials, remote).await;
            }
            Err(e) => tracing::debug!(%remote, error = %e, "upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn unauthorized(e: &AuthError) -> Response<Body> {
    Metrics::auth_failure(e.reason());
    Metrics::handshake_refused("unauthorized");
    error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(CONNECTION, "upgrade")
        && has_token(UPGRADE, "websocket")
        && headers.get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13")
}

/// The token of the `Authorization: Bearer` header or of `?token=`, if any.
pub(crate) fn token_of(req: &Request<Incoming>) -> Result<Option<String>, AuthError> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        return Ok(Some(token.trim().to_string()));
    }
    let query = req.uri().query().unwrap_or("");
    Ok(form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned()))
}

/// The `?since=` query: URL-encoded JSON of `{"<room>":{"offset":N,"epoch":"…"}}`.
fn since_of(req: &Request<Incoming>) -> Result<Since, String> {
    let query = req.uri().query().unwrap_or("");
    match form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "since") {
        Some((_, value)) => parse_since(&value),
        None => Ok(Since::new()),
    }
}
