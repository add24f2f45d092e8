//! Getting to the TRANSACTION state: TCP, implicit TLS or STLS (RFC 2595), greeting,
//! CAPA (RFC 2449) and login (RFC 1939 §7 USER/PASS and APOP, RFC 5034 AUTH).
//!
//! No credential is sent before the connection is protected, unless the endpoint
//! explicitly allows plaintext; a refused STLS is an error, never a fallback.

use secrecy::zeroize::Zeroizing;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use mailferry_model::{Pop3Auth, Pop3Endpoint, Security};

use crate::session::{Pop3Options, Stream};
use crate::wire::{self, AuthReply, Capabilities, Command, Status, MAX_AUTH_COMMAND};
use crate::{Pop3Error, Pop3Session, Result};

impl Pop3Session {
    /// Connect, protect the connection as `ep.security` says, read the greeting, ask CAPA
    /// and log in. The session returned is in the TRANSACTION state.
    // Host and port only: the user name is often a mail address, and spans are exported.
    #[tracing::instrument(skip_all, err(level = "debug"), fields(server.address = %ep.host, server.port = ep.port))]
    pub async fn connect(ep: &Pop3Endpoint, opts: &Pop3Options) -> Result<Pop3Session> {
        if ep.security == Security::None && !ep.tls.allow_plaintext {
            return Err(Pop3Error::PlaintextRefused);
        }
        let host = ep.host.trim_start_matches('[').trim_end_matches(']');
        // Resolve, check every address against the network policy, and connect only to the
        // checked addresses (no second lookup that could answer differently).
        let addrs: Vec<std::net::SocketAddr> = match timeout(opts.connect_timeout, tokio::net::lookup_host((host, ep.port))).await {
            Err(_) => return Err(Pop3Error::Timeout { what: "resolving the POP3 server's name" }),
            Ok(r) => r?.collect(),
        };
        let ips: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        ep.tls.network.check(host, &ips).map_err(Pop3Error::Denied)?;
        let tcp = match timeout(opts.connect_timeout, TcpStream::connect(&addrs[..])).await {
            Err(_) => return Err(Pop3Error::Timeout { what: "connecting to the POP3 server" }),
            Ok(r) => r?,
        };
        // Commands are written whole; don't let Nagle hold back a pipelined batch.
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = Box::new(tcp);
        let mut peer = None;
        if ep.security == Security::Tls {
            let (tls, p) = tls_handshake(stream, host, ep, opts).await?;
            (stream, peer) = (tls, Some(p));
        }
        let mut s = Pop3Session::new(stream, opts.clone(), ep.security == Security::Tls);
        s.peer_tls = peer;

        s.read_greeting().await?;
        s.caps = s.capa().await?;
        if ep.security == Security::Starttls {
            s.starttls(host, ep).await?;
            // RFC 2595 §4: forget what was learned before TLS and ask again.
            s.caps = s.capa().await?;
        }
        s.login(ep).await?;
        // RFC 2449 §5: the capabilities may differ in the TRANSACTION state.
        let after = s.capa().await?;
        if after.answered {
            s.caps = after;
        }
        tracing::debug!(tls = s.tls, pipelining = s.caps.pipelining, "pop3 logged in");
        Ok(s)
    }

    pub(crate) async fn read_greeting(&mut self) -> Result<()> {
        // RFC 1939 §4: the greeting is a status line; some servers greet "-ERR" when busy.
        match self.read_status("waiting for the greeting").await? {
            Status::Ok(text) => {
                self.greeting = text;
                Ok(())
            }
            Status::Err { code, text } => Err(Pop3Error::Server { command: "greeting", code, text }),
        }
    }

