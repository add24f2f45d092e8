//! Issue 13, "Prove it": arbitrary files through the config loader (`config::load`, as
//! `mailferry --config FILE` loads it), in the normal test suite beside the `config_toml`
//! fuzz target. Never a panic: a loaded config that renders, or a `ConfigError` that says
//! something.

use std::io::Write;

use proptest::prelude::*;

use super::{load, ConfigError, EXAMPLE};

/// Load `bytes` as the config file.
fn load_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut file = tempfile::NamedTempFile::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
    file.write_all(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match load::load(Some(file.path())) {
        Ok(loaded) => {
            let rendered = loaded.config.to_redacted_toml();
            prop_assert!(!rendered.starts_with("# cannot render"), "{}", rendered);
            let _ = loaded.config.database_url();
            let _ = loaded.config.archive_root();
        }
        Err(ConfigError(problems)) => {
            prop_assert!(!problems.is_empty() && problems.iter().all(|p| !p.trim().is_empty()), "{:?}", problems);
        }
    }
    Ok(())
}

/// Every `section.key` (and top-level key) of the example file, with its value.
fn example_keys() -> Vec<Vec<String>> {
    fn walk(table: &toml::Table, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for (k, v) in table {
            let mut path = prefix.to_vec();
            path.push(k.clone());
            match v {
                toml::Value::Table(t) => walk(t, &path, out),
                _ => out.push(path),
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = EXAMPLE.parse::<toml::Table>() {
        walk(&table, &[], &mut out);
    }
    out
}

/// Any TOML value a key could be given.
fn value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<String>().prop_map(toml::Value::String),
        "[a-z0-9:/._@\\[\\]%-]{0,40}".prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(u16::MAX as i64 + 1), Just(i64::MAX)].prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        prop::collection::vec(any::<String>(), 0..3).prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect())),
        Just(toml::Value::Table(toml::Table::new())),
    ]
}

/// Set `path` to `value` in `table`, making the tables on the way.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = table;
    for p in parents {
        let entry = at.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(t) = entry.as_table_mut() else { return };
        at = t;
    }
    at.insert(last.clone(), value);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_load_or_fail_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load_bytes(&bytes)?;
    }

    #[test]
    fn arbitrary_text_loads_or_fails_with_a_reason(text in any::<String>()) {
        load_bytes(text.as_bytes())?;
    }

    /// Every key the example documents, given values of every type and range.
    #[test]
    fn every_documented_key_with_any_value_loads_or_fails_with_a_reason(
        picks in prop::collection::vec((any::<prop::sample::Index>(), value()), 1..4)
    ) {
        let keys = example_keys();
        prop_assume!(!keys.is_empty());
        let mut table = toml::Table::new();
        for (index, v) in picks {
            let key: &Vec<String> = index.get(&keys);
            set(&mut table, key, v);
        }
        let text = toml::to_string(&table).map_err(|e| TestCaseError::fail(e.to_string()))?;
        load_bytes(text.as_bytes())?;
    }
}
