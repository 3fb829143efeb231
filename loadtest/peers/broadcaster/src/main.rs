//! The bare broadcaster: the ceiling for this stack (tokio + tungstenite +
//! fred), which wsgate's fast path is held to.
//!
//! It authenticates each socket (HS256 JWT from `?token=`), joins it to
//! `user:<sub>`, `org:<org_id>` and `role:<r>`, sends a welcome frame, and
//! fans out every Redis message on `gw:<room>` to the room's sockets: each
//! event is encoded once into `Utf8Bytes` and every socket gets a refcounted
//! clone; a socket task feeds everything queued and flushes once. No refresh,
//! no permissions, no metrics, no heartbeats, no backpressure.
//!
//! Env: `LISTEN` (default 127.0.0.1:9001), `REDIS_URL` (default
//! redis://127.0.0.1:6379), `JWT_SECRET` (required).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::prelude::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const PREFIX: &str = "gw:";
/// tungstenite read and write buffers: small, so idle sockets stay cheap.
const BUFFER: usize = 4 * 1024;
/// Frames taken from a socket's queue per write round.
const BATCH: usize = 256;

type Member = (u64, UnboundedSender<Utf8Bytes>);
type Rooms = RwLock<HashMap<String, Vec<Member>>>;

struct Auth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: Value,
    #[serde(default)]
    org_id: Value,
    #[serde(default)]
    roles: Vec<Value>,
    exp: u64,
}

/// Serialised in this field order: `{"type":"welcome",...}`.
#[derive(Serialize)]
struct Welcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conn_id: String,
    user_id: &'a str,
    rooms: &'a [String],
    expires_at: u64,
    heartbeat_s: u32,
}

struct Identity {
    user_id: String,
    rooms: Vec<String>,
    expires_at: u64,
}

/// A claim used as an id: a non-empty string or a number.
fn claim_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Auth {
    fn verify(&self, token: &str) -> Result<Identity, String> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| e.to_string())?
            .claims;
        let user_id = claim_id(&claims.sub).ok_or("invalid claim sub")?;
        let mut rooms = vec![format!("user:{user_id}")];
        if !claims.org_id.is_null() {
            rooms.push(format!(
                "org:{}",
                claim_id(&claims.org_id).ok_or("invalid claim org_id")?
            ));
        }
        for role in &claims.roles {
            let room = format!("role:{}", claim_id(role).ok_or("invalid claim roles")?);
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
        Ok(Identity {
            user_id,
            rooms,
            expires_at: claims.exp,
        })
    }
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

fn unauthorized(message: &str) -> ErrorResponse {
    let body = serde_json::json!({"error": {"code": "unauthorized", "message": message}}).to_string();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// One socket: handshake with auth, join, welcome, then write what arrives.
async fn serve(stream: TcpStream, conn_id: u64, auth: Arc<Auth>, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut identity = None;
    // The callback's shape (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let token = query_token(request.uri().query()).ok_or_else(|| "missing token".to_owned());
        match token.and_then(|token| auth.verify(token)) {
            Ok(verified) => {
                identity = Some(verified);
                Ok(response)
            }
            Err(message) => Err(unauthorized(&message)),
        }
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(BUFFER)
        .write_buffer_size(BUFFER);
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    let Some(identity) = identity else { return };

    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut map = rooms.write().unwrap_or_else(|p| p.into_inner());
        for room in &identity.rooms {
            map.entry(room.clone()).or_default().push((conn_id, tx.clone()));
        }
    }
    drop(tx);
    let welcome = serde_json::to_string(&Welcome {
        kind: "welcome",
        conn_id: conn_id.to_string(),
        user_id: &identity.user_id,
        rooms: &identity.rooms,
        expires_at: identity.expires_at,
        heartbeat_s: 25,
    })
    .unwrap_or_default();
    if ws.send(Message::text(welcome)).await.is_ok() {
        pump(&mut ws, &mut rx).await;
    }

    let mut map = rooms.write().unwrap_or_else(|p| p.into_inner());
    for room in &identity.rooms {
        if let Some(members) = map.get_mut(room) {
            if let Some(i) = members.iter().position(|(id, _)| *id == conn_id) {
                members.swap_remove(i);
            }
            if members.is_empty() {
                map.remove(room);
            }
        }
    }
}

/// Write queued frames (all of them, one flush) and read until the client goes.
async fn pump(ws: &mut WebSocketStream<TcpStream>, rx: &mut UnboundedReceiver<Utf8Bytes>) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                for frame in batch.drain(..) {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) => {
                    let _ = ws.flush().await; // sends the queued close reply
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// `{"event":..,"data":..}` → the client frame, encoded once. `data` is
/// copied as published; an event that is not a JSON string is dropped.
fn encode(room: &str, payload: &[u8]) -> Option<Utf8Bytes> {
    let payload: Payload = serde_json::from_slice(payload).ok()?;
    let event = payload.event.get();
    if !event.starts_with('"') {
        return None;
    }
    let data = payload.data.map_or("null", RawValue::get);
    let room = serde_json::to_string(room).ok()?;
    let mut frame = String::with_capacity(48 + room.len() + event.len() + data.len());
    frame.push_str(r#"{"type":"event","room":"#);
    frame.push_str(&room);
    frame.push_str(r#","event":"#);
    frame.push_str(event);
    frame.push_str(r#","data":"#);
    frame.push_str(data);
    frame.push('}');
    Some(frame.into())
}

/// Every message on `gw:*`: encode once, clone to every member of the room.
async fn dispatch(mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>, rooms: Arc<Rooms>) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(RecvError::Lagged(lost)) => {
                eprintln!("redis reader fell behind: {lost} events lost");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(room) = message.channel.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(frame) = message.value.as_bytes().and_then(|payload| encode(room, payload)) else {
            continue;
        };
        let map = rooms.read().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = map.get(room) {
            for (_, tx) in members {
                let _ = tx.send(frame.clone());
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secret = std::env::var("JWT_SECRET").map_err(|_| "JWT_SECRET is required")?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let auth = Arc::new(Auth {
        key: DecodingKey::from_secret(secret.as_bytes())?,
        validation,
    });
    let rooms: Arc<Rooms> = Arc::default();

    let redis = Builder::from_config(Config::from_url(&redis_url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build()?;
    tokio::spawn(dispatch(redis.message_rx(), rooms.clone()));
    let mut reconnects = redis.reconnect_rx();
    redis.init().await?;
    redis.psubscribe(format!("{PREFIX}*")).await?;
    let resubscriber = redis.clone();
    tokio::spawn(async move {
        // A plain client forgets its subscriptions on reconnect.
        while let Ok(_) | Err(RecvError::Lagged(_)) = reconnects.recv().await {
            if let Err(e) = resubscriber.psubscribe(format!("{PREFIX}*")).await {
                eprintln!("psubscribe after reconnect failed: {e}");
            }
        }
    });

    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    tokio::spawn(serve(stream, next_id, auth.clone(), rooms.clone()));
                }
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    println!("shutting down");
    let _ = redis.quit().await;
    Ok(())
}
