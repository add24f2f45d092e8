//! What the commands that reach mail servers from the admin's shell share (`migrate`,
//! `receipt verify --against`): `--allow-plaintext`, `--ca-file`, `--insecure`, pins made into
//! [`TlsOptions`] under the CLI network policy, and secrets read from the environment or a
//! file, never from argv (visible in `ps`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use mailferry_model::{TlsOptions, TlsPin};
use secrecy::SecretString;

use crate::config::Loaded;

/// The TLS flags of a command that connects to one server.
#[derive(Debug, Args)]
pub struct TlsFlags {
    /// Permit imap:// without TLS when the server offers no STARTTLS.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Extra CA certificate(s), PEM, trusted for the server.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the server certificate (dangerous; lab and legacy hosts only).
    #[arg(long)]
    pub insecure: bool,
    /// Accept only the server certificate whose SHA-256, or its public key's, is this
    /// (sha256:HEX); chain, CA flag and host name are then not checked.
    #[arg(long, value_name = "sha256:HEX", value_parser = parse_pin)]
    pub tls_pin: Option<TlsPin>,
}

/// clap's parser for `--*-tls-pin` (a bad pin is a usage error, exit status 2).
pub fn parse_pin(s: &str) -> Result<TlsPin, String> {
    s.parse::<TlsPin>().map_err(|e| e.to_string())
}

impl TlsFlags {
    pub fn options(&self, loaded: &Loaded) -> anyhow::Result<TlsOptions> {
        let tls = tls_options(self.ca_file.as_deref(), self.insecure, self.allow_plaintext, loaded)?;
        Ok(TlsOptions { pin: self.tls_pin, ..tls })
    }

    /// Whether any of the flags was given.
    pub fn any(&self) -> bool {
        self.allow_plaintext || self.insecure || self.ca_file.is_some() || self.tls_pin.is_some()
    }
}

/// The client TLS options of the command line. A CA file that cannot be read or parsed is
/// an error now (a usage error), not later as a failed handshake.
pub fn tls_options(ca_file: Option<&Path>, insecure: bool, allow_plaintext: bool, loaded: &Loaded) -> anyhow::Result<TlsOptions> {
    let tls = TlsOptions {
        extra_roots_pem: match ca_file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("cannot read --ca-file {}", f.display()))?),
            None => None,
        },
        insecure_skip_verify: insecure,
        // Pins are per endpoint: the caller sets them (`--from-tls-pin`, `--to-tls-pin`).
        pin: None,
        allow_plaintext,
        network: crate::settings::cli_network_policy(loaded)?,
    };
    tls.client_config().context("--ca-file")?;
    Ok(tls)
}

/// A secret from the named variable or the file's first line; `None` when neither is given.
pub fn env_or_file(what: &str, env: Option<&str>, file: Option<&PathBuf>) -> anyhow::Result<Option<SecretString>> {
    let value = match (env, file) {
        (Some(var), _) => std::env::var(var).with_context(|| format!("the {what} variable {var} is not set"))?,
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
            text.lines().next().unwrap_or("").to_owned()
        }
        (None, None) => return Ok(None),
    };
    if value.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(Some(SecretString::from(value)))
}
