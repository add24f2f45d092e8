//! Layered configuration: built-in defaults → `mailferry.toml` → `MAILFERRY_SECTION__KEY`
//! environment variables (figment), then command-line flags. Every key, its default and its
//! meaning is in `mailferry.example.toml` (printed by `mailferry default-config`), which is
//! also the list of known keys: an unknown `MAILFERRY_` variable or an unknown key in the
//! file is an error, as is any invalid value, each reported in one sentence naming the key
//! and where the value came from.

mod de;
mod load;
mod schema;
mod validate;

use std::fmt;
use std::path::PathBuf;

use figment::Figment;

pub use load::load;
pub use schema::*;
pub use validate::parse_archive_keys;

/// The commented example file: the documentation of every key and its default.
pub const EXAMPLE: &str = include_str!("../../mailferry.example.toml");

/// Read when present and no `--config` / `MAILFERRY_CONFIG` names another file.
pub const DEFAULT_FILE: &str = "mailferry.toml";

pub(crate) const PREFIX: &str = "MAILFERRY_";

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

/// Old flat names whose new key the suffix rule in `load::suggest_var` cannot guess.
pub(crate) const RENAMED: &[(&str, &str)] = &[("log", "log.filter")];

pub(crate) const REDACTED: &str = "<redacted>";

/// A configuration problem: exit status 2. One sentence per problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    pub(crate) fn one(msg: impl Into<String>) -> Self {
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
    pub(crate) figment: Figment,
}

impl Loaded {
    /// "from MAILFERRY_X", "from FILE" or "built-in default": where `key` was set.
    pub fn origin(&self, key: &str) -> String {
        load::origin(self.figment.find_metadata(key), &key.split('.').collect::<Vec<_>>())
    }

    /// A [`ConfigError`] about `key`, naming where its value came from.
    pub fn error(&self, key: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError::one(format!("{key}: {problem} ({})", self.origin(key)))
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
