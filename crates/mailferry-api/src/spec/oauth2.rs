//! A job body's OAuth2 credential for the IMAP target, checked before it is sealed.

use super::*;

/// `target.oauth2`: exactly one of `access_token` and `refresh_token`; a refresh token needs
/// the token endpoint (https, or http to a host on the plaintext allow-list) and a client id.
pub(super) fn oauth2_parts(o: OAuth2Body, config: &ApiConfig, errs: &mut Vec<FieldError>) -> Option<OAuth2Parts> {
    let before = errs.len();
    match (o.access_token, o.refresh_token) {
        (Some(_), Some(_)) => {
            errs.push(FieldError::invalid("target.oauth2", "give either target.oauth2.access_token or target.oauth2.refresh_token, not both"));
            None
        }
        (None, None) => {
            errs.push(FieldError::new(
                "target.oauth2",
                "required",
                "target.oauth2 needs an access_token, or a refresh_token with token_url and client_id",
            ));
            None
        }
        (Some(token), None) => {
            for (field, given) in [("token_url", o.token_url.is_some()), ("client_id", o.client_id.is_some()), ("client_secret", o.client_secret.is_some()), ("scope", o.scope.is_some())] {
                if given {
                    errs.push(FieldError::invalid(format!("target.oauth2.{field}"), format!("target.oauth2.{field} goes with a refresh_token, not an access_token")));
                }
            }
            let token = secret("target.oauth2.access_token", Some(token), errs);
            token.filter(|_| errs.len() == before).map(OAuth2Parts::AccessToken)
        }
        (None, Some(refresh)) => {
            let refresh_token = secret("target.oauth2.refresh_token", Some(refresh), errs);
            let client_secret = o.client_secret.and_then(|s| secret("target.oauth2.client_secret", Some(s), errs));
            let client_id = line("target.oauth2.client_id", o.client_id, 512, errs);
            let scope = o.scope.filter(|s| !s.is_empty()).and_then(|s| line("target.oauth2.scope", Some(s), 2048, errs));
            let token_url = token_url("target.oauth2.token_url", o.token_url, config, errs);
            match (refresh_token, client_id, token_url) {
                (Some(refresh_token), Some(client_id), Some(token_url)) if errs.len() == before => {
                    Some(OAuth2Parts::Refresh { token_url, client_id, client_secret, refresh_token, scope })
                }
                _ => None,
            }
        }
    }
}

/// An absolute `https://` URL without credentials in it; `http://` only for a host on the
/// plaintext allow-list (the client secret and refresh token travel in the request).
fn token_url(field: &str, value: Option<String>, config: &ApiConfig, errs: &mut Vec<FieldError>) -> Option<String> {
    let v = line(field, value, 2048, errs)?;
    let invalid = |errs: &mut Vec<FieldError>, why: &str| {
        errs.push(FieldError::invalid(field, format!("{field} {why}")));
        None
    };
    let Ok(url) = url::Url::parse(&v) else {
        return invalid(errs, "must be an absolute https:// URL");
    };
    let Some(host) = url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()) else {
        return invalid(errs, "must be an absolute https:// URL");
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(errs, "must not hold credentials (use client_id and client_secret)");
    }
    match url.scheme() {
        "https" => Some(v),
        "http" if config.plaintext_allowed(&host) => Some(v),
        "http" => {
            errs.push(FieldError::new(
                field,
                "plaintext-not-allowed",
                format!(
                    "{field}: http:// is not allowed for {host}: the host is not on the server's plaintext allow-list \
                     (security.plaintext_allow); use https://"
                ),
            ));
            None
        }
        _ => invalid(errs, "must be an absolute https:// URL"),
    }
}
