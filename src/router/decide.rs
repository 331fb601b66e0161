//! The routing decision: one pure function, [`decide`], that sees a whole unit of
//! work (every statement of a Query, every Bind value of an extended batch) with
//! the session's routing state and says where it runs, or that it runs nowhere.
//!
//! The session carries decisions out and owns no routing logic of its own: that
//! is what keeps the guarantees below true by construction.
//!
//! * **Every mention counts.** All tenants a unit names (comments, predicates,
//!   IN lists, every INSERT row, every `$n` compared with the key) must live on
//!   one shard, else the unit is refused (0A000) and nothing runs anywhere.
//! * **A lock is absolute.** With `lock_startup_tenant` and a tenant given at
//!   connect, no SET, SET LOCAL, comment, literal or Bind value may name another
//!   tenant (42501), whatever the order of `sources`.
//! * **Tenant-free is an allow-list** ([`Kind::tenant_free`]): a unit without a
//!   tenant runs "anywhere" only if every statement in it is on the list; else it
//!   goes to the transaction's shard, the default shard, or is refused (42P17).
//! * **A transaction stays on its shard** (0A000 for work naming another), and a
//!   transaction shardbouncer failed itself stays failed (25P02) until it ends.

use super::bind::{copy_binary_key, param_array_keys, param_key_as, ParamTypes, ParamValues};
use super::copy::{CopyIn, CopyReader, CopyValue};
use super::key::TenantKey;
use super::scanner::Source;
use super::shardmap::ShardMap;
use super::statement::{
    Facts, Kind, Mention, ParseInput, Violation, MAX_MENTIONS, RESERVED_PREFIX,
};
use crate::sqlstate::{self, PgError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What to do with work that names no tenant and is not tenant-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTenant {
    /// Refuse it (42P17).
    Reject,
    /// Send it to this shard.
    Default(usize),
}

/// The routing configuration of one database, with its loaded shard map.
#[derive(Debug)]
pub struct Routing {
    /// Tenant key name (e.g. `tenant_id`).
    pub key: String,
    /// Enabled sources in precedence order (of `Startup`, `Comment`, `Set`, `Scan`).
    pub sources: Vec<Source>,
    /// Policy for work with no tenant.
    pub no_tenant: NoTenant,
    /// Index of `default_shard`, if configured.
    pub default_shard: Option<usize>,
    /// A tenant given at connect cannot be changed or contradicted.
    pub lock_startup_tenant: bool,
    /// User-name suffix separator carrying the tenant (`app.42`).
    pub user_suffix: Option<String>,
    /// The shard map.
    pub map: Arc<ShardMap>,
    /// Where the map came from (`None`: built in, hashing over the shards).
    pub map_source: Option<PathBuf>,
    /// When the map was loaded.
    pub loaded_at: SystemTime,
}

impl Routing {
    /// Whether `s` is an enabled source.
    pub fn has(&self, s: Source) -> bool {
        // (A SET list's values are found by the scan.)
        let s = if s == Source::Written {
            Source::Scan
        } else {
            s
        };
        self.sources.contains(&s)
    }

    /// Name of shard `i` (for messages).
    pub fn shard_name(&self, i: usize) -> &str {
        self.map
            .shard_names()
            .get(i)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Shard of `key`, or an error naming it.
    pub fn shard_of(&self, key: &TenantKey) -> Result<usize, Refusal> {
        self.map.route(key).map(|r| r.shard).map_err(|e| {
            // A value the key type cannot read (`042` under `auto`, `abc`
            // for a bigint key) is an invalid tenant value, 22023, as the
            // scan's own unreadable values are (probe CW F6: 42P17, which
            // says no tenant was found); one the map has no place for (no
            // range covers it) names a tenant it does not route.
            let code = if self.map.canonical_tenant(key).is_err() {
                sqlstate::INVALID_PARAMETER_VALUE
            } else {
                sqlstate::NO_TENANT
            };
            Refusal::new(code, format!("cannot route {} '{key}': {e}", self.key))
        })
    }

    /// Where tenant-free work runs: the session tenant's shard (the locked one
    /// first), else the default shard, else the first.
    pub fn home_shard(&self, t: &Tenants) -> usize {
        t.locked(self)
            .or(t.local)
            .or(t.set)
            .or(t.startup)
            .and_then(|k| self.map.route(&k).ok().map(|r| r.shard))
            .or(self.default_shard)
            .unwrap_or(0)
    }
}

/// The tenant settings of a session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tenants {
    /// Tenant given at connect (startup parameter, options, user suffix).
    pub startup: Option<TenantKey>,
    /// Tenant set with `SET key = ...` (replaces the startup one unless locked).
    pub set: Option<TenantKey>,
    /// Tenant set with `SET LOCAL key = ...`, until the transaction ends.
    pub local: Option<TenantKey>,
    /// `set` was changed inside the open transaction (by `SET`, `RESET` or
    /// `RESET ALL`): its ROLLBACK undoes the change, as Postgres undoes a
    /// setting, but a `ROLLBACK TO SAVEPOINT` may or may not, so it is refused.
    pub set_in_tx: bool,
}

impl Tenants {
    /// The tenant this session is locked to, if any.
    pub fn locked(&self, r: &Routing) -> Option<TenantKey> {
        if r.lock_startup_tenant && r.has(Source::Startup) {
            self.startup
        } else {
            None
        }
    }
}

/// Where the session's transaction stands, as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// No transaction anywhere (a tenant-free attachment counts as none).
    Idle,
    /// A BEGIN answered locally; no shard yet. `stmts`: statements wait with it.
    Held {
        /// Statements (SET LOCAL, SAVEPOINT, ...) are held with the BEGIN.
        stmts: bool,
    },
    /// A transaction, or an extended batch that did tenant work, is open on this
    /// shard.
    Pinned(usize),
    /// Work in flight on this shard may or may not open a transaction.
    Unsettled(usize),
    /// shardbouncer failed the held transaction itself; no server has it.
    Failed,
}

/// The session's routing state, as [`decide`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    /// Tenant settings.
    pub tenants: &'a Tenants,
    /// Transaction state.
    pub tx: Tx,
    /// The tenant that pinned the transaction, for messages.
    pub pinned_by: Option<(TenantKey, Source)>,
    /// The client's current `standard_conforming_strings`.
    pub std_strings: bool,
    /// The client's encoding may hide ASCII bytes inside its characters
    /// ([`super::ascii_unsafe_encoding`]): only ASCII text and values
    /// read the same to the router as to Postgres.
    pub ascii_only: bool,
    /// The client's encoding is one Postgres converts
    /// ([`super::keys_read_as_sent`]): a tenant key past ASCII is another
    /// tenant to Postgres than to the map, so it is refused.
    pub keys_ascii_only: bool,
    /// A setting that changes how text is lexed may have changed with no
    /// report of it yet: statements held with a locally answered BEGIN, or
    /// run in an extended batch that has no Sync yet (Postgres reports
    /// settings at ReadyForQuery). Text that depends on the lexing is refused.
    pub lexing_unsure: bool,
    /// Session mode: the server is the session's for its whole life, on the
    /// shard `pinned_by` placed it on ([`Tx::Pinned`]), and every later unit
    /// runs there, naming a tenant or not.
    pub owns_server: bool,
    /// The client's transaction failed on its server (ReadyForQuery `E`):
    /// Postgres refuses every statement there but its end, so a `SET` of the
    /// tenant is refused too, not answered here (probe M).
    pub server_failed: bool,
    /// The session's server may hold types or domains of the session's own:
    /// its transaction (in session mode, the session) ran statements that
    /// may create them ([`super::Effects::may_create_types`]); or the
    /// client's `search_path` names `pg_catalog` after another schema
    /// ([`super::search_path`]). A value cast to a type found by name
    /// ([`Facts::casts_by_name`]) is refused then.
    pub types_untrusted: bool,
    /// The batch runs a portal an earlier batch bound to a `ROLLBACK TO
    /// SAVEPOINT` (the batch's items do not show its statement): refused, as
    /// one bound here is, where the transaction changed the SET tenant.
    pub runs_rollback_to: bool,
    /// The held BEGIN ([`Tx::Held`]) gave modes (`ISOLATION LEVEL ..`,
    /// `READ ONLY`) or holds statements (`SET LOCAL`, `SET`): inside the
    /// transaction, a `SHOW` answers other than outside it.
    pub held_state: bool,
    /// Session mode: the client prepared a `COPY .. FROM STDIN` through the
    /// protocol, under its own name on its server. An SQL `EXECUTE` may run
    /// it, as a statement the router reads as no COPY, so its rows would
    /// go unchecked: refused ([`Facts::executes`]; probe CN F2).
    pub server_copies: bool,
}

