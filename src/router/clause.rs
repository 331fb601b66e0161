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
    /// Ends a filter: `ORDER`, `LIMIT`, `RETURNING`, `FOR` .. ([`word`]).
    Ends,
    /// `UNION`, `INTERSECT`, `EXCEPT`: also make a parenthesis a query.
    SetOp,
    /// `JOIN`, `INNER`, `LEFT`, `RIGHT`, `FULL`, `CROSS`, `NATURAL`: end a
    /// filter and make a parenthesis of a FROM list a query, unless a
    /// call or a type (these may name functions and types: `inner(v)`,
    /// `v::full`).
    Join,
    /// `TRUE`, `FALSE`: constants.
    Bool,
    /// `ROW`: `ROW(tenant_id, id) = ROW(42, 1)` is a row comparison.
    Row,
    Group,
    /// Starts a subquery after `(`.
    Select,
    With,
    Values,
    Table,
    /// `IS`, `BETWEEN`, `LIKE`, `ILIKE`, `SIMILAR`: a comparison.
    Compares,
}

impl W {
    /// `WHERE`, `AND`, `OR`, `ON`, `HAVING`: a predicate of a filter
    /// starts after it.
    pub(super) fn joins_predicates(self) -> bool {
        matches!(self, W::Where | W::And | W::Or | W::On | W::Having)
    }
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
const MAX_WORD: usize = 17;

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
        const LENGTHS: [u32; 32] = {
            let mut m = [0u32; 32];
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
    LEFT = b"left" => W::Join,
    RIGHT = b"right" => W::Join,
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
    UNION = b"union" => W::SetOp,
    INTERSECT = b"intersect" => W::SetOp,
    EXCEPT = b"except" => W::SetOp,
    INTO = b"into" => W::Ends,
    USING = b"using" => W::Ends,
    DO = b"do" => W::Ends,
    JOIN = b"join" => W::Join,
    INNER = b"inner" => W::Join,
    CROSS = b"cross" => W::Join,
    FULL = b"full" => W::Join,
    NATURAL = b"natural" => W::Join,
    TRUE = b"true" => W::Bool,
    FALSE = b"false" => W::Bool,
    NULL = b"null" => W::Expr,
    UNKNOWN = b"unknown" => W::Expr,
    ISNULL = b"isnull" => W::Expr,
    NOTNULL = b"notnull" => W::Expr,
    ANY = b"any" => W::Expr,
    SOME = b"some" => W::Expr,
    ALL = b"all" => W::Expr,
    ARRAY = b"array" => W::Expr,
    ROW = b"row" => W::Row,
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
    // SQL value functions: reserved words, no columns (probe AT:
    // `= (current_date - current_date) + 42` was taken for a join).
    USER = b"user" => W::Expr,
    CURRENT_USER = b"current_user" => W::Expr,
    CURRENT_ROLE = b"current_role" => W::Expr,
    SESSION_USER = b"session_user" => W::Expr,
    SYSTEM_USER = b"system_user" => W::Expr,
    CURRENT_DATE = b"current_date" => W::Expr,
    CURRENT_TIME = b"current_time" => W::Expr,
    CURRENT_TIMESTAMP = b"current_timestamp" => W::Expr,
    LOCALTIME = b"localtime" => W::Expr,
    LOCALTIMESTAMP = b"localtimestamp" => W::Expr,
    CURRENT_SCHEMA = b"current_schema" => W::Expr,
    CURRENT_CATALOG = b"current_catalog" => W::Expr,
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
    /// A row (`(1, tenant_id)`): compared element by element.
    const ROW: u8 = 8;
    /// `TRUE` or `FALSE`: a constant, but no tenant.
    const BOOL: u8 = 16;
    /// The key compared whole, its comparison not read by the scanner
    /// (`tenant_id = (42 + 0)`, `= @ 42`, `IN (42 + 0)`: probe AQ).
    const WHOLE: u8 = 32;
    /// A function's result (`abs(42)`, `current_setting('x')::int`): a
    /// value the scan does not read, named as such in the README.
    const CALL: u8 = 64;
    /// A literal or parameter at the operand's own level, not only in a
    /// call's arguments (`abs(0) + 42`, `(42 + abs(0))`: probe AS; the
    /// call's result exemption does not cover it).
    const LIT: u8 = 128;

    fn key(self) -> bool {
        self.0 & Sum::KEY != 0
    }

    /// Built from literals and parameters alone: it may name a tenant.
    fn constant(self) -> bool {
        self.0 & !(Sum::ROW | Sum::VALUE | Sum::BOOL | Sum::CALL | Sum::LIT) == 0
            && self.0 & (Sum::VALUE | Sum::BOOL) != 0
    }

    /// Whether, compared by an equality with `other`, this computes on
    /// the key against a constant: all of `other`, or, between rows, any
    /// element of it (`(id, 42) = (1, tenant_id)`).
    ///
    /// A literal or parameter at `other`'s own level counts whatever else
    /// is in it: a word the scan takes for a column may be none (`= (''
    /// IS NORMALIZED)::int + 41`, `interval '41' day`, named arguments:
    /// probe AV), and the key compared with a column plus a constant is
    /// no join an application writes.
    fn against(self, other: Sum) -> bool {
        // (`= NULL` alone is no tenant.)
        let lit = other.0 & Sum::LIT != 0 && other.0 & !(Sum::LIT | Sum::ROW | Sum::WHOLE) != 0;
        if self.0 & Sum::WHOLE != 0 {
            // A row the scanner did not read (it reads rows of columns:
            // `(tenant_id, id) = (b.tenant_id, b.id + 1)` is a join) is
            // compared with a constant if any element may be one (probe
            // AZ: `(.., (((tenant_id)))) = (abs(1), 42)`).
            // (A subquery's row too, `= (SELECT 1, 42)`: probe BB.)
            if self.0 & Sum::ROW != 0 {
                return other.0 & (Sum::VALUE | Sum::LIT | Sum::BOOL | Sum::CALL) != 0;
            }
            if (other.constant() && other.0 & Sum::CALL == 0) || lit {
                return true;
            }
        }
        self.key()
            && (other.constant()
                || lit
                || (self.0 & other.0 & Sum::ROW != 0 && other.0 & Sum::VALUE != 0))
    }
}

#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    place: Place,
    /// Right inside `count(`: the key as its whole argument is counted, its
    /// value never compared (`HAVING count(tenant_id) = 1`, SQLAlchemy).
    counted: bool,
    /// A simple CASE (`CASE tenant_id WHEN 42`): its WHENs compare its
    /// operand.
    simple: bool,
    /// A type name comes next (after `AS` in `CAST(.. AS type)` or `::`,
    /// up to an operator or the operand's end), no column.
    typing: bool,
    /// Parentheses around an operand (after an operator, `(`, `,`, `IN`,
    /// `NOT` ..), not a call's.
    grouping: bool,
    /// The current predicate has a binary comparison (an equality, an
    /// order, `LIKE` ..), not only `IS [NOT] NULL` tests.
    binary: bool,
    /// A predicate at this level had no binary comparison: what the
    /// frame holds may be an operand, or a truth value (see
    /// [`Frame::end_predicate`]).
    open_seen: bool,
    /// A predicate at this level had one.
    binary_seen: bool,
    /// A grouping or `ROW(..)` with more than one element: a row.
    row: bool,
    /// A grouping whose whole content so far is the key (`42 = (tenant_id)`,
    /// `x - (tenant_id)`): the key stands where the grouping does, judged
    /// when it closes.
    bare: bool,
    /// Whether the scanner read the comparison of the [`Frame::bare`] key
    /// (`42 = (tenant_id)`; not `(42 + 0) = (tenant_id)`: probe AT, taken
    /// as read when the grouping closed, so nothing was refused).
    bare_read: bool,
    /// The predicate being read started with `NOT`: a comparison of the
    /// key in it is the key computed on, on either side (`NOT 42 <>
    /// tenant_id` is `tenant_id = 42`: probe AT, read past while `NOT
    /// tenant_id <> 42` was refused).
    negated: bool,
    /// A CASE: in a `THEN` or `ELSE` (its result), and whether a literal
    /// stood there. A literal only in its conditions (`CASE WHEN o.status
    /// = 'x' THEN o.tenant_id ..`) is none of its value: probe AY.
    in_result: bool,
    result_lit: bool,
    /// `[..]` after a value: a subscript, whose literals pick an element
    /// and are none of the value (`(ARRAY[o.tenant_id])[1]`: probe AY).
    subscript: bool,
    /// A row whose element is the key, in a comparison the scanner did not
    /// read ([`Clauses::key`]).
    row_unread: bool,
    /// What stands before the `(`, for a [`Frame::bare`] key.
    before: Before,
    /// The current predicate at this level: what it holds, whether it
    /// compares the key whole (`tenant_id <> 42`, `42 = tenant_id`, a row
    /// or parentheses holding one), and how many comparisons it makes. A
    /// key compared whole whose comparison is compared again (`tenant_id
    /// <> 42 IS NOT TRUE`, `(tenant_id = 42) = deleted`) with a literal in
    /// the predicate matches tenants the router cannot read.
    pred: Sum,
    key_cmp: bool,
    cmps: u8,
    /// A grouping of a filter: whether any predicate in it compared the
    /// key whole (what the grouping is to the comparison around it).
    group_key_cmp: bool,
    /// The key is mentioned in the frame (or frames inside it); in a query,
    /// in its select list (before its `FROM`). A subquery whose select
    /// list mentions the key may compute on the outer row's key
    /// (`(SELECT tenant_id) = 42`, `(SELECT t.tenant_id FROM x) = 42`:
    /// probes AM and AO): it is the key computed on.
    key_seen: bool,
    from_seen: bool,
    /// A query's ORDER BY, GROUP BY, LIMIT ..: a key there may be the
    /// outer row's and pick which row a subquery gives (`42 = (SELECT x
    /// FROM unnest(..) x ORDER BY x = t.tenant_id DESC LIMIT 1)`: probe AT),
    /// as in its select list.
    ordering: bool,
    /// A query that is an operand of a filter: its select list is
    /// [`Place::Nested`].
    in_filter: bool,
    /// The parentheses of `OPERATOR(..)`.
    operator: bool,
    /// A function's arguments.
    call: bool,
    /// The subquery of `EXISTS (..)`, whose select list is never compared.
    exists: bool,
    /// A query with `INSERT` at its level: its `ON CONFLICT`.
    inserting: bool,
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
            simple: false,
            typing: false,
            grouping: false,
            binary: false,
            open_seen: false,
            binary_seen: false,
            row: false,
            bare: false,
            bare_read: false,
            negated: false,
            in_result: false,
            result_lit: false,
            subscript: false,
            row_unread: false,
            before: Before::Other,
            pred: Sum(0),
            key_cmp: false,
            cmps: 0,
            group_key_cmp: false,
            key_seen: false,
            from_seen: false,
            ordering: false,
            in_filter: false,
            operator: false,
            call: false,
            exists: false,
            inserting: false,
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
            Some(l) => l.against(r) || r.against(l),
            None => false,
        }
    }

    /// An equality starts: what was read is its left operand.
    fn equality(&mut self) -> bool {
        let l = self.side;
        let ended = self.end_operand();
        self.left = Some(l);
        self.compares();
        self.binary = true;
        ended
    }

    /// A comparison operator at this level.
    fn compares(&mut self) {
        self.cmps = self.cmps.saturating_add(1);
    }

    /// The current predicate ends (`AND`, `OR`, `,`, a CASE's branch, the
    /// frame's end): whether it was unreadable (see [`Frame::pred`]).
    fn end_predicate(&mut self) -> bool {
        // A predicate that is the key computed on with a constant, used as
        // a truth value or tested for NULL (`int4eq(tenant_id, 42)`,
        // `nullif(tenant_id, 42) IS NULL`: probe BB), matches tenants the
        // scan cannot read.
        // (Judged at the clause's own level: parentheses may be an
        // operand's, `(tenant_id + 0) > account_id`: probe BD.)
        let bare = !self.binary && self.pred.0 & (Sum::KEY | Sum::VALUE) == Sum::KEY | Sum::VALUE;
        self.open_seen |= !self.binary && self.pred.0 != 0;
        self.binary_seen |= self.binary;
        let ended = self.end_operand()
            || (self.key_cmp && self.cmps >= 2 && self.pred.0 & Sum::VALUE != 0)
            || (bare && self.kind == Kind::Query && self.place == Place::Filter);
        self.group_key_cmp |= self.key_cmp;
        self.pred = Sum(0);
        self.binary = false;
        self.negated = false;
        self.key_cmp = false;
        self.cmps = 0;
        ended
    }

    fn add(&mut self, bits: u8) {
        self.result_lit |= self.in_result && bits & Sum::LIT != 0;
        self.side.0 |= bits;
        self.all.0 |= bits;
        self.pred.0 |= bits;
    }

    fn tracks(&self) -> bool {
        matches!(self.place, Place::Filter | Place::Nested)
    }
}

