//! Configuration: the one validated [`Config`] every other module reads.
//!
//! Precedence is defaults < TOML file (`--config`) < `WSGATE_*` environment <
//! CLI flags. Loading ends in [`Config::validate`], so the rest of the node
//! never sees an unusable value: no key means no start, and the dev-only
//! secret refuses any address that is not loopback.
//!
//! The environment is one hand-written table ([`ENV_VARS`]) rather than a
//! layered-config crate: the variable names are a public contract that does
//! not follow the TOML paths mechanically (`WSGATE_CLIENT_RATE` is
//! `limits.client_rate`), and each setter's error names its variable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Room, offset, epoch and the frame's own keys: what an event frame adds
/// to the payload, at most.
pub const EVENT_FRAME_OVERHEAD: usize = 4096;

/// The shortest HS256 secret accepted (RFC 7518 §3.2: a key as long as the hash).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// A value that must never reach a log line: `Debug` prints `<redacted>`,
/// and the memory is zeroed when it is dropped (`secrecy`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Printed (`wsgate check-config`) as `<redacted>`, never as the value.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the public HTTP listener: WebSocket, SSE, health, and
    /// (unless `internal_listen` is set) metrics and the server API.
    pub listen: String,
    /// When set, `/metrics` and `/api/v1/` are served only on this address
    /// (plain HTTP, for the cluster's own network), not on `listen`.
    pub internal_listen: Option<String>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded` header names
    /// the client: for per-IP limits and logs behind a load balancer.
    pub trusted_proxies: Vec<String>,
    /// Tracing filter, e.g. `info` or `wsgate=debug,info`.
    pub log: String,
    pub log_format: LogFormat,
    /// Identifies this node in logs, connection ids and `/api/v1` answers.
    /// Random when unset.
    pub node_id: Option<String>,
    /// Connection shards; 0 means one per CPU core.
    pub shards: usize,
    pub jwt: JwtConfig,
    pub redis: RedisConfig,
    pub ws: WsConfig,
    pub limits: LimitsConfig,
    pub shutdown: ShutdownConfig,
    pub permissions: PermissionsConfig,
    pub api: ApiConfig,
    pub tls: TlsConfig,
    pub history: HistoryConfig,
    pub presence: PresenceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            internal_listen: None,
            trusted_proxies: Vec::new(),
            log: "info".into(),
            log_format: LogFormat::Text,
            node_id: None,
            shards: 0,
            jwt: JwtConfig::default(),
            redis: RedisConfig::default(),
            ws: WsConfig::default(),
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
            permissions: PermissionsConfig::default(),
            api: ApiConfig::default(),
            tls: TlsConfig::default(),
            history: HistoryConfig::default(),
            presence: PresenceConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HMAC secret (HS256/384/512). Never has a default.
    pub secret: Option<Secret>,
    /// A secret for local development only. A node that runs on it refuses
    /// to bind anything but a loopback address.
    pub dev_secret: Option<Secret>,
    /// PEM public key (RSA, EC or Ed25519) for RS*/ES*/EdDSA tokens.
    pub public_key_file: Option<PathBuf>,
    /// More keys, for rotation without a window where valid tokens are
    /// refused: matched by the token's `kid` when one matches, else every
    /// key is tried in order (the keys above first).
    pub keys: Vec<JwtKey>,
    /// A JSON Web Key Set to take public keys from (the IdP's
    /// `jwks_uri`), fetched at start, then every `jwks_refresh_s` and when a
    /// token names an unknown `kid`.
    pub jwks_url: Option<String>,
    pub jwks_refresh_s: u64,
    /// How long a revocation by the server API holds: at least the longest
    /// lifetime of a token your issuer mints.
    pub revocation_ttl_s: u64,
    /// Allow-list of algorithms. Empty: HS256 with a secret, and the
    /// algorithm that matches the public key's type.
    pub algorithms: Vec<String>,
    /// Accepted `iss` values; unchecked when empty.
    pub issuer: Vec<String>,
    /// Accepted `aud` values; unchecked when empty.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    pub claims: ClaimNames,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            dev_secret: None,
            public_key_file: None,
            keys: Vec::new(),
            jwks_url: None,
            jwks_refresh_s: 300,
            revocation_ttl_s: 86_400,
            algorithms: Vec::new(),
            issuer: Vec::new(),
            audience: Vec::new(),
            leeway_s: 0,
            claims: ClaimNames::default(),
        }
    }
}

impl JwtConfig {
    /// Whether any key but the dev-only secret is configured.
    pub fn has_real_key(&self) -> bool {
        self.secret.is_some() || self.public_key_file.is_some() || !self.keys.is_empty() || self.jwks_url.is_some()
    }
}

/// One more verification key (`[[jwt.keys]]`): a secret or a public key file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtKey {
    /// The `kid` tokens signed by this key carry; unset: tried for any.
    pub kid: Option<String>,
    pub secret: Option<Secret>,
    pub public_key_file: Option<PathBuf>,
    /// This key's algorithms; empty: `jwt.algorithms` of its type, or the
    /// type's default.
    pub algorithms: Vec<String>,
}

/// Names of the claims that carry the identity, for issuers that differ.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    pub sub: String,
    pub org: String,
    pub roles: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            sub: "sub".into(),
            org: "org_id".into(),
            roles: "roles".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis[s]://[user:password@]host:port[/db]`, or several seeds,
    /// comma-separated (each a URL or a bare `host:port` that shares the
    /// first's scheme and credentials). Unset: the embedded in-memory broker.
    pub url: Option<Secret>,
    /// How the seeds are used: one server, a Redis Cluster (sharded pub/sub),
    /// or the master that Sentinel names (docs/PROTOCOL.md §12).
    pub mode: RedisMode,
    /// The master's name in Sentinel mode.
    pub sentinel_master: String,
    /// The Sentinels' own password, when they require one (the URL's
    /// credentials are the data nodes').
    pub sentinel_password: Option<Secret>,
    /// CA certificates (PEM) that a `rediss://` server's certificate must
    /// chain to, beside the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every room's channel: room `user:42` is channel `gw:user:42`.
    pub channel_prefix: String,
    /// Reconnect back-off bounds, in milliseconds.
    pub reconnect_min_ms: u32,
    pub reconnect_max_ms: u32,
    /// How long a join waits for the broker to confirm a subscription.
    pub subscribe_timeout_s: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            mode: RedisMode::Standalone,
            sentinel_master: "mymaster".into(),
            sentinel_password: None,
            ca_file: None,
            channel_prefix: "gw:".into(),
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            subscribe_timeout_s: 5,
        }
    }
}

