//! What a server certificate is, in words an admin can act on: its subject, validity and
//! fingerprints, named by every certificate failure so that the admin can decide and pin.
//!
//! The certificate comes from the network: parsing it never panics, and a certificate that
//! cannot be parsed is still named by its fingerprint (the pin works without parsing).

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use super::TlsPin;

/// The longest subject printed; a hostile server could send a huge one.
const MAX_SUBJECT_CHARS: usize = 256;

/// A server certificate's identity, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject as `CN=…, O=…`, or why it could not be read.
    pub subject: String,
    /// `not before` and `not after`, `YYYY-MM-DD HH:MM:SS UTC`; `None` when unreadable.
    pub validity: Option<(String, String)>,
    /// `sha256:` of the whole certificate (DER).
    pub sha256: String,
    /// `sha256:` of its SubjectPublicKeyInfo, when the certificate could be parsed.
    pub spki_sha256: Option<String>,
}

impl CertSummary {
    pub fn of(der: &[u8]) -> Self {
        let sha256 = TlsPin::render(&Sha256::digest(der));
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => {
                let subject = clean(&cert.subject().to_string());
                let v = cert.validity();
                Self {
                    subject: if subject.is_empty() { "(empty subject)".into() } else { subject },
                    validity: Some((when(&v.not_before), when(&v.not_after))),
                    sha256,
                    spki_sha256: Some(TlsPin::render(&Sha256::digest(cert.public_key().raw))),
                }
            }
            Err(_) => Self { subject: "(the certificate could not be parsed)".into(), validity: None, sha256, spki_sha256: None },
        }
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server presented subject \"{}\"", self.subject)?;
        if let Some((from, to)) = &self.validity {
            write!(f, ", valid from {from} to {to}")?;
        }
        write!(f, ", certificate fingerprint {}", self.sha256)?;
        if let Some(spki) = &self.spki_sha256 {
            write!(f, ", public key (SPKI) fingerprint {spki}")?;
        }
        Ok(())
    }
}

/// SHA-256 of the certificate DER, and of its SubjectPublicKeyInfo when it parses.
pub(super) fn fingerprints(der: &[u8]) -> ([u8; 32], Option<[u8; 32]>) {
    let whole: [u8; 32] = Sha256::digest(der).into();
    let spki = X509Certificate::from_der(der).ok().map(|(_, c)| Sha256::digest(c.public_key().raw).into());
    (whole, spki)
}

/// `YYYY-MM-DD HH:MM:SS UTC` (x509-parser has already adjusted to UTC).
fn when(t: &ASN1Time) -> String {
    let d = t.to_datetime();
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", d.year(), d.month() as u8, d.day(), d.hour(), d.minute(), d.second())
}

/// One line of printable text, at most [`MAX_SUBJECT_CHARS`] characters.
fn clean(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_SUBJECT_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().nth(MAX_SUBJECT_CHARS).is_some() {
        out.push('…');
    }
    out
}
