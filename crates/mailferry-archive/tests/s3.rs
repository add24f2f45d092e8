//! The S3 backend against a real S3-compatible server: moto (`pip install 'moto[server]'`)
//! on loopback, started by the test (`scripts/test` installs it; the tests fail without it).

mod common;

use common::*;
use mailferry_tests::Moto;
use mailferry_archive::{Archive, ArchiveConfig, BlobStoreConfig, Discrepancy, KeyRing, LockMode, S3Config};

#[tokio::test]
async fn archive_on_s3_compatible_storage() {
    let moto = Moto::start();
    let port = moto.port;
    // A versioned bucket with Object Lock enabled, as production would use.
    moto.create_locked_bucket("mf-archive");

    // Credentials come from the environment, as in production (moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Config {
        bucket: "mf-archive".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        prefix: Some("tenant-a/legal".into()),
        allow_http: true,
        path_style: true,
        object_lock: None,
    };
    let keys = KeyRing::none()
        .with_key("k1", &[5u8; 32])
        .unwrap()
        .activate("k1")
        .unwrap();
    let a = Archive::open(
        ArchiveConfig::local("legal", dir.path())
            .with_blobs(BlobStoreConfig::S3(s3))
            .with_keys(keys),
    )
    .await
    .unwrap();
    let m = msg("a@x", "b@x", "On S3", "stored remotely");
    let r1 = a.put(m.clone(), occ("bob", "1")).await.unwrap();
    let r2 = a.put(m.clone(), occ("carol", "1")).await.unwrap();
    assert!(r1.stored_new && !r2.stored_new);
    // A message larger than object_store's multipart threshold goes up in parts.
    let mut big = msg("a@x", "b@x", "Big on S3", "");
    let mut x: u64 = 1;
    while big.len() < 12 * 1024 * 1024 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        big.extend_from_slice(format!("{x:016x}\r\n").as_bytes());
    }
    let rb = a.put(big.clone(), occ("bob", "2")).await.unwrap();
    assert_eq!(&a.get(&r1.digest).await.unwrap()[..], &m[..]);
    assert_eq!(&a.get(&rb.digest).await.unwrap()[..], &big[..]);
    assert!(!dir.path().join("blobs").exists());

    // The object is where the layout says (checked with a separate, signed client).
    use object_store::ObjectStoreExt;
    let client = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("mf-archive")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()
        .unwrap();
    let h = r1.digest.to_hex();
    let key = object_store::path::Path::from(format!(
        "tenant-a/legal/blobs/{}/{}/{h}",
        &h[..2],
        &h[2..4]
    ));
    let head = client.head(&key).await.unwrap();
    assert!(head.size > 0 && head.size < m.len() as u64 + 200);

    let rep = a.verify("t").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    assert_eq!(rep.blobs_checked, 2);
    // Remove an object behind the archive's back: verify reports it missing.
    client.delete(&key).await.unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(
        rep.discrepancies
            .iter()
            .any(|d| matches!(d, Discrepancy::Blob { digest, .. } if *digest == r1.digest)),
        "{:?}",
        rep.discrepancies
    );
}

