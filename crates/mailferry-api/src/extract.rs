//! Extractors whose rejections are problem+json instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};
use crate::state::AppState;

/// `Path` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A JSON body: `Content-Type: application/json` (415 otherwise), within the body limit
/// (413), syntactically valid (400), and matching `T` exactly, unknown fields included
/// (422 naming the field).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// The media type of a request without parameters, lowercased (`text/csv`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

pub(crate) fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match media_type(req.headers()) {
            Some(m) if is_json(&m) => {}
            _ => return Err(ApiError::UnsupportedMediaType("the request body must be application/json".into())),
        }
        let bytes = read_body(req.into_body(), state.config.max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse JSON into `T`, naming the offending field on a data error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, None))?;
    de.end().map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A JSON error as a problem: syntax → 400, data (wrong type, unknown or missing field) → 422.
pub(crate) fn json_error(e: serde_path_to_error::Error<serde_json::Error>, row: Option<usize>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let (field, message) = nested_field(&path, &scrub(&inner.to_string()));
            let detail = format!("the request body does not match the schema: {message}");
            let mut err = FieldError::invalid(field, message);
            err.row = row;
            ApiError::Validation { detail, errors: vec![err] }
        }
        _ => ApiError::BadRequest(format!("the request body is not valid JSON: {inner}")),
    }
}

/// A custom deserializer (the tagged `target`) reports `inner.path: message`; join the
/// paths so the field is named in full.
fn nested_field(path: &str, message: &str) -> (String, String) {
    let base = if path == "." { "" } else { path };
    if let Some((inner, rest)) = message.split_once(": ") {
        let is_path = !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c));
        if is_path {
            let field = if base.is_empty() { inner.to_owned() } else { format!("{base}.{inner}") };
            return (field.clone(), format!("{field}: {rest}"));
        }
    }
    (base.to_owned(), message.to_owned())
}

/// serde quotes the offending value (`invalid type: integer `1234`, expected a string`),
/// which may be a mistyped password: keep only its kind.
pub(crate) fn scrub(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(at) = message.find(lead) {
            let start = at + lead.len();
            if let Some(end) = message[start..].find(", expected") {
                let kind = message[start..start + end].split_whitespace().next().unwrap_or("value");
                return format!("{}{kind}{}", &message[..start], &message[start + end..]);
            }
        }
    }
    message.to_owned()
}

/// The largest `limit` a list request may ask for, as the OpenAPI document declares it
/// (`maximum: 500`); `api.max_per_page` may only make pages shorter.
pub(crate) const MAX_PAGE_LIMIT: u32 = 500;

/// A list's `limit` query parameter: 1..=[`MAX_PAGE_LIMIT`] or absent. Out of range is a
/// 400 (as declared), not silently clamped: a client asking for 10,000 learns the rule.
pub(crate) fn page_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    match Option::<u32>::deserialize(d)? {
        Some(n) if !(1..=MAX_PAGE_LIMIT).contains(&n) => {
            Err(serde::de::Error::custom(format!("limit must be between 1 and {MAX_PAGE_LIMIT}")))
        }
        v => Ok(v),
    }
}

/// An optional integer that JSON may also write as `25.0` (JSON Schema's `integer` is any
/// number without a fraction, and generators send such numbers): whole and in range, or a
/// data error (422). Never echoes the value.
pub(crate) fn whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e18).map(|f| f as i128));
    // JSON Schema's `format: int64` bounds every integer the document declares.
    let whole = whole.filter(|v| (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(v));
    match whole.and_then(|v| T::try_from(v).ok()) {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("invalid value: expected a whole number in range")),
    }
}

/// The whole body, at most `limit` bytes (413 beyond).
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge(limit);
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("could not read the request body: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_values_and_nested_paths_join() {
        assert_eq!(scrub("invalid type: integer `1234`, expected a string at line 1 column 9"),
                   "invalid type: integer, expected a string at line 1 column 9");
        assert_eq!(scrub("invalid type: string \"hunter2\", expected u16"), "invalid type: string, expected u16");
        assert_eq!(scrub("unknown field `x`"), "unknown field `x`");
        assert_eq!(nested_field("target", "password: bad"), ("target.password".into(), "target.password: bad".into()));
        assert_eq!(nested_field("source", "invalid type: map"), ("source".into(), "invalid type: map".into()));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "page_limit")]
        limit: Option<u32>,
        #[serde(default, deserialize_with = "whole_number")]
        port: Option<i64>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Size {
        #[serde(default, deserialize_with = "whole_number")]
        size: Option<u64>,
    }

    #[test]
    fn limits_are_refused_outside_the_declared_range_and_whole_floats_are_integers() {
        let q = |s: &str| serde_json::from_str::<Q>(s).map(|q| q.limit).map_err(|e| e.to_string());
        assert_eq!(q("{}"), Ok(None));
        assert_eq!(q(r#"{"limit": 1}"#), Ok(Some(1)));
        assert_eq!(q(r#"{"limit": 500}"#), Ok(Some(500)));
        assert!(q(r#"{"limit": 501}"#).unwrap_err().starts_with("limit must be between 1 and 500"));
        assert!(q(r#"{"limit": 0}"#).unwrap_err().starts_with("limit must be between 1 and 500"));
        let port = |s: &str| serde_json::from_str::<Q>(s).map(|q| q.port).map_err(|e| e.to_string());
        assert_eq!(port(r#"{"port": 993}"#), Ok(Some(993)));
        assert_eq!(port(r#"{"port": 993.0}"#), Ok(Some(993)));
        assert_eq!(port(r#"{"port": null}"#), Ok(None));
        assert!(port(r#"{"port": 993.5}"#).unwrap_err().contains("expected a whole number"));
        assert!(port(r#"{"port": "993"}"#).is_err());
        let size = |s: &str| serde_json::from_str::<Size>(s).map(|q| q.size).map_err(|e| e.to_string());
        assert_eq!(size(r#"{"size": 9223372036854775807}"#), Ok(Some(i64::MAX as u64)));
        assert!(size(r#"{"size": 9223372036854775808}"#).unwrap_err().contains("expected a whole number"), "beyond int64");
    }
}
