//! Connecting to an IMAP destination, logging in with a password or with an OAuth2 access
//! token from the run's [`TokenProvider`]: a token the server refuses (it expired early, or
//! was revoked) is replaced once on that connect; a second refusal is a fatal
//! authentication error.

use mailferry_imap::{ImapError, ImapOptions, ImapSession};
use mailferry_model::ImapEndpoint;

use crate::error::{EngineError, Result};
use crate::oauth::{OAuth2Error, TokenProvider};

/// Connect to an IMAP destination. With a refresh-token grant, log in with the provider's
/// token; if the server refuses it, mint one new token and try once more.
pub(crate) async fn connect_imap(ep: &ImapEndpoint, opts: &ImapOptions, tokens: Option<&TokenProvider>) -> Result<ImapSession> {
    let dest = |source: ImapError| EngineError::Destination { endpoint: ep.display(), source };
    let oauth = |source: OAuth2Error| EngineError::OAuth2 { endpoint: ep.display(), source };
    let Some(tokens) = tokens else {
        return ImapSession::connect(ep, opts).await.map_err(dest);
    };
    let token = tokens.access_token().await.map_err(oauth)?;
    match ImapSession::connect(&ep.with_access_token(token.clone()), opts).await {
        Err(ImapError::AuthFailed(why)) => {
            tracing::info!(reason = %why, "the destination refused the OAuth2 access token; refreshing it once");
            let fresh = tokens.replace(&token).await.map_err(oauth)?;
            ImapSession::connect(&ep.with_access_token(fresh), opts).await.map_err(|e| match e {
                ImapError::AuthFailed(why) => {
                    dest(ImapError::AuthFailed(format!("{why}; a freshly refreshed OAuth2 access token was refused too")))
                }
                other => dest(other),
            })
        }
        other => other.map_err(dest),
    }
}
