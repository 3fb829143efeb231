//! Revoked tokens. `POST /api/v1/disconnect` with `"revoke": true` refuses
//! the user's tokens issued before that moment (by `iat`; all of them when a
//! token has none) on every node, until `jwt.revocation_ttl_s` has passed:
//! the longest token lifetime, after which every such token has expired
//! anyway (docs/PROTOCOL.md §6).
//!
//! Each node holds the revocations in force in memory. It learns a new one
//! from the disconnect control message, and reloads all of them from the
//! broker at start and after every reconnect, so a node that missed the
//! message (down, or cut off from Redis) still refuses.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// One user's revocation: tokens issued before `issued_before` are refused
/// until `until` (both Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub issued_before: u64,
    pub until: u64,
}

#[derive(Default)]
pub struct Revocations {
    by_user: DashMap<Arc<str>, Revocation>,
}

impl Revocations {
    /// Record a revocation; of two for one user, the later cutoff and the
    /// later end hold.
    pub fn record(&self, user: &str, revocation: Revocation) {
        self.by_user
            .entry(Arc::from(user))
            .and_modify(|held| {
                held.issued_before = held.issued_before.max(revocation.issued_before);
                held.until = held.until.max(revocation.until);
            })
            .or_insert(revocation);
    }

    /// Whether a token of `user` issued at `issued_at` is refused at `now`.
    /// A revocation past its end is forgotten.
    pub fn refuses(&self, user: &str, issued_at: Option<u64>, now: u64) -> bool {
        let Some(held) = self.by_user.get(user).map(|r| *r) else {
            return false;
        };
        if held.until <= now {
            self.by_user.remove_if(user, |_, r| r.until <= now);
            return false;
        }
        issued_at.is_none_or(|iat| iat < held.issued_before)
    }

    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_before_the_cutoff_are_refused_until_the_end() {
        let revocations = Revocations::default();
        revocations.record(
            "42",
            Revocation {
                issued_before: 100,
                until: 200,
            },
        );
        assert!(revocations.refuses("42", Some(99), 150));
        assert!(revocations.refuses("42", None, 150), "no iat: refused");
        assert!(
            !revocations.refuses("42", Some(100), 150),
            "issued at the cutoff or later: accepted"
        );
        assert!(!revocations.refuses("7", Some(1), 150), "other users unaffected");
        assert!(!revocations.refuses("42", Some(99), 200), "over at its end");
        assert!(revocations.is_empty(), "and forgotten");
    }

    #[test]
    fn the_later_of_two_revocations_holds() {
        let revocations = Revocations::default();
        let at = |issued_before, until| Revocation { issued_before, until };
        revocations.record("42", at(100, 300));
        revocations.record("42", at(50, 400));
        assert!(revocations.refuses("42", Some(99), 350));
        assert!(!revocations.refuses("42", Some(100), 350));
    }
}
