//! Opening one socket: bind a source address, TCP connect, the WebSocket
//! handshake, and the protocol's own greeting — wsgate's welcome frame
//! (after the auth frame, when the token goes in one: how a resume gives
//! its positions), or Socket.IO's open packet, CONNECT with the token, and
//! the CONNECT answer — all under one timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::Protocol;
use crate::target::Target;
use crate::wire;

pub type Ws = WebSocketStream<TcpStream>;

/// tungstenite allocates its read buffer eagerly (128 KiB by default) and
/// holds writes up to 128 KiB: with thousands of sockets per process that
/// would be gigabytes. Frames here are small.
const READ_BUFFER_BYTES: usize = 4 * 1024;
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Why a socket did not open. [`DialError::label`] is a short, bounded key
/// for the report.
#[derive(Debug)]
pub enum DialError {
    Bind(std::io::Error),
    Tcp(std::io::Error),
    Timeout,
    /// Refused before the upgrade with this HTTP status.
    Http(u16),
    Handshake(String),
    /// Closed before the welcome, with this close code (None: no close frame).
    Closed(Option<u16>),
    /// Socket.IO CONNECT refused (`44`).
    Refused,
    /// The first frames were not what the protocol says.
    Protocol(String),
}

impl DialError {
    pub fn label(&self) -> String {
        match self {
            DialError::Bind(_) => "bind".into(),
            DialError::Tcp(_) => "tcp".into(),
            DialError::Timeout => "timeout".into(),
            DialError::Http(status) => format!("http_{status}"),
            DialError::Handshake(_) => "handshake".into(),
            DialError::Closed(Some(code)) => format!("closed_{code}"),
            DialError::Closed(None) => "closed".into(),
            DialError::Refused => "refused".into(),
            DialError::Protocol(_) => "protocol".into(),
        }
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Bind(e) => write!(f, "bind: {e}"),
            DialError::Tcp(e) => write!(f, "tcp connect: {e}"),
            DialError::Timeout => write!(f, "no welcome in time"),
            DialError::Http(status) => write!(f, "refused with HTTP {status}"),
            DialError::Handshake(e) => write!(f, "handshake: {e}"),
            DialError::Closed(code) => write!(f, "closed before the welcome ({code:?})"),
            DialError::Refused => write!(f, "Socket.IO CONNECT refused"),
            DialError::Protocol(e) => write!(f, "unexpected greeting: {e}"),
        }
    }
}

/// Everything needed to open socket number `i`.
pub struct Dialer {
    pub protocol: Protocol,
    pub targets: Arc<[Target]>,
    pub sources: Arc<[IpAddr]>,
    pub timeout: Duration,
}

/// How a wsgate socket gives its token.
#[derive(Clone, Copy, Debug)]
pub enum Hello<'a> {
    /// `Authorization: Bearer` on the upgrade request.
    Header,
    /// This auth frame, first thing after the upgrade.
    Frame(&'a str),
}

impl Dialer {
    /// Socket `index` goes to target `index % targets` and, among the
    /// sockets of that target, round-robin over the source addresses.
    /// Returns the socket and its welcome (empty for Socket.IO).
    pub async fn dial(&self, index: u64, token: &str) -> Result<(Ws, String), DialError> {
        let targets = self.targets.len() as u64;
        self.dial_to((index % targets) as usize, index / targets, token, Hello::Header)
            .await
    }

    /// Socket `index` to target `target` (modulo the targets), from source
    /// address `n` (modulo the sources).
    pub async fn dial_to(
        &self,
        target: usize,
        n: u64,
        token: &str,
        hello: Hello<'_>,
    ) -> Result<(Ws, String), DialError> {
        let target = &self.targets[target % self.targets.len()];
        let source = source_for(target.addr, &self.sources, n);
        tokio::time::timeout(self.timeout, self.open(target, source, token, hello))
            .await
            .unwrap_or(Err(DialError::Timeout))
    }

