//! Tests of the test support itself: the lab really serves POP3/IMAP/TLS, cleans up after
//! itself and round-trips bytes; the fake behaves per RFC 1939 and injects its faults.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::corpus::tricky_corpus;
use crate::dovecot::{group_members, Dovecot, LabOptions};
use crate::fake::{FakeConfig, FakePop3, FakeScript};

/// A blocking line-oriented client, enough to drive Dovecot by hand.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }
    fn send(&mut self, cmd: &str) -> String {
        self.w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        self.line()
    }
    /// Send an IMAP command; return every line up to and including the tagged one.
    fn imap(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap();
        let mut out = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed during {cmd}: {out:?}");
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }
    /// Read a POP3 multi-line body (after +OK), unstuffed, up to the terminating ".".
    fn multiline(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            self.r.read_until(b'\n', &mut l).unwrap();
            if l == b".\r\n" || l.is_empty() {
                return out;
            }
            out.extend_from_slice(if l.starts_with(b".") { &l[1..] } else { &l });
        }
    }
}

#[test]
fn lab_starts_fast_and_speaks_pop3_and_imap() {
    let t = Instant::now();
    let lab = Dovecot::start();
    let startup = t.elapsed();
    println!("dovecot lab startup: {startup:?}");
    assert!(startup < Duration::from_secs(3), "slow startup {startup:?}");

    lab.add_user("alice", "pw-alice");
    let msgs = vec![
        b"Subject: 1\r\n\r\none\r\n".to_vec(),
        b"Subject: 2\r\n\r\ntwo\r\n".to_vec(),
    ];
    lab.seed("alice", &msgs);

    let mut p = Client::connect(lab.pop3_port());
    assert!(p.line().starts_with("+OK"));
    assert!(p.send("USER alice").starts_with("+OK"));
    assert!(p.send("PASS pw-alice").starts_with("+OK"), "{}", lab.log());
    assert!(p.send("STAT").starts_with("+OK 2 "));
    assert!(p.send("RETR 2").starts_with("+OK"));
    assert_eq!(p.multiline(), msgs[1]);
    p.send("QUIT");

    let mut i = Client::connect(lab.imap_port());
    assert!(i.line().starts_with("* OK"));
    let login = i.imap("a", "LOGIN alice pw-alice");
    assert!(login.last().unwrap().starts_with("a OK"), "{login:?}");
    let caps = i.imap("b", "CAPABILITY");
    println!("IMAP CAPABILITY after login: {}", caps[0].trim_end());
    assert!(i
        .imap("c", "SELECT INBOX")
        .iter()
        .any(|l| l.contains("2 EXISTS")));
    i.imap("z", "LOGOUT");
}

#[test]
fn add_user_works_immediately_even_after_a_failed_login() {
    let lab = Dovecot::start();
    let mut p = Client::connect(lab.pop3_port());
    p.line();
    p.send("USER bob");
    assert!(p.send("PASS pw").starts_with("-ERR"));
    lab.add_user("bob", "pw");
    p.send("USER bob");
    assert!(p.send("PASS pw").starts_with("+OK"), "{}", lab.log());
    p.send("QUIT");
    // and a password change is seen as well
    lab.add_user("bob", "xy");
    let mut p = Client::connect(lab.pop3_port());
    p.line();
    p.send("USER bob");
    assert!(p.send("PASS xy").starts_with("+OK"), "{}", lab.log());
}

#[tokio::test]
async fn tls_ports_present_a_chain_valid_for_the_ca() {
    let lab = Dovecot::start();
    let connector = tokio_rustls::TlsConnector::from(lab.tls_client_config());
    for (port, greeting) in [(lab.pop3s_port(), "+OK"), (lab.imaps_port(), "* OK")] {
        for name in ["127.0.0.1", "localhost"] {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            let tls = connector
                .connect(sn, tcp)
                .await
                .unwrap_or_else(|e| panic!("TLS to {port} as {name}: {e}"));
            let mut r = tokio::io::BufReader::new(tls);
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            assert!(l.starts_with(greeting), "{l}");
        }
    }
    // and a client that does not trust the CA fails
    let untrusted = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.pop3s_port()))
        .await
        .unwrap();
    let sn = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    assert!(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(untrusted))
            .connect(sn, tcp)
            .await
            .is_err()
    );
    assert!(std::fs::read(lab.ca_file()).unwrap() == lab.ca_pem());
}

