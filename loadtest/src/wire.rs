//! Reading the frames the targets send, per protocol, into what the load
//! tester needs: is it an event, which room does the server say it is for,
//! and the marker the publisher put in its data (`seq`, `ts`, `room`).
//!
//! wsgate and the raw peer send `{"type":"event","room":..,"event":..,"data":..}`;
//! Socket.IO sends `42["<event>",<data>]`, with no room, which is why the
//! publisher repeats the room inside the data. Strings are borrowed from the
//! frame where they have no escapes, so a delivery allocates nothing.
//!
//! The load tester shares the machine's cores with the server it measures,
//! so its own cost per delivery matters: frames in exactly the shape wsgate
//! encodes and the publisher writes are read by a byte scan ([`fast`]); any
//! other frame goes through serde_json. Both give the same answer (tested).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::Protocol;

/// What the publisher puts in every event's `data`.
#[derive(Debug, PartialEq, Eq)]
pub struct Marker<'a> {
    pub seq: u64,
    /// Publish time, Unix nanoseconds.
    pub ts: u64,
    /// The room it was published to.
    pub room: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// An event; `frame_room` when the protocol names the room; `marker`
    /// when the data is the load tester's.
    Event {
        frame_room: Option<Cow<'a, str>>,
        marker: Option<Marker<'a>>,
    },
    /// Engine.IO ping (`2`): must be answered with `3`.
    EnginePing,
    /// Socket.IO disconnect (`41`) or Engine.IO close (`1`).
    Disconnect,
    /// Anything else (acks, pongs, frames of no interest).
    Other,
}

#[derive(Deserialize)]
struct MarkerData<'a> {
    seq: Option<u64>,
    ts: Option<u64>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
}

impl<'a> MarkerData<'a> {
    fn into_marker(self) -> Option<Marker<'a>> {
        Some(Marker {
            seq: self.seq?,
            ts: self.ts?,
            room: self.room?,
        })
    }
}

#[derive(Deserialize)]
struct WsgateFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<MarkerData<'a>>,
}

/// Only the type, for frames whose data is not a marker object.
#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
}

pub fn parse(protocol: Protocol, text: &str) -> Inbound<'_> {
    match protocol {
        Protocol::Wsgate | Protocol::Raw => parse_wsgate(text),
        Protocol::Socketio => parse_socketio(text),
    }
}

fn parse_wsgate(text: &str) -> Inbound<'_> {
    if let Some(event) = fast::wsgate(text) {
        return event;
    }
    if let Ok(frame) = serde_json::from_str::<WsgateFrame<'_>>(text) {
        if frame.kind != "event" {
            return Inbound::Other;
        }
        return Inbound::Event {
            frame_room: frame.room,
            marker: frame.data.and_then(MarkerData::into_marker),
        };
    }
    // An event whose data is not an object (someone else's), or not JSON.
    match serde_json::from_str::<KindOnly<'_>>(text) {
        Ok(frame) if frame.kind == "event" => Inbound::Event {
            frame_room: frame.room,
            marker: None,
        },
        _ => Inbound::Other,
    }
}

fn parse_socketio(text: &str) -> Inbound<'_> {
    match text {
        "2" => return Inbound::EnginePing,
        "1" | "41" => return Inbound::Disconnect,
        _ => {}
    }
    let Some(args) = text.strip_prefix("42") else {
        return Inbound::Other;
    };
    if let Some(event) = fast::socketio(args) {
        return event;
    }
    if let Ok((_event, data)) = serde_json::from_str::<(Cow<'_, str>, MarkerData<'_>)>(args) {
        return Inbound::Event {
            frame_room: None,
            marker: data.into_marker(),
        };
    }
    match serde_json::from_str::<(IgnoredAny, IgnoredAny)>(args) {
        Ok(_) => Inbound::Event {
            frame_room: None,
            marker: None,
        },
        Err(_) => Inbound::Other,
    }
}

/// The byte-scan reading of the frames the load tester itself causes.
/// Returns `None` whenever the frame is not in exactly that shape.
mod fast {
    use std::borrow::Cow;

    use super::{Inbound, Marker};

