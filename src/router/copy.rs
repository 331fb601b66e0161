//! `COPY .. FROM STDIN`: which field of its rows is the tenant key
//! ([`copy_in`]), and a streaming reader of the rows' key values in the
//! text, CSV and binary formats ([`CopyReader`]), so that every row is
//! checked against the shard its COPY runs on ([`super::decide::copy_data`]).
//!
//! The rows are data, not SQL: a `COPY items (tenant_id, name) FROM STDIN`
//! routed by the session's tenant 1 would otherwise write a row of tenant
//! 42 on tenant 1's shard, which an `INSERT` of the same row is refused.
//! The reader follows Postgres 15's `copyfromparse.c` for what splits rows
//! and fields, what ends the data (`\.`), what is NULL and how a field is
//! unescaped; it keeps only the key field's bytes (bounded) and a few flags,
//! whatever the size of a row or of a CopyData message.

use super::lexer::{body, is_identlike, is_kw, Lexer, Tok, K};

/// What a statement's COPY reads from the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CopyIn {
    /// Not a `COPY .. FROM STDIN`.
    #[default]
    None,
    /// A `COPY .. FROM STDIN` whose rows are not read: a column list
    /// without the key (its rows name no tenant), or no column list
    /// (which field is the key, the text does not say; documented).
    Unread,
    /// A `COPY .. FROM STDIN` whose rows hold the key.
    Rows(Box<CopyFormat>),
    /// A `COPY .. FROM STDIN` writing the key whose options the reader
    /// does not follow (why, for the refusal).
    Unreadable(&'static str),
}

impl CopyIn {
    /// The COPY of a unit that runs this one and then `next` (an extended
    /// batch binding both): one `COPY .. FROM STDIN` per unit when one
    /// writes the key, since which one a CopyData belongs to only the
    /// server's answers would tell.
    pub fn then(&self, next: &CopyIn) -> CopyIn {
        let keyed = |c: &CopyIn| !matches!(c, CopyIn::None | CopyIn::Unread);
        match (self, next) {
            (CopyIn::None, n) => n.clone(),
            (s, CopyIn::None) => s.clone(),
            (s, n) if keyed(s) || keyed(n) => CopyIn::Unreadable(TWO_COPIES),
            _ => CopyIn::Unread,
        }
    }
}

/// Two `COPY .. FROM STDIN` in one unit, one writing the key.
pub const TWO_COPIES: &str = "is one of two COPY FROM STDIN in one unit of work";

/// The format of a COPY's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `FORMAT text` (the default).
    Text,
    /// `FORMAT csv`.
    Csv,
    /// `FORMAT binary`.
    Binary,
}

/// How to find the key in a COPY's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// The rows' format.
    pub format: Format,
    /// The key's field in each row (0-based).
    pub column: u16,
    /// Field delimiter.
    pub delim: u8,
    /// CSV quote.
    pub quote: u8,
    /// CSV escape (in quotes).
    pub escape: u8,
    /// The NULL string (compared with a field as sent).
    pub null: Box<[u8]>,
    /// The first line is a header.
    pub header: bool,
    /// `FORCE_NULL` or `FORCE_NOT_NULL`: whether a field is NULL depends on
    /// columns the reader does not follow, so none counts as NULL (a value
    /// that may be NULL is read as a key, and one that is no valid key is
    /// refused: fail closed).
    pub forced: bool,
}

/// Reads `stmt` (one statement) as a `COPY`: its rows' key field when it is
/// a `COPY table (cols) FROM STDIN` naming `key` among its columns.
pub fn copy_in(stmt: &[u8], key: &[u8], std_strings: bool) -> CopyIn {
    let mut lx = Lexer::new(stmt, std_strings);
    if !lx.next_sig().is_some_and(|t| is_kw(stmt, &t, b"COPY")) {
        return CopyIn::None;
    }
    let mut binary = false;
    let mut t = match lx.next_sig() {
        Some(t) => t,
        None => return CopyIn::None,
    };
    if is_kw(stmt, &t, b"BINARY") {
        binary = true;
        t = match lx.next_sig() {
            Some(t) => t,
            None => return CopyIn::None,
        };
    }
    // `COPY (query) TO ..`: no rows come from the client.
    if !is_identlike(&t) {
        return CopyIn::None;
    }
    // The table's qualified name.
    let mut next = lx.next_sig();
    while next.is_some_and(|d| d.k == K::Dot) {
        if !lx.next_sig().is_some_and(|n| is_identlike(&n)) {
            return CopyIn::None;
        }
        next = lx.next_sig();
    }
    let mut column = None;
    if next.is_some_and(|p| p.k == K::LParen) {
        let mut i = 0u16;
        loop {
            let Some(c) = lx.next_sig() else {
                return CopyIn::None;
            };
            if !is_identlike(&c) {
                return CopyIn::None;
            }
            if column.is_none() && super::lexer::ident_eq(stmt, &c, key) {
                column = Some(i);
            }
            i = i.saturating_add(1);
            match lx.next_sig() {
                Some(s) if s.k == K::Comma => {}
                Some(s) if s.k == K::RParen => break,
                _ => return CopyIn::None,
            }
        }
        next = lx.next_sig();
    }
    if !next.is_some_and(|f| is_kw(stmt, &f, b"FROM")) {
        return CopyIn::None;
    }
    // `FROM 'file'` and `FROM PROGRAM ..` read on the server, not from the
    // client; `FROM STDOUT` is the client too (Postgres's `copy_file_name`
    // takes either word for it: probe CO F1, such a COPY ran unchecked).
    if !lx
        .next_sig()
        .is_some_and(|s| is_kw(stmt, &s, b"STDIN") || is_kw(stmt, &s, b"STDOUT"))
    {
        return CopyIn::None;
    }
    let Some(column) = column else {
        return CopyIn::Unread;
    };
    match options(stmt, lx, binary) {
        Ok(mut f) => {
            f.column = column;
            CopyIn::Rows(Box::new(f))
        }
        Err(why) => CopyIn::Unreadable(why),
    }
}

