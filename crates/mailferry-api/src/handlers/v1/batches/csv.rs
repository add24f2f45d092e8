//! CSV batches: the header row matched to our columns (and to imapsync's and Microsoft
//! 365's names for them), the batch's servers given once, and each data row made into a
//! job body that [`crate::spec::validate`] then judges as it judges `POST /jobs`.
//!
//! Three spellings of one file are accepted, case-insensitively, with `,` or `;` between
//! cells (detected from the header):
//! - ours: `source_host, source_user, source_password, target_host, target_user, …`;
//! - imapsync's: `host1, user1, password1, host2, user2, password2` (and `port1`, `port2`);
//! - Microsoft 365's IMAP migration file: `EmailAddress, UserName, Password`, where
//!   `EmailAddress` is the destination mailbox and `UserName`/`Password` the source login.
//!   The servers are not in that file; they are given once for the batch
//!   (`?source=pop3s://host:995&target=imaps://host:993` or `target=archive:NAME`).
//!
//! Names of every kind may be mixed in one header. An unknown column refuses the batch
//! (422 naming it), and so does a missing required one; a bad cell is an error of its row
//! only, named by the column as the file spells it (or by `source` / `target` when the
//! value came from the batch's server).

use std::collections::{BTreeMap, HashSet};

use mailferry_model::{ImapAuth, Pop3Auth, Security};
use secrecy::SecretString;

use crate::error::{ApiError, ApiResult, FieldError};
use crate::spec::{ArchiveTargetBody, ImapTargetBody, JobBody, OptionsBody, SourceBody, TargetBody, VerifyOption};

use super::MAX_BATCH_JOBS;

/// Canonical CSV columns and the other names they go by (after lower-casing, with spaces
/// and dashes read as `_`).
const COLUMNS: &[(&str, &[&str])] = &[
    ("source_host", &["host1"]),
    ("source_port", &["port1"]),
    ("source_security", &[]),
    // `username` / `password`: Microsoft 365's source login.
    ("source_user", &["user1", "source_username", "username"]),
    ("source_password", &["password1", "password"]),
    ("source_auth", &[]),
    ("source_tls_pin", &[]),
    ("target_kind", &["target_protocol"]),
    ("target_archive", &["archive"]),
    ("target_host", &["host2"]),
    ("target_port", &["port2"]),
    ("target_security", &[]),
    // `emailaddress`: Microsoft 365's destination mailbox.
    ("target_user", &["user2", "target_username", "emailaddress", "email_address"]),
    ("target_password", &["password2"]),
    ("target_folder", &["folder2"]),
    ("target_flags", &["flags"]),
    ("target_auth", &[]),
    ("target_tls_pin", &[]),
    ("delete", &["delete_policy"]),
    ("verify", &[]),
    ("dry_run", &[]),
    ("max_message_bytes", &["max_message_size"]),
    ("labels", &[]),
    // Issue 17: delta passes (the job body's `schedule`).
    ("schedule_every", &["every"]),
    ("schedule_not_before", &["not_before"]),
    ("schedule_until", &["until"]),
];

/// Columns only an IMAP target uses.
const IMAP_ONLY: [&str; 9] = [
    "target_host", "target_port", "target_security", "target_password", "target_folder", "target_flags", "target_auth",
    "target_tls_pin", "target_user",
];

/// The label an archive target keeps the destination mailbox (`EmailAddress`) under: an
/// archive has no login, but the admin's file names whose mail it is.
pub(crate) const ARCHIVE_MAILBOX_LABEL: &str = "mailbox";

/// The batch's source server, given once (`?source=pop3s://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceServer {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

/// The batch's target, given once: an IMAP server (`imaps://host:port[/folder]`) or an
/// archive (`archive:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetServer {
    Imap { host: String, port: u16, security: Security, folder: Option<String> },
    Archive(String),
}

/// What the batch gives once for every row: used where a row leaves the cells empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    pub source: Option<SourceServer>,
    pub target: Option<TargetServer>,
}

