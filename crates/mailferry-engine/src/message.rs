//! Pure message handling on the data path: line-ending normalisation for IMAP and the
//! header facts the sink needs (Message-ID, INTERNALDATE). No I/O; streaming-safe.

use chrono::{DateTime, FixedOffset, TimeZone};

/// Streaming bare-LF → CRLF conversion (RFC 3501 §4.3 requires CRLF in literals; this is
/// the one change DESIGN.md §2.3 permits, and it is recorded). A CR at the end of one chunk
/// is remembered so a CRLF split across chunks is not doubled.
#[derive(Debug, Default)]
pub struct CrlfNormalizer {
    last_was_cr: bool,
    changed: bool,
}

impl CrlfNormalizer {
    /// Append the normalised form of `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' && !(if i == 0 { self.last_was_cr } else { chunk[i - 1] == b'\r' }) {
                out.extend_from_slice(&chunk[start..i]);
                out.extend_from_slice(b"\r\n");
                start = i + 1;
                self.changed = true;
            }
        }
        out.extend_from_slice(&chunk[start..]);
        if let Some(&last) = chunk.last() {
            self.last_was_cr = last == b'\r';
        }
    }

    /// Whether any bare LF was converted.
    pub fn changed(&self) -> bool {
        self.changed
    }
}

/// Convenience for tests and small messages.
pub fn normalize_crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 32);
    CrlfNormalizer::default().push(msg, &mut out);
    out
}

/// Where an INTERNALDATE came from, as recorded in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSource {
    /// The topmost Received header: when the message reached the legacy mailbox.
    Received,
    /// The Date header: when the sender said it was written.
    Date,
    /// Neither parsed; the time we retrieved it.
    Retrieved,
}

impl DateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Date => "date",
            Self::Retrieved => "retrieved",
        }
    }
}

/// What the sink learns from the header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    pub message_id: Option<String>,
    pub internal_date: DateTime<FixedOffset>,
    pub date_source: DateSource,
}

/// Unfolded header fields `(name, value)` of the header block at the start of `head`
/// (which may be a prefix of the message). Tolerates bare LF and 8-bit bytes.
pub fn header_fields(head: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for raw in head.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break; // end of the header block
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // RFC 5322 §2.2.3: folding; continue the previous field.
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(text.trim());
            }
        } else if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    fields
}

fn parse_date(s: &str) -> Option<DateTime<FixedOffset>> {
    let d = mail_parser::DateTime::parse_rfc822(s.trim())?;
    let secs = (i32::from(d.tz_hour) * 3600 + i32::from(d.tz_minute) * 60) * if d.tz_before_gmt { -1 } else { 1 };
    let tz = FixedOffset::east_opt(secs)?;
    let dt = tz
        .with_ymd_and_hms(
            i32::from(d.year),
            u32::from(d.month),
            u32::from(d.day),
            u32::from(d.hour),
            u32::from(d.minute),
            u32::from(d.second),
        )
        .single()?;
    // IMAP date-time has a four-digit year; reject nonsense rather than send BAD.
    (1970..=9999).contains(&d.year).then_some(dt)
}

/// Message-ID and INTERNALDATE: topmost Received date, else Date, else `retrieved_at`.
pub fn header_facts(head: &[u8], retrieved_at: DateTime<FixedOffset>) -> HeaderFacts {
    let fields = header_fields(head);
    let find = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let received = find("received").and_then(|v| v.rsplit_once(';')).and_then(|(_, d)| parse_date(d));
    let (internal_date, date_source) = match (received, find("date").and_then(parse_date)) {
        (Some(r), _) => (r, DateSource::Received),
        (None, Some(d)) => (d, DateSource::Date),
        (None, None) => (retrieved_at, DateSource::Retrieved),
    };
    let message_id = find("message-id").map(str::to_owned).filter(|m| !m.is_empty());
    HeaderFacts { message_id, internal_date, date_source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-24T00:00:00+00:00").unwrap()
    }

    #[test]
    fn normalises_only_bare_lf() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalize_crlf(b"no newline"), b"no newline");
        let mut n = CrlfNormalizer::default();
        let mut out = Vec::new();
        n.push(b"a\r", &mut out);
        n.push(b"\nb", &mut out);
        assert_eq!(out, b"a\r\nb");
        assert!(!n.changed());
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(msg in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'x')], 0..200), size in 1usize..17) {
            let whole = normalize_crlf(&msg);
            let mut n = CrlfNormalizer::default();
            let mut out = Vec::new();
            for c in msg.chunks(size) { n.push(c, &mut out); }
            prop_assert_eq!(&out, &whole);
            // Idempotent: normalising twice changes nothing more.
            prop_assert_eq!(normalize_crlf(&whole), whole);
        }
    }

    #[test]
    fn internal_date_prefers_topmost_received() {
        let msg = b"Received: from b by c; Tue, 3 Mar 2020 10:00:00 +0100\r\n\
Received: from a by b; Mon, 2 Mar 2020 09:00:00 +0000\r\n\
Date: Sun, 1 Mar 2020 08:00:00 -0500\r\nMessage-ID: <x@y>\r\n\r\nbody";
        let f = header_facts(msg, now());
        assert_eq!(f.date_source, DateSource::Received);
        assert_eq!(f.internal_date.to_rfc3339(), "2020-03-03T10:00:00+01:00");
        assert_eq!(f.message_id.as_deref(), Some("<x@y>"));
    }

    #[test]
    fn internal_date_falls_back_to_date_then_retrieval() {
        let f = header_facts(b"Date: Sun, 1 Mar 2020 08:00:00 -0500\nSubject: x\n\nbody", now());
        assert_eq!((f.date_source, f.internal_date.to_rfc3339().as_str()), (DateSource::Date, "2020-03-01T08:00:00-05:00"));
        let f = header_facts(b"Subject: \xff\xfe bad\r\nReceived: garbage without date\r\n\r\n", now());
        assert_eq!((f.date_source, f.internal_date), (DateSource::Retrieved, now()));
        assert_eq!(f.message_id, None);
    }

    #[test]
    fn folded_headers_unfold() {
        let fields = header_fields(b"Received: from a\r\n\tby b; Mon, 2 Mar 2020 09:00:00 +0000\r\n\r\n");
        assert_eq!(fields[0].1, "from a by b; Mon, 2 Mar 2020 09:00:00 +0000");
        assert_eq!(header_facts(b"Received: from a\r\n\tby b; Mon, 2 Mar 2020 09:00:00 +0000\r\n\r\n", now()).date_source, DateSource::Received);
    }
}
