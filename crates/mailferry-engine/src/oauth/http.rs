//! The token endpoint over HTTP (RFC 6749 §6), reached like a mail endpoint: resolved
//! once, checked against the network policy, connected only at the checked addresses, TLS
//! verified, plaintext only where the host is allowed it, no redirects and no proxy from
//! the environment. Answers are read up to a bound; error texts never carry the URL.

use std::net::SocketAddr;
use std::time::Duration;

use mailferry_model::OAuth2Refresh;

use super::OAuth2Error;

/// Bounds on the token endpoint (DESIGN.md §2.4: a timeout on every await).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token endpoint answer read.
const MAX_RESPONSE: usize = 64 * 1024;

/// A client bound to the grant's token endpoint, with its URL and host (for logs).
pub(super) async fn client(grant: &OAuth2Refresh) -> Result<(reqwest::Client, reqwest::Url, String), OAuth2Error> {
    let url = reqwest::Url::parse(&grant.token_url).map_err(|_| OAuth2Error::BadUrl)?;
    let host = url.host_str().ok_or(OAuth2Error::BadUrl)?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = &grant.tls;
    match url.scheme() {
        "https" => {}
        "http" if tls.allow_plaintext => {}
        "http" => return Err(OAuth2Error::PlaintextRefused(host)),
        _ => return Err(OAuth2Error::BadUrl),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OAuth2Error::BadUrl);
    }
    let port = url.port_or_known_default().ok_or(OAuth2Error::BadUrl)?;
    // Resolve, check against the network policy, connect only to the checked addresses.
    let addrs: Vec<SocketAddr> = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| OAuth2Error::Timeout("resolving the token endpoint's name"))?
        .map_err(|e| OAuth2Error::Network(e.to_string()))?
        .collect();
    let ips: Vec<std::net::IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    tls.network.check(&host, &ips).map_err(OAuth2Error::Denied)?;

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .resolve_to_addrs(&host, &addrs);
    if url.scheme() == "https" {
        let config = tls.client_config().map_err(|e| OAuth2Error::Tls(e.to_string()))?;
        builder = builder.use_preconfigured_tls((*config).clone());
    }
    let client = builder.build().map_err(|e| OAuth2Error::Tls(chain(&e)))?;
    Ok((client, url, host))
}

#[derive(serde::Deserialize)]
pub(super) struct TokenReply {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) token_type: String,
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
}

#[derive(Default, serde::Deserialize)]
pub(super) struct ErrorReply {
    pub(super) error: Option<String>,
    pub(super) error_description: Option<String>,
}

pub(super) fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Printable ASCII, at most 200 characters.
pub(super) fn printable(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// An error and its causes, without the URL (reqwest's errors carry it).
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(super) fn request_error(e: reqwest::Error) -> OAuth2Error {
    if e.is_timeout() {
        OAuth2Error::Timeout("waiting for the token endpoint")
    } else {
        OAuth2Error::Network(chain(&e.without_url()))
    }
}

pub(super) async fn read_bounded(mut response: reqwest::Response) -> std::result::Result<Vec<u8>, OAuth2Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(OAuth2Error::Malformed(format!("an answer larger than {MAX_RESPONSE} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_and_server_text() {
        assert_eq!(form_encode("a b:c/ü"), "a+b%3Ac%2F%C3%BC");
        assert_eq!(printable("x\ny\u{7f}"), "x?y?");
    }
}
