use std::collections::BTreeSet;

use figment::providers::{Format, Toml};
use mailferry_model::DatabaseUrl;
use secrecy::SecretString;

use super::load::{check_env, describe, edit_distance, known_keys, suggest_var};
use super::validate::validate;
use super::*;

fn from_toml(text: &str) -> Result<Config, String> {
    Figment::new().merge(Toml::string(text)).extract().map_err(|e| e.to_string())
}

/// Leaf keys of a serialized config, as `section.key`.
fn leaves(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                leaves(v, &format!("{prefix}{k}."), out);
            }
        }
        _ => {
            out.insert(prefix.trim_end_matches('.').to_owned());
        }
    }
}

/// Every optional value set, written without `..Default::default()` so a new field cannot
/// be added without deciding how it is documented.
fn fully_populated() -> Config {
    Config {
        data_dir: "d".into(),
        server: ServerConfig {
            listen: "0.0.0.0:1".parse().unwrap(),
            tls: Some(TlsConfig { cert_file: "c".into(), key_file: "k".into() }),
        },
        database: DatabaseConfig { url: Some(DatabaseUrl::new("postgres://u:p@h/d")) },
        worker: WorkerSection {
            concurrency: 1,
            per_host_limit: 1,
            lease_secs: 3,
            poll_interval_ms: 1,
            metrics_listen: Some("127.0.0.1:2".parse().unwrap()),
            retry: RetryConfig { attempts: 1, base_delay_ms: 1, max_delay_ms: 1 },
            pipeline: PipelineConfig {
                spool_threshold_bytes: 1,
                memory_budget_bytes: 1,
                retr_window: 1,
                channel_capacity: 1,
                append_batch_messages: 1,
                append_batch_bytes: 1,
                append_sessions: 1,
                max_message_bytes: 1,
            },
            timeouts: TimeoutsConfig { connect_secs: 1, pop3_io_secs: 1, imap_io_secs: 1 },
        },
        security: SecurityConfig {
            secret_key: Some(SecretString::from("k".to_owned())),
            secret_key_file: Some("f".into()),
            receipt_key_file: Some("r".into()),
            plaintext_allow: vec![],
            ca_file: Some("ca".into()),
        },
        network: NetworkConfig { allow: vec![], deny: vec![] },
        api: mailferry_api::ApiConfig {
            // Filled in from other sections (not `[api]` keys).
            plaintext_allow: vec![],
            network: Default::default(),
            archive_max_concurrent_runs: 1,
            archive_export_ttl_secs: 1,
            receipt_public_key: None,
            max_body_bytes: 1,
            max_batch_bytes: 1,
            default_per_page: 1,
            max_per_page: 1,
            sse_poll_ms: 1,
            sse_keep_alive_secs: 1,
            sse_max_per_token: 1,
            sse_max_total: 1,
            trusted_proxies: vec![],
            auth_failure_limit: 0,
            auth_failure_window_secs: 1,
            auth_failure_max_clients: 1,
            metrics_cache_ms: 0,
            metrics_require_token: true,
            metrics_max_hosts: 1,
        },
        archive: ArchiveSection {
            root: Some("r".into()),
            keys: vec![],
            keys_file: Some("kf".into()),
            index: ArchiveIndex::Database,
            max_concurrent_runs: 1,
            export_ttl_secs: 1,
            idle_close_secs: 1,
            max_open: 1,
            purge_interval: std::time::Duration::from_secs(90),
            s3: Some(ArchiveS3 {
                bucket: "b".into(),
                endpoint: Some("e".into()),
                region: Some("r".into()),
                prefix: Some("p".into()),
                allow_http: true,
                path_style: true,
                object_lock: Some(mailferry_archive::LockMode::Compliance),
            }),
        },
        log: LogConfig { format: LogFormat::Json, filter: Some("info".into()) },
    }
}

#[test]
fn the_example_file_parses_back_into_the_defaults() {
    let parsed = from_toml(EXAMPLE).expect("the example parses");
    assert_eq!(parsed.to_redacted_toml(), Config::default().to_redacted_toml());
}

#[test]
fn every_documented_key_is_real_and_every_key_is_documented() {
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        // Placeholder values that are not valid as written.
        .replace("\"<64 hex digits>\"", "\"00\"");
    from_toml(&uncommented).unwrap_or_else(|e| panic!("every key in the example is a real key: {e}"));

    let mut serialized = BTreeSet::new();
    leaves(&toml::Value::try_from(fully_populated()).unwrap(), "", &mut serialized);
    assert_eq!(known_keys(), serialized, "mailferry.example.toml documents exactly the config's keys");
}

#[test]
fn secrets_serialize_redacted() {
    let text = fully_populated().to_redacted_toml();
    assert!(text.contains("secret_key = \"<redacted>\""), "{text}");
    assert!(!text.contains(":p@"), "{text}");
}

