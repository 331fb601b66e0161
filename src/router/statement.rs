//! What a statement text is: its statements, the form of each, every tenant it
//! names, and the server-side state it may leave behind.
//!
//! [`analyze`] is the one classification of a text (a simple Query, or a Parse's
//! query string). Routing ([`super::decide`]) and pooling (what to reset or read
//! back before a server goes to another client) both work from its [`Facts`], so a
//! text is lexed once per unit of work and no decision rests on a first keyword.
//!
//! "Tenant-free" is an allow-list of statement forms ([`Kind::tenant_free`]):
//! settings (`SET`, `RESET`, `SHOW`), transaction control, `DISCARD`,
//! `DEALLOCATE`, `LISTEN`/`UNLISTEN`, the empty statement. Everything else,
//! including `(SELECT ...)`, `WITH ...` and statements we do not recognise, needs
//! a tenant. A multi-statement text is tenant-free only if every statement is.

use super::bind::Conv;
pub use super::catalog::ParseInput;
use super::copy::CopyIn;
use super::key::TenantKey;
use super::lexer::*;
use super::scanner::{self, Source, TenantToken};

/// Most tenant mentions one text may carry. Each one is routed; past this the
/// text is refused rather than half-checked.
pub const MAX_MENTIONS: usize = 10_000;

/// Prefix of the statement names shardbouncer uses on servers. Clients may not
/// create, run or drop statements with such names by SQL.
pub const RESERVED_PREFIX: &str = "sb_";

/// The form of one statement, as far as routing and pooling care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Only comments, whitespace or nothing.
    #[default]
    Empty,
    /// `BEGIN` / `START TRANSACTION` with optional modes.
    Begin,
    /// `COMMIT` / `END` (`chain`: `AND CHAIN`).
    Commit {
        /// `AND CHAIN` keeps a transaction open.
        chain: bool,
    },
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO`).
    Rollback {
        /// `AND CHAIN` keeps a transaction open.
        chain: bool,
    },
    /// Statements whose effect ends with the transaction: `SAVEPOINT`,
    /// `RELEASE`, `ROLLBACK TO`, `SET LOCAL x`, `SET TRANSACTION`,
    /// `SET CONSTRAINTS`. The value is the CommandComplete tag.
    TxScoped(&'static str),
    /// `SET [SESSION] x ...`, `SET ROLE`, `SET SESSION AUTHORIZATION`, ...
    Set,
    /// `RESET x`.
    Reset,
    /// `RESET ALL`.
    ResetAll,
    /// `SHOW x`.
    Show,
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`.
    Discard {
        /// `DISCARD ALL`.
        all: bool,
    },
    /// `DEALLOCATE [PREPARE] name | ALL`.
    Deallocate,
    /// `LISTEN channel`.
    Listen,
    /// `UNLISTEN channel | *`.
    Unlisten,
    /// `SET [SESSION | LOCAL] <key> = value`: the session's tenant.
    SetTenant {
        /// `SET LOCAL`: until the transaction ends.
        local: bool,
    },
    /// `RESET <key>` or `SET <key> TO DEFAULT`.
    ResetTenant,
    /// A statement that only clears session state shardbouncer clears anyway
    /// when a server goes back to the pool, as a driver's pool sends on
    /// release (asyncpg): `SELECT pg_advisory_unlock_all()`, `CLOSE ALL`, and
    /// asyncpg's `DO` block that runs `UNLISTEN *` (the exact text). It
    /// touches no tenant data.
    Cleanup,
    /// A `SELECT` with no FROM of the server's settings and facts only
    /// ([`info_select`]): `SELECT set_config('TimeZone', 'UTC', false)`
    /// (Django's connection setup), `select pg_catalog.version()`, `select
    /// current_schema()` (SQLAlchemy's), `SELECT current_setting('jit')`
    /// (asyncpg's). It touches no tenant data; what it sets follows the
    /// client as a `SET` does.
    Info,
    /// A `SELECT` (or `WITH .. SELECT`) of the system catalogs only, with
    /// built-in functions and types ([`super::catalog`]): asyncpg's type
    /// introspection, PgJDBC's `DatabaseMetaData`, psql's `\d`. Every
    /// shard has the same schema, and it reads no tenant's rows. One that
    /// names a relation, function, type or operator without its schema
    /// ([`Facts::catalog_by_name`]) is tenant-free only while the
    /// session's types and `search_path` are trusted.
    Catalog,
    /// Anything else: it may touch tenant data.
    Other,
}

impl Kind {
    /// Whether the statement touches no tenant data and may run on any shard.
    /// This is the allow-list; [`Kind::Other`] is never tenant-free.
    pub fn tenant_free(self) -> bool {
        !matches!(
            self,
            Kind::Other | Kind::SetTenant { .. } | Kind::ResetTenant
        )
    }

    /// For a statement that can wait with a locally answered BEGIN and be
    /// replayed inside the transaction once its shard is known: its
    /// CommandComplete tag (`None` for empty statements, which answer nothing).
    pub fn held_tag(self) -> Option<Option<&'static str>> {
        match self {
            Kind::Empty => Some(None),
            Kind::TxScoped(tag) => Some(Some(tag)),
            Kind::Set => Some(Some("SET")),
            Kind::Reset | Kind::ResetAll => Some(Some("RESET")),
            _ => None,
        }
    }
}

/// Server-side state a text may create or change. Each bit says what has to
/// follow the client or be reset before another client gets the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects(u16);

impl Effects {
    /// Session settings (GUCs, role, session authorization): read back after the
    /// transaction so they follow the client.
    pub const SETTINGS: Effects = Effects(1);
    /// Temporary objects: `DISCARD TEMP` on release.
    pub const TEMP: Effects = Effects(2);
    /// Session advisory locks: `pg_advisory_unlock_all()` on release.
    pub const ADVISORY: Effects = Effects(4);
    /// LISTEN registrations: `UNLISTEN *` on release.
    pub const LISTEN: Effects = Effects(8);
    /// Cursors (WITH HOLD ones outlive the transaction): `CLOSE ALL` on release.
    pub const CURSOR: Effects = Effects(16);
    /// SQL-level prepared statements (`PREPARE`, `DEALLOCATE`, `DISCARD ALL`):
    /// the server's statement namespace can no longer be trusted.
    pub const PREPARED: Effects = Effects(32);
    /// Server-side code (`DO`, `CALL`, a FunctionCall) that may do any of the
    /// above through dynamic SQL.
    pub const DYNAMIC: Effects = Effects(64);
    /// Sequence state (`nextval`, `setval`: what `currval`/`lastval` reveal):
    /// `DISCARD SEQUENCES` on release.
    pub const SEQUENCES: Effects = Effects(128);
    /// The random seed (`setseed`): reseeded on release, or the next client's
    /// `random()` is predictable.
    pub const SEED: Effects = Effects(256);
    /// Settings whose names cannot be known from the text (`set_config` with a
    /// computed or bound name): Postgres lists no custom placeholder setting in
    /// `pg_settings`, so they cannot be read back. What can be read back
    /// follows the client, then `RESET ALL` clears the rest on release.
    pub const UNNAMED_SETTINGS: Effects = Effects(512);
    /// Everything (what dynamic code may do).
    pub const ALL: Effects = Effects(1023);
    /// `SET LOCAL` of a setting: gone at the transaction's end, so nothing to
    /// reset or read back, but until then it may change how the client's text
    /// is lexed (`standard_conforming_strings`, `client_encoding`). Outside
    /// [`Effects::ALL`]; [`Effects::resets`] drops it.
    pub const LOCAL_SETTINGS: Effects = Effects(1024);
    /// A setting change that may be `client_encoding` or
    /// `standard_conforming_strings`, the two that change how the client's
    /// text is lexed. Only the analysis sets it, and only when it cannot rule
    /// them out (see [`Effects::may_change_lexing`]). Outside [`Effects::ALL`].
    pub const LEXING: Effects = Effects(2048);
    /// `ALTER` or `DROP` of something: what names and types mean may change
    /// for the rest of the transaction, and again when it rolls back.
    /// Nothing to reset, but a statement parsed meanwhile must not become the
    /// copy other clients run (probe T: a column added, a statement parsed,
    /// the transaction rolled back; the next client's Bind of the same text
    /// got 0A000). `CREATE` is [`Effects::TEMP`] already. Outside
    /// [`Effects::ALL`]; [`Effects::resets`] drops it.
    pub const CATALOG: Effects = Effects(4096);
    /// Every setting went back to its reset value (`RESET ALL`, `DISCARD
    /// ALL`): for a client, the value it gave at connect, which a pooled
    /// server does not have as its own. A setting read back at the server's
    /// default after such a statement is given the connect value again;
    /// after anything else it stays as set (`SET statement_timeout = 0`:
    /// probe FF). A `RESET` of one setting is not one: the read back cannot
    /// tell which setting it was from one set to the server's default
    /// earlier (probe HH). Outside [`Effects::ALL`]; [`Effects::resets`]
    /// drops it.
    pub const RESETS: Effects = Effects(8192);
    /// `search_path` may now name `pg_catalog` after another schema, where a
    /// type named like a built-in one would be found first (see
    /// [`super::search_path`]): a `SET` or `set_config` of such a path, or
    /// of one the text does not spell out, or an `UPDATE pg_settings`.
    /// Nothing to reset (the path is a setting, read back as any other).
    /// Outside [`Effects::ALL`]; [`Effects::resets`] drops it.
    pub const TYPE_PATH: Effects = Effects(16384);
    /// State no statement resets: a trusted extension's C variable
    /// (`isn_weak(true)` turns off isn's check digits for the session), or
    /// a procedural language's own session state (PL/Perl's `%_SHARED`,
    /// PL/Tcl's globals). The server is closed on release, never pooled.
    /// Outside [`Effects::ALL`]; [`Effects::resets`] drops it.
    pub const UNRESETTABLE: Effects = Effects(32768);

    /// No effect.
    pub const fn none() -> Effects {
        Effects(0)
    }

    /// Whether any bit of `other` is set.
    pub fn any(self, other: Effects) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether nothing is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Add `other`.
    pub fn add(&mut self, other: Effects) {
        self.0 |= other.0;
    }

    /// Union.
    pub fn union(self, other: Effects) -> Effects {
        Effects(self.0 | other.0)
    }

    /// Without the bits of `other`.
    pub fn without(self, other: Effects) -> Effects {
        Effects(self.0 & !other.0)
    }

    /// Whether these effects may have created or changed a type or domain
    /// (a `CREATE` of anything, `ALTER`, `DROP`, dynamic code): one in the
    /// session's temporary schema comes before `pg_catalog`'s types of that
    /// name, whatever `search_path` says. Or whether they may have put
    /// another schema ahead of `pg_catalog` in `search_path`
    /// ([`Effects::TYPE_PATH`], a setting of unknown name), where one made
    /// earlier would come first.
    pub fn may_create_types(self) -> bool {
        self.any(
            Effects::TEMP
                .union(Effects::CATALOG)
                .union(Effects::DYNAMIC)
                .union(Effects::TYPE_PATH)
                .union(Effects::UNNAMED_SETTINGS),
        )
    }

    /// Whether these effects may have changed session settings: they are
    /// read back on release (they follow the client, and they are the
    /// server's own record of what the next client's sync must reset), and
    /// work lexed under the settings waits for them.
    pub fn may_change_settings(self) -> bool {
        self.any(
            Effects::SETTINGS
                .union(Effects::DYNAMIC)
                .union(Effects::UNNAMED_SETTINGS),
        )
    }

    /// Whether these effects may change how the client's next text is lexed
    /// (`standard_conforming_strings`, `client_encoding`), for the rest of a
    /// unit and for work pipelined behind it: a setting change the analysis
    /// could not tell apart from those two ([`Effects::LEXING`], `SET LOCAL`
    /// included), dynamic code, or a setting whose name is not in the text.
    /// A `SET search_path` does not count: its name is plain in the text.
    pub fn may_change_lexing(self) -> bool {
        self.any(
            Effects::LEXING
                .union(Effects::DYNAMIC)
                .union(Effects::UNNAMED_SETTINGS),
        )
    }

    /// What must be reset when a server carrying these effects is released
    /// (dynamic code may have done anything; a setting of unknown name may
    /// be `seed`, which `RESET ALL` leaves alone).
    pub fn resets(self) -> Effects {
        let s = self.without(
            Effects::LOCAL_SETTINGS
                .union(Effects::LEXING)
                .union(Effects::CATALOG)
                .union(Effects::RESETS)
                .union(Effects::TYPE_PATH)
                .union(Effects::UNRESETTABLE),
        );
        if s.any(Effects::DYNAMIC) {
            Effects::ALL
        } else if s.any(Effects::UNNAMED_SETTINGS) {
            s.union(Effects::SEED)
        } else {
            s
        }
    }
}

/// Why a text is refused before it reaches any server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// `PREPARE`, `EXECUTE` or `DEALLOCATE` of a name in shardbouncer's
    /// namespace ([`RESERVED_PREFIX`]).
    ReservedName,
    /// `SET`/`RESET` of the tenant key together with other statements.
    TenantSetInMulti,
    /// A tenant value that is not a valid key (empty, too long, bad encoding).
    InvalidTenant,
    /// A key value Postgres reads that the router cannot read as it does
    /// ([`TenantToken::Unreadable`]: `42.0`, `42::numeric`, `$1::oid`, one
    /// element of a list beside others that are read).
    UnreadableTenant,
    /// A value an UPDATE's SET list (or a MERGE's INSERT) gives the key that
    /// the router cannot read ([`Source::Written`]): another table's column,
    /// a subquery, an expression.
    UnreadableWritten,
    /// More than [`MAX_MENTIONS`] tenant mentions.
    TooManyMentions,
    /// A `COPY .. FROM STDIN` writing the key whose rows the router cannot
    /// read ([`CopyIn::Unreadable`]: an `ENCODING`, an option it does not
    /// know), or one of two in a text.
    UnreadableCopy,
    /// A Unicode-escaped identifier (`U&"..."`) in a routed text: it may
    /// spell the tenant key, which the scanner would then not see.
    EscapedIdentifier,
}

/// A tenant named literally in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mention {
    /// The key.
    pub key: TenantKey,
    /// [`Source::Comment`] or [`Source::Scan`] (a Bind value is a scan too).
    pub source: Source,
}

