//! Routing a unit of work (a Query or FunctionCall, or an extended batch up to
//! Sync/Flush): analyze its text once, ask [`crate::router::decide`] where it
//! goes, and carry that out: dispatch to a shard, answer locally (tenant SET,
//! held BEGIN), or refuse with transaction state kept exactly as Postgres would.

use super::core::{Core, Need, Unit};
use super::frames::{
    describe_statement_name, is_parse_only_batch, is_sync_or_flush_only,
    lexing_depends_on_settings, non_ascii_name, query_text,
};
use super::state::{Txn, TxnEvent};
use super::tenancy::View;
use crate::app::gate::Blocked;
use crate::config::PoolMode;
use crate::protocol::{self, tag, Parse, TxStatus};
use crate::router::copy::CopyIn;
use crate::router::{self, Decision, Effects, Facts, Kind, ListenOp, Local, Source, TenantKey, Tx};
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};

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

impl Core {
    /// Where the transaction stands, for [`router::decide`].
    fn tx_view(&self) -> Tx {
        if let super::state::Txn::Failed(_) = self.txn {
            return Tx::Failed;
        }
        let held = self.txn.held().map(|h| Tx::Held {
            stmts: !h.stmts.is_empty(),
        });
        let Some(a) = &self.att else {
            return held.unwrap_or(Tx::Idle);
        };
        if let Some(h) = held {
            // Tenant-free work runs outside the held BEGIN on this server;
            // its COMMIT or ROLLBACK ends the held BEGIN here, in session
            // mode too (probe CM F3: taken for the server's, where no
            // transaction was open, it left the BEGIN held, to be replayed
            // ahead of the client's next work, which then never committed).
            return h;
        }
        if self.owns_server() {
            // A routed session-mode client stays on the shard it started on.
            return Tx::Pinned(a.shard());
        }
        if a.status() != TxStatus::Idle || a.ext_stays() || a.in_copy_batch() {
            return Tx::Pinned(a.shard());
        }
        if a.ext_open() {
            // An open batch that only parsed and described can be left for
            // another shard.
            return Tx::Idle;
        }
        if a.client_work_in_flight() {
            return Tx::Unsettled(a.shard());
        }
        Tx::Idle
    }

    /// Work that may change settings (standard_conforming_strings and
    /// client_encoding among them, `SET LOCAL` included) is in flight: a text
    /// whose lexing depends on them must wait for the answer.
    fn settings_in_flight(&self) -> bool {
        self.att
            .as_ref()
            .is_some_and(|a| a.effects().may_change_lexing() && !a.settled())
    }

    /// The client's encoding (or another setting that changes how its
    /// bytes are read) may change before its next message runs: work in
    /// flight, held, or open in a batch without Sync may set it.
    pub(super) fn encoding_unsure(&self) -> bool {
        self.settings_in_flight() || self.lexing_may_change()
    }

    /// [`View::lexing_unsure`]: statements held with a locally answered
    /// BEGIN, or run in a batch with no Sync yet, may have changed a
    /// setting that changes how text is read.
    fn lexing_may_change(&self) -> bool {
        self.txn
            .held()
            .is_some_and(|h| h.effects.may_change_lexing())
            || self
                .att
                .as_ref()
                .is_some_and(|a| a.ext_open() && a.effects().may_change_lexing())
    }

    /// The session's tenant may change when the work in flight is answered:
    /// a `SET LOCAL` tenant ends with its transaction, and a `SET` made in it
    /// is undone by its ROLLBACK. Work behind that must wait to be routed
    /// (probe: a statement pipelined right behind COMMIT ran on the
    /// transaction's shard, under a tenant that was gone).
    fn tenant_in_flight(&self) -> bool {
        let t = self.route.tenants();
        (t.local.is_some() || t.set_in_tx)
            && self.att.as_ref().is_some_and(|a| a.client_work_in_flight())
    }

    /// The server is inside a COPY's batch ([`super::attachment::Attachment::in_copy_batch`]):
    /// nothing may be answered here until its Sync. A local answer would
    /// queue behind the COPY's, which Postgres holds until the client's
    /// next Sync (probes VV, XX: a `SET tenant_id`, `RESET tenant_id`,
    /// LISTEN there hung the client and kept its server for good). Such
    /// work is refused through the server, in order ([`in_copy_batch_refusal`]).
    pub(super) fn in_copy_batch(&self) -> bool {
        self.att.as_ref().is_some_and(|a| a.in_copy_batch())
    }

