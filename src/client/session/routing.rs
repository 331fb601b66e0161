//! Routing a unit of work (a Query, or an extended batch up to Sync) on a sharded
//! database: local answers for tenant SET/RESET and a held BEGIN, tenant
//! resolution, and dispatch to the right shard (or a refusal).

use super::*;
use crate::server::prepared::StmtRouting;

impl Session {
    /// Pick up a reloaded configuration between transactions: "the next transaction
    /// uses the new map".
    pub(super) fn refresh_db(&mut self) {
        if self.server.is_some() || self.held_begin.is_some() {
            return;
        }
        let snap = self.app.snapshot.load();
        if snap.generation != self.db.generation {
            if let Some(db) = snap.dbs.get(&self.db.name) {
                self.db = db.clone();
            }
        }
    }

    /// Route one unit of work on a sharded database.
    pub(super) async fn route_unit(&mut self, unit: Unit) -> Result<(), End> {
        self.refresh_db();
        let Some(rt) = self.db.routing.clone() else {
            // Routing was removed by a reload: behave as a single-shard pooler.
            return self.dispatch(Target::Any, unit).await;
        };
        if let Unit::Batch(msgs) = &unit {
            if self.server.is_none() && is_parse_only_batch(msgs) {
                if let Unit::Batch(msgs) = unit {
                    let held = msgs.into_iter().filter(|(t, _)| *t == b'P').collect();
                    self.parse_locally(held);
                }
                return Ok(());
            }
        }
        let target = match &unit {
            Unit::Simple(b'Q', frame) => {
                let sql = query_text(frame);
                // One classification of the text serves both steps.
                let st = scan(sql, rt.key.as_bytes());
                if let Some(done) = self.local_statement(&rt, sql, st) {
                    return done;
                }
                self.target_for_text(&rt, sql, st)
            }
            Unit::Simple(_, _) => self.target_without_tenant(&rt, false),
            Unit::Batch(msgs) => self.target_for_batch(&rt, msgs),
        };
        tracing::trace!(client = self.handle.id, ?target, attached = self.server.is_some(), status = ?(self.server_status as char), owed = self.expect.ready_owed(), "route");
        match target {
            Ok(t) => self.dispatch(t, unit).await,
            Err(e) => {
                self.unit_error(unit, e.code, &e.message);
                Ok(())
            }
        }
    }

    /// SET/RESET of the tenant key, and BEGIN/COMMIT while a BEGIN is held: answered
    /// here, never sent to Postgres. Returns `None` for anything else.
    pub(super) fn local_statement(
        &mut self,
        rt: &RoutingRt,
        sql: &[u8],
        st: Statement<'_>,
    ) -> Option<Result<(), End>> {
        let mut kw = [0u8; 16];
        if route::first_keyword(sql, &mut kw) == b"DEALLOCATE" {
            // It acts on the client's own statement names only: no server needed.
            self.deallocate(sql);
            return Some(Ok(()));
        }
        match st {
            Statement::SetTenant { local, value } if rt.has(TenantSource::Set) => {
                let key = match route::decode(rt, &value) {
                    Ok(k) => k,
                    Err(e) => return Some(self.simple_error_reply(e.code, &e.message)),
                };
                if let Err((code, msg)) = self.set_tenant(rt, local, Some(key)) {
                    return Some(self.simple_error_reply(code, &msg));
                }
                self.simple_reply("SET");
                Some(Ok(()))
            }
            Statement::ResetTenant if rt.has(TenantSource::Set) => {
                if let Err((code, msg)) = self.set_tenant(rt, false, None) {
                    return Some(self.simple_error_reply(code, &msg));
                }
                self.tenants.local = None;
                self.simple_reply("RESET");
                Some(Ok(()))
            }
            Statement::Begin if self.server.is_none() && self.held_begin.is_none() => {
                // Hold it until a statement names the tenant (and so the shard).
                let mut b = BytesMut::new();
                protocol::query(&mut b, std::str::from_utf8(sql).unwrap_or("BEGIN"));
                self.held_begin = Some(b.freeze());
                self.tx_status = b'T';
                self.simple_reply("BEGIN");
                Some(Ok(()))
            }
            _ if self.server.is_none() && self.held_begin.is_some() => {
                let tag = if route::is_bare(sql, &[b"COMMIT", b"END"]) {
                    "COMMIT"
                } else if route::is_bare(sql, &[b"ROLLBACK", b"ABORT"]) {
                    "ROLLBACK"
                } else {
                    return None;
                };
                // Nothing ran: ending the held transaction needs no server.
                self.held_begin = None;
                self.tenants.local = None;
                self.tx_status = b'I';
                self.simple_reply(tag);
                Some(Ok(()))
            }
            _ => None,
        }
    }

