//! Byte-stuffing of multi-line POP3 responses (RFC 1939 §3), as a streaming state machine.
//!
//! A multi-line response body is the message with every line that begins with `.` given
//! one extra `.`, followed by the terminator `.CRLF` on a line of its own. So the wire
//! ends in `CRLF . CRLF`, and the first CRLF belongs to the message: [`Unstuffer`] hands
//! back the message bytes *including* the line ending of its last line.
//!
//! # Line starts
//! A line is taken to start after every LF, whether or not a CR precedes it. Correct
//! servers send CRLF only, so for them this changes nothing; servers that pass stored
//! bare-LF messages through unchanged stuff (and terminate) at their own notion of a line,
//! which is after LF. This is what Python's `poplib` and fetchmail do. In consequence the
//! LF-only terminator `\n.\n` is accepted too. The one case it gets "wrong" is a server
//! that sends a bare LF followed by `.` *without* stuffing it; no mainstream server does
//! (Dovecot, Courier, UW, qpopper all emit CRLF), and [`stuff`] makes the same choice, so
//! the round trip is exact.
//!
//! # Cost
//! Every input byte is looked at once; within a line the bytes are copied in bulk up to
//! the next LF. Nothing is ever re-scanned, whatever the chunking.

/// Where the unstuffer is, between two calls to [`Unstuffer::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line (also the first byte of the body).
    LineStart,
    /// Saw `.` at a line start; it is either the terminator or a stuffing dot.
    Dot,
    /// Saw `.CR` at a line start; LF next makes the terminator.
    DotCr,
    /// Inside a line.
    Mid,
    /// The terminator has been consumed.
    Done,
}

/// Progress of one [`Unstuffer::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes consumed. When `done`, the bytes after this offset are the start of the
    /// next response (pipelining) and must be kept.
    pub consumed: usize,
    /// The terminator was seen: the message is complete.
    pub done: bool,
}

/// Removes byte-stuffing from a multi-line response body fed in arbitrary chunks and finds
/// its terminator, wherever the chunk boundaries fall.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    state: State,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Unstuffer {
    /// Start of a body: the bytes right after the `+OK ...CRLF` status line.
    pub fn new() -> Self {
        Self { state: State::LineStart }
    }

    /// Whether the terminator has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume bytes of `input` and append the unstuffed message bytes to `out`.
    ///
    /// Stops right after the terminator (`Fed::done`), so `input[consumed..]` is the next
    /// response. At most one byte more than `consumed` is appended (a held-back CR), so
    /// `out` never grows beyond `input.len() + 1` per call. Feeding after `done` consumes
    /// nothing.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Mid => match input[i..].iter().position(|&b| b == b'\n') {
                    Some(off) => {
                        out.extend_from_slice(&input[i..=i + off]);
                        i += off + 1;
                        self.state = State::LineStart;
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        i = input.len();
                    }
                },
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => match input[i] {
                    b'\r' => {
                        i += 1;
                        self.state = State::DotCr;
                    }
                    // `.LF`: terminator from an LF-only server (see the module docs).
                    b'\n' => {
                        i += 1;
                        self.state = State::Done;
                    }
                    // RFC 1939 §3: a line starting with "." followed by anything other
                    // than CRLF has its first octet stripped. The byte itself is message
                    // content, handled by `Mid` (so ".." yields ".").
                    _ => self.state = State::Mid,
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = State::Done;
                    } else {
                        // `.CR` then not LF: a stuffed line whose content starts with CR.
                        out.push(b'\r');
                        self.state = State::Mid;
                    }
                }
            }
        }
        Fed { consumed: i, done: self.state == State::Done }
    }
}