/// One message of an extended-protocol batch, as routing sees it. `V` gives a
/// Bind's parameter values.
pub enum Item<'a, V> {
    /// A Parse of a text.
    Parse(&'a Facts),
    /// A Parse of a text that declares a parameter of a type of the
    /// database's own ([`ParamTypes::declares_own_type`]): a string literal
    /// Postgres coerces to it is read through that type's input.
    ParseTyped(&'a Facts),
    /// A Bind of a known statement: its facts, parameter types and values, and
    /// the portal it creates.
    Bind(&'a Facts, ParamTypes<'a>, V, &'a [u8]),
    /// A Bind of a statement the client never prepared (its name; "" for the
    /// unnamed statement). The server reports it, as Postgres does (26000),
    /// where the unit goes to a server.
    BindUnknown(&'a [u8]),
    /// An Execute of a portal.
    Execute(&'a [u8]),
    /// A Describe of a portal (libpq's `PQsendQueryParams`, and so pgbench
    /// `-M extended` and psycopg 3, describes each portal before its Execute).
    DescribePortal(&'a [u8]),
    /// A Describe of a statement (reads a statement).
    Other,
    /// A Close of a statement or portal: Postgres runs it in an aborted
    /// transaction too.
    Close,
}

/// No parameter values (the type of [`Unit`]s that carry no batch).
pub struct NoValues;

impl ParamValues for NoValues {
    fn count(&self) -> usize {
        0
    }
    fn format(&self, _: usize) -> i16 {
        0
    }
    fn each(&self, _: &mut dyn FnMut(usize, Option<&[u8]>)) {}
}

/// A unit of work: what [`decide`] routes as a whole.
pub enum Unit<'a, V = NoValues, I = std::iter::Empty<Item<'a, NoValues>>> {
    /// A simple Query, analyzed.
    Query(&'a Facts),
    /// A FunctionCall (no text: the session tenant decides).
    FunctionCall,
    /// Extended-protocol messages up to a Sync or Flush.
    Batch(I, std::marker::PhantomData<V>),
}

impl<'a> Unit<'a> {
    /// A simple Query.
    pub fn query(f: &'a Facts) -> Self {
        Unit::Query(f)
    }

    /// A FunctionCall.
    pub fn function_call() -> Self {
        Unit::FunctionCall
    }
}

impl<'a, V: ParamValues, I: Iterator<Item = Item<'a, V>>> Unit<'a, V, I> {
    /// An extended-protocol batch.
    pub fn batch(items: I) -> Self {
        Unit::Batch(items, std::marker::PhantomData)
    }
}

/// A refusal: SQLSTATE and message (the crate's one error shape).
pub type Refusal = PgError;

/// Work answered by the session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `SET [LOCAL] key = v` (`key: None`: RESET): change the session's tenant.
    SetTenant {
        /// SET LOCAL.
        local: bool,
        /// The new tenant; `None` resets it.
        key: Option<TenantKey>,
    },
    /// `SET LOCAL key` outside a transaction: a warning and no effect, as in
    /// Postgres.
    SetLocalOutsideTx,
    /// An extended batch that prepares, binds or describes `SET key` / `RESET
    /// key` without executing it: answered, and nothing changes.
    SetNotExecuted,
    /// A bare BEGIN with no shard yet: hold it until the tenant is known.
    HoldBegin,
    /// An extended batch that runs a bare BEGIN, then `SET [LOCAL] key = v`
    /// (PgJDBC with autocommit off sends a transaction's first statement so):
    /// hold the BEGIN, then change the tenant inside it.
    BeginThenSetTenant {
        /// SET LOCAL.
        local: bool,
        /// The new tenant; `None` resets it.
        key: Option<TenantKey>,
    },
    /// An extended batch that starts with a bare BEGIN (its Parse, Bind and
    /// Execute, nothing before) and executes nothing else: hold the BEGIN,
    /// then decide the rest of the batch again inside the held transaction.
    /// PgJDBC with autocommit off sends its BEGIN along with the Parse and
    /// Describe of a batch's statement, whose tenant only the later Binds
    /// give; run as one, the BEGIN pinned the transaction to whichever shard
    /// served the Describe.
    BeginThenRest,
    /// BEGIN inside a held transaction: Postgres's warning, nothing changes.
    BeginAgain,
    /// Statements that wait with the held BEGIN and are replayed inside it.
    Hold,
    /// An extended batch of Closes (and Flush, Sync) in a held transaction
    /// shardbouncer failed: each answered CloseComplete, as Postgres closes
    /// statements and portals in an aborted transaction.
    CloseOnly,
    /// `ROLLBACK TO` a savepoint in a held transaction shardbouncer failed:
    /// held again as it stood at that savepoint, if it holds it.
    RollbackToHeld,
    /// COMMIT or ROLLBACK of a transaction that never reached a server (answered
    /// `ROLLBACK` when the transaction had failed, as Postgres does).
    EndHeld {
        /// COMMIT (else ROLLBACK).
        commit: bool,
    },
}

/// Where a unit of work goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run on `shard`, which the work needs (it pins the transaction).
    Shard {
        /// Shard index.
        shard: usize,
        /// The tenant, when one was named (else the transaction's or the
        /// default shard was used).
        tenant: Option<(TenantKey, Source)>,
    },
    /// Every statement is tenant-free: any shard will do; pins nothing.
    TenantFree,
    /// Undecidable until the work in flight settles ([`Tx::Unsettled`]).
    Wait,
    /// Answered by the session.
    Local(Local),
    /// Refused; nothing runs.
    Refuse(Refusal),
}

/// Decide where `unit` runs. `scratch` is a reusable buffer for the unit's
/// tenant mentions (the function is pure; the buffer only saves allocations).
pub fn decide<'a, V: ParamValues, I: Iterator<Item = Item<'a, V>>>(
    r: &Routing,
    s: &SessionView<'_>,
    unit: Unit<'a, V, I>,
    scratch: &mut Vec<Mention>,
) -> Decision {
    scratch.clear();
    if let Err(e) = session_still_placed(r, s) {
        return Decision::Refuse(e);
    }
    let res = match unit {
        Unit::Query(f) => query(r, s, f, scratch),
        Unit::FunctionCall => {
            if s.tx == Tx::Failed {
                Err(aborted())
            } else {
                resolve(r, s, scratch, false, false)
            }
        }
        Unit::Batch(_, _) if s.runs_rollback_to && rollback_to_unknown(s) => {
            Err(rollback_to_after_set(r))
        }
        Unit::Batch(items, _) => batch(r, s, items, scratch),
    };
    res.unwrap_or_else(Decision::Refuse)
}

/// A session-mode server stays where the tenant that placed it (by a comment
/// or a predicate as much as at connect) lived then. Once the map in force puts
/// that tenant elsewhere, every unit is refused, tenant-free ones too: an
/// UPDATE naming no tenant would write on the old shard (probe H). Only a new
/// connection follows the move.
fn session_still_placed(r: &Routing, s: &SessionView<'_>) -> Result<(), Refusal> {
    let (true, Tx::Pinned(cur), Some((pin, _))) = (s.owns_server, s.tx, s.pinned_by) else {
        return Ok(());
    };
    let now = r.map.route(&pin).ok().map(|x| x.shard);
    if now == Some(cur) {
        return Ok(());
    }
    Err(Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cross-shard work refused: tenant {} placed this session's server on shard {}, \
             and the map now puts it {}; reconnect",
            pin.as_str(),
            r.shard_name(cur),
            now.map_or("nowhere".to_string(), |i| format!(
                "on shard {}",
                r.shard_name(i)
            )),
        ),
    ))
}

fn query(
    r: &Routing,
    s: &SessionView<'_>,
    f: &Facts,
    scratch: &mut Vec<Mention>,
) -> Result<Decision, Refusal> {
    if s.tx == Tx::Failed {
        // As Postgres: nothing runs in an aborted transaction but its end.
        return match (f.count, f.first) {
            (0, _) if f.mentions.is_empty() => Ok(Decision::TenantFree),
            (1, Kind::Commit { chain: false } | Kind::Rollback { chain: false }) => {
                Ok(Decision::Local(Local::EndHeld { commit: false }))
            }
            // Postgres recovers the transaction to a savepoint; so does the
            // session, to one the held transaction holds (probe M: psycopg 3's
            // and Django's nested blocks failed whole after one refusal).
            (1, Kind::TxScoped("ROLLBACK")) if f.mentions.is_empty() => {
                if rollback_to_unknown(s) {
                    return Err(rollback_to_after_set(r));
                }
                Ok(Decision::Local(Local::RollbackToHeld))
            }
            _ => Err(aborted()),
        };
    }
    if let Some(v) = f.violation {
        return Err(violation(r, v));
    }
    if f.casts_by_name && (s.types_untrusted || f.effects.may_create_types()) {
        return Err(cast_by_name(r));
    }
    if f.executes && s.server_copies {
        return Err(execute_of_copy());
    }
    if f.rollback_to && rollback_to_unknown(s) {
        return Err(rollback_to_after_set(r));
    }
    // (A session-mode server is the session's before and after the COMMIT:
    // the work after it stays there, judged against that shard like the rest.)
    if f.work_after_end && !s.owns_server && (s.tx != Tx::Idle || tenant_ends_with_tx(s.tenants)) {
        return Err(work_after_tx_end(r));
    }
    if f.work_after_reset && tenant_set(s.tenants) {
        return Err(work_after_reset(r));
    }
    if s.ascii_only && f.non_ascii {
        return Err(encoding(r));
    }
    if (f.effects.may_change_lexing() && (f.std_sensitive || (f.non_ascii && f.count > 1)))
        || (s.lexing_unsure && (f.std_sensitive || f.non_ascii))
    {
        // It may change standard_conforming_strings or client_encoding half-way:
        // no single lexing of it can be trusted.
        return Err(ambiguous(r));
    }
    // (After the refusals that do not depend on the transaction.)
    if f.tx_control && matches!(s.tx, Tx::Unsettled(_)) {
        // Pipelined behind work still in flight outside a transaction:
        // judged once it is answered, as if sent then (probe RR: a BEGIN
        // right behind a tenant's autocommit statement went to that
        // statement's server, and the transaction it opened counted as
        // placed by that tenant: tenant-free work in it ran there, and
        // another shard's tenant got 0A000).
        return Ok(Decision::Wait);
    }
    let sets = r.has(Source::Set);
    if f.count == 1 {
        match f.first {
            Kind::SetTenant { local } if sets => return set_tenant(r, s, local, f.set_value),
            Kind::ResetTenant if sets => return set_tenant(r, s, false, None),
            Kind::Begin if f.mentions.is_empty() => match s.tx {
                Tx::Idle => return Ok(Decision::Local(Local::HoldBegin)),
                Tx::Held { .. } => return Ok(Decision::Local(Local::BeginAgain)),
                _ => {}
            },
            Kind::Commit { chain: false } | Kind::Rollback { chain: false } => {
                if let Tx::Held { stmts } = s.tx {
                    let commit = matches!(f.first, Kind::Commit { .. });
                    if !(commit && stmts) {
                        return Ok(Decision::Local(Local::EndHeld { commit }));
                    }
                    // Held statements must take effect: replay them, then
                    // commit, on the home shard, unless the COMMIT names a
                    // tenant (`COMMIT /* tenant_id=.. */`): then on its shard,
                    // decided below like any mention (route fuzz: the home
                    // shard, another tenant's).
                    if !f.mentions.iter().any(|m| r.has(m.source)) {
                        return Ok(Decision::Shard {
                            shard: r.home_shard(s.tenants),
                            tenant: None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if matches!(s.tx, Tx::Held { .. })
        && f.holdable
        && f.count > 0
        && !f.mentions.iter().any(|m| r.has(m.source))
    {
        // (One that names a tenant, `/* tenant_id=2 */ SET LOCAL ..`, places
        // the transaction, as a BEGIN with that comment does.)
        return Ok(Decision::Local(Local::Hold));
    }
    for m in &f.mentions {
        if r.has(m.source) {
            push_mention(scratch, *m);
        }
    }
    // With the SET source off, `SET tenant_id = ..` is an ordinary setting.
    let plain_set =
        !sets && f.count == 1 && matches!(f.first, Kind::SetTenant { .. } | Kind::ResetTenant);
    // Tenant-free work runs outside a held BEGIN, but transaction control
    // there would open, end or mark a transaction the client is not in: it
    // runs inside, on the shard the transaction then belongs to.
    // So does a `SET` or `RESET` among them: outside, it would outlive the
    // transaction's ROLLBACK (probe AC: `SET work_mem ..; SHOW work_mem`
    // in a held BEGIN kept the setting after ROLLBACK).
    let inside = matches!(s.tx, Tx::Held { .. }) && (f.tx_control || sets_setting(f));
    // Only tenant-free transaction control may take the home shard for want
    // of a tenant: work that needs one follows `no_tenant` (probe: `UPDATE ..;
    // COMMIT` inside a held BEGIN, no tenant anywhere, ran on the home shard
    // under `no_tenant = "reject"` and rewrote every tenant's rows there).
    let free = free_here(f, s.types_untrusted) || plain_set;
    let d = resolve(r, s, scratch, free && !inside, inside && free);
    if f.shows {
        return show_in_held(r, s, d);
    }
    d
}

/// Whether the text is tenant-free for this session. A catalog read that
/// names a relation, function or type without its schema is not while the
/// session may have one of that name ahead of `pg_catalog`'s (its own
/// types, or a `search_path` naming `pg_catalog` after another schema):
/// what it reads would be another schema's, not the catalog.
/// `untrusted`: the session's types are ([`SessionView::types_untrusted`]),
/// or an earlier message of the batch may have created one; the text's own
/// statements count too.
fn free_here(f: &Facts, untrusted: bool) -> bool {
    f.tenant_free && !(f.catalog_by_name && (untrusted || f.effects.may_create_types()))
}

/// Whether a Bind gives a parameter of a type of the database's own
/// (an OID past Postgres's built-in ones): its input function, or a
/// domain's `CHECK`, may run the application's code, which may read a
/// tenant's rows, so the statement is not tenant-free.
fn user_typed(types: &ParamTypes<'_>, count: usize) -> bool {
    (0..count).any(|i| types.get(i) >= super::bind::FIRST_NORMAL_OID)
}

/// The text changes a session setting (`SET`, `RESET`, `RESET ALL`): a
/// change a ROLLBACK undoes, so it runs inside a held BEGIN.
fn sets_setting(f: &Facts) -> bool {
    f.effects.any(super::Effects::SETTINGS)
}

/// A `SHOW` that would run outside a held BEGIN whose modes or held
/// statements change what it answers there is refused (probe YY: after
/// `BEGIN ISOLATION LEVEL SERIALIZABLE`, `SHOW transaction_isolation`
/// answered `read committed`, and after `SET LOCAL work_mem`, the
/// session's value). One the session's tenant or a comment places runs
/// inside the transaction, after its BEGIN and held statements.
fn show_in_held(
    r: &Routing,
    s: &SessionView<'_>,
    d: Result<Decision, Refusal>,
) -> Result<Decision, Refusal> {
    match d {
        Ok(Decision::TenantFree) if s.held_state && matches!(s.tx, Tx::Held { .. }) => {
            Err(Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "SHOW inside a transaction no {k} has placed yet, after its BEGIN's modes or a SET, would not see them: name the {k} first (SET {k}, a routing comment), or SHOW before them",
                    k = r.key
                ),
            ))
        }
        d => d,
    }
}

/// A batch in a transaction shardbouncer failed itself (no server has it).
/// As in Postgres, nothing runs there but the transaction's end. A batch that
/// only ends it is answered locally, as the Query would be: the Parse, Bind and
/// one Execute of a `COMMIT` or `ROLLBACK`, with any Describe or Close (PgJDBC's
/// `rollback()` after an error). Every other Parse, Bind or Execute gets 25P02,
/// as Postgres answers it. Until this was allowed, such a client could never
/// leave the failed transaction. A batch of Sync or Flush alone has no items:
/// fine.
fn failed_batch<'a, V: ParamValues>(
    r: &Routing,
    s: &SessionView<'_>,
    items: impl Iterator<Item = Item<'a, V>>,
) -> Result<Decision, Refusal> {
    let is_end = |f: &Facts| {
        f.count == 1
            && f.mentions.is_empty()
            && matches!(
                f.first,
                Kind::Commit { chain: false } | Kind::Rollback { chain: false }
            )
    };
    // `ROLLBACK TO` a savepoint recovers the transaction, as in a Query
    // (re-probe P: PgJDBC's `rollback(savepoint)` got 25P02).
    let is_rollback_to =
        |f: &Facts| f.count == 1 && f.mentions.is_empty() && f.first == Kind::TxScoped("ROLLBACK");
    // The portal bound to an end (`true`) or a ROLLBACK TO (`false`).
    let mut end_portal: Option<(&[u8], bool)> = None;
    let mut executes = 0usize;
    let mut any = false;
    let (mut closes, mut n_items) = (0usize, 0usize);
    for item in items {
        any = true;
        n_items += 1;
        match item {
            Item::Parse(f) if is_end(f) || is_rollback_to(f) => {}
            Item::Bind(f, _, _, portal) if is_end(f) => end_portal = Some((portal, true)),
            Item::Bind(f, _, _, portal) if is_rollback_to(f) => end_portal = Some((portal, false)),
            Item::Execute(p) if end_portal.is_some_and(|e| e.0 == p) && executes == 0 => {
                executes += 1
            }
            Item::Other | Item::DescribePortal(_) => {}
            Item::Close => closes += 1,
            _ => return Err(aborted()),
        }
    }
    if any && closes == n_items {
        // Closes alone are answered, as Postgres answers them there (probe
        // R: refused with an error, they left PgJDBC's autosave waiting for
        // a ReadyForQuery that never came).
        return Ok(Decision::Local(Local::CloseOnly));
    }
    match (any, executes) {
        (_, 1) if end_portal.is_some_and(|e| !e.1) => {
            if rollback_to_unknown(s) {
                return Err(rollback_to_after_set(r));
            }
            Ok(Decision::Local(Local::RollbackToHeld))
        }
        (_, 1) => Ok(Decision::Local(Local::EndHeld { commit: false })),
        // Parses and Binds of the end alone would change nothing: refused as
        // before, so the transaction's state is never in doubt.
        (true, _) => Err(aborted()),
        (false, _) => Ok(Decision::TenantFree),
    }
}

fn batch<'a, V: ParamValues>(
    r: &Routing,
    s: &SessionView<'_>,
    items: impl Iterator<Item = Item<'a, V>>,
    scratch: &mut Vec<Mention>,
) -> Result<Decision, Refusal> {
    let mut executes = 0usize;
    let mut all_free = true;
    // Every Bind of the batch binds a tenant-free statement.
    let mut binds_free = true;
    let mut ends_tx = false;
    let mut tx_control = false;
    let mut shows = false;
    let mut settings = false;
    // Portals bound in this batch and whether their statement is tenant-free; an
    // Execute of any other portal (one bound earlier) is not known to be.
    let mut portals: [(&[u8], bool); 8] = [(&[], false); 8];
    let mut n_portals = 0usize;
    // `SET key` / `RESET key` through Parse/Bind/Execute (PgJDBC sends every
    // statement so): answered by the session as in a simple Query, provided the
    // batch holds nothing else. Portals bound here by one, with what it sets.
    let sets = r.has(Source::Set);
    let is_set = |f: &Facts| {
        sets && f.count == 1 && matches!(f.first, Kind::SetTenant { .. } | Kind::ResetTenant)
    };
    let set_of = |f: &Facts| match f.first {
        Kind::SetTenant { local } => (local, f.set_value),
        _ => (false, None),
    };
    let (mut set_msgs, mut other_msgs) = (0usize, 0usize);
    type SetPortal<'p> = (&'p [u8], Option<(bool, Option<TenantKey>)>);
    let mut set_portals: [SetPortal<'_>; 4] = [(&[], None); 4];
    let mut n_set_portals = 0usize;
    let mut set_execs: Option<(bool, Option<TenantKey>)> = None;
    let mut n_set_execs = 0usize;
    // A bare BEGIN ahead of the SET (its Parse, Bind and one Execute): counted
    // in the totals above too, and set apart only for that form.
    let is_begin = |f: &Facts| f.is_only(Kind::Begin);
    let (mut begin_msgs, mut begin_execs, mut begin_after_set) = (0usize, 0usize, false);
    let mut begin_portal: Option<&[u8]> = None;
    // The batch opens with the BEGIN's own messages, up to its Execute
    // (`Some(false)` while they last, `Some(true)` once it executed first).
    let mut begin_first: Option<bool> = Some(false);
    let mut lexing = Lexing {
        types: s.types_untrusted,
        changed: s.lexing_unsure,
        copies: false,
    };
    // A statement that ends the transaction was bound earlier in the batch.
    let mut ended = false;
    // A statement that resets the SET tenant was bound earlier in the batch.
    let mut reset = false;
    // Binds in the batch, and the portal of the one that binds a statement a
    // held BEGIN can hold (`SET LOCAL`, `SAVEPOINT`, ...: one statement, no
    // parameters, no tenant), and how often that portal runs.
    let (mut binds, mut hold_execs) = (0usize, 0usize);
    let mut hold_portal: Option<&[u8]> = None;
    // The first statement a Bind names that the client does not have.
    let mut unknown: Option<&[u8]> = None;
    if s.tx == Tx::Failed {
        return failed_batch(r, s, items);
    }
    for item in items {
        begin_first = match (begin_first, &item) {
            // A BEGIN that names a tenant (a comment) is routed by it, as in a Query.
            (Some(false), Item::Parse(f) | Item::Bind(f, ..))
                if is_begin(f) && f.mentions.is_empty() =>
            {
                Some(false)
            }
            // Its portal described first (pgbench -M extended, psycopg 3).
            (Some(false), Item::DescribePortal(p)) if begin_portal == Some(*p) => Some(false),
            // Statements or portals closed first: PgJDBC closes the ones it
            // no longer needs ahead of its next batch (probe RR: the BEGIN
            // was not held, and the transaction took the first shard).
            (Some(false), Item::Close) => Some(false),
            (Some(false), Item::Execute(p)) if begin_portal == Some(*p) => Some(true),
            (Some(true), _) => Some(true),
            _ => None,
        };
        let own_types = matches!(item, Item::ParseTyped(_));
        match item {
            Item::Parse(f) | Item::ParseTyped(f) => {
                if let Some(v) = f.violation {
                    return Err(violation(r, v));
                }
                lexing.check(r, s, f)?;
                // A Parse reads the text's constants through their types'
                // input, which may be the application's code (a domain's
                // CHECK in an array's input; probe CW F5), as may a built-in
                // type's name where `search_path` is not trusted (CY F2),
                // or a parameter's declared type a literal is coerced to
                // (DI F4): such a Parse needs what its statement needs, as
                // a Bind does.
                let reads_app = (own_types && f.literal)
                    || match f.parse_input {
                        ParseInput::Application => true,
                        ParseInput::ByName => lexing.types,
                        ParseInput::Builtin => false,
                    };
                if reads_app {
                    // (A tenant-free text, a catalog read, with a literal of
                    // the database's own type is not, as at its Bind.)
                    binds_free &= free_here(f, lexing.types) && !(own_types && f.literal);
                }
                if is_set(f) {
                    set_msgs += 1;
                } else {
                    other_msgs += 1;
                    if is_begin(f) {
                        begin_msgs += 1;
                        begin_after_set |= set_msgs > 0;
                    }
                }
            }
            Item::Bind(f, _, _, portal) if is_set(f) => {
                set_msgs += 1;
                if let Some(v) = f.violation {
                    return Err(violation(r, v));
                }
                lexing.check(r, s, f)?;
                if let Some(p) = set_portals[..n_set_portals]
                    .iter_mut()
                    .find(|p| p.0 == portal)
                {
                    p.1 = Some(set_of(f));
                } else if n_set_portals < set_portals.len() {
                    set_portals[n_set_portals] = (portal, Some(set_of(f)));
                    n_set_portals += 1;
                } else {
                    other_msgs += 1; // too many to follow: refused below
                }
                // The portal no longer holds any statement bound earlier.
                if let Some(p) = portals[..n_portals].iter_mut().find(|p| p.0 == portal) {
                    p.1 = false;
                }
            }
            Item::Bind(f, types, values, portal) => {
                other_msgs += 1;
                binds += 1;
                hold_portal = (f.holdable
                    && f.count == 1
                    && !f.mentions.iter().any(|m| r.has(m.source))
                    && values.count() == 0)
                    .then_some(portal);
                if is_begin(f) {
                    begin_msgs += 1;
                    begin_after_set |= set_msgs > 0;
                    begin_portal = Some(portal);
                } else if begin_portal == Some(portal) {
                    begin_portal = None;
                }
                // A portal rebound to another statement is no longer a SET.
                if let Some(p) = set_portals[..n_set_portals]
                    .iter_mut()
                    .find(|p| p.0 == portal)
                {
                    p.1 = None;
                }
                // With the SET source off, `SET key = ..` is an ordinary setting.
                let free = (free_here(f, lexing.types) && !user_typed(&types, values.count()))
                    || (!sets
                        && f.count == 1
                        && matches!(f.first, Kind::SetTenant { .. } | Kind::ResetTenant));
                // Postgres plans the statement at its Bind, folding its
                // immutable calls and estimating with its stable ones, and
                // reads the values through their types' input: the Bind runs
                // code of the application's whether an Execute follows or
                // not (probe CR F3: Parse, Bind and Sync of a statement over
                // `accounts` ran its functions on the first shard).
                binds_free &= free;
                if let Some(p) = portals[..n_portals].iter_mut().find(|p| p.0 == portal) {
                    p.1 = free;
                } else if n_portals < portals.len() {
                    portals[n_portals] = (portal, free);
                    n_portals += 1;
                }
                if let Some(v) = f.violation {
                    return Err(violation(r, v));
                }
                if f.std_sensitive && f.std_strings != s.std_strings {
                    // The server would re-parse it under today's setting, which
                    // gives it another meaning than the one it was routed by.
                    return Err(ambiguous(r));
                }
                lexing.check(r, s, f)?;
                if ended
                    && !free_here(f, lexing.types)
                    && (s.tx != Tx::Idle || tenant_ends_with_tx(s.tenants))
                {
                    return Err(work_after_tx_end(r));
                }
                if (reset || f.work_after_reset)
                    && !free_here(f, lexing.types)
                    && tenant_set(s.tenants)
                {
                    return Err(work_after_reset(r));
                }
                reset |= f.resets_all;
                ended |= f.ends_tx;
                ends_tx |= matches!(f.first, Kind::Commit { .. } | Kind::Rollback { .. });
                tx_control |= f.tx_control;
                settings |= sets_setting(f);
                shows |= f.shows;
                for m in &f.mentions {
                    if r.has(m.source) {
                        push_mention(scratch, *m);
                    }
                }
                if r.has(Source::Scan) && f.has_key_params() {
                    bind_mentions(r, s, f, types, &values, scratch)?;
                }
                if scratch.len() > MAX_MENTIONS {
                    return Err(violation(r, Violation::TooManyMentions));
                }
            }
            Item::BindUnknown(name) if s.owns_server && !name.is_empty() => {
                // Session mode passes the client's names to its server,
                // which may hold one the router has no text for (an SQL
                // PREPARE, or SQL since that freed the name and prepared
                // another): its Bind would run unchecked (probe CQ).
                return Err(unread_statement(name));
            }
            Item::BindUnknown(name) => {
                other_msgs += 1;
                binds += 1;
                unknown = unknown.or(Some(name));
            }
            Item::Other | Item::Close | Item::DescribePortal(_) => {}
            Item::Execute(portal) => {
                if let Some((_, Some(set))) =
                    set_portals[..n_set_portals].iter().find(|p| p.0 == portal)
                {
                    n_set_execs += 1;
                    set_execs = Some(*set);
                    continue;
                }
                executes += 1;
                if hold_portal == Some(portal) {
                    hold_execs += 1;
                }
                if begin_portal == Some(portal) {
                    begin_execs += 1;
                    begin_after_set |= set_msgs > 0;
                }
                all_free &= portals[..n_portals]
                    .iter()
                    .find(|p| p.0 == portal)
                    .is_some_and(|p| p.1);
            }
        }
    }
    if (tx_control || begin_msgs > 0) && matches!(s.tx, Tx::Unsettled(_)) {
        // As for a Query: transaction control pipelined behind work in
        // flight outside a transaction is judged once that is answered.
        return Ok(Decision::Wait);
    }
    if set_msgs > 0 && begin_msgs > 0 {
        // Only BEGIN, run once, then the SET, run once, outside a transaction.
        let only_begin_then_set = begin_msgs == other_msgs
            && begin_execs == 1
            && executes == 1
            && n_set_execs == 1
            && !begin_after_set
            && s.tx == Tx::Idle;
        if let (true, Some((local, key))) = (only_begin_then_set, set_execs) {
            let held = SessionView {
                tx: Tx::Held { stmts: false },
                ..*s
            };
            return match set_tenant(r, &held, local, key)? {
                Decision::Local(Local::SetTenant { local, key }) => {
                    Ok(Decision::Local(Local::BeginThenSetTenant { local, key }))
                }
                other => Ok(other),
            };
        }
    }
    if set_msgs > 0
        && n_set_execs == 0
        && begin_first == Some(true)
        && begin_msgs == other_msgs
        && begin_execs == 1
        && executes == 1
        && !begin_after_set
        && s.tx == Tx::Idle
    {
        // A BEGIN run, then a SET only parsed and described: PgJDBC with
        // server-prepared statements from the first use
        // (`prepareThreshold=-1`) and autocommit off sends the SET's Bind
        // and Execute in the next batch (probe CC: refused). The BEGIN is
        // held; the SET's Parse is answered inside it, and its Execute
        // later is a SET in the held transaction.
        return Ok(Decision::Local(Local::BeginThenRest));
    }
    if set_msgs > 0 {
        if other_msgs > 0 || executes > 0 || n_set_execs > 1 {
            return Err(Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "SET {} through Parse/Bind/Execute must be alone in its batch (up to Sync)",
                    r.key
                ),
            ));
        }
        return match set_execs {
            Some((local, key)) => set_tenant(r, s, local, key),
            None => Ok(Decision::Local(Local::SetNotExecuted)),
        };
    }
    if begin_first == Some(true) && s.tx == Tx::Idle && (executes == 1 || !ends_tx) {
        // The BEGIN runs first: held, it waits for the statement that names
        // the tenant, and the rest of the batch is decided inside it (PgJDBC
        // sends a transaction's BEGIN with its first statement, which may be
        // a SET LOCAL that names none). A batch that also ends the
        // transaction is judged whole, as before: its work after the COMMIT
        // runs outside it, where the rest, decided inside, would refuse it.
        return Ok(Decision::Local(Local::BeginThenRest));
    }
    if matches!(s.tx, Tx::Held { .. }) && binds == 1 && executes == 1 && hold_execs == 1 {
        // One statement a held BEGIN holds, as in a Query: answered here and
        // replayed after the BEGIN on the tenant's shard (a SET LOCAL sent
        // alone through Parse/Bind/Execute pinned the transaction to the
        // default shard).
        return Ok(Decision::Local(Local::Hold));
    }
    // Parse and Describe alone read only the schema, the same on every
    // shard; a Bind runs code (see `binds_free`); what runs is tenant-free
    // only if every executed portal was bound here by a tenant-free
    // statement.
    let tenant_free = binds_free && (executes == 0 || all_free);
    let held = matches!(s.tx, Tx::Held { .. }) && executes > 0;
    let ends_held = held && ends_tx;
    // As for a Query: transaction control never runs outside a held BEGIN.
    let inside = held && (tx_control || settings);
    // (As for a Query: the home shard only for tenant-free transaction control.)
    let d = resolve(
        r,
        s,
        scratch,
        tenant_free && !inside,
        (ends_held || inside) && tenant_free,
    );
    let d = if shows { show_in_held(r, s, d) } else { d };
    match (d, unknown) {
        // No server for want of a tenant, and a Bind that fails wherever it
        // runs: Postgres's answer, which drivers act on (they prepare the
        // statement again), not the tenant's (probe T: 42P17 where the same
        // client with a startup tenant got 26000).
        (Err(e), Some(name)) if e.code == sqlstate::NO_TENANT => Err(unknown_statement(name)),
        (d, _) => d,
    }
}

/// Session mode: a Bind of a name whose text the router does not hold.
fn unread_statement(name: &[u8]) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "prepared statement \"{}\" was not parsed through the protocol on this connection \
             (an SQL PREPARE?): shardbouncer cannot check what its Bind runs; Parse it \
             through the protocol",
            String::from_utf8_lossy(name)
        ),
    )
}

