//! `mailferry archive …`: verify, reindex, search, export, stats and purge for the archives
//! under `archive.root` (default `<data_dir>/archive/NAME`), the one place `serve`,
//! `worker` and `migrate --to archive:NAME` use too; and the service's periodic retention
//! purge ([`purge_periodically`]).
//!
//! verify, stats, search, export and `purge --dry-run` open archives read-only (no
//! search-index writer lock), so they run beside a `serve` or `worker` holding the same
//! archive. reindex and purge need the writer: while a service holds the archive they fail
//! with a message saying so (the service purges on its own every `archive.purge_interval`).
//!
//! Exit status of `verify`: 0 clean, 3 discrepancies found (each printed), 1 could not run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mailferry_archive::{ArchiveError, ExportFormat, PurgeItem, SearchQuery};
use mailferry_engine::Archives;
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::exit;

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// No longer used: archives live in `archive.root` (default `<data_dir>/archive`) for
    /// every command. Kept to say so.
    #[arg(long, value_name = "PATH", global = true, hide = true)]
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
    /// Purge what the archive's retention period has expired and no legal hold covers
    /// (leaving tombstones); print each message that goes and each kept under hold.
    Purge {
        name: String,
        /// Print what would go and what is kept; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The archives every command uses: `archive.root` (default `<data_dir>/archive`), with the
/// configured keys, index and blob store — the same place for `serve`, `worker`, `migrate
/// --to archive:NAME` and `mailferry archive …`.
pub fn cli_archives(loaded: &Loaded) -> anyhow::Result<Archives> {
    Ok(crate::settings::archives(loaded)?)
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
    if let Some(state) = &args.state {
        return Err(loaded
            .error(
                "archive.root",
                format!(
                    "--state {} no longer locates archives: every command uses archive.root (default <data_dir>/archive); \
                     set data_dir or archive.root (MAILFERRY_DATA_DIR, MAILFERRY_ARCHIVE__ROOT) instead",
                    state.display()
                ),
            )
            .into());
    }
    let location = format!("in {} or the configured archive index", loaded.config.archive_root().display());
    // What only reads (and appends its own verify/export event) opens read-only; reindex and
    // purge need the search-index writer.
    let writes = matches!(&args.command, ArchiveCommand::Reindex { .. } | ArchiveCommand::Purge { dry_run: false, .. });
    let archives = if writes { cli_archives(loaded)? } else { cli_archives(loaded)?.read_only() };
    let open = |name: &str| {
        let name = name.to_owned();
        let (archives, location) = (&archives, &location);
        async move {
            if !archives.exists(&name).await? {
                anyhow::bail!("no archive named {name:?} {location}");
            }
            archives.get(&name).await.map_err(|e| held_elsewhere(&name, e))
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
            if args.json {
                print(&page)?;
                return Ok(exit::OK);
            }
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
        ArchiveCommand::Purge { name, dry_run } => {
            let archive = open(name).await?;
            let plan = archive.purge_plan().await?;
            if !args.json {
                print_plan(&plan, *dry_run);
            }
            if *dry_run {
                if args.json {
                    print(&plan)?;
                }
                return Ok(exit::OK);
            }
            let reason = plan.retention_days.map(|d| format!("retention of {d} days expired")).unwrap_or_default();
            let report = archive.purge_planned(&plan, "cli", &reason).await?;
            if args.json {
                print(&serde_json::json!({ "plan": plan, "report": report }))?;
            } else {
                println!(
                    "archive {name}: purged {} messages ({} bytes freed), {} kept under hold",
                    report.purged.len(),
                    report.bytes_freed,
                    report.held
                );
            }
            Ok(exit::OK)
        }
    }
}

/// One line per message that goes (or would) and per message kept under hold.
fn print_plan(plan: &mailferry_archive::PurgePlan, dry_run: bool) {
    let Some(days) = plan.retention_days else {
        println!("archive {}: no retention period set, nothing expires", plan.archive);
        return;
    };
    let cutoff = plan.cutoff.map(|c| c.to_rfc3339()).unwrap_or_default();
    println!("archive {}: retention {days} days; expired if last ingested before {cutoff}", plan.archive);
    let line = |verb: &str, item: &PurgeItem, why: &str| {
        let at = item.last_ingested_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        println!("{verb} {}  account {}  ingested {at}  {why}", item.digest, item.accounts.join(","));
    };
    let verb = if dry_run { "would purge" } else { "purge" };
    for item in &plan.purge {
        line(verb, item, &item.why);
    }
    for item in &plan.held {
        let holds: Vec<String> = item.held_by.iter().map(|h| format!("#{h}")).collect();
        line("keep (hold)", item, &format!("expired, kept under hold {}", holds.join(", ")));
    }
    let bytes: u64 = plan.purge.iter().map(|i| i.size).sum();
    println!("{} to purge ({bytes} bytes), {} kept under hold", plan.purge.len(), plan.held.len());
}

/// A clear message when a service holds the archive (its search-index writer lock).
fn held_elsewhere(name: &str, e: ArchiveError) -> anyhow::Error {
    if e.is_held_elsewhere() {
        anyhow::anyhow!(
            "archive {name} is held by a running mailferry serve or worker (it has the archive's search-index writer), \
             which reindex, purge and migrate --to archive:{name} need: stop that process first, or submit the \
             migration as a job over its API. (The service purges expired messages itself every \
             archive.purge_interval; `mailferry archive purge {name} --dry-run` shows what goes.)"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot open archive {name}"))
    }
}

/// Opens archive `name` for writing (ingest, purge, reindex), failing clearly when a
/// running service holds it.
pub async fn open_for_writing(archives: &Archives, name: &str) -> anyhow::Result<Arc<mailferry_archive::Archive>> {
    archives.get(name).await.map_err(|e| held_elsewhere(name, e))
}

/// The service's periodic retention purge, run by `serve` and `worker` until `stop`: every
/// `interval`, each archive is purged if it is due ([`mailferry_archive::Archive::purge_if_due`]:
/// one process at a time per archive, once per interval between them).
pub async fn purge_periodically(archives: Arc<Archives>, interval: Duration, holder: String, stop: CancellationToken) {
    loop {
        match archives.names().await {
            Ok(names) => {
                for name in names {
                    if stop.is_cancelled() {
                        return;
                    }
                    purge_one_archive(&archives, &name, &holder, interval).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention purge: cannot list the archives"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn purge_one_archive(archives: &Archives, name: &str, holder: &str, interval: Duration) {
    let archive = match archives.get(name).await {
        Ok(a) => a,
        // A local archive another process holds is that process's to purge.
        Err(e) if e.is_held_elsewhere() => {
            tracing::debug!(archive = %name, "retention purge: the archive is held by another process");
            return;
        }
        Err(e) => {
            tracing::warn!(archive = %name, error = %e, "retention purge: cannot open the archive");
            return;
        }
    };
    match archive.purge_if_due(holder, interval).await {
        Ok(Some(r)) if !r.purged.is_empty() || r.held > 0 => tracing::info!(
            archive = %name,
            purged = r.purged.len(),
            bytes_freed = r.bytes_freed,
            kept_under_hold = r.held,
            "retention purge"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(archive = %name, error = %e, "retention purge failed"),
    }
}
