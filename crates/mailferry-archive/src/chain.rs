//! The append-only event log's hash chain (pure part). Each record's hash covers its own
//! fields and the previous record's hash, so editing, inserting or removing a record breaks
//! every later link. Fields are length-prefixed so no two records hash alike by shifting
//! bytes between fields.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Event kinds (stored as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Ingest,
    Hold,
    Release,
    Purge,
    Export,
    Verify,
    PolicyChange,
    RunRoot,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ingest => "ingest",
            EventKind::Hold => "hold",
            EventKind::Release => "release",
            EventKind::Purge => "purge",
            EventKind::Export => "export",
            EventKind::Verify => "verify",
            EventKind::PolicyChange => "policy-change",
            EventKind::RunRoot => "run-root",
        }
    }
}

/// One record of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Event {
    pub seq: i64,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    pub kind: String,
    pub actor: String,
    /// JSON object.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash a record must carry.
pub fn event_hash(
    seq: i64,
    at: &str,
    kind: &str,
    actor: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"mailferry-archive-event-v1");
    h.update(seq.to_be_bytes());
    for f in [at, kind, actor, detail, prev_hash] {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A break found while walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum ChainBreak {
    /// The record's own hash does not match its fields (edited in place).
    HashMismatch { seq: i64 },
    /// The record does not point at the previous record's hash (removed or inserted).
    LinkBroken { seq: i64 },
    /// Sequence numbers skip (a record was removed).
    Gap { after: i64, next: i64 },
}

/// Walks records in `seq` order; returns every break.
pub fn walk<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<ChainBreak> {
    let mut breaks = Vec::new();
    let mut prev: Option<&Event> = None;
    for e in events {
        if event_hash(e.seq, &e.at, &e.kind, &e.actor, &e.detail, &e.prev_hash) != e.hash {
            breaks.push(ChainBreak::HashMismatch { seq: e.seq });
        }
        let (want_prev, want_seq) = match prev {
            None => (GENESIS, 1),
            Some(p) => (p.hash.as_str(), p.seq + 1),
        };
        if e.seq != want_seq {
            breaks.push(ChainBreak::Gap {
                after: want_seq - 1,
                next: e.seq,
            });
        }
        if e.prev_hash != want_prev {
            breaks.push(ChainBreak::LinkBroken { seq: e.seq });
        }
        prev = Some(e);
    }
    breaks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
            let detail = format!("{{\"n\":{seq}}}");
            let hash = event_hash(
                seq,
                "2024-01-01T00:00:00.000Z",
                "ingest",
                "t",
                &detail,
                &prev,
            );
            out.push(Event {
                seq,
                at: "2024-01-01T00:00:00.000Z".into(),
                kind: "ingest".into(),
                actor: "t".into(),
                detail,
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn intact_chain_has_no_breaks_and_each_tamper_is_seen() {
        let c = chain(5);
        assert!(walk(&c).is_empty());
        let mut edited = c.clone();
        edited[2].detail = "{\"n\":99}".into();
        assert_eq!(walk(&edited), vec![ChainBreak::HashMismatch { seq: 3 }]);
        let mut removed = c.clone();
        removed.remove(2);
        let b = walk(&removed);
        assert!(
            b.contains(&ChainBreak::Gap { after: 2, next: 4 })
                && b.contains(&ChainBreak::LinkBroken { seq: 4 })
        );
        let mut first_gone = c.clone();
        first_gone.remove(0);
        assert!(!walk(&first_gone).is_empty());
    }
}
