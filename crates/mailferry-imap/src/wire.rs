//! Pure IMAP wire helpers for the APPEND path: command pieces and reply-line parsing.
//! No I/O here, so every rule is unit-tested on byte slices.

use chrono::{DateTime, FixedOffset};

/// An IMAP quoted string (RFC 3501 §4.3). Callers pass ASCII without CR/LF (mailbox names
/// are modified UTF-7 by then).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `date-time` of RFC 3501 §9: `"dd-Mon-yyyy hh:mm:ss +zzzz"`.
pub fn internal_date(dt: &DateTime<FixedOffset>) -> String {
    format!("\"{}\"", dt.format("%d-%b-%Y %H:%M:%S %z"))
}

/// The part of an APPEND that precedes one message's literal:
/// ` (\Seen) "01-Jan-2020 10:00:00 +0000" {123+}` (leading space included).
/// `binary` uses a literal8 (`~{n}`, RFC 3516) for messages that carry NUL bytes.
pub fn message_prefix(
    flags: &[String],
    date: Option<&DateTime<FixedOffset>>,
    len: u64,
    non_sync: bool,
    binary: bool,
) -> String {
    let mut s = String::new();
    if !flags.is_empty() {
        s.push_str(" (");
        s.push_str(&flags.join(" "));
        s.push(')');
    }
    if let Some(dt) = date {
        s.push(' ');
        s.push_str(&internal_date(dt));
    }
    s.push(' ');
    if binary {
        s.push('~');
    }
    s.push_str(&format!("{{{len}{}}}", if non_sync { "+" } else { "" }));
    s
}

/// A flag is an atom, optionally with a leading backslash (RFC 3501 §9 `flag`).
pub fn valid_flag(flag: &str) -> bool {
    let atom = flag.strip_prefix('\\').unwrap_or(flag);
    !atom.is_empty()
        && atom.bytes().all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// One reply line (without its CRLF).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `+ ...`: go on sending the literal.
    Continuation,
    /// `* ...`: untagged data we do not need on the APPEND path (EXISTS, RECENT, ...).
    Untagged,
    Tagged { tag: &'a str, status: Status, code: Option<&'a str>, text: &'a str },
}

pub fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    if line.starts_with(b"+") {
        return Ok(Line::Continuation);
    }
    if line.starts_with(b"* ") {
        return Ok(Line::Untagged);
    }
    let text = std::str::from_utf8(line).map_err(|_| format!("non-UTF-8 tagged reply: {}", lossy(line)))?;
    let mut parts = text.splitn(3, ' ');
    let tag = parts.next().filter(|t| !t.is_empty()).ok_or_else(|| format!("empty reply line: {text:?}"))?;
    let status = match parts.next().map(str::to_ascii_uppercase).as_deref() {
        Some("OK") => Status::Ok,
        Some("NO") => Status::No,
        Some("BAD") => Status::Bad,
        _ => return Err(format!("unexpected reply: {}", lossy(line))),
    };
    let rest = parts.next().unwrap_or("");
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code), text.trim_start()),
        None => (None, rest),
    };
    Ok(Line::Tagged { tag, status, code, text })
}

/// The byte count of a literal announced at the end of a line (`{123}`), if any.
pub fn trailing_literal(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = body[open + 1..].strip_suffix(b"+").unwrap_or(&body[open + 1..]);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `APPENDUID uidvalidity uid-set` (RFC 4315 §3); the set lists the new UIDs in the order
/// the messages were appended (MULTIAPPEND gives a range).
pub fn parse_appenduid(code: &str) -> Option<(u32, Vec<u32>)> {
    let mut parts = code.split_ascii_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    let validity = parts.next()?.parse().ok()?;
    let mut uids = Vec::new();
    for piece in parts.next()?.split(',') {
        match piece.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                if hi - lo > 1_000_000 {
                    return None;
                }
                uids.extend(lo..=hi);
            }
            None => uids.push(piece.parse().ok()?),
        }
    }
    Some((validity, uids))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_replies_and_codes() {
        assert_eq!(
            parse_line(b"A7 OK [APPENDUID 38505 3955] APPEND completed").unwrap(),
            Line::Tagged { tag: "A7", status: Status::Ok, code: Some("APPENDUID 38505 3955"), text: "APPEND completed" }
        );
        assert_eq!(
            parse_line(b"A8 NO [TOOBIG] too large").unwrap(),
            Line::Tagged { tag: "A8", status: Status::No, code: Some("TOOBIG"), text: "too large" }
        );
        assert_eq!(parse_line(b"+ OK").unwrap(), Line::Continuation);
        assert_eq!(parse_line(b"+").unwrap(), Line::Continuation);
        assert_eq!(parse_line(b"* 3 EXISTS").unwrap(), Line::Untagged);
        assert!(parse_line(b"garbage").is_err());
        assert!(parse_line(b"A1 MAYBE x").is_err());
    }

    #[test]
    fn appenduid_sets() {
        assert_eq!(parse_appenduid("APPENDUID 1 5"), Some((1, vec![5])));
        assert_eq!(parse_appenduid("APPENDUID 9 5:7,10"), Some((9, vec![5, 6, 7, 10])));
        assert_eq!(parse_appenduid("TOOBIG"), None);
        assert_eq!(parse_appenduid("APPENDUID x 1"), None);
    }

    #[test]
    fn literals_and_prefixes() {
        assert_eq!(trailing_literal(b"* 1 FETCH (BODY[] {42}"), Some(42));
        assert_eq!(trailing_literal(b"* 1 EXISTS"), None);
        let dt = DateTime::parse_from_rfc3339("2020-01-02T03:04:05+01:00").unwrap();
        assert_eq!(
            message_prefix(&["\\Seen".into()], Some(&dt), 10, true, false),
            " (\\Seen) \"02-Jan-2020 03:04:05 +0100\" {10+}"
        );
        assert_eq!(message_prefix(&[], None, 3, false, true), " ~{3}");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert!(valid_flag("\\Seen") && valid_flag("$Label1"));
        assert!(!valid_flag("a b") && !valid_flag("") && !valid_flag("(x"));
    }
}
