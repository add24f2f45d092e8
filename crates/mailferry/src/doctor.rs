//! `mailferry doctor`: will `mailferry serve` start here, with this configuration? Reads the
//! configuration as `serve` does (`--config`, `MAILFERRY_*`, the data dir) and checks what
//! start-up needs, one line each: `ok   <check>: …` or `FAIL <check>: <what is wrong and how
//! to fix it>`. Exit status 0 when every check passed, 1 otherwise.
//!
//! It changes nothing: no migration applied, no key generated, no directory created. What
//! `serve` would create on first start (the data dir, the SQLite database, the keys) is
//! `ok` when it can be created, and says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use mailferry_model::Sealer;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::{ConnectOptions, Connection};

use crate::config::{ConfigError, Loaded, TlsConfig};

/// The migrations the store applies at start, embedded from the same directories.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long the database may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this listen address instead of `server.listen` (as `serve --listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// One check's verdict: `Ok(what is fine)` or `Err(what is wrong and how to fix it)`.
type Verdict = Result<String, String>;

fn line(name: &str, verdict: &Verdict) -> String {
    match verdict {
        Ok(m) => format!("ok   {name}: {m}"),
        Err(m) => format!("FAIL {name}: {m}"),
    }
}

/// The configuration did not load: one `FAIL config` line per problem, exit 1.
pub fn config_failed(e: &ConfigError) -> u8 {
    for problem in &e.0 {
        println!("{}", line("config", &Err(format!("{problem}; fix it, then run `mailferry config check`"))));
    }
    crate::exit::COULD_NOT_PROCEED
}

/// Run every check, print a line each; the exit status.
pub async fn run(args: DoctorArgs, loaded: &Loaded) -> u8 {
    let c = &loaded.config;
    let listen = args.listen.unwrap_or(c.server.listen);
    let mut checks: Vec<(&str, Verdict)> = vec![
        ("config", Ok(match &loaded.file {
            Some(f) => format!("{} and the environment", f.display()),
            None => "defaults and the environment (no config file)".into(),
        })),
        ("data dir", writable_dir(&c.data_dir, "data_dir")),
        ("database", database(loaded).await),
        ("secret key", secret_key(loaded)),
        ("receipt key", receipt_key(loaded)),
        ("archive keys", archive_keys(loaded)),
        ("archive root", archive_root(loaded)),
    ];
    if let Some(tls) = &c.server.tls {
        checks.push(("tls", server_tls(tls)));
    }
    if let Some(ca) = &c.security.ca_file {
        checks.push(("ca file", ca_file(ca)));
    }
    checks.push(("listen", bindable(listen, "server.listen (or serve --listen)")));
    if let Some(addr) = c.worker.metrics_listen {
        checks.push(("metrics listen", bindable(addr, "worker.metrics_listen")));
    }
    for (name, verdict) in &checks {
        println!("{}", line(name, verdict));
    }
    let failed = checks.iter().filter(|(_, v)| v.is_err()).count();
    if failed == 0 {
        crate::exit::OK
    } else {
        eprintln!("{failed} of {} checks failed", checks.len());
        crate::exit::COULD_NOT_PROCEED
    }
}

/// A directory we can write to, or one `serve` can create (its nearest existing ancestor
/// is a writable directory).
fn writable_dir(dir: &Path, key: &str) -> Verdict {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("{shown} is not a directory: point {key} at a directory")),
        Ok(_) => match tempfile::Builder::new().prefix(".mailferry-doctor.").tempfile_in(dir) {
            Ok(_) => Ok(format!("{shown} (writable)")),
            Err(e) => Err(format!("cannot write in {shown}: {e}: make it writable by this user (chown/chmod) or set {key}")),
        },
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            match absolute.ancestors().skip(1).find(|a| a.exists()).map(|parent| writable_dir(parent, key)) {
                Some(Ok(_)) => Ok(format!("{shown} does not exist yet; `mailferry serve` creates it")),
                Some(Err(why)) => Err(format!("{shown} does not exist and cannot be created: {why}")),
                None => Err(format!("{shown} does not exist and has no existing parent: check {key}")),
            }
        }
        Err(e) => Err(format!("cannot read {shown}: {e}: check {key} and the permissions of its parents")),
    }
}

