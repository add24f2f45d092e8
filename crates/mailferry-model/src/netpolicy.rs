//! Where the server may connect (DESIGN.md §2.9). A write-scope API caller can name any host
//! for a job or an OAuth2 token endpoint, so every connection is checked after DNS
//! resolution, on every resolved address, in this order:
//!
//! 1. `deny` (the operator's `network.deny`): always refused;
//! 2. the built-in list of the policy's [`Defaults`] (for jobs created over the API: loopback,
//!    RFC 1918, CGNAT, IPv6 unique-local and link-local, NAT64, "this network" and cloud
//!    metadata), unless `allow` (`network.allow`) names the host or the address;
//! 3. anything else is allowed.
//!
//! IPv4-mapped (`::ffff:127.0.0.1`) and IPv4-compatible IPv6 addresses are judged as the IPv4
//! address they carry. The clients connect only to the addresses that passed the check, so a
//! name cannot resolve to something else between check and connect. A refusal is one sentence
//! naming the configuration key that would allow the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::hostlist::{HostList, HostListError};

/// Which built-in deny list a policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    /// None: only the explicit lists (tests; [`NetworkPolicy::parse`] with a deny list).
    None,
    /// Cloud metadata, link-local and "this network": the admin's own shell (`mailferry
    /// migrate`), where loopback and private hosts are what the admin named.
    Local,
    /// Everything in [`AddressKind`]: jobs created over the API (a shared service).
    Api,
}

/// Why an address is on a built-in deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// 169.254.169.254, fd00:ec2::254, 100.100.100.200, metadata.google.internal.
    Metadata,
    /// 0.0.0.0/8 and `::` (connecting to them reaches this host).
    Unspecified,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// RFC 6598 shared address space (carrier-grade NAT): 100.64.0.0/10.
    SharedCgnat,
    /// RFC 4193 unique-local: fc00::/7.
    UniqueLocal,
    /// RFC 6052 / RFC 8215 NAT64 prefixes: 64:ff9b::/96, 64:ff9b:1::/48 (they reach IPv4
    /// hosts, internal ones included, through the translator).
    Nat64,
}

impl AddressKind {
    /// "a loopback address": the phrase used in refusals.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Metadata => "a cloud metadata address",
            Self::Unspecified => "an unspecified (\"this network\") address",
            Self::LinkLocal => "a link-local address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private (RFC 1918) address",
            Self::SharedCgnat => "a shared (carrier-grade NAT) address",
            Self::UniqueLocal => "an IPv6 unique-local address",
            Self::Nat64 => "a NAT64 address",
        }
    }

    /// Whether `defaults` denies this kind.
    pub fn denied_by(self, defaults: Defaults) -> bool {
        match defaults {
            Defaults::None => false,
            Defaults::Local => matches!(self, Self::Metadata | Self::Unspecified | Self::LinkLocal),
            Defaults::Api => true,
        }
    }
}

use AddressKind::*;

/// The built-in IPv4 ranges, most specific first (the metadata addresses sit inside
/// link-local and CGNAT).
const V4: &[(Ipv4Addr, u8, AddressKind)] = &[
    (Ipv4Addr::new(169, 254, 169, 254), 32, Metadata),
    (Ipv4Addr::new(100, 100, 100, 200), 32, Metadata),
    (Ipv4Addr::new(0, 0, 0, 0), 8, Unspecified),
    (Ipv4Addr::new(169, 254, 0, 0), 16, LinkLocal),
    (Ipv4Addr::new(127, 0, 0, 0), 8, Loopback),
    (Ipv4Addr::new(10, 0, 0, 0), 8, Private),
    (Ipv4Addr::new(172, 16, 0, 0), 12, Private),
    (Ipv4Addr::new(192, 168, 0, 0), 16, Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, SharedCgnat),
];