/// `redis.mode` (`WSGATE_REDIS_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server: classic pub/sub.
    #[default]
    Standalone,
    /// Redis Cluster: `SSUBSCRIBE`/`SPUBLISH`, each room on its shard.
    Cluster,
    /// The master that the Sentinels name, followed across failovers.
    Sentinel,
}

impl std::str::FromStr for RedisMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "standalone" => Ok(Self::Standalone),
            "cluster" => Ok(Self::Cluster),
            "sentinel" => Ok(Self::Sentinel),
            other => Err(format!("'{other}' is not standalone, cluster or sentinel")),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Time allowed for the `auth` frame when no token came with the upgrade.
    pub auth_timeout_s: u64,
    /// Server ping interval; a socket silent for two intervals is closed.
    pub heartbeat_s: u64,
    /// Time allowed to send the HTTP request head (slowloris guard).
    pub handshake_timeout_s: u64,
    /// Largest inbound frame; larger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Bytes queued for one socket before it is closed as a slow consumer (4009).
    pub send_queue_bytes: usize,
    /// A write that makes no progress for this long marks a slow consumer.
    pub write_timeout_s: u64,
    /// Browser origins allowed to connect (exact `scheme://host[:port]`, or
    /// `*`). Empty: any origin. Requests without `Origin` (non-browsers) pass.
    pub allowed_origins: Vec<String>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            auth_timeout_s: 5,
            heartbeat_s: 25,
            handshake_timeout_s: 10,
            max_frame_bytes: 64 * 1024,
            send_queue_bytes: 1024 * 1024,
            write_timeout_s: 10,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sockets this node holds at most; past it, upgrades get 503 so the
    /// node never runs out of file descriptors (which would stall `/health`
    /// too). 0: the open-file limit minus a reserve.
    pub max_connections: usize,
    /// Rooms one connection may be in, the token's own rooms included.
    pub max_rooms_per_connection: usize,
    /// Sockets one user may hold on one node; 0 is unlimited.
    pub max_connections_per_user: usize,
    /// Inbound frames per second per connection (token bucket refill rate).
    pub client_rate: f64,
    /// Inbound frames a connection may send in one burst.
    pub client_burst: f64,
    /// Frames refused for rate within 10 s before the socket is closed (4008).
    pub client_max_violations: u32,
    /// WebSocket handshakes per second from one IP address; 0 is unlimited.
    pub handshakes_per_ip: f64,
    pub handshake_burst_per_ip: f64,
    /// Largest event payload (`{"event":…,"data":…}`) accepted from the API,
    /// a client or Redis, in bytes. It must fit a send queue with room for
    /// the frame around it, or every member would be closed as slow.
    pub max_event_bytes: usize,
    /// Upgraded sockets that may wait for their auth frame at once; past it,
    /// upgrades without a token get 503. Unauthenticated sockets hold
    /// descriptors too, and must not crowd out the authenticated.
    pub max_pending_auth: usize,
    /// Bytes queued for all sockets of the node together; over it, the
    /// largest queues are closed first (4009). 0 is unlimited.
    pub max_queued_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_rooms_per_connection: 100,
            max_connections_per_user: 0,
            client_rate: 50.0,
            client_burst: 100.0,
            client_max_violations: 20,
            handshakes_per_ip: 0.0,
            handshake_burst_per_ip: 50.0,
            max_event_bytes: 60 * 1024,
            max_pending_auth: 4096,
            max_queued_bytes: 1 << 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Sockets are closed with 1012 spread over this many seconds.
    pub drain_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_s: 10 }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Role name → permissions such as `orders:read`, `orders:*`, `*`.
    pub roles: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Keys accepted as `Authorization: Bearer <key>` on `/api/v1`. None: the
    /// server API answers 401 to everyone.
    pub keys: Vec<Secret>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Which rooms keep a history of their events, so that a client that
/// reconnects gets what it missed (docs/PROTOCOL.md §10).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Namespaces whose rooms are durable; `*` for all. Empty: none.
    pub namespaces: Vec<String>,
    /// Events kept per room.
    pub size: usize,
    /// Seconds a room's events are kept after its last event.
    pub ttl_s: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            size: 1000,
            ttl_s: 600,
        }
    }
}

