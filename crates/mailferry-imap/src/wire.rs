//! Pure IMAP wire helpers for the APPEND path: command pieces and reply-line parsing.
//! No I/O here, so every rule is unit-tested on byte slices.

use std::borrow::Cow;

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

/// Whether `flag` may be set on the messages we append. See [`flag_problem`].
pub fn valid_flag(flag: &str) -> bool {
    flag_problem(flag).is_none()
}

/// Why `flag` may not be set on the messages we append, if it may not.
///
/// A flag is an atom, optionally with a leading backslash (RFC 3501 §9 `flag`). Two system
/// flags are refused whatever their case: `\Deleted`, because a copy marked deleted is
/// removed by the destination's next EXPUNGE (RFC 3501 §2.3.2, §6.4.3), possibly after the
/// source copy was deleted on the strength of it; and `\Recent`, which only the server
/// sets (RFC 3501 §2.3.2).
pub fn flag_problem(flag: &str) -> Option<String> {
    let atom = flag.strip_prefix('\\').unwrap_or(flag);
    let is_atom = !atom.is_empty() && atom.bytes().all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    if !is_atom {
        return Some(format!("{flag:?} is not an IMAP flag (an atom like \\Seen or $Label)"));
    }
    if flag.eq_ignore_ascii_case("\\Deleted") {
        return Some(format!(
            "{flag} cannot be set on copied messages: the destination would remove them at its next EXPUNGE, \
             after the source may have been emptied"
        ));
    }
    if flag.eq_ignore_ascii_case("\\Recent") {
        return Some(format!("{flag} is set by the server only and cannot be given to APPEND"));
    }
    None
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
    /// `code` and `text` are server text: decoded leniently (a tagged OK whose human-readable
    /// text is Latin-1 still confirms the APPEND), never trusted to be UTF-8.
    Tagged { tag: &'a str, status: Status, code: Option<Cow<'a, str>>, text: Cow<'a, str> },
}

/// Parse one reply line. Works on the bytes as received, so nothing is ever sliced at an
/// offset computed on another (trimmed, decoded) copy of the server's text.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    if line.starts_with(b"+") {
        return Ok(Line::Continuation);
    }
    if line.starts_with(b"* ") {
        return Ok(Line::Untagged);
    }
    let mut parts = line.splitn(3, |&b| b == b' ');
    let tag = parts.next().filter(|t| !t.is_empty()).ok_or_else(|| format!("empty reply line: {}", lossy(line)))?;
    // RFC 3501 §9: a tag is ASCII (astring chars); ours are `M1`, `I1`, ...
    let tag = std::str::from_utf8(tag)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(|| format!("reply with a non-ASCII tag: {}", lossy(line)))?;
    let status = match parts.next() {
        Some(s) if s.eq_ignore_ascii_case(b"OK") => Status::Ok,
        Some(s) if s.eq_ignore_ascii_case(b"NO") => Status::No,
        Some(s) if s.eq_ignore_ascii_case(b"BAD") => Status::Bad,
        _ => return Err(format!("unexpected reply: {}", lossy(line))),
    };
    let rest = parts.next().unwrap_or(b"");
    // RFC 3501 §7.1: `resp-text = ["[" resp-text-code "]" SP] text`.
    let (code, text) = match rest.strip_prefix(b"[").and_then(|r| {
        let close = r.iter().position(|&b| b == b']')?;
        Some((&r[..close], &r[close + 1..]))
    }) {
        Some((code, text)) => (Some(String::from_utf8_lossy(code)), text.trim_ascii_start()),
        None => (None, rest),
    };
    Ok(Line::Tagged { tag, status, code, text: String::from_utf8_lossy(text) })
}

