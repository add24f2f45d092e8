//! The server certificate check of every mail connection, in the handshake (so before any
//! credential is sent):
//!
//! 1. A pinned endpoint accepts exactly the end-entity certificate whose SHA-256, or whose
//!    SubjectPublicKeyInfo's SHA-256, is the pin; chain, CA flag and names are not checked.
//! 2. A certificate found byte for byte in the CA file is trusted as that exact certificate
//!    when within its validity and issued for the host. This is the self-signed `CA:TRUE`
//!    certificate `openssl req -x509` makes, which webpki refuses as `CaUsedAsEndEntity`.
//! 3. Anything else goes through webpki against the Mozilla roots and the CA file.
//!
//! Handshake signatures are always checked, so the server must hold the certificate's key.
//! A refusal names the presented certificate (subject, validity, fingerprints).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::describe::{fingerprints, CertSummary};
use super::TlsPin;

/// A certificate the client refused, and why: carried inside the rustls error so that
/// the POP3 and IMAP clients can print it whole ([`failure_text`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{why}; {cert}; if you trust this certificate, pin it (tls_pin, --from-tls-pin or --to-tls-pin) with either fingerprint")]
pub struct CertRefused {
    pub why: String,
    pub cert: CertSummary,
}

#[derive(Debug)]
pub(super) struct Verifier {
    pub(super) pin: Option<TlsPin>,
    /// The CA file's certificates, each trusted as exactly itself.
    pub(super) exact: Vec<CertificateDer<'static>>,
    pub(super) webpki: Arc<WebPkiServerVerifier>,
    pub(super) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let (whole, spki) = fingerprints(end_entity);
            if &whole == pin.as_bytes() || spki.as_ref() == Some(pin.as_bytes()) {
                return Ok(ServerCertVerified::assertion());
            }
            return Err(refused(end_entity, format!("the certificate does not match the pin {pin}")));
        }
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return exact_trust(end_entity, server_name, now)
                .map(|()| ServerCertVerified::assertion())
                .map_err(|why| refused(end_entity, format!("the certificate is the CA file's own, but {why}")));
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).map_err(|e| match e {
            rustls::Error::InvalidCertificate(ce) => refused(end_entity, explain(&ce)),
            other => other,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn refused(der: &[u8], why: String) -> rustls::Error {
    let err = CertRefused { why, cert: CertSummary::of(der) };
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// webpki's verdict in words, with what the admin can do about it.
fn explain(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "the certificate is not signed by a trusted CA (self-signed, or a private CA: give that CA, or this \
             very certificate, in the CA file)"
                .into()
        }
        CertificateError::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate (CA:TRUE, as `openssl req -x509` makes) that is not in the CA \
             file; put exactly this certificate in the CA file"
                .into()
        }
        CertificateError::BadEncoding => "the certificate is malformed".into(),
        other => format!("the certificate was refused: {other}"),
    }
}

/// Rule 2: the CA file holds exactly this certificate. Its own validity and names still
/// count: a certificate without any subjectAltName (as `openssl req -x509 -subj /CN=host`
/// makes) is matched on its common name, the pre-RFC 6125 rule such hosts were set up for.
fn exact_trust(der: &CertificateDer<'_>, name: &ServerName<'_>, now: UnixTime) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| "it cannot be parsed".to_owned())?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err("it is not valid yet".into());
    }
    if now > v.not_after.timestamp() {
        return Err("it has expired".into());
    }
    match cert.subject_alternative_name() {
        Ok(Some(_)) => {
            let parsed = rustls::server::ParsedCertificate::try_from(der).map_err(|e| format!("it cannot be parsed: {e}"))?;
            rustls::client::verify_server_name(&parsed, name).map_err(|e| match e {
                rustls::Error::InvalidCertificate(ce) => format!("it is not issued for this host: {ce}"),
                other => other.to_string(),
            })
        }
        Ok(None) => {
            let expected = match name {
                ServerName::DnsName(d) => d.as_ref().trim_end_matches('.').to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                _ => return Err("the server name is of an unsupported type".into()),
            };
            let cn_matches =
                cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).any(|cn| cn.eq_ignore_ascii_case(&expected));
            if cn_matches {
                Ok(())
            } else {
                Err(format!("its common name is not {expected:?} (and it has no subjectAltName)"))
            }
        }
        Err(_) => Err("its subjectAltName extension is malformed".into()),
    }
}

const LEGACY: &str = "which mailferry does not speak (rustls implements TLS 1.2 and 1.3 only); see \
                      docs/RELIABILITY.md, \"Legacy TLS\" (a local stunnel in front of the host)";

/// A handshake the server ended by closing the connection. A server that speaks only
/// TLS 1.1 or older does that (OpenSSL, so Dovecot, sends no alert when no version is
/// shared), and so can a transient network failure: the text says both.
pub fn handshake_eof_text(e: &std::io::Error) -> Option<String> {
    (e.kind() == std::io::ErrorKind::UnexpectedEof).then(|| {
        format!(
            "the server closed the connection during the TLS handshake ({e}); if this repeats, the server may offer \
             only TLS 1.1 or older, {LEGACY}"
        )
    })
}

/// The text of a TLS failure as the mail clients report it: a refused certificate with its
/// description, a legacy-only server named as such, else rustls's own words.
pub fn failure_text(e: &rustls::Error) -> String {
    use rustls::{AlertDescription, PeerIncompatible};
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => match inner.downcast_ref::<CertRefused>()
        {
            Some(refused) => format!("certificate refused: {refused}"),
            None => e.to_string(),
        },
        rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13)
        | rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) => {
            format!("{e}: the server seems to offer only TLS 1.1 or older, {LEGACY}")
        }
        other => other.to_string(),
    }
}

/// Whether retrying cannot fix this TLS failure (the certificate or the protocol version).
pub fn is_permanent(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
    )
}

/// The rustls error inside an `io::Error` from tokio-rustls, if there is one.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
