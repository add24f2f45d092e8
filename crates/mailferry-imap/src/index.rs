//! The destination index: SHA-256 of messages already in the target folder, so that a copy
//! whose APPEND outcome was never recorded (crash, kill -9, lost ledger) is recognised
//! instead of appended twice. Identity is the digest of the exact bytes, never the
//! Message-ID alone; each destination message can vouch for one source message only
//! (two byte-identical source messages need two destination copies).
//!
//! We speak `UID FETCH` ourselves on the authenticated connection, as the appender speaks
//! APPEND, because async-imap holds each response whole and sizes its buffer by whatever
//! literal length the server announces. Here the server's numbers are bounded by what it
//! said itself: no more FETCH responses than the folder has messages (EXISTS, plus some
//! slack for unsolicited ones), no `BODY[]` literal longer than the RFC822.SIZE it
//! announced for that message, nor than [`ImapOptions::max_message_bytes`]; bodies are
//! hashed as they arrive, never held; and the timeout applies to each line and literal
//! (reader.rs), not to the whole `UID FETCH 1:*`.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_imap::Session;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{ImapError, Result};
use crate::fetch::BodyItem;
use crate::reader::Reader;
use crate::response::{self, Response};
use crate::session::ImapOptions;
use crate::stream::Stream;

/// FETCH responses beyond the folder's size we tolerate (unsolicited flag updates,
/// messages arriving while we list).
const FETCH_SLACK: u64 = 1000;
const COMMAND: &str = "UID FETCH";

#[derive(Debug, Default)]
pub struct DestinationIndex {
    by_digest: HashMap<String, Vec<u32>>,
    scanned: usize,
}

/// The connection while we index: the session's stream, our reader, the options.
struct Conn<'a> {
    session: &'a mut Session<Stream>,
    reader: &'a mut Reader,
    opts: &'a ImapOptions,
    next_tag: u64,
    /// The folder's size as last announced (SELECT, then any `* n EXISTS`).
    exists: u64,
}

impl DestinationIndex {
    pub(crate) async fn build(
        session: &mut Session<Stream>,
        reader: &mut Reader,
        exists: u32,
        wanted_sizes: Option<&HashSet<u64>>,
        opts: &ImapOptions,
    ) -> Result<Self> {
        let mut conn = Conn { session, reader, opts, next_tag: 1, exists: u64::from(exists) };

        // Cheap first pass: sizes only. Keyed by UID, so a response the server repeats
        // cannot make one message count twice.
        let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
        let tag = conn.send("UID FETCH 1:* (UID RFC822.SIZE)").await?;
        let mut fetches: u64 = 0;
        let mut others = 0;
        loop {
            let line = conn.reader.line(conn.session.get_mut()).await?;
            if response::tagged(COMMAND, &tag, &line)? {
                break;
            }
            match conn.response(line, None).await? {
                Response::Fetch { data, .. } => {
                    fetches += 1;
                    if fetches > conn.exists.saturating_add(FETCH_SLACK) {
                        return Err(ImapError::Protocol(format!(
                            "the destination sent more than {fetches} FETCH responses for a folder of {} messages",
                            conn.exists
                        )));
                    }
                    if let (Some(uid), Some(size), true) = (data.uid, data.size, data.complete) {
                        sizes.insert(uid, size);
                    }
                }
                Response::Exists(n) => conn.exists = conn.exists.max(n),
                Response::Other { .. } => response::other_untagged(&mut others, COMMAND)?,
            }
        }

        let mut index = Self::default();
        for (uid, size) in sizes {
            if wanted_sizes.is_some_and(|w| !w.contains(&size)) {
                continue;
            }
            if size > opts.max_message_bytes {
                tracing::warn!(uid, size, limit = opts.max_message_bytes, "destination message too large to index; not digested");
                continue;
            }
            // One message at a time; its bytes are hashed as they arrive.
            if let Some(digest) = conn.body_digest(uid, size).await? {
                index.by_digest.entry(hex::encode(digest)).or_default().push(uid);
                index.scanned += 1;
            }
        }
        tracing::info!(scanned = index.scanned, "destination index built");
        Ok(index)
    }

