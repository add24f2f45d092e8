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
//!
//! Only the S3 side lives here; when to lock what is decided from the index in `worm.rs`.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::Digest as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;
use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};

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
