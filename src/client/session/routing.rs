//! Routing a unit of work (a Query or FunctionCall, or an extended batch up to
//! Sync/Flush): analyze its text once, ask [`crate::router::decide`] where it
//! goes, and carry that out: dispatch to a shard, answer locally (tenant SET,
//! held BEGIN), or refuse with transaction state kept exactly as Postgres would.

use super::core::{Core, Need, Unit};
use super::forward::describe_statement_name;
use super::state::TxnEvent;
use crate::config::PoolMode;
use crate::protocol::{self, tag, Bind, Parse, TxStatus};
use crate::router::bind::ParamTypes;
use crate::router::{
    self, Decision, Effects, Facts, Item, Kind, ListenOp, Local, SessionView, Source, TenantKey, Tx,
};
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

/// Where dispatched work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A shard the work needs; pins the transaction.
    Shard {
        shard: usize,
        tenant: Option<(TenantKey, Source)>,
    },
    /// Tenant-free: the attached server, else the home shard; pins nothing.
    Any,
}

/// A statement parsed earlier in the batch being routed: its index among the
/// batch's Parses and its declared parameter types.
type InBatch<'a> = (usize, &'a [u8]);

impl Core {
    /// Where the transaction stands, for [`router::decide`].
    pub(super) fn tx_view(&self) -> Tx {
        if let super::state::Txn::Failed = self.txn {
            return Tx::Failed;
        }
        let held = self.txn.held().map(|h| Tx::Held {
            stmts: !h.stmts.is_empty(),
        });
        let Some(a) = &self.att else {
            return held.unwrap_or(Tx::Idle);
        };
        if self.owns_server() {
            // A routed session-mode client stays on the shard it started on.
            return Tx::Pinned(a.shard);
        }
        if let Some(h) = held {
            // Tenant-free work runs outside the held BEGIN on this server.
            return h;
        }
        if a.status() != TxStatus::Idle || a.ext_stays() {
            return Tx::Pinned(a.shard);
        }
        if a.ext_open() {
            // An open batch that only parsed and described can be left for
            // another shard.
            return Tx::Idle;
        }
        if a.client_work_in_flight() {
            return Tx::Unsettled(a.shard);
        }
        Tx::Idle
    }

    /// Work that may change settings (standard_conforming_strings among them) is
    /// in flight: a text whose lexing depends on it must wait for the answer.
    fn settings_in_flight(&self) -> bool {
        self.att.as_ref().is_some_and(|a| {
            a.effects().any(Effects::SETTINGS.union(Effects::DYNAMIC)) && !a.settled()
        })
    }

