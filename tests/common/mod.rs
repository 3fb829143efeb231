//! Shared test helpers: a real `redis-server` on a free port, the real
//! `wsgate` binary, real WebSocket clients, tokens, and wait-for-condition.
#![allow(dead_code)]

pub mod durable;
pub mod topologies;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsgate::auth::{Signer, TokenRequest};
use wsgate::config::ClaimNames;

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const API_KEY: &str = "integration-test-api-key-0123456789";
/// How long any single expectation may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Roles as the example config ships them.
pub const ROLES_TOML: &str = r#"
[permissions.roles]
admin = ["*"]
manager = ["orders:*", "chat:*", "org:publish"]
support = ["orders:read", "orders:update", "chat:read", "chat:publish"]
viewer = ["orders:read", "chat:read"]
"#;

/// A port no other caller in this process got, free now, and below the
/// kernel's ephemeral range (32768+ by default): a node or client binding
/// port 0 meanwhile cannot be given it, so a server started on it later
/// (e.g. redis-server) does not find it taken.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread test binaries (run one after another) over the span.
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id() % u32::from(SPAN)) as u16,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wsgate-test-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Wait until the log file at `path` holds `needle`; its text then.
pub async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    wait_for(&format!("the log to say {needle:?}"), || async move {
        std::fs::read_to_string(path).unwrap_or_default().contains(needle)
    })
    .await;
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Poll `check` until it is true, or fail after [`PATIENCE`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- redis

/// A `redis-server` of the test's own, on a free port; killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// `--appendonly yes`: a restart keeps the data (and the functions).
    persistent: bool,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(false).await
    }

    /// A Redis that keeps its data across [`Redis::restart`] (AOF).
    pub async fn start_persistent() -> Redis {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir: temp_dir("redis"),
            persistent,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.persistent { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for("redis-server to answer PING", || async move {
            matches!(resp(port, &["PING"]).await, Ok(reply) if reply.starts_with("+PONG"))
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL) and wait until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// `PUBLISH channel payload`; returns the number of receiving connections.
    pub async fn publish(&self, channel: &str, payload: &str) -> i64 {
        let reply = resp(self.port, &["PUBLISH", channel, payload]).await.expect("PUBLISH");
        reply
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PUBLISH reply: {reply:?}"))
    }

    /// Any command; the raw RESP reply text.
    pub async fn cmd(&self, args: &[&str]) -> String {
        resp(self.port, args).await.expect("redis command")
    }

    /// `FCALL wsgate_publish 1 gw:<room> <payload>`: the event's offset, or
    /// the error reply.
    pub async fn fcall_publish(&self, room: &str, payload: &str) -> Result<u64, String> {
        self.fcall_publish_bytes(room, payload.as_bytes()).await
    }

    /// [`Redis::fcall_publish`] of a payload that need not be UTF-8.
    pub async fn fcall_publish_bytes(&self, room: &str, payload: &[u8]) -> Result<u64, String> {
        let channel = format!("gw:{room}");
        let args: [&[u8]; 5] = [b"FCALL", b"wsgate_publish", b"1", channel.as_bytes(), payload];
        let reply = resp_bytes(self.port, &args).await.expect("redis command");
        match reply.strip_prefix(':') {
            Some(n) => n.trim().parse().map_err(|_| reply.clone()),
            None => Err(reply),
        }
    }

    /// Number of subscribers of `channel` (PUBSUB NUMSUB).
    pub async fn numsub(&self, channel: &str) -> i64 {
        let reply = resp(self.port, &["PUBSUB", "NUMSUB", channel])
            .await
            .unwrap_or_default();
        reply
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .next_back()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1)
    }

    /// Whether any channel matches `pattern` is subscribed (PUBSUB CHANNELS).
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let reply = resp(self.port, &["PUBSUB", "CHANNELS", pattern])
            .await
            .unwrap_or_default();
        reply
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(String::from)
            .collect()
    }
}

/// One RESP command on a fresh connection; the raw reply text, read until
/// the reply is complete (or the connection ends, or [`PATIENCE`] passes).
pub async fn resp(port: u16, args: &[&str]) -> std::io::Result<String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    resp_bytes(port, &args).await
}