impl Defaults {
    /// `?source=` and `?target=`; problems are named by the parameter.
    pub(crate) fn parse(source: Option<&str>, target: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let source = source.filter(|s| !s.trim().is_empty()).and_then(|s| match server_url(s, &["pop3s", "pop3"]) {
            Ok((scheme, host, port, None)) => {
                let (security, default_port) = if scheme == "pop3s" { (Security::Tls, 995) } else { (Security::Starttls, 110) };
                Some(SourceServer { host, port: port.unwrap_or(default_port), security })
            }
            Ok(_) => {
                errs.push(FieldError::invalid("source", "source: a POP3 server has no folders: pop3s://host[:port]"));
                None
            }
            Err(e) => {
                errs.push(FieldError::invalid("source", format!("source: {e}")));
                None
            }
        });
        let target = target.filter(|s| !s.trim().is_empty()).and_then(|t| {
            if let Some(name) = t.trim().strip_prefix("archive:") {
                if name.is_empty() {
                    errs.push(FieldError::invalid("target", "target: archive:NAME needs the archive's name"));
                    return None;
                }
                // The name itself is checked with each row, as target.archive is.
                return Some(TargetServer::Archive(name.to_owned()));
            }
            match server_url(t, &["imaps", "imap"]) {
                Ok((scheme, host, port, folder)) => {
                    let (security, default_port) = if scheme == "imaps" { (Security::Tls, 993) } else { (Security::Starttls, 143) };
                    Some(TargetServer::Imap { host, port: port.unwrap_or(default_port), security, folder })
                }
                Err(e) => {
                    errs.push(FieldError::invalid("target", format!("target: {e}, or archive:NAME")));
                    None
                }
            }
        });
        if errs.is_empty() { Ok(Self { source, target }) } else { Err(errs) }
    }
}

/// `scheme://host[:port][/folder]` with one of `schemes`: the scheme, host, port and folder.
/// No user name or password: those are the rows' (and a password in a URL would be logged).
fn server_url(s: &str, schemes: &[&str]) -> Result<(String, String, Option<u16>, Option<String>), String> {
    let expected = || format!("expected {}://host[:port]", schemes[0]);
    let url = url::Url::parse(s.trim()).map_err(|_| expected())?;
    let scheme = url.scheme().to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(expected());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the user name and password are the rows' (UserName, Password), not the server's".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(expected());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(expected)?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let folder = url.path().strip_prefix('/').filter(|p| !p.is_empty());
    let folder = folder.map(percent_decode).transpose()?;
    Ok((scheme, host, url.port(), folder))
}

/// `%2F`-style escapes of a URL path (the folder's name), decoded as UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next(), bytes.next()];
        let digit = |d: Option<u8>| d.and_then(|d| char::from(d).to_digit(16));
        match (digit(hex[0]), digit(hex[1])) {
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => return Err("a bad %-escape in the folder name".into()),
        }
    }
    String::from_utf8(out).map_err(|_| "the folder name is not UTF-8".into())
}

pub(crate) type Row = Result<JobBody, Vec<FieldError>>;

/// A data row as a job body, with the problems of the CSV's own syntax (a port that is not
/// a number, a `dry_run` of `perhaps`: such cells are left out of the body), so that the
/// body's validation can report the rest of the row's problems beside them; or a row
/// unreadable as a whole.
pub(crate) type CsvRow = Result<(JobBody, Vec<FieldError>), Vec<FieldError>>;

/// A parsed CSV batch: one job body (or its errors) per data row, and what the errors
/// are to be named after.
#[derive(Debug)]
pub(crate) struct CsvBatch {
    pub rows: Vec<CsvRow>,
    /// Canonical column → its name in the file's header.
    header: BTreeMap<&'static str, String>,
    /// Per row: the columns whose value came from the batch's servers.
    defaulted: Vec<HashSet<&'static str>>,
}

impl CsvBatch {
    /// The name a row's problem with the job-body field `field` (`source.host`) goes by:
    /// the column as the file spells it, or `source` / `target` for a value the batch gave.
    pub(crate) fn field_name(&self, row: usize, field: &str) -> String {
        let column = csv_column(field);
        let canonical = COLUMNS.iter().map(|(c, _)| *c).find(|c| *c == column);
        let Some(canonical) = canonical else { return column };
        if self.defaulted.get(row).is_some_and(|d| d.contains(canonical)) {
            return if canonical.starts_with("source_") { "source".into() } else { "target".into() };
        }
        self.header.get(canonical).cloned().unwrap_or(column)
    }
}

