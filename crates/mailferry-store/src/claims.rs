//! One run per source mailbox at a time (DESIGN.md §2 invariant 8): a run holds a claim on
//! its source mailbox (`user@host:port`) with a lease and a fencing token (the claim's
//! generation, raised by every claim). A run is bound to the generation it claimed
//! ([`Store::fence_run`](crate::Store::fence_run)); every ledger write of that run checks,
//! in its own transaction, that the generation is still current, so the writes of a run
//! whose claim was taken over are refused instead of racing the new holder's.
//!
//! The CLI and the service use the same table: a `mailferry migrate` beside a worker on one
//! mailbox is refused like two workers are.

use std::time::Duration;

use chrono::Utc;
use sqlx::{PgConnection, SqliteConnection};

use crate::common::fmt_time;
use crate::{Result, RunId, StoreError};

/// Who asks for a claim: shown to whoever finds the mailbox busy; `host` and `pid` let a
/// run on the same host take over a claim whose process is gone (kill -9) at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHolder {
    /// e.g. `mailferry migrate (pid 4242 on mail1)` or `worker mail1-7-1a2b3c4d#3 (job 17)`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
}

/// A held claim: the source mailbox and the fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceClaim {
    pub source_key: String,
    pub generation: i64,
}

/// The current holder of a busy mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBy {
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339 UTC.
    pub since: String,
    pub expires_at: String,
    pub generation: i64,
}

impl std::fmt::Display for HeldBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, since {} (its claim expires at {} unless renewed)", self.holder, self.since, self.expires_at)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAttempt {
    Claimed(SourceClaim),
    Held(HeldBy),
}

