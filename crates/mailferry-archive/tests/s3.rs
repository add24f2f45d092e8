//! The S3 backend against a real S3-compatible server: moto (`pip install 'moto[server]'`)
//! on loopback, started by the test. Skipped (with a message) when `moto_server` is absent.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mailferry_archive::{Archive, ArchiveConfig, BlobStoreConfig, Discrepancy, KeyRing, S3Config};

struct Moto(Child);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP request (moto does not check signatures), for bucket setup only.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn archive_on_s3_compatible_storage() {
    if Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipping: moto_server not installed (pip install 'moto[server]')");
        return;
    }
    let port = free_port();
    let _moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A versioned bucket with Object Lock enabled, as production would use.
    let r = http(
        port,
        "PUT",
        "/mf-archive",
        "x-amz-bucket-object-lock-enabled: true\r\n",
        "",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

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