/// The CSV column a job-body field comes from (canonical name).
pub(crate) fn csv_column(field: &str) -> String {
    let (head, _) = field.split_once('[').unwrap_or((field, ""));
    match head {
        "source.username" => "source_user".into(),
        "target.username" => "target_user".into(),
        "target.protocol" => "target_kind".into(),
        f if f.starts_with("options.") => f.trim_start_matches("options.").into(),
        f if f.starts_with("labels") => "labels".into(),
        f => f.replace('.', "_"),
    }
}

/// Parse a CSV batch without batch-level servers ([`parse_csv_with`]).
pub(crate) fn parse_csv(bytes: &[u8]) -> ApiResult<Vec<Row>> {
    let rows = parse_csv_with(bytes, &Defaults::default())?.rows;
    Ok(rows.into_iter().map(|r| r.and_then(|(body, errs)| if errs.is_empty() { Ok(body) } else { Err(errs) })).collect())
}

/// Parse a CSV batch into one job body (or field errors) per data row. Problems with the
/// header fail the whole batch.
pub(crate) fn parse_csv_with(bytes: &[u8], defaults: &Defaults) -> ApiResult<CsvBatch> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // Excel's UTF-8 BOM
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first_line.iter().filter(|b| **b == d).count();
    let delimiter = if count(b';') > count(b',') { b';' } else { b',' };
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(bytes);
    let header_error = |errors: Vec<FieldError>| ApiError::Validation { detail: "the CSV header row is invalid".into(), errors };
    let headers = reader
        .headers()
        .map_err(|e| header_error(vec![FieldError::invalid("header", format!("unreadable header row: {e}"))]))?
        .clone();
    let mut columns: Vec<&'static str> = Vec::with_capacity(headers.len());
    let mut header = BTreeMap::new();
    let mut errors = Vec::new();
    for h in headers.iter() {
        let norm = h.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        match COLUMNS.iter().find(|(c, aliases)| *c == norm || aliases.contains(&norm.as_str())) {
            Some((canonical, _)) if columns.contains(canonical) => {
                errors.push(FieldError::invalid(*canonical, format!("column {canonical} appears twice (as {h:?})")));
                columns.push("");
            }
            Some((canonical, _)) => {
                columns.push(canonical);
                header.insert(*canonical, h.trim().to_owned());
            }
            None => {
                let known: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
                errors.push(FieldError::invalid(h, format!(
                    "unknown column {h:?}; known columns: {} (and imapsync's host1, user1, password1, host2, user2, \
                     password2, or Microsoft 365's EmailAddress, UserName, Password)",
                    known.join(", ")
                )));
                columns.push("");
            }
        }
    }
    for r in required(&columns, defaults) {
        errors.push(FieldError::new(r, "required", format!("the required column {r} is missing{}", why_required(r))));
    }
    if !errors.is_empty() {
        return Err(header_error(errors));
    }
    let mut rows = Vec::new();
    let mut defaulted = Vec::new();
    for record in reader.records() {
        let (row, filled) = match record {
            Err(e) => (Err(vec![FieldError::invalid("", format!("unreadable row: {e}"))]), HashSet::new()),
            Ok(rec) if rec.len() != columns.len() => {
                let msg = format!("expected {} fields, found {}", columns.len(), rec.len());
                (Err(vec![FieldError::invalid("", msg)]), HashSet::new())
            }
            Ok(rec) => {
                let mut values: BTreeMap<&str, String> = columns
                    .iter()
                    .zip(rec.iter())
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(c, v)| (*c, v.to_owned()))
                    .collect();
                let archive = is_archive_row(&values, defaults);
                let filled = apply_defaults(&mut values, defaults, archive);
                (csv_row(&values, archive), filled)
            }
        };
        rows.push(row);
        defaulted.push(filled);
        if rows.len() > MAX_BATCH_JOBS {
            break;
        }
    }
    Ok(CsvBatch { rows, header, defaulted })
}