    /// Route one unit of work.
    pub(super) fn route_unit(&mut self, unit: Unit) -> Need {
        if self.settings_in_flight() && has_backslash(&unit) {
            self.stalled = Some(unit);
            return Need::Io;
        }
        if let Unit::Batch(msgs) = &unit {
            if self.att.is_none() && is_sync_or_flush_only(msgs) {
                // Nothing is in flight: a lone Sync needs no server.
                if msgs.last().is_some_and(|(t, _)| *t == tag::frontend::SYNC) {
                    self.emit_rfq();
                }
                return Need::Io;
            }
        }
        let decision = match &unit {
            Unit::Simple(tag::frontend::QUERY, frame) => {
                // A simple Query destroys the unnamed statement (Postgres's
                // rule), whether it reaches a server or is answered here: a
                // held BEGIN or a local SET must not leave the client a
                // statement Postgres would have dropped.
                self.stmts.drop_unnamed();
                let sql = query_text(frame);
                self.analyze_text(sql);
                if !self.owns_server() && self.facts.has_listen() {
                    // Relayed by shardbouncer (`pool::listen`): on a pooled
                    // server it would listen for whoever gets the server next.
                    let ops = router::listen_ops(sql, self.settings.std_strings());
                    self.listen_locally(ops, unit);
                    return Need::Io;
                }
                if self.facts.is_only(Kind::Deallocate)
                    && self.facts.violation.is_none()
                    && self.deallocate(sql)
                {
                    // It acted on the client's own statement names: no server needed.
                    return Need::Io;
                }
                match self.db.routing.clone() {
                    Some(rt) => {
                        let view = SessionView {
                            tenants: &self.tenants,
                            tx: self.tx_view(),
                            pinned_by: self.tx_tenant,
                            std_strings: self.settings.std_strings(),
                        };
                        let unit = router::Unit::query(&self.facts);
                        router::decide(&rt, &view, unit, &mut self.mentions)
                    }
                    None => unrouted(&self.facts),
                }
            }
            Unit::Simple(_, _) => match self.db.routing.clone() {
                Some(rt) => {
                    let view = SessionView {
                        tenants: &self.tenants,
                        tx: self.tx_view(),
                        pinned_by: self.tx_tenant,
                        std_strings: self.settings.std_strings(),
                    };
                    router::decide(
                        &rt,
                        &view,
                        router::Unit::function_call(),
                        &mut self.mentions,
                    )
                }
                None => Decision::TenantFree,
            },
            Unit::Batch(msgs) => match self.db.routing.clone() {
                Some(rt) => self.decide_batch(&rt, msgs),
                None => self.unrouted_batch(msgs),
            },
        };
        tracing::trace!(
            client = self.client_id,
            ?decision,
            attached = self.att.is_some(),
            "route"
        );
        match decision {
            Decision::Wait => {
                self.stalled = Some(unit);
                Need::Io
            }
            Decision::Refuse(e) => {
                self.unit_error(unit, &e);
                Need::Io
            }
            Decision::Local(Local::HoldBegin | Local::BeginAgain)
                if self.db.settings.mode == PoolMode::Statement =>
            {
                // Refused before anything is answered: the client must not see a
                // BEGIN succeed and then the connection end.
                self.refuse_transaction_block()
            }
            Decision::Local(l) => {
                self.local(l, unit);
                Need::Io
            }
            Decision::TenantFree => {
                if let Unit::Batch(msgs) = &unit {
                    if self.att.is_none() && !self.owns_server() && is_parse_only_batch(msgs) {
                        // Named Parses + Sync: answered without a server.
                        if let Unit::Batch(msgs) = unit {
                            self.parse_locally(msgs);
                        }
                        return Need::Io;
                    }
                }
                self.dispatch(Target::Any, unit)
            }
            Decision::Shard { shard, tenant } => {
                self.dispatch(Target::Shard { shard, tenant }, unit)
            }
        }
    }

    /// Analyze a text into `self.facts` (once per unit).
    fn analyze_text(&mut self, sql: &[u8]) {
        let key = self
            .db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default();
        router::analyze_checked(
            sql,
            key,
            self.settings.std_strings(),
            &mut self.facts,
            &mut self.alt_facts,
        );
    }

