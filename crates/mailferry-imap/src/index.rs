//! The destination index: SHA-256 of messages already in the target folder, so that a copy
//! whose APPEND outcome was never recorded (crash, kill -9, lost ledger) is recognised
//! instead of appended twice. Identity is the digest of the exact bytes, never the
//! Message-ID alone; each destination message can vouch for one source message only
//! (two byte-identical source messages need two destination copies).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_imap::Session;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::error::{ImapError, Result};
use crate::stream::Stream;

#[derive(Debug, Default)]
pub struct DestinationIndex {
    by_digest: HashMap<String, Vec<u32>>,
    scanned: usize,
}

impl DestinationIndex {
    pub(crate) async fn build(
        session: &mut Session<Stream>,
        wanted_sizes: Option<&HashSet<u64>>,
        io_timeout: Duration,
    ) -> Result<Self> {
        // Cheap first pass: sizes only.
        let sizes: Vec<(u32, u64)> = tokio::time::timeout(io_timeout, async {
            session
                .uid_fetch("1:*", "(UID RFC822.SIZE)")
                .await?
                .try_filter_map(|f| async move { Ok(f.uid.zip(f.size.map(u64::from))) })
                .try_collect()
                .await
        })
        .await
        .map_err(|_| ImapError::Timeout("indexing the destination"))?
        .map_err(|e| ImapError::from_lib("UID FETCH", e))?;

        let mut index = Self::default();
        for (uid, size) in sizes {
            if wanted_sizes.is_some_and(|w| !w.contains(&size)) {
                continue;
            }
            // One message at a time keeps memory to the largest candidate.
            let digest = tokio::time::timeout(io_timeout, async {
                let fetches: Vec<_> = session.uid_fetch(uid.to_string(), "BODY.PEEK[]").await?.try_collect().await?;
                Ok::<_, async_imap::error::Error>(
                    fetches.iter().find_map(|f| f.body().map(|b| hex::encode(Sha256::digest(b)))),
                )
            })
            .await
            .map_err(|_| ImapError::Timeout("indexing the destination"))?
            .map_err(|e| ImapError::from_lib("UID FETCH", e))?;
            if let Some(d) = digest {
                index.by_digest.entry(d).or_default().push(uid);
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
