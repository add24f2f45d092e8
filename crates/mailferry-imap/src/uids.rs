//! UIDs on the wire, both ways, with no I/O: the compact UID sets we put in commands
//! (RFC 3501 §9 `sequence-set`: `5:9,12`) and the UID lists of `* SEARCH` responses
//! (RFC 3501 §7.2.5) we read.

use crate::wire::nz_number;

/// `uids` as compact UID sets of at most `per_set` UIDs each (sorted, without repeats):
/// consecutive UIDs become one `lo:hi` range. More sets than one keep each command short
/// (servers limit the command line; Dovecot's default is 64 KiB) and let them be pipelined.
pub(crate) fn uid_sets(uids: impl IntoIterator<Item = u32>, per_set: usize) -> Vec<String> {
    let mut sorted: Vec<u32> = uids.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.chunks(per_set.max(1)).map(compact).collect()
}

/// One sorted, repeat-free run of UIDs as a sequence-set.
fn compact(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let lo = uids[i];
        let mut hi = lo;
        while i + 1 < uids.len() && uids[i + 1] == hi.wrapping_add(1) && hi != u32::MAX {
            i += 1;
            hi = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if lo == hi {
            out.push_str(&lo.to_string());
        } else {
            out.push_str(&format!("{lo}:{hi}"));
        }
        i += 1;
    }
    out
}

