//! Which clause of its statement a token stands in, for the tenant scanner.
//!
//! A comparison on the routing key means different things in different
//! places: in a `WHERE`, `ON` or `HAVING` it filters rows and names the
//! tenant whose rows the statement reads; in a select list, a `SET` list,
//! an `ORDER BY` or an aggregate's `FILTER (WHERE ..)` it is an expression
//! computed for each row and names nothing (probes AI and AJ: `SELECT
//! (tenant_id = 42) AS m FROM accounts` ran on tenant 42's shard alone, and
//! `WHERE tenant_id = 1 OR CASE WHEN tenant_id = 42 THEN true END` on tenant
//! 1's). Inside a filter, the key inside a call, a CASE, a cast or an
//! operand's parentheses (`COALESCE(tenant_id, 0) = 42`) is computed on:
//! which tenants such a predicate matches cannot be read, so a predicate
//! that computes on the key and compares with a value is refused, never
//! skipped.
//!
//! [`Clauses`] follows the statement token by token with a stack of frames:
//! the statement and each subquery (whose clause keywords it follows), each
//! parenthesis, bracket and CASE. Fixed size, no allocation: below
//! [`DEPTH`] frames it knows where it is; deeper, any key is unreadable.

use super::lexer::*;

/// Where a token stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Place {
    /// A select list, FROM list, SET list, ORDER BY, VALUES, DDL ...: a
    /// comparison there names no tenant.
    Other,
    /// A MERGE `WHEN [NOT] MATCHED` clause: its `AND` starts a filter.
    MergeWhen,
    /// A filter (WHERE, ON, HAVING, MERGE's `WHEN .. AND`) at predicate
    /// level, through grouping parentheses: `key = value` here is read.
    Filter,
    /// Inside an operand of a filter (a call's arguments, a CASE, a cast,
    /// an array, parentheses that are an operand): the key here is computed
    /// on.
    Nested,
    /// Deeper than [`DEPTH`] frames: where is not known, so any key is
    /// unreadable.
    Deep,
}

/// Frames followed exactly; deeper nesting is [`Place::Deep`].
const DEPTH: usize = 32;

/// The words this module tells apart; any other token is [`W::Name`]
/// (an identifier) or [`W::No`] (not a word). One lookup per token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum W {
    No,
    Name,
    /// A word of an expression that is no column (`TRUE`, `NULL`, `IS`,
    /// `ARRAY`, `CAST`, ..: [`word`]).
    Expr,
    And,
    Or,
    Not,
    Then,
    Else,
    As,
    When,
    Case,
    End,
    In,
    Operator,
    Distinct,
    From,
    Where,
    Having,
    On,
    Count,
    Within,
    /// Ends a filter: `ORDER`, `LIMIT`, `JOIN`, `UNION`, `THEN` ..
    /// ([`word`]); `LEFT`/`RIGHT` only when not a call.
    Ends,
    LeftRight,
    Group,
    /// Starts a subquery after `(`.
    Select,
    With,
    Values,
    Table,
    /// `IS`, `BETWEEN`, `LIKE`, `ILIKE`, `SIMILAR`: a comparison.
    Compares,
}

/// The word token `t` is (see [`W`]).
pub(super) fn word(sql: &[u8], t: &Tok) -> W {
    if t.k != K::Ident {
        return if t.k == K::QIdent { W::Name } else { W::No };
    }
    let w = text(sql, t);
    // Most identifiers are no word: told by their first letter and length.
    if w.len() > MAX_WORD || LENGTHS[usize::from(w[0] & 31)] & (1 << w.len()) == 0 {
        return W::Name;
    }
    match lookup(pack(w)) {
        // (The number holds the last seven bytes, and folds no byte of an
        // identifier onto a letter but its capital: a longer word checks
        // whole.)
        Some((k, lit)) if w.len() <= 7 || w.eq_ignore_ascii_case(lit) => k,
        _ => W::Name,
    }
}

/// The longest word [`lookup`] knows.
const MAX_WORD: usize = 9;

