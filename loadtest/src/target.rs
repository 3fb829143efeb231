//! The targets: WebSocket URLs turned into an address to dial and the
//! request path each protocol needs, and the rule that keeps a load test on
//! this machine unless `--allow-remote` says otherwise.

use std::net::{IpAddr, SocketAddr};

use tokio_tungstenite::tungstenite::http::Uri;

use crate::config::Protocol;

/// One gateway (or peer) node, resolved once before any socket is opened.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `ws://host:port/path?query`, without any token.
    pub url: String,
}

impl Target {
    /// Parse `url` for `protocol`; a bare `ws://host:port` gets the
    /// protocol's usual path (`/v1/ws`, `/socket.io/`).
    pub async fn resolve(url: &str, protocol: Protocol, allow_remote: bool) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err(format!("{url}: wss is not supported; load-test over plain ws")),
            _ => return Err(format!("{url}: the target must be a ws:// URL")),
        }
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        check_local(host, allow_remote).map_err(|e| format!("{url}: {e}"))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = resolve(host, port).await.map_err(|e| format!("{url}: {e}"))?;
        let path = match (uri.path(), protocol) {
            ("" | "/", Protocol::Wsgate) => "/v1/ws",
            ("" | "/", Protocol::Socketio) => "/socket.io/",
            (path, _) => path,
        };
        let mut query: Vec<&str> = uri.query().into_iter().filter(|q| !q.is_empty()).collect();
        if protocol == Protocol::Socketio {
            query.push("EIO=4&transport=websocket");
        }
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let mut full = format!("ws://{authority}{path}");
        if !query.is_empty() {
            full.push('?');
            full.push_str(&query.join("&"));
        }
        Ok(Target { addr, url: full })
    }

    /// The URL a socket requests: the raw peer takes the token in the query.
    pub fn request_url(&self, protocol: Protocol, token: &str) -> String {
        match protocol {
            Protocol::Raw => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}token={token}", self.url)
            }
            Protocol::Wsgate | Protocol::Socketio => self.url.clone(),
        }
    }
}

/// Refuse a host outside loopback (127.0.0.0/8, ::1, `localhost`) unless
/// remote targets are allowed. Names other than `localhost` are refused
/// rather than resolved: what a name points at can change under us.
pub fn check_local(host: &str, allow_remote: bool) -> Result<(), String> {
    if allow_remote || is_local(host) {
        Ok(())
    } else {
        Err(format!(
            "{host} is not a loopback address (127.0.0.0/8, ::1, localhost); pass --allow-remote to load another machine"
        ))
    }
}

pub fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    })
}

/// The host part of a `scheme://[user@]host[:port]/...` URL (Redis, HTTP).
pub fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host_port.rsplit_once(':').map_or(host_port, |(h, _)| h))
}

/// One address for `host:port`, IPv4 first: the source addresses sockets are
/// bound to are IPv4.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_local_and_others_are_not() {
        for host in [
            "127.0.0.1",
            "127.0.0.9",
            "127.255.0.1",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_local(host), "{host} is local");
        }
        for host in [
            "10.0.0.1",
            "0.0.0.0",
            "192.168.1.2",
            "::",
            "example.com",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_local(host), "{host} is not local");
        }
    }

    #[test]
    fn remote_targets_need_the_explicit_flag() {
        assert!(check_local("10.1.2.3", false).is_err());
        assert!(check_local("10.1.2.3", true).is_ok());
        assert!(check_local("127.0.0.1", false).is_ok());
    }

    #[test]
    fn host_of_finds_the_host_in_redis_and_http_urls() {
        assert_eq!(host_of("redis://127.0.0.1:6379"), Some("127.0.0.1"));
        assert_eq!(host_of("redis://:pw@10.0.0.5:6379/0"), Some("10.0.0.5"));
        assert_eq!(host_of("http://[::1]:8080/api"), Some("::1"));
        assert_eq!(host_of("http://localhost/x"), Some("localhost"));
    }

    #[tokio::test]
    async fn urls_get_the_protocols_paths() {
        let t = Target::resolve("ws://127.0.0.1:9", Protocol::Wsgate, false)
            .await
            .expect("target");
        assert_eq!(t.url, "ws://127.0.0.1:9/v1/ws");
        assert_eq!(t.addr, "127.0.0.1:9".parse().expect("addr"));
        let t = Target::resolve("ws://127.0.0.1:9", Protocol::Socketio, false)
            .await
            .expect("target");
        assert_eq!(t.url, "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket");
        let t = Target::resolve("ws://127.0.0.1:9/ws", Protocol::Raw, false)
            .await
            .expect("target");
        assert_eq!(t.request_url(Protocol::Raw, "abc"), "ws://127.0.0.1:9/ws?token=abc");
        assert!(
            Target::resolve("ws://10.0.0.1:9", Protocol::Wsgate, false)
                .await
                .is_err()
        );
        assert!(
            Target::resolve("http://127.0.0.1:9", Protocol::Wsgate, false)
                .await
                .is_err()
        );
    }
}
