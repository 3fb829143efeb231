//! HTTP routing for the public and the internal listener, JSON responses and
//! the headers every response carries.
//!
//! - [`admission`]: the checks every WebSocket and SSE connection passes first.
//! - [`client_addr`]: the client's address, behind trusted proxies too.
//! - [`upgrade`]: `GET /v1/ws`, every check that happens before the upgrade.
//! - [`ops`]: `/health`, `/ready`, `/metrics`.
//! - [`api`]: the versioned server API under `/api/v1/`.
//! - [`assets`]: files embedded at build time, `/v1/client.js`.
//! - [`dev`]: the demo page `/` and `/dev/token`, dev config only.

pub mod admission;
pub mod api;
pub mod assets;
pub mod client_addr;
pub mod dev;
pub mod ops;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::gateway::Gateway;

/// Every response body: a whole one ([`with_type`]) or a stream (SSE).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which endpoints a listener serves (docs/PROTOCOL.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The only listener: everything.
    All,
    /// The public listener beside an internal one: no `/metrics`, no API.
    Public,
    /// The internal listener: `/metrics`, the API, `/health`, `/ready`.
    Internal,
}

impl Surface {
    fn serves(self, path: &str) -> bool {
        let internal_only = path == "/metrics" || path == "/api/v1" || path.starts_with("/api/v1/");
        match self {
            Surface::All => true,
            Surface::Public => !internal_only,
            Surface::Internal => internal_only || path == "/health" || path == "/ready",
        }
    }
}

/// Route one request. Never fails: every error is a response.
pub async fn route(gw: Arc<Gateway>, req: Request<Incoming>, remote: SocketAddr, surface: Surface) -> Response<Body> {
    let path = req.uri().path();
    if !surface.serves(path) {
        let message = match surface {
            Surface::Public => "no such endpoint on this listener: metrics and the API are on the internal listener",
            _ => "no such endpoint on the internal listener",
        };
        return with_common_headers(error(StatusCode::NOT_FOUND, "not_found", message));
    }
    let remote = client_addr::resolve(remote, req.headers(), &gw.trusted_proxies);
    let response = match (req.method(), path) {
        (&Method::GET, "/v1/ws") => upgrade::handle(gw, req, remote).await,
        (&Method::GET, "/v1/sse") => crate::sse::handle(gw, req, remote).await,
        (&Method::GET, "/health") => ops::health(),
        (&Method::GET, "/ready") => ops::ready(&gw),
        (&Method::GET, "/metrics") => ops::metrics(&gw),
        (&Method::GET, "/v1/client.js") => assets::CLIENT_JS.serve(req.headers()),
        (&Method::GET, "/") => dev::demo_page(&gw, &req),
        (&Method::GET, "/dev/token") => dev::token(&gw, &req),
        (_, p) if p.starts_with("/api/v1/") || p == "/api/v1" => api::handle(gw, req).await,
        (_, "/v1/ws" | "/v1/sse" | "/health" | "/ready" | "/metrics" | "/v1/client.js") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    with_common_headers(response)
}

fn with_common_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", body),
        Err(_) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            br#"{"error":{"code":"internal","message":"cannot encode the response"}}"#.to_vec(),
        ),
    }
}

/// `{"error":{"code":..,"message":..}}` with a status.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
