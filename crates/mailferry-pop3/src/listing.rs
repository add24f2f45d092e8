//! Multi-line replies other than RETR: the CAPA list (RFC 2449 §5) and the UIDL and LIST
//! listings (RFC 1939 §5, §7), each bounded by what was asked.
//!
//! A hostile or broken server can send an endless listing. Each one is read line by line,
//! parsed as it arrives (no copy of the raw lines is kept) and cut off at a [`ReplyLimit`]
//! on lines and bytes, with [`Pop3Error::ReplyTooLong`], before anything past the limit is
//! kept (DESIGN §2, invariants 4 and 7):
//!
//! * CAPA: [`Pop3Options::max_capa_lines`] lines and [`Pop3Options::max_capa_bytes`].
//! * UIDL and LIST: one line per message STAT counted, plus
//!   [`Pop3Options::listing_slack`], never more than [`Pop3Options::max_listing_lines`];
//!   and [`Pop3Options::listing_bytes_per_line`] bytes per allowed line. The maildrop is
//!   locked for the session (RFC 1939 §8), so its message count cannot grow: STAT is
//!   asked once, before the first listing, and its count kept.

use std::collections::HashMap;

use crate::session::UidlListing;
use crate::wire::{self, clip, Capabilities, Command};
use crate::{Pop3Error, Pop3Options, Pop3Session, Result};

/// How much of a multi-line reply is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyLimit {
    /// The command, for the error.
    pub command: &'static str,
    pub max_lines: usize,
    /// Bytes of all lines, counting two for each line ending.
    pub max_bytes: usize,
    /// Where each limit comes from, for the error (e.g. "STAT counted 5 messages").
    pub why_lines: String,
    pub why_bytes: String,
}

impl ReplyLimit {
    pub fn capa(opts: &Pop3Options) -> Self {
        Self {
            command: "CAPA",
            max_lines: opts.max_capa_lines,
            max_bytes: opts.max_capa_bytes,
            why_lines: "the limit for a capability list".into(),
            why_bytes: "the limit for a capability list".into(),
        }
    }

    /// A listing of the messages of a maildrop holding `count` (STAT's count).
    pub fn listing(command: &'static str, count: u32, opts: &Pop3Options) -> Self {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let wanted = count.saturating_add(opts.listing_slack);
        let max_lines = wanted.min(opts.max_listing_lines);
        let why_lines = if wanted > max_lines {
            format!("STAT counted {count} messages, and no listing may be longer than {max_lines} lines")
        } else {
            format!("STAT counted {count} messages, plus {} of slack", opts.listing_slack)
        };
        Self {
            command,
            max_lines,
            max_bytes: max_lines.saturating_mul(opts.listing_bytes_per_line),
            why_lines,
            why_bytes: format!("{} bytes for each of the {max_lines} lines allowed", opts.listing_bytes_per_line),
        }
    }

    /// Account for one more `line` (given without its line ending), `lines` and `bytes`
    /// being the totals so far; the error when it goes past the limit.
    fn admit(&self, lines: &mut usize, bytes: &mut usize, line: &str) -> std::result::Result<(), Pop3Error> {
        *lines = lines.saturating_add(1);
        *bytes = bytes.saturating_add(line.len()).saturating_add(2);
        let too_long = |limit: String, sent: String| Pop3Error::ReplyTooLong { command: self.command, limit, sent };
        if *lines > self.max_lines {
            return Err(too_long(
                format!("{} lines ({})", self.max_lines, self.why_lines),
                format!("it sent line {}: {:?}", *lines, clip(line)),
            ));
        }
        if *bytes > self.max_bytes {
            return Err(too_long(
                format!("{} bytes ({})", self.max_bytes, self.why_bytes),
                format!("it had sent {} bytes by line {}: {:?}", *bytes, *lines, clip(line)),
            ));
        }
        Ok(())
    }
}

impl Pop3Session {
    /// The lines of a multi-line body up to the `.` terminator, un-stuffed (RFC 1939 §3),
    /// each handed to `each` as it arrives. Past `limit`, reading stops with
    /// [`Pop3Error::ReplyTooLong`]; an error from `each` also ends the reply. Either
    /// leaves the rest of the reply unread, so the session becomes unusable.
    pub(crate) async fn read_multiline(
        &mut self,
        limit: &ReplyLimit,
        during: &'static str,
        mut each: impl FnMut(String) -> std::result::Result<(), Pop3Error>,
    ) -> Result<()> {
        let (mut lines, mut bytes) = (0, 0);
        loop {
            let line = self.read_line(during).await?;
            if line == "." {
                return Ok(());
            }
            if let Err(e) = limit.admit(&mut lines, &mut bytes, &line) {
                return self.fail(e);
            }
            let line = match line.strip_prefix('.') {
                Some(rest) => rest.to_owned(),
                None => line,
            };
            if let Err(e) = each(line) {
                return self.fail(e);
            }
        }
    }

