//! The client's prepared statements: its named statements (mapped to
//! content-addressed server statements) and its unnamed statement.
//!
//! Names are private to the client, as on a Postgres connection; the server-side
//! identity ([`StmtDef`]) is shared by every client that prepares the same text in
//! the same context.

use super::budget::Budget;
use crate::protocol::Parse;
use crate::router::bind::ParamTypes;
use crate::router::statement::{Violation, RESERVED_PREFIX};
use crate::router::Facts;
use crate::server::prepared::{self, StmtDef};
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::Arc;

/// Most statement names one client may hold (a runaway client cannot grow memory).
pub(super) const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// Most bytes of statement text (name, text and parameter types) one client
/// may hold: ten thousand names of up to a message each would otherwise be
/// gigabytes (probe: 558 statements of 900 KB took the process from 8 MB to
/// 488 MB). Far above what applications prepare.
pub(super) const MAX_CLIENT_STATEMENT_BYTES: usize = 64 << 20;

/// Most bytes of statement text all clients together may hold, so that many
/// clients cannot do what one may not.
pub(super) const MAX_STATEMENT_BYTES: usize = 1 << 30;

/// Bytes of statement text every client's [`Statements`] hold now.
static HELD_BYTES: Budget = Budget::new(MAX_STATEMENT_BYTES);

