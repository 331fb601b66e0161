//! The session's routing state: its tenant settings, the tenant that pinned the
//! current transaction, and the analyses of the unit being routed (reused from
//! unit to unit, so routing allocates nothing per query). The decision itself is
//! [`router::decide`]'s; this file gathers what it sees.

use super::statements::Statements;
use crate::app::gate::Ticket;
use crate::protocol::{self, tag, Bind, Parse};
use crate::router::bind::ParamTypes;
use crate::router::{
    self, Decision, Facts, Item, ListenOp, Mention, Routing, SessionView, Source, TenantKey,
    Tenants, Tx,
};
use bytes::Bytes;
use std::collections::HashMap;

/// A statement parsed earlier in the batch being routed: its index among the
/// batch's Parses and its declared parameter types.
type InBatch<'a> = (usize, &'a [u8]);

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
    /// The tenant mentions of a unit of work.
    mentions: Vec<Mention>,
    /// LISTEN/UNLISTEN answered here, for the driver to carry out with the
    /// pools' relays (transaction and statement modes).
    listen_ops: Vec<ListenOp>,
    /// The tenants this transaction holds ([`crate::app::gate`]): a PAUSE of
    /// one of them waits until the transaction ends.
    tickets: Vec<Ticket>,
    /// `tenants.set` as it was before the open transaction first changed it:
    /// Postgres undoes a session setting made in a transaction that rolls
    /// back, and so does this ([`Tenancy::transaction_outcome`]).
    saved_set: Option<Option<TenantKey>>,
}

/// The session's view for one decision.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    /// Where the transaction stands.
    pub(super) tx: Tx,
    /// The client's standard_conforming_strings.
    pub(super) std_strings: bool,
    /// Only ASCII text can be routed (the client's encoding).
    pub(super) ascii_only: bool,
    /// The lexing may have changed unreported ([`SessionView::lexing_unsure`]).
    pub(super) lexing_unsure: bool,
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
            mentions: _,
            listen_ops: _,
            tickets: _,
            saved_set: _,
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
            None => self.reset(in_tx),
            Some(k) if local => self.tenants.local = Some(k),
            Some(k) => {
                self.save_set(in_tx);
                self.tenants.set = Some(k);
            }
        }
    }

    /// `RESET ALL` / `DISCARD ALL`: the SET tenant goes, as other settings do.
    pub(super) fn reset(&mut self, in_tx: bool) {
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

    /// Analyze a Query's text (once per unit); see [`Tenancy::facts`].
    pub(super) fn analyze(&mut self, sql: &[u8], key: &[u8], std_strings: bool) -> &Facts {
        router::analyze_checked(sql, key, std_strings, &mut self.facts, &mut self.alt_facts);
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
        let mut n = 0;
        for (t, frame) in msgs {
            if *t != tag::frontend::PARSE {
                continue;
            }
            let query = Parse::parse(&frame[5..])
                .map(|p| p.query)
                .unwrap_or_default();
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
        n
    }

    /// The analyses of the first `n` Parses of the batch.
    pub(super) fn batch_facts(&self, n: usize) -> &[Facts] {
        &self.batch_facts[..n.min(self.batch_facts.len())]
    }

    /// The analysis of the batch's `i`th Parse, taken (to keep with its statement).
    pub(super) fn take_parse_facts(&mut self, i: usize) -> Option<Facts> {
        self.batch_facts.get_mut(i).map(std::mem::take)
    }

    /// Decide the Query analyzed last.
    pub(super) fn decide_query(&mut self, rt: &Routing, v: View) -> Decision {
        let view = view(&self.tenants, self.pinned, v);
        router::decide(
            rt,
            &view,
            router::Unit::query(&self.facts),
            &mut self.mentions,
        )
    }

    /// Decide a FunctionCall.
    pub(super) fn decide_function_call(&mut self, rt: &Routing, v: View) -> Decision {
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
        let view = view(&self.tenants, self.pinned, v);
        let batch_facts = &self.batch_facts;
        // Statements as of each point in the batch: a Parse in it, else an earlier one.
        let mut pi = 0;
        let mut unnamed_at: Option<InBatch<'_>> = None;
        let mut named: Option<HashMap<&[u8], InBatch<'_>>> = None;
        let items = msgs.iter().filter_map(move |(t, frame)| {
            let body = &frame[5..];
            match *t {
                tag::frontend::PARSE => {
                    let p = Parse::parse(body)?;
                    let at = (pi, p.param_types);
                    pi += 1;
                    if p.name.is_empty() {
                        unnamed_at = Some(at);
                    } else {
                        named.get_or_insert_with(HashMap::new).insert(p.name, at);
                    }
                    Some(Item::Parse(&batch_facts[at.0]))
                }
                tag::frontend::BIND => {
                    let b = Bind::parse(body)?;
                    let in_batch = if b.statement.is_empty() {
                        unnamed_at
                    } else {
                        named.as_ref().and_then(|m| m.get(b.statement).copied())
                    };
                    Some(match in_batch {
                        Some((fi, declared)) => Item::Bind(
                            &batch_facts[fi],
                            ParamTypes {
                                declared,
                                described: &[],
                            },
                            b,
                            b.portal,
                        ),
                        None if b.statement.is_empty() => match stmts.unnamed() {
                            Some((facts, types)) => Item::Bind(facts, types, b, b.portal),
                            None => Item::BindUnknown,
                        },
                        None => match stmts.get(b.statement) {
                            Some(def) => Item::Bind(&def.facts, def.param_types(), b, b.portal),
                            None => Item::BindUnknown,
                        },
                    })
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
                tag::frontend::DESCRIBE | tag::frontend::CLOSE => Some(Item::Other),
                _ => None,
            }
        });
        router::decide(rt, &view, router::Unit::batch(items), &mut self.mentions)
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
    }

    /// Whether this transaction holds the (canonical) tenant `key`.
    pub(super) fn holds(&self, key: &TenantKey) -> bool {
        self.tickets.iter().any(|t| t.key() == key)
    }

    /// Keep a hold on a tenant until the transaction ends.
    pub(super) fn keep(&mut self, ticket: Ticket) {
        self.tickets.push(ticket);
    }

    /// The transaction ended: its tenants are free to be paused. The buffer
    /// goes too: an idle client keeps no memory for tickets.
    pub(super) fn release_tickets(&mut self) {
        if self.tickets.capacity() > 0 {
            self.tickets = Vec::new();
        }
    }

    /// A LISTEN/UNLISTEN answered here, for the driver.
    pub(super) fn listen(&mut self, op: ListenOp) {
        self.listen_ops.push(op);
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
        lexing_unsure: v.lexing_unsure,
    }
}
