//! Service settings from the environment (the layered config file arrives with the
//! operations issue). Every variable is named in the error when its value is invalid.
//!
//! | variable | default |
//! |---|---|
//! | `MAILFERRY_DATA_DIR` | `./mailferry-data` (state.db, secret.key, spool/) |
//! | `DATABASE_URL` | `sqlite://<data dir>/state.db`; `postgres://…` switches to PostgreSQL |
//! | `MAILFERRY_SECRET_KEY` | 64 hex digits; else `<data dir>/secret.key`, generated (0600) on first start |
//! | `MAILFERRY_WORKER_CONCURRENCY` | 4 jobs per worker process |
//! | `MAILFERRY_PER_HOST_LIMIT` | 8 sessions per source host and per destination host, across all workers |
//! | `MAILFERRY_LEASE_SECS` | 30 |
//! | `MAILFERRY_PLAINTEXT_ALLOW` | `127.0.0.0/8,::1,localhost` (hosts that may be reached without TLS) |
//! | `MAILFERRY_CA_FILE` | none: extra trusted CA certificates (PEM) for every endpoint |
//! | `MAILFERRY_NETWORK_ALLOW` | empty (any host not denied): hosts/CIDRs mail endpoints may resolve to |
//! | `MAILFERRY_NETWORK_DENY` | link-local and cloud metadata addresses (`mailferry_model::netpolicy::DEFAULT_DENY`); replaces the default when set |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mailferry_model::{HostList, NetworkPolicy, Sealer};
use mailferry_store::{PgStore, SqliteStore, Store};

#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub sealer: Sealer,
    pub worker_concurrency: usize,
    pub per_host_limit: u32,
    pub lease: Duration,
    pub plaintext_allow: HostList,
    /// The same list as written, for the API's own check.
    pub plaintext_allow_raw: Vec<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub network: Arc<NetworkPolicy>,
    /// Archives under `<data dir>/archive/`, keys from `MAILFERRY_ARCHIVE_KEYS`.
    pub archives: Arc<mailferry_engine::Archives>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
    }
}

impl Settings {
    /// Read the environment. `with_key` creates the data dir and the secret key when
    /// missing (commands that never open secrets, like `db migrate`, skip it).
    pub fn from_env() -> anyhow::Result<Self> {
        let data_dir = PathBuf::from(var("MAILFERRY_DATA_DIR").unwrap_or_else(|| "mailferry-data".into()));
        let database_url =
            var("DATABASE_URL").unwrap_or_else(|| format!("sqlite://{}", data_dir.join("state.db").display()));
        let sealer = match var("MAILFERRY_SECRET_KEY") {
            Some(hex) => Sealer::from_hex(&hex).context("MAILFERRY_SECRET_KEY")?,
            None => key_file(&data_dir.join("secret.key"))?,
        };
        let worker_concurrency = number("MAILFERRY_WORKER_CONCURRENCY", 4usize)?;
        if worker_concurrency == 0 {
            bail!("MAILFERRY_WORKER_CONCURRENCY must be at least 1");
        }
        let per_host_limit = number("MAILFERRY_PER_HOST_LIMIT", 8u32)?;
        if per_host_limit == 0 {
            bail!("MAILFERRY_PER_HOST_LIMIT must be at least 1");
        }
        let lease = Duration::from_secs(number("MAILFERRY_LEASE_SECS", 30u64)?.max(3));
        let plaintext_allow_raw: Vec<String> = match var("MAILFERRY_PLAINTEXT_ALLOW") {
            Some(list) => list.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None => vec!["127.0.0.0/8".into(), "::1".into(), "localhost".into()],
        };
        let plaintext_allow =
            HostList::parse(plaintext_allow_raw.iter().map(String::as_str)).context("MAILFERRY_PLAINTEXT_ALLOW")?;
        let ca_pem = match var("MAILFERRY_CA_FILE") {
            Some(f) => Some(std::fs::read(&f).with_context(|| format!("MAILFERRY_CA_FILE: cannot read {f}"))?),
            None => None,
        };
        let archives_root = data_dir.join("archive");
        Ok(Self {
            data_dir,
            database_url,
            sealer,
            worker_concurrency,
            per_host_limit,
            lease,
            plaintext_allow,
            plaintext_allow_raw,
            ca_pem,
            network: network_policy_from_env()?,
            archives: Arc::new(mailferry_engine::Archives::new(archives_root, crate::archive_cmd::archive_keys()?)),
        })
    }

    /// Open the configured backend: the one place that names concrete stores.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = &self.database_url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = PgStore::connect(url).await.context("cannot open the PostgreSQL database (DATABASE_URL)")?;
            Ok(Arc::new(store))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let store = SqliteStore::open(Path::new(path))
                .await
                .with_context(|| format!("cannot open the SQLite database {path}"))?;
            Ok(Arc::new(store))
        } else {
            bail!("DATABASE_URL must start with postgres:// or sqlite://")
        }
    }
}

/// The network policy for mail endpoints (also used by `mailferry migrate`).
pub fn network_policy_from_env() -> anyhow::Result<Arc<NetworkPolicy>> {
    let allow = var("MAILFERRY_NETWORK_ALLOW").unwrap_or_default();
    let deny = var("MAILFERRY_NETWORK_DENY");
    let policy = NetworkPolicy::parse(
        allow.split(',').map(str::trim).filter(|s| !s.is_empty()),
        deny.as_deref().map(|d| d.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()),
    )
    .context("MAILFERRY_NETWORK_ALLOW / MAILFERRY_NETWORK_DENY")?;
    Ok(Arc::new(policy))
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