/// Most events one room's history may keep.
pub const MAX_HISTORY_SIZE: usize = 100_000;
/// Longest history TTL: 30 days.
pub const MAX_HISTORY_TTL_S: u64 = 30 * 24 * 3600;

impl HistoryConfig {
    /// Whether rooms of `namespace` keep history.
    pub fn is_durable(&self, namespace: &str) -> bool {
        lists_namespace(&self.namespaces, namespace)
    }

    pub fn enabled(&self) -> bool {
        !self.namespaces.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_namespaces("history.namespaces", &self.namespaces)?;
        if !(1..=MAX_HISTORY_SIZE).contains(&self.size) {
            return Err(invalid("history.size", format!("must be from 1 to {MAX_HISTORY_SIZE}")));
        }
        if !(1..=MAX_HISTORY_TTL_S).contains(&self.ttl_s) {
            return Err(invalid(
                "history.ttl_s",
                format!("must be from 1 to {MAX_HISTORY_TTL_S} seconds"),
            ));
        }
        Ok(())
    }
}

/// Which rooms track who is in them, cluster-wide (docs/PROTOCOL.md §12).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Namespaces whose rooms have presence; `*` for all. Empty: none.
    pub namespaces: Vec<String>,
    /// Seconds a node's members outlive its last heartbeat (it beats every
    /// third of this): how long a dead node's users may still be listed.
    pub ttl_s: u64,
    /// Send `join`/`leave` frames to a room's members when a user's first
    /// connection enters or its last one leaves.
    pub events: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            ttl_s: 30,
            events: false,
        }
    }
}

/// Shortest presence TTL (a heartbeat every third of it).
pub const MIN_PRESENCE_TTL_S: u64 = 1;
/// Longest presence TTL: one day.
pub const MAX_PRESENCE_TTL_S: u64 = 24 * 3600;

impl PresenceConfig {
    /// Whether rooms of `namespace` have presence.
    pub fn is_tracked(&self, namespace: &str) -> bool {
        lists_namespace(&self.namespaces, namespace)
    }

    pub fn enabled(&self) -> bool {
        !self.namespaces.is_empty()
    }

    /// The TTL in milliseconds (bounded by validation; saturating anyway).
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_s.saturating_mul(1000)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_namespaces("presence.namespaces", &self.namespaces)?;
        if !(MIN_PRESENCE_TTL_S..=MAX_PRESENCE_TTL_S).contains(&self.ttl_s) {
            return Err(invalid(
                "presence.ttl_s",
                format!("must be from {MIN_PRESENCE_TTL_S} to {MAX_PRESENCE_TTL_S} seconds"),
            ));
        }
        Ok(())
    }
}

/// Whether a `history.namespaces`-style list names `namespace` (or is `*`).
fn lists_namespace(namespaces: &[String], namespace: &str) -> bool {
    namespaces.iter().any(|ns| ns == "*" || ns == namespace)
}

/// Namespace names as `history.namespaces` and `presence.namespaces` take them.
fn validate_namespaces(setting: &str, namespaces: &[String]) -> Result<(), ConfigError> {
    for ns in namespaces {
        let valid = ns == "*"
            || (!ns.is_empty()
                && ns.len() <= crate::room::MAX_NAMESPACE_LEN
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
        if !valid {
            return Err(invalid(
                setting,
                format!("'{ns}' is not a namespace (1-32 of a-z, 0-9, '_', '-') or '*'"),
            ));
        }
    }
    Ok(())
}

/// Why the configuration cannot be used. The process exits with 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {name}: {message}")]
    Invalid { name: String, message: String },
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        message: message.into(),
    }
}

/// Values given on the command line: the last word on precedence.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub redis_url: Option<String>,
}

