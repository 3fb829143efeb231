//! The command line. Exit codes: 0 ok, 1 runtime failure, 64 bad usage or
//! configuration. Each subcommand offers only the flags it reads.
//!
//! - `wsgate [serve]`: run the node;
//! - `wsgate check-config`: validate the config and the environment, print
//!   the effective settings with secrets redacted ([`check_config`]);
//! - `wsgate token`: mint a token with the configured key ([`token`]);
//! - `wsgate tail`: connect and print every frame ([`tail`]);
//! - `wsgate publish`: publish an event through the server API ([`publish`]).

mod check_config;
mod publish;
pub mod tail;
mod token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "wsgate",
    version,
    about = "Real-time WebSocket gateway: JWT sockets, rooms, Redis fan-out",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `wsgate` alone runs the node, as `wsgate serve` does.
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the node's configuration comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file (defaults < file < WSGATE_* env < flags).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides WSGATE_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379 (overrides WSGATE_REDIS_URL).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Validate the configuration and the environment (keys, TLS files,
    /// roles) and print the effective settings, secrets redacted.
    CheckConfig(ServeArgs),
    /// Print a token signed with the configured key (for development and tests).
    Token(TokenArgs),
    /// Connect to a gateway with a token and print every frame it sends.
    Tail(TailArgs),
    /// Publish an event to a room through the server API.
    Publish(PublishArgs),
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The token to connect with (e.g. from `wsgate token`).
    #[arg(long, env = "WSGATE_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from this file instead.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The gateway's WebSocket endpoint, ws:// or wss://.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub url: String,
    /// CA certificate (PEM) to trust for wss:// besides the public roots,
    /// e.g. a self-signed one.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Rooms to subscribe to after the welcome; repeat for several.
    #[arg(long = "subscribe", value_name = "ROOM")]
    pub subscribe: Vec<String>,
    /// Resume a durable room from a position (as printed when the tail
    /// ends): `ROOM=OFFSET:EPOCH`; repeat for several.
    #[arg(long = "since", value_name = "ROOM=OFFSET:EPOCH")]
    pub since: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The room, e.g. user:42.
    pub room: String,
    /// The event name, e.g. order:updated.
    pub event: String,
    /// The event's data as JSON, e.g. '{"id":7}' (default null).
    pub data: Option<String>,
    /// An id passed through to clients.
    #[arg(long)]
    pub id: Option<String>,
    /// The node's API base URL (its internal listener when
    /// `internal_listen` is set).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The API key (`Authorization: Bearer`).
    #[arg(
        long,
        env = "WSGATE_API_KEY",
        hide_env_values = true,
        conflicts_with = "api_key_file"
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file instead.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for https:// besides the public roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// TOML config file holding the key (defaults < file < WSGATE_* env).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    match cli.command {
        None => with_config(&cli.serve, serve),
        Some(Command::Serve(args)) => with_config(&args, serve),
        Some(Command::CheckConfig(args)) => match load(&args) {
            Ok(config) => check_config::run(&config),
            Err(error) => {
                eprintln!("wsgate check-config: {error}");
                ExitCode::from(64)
            }
        },
        Some(Command::Token(args)) => {
            let source = ServeArgs {
                config: args.config.clone(),
                ..ServeArgs::default()
            };
            with_config(&source, |config| token::run(&config, &args))
        }
        // Clients: they need no server configuration.
        Some(Command::Tail(args)) => tail::run(&args),
        Some(Command::Publish(args)) => publish::run(&args),
    }
}

/// The validated config of these flags and the `WSGATE_*` environment.
fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("WSGATE_")).collect();
    let overrides = Overrides {
        listen: args.listen.clone(),
        redis_url: args.redis_url.clone(),
    };
    Config::load(args.config.as_deref(), &env, &overrides)
}

/// The secret of a `--x` flag (or its environment variable) or of its
/// `--x-file`, trimmed; `what` names it in the error.
fn secret_from(value: Option<&str>, file: Option<&Path>, what: &str) -> Result<String, String> {
    let text = match (value, file) {
        (Some(value), _) => value.to_string(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} from {}: {e}", path.display()))?
        }
        (None, None) => return Err(format!("no {what} given")),
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    Ok(text)
}

fn with_config(args: &ServeArgs, then: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match load(args) {
        Ok(config) => then(config),
        Err(error) => {
            eprintln!("wsgate: {error}");
            ExitCode::from(64)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(error) = check_config::check(&config) {
        eprintln!("wsgate: {error}");
        return ExitCode::from(64);
    }
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