/// Reachable, and every migration of this binary applied (and none unknown to it).
async fn database(loaded: &Loaded) -> Verdict {
    let url = loaded.config.database_url();
    let origin = loaded.origin("database.url");
    let text = url.expose();
    let applied = if let Some(path) = text.strip_prefix("sqlite://") {
        let file = Path::new(path);
        if !file.exists() {
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return match writable_dir(dir, "database.url") {
                Ok(_) => Ok(format!("{url} does not exist yet; `mailferry serve` creates it")),
                Err(why) => Err(format!("{url} cannot be created: {why}")),
            };
        }
        sqlite_migrations(path).await.map(|a| (a, &SQLITE_MIGRATIONS))
    } else if url.is_postgres() {
        postgres_migrations(text).await.map(|a| (a, &POSTGRES_MIGRATIONS))
    } else {
        return Err(format!("{url} is neither postgres:// nor sqlite://: fix database.url ({origin})"));
    };
    match applied {
        Ok((applied, known)) => compare_migrations(&applied, known).map(|m| format!("{url}: {m}")),
        Err(e) => Err(format!("cannot read {url}: {e}: check database.url ({origin}) and that the database is up")),
    }
}

/// A row of `_sqlx_migrations`: version, checksum, success.
type Applied = (i64, Vec<u8>, bool);

async fn sqlite_migrations(path: &str) -> Result<Vec<Applied>, String> {
    // Read-only: the doctor never creates or migrates the database.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(CONNECT_TIMEOUT);
    let mut conn = options.connect().await.map_err(|e| e.to_string())?;
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let rows = if exists == 0 {
        Vec::new()
    } else {
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?
    };
    let _ = conn.close().await;
    Ok(rows)
}

async fn postgres_migrations(url: &str) -> Result<Vec<Applied>, String> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
        .await
        .map_err(|_| format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let rows = if exists {
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    let _ = conn.close().await;
    Ok(rows)
}

/// The applied migrations against the ones this binary carries.
fn compare_migrations(applied: &[Applied], known: &Migrator) -> Verdict {
    let known: Vec<(i64, &[u8])> =
        known.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| (m.version, m.checksum.as_ref())).collect();
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    let failed: Vec<i64> = applied.iter().filter(|(_, _, ok)| !ok).map(|(v, _, _)| *v).collect();
    if !failed.is_empty() {
        return Err(format!(
            "migration {} failed part-way: restore the database from a backup, or repair it and rerun `mailferry db migrate`",
            list(&failed)
        ));
    }
    let unknown: Vec<i64> = applied.iter().filter(|(v, _, _)| !known.iter().any(|(k, _)| k == v)).map(|(v, _, _)| *v).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the database has migrations this binary does not know ({}): a newer mailferry used it; run that version",
            list(&unknown)
        ));
    }
    let changed: Vec<i64> =
        applied.iter().filter(|(v, sum, _)| known.iter().any(|(k, s)| k == v && *s != sum.as_slice())).map(|(v, _, _)| *v).collect();
    if !changed.is_empty() {
        return Err(format!("migration {} differs from this binary's: this database was migrated by another build", list(&changed)));
    }
    let pending: Vec<i64> = known.iter().filter(|(k, _)| !applied.iter().any(|(v, _, _)| v == k)).map(|(k, _)| *k).collect();
    if !pending.is_empty() {
        return Err(format!(
            "reachable, {} of {} migrations pending ({}): run `mailferry db migrate` (serve also applies them at start)",
            pending.len(),
            known.len(),
            list(&pending)
        ));
    }
    Ok(format!("reachable, all {} migrations applied", known.len()))
}

