//! The job request body and its validation into a stored [`JobSpec`].
//!
//! One validation for `POST /jobs` and every row of a batch: all problems are collected
//! (not just the first) and named by field, passwords are sealed only once the whole body
//! is valid, and `security: "none"` is refused unless the host is on the plaintext
//! allow-list (DESIGN.md §2.5). The hosts' addresses are checked against the network policy
//! afterwards, in [`crate::netcheck`] (it resolves names, so it is async).

use std::collections::BTreeMap;

use mailferry_model::{
    DeletePolicy, ImapAuth, JobOptions, JobSpec, OAuth2Spec, Pop3Auth, Sealer, Security, SourceSpec, TargetSpec, TlsPin,
    VerifyLevel,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::FieldError;
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
    #[schema(schema_with = schemas::labels)]
    pub labels: BTreeMap<String, String>,
    /// Delta passes at a cadence until a cutover (issue 17); absent: one pass.
    pub schedule: Option<mailferry_model::ScheduleText>,
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
    /// Host name or IP address. It may not resolve to a loopback, private, link-local or
    /// cloud metadata address unless the server's `network.allow` names it.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9._:\[\]-]+$")]
    pub host: Option<String>,
    /// Default: 995 for `tls`, 110 otherwise.
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub port: Option<i64>,
    /// Default: `tls`.
    pub security: Option<Security>,
    /// One line (no control characters) of at most 512 bytes.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub username: Option<String>,
    /// Write-only: stored encrypted, never returned.
    #[schema(value_type = String, format = Password, required = true, write_only, min_length = 1, max_length = 8192, pattern = r"^[^\r\n\u0000]+$")]
    pub password: Option<SecretString>,
    /// Default: `auto`.
    pub auth: Option<Pop3Auth>,
    /// Trust exactly this server certificate: `sha256:` and 64 hex digits (colons between
    /// byte pairs allowed, as `openssl x509 -fingerprint -sha256` prints them), the SHA-256
    /// of the end-entity certificate (DER) or of its SubjectPublicKeyInfo. When set, the
    /// chain, the CA flag and the host name are not checked, only the pin; for legacy hosts
    /// with self-signed certificates. Every certificate failure names the fingerprint to pin.
    #[schema(pattern = "^[Ss][Hh][Aa]256:([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$", example = "sha256:3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc")]
    pub tls_pin: Option<String>,
}

// Deserialized by hand (through `serde_json::Value`) so that errors inside the tagged
// variant still name their field, and never quote a mistyped password.
/// Where the mail goes.
// Its OpenAPI schema is written in `schemas.rs`: the derived one cannot be satisfied.
#[derive(Debug, Deserialize)]
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
    /// Host name or IP address. It may not resolve to a loopback, private, link-local or
    /// cloud metadata address unless the server's `network.allow` names it.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9._:\[\]-]+$")]
    pub host: Option<String>,
    /// Default: 993 for `tls`, 143 otherwise.
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub port: Option<i64>,
    /// Default: `tls`.
    pub security: Option<Security>,
    /// One line (no control characters) of at most 512 bytes.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub username: Option<String>,
    /// Write-only: stored encrypted, never returned. Required unless `oauth2` is given
    /// (with `auth: xoauth2` it may be a static OAuth2 access token, as before).
    #[schema(value_type = Option<String>, format = Password, write_only, min_length = 1, max_length = 8192, pattern = r"^[^\r\n\u0000]+$")]
    pub password: Option<SecretString>,
    /// Default: `INBOX`. One line of at most 512 bytes.
    #[schema(min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub folder: Option<String>,
    /// IMAP flags set on every copied message (`\Seen`, keywords; at most 32); default none.
    /// `\Deleted` is refused (the destination would expunge the copies after the source may
    /// have been emptied), and so is `\Recent` (set by the server only).
    #[schema(schema_with = schemas::flags)]
    pub flags: Option<Vec<String>>,
    /// Default: `auto` (`xoauth2` when `oauth2` is given).
    pub auth: Option<ImapAuth>,
    /// OAuth2 instead of a password (AUTHENTICATE XOAUTH2), for Gmail and Microsoft 365.
    pub oauth2: Option<Box<OAuth2Body>>,
    /// Trust exactly this server certificate: `sha256:` and 64 hex digits (colons between
    /// byte pairs allowed, as `openssl x509 -fingerprint -sha256` prints them), the SHA-256
    /// of the end-entity certificate (DER) or of its SubjectPublicKeyInfo. When set, the
    /// chain, the CA flag and the host name are not checked, only the pin; for legacy hosts
    /// with self-signed certificates. Every certificate failure names the fingerprint to pin.
    #[schema(pattern = "^[Ss][Hh][Aa]256:([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$", example = "sha256:3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc")]
    pub tls_pin: Option<String>,
}

