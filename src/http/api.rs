//! The server API under `/api/v1/` (docs/PROTOCOL.md §6), for backends and operators.
//!
//! Every request carries `Authorization: Bearer <api key>` (compared in
//! constant time). Success is `{"data":..,"meta":{..}}`; failure is
//! `{"error":{"code","message"}}`. Bodies are read with a size cap and
//! checked against their schema (unknown fields refused) before anything
//! happens.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{Body, error, json};
use crate::broker::Position;
use crate::gateway::{Gateway, PublishError};
use crate::idempotency;
use crate::metrics::Metrics;
use crate::protocol::{BackendEvent, MAX_EVENT_ID_LEN, encode_event, validate_data, validate_event_name};
use crate::room::RoomName;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request body must arrive within this: a client trickling bytes must
/// not hold a connection and its buffer forever.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most rooms one publish may target.
const MAX_PUBLISH_ROOMS: usize = 1000;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// A refusal: status, error code and a message for the caller.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "broker unavailable: retry later",
        )
    }

    fn into_response(self) -> Response<Body> {
        error(self.status, self.code, &self.message)
    }
}

type ApiResult = Result<Response<Body>, ApiError>;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let endpoint = endpoint_name(req.uri().path());
    let response = match authorize(&gw, &req) {
        Err(refusal) => refusal.into_response(),
        Ok(()) => dispatch(&gw, req).await.unwrap_or_else(ApiError::into_response),
    };
    Metrics::api_request(endpoint, response.status().as_u16());
    response
}

fn endpoint_name(path: &str) -> &'static str {
    match path {
        "/api/v1/publish" => "publish",
        "/api/v1/rooms" => "rooms",
        "/api/v1/connections" => "connections",
        "/api/v1/disconnect" => "disconnect",
        p if history_room(p).is_some() => "history",
        p if presence_room(p).is_some() => "presence",
        _ => "other",
    }
}

/// The room of `/api/v1/rooms/<room>/presence`.
fn presence_room(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/rooms/")?.strip_suffix("/presence")
}

/// The room of `/api/v1/rooms/<room>/history`.
fn history_room(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/rooms/")?.strip_suffix("/history")
}

fn authorize(gw: &Gateway, req: &Request<Incoming>) -> Result<(), ApiError> {
    if gw.config.api.keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the server API is disabled: no API keys are configured (WSGATE_API_KEYS)",
        ));
    }
    let key = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match key {
        Some(key) if gw.api_key_valid(key.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send Authorization: Bearer <key>",
        )),
    }
}

async fn dispatch(gw: &Arc<Gateway>, req: Request<Incoming>) -> ApiResult {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (method, path.as_str()) {
        (Method::POST, "/api/v1/publish") => {
            let key = idempotency_key_of(&req)?;
            publish(gw, read_json(req).await?, key).await
        }
        (Method::POST, "/api/v1/disconnect") => disconnect(gw, read_json(req).await?).await,
        (Method::GET, "/api/v1/rooms") => rooms(gw, &query),
        (Method::GET, "/api/v1/connections") => connections(gw, &query),
        (method, "/api/v1/openapi.json") => openapi(&method),
        (Method::GET, p) if history_room(p).is_some() => history(gw, history_room(p).unwrap_or(""), &query).await,
        (Method::GET, p) if presence_room(p).is_some() => presence(gw, presence_room(p).unwrap_or("")).await,
        (_, p) if history_room(p).is_some() || presence_room(p).is_some() => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )),
        (_, "/api/v1/publish" | "/api/v1/disconnect" | "/api/v1/rooms" | "/api/v1/connections") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such API endpoint",
        )),
    }
}

async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
    );
    let body: Bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "bad_request",
                format!("request body not received within {} s", BODY_READ_TIMEOUT.as_secs()),
            ));
        }
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        Ok(Err(error)) => return Err(ApiError::bad_request(format!("cannot read the request body: {error}"))),
    };
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    rooms: Vec<String>,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
}

/// The request's `Idempotency-Key`, checked.
fn idempotency_key_of(req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
    idempotency::validate_key(key).map_err(ApiError::bad_request)?;
    Ok(Some(key.to_string()))
}

