//! Fault-injection soak (issue 13, "Prove it"; DESIGN.md §2 invariants 1, 2 and 7): a
//! 2,000-message POP3 → IMAP job with `--delete after-verified` runs through seeded fault
//! proxies on *both* sides (dropped, stalled, truncated and reset connections at random byte
//! offsets) and is rerun until it succeeds. After every run, nothing is lost (each message is
//! at the source or the destination), nothing is doubled, and nothing was deleted at the
//! source without its copy at the destination; at the end every message is at the
//! destination exactly once, byte for byte, and the source is empty.
//!
//! Seed: `MAILFERRY_SOAK_SEED` (default 2026). The figures are printed with `--nocapture`:
//! `cargo test -p mailferry-tests --test adversity soak -- --nocapture`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailferry_engine::{run_job, DrainJob, EngineConfig, Outcome, RetryPolicy, Target};
use mailferry_model::{
    Credential, DeletePolicy, ImapAuth, ImapEndpoint, LedgerState, Security, TlsOptions,
};
use mailferry_store::{SqliteStore, Store};
use mailferry_tests::faultproxy::{FaultCounts, FaultMix, FaultPlan, FaultProxy};
use mailferry_tests::{normalize_crlf, Dovecot};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 2000;
/// Bound on the retry loop: the proxies stop injecting after their caps, so far fewer do.
const MAX_RUNS: usize = 200;
/// Faults each proxy injects at most (then it forwards untouched, so the loop ends). The
/// IMAP side runs out first, so that the last runs finish copying and meet POP3 faults in
/// their listing, DELE and QUIT phases.
const POP3_CAP: u64 = 60;
const IMAP_CAP: u64 = 40;
const MIN_FAULTS: u64 = 50;
/// The client gives up on a silent server after this; a stall lasts longer.
const IO_TIMEOUT: Duration = Duration::from_millis(1500);

fn seed() -> u64 {
    std::env::var("MAILFERRY_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026)
}

/// Small distinct messages (200 B – 6 KB bodies, ~6 MB in all) with what a wire cut can
/// break: dot-leading lines (RFC 1939 §3 byte-stuffing), a lone "." line, and in one message
/// in twenty bare LF line endings (the destination receives them as CRLF).
fn corpus(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let eol: &[u8] = if i % 20 == 7 { b"\n" } else { b"\r\n" };
            let mut m = Vec::new();
            for h in [
                format!("Message-ID: <soak.{seed}.{i}@lab.example>"),
                "From: \"Soak\" <soak@example.net>".to_string(),
                format!("Subject: soak {i} of {n}"),
            ] {
                m.extend_from_slice(h.as_bytes());
                m.extend_from_slice(eol);
            }
            m.extend_from_slice(eol);
            let body = rng.gen_range(200..6000);
            let start = m.len();
            while m.len() - start < body {
                match rng.gen_range(0..40) {
                    0 => m.extend_from_slice(b".leading dot"),
                    1 => m.extend_from_slice(b".."),
                    2 => m.push(b'.'),
                    _ => {
                        let len = rng.gen_range(1..76);
                        m.extend((0..len).map(|_| rng.gen_range(b' '..=b'~')));
                    }
                }
                m.extend_from_slice(eol);
            }
            m
        })
        .collect()
}

fn config() -> EngineConfig {
    let mut c = EngineConfig {
        retry: RetryPolicy { attempts: 2, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) },
        ..EngineConfig::default()
    };
    c.pop3.io_timeout = IO_TIMEOUT;
    c.pop3.connect_timeout = IO_TIMEOUT;
    c.imap.io_timeout = IO_TIMEOUT;
    c.imap.connect_timeout = IO_TIMEOUT;
    c
}