    /// CAPA (RFC 2449 §5). A `-ERR`, or a reply that is not a status at all, means a
    /// legacy RFC 1939 server: carry on with no known capabilities.
    pub(crate) async fn capa(&mut self) -> Result<Capabilities> {
        self.send(Command::Capa).await?;
        let line = self.read_line("reading the CAPA reply").await?;
        match wire::parse_status(&line) {
            Some(Status::Ok(_)) => self.read_capa_list().await,
            Some(Status::Err { .. }) => Ok(Capabilities::default()),
            None => {
                tracing::debug!("pop3 server answered CAPA with garbage; assuming RFC 1939 only");
                Ok(Capabilities::default())
            }
        }
    }

    /// STLS (RFC 2595 §4), tried even when CAPA did not list it.
    async fn starttls(&mut self, host: &str, ep: &Pop3Endpoint) -> Result<()> {
        self.send(Command::Stls).await?;
        match self.read_status("reading the STLS reply").await? {
            Status::Ok(_) => {}
            Status::Err { text, .. } => return Err(Pop3Error::StlsUnavailable { text }),
        }
        // Bytes already received after the STLS reply came before the handshake, so a man
        // in the middle could have injected them (the CVE-2011-0411 class): refuse.
        if !self.rbuf.is_empty() {
            return Err(Pop3Error::Protocol("the server sent data after accepting STLS".into()));
        }
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let (tls, peer) = tls_handshake(plain, host, ep, &self.opts).await?;
        self.stream = tls;
        self.peer_tls = Some(peer);
        self.tls = true;
        Ok(())
    }

    /// Pick the mechanism and log in (RFC 1939 §7, RFC 5034).
    async fn login(&mut self, ep: &Pop3Endpoint) -> Result<()> {
        let timestamp = wire::apop_timestamp(&self.greeting).map(str::to_owned);
        let auth = match ep.auth {
            Pop3Auth::Auto if self.caps.has_sasl("PLAIN") => Pop3Auth::Plain,
            Pop3Auth::Auto if self.caps.user || !self.caps.answered => Pop3Auth::User,
            Pop3Auth::Auto if timestamp.is_some() => Pop3Auth::Apop,
            Pop3Auth::Auto => return Err(Pop3Error::MechanismUnavailable { mechanism: "USER, APOP or SASL PLAIN" }),
            other => other,
        };
        self.mechanism = match auth {
            Pop3Auth::User | Pop3Auth::Auto => "USER/PASS",
            Pop3Auth::Apop => "APOP",
            Pop3Auth::Plain => "SASL PLAIN",
            Pop3Auth::Xoauth2 => "SASL XOAUTH2",
        };
        let secret = ep.secret.expose_secret();
        match auth {
            Pop3Auth::User | Pop3Auth::Auto => {
                self.send(Command::User(&ep.username)).await?;
                self.auth_status("USER").await?;
                self.send(Command::Pass(secret)).await?;
                self.auth_status("USER").await
            }
            Pop3Auth::Apop => {
                let Some(timestamp) = timestamp else {
                    return Err(Pop3Error::MechanismUnavailable { mechanism: "APOP (no timestamp in the greeting)" });
                };
                let digest = Zeroizing::new(wire::apop_digest(&timestamp, secret));
                self.send(Command::Apop { user: &ep.username, digest: &digest }).await?;
                self.auth_status("APOP").await
            }
            Pop3Auth::Plain => self.sasl("PLAIN", wire::sasl_plain(&ep.username, secret)).await,
            Pop3Auth::Xoauth2 => self.sasl("XOAUTH2", wire::sasl_xoauth2(&ep.username, secret)).await,
        }
    }

    /// The reply to a login step: `-ERR` is a failed login, classified by its code.
    async fn auth_status(&mut self, mechanism: &'static str) -> Result<()> {
        match self.read_status("reading the login reply").await? {
            Status::Ok(_) => Ok(()),
            Status::Err { code, text } => Err(Pop3Error::AuthFailed { mechanism, code, text }),
        }
    }

