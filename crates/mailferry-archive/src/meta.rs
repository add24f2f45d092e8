//! Message metadata for search and display, from `mail-parser`, with a raw header scan as
//! fallback so a message that does not parse is still archived and findable (issue 4:
//! "a message that does not parse is still archived, with its raw headers indexed").

use chrono::{DateTime, Utc};
use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// What the archive knows about a message's content (one per blob).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: Option<String>,
    /// The Date header (forgeable: retention never uses it).
    pub date: Option<DateTime<Utc>>,
    /// Without angle brackets.
    pub message_id: Option<String>,
    pub attachment_names: Vec<String>,
    pub has_attachment: bool,
    pub size: u64,
    /// False when mail-parser could not make sense of the message and the fields come from
    /// the raw header scan (or are empty).
    pub parsed: bool,
}

/// Metadata plus the plain text to index (not stored in SQL).
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub meta: MessageMeta,
    pub body_text: String,
}

/// Cap on indexed body text per message.
const BODY_TEXT_LIMIT: usize = 1024 * 1024;

/// `bytes` may be a prefix of the message (see `metadata_scan_limit`); `size` is the full size.
pub fn extract(bytes: &[u8], size: u64) -> Extracted {
    let raw = RawHeaders::scan(bytes);
    let mut meta = MessageMeta {
        size,
        ..Default::default()
    };
    let mut body_text = String::new();
    let parsed = MessageParser::default().parse(bytes);
    if let Some(msg) = parsed.as_ref().filter(|m| !m.headers().is_empty()) {
        meta.parsed = true;
        meta.from = addrs(msg.from());
        meta.to = addrs(msg.to());
        meta.cc = addrs(msg.cc());
        meta.subject = msg.subject().map(str::to_string);
        meta.date = msg
            .date()
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0));
        meta.message_id = msg.message_id().map(|s| s.to_string());
        for part in msg.attachments() {
            meta.has_attachment = true;
            if let Some(name) = part.attachment_name() {
                meta.attachment_names.push(name.to_string());
            }
        }
        for i in 0..msg.text_body_count() {
            if let Some(t) = msg.body_text(i) {
                push_limited(&mut body_text, &t);
            }
        }
    } else if let Some(body) = raw.body {
        push_limited(&mut body_text, &String::from_utf8_lossy(body));
    }
    // Fill what the parser left empty from the raw scan (broken or unusual headers).
    if meta.from.is_empty() {
        meta.from = raw.get("from").map(split_list).unwrap_or_default();
    }
    if meta.to.is_empty() {
        meta.to = raw.get("to").map(split_list).unwrap_or_default();
    }
    if meta.cc.is_empty() {
        meta.cc = raw.get("cc").map(split_list).unwrap_or_default();
    }
    if meta.subject.is_none() {
        meta.subject = raw.get("subject");
    }
    if meta.date.is_none() {
        meta.date = raw
            .get("date")
            .and_then(|d| DateTime::parse_from_rfc2822(d.trim()).ok())
            .map(|d| d.with_timezone(&Utc));
    }
    if meta.message_id.is_none() {
        meta.message_id = raw
            .get("message-id")
            .map(|m| {
                m.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .filter(|m| !m.is_empty());
    }
    Extracted { meta, body_text }
}

fn push_limited(out: &mut String, text: &str) {
    if out.len() >= BODY_TEXT_LIMIT {
        return;
    }
    let mut end = (BODY_TEXT_LIMIT - out.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    out.push('\n');
}

fn addrs(a: Option<&Address<'_>>) -> Vec<String> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .filter_map(|addr| match (addr.name(), addr.address()) {
            (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
            (None, Some(e)) => Some(e.to_string()),
            (Some(n), None) => Some(n.to_string()),
            (None, None) => None,
        })
        .collect()
}

fn split_list(v: String) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A forgiving RFC 5322 header scan: unfolds continuation lines, stops at the first empty
/// line, and never fails (non-UTF-8 is decoded lossily).
struct RawHeaders<'a> {
    fields: Vec<(String, String)>,
    body: Option<&'a [u8]>,
}

impl<'a> RawHeaders<'a> {
    fn scan(bytes: &'a [u8]) -> Self {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        let mut body = None;
        while pos < bytes.len() {
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| pos + i + 1);
            let line = &bytes[pos..end];
            let trimmed = trim_eol(line);
            pos = end;
            if trimmed.is_empty() {
                body = Some(&bytes[pos..]);
                break;
            }
            if trimmed[0] == b' ' || trimmed[0] == b'\t' {
                if let Some((_, v)) = fields.last_mut() {
                    v.push(' ');
                    v.push_str(String::from_utf8_lossy(trimmed).trim());
                }
                continue;
            }
            if let Some(colon) = trimmed.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&trimmed[..colon])
                    .trim()
                    .to_ascii_lowercase();
                let value = String::from_utf8_lossy(&trimmed[colon + 1..])
                    .trim()
                    .to_string();
                if !name.is_empty() && !name.contains(' ') {
                    fields.push((name, value));
                    continue;
                }
            }
            // Not a header line at all: treat the rest as body.
            body = Some(&bytes[pos - line.len()..]);
            break;
        }
        Self { fields, body }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_normal_multipart_message() {
        let m = b"From: Alice <alice@example.com>\r\nTo: bob@example.org, carol@example.org\r\n\
Cc: dave@example.net\r\nSubject: Quarterly report\r\nDate: Tue, 1 Oct 2024 10:00:00 +0000\r\n\
Message-ID: <abc@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
Numbers are up.\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"q3.pdf\"\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let e = extract(m, m.len() as u64);
        assert!(e.meta.parsed);
        assert_eq!(e.meta.from, vec!["Alice <alice@example.com>"]);
        assert_eq!(e.meta.to.len(), 2);
        assert_eq!(e.meta.cc, vec!["dave@example.net"]);
        assert_eq!(e.meta.subject.as_deref(), Some("Quarterly report"));
        assert_eq!(e.meta.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(e.meta.attachment_names, vec!["q3.pdf"]);
        assert!(e.meta.has_attachment);
        assert_eq!(
            e.meta.date.unwrap().to_rfc3339(),
            "2024-10-01T10:00:00+00:00"
        );
        assert!(e.body_text.contains("Numbers are up."));
    }

    #[test]
    fn broken_messages_never_panic_and_keep_what_headers_they_have() {
        let cases: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe\x00garbage",
            b"Subject: only a subject",
            b"From: x@y\r\nSubject: \xe9t\xe9\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nno end",
            b"no colon here\r\n\r\nbody",
        ];
        for c in cases {
            let e = extract(c, c.len() as u64);
            assert_eq!(e.meta.size, c.len() as u64);
        }
        let e = extract(b"Subject: only a subject", 23);
        assert_eq!(e.meta.subject.as_deref(), Some("only a subject"));
    }

    #[test]
    fn raw_scan_unfolds_and_stops_at_blank_line() {
        let r = RawHeaders::scan(b"Subject: a\r\n  b\r\nFrom: z\r\n\r\nSubject: body");
        assert_eq!(r.get("subject").as_deref(), Some("a b"));
        assert_eq!(r.get("from").as_deref(), Some("z"));
        assert_eq!(r.body, Some(&b"Subject: body"[..]));
    }
}
