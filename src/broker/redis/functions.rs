//! The Redis Function library `wsgate` (`wsgate.lua` beside this file): how
//! it is generated from the `[history]` config, loaded, and called.
//!
//! Backends publish durably with `FCALL wsgate_publish 1 gw:<room> <payload>`,
//! which refuses a payload the gateway could not read. The gateway itself
//! calls `wsgate_append` (which also returns the epoch, and skips that
//! check: the gateway has already parsed the payload, with the parser every
//! node reads it with) and `wsgate_history`.

use bytes::Bytes;
use fred::prelude::*;

use crate::broker::history::{HistoryPage, Position};
use crate::broker::memory::POSITION_TTL;
use crate::config::HistoryConfig;

const TEMPLATE: &str = include_str!("wsgate.lua");

/// The library's source for this config. Its version is a hash of the text,
/// so nodes with the same config load the same library, and a node with a
/// changed config replaces it (and says so in its log). `sharded`: publish
/// with `SPUBLISH` (cluster mode), so the event stays on the room's shard.
pub fn library(prefix: &str, history: &HistoryConfig, max_event_bytes: usize, sharded: bool) -> (String, String) {
    let all = history.namespaces.iter().any(|ns| ns == "*");
    let namespaces: Vec<String> = history
        .namespaces
        .iter()
        .filter(|ns| *ns != "*")
        .map(|ns| format!("['{ns}'] = true"))
        .collect();
    let position_ttl = history.ttl_s.max(POSITION_TTL.as_secs());
    let position_refresh = position_refresh(position_ttl, history.ttl_s);
    let body = TEMPLATE
        .replace("{{PREFIX}}", &lua_string_body(prefix))
        .replace("{{SIZE}}", &history.size.to_string())
        .replace("{{MAX_EVENT_BYTES}}", &max_event_bytes.to_string())
        .replace("{{TTL}}", &history.ttl_s.to_string())
        .replace("{{POSITION_TTL}}", &position_ttl.to_string())
        .replace("{{POSITION_REFRESH}}", &position_refresh.to_string())
        .replace(
            "{{POSITION_REFRESH_TTL}}",
            &position_ttl
                .saturating_add((position_refresh - 1).saturating_mul(history.ttl_s))
                .to_string(),
        )
        .replace("{{ALL}}", if all { "true" } else { "false" })
        .replace("{{PUBLISH}}", if sharded { "SPUBLISH" } else { "PUBLISH" })
        .replace("{{NAMESPACES}}", &namespaces.join(", "));
    let version = format!("1-{:016x}", crate::fingerprint::fnv1a(body.as_bytes()));
    (body.replace("{{VERSION}}", &version), version)
}

/// Every how many events the function pushes back a position's expiry:
/// as rarely as keeps the position's lifetime within a tenth over
/// `position_ttl` (see `POSITION_REFRESH` in the library).
fn position_refresh(position_ttl: u64, ttl_s: u64) -> u64 {
    (position_ttl / ttl_s.max(1).saturating_mul(10)).max(1)
}

