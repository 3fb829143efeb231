//! What arrives on a room's Redis channel (docs/PROTOCOL.md §5, §10):
//! `__d:<offset>:<epoch>__<json>` for a durable event, plain JSON otherwise.
//! The hub unframes it, parses the event and encodes the client frame once.
//!
//! Invariants: never panics; only a message that starts like a durable header
//! is refused, and an accepted header frames and unframes back to itself;
//! the encoded client frame is valid JSON of exactly the documented shape,
//! and `room`, `event`, `data`, `id`, `from`, `offset` and `epoch`
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use wsgate::broker::history::{frame, is_valid_epoch, unframe};
use wsgate::protocol::{BackendEvent, MAX_EVENT_LEN, encode_event};

/// A room as the hub has it: always a validated name.
const ROOM: &str = "orders:auth0|a_b-c.d@e=f+g~h:1";

/// The event frame of docs/PROTOCOL.md §2/§10, and nothing else.
///
/// `data` is checked as raw JSON text: the gateway accepts `data` of any
/// nesting depth (serde_json skips a `RawValue` without a depth limit), so
/// reading it into a `serde_json::Value`, limited to 128 levels, would flag
/// valid frames.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: String,
    room: String,
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
    id: Option<String>,
    from: Option<String>,
    offset: Option<u64>,
    epoch: Option<String>,
}

fuzz_target!(|message: &[u8]| {
    let Some((position, payload)) = unframe(message) else {
        // Only a message that starts like a durable header may be refused here.
        assert!(message.starts_with(b"__d:"));
        return;
    };
    match position {
        Some((offset, epoch)) => {
            assert!(offset > 0 && is_valid_epoch(epoch));
            // What the Redis Function would frame for it reads back the same.
            let reframed = frame(offset, epoch, payload);
            assert_eq!(
                unframe(&reframed),
                Some((Some((offset, epoch)), payload)),
                "frame/unframe do not round-trip"
            );
        }
        None => assert_eq!(payload, message),
    }
    let Ok(event) = BackendEvent::parse(payload) else {
        return;
    };
    assert!(!event.event.is_empty() && event.event.len() <= MAX_EVENT_LEN);
    let _ = event.to_payload();

    let out = encode_event(ROOM, &event, position);
    let text = out.as_str();
    // Valid JSON at all (any depth), then exactly the documented shape.
    serde_json::from_str::<IgnoredAny>(text).unwrap_or_else(|e| panic!("event frame is not JSON: {e}: {text}"));
    let parsed: EventFrame<'_> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("event frame has the wrong shape: {e}: {text}"));
    assert_eq!(parsed.kind, "event");
    assert_eq!(parsed.room, ROOM);
    assert_eq!(parsed.event, event.event);
    assert_eq!(parsed.data.get(), event.data.map_or("null", RawValue::get));
    assert_eq!(parsed.id.as_deref(), event.id.as_deref());
    assert_eq!(parsed.from.as_deref(), event.from.as_deref());
    assert_eq!(parsed.offset, position.map(|(offset, _)| offset));
    assert_eq!(parsed.epoch.as_deref(), position.map(|(_, epoch)| epoch));
});