#[test]
fn unknown_variables_name_the_intended_key() {
    let known = known_keys();
    let cases = [
        ("worker_concurrency", Some("worker.concurrency")),
        ("lease_secs", Some("worker.lease_secs")),
        ("per_host_limit", Some("worker.per_host_limit")),
        ("secret_key", Some("security.secret_key")),
        ("ca_file", Some("security.ca_file")),
        ("network_deny", Some("network.deny")),
        ("archive_keys", Some("archive.keys")),
        ("log", Some("log.filter")),
        ("worker.concurency", Some("worker.concurrency")),
        ("something_else_entirely", None),
    ];
    for (key, want) in cases {
        assert_eq!(suggest_var(key, &known).as_deref(), want, "{key}");
    }
}

#[test]
fn check_env_reports_unknown_and_skips_reserved() {
    let vars = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), std::ffi::OsString::from(v))).collect::<Vec<_>>();
    assert!(check_env(vars(&[("MAILFERRY_WORKER__CONCURRENCY", "2"), ("MAILFERRY_TEST_DATABASE_URL", "x"), ("PATH", "/")]).into_iter()).is_ok());
    let err = check_env(vars(&[("MAILFERRY_WORKER_CONCURRENCY", "2")]).into_iter()).unwrap_err().to_string();
    assert!(err.contains("MAILFERRY_WORKER_CONCURRENCY") && err.contains("MAILFERRY_WORKER__CONCURRENCY"), "{err}");
    // Empty means unset.
    assert!(check_env(vars(&[("MAILFERRY_NOPE", "")]).into_iter()).is_ok());
}

#[test]
fn edit_distance_counts_edits() {
    assert_eq!(edit_distance("concurency", "concurrency"), 1);
    assert_eq!(edit_distance("abc", "abc"), 0);
    assert_eq!(edit_distance("", "ab"), 2);
}

/// Load `text` as the config file would be, validation included.
fn load_str(text: &str) -> Result<Loaded, ConfigError> {
    let figment = Figment::new().merge(Toml::string(text));
    let config: Config = figment.extract().map_err(|e| ConfigError(e.into_iter().map(|e| describe(&e)).collect()))?;
    let loaded = Loaded { config, file: None, figment };
    validate(&loaded)?;
    Ok(loaded)
}

