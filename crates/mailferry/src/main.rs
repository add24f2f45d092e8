//! The `mailferry` binary: `migrate`, the one-shot CLI that drains one POP3 mailbox into one
//! IMAP folder or archive on the embedded defaults (SQLite ledger under ./mailferry-data/);
//! the service (`serve`, `worker`, `token`, `db`); `archive`, `receipt`, `config`, `doctor`.
//!
//! Exit status (a contract for admins' scripts): 0 every message copied or deliberately
//! skipped; 3 some messages failed; 2 usage or configuration error; 1 the run could not
//! proceed (authentication failure, unreachable host, ...).
#![forbid(unsafe_code)]

mod archive_cmd;
mod client_tls;
mod config;
mod doctor;
mod endpoint_url;
mod migrate;
mod preflight_cmd;
mod receipt_cmd;
mod service;
mod settings;
mod telemetry;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `mailferry --version`: the crate's version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_GIT_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(name = "mailferry", version = VERSION, about = "Drain POP3 mailboxes into IMAP or a compliance archive, exactly once.")]
struct Cli {
    /// Config file (TOML). Default: ./mailferry.toml when it exists.
    #[arg(long, global = true, value_name = "PATH", env = "MAILFERRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy one POP3 mailbox into one IMAP folder; reruns copy only what is new.
    Migrate(migrate::MigrateArgs),
    /// Check mailboxes before migrating them (logins, TLS, UIDL, folder, quota, sizes):
    /// exit 0 when each is ready or warning, 3 when any is blocked.
    Preflight(preflight_cmd::PreflightArgs),
    /// Run the HTTP API and workers in one process (the embedded default).
    Serve(service::ServeArgs),
    /// Run workers only (scale-out against a shared PostgreSQL).
    Worker,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(service::TokenCommand),
    /// Database maintenance.
    #[command(subcommand)]
    Db(service::DbCommand),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Verify, search, export the compliance archives.
    Archive(archive_cmd::ArchiveArgs),
    /// Migration receipts: the public key, verify one (offline or against the destination),
    /// prove one message is in it.
    Receipt(receipt_cmd::ReceiptArgs),
    /// Print the commented example config file: every key, its default, what it means.
    DefaultConfig,
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check that `serve` can start here: data dir, database, keys, archives, TLS files,
    /// listen address; one line each, exit 1 when any fails.
    Doctor(doctor::DoctorArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the config (file, environment) and print the effective settings, secrets redacted.
    Check,
}

/// Exit codes of the CLI contract.
pub(crate) mod exit {
    pub const OK: u8 = 0;
    pub const COULD_NOT_PROCEED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const SOME_FAILED: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::EXAMPLE);
            return ExitCode::from(exit::OK);
        }
        Command::Openapi => {
            return ExitCode::from(match service::openapi() {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::COULD_NOT_PROCEED
                }
            });
        }
        other => other,
    };
    // Every other command reads the configuration first; a problem with it is exit 2.
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) if matches!(command, Command::Doctor(_)) => return ExitCode::from(doctor::config_failed(&e)),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::COULD_NOT_PROCEED);
        }
    };
    let code = runtime.block_on(async {
        let result = match command {
            Command::Migrate(args) => return migrate::run(args, &loaded).await,
            Command::Preflight(args) => return preflight_cmd::run(args, &loaded).await,
            Command::Archive(args) => return archive_cmd::run(args, &loaded).await,
            Command::Receipt(args) => return receipt_cmd::run(args, &loaded).await,
            Command::Doctor(args) => return doctor::run(args, &loaded).await,
            Command::Serve(args) => match telemetry::init(&loaded.config.log, "info") {
                Ok(telemetry) => {
                    let result = service::serve(args, &loaded).await;
                    telemetry.shutdown().await;
                    result
                }
                Err(e) => Err(e),
            },
            Command::Worker => match telemetry::init(&loaded.config.log, "info") {
                Ok(telemetry) => {
                    let result = service::worker_only(&loaded).await;
                    telemetry.shutdown().await;
                    result
                }
                Err(e) => Err(e),
            },
            Command::Token(cmd) => service::token(cmd, &loaded).await,
            Command::Db(cmd) => service::db(cmd, &loaded).await,
            Command::Config(ConfigCommand::Check) => config_check(&loaded),
            Command::Openapi | Command::DefaultConfig => unreachable!("handled before loading the config"),
        };
        match result {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                if e.downcast_ref::<config::ConfigError>().is_some() {
                    exit::USAGE
                } else {
                    exit::COULD_NOT_PROCEED
                }
            }
        }
    });
    ExitCode::from(code)
}

/// `mailferry config check`: the files it names must be readable too.
fn config_check(loaded: &config::Loaded) -> anyhow::Result<()> {
    settings::check_files(loaded)?;
    match &loaded.file {
        Some(f) => println!("# effective configuration: defaults, {}, environment (secrets redacted)", f.display()),
        None => println!("# effective configuration: defaults, environment (no config file; secrets redacted)"),
    }
    print!("{}", loaded.config.to_redacted_toml());
    Ok(())
}
