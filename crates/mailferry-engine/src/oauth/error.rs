//! Why no OAuth2 access token could be obtained, and whether retrying can help: used by
//! the token provider and, wrapped, by the engine's own error.

use mailferry_model::ErrorClass;

/// Why no access token could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum OAuth2Error {
    #[error("the token URL is not a valid http(s) URL")]
    BadUrl,
    #[error("plaintext http to the token endpoint {0} is refused: use https, or allow plaintext for that host")]
    PlaintextRefused(String),
    #[error("the token endpoint's address is refused: {0}")]
    Denied(String),
    #[error(
        "the authorization server rejected the refresh token (invalid_grant: {0}); it has expired or was \
         revoked, and a new one must be obtained (sign in and consent again)"
    )]
    InvalidGrant(String),
    #[error("the authorization server refused the request (HTTP {status}, {code}: {description})")]
    Refused { status: u16, code: String, description: String },
    #[error("the token endpoint is unavailable (HTTP {0})")]
    Unavailable(u16),
    #[error("cannot reach the token endpoint: {0}")]
    Network(String),
    #[error("timed out while {0}")]
    Timeout(&'static str),
    #[error("the token endpoint's answer is not an OAuth2 token response: {0}")]
    Malformed(String),
    #[error("TLS setup for the token endpoint failed: {0}")]
    Tls(String),
    #[error("the authorization server rotated the refresh token, and saving the new one to the job failed: {0}")]
    RotationNotSaved(String),
    #[error(
        "the authorization server rotated the refresh token, but the job's stored refresh token was changed \
         meanwhile (another worker saved a newer one); the new token was not saved"
    )]
    RotationSuperseded,
}

impl OAuth2Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable(_) | Self::Network(_) | Self::Timeout(_) | Self::RotationNotSaved(_) => ErrorClass::Retryable,
            _ => ErrorClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_messages() {
        assert_eq!(OAuth2Error::Unavailable(503).class(), ErrorClass::Retryable);
        assert_eq!(OAuth2Error::Timeout("x").class(), ErrorClass::Retryable);
        assert_eq!(OAuth2Error::Network("reset".into()).class(), ErrorClass::Retryable);
        assert_eq!(OAuth2Error::RotationNotSaved("down".into()).class(), ErrorClass::Retryable);
        let e = OAuth2Error::InvalidGrant("revoked".into());
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        assert_eq!(OAuth2Error::PlaintextRefused("h".into()).class(), ErrorClass::Fatal);
        assert_eq!(OAuth2Error::RotationSuperseded.class(), ErrorClass::Fatal);
    }
}
