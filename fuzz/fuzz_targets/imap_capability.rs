//! What async-imap parses while the IMAP session is set up (greeting, LOGIN, CAPABILITY,
//! SELECT, LIST, CREATE; crates/mailferry-imap/src/session.rs): the fuzz input is what the
//! server sends, parsed response after response by imap-proto as async-imap does, and the
//! capabilities it lists turned into ours (`Capabilities::from_list`). Never a panic.
//!
//! One known panic is tolerated, and only that one: imap-proto 0.17.0 slices the text after
//! a response code at byte 1, inside a multi-byte character when a non-ASCII byte follows
//! the `]` directly (`* OK [ALERT]é`), at rfc3501/mod.rs lines 1182-1183 (`Outcome::parse`).
//! `ImapSession::connect` turns a panic there into `ImapError::Protocol`
//! (tests/unparsable.rs); this target does the same for that location. A panic anywhere
//! else, or in another imap-proto version, is a crash.
#![no_main]

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mailferry_imap::fuzzing;

/// The panic `ImapSession::connect` is known to catch: file suffix and lines.
const KNOWN: (&str, [u32; 2]) = ("imap-proto-0.17.0/src/rfc3501/mod.rs", [1182, 1183]);

thread_local! {
    static PARSING: Cell<bool> = const { Cell::new(false) };
}

/// libFuzzer's hook aborts on every panic; let the known one unwind to `catch_unwind`.
fn hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let known = info.location().is_some_and(|l| l.file().ends_with(KNOWN.0) && KNOWN.1.contains(&l.line()));
            if !(known && PARSING.get()) {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    hook();
    PARSING.set(true);
    let caps = panic::catch_unwind(AssertUnwindSafe(|| fuzzing::capabilities(data)));
    PARSING.set(false);
    // Err: the known imap-proto panic, a protocol error for the session.
    if let Ok(caps) = caps {
        assert_eq!(caps.uidplus, caps.raw.iter().any(|c| c.eq_ignore_ascii_case("UIDPLUS")));
        assert_eq!(caps.literal_plus, caps.raw.iter().any(|c| c.eq_ignore_ascii_case("LITERAL+")));
        if let Some(limit) = caps.append_limit {
            assert!(caps.raw.iter().any(|c| c.split_once('=').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("APPENDLIMIT") && v.parse() == Ok(limit)
            })));
        }
    }
});
