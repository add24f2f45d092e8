//! Runtime settings of the service, built from the validated [`Config`](crate::config::Config):
//! files read (secret key, CA, archive keys), lists parsed, engine/worker/API configs
//! filled in. Every key and its default is documented in `mailferry.example.toml`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mailferry_engine::{EngineConfig, RetryPolicy, SpoolConfig};
use mailferry_model::netpolicy::Defaults;
use mailferry_model::{DatabaseUrl, HostList, NetworkPolicy, Sealer};
use mailferry_store::{PgStore, SqliteStore, Store};
use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError, Loaded, TlsConfig};

pub struct Settings {
    /// May carry a password: Debug and Display show it redacted.
    pub database_url: DatabaseUrl,
    pub sealer: Sealer,
    pub worker_concurrency: usize,
    pub per_host_limit: u32,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// `worker.metrics_listen`: where a worker-only process serves `/metrics`.
    pub worker_metrics_listen: Option<std::net::SocketAddr>,
    pub plaintext_allow: HostList,
    pub ca_pem: Option<Vec<u8>>,
    pub network: Arc<NetworkPolicy>,
    /// Archives under `archive.root`, sealed with `archive.keys`.
    pub archives: Arc<mailferry_engine::Archives>,
    pub engine: EngineConfig,
    pub api: mailferry_api::ApiConfig,
    pub listen: std::net::SocketAddr,
    pub tls: Option<TlsConfig>,
}

/// The installation's receipt signing key: `security.receipt_key_file`, else
/// `<data_dir>/receipt.key`, created (0600) on first use. The service and
/// `mailferry migrate` sign with the same key.
pub fn receipt_signer(loaded: &Loaded) -> anyhow::Result<Arc<mailferry_proof::ReceiptSigner>> {
    receipt_signer_in(loaded, &loaded.config.data_dir)
}

/// As [`receipt_signer`], with the key file defaulting to `dir/receipt.key`: the CLI keeps
/// it beside its ledger (`--state`, by default in the same `mailferry-data/` the service
/// uses). Archives are not beside `--state`: every command uses `archive.root`.
pub fn receipt_signer_in(loaded: &Loaded, dir: &Path) -> anyhow::Result<Arc<mailferry_proof::ReceiptSigner>> {
    let c = &loaded.config;
    let path = match &c.security.receipt_key_file {
        Some(p) => p.clone(),
        None => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data dir {}", dir.display()))?;
            dir.join("receipt.key")
        }
    };
    mailferry_proof::ReceiptSigner::load_or_create(&path)
        .map(Arc::new)
        .map_err(|e| loaded.error("security.receipt_key_file", e.to_string()).into())
}

/// `[worker.pipeline]` and `[worker.timeouts]` onto an engine configuration: the service's
/// workers and `mailferry migrate` run jobs alike.
pub fn apply_pipeline(engine: &mut EngineConfig, c: &crate::config::Config) {
    let (w, p, t) = (&c.worker, &c.worker.pipeline, &c.worker.timeouts);
    engine.memory_budget = p.memory_budget_bytes;
    engine.retr_window = p.retr_window;
    engine.channel_capacity = p.channel_capacity;
    engine.batch_messages = p.append_batch_messages;
    engine.batch_bytes = p.append_batch_bytes;
    // Each lane is a session on the destination host: never more than a job may hold.
    engine.append_sessions = p.append_sessions.min(w.per_host_limit.max(1) as usize);
    engine.pop3.max_message_bytes = p.max_message_bytes;
    engine.pop3.connect_timeout = Duration::from_secs(t.connect_secs);
    engine.imap.connect_timeout = Duration::from_secs(t.connect_secs);
    engine.pop3.io_timeout = Duration::from_secs(t.pop3_io_secs);
    engine.imap.io_timeout = Duration::from_secs(t.imap_io_secs);
}