    /// Analyze the Parses of a batch into `self.batch_facts`, in order.
    fn analyze_batch(&mut self, msgs: &[(u8, Bytes)]) {
        let key = self
            .db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default();
        let std = self.settings.std_strings();
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
                std,
                &mut self.batch_facts[n],
                &mut self.alt_facts,
            );
            n += 1;
        }
    }

    /// A batch on a database without routing: refused only for what no database
    /// may do (shardbouncer's statement names).
    fn unrouted_batch(&mut self, msgs: &[(u8, Bytes)]) -> Decision {
        self.analyze_batch(msgs);
        let parses = msgs
            .iter()
            .filter(|(t, _)| *t == tag::frontend::PARSE)
            .count();
        for f in self.batch_facts.iter().take(parses) {
            if let Decision::Refuse(e) = unrouted(f) {
                return Decision::Refuse(e);
            }
        }
        Decision::TenantFree
    }

    /// Route an extended batch: analyze each Parse in it, then decide over every
    /// Bind with the statement it names.
    fn decide_batch(&mut self, rt: &router::Routing, msgs: &[(u8, Bytes)]) -> Decision {
        self.analyze_batch(msgs);
        let view = SessionView {
            tenants: &self.tenants,
            tx: self.tx_view(),
            pinned_by: self.tx_tenant,
            std_strings: self.settings.std_strings(),
        };
        let (batch_facts, stmts) = (&self.batch_facts, &self.stmts);
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
                tag::frontend::DESCRIBE | tag::frontend::CLOSE => Some(Item::Other),
                _ => None,
            }
        });
        router::decide(rt, &view, router::Unit::batch(items), &mut self.mentions)
    }

    /// Answer work locally.
    fn local(&mut self, l: Local, unit: Unit) {
        let frame = match unit {
            Unit::Simple(tag::frontend::QUERY, frame) => frame,
            Unit::Batch(msgs) => return self.local_batch(l, msgs),
            // decide answers only simple Queries locally.
            other => {
                return self.unit_error(
                    other,
                    &PgError::new(
                        sqlstate::INTERNAL_ERROR,
                        "internal: local answer to a non-Query",
                    ),
                )
            }
        };
        match l {
            Local::SetTenant { .. } | Local::SetLocalOutsideTx | Local::SetNotExecuted => {
                let t = self.set_locally(l);
                self.simple_reply(t);
            }
            Local::HoldBegin => {
                // Held until a statement names the tenant (and so the shard).
                self.txn.apply(TxnEvent::HoldBegin(frame));
                self.simple_reply("BEGIN");
            }
            Local::BeginThenSetTenant { .. } => {
                // decide gives it for extended batches only.
                let e = PgError::new(
                    sqlstate::INTERNAL_ERROR,
                    "internal: BEGIN and SET answered for a simple Query",
                );
                self.unit_error(Unit::Simple(tag::frontend::QUERY, frame), &e);
            }
            Local::BeginAgain => {
                self.notice(
                    "WARNING",
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    "there is already a transaction in progress",
                );
                self.simple_reply("BEGIN");
            }
            Local::Hold => {
                let mut tags = Vec::new();
                router::statement::kinds(
                    query_text(&frame),
                    self.routing_key(),
                    self.settings.std_strings(),
                    |k| {
                        if let Some(Some(t)) = k.held_tag() {
                            tags.push(t);
                        }
                    },
                );
                self.settings.note_custom(&self.facts.custom_settings);
                self.txn.apply(TxnEvent::Hold(frame, self.facts.effects));
                for t in tags {
                    protocol::command_complete(&mut self.scratch, t);
                }
                let status = self.client_status();
                protocol::ready_for_query(&mut self.scratch, status);
                self.reply_ready(tag::frontend::QUERY);
            }
            Local::EndHeld { commit } => {
                let failed = matches!(self.txn, super::state::Txn::Failed);
                let t = if commit && !failed {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                self.txn.apply(TxnEvent::End);
                self.tenants.local = None;
                self.simple_reply(t);
            }
        }
    }

    /// Answer a simple Query holding LISTEN or UNLISTEN. Made of nothing else,
    /// it is answered as Postgres answers it and handed to the driver; with
    /// other statements, or in a form not understood, it is refused, never run
    /// on a server.
    ///
    /// A LISTEN inside a transaction takes effect at once (Postgres waits for
    /// the COMMIT); notifications still arrive only between transactions.
    fn listen_locally(&mut self, ops: Option<Vec<ListenOp>>, unit: Unit) {
        let Some(ops) = ops else {
            let e = if self.facts.count == 1 {
                PgError::new(
                    sqlstate::SYNTAX_ERROR,
                    "syntax error in LISTEN or UNLISTEN: a channel name is expected",
                )
            } else {
                PgError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "LISTEN and UNLISTEN cannot share a Query with other statements \
                     in transaction pooling (shardbouncer relays notifications)",
                )
            };
            return self.unit_error(unit, &e);
        };
        if self.client_status() == TxStatus::Failed {
            let e = PgError::new(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            return self.unit_error(unit, &e);
        }
        for op in ops {
            let t = match op {
                ListenOp::Listen(_) => "LISTEN",
                _ => "UNLISTEN",
            };
            protocol::command_complete(&mut self.scratch, t);
            self.listen_ops.push(op);
        }
        let status = self.client_status();
        protocol::ready_for_query(&mut self.scratch, status);
        self.reply_ready(tag::frontend::QUERY);
    }

    /// Carry out a `SET key` / `RESET key` answered locally; its command tag.
    fn set_locally(&mut self, l: Local) -> &'static str {
        match l {
            Local::SetTenant { local, key } => {
                match key {
                    None => {
                        self.tenants.set = None;
                        self.tenants.local = None;
                    }
                    Some(k) if local => self.tenants.local = Some(k),
                    Some(k) => self.tenants.set = Some(k),
                }
                if key.is_some() {
                    "SET"
                } else {
                    "RESET"
                }
            }
            Local::SetLocalOutsideTx => {
                // As Postgres: a warning, and no effect.
                self.notice(
                    "WARNING",
                    sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                    "SET LOCAL can only be used in transaction blocks",
                );
                "SET"
            }
            _ => "SET",
        }
    }

    /// Answer an extended batch of `SET key` / `RESET key` as Postgres answers
    /// each message (the router sends nothing else here): ParseComplete,
    /// BindComplete, NoData, the SET's CommandComplete at its Execute, and
    /// ReadyForQuery at Sync. Nothing reaches a server.
    fn local_batch(&mut self, l: Local, msgs: Vec<(u8, Bytes)>) {
        use tag::frontend as f;
        if self.att.as_ref().is_some_and(|a| a.ext_open()) {
            // The server is inside an extended batch the client has not ended
            // with Sync: an error there makes Postgres skip this SET, and whether
            // one comes is not known yet. Refused, in order, like any message
            // there (a skipping server skips the refusal too).
            let e = PgError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "SET {} through Parse/Bind/Execute cannot follow messages not yet ended by Sync",
                    String::from_utf8_lossy(self.routing_key())
                ),
            );
            return self.unit_error(Unit::Batch(msgs), &e);
        }
        let mut parses = 0;
        // BEGIN then SET: the BEGIN's text (held, and replayed on the tenant's
        // shard like a simple BEGIN), until its Execute.
        let mut begin: Option<Bytes> = None;
        let mut begun = false;
        for i in 0..msgs.len() {
            let (t, frame) = &msgs[i];
            let body = &frame[5..];
            match *t {
                f::PARSE => {
                    let Some(p) = Parse::parse(body) else {
                        let e =
                            PgError::new(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message");
                        return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                    };
                    parses += 1;
                    let analyzed = self.batch_facts.get_mut(parses - 1).map(std::mem::take);
                    let facts = self.parse_facts(p.query, analyzed);
                    if facts.is_only(Kind::Begin) {
                        let mut q = BytesMut::new();
                        protocol::query(&mut q, &String::from_utf8_lossy(p.query));
                        begin = Some(q.freeze());
                    }
                    self.counters.client_parse();
                    if p.name.is_empty() {
                        let at = p.param_types.as_ptr() as usize - frame.as_ptr() as usize;
                        let kept = Bytes::copy_from_slice(frame);
                        let declared = kept.slice(at..at + p.param_types.len());
                        self.stmts.set_unnamed(facts, kept, declared);
                        if let Some(a) = self.att.as_mut() {
                            // The server's unnamed statement is no longer the client's.
                            a.set_unnamed_current(false);
                        }
                    } else if let Err(e) = self.register_statement(&p, facts) {
                        return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                    }
                    protocol::parse_complete(&mut self.scratch);
                    self.reply(f::PARSE);
                }
                f::BIND => {
                    protocol::bind_complete(&mut self.scratch);
                    self.reply(f::BIND);
                }
                f::DESCRIBE => {
                    if body.first() == Some(&b'S') {
                        // SET takes no parameters.
                        protocol::parameter_description(&mut self.scratch, &[]);
                    }
                    protocol::no_data(&mut self.scratch);
                    self.reply(f::DESCRIBE);
                }
                f::EXECUTE => {
                    let t = match l {
                        Local::BeginThenSetTenant { .. } if !begun => {
                            // The router checked: the BEGIN runs first, once.
                            begun = true;
                            let frame = begin.take().unwrap_or_else(|| {
                                let mut q = BytesMut::new();
                                protocol::query(&mut q, "BEGIN");
                                q.freeze()
                            });
                            self.txn.apply(TxnEvent::HoldBegin(frame));
                            "BEGIN"
                        }
                        Local::BeginThenSetTenant { local, key } => {
                            self.set_locally(Local::SetTenant { local, key })
                        }
                        l => self.set_locally(l),
                    };
                    protocol::command_complete(&mut self.scratch, t);
                    self.reply(f::EXECUTE);
                }
                f::CLOSE => {
                    match (body.first(), describe_statement_name(body)) {
                        (Some(b'S'), Some(b"")) => self.stmts.drop_unnamed(),
                        (Some(b'S'), Some(n)) => {
                            self.stmts.remove(n);
                        }
                        _ => {}
                    }
                    protocol::close_complete(&mut self.scratch);
                    self.reply(f::CLOSE);
                }
                f::SYNC => {
                    let status = self.client_status();
                    protocol::ready_for_query(&mut self.scratch, status);
                    self.reply_ready(f::SYNC);
                }
                _ => {} // Flush: everything is already queued.
            }
        }
    }

    /// Routing refusals feed the metrics.
    fn count_refusal(&self, code: &str) {
        if self.db.routing.is_none() {
            return;
        }
        match code {
            sqlstate::NO_TENANT => crate::admin::metrics::routing_rejected(&self.db.name),
            sqlstate::FEATURE_NOT_SUPPORTED => {
                crate::admin::metrics::cross_shard_refused(&self.db.name)
            }
            _ => {}
        }
    }

    /// Send routed work where it belongs.
    fn dispatch(&mut self, target: Target, unit: Unit) -> Need {
        if let Some(a) = &self.att {
            let cur = a.shard;
            let want = match target {
                Target::Shard { shard, .. } => shard,
                Target::Any => cur,
            };
            if want == cur {
                if let Target::Shard { tenant, .. } = target {
                    if self.txn.held().is_some() {
                        // The server was taken for tenant-free work outside the held
                        // BEGIN; this work needs the transaction: open it now.
                        self.replay_held();
                    }
                    self.pin(tenant);
                    self.forward_pinned(unit);
                } else {
                    self.forward_unit(unit);
                }
                return Need::Io;
            }
            if a.ext_open() && !a.ext_stays() {
                // A tenant-free batch (Parse/Describe/Flush) is open on a server of
                // the wrong shard: end it, let the server go, then route this.
                if let Some(a) = self.att.as_mut() {
                    a.end_open_batch();
                }
                self.stalled = Some(unit);
                return Need::Io;
            }
            if !a.ext_open() && (!a.settled() || !a.to_server().is_empty()) {
                // The server is still busy: wait for it to finish before deciding.
                self.stalled = Some(unit);
                return Need::Io;
            }
            if a.ext_open() || a.status() != TxStatus::Idle || self.owns_server() {
                let msg = match &self.db.routing {
                    Some(rt) => format!(
                        "cross-shard transaction refused: this work belongs on shard {} but the session is pinned to shard {}",
                        rt.shard_name(want),
                        rt.shard_name(cur)
                    ),
                    None => "cross-shard work refused".to_string(),
                };
                self.unit_error(unit, &PgError::new(sqlstate::FEATURE_NOT_SUPPORTED, msg));
                return Need::Io;
            }
            // Idle on the wrong shard: give it back first, then route this again.
            self.stalled = Some(unit);
            return self.release();
        }
        let shard = match target {
            Target::Shard { shard, .. } => shard,
            Target::Any => self.home_shard(),
        };
        // A server first; the unit is routed again once it is attached.
        self.stalled = Some(unit);
        self.awaiting = Some(shard);
        self.awaiting_tenant = match target {
            Target::Shard { tenant, .. } => tenant.map(|(t, _)| t),
            Target::Any => None,
        };
        Need::Attach(shard)
    }

    /// Forward work that needs this shard: a batch it leaves open (Flush) is
    /// pinned to the shard.
    fn forward_pinned(&mut self, unit: Unit) {
        self.forward_unit(unit);
        if let Some(a) = self.att.as_mut() {
            a.pin_batch();
        }
    }

    /// Record what pinned the transaction (metrics, SHOW TENANTS, messages).
    fn pin(&mut self, tenant: Option<(TenantKey, Source)>) {
        if self.tx_tenant.is_some() {
            return;
        }
        let source = tenant.map(|(_, s)| s).unwrap_or(Source::Default);
        crate::admin::metrics::routing_decision(&self.db.name, source_name(source));
        if tenant.is_some() {
            self.tx_tenant = tenant;
        }
    }

    /// Replay the held BEGIN and the statements held with it on the attached
    /// server, ahead of the work that needs the transaction (ending an open
    /// tenant-free batch first, so BEGIN starts a real transaction block).
    fn replay_held(&mut self) {
        let Some(a) = self.att.as_mut() else { return };
        a.end_open_batch();
        let Some(h) = self.txn.apply(TxnEvent::Replay) else {
            return;
        };
        a.send_simple(
            crate::client::expect::Entry::swallow(tag::frontend::QUERY),
            h.begin,
        );
        for stmt in h.stmts {
            a.send_simple(
                crate::client::expect::Entry::swallow(tag::frontend::QUERY),
                stmt,
            );
        }
        a.add_effects(h.effects);
        a.set_unnamed_current(false);
    }

    /// Refuse a unit of work with an error, keeping protocol and transaction state
    /// exactly as Postgres would.
    pub(super) fn unit_error(&mut self, unit: Unit, e: &PgError) {
        self.count_refusal(e.code);
        let last = match &unit {
            Unit::Simple(t, _) => *t,
            Unit::Batch(m) => m.last().map(|(t, _)| *t).unwrap_or(tag::frontend::SYNC),
        };
        // A transaction shardbouncer holds is failed too, not only the statement.
        self.txn.apply(TxnEvent::Fail);
        let Some(a) = self.att.as_mut() else {
            return self.fail_unattached(last, e);
        };
        if a.skipping() {
            // The server already skips this batch after an earlier error: only
            // the Sync gets an answer.
            if last == tag::frontend::SYNC {
                let mut b = BytesMut::new();
                protocol::sync(&mut b);
                self.send_ext(tag::frontend::SYNC, b.freeze());
            } else {
                self.skip_until_sync = true;
            }
            return;
        }
        match (unit, last) {
            (Unit::Batch(_), tag::frontend::FLUSH) => {
                self.inject_error_ext(e);
                self.skip_until_sync = true;
            }
            // Through the extended protocol, then the client's Sync: if an earlier
            // error left the server skipping, it skips ours too and still answers
            // the Sync (a Query would be skipped and never answered).
            (Unit::Batch(_), _) => {
                self.inject_error_ext(e);
                let mut b = BytesMut::new();
                protocol::sync(&mut b);
                self.send_ext(tag::frontend::SYNC, b.freeze());
            }
            (Unit::Simple(..), _) => self.inject_error_simple(e),
        }
    }
}

