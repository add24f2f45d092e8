//! `[server.tls]`: the real `mailferry serve` answers /healthz over HTTPS with the configured
//! certificate, and SIGHUP swaps in a replaced certificate without dropping the listener or
//! open connections; a broken replacement is logged and the current certificate kept.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn generate() -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    Pair { cert_pem: ck.cert.pem(), key_pem: ck.signing_key.serialize_pem(), der: ck.cert.der().clone() }
}

fn install(pair: &Pair, dir: &Path) {
    // Written beside and renamed, as a certificate manager does.
    for (name, text) in [("cert.pem", &pair.cert_pem), ("key.pem", &pair.key_pem)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// The binary without the test process's MAILFERRY_ and DATABASE_URL variables.
fn mailferry() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailferry"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILFERRY_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd
}

struct Serve {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Serve {
    let config = dir.join("mailferry.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n[log]\nformat = \"json\"\nfilter = \"info\"\n",
            dir.join("data"),
            dir.join("cert.pem"),
            dir.join("key.pem")
        ),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let mut child = mailferry()
        .args(["serve", "--no-workers", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("mailferry listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}; log: {}", std::fs::read_to_string(&log).unwrap_or_default()))
        .to_owned();
    Serve { child, addr, log }
}

/// A TLS connection trusting exactly `trusted`, or the handshake error.
async fn connect(addr: &str, trusted: &CertificateDer<'static>) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

fn presented(conn: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    conn.get_ref().1.peer_certificates().expect("a server certificate")[0].clone().into_owned()
}

/// GET /healthz on a kept-alive connection; the status code.
async fn healthz(conn: &mut TlsStream<TcpStream>) -> u16 {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Bounded: a server that stops answering fails the test instead of hanging it.
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

fn sighup(child: &Child) {
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
}

#[tokio::test]
async fn https_healthz_and_certificate_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (generate(), generate());
    install(&first, dir.path());
    let mut serve = start(dir.path());

    let mut kept = connect(&serve.addr, &first.der).await.expect("handshake trusting the configured certificate");
    assert_eq!(presented(&kept), first.der);
    assert_eq!(healthz(&mut kept).await, 200);
    assert!(connect(&serve.addr, &second.der).await.is_err(), "a client trusting another certificate is refused");

    install(&second, dir.path());
    sighup(&serve.child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        if let Ok(conn) = connect(&serve.addr, &second.der).await {
            break conn;
        }
        assert!(Instant::now() < deadline, "the new certificate was not presented after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(presented(&fresh), second.der, "new connections get the replaced certificate");
    assert_eq!(healthz(&mut fresh).await, 200);
    assert_eq!(healthz(&mut kept).await, 200, "a connection opened before the reload still works");
    assert!(connect(&serve.addr, &first.der).await.is_err(), "the old certificate is no longer presented");

    // A broken replacement: logged, and the current certificate stays.
    std::fs::write(dir.path().join("cert.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    sighup(&serve.child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&serve.log).unwrap().contains("keeping the current TLS certificate") {
        assert!(Instant::now() < deadline, "no warning about the broken certificate: {}", std::fs::read_to_string(&serve.log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = connect(&serve.addr, &second.der).await.expect("still serving the last good certificate");
    assert_eq!(presented(&after), second.der);
    assert_eq!(healthz(&mut after).await, 200);
    assert!(serve.child.try_wait().unwrap().is_none(), "the server is still running");
}

#[test]
fn a_certificate_that_does_not_load_fails_start_up_as_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (generate(), generate());
    // A key that does not belong to the certificate.
    std::fs::write(dir.path().join("cert.pem"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).unwrap();
    let config = dir.path().join("mailferry.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", dir.path().join("data"), dir.path().join("cert.pem"), dir.path().join("key.pem")),
    )
    .unwrap();
    let out = mailferry()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("server.tls") && err.contains("does not match"), "{err}");
}
