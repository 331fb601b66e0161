//! The session's routing state: its tenant settings, the tenant that pinned the
//! current transaction, and the analyses of the unit being routed (reused from
//! unit to unit, so routing allocates nothing per query). The decision itself is
//! [`router::decide`]'s; this file gathers what it sees.

use super::frames::describe_statement_name;
use super::statements::Statements;
use crate::app::gate::Ticket;
use crate::app::DbRuntime;
use crate::protocol::{self, tag, Bind, Parse};
use crate::router::bind::ParamTypes;
use crate::router::copy::{CopyIn, CopyReader};
use crate::router::{
    self, Decision, Facts, Item, ListenOp, Mention, Routing, SessionView, ShapeCache, Source,
    TenantKey, Tenants, Tx,
};
use crate::sqlstate::PgError;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// A statement parsed earlier in the batch being routed: its index among the
/// batch's Parses and its declared parameter types.
/// A statement parsed in a batch: its Parse's index among the batch's,
/// its declared and its described parameter types.
type InBatch<'a> = (usize, &'a [u8], &'a [u32]);

/// What routing knows of the session.
#[derive(Debug, Default)]
pub(super) struct Tenancy {
    /// Tenant settings of the session.
    tenants: Tenants,
    /// Tenant the current transaction is pinned by.
    pinned: Option<(TenantKey, Source)>,
    /// Analysis of the Query being routed.
    facts: Facts,
    /// Scratch for the text under the other standard_conforming_strings.
    alt_facts: Facts,
    /// Analyses of the Parses in the batch being routed, in order.
    batch_facts: Vec<Facts>,
    /// What `facts` was made of ([`Analyzed`]).
    query_made_of: Analyzed,
    /// What `batch_facts` was made of, every Parse's text in order.
    batch_made_of: Analyzed,
    /// The tenant mentions of a unit of work.
    mentions: Vec<Mention>,
    /// LISTEN/UNLISTEN answered here, for the driver to carry out with the
    /// pools' relays (transaction and statement modes).
    listen_ops: Vec<ListenOp>,
    /// The tenants this transaction holds ([`crate::app::gate`]): a PAUSE of
    /// one of them waits until the transaction ends.
    tickets: Vec<Ticket>,
    /// The configuration `tickets` were taken with, once the session has
    /// taken up a newer one while holding them (between pipelined units:
    /// [`super::core::Core::maybe_reload`]): a transaction they turn out to
    /// have opened still asks whether its tenants moved since then.
    held_with: Option<HeldWith>,
    /// `tenants.set` as it was before the open transaction first changed it:
    /// Postgres undoes a session setting made in a transaction that rolls
    /// back, and so does this ([`Tenancy::transaction_outcome`]).
    saved_set: Option<Option<TenantKey>>,
    /// Transactions ended so far (wrapping): what was bound in one
    /// ([`super::core::LocalPortal`]) ends with it.
    tx_ends: u32,
    /// The rows of the `COPY .. FROM STDIN` the session's work runs, when
    /// they hold the key: checked as they come ([`Tenancy::copy_rows`]).
    copy: Option<Box<CopyCheck>>,
    /// Each Bind of a COPY in that batch: its message's index, its COPY.
    batch_copies: Vec<(usize, CopyIn)>,
    /// A Bind in that batch binds a statement that may change how text
    /// is read (`SET client_encoding`, ..).
    batch_changes_lexing: bool,
    /// Portals bound to a `COPY .. FROM STDIN` since the session's server
    /// was last idle (no portal outlives that): the COPY an Execute of one
    /// runs, whichever batch it comes in (probe CK F3: a COPY bound, then
    /// run after a Flush, went unchecked). A portal bound again to another
    /// statement stays bound to its COPY (the Bind may have failed on the
    /// server: probe CL F2). One bound again to another COPY is that COPY's
    /// from then on, and notes [`Tenancy::rollbacks_to`] then: a Bind that
    /// failed fails its transaction, so only a `ROLLBACK TO SAVEPOINT` since
    /// could bring back the portal's older COPY, and then it is refused
    /// when it runs (probe CN F4: tokio-postgres's `copy_in` twice in a
    /// transaction was refused). At most [`MAX_COPY_PORTALS`]; a Bind past
    /// them is refused (probe CL F1: the oldest was forgotten).
    copy_portals: Vec<(Box<[u8]>, CopyIn, Option<u32>)>,
    /// Units sent that may roll back to a savepoint (wrapping).
    rollbacks_to: u32,
    /// A Bind in the batch decided last binds a `ROLLBACK TO SAVEPOINT`.
    batch_rolls_back: bool,
    /// A COPY shardbouncer ended for a row it refused: the client's copy
    /// messages are dropped until its CopyDone or CopyFail (or anything
    /// else), as Postgres drops them after a COPY failed.
    copy_dropping: bool,
    /// How many times `facts` was written: the identity of the analysis a
    /// decision saw ([`Decided`]).
    facts_gen: u32,
    /// The last Query decision and what it was decided from ([`Decided`]).
    decided: Option<Decided>,
}

