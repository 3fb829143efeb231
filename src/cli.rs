//! The command line: `wsgate [serve]` runs the node, `wsgate token` mints a
//! token with the configured key. Exit codes: 0 ok, 1 runtime failure, 64 bad
//! usage or configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Signer, TokenRequest};
use crate::config::{Config, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "wsgate",
    version,
    about = "Real-time WebSocket gateway: JWT sockets, rooms, Redis fan-out"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// TOML config file (defaults < file < WSGATE_* env < flags).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides WSGATE_LISTEN).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379 (overrides WSGATE_REDIS_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Print a token signed with the configured key (for development and tests).
    Token(TokenArgs),
    /// Connect to a gateway with a token and print every frame it sends.
    Tail(TailArgs),
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The token to connect with (e.g. from `wsgate token`).
    #[arg(long)]
    pub token: String,
    /// The gateway's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub url: String,
    /// Rooms to subscribe to after the welcome; repeat for several.
    #[arg(long = "subscribe", value_name = "ROOM")]
    pub subscribe: Vec<String>,
    /// Resume a durable room from a position (as printed when the tail
    /// ends): `ROOM=OFFSET:EPOCH`; repeat for several.
    #[arg(long = "since", value_name = "ROOM=OFFSET:EPOCH")]
    pub since: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The organisation (`org_id`).
    #[arg(long)]
    pub org: Option<String>,
    /// A role; repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Sign with this PEM private key (RS256/ES256/EdDSA) instead of the
    /// configured HMAC secret.
    #[arg(long, value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,
    /// The `kid` header, naming which of the gateway's keys verifies it.
    #[arg(long)]
    pub kid: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Tail(args)) = &cli.command {
        // A client: it needs no server configuration.
        return crate::tail::run(args);
    }
    let env: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("WSGATE_")).collect();
    let overrides = Overrides {
        listen: cli.global.listen.clone(),
        redis_url: cli.global.redis_url.clone(),
    };
    let config = match Config::load(cli.global.config.as_deref(), &env, &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("wsgate: {error}");
            return ExitCode::from(64);
        }
    };
    match cli.command {
        None | Some(Command::Serve) => serve(config),
        Some(Command::Token(args)) => token(&config, &args),
        Some(Command::Tail(_)) => ExitCode::SUCCESS,
    }
}

/// The longest lifetime `wsgate token` mints: ten years.
const MAX_TOKEN_TTL_S: u64 = 10 * 365 * 24 * 3600;

fn token(config: &Config, args: &TokenArgs) -> ExitCode {
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

fn serve(config: Config) -> ExitCode {
    if let Err(error) = crate::telemetry::init(&config.log, config.log_format) {
        eprintln!("wsgate: {error}");
        return ExitCode::from(64);
    }
    // Every socket is a file descriptor: take all the process may have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wsgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let prometheus = crate::metrics::install()?;
        crate::metrics::spawn_upkeep(prometheus.clone());
        let gw = crate::gateway::Gateway::new(config, Some(prometheus)).await?;
        crate::server::run(gw).await
    });
    // Sessions that outlived the drain deadline must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wsgate stopped on an error");
            eprintln!("wsgate: {error}");
            ExitCode::FAILURE
        }
    }
}
