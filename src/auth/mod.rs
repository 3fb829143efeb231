//! Authentication: a JWT becomes the connection's [`Identity`] (user, org,
//! roles, expiry) and the rooms it joins on its own.
//!
//! - [`keys`]: the verification keys and the algorithms each may verify.
//! - [`jwks`]: keys fetched from an IdP's JSON Web Key Set.
//! - [`signer`]: minting tokens (`wsgate token`, dev tokens, tests).
//!
//! A token is checked against the key its `kid` names, else against every
//! key in order, so a key rotation has no window where valid tokens are
//! refused (docs/PROTOCOL.md §8).

pub mod jwks;
pub mod keys;
pub mod signer;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use self::jwks::Jwks;
use self::keys::{KeyPolicy, VerifyingKey};
pub use self::signer::{Signer, TokenRequest};
use crate::config::{ClaimNames, JwtConfig};
use crate::room::RoomName;

/// Who is on the other end of a socket, as its token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub org_id: Option<Arc<str>>,
    pub roles: Vec<Arc<str>>,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's `iat`, when it has one: what a revocation compares.
    pub issued_at: Option<u64>,
}

impl Identity {
    /// The rooms the token alone entitles the connection to:
    /// `user:<sub>`, `org:<org_id>` and one `role:<r>` per role.
    pub fn own_rooms(&self) -> Vec<RoomName> {
        let mut rooms = Vec::with_capacity(2 + self.roles.len());
        // The claims were validated as room ids when the token was read, so
        // these names cannot fail; filter_map keeps that assumption harmless.
        rooms.extend(RoomName::new(format!("user:{}", self.user_id)).ok());
        if let Some(org) = &self.org_id {
            rooms.extend(RoomName::new(format!("org:{org}")).ok());
        }
        for role in &self.roles {
            let room = RoomName::new(format!("role:{role}")).ok();
            if room.as_ref().is_some_and(|r| !rooms.contains(r)) {
                rooms.extend(room);
            }
        }
        rooms
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| &**r == role)
    }
}

/// Why a token was refused. `reason()` is the metric label; `Display` is the
/// message sent to the client (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token given")]
    Missing,
    #[error("no auth frame within the auth timeout")]
    Timeout,
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has no exp claim")]
    MissingExp,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token claim '{0}' is missing or invalid")]
    Claim(String),
    #[error("token has more than {MAX_TOKEN_ROLES} roles")]
    TooManyRoles,
    #[error("token key id is not known")]
    UnknownKey,
    #[error("token was revoked")]
    Revoked,
}

impl AuthError {
    /// Bounded label for `wsgate_auth_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Timeout => "timeout",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Algorithm => "algorithm",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::MissingExp => "missing_exp",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Claim(_) | AuthError::TooManyRoles => "claims",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Revoked => "revoked",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match err.kind() {
            K::InvalidSignature => AuthError::BadSignature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm | K::UnsupportedAlgorithm => {
                AuthError::Algorithm
            }
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::MissingRequiredClaim(claim) if claim == "exp" => AuthError::MissingExp,
            K::MissingRequiredClaim(claim) | K::InvalidClaimFormat(claim) => AuthError::Claim(claim.clone()),
            K::InvalidIssuer => AuthError::Issuer,
            K::InvalidAudience => AuthError::Audience,
            _ => AuthError::Malformed,
        }
    }
}

