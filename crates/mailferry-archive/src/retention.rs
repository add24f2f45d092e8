//! Retention and legal hold. The retention clock starts at ingest (Date headers are
//! forgeable). Purge is an explicit admin operation: it removes a blob only when *every*
//! occurrence of it has expired and no active hold covers it, and leaves a tombstone.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::chain::EventKind;
use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::index::events::append_event;
use crate::index::rows::{fmt_ts, parse_ts};
use crate::search::SearchQuery;

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "value", rename_all = "kebab-case")]
pub enum HoldScope {
    /// Everything in the archive.
    Archive,
    /// Every message with an occurrence from this account (any source host).
    Account(String),
    /// Every message matching the query *at purge time* (so later arrivals are held too).
    Query(Box<SearchQuery>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: i64,
    pub scope: HoldScope,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub released_by: Option<String>,
    pub released_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// `None`: keep forever.
    pub retention_days: Option<u32>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    pub as_of: DateTime<Utc>,
    pub purged: Vec<Digest>,
    pub bytes_freed: u64,
    /// Expired but kept because a hold covers them.
    pub held: u64,
}

type HoldRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn hold_from_row(r: HoldRow) -> Result<Hold> {
    let scope = match r.1.as_str() {
        "archive" => HoldScope::Archive,
        "account" => HoldScope::Account(r.2),
        _ => HoldScope::Query(
            serde_json::from_str(&r.2)
                .map_err(|e| ArchiveError::Config(format!("bad hold query: {e}")))?,
        ),
    };
    Ok(Hold {
        id: r.0,
        scope,
        reason: r.3,
        placed_by: r.4,
        placed_at: parse_ts(&r.5)?,
        released_by: r.6,
        released_at: r.7.as_deref().map(parse_ts).transpose()?,
    })
}

impl Archive {
    pub async fn retention(&self) -> Result<RetentionPolicy> {
        let (days, at, by): (Option<i64>, String, String) = sqlx::query_as(
            "SELECT retention_days, updated_at, updated_by FROM policy WHERE id = 1",
        )
        .fetch_one(&self.db)
        .await?;
        Ok(RetentionPolicy {
            retention_days: days.map(|d| d as u32),
            updated_at: parse_ts(&at)?,
            updated_by: by,
        })
    }

    /// Sets the archive's retention period (logged as a policy change).
    pub async fn set_retention(&self, days: Option<u32>, who: &str) -> Result<RetentionPolicy> {
        let (_w, mut tx) = self.begin_write().await?;
        let now = fmt_ts(Utc::now());
        sqlx::query(
            "UPDATE policy SET retention_days = $1, updated_at = $2, updated_by = $3 WHERE id = 1",
        )
        .bind(days.map(i64::from))
        .bind(&now)
        .bind(who)
        .execute(&mut *tx)
        .await?;
        append_event(
            &mut tx,
            EventKind::PolicyChange,
            who,
            serde_json::json!({ "retention_days": days }),
        )
        .await?;
        tx.commit().await?;
        drop(_w);
        self.sync_object_locks().await?;
        self.retention().await
    }

