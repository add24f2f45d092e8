//! What every handler shares: the store, the sealer for secrets at rest, the archives, the
//! failed-authentication limiter,
//! and the API's configuration (plaintext allow-list, network policy, body limits, page
//! sizes, SSE pacing, trusted proxies, authentication limits, metrics caching and access,
//! archive run limits). Starts the sweeper of expired archive exports.

use std::sync::Arc;
use std::time::Duration;

use mailferry_archive::Archives;
use mailferry_model::{de, HostList, NetworkPolicy, Sealer};
use mailferry_store::Store;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Seals mailbox passwords before they are stored (DESIGN.md §2.5).
    pub sealer: Sealer,
    pub config: Arc<ApiConfig>,
    /// The compliance archives, each opened once per process (shared with the in-process
    /// workers: the search index has one writer).
    pub archives: Arc<Archives>,
    /// Cancelled at shutdown: open SSE streams end so a graceful shutdown is not held up
    /// by clients watching jobs.
    pub shutdown: CancellationToken,
    /// Failed authentications per client address (see [`crate::ratelimit`]).
    pub auth_limiter: Arc<crate::ratelimit::AuthLimiter>,
    /// Proxies whose `X-Forwarded-For` is believed (parsed `config.trusted_proxies`).
    pub trusted_proxies: Arc<HostList>,
    pub(crate) metrics_cache: Arc<crate::recorder::ClusterCache>,
    /// The `host` label values of the cluster figures (`config.metrics_max_hosts`).
    pub(crate) host_labels: Arc<mailferry_model::HostLabels>,
    /// Open SSE streams per token and in total (`config.sse_max_per_token`, `sse_max_total`).
    pub(crate) streams: Arc<crate::sse::StreamLimits>,
    /// The one poller behind every SSE stream of this process.
    pub(crate) watcher: Arc<crate::sse::JobWatcher>,
    /// How `?preflight=true` checks mailboxes (see [`AppState::with_preflight`]).
    pub preflight: Arc<PreflightSettings>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer, config: ApiConfig, archives: Arc<Archives>) -> Self {
        crate::recorder::install();
        // Histogram samples wait for upkeep: fold them in even when nobody scrapes.
        if tokio::runtime::Handle::try_current().is_ok() {
            crate::recorder::spawn_upkeep();
        }
        let auth_limiter = crate::ratelimit::AuthLimiter::new(
            config.auth_failure_limit,
            Duration::from_secs(config.auth_failure_window_secs.max(1)),
            config.auth_failure_max_clients,
        );
        // Invalid entries never match (`ApiConfig::invalid_trusted_proxies` names them).
        let valid = config.trusted_proxies.iter().map(String::as_str).filter(|e| is_ip_or_cidr(e));
        let trusted_proxies = HostList::parse(valid).unwrap_or_default();
        if tokio::runtime::Handle::try_current().is_ok() {
            crate::exports::spawn_export_sweeper(&archives, config.export_ttl());
        }
        let host_labels = Arc::new(mailferry_model::HostLabels::new(config.metrics_max_hosts));
        let streams = Arc::new(crate::sse::StreamLimits::new(config.sse_max_per_token, config.sse_max_total));
        let watcher = Arc::new(crate::sse::JobWatcher::new(config.sse_poll()));
        Self {
            store,
            sealer,
            config: Arc::new(config),
            archives,
            shutdown: CancellationToken::new(),
            auth_limiter: Arc::new(auth_limiter),
            trusted_proxies: Arc::new(trusted_proxies),
            metrics_cache: Arc::default(),
            host_labels,
            streams,
            watcher,
            preflight: Arc::default(),
        }
    }

    /// Preflights with the workers' protocol options, caps and CA roots.
    pub fn with_preflight(mut self, settings: PreflightSettings) -> Self {
        self.preflight = Arc::new(settings);
        self
    }

    /// End long-lived responses (SSE) when `token` is cancelled; pass the token that
    /// triggers `axum::serve(..).with_graceful_shutdown(..)`.
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("sealer", &self.sealer).field("config", &self.config).finish_non_exhaustive()
    }
}

