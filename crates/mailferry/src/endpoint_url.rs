//! The endpoint URLs of the command line: `pop3s://USER@HOST[:PORT]`,
//! `imaps://USER@HOST[:PORT][/FOLDER]`, with `pop3`/`imap` meaning STARTTLS (STLS).
//! User names are often e-mail addresses, so the host starts after the *last* `@`;
//! `%40`-style escapes are decoded in the user and folder.

use mailferry_model::Security;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    pub protocol: Protocol,
    pub security: Security,
    pub username: String,
    pub host: String,
    pub port: u16,
    pub folder: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pop3,
    Imap,
}

impl EndpointUrl {
    /// `pop3://` and `imap://` mean STLS/STARTTLS; with --allow-plaintext they mean no TLS.
    pub fn security_with(&self, allow_plaintext: bool) -> Security {
        match (self.security, allow_plaintext) {
            (Security::Starttls, true) => Security::None,
            (s, _) => s,
        }
    }
}

pub fn parse(url: &str) -> Result<EndpointUrl, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not a URL like pop3s://user@host"))?;
    let (protocol, security, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "pop3s" => (Protocol::Pop3, Security::Tls, 995),
        "pop3" => (Protocol::Pop3, Security::Starttls, 110),
        "imaps" => (Protocol::Imap, Security::Tls, 993),
        "imap" => (Protocol::Imap, Security::Starttls, 143),
        other => return Err(format!("unknown scheme {other:?}: use pop3s, pop3, imaps or imap")),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) if rest[..slash].contains('@') || !rest.contains('@') => (&rest[..slash], Some(&rest[slash + 1..])),
        _ => match rest.rfind('@').and_then(|at| rest[at..].find('/').map(|s| at + s)) {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        },
    };
    let (user, hostport) = authority
        .rsplit_once('@')
        .ok_or_else(|| format!("{url:?} has no user name: write {scheme}://USER@HOST"))?;
    let username = percent_decode(user)?;
    if username.is_empty() {
        return Err(format!("{url:?} has an empty user name"));
    }
    let (host, port) = split_host_port(hostport, default_port).map_err(|e| format!("{url:?}: {e}"))?;
    let folder = match path {
        Some(p) if !p.is_empty() => {
            if protocol == Protocol::Pop3 {
                return Err(format!("{url:?}: a POP3 mailbox has no folders"));
            }
            Some(percent_decode(p)?)
        }
        _ => None,
    };
    Ok(EndpointUrl { protocol, security, username, host, port, folder })
}

fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unterminated [IPv6] address")?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("no host name".into());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("invalid port {p:?}"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let u = parse("pop3s://alice@pop.example.com").unwrap();
        assert_eq!((u.protocol, u.security, u.username.as_str(), u.host.as_str(), u.port), (Protocol::Pop3, Security::Tls, "alice", "pop.example.com", 995));
        let u = parse("imap://bob@example.org@127.0.0.1:1143/Archiv/Größe").unwrap();
        assert_eq!((u.security, u.username.as_str(), u.port, u.folder.as_deref()), (Security::Starttls, "bob@example.org", 1143, Some("Archiv/Größe")));
        let u = parse("imaps://carol%40x.org@[::1]:993/Old%20Mail").unwrap();
        assert_eq!((u.username.as_str(), u.host.as_str(), u.folder.as_deref()), ("carol@x.org", "::1", Some("Old Mail")));
        assert_eq!(parse("pop3://u@h").unwrap().port, 110);
        assert_eq!(parse("imap://u@h/").unwrap().folder, None);
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in ["pop3s://host", "http://u@h", "pop3s://u@h:0", "pop3s://u@h:99999", "pop3s://u@", "imaps://u@h:x", "pop3s://u@h/INBOX", "nourl"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    // Issue 13, "Prove it": whatever is typed after --from / --to, a parse never panics and
    // what it returns holds together.
    mod props {
        use proptest::prelude::*;

        use super::*;

        fn holds_together(text: &str) -> Result<(), TestCaseError> {
            match parse(text) {
                Ok(u) => {
                    prop_assert!(!u.username.is_empty() && u.port != 0, "{:?}", u);
                    prop_assert!(u.protocol == Protocol::Imap || u.folder.is_none(), "a POP3 URL has no folder: {:?}", u);
                }
                Err(e) => prop_assert!(!e.is_empty()),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            #[test]
            fn any_text_parses_or_fails_with_a_reason(text in any::<String>()) {
                holds_together(&text)?;
            }

            #[test]
            fn urls_made_of_arbitrary_parts_parse_or_fail_with_a_reason(
                scheme in prop_oneof![Just("pop3s"), Just("pop3"), Just("imaps"), Just("IMAP"), Just("archive"), Just("")],
                user in any::<String>(),
                host in prop_oneof![any::<String>(), "[a-z0-9.:\\[\\]%@-]{0,30}".prop_map(String::from)],
                port in prop_oneof![Just(String::new()), any::<u32>().prop_map(|p| format!(":{p}")), "[:0-9a-z%]{0,8}".prop_map(String::from)],
                folder in prop_oneof![Just(String::new()), any::<String>().prop_map(|f| format!("/{f}")), "/[%0-9a-fA-F/]{0,12}".prop_map(String::from)],
            ) {
                holds_together(&format!("{scheme}://{user}@{host}{port}{folder}"))?;
                holds_together(&format!("{scheme}:{user}"))?;
            }
        }
    }
}

