//! `RoomName::new`: every room name a client, a token claim or the HTTP API
//! gives (docs/PROTOCOL.md §3). Input: any UTF-8 text.
//!
//! Invariants when accepted: at most `MAX_ROOM_LEN` bytes; exactly
//! `namespace:id` with a namespace of 1-32 of `a-z 0-9 _ -` and an id of
//! letters, digits and `_ - . @ : = + | ~`; `namespace()` and `id()` put
//! back together give the original; the name survives a second validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::room::{MAX_NAMESPACE_LEN, MAX_ROOM_LEN, RoomName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(room) = RoomName::new(text.to_owned()) else {
        return;
    };
    let name = room.as_str();
    assert_eq!(name, text);
    assert!(name.len() <= MAX_ROOM_LEN, "accepted {} bytes", name.len());
    assert_eq!(room.to_string(), text);

    let (namespace, id) = (room.namespace(), room.id());
    assert_eq!(format!("{namespace}:{id}"), text, "namespace()/id() do not round-trip");
    assert!(!namespace.is_empty() && namespace.len() <= MAX_NAMESPACE_LEN);
    assert!(
        namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "namespace {namespace:?}"
    );
    assert!(!id.is_empty(), "empty id");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:=+|~".contains(&b)),
        "id {id:?}"
    );
    assert!(RoomName::is_valid_id(id));
    assert_eq!(RoomName::new(name), Ok(room.clone()));
});
