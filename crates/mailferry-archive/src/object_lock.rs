//! S3 Object Lock per object: `PutObjectRetention` and `PutObjectLegalHold`, so the storage
//! itself refuses to delete or overwrite a blob before its retention date or while a legal
//! hold covers it (WORM), on top of the archive's own tamper evidence.
//!
//! Why our own requests: `object_store` 0.13 has no API for these sub-resources, and its
//! `PutOptions` cannot carry `x-amz-object-lock-*` headers (S3 requires every `x-amz-*`
//! header to be signed, so unsigned default headers would not do). It does export its SigV4
//! signer (`AwsAuthorizer`), its credential provider chain (env, web identity, IMDS…) and its
//! HTTP client, so we build the two small XML requests ourselves and reuse all of that —
//! rather than pulling in the AWS SDK's smithy runtime for two request kinds.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::Digest as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::index::rows::{fmt_ts, parse_ts};

/// The Object Lock retention mode to set on every stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still shorten or remove it.
    Governance,
    /// Nobody, not even the account root, can shorten or remove it before the date.
    Compliance,
}

impl LockMode {
    fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Signs and sends Object Lock requests for one bucket.
#[derive(Clone)]
pub(crate) struct ObjectLocker {
    s3: Arc<AmazonS3>,
    client: HttpClient,
    /// `https://bucket.s3.region.amazonaws.com` or `http://endpoint/bucket` (path style).
    base: url::Url,
    region: String,
    pub(crate) mode: LockMode,
}

impl std::fmt::Debug for ObjectLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLocker")
            .field("base", &self.base.as_str())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ObjectLocker {
    /// `builder` is the fully configured builder the blob store was built from, so both
    /// agree on bucket, endpoint, region, addressing style and credentials.
    pub(crate) fn new(builder: &AmazonS3Builder, s3: Arc<AmazonS3>, mode: LockMode) -> Result<Self> {
        let get = |k| builder.get_config_value(&k);
        let bucket = get(AmazonS3ConfigKey::Bucket)
            .ok_or_else(|| ArchiveError::Config("S3 bucket not set".into()))?;
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let allow_http = get(AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp))
            .is_some_and(|v| v == "true");
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let base = match get(AmazonS3ConfigKey::Endpoint) {
            Some(e) if virtual_hosted => e,
            Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let base = url::Url::parse(&base)
            .map_err(|e| ArchiveError::Config(format!("bad S3 endpoint {base:?}: {e}")))?;
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(allow_http))?;
        Ok(Self { s3, client, base, region, mode })
    }

    /// Sets the object's retention to `until` in the configured mode. S3 refuses to shorten
    /// a COMPLIANCE date, so callers only ever extend.
    pub(crate) async fn set_retention(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            self.mode.as_str(),
            until.format("%Y-%m-%dT%H:%M:%SZ")
        );
        self.put_subresource(key, "retention", body).await
    }

    pub(crate) async fn set_legal_hold(&self, key: &str, on: bool) -> Result<()> {
        let body = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        self.put_subresource(key, "legal-hold", body).await
    }

    fn url(&self, key: &str, query: Option<&str>) -> Result<url::Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ArchiveError::Config("S3 endpoint cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(key.split('/'));
        url.set_query(query);
        Ok(url)
    }

    async fn put_subresource(&self, key: &str, sub: &str, body: String) -> Result<()> {
        let url = self.url(key, Some(sub))?;
        // Content-MD5 is mandatory for both calls (S3 rejects them without it).
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
        let req = http::Request::builder()
            .method(http::Method::PUT)
            .uri(url.as_str())
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(HttpRequestBody::from(Bytes::from(body)))
            .map_err(|e| ArchiveError::Config(format!("bad object-lock request: {e}")))?;
        let resp = self.send(req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.into_body().bytes().await.unwrap_or_default();
        Err(ArchiveError::ObjectLock(format!(
            "PUT {key}?{sub} answered {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(500)])
        )))
    }

    async fn send(&self, mut req: object_store::client::HttpRequest) -> Result<object_store::client::HttpResponse> {
        let cred = self.s3.credentials().get_credential().await?;
        AwsAuthorizer::new(&cred, "s3", &self.region).authorize(&mut req, None);
        self.client
            .execute(req)
            .await
            .map_err(|e| ArchiveError::ObjectLock(format!("S3 request failed: {e}")))
    }

    /// The object's current lock headers (`HEAD`): for tests and operators' checks.
    pub(crate) async fn head(&self, key: &str) -> Result<ObjectLockState> {
        let req = http::Request::builder()
            .method(http::Method::HEAD)
            .uri(self.url(key, None)?.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| ArchiveError::Config(e.to_string()))?;
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(ArchiveError::ObjectLock(format!("HEAD {key} answered {}", resp.status())));
        }
        let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(ObjectLockState {
            mode: h("x-amz-object-lock-mode"),
            retain_until: h("x-amz-object-lock-retain-until-date"),
            legal_hold: h("x-amz-object-lock-legal-hold").is_some_and(|v| v.eq_ignore_ascii_case("ON")),
            version_id: h("x-amz-version-id"),
        })
    }
}

/// What S3 reports about one object's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockState {
    pub mode: Option<String>,
    pub retain_until: Option<String>,
    pub legal_hold: bool,
    pub version_id: Option<String>,
}

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
