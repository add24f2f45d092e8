//! Config files (crates/mailferry/src/config/): the fuzz input is a `mailferry.toml`,
//! loaded as `mailferry --config FILE` loads it (figment: defaults, the file, then the
//! environment; then the cross-key checks). Never a panic; a loaded config always renders
//! (`mailferry config` prints it); a secret key is never echoed, in errors or rendered.
//!
//! The binary crate has no library target, so its config module is compiled in here from
//! its own source files (the `#[path]` below), not copied; it uses nothing else from the
//! binary.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/mailferry/src"]
mod bin {
    pub mod config;
}

/// The file the input is written to (one per fuzzing process), with the environment
/// cleared of what `load` would also read.
fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("MAILFERRY_") || n == "DATABASE_URL") {
                std::env::remove_var(name);
            }
        }
        std::env::temp_dir().join(format!("mailferry-fuzz-config-{}.toml", std::process::id()))
    })
}

/// `security.secret_key`, when it is a string distinctive enough that finding it in an
/// error message can only mean it was echoed.
fn distinctive_secret(text: &str) -> Option<String> {
    let value: toml::Table = text.parse().ok()?;
    let key = value.get("security")?.get("secret_key")?.as_str()?;
    (key.len() >= 16 && key.chars().all(|c| c.is_ascii_alphanumeric()) && text.matches(key).count() == 1).then(|| key.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    let mut f = std::fs::File::create(path).expect("a temp file");
    f.write_all(data).expect("written");
    drop(f);
    let secret = std::str::from_utf8(data).ok().and_then(distinctive_secret);
    match bin::config::load(Some(path)) {
        Ok(loaded) => {
            let rendered = loaded.config.to_redacted_toml();
            assert!(!rendered.starts_with("# cannot render"), "{rendered}");
            if let Some(s) = &secret {
                assert!(!rendered.contains(s.as_str()), "the secret key rendered");
            }
            let _ = loaded.config.database_url();
            let _ = loaded.config.archive_root();
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!e.0.is_empty());
            if let Some(s) = &secret {
                assert!(!text.contains(s.as_str()), "the secret key echoed: {text}");
            }
        }
    }
});
