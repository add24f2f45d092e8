//! `mailferry migrate`: flags → endpoints → one engine run → summary and exit status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use mailferry_engine::{
    run_job, ArchiveTarget, Archives, DrainJob, EngineConfig, EngineError, Outcome, Progress, RunReport, SpoolConfig, Target,
};
use mailferry_model::{
    Credential, DeletePolicy, ImapAuth, ImapEndpoint, JobOptions, OAuth2Credential, OAuth2Refresh, Pop3Auth, Pop3Endpoint, TlsOptions,
    TlsPin,
};
use mailferry_store::SqliteStore;
use secrecy::SecretString;
use tokio::sync::watch;

use crate::config::{LogConfig, LogFormat, Loaded};
use crate::client_tls::{self, env_or_file};
use crate::endpoint_url::{self, Protocol};
use crate::exit;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Source mailbox: pop3s://USER@HOST[:PORT] (implicit TLS) or pop3://USER@HOST[:PORT] (STLS).
    #[arg(long, value_name = "URL")]
    from: String,
    /// Destination: imaps://USER@HOST[:PORT][/FOLDER] or imap://… (STARTTLS), folder defaults
    /// to INBOX; or archive:NAME, the deduplicating archive in archive.root (default
    /// <data_dir>/archive, where `serve` and `mailferry archive` find it too).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Environment variable holding the source password (or OAuth2 token).
    #[arg(long, value_name = "VAR", conflicts_with = "from_password_file")]
    from_password_env: Option<String>,
    /// File holding the source password (first line).
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Environment variable holding the destination password (or OAuth2 token).
    #[arg(long, value_name = "VAR", conflicts_with = "to_password_file")]
    to_password_env: Option<String>,
    /// File holding the destination password (first line).
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Source authentication: auto (from CAPA), user, apop, plain, xoauth2.
    #[arg(long, value_name = "MECH", default_value = "auto")]
    from_auth: String,
    /// Destination authentication: auto, login, plain, xoauth2.
    #[arg(long, value_name = "MECH", default_value = "auto")]
    to_auth: String,
    #[command(flatten)]
    oauth2: Box<OAuth2Args>,
    /// Permit pop3:// and imap:// without TLS when the server offers no STLS/STARTTLS.
    #[arg(long)]
    allow_plaintext: bool,
    /// Extra CA certificate(s), PEM, trusted for both servers.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Do not verify server certificates (dangerous; lab and legacy hosts only).
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    pins: Box<PinArgs>,
    /// When to delete from the source: keep, after-verified, after-days:N.
    #[arg(long, value_name = "POLICY", default_value = "keep")]
    delete: String,
    /// Report what would be copied and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Ledger database (SQLite).
    #[arg(long, value_name = "PATH", default_value = "mailferry-data/state.db")]
    state: PathBuf,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// IMAP flag set on every copied message (repeatable), e.g. --flag '\Seen'.
    #[arg(long = "flag", value_name = "FLAG")]
    flags: Vec<String>,
    /// Skip (and keep at the source) messages larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<u64>,
    /// Attempts for retryable failures (network, [IN-USE], timeouts), first included.
    #[arg(long, value_name = "N", default_value_t = 4)]
    attempts: u32,
    /// How each copy read back from the destination is compared with what was sent before
    /// it counts as verified (and may be deleted under after-verified): exact (every byte),
    /// body (the destination rewrote headers: Gmail, Microsoft 365), size, or none (no
    /// read-back: keep-only runs at full speed; refused with a deleting --delete).
    #[arg(long, value_name = "LEVEL", default_value = "exact", value_parser = parse_verify)]
    verify: mailferry_model::VerifyLevel,
    /// When another run (a second `migrate`, or a service job) is draining the same source
    /// mailbox, wait for it to finish instead of exiting with status 1.
    #[arg(long)]
    wait: bool,
    /// Write the run's signed receipt (JSON) to FILE: every message, where it is, the
    /// digests read back, the Merkle root and the signature (`mailferry receipt verify`).
    #[arg(long, value_name = "FILE")]
    receipt: Option<PathBuf>,
}

