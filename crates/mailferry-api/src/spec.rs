//! The job request body and its validation into a stored [`JobSpec`].
//!
//! One validation for `POST /jobs` and every row of a batch: all problems are collected
//! (not just the first) and named by field, passwords are sealed only once the whole body
//! is valid, and `security: "none"` is refused unless the host is on the plaintext
//! allow-list (DESIGN.md §2.5).

use std::collections::BTreeMap;

use mailferry_model::{DeletePolicy, JobOptions, JobSpec, Sealer, SourceSpec, TargetSpec};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::FieldError;
use crate::schema::{ImapAuth, Pop3Auth, Security};
use crate::state::ApiConfig;

/// A job to create: where to read (POP3) and where to write (IMAP).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    pub source: SourceBody,
    pub target: TargetBody,
    #[serde(default)]
    pub options: OptionsBody,
    /// Free-form `key: value` labels for filtering (`GET /jobs?label=key:value`). Keys:
    /// 1–63 of `A-Z a-z 0-9 . _ - /`, starting with a letter or digit; values up to 256 characters.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceProtocol {
    #[default]
    Pop3,
}

/// The POP3 mailbox to drain.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    #[serde(default)]
    pub protocol: SourceProtocol,
    #[schema(required = true)]
    pub host: Option<String>,
    /// Default: 995 for `tls`, 110 otherwise.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// Default: `tls`.
    pub security: Option<Security>,
    #[schema(required = true)]
    pub username: Option<String>,
    /// Write-only: stored encrypted, never returned.
    #[schema(value_type = String, format = Password, required = true, write_only)]
    pub password: Option<SecretString>,
    /// Default: `auto`.
    pub auth: Option<Pop3Auth>,
}

// Deserialized by hand (through `serde_json::Value`) so that errors inside the tagged
// variant still name their field, and never quote a mistyped password.
/// Where the mail goes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "protocol", rename_all = "lowercase", try_from = "serde_json::Value")]
pub enum TargetBody {
    Imap(ImapTargetBody),
    /// A compliance archive on this server (created on first use).
    Archive(ArchiveTargetBody),
}

impl TryFrom<serde_json::Value> for TargetBody {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(mut map) = value else {
            return Err("invalid type: expected an object with a protocol".into());
        };
        let protocol = map.remove("protocol");
        let rest = serde_json::Value::Object(map);
        let nested = |e: serde_path_to_error::Error<serde_json::Error>| {
            let path = e.path().to_string();
            let msg = crate::extract::scrub(&e.into_inner().to_string());
            if path == "." { msg } else { format!("{path}: {msg}") }
        };
        match protocol.as_ref().map(|p| p.as_str()) {
            Some(Some("imap")) => serde_path_to_error::deserialize(rest).map(Self::Imap).map_err(nested),
            Some(Some("archive")) => serde_path_to_error::deserialize(rest).map(Self::Archive).map_err(nested),
            Some(_) => Err("protocol: unknown target protocol: expected \"imap\" or \"archive\"".into()),
            None => Err("protocol: missing field `protocol`".into()),
        }
    }
}