    /// A one-step SASL exchange (RFC 5034 §4). The response goes with AUTH when the line
    /// fits in 255 octets, else after the server's empty `+ ` challenge (as Microsoft's
    /// servers expect for long XOAUTH2 tokens).
    async fn sasl(&mut self, mechanism: &'static str, response: Zeroizing<String>) -> Result<()> {
        let with_initial = "AUTH  \r\n".len() + mechanism.len() + response.len() <= MAX_AUTH_COMMAND;
        let initial = with_initial.then_some(response.as_str());
        self.send(Command::Auth { mechanism, initial }).await?;
        let mut sent = with_initial;
        let mut resent = false;
        let mut detail = None;
        for _ in 0..4 {
            let line = self.read_line("reading the AUTH reply").await?;
            match wire::parse_auth_reply(&line) {
                Some(AuthReply::Status(Status::Ok(_))) => return Ok(()),
                Some(AuthReply::Status(Status::Err { code, text })) => {
                    let text = match detail {
                        Some(d) => format!("{text} ({d})"),
                        None => text,
                    };
                    return Err(Pop3Error::AuthFailed { mechanism, code, text });
                }
                Some(AuthReply::Continue(challenge)) => {
                    let reply = if !sent {
                        sent = true;
                        response.as_str()
                    } else if mechanism == "XOAUTH2" {
                        // The challenge is a base64 JSON error; an empty line gets the -ERR.
                        detail = Some(wire::clip(&wire::decode_challenge(&challenge)));
                        ""
                    } else if challenge.is_empty() && !resent {
                        // The server ignored the initial response and asks for it again.
                        resent = true;
                        response.as_str()
                    } else {
                        // PLAIN has one step: anything more is cancelled (RFC 5034 §4).
                        "*"
                    };
                    self.send(Command::SaslResponse(reply)).await?;
                }
                None => return self.protocol("unexpected reply to AUTH", &line),
            }
        }
        self.protocol("AUTH exchange did not end", "")
    }
}

/// Run the TLS client handshake over `stream`, verifying the certificate for `host`
/// (a DNS name or an IP address); with what the handshake said about the server.
async fn tls_handshake(
    stream: Box<dyn Stream>,
    host: &str,
    ep: &Pop3Endpoint,
    opts: &Pop3Options,
) -> Result<(Box<dyn Stream>, mailferry_model::tls::PeerTls)> {
    let config = ep.tls.client_config().map_err(|e| Pop3Error::Tls { reason: e.to_string(), certificate: true })?;
    let name = ServerName::try_from(host.to_string()).map_err(|_| Pop3Error::Tls {
        reason: format!("{host:?} is not a valid TLS server name"),
        certificate: true,
    })?;
    match timeout(opts.connect_timeout, TlsConnector::from(config).connect(name, stream)).await {
        Err(_) => Err(Pop3Error::Timeout { what: "during the TLS handshake" }),
        Ok(Err(e)) => Err(tls_error(e)),
        Ok(Ok(tls)) => {
            let peer = mailferry_model::tls::PeerTls::of_connection(tls.get_ref().1);
            Ok((Box::new(tls), peer))
        }
    }
}

/// tokio-rustls reports TLS failures as `io::Error`s wrapping a `rustls::Error`: turn
/// those into [`Pop3Error::Tls`], naming a refused certificate (subject, validity,
/// fingerprints) and marking the failures retrying cannot fix.
pub(crate) fn tls_error(e: std::io::Error) -> Pop3Error {
    let Some(tls) = mailferry_model::tls::rustls_error(&e) else {
        // Retryable (certificate: false): a closed connection may be a passing failure.
        return match mailferry_model::tls::handshake_eof_text(&e) {
            Some(reason) => Pop3Error::Tls { reason, certificate: false },
            None => Pop3Error::Io(e),
        };
    };
    Pop3Error::Tls { reason: mailferry_model::tls::failure_text(tls), certificate: mailferry_model::tls::is_permanent(tls) }
}