/// The columns the header must have, given what the batch supplies once. With a
/// `target_kind` column the target's columns are judged row by row.
fn required(columns: &[&str], defaults: &Defaults) -> Vec<&'static str> {
    let mut need = vec!["source_user", "source_password"];
    if defaults.source.is_none() {
        need.insert(0, "source_host");
    }
    let per_row_kind = columns.contains(&"target_kind") || columns.contains(&"target_archive");
    match &defaults.target {
        _ if per_row_kind => {}
        Some(TargetServer::Archive(_)) => {}
        Some(TargetServer::Imap { .. }) => need.extend(["target_user", "target_password"]),
        None => need.extend(["target_host", "target_user", "target_password"]),
    }
    need.into_iter().filter(|c| !columns.contains(c)).collect()
}

fn why_required(column: &str) -> &'static str {
    match column {
        "source_host" => " (or give the source server once: ?source=pop3s://host:port)",
        "target_host" => " (or give the target once: ?target=imaps://host:port or ?target=archive:NAME)",
        "target_password" => " (a Microsoft 365 file names no destination password: add the column, or ?target=archive:NAME)",
        _ => "",
    }
}

/// Fill the row's empty cells from the batch's servers; the columns so filled.
fn apply_defaults(v: &mut BTreeMap<&str, String>, d: &Defaults, archive: bool) -> HashSet<&'static str> {
    let mut filled = HashSet::new();
    let mut put = |v: &mut BTreeMap<&str, String>, column: &'static str, value: String| {
        if !v.contains_key(column) {
            v.insert(column, value);
            filled.insert(column);
        }
    };
    if let Some(s) = d.source.as_ref().filter(|_| !v.contains_key("source_host")) {
        put(v, "source_host", s.host.clone());
        put(v, "source_port", s.port.to_string());
        put(v, "source_security", security_name(s.security));
    }
    match &d.target {
        Some(TargetServer::Imap { host, port, security, folder }) if !archive && !v.contains_key("target_host") => {
            put(v, "target_host", host.clone());
            put(v, "target_port", port.to_string());
            put(v, "target_security", security_name(*security));
            if let Some(f) = folder {
                put(v, "target_folder", f.clone());
            }
        }
        Some(TargetServer::Archive(name)) if archive => put(v, "target_archive", name.clone()),
        _ => {}
    }
    filled
}

/// The JSON (and CSV cell) name of a security mode.
fn security_name(s: Security) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Whether the row's target is an archive: its `target_kind`, else the batch's target, else
/// whether it names an archive (a kind other than `imap` or `archive` is an error of the row).
fn is_archive_row(v: &BTreeMap<&str, String>, d: &Defaults) -> bool {
    match v.get("target_kind").map(|k| k.trim().to_ascii_lowercase()) {
        Some(k) => k == "archive",
        None => match &d.target {
            Some(TargetServer::Archive(_)) => true,
            Some(TargetServer::Imap { .. }) => false,
            None => v.contains_key("target_archive"),
        },
    }
}