/// A word's length and its last seven bytes, lowercased (`| 0x20` folds
/// the ASCII capitals onto the small letters; other bytes may fold too,
/// which [`word`]'s check of the whole word catches), as one number to
/// `match` on.
const fn pack(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = w.len().saturating_sub(7);
    while i < w.len() {
        v = (v << 8) | (w[i] | 0x20) as u64;
        i += 1;
    }
    v | (w.len() as u64) << 56
}

/// The words of [`W`], each a constant of its [`pack`]ed value, and
/// [`lookup`] over them (a `match` the compiler makes a search tree of).
macro_rules! words {
    ($($name:ident = $lit:literal => $w:expr,)*) => {
        $(const $name: u64 = pack($lit);)*

        /// The word whose [`pack`]ed value is `v`, and its spelling.
        fn lookup(v: u64) -> Option<(W, &'static [u8])> {
            match v {
                $($name => Some(($w, $lit)),)*
                _ => None,
            }
        }

        /// For each first letter (its low five bits), the lengths of the
        /// words that start with it (bit n: length n).
        const LENGTHS: [u16; 32] = {
            let mut m = [0u16; 32];
            $(m[($lit[0] & 31) as usize] |= 1 << $lit.len();)*
            m
        };

        #[cfg(test)]
        const WORDS: &[(&[u8], W)] = &[$(($lit, $w),)*];
    };
}

words! {
    AND = b"and" => W::And,
    OR = b"or" => W::Or,
    NOT = b"not" => W::Not,
    THEN = b"then" => W::Then,
    ELSE = b"else" => W::Else,
    AS = b"as" => W::As,
    WHEN = b"when" => W::When,
    CASE = b"case" => W::Case,
    END = b"end" => W::End,
    IN = b"in" => W::In,
    OPERATOR = b"operator" => W::Operator,
    DISTINCT = b"distinct" => W::Distinct,
    FROM = b"from" => W::From,
    WHERE = b"where" => W::Where,
    HAVING = b"having" => W::Having,
    ON = b"on" => W::On,
    COUNT = b"count" => W::Count,
    WITHIN = b"within" => W::Within,
    GROUP = b"group" => W::Group,
    SELECT = b"select" => W::Select,
    WITH = b"with" => W::With,
    VALUES = b"values" => W::Values,
    TABLE = b"table" => W::Table,
    LEFT = b"left" => W::LeftRight,
    RIGHT = b"right" => W::LeftRight,
    IS = b"is" => W::Compares,
    BETWEEN = b"between" => W::Compares,
    LIKE = b"like" => W::Compares,
    ILIKE = b"ilike" => W::Compares,
    SIMILAR = b"similar" => W::Compares,
    // Reserved words only: an unreserved one may be a column (`WHERE
    // update = 1 AND tenant_id = 42`). (Not WITH: `::timestamp with time
    // zone`.)
    ORDER = b"order" => W::Ends,
    LIMIT = b"limit" => W::Ends,
    OFFSET = b"offset" => W::Ends,
    FETCH = b"fetch" => W::Ends,
    RETURNING = b"returning" => W::Ends,
    FOR = b"for" => W::Ends,
    WINDOW = b"window" => W::Ends,
    UNION = b"union" => W::Ends,
    INTERSECT = b"intersect" => W::Ends,
    EXCEPT = b"except" => W::Ends,
    INTO = b"into" => W::Ends,
    USING = b"using" => W::Ends,
    DO = b"do" => W::Ends,
    JOIN = b"join" => W::Ends,
    INNER = b"inner" => W::Ends,
    CROSS = b"cross" => W::Ends,
    FULL = b"full" => W::Ends,
    NATURAL = b"natural" => W::Ends,
    TRUE = b"true" => W::Expr,
    FALSE = b"false" => W::Expr,
    NULL = b"null" => W::Expr,
    UNKNOWN = b"unknown" => W::Expr,
    ISNULL = b"isnull" => W::Expr,
    NOTNULL = b"notnull" => W::Expr,
    ANY = b"any" => W::Expr,
    SOME = b"some" => W::Expr,
    ALL = b"all" => W::Expr,
    ARRAY = b"array" => W::Expr,
    ROW = b"row" => W::Expr,
    SYMMETRIC = b"symmetric" => W::Expr,
    TO = b"to" => W::Expr,
    ESCAPE = b"escape" => W::Expr,
    COLLATE = b"collate" => W::Expr,
    AT = b"at" => W::Expr,
    TIME = b"time" => W::Expr,
    ZONE = b"zone" => W::Expr,
    CAST = b"cast" => W::Expr,
    EXISTS = b"exists" => W::Expr,
    OVERLAPS = b"overlaps" => W::Expr,
    INTERVAL = b"interval" => W::Expr,
    VARIADIC = b"variadic" => W::Expr,
    DEFAULT = b"default" => W::Expr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The statement or a subquery: its clause keywords move its place.
    Query,
    /// `(` or `[`, closed by `)` or `]`.
    Paren,
    /// `CASE`, closed by `END`.
    Case,
}

