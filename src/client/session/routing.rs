//! Routing a unit of work (a Query or FunctionCall, or an extended batch up to
//! Sync/Flush): analyze its text once, ask [`crate::router::decide`] where it
//! goes, and carry that out: dispatch to a shard, answer locally (tenant SET,
//! held BEGIN), or refuse with transaction state kept exactly as Postgres would.

use super::*;
use crate::router::bind::ParamTypes;
use crate::router::{self, Decision, Item, Kind, Local, Refusal, SessionView, Tx};

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

impl Session {
    /// Pick up a reloaded configuration between transactions: "the next transaction
    /// uses the new map".
    pub(super) fn refresh_db(&mut self) {
        if self.server.is_some() || self.held.is_some() || self.held_failed {
            return;
        }
        let snap = self.app.snapshot.load();
        if snap.generation != self.db.generation {
            if let Some(db) = snap.dbs.get(&self.db.name) {
                self.db = db.clone();
            }
        }
    }

    /// Where the transaction stands, for [`router::decide`].
    pub(super) fn tx_view(&self) -> Tx {
        if self.held_failed {
            return Tx::Failed;
        }
        let held = self.held.as_ref().map(|h| Tx::Held {
            stmts: !h.stmts.is_empty(),
        });
        let Some(att) = &self.server else {
            return held.unwrap_or(Tx::Idle);
        };
        if self.mode() == PoolMode::Session {
            // A routed session-mode client stays on the shard it started on.
            return Tx::Pinned(att.shard);
        }
        if let Some(h) = held {
            // Tenant-free work runs outside the held BEGIN on this server.
            return h;
        }
        if self.server_status != b'I' || (self.ext_open && self.batch_pinned) {
            return Tx::Pinned(att.shard);
        }
        if self.ext_open {
            // An open batch that only parsed and described can be left for another
            // shard; one that executed something or failed stays where it is.
            return if self.server_skipping || self.head_failed || self.batch_executed {
                Tx::Pinned(att.shard)
            } else {
                Tx::Idle
            };
        }
        if !self.expect.is_empty() || !self.to_server.is_empty() {
            return Tx::Unsettled(att.shard);
        }
        Tx::Idle
    }

