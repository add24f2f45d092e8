//! The `mailferry` binary. Today: `migrate`, the one-shot CLI that drains one POP3 mailbox
//! into one IMAP folder on the embedded defaults (SQLite ledger under ./mailferry-data/).
//!
//! Exit status (a contract for admins' scripts): 0 every message copied or deliberately
//! skipped; 3 some messages failed; 2 usage or configuration error; 1 the run could not
//! proceed (authentication failure, unreachable host, ...).
#![forbid(unsafe_code)]

mod archive_cmd;
mod endpoint_url;
mod migrate;
mod service;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mailferry", version, about = "Drain POP3 mailboxes into IMAP, exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy one POP3 mailbox into one IMAP folder; reruns copy only what is new.
    Migrate(migrate::MigrateArgs),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::COULD_NOT_PROCEED);
        }
    };
    let code = runtime.block_on(async {
        let result = match cli.command {
            Command::Migrate(args) => return migrate::run(args).await,
            Command::Archive(args) => return archive_cmd::run(args).await,
            Command::Serve(args) => {
                service::init_logging();
                service::serve(args).await
            }
            Command::Worker => {
                service::init_logging();
                service::worker_only().await
            }
            Command::Token(cmd) => service::token(cmd).await,
            Command::Db(cmd) => service::db(cmd).await,
            Command::Openapi => service::openapi(),
        };
        match result {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                exit::COULD_NOT_PROCEED
            }
        }
    });
    ExitCode::from(code)
}
