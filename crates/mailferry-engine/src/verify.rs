//! Verified means read back (issue 14, DESIGN.md §3): after the destination confirmed a
//! copy, its bytes are read back from the destination, hashed as they stream in (never held
//! whole), and compared with what was sent, at the job's [`VerifyLevel`]. Only a match makes
//! the ledger row `verified`, and only `verified` rows are deleted at the source.
//!
//! IMAP: copies are found by the UID from APPENDUID (RFC 4315) and read back in one UID
//! FETCH per batch; without UIDPLUS, by `UID SEARCH HEADER Message-ID` among messages of the
//! same size, each destination message vouching for one copy only. Archive: the stored blob
//! is read back from its backend, decrypted, decompressed and re-hashed.

use std::collections::{HashMap, HashSet};

use mailferry_archive::Digest;
use mailferry_model::VerifyLevel;
use mailferry_store::ReadBackResult;

use crate::sink::{Sink, SinkError};

/// A confirmed copy to read back.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub uidl: String,
    /// From APPENDUID, when the destination has UIDPLUS.
    pub uid: Option<u32>,
    /// SHA-256 (hex) and size of the bytes sent (for an archive: the exact retrieved bytes).
    pub wire_digest: String,
    pub wire_size: u64,
    /// SHA-256 (hex) of the body (after the header block) of the bytes sent.
    pub body_digest: Option<String>,
    pub message_id: Option<String>,
    /// The message holds NUL bytes: only `BINARY.PEEK[]` (RFC 3516) returns them intact.
    pub has_nul: bool,
}

/// What the destination gave back for one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Got {
    pub sha256: String,
    pub size: u64,
    pub body_sha256: Option<String>,
}

/// Compare at `level`: `None` when it matches, else why not.
pub(crate) fn judge(sent: &Sent, got: Option<&Got>, level: VerifyLevel) -> Option<String> {
    let Some(got) = got else {
        return Some("the copy could not be read back from the destination (it is missing, or could not be located)".into());
    };
    let ok = match level {
        VerifyLevel::Exact => got.sha256 == sent.wire_digest && got.size == sent.wire_size,
        VerifyLevel::Body => match (&sent.body_digest, &got.body_sha256) {
            (Some(a), Some(b)) => a == b,
            _ => got.sha256 == sent.wire_digest,
        },
        VerifyLevel::Size => got.size == sent.wire_size,
        // Never asked to read back; a copy that was read back anyway still has to match.
        VerifyLevel::None => got.sha256 == sent.wire_digest && got.size == sent.wire_size,
    };
    (!ok).then(|| {
        format!(
            "read back from the destination, the copy does not match at level {}: sent {} bytes sha256 {}, read back {} bytes sha256 {}",
            level.as_str(),
            sent.wire_size,
            sent.wire_digest,
            got.size,
            got.sha256
        )
    })
}

/// Read back every copy of `sent` and judge it; one result per copy.
pub(crate) async fn read_back(sink: &mut Sink, sent: &[Sent], level: VerifyLevel) -> Result<Vec<ReadBackResult>, SinkError> {
    let got: HashMap<String, Got> = match sink {
        Sink::Imap(appender) => imap_read_back(appender, sent).await.map_err(SinkError::Imap)?,
        Sink::Archive { archive, .. } => {
            let mut got = HashMap::new();
            for s in sent {
                let Ok(digest) = s.wire_digest.parse::<Digest>() else { continue };
                match archive.read_back(&digest).await {
                    // The archive re-hashed the stored bytes to this digest.
                    Ok(size) => {
                        got.insert(s.uidl.clone(), Got { sha256: s.wire_digest.clone(), size, body_sha256: s.body_digest.clone() });
                    }
                    Err(mailferry_archive::ArchiveError::Integrity(e)) => {
                        tracing::error!(uidl = %s.uidl, error = %e, "the archived copy does not read back intact");
                    }
                    Err(e) => return Err(SinkError::Archive(e)),
                }
            }
            got
        }
    };
    Ok(sent
        .iter()
        .map(|s| {
            let g = got.get(&s.uidl);
            ReadBackResult {
                uidl: s.uidl.clone(),
                readback_digest: g.map(|g| g.sha256.clone()),
                level,
                error: judge(s, g, level),
            }
        })
        .collect())
}