/// Postgres's error for a Bind of a statement that does not exist.
fn unknown_statement(name: &[u8]) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_SQL_STATEMENT_NAME,
        if name.is_empty() {
            "unnamed prepared statement does not exist".to_string()
        } else {
            format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            )
        },
    )
}

/// [`bind_mentions`]'s refusal of a key parameter whose type no one gave and
/// whose other uses may decide it.
const USED_ELSEWHERE: &str = "is used elsewhere in the statement too, and its type, which \
     Postgres takes from its first use, is not known: declare its type in the Parse, or use \
     another parameter there";

/// [`bind_mentions`]'s refusal, under `lock_startup_tenant`, of a key
/// parameter of no known type used in more than one key position.
const USED_TWICE_UNDER_LOCK: &str = "is compared with more than one key column, and its type, \
     which Postgres takes from its first use, is not known (lock_startup_tenant): declare its \
     type in the Parse, or use one parameter per column";

/// Add a tenant mention to the unit's, unless it repeats the last one (as the
/// text's own analysis does): PgJDBC's `reWriteBatchedInserts` binds one
/// tenant's rows 128 to a statement, and 10,000 of its rows got 54001 for
/// one tenant while the same rows as literals were fine (probe).
fn push_mention(scratch: &mut Vec<Mention>, m: Mention) {
    if scratch.last() != Some(&m) {
        scratch.push(m);
    }
}