/// Everything routing and pooling need to know about one text.
///
/// Reusable: [`analyze`] clears it first and keeps the buffers' capacity, so the
/// hot path allocates nothing once warmed up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Non-empty statements in the text.
    pub count: u32,
    /// Kind of the first non-empty statement ([`Kind::Empty`] if none).
    pub first: Kind,
    /// Every statement is tenant-free.
    pub tenant_free: bool,
    /// Every statement can be held with a locally answered BEGIN.
    pub holdable: bool,
    /// Some statement is transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`,
    /// `SAVEPOINT`, `SET LOCAL`, ...): it means something only inside the
    /// client's transaction, so it never runs outside a held BEGIN.
    pub tx_control: bool,
    /// The text contains `RESET ALL` or `DISCARD ALL` (they clear a `SET` tenant).
    pub resets_all: bool,
    /// The text contains `ROLLBACK TO [SAVEPOINT]`.
    pub rollback_to: bool,
    /// The text contains a statement that ends a transaction (`COMMIT`,
    /// `ROLLBACK`, `PREPARE TRANSACTION`, with or without `AND CHAIN`).
    pub ends_tx: bool,
    /// The text contains `COMMIT AND CHAIN` or `ROLLBACK AND CHAIN`, or a
    /// BEGIN after the end of a transaction: the transaction ends and a new
    /// one begins, which no tenant has placed.
    pub chains: bool,
    /// A statement that is not tenant-free follows one that ends a
    /// transaction: it runs after the transaction, not in it.
    pub work_after_end: bool,
    /// A statement that is not tenant-free follows a `RESET ALL` or `DISCARD
    /// ALL`: it runs with the tenant they leave, not the one before them.
    pub work_after_reset: bool,
    /// The text contains `DISCARD ALL`, which Postgres refuses inside a
    /// transaction block (an implicit one of several statements included).
    pub discards_all: bool,
    /// The text contains a `SHOW`: its answer is the transaction's setting,
    /// which a held BEGIN's modes and statements change.
    pub shows: bool,
    /// The text contains `UNLISTEN *` (or asyncpg's `DO` block running it):
    /// the client's relayed channels go, whatever else the text holds.
    pub unlisten_all: bool,
    /// The text contains `DISCARD ALL` or `DEALLOCATE ALL`: the client's own
    /// prepared statements are gone once it succeeds.
    pub drops_statements: bool,
    /// The `standard_conforming_strings` the text was lexed under.
    pub std_strings: bool,
    /// The text means something else (other tenants, other statements) when
    /// lexed under the other `standard_conforming_strings`.
    pub std_sensitive: bool,
    /// The text has bytes past ASCII: under a client encoding whose
    /// characters may contain ASCII bytes (see [`super::ascii_unsafe_encoding`])
    /// it is lexed differently by Postgres, which converts it first.
    pub non_ascii: bool,
    /// For `SET key = value`: the value.
    pub set_value: Option<TenantKey>,
    /// Server-side state the text may leave behind.
    pub effects: Effects,
    /// Some tenant mention is read through a cast to a type Postgres finds
    /// by name (`'42'::text`, `$1::int8`): a type or domain of that name the
    /// session created makes it another value (see
    /// [`Effects::may_create_types`]). An SQL `EXECUTE` of a prepared
    /// statement counts too: what it runs may hold one, and Postgres analyzes
    /// it again, with the types found then, once `search_path` changed
    /// (probe LL: prepared before a `SET LOCAL search_path`, executed after).
    pub casts_by_name: bool,
    /// Some statement is a [`Kind::Catalog`] read that names a relation,
    /// function, type or operator without its schema: what `search_path` (and the
    /// session's temporary schema) finds by that name decides what it reads.
    pub catalog_by_name: bool,
    /// What parsing the text reads its string literals through
    /// ([`super::catalog::parse_input`]): the input of a type that may not
    /// be built in runs the application's code at a Parse alone.
    pub parse_input: ParseInput,
    /// The text has a string literal (a quote, or a `$` that is no
    /// parameter's): a Parse reads it through some type's input.
    pub literal: bool,
    /// Some statement is an SQL `EXECUTE` of a prepared statement (anywhere:
    /// `EXPLAIN ANALYZE EXECUTE`, `CREATE TABLE .. AS EXECUTE`): in session
    /// mode it may run a `COPY .. FROM STDIN` the client prepared through
    /// the protocol (see `SessionView::server_copies`).
    pub executes: bool,
    /// Literal tenant mentions (comments and scanned values), in textual order;
    /// consecutive repeats are folded.
    pub mentions: Vec<Mention>,
    /// `$n` parameters compared with the key (1-based, sorted, deduplicated): their
    /// values come from the Bind.
    pub params: Vec<u16>,
    /// `$n` parameters of `key = ANY($n)` (1-based, sorted, deduplicated): arrays, every
    /// element of which is a tenant.
    pub array_params: Vec<u16>,
    /// `$n` parameters read by a cast to an integer or uuid type (`$1::int`,
    /// `ANY($1::uuid[])`; sorted, deduplicated): the Bind value, or each element of it
    /// (`true`: an array), as the cast reads it.
    pub conv_params: Vec<(u16, Conv, bool)>,
    /// Key parameters the text also uses outside a key position: the type
    /// Postgres gives them may come from there (see `params_used_elsewhere`).
    /// Sorted.
    pub params_elsewhere: Vec<u16>,
    /// Key parameters the text uses in more than one key position: another
    /// table's key column of another type (a temporary one included) may
    /// type them (see `params_used_elsewhere`). Sorted.
    pub params_repeated: Vec<u16>,
    /// Key parameters the text uses only as a value an UPDATE's SET list
    /// gives the key: their values are checked against the shard, never
    /// pick it ([`super::Source::Written`]). Sorted.
    pub written_params: Vec<u16>,
    /// Custom (dotted) settings the text sets by name: they are read back by name
    /// because Postgres lists no placeholder settings in `pg_settings`.
    pub custom_settings: Vec<String>,
    /// `$n` parameters that name a setting (`set_config($n, ..)`): the Bind
    /// gives the names, which are then read back like literal ones.
    pub setting_params: Vec<u16>,
    /// Some `set_config` name is neither a literal nor a parameter: only
    /// `RESET ALL` ([`Effects::UNNAMED_SETTINGS`]) can clear what it set.
    pub setting_exprs: bool,
    /// Set when the text must be refused.
    pub violation: Option<Violation>,
    /// What the text's `COPY .. FROM STDIN` reads from the client: whose
    /// rows the session checks as they stream ([`super::decide::copy_rows`]).
    pub copy: CopyIn,
    /// How many statements are a `COPY .. FROM STDIN` (or `FROM STDOUT`,
    /// which Postgres reads the same), [`Facts::copy`] or not.
    pub copies: u8,
}

impl Facts {
    /// Some `$n` gives a tenant through the Bind.
    pub fn has_key_params(&self) -> bool {
        !(self.params.is_empty() && self.array_params.is_empty() && self.conv_params.is_empty())
    }

    /// The highest `$n` that gives a tenant through the Bind.
    pub fn max_key_param(&self) -> Option<u16> {
        let convs = self.conv_params.iter().map(|p| p.0).max();
        self.params
            .last()
            .copied()
            .max(self.array_params.last().copied())
            .max(convs)
    }

    /// The casts `$n` is read through in key positions (sorted by parameter).
    pub fn convs_of(&self, n: u16) -> &[(u16, Conv, bool)] {
        let lo = self.conv_params.partition_point(|p| p.0 < n);
        let hi = self.conv_params.partition_point(|p| p.0 <= n);
        &self.conv_params[lo..hi]
    }

    /// Whether `$n` gives a tenant through the Bind.
    pub fn is_key_param(&self, n: u16) -> bool {
        self.params.binary_search(&n).is_ok()
            || self.array_params.binary_search(&n).is_ok()
            || !self.convs_of(n).is_empty()
    }

    fn clear(&mut self) {
        self.count = 0;
        self.first = Kind::Empty;
        self.tenant_free = true;
        self.holdable = true;
        self.tx_control = false;
        self.resets_all = false;
        self.rollback_to = false;
        self.ends_tx = false;
        self.chains = false;
        self.work_after_end = false;
        self.work_after_reset = false;
        self.discards_all = false;
        self.unlisten_all = false;
        self.shows = false;
        self.drops_statements = false;
        self.std_sensitive = false;
        self.set_value = None;
        self.effects = Effects::none();
        self.casts_by_name = false;
        self.catalog_by_name = false;
        self.parse_input = ParseInput::Builtin;
        self.literal = false;
        self.executes = false;
        self.mentions.clear();
        self.params.clear();
        self.array_params.clear();
        self.conv_params.clear();
        self.params_elsewhere.clear();
        self.params_repeated.clear();
        self.written_params.clear();
        self.custom_settings.clear();
        self.setting_params.clear();
        self.setting_exprs = false;
        self.violation = None;
        self.copy = CopyIn::None;
        self.copies = 0;
    }

    /// A statement's COPY ([`super::copy::copy_in`]). One `COPY .. FROM
    /// STDIN` per text when one writes the key: which one a CopyData
    /// belongs to, only the server's answers would tell.
    fn copy_statement(&mut self, c: CopyIn) {
        if c != CopyIn::None {
            self.copies = self.copies.saturating_add(1);
        }
        self.copy = self.copy.then(&c);
        if matches!(self.copy, CopyIn::Unreadable(_)) {
            self.violate(Violation::UnreadableCopy);
        }
    }

