//! The pure half of the POP3 client: building commands, parsing replies and
//! (un)stuffing multi-line bodies, all on byte slices and strings, with no I/O.
//! The session (`crate::session`) owns the socket and calls into this module, in the
//! split mini-redis makes between `frame.rs` and `connection.rs`.

mod dot;
mod line;
mod reply;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use secrecy::zeroize::Zeroizing;

pub use dot::{stuff, Fed, Unstuffer};
pub use line::{line_text, scan_line, Scan};
pub use reply::{
    apop_timestamp, parse_auth_reply, parse_scan_listing, parse_status, parse_uidl_line,
    validate_uid, AuthReply, BadUidl, Capabilities, RespCode, Status,
};
pub(crate) use reply::clip;

/// RFC 5034 §4: an AUTH command with its initial response must fit in 255 octets
/// (CRLF included); a longer response is sent after an empty `+ ` challenge instead.
pub const MAX_AUTH_COMMAND: usize = 255;

/// A command to the server. Arguments are borrowed so that secrets are never copied
/// into a longer-lived value; [`Command::name`] is what logs and errors may show.
#[derive(Clone, Copy)]
pub enum Command<'a> {
    Capa,
    Stls,
    User(&'a str),
    /// The argument is the password: never shown, see the `Debug` impl.
    Pass(&'a str),
    Apop { user: &'a str, digest: &'a str },
    Auth { mechanism: &'a str, initial: Option<&'a str> },
    /// A line answering a SASL challenge: base64, `*` to cancel, or empty (RFC 5034 §4).
    SaslResponse(&'a str),
    Stat,
    List,
    Uidl,
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
}

/// A command argument would have broken the line (CR, LF or NUL in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadArgument {
    pub command: &'static str,
}

impl std::fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the verb: AUTH/PASS/APOP arguments are credentials.
        f.write_str(self.name())
    }
}

impl Command<'_> {
    /// The verb, safe for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::Auth { .. } => "AUTH",
            Self::SaslResponse(_) => "AUTH",
            Self::Stat => "STAT",
            Self::List => "LIST",
            Self::Uidl => "UIDL",
            Self::Retr(_) => "RETR",
            Self::Dele(_) => "DELE",
            Self::Noop => "NOOP",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
        }
    }

    /// Append the command line, CRLF included, to `out`. Arguments holding CR, LF or NUL
    /// are refused: a username like `bob\r\nDELE 1` must not inject a command.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BadArgument> {
        let bad = BadArgument { command: self.name() };
        let args: [Option<&str>; 2] = match *self {
            Self::User(a) | Self::Pass(a) | Self::SaslResponse(a) => [Some(a), None],
            Self::Apop { user, digest } => [Some(user), Some(digest)],
            Self::Auth { mechanism, initial } => [Some(mechanism), initial],
            _ => [None, None],
        };
        if args.iter().flatten().any(|a| a.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))) {
            return Err(bad);
        }
        match *self {
            Self::SaslResponse(a) => out.extend_from_slice(a.as_bytes()),
            Self::Retr(n) | Self::Dele(n) => out.extend_from_slice(format!("{} {n}", self.name()).as_bytes()),
            _ => {
                out.extend_from_slice(self.name().as_bytes());
                for arg in args.iter().flatten() {
                    out.push(b' ');
                    out.extend_from_slice(arg.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// RFC 1939 §7: the APOP digest, MD5 of the greeting timestamp (brackets included)
/// followed by the shared secret, in lowercase hex.
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    hex::encode(md5.finalize())
}

/// RFC 4616 PLAIN initial response, base64: `authzid NUL authcid NUL passwd` with an
/// empty authzid.
pub fn sasl_plain(user: &str, password: &str) -> Zeroizing<String> {
    let raw = Zeroizing::new(format!("\0{user}\0{password}"));
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
}

/// The XOAUTH2 initial response, base64: `user=U ^A auth=Bearer T ^A ^A`.
pub fn sasl_xoauth2(user: &str, token: &str) -> Zeroizing<String> {
    let raw = Zeroizing::new(format!("user={user}\x01auth=Bearer {token}\x01\x01"));
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
}

/// Decode a base64 SASL challenge for an error message (XOAUTH2 sends a JSON error);
/// falls back to the raw text when it is not base64 or not UTF-8.
pub fn decode_challenge(challenge: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(challenge)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| challenge.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(c: Command<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        c.encode(&mut v).unwrap();
        v
    }

    #[test]
    fn commands_encode() {
        assert_eq!(enc(Command::Capa), b"CAPA\r\n");
        assert_eq!(enc(Command::Retr(17)), b"RETR 17\r\n");
        assert_eq!(enc(Command::Dele(3)), b"DELE 3\r\n");
        assert_eq!(enc(Command::User("bob")), b"USER bob\r\n");
        assert_eq!(enc(Command::Pass("a secret")), b"PASS a secret\r\n");
        assert_eq!(enc(Command::Apop { user: "mrose", digest: "abc" }), b"APOP mrose abc\r\n");
        assert_eq!(enc(Command::Auth { mechanism: "PLAIN", initial: Some("AGI=") }), b"AUTH PLAIN AGI=\r\n");
        assert_eq!(enc(Command::Auth { mechanism: "XOAUTH2", initial: None }), b"AUTH XOAUTH2\r\n");
        assert_eq!(enc(Command::SaslResponse("")), b"\r\n");
    }

    #[test]
    fn injection_is_refused_and_debug_hides_arguments() {
        let mut v = Vec::new();
        assert_eq!(Command::User("bob\r\nDELE 1").encode(&mut v), Err(BadArgument { command: "USER" }));
        assert!(Command::Pass("x\ny").encode(&mut v).is_err());
        assert!(Command::Pass("x\0y").encode(&mut v).is_err());
        assert!(v.is_empty());
        assert_eq!(format!("{:?}", Command::Pass("hunter2")), "PASS");
    }

    #[test]
    fn apop_digest_matches_rfc_1939_example() {
        // RFC 1939 §7, the APOP example.
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn sasl_initial_responses() {
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        assert_eq!(sasl_plain("tim", "tanstaaftanstaaf").as_str(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        let x = sasl_xoauth2("u@example.com", "tok");
        assert_eq!(decode_challenge(&x), "user=u@example.com\x01auth=Bearer tok\x01\x01");
        assert_eq!(decode_challenge("not base64!"), "not base64!");
    }
}
