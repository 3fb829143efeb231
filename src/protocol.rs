//! The wire: client → server command frames (parsed and validated here),
//! server → client frames (encoded here), and the backend event payload
//! published on a room's channel.
//!
//! An event's client frame is encoded once per node by [`encode_event`]; the
//! `data` member is copied as raw JSON text, never re-serialised.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::broker::Position;
use crate::broker::history::{MAX_EPOCH_LEN, is_valid_epoch};
use crate::room::RoomName;

/// Longest `ref` a client may send; it is echoed back verbatim.
pub const MAX_REF_LEN: usize = 64;
/// Longest event name.
pub const MAX_EVENT_LEN: usize = 128;
/// Most rooms one `since` map may name.
pub const MAX_SINCE_ROOMS: usize = 1000;

/// Positions a client resumes from, by room (docs/PROTOCOL.md §10).
pub type Since = BTreeMap<RoomName, Position>;

/// Error codes of docs/PROTOCOL.md §4.
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
        since: Since,
    },
    Subscribe {
        room: RoomName,
        /// Resume the room from this position.
        since: Option<Position>,
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
    /// The room's users, cluster-wide.
    Presence {
        room: RoomName,
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
            Command::Presence { .. } => "presence",
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
    #[serde(borrow)]
    since: Option<&'a RawValue>,
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
            Some("auth") => raw.token.ok_or("missing 'token'".to_string()).and_then(|token| {
                let since = match raw.since {
                    Some(since) => parse_since(since.get())?,
                    None => Since::new(),
                };
                Ok(Command::Auth { token, since })
            }),
            Some("subscribe") => room(raw.room).and_then(|room| {
                let since = raw.since.map(|since| parse_position(since.get())).transpose()?;
                Ok(Command::Subscribe { room, since })
            }),
            Some("unsubscribe") => room(raw.room).map(|room| Command::Unsubscribe { room }),
            Some("publish") => room(raw.room).and_then(|room| {
                let event = raw.event.ok_or("missing 'event'")?;
                validate_event_name(&event)?;
                let data = match raw.data {
                    Some(data) => {
                        validate_data(data)?;
                        data.to_owned()
                    }
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
            Some("presence") => room(raw.room).map(|room| Command::Presence { room }),
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

/// A position as the client sends it back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePosition {
    offset: u64,
    epoch: String,
}

impl WirePosition {
    fn validate(self) -> Result<Position, String> {
        if !is_valid_epoch(&self.epoch) {
            return Err(format!(
                "invalid 'since': 'epoch' must be the 1-{MAX_EPOCH_LEN} letters and digits the server sent"
            ));
        }
        Ok(Position {
            offset: self.offset,
            epoch: Arc::from(self.epoch),
        })
    }
}

/// One position: `{"offset":17,"epoch":"..."}`.
pub fn parse_position(json: &str) -> Result<Position, String> {
    serde_json::from_str::<WirePosition>(json)
        .map_err(|e| format!("invalid 'since': {e}"))?
        .validate()
}

/// A `since` map, from the auth frame or the `?since=` query:
/// `{"<room>":{"offset":17,"epoch":"..."},...}`.
pub fn parse_since(json: &str) -> Result<Since, String> {
    let raw: BTreeMap<String, WirePosition> =
        serde_json::from_str(json).map_err(|e| format!("invalid 'since': {e}"))?;
    if raw.len() > MAX_SINCE_ROOMS {
        return Err(format!("'since' names more than {MAX_SINCE_ROOMS} rooms"));
    }
    raw.into_iter()
        .map(|(room, position)| {
            let name =
                RoomName::new(room.as_str()).map_err(|e| format!("'since' room '{}': {e}", truncate(&room, 64)))?;
            Ok((name, position.validate()?))
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The deepest nesting of arrays and objects accepted in an event's `data`
/// from a client or the API: deeper is no real payload, and costs every
/// receiving browser a recursive parse.
pub const MAX_DATA_DEPTH: usize = 32;
/// The longest `id` the API passes through to clients, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Refuse `data` nested deeper than [`MAX_DATA_DEPTH`].
pub fn validate_data(data: &RawValue) -> Result<(), String> {
    if json_depth_exceeds(data.get(), MAX_DATA_DEPTH) {
        return Err(format!(
            "'data' nests arrays and objects deeper than {MAX_DATA_DEPTH} levels"
        ));
    }
    Ok(())
}

/// Whether valid JSON nests arrays and objects deeper than `max`: a byte
/// scan, counting brackets outside strings.
fn json_depth_exceeds(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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

/// The payload backends publish on a room's channel (docs/PROTOCOL.md §5), also what
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

/// Encode the client frame of an event: once per event per node. A durable
/// event carries its `offset` and `epoch`.
pub fn encode_event(room: &str, event: &BackendEvent<'_>, position: Option<(u64, &str)>) -> Utf8Bytes {
    let data = event.data.map_or("null", RawValue::get);
    let mut out = String::with_capacity(80 + room.len() + event.event.len() + data.len());
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
    if let Some((offset, epoch)) = position {
        out.push_str(r#","offset":"#);
        out.push_str(itoa::Buffer::new().format(offset));
        out.push_str(r#","epoch":"#);
        push_json_str(&mut out, epoch);
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

/// A position as the server sends it.
#[derive(Serialize)]
pub struct PositionJson<'a> {
    offset: u64,
    epoch: &'a str,
}

impl<'a> From<&'a Position> for PositionJson<'a> {
    fn from(position: &'a Position) -> Self {
        Self {
            offset: position.offset,
            epoch: &position.epoch,
        }
    }
}

/// What a durable room's join reports: its position, and whether the
/// client's `since` was recovered (None when it gave none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub position: Position,
    pub recovered: Option<bool>,
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
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    positions: BTreeMap<&'a str, PositionJson<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    recovered: BTreeMap<&'a str, bool>,
}

pub struct WelcomeInfo<'a> {
    pub conn_id: &'a str,
    pub user_id: &'a str,
    pub rooms: &'a [RoomName],
    pub expires_at: u64,
    pub heartbeat_s: u64,
    /// The durable rooms among `rooms`.
    pub durable: &'a [(RoomName, Joined)],
}

pub fn encode_welcome(info: &WelcomeInfo<'_>) -> Utf8Bytes {
    encode(&Welcome {
        kind: "welcome",
        conn_id: info.conn_id,
        user_id: info.user_id,
        rooms: info.rooms.iter().map(RoomName::as_str).collect(),
        expires_at: info.expires_at,
        heartbeat_s: info.heartbeat_s,
        positions: info
            .durable
            .iter()
            .map(|(room, joined)| (room.as_str(), PositionJson::from(&joined.position)))
            .collect(),
        recovered: info
            .durable
            .iter()
            .filter_map(|(room, joined)| joined.recovered.map(|r| (room.as_str(), r)))
            .collect(),
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
    /// A durable room's position after a `subscribe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<PositionJson<'a>>,
    /// Whether a `subscribe` with `since` recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

impl<'a> Reply<'a> {
    fn new(kind: &'static str, reference: Option<&'a str>) -> Self {
        Self {
            kind,
            reference,
            code: None,
            message: None,
            expires_at: None,
            position: None,
            recovered: None,
        }
    }
}

pub fn encode_ack(reference: Option<&str>, expires_at: Option<u64>) -> Utf8Bytes {
    encode(&Reply {
        expires_at,
        ..Reply::new("ack", reference)
    })
}

/// The ack of a `subscribe` to (or a `publish` into) a durable room.
pub fn encode_ack_with_position(reference: Option<&str>, joined: &Joined) -> Utf8Bytes {
    encode(&Reply {
        position: Some(PositionJson::from(&joined.position)),
        recovered: joined.recovered,
        ..Reply::new("ack", reference)
    })
}

#[derive(Serialize)]
struct RefreshAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    expires_at: u64,
    rooms: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left: Vec<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    positions: BTreeMap<&'a str, PositionJson<'a>>,
}

/// The ack of a `refresh`: the new expiry, the token's rooms now, the rooms
/// the new token no longer entitles (left), and the positions of durable
/// rooms it joined.
pub fn encode_refresh_ack(
    reference: Option<&str>,
    expires_at: u64,
    rooms: &[RoomName],
    left: &[RoomName],
    joined: &[(RoomName, Joined)],
) -> Utf8Bytes {
    encode(&RefreshAck {
        kind: "ack",
        reference,
        expires_at,
        rooms: rooms.iter().map(RoomName::as_str).collect(),
        left: left.iter().map(RoomName::as_str).collect(),
        positions: joined
            .iter()
            .map(|(room, joined)| (room.as_str(), PositionJson::from(&joined.position)))
            .collect(),
    })
}

/// `{"type":"join"|"leave","room":..,"user_id":..}`: a user's first
/// connection entered `room`, or its last one left.
pub fn encode_presence_change(kind: &'static str, room: &str, user_id: &str) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Change<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        user_id: &'a str,
    }
    encode(&Change { kind, room, user_id })
}

#[derive(Serialize)]
struct PresenceReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    room: &'a str,
    users: &'a [crate::broker::presence::Member],
}

/// The reply to `presence`: the room's users, cluster-wide.
pub fn encode_presence(reference: Option<&str>, room: &str, users: &[crate::broker::presence::Member]) -> Utf8Bytes {
    encode(&PresenceReply {
        kind: "presence",
        reference,
        room,
        users,
    })
}

pub fn encode_pong(reference: Option<&str>) -> Utf8Bytes {
    encode(&Reply::new("pong", reference))
}

pub fn encode_error(reference: Option<&str>, code: ErrorCode, message: &str) -> Utf8Bytes {
    encode(&Reply {
        code: Some(code.as_str()),
        message: Some(message),
        ..Reply::new("error", reference)
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
    fn data_deeper_than_the_limit_is_refused_and_brackets_in_strings_do_not_count() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let frame = |data: &str| format!(r#"{{"type":"publish","room":"chat:1","event":"e","data":{data}}}"#);
        assert!(ClientFrame::parse(&frame(&nested(MAX_DATA_DEPTH))).is_ok());
        let error = ClientFrame::parse(&frame(&nested(MAX_DATA_DEPTH + 1))).unwrap_err();
        assert!(error.message.contains("deeper than 32"), "{}", error.message);
        let in_strings = format!(r#"{{"a":"{}","b":"\\\"{{{{"}}"#, "[".repeat(100));
        assert!(ClientFrame::parse(&frame(&in_strings)).is_ok(), "{in_strings}");
        // An escaped backslash ends its escape: the nesting after it counts.
        let after_backslash = format!(r#"["\\",{}]"#, nested(MAX_DATA_DEPTH));
        assert!(
            ClientFrame::parse(&frame(&after_backslash)).is_err(),
            "{after_backslash}"
        );
        // An escaped quote does not end the string: its brackets do not count.
        let quoted = format!(r#"{{"s":"\"{}"}}"#, "[".repeat(40));
        assert!(ClientFrame::parse(&frame(&quoted)).is_ok(), "{quoted}");
    }

    #[test]
    fn parses_every_command() {
        let f = parse(json!({"type":"subscribe","room":"orders:1","ref":"1"})).unwrap();
        assert_eq!(f.reference.as_deref(), Some("1"));
        assert!(matches!(f.command, Command::Subscribe { room, since: None } if room.as_str() == "orders:1"));
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
        let frame = encode_event("user:42", &event, None);
        let v: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"event","room":"user:42","event":"order:updated","data":{"id":7,"s":"a\"b"},"id":"1-0"})
        );
        let v: Value = serde_json::from_str(encode_event("user:42", &event, Some((17, "e1"))).as_str()).unwrap();
        assert_eq!((v["offset"].clone(), v["epoch"].clone()), (json!(17), json!("e1")));
    }

    #[test]
    fn since_is_parsed_and_validated() {
        match parse(json!({"type":"auth","token":"t","since":{"user:42":{"offset":17,"epoch":"abc"}}}))
            .unwrap()
            .command
        {
            Command::Auth { since, .. } => {
                let room = RoomName::new("user:42").unwrap();
                assert_eq!(since[&room].offset, 17);
                assert_eq!(&*since[&room].epoch, "abc");
            }
            other => panic!("{other:?}"),
        }
        match parse(json!({"type":"subscribe","room":"orders:1","since":{"offset":0,"epoch":"e"}}))
            .unwrap()
            .command
        {
            Command::Subscribe { since: Some(p), .. } => assert_eq!(p.offset, 0),
            other => panic!("{other:?}"),
        }
        for bad in [
            json!({"type":"subscribe","room":"orders:1","since":{"offset":-1,"epoch":"e"}}),
            json!({"type":"subscribe","room":"orders:1","since":{"offset":1}}),
            json!({"type":"subscribe","room":"orders:1","since":{"offset":1,"epoch":"a b"}}),
            json!({"type":"subscribe","room":"orders:1","since":{"offset":1,"epoch":"e","x":1}}),
            json!({"type":"auth","token":"t","since":{"Bad Room":{"offset":1,"epoch":"e"}}}),
            json!({"type":"auth","token":"t","since":[1]}),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert!(
                e.message.contains("since") || e.message.contains("epoch"),
                "{bad}: {}",
                e.message
            );
        }
        assert!(parse_since(r#"{"user:1":{"offset":3,"epoch":"x1"}}"#).is_ok());
        assert!(parse_since("{").is_err());
    }

    #[test]
    fn backend_payloads_are_validated() {
        assert!(BackendEvent::parse(b"not json").is_err());
        assert!(BackendEvent::parse(br#"{"data":1}"#).is_err());
        assert!(BackendEvent::parse(br#"{"event":""}"#).is_err());
        let e = BackendEvent::parse(br#"{"event":"x"}"#).unwrap();
        let v: Value = serde_json::from_str(encode_event("a:b", &e, None).as_str()).unwrap();
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
