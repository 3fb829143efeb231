//! The Redis Function library `wsgate_presence` (`presence.lua` beside this
//! file): how it is generated from the `[presence]` config and called.
//!
//! Each update is one `FCALL wsgate_presence_update` on the room's keys;
//! a batch of them goes out as one pipeline (in cluster mode fred sends each
//! to the shard that owns its room). A read is one `FCALL_RO
//! wsgate_presence_list`.

use fred::prelude::*;

use crate::broker::presence::{Applied, Member, RoomUpdate};
use crate::broker::room_channel;
use crate::config::PresenceConfig;

const TEMPLATE: &str = include_str!("presence.lua");

/// The library's source for this config, and its version (a hash of the
/// text, as for the `wsgate` library). `sharded`: announce with `SPUBLISH`.
pub fn library(prefix: &str, presence: &PresenceConfig, sharded: bool) -> (String, String) {
    let body = TEMPLATE
        .replace("{{PREFIX}}", prefix)
        .replace("{{TTL_MS}}", &presence.ttl_ms().to_string())
        .replace("{{EVENTS}}", if presence.events { "true" } else { "false" })
        .replace("{{PUBLISH}}", if sharded { "SPUBLISH" } else { "PUBLISH" });
    let version = format!("1-{:016x}", crate::fingerprint::fnv1a(body.as_bytes()));
    (body.replace("{{VERSION}}", &version), version)
}

/// The zset of the nodes present in a room.
pub fn nodes_key(prefix: &str, room: &str) -> String {
    format!("{{{}}}:pn", room_channel(prefix, room))
}

/// The hash of one node's users in a room.
pub fn users_key(prefix: &str, room: &str, node: &str) -> String {
    format!("{{{}}}:pu:{node}", room_channel(prefix, room))
}

/// Every update in one pipeline; per update, whether the node's entry is live.
pub async fn update(client: &Client, prefix: &str, node: &str, updates: &[RoomUpdate]) -> Result<Applied, Error> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let pipeline = client.pipeline();
    for update in updates {
        let room = update.room.as_str();
        let mut args: Vec<String> = Vec::with_capacity(2 + 2 * update.users.len());
        args.push(node.to_string());
        args.push(if update.replace { "1" } else { "0" }.to_string());
        for (user, count) in &update.users {
            args.push(user.to_string());
            args.push(count.to_string());
        }
        let keys = vec![nodes_key(prefix, room), users_key(prefix, room, node)];
        let () = pipeline.fcall("wsgate_presence_update", keys, args).await?;
    }
    let replies: Vec<Value> = pipeline.all().await?;
    if replies.len() != updates.len() {
        return Err(unexpected());
    }
    replies
        .into_iter()
        .map(|reply| match reply {
            Value::Integer(n) => Ok(n == 1),
            _ => Err(unexpected()),
        })
        .collect()
}

/// The users of a room over every live node.
pub async fn list(client: &Client, prefix: &str, room: &str) -> Result<Vec<Member>, Error> {
    let reply: Vec<Value> = client
        .fcall_ro("wsgate_presence_list", nodes_key(prefix, room), Vec::<String>::new())
        .await?;
    let mut members = Vec::with_capacity(reply.len() / 2);
    for pair in reply.chunks(2) {
        let [user, count] = pair else { return Err(unexpected()) };
        let user_id = user.as_string().ok_or_else(unexpected)?;
        let connections = match count {
            Value::Integer(n) => u64::try_from(*n).map_err(|_| unexpected())?,
            _ => return Err(unexpected()),
        };
        members.push(Member { user_id, connections });
    }
    Ok(members)
}

fn unexpected() -> Error {
    Error::new(ErrorKind::Parse, "unexpected reply shape from wsgate_presence")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_embeds_the_config_and_keys_share_the_rooms_slot() {
        let presence = PresenceConfig {
            namespaces: vec!["chat".into()],
            ttl_s: 9,
            events: true,
        };
        let (source, version) = library("gw:", &presence, false);
        assert!(source.starts_with("#!lua name=wsgate_presence\n"));
        assert!(source.contains("local TTL_MS = 9000") && source.contains("local EVENTS = true"));
        assert!(source.contains("redis.call('PUBLISH'") && !source.contains("{{"));
        assert!(source.contains(&version));
        let (sharded, sharded_version) = library("gw:", &presence, true);
        assert!(sharded.contains("redis.call('SPUBLISH'"));
        assert_ne!(sharded_version, version);
        assert_eq!(nodes_key("gw:", "chat:1"), "{gw:chat:1}:pn");
        assert_eq!(users_key("gw:", "chat:1", "n1"), "{gw:chat:1}:pu:n1");
    }
}
