//! Authentication: a JWT becomes the connection's [`Identity`] (user, org,
//! roles, expiry) and the rooms it joins on its own.
//!
//! Algorithms are allow-listed per key, so a token may only be verified by the
//! key its algorithm family belongs to: `alg: none` and algorithm confusion
//! (an HS256 token "signed" with the RSA public key) are refused by
//! construction, not by a special case.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

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

/// A key with the algorithms it may verify.
struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies tokens against the configured keys. Built once at start-up.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    claims: ClaimNames,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().flat_map(|k| k.validation.algorithms.clone()).collect();
        f.debug_struct("Verifier").field("algorithms", &algorithms).finish()
    }
}

/// The key material of a PEM public key, with the algorithm its type implies.
fn public_key_from_pem(pem: &[u8]) -> Result<(DecodingKey, AlgorithmFamily), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, AlgorithmFamily::Rsa));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, AlgorithmFamily::Ec));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, AlgorithmFamily::Ed));
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

fn default_algorithm(family: AlgorithmFamily) -> Algorithm {
    match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    }
}

impl Verifier {
    pub fn from_config(jwt: &JwtConfig) -> Result<Self, String> {
        let allowed: Vec<Algorithm> = jwt
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>()
                    .map_err(|_| format!("unknown JWT algorithm '{name}'"))
            })
            .collect::<Result<_, _>>()?;

        let mut keys = Vec::new();
        let secret = jwt.secret.as_ref().or(jwt.dev_secret.as_ref());
        let mut sources: Vec<(DecodingKey, AlgorithmFamily)> = Vec::new();
        if let Some(secret) = secret {
            let key =
                DecodingKey::from_secret(secret.expose().as_bytes()).map_err(|e| format!("invalid JWT secret: {e}"))?;
            sources.push((key, AlgorithmFamily::Hmac));
        }
        if let Some(path) = &jwt.public_key_file {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            sources.push(public_key_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?);
        }
        for (key, family) in sources {
            let algorithms: Vec<Algorithm> = if allowed.is_empty() {
                vec![default_algorithm(family)]
            } else {
                allowed.iter().copied().filter(|a| a.family() == family).collect()
            };
            if algorithms.is_empty() {
                continue;
            }
            let mut validation = Validation::new(algorithms[0]);
            validation.algorithms = algorithms;
            validation.leeway = jwt.leeway_s;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp"]);
            if jwt.issuer.is_empty() {
                validation.iss = None;
            } else {
                validation.set_issuer(&jwt.issuer);
            }
            if jwt.audience.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&jwt.audience);
            }
            keys.push(VerifyingKey { key, validation });
        }
        if keys.is_empty() {
            return Err("no configured key matches the allowed JWT algorithms".into());
        }
        for alg in &allowed {
            if !keys.iter().any(|k| k.validation.algorithms.contains(alg)) {
                return Err(format!(
                    "JWT algorithm {alg:?} is allowed but no key of its type is configured"
                ));
            }
        }
        Ok(Self {
            keys,
            claims: jwt.claims.clone(),
        })
    }

    /// Verify a token and read the identity it carries.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.validation.algorithms.contains(&header.alg))
            .ok_or(AuthError::Algorithm)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)?;
        self.identity(&data.claims)
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

/// Signs tokens: `wsgate token`, the load tester and the tests.
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    claims: ClaimNames,
}

/// What goes into a minted token.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    pub sub: String,
    pub org: Option<String>,
    pub roles: Vec<String>,
    pub ttl_s: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Signer {
    /// An HMAC signer (HS256) from a shared secret.
    pub fn hs256(secret: &str, claims: ClaimNames) -> Result<Self, String> {
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("invalid secret: {e}"))?,
            algorithm: Algorithm::HS256,
            claims,
        })
    }

    /// A signer from a PEM private key (RSA → RS256, EC → ES256, Ed25519 → EdDSA).
    pub fn from_private_pem(pem: &[u8], claims: ClaimNames) -> Result<Self, String> {
        let (key, algorithm) = if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else {
            return Err("not a PEM RSA, EC or Ed25519 private key".into());
        };
        Ok(Self { key, algorithm, claims })
    }

    pub fn sign(&self, request: &TokenRequest) -> Result<String, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = Map::new();
        claims.insert(self.claims.sub.clone(), Value::from(request.sub.clone()));
        if let Some(org) = &request.org {
            claims.insert(self.claims.org.clone(), Value::from(org.clone()));
        }
        if !request.roles.is_empty() {
            claims.insert(self.claims.roles.clone(), Value::from(request.roles.clone()));
        }
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now.saturating_add(request.ttl_s)));
        if let Some(iss) = &request.issuer {
            claims.insert("iss".into(), Value::from(iss.clone()));
        }
        if let Some(aud) = &request.audience {
            claims.insert("aud".into(), Value::from(aud.clone()));
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
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
        let identity = verifier.verify(&token).unwrap();
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
        assert_eq!(verifier.verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn numeric_sub_is_accepted_and_bad_sub_refused() {
        let verifier = Verifier::from_config(&config("k")).unwrap();
        let key = EncodingKey::from_secret(b"k").unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let numeric = serde_json::json!({"sub": 42, "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &numeric, &key).unwrap();
        assert_eq!(&*verifier.verify(&token).unwrap().user_id, "42");
        let spaced = serde_json::json!({"sub": "a b", "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &spaced, &key).unwrap();
        assert_eq!(verifier.verify(&token), Err(AuthError::Claim("sub".into())));
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
        let identity = verifier.verify(&token).unwrap();
        assert_eq!(identity.org_id.as_deref(), Some("acme"));
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