/// Decision for a database without routing: everything goes to its one shard,
/// unless the text is refused outright.
fn unrouted(f: &Facts) -> Decision {
    match f.violation {
        Some(router::statement::Violation::ReservedName) => {
            Decision::Refuse(super::statements::reserved_name())
        }
        _ => Decision::TenantFree,
    }
}

/// Whether a unit's text has a backslash (its lexing depends on
/// standard_conforming_strings).
fn has_backslash(unit: &Unit) -> bool {
    match unit {
        Unit::Simple(tag::frontend::QUERY, f) => memchr::memchr(b'\\', f).is_some(),
        Unit::Simple(..) => false,
        Unit::Batch(m) => m
            .iter()
            .any(|(t, f)| *t == tag::frontend::PARSE && memchr::memchr(b'\\', f).is_some()),
    }
}

/// Query text of a 'Q' frame (without the trailing NUL).
pub(super) fn query_text(frame: &[u8]) -> &[u8] {
    let b = frame.get(5..).unwrap_or_default();
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// Named Parses then one Sync, nothing else.
fn is_parse_only_batch(msgs: &[(u8, Bytes)]) -> bool {
    msgs.len() >= 2
        && msgs.last().is_some_and(|(t, _)| *t == tag::frontend::SYNC)
        && msgs[..msgs.len() - 1]
            .iter()
            .all(|(t, f)| *t == tag::frontend::PARSE && is_named_parse(f))
}

/// Only a Sync or a Flush.
fn is_sync_or_flush_only(msgs: &[(u8, Bytes)]) -> bool {
    matches!(msgs, [(tag::frontend::SYNC | tag::frontend::FLUSH, _)])
}

/// A Parse of a named statement.
pub(super) fn is_named_parse(frame: &[u8]) -> bool {
    frame.first() == Some(&tag::frontend::PARSE) && frame.get(5).is_some_and(|&b| b != 0)
}

/// Metric label of a tenant source.
fn source_name(s: Source) -> &'static str {
    match s {
        Source::Startup => "startup",
        Source::Comment => "comment",
        Source::Set => "set",
        Source::Scan => "scan",
        Source::Default => "default",
    }
}