fn job(pop_port: u16, imap_port: u16) -> DrainJob {
    let plain = TlsOptions { allow_plaintext: true, ..TlsOptions::default() };
    DrainJob {
        job_id: None,
        save_rotated: None,
        source: crate::lying::plain_source(pop_port, "src", "src-pw"),
        target: Target::Imap(ImapEndpoint {
            host: "127.0.0.1".into(),
            port: imap_port,
            security: Security::None,
            username: "dst".into(),
            credential: Credential::Password(SecretString::from("dst-pw")),
            auth: ImapAuth::Auto,
            tls: plain,
            folder: "INBOX".into(),
            flags: vec![],
        }),
        delete: DeletePolicy::AfterVerified,
        dry_run: false,
        max_message_bytes: None,
        verify: Default::default(),
    }
}

/// The mailbox's invariants at a moment between runs; panics naming the run.
struct Books {
    /// Expected destination bytes -> index in the corpus.
    index: HashMap<Vec<u8>, usize>,
}

impl Books {
    fn check(&self, lab: &Dovecot, run: usize) -> (usize, usize) {
        let mut at_dst = vec![0u32; self.index.len()];
        for m in lab.messages("dst") {
            let i = *self.index.get(&m).unwrap_or_else(|| {
                panic!("run {run}: the destination holds bytes that are no source message ({} bytes)", m.len())
            });
            at_dst[i] += 1;
        }
        let mut at_src = vec![false; self.index.len()];
        for m in lab.messages("src") {
            let i = *self.index.get(&normalize_crlf(&m)).expect("the source holds only seeded messages");
            at_src[i] = true;
        }
        let doubled: Vec<usize> = (0..at_dst.len()).filter(|&i| at_dst[i] > 1).collect();
        assert!(
            doubled.is_empty(),
            "run {run}: {} messages doubled at the destination, e.g. #{:?}",
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        );
        let lost: Vec<usize> = (0..at_dst.len()).filter(|&i| at_dst[i] == 0 && !at_src[i]).collect();
        assert!(
            lost.is_empty(),
            "run {run}: {} messages deleted at the source without a copy, e.g. #{:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        (at_src.iter().filter(|&&s| s).count(), at_dst.iter().filter(|&&d| d == 1).count())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_messages_through_faults_on_both_sides_arrive_exactly_once() {
    let seed = seed();
    let lab = Dovecot::start();
    lab.add_user("src", "src-pw");
    lab.add_user("dst", "dst-pw");
    let msgs = corpus(MESSAGES, seed);
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    lab.seed("src", &msgs);
    let books = Books { index: msgs.iter().enumerate().map(|(i, m)| (normalize_crlf(m), i)).collect() };
    assert_eq!(books.index.len(), MESSAGES, "distinct messages");

    // POP3 carries the bodies towards us, IMAP away from us: per-MiB faults strike the bulk
    // of each. Per-connection faults hit what every session carries whatever is left to
    // copy: on POP3 the first 160 KiB either way (greeting, CAPA, the ~75 KB UIDL and LIST
    // listings, RETR and DELE commands, and once everything is copied the ~55 KB of DELE
    // replies and QUIT), on IMAP the first 64 KiB (login, in-doubt lookups, APPEND replies).
    let plan = |s: u64, per_connection: f64, window_kib: u64, per_mib: f64, max_faults: u64| FaultPlan {
        per_connection,
        connection_window: window_kib * 1024,
        per_mib,
        max_faults,
        mix: FaultMix::default(),
        stall: IO_TIMEOUT + Duration::from_secs(1),
        ..FaultPlan::seeded(s)
    };
    let pop = FaultProxy::start(lab.pop3_port(), plan(seed, 0.5, 160, 1.0, POP3_CAP));
    let imap = FaultProxy::start(lab.imap_port(), plan(seed.wrapping_add(1), 0.3, 64, 4.0, IMAP_CAP));

    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&state.path().join("state.db")).await.unwrap());
    let job = job(pop.port(), imap.port());
    let config = config();