    fn violate(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    fn mention(&mut self, key: TenantKey, source: Source) {
        let m = Mention { key, source };
        if self.mentions.last() == Some(&m) {
            return;
        }
        if self.mentions.len() >= MAX_MENTIONS {
            self.violate(Violation::TooManyMentions);
            return;
        }
        self.mentions.push(m);
    }

    /// Whether the text is exactly one statement of kind `k`.
    pub fn is_only(&self, k: Kind) -> bool {
        self.count == 1 && self.first == k
    }

    /// The text starts with LISTEN or UNLISTEN, or holds a LISTEN anywhere.
    pub fn has_listen(&self) -> bool {
        matches!(self.first, Kind::Listen | Kind::Unlisten) || self.effects.any(Effects::LISTEN)
    }
}

/// Analyze `sql` (one or several `;`-separated statements) for routing key `key`
/// (empty: no routing, only forms and effects), lexing string literals as
/// Postgres does with `standard_conforming_strings` = `std_strings`.
pub fn analyze(sql: &[u8], key: &[u8], std_strings: bool, out: &mut Facts) {
    out.clear();
    out.std_strings = std_strings;
    out.non_ascii = !sql.is_ascii();
    // Only a string literal runs an input: a quote, or a `$` that is no
    // parameter's (a dollar quote).
    out.literal = memchr::memchr(b'\'', sql).is_some()
        || memchr::memchr_iter(b'$', sql).any(|i| !sql.get(i + 1).is_some_and(u8::is_ascii_digit));
    out.parse_input = if out.literal {
        super::catalog::parse_input(sql, std_strings)
    } else {
        ParseInput::Builtin
    };
    let mut set_tenant_seen = false;
    split(sql, std_strings, |stmt| {
        let kind = classify(stmt, key, std_strings, out);
        if kind != Kind::Empty {
            if out.count == 0 {
                out.first = kind;
            }
            out.count += 1;
        }
        if matches!(kind, Kind::SetTenant { .. } | Kind::ResetTenant) {
            set_tenant_seen = true;
        }
        out.rollback_to |= kind == Kind::TxScoped("ROLLBACK");
        out.work_after_end |= out.ends_tx && !kind.tenant_free();
        out.work_after_reset |= out.resets_all && !kind.tenant_free();
        // `COMMIT; BEGIN` in one text opens the next transaction as AND
        // CHAIN does (probe M: it was taken as still placed by the old one's
        // tenant, and work naming none ran on its shard).
        out.chains |= matches!(
            kind,
            Kind::Commit { chain: true } | Kind::Rollback { chain: true }
        ) || (out.ends_tx && kind == Kind::Begin);
        out.ends_tx |= matches!(kind, Kind::Commit { .. } | Kind::Rollback { .. })
            || is_prepare_transaction(stmt, std_strings);
        out.tenant_free &= kind.tenant_free();
        out.holdable &= kind.held_tag().is_some();
        // `DISCARD ALL` too: Postgres refuses it inside a transaction block
        // (25001), so inside a held BEGIN it must run inside, not outside on a
        // pooled server, where it succeeded and the pooler dropped the client's
        // settings and statement names with it (probe).
        out.tx_control |= matches!(
            kind,
            Kind::Begin
                | Kind::Commit { .. }
                | Kind::Rollback { .. }
                | Kind::TxScoped(_)
                | Kind::Discard { all: true }
        );
        // A catalog read changes nothing: the words its text holds
        // (`pg_settings`, `pg_temp` in a pattern) are no effect (probe CS
        // G4: PgJDBC's `max_index_keys` lookup was taken as setting
        // something, and so as untrusting its own names).
        if kind != Kind::Catalog {
            effects(stmt, std_strings, out);
        }
        // Every key position of a parameter, to tell its other uses. Kept
        // as a list sorted once, and the parameter lists sorted and
        // deduplicated at the end: a search per mention made a statement of
        // 65,535 parameters take a worker for a minute (probe FF).
        let mut uses: Vec<u16> = Vec::new();
        // Parameters in SET-list positions, and in any other key position.
        let (mut written, mut routing): (Vec<u16>, Vec<u16>) = (Vec::new(), Vec::new());
        let mut seen = 0usize;
        scanner::mentions(stmt, key, std_strings, |source, t| {
            // (Not counted: the same in the walk of `mentions_strict`.)
            seen += usize::from(t != TenantToken::Unreadable);
            if let TenantToken::Param(n)
            | TenantToken::ParamArray(n)
            | TenantToken::ParamAs(n, _)
            | TenantToken::ParamArrayAs(n, _) = t
            {
                if source == Source::Written {
                    written.push(n);
                } else {
                    routing.push(n);
                }
            }
            match t {
                TenantToken::Unreadable if source == Source::Written => {
                    out.violate(Violation::UnreadableWritten)
                }
                TenantToken::Unreadable => out.violate(Violation::UnreadableTenant),
                TenantToken::Param(n) => {
                    uses.push(n);
                    out.params.push(n);
                }
                TenantToken::ParamArray(n) => {
                    uses.push(n);
                    out.array_params.push(n);
                }
                TenantToken::ParamAs(n, c) | TenantToken::ParamArrayAs(n, c) => {
                    uses.push(n);
                    out.conv_params
                        .push((n, c, matches!(t, TenantToken::ParamArrayAs(..))));
                }
                t => match t.to_key() {
                    Some(k) => out.mention(k, source),
                    None => out.violate(Violation::InvalidTenant),
                },
            }
        });
        if seen > 0
            && (memchr::memmem::find(stmt, b"::").is_some() || has_cast_word(stmt))
            && scanner::mentions_strict(stmt, key, std_strings) != seen
        {
            out.casts_by_name = true;
        }
        if !uses.is_empty() {
            uses.sort_unstable();
            params_used_elsewhere(stmt, std_strings, &uses, out);
        }
        routing.sort_unstable();
        out.written_params.extend(
            written
                .into_iter()
                .filter(|n| routing.binary_search(n).is_err()),
        );
    });
    for list in [
        &mut out.params,
        &mut out.array_params,
        &mut out.params_elsewhere,
        &mut out.params_repeated,
        &mut out.written_params,
    ] {
        list.sort_unstable();
        list.dedup();
    }
    out.conv_params.sort_unstable();
    out.conv_params.dedup();
    if !key.is_empty() && unicode_escapes(sql).0 {
        out.violate(Violation::EscapedIdentifier);
    }
    if set_tenant_seen && out.count > 1 {
        out.violate(Violation::TenantSetInMulti);
    }
    if out
        .effects
        .any(Effects::SETTINGS.union(Effects::LOCAL_SETTINGS))
        && (out.resets_all || may_name_lexing_setting(sql))
    {
        out.effects.add(Effects::LEXING);
    }
    if out.rollback_to {
        // ROLLBACK TO SAVEPOINT undoes what was set since the savepoint,
        // standard_conforming_strings and client_encoding included, in
        // earlier units too: the text after it in an extended batch (each
        // Parse lexed when it runs) may be read another way (probe: a row of
        // tenant 42 written on tenant 1's shard).
        out.effects.add(Effects::LEXING);
    }
}

/// Words without which a text cannot change `client_encoding` or
/// `standard_conforming_strings` by name: SQL spells a setting's name out
/// (`SET NAMES` is the one other spelling); only a backslash escape (`E''`,
/// or any string under `standard_conforming_strings = off`) or a Unicode
/// escape (dynamic code already) can hide it. `set_config` and `pg_settings`
/// may take their name from an expression, a parameter, or literals joined
/// across a newline; `RESET ALL` and `DISCARD ALL` reset both (the caller
/// checks those). Matched anywhere, comments and literals too: a false alarm
/// only refuses a rare text that also has bytes past ASCII.
const LEXING_WORDS: &[&[u8]] = &[
    b"encoding",
    b"names",
    b"conforming",
    b"set_config",
    b"pg_settings",
];

/// Whether a text with setting changes may change the lexing (see
/// [`LEXING_WORDS`]).
fn may_name_lexing_setting(sql: &[u8]) -> bool {
    memchr::memchr(b'\\', sql).is_some() || LEXING_WORDS.iter().any(|w| contains_ci(sql, w))
}

/// Whether `facts`, the analysis of `sql` under routing key `key`, is the
/// analysis of every text [`same_shape`] finds of the same shape: `sql`
/// with other integer literals in place of its own. The analysis reads an
/// integer's digits only where it may be a tenant (a mention, a `SET` of
/// the key, a type modifier of a cast read as one): so the facts qualify
/// only when the text cannot name a tenant (no key, or one without digits
/// the text does not contain, comments included), nothing is refused, no
/// custom setting is named, and nothing is past ASCII or behind a
/// backslash. What the text leaves on the server ([`Effects`]) is read
/// from its words and statements, never from an integer's digits.
pub fn shape_invariant(facts: &Facts, key: &[u8], sql: &[u8]) -> bool {
    facts.violation.is_none()
        && facts.mentions.is_empty()
        && !matches!(facts.copy, CopyIn::Rows(_))
        && facts.set_value.is_none()
        && facts.custom_settings.is_empty()
        && facts.setting_params.is_empty()
        && !facts.setting_exprs
        && !facts.non_ascii
        && !facts.std_sensitive
        && memchr::memchr(b'\\', sql).is_none()
        && (key.is_empty() || (!key.iter().any(u8::is_ascii_digit) && !contains_ci(sql, key)))
}

/// The byte spans of the integer literals of `sql` (digits only: `42`, not
/// `4.2` or `$1`), as the router's lexer reads them under
/// `standard_conforming_strings` = `std_strings`, in order.
pub fn int_spans(sql: &[u8], std_strings: bool, out: &mut Vec<(u32, u32)>) {
    out.clear();
    let mut lx = Lexer::new(sql, std_strings);
    while let Some(t) = lx.next_raw() {
        if t.k == K::Int {
            out.push((t.s as u32, t.e as u32));
        }
    }
}

/// Whether `new` is `old` with other digits in some of `old`'s integer
/// literals (`ints`, from [`int_spans`]), of any length, and nothing else
/// changed: the lexer reads both as the same tokens but for those values.
/// With [`shape_invariant`] facts of `old`, the analysis of `new` is the
/// same; `pgbench -S` sends one text per transaction that differs from the
/// last only so, and its analysis was a sixth of the pooler's instructions.
pub fn same_shape(old: &[u8], ints: &[(u32, u32)], new: &[u8]) -> bool {
    let (mut i, mut j, mut k) = (0usize, 0usize, 0usize);
    loop {
        let n = common_prefix(&old[i..], &new[j..]);
        i += n;
        j += n;
        if i == old.len() && j == new.len() {
            return true;
        }
        // The first difference: inside or right at the end of a literal of
        // `old` that starts in the stretch just compared.
        while ints.get(k).is_some_and(|&(_, e)| (e as usize) < i) {
            k += 1;
        }
        let Some(&(s, e)) = ints.get(k) else {
            return false;
        };
        let (s, e) = (s as usize, e as usize);
        if s > i || j < i - s {
            return false;
        }
        // The same literal in `new` starts where it starts in `old`,
        // shifted as everything since the last difference is.
        let ns = j - (i - s);
        let digits = new[ns..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i = e;
        j = ns + digits;
        k += 1;
    }
}

/// Analyses kept by the shape of their text ([`same_shape`]), for the
/// sessions of one worker: clients running the same statements with other
/// integer literals (`pgbench`'s transactions, an application's queries
/// with ids inlined) share them. Direct-mapped by a hash of the text
/// without its digits; a hit is checked by [`same_shape`] against the text
/// kept, so a hash that collides costs only the check. Only facts that are
/// [`shape_invariant`] are kept, and a shape is kept the second time it is
/// seen: texts that never repeat (string literals inlined) cost a hash and
/// a store each.
pub struct ShapeCache {
    slots: Vec<ShapeSlot>,
}

#[derive(Default)]
struct ShapeSlot {
    /// Hash of the shape seen last here, kept or not.
    seen: u64,
    /// The kept analysis: its hash, inputs, integer literals and facts.
    kept: Option<Box<Shaped>>,
}

struct Shaped {
    hash: u64,
    key: Vec<u8>,
    std_strings: bool,
    text: Vec<u8>,
    ints: Vec<(u32, u32)>,
    facts: Facts,
}

impl ShapeCache {
    /// Slots (shapes kept at once).
    pub const SLOTS: usize = 512;
    /// Longest text kept.
    pub const MAX_TEXT: usize = 2048;

    /// An empty cache.
    pub fn new() -> ShapeCache {
        ShapeCache {
            slots: (0..Self::SLOTS).map(|_| ShapeSlot::default()).collect(),
        }
    }

    /// The hash of `text`'s shape under `key` and `std_strings`: its bytes
    /// but digits, each run of digits counted as one mark.
    pub fn hash(key: &[u8], std_strings: bool, text: &[u8]) -> u64 {
        // A rotate and an xor per byte, one multiply at the end: a hit is
        // checked anyway, so a weak hash only costs a check now and then,
        // and a multiply per byte (FNV) was most of a hit's time.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(std_strings);
        let mut mix = |b: u8| {
            h = h.rotate_left(5) ^ u64::from(b);
        };
        for &b in key {
            mix(b);
        }
        mix(0);
        let mut in_digits = false;
        for &b in text {
            if b.is_ascii_digit() {
                if !in_digits {
                    mix(b'0');
                }
                in_digits = true;
            } else {
                in_digits = false;
                mix(b);
            }
        }
        let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    /// The facts kept for `text`'s shape, if any (`hash` from [`Self::hash`]).
    pub fn get(&self, hash: u64, key: &[u8], std_strings: bool, text: &[u8]) -> Option<&Facts> {
        let s = self.slots[hash as usize % Self::SLOTS].kept.as_deref()?;
        (s.hash == hash
            && s.std_strings == std_strings
            && s.key == key
            && same_shape(&s.text, &s.ints, text))
        .then_some(&s.facts)
    }

    /// `facts` are the analysis of `text` (under `key`, `std_strings`):
    /// kept if [`shape_invariant`] and this shape was seen here last too.
    pub fn offer(&mut self, hash: u64, key: &[u8], std_strings: bool, text: &[u8], facts: &Facts) {
        let slot = &mut self.slots[hash as usize % Self::SLOTS];
        let again = std::mem::replace(&mut slot.seen, hash) == hash;
        if !again || text.len() > Self::MAX_TEXT || !shape_invariant(facts, key, text) {
            return;
        }
        let s = slot.kept.get_or_insert_with(|| {
            Box::new(Shaped {
                hash,
                key: Vec::new(),
                std_strings,
                text: Vec::new(),
                ints: Vec::new(),
                facts: Facts::default(),
            })
        });
        s.hash = hash;
        s.std_strings = std_strings;
        s.key.clear();
        s.key.extend_from_slice(key);
        s.text.clear();
        s.text.extend_from_slice(text);
        int_spans(text, std_strings, &mut s.ints);
        s.facts.clone_from(facts);
    }
}

impl Default for ShapeCache {
    fn default() -> ShapeCache {
        ShapeCache::new()
    }
}

/// How many bytes `a` and `b` start with alike (eight compared at a time).
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("eight"))
            ^ u64::from_le_bytes(b[i..i + 8].try_into().expect("eight"));
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// [`analyze`], and when the text has a backslash (the only byte whose meaning
/// `standard_conforming_strings` changes) also under the other setting, into
/// `alt`, to tell whether the text is [`Facts::std_sensitive`].
pub fn analyze_checked(
    sql: &[u8],
    key: &[u8],
    std_strings: bool,
    out: &mut Facts,
    alt: &mut Facts,
) {
    analyze(sql, key, std_strings, out);
    if memchr::memchr(b'\\', sql).is_some() {
        analyze(sql, key, !std_strings, alt);
        // Everything the text means (tenants, statements, what it leaves on the
        // server, what it does to the transaction) is compared: any difference
        // between the two lexings makes it sensitive.
        alt.std_strings = std_strings;
        out.std_sensitive = *out != *alt;
    }
}

/// The kind of every statement of `sql`, in order (empty statements included).
/// For the rare paths that need more than [`Facts::first`].
pub fn kinds(sql: &[u8], key: &[u8], std_strings: bool, mut f: impl FnMut(Kind)) {
    let mut scratch = Facts::default();
    split(sql, std_strings, |stmt| {
        f(classify(stmt, key, std_strings, &mut scratch))
    });
}

/// Classify one statement; records SET values, reserved names and settings.
fn classify(sql: &[u8], key: &[u8], std: bool, out: &mut Facts) -> Kind {
    let mut lx = Lexer::new(sql, std);
    let Some(first) = lx.next_sig() else {
        return Kind::Empty;
    };
    if first.k != K::Ident {
        return Kind::Other;
    }
    let word = text(sql, &first);
    let kw = |w: &[u8]| word.eq_ignore_ascii_case(w);
    if kw(b"COPY") {
        // Its rows, when they come from the client and hold the key.
        out.copy_statement(super::copy::copy_in(sql, key, std));
        return Kind::Other;
    }
    if kw(b"BEGIN") {
        if lx
            .peek_sig()
            .is_some_and(|t| is_any_kw(sql, &t, &[b"TRANSACTION", b"WORK"]))
        {
            lx.next_sig();
        }
        return if only_modes(sql, lx) {
            Kind::Begin
        } else {
            Kind::Other
        };
    }
    if kw(b"START") {
        return match lx.next_sig() {
            Some(t) if is_kw(sql, &t, b"TRANSACTION") && only_modes(sql, lx) => Kind::Begin,
            _ => Kind::Other,
        };
    }
    if kw(b"COMMIT") || kw(b"END") || kw(b"ABORT") || kw(b"ROLLBACK") {
        skip_kw(sql, &mut lx, &[b"WORK", b"TRANSACTION"]);
        let commit = kw(b"COMMIT") || kw(b"END");
        let Some(t) = lx.next_sig() else {
            return if commit {
                Kind::Commit { chain: false }
            } else {
                Kind::Rollback { chain: false }
            };
        };
        if kw(b"ROLLBACK") && is_kw(sql, &t, b"TO") {
            return Kind::TxScoped("ROLLBACK");
        }
        if is_kw(sql, &t, b"AND") {
            let no = lx.peek_sig().is_some_and(|t| is_kw(sql, &t, b"NO"));
            if no {
                lx.next_sig();
            }
            let chained = lx.next_sig().is_some_and(|t| is_kw(sql, &t, b"CHAIN"));
            if chained && lx.next_sig().is_none() {
                return if commit {
                    Kind::Commit { chain: !no }
                } else {
                    Kind::Rollback { chain: !no }
                };
            }
        }
        // COMMIT PREPARED / ROLLBACK PREPARED act on a shard's prepared transaction.
        return Kind::Other;
    }
    if kw(b"SAVEPOINT") {
        return Kind::TxScoped("SAVEPOINT");
    }
    if kw(b"RELEASE") {
        return Kind::TxScoped("RELEASE");
    }
    if kw(b"SET") {
        return classify_set(sql, lx, key, out);
    }
    if kw(b"RESET") {
        let save = lx;
        if param_name_matches(sql, &mut lx, key) && lx.next_sig().is_none() {
            return Kind::ResetTenant;
        }
        lx = save;
        out.effects.add(Effects::SETTINGS);
        let Some(t) = lx.next_sig() else {
            return Kind::Other;
        };
        if is_kw(sql, &t, b"ALL") {
            out.effects.add(Effects::RESETS);
            out.resets_all = true;
            return Kind::ResetAll;
        }
        note_setting_name(sql, t, lx, out);
        return Kind::Reset;
    }
    if kw(b"SHOW") {
        out.shows = true;
        return Kind::Show;
    }
    if kw(b"DISCARD") {
        return match lx.next_sig() {
            Some(t) if is_kw(sql, &t, b"ALL") => {
                out.resets_all = true;
                out.discards_all = true;
                out.drops_statements = true;
                out.effects.add(
                    Effects::SETTINGS
                        .union(Effects::PREPARED)
                        .union(Effects::RESETS),
                );
                Kind::Discard { all: true }
            }
            Some(t) if is_any_kw(sql, &t, &[b"PLANS", b"SEQUENCES", b"TEMP", b"TEMPORARY"]) => {
                Kind::Discard { all: false }
            }
            _ => Kind::Other,
        };
    }
    if kw(b"DEALLOCATE") {
        skip_kw(sql, &mut lx, &[b"PREPARE"]);
        out.effects.add(Effects::PREPARED);
        if let Some(t) = lx.next_sig() {
            if is_reserved_name(sql, &t) {
                out.violate(Violation::ReservedName);
            }
            if is_kw(sql, &t, b"ALL") {
                out.drops_statements = true;
            }
        }
        return Kind::Deallocate;
    }
    if kw(b"PREPARE") {
        if let Some(t) = lx.next_sig() {
            if is_kw(sql, &t, b"TRANSACTION") {
                return Kind::Other; // two-phase commit, not a statement
            }
            if is_reserved_name(sql, &t) {
                out.violate(Violation::ReservedName);
            }
        }
        out.effects.add(Effects::PREPARED);
        return Kind::Other;
    }
    if kw(b"EXECUTE") {
        if let Some(t) = lx.next_sig() {
            if is_reserved_name(sql, &t) {
                out.violate(Violation::ReservedName);
            }
        }
        return Kind::Other;
    }
    if kw(b"LISTEN") {
        out.effects.add(Effects::LISTEN);
        return Kind::Listen;
    }
    if kw(b"UNLISTEN") {
        let mut l2 = lx;
        if l2
            .next_sig()
            .is_some_and(|t| t.k == K::Op && text(sql, &t) == b"*")
            && l2.next_sig().is_none()
        {
            out.unlisten_all = true;
        }
        return Kind::Unlisten;
    }
    if kw(b"CLOSE") {
        let mut l2 = lx;
        if l2.next_sig().is_some_and(|t| is_kw(sql, &t, b"ALL")) && l2.next_sig().is_none() {
            return Kind::Cleanup;
        }
        return Kind::Other;
    }
    if kw(b"SELECT") {
        let mut l2 = lx;
        let exact = l2
            .next_sig()
            .is_some_and(|t| is_kw(sql, &t, b"pg_advisory_unlock_all"))
            && l2.next_sig().is_some_and(|t| t.k == K::LParen)
            && l2.next_sig().is_some_and(|t| t.k == K::RParen)
            && l2.next_sig().is_none();
        if exact {
            out.effects.add(Effects::ADVISORY);
            return Kind::Cleanup;
        }
        if info_select(sql, lx) {
            return Kind::Info;
        }
    }
    if kw(b"SELECT") || kw(b"WITH") {
        if let Some(c) = super::catalog::catalog_read(sql, std) {
            out.catalog_by_name |= c.by_name;
            return Kind::Catalog;
        }
    }
    if kw(b"DO") {
        let mut l2 = lx;
        if let (Some(t), None) = (l2.next_sig(), l2.next_sig()) {
            if t.k == K::Dollar && is_asyncpg_unlisten(body(sql, &t)) {
                out.unlisten_all = true;
                return Kind::Cleanup;
            }
        }
    }
    if kw(b"DO") || kw(b"CALL") {
        out.effects.add(Effects::DYNAMIC);
        return Kind::Other;
    }
    if kw(b"DECLARE") {
        out.effects.add(Effects::CURSOR);
        return Kind::Other;
    }
    if kw(b"CREATE") {
        // Any relation may be temporary without the word TEMP (a search_path
        // starting with pg_temp), so every CREATE may leave one.
        out.effects.add(Effects::TEMP);
        return Kind::Other;
    }
    Kind::Other
}

/// After `SET`: the tenant key, transaction-scoped forms, or a session setting.
fn classify_set<'a>(sql: &'a [u8], mut lx: Lexer<'a>, key: &[u8], out: &mut Facts) -> Kind {
    let mut local = false;
    let mut session = false;
    let save = lx;
    match lx.next_sig() {
        Some(t) if is_kw(sql, &t, b"LOCAL") => local = true,
        Some(t) if is_kw(sql, &t, b"SESSION") => session = true,
        _ => lx = save,
    }
    let name_at = lx;
    if param_name_matches(sql, &mut lx, key) {
        return set_tenant(sql, lx, local, out);
    }
    lx = name_at;
    let Some(t) = lx.next_sig() else {
        return Kind::Other;
    };
    if !session && !local && is_any_kw(sql, &t, &[b"TRANSACTION"]) {
        return Kind::TxScoped("SET");
    }
    if !session && !local && is_kw(sql, &t, b"CONSTRAINTS") {
        return Kind::TxScoped("SET CONSTRAINTS");
    }
    if local {
        // SET LOCAL x: gone at transaction end, nothing to follow the client;
        // until then it may change the lexing of what follows. But `SET LOCAL
        // seed` seeds random() for good, as `setseed` does: reseeded on
        // release (re-probe: the next client got its sequence).
        out.effects.add(Effects::LOCAL_SETTINGS);
        if is_identlike(&t) && lx.peek_sig().is_none_or(|n| n.k != K::Dot) {
            let mut name = String::new();
            push_ident(sql, &t, &mut name);
            note_builtin(out, &name);
        }
        note_path(sql, &t, lx, out);
        return Kind::TxScoped("SET");
    }
    out.effects.add(Effects::SETTINGS);
    note_path(sql, &t, lx, out);
    note_setting_name(sql, t, lx, out);
    Kind::Set
}

/// After `SET [LOCAL | SESSION] name`: a `search_path` that may name
/// `pg_catalog` after another schema is [`Effects::TYPE_PATH`].
fn note_path(sql: &[u8], name: &Tok, lx: Lexer<'_>, out: &mut Facts) {
    let is_path = match name.k {
        K::Ident => text(sql, name).eq_ignore_ascii_case(b"search_path"),
        K::QIdent => body(sql, name) == b"search_path",
        _ => false,
    };
    if is_path && set_path_shadows(sql, lx) {
        out.effects.add(Effects::TYPE_PATH);
    }
}

/// After `SET [LOCAL] search_path`: whether the value may name `pg_catalog`
/// after another schema. Each value is one name, as Postgres takes a list
/// setting's values: a plain identifier folds to lower case, and a string is
/// one name (`'a, pg_catalog'` is the schema `a, pg_catalog`). `TO DEFAULT`
/// is the pool's own path. Anything else counts as shadowing.
fn set_path_shadows(sql: &[u8], mut lx: Lexer<'_>) -> bool {
    match lx.next_sig() {
        Some(t) if is_op(sql, &t, b"=") || is_kw(sql, &t, b"TO") => {}
        _ => return true,
    }
    let mut first = true;
    loop {
        let Some(v) = lx.next_sig() else {
            return true;
        };
        if first && is_kw(sql, &v, b"DEFAULT") && lx.peek_sig().is_none() {
            return false;
        }
        let catalog = match v.k {
            K::Ident => text(sql, &v).eq_ignore_ascii_case(b"pg_catalog"),
            K::QIdent => body(sql, &v) == b"pg_catalog",
            K::Str { escape } => {
                let b = body(sql, &v);
                if escape && b.contains(&b'\\') {
                    return true;
                }
                b == b"pg_catalog"
            }
            _ => return true,
        };
        if catalog {
            return !first;
        }
        first = false;
        match lx.next_sig() {
            None => return false,
            Some(t) if t.k == K::Comma => {}
            Some(_) => return true,
        }
    }
}

/// Whether `stmt` has the word `cast` in any case (anywhere: a false alarm
/// costs one more scan). `CAST(x AS text)` has no `::`, and was missed by
/// the count of casts by name (probe II: after a temporary domain `text`,
/// `CAST('42' AS text)` ran on tenant 42's shard and stored `4`).
fn has_cast_word(stmt: &[u8]) -> bool {
    stmt.windows(4).any(|w| w.eq_ignore_ascii_case(b"cast"))
}

/// Note the key parameters of `stmt` that it also uses outside a key
/// position (`reported`: each one's key positions). Postgres gives a
/// parameter the type of its first use, which may be one of those: `WITH c
/// AS (SELECT $1 = 'x'::"char") INSERT .. VALUES ($1, ..)` stores the
/// one-character `"char"` of the value, not its text (probe W: the row went
/// to another tenant's shard, past the lock too).
fn params_used_elsewhere(stmt: &[u8], std: bool, uses: &[u16], out: &mut Facts) {
    // (parameter, uses in key positions, uses anywhere), sorted.
    let mut counts: Vec<(u16, usize, usize)> = Vec::new();
    for &n in uses {
        match counts.last_mut() {
            Some(c) if c.0 == n => c.1 += 1,
            _ => counts.push((n, 1, 0)),
        }
    }
    let mut lx = Lexer::new(stmt, std);
    while let Some(t) = lx.next_sig() {
        if let K::Param(n) = t.k {
            if let Ok(i) = counts.binary_search_by_key(&n, |c| c.0) {
                counts[i].2 += 1;
            }
        }
    }
    for (n, keyed, all) in counts {
        if all > keyed {
            out.params_elsewhere.push(n);
        }
        if keyed > 1 {
            out.params_repeated.push(n);
        }
    }
}

/// A number as a `SET` value: Postgres keeps an integer that fits `int4` as
/// its decimal text (`SET x = 042` is '42', as the literal `042` elsewhere
/// is tenant 42: probe W), and any other number as written (`042.0`, an
/// integer past int4).
fn set_number(n: &[u8], k: K) -> TenantToken<'_> {
    let fits = k == K::Int
        && std::str::from_utf8(n)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|v| i32::try_from(v).is_ok());
    if fits {
        TenantToken::Int(n)
    } else {
        TenantToken::Bare(n)
    }
}

