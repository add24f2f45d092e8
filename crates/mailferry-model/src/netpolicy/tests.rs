//! Address classification, the three policies and their refusals.

use proptest::prelude::*;

use super::*;

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn kind(ip: &str) -> Option<AddressKind> {
    classify(ip.parse().unwrap())
}

#[test]
fn classification() {
    for (ip, want) in [
        ("127.0.0.1", Some(Loopback)),
        ("127.255.255.254", Some(Loopback)),
        ("::1", Some(Loopback)),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::127.0.0.1", Some(Loopback)),
        ("10.0.0.1", Some(Private)),
        ("::ffff:10.9.8.7", Some(Private)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("172.32.0.1", None),
        ("172.15.255.255", None),
        ("192.168.1.1", Some(Private)),
        ("192.169.0.1", None),
        ("100.64.0.1", Some(SharedCgnat)),
        ("100.127.255.255", Some(SharedCgnat)),
        ("100.128.0.1", None),
        ("100.63.255.255", None),
        ("100.100.100.200", Some(Metadata)),
        ("169.254.169.254", Some(Metadata)),
        ("::ffff:169.254.169.254", Some(Metadata)),
        ("169.254.0.1", Some(LinkLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf::1", Some(LinkLocal)),
        ("fec0::1", None),
        ("fd00:ec2::254", Some(Metadata)),
        ("fd00:ec2::253", Some(UniqueLocal)),
        ("fc00::1", Some(UniqueLocal)),
        ("fdff:ffff::1", Some(UniqueLocal)),
        ("64:ff9b::7f00:1", Some(Nat64)),
        ("64:ff9b::8.8.8.8", Some(Nat64)),
        ("64:ff9b:1::1", Some(Nat64)),
        ("64:ff9b:2::1", None),
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("::", Some(Unspecified)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("192.0.2.10", None),
        ("8.8.8.8", None),
        ("::ffff:8.8.8.8", None),
        ("2001:db8::1", None),
        ("2a00:1450:4001::1", None),
    ] {
        assert_eq!(kind(ip), want, "{ip}");
    }
}

#[test]
fn builtin_entries_classify_as_listed() {
    let entries = builtin_entries();
    assert!(entries.len() >= 17, "{entries:?}");
    for (entry, want) in entries {
        let addr = entry.split('/').next().unwrap();
        if let Ok(ip) = addr.parse::<IpAddr>() {
            assert_eq!(classify(ip), Some(want), "{entry}");
        }
    }
}

#[test]
fn api_defaults_deny_internal_addresses_with_the_key_to_set() {
    let p = NetworkPolicy::api();
    let e = p.check("127.0.0.1", &ips(&["127.0.0.1"])).unwrap_err();
    assert_eq!(
        e,
        "127.0.0.1 is a loopback address, which jobs created over the API may not reach; \
         to allow it set network.allow = [\"127.0.0.1\"] (or MAILFERRY_NETWORK__ALLOW=127.0.0.1)"
    );
    let e = p.check("::ffff:127.0.0.1", &ips(&["::ffff:127.0.0.1"])).unwrap_err();
    assert!(e.starts_with("::ffff:127.0.0.1 is a loopback address (127.0.0.1), which jobs"), "{e}");
    assert!(e.contains("network.allow = [\"127.0.0.1\"]"), "{e}");
    let e = p.check("localhost", &ips(&["127.0.0.1", "::1"])).unwrap_err();
    assert_eq!(
        e,
        "localhost resolves to 127.0.0.1 (a loopback address), ::1 (a loopback address), which jobs created \
         over the API may not reach; to allow them set network.allow = [\"127.0.0.1\", \"::1\"] \
         (or MAILFERRY_NETWORK__ALLOW=127.0.0.1,::1)"
    );
    let e = p.check("pop.corp.example", &ips(&["192.0.2.1", "10.1.2.3"])).unwrap_err();
    assert!(e.starts_with("pop.corp.example resolves to 10.1.2.3, a private (RFC 1918) address, which jobs"), "{e}");
    for (host, addrs) in [
        ("10.0.0.1", vec!["10.0.0.1"]),
        ("x", vec!["172.20.0.1"]),
        ("x", vec!["192.168.0.10"]),
        ("x", vec!["100.64.1.1"]),
        ("x", vec!["fd12::1"]),
        ("x", vec!["fe80::1"]),
        ("x", vec!["64:ff9b::a00:1"]),
        ("x", vec!["0.0.0.0"]),
        ("x", vec!["169.254.169.254"]),
        ("x", vec!["100.100.100.200"]),
        ("x", vec!["fd00:ec2::254"]),
        ("metadata.google.internal", vec!["192.0.2.1"]),
        ("Metadata.Google.Internal.", vec!["192.0.2.1"]),
    ] {
        let e = p.check(host, &ips(&addrs)).unwrap_err();
        assert!(e.contains("network.allow") && e.contains("jobs created over the API"), "{host} {addrs:?}: {e}");
    }
    assert!(p.check("mail.example.com", &ips(&["192.0.2.10", "2001:db8::10"])).is_ok());
    assert!(p.check("x", &[]).unwrap_err().contains("did not resolve"));
}

#[test]
fn allow_opens_what_it_names() {
    let p = NetworkPolicy::new(Defaults::Api, ["127.0.0.1", "10.20.0.0/16", "pop.lan"], []).unwrap();
    assert!(p.check("127.0.0.1", &ips(&["127.0.0.1"])).is_ok());
    assert!(p.check("::ffff:127.0.0.1", &ips(&["::ffff:127.0.0.1"])).is_ok(), "mapped forms are the IPv4 address");
    assert!(p.check("localhost", &ips(&["127.0.0.1"])).is_ok());
    let e = p.check("localhost", &ips(&["127.0.0.1", "::1"])).unwrap_err();
    assert!(e.contains("::1") && !e.contains("127.0.0.1"), "only what is still refused is named: {e}");
    assert!(p.check("x", &ips(&["10.20.3.4"])).is_ok());
    assert!(p.check("x", &ips(&["10.21.3.4"])).is_err());
    assert!(p.check("POP.lan", &ips(&["10.99.0.1"])).is_ok(), "an allowed name opens what it resolves to");
    assert!(p.check("x", &ips(&["192.0.2.1"])).is_ok(), "allow opens; it does not restrict");
    assert!(p.check("x", &ips(&["127.0.0.2"])).is_err());
    let p = NetworkPolicy::new(Defaults::Api, ["metadata.google.internal"], []).unwrap();
    assert!(p.check("metadata.google.internal", &ips(&["169.254.169.254"])).is_ok());
}

#[test]
fn deny_adds_to_the_defaults_and_wins_over_allow() {
    let p = NetworkPolicy::new(Defaults::Api, ["10.0.0.0/8"], ["192.0.2.0/24", "bad.example", "10.9.0.0/16"]).unwrap();
    assert!(p.check("x", &ips(&["127.0.0.1"])).is_err(), "the defaults stay");
    let e = p.check("x", &ips(&["192.0.2.7"])).unwrap_err();
    assert_eq!(e, "x resolves to 192.0.2.7, which is on network.deny, so it may not be reached");
    assert!(p.check("192.0.2.7", &ips(&["192.0.2.7"])).unwrap_err().contains("network.deny"));
    assert!(p.check("::ffff:192.0.2.7", &ips(&["::ffff:192.0.2.7"])).unwrap_err().contains("network.deny"));
    assert!(p.check("Bad.Example", &ips(&["198.51.100.1"])).unwrap_err().contains("network.deny"));
    assert!(p.check("x", &ips(&["10.1.0.1"])).is_ok());
    assert!(p.check("x", &ips(&["10.9.0.1"])).unwrap_err().contains("network.deny"), "deny wins over allow");
    assert!(p.check("x", &ips(&["198.51.100.1"])).is_ok());
}

#[test]
fn local_defaults_keep_loopback_and_private_hosts() {
    let p = NetworkPolicy::default();
    assert_eq!(p.defaults, Defaults::Local);
    for ok in ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.5", "fd12::1", "100.64.0.1", "192.0.2.1"] {
        assert!(p.check(ok, &ips(&[ok])).is_ok(), "{ok}");
    }
    let e = p.check("evil.example", &ips(&["192.0.2.1", "169.254.169.254"])).unwrap_err();
    assert!(e.contains("169.254.169.254") && e.contains("network.allow"), "{e}");
    assert!(!e.contains("over the API"), "{e}");
    assert!(p.check("metadata.google.internal", &ips(&["192.0.2.1"])).is_err());
    assert!(p.check("x", &ips(&["fe80::1"])).is_err());
    assert!(p.check("x", &ips(&["::ffff:169.254.169.254"])).is_err(), "IPv4-mapped addresses are checked as IPv4");
}

#[test]
fn parse_keeps_its_meaning_for_explicit_lists() {
    let p = NetworkPolicy::parse([], None).unwrap();
    assert_eq!(p, NetworkPolicy::default());
    let p = NetworkPolicy::parse([], Some(vec![])).unwrap();
    assert!(p.check("x", &ips(&["169.254.169.254"])).is_ok(), "an explicit deny list replaces the built-in one");
    let p = NetworkPolicy::parse([], Some(vec!["127.0.0.2"])).unwrap();
    assert!(p.check("127.0.0.2", &ips(&["127.0.0.2"])).is_err());
    assert!(p.check("x", &ips(&["127.0.0.1"])).is_ok());
    assert!(NetworkPolicy::unrestricted().check("x", &ips(&["169.254.169.254", "::1"])).is_ok());
}

#[test]
fn unresolved_names_are_checked_by_name_only() {
    let p = NetworkPolicy::api();
    assert!(p.check_unresolved("pop.example.com").is_ok());
    assert!(p.check_unresolved("metadata.google.internal").is_err());
    assert!(p.check_unresolved("10.0.0.1").unwrap_err().contains("network.allow = [\"10.0.0.1\"]"));
    assert!(p.check_unresolved("[::1]").is_err());
    let p = NetworkPolicy::new(Defaults::Api, [], ["pop.example.com"]).unwrap();
    assert!(p.check_unresolved("pop.example.com").unwrap_err().contains("network.deny"));
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        any::<u32>().prop_map(|v| IpAddr::V6(Ipv4Addr::from(v).to_ipv6_mapped())),
    ]
}

proptest! {
    #[test]
    fn arbitrary_addresses_and_hosts_never_panic(host in ".{0,40}", addrs in proptest::collection::vec(any_ip(), 0..5)) {
        for p in [NetworkPolicy::api(), NetworkPolicy::default(), NetworkPolicy::unrestricted()] {
            let _ = p.check(&host, &addrs);
            let _ = p.check_unresolved(&host);
        }
        for ip in &addrs {
            let _ = classify(*ip);
            let _ = p_check_literal(*ip);
        }
    }

    #[test]
    fn mapped_forms_are_judged_as_ipv4(v in any::<u32>()) {
        let v4 = Ipv4Addr::from(v);
        prop_assert_eq!(classify(IpAddr::V4(v4)), classify(IpAddr::V6(v4.to_ipv6_mapped())));
        let p = NetworkPolicy::api();
        prop_assert_eq!(
            p.check("h", &[IpAddr::V4(v4)]).is_ok(),
            p.check("h", &[IpAddr::V6(v4.to_ipv6_mapped())]).is_ok()
        );
    }

    #[test]
    fn api_denies_a_superset_of_local_and_allowing_the_address_opens_it(ip in any_ip()) {
        let (api, local) = (NetworkPolicy::api(), NetworkPolicy::default());
        if api.check("h", &[ip]).is_ok() {
            prop_assert!(local.check("h", &[ip]).is_ok());
        }
        if let Err(e) = api.check("h", &[ip]) {
            // The refusal names the address to allow, and allowing it works.
            let c = canonical(ip).to_string();
            prop_assert!(e.contains(&format!("network.allow = [{c:?}]")), "{}", e);
            let opened = NetworkPolicy::new(Defaults::Api, [c.as_str()], []).unwrap();
            prop_assert!(opened.check("h", &[ip]).is_ok());
        }
    }
}

/// An address given as the host itself, in every spelling.
fn p_check_literal(ip: IpAddr) -> bool {
    let p = NetworkPolicy::api();
    let a = p.check(&ip.to_string(), &[ip]).is_ok();
    let b = p.check(&format!("[{ip}]"), &[ip]).is_ok();
    let c = p.check_unresolved(&ip.to_string()).is_ok();
    a == b && b == c
}
