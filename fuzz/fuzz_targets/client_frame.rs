//! `ClientFrame::parse`: every text frame a client sends (docs/PROTOCOL.md §2).
//!
//! tungstenite hands the session only valid UTF-8 text frames, so only inputs
//! that are UTF-8 are fed. Beyond "never panics", a parse must respect the
//! limits the protocol promises, its error reply must be valid JSON, and a
//! client `publish` must become a broker payload the receiving hub accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::protocol::{
    BackendEvent, ClientFrame, Command, ErrorCode, MAX_EVENT_LEN, MAX_REF_LEN, MAX_SINCE_ROOMS, encode_error,
    validate_event_name,
};
use wsgate::room::MAX_ROOM_LEN;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Ok(frame) => {
            if let Some(r) = &frame.reference {
                assert!(r.len() <= MAX_REF_LEN, "accepted a ref of {} bytes", r.len());
            }
            let _ = frame.command.kind();
            match frame.command {
                Command::Auth { since, .. } => {
                    assert!(since.len() <= MAX_SINCE_ROOMS);
                    for (room, position) in &since {
                        assert!(room.as_str().len() <= MAX_ROOM_LEN);
                        assert!(!position.epoch.is_empty());
                    }
                }
                Command::Subscribe { room, .. } | Command::Unsubscribe { room } => {
                    assert!(room.as_str().len() <= MAX_ROOM_LEN);
                }
                Command::Publish {
                    room,
                    event,
                    data,
                    echo,
                } => {
                    assert!(room.as_str().len() <= MAX_ROOM_LEN);
                    assert!(!event.is_empty() && event.len() <= MAX_EVENT_LEN);
                    assert!(validate_event_name(&event).is_ok());
                    // What session/commands.rs puts on the broker for this publish.
                    let payload = BackendEvent {
                        event: event.as_str().into(),
                        data: Some(&data),
                        id: None,
                        from: Some("user-42".into()),
                        skip: (!echo).then(|| "n1-2a".into()),
                    }
                    .to_payload();
                    let back = BackendEvent::parse(&payload).unwrap_or_else(|e| {
                        panic!(
                            "a client publish became a payload the hub refuses: {e}: {}",
                            String::from_utf8_lossy(&payload)
                        )
                    });
                    assert_eq!(back.event, event.as_str());
                    // An explicit `null` reads back as no `data`; both encode as `null`.
                    assert_eq!(back.data.map_or("null", |d| d.get()), data.get());
                    assert_eq!(back.skip.is_some(), !echo);
                }
                Command::Refresh { .. } | Command::Ping => {}
            }
        }
        Err(error) => {
            if let Some(r) = &error.reference {
                assert!(r.len() <= MAX_REF_LEN, "echoed a ref of {} bytes", r.len());
            }
            // The reply the session sends for it must be one JSON object.
            let reply = encode_error(error.reference.as_deref(), ErrorCode::BadRequest, &error.message);
            let v: serde_json::Value = serde_json::from_str(reply.as_str())
                .unwrap_or_else(|e| panic!("error reply is not JSON: {e}: {}", reply.as_str()));
            assert_eq!(v["type"], "error");
            assert_eq!(v["message"], error.message.as_str());
            assert_eq!(v.get("ref").and_then(|r| r.as_str()), error.reference.as_deref());
        }
    }
});