/// As [`load_str`], with `data_dir` a fresh temporary directory: `Settings::from_config`
/// creates the receipt key there, not in the crate directory (where tests running at once
/// would race to create the same file).
fn load_in_temp_dir(text: &str) -> (tempfile::TempDir, Loaded) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("data_dir = {:?}\n{text}", dir.path().display().to_string());
    (dir, load_str(&text).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn api_guard_rails_and_worker_metrics_reach_the_runtime_settings() {
    let (_dir, loaded) = load_in_temp_dir(
        r#"
        [security]
        secret_key = "0000000000000000000000000000000000000000000000000000000000000000"
        [worker]
        metrics_listen = "127.0.0.1:9464"
        [api]
        trusted_proxies = ["10.0.0.0/8", "::1"]
        auth_failure_limit = 0
        auth_failure_window_secs = 7
        auth_failure_max_clients = 3
        metrics_cache_ms = 0
        "#,
    );
    let s = crate::settings::Settings::from_config(&loaded).unwrap();
    assert_eq!(s.worker_metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(s.api.trusted_proxies, vec!["10.0.0.0/8".to_owned(), "::1".to_owned()]);
    assert_eq!(
        (s.api.auth_failure_limit, s.api.auth_failure_window_secs, s.api.auth_failure_max_clients, s.api.metrics_cache_ms),
        (0, 7, 3, 0)
    );
    // Defaults: no worker listener, the ApiConfig defaults.
    let d = Config::default();
    let a = mailferry_api::ApiConfig::default();
    assert_eq!(d.worker.metrics_listen, None);
    assert_eq!(
        (&d.api.trusted_proxies, d.api.auth_failure_limit, d.api.auth_failure_window_secs, d.api.auth_failure_max_clients, d.api.metrics_cache_ms),
        (&a.trusted_proxies, 10, 60, 10_000, 1000)
    );
}

#[test]
fn archive_run_limits_and_metrics_access_reach_the_runtime_settings() {
    let (_dir, loaded) = load_in_temp_dir(
        r#"
        [security]
        secret_key = "0000000000000000000000000000000000000000000000000000000000000000"
        [api]
        metrics_require_token = true
        metrics_max_hosts = 7
        [archive]
        max_concurrent_runs = 3
        export_ttl_secs = 60
        idle_close_secs = 5
        max_open = 9
        "#,
    );
    let s = crate::settings::Settings::from_config(&loaded).unwrap();
    assert!(s.api.metrics_require_token);
    assert_eq!((s.api.metrics_max_hosts, s.api.archive_max_concurrent_runs, s.api.archive_export_ttl_secs), (7, 3, 60));
    assert!(format!("{:?}", s.archives).contains("idle: 5s, max_open: 9"), "{:?}", s.archives);
    // Defaults: public metrics, 100 host labels, 2 runs per archive, exports kept 24 h,
    // archives closed after 10 min idle, at most 64 unused ones open.
    let d = Config::default();
    assert_eq!((d.api.metrics_require_token, d.api.metrics_max_hosts), (false, 100));
    assert_eq!(
        (d.archive.max_concurrent_runs, d.archive.export_ttl_secs, d.archive.idle_close_secs, d.archive.max_open),
        (2, 86_400, 600, 64)
    );
    let e = load_str("[archive]\nmax_concurrent_runs = 0\n").map(drop).unwrap_err().to_string();
    assert!(e.starts_with("invalid config: archive.max_concurrent_runs = 0: expected a positive integer"), "{e}");
    let e = load_str("[archive]\nexport_ttl_secs = 0\n").map(drop).unwrap_err().to_string();
    assert!(e.starts_with("invalid config: archive.export_ttl_secs = 0: expected a positive integer"), "{e}");
}

#[test]
fn invalid_guard_rail_values_name_their_key() {
    let err = |text: &str| load_str(text).map(drop).unwrap_err().to_string();
    let e = err("[api]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.lan\"]\n");
    assert!(e.starts_with("invalid config: api.trusted_proxies: expected IP addresses or CIDR blocks, not \"proxy.lan\" ("), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // Comma-separated, as from the environment.
    let e = err("[api]\ntrusted_proxies = \"10.0.0.0/8, 10.0.0.0/40\"\n");
    assert!(e.contains("api.trusted_proxies") && e.contains("\"10.0.0.0/40\""), "{e}");
    let e = err("[api]\nauth_failure_window_secs = 0\n");
    assert!(e.starts_with("invalid config: api.auth_failure_window_secs = 0: expected a positive integer"), "{e}");
    let e = err("[api]\nauth_failure_max_clients = 0\n");
    assert!(e.starts_with("invalid config: api.auth_failure_max_clients = 0: expected a positive integer"), "{e}");
    let e = err("[api]\nauth_failure_limit = -1\n");
    assert!(e.starts_with("invalid config: api.auth_failure_limit = -1: expected a non-negative integer"), "{e}");
    let e = err("[worker]\nmetrics_listen = \"localhost\"\n");
    assert!(e.starts_with("invalid config: worker.metrics_listen = \"localhost\": expected an address and port"), "{e}");
}

#[test]
fn sse_stream_caps_reach_the_runtime_settings() {
    let (_dir, loaded) = load_in_temp_dir(
        r#"
        [security]
        secret_key = "0000000000000000000000000000000000000000000000000000000000000000"
        [api]
        sse_max_per_token = 2
        sse_max_total = 40
        "#,
    );
    let s = crate::settings::Settings::from_config(&loaded).unwrap();
    assert_eq!((s.api.sse_max_per_token, s.api.sse_max_total), (2, 40));
    // Defaults: 8 per token, 256 per process.
    let d = Config::default();
    assert_eq!((d.api.sse_max_per_token, d.api.sse_max_total), (8, 256));
    let e = load_str("[api]\nsse_max_total = 0\n").map(drop).unwrap_err().to_string();
    assert!(e.starts_with("invalid config: api.sse_max_total = 0: expected a positive integer"), "{e}");
}

#[test]
fn the_purge_interval_is_a_duration_with_a_unit() {
    // Default one hour; written back the way it reads.
    assert_eq!(Config::default().archive.purge_interval, std::time::Duration::from_secs(3600));
    assert!(Config::default().to_redacted_toml().contains("purge_interval = \"1h\""));
    let parsed = |text: &str| load_str(&format!("[archive]\npurge_interval = {text:?}\n")).map(|l| l.config.archive.purge_interval);
    assert_eq!(parsed("2s").unwrap(), std::time::Duration::from_secs(2));
    assert_eq!(parsed("1h30m").unwrap(), std::time::Duration::from_secs(5400));
    assert_eq!(parsed(" 1d ").unwrap(), std::time::Duration::from_secs(86_400));
    assert_eq!(parsed("250ms").unwrap(), std::time::Duration::from_millis(250));
    for bad in ["0s", "10", "h", "1 h", "1w", "", "99999999999999999999d"] {
        let e = parsed(bad).map(drop).unwrap_err().to_string();
        assert!(e.starts_with("invalid config: archive.purge_interval"), "{bad:?}: {e}");
        assert!(e.contains("a duration like"), "{bad:?}: {e}");
    }
    let e = load_str("[archive]\npurge_interval = 10\n").map(drop).unwrap_err().to_string();
    assert!(e.contains("archive.purge_interval") && e.contains("a duration like"), "{e}");
}
