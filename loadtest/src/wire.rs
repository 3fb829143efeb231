//! Reading the frames the targets send, per protocol, into what the load
//! tester needs: is it an event, which room does the server say it is for,
//! the marker the publisher put in its data (`seq`, `ts`, `room`), and, in
//! a durable room, the event's position (`offset`, `epoch`). Also the
//! welcome's positions and recoveries, and the auth frame that resumes.
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
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

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

/// Where a durable event stands in its room (PROTOCOL.md §10).
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp<'a> {
    pub offset: u64,
    pub epoch: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// An event; `frame_room` when the protocol names the room; `marker`
    /// when the data is the load tester's; `stamp` when the room is durable.
    Event {
        frame_room: Option<Cow<'a, str>>,
        marker: Option<Marker<'a>>,
        stamp: Option<Stamp<'a>>,
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
    #[serde(default)]
    offset: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
}

/// Only the type, for frames whose data is not a marker object.
#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
}

/// Both halves of a position, or none.
fn stamp(offset: Option<u64>, epoch: Option<Cow<'_, str>>) -> Option<Stamp<'_>> {
    Some(Stamp {
        offset: offset?,
        epoch: epoch?,
    })
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
            stamp: stamp(frame.offset, frame.epoch),
        };
    }
    // An event whose data is not an object (someone else's), or not JSON.
    match serde_json::from_str::<KindOnly<'_>>(text) {
        Ok(frame) if frame.kind == "event" => Inbound::Event {
            frame_room: frame.room,
            marker: None,
            stamp: stamp(frame.offset, frame.epoch),
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
            stamp: None,
        };
    }
    match serde_json::from_str::<(IgnoredAny, IgnoredAny)>(args) {
        Ok(_) => Inbound::Event {
            frame_room: None,
            marker: None,
            stamp: None,
        },
        Err(_) => Inbound::Other,
    }
}

/// The byte-scan reading of the frames the load tester itself causes.
/// Returns `None` whenever the frame is not in exactly that shape.
mod fast {
    use std::borrow::Cow;

    use super::{Inbound, Marker, Stamp};

