//! Routes that exist only on the dev config (`jwt.dev_secret`, loopback
//! only): the demo page at `GET /` and `GET /dev/token`, which mints a token
//! with the dev secret so the page needs no backend. Any other config
//! answers 404 to both (PROTOCOL.md §11).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{Body, assets, error, json};
use crate::auth::{Signer, TokenRequest};
use crate::gateway::Gateway;

/// Longest lifetime `/dev/token` mints; a short `ttl` shows token refresh.
const MAX_DEV_TTL_S: u64 = 86_400;
const DEFAULT_DEV_TTL_S: u64 = 3_600;

pub fn demo_page(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    if !gw.config.is_dev() {
        return not_found();
    }
    assets::DEMO_PAGE.serve(req.headers())
}

/// `GET /dev/token?sub=42&org=acme&role=support&role=viewer&ttl=3600`
/// → `{"token":"…","expires_in":3600}`. `role` may repeat or hold a
/// comma-separated list.
pub fn token(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let Some(secret) = gw.config.jwt.dev_secret.as_ref().filter(|_| gw.config.is_dev()) else {
        return not_found();
    };
    let mut request = TokenRequest {
        ttl_s: DEFAULT_DEV_TTL_S,
        issuer: gw.config.jwt.issuer.first().cloned(),
        audience: gw.config.jwt.audience.first().cloned(),
        ..TokenRequest::default()
    };
    for (name, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*name {
            "sub" => request.sub = value.into_owned(),
            "org" if !value.is_empty() => request.org = Some(value.into_owned()),
            "role" => request.roles.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(String::from),
            ),
            "ttl" => match value.parse::<u64>() {
                Ok(ttl) if (1..=MAX_DEV_TTL_S).contains(&ttl) => request.ttl_s = ttl,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("ttl must be a number of seconds from 1 to {MAX_DEV_TTL_S}"),
                    );
                }
            },
            _ => {}
        }
    }
    if request.sub.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "sub is required");
    }
    let signed = Signer::hs256(secret.expose(), gw.config.jwt.claims.clone()).and_then(|s| s.sign(&request));
    match signed {
        Ok(token) => json(
            StatusCode::OK,
            &serde_json::json!({"token": token, "expires_in": request.ttl_s}),
        ),
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &message),
    }
}

fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