/// The built-in IPv6 ranges (IPv4-mapped and -compatible addresses are judged as IPv4).
const V6: &[(Ipv6Addr, u8, AddressKind)] = &[
    (Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), 128, Metadata),
    (Ipv6Addr::UNSPECIFIED, 128, Unspecified),
    (Ipv6Addr::LOCALHOST, 128, Loopback),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, LinkLocal),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, UniqueLocal),
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, Nat64),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, Nat64),
];

/// Host names of metadata services, refused before any DNS (they resolve to link-local).
pub const METADATA_NAMES: &[&str] = &["metadata.google.internal"];

/// Every built-in entry with its kind, as an operator would write it (`127.0.0.0/8`), for
/// documentation and `config check`.
pub fn builtin_entries() -> Vec<(String, AddressKind)> {
    let net = |ip: IpAddr, bits: u8, full: u8| if bits == full { ip.to_string() } else { format!("{ip}/{bits}") };
    V4.iter()
        .map(|&(ip, bits, kind)| (net(ip.into(), bits, 32), kind))
        .chain(V6.iter().map(|&(ip, bits, kind)| (net(ip.into(), bits, 128), kind)))
        .chain(METADATA_NAMES.iter().map(|n| (n.to_string(), Metadata)))
        .collect()
}

/// The IPv4 address an IPv4-mapped (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`)
/// IPv6 address carries; any other address unchanged. `::` and `::1` stay IPv6.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_loopback() => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.segments()[..6] == [0; 6] => IpAddr::V4(Ipv4Addr::from(u32::try_from(u128::from(v6)).unwrap_or(0))),
            None => ip,
        },
        v4 => v4,
    }
}