/// An IMAP folder to fill.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImapTargetBody {
    #[schema(required = true)]
    pub host: Option<String>,
    /// Default: 993 for `tls`, 143 otherwise.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// Default: `tls`.
    pub security: Option<Security>,
    #[schema(required = true)]
    pub username: Option<String>,
    /// Write-only: stored encrypted, never returned.
    #[schema(value_type = String, format = Password, required = true, write_only)]
    pub password: Option<SecretString>,
    /// Default: `INBOX`.
    pub folder: Option<String>,
    /// IMAP flags set on every copied message (`\Seen`, keywords); default none.
    pub flags: Option<Vec<String>>,
    /// Default: `auto`.
    pub auth: Option<ImapAuth>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveTargetBody {
    /// Archive name: letters, digits, `.`, `_`, `-` (at most 64, not starting with `.`).
    #[schema(required = true, example = "legal")]
    pub archive: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsBody {
    /// `keep` (default), `after-verified` or `after-days:N`.
    #[schema(example = "keep")]
    pub delete: Option<String>,
    /// Messages larger than this are skipped (recorded in the ledger); default no limit.
    #[schema(minimum = 1)]
    pub max_message_bytes: Option<u64>,
    /// List and compare only; copy and delete nothing.
    pub dry_run: Option<bool>,
}

const MAX_LABELS: usize = 32;

/// A valid target, before sealing.
enum TargetParts {
    Imap(ImapParts),
    Archive(String),
}

/// A valid IMAP target, before sealing.
struct ImapParts {
    host: String,
    port: u16,
    security: Security,
    username: String,
    password: SecretString,
    folder: String,
    flags: Vec<String>,
    auth: ImapAuth,
}

/// Validate a job body and seal its passwords. Every problem is reported, named by its
/// JSON path (`source.host`).
pub fn validate(body: JobBody, config: &ApiConfig, sealer: &Sealer) -> Result<JobSpec, Vec<FieldError>> {
    let mut errs = Vec::new();

    let src = body.source;
    let src_host = host("source.host", src.host, &mut errs);
    let src_security = src.security.unwrap_or(Security::Tls);
    let src_port = port("source.port", src.port, if src_security == Security::Tls { 995 } else { 110 }, &mut errs);
    let src_user = line("source.username", src.username, 512, &mut errs);
    let src_pass = secret("source.password", src.password, &mut errs);
    plaintext("source.security", src_security, src_host.as_deref(), config, &mut errs);

    let target = match body.target {
        TargetBody::Archive(a) => match a.archive.filter(|n| !n.is_empty()) {
            None => {
                errs.push(FieldError::required("target.archive"));
                None
            }
            Some(name) if !mailferry_engine::Archives::valid_name(&name) => {
                errs.push(FieldError::invalid(
                    "target.archive",
                    "target.archive must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'",
                ));
                None
            }
            Some(name) => Some(TargetParts::Archive(name)),
        },
        TargetBody::Imap(t) => {
            let t_host = host("target.host", t.host, &mut errs);
            let security = t.security.unwrap_or(Security::Tls);
            let t_port = port("target.port", t.port, if security == Security::Tls { 993 } else { 143 }, &mut errs);
            let user = line("target.username", t.username, 512, &mut errs);
            let pass = secret("target.password", t.password, &mut errs);
            plaintext("target.security", security, t_host.as_deref(), config, &mut errs);
            let folder = line("target.folder", Some(t.folder.unwrap_or_else(|| "INBOX".into())), 512, &mut errs);
            let flags = t.flags.unwrap_or_default();
            check_flags(&flags, &mut errs);
            match (t_host, user, pass, folder) {
                (Some(host), Some(username), Some(password), Some(folder)) => Some(TargetParts::Imap(ImapParts {
                    host,
                    port: t_port,
                    security,
                    username,
                    password,
                    folder,
                    flags,
                    auth: t.auth.unwrap_or_default(),
                })),
                _ => None,
            }
        }
    };

    let delete = match body.options.delete.as_deref().unwrap_or("keep").parse::<DeletePolicy>() {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldError::invalid("options.delete", e.to_string()));
            DeletePolicy::Keep
        }
    };
    if body.options.max_message_bytes == Some(0) {
        errs.push(FieldError::invalid("options.max_message_bytes", "options.max_message_bytes must be at least 1"));
    }
    check_labels(&body.labels, &mut errs);

    if !errs.is_empty() {
        return Err(errs);
    }
    // Every `None` above pushed an error, so all are present here.
    let (Some(src_host), Some(src_user), Some(src_pass), Some(t)) = (src_host, src_user, src_pass, target) else {
        return Err(vec![FieldError::invalid("", "incomplete job")]);
    };
    Ok(JobSpec {
        source: SourceSpec {
            host: src_host,
            port: src_port,
            security: src_security.into(),
            username: src_user,
            password: sealer.seal(&src_pass),
            auth: src.auth.unwrap_or_default().into(),
        },
        target: match t {
            TargetParts::Imap(t) => TargetSpec::Imap {
                host: t.host,
                port: t.port,
                security: t.security.into(),
                username: t.username,
                password: sealer.seal(&t.password),
                auth: t.auth.into(),
                folder: t.folder,
                flags: t.flags,
            },
            TargetParts::Archive(archive) => TargetSpec::Archive { archive },
        },
        options: JobOptions {
            delete,
            max_message_bytes: body.options.max_message_bytes,
            dry_run: body.options.dry_run.unwrap_or(false),
        },
        labels: body.labels,
    })
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn host(field: &str, value: Option<String>, errs: &mut Vec<FieldError>) -> Option<String> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        errs.push(FieldError::required(field));
        return None;
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']');
    if v.len() > 253 || !v.chars().all(ok_char) {
        errs.push(FieldError::invalid(
            field,
            format!("{field} must be a host name or IP address (letters, digits, '.', '-', ':'; at most 253 characters)"),
        ));
        return None;
    }
    Some(v)
}