/// The byte count of a literal announced at the end of a line (`{123}`, `{123+}`, `~{123}`),
/// if any. Digits only (Rust's integer parsing would also take a `+` sign).
pub fn trailing_literal(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = &body[open + 1..];
    let digits = inner.strip_suffix(b"+").unwrap_or(inner);
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The APPENDUID response code of a tagged OK (RFC 4315 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendUid {
    pub uid_validity: u32,
    /// One UID per appended message, in the order they were appended.
    pub uids: Vec<u32>,
}

/// `APPENDUID uidvalidity uid-set` (RFC 4315 §3); the set lists the new UIDs in the order
/// the messages were appended (a MULTIAPPEND, RFC 3502, gives a range). `expected` is the
/// number of messages that APPEND carried.
///
/// `Ok(None)`: not an APPENDUID code. `Err`: an APPENDUID we cannot believe (malformed, UID
/// 0, repeated UIDs, or not exactly one UID per message). The set is counted before anything
/// is allocated, each range in O(1), and counting stops as soon as it passes `expected`: a
/// 64 KiB line can describe billions of UIDs (`1:4294967295`), and memory is only ever
/// spent on the number of messages we sent.
pub fn parse_appenduid(code: &str, expected: usize) -> Result<Option<AppendUid>, String> {
    let mut parts = code.split_ascii_whitespace();
    if !parts.next().is_some_and(|k| k.eq_ignore_ascii_case("APPENDUID")) {
        return Ok(None);
    }
    let bad = |why: &str| format!("invalid APPENDUID ({why}): {}", bounded(code));
    let uid_validity = parts.next().and_then(nz_number).ok_or_else(|| bad("no UIDVALIDITY"))?;
    let set = parts.next().ok_or_else(|| bad("no UID set"))?;
    if parts.next().is_some() {
        return Err(bad("text after the UID set"));
    }
    let mut count: u64 = 0;
    for piece in set.split(',') {
        let (lo, hi) = uid_range(piece).ok_or_else(|| bad("not a set of UIDs"))?;
        count += u64::from(hi - lo) + 1;
        if count > expected as u64 {
            return Err(bad(&format!("more UIDs than the {expected} message(s) appended")));
        }
    }
    if count != expected as u64 {
        return Err(bad(&format!("{count} UID(s) for {expected} message(s) appended")));
    }
    // Only now allocate: `expected` entries, a number we chose.
    let mut uids = Vec::with_capacity(expected);
    for piece in set.split(',') {
        let (lo, hi) = uid_range(piece).ok_or_else(|| bad("not a set of UIDs"))?;
        uids.extend(lo..=hi);
    }
    // One destination UID can stand for one message only (DESIGN.md §2.2).
    let mut sorted = uids.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("a UID given twice"));
    }
    Ok(Some(AppendUid { uid_validity, uids }))
}

/// `uid` or `uid:uid` in either order (RFC 3501 §9 `seq-range`; `*` has no place in an
/// APPENDUID), as (low, high).
fn uid_range(piece: &str) -> Option<(u32, u32)> {
    let (a, b) = match piece.split_once(':') {
        Some((a, b)) => (nz_number(a)?, nz_number(b)?),
        None => {
            let n = nz_number(piece)?;
            (n, n)
        }
    };
    Some((a.min(b), a.max(b)))
}