/// A key file: present, private to its owner (0600), holding a key `parse` accepts. A
/// default file that is absent is generated on first start.
fn key_file(path: &Path, key: &str, default: bool, parse: impl Fn(&Path) -> Result<(), String>) -> Verdict {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && default => {
            return match path.parent().map(|d| writable_dir(d, "data_dir")) {
                Some(Err(why)) => Err(format!("{shown} does not exist and cannot be created: {why}")),
                _ => Ok(format!("{shown} does not exist yet; `mailferry serve` generates it (0600)")),
            };
        }
        Err(e) => return Err(format!("cannot read {shown}: {e}: check {key}")),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("{shown} is readable by others (mode {mode:o}): chmod 600 {shown}"));
    }
    parse(path).map(|()| format!("{shown} (mode 600)"))
}

/// `security.secret_key`, `security.secret_key_file`, else `<data_dir>/secret.key`.
fn secret_key(loaded: &Loaded) -> Verdict {
    let s = &loaded.config.security;
    let sealer = |path: &Path| match std::fs::read_to_string(path) {
        Ok(hex) if Sealer::from_hex(hex.trim()).is_ok() => Ok(()),
        Ok(_) => Err(format!("{} does not hold 64 hex digits: restore the key (stored passwords need it)", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    };
    match (&s.secret_key, &s.secret_key_file) {
        (Some(hex), _) => Sealer::from_hex(hex.expose_secret())
            .map(|_| format!("security.secret_key ({})", loaded.origin("security.secret_key")))
            .map_err(|_| "security.secret_key is not 64 hex digits".into()),
        (None, Some(file)) => key_file(file, "security.secret_key_file", false, sealer),
        (None, None) => key_file(&loaded.config.data_dir.join("secret.key"), "data_dir", true, sealer),
    }
}

/// `security.receipt_key_file`, else `<data_dir>/receipt.key`.
fn receipt_key(loaded: &Loaded) -> Verdict {
    let (path, key) = match &loaded.config.security.receipt_key_file {
        Some(p) => (p.clone(), "security.receipt_key_file"),
        None => (loaded.config.data_dir.join("receipt.key"), "data_dir"),
    };
    // Both are created on first use: the configured file as much as the default.
    key_file(&path, key, true, |p| {
        mailferry_proof::ReceiptSigner::load_or_create(p).map(drop).map_err(|e| format!("{e}: restore the key or move it away"))
    })
}

/// `archive.keys` / `archive.keys_file`: parsed, as the archives read them.
fn archive_keys(loaded: &Loaded) -> Verdict {
    let keys = crate::settings::archive_keys(loaded).map_err(|e| e.0.join("; "))?;
    Ok(match keys.active() {
        Some((id, _)) => format!("new blobs sealed with key {id:?}"),
        None => "none configured (archived blobs are compressed, not encrypted)".into(),
    })
}

/// `archive.root` (default `<data_dir>/archive`) and each archive in it, writable.
fn archive_root(loaded: &Loaded) -> Verdict {
    let root = loaded.config.archive_root();
    let key = if loaded.config.archive.root.is_some() { "archive.root" } else { "data_dir" };
    let verdict = writable_dir(&root, key)?;
    let archives: Vec<PathBuf> = match std::fs::read_dir(&root) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(_) => return Ok(verdict),
    };
    for dir in &archives {
        writable_dir(dir, key)?;
    }
    Ok(match archives.len() {
        0 => verdict,
        n => format!("{verdict}, {n} archive(s) writable"),
    })
}

/// `[server.tls]`: the pair loads as `serve` loads it, and every certificate is valid now.
fn server_tls(tls: &TlsConfig) -> Verdict {
    let fix = "fix server.tls.cert_file / key_file";
    crate::tls::load_certified_key(tls).map_err(|e| format!("{e:#}: {fix}"))?;
    let valid = certificates_valid(&tls.cert_file).map_err(|e| format!("{e}: {fix}"))?;
    Ok(format!("{} and {} match; {valid}", tls.cert_file.display(), tls.key_file.display()))
}

/// `security.ca_file`: PEM certificates, valid now.
fn ca_file(path: &Path) -> Verdict {
    certificates_valid(path).map(|v| format!("{}: {v}", path.display())).map_err(|e| format!("{e}: fix security.ca_file"))
}

/// Every certificate in a PEM file is within its validity period: "valid until …" of the
/// first to expire, or what is wrong.
fn certificates_valid(path: &Path) -> Result<String, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ders = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let now = x509_parser::time::ASN1Time::now();
    let mut soonest: Option<x509_parser::time::ASN1Time> = None;
    for der in &ders {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{} holds a certificate that does not parse: {e}", path.display()))?;
        let validity = cert.validity();
        let subject = cert.subject();
        if validity.not_after < now {
            return Err(format!("the certificate {subject} in {} expired on {}", path.display(), validity.not_after));
        }
        if validity.not_before > now {
            return Err(format!("the certificate {subject} in {} is not valid before {}", path.display(), validity.not_before));
        }
        soonest = Some(soonest.map_or(validity.not_after, |s| if validity.not_after < s { validity.not_after } else { s }));
    }
    let until = soonest.map(|t| t.to_string()).unwrap_or_default();
    Ok(format!("{} certificate(s), valid until {until}", ders.len()))
}

