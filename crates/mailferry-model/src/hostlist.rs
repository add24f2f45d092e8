//! Host allow-lists (e.g. which hosts may be reached without TLS): exact host names
//! (case-insensitive), IP addresses, and CIDR ranges. Pure: no DNS here.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Name(String),
    Net(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostList {
    rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid host list entry {0:?}: expected a host name, an IP address or a CIDR range")]
pub struct HostListError(pub String);

impl HostList {
    /// Loopback only: 127.0.0.0/8, ::1 and localhost.
    pub fn loopback() -> Self {
        Self::parse(["127.0.0.0/8", "::1", "localhost"]).expect("valid built-in list")
    }

    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, HostListError> {
        let mut rules = Vec::new();
        for raw in entries {
            let lowered = raw.trim().trim_end_matches('.').to_ascii_lowercase();
            let e = lowered.as_str();
            if e.is_empty() {
                continue;
            }
            let rule = if let Some((ip, bits)) = e.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| HostListError(raw.into()))?;
                let bits: u8 = bits.parse().map_err(|_| HostListError(raw.into()))?;
                if bits > if ip.is_ipv4() { 32 } else { 128 } {
                    return Err(HostListError(raw.into()));
                }
                Rule::Net(ip, bits)
            } else if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                Rule::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
                Rule::Name(e.to_owned())
            } else {
                return Err(HostListError(raw.into()));
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `host` (a name or an IP literal) is on the list.
    pub fn contains(&self, host: &str) -> bool {
        let host = host.trim().trim_end_matches('.').trim_matches(['[', ']']).to_ascii_lowercase();
        // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4 address it maps.
        let ip = host.parse::<IpAddr>().ok().map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        });
        self.rules.iter().any(|r| match (r, ip) {
            (Rule::Name(n), None) => *n == host,
            (Rule::Net(net, bits), Some(ip)) => in_net(ip, *net, *bits),
            _ => false,
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_cidrs() {
        let l = HostList::loopback();
        for yes in ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "LOCALHOST", "localhost.", "::ffff:127.0.0.1"] {
            assert!(l.contains(yes), "{yes}");
        }
        for no in ["10.0.0.1", "example.com", "localhost.example.com", "::2", "127.0.0.1.evil.example", ""] {
            assert!(!l.contains(no), "{no}");
        }
        let l = HostList::parse(["10.1.0.0/16", "mail.example.org", "fd00::/8"]).unwrap();
        assert!(l.contains("10.1.200.3") && !l.contains("10.2.0.1"));
        assert!(l.contains("Mail.Example.org") && l.contains("fd12::1"));
        assert!(HostList::parse(["10.0.0.0/33"]).is_err());
        assert!(HostList::parse(["bad host!"]).is_err());
    }
}
