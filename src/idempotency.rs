//! `Idempotency-Key` on `POST /api/v1/publish`: a retry with the same key
//! within [`TTL_S`], on any node, publishes only to the rooms the first
//! attempt did not reach, and answers with the first attempt's positions
//! (docs/PROTOCOL.md §6). A broker error after the first room then costs a
//! retry nothing twice.
//!
//! What each key reached is kept by the broker (a Redis hash per key with a
//! TTL; a map in the memory broker), recorded room by room as each publish
//! succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::broker::Position;

/// How long a key is remembered, in seconds: ten minutes.
pub const TTL_S: u64 = 600;
/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Keys the memory broker holds before it drops the expired ones.
const MEMORY_SWEEP_AT: usize = 1024;

/// What a key reached: room → the position it got (None: a plain room).
pub type Reached = HashMap<String, Option<Position>>;

/// Check a key: 1–128 bytes of visible ASCII.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters"
        ));
    }
    Ok(())
}

/// How a reached room is stored.
pub fn encode(position: Option<&Position>) -> String {
    match position {
        Some(p) => json!({"offset": p.offset, "epoch": &*p.epoch}).to_string(),
        None => "null".into(),
    }
}

/// A stored room back; None when it cannot be read (then it is not taken as
/// reached, and a retry publishes it).
pub fn decode(stored: &str) -> Option<Option<Position>> {
    match serde_json::from_str::<Value>(stored).ok()? {
        Value::Null => Some(None),
        value => Some(Some(Position {
            offset: value["offset"].as_u64()?,
            epoch: value["epoch"].as_str()?.into(),
        })),
    }
}

/// The memory broker's keys: one node, so one map.
#[derive(Default)]
pub struct MemoryKeys {
    keys: Mutex<HashMap<String, (Instant, Reached)>>,
}

impl MemoryKeys {
    pub fn reached(&self, key: &str) -> Reached {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(key) {
            Some((until, reached)) if *until > Instant::now() => reached.clone(),
            _ => Reached::new(),
        }
    }

    pub fn record(&self, key: &str, room: &str, position: Option<&Position>) {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MEMORY_SWEEP_AT {
            keys.retain(|_, (until, _)| *until > now);
        }
        let until = now + Duration::from_secs(TTL_S);
        let entry = keys.entry(key.to_string()).or_insert_with(|| (until, Reached::new()));
        if entry.0 <= now {
            *entry = (until, Reached::new());
        }
        entry.1.insert(room.to_string(), position.cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_128_bytes() {
        assert!(validate_key("order-7:retry").is_ok());
        assert!(validate_key(&"k".repeat(128)).is_ok());
        for bad in ["", "has space", "tab\t", "ünï", &"k".repeat(129)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn positions_round_trip_and_a_memory_key_remembers_its_rooms() {
        let position = Position {
            offset: 7,
            epoch: "e1".into(),
        };
        assert_eq!(decode(&encode(Some(&position))), Some(Some(position.clone())));
        assert_eq!(decode(&encode(None)), Some(None));
        assert_eq!(decode("garbage"), None);
        let keys = MemoryKeys::default();
        keys.record("k", "orders:1", Some(&position));
        keys.record("k", "user:1", None);
        let reached = keys.reached("k");
        assert_eq!(reached.len(), 2);
        assert_eq!(reached["orders:1"], Some(position));
        assert!(keys.reached("other").is_empty());
    }
}
