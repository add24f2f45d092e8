//! One error type for every handler, rendered as RFC 9457 `application/problem+json`.
//!
//! Each variant has a stable `type` URI (relative, under `/problems/`) that clients can
//! switch on; `title` is the same for every instance of a type, `detail` explains this one.
//! Internal errors are logged with their cause and answered without it, so a database
//! message never reaches a client.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mailferry_model::Scope;
use mailferry_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// [`FieldError::code`] of a host the network policy refuses (`network.allow` would open it).
pub const NETWORK_NOT_ALLOWED: &str = "network-not-allowed";

/// One problem with one field of a request (or of one row of a batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// 1-based data row of a batch (the header row is not counted); absent for single jobs
    /// and for problems with the batch as a whole (e.g. a missing CSV column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// JSON path (`source.host`) or CSV column (`source_host`) of the offending value.
    pub field: String,
    /// Machine-readable reason: `required`, `invalid`, `plaintext-not-allowed`,
    /// `network-not-allowed`, `unsupported`.
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self { row: None, field: field.into(), code: code.to_owned(), message: message.into() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "invalid", message)
    }

    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field} is required");
        Self::new(field, "required", message)
    }

    pub fn at_row(mut self, row: usize) -> Self {
        self.row = Some(row);
        self
    }

    pub fn is_plaintext(&self) -> bool {
        self.code == "plaintext-not-allowed"
    }

    pub fn is_network(&self) -> bool {
        self.code == NETWORK_NOT_ALLOWED
    }
}