/// What one operand of a comparison holds (bits).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Sum(u8);

impl Sum {
    /// The key computed on (in a call, a CASE, a cast, operand parentheses,
    /// after `NOT` or an arithmetic operator).
    const KEY: u8 = 1;
    /// A column (the key too), a subquery: a value that varies by row.
    const COLUMN: u8 = 2;
    /// A literal or a parameter.
    const VALUE: u8 = 4;

    fn key(self) -> bool {
        self.0 & Sum::KEY != 0
    }

    /// Built from literals and parameters alone: it may name a tenant.
    fn constant(self) -> bool {
        self.0 == Sum::VALUE
    }
}

#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    place: Place,
    /// Inside `count(..)`: the key's value never reaches the comparison
    /// (`HAVING count(tenant_id) = 1`, SQLAlchemy).
    counted: bool,
    /// A row after `=` or `IN` (`(tenant_id, id) IN ((b.tenant_id, 1))`):
    /// a key that is a whole element of it is compared, not computed on.
    row: bool,
    /// A simple CASE (`CASE tenant_id WHEN 42`): its WHENs compare its
    /// operand.
    simple: bool,
    /// A type name comes next (after `AS` in `CAST(.. AS type)`), no
    /// column.
    typing: bool,
    /// The operand being read at this frame's level.
    side: Sum,
    /// The left operand of the equality being read, if one is.
    left: Option<Sum>,
    /// A simple CASE's operand, once its first WHEN is seen.
    operand: Option<Sum>,
    /// Everything in the frame, for the operand around it.
    all: Sum,
}

impl Frame {
    const fn new(kind: Kind, place: Place) -> Frame {
        Frame {
            kind,
            place,
            counted: false,
            row: false,
            simple: false,
            typing: false,
            side: Sum(0),
            left: None,
            operand: None,
            all: Sum(0),
        }
    }

    /// Whether the equality being read compares the key computed on with a
    /// constant; either way the next operand starts.
    fn end_operand(&mut self) -> bool {
        let r = self.side;
        self.side = Sum(0);
        self.typing = false;
        match self.left.take() {
            Some(l) => (l.key() && r.constant()) || (r.key() && l.constant()),
            None => false,
        }
    }

    /// An equality starts: what was read is its left operand.
    fn equality(&mut self) -> bool {
        let l = self.side;
        let ended = self.end_operand();
        self.left = Some(l);
        ended
    }

    fn add(&mut self, bits: u8) {
        self.side.0 |= bits;
        self.all.0 |= bits;
    }

    fn tracks(&self) -> bool {
        matches!(self.place, Place::Filter | Place::Nested)
    }
}

/// The clause stack of one statement text (see the module docs). The
/// scanner calls [`Clauses::before`] and [`Clauses::after`] with every
/// significant token, [`Clauses::key`] with every mention of the key, and
/// [`Clauses::finish`] at the end.
pub(super) struct Clauses {
    frames: [Frame; DEPTH],
    depth: usize,
    /// Frames opened past [`DEPTH`], not yet closed.
    deep: usize,
    /// The word of the token being looked at, and of the one before.
    w: W,
    prev: W,
    /// The token before was an identifier that names a column unless this
    /// one calls it, qualifies it or is its typed literal (`f(`, `t.`,
    /// `date '..'`): decided at this token, to look ahead no further.
    maybe_column: bool,
}

