//! The SQL lexer shared by the tenant scanner and the statement classifier.
//!
//! It follows Postgres's own lexical rules closely enough that nothing inside a
//! string literal, dollar quote, quoted identifier or comment is ever mistaken for
//! SQL: `'..'` (with backslash escapes when `standard_conforming_strings` is off),
//! `E'..'`, `U&'..'`, `$tag$..$tag$`, `".."`, nested `/* */` and `--` comments,
//! and string literals that Postgres joins across a newline (`'a'` newline
//! `'b'` is `'ab'`, the second part read in the first one's escape mode).
//! No allocation, linear time, never panics: it runs on attacker-controlled bytes.

use memchr::{memchr, memchr2, memmem};

/// Whether `client_encoding` `name` (any spelling Postgres accepts: case and
/// punctuation are ignored, as its `clean_encoding_name` does) is one of the
/// client-only encodings whose multibyte characters may end in an ASCII byte:
/// SJIS (`0x83 0x5C` is one character whose second byte is a backslash),
/// SHIFT_JIS_2004, BIG5, GBK, GB18030, UHC and JOHAB. Postgres converts a
/// client's text to the server encoding before it lexes it; this lexer works
/// on the bytes as sent, so under these encodings it would see quotes and
/// backslashes that Postgres does not. (Postgres refuses them as server
/// encodings for the same reason.)
pub fn ascii_unsafe_encoding(name: &str) -> bool {
    let mut clean = [0u8; 16];
    matches!(
        clean_encoding_name(name, &mut clean),
        b"sjis"
            | b"shiftjis"
            | b"mskanji"
            | b"win932"
            | b"windows932"
            | b"shiftjis2004"
            | b"big5"
            | b"win950"
            | b"windows950"
            | b"gbk"
            | b"win936"
            | b"windows936"
            | b"gb18030"
            | b"uhc"
            | b"win949"
            | b"windows949"
            | b"johab"
    )
}

/// Whether Postgres reads a tenant key the client sends in `client_encoding`
/// `name` as the same bytes shardbouncer reads: UTF8 (the map's encoding), or
/// SQL_ASCII (no conversion). Under any other (LATIN1, WIN1252, EUC_JP, ...)
/// Postgres converts the client's bytes first, so a key past ASCII is
/// another tenant to it (probe: the LATIN1 bytes of `Ã¤` were routed as the
/// UTF-8 `ä`, whose shard returned the other tenant's rows). An unknown name
/// counts as converted.
pub fn keys_read_as_sent(name: &str) -> bool {
    let mut clean = [0u8; 16];
    matches!(
        clean_encoding_name(name, &mut clean),
        b"utf8" | b"unicode" | b"sqlascii"
    )
}

