//! Room names: `namespace:id`, validated once at the edge so that every map,
//! channel name and log line downstream can trust them.

use std::fmt;
use std::sync::Arc;

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 200;
/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 32;
/// Longest id a token claim (`sub`, `org_id`, a role) may hold: its room,
/// `role:<id>` or `user:<id>` at the longest, must fit in [`MAX_ROOM_LEN`].
pub const MAX_CLAIM_ID_LEN: usize = MAX_ROOM_LEN - "role:".len();

/// A validated room name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a room name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room name is longer than {MAX_ROOM_LEN} bytes")]
    TooLong,
    #[error("room name must look like 'namespace:id'")]
    Shape,
    #[error("room namespace must be 1-{MAX_NAMESPACE_LEN} characters of a-z, 0-9, '_' or '-'")]
    Namespace,
    #[error("room id may only contain letters, digits and _ - . @ : = + | ~")]
    Id,
}

impl RoomName {
    pub fn new(name: impl Into<String>) -> Result<Self, RoomError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(Arc::from(name)))
    }

    fn check(name: &str) -> Result<(), RoomError> {
        if name.len() > MAX_ROOM_LEN {
            return Err(RoomError::TooLong);
        }
        let (namespace, id) = name.split_once(':').ok_or(RoomError::Shape)?;
        if namespace.is_empty()
            || namespace.len() > MAX_NAMESPACE_LEN
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(RoomError::Namespace);
        }
        // Its length is bounded by the whole name's, checked above.
        if !has_id_chars(id) {
            return Err(RoomError::Id);
        }
        Ok(())
    }

    /// True when a token claim (`sub`, `org_id`, a role) can be a room id:
    /// the id characters, and short enough that its room fits.
    pub fn is_valid_id(id: &str) -> bool {
        id.len() <= MAX_CLAIM_ID_LEN && has_id_chars(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        // Validated to contain ':' at construction.
        self.0.split_once(':').map_or(&*self.0, |(ns, _)| ns)
    }

    pub fn id(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, id)| id)
    }
}

fn has_id_chars(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:=+|~".contains(&b))
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_ids() {
        for name in [
            "user:42",
            "org:acme",
            "role:support",
            "orders:123",
            "user:auth0|abc",
            "user:a@b.com",
            "doc:a:b",
        ] {
            let room = RoomName::new(name).unwrap();
            assert_eq!(room.as_str(), name);
        }
        assert_eq!(RoomName::new("doc:a:b").unwrap().namespace(), "doc");
        assert_eq!(RoomName::new("doc:a:b").unwrap().id(), "a:b");
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(RoomName::new("nocolon"), Err(RoomError::Shape));
        assert_eq!(RoomName::new(":42"), Err(RoomError::Namespace));
        assert_eq!(RoomName::new("Orders:1"), Err(RoomError::Namespace));
        assert_eq!(RoomName::new("orders:"), Err(RoomError::Id));
        assert_eq!(RoomName::new("orders:a b"), Err(RoomError::Id));
        assert_eq!(RoomName::new("orders:*"), Err(RoomError::Id));
        assert_eq!(RoomName::new("orders:ü"), Err(RoomError::Id));
        assert_eq!(RoomName::new(format!("a:{}", "x".repeat(300))), Err(RoomError::TooLong));
    }

    #[test]
    fn the_limit_is_200_bytes_in_all_whatever_the_split() {
        // Long ids up to the whole name's limit are fine, not "bad characters".
        let longest = format!("a:{}", "x".repeat(MAX_ROOM_LEN - 2));
        assert_eq!(RoomName::new(longest.as_str()).unwrap().id().len(), 198);
        let over = format!("a:{}", "x".repeat(MAX_ROOM_LEN - 1));
        assert_eq!(RoomName::new(over), Err(RoomError::TooLong));
        assert!(
            RoomError::TooLong.to_string().contains("longer than 200 bytes"),
            "the message says what is wrong"
        );
        // A claim id is as long as its longest room allows.
        let claim = "y".repeat(MAX_CLAIM_ID_LEN);
        assert!(RoomName::is_valid_id(&claim));
        assert!(RoomName::new(format!("role:{claim}")).is_ok());
        assert!(!RoomName::is_valid_id(&format!("{claim}y")));
    }
}
