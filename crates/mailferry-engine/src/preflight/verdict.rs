//! The pure half of a preflight: from what the servers said (facts) to reasons, a verdict
//! and an estimate. No I/O, so every rule is unit-tested here.

use std::collections::HashMap;

use mailferry_model::preflight::{
    MailboxPreflight, PreflightRow, PreflightTotals, Reason, ReasonCode, SourceFacts, TargetFacts, TlsFacts, Verdict,
};

/// A certificate expiring sooner than this is a warning.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

/// A quota left with less than this share free after the migration is a warning.
const QUOTA_TIGHT_PERCENT: u64 = 10;

/// How fast this installation copies, for estimates (docs/OPERATIONS.md, "Preflight").
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Bytes per second one mailbox's run moves.
    pub bytes_per_sec: f64,
    /// Seconds each message costs beyond its bytes (RETR, APPEND, read-back round trips).
    pub secs_per_message: f64,
    /// Connecting, logging in, listing: once per run.
    pub secs_per_run: f64,
}

impl Default for Throughput {
    /// The documented default: 2 MiB/s and 20 ms a message per mailbox, 5 s a run.
    fn default() -> Self {
        Self { bytes_per_sec: 2.0 * 1024.0 * 1024.0, secs_per_message: 0.02, secs_per_run: 5.0 }
    }
}

/// What one mailbox's checks found, before judging.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub source: SourceFacts,
    pub target: TargetFacts,
    /// Failures that stopped a side: their code and detail (already clipped, no secret).
    pub failures: Vec<Reason>,
    /// LIST sizes of the source (empty when not reached).
    pub sizes: Vec<u64>,
    /// The job's `max_message_bytes`.
    pub max_message_bytes: Option<u64>,
    /// The target is an IMAP server (the folder, quota and capability rules apply).
    pub imap_target: bool,
    /// Whether the source connection was plaintext, and the target's (allowed by config).
    pub source_plaintext: bool,
    pub target_plaintext: bool,
    /// The certificates' `notAfter`, Unix seconds.
    pub source_not_after: Option<i64>,
    pub target_not_after: Option<i64>,
}

/// Judge one mailbox: its reasons (failures first, then what the facts say), its verdict
/// and its estimate. `now` is Unix seconds.
pub fn judge(mut f: Findings, now: i64, speed: &Throughput) -> MailboxPreflight {
    let mut reasons = std::mem::take(&mut f.failures);
    let mut add = |code: ReasonCode, detail: String| reasons.push(Reason { code, detail });
    let s = &f.source;
    if s.logged_in {
        if !s.uidl {
            add(ReasonCode::SourceNoUidl, "the POP3 server has no UIDL: messages could not be tracked exactly once".into());
        }
        if s.duplicate_uidls > 0 {
            add(ReasonCode::SourceDuplicateUidl, format!("{} unique-ids name more than one message; those messages stay at the source", s.duplicate_uidls));
        }
        if s.invalid_uidls > 0 {
            add(ReasonCode::SourceInvalidUidl, format!("{} messages have an invalid unique-id and stay at the source", s.invalid_uidls));
        }
        if let Some(d) = s.login_delay.filter(|d| *d > 0) {
            add(ReasonCode::SourceLoginDelay, format!("LOGIN-DELAY {d}: the server wants {d} s between logins (this preflight logged in)"));
        }
        if !s.pipelining {
            add(ReasonCode::SourceNoPipelining, "no PIPELINING: one round trip per message".into());
        }
        if f.source_plaintext {
            add(ReasonCode::TlsPlaintext, "the source connection is not encrypted".into());
        }
        tls_reasons(&mut add, "source", s.tls.as_ref(), f.source_not_after, now);
    }
    let t = &mut f.target;
    if t.logged_in && f.imap_target {
        if !t.uidplus {
            add(ReasonCode::TargetNoUidplus, "no UIDPLUS: copies are found again by Message-ID and size".into());
        }
        match t.folder.as_deref() {
            Some("will be created") => add(ReasonCode::TargetFolderMissing, "the target folder does not exist; the run will create it".into()),
            Some(why @ ("cannot be created" | "not selectable")) => {
                add(ReasonCode::TargetFolderNotCreatable, format!("the target folder {why}"))
            }
            _ => {}
        }
        if let (Some(used), Some(limit)) = (t.quota_used_bytes, t.quota_limit_bytes) {
            let free = limit.saturating_sub(used);
            if s.logged_in && s.bytes > free {
                add(ReasonCode::TargetQuotaInsufficient, format!("the source holds {} bytes; the destination quota leaves {free} of {limit} free", s.bytes));
            } else if s.logged_in && free - s.bytes < limit / 100 * QUOTA_TIGHT_PERCENT {
                add(ReasonCode::TargetQuotaTight, format!("after the migration less than {QUOTA_TIGHT_PERCENT}% of the {limit}-byte quota stays free"));
            }
        }
        if f.target_plaintext {
            add(ReasonCode::TlsPlaintext, "the target connection is not encrypted".into());
        }
        tls_reasons(&mut add, "target", t.tls.as_ref(), f.target_not_after, now);
    }
    if s.logged_in {
        if let Some(limit) = t.append_limit.filter(|_| f.imap_target && t.logged_in) {
            t.over_append_limit = f.sizes.iter().filter(|&&b| b > limit).count() as u64;
            if t.over_append_limit > 0 {
                add(ReasonCode::MessageOverAppendlimit, format!("{} messages are over the destination's APPENDLIMIT of {limit} bytes and will be skipped", t.over_append_limit));
            }
        }
        if let Some(max) = f.max_message_bytes {
            t.over_max_message_bytes = f.sizes.iter().filter(|&&b| b > max).count() as u64;
            if t.over_max_message_bytes > 0 {
                add(ReasonCode::MessageOverMaxBytes, format!("{} messages are over max_message_bytes ({max}) and will be skipped", t.over_max_message_bytes));
            }
        }
    }
    let verdict = verdict_of(&reasons);
    let estimate_secs = if s.logged_in { estimate(s.messages, s.bytes, speed) } else { 0 };
    MailboxPreflight { verdict, reasons, source: f.source, target: f.target, estimate_secs }
}

