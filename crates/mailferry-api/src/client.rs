//! Where a request comes from, for the audit log and the failed-authentication limit.
//!
//! The socket peer (axum's `ConnectInfo<SocketAddr>`, present when the app is served with
//! `into_make_service_with_connect_info`), unless that peer is a configured trusted proxy
//! (`ApiConfig::trusted_proxies`): then `X-Forwarded-For` is read from the right, skipping
//! trusted proxies, and the first address that is not one is the client. Entries left of
//! it were written by the client itself and are never believed. Without a trusted proxy
//! the header is ignored entirely, so a client cannot pick its own address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use mailferry_model::HostList;

/// The client's address; `None` when the server was not given connection info.
pub fn client_ip(extensions: &Extensions, headers: &HeaderMap, trusted: &HostList) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| canonical(c.0.ip()))?;
    Some(resolve(peer, headers, trusted))
}

fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &HostList) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(&peer.to_string()) {
        return peer;
    }
    // Several X-Forwarded-For headers form one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage from here on: the last hop we could read is the best we know.
            break;
        };
        client = ip;
        if !trusted.contains(&ip.to_string()) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `192.0.2.1:5000`, `2001:db8::1`, `[2001:db8::1]:5000`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(canonical)
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps (dual-stack listeners).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_without_a_trusted_proxy() {
        let h = headers(&["198.51.100.7"]);
        assert_eq!(resolve(ip("192.0.2.1"), &h, &HostList::default()), ip("192.0.2.1"));
        let trusted = HostList::parse(["10.0.0.0/8"]).unwrap();
        assert_eq!(resolve(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"), "the peer is not a trusted proxy");
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = HostList::parse(["10.0.0.0/8", "::1"]).unwrap();
        // The client claims 1.1.1.1; the edge proxy saw 198.51.100.7; an inner proxy 10.0.0.2.
        let h = headers(&["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.3"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(resolve(canonical(ip("::ffff:10.0.0.3")), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(resolve(ip("10.0.0.3"), &headers(&["[2001:db8::5]:4711"]), &trusted), ip("2001:db8::5"));
        assert_eq!(resolve(ip("10.0.0.3"), &headers(&["198.51.100.9:80"]), &trusted), ip("198.51.100.9"));
        assert_eq!(resolve(ip("10.0.0.3"), &headers(&[]), &trusted), ip("10.0.0.3"), "no header: the proxy itself");
        assert_eq!(resolve(ip("10.0.0.3"), &headers(&["nonsense, 10.0.0.9"]), &trusted), ip("10.0.0.9"));
        assert_eq!(resolve(ip("10.0.0.3"), &headers(&["10.0.0.8, 10.0.0.9"]), &trusted), ip("10.0.0.8"));
    }
}