fn later(lease: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

fn fenced(run: RunId) -> StoreError {
    StoreError::Fenced(format!(
        "run {run}'s claim on its source mailbox was taken over by a newer run; its ledger writes are refused"
    ))
}

fn held(r: (String, String, i64, String, String, i64)) -> HeldBy {
    let (holder, host, pid, since, expires_at, generation) = r;
    HeldBy { holder, host, pid: u32::try_from(pid).unwrap_or(0), since, expires_at, generation }
}

// ---- SQLite (times are RFC 3339 text; '' sorts before every time and marks a release) ----

pub(crate) async fn sqlite_claim(
    c: &mut SqliteConnection,
    key: &str,
    who: &ClaimHolder,
    lease: Duration,
    take_over: Option<i64>,
) -> Result<ClaimAttempt> {
    let now = fmt_time(Utc::now());
    let generation: Option<i64> = sqlx::query_scalar(
        "INSERT INTO source_claims (source_key, holder, holder_host, holder_pid, generation, claimed_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)
         ON CONFLICT (source_key) DO UPDATE SET holder = excluded.holder, holder_host = excluded.holder_host,
             holder_pid = excluded.holder_pid, generation = source_claims.generation + 1,
             claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
         WHERE source_claims.expires_at < ?5 OR source_claims.generation = ?7
         RETURNING generation",
    )
    .bind(key)
    .bind(&who.holder)
    .bind(&who.host)
    .bind(i64::from(who.pid))
    .bind(&now)
    .bind(fmt_time(later(lease)))
    .bind(take_over.unwrap_or(-1))
    .fetch_optional(&mut *c)
    .await?;
    if let Some(generation) = generation {
        return Ok(ClaimAttempt::Claimed(SourceClaim { source_key: key.to_owned(), generation }));
    }
    let row: (String, String, i64, String, String, i64) = sqlx::query_as(
        "SELECT holder, holder_host, holder_pid, claimed_at, expires_at, generation FROM source_claims WHERE source_key = ?",
    )
    .bind(key)
    .fetch_one(&mut *c)
    .await?;
    Ok(ClaimAttempt::Held(held(row)))
}

pub(crate) async fn sqlite_renew(c: &mut SqliteConnection, claim: &SourceClaim, lease: Duration) -> Result<bool> {
    let n = sqlx::query("UPDATE source_claims SET expires_at = ? WHERE source_key = ? AND generation = ? AND expires_at <> ''")
        .bind(fmt_time(later(lease)))
        .bind(&claim.source_key)
        .bind(claim.generation)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(crate) async fn sqlite_release(c: &mut SqliteConnection, claim: &SourceClaim) -> Result<()> {
    sqlx::query("UPDATE source_claims SET expires_at = '' WHERE source_key = ? AND generation = ?")
        .bind(&claim.source_key)
        .bind(claim.generation)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(crate) async fn sqlite_fence_run(c: &mut SqliteConnection, run: RunId, claim: &SourceClaim) -> Result<()> {
    sqlx::query("UPDATE runs SET claim_key = ?, claim_generation = ? WHERE id = ?")
        .bind(&claim.source_key)
        .bind(claim.generation)
        .bind(run)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Inside a write transaction, after its writes (SQLite holds the write lock from the first
/// write on, so no claim can change between this check and the commit): refuse the
/// transaction when the run's claim generation is no longer current.
pub(crate) async fn sqlite_check_fence(c: &mut SqliteConnection, run: RunId) -> Result<()> {
    let current: Option<bool> = sqlx::query_scalar(
        "SELECT r.claim_generation IS NULL
                OR EXISTS (SELECT 1 FROM source_claims c WHERE c.source_key = r.claim_key AND c.generation = r.claim_generation)
         FROM runs r WHERE r.id = ?",
    )
    .bind(run)
    .fetch_optional(&mut *c)
    .await?;
    if current == Some(false) {
        return Err(fenced(run));
    }
    Ok(())
}

// ---- PostgreSQL ----

pub(crate) async fn pg_claim(
    c: &mut PgConnection,
    key: &str,
    who: &ClaimHolder,
    lease: Duration,
    take_over: Option<i64>,
) -> Result<ClaimAttempt> {
    let generation: Option<i64> = sqlx::query_scalar(
        "INSERT INTO source_claims (source_key, holder, holder_host, holder_pid, generation, claimed_at, expires_at)
         VALUES ($1, $2, $3, $4, 1, now(), $5)
         ON CONFLICT (source_key) DO UPDATE SET holder = excluded.holder, holder_host = excluded.holder_host,
             holder_pid = excluded.holder_pid, generation = source_claims.generation + 1,
             claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
         WHERE source_claims.expires_at < now() OR source_claims.generation = $6
         RETURNING generation",
    )
    .bind(key)
    .bind(&who.holder)
    .bind(&who.host)
    .bind(i64::from(who.pid))
    .bind(later(lease))
    .bind(take_over.unwrap_or(-1))
    .fetch_optional(&mut *c)
    .await?;
    if let Some(generation) = generation {
        return Ok(ClaimAttempt::Claimed(SourceClaim { source_key: key.to_owned(), generation }));
    }
    let row: (String, String, i64, chrono::DateTime<Utc>, chrono::DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT holder, holder_host, holder_pid, claimed_at, expires_at, generation FROM source_claims WHERE source_key = $1",
    )
    .bind(key)
    .fetch_one(&mut *c)
    .await?;
    let (holder, host, pid, since, expires, generation) = row;
    Ok(ClaimAttempt::Held(held((holder, host, pid, fmt_time(since), fmt_time(expires), generation))))
}

pub(crate) async fn pg_renew(c: &mut PgConnection, claim: &SourceClaim, lease: Duration) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE source_claims SET expires_at = $1 WHERE source_key = $2 AND generation = $3 AND expires_at <> '-infinity'",
    )
    .bind(later(lease))
    .bind(&claim.source_key)
    .bind(claim.generation)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(crate) async fn pg_release(c: &mut PgConnection, claim: &SourceClaim) -> Result<()> {
    sqlx::query("UPDATE source_claims SET expires_at = '-infinity' WHERE source_key = $1 AND generation = $2")
        .bind(&claim.source_key)
        .bind(claim.generation)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(crate) async fn pg_fence_run(c: &mut PgConnection, run: RunId, claim: &SourceClaim) -> Result<()> {
    sqlx::query("UPDATE runs SET claim_key = $1, claim_generation = $2 WHERE id = $3")
        .bind(&claim.source_key)
        .bind(claim.generation)
        .bind(run)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Inside a write transaction: refuse it when the run's claim generation is no longer
/// current. `FOR SHARE` holds the claim row until this transaction ends, so a takeover
/// (which updates that row) waits for our commit and then sees our writes.
pub(crate) async fn pg_check_fence(c: &mut PgConnection, run: RunId) -> Result<()> {
    let fence: Option<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT claim_key, claim_generation FROM runs WHERE id = $1").bind(run).fetch_optional(&mut *c).await?;
    let Some((Some(key), Some(generation))) = fence else { return Ok(()) };
    let current: Option<i64> = sqlx::query_scalar("SELECT generation FROM source_claims WHERE source_key = $1 FOR SHARE")
        .bind(&key)
        .fetch_optional(&mut *c)
        .await?;
    if current != Some(generation) {
        return Err(fenced(run));
    }
    Ok(())
}