/// [`resp`] with arguments that need not be UTF-8.
pub async fn resp_bytes(port: u16, args: &[&[u8]]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    stream.write_all(&command).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut text = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !resp_complete(&text) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "redis did not answer",
                ));
            }
        }
    }
    Ok(text)
}

fn resp_complete(text: &str) -> bool {
    let lines: Vec<&str> = text.split("\r\n").collect();
    match text.chars().next() {
        Some('+' | '-' | ':') => text.ends_with("\r\n"),
        // One bulk string: `$<len>\r\n<len bytes>\r\n` (`$-1` is nil).
        Some('$') => match text.split_once("\r\n") {
            Some((head, body)) => match head[1..].parse::<i64>() {
                Ok(len) if len < 0 => true,
                Ok(len) => body.len() >= len as usize + 2,
                Err(_) => false,
            },
            None => false,
        },
        Some('*') => {
            // An array of n items: count item lines (bulk strings take two).
            let n: usize = lines[0][1..].parse().unwrap_or(0);
            let mut items = 0;
            let mut i = 1;
            while i < lines.len() {
                let line = lines[i];
                if line.starts_with('$') {
                    // The data line must be there and terminated too.
                    if i + 2 > lines.len() - 1 {
                        return false;
                    }
                    i += 2;
                    items += 1;
                } else if line.starts_with(':') {
                    i += 1;
                    items += 1;
                } else {
                    i += 1;
                }
            }
            items >= n && text.ends_with("\r\n")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- gateway

/// How to start a node.
#[derive(Clone, Default)]
pub struct NodeOptions {
    pub redis_url: Option<String>,
    pub env: Vec<(String, String)>,
    /// Replaces the default test config file (roles only) when set.
    pub config_toml: Option<String>,
    pub node_id: Option<String>,
    /// Send the node's log (stderr) to this file instead of the test output.
    pub log_file: Option<PathBuf>,
}

impl NodeOptions {
    pub fn memory() -> Self {
        Self::default()
    }

    pub fn redis(redis: &Redis) -> Self {
        Self::redis_url(&redis.url())
    }

    /// Redis at any `WSGATE_REDIS_URL` (a seed list, `rediss://`, a Sentinel).
    pub fn redis_url(url: &str) -> Self {
        Self {
            redis_url: Some(url.to_string()),
            ..Self::default()
        }
    }

    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.into(), value.to_string()));
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml = Some(toml.into());
        self
    }

    pub fn node_id(mut self, id: &str) -> Self {
        self.node_id = Some(id.into());
        self
    }

    pub fn log_to(mut self, path: &std::path::Path) -> Self {
        self.log_file = Some(path.to_owned());
        self
    }
}

/// A running `wsgate` binary; killed on drop.
pub struct Node {
    pub addr: SocketAddr,
    child: Child,
    http: reqwest::Client,
}

impl Node {
    /// Start a node and wait until it is ready.
    pub async fn start(options: NodeOptions) -> Node {
        let node = Node::spawn(options).await;
        node.wait_ready().await;
        node
    }

