//! The digest of a message's body: what follows the first empty line (CRLF CRLF) of its
//! bytes, fed in pieces. Copies verified at level `body` compare this on both sides, for
//! destinations that rewrite headers on the way in (Gmail, Microsoft 365) and leave the
//! body alone. A message without an empty line has an empty body.

use sha2::{Digest, Sha256};

#[derive(Debug, Default, Clone)]
pub struct BodyHasher {
    /// Bytes of CRLF CRLF matched so far; 4 once in the body.
    matched: usize,
    hash: Sha256,
}

impl BodyHasher {
    pub fn push(&mut self, mut bytes: &[u8]) {
        const SEP: &[u8; 4] = b"\r\n\r\n";
        while self.matched < 4 {
            let Some((&b, rest)) = bytes.split_first() else { return };
            bytes = rest;
            self.matched = if b == SEP[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
        }
        self.hash.update(bytes);
    }

    /// SHA-256 (lowercase hex) of the body.
    pub fn finish(self) -> String {
        hex::encode(self.hash.finalize())
    }

    /// The body digest of a whole message.
    pub fn of(bytes: &[u8]) -> String {
        let mut h = Self::default();
        h.push(bytes);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_what_follows_the_first_empty_line_at_every_split() {
        let msg: &[u8] = b"Subject: a\r\nX: \r\r\n\r\nbody\r\n\r\nmore\r\n";
        let want = hex::encode(Sha256::digest(b"body\r\n\r\nmore\r\n"));
        for split in 0..=msg.len() {
            let mut h = BodyHasher::default();
            h.push(&msg[..split]);
            h.push(&msg[split..]);
            assert_eq!(h.finish(), want, "split at {split}");
        }
        assert_eq!(BodyHasher::of(b"Subject: no body\r\n"), hex::encode(Sha256::digest(b"")));
    }

    proptest! {
        #[test]
        fn pieces_never_matter(msg in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
            let split = split.min(msg.len());
            let mut h = BodyHasher::default();
            h.push(&msg[..split]);
            h.push(&msg[split..]);
            prop_assert_eq!(h.finish(), BodyHasher::of(&msg));
        }
    }
}
