//! WORM on S3: each blob's Object Lock (retention date, legal hold) kept in step with the
//! archive's retention policy and holds as the index records them. The S3 requests are
//! `object_lock.rs`; without the `aws` feature there is no Object Lock and these are no-ops.

#[cfg(feature = "aws")]
use chrono::{DateTime, Utc};

use crate::archive::Archive;
use crate::digest::Digest;
use crate::error::Result;
#[cfg(feature = "aws")]
use crate::index::rows::{fmt_ts, parse_ts};
#[cfg(feature = "aws")]
use crate::object_lock::{ObjectLockState, ObjectLocker};

#[cfg(feature = "aws")]
impl Archive {
    /// Brings one blob's Object Lock up to date with the index: retention until the latest
    /// ingest of any of its occurrences plus the retention period (only ever extended), and
    /// a legal hold while an archive-wide or account hold covers it. Idempotent and cheap
    /// when nothing changed (one indexed read), so `put` calls it on every arrival — also on
    /// reruns, which repairs a lock call that failed after the index commit.
    pub(crate) async fn lock_blob(&self, digest: &Digest) -> Result<()> {
        let Some(locker) = &self.backend.locker else {
            return Ok(());
        };
        let key = self.backend.object_key(digest);
        let (retain_until, legal_hold, latest): (Option<String>, i64, Option<String>) = sqlx::query_as(
            "SELECT b.retain_until, b.legal_hold, \
             (SELECT MAX(o.ingested_at) FROM occurrences o WHERE o.digest = b.digest) \
             FROM blobs b WHERE b.digest = $1 AND b.state = 'stored'",
        )
        .bind(digest.to_hex())
        .fetch_optional(&self.db)
        .await?
        .unwrap_or((None, 0, None));
        if let (Some(days), Some(latest)) = (self.retention().await?.retention_days, latest) {
            let want = parse_ts(&latest)? + chrono::Duration::days(i64::from(days));
            let have = retain_until.as_deref().map(parse_ts).transpose()?;
            if have.is_none_or(|h| h < want) {
                if let Err(e) = locker.set_retention(&key, want).await {
                    // Two workers ingesting the same bytes race: the later date may already
                    // be on the object, and COMPLIANCE refuses to shorten it. That is success.
                    let on_object = locker.head(&key).await.ok().and_then(|st| st.retain_until);
                    let covered = on_object
                        .and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
                        .is_some_and(|d| d.with_timezone(&Utc) >= want - chrono::Duration::seconds(1));
                    if !covered {
                        return Err(e);
                    }
                }
                sqlx::query("UPDATE blobs SET retain_until = $1 WHERE digest = $2")
                    .bind(fmt_ts(want))
                    .bind(digest.to_hex())
                    .execute(&self.db)
                    .await?;
            }
        }
        if legal_hold == 0 && self.covered_by_hold(digest).await? {
            self.set_hold_flag(locker, digest, true).await?;
        }
        Ok(())
    }

    async fn covered_by_hold(&self, digest: &Digest) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM holds h WHERE h.released_at IS NULL AND (h.scope = 'archive' \
             OR (h.scope = 'account' AND EXISTS (SELECT 1 FROM occurrences o \
                 WHERE o.digest = $1 AND o.account = h.value)))",
        )
        .bind(digest.to_hex())
        .fetch_one(&self.db)
        .await?;
        Ok(n > 0)
    }

    async fn set_hold_flag(&self, locker: &ObjectLocker, digest: &Digest, on: bool) -> Result<()> {
        locker
            .set_legal_hold(&self.backend.object_key(digest), on)
            .await?;
        sqlx::query("UPDATE blobs SET legal_hold = $1 WHERE digest = $2")
            .bind(i64::from(on))
            .bind(digest.to_hex())
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Re-applies Object Lock to every stored blob after a hold or the retention policy
    /// changed: legal hold ON exactly for what the active holds cover (query holds
    /// included), retention extended to the current policy. Returns the objects changed.
    pub(crate) async fn sync_object_locks(&self) -> Result<u64> {
        let Some(locker) = &self.backend.locker else {
            return Ok(0);
        };
        let held = self.held_digests().await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT digest, legal_hold FROM blobs WHERE state = 'stored' ORDER BY digest")
                .fetch_all(&self.db)
                .await?;
        let mut changed = 0;
        for (d, flag) in rows {
            let digest: Digest = d.parse()?;
            let want = held.as_ref().is_none_or(|h| h.contains(&digest));
            if want != (flag != 0) {
                self.set_hold_flag(locker, &digest, want).await?;
                changed += 1;
            }
            self.lock_blob(&digest).await?;
        }
        Ok(changed)
    }

    /// What S3 says about one blob's lock (`None` without Object Lock configured).
    pub async fn object_lock_state(&self, digest: &Digest) -> Result<Option<ObjectLockState>> {
        match &self.backend.locker {
            Some(l) => Ok(Some(l.head(&self.backend.object_key(digest)).await?)),
            None => Ok(None),
        }
    }
}

/// Without S3 support there is no Object Lock to apply.
#[cfg(not(feature = "aws"))]
impl Archive {
    pub(crate) async fn lock_blob(&self, _digest: &Digest) -> Result<()> {
        Ok(())
    }
    pub(crate) async fn sync_object_locks(&self) -> Result<u64> {
        Ok(0)
    }
}