    /// The CAPA list (RFC 2449 §5), after its `+OK`.
    pub(crate) async fn read_capa_list(&mut self) -> Result<Capabilities> {
        let limit = ReplyLimit::capa(&self.opts);
        let mut lines = Vec::new();
        self.read_multiline(&limit, "reading the CAPA list", |line| {
            lines.push(line);
            Ok(())
        })
        .await?;
        Ok(Capabilities::parse(lines))
    }

    /// STAT: `(message count, total size in octets)`. The count bounds later listings.
    pub async fn stat(&mut self) -> Result<(u32, u64)> {
        let text = self.simple(Command::Stat, "reading the STAT reply").await?;
        match wire::parse_scan_listing(&text) {
            Some((count, size)) => {
                // Within a session the count can only shrink (DELE), never grow (RFC
                // 1939 §8): a STAT that says more does not widen the bound.
                self.count = Some(self.count.map_or(count, |c| c.min(count)));
                Ok((count, size))
            }
            None => self.protocol("unreadable STAT reply", &text),
        }
    }

    /// The message count a listing is bounded by: STAT's, asked once per session.
    async fn listing_limit(&mut self, command: &'static str) -> Result<ReplyLimit> {
        let count = match self.count {
            Some(count) => count,
            None => self.stat().await?.0,
        };
        Ok(ReplyLimit::listing(command, count, &self.opts))
    }

    /// LIST: `(message number, size in octets)` for every message not marked deleted.
    /// Asks STAT first when this session has not yet, to bound the listing.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>> {
        let limit = self.listing_limit("LIST").await?;
        self.simple(Command::List, "reading the LIST reply").await?;
        let mut out = Vec::new();
        self.read_multiline(&limit, "reading the LIST listing", |line| match wire::parse_scan_listing(&line) {
            Some(v) => {
                out.push(v);
                Ok(())
            }
            None => Err(Pop3Error::Protocol(format!("unreadable LIST line: {:?}", clip(&line)))),
        })
        .await?;
        Ok(out)
    }

    /// UIDL (RFC 1939 §7), tried whatever CAPA said. The text after `+OK` is ignored
    /// (some servers put a count there). Bad and duplicated unique-ids are reported in the
    /// listing, not as an error. Asks STAT first when this session has not yet, to bound
    /// the listing.
    pub async fn uidl(&mut self) -> Result<UidlListing> {
        let limit = self.listing_limit("UIDL").await?;
        self.simple(Command::Uidl, "reading the UIDL reply").await?;
        let mut listing = UidlListing::default();
        let mut valid = Vec::new();
        self.read_multiline(&limit, "reading the UIDL listing", |line| {
            match wire::parse_uidl_line(&line) {
                Ok(entry) => valid.push(entry),
                Err(bad) => listing.invalid.push((bad.msg, bad.reason)),
            }
            Ok(())
        })
        .await?;
        let mut seen: HashMap<&str, Vec<u32>> = HashMap::with_capacity(valid.len());
        for (n, uid) in &valid {
            seen.entry(uid.as_str()).or_default().push(*n);
        }
        let mut duplicates = Vec::new();
        let mut entries = Vec::with_capacity(valid.len());
        for (n, uid) in &valid {
            match seen.get(uid.as_str()) {
                // Reported once, at the first message that carries it.
                Some(ns) if ns.len() > 1 => {
                    if ns.first() == Some(n) {
                        duplicates.push((uid.clone(), ns.clone()));
                    }
                }
                _ => entries.push((*n, uid.clone())),
            }
        }
        listing.entries = entries;
        listing.duplicates = duplicates;
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_limits_follow_stat() {
        let opts = Pop3Options { listing_slack: 2, listing_bytes_per_line: 10, max_listing_lines: 100, ..Default::default() };
        let limit = ReplyLimit::listing("UIDL", 3, &opts);
        assert_eq!((limit.max_lines, limit.max_bytes), (5, 50));
        let (mut lines, mut bytes) = (0, 0);
        for _ in 0..5 {
            limit.admit(&mut lines, &mut bytes, "1 a").unwrap();
        }
        let err = limit.admit(&mut lines, &mut bytes, "6 f").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the POP3 server's UIDL reply is longer than 5 lines (STAT counted 3 messages, plus 2 of slack); \
             it sent line 6: \"6 f\""
        );
        let (mut lines, mut bytes) = (0, 0);
        let err = limit.admit(&mut lines, &mut bytes, &"x".repeat(60)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "the POP3 server's UIDL reply is longer than 50 bytes (10 bytes for each of the 5 lines allowed); \
                 it had sent 62 bytes by line 1: \"xxx"
            ),
            "{err}"
        );
        assert!(err.class().is_retryable() && !err.leaves_session_usable());

        // A STAT claiming billions of messages is held to the ceiling, without overflow.
        let limit = ReplyLimit::listing("LIST", u32::MAX, &Pop3Options { listing_bytes_per_line: usize::MAX, ..opts });
        assert_eq!((limit.max_lines, limit.max_bytes), (100, usize::MAX));
        assert!(limit.why_lines.ends_with("no listing may be longer than 100 lines"), "{}", limit.why_lines);
    }
}
