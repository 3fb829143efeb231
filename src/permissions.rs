//! Permissions: roles → grants from config, and the room rules of docs/PROTOCOL.md §3.
//!
//! - `user:<id>`, `org:<id>`, `role:<r>`: subscribe only to one's own user,
//!   own org, held roles. Publishing there also needs `<ns>:publish`.
//! - any other namespace `ns`: `ns:read` to subscribe, `ns:publish` to
//!   publish. Grants may be exact (`orders:read`), a namespace wildcard
//!   (`orders:*`) or everything (`*`).
//! - everything else is refused.

use std::collections::{BTreeMap, HashMap};

use crate::auth::Identity;
use crate::room::RoomName;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Publish,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Publish => "publish",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    Everything,
    Namespace(String),
    Exact(String, String),
}

impl Grant {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Grant::Everything);
        }
        match text.split_once(':') {
            Some((ns, "*")) if !ns.is_empty() => Ok(Grant::Namespace(ns.into())),
            Some((ns, action)) if !ns.is_empty() && !action.is_empty() && !action.contains('*') => {
                Ok(Grant::Exact(ns.into(), action.into()))
            }
            _ => Err(format!("'{text}' is not a permission (use 'ns:action', 'ns:*' or '*')")),
        }
    }

    fn allows(&self, namespace: &str, action: &str) -> bool {
        match self {
            Grant::Everything => true,
            Grant::Namespace(ns) => ns == namespace,
            Grant::Exact(ns, a) => ns == namespace && a == action,
        }
    }
}

#[derive(Debug, Default)]
pub struct Permissions {
    roles: HashMap<String, Vec<Grant>>,
}

impl Permissions {
    pub fn from_config(roles: &BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let roles = roles
            .iter()
            .map(|(role, grants)| {
                let grants = grants
                    .iter()
                    .map(|g| Grant::parse(g).map_err(|e| format!("role '{role}': {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((role.clone(), grants))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { roles })
    }

    /// Whether any of the identity's roles grants `namespace:action`.
    pub fn granted(&self, identity: &Identity, namespace: &str, action: &str) -> bool {
        identity.roles.iter().any(|role| {
            self.roles
                .get(&**role)
                .is_some_and(|grants| grants.iter().any(|g| g.allows(namespace, action)))
        })
    }

    /// Whether the identity may do `action` on `room`.
    pub fn allows(&self, identity: &Identity, room: &RoomName, action: Action) -> bool {
        let owns = match room.namespace() {
            "user" => Some(room.id() == &*identity.user_id),
            "org" => Some(identity.org_id.as_deref() == Some(room.id())),
            "role" => Some(identity.has_role(room.id())),
            _ => None,
        };
        match (owns, action) {
            (Some(owns), Action::Read) => owns,
            (Some(owns), Action::Publish) => owns && self.granted(identity, room.namespace(), "publish"),
            (None, action) => self.granted(identity, room.namespace(), action.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn perms() -> Permissions {
        let mut roles = BTreeMap::new();
        roles.insert("admin".into(), vec!["*".into()]);
        roles.insert("support".into(), vec!["orders:read".into(), "orders:update".into()]);
        roles.insert("manager".into(), vec!["orders:*".into()]);
        Permissions::from_config(&roles).unwrap()
    }

    fn who(user: &str, roles: &[&str]) -> Identity {
        Identity {
            user_id: Arc::from(user),
            org_id: Some(Arc::from("acme")),
            roles: roles.iter().map(|r| Arc::from(*r)).collect(),
            expires_at: 0,
            issued_at: None,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn own_rooms_only() {
        let p = perms();
        let me = who("42", &["support"]);
        assert!(p.allows(&me, &room("user:42"), Action::Read));
        assert!(!p.allows(&me, &room("user:43"), Action::Read));
        assert!(p.allows(&me, &room("org:acme"), Action::Read));
        assert!(!p.allows(&me, &room("org:evil"), Action::Read));
        assert!(p.allows(&me, &room("role:support"), Action::Read));
        assert!(!p.allows(&me, &room("role:admin"), Action::Read));
        // Even "*" does not open another user's room.
        assert!(!p.allows(&who("1", &["admin"]), &room("user:42"), Action::Read));
    }

    #[test]
    fn namespaces_need_grants() {
        let p = perms();
        let support = who("42", &["support"]);
        assert!(p.allows(&support, &room("orders:1"), Action::Read));
        assert!(!p.allows(&support, &room("orders:1"), Action::Publish));
        assert!(!p.allows(&support, &room("chat:1"), Action::Read));
        let manager = who("5", &["manager"]);
        assert!(p.allows(&manager, &room("orders:1"), Action::Publish));
        let admin = who("1", &["admin"]);
        assert!(p.allows(&admin, &room("anything:1"), Action::Publish));
        assert!(p.allows(&admin, &room("org:acme"), Action::Publish));
        assert!(!p.allows(&support, &room("org:acme"), Action::Publish));
        assert!(!p.allows(&who("9", &[]), &room("orders:1"), Action::Read));
        assert!(!p.allows(&who("9", &["unknown-role"]), &room("orders:1"), Action::Read));
    }

    #[test]
    fn bad_grants_are_config_errors() {
        let mut roles = BTreeMap::new();
        roles.insert("x".into(), vec!["orders".into()]);
        assert!(Permissions::from_config(&roles).is_err());
        roles.insert("x".into(), vec!["orders:".into()]);
        assert!(Permissions::from_config(&roles).is_err());
        roles.insert("x".into(), vec!["orders:re*d".into()]);
        assert!(Permissions::from_config(&roles).is_err());
    }
}