/// `SET [LOCAL] key (= | TO) value` with the key already matched.
fn set_tenant(sql: &[u8], mut lx: Lexer<'_>, local: bool, out: &mut Facts) -> Kind {
    let kind = Kind::SetTenant { local };
    let Some(t) = lx.next_sig() else {
        out.violate(Violation::InvalidTenant);
        return kind;
    };
    if !(is_op(sql, &t, b"=") || is_kw(sql, &t, b"TO")) {
        out.violate(Violation::InvalidTenant);
        return kind;
    }
    let Some(v) = lx.next_sig() else {
        out.violate(Violation::InvalidTenant);
        return kind;
    };
    let value = match v.k {
        K::Ident if is_kw(sql, &v, b"DEFAULT") => {
            return if lx.next_sig().is_none() {
                Kind::ResetTenant
            } else {
                out.violate(Violation::InvalidTenant);
                kind
            };
        }
        K::Ident => TenantToken::Ident(text(sql, &v)),
        K::QIdent => TenantToken::QuotedIdent(body(sql, &v)),
        K::Int | K::Num => set_number(text(sql, &v), v.k),
        K::Op if matches!(text(sql, &v), b"-" | b"+") => match lx.next_raw() {
            Some(n) if matches!(n.k, K::Int | K::Num) && n.s == v.e => {
                // `+42` is 42, as Postgres reads it.
                let from = if text(sql, &v) == b"+" { n.s } else { v.s };
                set_number(&sql[from..n.e], n.k)
            }
            _ => {
                out.violate(Violation::InvalidTenant);
                return kind;
            }
        },
        K::Str { escape } => TenantToken::Quoted {
            raw: body(sql, &v),
            escape,
        },
        K::Dollar if memchr::memchr(b'\'', body(sql, &v)).is_none() => TenantToken::Quoted {
            raw: body(sql, &v),
            escape: false,
        },
        _ => {
            out.violate(Violation::InvalidTenant);
            return kind;
        }
    };
    // One value and nothing after it (`SET tenant_id = 1, 2` is not a tenant).
    match (lx.next_sig(), value.to_key()) {
        (None, Some(k)) => out.set_value = Some(k),
        _ => out.violate(Violation::InvalidTenant),
    }
    kind
}

/// Only BEGIN's transaction modes (`ISOLATION LEVEL ..`, `READ ONLY`, ...) remain.
/// What a transaction-scoped statement does to savepoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointOp {
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
}

/// The savepoint statement `sql` is (one statement), with its name as
/// Postgres names it (unquoted folded to lower case).
pub fn savepoint_op(sql: &[u8], std: bool) -> Option<SavepointOp> {
    let mut lx = Lexer::new(sql, std);
    let first = lx.next_sig()?;
    let name = |lx: &mut Lexer<'_>| -> Option<String> {
        let t = lx.next_sig()?;
        if !is_identlike(&t) {
            return None;
        }
        let mut n = String::new();
        push_ident(sql, &t, &mut n);
        match lx.next_sig() {
            None => Some(n),
            Some(t) if t.k == K::Semi && lx.next_sig().is_none() => Some(n),
            _ => None,
        }
    };
    if is_kw(sql, &first, b"SAVEPOINT") {
        return name(&mut lx).map(SavepointOp::Savepoint);
    }
    if is_kw(sql, &first, b"RELEASE") {
        skip_kw(sql, &mut lx, &[b"SAVEPOINT"]);
        return name(&mut lx).map(SavepointOp::Release);
    }
    if is_kw(sql, &first, b"ROLLBACK") {
        skip_kw(sql, &mut lx, &[b"WORK", b"TRANSACTION"]);
        if !lx.next_sig().is_some_and(|t| is_kw(sql, &t, b"TO")) {
            return None;
        }
        skip_kw(sql, &mut lx, &[b"SAVEPOINT"]);
        return name(&mut lx).map(SavepointOp::RollbackTo);
    }
    None
}

/// A `BEGIN` or `START TRANSACTION` ([`Kind::Begin`]): Postgres's command tag
/// for it, and its transaction modes as a `SET TRANSACTION` statement (`None`
/// when it has none). A second BEGIN inside a transaction only warns in
/// Postgres, but its modes still apply while no query has run: held, this
/// statement applies them as Postgres would.
pub fn begin_parts(sql: &[u8], std: bool) -> (&'static str, Option<String>) {
    let mut lx = Lexer::new(sql, std);
    let start = lx.next_sig().is_some_and(|t| is_kw(sql, &t, b"START"));
    let tag = if start { "START TRANSACTION" } else { "BEGIN" };
    skip_kw(sql, &mut lx, &[b"WORK", b"TRANSACTION"]);
    let mut modes = String::new();
    while let Some(t) = lx.next_sig() {
        match t.k {
            K::Semi => break,
            K::Comma => modes.push_str(" ,"),
            // The kind's words only (`only_modes`): nothing else is copied.
            _ => {
                modes.push(' ');
                modes.push_str(&String::from_utf8_lossy(text(sql, &t)).to_ascii_uppercase());
            }
        }
    }
    (
        tag,
        (!modes.is_empty()).then(|| format!("SET TRANSACTION{modes}")),
    )
}

/// Whether a `BEGIN` or `START TRANSACTION` gives the transaction modes
/// ([`begin_parts`] has a `SET TRANSACTION`), without building them.
pub fn begin_has_modes(sql: &[u8], std: bool) -> bool {
    let mut lx = Lexer::new(sql, std);
    lx.next_sig();
    skip_kw(sql, &mut lx, &[b"WORK", b"TRANSACTION"]);
    lx.next_sig().is_some_and(|t| t.k != K::Semi)
}

fn only_modes(sql: &[u8], mut lx: Lexer<'_>) -> bool {
    while let Some(t) = lx.next_sig() {
        let ok = t.k == K::Comma
            || is_any_kw(
                sql,
                &t,
                &[
                    b"ISOLATION",
                    b"LEVEL",
                    b"SERIALIZABLE",
                    b"REPEATABLE",
                    b"READ",
                    b"COMMITTED",
                    b"UNCOMMITTED",
                    b"WRITE",
                    b"ONLY",
                    b"NOT",
                    b"DEFERRABLE",
                ],
            );
        if !ok {
            return false;
        }
    }
    true
}

fn skip_kw(sql: &[u8], lx: &mut Lexer<'_>, words: &[&[u8]]) {
    if lx.peek_sig().is_some_and(|t| is_any_kw(sql, &t, words)) {
        lx.next_sig();
    }
}

/// Matches a (possibly dotted) parameter name against `key`, part by part
/// (`app.tenant_id` = `app` `.` `tenant_id`). An empty key matches nothing.
fn param_name_matches(sql: &[u8], lx: &mut Lexer<'_>, key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    let mut first = true;
    for part in key.split(|&b| b == b'.') {
        if !first && !lx.next_sig().is_some_and(|t| t.k == K::Dot) {
            return false;
        }
        first = false;
        match lx.next_sig() {
            Some(t) if ident_eq(sql, &t, part) => {}
            _ => return false,
        }
    }
    // All parts matched; the name must end here.
    !lx.peek_sig().is_some_and(|t| t.k == K::Dot)
}

/// `PREPARE TRANSACTION ..` (ends the transaction, as COMMIT does).
fn is_prepare_transaction(sql: &[u8], std: bool) -> bool {
    let mut lx = Lexer::new(sql, std);
    lx.next_sig().is_some_and(|t| is_kw(sql, &t, b"PREPARE"))
        && lx
            .next_sig()
            .is_some_and(|t| is_kw(sql, &t, b"TRANSACTION"))
}

/// Functions of the server's settings and facts that read no table: the
/// only calls an [`Kind::Info`] select may make.
const INFO_FUNCTIONS: &[&[u8]] = &[
    b"version",
    b"current_setting",
    b"set_config",
    b"current_schema",
    b"current_schemas",
    b"current_database",
    b"current_user",
    b"session_user",
    b"pg_backend_pid",
    b"pg_is_in_recovery",
];

/// After `SELECT`: a select list of [`INFO_FUNCTIONS`] calls (qualified
/// with `pg_catalog` or not), each argument one literal, parameter,
/// boolean or NULL (cast or not), or of `current_user`, `session_user`,
/// `current_schema`, `current_catalog`, `user`, each with an alias or not,
/// and nothing after it (no FROM, WHERE, ..).
fn info_select(sql: &[u8], mut lx: Lexer<'_>) -> bool {
    const VALUES: &[&[u8]] = &[
        b"current_user",
        b"session_user",
        b"current_schema",
        b"current_catalog",
        b"user",
    ];
    loop {
        let Some(mut name) = lx.next_sig() else {
            return false;
        };
        // (Judged by its first word before anything else is lexed: every
        // SELECT comes here.)
        let catalog = is_kw(sql, &name, b"pg_catalog");
        if !catalog && !is_any_kw(sql, &name, INFO_FUNCTIONS) && !is_any_kw(sql, &name, VALUES) {
            return false;
        }
        if catalog && lx.peek_sig().is_some_and(|t| t.k == K::Dot) {
            lx.next_sig();
            let Some(n) = lx.next_sig() else { return false };
            name = n;
        }
        if lx.peek_sig().is_some_and(|t| t.k == K::LParen) {
            if !is_any_kw(sql, &name, INFO_FUNCTIONS) {
                return false;
            }
            lx.next_sig();
            if lx.peek_sig().is_some_and(|t| t.k == K::RParen) {
                lx.next_sig();
            } else {
                loop {
                    if !info_argument(sql, &mut lx) {
                        return false;
                    }
                    match lx.next_sig().map(|t| t.k) {
                        Some(K::Comma) => {}
                        Some(K::RParen) => break,
                        _ => return false,
                    }
                }
            }
        } else if !is_any_kw(sql, &name, VALUES) {
            return false;
        }
        // An alias.
        if lx.peek_sig().is_some_and(|t| is_kw(sql, &t, b"AS")) {
            lx.next_sig();
            if !lx.next_sig().is_some_and(|t| is_identlike(&t)) {
                return false;
            }
        } else if lx
            .peek_sig()
            .is_some_and(|t| t.k == K::QIdent || (t.k == K::Ident && !is_kw(sql, &t, b"FROM")))
        {
            lx.next_sig();
        }
        match lx.next_sig() {
            None => return true,
            Some(t) if t.k == K::Comma => {}
            Some(_) => return false,
        }
    }
}

/// One constant argument of an [`info_select`] call: a literal,
/// parameter, `TRUE`, `FALSE` or `NULL`, cast by `::name` to a built-in
/// type or not.
fn info_argument(sql: &[u8], lx: &mut Lexer<'_>) -> bool {
    let Some(t) = lx.next_sig() else { return false };
    let constant = matches!(
        t.k,
        K::Str { .. } | K::Dollar | K::Int | K::Num | K::Param(_)
    ) || is_any_kw(sql, &t, &[b"TRUE", b"FALSE", b"NULL"]);
    if !constant {
        return false;
    }
    // Cast to built-in types only: a literal cast to a domain runs its
    // `CHECK`, the application's code (probe CW F6: `current_setting('x'::dom)`).
    while lx.peek_sig().is_some_and(|t| t.k == K::Cast) {
        lx.next_sig();
        if !lx
            .next_sig()
            .is_some_and(|t| t.k == K::Ident && super::catalog::builtin_type(sql, &t))
        {
            return false;
        }
    }
    true
}