/// The options after `FROM STDIN`, old and new syntax (Postgres 15's
/// `copy_delimiter opt_with copy_options where_clause`).
fn options(sql: &[u8], mut lx: Lexer<'_>, binary: bool) -> Result<CopyFormat, &'static str> {
    let mut format = if binary { Some(Format::Binary) } else { None };
    let mut delim = None;
    let mut quote = None;
    let mut escape = None;
    let mut null: Option<Vec<u8>> = None;
    let mut header = false;
    let mut forced = false;
    let mut t = lx.next_sig();
    // `[USING] DELIMITERS 'x'`.
    if t.is_some_and(|u| is_kw(sql, &u, b"USING")) {
        t = lx.next_sig();
    }
    if t.is_some_and(|d| is_kw(sql, &d, b"DELIMITERS")) {
        delim = Some(one_byte(sql, lx.next_sig())?);
        t = lx.next_sig();
    }
    if t.is_some_and(|w| is_kw(sql, &w, b"WITH")) {
        t = lx.next_sig();
    }
    if t.is_some_and(|p| p.k == K::LParen) {
        // `(name [value], ..)`.
        loop {
            let Some(name) = lx.next_sig() else {
                return Err(UNKNOWN_OPTION);
            };
            if !is_identlike(&name) {
                return Err(UNKNOWN_OPTION);
            }
            let opt = body_or_text(sql, &name).to_ascii_lowercase();
            // The value: a string, a word, a number, `*`, `(list)`, or none.
            let mut value: Option<Tok> = None;
            let mut n = lx.next_sig();
            match n {
                Some(v) if v.k == K::LParen => {
                    loop {
                        match lx.next_sig() {
                            Some(c) if c.k == K::RParen => break,
                            Some(_) => {}
                            None => return Err(UNKNOWN_OPTION),
                        }
                    }
                    n = lx.next_sig();
                }
                Some(v) if v.k != K::Comma && v.k != K::RParen => {
                    value = Some(v);
                    n = lx.next_sig();
                }
                _ => {}
            }
            match opt.as_slice() {
                b"format" => {
                    format = Some(match value.map(|v| word(sql, &v)) {
                        Some(Some(w)) if w.eq_ignore_ascii_case(b"text") => Format::Text,
                        Some(Some(w)) if w.eq_ignore_ascii_case(b"csv") => Format::Csv,
                        Some(Some(w)) if w.eq_ignore_ascii_case(b"binary") => Format::Binary,
                        _ => return Err(UNKNOWN_OPTION),
                    })
                }
                b"delimiter" => delim = Some(one_byte(sql, value)?),
                b"quote" => quote = Some(one_byte(sql, value)?),
                b"escape" => escape = Some(one_byte(sql, value)?),
                b"null" => null = Some(string(sql, value).ok_or(UNKNOWN_OPTION)?),
                b"header" => {
                    header = match value.map(|v| word(sql, &v)) {
                        None => true,
                        Some(Some(w)) => match w.to_ascii_lowercase().as_slice() {
                            b"true" | b"on" | b"1" | b"match" => true,
                            b"false" | b"off" | b"0" => false,
                            _ => return Err(UNKNOWN_OPTION),
                        },
                        Some(None) => return Err(UNKNOWN_OPTION),
                    }
                }
                b"freeze" | b"force_quote" => {}
                b"force_not_null" | b"force_null" => forced = true,
                b"encoding" => return Err(ENCODING),
                _ => return Err(UNKNOWN_OPTION),
            }
            match n {
                Some(c) if c.k == K::Comma => {}
                Some(c) if c.k == K::RParen => break,
                _ => return Err(UNKNOWN_OPTION),
            }
        }
        t = lx.next_sig();
    } else {
        // The old syntax: `BINARY`, `CSV`, `HEADER`, `FREEZE`, `DELIMITER
        // [AS] 'x'`, `NULL [AS] 'x'`, `QUOTE [AS] 'x'`, `ESCAPE [AS] 'x'`,
        // `FORCE QUOTE ..`, `FORCE [NOT] NULL (..)`, `ENCODING 'x'`.
        while let Some(w) = t {
            if is_kw(sql, &w, b"WHERE") {
                break;
            }
            let arg = |lx: &mut Lexer<'_>| {
                let mut v = lx.next_sig();
                if v.is_some_and(|a| is_kw(sql, &a, b"AS")) {
                    v = lx.next_sig();
                }
                v
            };
            if is_kw(sql, &w, b"BINARY") {
                format = Some(Format::Binary);
            } else if is_kw(sql, &w, b"CSV") {
                format = Some(Format::Csv);
            } else if is_kw(sql, &w, b"HEADER") {
                header = true;
            } else if is_kw(sql, &w, b"FREEZE") {
            } else if is_kw(sql, &w, b"DELIMITER") {
                delim = Some(one_byte(sql, arg(&mut lx))?);
            } else if is_kw(sql, &w, b"NULL") {
                null = Some(string(sql, arg(&mut lx)).ok_or(UNKNOWN_OPTION)?);
            } else if is_kw(sql, &w, b"QUOTE") {
                quote = Some(one_byte(sql, arg(&mut lx))?);
            } else if is_kw(sql, &w, b"ESCAPE") {
                escape = Some(one_byte(sql, arg(&mut lx))?);
            } else if is_kw(sql, &w, b"ENCODING") {
                return Err(ENCODING);
            } else if is_kw(sql, &w, b"FORCE") {
                let mut f = lx.next_sig();
                if f.is_some_and(|q| is_kw(sql, &q, b"QUOTE")) {
                    // COPY TO only; `*` or a column list.
                } else {
                    if f.is_some_and(|n| is_kw(sql, &n, b"NOT")) {
                        f = lx.next_sig();
                    }
                    if !f.is_some_and(|n| is_kw(sql, &n, b"NULL")) {
                        return Err(UNKNOWN_OPTION);
                    }
                    forced = true;
                }
                // The columns: names and commas up to the next option.
                let mut after = lx;
                while let Some(c) = after.next_sig() {
                    if !(is_identlike(&c)
                        || c.k == K::Comma
                        || (c.k == K::Op && body_or_text(sql, &c) == b"*"))
                        || is_option_word(sql, &c)
                    {
                        break;
                    }
                    lx = after;
                }
            } else {
                return Err(UNKNOWN_OPTION);
            }
            t = lx.next_sig();
        }
    }
    // What follows is a WHERE clause (it keeps some rows: every row is
    // still checked), or the end.
    if let Some(w) = t {
        if !is_kw(sql, &w, b"WHERE") {
            return Err(UNKNOWN_OPTION);
        }
    }
    let format = format.unwrap_or(Format::Text);
    let csv = format == Format::Csv;
    let delim = delim.unwrap_or(if csv { b',' } else { b'\t' });
    let quote = quote.unwrap_or(b'"');
    let escape = escape.unwrap_or(quote);
    let null = null.unwrap_or_else(|| if csv { Vec::new() } else { b"\\N".to_vec() });
    // Postgres refuses these (the COPY fails, no row is written); refused
    // here too, so the reader never splits rows on them.
    if matches!(delim, b'\n' | b'\r')
        || (!csv && delim == b'\\')
        || null.iter().any(|&c| c == b'\n' || c == b'\r')
    {
        return Err(UNKNOWN_OPTION);
    }
    Ok(CopyFormat {
        format,
        column: 0,
        delim,
        quote,
        escape,
        null: null.into_boxed_slice(),
        header,
        forced,
    })
}

