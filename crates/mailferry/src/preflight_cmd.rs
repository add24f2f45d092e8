//! `mailferry preflight`: check mailboxes before migrating them (issue 17), changing
//! nothing. `--from … --to …` checks one mailbox (the endpoint flags of `migrate`);
//! `--batch FILE.csv` every row of a batch file (the columns of `POST /api/v1/batches`).
//! `--json` prints what the API answers; otherwise a table. Exit status: 0 when every
//! mailbox is `ready` or `warning`, 3 when any is `blocked`, 2 for bad arguments.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use mailferry_engine::preflight::{job_of_spec, Preflight, SpecEnv, Throughput};
use mailferry_model::preflight::{BatchPreflight, MailboxPreflight, PreflightRow, Verdict};
use mailferry_model::{HostList, Sealer};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::client_tls::env_or_file;
use crate::config::Loaded;
use crate::endpoint_url::{self, Protocol};
use crate::exit;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// A batch file (CSV, the columns of POST /api/v1/batches); instead of --from/--to.
    #[arg(long, value_name = "FILE.csv", conflicts_with_all = ["from", "to"])]
    batch: Option<PathBuf>,
    /// Source mailbox: pop3s://USER@HOST[:PORT] (implicit TLS) or pop3://USER@HOST[:PORT] (STLS).
    #[arg(long, value_name = "URL", required_unless_present = "batch", requires = "to")]
    from: Option<String>,
    /// Destination: imaps://USER@HOST[:PORT][/FOLDER], imap://… (STARTTLS), or archive:NAME.
    #[arg(long, value_name = "URL", required_unless_present = "batch")]
    to: Option<String>,
    /// Environment variable holding the source password.
    #[arg(long, value_name = "VAR", conflicts_with = "from_password_file")]
    from_password_env: Option<String>,
    /// File holding the source password (first line).
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Environment variable holding the destination password.
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
    /// Permit pop3:// and imap:// without TLS when the server offers no STLS/STARTTLS.
    #[arg(long)]
    allow_plaintext: bool,
    /// Extra CA certificate(s), PEM, trusted for both servers.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Accept the source server's certificate only with this SHA-256 (sha256:HEX).
    #[arg(long, value_name = "sha256:HEX")]
    from_tls_pin: Option<String>,
    /// Accept the destination server's certificate only with this SHA-256 (sha256:HEX).
    #[arg(long, value_name = "sha256:HEX")]
    to_tls_pin: Option<String>,
    /// Messages larger than this many bytes would be skipped (reported).
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<u64>,
    /// Print the report as JSON (the API's shape).
    #[arg(long)]
    json: bool,
}

/// How `serve`'s API runs preflights: the workers' protocol options, caps and CA roots.
pub fn api_settings(settings: &Settings) -> mailferry_api::handlers::v1::preflight::PreflightSettings {
    mailferry_api::handlers::v1::preflight::PreflightSettings {
        run: Preflight {
            engine: settings.engine.clone(),
            per_host: settings.per_host_limit as usize,
            workers: settings.worker_concurrency,
            throughput: Throughput::default(),
        },
        extra_roots_pem: settings.ca_pem.clone(),
    }
}

/// A usage problem (exit 2), as opposed to a failure to run (exit 1).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub async fn run(args: PreflightArgs, loaded: &Loaded) -> u8 {
    match run_inner(&args, loaded).await {
        Ok(blocked) => {
            if blocked {
                exit::SOME_FAILED
            } else {
                exit::OK
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() || e.downcast_ref::<crate::config::ConfigError>().is_some() {
                exit::USAGE
            } else {
                exit::COULD_NOT_PROCEED
            }
        }
    }
}