impl Settings {
    /// Build the runtime settings. Creates the data dir and the secret key file on first
    /// start when no key is configured. A value that cannot be used (a CA file that cannot
    /// be read, a key file that is not a key) is a [`ConfigError`].
    pub fn from_config(loaded: &Loaded) -> anyhow::Result<Self> {
        let c = &loaded.config;
        let sealer = match (&c.security.secret_key, &c.security.secret_key_file) {
            (Some(hex), _) => {
                Sealer::from_hex(hex.expose_secret()).map_err(|_| loaded.error("security.secret_key", "expected 64 hex digits"))?
            }
            (None, Some(file)) => {
                let hex = std::fs::read_to_string(file)
                    .map_err(|e| loaded.error("security.secret_key_file", format!("cannot read {}: {e}", file.display())))?;
                Sealer::from_hex(hex.trim()).map_err(|_| {
                    loaded.error("security.secret_key_file", format!("{} does not hold 64 hex digits", file.display()))
                })?
            }
            (None, None) => key_file(&c.data_dir.join("secret.key"))?,
        };
        let signer = receipt_signer(loaded)?;
        let mut engine = EngineConfig::default();
        engine.receipts = Some(Arc::clone(&signer));
        let w = &c.worker;
        engine.retry = RetryPolicy {
            attempts: w.retry.attempts,
            base_delay: Duration::from_millis(w.retry.base_delay_ms),
            max_delay: Duration::from_millis(w.retry.max_delay_ms),
        };
        engine.spool = SpoolConfig {
            dir: c.data_dir.join("spool"),
            memory_threshold: w.pipeline.spool_threshold_bytes,
            ..SpoolConfig::default()
        };
        apply_pipeline(&mut engine, c);

        let network = network_policy(loaded)?;
        // `[api]` is the API crate's own config; the rest comes from other sections.
        let api = mailferry_api::ApiConfig {
            plaintext_allow: c.security.plaintext_allow.clone(),
            network: Arc::clone(&network),
            archive_max_concurrent_runs: c.archive.max_concurrent_runs,
            archive_export_ttl_secs: c.archive.export_ttl_secs,
            receipt_public_key: Some(signer.public_key().to_base64()),
            ..c.api.clone()
        };
        Ok(Self {
            database_url: c.database_url(),
            sealer,
            worker_concurrency: w.concurrency,
            per_host_limit: w.per_host_limit,
            lease: Duration::from_secs(w.lease_secs),
            poll_interval: Duration::from_millis(w.poll_interval_ms),
            worker_metrics_listen: w.metrics_listen,
            // Validated in config::load.
            plaintext_allow: HostList::parse(c.security.plaintext_allow.iter().map(String::as_str))
                .map_err(|e| loaded.error("security.plaintext_allow", e))?,
            ca_pem: ca_pem(loaded)?,
            network,
            archives: Arc::new(archives(loaded)?),
            engine,
            api,
            listen: c.server.listen,
            tls: c.server.tls.clone(),
        })
    }

    /// Open the configured backend: the one place that names concrete stores.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.database_url.expose();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = PgStore::connect(url).await.context("cannot open the PostgreSQL database (database.url)")?;
            Ok(Arc::new(store))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let store = SqliteStore::open(Path::new(path))
                .await
                .with_context(|| format!("cannot open the SQLite database {path}"))?;
            Ok(Arc::new(store))
        } else {
            bail!("database.url must start with postgres:// or sqlite://")
        }
    }
}

/// `security.ca_file`, read.
pub fn ca_pem(loaded: &Loaded) -> Result<Option<Vec<u8>>, ConfigError> {
    match &loaded.config.security.ca_file {
        Some(f) => std::fs::read(f)
            .map(Some)
            .map_err(|e| loaded.error("security.ca_file", format!("cannot read {}: {e}", f.display()))),
        None => Ok(None),
    }
}

/// The network policy of the service (API and workers): jobs created over the API may not
/// reach internal addresses unless `network.allow` names them (DESIGN.md §2.9);
/// `network.deny` adds to the built-in list.
pub fn network_policy(loaded: &Loaded) -> Result<Arc<NetworkPolicy>, ConfigError> {
    policy(loaded, Defaults::Api)
}

/// The network policy of `mailferry migrate`, the admin's own shell: the hosts the admin
/// names on the command line may be loopback or private; only link-local, "this network"
/// and cloud metadata are refused by default. The same `[network]` lists apply.
pub fn cli_network_policy(loaded: &Loaded) -> Result<Arc<NetworkPolicy>, ConfigError> {
    policy(loaded, Defaults::Local)
}

