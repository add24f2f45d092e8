//! POP3 dot-unstuffing (crates/mailferry-pop3/src/wire/dot.rs): arbitrary bytes fed to the
//! `Unstuffer` in arbitrary chunks give the same message, the same terminator position and
//! the same leftover as one feed, within the documented bounds; and `stuff` then unstuff is
//! the identity (plus the CRLF `stuff` adds to a message not ending in LF), whatever the
//! chunking.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mailferry_pop3::wire::{stuff, Unstuffer};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Chunk sizes, used in turn (0 counts as 1).
    cuts: Vec<u8>,
    data: Vec<u8>,
}

/// Feed `bytes` in chunks; returns the message, the bytes consumed and whether the
/// terminator was seen. Checks the per-call bounds `feed` documents.
fn feed_chunked(bytes: &[u8], cuts: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut u = Unstuffer::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let size = cuts.get(i % cuts.len().max(1)).map_or(bytes.len(), |&c| usize::from(c).max(1));
        i += 1;
        let chunk = &bytes[pos..(pos + size).min(bytes.len())];
        let before = out.len();
        let fed = u.feed(chunk, &mut out);
        assert!(fed.consumed <= chunk.len());
        assert!(out.len() - before <= fed.consumed + 1, "at most one held-back CR more than consumed");
        assert_eq!(fed.done, u.is_done());
        pos += fed.consumed;
        if fed.done {
            // Feeding after the terminator consumes nothing and adds nothing.
            let again = u.feed(&bytes[pos..], &mut out);
            assert_eq!(again.consumed, 0);
            assert!(again.done);
            return (out, pos, true);
        }
        assert_eq!(fed.consumed, chunk.len(), "not done: the whole chunk is consumed");
    }
    (out, pos, false)
}

fuzz_target!(|input: Input| {
    let Input { cuts, data } = input;

    // Arbitrary server bytes: chunking changes nothing.
    let whole = feed_chunked(&data, &[]);
    let cut = feed_chunked(&data, &cuts);
    assert_eq!(whole, cut);
    let (msg, consumed, done) = whole;
    assert!(msg.len() <= consumed + 1);
    if done {
        assert!(data[..consumed].ends_with(b"\n"));
    }

    // Round trip: what a correct server sends for `data` unstuffs to `data`.
    let wire = stuff(&data);
    assert!(wire.ends_with(b".\r\n"));
    let mut expected = data.clone();
    if !data.is_empty() && !data.ends_with(b"\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(feed_chunked(&wire, &cuts), (expected, wire.len(), true));
});
