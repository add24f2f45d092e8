//! Layered configuration: built-in defaults → `mailferry.toml` → `MAILFERRY_SECTION__KEY`
//! environment variables (figment), then command-line flags. Every key, its default and its
//! meaning is in `mailferry.example.toml` (printed by `mailferry default-config`), which is
//! also the list of known keys: an unknown `MAILFERRY_` variable or an unknown key in the
//! file is an error, as is any invalid value, each reported in one sentence naming the key
//! and where the value came from.

mod de;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Metadata, Source};
use mailferry_model::{HostList, Sealer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The commented example file: the documentation of every key and its default.
pub const EXAMPLE: &str = include_str!("../mailferry.example.toml");

/// Read when present and no `--config` / `MAILFERRY_CONFIG` names another file.
pub const DEFAULT_FILE: &str = "mailferry.toml";

const PREFIX: &str = "MAILFERRY_";

/// `MAILFERRY_` variables that are not configuration keys, so the unknown-variable check
/// leaves them alone: the config file path itself, and variables only tests and benchmarks
/// read (they are inherited by the binaries those tests start).
pub const RESERVED_VARS: &[&str] = &[
    "MAILFERRY_CONFIG",
    "MAILFERRY_TEST_DATABASE_URL",
    "MAILFERRY_API_TEST_BACKEND",
    "MAILFERRY_BLESS",
    "MAILFERRY_BENCH_MESSAGES",
    "MAILFERRY_BENCH_MAILBOXES",
];

/// Standard variables read besides the `MAILFERRY_` ones, and the key each sets.
/// (The `MAILFERRY_` spelling wins when both are set.)
pub const STANDARD_VARS: &[(&str, &str)] = &[("DATABASE_URL", "database.url")];

/// Old flat names whose new key the suffix rule in [`suggest_var`] cannot guess.
const RENAMED: &[(&str, &str)] = &[("log", "log.filter")];

const REDACTED: &str = "<redacted>";

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
    pub api: ApiSection,
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
            api: ApiSection::default(),
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

/// A database URL; its password never appears in Debug or in `config check`.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `postgres://user:***@host/db`.
    pub fn redacted(&self) -> String {
        crate::service::redact_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The value is never echoed back: it may hold a password.
        let url = String::deserialize(d)?;
        let url = url.trim();
        if ["postgres://", "postgresql://", "sqlite://"].iter().any(|p| url.starts_with(p)) {
            Ok(Self(url.to_owned()))
        } else {
            Err(serde::de::Error::custom("expected a postgres://, postgresql:// or sqlite:// URL"))
        }
    }
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
pub struct ApiSection {
    #[serde(deserialize_with = "de::positive")]
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "de::positive")]
    pub max_batch_bytes: usize,
    #[serde(deserialize_with = "de::positive")]
    pub default_per_page: u32,
    #[serde(deserialize_with = "de::positive")]
    pub max_per_page: u32,
    #[serde(deserialize_with = "de::positive")]
    pub sse_poll_ms: u64,
    #[serde(deserialize_with = "de::positive")]
    pub sse_keep_alive_secs: u64,
    /// SSE streams one token may have open at once; more are answered 429.
    #[serde(deserialize_with = "de::positive")]
    pub sse_max_per_token: usize,
    /// SSE streams one API process serves at once; more are answered 429.
    #[serde(deserialize_with = "de::positive")]
    pub sse_max_total: usize,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
    #[serde(deserialize_with = "de::list")]
    pub trusted_proxies: Vec<String>,
    /// Failed authentications per client address and window before 429; 0 = no limit.
    #[serde(deserialize_with = "de::non_negative")]
    pub auth_failure_limit: u32,
    #[serde(deserialize_with = "de::positive")]
    pub auth_failure_window_secs: u64,
    #[serde(deserialize_with = "de::positive")]
    pub auth_failure_max_clients: usize,
    /// How long `/metrics` reuses the figures it read from the database; 0 = every scrape.
    #[serde(deserialize_with = "de::non_negative")]
    pub metrics_cache_ms: u64,
    /// `/metrics` (API and `worker.metrics_listen`) needs a bearer token of any scope.
    pub metrics_require_token: bool,
    /// Distinct hosts with their own `host` label value; later ones are `other`.
    #[serde(deserialize_with = "de::positive")]
    pub metrics_max_hosts: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        let a = mailferry_api::ApiConfig::default();
        Self {
            max_body_bytes: a.max_body_bytes,
            max_batch_bytes: a.max_batch_bytes,
            default_per_page: a.default_per_page,
            max_per_page: a.max_per_page,
            sse_poll_ms: a.sse_poll_ms,
            sse_keep_alive_secs: a.sse_keep_alive_secs,
            sse_max_per_token: a.sse_max_per_token,
            sse_max_total: a.sse_max_total,
            trusted_proxies: a.trusted_proxies,
            auth_failure_limit: a.auth_failure_limit,
            auth_failure_window_secs: a.auth_failure_window_secs,
            auth_failure_max_clients: a.auth_failure_max_clients,
            metrics_cache_ms: a.metrics_cache_ms,
            metrics_require_token: a.metrics_require_token,
            metrics_max_hosts: a.metrics_max_hosts,
        }
    }
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
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveS3 {
    pub bucket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub allow_http: bool,
    pub path_style: bool,
    /// governance | compliance: set Object Lock retention and legal holds per object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<mailferry_archive::LockMode>,
}

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
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.as_str().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("state.db").display()),
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// A configuration problem: exit status 2. One sentence per problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    fn one(msg: impl Into<String>) -> Self {
        Self(vec![msg.into()])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\nerror: ")?;
            }
            write!(f, "invalid config: {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The loaded configuration and where each value came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl Loaded {
    /// "from MAILFERRY_X", "from FILE" or "built-in default": where `key` was set.
    pub fn origin(&self, key: &str) -> String {
        origin(self.figment.find_metadata(key), &key.split('.').collect::<Vec<_>>())
    }

    /// A [`ConfigError`] about `key`, naming where its value came from.
    pub fn error(&self, key: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError::one(format!("{key}: {problem} ({})", self.origin(key)))
    }
}

