//! A private Dovecot 2.3 per test: its own config, users, Maildirs, certificates and
//! loopback ports in a temp dir, run in the foreground as our child so the test owns it.
//!
//! Nothing here touches `/etc/dovecot` or the system service. The recipe this follows is
//! `shared/reference/dovecot-lab.sh`; the differences are: random ports, a throwaway CA
//! (so TLS is verified for real, not skipped), and `-F` (foreground) instead of a
//! daemon with a pid file, so [`Drop`] can kill the whole process group even on panic.
//!
//! ```no_run
//! let lab = mailferry_tests::Dovecot::start();
//! lab.add_user("alice", "pw");
//! lab.seed("alice", &[b"Subject: hi\r\n\r\nbody\r\n".to_vec()]);
//! // ... connect to lab.host():lab.pop3_port() ...
//! assert_eq!(lab.message_count("alice"), 1);
//! ```

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

mod config;
pub mod oauth2;

use config::{config, make_certs, make_self_signed_ca_cert};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const NOT_INSTALLED: &str =
    "Dovecot is not installed: run ./scripts/test (it installs dovecot-core dovecot-pop3d dovecot-imapd)";

/// Debian's unprivileged mail user; Dovecot refuses uid 0 for mail access.
const MAIL_USER: &str = "mail";

/// How long to wait for the listeners and the first greetings.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`Dovecot::start_with`].
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Appended verbatim to the generated `dovecot.conf` (later settings win in Dovecot),
    /// e.g. `"imap_capability = +APPENDLIMIT=1048576\n"`. A `mail_max_userip_connections`
    /// here replaces the lab's own (1000 per protocol) wherever they were set.
    pub extra_config: String,
}

/// The certificate the lab's TLS ports present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LabCert {
    /// A leaf for `127.0.0.1`/`localhost` signed by a throwaway CA (`ca.pem`).
    #[default]
    CaSigned,
    /// What legacy hosts present: one self-signed certificate with `CA:TRUE` and only a
    /// common name (`CN=127.0.0.1`, no subjectAltName), as `openssl req -x509 -subj
    /// /CN=127.0.0.1` makes. `ca.pem` is then that very certificate.
    SelfSignedCa,
}