/// An OAuth2 credential: either `access_token`, or `refresh_token` with `token_url` and
/// `client_id` (and `client_secret` for confidential clients), so that a long job mints new
/// access tokens itself as they expire (RFC 6749 §6). Secrets are stored encrypted and
/// never returned.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Body {
    /// Write-only. A ready access token, used until the server refuses it.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub access_token: Option<SecretString>,
    /// Write-only. The refresh token the job exchanges for access tokens.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub refresh_token: Option<SecretString>,
    /// The authorization server's token endpoint (`https://`; `http://` only for hosts on
    /// the plaintext allow-list), e.g. `https://oauth2.googleapis.com/token`. Like the mail
    /// hosts, it may not resolve to a loopback, private, link-local or cloud metadata address
    /// unless the server's `network.allow` names it.
    #[schema(example = "https://login.microsoftonline.com/common/oauth2/v2.0/token")]
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// Write-only. Omit for public clients.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub client_secret: Option<SecretString>,
    /// Space-separated scopes to request, e.g. `https://outlook.office.com/IMAP.AccessAsUser.All offline_access`.
    pub scope: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveTargetBody {
    /// Archive name: letters, digits, `.`, `_`, `-` (at most 64, not starting with `.`).
    #[schema(value_type = String, required = true, example = "legal", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub archive: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsBody {
    /// `keep` (default), `after-verified` or `after-days:N`.
    #[schema(example = "keep", pattern = "^(keep|after-verified|after-days:[0-9]{1,9})$")]
    pub delete: Option<String>,
    /// Messages larger than this are skipped (recorded in the ledger); default no limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    pub max_message_bytes: Option<u64>,
    /// List and compare only; copy and delete nothing.
    pub dry_run: Option<bool>,
    /// How each copy read back from the destination is compared with what was sent:
    /// `exact` (default: every byte), `body` (headers may be rewritten by the destination,
    /// e.g. Gmail, Microsoft 365), `size`, or `none` / `false` (no read-back: keep-only
    /// jobs at full speed; refused with a deleting `delete`). `true` means `exact`.
    /// Recorded per message; only verified messages are deleted under `after-verified`.
    #[schema(schema_with = schemas::verify)]
    pub verify: Option<VerifyOption>,
}

/// `options.verify`: a level name, or a boolean (`true` = exact, `false` = none).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum VerifyOption {
    Flag(bool),
    Level(String),
}

const MAX_LABELS: usize = 32;

/// A valid target, before sealing.
enum TargetParts {
    Imap(Box<ImapParts>),
    Archive(String),
}

/// A valid IMAP target, before sealing.
struct ImapParts {
    host: String,
    port: u16,
    security: Security,
    username: String,
    password: Option<SecretString>,
    folder: String,
    flags: Vec<String>,
    auth: ImapAuth,
    oauth2: Option<OAuth2Parts>,
    tls_pin: Option<TlsPin>,
}

/// A valid OAuth2 credential, before sealing.
enum OAuth2Parts {
    AccessToken(SecretString),
    Refresh { token_url: String, client_id: String, client_secret: Option<SecretString>, refresh_token: SecretString, scope: Option<String> },
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
    let src_pin = tls_pin("source.tls_pin", src.tls_pin.as_deref(), src_security, &mut errs);

