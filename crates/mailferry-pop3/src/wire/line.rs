//! Cutting the server's byte stream into lines (RFC 1939 §3: every reply line ends in
//! CRLF), with a bound on the length of one line, as a pure function the session calls on
//! its read buffer.
//!
//! A bare LF also ends a line: sloppy servers send them, and a line-oriented reply has no
//! other use for an LF. The text of a line is decoded leniently (invalid UTF-8 becomes
//! U+FFFD): the parsers in `reply` look only at ASCII, and whatever else a server sends is
//! at worst shown, clipped, in an error message.

/// What [`scan_line`] found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole line: `buf[..len]` is the line *with* its LF (and CR, if any).
    Line { len: usize },
    /// No LF yet. Everything up to `buf.len()` has been searched: pass that as `from`
    /// next time, so a long line arriving in many reads is scanned once.
    Partial,
    /// The line is longer than the limit, ended or not: stop reading.
    TooLong,
}

/// Look for the end of the first line of `buf`, searching from `from` (bytes before it
/// were searched by an earlier call and hold no LF). A line may hold at most `max_line`
/// bytes without its line ending.
///
/// `from` beyond `buf.len()` is treated as `buf.len()`: a caller's bookkeeping error must
/// not turn into a panic on server bytes.
pub fn scan_line(buf: &[u8], from: usize, max_line: usize) -> Scan {
    // Line content, plus an optional CR before the LF.
    let longest = max_line.saturating_add(1);
    let from = from.min(buf.len());
    match buf.get(from..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
        Some(off) => {
            let end = from + off;
            if end > longest {
                Scan::TooLong
            } else {
                Scan::Line { len: end + 1 }
            }
        }
        None if buf.len() > longest => Scan::TooLong,
        None => Scan::Partial,
    }
}

/// The text of a line as returned by [`Scan::Line`]: without its LF and the CR before it.
pub fn line_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Split `wire` fed in chunks of `size`, as the session does: append a chunk, scan
    /// from where the last scan stopped, take whole lines. Stops at the first over-long line.
    fn split_chunked(wire: &[u8], size: usize, max_line: usize) -> (Vec<String>, bool) {
        let mut buf = Vec::new();
        let mut scanned = 0;
        let mut lines = Vec::new();
        for chunk in wire.chunks(size) {
            buf.extend_from_slice(chunk);
            loop {
                match scan_line(&buf, scanned, max_line) {
                    Scan::Line { len } => {
                        lines.push(line_text(&buf[..len]));
                        buf.drain(..len);
                        scanned = 0;
                    }
                    Scan::Partial => {
                        scanned = buf.len();
                        break;
                    }
                    Scan::TooLong => return (lines, true),
                }
            }
        }
        (lines, false)
    }

    /// The same without chunks or incremental scanning: the oracle.
    fn split_whole(wire: &[u8], max_line: usize) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        let mut rest = wire;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let content = rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]);
            // Room for the content and a CR before the LF.
            if i > max_line + 1 {
                return (lines, true);
            }
            lines.push(String::from_utf8_lossy(content).into_owned());
            rest = &rest[i + 1..];
        }
        (lines, rest.len() > max_line + 1)
    }

    #[test]
    fn lines_and_limits() {
        assert_eq!(scan_line(b"+OK\r\nnext", 0, 10), Scan::Line { len: 5 });
        assert_eq!(scan_line(b"+OK\nnext", 0, 10), Scan::Line { len: 4 });
        assert_eq!(scan_line(b"+OK", 0, 10), Scan::Partial);
        assert_eq!(scan_line(b"+OK", 99, 10), Scan::Partial, "a stale offset is clamped");
        assert_eq!(scan_line(b"0123456789\r\n", 0, 10), Scan::Line { len: 12 });
        assert_eq!(scan_line(b"0123456789x\r\n", 0, 10), Scan::TooLong);
        assert_eq!(scan_line(b"0123456789xy", 0, 10), Scan::TooLong);
        assert_eq!(scan_line(b"\n", 0, usize::MAX), Scan::Line { len: 1 });
        assert_eq!(line_text(b"+OK \xff\xfe\r\n"), "+OK \u{fffd}\u{fffd}");
        assert_eq!(line_text(b"\r\r\n"), "\r");
    }

    fn wire() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![3 => Just(b'\r'), 3 => Just(b'\n'), 2 => Just(b'a'), 2 => any::<u8>()];
        prop::collection::vec(byte, 0..600)
    }

    proptest! {
        #[test]
        fn every_chunk_size_splits_the_same(wire in wire(), max_line in 0usize..40) {
            let (whole, too_long) = split_whole(&wire, max_line);
            for size in 1..512 {
                let (lines, long) = split_chunked(&wire, size, max_line);
                prop_assert_eq!(&lines, &whole, "chunk size {}", size);
                prop_assert_eq!(long, too_long, "chunk size {}", size);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..300), from in 0usize..400, max_line in 0usize..300) {
            if let Scan::Line { len } = scan_line(&buf, from, max_line) {
                prop_assert!(len <= buf.len() && buf[len - 1] == b'\n');
                let _ = line_text(&buf[..len]);
            }
        }
    }
}