/// An RFC 9457 problem document, as the API sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field-level problems (validation errors, batch rows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The archived message concerned (`/problems/integrity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: JSON syntax, bad path or query parameter, bad header.
    #[error("{0}")]
    BadRequest(String),
    /// The request parsed but its values are wrong; every problem is listed.
    #[error("{detail}")]
    Validation { detail: String, errors: Vec<FieldError> },
    /// `security: "none"` for a host outside the plaintext allow-list.
    #[error("{detail}")]
    PlaintextNotAllowed { detail: String, errors: Vec<FieldError> },
    /// A host of the job resolves to an address the network policy refuses for jobs created
    /// over the API (loopback, private, link-local, metadata, ...); each message names the
    /// `network.allow` entry that would open it.
    #[error("{detail}")]
    NetworkNotAllowed { detail: String, errors: Vec<FieldError> },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this operation needs a token with the {needed} scope; this token has {have}")]
    Forbidden { needed: &'static str, have: &'static str },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// The resource existed and was removed for good (a purged archive message).
    #[error("{0}")]
    Gone(String),
    /// Stored archive data failed its integrity check: never served, always logged.
    #[error("{detail}")]
    Integrity { digest: String, detail: String },
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// Too many failed authentications from this client address; try again after the
    /// given number of seconds (sent as `Retry-After`).
    #[error("too many failed authentications from this address; try again in {0} s")]
    TooManyRequests(u64),
    /// A resource limit is reached (e.g. concurrent archive runs): nothing is wrong with
    /// the request, try again after `retry_after` seconds (sent as `Retry-After`).
    #[error("{detail}")]
    LimitReached { detail: String, retry_after: u64 },
    /// A dependency (the database) is not reachable.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else. The cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn forbidden(needed: Scope, have: Scope) -> Self {
        Self::Forbidden { needed: needed.as_str(), have: have.as_str() }
    }

    /// A validation problem (or a plaintext or network refusal when that is the only kind
    /// of error).
    pub fn from_field_errors(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let detail = detail.into();
        if !errors.is_empty() && errors.iter().all(FieldError::is_plaintext) {
            Self::PlaintextNotAllowed { detail: errors[0].message.clone(), errors }
        } else if !errors.is_empty() && errors.iter().all(FieldError::is_network) {
            Self::NetworkNotAllowed { detail: format!("{}: {}", errors[0].field, errors[0].message), errors }
        } else {
            Self::Validation { detail, errors }
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation { .. }
            | Self::PlaintextNotAllowed { .. }
            | Self::NetworkNotAllowed { .. }
            | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::Integrity { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(_) | Self::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `type` of this problem.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "/problems/bad-request",
            Self::Validation { .. } => "/problems/validation",
            Self::PlaintextNotAllowed { .. } => "/problems/plaintext-not-allowed",
            Self::NetworkNotAllowed { .. } => "/problems/network-not-allowed",
            Self::Unauthorized(_) => "/problems/unauthorized",
            Self::Forbidden { .. } => "/problems/forbidden",
            Self::NotFound(_) => "/problems/not-found",
            Self::MethodNotAllowed(_) => "/problems/method-not-allowed",
            Self::Conflict(_) => "/problems/conflict",
            Self::Gone(_) => "/problems/gone",
            Self::Integrity { .. } => "/problems/integrity",
            Self::PayloadTooLarge(_) => "/problems/payload-too-large",
            Self::UnsupportedMediaType(_) => "/problems/unsupported-media-type",
            Self::IdempotencyKeyReused => "/problems/idempotency-key-reused",
            Self::TooManyRequests(_) => "/problems/too-many-requests",
            Self::LimitReached { .. } => "/problems/limit-reached",
            Self::Unavailable(_) => "/problems/unavailable",
            Self::Internal(_) => "/problems/internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Bad request",
            Self::Validation { .. } => "Invalid request",
            Self::PlaintextNotAllowed { .. } => "Plaintext connections are not allowed to this host",
            Self::NetworkNotAllowed { .. } => "Jobs created over the API may not reach this address",
            Self::Unauthorized(_) => "Authentication required",
            Self::Forbidden { .. } => "Insufficient scope",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::Conflict(_) => "Conflict",
            Self::Gone(_) => "Gone",
            Self::Integrity { .. } => "Archived message failed its integrity check",
            Self::PayloadTooLarge(_) => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::TooManyRequests(_) => "Too many requests",
            Self::LimitReached { .. } => "Limit reached",
            Self::Unavailable(_) => "Service unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let detail = match self {
            // The cause stays in the log.
            Self::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation { errors, .. }
            | Self::PlaintextNotAllowed { errors, .. }
            | Self::NetworkNotAllowed { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        let digest = match self {
            Self::Integrity { digest, .. } => Some(digest.clone()),
            _ => None,
        };
        Problem {
            kind: self.problem_type().to_owned(),
            title: self.title().to_owned(),
            status: self.status_code().as_u16(),
            detail,
            errors,
            digest,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(error = %cause, "request failed with an internal error"),
            // Loud on purpose: stored evidence no longer matches its digest.
            Self::Integrity { digest, detail } => {
                tracing::error!(archive.digest = %digest, error = %detail, "ARCHIVE INTEGRITY FAILURE: refused to serve a message");
            }
            _ => {}
        }
        let status = self.status_code();
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mailferry\""));
        }
        if let Self::TooManyRequests(secs) | Self::LimitReached { retry_after: secs, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(format!("store: {e}"))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path parameter: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(format!("invalid query string: {}", e.body_text()))
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = ApiError::Internal("password=hunter2 in a db error".into()).to_problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
        assert_eq!(p.kind, "/problems/internal");
    }

    #[test]
    fn plaintext_only_errors_get_their_own_type() {
        let pt = FieldError::new("source.security", "plaintext-not-allowed", "no");
        let e = ApiError::from_field_errors("x", vec![pt.clone()]);
        assert_eq!(e.problem_type(), "/problems/plaintext-not-allowed");
        let e = ApiError::from_field_errors("x", vec![pt.clone(), FieldError::required("source.host")]);
        assert_eq!(e.problem_type(), "/problems/validation");
        let net = FieldError::new("source.host", NETWORK_NOT_ALLOWED, "10.0.0.1 is a private (RFC 1918) address");
        let e = ApiError::from_field_errors("x", vec![net.clone(), net.clone()]);
        assert_eq!(e.problem_type(), "/problems/network-not-allowed");
        assert_eq!(e.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.to_string(), "source.host: 10.0.0.1 is a private (RFC 1918) address");
        assert_eq!(ApiError::from_field_errors("x", vec![net, pt]).problem_type(), "/problems/validation");
    }
}
