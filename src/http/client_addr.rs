//! The client's address: the TCP peer, or, when the peer is a trusted proxy
//! (`trusted_proxies`, CIDRs), the address that proxy says it forwarded for
//! (`X-Forwarded-For`, else `Forwarded: for=`). What per-IP limits, logs and
//! the API's `remote_addr` use (docs/PROTOCOL.md §7).
//!
//! The header is read right to left, skipping trusted proxies: the first
//! untrusted address is the client, since only the hops from there on were
//! added by proxies we trust. From any other peer the headers are ignored,
//! so a client cannot choose its own address.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is /32
/// or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{text}': the prefix must be 0-{max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32) == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(width - prefix);
    (bits >> shift) << shift
}

/// An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, a dual-stack listener) is
/// the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address for a request from `peer`.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer;
    }
    let mut hops = forwarded_for(headers);
    // Right to left: the first address no trusted proxy could have added.
    while let Some(hop) = hops.pop() {
        if !is_trusted(hop) {
            return SocketAddr::new(canonical(hop), 0);
        }
    }
    peer
}

/// The forwarded-for chain, oldest first: every `X-Forwarded-For` value in
/// order, or else every `Forwarded` element's `for=`. Unreadable entries
/// end the chain there (nothing left of them can be trusted to be right).
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let entries: Vec<String> = if xff.is_empty() {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| value.trim().trim_matches('"').to_string())
                })
            })
            .collect()
    } else {
        xff.iter().map(|s| s.trim().to_string()).collect()
    };
    let mut chain = Vec::new();
    for entry in entries.iter().rev() {
        match parse_hop(entry) {
            Some(ip) => chain.push(ip),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.9.8.7".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::5".parse().unwrap())
        );
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_the_rightmost_untrusted_hop_wins() {
        let proxy: SocketAddr = "10.0.0.2:5555".parse().unwrap();
        let trusted = cidrs(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(resolve(proxy, &spoofed, &trusted).ip().to_string(), "203.0.113.7");
        let stranger: SocketAddr = "198.51.100.1:4444".parse().unwrap();
        assert_eq!(
            resolve(stranger, &spoofed, &trusted),
            stranger,
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            resolve(proxy, &spoofed, &[]),
            proxy,
            "nothing trusted: nothing believed"
        );
        let forwarded = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::17]:4711\"")]);
        assert_eq!(resolve(proxy, &forwarded, &trusted).ip().to_string(), "2001:db8::17");
        let garbage = headers(&[("x-forwarded-for", "203.0.113.7, not-an-ip")]);
        assert_eq!(
            resolve(proxy, &garbage, &trusted),
            proxy,
            "an unreadable last hop: the peer"
        );
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
