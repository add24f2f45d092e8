//! The layered configuration through the real binary: defaults < file < environment,
//! unknown keys and variables and invalid values fail start-up with exit status 2 and one
//! sentence naming the key, `config check` redacts secrets, `default-config` round-trips.

use std::path::Path;
use std::process::{Command, Output};

const USAGE: i32 = 2;

/// The binary in an empty directory (no ./mailferry.toml) with none of the test process's
/// `MAILFERRY_` or `DATABASE_URL` variables, plus `env`.
fn mailferry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailferry"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().to_ascii_uppercase().starts_with("MAILFERRY_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).args(args).envs(env.iter().copied()).output().expect("run mailferry")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `config check` output, parsed.
fn effective(o: &Output) -> toml::Table {
    assert!(o.status.success(), "config check failed: {}", stderr(o));
    stdout(o).parse().unwrap_or_else(|e| panic!("config check prints TOML: {e}\n{}", stdout(o)))
}

fn int(t: &toml::Table, path: &str) -> i64 {
    let mut v = t.get(path.split('.').next().unwrap()).unwrap_or_else(|| panic!("{path}"));
    for part in path.split('.').skip(1) {
        v = v.get(part).unwrap_or_else(|| panic!("{path}"));
    }
    v.as_integer().unwrap_or_else(|| panic!("{path} is an integer"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn defaults_then_file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "layers.toml", "[worker]\nconcurrency = 6\nper_host_limit = 5\n[api]\nmax_per_page = 100\n");

    let defaults = effective(&mailferry(dir.path(), &["config", "check"], &[]));
    assert_eq!(int(&defaults, "worker.concurrency"), 4);
    assert_eq!(int(&defaults, "worker.per_host_limit"), 8);

    let env = [("MAILFERRY_WORKER__PER_HOST_LIMIT", "7"), ("MAILFERRY_WORKER__RETRY__ATTEMPTS", "9")];
    let layered = effective(&mailferry(dir.path(), &["config", "check", "--config", &file], &env));
    assert_eq!(int(&layered, "worker.concurrency"), 6, "the file overrides the default");
    assert_eq!(int(&layered, "worker.per_host_limit"), 7, "the environment overrides the file");
    assert_eq!(int(&layered, "worker.retry.attempts"), 9, "nested sections from the environment");
    assert_eq!(int(&layered, "api.max_per_page"), 100);
    assert_eq!(int(&layered, "worker.lease_secs"), 30, "untouched keys keep their default");

    // MAILFERRY_CONFIG names the file too; ./mailferry.toml is read when nothing is named.
    let via_env = effective(&mailferry(dir.path(), &["config", "check"], &[("MAILFERRY_CONFIG", &file)]));
    assert_eq!(int(&via_env, "worker.concurrency"), 6);
    write(dir.path(), "mailferry.toml", "[worker]\nconcurrency = 11\n");
    let implicit = effective(&mailferry(dir.path(), &["config", "check"], &[]));
    assert_eq!(int(&implicit, "worker.concurrency"), 11);
}

#[test]
fn a_named_file_that_is_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = mailferry(dir.path(), &["config", "check", "--config", "nowhere.toml"], &[]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere.toml"), "{}", stderr(&out));
}

#[test]
fn an_unknown_key_in_the_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "typo.toml", "[worker]\nconcurency = 3\n");
    // Start-up of a real command fails the same way as `config check`.
    for args in [&["config", "check", "--config", &file][..], &["worker", "--config", &file][..]] {
        let out = mailferry(dir.path(), args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {err}");
        assert!(err.contains("unknown key worker.concurency") && err.contains(&file), "{err}");
        assert!(err.contains("did you mean worker.concurrency?"), "{err}");
    }
}

