//! `mailferry serve`, `mailferry worker`, `mailferry token create`, `mailferry db migrate`
//! and `mailferry openapi`: the service around the engine.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use mailferry_engine::{Worker, WorkerConfig};
use mailferry_model::Scope;
use mailferry_store::{ClaimLimits, Store};
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the API and dashboard (overrides `server.listen`, default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
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

fn worker(settings: &Settings, store: Arc<dyn Store>) -> Worker {
    let allow = settings.plaintext_allow.clone();
    let config = WorkerConfig {
        id: mailferry_engine::unique_worker_id(&hostname()),
        concurrency: settings.worker_concurrency,
        lease: settings.lease,
        poll_interval: settings.poll_interval,
        limits: ClaimLimits { per_source_host: settings.per_host_limit, per_target_host: settings.per_host_limit },
        engine: settings.engine.clone(),
        plaintext_allowed: Arc::new(move |host: &str| allow.contains(host)),
        extra_roots_pem: settings.ca_pem.clone(),
        network: Arc::clone(&settings.network),
        archives: Arc::clone(&settings.archives),
    };
    Worker::new(store, settings.sealer.clone(), config)
}

/// The periodic retention purge of every archive (`archive.purge_interval`), in `serve` and
/// `worker` alike; which process purges an archive is settled per archive by a lease in
/// its index (`Archive::purge_if_due`).
fn spawn_purge(settings: &Settings, loaded: &Loaded, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let holder = mailferry_engine::unique_worker_id(&hostname());
    let archives = Arc::clone(&settings.archives);
    tokio::spawn(crate::archive_cmd::purge_periodically(archives, loaded.config.archive.purge_interval, holder, stop))
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

pub async fn serve(args: ServeArgs, loaded: &Loaded) -> anyhow::Result<()> {
    let settings = Settings::from_config(loaded)?;
    mailferry_engine::HostLabels::global().set_limit(settings.api.metrics_max_hosts);
    let listen = args.listen.unwrap_or(settings.listen);
    // Load the certificate before anything else starts: a bad one is a config error.
    let cert = match &settings.tls {
        Some(files) => Some(crate::tls::ReloadingCert::load(files.clone()).map_err(|e| loaded.error("server.tls", format!("{e:#}")))?),
        None => None,
    };
    let store = settings.open_store().await?;
    let shutdown = shutdown_on_signal();
    // Local archives have one writing process. With in-process workers the API shares
    // their instances; with `--no-workers` the writers are the worker processes, so this
    // one opens archives read-only and leaves the retention purge to them.
    let readers_only = args.no_workers && settings.archives.is_local();
    let api_archives = if readers_only {
        Arc::new(crate::settings::archives(loaded)?.read_only())
    } else {
        Arc::clone(&settings.archives)
    };
    let state = mailferry_api::AppState::new(Arc::clone(&store), settings.sealer.clone(), settings.api.clone(), api_archives)
    // SSE streams end at shutdown too, so graceful shutdown is not held open by them.
    .with_shutdown(shutdown.clone())
    // `?preflight=true` logs in as the workers will: their options, caps and CA roots.
    .with_preflight(crate::preflight_cmd::api_settings(&settings));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if cert.is_some() { "https" } else { "http" };
    // Scripts and tests read the address from this line.
    println!("mailferry listening on {scheme}://{addr}");
    tracing::info!(%addr, tls = cert.is_some(), database = %settings.database_url, "serving");
    let workers = (!args.no_workers).then(|| tokio::spawn(worker(&settings, Arc::clone(&store)).run(shutdown.child_token())));
    let purge = (!readers_only).then(|| spawn_purge(&settings, loaded, shutdown.child_token()));
    // With the peer address: the audit log and the failed-authentication limit need it.
    let app = mailferry_api::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let stopped = shutdown.clone().cancelled_owned();
    match cert {
        Some(cert) => {
            crate::tls::reload_on_sighup(Arc::clone(&cert))?;
            let listener = crate::tls::TlsListener::new(listener, cert)?;
            // `tap_io` makes axum hand the listener's peer address to ConnectInfo.
            use axum::serve::ListenerExt as _;
            axum::serve(listener.tap_io(|_| {}), app).with_graceful_shutdown(stopped).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
    }
    .context("the HTTP server failed")?;
    if let Some(w) = workers {
        w.await.context("the worker pool panicked")?;
    }
    if let Some(purge) = purge {
        purge.await.context("the retention purge panicked")?;
    }
    Ok(())
}

pub async fn worker_only(loaded: &Loaded) -> anyhow::Result<()> {
    let settings = Settings::from_config(loaded)?;
    mailferry_engine::HostLabels::global().set_limit(settings.api.metrics_max_hosts);
    // Bind before anything runs: an address in use stops start-up, like `serve --listen`.
    let metrics = match settings.worker_metrics_listen {
        Some(addr) => {
            // The recorder first, so the worker's figures are recorded from its first claim.
            mailferry_api::metrics::install();
            mailferry_api::metrics::spawn_upkeep();
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (worker.metrics_listen)"))?;
            Some(listener)
        }
        None => None,
    };
    let store = settings.open_store().await?;
    // The listener outlives the graceful drain after SIGTERM (its figures still move while
    // running jobs finish their in-flight message) and stops when the worker loop returns.
    let drained = CancellationToken::new();
    let metrics = match metrics {
        Some(listener) => {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "worker metrics listening on http://{addr}/metrics");
            // `api.metrics_require_token`: checked against the tokens in the database.
            let tokens = settings.api.metrics_require_token.then(|| Arc::clone(&store));
            let server = axum::serve(listener, mailferry_api::metrics::process_app(tokens))
                .with_graceful_shutdown(drained.clone().cancelled_owned());
            Some(tokio::spawn(async move { server.await }))
        }
        None => None,
    };
    tracing::info!(database = %settings.database_url, "worker starting");
    let shutdown = shutdown_on_signal();
    let purge = spawn_purge(&settings, loaded, shutdown.child_token());
    worker(&settings, store).run(shutdown).await;
    drained.cancel();
    purge.await.context("the retention purge panicked")?;
    if let Some(server) = metrics {
        server.await.context("the metrics listener panicked")?.context("the metrics listener failed")?;
    }
    Ok(())
}

pub async fn token(cmd: TokenCommand, loaded: &Loaded) -> anyhow::Result<()> {
    let TokenCommand::Create { scope, name } = cmd;
    let scope = Scope::parse(&scope).context("--scope must be read, write or admin")?;
    let settings = Settings::from_config(loaded)?;
    let store = settings.open_store().await?;
    let (token, hash) = mailferry_api::new_token();
    let record = store.create_token(&name, scope, &hash).await?;
    println!("created {} token {} ({}): {token}", scope.as_str(), record.id, record.name);
    Ok(())
}

pub async fn db(cmd: DbCommand, loaded: &Loaded) -> anyhow::Result<()> {
    let DbCommand::Migrate = cmd;
    let settings = Settings::from_config(loaded)?;
    settings.open_store().await?;
    println!("database migrations applied ({})", settings.database_url);
    Ok(())
}

pub fn openapi() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&mailferry_api::openapi())?);
    Ok(())
}