    /// Start a node and wait only until it listens (it may never be ready).
    pub async fn spawn(options: NodeOptions) -> Node {
        let dir = temp_dir("node");
        let config_path = dir.join("wsgate.toml");
        std::fs::write(&config_path, options.config_toml.as_deref().unwrap_or(ROLES_TOML)).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        command
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WSGATE_LISTEN", "127.0.0.1:0")
            .env("WSGATE_JWT_SECRET", SECRET)
            .env("WSGATE_API_KEYS", API_KEY)
            .env(
                "WSGATE_LOG",
                std::env::var("WSGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("WSGATE_DRAIN_S", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = &options.redis_url {
            command.env("WSGATE_REDIS_URL", url);
        }
        if let Some(id) = &options.node_id {
            command.env("WSGATE_NODE_ID", id);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        if let Some(path) = &options.log_file {
            command.stderr(std::fs::File::create(path).expect("log file"));
        }
        let mut child = command.spawn().expect("spawn wsgate");
        let addr = listen_addr(&mut child).await;
        Node {
            addr,
            child,
            http: reqwest::Client::new(),
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub async fn status(&self, path: &str) -> u16 {
        match self.http.get(self.http_url(path)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn wait_ready(&self) {
        wait_for("node /ready = 200", || async { self.status("/ready").await == 200 }).await;
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.http_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample, e.g. `wsgate_connections` or
    /// `wsgate_connections_closed_total{reason="slow_consumer"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    pub async fn wait_metric(&self, sample: &str, wanted: impl Fn(f64) -> bool) {
        let start = Instant::now();
        loop {
            let value = self.metric(sample).await;
            if wanted(value) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for metric {sample}; last value {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request to the server API with the test API key.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.http_url(path))
            .header("authorization", format!("Bearer {API_KEY}"))
    }

    /// `POST /api/v1/publish` one event to one room; expects 202.
    pub async fn publish(&self, room: &str, event: &str, data: Value) {
        let response = self
            .api(reqwest::Method::POST, "/api/v1/publish")
            .json(&json!({"rooms": [room], "event": event, "data": data}))
            .send()
            .await
            .expect("POST /api/v1/publish");
        assert_eq!(response.status(), 202, "publish to {room}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Send a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        assert!(pid > 0, "node is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Read the address the node prints (`wsgate listening on http://ADDR`),
/// then keep draining its stdout so it never blocks on a full pipe.
pub async fn listen_addr(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            // The plain line, or (WSGATE_LOG_FORMAT=json) a JSON line with "addr".
            let json_addr = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["addr"].as_str().map(String::from));
            let rest = line
                .strip_prefix("wsgate listening on ")
                .map(String::from)
                .or(json_addr);
            if let Some(rest) = rest {
                let addr = rest.trim_start_matches("http://").trim_start_matches("https://");
                return addr.parse::<SocketAddr>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("wsgate printed its address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// Start the binary with exactly this environment (no config file, no
/// readiness wait); killed on drop.
pub async fn spawn_bare(env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsgate");
    let addr = listen_addr(&mut child).await;
    (child, addr)
}

/// Read a sample's value from Prometheus text: exact name and labels.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    let (name, labels) = match sample.split_once('{') {
        Some((name, labels)) => (name, Some(labels.trim_end_matches('}'))),
        None => (sample, None),
    };
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.trim_end_matches('}'))),
            None => (series, None),
        };
        if series_name != name {
            continue;
        }
        let matches = match (labels, series_labels) {
            (None, _) => true,
            (Some(wanted), Some(have)) => wanted.split(',').all(|w| have.split(',').any(|h| h == w)),
            (Some(_), None) => false,
        };
        if matches {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

// ---------------------------------------------------------------- tokens

pub fn signer() -> Signer {
    Signer::hs256(SECRET, ClaimNames::default()).expect("signer")
}

pub fn token(sub: &str, org: Option<&str>, roles: &[&str], ttl_s: u64) -> String {
    signer()
        .sign(&TokenRequest {
            sub: sub.into(),
            org: org.map(String::from),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl_s,
            ..TokenRequest::default()
        })
        .expect("sign")
}

/// A token with exactly these claims, HS256 with the test secret.
pub fn token_with_claims(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("encode")
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

// ---------------------------------------------------------------- clients

#[derive(Clone, Copy, Debug)]
pub enum Via {
    Header,
    Query,
    Frame,
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
    /// Frames read while waiting for a reply, returned by the next `recv`s.
    stash: std::collections::VecDeque<Value>,
}

/// Why a connect failed: the HTTP status before the upgrade, or the close
/// frame after it.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Http(u16, String),
    Closed(u16, String),
}

pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refusal> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().expect("header name");
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(Refusal::Http(status, body))
        }
        Ok(Err(e)) => panic!("connect failed: {e}"),
        Err(_) => panic!("connect timed out"),
    }
}

impl Client {
    /// Connect with a token and wait for the welcome (or the refusal).
    pub async fn connect(node: &Node, token: &str, via: Via) -> Result<Client, Refusal> {
        Self::connect_url(&node.ws_url(), token, via).await
    }

    pub async fn connect_url(base: &str, token: &str, via: Via) -> Result<Client, Refusal> {
        let mut ws = match via {
            Via::Header => open(base, &[("authorization", &format!("Bearer {token}"))]).await?,
            Via::Query => open(&format!("{base}?token={token}"), &[]).await?,
            Via::Frame => {
                let mut ws = open(base, &[]).await?;
                ws.send(Message::text(json!({"type":"auth","token":token}).to_string()))
                    .await
                    .expect("send auth");
                ws
            }
        };
        match next_frame(&mut ws).await {
            Frame::Json(welcome) => {
                assert_eq!(welcome["type"], "welcome", "first frame is the welcome: {welcome}");
                Ok(Client {
                    ws,
                    welcome,
                    stash: Default::default(),
                })
            }
            Frame::Close(code, reason) => Err(Refusal::Closed(code, reason)),
            Frame::Gone => panic!("connection ended without a close frame"),
        }
    }

    /// Connect as a user (with org and roles) by header; panics if refused.
    pub async fn user(node: &Node, sub: &str, org: Option<&str>, roles: &[&str]) -> Client {
        Self::connect(node, &token(sub, org, roles, 3600), Via::Header)
            .await
            .expect("connect")
    }

    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.welcome["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_string())
            .collect();
        rooms.sort();
        rooms
    }

    pub async fn send(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    /// The next JSON frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.stash.pop_front() {
            return frame;
        }
        match next_frame(&mut self.ws).await {
            Frame::Json(v) => v,
            Frame::Close(code, reason) => panic!("closed {code} {reason} while waiting for a frame"),
            Frame::Gone => panic!("connection ended while waiting for a frame"),
        }
    }

    /// The next frame of a given `type`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Send a command and return the reply carrying its `ref`. Frames that
    /// arrive first (an event may overtake its publish's ack) are kept for
    /// the next `recv`.
    pub async fn request(&mut self, mut command: Value) -> Value {
        let reference = format!("r{}", fastrand::u32(..));
        command["ref"] = json!(reference);
        self.send(command).await;
        let mut skipped = Vec::new();
        let reply = loop {
            let frame = match next_frame(&mut self.ws).await {
                Frame::Json(v) => v,
                Frame::Close(code, reason) => panic!("closed {code} {reason} while waiting for a reply"),
                Frame::Gone => panic!("connection ended while waiting for a reply"),
            };
            if frame["ref"] == json!(reference) {
                break frame;
            }
            skipped.push(frame);
        };
        self.stash.extend(skipped);
        reply
    }

    /// Wait for the server's close frame; returns (code, reason).
    pub async fn closed(&mut self) -> (u16, String) {
        self.stash.clear();
        loop {
            match next_frame(&mut self.ws).await {
                Frame::Json(_) => continue,
                Frame::Close(code, reason) => return (code, reason),
                Frame::Gone => panic!("connection ended without a close frame"),
            }
        }
    }
}

pub enum Frame {
    Json(Value),
    Close(u16, String),
    Gone,
}

/// The next text frame (as JSON) or the close, skipping pings; times out
/// after [`PATIENCE`].
pub async fn next_frame(ws: &mut Ws) -> Frame {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, ws.next()).await {
            Ok(message) => message,
            Err(_) => panic!("no frame within {PATIENCE:?}"),
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                return Frame::Json(serde_json::from_str(&text).expect("server frames are JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Frame::Close(code, reason);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Frame::Gone,
        }
    }
}

/// The next stdout line of a child process (e.g. `wsgate tail`), as JSON.
pub async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("a line, not the end");
    serde_json::from_str(&line).expect("a JSON line")
}

/// A client that stops reading right after its welcome, with a small
/// receive buffer so that the kernel holds little for it: a stalled reader.
pub async fn stalled_client(node: &Node, sub: &str, org: Option<&str>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    let stream = socket.connect(node.addr).await.expect("connect");
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{}?token={}",
        node.ws_url(),
        token(sub, org, &[], 600)
    ))
    .expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    assert!(matches!(next_frame(&mut ws).await, Frame::Json(w) if w["type"] == "welcome"));
    ws
}