/// Why a COPY's options make its rows unreadable.
const UNKNOWN_OPTION: &str = "has an option the router does not read";
/// `ENCODING`: the data is converted from another encoding than the client's.
const ENCODING: &str = "names an ENCODING (its data is converted before it is read)";

/// A word of the old option syntax: it ends a `FORCE` clause's column list.
fn is_option_word(sql: &[u8], t: &Tok) -> bool {
    [
        &b"BINARY"[..],
        b"CSV",
        b"HEADER",
        b"FREEZE",
        b"DELIMITER",
        b"NULL",
        b"QUOTE",
        b"ESCAPE",
        b"ENCODING",
        b"FORCE",
        b"WHERE",
    ]
    .iter()
    .any(|w| is_kw(sql, t, w))
}

/// An identifier's text (unquoted) or a quoted one's body.
fn body_or_text<'a>(sql: &'a [u8], t: &Tok) -> &'a [u8] {
    match t.k {
        K::QIdent => body(sql, t),
        _ => &sql[t.s..t.e],
    }
}

/// An option's value as a word: an identifier, a number, or a string.
fn word(sql: &[u8], t: &Tok) -> Option<Vec<u8>> {
    match t.k {
        K::Ident | K::Int => Some(sql[t.s..t.e].to_vec()),
        _ => string(sql, Some(*t)),
    }
}

/// A string constant's value: `'..'` (doubled quotes), `E'..'` (backslash
/// escapes), `$$..$$`. `None` for anything else (`U&'..'`, a string
/// continued across lines, an escape not read).
fn string(sql: &[u8], t: Option<Tok>) -> Option<Vec<u8>> {
    let t = t?;
    let raw = body(sql, &t);
    match t.k {
        K::Dollar => Some(raw.to_vec()),
        K::Str { escape: false } => {
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                out.push(raw[i]);
                i += if raw[i] == b'\'' { 2 } else { 1 };
            }
            Some(out)
        }
        K::Str { escape: true } => {
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                let c = raw[i];
                i += 1;
                if c == b'\'' {
                    out.push(b'\'');
                    i += 1;
                    continue;
                }
                if c != b'\\' {
                    out.push(c);
                    continue;
                }
                let e = *raw.get(i)?;
                i += 1;
                out.push(match e {
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'0'..=b'7' | b'x' | b'u' | b'U' => return None,
                    other => other,
                });
            }
            Some(out)
        }
        _ => None,
    }
}

/// An option that must be one one-byte character.
fn one_byte(sql: &[u8], t: Option<Tok>) -> Result<u8, &'static str> {
    match string(sql, t).as_deref() {
        Some([c]) if c.is_ascii() => Ok(*c),
        _ => Err(UNKNOWN_OPTION),
    }
}

/// The most bytes of a key field kept (a key is at most 63 bytes; an
/// integer may be spelled with leading zeros or blanks): a longer one is
/// refused.
pub const MAX_FIELD: usize = 1024;

/// One row's key value, as [`CopyReader`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyValue<'a> {
    /// A text or CSV field, unescaped: the text Postgres reads the column
    /// value from.
    Text(&'a [u8]),
    /// A binary field's bytes.
    Binary(&'a [u8]),
    /// NULL: the row names no tenant.
    Null,
    /// A field the reader cannot read (why).
    Unreadable(&'static str),
}

/// Bytes held back until the next show what they are (text and CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pend {
    None,
    /// A `\` (text: it escapes the next byte; CSV: at a line's start).
    Backslash,
    /// `\.`, and the bytes after it so far (up to two): the end of the
    /// data if a line end of the data's style follows ([`end_marker`]).
    Dot([u8; 2], u8),
}

/// The style of the data's line ends, as its first line ends (Postgres's
/// `eol_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    Unknown,
    Nl,
    Cr,
    CrNl,
}

