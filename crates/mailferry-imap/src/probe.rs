//! The destination's side of a preflight (issue 17): log in as a run would, then look
//! without changing anything: CAPABILITY, whether the target folder exists or could be
//! created (LIST only, never CREATE), and the quota (GETQUOTAROOT, RFC 2087 §4.3).

use async_imap::types::{NameAttribute, QuotaResourceName};
use futures::{FutureExt, TryStreamExt};
use mailferry_model::tls::PeerTls;
use mailferry_model::ImapEndpoint;

use crate::error::{ImapError, Result};
use crate::session::{lib_step, timed, wire_name, Capabilities, ImapOptions, ImapSession};

/// Most LIST responses read for one exact name (a pattern without wildcards names one
/// folder; a server answering more is not believed further).
const MAX_LIST_ANSWERS: usize = 16;

/// What the target folder looks like, from LIST alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderState {
    /// It exists (and can be selected unless `selectable` is false: `\Noselect`).
    Exists { selectable: bool },
    /// Missing; CREATE would make it: its parent exists and allows children, or it is at
    /// the top of the personal namespace, or its parent is missing too (CREATE makes the
    /// superior names, RFC 3501 §6.3.3).
    Creatable { parent: Option<String> },
    /// Missing, and its parent is marked `\Noinferiors` (RFC 3501 §7.2.2): CREATE would fail.
    NotCreatable { parent: String },
}

/// One quota root's storage figures, in bytes (RFC 2087 counts STORAGE in KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// What a preflight learns of the destination.
#[derive(Debug, Clone)]
pub struct DestinationProbe {
    pub capabilities: Capabilities,
    pub peer_tls: Option<PeerTls>,
    pub folder: FolderState,
    /// The tightest STORAGE quota over the folder's quota roots; `None` when the server
    /// has no QUOTA capability, refused GETQUOTAROOT, or sets no storage limit.
    pub quota: Option<QuotaUsage>,
}

impl ImapSession {
    /// Log in and look at the destination; nothing is created or selected. A reply the
    /// IMAP parser panics on is a protocol error, as in [`ImapSession::connect`].
    #[tracing::instrument(skip_all, err, fields(server.address = %ep.host, server.port = ep.port))]
    pub async fn probe(ep: &ImapEndpoint, opts: &ImapOptions) -> Result<DestinationProbe> {
        match std::panic::AssertUnwindSafe(probe_inner(ep, opts)).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err(ImapError::Protocol("a server reply the IMAP parser cannot handle".into())),
        }
    }
}

async fn probe_inner(ep: &ImapEndpoint, opts: &ImapOptions) -> Result<DestinationProbe> {
    let (mut session, capabilities) = ImapSession::login(ep, opts).await?;
    let peer_tls = session.get_ref().peer_tls();
    let folder = if ep.folder.eq_ignore_ascii_case("INBOX") {
        FolderState::Exists { selectable: true }
    } else {
        let wire = wire_name(&mut session, &ep.folder, opts.io_timeout).await?;
        match list_one(&mut session, &wire, opts).await? {
            Some(attrs) => FolderState::Exists { selectable: !attrs.no_select },
            None => match ep.folder.rsplit_once('/') {
                None => FolderState::Creatable { parent: None },
                Some((parent, _)) => {
                    let parent_wire = wire_name(&mut session, parent, opts.io_timeout).await?;
                    match list_one(&mut session, &parent_wire, opts).await? {
                        Some(a) if a.no_inferiors => FolderState::NotCreatable { parent: parent.to_owned() },
                        _ => FolderState::Creatable { parent: Some(parent.to_owned()) },
                    }
                }
            },
        }
    };
    let has_quota = capabilities.raw.iter().any(|c| c.eq_ignore_ascii_case("QUOTA") || c.to_ascii_uppercase().starts_with("QUOTA="));
    let quota = if has_quota {
        // The folder's roots when it exists; else INBOX's, where a new folder's usage counts
        // on the usual single-root servers.
        let name = match &folder {
            FolderState::Exists { .. } => wire_name(&mut session, &ep.folder, opts.io_timeout).await?,
            _ => "INBOX".to_owned(),
        };
        match timed(opts.io_timeout, "asking the quota", session.get_quota_root(&name)).await {
            Ok((_, quotas)) => tightest(quotas.iter().flat_map(|q| q.resources.iter()).filter_map(|r| match r.name {
                QuotaResourceName::Storage => Some((r.usage, r.limit)),
                _ => None,
            })),
            // A refused GETQUOTAROOT says nothing about the headroom; the run does not need it.
            Err(ImapError::Refused { .. }) => None,
            Err(e) => return Err(lib_step("GETQUOTAROOT", e)),
        }
    } else {
        None
    };
    let _ = timed(opts.io_timeout, "logging out", session.logout()).await;
    Ok(DestinationProbe { capabilities, peer_tls, folder, quota })
}

/// The root with the least headroom, from `(usage, limit)` in KiB (RFC 2087 §3).
pub(crate) fn tightest(storage: impl Iterator<Item = (u64, u64)>) -> Option<QuotaUsage> {
    storage
        .map(|(used, limit)| QuotaUsage { used_bytes: used.saturating_mul(1024), limit_bytes: limit.saturating_mul(1024) })
        .min_by_key(|q| q.limit_bytes.saturating_sub(q.used_bytes))
}

#[derive(Debug, Default, Clone, Copy)]
struct ListAttrs {
    no_select: bool,
    no_inferiors: bool,
}

/// LIST "" <name>: the folder's attributes when it exists. At most [`MAX_LIST_ANSWERS`]
/// answers are looked at.
async fn list_one(
    session: &mut async_imap::Session<crate::stream::Stream>,
    wire: &str,
    opts: &ImapOptions,
) -> Result<Option<ListAttrs>> {
    timed(opts.io_timeout, "listing the folder", async {
        let stream = session.list(Some(""), Some(wire)).await?;
        let mut seen = 0usize;
        stream
            .try_fold(None, |found: Option<ListAttrs>, n| {
                seen += 1;
                let mut attrs = found.unwrap_or_default();
                if seen <= MAX_LIST_ANSWERS && n.name() == wire {
                    for a in n.attributes() {
                        match a {
                            NameAttribute::NoSelect => attrs.no_select = true,
                            NameAttribute::NoInferiors => attrs.no_inferiors = true,
                            _ => {}
                        }
                    }
                    return futures::future::ok(Some(attrs));
                }
                futures::future::ok(found)
            })
            .await
    })
    .await
    .map_err(|e| lib_step("LIST", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tightest_root_wins() {
        let q = tightest([(10, 100), (90, 100), (0, 1000)].into_iter()).unwrap();
        assert_eq!(q, QuotaUsage { used_bytes: 90 * 1024, limit_bytes: 100 * 1024 });
        assert_eq!(tightest(std::iter::empty()), None);
    }

    proptest! {
        /// Server numbers: any pair, no overflow, no panic.
        #[test]
        fn tightest_never_overflows(pairs in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..8)) {
            let _ = tightest(pairs.into_iter());
        }
    }
}
