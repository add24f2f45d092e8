//! Reading the copies back from the destination after APPEND, on the same connection, so
//! that "verified" means the destination holds the exact bytes we sent (issue 14): the
//! SHA-256 of each copy, hashed as it arrives and never held, for the engine to compare
//! with the digest of what it sent. And, for destinations without UIDPLUS (RFC 4315), the
//! means to find a copy without its UID: `UID SEARCH HEADER Message-ID`, then sizes.
//!
//! # Which item: `BODY.PEEK[]`, or `BINARY.PEEK[]` only for messages with NUL bytes
//!
//! `BINARY[]` is the message *after* Content-Transfer-Encoding decoding (RFC 3516 §4.2),
//! and servers do decode it for the whole message: Dovecot 2.3 answers `BINARY.PEEK[]` of a
//! base64 or quoted-printable message (or of a multipart one with such parts) with the
//! decoded bodies and the header rewritten to `Content-Transfer-Encoding: binary`. Its
//! digest can never equal that of what we appended. `BODY[]` is the message as stored
//! (RFC 3501 §6.4.5) and is exact for every message except one with NUL bytes, which a
//! plain literal cannot carry (RFC 3501 §4.3; Dovecot sends 0x80 in their place). Those,
//! and only those, went out as a literal8 (RFC 3516 §4.3) and are read back with
//! `BINARY.PEEK[]` ([`Appender::read_back_binary`]), exact when they have no encoded part.
//! `.PEEK`: reading back must not set `\Seen` (RFC 3501 §6.4.5).
//!
//! # Bounds
//!
//! One `UID FETCH <set> (UID BODY.PEEK[])` per [`CHUNK`] UIDs, [`PIPELINE`] of them in
//! flight; no more FETCH responses in all than UIDs asked plus [`FETCH_SLACK`]
//! (unsolicited flag updates, RFC 3501 §7.4.2), each body literal at most
//! `ImapOptions::max_message_bytes` and hashed in chunks (reader.rs: memory stays flat,
//! and each line and literal has its own timeout), every other literal at most 1 MiB.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::Appender;
use crate::error::{ImapError, Result};
use crate::fetch::{BodyItem, FetchData};
use crate::response::{self, Body, Response};
use crate::uids;
use crate::wire::{self, Line, Status};

/// UIDs per `UID FETCH` command: a short command line (at most ~2.8 KB), and a server's
/// answer to one command never holds more than this many bodies.
const CHUNK: usize = 256;
/// `UID FETCH` commands in flight: the next one is queued at the server while we read the
/// answer to the previous one, so the connection does not idle for a round trip per chunk.
const PIPELINE: usize = 2;
/// FETCH responses beyond the number of UIDs asked we tolerate (unsolicited flag updates
/// from other sessions, a server repeating itself).
const FETCH_SLACK: usize = 1000;
/// UIDs one `UID SEARCH` may return: a Message-ID names one message, perhaps a few.
const MAX_SEARCH_UIDS: usize = 10_000;
/// Longest Message-ID we search for (RFC 5322 §2.1.1: a line is at most 998 characters).
const MAX_MESSAGE_ID: usize = 998;

/// One copy read back from the destination.
///
/// `size` is the length of the body literal the server sent and `sha256` (lowercase hex)
/// the digest of exactly those bytes. A copy is the message we sent when both equal what
/// we sent. When the server sends a body of another length than the expected size, the
/// entry is still returned, with that length and the digest of what the server sent (so
/// the ledger can hold both digests): bytes of another length cannot have our digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub uid: u32,
    pub sha256: String,
    /// SHA-256 (lowercase hex) of what follows the header block: for verification at level
    /// `body`, where the destination rewrote headers ([`crate::BodyHasher`]).
    pub body_sha256: String,
    pub size: u64,
}

impl ReadBack {
    /// Whether this copy is the message whose size and SHA-256 (hex) are given.
    pub fn matches(&self, size: u64, sha256: &str) -> bool {
        self.size == size && self.sha256.eq_ignore_ascii_case(sha256)
    }
}

impl Appender {
    /// Whether the destination offers BINARY (RFC 3516): literal8 in APPEND for messages
    /// with NUL bytes, and [`Self::read_back_binary`].
    pub fn has_binary(&self) -> bool {
        self.caps.binary
    }

