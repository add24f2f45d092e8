//! A certificate pin, `sha256:` and 64 hex digits: the SHA-256 of the server's end-entity
//! certificate (DER) or of its SubjectPublicKeyInfo, as fetchmail's `sslfingerprint` and
//! `openssl x509 -fingerprint -sha256` give it.
//!
//! A pinned endpoint accepts exactly that certificate (or key) whatever its chain, CA flag
//! or names: for legacy hosts with self-signed certificates (see [`super::TlsOptions::pin`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// SHA-256 of an end-entity certificate's DER, or of its SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TlsPin([u8; 32]);

/// Why a pin was refused; the message says what the accepted form is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: a TLS pin is sha256: followed by 64 hex digits (colons between byte pairs allowed)")]
pub struct PinError(&'static str);

impl TlsPin {
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `sha256:` and lower-case hex, the form every message prints.
    pub fn render(digest: &[u8]) -> String {
        let mut out = String::with_capacity(7 + digest.len() * 2);
        out.push_str("sha256:");
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

impl FromStr for TlsPin {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, PinError> {
        let s = s.trim();
        // The algorithm prefix is case-insensitive ("SHA256:" as some tools print it).
        let hex = match s.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            Some((alg, _)) if !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                return Err(PinError("only sha256 pins are supported"));
            }
            _ => return Err(PinError("the pin does not start with sha256:")),
        };
        let mut digest = [0u8; 32];
        let mut nibbles = 0usize;
        let mut prev_colon = true; // no colon first, none doubled
        for c in hex.chars() {
            if c == ':' {
                // openssl prints AB:CD:…; a colon only ever sits between two byte pairs.
                if prev_colon || nibbles & 1 == 1 {
                    return Err(PinError("misplaced ':' in the hex digits"));
                }
                prev_colon = true;
                continue;
            }
            let Some(v) = c.to_digit(16) else {
                return Err(PinError("the pin holds a character that is not a hex digit"));
            };
            if nibbles >= 64 {
                return Err(PinError("the pin has more than 64 hex digits"));
            }
            let byte = &mut digest[nibbles / 2];
            *byte = (*byte << 4) | v as u8;
            nibbles += 1;
            prev_colon = false;
        }
        if nibbles != 64 {
            return Err(PinError("the pin has fewer than 64 hex digits"));
        }
        if prev_colon {
            return Err(PinError("misplaced ':' in the hex digits"));
        }
        Ok(Self(digest))
    }
}

impl fmt::Display for TlsPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::render(&self.0))
    }
}

impl fmt::Debug for TlsPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsPin({self})")
    }
}

impl TryFrom<String> for TlsPin {
    type Error = PinError;
    fn try_from(s: String) -> Result<Self, PinError> {
        s.parse()
    }
}

impl From<TlsPin> for String {
    fn from(p: TlsPin) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc";

    #[test]
    fn accepts_plain_upper_and_colon_forms() {
        let plain: TlsPin = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(plain.to_string(), format!("sha256:{HEX}"));
        assert_eq!(plain.as_bytes()[0], 0x3a);
        assert_eq!(format!("SHA256:{}", HEX.to_uppercase()).parse::<TlsPin>().unwrap(), plain);
        // As `openssl x509 -noout -fingerprint -sha256` prints it.
        let colons: Vec<String> = HEX.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
        assert_eq!(format!("sha256:{}", colons.join(":")).parse::<TlsPin>().unwrap(), plain);
        assert_eq!(format!("  sha256:{HEX}\n").parse::<TlsPin>().unwrap(), plain);
    }

    #[test]
    fn refuses_every_other_form() {
        for bad in [
            HEX.to_string(),                         // no prefix
            format!("sha1:{HEX}"),                   // other algorithm
            format!("md5:{HEX}"),
            format!("sha256:{}", &HEX[..62]),        // short
            format!("sha256:{HEX}00"),               // long
            format!("sha256:{}g", &HEX[..63]),       // not hex
            format!("sha256::{HEX}"),                // leading colon
            format!("sha256:{HEX}:"),                // trailing colon
            format!("sha256:3:a5f{}", &HEX[4..]),    // colon inside a byte
            format!("sha256:3a::5f{}", &HEX[4..]),   // doubled colon
            "sha256:".to_string(),
            String::new(),
            "sha256:é".to_string(),
        ] {
            let err = bad.parse::<TlsPin>().expect_err(&bad);
            assert!(err.to_string().contains("sha256: followed by 64 hex digits"), "{err}");
        }
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let pin: TlsPin = format!("sha256:{HEX}").parse().unwrap();
        let json = serde_json::to_string(&pin).unwrap();
        assert_eq!(json, format!("\"sha256:{HEX}\""));
        assert_eq!(serde_json::from_str::<TlsPin>(&json).unwrap(), pin);
        assert!(serde_json::from_str::<TlsPin>("\"sha256:00\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC*") {
            let _ = s.parse::<TlsPin>();
        }

        #[test]
        fn never_panics_on_near_misses(s in "(sha256|SHA256|sha1)?:?[0-9a-fA-F:]{0,100}") {
            if let Ok(p) = s.parse::<TlsPin>() {
                // Whatever parses prints back in the canonical form and parses to itself.
                prop_assert_eq!(p.to_string().parse::<TlsPin>().unwrap(), p);
            }
        }

        #[test]
        fn every_digest_round_trips(bytes in proptest::array::uniform32(any::<u8>()), colons in any::<bool>(), upper in any::<bool>()) {
            let pin = TlsPin::from_bytes(bytes);
            let mut text = pin.to_string();
            if colons {
                let hex = text.split_off(7);
                let pairs: Vec<&str> = hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect();
                text.push_str(&pairs.join(":"));
            }
            if upper {
                text = text.to_uppercase();
            }
            prop_assert_eq!(text.parse::<TlsPin>().unwrap(), pin);
        }
    }
}