/// An encoding name as Postgres's `clean_encoding_name` compares it: ASCII
/// letters and digits only, lower case. Empty for a name too long to be one.
fn clean_encoding_name<'a>(name: &str, clean: &'a mut [u8; 16]) -> &'a [u8] {
    let mut n = 0;
    for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
        if n == clean.len() {
            return &[];
        }
        clean[n] = b.to_ascii_lowercase();
        n += 1;
    }
    &clean[..n]
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum K {
    Ident,
    QIdent,
    /// `'...'` (escape false, unless `standard_conforming_strings` is off)
    /// or `E'...'` (escape true).
    Str {
        escape: bool,
    },
    Dollar,
    /// Other literals we never route on: B'..', X'..', U&'..', U&"..",
    /// N'..' (a `character` value: Postgres drops its trailing spaces where
    /// it meets text), and any string continued across a newline (its body
    /// is not its value).
    Lit,
    /// Digits only.
    Int,
    /// Decimal / exponent / malformed number.
    Num,
    Param(u16),
    Op,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Semi,
    Dot,
    Colon,
    Cast,
    Comment,
    /// Anything else, including unterminated literals.
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Tok {
    pub(super) k: K,
    /// Token span.
    pub(super) s: usize,
    pub(super) e: usize,
    /// Body span (inside quotes / comment delimiters).
    pub(super) bs: usize,
    pub(super) be: usize,
}

#[inline]
pub(super) fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

#[inline]
pub(super) fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

#[inline]
pub(super) fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[inline]
pub(super) fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

#[cfg(test)]
thread_local! {
    /// Tokens lexed on this thread, to test that a pass stays linear in its
    /// input without timing it.
    pub(super) static LEXED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Asserts that `run` lexes, on each of `units` repeated `4 * n` times, at
/// most five times the tokens it lexes on it repeated `n` times: linear
/// work, counted without timing anything.
#[cfg(test)]
pub(super) fn assert_linear(units: &[&str], n: usize, run: impl Fn(&[u8])) {
    let lexed = |unit: &str, repeats: usize| {
        let text = unit.repeat(repeats);
        LEXED.with(|c| c.set(0));
        run(text.as_bytes());
        LEXED.with(|c| c.get())
    };
    for unit in units {
        let (small, large) = (lexed(unit, n), lexed(unit, 4 * n));
        assert!(
            large <= 5 * small,
            "{unit:?}: {small} tokens lexed for {n} repeats, {large} for {}",
            4 * n
        );
    }
}

#[derive(Clone, Copy)]
pub(super) struct Lexer<'a> {
    s: &'a [u8],
    pub(super) pos: usize,
    /// `standard_conforming_strings`: when off, a plain `'...'` literal takes
    /// backslash escapes like `E'...'` (so `'\''` does not end at the second
    /// quote). Lexing with the wrong setting would let a literal pose as SQL.
    std_strings: bool,
    /// Whether a cast to a type Postgres finds by name (`text`, `int8`,
    /// `uuid`, ...) reads a value as the built-in type: false when the
    /// session may have a type of that name ahead of `pg_catalog`'s (see
    /// [`super::scanner::mentions_strict`]).
    pub(super) types_by_name: bool,
}

impl<'a> Lexer<'a> {
    /// The `standard_conforming_strings` it lexes under.
    pub(super) fn std_strings(&self) -> bool {
        self.std_strings
    }

    /// A lexer at the start of `s`, with `standard_conforming_strings` = `std_strings`.
    pub(super) fn new(s: &'a [u8], std_strings: bool) -> Self {
        Lexer {
            s,
            pos: 0,
            std_strings,
            types_by_name: true,
        }
    }

    /// The same lexer, its text ending at `end` (a statement's end, before
    /// its `;`): a walk from here sees the end of the text there, as the
    /// statement analyzed on its own does.
    pub(super) fn until(mut self, end: usize) -> Self {
        let end = end.clamp(self.pos.min(self.s.len()), self.s.len());
        self.s = &self.s[..end];
        self
    }

    /// The text from the cursor to the end.
    pub(super) fn rest(&self) -> &'a [u8] {
        &self.s[self.pos.min(self.s.len())..]
    }

    #[inline]
    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    fn tok(&mut self, k: K, s: usize, e: usize) -> Tok {
        self.pos = e;
        Tok {
            k,
            s,
            e,
            bs: s,
            be: e,
        }
    }

    fn body(&mut self, k: K, s: usize, e: usize, bs: usize, be: usize) -> Tok {
        self.pos = e;
        Tok { k, s, e, bs, be }
    }

    /// Finds the end of a quoted run starting at `i` (just after the opening
    /// quote `q`). Returns (index of closing quote, index after it, whether
    /// the literal was continued across a newline). Doubled quotes continue
    /// the run; with `backslash`, `\x` skips x. A string literal (`q` is
    /// `'`) goes on past its closing quote when [`Self::continuation`]
    /// follows, in the same escape mode, as Postgres's `xqs` state goes on.
    fn quoted_end(&self, mut i: usize, q: u8, backslash: bool) -> Option<(usize, usize, bool)> {
        let s = self.s;
        let mut continued = false;
        loop {
            let rest = s.get(i..)?;
            let off = if backslash {
                memchr2(q, b'\\', rest)?
            } else {
                memchr(q, rest)?
            };
            let j = i + off;
            if s[j] == b'\\' {
                i = j + 2;
                continue;
            }
            if s.get(j + 1) == Some(&q) {
                i = j + 2;
                continue;
            }
            if q == b'\'' {
                if let Some(next) = self.continuation(j + 1) {
                    continued = true;
                    i = next;
                    continue;
                }
            }
            return Some((j, j + 1, continued));
        }
    }

    /// Where a string literal closed just before `i` goes on, if it does:
    /// the index after the opening quote of its continuation. Postgres
    /// (`scan.l`, `quotecontinue`) joins string literals separated only by
    /// whitespace and `--` comments that include at least one newline, every
    /// comment ending at a newline; the joined part is read in the escape
    /// mode of the first (probe: `E'x'` newline `'\' ;SET ROLE ..;--'` is
    /// one string to Postgres, and a lexer that read the second part as a
    /// plain literal let the SET pass unseen). `/* */` comments do not join.
    /// A vertical tab counts as a space, as in [`is_space`]: Postgres 16+
    /// reads it so, and Postgres 15 refuses the text.
    fn continuation(&self, mut i: usize) -> Option<usize> {
        let s = self.s;
        let mut newline = false;
        loop {
            match *s.get(i)? {
                b' ' | b'\t' | 0x0b | 0x0c => i += 1,
                b'\n' | b'\r' => {
                    newline = true;
                    i += 1;
                }
                // To its newline, which must come.
                b'-' if s.get(i + 1) == Some(&b'-') => {
                    i += memchr2(b'\n', b'\r', &s[i..])?;
                }
                b'\'' if newline => return Some(i + 1),
                _ => return None,
            }
        }
    }

    fn string(&mut self, s: usize, open: usize, k: K, backslash: bool, q: u8) -> Tok {
        match self.quoted_end(open + 1, q, backslash) {
            // Its body holds the joints: no value to read.
            Some((close, end, true)) => self.body(K::Lit, s, end, open + 1, close),
            Some((close, end, false)) => self.body(k, s, end, open + 1, close),
            // Unterminated: Postgres would reject the statement; swallow the
            // rest so nothing inside can be mistaken for SQL.
            None => self.tok(K::Other, s, self.s.len()),
        }
    }

    /// Next token including comments; `None` at end of input.
    pub(super) fn next_raw(&mut self) -> Option<Tok> {
        #[cfg(test)]
        LEXED.with(|n| n.set(n.get() + 1));
        let b = self.s;
        let mut i = self.pos;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let c = *b.get(i)?;
        let n1 = self.at(i + 1);
        let s = i;
        Some(match c {
            b'-' if n1 == b'-' => {
                // As Postgres (`non_newline [^\n\r]`): a carriage return ends it too.
                let end = memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |o| i + o);
                self.body(K::Comment, s, end, s + 2, end)
            }
            b'/' if n1 == b'*' => {
                let mut depth = 1usize;
                let mut j = i + 2;
                loop {
                    match memchr2(b'*', b'/', &b[j.min(b.len())..]) {
                        None => break self.body(K::Comment, s, b.len(), s + 2, b.len()),
                        Some(o) => {
                            let p = j + o;
                            let nx = self.at(p + 1);
                            if b[p] == b'/' && nx == b'*' {
                                depth += 1;
                                j = p + 2;
                            } else if b[p] == b'*' && nx == b'/' {
                                depth -= 1;
                                j = p + 2;
                                if depth == 0 {
                                    break self.body(K::Comment, s, j, s + 2, p);
                                }
                            } else {
                                j = p + 1;
                            }
                        }
                    }
                }
            }
            b'\'' => {
                let bs = !self.std_strings;
                self.string(s, s, K::Str { escape: bs }, bs, b'\'')
            }
            b'"' => self.string(s, s, K::QIdent, false, b'"'),
            b'$' => {
                if n1.is_ascii_digit() {
                    let mut j = i + 1;
                    let mut v: i64 = 0;
                    while j < b.len() && b[j].is_ascii_digit() {
                        v = v.saturating_mul(10).saturating_add((b[j] - b'0') as i64);
                        j += 1;
                    }
                    // The number Postgres reads: `atol` (which saturates)
                    // stored in an `int`, so `$4294967297` is `$1` (probe
                    // CV F2: read as no parameter, a filter on it named no
                    // tenant).
                    let v = v as i32;
                    if j < b.len() && is_ident_cont(b[j]) || !(1..=u16::MAX as i32).contains(&v) {
                        // Trailing junk or out-of-range parameter number.
                        self.tok(K::Other, s, j)
                    } else {
                        self.tok(K::Param(v as u16), s, j)
                    }
                } else {
                    // Dollar quote $tag$...$tag$; tag chars exclude '$'.
                    let mut j = i + 1;
                    while j < b.len() && is_ident_cont(b[j]) && b[j] != b'$' {
                        j += 1;
                    }
                    if self.at(j) == b'$' {
                        let tag = &b[s..=j];
                        match memmem::find(&b[j + 1..], tag) {
                            Some(o) => {
                                let close = j + 1 + o;
                                self.body(K::Dollar, s, close + tag.len(), j + 1, close)
                            }
                            None => self.tok(K::Other, s, b.len()),
                        }
                    } else {
                        self.tok(K::Other, s, i + 1)
                    }
                }
            }
            b'0'..=b'9' => self.number(s),
            b'.' if n1.is_ascii_digit() => self.number(s),
            b'.' => self.tok(K::Dot, s, s + 1),
            b'(' => self.tok(K::LParen, s, s + 1),
            b')' => self.tok(K::RParen, s, s + 1),
            b'[' => self.tok(K::LBrack, s, s + 1),
            b']' => self.tok(K::RBrack, s, s + 1),
            b',' => self.tok(K::Comma, s, s + 1),
            b';' => self.tok(K::Semi, s, s + 1),
            b':' if n1 == b':' => self.tok(K::Cast, s, s + 2),
            b':' => self.tok(K::Colon, s, s + 1),
            c if is_ident_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_ident_cont(b[j]) {
                    j += 1;
                }
                let nx = self.at(j);
                if j == i + 1 {
                    match (c.to_ascii_lowercase(), nx) {
                        (b'e', b'\'') => {
                            return Some(self.string(s, j, K::Str { escape: true }, true, b'\''))
                        }
                        (b'n', b'\'') => {
                            let bs = !self.std_strings;
                            return Some(self.string(s, j, K::Lit, bs, b'\''));
                        }
                        (b'b' | b'x', b'\'') => {
                            return Some(self.string(s, j, K::Lit, false, b'\''))
                        }
                        (b'u', b'&') => match self.at(j + 1) {
                            b'\'' => return Some(self.string(s, j + 1, K::Lit, false, b'\'')),
                            b'"' => return Some(self.string(s, j + 1, K::Lit, false, b'"')),
                            _ => {}
                        },
                        _ => {}
                    }
                }
                self.tok(K::Ident, s, j)
            }
            c if is_op_char(c) => {
                let mut j = i;
                while j < b.len() && is_op_char(b[j]) {
                    // A comment start ends the operator.
                    if j > i
                        && ((b[j] == b'-' && self.at(j + 1) == b'-')
                            || (b[j] == b'/' && self.at(j + 1) == b'*'))
                    {
                        break;
                    }
                    j += 1;
                }
                // Postgres: a multi-char operator may not end in + or -
                // unless it contains one of ~ ! @ # % ^ & | ` ?, so "=-7"
                // lexes as "=" "-" "7".
                if j - i > 1 && !b[i..j].iter().any(|c| b"~!@#%^&|`?".contains(c)) {
                    while j - i > 1 && matches!(b[j - 1], b'+' | b'-') {
                        j -= 1;
                    }
                }
                self.tok(K::Op, s, j)
            }
            _ => self.tok(K::Other, s, s + 1),
        })
    }

    fn number(&mut self, s: usize) -> Tok {
        let b = self.s;
        let mut j = s;
        let mut int = true;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if self.at(j) == b'.' && self.at(j + 1) != b'.' {
            int = false;
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        if matches!(self.at(j), b'e' | b'E') {
            let mut k = j + 1;
            if matches!(self.at(k), b'+' | b'-') {
                k += 1;
            }
            if self.at(k).is_ascii_digit() {
                int = false;
                j = k;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
        }
        if j < b.len() && (is_ident_cont(b[j]) || b[j] == b'.') {
            // "123abc": an error in PG 15+, an alias in older versions;
            // never a routable literal.
            int = false;
        }
        self.tok(if int { K::Int } else { K::Num }, s, j)
    }

    /// Next significant token (comments skipped).
    pub(super) fn next_sig(&mut self) -> Option<Tok> {
        loop {
            let t = self.next_raw()?;
            if t.k != K::Comment {
                return Some(t);
            }
        }
    }

    pub(super) fn peek_sig(&self) -> Option<Tok> {
        let mut l = *self;
        l.next_sig()
    }
}

// ---------------------------------------------------------------------------
// Helpers over tokens
// ---------------------------------------------------------------------------

/// Calls `f` with each statement of `sql` (split at top-level `;`, which the
/// lexer never sees inside literals, quoted identifiers or comments).
pub(super) fn split(sql: &[u8], std_strings: bool, mut f: impl FnMut(&[u8])) {
    if memchr::memchr(b';', sql).is_none() {
        return f(sql);
    }
    if !may_hide_semicolons(sql) {
        // Every `;` is one the lexer would return: split at each without it.
        let mut start = 0;
        for at in memchr::memchr_iter(b';', sql) {
            f(&sql[start..at]);
            start = at + 1;
        }
        return f(&sql[start..]);
    }
    let mut lx = Lexer::new(sql, std_strings);
    let mut start = 0;
    while let Some(t) = lx.next_raw() {
        if t.k == K::Semi {
            f(&sql[start..t.s]);
            start = t.e;
        }
    }
    f(&sql[start..]);
}

/// Whether `sql` has a byte that may begin a token in which a `;` is not a
/// statement's end: a string or quoted identifier (`'`, `"`, and with them
/// every prefixed form, `E'`, `U&"` ...), a dollar quote (`$`), a comment
/// (`--`, `/*`). Without any of them, the lexer reads every `;` as
/// [`K::Semi`], whatever `standard_conforming_strings` says. (A lone `-` or
/// `/` is an operator, or part of one: `abalance + -2331` in pgbench's
/// UPDATE.)
fn may_hide_semicolons(sql: &[u8]) -> bool {
    memchr::memchr3(b'\'', b'"', b'$', sql).is_some()
        || memchr::memchr2_iter(b'-', b'/', sql).any(|i| {
            let next = sql.get(i + 1).copied();
            (next == Some(b'-') && sql[i] == b'-') || (next == Some(b'*') && sql[i] == b'/')
        })
}

#[inline]
pub(super) fn text<'a>(sql: &'a [u8], t: &Tok) -> &'a [u8] {
    &sql[t.s..t.e]
}

