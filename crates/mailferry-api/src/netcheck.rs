//! The network policy at job creation (DESIGN.md §2.9): every host a job names (the POP3
//! source, the IMAP target, the OAuth2 token endpoint) is resolved and each address checked,
//! so the caller learns at once that the job could never run, with the key that would allow
//! it. The worker checks again at every connect, and that check is the authoritative one:
//! DNS can change between creation and run. A name that does not resolve now (not in DNS
//! yet, or DNS too slow) is checked by name only and left to the worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use mailferry_model::{JobSpec, NetworkPolicy, OAuth2Spec, TargetSpec};

use crate::error::FieldError;

/// Lookups of one request run at most this many at a time...
const CONCURRENT_LOOKUPS: usize = 16;
/// ...and all within this time: a batch of names that never answer cannot hold a request.
const RESOLVE_BUDGET: Duration = Duration::from_secs(3);

/// The addresses each host resolved to; `None`: not resolved (failed or out of time).
#[derive(Debug, Default)]
pub struct Resolved(HashMap<String, Option<Vec<IpAddr>>>);

/// The hosts of a job, each with the field that names it.
fn hosts(spec: &JobSpec) -> Vec<(&'static str, String)> {
    let mut out = vec![("source.host", spec.source.host.clone())];
    if let TargetSpec::Imap { host, oauth2, .. } = &spec.target {
        out.push(("target.host", host.clone()));
        if let Some(grant @ OAuth2Spec::RefreshToken { .. }) = oauth2.as_deref() {
            if let Some(h) = grant.token_host() {
                out.push(("target.oauth2.token_url", h));
            }
        }
    }
    out
}

/// Resolve every distinct host of `specs` that is not an IP literal.
pub async fn resolve<'a>(specs: impl IntoIterator<Item = &'a JobSpec>) -> Resolved {
    let mut names: Vec<String> = specs
        .into_iter()
        .flat_map(hosts)
        .map(|(_, h)| h.to_ascii_lowercase())
        .filter(|h| literal(h).is_none())
        .collect();
    names.sort();
    names.dedup();
    let mut resolved: HashMap<String, Option<Vec<IpAddr>>> = names.iter().map(|n| (n.clone(), None)).collect();
    let lookups = futures::stream::iter(names)
        .map(|name| async move {
            let ips = tokio::net::lookup_host((name.as_str(), 0)).await.ok().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
            (name, ips)
        })
        .buffer_unordered(CONCURRENT_LOOKUPS);
    let _ = tokio::time::timeout(
        RESOLVE_BUDGET,
        lookups.for_each(|(name, ips)| {
            // A name that resolved to nothing is "not resolved", like one that failed.
            resolved.insert(name, ips.filter(|v| !v.is_empty()));
            async {}
        }),
    )
    .await;
    Resolved(resolved)
}

/// The policy's refusals for one job, as field errors naming `network.allow`.
pub fn check(spec: &JobSpec, policy: &NetworkPolicy, resolved: &Resolved) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (field, host) in hosts(spec) {
        let verdict = match literal(&host) {
            Some(ip) => policy.check(&host, &[ip]),
            None => match resolved.0.get(&host.to_ascii_lowercase()) {
                Some(Some(ips)) => policy.check(&host, ips),
                _ => policy.check_unresolved(&host),
            },
        };
        if let Err(why) = verdict {
            errors.push(FieldError::new(field, crate::error::NETWORK_NOT_ALLOWED, why));
        }
    }
    errors
}

fn literal(host: &str) -> Option<IpAddr> {
    host.trim_matches(['[', ']']).parse().ok()
}

#[cfg(test)]
mod tests {
    use mailferry_model::{DeletePolicy, JobOptions, Sealer, SourceSpec};

    use super::*;

    fn spec(source: &str, target: &str, token_url: Option<&str>) -> JobSpec {
        let sealer = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let sealed = sealer.seal(&secrecy::SecretString::from("p".to_owned()));
        JobSpec {
            source: SourceSpec {
                host: source.into(),
                port: 995,
                security: mailferry_model::Security::Tls,
                username: "u".into(),
                password: sealed.clone(),
                auth: Default::default(),
                tls_pin: None,
            },
            target: TargetSpec::Imap {
                host: target.into(),
                port: 993,
                security: mailferry_model::Security::Tls,
                username: "u".into(),
                password: None,
                auth: Default::default(),
                folder: "INBOX".into(),
                flags: vec![],
                oauth2: token_url.map(|u| {
                    Box::new(OAuth2Spec::RefreshToken {
                        token_url: u.into(),
                        client_id: "c".into(),
                        client_secret: None,
                        refresh_token: sealed.clone(),
                        scope: None,
                    })
                }),
                tls_pin: None,
            },
            options: JobOptions { delete: DeletePolicy::Keep, ..Default::default() },
            labels: Default::default(),
            schedule: None,
        }
    }

    #[tokio::test]
    async fn every_host_of_a_job_is_checked_after_resolution() {
        let policy = NetworkPolicy::api();
        let jobs = [
            spec("192.0.2.1", "[::1]", Some("https://localhost/token")),
            spec("LOCALHOST", "10.0.0.1", None),
            spec("name.invalid", "192.0.2.2", Some("https://192.0.2.3/t")),
        ];
        let resolved = resolve(&jobs).await;
        let fields = |errs: Vec<FieldError>| errs.into_iter().map(|e| (e.field, e.code)).collect::<Vec<_>>();
        let net = |f: &str| (f.to_owned(), "network-not-allowed".to_owned());
        assert_eq!(fields(check(&jobs[0], &policy, &resolved)), vec![net("target.host"), net("target.oauth2.token_url")]);
        assert_eq!(fields(check(&jobs[1], &policy, &resolved)), vec![net("source.host"), net("target.host")]);
        assert!(check(&jobs[2], &policy, &resolved).is_empty(), "a name that does not resolve is left to the worker");
        let open = NetworkPolicy::new(mailferry_model::netpolicy::Defaults::Api, ["127.0.0.0/8", "::1", "10.0.0.1"], []).unwrap();
        for job in &jobs {
            assert!(check(job, &open, &resolved).is_empty());
        }
    }
}