impl Config {
    /// Load defaults, then the file, then the environment, then `overrides`,
    /// and validate the result.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        if let Some(listen) = &overrides.listen {
            config.listen = listen.clone();
        }
        if let Some(url) = &overrides.redis_url {
            config.redis.url = Some(Secret::new(url.clone()));
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Apply every `WSGATE_*` variable this node knows; see [`ENV_VARS`].
    /// A secret may instead come from the file `<NAME>_FILE` names (the
    /// Docker and Kubernetes convention); see [`FILE_VARS`].
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let from_files = secrets_from_files(env)?;
        for (name, apply) in ENV_VARS {
            // A file's value wins over an empty variable (both non-empty is refused).
            if let Some(value) = from_files.get(*name).or_else(|| env.get(*name)) {
                apply(self, value.trim()).map_err(|message| invalid(name, message))?;
            }
        }
        Ok(())
    }

    /// Refuse a configuration the node cannot run safely with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        if let Some(internal) = self.internal_listen_addr()?
            && internal == listen
            && listen.port() != 0
        {
            return Err(invalid(
                "internal_listen",
                format!("{internal} is also `listen`: give the internal listener its own port"),
            ));
        }
        let has_real_key = self.jwt.has_real_key();
        if !has_real_key {
            match &self.jwt.dev_secret {
                None => {
                    return Err(invalid(
                        "jwt",
                        "no token key configured: set WSGATE_JWT_SECRET, WSGATE_JWT_PUBLIC_KEY_FILE or \
                         WSGATE_JWT_JWKS_URL (or use config/dev.toml for local development)",
                    ));
                }
                Some(_) if !listen.ip().is_loopback() => {
                    return Err(invalid(
                        "listen",
                        format!(
                            "{listen} is not a loopback address, and jwt.dev_secret is for local \
                             development only: configure a real key to listen on other addresses"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        for (name, secret) in [
            ("jwt.secret", &self.jwt.secret),
            ("jwt.dev_secret", &self.jwt.dev_secret),
        ] {
            if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                return Err(invalid(name, "must not be empty"));
            }
        }
        let key_secrets = self.jwt.keys.iter().map(|k| ("jwt.keys.secret", &k.secret));
        for (name, secret) in std::iter::once(("jwt.secret", &self.jwt.secret)).chain(key_secrets) {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().len() < MIN_HS256_SECRET_BYTES)
            {
                return Err(invalid(
                    name,
                    format!(
                        "is shorter than {MIN_HS256_SECRET_BYTES} bytes: HS256 needs a key of at least 256 bits \
                         (e.g. openssl rand -base64 48)"
                    ),
                ));
            }
        }
        for key in &self.jwt.keys {
            if key.secret.is_some() == key.public_key_file.is_some() {
                return Err(invalid(
                    "jwt.keys",
                    "each key needs exactly one of secret and public_key_file",
                ));
            }
            if key.kid.as_ref().is_some_and(|kid| kid.is_empty() || kid.len() > 256) {
                return Err(invalid("jwt.keys.kid", "must be 1-256 bytes"));
            }
        }
        if let Some(url) = &self.jwt.jwks_url {
            let uri: Result<hyper::Uri, _> = url.parse();
            let loopback = |host: &str| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            };
            match uri.as_ref().map(|u| (u.scheme_str(), u.host())) {
                Ok((Some("https"), Some(_))) => {}
                // Whoever can change the key set can sign any token: plain
                // HTTP only to this machine.
                Ok((Some("http"), Some(host))) if loopback(host) => {}
                Ok((Some("http"), Some(_))) => {
                    return Err(invalid(
                        "jwt.jwks_url",
                        format!("'{url}' is plain http: the key set must come over https (http only on loopback)"),
                    ));
                }
                _ => return Err(invalid("jwt.jwks_url", format!("'{url}' is not an https URL"))),
            }
        }
        for proxy in &self.trusted_proxies {
            crate::http::client_addr::Cidr::parse(proxy).map_err(|e| invalid("trusted_proxies", e))?;
        }
        if self.jwt.leeway_s > MAX_LEEWAY_S {
            return Err(invalid("jwt.leeway_s", format!("must be at most {MAX_LEEWAY_S}")));
        }
        if !(60..=MAX_REVOCATION_TTL_S).contains(&self.jwt.revocation_ttl_s) {
            return Err(invalid(
                "jwt.revocation_ttl_s",
                format!("must be 60-{MAX_REVOCATION_TTL_S} (a year)"),
            ));
        }
        if !(10..=MAX_TIMEOUT_S * 24).contains(&self.jwt.jwks_refresh_s) {
            return Err(invalid(
                "jwt.jwks_refresh_s",
                format!("must be 10-{}", MAX_TIMEOUT_S * 24),
            ));
        }
        if self.api.keys.iter().any(|k| k.expose().len() < 16) {
            return Err(invalid("api.keys", "every API key needs at least 16 characters"));
        }
        if !self.redis.channel_prefix.is_ascii() || self.redis.channel_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis.channel_prefix", "must be ASCII without spaces"));
        }
        // A brace would change which part of a key Redis Cluster hashes, and
        // split a room's keys across shards.
        if self.redis.channel_prefix.contains(['{', '}']) {
            return Err(invalid("redis.channel_prefix", "must not contain '{' or '}'"));
        }
        if self.redis.mode == RedisMode::Sentinel && self.redis.sentinel_master.trim().is_empty() {
            return Err(invalid(
                "redis.sentinel_master",
                "must name the master in sentinel mode",
            ));
        }
        for (name, value) in [
            ("ws.heartbeat_s", self.ws.heartbeat_s),
            ("ws.auth_timeout_s", self.ws.auth_timeout_s),
            ("ws.handshake_timeout_s", self.ws.handshake_timeout_s),
            ("ws.write_timeout_s", self.ws.write_timeout_s),
            ("redis.subscribe_timeout_s", self.redis.subscribe_timeout_s),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
            if value > MAX_TIMEOUT_S {
                return Err(invalid(name, format!("must be at most {MAX_TIMEOUT_S}")));
            }
        }
        if self.shutdown.drain_s > MAX_TIMEOUT_S {
            return Err(invalid("shutdown.drain_s", format!("must be at most {MAX_TIMEOUT_S}")));
        }
        for (name, value) in [
            ("limits.client_rate", self.limits.client_rate),
            ("limits.client_burst", self.limits.client_burst),
            ("limits.handshakes_per_ip", self.limits.handshakes_per_ip),
            ("limits.handshake_burst_per_ip", self.limits.handshake_burst_per_ip),
        ] {
            if !(0.0..=MAX_RATE).contains(&value) {
                return Err(invalid(name, format!("must be a number from 0 to {MAX_RATE}")));
            }
        }
        if self.limits.max_queued_bytes != 0 && self.limits.max_queued_bytes < self.ws.send_queue_bytes {
            return Err(invalid(
                "limits.max_queued_bytes",
                "must be 0 (unlimited) or at least ws.send_queue_bytes",
            ));
        }
        if self.limits.max_pending_auth == 0 {
            return Err(invalid("limits.max_pending_auth", "must be at least 1"));
        }
        if self.ws.max_frame_bytes < 256 {
            return Err(invalid("ws.max_frame_bytes", "must be at least 256"));
        }
        if self.ws.send_queue_bytes < self.ws.max_frame_bytes {
            return Err(invalid("ws.send_queue_bytes", "must be at least ws.max_frame_bytes"));
        }
        if self.limits.max_event_bytes < 256 {
            return Err(invalid("limits.max_event_bytes", "must be at least 256"));
        }
        if self.limits.max_event_bytes.saturating_add(EVENT_FRAME_OVERHEAD) > self.ws.send_queue_bytes {
            return Err(invalid(
                "limits.max_event_bytes",
                format!(
                    "must leave {EVENT_FRAME_OVERHEAD} bytes of ws.send_queue_bytes ({}) for the frame around \
                     the event",
                    self.ws.send_queue_bytes
                ),
            ));
        }
        if self.limits.max_rooms_per_connection == 0 {
            return Err(invalid("limits.max_rooms_per_connection", "must be at least 1"));
        }
        if !(self.limits.client_rate > 0.0 && self.limits.client_burst >= 1.0) {
            return Err(invalid(
                "limits.client_rate",
                "client_rate must be positive and client_burst at least 1",
            ));
        }
        if self.limits.handshakes_per_ip < 0.0 || self.limits.handshake_burst_per_ip < 1.0 {
            return Err(invalid(
                "limits.handshakes_per_ip",
                "must be 0 (off) or positive, with handshake_burst_per_ip at least 1",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid("tls", "set both cert_file and key_file, or neither"));
        }
        self.history.validate()?;
        self.presence.validate()?;
        if self.redis.reconnect_min_ms == 0 || self.redis.reconnect_max_ms < self.redis.reconnect_min_ms {
            return Err(invalid(
                "redis.reconnect_min_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| invalid("listen", format!("'{}' is not an ip:port address", self.listen)))
    }

    pub fn internal_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.internal_listen
            .as_deref()
            .map(|addr| {
                addr.parse()
                    .map_err(|_| invalid("internal_listen", format!("'{addr}' is not an ip:port address")))
            })
            .transpose()
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.ws.heartbeat_s)
    }

    /// True when the node runs on the dev-only secret.
    pub fn is_dev(&self) -> bool {
        !self.jwt.has_real_key() && self.jwt.dev_secret.is_some()
    }
}

/// The longest timeout, heartbeat or drain window accepted, in seconds: an
/// hour. Longer is a typo, and would overflow nothing but would hang a node.
const MAX_TIMEOUT_S: u64 = 3600;
/// The most clock skew tolerated on `exp` and `nbf`: five minutes.
const MAX_LEEWAY_S: u64 = 300;
/// The longest a revocation may be kept: a year.
const MAX_REVOCATION_TTL_S: u64 = 365 * 24 * 3600;
/// The highest rate or burst accepted (per second / frames).
const MAX_RATE: f64 = 1_000_000.0;

/// The variables that may be given as `<NAME>_FILE`, a path to read the
/// value from: the secrets.
const FILE_VARS: &[&str] = &[
    "WSGATE_JWT_SECRET",
    "WSGATE_JWT_FALLBACK_SECRETS",
    "WSGATE_API_KEYS",
    "WSGATE_REDIS_URL",
    "WSGATE_REDIS_SENTINEL_PASSWORD",
];

/// The values of every `<NAME>_FILE` set, read from their files (trailing
/// newline trimmed; lists may be one item per line).
fn secrets_from_files(env: &HashMap<String, String>) -> Result<HashMap<String, String>, ConfigError> {
    let mut values = HashMap::new();
    for name in FILE_VARS {
        let file_var = format!("{name}_FILE");
        let Some(path) = env.get(&file_var).map(|p| p.trim()).filter(|p| !p.is_empty()) else {
            continue;
        };
        if env.get(*name).is_some_and(|v| !v.trim().is_empty()) {
            return Err(invalid(&file_var, format!("set {name} or {file_var}, not both")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| invalid(&file_var, format!("cannot read {path}: {e}")))?;
        let value = text.trim();
        // An empty file is a mount gone wrong, not a wish to unset the value.
        if value.is_empty() {
            return Err(invalid(&file_var, format!("{path} is empty")));
        }
        values.insert(name.to_string(), value.to_string());
    }
    Ok(values)
}

type EnvSetter = fn(&mut Config, &str) -> Result<(), String>;

/// Comma- or newline-separated items (a `_FILE` may hold one per line).
fn list(value: &str) -> Vec<String> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("'{value}' is not a number"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("'{value}' is not a boolean (true or false)")),
    }
}

/// Every environment variable the node reads, with where it lands: the
/// table of docs/PROTOCOL.md §8.
pub const ENV_VARS: &[(&str, EnvSetter)] = &[
    ("WSGATE_LISTEN", |c, v| {
        c.listen = v.into();
        Ok(())
    }),
    ("WSGATE_INTERNAL_LISTEN", |c, v| {
        c.internal_listen = Some(v.into());
        Ok(())
    }),
    ("WSGATE_TRUSTED_PROXIES", |c, v| {
        c.trusted_proxies = list(v);
        Ok(())
    }),
    ("WSGATE_REDIS_URL", |c, v| {
        c.redis.url = (!v.is_empty()).then(|| Secret::new(v));
        Ok(())
    }),
    ("WSGATE_JWT_SECRET", |c, v| {
        c.jwt.secret = (!v.is_empty()).then(|| Secret::new(v));
        Ok(())
    }),
    ("WSGATE_JWT_PUBLIC_KEY_FILE", |c, v| {
        c.jwt.public_key_file = (!v.is_empty()).then(|| PathBuf::from(v));
        Ok(())
    }),
    ("WSGATE_JWT_PUBLIC_KEY_FILES", |c, v| {
        // `path` or `kid=path`, comma-separated.
        for item in list(v) {
            let (kid, path) = match item.split_once('=') {
                Some((kid, path)) => (Some(kid.trim().to_string()), path.trim()),
                None => (None, item.as_str()),
            };
            c.jwt.keys.push(JwtKey {
                kid,
                public_key_file: Some(path.into()),
                ..JwtKey::default()
            });
        }
        Ok(())
    }),
    ("WSGATE_JWT_FALLBACK_SECRETS", |c, v| {
        for secret in list(v) {
            c.jwt.keys.push(JwtKey {
                secret: Some(Secret::new(secret)),
                ..JwtKey::default()
            });
        }
        Ok(())
    }),
    ("WSGATE_JWT_REVOCATION_TTL_S", |c, v| {
        c.jwt.revocation_ttl_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_JWT_JWKS_URL", |c, v| {
        c.jwt.jwks_url = Some(v.into());
        Ok(())
    }),
    ("WSGATE_API_KEYS", |c, v| {
        c.api.keys = list(v).into_iter().map(Secret::new).collect();
        Ok(())
    }),
    ("WSGATE_LOG", |c, v| {
        c.log = v.into();
        Ok(())
    }),
    ("WSGATE_LOG_FORMAT", |c, v| {
        c.log_format = match v {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(format!("'{other}' is not text or json")),
        };
        Ok(())
    }),
    ("WSGATE_NODE_ID", |c, v| {
        c.node_id = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("WSGATE_JWT_ALGORITHMS", |c, v| {
        c.jwt.algorithms = list(v);
        Ok(())
    }),
    ("WSGATE_JWT_ISSUER", |c, v| {
        c.jwt.issuer = list(v);
        Ok(())
    }),
    ("WSGATE_JWT_AUDIENCE", |c, v| {
        c.jwt.audience = list(v);
        Ok(())
    }),
    ("WSGATE_REDIS_MODE", |c, v| {
        c.redis.mode = v.parse()?;
        Ok(())
    }),
    ("WSGATE_REDIS_SENTINEL_MASTER", |c, v| {
        c.redis.sentinel_master = v.into();
        Ok(())
    }),
    ("WSGATE_REDIS_SENTINEL_PASSWORD", |c, v| {
        c.redis.sentinel_password = (!v.is_empty()).then(|| Secret::new(v));
        Ok(())
    }),
    ("WSGATE_REDIS_CA_FILE", |c, v| {
        c.redis.ca_file = (!v.is_empty()).then(|| PathBuf::from(v));
        Ok(())
    }),
    ("WSGATE_REDIS_CHANNEL_PREFIX", |c, v| {
        c.redis.channel_prefix = v.into();
        Ok(())
    }),
    ("WSGATE_HEARTBEAT_S", |c, v| {
        c.ws.heartbeat_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_AUTH_TIMEOUT_S", |c, v| {
        c.ws.auth_timeout_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_ALLOWED_ORIGINS", |c, v| {
        c.ws.allowed_origins = list(v);
        Ok(())
    }),
    ("WSGATE_MAX_EVENT_BYTES", |c, v| {
        c.limits.max_event_bytes = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_QUEUED_BYTES", |c, v| {
        c.limits.max_queued_bytes = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_PENDING_AUTH", |c, v| {
        c.limits.max_pending_auth = number(v)?;
        Ok(())
    }),
    ("WSGATE_SEND_QUEUE_BYTES", |c, v| {
        c.ws.send_queue_bytes = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_FRAME_BYTES", |c, v| {
        c.ws.max_frame_bytes = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_CONNECTIONS_PER_USER", |c, v| {
        c.limits.max_connections_per_user = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_CONNECTIONS", |c, v| {
        c.limits.max_connections = number(v)?;
        Ok(())
    }),
    ("WSGATE_MAX_ROOMS_PER_CONNECTION", |c, v| {
        c.limits.max_rooms_per_connection = number(v)?;
        Ok(())
    }),
    ("WSGATE_CLIENT_RATE", |c, v| {
        c.limits.client_rate = number(v)?;
        Ok(())
    }),
    ("WSGATE_CLIENT_BURST", |c, v| {
        c.limits.client_burst = number(v)?;
        Ok(())
    }),
    ("WSGATE_CLIENT_MAX_VIOLATIONS", |c, v| {
        c.limits.client_max_violations = number(v)?;
        Ok(())
    }),
    ("WSGATE_HANDSHAKES_PER_IP", |c, v| {
        c.limits.handshakes_per_ip = number(v)?;
        Ok(())
    }),
    ("WSGATE_HANDSHAKE_BURST_PER_IP", |c, v| {
        c.limits.handshake_burst_per_ip = number(v)?;
        Ok(())
    }),
    ("WSGATE_HANDSHAKE_TIMEOUT_S", |c, v| {
        c.ws.handshake_timeout_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_WRITE_TIMEOUT_S", |c, v| {
        c.ws.write_timeout_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_DRAIN_S", |c, v| {
        c.shutdown.drain_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_SHARDS", |c, v| {
        c.shards = number(v)?;
        Ok(())
    }),
    ("WSGATE_TLS_CERT_FILE", |c, v| {
        c.tls.cert_file = (!v.is_empty()).then(|| PathBuf::from(v));
        Ok(())
    }),
    ("WSGATE_HISTORY_NAMESPACES", |c, v| {
        c.history.namespaces = list(v);
        Ok(())
    }),
    ("WSGATE_HISTORY_SIZE", |c, v| {
        c.history.size = number(v)?;
        Ok(())
    }),
    ("WSGATE_HISTORY_TTL_S", |c, v| {
        c.history.ttl_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_PRESENCE_NAMESPACES", |c, v| {
        c.presence.namespaces = list(v);
        Ok(())
    }),
    ("WSGATE_PRESENCE_TTL_S", |c, v| {
        c.presence.ttl_s = number(v)?;
        Ok(())
    }),
    ("WSGATE_PRESENCE_EVENTS", |c, v| {
        c.presence.events = boolean(v)?;
        Ok(())
    }),
    ("WSGATE_TLS_KEY_FILE", |c, v| {
        c.tls.key_file = (!v.is_empty()).then(|| PathBuf::from(v));
        Ok(())
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    const LONG_ENOUGH: &str = "a-test-secret-of-thirty-two-bytes-or-more";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn refuses_to_start_without_a_key() {
        let err = Config::load(None, &env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("WSGATE_JWT_SECRET"), "{err}");
    }

    #[test]
    fn environment_alone_is_enough() {
        let config = Config::load(
            None,
            &env(&[
                ("WSGATE_LISTEN", "127.0.0.1:9000"),
                ("WSGATE_JWT_SECRET", "s3cret-from-env-0123456789abcdef0123"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(
            config.jwt.secret.unwrap().expose(),
            "s3cret-from-env-0123456789abcdef0123"
        );
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let mut config =
            Config::from_toml("listen = \"127.0.0.1:1\"\n[jwt]\nsecret = \"from-file-0123456789abcdef0123456789\"")
                .unwrap();
        assert_eq!(config.listen, "127.0.0.1:1");
        config.apply_env(&env(&[("WSGATE_LISTEN", "127.0.0.1:2")])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2");
        assert_eq!(
            config.jwt.secret.as_ref().unwrap().expose(),
            "from-file-0123456789abcdef0123456789"
        );

        let dir = std::env::temp_dir().join(format!("wsgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[jwt]\nsecret = \"from-file-0123456789abcdef0123456789\"",
        )
        .unwrap();
        let loaded = Config::load(
            Some(&path),
            &env(&[("WSGATE_LISTEN", "127.0.0.1:2")]),
            &Overrides {
                listen: Some("127.0.0.1:3".into()),
                redis_url: None,
            },
        )
        .unwrap();
        assert_eq!(loaded.listen, "127.0.0.1:3");
    }

    #[test]
    fn dev_secret_refuses_non_loopback() {
        let config = Config::from_toml("listen = \"0.0.0.0:8080\"\n[jwt]\ndev_secret = \"dev\"").unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let config = Config::from_toml("listen = \"127.0.0.1:8080\"\n[jwt]\ndev_secret = \"dev\"").unwrap();
        config.validate().unwrap();
        assert!(config.is_dev());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("[jwt]\nsecrte = \"x\"").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_toml("[jwt]\nsecret = \"hunter2-hunter2\"").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = Config::load(
            None,
            &env(&[("WSGATE_JWT_SECRET", LONG_ENOUGH), ("WSGATE_HEARTBEAT_S", "soon")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("WSGATE_HEARTBEAT_S"), "{err}");
    }

    #[test]
    fn timeouts_drain_and_rates_have_upper_bounds() {
        for (name, value, setting) in [
            ("WSGATE_HEARTBEAT_S", "99999999999", "ws.heartbeat_s"),
            ("WSGATE_AUTH_TIMEOUT_S", "3601", "ws.auth_timeout_s"),
            ("WSGATE_WRITE_TIMEOUT_S", "18446744073709551615", "ws.write_timeout_s"),
            ("WSGATE_DRAIN_S", "86400", "shutdown.drain_s"),
            ("WSGATE_CLIENT_RATE", "nan", "limits.client_rate"),
            ("WSGATE_CLIENT_BURST", "1e300", "limits.client_burst"),
            ("WSGATE_HANDSHAKES_PER_IP", "inf", "limits.handshakes_per_ip"),
            ("WSGATE_HANDSHAKE_BURST_PER_IP", "-1", "limits.handshake_burst_per_ip"),
            ("WSGATE_MAX_PENDING_AUTH", "0", "limits.max_pending_auth"),
        ] {
            let err = Config::load(
                None,
                &env(&[("WSGATE_JWT_SECRET", LONG_ENOUGH), (name, value)]),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(setting), "{name}={value}: {err}");
        }
        let at_bounds = Config::load(
            None,
            &env(&[
                ("WSGATE_JWT_SECRET", LONG_ENOUGH),
                ("WSGATE_HEARTBEAT_S", "3600"),
                ("WSGATE_DRAIN_S", "3600"),
                ("WSGATE_CLIENT_RATE", "1000000"),
            ]),
            &Overrides::default(),
        );
        assert!(at_bounds.is_ok(), "{at_bounds:?}");
    }

    #[test]
    fn extra_keys_and_the_key_set_url_are_checked() {
        let load = |vars: &[(&str, &str)]| {
            let mut all = vec![("WSGATE_JWT_SECRET", LONG_ENOUGH)];
            all.extend_from_slice(vars);
            Config::load(None, &env(&all), &Overrides::default())
        };
        let config = load(&[
            ("WSGATE_JWT_PUBLIC_KEY_FILES", "k1=/a.pem, /b.pem"),
            ("WSGATE_JWT_FALLBACK_SECRETS", LONG_ENOUGH),
            ("WSGATE_JWT_JWKS_URL", "https://idp.example/.well-known/jwks.json"),
        ])
        .unwrap();
        let kids: Vec<_> = config.jwt.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("k1"), None, None]);
        assert!(
            load(&[("WSGATE_JWT_JWKS_URL", "http://127.0.0.1:9999/jwks.json")]).is_ok(),
            "http on loopback"
        );
        for (name, value, setting) in [
            ("WSGATE_JWT_FALLBACK_SECRETS", "short", "jwt.keys.secret"),
            ("WSGATE_JWT_JWKS_URL", "ftp://idp.example/keys", "jwt.jwks_url"),
            ("WSGATE_JWT_JWKS_URL", "not a url", "jwt.jwks_url"),
            ("WSGATE_JWT_JWKS_URL", "http://idp.example/jwks.json", "plain http"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(setting), "{name}={value}: {err}");
        }
        let both = Config::from_toml(&format!(
            "[jwt]\nsecret = \"{LONG_ENOUGH}\"\n[[jwt.keys]]\nsecret = \"{LONG_ENOUGH}\"\npublic_key_file = \"/k.pem\"\n"
        ))
        .unwrap()
        .validate();
        assert!(both.unwrap_err().to_string().contains("exactly one"));
    }

    #[test]
    fn leeway_is_bounded_and_an_empty_secret_file_is_refused() {
        let huge = Config::from_toml(&format!(
            "[jwt]\nsecret = \"{LONG_ENOUGH}\"\nleeway_s = 18446744073709551615\n"
        ))
        .unwrap()
        .validate();
        assert!(huge.unwrap_err().to_string().contains("jwt.leeway_s"));
        let empty = std::env::temp_dir().join(format!("wsgate-empty-{}", std::process::id()));
        std::fs::write(&empty, "\n").unwrap();
        let err = Config::load(
            None,
            &env(&[
                ("WSGATE_JWT_SECRET", LONG_ENOUGH),
                ("WSGATE_REDIS_URL_FILE", empty.to_str().unwrap()),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("WSGATE_REDIS_URL_FILE") && err.to_string().contains("empty"),
            "{err}"
        );
        let _ = std::fs::remove_file(&empty);
    }

    #[test]
    fn history_from_env_and_bounds() {
        let config = Config::load(
            None,
            &env(&[
                ("WSGATE_JWT_SECRET", LONG_ENOUGH),
                ("WSGATE_HISTORY_NAMESPACES", "orders, chat"),
                ("WSGATE_HISTORY_SIZE", "50"),
                ("WSGATE_HISTORY_TTL_S", "60"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(config.history.is_durable("orders") && config.history.is_durable("chat"));
        assert!(!config.history.is_durable("user"));
        assert_eq!((config.history.size, config.history.ttl_s), (50, 60));
        for (name, value) in [
            ("WSGATE_HISTORY_SIZE", "0"),
            ("WSGATE_HISTORY_TTL_S", "99999999999"),
            ("WSGATE_HISTORY_NAMESPACES", "Orders"),
        ] {
            let err = Config::load(
                None,
                &env(&[("WSGATE_JWT_SECRET", LONG_ENOUGH), (name, value)]),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("history."), "{name}={value}: {err}");
        }
    }

    #[test]
    fn presence_from_env_and_bounds() {
        let config = Config::load(
            None,
            &env(&[
                ("WSGATE_JWT_SECRET", LONG_ENOUGH),
                ("WSGATE_PRESENCE_NAMESPACES", "chat, docs"),
                ("WSGATE_PRESENCE_TTL_S", "5"),
                ("WSGATE_PRESENCE_EVENTS", "true"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(config.presence.is_tracked("chat") && config.presence.is_tracked("docs"));
        assert!(!config.presence.is_tracked("user"));
        assert_eq!((config.presence.ttl_s, config.presence.events), (5, true));
        assert!(!Config::default().presence.enabled());
        for (name, value) in [
            ("WSGATE_PRESENCE_TTL_S", "0"),
            ("WSGATE_PRESENCE_TTL_S", "99999999999999999999"),
            ("WSGATE_PRESENCE_TTL_S", "18446744073709551615"),
            ("WSGATE_PRESENCE_NAMESPACES", "Chat"),
            ("WSGATE_PRESENCE_EVENTS", "maybe"),
        ] {
            let err = Config::load(
                None,
                &env(&[("WSGATE_JWT_SECRET", LONG_ENOUGH), (name, value)]),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("PRESENCE") || err.to_string().contains("presence."),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn shipped_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dev = Config::from_file(&root.join("config/dev.toml")).unwrap();
        dev.validate().unwrap();
        assert!(dev.is_dev());
        let prod = Config::from_file(&root.join("config/production.toml")).unwrap();
        assert!(prod.jwt.secret.is_none() && prod.jwt.dev_secret.is_none());
        // Production carries no key: it must be given by the environment.
        assert!(prod.validate().is_err());
    }
}