    /// Apply `SET [LOCAL] key = v` (`None`: RESET).
    pub(super) fn set_tenant(
        &mut self,
        rt: &RoutingRt,
        local: bool,
        key: Option<TenantKey>,
    ) -> Result<(), (&'static str, String)> {
        if local {
            if self.tx_status == b'I' {
                // As Postgres: SET LOCAL outside a transaction has no effect.
                protocol::error_fields(
                    &mut self.scratch,
                    b'N',
                    "WARNING",
                    "25P01",
                    "SET LOCAL can only be used in transaction blocks",
                );
                self.reply(b'N');
                return Ok(());
            }
            if let (Some(k), Some(att)) = (key, &self.server) {
                let shard = route::route_key(rt, &k).map_err(|e| (e.code, e.message))?;
                if shard != att.shard {
                    return Err(self.cross_shard_message(rt, &k, shard));
                }
            }
            self.tenants.local = key;
            return Ok(());
        }
        if rt.lock_startup_tenant {
            if let Some(st) = self.tenants.startup {
                if key != Some(st) {
                    return Err((
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!(
                            "{} was fixed at connect ('{st}') and lock_startup_tenant is on",
                            rt.key
                        ),
                    ));
                }
            }
        }
        self.tenants.set = key;
        Ok(())
    }

    pub(super) fn cross_shard_message(
        &self,
        rt: &RoutingRt,
        key: &TenantKey,
        shard: usize,
    ) -> (&'static str, String) {
        let names = rt.map.shard_names();
        let pinned = self.server.as_ref().map(|a| a.shard).unwrap_or(0);
        let by = match &self.tx_tenant {
            Some((t, src)) => format!(" by {} '{t}' ({src})", rt.key),
            None => String::new(),
        };
        (
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "cross-shard transaction refused: {k} '{key}' lives on shard {s} but this transaction is pinned to shard {p}{by}",
                k = rt.key,
                s = names.get(shard).map(String::as_str).unwrap_or("?"),
                p = names.get(pinned).map(String::as_str).unwrap_or("?"),
            ),
        )
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

    /// An error for a simple Query we answer ourselves.
    pub(super) fn simple_error_reply(&mut self, code: &str, msg: &str) -> Result<(), End> {
        self.count_refusal(code);
        if self.server.is_some() {
            // Fail the server's transaction too, exactly as Postgres would.
            self.inject_error_simple(code, msg);
        } else {
            if self.tx_status == b'T' {
                self.tx_status = b'E';
            }
            protocol::error_response(&mut self.scratch, code, msg);
            protocol::ready_for_query(&mut self.scratch, self.tx_status);
            self.reply(b'Q');
        }
        Ok(())
    }

    pub(super) fn target_for_text(
        &mut self,
        rt: &RoutingRt,
        sql: &[u8],
        st: Statement<'_>,
    ) -> Result<Target, route::RouteError> {
        // Reused buffer: no allocation per query once warmed up.
        let mut mentions = std::mem::take(&mut self.mentions);
        mentions.clear();
        let res = route::text_mentions(rt, st, sql, &mut mentions)
            .and_then(|()| route::resolve(rt, &self.tenants, &mentions))
            .and_then(|found| match found {
                Some((tenant, source, shard)) => Ok(Target::Shard {
                    shard,
                    tenant: Some(tenant),
                    source,
                }),
                None => self.target_without_tenant(rt, route::is_tenant_free(sql)),
            });
        self.mentions = mentions;
        res
    }