    async fn open(
        &self,
        target: &Target,
        source: Option<IpAddr>,
        token: &str,
        hello: Hello<'_>,
    ) -> Result<(Ws, String), DialError> {
        let stream = tcp_connect(target.addr, source).await?;
        let url = target.request_url(self.protocol, token);
        let mut request = url
            .into_client_request()
            .map_err(|e| DialError::Handshake(e.to_string()))?;
        if self.protocol == Protocol::Wsgate && matches!(hello, Hello::Header) {
            let bearer =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| DialError::Handshake(e.to_string()))?;
            request.headers_mut().insert(AUTHORIZATION, bearer);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES);
        let (mut ws, _) = match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok(pair) => pair,
            Err(WsError::Http(response)) => return Err(DialError::Http(response.status().as_u16())),
            Err(e) => return Err(DialError::Handshake(e.to_string())),
        };
        match self.protocol {
            Protocol::Wsgate | Protocol::Raw => {
                if let Hello::Frame(frame) = hello {
                    ws.send(Message::text(frame))
                        .await
                        .map_err(|e| DialError::Handshake(e.to_string()))?;
                }
                let first = next_text(&mut ws).await?;
                if wire::is_welcome(&first) {
                    Ok((ws, first))
                } else {
                    Err(DialError::Protocol(truncate(&first)))
                }
            }
            Protocol::Socketio => Ok((socketio_connect(ws, token).await?, String::new())),
        }
    }
}

fn source_for(dest: SocketAddr, sources: &[IpAddr], n: u64) -> Option<IpAddr> {
    // Loopback sources only reach loopback targets.
    if sources.is_empty() || !dest.ip().is_loopback() {
        return None;
    }
    let source = sources[(n % sources.len() as u64) as usize];
    (source.is_ipv4() == dest.is_ipv4()).then_some(source)
}

async fn tcp_connect(dest: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, DialError> {
    let socket = if dest.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(DialError::Tcp)?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0)).map_err(DialError::Bind)?;
    }
    let stream = socket.connect(dest).await.map_err(DialError::Tcp)?;
    // Small frames both ways (pongs, closes): do not hold them back.
    stream.set_nodelay(true).map_err(DialError::Tcp)?;
    Ok(stream)
}

/// The next text frame; a close or the end of the stream is an error.
async fn next_text(ws: &mut Ws) -> Result<String, DialError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => return Err(DialError::Closed(frame.map(|f| u16::from(f.code)))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(DialError::Handshake(e.to_string())),
            None => return Err(DialError::Closed(None)),
        }
    }
}

/// Engine.IO open (`0{...}`), then Socket.IO CONNECT with the token in its
/// auth payload (`40{"token":..}`), answered by `40{"sid":..}` or `44{..}`.
async fn socketio_connect(mut ws: Ws, token: &str) -> Result<Ws, DialError> {
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(DialError::Protocol(truncate(&open)));
    }
    let connect = format!(r#"40{{"token":{}}}"#, serde_json::Value::from(token));
    ws.send(Message::text(connect))
        .await
        .map_err(|e| DialError::Handshake(e.to_string()))?;
    loop {
        let packet = next_text(&mut ws).await?;
        if packet.starts_with("40") {
            return Ok(ws);
        }
        if packet.starts_with("44") {
            return Err(DialError::Refused);
        }
        if packet == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| DialError::Handshake(e.to_string()))?;
            continue;
        }
        return Err(DialError::Protocol(truncate(&packet)));
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_for_loopback_targets_only() {
        let sources: Vec<IpAddr> = crate::config::default_source_ips();
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let picked: Vec<_> = (0..9).filter_map(|n| source_for(local, &sources, n)).collect();
        assert_eq!(picked.len(), 9);
        assert_eq!(picked[0], sources[0]);
        assert_eq!(picked[7], sources[7]);
        assert_eq!(picked[8], sources[0]);
        let remote: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        assert_eq!(source_for(remote, &sources, 0), None);
        let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
        assert_eq!(source_for(v6, &sources, 0), None, "IPv4 sources cannot reach ::1");
        assert_eq!(source_for(local, &[], 0), None);
    }

    #[test]
    fn failure_labels_are_short_and_bounded() {
        assert_eq!(DialError::Http(401).label(), "http_401");
        assert_eq!(DialError::Closed(Some(4001)).label(), "closed_4001");
        assert_eq!(DialError::Timeout.label(), "timeout");
    }
}