impl Clauses {
    pub(super) fn new() -> Clauses {
        Clauses {
            frames: [Frame::new(Kind::Query, Place::Other); DEPTH],
            depth: 1,
            deep: 0,
            w: W::No,
            prev: W::No,
            maybe_column: false,
        }
    }

    fn top(&self) -> &Frame {
        &self.frames[self.depth - 1]
    }

    fn top_mut(&mut self) -> &mut Frame {
        &mut self.frames[self.depth - 1]
    }

    /// Whether the token being looked at, after `p1`, starts a predicate
    /// ([`predicate_start`], from the word already looked up).
    pub(super) fn starts_predicate(&self, p1: Option<Tok>) -> bool {
        match p1 {
            None => true,
            Some(t) => {
                matches!(t.k, K::Semi | K::LParen)
                    || matches!(self.prev, W::Where | W::And | W::Or | W::On | W::Having)
            }
        }
    }

    /// Where the token being looked at stands.
    pub(super) fn place(&self) -> Place {
        if self.deep > 0 {
            Place::Deep
        } else {
            self.top().place
        }
    }

    /// Takes significant token `t` (`p1` the one before it, `next` the
    /// cursor after it): clause keywords, the operands of equalities inside
    /// filters, then the frames it opens or closes. Returns where it stands
    /// (before any frame it opens), and whether an equality ended that
    /// compared the key computed on with a constant (the scanner reports it
    /// unreadable).
    #[inline]
    pub(super) fn step(
        &mut self,
        sql: &[u8],
        t: &Tok,
        p1: Option<Tok>,
        next: &Lexer<'_>,
    ) -> (Place, bool) {
        let ended = self.operands(sql, t, p1, next);
        let place = self.place();
        let closed = match t.k {
            K::LParen | K::LBrack => {
                self.open(sql, t, p1, next);
                false
            }
            K::RParen | K::RBrack => self.close(Kind::Paren),
            K::Semi => self.finish(),
            K::Ident if self.w == W::Case => {
                self.case(sql, next);
                false
            }
            K::Ident if self.w == W::End => self.close(Kind::Case),
            _ => false,
        };
        (place, ended | closed)
    }

    /// [`Clauses::step`]'s first half: clause keywords and operands.
    #[inline]
    fn operands(&mut self, sql: &[u8], t: &Tok, p1: Option<Tok>, next: &Lexer<'_>) -> bool {
        self.prev = self.w;
        // After `.`, a word is a name (`t.case`, `t.end`, `t.left`).
        let name = p1.is_some_and(|p| p.k == K::Dot);
        self.w = match t.k {
            K::Ident if !name => word(sql, t),
            K::Ident | K::QIdent => W::Name,
            _ => W::No,
        };
        if std::mem::take(&mut self.maybe_column)
            && !matches!(t.k, K::LParen | K::Dot | K::Str { .. })
            && self.deep == 0
        {
            self.top_mut().add(Sum::COLUMN);
        }
        if self.deep > 0 {
            return false;
        }
        let top = *self.top();
        if top.kind == Kind::Query {
            if let Some(place) = self.clause_word(sql, top.place, next) {
                let ended = top.tracks() && self.top_mut().end_operand();
                *self.top_mut() = Frame::new(Kind::Query, place);
                return ended;
            }
        }
        if !top.tracks() {
            return false;
        }
        let prev = self.prev;
        let w = self.w;
        let f = self.top_mut();
        match t.k {
            K::Comma => return f.end_operand(),
            K::Op if text(sql, t) == b"=" => return f.equality(),
            K::Int | K::Num | K::Str { .. } | K::Dollar | K::Lit | K::Param(_) => {
                f.add(Sum::VALUE);
                return false;
            }
            _ => {}
        }
        match w {
            W::And | W::Or | W::Then | W::Else => f.end_operand(),
            W::As => {
                let ended = f.end_operand();
                f.typing = true;
                ended
            }
            W::When => {
                let side = f.side;
                let ended = f.end_operand();
                if f.kind == Kind::Case && f.simple {
                    // Each WHEN compares the CASE's operand.
                    f.left = Some(*f.operand.get_or_insert(side));
                }
                ended
            }
            W::In | W::Operator => f.equality(),
            W::Distinct if prev == W::Not => f.equality(),
            // A type after `::` or `AS` is no column.
            W::Name
            | W::Count
            | W::Within
            | W::Group
            | W::Select
            | W::With
            | W::Values
            | W::Table
            | W::LeftRight
                if !f.typing && !p1.is_some_and(|p| p.k == K::Cast) =>
            {
                self.maybe_column = true;
                false
            }
            _ => false,
        }
    }

