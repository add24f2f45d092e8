//! Parsing server replies: status lines, extended response codes, CAPA, UIDL, LIST, STAT
//! and the APOP timestamp of the greeting. Every function takes one line *without* its
//! line ending, as the session hands them over.

use std::fmt;

/// An extended response code (RFC 2449 §8), the bracketed word after `-ERR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session (RFC 2449 §8.1.1).
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently (RFC 2449 §8.1.2).
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary system problem (RFC 3206 §4).
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem (RFC 3206 §4).
    SysPerm,
    /// `[AUTH]`: the credentials were rejected (RFC 3206 §5).
    Auth,
    /// Any other code, kept verbatim (RFC 2449 §8: clients ignore codes they don't know).
    Other(String),
}

impl RespCode {
    /// Codes are hierarchical with `/` (RFC 2449 §8): `IN-USE/FOO` is still `IN-USE`.
    pub fn parse(code: &str) -> Self {
        let upper = code.to_ascii_uppercase();
        let mut levels = upper.split('/');
        match (levels.next(), levels.next()) {
            (Some("IN-USE"), _) => Self::InUse,
            (Some("LOGIN-DELAY"), _) => Self::LoginDelay,
            (Some("SYS"), Some("TEMP")) => Self::SysTemp,
            (Some("SYS"), Some("PERM")) => Self::SysPerm,
            (Some("AUTH"), _) => Self::Auth,
            _ => Self::Other(code.to_owned()),
        }
    }

    /// Trying again later can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::InUse | Self::LoginDelay | Self::SysTemp)
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InUse => "IN-USE",
            Self::LoginDelay => "LOGIN-DELAY",
            Self::SysTemp => "SYS/TEMP",
            Self::SysPerm => "SYS/PERM",
            Self::Auth => "AUTH",
            Self::Other(s) => s,
        })
    }
}

/// A status line: `+OK text` or `-ERR [CODE] text` (RFC 1939 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok(String),
    Err { code: Option<RespCode>, text: String },
}

/// Parse a status line. `None` means the line is not a POP3 status at all (garbage).
/// The keywords are matched case-insensitively; real servers are not all uppercase.
pub fn parse_status(line: &str) -> Option<Status> {
    if let Some(rest) = strip_keyword(line, "+OK") {
        return Some(Status::Ok(rest.to_owned()));
    }
    let rest = strip_keyword(line, "-ERR")?;
    // RFC 2449 §8: "-ERR [CODE] text".
    if let Some(after) = rest.strip_prefix('[') {
        if let Some(end) = after.find(']') {
            let code = &after[..end];
            if !code.is_empty() && !code.contains(char::is_whitespace) {
                return Some(Status::Err {
                    code: Some(RespCode::parse(code)),
                    text: after[end + 1..].trim_start().to_owned(),
                });
            }
        }
    }
    Some(Status::Err { code: None, text: rest.to_owned() })
}

/// `keyword` followed by the end of the line or whitespace; returns the trimmed rest.
fn strip_keyword<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    // `get`, not indexing: the line may have a multi-byte character at that offset.
    let head = line.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = line.get(keyword.len()..)?;
    match rest.chars().next() {
        None => Some(""),
        Some(c) if c.is_whitespace() => Some(rest.trim()),
        Some(_) => None,
    }
}

/// A reply during a SASL exchange (RFC 5034 §4): a status, or a `+ challenge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    Status(Status),
    /// The base64 challenge after `+ ` (possibly empty).
    Continue(String),
}

pub fn parse_auth_reply(line: &str) -> Option<AuthReply> {
    if let Some(status) = parse_status(line) {
        return Some(AuthReply::Status(status));
    }
    if line == "+" {
        return Some(AuthReply::Continue(String::new()));
    }
    line.strip_prefix("+ ").map(|c| AuthReply::Continue(c.trim().to_owned()))
}

/// What CAPA said (RFC 2449 §5, §6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The server answered CAPA with a list. When false every flag is false and callers
    /// must assume a legacy RFC 1939 server (USER and UIDL are still worth trying).
    pub answered: bool,
    /// The lines as sent, for diagnostics.
    pub lines: Vec<String>,
    /// RFC 2449 §6.6: commands may be sent without waiting for each response.
    pub pipelining: bool,
    pub uidl: bool,
    pub top: bool,
    pub user: bool,
    /// RFC 2595 §4.
    pub stls: bool,
    pub resp_codes: bool,
    /// SASL mechanisms, uppercased (RFC 2449 §6.3).
    pub sasl: Vec<String>,
    /// Minimum seconds between logins (RFC 2449 §6.5), when given.
    pub login_delay: Option<u64>,
    pub implementation: Option<String>,
}