/// Verifies tokens against the configured keys and, with `jwt.jwks_url`,
/// the IdP's. Built once at start-up.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    jwks: Option<Arc<Jwks>>,
    claims: ClaimNames,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().flat_map(|k| k.validation.algorithms.clone()).collect();
        f.debug_struct("Verifier")
            .field("algorithms", &algorithms)
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl Verifier {
    pub fn from_config(jwt: &JwtConfig) -> Result<Self, String> {
        let policy = KeyPolicy::from_config(jwt)?;
        let keys = keys::configured_keys(jwt, &policy)?;
        let allowed = policy.allowed().to_vec();
        let jwks = match &jwt.jwks_url {
            Some(url) => Some(Arc::new(Jwks::new(
                url,
                policy,
                Duration::from_secs(jwt.jwks_refresh_s),
            )?)),
            None => None,
        };
        if keys.is_empty() && jwks.is_none() {
            return Err(format!(
                "no configured key matches the allowed JWT algorithms (jwt.algorithms: {allowed:?})"
            ));
        }
        // An allowed algorithm no key can verify is a typo; with a key set,
        // its keys decide which are used.
        if jwks.is_none() {
            for alg in &allowed {
                if !keys.iter().any(|k| k.allows(*alg)) {
                    return Err(format!(
                        "JWT algorithm {alg:?} is allowed but no key of its type is configured"
                    ));
                }
            }
        }
        Ok(Self {
            keys,
            jwks,
            claims: jwt.claims.clone(),
        })
    }

    /// The key set, when `jwt.jwks_url` is configured: the node fetches it
    /// at start and keeps it fresh.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Whether tokens can be verified: there are configured keys, or the
    /// key set has loaded once. (`/ready` says so.)
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() || self.jwks.as_ref().is_some_and(|j| j.is_loaded())
    }

    /// Verify a token and read the identity it carries. A `kid` the key set
    /// does not hold prompts one (rate-limited) refetch of the set.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self.verify_cached(token) {
            Err(AuthError::UnknownKey) if self.jwks.is_some() => {
                if let Some(jwks) = &self.jwks {
                    jwks.refresh_soon().await;
                }
                self.verify_cached(token)
            }
            other => other,
        }
    }

    /// Verify against the keys held now, without fetching.
    pub fn verify_cached(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token)?;
        let fetched = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        let all = || self.keys.iter().chain(fetched.iter());
        // The key the token names; failing that, every key without a `kid`
        // (a token's `kid` may be one a static key never had); with no `kid`,
        // every key.
        let named: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) => all().filter(|k| k.kid.as_deref() == Some(kid.as_str())).collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&VerifyingKey> = match (&header.kid, named.is_empty()) {
            (Some(_), false) => named,
            (Some(_), true) => all().filter(|k| k.kid.is_none()).collect(),
            (None, _) => all().collect(),
        };
        let usable: Vec<&VerifyingKey> = candidates.into_iter().filter(|k| k.allows(header.alg)).collect();
        let kid_unknown = header.kid.is_some() && !all().any(|k| k.kid == header.kid);
        if usable.is_empty() {
            return Err(if kid_unknown {
                AuthError::UnknownKey
            } else {
                AuthError::Algorithm
            });
        }
        for key in usable {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => return self.identity(&data.claims),
                // Not this key (its signature or its type): try the next.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidSignature
                            | ErrorKind::InvalidEcdsaKey
                            | ErrorKind::InvalidEddsaKey
                            | ErrorKind::InvalidRsaKey(_)
                            | ErrorKind::InvalidKeyFormat
                    ) =>
                {
                    continue;
                }
                // The signature held; the claims did not.
                Err(e) => return Err(e.into()),
            }
        }
        Err(if kid_unknown {
            AuthError::UnknownKey
        } else {
            AuthError::BadSignature
        })
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let names = &self.claims;
        let user_id = claim_id(claims.get(&names.sub)).ok_or_else(|| AuthError::Claim(names.sub.clone()))?;
        let org_id = match claims.get(&names.org) {
            None | Some(Value::Null) => None,
            some => Some(claim_id(some).ok_or_else(|| AuthError::Claim(names.org.clone()))?),
        };
        let roles = match claims.get(&names.roles) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() > MAX_TOKEN_ROLES => return Err(AuthError::TooManyRoles),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| claim_id(Some(item)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| AuthError::Claim(names.roles.clone()))?,
            Some(_) => return Err(AuthError::Claim(names.roles.clone())),
        };
        let expires_at = claims.get("exp").and_then(Value::as_u64).ok_or(AuthError::MissingExp)?;
        if expires_at > MAX_EXP {
            // Session arithmetic on it would overflow the clock.
            return Err(AuthError::Malformed);
        }
        Ok(Identity {
            user_id,
            org_id,
            roles,
            expires_at,
            issued_at: claims.get("iat").and_then(Value::as_u64),
        })
    }
}