/// A running private Dovecot. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Dovecot {
    child: Child,
    pop3: u16,
    pop3s: u16,
    imap: u16,
    imaps: u16,
    conf: PathBuf,
    ca_pem: Vec<u8>,
    uid: u32,
    gid: u32,
    /// Names of the users added so far.
    users: Mutex<Vec<String>>,
    /// Monotonic counter for seeded file names, so later seeds sort after earlier ones.
    seq: AtomicU64,
    /// The HS256 key the oauth2 passdb validates access tokens with (see [`oauth2`]).
    oauth2_key: Vec<u8>,
    // Last field: dropped after the child is dead (fields drop in declaration order,
    // and `Drop::drop` below runs before any of them).
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// Start with the default configuration. Panics (with the server log) if it fails.
    pub fn start() -> Dovecot {
        Self::start_with(LabOptions::default())
    }

    /// Start with extra configuration appended. Panics (with the server log) if it fails.
    pub fn start_with(opts: LabOptions) -> Dovecot {
        Self::start_with_cert(opts, LabCert::CaSigned)
    }

    /// Start with extra configuration and the given kind of server certificate.
    pub fn start_with_cert(opts: LabOptions, cert: LabCert) -> Dovecot {
        if Command::new("dovecot").arg("--version").output().is_err() {
            panic!("{NOT_INSTALLED}");
        }
        // Ports are picked by binding port 0 and releasing it; another process can grab
        // one in between, so retry a few times on "address in use".
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start(&opts, cert) {
                Ok(lab) => return lab,
                Err(e) if e.contains("Address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_err}");
    }

    fn try_start(opts: &LabOptions, cert: LabCert) -> Result<Dovecot, String> {
        let (uid, gid) = mail_ids();
        let dir = tempfile::Builder::new()
            .prefix("mf-dovecot-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path();
        // Dovecot's unprivileged processes (mail, dovenull, dovecot) must traverse it.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        for d in ["run", "state", "ssl", "mail", "users"] {
            fs::create_dir(root.join(d)).map_err(|e| e.to_string())?;
        }
        chown(root.join("mail"), Some(uid), Some(gid)).map_err(|e| e.to_string())?;

        let (ca_pem, cert_pem, key_pem) = match cert {
            LabCert::CaSigned => make_certs(),
            LabCert::SelfSignedCa => make_self_signed_ca_cert(),
        };
        fs::write(root.join("ssl/ca.pem"), &ca_pem).map_err(|e| e.to_string())?;
        fs::write(root.join("ssl/cert.pem"), &cert_pem).map_err(|e| e.to_string())?;
        fs::write(root.join("ssl/key.pem"), &key_pem).map_err(|e| e.to_string())?;
        fs::set_permissions(root.join("ssl/key.pem"), fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;

        let oauth2_key = oauth2::write_config(root).map_err(|e| e.to_string())?;

        let ports = free_ports::<4>();
        let [pop3, pop3s, imap, imaps] = ports;
        let conf = root.join("dovecot.conf");
        let mut text = config(root, uid, gid, pop3, pop3s, imap, imaps);
        if opts.extra_config.contains("mail_max_userip_connections") {
            // Dovecot refuses one setting in two filters: the options' value replaces ours.
            text = text.lines().filter(|l| !l.contains("mail_max_userip_connections")).map(|l| format!("{l}\n")).collect();
        }
        text.push_str("\n# --- LabOptions::extra_config ---\n");
        text.push_str(&opts.extra_config);
        text.push('\n');
        fs::write(&conf, text).map_err(|e| e.to_string())?;

        // Startup errors before the log file is open go to stderr: keep them.
        let stderr = fs::File::create(root.join("stderr.log")).map_err(|e| e.to_string())?;
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().map_err(|e| e.to_string())?)
            .stderr(stderr)
            // Own process group: Drop signals master *and* every login/auth/mail child.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning dovecot: {e}"))?;

        let mut lab = Dovecot {
            child,
            pop3,
            pop3s,
            imap,
            imaps,
            conf,
            ca_pem,
            uid,
            gid,
            users: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            oauth2_key,
            dir,
        };
        lab.wait_ready()?;
        Ok(lab)
    }

    /// Poll every 10 ms until all four ports accept and the plain ports greet: the master
    /// binds the listeners before its login processes exist, so a bare connect is not enough.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let fail = |lab: &Dovecot, why: &str| {
            format!(
                "private dovecot in {} did not start: {why}\n--- stderr ---\n{}\n--- log ---\n{}",
                lab.dir().display(),
                fs::read_to_string(lab.dir().join("stderr.log")).unwrap_or_default(),
                lab.log()
            )
        };
        let ports = [self.pop3, self.pop3s, self.imap, self.imaps];
        for port in ports {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(fail(self, &format!("dovecot exited with {status}")));
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(fail(
                        self,
                        &format!("port {port} not accepting after {START_TIMEOUT:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for (port, want) in [(self.pop3, &b"+OK"[..]), (self.imap, &b"* OK"[..])] {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let mut tries = 0;
            let greeting = loop {
                match read_greeting(port, left) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 5 => {
                        tries += 1
                    }
                    r => break r,
                }
            };
            match greeting {
                Ok(g) if g.starts_with(want) => {}
                Ok(g) => {
                    return Err(fail(
                        self,
                        &format!("unexpected greeting {:?}", String::from_utf8_lossy(&g)),
                    ))
                }
                Err(e) => return Err(fail(self, &format!("no greeting on {port}: {e}"))),
            }
        }
        Ok(())
    }

    /// Add a user (or change its password); it can log in as soon as this returns.
    ///
    /// Each user has its own passwd-file (`users/<name>`), so a new user is a new file that
    /// Dovecot opens fresh. Changing an existing password waits for the next wall-clock
    /// second, because Dovecot re-checks a known passwd-file at most once per second.
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.is_empty()
                && !name.contains([':', '\n', '/', '%'])
                && !name.starts_with('.')
                && !password.contains([':', '\n']),
            "lab user names/passwords may not contain ':', '/', '%' or newlines"
        );
        let mut users = self.users.lock().unwrap();
        let existed = users.iter().any(|u| u == name);
        if !existed {
            users.push(name.to_string());
        }
        // passwd-file: user:password:uid:gid:(gecos):home:(shell):extra
        let line = format!(
            "{name}:{{PLAIN}}{password}:{}:{}::{}::\n",
            self.uid,
            self.gid,
            self.home(name).display()
        );
        let tmp = self.dir().join(format!("users/.{name}.new"));
        fs::write(&tmp, line).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        // Rename so Dovecot never reads a half-written file.
        fs::rename(&tmp, self.dir().join("users").join(name)).unwrap();
        if existed {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            std::thread::sleep(
                Duration::from_secs(now.as_secs() + 1) - now + Duration::from_millis(5),
            );
        }
    }

    /// Write raw messages into `user`'s INBOX (`~/Maildir/cur`), byte for byte.
    pub fn seed(&self, user: &str, messages: &[Vec<u8>]) {
        self.seed_folder(user, "INBOX", messages)
    }

    /// Write raw messages into a folder (ASCII names; `/` separates levels). The folder is
    /// created if missing. Files are named so that Dovecot gives them UIDs in the order
    /// given: it assigns UIDs to new files sorted by the leading timestamp, then the rest.
    pub fn seed_folder(&self, user: &str, folder: &str, messages: &[Vec<u8>]) {
        assert!(
            folder.is_ascii(),
            "seed_folder supports ASCII folder names only"
        );
        let md = self.folder_dir(user, folder);
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(sub)).unwrap();
        }
        if md != self.home(user).join("Maildir") {
            // Maildir++: marks a directory as a folder (not a top-level Maildir).
            fs::write(md.join("maildirfolder"), b"").unwrap();
        }
        for m in messages {
            let i = self.seq.fetch_add(1, Ordering::SeqCst);
            let name = format!("{}.M{i}P1.lab,S={}:2,", 1_000_000 + i, m.len());
            fs::write(md.join("cur").join(name), m).unwrap();
        }
        chown_r(&self.home(user), self.uid, self.gid);
    }

    /// Raw bytes of every message in `user`'s INBOX, in IMAP/POP3 order (see
    /// [`Dovecot::folder_messages`]).
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.folder_messages(user, "INBOX")
    }

    /// Raw bytes of every message file (`cur/` and `new/`) of a folder given by its UTF-8
    /// IMAP name (`/` separated). Order: by UID from `dovecot-uidlist` where Dovecot has
    /// assigned one, then (not yet seen by Dovecot) by file-name timestamp. A missing
    /// folder yields an empty list.
    pub fn folder_messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        // Dovecot may be renaming a file (new/ → cur/, or a delivery still in progress after
        // its client was killed) between our listing and our read: list again then.
        for _ in 0..50 {
            let read: Result<Vec<Vec<u8>>, std::io::Error> =
                self.folder_files(user, folder).iter().map(fs::read).collect();
            match read {
                Ok(messages) => return messages,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("reading {user}'s {folder}: {e}"),
            }
        }
        panic!("{user}'s {folder} kept changing while being read")
    }

    /// Number of messages in `user`'s INBOX.
    pub fn message_count(&self, user: &str) -> usize {
        self.folder_files(user, "INBOX").len()
    }

    /// Number of messages in a folder (UTF-8 IMAP name).
    pub fn folder_message_count(&self, user: &str, folder: &str) -> usize {
        self.folder_files(user, folder).len()
    }

    /// Paths of a folder's message files in UID order.
    pub fn folder_files(&self, user: &str, folder: &str) -> Vec<PathBuf> {
        let md = self.folder_dir(user, folder);
        let uids = read_uidlist(&md.join("dovecot-uidlist"));
        let mut files: Vec<(u64, (u64, u64), String, PathBuf)> = Vec::new();
        for sub in ["cur", "new"] {
            let Ok(rd) = fs::read_dir(md.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let base = name.split(':').next().unwrap_or_default();
                let uid = uids
                    .iter()
                    .find(|(_, b)| b == base)
                    .map_or(u64::MAX, |(u, _)| *u);
                files.push((uid, time_key(&name), name, e.path()));
            }
        }
        files.sort();
        files.into_iter().map(|f| f.3).collect()
    }

    /// The Maildir directory of a folder (UTF-8 IMAP name): `~/Maildir` for INBOX, else
    /// Maildir++ `~/Maildir/.A.B` with each level in modified UTF-7 (RFC 3501 §5.1.3),
    /// which is how Dovecot 2.3 names folders on disk by default.
    pub fn folder_dir(&self, user: &str, folder: &str) -> PathBuf {
        let md = self.home(user).join("Maildir");
        if folder.eq_ignore_ascii_case("INBOX") {
            return md;
        }
        let levels: Vec<String> = folder.split('/').map(mutf7_encode).collect();
        md.join(format!(".{}", levels.join(".")))
    }

    /// The user's home directory (holds `Maildir/`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir().join("mail").join(user)
    }

    /// The server log (errors, info and auth_verbose lines).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default()
    }

    /// Run `doveadm -c <our conf> ARGS`, e.g. `["mailbox", "list", "-u", "alice"]`.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("running doveadm")
    }

    /// The throwaway CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca_pem.clone()
    }

    /// The server certificate (PEM) the TLS ports present.
    pub fn server_cert_pem(&self) -> Vec<u8> {
        fs::read(self.dir().join("ssl/cert.pem")).expect("lab server certificate")
    }

    /// Path of the CA certificate PEM file in the lab directory.
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ssl/ca.pem")
    }

    /// A rustls client config (ring provider) that trusts exactly this lab's CA.
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(c.expect("lab CA PEM")).expect("lab CA cert");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(cfg)
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }
    pub fn pop3_port(&self) -> u16 {
        self.pop3
    }
    pub fn pop3s_port(&self) -> u16 {
        self.pop3s
    }
    pub fn imap_port(&self) -> u16 {
        self.imap
    }
    pub fn imaps_port(&self) -> u16 {
        self.imaps
    }
    /// The lab's temp directory (config, log, users, `mail/<user>/Maildir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The generated `dovecot.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    /// Process group id of this instance (= the master's pid).
    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Dovecot {
    /// SIGTERM the whole group, give it 2 s, then SIGKILL; reap the master. Runs on panic
    /// too, so a failing test does not leave servers behind.
    fn drop(&mut self) {
        let pg = Pid::from_raw(self.pgid());
        let _ = killpg(pg, Signal::SIGTERM);
        let gone = |lab: &mut Dovecot| {
            // The master is our child (reap it); its children are re-parented when it
            // exits, so the group is empty only when no live member remains.
            let master_done = !matches!(lab.child.try_wait(), Ok(None));
            master_done && group_members(pg.as_raw()).is_empty()
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone(self) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !gone(self) {
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = self.child.wait();
            let deadline = Instant::now() + Duration::from_secs(1);
            while !group_members(pg.as_raw()).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Live (non-zombie) processes in a process group, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    if let Err(Errno::ESRCH) = killpg(Pid::from_raw(pgid), None) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

fn read_greeting(port: u16, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while !buf[..n].contains(&b'\n') {
        // A signal (SIGCHLD from another test's child, for one) can interrupt the read.
        let k = match s.read(&mut buf[n..]) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if k == 0 || n + k == buf.len() {
            n += k;
            break;
        }
        n += k;
    }
    // Be polite so the log does not fill with "Disconnected" noise of the wrong kind.
    let _ = s.write_all(if buf.starts_with(b"* ") {
        b"x LOGOUT\r\n"
    } else {
        b"QUIT\r\n"
    });
    buf.truncate(n);
    Ok(buf)
}

fn free_ports<const N: usize>() -> [u16; N] {
    // Hold all listeners at once so the N ports are distinct.
    let ls: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    std::array::from_fn(|i| ls[i].local_addr().unwrap().port())
}

fn mail_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name(MAIL_USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("system user {MAIL_USER:?} missing (Debian has it as uid 8)"));
    (u.uid.as_raw(), u.gid.as_raw())
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    chown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap().flatten() {
            chown_r(&e.path(), uid, gid);
        }
    }
}

/// `(uid, basename)` pairs from a Maildir `dovecot-uidlist` (v3: header line, then
/// `UID [ext fields] :basename`). Missing file: empty.
fn read_uidlist(path: &Path) -> Vec<(u64, String)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (head, name) = l.split_once(" :").or_else(|| l.split_once(' '))?;
            let uid = head.split(' ').next()?.parse().ok()?;
            Some((uid, name.trim_start_matches(':').to_string()))
        })
        .collect()
}