/// The values of every key parameter of one Bind, read in one pass over it.
fn bind_mentions(
    r: &Routing,
    s: &SessionView<'_>,
    f: &Facts,
    types: ParamTypes<'_>,
    values: &impl ParamValues,
    scratch: &mut Vec<Mention>,
) -> Result<(), Refusal> {
    let bad = |n: usize, why: &str| {
        Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{} parameter ${n} {why}", r.key),
        )
    };
    if let Some(max) = f.max_key_param() {
        if usize::from(max) > values.count() {
            return Err(bad(usize::from(max), "is missing"));
        }
    }
    let mut err = None;
    values.each(&mut |i, v| {
        if err.is_some() {
            return;
        }
        let n = (i + 1) as u16;
        let keyed = f.is_key_param(n);
        if keyed && s.ascii_only && values.format(i) == 0 && !v.unwrap_or_default().is_ascii() {
            // Postgres converts the text from the client's encoding first.
            err = Some(encoding(r));
            return;
        }
        if keyed && types.get(i) == 0 && f.params_elsewhere.binary_search(&n).is_ok() {
            // Its type is Postgres's choice, and may come from another use.
            err = Some(bad(i + 1, USED_ELSEWHERE));
            return;
        }
        if keyed
            && types.get(i) == 0
            && r.lock_startup_tenant
            && f.params_repeated.binary_search(&n).is_ok()
        {
            // Under the lock, not even another table's key column may type
            // it: one of another type (`"char"`, `char(2)`, a temporary
            // table's) reads the value as another tenant (probe Y: a
            // session locked to 'bXYZ' wrote tenant 'b''s row).
            err = Some(bad(i + 1, USED_TWICE_UNDER_LOCK));
            return;
        }
        // Read as the parameter's type, then as a cast reads it (`$1::int`
        // of '042' is 42), for each way the text uses it: as one value or
        // as an array, with or without a cast.
        // A value only a SET list gives the key checks the shard, never
        // picks it.
        let source = if f.written_params.binary_search(&n).is_ok() {
            Source::Written
        } else {
            Source::Scan
        };
        let plain = f.params.binary_search(&n).is_ok().then_some((None, false));
        let array = f
            .array_params
            .binary_search(&n)
            .is_ok()
            .then_some((None, true));
        let convs = f.convs_of(n).iter();
        for (conv, array) in plain
            .into_iter()
            .chain(array)
            .chain(convs.map(|p| (Some(p.1), p.2)))
        {
            if err.is_some() {
                return;
            }
            if !array {
                let key = param_key_as(v, values.format(i), types.get(i), conv);
                match key {
                    Ok(key) => push_mention(scratch, Mention { key, source }),
                    Err(why) => err = Some(bad(i + 1, why)),
                }
                continue;
            }
            let room = MAX_MENTIONS.saturating_sub(scratch.len());
            let mut unread = None;
            let res =
                param_array_keys(
                    v,
                    values.format(i),
                    types.get(i),
                    room,
                    &mut |key| match conv.map_or(Ok(key), |c| c.apply(&key)) {
                        Ok(key) => push_mention(scratch, Mention { key, source }),
                        Err(why) => unread = unread.or(Some(why)),
                    },
                );
            match res.and(unread.map_or(Ok(()), Err)) {
                // Too many values is the unit's limit, as for literals (54001).
                Err(super::bind::TOO_MANY_ELEMENTS) => {
                    err = Some(violation(r, Violation::TooManyMentions))
                }
                Err(why) => err = Some(bad(i + 1, why)),
                Ok(()) => {}
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `SET [LOCAL] key = v` / `RESET key`.
fn set_tenant(
    r: &Routing,
    s: &SessionView<'_>,
    local: bool,
    key: Option<TenantKey>,
) -> Result<Decision, Refusal> {
    if s.server_failed {
        return Err(aborted());
    }
    if let Some(l) = s.tenants.locked(r) {
        if key != Some(l) {
            return Err(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "{} was fixed at connect ('{l}') and lock_startup_tenant is on",
                    r.key
                ),
            ));
        }
    }
    if let Some(k) = &key {
        // An unroutable tenant is refused now, not at its first statement.
        r.shard_of(k)?;
    }
    // A session SET takes effect inside the open transaction too, so it may
    // not name a tenant of another shard there any more than SET LOCAL may:
    // the transaction's own COMMIT would then have nowhere to go.
    match s.tx {
        Tx::Idle if local => Ok(Decision::Local(Local::SetLocalOutsideTx)),
        // Whether it lands inside a transaction (which may undo it) is known
        // only once the work in flight has been answered.
        Tx::Unsettled(_) => Ok(Decision::Wait),
        Tx::Pinned(p) => match key {
            Some(k) if r.shard_of(&k)? != p => Err(cross_tx(r, s, &k, r.shard_of(&k)?, p)),
            _ => Ok(Decision::Local(Local::SetTenant { local, key })),
        },
        _ => Ok(Decision::Local(Local::SetTenant { local, key })),
    }
}

/// Pick the unit's tenant from its mentions and the session, check every
/// mention against it, and place the unit. `inside_held`: the unit must run
/// inside the client's held BEGIN (it ends it, or is transaction control), so
/// with no tenant it goes to the home shard rather than being refused.
fn resolve(
    r: &Routing,
    s: &SessionView<'_>,
    mentions: &[Mention],
    tenant_free: bool,
    inside_held: bool,
) -> Result<Decision, Refusal> {
    let t = s.tenants;
    if let (true, true, Tx::Pinned(_)) = (tenant_free, mentions.is_empty(), s.tx) {
        // Tenant-free work naming no tenant (COMMIT, ROLLBACK, SHOW, ...) runs
        // in the open transaction, on its shard, whichever shard the session's
        // tenant settings point at: ending a transaction never depends on them.
        return Ok(Decision::TenantFree);
    }
    if s.keys_ascii_only
        && (mentions.iter().map(|m| &m.key))
            .chain([&t.startup, &t.set, &t.local].into_iter().flatten())
            .any(|k| !k.as_bytes().is_ascii())
    {
        return Err(key_encoding(r));
    }
    if let Some(l) = t.locked(r) {
        let shard = r.shard_of(&l)?;
        if let Some(m) = mentions.iter().find(|m| m.key != l) {
            let other = r.shard_of(&m.key)?;
            let named = format!("the {}", source_noun(m.source));
            return Err(lock_refusal(r, (&l, shard), (&m.key, other), &named, ""));
        }
        return place(r, s, shard, Some((l, Source::Startup)));
    }
    let mut primary = None;
    for src in &r.sources {
        primary = match src {
            // A SET or SET LOCAL tenant replaces the one given at connect (unless
            // locked: handled above), as a setting replaces its startup value.
            Source::Startup => (t.set.is_none() && t.local.is_none())
                .then_some(t.startup)
                .flatten(),
            Source::Set => t.local.or(t.set),
            Source::Comment | Source::Scan => {
                mentions.iter().find(|m| m.source == *src).map(|m| m.key)
            }
            Source::Default | Source::Written => None,
        }
        .map(|k| (k, *src));
        if primary.is_some() {
            break;
        }
    }
    let Some((key, source)) = primary else {
        if tenant_free {
            return Ok(Decision::TenantFree);
        }
        let decision = match s.tx {
            // The transaction's shard stands in for a tenant only when a
            // tenant placed it. One that tenant-free work opened (`BEGIN; SET
            // ..` as one Query, or a session-mode server first taken for a
            // SET) is on whichever shard that work happened to take: work
            // that needs a tenant there follows `no_tenant` (probe: a SELECT
            // with no tenant read every tenant's rows on the first shard).
            Tx::Pinned(p) if s.pinned_by.is_some() => Ok(Decision::Shard {
                shard: p,
                tenant: None,
            }),
            Tx::Pinned(_) => match r.no_tenant {
                NoTenant::Default(shard) => place(r, s, shard, None),
                NoTenant::Reject => Err(no_tenant(r)),
            },
            Tx::Unsettled(_) => Ok(Decision::Wait),
            _ if inside_held => Ok(Decision::Shard {
                shard: r.home_shard(t),
                tenant: None,
            }),
            _ => match r.no_tenant {
                NoTenant::Default(shard) => Ok(Decision::Shard {
                    shard,
                    tenant: None,
                }),
                NoTenant::Reject => Err(no_tenant(r)),
            },
        };
        // What a SET list writes (the only mentions left: the others would
        // have given a tenant) lives where the work runs.
        if let Ok(Decision::Shard { shard, .. }) = decision {
            all_on(r, mentions, shard, None)?;
        }
        return decision;
    };
    let shard = r.shard_of(&key)?;
    all_on(r, mentions, shard, Some((key, source)))?;
    place(r, s, shard, Some((key, source)))
}

/// Every mention lives on `shard`, the shard of `by` (the unit's tenant) or
/// where the work runs without one: else the cross-shard refusal.
fn all_on(
    r: &Routing,
    mentions: &[Mention],
    shard: usize,
    by: Option<(TenantKey, Source)>,
) -> Result<(), Refusal> {
    for m in mentions {
        if by.is_some_and(|(k, _)| m.key == k) {
            continue;
        }
        let other = r.shard_of(&m.key)?;
        if other != shard {
            let here = match by {
                Some((k, src)) => format!("{} '{k}' ({src}) lives", r.key),
                None => "this work runs".to_string(),
            };
            return Err(Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "cross-shard statement refused: {here} on shard {s1} but {k} '{b}' ({sb}) lives on shard {s2}",
                    k = r.key,
                    s1 = r.shard_name(shard),
                    b = m.key,
                    sb = m.source,
                    s2 = r.shard_name(other),
                ),
            ));
        }
    }
    Ok(())
}