/// Whether `\.` and the bytes after it (`after`) end the data, as
/// Postgres 15's `CopyReadLineText` decides (`None`: more bytes tell).
/// Only a line end of the data's style does: under `\r\n` lines, `\.` then
/// a lone `\r` or `\n` is data in CSV (and fails the COPY in text), so
/// the rows after it are still rows (probe CK F1: they were not read).
fn end_marker(eol: Eol, after: &[u8]) -> Option<bool> {
    match (eol, after) {
        (_, []) | (Eol::CrNl, [b'\r']) => None,
        (Eol::CrNl, [b'\r', b'\n']) => Some(true),
        (Eol::CrNl, _) => Some(false),
        (Eol::Nl, [c, ..]) => Some(*c == b'\n'),
        (Eol::Cr, [c, ..]) => Some(*c == b'\r'),
        (Eol::Unknown, [c, ..]) => Some(matches!(c, b'\r' | b'\n')),
    }
}

/// Where a CSV field stands (Postgres's `CopyReadAttributesCSV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Unquoted,
    Quoted,
    /// In quotes, after the escape: the next byte tells whether it
    /// escapes it (a quote or the escape) or, when the escape is the
    /// quote, was the closing quote.
    QuotedEscape,
}

/// Where a binary reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bin {
    /// The 19-byte header: signature, flags, extension length.
    Header,
    /// The header's extension: bytes left.
    Extension(u32),
    /// A tuple's field count.
    Count,
    /// A field's length.
    Length,
    /// A field's bytes: how many are left.
    Value(u32),
}

/// The binary format's signature.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A streaming reader of one COPY's rows: fed the CopyData payloads in
/// order, it reports each row's key value. It keeps the key field's bytes
/// (up to [`MAX_FIELD`]) and a few flags, whatever the rows' size.
#[derive(Debug, Clone)]
pub struct CopyReader {
    f: CopyFormat,
    /// The field the reader is in, in the current row.
    field: u32,
    /// The key field's bytes as sent (CSV: quotes and escapes kept).
    raw: Vec<u8>,
    /// The key field was longer than [`MAX_FIELD`].
    long: bool,
    pend: Pend,
    /// Nothing of the current line read yet.
    line_empty: bool,
    /// A `\r` ended the last line: a `\n` right after it is that end too.
    cr: bool,
    /// The data's line end style, and whether the line end just read was
    /// the first (a `\n` after its `\r` makes the style `\r\n`).
    eol: Eol,
    first_end: bool,
    /// CSV, as Postgres splits lines: inside quotes, and whether the last
    /// byte was an escape there.
    in_quote: bool,
    last_escape: bool,
    /// CSV, as Postgres splits a line into fields.
    csv: Field,
    /// The current line is the header: not a row.
    in_header: bool,
    /// The data ended (`\.`, a binary trailer, a header not read): Postgres
    /// reads nothing after it (or fails the COPY).
    done: bool,
    /// Rows read so far.
    rows: u64,
    /// Binary: where the reader stands, the bytes of a number being read,
    /// and the fields left in the tuple.
    bin: Bin,
    num: [u8; 19],
    num_len: usize,
    fields_left: i32,
}

