//! The I/O half of a preflight: log in to each side as a run would and ask, changing
//! nothing. POP3: CAPA, STAT, LIST, UIDL, then QUIT with no DELE (RFC 1939 §6: nothing is
//! committed). IMAP: CAPABILITY, LIST of the folder and its parent, GETQUOTAROOT; never
//! CREATE, SELECT or APPEND. An archive target is opened as a run opens it.

use mailferry_imap::{FolderState, ImapError, ImapSession};
use mailferry_model::preflight::{LargeMessage, Reason, ReasonCode, TlsFacts};
use mailferry_model::tls::PeerTls;
use mailferry_model::{ImapAuth, OAuth2Credential, Credential, Security};
use mailferry_pop3::{Pop3Error, Pop3Session};

use crate::job::{DrainJob, EngineConfig};
use crate::oauth::TokenProvider;
use crate::sink::Target;

use super::verdict::Findings;

/// How many of the largest messages the report names.
const LARGEST: usize = 5;

/// The longest server text kept in a reason's detail.
const MAX_DETAIL_CHARS: usize = 300;

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_DETAIL_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().nth(MAX_DETAIL_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn tls_facts(p: &PeerTls) -> TlsFacts {
    TlsFacts {
        version: p.version.clone(),
        subject: p.certificate.as_ref().map(|c| c.subject.clone()),
        not_after: p.certificate.as_ref().and_then(|c| c.validity.as_ref()).map(|(_, to)| to.clone()),
        fingerprint: p.certificate.as_ref().map(|c| c.sha256.clone()),
    }
}

/// The reason a POP3 failure gives (the error texts carry no credential).
pub(crate) fn pop3_reason(e: &Pop3Error) -> Reason {
    let code = match e {
        Pop3Error::AuthFailed { .. } | Pop3Error::MechanismUnavailable { .. } => ReasonCode::SourceLoginFailed,
        Pop3Error::Tls { .. } | Pop3Error::StlsUnavailable { .. } | Pop3Error::PlaintextRefused => ReasonCode::SourceTlsFailed,
        Pop3Error::Io(_) | Pop3Error::Timeout { .. } | Pop3Error::Denied(_) => ReasonCode::SourceUnreachable,
        _ => ReasonCode::SourceError,
    };
    Reason { code, detail: clip(&format!("source: {e}")) }
}

/// The reason an IMAP failure gives.
pub(crate) fn imap_reason(e: &ImapError) -> Reason {
    let code = match e {
        ImapError::AuthFailed(_) | ImapError::NeedsAccessToken => ReasonCode::TargetLoginFailed,
        ImapError::Tls(_) | ImapError::StartTlsUnavailable | ImapError::PlaintextRefused => ReasonCode::TargetTlsFailed,
        ImapError::Io(_) | ImapError::Timeout(_) | ImapError::Denied(_) => ReasonCode::TargetUnreachable,
        _ => ReasonCode::TargetError,
    };
    Reason { code, detail: clip(&format!("target: {e}")) }
}

/// Check the source: fills `f.source`, `f.sizes`, or adds the failure.
pub(crate) async fn source(job: &DrainJob, config: &EngineConfig, f: &mut Findings) {
    let ep = &job.source;
    f.source.endpoint = format!("pop3 {}@{}:{}", ep.username, ep.host, ep.port);
    f.source_plaintext = ep.security == Security::None;
    let mut s = match Pop3Session::connect(ep, &config.pop3).await {
        Ok(s) => s,
        Err(e) => return f.failures.push(pop3_reason(&e)),
    };
    f.source.logged_in = true;
    f.source.mechanism = Some(s.mechanism().to_owned());
    if let Some(p) = s.peer_tls() {
        f.source.tls = Some(tls_facts(p));
        f.source_not_after = p.not_after_unix;
    }
    let caps = s.capabilities().clone();
    f.source.pipelining = caps.pipelining;
    f.source.sasl = caps.sasl.clone();
    f.source.login_delay = caps.login_delay;
    let result = async {
        let (count, bytes) = s.stat().await?;
        f.source.messages = u64::from(count);
        f.source.bytes = bytes;
        let mut list = s.list().await?;
        f.sizes = list.iter().map(|(_, b)| *b).collect();
        list.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
        f.source.largest = list.iter().take(LARGEST).map(|&(number, bytes)| LargeMessage { number, bytes }).collect();
        // Legacy servers may have UIDL without CAPA: ask unless CAPA said otherwise.
        if caps.uidl || !caps.answered {
            match s.uidl().await {
                Ok(u) => {
                    f.source.uidl = true;
                    f.source.duplicate_uidls = u.duplicates.len() as u64;
                    f.source.invalid_uidls = u.invalid.len() as u64;
                }
                Err(Pop3Error::Server { .. }) => f.source.uidl = false,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, Pop3Error>(())
    }
    .await;
    match result {
        // QUIT with no DELE commits nothing; its failure changes nothing either.
        Ok(()) => {
            let _ = s.quit().await;
        }
        Err(e) => f.failures.push(pop3_reason(&e)),
    }
}

/// Check the destination: fills `f.target`, or adds the failure.
pub(crate) async fn target(job: &DrainJob, config: &EngineConfig, f: &mut Findings) {
    f.target.endpoint = job.target.display();
    match &job.target {
        Target::Archive(a) => {
            f.imap_target = false;
            if a.archive.is_read_only() {
                f.failures.push(Reason {
                    code: ReasonCode::ArchiveReadOnly,
                    detail: format!("archive {} is open read-only in this process", a.name),
                });
            } else {
                f.target.logged_in = true;
            }
        }
        Target::Imap(ep) => {
            f.imap_target = true;
            f.target_plaintext = ep.security == Security::None;
            f.target.mechanism = Some(
                match (&ep.credential, ep.auth) {
                    (Credential::OAuth2(_), _) | (_, ImapAuth::Xoauth2) => "AUTHENTICATE XOAUTH2",
                    (_, ImapAuth::Plain) => "AUTHENTICATE PLAIN",
                    _ => "LOGIN",
                }
                .to_owned(),
            );
            // A refresh-token grant: mint an access token as the run would.
            let minted;
            let ep = match (&ep.credential, TokenProvider::for_target(&job.target)) {
                (Credential::OAuth2(OAuth2Credential::Refresh(_)), Some(tokens)) => match tokens.access_token().await {
                    Ok(t) => {
                        minted = ep.with_access_token(t);
                        &minted
                    }
                    Err(e) => {
                        return f.failures.push(Reason {
                            code: ReasonCode::TargetLoginFailed,
                            detail: clip(&format!("target: OAuth2: {e}")),
                        })
                    }
                },
                _ => ep,
            };
            let probe = match ImapSession::probe(ep, &config.imap).await {
                Ok(p) => p,
                Err(e) => return f.failures.push(imap_reason(&e)),
            };
            let t = &mut f.target;
            t.logged_in = true;
            if let Some(p) = &probe.peer_tls {
                t.tls = Some(tls_facts(p));
                f.target_not_after = p.not_after_unix;
            }
            let c = &probe.capabilities;
            t.capabilities = c.raw.iter().take(64).map(|s| clip(s)).collect();
            (t.uidplus, t.multiappend, t.literal_plus, t.binary, t.append_limit) =
                (c.uidplus, c.multiappend, c.literal_plus, c.binary, c.append_limit);
            t.folder = Some(
                match probe.folder {
                    FolderState::Exists { selectable: true } => "exists",
                    FolderState::Exists { selectable: false } => "not selectable",
                    FolderState::Creatable { .. } => "will be created",
                    FolderState::NotCreatable { .. } => "cannot be created",
                }
                .to_owned(),
            );
            if let Some(q) = probe.quota {
                (t.quota_used_bytes, t.quota_limit_bytes) = (Some(q.used_bytes), Some(q.limit_bytes));
            }
        }
    }
}