fn port(field: &str, value: Option<i64>, default: u16, errs: &mut Vec<FieldError>) -> u16 {
    match value {
        None => default,
        Some(p) => u16::try_from(p).ok().filter(|p| *p != 0).unwrap_or_else(|| {
            errs.push(FieldError::invalid(field, format!("{field} must be between 1 and 65535")));
            default
        }),
    }
}

/// A non-empty single-line value (no CR, LF or other control characters: they would
/// inject protocol commands).
fn line(field: &str, value: Option<String>, max: usize, errs: &mut Vec<FieldError>) -> Option<String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        errs.push(FieldError::required(field));
        return None;
    };
    if v.len() > max || has_control(&v) {
        errs.push(FieldError::invalid(field, format!("{field} must be one line of at most {max} bytes")));
        return None;
    }
    Some(v)
}

fn secret(field: &str, value: Option<SecretString>, errs: &mut Vec<FieldError>) -> Option<SecretString> {
    let Some(v) = value.filter(|v| !v.expose_secret().is_empty()) else {
        errs.push(FieldError::required(field));
        return None;
    };
    let s = v.expose_secret();
    if s.len() > 8192 || s.contains(['\r', '\n', '\0']) {
        // Never echo the value.
        errs.push(FieldError::invalid(field, format!("{field} must be one line of at most 8192 bytes")));
        return None;
    }
    Some(v)
}

fn plaintext(field: &str, security: Security, host: Option<&str>, config: &ApiConfig, errs: &mut Vec<FieldError>) {
    if let (Security::None, Some(host)) = (security, host) {
        if !config.plaintext_allowed(host) {
            errs.push(FieldError::new(
                field,
                "plaintext-not-allowed",
                format!(
                    "security \"none\" is not allowed for {host}: the host is not on the server's plaintext \
                     allow-list; use \"tls\" or \"starttls\""
                ),
            ));
        }
    }
}

/// RFC 3501 §9: `flag = "\" atom / keyword`; atoms exclude `( ) { SP CTL % * " \ ]`.
/// `\Recent` is set by the server only and cannot be given to APPEND.
fn check_flags(flags: &[String], errs: &mut Vec<FieldError>) {
    if flags.len() > 32 {
        errs.push(FieldError::invalid("target.flags", "target.flags holds at most 32 flags"));
    }
    for (i, flag) in flags.iter().enumerate() {
        let atom = flag.strip_prefix('\\').unwrap_or(flag);
        let atom_char = |c: char| c.is_ascii_graphic() && !matches!(c, '(' | ')' | '{' | '%' | '*' | '"' | '\\' | ']');
        let recent = flag.eq_ignore_ascii_case("\\recent");
        if atom.is_empty() || atom.len() > 128 || !atom.chars().all(atom_char) || recent {
            errs.push(FieldError::invalid(
                format!("target.flags[{i}]"),
                format!("{flag:?} is not an IMAP flag (\\Seen, \\Flagged, ... or a keyword atom)"),
            ));
        }
    }
}

