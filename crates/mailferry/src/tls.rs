//! Optional TLS for the API listener (`[server.tls]`), for deployments without a reverse
//! proxy. The certificate and key are re-read on SIGHUP and swapped in for new handshakes;
//! the listening socket and open connections are untouched. A pair that does not load is
//! logged and the current one kept, so a botched renewal cannot take the API down.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// A slow or silent client must not hold a handshake slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read and check a certificate chain and its private key (PEM).
pub fn load_certified_key(tls: &TlsConfig) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(&tls.cert_file).with_context(|| format!("cannot read {}", tls.cert_file.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", tls.cert_file.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", tls.cert_file.display());
    }
    let key_pem = std::fs::read(&tls.key_file).with_context(|| format!("cannot read {}", tls.key_file.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("{} is not PEM", tls.key_file.display()))?
        .with_context(|| format!("{} holds no private key", tls.key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .with_context(|| format!("{} does not match {}", tls.key_file.display(), tls.cert_file.display()))
}

/// The current certificate, swapped on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn load(files: TlsConfig) -> anyhow::Result<Arc<Self>> {
        let key = load_certified_key(&files)?;
        Ok(Arc::new(Self { files, current: RwLock::new(Arc::new(key)) }))
    }

    /// Re-read the files; on failure keep serving the current pair.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner())))
    }
}

/// Reload on every SIGHUP for as long as the process runs.
pub fn reload_on_sighup(cert: Arc<ReloadingCert>) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => tracing::info!(cert = %cert.files.cert_file.display(), "SIGHUP: reloaded the TLS certificate"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "SIGHUP: keeping the current TLS certificate"),
            }
        }
    });
    Ok(())
}

/// A listener for `axum::serve` yielding finished TLS connections. Handshakes run in their
/// own tasks, so one slow client does not hold up the others.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, cert: Arc<ReloadingCert>) -> anyhow::Result<Self> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this receiver is gone; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