#[inline]
pub(super) fn body<'a>(sql: &'a [u8], t: &Tok) -> &'a [u8] {
    &sql[t.bs..t.be]
}

#[inline]
pub(super) fn is_kw(sql: &[u8], t: &Tok, kw: &[u8]) -> bool {
    t.k == K::Ident && text(sql, t).eq_ignore_ascii_case(kw)
}

pub(super) fn is_any_kw(sql: &[u8], t: &Tok, kws: &[&[u8]]) -> bool {
    t.k == K::Ident && kws.iter().any(|k| text(sql, t).eq_ignore_ascii_case(k))
}

#[inline]
pub(super) fn is_identlike(t: &Tok) -> bool {
    matches!(t.k, K::Ident | K::QIdent)
}

pub(super) fn is_op(sql: &[u8], t: &Tok, op: &[u8]) -> bool {
    t.k == K::Op && text(sql, t) == op
}

/// Does identifier token `t` name the column/parameter `key`? Unquoted
/// identifiers compare case-insensitively, quoted ones exactly.
pub(super) fn ident_eq(sql: &[u8], t: &Tok, key: &[u8]) -> bool {
    match t.k {
        K::Ident => text(sql, t).eq_ignore_ascii_case(key),
        K::QIdent => {
            let raw = body(sql, t);
            let mut i = 0;
            let mut n = 0;
            while i < raw.len() {
                if key.get(n) != Some(&raw[i]) {
                    return false;
                }
                i += if raw[i] == b'"' { 2 } else { 1 };
                n += 1;
            }
            n == key.len()
        }
        _ => false,
    }
}

/// ASCII case-insensitive substring search (a word the lexer need not
/// find as a token: a quick test before a scan).
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i + 1..i + 1 + rest.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
    })
}
