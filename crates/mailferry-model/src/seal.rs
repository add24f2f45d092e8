//! Secrets at rest: mailbox passwords and tokens in stored job specs are sealed with
//! XChaCha20-Poly1305 (random 192-bit nonce, so no nonce bookkeeping) under the server's
//! key (DESIGN.md §2.5). A [`Sealed`] value is ciphertext: safe to store and to Debug-print,
//! useless without the key, and never serialised into API responses by the API layer.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Version prefix, so the format can change without guessing.
const PREFIX: &str = "v1:";

/// A sealed secret: `v1:` + base64(nonce ‖ ciphertext).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the secret key must be 32 bytes (64 hex digits)")]
    BadKey,
    #[error("a stored secret could not be decrypted: wrong key or corrupted data")]
    Open,
}

/// Seals and opens secrets with one 256-bit key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

impl Sealer {
    pub fn new(key: &[u8]) -> Result<Self, SealError> {
        let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| SealError::BadKey)?;
        Ok(Self { cipher })
    }

    /// A key from 64 hex digits (as in `MAILFERRY_SECRET_KEY` or the key file).
    pub fn from_hex(hex_key: &str) -> Result<Self, SealError> {
        let hex_key = hex_key.trim();
        if hex_key.len() != 64 {
            return Err(SealError::BadKey);
        }
        let bytes: Result<Vec<u8>, _> =
            (0..32).map(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16)).collect();
        Self::new(&bytes.map_err(|_| SealError::BadKey)?)
    }

    /// A fresh random key as 64 hex digits.
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn seal(&self, secret: &SecretString) -> Sealed {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), secret.expose_secret().as_bytes())
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory data");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Sealed(format!("{PREFIX}{}", B64.encode(blob)))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<SecretString, SealError> {
        let blob = sealed.0.strip_prefix(PREFIX).and_then(|b| B64.decode(b).ok()).ok_or(SealError::Open)?;
        if blob.len() < 24 {
            return Err(SealError::Open);
        }
        let (nonce, ct) = blob.split_at(24);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let s = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let sealed = s.seal(&SecretString::from("hunter2"));
        assert!(!format!("{sealed:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&sealed).unwrap().contains("hunter2"));
        assert_eq!(s.open(&sealed).unwrap().expose_secret(), "hunter2");
        assert_ne!(s.seal(&SecretString::from("hunter2")), sealed, "random nonce");
        let other = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        assert_eq!(other.open(&sealed).unwrap_err(), SealError::Open);
        let mut tampered = sealed.0.clone();
        tampered.pop();
        tampered.push('A');
        assert!(s.open(&Sealed(tampered)).is_err());
        assert_eq!(Sealer::from_hex("abc").unwrap_err(), SealError::BadKey);
    }
}