/// The clause stack of one statement text (see the module docs). The
/// scanner calls [`Clauses::step`] with every significant token,
/// [`Clauses::key`] with every mention of the key, and
/// [`Clauses::finish`] at the end.
pub(super) struct Clauses {
    frames: [Frame; DEPTH],
    /// Everything else: set back whole for each text, while the frames
    /// above the first are written before they are read.
    s: State,
}

/// [`Clauses`] but its frames.
#[derive(Clone, Copy)]
struct State {
    depth: usize,
    /// A parenthesis or CASE was opened past [`DEPTH`]: from then to the
    /// statement's end, any key is unreadable.
    deep: bool,
    /// The word of the token being looked at, and of the one before.
    w: W,
    prev: W,
    /// The token before was `ROW` where a predicate starts: its `(` groups
    /// a row of a filter.
    row_start: bool,
    /// The last `OPERATOR(..)` was a comparison of `pg_catalog`'s (or
    /// unqualified): a key after its `)` is compared whole.
    operator_cmp: bool,
    /// The token before is a `.` after a `)`: a field name follows.
    close_dot: bool,
    /// The token before closed `OPERATOR(..)`, so one after it is a prefix
    /// operator (`42 OPERATOR(pg_catalog.=) OPERATOR(pg_catalog.@)
    /// tenant_id`: probe AO).
    closed_operator: bool,
    /// The token before was an identifier that names a column unless this
    /// one calls it, qualifies it or is its typed literal (`f(`, `t.`,
    /// `date '..'`): decided at this token, to look ahead no further.
    maybe_column: bool,
}

