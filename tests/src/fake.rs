//! A tiny scriptable POP3 server (RFC 1939) for the failures real Dovecot will not
//! produce on demand: connections dropped mid-RETR, `[IN-USE]` greetings, garbage
//! replies, endless lines, duplicate UIDLs, no CAPA.
//!
//! It speaks a correct dialogue otherwise: greeting with an APOP-style timestamp, CAPA,
//! USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT. Commands are read line by
//! line and answered in order, and replies are flushed only when no further input is
//! already buffered, so pipelining clients work and see batched replies.
//!
//! The mailbox is shared by all connections: deletions take effect only at QUIT (the
//! UPDATE state, RFC 1939 §6); a connection that drops without QUIT deletes nothing.
//!
//! **Runtime:** [`FakePop3::start`] spawns onto the *current* tokio runtime, so call it
//! from inside one, e.g. a `#[tokio::test]` (the default current-thread flavour works:
//! the server runs whenever the test awaits). Dropping the [`FakePop3`] aborts the server
//! and all its connections.
//!
//! ```no_run
//! # async fn demo() {
//! use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript};
//! let mut cfg = FakeConfig::new("u", "p", vec![b"Subject: a\r\n\r\nx\r\n".to_vec()]);
//! cfg.script = FakeScript { drop_mid_retr: Some((0, 1, 10)), ..Default::default() };
//! let fake = FakePop3::start(cfg);
//! // connect to 127.0.0.1:fake.port() ...
//! # }
//! ```

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

/// Use as the connection index of a fault to apply it on every connection.
pub const ANY_CONN: usize = usize::MAX;

/// Longest command line accepted (RFC 2449 §4 allows 255 octets; be generous).
const MAX_COMMAND: usize = 64 * 1024;

/// Bound on [`FakeScript::endless_line_on`] so a broken client cannot hang the test forever.
const ENDLESS_LIMIT: usize = 64 * 1024 * 1024;

/// Faults, each aimed at one connection index (counted from 0 in accept order) or at
/// [`ANY_CONN`].
#[derive(Debug, Clone, Default)]
pub struct FakeScript {
    /// `(conn, message number, n)`: on `RETR msg`, send `+OK`, then only the first `n`
    /// bytes of the (dot-stuffed) body, then close the socket.
    pub drop_mid_retr: Option<(usize, u32, usize)>,
    /// `(conn, line)`: send this line (CRLF added) instead of the greeting, then close,
    /// e.g. `"-ERR [IN-USE] maildrop locked"`.
    pub greeting: Option<(usize, String)>,
    /// `(conn, line)`: answer PASS with this line (CRLF added) and stay unauthenticated,
    /// e.g. `"-ERR [AUTH] bad password"` or `"-ERR [IN-USE] locked"`.
    pub pass_reply: Option<(usize, String)>,
    /// `(conn, command prefix, raw bytes)`: answer the first command of that connection
    /// starting with the prefix (case-insensitive, e.g. `"UIDL"`) with these bytes sent
    /// verbatim (e.g. `"HELLO WORLD\r\n"`), then carry on normally.
    pub garbage_after_command: Option<(usize, String, String)>,
    /// `(conn, command prefix)`: answer that command with `+OK ` followed by `x` bytes
    /// without end of line, until the client goes away or 64 MiB have been sent; then close.
    pub endless_line_on: Option<(usize, String)>,
    /// Answer CAPA with `-ERR` (a pre-RFC 2449 server).
    pub no_capa: bool,
    /// List PIPELINING in the CAPA reply.
    pub pipelining: bool,
    /// A server that cuts a message: RETR sends fewer bytes than LIST announced, properly
    /// terminated (every connection).
    pub cut_retr: Option<CutRetr>,
    /// A server whose LIST sizes are approximate for one message (converted on the fly):
    /// LIST counts fewer bytes than RETR sends, and RETR may send other bytes every time.
    pub approximate_list: Option<ApproximateList>,
}

/// See [`FakeScript::approximate_list`].
#[derive(Debug, Clone, Default)]
pub struct ApproximateList {
    /// Message number.
    pub msg: u32,
    /// LIST counts this many bytes fewer than RETR sends.
    pub under: usize,
    /// Every RETR of it sends other bytes of the same length (an `X-Conversion: N` header
    /// line first, N counting the retrievals): a conversion that is not stable.
    pub unstable: bool,
    /// RETRs of it so far.
    pub retrievals: Arc<AtomicUsize>,
}

/// See [`FakeScript::cut_retr`].
#[derive(Debug, Clone, Default)]
pub struct CutRetr {
    /// Message number.
    pub msg: u32,
    /// Bytes of the message sent (then CRLF if the cut left none, then the terminator).
    pub keep: usize,
    /// How many RETRs of it are cut (later ones are whole); `usize::MAX` for all.
    pub times: usize,
    /// RETRs cut so far.
    pub done: Arc<AtomicUsize>,
}