    /// `{"type":"event","room":"<room>",...,"data":{"seq":N,"ts":T,"room":"<room>"...`
    pub fn wsgate(text: &str) -> Option<Inbound<'_>> {
        let rest = text.strip_prefix(r#"{"type":"event","room":""#)?;
        let (frame_room, rest) = plain_string(rest)?;
        // Quotes inside JSON strings are escaped, so this finds the
        // top-level member; `event` (a string) is all that comes before it.
        let at = rest.find(r#","data":{"#)?;
        let marker = marker(&rest[at + r#","data":{"#.len()..])?;
        Some(Inbound::Event {
            frame_room: Some(Cow::Borrowed(frame_room)),
            marker: Some(marker),
        })
    }

    /// After `42`: `["<event>",{"seq":N,"ts":T,"room":"<room>"...`
    pub fn socketio(args: &str) -> Option<Inbound<'_>> {
        let rest = args.strip_prefix(r#"[""#)?;
        let (_event, rest) = plain_string(rest)?;
        let marker = marker(rest.strip_prefix(",{")?)?;
        Some(Inbound::Event {
            frame_room: None,
            marker: Some(marker),
        })
    }

    /// `"seq":N,"ts":T,"room":"<room>"` followed by `,` or `}`.
    fn marker(text: &str) -> Option<Marker<'_>> {
        let (seq, rest) = number(text.strip_prefix(r#""seq":"#)?)?;
        let (ts, rest) = number(rest.strip_prefix(r#","ts":"#)?)?;
        let (room, rest) = plain_string(rest.strip_prefix(r#","room":""#)?)?;
        if !(rest.starts_with(',') || rest.starts_with('}')) {
            return None;
        }
        Some(Marker {
            seq,
            ts,
            room: Cow::Borrowed(room),
        })
    }

    /// The rest of a string whose opening quote was consumed, if it has no
    /// escapes; and what follows its closing quote.
    fn plain_string(text: &str) -> Option<(&str, &str)> {
        let end = text.find(['"', '\\'])?;
        if text.as_bytes()[end] != b'"' {
            return None;
        }
        Some((&text[..end], &text[end + 1..]))
    }

    /// A JSON unsigned integer (no sign, fraction or exponent).
    fn number(text: &str) -> Option<(u64, &str)> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || (digits > 1 && text.starts_with('0')) {
            return None;
        }
        let rest = &text[digits..];
        if rest.starts_with(['.', 'e', 'E']) {
            return None;
        }
        Some((text[..digits].parse().ok()?, rest))
    }
}

/// Whether a wsgate/raw frame is the welcome.
pub fn is_welcome(text: &str) -> bool {
    serde_json::from_str::<KindOnly<'_>>(text).is_ok_and(|f| f.kind == "welcome")
}

/// The `data` of an event the publisher sends: the marker plus `pad_bytes`
/// of padding. Room names are validated to need no JSON escaping.
pub fn event_data(seq: u64, ts: u64, room: &str, pad_bytes: usize) -> String {
    let mut data = String::with_capacity(64 + room.len() + pad_bytes);
    data.push_str(r#"{"seq":"#);
    data.push_str(&seq.to_string());
    data.push_str(r#","ts":"#);
    data.push_str(&ts.to_string());
    data.push_str(r#","room":""#);
    data.push_str(room);
    data.push('"');
    if pad_bytes > 0 {
        data.push_str(r#","pad":""#);
        data.extend(std::iter::repeat_n('x', pad_bytes));
        data.push('"');
    }
    data.push('}');
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(seq: u64, ts: u64, room: &str) -> Option<Marker<'_>> {
        Some(Marker {
            seq,
            ts,
            room: Cow::Borrowed(room),
        })
    }

    #[test]
    fn wsgate_events_carry_the_frame_room_and_the_marker() {
        let data = event_data(7, 1_700_000_000_000_000_000, "org:lt", 3);
        let frame = format!(r#"{{"type":"event","room":"org:lt","event":"lt","data":{data}}}"#);
        assert_eq!(
            parse(Protocol::Wsgate, &frame),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("org:lt")),
                marker: marker(7, 1_700_000_000_000_000_000, "org:lt"),
            }
        );
    }

    #[test]
    fn other_wsgate_frames_and_foreign_events_are_told_apart() {
        assert_eq!(parse(Protocol::Raw, r#"{"type":"pong","ref":"1"}"#), Inbound::Other);
        assert_eq!(parse(Protocol::Wsgate, "not json"), Inbound::Other);
        assert_eq!(
            parse(
                Protocol::Wsgate,
                r#"{"type":"event","room":"user:1","event":"x","data":{"id":7}}"#
            ),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("user:1")),
                marker: None
            }
        );
        assert_eq!(
            parse(
                Protocol::Wsgate,
                r#"{"type":"event","room":"user:1","event":"x","data":[1,2]}"#
            ),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("user:1")),
                marker: None
            }
        );
        assert!(is_welcome(r#"{"type":"welcome","conn_id":"a","rooms":[]}"#));
        assert!(!is_welcome(r#"{"type":"event"}"#));
    }

    #[test]
    fn socketio_packets_are_decoded() {
        let data = event_data(3, 99, "user:lt5", 0);
        let packet = format!(r#"42["lt",{data}]"#);
        assert_eq!(
            parse(Protocol::Socketio, &packet),
            Inbound::Event {
                frame_room: None,
                marker: marker(3, 99, "user:lt5"),
            }
        );
        assert_eq!(parse(Protocol::Socketio, "2"), Inbound::EnginePing);
        assert_eq!(parse(Protocol::Socketio, "41"), Inbound::Disconnect);
        assert_eq!(parse(Protocol::Socketio, r#"40{"sid":"x"}"#), Inbound::Other);
        assert_eq!(
            parse(Protocol::Socketio, r#"42["other","hello"]"#),
            Inbound::Event {
                frame_room: None,
                marker: None
            }
        );
        assert_eq!(parse(Protocol::Socketio, "42[broken"), Inbound::Other);
    }

    /// Every frame gives the same answer by the byte scan and by serde.
    #[test]
    fn the_fast_path_agrees_with_serde() {
        let data = event_data(12, 1_700_000_000_123_456_789, "user:lt3", 5);
        let frames = [
            format!(r#"{{"type":"event","room":"user:lt3","event":"lt","data":{data}}}"#),
            format!(r#"{{"type":"event","room":"user:lt3","event":"lt","data":{data},"id":"1-0"}}"#),
            format!(r#"{{"type":"event","room":"org:lt","event":"a,"data":{{","data":{data}}}"#),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1.5,"ts":2,"room":"org:lt"}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":01,"ts":2,"room":"org:lt"}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"x}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"ts":2,"seq":1,"room":"org:lt"}}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":99999999999999999999,"ts":2,"room":"x"}}"#
                .into(),
        ];
        for frame in &frames {
            let slow = serde_only(frame);
            if let Some(fast) = fast::wsgate(frame) {
                assert_eq!(fast, slow, "{frame}");
            }
            assert_eq!(parse(Protocol::Wsgate, frame), slow, "{frame}");
        }
        assert!(
            fast::wsgate(&frames[0]).is_some(),
            "the usual frame takes the fast path"
        );
        assert!(fast::wsgate(&frames[4]).is_none(), "a fraction is left to serde");
        let packets = [
            format!(r#"["lt",{data}]"#),
            r#"["l"t",{"seq":1,"ts":2,"room":"org:lt"}]"#.into(),
        ];
        for args in &packets {
            let slow = match serde_json::from_str::<(Cow<'_, str>, MarkerData<'_>)>(args) {
                Ok((_, data)) => Inbound::Event {
                    frame_room: None,
                    marker: data.into_marker(),
                },
                Err(_) => Inbound::Other,
            };
            if let Some(fast) = fast::socketio(args) {
                assert_eq!(fast, slow, "{args}");
            }
            assert_eq!(parse(Protocol::Socketio, &format!("42{args}")), slow, "{args}");
        }
        assert!(fast::socketio(&packets[0]).is_some());
    }

    fn serde_only(text: &str) -> Inbound<'_> {
        match serde_json::from_str::<WsgateFrame<'_>>(text) {
            Ok(frame) if frame.kind == "event" => Inbound::Event {
                frame_room: frame.room,
                marker: frame.data.and_then(MarkerData::into_marker),
            },
            Ok(_) => Inbound::Other,
            Err(_) => match serde_json::from_str::<KindOnly<'_>>(text) {
                Ok(frame) if frame.kind == "event" => Inbound::Event {
                    frame_room: frame.room,
                    marker: None,
                },
                _ => Inbound::Other,
            },
        }
    }

    #[test]
    fn event_data_is_json_with_the_marker_and_padding() {
        let data: serde_json::Value = serde_json::from_str(&event_data(1, 2, "org:lt", 10)).expect("json");
        assert_eq!(data["seq"], 1);
        assert_eq!(data["ts"], 2);
        assert_eq!(data["room"], "org:lt");
        assert_eq!(data["pad"].as_str().map(str::len), Some(10));
    }
}