fn tls_reasons(add: &mut impl FnMut(ReasonCode, String), side: &str, tls: Option<&TlsFacts>, not_after: Option<i64>, now: i64) {
    let Some(tls) = tls else { return };
    if matches!(tls.version.as_str(), "TLSv1.0" | "TLSv1.1" | "SSLv3") {
        add(ReasonCode::TlsOldVersion, format!("the {side} negotiated {}", tls.version));
    }
    if let Some(r) = expiry_reason(side, not_after, tls.not_after.as_deref(), now) {
        add(r.code, r.detail);
    }
}

/// The certificate-expiry reason of one side, from its `notAfter` in Unix seconds.
pub fn expiry_reason(side: &str, not_after: Option<i64>, shown: Option<&str>, now: i64) -> Option<Reason> {
    let left = not_after? - now;
    (left < EXPIRY_WARNING_SECS).then(|| Reason {
        code: ReasonCode::TlsCertificateExpiresSoon,
        detail: format!("the {side} certificate expires {} ({} days)", shown.unwrap_or("soon"), left.max(0) / 86_400),
    })
}

/// The worst severity among the reasons.
pub fn verdict_of(reasons: &[Reason]) -> Verdict {
    reasons.iter().map(|r| r.code.severity()).max().unwrap_or(Verdict::Ready)
}

/// Seconds one mailbox's run should take.
pub fn estimate(messages: u64, bytes: u64, speed: &Throughput) -> u64 {
    let secs = speed.secs_per_run + bytes as f64 / speed.bytes_per_sec.max(1.0) + messages as f64 * speed.secs_per_message;
    secs.ceil().max(0.0) as u64
}