    let started = Instant::now();
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut last_errors: Vec<String> = Vec::new();
    let mut outcomes: HashMap<&str, u32> = HashMap::new();
    let mut runs = 0;
    // Failed runs that ended with every message at the destination: cut while listing,
    // DELEing or QUITting (or in the last APPEND's reply).
    let mut failed_after_copy = 0;
    let report = loop {
        runs += 1;
        assert!(
            runs <= MAX_RUNS,
            "no successful run in {MAX_RUNS}; faults: pop3 {}, imap {}; errors {errors:?}; last {last_errors:#?}",
            pop.faults(),
            imap.faults()
        );
        // Every await in a run is bounded by the I/O timeouts: a run that outlasts this hangs.
        let bounded = tokio::time::timeout(
            Duration::from_secs(120),
            run_job(store.clone(), &job, &config, None, CancellationToken::new()),
        );
        let Ok(run) = bounded.await else {
            panic!("run {runs} hung for 2 minutes; faults so far: pop3 {:?}, imap {:?}", pop.events(), imap.events());
        };
        let (src_left, dst_now) = books.check(&lab, runs);
        match run {
            Ok(report) => {
                let name = match report.outcome {
                    Outcome::Succeeded => "succeeded",
                    Outcome::Partial => "partial",
                    Outcome::Cancelled => "cancelled",
                };
                *outcomes.entry(name).or_default() += 1;
                if report.outcome == Outcome::Succeeded {
                    break report;
                }
                last_errors.push(format!("run {runs}: {name}: {:?}", report.summary.failures));
            }
            Err(e) => {
                *outcomes.entry("failed").or_default() += 1;
                if dst_now == MESSAGES {
                    failed_after_copy += 1;
                }
                let text = e.redacted();
                // Group by the error's shape: its first words, numbers blanked.
                let shape: String = text
                    .chars()
                    .take_while(|c| *c != '"' && *c != '(')
                    .take(70)
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                *errors.entry(format!("{:?}: {shape}", e.class())).or_default() += 1;
                last_errors.push(format!("run {runs}: {text}"));
            }
        }
        if last_errors.len() > 8 {
            last_errors.remove(0);
        }
        eprintln!(
            "soak run {runs}: src {src_left}, dst {dst_now}, faults pop3 {} imap {}; {}",
            pop.faults().total(),
            imap.faults().total(),
            last_errors.last().map_or("", String::as_str)
        );
    };
    let elapsed = started.elapsed();

    // Exactly once and byte-exact at the destination; the source is empty.
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| normalize_crlf(m)).collect();
    let mut got = lab.messages("dst");
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "messages at the destination");
    assert!(got == want, "the destination holds exactly the source's bytes");
    assert_eq!(lab.message_count("src"), 0, "after-verified: the source is empty; last report {report:?}");
    // The ledger agrees: every message read back and matched (deleted at the source, or
    // `verified` where the QUIT reply was lost), none merely copied, in doubt or failed.
    let ledger = store.ledger(report.job).await.unwrap();
    let mut states: HashMap<&str, usize> = HashMap::new();
    for e in &ledger {
        *states.entry(e.state.as_str()).or_default() += 1;
    }
    let count = |s: LedgerState| states.get(s.as_str()).copied().unwrap_or(0);
    let confirmed = count(LedgerState::Verified) + count(LedgerState::SourceDeleted);
    assert_eq!(confirmed, MESSAGES, "ledger states {states:?}");

    let (pf, imf): (FaultCounts, FaultCounts) = (pop.faults(), imap.faults());
    let total = pf + imf;
    eprintln!("fault soak (seed {seed}): {MESSAGES} messages, {:.1} MB, delete after-verified", bytes as f64 / 1e6);
    eprintln!("  POP3 proxy: {pf}; {} connections", pop.connections());
    eprintln!("  IMAP proxy: {imf}; {} connections", imap.connections());
    eprintln!("  total:      {total}");
    eprintln!(
        "  runs: {runs} ({outcomes:?}; {failed_after_copy} failed with the copy complete), {:.1} s",
        elapsed.as_secs_f64()
    );
    eprintln!("  run errors by class: {errors:?}");
    eprintln!("  ledger: {states:?}");
    eprintln!("  result: {MESSAGES} of {MESSAGES} at the destination exactly once, byte-exact; source empty");
    assert!(total.total() >= MIN_FAULTS, "only {total} injected: raise the rates");
}