/// The most roles a token may carry. Each is a room the connection joins, and
/// a token is verified on every connect: the bound keeps both cheap.
pub const MAX_TOKEN_ROLES: usize = 64;

/// The latest `exp` accepted: 9999-12-31T23:59:59Z. A later one is not a
/// time any clock here can hold; the token is refused as malformed.
pub const MAX_EXP: u64 = 253_402_300_799;

/// A claim usable as a room id: a string or an integer, in the room charset.
fn claim_id(value: Option<&Value>) -> Option<Arc<str>> {
    let text = match value? {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    RoomName::is_valid_id(&text).then(|| Arc::from(text))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::config::Secret;

    fn config(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: Some(Secret::new(secret)),
            ..JwtConfig::default()
        }
    }

    fn request(sub: &str) -> TokenRequest {
        TokenRequest {
            sub: sub.into(),
            org: Some("acme".into()),
            roles: vec!["support".into(), "viewer".into()],
            ttl_s: 60,
            ..TokenRequest::default()
        }
    }

    #[test]
    fn round_trip_gives_identity_and_rooms() {
        let verifier = Verifier::from_config(&config("k")).unwrap();
        let token = Signer::hs256("k", ClaimNames::default())
            .unwrap()
            .sign(&request("42"))
            .unwrap();
        let identity = verifier.verify_cached(&token).unwrap();
        assert_eq!(&*identity.user_id, "42");
        let rooms: Vec<String> = identity.own_rooms().iter().map(|r| r.to_string()).collect();
        assert_eq!(rooms, ["user:42", "org:acme", "role:support", "role:viewer"]);
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let verifier = Verifier::from_config(&config("right")).unwrap();
        let token = Signer::hs256("wrong", ClaimNames::default())
            .unwrap()
            .sign(&request("42"))
            .unwrap();
        assert_eq!(verifier.verify_cached(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn numeric_sub_is_accepted_and_bad_sub_refused() {
        let verifier = Verifier::from_config(&config("k")).unwrap();
        let key = EncodingKey::from_secret(b"k").unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let numeric = serde_json::json!({"sub": 42, "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &numeric, &key).unwrap();
        assert_eq!(&*verifier.verify_cached(&token).unwrap().user_id, "42");
        let spaced = serde_json::json!({"sub": "a b", "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &spaced, &key).unwrap();
        assert_eq!(verifier.verify_cached(&token), Err(AuthError::Claim("sub".into())));
    }

    #[test]
    fn custom_claim_names() {
        let mut jwt = config("k");
        jwt.claims = ClaimNames {
            sub: "uid".into(),
            org: "tenant".into(),
            roles: "groups".into(),
        };
        let verifier = Verifier::from_config(&jwt).unwrap();
        let token = Signer::hs256("k", jwt.claims.clone())
            .unwrap()
            .sign(&request("7"))
            .unwrap();
        let identity = verifier.verify_cached(&token).unwrap();
        assert_eq!(identity.org_id.as_deref(), Some("acme"));
    }

    #[test]
    fn a_configured_key_no_allowed_algorithm_fits_is_a_config_error() {
        let mut jwt = config("a-secret-long-enough-for-hs256-0123456789");
        jwt.public_key_file = Some(format!("{}/tests/fixtures/rsa_public.pem", env!("CARGO_MANIFEST_DIR")).into());
        jwt.algorithms = vec!["RS256".into()];
        let err = Verifier::from_config(&jwt).unwrap_err();
        assert!(err.contains("jwt.secret") && err.contains("RS256"), "{err}");
        // The dev secret beside a real key is only unused.
        jwt.dev_secret = jwt.secret.take();
        assert!(Verifier::from_config(&jwt).is_ok());
    }

    #[test]
    fn allow_list_without_matching_key_is_a_config_error() {
        let mut jwt = config("k");
        jwt.algorithms = vec!["RS256".into()];
        assert!(Verifier::from_config(&jwt).is_err());
        jwt.algorithms = vec!["HS999".into()];
        assert!(Verifier::from_config(&jwt).is_err());
    }
}
