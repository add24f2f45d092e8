//! `mailferry archive …`: verify, reindex, search, export and stats for the archives under
//! `archive.root` (default `<data_dir>/archive/NAME`, the same place `serve` uses), or
//! beside the ledger given with `--state`.
//!
//! Exit status of `verify`: 0 clean, 3 discrepancies found (each printed), 1 could not run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use mailferry_archive::{ExportFormat, SearchQuery};
use mailferry_engine::Archives;

use crate::config::Loaded;
use crate::exit;

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Ledger database; archives live in `archive/` beside it. Default: the configured
    /// `archive.root`.
    #[arg(long, value_name = "PATH", global = true)]
    state: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Re-hash every blob, check every occurrence and walk the event chain.
    Verify { name: String },
    /// Rebuild the search index from the (verified) blobs.
    Reindex { name: String },
    /// Counts, stored vs logical bytes, dedup ratio.
    Stats { name: String },
    /// Search: a JSON query with the API's fields, e.g. '{"from":"alice","has_attachment":true}'.
    Search {
        name: String,
        #[arg(default_value = "{}")]
        query: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Export the messages matching a JSON query as mbox or an EML zip with a SHA-256 manifest.
    Export {
        name: String,
        #[arg(long, default_value = "{}")]
        query: String,
        #[arg(long, value_parser = ["mbox", "eml-zip"], default_value = "mbox")]
        format: String,
        #[arg(long)]
        out: PathBuf,
    },
}

/// The archives of a ledger at `state`, sealed with the configured `archive.keys`.
pub fn archives_beside(state: &Path, loaded: &Loaded) -> anyhow::Result<Archives> {
    let dir = state.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(Archives::new(dir.join("archive"), crate::settings::archive_keys(loaded)?))
}

pub async fn run(args: ArchiveArgs, loaded: &Loaded) -> u8 {
    match run_inner(args, loaded).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                exit::USAGE
            } else {
                exit::COULD_NOT_PROCEED
            }
        }
    }
}

fn print<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_inner(args: ArchiveArgs, loaded: &Loaded) -> anyhow::Result<u8> {
    let (archives, location) = match &args.state {
        Some(state) => (archives_beside(state, loaded)?, format!("beside {}", state.display())),
        None => {
            // The service's archives, wherever the config keeps them (local or shared).
            let root = loaded.config.archive_root();
            (crate::settings::archives(loaded)?, format!("in {} or the configured archive index", root.display()))
        }
    };
    let open = |name: &str| {
        let name = name.to_owned();
        let (archives, location) = (&archives, &location);
        async move {
            if !archives.exists(&name).await? {
                anyhow::bail!("no archive named {name:?} {location}");
            }
            archives.get(&name).await.with_context(|| format!("cannot open archive {name}"))
        }
    };
    match &args.command {
        ArchiveCommand::Verify { name } => {
            let archive = open(name).await?;
            let report = archive.verify("cli").await?;
            if args.json {
                print(&report)?;
            } else {
                println!(
                    "archive {name}: {} blobs ({} bytes), {} occurrences, {} events checked; chain head {:?}; {} discrepancies",
                    report.blobs_checked,
                    report.bytes_checked,
                    report.occurrences_checked,
                    report.events_checked,
                    report.chain_head,
                    report.discrepancies.len()
                );
                for d in &report.discrepancies {
                    println!("  {}", serde_json::to_string(d)?);
                }
            }
            Ok(if report.ok() { exit::OK } else { exit::SOME_FAILED })
        }
        ArchiveCommand::Reindex { name } => {
            let n = open(name).await?.reindex().await?;
            println!("archive {name}: reindexed {n} messages");
            Ok(exit::OK)
        }
        ArchiveCommand::Stats { name } => {
            print(&open(name).await?.stats().await?)?;
            Ok(exit::OK)
        }
        ArchiveCommand::Search { name, query, limit } => {
            let q: SearchQuery = serde_json::from_str(query).context("the query must be a JSON object of search fields")?;
            let page = open(name).await?.search(&q, *limit, None).await?;
            for hit in &page.hits {
                let m = &hit.meta;
                println!(
                    "{}  {}  {}  {}",
                    hit.occurrence.digest,
                    hit.occurrence.account,
                    m.as_ref().and_then(|m| m.from.first().cloned()).unwrap_or_default(),
                    m.as_ref().and_then(|m| m.subject.clone()).unwrap_or_default()
                );
            }
            println!("{} of {} matches", page.hits.len(), page.total);
            Ok(exit::OK)
        }
        ArchiveCommand::Export { name, query, format, out } => {
            let q: SearchQuery = serde_json::from_str(query).context("--query must be a JSON object of search fields")?;
            let format = if format == "mbox" { ExportFormat::Mbox } else { ExportFormat::EmlZip };
            let report = open(name).await?.export(&q, format, out, "cli").await?;
            println!("exported {} messages to {} (sha256 {})", report.messages, out.display(), report.file_sha256);
            Ok(exit::OK)
        }
    }
}