    /// No tenant named: stay on the pinned shard, run anywhere if harmless, else
    /// apply `no_tenant`.
    pub(super) fn target_without_tenant(
        &self,
        rt: &RoutingRt,
        harmless: bool,
    ) -> Result<Target, route::RouteError> {
        if let Some(att) = &self.server {
            // An extended batch in progress continues on its server.
            if !self.ext_open && !self.expect.is_empty() {
                return Ok(Target::Pending);
            }
            if self.ext_open || self.server_status != b'I' {
                return Ok(Target::Shard {
                    shard: att.shard,
                    tenant: None,
                    source: Source::Default,
                });
            }
        }
        if harmless {
            return Ok(Target::Any);
        }
        route::no_tenant(rt)
    }

    /// Route an extended-protocol batch by the tenants its Binds name.
    pub(super) fn target_for_batch(
        &mut self,
        rt: &RoutingRt,
        msgs: &[(u8, Bytes)],
    ) -> Result<Target, route::RouteError> {
        // Reused buffers: routing a batch allocates nothing once warmed up.
        let mut mentions = std::mem::take(&mut self.mentions);
        let mut local = std::mem::take(&mut self.batch_stmts);
        mentions.clear();
        local.clear();
        let res = self
            .batch_mentions(rt, msgs, &mut mentions, &mut local)
            .and_then(|(executes, all_harmless)| {
                match route::resolve(rt, &self.tenants, &mentions)? {
                    Some((tenant, source, shard)) => Ok(Target::Shard {
                        shard,
                        tenant: Some(tenant),
                        source,
                    }),
                    // Parse/Describe alone read only the schema, the same on every shard.
                    None => self.target_without_tenant(rt, !executes || all_harmless),
                }
            });
        self.mentions = mentions;
        self.batch_stmts = local;
        res
    }

    /// Collect the tenant mentions of a batch's Binds; returns whether it executes
    /// anything and whether everything it executes is tenant-free.
    fn batch_mentions(
        &self,
        rt: &RoutingRt,
        msgs: &[(u8, Bytes)],
        mentions: &mut Vec<Mention>,
        local: &mut Vec<(usize, StmtRouting)>,
    ) -> Result<(bool, bool), route::RouteError> {
        // The unnamed statement as of this point in the batch: a Parse in the batch
        // (its index), else the one from an earlier batch.
        let mut unnamed_at: Option<(usize, StmtRouting)> = None;
        let mut executes = false;
        let mut all_harmless = true;
        let parse_at = |idx: usize| Parse::parse(&msgs[idx].1[5..]);
        for (idx, (tag, frame)) in msgs.iter().enumerate() {
            let body = &frame[5..];
            match tag {
                b'P' => {
                    let Some(p) = Parse::parse(body) else {
                        continue;
                    };
                    let r = route::stmt_routing(rt, p.query);
                    if p.name.is_empty() {
                        unnamed_at = Some((idx, r));
                    } else {
                        local.push((idx, r));
                    }
                }
                b'B' => {
                    let Some(b) = Bind::parse(body) else { continue };
                    let in_batch = if b.statement.is_empty() {
                        unnamed_at
                    } else {
                        local
                            .iter()
                            .rev()
                            .find(|(at, _)| parse_at(*at).is_some_and(|p| p.name == b.statement))
                            .copied()
                    };
                    let r = match in_batch {
                        Some((at, r)) => {
                            let ty = |i| parse_at(at).and_then(|p| p.param_type(i)).unwrap_or(0);
                            route::bind_mentions(rt, &r, ty, &b, mentions)?;
                            r
                        }
                        None if b.statement.is_empty() => {
                            let u = &self.unnamed;
                            route::bind_mentions(
                                rt,
                                &u.routing,
                                |i| u.param_type(i),
                                &b,
                                mentions,
                            )?;
                            u.routing
                        }
                        None => match self.stmts.get(b.statement) {
                            Some(def) => {
                                route::bind_mentions(
                                    rt,
                                    &def.routing,
                                    |i| def.param_type(i),
                                    &b,
                                    mentions,
                                )?;
                                def.routing
                            }
                            None => continue,
                        },
                    };
                    if !r.tenant_free {
                        all_harmless = false;
                    }
                }
                b'E' => executes = true,
                _ => {}
            }
        }
        Ok((executes, all_harmless))
    }

