//! Pure parsing of the FETCH responses the destination index and the read-back read
//! (RFC 3501 §7.4.2): `* 3 FETCH (UID 5 RFC822.SIZE 1234)`, `* 3 FETCH (UID 5 BODY[] {1234}`
//! CRLF *literal* `)`, and its RFC 3516 form `BINARY[] ~{1234}` (a literal8). No I/O here.
//!
//! A response arrives as lines separated by literals. The reader keeps its *skeleton*: the
//! lines glued together, each literal left as its `{n}` announcement and its bytes not kept
//! (they are hashed or skipped as they arrive). At each literal the reader asks whether it
//! is the value of `BODY[]`; at the end, what the response said. RFC 3501 fixes no order
//! for the items, so the UID may come after the body.

/// The message item whose value is the body we want: the one we asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyItem {
    /// `BODY[]` (asked as `BODY.PEEK[]`, RFC 3501 §6.4.5).
    Body,
    /// `BINARY[]` (asked as `BINARY.PEEK[]`, RFC 3516 §4.2).
    Binary,
}

impl BodyItem {
    /// The item name in a response: `.PEEK` is never echoed (RFC 3501 §7.4.2).
    fn name(self) -> &'static [u8] {
        match self {
            Self::Body => b"BODY[]",
            Self::Binary => b"BINARY[]",
        }
    }
}

/// What one FETCH response (possibly still incomplete) says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FetchData {
    pub seq: u32,
    pub uid: Option<u32>,
    /// RFC822.SIZE: the message's size as the server announces it.
    pub size: Option<u64>,
    /// The body item given as a quoted string (legal, if odd, for a tiny message).
    pub body_quoted: Option<Vec<u8>>,
    /// The last literal of the skeleton is the value of the body item (so, for a skeleton
    /// that ends in a literal announcement, the bytes about to arrive are the message).
    pub last_literal_is_body: bool,
    /// INTERNALDATE as the server wrote it (`"07-Dec-2026 10:00:00 +0000"`), when asked for.
    pub internal_date: Option<String>,
    /// The closing parenthesis was seen.
    pub complete: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    Atom(&'a [u8]),
    Quoted(Vec<u8>),
    Literal,
}

struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Result<Option<Token<'a>>, String> {
        while self.s.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        let Some(&b) = self.s.get(self.i) else { return Ok(None) };
        match b {
            b'(' => {
                self.i += 1;
                Ok(Some(Token::Open))
            }
            b')' => {
                self.i += 1;
                Ok(Some(Token::Close))
            }
            b'"' => self.quoted().map(Some),
            b'{' => self.literal().map(Some),
            b'~' if self.s.get(self.i + 1) == Some(&b'{') => {
                self.i += 1;
                self.literal().map(Some)
            }
            _ => self.atom().map(Some),
        }
    }

    /// RFC 3501 §4.3: `"` ... `"` with `\"` and `\\` escapes, no CR or LF.
    fn quoted(&mut self) -> Result<Token<'a>, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Token::Quoted(out));
                }
                Some(b'\\') => {
                    let &escaped = self.s.get(self.i + 1).ok_or("unterminated quoted string")?;
                    out.push(escaped);
                    self.i += 2;
                }
                Some(b'\r' | b'\n') => return Err("line break in a quoted string".into()),
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// `{digits}` (or `{digits+}`): the literal's bytes are not in the skeleton.
    fn literal(&mut self) -> Result<Token<'a>, String> {
        let rest = &self.s[self.i + 1..];
        let close = rest.iter().position(|&b| b == b'}').ok_or("unterminated literal announcement")?;
        let digits = &rest[..close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err("malformed literal announcement".into());
        }
        self.i += close + 2;
        Ok(Token::Literal)
    }

    /// An atom, which may carry a bracketed section with spaces and parentheses inside
    /// (`BODY[HEADER.FIELDS (DATE FROM)]`) and a partial `<origin>`.
    fn atom(&mut self) -> Result<Token<'a>, String> {
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b' ' | b'(' | b')' | b'"' | b'{' => break,
                b'[' => {
                    let close = self.s[self.i..].iter().position(|&b| b == b']').ok_or("unterminated section")?;
                    self.i += close + 1;
                }
                _ => self.i += 1,
            }
        }
        if self.i == start {
            return Err("unexpected character in a FETCH response".into());
        }
        Ok(Token::Atom(&self.s[start..self.i]))
    }
}