#[test]
fn drop_leaves_no_process_behind() {
    let lab = Dovecot::start();
    lab.add_user("carol", "pw");
    // make it spawn a pop3 mail process too
    let mut p = Client::connect(lab.pop3_port());
    p.line();
    p.send("USER carol");
    assert!(p.send("PASS pw").starts_with("+OK"));
    let pg = lab.pgid();
    let dir = lab.dir().to_path_buf();
    assert!(group_members(pg).len() > 2, "expected master + children");
    let t = Instant::now();
    drop(lab);
    println!("dovecot lab shutdown: {:?}", t.elapsed());
    assert_eq!(group_members(pg), Vec::<i32>::new());
    assert!(!dir.exists());
}

#[test]
fn seed_and_messages_round_trip_exact_bytes() {
    let lab = Dovecot::start();
    lab.add_user("dave", "pw");
    let corpus: Vec<Vec<u8>> = tricky_corpus().into_iter().map(|(_, m)| m).collect();
    lab.seed("dave", &corpus);
    assert_eq!(lab.message_count("dave"), corpus.len());
    assert!(lab.messages("dave") == corpus, "byte mismatch");

    // After Dovecot has scanned (UIDs assigned) the order is the same, by UID.
    let mut p = Client::connect(lab.pop3_port());
    p.line();
    p.send("USER dave");
    assert!(p.send("PASS pw").starts_with("+OK"));
    assert!(p
        .send("STAT")
        .starts_with(&format!("+OK {} ", corpus.len())));
    assert!(p.send("RETR 1").starts_with("+OK"));
    assert_eq!(
        p.multiline(),
        corpus[0],
        "dot-lines message through Dovecot POP3"
    );
    p.send("QUIT");
    assert!(lab.messages("dave") == corpus);

    lab.seed_folder("dave", "Archive/2019", &corpus[..2]);
    assert!(lab.folder_messages("dave", "Archive/2019") == corpus[..2]);
    let out = lab.doveadm(&[
        "mailbox",
        "status",
        "-u",
        "dave",
        "messages",
        "Archive/2019",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Archive/2019 messages=2",
        "{out:?}"
    );
}

/// Records what Dovecot does with APPEND and non-ASCII folder names (see the report).
#[test]
fn imap_append_and_utf7_folders() {
    let lab = Dovecot::start_with(LabOptions {
        extra_config: "imap_capability = +APPENDLIMIT=1048576\n".into(),
    });
    lab.add_user("erin", "pw");
    let mut i = Client::connect(lab.imap_port());
    let greeting = i.line();
    println!("IMAP greeting: {}", greeting.trim_end());
    let login = i.imap("a", "LOGIN erin pw");
    println!("LOGIN reply: {}", login.last().unwrap().trim_end());
    let caps = i.imap("b", "CAPABILITY");
    println!(
        "CAPABILITY (imap_capability = +APPENDLIMIT=1048576): {}",
        caps[0].trim_end()
    );
    assert!(caps[0].contains("APPENDLIMIT=1048576"));

    // folder with non-ASCII name, created over IMAP
    let create = i.imap("c", "CREATE \"Archiv/Gr&APYA3w-e\"");
    assert!(create.last().unwrap().starts_with("c OK"), "{create:?}");
    let dir = lab.folder_dir("erin", "Archiv/Größe");
    assert!(
        dir.is_dir(),
        "expected {dir:?}; have {:?}",
        std::fs::read_dir(lab.home("erin").join("Maildir"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );

    // APPEND a bare-LF message: what lands on disk?
    let m = b"Subject: lf\n\nbody\n";
    i.w.write_all(format!("d APPEND \"Archiv/Gr&APYA3w-e\" {{{}}}\r\n", m.len()).as_bytes())
        .unwrap();
    assert!(i.line().starts_with('+'));
    i.w.write_all(m).unwrap();
    i.w.write_all(b"\r\n").unwrap();
    let mut l = i.line();
    while !l.starts_with("d ") {
        l = i.line();
    }
    println!("APPEND reply: {}", l.trim_end());
    let stored = lab.folder_messages("erin", "Archiv/Größe");
    println!(
        "APPENDed bare-LF message stored as {:?}",
        String::from_utf8_lossy(&stored[0])
    );
    let m = b"Subject: crlf\r\n\r\nbody\r\n";
    i.w.write_all(format!("e APPEND INBOX {{{}}}\r\n", m.len()).as_bytes())
        .unwrap();
    i.line();
    i.w.write_all(m).unwrap();
    i.w.write_all(b"\r\n").unwrap();
    let mut l = i.line();
    while !l.starts_with("e ") {
        l = i.line();
    }
    println!("APPEND reply: {}", l.trim_end());
    println!(
        "APPENDed CRLF message stored as {:?}",
        String::from_utf8_lossy(&lab.messages("erin")[0])
    );
    println!("files: {:?}", lab.folder_files("erin", "INBOX"));
    i.imap("z", "LOGOUT");
}

#[tokio::test]
async fn fake_drop_mid_retr_and_dele_quit() {
    let msgs = vec![
        b"Subject: a\r\n\r\n.dot\r\n".to_vec(),
        b"Subject: b\r\n\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n".to_vec(),
        b"Subject: c\r\n\r\nc".to_vec(),
    ];
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = FakeScript {
        drop_mid_retr: Some((0, 2, 10)),
        pipelining: true,
        ..Default::default()
    };
    let fake = FakePop3::start(cfg);

    // connection 0: RETR 2 is cut after 10 body bytes
    let s = tokio::net::TcpStream::connect(("127.0.0.1", fake.port()))
        .await
        .unwrap();
    let mut s = tokio::io::BufReader::new(s);
    let mut l = String::new();
    s.read_line(&mut l).await.unwrap();
    assert!(l.starts_with("+OK fake ready <"), "{l}");
    // pipelined: all commands in one write
    s.get_mut()
        .write_all(b"USER u\r\nPASS p\r\nRETR 1\r\nRETR 2\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.starts_with("+OK send PASS\r\n+OK 3 messages\r\n+OK 20 octets\r\nSubject: a\r\n\r\n..dot\r\n.\r\n+OK "), "{rest}");
    assert!(
        rest.ends_with("octets\r\nSubject: b"),
        "cut after 10 bytes: {rest:?}"
    );

    // connection 1: DELE 1 + 3, QUIT commits
    let s = tokio::net::TcpStream::connect(("127.0.0.1", fake.port()))
        .await
        .unwrap();
    let mut s = tokio::io::BufReader::new(s);
    let mut out = String::new();
    s.get_mut()
        .write_all(
            b"CAPA\r\nUSER u\r\nPASS p\r\nUIDL\r\nDELE 1\r\nDELE 3\r\nSTAT\r\nRETR 1\r\nQUIT\r\n",
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.contains("PIPELINING\r\n"), "{out}");
    assert!(
        out.contains("+OK\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"),
        "{out}"
    );
    assert!(out.contains("-ERR message deleted"), "{out}");
    assert!(out.ends_with("+OK bye\r\n"), "{out}");
    let remaining = fake.remaining();
    assert_eq!(remaining, vec![("uid-2".to_string(), msgs[1].clone())]);
    assert_eq!(fake.connections(), 2);
    assert!(fake.commands().contains(&"PASS ***".to_string()));
    assert!(!fake.commands().iter().any(|c| c.contains("PASS p")));
}

#[tokio::test]
async fn fake_faults() {
    let mut cfg = FakeConfig::new("u", "p", vec![b"A: b\r\n\r\nx\r\n".to_vec(); 2]);
    cfg.uidls = Some(vec!["same".into(), "same".into()]);
    cfg.script = FakeScript {
        greeting: Some((0, "-ERR [IN-USE] maildrop locked".into())),
        pass_reply: Some((1, "-ERR [AUTH] bad password".into())),
        garbage_after_command: Some((2, "UIDL".into(), "HELLO WORLD\r\n".into())),
        endless_line_on: Some((3, "LIST".into())),
        no_capa: true,
        ..Default::default()
    };
    let fake = FakePop3::start(cfg);
    async fn talk(port: u16, input: &[u8], limit: usize) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(input).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            (&mut s).take(limit as u64).read_to_end(&mut out),
        )
        .await;
        out
    }
    let port = fake.port();
    assert_eq!(
        talk(port, b"", 1000).await,
        b"-ERR [IN-USE] maildrop locked\r\n"
    );
    let o =
        String::from_utf8(talk(port, b"CAPA\r\nUSER u\r\nPASS p\r\nQUIT\r\n", 1000).await).unwrap();
    assert!(
        o.contains("-ERR unknown command\r\n+OK send PASS\r\n-ERR [AUTH] bad password\r\n+OK bye"),
        "{o}"
    );
    let o =
        String::from_utf8(talk(port, b"USER u\r\nPASS p\r\nUIDL\r\nUIDL\r\nQUIT\r\n", 1000).await)
            .unwrap();
    assert!(
        o.contains("+OK 2 messages\r\nHELLO WORLD\r\n+OK\r\n1 same\r\n2 same\r\n.\r\n"),
        "{o}"
    );
    let o = talk(port, b"USER u\r\nPASS p\r\nLIST\r\n", 1 << 20).await;
    assert!(
        o.len() >= 1 << 20 && o.ends_with(b"xxxx") && !o[80..].contains(&b'\n'),
        "{} {:?}",
        o.len(),
        String::from_utf8_lossy(&o[..o.len().min(100)])
    );
    drop(fake);
    tokio::task::yield_now().await;
    // server gone: connect is refused (or at least nobody greets)
    if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
        assert!(!matches!(n, Ok(Ok(k)) if k > 0), "still serving after drop");
    }
}