impl CopyReader {
    /// A reader of rows in `f`.
    pub fn new(f: &CopyFormat) -> CopyReader {
        CopyReader {
            in_header: f.header && f.format != Format::Binary,
            f: f.clone(),
            field: 0,
            raw: Vec::new(),
            long: false,
            pend: Pend::None,
            line_empty: true,
            cr: false,
            eol: Eol::Unknown,
            first_end: false,
            in_quote: false,
            last_escape: false,
            csv: Field::Unquoted,
            done: false,
            rows: 0,
            bin: Bin::Header,
            num: [0; 19],
            num_len: 0,
            fields_left: 0,
        }
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Reads `data`, the next CopyData payload: `row` is called with each
    /// row's number (from 1) and key value, and the reading stops at its
    /// first `Err`.
    pub fn feed<E>(
        &mut self,
        data: &[u8],
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.done {
            return Ok(());
        }
        match self.f.format {
            Format::Binary => self.feed_binary(data, row),
            Format::Text => {
                for &c in data {
                    if self.done {
                        break;
                    }
                    self.text_byte(c, row)?;
                }
                Ok(())
            }
            Format::Csv => {
                for &c in data {
                    if self.done {
                        break;
                    }
                    self.csv_line_byte(c, row)?;
                }
                Ok(())
            }
        }
    }

    /// The end of the data (CopyDone): a last line with no line end is a
    /// row too, as in Postgres.
    pub fn finish<E>(
        &mut self,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.done || self.f.format == Format::Binary {
            self.done = true;
            return Ok(());
        }
        match std::mem::replace(&mut self.pend, Pend::None) {
            // (`\.` at the very end is data, as no line end follows it:
            // probe CK F2, a last row `\.` went unread.)
            Pend::Dot(after, n) => self.not_end(&after[..n as usize], row)?,
            // A `\` that ends the data escapes nothing and Postgres drops
            // it (probe CL F3: `42\` at the very end was read as `42\`,
            // another tenant than the 42 stored). A CSV line's is data.
            Pend::Backslash if self.f.format == Format::Text => {}
            Pend::Backslash => {
                self.csv_byte(b'\\', row)?;
            }
            Pend::None => {}
        }
        if !self.line_empty && !self.done {
            self.end_line(row)?;
        }
        self.done = true;
        Ok(())
    }

    /// A line end (`c`) read: it sets the data's style if it is the first.
    fn line_end(&mut self, c: u8) {
        self.cr = c == b'\r';
        if self.eol == Eol::Unknown {
            self.eol = if c == b'\r' { Eol::Cr } else { Eol::Nl };
        }
    }

    /// The byte after a line end's `\r`: a `\n` is part of that end (and
    /// makes the first one's style `\r\n`). `true` when it was.
    fn after_cr(&mut self, c: u8) -> bool {
        if !std::mem::take(&mut self.cr) || c != b'\n' {
            return false;
        }
        if self.eol == Eol::Cr && self.first_end {
            self.eol = Eol::CrNl;
        }
        true
    }

    /// `\.` with `after` was no end: it is data, read again as data
    /// (Postgres goes back to the byte after the `\`).
    fn not_end<E>(
        &mut self,
        after: &[u8],
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut held = [0u8; 3];
        held[0] = b'.';
        held[1..=after.len()].copy_from_slice(after);
        let held = &held[..=after.len()];
        if self.f.format == Format::Text {
            // (Postgres fails the COPY: "end-of-copy marker corrupt".)
            self.data(b'\\');
            self.data(b'.');
            for &c in &held[1..] {
                if !self.done {
                    self.text_byte(c, row)?;
                }
            }
        } else {
            self.csv_byte(b'\\', row)?;
            for &c in held {
                if !self.done {
                    self.csv_line_byte(c, row)?;
                }
            }
        }
        Ok(())
    }

    /// `\.` and `after` so far: the end, no end, or more to come.
    fn dot<E>(
        &mut self,
        after: [u8; 2],
        n: usize,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match end_marker(self.eol, &after[..n]) {
            None => {
                self.pend = Pend::Dot(after, n as u8);
                Ok(())
            }
            Some(true) => {
                // (Text: the line before `\.` is the last row.)
                if !self.line_empty {
                    self.end_line(row)?;
                }
                self.done = true;
                Ok(())
            }
            Some(false) => self.not_end(&after[..n], row),
        }
    }

    /// A byte of the current line's data.
    fn data(&mut self, c: u8) {
        self.line_empty = false;
        if self.field == u32::from(self.f.column) {
            if self.raw.len() < MAX_FIELD {
                self.raw.push(c);
            } else {
                self.long = true;
            }
        }
    }

    /// A line ended: report its key, and start the next.
    fn end_line<E>(
        &mut self,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let reached = self.field >= u32::from(self.f.column);
        self.field = 0;
        self.line_empty = true;
        self.in_quote = false;
        self.last_escape = false;
        self.csv = Field::Unquoted;
        let long = std::mem::replace(&mut self.long, false);
        let raw = std::mem::take(&mut self.raw);
        let header = std::mem::replace(&mut self.in_header, false);
        let out = if header {
            Ok(())
        } else {
            // (A row with fewer fields than the key's fails the COPY in
            // Postgres: no row is written.)
            if !reached {
                Ok(())
            } else if long {
                row(
                    self.rows + 1,
                    CopyValue::Unreadable("is longer than the router reads"),
                )
            } else if self.f.format == Format::Text {
                self.text_value(&raw, row)
            } else {
                self.csv_value(&raw, row)
            }
        };
        self.raw = raw;
        self.raw.clear();
        self.rows += u64::from(!header);
        out
    }

    /// One byte of text-format data (Postgres's `CopyReadLineText` and
    /// `CopyReadAttributesText`): a `\` escapes the next byte, a line end
    /// included; `\.` then a line end ends the data, the line before it
    /// (if any) being the last row.
    fn text_byte<E>(
        &mut self,
        c: u8,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match std::mem::replace(&mut self.pend, Pend::None) {
            Pend::None => {}
            Pend::Backslash if c == b'.' => return self.dot([0; 2], 0, row),
            Pend::Backslash => {
                self.data(b'\\');
                self.data(c);
                return Ok(());
            }
            Pend::Dot(mut after, n) => {
                after[n as usize] = c;
                return self.dot(after, n as usize + 1, row);
            }
        }
        if self.after_cr(c) {
            return Ok(());
        }
        self.first_end = false;
        match c {
            b'\\' => self.pend = Pend::Backslash,
            b'\n' | b'\r' => {
                self.first_end = self.eol == Eol::Unknown;
                self.line_end(c);
                self.end_line(row)?;
            }
            _ if c == self.f.delim => {
                self.line_empty = false;
                self.field = self.field.saturating_add(1);
            }
            _ => self.data(c),
        }
        Ok(())
    }

    /// One byte of CSV data, as Postgres splits lines (`CopyReadLineText`
    /// in CSV mode): quotes hide line ends, and `\.` alone on a line ends
    /// the data.
    fn csv_line_byte<E>(
        &mut self,
        c: u8,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match std::mem::replace(&mut self.pend, Pend::None) {
            Pend::None => {}
            Pend::Backslash if c == b'.' => return self.dot([0; 2], 0, row),
            Pend::Backslash => self.csv_byte(b'\\', row)?,
            Pend::Dot(mut after, n) => {
                after[n as usize] = c;
                return self.dot(after, n as usize + 1, row);
            }
        }
        if self.after_cr(c) {
            return Ok(());
        }
        if c == b'\\' && self.line_empty && !self.in_quote {
            self.pend = Pend::Backslash;
            return Ok(());
        }
        self.csv_byte(c, row)
    }

    /// One byte of a CSV line: the line's end, a field's end, or data.
    fn csv_byte<E>(
        &mut self,
        c: u8,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (q, e) = (self.f.quote, self.f.escape);
        // Lines: an escape the same as the quote is no escape there.
        let line_escape = (e != q).then_some(e);
        if self.in_quote && Some(c) == line_escape {
            self.last_escape = !self.last_escape;
        }
        if c == q && !self.last_escape {
            self.in_quote = !self.in_quote;
        }
        if Some(c) != line_escape {
            self.last_escape = false;
        }
        if !self.in_quote && (c == b'\n' || c == b'\r') {
            self.first_end = self.eol == Eol::Unknown;
            self.line_end(c);
            return self.end_line(row);
        }
        self.first_end = false;
        self.line_empty = false;
        // Fields.
        let delim = match self.csv {
            Field::Unquoted => {
                if c == q {
                    self.csv = Field::Quoted;
                }
                c == self.f.delim && c != q
            }
            Field::Quoted => {
                if c == e {
                    self.csv = Field::QuotedEscape;
                } else if c == q {
                    self.csv = Field::Unquoted;
                }
                false
            }
            Field::QuotedEscape => {
                if c == q || c == e {
                    self.csv = Field::Quoted;
                    false
                } else if e == q {
                    // That quote closed the quotes.
                    self.csv = Field::Unquoted;
                    c == self.f.delim
                } else {
                    self.csv = Field::Quoted;
                    false
                }
            }
        };
        if delim {
            self.field = self.field.saturating_add(1);
        } else {
            self.data(c);
        }
        Ok(())
    }

    /// A text field's value: NULL when it is the NULL string as sent, else
    /// its bytes unescaped.
    fn text_value<E>(
        &self,
        raw: &[u8],
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.f.forced && raw == &self.f.null[..] {
            return row(self.rows + 1, CopyValue::Null);
        }
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let c = raw[i];
            i += 1;
            if c != b'\\' {
                v.push(c);
                continue;
            }
            if i == raw.len() {
                // (A `\` ending the line: Postgres drops it.)
                break;
            }
            let e = raw[i];
            i += 1;
            match e {
                b'b' => v.push(8),
                b'f' => v.push(12),
                b'n' => v.push(b'\n'),
                b'r' => v.push(b'\r'),
                b't' => v.push(b'\t'),
                b'v' => v.push(11),
                b'0'..=b'7' => {
                    let mut n = u32::from(e - b'0');
                    for _ in 0..2 {
                        match raw.get(i) {
                            Some(d @ b'0'..=b'7') => {
                                n = n * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    v.push((n & 0xff) as u8);
                }
                b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                    let mut n = 0u32;
                    for _ in 0..2 {
                        match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                n = n * 16 + d;
                                i += 1;
                            }
                            None => break,
                        }
                    }
                    v.push(n as u8);
                }
                other => v.push(other),
            }
        }
        row(self.rows + 1, CopyValue::Text(&v))
    }

