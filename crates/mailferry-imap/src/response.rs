//! Reading the responses to the commands we speak ourselves on a connection async-imap
//! authenticated (`UID FETCH` for the destination index and the read-back, `UID SEARCH`):
//! one untagged response with its literals, and the tagged reply that ends a command.
//!
//! The server's numbers are bounded by what we allow: a body literal by a length check the
//! caller supplies (the index: the RFC822.SIZE the server announced; the read-back: the
//! hard cap), any other literal by [`MAX_SKIPPED_LITERAL`], the lines of one response by
//! [`MAX_LINE`] in all, and its literals by count. Bodies are hashed as they arrive, never
//! held, and the timeouts are the reader's, per line and per literal (reader.rs).

use sha2::{Digest, Sha256};

use crate::bodyhash::BodyHasher;
use tokio::io::AsyncRead;

use crate::error::{ImapError, Result};
use crate::fetch::{self, BodyItem, FetchData};
use crate::reader::{Reader, MAX_LINE, MAX_SKIPPED_LITERAL};
use crate::wire::{self, Line, Status};

/// Untagged responses other than FETCH we tolerate while waiting for one tagged reply.
pub(crate) const MAX_OTHER_UNTAGGED: usize = 100_000;
/// Lines and literals of one FETCH response.
const MAX_SEGMENTS: usize = 1024;

/// What one untagged response turned out to be.
pub(crate) enum Response {
    /// A FETCH response; `body` is the body item's literal, hashed as it arrived.
    Fetch { data: FetchData, body: Option<Body> },
    /// `* n EXISTS` (RFC 3501 §7.3.1).
    Exists(u64),
    /// Anything else, its literals (if any) skipped.
    Other { skeleton: Vec<u8> },
}

/// A body literal as it arrived: its SHA-256, the SHA-256 of what follows its header block
/// ([`BodyHasher`]), and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    pub digest: [u8; 32],
    pub body_digest: String,
    pub len: u64,
}

/// Read the rest of the untagged response that began with `first`. With `body_check`, the
/// first literal that is the value of `item` is passed to it by length (an error stops
/// there, before a byte of the literal is read) and then hashed as it arrives; every other
/// literal is skipped, at most [`MAX_SKIPPED_LITERAL`] bytes each.
pub(crate) async fn read<S: AsyncRead + Unpin>(
    reader: &mut Reader,
    stream: &mut S,
    first: Vec<u8>,
    item: BodyItem,
    mut body_check: Option<&mut (dyn FnMut(u64) -> Result<()> + Send)>,
) -> Result<Response> {
    let mut skeleton = first;
    let mut body = None;
    let mut segments = 0;
    while let Some(len) = wire::trailing_literal(&skeleton) {
        segments += 1;
        if segments > MAX_SEGMENTS {
            return Err(ImapError::Protocol(format!("a FETCH response of more than {MAX_SEGMENTS} literals")));
        }
        // RFC 3501 fixes no order for the items of a FETCH response: whether this literal
        // is the body is known only from the skeleton so far.
        let is_body = fetch::parse_fetch(&skeleton, item).ok().flatten().is_some_and(|f| f.last_literal_is_body);
        match body_check.as_mut() {
            Some(check) if is_body && body.is_none() => {
                check(len)?;
                let mut hasher = Sha256::new();
                let mut body_hasher = BodyHasher::default();
                reader
                    .literal(stream, len, |chunk| {
                        hasher.update(chunk);
                        body_hasher.push(chunk);
                    })
                    .await?;
                body = Some(Body { digest: hasher.finalize().into(), body_digest: body_hasher.finish(), len });
            }
            _ => {
                if len > MAX_SKIPPED_LITERAL {
                    return Err(ImapError::Protocol(format!(
                        "the destination sent an unrequested literal of {len} bytes (at most {MAX_SKIPPED_LITERAL} accepted)"
                    )));
                }
                reader.literal(stream, len, |_| {}).await?;
            }
        }
        let next = reader.line(stream).await?;
        if skeleton.len() + next.len() > MAX_LINE {
            return Err(ImapError::Protocol(format!("a FETCH response longer than {MAX_LINE} bytes besides its literals")));
        }
        skeleton.extend_from_slice(&next);
    }
    if let Some(n) = exists(&skeleton) {
        return Ok(Response::Exists(n));
    }
    match fetch::parse_fetch(&skeleton, item) {
        Ok(Some(data)) => Ok(Response::Fetch { data, body }),
        Ok(None) => Ok(Response::Other { skeleton }),
        Err(why) => Err(ImapError::Protocol(format!("unreadable FETCH response: {why}"))),
    }
}

