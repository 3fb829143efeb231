//! Minting tokens: `wsgate token`, the dev token endpoint, the load tester
//! and the tests.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::ClaimNames;

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
    /// The `kid` header: which of the verifier's keys signed it.
    pub kid: Option<String>,
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
        let mut header = Header::new(self.algorithm);
        header.kid = request.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}
