//! Bounded metric label values for host names.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The values a `host` label may take. Host names come from jobs, which any write-scope
/// token can create, so labelling by them as they come would let a caller grow the metric
/// set without bound (every distinct label value is a series kept for the life of the
/// process, and in Prometheus). The first `limit` distinct hosts seen keep their name;
/// every later one is labelled [`HostLabels::OTHER`].
#[derive(Debug)]
pub struct HostLabels {
    limit: AtomicUsize,
    seen: Mutex<HashSet<String>>,
}

impl HostLabels {
    /// The label value of every host beyond the limit.
    pub const OTHER: &'static str = "other";
    /// Distinct host label values by default (`api.metrics_max_hosts`).
    pub const DEFAULT_LIMIT: usize = 100;

    pub fn new(limit: usize) -> Self {
        Self { limit: AtomicUsize::new(limit), seen: Mutex::new(HashSet::new()) }
    }

    /// The process's set, used by the engine's session gauges (the binary sets its limit
    /// from the configuration at start-up).
    pub fn global() -> &'static HostLabels {
        static GLOBAL: OnceLock<HostLabels> = OnceLock::new();
        GLOBAL.get_or_init(|| HostLabels::new(Self::DEFAULT_LIMIT))
    }

    /// Hosts already named keep their label; the limit applies to hosts seen from now on.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The label value for `host`: its name (lower case, without a trailing dot) while
    /// fewer than the limit have been named, else `other`.
    pub fn label(&self, host: &str) -> String {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&host) {
            return host;
        }
        if seen.len() < self.limit.load(Ordering::Relaxed) {
            seen.insert(host.clone());
            return host;
        }
        Self::OTHER.to_owned()
    }

    /// Hosts named so far.
    pub fn named(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