/// A Query decision kept with every input [`router::decide`] saw: the
/// routing configuration (held, so its address is not reused), the session's
/// view, its tenant settings and pin, and the analysis. A unit that finds no
/// server is decided, waits for one, and is decided again once attached;
/// with the same inputs the pure function gives the same decision (and the
/// same mentions, still in the scratch), so the second asks this instead.
/// Only run-somewhere decisions are kept; any other decision clears it, as
/// do the other units' decisions, which overwrite the mentions.
#[derive(Debug)]
struct Decided {
    rt: std::sync::Arc<Routing>,
    view: View,
    tenants: Tenants,
    pinned: Option<(TenantKey, Source)>,
    facts_gen: u32,
    decision: Decision,
}

/// A `COPY .. FROM STDIN` whose rows are checked: their reader, the shard
/// the COPY runs on, the last tenant let through, and whether its data is
/// held to ASCII (the client's encoding may be one whose characters hide
/// ASCII bytes, or may be changing in the work that runs the COPY: probe
/// CK F4, `SET client_encoding = 'SJIS'; COPY ..` in one Query).
#[derive(Debug)]
struct CopyCheck {
    reader: CopyReader,
    shard: usize,
    last: Option<TenantKey>,
    ascii: bool,
}

/// A portal's name as Postgres keeps it: its first 63 bytes (probe CM F1:
/// a COPY bound to one long name ran under another that starts alike).
fn portal_name(name: &[u8]) -> &[u8] {
    &name[..name.len().min(63)]
}

/// The most portals bound to a COPY the session remembers.
pub(super) const MAX_COPY_PORTALS: usize = 256;

/// The session's view for one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    /// Where the transaction stands.
    pub(super) tx: Tx,
    /// The client's standard_conforming_strings.
    pub(super) std_strings: bool,
    /// Only ASCII text can be routed (the client's encoding).
    pub(super) ascii_only: bool,
    /// Only ASCII tenant keys read the same to Postgres (the client's encoding).
    pub(super) keys_ascii_only: bool,
    /// The lexing may have changed unreported ([`SessionView::lexing_unsure`]).
    pub(super) lexing_unsure: bool,
    /// Session mode ([`SessionView::owns_server`]).
    pub(super) owns_server: bool,
    /// [`SessionView::server_failed`].
    pub(super) server_failed: bool,
    /// [`SessionView::types_untrusted`].
    pub(super) types_untrusted: bool,
    /// [`SessionView::runs_rollback_to`].
    pub(super) runs_rollback_to: bool,
    /// [`SessionView::held_state`].
    pub(super) held_state: bool,
    /// [`SessionView::server_copies`].
    pub(super) server_copies: bool,
}

/// The text of a Parse frame (empty if it is malformed, as routing reads it).
fn parse_text(frame: &[u8]) -> &[u8] {
    frame
        .get(5..)
        .and_then(Parse::parse)
        .map(|p| p.query)
        .unwrap_or_default()
}

thread_local! {
    /// This worker's analyses by the shape of their text, shared by its
    /// sessions (see [`ShapeCache`]).
    static SHAPES: std::cell::RefCell<ShapeCache> = std::cell::RefCell::new(ShapeCache::new());
}

/// The inputs of the analyses a [`Tenancy`] keeps: the texts (a copy), the
/// routing key and `standard_conforming_strings`. An analysis is a pure
/// function of exactly these ([`router::analyze_checked`]), so the same
/// inputs give the same facts, and the analysis is not made again. A unit
/// that finds no server attached is routed twice (once to pick the shard,
/// again once the server is attached), and its second analysis was a fifth
/// of the pooler's user-space instructions per `pgbench -S` transaction
/// (callgrind). The texts are compared byte for byte, not by address, and
/// only texts of up to [`Analyzed::MAX`] bytes are kept.
#[derive(Debug, Default)]
struct Analyzed {
    /// The texts, one after the other (empty and `lens` empty: nothing kept).
    texts: Vec<u8>,
    /// Each text's length.
    lens: Vec<usize>,
    key: Vec<u8>,
    std_strings: bool,
    /// Whether what is recorded is valid.
    valid: bool,
    /// The facts kept are those of every text of the same shape as the one
    /// text kept ([`router::shape_invariant`]).
    shaped: bool,
    /// The integer literals of the text kept ([`router::int_spans`]),
    /// found when a text first differs from it in a digit.
    ints: Option<Vec<(u32, u32)>>,
}

impl Analyzed {
    /// Texts longer than this, together, are analyzed each time (a rare text
    /// that long costs more to lex than to keep, but the copy would stay with
    /// an active session).
    const MAX: usize = 8 * 1024;