/// API settings: the server config's `[api]` section (every field has a default), plus
/// what the binary fills in from other sections (`#[serde(skip)]`: `security.plaintext_allow`,
/// `[network]`, `[archive]` run limits, the receipt key). Each `[api]` key is declared here
/// only; `mailferry.example.toml` documents them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Hosts that may be reached with `security: "none"`: host names, IP addresses or CIDR
    /// blocks (`10.0.0.0/8`, `fd00::/8`). Names are compared literally, never resolved.
    /// (`security.plaintext_allow` in the server config.)
    #[serde(skip)]
    pub plaintext_allow: Vec<String>,
    /// Where jobs created over the API (and their OAuth2 token endpoints) may connect,
    /// checked at creation and again by the worker at every connect (the authoritative
    /// check: DNS may change in between). Default: the built-in list for jobs created over
    /// the API, nothing allowed (`network.allow` / `network.deny` in the server config).
    #[serde(skip)]
    pub network: Arc<NetworkPolicy>,
    /// Limit for JSON request bodies.
    #[serde(deserialize_with = "de::positive")]
    pub max_body_bytes: usize,
    /// Limit for batch uploads (CSV or JSON).
    #[serde(deserialize_with = "de::positive")]
    pub max_batch_bytes: usize,
    /// Page size when a list request gives no `limit`.
    #[serde(deserialize_with = "de::positive")]
    pub default_per_page: u32,
    /// Largest page a client may ask for.
    #[serde(deserialize_with = "de::positive")]
    pub max_per_page: u32,
    /// How often the process's SSE poller reads the watched jobs from the store.
    #[serde(deserialize_with = "de::positive")]
    pub sse_poll_ms: u64,
    /// Interval of SSE keep-alive comments.
    #[serde(deserialize_with = "de::positive")]
    pub sse_keep_alive_secs: u64,
    /// SSE streams one token may have open at once; more are answered 429.
    #[serde(deserialize_with = "de::positive")]
    pub sse_max_per_token: usize,
    /// SSE streams this process serves at once, all tokens together; more are answered 429.
    #[serde(deserialize_with = "de::positive")]
    pub sse_max_total: usize,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// client. Empty (the default): the header is ignored and the socket peer is the client.
    #[serde(deserialize_with = "de::list")]
    pub trusted_proxies: Vec<String>,
    /// Failed authentications (invalid bearer tokens) a client address may make within
    /// `auth_failure_window_secs` before it is answered 429; 0 turns the limit off.
    #[serde(deserialize_with = "de::non_negative")]
    pub auth_failure_limit: u32,
    #[serde(deserialize_with = "de::positive")]
    pub auth_failure_window_secs: u64,
    /// Client addresses the limiter remembers at most (bounded memory).
    #[serde(deserialize_with = "de::positive")]
    pub auth_failure_max_clients: usize,
    /// How long `/metrics` reuses the figures it read from the database; 0 = every scrape.
    #[serde(deserialize_with = "de::non_negative")]
    pub metrics_cache_ms: u64,
    /// `/metrics` (API and `worker.metrics_listen`) needs a bearer token (of any scope)
    /// when set; otherwise it is public.
    pub metrics_require_token: bool,
    /// Distinct host names that get their own `host` label value in the metrics; hosts
    /// seen after these are labelled `other` (hosts come from API callers' jobs: the label
    /// set must not grow with them).
    #[serde(deserialize_with = "de::positive")]
    pub metrics_max_hosts: usize,
    /// Verify and export runs one archive may have at once, across the API processes
    /// sharing it (`[archive] max_concurrent_runs`); more are answered 429.
    #[serde(skip)]
    pub archive_max_concurrent_runs: usize,
    /// Seconds an export file is kept after it was written (`[archive] export_ttl_secs`);
    /// then it is deleted and its download answers 410.
    #[serde(skip)]
    pub archive_export_ttl_secs: u64,
    /// base64 Ed25519 key that verifies this installation's receipts (`None`: receipts off).
    #[serde(skip)]
    pub receipt_public_key: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            plaintext_allow: vec!["127.0.0.0/8".into(), "::1".into(), "localhost".into()],
            network: Arc::new(NetworkPolicy::api()),
            max_body_bytes: 1024 * 1024,
            max_batch_bytes: 10 * 1024 * 1024,
            default_per_page: 50,
            max_per_page: 500,
            sse_poll_ms: 300,
            sse_keep_alive_secs: 15,
            sse_max_per_token: 8,
            sse_max_total: 256,
            trusted_proxies: Vec::new(),
            auth_failure_limit: 10,
            auth_failure_window_secs: 60,
            auth_failure_max_clients: 10_000,
            metrics_cache_ms: 1000,
            metrics_require_token: false,
            metrics_max_hosts: 100,
            archive_max_concurrent_runs: 2,
            archive_export_ttl_secs: 24 * 3600,
            receipt_public_key: None,
        }
    }
}

