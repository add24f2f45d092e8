//! Framing limits on the bytes async-imap reads (greeting, login, CAPABILITY, LIST, SELECT).
//!
//! async-imap holds each response whole, and when its parser meets a literal it grows the
//! buffer to the announced length at once, before the bytes arrive (up to 512 MiB): a
//! greeting of `* OK {536870000}` would cost half a gigabyte. Nothing in that phase is
//! legitimately large, so [`FrameGuard`] follows the IMAP framing (lines, and literals
//! announced as `{n}` CRLF, RFC 3501 §4.3) on the bytes on their way in and refuses a
//! literal, a line or a response beyond its limits before async-imap sees them. Once we
//! drive the connection ourselves (APPEND, the destination index, with their own bounds) the
//! guard only keeps track.

/// Largest literal accepted while async-imap reads (mailbox names, quoted data).
pub(crate) const MAX_LITERAL: u64 = 64 * 1024;
/// Longest line while async-imap reads (a CAPABILITY or FLAGS line is a few KiB). Kept
/// small also because async-imap parses a response again from its start whenever more of
/// it arrives.
pub(crate) const MAX_LINE: usize = 256 * 1024;
/// Largest response (lines and literals) while async-imap reads.
pub(crate) const MAX_RESPONSE: u64 = 1 << 20;

/// Where we are in a possible `{digits[+]}` CRLF literal announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Idle,
    Digits { value: u64, any: bool },
    Plus { value: u64 },
    Closed { value: u64 },
    Cr { value: u64 },
}

#[derive(Debug)]
pub(crate) struct FrameGuard {
    enforce: bool,
    scan: Scan,
    literal_left: u64,
    line: usize,
    response: u64,
}

impl Default for FrameGuard {
    fn default() -> Self {
        Self { enforce: true, scan: Scan::Idle, literal_left: 0, line: 0, response: 0 }
    }
}

impl FrameGuard {
    /// Keep following the framing, but stop refusing: our own reader bounds what it reads.
    pub(crate) fn relax(&mut self) {
        self.enforce = false;
    }

    /// Account for bytes just read; `Err` names the limit the server went past.
    pub(crate) fn check(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut i = 0;
        while i < bytes.len() {
            if self.literal_left > 0 {
                let take = usize::try_from(self.literal_left).unwrap_or(usize::MAX).min(bytes.len() - i);
                i += take;
                self.literal_left -= take as u64;
                self.response = self.response.saturating_add(take as u64);
                self.limit()?;
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.line += 1;
            self.response = self.response.saturating_add(1);
            self.scan = match (self.scan, b) {
                (Scan::Cr { value }, b'\n') => {
                    // A literal follows: the response goes on after it.
                    if self.enforce && value > MAX_LITERAL {
                        return Err(format!(
                            "the server announced a literal of {value} bytes (at most {MAX_LITERAL} accepted before the session is ready)"
                        ));
                    }
                    self.literal_left = value;
                    self.line = 0;
                    Scan::Idle
                }
                (_, b'\n') => {
                    self.line = 0;
                    self.response = 0;
                    Scan::Idle
                }
                (_, b'{') => Scan::Digits { value: 0, any: false },
                (Scan::Digits { value, .. }, d) if d.is_ascii_digit() => {
                    Scan::Digits { value: value.saturating_mul(10).saturating_add(u64::from(d - b'0')), any: true }
                }
                (Scan::Digits { value, any: true }, b'+') => Scan::Plus { value },
                (Scan::Digits { value, any: true } | Scan::Plus { value }, b'}') => Scan::Closed { value },
                (Scan::Closed { value }, b'\r') => Scan::Cr { value },
                _ => Scan::Idle,
            };
            self.limit()?;
        }
        Ok(())
    }

    fn limit(&self) -> Result<(), String> {
        if !self.enforce {
            return Ok(());
        }
        if self.line > MAX_LINE {
            return Err(format!("the server sent a line longer than {MAX_LINE} bytes"));
        }
        if self.response > MAX_RESPONSE {
            return Err(format!("the server sent a response longer than {MAX_RESPONSE} bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_literals_and_refuses_large_ones() {
        let mut g = FrameGuard::default();
        g.check(b"* OK ready\r\n* LIST () \"/\" {5}\r\nab\r\nc\r\n").unwrap();
        assert_eq!(g.response, 0, "the LIST response ended after its literal and line");
        g.check(b"A1 OK {9999999999} is just text\r\n").unwrap();
        let err = FrameGuard::default().check(b"* OK {536870000}\r\n").unwrap_err();
        assert!(err.contains("literal of 536870000 bytes"), "{err}");
        // Split anywhere, the same verdict.
        let mut g = FrameGuard::default();
        g.check(b"* OK {5368").unwrap();
        g.check(b"70000}\r").unwrap();
        assert!(g.check(b"\n").is_err());
    }

    #[test]
    fn refuses_endless_lines_and_responses() {
        let mut g = FrameGuard::default();
        assert!(g.check(&vec![b'x'; MAX_LINE + 1]).is_err());
        let mut g = FrameGuard::default();
        let piece = b"* X {60000}\r\n".iter().copied().chain(std::iter::repeat_n(b'y', 60000)).collect::<Vec<_>>();
        let mut failed = false;
        for _ in 0..100 {
            if g.check(&piece).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a response chaining literals without end is refused");
        let mut relaxed = FrameGuard::default();
        relaxed.relax();
        relaxed.check(b"* 1 FETCH (BODY[] {536870000}\r\n").unwrap();
    }

    proptest! {
        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut g = FrameGuard::default();
            for c in &chunks {
                if g.check(c).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn chunking_does_not_change_the_verdict(data in "[{}0-9+\r\nA-Z ]{0,80}", cut in 0usize..80) {
            let data = data.as_bytes();
            let cut = cut.min(data.len());
            let whole = FrameGuard::default().check(data).is_ok();
            let mut g = FrameGuard::default();
            let split = g.check(&data[..cut]).and_then(|()| g.check(&data[cut..])).is_ok();
            prop_assert_eq!(whole, split);
        }
    }
}