async fn publish(gw: &Gateway, body: PublishRequest, idempotency_key: Option<String>) -> ApiResult {
    if body.rooms.is_empty() || body.rooms.len() > MAX_PUBLISH_ROOMS {
        return Err(ApiError::bad_request(format!(
            "'rooms' must hold 1-{MAX_PUBLISH_ROOMS} room names"
        )));
    }
    let rooms = body
        .rooms
        .iter()
        .map(|r| RoomName::new(r.as_str()).map_err(|e| ApiError::bad_request(format!("room '{r}': {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    validate_event_name(&body.event).map_err(ApiError::bad_request)?;
    if let Some(data) = &body.data {
        validate_data(data).map_err(ApiError::bad_request)?;
    }
    if body.id.as_ref().is_some_and(|id| id.len() > MAX_EVENT_ID_LEN) {
        return Err(ApiError::bad_request(format!(
            "'id' must be at most {MAX_EVENT_ID_LEN} bytes"
        )));
    }
    let event = BackendEvent {
        event: body.event.as_str().into(),
        data: body.data.as_deref(),
        id: body.id.as_deref().map(Into::into),
        from: None,
        skip: None,
    };
    // A retry of a keyed publish skips the rooms its first attempt reached.
    let reached = match &idempotency_key {
        Some(key) => gw.broker().idempotent_reached(key).await.map_err(|e| {
            tracing::warn!(error = %e, "API publish: cannot read its Idempotency-Key");
            ApiError::unavailable()
        })?,
        None => Default::default(),
    };
    let mut positions = serde_json::Map::new();
    let mut note = |room: &RoomName, position: &Option<Position>| {
        if let Some(position) = position {
            positions.insert(
                room.to_string(),
                json!({"offset": position.offset, "epoch": &*position.epoch}),
            );
        }
    };
    for room in &rooms {
        if let Some(first) = reached.get(room.as_str()) {
            note(room, first);
            continue;
        }
        match gw.publish(room, &event, "api").await {
            Ok(position) => {
                if let Some(key) = &idempotency_key
                    && let Err(e) = gw
                        .broker()
                        .idempotent_record(key, room.as_str(), position.as_ref())
                        .await
                {
                    // Published, but a retry would not know it: say so in
                    // the log, and answer for what happened.
                    tracing::warn!(%room, error = %e, "API publish: cannot record its Idempotency-Key");
                }
                note(room, &position);
            }
            // Checked before anything is sent: no room got it.
            Err(e @ PublishError::TooLarge { .. }) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "limit_exceeded",
                    e.to_string(),
                ));
            }
            Err(PublishError::Broker(e)) => {
                tracing::warn!(%room, error = %e, "API publish failed");
                return Err(ApiError::unavailable());
            }
        }
    }
    let mut data = json!({"rooms": rooms.len(), "event": body.event});
    if !positions.is_empty() {
        // Each durable room's new position: the event's offset and epoch.
        data["positions"] = serde_json::Value::Object(positions);
    }
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"data": data, "meta": {"node": gw.hub.node_id()}}),
    ))
}

/// `GET /api/v1/rooms/<room>/history?since=&limit=`: the kept events after
/// `since` (default 0), oldest first, at most `limit` (default 50).
async fn history(gw: &Gateway, room: &str, query: &str) -> ApiResult {
    let room = RoomName::new(room).map_err(|e| ApiError::bad_request(format!("room: {e}")))?;
    if !gw.is_durable(&room) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{room} keeps no history (its namespace is not in history.namespaces)"),
        ));
    }
    let pairs = parse_query(query);
    let since = match query_value(&pairs, "since") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("'since' must be an offset (an integer from 0)"))?,
    };
    let limit = page_of(&pairs)?.limit;
    let page = gw.broker().history(&room, since, limit, u64::MAX).await.map_err(|e| {
        tracing::warn!(%room, error = %e, "API history read failed");
        ApiError::unavailable()
    })?;
    if since > page.position.offset {
        return Err(ApiError::bad_request(format!(
            "'since' is ahead of {room}: its offset is {}",
            page.position.offset
        )));
    }
    let mut events = Vec::with_capacity(page.events.len());
    for (offset, payload) in &page.events {
        // Kept payloads were validated when published; skip any that is not.
        if let Ok(event) = BackendEvent::parse(payload) {
            let frame = encode_event(room.as_str(), &event, Some((*offset, &page.position.epoch)));
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(frame.as_str()) {
                events.push(value);
            }
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({
            "data": events,
            "meta": {"room": room.as_str(), "epoch": &*page.position.epoch, "offset": page.position.offset,
                     "since": since, "limit": limit, "node": gw.hub.node_id()},
        }),
    ))
}