    pub async fn place_hold(&self, scope: HoldScope, reason: &str, who: &str) -> Result<Hold> {
        let (kind, value) = match &scope {
            HoldScope::Archive => ("archive", String::new()),
            HoldScope::Account(a) => ("account", a.clone()),
            HoldScope::Query(q) => (
                "query",
                serde_json::to_string(q).map_err(|e| ArchiveError::Config(e.to_string()))?,
            ),
        };
        let (_w, mut tx) = self.begin_write().await?;
        let now = fmt_ts(Utc::now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO holds (scope, value, reason, placed_by, placed_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(kind)
        .bind(&value)
        .bind(reason)
        .bind(who)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await?;
        append_event(
            &mut tx,
            EventKind::Hold,
            who,
            serde_json::json!({ "hold": id, "scope": kind, "value": value, "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        drop(_w);
        self.sync_object_locks().await?;
        Ok(Hold {
            id,
            scope,
            reason: reason.into(),
            placed_by: who.into(),
            placed_at: parse_ts(&now)?,
            released_by: None,
            released_at: None,
        })
    }

    pub async fn release_hold(&self, id: i64, who: &str) -> Result<()> {
        let (_w, mut tx) = self.begin_write().await?;
        let r = sqlx::query("UPDATE holds SET released_by = $1, released_at = $2 WHERE id = $3 AND released_at IS NULL")
            .bind(who)
            .bind(fmt_ts(Utc::now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(ArchiveError::HoldNotFound(id));
        }
        append_event(
            &mut tx,
            EventKind::Release,
            who,
            serde_json::json!({ "hold": id }),
        )
        .await?;
        tx.commit().await?;
        drop(_w);
        self.sync_object_locks().await?;
        Ok(())
    }

    pub async fn holds(&self, include_released: bool) -> Result<Vec<Hold>> {
        let sql = if include_released {
            "SELECT id, scope, value, reason, placed_by, placed_at, released_by, released_at FROM holds ORDER BY id"
        } else {
            "SELECT id, scope, value, reason, placed_by, placed_at, released_by, released_at FROM holds WHERE released_at IS NULL ORDER BY id"
        };
        let rows: Vec<HoldRow> = sqlx::query_as(sql).fetch_all(&self.db).await?;
        rows.into_iter().map(hold_from_row).collect()
    }

    /// Purges every expired, unheld message now.
    pub async fn purge_expired(&self, who: &str, reason: &str) -> Result<PurgeReport> {
        self.purge_expired_as_of(Utc::now(), who, reason).await
    }

    /// Purge as if the time were `now` (for previews in tests and for reproducible runs;
    /// retention is still counted from the recorded ingest times).
    pub async fn purge_expired_as_of(
        &self,
        now: DateTime<Utc>,
        who: &str,
        reason: &str,
    ) -> Result<PurgeReport> {
        let mut report = PurgeReport {
            as_of: now,
            purged: Vec::new(),
            bytes_freed: 0,
            held: 0,
        };
        let Some(days) = self.retention().await?.retention_days else {
            return Ok(report);
        };
        let cutoff = fmt_ts(now - Duration::days(i64::from(days)));
        // Expired: no occurrence of the blob was ingested after the cutoff.
        let candidates: Vec<(String, i64)> = sqlx::query_as(
            "SELECT b.digest, b.size FROM blobs b WHERE b.state = 'stored' AND NOT EXISTS \
             (SELECT 1 FROM occurrences o WHERE o.digest = b.digest AND o.ingested_at > $1) ORDER BY b.digest",
        )
        .bind(&cutoff)
        .fetch_all(&self.db)
        .await?;
        if candidates.is_empty() {
            return Ok(report);
        }
        let held = self.held_digests().await?;
        if held.is_none() {
            report.held = candidates.len() as u64;
            return Ok(report);
        }
        let held = held.unwrap_or_default();
        for (d, size) in candidates {
            let digest: Digest = d.parse()?;
            if held.contains(&digest) {
                report.held += 1;
                continue;
            }
            self.purge_one(&digest, size, who, reason, &cutoff).await?;
            report.purged.push(digest);
            report.bytes_freed += size as u64;
        }
        self.search_index().await?.commit()?;
        Ok(report)
    }

    /// What the active holds cover: `None` means everything (an archive-wide hold).
    pub(crate) async fn held_digests(&self) -> Result<Option<HashSet<Digest>>> {
        let holds = self.holds(false).await?;
        if holds.iter().any(|h| h.scope == HoldScope::Archive) {
            return Ok(None);
        }
        let mut held: HashSet<Digest> = HashSet::new();
        for h in &holds {
            match &h.scope {
                HoldScope::Account(a) => {
                    let ds: Vec<String> =
                        sqlx::query_scalar("SELECT DISTINCT digest FROM occurrences WHERE account = $1")
                            .bind(a)
                            .fetch_all(&self.db)
                            .await?;
                    for d in ds {
                        held.insert(d.parse()?);
                    }
                }
                HoldScope::Query(q) => held.extend(self.search_digests(q).await?),
                HoldScope::Archive => {}
            }
        }
        Ok(Some(held))
    }

    /// Index first (tombstone committed), object second: a crash in between leaves an
    /// orphan object that verify reports and a later purge removes — never an index entry
    /// pointing at nothing.
    async fn purge_one(
        &self,
        digest: &Digest,
        size: i64,
        who: &str,
        reason: &str,
        cutoff: &str,
    ) -> Result<()> {
        {
            let (_w, mut tx) = self.begin_write().await?;
            // Re-check under the lock: a new occurrence may have arrived since the scan.
            let fresh: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM occurrences WHERE digest = $1 AND ingested_at > $2",
            )
            .bind(digest.to_hex())
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await?;
            if fresh > 0 {
                return Ok(());
            }
            let ev = append_event(
                &mut tx,
                EventKind::Purge,
                who,
                serde_json::json!({ "digest": digest.to_hex(), "size": size, "reason": reason }),
            )
            .await?;
            sqlx::query("UPDATE blobs SET state = 'purged' WHERE digest = $1")
                .bind(digest.to_hex())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM messages WHERE digest = $1")
                .bind(digest.to_hex())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tombstones (digest, size, reason, purged_by, purged_at, event_seq) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (digest) DO UPDATE SET reason = excluded.reason, purged_by = excluded.purged_by, \
                 purged_at = excluded.purged_at, event_seq = excluded.event_seq",
            )
            .bind(digest.to_hex())
            .bind(size)
            .bind(reason)
            .bind(who)
            .bind(&ev.at)
            .bind(ev.seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        self.backend.delete(digest).await?;
        self.search_index().await?.delete_digest(digest);
        Ok(())
    }
}
