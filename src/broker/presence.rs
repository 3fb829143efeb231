//! What every broker shares of presence (docs/PROTOCOL.md §12): the
//! updates a node sends, the members a read returns, and the markers that
//! carry a room's `join`/`leave` through its channel.
//!
//! A node tells the broker its own members of each presence room as
//! absolute connection counts per user ([`RoomUpdate`]); the broker sums the
//! counts of every live node. Whether a user's first connection entered or
//! its last one left is decided there, from the summed counts (cluster-wide,
//! atomically with the update), and published to the room as a marker
//! payload, `__p:j:<user>` or `__p:l:<user>`, that the hub turns into the
//! `join`/`leave` frame.

use std::sync::Arc;

use bytes::Bytes;

use crate::room::RoomName;

/// The prefix of a presence marker on a room's channel.
pub const MARKER: &[u8] = b"__p:";

/// One room's users on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomUpdate {
    pub room: RoomName,
    /// `(user, connections on this node)`; 0 removes the user.
    pub users: Vec<(Arc<str>, u32)>,
    /// `users` is the node's whole state of the room: its users not listed
    /// are removed. (An empty full update takes the node out of the room.)
    pub replace: bool,
}

impl RoomUpdate {
    /// A heartbeat: keep the node's entry in the room alive, change nothing.
    pub fn beat(room: RoomName) -> Self {
        Self {
            room,
            users: Vec::new(),
            replace: false,
        }
    }

    pub fn is_beat(&self) -> bool {
        !self.replace && self.users.is_empty()
    }
}

/// How an update went, per room: whether the node's entry is live after it.
/// A heartbeat that finds it gone (expired, or Redis lost it) tells the
/// tracker to write the room's full state again.
pub type Applied = Vec<bool>;

/// One user in a room, cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub user_id: String,
    pub connections: u64,
}

/// A presence change carried on a room's channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    Join(&'a str),
    Leave(&'a str),
}

/// The marker payload announcing `user`'s join (`join`) or leave.
pub fn marker(join: bool, user: &str) -> Bytes {
    let kind = if join { "j" } else { "l" };
    Bytes::from(format!("__p:{kind}:{user}"))
}

/// The marker a payload carries, if it is one.
pub fn unmark(payload: &[u8]) -> Option<Marker<'_>> {
    let rest = payload.strip_prefix(MARKER)?;
    let (kind, user) = (rest.get(..2)?, rest.get(2..)?);
    let user = std::str::from_utf8(user).ok().filter(|u| !u.is_empty())?;
    match kind {
        b"j:" => Some(Marker::Join(user)),
        b"l:" => Some(Marker::Leave(user)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_nothing_else_is_one() {
        assert_eq!(unmark(&marker(true, "42")), Some(Marker::Join("42")));
        assert_eq!(unmark(&marker(false, "a:b")), Some(Marker::Leave("a:b")));
        for other in [
            &b"__p:x:1"[..],
            b"__p:j:",
            b"__p:",
            b"{\"event\":\"e\"}",
            b"__d:1:e__{}",
        ] {
            assert_eq!(unmark(other), None);
        }
    }
}
