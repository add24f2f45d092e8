//! Connecting, securing and authenticating an IMAP session with async-imap, and preparing
//! the target folder. Every network await is bounded by a timeout (DESIGN.md §2.4).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_imap::types::Capability;
use async_imap::{Authenticator, Client, Session};
use futures::{FutureExt, TryStreamExt};
use mailferry_model::{Credential, ImapAuth, ImapEndpoint, OAuth2Credential, Security};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ImapError, Result};
use crate::index::DestinationIndex;
use crate::mutf7;
use crate::reader::Reader;
use crate::stream::Stream;
use crate::append::Appender;

/// Timeouts and limits for the destination.
#[derive(Debug, Clone)]
pub struct ImapOptions {
    pub connect_timeout: Duration,
    /// Bound on each write, and on each response line or literal we read (a stalled or
    /// trickling server cannot hang a job; a literal also gets time for its length, see
    /// reader.rs).
    pub io_timeout: Duration,
    /// Largest destination message the destination index and the read-back read (it is
    /// hashed as it arrives, so this bounds time, not memory); larger ones are not indexed,
    /// and a read-back literal above it is an error. Default 1 GiB, as the POP3 side's
    /// `max_message_bytes`, so whatever we could have copied can be found and read again.
    pub max_message_bytes: u64,
}

impl Default for ImapOptions {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(30), io_timeout: Duration::from_secs(120), max_message_bytes: 1 << 30 }
    }
}

/// What the destination offers that changes how we APPEND.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Non-synchronising literals (RFC 7888): no round trip per message.
    pub literal_plus: bool,
    /// Several messages in one APPEND, one transaction (RFC 3502).
    pub multiappend: bool,
    /// APPENDUID in the tagged OK (RFC 4315).
    pub uidplus: bool,
    /// Largest message the server accepts (RFC 7889).
    pub append_limit: Option<u64>,
    /// literal8 for messages with NUL bytes (RFC 3516).
    pub binary: bool,
    pub raw: Vec<String>,
}

impl Capabilities {
    fn from_lib(caps: &async_imap::types::Capabilities) -> Self {
        Self::from_list(caps.iter())
    }

    /// The capabilities as async-imap parsed them (also the fuzz targets' way in, since
    /// async-imap's own set cannot be built outside a session).
    pub(crate) fn from_list<'a>(caps: impl Iterator<Item = &'a Capability>) -> Self {
        let raw: Vec<String> = caps
            .map(|c| match c {
                Capability::Imap4rev1 => "IMAP4rev1".to_owned(),
                Capability::Auth(m) => format!("AUTH={m}"),
                Capability::Atom(a) => a.to_string(),
            })
            .collect();
        let has = |name: &str| raw.iter().any(|c| c.eq_ignore_ascii_case(name));
        let append_limit = raw.iter().find_map(|c| {
            let (k, v) = c.split_once('=')?;
            k.eq_ignore_ascii_case("APPENDLIMIT").then(|| v.parse().ok()).flatten()
        });
        Self {
            literal_plus: has("LITERAL+"),
            multiappend: has("MULTIAPPEND"),
            uidplus: has("UIDPLUS"),
            binary: has("BINARY"),
            append_limit,
            raw,
        }
    }
}

/// An authenticated session with the target folder created and selected.
#[derive(Debug)]
pub struct ImapSession {
    session: Session<Stream>,
    caps: Capabilities,
    /// Folder name as sent on the wire (modified UTF-7, server's hierarchy separator).
    wire_folder: String,
    exists: u32,
    uid_validity: Option<u32>,
    opts: ImapOptions,
    endpoint: String,
    /// Our read side of the connection once we drive it ourselves (index, then APPEND).
    reader: Reader,
}

pub(crate) async fn timed<T, E>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    ImapError: From<E>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(ImapError::from),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

async fn tls_wrap(tcp: TcpStream, ep: &ImapEndpoint, opts: &ImapOptions) -> Result<Stream> {
    let config = ep.tls.client_config().map_err(|e| ImapError::Tls(e.to_string()))?;
    let name = server_name(&ep.host)?;
    let tls = tokio::time::timeout(opts.connect_timeout, TlsConnector::from(Arc::clone(&config)).connect(name, tcp))
        .await
        .map_err(|_| ImapError::Timeout("negotiating TLS"))?
        // A refused certificate is named (subject, validity, fingerprints) so it can be pinned.
        .map_err(|e| {
            let text = match mailferry_model::tls::rustls_error(&e) {
                Some(tls) => mailferry_model::tls::failure_text(tls),
                None => mailferry_model::tls::handshake_eof_text(&e).unwrap_or_else(|| e.to_string()),
            };
            ImapError::Tls(text)
        })?;
    Ok(Stream::tls(tls))
}

