//! The scripted POP3 server the integration tests talk to, on loopback: each test writes
//! the server's side of the dialogue as steps, and the server records every line the
//! client sent.
#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailferry_model::{Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_pop3::{Pop3Error, Pop3Options, Pop3Session};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

pub const PASSWORD: &str = "s3cret-pass";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub enum Step {
    Send(Vec<u8>),
    /// Read one line and check it (without CRLF).
    Expect(String),
    /// TLS handshake as the server (implicit TLS, or after a STLS reply).
    Tls,
    /// Hang up at once.
    Close,
    /// Send `line(0)`, `line(1)`, ... forever (an endless reply), adding the bytes
    /// written to the counter, until the client hangs up. While the client holds the
    /// connection without reading, the writes block: the counter stops.
    Flood { line: fn(u64) -> String, written: Arc<AtomicU64> },
}

pub fn send(s: impl AsRef<[u8]>) -> Step {
    Step::Send(s.as_ref().to_vec())
}

pub fn expect(s: impl Into<String>) -> Step {
    Step::Expect(s.into())
}

/// Greeting, CAPA with `caps`, USER/PASS accepted, CAPA again.
pub fn login(caps: &str) -> Vec<Step> {
    let capa = format!("+OK\r\n{caps}.\r\n");
    vec![
        send("+OK ready\r\n"),
        expect("CAPA"),
        send(&capa),
        expect("USER user"),
        send("+OK\r\n"),
        expect(format!("PASS {PASSWORD}")),
        send("+OK logged in\r\n"),
        expect("CAPA"),
        send(&capa),
    ]
}

pub struct Cert {
    pub pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn cert() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    Cert { pem: ck.cert.pem(), server: Arc::new(server) }
}

/// Start a one-connection server running `steps`; then it records lines until EOF.
/// The handle yields every line received.
pub async fn serve(steps: Vec<Step>, tls: Option<Arc<rustls::ServerConfig>>) -> (u16, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tcp));
        let mut seen = Vec::new();
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if io.get_mut().write_all(&bytes).await.is_err() {
                        return seen;
                    }
                }
                Step::Expect(want) => {
                    let mut line = String::new();
                    io.read_line(&mut line).await.unwrap();
                    let line = line.trim_end_matches(['\r', '\n']).to_owned();
                    seen.push(line.clone());
                    assert_eq!(line, want, "the client sent something else");
                }
                Step::Close => return seen,
                Step::Flood { line, written } => {
                    let mut n = 0;
                    loop {
                        // A hundred lines per write, so the flood is fast.
                        let batch: String = (n..n + 100).map(line).collect();
                        n += 100;
                        if io.get_mut().write_all(batch.as_bytes()).await.is_err() {
                            return seen;
                        }
                        written.fetch_add(batch.len() as u64, Ordering::SeqCst);
                    }
                }
                Step::Tls => {
                    assert!(io.buffer().is_empty(), "client sent data before the handshake");
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone().unwrap());
                    let inner = io.into_inner();
                    io = BufReader::new(Box::new(acceptor.accept(inner).await.unwrap()));
                }
            }
        }
        loop {
            let mut line = String::new();
            match tokio::time::timeout(Duration::from_secs(5), io.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => seen.push(line.trim_end_matches(['\r', '\n']).to_owned()),
                _ => return seen,
            }
        }
    });
    (port, task)
}

pub fn endpoint(port: u16, security: Security, auth: Pop3Auth) -> Pop3Endpoint {
    Pop3Endpoint {
        host: "127.0.0.1".into(),
        port,
        security,
        username: "user".into(),
        secret: SecretString::from(PASSWORD),
        auth,
        tls: TlsOptions { allow_plaintext: true, ..Default::default() },
    }
}

pub fn opts() -> Pop3Options {
    Pop3Options { io_timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(5), ..Default::default() }
}

pub async fn connect(port: u16) -> Result<Pop3Session, Pop3Error> {
    Pop3Session::connect(&endpoint(port, Security::None, Pop3Auth::Auto), &opts()).await
}


/// The STAT exchange the session starts a listing with, `count` messages.
pub fn stat(count: u32) -> Vec<Step> {
    vec![expect("STAT"), send(format!("+OK {count} {}\r\n", u64::from(count) * 100))]
}

/// Wait until a flooding server's counter stops moving (its writes block because the
/// client does not read), at most 10 s; its final value.
pub async fn until_blocked(written: &AtomicU64) -> u64 {
    let mut last = written.load(Ordering::SeqCst);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the server is still writing after 10 s: the client keeps reading ({last} bytes)");
}