/// Parse a FETCH response skeleton, `item` being the body item asked for. `Ok(None)`: some
/// other untagged response (EXISTS, EXPUNGE, OK, ...). An incomplete skeleton (one that
/// ends in a literal announcement) is parsed as far as it goes.
pub(crate) fn parse_fetch(skeleton: &[u8], item: BodyItem) -> Result<Option<FetchData>, String> {
    let mut t = Tokens { s: skeleton, i: 0 };
    if t.next()? != Some(Token::Atom(b"*")) {
        return Ok(None);
    }
    let Some(Token::Atom(seq)) = t.next()? else { return Ok(None) };
    let Some(seq) = std::str::from_utf8(seq).ok().and_then(crate::wire::nz_number) else { return Ok(None) };
    match t.next()? {
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case(b"FETCH") => {}
        _ => return Ok(None),
    }
    if t.next()? != Some(Token::Open) {
        return Err("FETCH response without its list".into());
    }
    let mut data = FetchData { seq, ..FetchData::default() };
    loop {
        let name = match t.next()? {
            None => return Ok(Some(data)),
            Some(Token::Close) => break,
            Some(Token::Atom(name)) => name,
            Some(_) => return Err("a FETCH item without a name".into()),
        };
        let is_body = name.eq_ignore_ascii_case(item.name());
        match t.next()? {
            None => return Ok(Some(data)),
            Some(Token::Literal) => data.last_literal_is_body = is_body,
            Some(Token::Quoted(q)) if is_body => data.body_quoted = Some(q),
            // A date-time is 26 characters (RFC 3501 §9); anything much longer is not one.
            Some(Token::Quoted(q)) if name.eq_ignore_ascii_case(b"INTERNALDATE") && q.len() <= 64 => {
                data.internal_date = String::from_utf8(q).ok();
            }
            Some(Token::Quoted(_)) => {}
            Some(Token::Atom(v)) => {
                let v = std::str::from_utf8(v).ok();
                if name.eq_ignore_ascii_case(b"UID") {
                    data.uid = Some(v.and_then(crate::wire::nz_number).ok_or("a FETCH UID that is not a number")?);
                } else if name.eq_ignore_ascii_case(b"RFC822.SIZE") {
                    let size = v.filter(|v| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())).and_then(|v| v.parse().ok());
                    data.size = Some(size.ok_or("a FETCH RFC822.SIZE that is not a number")?);
                }
            }
            // A parenthesised value (FLAGS, ENVELOPE, BODYSTRUCTURE): skip it whole, without
            // recursion, whatever its depth.
            Some(Token::Open) => {
                let mut depth = 1usize;
                while depth > 0 {
                    match t.next()? {
                        None => return Ok(Some(data)),
                        Some(Token::Open) => depth += 1,
                        Some(Token::Close) => depth -= 1,
                        Some(Token::Literal) => data.last_literal_is_body = false,
                        Some(_) => {}
                    }
                }
            }
            Some(Token::Close) => return Err("a FETCH item without a value".into()),
        }
    }
    if t.next()?.is_some() {
        return Err("text after the FETCH list".into());
    }
    data.complete = true;
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_fetch_body(skeleton: &[u8]) -> Result<Option<FetchData>, String> {
        parse_fetch(skeleton, BodyItem::Body)
    }

    #[test]
    fn sizes_and_bodies() {
        let f = parse_fetch_body(b"* 3 FETCH (UID 5 RFC822.SIZE 1234 INTERNALDATE \" 7-Dec-2026 10:00:00 +0100\")").unwrap().unwrap();
        assert_eq!(f.internal_date.as_deref(), Some(" 7-Dec-2026 10:00:00 +0100"));
        assert_eq!((f.seq, f.uid, f.size, f.complete), (3, Some(5), Some(1234), true));
        let f = parse_fetch_body(b"* 3 fetch (FLAGS (\\Seen $X) uid 5 BODY[] {12}").unwrap().unwrap();
        assert!(f.last_literal_is_body && !f.complete);
        assert_eq!(f.uid, Some(5));
        let f = parse_fetch_body(b"* 3 FETCH (BODY[] {12} UID 5)").unwrap().unwrap();
        assert!(f.last_literal_is_body && f.complete);
        assert_eq!(f.uid, Some(5));
        let f = parse_fetch_body(b"* 3 FETCH (ENVELOPE (NIL {3}").unwrap().unwrap();
        assert!(!f.last_literal_is_body);
        let f = parse_fetch_body(b"* 3 FETCH (BODY[HEADER.FIELDS (DATE)] {3}").unwrap().unwrap();
        assert!(!f.last_literal_is_body, "a section is not the whole message");
        let f = parse_fetch_body(b"* 3 FETCH (UID 7 BODY[] \"a\\\"b\")").unwrap().unwrap();
        assert_eq!(f.body_quoted.as_deref(), Some(&b"a\"b"[..]));
        assert_eq!(parse_fetch_body(b"* 3 EXISTS").unwrap(), None);
        assert_eq!(parse_fetch_body(b"* OK [UIDVALIDITY 1]").unwrap(), None);
        assert!(parse_fetch_body(b"* 3 FETCH (UID x)").is_err());
        assert!(parse_fetch_body(b"* 3 FETCH (UID 0)").is_err());
        assert!(parse_fetch_body(b"* 3 FETCH (UID 1) junk").is_err());
        assert!(parse_fetch_body(b"* 3 FETCH (RFC822.SIZE 99999999999999999999999)").is_err());
    }

    /// RFC 3516 §4.2: `BINARY[]` with a literal8, the UID before or after it; the item
    /// asked for is the body, the other one is not.
    #[test]
    fn binary_bodies() {
        let f = parse_fetch(b"* 2 FETCH (UID 7 BINARY[] ~{23}", BodyItem::Binary).unwrap().unwrap();
        assert!(f.last_literal_is_body && !f.complete);
        assert_eq!(f.uid, Some(7));
        let f = parse_fetch(b"* 2 FETCH (BINARY[] ~{23} UID 7)", BodyItem::Binary).unwrap().unwrap();
        assert!(f.last_literal_is_body && f.complete);
        assert_eq!(f.uid, Some(7));
        let f = parse_fetch(b"* 2 FETCH (binary[] ~{23}", BodyItem::Binary).unwrap().unwrap();
        assert!(f.last_literal_is_body);
        let f = parse_fetch(b"* 2 FETCH (UID 7 BINARY[] ~{23}", BodyItem::Body).unwrap().unwrap();
        assert!(!f.last_literal_is_body, "BINARY[] is not BODY[]");
        let f = parse_fetch(b"* 2 FETCH (UID 7 BODY[] {23}", BodyItem::Binary).unwrap().unwrap();
        assert!(!f.last_literal_is_body, "BODY[] is not BINARY[]");
        let f = parse_fetch(b"* 2 FETCH (BINARY[1] ~{3}", BodyItem::Binary).unwrap().unwrap();
        assert!(!f.last_literal_is_body, "a part is not the whole message");
        let f = parse_fetch(b"* 2 FETCH (UID 7 BINARY[] \"ab\")", BodyItem::Binary).unwrap().unwrap();
        assert_eq!(f.body_quoted.as_deref(), Some(&b"ab"[..]));
        let f = parse_fetch(b"* 2 FETCH (UID 7 BINARY[] NIL)", BodyItem::Binary).unwrap().unwrap();
        assert!(f.complete && f.body_quoted.is_none() && !f.last_literal_is_body);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_fetch(&bytes, BodyItem::Body);
            let _ = parse_fetch(&bytes, BodyItem::Binary);
        }

        #[test]
        fn never_panics_on_fetch_like_text(tail in "[ ()\\[\\]{}~+\"\\\\0-9A-Za-z.<>]{0,80}") {
            let _ = parse_fetch(format!("* 1 FETCH ({tail}").as_bytes(), BodyItem::Body);
            let _ = parse_fetch(format!("* 1 FETCH ({tail}").as_bytes(), BodyItem::Binary);
        }

        #[test]
        fn reads_what_was_written(uid in 1u32.., size in any::<u64>(), flags in "[A-Za-z]{0,8}", body_first in any::<bool>()) {
            let line = if body_first {
                format!("* 9 FETCH (BODY[] {{{size}}} FLAGS (\\{flags}) UID {uid} RFC822.SIZE {size})")
            } else {
                format!("* 9 FETCH (UID {uid} RFC822.SIZE {size} FLAGS (\\{flags}) BODY[] {{{size}}})")
            };
            let f = parse_fetch(line.as_bytes(), BodyItem::Body).unwrap().unwrap();
            prop_assert_eq!((f.uid, f.size, f.complete), (Some(uid), Some(size), true));
            prop_assert_eq!(f.last_literal_is_body, true);
        }
    }
}