/// Work that needs `shard`, given where the transaction stands.
fn place(
    r: &Routing,
    s: &SessionView<'_>,
    shard: usize,
    tenant: Option<(TenantKey, Source)>,
) -> Result<Decision, Refusal> {
    match s.tx {
        Tx::Pinned(p) if p != shard => {
            let k = tenant.map(|(k, _)| k);
            Err(match k {
                Some(k) => cross_tx(r, s, &k, shard, p),
                None => Refusal::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "cross-shard transaction refused: this work belongs on shard {} but the transaction is pinned to shard {}",
                        r.shard_name(shard),
                        r.shard_name(p)
                    ),
                ),
            })
        }
        Tx::Unsettled(u) if u != shard => Ok(Decision::Wait),
        _ => Ok(Decision::Shard { shard, tenant }),
    }
}

/// The refusal of tenant `key` (on its shard), which `named` names, under
/// the lock to `locked` (on its shard): another shard's is a cross-shard
/// statement (0A000, as without the lock); another tenant on the same
/// shard is still not this connection's tenant (42501).
fn lock_refusal(
    r: &Routing,
    (locked, shard): (&TenantKey, usize),
    (key, other): (&TenantKey, usize),
    named: &str,
    tail: &str,
) -> Refusal {
    let (code, what) = if other != shard {
        (
            sqlstate::FEATURE_NOT_SUPPORTED,
            "cross-shard statement refused",
        )
    } else {
        (sqlstate::INSUFFICIENT_PRIVILEGE, "tenant lock")
    };
    Refusal::new(
        code,
        format!(
            "{what}: {k} is locked to '{locked}' (shard {s1}) for this connection by lock_startup_tenant, but {named} names {k} '{key}' (shard {s2}){tail}",
            k = r.key,
            s1 = r.shard_name(shard),
            s2 = r.shard_name(other),
        ),
    )
}

