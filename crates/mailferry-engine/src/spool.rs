//! Receiving one retrieved message: digest the exact source bytes, normalise line endings
//! for IMAP, and keep the result in memory when small or in a temporary spool file when
//! large, so memory never grows with message size (DESIGN.md §2.4).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use mailferry_imap::{AppendBody, BodyHasher};
use sha2::{Digest, Sha256};

use crate::message::CrlfNormalizer;

/// How much of the start of a message is kept for reading its headers.
const HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Messages larger than this (after normalisation) go to a spool file.
    pub memory_threshold: usize,
    pub dir: PathBuf,
    /// Convert bare LF to CRLF (IMAP). Archives keep the exact retrieved bytes.
    pub normalize: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { memory_threshold: 1024 * 1024, dir: std::env::temp_dir(), normalize: true }
    }
}

/// A fully received message, ready for the sink.
#[derive(Debug)]
pub struct Received {
    pub body: AppendBody,
    /// SHA-256 (hex) of the exact retrieved bytes (after dot-unstuffing, nothing else).
    pub digest: String,
    pub size: u64,
    /// SHA-256 (hex) and size of the bytes sent to the destination.
    pub wire_digest: String,
    pub wire_size: u64,
    pub normalized: bool,
    pub has_nul: bool,
    /// The first bytes of the message, for its header block.
    pub head: Vec<u8>,
    /// SHA-256 (hex) of the wire bytes after the header block (the first empty line), for
    /// verifying copies at level `body` (destinations that rewrite headers).
    pub body_digest: String,
}

#[derive(Debug)]
pub struct Incoming<'a> {
    config: &'a SpoolConfig,
    raw: Sha256,
    raw_len: u64,
    /// Digest of the normalised bytes; `None` while they equal the raw bytes (the common
    /// case: POP3 servers send CRLF), so most messages are hashed once, not twice.
    wire: Option<Sha256>,
    wire_len: u64,
    normalizer: CrlfNormalizer,
    has_nul: bool,
    head: Vec<u8>,
    memory: Vec<u8>,
    file: Option<(std::fs::File, tempfile::TempPath)>,
    scratch: Vec<u8>,
    /// The server's LIST size for the message, when known.
    listed: Option<u64>,
    /// The last (up to two) bytes received, held back until the end: see [`Self::finish`].
    tail: Vec<u8>,
    body: BodyHasher,
}

impl<'a> Incoming<'a> {
    pub fn new(config: &'a SpoolConfig) -> Self {
        Self {
            config,
            raw: Sha256::new(),
            raw_len: 0,
            wire: None,
            wire_len: 0,
            normalizer: CrlfNormalizer::default(),
            has_nul: false,
            head: Vec::new(),
            memory: Vec::new(),
            file: None,
            scratch: Vec::with_capacity(64 * 1024),
            listed: None,
            tail: Vec::with_capacity(2),
            body: BodyHasher::default(),
        }
    }

    /// A message whose LIST size (RFC 1939 §5) is `listed`: a final CRLF beyond it is the
    /// one the server added and is not part of the message (see [`Self::finish`]).
    pub fn expecting(config: &'a SpoolConfig, listed: u64) -> Self {
        Self { listed: Some(listed), ..Self::new(config) }
    }