    /// Whether the facts kept were made of exactly these inputs.
    fn is<'a>(
        &self,
        key: &[u8],
        std_strings: bool,
        texts: impl IntoIterator<Item = &'a [u8]>,
    ) -> bool {
        if !self.valid || self.std_strings != std_strings || self.key != key {
            return false;
        }
        let mut at = 0;
        let mut n = 0;
        for t in texts {
            match self.lens.get(n) {
                Some(&len) if len == t.len() && self.texts[at..at + len] == *t => {}
                _ => return false,
            }
            at += t.len();
            n += 1;
        }
        n == self.lens.len()
    }

    /// The facts kept now were made of these inputs.
    fn record<'a>(
        &mut self,
        key: &[u8],
        std_strings: bool,
        texts: impl IntoIterator<Item = &'a [u8]>,
    ) {
        self.forget();
        for t in texts {
            if self.texts.len() + t.len() > Self::MAX {
                self.forget();
                return;
            }
            self.texts.extend_from_slice(t);
            self.lens.push(t.len());
        }
        self.key.clear();
        self.key.extend_from_slice(key);
        self.std_strings = std_strings;
        self.valid = true;
    }

    /// The facts kept no longer match what was recorded.
    fn forget(&mut self) {
        self.valid = false;
        self.shaped = false;
        self.ints = None;
        self.texts.clear();
        self.lens.clear();
    }

    /// Whether the facts kept are those of `text` too: it is the one text
    /// kept, with other integer literals ([`router::same_shape`]), and the
    /// facts do not depend on them.
    fn same_shape(&mut self, key: &[u8], std_strings: bool, text: &[u8]) -> bool {
        if !self.shaped
            || self.lens.len() != 1
            || self.std_strings != std_strings
            || self.key != key
        {
            return false;
        }
        let old = &self.texts[..];
        // Most texts that are not of the shape differ first elsewhere than
        // in a digit: no lexing for them.
        let first = router::common_prefix(old, text);
        let digit = |t: &[u8]| t.get(first).is_some_and(u8::is_ascii_digit);
        if !digit(old) && !digit(text) {
            return false;
        }
        let ints = self.ints.get_or_insert_with(|| {
            let mut v = Vec::new();
            router::int_spans(old, std_strings, &mut v);
            v
        });
        router::same_shape(old, ints, text)
    }
}

/// [`Tenancy::held_with`]'s configuration (shown by its generation).
struct HeldWith(Arc<DbRuntime>);

impl std::fmt::Debug for HeldWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldWith(generation {})", self.0.generation)
    }
}

