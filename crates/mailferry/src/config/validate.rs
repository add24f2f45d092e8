//! Checks that need more than one key, or a parser from another crate; the archive key
//! ring parser `settings` uses too.

use mailferry_model::{HostList, Sealer};
use secrecy::ExposeSecret;

use super::{ArchiveIndex, ConfigError, Loaded};

/// Checks that need more than one key, or a parser from another crate.
pub(crate) fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let c = &loaded.config;
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, problem: &str| {
        if !ok {
            problems.extend(loaded.error(key, problem).0);
        }
    };
    check(
        !(c.security.secret_key.is_some() && c.security.secret_key_file.is_some()),
        "security.secret_key",
        "set either secret_key or secret_key_file, not both",
    );
    check(
        c.security.secret_key.as_ref().is_none_or(|k| Sealer::from_hex(k.expose_secret()).is_ok()),
        "security.secret_key",
        "expected 64 hex digits",
    );
    check(
        c.archive.keys.is_empty() || c.archive.keys_file.is_none(),
        "archive.keys",
        "set either keys or keys_file, not both",
    );
    if let Err(e) = parse_archive_keys(c.archive.keys.iter().map(|k| k.expose_secret())) {
        check(false, "archive.keys", &e);
    }
    for (key, list) in [
        ("security.plaintext_allow", &c.security.plaintext_allow),
        ("network.allow", &c.network.allow),
        ("network.deny", &c.network.deny),
    ] {
        if let Err(e) = HostList::parse(list.iter().map(String::as_str)) {
            check(false, key, &e.to_string());
        }
    }
    let bad = c.api.invalid_trusted_proxies();
    check(
        bad.is_empty(),
        "api.trusted_proxies",
        &format!("expected IP addresses or CIDR blocks, not {}", bad.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")),
    );
    check(
        c.api.default_per_page <= c.api.max_per_page,
        "api.default_per_page",
        &format!("must not exceed api.max_per_page ({})", c.api.max_per_page),
    );
    check(
        c.worker.retry.base_delay_ms <= c.worker.retry.max_delay_ms,
        "worker.retry.base_delay_ms",
        &format!("must not exceed worker.retry.max_delay_ms ({})", c.worker.retry.max_delay_ms),
    );
    check(c.worker.lease_secs >= 3, "worker.lease_secs", "must be at least 3");
    let postgres = c.database_url().is_postgres();
    check(
        c.archive.index != ArchiveIndex::Database || postgres,
        "archive.index",
        "\"database\" needs database.url to be a postgres:// URL",
    );
    if let Some(s3) = &c.archive.s3 {
        check(!s3.bucket.trim().is_empty(), "archive.s3.bucket", "must name a bucket");
    }
    if let Some(filter) = &c.log.filter {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
            check(false, "log.filter", &format!("not a tracing filter: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

/// `id:hex` entries → a key ring; the first seals new blobs (rotation keeps the others).
pub fn parse_archive_keys<'a>(entries: impl Iterator<Item = &'a str>) -> Result<mailferry_archive::KeyRing, String> {
    let mut ring = mailferry_archive::KeyRing::none();
    let mut first = None;
    for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
        let (id, hex) = entry.split_once(':').ok_or("each key is written id:hex")?;
        // Never echo the key material; the id is not secret.
        ring.add_hex(id, hex).map_err(|_| format!("key {id:?} is not 64 hex digits"))?;
        first.get_or_insert_with(|| id.to_owned());
    }
    if let Some(id) = first {
        ring.set_active(&id).map_err(|e| e.to_string())?;
    }
    Ok(ring)
}
