//! The checks every long-lived connection passes before it is accepted,
//! WebSocket (`/v1/ws`) and SSE (`/v1/sse`) alike: the node is not
//! draining, the broker is up, a socket slot is free, the `Origin` is
//! allowed and the address is within its handshake rate. Each refusal is
//! counted in `wsgate_handshakes_refused_total{reason}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN};
use hyper::{Request, Response, StatusCode};

use super::{Body, error};
use crate::gateway::{Gateway, SocketSlot};
use crate::metrics::Metrics;

/// The socket slot the connection holds for its life, or the refusal.
#[allow(clippy::result_large_err)]
pub fn admit(gw: &Arc<Gateway>, req: &Request<Incoming>, remote: SocketAddr) -> Result<SocketSlot, Response<Body>> {
    if gw.shutdown.is_draining() {
        Metrics::handshake_refused("draining");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is draining: connect to another node",
        ));
    }
    if !gw.broker().is_up() {
        Metrics::handshake_refused("broker_down");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "broker unavailable: retry later",
        ));
    }
    let Some(slot) = gw.reserve_socket() else {
        Metrics::handshake_refused("capacity");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node at capacity: connect to another node",
        ));
    };
    if let Some(origin) = req.headers().get(ORIGIN)
        && !origin_allowed(&gw.config.ws.allowed_origins, origin)
    {
        Metrics::handshake_refused("origin");
        return Err(error(StatusCode::FORBIDDEN, "forbidden", "origin not allowed"));
    }
    if let Some(limiter) = &gw.handshake_limiter
        && !limiter.allow(remote.ip(), Instant::now())
    {
        Metrics::handshake_refused("rate_limited");
        metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many handshakes from this address",
        ));
    }
    Ok(slot)
}

pub fn origin_allowed(allowed: &[String], origin: &HeaderValue) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(origin_allowed(&[], &v("https://evil.example")));
        let list = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&list, &v("https://app.example")));
        assert!(origin_allowed(&list, &v("HTTPS://APP.EXAMPLE")));
        assert!(!origin_allowed(&list, &v("https://evil.example")));
        assert!(!origin_allowed(&list, &v("https://app.example.evil.example")));
    }
}