impl Capabilities {
    /// Build from the lines of a CAPA response body.
    pub fn parse(lines: Vec<String>) -> Self {
        let mut caps = Capabilities { answered: true, ..Default::default() };
        for line in &lines {
            // The name and the rest are both slices of `line` itself: never an offset
            // computed on another (trimmed, case-folded) copy, which may not be a char
            // boundary of this one when the line starts with non-ASCII whitespace.
            let Some((name, rest)) = first_word(line) else { continue };
            let mut words = rest.split_whitespace();
            match name.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "UIDL" => caps.uidl = true,
                "TOP" => caps.top = true,
                "USER" => caps.user = true,
                "STLS" => caps.stls = true,
                "RESP-CODES" => caps.resp_codes = true,
                "SASL" => caps.sasl.extend(words.map(str::to_ascii_uppercase)),
                "LOGIN-DELAY" => caps.login_delay = words.next().and_then(|n| n.parse().ok()),
                "IMPLEMENTATION" => caps.implementation = Some(rest.trim().to_owned()),
                _ => {}
            }
        }
        caps.lines = lines;
        caps
    }

    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// The first whitespace-separated word of `line` and what follows it, both borrowed
/// from `line` (whitespace as `split_whitespace` understands it, Unicode included).
fn first_word(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start();
    if line.is_empty() {
        return None;
    }
    Some(line.split_once(char::is_whitespace).unwrap_or((line, "")))
}

/// RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
pub fn validate_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        return Err("empty unique-id".into());
    }
    if let Some((i, c)) = uid.char_indices().find(|&(_, c)| !('\x21'..='\x7e').contains(&c)) {
        return Err(format!("unique-id has character {:?} (U+{:04X}) at offset {i}", c, c as u32));
    }
    if uid.len() > 70 {
        return Err(format!("unique-id is {} octets, more than 70", uid.len()));
    }
    Ok(())
}

/// A UIDL line that could not be used: `msg` is 0 when not even the number was readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUidl {
    pub msg: u32,
    pub reason: String,
}

/// Parse one line of a UIDL listing: `msg SP unique-id` (RFC 1939 §7). Trailing blanks
/// are ignored (they can never be part of a valid unique-id).
pub fn parse_uidl_line(line: &str) -> Result<(u32, String), BadUidl> {
    let line = line.trim_end_matches([' ', '\t']);
    let (num, uid) = line.split_once(' ').unwrap_or((line, ""));
    let msg = match num.parse::<u32>() {
        Ok(n) if n > 0 => n,
        _ => return Err(BadUidl { msg: 0, reason: format!("unreadable UIDL line {:?}", clip(line)) }),
    };
    let uid = uid.trim_start_matches(' ');
    validate_uid(uid).map_err(|reason| BadUidl { msg, reason })?;
    Ok((msg, uid.to_owned()))
}

/// Parse a scan listing `msg SP size [anything]` (RFC 1939 §5: LIST; what follows the
/// size is unspecified).
pub fn parse_scan_listing(line: &str) -> Option<(u32, u64)> {
    let mut words = line.split_whitespace();
    let msg = words.next()?.parse().ok()?;
    let size = words.next()?.parse().ok()?;
    Some((msg, size))
}

/// The APOP timestamp (RFC 1939 §7: a msg-id, `<...>`) in the greeting, brackets included,
/// as the digest needs them.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let len = greeting[start..].find('>')?;
    let stamp = &greeting[start..=start + len];
    let inner = &stamp[1..stamp.len() - 1];
    (!inner.is_empty() && !inner.contains(char::is_whitespace) && !inner.contains('<')).then_some(stamp)
}

