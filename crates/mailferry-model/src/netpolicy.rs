//! Where the server may connect. The API lets callers name any host, so every endpoint is
//! checked after DNS resolution against an allow list (empty: anything not denied) and a deny
//! list that by default holds link-local ranges and cloud metadata addresses (SSRF guard).
//! The clients connect only to the addresses that passed the check, so a name cannot resolve
//! to something else between check and connect.

use std::net::IpAddr;

use crate::hostlist::{HostList, HostListError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// When non-empty, the host name or every resolved address must be on it.
    pub allow: HostList,
    pub deny: HostList,
}

/// Link-local (where cloud metadata services live), the metadata addresses themselves, and
/// "this network".
pub const DEFAULT_DENY: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254",
    "100.100.100.200",
    "0.0.0.0/8",
    "metadata.google.internal",
];

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self { allow: HostList::default(), deny: HostList::parse(DEFAULT_DENY.iter().copied()).expect("valid defaults") }
    }
}

impl NetworkPolicy {
    /// Lists as written in configuration; `deny` replaces the default deny list when given.
    pub fn parse<'a>(
        allow: impl IntoIterator<Item = &'a str>,
        deny: Option<Vec<&'a str>>,
    ) -> Result<Self, HostListError> {
        Ok(Self {
            allow: HostList::parse(allow)?,
            deny: match deny {
                Some(d) => HostList::parse(d)?,
                None => Self::default().deny,
            },
        })
    }

    /// Check a host and the addresses it resolved to; `Err` is one sentence saying why.
    pub fn check(&self, host: &str, addrs: &[IpAddr]) -> Result<(), String> {
        if addrs.is_empty() {
            return Err(format!("{host} did not resolve to any address"));
        }
        if self.deny.contains(host) {
            return Err(format!("{host} is denied by the network policy"));
        }
        if let Some(ip) = addrs.iter().find(|ip| self.deny.contains(&ip.to_string())) {
            return Err(format!("{host} resolves to {ip}, which the network policy denies"));
        }
        if !self.allow.is_empty()
            && !self.allow.contains(host)
            && !addrs.iter().all(|ip| self.allow.contains(&ip.to_string()))
        {
            return Err(format!("{host} is not on the network policy's allow list"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn default_denies_metadata_and_link_local() {
        let p = NetworkPolicy::default();
        assert!(p.check("mail.example.com", &ips(&["192.0.2.10"])).is_ok());
        assert!(p.check("127.0.0.1", &ips(&["127.0.0.1"])).is_ok());
        let e = p.check("evil.example", &ips(&["192.0.2.1", "169.254.169.254"])).unwrap_err();
        assert!(e.contains("169.254.169.254"), "{e}");
        assert!(p.check("metadata.google.internal", &ips(&["192.0.2.1"])).is_err());
        assert!(p.check("x", &ips(&["fe80::1"])).is_err());
        assert!(p.check("x", &ips(&["::ffff:169.254.169.254"])).is_err(), "IPv4-mapped addresses are checked as IPv4");
        assert!(p.check("x", &[]).is_err());
    }

    #[test]
    fn allow_lists_restrict() {
        let p = NetworkPolicy::parse(["10.0.0.0/8", "mail.example.com"], None).unwrap();
        assert!(p.check("mail.example.com", &ips(&["192.0.2.1"])).is_ok());
        assert!(p.check("other", &ips(&["10.1.2.3"])).is_ok());
        assert!(p.check("other", &ips(&["10.1.2.3", "192.0.2.1"])).is_err());
        let p = NetworkPolicy::parse([], Some(vec!["127.0.0.2"])).unwrap();
        assert!(p.check("127.0.0.2", &ips(&["127.0.0.2"])).is_err());
        assert!(p.check("x", &ips(&["169.254.1.1"])).is_ok(), "an explicit deny list replaces the default");
    }
}