fn policy(loaded: &Loaded, defaults: Defaults) -> Result<Arc<NetworkPolicy>, ConfigError> {
    let n = &loaded.config.network;
    let list = |key: &str, l: &[String]| HostList::parse(l.iter().map(String::as_str)).map_err(|e| loaded.error(key, e));
    Ok(Arc::new(NetworkPolicy { allow: list("network.allow", &n.allow)?, deny: list("network.deny", &n.deny)?, defaults }))
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &self.database_url)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("per_host_limit", &self.per_host_limit)
            .field("lease", &self.lease)
            .field("archives", &self.archives)
            .finish_non_exhaustive()
    }
}

/// The archive registry: keys, and where indexes and blobs live (`[archive]`).
pub fn archives(loaded: &Loaded) -> Result<mailferry_engine::Archives, ConfigError> {
    use crate::config::ArchiveIndex;
    let c = &loaded.config;
    let mut archives = mailferry_engine::Archives::new(c.archive_root(), archive_keys(loaded)?).with_open_limits(
        mailferry_engine::OpenLimits { idle: Duration::from_secs(c.archive.idle_close_secs), max_open: c.archive.max_open },
    );
    let url = c.database_url();
    let shared = match c.archive.index {
        // Sharing the index only makes sense when the blobs are shared too: with blobs on
        // each worker's disk, a worker would skip storing bytes another machine holds.
        ArchiveIndex::Auto => url.is_postgres() && c.archive.s3.is_some(),
        ArchiveIndex::Local => false,
        // Validated in config::load: the database is PostgreSQL.
        ArchiveIndex::Database => true,
    };
    if shared {
        archives = archives.with_index(mailferry_archive::IndexConfig::Postgres(url.clone()));
    }
    if let Some(s3) = &c.archive.s3 {
        archives = archives.with_blobs(mailferry_archive::BlobStoreConfig::S3(s3.clone()));
    }
    Ok(archives)
}

/// `archive.keys` or the lines of `archive.keys_file`.
pub fn archive_keys(loaded: &Loaded) -> Result<mailferry_archive::KeyRing, ConfigError> {
    let a = &loaded.config.archive;
    match &a.keys_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| loaded.error("archive.keys_file", format!("cannot read {}: {e}", file.display())))?;
            crate::config::parse_archive_keys(text.lines()).map_err(|e| loaded.error("archive.keys_file", e))
        }
        None => crate::config::parse_archive_keys(a.keys.iter().map(|k| k.expose_secret()))
            .map_err(|e| loaded.error("archive.keys", e)),
    }
}

/// Files named by the config, read without creating anything (`mailferry config check`).
pub fn check_files(loaded: &Loaded) -> Result<(), ConfigError> {
    let c: &Config = &loaded.config;
    let mut problems = Vec::new();
    let mut note = |r: Result<(), ConfigError>| {
        if let Err(e) = r {
            problems.extend(e.0);
        }
    };
    note(ca_pem(loaded).map(drop));
    note(archive_keys(loaded).map(drop));
    if let Some(file) = &c.security.secret_key_file {
        note(match std::fs::read_to_string(file) {
            Ok(hex) if Sealer::from_hex(hex.trim()).is_ok() => Ok(()),
            Ok(_) => Err(loaded.error("security.secret_key_file", format!("{} does not hold 64 hex digits", file.display()))),
            Err(e) => Err(loaded.error("security.secret_key_file", format!("cannot read {}: {e}", file.display()))),
        });
    }
    if let Some(tls) = &c.server.tls {
        note(crate::tls::load_certified_key(tls).map(drop).map_err(|e| loaded.error("server.tls", format!("{e:#}"))));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

/// The embedded default keeps its key beside the data, readable by the owner only.
fn key_file(path: &Path) -> anyhow::Result<Sealer> {
    if let Ok(hex) = std::fs::read_to_string(path) {
        return Sealer::from_hex(&hex).with_context(|| format!("the secret key file {} is invalid", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let hex = Sealer::generate_hex();
    write_private(path, &hex).with_context(|| format!("cannot write the secret key file {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new secret key for sealing stored passwords");
    Ok(Sealer::from_hex(&hex)?)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}