impl ApiConfig {
    /// Entries of `plaintext_allow` that are not a host name, an IP address or a CIDR block.
    pub fn invalid_plaintext_entries(&self) -> Vec<String> {
        self.plaintext_allow.iter().filter(|e| HostList::parse([e.as_str()]).is_err()).cloned().collect()
    }

    /// Entries of `trusted_proxies` that are not an IP address or a CIDR block.
    pub fn invalid_trusted_proxies(&self) -> Vec<String> {
        self.trusted_proxies.iter().filter(|e| !is_ip_or_cidr(e)).cloned().collect()
    }

    /// Whether `host` may be reached without TLS (invalid entries never match).
    pub fn plaintext_allowed(&self, host: &str) -> bool {
        self.plaintext_allow.iter().filter_map(|e| HostList::parse([e.as_str()]).ok()).any(|l| l.contains(host))
    }

    pub(crate) fn sse_poll(&self) -> Duration {
        Duration::from_millis(self.sse_poll_ms.max(50))
    }

    /// How long an export file is kept (at least a second).
    pub(crate) fn export_ttl(&self) -> Duration {
        Duration::from_secs(self.archive_export_ttl_secs.max(1))
    }

    pub(crate) fn sse_keep_alive(&self) -> Duration {
        Duration::from_secs(self.sse_keep_alive_secs.max(1))
    }

    /// A page size from the client's `limit`, clamped to `1..=max_per_page`.
    pub(crate) fn page_size(&self, limit: Option<u32>) -> u32 {
        limit.unwrap_or(self.default_per_page).clamp(1, self.max_per_page.max(1))
    }
}

/// `192.0.2.1`, `10.0.0.0/8`, `fd00::/8`: what a proxy list may hold (no names: the
/// socket peer is an address, never resolved back to a name).
fn is_ip_or_cidr(entry: &str) -> bool {
    let ip = entry.split('/').next().unwrap_or("").trim().trim_matches(['[', ']']);
    ip.parse::<std::net::IpAddr>().is_ok() && HostList::parse([entry]).is_ok()
}

/// How this process runs preflights: the workers' protocol options and caps, and the CA
/// file's roots (`mailferry serve` sets them; the defaults serve tests and `--no-workers`).
#[derive(Debug, Clone)]
pub struct PreflightSettings {
    pub run: mailferry_engine::preflight::Preflight,
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl Default for PreflightSettings {
    fn default() -> Self {
        Self {
            run: mailferry_engine::preflight::Preflight { engine: mailferry_engine::EngineConfig::default(), per_host: 4, workers: 4, throughput: mailferry_engine::preflight::Throughput::default() },
            extra_roots_pem: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allow_list_is_loopback_only() {
        let c = ApiConfig::default();
        for ok in ["127.0.0.1", "127.5.6.7", "::1", "[::1]", "localhost", "LOCALHOST.", "::ffff:127.0.0.1"] {
            assert!(c.plaintext_allowed(ok), "{ok}");
        }
        for no in ["10.0.0.1", "mail.example.com", "127.0.0.1.evil.example", "localhost.evil", "::2", ""] {
            assert!(!c.plaintext_allowed(no), "{no}");
        }
        assert!(c.invalid_plaintext_entries().is_empty());
    }

    #[test]
    fn cidrs_names_and_bad_entries() {
        let c = ApiConfig {
            plaintext_allow: vec!["10.1.0.0/16".into(), "fd00::/8".into(), "pop.lan".into(), "1.2.3.4/40".into(), "a b".into()],
            ..ApiConfig::default()
        };
        assert!(c.plaintext_allowed("10.1.200.3"));
        assert!(!c.plaintext_allowed("10.2.0.1"));
        assert!(c.plaintext_allowed("fd12::1"));
        assert!(c.plaintext_allowed("POP.lan"));
        assert!(!c.plaintext_allowed("127.0.0.1"));
        assert_eq!(c.invalid_plaintext_entries(), vec!["1.2.3.4/40".to_owned(), "a b".to_owned()]);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let c = ApiConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into(), "proxy.lan".into(), "10.0.0.0/40".into()],
            ..ApiConfig::default()
        };
        assert_eq!(c.invalid_trusted_proxies(), vec!["proxy.lan".to_owned(), "10.0.0.0/40".to_owned()]);
        assert!(ApiConfig::default().trusted_proxies.is_empty(), "no proxy is trusted by default");
    }
}