/// `--from-tls-pin`, `--to-tls-pin` (boxed like [`OAuth2Args`]: the command enum stays small).
#[derive(Debug, Args)]
struct PinArgs {
    /// Accept the source server's certificate only when its SHA-256, or its public key's
    /// (SPKI), is this: sha256:HEX (colons allowed, as `openssl x509 -fingerprint -sha256`
    /// prints it). Chain, CA flag and host name are then not checked: for legacy hosts with
    /// self-signed certificates. A refused certificate's error names both fingerprints.
    #[arg(long, value_name = "sha256:HEX", value_parser = client_tls::parse_pin)]
    from_tls_pin: Option<TlsPin>,
    /// The same pin for the destination (IMAP) server.
    #[arg(long, value_name = "sha256:HEX", value_parser = client_tls::parse_pin)]
    to_tls_pin: Option<TlsPin>,
}

/// `--to-oauth2-*`: a refresh-token grant for the destination instead of a password.
#[derive(Debug, Args)]
struct OAuth2Args {
    /// OAuth2 token endpoint of the destination's authorization server: the job exchanges a
    /// refresh token there for access tokens (XOAUTH2) as they expire, instead of a password.
    #[arg(long, value_name = "URL")]
    to_oauth2_token_url: Option<String>,
    /// OAuth2 client id (with --to-oauth2-token-url).
    #[arg(long, value_name = "ID")]
    to_oauth2_client_id: Option<String>,
    /// Scopes to request, space-separated (default: those originally granted).
    #[arg(long, value_name = "SCOPE")]
    to_oauth2_scope: Option<String>,
    /// Environment variable holding the OAuth2 refresh token (with --to-oauth2-token-url).
    #[arg(long, value_name = "VAR", conflicts_with = "to_oauth2_refresh_token_file")]
    to_oauth2_refresh_token_env: Option<String>,
    /// File holding the OAuth2 refresh token (first line).
    #[arg(long, value_name = "FILE")]
    to_oauth2_refresh_token_file: Option<PathBuf>,
    /// Environment variable holding the OAuth2 client secret (omit for a public client).
    #[arg(long, value_name = "VAR", conflicts_with = "to_oauth2_client_secret_file")]
    to_oauth2_client_secret_env: Option<String>,
    /// File holding the OAuth2 client secret (first line).
    #[arg(long, value_name = "FILE")]
    to_oauth2_client_secret_file: Option<PathBuf>,
}

fn parse_verify(s: &str) -> Result<mailferry_model::VerifyLevel, String> {
    mailferry_model::VerifyLevel::parse(s).ok_or_else(|| format!("{s:?} is not a verification level: exact, body, size or none"))
}

/// A usage or configuration problem: exit status 2.
struct UsageError(anyhow::Error);

pub async fn run(args: MigrateArgs, loaded: &Loaded) -> u8 {
    crate_telemetry(args.json, &loaded.config.log);
    let (job, state) = match build_job(&args, loaded).await {
        Ok(x) => x,
        Err(UsageError(e)) => {
            eprintln!("error: {e:#}");
            return exit::USAGE;
        }
    };
    let store = match SqliteStore::open(&state).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: cannot open the ledger {}: {e}", state.display());
            return exit::COULD_NOT_PROCEED;
        }
    };
    let mut config = EngineConfig::default();
    crate::settings::apply_pipeline(&mut config, &loaded.config);
    let state_dir = state.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    config.receipts = match crate::settings::receipt_signer_in(loaded, state_dir) {
        Ok(signer) => Some(signer),
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::USAGE;
        }
    };
    config.retry.attempts = args.attempts.max(1);
    config.claim.holder = mailferry_engine::this_process("mailferry migrate");
    config.claim.wait = args.wait;
    config.spool = SpoolConfig {
        dir: state.parent().map(|d| d.join("spool")).unwrap_or_else(std::env::temp_dir),
        ..SpoolConfig::default()
    };
    let (tx, rx) = watch::channel(Progress::default());
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| tokio::spawn(show_progress(rx)));
    // Ctrl-C (SIGINT) or SIGTERM (`kill`, systemd, a container stop) stops between messages:
    // the RETRs in flight are drained, QUIT is sent, what is copied stays recorded, nothing
    // is deleted; the run ends `cancelled` (exit status 1).
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        let sigterm = async {
            match term {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot handle SIGTERM; only Ctrl-C stops the run gracefully");
                    std::future::pending::<()>().await;
                }
            }
        };
        // A Ctrl-C handler that cannot be installed disables its branch only.
        tokio::select! {
            Ok(()) = tokio::signal::ctrl_c() => {}
            () = sigterm => {}
        }
        on_signal.cancel();
    });
    let result = run_job(Arc::clone(&store) as Arc<dyn mailferry_store::Store>, &job, &config, Some(tx), cancel).await;
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    if let Some(file) = &args.receipt {
        let run = match &result {
            Ok(report) => Some((report.job, report.run)),
            Err(_) => None,
        };
        if let Err(e) = write_receipt(store, run, file).await {
            eprintln!("error: --receipt {}: {e:#}", file.display());
            return exit::COULD_NOT_PROCEED;
        }
    }
    match result {
        Ok(report) => {
            print_report(&report, args.json);
            match report.outcome {
                Outcome::Succeeded => exit::OK,
                Outcome::Partial => exit::SOME_FAILED,
                Outcome::Cancelled => exit::COULD_NOT_PROCEED,
            }
        }
        Err(e) => {
            report_error(&e, args.json);
            exit::COULD_NOT_PROCEED
        }
    }
}

