//! OAuth2 access tokens for destinations that take no passwords (Gmail, Microsoft 365).
//!
//! A job whose destination holds a refresh-token grant gets one [`TokenProvider`] for its
//! whole run. The provider exchanges the refresh token at the authorization server's token
//! endpoint (RFC 6749 §6: a form POST, client authentication per §2.3.1), keeps the access
//! token until shortly before its `expires_in` runs out, and mints a new one when a
//! (re)connect finds it stale. A server that refuses a token we believed valid (it expired
//! early, or was revoked) gets exactly one freshly minted token on that connect
//! ([`crate::connect`]); a second refusal is a fatal authentication error.
//!
//! The token endpoint is reached like a mail endpoint: resolved once, checked against the
//! network policy, connected only at the checked addresses, TLS verified (private roots
//! from the endpoint's options), plaintext only where the host is allowed it, no redirects
//! (a redirect could lead past the policy) and no proxy from the environment.
//!
//! Rotation (RFC 6749 §6): when the server answers with a new refresh token, the old one
//! must be dropped. For a stored job ([`TokenProvider::saving_rotations`]) the new token is
//! sealed and saved into the job's spec (a compare-and-swap on the stored token) before the
//! access token that came with it is handed out, so a crash, a rerun or another worker's
//! takeover continues with the new token. A failed save fails the attempt (retryable) and
//! is tried again before the token is used; the provider never goes on with a rotation that
//! is not saved. Without a job store (`mailferry migrate`) the new token is kept in memory
//! for the rest of the run only.
//!
//! Errors: `invalid_grant` and the other RFC 6749 §5.2 refusals are fatal (retrying cannot
//! help, the refresh token must be replaced); 5xx, 429, timeouts and network failures are
//! retryable. Tokens, refresh tokens and client secrets are never logged.

mod error;
mod http;

use std::sync::Arc;
use std::time::Duration;

use mailferry_model::{Credential, ImapEndpoint, OAuth2Credential, OAuth2Refresh, Sealed, Sealer};
use mailferry_store::{JobId, JobSpecs};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use error::OAuth2Error;
use http::{form_encode, printable, read_bounded, request_error, ErrorReply, TokenReply};

use crate::sink::Target;

/// Refresh this long before the token's end, at most; short-lived tokens are refreshed
/// after half their life.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// A cached access token.
struct Cached {
    token: SecretString,
    /// When to stop using it; `None` when the server did not say (`expires_in` is optional):
    /// then only a refusal by the destination retires it.
    stale_at: Option<Instant>,
}

struct State {
    current: Option<Cached>,
    /// The server may rotate the refresh token with each use (RFC 6749 §6); keep the newest.
    refresh_token: SecretString,
    /// The refresh token as the job's spec holds it now (sealed), when rotations are saved.
    stored: Option<Sealed>,
    /// `refresh_token` was rotated and is not saved yet: no token is handed out until it is.
    unsaved: bool,
}

/// How a rotated refresh token is saved into a stored job: sealed with the job's sealer,
/// replacing `stored` (the sealed refresh token the job's spec held when it was claimed).
#[derive(Clone, Debug)]
pub struct SaveRotated {
    pub sealer: Sealer,
    pub stored: Sealed,
}

/// Where rotated refresh tokens go.
struct Saver {
    store: Arc<dyn JobSpecs>,
    job: JobId,
    sealer: Sealer,
}