    /// Route one unit of work.
    pub(super) fn route_unit(&mut self, unit: Unit) -> Need {
        if (self.settings_in_flight() && lexing_depends_on_settings(&unit))
            || self.tenant_in_flight()
        {
            self.wait.stall(unit);
            return Need::Io;
        }
        if self
            .local_portal
            .as_ref()
            .is_some_and(|p| p.epoch != self.route.tx_ends())
        {
            // Its transaction ended: so did the portal, as on Postgres.
            self.local_portal = None;
        }
        let local = match (&self.local_portal, &unit) {
            (Some(p), Unit::Batch(msgs)) => portal_use(msgs, &p.name),
            _ => PortalUse::None,
        };
        // LISTEN/UNLISTEN through the extended protocol (asyncpg's
        // add_listener): answered here, relayed by shardbouncer. A LISTEN
        // portal bound here runs there.
        let Some(unit) = self.listen_batch(unit) else {
            return Need::Io;
        };
        match local {
            PortalUse::Run => {
                // The server's portal of that name is an older one: run, it
                // would give the client what it did not ask for (session
                // fuzz: an earlier SELECT's rows).
                let e = PgError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "this portal was bound to a statement shardbouncer answers itself \
                     (a SET of the tenant key, LISTEN, UNLISTEN): send its Execute in the \
                     same batch as its Bind, with no other work",
                );
                self.unit_error(unit, &e);
                return Need::Io;
            }
            PortalUse::Rebound => self.local_portal = None,
            PortalUse::None => {}
        }
        let work = !matches!(&unit, Unit::Batch(msgs) if is_sync_or_flush_only(msgs));
        if !work && self.att.is_none() {
            // Nothing is in flight: a lone Sync needs no server.
            if let Unit::Batch(msgs) = &unit {
                if msgs.last().is_some_and(|(t, _)| *t == tag::frontend::SYNC) {
                    self.emit_rfq();
                }
            }
            return Need::Io;
        }
        if !work && self.owns_server() && matches!(self.txn, Txn::OnServer) {
            // Session mode: a Sync or Flush alone runs nothing on the
            // session's server, whatever its tenant has become since; an
            // error for it answers no statement (probe DA F4: after a move
            // or during a pause, each lone Sync got 0A000 or 55000, and
            // psycopg's pipeline mode hung on it).
            self.forward_unit(unit);
            return Need::Io;
        }
        if work && !self.owns_server() && self.att.as_ref().is_some_and(|a| a.end_in_flight()) {
            // Work behind a transaction's end still in flight: where it goes,
            // and whether it is refused, depend on the transaction it ends
            // (probe NN: a ROLLBACK, then work naming no tenant, sent
            // together, ran on the ended transaction's shard). Decided once
            // everything in flight has been answered. (A lone Sync or Flush
            // is no work to decide, and the answers may wait for it.)
            self.wait.stall(unit);
            return Need::Io;
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
                if !self.owns_server() && self.route.facts().has_listen() {
                    if self.in_copy_batch() {
                        self.unit_error(unit, &in_copy_batch_refusal());
                        return Need::Io;
                    }
                    // Relayed by shardbouncer (`pool::listen`): on a pooled
                    // server it would listen for whoever gets the server next.
                    let ops = router::listen_ops(sql, self.settings.std_strings());
                    self.listen_locally(ops, unit);
                    return Need::Io;
                }
                let facts = self.route.facts();
                if facts.is_only(Kind::Deallocate)
                    && facts.violation.is_none()
                    && !self.in_copy_batch()
                    && self.deallocate(sql)
                {
                    // It acted on the client's own statement names: no server needed.
                    return Need::Io;
                }
                match self.db.routing.clone() {
                    Some(rt) => {
                        let v = self.view();
                        self.route.decide_query(&rt, v)
                    }
                    None => unrouted(self.route.facts()),
                }
            }
            Unit::Simple(_, _) => match self.db.routing.clone() {
                Some(rt) => {
                    let v = self.view();
                    self.route.decide_function_call(&rt, v)
                }
                None => Decision::TenantFree,
            },
            Unit::Batch(msgs) => match self.db.routing.clone() {
                Some(rt) => {
                    self.analyze_batch(msgs);
                    let mut v = self.view();
                    v.runs_rollback_to = self
                        .att
                        .as_ref()
                        .is_some_and(|a| a.runs_rollback_to_portal(msgs));
                    let d = self.route.decide_batch(&rt, v, msgs, &self.stmts);
                    if self.route.batch_changes_lexing()
                        && msgs.iter().any(|(t, f)| non_ascii_name(*t, &f[5..]))
                    {
                        // The batch may change the encoding its later names
                        // are read in (see `non_ascii_name`).
                        Decision::Refuse(PgError::new(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "prepared statement and portal names past ASCII cannot follow a \
                             change of client_encoding in the same batch on a routed database",
                        ))
                    } else {
                        d
                    }
                }
                None => self.unrouted_batch(msgs),
            },
        };
        tracing::trace!(
            client = self.client_id,
            ?decision,
            attached = self.att.is_some(),
            "route"
        );
        // (Not inside a COPY's batch: its answer waits for what comes next.)
        let in_flight = self
            .att
            .as_ref()
            .is_some_and(|a| a.client_work_in_flight() && !a.in_copy_batch());
        if !matches!(decision, Decision::Refuse(_) | Decision::Wait)
            && matches!(unit, Unit::Simple(tag::frontend::QUERY, _))
            && !self.owns_server()
            && self.route.facts().unlisten_all
        {
            // `UNLISTEN *` among other statements (a driver pool's reset on
            // release): the channels shardbouncer relays for the client go
            // here; on the server it has nothing to undo.
            self.route.listen(ListenOp::UnlistenAll);
        }
        match decision {
            Decision::Wait => {
                self.wait.stall(unit);
                Need::Io
            }
            Decision::Refuse(_)
                if in_flight
                    && matches!(unit, Unit::Simple(tag::frontend::QUERY, _))
                    && self.route.facts().count == 1
                    && matches!(
                        self.route.facts().first,
                        Kind::SetTenant { .. } | Kind::ResetTenant
                    ) =>
            {
                // Judged against the transaction the work in flight may end
                // (a SET of another shard's tenant behind a pipelined
                // ROLLBACK): judged again once it has been answered.
                self.wait.stall(unit);
                Need::Io
            }
            Decision::Refuse(e) => {
                if matches!(unit, Unit::Simple(tag::frontend::QUERY, _))
                    && self.route.facts().first == Kind::Begin
                    && self.route.facts().count > 1
                    && self.client_status() == TxStatus::Idle
                    && !self.txn.is_local()
                    && self.att.is_none()
                    && !self.owns_server()
                {
                    // `BEGIN; <refused>`: in Postgres the BEGIN runs and the
                    // error fails its transaction, so the client's next
                    // statements get 25P02 until it ends (re-probe P: left
                    // idle instead, the client's next INSERT committed on its
                    // own and outlived its ROLLBACK). The BEGIN is held, and
                    // failed by the refusal.
                    let mut b = BytesMut::new();
                    protocol::query(&mut b, "BEGIN");
                    self.txn.apply(TxnEvent::HoldBegin(b.freeze()));
                }
                self.unit_error(unit, &e);
                Need::Io
            }
            Decision::Local(Local::HoldBegin | Local::BeginAgain | Local::BeginThenRest)
                if self.db.settings.mode == PoolMode::Statement =>
            {
                // Refused before anything is answered: the client must not see a
                // BEGIN succeed and then the connection end.
                self.refuse_transaction_block()
            }
            Decision::Local(
                Local::SetTenant { .. } | Local::SetNotExecuted | Local::BeginThenSetTenant { .. },
            ) if in_flight && matches!(unit, Unit::Batch(_)) => {
                // A portal bound here is the client's until its transaction
                // ends, counted by the transaction ends seen so far: with
                // answers still owed, ends of earlier work would be counted
                // as its own, and a later Execute of it would run the
                // server's older portal (session fuzz: another statement's
                // rows). Routed again once they came.
                self.wait.stall(unit);
                Need::Io
            }
            Decision::Local(Local::SetTenant { local: false, .. }) if in_flight => {
                // Whether a session SET lands inside a transaction (whose
                // ROLLBACK undoes it) depends on the answers still owed: a
                // ROLLBACK in flight ends one. Routed again once they came.
                self.wait.stall(unit);
                Need::Io
            }
            Decision::Local(Local::BeginThenRest) => self.begin_then_rest(unit),
            Decision::Local(l) => {
                self.local(l, unit);
                Need::Io
            }
            Decision::TenantFree | Decision::Shard { .. } if self.parse_only_unattached(&unit) => {
                // Named Parses + Sync: answered without a server, whichever
                // shard the session's tenant would pick (a Parse runs
                // nothing). Waiting for a server here deadlocked pgbench -M
                // prepared on a routed database once its clients held every
                // server in a transaction (probe).
                if let Unit::Batch(msgs) = unit {
                    self.parse_locally(msgs);
                }
                Need::Io
            }
            Decision::TenantFree => {
                let unit = match self.session_pin_holds(unit) {
                    Ok(unit) => unit,
                    Err(need) => return need,
                };
                // (A batch that only binds a COPY's portal is tenant-free:
                // its Execute, in a later batch, runs it.)
                let shard = self
                    .att
                    .as_ref()
                    .map_or_else(|| self.home_shard(), |a| a.shard());
                if let Err(e) = self.copy_of_unit(&unit, shard) {
                    self.unit_error(unit, &e);
                    return Need::Io;
                }
                let ends = self.unit_ends(&unit);
                let need = self.dispatch(Target::Any, unit);
                self.sent_ends(ends);
                need
            }
            Decision::Shard { shard, tenant } => {
                let unit = match self.session_pin_holds(unit) {
                    Ok(unit) => unit,
                    Err(need) => return need,
                };
                // Work that names no tenant in a transaction a tenant placed
                // runs as that tenant's: moved since, it may not reach the
                // old shard either (its COMMIT and ROLLBACK are tenant-free).
                let routed_by = tenant
                    .map(|(t, _)| t)
                    .or_else(|| self.route.pinned().map(|(t, _)| t));
                if self.gate.any_paused() {
                    if let Some(t) = self.held_and_paused(routed_by) {
                        return self.tenant_blocked(t, Blocked::Paused, unit);
                    }
                }
                if let Some(t) = self.moved_in_open_transaction(routed_by) {
                    return self.tenant_blocked(t, Blocked::Stale, unit);
                }
                if let Err((t, why)) = self.enter_tenants(routed_by) {
                    return self.tenant_blocked(t, why, unit);
                }
                if let Err(e) = self.copy_of_unit(&unit, shard) {
                    self.unit_error(unit, &e);
                    return Need::Io;
                }
                let ends = self.unit_ends(&unit);
                let need = self.dispatch(Target::Shard { shard, tenant }, unit);
                self.sent_ends(ends);
                need
            }
        }
    }

    /// The statement a Bind (`body`) binds, for [`Local::Hold`]: its text as
    /// a Query to replay after the held BEGIN, its effects (read back at the
    /// transaction's end, as a held Query's), and its command tag.
    fn holdable_bound(&mut self, body: &[u8]) -> Option<(Bytes, Effects, &'static str)> {
        let ((tag, mut effects, names, resets), stmt) = self.bound_statement(body, |f| {
            Some((
                f.first.held_tag()??,
                f.effects,
                f.custom_settings.clone(),
                f.resets_all,
            ))
        })?;
        if !self.settings.note_custom(&names) {
            effects.add(Effects::UNNAMED_SETTINGS);
        }
        if resets {
            // A held RESET ALL ends a SET tenant (re-probe P).
            self.route.reset(true, self.owns_server());
        }
        Some((stmt, effects, tag))
    }

    /// The text of the statement a Bind (`body`) binds, as a Query frame to
    /// hold, when that statement is a bare BEGIN the client prepared earlier.
    fn begin_text_bound(&self, body: &[u8]) -> Option<Bytes> {
        self.bound_statement(body, |f| f.is_only(Kind::Begin).then_some(()))
            .map(|((), stmt)| stmt)
    }

    /// The statement a Bind (`body`) binds, if `pick` takes it (from the
    /// analysis kept since its Parse): what `pick` read of it, and its text as
    /// a Query frame, to hold with a held BEGIN and replay after it.
    fn bound_statement<T>(
        &self,
        body: &[u8],
        pick: impl FnOnce(&Facts) -> Option<T>,
    ) -> Option<(T, Bytes)> {
        let bind = protocol::Bind::parse(body)?;
        let (picked, query) = if bind.statement.is_empty() {
            let picked = pick(self.stmts.unnamed()?.0)?;
            let frame = self.stmts.unnamed_parse()?;
            (picked, Parse::parse(&frame[5..])?.query.to_vec())
        } else {
            let def = self.stmts.get(bind.statement)?;
            (pick(&def.facts)?, def.query.to_vec())
        };
        let mut q = BytesMut::new();
        protocol::query(&mut q, &String::from_utf8_lossy(&query));
        Some((picked, q.freeze()))
    }

    /// [`Local::BeginThenRest`]: the BEGIN's messages are answered here and
    /// the BEGIN held, as a simple BEGIN is; the rest of the batch is routed
    /// on its own, inside the held transaction.
    fn begin_then_rest(&mut self, unit: Unit) -> Need {
        let Unit::Batch(mut msgs) = unit else {
            let e = PgError::new(
                sqlstate::INTERNAL_ERROR,
                "internal: BEGIN held for a non-batch",
            );
            self.unit_error(unit, &e);
            return Need::Io;
        };
        if self.att.as_ref().is_some_and(|a| a.ext_open()) {
            // A batch not yet ended by Sync is open on a server: its answers
            // come first, so nothing can be answered here. The batch runs as
            // a whole, as before (a later tenant of another shard is refused),
            // its COPY checked as any batch's.
            let unit = Unit::Batch(msgs);
            let shard = self.att.as_ref().map_or(0, |a| a.shard());
            if let Err(e) = self.copy_of_unit(&unit, shard) {
                self.unit_error(unit, &e);
                return Need::Io;
            }
            return self.dispatch(Target::Any, unit);
        }
        let Some(at) = msgs.iter().position(|(t, _)| *t == tag::frontend::EXECUTE) else {
            let e = PgError::new(sqlstate::INTERNAL_ERROR, "internal: no BEGIN to hold");
            self.unit_error(Unit::Batch(msgs), &e);
            return Need::Io;
        };
        let rest = msgs.split_off(at + 1);
        self.local_batch(Local::BeginThenRest, msgs);
        if self.batch.skipping() {
            // The BEGIN's own messages failed (a Parse of a name in use, say):
            // nothing is held, and Postgres would skip the rest up to the Sync.
            // Routed, the rest left the skip on past its Sync, so the client's
            // next Query went unanswered (session fuzz).
            for (t, frame) in rest {
                self.skipped(t, frame);
            }
            return Need::Io;
        }
        if rest.is_empty() {
            // The batch was sliced right at the BEGIN's Execute: nothing
            // else to route yet (an empty unit would take a server for nothing).
            return Need::Io;
        }
        self.route_unit(Unit::Batch(rest))
    }

    /// A batch of named Parses and a Sync, with no server attached (and none
    /// owned): it can be answered without one.
    fn parse_only_unattached(&self, unit: &Unit) -> bool {
        matches!(unit, Unit::Batch(msgs) if is_parse_only_batch(msgs))
            && self.att.is_none()
            && !self.owns_server()
    }

    /// A unit of work going to `shard`: when it runs a `COPY .. FROM STDIN`,
    /// the rows' check starts (or stops, for one whose rows hold no key);
    /// with one running, the COPY data the unit carries (sent right behind
    /// its Execute) is checked now. Refused: nothing of the unit is sent.
    fn copy_of_unit(&mut self, unit: &Unit, shard: usize) -> Result<(), PgError> {
        let Some(rt) = self.db.routing.clone() else {
            return Ok(());
        };
        // Its data is held to ASCII when the encoding may hide ASCII bytes
        // in characters, or may change before the COPY runs (probe CK F4).
        let v = self.view();
        let ascii = v.ascii_only || v.lexing_unsure || self.settings_in_flight();
        let copy = match unit {
            Unit::Simple(tag::frontend::QUERY, _) => self.route.facts().copy.clone(),
            Unit::Batch(_) => self.route.batch_copy(),
            Unit::Simple(..) => CopyIn::None,
        };
        if matches!(unit, Unit::Simple(tag::frontend::QUERY, _))
            && self.route.facts().copies == u8::MAX
        {
            // Each COPY the server starts is counted against those read
            // (`Entry::copies`), which stops there.
            return Err(PgError::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "more than {} COPY FROM STDIN statements in one Query",
                    u8::MAX - 1
                ),
            ));
        }
        if let CopyIn::Unreadable(_) = &copy {
            self.route.end_copy();
            return Err(router::decide::violation_refusal(
                &rt,
                router::statement::Violation::UnreadableCopy,
            ));
        }
        let Unit::Batch(msgs) = unit else {
            if matches!(unit, Unit::Simple(tag::frontend::QUERY, _))
                && self.route.facts().rollback_to
            {
                self.route.rolls_back_to();
            }
            if copy != CopyIn::None {
                let ascii = ascii || self.route.facts().effects.may_change_lexing();
                self.route.arm_copy(&copy, shard, ascii);
            }
            return Ok(());
        };
        // In the batch's order: a Bind of a COPY names its portal's COPY,
        // an Execute of that portal starts it (its data, after it, is its
        // rows; copy messages before it, Postgres ignores).
        if self
            .att
            .as_ref()
            .is_none_or(|a| a.status() == TxStatus::Idle && !a.ext_open() && a.settled())
        {
            self.route.portals_gone();
        }
        let ascii = ascii || self.route.batch_changes_lexing();
        if self.route.batch_rolls_back()
            || self
                .att
                .as_ref()
                .is_some_and(|a| a.runs_rollback_to_portal(msgs))
        {
            self.route.rolls_back_to();
        }
        for (i, (t, frame)) in msgs.iter().enumerate() {
            let out = match *t {
                tag::frontend::BIND => match (
                    protocol::Bind::parse(&frame[5..]),
                    self.route.batch_copy_at(i).cloned(),
                ) {
                    (Some(b), Some(c)) => {
                        if self.route.bind_copy(b.portal, c) {
                            Ok(())
                        } else {
                            Err(PgError::new(
                                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                                format!(
                                    "more than {} portals bound to COPY FROM STDIN in one transaction",
                                    super::tenancy::MAX_COPY_PORTALS
                                ),
                            ))
                        }
                    }
                    _ => Ok(()),
                },
                tag::frontend::EXECUTE => {
                    let portal = protocol::cstr(&frame[5..])
                        .map(|(p, _)| p)
                        .unwrap_or_default();
                    if self.route.execute_copy(portal, shard, ascii) {
                        Ok(())
                    } else {
                        Err(PgError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!(
                                "portal \"{}\" was bound to two different COPY FROM STDIN \
                                 statements around a ROLLBACK TO SAVEPOINT, and which one runs \
                                 only the server knows (a Bind may have failed): bind each COPY \
                                 to a portal of its own, or run it as a simple Query",
                                String::from_utf8_lossy(portal)
                            ),
                        ))
                    }
                }
                _ if !self.route.copy_armed() => Ok(()),
                tag::frontend::COPY_DATA => {
                    let v = self.view();
                    self.route.copy_rows(&rt, v, Some(&frame[5..]))
                }
                tag::frontend::COPY_DONE => {
                    let v = self.view();
                    self.route.copy_rows(&rt, v, None)
                }
                tag::frontend::COPY_FAIL => {
                    self.route.end_copy();
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = out {
                self.route.end_copy();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Routing's view of the session for one decision.
    pub(super) fn view(&self) -> View {
        View {
            tx: self.tx_view(),
            std_strings: self.settings.std_strings(),
            ascii_only: self.settings.ascii_only(),
            keys_ascii_only: self.settings.keys_ascii_only(),
            lexing_unsure: self.lexing_may_change(),
            owns_server: self.owns_server(),
            server_failed: self
                .att
                .as_ref()
                .is_some_and(|a| a.status() == TxStatus::Failed),
            runs_rollback_to: false,
            server_copies: self.owns_server() && self.stmts.any_copy(),
            held_state: self.txn.held().is_some_and(|h| {
                !h.stmts.is_empty()
                    || router::begin_has_modes(query_text(&h.begin), self.settings.std_strings())
            }),
            types_untrusted: self.settings.path_shadows()
                || self
                    .att
                    .as_ref()
                    .is_some_and(|a| a.effects().may_create_types())
                || self
                    .txn
                    .held()
                    .is_some_and(|h| h.effects.may_create_types()),
        }
    }

    /// Analyze a Query's text (once per unit).
    fn analyze_text(&mut self, sql: &[u8]) {
        let key = self
            .db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default();
        self.route.analyze(sql, key, self.settings.std_strings());
    }

    /// Analyze the Parses of a batch, in order; how many there were.
    fn analyze_batch(&mut self, msgs: &[(u8, Bytes)]) -> usize {
        let key = self
            .db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default();
        self.route
            .analyze_batch(msgs, key, self.settings.std_strings())
    }

    /// After a unit went (`ends`, from [`Self::unit_ends`]). One that ends
    /// its transaction `AND CHAIN`: the transaction it begins is on this
    /// shard, but no tenant placed it (probe: work with no tenant after
    /// `COMMIT AND CHAIN` ran on the old tenant's shard). Whatever placed
    /// the old one ends with it. One that may end its transaction: until it
    /// has been answered, work behind it waits (see
    /// [`Attachment::end_in_flight`](super::attachment::Attachment::end_in_flight)).
    fn sent_ends(&mut self, (chains, ends): (bool, bool)) {
        if chains {
            self.route.take_pinned();
        }
        if let Some(a) = self.att.as_mut() {
            a.sent_work(ends);
        }
    }

    /// The analysis of each statement `msgs` binds that was prepared before
    /// the batch; one parsed in the batch is its Parse's facts (the
    /// session's record of the name is still the one before). The unnamed
    /// statement apart: no allocation for the common Parse/Bind/Execute of
    /// it.
    fn bound_from_earlier(&self, msgs: &[(u8, Bytes)], mut f: impl FnMut(&Facts)) {
        let mut parsed_unnamed = false;
        let mut parsed: Vec<&[u8]> = Vec::new();
        for (t, frame) in msgs {
            match *t {
                tag::frontend::PARSE => match protocol::cstr(&frame[5..]) {
                    Some((b"", _)) => parsed_unnamed = true,
                    Some((name, _)) => parsed.push(name),
                    None => {}
                },
                tag::frontend::BIND => {
                    let Some(b) = protocol::Bind::parse(&frame[5..]) else {
                        continue;
                    };
                    let earlier = if b.statement.is_empty() {
                        (!parsed_unnamed).then(|| self.stmts.unnamed().map(|(f, _)| f))
                    } else {
                        (!parsed.contains(&b.statement))
                            .then(|| self.stmts.get(b.statement).map(|d| &d.facts))
                    };
                    if let Some(facts) = earlier.flatten() {
                        f(facts);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `unit` (analyzed) ends its transaction `AND CHAIN`, and
    /// whether it may end it at all (`COMMIT`, `ROLLBACK`, `PREPARE
    /// TRANSACTION`, with or without a chain).
    fn unit_ends(&self, unit: &Unit) -> (bool, bool) {
        match unit {
            Unit::Simple(tag::frontend::QUERY, _) => {
                let f = self.route.facts();
                (f.chains, f.ends_tx || f.chains)
            }
            Unit::Simple(..) => (false, false),
            Unit::Batch(msgs) => {
                let parses = msgs
                    .iter()
                    .filter(|(t, _)| *t == tag::frontend::PARSE)
                    .count();
                // A Bind of a statement prepared earlier runs its text too.
                let (mut bound_chains, mut bound_ends) = (false, false);
                self.bound_from_earlier(msgs, |f| {
                    bound_chains |= f.chains;
                    bound_ends |= f.ends_tx;
                });
                let facts = self.route.batch_facts(parses);
                // A BEGIN parsed after a statement that ends a transaction
                // (`COMMIT`, then `BEGIN`, each through Parse/Bind/Execute).
                let mut ended = false;
                let begins_after_end = facts.iter().any(|f| {
                    let begins = ended && f.is_only(Kind::Begin);
                    ended |= f.ends_tx;
                    begins
                });
                let chains = begins_after_end || facts.iter().any(|f| f.chains) || bound_chains;
                (chains, chains || ended || bound_ends)
            }
        }
    }

    /// A batch on a database without routing: refused only for what no database
    /// may do (shardbouncer's statement names).
    fn unrouted_batch(&mut self, msgs: &[(u8, Bytes)]) -> Decision {
        let parses = self.analyze_batch(msgs);
        for f in self.route.batch_facts(parses) {
            if let Decision::Refuse(e) = unrouted(f) {
                return Decision::Refuse(e);
            }
        }
        Decision::TenantFree
    }

    /// The tenant as the gate knows it: its canonical spelling under the map's
    /// key type (`042` and `42` of a bigint key are one tenant).
    pub(super) fn gate_key(&self, t: TenantKey) -> TenantKey {
        self.db
            .routing
            .as_ref()
            .and_then(|rt| rt.map.canonical_tenant(&t).ok())
            .unwrap_or(t)
    }

    /// Hold tenant `t` for this transaction (so a PAUSE of it waits for the
    /// transaction to end), unless it is paused, or moved since this session's
    /// configuration was built.
    fn enter_tenant(&mut self, t: TenantKey) -> Result<(), Blocked> {
        let key = self.gate_key(t);
        if self.route.holds(&key) {
            return Ok(());
        }
        let routed_with = self
            .db
            .routing
            .as_ref()
            .map(|rt| (self.db.name.as_str(), &*rt.map));
        match self
            .gate
            .enter(key, self.client_id, self.db.generation, routed_with)
        {
            Ok(ticket) => {
                self.route.keep(ticket);
                Ok(())
            }
            Err(why) => Err(why),
        }
    }

    /// Session mode keeps the server the session's tenant placed, by a comment
    /// or a predicate as much as at connect, and runs every later unit there,
    /// naming a tenant or not. So that tenant's pause applies to every unit,
    /// its ticket is taken (`decide` has already refused every unit once the
    /// map puts it elsewhere). `Err` is the unit answered.
    fn session_pin_holds(&mut self, unit: Unit) -> Result<Unit, Need> {
        if !self.owns_server() {
            return Ok(unit);
        }
        let (Some(_), Some((pin, _))) = (&self.att, self.route.pinned()) else {
            return Ok(unit);
        };
        match self.enter_tenant(pin) {
            Ok(()) => Ok(unit),
            Err(why) => Err(self.tenant_blocked(pin, why, unit)),
        }
    }

    /// A tenant of the unit (the one it is routed by, or placed by, or one
    /// it mentions) that a reload moved since this session's configuration
    /// was built, while a transaction holding it is open on a server
    /// (transaction mode): its next unit would run on the old shard (probe
    /// CW F2: a tenant's own transaction open across RELOAD kept writing
    /// there). [`Self::tenant_blocked`] refuses it (55000), as it refuses a
    /// tenant named for the first time in such a transaction; its COMMIT and
    /// ROLLBACK are tenant-free. In session mode only a transaction block
    /// counts (the session's next transaction is refused 0A000 once it
    /// takes up the reload). Work pipelined behind earlier transactions is
    /// not held for it: a first fix that did stalled some pipelining clients
    /// for good under repeated reloads (probe CY F1).
    fn moved_in_open_transaction(&self, routed_by: Option<TenantKey>) -> Option<TenantKey> {
        let open = self.att.as_ref().is_some_and(|a| {
            a.status() != TxStatus::Idle
                || (!self.owns_server() && matches!(self.tx_view(), Tx::Pinned(_)))
        });
        // The configuration the transaction's tenants were held with: the
        // session's, unless it took up a newer one behind work in flight
        // that turned out to open this transaction.
        let db = self.route.held_with().unwrap_or(&self.db);
        // (Every unit of a transaction asks: nothing spelled out unless a
        // tenant moved at all since that configuration.)
        if !open || !self.gate.any_moved_since(db.generation) {
            return None;
        }
        let routed_with = db.routing.as_ref().map(|rt| (db.name.as_str(), &*rt.map));
        let mentions = (0..self.route.mention_count()).map(|i| self.route.mention(i));
        routed_by.into_iter().chain(mentions).find(|t| {
            let key = self.gate_key(*t);
            self.route.holds(&key) && self.gate.moved_since(&key, db.generation, routed_with)
        })
    }

    /// Whether a tenant of the unit waiting for a server (the one it is
    /// routed by, or one it mentions: the last unit routed, as nothing is
    /// read while it waits) moved since configuration `generation`: then
    /// it is routed again (the driver's `Session::attach`). A move of another tenant
    /// leaves it its place in the queue and its deadline (probe DP F2).
    pub fn waiting_tenants_moved(&self, generation: u64) -> bool {
        let db = &self.db;
        let routed_with = db.routing.as_ref().map(|rt| (db.name.as_str(), &*rt.map));
        let mentions = (0..self.route.mention_count()).map(|i| self.route.mention(i));
        self.wait
            .awaited_tenant()
            .into_iter()
            .chain(mentions)
            .any(|t| {
                let key = self.gate_key(t);
                self.gate.moved_since(&key, generation, routed_with)
            })
    }

    /// A tenant of the unit that this session holds from its earlier work,
    /// paused since, with no transaction open on the server. Transaction
    /// mode holds a tenant for as long as the server stays attached, which
    /// for a client that pipelines without letting its answers catch up is
    /// for good (probe CY F3: PAUSE TENANT never took hold against one, and
    /// the MOVE was refused): [`Self::tenant_blocked`] lets the work in
    /// flight be answered and gives the server (and the hold) back, and the
    /// unit waits for the pause as new work does. (A transaction open on
    /// the server runs to its end through the pause, and so does the unit
    /// that asked for the server, as PAUSE counted it: probe DA F1, sent
    /// back as it got its server, it took the server with it.) Asked only
    /// while some tenant is paused.
    #[cold]
    fn held_and_paused(&self, routed_by: Option<TenantKey>) -> Option<TenantKey> {
        if self.owns_server() || !matches!(self.txn, Txn::OnServer) {
            return None;
        }
        let a = self.att.as_ref()?;
        if !a.carried_client_work()
            || a.status() != TxStatus::Idle
            || a.ext_open()
            || a.ext_stays()
            || a.in_copy_batch()
        {
            return None;
        }
        let mentions = (0..self.route.mention_count()).map(|i| self.route.mention(i));
        routed_by.into_iter().chain(mentions).find(|t| {
            let key = self.gate_key(*t);
            self.gate.is_paused(&key) && self.route.holds(&key)
        })
    }

    /// Hold every tenant the unit touches: the one it was routed by and every
    /// one it mentions (`/* tenant_id=1 */ INSERT ... VALUES (42, ..)` writes
    /// 42's rows on 1's shard, so a pause of 42 must hold it too). All or
    /// none: on a refusal, the tickets this unit took are given back.
    fn enter_tenants(&mut self, routed_by: Option<TenantKey>) -> Result<(), (TenantKey, Blocked)> {
        let before = self.route.ticket_count();
        // (By index, not collected: routing allocates nothing per unit.)
        for i in 0..=self.route.mention_count() {
            let t = match (i, routed_by) {
                (0, Some(t)) => t,
                (0, None) => continue,
                (i, _) => self.route.mention(i - 1),
            };
            if let Err(why) = self.enter_tenant(t) {
                self.route.drop_tickets_from(before);
                return Err((t, why));
            }
        }
        Ok(())
    }

    /// The unit's tenant is paused (being moved), or moved since this session's
    /// configuration was built: the unit waits for RESUME (the driver finds no
    /// pause for a stale map and goes on at once) before any of it reaches a
    /// server, and is then routed again with the configuration in force, so it
    /// runs where the map now puts the tenant. A held BEGIN waits with it. An
    /// idle server is given back first. A transaction already open on a server
    /// cannot wait (it holds a server, and perhaps locks, on the old shard): the
    /// unit is refused, and the transaction fails as Postgres would fail it.
    fn tenant_blocked(&mut self, t: TenantKey, why: Blocked, unit: Unit) -> Need {
        let key = self.gate_key(t);
        let Some(a) = &self.att else {
            self.wait.pause(key, unit);
            return Need::Paused(key);
        };
        // A server that is not idle (work outside a held BEGIN left it in a
        // transaction) cannot be given back either.
        if matches!(self.tx_view(), Tx::Pinned(_)) || a.status() != TxStatus::Idle {
            let what = match why {
                Blocked::Paused => "is paused (being moved)",
                Blocked::Stale => "moved to another shard",
            };
            let e = PgError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "tenant {} {what} after this transaction started; retry the \
                     transaction (it will run where the tenant is now)",
                    t.as_str()
                ),
            );
            self.unit_error(unit, &e);
            return Need::Io;
        }
        if a.ext_open() {
            // A tenant-free batch (Parse/Describe/Flush) is open: end it first.
            if let Some(a) = self.att.as_mut() {
                a.end_open_batch();
            }
            self.wait.stall(unit);
            return Need::Io;
        }
        self.wait.stall(unit);
        if !a.settled() || !a.to_server().is_empty() {
            // Routed again once the server has answered.
            return Need::Io;
        }
        self.release()
    }

    /// Answer work locally.
    fn local(&mut self, l: Local, unit: Unit) {
        if self.in_copy_batch() {
            return self.unit_error(unit, &in_copy_batch_refusal());
        }
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
                let (tag, _) =
                    router::statement::begin_parts(query_text(&frame), self.settings.std_strings());
                self.txn.apply(TxnEvent::HoldBegin(frame));
                self.simple_reply(tag);
            }
            Local::BeginThenSetTenant { .. } | Local::BeginThenRest | Local::CloseOnly => {
                // decide gives them for extended batches only.
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
                // Postgres applies its modes all the same (probe M: psycopg2
                // sends BEGIN before the application's START TRANSACTION
                // ISOLATION LEVEL SERIALIZABLE, which then ran READ
                // COMMITTED): held as the SET TRANSACTION that applies them
                // (the same warning again at the replay would be a second).
                let (tag, modes) =
                    router::statement::begin_parts(query_text(&frame), self.settings.std_strings());
                if let Some(m) = modes {
                    let mut q = BytesMut::new();
                    protocol::query(&mut q, &m);
                    self.txn
                        .apply(TxnEvent::Hold(q.freeze(), Effects::default()));
                }
                self.simple_reply(tag);
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
                let facts = self.route.facts();
                let mut effects = facts.effects;
                let resets = facts.resets_all;
                if !self.settings.note_custom(&facts.custom_settings) {
                    effects.add(Effects::UNNAMED_SETTINGS);
                }
                self.txn.apply(TxnEvent::Hold(frame, effects));
                if resets {
                    // A held RESET ALL ends a SET tenant as a sent one does,
                    // undone by the ROLLBACK (re-probe P: it never did).
                    self.route.reset(true, self.owns_server());
                }
                for t in tags {
                    protocol::command_complete(self.out.build(), t);
                }
                let status = self.client_status();
                protocol::ready_for_query(self.out.build(), status);
                self.reply_ready(tag::frontend::QUERY);
            }
            Local::EndHeld { commit } => {
                let t = self.end_held(commit);
                self.simple_reply(t);
            }
            Local::RollbackToHeld => self.rollback_to_held(frame),
        }
    }

    /// `ROLLBACK TO name` in a held transaction shardbouncer failed: held
    /// again with its statements up to that `SAVEPOINT name` (the rest, as
    /// Postgres rolls them back, go), answered `ROLLBACK`. A savepoint the
    /// held statements do not hold is Postgres's 3B001, and the transaction
    /// stays failed.
    fn rollback_to_held(&mut self, frame: Bytes) {
        match self.rollback_to_savepoint(query_text(&frame)) {
            Ok(()) => self.simple_reply("ROLLBACK"),
            Err(e) => self.unit_error(Unit::Simple(tag::frontend::QUERY, frame), &e),
        }
    }

    /// Go back to the savepoint `sql` (`ROLLBACK TO name`) names in the held
    /// transaction shardbouncer failed; 3B001 when it holds none so named.
    fn rollback_to_savepoint(&mut self, sql: &[u8]) -> Result<(), PgError> {
        use router::statement::{savepoint_op, SavepointOp};
        let std = self.settings.std_strings();
        let target = match savepoint_op(sql, std) {
            Some(SavepointOp::RollbackTo(n)) => n,
            _ => String::new(),
        };
        // The savepoints standing after each held statement, as Postgres
        // keeps them: RELEASE drops that one and those above it; ROLLBACK TO
        // keeps it and drops those above it.
        let mut stack: Vec<(String, usize)> = Vec::new();
        for (i, stmt) in self
            .txn
            .failed_held()
            .map_or(&[][..], |h| &h.stmts)
            .iter()
            .enumerate()
        {
            let Some(body) = stmt.get(5..) else { continue };
            let text = body.strip_suffix(&[0]).unwrap_or(body);
            match savepoint_op(text, std) {
                Some(SavepointOp::Savepoint(n)) => stack.push((n, i + 1)),
                Some(SavepointOp::Release(n)) => {
                    if let Some(at) = stack.iter().rposition(|(s, _)| *s == n) {
                        stack.truncate(at);
                    }
                }
                Some(SavepointOp::RollbackTo(n)) => {
                    if let Some(at) = stack.iter().rposition(|(s, _)| *s == n) {
                        stack.truncate(at + 1);
                    }
                }
                None => {}
            }
        }
        match stack.iter().rev().find(|(s, _)| *s == target) {
            Some(&(_, n)) => {
                self.txn.apply(TxnEvent::RollbackTo(n));
                Ok(())
            }
            None => Err(PgError::new(
                sqlstate::INVALID_SAVEPOINT,
                format!("savepoint \"{target}\" does not exist"),
            )),
        }
    }

    /// End the transaction shardbouncer holds (no server has it): its command
    /// tag, `ROLLBACK` for a failed one, as Postgres answers its COMMIT.
    fn end_held(&mut self, commit: bool) -> &'static str {
        let failed = matches!(self.txn, super::state::Txn::Failed(_));
        self.txn.apply(TxnEvent::End);
        self.route.transaction_outcome(commit && !failed);
        self.route.end_transaction();
        if commit && !failed {
            "COMMIT"
        } else {
            "ROLLBACK"
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
            let e = if self.route.facts().count == 1 {
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
            return self.unit_error(unit, &aborted());
        }
        self.answer_listen_ops(ops);
        let status = self.client_status();
        protocol::ready_for_query(self.out.build(), status);
        self.reply_ready(tag::frontend::QUERY);
    }

    /// Each LISTEN/UNLISTEN answered here: its CommandComplete, and the
    /// operation handed to the relays.
    pub(super) fn answer_listen_ops(&mut self, ops: Vec<ListenOp>) {
        for op in ops {
            let t = match op {
                ListenOp::Listen(_) => "LISTEN",
                _ => "UNLISTEN",
            };
            protocol::command_complete(self.out.build(), t);
            self.route.listen(op);
        }
    }

    /// Carry out a `SET key` / `RESET key` answered locally; its command tag.
    fn set_locally(&mut self, l: Local) -> &'static str {
        match l {
            Local::SetTenant { local, key } => {
                // Inside a transaction block (held or on a server), its
                // ROLLBACK undoes a session SET, as Postgres undoes a setting.
                // (Nothing is in flight: route_unit waited for it.)
                let in_tx = self.client_status() != TxStatus::Idle;
                self.route.set(local, key, in_tx);
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
        // Local::Hold: the bound statement, as the Query to replay, its
        // effects and its command tag.
        let mut hold: Option<(Bytes, Effects, &'static str)> = None;
        // Local::RollbackToHeld: the bound `ROLLBACK TO`'s text.
        let mut rollback_to: Option<Bytes> = None;
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
                    let analyzed = self.route.parse_facts_at(parses - 1);
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
                        if let Err(e) = self.stmts.set_unnamed(facts, kept, declared) {
                            return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                        }
                        if let Some(a) = self.att.as_mut() {
                            // The server's unnamed statement is no longer the client's.
                            a.set_unnamed_current(false);
                        }
                    } else if let Err(e) = self.register_statement(&p, facts) {
                        return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                    }
                    protocol::parse_complete(self.out.build());
                    self.reply(f::PARSE);
                }
                f::BIND => {
                    // It may be executed in a later batch (see
                    // `LocalPortal`), until it is bound again or closed.
                    let portal = protocol::cstr(body).map_or(&[][..], |(p, _)| p);
                    self.local_portal = Some(Box::new(super::core::LocalPortal {
                        name: Bytes::copy_from_slice(portal),
                        listen: None,
                        epoch: self.route.tx_ends(),
                    }));
                    if begin.is_none() {
                        // A BEGIN prepared in an earlier batch: its own text
                        // (READ ONLY, an isolation level) is what is held.
                        begin = self.begin_text_bound(body);
                    }
                    if matches!(l, Local::Hold) {
                        hold = self.holdable_bound(body);
                    }
                    if matches!(l, Local::RollbackToHeld) {
                        rollback_to = self.bound_statement(body, |_| Some(())).map(|((), q)| q);
                    }
                    protocol::bind_complete(self.out.build());
                    self.reply(f::BIND);
                }
                f::DESCRIBE => {
                    if body.first() == Some(&b'S') {
                        // SET takes no parameters.
                        protocol::parameter_description(self.out.build(), &[]);
                    }
                    protocol::no_data(self.out.build());
                    self.reply(f::DESCRIBE);
                }
                f::EXECUTE => {
                    // (The portal stays bound here: a later Execute of it
                    // must not run the server's older one either. Session
                    // fuzz: an Execute alone after the Bind, Execute and
                    // Sync of a SET tenant_id ran an earlier SELECT.)
                    let t = match l {
                        Local::BeginThenSetTenant { .. } | Local::BeginThenRest if !begun => {
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
                        Local::EndHeld { commit } => self.end_held(commit),
                        Local::RollbackToHeld => {
                            let q = rollback_to.take().unwrap_or_default();
                            let text = q.get(5..).unwrap_or_default();
                            let text = text.strip_suffix(&[0]).unwrap_or(text);
                            if let Err(e) = self.rollback_to_savepoint(text) {
                                return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                            }
                            "ROLLBACK"
                        }
                        Local::Hold => {
                            let Some((stmt, effects, tag)) = hold.take() else {
                                let e = PgError::new(
                                    sqlstate::INTERNAL_ERROR,
                                    "internal: no statement to hold",
                                );
                                return self.unit_error(Unit::Batch(msgs[i..].to_vec()), &e);
                            };
                            self.txn.apply(TxnEvent::Hold(stmt, effects));
                            tag
                        }
                        l => self.set_locally(l),
                    };
                    protocol::command_complete(self.out.build(), t);
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
                    protocol::close_complete(self.out.build());
                    self.reply(f::CLOSE);
                }
                f::SYNC => self.answer_sync(),
                _ => {} // Flush: everything is already queued.
            }
        }
    }

    /// Answer the Sync of a batch answered here: ReadyForQuery. Portals end
    /// with the implicit transaction, not inside a transaction block, so a
    /// portal bound here is forgotten once the client is idle (a later
    /// Execute of it gets the server's 34000, as on Postgres). With work in
    /// flight the status is not known yet: the portal is kept, which only
    /// ever refuses more.
    pub(super) fn answer_sync(&mut self) {
        let status = self.client_status();
        let settled = self.att.as_ref().is_none_or(|a| a.settled());
        if settled && status == TxStatus::Idle {
            self.local_portal = None;
        }
        protocol::ready_for_query(self.out.build(), status);
        self.reply_ready(tag::frontend::SYNC);
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
            let cur = a.shard();
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
                self.wait.stall(unit);
                return Need::Io;
            }
            if !a.ext_open() && (!a.settled() || !a.to_server().is_empty()) {
                // The server is still busy: wait for it to finish before deciding.
                self.wait.stall(unit);
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
            self.wait.stall(unit);
            return self.release();
        }
        let shard = match target {
            Target::Shard { shard, .. } => shard,
            Target::Any => self.home_shard(),
        };
        // A server first; the unit is routed again once it is attached.
        let tenant = match target {
            Target::Shard { tenant, .. } => tenant.map(|(t, _)| t),
            Target::Any => None,
        };
        self.wait.request(shard, tenant, unit);
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
        if self.route.pinned().is_some() {
            return;
        }
        let source = tenant.map(|(_, s)| s).unwrap_or(Source::Default);
        crate::admin::metrics::routing_decision(&self.db.name, source_name(source));
        if let Some(by) = tenant {
            self.route.pin(by);
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
            crate::client::expect::Entry::replayed(tag::frontend::QUERY),
            h.begin,
        );
        for stmt in h.stmts {
            a.send_simple(
                crate::client::expect::Entry::replayed(tag::frontend::QUERY),
                stmt,
            );
        }
        a.add_effects(h.effects);
        a.set_unnamed_current(false);
        // The client was told it is in a transaction, and the server is once
        // the BEGIN has run: what is sent behind it is inside one (a DISCARD
        // ALL there fails; a RESET ALL there is undone by a ROLLBACK).
        a.assume_in_transaction();
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
                self.batch.skip();
            }
            return;
        }
        match (unit, last) {
            // Through the extended protocol, then the client's Sync: if an earlier
            // error left the server skipping, it skips ours too and still answers
            // the Sync (a Query would be skipped and never answered).
            (Unit::Batch(_), tag::frontend::SYNC) => {
                self.inject_error_ext(e);
                let mut b = BytesMut::new();
                protocol::sync(&mut b);
                self.send_ext(tag::frontend::SYNC, b.freeze());
            }
            // Ended by a Flush, by COPY data that went with its batch, or by
            // the Execute a long batch is sliced at: the client's own Sync
            // comes later.
            (Unit::Batch(_), _) => {
                self.inject_error_ext(e);
                self.batch.skip();
            }
            (Unit::Simple(..), _) => self.inject_error_simple(e),
        }
    }
}

