//! `mailferry receipt` (issue 14): what an auditor runs on a receipt.
//!
//! - `public-key`: the installation's receipt key (base64), to hand to auditors.
//! - `verify FILE [--public-key KEY]`: offline, the signature, every entry against its
//!   leaf, the Merkle root and the counts ([`mailferry_proof::check_receipt`]). With
//!   `--against imaps://USER@HOST/FOLDER`, also every copy the receipt places in that
//!   folder read back by UID and compared with the digest the receipt records.
//! - `prove FILE UIDL`: one message's inclusion proof (RFC 9162 audit path), JSON.
//!
//! Exit status (a contract): 0 valid; 3 the receipt, or the destination, does not match
//! (also a FILE that is not a receipt at all, and a UIDL it does not hold); 2 usage (a FILE
//! that cannot be read, a bad key, bad flags, configuration); 1 the destination could not
//! be checked (unreachable, authentication failed).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mailferry_imap::{Appender, ImapOptions, ImapSession, ReadBack};
use mailferry_model::{Credential, ImapAuth, ImapEndpoint};
use mailferry_proof::{check_receipt, KeyChoice, PublicKey, Receipt, ReceiptEntry, Verdict};

use crate::client_tls::{env_or_file, TlsFlags};
use crate::config::Loaded;
use crate::endpoint_url::{self, Protocol};
use crate::exit;

/// Copies compared per round: one `UID FETCH RFC822.SIZE` and one read-back (itself one
/// `UID FETCH BODY.PEEK[]` per 256 UIDs, hashed as it streams), so a round holds sizes and
/// digests for this many messages, never their bodies.
const BATCH: usize = 256;

/// Ledger states in which the copy is at the destination.
const HELD: [&str; 3] = ["copied", "verified", "source-deleted"];

const EMBEDDED_KEY_NOTE: &str = "note: checked with the key inside the receipt; pass --public-key to check who signed it";

#[derive(Debug, Args)]
pub struct ReceiptArgs {
    #[command(subcommand)]
    command: ReceiptCommand,
}

#[derive(Debug, Subcommand)]
enum ReceiptCommand {
    /// Print the installation's receipt public key (base64), to give to auditors.
    PublicKey(PublicKeyArgs),
    /// Check a receipt: its signature, every entry against its leaf, the Merkle root and
    /// the counts; with --against, also every copy at the destination, byte for byte.
    Verify(VerifyArgs),
    /// Print one message's inclusion proof (JSON): its entry, leaf, audit path and root.
    Prove(ProveArgs),
}

#[derive(Debug, Args)]
struct PublicKeyArgs {
    /// The key `mailferry migrate --state PATH` signs with (it lives beside that ledger);
    /// without it, the service's key under the data dir. Both are the same by default.
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The receipt (JSON), as `migrate --receipt` or the API wrote it.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The installation's public key (base64, or a file holding it): checks who signed.
    /// Without it the key inside the receipt is used, which proves integrity only.
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
    /// Also read each copy back from this IMAP folder: imaps://USER@HOST[:PORT][/FOLDER]
    /// or imap://… (STARTTLS); the folder defaults to INBOX, is opened read-only (EXAMINE) and never created.
    #[arg(long, value_name = "URL")]
    against: Option<String>,
    /// Environment variable holding the --against password.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// File holding the --against password (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
}

#[derive(Debug, Args)]
struct ProveArgs {
    /// The receipt (JSON).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The message's UIDL at the source.
    #[arg(value_name = "UIDL")]
    uidl: String,
    /// Check the receipt's signature with this key (base64, or a file holding it).
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
}

pub async fn run(args: ReceiptArgs, loaded: &Loaded) -> u8 {
    let result = match args.command {
        ReceiptCommand::PublicKey(PublicKeyArgs { state }) => match match &state {
            Some(state) => {
                let dir = state.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                crate::settings::receipt_signer_in(loaded, dir)
            }
            None => crate::settings::receipt_signer(loaded),
        } {
            Ok(signer) => {
                println!("{}", signer.public_key().to_base64());
                Ok(exit::OK)
            }
            Err(e) => Err(fail(exit::USAGE, format!("{e:#}"))),
        },
        ReceiptCommand::Verify(args) => verify(args, loaded).await,
        ReceiptCommand::Prove(args) => prove(args),
    };
    result.unwrap_or_else(|code| code)
}

