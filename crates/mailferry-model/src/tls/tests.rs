//! The certificate rules of `verify.rs` on certificates made here, without a network.

use std::sync::Arc;

use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PublicKeyData};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::verify::Verifier;
use super::*;

/// A self-signed `CA:TRUE` certificate with only a common name, as
/// `openssl req -x509 -subj /CN=<cn>` makes.
fn openssl_style(cn: &str, days_valid: Option<(i32, i32)>) -> (CertificateDer<'static>, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some((from, to)) = days_valid {
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

fn verifier(pin: Option<TlsPin>, exact: Vec<CertificateDer<'static>>) -> Verifier {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in &exact {
        // A damaged certificate (the property test below) is refused as a root, not as an
        // exact match: the exact rule must cope with it.
        let _ = roots.add(c.clone());
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    Verifier { pin, exact, webpki, provider }
}

fn check(v: &Verifier, cert: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let name = ServerName::try_from(host.to_owned()).unwrap();
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| failure_text(&e))
}

fn sha(bytes: &[u8]) -> TlsPin {
    TlsPin::from_bytes(Sha256::digest(bytes).into())
}

#[test]
fn a_self_signed_ca_certificate_in_the_ca_file_is_trusted_as_itself() {
    let (cert, _) = openssl_style("127.0.0.1", None);
    // webpki alone refuses it (the CaUsedAsEndEntity) ...
    let plain = verifier(None, vec![]);
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    assert!(webpki.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).is_err());
    // ... the CA file holding exactly it makes it work, for its own name only.
    let with_file = verifier(None, vec![cert.clone()]);
    check(&with_file, &cert, "127.0.0.1").unwrap();
    let err = check(&with_file, &cert, "mail.example.com").unwrap_err();
    assert!(err.contains("common name is not \"mail.example.com\""), "{err}");
    // Without it, the refusal names the certificate and says what to do.
    let err = check(&plain, &cert, "127.0.0.1").unwrap_err();
    assert!(err.starts_with("certificate refused: "), "{err}");
    assert!(!err.contains("OtherError"), "{err}");
    assert!(err.contains("subject \"CN=127.0.0.1\""), "{err}");
    assert!(err.contains(&sha(&cert).to_string()), "{err}");
    assert!(err.contains("valid from ") && err.contains(" UTC to "), "{err}");
}

#[test]
fn an_exact_certificate_out_of_its_validity_is_refused() {
    let (old, _) = openssl_style("127.0.0.1", Some((2001, 2002)));
    let err = check(&verifier(None, vec![old.clone()]), &old, "127.0.0.1").unwrap_err();
    assert!(err.contains("has expired") && err.contains("valid from 2001-01-01 00:00:00 UTC to 2002-01-01"), "{err}");
    let (future, _) = openssl_style("127.0.0.1", Some((2200, 2201)));
    let err = check(&verifier(None, vec![future.clone()]), &future, "127.0.0.1").unwrap_err();
    assert!(err.contains("not valid yet"), "{err}");
}

#[test]
fn an_exact_certificate_with_names_is_checked_against_them() {
    let mut p = CertificateParams::new(vec!["mail.example.com".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone();
    let v = verifier(None, vec![cert.clone()]);
    check(&v, &cert, "mail.example.com").unwrap();
    assert!(check(&v, &cert, "other.example.com").unwrap_err().contains("not issued for this host"));
}

#[test]
fn a_pin_accepts_the_certificate_or_its_key_and_nothing_else() {
    let (cert, key) = openssl_style("legacy.example.net", Some((2001, 2002)));
    // Expired, wrong name, untrusted: the pin alone decides.
    check(&verifier(Some(sha(&cert)), vec![]), &cert, "127.0.0.1").unwrap();
    check(&verifier(Some(sha(&key.subject_public_key_info())), vec![]), &cert, "127.0.0.1").unwrap();
    let (other, _) = openssl_style("legacy.example.net", None);
    let err = check(&verifier(Some(sha(&cert)), vec![other.clone()]), &other, "legacy.example.net").unwrap_err();
    assert!(err.contains(&format!("does not match the pin {}", sha(&cert))), "{err}");
    assert!(err.contains(&format!("certificate fingerprint {}", sha(&other))), "{err}");
    assert!(err.contains("subject \"CN=legacy.example.net\""), "{err}");
}

#[test]
fn the_summary_names_both_fingerprints() {
    let (cert, key) = openssl_style("127.0.0.1", None);
    let s = CertSummary::of(&cert);
    assert_eq!(s.sha256, sha(&cert).to_string());
    assert_eq!(s.spki_sha256, Some(sha(&key.subject_public_key_info()).to_string()));
    let garbage = CertSummary::of(b"not a certificate");
    assert!(garbage.validity.is_none() && garbage.spki_sha256.is_none());
    assert_eq!(garbage.sha256, sha(b"not a certificate").to_string());
}

#[test]
fn client_configs_build_with_a_pin_and_with_a_self_signed_ca_file() {
    let p = CertificateParams::new(vec!["h".to_string()]).unwrap();
    let pem = p.self_signed(&KeyPair::generate().unwrap()).unwrap().pem();
    let opts = TlsOptions { extra_roots_pem: Some(pem.into_bytes()), pin: Some(sha(b"x")), ..Default::default() };
    opts.client_config().unwrap();
    let empty = TlsOptions { extra_roots_pem: Some(b"nothing".to_vec()), ..Default::default() };
    assert!(matches!(empty.client_config(), Err(TlsError::NoCertificates)));
}

proptest! {
    #[test]
    fn summaries_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = CertSummary::of(&bytes);
        prop_assert!(s.sha256.starts_with("sha256:"));
    }

    #[test]
    fn a_damaged_certificate_never_panics_the_verifier(pos in 0usize..2000, byte in any::<u8>()) {
        let (cert, _) = openssl_style("127.0.0.1", None);
        let mut bytes = cert.to_vec();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let damaged = CertificateDer::from(bytes);
        let _ = CertSummary::of(&damaged);
        let _ = check(&verifier(None, vec![damaged.clone()]), &damaged, "127.0.0.1");
    }
}

#[test]
fn legacy_only_servers_are_named_as_such() {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion);
    assert!(failure_text(&alert).contains("only TLS 1.1 or older") && is_permanent(&alert));
    let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
    let text = handshake_eof_text(&eof).unwrap();
    assert!(text.contains("closed the connection during the TLS handshake") && text.contains("Legacy TLS"), "{text}");
    assert!(handshake_eof_text(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)).is_none());
}
