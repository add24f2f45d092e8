//! The sections of `mailferry.toml` as serde structs, each with its built-in defaults
//! (taken from the crate that uses the setting, so a default is written once). `[api]` is
//! the API crate's own [`ApiConfig`](mailferry_api::ApiConfig).

use std::net::SocketAddr;
use std::path::PathBuf;

use mailferry_model::DatabaseUrl;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::de;

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// state.db, secret.key, spool/, archive/.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub worker: WorkerSection,
    pub security: SecurityConfig,
    pub network: NetworkConfig,
    pub api: mailferry_api::ApiConfig,
    pub archive: ArchiveSection,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("mailferry-data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            worker: WorkerSection::default(),
            security: SecurityConfig::default(),
            network: NetworkConfig::default(),
            api: mailferry_api::ApiConfig::default(),
            archive: ArchiveSection::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), tls: None }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    #[serde(deserialize_with = "de::positive")]
    pub concurrency: usize,
    #[serde(deserialize_with = "de::positive")]
    pub per_host_limit: u32,
    #[serde(deserialize_with = "de::positive")]
    pub lease_secs: u64,
    #[serde(deserialize_with = "de::positive")]
    pub poll_interval_ms: u64,
    /// `mailferry worker` serves `/metrics` (this process's figures) and `/healthz` here.
    #[serde(deserialize_with = "de::option_socket_addr", skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    pub retry: RetryConfig,
    pub pipeline: PipelineConfig,
    pub timeouts: TimeoutsConfig,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            concurrency: 4,
            per_host_limit: 8,
            lease_secs: 30,
            poll_interval_ms: 500,
            metrics_listen: None,
            retry: RetryConfig::default(),
            pipeline: PipelineConfig::default(),
            timeouts: TimeoutsConfig::default(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(deserialize_with = "de::positive")]
    pub attempts: u32,
    #[serde(deserialize_with = "de::non_negative")]
    pub base_delay_ms: u64,
    #[serde(deserialize_with = "de::non_negative")]
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let d = mailferry_engine::RetryPolicy::default();
        Self { attempts: d.attempts, base_delay_ms: millis(d.base_delay), max_delay_ms: millis(d.max_delay) }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(deserialize_with = "de::non_negative")]
    pub spool_threshold_bytes: usize,
    #[serde(deserialize_with = "de::positive")]
    pub memory_budget_bytes: usize,
    #[serde(deserialize_with = "de::positive")]
    pub retr_window: usize,
    #[serde(deserialize_with = "de::positive")]
    pub channel_capacity: usize,
    #[serde(deserialize_with = "de::positive")]
    pub append_batch_messages: usize,
    #[serde(deserialize_with = "de::positive")]
    pub append_batch_bytes: u64,
    /// APPEND sessions per job into its destination folder (at most `per_host_limit`).
    #[serde(deserialize_with = "de::positive")]
    pub append_sessions: usize,
    #[serde(deserialize_with = "de::positive")]
    pub max_message_bytes: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let e = mailferry_engine::EngineConfig::default();
        Self {
            spool_threshold_bytes: e.spool.memory_threshold,
            memory_budget_bytes: e.memory_budget,
            retr_window: e.retr_window,
            channel_capacity: e.channel_capacity,
            append_batch_messages: e.batch_messages,
            append_batch_bytes: e.batch_bytes,
            append_sessions: e.append_sessions,
            max_message_bytes: e.pop3.max_message_bytes,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(deserialize_with = "de::positive")]
    pub connect_secs: u64,
    #[serde(deserialize_with = "de::positive")]
    pub pop3_io_secs: u64,
    #[serde(deserialize_with = "de::positive")]
    pub imap_io_secs: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let e = mailferry_engine::EngineConfig::default();
        Self {
            connect_secs: e.pop3.connect_timeout.as_secs(),
            pop3_io_secs: e.pop3.io_timeout.as_secs(),
            imap_io_secs: e.imap.io_timeout.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::redact_option")]
    pub secret_key: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// The Ed25519 key that signs migration receipts (64 hex digits: its seed). Default:
    /// `<data_dir>/receipt.key`, generated on first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "de::list")]
    pub plaintext_allow: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            secret_key_file: None,
            receipt_key_file: None,
            plaintext_allow: mailferry_api::ApiConfig::default().plaintext_allow,
            ca_file: None,
        }
    }
}

/// `[network]`: where mail endpoints and OAuth2 token endpoints may resolve to. Both lists
/// are on top of built-in defaults (`mailferry_model::netpolicy`): for jobs created over the
/// API, loopback, private, CGNAT, unique-local, link-local, NAT64, "this network" and cloud
/// metadata addresses are refused unless `allow` names them; `deny` adds to that list.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(deserialize_with = "de::list")]
    pub allow: Vec<String>,
    #[serde(deserialize_with = "de::list")]
    pub deny: Vec<String>,
}
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    #[serde(deserialize_with = "de::secret_list", serialize_with = "de::redact_list")]
    pub keys: Vec<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// Where each archive's index lives.
    pub index: ArchiveIndex,
    /// Verify and export runs one archive may have at once (over the API).
    #[serde(deserialize_with = "de::positive")]
    pub max_concurrent_runs: usize,
    /// Seconds an export file is kept after it was written.
    #[serde(deserialize_with = "de::positive")]
    pub export_ttl_secs: u64,
    /// Seconds an archive nobody uses stays open in a process.
    #[serde(deserialize_with = "de::positive")]
    pub idle_close_secs: u64,
    /// Unused archives a process keeps open at most.
    #[serde(deserialize_with = "de::positive")]
    pub max_open: usize,
    /// How often each `serve` and `worker` process purges what retention has expired from
    /// every archive (one process at a time per archive), e.g. "1h".
    #[serde(deserialize_with = "de::duration", serialize_with = "de::serialize_duration")]
    pub purge_interval: std::time::Duration,
    /// Blobs in S3-compatible storage instead of under `root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<ArchiveS3>,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        let api = mailferry_api::ApiConfig::default();
        let open = mailferry_engine::OpenLimits::default();
        Self {
            root: None,
            keys: Vec::new(),
            keys_file: None,
            index: ArchiveIndex::default(),
            max_concurrent_runs: api.archive_max_concurrent_runs,
            export_ttl_secs: api.archive_export_ttl_secs,
            idle_close_secs: open.idle.as_secs(),
            max_open: open.max_open,
            purge_interval: std::time::Duration::from_secs(3600),
            s3: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveIndex {
    /// The service database when that is PostgreSQL (shared by every worker), else SQLite.
    #[default]
    Auto,
    /// SQLite beside each archive: one process only.
    Local,
    /// The service database (must be PostgreSQL): a schema per archive.
    Database,
}

/// S3-compatible blob storage for every archive (each under `<prefix>/<archive name>`).
/// Credentials come from the standard AWS_* environment, never from this file.
/// The archive crate's own type: each key is declared once, there.
pub type ArchiveS3 = mailferry_archive::S3Config;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

impl Config {
    /// Where the archives live.
    pub fn archive_root(&self) -> PathBuf {
        self.archive.root.clone().unwrap_or_else(|| self.data_dir.join("archive"))
    }

    /// `database.url`, else the SQLite ledger in the data directory.
    pub fn database_url(&self) -> DatabaseUrl {
        match &self.database.url {
            Some(url) => url.clone(),
            None => DatabaseUrl::new(format!("sqlite://{}", self.data_dir.join("state.db").display())),
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}