    /// Take the next chunk of unstuffed message bytes.
    pub fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        // Hold the last two bytes back until the end of the message.
        let mut pending = std::mem::take(&mut self.tail);
        pending.extend_from_slice(chunk);
        let keep = pending.len().min(2);
        let (now, later) = pending.split_at(pending.len() - keep);
        self.feed(now)?;
        self.tail = later.to_vec();
        Ok(())
    }

    fn feed(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.has_nul |= chunk.contains(&0);
        self.scratch.clear();
        if self.config.normalize {
            self.normalizer.push(chunk, &mut self.scratch);
        } else {
            self.scratch.extend_from_slice(chunk);
        }
        if self.wire.is_none() && self.scratch.len() != chunk.len() {
            // First bare LF: the wire bytes so far were the raw bytes so far.
            self.wire = Some(self.raw.clone());
        }
        self.raw.update(chunk);
        self.raw_len += chunk.len() as u64;
        if let Some(wire) = &mut self.wire {
            wire.update(&self.scratch);
        }
        self.wire_len += self.scratch.len() as u64;
        self.body.push(&self.scratch);
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(self.scratch.len());
            self.head.extend_from_slice(&self.scratch[..take]);
        }
        match &mut self.file {
            // Spool writes are small sequential appends to the page cache; no fsync, the file
            // is scratch space that dies with the process.
            Some((file, _)) => file.write_all(&self.scratch)?,
            None => {
                self.memory.extend_from_slice(&self.scratch);
                if self.memory.len() > self.config.memory_threshold {
                    std::fs::create_dir_all(&self.config.dir)?;
                    let (mut file, path) = tempfile::Builder::new()
                        .prefix("mailferry-spool-")
                        .tempfile_in(&self.config.dir)?
                        .into_parts();
                    file.write_all(&self.memory)?;
                    self.memory = Vec::new();
                    self.file = Some((file, path));
                }
            }
        }
        Ok(())
    }

    /// The message is complete. RFC 1939 §3: a server must end a message stored without a
    /// final line ending with an added CRLF before the terminating dot; its LIST size counts
    /// the stored octets. So a message received as exactly `LIST + 2` bytes ending in CRLF
    /// was stored without one, and is delivered without one (DESIGN.md §2.3: the source
    /// bytes, nothing added).
    pub fn finish(mut self) -> std::io::Result<Received> {
        let tail = std::mem::take(&mut self.tail);
        let total = self.raw_len + tail.len() as u64;
        let added_by_server = tail == b"\r\n" && self.listed.is_some_and(|l| l.checked_add(2) == Some(total));
        if !added_by_server {
            self.feed(&tail)?;
        }
        let body = match self.file {
            Some((mut file, path)) => {
                file.flush()?;
                AppendBody::Spooled { path: Arc::new(path), len: self.wire_len }
            }
            None => AppendBody::Memory(self.memory),
        };
        let digest = hex::encode(self.raw.finalize());
        Ok(Received {
            body,
            wire_digest: self.wire.map(|w| hex::encode(w.finalize())).unwrap_or_else(|| digest.clone()),
            digest,
            size: self.raw_len,
            wire_size: self.wire_len,
            normalized: self.normalizer.changed(),
            has_nul: self.has_nul,
            head: self.head,
            body_digest: self.body.finish(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_large_messages_and_keeps_small_ones_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let config = SpoolConfig { memory_threshold: 100, dir: dir.path().to_owned(), normalize: true };
        let msg: Vec<u8> = b"Subject: x\n\n".iter().chain(&[b'a'; 300]).copied().collect();

        let mut small = Incoming::new(&config);
        small.push(&msg[..50]).unwrap();
        let small = small.finish().unwrap();
        assert!(matches!(small.body, AppendBody::Memory(_)));

        let mut big = Incoming::new(&config);
        for c in msg.chunks(7) {
            big.push(c).unwrap();
        }
        let big = big.finish().unwrap();
        let AppendBody::Spooled { path, len } = &big.body else { panic!("expected a spool file") };
        let on_disk = std::fs::read(path.as_ref() as &std::path::Path).unwrap();
        assert_eq!(on_disk, crate::message::normalize_crlf(&msg));
        assert_eq!(*len, on_disk.len() as u64);
        assert_eq!(big.size, msg.len() as u64);
        assert_eq!(big.digest, hex::encode(Sha256::digest(&msg)));
        assert_eq!(big.wire_digest, hex::encode(Sha256::digest(&on_disk)));
        assert!(big.normalized);
        assert_ne!(big.digest, big.wire_digest);

        // Already CRLF: one digest serves both.
        let mut crlf = Incoming::new(&config);
        crlf.push(b"Subject: y\r\n\r\nbody\r\n").unwrap();
        let crlf = crlf.finish().unwrap();
        assert_eq!(crlf.digest, crlf.wire_digest);
        assert!(!crlf.normalized);
        assert!(big.head.starts_with(b"Subject: x\r\n\r\n"));
        let spooled = path.to_path_buf();
        drop(big);
        assert!(!spooled.exists(), "spool file is removed with the message");
    }

    fn received(listed: Option<u64>, chunks: &[&[u8]]) -> Received {
        let config = SpoolConfig { memory_threshold: 1 << 20, dir: std::env::temp_dir(), normalize: true };
        let mut incoming = match listed {
            Some(n) => Incoming::expecting(&config, n),
            None => Incoming::new(&config),
        };
        for c in chunks {
            incoming.push(c).unwrap();
        }
        incoming.finish().unwrap()
    }

    fn body(r: &Received) -> &[u8] {
        match &r.body {
            AppendBody::Memory(v) => v,
            AppendBody::Spooled { .. } => panic!("expected memory"),
        }
    }

    #[test]
    fn the_crlf_a_server_adds_to_a_message_without_a_final_newline_is_removed() {
        // Stored as 11 bytes without a final line ending; the server sends 13.
        let sent: &[u8] = b"Subject: x\r\n\r\nab\r\n";
        let stored = &sent[..sent.len() - 2];
        for split in 0..=sent.len() {
            let r = received(Some(stored.len() as u64), &[&sent[..split], &sent[split..]]);
            assert_eq!(body(&r), stored, "split at {split}");
            assert_eq!((r.size, r.wire_size), (stored.len() as u64, stored.len() as u64));
            assert_eq!(r.digest, hex::encode(Sha256::digest(stored)));
        }
        // LIST counts the final CRLF: it is the message's own and stays.
        let r = received(Some(sent.len() as u64), &[sent]);
        assert_eq!(body(&r), sent);
        // Unknown LIST size, or bytes that are not CRLF: nothing is removed.
        assert_eq!(body(&received(None, &[sent])), sent);
        let odd: &[u8] = b"Subject: x\r\n\r\nabcd";
        assert_eq!(body(&received(Some(odd.len() as u64 - 2), &[odd])), odd);
    }

    proptest::proptest! {
        #[test]
        fn holding_back_the_tail_never_changes_other_bytes(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), split in 0usize..300) {
            let split = split.min(msg.len());
            let r = received(Some(u64::MAX), &[&msg[..split], &msg[split..]]);
            let want = crate::message::normalize_crlf(&msg);
            proptest::prop_assert_eq!(body(&r), want.as_slice());
            proptest::prop_assert_eq!(r.size, msg.len() as u64);
        }
    }

}
