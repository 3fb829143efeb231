//! Operator endpoints: liveness, readiness, Prometheus metrics.

use hyper::{Response, StatusCode};

use super::{Body, json, with_type};
use crate::gateway::Gateway;

/// 200 while the process serves.
pub fn health() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// 200 when the broker is up, the node is not draining and it has keys to
/// verify tokens with (a `jwt.jwks_url` set loaded once), else 503.
pub fn ready(gw: &Gateway) -> Response<Body> {
    let broker_up = gw.broker().is_up();
    let draining = gw.shutdown.is_draining();
    let keys_loaded = gw.verifier.has_keys();
    let status = if broker_up && !draining && keys_loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "broker": gw.broker().kind(),
            "broker_up": broker_up,
            "draining": draining,
            "keys_loaded": keys_loaded,
        }),
    )
}

/// Prometheus text exposition.
pub fn metrics(gw: &Gateway) -> Response<Body> {
    gw.hub.metrics().messages_delivered.publish();
    metrics::gauge!(crate::metrics::QUEUED_BYTES).set(gw.hub.queued_bytes() as f64);
    let text = gw.prometheus.as_ref().map(crate::metrics::render).unwrap_or_default();
    with_type(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
}