/// One CSV row as a job body; values are trimmed except passwords (which may hold spaces).
/// Only the CSV's own syntax is checked here (numbers, yes/no, `k=v` lists, IMAP columns on
/// an archive row); every value is then validated as a JSON job body's is.
fn csv_row(v: &BTreeMap<&str, String>, archive: bool) -> CsvRow {
    let mut errs = Vec::new();
    let text = |c: &str| v.get(c).map(|s| s.trim().to_owned());
    let secret = |c: &str| v.get(c).map(|s| SecretString::from(s.clone()));
    let number = |c: &str, errs: &mut Vec<FieldError>| {
        v.get(c).and_then(|s| {
            let p = s.trim().parse::<i64>().ok();
            if p.is_none() {
                errs.push(FieldError::invalid(c, format!("{c} must be a number")));
            }
            p
        })
    };
    let (source_port, target_port) = (number("source_port", &mut errs), number("target_port", &mut errs));
    let source_security = enum_cell::<Security>(v, "source_security", &mut errs);
    let target_security = enum_cell::<Security>(v, "target_security", &mut errs);
    let source_auth = enum_cell::<Pop3Auth>(v, "source_auth", &mut errs);
    let target_auth = enum_cell::<ImapAuth>(v, "target_auth", &mut errs);
    let mut labels = BTreeMap::new();
    for pair in v.get("labels").map(|l| l.split(';')).into_iter().flatten().filter(|p| !p.trim().is_empty()) {
        match pair.split_once('=') {
            Some((k, val)) => {
                labels.insert(k.trim().to_owned(), val.trim().to_owned());
            }
            None => errs.push(FieldError::invalid("labels", format!("labels are key=value;key=value, not {pair:?}"))),
        }
    }
    let dry_run = v.get("dry_run").and_then(|s| match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => {
            errs.push(FieldError::invalid("dry_run", "dry_run is true or false (yes / no, 1 / 0)"));
            None
        }
    });
    let max_message_bytes = v.get("max_message_bytes").and_then(|s| {
        let size = byte_size(s);
        if size.is_none() {
            errs.push(FieldError::invalid(
                "max_message_bytes",
                "max_message_bytes is a number of bytes, optionally with K, M or G (KiB, MiB, GiB), e.g. 25M",
            ));
        }
        size
    });
    let flags = v.get("target_flags").map(|f| f.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let kind = v.get("target_kind").map(|k| k.trim().to_ascii_lowercase());
    if kind.as_deref().is_some_and(|k| k != "imap" && k != "archive") {
        errs.push(FieldError::invalid("target_kind", "target_kind is imap or archive"));
    }
    let target = if archive {
        // An archive has no login: the destination mailbox's name becomes a label.
        for c in IMAP_ONLY.iter().filter(|c| v.contains_key(**c) && **c != "target_user") {
            errs.push(FieldError::invalid(*c, format!("{c} is for IMAP targets; this row's target is an archive")));
        }
        if let Some(user) = text("target_user") {
            labels.entry(ARCHIVE_MAILBOX_LABEL.to_owned()).or_insert(user);
        }
        TargetBody::Archive(ArchiveTargetBody { archive: text("target_archive") })
    } else {
        if v.contains_key("target_archive") {
            errs.push(FieldError::invalid("target_archive", "target_archive is for archive targets; this row's target is IMAP"));
        }
        TargetBody::Imap(ImapTargetBody {
            host: text("target_host"),
            port: target_port,
            security: target_security,
            username: text("target_user"),
            password: secret("target_password"),
            folder: text("target_folder"),
            flags,
            auth: target_auth,
            oauth2: None,
            tls_pin: text("target_tls_pin"),
        })
    };
    let body = JobBody {
        source: SourceBody {
            protocol: Default::default(),
            host: text("source_host"),
            port: source_port,
            security: source_security,
            username: text("source_user"),
            password: secret("source_password"),
            auth: source_auth,
            tls_pin: text("source_tls_pin"),
        },
        target,
        options: OptionsBody { delete: text("delete"), max_message_bytes, dry_run, verify: text("verify").map(VerifyOption::Level) },
        labels,
        schedule: crate::spec::schedule::csv_schedule(&text),
    };
    Ok((body, errs))
}

/// `1048576`, `512K`, `25M`, `1G` (binary multiples; `KB`, `MiB` and the like too).
fn byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit());
    let n: u64 = s.strip_suffix(unit)?.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// An enum cell (`tls`, `apop`, ...) parsed with the JSON names.
fn enum_cell<T: serde::de::DeserializeOwned>(v: &BTreeMap<&str, String>, column: &str, errs: &mut Vec<FieldError>) -> Option<T> {
    let raw = v.get(column)?.trim().to_ascii_lowercase();
    match serde_json::from_value(serde_json::Value::String(raw.clone())) {
        Ok(t) => Some(t),
        Err(e) => {
            let msg = e.to_string();
            let expected = msg.split("expected").nth(1).map(|s| format!(": expected{s}")).unwrap_or_default();
            errs.push(FieldError::invalid(column, format!("{column} {raw:?} is not valid{expected}")));
            None
        }
    }
}