/// Sort key of a Maildir file name `SECS.M<usecs>P<pid>...`: (secs, usecs).
fn time_key(name: &str) -> (u64, u64) {
    let num = |s: &str| {
        s.bytes()
            .take_while(u8::is_ascii_digit)
            .fold(0u64, |a, b| a * 10 + u64::from(b - b'0'))
    };
    let secs = num(name);
    let usecs = name.split_once(".M").map_or(0, |(_, r)| num(r));
    (secs, usecs)
}

/// Written independently of `mailferry_imap::mutf7` on purpose: the lab is the oracle
/// our encoder is checked against, so it must not share its bugs.
///
/// Modified UTF-7 (RFC 3501 §5.1.3) for one mailbox name level: printable ASCII stays,
/// `&` becomes `&-`, every run of other characters becomes `&` + modified BASE64 of its
/// UTF-16BE + `-` (alphabet with `,` for `/`, no padding).
pub fn mutf7_encode(s: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1; // 1 byte -> 2 chars, 2 -> 3, 3 -> 4
            for k in 0..chars {
                out.push(B64[((n >> (18 - 6 * k)) & 63) as usize] as char);
            }
        }
        out.push('-');
        run.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_examples() {
        assert_eq!(mutf7_encode("Größe"), "Gr&APYA3w-e");
        assert_eq!(mutf7_encode("A&B"), "A&-B");
        assert_eq!(mutf7_encode("日本語"), "&ZeVnLIqe-");
        assert_eq!(
            mutf7_encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
    }

    #[test]
    fn time_key_orders_numerically() {
        assert!(time_key("999.M5P1.x") < time_key("1000.M1P1.x"));
        assert!(time_key("1000.M9P1.x") < time_key("1000.M10P1.x"));
    }
}
