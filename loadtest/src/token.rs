//! HS256 tokens for the simulated users, with the claims PROTOCOL.md names:
//! `sub`, `org_id`, `roles`, `iat`, `exp`.

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    org_id: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    iat: u64,
    exp: u64,
}

/// Signs the token of each simulated user; every user is in the same org
/// and holds the same roles.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    org: String,
    roles: Vec<String>,
    ttl_s: u64,
}

impl Minter {
    pub fn hs256(secret: &str, org: &str, roles: &[String], ttl_s: u64) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("the JWT secret is empty".into());
        }
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("invalid secret: {e}"))?,
            header: Header::default(),
            org: org.into(),
            roles: roles.to_vec(),
            ttl_s,
        })
    }

    pub fn mint(&self, sub: &str) -> Result<String, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub,
            org_id: &self.org,
            roles: &self.roles,
            iat: now,
            exp: now + self.ttl_s,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    #[test]
    fn mints_a_verifiable_hs256_token_with_the_protocol_claims() {
        let minter = Minter::hs256("s3cret-s3cret", "lt", &["viewer".into()], 60).expect("minter");
        let token = minter.mint("lt7").expect("token");
        let key = DecodingKey::from_secret(b"s3cret-s3cret").expect("key");
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key, &Validation::new(Algorithm::HS256)).expect("valid");
        assert_eq!(data.claims["sub"], "lt7");
        assert_eq!(data.claims["org_id"], "lt");
        assert_eq!(data.claims["roles"], serde_json::json!(["viewer"]));
        assert!(data.claims["exp"].as_u64().is_some());
    }

    #[test]
    fn refuses_an_empty_secret() {
        assert!(Minter::hs256("", "lt", &[], 60).is_err());
    }
}