/// Whether any mailbox is blocked.
async fn run_inner(args: &PreflightArgs, loaded: &Loaded) -> anyhow::Result<bool> {
    let w = &loaded.config.worker;
    // The secrets are sealed and opened again in memory only (the API's validation path),
    // under a key that lives as long as this command.
    let sealer = Sealer::from_hex(&Sealer::generate_hex()).context("making a session key")?;
    let ca = match &args.ca_file {
        Some(f) => Some(std::fs::read(f).map_err(|e| Usage(format!("cannot read --ca-file {}: {e}", f.display())))?),
        None => None,
    };
    let mut api = mailferry_api::ApiConfig::default();
    let env = SpecEnv {
        sealer: sealer.clone(),
        extra_roots_pem: ca,
        plaintext_allowed: Arc::new(|_: &str| false),
        network: crate::settings::cli_network_policy(loaded)?,
        archives: Arc::new(crate::settings::archives(loaded)?),
    };
    let preflight = Preflight {
        engine: mailferry_engine::EngineConfig::default(),
        per_host: w.per_host_limit as usize,
        workers: w.concurrency,
        throughput: Throughput::default(),
    };
    let report = if let Some(file) = &args.batch {
        let bytes = std::fs::read(file).map_err(|e| Usage(format!("cannot read {}: {e}", file.display())))?;
        api.plaintext_allow = if args.allow_plaintext { vec!["0.0.0.0/0".into(), "::/0".into()] } else { vec![] };
        let env = SpecEnv { plaintext_allowed: plaintext(&api), ..env };
        let rows = mailferry_api::handlers::v1::preflight::specs_from_csv(&bytes, &api, &sealer)
            .map_err(|e| Usage(format!("{}: {e}", file.display())))?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (row, spec) in rows {
            let job = match spec {
                Ok(spec) => job_of_spec(&spec, &env).await,
                Err(errs) => Err(mailferry_model::preflight::Reason {
                    code: mailferry_model::preflight::ReasonCode::InvalidRow,
                    detail: errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
                }),
            };
            jobs.push((row, job));
        }
        preflight.batch(jobs).await
    } else {
        let (body, hosts) = single_body(args)?;
        api.plaintext_allow = if args.allow_plaintext { hosts } else { vec![] };
        let env = SpecEnv { plaintext_allowed: plaintext(&api), ..env };
        let body = serde_json::from_value(body).map_err(|e| Usage(format!("invalid arguments: {e}")))?;
        let spec = mailferry_api::spec::validate(body, &api, &sealer).map_err(|errs| {
            Usage(errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))
        })?;
        let one = match job_of_spec(&spec, &env).await {
            Ok(job) => preflight.mailbox(&job).await,
            Err(reason) => mailferry_engine::preflight::blocked(reason),
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&one).context("printing JSON")?);
            return Ok(one.verdict == Verdict::Blocked);
        }
        let totals = mailferry_engine::preflight::totals(&[], &[], 1, 1);
        BatchPreflight { rows: vec![PreflightRow { row: 1, preflight: one }], totals }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("printing JSON")?);
    } else {
        print_table(&report, args.batch.is_some());
    }
    Ok(report.rows.iter().any(|r| r.preflight.verdict == Verdict::Blocked))
}

fn plaintext(api: &mailferry_api::ApiConfig) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    let allow = HostList::parse(api.plaintext_allow.iter().map(String::as_str)).unwrap_or_default();
    Arc::new(move |host: &str| allow.contains(host))
}

/// A job body for `--from`/`--to`, as `POST /jobs` takes it; and the hosts (for
/// `--allow-plaintext`).
fn single_body(args: &PreflightArgs) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        return Err(Usage("give --from and --to, or --batch".into()).into());
    };
    let src = endpoint_url::parse(from).map_err(|e| Usage(format!("--from: {e}")))?;
    if src.protocol != Protocol::Pop3 {
        return Err(Usage("--from is a pop3s:// or pop3:// URL".into()).into());
    }
    let secret = |what: &str, env: &Option<String>, file: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        Ok(env_or_file(what, env.as_deref(), file.as_ref()).map_err(|e| Usage(format!("{e:#}")))?.map(|s| s.expose_secret().to_owned()))
    };
    let from_password = secret("source password", &args.from_password_env, &args.from_password_file)?
        .ok_or_else(|| Usage("give --from-password-env or --from-password-file".into()))?;
    let mut hosts = vec![src.host.clone()];
    let source = json!({
        "host": src.host, "port": src.port, "security": src.security_with(args.allow_plaintext),
        "username": src.username, "password": from_password, "auth": args.from_auth, "tls_pin": args.from_tls_pin,
    });
    let target = if let Some(name) = to.strip_prefix("archive:") {
        json!({"protocol": "archive", "archive": name})
    } else {
        let dst = endpoint_url::parse(to).map_err(|e| Usage(format!("--to: {e}")))?;
        if dst.protocol != Protocol::Imap {
            return Err(Usage("--to is an imaps:// or imap:// URL, or archive:NAME".into()).into());
        }
        let password = secret("destination password", &args.to_password_env, &args.to_password_file)?
            .ok_or_else(|| Usage("give --to-password-env or --to-password-file".into()))?;
        hosts.push(dst.host.clone());
        json!({
            "protocol": "imap", "host": dst.host, "port": dst.port, "security": dst.security_with(args.allow_plaintext),
            "username": dst.username, "password": password, "auth": args.to_auth,
            "folder": dst.folder.unwrap_or_else(|| "INBOX".into()), "tls_pin": args.to_tls_pin,
        })
    };
    let options = json!({"max_message_bytes": args.max_message_bytes});
    Ok((json!({"source": source, "target": target, "options": options}), hosts))
}

fn print_table(report: &BatchPreflight, batch: bool) {
    println!("{:>4}  {:<8}  {:>9}  {:>12}  {:>8}  source -> target", "row", "verdict", "messages", "bytes", "secs");
    for r in &report.rows {
        let p: &MailboxPreflight = &r.preflight;
        println!(
            "{:>4}  {:<8}  {:>9}  {:>12}  {:>8}  {} -> {}",
            r.row,
            p.verdict.as_str(),
            p.source.messages,
            p.source.bytes,
            p.estimate_secs,
            p.source.endpoint,
            p.target.endpoint
        );
        for reason in &p.reasons {
            println!("      {}: {}", reason.code.as_str(), reason.detail);
        }
    }
    if batch {
        let t = &report.totals;
        println!(
            "totals: {} ready, {} warning, {} blocked; {} messages, {} bytes; about {} s",
            t.ready, t.warning, t.blocked, t.messages, t.bytes, t.estimate_secs
        );
    }
}