/// The body of asyncpg's (before 0.30) pool-release `DO` block, which runs
/// `UNLISTEN *` when the session listens to anything; compared word for word,
/// case and spacing aside.
fn is_asyncpg_unlisten(body: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[
        b"BEGIN",
        b"PERFORM",
        b"*",
        b"FROM",
        b"pg_listening_channels()",
        b"LIMIT",
        b"1;",
        b"IF",
        b"FOUND",
        b"THEN",
        b"UNLISTEN",
        b"*;",
        b"END",
        b"IF;",
        b"END;",
    ];
    let mut words = body
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    WORDS
        .iter()
        .all(|want| words.next().is_some_and(|w| w.eq_ignore_ascii_case(want)))
        && words.next().is_none()
}

/// A statement name in shardbouncer's namespace: unquoted names fold to lower
/// case (so `SB_x` is `sb_x`); quoted ones compare exactly.
fn is_reserved_name(sql: &[u8], t: &Tok) -> bool {
    let p = RESERVED_PREFIX.as_bytes();
    match t.k {
        K::Ident => text(sql, t)
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p)),
        K::QIdent => body(sql, t).starts_with(p),
        // `U&"\0073b_..."` may spell one (and no other literal is a name).
        K::Lit => true,
        _ => false,
    }
}

/// Record `a.b` in `SET a.b ...` / `RESET a.b`: custom settings must be read
/// back by name.
fn note_setting_name(sql: &[u8], first: Tok, mut lx: Lexer<'_>, out: &mut Facts) {
    if !is_identlike(&first) {
        return;
    }
    let mut name = String::new();
    // Postgres cuts an identifier past 63 bytes (probe N: the whole name,
    // read back, found nothing, and the value reached the next client).
    let mut cut = false;
    let mut part = |t: &Tok, name: &mut String| {
        let at = name.len();
        push_ident(sql, t, name);
        cut |= name.len() - at > 63;
    };
    part(&first, &mut name);
    let mut dotted = false;
    while lx.peek_sig().is_some_and(|t| t.k == K::Dot) {
        lx.next_sig();
        match lx.next_sig() {
            Some(t) if is_identlike(&t) => {
                name.push('.');
                part(&t, &mut name);
                dotted = true;
            }
            _ => return,
        }
    }
    if cut {
        out.effects.add(Effects::UNNAMED_SETTINGS);
        return;
    }
    // `SET "app.secret"`: one quoted identifier is a dotted name too (probe:
    // it was taken for a built-in, never read back, and reached the next
    // client).
    if dotted || name.contains('.') {
        note_custom(out, name);
    } else {
        note_builtin(out, &name);
    }
}

/// A custom setting set by name, to be read back by name. One that cannot be
/// kept (too long, too many) is cleared by `RESET ALL` instead.
fn note_custom(out: &mut Facts, name: String) {
    if out.custom_settings.contains(&name) {
        return;
    }
    // A name past ASCII is converted from the client's encoding before
    // Postgres reads it (probe N: under LATIN1, `app.é` set `app.Ã©`): it
    // cannot be read back by the name in the text.
    if name.len() <= 128 && name.is_ascii() && out.custom_settings.len() < 64 {
        out.custom_settings.push(name);
    } else {
        out.effects.add(Effects::UNNAMED_SETTINGS);
    }
}

/// A built-in setting set by name: `seed` is in neither `pg_settings` nor
/// `RESET ALL`, so the next client's `random()` would follow it; it is
/// reseeded instead.
fn note_builtin(out: &mut Facts, name: &str) {
    if name.eq_ignore_ascii_case("seed") {
        out.effects.add(Effects::SEED);
    }
}

/// What a lone `LISTEN` / `UNLISTEN` statement asks for (a pooler in
/// transaction mode relays notifications itself: see `pool::listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOp {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`.
    Unlisten(String),
    /// `UNLISTEN *`.
    UnlistenAll,
}

/// The `LISTEN` / `UNLISTEN` statements that `sql` holds, in order, when it
/// holds nothing else; `None` otherwise (another statement, none, or a form
/// Postgres would refuse). The channel is named as Postgres names it: unquoted
/// names fold to lower case, and names longer than 63 bytes are cut at a
/// character boundary (NAMEDATALEN).
pub fn listen_ops(sql: &[u8], std_strings: bool) -> Option<Vec<ListenOp>> {
    let mut ops = Some(Vec::new());
    split(sql, std_strings, |stmt| {
        let mut lx = Lexer::new(stmt, std_strings);
        let Some(first) = lx.next_sig() else {
            return;
        };
        let op = listen_statement(stmt, first, lx);
        match (&mut ops, op) {
            (Some(v), Some(op)) if v.len() < 64 => v.push(op),
            _ => ops = None,
        }
    });
    ops.filter(|v| !v.is_empty())
}

fn listen_statement(sql: &[u8], first: Tok, mut lx: Lexer<'_>) -> Option<ListenOp> {
    if first.k != K::Ident {
        return None;
    }
    let word = text(sql, &first);
    let listen = word.eq_ignore_ascii_case(b"LISTEN");
    if !listen && !word.eq_ignore_ascii_case(b"UNLISTEN") {
        return None;
    }
    let name = lx.next_sig()?;
    if lx.next_sig().is_some() {
        return None;
    }
    if !listen && name.k == K::Op && text(sql, &name) == b"*" {
        return Some(ListenOp::UnlistenAll);
    }
    if !matches!(name.k, K::Ident | K::QIdent) {
        return None;
    }
    let mut channel = String::new();
    push_ident(sql, &name, &mut channel);
    if channel.is_empty() {
        return None; // a zero-length delimited identifier: Postgres refuses it
    }
    if channel.len() > 63 {
        let mut cut = 63;
        while !channel.is_char_boundary(cut) {
            cut -= 1;
        }
        channel.truncate(cut);
    }
    Some(if listen {
        ListenOp::Listen(channel)
    } else {
        ListenOp::Unlisten(channel)
    })
}

/// An identifier as Postgres names it: unquoted ones fold ASCII to lower case.
fn push_ident(sql: &[u8], t: &Tok, out: &mut String) {
    match t.k {
        K::QIdent => out.push_str(&String::from_utf8_lossy(body(sql, t)).replace("\"\"", "\"")),
        _ => out.push_str(&String::from_utf8_lossy(text(sql, t)).to_ascii_lowercase()),
    }
}

/// Function names that reach session state, found anywhere in a text: in
/// identifiers, quoted identifiers (`"set_config"`) and string literals too, as
/// SQL run by built-ins such as `query_to_xml('SELECT set_config(..)', ..)`.
/// Over-matching only costs a reset at release.
const STATE_WORDS: &[(&[u8], Effects)] = &[
    (b"set_config", Effects::SETTINGS),
    // The view's update rule calls set_config, of any setting.
    (
        b"pg_settings",
        Effects(Effects::SETTINGS.0 | Effects::TYPE_PATH.0),
    ),
    (b"advisory", Effects::ADVISORY),
    (b"nextval", Effects::SEQUENCES),
    (b"setval", Effects::SEQUENCES),
    (b"setseed", Effects::SEED),
    (b"pg_temp", Effects::TEMP),
    // Trusted extensions' functions an application role may run (probe
    // ZZ): pg_trgm's `set_limit` sets `pg_trgm.similarity_threshold` for
    // the session (read back as any setting); isn's `isn_weak` flips a C
    // variable nothing resets. And procedural languages that keep session
    // state of their own (`DO LANGUAGE plperl`, a function created in one).
    (b"set_limit", Effects::SETTINGS),
    (b"isn_weak", Effects::UNRESETTABLE),
    (b"plperl", Effects::UNRESETTABLE),
    (b"pltcl", Effects::UNRESETTABLE),
    (b"plv8", Effects::UNRESETTABLE),
    // Built-ins that run a query given as text, which may be built at run
    // time ('set_' || 'config(...)'), so nothing in the text gives it away.
    (b"query_to_xml", Effects::DYNAMIC),
    (b"cursor_to_xml", Effects::DYNAMIC),
    (b"ts_stat", Effects::DYNAMIC),
    (b"ts_rewrite", Effects::DYNAMIC),
    // tablefunc's (a trusted extension): `crosstab` runs queries given as
    // text, `connectby` builds one from its arguments (probe N).
    (b"crosstab", Effects::DYNAMIC),
    (b"connectby", Effects::DYNAMIC),
];

/// Words without which the token pass of [`effects`] finds nothing: each of
/// its tests asks for an identifier that is one of them, or starts with one
/// (`temporary`), or else for `pg_temp` / `advisory`, whose effects
/// [`STATE_WORDS`] already gives wherever they appear. Matched anywhere, as
/// those are: a false alarm only costs the pass.
const LEXED_WORDS: &[&[u8]] = &[
    b"create",
    b"into",
    b"insert",
    b"copy",
    b"merge",
    b"default",
    b"alter",
    b"drop",
    b"execute",
    b"set_config",
    b"temp",
];

/// The word of bit `i` of [`WORD_FIRST`]: [`STATE_WORDS`], then [`LEXED_WORDS`].
const fn word(i: usize) -> &'static [u8] {
    if i < STATE_WORDS.len() {
        STATE_WORDS[i].0
    } else {
        LEXED_WORDS[i - STATE_WORDS.len()]
    }
}

/// For each byte, the words whose byte `at` it is, in either case (bit `i`
/// for [`word`]`(i)`).
const fn word_bytes(at: usize) -> [u32; 256] {
    let n = STATE_WORDS.len() + LEXED_WORDS.len();
    assert!(n <= 32);
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < n {
        let w = word(i);
        assert!(w.len() >= 2);
        let c = w[at];
        table[c.to_ascii_lowercase() as usize] |= 1 << i;
        table[c.to_ascii_uppercase() as usize] |= 1 << i;
        i += 1;
    }
    table
}

/// First and second bytes of the words: a word is compared only where both
/// match, so most bytes of a text cost two lookups.
const WORD_FIRST: [u32; 256] = word_bytes(0);
const WORD_SECOND: [u32; 256] = word_bytes(1);

/// The effects of every word of [`STATE_WORDS`] found anywhere in `sql` (case
/// ignored), and whether a word of [`LEXED_WORDS`] is there: the same as
/// looking for each word in turn, in one pass over the text (a pass per word
/// was a tenth of the pooler's user-space instructions per `pgbench -S`
/// transaction, by callgrind).
fn scan_words(sql: &[u8]) -> (Effects, bool) {
    let mut found = Effects::default();
    let mut lexed = false;
    for (i, pair) in sql.windows(2).enumerate() {
        let mut words = WORD_FIRST[pair[0] as usize] & WORD_SECOND[pair[1] as usize];
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let word = word(w);
            if sql
                .get(i + 2..i + word.len())
                .is_some_and(|rest| rest.eq_ignore_ascii_case(&word[2..]))
            {
                match STATE_WORDS.get(w) {
                    Some(&(_, e)) => found.add(e),
                    None => lexed = true,
                }
            }
        }
    }
    (found, lexed)
}

/// Effects visible anywhere in a statement: `set_config(..)` and the custom
/// settings it names, temporary objects, advisory locks, sequences, the seed.
///
/// Fail-closed where the text can hide a name: a Unicode-escaped identifier
/// or string (`U&"set\005fconfig"`) may spell any function, so it counts as
/// dynamic code; a statement that can create a table anywhere in it (`CREATE`,
/// `INTO` other than `INSERT INTO`/`MERGE INTO`) may create a temporary one
/// (`search_path` may put `pg_temp` first); one that can fill column defaults
/// (`INSERT`, `COPY`, `MERGE`, `DEFAULT`, `ALTER`) may advance a sequence.
fn effects(sql: &[u8], std: bool, out: &mut Facts) {
    let (found, lexed) = scan_words(sql);
    out.effects.add(found);
    let (ident, string) = unicode_escapes(sql);
    if ident || string {
        out.effects.add(Effects::DYNAMIC);
    }
    if lexed {
        // Else nothing for this pass to find (see LEXED_WORDS): it was half
        // the analysis of `pgbench -S`'s SELECT (callgrind).
        lexed_effects(sql, std, out);
    }
}

/// After `CREATE`: whether it creates code that runs later (a function,
/// procedure, trigger, rule, aggregate, operator, cast, transform or
/// language), past `OR REPLACE`, `TEMP`, `CONSTRAINT`, `EVENT`, `TRUSTED` or
/// `PROCEDURAL`.
fn creates_code(sql: &[u8], mut lx: Lexer<'_>) -> bool {
    while let Some(t) = lx.next_sig() {
        if is_any_kw(
            sql,
            &t,
            &[
                b"OR",
                b"REPLACE",
                b"TEMP",
                b"TEMPORARY",
                b"CONSTRAINT",
                b"EVENT",
                b"TRUSTED",
                b"PROCEDURAL",
            ],
        ) {
            continue;
        }
        return is_any_kw(
            sql,
            &t,
            &[
                b"FUNCTION",
                b"PROCEDURE",
                b"TRIGGER",
                b"RULE",
                b"AGGREGATE",
                b"OPERATOR",
                b"CAST",
                b"TRANSFORM",
                b"LANGUAGE",
            ],
        );
    }
    false
}

/// The part of [`effects`] that reads tokens: keywords and function names.
fn lexed_effects(sql: &[u8], std: bool, out: &mut Facts) {
    let mut lx = Lexer::new(sql, std);
    let mut prev_insert = false;
    while let Some(t) = lx.next_sig() {
        // A quoted identifier is never a keyword, but it names a function or
        // schema as well as a bare one (`"set_config"(..)`,
        // `pg_catalog."set_config"`, `"pg_temp".t`; probe: a quoted
        // set_config of a custom setting went unread and reached the next
        // client).
        let quoted = t.k == K::QIdent;
        if t.k != K::Ident && !quoted {
            prev_insert = false;
            continue;
        }
        let w = if quoted { body(sql, &t) } else { text(sql, &t) };
        let kw = |k: &[u8]| !quoted && w.eq_ignore_ascii_case(k);
        if kw(b"CREATE") || (kw(b"INTO") && !prev_insert) {
            out.effects.add(Effects::TEMP);
        }
        if kw(b"CREATE") && creates_code(sql, lx) {
            // Its body runs later, in this session, unread: `SET ROLE`, or
            // DEALLOCATE and PREPARE of the pooler's own statements through
            // `EXECUTE`. Any role may create such functions in `pg_temp`
            // (probe N: another tenant's prepared statement then ran the
            // attacker's SQL).
            out.effects.add(Effects::DYNAMIC);
        }
        if kw(b"ALTER") || kw(b"DROP") {
            out.effects.add(Effects::CATALOG);
        }
        // ALTER TABLE .. ADD COLUMN .. serial / IDENTITY fills every row.
        if kw(b"INSERT") || kw(b"COPY") || kw(b"MERGE") || kw(b"DEFAULT") || kw(b"ALTER") {
            out.effects.add(Effects::SEQUENCES);
        }
        prev_insert = kw(b"INSERT") || kw(b"MERGE");
        // `EXECUTE name` anywhere, not only first (`EXPLAIN ANALYZE EXECUTE`,
        // `CREATE TABLE .. AS EXECUTE`): a shardbouncer statement name runs
        // another client's statement (probe).
        if let Some(n) = lx.peek_sig().filter(|_| kw(b"EXECUTE")) {
            if is_reserved_name(sql, &n) {
                out.violate(Violation::ReservedName);
            }
            // `EXECUTE name` of an SQL prepared statement (not a trigger's
            // `EXECUTE FUNCTION`, nor `GRANT EXECUTE ON`): see `casts_by_name`.
            if !is_any_kw(sql, &n, &[b"FUNCTION", b"PROCEDURE", b"ON"]) {
                out.casts_by_name = true;
                out.executes = true;
            }
        }
        let starts = |p: &[u8]| w.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        if w.eq_ignore_ascii_case(b"set_config") {
            out.effects.add(Effects::SETTINGS);
            // The name, when it is a literal: custom settings are read back by
            // name. Any other name (a parameter, an expression, literals that
            // Postgres joins across a newline) cannot be.
            let mut l2 = lx;
            let mut named = false;
            if l2.next_sig().is_some_and(|t| t.k == K::LParen) {
                if let Some(n) = l2.next_sig() {
                    let comma = l2.next_sig().is_some_and(|t| t.k == K::Comma);
                    if let (K::Param(p), true) = (n.k, comma) {
                        // Named by the Bind: UNNAMED_SETTINGS until it is read.
                        if !out.setting_params.contains(&p) {
                            out.setting_params.push(p);
                        }
                        named = true;
                        out.effects.add(Effects::UNNAMED_SETTINGS);
                    } else if matches!(n.k, K::Str { .. }) && comma {
                        if let Some(k) = (TenantToken::Quoted {
                            raw: body(sql, &n),
                            escape: matches!(n.k, K::Str { escape: true }),
                        })
                        .to_key()
                        {
                            named = true;
                            let name = k.as_str().to_ascii_lowercase();
                            if name == "search_path" && config_path_shadows(sql, l2) {
                                out.effects.add(Effects::TYPE_PATH);
                            }
                            if name.contains('.') {
                                note_custom(out, name);
                            } else {
                                note_builtin(out, &name);
                            }
                        }
                    }
                }
            }
            if !named {
                out.setting_exprs = true;
                out.effects.add(Effects::UNNAMED_SETTINGS);
            }
        } else if w.eq_ignore_ascii_case(b"temp")
            || w.eq_ignore_ascii_case(b"temporary")
            || starts(b"pg_temp")
        {
            out.effects.add(Effects::TEMP);
        } else if starts(b"pg_advisory") || starts(b"pg_try_advisory") {
            out.effects.add(Effects::ADVISORY);
        }
    }
}