/// Load the configuration: `path` from `--config` / `MAILFERRY_CONFIG`, else
/// `./mailferry.toml` when it exists.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    check_env(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))?;
    let file = match path {
        Some(p) if !p.is_file() => {
            return Err(ConfigError::one(format!("the config file {} does not exist or is not a file", p.display())))
        }
        Some(p) => Some(p.to_owned()),
        None => Path::new(DEFAULT_FILE).is_file().then(|| PathBuf::from(DEFAULT_FILE)),
    };
    let figment = figment(file.as_deref());
    let config: Config = figment.extract().map_err(|e| ConfigError(e.into_iter().map(|e| describe(&e)).collect()))?;
    let loaded = Loaded { config, file, figment };
    validate(&loaded)?;
    Ok(loaded)
}

fn figment(file: Option<&Path>) -> Figment {
    let mut figment = Figment::new();
    if let Some(f) = file {
        figment = figment.merge(Toml::file_exact(f));
    }
    for (var, key) in STANDARD_VARS {
        let key = *key;
        figment = figment.merge(Env::raw().only(&[var]).filter(|k| set(k.as_str())).map(move |_| key.into()));
    }
    figment.merge(
        Env::prefixed(PREFIX)
            .filter(|k| {
                let var = format!("{PREFIX}{}", k.as_str().to_ascii_uppercase());
                !RESERVED_VARS.contains(&var.as_str()) && set(&var)
            })
            .split("__"),
    )
}

/// Empty variables count as unset (compose files often pass `${X:-}`).
fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// Every known key, as `section.key`, from the example file: its `key = value` lines,
/// commented out or not, under the `[section]` headers.
pub fn known_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.') {
                section = format!("{name}.");
            }
        } else if let Some((key, _)) = line.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                keys.insert(format!("{section}{key}"));
            }
        }
    }
    keys
}