/// Mints and caches access tokens from one refresh-token grant.
pub struct TokenProvider {
    grant: OAuth2Refresh,
    saver: Option<Saver>,
    /// Held across a refresh so concurrent callers wait for one exchange, not start many.
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider").field("grant", &self.grant).finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(grant: OAuth2Refresh) -> Self {
        let refresh_token = grant.refresh_token.clone();
        Self { grant, saver: None, state: Mutex::new(State { current: None, refresh_token, stored: None, unsaved: false }) }
    }

    /// Save every rotated refresh token into job `job`'s stored spec before using it.
    pub fn saving_rotations(mut self, store: Arc<dyn JobSpecs>, job: JobId, save: SaveRotated) -> Self {
        self.state.get_mut().stored = Some(save.stored);
        self.saver = Some(Saver { store, job, sealer: save.sealer });
        self
    }

    /// The provider a drain to `target` needs, if its credential is a refresh-token grant.
    pub fn for_target(target: &Target) -> Option<Self> {
        match target {
            Target::Imap(ImapEndpoint { credential: Credential::OAuth2(OAuth2Credential::Refresh(g)), .. }) => {
                Some(Self::new((**g).clone()))
            }
            _ => None,
        }
    }

    /// A token believed valid: the cached one while it is fresh, else a newly minted one.
    pub async fn access_token(&self) -> std::result::Result<SecretString, OAuth2Error> {
        let mut state = self.state.lock().await;
        self.save_rotation(&mut state).await?;
        if let Some(c) = &state.current {
            if c.stale_at.is_none_or(|t| Instant::now() < t) {
                return Ok(c.token.clone());
            }
            tracing::debug!("the OAuth2 access token is about to expire; refreshing it");
        }
        self.refresh(&mut state).await
    }

    /// Forget `rejected` (the destination refused it) and mint a new token.
    pub async fn replace(&self, rejected: &SecretString) -> std::result::Result<SecretString, OAuth2Error> {
        let mut state = self.state.lock().await;
        self.save_rotation(&mut state).await?;
        match &state.current {
            // Someone else already replaced it.
            Some(c) if c.token.expose_secret() != rejected.expose_secret() => Ok(c.token.clone()),
            _ => {
                state.current = None;
                self.refresh(&mut state).await
            }
        }
    }

    /// RFC 6749 §6: POST grant_type=refresh_token to the token endpoint.
    async fn refresh(&self, state: &mut State) -> std::result::Result<SecretString, OAuth2Error> {
        let (client, url, host) = http::client(&self.grant).await?;
        let mut form: Vec<(&str, &str)> =
            vec![("grant_type", "refresh_token"), ("refresh_token", state.refresh_token.expose_secret())];
        if let Some(scope) = &self.grant.scope {
            form.push(("scope", scope));
        }
        let mut request = client.post(url).header(reqwest::header::ACCEPT, "application/json");
        match &self.grant.client_secret {
            // RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret.
            Some(secret) => {
                request = request.basic_auth(form_encode(&self.grant.client_id), Some(form_encode(secret.expose_secret())));
            }
            // A public client identifies itself in the body (§3.2.1).
            None => form.push(("client_id", &self.grant.client_id)),
        }
        let response = request.form(&form).send().await.map_err(request_error)?;
        let status = response.status();
        let body = read_bounded(response).await?;
        if status.is_success() {
            let reply: TokenReply = serde_json::from_slice(&body)
                .map_err(|_| OAuth2Error::Malformed(format!("HTTP {} with a body that is not a token reply", status.as_u16())))?;
            if !reply.token_type.eq_ignore_ascii_case("bearer") {
                return Err(OAuth2Error::Malformed(format!("token_type {:?}, not Bearer", printable(&reply.token_type))));
            }
            if reply.access_token.is_empty() {
                return Err(OAuth2Error::Malformed("an empty access_token".into()));
            }
            let now = Instant::now();
            let stale_at = reply.expires_in.map(|secs| {
                let life = Duration::from_secs(secs);
                now + life.saturating_sub(MAX_MARGIN.min(life / 2))
            });
            let token = SecretString::from(reply.access_token);
            tracing::info!(token_host = %host, expires_in = ?reply.expires_in, "obtained an OAuth2 access token");
            state.current = Some(Cached { token: token.clone(), stale_at });
            if let Some(rotated) = reply.refresh_token.filter(|r| !r.is_empty() && r != state.refresh_token.expose_secret()) {
                // The old refresh token may be revoked already: from here on only the new one
                // is used, and the access token is handed out only once the new one is saved.
                state.refresh_token = SecretString::from(rotated);
                state.unsaved = true;
                tracing::info!(token_host = %host, "the authorization server rotated the OAuth2 refresh token");
                self.save_rotation(state).await?;
            }
            return Ok(token);
        }
        let code = status.as_u16();
        if status.is_server_error() || code == 429 || code == 408 {
            return Err(OAuth2Error::Unavailable(code));
        }
        // RFC 6749 §5.2: {"error": "...", "error_description": "..."}.
        let err: ErrorReply = serde_json::from_slice(&body).unwrap_or_default();
        let description = self.scrub(&printable(err.error_description.as_deref().unwrap_or("")), &state.refresh_token);
        match err.error.as_deref() {
            Some("invalid_grant") => Err(OAuth2Error::InvalidGrant(description)),
            Some(other) => Err(OAuth2Error::Refused { status: code, code: printable(other), description }),
            None => Err(OAuth2Error::Refused { status: code, code: "no error code".into(), description }),
        }
    }

    /// Save a rotated refresh token not saved yet (no-op otherwise, and without a saver).
    async fn save_rotation(&self, state: &mut State) -> std::result::Result<(), OAuth2Error> {
        if !state.unsaved {
            return Ok(());
        }
        let (Some(saver), Some(stored)) = (&self.saver, &state.stored) else {
            state.unsaved = false;
            return Ok(());
        };
        let sealed = saver.sealer.seal(&state.refresh_token);
        match saver.store.replace_refresh_token(saver.job, stored, &sealed).await {
            Ok(true) => {
                tracing::info!("saved the rotated OAuth2 refresh token to the job");
                state.stored = Some(sealed);
                state.unsaved = false;
                Ok(())
            }
            Ok(false) => {
                tracing::error!("the rotated OAuth2 refresh token was not saved: the job's stored one changed meanwhile");
                Err(OAuth2Error::RotationSuperseded)
            }
            Err(e) => {
                // A store error names the database's trouble, never a bound value.
                tracing::warn!(error = %e, "saving the rotated OAuth2 refresh token failed");
                Err(OAuth2Error::RotationNotSaved(e.to_string()))
            }
        }
    }

    /// Server-supplied text could quote what it was sent: never let a secret through.
    fn scrub(&self, text: &str, current: &SecretString) -> String {
        let mut out = text.to_owned();
        let mut secrets = vec![self.grant.refresh_token.expose_secret().to_owned(), current.expose_secret().to_owned()];
        secrets.extend(self.grant.client_secret.as_ref().map(|s| s.expose_secret().to_owned()));
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_model::ErrorClass;

    #[test]
    fn scrub_hides_the_grants_secrets() {
        let p = TokenProvider::new(OAuth2Refresh {
            token_url: "https://h/t".into(),
            client_id: "c".into(),
            client_secret: Some(SecretString::from("client-secret-1")),
            refresh_token: SecretString::from("refresh-token-1"),
            scope: None,
            tls: Default::default(),
        });
        let s = p.scrub("bad token refresh-token-1 for client-secret-1, rotated-2", &SecretString::from("rotated-2"));
        assert_eq!(s, "bad token [REDACTED] for [REDACTED], [REDACTED]");
        assert!(!format!("{p:?}").contains("refresh-token-1"));
    }

    /// Stored job specs that record rotations, failing while `down`.
    struct RotationStore {
        down: std::sync::atomic::AtomicBool,
        /// Whether the compare-and-swap matches.
        current: bool,
        saved: std::sync::Mutex<Vec<(Sealed, Sealed)>>,
    }

    #[async_trait::async_trait]
    impl mailferry_store::JobSpecs for RotationStore {
        async fn replace_refresh_token(&self, id: i64, current: &Sealed, new: &Sealed) -> mailferry_store::Result<bool> {
            assert_eq!(id, 7);
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(mailferry_store::StoreError::Unsupported("the database is down"));
            }
            self.saved.lock().unwrap().push((current.clone(), new.clone()));
            Ok(self.current)
        }
    }

    /// A token endpoint on loopback that rotates: answers every request with access token
    /// `at-N` and refresh token `rt-N`; returns its URL and the request bodies it saw.
    async fn rotating_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then a body as long as content-length says.
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                            .unwrap_or(0);
                        if body.len() >= len {
                            break body.to_owned();
                        }
                    }
                };
                let n = {
                    let mut seen = record.lock().unwrap();
                    seen.push(body);
                    seen.len()
                };
                let reply = format!(r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{n}"}}"#);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                sock.write_all(response.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    fn rotating_provider(url: &str, store: std::sync::Arc<RotationStore>, sealer: &Sealer) -> TokenProvider {
        let grant = OAuth2Refresh {
            token_url: url.into(),
            client_id: "c".into(),
            client_secret: None,
            refresh_token: SecretString::from("rt-0"),
            scope: None,
            tls: mailferry_model::TlsOptions {
                allow_plaintext: true,
                network: std::sync::Arc::new(mailferry_model::NetworkPolicy::parse([], Some(vec![])).unwrap()),
                ..Default::default()
            },
        };
        let stored = sealer.seal(&SecretString::from("rt-0"));
        TokenProvider::new(grant).saving_rotations(store, 7, SaveRotated { sealer: sealer.clone(), stored })
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_is_saved_before_its_access_token_is_used() {
        let sealer = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let (url, seen) = rotating_endpoint().await;
        let store = std::sync::Arc::new(RotationStore {
            down: true.into(),
            current: true,
            saved: Default::default(),
        });
        let p = rotating_provider(&url, std::sync::Arc::clone(&store), &sealer);

        // The save fails: no access token, a retryable error, and no secret in it.
        let e = p.access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::RotationNotSaved(_)), "{e}");
        assert_eq!(e.class(), ErrorClass::Retryable);
        assert!(!e.to_string().contains("rt-1"), "{e}");
        let e = p.replace(&SecretString::from("at-1")).await.unwrap_err();
        assert!(matches!(e, OAuth2Error::RotationNotSaved(_)), "not even a replacement: {e}");
        assert_eq!(seen.lock().unwrap().len(), 1, "no refresh with an unsaved rotation");

        // Once the store is back, the same rotation is saved first, then the token handed out.
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.access_token().await.unwrap().expose_secret(), "at-1");
        assert_eq!(seen.lock().unwrap().len(), 1, "the cached access token, no second refresh");
        {
            let saved = store.saved.lock().unwrap();
            assert_eq!(saved.len(), 1);
            assert_eq!(sealer.open(&saved[0].0).unwrap().expose_secret(), "rt-0");
            assert_eq!(sealer.open(&saved[0].1).unwrap().expose_secret(), "rt-1");
        }

        // The next refresh presents the rotated token, and saves its successor over it.
        assert_eq!(p.replace(&SecretString::from("at-1")).await.unwrap().expose_secret(), "at-2");
        assert!(seen.lock().unwrap()[1].contains("refresh_token=rt-1"), "{:?}", seen.lock().unwrap());
        let saved = store.saved.lock().unwrap();
        assert_eq!(saved.len(), 2);
        assert_eq!(saved[1].0, saved[0].1, "compare-and-swap on what was saved last");
        assert_eq!(sealer.open(&saved[1].1).unwrap().expose_secret(), "rt-2");
    }

    #[tokio::test]
    async fn a_rotation_superseded_in_the_store_is_fatal_and_not_used() {
        let sealer = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let (url, _) = rotating_endpoint().await;
        let store = std::sync::Arc::new(RotationStore { down: false.into(), current: false, saved: Default::default() });
        let p = rotating_provider(&url, store, &sealer);
        let e = p.access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::RotationSuperseded), "{e}");
        assert_eq!(e.class(), ErrorClass::Fatal);
    }

    #[tokio::test]
    async fn without_a_store_a_rotation_lives_in_memory() {
        let (url, seen) = rotating_endpoint().await;
        let grant = OAuth2Refresh {
            token_url: url,
            client_id: "c".into(),
            client_secret: None,
            refresh_token: SecretString::from("rt-0"),
            scope: None,
            tls: mailferry_model::TlsOptions {
                allow_plaintext: true,
                network: std::sync::Arc::new(mailferry_model::NetworkPolicy::parse([], Some(vec![])).unwrap()),
                ..Default::default()
            },
        };
        let p = TokenProvider::new(grant);
        assert_eq!(p.access_token().await.unwrap().expose_secret(), "at-1");
        assert_eq!(p.replace(&SecretString::from("at-1")).await.unwrap().expose_secret(), "at-2");
        assert!(seen.lock().unwrap()[1].contains("refresh_token=rt-1"));
    }

    #[tokio::test]
    async fn plaintext_and_policy_are_checked_before_any_request() {
        let grant = |url: &str, allow_plaintext: bool, deny: Option<Vec<&str>>| OAuth2Refresh {
            token_url: url.into(),
            client_id: "c".into(),
            client_secret: None,
            refresh_token: SecretString::from("r"),
            scope: None,
            tls: mailferry_model::TlsOptions {
                allow_plaintext,
                network: std::sync::Arc::new(mailferry_model::NetworkPolicy::parse([], deny).unwrap()),
                ..Default::default()
            },
        };
        let e = TokenProvider::new(grant("http://127.0.0.1:9/t", false, None)).access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::PlaintextRefused(_)), "{e}");
        let e = TokenProvider::new(grant("http://169.254.169.254/token", true, None)).access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::Denied(_)), "{e}");
        let e = TokenProvider::new(grant("https://u:p@127.0.0.1/t", true, None)).access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::BadUrl), "{e}");
        let e = TokenProvider::new(grant("ftp://127.0.0.1/t", true, None)).access_token().await.unwrap_err();
        assert!(matches!(e, OAuth2Error::BadUrl), "{e}");
        // Nothing listens on port 9 (discard): a network error, which is retryable.
        let e = TokenProvider::new(grant("http://127.0.0.1:9/t", true, Some(vec![]))).access_token().await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Retryable, "{e}");
    }
}