async fn imap_read_back(appender: &mut mailferry_imap::Appender, sent: &[Sent]) -> mailferry_imap::Result<HashMap<String, Got>> {
    let mut got = HashMap::new();
    // By UID: one FETCH for the batch. `BODY.PEEK[]` returns the message as stored;
    // `BINARY.PEEK[]` would decode base64 and quoted-printable (RFC 3516 §4.2), so it is used
    // only for messages with NUL bytes, which `BODY[]` cannot carry (RFC 3501 §4.3).
    let binary = appender.has_binary();
    let plain: Vec<(u32, u64)> =
        sent.iter().filter(|s| !(s.has_nul && binary)).filter_map(|s| s.uid.map(|u| (u, s.wire_size))).collect();
    let with_nul: Vec<(u32, u64)> =
        sent.iter().filter(|s| s.has_nul && binary).filter_map(|s| s.uid.map(|u| (u, s.wire_size))).collect();
    let mut read: HashMap<u32, Got> = HashMap::new();
    for (copies, use_binary) in [(plain, false), (with_nul, true)] {
        if copies.is_empty() {
            continue;
        }
        let found = if use_binary { appender.read_back_binary(&copies).await? } else { appender.read_back(&copies).await? };
        read.extend(found.into_iter().map(|r| (r.uid, Got { sha256: r.sha256, size: r.size, body_sha256: Some(r.body_sha256) })));
    }
    for s in sent {
        if let Some(g) = s.uid.and_then(|u| read.get(&u)) {
            got.insert(s.uidl.clone(), g.clone());
        }
    }
    // Without UIDPLUS: by Message-ID among messages of the size sent; each destination
    // message vouches for one copy only, and one whose bytes match is preferred.
    let mut claimed: HashSet<u32> = HashSet::new();
    for s in sent.iter().filter(|s| s.uid.is_none()) {
        let Some(mid) = s.message_id.as_deref() else { continue };
        let candidates = appender.search_message_id(mid).await?;
        let candidates: Vec<u32> = candidates.into_iter().filter(|u| !claimed.contains(u)).collect();
        if candidates.is_empty() {
            continue;
        }
        let sized: Vec<(u32, u64)> =
            appender.sizes(&candidates).await?.into_iter().filter(|(_, size)| *size == s.wire_size).collect();
        if sized.is_empty() {
            continue;
        }
        let read = appender.read_back(&sized).await?;
        let best = read.iter().find(|r| r.sha256 == s.wire_digest).or_else(|| read.first());
        if let Some(r) = best {
            claimed.insert(r.uid);
            got.insert(s.uidl.clone(), Got { sha256: r.sha256.clone(), size: r.size, body_sha256: Some(r.body_sha256.clone()) });
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Sent {
        Sent {
            uidl: "u".into(),
            uid: Some(1),
            wire_digest: "aa".into(),
            wire_size: 10,
            body_digest: Some("bb".into()),
            message_id: None,
            has_nul: false,
        }
    }

    #[test]
    fn levels() {
        let same = Got { sha256: "aa".into(), size: 10, body_sha256: Some("bb".into()) };
        let headers_rewritten = Got { sha256: "cc".into(), size: 14, body_sha256: Some("bb".into()) };
        let body_changed = Got { sha256: "dd".into(), size: 10, body_sha256: Some("ee".into()) };
        let s = sent();
        assert_eq!(judge(&s, Some(&same), VerifyLevel::Exact), None);
        assert!(judge(&s, Some(&headers_rewritten), VerifyLevel::Exact).is_some_and(|e| e.contains("sha256 aa") && e.contains("sha256 cc")));
        assert_eq!(judge(&s, Some(&headers_rewritten), VerifyLevel::Body), None);
        assert!(judge(&s, Some(&body_changed), VerifyLevel::Body).is_some());
        assert_eq!(judge(&s, Some(&body_changed), VerifyLevel::Size), None);
        assert!(judge(&s, Some(&headers_rewritten), VerifyLevel::Size).is_some());
        assert!(judge(&s, None, VerifyLevel::Size).is_some_and(|e| e.contains("could not be read back")));
    }
}