/// `--receipt FILE`: the run's receipt, written to a temporary file beside FILE and renamed
/// into place once complete (a half-written receipt never carries the name).
async fn write_receipt(store: Arc<SqliteStore>, run: Option<(i64, i64)>, file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Some((job, run)) = run else { bail!("the run failed before it had a receipt") };
    let mut reader = mailferry_engine::receipt::ReceiptReader::open(store, job, Some(run))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no receipt was recorded for run {run} (see the log)"))?;
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    while let Some(chunk) = reader.next_chunk().await? {
        tmp.write_all(chunk.as_bytes())?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(file)?;
    Ok(())
}

async fn build_job(args: &MigrateArgs, loaded: &Loaded) -> Result<(DrainJob, PathBuf), UsageError> {
    // Deletion takes only copies read back and matched: `none` with a deleting policy
    // would silently delete nothing, so it is refused up front.
    if !args.verify.reads_back() && args.delete.parse::<DeletePolicy>().is_ok_and(|d| d != DeletePolicy::Keep) {
        return Err(UsageError(anyhow::anyhow!(
            "--verify none reads no copy back, and only copies read back are deleted: use it with --delete keep"
        )));
    }
    // An archive target needs no password and no URL parsing.
    if let Some(name) = args.to.strip_prefix("archive:") {
        return archive_job(args, name, loaded).await.map_err(UsageError);
    }
    (|| {
        let from = endpoint_url::parse(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        let to = endpoint_url::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        if from.protocol != Protocol::Pop3 {
            bail!("--from must be a pop3s:// or pop3:// URL");
        }
        if to.protocol != Protocol::Imap {
            bail!("--to must be an imaps:// or imap:// URL, or archive:NAME");
        }
        let tls = client_tls::tls_options(args.ca_file.as_deref(), args.insecure, args.allow_plaintext, loaded)?;
        let from_secret = secret("source", "--from", args.from_password_env.as_deref(), args.from_password_file.as_ref())?;
        let (to_credential, to_auth) = destination_credential(args, &tls)?;
        for flag in &args.flags {
            if let Some(problem) = mailferry_engine::imap_flag_problem(flag) {
                bail!("--flag: {problem}");
            }
        }
        let (from_security, to_security) = (from.security_with(args.allow_plaintext), to.security_with(args.allow_plaintext));
        // One-shot: no job store to save a rotated refresh token in (kept in memory).
        let source = Pop3Endpoint {
            host: from.host,
            port: from.port,
            security: from_security,
            username: from.username,
            secret: from_secret,
            auth: parse_pop3_auth(&args.from_auth)?,
            tls: TlsOptions { pin: args.pins.from_tls_pin, ..tls.clone() },
        };
        let target = Target::Imap(ImapEndpoint {
            host: to.host,
            port: to.port,
            security: to_security,
            username: to.username,
            credential: to_credential,
            auth: to_auth,
            tls: TlsOptions { pin: args.pins.to_tls_pin, ..tls },
            folder: to.folder.unwrap_or_else(|| "INBOX".to_owned()),
            flags: args.flags.clone(),
        });
        let job = DrainJob::new(source, target, &options(args)?);
        Ok((job, args.state.clone()))
    })()
    .map_err(UsageError)
}

/// `--to archive:NAME`: the archive lives in `archive.root` (default `<data_dir>/archive`),
/// as for the service and `mailferry archive` (not beside `--state`).
async fn archive_job(args: &MigrateArgs, name: &str, loaded: &Loaded) -> anyhow::Result<(DrainJob, PathBuf)> {
    let from = endpoint_url::parse(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    if from.protocol != Protocol::Pop3 {
        bail!("--from must be a pop3s:// or pop3:// URL");
    }
    if !Archives::valid_name(name) {
        bail!("--to archive:{name}: an archive name is 1-64 letters, digits, '.', '_' or '-'");
    }
    if !args.flags.is_empty() {
        bail!("--flag applies to IMAP destinations only");
    }
    if args.pins.to_tls_pin.is_some() {
        bail!("--to-tls-pin applies to IMAP destinations only");
    }
    let tls = client_tls::tls_options(args.ca_file.as_deref(), args.insecure, args.allow_plaintext, loaded)?;
    let from_secret = secret("source", "--from", args.from_password_env.as_deref(), args.from_password_file.as_ref())?;
    let archives = crate::archive_cmd::cli_archives(loaded)?;
    let archive = crate::archive_cmd::open_for_writing(&archives, name).await?;
    let security = from.security_with(args.allow_plaintext);
    let source = Pop3Endpoint {
        host: from.host,
        port: from.port,
        security,
        username: from.username,
        secret: from_secret,
        auth: parse_pop3_auth(&args.from_auth)?,
        tls: TlsOptions { pin: args.pins.from_tls_pin, ..tls },
    };
    let target = Target::Archive(ArchiveTarget { name: name.to_owned(), archive });
    let job = DrainJob::new(source, target, &options(args)?);
    Ok((job, args.state.clone()))
}

/// The job options the flags give.
fn options(args: &MigrateArgs) -> anyhow::Result<JobOptions> {
    Ok(JobOptions {
        delete: args.delete.parse::<DeletePolicy>()?,
        dry_run: args.dry_run,
        max_message_bytes: args.max_message_bytes,
        verify: args.verify,
    })
}

fn parse_pop3_auth(s: &str) -> anyhow::Result<Pop3Auth> {
    Ok(match s {
        "auto" => Pop3Auth::Auto,
        "user" => Pop3Auth::User,
        "apop" => Pop3Auth::Apop,
        "plain" => Pop3Auth::Plain,
        "xoauth2" => Pop3Auth::Xoauth2,
        _ => bail!("--from-auth {s:?}: expected auto, user, apop, plain or xoauth2"),
    })
}

fn parse_imap_auth(s: &str) -> anyhow::Result<ImapAuth> {
    Ok(match s {
        "auto" => ImapAuth::Auto,
        "login" => ImapAuth::Login,
        "plain" => ImapAuth::Plain,
        "xoauth2" => ImapAuth::Xoauth2,
        _ => bail!("--to-auth {s:?}: expected auto, login, plain or xoauth2"),
    })
}

/// Passwords come from the environment or a file, never from argv (visible in `ps`).
fn secret(side: &str, flag: &str, env: Option<&str>, file: Option<&PathBuf>) -> anyhow::Result<SecretString> {
    let what = format!("{side} password");
    match env_or_file(&what, env, file)? {
        Some(value) => Ok(value),
        None => bail!("no {side} password: use {flag}-password-env VAR or {flag}-password-file FILE"),
    }
}

/// The destination's password, or with --to-oauth2-token-url an OAuth2 refresh-token grant
/// (then XOAUTH2). Secrets only from the environment or files, never argv.
fn destination_credential(args: &MigrateArgs, tls: &TlsOptions) -> anyhow::Result<(Credential, ImapAuth)> {
    let auth = parse_imap_auth(&args.to_auth)?;
    let Some(token_url) = args.oauth2.to_oauth2_token_url.clone().filter(|u| !u.is_empty()) else {
        let password = secret("destination", "--to", args.to_password_env.as_deref(), args.to_password_file.as_ref())?;
        return Ok((Credential::Password(password), auth));
    };
    if args.to_password_env.is_some() || args.to_password_file.is_some() {
        bail!("--to-oauth2-token-url replaces the destination password: drop --to-password-env/--to-password-file");
    }
    if !matches!(auth, ImapAuth::Auto | ImapAuth::Xoauth2) {
        bail!("--to-oauth2-token-url logs in with XOAUTH2: drop --to-auth {}", args.to_auth);
    }
    let url = url::Url::parse(&token_url).map_err(|_| anyhow::anyhow!("--to-oauth2-token-url {token_url:?} is not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if args.allow_plaintext => {}
        "http" => bail!("--to-oauth2-token-url: http:// sends the refresh token in the clear; use https:// (or --allow-plaintext)"),
        other => bail!("--to-oauth2-token-url: unsupported scheme {other:?}, use https://"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--to-oauth2-token-url must not hold credentials: use --to-oauth2-client-id and the client secret variable");
    }
    let Some(client_id) = args.oauth2.to_oauth2_client_id.clone().filter(|c| !c.is_empty()) else {
        bail!("--to-oauth2-token-url needs --to-oauth2-client-id");
    };
    let refresh_env = args.oauth2.to_oauth2_refresh_token_env.as_deref();
    let refresh_token = env_or_file("OAuth2 refresh token", refresh_env, args.oauth2.to_oauth2_refresh_token_file.as_ref())?
        .context("no OAuth2 refresh token: use --to-oauth2-refresh-token-env VAR or --to-oauth2-refresh-token-file FILE")?;
    let secret_env = args.oauth2.to_oauth2_client_secret_env.as_deref();
    let client_secret = env_or_file("OAuth2 client secret", secret_env, args.oauth2.to_oauth2_client_secret_file.as_ref())?;
    let grant = OAuth2Refresh {
        token_url,
        client_id,
        client_secret,
        refresh_token,
        scope: args.oauth2.to_oauth2_scope.clone().filter(|s| !s.is_empty()),
        tls: tls.clone(),
    };
    Ok((Credential::OAuth2(OAuth2Credential::Refresh(Box::new(grant))), ImapAuth::Xoauth2))
}

fn crate_telemetry(json: bool, log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    // `log.filter` was validated when the config was loaded.
    let filter = EnvFilter::try_new(log.filter.as_deref().unwrap_or("warn")).unwrap_or_else(|_| EnvFilter::new("warn"));
    // async-imap traces every command and reply verbatim (LOGIN with its password, message
    // bodies): cap it whatever the user asked for, so logs stay safe to ship.
    let filter = filter.add_directive("async_imap=info".parse().expect("valid directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let pretty = match log.format {
        LogFormat::Pretty => true,
        LogFormat::Json => false,
        LogFormat::Auto => std::io::stderr().is_terminal(),
    };
    if json || !pretty {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

async fn show_progress(mut rx: watch::Receiver<Progress>) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    while rx.changed().await.is_ok() {
        let p = rx.borrow().clone();
        bar.set_length(p.to_copy);
        bar.set_position(p.copied + p.skipped + p.failed);
        bar.set_message(format!("{:.1} MB, {} skipped, {} failed", p.bytes as f64 / 1e6, p.skipped, p.failed));
    }
    bar.finish_and_clear();
}

fn print_report(report: &RunReport, json: bool) {
    let s = &report.summary;
    if json {
        let mut value = serde_json::to_value(s).unwrap_or_default();
        value["outcome"] = serde_json::json!(report.outcome);
        value["job"] = serde_json::json!(report.job);
        value["run"] = serde_json::json!(report.run);
        println!("{value}");
        return;
    }
    let verb = if s.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} of {} messages ({:.1} MB); {} already at the destination, {} skipped, {} failed, {} {}deleted at the source",
        s.copied,
        s.listed,
        s.bytes as f64 / 1e6,
        s.already_present,
        s.skipped,
        s.failed,
        s.deleted,
        if s.dry_run { "would be " } else { "" },
    );
    for f in &s.skips {
        println!("  skipped {}: {}", f.uidl, f.error);
    }
    for f in &s.failures {
        println!("  failed {}: {}", f.uidl, f.error);
    }
    for f in &s.reused {
        println!("  reused UIDL {}: {}", f.uidl, f.error);
    }
}

fn report_error(e: &EngineError, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "outcome": "failed", "error": e.to_string() }));
    }
    eprintln!("error: {e}");
}