impl State {
    /// At the start of a text.
    const START: State = State {
        depth: 1,
        deep: false,
        w: W::No,
        prev: W::No,
        row_start: false,
        operator_cmp: false,
        closed_operator: false,
        close_dot: false,
        maybe_column: false,
    };
}

impl Clauses {
    pub(super) fn new() -> Clauses {
        Clauses {
            frames: [Frame::new(Kind::Query, Place::Other); DEPTH],
            s: State::START,
        }
    }

    /// As [`Clauses::new`] made it, for another text (frames above the
    /// first are written before they are read).
    pub(super) fn reset(&mut self) {
        self.frames[0] = Frame::new(Kind::Query, Place::Other);
        self.s = State::START;
    }

    fn top(&self) -> &Frame {
        &self.frames[self.s.depth - 1]
    }

    fn top_mut(&mut self) -> &mut Frame {
        &mut self.frames[self.s.depth - 1]
    }

    /// Whether the token being looked at, after `p1`, starts a predicate
    /// ([`predicate_start`], from the word already looked up).
    pub(super) fn starts_predicate(&self, p1: Option<Tok>) -> bool {
        match p1 {
            None => true,
            Some(t) => matches!(t.k, K::Semi | K::LParen) || self.s.prev.joins_predicates(),
        }
    }

    /// Where the token being looked at stands.
    pub(super) fn place(&self) -> Place {
        if self.s.deep {
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
            K::LParen | K::LBrack => self.open(sql, t, p1, next),
            K::RParen | K::RBrack => self.close(Kind::Paren, sql, next),
            K::Semi => self.finish(),
            K::Ident if self.s.w == W::Case => self.case(sql, next),
            K::Ident if self.s.w == W::End => self.close(Kind::Case, sql, next),
            _ => false,
        };
        (place, ended | closed)
    }