/// Count `n` more bytes of statement text held by all clients, or 53400 when
/// they would pass [`MAX_STATEMENT_BYTES`] (nothing counted then).
fn hold_bytes(n: usize) -> Result<(), PgError> {
    if !HELD_BYTES.hold(n) {
        return Err(PgError::new(
            sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
            format!(
                "prepared statements of all clients would hold more than {} MiB of text",
                MAX_STATEMENT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// What one named statement holds.
fn held_by(name: &[u8], def: &StmtDef) -> usize {
    name.len() + def.query.len() + def.types.len()
}

/// Most deallocated texts remembered one by one; beyond it, as if all were.
const MAX_DROPPED: usize = 1024;

/// The client's statements.
#[derive(Default)]
pub(super) struct Statements {
    /// Looked up at every Bind: hashed with the keyed hash (SipHash was
    /// about 100 instructions a lookup), keys drawn per process.
    named: crate::router::keyed::KeyedMap<Bytes, Arc<StmtDef>>,
    /// Bytes the named statements hold ([`held_by`]), counted in
    /// [`HELD_BYTES`] too.
    bytes: usize,
    unnamed: Unnamed,
    /// When the client deallocated its last name for a text (by content hash),
    /// on the statement clock: preparing that text again must not reuse a server
    /// copy made before (it may plan against dropped objects).
    dropped: HashMap<u64, u64>,
    /// When the client last deallocated all its statements.
    all_dropped_at: u64,
    /// Named statements that LISTEN or UNLISTEN (see `listen_ext`): looked
    /// at for every batch, so counted rather than searched.
    listens: u32,
    /// Named statements that are a `COPY .. FROM STDIN` (an SQL `EXECUTE`
    /// of one in session mode runs it: see `SessionView::server_copies`).
    copies: u32,
}

impl Drop for Statements {
    fn drop(&mut self) {
        self.keep_unnamed(None);
        HELD_BYTES.release(self.bytes);
    }
}

/// The client's unnamed statement: its facts and types, and its Parse frame so it
/// can be re-created on a server that lacks it (after a move to another shard, or
/// when shardbouncer had to use the unnamed statement itself).
#[derive(Default)]
struct Unnamed {
    facts: Facts,
    /// Parameter types declared in the Parse (4 bytes each).
    declared: Bytes,
    /// Parameter types the server described (ParameterDescription).
    described: Vec<u32>,
    /// The client's Parse; `None` when there is no unnamed statement.
    parse: Option<Bytes>,
    /// Which Parse made it (counts the client's unnamed Parses).
    seq: u32,
}

impl Statements {
    /// As a new session's: nothing prepared, deallocated or parsed, ever (a
    /// parked session keeps no room for statements it does not have).
    pub(super) fn is_default(&self) -> bool {
        let Statements {
            named,
            bytes: _,
            unnamed,
            dropped,
            all_dropped_at,
            listens: _,
            copies: _,
        } = self;
        let Unnamed {
            facts,
            declared,
            described,
            parse,
            seq,
        } = unnamed;
        // The unnamed statement's facts are set only with `seq` (no unnamed
        // Parse yet: none set). Compared only in debug builds: comparing them
        // cost about 1% of the CPU of a `pgbench -S` transaction.
        let default = named.is_empty()
            && dropped.is_empty()
            && *all_dropped_at == 0
            && declared.is_empty()
            && described.is_empty()
            && parse.is_none()
            && *seq == 0;
        debug_assert!(!default || *facts == Facts::default());
        default
    }

    /// Record a named Parse under its name, Postgres's rules (a name in use is
    /// 42P05), with the facts of its text. `context` is what the text's meaning
    /// depends on besides itself (see [`StmtDef::new`]).
    pub(super) fn register(
        &mut self,
        p: &Parse<'_>,
        facts: Facts,
        context: &str,
    ) -> Result<Arc<StmtDef>, PgError> {
        if facts.violation == Some(Violation::ReservedName) {
            return Err(reserved_name());
        }
        if self.named.contains_key(p.name) {
            return Err(PgError::new(
                sqlstate::DUPLICATE_PSTATEMENT,
                format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(p.name)
                ),
            ));
        }
        if self.named.len() >= MAX_CLIENT_STATEMENTS {
            return Err(PgError::new(
                sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                "too many prepared statements on this connection",
            ));
        }
        let size = p.name.len() + p.query.len() + 2 + p.param_types.len();
        if self.bytes + size > MAX_CLIENT_STATEMENT_BYTES {
            return Err(PgError::new(
                sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                format!(
                    "prepared statements on this connection would hold more than {} MiB of text",
                    MAX_CLIENT_STATEMENT_BYTES >> 20
                ),
            ));
        }
        hold_bytes(size)?;
        let mut def = StmtDef::new(p, facts, context);
        debug_assert_eq!(held_by(p.name, &def), size);
        def.not_before = self
            .dropped
            .remove(&def.hash)
            .unwrap_or(0)
            .max(self.all_dropped_at);
        let def = Arc::new(def);
        self.tally(&def, true);
        self.bytes += size;
        self.named
            .insert(Bytes::copy_from_slice(p.name), def.clone());
        Ok(def)
    }

    /// Count a named statement in (`add`) or out of [`Statements::listens`]
    /// and [`Statements::copies`].
    fn tally(&mut self, def: &StmtDef, add: bool) {
        let listen = u32::from(def.facts.has_listen());
        let copy = u32::from(def.facts.copy != crate::router::copy::CopyIn::None);
        if add {
            self.listens += listen;
            self.copies += copy;
        } else {
            self.listens -= listen;
            self.copies -= copy;
        }
    }

    /// Whether a named statement of the client's is a `COPY .. FROM STDIN`.
    pub(super) fn any_copy(&self) -> bool {
        self.copies > 0
    }

    /// Whether a statement of the client's (named, or the unnamed one) is a
    /// LISTEN or UNLISTEN.
    pub(super) fn any_listen(&self) -> bool {
        self.listens > 0 || (self.unnamed.parse.is_some() && self.unnamed.facts.has_listen())
    }

    /// The statement named `name`.
    pub(super) fn get(&self, name: &[u8]) -> Option<&Arc<StmtDef>> {
        self.named.get(name)
    }

    /// Close/DEALLOCATE of one name; whether it existed.
    pub(super) fn remove(&mut self, name: &[u8]) -> bool {
        self.take(name).is_some()
    }

    /// [`Statements::remove`], giving the statement back (to restore it if
    /// the server skips the Close).
    pub(super) fn take(&mut self, name: &[u8]) -> Option<Arc<StmtDef>> {
        let def = self.named.remove(name)?;
        self.tally(&def, false);
        self.release(held_by(name, &def));
        if !self.named.values().any(|d| d.hash == def.hash) {
            if self.dropped.len() >= MAX_DROPPED {
                self.dropped.clear();
                self.all_dropped_at = prepared::tick();
            } else {
                self.dropped.insert(def.hash, prepared::tick());
            }
        }
        Some(def)
    }

    /// A Close the server skipped (an earlier error in its batch): the
    /// statement is the client's again, as on Postgres, unless the name was
    /// taken again meanwhile or the bytes of all clients are at their cap.
    pub(super) fn restore(&mut self, name: &[u8], def: Arc<StmtDef>) {
        if self.named.contains_key(name) {
            return;
        }
        let size = held_by(name, &def);
        if hold_bytes(size).is_err() {
            return;
        }
        self.tally(&def, true);
        self.bytes += size;
        self.named.insert(Bytes::copy_from_slice(name), def);
    }

    /// `DEALLOCATE ALL` / `DISCARD ALL`: every name goes.
    pub(super) fn clear(&mut self) {
        self.named.clear();
        self.listens = 0;
        self.copies = 0;
        self.release(self.bytes);
        self.dropped.clear();
        self.all_dropped_at = prepared::tick();
    }

    /// A Parse of `def` failed (or was skipped): the name it would have created
    /// does not exist, as in Postgres.
    pub(super) fn forget(&mut self, def: &Arc<StmtDef>) {
        let (mut freed, mut gone) = (0, 0);
        self.named.retain(|name, d| {
            let keep = !Arc::ptr_eq(d, def);
            if !keep {
                freed += held_by(name, d);
                gone += 1;
            }
            keep
        });
        // (Every name gone held `def` itself.)
        for _ in 0..gone {
            self.tally(def, false);
        }
        self.release(freed);
    }

    /// `n` bytes of statement text are no longer held.
    fn release(&mut self, n: usize) {
        self.bytes -= n;
        HELD_BYTES.release(n);
    }

    /// Bytes of statement text all clients hold now (for the memory trim).
    pub(super) fn held_bytes() -> usize {
        HELD_BYTES.held()
    }

    /// The client's unnamed Parse `frame` (with `declared` parameter types, a
    /// slice of it) replaces its unnamed statement.
    /// Returns the Parse's number, for [`Statements::unnamed_failed`].
    /// Its copy counts against the limit of all clients' statement text (not
    /// against the connection's, which a single large unnamed statement may
    /// exceed): past it, 53400 and the client has no unnamed statement.
    pub(super) fn set_unnamed(
        &mut self,
        facts: Facts,
        frame: Bytes,
        declared: Bytes,
    ) -> Result<u32, PgError> {
        self.unnamed.seq = self.unnamed.seq.wrapping_add(1);
        self.keep_unnamed(None);
        hold_bytes(frame.len())?;
        self.unnamed.facts = facts;
        self.unnamed.declared = declared;
        self.unnamed.described.clear();
        self.unnamed.parse = Some(frame);
        Ok(self.unnamed.seq)
    }

    /// Replace the kept unnamed Parse (`None`: no unnamed statement), keeping
    /// [`HELD_BYTES`] in step. (A new one is counted by its caller.)
    fn keep_unnamed(&mut self, parse: Option<Bytes>) {
        if let Some(old) = std::mem::replace(&mut self.unnamed.parse, parse) {
            HELD_BYTES.release(old.len());
        }
    }

    /// The server failed or skipped (after an earlier error) unnamed Parse `seq`.
    /// If it is still the client's latest, the client has no unnamed statement:
    /// a later Bind of it gets 26000 rather than running a text whose Parse
    /// never took effect. (Postgres would keep an unnamed statement prepared
    /// before a skipped Parse; that one is not re-created here: an error, never
    /// another statement.)
    pub(super) fn unnamed_failed(&mut self, seq: u32) {
        if self.unnamed.seq == seq {
            self.keep_unnamed(None);
        }
    }

    /// The unnamed statement is gone (a simple Query, or a Close of it).
    pub(super) fn drop_unnamed(&mut self) {
        self.keep_unnamed(None);
    }

    /// The client's unnamed Parse, if it has an unnamed statement.
    pub(super) fn unnamed_parse(&self) -> Option<&Bytes> {
        self.unnamed.parse.as_ref()
    }

    /// The unnamed statement's text, if there is one.
    pub(super) fn unnamed_text(&self) -> Option<Bytes> {
        let frame = self.unnamed.parse.as_ref()?;
        let p = Parse::parse(frame.get(5..)?)?;
        Some(frame.slice_ref(p.query))
    }

    /// Facts and parameter types of the unnamed statement, if any.
    pub(super) fn unnamed(&self) -> Option<(&Facts, ParamTypes<'_>)> {
        self.unnamed.parse.as_ref()?;
        let u = &self.unnamed;
        Some((
            &u.facts,
            ParamTypes {
                declared: &u.declared,
                described: &u.described,
            },
        ))
    }

    /// The parameter types the server described for the client's unnamed
    /// statement, when `frame` (a whole Parse message) parses that same
    /// statement again: the same text and declared types. asyncpg with
    /// `statement_cache_size=0` (PgBouncer's advice for it) parses and
    /// describes each text, then parses it again ahead of its Bind, whose
    /// binary values it encodes in the described types. The new statement
    /// is given these types, declared in the Parse the server gets
    /// ([`declared_parse`]), so that Postgres reads the values as the
    /// router did, whatever changed in between.
    pub(super) fn redescribed(&self, frame: &[u8]) -> Option<&[u32]> {
        let u = &self.unnamed;
        (!u.described.is_empty() && u.parse.as_deref() == Some(frame)).then_some(&u.described[..])
    }

    /// The client's unnamed Parse as a server gets it: with the types the
    /// server described declared (see [`Statements::redescribed`]), so that
    /// a copy re-created on another server reads Bind values as the router
    /// did; as the client sent it when not described.
    pub(super) fn unnamed_parse_declared(&self, out: &mut BytesMut) -> Option<Bytes> {
        let frame = self.unnamed.parse.as_ref()?;
        if self.unnamed.described.is_empty() {
            return Some(frame.clone());
        }
        let p = Parse::parse(frame.get(5..)?)?;
        Some(declared_parse(out, p.query, &self.unnamed.described))
    }

    /// The number of the client's latest unnamed Parse (see
    /// [`Statements::describe_unnamed`]).
    pub(super) fn unnamed_seq(&self) -> u32 {
        self.unnamed.seq
    }

    /// The server described the parameters of unnamed Parse `seq`: they are
    /// the unnamed statement's if that Parse is still the client's latest. A
    /// later one parsed before the answer came is another statement
    /// (`SELECT $1::text` described, then an INSERT of a bigint key parsed
    /// ahead of the answer, had its binary Bind read as text and routed by
    /// a value Postgres did not read).
    pub(super) fn describe_unnamed(&mut self, seq: u32, oids: impl Iterator<Item = u32>) {
        if self.unnamed.seq != seq || self.unnamed.parse.is_none() {
            return;
        }
        self.unnamed.described.clear();
        self.unnamed.described.extend(oids);
    }
}

/// An unnamed Parse of `query` declaring parameter types `types` (see
/// [`Statements::redescribed`]).
pub(super) fn declared_parse(out: &mut BytesMut, query: &[u8], types: &[u32]) -> Bytes {
    prepared::parse_declared(out, b"", query, types)
}

/// The refusal of a statement name in shardbouncer's namespace.
pub(super) fn reserved_name() -> PgError {
    PgError::new(
        sqlstate::RESERVED_NAME,
        format!("prepared statement names starting with \"{RESERVED_PREFIX}\" are reserved by shardbouncer"),
    )
}
