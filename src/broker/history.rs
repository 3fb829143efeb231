//! What every broker shares of durable rooms (docs/PROTOCOL.md §10): a
//! room's position, a page of its history, and how a durable event travels
//! on the room's channel.
//!
//! A durable event is published on the same channel as a plain one, with its
//! position in front of the payload: `__d:<offset>:<epoch>__<payload>`. A
//! JSON payload cannot start with `_`, so plain and durable events never
//! look alike, and the Redis Function can frame an event without decoding
//! and re-encoding the backend's JSON.

use std::sync::Arc;

use bytes::Bytes;

/// Where a durable room's stream stands: the offset of its last event (0
/// before the first) in its epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// A room's position and kept events after some offset, read at one instant.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    pub position: Position,
    /// `(offset, payload)`, oldest first, all after the offset asked for.
    pub events: Vec<(u64, Bytes)>,
}

impl HistoryPage {
    /// Whether the page holds every event from `since + 1` to the position:
    /// the gap after `since` can be filled exactly.
    pub fn covers(&self, since: u64) -> bool {
        let wanted = self.position.offset.saturating_sub(since);
        wanted == 0
            || (self.events.len() as u64 == wanted
                && self.events.first().is_some_and(|(o, _)| *o == since + 1)
                && self.events.windows(2).all(|w| w[1].0 == w[0].0 + 1))
    }
}

const HEAD: &[u8] = b"__d:";
const TAIL: &[u8] = b"__";

/// Longest epoch a broker produces or a client may send back.
pub const MAX_EPOCH_LEN: usize = 64;

/// Frame a durable event for its room's channel.
pub fn frame(offset: u64, epoch: &str, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(HEAD.len() + 20 + epoch.len() + TAIL.len() + payload.len() + 1);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(offset.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(TAIL);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A durable event's position on the wire: offset and epoch.
pub type WirePosition<'a> = Option<(u64, &'a str)>;

/// A message from a room's channel: its position if durable, and the payload.
/// None when it starts like a durable frame but the header is malformed.
pub fn unframe(message: &[u8]) -> Option<(WirePosition<'_>, &[u8])> {
    let Some(rest) = message.strip_prefix(HEAD) else {
        return Some((None, message));
    };
    let colon = rest.iter().position(|&b| b == b':')?;
    let offset: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let end = rest.windows(TAIL.len()).position(|w| w == TAIL)?;
    let epoch = std::str::from_utf8(&rest[..end]).ok()?;
    if offset == 0 || !is_valid_epoch(epoch) {
        return None;
    }
    Some((Some((offset, epoch)), &rest[end + TAIL.len()..]))
}

/// Epochs are short runs of ASCII letters and digits.
pub fn is_valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_plain_payloads_pass() {
        let framed = frame(17, "abc123", br#"{"event":"e"}"#);
        assert_eq!(&framed[..], br#"__d:17:abc123__{"event":"e"}"#);
        assert_eq!(unframe(&framed), Some((Some((17, "abc123")), &br#"{"event":"e"}"#[..])));
        assert_eq!(unframe(br#"{"event":"e"}"#), Some((None, &br#"{"event":"e"}"#[..])));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b"__d:"[..],
            b"__d:x:e__{}",
            b"__d:0:e__{}",
            b"__d:5:__{}",
            b"__d:5:e{}",
            b"__d:5:e-f__{}",
            b"__d:99999999999999999999999:e__{}",
        ] {
            assert_eq!(unframe(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