/// Byte-stuff `msg` and append the terminator: what a server sends after `+OK` for RETR.
///
/// A message that does not end in a line ending gets a CRLF first (as servers do), so
/// the round trip through [`Unstuffer`] is exact only for messages that are empty or end
/// in LF. Dots are stuffed after every LF, matching [`Unstuffer`]'s notion of a line start.
pub fn stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64 + 5);
    let mut line_start = true;
    for &b in msg {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !msg.is_empty() && !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Unstuff `wire` fed in chunks of `size`; returns the message and the bytes left over.
    fn unstuff_chunked(wire: &[u8], size: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < wire.len() {
            let end = (pos + size).min(wire.len());
            let fed = u.feed(&wire[pos..end], &mut out);
            if fed.done {
                return (out, wire[pos + fed.consumed..].to_vec(), true);
            }
            assert_eq!(fed.consumed, end - pos, "must consume the whole chunk until done");
            pos = end;
        }
        (out, Vec::new(), u.is_done())
    }

    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let (msg, rest, done) = unstuff_chunked(wire, wire.len().max(1));
        assert!(done && rest.is_empty(), "incomplete or trailing bytes");
        msg
    }

    #[test]
    fn empty_message_is_just_the_terminator() {
        assert_eq!(stuff(b""), b".\r\n");
        assert_eq!(unstuff(b".\r\n"), b"");
        assert_eq!(unstuff(b".\n"), b"");
    }

    #[test]
    fn dot_lines_are_stuffed_and_unstuffed() {
        let msg = b".\r\n..\r\n...\r\n";
        let wire = stuff(msg);
        assert_eq!(wire, b"..\r\n...\r\n....\r\n.\r\n");
        assert_eq!(unstuff(&wire), msg);
    }

    #[test]
    fn final_crlf_belongs_to_the_message() {
        assert_eq!(unstuff(b"Subject: x\r\n\r\nbody\r\n.\r\n"), b"Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn unstuffed_dot_is_stripped_per_rfc() {
        // RFC 1939 §3: the first octet of a dot-line that is not the terminator is removed,
        // even when the server forgot to stuff it.
        assert_eq!(unstuff(b".x\r\n.\r\n"), b"x\r\n");
        assert_eq!(unstuff(b".\rx\r\n.\r\n"), b"\rx\r\n");
    }

    #[test]
    fn lf_only_server_is_tolerated() {
        assert_eq!(unstuff(b"a\n..b\n.\n"), b"a\n.b\n");
    }

    #[test]
    fn cr_does_not_start_a_line() {
        assert_eq!(unstuff(b"a\r.\r\n.\r\n"), b"a\r.\r\n");
    }

    #[test]
    fn stuff_adds_missing_final_crlf() {
        assert_eq!(stuff(b"abc"), b"abc\r\n.\r\n");
    }

    #[test]
    fn pipelined_bytes_after_the_terminator_are_left() {
        let wire = b"one\r\n.\r\n+OK next\r\n";
        for size in 1..=wire.len() {
            let (msg, rest, done) = unstuff_chunked(wire, size);
            assert!(done);
            assert_eq!(msg, b"one\r\n");
            assert_eq!(rest, b"+OK next\r\n", "chunk size {size}");
        }
    }

    #[test]
    fn truncated_body_is_not_done() {
        let (msg, _, done) = unstuff_chunked(b"abc\r\n.", 2);
        assert!(!done);
        assert_eq!(msg, b"abc\r\n");
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        // Bias towards the interesting bytes so dot-lines and odd endings are common.
        let byte = prop_oneof![
            3 => Just(b'.'),
            3 => Just(b'\r'),
            3 => Just(b'\n'),
            1 => any::<u8>(),
            2 => Just(b'a'),
        ];
        prop::collection::vec(byte, 0..300).prop_map(|mut v| {
            if !v.is_empty() {
                v.extend_from_slice(b"\r\n");
            }
            v
        })
    }

    proptest! {
        #[test]
        fn stuff_unstuff_round_trip(msg in message()) {
            prop_assert_eq!(unstuff(&stuff(&msg)), msg);
        }

        #[test]
        fn every_chunk_size_gives_the_same_output(msg in message(), tail in prop::collection::vec(any::<u8>(), 0..20)) {
            let mut wire = stuff(&msg);
            wire.extend_from_slice(&tail);
            for size in 1..512 {
                let (out, rest, done) = unstuff_chunked(&wire, size);
                prop_assert!(done);
                prop_assert_eq!(&out, &msg, "chunk size {}", size);
                prop_assert_eq!(&rest, &tail, "chunk size {}", size);
            }
        }

        #[test]
        fn arbitrary_input_never_panics_and_output_is_bounded(wire in prop::collection::vec(any::<u8>(), 0..400), size in 1usize..64) {
            let mut u = Unstuffer::new();
            let mut out = Vec::new();
            let mut total = 0;
            for chunk in wire.chunks(size) {
                let fed = u.feed(chunk, &mut out);
                total += fed.consumed;
                prop_assert!(out.len() <= total + 1);
                if fed.done { break; }
            }
        }
    }
}