/// Nothing else listens there (and we may bind it).
fn bindable(addr: SocketAddr, key: &str) -> Verdict {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("{addr} is in use: stop what listens there (another mailferry?) or change {key}"))
        }
        Err(e) => Err(format!("cannot bind {addr}: {e}: change {key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(m: &Migrator) -> Vec<Applied> {
        m.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| (m.version, m.checksum.to_vec(), true)).collect()
    }

    #[test]
    fn migrations_compared() {
        let all = applied(&SQLITE_MIGRATIONS);
        assert!(all.len() > 1);
        assert!(compare_migrations(&all, &SQLITE_MIGRATIONS).is_ok());
        let pending = compare_migrations(&all[..all.len() - 1], &SQLITE_MIGRATIONS).unwrap_err();
        assert!(pending.contains("1 of") && pending.contains("mailferry db migrate"), "{pending}");
        assert!(compare_migrations(&[], &SQLITE_MIGRATIONS).unwrap_err().contains("pending"));
        let mut newer = all.clone();
        newer.push((99_999_999_999_999, vec![1], true));
        assert!(compare_migrations(&newer, &SQLITE_MIGRATIONS).unwrap_err().contains("does not know (99999999999999)"));
        let mut changed = all.clone();
        changed[0].1 = vec![0];
        assert!(compare_migrations(&changed, &SQLITE_MIGRATIONS).unwrap_err().contains("differs"));
        let mut failed = all;
        failed[0].2 = false;
        assert!(compare_migrations(&failed, &SQLITE_MIGRATIONS).unwrap_err().contains("failed part-way"));
    }

    #[test]
    fn directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable_dir(dir.path(), "data_dir").unwrap().contains("writable"));
        assert!(writable_dir(&dir.path().join("a/b"), "data_dir").unwrap().contains("does not exist yet"));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(writable_dir(&file, "data_dir").unwrap_err().contains("not a directory"));
        assert!(writable_dir(&file.join("below"), "data_dir").unwrap_err().contains("cannot be created"));
    }

    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let parse = |_: &Path| Ok(());
        assert!(key_file(&path, "data_dir", true, parse).unwrap().contains("generates it"));
        assert!(key_file(&path, "security.secret_key_file", false, parse).unwrap_err().contains("cannot read"));
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(key_file(&path, "data_dir", true, parse).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(key_file(&path, "data_dir", true, parse).is_ok());
    }
}
