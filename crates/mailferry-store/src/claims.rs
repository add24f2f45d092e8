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

use crate::dialect::{lock, Dialect, Tx};
use crate::{PgStore, Result, RunId, SqliteStore, StoreError};

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

fn fenced(run: RunId) -> StoreError {
    StoreError::Fenced(format!(
        "run {run}'s claim on its source mailbox was taken over by a newer run; its ledger writes are refused"
    ))
}

type HolderColumns = (String, String, i64, String, String, i64);

fn held((holder, host, pid, since, expires_at, generation): HolderColumns) -> HeldBy {
    HeldBy { holder, host, pid: u32::try_from(pid).unwrap_or(0), since, expires_at, generation }
}

/// The claim statements of a store type that is its own [`Dialect`], as inherent methods its
/// [`Store`](crate::Store) implementation ([`crate::ledger`]) calls. Lease expiries are on
/// the database's clock; a released claim expires at [`Dialect::RELEASED`], before every
/// time.
macro_rules! impl_claims {
    ($store:ty) => {
        impl $store {
            pub(crate) async fn claim(
                &self,
                key: &str,
                who: &ClaimHolder,
                lease: Duration,
                take_over: Option<i64>,
            ) -> Result<ClaimAttempt> {
                let now = Self::NOW;
                let mut tx = self.pool.begin().await?;
                let generation: Option<i64> = sqlx::query_scalar(&format!(
                    "INSERT INTO source_claims (source_key, holder, holder_host, holder_pid, generation, claimed_at, expires_at)
                     VALUES ($1, $2, $3, $4, 1, {now}, {expiry})
                     ON CONFLICT (source_key) DO UPDATE SET holder = excluded.holder, holder_host = excluded.holder_host,
                         holder_pid = excluded.holder_pid, generation = source_claims.generation + 1,
                         claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
                     WHERE source_claims.expires_at < {now} OR source_claims.generation = $6
                     RETURNING generation",
                    expiry = Self::after("$5")
                ))
                .bind(key).bind(&who.holder).bind(&who.host).bind(i64::from(who.pid))
                .bind(lease.as_secs_f64()).bind(take_over.unwrap_or(-1))
                .fetch_optional(&mut *tx)
                .await?;
                let attempt = match generation {
                    Some(generation) => ClaimAttempt::Claimed(SourceClaim { source_key: key.to_owned(), generation }),
                    None => {
                        let sql = format!(
                            "SELECT holder, holder_host, holder_pid, {}, {}, generation FROM source_claims WHERE source_key = $1",
                            Self::text("claimed_at"),
                            Self::text("expires_at")
                        );
                        ClaimAttempt::Held(held(sqlx::query_as(&sql).bind(key).fetch_one(&mut *tx).await?))
                    }
                };
                tx.commit().await?;
                Ok(attempt)
            }

            pub(crate) async fn renew(&self, claim: &SourceClaim, lease: Duration) -> Result<bool> {
                let sql = format!(
                    "UPDATE source_claims SET expires_at = {} WHERE source_key = $2 AND generation = $3 AND expires_at <> {}",
                    Self::after("$1"),
                    Self::RELEASED
                );
                let query = sqlx::query(&sql).bind(lease.as_secs_f64()).bind(&claim.source_key).bind(claim.generation);
                let done = query.execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            pub(crate) async fn release(&self, claim: &SourceClaim) -> Result<()> {
                let sql = format!("UPDATE source_claims SET expires_at = {} WHERE source_key = $1 AND generation = $2", Self::RELEASED);
                sqlx::query(&sql).bind(&claim.source_key).bind(claim.generation).execute(&self.pool).await?;
                Ok(())
            }

            pub(crate) async fn fence(&self, run: RunId, claim: &SourceClaim) -> Result<()> {
                sqlx::query("UPDATE runs SET claim_key = $1, claim_generation = $2 WHERE id = $3")
                    .bind(&claim.source_key).bind(claim.generation).bind(run)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            /// Inside a write transaction, after its writes: refuse the transaction when the
            /// run's claim generation is no longer current. On PostgreSQL `FOR SHARE` holds
            /// the claim row until the transaction ends, so a takeover (which updates that
            /// row) waits for our commit and then sees our writes; SQLite holds the write lock
            /// from the first write on, so no claim can change before the commit.
            pub(crate) async fn check_fence(tx: &mut Tx<Self>, run: RunId) -> Result<()> {
                let fence: Option<(Option<String>, Option<i64>)> =
                    sqlx::query_as("SELECT claim_key, claim_generation FROM runs WHERE id = $1")
                        .bind(run)
                        .fetch_optional(&mut **tx)
                        .await?;
                let Some((Some(key), Some(generation))) = fence else { return Ok(()) };
                let sql = format!("SELECT generation FROM source_claims WHERE source_key = $1{}", lock::<Self>(" FOR SHARE"));
                let current: Option<i64> = sqlx::query_scalar(&sql).bind(&key).fetch_optional(&mut **tx).await?;
                if current != Some(generation) {
                    return Err(fenced(run));
                }
                Ok(())
            }
        }
    };
}

impl_claims!(PgStore);
impl_claims!(SqliteStore);
