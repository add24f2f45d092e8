//! First run (issue 16): `mailferry --version` names the commit, and `mailferry doctor`
//! passes on a working installation (exit 0, every line `ok`) and names what is broken in
//! a `FAIL <check>:` line (exit 1): a data dir that is a file, a database it cannot reach
//! or whose migrations are behind, a key others can read, an expired certificate, a port
//! in use, a config that does not load.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::server::{bin, psql, FreshPg};

/// The binary in `dir` with none of the test process's `MAILFERRY_` or `DATABASE_URL`
/// variables, plus `env`.
fn mailferry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().to_ascii_uppercase().starts_with("MAILFERRY_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).args(args).envs(env.iter().copied()).output().expect("run mailferry")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A working installation: a data dir initialised by `db migrate` (database, keys), an
/// archive directory, a TLS pair for the API and a CA file, listening on a free port.
struct Install {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Install {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        let config = dir.path().join("mailferry.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
                 [security]\nca_file = {:?}\n",
                dir.path().join("cert.pem"),
                dir.path().join("key.pem"),
                dir.path().join("cert.pem"),
            ),
        )
        .unwrap();
        let install = Self { dir, config };
        let out = install.run(&["db", "migrate"], &[]);
        assert!(out.status.success(), "db migrate: {}", text(&out.stderr));
        std::fs::create_dir_all(data.join("archive/legal")).unwrap();
        install
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        mailferry(self.dir.path(), &all, env)
    }

    /// `doctor`: its exit code and its lines.
    fn doctor(&self, env: &[(&str, &str)]) -> (i32, Vec<String>) {
        let out = self.run(&["doctor"], env);
        (out.status.code().unwrap_or(-1), text(&out.stdout).lines().map(str::to_owned).collect())
    }
}

/// The one line of `check`, asserting there is exactly one.
fn line<'a>(lines: &'a [String], check: &str) -> &'a str {
    let named = |l: &&String| {
        let rest = l.strip_prefix("ok   ").or_else(|| l.strip_prefix("FAIL "));
        rest.is_some_and(|r| r.starts_with(&format!("{check}: ")))
    };
    let found: Vec<&String> = lines.iter().filter(named).collect();
    assert_eq!(found.len(), 1, "one line for {check:?} in {lines:#?}");
    found[0]
}

/// Exit 1, `check` failed with a message containing `needle`, and every other check passed.
fn fails_only(result: (i32, Vec<String>), check: &str, needle: &str) {
    let (code, lines) = result;
    assert_eq!(code, 1, "{lines:#?}");
    let l = line(&lines, check);
    assert!(l.starts_with(&format!("FAIL {check}: ")) && l.contains(needle), "{check} should fail with {needle:?}: {l}");
    let others: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok   ") && !l.starts_with(&format!("FAIL {check}: "))).collect();
    assert!(others.is_empty(), "only {check} fails: {lines:#?}");
}

#[test]
fn version_names_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = mailferry(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    let printed = text(&out.stdout);
    let prefix = format!("mailferry {} (", env!("CARGO_PKG_VERSION"));
    let commit = printed.trim().strip_prefix(&prefix).and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("{printed:?}"));
    if commit == "unknown" {
        // Built outside a git checkout: then this test runs outside one too.
        let git = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
        assert!(git.map_or(true, |o| !o.status.success()), "built in a git checkout, yet the commit is unknown");
        return;
    }
    assert!(commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "a short commit id: {printed:?}");
    // A commit of this repository (HEAD may have moved since the build: others commit too).
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(known.success(), "{commit} is a commit of this checkout");
}