    /// [`Clauses::step`]'s first half: clause keywords and operands.
    #[inline]
    fn operands(&mut self, sql: &[u8], t: &Tok, p1: Option<Tok>, next: &Lexer<'_>) -> bool {
        self.s.prev = self.s.w;
        let after_operator = std::mem::take(&mut self.s.closed_operator);
        // After `.`, a word is a name (`t.case`, `t.end`, `t.left`); after
        // `::`, a type (`v::full`).
        let name = p1.is_some_and(|p| matches!(p.k, K::Dot | K::Cast));
        self.s.w = match t.k {
            K::Ident if !name => word(sql, t),
            K::Ident | K::QIdent => W::Name,
            _ => W::No,
        };
        // (An identifier before another is a word of a type's name:
        // `double precision '42'`, `character varying`: probe AO.)
        let was = std::mem::take(&mut self.s.maybe_column);
        let called = matches!(t.k, K::LParen | K::Dot | K::Str { .. });
        let type_word = matches!(t.k, K::Ident | K::QIdent) && self.s.w == W::Name;
        // (`extract(day FROM ..)`, `trim(both FROM ..)`: a field or a
        // word of the call, before its `FROM`; probe AT.)
        let field = self.s.w == W::From && self.top().kind == Kind::Paren;
        if was && !called && !type_word && !field && !self.s.deep {
            self.top_mut().add(Sum::COLUMN);
        }
        if self.s.deep {
            return false;
        }
        if t.k != K::LParen {
            self.s.row_start = self.s.w == W::Row && self.starts_predicate(p1);
        }
        if top_is_insert(sql, t, self.s.w, self.top()) {
            self.top_mut().inserting = true;
        }
        let top = *self.top();
        let call = || next.peek_sig().is_some_and(|n| n.k == K::LParen);
        match top.kind {
            Kind::Query => {
                if let Some(place) = self.clause_word(sql, top.place, p1, next) {
                    let ended = top.tracks() && self.top_mut().end_predicate();
                    // (A select list of a query in a filter computes.)
                    let place = match place {
                        Place::Other
                            if top.in_filter && matches!(self.s.w, W::Select | W::SetOp) =>
                        {
                            Place::Nested
                        }
                        p => p,
                    };
                    let mut f = Frame::new(Kind::Query, place);
                    f.key_seen = top.key_seen;
                    f.in_filter = top.in_filter;
                    f.inserting = top.inserting;
                    f.exists = top.exists;
                    // (A set operation starts another select list.)
                    f.from_seen = (top.from_seen || self.s.w == W::From) && self.s.w != W::SetOp;
                    f.ordering = matches!(self.s.w, W::Ends | W::Group);
                    *self.top_mut() = f;
                    return ended;
                }
            }
            // `((SELECT ..) UNION SELECT .. WHERE ..)`, `FROM (t JOIN u ON
            // ..)`: a parenthesis that holds a query or a join (probe AK:
            // their WHERE and ON were read as operands).
            Kind::Paren
                if self.s.w == W::SetOp
                    || (self.s.w == W::Join && top.place == Place::Other && !call()) =>
            {
                let ended = top.tracks() && self.top_mut().end_predicate();
                let in_filter = top.tracks() && self.s.w == W::SetOp;
                let mut f = Frame::new(
                    Kind::Query,
                    inner_query(if in_filter {
                        Place::Nested
                    } else {
                        Place::Other
                    }),
                );
                f.key_seen = top.key_seen;
                f.in_filter = in_filter;
                *self.top_mut() = f;
                return ended;
            }
            _ => {}
        }
        if !top.tracks() {
            return false;
        }
        let prev = self.s.prev;
        let w = self.s.w;
        // A field of a parenthesized value (`(ROW(42)).f1`: probe AS) is
        // no column.
        let field = std::mem::replace(
            &mut self.s.close_dot,
            t.k == K::Dot && p1.is_some_and(|p| p.k == K::RParen),
        );
        // `OPERATOR(..)` between operands compares (any schema's may be an
        // `=`); before one, it is a prefix operator (`42 =
        // OPERATOR(pg_catalog.@) tenant_id`: probe AM).
        let binary = w == W::Operator
            && !after_operator
            && p1.is_some_and(|p| match p.k {
                K::Ident => matches!(prev, W::Name | W::Bool | W::Expr | W::End),
                K::QIdent
                | K::Int
                | K::Num
                | K::Str { .. }
                | K::Dollar
                | K::Lit
                | K::Param(_)
                | K::RParen
                | K::RBrack => true,
                _ => false,
            });
        if w == W::Operator {
            self.s.operator_cmp = operator_cmp(sql, next);
        }
        let negates = w == W::Not && self.starts_predicate(p1);
        let f = self.top_mut();
        f.negated |= negates;
        match t.k {
            K::Comma => {
                f.row |= f.kind == Kind::Paren && (f.grouping || f.place == Place::Filter);
                return f.end_predicate();
            }
            // (`<>`: `NOT tenant_id <> 42` is `tenant_id = 42`.)
            K::Op if matches!(text(sql, t), b"=" | b"<>" | b"!=") => return f.equality(),
            // A type's name and modifiers end at an operator.
            K::Op => {
                f.typing = false;
                if is_comparison(text(sql, t)) {
                    f.compares();
                    f.binary = true;
                }
            }
            // `42::bigint`, `::double precision`, `::varchar(10)`: a type.
            K::Cast => f.typing = true,
            // (A JSON field's name or path, `meta ->> 't'`, is none of the
            // value: probe AY.)
            K::Int | K::Num | K::Str { .. } | K::Dollar | K::Lit | K::Param(_) => {
                // (Looked at per literal, not per token.)
                let json_field = p1.is_some_and(|p| {
                    p.k == K::Op && matches!(text(sql, &p), b"->" | b"->>" | b"#>" | b"#>>")
                });
                if !json_field {
                    f.add(Sum::VALUE | Sum::LIT);
                }
                return false;
            }
            _ => {}
        }
        match w {
            W::Then | W::Else => {
                f.in_result = f.kind == Kind::Case;
                f.end_predicate()
            }
            W::And | W::Or => f.end_predicate(),
            W::As => {
                let ended = f.end_operand();
                f.typing = true;
                ended
            }
            W::When => {
                f.in_result = false;
                let side = f.side;
                let ended = f.end_predicate();
                if f.kind == Kind::Case && f.simple {
                    // Each WHEN compares the CASE's operand.
                    f.left = Some(*f.operand.get_or_insert(side));
                }
                ended
            }
            W::In => f.equality(),
            W::Operator if binary => f.equality(),
            // `IS [NOT] DISTINCT FROM`, and `IS [NOT] TRUE/FALSE/UNKNOWN`
            // (`(tenant_id = 42) IS FALSE` matches every other tenant).
            W::Distinct if matches!(prev, W::Not | W::Compares) => f.equality(),
            W::Compares if is_truth_test(sql, next) => f.equality(),
            // `BETWEEN`, `LIKE` ..: comparisons (`IS` counts by what
            // follows it).
            W::Compares => {
                let is = text(sql, t).eq_ignore_ascii_case(b"IS");
                if !is || !distinct_test(sql, next) {
                    f.compares();
                }
                f.binary |= !is;
                false
            }
            // (A literal too, beside a call: `abs(41) + true::int`; so is
            // NULL, `(NULL IS NULL)::int`: probe AX.)
            W::Bool => {
                f.add(Sum::BOOL | Sum::LIT);
                false
            }
            // (Only tested, `NULL IS NULL`, is it a constant: `.. ELSE NULL
            // END`, `CAST(NULL AS bigint)` of a join, as Django and
            // SQLAlchemy write them, are none: probes AZ, BC.)
            W::Expr if text(sql, t).eq_ignore_ascii_case(b"NULL") => {
                if next
                    .peek_sig()
                    .is_some_and(|n| is_any_kw(sql, &n, &[b"IS", b"ISNULL", b"NOTNULL"]))
                {
                    f.add(Sum::LIT);
                }
                false
            }
            // A collation's name is no column.
            W::Expr if text(sql, t).eq_ignore_ascii_case(b"COLLATE") => {
                f.typing = true;
                false
            }
            // A type after `::` or `AS` is no column.
            W::Name
            | W::Count
            | W::Within
            | W::Group
            | W::Select
            | W::With
            | W::Values
            | W::Table
            | W::Join
                if !f.typing && !field =>
            {
                self.s.maybe_column = true;
                false
            }
            _ => false,
        }
    }