/// What a built-in list says about an address (after [`canonical`]); `None`: an ordinary
/// address.
pub fn classify(ip: IpAddr) -> Option<AddressKind> {
    match canonical(ip) {
        IpAddr::V4(a) => {
            V4.iter().find(|(net, bits, _)| prefix_eq(u32::from(a).into(), u32::from(*net).into(), *bits, 32)).map(|e| e.2)
        }
        IpAddr::V6(a) => V6.iter().find(|(net, bits, _)| prefix_eq(u128::from(a), u128::from(*net), *bits, 128)).map(|e| e.2),
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, width: u32) -> bool {
    let bits = u32::from(bits).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (a >> shift) == (b >> shift)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// `network.allow`: hosts, addresses and CIDR blocks opened despite the built-in list.
    pub allow: HostList,
    /// `network.deny`: refused always, on top of the built-in list.
    pub deny: HostList,
    pub defaults: Defaults,
}

/// The built-in list of the admin's own shell (metadata, link-local, "this network"): what
/// [`TlsOptions::default`](crate::TlsOptions) carries.
impl Default for NetworkPolicy {
    fn default() -> Self {
        Self { allow: HostList::default(), deny: HostList::default(), defaults: Defaults::Local }
    }
}

impl NetworkPolicy {
    /// `network.allow` and `network.deny` as written in configuration, on top of `defaults`:
    /// `deny` adds to the built-in list, `allow` opens entries of it.
    pub fn new<'a>(
        defaults: Defaults,
        allow: impl IntoIterator<Item = &'a str>,
        deny: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, HostListError> {
        Ok(Self { allow: HostList::parse(allow)?, deny: HostList::parse(deny)?, defaults })
    }

    /// For jobs created over the API, with nothing allowed beyond the defaults.
    pub fn api() -> Self {
        Self { defaults: Defaults::Api, ..Self::default() }
    }

    /// No built-in list and nothing denied (tests against loopback servers).
    pub fn unrestricted() -> Self {
        Self { defaults: Defaults::None, ..Self::default() }
    }

    /// Explicit lists: `deny: None` keeps the [`Defaults::Local`] list, `Some` replaces the
    /// built-in list entirely (`parse([], Some(vec![]))` denies nothing). Configuration goes
    /// through [`NetworkPolicy::new`], where `network.deny` adds instead.
    pub fn parse<'a>(
        allow: impl IntoIterator<Item = &'a str>,
        deny: Option<Vec<&'a str>>,
    ) -> Result<Self, HostListError> {
        match deny {
            None => Self::new(Defaults::Local, allow, []),
            Some(d) => Self::new(Defaults::None, allow, d),
        }
    }

    /// Check a host and the addresses it resolved to; `Err` is one sentence saying why, and
    /// which key would allow it.
    pub fn check(&self, host: &str, addrs: &[IpAddr]) -> Result<(), String> {
        if addrs.is_empty() {
            return Err(format!("{host} did not resolve to any address"));
        }
        self.check_name(host)?;
        let literal = literal(host);
        if let Some(ip) = addrs.iter().find(|ip| self.deny.contains(&ip.to_string()) || self.deny.contains(&canonical(**ip).to_string())) {
            return Err(match literal {
                Some(_) => format!("{host} is on network.deny, so it may not be reached"),
                None => format!("{host} resolves to {ip}, which is on network.deny, so it may not be reached"),
            });
        }
        if self.allow.contains(host) {
            return Ok(());
        }
        let mut denied: Vec<(IpAddr, AddressKind)> = Vec::new();
        for ip in addrs {
            let c = canonical(*ip);
            if denied.iter().any(|(d, _)| *d == c) || self.allow.contains(&c.to_string()) {
                continue;
            }
            if let Some(kind) = classify(c).filter(|k| k.denied_by(self.defaults)) {
                denied.push((c, kind));
            }
        }
        if denied.is_empty() {
            return Ok(());
        }
        let scope = self.scope();
        let first = denied[0];
        let what = match literal {
            Some(lit) if canonical(lit) == first.0 => {
                let shown = if lit == first.0 { String::new() } else { format!(" ({})", first.0) };
                format!("{host} is {}{shown}, {scope}", first.1.describe())
            }
            _ if denied.len() == 1 => format!("{host} resolves to {}, {}, {scope}", first.0, first.1.describe()),
            _ => {
                let list: Vec<String> = denied.iter().take(4).map(|(ip, kind)| format!("{ip} ({})", kind.describe())).collect();
                let more = if denied.len() > 4 { format!(" and {} more", denied.len() - 4) } else { String::new() };
                format!("{host} resolves to {}{more}, {scope}", list.join(", "))
            }
        };
        let shown: Vec<String> = denied.iter().take(4).map(|(ip, _)| ip.to_string()).collect();
        let toml = shown.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        let them = if denied.len() == 1 { "it" } else { "them" };
        Err(format!("{what}; to allow {them} set network.allow = [{toml}] (or MAILFERRY_NETWORK__ALLOW={})", shown.join(",")))
    }

    /// What can be checked without DNS: an IP literal as its own address, a name against the
    /// lists' names. For early feedback (job creation when the name does not resolve yet);
    /// [`check`](Self::check) at connect time stays the authoritative one.
    pub fn check_unresolved(&self, host: &str) -> Result<(), String> {
        match literal(host) {
            Some(ip) => self.check(host, &[ip]),
            None => self.check_name(host),
        }
    }

    /// The host name itself: on `network.deny`, or a metadata service's name.
    fn check_name(&self, host: &str) -> Result<(), String> {
        if literal(host).is_none() && self.deny.contains(host) {
            return Err(format!("{host} is on network.deny, so it may not be reached"));
        }
        let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if Metadata.denied_by(self.defaults) && METADATA_NAMES.contains(&name.as_str()) && !self.allow.contains(host) {
            return Err(format!(
                "{host} is {}, {}; to allow it set network.allow = [{name:?}] (or MAILFERRY_NETWORK__ALLOW={name})",
                Metadata.describe(),
                self.scope()
            ));
        }
        Ok(())
    }

    fn scope(&self) -> &'static str {
        match self.defaults {
            Defaults::Api => "which jobs created over the API may not reach",
            Defaults::Local | Defaults::None => "which mailferry does not connect to unless allowed",
        }
    }
}

/// `host` as an IP address, when it is one (`[::1]` included).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim().trim_matches(['[', ']']).parse().ok()
}

#[cfg(test)]
mod tests;
