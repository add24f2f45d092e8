//! Opening a folder read-only, to check copies that are already there (`mailferry receipt
//! verify --against`): `EXAMINE` (RFC 3501 §6.3.2) instead of `SELECT`, and a folder that
//! does not exist is reported as such, never created. [`crate::ImapSession::connect`]
//! creates and selects its endpoint's folder, which suits a migration, not a check: the
//! checker connects with INBOX (which always exists, RFC 3501 §5.1) and examines the
//! folder it was asked about here.

use async_imap::types::NameAttribute;
use futures::TryStreamExt;

use super::Appender;
use crate::error::{ImapError, Result};

/// The folder as EXAMINE found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Examined {
    pub exists: u32,
    pub uid_validity: Option<u32>,
}

impl Appender {
    /// `EXAMINE` `folder` (UTF-8, `/` between levels, as in an endpoint URL): it becomes
    /// the folder [`Self::sizes`] and [`Self::read_back`] read from, read-only. `Ok(None)`
    /// when the server lists no such folder (or lists it `\Noselect`); nothing is created.
    ///
    /// Must come before any other command of this `Appender`: it goes through async-imap's
    /// session, which may only be used while our own reader holds nothing (`NotSent`
    /// otherwise). The `Appender` is then for reading: do not append through it.
    pub async fn examine(&mut self, folder: &str) -> Result<Option<Examined>> {
        if self.next_tag != 1 {
            return Err(ImapError::NotSent("EXAMINE must be the first command of the connection we drive".into()));
        }
        let limit = self.timeout;
        // As `ImapSession::connect` names it: the server's separator, modified UTF-7.
        let wire = crate::session::wire_name(&mut self.session, folder, limit).await?;
        // RFC 3501 §6.3.8: a LIST reply for the name itself; `\Noselect` cannot be examined.
        let selectable = timed(limit, "listing folders", async {
            self.session
                .list(Some(""), Some(&wire))
                .await?
                .try_fold(None, |found: Option<bool>, n| async move {
                    let selectable = !n.attributes().iter().any(|a| matches!(a, NameAttribute::NoSelect));
                    Ok(Some(found.unwrap_or(false) || selectable))
                })
                .await
        })
        .await
        .map_err(|e| step("LIST", e))?;
        if selectable != Some(true) {
            return Ok(None);
        }
        let mailbox = timed(limit, "examining the folder", self.session.examine(&wire)).await.map_err(|e| step("EXAMINE", e))?;
        self.folder = wire;
        self.uid_validity = mailbox.uid_validity;
        Ok(Some(Examined { exists: mailbox.exists, uid_validity: mailbox.uid_validity }))
    }
}

async fn timed<T>(
    limit: std::time::Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = std::result::Result<T, async_imap::error::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| ImapError::from_lib("IMAP command", e)),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

/// Name the step in an async-imap error.
fn step(command: &'static str, e: ImapError) -> ImapError {
    match e {
        ImapError::Refused { text, .. } => ImapError::Refused { command, text },
        ImapError::Protocol(text) => ImapError::Protocol(format!("{command}: {text}")),
        other => other,
    }
}