/// At most 80 characters of `s`, for error messages about server garbage.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("+OK"), Some(Status::Ok(String::new())));
        assert_eq!(parse_status("+OK 2 320"), Some(Status::Ok("2 320".into())));
        assert_eq!(parse_status("+ok fine"), Some(Status::Ok("fine".into())));
        assert_eq!(parse_status("-ERR"), Some(Status::Err { code: None, text: String::new() }));
        assert_eq!(
            parse_status("-ERR no such message"),
            Some(Status::Err { code: None, text: "no such message".into() })
        );
        assert_eq!(parse_status("+OKAY"), None);
        assert_eq!(parse_status("* OK imap"), None);
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("+ "), None);
    }

    #[test]
    fn response_codes() {
        let code = |l: &str| match parse_status(l) {
            Some(Status::Err { code, text }) => (code, text),
            other => panic!("{other:?}"),
        };
        assert_eq!(code("-ERR [IN-USE] locked"), (Some(RespCode::InUse), "locked".into()));
        assert_eq!(code("-ERR [LOGIN-DELAY] wait").0, Some(RespCode::LoginDelay));
        assert_eq!(code("-ERR [SYS/TEMP] try later").0, Some(RespCode::SysTemp));
        assert_eq!(code("-ERR [SYS/PERM] gone").0, Some(RespCode::SysPerm));
        assert_eq!(code("-ERR [AUTH] bad password").0, Some(RespCode::Auth));
        assert_eq!(code("-ERR [auth] lower").0, Some(RespCode::Auth));
        assert_eq!(code("-ERR [IN-USE/LOCKED] sub").0, Some(RespCode::InUse));
        assert_eq!(code("-ERR [X-FOO] odd"), (Some(RespCode::Other("X-FOO".into())), "odd".into()));
        // Not a code: brackets with blanks, or unclosed.
        assert_eq!(code("-ERR [not a code] x").0, None);
        assert_eq!(code("-ERR [IN-USE x").0, None);
        assert!(RespCode::SysTemp.is_transient() && !RespCode::Auth.is_transient());
        assert_eq!(RespCode::SysTemp.to_string(), "SYS/TEMP");
    }

    #[test]
    fn auth_replies() {
        assert_eq!(parse_auth_reply("+"), Some(AuthReply::Continue(String::new())));
        assert_eq!(parse_auth_reply("+ "), Some(AuthReply::Continue(String::new())));
        assert_eq!(parse_auth_reply("+ eyJ9"), Some(AuthReply::Continue("eyJ9".into())));
        assert_eq!(parse_auth_reply("+OK in"), Some(AuthReply::Status(Status::Ok("in".into()))));
        assert_eq!(parse_auth_reply("garbage"), None);
    }

    #[test]
    fn capa() {
        let lines = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "USER", "SASL PLAIN xoauth2", "STLS",
            "LOGIN-DELAY 900", "IMPLEMENTATION Dovecot ready"];
        let caps = Capabilities::parse(lines.iter().map(|s| s.to_string()).collect());
        assert!(caps.answered && caps.top && caps.uidl && caps.pipelining && caps.user && caps.stls);
        assert!(caps.resp_codes && caps.has_sasl("PLAIN") && caps.has_sasl("XOAUTH2"));
        assert_eq!(caps.login_delay, Some(900));
        assert_eq!(caps.implementation.as_deref(), Some("Dovecot ready"));
        assert_eq!(caps.lines.len(), 9);
        assert!(!Capabilities::default().answered);
    }

    #[test]
    fn capa_line_starting_with_non_ascii_whitespace() {
        // Issue 13: the length of the name, counted on a trimmed copy, sliced the line
        // itself. With 15 bytes of whitespace before IMPLEMENTATION (five U+3000, or 13
        // spaces and a U+00A0) byte 14 is inside a character: a panic, before login.
        for prefix in ["\u{3000}".repeat(5), format!("{}\u{a0}", " ".repeat(13))] {
            let caps = Capabilities::parse(vec![format!("{prefix}IMPLEMENTATION x"), "\u{2003}X".into()]);
            assert_eq!(caps.implementation.as_deref(), Some("x"));
        }
        // With a shorter prefix it did not panic, but cut the text at the wrong place
        // ("ON x").
        let caps = Capabilities::parse(vec!["\u{a0}IMPLEMENTATION x".into(), "\u{2003}X".into()]);
        assert_eq!(caps.implementation.as_deref(), Some("x"));
        let caps = Capabilities::parse(vec!["\u{3000}\u{85} implementation\u{2003}Dovecot  ready\u{a0}".into()]);
        assert_eq!(caps.implementation.as_deref(), Some("Dovecot  ready"));
        let caps = Capabilities::parse(vec!["\u{a0}SASL\u{a0}plain".into(), "\u{2003}".into(), "IMPLEMENTATION".into()]);
        assert!(caps.has_sasl("PLAIN"));
        assert_eq!(caps.implementation.as_deref(), Some(""));
    }

    #[test]
    fn uidl_lines() {
        assert_eq!(parse_uidl_line("1 whqtswO00WBw418f9t5JxYwZ"), Ok((1, "whqtswO00WBw418f9t5JxYwZ".into())));
        assert_eq!(parse_uidl_line("2 abc  "), Ok((2, "abc".into())));
        assert_eq!(parse_uidl_line("3  abc"), Ok((3, "abc".into())));
        assert_eq!(parse_uidl_line("4").unwrap_err().msg, 4);
        assert_eq!(parse_uidl_line("5 a b").unwrap_err().msg, 5);
        assert_eq!(parse_uidl_line(&format!("6 {}", "x".repeat(71))).unwrap_err().msg, 6);
        assert!(parse_uidl_line(&format!("6 {}", "x".repeat(70))).is_ok());
        assert_eq!(parse_uidl_line("7 caf\u{e9}").unwrap_err().msg, 7);
        assert_eq!(parse_uidl_line("x abc").unwrap_err().msg, 0);
        assert_eq!(parse_uidl_line("0 abc").unwrap_err().msg, 0);
        assert_eq!(parse_uidl_line("").unwrap_err().msg, 0);
    }

    #[test]
    fn scan_listings_and_timestamps() {
        assert_eq!(parse_scan_listing("1 120"), Some((1, 120)));
        assert_eq!(parse_scan_listing("2 200 extra info"), Some((2, 200)));
        assert_eq!(parse_scan_listing("2"), None);
        assert_eq!(parse_scan_listing("a 1"), None);
        assert_eq!(
            apop_timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("ready <>"), None);
        assert_eq!(apop_timestamp("ready <a b>"), None);
        assert_eq!(apop_timestamp("ready <unclosed"), None);
    }

    /// Whitespace as `split_whitespace` knows it, of one to three bytes in UTF-8.
    fn blank() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("\u{a0}".to_string()),
            Just("\u{85}".to_string()),
            Just("\u{2003}".to_string()),
            Just("\u{3000}".to_string()),
        ]
    }

    /// A CAPA-like line: a run of ASCII and Unicode whitespace, then capability names,
    /// blanks and arbitrary characters, so the interesting cases are common, not one in
    /// a million.
    fn capa_line() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            blank(),
            Just("IMPLEMENTATION".to_string()),
            Just("implementation".to_string()),
            Just("SASL".to_string()),
            Just("LOGIN-DELAY".to_string()),
            Just("PIPELINING".to_string()),
            Just("99999999999999999999999".to_string()),
            any::<char>().prop_map(String::from),
        ];
        (prop::collection::vec(blank(), 0..12), prop::collection::vec(piece, 0..8))
            .prop_map(|(lead, rest)| lead.concat() + &rest.concat())
    }

    /// Every parser of a server line, on `line`.
    fn parse_everything(line: &str) {
        let _ = parse_status(line);
        let _ = parse_auth_reply(line);
        let _ = parse_uidl_line(line);
        let _ = parse_scan_listing(line);
        let _ = apop_timestamp(line);
        let _ = validate_uid(line);
        let _ = RespCode::parse(line);
        let _ = crate::wire::decode_challenge(line);
        let _ = clip(line);
        let _ = Capabilities::parse(vec![line.to_owned()]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(line in ".{0,120}") {
            parse_everything(&line);
        }

        #[test]
        fn parsers_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            // As the session hands lines over: decoded leniently (`wire::line_text`).
            parse_everything(&crate::wire::line_text(&bytes));
        }

        #[test]
        fn parsers_take_arbitrary_unicode(line in any::<String>(), lead in prop::collection::vec(blank(), 0..8)) {
            parse_everything(&line);
            parse_everything(&(lead.concat() + &line));
        }

        #[test]
        fn capa_never_panics(lines in prop::collection::vec(capa_line(), 0..8), any_lines in prop::collection::vec(any::<String>(), 0..8)) {
            let caps = Capabilities::parse(lines.clone());
            prop_assert_eq!(caps.lines, lines);
            let _ = Capabilities::parse(any_lines);
        }

        #[test]
        fn capa_single_arbitrary_string(line in any::<String>()) {
            let _ = Capabilities::parse(vec![line]);
        }

        #[test]
        fn valid_uids_round_trip(n in 1u32.., uid in "[!-~]{1,70}") {
            prop_assert_eq!(parse_uidl_line(&format!("{n} {uid}")), Ok((n, uid)));
        }
    }
}
