//! The installation's receipt signing key: an Ed25519 key whose 32-byte seed is kept as 64
//! hex digits in a file readable by its owner only (`receipt.key` beside `secret.key` in
//! the data dir, generated on first use). The public half is what auditors are given.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;

use crate::receipt::ReceiptHeader;

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot read the receipt signing key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot create the receipt signing key {path}: {source}")]
    Create { path: String, source: std::io::Error },
    #[error("the receipt signing key {path} does not hold 64 hex digits")]
    Malformed { path: String },
}

/// Signs receipt headers. Debug never shows the key.
pub struct ReceiptSigner {
    key: SigningKey,
}

impl fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner").field("public_key", &self.public_key().to_base64()).finish()
    }
}

impl ReceiptSigner {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(seed) }
    }

    /// A fresh key (tests; files are made by [`Self::load_or_create`]).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(&seed)
    }

    /// Reads the key at `path`, creating it (mode 0600, never overwriting) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SignerError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| SignerError::Malformed { path: shown })?;
                Ok(Self::from_seed(&seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::generate();
                let create = |e| SignerError::Create { path: shown.clone(), source: e };
                // Written whole under a private temporary name, then linked into place: a
                // process racing us reads either no key or a complete one, never half.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let mut tmp = tempfile::Builder::new().prefix(".receipt.key.").tempfile_in(dir).map_err(create)?;
                #[cfg(unix)]
                std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(create)?;
                tmp.write_all(format!("{}\n", hex::encode(signer.key.to_bytes())).as_bytes()).map_err(create)?;
                tmp.as_file().sync_all().map_err(create)?;
                match std::fs::hard_link(tmp.path(), path) {
                    Ok(()) => Ok(signer),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
                    Err(e) => Err(create(e)),
                }
            }
            Err(source) => Err(SignerError::Read { path: shown, source }),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// base64 of the signature over the header's canonical bytes.
    pub fn sign(&self, header: &ReceiptHeader) -> String {
        b64().encode(self.key.sign(&header.canonical()).to_bytes())
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// An Ed25519 public key, written as base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    pub fn to_base64(&self) -> String {
        b64().encode(self.0.as_bytes())
    }

    /// Accepts base64 (standard, padded or not) of exactly 32 bytes naming a valid point.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bytes = b64()
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .map_err(|_| "the public key is not base64".to_string())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| "the public key must be 32 bytes (base64)".to_string())?;
        VerifyingKey::from_bytes(&arr).map(PublicKey).map_err(|_| "the public key is not an Ed25519 key".to_string())
    }

    /// Whether `signature` (base64) is this key's signature over `header`.
    pub fn verifies(&self, header: &ReceiptHeader, signature: &str) -> bool {
        let Ok(bytes) = b64().decode(signature.trim()) else { return false };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else { return false };
        self.0.verify_strict(&header.canonical(), &Signature::from_bytes(&arr)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_made_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt.key");
        let a = ReceiptSigner::load_or_create(&path).unwrap();
        let b = ReceiptSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&path).unwrap().trim()[..16]));
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(ReceiptSigner::load_or_create(&path), Err(SignerError::Malformed { .. })));
    }

    #[test]
    fn racing_creators_all_get_the_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt.key");
        let keys: Vec<PublicKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| ReceiptSigner::load_or_create(&path).unwrap().public_key())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn public_keys_parse_only_when_well_formed() {
        let k = ReceiptSigner::generate().public_key();
        assert_eq!(PublicKey::parse(&k.to_base64()).unwrap(), k);
        assert!(PublicKey::parse("").is_err());
        assert!(PublicKey::parse("aGVsbG8=").is_err());
        assert!(PublicKey::parse("!!!").is_err());
    }
}
