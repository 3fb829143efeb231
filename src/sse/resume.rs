//! The SSE resume token: the `id:` of every SSE event, which a reconnecting
//! `EventSource` sends back as `Last-Event-ID` (PROTOCOL.md §11).
//!
//! It holds the connection's position in each of its durable rooms:
//! `<room>/<offset>/<epoch>` per room, separated by spaces. `/` and spaces
//! appear in no room name and no epoch, so it needs no escaping. Clients
//! treat it as opaque.

use std::sync::Arc;

use crate::broker::Position;
use crate::broker::history::is_valid_epoch;
use crate::protocol::Since;
use crate::room::RoomName;

/// Longest `Last-Event-ID` read; a longer one is refused, not cut.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The connection's position in each durable room, kept in join order.
#[derive(Default)]
pub struct Positions {
    rooms: Vec<(RoomName, u64, Arc<str>)>,
}

impl Positions {
    pub fn set(&mut self, room: &RoomName, position: &Position) {
        match self.rooms.iter_mut().find(|(r, ..)| r == room) {
            Some(entry) => {
                entry.1 = position.offset;
                entry.2 = position.epoch.clone();
            }
            None => self.rooms.push((room.clone(), position.offset, position.epoch.clone())),
        }
    }

    /// Move `room` to `offset` in `epoch`, if it is one of ours. True when it is.
    pub fn advance(&mut self, room: &str, offset: u64, epoch: &str) -> bool {
        let Some(entry) = self.rooms.iter_mut().find(|(r, ..)| r.as_str() == room) else {
            return false;
        };
        entry.1 = offset;
        if &*entry.2 != epoch {
            entry.2 = Arc::from(epoch);
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The token, written into `out`.
    pub fn write_token(&self, out: &mut Vec<u8>) {
        let mut buffer = itoa::Buffer::new();
        for (i, (room, offset, epoch)) in self.rooms.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(room.as_str().as_bytes());
            out.push(b'/');
            out.extend_from_slice(buffer.format(*offset).as_bytes());
            out.push(b'/');
            out.extend_from_slice(epoch.as_bytes());
        }
    }
}

/// Read a token back into the positions to resume from.
pub fn parse(token: &str) -> Result<Since, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("Last-Event-ID is longer than {MAX_TOKEN_BYTES} bytes"));
    }
    let mut since = Since::new();
    for part in token.split(' ').filter(|p| !p.is_empty()) {
        let malformed = || format!("Last-Event-ID: '{part}' is not <room>/<offset>/<epoch>");
        let mut fields = part.rsplitn(3, '/');
        let (Some(epoch), Some(offset), Some(room)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed());
        };
        let offset: u64 = offset.parse().map_err(|_| malformed())?;
        if !is_valid_epoch(epoch) {
            return Err(malformed());
        }
        let room = RoomName::new(room).map_err(|e| format!("Last-Event-ID: {e}"))?;
        since.insert(
            room,
            Position {
                offset,
                epoch: Arc::from(epoch),
            },
        );
    }
    Ok(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn position(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: Arc::from(epoch),
        }
    }

    #[test]
    fn a_token_reads_back_as_the_positions_it_was_written_from() {
        let mut positions = Positions::default();
        positions.set(&room("user:42"), &position(17, "e1"));
        positions.set(&room("orders:a|b~c=d"), &position(0, "E2"));
        assert!(positions.advance("user:42", 18, "e1"));
        assert!(!positions.advance("user:43", 1, "e1"));
        let mut token = Vec::new();
        positions.write_token(&mut token);
        let token = String::from_utf8(token).unwrap();
        assert_eq!(token, "user:42/18/e1 orders:a|b~c=d/0/E2");
        let since = parse(&token).unwrap();
        assert_eq!(since[&room("user:42")].offset, 18);
        assert_eq!(&*since[&room("orders:a|b~c=d")].epoch, "E2");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_tokens_are_refused_with_what_is_wrong() {
        for bad in [
            "user:42",
            "user:42/x/e1",
            "user:42/1/",
            "user:42/-1/e1",
            "user:42/1/e 1/2",
            "bad room/1/e1",
            "/1/e1",
            "user:42/18446744073709551616/e1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err().contains("longer"));
    }
}