fn cross_tx(
    r: &Routing,
    s: &SessionView<'_>,
    key: &TenantKey,
    shard: usize,
    pinned: usize,
) -> Refusal {
    let by = match &s.pinned_by {
        Some((t, src)) => format!(" by {} '{t}' ({src})", r.key),
        None => String::new(),
    };
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cross-shard transaction refused: {k} '{key}' lives on shard {s} but this transaction is pinned to shard {p}{by}",
            k = r.key,
            s = r.shard_name(shard),
            p = r.shard_name(pinned),
        ),
    )
}

fn no_tenant(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::NO_TENANT,
        format!(
            "no {k} for this statement, and no_tenant = \"reject\": give it at connect \
             (startup parameter {k} or options=-c{k}=...), in a comment /* {k}=... */, \
             with SET {k} = ..., or in the statement as {k} = <value>",
            k = r.key
        ),
    )
}

/// Within one batch: once a statement that may change how text is lexed has
/// gone by, a later text whose meaning depends on it (a backslash that
/// `standard_conforming_strings` reads two ways, bytes past ASCII that another
/// `client_encoding` reads as other characters) cannot be routed by any one
/// lexing. Postgres parses each Parse when it reaches it, after the Execute
/// before it has run.
#[derive(Default)]
struct Lexing {
    changed: bool,
    /// A type of the session's own may exist (see
    /// [`SessionView::types_untrusted`]): the session's, or an earlier
    /// message of the batch may have created one.
    types: bool,
    /// Session mode: an earlier message of the batch parsed a `COPY .. FROM
    /// STDIN` (see [`SessionView::server_copies`]).
    copies: bool,
}