/// Say why on stderr; the exit status to end with.
fn fail(code: u8, why: impl Display) -> u8 {
    eprintln!("error: {why}");
    code
}

/// An unreadable FILE is a usage error; a FILE that is not a receipt is an invalid receipt.
fn load(file: &Path) -> Result<Receipt, u8> {
    let bytes = std::fs::read(file).map_err(|e| fail(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
    Receipt::parse(&bytes).map_err(|e| fail(exit::SOME_FAILED, format!("{} is not a valid receipt: {e}", file.display())))
}

/// `--public-key`: base64, or the path of a file holding it.
fn given_key(arg: Option<&str>) -> Result<Option<PublicKey>, u8> {
    let Some(text) = arg else { return Ok(None) };
    let not_base64 = match PublicKey::parse(text) {
        Ok(key) => return Ok(Some(key)),
        Err(e) => e,
    };
    match std::fs::read_to_string(text) {
        Ok(content) => PublicKey::parse(&content)
            .map(Some)
            .map_err(|e| fail(exit::USAGE, format!("--public-key {text}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(fail(exit::USAGE, format!("--public-key: {not_base64}, and no file has that name")))
        }
        Err(e) => Err(fail(exit::USAGE, format!("--public-key: cannot read {text}: {e}"))),
    }
}

fn key_used(r: &Receipt, given: Option<&PublicKey>, verdict: &Verdict) -> String {
    match (&verdict.key, given) {
        (KeyChoice::Given, Some(k)) => format!("signed by the given key {}", k.to_base64()),
        _ => format!("signed by the key inside the receipt {}", r.public_key),
    }
}

async fn verify(args: VerifyArgs, loaded: &Loaded) -> Result<u8, u8> {
    if args.against.is_none() && (args.password_env.is_some() || args.password_file.is_some() || args.tls.any()) {
        return Err(fail(
            exit::USAGE,
            "--password-env, --password-file, --ca-file, --insecure and --allow-plaintext go with --against",
        ));
    }
    let key = given_key(args.public_key.as_deref())?;
    // Every usage problem before any work: the destination's URL, password and TLS flags.
    let target = match &args.against {
        Some(url) => Some(destination(url, &args, loaded).map_err(|e| fail(exit::USAGE, format!("{e:#}")))?),
        None => None,
    };
    let receipt = load(&args.file)?;
    let verdict = check_receipt(&receipt, key.as_ref());
    if key.is_none() {
        eprintln!("{EMBEDDED_KEY_NOTE}");
    }
    let h = &receipt.header;
    if !verdict.is_valid() {
        println!("invalid: job {}, run {}: {} problem(s)", h.job, h.run, verdict.findings.len());
        for f in &verdict.findings {
            println!("  {f}");
        }
        if target.is_some() {
            eprintln!("the destination was not checked: the receipt itself does not verify");
        }
        return Ok(exit::SOME_FAILED);
    }
    println!(
        "valid: job {}, run {}, {} entries, merkle root {}, {}",
        h.job,
        h.run,
        receipt.entries.len(),
        h.merkle_root,
        key_used(&receipt, key.as_ref(), &verdict)
    );
    match target {
        Some(target) => check_destination(&receipt, target).await,
        None => Ok(exit::OK),
    }
}

/// Where `--against` points: the session logs in to INBOX, which always exists (RFC 3501
/// §5.1), so connecting creates nothing; the folder itself is then examined read-only.
#[derive(Debug)]
struct Destination {
    endpoint: ImapEndpoint,
    folder: String,
}

impl Destination {
    fn label(&self) -> String {
        let ep = &self.endpoint;
        format!("imap {}@{}:{}/{}", ep.username, ep.host, ep.port, self.folder)
    }

    /// Host, account and folder: the port may differ (993 for a migration, 143 with
    /// STARTTLS for the check) and still name the same folder.
    fn holds(&self, d: &mailferry_proof::DestinationRef) -> bool {
        let inbox = |f: &str| f.eq_ignore_ascii_case("INBOX");
        d.host.eq_ignore_ascii_case(&self.endpoint.host)
            && d.account == self.endpoint.username
            && (d.folder == self.folder || (inbox(&d.folder) && inbox(&self.folder)))
    }
}

fn destination(url: &str, args: &VerifyArgs, loaded: &Loaded) -> anyhow::Result<Destination> {
    let u = endpoint_url::parse(url).map_err(|e| anyhow::anyhow!("--against: {e}"))?;
    if u.protocol != Protocol::Imap {
        bail!("--against must be an imaps:// or imap:// URL");
    }
    let tls = args.tls.options(loaded)?;
    let password = env_or_file("destination password", args.password_env.as_deref(), args.password_file.as_ref())?
        .context("no destination password: use --password-env VAR or --password-file FILE")?;
    let security = u.security_with(args.tls.allow_plaintext);
    Ok(Destination {
        folder: u.folder.unwrap_or_else(|| "INBOX".to_owned()),
        endpoint: ImapEndpoint {
            host: u.host,
            port: u.port,
            security,
            username: u.username,
            credential: Credential::Password(password),
            auth: ImapAuth::Auto,
            tls,
            folder: "INBOX".to_owned(),
            flags: Vec::new(),
        },
    })
}

/// One copy to compare: its entry and its UID.
type Copy<'a> = (&'a ReceiptEntry, u32);

/// What the destination showed.
#[derive(Debug, Default)]
struct Report {
    uid_validity: Option<u32>,
    matched: u64,
    /// Missing or changed copies, each a line naming its entry, UIDL and UID.
    problems: Vec<String>,
    /// Copies that could not be compared, and why.
    unchecked: Vec<String>,
}

fn named(e: &ReceiptEntry, uid: u32) -> String {
    format!("entry {} (UIDL {:?}) UID {uid}", e.seq, e.source.uidl)
}

/// The digest the copy had when the run read it back, else the digest of what was sent.
fn recorded(e: &ReceiptEntry) -> Option<&str> {
    e.readback_sha256.as_deref().or(e.sent_sha256.as_deref())
}

async fn check_destination(r: &Receipt, d: Destination) -> Result<u8, u8> {
    let label = d.label();
    let mut todo: Vec<Copy> = Vec::new();
    let mut elsewhere: BTreeMap<String, u64> = BTreeMap::new();
    let mut report = Report::default();
    for e in r.entries.iter().map(|l| &l.entry).filter(|e| HELD.contains(&e.status.as_str())) {
        let Some(dest) = &e.destination else { continue };
        if !d.holds(dest) {
            *elsewhere.entry(format!("imap {}@{}:{}/{}", dest.account, dest.host, dest.port, dest.folder)).or_default() += 1;
            continue;
        }
        match dest.uid {
            Some(uid) => todo.push((e, uid)),
            None => report.unchecked.push(format!(
                "entry {} (UIDL {:?}): no destination UID recorded (the destination lacked UIDPLUS)",
                e.seq, e.source.uidl
            )),
        }
    }
    if !todo.is_empty() {
        let session = ImapSession::connect(&d.endpoint, &ImapOptions::default())
            .await
            .map_err(|e| fail(exit::COULD_NOT_PROCEED, format!("cannot check {label}: {e}")))?;
        let mut appender = session.into_appender();
        let compared = compare(&mut appender, &d.folder, &todo, &mut report).await;
        appender.logout().await;
        compared.map_err(|e| fail(exit::COULD_NOT_PROCEED, format!("checking {label}: {e}")))?;
    }
    for p in &report.problems {
        println!("{p}");
    }
    for u in &report.unchecked {
        println!("not checked: {u}");
    }
    for (place, n) in &elsewhere {
        println!("not checked (another destination): {n} copies at {place}");
    }
    let validity = report.uid_validity.map(|v| format!(" (UIDVALIDITY {v})")).unwrap_or_default();
    println!(
        "{label}{validity}: {} copies checked, {} match, {} missing or changed",
        todo.len(),
        report.matched,
        report.problems.len()
    );
    if todo.is_empty() {
        eprintln!("note: the receipt places no copy with a UID in {label}");
    }
    Ok(if report.problems.is_empty() { exit::OK } else { exit::SOME_FAILED })
}

/// Read `todo` back from `folder` (examined, never created) and compare, into `report`.
async fn compare(a: &mut Appender, folder: &str, todo: &[Copy<'_>], report: &mut Report) -> mailferry_imap::Result<()> {
    let Some(examined) = a.examine(folder).await? else {
        for (e, uid) in todo {
            report.problems.push(format!("missing  {}: the folder {folder:?} does not exist", named(e, *uid)));
        }
        return Ok(());
    };
    report.uid_validity = examined.uid_validity;
    // RFC 3501 §2.3.1.1: under another UIDVALIDITY the UIDs name other messages, or none.
    let (same, changed): (Vec<Copy>, Vec<Copy>) = todo.iter().partition(|(e, _)| {
        let recorded = e.destination.as_ref().and_then(|d| d.uidvalidity);
        recorded.is_none() || recorded == examined.uid_validity
    });
    for (e, uid) in changed {
        let was = e.destination.as_ref().and_then(|d| d.uidvalidity).unwrap_or_default();
        let now = examined.uid_validity.map_or("none".to_owned(), |v| v.to_string());
        report.problems.push(format!(
            "missing  {}: the folder's UIDVALIDITY is {now}, the receipt's {was}: the folder was recreated",
            named(e, uid)
        ));
    }
    for batch in same.chunks(BATCH) {
        let uids: Vec<u32> = batch.iter().map(|c| c.1).collect();
        let sizes: HashMap<u32, u64> = a.sizes(&uids).await?.into_iter().collect();
        let present: Vec<(u32, u64)> = uids.iter().filter_map(|u| sizes.get(u).map(|s| (*u, *s))).collect();
        let mut read: HashMap<u32, ReadBack> = a.read_back(&present).await?.into_iter().map(|r| (r.uid, r)).collect();
        let matches = |e: &ReceiptEntry, r: &ReadBack| recorded(e).is_some_and(|want| r.sha256.eq_ignore_ascii_case(want));
        // A message with NUL bytes went out as a literal8 and was read back with
        // BINARY.PEEK[] (RFC 3516; engine verify.rs): read a mismatch that way once more.
        let again: Vec<(u32, u64)> = batch
            .iter()
            .filter(|(e, uid)| read.get(uid).is_some_and(|r| recorded(e).is_some() && !matches(e, r)))
            .map(|(_, uid)| (*uid, sizes[uid]))
            .collect();
        if !again.is_empty() && a.has_binary() {
            for r in a.read_back_binary(&again).await? {
                if batch.iter().any(|(e, uid)| *uid == r.uid && matches(e, &r)) {
                    read.insert(r.uid, r);
                }
            }
        }
        for &(e, uid) in batch {
            match (read.get(&uid), recorded(e)) {
                (None, _) => report.problems.push(format!("missing  {}: no such message in {folder:?}", named(e, uid))),
                (Some(_), None) => report.unchecked.push(format!("{}: the receipt records no digest", named(e, uid))),
                (Some(r), Some(_)) if matches(e, r) => report.matched += 1,
                (Some(r), Some(want)) => report.problems.push(format!(
                    "changed  {}: read back {} bytes sha256 {}, the receipt records sha256 {want}",
                    named(e, uid),
                    r.size,
                    r.sha256
                )),
            }
        }
    }
    Ok(())
}

fn prove(args: ProveArgs) -> Result<u8, u8> {
    let key = given_key(args.public_key.as_deref())?;
    let receipt = load(&args.file)?;
    let Some(proof) = mailferry_proof::check::prove(&receipt, &args.uidl) else {
        return Err(fail(exit::SOME_FAILED, format!("{} holds no entry with UIDL {:?}", args.file.display(), args.uidl)));
    };
    let json = serde_json::to_string_pretty(&proof).map_err(|e| fail(exit::COULD_NOT_PROCEED, e))?;
    println!("{json}");
    let verdict = check_receipt(&receipt, key.as_ref());
    if key.is_none() {
        eprintln!("{EMBEDDED_KEY_NOTE}");
    }
    let signed_root = proof.merkle_root.eq_ignore_ascii_case(&receipt.header.merkle_root);
    if verdict.is_valid() && signed_root {
        return Ok(exit::OK);
    }
    eprintln!("warning: the receipt does not verify, so this proof proves nothing:");
    for f in &verdict.findings {
        eprintln!("  {f}");
    }
    if !signed_root {
        eprintln!("  the proof's root {} is not the signed root {}", proof.merkle_root, receipt.header.merkle_root);
    }
    Ok(exit::SOME_FAILED)
}