    /// Work that may change settings (standard_conforming_strings among them) is
    /// in flight: a text whose lexing depends on it must wait for the answer.
    fn settings_in_flight(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|a| a.effects.any(Effects::SETTINGS.union(Effects::DYNAMIC)))
            && !self.expect.is_empty()
    }

    /// Route one unit of work.
    pub(super) async fn route_unit(&mut self, unit: Unit) -> Result<(), End> {
        self.refresh_db();
        if self.settings_in_flight() && has_backslash(&unit) {
            self.stalled = Some(unit);
            return Ok(());
        }
        let decision = match &unit {
            Unit::Simple(b'Q', frame) => {
                let sql = query_text(frame);
                self.analyze_text(sql);
                if self.facts.is_only(Kind::Deallocate) && self.facts.violation.is_none() {
                    // It acts on the client's own statement names: no server needed.
                    self.deallocate(sql);
                    return Ok(());
                }
                match self.db.routing.clone() {
                    Some(rt) => {
                        let view = SessionView {
                            tenants: &self.tenants,
                            tx: self.tx_view(),
                            pinned_by: self.tx_tenant,
                            std_strings: self.std_strings,
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
                        std_strings: self.std_strings,
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
                None => Decision::TenantFree,
            },
        };
        tracing::trace!(
            client = self.handle.id,
            ?decision,
            attached = self.server.is_some(),
            "route"
        );
        match decision {
            Decision::Wait => {
                self.stalled = Some(unit);
                Ok(())
            }
            Decision::Refuse(Refusal { code, message }) => {
                self.unit_error(unit, code, &message);
                Ok(())
            }
            Decision::Local(l) => {
                self.local(l, unit);
                Ok(())
            }
            Decision::TenantFree => {
                if let Unit::Batch(msgs) = &unit {
                    if self.server.is_none() && is_parse_only_batch(msgs) {
                        // Named Parses + Sync: answered without a server.
                        if let Unit::Batch(msgs) = unit {
                            let held = msgs.into_iter().filter(|(t, _)| *t == b'P').collect();
                            self.parse_locally(held);
                        }
                        return Ok(());
                    }
                }
                self.dispatch(Target::Any, unit).await
            }
            Decision::Shard { shard, tenant } => {
                self.dispatch(Target::Shard { shard, tenant }, unit).await
            }
        }
    }

    /// Analyze a text into `self.facts` (once per unit).
    pub(super) fn analyze_text(&mut self, sql: &[u8]) {
        let key = self
            .db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default();
        router::analyze_checked(
            sql,
            key,
            self.std_strings,
            &mut self.facts,
            &mut self.alt_facts,
        );
    }

    /// Route an extended batch: analyze each Parse in it, then decide over every
    /// Bind with the statement it names.
    fn decide_batch(&mut self, rt: &router::Routing, msgs: &[(u8, Bytes)]) -> Decision {
        let key = rt.key.as_bytes();
        let std = self.std_strings;
        let mut n = 0;
        for (tag, frame) in msgs {
            if *tag != b'P' {
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
        let tx = self.tx_view();
        let view = SessionView {
            tenants: &self.tenants,
            tx,
            pinned_by: self.tx_tenant,
            std_strings: std,
        };
        let (batch_facts, stmts, unnamed) = (&self.batch_facts, &self.stmts, &self.unnamed);
        // Statements as of each point in the batch: a Parse in it, else an earlier one.
        let mut pi = 0;
        let mut unnamed_at: Option<(usize, &[u8])> = None;
        let mut named: Option<HashMap<&[u8], InBatch<'_>>> = None;
        let items = msgs.iter().filter_map(move |(tag, frame)| {
            let body = &frame[5..];
            match tag {
                b'P' => {
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
                b'B' => {
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
                        ),
                        None if b.statement.is_empty() => match unnamed.parse {
                            Some(_) => Item::Bind(&unnamed.facts, unnamed.types(), b),
                            None => Item::BindUnknown,
                        },
                        None => match stmts.get(b.statement) {
                            Some(def) => Item::Bind(&def.facts, def.param_types(), b),
                            None => Item::BindUnknown,
                        },
                    })
                }
                b'E' => Some(Item::Execute),
                _ => None,
            }
        });
        router::decide(rt, &view, router::Unit::batch(items), &mut self.mentions)
    }

    /// Answer work locally.
    fn local(&mut self, l: Local, unit: Unit) {
        let frame = match unit {
            Unit::Simple(b'Q', frame) => frame,
            // decide answers only simple Queries locally.
            other => {
                return self.unit_error(
                    other,
                    sqlstate::INTERNAL_ERROR,
                    "internal: local answer to a non-Query",
                )
            }
        };
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
                self.simple_reply(if key.is_some() { "SET" } else { "RESET" });
            }
            Local::SetLocalOutsideTx => {
                // As Postgres: a warning, and no effect.
                self.notice(
                    "WARNING",
                    sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                    "SET LOCAL can only be used in transaction blocks",
                );
                self.simple_reply("SET");
            }
            Local::HoldBegin => {
                // Held until a statement names the tenant (and so the shard).
                self.held = Some(Held {
                    begin: frame,
                    stmts: Vec::new(),
                    effects: Effects::none(),
                });
                self.tx_status = b'T';
                self.simple_reply("BEGIN");
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
                    self.std_strings,
                    |k| {
                        if let Some(Some(tag)) = k.held_tag() {
                            tags.push(tag);
                        }
                    },
                );
                let customs = std::mem::take(&mut self.facts.custom_settings);
                self.note_custom_settings(&customs);
                self.facts.custom_settings = customs;
                if let Some(h) = self.held.as_mut() {
                    h.stmts.push(frame);
                    h.effects.add(self.facts.effects);
                }
                for tag in tags {
                    protocol::command_complete(&mut self.scratch, tag);
                }
                protocol::ready_for_query(&mut self.scratch, self.tx_status);
                self.reply(b'Q');
            }
            Local::EndHeld { commit } => {
                let tag = if commit && !self.held_failed {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                self.end_held();
                self.simple_reply(tag);
            }
        }
    }

    /// The held (or failed) transaction ends without having reached a server.
    fn end_held(&mut self) {
        self.held = None;
        self.held_failed = false;
        self.tenants.local = None;
        self.tx_status = b'I';
    }

    /// shardbouncer failed the held transaction: from now on it is aborted, as in
    /// Postgres (25P02 until COMMIT/ROLLBACK, and COMMIT answers ROLLBACK).
    pub(super) fn fail_held(&mut self) {
        if self.held.is_some() || self.masquerade {
            self.held = None;
            self.held_failed = true;
            self.tx_status = b'E';
        }
    }

    /// A WARNING/NOTICE before a local reply, in protocol order.
    fn notice(&mut self, severity: &str, code: &str, msg: &str) {
        protocol::error_fields(&mut self.scratch, b'N', severity, code, msg);
        self.reply(b'N');
    }

    /// Routing refusals feed the metrics.
    pub(super) fn count_refusal(&self, code: &str) {
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

    /// CommandComplete + ReadyForQuery for a locally answered simple Query.
    pub(super) fn simple_reply(&mut self, tag: &str) {
        protocol::command_complete(&mut self.scratch, tag);
        protocol::ready_for_query(&mut self.scratch, self.tx_status);
        self.reply(b'Q');
    }

    /// Send routed work where it belongs.
    pub(super) async fn dispatch(&mut self, target: Target, unit: Unit) -> Result<(), End> {
        if let Some(att) = &self.server {
            let cur = att.shard;
            let want = match target {
                Target::Shard { shard, .. } => shard,
                Target::Any => cur,
            };
            if want == cur {
                if let Target::Shard { tenant, .. } = target {
                    if self.masquerade {
                        // The server was taken for tenant-free work outside the held
                        // BEGIN; this work needs the transaction: open it now.
                        self.open_held_transaction();
                    }
                    self.pin(tenant, &unit);
                }
                self.forward_unit(unit);
                return Ok(());
            }
            if self.ext_open && self.tx_view() != Tx::Pinned(cur) {
                // A tenant-free batch (Parse/Describe/Flush) is open on a server of
                // the wrong shard: end it, let the server go, then route this.
                self.end_open_batch();
                self.stalled = Some(unit);
                return Ok(());
            }
            if !self.ext_open && (!self.expect.is_empty() || !self.to_server.is_empty()) {
                // The server is still busy: wait for it to finish before deciding.
                self.stalled = Some(unit);
                return Ok(());
            }
            if self.ext_open || self.server_status != b'I' || self.mode() == PoolMode::Session {
                let msg = match &self.db.routing {
                    Some(rt) => format!(
                        "cross-shard transaction refused: this work belongs on shard {} but the session is pinned to shard {}",
                        rt.shard_name(want),
                        rt.shard_name(cur)
                    ),
                    None => "cross-shard work refused".to_string(),
                };
                self.unit_error(unit, sqlstate::FEATURE_NOT_SUPPORTED, &msg);
                return Ok(());
            }
            self.release().await;
        }
        let shard = match target {
            Target::Shard { shard, .. } => shard,
            Target::Any => self.home_shard(),
        };
        if let Err((code, msg)) = self.attach(shard).await {
            self.unit_error(unit, code, &msg);
            return Ok(());
        }
        match target {
            // Work that needs no tenant runs outside a held BEGIN, which stays held.
            Target::Any => self.masquerade = self.held.is_some(),
            Target::Shard { tenant, .. } => {
                self.replay_held();
                self.pin(tenant, &unit);
            }
        }
        self.forward_unit(unit);
        Ok(())
    }

    /// Record what pinned the transaction (metrics, SHOW TENANTS, messages), and
    /// whether an open batch is now pinned to its shard.
    fn pin(&mut self, tenant: Option<(TenantKey, Source)>, unit: &Unit) {
        if let Unit::Batch(msgs) = unit {
            if msgs.last().is_some_and(|(t, _)| *t == b'H') {
                self.batch_pinned = true;
            }
        }
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
    /// server, ahead of the work that needs the transaction.
    fn replay_held(&mut self) {
        let Some(h) = self.held.take() else { return };
        self.expect.push(Entry::swallow(b'Q'));
        self.to_server.push(h.begin);
        for stmt in h.stmts {
            self.expect.push(Entry::swallow(b'Q'));
            self.to_server.push(stmt);
        }
        if let Some(att) = self.server.as_mut() {
            att.effects.add(h.effects);
        }
        self.unnamed.on_server = false;
        self.masquerade = false;
    }

    /// Open the held transaction on the attached server (ending an open tenant-free
    /// batch first, so BEGIN starts a real transaction block).
    pub(super) fn open_held_transaction(&mut self) {
        self.end_open_batch();
        self.replay_held();
        self.masquerade = false;
    }

    /// Close an extended batch the client left open with Flush, with a Sync whose
    /// ReadyForQuery the client never sees.
    pub(super) fn end_open_batch(&mut self) {
        if self.ext_open {
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            self.expect.push(Entry::swallow(b'S'));
            self.to_server.push(b.freeze());
            self.ext_open = false;
            self.batch_pinned = false;
            self.server_skipping = false;
        }
    }

    pub(super) fn forward_unit(&mut self, unit: Unit) {
        match unit {
            Unit::Simple(tag, frame) => self.forward_simple(tag, frame),
            Unit::Batch(msgs) => {
                let mut n = 0;
                for (tag, frame) in msgs {
                    if tag == b'P' && self.db.routing.is_some() {
                        // Analyzed when the batch was routed.
                        let facts = self.batch_facts.get_mut(n).map(std::mem::take);
                        n += 1;
                        self.forward_ext(tag, frame, facts);
                    } else {
                        self.forward_ext(tag, frame, None);
                    }
                }
            }
        }
        self.drain_synthetic();
    }

    /// Refuse a unit of work with an error, keeping protocol and transaction state
    /// exactly as Postgres would.
    pub(super) fn unit_error(&mut self, unit: Unit, code: &str, msg: &str) {
        self.count_refusal(code);
        let last = match &unit {
            Unit::Simple(tag, _) => *tag,
            Unit::Batch(m) => m.last().map(|(t, _)| *t).unwrap_or(b'S'),
        };
        // A transaction shardbouncer holds is failed too, not only the statement.
        self.fail_held();
        if self.server.is_some() {
            if self.server_skipping {
                // The server already skips this batch after an earlier error: only
                // the Sync gets an answer.
                if last == b'S' {
                    let mut b = BytesMut::new();
                    protocol::sync(&mut b);
                    self.send_ext(b'S', b.freeze());
                } else {
                    self.skip_until_sync = true;
                }
                return;
            }
            match last {
                b'H' => {
                    self.inject_error_ext(code, msg);
                    self.ext_open = true;
                    self.skip_until_sync = true;
                }
                // An error then ReadyForQuery is also the right answer to a batch.
                _ => self.inject_error_simple(code, msg),
            }
        } else {
            if self.tx_status == b'T' {
                self.tx_status = b'E';
            }
            self.fail_unattached(last, code, msg);
        }
    }
}

/// A statement parsed earlier in the batch being routed: its index among the
/// batch's Parses and its declared parameter types.
type InBatch<'a> = (usize, &'a [u8]);

/// Decision for a database without routing: everything goes to its one shard,
/// unless the text is refused outright.
fn unrouted(f: &Facts) -> Decision {
    match f.violation {
        Some(router::statement::Violation::ReservedName) => Decision::Refuse(Refusal {
            code: sqlstate::RESERVED_NAME,
            message: format!(
                "prepared statement names starting with \"{}\" are reserved by shardbouncer",
                router::statement::RESERVED_PREFIX
            ),
        }),
        _ => Decision::TenantFree,
    }
}

/// Whether a unit's text has a backslash (its lexing depends on
/// standard_conforming_strings).
fn has_backslash(unit: &Unit) -> bool {
    match unit {
        Unit::Simple(b'Q', f) => memchr::memchr(b'\\', f).is_some(),
        Unit::Simple(..) => false,
        Unit::Batch(m) => m
            .iter()
            .any(|(t, f)| *t == b'P' && memchr::memchr(b'\\', f).is_some()),
    }
}

/// Metric label of a tenant source.
pub(super) fn source_name(s: Source) -> &'static str {
    match s {
        Source::Startup => "startup",
        Source::Comment => "comment",
        Source::Set => "set",
        Source::Scan => "scan",
        Source::Default => "default",
    }
}