impl Lexing {
    fn check(&mut self, r: &Routing, s: &SessionView<'_>, f: &Facts) -> Result<(), Refusal> {
        self.types |= f.effects.may_create_types();
        if f.casts_by_name && self.types {
            return Err(cast_by_name(r));
        }
        // (A COPY parsed earlier in the batch is the server's by its EXECUTE.)
        self.copies |= s.owns_server && f.copy != CopyIn::None;
        if f.executes && (s.server_copies || self.copies) {
            return Err(execute_of_copy());
        }
        if f.rollback_to && rollback_to_unknown(s) {
            return Err(rollback_to_after_set(r));
        }
        if s.ascii_only && f.non_ascii {
            return Err(encoding(r));
        }
        if self.changed && (f.std_sensitive || f.non_ascii) {
            return Err(ambiguous(r));
        }
        self.changed |= f.effects.may_change_lexing();
        Ok(())
    }
}

/// The session's tenant is the transaction's own: a `SET LOCAL` one, or a
/// `SET` its ROLLBACK would undo.
fn tenant_ends_with_tx(t: &Tenants) -> bool {
    t.local.is_some() || t.set_in_tx
}

/// Work after a COMMIT or ROLLBACK in the same unit, inside a transaction
/// (or while the session's tenant ends with one): routed as one unit, it
/// would run where the transaction ran, under the tenant that pinned it,
/// which is gone (probes).
fn work_after_tx_end(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route statements after COMMIT or ROLLBACK in the same query or batch \
             inside a transaction: the {k} that placed the transaction ends with it; send them \
             after the transaction has ended",
            k = r.key
        ),
    )
}

/// A `SET` or `SET LOCAL` tenant is in force: `RESET ALL` and `DISCARD ALL`
/// end it.
fn tenant_set(t: &Tenants) -> bool {
    t.set.is_some() || t.local.is_some()
}

/// Work that needs a tenant behind a `RESET ALL` or `DISCARD ALL` in the
/// same Query or batch: the unit is routed as a whole, by the tenant in force
/// before them, but that work runs with the one they leave (probe M: it ran
/// on the shard of the SET tenant the RESET ALL had ended).
fn work_after_reset(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route statements after RESET ALL or DISCARD ALL in the same query or \
             batch while SET {k} is in force: they end it; send them after",
            k = r.key
        ),
    )
}

/// `ROLLBACK TO SAVEPOINT` in a transaction that changed the session's SET
/// tenant: whether it undoes the change depends on where the savepoint was,
/// which shardbouncer does not follow. Refused (the transaction fails, as
/// for any refusal inside it); its ROLLBACK restores the tenant from before.
/// Whether a `ROLLBACK TO SAVEPOINT` would leave the tenant unknown: a `SET`
/// tenant changed in the transaction, or a `SET LOCAL` one while the BEGIN is
/// still held (no shard has the transaction yet to keep it on). Whether it
/// undoes either depends on where the savepoint was (probe: SET LOCAL a,
/// SAVEPOINT, SET LOCAL b, ROLLBACK TO, then work ran by b on b's shard).
fn rollback_to_unknown(s: &SessionView<'_>) -> bool {
    s.tenants.set_in_tx || (s.tenants.local.is_some() && matches!(s.tx, Tx::Held { .. }))
}

fn rollback_to_after_set(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "ROLLBACK TO SAVEPOINT cannot follow SET {k} or RESET {k} in the same transaction, \
             nor SET LOCAL {k} before a statement has placed the transaction \
             (shardbouncer cannot tell whether it undoes it): set {k} before the SAVEPOINT, \
             or outside the transaction",
            k = r.key
        ),
    )
}