/// The host without the brackets of an IPv6 literal (`[::1]`, as in a URL, RFC 3986
/// §3.2.2): what to resolve and what to name in TLS.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// The name the server's certificate must match: an IP literal is an address, matched
/// against the certificate's IP address entries (RFC 6125 §1.7.2 leaves IPs to RFC 5280
/// iPAddress SANs), and never keeps its brackets; anything else must be a DNS name.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>> {
    use rustls::pki_types::ServerName;
    let bare = unbracketed(host);
    if bare.len() != host.len() {
        return match bare.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
            Err(_) => Err(ImapError::Tls(format!("{host:?} is not an IPv6 address in brackets"))),
        };
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| ImapError::Tls(format!("{host:?} is not a valid TLS server name")))
}

async fn read_greeting(client: &mut Client<Stream>, opts: &ImapOptions) -> Result<()> {
    use async_imap::imap_proto::{Response, Status};
    let greeting = tokio::time::timeout(opts.io_timeout, client.read_response())
        .await
        .map_err(|_| ImapError::Timeout("waiting for the greeting"))?
        .map_err(ImapError::from_io)?
        .ok_or(ImapError::Closed)?;
    match greeting.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, .. } => Ok(()),
        Response::Data { status: Status::Bye, outcome, .. } => {
            Err(ImapError::Greeting(outcome.information.as_deref().unwrap_or("BYE").to_owned()))
        }
        other => Err(ImapError::Protocol(format!("unexpected greeting {other:?}"))),
    }
}

struct Plain<'a> {
    user: &'a str,
    secret: &'a str,
}

impl Authenticator for Plain<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        // RFC 4616: authzid NUL authcid NUL passwd (empty authzid).
        format!("\0{}\0{}", self.user, self.secret)
    }
}

struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
    sent: bool,
    /// The server's JSON error challenge, if it sent one (e.g. `{"status":"401",...}`).
    error: &'a mut Option<String>,
}

impl Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&mut self, challenge: &[u8]) -> String {
        // After a failure the server sends a JSON error as a challenge; answering it with an
        // empty line ends the exchange with the tagged NO.
        if std::mem::replace(&mut self.sent, true) {
            *self.error = Some(printable(challenge, 200));
            return String::new();
        }
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

/// Server text for an error message: printable ASCII only, bounded.
fn printable(bytes: &[u8], max: usize) -> String {
    bytes.iter().take(max).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }).collect()
}

