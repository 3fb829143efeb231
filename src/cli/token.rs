//! `wsgate token`: mint a token with the configured key, for development
//! and tests.

use std::process::ExitCode;

use super::TokenArgs;
use crate::auth::{Signer, TokenRequest};
use crate::config::Config;

/// The longest lifetime `wsgate token` mints: ten years.
const MAX_TOKEN_TTL_S: u64 = 10 * 365 * 24 * 3600;

pub fn run(config: &Config, args: &TokenArgs) -> ExitCode {
    if !(1..=MAX_TOKEN_TTL_S).contains(&args.ttl) {
        eprintln!(
            "wsgate token: --ttl must be 1 to {MAX_TOKEN_TTL_S} seconds, not {}",
            args.ttl
        );
        return ExitCode::from(64);
    }
    let signer = match &args.private_key_file {
        Some(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|pem| Signer::from_private_pem(&pem, config.jwt.claims.clone())),
        None => config
            .jwt
            .secret
            .as_ref()
            .or(config.jwt.dev_secret.as_ref())
            .ok_or_else(|| "no HMAC secret configured: pass --private-key-file to sign RS256/ES256 tokens".to_string())
            .and_then(|secret| Signer::hs256(secret.expose(), config.jwt.claims.clone())),
    };
    let signer = match signer {
        Ok(signer) => signer,
        Err(error) => {
            eprintln!("wsgate token: {error}");
            return ExitCode::from(64);
        }
    };
    let request = TokenRequest {
        sub: args.sub.clone(),
        org: args.org.clone(),
        roles: args.roles.clone(),
        ttl_s: args.ttl,
        issuer: config.jwt.issuer.first().cloned(),
        audience: config.jwt.audience.first().cloned(),
        kid: args.kid.clone(),
    };
    match signer.sign(&request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wsgate token: {error}");
            ExitCode::FAILURE
        }
    }
}