    /// The key, standing where [`Clauses::place`] says: `p1` the token
    /// before its (qualified) name, `next` the cursor after it. In a filter
    /// unless compared as a whole (`key = ..`, `.. = key`, `key IN ..`,
    /// `key IS ..`, an element of a row), or inside an operand unless the
    /// whole argument of `count(..)`, it is computed on.
    pub(super) fn key(&mut self, sql: &[u8], p1: Before, next: &Lexer<'_>, read: bool) {
        if self.s.deep {
            return;
        }
        let top = *self.top();
        let seen = !(top.kind == Kind::Query && top.from_seen) || top.ordering;
        let whole_content =
            || p1 == Before::Open && next.peek_sig().is_some_and(|n| n.k == K::RParen);
        if top.place == Place::Nested && top.grouping && top.all.0 == 0 && whole_content() {
            self.top_mut().bare = true;
            self.top_mut().bare_read = read;
            return;
        }
        let whole = whole_operand(sql, p1, next, self.s.operator_cmp);
        let computed = match top.place {
            Place::Filter => match whole {
                Whole::No => true,
                // The frame whose predicate compares it.
                Whole::Compared(up, _) | Whole::Row(up) => {
                    if let Some(i) = (self.s.depth - 1).checked_sub(up) {
                        self.frames[i].key_cmp = true;
                    }
                    // A comparison the scanner did not read, with a
                    // constant it could not read either, is refused.
                    // (On the operand of the frame that compares it:
                    // `(tenant_id) = (42 + 0)`, probe AS.)
                    if !read && matches!(whole, Whole::Compared(_, true)) {
                        if let Some(i) = (self.s.depth - 1).checked_sub(up) {
                            self.frames[i].add(Sum::WHOLE);
                        }
                    }
                    // So is a row the scanner did not read (more than 32
                    // elements, the key in nine parentheses, values first:
                    // probe AX), once its `)` shows it compared by an
                    // equality ([`Clauses::pop`]; `(tenant_id, id) <> (..)`
                    // matches every other tenant: probe BA).
                    if !read && matches!(whole, Whole::Row(_)) && self.s.depth >= up {
                        let row = self.s.depth - up;
                        self.frames[row].row_unread = true;
                    }
                    top.negated
                }
            },
            Place::Nested => {
                !(top.counted
                    && matches!(p1, Before::Open | Before::Distinct)
                    && next.peek_sig().is_some_and(|n| n.k == K::RParen))
            }
            _ => {
                // (An item of ORDER BY or GROUP BY that is the key alone
                // picks nothing, the outer row's or not: `ORDER BY
                // o.tenant_id, o.id DESC` of a composite key, probe AW.)
                let item = top.ordering
                    && matches!(p1, Before::By | Before::Comma)
                    && next.peek_sig().is_none_or(|n| {
                        ends_here(sql, &n)
                            || is_any_kw(sql, &n, &[b"ASC", b"DESC", b"NULLS", b"USING"])
                    });
                self.top_mut().key_seen |= seen && !item;
                return;
            }
        };
        // (Counted whole, in a subquery's select list too, it is no value
        // of the key: probe AR, `(SELECT count(m.tenant_id) ..) = 2`.)
        self.top_mut().key_seen |= seen && (computed || top.place == Place::Filter);
        self.top_mut()
            .add(Sum::COLUMN | if computed { Sum::KEY } else { 0 });
    }

    /// `CASE`: a frame until its `END`, unless it is a column's label
    /// (`SELECT 1 AS case FROM ..`, or bare: `SELECT 1 case FROM ..`;
    /// probe AK: the rest of the statement was read as inside a CASE).
    fn case(&mut self, sql: &[u8], next: &Lexer<'_>) -> bool {
        let label = self.s.prev == W::As
            || next.peek_sig().is_none_or(|n| {
                matches!(n.k, K::Comma | K::RParen | K::Semi)
                    || matches!(
                        word(sql, &n),
                        W::From | W::Where | W::Ends | W::SetOp | W::Having | W::Group | W::On
                    )
            });
        if label {
            return false;
        }
        if self.s.deep || self.s.depth == DEPTH {
            return self.go_deep();
        }
        let top = *self.top();
        let mut f = Frame::new(Kind::Case, inner(top.place));
        f.simple = !next.peek_sig().is_some_and(|n| word(sql, &n) == W::When);
        self.push(f);
        false
    }

    /// Closes every frame (at a `;` or the end of the text). Returns
    /// whether an equality ended unreadable.
    pub(super) fn finish(&mut self) -> bool {
        self.s.deep = false;
        if std::mem::take(&mut self.s.maybe_column) {
            self.top_mut().add(Sum::COLUMN);
        }
        let mut ended = false;
        while self.s.depth > 1 {
            ended |= self.pop(None);
        }
        ended | self.pop(None)
    }

    fn push(&mut self, f: Frame) {
        self.frames[self.s.depth] = f;
        self.s.depth += 1;
    }

    /// Past [`DEPTH`]: nothing deeper is followed. What the deepest frame
    /// holds from here on is taken for a constant the scan does not read
    /// (`tenant_id = ((( .. 33 levels .. 42 .. )))`: probe AT, read past
    /// where 9 to 31 levels were refused), and any later key is
    /// unreadable ([`Place::Deep`]).
    ///
    /// Returns whether a predicate still open compares the key: it may be
    /// with what is deeper or after it (`tenant_id = abs((( .. 0 ..))) +
    /// 42`: probe AV, the `+ 42` after the deep call was never added to
    /// the operand), so it is unreadable.
    fn go_deep(&mut self) -> bool {
        let first = !self.s.deep;
        if first && self.top().tracks() {
            self.top_mut().add(Sum::VALUE | Sum::LIT);
        }
        self.s.deep = true;
        first
            && self.frames[..self.s.depth]
                .iter()
                .any(|f| f.key_cmp || f.pred.0 & (Sum::KEY | Sum::WHOLE) != 0)
    }

    /// `(` or `[`: a subquery, a grouping of predicates, or an operand.
    fn open(&mut self, sql: &[u8], t: &Tok, p1: Option<Tok>, next: &Lexer<'_>) -> bool {
        if self.s.deep || self.s.depth == DEPTH {
            return self.go_deep();
        }
        let top = *self.top();
        let query =
            t.k == K::LParen && next.peek_sig().is_some_and(|n| starts_query(sql, &n, next));
        let f = if query {
            // A subquery that is an operand of a filter: its select list
            // computes what the filter compares (`WHERE (SELECT tenant_id =
            // 42)`, `42 IN (SELECT tenant_id ..)`: probe AO).
            // (`EXISTS (SELECT ..)`'s select list is never compared: probe
            // AR, SQLAlchemy's `.exists()` lists every column.)
            let exists = p1.is_some_and(|p| is_kw(sql, &p, b"EXISTS"));
            let in_filter = top.tracks() && !exists;
            let mut f = Frame::new(
                Kind::Query,
                if in_filter {
                    Place::Nested
                } else {
                    Place::Other
                },
            );
            f.in_filter = in_filter;
            f.exists = exists;
            f
        } else if top.place == Place::Filter
            && t.k == K::LParen
            && (self.starts_predicate(p1) || std::mem::take(&mut self.s.row_start))
        {
            Frame::new(Kind::Paren, Place::Filter)
        } else {
            let mut f = Frame::new(Kind::Paren, inner(top.place));
            f.counted = t.k == K::LParen && self.s.prev == W::Count;
            f.operator = t.k == K::LParen && self.s.prev == W::Operator;
            f.call = t.k == K::LParen && matches!(self.s.prev, W::Name | W::Count | W::Join);
            f.grouping = t.k == K::LParen
                && p1.is_none_or(|p| match p.k {
                    K::Op | K::LParen | K::Comma | K::Semi => true,
                    K::Ident => matches!(
                        self.s.prev,
                        W::And
                            | W::Or
                            | W::Not
                            | W::In
                            | W::When
                            | W::Then
                            | W::Else
                            | W::Where
                            | W::Having
                            | W::On
                            | W::Compares
                            | W::Distinct
                            | W::Row
                    ),
                    _ => false,
                });
            f.before = Before::of(sql, p1);
            f.subscript = t.k == K::LBrack
                && p1.is_some_and(|p| {
                    matches!(p.k, K::RParen | K::RBrack | K::QIdent)
                        || (p.k == K::Ident && self.s.prev == W::Name)
                });
            f
        };
        self.push(f);
        false
    }

