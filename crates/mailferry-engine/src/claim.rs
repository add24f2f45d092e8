//! A run's exclusive claim on its source mailbox (DESIGN.md §2 invariant 8).
//!
//! Two runs on one maildrop (two `mailferry migrate` started together, or a CLI run beside
//! a worker's job) would both copy what the ledger does not yet hold: duplicates. So every
//! run first claims `user@host:port` in the store, renews the claim while it runs, and binds
//! its ledger writes to the claim's generation (a fencing token, see the store's `claims`).
//! A run that cannot renew stops between messages, without DELE, before its lease expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailferry_store::{ClaimAttempt, ClaimHolder, HeldBy, SourceClaim, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};

/// How a run claims its source.
#[derive(Debug, Clone)]
pub struct ClaimConfig {
    /// Who we are, for whoever finds the mailbox busy.
    pub holder: ClaimHolder,
    /// How long a claim lasts without renewal (renewed every third of it).
    pub lease: Duration,
    /// Wait for a busy mailbox (checking every `poll`) instead of failing at once.
    pub wait: bool,
    pub poll: Duration,
}

impl Default for ClaimConfig {
    fn default() -> Self {
        Self { holder: this_process("mailferry"), lease: Duration::from_secs(30), wait: false, poll: Duration::from_secs(2) }
    }
}

/// This process as a claim holder, described as `what (pid N on HOST)`.
pub fn this_process(what: &str) -> ClaimHolder {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let pid = std::process::id();
    ClaimHolder { holder: format!("{what} (pid {pid} on {host})"), host, pid }
}

/// True when `held` is a process of this host that no longer exists (killed): its claim can
/// be taken over at once instead of after its lease. Only where /proc tells (Linux).
fn holder_is_gone(held: &HeldBy, me: &ClaimHolder) -> bool {
    held.host == me.host
        && held.pid != me.pid
        && held.pid != 0
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{}", held.pid)).exists()
}

/// A held claim, renewed in the background until dropped or released.
#[derive(Debug)]
pub(crate) struct HeldClaim {
    pub claim: SourceClaim,
    renewal: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl HeldClaim {
    /// True when the claim was taken over or could not be renewed in time: the run was
    /// stopped through its cancel token and must not count as finished.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub async fn release(self, store: &dyn Store) {
        self.renewal.abort();
        if !self.lost() {
            if let Err(e) = store.release_source(&self.claim).await {
                tracing::warn!(error = %e, "releasing the source claim failed; it expires with its lease");
            }
        }
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Claim `key`, waiting if configured; then renew it until released, cancelling `stop`
/// when it is lost.
pub(crate) async fn acquire(
    store: Arc<dyn Store>,
    key: &str,
    config: &ClaimConfig,
    cancel: &CancellationToken,
    stop: CancellationToken,
) -> Result<HeldClaim> {
    let mut take_over = None;
    let claim = loop {
        match store.claim_source(key, &config.holder, config.lease, take_over).await? {
            ClaimAttempt::Claimed(claim) => break claim,
            ClaimAttempt::Held(held) if holder_is_gone(&held, &config.holder) && take_over != Some(held.generation) => {
                tracing::warn!(holder = %held.holder, "the source mailbox's previous holder is gone; taking its claim over");
                take_over = Some(held.generation);
            }
            ClaimAttempt::Held(held) if config.wait && !cancel.is_cancelled() => {
                tracing::info!(holder = %held.holder, "the source mailbox is busy; waiting");
                tokio::select! {
                    () = tokio::time::sleep(config.poll) => {}
                    () = cancel.cancelled() => {}
                }
            }
            ClaimAttempt::Held(held) => return Err(EngineError::SourceBusy { mailbox: key.to_owned(), holder: held }),
        }
    };
    let lost = Arc::new(AtomicBool::new(false));
    let renewal = tokio::spawn(renew(store, claim.clone(), config.lease, Arc::clone(&lost), stop));
    Ok(HeldClaim { claim, renewal, lost })
}

/// Renew every third of the lease; after a failure, retry every second. Lost (taken over),
/// or unrenewed for two thirds of the lease: mark lost and stop the run, which then ends
/// between messages with nothing deleted, while the lease still covers it.
async fn renew(store: Arc<dyn Store>, claim: SourceClaim, lease: Duration, lost: Arc<AtomicBool>, stop: CancellationToken) {
    let every = lease / 3;
    let retry = every.min(Duration::from_secs(1));
    let mut renewed = Instant::now();
    let mut next = renewed + every;
    loop {
        tokio::time::sleep_until(next).await;
        let now = Instant::now();
        let give_up = match store.renew_source(&claim, lease).await {
            Ok(true) => {
                renewed = now;
                next = now + every;
                false
            }
            Ok(false) => {
                tracing::warn!("the source claim was taken over by another run; stopping");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the source claim failed");
                next = now + retry;
                now.duration_since(renewed) >= lease.saturating_sub(every)
            }
        };
        if give_up {
            lost.store(true, Ordering::SeqCst);
            stop.cancel();
            return;
        }
    }
}
