//! Test messages: [`tricky_corpus`] has one message per way naive mail code goes wrong
//! (dot lines, bare LF, 8-bit headers, huge lines, duplicates, missing headers);
//! [`realistic`] makes a deterministic benchmark mailbox.
//!
//! Everything is deterministic (a small xorshift, no crate), so failures reproduce.

/// The date in the Received header of the `received-only-date` message; a correct
/// INTERNALDATE for it is 05-Mar-2019 10:11:12 +0100.
pub const RECEIVED_ONLY_DATE: &str = "Tue, 05 Mar 2019 10:11:12 +0100";

/// Size of the `large-30mb` message, within a few hundred bytes.
pub const LARGE_SIZE: usize = 30 * 1024 * 1024;

/// xorshift64* — enough randomness for test data, reproducible from the seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is a fixed point of xorshift; mix the seed so 0 works too.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

fn h(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn msg(headers: &[&str], body: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for h in headers {
        m.extend_from_slice(h.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(body.as_bytes());
    m
}

/// Messages that break naive code, each named. CRLF line endings unless the name says
/// otherwise. Includes one 30 MB message ([`LARGE_SIZE`]), so this allocates ~31 MB.
pub fn tricky_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let base = |subject: &str, id: &str| -> Vec<String> {
        vec![
            "Received: from mx.example.net by mail.example.com; Mon, 04 Mar 2019 09:00:00 +0000"
                .into(),
            "Date: Mon, 04 Mar 2019 08:59:58 +0000".into(),
            "From: Alice <alice@example.net>".into(),
            "To: Bob <bob@example.com>".into(),
            format!("Subject: {subject}"),
            format!("Message-ID: <{id}@example.net>"),
        ]
    };
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();

    // RFC 1939 §3: every line starting with '.' must be stuffed; a lone "." would end RETR.
    out.push((
        "dot-lines",
        msg(
            &h(&base("dot lines", "dots")),
            ".hidden first line\r\nnormal\r\n.\r\nafter the lone dot\r\n. space\r\n.\r\n",
        ),
    ));
    out.push((
        "double-dot-lines",
        msg(
            &h(&base("double dots", "dotdot")),
            "..\r\n...\r\n..foo\r\nend\r\n",
        ),
    ));

    let mut bare = msg(
        &h(&base("bare LF", "barelf")),
        "line one\r\nline two\r\n.\r\nlast\r\n",
    );
    bare.retain(|b| *b != b'\r');
    out.push(("bare-lf", bare));

    out.push((
        "no-final-newline",
        msg(
            &h(&base("no final newline", "nofinal")),
            "first\r\nlast line without newline",
        ),
    ));

    // Raw 8-bit: Latin-1 'ä' (0xE4), UTF-8 'ö', and bytes that are never valid UTF-8.
    let mut eight = Vec::new();
    for l in h(&base("placeholder", "eightbit"))
        .iter()
        .filter(|l| !l.starts_with("Subject"))
    {
        eight.extend_from_slice(l.as_bytes());
        eight.extend_from_slice(b"\r\n");
    }
    eight.extend_from_slice(b"Subject: M\xE4rz \xC3\xB6 \xFF\xFE invalid\r\nX-Raw: \x80\x81\xC0\xAF\r\n\r\nBody \xE4\xF6\xFC\r\n");
    out.push(("8bit-headers", eight));

    let long = "x".repeat(120 * 1024);
    out.push((
        "long-line-120k",
        msg(&h(&base("120 KB line", "longline")), &format!("{long}\r\n")),
    ));

    out.push(("large-30mb", large_message(LARGE_SIZE, 30)));

    out.push(("empty-body", msg(&h(&base("empty body", "empty")), "")));

    let dup = msg(&h(&base("duplicate", "dup")), "same bytes twice\r\n");
    out.push(("duplicate-a", dup.clone()));
    out.push(("duplicate-b", dup));

    out.push((
        "same-message-id-1",
        msg(&h(&base("same id, version 1", "sameid")), "first text\r\n"),
    ));
    out.push((
        "same-message-id-2",
        msg(
            &h(&base("same id, version 2", "sameid")),
            "second, different text\r\n",
        ),
    ));

    // INTERNALDATE falls back to the newest (topmost) Received when Date is missing.
    out.push((
        "no-date-received",
        msg(
            &[
                "Received: from relay.example.com by mail.example.com; Wed, 12 Jun 2019 14:00:05 +0200",
                "Received: from client.example.net by relay.example.com; Wed, 12 Jun 2019 14:00:01 +0200",
                "From: Alice <alice@example.net>",
                "To: Bob <bob@example.com>",
                "Subject: no Date header",
                "Message-ID: <nodate@example.net>",
            ],
            "no date\r\n",
        ),
    ));
    let received =
        format!("Received: from mx.example.net by mail.example.com; {RECEIVED_ONLY_DATE}");
    out.push((
        "received-only-date",
        msg(
            &[
                &received,
                "From: Carol <carol@example.net>",
                "Subject: only Received carries a date",
                "Message-ID: <rcvonly@example.net>",
            ],
            "dated by Received only\r\n",
        ),
    ));
    let no_id: Vec<String> = base("no Message-ID", "-")
        .into_iter()
        .filter(|l| !l.starts_with("Message-ID"))
        .collect();
    out.push(("no-message-id", msg(&h(&no_id), "anonymous\r\n")));
    out
}

/// A deterministic multipart message of about `size` bytes with a base64-like attachment
/// (76-character lines of pseudo-random base64 alphabet).
pub fn large_message(size: usize, seed: u64) -> Vec<u8> {
    let mut m = msg(
        &[
            "Received: from mx.example.net by mail.example.com; Mon, 04 Mar 2019 09:00:00 +0000",
            "Date: Mon, 04 Mar 2019 08:59:58 +0000",
            "From: Alice <alice@example.net>",
            "To: Bob <bob@example.com>",
            "Subject: large attachment",
            &format!("Message-ID: <large-{seed}@example.net>"),
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary=\"=_b\"",
        ],
        "--=_b\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n--=_b\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"blob.bin\"\r\n\r\n",
    );
    let tail = b"--=_b--\r\n";
    let lines = size.saturating_sub(m.len() + tail.len()) / 78;
    push_base64_lines(&mut m, lines, &mut XorShift::new(seed));
    m.extend_from_slice(tail);
    m
}

fn push_base64_lines(m: &mut Vec<u8>, lines: usize, rng: &mut XorShift) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    m.reserve(lines * 78);
    for _ in 0..lines {
        let mut left = 76;
        while left > 0 {
            // ten 6-bit characters per random word
            let mut x = rng.next_u64();
            for _ in 0..10.min(left) {
                m.push(B64[(x & 63) as usize]);
                x >>= 6;
                left -= 1;
            }
        }
        m.extend_from_slice(b"\r\n");
    }
}

const WORDS: &[&str] = &[
    "the", "invoice", "meeting", "project", "please", "attached", "regards", "schedule", "review",
    "tomorrow", "budget", "thanks", "update", "customer", "order", "delivery", "report", "team",
    "question", "answer", "monday", "friday", "office", "contract", "draft", "final", "call",
];

/// A benchmark mailbox of `n` messages: ~87% 2–20 KB text, ~12% with a 150–750 KB
/// attachment, ~1% with a 1–4 MB attachment (about 88 KB on average), each with a
/// unique Message-ID, Date and Received. Same `(n, seed)`, same bytes.
pub fn realistic(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = XorShift::new(seed);
    (0..n).map(|i| realistic_one(i, seed, &mut rng)).collect()
}

fn realistic_one(i: usize, seed: u64, rng: &mut XorShift) -> Vec<u8> {
    // 2015-01-01 plus up to ~10 years
    let t = 1_420_070_400 + rng.range(0, 315_360_000);
    let class = rng.range(0, 999);
    let text_size = rng.range(2 * 1024, 20 * 1024) as usize;
    let attach = match class {
        0..=9 => rng.range(1024 * 1024, 4 * 1024 * 1024) as usize,
        10..=129 => rng.range(150 * 1024, 750 * 1024) as usize,
        _ => 0,
    };
    let sender = rng.range(1, 500);
    let mut m = format!(
        "Received: from mx{mx}.example.net (mx{mx}.example.net [192.0.2.{mx}]) by mail.example.com with ESMTPS id {id:016x}; {rcv}\r\n\
         Date: {date}\r\n\
         From: \"Sender {sender}\" <sender{sender}@example.net>\r\n\
         To: user@example.com\r\n\
         Subject: Realistic message {i} of seed {seed}\r\n\
         Message-ID: <{seed:x}.{i}.{id:016x}@example.net>\r\n\
         MIME-Version: 1.0\r\n",
        mx = 1 + i % 9,
        id = rng.next_u64(),
        rcv = rfc2822(t),
        date = rfc2822(t - rng.range(1, 120)),
    )
    .into_bytes();
    if attach > 0 {
        m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"=_r\"\r\n\r\n--=_r\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    } else {
        m.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    }
    let start = m.len();
    let mut line = 0;
    while m.len() - start < text_size {
        let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        m.extend_from_slice(w.as_bytes());
        line += w.len() + 1;
        if line > 70 {
            m.extend_from_slice(b"\r\n");
            line = 0;
        } else {
            m.push(b' ');
        }
    }
    m.extend_from_slice(b"\r\n");
    if attach > 0 {
        m.extend_from_slice(b"--=_r\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"doc.pdf\"\r\n\r\n");
        push_base64_lines(&mut m, attach / 78, rng);
        m.extend_from_slice(b"--=_r--\r\n");
    }
    m
}

/// `Tue, 05 Mar 2019 10:11:12 +0000` from a Unix time (UTC).
pub fn rfc2822(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DOW: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DOW[(days % 7) as usize],
        MON[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Independent of the engine's normaliser on purpose: tests compare the engine's output
/// against this oracle.
///
/// Bare LF becomes CRLF; existing CRLF stays; a last line without newline stays as is.
/// (What IMAP requires of an appended message, RFC 3501 §4.3.)
pub fn normalize_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(normalize_crlf(b"\n\n"), b"\r\n\r\n");
        assert_eq!(normalize_crlf(b"x\r"), b"x\r");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_551_780_672), "Tue, 05 Mar 2019 10:11:12 +0000");
    }

    #[test]
    fn corpus_shape() {
        let c = tricky_corpus();
        let get = |n: &str| &c.iter().find(|(k, _)| *k == n).unwrap().1;
        assert!(!get("bare-lf").contains(&b'\r'));
        assert!(!get("no-final-newline").ends_with(b"\n"));
        assert!(std::str::from_utf8(get("8bit-headers")).is_err());
        assert_eq!(get("duplicate-a"), get("duplicate-b"));
        assert!(get("large-30mb").len().abs_diff(LARGE_SIZE) < 200);
        assert!(get("empty-body").ends_with(b"\r\n\r\n"));
        let mut names: Vec<_> = c.iter().map(|(n, _)| *n).collect();
        names.dedup();
        assert_eq!(names.len(), c.len());
    }

    #[test]
    fn realistic_mix() {
        let a = realistic(2000, 7);
        assert_eq!(a, realistic(2000, 7));
        let avg = a.iter().map(Vec::len).sum::<usize>() / a.len();
        println!("realistic(2000, 7): average {} KB", avg / 1024);
        assert!((60 * 1024..120 * 1024).contains(&avg), "average {avg}");
        let mut ids: Vec<&[u8]> = a
            .iter()
            .map(|m| {
                let p = m.windows(12).position(|w| w == b"Message-ID: ").unwrap();
                &m[p..p + 60]
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len());
    }
}
