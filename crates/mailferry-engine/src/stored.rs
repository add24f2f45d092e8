//! A stored job's spec (passwords sealed) as a run of it: the one way the worker (which then
//! adds the job id and where a rotated refresh token is saved) and the API's preflight
//! (which saves nothing) make one, so the preflight logs in exactly as the run will.

use std::sync::Arc;

use mailferry_archive::Archives;
use mailferry_model::preflight::{Reason, ReasonCode};
use mailferry_model::{
    Credential, ImapEndpoint, JobSpec, NetworkPolicy, OAuth2Credential, OAuth2Refresh, OAuth2Spec, Pop3Endpoint, Sealer,
    TargetSpec, TlsOptions,
};

use crate::job::DrainJob;
use crate::sink::{ArchiveTarget, Target};

/// What turning a spec into a run needs from the process.
#[derive(Clone)]
pub struct SpecEnv {
    pub sealer: Sealer,
    pub extra_roots_pem: Option<Vec<u8>>,
    pub plaintext_allowed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    pub network: Arc<NetworkPolicy>,
    pub archives: Arc<Archives>,
}

impl std::fmt::Debug for SpecEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecEnv").finish_non_exhaustive()
    }
}

/// The run `spec` describes, with its secrets opened; or why there is none (blocked).
pub async fn job_of_spec(spec: &JobSpec, env: &SpecEnv) -> Result<DrainJob, Reason> {
    let sealed = |e: mailferry_model::SealError| Reason { code: ReasonCode::InvalidRow, detail: format!("a sealed secret cannot be opened: {e}") };
    let open = |s| env.sealer.open(s).map_err(sealed);
    let tls = |host: &str| TlsOptions {
        extra_roots_pem: env.extra_roots_pem.clone(),
        insecure_skip_verify: false,
        pin: None,
        allow_plaintext: (env.plaintext_allowed)(host),
        network: Arc::clone(&env.network),
    };
    let target = match &spec.target {
        TargetSpec::Imap { host, port, security, username, password, auth, folder, flags, oauth2, tls_pin } => {
            let credential = match (oauth2.as_deref(), password) {
                (Some(OAuth2Spec::AccessToken { access_token }), _) => Credential::OAuth2(OAuth2Credential::AccessToken(open(access_token)?)),
                (Some(g @ OAuth2Spec::RefreshToken { token_url, client_id, client_secret, refresh_token, scope }), _) => {
                    Credential::OAuth2(OAuth2Credential::Refresh(Box::new(OAuth2Refresh {
                        token_url: token_url.clone(),
                        client_id: client_id.clone(),
                        client_secret: client_secret.as_ref().map(open).transpose()?,
                        refresh_token: open(refresh_token)?,
                        scope: scope.clone(),
                        tls: tls(&g.token_host().unwrap_or_default()),
                    })))
                }
                (None, Some(p)) => Credential::Password(open(p)?),
                (None, None) => {
                    return Err(Reason { code: ReasonCode::InvalidRow, detail: "the destination has neither a password nor an OAuth2 credential".into() })
                }
            };
            Target::Imap(ImapEndpoint {
                host: host.clone(),
                port: *port,
                security: *security,
                username: username.clone(),
                credential,
                auth: *auth,
                tls: TlsOptions { pin: *tls_pin, ..tls(host) },
                folder: folder.clone(),
                flags: flags.clone(),
            })
        }
        TargetSpec::Archive { archive } => match env.archives.get(archive).await {
            Ok(opened) => Target::Archive(ArchiveTarget { name: archive.clone(), archive: opened }),
            Err(e) => return Err(Reason { code: ReasonCode::ArchiveUnavailable, detail: format!("archive {archive}: {e}") }),
        },
    };
    let source = Pop3Endpoint {
        host: spec.source.host.clone(),
        port: spec.source.port,
        security: spec.source.security,
        username: spec.source.username.clone(),
        secret: open(&spec.source.password)?,
        auth: spec.source.auth,
        tls: TlsOptions { pin: spec.source.tls_pin, ..tls(&spec.source.host) },
    };
    Ok(DrainJob::new(source, target, &spec.options))
}