/// What [`Core::in_copy_batch`] refuses work answered here with.
pub(super) fn in_copy_batch_refusal() -> PgError {
    PgError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "this statement cannot run between a COPY's end and the Sync of its batch",
    )
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

/// What Postgres answers inside a failed transaction.
pub(super) fn aborted() -> PgError {
    PgError::new(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        sqlstate::ABORTED_MESSAGE,
    )
}

/// What a batch does with a portal name.
enum PortalUse {
    /// Executes or describes it before binding it again.
    Run,
    /// Binds it again first.
    Rebound,
    None,
}

/// What `msgs` does first with `portal` (see [`PortalUse`]).
fn portal_use(msgs: &[(u8, Bytes)], portal: &[u8]) -> PortalUse {
    use tag::frontend as f;
    for (t, frame) in msgs {
        let body = &frame[5..];
        match *t {
            f::BIND if protocol::cstr(body).is_some_and(|(p, _)| p == portal) => {
                return PortalUse::Rebound
            }
            f::EXECUTE if super::frames::execute_portal(body) == portal => return PortalUse::Run,
            f::DESCRIBE | f::CLOSE
                if body.first() == Some(&b'P')
                    && protocol::cstr(&body[1..]).is_some_and(|(p, _)| p == portal) =>
            {
                // A Close ends the server's portal too.
                return match *t {
                    f::CLOSE => PortalUse::Rebound,
                    _ => PortalUse::Run,
                };
            }
            _ => {}
        }
    }
    PortalUse::None
}

/// Metric label of a tenant source.
fn source_name(s: Source) -> &'static str {
    match s {
        Source::Startup => "startup",
        Source::Comment => "comment",
        Source::Set => "set",
        Source::Scan => "scan",
        Source::Default => "default",
        Source::Written => "written",
    }
}