/// The UIDs of a `* SEARCH` response line (after a `UID SEARCH`, RFC 3501 §6.4.8 they are
/// UIDs), added to `into`. `Ok(false)`: not a SEARCH response. More than `max` UIDs in
/// `into` in all is an error, found as soon as it happens: the server chose the count.
///
/// RFC 3501 §9: `"SEARCH" *(SP nz-number)`; RFC 7162 §3.1.5 may add `(MODSEQ n)` at the end
/// (only for searches on MODSEQ, which we do not ask, but harmless to accept).
pub(crate) fn parse_search(line: &[u8], into: &mut Vec<u32>, max: usize) -> Result<bool, String> {
    let Some(rest) = line.strip_prefix(b"* ") else { return Ok(false) };
    let (word, rest) = match rest.iter().position(|&b| b == b' ') {
        Some(sp) => (&rest[..sp], &rest[sp..]),
        None => (rest, &b""[..]),
    };
    if !word.eq_ignore_ascii_case(b"SEARCH") {
        return Ok(false);
    }
    let (numbers, modseq) = match rest.iter().position(|&b| b == b'(') {
        Some(open) => (&rest[..open], Some(&rest[open..])),
        None => (rest, None),
    };
    if let Some(m) = modseq {
        let inner = m.strip_prefix(b"(").and_then(|m| m.trim_ascii_end().strip_suffix(b")")).ok_or("a malformed SEARCH response")?;
        let mut parts = inner.split(|&b| b == b' ');
        let ok = parts.next().is_some_and(|k| k.eq_ignore_ascii_case(b"MODSEQ"))
            && parts.next().is_some_and(|n| !n.is_empty() && n.len() <= 20 && n.iter().all(u8::is_ascii_digit))
            && parts.next().is_none();
        if !ok {
            return Err("a malformed SEARCH response".into());
        }
    }
    // Empty pieces: a trailing space, or two spaces, which some servers send.
    for piece in numbers.split(|&b| b == b' ').filter(|p| !p.is_empty()) {
        let uid = std::str::from_utf8(piece).ok().and_then(nz_number).ok_or("a SEARCH result that is not a UID")?;
        if into.len() >= max {
            return Err(format!("more than {max} UIDs in a SEARCH response"));
        }
        into.push(uid);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compact_sets() {
        assert_eq!(uid_sets([5, 6, 7, 8, 9, 12], 256), vec!["5:9,12"]);
        assert_eq!(uid_sets([12, 5, 9, 7, 6, 8, 5], 256), vec!["5:9,12"]);
        assert_eq!(uid_sets([1, 3, 5], 256), vec!["1,3,5"]);
        assert_eq!(uid_sets([1, 2, 3, 4, 5], 2), vec!["1:2", "3:4", "5"]);
        assert_eq!(uid_sets([u32::MAX, u32::MAX - 1, 1], 256), vec![format!("1,{}:{}", u32::MAX - 1, u32::MAX)]);
        assert!(uid_sets([], 256).is_empty());
    }

    fn search(line: &[u8]) -> Result<Option<Vec<u32>>, String> {
        let mut v = Vec::new();
        Ok(parse_search(line, &mut v, 10)?.then_some(v))
    }

    #[test]
    fn search_responses() {
        assert_eq!(search(b"* SEARCH"), Ok(Some(vec![])));
        assert_eq!(search(b"* SEARCH 4"), Ok(Some(vec![4])));
        assert_eq!(search(b"* search 4 9 2"), Ok(Some(vec![4, 9, 2])));
        assert_eq!(search(b"* SEARCH 4 "), Ok(Some(vec![4])));
        assert_eq!(search(b"* SEARCH 4 9 (MODSEQ 917162500)"), Ok(Some(vec![4, 9])));
        assert_eq!(search(b"* 3 EXISTS"), Ok(None));
        assert_eq!(search(b"* SEARCHES 1"), Ok(None));
        assert_eq!(search(b"* ESEARCH (TAG \"a\") UID ALL 1:3"), Ok(None));
        assert_eq!(search(b"A1 OK SEARCH done"), Ok(None));
        for bad in [&b"* SEARCH 0"[..], b"* SEARCH x", b"* SEARCH 1:3", b"* SEARCH 99999999999", b"* SEARCH 1 (MODSEQ)", b"* SEARCH 1 (FOO 2)"] {
            assert!(search(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let eleven: String = (1..=11).map(|n| format!(" {n}")).collect();
        let err = search(format!("* SEARCH{eleven}").as_bytes()).unwrap_err();
        assert!(err.contains("more than 10 UIDs"), "{err}");
    }

    proptest! {
        #[test]
        fn search_never_panics_nor_exceeds(line in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..20) {
            let mut v = Vec::new();
            let _ = parse_search(&line, &mut v, max);
            prop_assert!(v.len() <= max);
        }

        #[test]
        fn search_like_text(tail in "[ 0-9()A-Za-z]{0,80}", max in 0usize..20) {
            let mut v = Vec::new();
            let _ = parse_search(format!("* SEARCH{tail}").as_bytes(), &mut v, max);
            prop_assert!(v.len() <= max);
        }

        #[test]
        fn search_reads_what_was_written(uids in proptest::collection::vec(1u32.., 0..50)) {
            let line: String = std::iter::once("* SEARCH".to_owned()).chain(uids.iter().map(|u| format!(" {u}"))).collect();
            let mut v = Vec::new();
            let is_search = parse_search(line.as_bytes(), &mut v, 50).unwrap();
            prop_assert!(is_search);
            prop_assert_eq!(v, uids);
        }

        /// Sets expand back to exactly the UIDs given, each set within its size.
        #[test]
        fn sets_round_trip(uids in proptest::collection::vec(1u32..200, 0..100), per in 1usize..40) {
            let sets = uid_sets(uids.iter().copied(), per);
            let mut back = Vec::new();
            for set in &sets {
                let mut n = 0;
                for piece in set.split(',') {
                    let (lo, hi) = match piece.split_once(':') {
                        Some((a, b)) => (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()),
                        None => (piece.parse().unwrap(), piece.parse().unwrap()),
                    };
                    prop_assert!(lo <= hi);
                    back.extend(lo..=hi);
                    n += hi - lo + 1;
                }
                prop_assert!(n as usize <= per);
            }
            let mut want = uids.clone();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(back, want);
        }
    }
}