/// RFC 3501 §9 `nz-number` that fits 32 bits: digits only, no sign, no leading zero.
pub(crate) fn nz_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Server text for an error message: at most 200 characters, cut on a character boundary
/// of this very string.
fn bounded(s: &str) -> String {
    s.chars().take(200).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_tagged_replies_and_codes() {
        assert_eq!(
            parse_line(b"A7 OK [APPENDUID 38505 3955] APPEND completed").unwrap(),
            Line::Tagged {
                tag: "A7",
                status: Status::Ok,
                code: Some("APPENDUID 38505 3955".into()),
                text: "APPEND completed".into()
            }
        );
        assert_eq!(
            parse_line(b"A8 NO [TOOBIG] too large").unwrap(),
            Line::Tagged { tag: "A8", status: Status::No, code: Some("TOOBIG".into()), text: "too large".into() }
        );
        // A Latin-1 text still confirms the APPEND.
        assert!(matches!(
            parse_line(b"A9 OK [APPENDUID 1 2] enregistr\xe9").unwrap(),
            Line::Tagged { status: Status::Ok, code: Some(c), .. } if c == "APPENDUID 1 2"
        ));
        assert!(parse_line(b"\xff1 OK x").is_err());
        assert_eq!(parse_line(b"+ OK").unwrap(), Line::Continuation);
        assert_eq!(parse_line(b"+").unwrap(), Line::Continuation);
        assert_eq!(parse_line(b"* 3 EXISTS").unwrap(), Line::Untagged);
        assert!(parse_line(b"garbage").is_err());
        assert!(parse_line(b"A1 MAYBE x").is_err());
    }

    fn uids(code: &str, expected: usize) -> Option<(u32, Vec<u32>)> {
        parse_appenduid(code, expected).unwrap().map(|a| (a.uid_validity, a.uids))
    }

    #[test]
    fn appenduid_sets() {
        assert_eq!(uids("APPENDUID 1 5", 1), Some((1, vec![5])));
        assert_eq!(uids("APPENDUID 9 5:7,10", 4), Some((9, vec![5, 6, 7, 10])));
        assert_eq!(uids("appenduid 9 7:5", 3), Some((9, vec![5, 6, 7])));
        assert_eq!(uids("TOOBIG", 1), None);
        for bad in ["APPENDUID x 1", "APPENDUID 0 1", "APPENDUID 1 0", "APPENDUID 1 +5", "APPENDUID 1", "APPENDUID 1 *",
            "APPENDUID 1 5:*", "APPENDUID 1 2 3", "APPENDUID 1 5,", "APPENDUID 1 99999999999"]
        {
            assert!(parse_appenduid(bad, 1).is_err(), "{bad}");
        }
        // Not exactly one UID per message sent, or one UID standing for two messages.
        assert!(parse_appenduid("APPENDUID 1 5:6", 1).is_err());
        assert!(parse_appenduid("APPENDUID 1 5", 2).is_err());
        assert!(parse_appenduid("APPENDUID 1 5,5", 2).is_err());
        assert!(parse_appenduid("APPENDUID 1 5", 0).is_err());
    }

    /// Regression (issue 13): a set describing more UIDs than were sent was expanded whole,
    /// so one line could allocate gigabytes. Five ranges of a million here; billions fit in
    /// a 64 KiB line.
    #[test]
    fn appenduid_never_expands_beyond_what_was_sent() {
        let set = ["1:1000000"; 5].join(",");
        let err = parse_appenduid(&format!("APPENDUID 1 {set}"), 2).unwrap_err();
        assert!(err.contains("more UIDs than the 2 message(s) appended"), "{err}");
        // O(1) per range, whatever it spans, and stops at the first range past the count:
        // thousands of full-width ranges are refused at once.
        let huge = ["1:4294967295"; 5000].join(",");
        let started = std::time::Instant::now();
        assert!(parse_appenduid(&format!("APPENDUID 1 {huge}"), 64).is_err());
        assert!(parse_appenduid("APPENDUID 1 4294967295:1", 1).is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }

    /// Regression (issue 13): `\Deleted` was accepted as a flag to set on copies, which
    /// the destination's next EXPUNGE removes, possibly after the source was emptied.
    #[test]
    fn deleted_is_never_a_target_flag() {
        for flag in ["\\Deleted", "\\deleted", "\\DELETED", "\\Recent"] {
            assert!(!valid_flag(flag), "{flag}");
        }
        assert!(valid_flag("\\Seen") && valid_flag("\\Flagged") && valid_flag("Deleted") && valid_flag("$Deleted"));
        let why = flag_problem("\\deleted").unwrap();
        assert!(why.contains("cannot be set on copied messages"), "{why}");
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_line(&line);
            let _ = trailing_literal(&line);
        }

        #[test]
        fn appenduid_never_panics_and_never_gives_more_than_asked(code in "(?i:appenduid)?[ 0-9:,*+a-z]{0,60}", expected in 0usize..8) {
            if let Ok(Some(a)) = parse_appenduid(&code, expected) {
                prop_assert_eq!(a.uids.len(), expected);
                prop_assert!(a.uids.iter().all(|&u| u > 0) && a.uid_validity > 0);
            }
        }

        #[test]
        fn appenduid_of_arbitrary_text(code in any::<String>(), expected in 0usize..1000) {
            if let Ok(Some(a)) = parse_appenduid(&code, expected) {
                prop_assert_eq!(a.uids.len(), expected);
            }
        }

        #[test]
        fn appenduid_ranges_round_trip(validity in 1u32.., lo in 1u32..u32::MAX - 100, n in 1usize..50) {
            let hi = lo + n as u32 - 1;
            let code = format!("APPENDUID {validity} {lo}:{hi}");
            let a = parse_appenduid(&code, n).unwrap().unwrap();
            prop_assert_eq!(a.uids, (lo..=hi).collect::<Vec<_>>());
            prop_assert!(parse_appenduid(&code, n - 1).is_err());
        }
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