/// What the fake serves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub user: String,
    pub password: String,
    /// Raw messages, message 1 first.
    pub messages: Vec<Vec<u8>>,
    /// UIDLs for `messages` (same length; duplicates allowed to test that case).
    /// `None`: `uid-1`, `uid-2`, ...
    pub uidls: Option<Vec<String>>,
    /// `false` (default, like Dovecot): bare LF is sent as CRLF and a missing final
    /// newline is added. `true`: message bytes go out as they are (only dot-stuffed and
    /// terminated), to imitate sloppy servers.
    pub raw_line_endings: bool,
    pub script: FakeScript,
}

impl FakeConfig {
    pub fn new(user: &str, password: &str, messages: Vec<Vec<u8>>) -> FakeConfig {
        FakeConfig {
            user: user.into(),
            password: password.into(),
            messages,
            uidls: None,
            raw_line_endings: false,
            script: FakeScript::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Msg {
    id: usize,
    uidl: String,
    data: Arc<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Shared {
    mailbox: Mutex<Vec<Msg>>,
    commands: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

/// A running fake POP3 server on `127.0.0.1:port()`. See the module docs.
#[derive(Debug)]
pub struct FakePop3 {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakePop3 {
    /// Bind `127.0.0.1:0` and serve on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if `uidls` and `messages` differ in length.
    pub fn start(cfg: FakeConfig) -> FakePop3 {
        let uidls = cfg.uidls.clone().unwrap_or_else(|| {
            (1..=cfg.messages.len())
                .map(|i| format!("uid-{i}"))
                .collect()
        });
        assert_eq!(uidls.len(), cfg.messages.len(), "one UIDL per message");
        let mailbox = cfg
            .messages
            .iter()
            .zip(uidls)
            .enumerate()
            .map(|(id, (m, uidl))| Msg {
                id,
                uidl,
                data: Arc::new(m.clone()),
            })
            .collect();
        let shared = Arc::new(Shared {
            mailbox: Mutex::new(mailbox),
            ..Default::default()
        });

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .expect("FakePop3::start must be called inside a tokio runtime");
        let cfg = Arc::new(cfg);
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            // Owned here so aborting this task also aborts every session.
            let mut sessions = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let conn = sh.connections.fetch_add(1, Ordering::SeqCst);
                sessions.spawn(session(stream, conn, cfg.clone(), sh.clone()));
                while sessions.try_join_next().is_some() {}
            }
        });
        FakePop3 { port, shared, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// `(uidl, raw bytes as given)` of every message not yet deleted by a QUIT.
    pub fn remaining(&self) -> Vec<(String, Vec<u8>)> {
        let mb = self.shared.mailbox.lock().unwrap();
        mb.iter()
            .map(|m| (m.uidl.clone(), m.data.to_vec()))
            .collect()
    }

    /// Give the message now known by `uidl` other bytes (a server reusing a UIDL).
    pub fn replace(&self, uidl: &str, data: Vec<u8>) {
        let mut mb = self.shared.mailbox.lock().unwrap();
        let m = mb.iter_mut().find(|m| m.uidl == uidl).expect("no message has that UIDL");
        m.data = Arc::new(data);
    }

    /// Every command line received, all connections, in arrival order; PASS arguments
    /// are logged as `PASS ***`.
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }
}

impl Drop for FakePop3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hits(sel: usize, conn: usize) -> bool {
    sel == ANY_CONN || sel == conn
}

enum State {
    Auth { user: Option<String> },
    Trans { msgs: Vec<Msg>, deleted: Vec<bool> },
}

async fn session(
    stream: TcpStream,
    conn: usize,
    cfg: Arc<FakeConfig>,
    sh: Arc<Shared>,
) -> io::Result<()> {
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    let script = &cfg.script;

    if let Some((c, line)) = &script.greeting {
        if hits(*c, conn) {
            w.write_all(format!("{line}\r\n").as_bytes()).await?;
            return w.flush().await;
        }
    }
    // RFC 1939 §7: the timestamp in angle brackets makes APOP possible.
    w.write_all(
        format!(
            "+OK fake ready <{}.{conn}@fake.invalid>\r\n",
            std::process::id()
        )
        .as_bytes(),
    )
    .await?;
    w.flush().await?;

    let mut garbage_used = false;
    let mut state = State::Auth { user: None };
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_COMMAND as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(()); // closed without QUIT: no UPDATE state, nothing deleted
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let (kw, arg) = match text.split_once(' ') {
            Some((k, a)) => (k.to_ascii_uppercase(), a.to_string()),
            None => (text.to_ascii_uppercase(), String::new()),
        };
        sh.commands.lock().unwrap().push(if kw == "PASS" {
            "PASS ***".into()
        } else {
            text.clone()
        });
        let upper = text.to_ascii_uppercase();

        if let Some((c, prefix, garbage)) = &script.garbage_after_command {
            if !garbage_used && hits(*c, conn) && upper.starts_with(&prefix.to_ascii_uppercase()) {
                garbage_used = true;
                w.write_all(garbage.as_bytes()).await?;
                w.flush().await?;
                continue;
            }
        }
        if let Some((c, prefix)) = &script.endless_line_on {
            if hits(*c, conn) && upper.starts_with(&prefix.to_ascii_uppercase()) {
                w.write_all(b"+OK ").await?;
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < ENDLESS_LIMIT {
                    w.write_all(&chunk).await?;
                    sent += chunk.len();
                }
                return w.flush().await;
            }
        }

        let reply: Vec<u8> = match (&mut state, kw.as_str()) {
            (_, "CAPA") if script.no_capa => b"-ERR unknown command\r\n".to_vec(),
            (_, "CAPA") => {
                // RFC 2449 §5
                let mut s = String::from("+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n");
                if script.pipelining {
                    s.push_str("PIPELINING\r\n");
                }
                s.push_str("RESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n");
                s.into_bytes()
            }
            (_, "NOOP") => b"+OK\r\n".to_vec(),
            (State::Auth { .. }, "QUIT") => {
                w.write_all(b"+OK bye\r\n").await?;
                return w.flush().await;
            }
            (State::Trans { msgs, deleted }, "QUIT") => {
                // RFC 1939 §6: the UPDATE state removes what was marked.
                let gone: Vec<usize> = msgs
                    .iter()
                    .zip(deleted.iter())
                    .filter(|(_, d)| **d)
                    .map(|(m, _)| m.id)
                    .collect();
                sh.mailbox.lock().unwrap().retain(|m| !gone.contains(&m.id));
                w.write_all(b"+OK bye\r\n").await?;
                return w.flush().await;
            }
            (State::Auth { user }, "USER") => {
                *user = Some(arg.clone());
                b"+OK send PASS\r\n".to_vec()
            }
            (State::Auth { user }, "PASS") => match &script.pass_reply {
                Some((c, l)) if hits(*c, conn) => format!("{l}\r\n").into_bytes(),
                _ if user.as_deref() == Some(cfg.user.as_str()) && arg == cfg.password => {
                    let msgs = sh.mailbox.lock().unwrap().clone();
                    let deleted = vec![false; msgs.len()];
                    let reply = format!("+OK {} messages\r\n", msgs.len()).into_bytes();
                    state = State::Trans { msgs, deleted };
                    reply
                }
                _ => {
                    *user = None;
                    b"-ERR [AUTH] invalid user or password\r\n".to_vec()
                }
            },
            (State::Auth { .. }, _) => b"-ERR not allowed before login\r\n".to_vec(),
            (State::Trans { msgs, deleted }, cmd) => {
                trans_command(cmd, &arg, msgs, deleted, &cfg, script, conn, &mut w).await?
            }
        };
        if reply.is_empty() {
            // trans_command asked us to hang up (drop_mid_retr).
            return Ok(());
        }
        w.write_all(&reply).await?;
        // Batch replies to pipelined commands; flush once the client waits for us.
        if r.buffer().is_empty() {
            w.flush().await?;
        }
    }
}

/// One TRANSACTION-state command. An empty reply means "close the connection now".
#[allow(clippy::too_many_arguments)]
async fn trans_command<W: tokio::io::AsyncWrite + Unpin>(
    cmd: &str,
    arg: &str,
    msgs: &[Msg],
    deleted: &mut [bool],
    cfg: &FakeConfig,
    script: &FakeScript,
    conn: usize,
    w: &mut W,
) -> io::Result<Vec<u8>> {
    let wire = |m: &Msg| {
        if cfg.raw_line_endings {
            m.data.to_vec()
        } else {
            crlf_complete(&m.data)
        }
    };
    // Resolve a message-number argument; RFC 1939 §5: deleted messages may not be referenced.
    let pick = |a: &str| -> Result<usize, Vec<u8>> {
        let n: usize = a
            .split(' ')
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| b"-ERR bad message number\r\n".to_vec())?;
        if n == 0 || n > msgs.len() {
            return Err(b"-ERR no such message\r\n".to_vec());
        }
        if deleted[n - 1] {
            return Err(b"-ERR message deleted\r\n".to_vec());
        }
        Ok(n - 1)
    };
    let live = || (0..msgs.len()).filter(|i| !deleted[*i]);
    Ok(match cmd {
        "STAT" => {
            let total: usize = live().map(|i| wire(&msgs[i]).len()).sum();
            format!("+OK {} {total}\r\n", live().count()).into_bytes()
        }
        "LIST" | "UIDL" => {
            let item = |i: usize| {
                if cmd == "LIST" {
                    let under = match &script.approximate_list {
                        Some(a) if a.msg as usize == i + 1 => a.under,
                        _ => 0,
                    };
                    format!("{} {}", i + 1, wire(&msgs[i]).len().saturating_sub(under))
                } else {
                    format!("{} {}", i + 1, msgs[i].uidl)
                }
            };
            if arg.is_empty() {
                let mut s = String::from("+OK\r\n");
                for i in live() {
                    s.push_str(&item(i));
                    s.push_str("\r\n");
                }
                s.push_str(".\r\n");
                s.into_bytes()
            } else {
                match pick(arg) {
                    Ok(i) => format!("+OK {}\r\n", item(i)).into_bytes(),
                    Err(e) => e,
                }
            }
        }
        "RETR" | "TOP" => {
            let i = match pick(arg) {
                Ok(i) => i,
                Err(e) => return Ok(e),
            };
            let mut body = wire(&msgs[i]);
            if cmd == "TOP" {
                let Some(lines) = arg.split(' ').nth(1).and_then(|l| l.parse::<usize>().ok())
                else {
                    return Ok(b"-ERR usage: TOP msg lines\r\n".to_vec());
                };
                body = top(&body, lines);
            }
            if let Some(cut) = script.cut_retr.as_ref().filter(|c| cmd == "RETR" && c.msg as usize == i + 1) {
                if cut.done.fetch_add(1, Ordering::SeqCst) < cut.times {
                    body.truncate(cut.keep);
                    if !body.ends_with(b"\r\n") {
                        body.extend_from_slice(b"\r\n");
                    }
                }
            }
            if let Some(a) = script.approximate_list.as_ref().filter(|a| cmd == "RETR" && a.msg as usize == i + 1) {
                let n = a.retrievals.fetch_add(1, Ordering::SeqCst);
                if a.unstable {
                    let mut other = format!("X-Conversion: {}\r\n", n % 10).into_bytes();
                    other.extend_from_slice(&body);
                    body = other;
                }
            }
            let mut out = format!("+OK {} octets\r\n", body.len()).into_bytes();
            let stuffed = dot_stuff(&body);
            if let Some((c, n, keep)) = script.drop_mid_retr {
                if cmd == "RETR" && hits(c, conn) && n as usize == i + 1 {
                    out.extend_from_slice(&stuffed[..keep.min(stuffed.len())]);
                    w.write_all(&out).await?;
                    w.flush().await?;
                    return Ok(Vec::new());
                }
            }
            out.extend_from_slice(&stuffed);
            out
        }
        "DELE" => match pick(arg) {
            Ok(i) => {
                deleted[i] = true;
                format!("+OK message {} deleted\r\n", i + 1).into_bytes()
            }
            Err(e) => e,
        },
        "RSET" => {
            deleted.iter_mut().for_each(|d| *d = false);
            b"+OK\r\n".to_vec()
        }
        _ => b"-ERR unknown command\r\n".to_vec(),
    })
}

/// Bare LF to CRLF and a final CRLF added, as a real server sends a message.
fn crlf_complete(b: &[u8]) -> Vec<u8> {
    let mut out = crate::corpus::normalize_crlf(b);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Header plus the first `lines` body lines (RFC 1939 §7 TOP).
fn top(msg: &[u8], lines: usize) -> Vec<u8> {
    let Some(end) = msg.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return msg.to_vec();
    };
    let mut out = msg[..end].to_vec();
    for l in msg[end..].split_inclusive(|b| *b == b'\n').take(lines) {
        out.extend_from_slice(l);
    }
    out
}

/// Independent of `mailferry_pop3::wire::stuff` on purpose: the fake server is an oracle for
/// our client's unstuffing and must not share its bugs.
///
/// RFC 1939 §3 byte-stuffing of a multi-line body plus the terminating `.CRLF`. The body
/// must end with a newline for the terminator to be recognised; [`crlf_complete`] ensures
/// that in the default mode, and raw mode adds a CRLF if the message lacks one.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 8);
    for l in body.split_inclusive(|b| *b == b'\n') {
        if l.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(l);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.\r\n..x\r\n"), b"a\r\n..\r\n...x\r\n.\r\n");
        assert_eq!(dot_stuff(b".a"), b"..a\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn top_lines() {
        assert_eq!(top(b"A: b\r\n\r\n1\r\n2\r\n", 1), b"A: b\r\n\r\n1\r\n");
        assert_eq!(top(b"A: b\r\n\r\n1\r\n2\r\n", 0), b"A: b\r\n\r\n");
    }
}
