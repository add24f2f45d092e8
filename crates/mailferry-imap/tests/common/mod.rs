//! A scripted IMAP server on loopback: it speaks enough IMAP4rev1 for async-imap to log in
//! and select INBOX, and hands every other command (APPEND, UID FETCH) to the test's
//! script, which answers with raw bytes, pauses, or hangs up. Every command is recorded
//! with its literals, so a test can also check what the client sent.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mailferry_imap::{ImapOptions, ImapSession};
use mailferry_model::{Credential, ImapAuth, ImapEndpoint, Security, TlsOptions};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One client command: `line` is the command text with each literal left as `{n}`.
#[derive(Debug, Clone)]
pub struct Command {
    pub tag: String,
    /// The command name, upper case (`APPEND`, `UID`, ...).
    pub name: String,
    pub line: String,
    pub literals: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub enum Act {
    Send(Vec<u8>),
    Sleep(Duration),
    /// Half-close and stop serving (everything the client sent has been read).
    Close,
}

pub fn send(s: impl AsRef<[u8]>) -> Act {
    Act::Send(s.as_ref().to_vec())
}

/// The script: given a command and how many commands of that name came before it, the
/// answer, or `None` for the built-in one.
pub type Script = Arc<dyn Fn(&Command, usize) -> Option<Vec<Act>> + Send + Sync>;

pub struct Server {
    pub greeting: Vec<u8>,
    /// Capabilities after IMAP4rev1, e.g. `"LITERAL+ UIDPLUS"`.
    pub caps: &'static str,
    pub exists: u32,
    pub script: Script,
}

impl Server {
    pub fn new(caps: &'static str, script: impl Fn(&Command, usize) -> Option<Vec<Act>> + Send + Sync + 'static) -> Self {
        Self { greeting: b"* OK ready\r\n".to_vec(), caps, exists: 0, script: Arc::new(script) }
    }

    /// Serve one connection; the handle yields the commands received.
    pub async fn start(self) -> (u16, JoinHandle<Vec<Command>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            self.serve(sock).await
        });
        (port, handle)
    }

    async fn serve(self, sock: tokio::net::TcpStream) -> Vec<Command> {
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        let mut seen = Vec::new();
        if wr.write_all(&self.greeting).await.is_err() {
            return seen;
        }
        loop {
            let Some(cmd) = read_command(&mut rd, &mut wr).await else { return seen };
            let count = seen.iter().filter(|c: &&Command| c.name == cmd.name).count();
            let acts = (self.script)(&cmd, count).unwrap_or_else(|| self.builtin(&cmd));
            seen.push(cmd);
            for act in acts {
                match act {
                    Act::Send(bytes) => {
                        if wr.write_all(&bytes).await.is_err() {
                            return seen;
                        }
                    }
                    Act::Sleep(d) => tokio::time::sleep(d).await,
                    Act::Close => {
                        let _ = wr.shutdown().await;
                        return seen;
                    }
                }
            }
        }
    }

    fn builtin(&self, cmd: &Command) -> Vec<Act> {
        let t = &cmd.tag;
        match cmd.name.as_str() {
            "LOGIN" => vec![send(format!("{t} OK logged in\r\n"))],
            "CAPABILITY" => vec![send(format!("* CAPABILITY IMAP4rev1 {}\r\n{t} OK done\r\n", self.caps))],
            "SELECT" => vec![send(format!(
                "* FLAGS (\\Seen)\r\n* {} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{t} OK [READ-WRITE] selected\r\n",
                self.exists
            ))],
            "LOGOUT" => vec![send(format!("* BYE bye\r\n{t} OK done\r\n")), Act::Close],
            _ => vec![send(format!("{t} BAD not scripted\r\n"))],
        }
    }
}

/// A command line, with its literals (a `+` continuation for synchronising ones).
async fn read_command(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Option<Command> {
    let mut line = String::new();
    let mut literals = Vec::new();
    loop {
        let mut part = Vec::new();
        if rd.read_until(b'\n', &mut part).await.ok()? == 0 {
            return None;
        }
        let part = String::from_utf8_lossy(&part).trim_end_matches("\r\n").to_owned();
        line.push_str(&part);
        let Some((sync, n)) = literal_at_end(&part) else { break };
        if sync {
            wr.write_all(b"+ go on\r\n").await.ok()?;
        }
        let mut body = vec![0u8; n];
        rd.read_exact(&mut body).await.ok()?;
        literals.push(body);
    }
    let mut words = line.splitn(3, ' ');
    let tag = words.next()?.to_owned();
    let name = words.next().unwrap_or("").to_ascii_uppercase();
    Some(Command { tag, name, line, literals })
}

fn literal_at_end(part: &str) -> Option<(bool, usize)> {
    let body = part.strip_suffix('}')?;
    let open = body.rfind('{')?;
    let digits = &body[open + 1..];
    match digits.strip_suffix('+') {
        Some(d) => Some((false, d.parse().ok()?)),
        None => Some((true, digits.parse().ok()?)),
    }
}

pub fn endpoint(port: u16) -> ImapEndpoint {
    ImapEndpoint {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: "u".into(),
        credential: Credential::Password(SecretString::from("p")),
        auth: ImapAuth::Login,
        tls: TlsOptions { allow_plaintext: true, ..TlsOptions::default() },
        folder: "INBOX".into(),
        flags: vec![],
    }
}

pub fn options(io_timeout: Duration) -> ImapOptions {
    ImapOptions { connect_timeout: Duration::from_secs(5), io_timeout, ..ImapOptions::default() }
}

pub async fn connect(port: u16, io_timeout: Duration) -> ImapSession {
    ImapSession::connect(&endpoint(port), &options(io_timeout)).await.expect("connect to the scripted server")
}