/// For a reply line to our command `command` tagged `tag`: `true` for its tagged OK, an
/// error for its NO or BAD or for a reply we did not expect, `false` for untagged data.
pub(crate) fn tagged(command: &'static str, tag: &str, line: &[u8]) -> Result<bool> {
    match wire::parse_line(line).map_err(ImapError::Protocol)? {
        Line::Untagged => Ok(false),
        Line::Continuation => Err(ImapError::Protocol(format!("unexpected continuation request during {command}"))),
        Line::Tagged { tag: t, .. } if t != tag => Err(ImapError::Protocol(format!("reply for unknown tag {t}"))),
        Line::Tagged { status: Status::Ok, .. } => Ok(true),
        Line::Tagged { status: Status::No, text, .. } => {
            Err(ImapError::Refused { command, text: text.chars().take(200).collect() })
        }
        Line::Tagged { status: Status::Bad, text, .. } => {
            Err(ImapError::Protocol(format!("{command} answered BAD: {}", text.chars().take(200).collect::<String>())))
        }
    }
}

/// Count one untagged response that is none of those we wait for; too many is an error.
pub(crate) fn other_untagged(seen: &mut usize, command: &str) -> Result<()> {
    *seen += 1;
    if *seen > MAX_OTHER_UNTAGGED {
        return Err(ImapError::Protocol(format!("more than {MAX_OTHER_UNTAGGED} untagged responses and no answer to {command}")));
    }
    Ok(())
}

/// `* n EXISTS` (RFC 3501 §7.3.1).
pub(crate) fn exists(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"* ")?;
    let (n, word) = rest.split_at(rest.iter().position(|&b| b == b' ')?);
    if !word.trim_ascii().eq_ignore_ascii_case(b"EXISTS") || n.is_empty() || n.len() > 10 || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exists_lines() {
        assert_eq!(exists(b"* 23 EXISTS"), Some(23));
        assert_eq!(exists(b"* 23 exists"), Some(23));
        assert_eq!(exists(b"* 23 RECENT"), None);
        assert_eq!(exists(b"* 99999999999 EXISTS"), None);
        assert_eq!(exists(b"* EXISTS"), None);
    }

    #[test]
    fn tagged_replies() {
        assert!(!tagged("UID FETCH", "M1", b"* 1 FETCH (UID 2)").unwrap());
        assert!(tagged("UID FETCH", "M1", b"M1 OK done").unwrap());
        assert!(matches!(tagged("UID FETCH", "M1", b"M1 NO gone"), Err(ImapError::Refused { command: "UID FETCH", .. })));
        assert!(matches!(tagged("UID FETCH", "M1", b"M1 BAD what"), Err(ImapError::Protocol(_))));
        assert!(matches!(tagged("UID FETCH", "M1", b"M2 OK done"), Err(ImapError::Protocol(_))));
        assert!(matches!(tagged("UID FETCH", "M1", b"+ go"), Err(ImapError::Protocol(_))));
    }

    /// The body literal is hashed and measured whether the UID comes before or after it;
    /// other literals are skipped.
    #[tokio::test]
    async fn bodies_hashed_as_they_arrive() {
        let mut stream: &[u8] = b"abc BODY[] {5}\r\nhello UID 9)\r\n";
        let mut r = Reader::new(std::time::Duration::from_secs(5));
        let mut seen = Vec::new();
        let mut check = |len: u64| {
            seen.push(len);
            Ok(())
        };
        let first = b"* 3 FETCH (BODY[HEADER] {3}".to_vec();
        let got = read(&mut r, &mut stream, first, BodyItem::Body, Some(&mut check)).await.unwrap();
        let Response::Fetch { data, body } = got else { panic!("a FETCH response") };
        assert_eq!((data.uid, data.complete), (Some(9), true));
        assert_eq!(body, Some(Body { digest: Sha256::digest(b"hello").into(), body_digest: BodyHasher::of(b"hello"), len: 5 }));
        assert_eq!(seen, vec![5], "only the body literal is checked");
        assert!(stream.is_empty());
    }

    proptest! {
        #[test]
        fn exists_never_panics(line in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = exists(&line);
        }
    }
}
