//! TLS client settings shared by the POP3 and IMAP clients.
//!
//! Verification is on by default against the Mozilla roots (webpki-roots); a CA file adds
//! private roots (its PEM bytes are read by the caller, keeping this crate free of I/O) and
//! trusts each of its certificates as itself (a self-signed server certificate works); a
//! pin accepts exactly one certificate or key (`verify.rs`). Turning verification off is an
//! explicit, per-endpoint opt-in (DESIGN.md §2.5).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

mod describe;
mod peer;
mod pin;
#[cfg(test)]
mod tests;
mod verify;

pub use describe::CertSummary;
pub use peer::PeerTls;
pub use pin::{PinError, TlsPin};
pub use verify::{failure_text, handshake_eof_text, is_permanent, rustls_error, CertRefused};

/// Connection options of one endpoint: TLS trust, the plaintext opt-in, the network policy.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted roots, PEM encoded (from `--ca-file`).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Accept any certificate. Dangerous; for lab and legacy hosts only.
    pub insecure_skip_verify: bool,
    /// Accept exactly the certificate (or public key) with this SHA-256, whatever its chain,
    /// CA flag or names; checked during the handshake, before any credential is sent.
    pub pin: Option<TlsPin>,
    /// Permit `Security::None` (no TLS at all) for this endpoint.
    pub allow_plaintext: bool,
    /// Which addresses the connection may go to (checked after DNS resolution).
    pub network: std::sync::Arc<crate::netpolicy::NetworkPolicy>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_roots", &self.extra_roots_pem.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("pin", &self.pin)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("network", &self.network)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA file holds no PEM certificate")]
    NoCertificates,
    #[error("the CA file is not valid PEM: {0}")]
    BadPem(String),
    #[error("a certificate in the CA file was rejected: {0}")]
    BadCertificate(String),
}

impl TlsOptions {
    /// Build the rustls client configuration these options describe. A pin wins over
    /// `insecure_skip_verify` (it is the stricter of the two).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify && self.pin.is_none() {
            Arc::new(NoVerification(provider))
        } else {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut exact = Vec::new();
            if let Some(pem) = &self.extra_roots_pem {
                let mut reader = std::io::Cursor::new(pem);
                for cert in rustls_pemfile::certs(&mut reader) {
                    let cert = cert.map_err(|e| TlsError::BadPem(e.to_string()))?;
                    roots.add(cert.clone()).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
                    exact.push(cert);
                }
                if exact.is_empty() {
                    return Err(TlsError::NoCertificates);
                }
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            Arc::new(verify::Verifier { pin: self.pin, exact, webpki, provider })
        };
        Ok(Arc::new(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
    }
}

/// Accepts every certificate but still checks handshake signatures, so the session is
/// encrypted even when the peer is unauthenticated.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