/// The variable that sets `key`: `worker.concurrency` → `MAILFERRY_WORKER__CONCURRENCY`.
pub fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Unknown `MAILFERRY_` variables are errors, each with the likely intended name.
fn check_env(vars: impl Iterator<Item = (String, std::ffi::OsString)>) -> Result<(), ConfigError> {
    let known = known_keys();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let upper = name.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(PREFIX) else { continue };
        if value.is_empty() || RESERVED_VARS.contains(&upper.as_str()) {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if known.contains(&key) {
            continue;
        }
        let hint = match suggest_var(&key, &known) {
            Some(k) => format!("; did you mean {} (the key {k})?", var_name(&k)),
            None => format!("; see `mailferry default-config` for the keys ({} sets {})", var_name("section.key"), "section.key"),
        };
        problems.push(format!("unknown environment variable {name}{hint}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

/// The key an unknown variable most likely meant: a renamed one, the same words with the
/// section separator missing (`WORKER_CONCURRENCY`), a key the old flat name ends with
/// (`LEASE_SECS` → `worker.lease_secs`), or a near spelling.
fn suggest_var(key: &str, known: &BTreeSet<String>) -> Option<String> {
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == key) {
        return Some(new.to_string());
    }
    let flat = key.replace('.', "_");
    let flat_of = |k: &String| k.replace('.', "_");
    if let Some(k) = known.iter().find(|k| flat_of(k) == flat) {
        return Some(k.clone());
    }
    let mut ends: Vec<&String> = known.iter().filter(|k| flat_of(k).ends_with(&format!("_{flat}"))).collect();
    if ends.len() == 1 {
        return ends.pop().cloned();
    }
    closest(key, known.iter().map(String::as_str)).map(str::to_owned)
}

/// The candidate within edit distance 2, if there is one.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates.map(|c| (edit_distance(word, c), c)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where a value came from, for error messages.
fn origin(md: Option<&Metadata>, path: &[&str]) -> String {
    let Some(md) = md else { return "built-in default".into() };
    if md.name.contains(PREFIX) {
        return format!("from {}", var_name(&path.join(".")));
    }
    if md.name.contains("environment") {
        let key = path.join(".");
        if let Some((var, _)) = STANDARD_VARS.iter().find(|(_, k)| *k == key) {
            return format!("from {var}");
        }
        return "from the environment".into();
    }
    match &md.source {
        Some(Source::File(p)) => format!("from {}", p.display()),
        Some(other) => format!("from {other}"),
        None => format!("from {}", md.name),
    }
}

/// Keys whose values must never be echoed, even when invalid.
fn is_secret(key: &str) -> bool {
    matches!(key, "security.secret_key" | "archive.keys" | "database.url")
}

/// One sentence for one figment error.
fn describe(e: &figment::Error) -> String {
    use figment::error::{Actual, Kind};
    let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
    let key = path.join(".");
    let from = origin(e.metadata.as_ref(), &path);
    let shown = |a: &Actual| -> String {
        if is_secret(&key) {
            return format!("{REDACTED:?}");
        }
        match a {
            Actual::Str(s) => format!("{s:?}"),
            Actual::Unsigned(n) => n.to_string(),
            Actual::Signed(n) => n.to_string(),
            Actual::Float(n) => n.to_string(),
            Actual::Bool(b) => b.to_string(),
            other => format!("a {other}"),
        }
    };
    match &e.kind {
        Kind::InvalidType(a, exp) | Kind::InvalidValue(a, exp) => {
            format!("{key} = {}: expected {exp} ({from})", shown(a))
        }
        Kind::UnknownVariant(v, exp) => {
            let v = if is_secret(&key) { REDACTED.to_owned() } else { v.clone() };
            format!("{key} = {v:?}: expected one of {} ({from})", exp.join(", "))
        }
        Kind::UnknownField(field, expected) => {
            // The path ends with the unknown field itself.
            let parent = path.get(..path.len().saturating_sub(1)).unwrap_or_default().join(".");
            let full = if key.is_empty() { field.clone() } else { key.clone() };
            let within = |k: &str| if parent.is_empty() { k.to_owned() } else { format!("{parent}.{k}") };
            let hint = match closest(field, expected.iter().copied()) {
                Some(k) => format!("; did you mean {}?", within(k)),
                None => format!("; the keys here are {}", expected.iter().map(|k| within(k)).collect::<Vec<_>>().join(", ")),
            };
            format!("unknown key {full} ({from}){hint}")
        }
        Kind::MissingField(field) => {
            let full = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
            format!("{full} is required when {} is set ({from})", if key.is_empty() { "anything" } else { key.as_str() })
        }
        // TOML syntax errors come with a multi-line excerpt: keep the sentences.
        other => {
            let text = other.to_string();
            let text: Vec<&str> = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with('|') && !l.starts_with('^'))
                .filter(|l| !l.chars().next().is_some_and(|c| c.is_ascii_digit()) || !l.contains(" | "))
                .collect();
            let text = text.join(": ");
            if key.is_empty() {
                format!("{text} ({from})")
            } else {
                format!("{key}: {text} ({from})")
            }
        }
    }
}

/// Checks that need more than one key, or a parser from another crate.
fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
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
    let proxies = mailferry_api::ApiConfig { trusted_proxies: c.api.trusted_proxies.clone(), ..Default::default() };
    let bad = proxies.invalid_trusted_proxies();
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
    let postgres = c.database_url().starts_with("postgres");
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

#[cfg(test)]
mod tests;