    /// `)`/`]` (a paren or subquery) or `END` (a CASE): closes frames down
    /// to the innermost of that kind in the current statement or subquery,
    /// if any. `next`: the cursor after it.
    fn close(&mut self, kind: Kind, sql: &[u8], next: &Lexer<'_>) -> bool {
        if self.s.deep {
            // Once past the frames followed, the statement stays there:
            // where its parentheses, CASEs and `END` labels close is not
            // known (probe AM: counting them apart was walked out of).
            return false;
        }
        let Some(at) = (1..self.s.depth)
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
        while self.s.depth > at + 1 {
            ended |= self.pop(None);
        }
        ended | self.pop(Some((sql, next)))
    }

    /// Closes the top frame: ends its operands, and gives what it held to
    /// the operand around it (a subquery gives a value that varies by row).
    /// The statement's own frame is reset instead. `after`: the text and
    /// the cursor after the frame's `)`, when it closes there.
    fn pop(&mut self, after: Option<(&[u8], &Lexer<'_>)>) -> bool {
        let i = self.s.depth - 1;
        let mut f = self.frames[i];
        let ended = f.tracks() && f.end_predicate();
        if i == 0 {
            self.frames[0] = Frame::new(Kind::Query, Place::Other);
            return ended;
        }
        self.s.depth -= 1;
        self.s.closed_operator = f.operator;
        if f.bare {
            // The key in parentheses, where they stand.
            match after {
                Some((sql, next)) => self.key(sql, f.before, next, f.bare_read),
                None => self.top_mut().add(Sum::COLUMN | Sum::KEY),
            }
        }
        let outer = self.top_mut();
        // (A grouping or CASE whose predicates all compared is no truth
        // value of the key: `(coalesce(a.tenant_id, 0) = coalesce(b.tenant_id,
        // 0))`; its values still go to the predicate around it.)
        outer.binary |= f.kind != Kind::Query && f.binary_seen && !f.open_seen;
        // (Not an `EXISTS (..)`'s, which compares no value; a key in a
        // query's FROM list, a derived table, LATERAL or a function there,
        // may be the outer row's too: probe AQ. One in its WHERE is no
        // value of the query.)
        let correlated = f.key_seen && !f.exists;
        outer.key_seen |=
            correlated && !(outer.kind == Kind::Query && outer.place == Place::Filter);
        if outer.tracks() {
            // (`OPERATOR(..)`'s name is no operand.)
            // A subquery is a value the scan does not read, as a call's
            // result: alone it names no tenant, a literal beside it does
            // not (`= (SELECT 0) + 42`: probe AT, read past).
            outer.add(if f.kind == Kind::Query {
                if correlated {
                    Sum::COLUMN | Sum::KEY
                } else {
                    Sum::CALL
                }
            } else if f.operator {
                0
            } else {
                let unvalued = if f.subscript {
                    Sum::LIT | Sum::VALUE
                } else if f.call || (f.kind == Kind::Case && !f.result_lit) {
                    Sum::LIT
                } else {
                    0
                };
                f.all.0 & !(Sum::ROW | Sum::WHOLE | unvalued)
                    | if f.row { Sum::ROW } else { 0 }
                    | if f.call { Sum::CALL } else { 0 }
            });
        }
        // A row with the key the scanner did not read: its comparison is
        // judged whole (see [`Clauses::key`]), unless an order or an
        // inequality compares it, before it or right after its `)`
        // (`(tenant_id, id) <> ($1, $2)`, keyset `> ($1, $2)`: probe BA);
        // cast or more done to it, it is the key computed on
        // (`(tenant_id, id)::text = '(42,1)'`: probe BC).
        if f.row_unread
            && outer.tracks()
            && f.before != Before::Cmp
            && !after.is_some_and(|(sql, next)| inequality_next(sql, next))
        {
            outer.add(Sum::WHOLE);
            // (Cast or an operator on it: the key computed on, tested by
            // `~` too: probe BD.)
            let computed = after.is_some_and(|(sql, next)| {
                next.peek_sig().is_some_and(|n| {
                    n.k == K::Cast || (n.k == K::Op && !is_comparison(text(sql, &n)))
                })
            });
            if computed {
                outer.add(Sum::KEY);
            }
        }
        // A grouping of a filter that compared the key whole is, to the
        // comparison around it, a comparison of the key; followed by
        // anything but the predicate's end (`(tenant_id = 42) NOTNULL`,
        // `::text ~ '^f'`, `::int - 1`: probe AP), its result is computed
        // on, as if compared again.
        if f.kind == Kind::Paren && f.place == Place::Filter && f.group_key_cmp && outer.tracks() {
            outer.key_cmp = true;
            outer.compares();
            if let Some((sql, next)) = after {
                let ends = next.peek_sig().is_none_or(|n| ends_here(sql, &n));
                if !ends {
                    outer.compares();
                }
            }
        }
        ended
    }

    /// The place a clause keyword at the current token moves its statement
    /// to, if it is one (at the statement's or a subquery's own level).
    fn clause_word(
        &self,
        sql: &[u8],
        now: Place,
        p1: Option<Tok>,
        next: &Lexer<'_>,
    ) -> Option<Place> {
        // A column's label (`SELECT 1 AS where`), a type (`v::full`).
        if self.s.prev == W::As || p1.is_some_and(|p| p.k == K::Cast) {
            return None;
        }
        let call = || next.peek_sig().is_some_and(|n| n.k == K::LParen);
        match self.s.w {
            W::Where | W::Having => Some(Place::Filter),
            // `DISTINCT ON (..)` is no join filter (probe AK: its
            // comparison picked the shard); nor is `ON CONFLICT (..)`.
            W::On if self.s.prev == W::Distinct => None,
            W::On => Some(if self.top().inserting && on_conflict(sql, next) {
                Place::Other
            } else {
                Place::Filter
            }),
            W::When => Some(Place::MergeWhen),
            W::And if now == Place::MergeWhen => Some(Place::Filter),
            // `COLLATION FOR (..)` is a function (probe AK: it ended the
            // WHERE).
            W::Ends
                if p1.is_some_and(|p| {
                    p.k == K::Ident && text(sql, &p).eq_ignore_ascii_case(b"COLLATION")
                }) =>
            {
                None
            }
            W::Ends | W::SetOp | W::Select | W::Then => Some(Place::Other),
            // `inner(v)`, `full(v)`: functions of these names.
            W::Join if !call() => Some(Place::Other),
            W::From if self.s.prev != W::Distinct => Some(Place::Other),
            W::Group if self.s.prev != W::Within => Some(Place::Other),
            _ => None,
        }
    }
}

/// Whether `t` is `INSERT` at the level of query frame `f`.
fn top_is_insert(sql: &[u8], t: &Tok, w: W, f: &Frame) -> bool {
    f.kind == Kind::Query && w == W::Name && text(sql, t).eq_ignore_ascii_case(b"INSERT")
}

/// Whether `ON` (before the cursor `next`) is `ON CONFLICT` (followed by
/// `(`, `ON CONSTRAINT` or `DO`: probe AM, a join's `ON conflict = ..`
/// compares a column) or `ON CONSTRAINT`.
fn on_conflict(sql: &[u8], next: &Lexer<'_>) -> bool {
    let mut l = *next;
    let Some(n) = l.next_sig() else {
        return false;
    };
    if is_kw(sql, &n, b"CONSTRAINT") {
        return true;
    }
    is_kw(sql, &n, b"CONFLICT")
        && l.next_sig()
            .is_some_and(|m| m.k == K::LParen || is_kw(sql, &m, b"ON") || is_kw(sql, &m, b"DO"))
}

/// Whether `IS` (before the cursor `next`) is `IS [NOT] DISTINCT FROM`
/// (counted as a comparison at its `DISTINCT`).
fn distinct_test(sql: &[u8], next: &Lexer<'_>) -> bool {
    let mut l = *next;
    let mut n = l.next_sig();
    if n.is_some_and(|t| word(sql, &t) == W::Not) {
        n = l.next_sig();
    }
    n.is_some_and(|t| word(sql, &t) == W::Distinct)
}

/// Whether `OPERATOR` (before the cursor `next`) names a comparison
/// operator of `pg_catalog`'s or an unqualified one: `OPERATOR(=)`,
/// `OPERATOR(pg_catalog.<>)`.
fn operator_cmp(sql: &[u8], next: &Lexer<'_>) -> bool {
    let mut l = *next;
    if !l.next_sig().is_some_and(|t| t.k == K::LParen) {
        return false;
    }
    let mut t = l.next_sig();
    if t.is_some_and(|s| is_kw(sql, &s, b"pg_catalog")) {
        if !l.next_sig().is_some_and(|d| d.k == K::Dot) {
            return false;
        }
        t = l.next_sig();
    }
    t.is_some_and(|o| o.k == K::Op && is_comparison(text(sql, &o)))
        && l.next_sig().is_some_and(|c| c.k == K::RParen)
}

/// Whether `IS` (before the cursor `next`) tests a truth value: `IS [NOT]
/// TRUE`, `FALSE` or `UNKNOWN`, an equality with a constant.
fn is_truth_test(sql: &[u8], next: &Lexer<'_>) -> bool {
    let mut l = *next;
    let mut n = l.next_sig();
    if n.is_some_and(|t| word(sql, &t) == W::Not) {
        n = l.next_sig();
    }
    n.is_some_and(|t| {
        word(sql, &t) == W::Bool
            || (t.k == K::Ident && text(sql, &t).eq_ignore_ascii_case(b"UNKNOWN"))
    })
}

/// Whether `n`, the token after a `(` (with `next` at it), starts a query:
/// `SELECT`, `WITH`, `TABLE`, `VALUES (` (`(values = 1 ..)` compares a
/// column: probe AO), or a data-modifying statement.
fn starts_query(sql: &[u8], n: &Tok, next: &Lexer<'_>) -> bool {
    match word(sql, n) {
        W::Select | W::With | W::Table => true,
        W::Values => {
            let mut l = *next;
            l.next_sig();
            l.next_sig().is_some_and(|m| m.k == K::LParen)
        }
        _ => data_modifying(sql, n, next),
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
        || (w.eq_ignore_ascii_case(b"UPDATE") && update_target(sql, m, l))
}

/// Whether `m` (then the cursor `l`) is `[ONLY] [(]name[.name][)] [*]
/// [[AS] alias] SET`, what follows `UPDATE` (probes AM and AO: a table
/// named like a keyword, `ONLY (t)`; `(update IS NULL AND set = 1)`
/// compares columns).
pub(super) fn update_target(sql: &[u8], m: Tok, l: Lexer<'_>) -> bool {
    update_parts(sql, m, l).is_some()
}

/// What [`update_target`] reads: the target's name (its last part), its
/// alias, and the `SET` that starts the SET list.
#[derive(Clone, Copy)]
pub(super) struct UpdateParts {
    pub(super) name: Tok,
    pub(super) alias: Option<Tok>,
    pub(super) set: Tok,
}

/// [`update_target`], with its parts. The word after `AS` is the alias
/// whatever it spells (`UPDATE t AS set SET ..`: probe CX F1, taken for
/// the SET list, which hid the real one).
pub(super) fn update_parts(sql: &[u8], m: Tok, mut l: Lexer<'_>) -> Option<UpdateParts> {
    let is = |t: &Tok, k: &[u8]| t.k == K::Ident && text(sql, t).eq_ignore_ascii_case(k);
    let mut t = Some(m);
    if t.is_some_and(|t| is(&t, b"ONLY")) {
        t = l.next_sig();
    }
    let paren = t.is_some_and(|t| t.k == K::LParen);
    if paren {
        t = l.next_sig();
    }
    let mut name = t.filter(is_identlike)?;
    t = l.next_sig();
    // (`schema.table`, `db.schema.table`: probe AQ.)
    for _ in 0..2 {
        if t.is_some_and(|t| t.k == K::Dot) {
            name = l.next_sig().filter(is_identlike)?;
            t = l.next_sig();
        }
    }
    if paren {
        if !t.is_some_and(|t| t.k == K::RParen) {
            return None;
        }
        t = l.next_sig();
    }
    if t.is_some_and(|t| t.k == K::Op && text(sql, &t) == b"*") {
        t = l.next_sig();
    }
    let mut alias = None;
    if t.is_some_and(|t| is(&t, b"AS")) {
        alias = l.next_sig().filter(is_identlike);
        alias?;
        t = l.next_sig();
    } else if t.is_some_and(|t| is_identlike(&t) && !is(&t, b"SET")) {
        alias = t;
        t = l.next_sig();
    }
    let set = t.filter(|t| is(t, b"SET"))?;
    Some(UpdateParts { name, alias, set })
}

/// The place of a subquery's select list: in a filter, nested (it
/// computes what the filter compares); elsewhere, other.
fn inner_query(p: Place) -> Place {
    match p {
        Place::Filter | Place::Nested => Place::Nested,
        _ => Place::Other,
    }
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
    matches!(Before::of(sql, p1), Before::Start | Before::Open)
}

/// What stands before the key (or before the `(` of a grouping holding
/// only the key), as [`whole_operand`] and `count(..)` need it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Before {
    /// Where a predicate starts ([`predicate_start`]), but `(`.
    Start,
    /// `(`: a predicate starts, or a call's first argument.
    Open,
    Comma,
    /// `=`.
    Eq,
    /// Another comparison operator, or `FROM` of `IS DISTINCT FROM`.
    Cmp,
    /// `)`: of `OPERATOR(..)`.
    Close,
    /// `DISTINCT`, or another expression word (`count(ALL x)`).
    Distinct,
    /// `BY` (of `ORDER BY`, `GROUP BY`, `PARTITION BY`).
    By,
    Other,
}

impl Before {
    /// What `p1` is.
    pub(super) fn of(sql: &[u8], p1: Option<Tok>) -> Before {
        let Some(p) = p1 else {
            return Before::Start;
        };
        match p.k {
            K::LParen => Before::Open,
            K::Semi => Before::Start,
            K::Comma => Before::Comma,
            K::RParen => Before::Close,
            K::Op if text(sql, &p) == b"=" => Before::Eq,
            K::Op if is_comparison(text(sql, &p)) => Before::Cmp,
            K::Ident => match word(sql, &p) {
                w if w.joins_predicates() => Before::Start,
                // (`IS [NOT] DISTINCT FROM key`: an equality, or its
                // negation.)
                W::From => Before::Eq,
                W::Distinct | W::Expr => Before::Distinct,
                W::Name if text(sql, &p).eq_ignore_ascii_case(b"BY") => Before::By,
                _ => Before::Other,
            },
            _ => Before::Other,
        }
    }
}

/// How the key stands in a filter ([`whole_operand`]).
enum Whole {
    /// Computed on.
    No,
    /// A whole operand of a comparison made that many frames up, and
    /// whether it is an equality (`=`, `IN`, `OPERATOR(..)`): in its
    /// own parentheses (`tenant_id <> 42`, `.. = tenant_id`: 0), or their
    /// whole content (`(tenant_id) = 42`: 1), or an element of a row
    /// (`(tenant_id, id) = ..`: the row's, 1).
    Compared(usize, bool),
    /// An element of a row compared that many frames up (the scanner's
    /// `row_match` reads it).
    Row(usize),
}

/// How the key, between `p1` and the cursor `next`, stands in a filter:
/// `key <op> ..`, `key IN/IS/BETWEEN/LIKE ..` at the start of a predicate,
/// `.. <op> key` at a predicate's end, or a whole element of a row, in
/// parentheses or not; or computed on.
fn whole_operand(sql: &[u8], p1: Before, next: &Lexer<'_>, operator_cmp: bool) -> Whole {
    let mut l = *next;
    let mut n = l.next_sig();
    let mut closed = 0;
    while n.is_some_and(|t| t.k == K::RParen) {
        n = l.next_sig();
        closed += 1;
    }
    let comma = p1 == Before::Comma;
    if matches!(p1, Before::Start | Before::Open) || comma {
        match n {
            Some(t) if t.k == K::Comma => return Whole::Row(1),
            _ if comma && closed > 0 => return Whole::Row(closed),
            Some(t)
                if match t.k {
                    K::Op => is_comparison(text(sql, &t)),
                    K::Ident => {
                        matches!(word(sql, &t), W::In | W::Compares | W::Not | W::Operator)
                    }
                    _ => false,
                } =>
            {
                let eq = (t.k == K::Op && text(sql, &t) == b"=")
                    || matches!(word(sql, &t), W::In | W::Operator)
                    || (word(sql, &t) == W::Compares && {
                        // `IS NOT DISTINCT FROM` (probe AS).
                        let mut l2 = l;
                        l2.next_sig().is_some_and(|d| word(sql, &d) == W::Not)
                            && l2.next_sig().is_some_and(|d| word(sql, &d) == W::Distinct)
                    });
                return Whole::Compared(closed, eq);
            }
            _ => {}
        }
    }
    // (`.. OPERATOR(pg_catalog.=) key`, not `@`, not another schema's.)
    let after_op = matches!(p1, Before::Cmp | Before::Eq) || (p1 == Before::Close && operator_cmp);
    // (`.. = key IS TRUE`: the comparison compared again, see
    // [`Frame::pred`].)
    let ends = closed > 0
        || match n {
            None => true,
            Some(t) => ends_here(sql, &t) || word(sql, &t) == W::Compares,
        };
    if after_op && ends {
        Whole::Compared(0, p1 != Before::Cmp)
    } else {
        Whole::No
    }
}

fn is_comparison(op: &[u8]) -> bool {
    matches!(op, b"=" | b"<>" | b"!=" | b"<" | b">" | b"<=" | b">=")
}

/// Whether an order or an inequality follows the cursor: `<>`, `!=`, `<`,
/// `>`, `<=`, `>=`, `NOT IN`, `IS DISTINCT FROM`.
fn inequality_next(sql: &[u8], next: &Lexer<'_>) -> bool {
    let mut l = *next;
    let Some(t) = l.next_sig() else {
        return false;
    };
    match t.k {
        K::Op => matches!(text(sql, &t), b"<>" | b"!=" | b"<" | b">" | b"<=" | b">="),
        K::Ident => match word(sql, &t) {
            W::Not => l.next_sig().is_some_and(|n| word(sql, &n) == W::In),
            W::Compares if text(sql, &t).eq_ignore_ascii_case(b"IS") => {
                l.next_sig().is_some_and(|n| word(sql, &n) == W::Distinct)
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether `n` ends an operand or an item: `;`, `)`, `,` or one of
/// [`FOLLOWERS`].
fn ends_here(sql: &[u8], n: &Tok) -> bool {
    matches!(n.k, K::Semi | K::RParen | K::Comma) || is_any_kw(sql, n, FOLLOWERS)
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
            ("Intersect", W::SetOp),
            ("symmetric", W::Expr),
            ("count", W::Count),
            ("left", W::Join),
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
