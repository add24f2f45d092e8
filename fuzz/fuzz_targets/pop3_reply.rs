//! POP3 replies (crates/mailferry-pop3/src/wire/{line,reply}.rs): the server's bytes cut
//! into lines by `scan_line` as reads arrive, then every reply parser on every line, and
//! CAPA on all of them. Never a panic; the line split does not depend on the read size and
//! agrees with a plain split on LF; every parsed value is what the line said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_pop3::wire::{self, AuthReply, Capabilities, Command, RespCode, Scan, Status};

/// Split as the session does: append a read, scan from where the last scan stopped, take
/// whole lines. Stops at the first over-long line.
fn split_chunked(bytes: &[u8], read: usize, max_line: usize) -> (Vec<String>, bool) {
    let mut buf = Vec::new();
    let mut scanned = 0;
    let mut lines = Vec::new();
    for chunk in bytes.chunks(read) {
        buf.extend_from_slice(chunk);
        loop {
            match wire::scan_line(&buf, scanned, max_line) {
                Scan::Line { len } => {
                    assert!(len >= 1 && len <= buf.len() && buf[len - 1] == b'\n');
                    lines.push(wire::line_text(&buf[..len]));
                    buf.drain(..len);
                    scanned = 0;
                }
                Scan::Partial => {
                    assert!(!buf.contains(&b'\n'));
                    scanned = buf.len();
                    break;
                }
                Scan::TooLong => return (lines, true),
            }
        }
    }
    (lines, false)
}

/// The oracle: a plain split on LF, a CR before it dropped, limit on content plus CR.
fn split_plain(bytes: &[u8], max_line: usize) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        if i > max_line.saturating_add(1) {
            return (lines, true);
        }
        let content = rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]);
        lines.push(String::from_utf8_lossy(content).into_owned());
        rest = &rest[i + 1..];
    }
    (lines, rest.len() > max_line.saturating_add(1))
}

fn check_line(line: &str) {
    match wire::parse_status(line) {
        Some(Status::Ok(text)) => {
            assert!(line.get(..3).is_some_and(|h| h.eq_ignore_ascii_case("+OK")));
            assert!(line.contains(text.as_str()));
        }
        Some(Status::Err { code, text }) => {
            assert!(line.get(..4).is_some_and(|h| h.eq_ignore_ascii_case("-ERR")));
            assert!(line.contains(text.as_str()));
            if let Some(code) = code {
                let _ = (code.is_transient(), code.to_string());
            }
        }
        None => {}
    }
    match wire::parse_auth_reply(line) {
        Some(AuthReply::Continue(c)) => {
            assert!(line.starts_with('+'));
            let _ = wire::decode_challenge(&c);
        }
        Some(AuthReply::Status(_)) | None => {}
    }
    if let Ok((n, uid)) = wire::parse_uidl_line(line) {
        assert!(n > 0);
        assert!(wire::validate_uid(&uid).is_ok());
        assert!(line.contains(uid.as_str()));
    }
    // LIST lines and the STAT reply's text.
    let _ = wire::parse_scan_listing(line);
    if let Some(stamp) = wire::apop_timestamp(line) {
        assert!(stamp.starts_with('<') && stamp.ends_with('>') && stamp.len() > 2);
        assert!(line.contains(stamp));
        let _ = wire::apop_digest(stamp, "secret");
    }
    let _ = wire::validate_uid(line);
    let code = RespCode::parse(line);
    let _ = (code.is_transient(), code.to_string());
    // A line from the server used as a command argument (a user name from a CSV, say)
    // never injects a second command.
    let mut out = Vec::new();
    match Command::User(line).encode(&mut out) {
        Ok(()) => {
            assert!(out.ends_with(b"\r\n"));
            assert!(!out[..out.len() - 2].iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)));
        }
        Err(_) => assert!(out.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of set-up (read size, line limit), then what the server sent.
    let [read, limit, bytes @ ..] = data else { return };
    let read = usize::from(*read) + 1;
    let max_line = usize::from(*limit) * 2;

    let (lines, too_long) = split_chunked(bytes, read, max_line);
    let (whole, whole_too_long) = split_chunked(bytes, bytes.len().max(1), max_line);
    assert_eq!((&lines, too_long), (&whole, whole_too_long), "read size {read}");
    let (plain, plain_too_long) = split_plain(bytes, max_line);
    assert_eq!((&lines, too_long), (&plain, plain_too_long));
    // A stale offset past the end is clamped, never a panic.
    let _ = wire::scan_line(bytes, usize::MAX, max_line);

    for line in &lines {
        check_line(line);
    }
    let caps = Capabilities::parse(lines.clone());
    assert!(caps.answered);
    assert_eq!(caps.lines, lines);
    for m in &caps.sasl {
        assert!(caps.has_sasl(m));
    }
});