    /// A CSV field's value (Postgres's `CopyReadAttributesCSV`): NULL when
    /// it is the NULL string unquoted, else its bytes with quotes and
    /// escapes taken out.
    fn csv_value<E>(
        &self,
        raw: &[u8],
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (q, e) = (self.f.quote, self.f.escape);
        let mut v = Vec::with_capacity(raw.len());
        let mut saw_quote = false;
        let mut quoted = false;
        let mut i = 0;
        while i < raw.len() {
            let c = raw[i];
            i += 1;
            if !quoted {
                if c == q {
                    quoted = true;
                    saw_quote = true;
                } else {
                    v.push(c);
                }
                continue;
            }
            if c == e && i < raw.len() && (raw[i] == q || raw[i] == e) {
                v.push(raw[i]);
                i += 1;
            } else if c == q {
                quoted = false;
            } else {
                v.push(c);
            }
        }
        if !self.f.forced && !saw_quote && raw == &self.f.null[..] {
            return row(self.rows + 1, CopyValue::Null);
        }
        row(self.rows + 1, CopyValue::Text(&v))
    }

    /// Binary data: the header, then tuples of length-prefixed fields, to
    /// the trailer (a field count of -1).
    fn feed_binary<E>(
        &mut self,
        mut data: &[u8],
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() && !self.done {
            let need = match self.bin {
                Bin::Header => 19,
                Bin::Count => 2,
                Bin::Length => 4,
                Bin::Extension(left) => {
                    let n = (left as usize).min(data.len());
                    data = &data[n..];
                    let left = left - n as u32;
                    self.bin = if left == 0 {
                        Bin::Count
                    } else {
                        Bin::Extension(left)
                    };
                    continue;
                }
                Bin::Value(left) => {
                    let n = (left as usize).min(data.len());
                    for &c in &data[..n] {
                        self.data(c);
                    }
                    data = &data[n..];
                    let left = left - n as u32;
                    if left == 0 {
                        self.end_field(row, false)?;
                    } else {
                        self.bin = Bin::Value(left);
                    }
                    continue;
                }
            };
            let n = (need - self.num_len).min(data.len());
            self.num[self.num_len..self.num_len + n].copy_from_slice(&data[..n]);
            self.num_len += n;
            data = &data[n..];
            if self.num_len < need {
                continue;
            }
            self.num_len = 0;
            match self.bin {
                Bin::Header => {
                    if &self.num[..11] != SIGNATURE {
                        // Postgres fails the COPY: nothing is written.
                        self.done = true;
                        continue;
                    }
                    let ext = u32::from_be_bytes([
                        self.num[15],
                        self.num[16],
                        self.num[17],
                        self.num[18],
                    ]);
                    self.bin = if ext == 0 {
                        Bin::Count
                    } else {
                        Bin::Extension(ext)
                    };
                }
                Bin::Count => {
                    let count = i16::from_be_bytes([self.num[0], self.num[1]]);
                    if count < 0 {
                        // The trailer (or a count Postgres refuses).
                        self.done = true;
                        continue;
                    }
                    self.field = 0;
                    self.fields_left = i32::from(count);
                    if count == 0 {
                        self.rows += 1;
                    } else {
                        self.bin = Bin::Length;
                    }
                }
                Bin::Length => {
                    let len =
                        i32::from_be_bytes([self.num[0], self.num[1], self.num[2], self.num[3]]);
                    if len == -1 {
                        self.end_field(row, true)?;
                    } else if len < 0 {
                        self.done = true;
                    } else if len == 0 {
                        self.end_field(row, false)?;
                    } else {
                        self.bin = Bin::Value(len as u32);
                    }
                }
                Bin::Extension(_) | Bin::Value(_) => {}
            }
        }
        Ok(())
    }

