//! The wire: client → server command frames (parsed and validated here),
//! server → client frames (encoded here), and the backend event payload
//! published on a room's channel.
//!
//! An event's client frame is encoded once per node by [`encode_event`]; the
//! `data` member is copied as raw JSON text, never re-serialised.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::room::RoomName;

/// Longest `ref` a client may send; it is echoed back verbatim.
pub const MAX_REF_LEN: usize = 64;
/// Longest event name.
pub const MAX_EVENT_LEN: usize = 128;

/// Error codes of DESIGN §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    RateLimited,
    LimitExceeded,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A command a client sent, validated.
#[derive(Debug)]
pub enum Command {
    Auth {
        token: String,
    },
    Subscribe {
        room: RoomName,
    },
    Unsubscribe {
        room: RoomName,
    },
    Publish {
        room: RoomName,
        event: String,
        data: Box<RawValue>,
        /// Deliver to the publishing connection too (default true).
        echo: bool,
    },
    Refresh {
        token: String,
    },
    Ping,
}

impl Command {
    /// Bounded label for `wsgate_client_frames_total{type}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Auth { .. } => "auth",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish { .. } => "publish",
            Command::Refresh { .. } => "refresh",
            Command::Ping => "ping",
        }
    }
}

/// A parsed frame: the command and the client's `ref`.
#[derive(Debug)]
pub struct ClientFrame {
    pub reference: Option<String>,
    pub command: Command,
}

/// A frame that could not be understood. `reference` is kept when it could be
/// read, so the error reply still matches the request.
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub reference: Option<String>,
    pub message: String,
}

/// Every member any command may carry; the `type` decides which are needed.
/// (A flat struct rather than a tagged enum: serde's tagged enums cannot hold
/// a borrowed `RawValue`, and a flat read keeps `ref` for the error reply.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    room: Option<String>,
    event: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    token: Option<String>,
    echo: Option<bool>,
}

/// Read `ref` alone, for an error reply to a frame that failed a full parse.
#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| FrameError {
            reference: serde_json::from_str::<RefOnly>(text)
                .ok()
                .and_then(|r| r.reference)
                .filter(|r| r.len() <= MAX_REF_LEN),
            message: format!("invalid frame: {e}"),
        })?;
        let reference = raw.reference;
        let fail = |reference: Option<String>, message: String| FrameError { reference, message };
        if reference.as_ref().is_some_and(|r| r.len() > MAX_REF_LEN) {
            return Err(fail(None, format!("ref is longer than {MAX_REF_LEN} bytes")));
        }
        let room = |room: Option<String>| -> Result<RoomName, String> {
            let room = room.ok_or("missing 'room'")?;
            RoomName::new(room).map_err(|e| e.to_string())
        };
        let command = match raw.kind.as_deref() {
            Some("auth") => raw
                .token
                .map(|token| Command::Auth { token })
                .ok_or("missing 'token'".to_string()),
            Some("subscribe") => room(raw.room).map(|room| Command::Subscribe { room }),
            Some("unsubscribe") => room(raw.room).map(|room| Command::Unsubscribe { room }),
            Some("publish") => room(raw.room).and_then(|room| {
                let event = raw.event.ok_or("missing 'event'")?;
                validate_event_name(&event)?;
                let data = match raw.data {
                    Some(data) => data.to_owned(),
                    None => RawValue::from_string("null".into()).map_err(|e| e.to_string())?,
                };
                Ok(Command::Publish {
                    room,
                    event,
                    data,
                    echo: raw.echo.unwrap_or(true),
                })
            }),
            Some("refresh") => raw
                .token
                .map(|token| Command::Refresh { token })
                .ok_or("missing 'token'".to_string()),
            Some("ping") => Ok(Command::Ping),
            Some(other) => Err(format!("unknown frame type '{}'", truncate(other, 32))),
            None => Err("missing 'type'".to_string()),
        };
        match command {
            Ok(command) => Ok(ClientFrame { reference, command }),
            Err(message) => Err(fail(reference, message)),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

pub fn validate_event_name(event: &str) -> Result<(), String> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(format!("'event' must be 1-{MAX_EVENT_LEN} bytes"));
    }
    if event.chars().any(char::is_control) {
        return Err("'event' must not contain control characters".into());
    }
    Ok(())
}

/// The payload backends publish on a room's channel (DESIGN §4), also what
/// the HTTP API and client publishes put on the broker.
#[derive(Debug, Deserialize, Serialize)]
pub struct BackendEvent<'a> {
    #[serde(borrow)]
    pub event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    /// Optional stream id, passed through to clients.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<std::borrow::Cow<'a, str>>,
    /// Set by the gateway on client publishes: the publishing user.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub from: Option<std::borrow::Cow<'a, str>>,
    /// Set by the gateway when a client publishes with `echo: false`: the
    /// connection that must not receive its own event.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> BackendEvent<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, String> {
        let event: BackendEvent<'a> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        validate_event_name(&event.event)?;
        Ok(event)
    }

    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising borrowed strings and raw JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Encode the client frame of an event: once per event per node.
