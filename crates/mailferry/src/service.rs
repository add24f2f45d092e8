//! `mailferry serve`, `mailferry worker`, `mailferry token create`, `mailferry db migrate`
//! and `mailferry openapi`: the service around the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mailferry_engine::{EngineConfig, SpoolConfig, Worker, WorkerConfig};
use mailferry_model::Scope;
use mailferry_store::{ClaimLimits, Store};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the API and dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the API only; run no workers in this process.
    #[arg(long)]
    no_workers: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (shown once; its last word is the token).
    Create {
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply database migrations (also done at every start).
    Migrate,
}

pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MAILFERRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // async-imap traces raw protocol lines (LOGIN with its password, message bodies).
    let filter = filter.add_directive("async_imap=info".parse().expect("valid directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder.json().try_init();
    }
}

fn worker(settings: &Settings, store: Arc<dyn Store>) -> Worker {
    let allow = settings.plaintext_allow.clone();
    let engine = EngineConfig {
        spool: SpoolConfig { dir: settings.data_dir.join("spool"), ..SpoolConfig::default() },
        ..EngineConfig::default()
    };
    let config = WorkerConfig {
        id: format!("{}-{}", hostname(), std::process::id()),
        concurrency: settings.worker_concurrency,
        lease: settings.lease,
        poll_interval: Duration::from_millis(500),
        limits: ClaimLimits { per_source_host: settings.per_host_limit, per_target_host: settings.per_host_limit },
        engine,
        plaintext_allowed: Arc::new(move |host: &str| allow.contains(host)),
        extra_roots_pem: settings.ca_pem.clone(),
        network: Arc::clone(&settings.network),
        archives: Arc::clone(&settings.archives),
    };
    Worker::new(store, settings.sealer.clone(), config)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "worker".into())
}

/// SIGTERM or Ctrl-C: stop claiming, finish the in-flight message, release leases.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let store = settings.open_store().await?;
    let shutdown = shutdown_on_signal();
    let state = mailferry_api::AppState::new(
        Arc::clone(&store),
        settings.sealer.clone(),
        mailferry_api::ApiConfig { plaintext_allow: settings.plaintext_allow_raw.clone(), ..Default::default() },
        // The same instances the in-process workers write to (one search-index writer).
        Arc::clone(&settings.archives),
    )
    // SSE streams end at shutdown too, so graceful shutdown is not held open by them.
    .with_shutdown(shutdown.clone());
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read the address from this line.
    println!("mailferry listening on http://{addr}");
    tracing::info!(%addr, database = %redact_url(&settings.database_url), "serving");
    let workers = (!args.no_workers).then(|| tokio::spawn(worker(&settings, Arc::clone(&store)).run(shutdown.child_token())));
    axum::serve(listener, mailferry_api::app(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("the HTTP server failed")?;
    if let Some(w) = workers {
        w.await.context("the worker pool panicked")?;
    }
    Ok(())
}

pub async fn worker_only() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let store = settings.open_store().await?;
    tracing::info!(database = %redact_url(&settings.database_url), "worker starting");
    worker(&settings, store).run(shutdown_on_signal()).await;
    Ok(())
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { scope, name } = cmd;
    let scope = Scope::parse(&scope).context("--scope must be read, write or admin")?;
    let settings = Settings::from_env()?;
    let store = settings.open_store().await?;
    let (token, hash) = mailferry_api::new_token();
    let record = store.create_token(&name, scope, &hash).await?;
    println!("created {} token {} ({}): {token}", scope.as_str(), record.id, record.name);
    Ok(())
}

pub async fn db(cmd: DbCommand) -> anyhow::Result<()> {
    let DbCommand::Migrate = cmd;
    let settings = Settings::from_env()?;
    settings.open_store().await?;
    println!("database migrations applied ({})", redact_url(&settings.database_url));
    Ok(())
}

pub fn openapi() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&mailferry_api::openapi())?);
    Ok(())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_database_passwords() {
        assert_eq!(super::redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://./x.db"), "sqlite://./x.db");
    }
}
