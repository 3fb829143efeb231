//! Verification keys: each with its `kid` and the algorithms it may verify,
//! built from the configured secrets and PEM files or from a JWK.
//!
//! Algorithms are allow-listed per key, so a token may only be verified by a
//! key of its algorithm's family: `alg: none` and algorithm confusion (an
//! HS256 token "signed" with an RSA public key) are refused by construction.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};

use crate::config::JwtConfig;

/// A key, the `kid` tokens signed by it carry (if any), and its checks.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub validation: Validation,
}

impl VerifyingKey {
    pub fn allows(&self, algorithm: Algorithm) -> bool {
        self.validation.algorithms.contains(&algorithm)
    }
}

/// How keys are checked: the allow-list and the claim rules of `[jwt]`.
pub struct KeyPolicy {
    allowed: Vec<Algorithm>,
    leeway_s: u64,
    issuer: Vec<String>,
    audience: Vec<String>,
}

impl KeyPolicy {
    pub fn from_config(jwt: &JwtConfig) -> Result<Self, String> {
        Ok(Self {
            allowed: parse_algorithms(&jwt.algorithms, "jwt.algorithms")?,
            leeway_s: jwt.leeway_s,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
        })
    }

    pub fn allowed(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// A key of `family`, restricted to `own` algorithms when given (else
    /// the allow-list's of that family, else the family's default). None
    /// when no algorithm is left for it.
    pub fn key(
        &self,
        kid: Option<String>,
        key: DecodingKey,
        family: AlgorithmFamily,
        own: &[Algorithm],
    ) -> Result<Option<VerifyingKey>, String> {
        // The key material decides what it can verify: an EC key one curve's
        // algorithm, an Ed25519 key exactly 32 bytes. A key that does not fit
        // is refused here, before a token could reach the verifier with it.
        let fits = key_fits(&key, family)?;
        let algorithms: Vec<Algorithm> = if !own.is_empty() {
            if let Some(foreign) = own.iter().find(|a| a.family() != family) {
                return Err(format!("algorithm {foreign:?} does not fit a key of this type"));
            }
            if let Some(refused) = own
                .iter()
                .find(|a| !self.allowed.is_empty() && !self.allowed.contains(a))
            {
                return Err(format!("algorithm {refused:?} is not in jwt.algorithms"));
            }
            if let Some(refused) = own.iter().find(|a| fits.is_some_and(|only| only != **a)) {
                return Err(format!("algorithm {refused:?} does not fit this key's curve"));
            }
            own.to_vec()
        } else if self.allowed.is_empty() {
            vec![fits.unwrap_or(default_algorithm(family))]
        } else {
            self.allowed
                .iter()
                .copied()
                .filter(|a| a.family() == family && fits.is_none_or(|only| only == *a))
                .collect()
        };
        let Some(first) = algorithms.first().copied() else {
            return Ok(None);
        };
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms;
        validation.leeway = self.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only compared:
        // a token that leaves the claim out is refused.
        let mut required = vec!["exp"];
        if self.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&self.issuer);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(VerifyingKey { kid, key, validation }))
    }

    /// The key of one JWK, or None when it is not a signing key this node
    /// may use (an encryption key, an algorithm off the allow-list, a
    /// symmetric key the allow-list does not name).
    pub fn key_of_jwk(&self, jwk: &Jwk) -> Option<VerifyingKey> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        // A key set is public: a shared secret in it would let anyone sign.
        // An OKP key must be Ed25519 (X25519 is for key agreement).
        match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => return None,
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve != EllipticCurve::Ed25519 => return None,
            _ => {}
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let family = key.family();
        if family == AlgorithmFamily::Hmac {
            return None;
        }
        let own: Vec<Algorithm> = match &jwk.common.key_algorithm {
            Some(alg) => vec![alg.to_string().parse::<Algorithm>().ok()?],
            None => Vec::new(),
        };
        self.key(jwk.common.key_id.clone(), key, family, &own).ok().flatten()
    }
}

/// The configured keys: `jwt.secret` (or the dev secret), `jwt.public_key_file`,
/// then `jwt.keys` in order.
pub fn configured_keys(jwt: &JwtConfig, policy: &KeyPolicy) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::new();
    // A configured key that no allowed algorithm fits could verify nothing:
    // a mistake to report, not a key to drop. (The dev secret beside a real
    // key is simply unused.)
    let allowed = policy.allowed().to_vec();
    let mut add = |setting: &str,
                   kid: Option<String>,
                   (key, family): (DecodingKey, AlgorithmFamily),
                   own: &[Algorithm],
                   required: bool| {
        match policy
            .key(kid, key, family, own)
            .map_err(|e| format!("{setting}: {e}"))?
        {
            Some(key) => keys.push(key),
            None if required => {
                return Err(format!(
                    "{setting}: no algorithm of jwt.algorithms ({allowed:?}) fits this key"
                ));
            }
            None => {}
        }
        Ok::<(), String>(())
    };
    match (&jwt.secret, &jwt.dev_secret) {
        (Some(secret), _) => add("jwt.secret", None, hmac_key(secret.expose())?, &[], true)?,
        (None, Some(dev)) => add("jwt.dev_secret", None, hmac_key(dev.expose())?, &[], false)?,
        (None, None) => {}
    }
    if let Some(path) = &jwt.public_key_file {
        add("jwt.public_key_file", None, read_public_key(path)?, &[], true)?;
    }
    for extra in &jwt.keys {
        let own = parse_algorithms(&extra.algorithms, "jwt.keys.algorithms")?;
        let key = match (&extra.secret, &extra.public_key_file) {
            (Some(secret), _) => hmac_key(secret.expose())?,
            (None, Some(path)) => read_public_key(path)?,
            (None, None) => return Err("jwt.keys: each key needs a secret or a public_key_file".into()),
        };
        add("jwt.keys", extra.kid.clone(), key, &own, true)?;
    }
    Ok(keys)
}

/// The one algorithm an EC key's curve allows (P-256: ES256, P-384: ES384),
/// or None for a family without curves. Refuses an EC point of another
/// size and an Ed25519 key that is not 32 bytes: the verifier would panic
/// on it.
fn key_fits(key: &DecodingKey, family: AlgorithmFamily) -> Result<Option<Algorithm>, String> {
    let bytes = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => bytes.len(),
        DecodingKeyKind::RsaModulusExponent { .. } => return Ok(None),
    };
    match family {
        AlgorithmFamily::Ec => match bytes {
            65 => Ok(Some(Algorithm::ES256)),
            97 => Ok(Some(Algorithm::ES384)),
            _ => Err("an EC key must be on P-256 or P-384".into()),
        },
        AlgorithmFamily::Ed if bytes != 32 => Err("an Ed25519 key must be 32 bytes".into()),
        _ => Ok(None),
    }
}

fn hmac_key(secret: &str) -> Result<(DecodingKey, AlgorithmFamily), String> {
    let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("invalid JWT secret: {e}"))?;
    Ok((key, AlgorithmFamily::Hmac))
}

fn read_public_key(path: &std::path::Path) -> Result<(DecodingKey, AlgorithmFamily), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    public_key_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The key material of a PEM public key, with the family its type implies.
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

fn parse_algorithms(names: &[String], setting: &str) -> Result<Vec<Algorithm>, String> {
    names
        .iter()
        .map(|name| {
            name.parse::<Algorithm>()
                .map_err(|_| format!("{setting}: unknown JWT algorithm '{name}'"))
        })
        .collect()
}

fn default_algorithm(family: AlgorithmFamily) -> Algorithm {
    match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    }
}
