//! Reading the layers (defaults → file → environment) with figment, the unknown-variable
//! check with its suggestions, where each value came from, and one sentence per error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Metadata, Source};

use super::{Config, ConfigError, Loaded, DEFAULT_FILE, EXAMPLE, PREFIX, REDACTED, RENAMED, RESERVED_VARS, STANDARD_VARS};

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
    super::validate::validate(&loaded)?;
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
pub(crate) fn check_env(vars: impl Iterator<Item = (String, std::ffi::OsString)>) -> Result<(), ConfigError> {
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
pub(crate) fn suggest_var(key: &str, known: &BTreeSet<String>) -> Option<String> {
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

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
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
pub(crate) fn origin(md: Option<&Metadata>, path: &[&str]) -> String {
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
pub(crate) fn describe(e: &figment::Error) -> String {
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
