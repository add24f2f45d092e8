//! Retention and legal hold. The retention clock starts at ingest (Date headers are
//! forgeable). A purge removes a blob only when *every* occurrence of it has expired and no
//! active hold covers it, and leaves a tombstone. `serve` and `worker` run it periodically
//! ([`Archive::purge_if_due`], one process at a time under a lease); `mailferry archive
//! purge` runs it by hand, or only plans it ([`Archive::purge_plan`]).

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

/// One expired message: what a purge removes, or keeps because holds cover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeItem {
    pub digest: Digest,
    pub size: u64,
    /// The accounts it arrived from (each once).
    pub accounts: Vec<String>,
    /// Its latest arrival, where the retention clock starts (`None`: no occurrence left).
    pub last_ingested_at: Option<DateTime<Utc>>,
    /// Why it expired, in words.
    pub why: String,
    /// The active holds covering it; empty when it goes.
    pub held_by: Vec<i64>,
}

/// What a purge at `as_of` would do (see [`Archive::purge_plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgePlan {
    pub archive: String,
    pub as_of: DateTime<Utc>,
    /// `None`: the archive keeps everything forever, nothing expires.
    pub retention_days: Option<u32>,
    /// Messages last ingested at or before this have expired.
    pub cutoff: Option<DateTime<Utc>>,
    /// Expired and unheld: these go.
    pub purge: Vec<PurgeItem>,
    /// Expired but kept under hold.
    pub held: Vec<PurgeItem>,
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
        let plan = self.purge_plan_as_of(now).await?;
        self.purge_planned(&plan, who, reason).await
    }

    /// What a purge now removes and what it keeps under hold, changing nothing (the dry
    /// run; works on a read-only handle).
    pub async fn purge_plan(&self) -> Result<PurgePlan> {
        self.purge_plan_as_of(Utc::now()).await
    }

    /// As [`purge_plan`](Self::purge_plan), as if the time were `now`.
    pub async fn purge_plan_as_of(&self, now: DateTime<Utc>) -> Result<PurgePlan> {
        let mut plan = PurgePlan {
            archive: self.name.clone(),
            as_of: now,
            retention_days: None,
            cutoff: None,
            purge: Vec::new(),
            held: Vec::new(),
        };
        let Some(days) = self.retention().await?.retention_days else {
            return Ok(plan);
        };
        let cutoff = now - Duration::days(i64::from(days));
        plan.retention_days = Some(days);
        plan.cutoff = Some(cutoff);
        // Expired: no occurrence of the blob was ingested after the cutoff. One row per
        // occurrence of each (accounts and the latest arrival are reported).
        let rows: Vec<(String, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT b.digest, b.size, o.account, o.ingested_at FROM blobs b \
             LEFT JOIN occurrences o ON o.digest = b.digest \
             WHERE b.state = 'stored' AND NOT EXISTS \
             (SELECT 1 FROM occurrences f WHERE f.digest = b.digest AND f.ingested_at > $1) \
             ORDER BY b.digest, o.ingested_at",
        )
        .bind(fmt_ts(cutoff))
        .fetch_all(&self.db)
        .await?;
        if rows.is_empty() {
            return Ok(plan);
        }
        let cover = self.hold_cover().await?;
        let mut items: Vec<PurgeItem> = Vec::new();
        for (digest, size, account, at) in rows {
            let digest: Digest = digest.parse()?;
            let at = at.as_deref().map(parse_ts).transpose()?;
            match items.last_mut().filter(|i| i.digest == digest) {
                Some(item) => {
                    item.last_ingested_at = item.last_ingested_at.max(at);
                    if let Some(a) = account.filter(|a| !item.accounts.contains(a)) {
                        item.accounts.push(a);
                    }
                }
                None => items.push(PurgeItem {
                    digest,
                    size: size as u64,
                    accounts: account.into_iter().collect(),
                    last_ingested_at: at,
                    why: String::new(),
                    held_by: cover
                        .iter()
                        .filter(|(_, c)| c.as_ref().is_none_or(|set| set.contains(&digest)))
                        .map(|(id, _)| *id)
                        .collect(),
                }),
            }
        }
        for mut item in items {
            item.why = match item.last_ingested_at {
                Some(at) => format!(
                    "retention of {days} days: last ingested {}, before {}",
                    fmt_ts(at),
                    fmt_ts(cutoff)
                ),
                None => format!("retention of {days} days: no occurrence left"),
            };
            if item.held_by.is_empty() {
                plan.purge.push(item);
            } else {
                plan.held.push(item);
            }
        }
        Ok(plan)
    }

    /// Purges what `plan` lists to go (each re-checked under the write lock: a message that
    /// arrived again since, or is already purged, stays as it is). Needs the search-index
    /// writer: refused on a read-only handle.
    pub async fn purge_planned(&self, plan: &PurgePlan, who: &str, reason: &str) -> Result<PurgeReport> {
        let mut report = PurgeReport {
            as_of: plan.as_of,
            purged: Vec::new(),
            bytes_freed: 0,
            held: plan.held.len() as u64,
        };
        let Some(cutoff) = plan.cutoff.filter(|_| !plan.purge.is_empty()) else {
            return Ok(report);
        };
        if self.read_only {
            return Err(ArchiveError::Config(format!(
                "archive {} is open read-only; purging needs its search-index writer",
                self.name
            )));
        }
        let cutoff = fmt_ts(cutoff);
        for item in &plan.purge {
            if self.purge_one(&item.digest, item.size as i64, who, reason, &cutoff).await? {
                report.purged.push(item.digest);
                report.bytes_freed += item.size;
            }
        }
        if self.shared.is_none() {
            self.search_index().await?.commit()?;
        }
        Ok(report)
    }

    /// Each active hold and what it covers: `None` for everything (an archive-wide hold).
    async fn hold_cover(&self) -> Result<Vec<(i64, Option<HashSet<Digest>>)>> {
        let mut out = Vec::new();
        for h in self.holds(false).await? {
            let cover = match &h.scope {
                HoldScope::Archive => None,
                HoldScope::Account(a) => {
                    let ds: Vec<String> =
                        sqlx::query_scalar("SELECT DISTINCT digest FROM occurrences WHERE account = $1")
                            .bind(a)
                            .fetch_all(&self.db)
                            .await?;
                    Some(ds.iter().map(|d| d.parse()).collect::<Result<HashSet<Digest>>>()?)
                }
                HoldScope::Query(q) => Some(self.search_digests(q).await?.into_iter().collect()),
            };
            out.push((h.id, cover));
        }
        Ok(out)
    }

    /// What the active holds cover: `None` means everything (an archive-wide hold).
    pub(crate) async fn held_digests(&self) -> Result<Option<HashSet<Digest>>> {
        let mut held = HashSet::new();
        for (_, cover) in self.hold_cover().await? {
            match cover {
                None => return Ok(None),
                Some(set) => held.extend(set),
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
    ) -> Result<bool> {
        {
            let (_w, mut tx) = self.begin_write().await?;
            // Re-check under the lock: a new occurrence may have arrived since the scan, or
            // another process purged it already.
            let fresh: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM occurrences WHERE digest = $1 AND ingested_at > $2",
            )
            .bind(digest.to_hex())
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await?;
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM blobs WHERE digest = $1")
                .bind(digest.to_hex())
                .fetch_optional(&mut *tx)
                .await?;
            if fresh > 0 || state.as_deref() != Some("stored") {
                return Ok(false);
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
        // A shared archive's searching processes drop it when they catch up from the log.
        if self.shared.is_none() {
            self.search_index().await?.delete_digest(digest);
        }
        Ok(true)
    }
}

/// How long a process holds an archive's purge lease. A purge outliving it may overlap the
/// next holder's, which is harmless: each message is re-checked under the write lock.
const PURGE_LEASE_MINUTES: i64 = 30;

impl Archive {
    /// The periodic purge that `serve` and `worker` run for every archive: purges what has
    /// expired, provided no other process holds this archive's purge lease and the last
    /// purge (by any process) finished at least `interval` ago. The lease is a row in the
    /// archive's own index (table `upkeep`), so it works alike for a local SQLite index and
    /// a PostgreSQL one shared by machines, and a process that dies holding it only delays
    /// the next purge until it expires. `Ok(None)`: not this process's turn.
    pub async fn purge_if_due(
        &self,
        holder: &str,
        interval: std::time::Duration,
    ) -> Result<Option<PurgeReport>> {
        let now = Utc::now();
        let interval = Duration::from_std(interval).unwrap_or(Duration::days(365));
        let claimed = sqlx::query(
            "INSERT INTO upkeep (task, holder, lease_until) VALUES ('purge', $1, $2) \
             ON CONFLICT (task) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE (upkeep.lease_until IS NULL OR upkeep.lease_until < $3) \
             AND (upkeep.last_finished_at IS NULL OR upkeep.last_finished_at <= $4)",
        )
        .bind(holder)
        .bind(fmt_ts(now + Duration::minutes(PURGE_LEASE_MINUTES)))
        .bind(fmt_ts(now))
        .bind(fmt_ts(now - interval))
        .execute(&self.db)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(None);
        }
        let result = async {
            let reason = match self.retention().await?.retention_days {
                Some(days) => format!("retention of {days} days expired"),
                None => String::new(),
            };
            self.purge_expired("retention", &reason).await
        }
        .await;
        // A failed purge is tried again at the next tick, not an interval later.
        let finished = result.is_ok().then(|| fmt_ts(Utc::now()));
        sqlx::query(
            "UPDATE upkeep SET holder = NULL, lease_until = NULL, \
             last_finished_at = COALESCE($1, last_finished_at) WHERE task = 'purge' AND holder = $2",
        )
        .bind(finished)
        .bind(holder)
        .execute(&self.db)
        .await?;
        result.map(Some)
    }
}