impl ImapSession {
    /// Connect, secure, authenticate, then create (if needed) and select the target folder.
    // Host and port only: the user name is often a mail address, and spans are exported.
    #[tracing::instrument(skip_all, err, fields(server.address = %ep.host, server.port = ep.port))]
    pub async fn connect(ep: &ImapEndpoint, opts: &ImapOptions) -> Result<Self> {
        // async-imap's parser (imap-proto 0.17.0) panics on some server bytes: the text after
        // a response code is sliced at byte 1, inside the character when a non-ASCII byte
        // follows the `]` directly (`* OK [ALERT]é`; found by fuzz/fuzz_targets/
        // imap_capability.rs). Such a reply is a protocol error like any other garbage, not
        // a panic. Unwind safety: all that the panic interrupts (the connection, the
        // half-built session) is dropped right here; `ep` and `opts` are only read.
        match std::panic::AssertUnwindSafe(Self::setup(ep, opts)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let why = panic.downcast_ref::<&str>().copied().or(panic.downcast_ref::<String>().map(String::as_str));
                let why: String = why.unwrap_or("no message").chars().take(200).collect();
                Err(ImapError::Protocol(format!("a server reply the IMAP parser cannot handle ({why})")))
            }
        }
    }

    async fn setup(ep: &ImapEndpoint, opts: &ImapOptions) -> Result<Self> {
        let (mut session, caps) = Self::login(ep, opts).await?;
        let wire_folder = Self::ensure_folder(&mut session, &ep.folder, opts).await?;
        let mailbox = timed(opts.io_timeout, "selecting the folder", session.select(&wire_folder))
            .await
            .map_err(|e| lib_step("SELECT", e))?;
        Ok(Self {
            session,
            caps,
            wire_folder,
            exists: mailbox.exists,
            uid_validity: mailbox.uid_validity,
            opts: opts.clone(),
            endpoint: ep.display(),
            reader: Reader::new(opts.io_timeout),
        })
    }

    /// Connect, secure and authenticate; the capabilities after login. Nothing is created
    /// (the preflight stops here too).
    pub(crate) async fn login(ep: &ImapEndpoint, opts: &ImapOptions) -> Result<(Session<Stream>, Capabilities)> {
        // A job whose flags cannot be set fails before anything is copied, whoever
        // validated (or did not validate) the job: `\Deleted` on copies would let the
        // destination expunge them after the source was emptied.
        if let Some(why) = ep.flags.iter().find_map(|f| crate::wire::flag_problem(f)) {
            return Err(ImapError::InvalidFlag(why));
        }
        if ep.security == Security::None && !ep.tls.allow_plaintext {
            return Err(ImapError::PlaintextRefused);
        }
        // Resolve, check against the network policy, connect only to the checked addresses.
        let host = unbracketed(&ep.host);
        let addrs: Vec<std::net::SocketAddr> =
            tokio::time::timeout(opts.connect_timeout, tokio::net::lookup_host((host, ep.port)))
                .await
                .map_err(|_| ImapError::Timeout("resolving the server's name"))??
                .collect();
        let ips: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        ep.tls.network.check(host, &ips).map_err(ImapError::Denied)?;
        let tcp = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addrs[..]))
            .await
            .map_err(|_| ImapError::Timeout("connecting"))??;
        tcp.set_nodelay(true)?;
        let client = match ep.security {
            Security::Tls => {
                let mut c = Client::new(tls_wrap(tcp, ep, opts).await?);
                read_greeting(&mut c, opts).await?;
                c
            }
            Security::Starttls => {
                let mut c = Client::new(Stream::plain(tcp));
                read_greeting(&mut c, opts).await?;
                // RFC 3501 §6.2.1. A refusal is an error: never fall back to plaintext.
                timed(opts.io_timeout, "starting TLS", c.run_command_and_check_ok("STARTTLS", None))
                    .await
                    .map_err(|_| ImapError::StartTlsUnavailable)?;
                let tcp = c.into_inner().into_plain().ok_or_else(|| ImapError::Tls("STARTTLS on a TLS stream".into()))?;
                Client::new(tls_wrap(tcp, ep, opts).await?)
            }
            Security::None => {
                let mut c = Client::new(Stream::plain(tcp));
                read_greeting(&mut c, opts).await?;
                c
            }
        };
        // An OAuth2 credential always means XOAUTH2; a password means what `auth` says.
        let (secret, auth) = match &ep.credential {
            Credential::Password(p) => (p.expose_secret(), ep.auth),
            Credential::OAuth2(OAuth2Credential::AccessToken(t)) => (t.expose_secret(), ImapAuth::Xoauth2),
            Credential::OAuth2(OAuth2Credential::Refresh(_)) => return Err(ImapError::NeedsAccessToken),
        };
        let mut xoauth2_error = None;
        let login = async {
            match auth {
                ImapAuth::Auto | ImapAuth::Login => client.login(&ep.username, secret).await,
                ImapAuth::Plain => client.authenticate("PLAIN", Plain { user: &ep.username, secret }).await,
                ImapAuth::Xoauth2 => {
                    let xoauth2 = XOAuth2 { user: &ep.username, token: secret, sent: false, error: &mut xoauth2_error };
                    client.authenticate("XOAUTH2", xoauth2).await
                }
            }
        };
        let result = tokio::time::timeout(opts.io_timeout, login).await;
        let mut session = match result {
            Err(_) => return Err(ImapError::Timeout("authenticating")),
            Ok(Ok(s)) => s,
            Ok(Err((e, _client))) => {
                return Err(match e {
                    async_imap::error::Error::No(text) | async_imap::error::Error::Bad(text) => match xoauth2_error {
                        // RFC 7628 §3.2.2 (which XOAUTH2 follows): the challenge says why.
                        Some(why) => ImapError::AuthFailed(format!("{text} (XOAUTH2 error: {why})")),
                        None => ImapError::AuthFailed(text),
                    },
                    other => ImapError::from_lib("LOGIN", other),
                });
            }
        };
        let caps = timed(opts.io_timeout, "reading CAPABILITY", session.capabilities())
            .await
            .map_err(|e| lib_step("CAPABILITY", e))?;
        let caps = Capabilities::from_lib(&caps);
        tracing::debug!(capabilities = ?caps.raw, "imap session ready");
        Ok((session, caps))
    }

    /// Translate the folder to the server's separator and modified UTF-7, and create it
    /// when missing (RFC 3501 §6.3.3).
    async fn ensure_folder(session: &mut Session<Stream>, folder: &str, opts: &ImapOptions) -> Result<String> {
        if folder.eq_ignore_ascii_case("INBOX") {
            return Ok("INBOX".to_owned());
        }
        let wire = wire_name(session, folder, opts.io_timeout).await?;
        let exists = timed(opts.io_timeout, "listing folders", async {
            session.list(Some(""), Some(&wire)).await?.try_fold(false, |_, _| async { Ok(true) }).await
        })
        .await
        .map_err(|e| lib_step("LIST", e))?;
        if !exists {
            tracing::info!(folder, "creating the target folder");
            timed(opts.io_timeout, "creating the folder", session.create(&wire))
                .await
                .map_err(|e| lib_step("CREATE", e))?;
        }
        Ok(wire)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Messages in the target folder when it was selected.
    pub fn exists(&self) -> u32 {
        self.exists
    }

    pub fn uid_validity(&self) -> Option<u32> {
        self.uid_validity
    }

    /// Digest the destination messages whose size is wanted, so copies whose outcome was
    /// never recorded are found instead of doubled (DESIGN.md §2.2). `wanted` of `None`
    /// digests every message (the ledger was lost).
    pub async fn build_index(&mut self, wanted: Option<&std::collections::HashSet<u64>>) -> Result<DestinationIndex> {
        self.session.get_mut().relax_limits();
        DestinationIndex::build(&mut self.session, &mut self.reader, self.exists, wanted, &self.opts).await
    }

    /// Hand the connection to our own APPEND implementation.
    pub fn into_appender(self) -> Appender {
        Appender::new(self.session, self.reader, self.caps, self.wire_folder, self.uid_validity, self.opts, self.endpoint)
    }
}