fn check_labels(labels: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    if labels.len() > MAX_LABELS {
        errs.push(FieldError::invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        let key_ok = (1..=63).contains(&k.len())
            && k.starts_with(|c: char| c.is_ascii_alphanumeric())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            errs.push(FieldError::invalid(
                format!("labels.{k}"),
                "label keys are 1-63 of A-Z a-z 0-9 . _ - /, starting with a letter or digit",
            ));
        }
        if v.len() > 256 || has_control(v) {
            errs.push(FieldError::invalid(format!("labels.{k}"), "label values are one line of at most 256 bytes"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_hex(&Sealer::generate_hex()).unwrap()
    }

    fn body(json: serde_json::Value) -> JobBody {
        serde_json::from_value(json).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "source": {"protocol": "pop3", "host": "pop.example.com", "username": "u", "password": "p1"},
            "target": {"protocol": "imap", "host": "imap.example.com", "username": "u", "password": "p2", "flags": ["\\Seen", "$Migrated"]},
            "options": {"delete": "keep"},
        })
    }

    #[test]
    fn defaults_ports_from_security_and_seals_passwords() {
        let spec = validate(body(good()), &ApiConfig::default(), &sealer()).unwrap();
        assert_eq!(spec.source.port, 995);
        let TargetSpec::Imap { port, folder, .. } = &spec.target else { panic!() };
        assert_eq!((*port, folder.as_str()), (993, "INBOX"));
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("\"p1\"") && !json.contains("\"p2\""), "{json}");

        let mut b = good();
        b["source"]["security"] = "starttls".into();
        b["target"]["security"] = "starttls".into();
        let spec = validate(body(b), &ApiConfig::default(), &sealer()).unwrap();
        assert_eq!(spec.source.port, 110);
        assert!(matches!(spec.target, TargetSpec::Imap { port: 143, .. }));
    }

    #[test]
    fn every_problem_is_named() {
        let b = serde_json::json!({
            "source": {"host": " ", "port": 0, "username": "", "password": "a\r\nb"},
            "target": {"protocol": "imap", "host": "h/x", "port": 70000, "username": "u", "password": "p", "flags": ["a b", "\\Recent"]},
            "options": {"delete": "always", "max_message_bytes": 0},
            "labels": {"-bad": "v", "ok": "x\ny"},
        });
        let errs = validate(body(b), &ApiConfig::default(), &sealer()).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "source.host", "source.port", "source.username", "source.password", "target.host", "target.port",
            "target.flags[0]", "target.flags[1]", "options.delete", "options.max_message_bytes", "labels.-bad", "labels.ok",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(!format!("{errs:?}").contains("a\r\nb"));
    }

    #[test]
    fn plaintext_only_to_allowed_hosts_and_archive_targets() {
        let mut b = good();
        b["source"]["security"] = "none".into();
        let errs = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].is_plaintext() && errs[0].field == "source.security");
        b["source"]["host"] = "127.0.0.1".into();
        assert_eq!(validate(body(b), &ApiConfig::default(), &sealer()).unwrap().source.port, 110);

        let mut b = good();
        b["target"] = serde_json::json!({"protocol": "archive", "archive": "legal"});
        let spec = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap();
        assert!(matches!(&spec.target, TargetSpec::Archive { archive } if archive == "legal"));
        for bad in ["", "../x", ".hidden", "a/b", "x y"] {
            b["target"]["archive"] = bad.into();
            let errs = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap_err();
            assert_eq!(errs[0].field, "target.archive", "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        for (ptr, extra) in [("", "x"), ("/source", "passwd"), ("/target", "folderz"), ("/options", "dele")] {
            let mut b = good();
            b.pointer_mut(if ptr.is_empty() { "" } else { ptr }).unwrap()[extra] = 1.into();
            let err = serde_json::from_value::<JobBody>(b).unwrap_err().to_string();
            assert!(err.contains(extra), "{err}");
        }
    }
}