#[test]
fn doctor_passes_on_a_working_installation() {
    let install = Install::new();
    let (code, lines) = install.doctor(&[]);
    assert_eq!(code, 0, "{lines:#?}");
    for check in ["config", "data dir", "database", "secret key", "receipt key", "archive keys", "archive root", "tls", "ca file", "listen"] {
        assert!(line(&lines, check).starts_with("ok   "), "{lines:#?}");
    }
    assert!(line(&lines, "database").contains("migrations applied"), "{lines:#?}");
    assert!(line(&lines, "archive root").contains("1 archive(s) writable"), "{lines:#?}");
    assert!(line(&lines, "tls").contains("valid until"), "{lines:#?}");

    // A fresh directory: what `serve` creates on first start is fine, and said so.
    let fresh = tempfile::tempdir().unwrap();
    let out = mailferry(fresh.path(), &["doctor", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ok   database: sqlite://mailferry-data/state.db does not exist yet"), "{}", text(&out.stdout));
    assert!(!fresh.path().join("mailferry-data").exists(), "the doctor creates nothing");
}

#[test]
fn doctor_names_what_is_broken() {
    let install = Install::new();

    // A data dir that is a file (an unwritable one too, but tests run as root).
    let file = install.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, lines) = install.doctor(&[("MAILFERRY_DATA_DIR", file.to_str().unwrap())]);
    assert_eq!(code, 1);
    assert!(line(&lines, "data dir").starts_with("FAIL data dir: ") && line(&lines, "data dir").contains("is not a directory"), "{lines:#?}");
    assert!(line(&lines, "database").starts_with("FAIL database: "), "the SQLite file cannot be made there: {lines:#?}");

    // A database that is not there; the password is not shown.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://mf:hunter2@127.0.0.1:{closed}/mailferry");
    let (code, lines) = install.doctor(&[("DATABASE_URL", &url)]);
    fails_only((code, lines.clone()), "database", "check database.url (from DATABASE_URL)");
    assert!(!lines.concat().contains("hunter2"), "the database password is redacted: {lines:#?}");

    // The port is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails_only(install.doctor(&[("MAILFERRY_SERVER__LISTEN", &addr)]), "listen", &format!("{addr} is in use"));
    drop(taken);

    // A secret key others can read.
    use std::os::unix::fs::PermissionsExt;
    let key = install.data().join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails_only(install.doctor(&[]), "secret key", "chmod 600");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An expired certificate for the API.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let pair = rcgen::KeyPair::generate().unwrap();
    let old = install.dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("cert.pem"), params.self_signed(&pair).unwrap().pem()).unwrap();
    std::fs::write(old.join("key.pem"), pair.serialize_pem()).unwrap();
    let cert = old.join("cert.pem").display().to_string();
    let key_pem = old.join("key.pem").display().to_string();
    let env = [("MAILFERRY_SERVER__TLS__CERT_FILE", cert.as_str()), ("MAILFERRY_SERVER__TLS__KEY_FILE", key_pem.as_str())];
    fails_only(install.doctor(&env), "tls", "expired");

    // A migration behind: the database as an older build left it.
    forget_last_migration(&install.data().join("state.db"));
    fails_only(install.doctor(&[]), "database", "1 of");
    assert!(line(&install.doctor(&[]).1, "database").contains("run `mailferry db migrate`"));

    // A config that does not load: one FAIL line, exit 1 (not the usual 2).
    let (code, lines) = install.doctor(&[("MAILFERRY_WORKER__NOPE", "1")]);
    assert_eq!(code, 1, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("FAIL config: ")) && lines[0].contains("MAILFERRY_WORKER__NOPE"), "{lines:#?}");
}

/// On PostgreSQL: an empty database has every migration pending; after `db migrate` all
/// are applied; one forgotten is named.
#[test]
fn doctor_reads_postgres_migrations() {
    let install = Install::new();
    let pg = FreshPg::create();
    let env = [("DATABASE_URL", pg.url.as_str())];
    fails_only(install.doctor(&env), "database", "migrations pending");
    let out = install.run(&["db", "migrate"], &env);
    assert!(out.status.success(), "db migrate: {}", text(&out.stderr));
    let (code, lines) = install.doctor(&env);
    assert_eq!(code, 0, "{lines:#?}");
    assert!(line(&lines, "database").contains("migrations applied"), "{lines:#?}");
    psql(&pg.url, "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)");
    fails_only(install.doctor(&env), "database", "1 of");
}

/// The database as an older build left it: the latest migration not recorded.
fn forget_last_migration(db: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
            .execute(&mut conn)
            .await
            .unwrap();
    });
}
