//! `wsgate check-config`: everything `serve` would refuse at start, checked
//! without starting — the config and the environment, the key files (and
//! the algorithms they allow), the roles, the TLS files — then the effective
//! settings printed as TOML, every secret shown as `<redacted>`.

use std::process::ExitCode;

use crate::auth::Verifier;
use crate::config::Config;
use crate::permissions::Permissions;
use crate::tls::TlsAcceptor;

pub fn run(config: &Config) -> ExitCode {
    let effective = check(config)
        .and_then(|()| toml::to_string_pretty(config).map_err(|e| format!("cannot print the settings: {e}")));
    match effective {
        Ok(effective) => {
            print!("{effective}");
            eprintln!("wsgate check-config: ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wsgate check-config: {error}");
            ExitCode::from(64)
        }
    }
}

/// What the config's files and URLs must hold beyond [`Config::validate`]:
/// `serve` runs this too, so each of these stops it with exit 64 and one
/// line naming the setting.
pub fn check(config: &Config) -> Result<(), String> {
    Verifier::from_config(&config.jwt).map_err(|e| format!("jwt: {e}"))?;
    Permissions::from_config(&config.permissions.roles).map_err(|e| format!("permissions.roles: {e}"))?;
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        TlsAcceptor::from_files(cert, key).map_err(|e| format!("tls: {e}"))?;
    }
    if let Some(url) = &config.redis.url {
        crate::broker::redis::servers::fred_config(url.expose(), &config.redis)?;
    }
    Ok(())
}