impl Tenancy {
    /// A session that logged in with this tenant (if any).
    pub(super) fn new(startup: Option<TenantKey>) -> Tenancy {
        Tenancy {
            tenants: Tenants {
                startup,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// No transaction is pinned or holds a tenant, there is no `SET LOCAL`
    /// tenant, and no LISTEN work is left to carry out.
    pub(super) fn is_clear(&self) -> bool {
        self.pinned.is_none()
            && self.tenants.local.is_none()
            && self.saved_set.is_none()
            && self.listen_ops.is_empty()
            && self.tickets.is_empty()
    }

    /// When [`Tenancy::is_clear`]: the tenant settings, all that lasts to the
    /// next unit (the analyses are scratch, rebuilt for each unit).
    pub(super) fn park(self) -> Tenants {
        debug_assert!(self.is_clear());
        let Tenancy {
            tenants,
            pinned: _,
            facts: _,
            alt_facts: _,
            batch_facts: _,
            query_made_of: _,
            batch_made_of: _,
            mentions: _,
            listen_ops: _,
            tickets: _,
            held_with: _,
            saved_set: _,
            tx_ends: _,
            // (A COPY's check outlives no server: data sent with none
            // attached is dropped.)
            copy: _,
            batch_copies: _,
            batch_changes_lexing: _,
            copy_portals: _,
            rollbacks_to: _,
            batch_rolls_back: _,
            copy_dropping: _,
            facts_gen: _,
            decided: _,
        } = self;
        tenants
    }

    /// The routing state of a session [`Tenancy::park`]ed with these settings.
    pub(super) fn unpark(tenants: Tenants) -> Tenancy {
        Tenancy {
            tenants,
            ..Default::default()
        }
    }

    /// The tenant settings.
    pub(super) fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// `SET key = k` (or `SET LOCAL`); `None` is `RESET key`, which clears both.
    /// `in_tx`: it happens inside a transaction, whose rollback undoes it.
    pub(super) fn set(&mut self, local: bool, key: Option<TenantKey>, in_tx: bool) {
        match key {
            None => self.clear(in_tx),
            Some(k) if local => self.tenants.local = Some(k),
            Some(k) => {
                self.save_set(in_tx);
                self.tenants.set = Some(k);
            }
        }
    }

    /// `RESET ALL` / `DISCARD ALL`: the SET tenant goes, as other settings do.
    /// `session`: session mode, where the tenant that placed the session's
    /// server stays its placement.
    pub(super) fn reset(&mut self, in_tx: bool, session: bool) {
        self.clear(in_tx);
        // An open batch (an implicit transaction) the SET tenant placed is
        // placed by none now: work naming no tenant there gets `no_tenant`'s
        // answer, not the ended tenant's shard (re-probe P: `DISCARD ALL`,
        // Flush, then a SELECT ran on it). A transaction block stays where it
        // was placed, as after `RESET key` (probe R: its later work was
        // refused, and its writes lost with it).
        if !session && !in_tx && matches!(self.pinned, Some((_, Source::Set))) {
            self.pinned = None;
        }
    }

    /// The SET and SET LOCAL tenants go (`RESET key`).
    fn clear(&mut self, in_tx: bool) {
        self.save_set(in_tx);
        self.tenants.set = None;
        self.tenants.local = None;
    }

    /// Keep the SET tenant from before the transaction's first change to it.
    fn save_set(&mut self, in_tx: bool) {
        if in_tx && self.saved_set.is_none() {
            self.saved_set = Some(self.tenants.set);
            self.tenants.set_in_tx = true;
        }
    }

    /// The transaction ended with a COMMIT (`committed`) or a ROLLBACK (a
    /// COMMIT of a failed transaction is one): a SET tenant it changed stays,
    /// or is what it was before. (`ROLLBACK TO SAVEPOINT` is refused once the
    /// transaction changed it, so a ROLLBACK here ends the transaction.)
    pub(super) fn transaction_outcome(&mut self, committed: bool) {
        // A SET LOCAL tenant ends with it too, also when AND CHAIN opens the
        // next one at once (ReadyForQuery then still says 'T'). A ROLLBACK TO
        // SAVEPOINT answers ROLLBACK as well: dropping the SET LOCAL then only
        // leaves the transaction on its shard, refusing any other.
        self.tenants.local = None;
        if let Some(before) = self.saved_set.take() {
            if !committed {
                self.tenants.set = before;
            }
        }
        self.tenants.set_in_tx = false;
    }

    /// The transaction ended: a `SET LOCAL` tenant ends with it. One that
    /// ended without a COMMIT seen (its server was lost) undoes its SET too.
    pub(super) fn end_transaction(&mut self) {
        self.tenants.local = None;
        self.transaction_outcome(false);
        self.tx_ends = self.tx_ends.wrapping_add(1);
    }

    /// Transactions ended so far (see `tx_ends`).
    pub(super) fn tx_ends(&self) -> u32 {
        self.tx_ends
    }

    /// What pinned the current transaction.
    pub(super) fn pinned(&self) -> Option<(TenantKey, Source)> {
        self.pinned
    }

    /// Record what pinned the current transaction.
    pub(super) fn pin(&mut self, by: (TenantKey, Source)) {
        self.pinned = Some(by);
    }

    /// The transaction is over: what pinned it.
    pub(super) fn take_pinned(&mut self) -> Option<(TenantKey, Source)> {
        self.pinned.take()
    }

    /// Analyze a Query's text (once per unit); see [`Tenancy::facts`]. The
    /// same text under the same key and setting is not analyzed again
    /// ([`Analyzed`]).
    pub(super) fn analyze(&mut self, sql: &[u8], key: &[u8], std_strings: bool) -> &Facts {
        if self.query_made_of.is(key, std_strings, [sql])
            || self.query_made_of.same_shape(key, std_strings, sql)
        {
            return &self.facts;
        }
        // Another session of this worker may have analyzed the shape.
        let hash = ShapeCache::hash(key, std_strings, sql);
        self.facts_gen = self.facts_gen.wrapping_add(1);
        let facts = &mut self.facts;
        let hit = SHAPES.with(|c| {
            c.borrow()
                .get(hash, key, std_strings, sql)
                .map(|f| facts.clone_from(f))
                .is_some()
        });
        if !hit {
            router::analyze_checked(sql, key, std_strings, &mut self.facts, &mut self.alt_facts);
            SHAPES.with(|c| {
                c.borrow_mut()
                    .offer(hash, key, std_strings, sql, &self.facts)
            });
        }
        self.query_made_of.record(key, std_strings, [sql]);
        self.query_made_of.shaped =
            self.query_made_of.valid && router::shape_invariant(&self.facts, key, sql);
        &self.facts
    }

    /// The analysis of the last Query analyzed.
    pub(super) fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Analyze the Parses of a batch, in order; returns how many there were.
    pub(super) fn analyze_batch(
        &mut self,
        msgs: &[(u8, Bytes)],
        key: &[u8],
        std_strings: bool,
    ) -> usize {
        let texts = || {
            msgs.iter()
                .filter(|(t, _)| *t == tag::frontend::PARSE)
                .map(|(_, frame)| parse_text(frame))
        };
        if self.batch_made_of.is(key, std_strings, texts()) {
            return self.batch_made_of.lens.len();
        }
        let mut n = 0;
        for query in texts() {
            if self.batch_facts.len() <= n {
                self.batch_facts.push(Facts::default());
            }
            router::analyze_checked(
                query,
                key,
                std_strings,
                &mut self.batch_facts[n],
                &mut self.alt_facts,
            );
            n += 1;
        }
        self.batch_made_of.record(key, std_strings, texts());
        n
    }

    /// The analyses of the first `n` Parses of the batch.
    pub(super) fn batch_facts(&self, n: usize) -> &[Facts] {
        &self.batch_facts[..n.min(self.batch_facts.len())]
    }

    /// The analysis of the batch's `i`th Parse (to keep with its statement).
    pub(super) fn parse_facts_at(&self, i: usize) -> Option<Facts> {
        // A copy: the analyses stay whole for the same texts in the next
        // batch (a driver's extended protocol sends one text again and
        // again, with new parameters).
        self.batch_facts.get(i).cloned()
    }

    /// Decide the Query analyzed last.
    pub(super) fn decide_query(&mut self, rt: &std::sync::Arc<Routing>, v: View) -> Decision {
        if let Some(d) = &self.decided {
            if std::sync::Arc::ptr_eq(&d.rt, rt)
                && d.view == v
                && d.tenants == self.tenants
                && d.pinned == self.pinned
                && d.facts_gen == self.facts_gen
            {
                return d.decision.clone();
            }
        }
        let view = view(&self.tenants, self.pinned, v);
        let decision = router::decide(
            rt,
            &view,
            router::Unit::query(&self.facts),
            &mut self.mentions,
        );
        self.decided =
            matches!(decision, Decision::Shard { .. } | Decision::TenantFree).then(|| Decided {
                rt: rt.clone(),
                view: v,
                tenants: self.tenants,
                pinned: self.pinned,
                facts_gen: self.facts_gen,
                decision: decision.clone(),
            });
        decision
    }

    /// Decide a FunctionCall.
    pub(super) fn decide_function_call(&mut self, rt: &Routing, v: View) -> Decision {
        self.decided = None;
        let view = view(&self.tenants, self.pinned, v);
        router::decide(rt, &view, router::Unit::function_call(), &mut self.mentions)
    }

    /// Decide an extended batch whose Parses were analyzed
    /// ([`Tenancy::analyze_batch`]): every Bind with the statement it names, in
    /// the batch or among the client's statements.
    pub(super) fn decide_batch(
        &mut self,
        rt: &Routing,
        v: View,
        msgs: &[(u8, Bytes)],
        stmts: &Statements,
    ) -> Decision {
        self.decided = None;
        let view = view(&self.tenants, self.pinned, v);
        let batch_facts = &self.batch_facts;
        // Statements as of each point in the batch: a Parse in it, else an earlier one.
        let mut pi = 0;
        let mut unnamed_at: Option<InBatch<'_>> = None;
        let mut named: Option<HashMap<&[u8], InBatch<'_>>> = None;
        // The client's unnamed statement is still the one before the batch
        // (no unnamed Parse or Close in it yet).
        let mut unnamed_kept = true;
        // The COPY FROM STDIN its Binds bind, for its rows' check.
        let copies = std::cell::RefCell::new(std::mem::take(&mut self.batch_copies));
        copies.borrow_mut().clear();
        let copies_of = &copies;
        let changes = std::cell::Cell::new(false);
        let changes_of = &changes;
        let rolls = std::cell::Cell::new(false);
        let rolls_of = &rolls;
        let items = msgs.iter().enumerate().filter_map(move |(i, (t, frame))| {
            let body = &frame[5..];
            match *t {
                tag::frontend::PARSE => {
                    let p = Parse::parse(body)?;
                    let mut at = (pi, p.param_types, &[][..]);
                    pi += 1;
                    if p.name.is_empty() {
                        // Parsed again as described (asyncpg without its
                        // statement cache): see `Statements::redescribed`.
                        if std::mem::take(&mut unnamed_kept) {
                            at.2 = stmts.redescribed(frame).unwrap_or_default();
                        }
                        unnamed_at = Some(at);
                    } else {
                        named.get_or_insert_with(HashMap::new).insert(p.name, at);
                    }
                    let types = router::bind::ParamTypes {
                        declared: p.param_types,
                        described: &[],
                    };
                    let f = &batch_facts[at.0];
                    Some(if types.declares_own_type() {
                        Item::ParseTyped(f)
                    } else {
                        Item::Parse(f)
                    })
                }
                tag::frontend::BIND => {
                    let b = Bind::parse(body)?;
                    let in_batch = if b.statement.is_empty() {
                        unnamed_at
                    } else {
                        named.as_ref().and_then(|m| m.get(b.statement).copied())
                    };
                    let item = match in_batch {
                        Some((fi, declared, described)) => Item::Bind(
                            &batch_facts[fi],
                            ParamTypes {
                                declared,
                                described,
                            },
                            b,
                            b.portal,
                        ),
                        None if b.statement.is_empty() => match stmts.unnamed() {
                            Some((facts, types)) => Item::Bind(facts, types, b, b.portal),
                            None => Item::BindUnknown(b""),
                        },
                        None => match stmts.get(b.statement) {
                            Some(def) => Item::Bind(&def.facts, def.param_types(), b, b.portal),
                            None => Item::BindUnknown(b.statement),
                        },
                    };
                    if let Item::Bind(f, ..) = &item {
                        changes_of.set(changes_of.get() || f.effects.may_change_lexing());
                        rolls_of.set(rolls_of.get() || f.rollback_to);
                        if f.copy != CopyIn::None {
                            copies_of.borrow_mut().push((i, f.copy.clone()));
                        }
                    }
                    Some(item)
                }
                tag::frontend::EXECUTE => Some(Item::Execute(
                    protocol::cstr(body).map(|(p, _)| p).unwrap_or_default(),
                )),
                tag::frontend::DESCRIBE if body.first() == Some(&b'P') => {
                    Some(Item::DescribePortal(
                        protocol::cstr(&body[1..])
                            .map(|(p, _)| p)
                            .unwrap_or_default(),
                    ))
                }
                tag::frontend::DESCRIBE => {
                    // A Describe may make a server parse the statement again
                    // (prepared anew on the server the unit goes to, or
                    // analyzed again after `search_path` changed): one whose
                    // Parse reads a constant through the input of a type
                    // that is not built in is decided as its Parse (probe CW
                    // F5). One parsed in this batch: its Parse is.
                    let earlier = describe_statement_name(body).and_then(|name| {
                        if name.is_empty() {
                            unnamed_kept.then(|| stmts.unnamed()).flatten()
                        } else if named.as_ref().is_some_and(|m| m.contains_key(name)) {
                            None
                        } else {
                            stmts.get(name).map(|d| (&d.facts, d.param_types()))
                        }
                    });
                    match earlier {
                        Some((f, types)) if f.literal && types.declares_own_type() => {
                            Some(Item::ParseTyped(f))
                        }
                        Some((f, _)) if f.parse_input != router::ParseInput::Builtin => {
                            Some(Item::Parse(f))
                        }
                        _ => Some(Item::Other),
                    }
                }
                tag::frontend::CLOSE => {
                    if describe_statement_name(body).is_some_and(<[u8]>::is_empty) {
                        unnamed_kept = false;
                    }
                    Some(Item::Close)
                }
                _ => None,
            }
        });
        let decision = router::decide(rt, &view, router::Unit::batch(items), &mut self.mentions);
        self.batch_copies = copies.into_inner();
        self.batch_changes_lexing = changes.get();
        self.batch_rolls_back = rolls.get();
        decision
    }

    /// The COPY the batch decided last binds: all its Binds' COPYs told
    /// together ([`CopyIn::then`]).
    pub(super) fn batch_copy(&self) -> CopyIn {
        (self.batch_copies.iter()).fold(CopyIn::None, |all, (_, c)| all.then(c))
    }

    /// A Bind in the batch decided last binds a statement that may change
    /// how text is read.
    pub(super) fn batch_changes_lexing(&self) -> bool {
        self.batch_changes_lexing
    }

    /// The COPY the Bind at message `i` of the batch decided last binds.
    pub(super) fn batch_copy_at(&self, i: usize) -> Option<&CopyIn> {
        self.batch_copies
            .iter()
            .find(|(at, _)| *at == i)
            .map(|(_, c)| c)
    }

    /// A Bind in the batch decided last binds a `ROLLBACK TO SAVEPOINT`.
    pub(super) fn batch_rolls_back(&self) -> bool {
        self.batch_rolls_back
    }

    /// The session's server is idle (or there is none): no portal is left.
    pub(super) fn portals_gone(&mut self) {
        self.copy_portals.clear();
    }

    /// A unit that may roll back to a savepoint goes to the server (see
    /// [`Tenancy::copy_portals`]).
    pub(super) fn rolls_back_to(&mut self) {
        self.rollbacks_to = self.rollbacks_to.wrapping_add(1);
    }

    /// Portal `portal` is bound to a COPY (`c`). `false` when the session
    /// already remembers [`MAX_COPY_PORTALS`] others.
    pub(super) fn bind_copy(&mut self, portal: &[u8], c: CopyIn) -> bool {
        let portal = portal_name(portal);
        let full = self.copy_portals.len() >= MAX_COPY_PORTALS;
        match self
            .copy_portals
            .iter_mut()
            .find(|(p, ..)| &p[..] == portal)
        {
            Some((_, old, rebound)) => {
                if *old != c {
                    *old = c;
                    *rebound = Some(self.rollbacks_to);
                }
            }
            None if full => return false,
            None => self.copy_portals.push((portal.into(), c, None)),
        }
        true
    }

    /// Whether portal `portal` was bound to a `COPY .. FROM STDIN` since
    /// the session's server was last idle.
    pub(super) fn portal_copies(&self, portal: &[u8]) -> bool {
        let portal = portal_name(portal);
        self.copy_portals.iter().any(|(p, ..)| &p[..] == portal)
    }

    /// Portal `portal` runs: if bound to a COPY, that COPY is the one
    /// running (see [`Tenancy::arm_copy`]). `false` when it was bound to
    /// another COPY before a `ROLLBACK TO SAVEPOINT` (which one runs, only
    /// the server knows).
    pub(super) fn execute_copy(&mut self, portal: &[u8], shard: usize, ascii: bool) -> bool {
        let portal = portal_name(portal);
        let now = self.rollbacks_to;
        match self.copy_portals.iter().find(|(p, ..)| &p[..] == portal) {
            Some((_, _, Some(at))) if *at != now => false,
            Some((_, c, _)) => {
                let c = c.clone();
                self.arm_copy(&c, shard, ascii);
                true
            }
            None => true,
        }
    }

    /// Work that runs a `COPY .. FROM STDIN` goes to `shard`: its rows are
    /// checked from now on when they hold the key (`c`), else not at all;
    /// `ascii`: its data is held to ASCII ([`CopyCheck`]).
    pub(super) fn arm_copy(&mut self, c: &CopyIn, shard: usize, ascii: bool) {
        self.copy = match c {
            CopyIn::Rows(f) => Some(Box::new(CopyCheck {
                reader: CopyReader::new(f),
                shard,
                last: None,
                ascii,
            })),
            _ => None,
        };
    }

    /// Rows of a COPY are being checked.
    pub(super) fn copy_armed(&self) -> bool {
        self.copy.is_some()
    }

    /// The COPY ended (a CopyFail, the client's or shardbouncer's).
    pub(super) fn end_copy(&mut self) {
        self.copy = None;
    }

    /// Whether the client's copy message of type `t` is one of a COPY
    /// shardbouncer ended (dropped); the first other message, or its
    /// CopyDone or CopyFail, ends the dropping.
    pub(super) fn drops_copy_message(&mut self, t: u8) -> bool {
        use tag::frontend as f;
        let drop = self.copy_dropping && matches!(t, f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL);
        self.copy_dropping &= t == f::COPY_DATA;
        drop
    }

    /// Drop the client's copy messages from now on (see
    /// [`Tenancy::drops_copy_message`]).
    pub(super) fn drop_copy_messages(&mut self) {
        self.copy_dropping = true;
    }

    /// The next CopyData payload of the checked COPY (`None`: its
    /// CopyDone), judged by [`router::decide::copy_rows`]. The check ends
    /// with the data, or at the first row refused.
    pub(super) fn copy_rows(
        &mut self,
        rt: &Routing,
        v: View,
        data: Option<&[u8]>,
    ) -> Result<(), PgError> {
        let Some(c) = self.copy.as_mut() else {
            return Ok(());
        };
        let mut view = view(&self.tenants, self.pinned, v);
        view.ascii_only |= c.ascii;
        let out = router::decide::copy_rows(rt, &view, c.shard, &mut c.reader, data, &mut c.last);
        if data.is_none() || out.is_err() {
            self.copy = None;
        }
        out
    }

    /// The tenants the unit decided last mentions (comments, literals, Bind
    /// values): `i`th of [`Tenancy::mention_count`].
    pub(super) fn mention(&self, i: usize) -> TenantKey {
        self.mentions[i].key
    }

    /// How many tenant mentions the unit decided last has.
    pub(super) fn mention_count(&self) -> usize {
        self.mentions.len()
    }

    /// Tickets held so far in this transaction.
    pub(super) fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    /// Give back the tickets taken after the first `n`.
    pub(super) fn drop_tickets_from(&mut self, n: usize) {
        self.tickets.truncate(n);
        if self.tickets.is_empty() {
            self.held_with = None;
        }
    }

    /// Whether this transaction holds the (canonical) tenant `key`.
    pub(super) fn holds(&self, key: &TenantKey) -> bool {
        self.tickets.iter().any(|t| t.key() == key)
    }

    /// The transaction's holds on its tenants, taken away: to be kept until
    /// its server is done with its work (see `Pool::discard_busy`).
    pub(super) fn take_tickets(&mut self) -> Vec<Ticket> {
        self.held_with = None;
        std::mem::take(&mut self.tickets)
    }

    /// The session takes up configuration `new` in place of `old` with
    /// tickets held: they stay `old`'s ([`Tenancy::held_with`]).
    pub(super) fn tickets_outlive(&mut self, old: &Arc<DbRuntime>) {
        if !self.tickets.is_empty() && self.held_with.is_none() {
            self.held_with = Some(HeldWith(old.clone()));
        }
    }

    /// The configuration the tickets held were taken with, when the session
    /// has taken up a newer one since.
    pub(super) fn held_with(&self) -> Option<&Arc<DbRuntime>> {
        self.held_with.as_ref().map(|h| &h.0)
    }

    /// Keep a hold on a tenant until the transaction ends.
    pub(super) fn keep(&mut self, ticket: Ticket) {
        self.tickets.push(ticket);
    }

    /// The transaction ended: its tenants are free to be paused. The buffer
    /// stays for the next transaction (a routed transaction allocated and
    /// freed it each time); a parked session keeps none (see
    /// [`Tenancy::park`]).
    pub(super) fn release_tickets(&mut self) {
        self.tickets.clear();
        self.held_with = None;
    }

    /// A LISTEN/UNLISTEN answered here, for the driver.
    pub(super) fn listen(&mut self, op: ListenOp) {
        self.listen_ops.push(op);
    }

    /// Whether a LISTEN/UNLISTEN was answered since the last take.
    pub(super) fn has_listen_ops(&self) -> bool {
        !self.listen_ops.is_empty()
    }

    /// The LISTEN/UNLISTEN requests answered since the last call, in order.
    pub(super) fn take_listen_ops(&mut self) -> Vec<ListenOp> {
        std::mem::take(&mut self.listen_ops)
    }
}

/// The router's view of a session.
fn view(tenants: &Tenants, pinned: Option<(TenantKey, Source)>, v: View) -> SessionView<'_> {
    SessionView {
        tenants,
        tx: v.tx,
        pinned_by: pinned,
        std_strings: v.std_strings,
        ascii_only: v.ascii_only,
        keys_ascii_only: v.keys_ascii_only,
        lexing_unsure: v.lexing_unsure,
        owns_server: v.owns_server,
        server_failed: v.server_failed,
        types_untrusted: v.types_untrusted,
        runs_rollback_to: v.runs_rollback_to,
        held_state: v.held_state,
        server_copies: v.server_copies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_facts_are_used_only_for_the_same_texts_key_and_setting() {
        let mut a = Analyzed::default();
        assert!(!a.is(b"k", true, [&b"SELECT 1"[..]]), "nothing kept yet");
        a.record(b"k", true, [&b"SELECT 1"[..]]);
        assert!(a.is(b"k", true, [&b"SELECT 1"[..]]));
        assert!(
            !a.is(b"k", true, [&b"SELECT 2"[..]]),
            "same length, other text"
        );
        assert!(!a.is(b"k", false, [&b"SELECT 1"[..]]), "other setting");
        assert!(!a.is(b"j", true, [&b"SELECT 1"[..]]), "other key");
        assert!(!a.is(b"k", true, [&b"SELECT 1"[..], b""]), "one more text");
        assert!(!a.is(b"k", true, []), "one text fewer");
        // Texts are compared one by one, not as one run of bytes.
        a.record(b"k", true, [&b"ab"[..], b"c"]);
        assert!(a.is(b"k", true, [&b"ab"[..], b"c"]));
        assert!(!a.is(b"k", true, [&b"a"[..], b"bc"]));
        a.forget();
        assert!(!a.is(b"k", true, [&b"ab"[..], b"c"]));
        // Too long to keep: analyzed each time.
        let long = vec![b'x'; Analyzed::MAX + 1];
        a.record(b"k", true, [&long[..]]);
        assert!(!a.is(b"k", true, [&long[..]]));
        assert!(
            a.texts.capacity() <= Analyzed::MAX,
            "nothing past the bound is copied"
        );
    }

    #[test]
    fn a_batch_analyzed_again_keeps_its_facts_when_one_is_copied() {
        let mut parse = bytes::BytesMut::new();
        protocol::parse(
            &mut parse,
            b"",
            b"SELECT * FROM t WHERE tenant_id = $1",
            &[0, 0],
        );
        let parse = parse.freeze();
        let msgs = vec![(tag::frontend::PARSE, parse.clone())];
        let mut t = Tenancy::default();
        assert_eq!(t.analyze_batch(&msgs, b"tenant_id", true), 1);
        assert_eq!(t.batch_facts(1)[0].params, vec![1]);
        assert_eq!(t.analyze_batch(&msgs, b"tenant_id", true), 1);
        assert_eq!(t.batch_facts(1)[0].params, vec![1], "kept");
        assert_eq!(t.parse_facts_at(0).map(|f| f.params), Some(vec![1]));
        assert_eq!(t.analyze_batch(&msgs, b"tenant_id", true), 1);
        assert_eq!(
            t.batch_facts(1)[0].params,
            vec![1],
            "still whole once copied"
        );
    }
}