    /// Send routed work where it belongs.
    pub(super) async fn dispatch(&mut self, target: Target, unit: Unit) -> Result<(), End> {
        if target == Target::Pending {
            self.stalled = Some(unit);
            return Ok(());
        }
        if let Some(att) = &self.server {
            let cur = att.shard;
            let want = match target {
                Target::Shard { shard, .. } => shard,
                Target::Any | Target::Pending => cur,
            };
            if want == cur {
                if let Target::Shard { tenant, source, .. } = target {
                    if self.masquerade {
                        // The server was taken for tenant-free work outside the held
                        // BEGIN; this work needs the transaction: open it now.
                        self.open_held_transaction();
                    }
                    if self.tx_tenant.is_none() {
                        if let Some(t) = tenant {
                            self.tx_tenant = Some((t, source));
                            crate::admin::metrics::routing_decision(
                                &self.db.name,
                                source_name(source),
                            );
                        }
                    }
                }
                self.forward_unit(unit);
                return Ok(());
            }
            if self.masquerade && self.ext_open {
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
                let rt = self.db.routing.clone();
                if let (
                    Some(rt),
                    Target::Shard {
                        tenant: Some(k), ..
                    },
                ) = (rt, target)
                {
                    let (code, msg) = self.cross_shard_message(&rt, &k, want);
                    self.unit_error(unit, code, &msg);
                    return Ok(());
                }
                self.forward_unit(unit);
                return Ok(());
            }
            self.release().await;
        }
        let (shard, tenant) = match target {
            Target::Shard {
                shard,
                tenant,
                source,
            } => (shard, tenant.map(|t| (t, source))),
            Target::Any | Target::Pending => (self.any_shard(), None),
        };
        if let Err((code, msg)) = self.attach(shard).await {
            self.unit_error(unit, code, &msg);
            return Ok(());
        }
        if matches!(target, Target::Any) {
            // Work that needs no tenant runs outside a held BEGIN, which stays held.
            self.masquerade = self.held_begin.is_some();
        } else if let Some(begin) = self.held_begin.take() {
            self.expect.push(Entry::swallow(b'Q'));
            self.to_server.push(begin);
        }
        if let Target::Shard { source, .. } = target {
            crate::admin::metrics::routing_decision(&self.db.name, source_name(source));
        }
        if tenant.is_some() {
            self.tx_tenant = tenant;
        }
        self.forward_unit(unit);
        Ok(())
    }

    /// Replay the held BEGIN on the attached server (ending an open tenant-free
    /// batch first, so BEGIN starts a real transaction block).
    pub(super) fn open_held_transaction(&mut self) {
        self.end_open_batch();
        if let Some(begin) = self.held_begin.take() {
            self.expect.push(Entry::swallow(b'Q'));
            self.to_server.push(begin);
        }
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
        }
    }

    pub(super) fn forward_unit(&mut self, unit: Unit) {
        match unit {
            Unit::Simple(tag, frame) => self.forward_simple(tag, frame),
            Unit::Batch(msgs) => {
                for (tag, frame) in msgs {
                    self.forward_ext(tag, frame);
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
        if self.server.is_some() {
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