    /// A binary field ended (`null`: its length was -1).
    fn end_field<E>(
        &mut self,
        row: &mut dyn FnMut(u64, CopyValue<'_>) -> Result<(), E>,
        null: bool,
    ) -> Result<(), E> {
        let key = self.field == u32::from(self.f.column);
        self.field += 1;
        self.fields_left -= 1;
        self.bin = if self.fields_left > 0 {
            Bin::Length
        } else {
            Bin::Count
        };
        let long = std::mem::replace(&mut self.long, false);
        let raw = std::mem::take(&mut self.raw);
        let out = if !key {
            Ok(())
        } else if null {
            row(self.rows + 1, CopyValue::Null)
        } else if long {
            row(
                self.rows + 1,
                CopyValue::Unreadable("is longer than the router reads"),
            )
        } else {
            row(self.rows + 1, CopyValue::Binary(&raw))
        };
        self.raw = raw;
        self.raw.clear();
        if self.fields_left <= 0 {
            self.rows += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(sql: &str) -> CopyIn {
        copy_in(sql.as_bytes(), b"tenant_id", true)
    }

    fn rows(f: &CopyFormat, chunks: &[&[u8]]) -> Vec<String> {
        let mut r = CopyReader::new(f);
        let mut out = Vec::new();
        let mut push = |n: u64, v: CopyValue<'_>| -> Result<(), ()> {
            out.push(match v {
                CopyValue::Text(t) => format!("{n}:{}", String::from_utf8_lossy(t)),
                CopyValue::Binary(b) => format!("{n}:bin{b:?}"),
                CopyValue::Null => format!("{n}:NULL"),
                CopyValue::Unreadable(_) => format!("{n}:?"),
            });
            Ok(())
        };
        for c in chunks {
            r.feed(c, &mut push).unwrap();
        }
        r.finish(&mut push).unwrap();
        out
    }

    fn format_of(sql: &str) -> CopyFormat {
        match fmt(sql) {
            CopyIn::Rows(f) => *f,
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// Which COPYs have rows to read, and where their key is.
    #[test]
    fn copy_statements_are_read() {
        assert_eq!(fmt("SELECT 1"), CopyIn::None);
        assert_eq!(fmt("COPY t TO STDOUT"), CopyIn::None);
        assert_eq!(fmt("COPY (SELECT 1) TO STDOUT"), CopyIn::None);
        assert_eq!(fmt("COPY t (tenant_id) FROM '/tmp/x'"), CopyIn::None);
        assert_eq!(fmt("COPY t (tenant_id) FROM PROGRAM 'cat'"), CopyIn::None);
        assert_eq!(fmt("COPY t FROM STDIN"), CopyIn::Unread);
        assert_eq!(fmt("COPY t (a, b) FROM STDIN"), CopyIn::Unread);
        // Postgres reads FROM STDOUT as FROM STDIN (probe CO F1).
        assert_eq!(fmt("COPY t (a, b) FROM stdout"), CopyIn::Unread);
        assert_eq!(format_of("COPY t (tenant_id) FROM STDOUT").column, 0);
        let f = format_of("COPY s.t (a, \"tenant_id\", b) FROM STDIN");
        assert_eq!(
            (f.format, f.column, f.delim, &f.null[..]),
            (Format::Text, 1, b'\t', &b"\\N"[..])
        );
        let f = format_of(
            "copy t (TENANT_ID) from stdin with (format csv, header true, delimiter ';', null 'x', quote '''', escape E'\\\\')",
        );
        assert_eq!(
            (
                f.format,
                f.column,
                f.delim,
                &f.null[..],
                f.header,
                f.quote,
                f.escape
            ),
            (Format::Csv, 0, b';', &b"x"[..], true, b'\'', b'\\')
        );
        let f = format_of(
            "COPY t (tenant_id) FROM STDIN WITH CSV HEADER DELIMITER AS '|' FORCE NOT NULL a, b",
        );
        assert_eq!(
            (f.format, f.delim, f.header, f.forced, f.quote, f.escape),
            (Format::Csv, b'|', true, true, b'"', b'"')
        );
        assert_eq!(
            format_of("COPY BINARY t (tenant_id) FROM STDIN").format,
            Format::Binary
        );
        assert_eq!(
            format_of("COPY t (tenant_id) FROM STDIN (FORMAT binary)").format,
            Format::Binary
        );
        assert_eq!(
            format_of("COPY t (tenant_id) FROM STDIN (FORMAT 'csv')").format,
            Format::Csv
        );
        assert_eq!(
            format_of("COPY t (tenant_id) FROM STDIN WHERE tenant_id > 0").format,
            Format::Text
        );
        assert_eq!(
            format_of("COPY t (tenant_id) FROM STDIN USING DELIMITERS ','").delim,
            b','
        );
        assert!(format_of("COPY t (tenant_id) FROM STDIN (FORCE_NULL (tenant_id))").forced);
        assert!(format_of("COPY t (tenant_id) FROM STDIN (FREEZE, HEADER)").header);
        // Refused: not followed.
        for sql in [
            "COPY t (tenant_id) FROM STDIN (ENCODING 'latin1')",
            "COPY t (tenant_id) FROM STDIN ENCODING 'latin1'",
            "COPY t (tenant_id) FROM STDIN (DEFAULT 'x')",
            "COPY t (tenant_id) FROM STDIN (DELIMITER 'ab')",
            "COPY t (tenant_id) FROM STDIN (DELIMITER U&'\\0009')",
            "COPY t (tenant_id) FROM STDIN (DELIMITER E'\\011')",
            "COPY t (tenant_id) FROM STDIN (FORMAT json)",
            "COPY t (tenant_id) FROM STDIN (DELIMITER E'\\n')",
            "COPY t (tenant_id) FROM STDIN NULL E'\\n'",
            "COPY t (tenant_id) FROM STDIN garbage",
        ] {
            assert!(matches!(fmt(sql), CopyIn::Unreadable(_)), "{sql}");
        }
    }

    /// Text rows: fields split at the delimiter, escapes read, `\N` NULL,
    /// `\.` the end, whatever the CopyData boundaries.
    #[test]
    fn text_rows_are_read_as_postgres_reads_them() {
        let f = format_of("COPY t (a, tenant_id) FROM STDIN");
        let data = b"x\t42\ny\t\\N\nz\\\tq\t43\nw\t4\\x34\\0625\r\nv\t\\\\N\n\\.\nu\t99\n";
        let want = ["1:42", "2:NULL", "3:43", "4:4425", "5:\\N"];
        assert_eq!(rows(&f, &[data]), want);
        // Every split of the data reads the same.
        for i in 0..data.len() {
            assert_eq!(rows(&f, &[&data[..i], &data[i..]]), want, "{i}");
        }
        // A last line with no end is a row; so is the line before `\.`.
        assert_eq!(rows(&f, &[b"a\t1\nb\t2"]), ["1:1", "2:2"]);
        assert_eq!(rows(&f, &[b"a\t1\nb\t2\\.\n"]), ["1:1", "2:2"]);
        assert_eq!(rows(&f, &[b"a\t1\n\\."]), ["1:1"]);
        // A `\` that ends the data escapes nothing: dropped (probe CL F3).
        assert_eq!(rows(&f, &[b"a\t1\nb\t42\\"]), ["1:1", "2:42"]);
        assert_eq!(rows(&f, &[b"a\t1\nb\t42", b"\\"]), ["1:1", "2:42"]);
        // An escaped line end is data; a row short of the key is none.
        assert_eq!(rows(&f, &[b"a\\\n\t7\nshort\n"]), ["1:7"]);
        let h = format_of("COPY t (tenant_id) FROM STDIN (HEADER)");
        assert_eq!(rows(&h, &[b"tenant_id\n5\n"]), ["1:5"]);
    }

    /// CSV rows: quotes hide delimiters and line ends, doubled quotes and
    /// escapes are read, an unquoted empty field is NULL, `\.` alone on a
    /// line ends the data.
    #[test]
    fn csv_rows_are_read_as_postgres_reads_them() {
        let f = format_of("COPY t (a, tenant_id) FROM STDIN (FORMAT csv)");
        let data = b"\"x,\ny\",42\n\"a\"\"b\",\"4\"\"3\"\nc,\n d,\"\"\n\\.x,7\n\\.\nz,99\n";
        let want = ["1:42", "2:4\"3", "3:NULL", "4:", "5:7"];
        assert_eq!(rows(&f, &[data]), want);
        for i in 0..data.len() {
            assert_eq!(rows(&f, &[&data[..i], &data[i..]]), want, "{i}");
        }
        let e = format_of("COPY t (a, tenant_id) FROM STDIN (FORMAT csv, ESCAPE '\\')");
        assert_eq!(rows(&e, &[b"\"a\\\",b\",\"4\\\\2\"\n"]), ["1:4\\2"]);
        let h = format_of("COPY t (tenant_id, a) FROM STDIN (FORMAT csv, HEADER)");
        assert_eq!(
            rows(&h, &[b"\"tenant\nid\",a\n42,x\r\n43,y\r\n"]),
            ["1:42", "2:43"]
        );
        // Probe CK F1: under \r\n lines, `\.` then a lone \r or \n is data
        // in CSV (the quote `.` after it hides the line end), so the rows
        // after it are read; F2: `\.` at the very end is a row.
        let dotq = format_of("COPY t (name, tenant_id) FROM STDIN (FORMAT csv, QUOTE '.')");
        let data = b"ok,1\r\n\\.\rX.,1\r\nLEAKED,42\r\n";
        let want = ["1:1", "2:1", "3:42"];
        assert_eq!(rows(&dotq, &[data]), want);
        for i in 0..data.len() {
            assert_eq!(rows(&dotq, &[&data[..i], &data[i..]]), want, "{i}");
        }
        assert_eq!(
            rows(&dotq, &[b"ok,1\r\n\\.\nX.,1\r\nL,42\r\n"]),
            ["1:1", "2:1", "3:42"]
        );
        assert_eq!(rows(&dotq, &[b"ok,1\r\n\\.\r\nL,42\r\n"]), ["1:1"]);
        let one = format_of("COPY t (tenant_id) FROM STDIN (FORMAT csv)");
        assert_eq!(rows(&one, &[b"bravo\n\\."]), ["1:bravo", "2:\\."]);
        assert_eq!(rows(&one, &[b"bravo\n\\.\n"]), ["1:bravo"]);
        let forced =
            format_of("COPY t (tenant_id) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (tenant_id))");
        // (An empty line is a row of one empty field.)
        assert_eq!(rows(&forced, &[b"\n"]), ["1:"]);
        assert_eq!(rows(&forced, &[b"\"\"\n"]), ["1:"]);
    }

    /// Binary rows: the header, length-prefixed fields, NULL, the trailer.
    #[test]
    fn binary_rows_are_read() {
        let f = format_of("COPY t (a, tenant_id) FROM STDIN (FORMAT binary)");
        let mut data = Vec::new();
        data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(b"ext!");
        for (a, k) in [(&b"xy"[..], Some(42i64)), (&b""[..], None)] {
            data.extend_from_slice(&2i16.to_be_bytes());
            data.extend_from_slice(&(a.len() as i32).to_be_bytes());
            data.extend_from_slice(a);
            match k {
                Some(k) => {
                    data.extend_from_slice(&8i32.to_be_bytes());
                    data.extend_from_slice(&k.to_be_bytes());
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data.extend_from_slice(b"after the trailer");
        let want = ["1:bin[0, 0, 0, 0, 0, 0, 0, 42]", "2:NULL"];
        assert_eq!(rows(&f, &[&data]), want);
        for i in 0..data.len() {
            assert_eq!(rows(&f, &[&data[..i], &data[i..]]), want, "{i}");
        }
    }

    /// A key field past [`MAX_FIELD`] is unreadable, and nothing grows
    /// with a row's size.
    #[test]
    fn long_fields_are_unreadable() {
        let f = format_of("COPY t (tenant_id, a) FROM STDIN");
        let mut data = vec![b'0'; MAX_FIELD + 1];
        data.extend_from_slice(b"42\t");
        data.extend(std::iter::repeat_n(b'x', 1 << 20));
        data.push(b'\n');
        assert_eq!(rows(&f, &[&data]), ["1:?"]);
    }
}
