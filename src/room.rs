//! Room names: `namespace:id`, validated once at the edge so that every map,
//! channel name and log line downstream can trust them.

use std::fmt;
use std::sync::Arc;

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 200;
/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 32;

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
        if !Self::is_valid_id(id) {
            return Err(RoomError::Id);
        }
        Ok(())
    }

    /// True when `id` may follow `namespace:` — also how token claims that
    /// become room ids (`sub`, `org_id`, roles) are checked.
    pub fn is_valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_ROOM_LEN - MAX_NAMESPACE_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.@:=+|~".contains(&b))
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
}