    /// Read copies back by UID from the selected target folder and hash them:
    /// `copies` are `(UID, size we sent)`. `UID FETCH <set> (UID BODY.PEEK[])`, exact for
    /// every message without NUL bytes (see the module docs for why not `BINARY[]`).
    ///
    /// One entry per UID the server sent a body for, in the order of `copies` (a UID given
    /// twice once); a UID without one (the copy is gone) is absent. A body of another size
    /// is an entry that does not match (see [`ReadBack`]). Errors: a tagged NO or BAD
    /// (after the commands in flight are answered, for NO), a body literal above
    /// `max_message_bytes`, a server past the bounds, I/O and timeouts.
    pub async fn read_back(&mut self, copies: &[(u32, u64)]) -> Result<Vec<ReadBack>> {
        self.fetch_bodies(copies, BodyItem::Body).await
    }

    /// As [`Self::read_back`] with `BINARY.PEEK[]` (RFC 3516 §4.2), for copies of messages
    /// with NUL bytes (appended as a literal8), which `BODY[]` cannot carry. Such a copy
    /// reads back exact unless it has base64 or quoted-printable parts, which `BINARY[]`
    /// decodes. `ImapError::NotSent` when the server does not offer BINARY.
    pub async fn read_back_binary(&mut self, copies: &[(u32, u64)]) -> Result<Vec<ReadBack>> {
        if !self.caps.binary {
            return Err(ImapError::NotSent("BINARY.PEEK[] needs the destination to offer BINARY (RFC 3516)".into()));
        }
        self.fetch_bodies(copies, BodyItem::Binary).await
    }