#[test]
fn an_unknown_mailferry_variable_names_the_variable_and_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    for (var, right) in [
        ("MAILFERRY_WORKER_CONCURRENCY", "MAILFERRY_WORKER__CONCURRENCY"),
        ("MAILFERRY_SECRET_KEY", "MAILFERRY_SECURITY__SECRET_KEY"),
        ("MAILFERRY_LOG", "MAILFERRY_LOG__FILTER"),
    ] {
        let out = mailferry(dir.path(), &["worker"], &[(var, "3")]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(USAGE), "{var}: {err}");
        assert!(err.contains(&format!("unknown environment variable {var};")), "{err}");
        assert!(err.contains(&format!("did you mean {right}")), "{err}");
    }
    // Variables only tests read are not configuration and not errors.
    let out = mailferry(dir.path(), &["config", "check"], &[("MAILFERRY_TEST_DATABASE_URL", "postgres://x/y")]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_invalid_value_is_one_sentence_naming_the_key_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = mailferry(dir.path(), &["worker"], &[("MAILFERRY_WORKER__CONCURRENCY", "abc")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert_eq!(
        stderr(&out).trim(),
        "error: invalid config: worker.concurrency = \"abc\": expected a positive integer (from MAILFERRY_WORKER__CONCURRENCY)"
    );

    let file = write(dir.path(), "zero.toml", "[api]\nmax_per_page = 0\n");
    let out = mailferry(dir.path(), &["config", "check", "--config", &file], &[]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: invalid config: api.max_per_page = 0: expected a positive integer (from {file})")
    );

    let out = mailferry(dir.path(), &["config", "check"], &[("MAILFERRY_NETWORK__DENY", "10.0.0.0/99")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(stderr(&out).contains("network.deny") && stderr(&out).contains("(from MAILFERRY_NETWORK__DENY)"), "{}", stderr(&out));

    let out = mailferry(dir.path(), &["config", "check"], &[("MAILFERRY_LOG__FORMAT", "xml")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(stderr(&out).contains("log.format = \"xml\": expected one of auto, pretty, json"), "{}", stderr(&out));
}

#[test]
fn config_check_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret_key = "5e".repeat(32);
    let archive_key = "a7".repeat(32);
    let db_password = "pg-Pa55word-in-url";
    let file = write(dir.path(), "secrets.toml", &format!("[archive]\nkeys = [\"k1:{archive_key}\"]\n"));
    let db = format!("postgres://mf:{db_password}@db.example:5432/mf");
    let env = [("MAILFERRY_SECURITY__SECRET_KEY", secret_key.as_str()), ("DATABASE_URL", db.as_str())];
    let out = mailferry(dir.path(), &["config", "check", "--config", &file], &env);
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    for secret in [secret_key.as_str(), archive_key.as_str(), db_password] {
        assert!(!text.contains(secret), "a secret is printed");
    }
    let t = effective(&out);
    assert_eq!(t["security"]["secret_key"].as_str(), Some("<redacted>"));
    assert_eq!(t["archive"]["keys"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(t["archive"]["keys"][0].as_str(), Some("<redacted>"));
    // DATABASE_URL is the accepted standard alias; the URL stays readable without its password.
    assert_eq!(t["database"]["url"].as_str(), Some("postgres://mf:***@db.example:5432/mf"));

    // The MAILFERRY_ spelling wins over the alias.
    let env = [("DATABASE_URL", db.as_str()), ("MAILFERRY_DATABASE__URL", "sqlite:///tmp/x.db")];
    let t = effective(&mailferry(dir.path(), &["config", "check"], &env));
    assert_eq!(t["database"]["url"].as_str(), Some("sqlite:///tmp/x.db"));

    // An invalid secret is named, never echoed.
    let out = mailferry(dir.path(), &["config", "check"], &[("MAILFERRY_SECURITY__SECRET_KEY", "not-hex-Zq9")]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(stderr(&out).contains("security.secret_key") && !stderr(&out).contains("not-hex-Zq9"), "{}", stderr(&out));
}

#[test]
fn default_config_round_trips_to_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = mailferry(dir.path(), &["default-config"], &[]);
    assert!(out.status.success());
    let example = stdout(&out);
    assert!(example.contains("[server.tls]") && example.contains("concurrency = 4"), "the example documents the keys");
    let file = write(dir.path(), "example.toml", &example);

    let from_example = mailferry(dir.path(), &["config", "check", "--config", &file], &[]);
    let builtin = mailferry(dir.path(), &["config", "check"], &[]);
    assert_eq!(effective(&from_example), effective(&builtin), "the printed example is exactly the defaults");
}
