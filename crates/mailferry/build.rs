//! Embeds the commit the binary is built from, for `mailferry --version`:
//! `git rev-parse --short HEAD`, or `unknown` when this is not a git checkout (a source
//! archive) or git is missing. Never fails the build. Named `BUILD_GIT_COMMIT`, not
//! `MAILFERRY_…`: cargo also sets it in the environment of the tests it runs, and the
//! binary refuses unknown `MAILFERRY_*` variables it would inherit from them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&here, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    if commit == "unknown" {
        // No commit found (a source archive, or git missing): ask again on every build, or
        // a later build of a git checkout sharing this target dir would keep "unknown".
        // A path that does not exist makes Cargo rerun the script each time.
        println!("cargo:rerun-if-changed={}", here.join("no-commit-found").display());
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout, a detached HEAD) and the branch it
    // names (a commit), loose or packed. `--git-path` resolves them in worktrees too. Only
    // files that exist are watched: Cargo reruns on every build for a missing one.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&here, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&here, &["rev-parse", "--git-path", &name]).map(|p| here.join(p)) {
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// `git args` in `dir`, its trimmed output when it succeeded and said something.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}