    /// The UIDs of the messages in the target folder whose Message-ID header contains
    /// `message_id` (`UID SEARCH HEADER Message-ID "<id>"`, RFC 3501 §6.4.4), ascending.
    /// HEADER is a substring match, case-insensitive on most servers: these are candidates,
    /// to be narrowed by size ([`Self::sizes`]) and proved by digest. Give the id as it is
    /// in the header, angle brackets included. `ImapError::NotSent` for an empty id, one
    /// longer than 998 bytes, or one that a quoted string cannot carry (CR, LF, NUL, or
    /// 8-bit: RFC 3501 §4.3, 7-bit without CHARSET); an error for more than 10,000
    /// results (read to the end of the reply all the same, so the connection stays usable).
    pub async fn search_message_id(&mut self, message_id: &str) -> Result<Vec<u32>> {
        if let Some(why) = message_id_problem(message_id) {
            return Err(ImapError::NotSent(why));
        }
        const COMMAND: &str = "UID SEARCH";
        let tag = self.tag();
        self.write(format!("{tag} UID SEARCH HEADER Message-ID {}\r\n", wire::quote(message_id)).as_bytes()).await?;
        self.flush().await?;
        let mut found = Vec::new();
        let mut others = 0;
        // A SEARCH response we cannot take (too many UIDs, not UIDs): the rest is still read
        // to the tagged reply, so the connection stays in step for the next command.
        let mut unreadable: Option<String> = None;
        loop {
            let line = self.reader.line(self.session.get_mut()).await?;
            if response::tagged(COMMAND, &tag, &line)? {
                break;
            }
            // Untagged data may carry literals (a FETCH for a flag change): skip them, bounded.
            let stream = self.session.get_mut();
            match response::read(&mut self.reader, stream, line, BodyItem::Body, None).await? {
                // RFC 3501 §7.2.5: one SEARCH response, but several would be no harm.
                Response::Other { skeleton } if unreadable.is_none() => {
                    match uids::parse_search(&skeleton, &mut found, MAX_SEARCH_UIDS) {
                        Ok(true) => {}
                        Ok(false) => response::other_untagged(&mut others, COMMAND)?,
                        Err(why) => unreadable = Some(why),
                    }
                }
                _ => response::other_untagged(&mut others, COMMAND)?,
            }
        }
        if let Some(why) = unreadable {
            return Err(ImapError::Protocol(format!("{COMMAND}: {why}")));
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// RFC822.SIZE of each of `uids` still in the target folder (`UID FETCH <set>
    /// (UID RFC822.SIZE)`), in the order of `uids`; a UID no longer there is absent.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<Vec<(u32, u64)>> {
        let wanted = uid_map(uids.iter().map(|&u| (u, ())))?;
        let mut sizes: HashMap<u32, u64> = HashMap::with_capacity(uids.len());
        self.uid_fetch(uids, "(UID RFC822.SIZE)", BodyItem::Body, false, |data, _| {
            if let (Some(uid), Some(size), true) = (data.uid, data.size, data.complete) {
                if wanted.contains_key(&uid) {
                    sizes.entry(uid).or_insert(size);
                }
            }
        })
        .await?;
        Ok(in_order(uids.iter().copied(), |uid| sizes.remove(&uid).map(|s| (uid, s))))
    }

    /// RFC822.SIZE and INTERNALDATE of each of `uids` still in the target folder (`UID
    /// FETCH <set> (UID RFC822.SIZE INTERNALDATE)`), in the order of `uids`: what locates a
    /// copy on a destination that rewrote its bytes (no digest can match there).
    pub async fn placements(&mut self, uids: &[u32]) -> Result<Vec<(u32, u64, Option<String>)>> {
        let wanted = uid_map(uids.iter().map(|&u| (u, ())))?;
        let mut got: HashMap<u32, (u64, Option<String>)> = HashMap::with_capacity(uids.len());
        self.uid_fetch(uids, "(UID RFC822.SIZE INTERNALDATE)", BodyItem::Body, false, |data, _| {
            if let (Some(uid), Some(size), true) = (data.uid, data.size, data.complete) {
                if wanted.contains_key(&uid) {
                    got.entry(uid).or_insert((size, data.internal_date));
                }
            }
        })
        .await?;
        Ok(in_order(uids.iter().copied(), |uid| got.remove(&uid).map(|(s, d)| (uid, s, d))))
    }

    async fn fetch_bodies(&mut self, copies: &[(u32, u64)], item: BodyItem) -> Result<Vec<ReadBack>> {
        let expected = uid_map(copies.iter().copied())?;
        let mut got: HashMap<u32, ReadBack> = HashMap::with_capacity(expected.len());
        let items = match item {
            BodyItem::Body => "(UID BODY.PEEK[])",
            BodyItem::Binary => "(UID BINARY.PEEK[])",
        };
        let uids: Vec<u32> = copies.iter().map(|c| c.0).collect();
        self.uid_fetch(&uids, items, item, true, |data, body| {
            // RFC 3501 §6.4.8: each response to a UID FETCH carries the UID, possibly
            // after the body (RFC 3501 fixes no order); one naming a UID we did not ask
            // for, or without a body (a flag update), is not a copy of ours.
            let Some(uid) = data.uid.filter(|u| data.complete && expected.contains_key(u)) else { return };
            if got.contains_key(&uid) {
                return; // a server repeating itself: the first body counts
            }
            let read = match (body, data.body_quoted) {
                (Some(b), _) => ReadBack { uid, sha256: hex::encode(b.digest), body_sha256: b.body_digest, size: b.len },
                (None, Some(q)) => ReadBack {
                    uid,
                    sha256: hex::encode(Sha256::digest(&q)),
                    body_sha256: crate::bodyhash::BodyHasher::of(&q),
                    size: q.len() as u64,
                },
                (None, None) => return,
            };
            if read.size != expected[&uid] {
                tracing::warn!(uid, sent = expected[&uid], read = read.size, "a copy read back differs in size from what was sent");
            }
            got.insert(uid, read);
        })
        .await?;
        Ok(in_order(copies.iter().map(|c| c.0), |uid| got.remove(&uid)))
    }

    /// `UID FETCH <set> <items>` for `uids`, in chunks of [`CHUNK`] with [`PIPELINE`] in
    /// flight; `each` gets every FETCH response, and with `hash_body` the body item's
    /// literal hashed (at most `max_message_bytes`).
    async fn uid_fetch(
        &mut self,
        uids: &[u32],
        items: &str,
        item: BodyItem,
        hash_body: bool,
        mut each: impl FnMut(FetchData, Option<Body>),
    ) -> Result<()> {
        const COMMAND: &str = "UID FETCH";
        let mut sets = uids::uid_sets(uids.iter().copied(), CHUNK).into_iter();
        let max_fetches = uids.len().saturating_add(FETCH_SLACK);
        let cap = self.max_message_bytes;
        let mut check = |len: u64| {
            if len > cap {
                return Err(ImapError::Protocol(format!(
                    "the destination sent a message literal of {len} bytes, more than the {cap}-byte limit"
                )));
            }
            Ok(())
        };
        let mut in_flight: Vec<String> = Vec::with_capacity(PIPELINE);
        for set in sets.by_ref().take(PIPELINE) {
            let tag = self.tag();
            self.write(format!("{tag} UID FETCH {set} {items}\r\n").as_bytes()).await?;
            in_flight.push(tag);
        }
        self.flush().await?;
        let (mut fetches, mut others) = (0usize, 0usize);
        // The first NO: the commands still in flight are read to their end before it is
        // returned, so the connection stays in step for the next command.
        let mut refused: Option<ImapError> = None;
        while !in_flight.is_empty() {
            let line = self.reader.line(self.session.get_mut()).await?;
            match wire::parse_line(&line).map_err(ImapError::Protocol)? {
                Line::Tagged { tag, status, code, text } => {
                    let Some(pos) = in_flight.iter().position(|t| t == tag) else {
                        return Err(ImapError::Protocol(format!("reply for unknown tag {tag}")));
                    };
                    in_flight.remove(pos);
                    let text: String = super::refusal(code.as_deref(), &text).chars().take(200).collect();
                    match status {
                        Status::Ok => {}
                        Status::No => {
                            refused.get_or_insert(ImapError::Refused { command: COMMAND, text });
                        }
                        Status::Bad => return Err(ImapError::Protocol(format!("{COMMAND} answered BAD: {text}"))),
                    }
                    if refused.is_none() {
                        if let Some(set) = sets.next() {
                            let tag = self.tag();
                            self.write(format!("{tag} UID FETCH {set} {items}\r\n").as_bytes()).await?;
                            self.flush().await?;
                            in_flight.push(tag);
                        }
                    }
                }
                Line::Continuation => {
                    return Err(ImapError::Protocol(format!("unexpected continuation request during {COMMAND}")))
                }
                Line::Untagged => {
                    let stream = self.session.get_mut();
                    let check: Option<&mut (dyn FnMut(u64) -> Result<()> + Send)> = if hash_body { Some(&mut check) } else { None };
                    match response::read(&mut self.reader, stream, line, item, check).await? {
                        Response::Fetch { data, body } => {
                            fetches += 1;
                            if fetches > max_fetches {
                                return Err(ImapError::Protocol(format!(
                                    "the destination sent more than {max_fetches} FETCH responses for {} UIDs",
                                    uids.len()
                                )));
                            }
                            each(data, body);
                        }
                        Response::Exists(_) | Response::Other { .. } => response::other_untagged(&mut others, COMMAND)?,
                    }
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `(UID, value)` pairs as a map, the first of a repeated UID kept; UID 0 names no
/// message (RFC 3501 §2.3.1.1) and would make the command BAD.
fn uid_map<V: Copy>(items: impl IntoIterator<Item = (u32, V)>) -> Result<HashMap<u32, V>> {
    let mut map = HashMap::new();
    for (uid, value) in items {
        if uid == 0 {
            return Err(ImapError::NotSent("UID 0 names no message".into()));
        }
        map.entry(uid).or_insert(value);
    }
    Ok(map)
}

/// `take(uid)` for each UID in the caller's order; `take` yields each UID once at most.
fn in_order<T>(uids: impl Iterator<Item = u32>, mut take: impl FnMut(u32) -> Option<T>) -> Vec<T> {
    uids.filter_map(&mut take).collect()
}

/// Why `id` cannot be searched for, if it cannot.
fn message_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("an empty Message-ID".into());
    }
    if id.len() > MAX_MESSAGE_ID {
        return Some(format!("a Message-ID longer than {MAX_MESSAGE_ID} bytes"));
    }
    if id.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Some("a Message-ID with CR, LF or NUL".into());
    }
    if !id.is_ascii() {
        return Some("a Message-ID with 8-bit characters, which a quoted string cannot carry".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids() {
        assert_eq!(message_id_problem("<a@b>"), None);
        assert_eq!(message_id_problem("<a\"b\\c@d>"), None, "quoted by wire::quote");
        for bad in ["", "<a\r\n@b>", "<a\n@b>", "<a\0@b>", "<é@b>"] {
            assert!(message_id_problem(bad).is_some(), "{bad:?}");
        }
        assert!(message_id_problem(&"x".repeat(999)).is_some());
    }

    #[test]
    fn uid_maps() {
        let m = uid_map([(5u32, 10u64), (6, 11), (5, 99)]).unwrap();
        assert_eq!((m[&5], m[&6], m.len()), (10, 11, 2), "the first of a repeated UID");
        assert!(matches!(uid_map([(0u32, ()), (1, ())]), Err(ImapError::NotSent(_))));
    }

    #[test]
    fn matching() {
        let r = ReadBack { uid: 1, sha256: "AB".into(), body_sha256: String::new(), size: 3 };
        assert!(r.matches(3, "ab"));
        assert!(!r.matches(4, "ab") && !r.matches(3, "ac"));
    }
}
