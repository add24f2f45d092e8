//! What a finished TLS handshake says about the server: the protocol version and its leaf
//! certificate (subject, validity, fingerprints), for the preflight report (issue 17).

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CertSummary;

/// The TLS side of one connection, as an admin reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// `TLSv1.3`, `TLSv1.2`, … (the negotiated version).
    pub version: String,
    /// The server's leaf certificate, when it sent one.
    pub certificate: Option<CertSummary>,
    /// The leaf's `notAfter` as Unix seconds, for expiry checks; `None` when unreadable.
    pub not_after_unix: Option<i64>,
}

impl PeerTls {
    /// From the negotiated version and the peer's chain (leaf first), as rustls keeps them.
    pub fn of(version: Option<rustls::ProtocolVersion>, chain: Option<&[CertificateDer<'_>]>) -> Self {
        let leaf = chain.and_then(|c| c.first());
        Self {
            version: version.and_then(|v| v.as_str()).map_or_else(|| "unknown".to_owned(), |v| v.replace('_', ".")),
            certificate: leaf.map(|der| CertSummary::of(der)),
            not_after_unix: leaf.and_then(|der| X509Certificate::from_der(der).ok()).map(|(_, c)| c.validity().not_after.timestamp()),
        }
    }

    /// From a client connection after its handshake.
    pub fn of_connection(conn: &rustls::ClientConnection) -> Self {
        Self::of(conn.protocol_version(), conn.peer_certificates())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_certificate_is_named_by_fingerprint_only() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        let p = PeerTls::of(Some(rustls::ProtocolVersion::TLSv1_3), Some(&[der]));
        assert_eq!(p.version, "TLSv1.3");
        assert!(p.certificate.as_ref().is_some_and(|c| c.sha256.starts_with("sha256:")));
        assert_eq!(p.not_after_unix, None);
        assert_eq!(PeerTls::of(None, None).version, "unknown");
    }
}