    let target = match body.target {
        TargetBody::Archive(a) => match a.archive.filter(|n| !n.is_empty()) {
            None => {
                errs.push(FieldError::required("target.archive"));
                None
            }
            Some(name) if !mailferry_archive::Archives::valid_name(&name) => {
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
            let has_oauth2 = t.oauth2.is_some();
            let (pass, oauth2, auth) = match t.oauth2 {
                None => (secret("target.password", t.password, &mut errs).map(Some), None, t.auth.unwrap_or_default()),
                Some(o) => {
                    if t.password.is_some() {
                        errs.push(FieldError::invalid("target.password", "give either target.password or target.oauth2, not both"));
                    }
                    if !matches!(t.auth, None | Some(ImapAuth::Auto | ImapAuth::Xoauth2)) {
                        errs.push(FieldError::invalid("target.auth", "target.oauth2 needs target.auth \"xoauth2\" (or none)"));
                    }
                    (Some(None), oauth2_parts(*o, config, &mut errs), ImapAuth::Xoauth2)
                }
            };
            plaintext("target.security", security, t_host.as_deref(), config, &mut errs);
            let t_pin = tls_pin("target.tls_pin", t.tls_pin.as_deref(), security, &mut errs);
            let folder = line("target.folder", Some(t.folder.unwrap_or_else(|| "INBOX".into())), 512, &mut errs);
            let flags = t.flags.unwrap_or_default();
            check_flags(&flags, &mut errs);
            match (t_host, user, pass, folder) {
                (Some(host), Some(username), Some(password), Some(folder)) if has_oauth2 == oauth2.is_some() => {
                    let port = t_port;
                    let parts = ImapParts { host, port, security, username, password, folder, flags, auth, oauth2, tls_pin: t_pin };
                    Some(TargetParts::Imap(Box::new(parts)))
                }
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
    let verify = match &body.options.verify {
        None | Some(VerifyOption::Flag(true)) => VerifyLevel::default(),
        Some(VerifyOption::Flag(false)) => VerifyLevel::None,
        Some(VerifyOption::Level(v)) => VerifyLevel::parse(v).unwrap_or_else(|| {
            errs.push(FieldError::invalid(
                "options.verify",
                format!("{v:?} is not a verification level: exact, body, size or none (or true / false)"),
            ));
            VerifyLevel::default()
        }),
    };
    if !verify.reads_back() && delete != DeletePolicy::Keep {
        errs.push(FieldError::invalid(
            "options.verify",
            "verify none reads no copy back, and only copies read back are deleted: use it with \"delete\": \"keep\"",
        ));
    }
    if body.options.max_message_bytes == Some(0) {
        errs.push(FieldError::invalid("options.max_message_bytes", "options.max_message_bytes must be at least 1"));
    }
    check_labels(&body.labels, &mut errs);
    let schedule = schedule::schedule(body.schedule, &mut errs);

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
            security: src_security,
            username: src_user,
            password: sealer.seal(&src_pass),
            auth: src.auth.unwrap_or_default(),
            tls_pin: src_pin,
        },
        target: match t {
            // Fields move out of the Box one by one (Box allows partial moves).
            TargetParts::Imap(t) => TargetSpec::Imap {
                host: t.host,
                port: t.port,
                security: t.security,
                username: t.username,
                password: t.password.as_ref().map(|p| sealer.seal(p)),
                auth: t.auth,
                folder: t.folder,
                flags: t.flags,
                tls_pin: t.tls_pin,
                oauth2: t.oauth2.map(|o| Box::new(match o {
                    OAuth2Parts::AccessToken(token) => OAuth2Spec::AccessToken { access_token: sealer.seal(&token) },
                    OAuth2Parts::Refresh { token_url, client_id, client_secret, refresh_token, scope } => {
                        OAuth2Spec::RefreshToken {
                            token_url,
                            client_id,
                            client_secret: client_secret.as_ref().map(|s| sealer.seal(s)),
                            refresh_token: sealer.seal(&refresh_token),
                            scope,
                        }
                    }
                })),
            },
            TargetParts::Archive(archive) => TargetSpec::Archive { archive },
        },
        options: JobOptions {
            delete,
            max_message_bytes: body.options.max_message_bytes,
            dry_run: body.options.dry_run.unwrap_or(false),
            verify,
        },
        labels: body.labels,
        schedule,
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

/// `tls_pin`: absent, or a pin of the one accepted form on a TLS connection.
fn tls_pin(field: &str, value: Option<&str>, security: Security, errs: &mut Vec<FieldError>) -> Option<TlsPin> {
    let pin = match value?.parse::<TlsPin>() {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldError::invalid(field, format!("{field}: {e}")));
            return None;
        }
    };
    if security == Security::None {
        errs.push(FieldError::invalid(field, format!("{field} needs TLS: security \"none\" presents no certificate")));
    }
    Some(pin)
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
                     allow-list (security.plaintext_allow); use \"tls\" or \"starttls\""
                ),
            ));
        }
    }
}

/// RFC 3501 §9: `flag = "\" atom / keyword`. The IMAP crate's rule
/// ([`mailferry_imap::wire::flag_problem`]) refuses what is not an atom, `\Recent` (set by
/// the server only) and `\Deleted` in any case: copies flagged so would be removed by the
/// destination's next EXPUNGE, after the source may have been emptied. At most 32 flags of
/// at most 128 bytes each.
fn check_flags(flags: &[String], errs: &mut Vec<FieldError>) {
    if flags.len() > 32 {
        errs.push(FieldError::invalid("target.flags", "target.flags holds at most 32 flags"));
    }
    for (i, flag) in flags.iter().enumerate() {
        let long = flag.strip_prefix('\\').unwrap_or(flag).len() > 128;
        let problem =
            mailferry_imap::wire::flag_problem(flag).or_else(|| long.then(|| format!("{flag:?} is longer than 128 bytes")));
        if let Some(problem) = problem {
            errs.push(FieldError::invalid(format!("target.flags[{i}]"), problem));
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

mod oauth2;
use oauth2::oauth2_parts;
pub(crate) mod schedule;
pub(crate) mod schemas;

#[cfg(test)]
mod tests;