    /// Claim one destination message with this digest, if an unclaimed one exists.
    pub fn claim(&mut self, wire_digest: &str) -> Option<u32> {
        let uids = self.by_digest.get_mut(wire_digest)?;
        let uid = uids.pop();
        if uids.is_empty() {
            self.by_digest.remove(wire_digest);
        }
        uid
    }

    /// Messages digested while building the index.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

impl Conn<'_> {
    /// Send one tagged command; its tag.
    async fn send(&mut self, command: &str) -> Result<String> {
        let tag = format!("I{}", self.next_tag);
        self.next_tag += 1;
        let line = format!("{tag} {command}\r\n");
        let stream = self.session.get_mut();
        let write = async {
            stream.write_all(line.as_bytes()).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.opts.io_timeout, write).await {
            Err(_) => Err(ImapError::Timeout("sending to the destination")),
            Ok(r) => r.map_err(ImapError::from_io),
        }?;
        Ok(tag)
    }

    /// `UID FETCH uid BODY.PEEK[]` (PEEK: indexing must not set \Seen, RFC 3501 §6.4.5);
    /// the SHA-256 of the body the server sends for that UID, if it sends one.
    async fn body_digest(&mut self, uid: u32, announced: u64) -> Result<Option<[u8; 32]>> {
        let tag = self.send(&format!("UID FETCH {uid} BODY.PEEK[]")).await?;
        let mut digest = None;
        let mut fetches: u64 = 0;
        let mut others = 0;
        loop {
            let line = self.reader.line(self.session.get_mut()).await?;
            if response::tagged(COMMAND, &tag, &line)? {
                return Ok(digest);
            }
            match self.response(line, Some((uid, announced))).await? {
                Response::Fetch { data, body } => {
                    fetches += 1;
                    if fetches > FETCH_SLACK {
                        return Err(ImapError::Protocol(format!("more than {FETCH_SLACK} FETCH responses for UID {uid}")));
                    }
                    // RFC 3501 §6.4.8: a UID FETCH response carries the UID; one that names
                    // another message, or none, is not this message's body.
                    if data.uid == Some(uid) && data.complete && digest.is_none() {
                        digest = body.map(|b| b.digest).or_else(|| data.body_quoted.map(|q| Sha256::digest(q).into()));
                    }
                }
                Response::Exists(n) => self.exists = self.exists.max(n),
                Response::Other { .. } => response::other_untagged(&mut others, COMMAND)?,
            }
        }
    }

    /// Read the rest of the untagged response that began with `first`. With `body` of
    /// `(uid, announced size)`, a `BODY[]` literal is hashed as it arrives, after checking
    /// its length against what the server announced; every other literal is skipped
    /// (bounded).
    async fn response(&mut self, first: Vec<u8>, body: Option<(u32, u64)>) -> Result<Response> {
        let stream = self.session.get_mut();
        let Some((uid, announced)) = body else {
            return response::read(self.reader, stream, first, BodyItem::Body, None).await;
        };
        let mut check = |len: u64| {
            if len > announced {
                return Err(ImapError::Protocol(format!(
                    "the destination sent a BODY[] literal of {len} bytes for UID {uid}, whose RFC822.SIZE {announced} it announced"
                )));
            }
            Ok(())
        };
        response::read(self.reader, stream, first, BodyItem::Body, Some(&mut check)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_count_multiplicity() {
        let mut idx = DestinationIndex::default();
        idx.by_digest.insert("d".into(), vec![1, 2]);
        assert!(idx.claim("d").is_some());
        assert!(idx.claim("d").is_some());
        assert_eq!(idx.claim("d"), None, "two copies vouch for two source messages only");
        assert_eq!(idx.claim("other"), None);
    }
}