/// After `set_config('search_path',`: whether the value may name
/// `pg_catalog` after another schema (a list, as `current_setting` gives
/// it: [`super::search_path::shadows_catalog`]). A value other than one
/// string literal counts as so.
fn config_path_shadows(sql: &[u8], mut lx: Lexer<'_>) -> bool {
    let Some(v) = lx.next_sig() else {
        return true;
    };
    let K::Str { escape } = v.k else {
        return true;
    };
    if !lx.next_sig().is_some_and(|t| t.k == K::Comma) {
        return true;
    }
    let b = body(sql, &v);
    if escape && b.contains(&b'\\') {
        return true;
    }
    let path = String::from_utf8_lossy(b).replace("''", "'");
    super::search_path::shadows_catalog(&path)
}

/// Whether `sql` has a Unicode-escaped identifier (`U&"..."`) and a
/// Unicode-escaped string (`U&'...'`), in which any name can hide; one pass.
/// Counted anywhere, even inside a literal or comment: a false alarm only
/// costs a reset.
fn unicode_escapes(sql: &[u8]) -> (bool, bool) {
    let (mut ident, mut string) = (false, false);
    for i in memchr::memchr_iter(b'&', sql) {
        if i > 0 && sql[i - 1].eq_ignore_ascii_case(&b'u') {
            match sql.get(i + 1) {
                Some(b'"') => ident = true,
                Some(b'\'') => string = true,
                _ => {}
            }
        }
    }
    (ident, string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts of one shape: the same tokens but for the digits of integer
    /// literals, whatever their length; anything else differs.
    #[test]
    fn texts_of_the_same_shape_differ_only_in_integer_literals() {
        let old = b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
        let mut ints = Vec::new();
        int_spans(old, true, &mut ints);
        assert_eq!(ints, [(50, 55)]);
        for new in [
            &b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"[..],
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 99999999999;",
        ] {
            assert!(
                same_shape(old, &ints, new),
                "{}",
                String::from_utf8_lossy(new)
            );
        }
        for new in [
            &b"SELECT abalance FROM pgbench_accounts WHERE aid = ;"[..],
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1.5;",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12e3;",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12x;",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345; ",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = '12345';",
            b"SELECT abalance FROM pgbench_accounts1 WHERE aid = 12345;",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            b"",
        ] {
            assert!(
                !same_shape(old, &ints, new),
                "{}",
                String::from_utf8_lossy(new)
            );
        }
        // Several literals; digits in names, comments, strings, parameters
        // and quoted identifiers are not literals.
        let old = b"UPDATE t1 SET v = v + -2331 /* 7 */ WHERE id = 5 AND s = '9' AND $1 = \"8\" AND w = 10";
        int_spans(old, true, &mut ints);
        assert_eq!(ints.len(), 3, "{ints:?}");
        assert!(same_shape(
            old,
            &ints,
            b"UPDATE t1 SET v = v + -4 /* 7 */ WHERE id = 123456 AND s = '9' AND $1 = \"8\" AND w = 0"
        ));
        for new in [
            &b"UPDATE t2 SET v = v + -2331 /* 7 */ WHERE id = 5 AND s = '9' AND $1 = \"8\" AND w = 10"[..],
            b"UPDATE t1 SET v = v + -2331 /* 8 */ WHERE id = 5 AND s = '9' AND $1 = \"8\" AND w = 10",
            b"UPDATE t1 SET v = v + -2331 /* 7 */ WHERE id = 5 AND s = '1' AND $1 = \"8\" AND w = 10",
            b"UPDATE t1 SET v = v + -2331 /* 7 */ WHERE id = 5 AND s = '9' AND $2 = \"8\" AND w = 10",
            b"UPDATE t1 SET v = v + -2331 /* 7 */ WHERE id = 5 AND s = '9' AND $1 = \"9\" AND w = 10",
        ] {
            assert!(!same_shape(old, &ints, new), "{}", String::from_utf8_lossy(new));
        }
    }

    /// The worker's cache keeps a shape the second time it is offered, and
    /// gives its facts for texts of that shape only, under the same key and
    /// setting.
    #[test]
    fn the_shape_cache_keeps_shapes_seen_twice_and_checks_each_hit() {
        let mut c = ShapeCache::new();
        let key = b"tenant_id";
        let facts = |sql: &[u8]| {
            let mut f = Facts::default();
            analyze(sql, key, true, &mut f);
            f
        };
        let a = b"SELECT v FROM t WHERE id = 12";
        let b = b"SELECT v FROM t WHERE id = 345";
        let h = ShapeCache::hash(key, true, a);
        assert_eq!(h, ShapeCache::hash(key, true, b));
        c.offer(h, key, true, a, &facts(a));
        assert!(c.get(h, key, true, b).is_none(), "kept at the second offer");
        c.offer(h, key, true, a, &facts(a));
        assert_eq!(c.get(h, key, true, b), Some(&facts(b)));
        // Other key, setting, or a text whose hash collides but is of
        // another shape (digits in a name).
        assert!(c.get(h, b"other", true, b).is_none());
        assert!(c.get(h, key, false, b).is_none());
        let (t1, t2) = (
            b"SELECT v FROM t1 WHERE id = 1",
            b"SELECT v FROM t2 WHERE id = 1",
        );
        let h1 = ShapeCache::hash(key, true, t1);
        assert_eq!(h1, ShapeCache::hash(key, true, t2));
        c.offer(h1, key, true, t1, &facts(t1));
        c.offer(h1, key, true, t1, &facts(t1));
        assert!(c
            .get(h1, key, true, b"SELECT v FROM t1 WHERE id = 9")
            .is_some());
        assert!(
            c.get(h1, key, true, t2).is_none(),
            "digits in a name are no literal"
        );
        // Facts that depend on a literal are never kept.
        let m = b"SELECT v FROM t WHERE tenant_id = 12";
        let hm = ShapeCache::hash(key, true, m);
        c.offer(hm, key, true, m, &facts(m));
        c.offer(hm, key, true, m, &facts(m));
        assert!(c
            .get(hm, key, true, b"SELECT v FROM t WHERE tenant_id = 13")
            .is_none());
    }

    /// Only facts no integer literal can change are kept for a shape.
    #[test]
    fn facts_kept_for_a_shape_cannot_depend_on_an_integer() {
        let inv = |sql: &str, key: &[u8]| {
            let mut f = Facts::default();
            analyze(sql.as_bytes(), key, true, &mut f);
            shape_invariant(&f, key, sql.as_bytes())
        };
        assert!(inv(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5",
            b""
        ));
        assert!(inv("SELECT * FROM t WHERE id = 5", b"tenant_id"));
        assert!(inv("BEGIN", b"tenant_id"));
        // Effects come from words, not digits.
        for sql in [
            "INSERT INTO t VALUES (5)",
            "SELECT pg_advisory_lock(5)",
            "SET statement_timeout = 5",
        ] {
            assert!(inv(sql, b"tenant_id"), "{sql}");
        }
        for sql in [
            "SELECT * FROM t WHERE tenant_id = 5",
            "SELECT * FROM t WHERE id = 5 /* tenant_id=5 */",
            "SELECT * FROM t WHERE x = 'tenant_id'",
            "SET app.x = 5",
            "SELECT 'a\\b'",
            "SELECT 'é' = 5",
        ] {
            assert!(!inv(sql, b"tenant_id"), "{sql}");
        }
        // A key with a digit: a literal's digits could spell it.
        assert!(!inv("SELECT * FROM t WHERE id = 5", b"t1"));
    }

    const KEY: &[u8] = b"tenant_id";

    /// [`scan_words`] as it was: each word looked for in turn.
    fn words_one_by_one(sql: &[u8]) -> (Effects, bool) {
        let mut found = Effects::default();
        for (word, e) in STATE_WORDS {
            if contains_ci(sql, word) {
                found.add(*e);
            }
        }
        (found, LEXED_WORDS.iter().any(|w| contains_ci(sql, w)))
    }

    /// `n` texts of up to `most` of `pieces` each, some pieces in upper case
    /// when `upper`: a fixed xorshift sequence, so the same texts each run,
    /// built so that the near misses and overlaps a property hinges on are
    /// common.
    fn texts_of(pieces: &[&[u8]], n: usize, most: u64, upper: bool) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| {
                let mut sql = Vec::new();
                for _ in 0..next() % (most + 1) {
                    let r = next();
                    let piece = pieces[(r % pieces.len() as u64) as usize];
                    if upper && r & 0x100 != 0 {
                        sql.extend(piece.to_ascii_uppercase());
                    } else {
                        sql.extend_from_slice(piece);
                    }
                }
                sql
            })
            .collect()
    }

    /// [`split`] as it was: every text lexed.
    fn split_by_the_lexer(sql: &[u8], std_strings: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut lx = Lexer::new(sql, std_strings);
        let mut start = 0;
        while let Some(t) = lx.next_raw() {
            if t.k == K::Semi {
                out.push(sql[start..t.s].to_vec());
                start = t.e;
            }
        }
        out.push(sql[start..].to_vec());
        out
    }

    #[test]
    fn statements_split_without_the_lexer_are_those_the_lexer_splits() {
        let pieces: &[&[u8]] = &[
            b";",
            b";",
            b" ",
            b"SELECT 1",
            b"x",
            b"'",
            b"\"",
            b"$",
            b"$1",
            b"$a$",
            b"-",
            b"--",
            b"/",
            b"/*",
            b"*/",
            b"\n",
            b"E",
            b"\\",
            b"::",
            b"\xff",
            b"&",
        ];
        for sql in texts_of(pieces, 50_000, 9, false) {
            for std in [true, false] {
                let mut got = Vec::new();
                split(&sql, std, |s| got.push(s.to_vec()));
                let want = if memchr::memchr(b';', &sql).is_none() {
                    vec![sql.clone()]
                } else {
                    split_by_the_lexer(&sql, std)
                };
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&sql));
            }
        }
        let mut got = Vec::new();
        split(b"SELECT 1; SELECT 2;", true, |s| got.push(s.to_vec()));
        assert_eq!(
            got,
            vec![b"SELECT 1".to_vec(), b" SELECT 2".to_vec(), b"".to_vec()]
        );
    }

    #[test]
    fn the_word_scan_finds_what_each_word_in_turn_finds() {
        for word in STATE_WORDS.iter().map(|(w, _)| w).chain(LEXED_WORDS) {
            assert_eq!(
                word.to_ascii_lowercase(),
                *word,
                "the one pass folds the text only"
            );
        }
        let fixed: &[&[u8]] = &[
            b"",
            b"s",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            b"select SET_CONFIG('a.b', '1', false)",
            b"select pg_try_advisory_lock(1), nextval('s'), SetVal('s', 1)",
            b"ts_stat ts_rewrite query_to_xml cursor_to_xml setseed pg_temp.t",
            b"pg_settingspg_settings",
            b"set_confi",
            b"xxpg_tempxx",
            b"\xc3\xa9set_config",
            b"INSERT INTO t DEFAULT VALUES",
            b"create temporary table x",
            b"alter copy merge execute",
            b"intemp",
            b"in",
            b"tem",
        ];
        for sql in fixed {
            assert_eq!(
                scan_words(sql),
                words_one_by_one(sql),
                "{:?}",
                String::from_utf8_lossy(sql)
            );
        }
        // Texts from pieces of the words.
        let pieces: &[&[u8]] = &[
            b"set",
            b"_config",
            b"SET_",
            b"pg_",
            b"settings",
            b"temp",
            b"advisory",
            b"next",
            b"val",
            b"seed",
            b"query_to",
            b"_xml",
            b"cursor",
            b"ts_",
            b"stat",
            b"rewrite",
            b"cre",
            b"ate",
            b"in",
            b"to",
            b"sert",
            b"co",
            b"py",
            b"mer",
            b"ge",
            b"de",
            b"fault",
            b"al",
            b"ter",
            b"exe",
            b"cute",
            b"te",
            b"mp",
            b"s",
            b"p",
            b" ",
            b"x",
            b"\xff",
        ];
        for sql in texts_of(pieces, 20_000, 8, true) {
            assert_eq!(
                scan_words(&sql),
                words_one_by_one(&sql),
                "{:?}",
                String::from_utf8_lossy(&sql)
            );
        }
    }

    /// Skipping the token pass of [`effects`] when [`scan_words`] finds no
    /// word of [`LEXED_WORDS`] changes nothing: the facts are those of the
    /// pass run on every text. Fails if a word the pass acts on is left out
    /// of the list.
    #[test]
    fn the_token_pass_is_skipped_only_where_it_finds_nothing() {
        let pieces: &[&[u8]] = &[
            b" ",
            b"(",
            b")",
            b",",
            b".",
            b"'",
            b"\"",
            b"x",
            b"$1",
            b"sb_1",
            b"SELECT",
            b"INSERT",
            b"INTO",
            b"MERGE",
            b"CREATE",
            b"COPY",
            b"DEFAULT",
            b"ALTER",
            b"EXECUTE",
            b"temp",
            b"TEMPORARY",
            b"pg_temp",
            b"pg_temp_3",
            b"pg_advisory_lock",
            b"pg_try_advisory_xact_lock",
            b"set_config",
            b"'a.b'",
            b"pg_catalog",
            b"U&",
            b"--",
            b"\n",
        ];
        let mut skipped = 0;
        for sql in texts_of(pieces, 30_000, 10, true) {
            for std in [true, false] {
                let mut got = Facts::default();
                effects(&sql, std, &mut got);
                let mut want = Facts::default();
                want.effects.add(scan_words(&sql).0);
                let (ident, string) = unicode_escapes(&sql);
                if ident || string {
                    want.effects.add(Effects::DYNAMIC);
                }
                lexed_effects(&sql, std, &mut want);
                assert!(got == want, "{:?}", String::from_utf8_lossy(&sql));
                skipped += usize::from(!scan_words(&sql).1);
            }
        }
        assert!(skipped > 1_000, "the skip was tried ({skipped})");
    }

    fn facts(sql: &str) -> Facts {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), KEY, true, &mut f);
        f
    }

    /// Facts are a buffer reused from text to text: every field is the next
    /// text's alone (a `casts_by_name` left over from a refused text refused
    /// the next one, in a test of the whole path).
    #[test]
    fn reused_facts_are_those_of_the_last_text_alone() {
        let texts = [
            "CREATE DOMAIN pg_temp.text AS varchar(1); INSERT INTO a (tenant_id) VALUES ('g'::text)",
            "/* tenant_id=7 */ SELECT 1",
            "SET tenant_id = 4",
            "SELECT * FROM a WHERE tenant_id = $1::int8 OR x = $1",
            "BEGIN; SET LOCAL statement_timeout = 1; COMMIT AND CHAIN; SELECT 2",
            "DISCARD ALL",
            "SELECT set_config($1, 'x', false) FROM a WHERE tenant_id = ANY($2)",
            "PREPARE sb_x AS SELECT 1; LISTEN ch; UNLISTEN *",
            "",
        ];
        for a in texts {
            for b in texts {
                let mut reused = facts(a);
                analyze(b.as_bytes(), KEY, true, &mut reused);
                assert_eq!(reused, facts(b), "{a:?} then {b:?}");
            }
        }
    }

    /// Every pass of the analysis stays linear in its input: tokens lexed
    /// grow with the text, not with its square (see the scanner's test of
    /// the same name).
    #[test]
    fn adversarial_inputs_are_analyzed_in_linear_work() {
        super::super::lexer::assert_linear(
            &[
                "INSERT INTO t (a, tenant_id) VALUES ((",
                "WITH a AS (INSERT INTO t (tenant_id) VALUES ((",
                "CREATE OR REPLACE ",
                "CREATE TEMP TABLE x (",
                "SELECT set_config(",
                "tenant_id = $1 AND f($1, ",
                "PREPARE sb_x AS ",
                "LISTEN ",
                "UNLISTEN ",
                "SET tenant_id = ",
                "BEGIN; SET LOCAL a = 1; ",
                "COMMIT AND CHAIN; ",
                "DISCARD ALL; ",
                "SELECT $1::int8 = tenant_id, ",
            ],
            250,
            |text| analyze(text, KEY, true, &mut Facts::default()),
        );
    }

    fn keys(f: &Facts) -> Vec<String> {
        f.mentions
            .iter()
            .map(|m| m.key.as_str().to_string())
            .collect()
    }

    #[test]
    fn allow_list_is_per_statement() {
        for sql in [
            "",
            ";",
            "SET statement_timeout = 5",
            "set search_path to a, b; show search_path",
            "RESET ALL",
            "SHOW work_mem",
            "DISCARD ALL",
            "DEALLOCATE ALL",
            "BEGIN; SET LOCAL x.y = 1; COMMIT",
            "LISTEN foo; UNLISTEN *",
            "SAVEPOINT a; RELEASE SAVEPOINT a; ROLLBACK TO a",
            "/* c */ -- d\n",
        ] {
            assert!(facts(sql).tenant_free, "{sql}");
        }
        for sql in [
            "SELECT 1 FROM t",
            "SET x = 1; SELECT * FROM t",
            "SHOW x; SELECT * FROM t",
            "COMMIT; SELECT * FROM t",
            "RESET ALL; DELETE FROM t",
            "(SELECT * FROM t)",
            ";SELECT * FROM t",
            "WITH a AS (SELECT 1) SELECT * FROM t",
            "VALUES (1)",
            "COMMIT PREPARED 'x'",
            "PREPARE TRANSACTION 'x'",
            "NOTIFY ch",
            "DO $$ BEGIN END $$",
            "EXPLAIN SELECT 1",
            "BEGIN foo",
            "123",
            // Postgres ends a -- comment at a carriage return too.
            "SHOW work_mem --\r; SELECT * FROM t",
        ] {
            assert!(!facts(sql).tenant_free, "{sql}");
        }
        assert_eq!(
            keys(&facts("SELECT 1 WHERE tenant_id = 1 --\r OR tenant_id = 2")),
            vec!["1", "2"]
        );
    }

    #[test]
    fn kinds_of_transaction_control() {
        let first = |s: &str| facts(s).first;
        assert_eq!(first("begin"), Kind::Begin);
        assert_eq!(first("START TRANSACTION READ ONLY"), Kind::Begin);
        for (sql, tag, set) in [
            ("BEGIN", "BEGIN", None),
            ("begin work;", "BEGIN", None),
            (
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "START TRANSACTION",
                Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            ),
            (
                "/* c */ begin isolation level repeatable read, read only;",
                "BEGIN",
                Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ , READ ONLY"),
            ),
            (
                "BEGIN TRANSACTION -- x\n DEFERRABLE",
                "BEGIN",
                Some("SET TRANSACTION DEFERRABLE"),
            ),
        ] {
            assert_eq!(first(sql), Kind::Begin, "{sql}");
            assert_eq!(
                begin_parts(sql.as_bytes(), true),
                (tag, set.map(String::from)),
                "{sql}"
            );
            assert_eq!(
                begin_has_modes(sql.as_bytes(), true),
                set.is_some(),
                "{sql}"
            );
        }
        assert_eq!(
            first("BEGIN ISOLATION LEVEL REPEATABLE READ, READ WRITE"),
            Kind::Begin
        );
        assert_eq!(first("COMMIT"), Kind::Commit { chain: false });
        assert_eq!(first("end work"), Kind::Commit { chain: false });
        assert_eq!(first("COMMIT AND CHAIN"), Kind::Commit { chain: true });
        assert_eq!(first("COMMIT AND NO CHAIN"), Kind::Commit { chain: false });
        assert_eq!(first("abort"), Kind::Rollback { chain: false });
        assert_eq!(first("ROLLBACK TO SAVEPOINT a"), Kind::TxScoped("ROLLBACK"));
        for (sql, op) in [
            ("SAVEPOINT A", Some(SavepointOp::Savepoint("a".into()))),
            (
                "savepoint \"A b\";",
                Some(SavepointOp::Savepoint("A b".into())),
            ),
            (
                "RELEASE SAVEPOINT x",
                Some(SavepointOp::Release("x".into())),
            ),
            ("release x", Some(SavepointOp::Release("x".into()))),
            ("ROLLBACK TO x", Some(SavepointOp::RollbackTo("x".into()))),
            (
                "ROLLBACK WORK TO SAVEPOINT /* c */ X",
                Some(SavepointOp::RollbackTo("x".into())),
            ),
            ("ROLLBACK", None),
            ("SAVEPOINT a; SELECT 1", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(savepoint_op(sql.as_bytes(), true), op, "{sql}");
        }
        assert_eq!(first("ROLLBACK WORK TO a"), Kind::TxScoped("ROLLBACK"));
        assert_eq!(first("ROLLBACK PREPARED 'g'"), Kind::Other);
        assert_eq!(
            first("SET LOCAL statement_timeout = 1"),
            Kind::TxScoped("SET")
        );
        assert_eq!(
            first("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Kind::TxScoped("SET")
        );
        assert_eq!(
            first("SET CONSTRAINTS ALL DEFERRED"),
            Kind::TxScoped("SET CONSTRAINTS")
        );
        assert_eq!(facts("BEGIN; SELECT 1").count, 2);
    }

    #[test]
    fn tenant_set_statements() {
        let f = facts("SET tenant_id = 42");
        assert_eq!(f.first, Kind::SetTenant { local: false });
        assert_eq!(f.set_value.unwrap().as_str(), "42");
        assert!(f.mentions.is_empty());
        let f = facts("set local TENANT_ID to 'acme';");
        assert_eq!(f.first, Kind::SetTenant { local: true });
        assert_eq!(f.set_value.unwrap().as_str(), "acme");
        assert_eq!(
            facts("SET tenant_id = Acme").set_value.unwrap().as_str(),
            "acme"
        );
        // Numbers as Postgres keeps them (probe W): an int4 as its decimal
        // text, anything else as written.
        for (sql, want) in [
            ("SET tenant_id = 042", "42"),
            ("SET tenant_id = -042", "-42"),
            ("SET tenant_id = +42", "42"),
            ("SET tenant_id = 0000000000000000000042", "42"),
            ("SET tenant_id = 042.0", "042.0"),
            ("SET tenant_id = 09999999999", "09999999999"),
        ] {
            assert_eq!(
                facts(sql)
                    .set_value
                    .map(|k| k.as_str().to_string())
                    .as_deref(),
                Some(want),
                "{sql}"
            );
        }
        assert_eq!(facts("RESET tenant_id").first, Kind::ResetTenant);
        assert_eq!(facts("SET tenant_id TO DEFAULT").first, Kind::ResetTenant);
        for bad in [
            "SET tenant_id = 1, 2",
            "SET tenant_id",
            "SET tenant_id = ''",
            "SET tenant_id = $1",
        ] {
            assert_eq!(
                facts(bad).violation,
                Some(Violation::InvalidTenant),
                "{bad}"
            );
        }
        assert_eq!(
            facts("SET tenant_id = 1; SELECT 1").violation,
            Some(Violation::TenantSetInMulti)
        );
        assert_eq!(
            facts("SELECT 1; RESET tenant_id").violation,
            Some(Violation::TenantSetInMulti)
        );
        // Other keys and settings are plain SETs.
        assert_eq!(facts("SET other_tenant_id = 1").first, Kind::Set);
        let mut f = Facts::default();
        analyze(b"SET app.tenant_id = 3", b"app.tenant_id", true, &mut f);
        assert_eq!(f.set_value.unwrap().as_str(), "3");
        analyze(b"SET app.tenant_id = 3", b"tenant_id", true, &mut f);
        assert_eq!(f.first, Kind::Set);
        assert_eq!(f.custom_settings, vec!["app.tenant_id".to_string()]);
        // Without routing, nothing is a tenant SET.
        analyze(b"SET tenant_id = 3", b"", true, &mut f);
        assert_eq!(f.first, Kind::Set);
    }

    #[test]
    fn every_mention_and_parameter() {
        let f = facts("INSERT INTO t (tenant_id, a) VALUES ($1, $2), ($3, $4)");
        assert_eq!(f.params, vec![1, 3]);
        let f = facts("SELECT * FROM t WHERE tenant_id = $1 OR tenant_id = $2");
        assert_eq!(f.params, vec![1, 2]);
        let f = facts("SELECT * FROM t WHERE tenant_id IN (1, '2', $3) AND x = 1");
        assert_eq!(keys(&f), vec!["1", "2"]);
        assert_eq!(f.params, vec![3]);
        // A list with an element not read: the unit is refused (probe QQ).
        let f = facts("SELECT * FROM t WHERE tenant_id IN (1, f(2))");
        assert_eq!(f.violation, Some(Violation::UnreadableTenant));
        let f = facts("INSERT INTO t (tenant_id, a) VALUES ($1::numeric, 'x')");
        assert_eq!(f.violation, Some(Violation::UnreadableTenant));
        assert!(f.params.is_empty());
        // A SET list's values: written, checked apart (probe CX F8, F9).
        let f = facts("UPDATE t SET tenant_id = o.tenant_id FROM o WHERE t.id = o.id");
        assert_eq!(f.violation, Some(Violation::UnreadableWritten));
        let f = facts("UPDATE t SET tenant_id = $1, a = $2 WHERE tenant_id = $3");
        assert_eq!(
            (f.params.clone(), f.written_params.clone()),
            (vec![1, 3], vec![1])
        );
        let f = facts("UPDATE t SET tenant_id = $1 WHERE tenant_id = $1");
        assert!(f.written_params.is_empty(), "{:?}", f.written_params);
        let f =
            facts("/* tenant_id=9 */ SELECT 1 WHERE tenant_id = 1; SELECT 2 WHERE 3 = tenant_id");
        assert_eq!(keys(&f), vec!["9", "1", "3"]);
        assert_eq!(f.mentions[0].source, Source::Comment);
        assert_eq!(
            facts("SELECT * FROM t WHERE tenant_id = ''").violation,
            Some(Violation::InvalidTenant)
        );
    }

    #[test]
    fn standard_conforming_strings_off_changes_the_lexing() {
        // With backslash escapes, `'\'` does not end the literal: the phantom
        // predicate is inside it and the real one names 2.
        let sql = br"SELECT * FROM t WHERE a = '\' AND tenant_id = 1 --' AND tenant_id = 2";
        let mut f = Facts::default();
        analyze(sql, KEY, false, &mut f);
        assert_eq!(keys(&f), vec!["2"]);
        analyze(sql, KEY, true, &mut f);
        assert_eq!(keys(&f), vec!["1"]);
    }

    /// Postgres joins string literals across a newline and reads the joined
    /// part in the first one's escape mode (probe I: a lexer that read it as
    /// a plain literal saw one SELECT where Postgres ran two SETs, and missed
    /// the tenant Postgres compared with).
    #[test]
    fn strings_joined_across_a_newline_hide_nothing() {
        let hidden = "SELECT 1, E'x'\n'\\' ';SET ROLE other;SET app.s = 'v';--'";
        let f = facts(hidden);
        assert_eq!(f.count, 3, "{f:?}");
        assert!(f.effects.any(Effects::SETTINGS), "{f:?}");
        // The predicate Postgres sees names 2; the one after the quote is
        // inside the literal.
        let sql = "SELECT * FROM t WHERE a = E'x'\n  -- joint\n'\\' AND tenant_id = 1 --' AND tenant_id = 2";
        assert_eq!(keys(&facts(sql)), vec!["2"]);
        // Not joined: no newline, or a block comment between.
        let sql = "SELECT * FROM t WHERE a = E'x' '\\' AND tenant_id = 1 --' AND tenant_id = 2";
        assert_eq!(keys(&facts(sql)), vec!["1"]);
        let sql =
            "SELECT * FROM t WHERE a = E'x'/*\n*/'\\' AND tenant_id = 1 --' AND tenant_id = 2";
        assert_eq!(keys(&facts(sql)), vec!["1"]);
        // A B'' or X'' literal goes on without escapes, whatever the setting.
        let sql = br"SELECT * FROM t WHERE a = B'1'
'' AND tenant_id = 1 --' AND tenant_id = 2";
        let mut f = Facts::default();
        analyze(sql, KEY, false, &mut f);
        assert_eq!(keys(&f), vec!["1"]);
    }

    #[test]
    fn a_search_path_that_may_put_a_schema_ahead_of_pg_catalog_is_noted() {
        let path = |s: &str| facts(s).effects.any(Effects::TYPE_PATH);
        for sql in [
            "SET search_path = evil, pg_catalog",
            "SET search_path TO evil, PG_CATALOG, public",
            "SET SESSION search_path = \"$user\", pg_catalog",
            "SET LOCAL search_path = pg_temp, 'pg_catalog'",
            "SET \"search_path\" = evil, \"pg_catalog\"",
            "SET search_path = evil, E'pg\\x5fcatalog'",
            "SET search_path = evil, pg_catalog.x",
            "SET search_path FROM CURRENT",
            "SELECT set_config('search_path', 'evil, pg_catalog', false)",
            "SELECT set_config('SEARCH_PATH', 'evil,pg_catalog', true)",
            "SELECT set_config('search_path', $1, false)",
            "SELECT set_config('search_path', 'evil, ' || 'pg_catalog', false)",
            "SELECT set_config('search_path', E'evil, pg\\x5fcatalog', false)",
            "UPDATE pg_settings SET setting = 'evil, pg_catalog' WHERE name = 'search_path'",
            "SELECT 1; SET search_path = evil, pg_catalog",
        ] {
            assert!(path(sql), "{sql}");
        }
        for sql in [
            "SET search_path = public",
            "SET search_path TO \"$user\", public",
            "SET search_path = pg_catalog, evil",
            "SET LOCAL search_path = 'pg_catalog', evil",
            "SET search_path = evil, 'evil, pg_catalog'",
            "SET search_path = evil, \"PG_CATALOG\"",
            "SET search_path TO DEFAULT",
            "SET work_mem = 'pg_catalog'",
            "SELECT set_config('search_path', 'public, evil', false)",
            "SELECT set_config('search_path', 'pg_catalog, evil', false)",
            "SELECT set_config('work_mem', 'evil, pg_catalog', false)",
            "RESET search_path",
        ] {
            assert!(!path(sql), "{sql}");
        }
        // An SQL EXECUTE may run a cast by name (analyzed again after the
        // path changed); a trigger's EXECUTE FUNCTION and GRANT EXECUTE do not.
        for (sql, executes) in [
            ("EXECUTE ins", true),
            ("EXECUTE ins ('bravo')", true),
            ("EXPLAIN ANALYZE EXECUTE ins", true),
            ("CREATE TABLE t AS EXECUTE ins", true),
            (
                "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()",
                false,
            ),
            (
                "CREATE TRIGGER t BEFORE UPDATE ON x EXECUTE PROCEDURE f()",
                false,
            ),
            ("GRANT EXECUTE ON FUNCTION f() TO r", false),
        ] {
            assert_eq!(facts(sql).casts_by_name, executes, "{sql}");
        }
        // A setting of a name the text does not spell out may be the path.
        assert!(facts("SELECT set_config($1, $2, false)")
            .effects
            .may_create_types());
        assert!(Effects::TYPE_PATH.resets().is_empty());
    }

    #[test]
    fn a_pools_reset_on_release_is_tenant_free_and_nothing_like_it_is() {
        let reset = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
        let f = facts(reset);
        assert!(f.tenant_free && f.unlisten_all && f.count == 4, "{f:?}");
        let old = "DO $$\n BEGIN\n PERFORM * FROM pg_listening_channels() LIMIT 1;\n \
                   IF FOUND THEN\n UNLISTEN *;\n END IF;\n END;\n $$;";
        let f = facts(old);
        assert!(f.tenant_free && f.unlisten_all, "{f:?}");
        for sql in [
            "SELECT pg_advisory_unlock_all() FROM accounts",
            "SELECT pg_advisory_unlock_all(), name FROM accounts",
            "SELECT pg_advisory_unlock_all() FROM pg_class",
            "CLOSE ALL c",
            "CLOSE c",
            "DO $$ BEGIN PERFORM * FROM pg_listening_channels() LIMIT 1; DELETE FROM accounts; END; $$",
            "DO $$ BEGIN UNLISTEN *; END; $$",
        ] {
            assert!(!facts(sql).tenant_free, "{sql}");
        }
        assert!(!facts("UNLISTEN ch").unlisten_all);
    }

    #[test]
    fn reserved_statement_names() {
        for sql in [
            "PREPARE sb_0123 AS SELECT 1",
            "EXECUTE sb_x",
            "DEALLOCATE sb_x",
            "DEALLOCATE PREPARE \"sb_x\"",
            "SELECT 1; DEALLOCATE SB_x",
            "PREPARE Sb_y (int) AS SELECT $1",
            "EXPLAIN ANALYZE EXECUTE sb_34a04f3c7696122c(42, 'x')",
            "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE \"sb_x\"",
            "CREATE TABLE t AS EXECUTE sb_x",
            "CREATE TEMP TABLE t AS EXECUTE sb_x (1)",
            "EXECUTE U&\"\\0073b_x\"",
            "EXPLAIN EXECUTE U&\"\\0073b_x\"",
            "DEALLOCATE U&\"\\0073b_x\"",
            "PREPARE U&\"\\0073b_x\" AS SELECT 1",
        ] {
            assert_eq!(facts(sql).violation, Some(Violation::ReservedName), "{sql}");
        }
        for sql in [
            "PREPARE p AS SELECT 1",
            "DEALLOCATE ALL",
            "EXECUTE \"SB_x\"",
            "SELECT 'sb_x'",
        ] {
            assert_eq!(facts(sql).violation, None, "{sql}");
        }
    }

    #[test]
    fn effects_are_found() {
        let e = |s: &str| facts(s).effects;
        assert!(e("SET statement_timeout = 1").any(Effects::SETTINGS));
        assert!(e("SET ROLE r").any(Effects::SETTINGS));
        assert!(e("SET SESSION AUTHORIZATION r").any(Effects::SETTINGS));
        assert!(!e("SET LOCAL statement_timeout = 1").any(Effects::SETTINGS));
        assert!(e("SELECT set_config(E'search\\x5fpath', 'x', false)").any(Effects::SETTINGS));
        assert!(e("RESET ALL").any(Effects::SETTINGS));
        assert!(e("CREATE TEMP TABLE x (a int)").any(Effects::TEMP));
        assert!(e("create temporary table x (a int)").any(Effects::TEMP));
        assert!(e("CREATE TABLE pg_temp.x (a int)").any(Effects::TEMP));
        assert!(e("SELECT pg_advisory_lock(1)").any(Effects::ADVISORY));
        assert!(e("SELECT pg_try_advisory_lock_shared(1)").any(Effects::ADVISORY));
        assert!(e("LISTEN x").any(Effects::LISTEN));
        assert!(e("DECLARE c CURSOR WITH HOLD FOR SELECT 1").any(Effects::CURSOR));
        assert!(e("PREPARE p AS SELECT 1").any(Effects::PREPARED));
        assert!(e("SELECT 1; DISCARD ALL").any(Effects::PREPARED));
        assert!(e("DO $$ BEGIN PERFORM 1; END $$").any(Effects::DYNAMIC));
        for sql in [
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "create or replace function f() returns void language plpgsql as $$begin execute 'SET ROLE x'; end$$",
            "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$",
            "CREATE CONSTRAINT TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()",
            "CREATE OR REPLACE RULE r AS ON INSERT TO t DO ALSO NOTIFY c",
            "CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)",
            "CREATE OPERATOR === (function = f, leftarg = int, rightarg = int)",
            "CREATE CAST (int AS text) WITH FUNCTION f(int)",
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
            "SELECT * FROM crosstab('SELECT 1')",
            "SELECT * FROM connectby('t', 'id', 'parent', '1', 0)",
        ] {
            assert!(e(sql).any(Effects::DYNAMIC), "{sql}");
        }
        for sql in [
            "CREATE TEMP TABLE t (f int)",
            "CREATE TABLE function (x int)",
            "SELECT CAST(1 AS int)",
        ] {
            assert!(!e(sql).any(Effects::DYNAMIC), "{sql}");
        }
        assert!(e("SELECT 1").is_empty());
        // Hidden from the token scan, not from the word scan.
        assert!(e("SELECT \"set_config\"('a.b', 'c', false)").any(Effects::SETTINGS));
        assert!(
            e("SELECT query_to_xml('SELECT set_config(''x'',''y'',false)', true, false, '')")
                .any(Effects::SETTINGS)
        );
        assert!(e("SELECT pg_catalog.\"pg_advisory_lock\"(1)").any(Effects::ADVISORY));
        assert!(e("CREATE TABLE \"pg_temp\".t AS SELECT 1").any(Effects::TEMP));
        assert!(e("CREATE TABLE accounts AS SELECT 1").any(Effects::TEMP));
        assert!(e("SELECT 1 AS a INTO t2").any(Effects::TEMP));
        assert!(!e("INSERT INTO t VALUES (1)").any(Effects::TEMP));
        // DDL other than CREATE changes what later texts mean; nothing to reset.
        for sql in [
            "ALTER TABLE t ADD COLUMN c int",
            "drop type pg_temp.mood",
            "DROP TABLE t",
        ] {
            assert!(e(sql).any(Effects::CATALOG), "{sql}");
            assert!(!e(sql).resets().any(Effects::CATALOG), "{sql}");
        }
        assert!(!e("SELECT 1 FROM t").any(Effects::CATALOG));
        assert!(e("SELECT nextval('s')").any(Effects::SEQUENCES));
        assert!(e("SELECT setseed(0.5)").any(Effects::SEED));
        assert_eq!(
            facts("SET app.color = 'red'; SELECT set_config('My.X', 'y', false)").custom_settings,
            vec!["app.color".to_string(), "my.x".to_string()]
        );
        // Names Postgres reads otherwise than the text spells them (cut at 63
        // bytes; converted from the client's encoding) are not read back by
        // name: RESET ALL clears them.
        let long = "x".repeat(64);
        for sql in [
            format!("SET app.{long} = 1"),
            format!("SET \"app.{long}\" = 1"),
            "SET app.\u{e9} = 1".to_string(),
            "SELECT set_config('app.\u{e9}', '1', false)".to_string(),
        ] {
            let f = facts(&sql);
            assert!(f.effects.any(Effects::UNNAMED_SETTINGS), "{sql}");
            assert!(f.custom_settings.is_empty(), "{sql}");
        }
        assert_eq!(
            facts(&format!("SET app.{} = 1", "x".repeat(63))).custom_settings,
            vec![format!("app.{}", "x".repeat(63))]
        );
        assert_eq!(Effects::DYNAMIC.resets(), Effects::ALL);
    }

    #[test]
    fn names_the_text_can_hide_fail_closed() {
        // Probe findings: each of these changed session state that reached
        // the next client on the same server.
        let e = |s: &str| facts(s).effects;
        let dynamic = [
            r#"SELECT U&"set\005fconfig"('role', 'r_other', false)"#,
            r#"SELECT u&"pg\005fadv\0069sory\005flock"(4242)"#,
            r#"SET U&"app".tenant3 = 'x'"#,
            "SELECT set_config(U&'app\\002etenant', 'x', false)",
            "SELECT query_to_xml('SELECT set_'||'config(''search_path'',''x'',false)', true, false, '')",
            "SELECT * FROM ts_stat('SELECT 1')",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT 1')",
        ];
        for sql in dynamic {
            assert!(e(sql).any(Effects::DYNAMIC), "{sql}");
            assert_eq!(e(sql).resets(), Effects::ALL, "{sql}");
        }
        // The view's update rule calls set_config.
        assert!(
            e("UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'")
                .any(Effects::SETTINGS)
        );
        // A name Postgres would accept but the text does not spell out.
        for sql in [
            "SELECT set_config($1, $2, false)",
            "SELECT set_config('app.' || 'tenant', '42', false)",
            "SELECT set_config('app.'\n'tenant', '42', false)",
            "SELECT set_config(name, '1', false) FROM names",
        ] {
            assert!(e(sql).any(Effects::UNNAMED_SETTINGS), "{sql}");
        }
        assert!(!e("SELECT set_config('app.tenant', $1, false)").any(Effects::UNNAMED_SETTINGS));
        let f = facts("SELECT set_config($2, $1, false), set_config($2, 'x', true)");
        assert_eq!(
            (f.setting_params.clone(), f.setting_exprs),
            (vec![2], false)
        );
        let f = facts("SELECT set_config($1, 'x', false), set_config('a.' || $2, 'y', false)");
        assert_eq!((f.setting_params.clone(), f.setting_exprs), (vec![1], true));
        assert!(
            !e("SELECT set_config(E'app\\x2etenant', $1, false)").any(Effects::UNNAMED_SETTINGS)
        );
        // A table created anywhere in a statement may be temporary
        // (search_path may start with pg_temp).
        for sql in [
            "EXPLAIN ANALYZE CREATE TABLE scratch AS SELECT 1",
            "EXPLAIN ANALYZE SELECT 1 INTO scratch",
            "WITH a AS (SELECT 1) SELECT * INTO scratch FROM a",
            "PREPARE p AS SELECT 1 INTO scratch",
        ] {
            assert!(e(sql).any(Effects::TEMP), "{sql}");
        }
        assert!(!e("INSERT /* c */ INTO t SELECT 1").any(Effects::TEMP));
        assert!(!e("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE").any(Effects::TEMP));
        // Column defaults may call nextval.
        for sql in [
            "INSERT INTO t (note) VALUES ('x')",
            "COPY t (note) FROM STDIN",
            "UPDATE t SET id = DEFAULT",
            "MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)",
        ] {
            assert!(e(sql).any(Effects::SEQUENCES), "{sql}");
        }
        assert!(!e("SELECT a FROM t WHERE b = 1").any(Effects::SEQUENCES));
        assert!(e("ALTER TABLE t ADD COLUMN id serial").any(Effects::SEQUENCES));
        // `seed` is in neither pg_settings nor RESET ALL: reseeded instead.
        for sql in [
            "SET seed = 0.5",
            "SET SESSION seed TO 0.5",
            "SELECT set_config('seed', '0.5', false)",
            // Local, it seeds random() for good all the same (re-probe).
            "SET LOCAL seed = 0.5",
            "SET LOCAL \"seed\" TO 0.5",
        ] {
            assert!(e(sql).resets().any(Effects::SEED), "{sql}");
        }
        assert!(!e("SET LOCAL search_path = a").resets().any(Effects::SEED));
        assert!(e("SELECT set_config($1, '0.5', false)")
            .resets()
            .any(Effects::SEED));
        assert!(!e("SET search_path = a").any(Effects::SEED));
        // A custom name that cannot be kept is cleared by RESET ALL.
        let long = format!("SET app.{} = 1", "x".repeat(200));
        assert!(e(&long).any(Effects::UNNAMED_SETTINGS));
        assert!(!e("UPDATE t SET a = a + 1").any(Effects::SEQUENCES));
        // Routed, a Unicode-escaped identifier may be the key itself: refused.
        assert_eq!(
            facts(r#"SELECT * FROM t WHERE U&"tenant\005fid" = 2"#).violation,
            Some(Violation::EscapedIdentifier)
        );
        assert_eq!(facts("SELECT U&'x'").violation, None);
        let mut f = Facts::default();
        analyze(br#"SELECT U&"x" FROM t"#, b"", true, &mut f);
        assert_eq!(f.violation, None, "unrouted databases are not routed");
    }

    #[test]
    fn holdable_statements() {
        assert!(facts("SET LOCAL statement_timeout = '100ms'").holdable);
        assert!(facts("SET work_mem = '7MB'; SAVEPOINT a").holdable);
        assert!(!facts("SHOW work_mem").holdable);
        assert!(!facts("SELECT 1").holdable);
        let mut tags = Vec::new();
        kinds(b"SET a.b = 1;; SAVEPOINT x", KEY, true, |k| {
            tags.push(k.held_tag())
        });
        assert_eq!(
            tags,
            vec![Some(Some("SET")), Some(None), Some(Some("SAVEPOINT"))]
        );
    }

    #[test]
    fn backslashes_under_both_settings() {
        let mut f = Facts::default();
        let mut alt = Facts::default();
        let sql = br"SELECT * FROM t WHERE a = '\' AND tenant_id = 1 --' AND tenant_id = 2";
        analyze_checked(sql, KEY, true, &mut f, &mut alt);
        assert!(f.std_sensitive);
        analyze_checked(
            br"SELECT * FROM t WHERE a LIKE 'x\_%' AND tenant_id = 1",
            KEY,
            true,
            &mut f,
            &mut alt,
        );
        assert!(!f.std_sensitive);
        assert_eq!(keys(&f), vec!["1"]);
    }

    #[test]
    fn begin_with_a_routing_comment_keeps_it() {
        let f = facts("BEGIN /* tenant_id=4 */");
        assert_eq!(f.first, Kind::Begin);
        assert_eq!(keys(&f), vec!["4"]);
    }

    #[test]
    fn reset_all_is_noted() {
        assert!(facts("RESET ALL").resets_all);
        for (sql, after) in [
            ("RESET ALL", false),
            ("DISCARD ALL; UNLISTEN *; SHOW work_mem", false),
            ("RESET ALL; SELECT * FROM t", true),
            ("SELECT * FROM t; RESET ALL", false),
            ("DISCARD ALL; UPDATE t SET x = 1", true),
        ] {
            assert_eq!(facts(sql).work_after_reset, after, "{sql}");
        }
        assert!(facts("DISCARD ALL").discards_all);
        for (sql, chains) in [
            ("COMMIT AND CHAIN", true),
            ("COMMIT; BEGIN", true),
            ("rollback; start transaction read only", true),
            ("BEGIN; COMMIT", false),
            ("COMMIT", false),
        ] {
            assert_eq!(facts(sql).chains, chains, "{sql}");
        }
        assert!(!facts("RESET ALL").discards_all);
        assert!(facts("SELECT 1; DISCARD ALL").resets_all);
        assert!(!facts("RESET work_mem").resets_all);
    }

    #[test]
    fn a_lone_listen_or_unlisten_names_its_channel_as_postgres_does() {
        use ListenOp::*;
        let op = |s: &str| listen_ops(s.as_bytes(), true);
        assert_eq!(op("LISTEN Orders"), Some(vec![Listen("orders".into())]));
        assert_eq!(
            op(" listen \"Orders\" ; "),
            Some(vec![Listen("Orders".into())])
        );
        assert_eq!(op("/* c */ UNLISTEN x;"), Some(vec![Unlisten("x".into())]));
        assert_eq!(op("unlisten *"), Some(vec![UnlistenAll]));
        assert_eq!(op("LISTEN \"a\"\"b\""), Some(vec![Listen("a\"b".into())]));
        let long = "n".repeat(70);
        assert_eq!(
            op(&format!("LISTEN {long}")),
            Some(vec![Listen("n".repeat(63))])
        );
        assert_eq!(
            op("LISTEN a; ; UNLISTEN a; LISTEN b"),
            Some(vec![
                Listen("a".into()),
                Unlisten("a".into()),
                Listen("b".into())
            ])
        );
        // Anything else in the text, or a form Postgres refuses.
        for s in [
            "",
            ";",
            "LISTEN a; SELECT 1",
            "SELECT 1; LISTEN a",
            "SELECT 1",
            "LISTEN",
            "LISTEN *",
            "LISTEN a b",
            "LISTEN 'a'",
            "LISTEN \"\"",
            "NOTIFY a",
        ] {
            assert_eq!(op(s), None, "{s}");
        }
    }
}