/// A SigV4-signed request (moto refuses unsigned deletes): status, version id, body.
async fn signed(port: u16, method: &str, path: &str, body: &'static str) -> (u16, Option<String>, String) {
    use object_store::aws::{AwsAuthorizer, AwsCredential};
    use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
    let cred = AwsCredential { key_id: "test".into(), secret_key: "test".into(), token: None };
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .body(HttpRequestBody::from(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    AwsAuthorizer::new(&cred, "s3", "us-east-1").authorize(&mut req, None);
    let client = ReqwestConnector::default()
        .connect(&object_store::ClientOptions::new().with_allow_http(true))
        .unwrap();
    let resp = client.execute(req).await.unwrap();
    let status = resp.status().as_u16();
    let version = resp.headers().get("x-amz-version-id").map(|v| v.to_str().unwrap().to_string());
    let text = resp.into_body().bytes().await.unwrap();
    (status, version, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn object_lock_makes_s3_refuse_deletes_until_retention_ends_and_while_held() {
    let moto = Moto::start();
    let port = moto.port;
    moto.create_locked_bucket("mf-worm");
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Config {
        bucket: "mf-worm".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        prefix: Some("worm".into()),
        allow_http: true,
        path_style: true,
        object_lock: Some(LockMode::Compliance),
    };
    let a = Archive::open(ArchiveConfig::local("worm", dir.path()).with_blobs(BlobStoreConfig::S3(s3)))
        .await
        .unwrap();
    a.set_retention(Some(30), "officer").await.unwrap();
    let kept = a.put(msg("a@x", "b@x", "Kept", "seven years"), occ("bob", "1")).await.unwrap();
    let other = a.put(msg("a@x", "c@x", "Other", "other"), occ("carol", "1")).await.unwrap();
    let path = |d: &mailferry_archive::Digest| {
        let h = d.to_hex();
        format!("/mf-worm/worm/blobs/{}/{}/{h}", &h[..2], &h[2..4])
    };

    // Retention: S3 reports COMPLIANCE until ingest + 30 days, and refuses to delete the version.
    let st = a.object_lock_state(&kept.digest).await.unwrap().unwrap();
    assert_eq!(st.mode.as_deref(), Some("COMPLIANCE"), "{st:?}");
    let until = chrono::DateTime::parse_from_rfc3339(st.retain_until.as_deref().unwrap()).unwrap();
    let days = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "retain until {until} is not ingest + 30 days");
    assert!(!st.legal_hold);
    let version = st.version_id.clone().expect("versioned bucket");
    let (status, _, body) =
        signed(port, "DELETE", &format!("{}?versionId={version}", path(&kept.digest)), "").await;
    assert!(status == 403 && body.contains("AccessDenied"), "S3 deleted a locked object version: {status} {body}");
    // Control: the same request deletes an object version nobody locked.
    let (status, v, _) = signed(port, "PUT", "/mf-worm/unlocked/x", "plain").await;
    assert_eq!(status, 200);
    let (status, _, body) = signed(port, "DELETE", &format!("/mf-worm/unlocked/x?versionId={}", v.unwrap()), "").await;
    assert_eq!(status, 204, "{body}");

    // Legal hold on one account: ON for its messages only, OFF again once released.
    let hold = a
        .place_hold(mailferry_archive::HoldScope::Account("bob".into()), "litigation", "officer")
        .await
        .unwrap();
    assert!(a.object_lock_state(&kept.digest).await.unwrap().unwrap().legal_hold);
    assert!(!a.object_lock_state(&other.digest).await.unwrap().unwrap().legal_hold);
    // A new arrival in the held account is held from its first moment.
    let late = a.put(msg("a@x", "b@x", "Late", "after the hold"), occ("bob", "2")).await.unwrap();
    assert!(a.object_lock_state(&late.digest).await.unwrap().unwrap().legal_hold);
    a.release_hold(hold.id, "officer").await.unwrap();
    assert!(!a.object_lock_state(&kept.digest).await.unwrap().unwrap().legal_hold);
    assert!(!a.object_lock_state(&late.digest).await.unwrap().unwrap().legal_hold);

    // A longer policy extends every object's date; a rerun of the same UIDL changes nothing.
    a.set_retention(Some(60), "officer").await.unwrap();
    let st = a.object_lock_state(&other.digest).await.unwrap().unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(st.retain_until.as_deref().unwrap()).unwrap();
    assert!((until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days() >= 59, "{st:?}");
    let again = a.put(msg("a@x", "b@x", "Kept", "seven years"), occ("bob", "1")).await.unwrap();
    assert!(!again.occurrence_new);
    assert!(a.verify("t").await.unwrap().ok());
}

/// An arrival recorded before its Object Lock was applied (the lock call failed, or the
/// process died, after the index commit) gets the lock from `ensure_locked`, which the
/// engine calls before it counts a found arrival as copied and lets the source DELE it.
#[tokio::test]
async fn ensure_locked_repairs_an_arrival_recorded_without_its_lock() {
    let moto = Moto::start();
    moto.create_locked_bucket("mf-repair");
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let dir = tempfile::tempdir().unwrap();
    let s3 = |object_lock| S3Config {
        bucket: "mf-repair".into(),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        prefix: Some("repair".into()),
        allow_http: true,
        path_style: true,
        object_lock,
    };
    // First life: the lock never happened (stands in for a failed PutObjectRetention).
    let a = Archive::open(ArchiveConfig::local("repair", dir.path()).with_blobs(BlobStoreConfig::S3(s3(None))))
        .await
        .unwrap();
    a.set_retention(Some(10), "officer").await.unwrap();
    let r = a.put(msg("a@x", "b@x", "Unlocked", "so far"), occ("bob", "1")).await.unwrap();
    a.close().await.unwrap();

    let a = Archive::open(
        ArchiveConfig::local("repair", dir.path()).with_blobs(BlobStoreConfig::S3(s3(Some(LockMode::Compliance)))),
    )
    .await
    .unwrap();
    let before = a.object_lock_state(&r.digest).await.unwrap().unwrap();
    assert_eq!(before.retain_until, None, "{before:?}");
    a.ensure_locked(&r.digest).await.unwrap();
    let after = a.object_lock_state(&r.digest).await.unwrap().unwrap();
    assert_eq!(after.mode.as_deref(), Some("COMPLIANCE"), "{after:?}");
    assert!(after.retain_until.is_some(), "{after:?}");
}
