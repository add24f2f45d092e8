//! Sealing keys: a key id → 256-bit key map from config, one of them active for new blobs.
//! Old ids stay configured after a rotation so blobs sealed under them remain readable.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};

use crate::error::{ArchiveError, Result};

/// The keys an archive may seal and open blobs with. Holds ciphers, never prints keys.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, XChaCha20Poly1305>,
    active: Option<String>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl KeyRing {
    /// No keys: blobs are compressed but not sealed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds a key under `id` (1..=255 bytes of printable ASCII). Does not make it active.
    pub fn add(&mut self, id: &str, key: &[u8; 32]) -> Result<&mut Self> {
        if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ArchiveError::Config(format!("bad key id {id:?}")));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(key)
            .map_err(|_| ArchiveError::Config("sealing key must be 32 bytes".into()))?;
        self.keys.insert(id.to_string(), cipher);
        Ok(self)
    }

    /// Adds a key given as 64 hex digits (config / env form).
    pub fn add_hex(&mut self, id: &str, hex_key: &str) -> Result<&mut Self> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut key)
            .map_err(|_| ArchiveError::Config(format!("key {id:?} must be 64 hex digits")))?;
        self.add(id, &key)
    }

    /// New blobs are sealed with this key from now on.
    pub fn set_active(&mut self, id: &str) -> Result<&mut Self> {
        if !self.keys.contains_key(id) {
            return Err(ArchiveError::Config(format!(
                "active key {id:?} is not configured"
            )));
        }
        self.active = Some(id.to_string());
        Ok(self)
    }

    /// Builder form: `KeyRing::none().with_key("k1", &key)?.activate("k1")?`.
    pub fn with_key(mut self, id: &str, key: &[u8; 32]) -> Result<Self> {
        self.add(id, key)?;
        Ok(self)
    }

    pub fn activate(mut self, id: &str) -> Result<Self> {
        self.set_active(id)?;
        Ok(self)
    }

    pub fn active(&self) -> Option<(&str, &XChaCha20Poly1305)> {
        let id = self.active.as_deref()?;
        self.keys.get(id).map(|c| (id, c))
    }

    pub fn get(&self, id: &str) -> Option<&XChaCha20Poly1305> {
        self.keys.get(id)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}