/// The batch's sums. Mailboxes of one source host run at most `per_host` at once, and
/// the whole batch at most `workers` at once: the estimate is the longest of the per-host
/// shares, the worker share and the longest single mailbox.
pub fn totals(rows: &[PreflightRow], hosts: &[String], per_host: usize, workers: usize) -> PreflightTotals {
    let mut t = PreflightTotals::default();
    let mut per_source: HashMap<&str, u64> = HashMap::new();
    let mut longest = 0u64;
    let mut sum = 0u64;
    for (row, host) in rows.iter().zip(hosts.iter().map(String::as_str).chain(std::iter::repeat(""))) {
        let p = &row.preflight;
        match p.verdict {
            Verdict::Ready => t.ready += 1,
            Verdict::Warning => t.warning += 1,
            Verdict::Blocked => t.blocked += 1,
        }
        t.messages += p.source.messages;
        t.bytes += p.source.bytes;
        *per_source.entry(host).or_default() += p.estimate_secs;
        longest = longest.max(p.estimate_secs);
        sum += p.estimate_secs;
    }
    let host_share = per_source.values().map(|s| s.div_ceil(per_host.max(1) as u64)).max().unwrap_or(0);
    t.estimate_secs = host_share.max(sum.div_ceil(workers.max(1) as u64)).max(longest);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_model::preflight::LargeMessage;

    fn good() -> Findings {
        Findings {
            source: SourceFacts { logged_in: true, uidl: true, pipelining: true, messages: 10, bytes: 1000, ..Default::default() },
            target: TargetFacts { logged_in: true, uidplus: true, folder: Some("exists".into()), ..Default::default() },
            sizes: vec![100; 10],
            imap_target: true,
            ..Default::default()
        }
    }

    fn codes(p: &MailboxPreflight) -> Vec<ReasonCode> {
        p.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn clean_mailbox_is_ready() {
        let p = judge(good(), 0, &Throughput::default());
        assert_eq!(p.verdict, Verdict::Ready, "{:?}", p.reasons);
        assert!(p.estimate_secs >= 5);
    }

    #[test]
    fn failed_login_blocks_and_skips_the_rest() {
        let mut f = good();
        f.source = SourceFacts::default();
        f.failures.push(Reason { code: ReasonCode::SourceLoginFailed, detail: "no".into() });
        let p = judge(f, 0, &Throughput::default());
        assert_eq!(p.verdict, Verdict::Blocked);
        assert_eq!(codes(&p), vec![ReasonCode::SourceLoginFailed]);
        assert_eq!(p.estimate_secs, 0);
    }

    #[test]
    fn uidl_problems() {
        let mut f = good();
        f.source.uidl = false;
        assert_eq!(judge(f, 0, &Throughput::default()).verdict, Verdict::Blocked);
        let mut f = good();
        f.source.duplicate_uidls = 2;
        f.source.invalid_uidls = 1;
        let p = judge(f, 0, &Throughput::default());
        assert_eq!(p.verdict, Verdict::Warning);
        assert_eq!(codes(&p), vec![ReasonCode::SourceDuplicateUidl, ReasonCode::SourceInvalidUidl]);
    }

    #[test]
    fn quota_headroom_against_the_source_total() {
        let mut f = good();
        (f.target.quota_used_bytes, f.target.quota_limit_bytes) = (Some(500), Some(1400));
        let p = judge(f.clone(), 0, &Throughput::default());
        assert_eq!(codes(&p), vec![ReasonCode::TargetQuotaInsufficient]);
        assert_eq!(p.verdict, Verdict::Blocked);
        f.target.quota_limit_bytes = Some(1550);
        assert_eq!(codes(&judge(f.clone(), 0, &Throughput::default())), vec![ReasonCode::TargetQuotaTight]);
        f.target.quota_limit_bytes = Some(100_000);
        assert_eq!(judge(f, 0, &Throughput::default()).verdict, Verdict::Ready);
    }

    #[test]
    fn oversized_messages_are_counted() {
        let mut f = good();
        f.sizes = vec![10, 5000, 20_000];
        f.target.append_limit = Some(10_000);
        f.max_message_bytes = Some(4000);
        let p = judge(f, 0, &Throughput::default());
        assert_eq!(codes(&p), vec![ReasonCode::MessageOverAppendlimit, ReasonCode::MessageOverMaxBytes]);
        assert_eq!((p.target.over_append_limit, p.target.over_max_message_bytes), (1, 2));
        assert_eq!(p.verdict, Verdict::Warning);
    }

    #[test]
    fn folder_states() {
        let mut f = good();
        f.target.folder = Some("will be created".into());
        assert_eq!(codes(&judge(f.clone(), 0, &Throughput::default())), vec![ReasonCode::TargetFolderMissing]);
        f.target.folder = Some("cannot be created".into());
        assert_eq!(judge(f, 0, &Throughput::default()).verdict, Verdict::Blocked);
    }

    #[test]
    fn expiry_and_old_tls() {
        let now = 1_000_000_000;
        assert!(expiry_reason("source", Some(now + 3 * 86_400), None, now).is_some());
        assert!(expiry_reason("source", Some(now + 30 * 86_400), None, now).is_none());
        assert!(expiry_reason("source", None, None, now).is_none());
        let mut f = good();
        f.target.tls = Some(TlsFacts { version: "TLSv1.1".into(), ..Default::default() });
        f.target_not_after = Some(now + 86_400);
        let p = judge(f, now, &Throughput::default());
        assert_eq!(codes(&p), vec![ReasonCode::TlsOldVersion, ReasonCode::TlsCertificateExpiresSoon]);
    }

    #[test]
    fn batch_totals_respect_per_host_caps() {
        let row = |n, verdict, secs| PreflightRow {
            row: n,
            preflight: MailboxPreflight {
                verdict,
                reasons: vec![],
                source: SourceFacts { messages: 2, bytes: 10, largest: vec![LargeMessage { number: 1, bytes: 10 }], ..Default::default() },
                target: TargetFacts::default(),
                estimate_secs: secs,
            },
        };
        let rows = [row(1, Verdict::Ready, 100), row(2, Verdict::Warning, 100), row(3, Verdict::Blocked, 0)];
        let hosts = ["a".to_owned(), "a".to_owned(), "b".to_owned()];
        let t = totals(&rows, &hosts, 1, 8);
        assert_eq!((t.ready, t.warning, t.blocked, t.messages, t.bytes), (1, 1, 1, 6, 30));
        assert_eq!(t.estimate_secs, 200, "one at a time on host a");
        assert_eq!(totals(&rows, &hosts, 2, 8).estimate_secs, 100);
        assert_eq!(totals(&rows, &hosts, 2, 1).estimate_secs, 200, "one worker");
    }
}