    /// The key, standing where [`Clauses::place`] says: `p1` the token
    /// before its (qualified) name, `next` the cursor after it. In a filter
    /// unless compared as a whole (`key = ..`, `.. = key`, `key IN ..`,
    /// `key IS ..`, an element of a row), or inside an operand unless in
    /// `count(..)` or a whole element of a row, it is computed on.
    pub(super) fn key(&mut self, sql: &[u8], p1: Option<Tok>, next: &Lexer<'_>) {
        if self.deep > 0 {
            return;
        }
        let top = *self.top();
        let computed = match top.place {
            Place::Filter => !whole_operand(sql, p1, next),
            Place::Nested => !(top.counted || (top.row && row_element(p1, next))),
            _ => return,
        };
        self.top_mut()
            .add(Sum::COLUMN | if computed { Sum::KEY } else { 0 });
    }

    /// `CASE`: a frame until its `END`.
    fn case(&mut self, sql: &[u8], next: &Lexer<'_>) {
        if self.deep > 0 || self.depth == DEPTH {
            self.deep += 1;
            return;
        }
        let top = *self.top();
        let mut f = Frame::new(Kind::Case, inner(top.place));
        f.counted = top.counted;
        f.simple = !next.peek_sig().is_some_and(|n| word(sql, &n) == W::When);
        self.push(f);
    }

    /// Closes every frame (at a `;` or the end of the text). Returns
    /// whether an equality ended unreadable.
    pub(super) fn finish(&mut self) -> bool {
        if std::mem::take(&mut self.maybe_column) && self.deep == 0 {
            self.top_mut().add(Sum::COLUMN);
        }
        let mut ended = false;
        while self.depth > 1 || self.deep > 0 {
            ended |= self.pop();
        }
        ended | self.pop()
    }

    fn push(&mut self, f: Frame) {
        self.frames[self.depth] = f;
        self.depth += 1;
    }

    /// `(` or `[`: a subquery, a grouping of predicates, or an operand.
    fn open(&mut self, sql: &[u8], t: &Tok, p1: Option<Tok>, next: &Lexer<'_>) {
        if self.deep > 0 || self.depth == DEPTH {
            self.deep += 1;
            return;
        }
        let top = *self.top();
        let query = t.k == K::LParen
            && next.peek_sig().is_some_and(|n| {
                matches!(word(sql, &n), W::Select | W::With | W::Values | W::Table)
                    || data_modifying(sql, &n, next)
            });
        let f = if query {
            Frame::new(Kind::Query, Place::Other)
        } else if top.place == Place::Filter && t.k == K::LParen && self.starts_predicate(p1) {
            Frame::new(Kind::Paren, Place::Filter)
        } else {
            let mut f = Frame::new(Kind::Paren, inner(top.place));
            f.counted = top.counted || self.prev == W::Count;
            f.row = t.k == K::LParen
                && p1.is_some_and(|p| {
                    is_op(sql, &p, b"=")
                        || self.prev == W::In
                        || (top.row && matches!(p.k, K::LParen | K::Comma))
                });
            f
        };
        self.push(f);
    }

    /// `)`/`]` (a paren or subquery) or `END` (a CASE): closes frames down
    /// to the innermost of that kind in the current statement or subquery,
    /// if any.
    fn close(&mut self, kind: Kind) -> bool {
        if self.deep > 0 {
            self.deep -= 1;
            return false;
        }
        let Some(at) = (1..self.depth)
            .rev()
            .take_while(|&i| kind == Kind::Paren || self.frames[i].kind != Kind::Query)
            .find(|&i| {
                let k = self.frames[i].kind;
                k == kind || (kind == Kind::Paren && k == Kind::Query)
            })
        else {
            return false;
        };
        let mut ended = false;
        while self.depth > at {
            ended |= self.pop();
        }
        ended
    }