/// `GET /api/v1/rooms/<room>/presence`: the room's users on every node,
/// by user id, with their connection counts.
async fn presence(gw: &Gateway, room: &str) -> ApiResult {
    let room = RoomName::new(room).map_err(|e| ApiError::bad_request(format!("room: {e}")))?;
    if !gw.presence.tracks(&room) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{room} has no presence (its namespace is not in presence.namespaces)"),
        ));
    }
    let users = gw.presence.list(&room).await.map_err(|e| {
        tracing::warn!(%room, error = %e, "API presence read failed");
        ApiError::unavailable()
    })?;
    let connections: u64 = users.iter().map(|u| u.connections).fold(0, u64::saturating_add);
    Ok(json(
        StatusCode::OK,
        &json!({
            "data": users,
            "meta": {"room": room.as_str(), "users": users.len(), "connections": connections, "scope": "cluster",
                     "ttl_s": gw.config.presence.ttl_s, "node": gw.hub.node_id()},
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: String,
    #[serde(default)]
    reason: Option<String>,
    /// Also refuse the user's tokens issued before now, on every node.
    #[serde(default)]
    revoke: bool,
}

async fn disconnect(gw: &Gateway, body: DisconnectRequest) -> ApiResult {
    if !RoomName::is_valid_id(&body.user) {
        return Err(ApiError::bad_request("'user' is not a valid user id"));
    }
    let reason = body.reason.unwrap_or_else(|| "disconnected by the server".into());
    if reason.len() > 100 {
        return Err(ApiError::bad_request("'reason' must be at most 100 bytes"));
    }
    if let Err(e) = gw.disconnect_user(&body.user, &reason, body.revoke).await {
        tracing::warn!(error = %e, "API disconnect failed");
        return Err(ApiError::unavailable());
    }
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"data": {"user": body.user, "revoked": body.revoke}, "meta": {"node": gw.hub.node_id()}}),
    ))
}

/// `?page=&limit=`, 1-based pages.
#[derive(Debug, PartialEq)]
struct Page {
    page: usize,
    limit: usize,
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn page_of(pairs: &[(String, String)]) -> Result<Page, ApiError> {
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match query_value(pairs, name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "'{name}' must be an integer from 1 to {max}"
                ))),
            },
        }
    };
    Ok(Page {
        page: number("page", 1, 1_000_000)?,
        limit: number("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    })
}

fn paginate<T: Serialize>(gw: &Gateway, items: Vec<T>, page: Page) -> Response<Body> {
    let total = items.len();
    let data: Vec<T> = items
        .into_iter()
        .skip((page.page - 1).saturating_mul(page.limit))
        .take(page.limit)
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "data": data,
            // Listings are of this node alone: `scope` says so, so that a
            // caller behind a load balancer does not take them for the cluster.
            "meta": {"page": page.page, "limit": page.limit, "total": total, "node": gw.hub.node_id(), "scope": "node"},
        }),
    )
}

fn rooms(gw: &Gateway, query: &str) -> ApiResult {
    let pairs = parse_query(query);
    let page = page_of(&pairs)?;
    let prefix = query_value(&pairs, "prefix").unwrap_or("");
    #[derive(Serialize)]
    struct Room {
        room: String,
        members: usize,
    }
    let items: Vec<Room> = gw
        .subscriptions
        .rooms(prefix)
        .into_iter()
        .map(|(room, members)| Room {
            room: room.to_string(),
            members,
        })
        .collect();
    Ok(paginate(gw, items, page))
}

fn connections(gw: &Gateway, query: &str) -> ApiResult {
    let pairs = parse_query(query);
    let page = page_of(&pairs)?;
    let Some(user) = query_value(&pairs, "user") else {
        return Err(ApiError::bad_request("'user' is required, e.g. ?user=42"));
    };
    #[derive(Serialize)]
    struct Conn {
        conn_id: String,
        user_id: String,
        rooms: Vec<String>,
        remote_addr: String,
        connected_at: u64,
    }
    let mut items: Vec<Conn> = gw
        .hub
        .user_connections(user)
        .iter()
        .map(|c| {
            let mut rooms: Vec<String> = c.rooms().iter().map(|r| r.to_string()).collect();
            rooms.sort();
            Conn {
                conn_id: gw.hub.external_id(c.id),
                user_id: c.user_id.to_string(),
                rooms,
                remote_addr: c.remote.to_string(),
                connected_at: c.connected_at,
            }
        })
        .collect();
    items.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
    Ok(paginate(gw, items, page))
}

/// `GET /api/v1/openapi.json`: the API's OpenAPI document, docs/openapi.json.
fn openapi(method: &Method) -> ApiResult {
    const DOCUMENT: &str = include_str!("../../docs/openapi.json");
    if *method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        ));
    }
    Ok(super::with_type(StatusCode::OK, "application/json", DOCUMENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        parse_query(q)
    }

    #[test]
    fn pages_default_and_validate() {
        assert_eq!(
            page_of(&pairs("")).unwrap(),
            Page {
                page: 1,
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(page_of(&pairs("page=3&limit=10")).unwrap(), Page { page: 3, limit: 10 });
        assert!(page_of(&pairs("page=0")).is_err());
        assert!(page_of(&pairs("limit=100000")).is_err());
        assert!(page_of(&pairs("limit=ten")).is_err());
    }
}