/// The prefix is validated ASCII without spaces; escape what a single-quoted
/// Lua string cannot hold as is.
fn lua_string_body(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// `FUNCTION LOAD REPLACE` the library: on every primary in cluster mode,
/// since a room's FCALL runs on the shard that owns it.
pub async fn load(client: &Client, source: &str, cluster: bool) -> Result<(), Error> {
    if cluster {
        client.function_load_cluster::<Value, _>(true, source).await.map(drop)
    } else {
        client.function_load::<Value, _>(true, source).await.map(drop)
    }
}

/// `FCALL wsgate_append`: the new event's position. `payload` is one the
/// gateway has parsed ([`crate::protocol::BackendEvent`]).
pub async fn append(client: &Client, channel: String, payload: Bytes) -> Result<Position, Error> {
    let reply: Vec<Value> = client.fcall("wsgate_append", channel, payload).await?;
    match reply.as_slice() {
        [offset, epoch] => Ok(Position {
            offset: as_offset(offset)?,
            epoch: as_epoch(epoch)?,
        }),
        _ => Err(unexpected("wsgate_append")),
    }
}

/// `FCALL wsgate_history`.
pub async fn history(
    client: &Client,
    channel: String,
    since: u64,
    limit: usize,
    max_gap: u64,
) -> Result<HistoryPage, Error> {
    let args = vec![since.to_string(), limit.to_string(), max_gap.to_string()];
    let reply: Vec<Value> = client.fcall("wsgate_history", channel, args).await?;
    let [epoch, offset, entries] = reply.as_slice() else {
        return Err(unexpected("wsgate_history"));
    };
    let position = Position {
        offset: as_offset(offset)?,
        epoch: as_epoch(epoch)?,
    };
    let entries = match entries {
        Value::Array(entries) => entries.as_slice(),
        Value::Null => &[],
        _ => return Err(unexpected("wsgate_history entries")),
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        // [id, [field, value]]: id "<offset>-0", field "p".
        let Value::Array(parts) = entry else {
            return Err(unexpected("wsgate_history entry"));
        };
        let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
            return Err(unexpected("wsgate_history entry"));
        };
        let offset = id
            .as_str()
            .and_then(|id| id.split_once('-').and_then(|(ms, _)| ms.parse::<u64>().ok()))
            .ok_or_else(|| unexpected("wsgate_history entry id"))?;
        let payload = match fields.get(1) {
            Some(Value::Bytes(bytes)) => bytes.clone(),
            Some(Value::String(text)) => Bytes::from(text.to_string()),
            _ => return Err(unexpected("wsgate_history payload")),
        };
        events.push((offset, payload));
    }
    Ok(HistoryPage { position, events })
}

fn as_offset(value: &Value) -> Result<u64, Error> {
    match value {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| unexpected("offset")),
        other => other
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected("offset")),
    }
}

fn as_epoch(value: &Value) -> Result<std::sync::Arc<str>, Error> {
    value
        .as_str()
        .filter(|e| crate::broker::history::is_valid_epoch(e))
        .map(|e| std::sync::Arc::from(&*e))
        .ok_or_else(|| unexpected("epoch"))
}

fn unexpected(what: &str) -> Error {
    Error::new(ErrorKind::Parse, format!("unexpected reply shape from {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_positions_expiry_is_pushed_back_rarely_but_never_too_late() {
        for (position_ttl, ttl_s) in [
            (86_400, 600),
            (86_400, 1),
            (86_400, 8_640),
            (86_400, 86_400),
            (100_000, 0),
        ] {
            let refresh = position_refresh(position_ttl, ttl_s);
            assert!(refresh >= 1);
            // Events between two refreshes span less than (refresh - 1) * ttl_s.
            assert!((refresh - 1) * ttl_s <= position_ttl / 10, "{position_ttl} {ttl_s}");
        }
        assert_eq!(position_refresh(86_400, 600), 14);
        assert_eq!(position_refresh(86_400, 86_400), 1);
    }

    #[test]
    fn the_library_embeds_the_config_and_is_versioned_by_it() {
        let mut history = HistoryConfig {
            namespaces: vec!["orders".into(), "chat".into()],
            ..HistoryConfig::default()
        };
        let (source, version) = library("gw:", &history, 61440, false);
        assert!(source.starts_with("#!lua name=wsgate\n"));
        assert!(source.contains("local SIZE = 1000"));
        // 24 h plus 13 events' span of ttl_s, as text: no arithmetic at load time.
        assert!(source.contains("local POSITION_REFRESH_TTL = '94200'"));
        assert!(source.contains("redis.call('PUBLISH'"));
        let (sharded, sharded_version) = library("gw:", &history, 61440, true);
        assert!(sharded.contains("redis.call('SPUBLISH'"));
        assert_ne!(sharded_version, version);
        assert!(source.contains("['orders'] = true, ['chat'] = true"));
        assert!(source.contains(&version) && !source.contains("{{"));
        history.size = 10;
        assert_ne!(
            library("gw:", &history, 61440, false).1,
            version,
            "a new config is a new version"
        );
    }
}