    /// Closes the top frame: ends its operands, and gives what it held to
    /// the operand around it (a subquery gives a value that varies by row).
    /// The statement's own frame is reset instead.
    fn pop(&mut self) -> bool {
        if self.deep > 0 {
            self.deep -= 1;
            return false;
        }
        let i = self.depth - 1;
        let mut f = self.frames[i];
        let ended = f.tracks() && f.end_operand();
        if i == 0 {
            self.frames[0] = Frame::new(Kind::Query, Place::Other);
            return ended;
        }
        self.depth -= 1;
        let outer = self.top_mut();
        if outer.tracks() {
            outer.add(if f.kind == Kind::Query {
                Sum::COLUMN
            } else {
                f.all.0
            });
        }
        ended
    }

    /// The place a clause keyword at the current token moves its statement
    /// to, if it is one (at the statement's or a subquery's own level).
    fn clause_word(&self, sql: &[u8], now: Place, next: &Lexer<'_>) -> Option<Place> {
        let next_word = || next.peek_sig().map(|n| (n.k, word(sql, &n)));
        match self.w {
            W::Where | W::Having => Some(Place::Filter),
            // `ON CONFLICT (..)` names a conflict target, not a join filter.
            W::On => Some(
                match next.peek_sig().filter(|n| {
                    let n = text(sql, n);
                    n.eq_ignore_ascii_case(b"CONFLICT") || n.eq_ignore_ascii_case(b"CONSTRAINT")
                }) {
                    Some(_) => Place::Other,
                    None => Place::Filter,
                },
            ),
            W::When => Some(Place::MergeWhen),
            W::And if now == Place::MergeWhen => Some(Place::Filter),
            W::Ends | W::Select | W::Then => Some(Place::Other),
            W::From if self.prev != W::Distinct => Some(Place::Other),
            W::Group if self.prev != W::Within => Some(Place::Other),
            W::LeftRight if !next_word().is_some_and(|(k, _)| k == K::LParen) => Some(Place::Other),
            _ => None,
        }
    }
}

/// Whether `n`, the token after a `(` (with `next` at it), starts a
/// data-modifying statement: `INSERT INTO`, `DELETE FROM`, `MERGE INTO`,
/// `UPDATE [ONLY] name` (probe: `WITH x AS (DELETE FROM t WHERE
/// tenant_id = 'bravo' ..)` was read as an operand, its WHERE not read).
/// Unreserved words: `(update = 1)` and `(update IS NULL)` compare a
/// column.
fn data_modifying(sql: &[u8], n: &Tok, next: &Lexer<'_>) -> bool {
    if n.k != K::Ident {
        return false;
    }
    let mut l = *next;
    l.next_sig();
    let Some(m) = l.next_sig() else {
        return false;
    };
    let w = text(sql, n);
    let then = |k: &[u8]| is_kw(sql, &m, k);
    (w.eq_ignore_ascii_case(b"INSERT") && then(b"INTO"))
        || (w.eq_ignore_ascii_case(b"DELETE") && then(b"FROM"))
        || (w.eq_ignore_ascii_case(b"MERGE") && then(b"INTO"))
        || (w.eq_ignore_ascii_case(b"UPDATE") && is_identlike(&m) && word(sql, &m) == W::Name)
}

/// The place of an operand's inside: in a filter, nested; elsewhere, as
/// it was.
fn inner(p: Place) -> Place {
    match p {
        Place::Filter | Place::Nested => Place::Nested,
        Place::MergeWhen => Place::Other,
        p => p,
    }
}

/// Whether a token after `p1` starts a predicate of a filter (the words
/// that join predicates, or a grouping parenthesis).
pub(super) fn predicate_start(sql: &[u8], p1: Option<Tok>) -> bool {
    match p1 {
        None => true,
        Some(t) => match t.k {
            K::Semi | K::LParen => true,
            K::Ident => matches!(word(sql, &t), W::Where | W::And | W::Or | W::On | W::Having),
            _ => false,
        },
    }
}

/// Whether the key, between `p1` and the cursor `next`, is a whole element
/// of a row: `(.., key, ..)`.
fn row_element(p1: Option<Tok>, next: &Lexer<'_>) -> bool {
    p1.is_some_and(|p| matches!(p.k, K::LParen | K::Comma))
        && next
            .peek_sig()
            .is_some_and(|n| matches!(n.k, K::Comma | K::RParen))
}