pub fn encode_event(room: &str, event: &BackendEvent<'_>) -> Utf8Bytes {
    let data = event.data.map_or("null", RawValue::get);
    let mut out = String::with_capacity(48 + room.len() + event.event.len() + data.len());
    out.push_str(r#"{"type":"event","room":"#);
    push_json_str(&mut out, room);
    out.push_str(r#","event":"#);
    push_json_str(&mut out, &event.event);
    out.push_str(r#","data":"#);
    out.push_str(data);
    if let Some(id) = &event.id {
        out.push_str(r#","id":"#);
        push_json_str(&mut out, id);
    }
    if let Some(from) = &event.from {
        out.push_str(r#","from":"#);
        push_json_str(&mut out, from);
    }
    out.push('}');
    Utf8Bytes::from(out)
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; writing a &str cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

#[derive(Serialize)]
struct Welcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conn_id: &'a str,
    user_id: &'a str,
    rooms: Vec<&'a str>,
    expires_at: u64,
    heartbeat_s: u64,
}

pub fn encode_welcome(
    conn_id: &str,
    user_id: &str,
    rooms: &[RoomName],
    expires_at: u64,
    heartbeat_s: u64,
) -> Utf8Bytes {
    encode(&Welcome {
        kind: "welcome",
        conn_id,
        user_id,
        rooms: rooms.iter().map(RoomName::as_str).collect(),
        expires_at,
        heartbeat_s,
    })
}

#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// New expiry after a `refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

pub fn encode_ack(reference: Option<&str>, expires_at: Option<u64>) -> Utf8Bytes {
    encode(&Reply {
        kind: "ack",
        reference,
        code: None,
        message: None,
        expires_at,
    })
}

pub fn encode_pong(reference: Option<&str>) -> Utf8Bytes {
    encode(&Reply {
        kind: "pong",
        reference,
        code: None,
        message: None,
        expires_at: None,
    })
}

pub fn encode_error(reference: Option<&str>, code: ErrorCode, message: &str) -> Utf8Bytes {
    encode(&Reply {
        kind: "error",
        reference,
        code: Some(code.as_str()),
        message: Some(message),
        expires_at: None,
    })
}

fn encode<T: Serialize>(frame: &T) -> Utf8Bytes {
    // Our own frame structs hold only strings and integers: serialisation
    // cannot fail, and an empty frame would be visible in tests if it did.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(v: Value) -> Result<ClientFrame, FrameError> {
        ClientFrame::parse(&v.to_string())
    }

    #[test]
    fn parses_every_command() {
        let f = parse(json!({"type":"subscribe","room":"orders:1","ref":"1"})).unwrap();
        assert_eq!(f.reference.as_deref(), Some("1"));
        assert!(matches!(f.command, Command::Subscribe { room } if room.as_str() == "orders:1"));
        assert!(matches!(
            parse(json!({"type":"unsubscribe","room":"orders:1"})).unwrap().command,
            Command::Unsubscribe { .. }
        ));
        assert!(matches!(parse(json!({"type":"ping"})).unwrap().command, Command::Ping));
        assert!(matches!(
            parse(json!({"type":"refresh","token":"t"})).unwrap().command,
            Command::Refresh { .. }
        ));
        assert!(matches!(
            parse(json!({"type":"auth","token":"t"})).unwrap().command,
            Command::Auth { .. }
        ));
        match parse(json!({"type":"publish","room":"chat:1","event":"m","data":{"a":[1,2]},"echo":false}))
            .unwrap()
            .command
        {
            Command::Publish { data, echo, .. } => {
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
                assert!(!echo);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_keep_the_ref() {
        let e = parse(json!({"type":"subscribe","ref":"9"})).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("9"));
        assert!(e.message.contains("room"));
        let e = parse(json!({"type":"launch","ref":"8"})).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("8"));
        let e = parse(json!({"type":"ping","ref":"7","extra":1})).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("7"));
        let e = ClientFrame::parse("not json").unwrap_err();
        assert_eq!(e.reference, None);
        let e = parse(json!({"type":"subscribe","room":"Bad Room","ref":"6"})).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("6"));
    }

    #[test]
    fn event_frame_is_valid_json_with_raw_data() {
        let payload = br#"{"event":"order:updated","data":{"id":7,"s":"a\"b"},"id":"1-0"}"#;
        let event = BackendEvent::parse(payload).unwrap();
        let frame = encode_event("user:42", &event);
        let v: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"event","room":"user:42","event":"order:updated","data":{"id":7,"s":"a\"b"},"id":"1-0"})
        );
    }

    #[test]
    fn backend_payloads_are_validated() {
        assert!(BackendEvent::parse(b"not json").is_err());
        assert!(BackendEvent::parse(br#"{"data":1}"#).is_err());
        assert!(BackendEvent::parse(br#"{"event":""}"#).is_err());
        let e = BackendEvent::parse(br#"{"event":"x"}"#).unwrap();
        let v: Value = serde_json::from_str(encode_event("a:b", &e).as_str()).unwrap();
        assert_eq!(v["data"], Value::Null);
    }

    #[test]
    fn replies_are_shaped_as_documented() {
        let v: Value = serde_json::from_str(encode_error(Some("3"), ErrorCode::Forbidden, "no").as_str()).unwrap();
        assert_eq!(v, json!({"type":"error","ref":"3","code":"forbidden","message":"no"}));
        let v: Value = serde_json::from_str(encode_pong(None).as_str()).unwrap();
        assert_eq!(v, json!({"type":"pong"}));
    }
}