/// async-imap reports folder and capability failures through its own error; name the step.
/// The folder's name on the wire: `/` levels joined with the server's separator, in
/// modified UTF-7 (RFC 3501 §5.1.3); `INBOX` as is.
pub(crate) async fn wire_name(session: &mut Session<Stream>, folder: &str, limit: Duration) -> Result<String> {
    if folder.eq_ignore_ascii_case("INBOX") {
        return Ok("INBOX".to_owned());
    }
    // The server chooses how many LIST responses come back: keep what we need of the
    // first one, not all of them.
    let sep = timed(limit, "listing folders", async {
        session
            .list(Some(""), Some(""))
            .await?
            .try_fold(None, |sep: Option<String>, n| async move {
                Ok(sep.or_else(|| n.delimiter().map(|d| d.chars().take(8).collect())))
            })
            .await
    })
    .await
    .map_err(|e| lib_step("LIST", e))?
    .filter(|d| !d.is_empty())
    .unwrap_or_else(|| "/".to_owned());
    Ok(mutf7::encode(&folder.replace('/', &sep)))
}

pub(crate) fn lib_step(command: &'static str, e: ImapError) -> ImapError {
    match e {
        ImapError::Protocol(text) => ImapError::Protocol(format!("{command}: {text}")),
        other => other,
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        ImapError::from_lib("IMAP command", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustls::pki_types::ServerName;

    proptest! {
        /// Server bytes (an XOAUTH2 error challenge) in an error message: bounded, printable.
        #[test]
        fn printable_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let p = printable(&bytes, 200);
            prop_assert!(p.len() <= 200 && p.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }

        /// CAPABILITY atoms are the server's: APPENDLIMIT=<anything> never panics.
        #[test]
        fn capabilities_from_any_atoms(atoms in proptest::collection::vec("(?i:appendlimit=)?\\PC{0,24}", 0..8)) {
            let caps: Vec<Capability> = atoms.iter().map(|a| Capability::Atom(a.as_str().into())).collect();
            let _ = Capabilities::from_list(caps.iter());
        }

        #[test]
        fn server_name_never_panics(host in any::<String>()) {
            let _ = server_name(&host);
        }
    }

    #[test]
    fn append_limit() {
        let caps = [Capability::Atom("APPENDLIMIT=1000".into()), Capability::Atom("LITERAL+".into())];
        let c = Capabilities::from_list(caps.iter());
        assert_eq!(c.append_limit, Some(1000));
        assert!(c.literal_plus && !c.multiappend);
        let c = Capabilities::from_list([Capability::Atom("APPENDLIMIT=x".into())].iter());
        assert_eq!(c.append_limit, None);
    }

    /// Regression (issue 13): `[::1]` kept its brackets in the TLS server name, which is
    /// then neither a DNS name nor an address, so TLS to an IPv6 literal could not work.
    #[test]
    fn ip_literals_are_addresses_without_brackets() {
        let v6 = server_name("[::1]").unwrap();
        assert_eq!(v6, ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST).into()));
        let v6 = server_name("[2001:db8::25]").unwrap();
        assert!(matches!(v6, ServerName::IpAddress(_)));
        assert!(matches!(server_name("192.0.2.1").unwrap(), ServerName::IpAddress(_)));
        assert_eq!(server_name("imap.example.com").unwrap(), ServerName::try_from("imap.example.com").unwrap());
        assert!(server_name("[imap.example.com]").is_err(), "brackets are for IPv6 literals only");
        assert!(server_name("[::1").is_err());
        assert!(server_name("").is_err());
    }
}
