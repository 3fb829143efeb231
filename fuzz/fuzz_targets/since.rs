//! The resume-position parsers (docs/PROTOCOL.md §10): `parse_since` reads the
//! auth frame's `since` and the `?since=` query, `parse_position` a
//! `subscribe`'s `since`. Input: any UTF-8 text, fed to both.
//!
//! Invariants: never panics; what is accepted respects the limits (at most
//! `MAX_SINCE_ROOMS` valid room names, epochs of 1-64 ASCII letters and
//! digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::broker::history::is_valid_epoch;
use wsgate::protocol::{MAX_SINCE_ROOMS, parse_position, parse_since};
use wsgate::room::RoomName;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(since) = parse_since(text) {
        assert!(since.len() <= MAX_SINCE_ROOMS);
        for (room, position) in &since {
            assert!(RoomName::new(room.as_str()).is_ok(), "accepted room {room:?}");
            assert!(is_valid_epoch(&position.epoch), "accepted epoch {:?}", position.epoch);
        }
    }
    if let Ok(position) = parse_position(text) {
        assert!(is_valid_epoch(&position.epoch), "accepted epoch {:?}", position.epoch);
    }
});