/// Whether the key, between `p1` and the cursor `next`, is a whole operand
/// of a comparison in a filter: `key <op> ..`, `key IN/IS/BETWEEN/LIKE ..`
/// at the start of a predicate, `.. <op> key` at a predicate's end, or a
/// whole element of a row (`(key, id) = ..`), in parentheses or not.
fn whole_operand(sql: &[u8], p1: Option<Tok>, next: &Lexer<'_>) -> bool {
    let mut l = *next;
    let mut n = l.next_sig();
    while n.is_some_and(|t| t.k == K::RParen) {
        n = l.next_sig();
    }
    let starts = predicate_start(sql, p1) || p1.is_some_and(|p| p.k == K::Comma);
    if starts {
        let compares = n.is_some_and(|t| match t.k {
            K::Comma => true,
            K::Op => is_comparison(text(sql, &t)),
            K::Ident => matches!(word(sql, &t), W::In | W::Compares | W::Not | W::Operator),
            _ => false,
        });
        if compares {
            return true;
        }
    }
    let after_op = p1.is_some_and(|p| {
        (p.k == K::Op && is_comparison(text(sql, &p)))
            // `.. OPERATOR(pg_catalog.=) key`
            || p.k == K::RParen
            || word(sql, &p) == W::From
    });
    after_op
        && match n {
            None => true,
            Some(t) => {
                matches!(t.k, K::Semi | K::RParen | K::Comma) || is_any_kw(sql, &t, FOLLOWERS)
            }
        }
}

fn is_comparison(op: &[u8]) -> bool {
    matches!(op, b"=" | b"<>" | b"!=" | b"<" | b">" | b"<=" | b">=")
}

/// Words that end a predicate: a comparison followed by one of them is
/// whole (the scanner's `follower_ok`; `tenant_id = 42 IS TRUE`, `= 1 + 0`
/// go on).
pub(super) const FOLLOWERS: &[&[u8]] = &[
    b"AND",
    b"OR",
    b"ORDER",
    b"GROUP",
    b"LIMIT",
    b"OFFSET",
    b"FETCH",
    b"RETURNING",
    b"FOR",
    b"HAVING",
    b"WINDOW",
    b"UNION",
    b"INTERSECT",
    b"EXCEPT",
    b"ON",
    b"WHERE",
    b"JOIN",
    b"INNER",
    b"LEFT",
    b"RIGHT",
    b"FULL",
    b"CROSS",
    b"NATURAL",
    b"DO",
    b"WHEN",
    b"THEN",
    b"WITH",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_found_in_any_case_and_no_other() {
        for (lit, w) in WORDS {
            let s = std::str::from_utf8(lit).unwrap();
            let mut l = Lexer::new(lit, true);
            assert_eq!(word(lit, &l.next_sig().unwrap()), *w, "{s}");
            let up = s.to_uppercase();
            let mut l = Lexer::new(up.as_bytes(), true);
            assert_eq!(word(up.as_bytes(), &l.next_sig().unwrap()), *w, "{up}");
            // The same last seven letters after another first one.
            let other = format!("q{}", &s[1..]);
            let mut l = Lexer::new(other.as_bytes(), true);
            assert_eq!(
                word(other.as_bytes(), &l.next_sig().unwrap()),
                W::Name,
                "{other}"
            );
        }
        let lex = |s: &str| {
            let mut l = Lexer::new(s.as_bytes(), true);
            let t = l.next_sig().unwrap();
            word(s.as_bytes(), &t)
        };
        for (s, w) in [
            ("and", W::And),
            ("AND", W::And),
            ("Intersect", W::Ends),
            ("symmetric", W::Expr),
            ("count", W::Count),
            ("left", W::LeftRight),
            ("an", W::Name),
            ("andx", W::Name),
            ("tenant_id", W::Name),
            ("\"and\"", W::Name),
            ("a", W::Name),
            ("intersects", W::Name),
            ("(", W::No),
        ] {
            assert_eq!(lex(s), w, "{s}");
        }
    }
}