/// Text past ASCII under a client encoding that hides ASCII bytes in its
/// characters.
fn encoding(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route text with bytes past ASCII while client_encoding is SJIS, BIG5, GBK, \
             GB18030, UHC or JOHAB: their characters may contain ASCII bytes, so the {} mentions \
             Postgres reads are not the ones shardbouncer sees; use UTF8",
            r.key
        ),
    )
}

/// A tenant key past ASCII under a client encoding Postgres converts.
fn key_encoding(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route a {} with bytes past ASCII while client_encoding is not UTF8: \
             Postgres converts it to another tenant than the shard map names; use UTF8",
            r.key
        ),
    )
}

fn ambiguous(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route a statement whose {} mentions depend on standard_conforming_strings \
             or client_encoding while that setting changes: send the SET on its own, and \
             prepare statements again after changing it",
            r.key
        ),
    )
}

/// A tenant value cast to a type Postgres finds by name, where the session
/// may have a type of that name ahead of `pg_catalog`'s (probe EE: a
/// temporary domain `text AS varchar(1)` wrote tenant `g`'s row, routed as
/// `gamma`, on `gamma`'s shard).
fn cast_by_name(r: &Routing) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "cannot route a {} value cast to text, int2, int4, int8 or uuid (or an EXECUTE of \
             an SQL prepared statement, which may hold one) after this transaction may have \
             created a type (a CREATE, ALTER, DROP or DO), or while search_path may name \
             pg_catalog after another schema: a type of that name there would read it as \
             another tenant; cast to varchar, int, bigint or smallint, or send the value \
             without the cast",
            r.key
        ),
    )
}

fn execute_of_copy() -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "an SQL EXECUTE cannot run in session mode once the client has prepared a COPY FROM \
         STDIN through the protocol: the COPY's rows would not be checked; run the COPY \
         through Bind and Execute, or as a simple Query",
    )
}

fn aborted() -> Refusal {
    Refusal::new(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        sqlstate::ABORTED_MESSAGE.to_string(),
    )
}

/// The refusal of a text for `v` (what [`decide`] answers it).
pub fn violation_refusal(r: &Routing, v: Violation) -> Refusal {
    violation(r, v)
}

fn violation(r: &Routing, v: Violation) -> Refusal {
    match v {
        Violation::ReservedName => Refusal::new(
            sqlstate::RESERVED_NAME,
            format!(
                "prepared statement names starting with \"{RESERVED_PREFIX}\" are reserved by shardbouncer"
            ),
        ),
        Violation::TenantSetInMulti => Refusal::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "SET {} must be sent as a statement of its own, not in a multi-statement query",
                r.key
            ),
        ),
        Violation::InvalidTenant => Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "invalid {} value: tenant keys are 1 to 63 bytes of UTF-8",
                r.key
            ),
        ),
        Violation::UnreadableWritten => Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "cannot read the {k} value this statement writes: an UPDATE's SET list \
                 (ON CONFLICT .. DO UPDATE and MERGE's UPDATE too) or a MERGE's INSERT may \
                 give {k} a literal or parameter (or a CASE of them), NULL, DEFAULT, the \
                 row's own {k} or, in an upsert, EXCLUDED.{k}; another table's column, a \
                 subquery or an expression could write another tenant's key on this shard",
                k = r.key
            ),
        ),
        Violation::UnreadableTenant => Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "cannot read a {} value as Postgres does: in a WHERE, ON or HAVING, the key \
                 computed on and compared with a literal or parameter (in a call, CASE, cast, \
                 parentheses that are an operand, after NOT, in a subquery's select list: \
                 COALESCE(key, 0) = 42, CASE WHEN key = 42 .., NOT key = 42, (SELECT key) = 42), \
                 a comparison of the key compared again (key <> 42 IS FALSE), a value more is \
                 done to (= 1 + 0, = 42 IS TRUE), a number with a fraction or exponent, a bit \
                 string, N'..' or U&'..' literal, a value cast to a type other than int, int2, \
                 int4, int8, integer, bigint, smallint, text, varchar or uuid, a list (IN, \
                 ARRAY, VALUES rows) that mixes plain values with others (DEFAULT, NULL, \
                 expressions), an INSERT's key value built of literals or computed \
                 (VALUES (42 + 0, ..), VALUES (current_setting('app.t')::int, ..): send the \
                 tenant as a literal or parameter), an INSERT .. SELECT whose key is not a \
                 table's key column (another column, constants in a subquery or CTE, a \
                 function's rows, or computed: name the tenant in the key's item, SELECT 42, \
                 .. or SELECT $1, ..), a COLLATE, or an operator other than \
                 pg_catalog's =; compare the key itself with each tenant as a plain literal \
                 or parameter",
                r.key
            ),
        ),
        Violation::UnreadableCopy => Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "cannot read the rows of this COPY .. FROM STDIN, which writes {k}: an \
                 ENCODING option, an option the router does not read, or a second COPY \
                 FROM STDIN in the same Query or batch (send one per Query; FORMAT text, csv \
                 or binary with DELIMITER, NULL, QUOTE, ESCAPE, HEADER, FORCE_NULL or \
                 FORCE_NOT_NULL are read)",
                k = r.key
            ),
        ),
        Violation::EscapedIdentifier => Refusal::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "Unicode-escaped identifiers (U&\"...\") cannot be routed: one could spell {}; write the name plainly",
                r.key
            ),
        ),
        Violation::TooManyMentions => Refusal::new(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!(
                "more than {MAX_MENTIONS} {} values in one unit of work",
                r.key
            ),
        ),
    }
}

/// The rows of a `COPY .. FROM STDIN` running on `shard`, as they come
/// (`data`: one CopyData payload; `None`: the CopyDone): each row's tenant
/// must live on that shard, as every tenant a unit names must ([`decide`]
/// saw the COPY's statement, not its rows), and be the locked tenant
/// under `lock_startup_tenant`; a NULL key names none. `last`: the last
/// tenant let through, which the next row repeats most of the time. The
/// first row refused ends the COPY with the refusal: nothing of it may
/// be written.
pub fn copy_rows(
    r: &Routing,
    s: &SessionView<'_>,
    shard: usize,
    reader: &mut CopyReader,
    data: Option<&[u8]>,
    last: &mut Option<TenantKey>,
) -> Result<(), Refusal> {
    if s.ascii_only && data.is_some_and(|d| !d.is_ascii()) {
        // Postgres splits the rows after converting them: a character of
        // these encodings may end in a byte the reader takes for a
        // delimiter, quote or backslash.
        return Err(encoding(r));
    }
    let key_type = r.map.key_type();
    let mut check = |n: u64, v: CopyValue<'_>| -> Result<(), Refusal> {
        let bad = |why: &str| {
            Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("COPY row {n}: the {} value {why}", r.key),
            )
        };
        let key = match v {
            CopyValue::Null => return Ok(()),
            CopyValue::Unreadable(why) => return Err(bad(why)),
            CopyValue::Text(t) => {
                TenantKey::new(t).ok_or_else(|| bad("is not 1 to 63 bytes of UTF-8"))?
            }
            CopyValue::Binary(b) => copy_binary_key(key_type, b).map_err(bad)?,
        };
        if *last == Some(key) {
            return Ok(());
        }
        if s.keys_ascii_only && !key.as_bytes().is_ascii() {
            return Err(key_encoding(r));
        }
        let other = r.shard_of(&key)?;
        if let Some(l) = s.tenants.locked(r) {
            if key != l {
                let named = format!("COPY row {n}");
                return Err(lock_refusal(
                    r,
                    (&l, shard),
                    (&key, other),
                    &named,
                    "; the COPY wrote nothing",
                ));
            }
        }
        if other != shard {
            return Err(Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "cross-shard COPY refused: row {n} names {k} '{key}', which lives on shard \
                     {s2}, but this COPY runs on shard {s1}; the COPY wrote nothing (copy each \
                     shard's tenants in a COPY of their own, naming the tenant at connect, in a \
                     routing comment or with SET {k})",
                    k = r.key,
                    s1 = r.shard_name(shard),
                    s2 = r.shard_name(other),
                ),
            ));
        }
        *last = Some(key);
        Ok(())
    };
    match data {
        Some(d) => reader.feed(d, &mut check),
        None => reader.finish(&mut check),
    }
}

fn source_noun(s: Source) -> &'static str {
    match s {
        Source::Comment => "routing comment",
        Source::Scan => "statement",
        Source::Set => "SET",
        Source::Startup => "startup parameter",
        Source::Default => "default",
        Source::Written => "SET list",
    }
}