    /// `{"type":"event","room":"<room>","event":..,"data":{"seq":N,"ts":T,"room":"<room>"[,"pad":".."]}`
    /// then `}` or, in a durable room, `,"offset":N,"epoch":"<epoch>"}`.
    pub fn wsgate(text: &str) -> Option<Inbound<'_>> {
        let rest = text.strip_prefix(r#"{"type":"event","room":""#)?;
        let (frame_room, rest) = plain_string(rest)?;
        // Quotes inside JSON strings are escaped, so this finds the
        // top-level member; `event` (a string) is all that comes before it.
        let at = rest.find(r#","data":{"#)?;
        let (marker, rest) = marker(&rest[at + r#","data":{"#.len()..])?;
        let rest = end_of_data(rest)?;
        let stamp = if rest == "}" {
            None
        } else {
            let (offset, rest) = number(rest.strip_prefix(r#","offset":"#)?)?;
            let (epoch, rest) = plain_string(rest.strip_prefix(r#","epoch":""#)?)?;
            if rest != "}" {
                return None;
            }
            Some(Stamp {
                offset,
                epoch: Cow::Borrowed(epoch),
            })
        };
        Some(Inbound::Event {
            frame_room: Some(Cow::Borrowed(frame_room)),
            marker: Some(marker),
            stamp,
        })
    }

    /// After `42`: `["<event>",{"seq":N,"ts":T,"room":"<room>"...`
    pub fn socketio(args: &str) -> Option<Inbound<'_>> {
        let rest = args.strip_prefix(r#"[""#)?;
        let (_event, rest) = plain_string(rest)?;
        let (marker, _) = marker(rest.strip_prefix(",{")?)?;
        Some(Inbound::Event {
            frame_room: None,
            marker: Some(marker),
            stamp: None,
        })
    }

    /// `"seq":N,"ts":T,"room":"<room>"` followed by `,` or `}`; and what follows.
    fn marker(text: &str) -> Option<(Marker<'_>, &str)> {
        let (seq, rest) = number(text.strip_prefix(r#""seq":"#)?)?;
        let (ts, rest) = number(rest.strip_prefix(r#","ts":"#)?)?;
        let (room, rest) = plain_string(rest.strip_prefix(r#","room":""#)?)?;
        if !(rest.starts_with(',') || rest.starts_with('}')) {
            return None;
        }
        let marker = Marker {
            seq,
            ts,
            room: Cow::Borrowed(room),
        };
        Some((marker, rest))
    }

    /// After the marker: the publisher's padding, if any, and the data's
    /// closing brace; what follows it.
    fn end_of_data(rest: &str) -> Option<&str> {
        let rest = match rest.strip_prefix(r#","pad":""#) {
            Some(pad) => plain_string(pad)?.1,
            None => rest,
        };
        rest.strip_prefix('}')
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

/// A position as the server gives it and the client gives it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What the load tester reads in a welcome: the durable rooms' positions,
/// and for each room it asked to resume, whether it was recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Welcome {
    #[serde(default)]
    pub positions: BTreeMap<String, Position>,
    #[serde(default)]
    pub recovered: BTreeMap<String, bool>,
}

/// The welcome's positions and recoveries; `None` when `text` is not a
/// welcome or its positions are not in the protocol's shape.
pub fn welcome(text: &str) -> Option<Welcome> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(flatten)]
        welcome: Welcome,
    }
    serde_json::from_str::<Frame<'_>>(text)
        .ok()
        .filter(|f| f.kind == "welcome")
        .map(|f| f.welcome)
}

/// The auth frame: `{"type":"auth","token":..}`, with `"since"` when there
/// are positions to resume from.
pub fn auth_frame(token: &str, since: &BTreeMap<String, Position>) -> String {
    #[derive(Serialize)]
    struct Auth<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        token: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        since: &'a BTreeMap<String, Position>,
    }
    serde_json::to_string(&Auth {
        kind: "auth",
        token,
        since,
    })
    .unwrap_or_default()
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
                stamp: None,
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
                marker: None,
                stamp: None,
            }
        );
        assert_eq!(
            parse(
                Protocol::Wsgate,
                r#"{"type":"event","room":"user:1","event":"x","data":[1,2]}"#
            ),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("user:1")),
                marker: None,
                stamp: None,
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
                stamp: None,
            }
        );
        assert_eq!(parse(Protocol::Socketio, "2"), Inbound::EnginePing);
        assert_eq!(parse(Protocol::Socketio, "41"), Inbound::Disconnect);
        assert_eq!(parse(Protocol::Socketio, r#"40{"sid":"x"}"#), Inbound::Other);
        assert_eq!(
            parse(Protocol::Socketio, r#"42["other","hello"]"#),
            Inbound::Event {
                frame_room: None,
                marker: None,
                stamp: None,
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
            format!(r#"{{"type":"event","room":"org:lt","event":"lt","data":{data},"offset":17,"epoch":"e1"}}"#),
            format!(r#"{{"type":"event","room":"org:lt","event":"lt","data":{data},"id":"1-0","offset":17,"epoch":"e1"}}"#),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"},"offset":3,"epoch":"a\"b"}"#
                .into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"},"offset":-3,"epoch":"e"}"#
                .into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt"},"offset":3}"#.into(),
            r#"{"type":"event","room":"org:lt","event":"lt","data":{"seq":1,"ts":2,"room":"org:lt","x":{"offset":1}},"offset":3,"epoch":"e"}"#
                .into(),
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
        assert!(
            fast::wsgate(&frames[4]).is_some(),
            "a durable event takes the fast path"
        );
        assert!(fast::wsgate(&frames[10]).is_none(), "a fraction is left to serde");
        let packets = [
            format!(r#"["lt",{data}]"#),
            r#"["l"t",{"seq":1,"ts":2,"room":"org:lt"}]"#.into(),
        ];
        for args in &packets {
            let slow = match serde_json::from_str::<(Cow<'_, str>, MarkerData<'_>)>(args) {
                Ok((_, data)) => Inbound::Event {
                    frame_room: None,
                    marker: data.into_marker(),
                    stamp: None,
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
                stamp: stamp(frame.offset, frame.epoch),
            },
            Ok(_) => Inbound::Other,
            Err(_) => match serde_json::from_str::<KindOnly<'_>>(text) {
                Ok(frame) if frame.kind == "event" => Inbound::Event {
                    frame_room: frame.room,
                    marker: None,
                    stamp: stamp(frame.offset, frame.epoch),
                },
                _ => Inbound::Other,
            },
        }
    }

    #[test]
    fn durable_events_carry_their_offset_and_epoch() {
        let data = event_data(4, 5, "org:lt", 2);
        let frame = format!(
            r#"{{"type":"event","room":"org:lt","event":"lt","data":{data},"offset":17,"epoch":"1764431000123456"}}"#
        );
        assert_eq!(
            parse(Protocol::Wsgate, &frame),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("org:lt")),
                marker: marker(4, 5, "org:lt"),
                stamp: Some(Stamp {
                    offset: 17,
                    epoch: Cow::Borrowed("1764431000123456")
                }),
            }
        );
        // Someone else's event in a durable room still has its place.
        assert_eq!(
            parse(
                Protocol::Wsgate,
                r#"{"type":"event","room":"org:lt","event":"x","data":null,"offset":9,"epoch":"e"}"#
            ),
            Inbound::Event {
                frame_room: Some(Cow::Borrowed("org:lt")),
                marker: None,
                stamp: Some(Stamp {
                    offset: 9,
                    epoch: Cow::Borrowed("e")
                }),
            }
        );
        // Half a position is none.
        let half = r#"{"type":"event","room":"org:lt","event":"x","data":{"id":1},"offset":9}"#;
        assert!(matches!(
            parse(Protocol::Wsgate, half),
            Inbound::Event { stamp: None, .. }
        ));
    }

    #[test]
    fn welcomes_give_positions_and_recoveries() {
        let text = r#"{"type":"welcome","conn_id":"n1-2a","user_id":"lt3","rooms":["user:lt3","org:lt","role:viewer"],
            "expires_at":1764432000,"heartbeat_s":25,
            "positions":{"user:lt3":{"offset":0,"epoch":"e1"},"org:lt":{"offset":17,"epoch":"e2"}},
            "recovered":{"org:lt":true,"user:lt3":false}}"#;
        let w = welcome(text).expect("a welcome");
        assert_eq!(
            w.positions.get("org:lt"),
            Some(&Position {
                offset: 17,
                epoch: "e2".into()
            })
        );
        assert_eq!(w.positions.get("user:lt3").map(|p| p.offset), Some(0));
        assert_eq!(w.recovered.get("org:lt"), Some(&true));
        assert_eq!(w.recovered.get("user:lt3"), Some(&false));
        let plain = welcome(r#"{"type":"welcome","conn_id":"a","rooms":[]}"#).expect("a welcome");
        assert_eq!(plain, Welcome::default());
        assert_eq!(welcome(r#"{"type":"event","positions":{}}"#), None);
        assert_eq!(
            welcome(r#"{"type":"welcome","positions":{"org:lt":{"offset":-1,"epoch":"e"}}}"#),
            None,
            "a negative offset is not a position"
        );
        assert_eq!(welcome("not json"), None);
    }

    #[test]
    fn the_auth_frame_resumes_only_when_it_has_positions() {
        assert_eq!(
            auth_frame("t.k.n", &BTreeMap::new()),
            r#"{"type":"auth","token":"t.k.n"}"#
        );
        let since = BTreeMap::from([
            (
                "org:lt".to_string(),
                Position {
                    offset: 17,
                    epoch: "e2".into(),
                },
            ),
            (
                "user:lt3".to_string(),
                Position {
                    offset: 0,
                    epoch: "e1".into(),
                },
            ),
        ]);
        let frame: serde_json::Value = serde_json::from_str(&auth_frame("tok", &since)).expect("json");
        assert_eq!(
            frame,
            serde_json::json!({"type":"auth","token":"tok","since":{
                "org:lt":{"offset":17,"epoch":"e2"},"user:lt3":{"offset":0,"epoch":"e1"}}})
        );
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
