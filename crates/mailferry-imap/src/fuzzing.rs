//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs; not a stable API).
//!
//! The reply-line parsers are public in [`crate::wire`] already. What the targets need
//! beyond them: the response reader the APPEND path and the destination index read with,
//! the FETCH parser of the index, the SEARCH parser of the read-back, the framing guard on
//! the bytes async-imap reads, and the capability list as the session derives it from what
//! async-imap parsed.

use std::collections::HashSet;
use std::time::Duration;

use async_imap::imap_proto::{Response, ResponseCode};
use async_imap::types::Capability;
use tokio::io::AsyncRead;

use crate::{Capabilities, Result};

/// The reader of [`crate::Appender`]: lines and literals, bounded in size and time.
#[derive(Debug)]
pub struct Reader(crate::reader::Reader);

impl Reader {
    pub fn new(timeout: Duration) -> Self {
        Self(crate::reader::Reader::new(timeout))
    }

    /// One line, without its CRLF.
    pub async fn line<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Vec<u8>> {
        self.0.line(stream).await
    }

    /// Skip the literals an untagged response announces, as the APPEND path does.
    pub async fn skip_rest<S: AsyncRead + Unpin>(&mut self, stream: &mut S, line: &[u8]) -> Result<()> {
        self.0.skip_rest(stream, line).await
    }
}

/// What [`parse_fetch`] made of a FETCH response skeleton (see `fetch.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub body_quoted: Option<Vec<u8>>,
    pub last_literal_is_body: bool,
    pub complete: bool,
}

/// The destination index's FETCH parser: `Ok(None)` for another untagged response.
pub fn parse_fetch(skeleton: &[u8]) -> std::result::Result<Option<Fetch>, String> {
    Ok(crate::fetch::parse_fetch(skeleton, crate::fetch::BodyItem::Body)?.map(|f| Fetch {
        seq: f.seq,
        uid: f.uid,
        size: f.size,
        body_quoted: f.body_quoted,
        last_literal_is_body: f.last_literal_is_body,
        complete: f.complete,
    }))
}

/// The read-back's `* SEARCH` parser: `Ok(None)` for another response; at most `max` UIDs.
pub fn parse_search(line: &[u8], max: usize) -> std::result::Result<Option<Vec<u32>>, String> {
    let mut uids = Vec::new();
    Ok(crate::uids::parse_search(line, &mut uids, max)?.then_some(uids))
}

/// Feed `chunks` to a fresh framing guard, as reads arrive; `Err` names the limit passed.
pub fn frame_guard<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> std::result::Result<(), String> {
    let mut guard = crate::guard::FrameGuard::default();
    chunks.into_iter().try_for_each(|c| guard.check(c))
}

/// Parse `bytes` as a sequence of server responses the way async-imap does (one
/// `imap_proto::Response::parse` after another, stopping at the first incomplete or
/// unparsable one), gather the capabilities of `* CAPABILITY` and `[CAPABILITY ...]`
/// (the greeting's) into a set as async-imap does, and derive ours from them.
pub fn capabilities(mut bytes: &[u8]) -> Capabilities {
    let mut set: HashSet<Capability> = HashSet::new();
    while let Ok((rest, response)) = Response::parse(bytes) {
        match &response {
            Response::Capabilities(cs) => set.extend(cs.iter().map(Capability::from)),
            Response::Data { outcome, .. } | Response::Done { outcome, .. } => {
                if let Some(ResponseCode::Capabilities(cs)) = &outcome.code {
                    set.extend(cs.iter().map(Capability::from));
                }
            }
            _ => {}
        }
        if rest.len() >= bytes.len() {
            break; // no progress: never loop forever on a parser that consumed nothing
        }
        bytes = rest;
    }
    Capabilities::from_list(set.iter())
}
