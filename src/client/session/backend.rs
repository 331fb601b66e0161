//! Server side of a session: attaching a pooled server (settings sync, statement
//! cache upkeep), matching its responses to expectations, and releasing it.

use super::*;

impl Session {
    /// Check a server out of the pool for `shard` and bring its session settings in
    /// line with this client's, pipelined ahead of the client's first message.
    pub(super) async fn attach(&mut self, shard: usize) -> Result<(), (&'static str, String)> {
        let pool = self.pool_for(shard);
        self.handle.activity.waiting(shard);
        let res = pool.checkout().await;
        self.handle.activity.attached();
        let co = res.map_err(|e| {
            let code = match &e {
                crate::pool::PoolError::WaitTimeout => sqlstate::QUERY_CANCELED,
                crate::pool::PoolError::Connect(_) => sqlstate::CANNOT_CONNECT,
                crate::pool::PoolError::Closed => sqlstate::CANNOT_CONNECT,
            };
            let shard_name = &self.db.cfg.shards[shard].name;
            (
                code,
                format!("shard {shard_name} of database {}: {e}", self.db.name),
            )
        })?;
        tracing::trace!(client = self.handle.id, server = co.conn.id, "attach");
        self.handle.server.store(Some(co.conn.cancel.clone()));
        self.app.active_transactions.fetch_add(1, Ordering::AcqRel);
        let mut att = Attached {
            co,
            pool,
            shard,
            since: Instant::now(),
            effects: Effects::none(),
        };
        self.server_status = b'I';
        self.ext_open = false;
        self.batch_pinned = false;
        self.batch_executed = false;
        self.server_skipping = false;
        self.unnamed.on_server = false;
        let conn = &mut att.co.conn;
        // Keep the server's statement cache bounded: close the least used first.
        let cap = self.db.settings.max_prepared_statements;
        let evicted = conn.prepared.evict_over(cap);
        if !evicted.is_empty() {
            for d in evicted {
                let c = prepared::close_message(&mut self.scratch, &d.server_name);
                self.to_server.push(c);
                self.expect.push(Entry::swallow(b'C'));
            }
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            self.to_server.push(b.freeze());
            self.expect.push(Entry::swallow(b'S'));
        }
        let want_unreported = &self.login.unreported;
        if let Some(sync) = conn.sync_statement(&self.login.reported, want_unreported) {
            if sync.privileged {
                // A role or session authorization must be in place before any of
                // the client's work runs, or the work must not run at all: wait for
                // it instead of pipelining it.
                if let Err(e) = conn.internal_row(&sync.sql).await {
                    tracing::warn!(
                        client = self.handle.id,
                        "restoring the client's role failed: {e}"
                    );
                    self.handle.server.store(None);
                    att.pool.discard(att.co);
                    self.app.transaction_finished();
                    return Err((
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!("could not restore this session's role on the server: {e}"),
                    ));
                }
            } else {
                let mut b = BytesMut::new();
                protocol::query(&mut b, &sync.sql);
                self.to_server.push(b.freeze());
                self.expect.push(Entry::swallow(b'Q'));
            }
            conn.assume_synced(want_unreported);
        }
        self.server = Some(att);
        Ok(())
    }

    /// Scan what the server sent: match responses to expectations, drop the answers
    /// to injected statements, forward the rest as zero-copy runs.
    pub(super) async fn process_server(&mut self) -> Result<(), End> {
        let pool_mode = self.db.settings.mode;
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let crate::server::ServerConn {
            rbuf,
            prepared: server_stmts,
            current: server_params,
            broken,
            ..
        } = &mut att.co.conn;
        // `pos` = end of the run of complete frames to forward as one chunk.
        let mut pos = 0;
        loop {
            if self.s_stream_left > 0 {
                let n = self.s_stream_left.min(rbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = rbuf.split_to(n).freeze();
                self.s_stream_left -= n;
                self.to_client.push(chunk);
                continue;
            }
            // Synthetic replies whose turn has come go out before this frame.
            if self.expect.front().is_some_and(|e| e.synthetic.is_some()) {
                if pos > 0 {
                    self.to_client.push(rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                while let Some(e) = self.expect.front() {
                    if e.synthetic.is_none() {
                        break;
                    }
                    if let Some(b) = self.expect.pop().and_then(|e| e.synthetic) {
                        self.to_client.push(b);
                    }
                }
            }
            let rest = &rbuf[pos..];
            let (tag, len) = match protocol::frame_header(rest, usize::MAX >> 1) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    *broken = true;
                    self.emit_fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid message from server: {e}"),
                    );
                    return Err(format!("server protocol error: {e}"));
                }
            };
            let mode = match tag {
                // Asynchronous messages belong to no entry.
                b'N' | b'A' => Mode::Forward,
                _ => self.expect.front().map(|e| e.mode).unwrap_or(Mode::Forward),
            };
            if rest.len() < len {
                if (tag == b'D' || tag == b'd') && len > STREAM_THRESHOLD && mode == Mode::Forward {
                    // Forward what we have of a big row/copy chunk; stream the rest.
                    let total = rbuf.len();
                    self.to_client.push(rbuf.split_to(total).freeze());
                    self.s_stream_left = len - (total - pos);
                    pos = 0;
                    continue;
                }
                break;
            }
            let mut forward = match mode {
                Mode::Forward => true,
                Mode::Swallow => false,
                Mode::SwallowOk => tag == b'E',
            };
            let mut replace: Option<Bytes> = None;
            match tag {
                b'S' => {
                    if let Some((k, v)) = params::parse_parameter_status(&rest[5..len]) {
                        server_params.set(k, v);
                        if let Some(c) = params::canonical(k) {
                            // The client's own view follows what its server reports.
                            self.login.reported.set(c, v);
                        }
                        if k == "standard_conforming_strings" {
                            // How this client's literals are lexed from now on.
                            self.std_strings = v != "off";
                        }
                    }
                }
                b't' => {
                    if let Some(e) = self.expect.front() {
                        let body = &rest[5..len];
                        if e.describes_unnamed {
                            self.unnamed.described.clear();
                            self.unnamed.described.extend(param_description(body));
                        } else if let Some(def) = &e.stmt {
                            let _ = def.described.set(param_description(body).collect());
                        }
                    }
                }
                b'G' if self.expect.front().is_some_and(|e| e.tag == b'E') => {
                    // COPY FROM STDIN via the extended protocol: Syncs sent behind
                    // the Execute are ignored by Postgres until the copy ends, and the
                    // server must stay ours until the client's own Sync after it.
                    self.expect.drop_syncs_after_head();
                    self.ext_open = true;
                    self.copy_in_ext = true;
                }
                b'N' | b'A' => {}
                _ => {
                    if tag == b'E' {
                        self.head_failed = true;
                        if self.masquerade && mode != Mode::Swallow {
                            // Tenant-free work failed outside the held BEGIN: the
                            // client's transaction is failed, as it would be.
                            self.held = None;
                            self.held_failed = true;
                            self.tx_status = b'E';
                        }
                        if mode == Mode::Swallow {
                            // A failed settings sync: tell the client as a warning.
                            let info = protocol::parse_error(&rest[5..len]);
                            tracing::warn!(
                                client = self.handle.id,
                                "internal statement failed on server: {}",
                                info.message
                            );
                            // The server's settings are no longer what we assume:
                            // it does not go back to the pool.
                            *broken = true;
                            let mut w = BytesMut::from(&rest[..len]);
                            w[0] = b'N';
                            replace = Some(w.freeze());
                            forward = false;
                        }
                    }
                    let completes = self.expect.front().is_some_and(|e| e.completed_by(tag));
                    if completes {
                        let e = self.expect.pop().expect("front exists");
                        let failed = std::mem::take(&mut self.head_failed);
                        if e.tag == b'P' && failed {
                            if let Some(def) = &e.stmt {
                                server_stmts.remove(def);
                                if e.mode == Mode::Forward {
                                    // A failed Parse creates no statement, as in Postgres.
                                    self.stmts.retain(|_, d| !Arc::ptr_eq(d, def));
                                }
                            }
                        }
                        if tag == b'E' && e.is_extended() {
                            // Postgres now skips to Sync; so do we, undoing
                            // prepares that will not happen.
                            for d in self.expect.skip_to_sync() {
                                if let (b'P', Some(def)) = (d.tag, &d.stmt) {
                                    server_stmts.remove(def);
                                    if d.mode == Mode::Forward {
                                        self.stmts.retain(|_, x| !Arc::ptr_eq(x, def));
                                    }
                                }
                            }
                            // Messages the client sends before its Sync are skipped
                            // too: they will get no answer.
                            if self.expect.front().is_none_or(|f| f.tag != b'S') {
                                self.server_skipping = self.ext_open;
                            }
                        }
                        if e.drops_statements && !failed {
                            self.stmts.clear();
                        }
                        if tag == b'Z' {
                            let status = rest.get(5).copied().unwrap_or(b'I');
                            self.server_status = status;
                            if e.mode == Mode::Forward {
                                self.queries += 1;
                                if let Some(t) = self.query_start.take() {
                                    self.query_us += t.elapsed().as_micros() as u64;
                                }
                                if self.expect.ready_owed() > 0 {
                                    self.query_start = Some(Instant::now());
                                }
                                if pool_mode == PoolMode::Statement && status != b'I' {
                                    // Refuse before the client sees ReadyForQuery: the
                                    // server is inside a transaction block.
                                    if pos > 0 {
                                        self.to_client.push(rbuf.split_to(pos).freeze());
                                    }
                                    *broken = true;
                                    self.emit_fatal(
                                        sqlstate::FEATURE_NOT_SUPPORTED,
                                        "transaction blocks not allowed in statement pooling mode",
                                    );
                                    return Err("transaction in statement mode".into());
                                }
                                if self.masquerade {
                                    // Work done outside a held BEGIN: the client is
                                    // still in its (virtual) transaction.
                                    let mut z = BytesMut::from(&rest[..len]);
                                    z[5] = self.tx_status;
                                    replace = Some(z.freeze());
                                    forward = false;
                                } else {
                                    self.tx_status = status;
                                    if status == b'I' {
                                        self.tenants.local = None;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if forward {
                pos += len;
            } else {
                if pos > 0 {
                    self.to_client.push(rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                let _ = rbuf.split_to(len);
                if let Some(r) = replace {
                    self.to_client.push(r);
                }
            }
        }
        if pos > 0 {
            self.to_client.push(rbuf.split_to(pos).freeze());
        }
        self.drain_synthetic();
        self.maybe_release().await
    }

    /// Release the server if the transaction is over and nothing is in flight.
    pub(super) async fn maybe_release(&mut self) -> Result<(), End> {
        let Some(att) = self.server.as_ref() else {
            return Ok(());
        };
        if !self.expect.is_empty()
            || self.ext_open
            || !self.to_server.is_empty()
            || self.s_stream_left > 0
            || !att.co.conn.rbuf.is_empty()
            || self.server_status != b'I'
            || self.mode() == PoolMode::Session
        {
            return Ok(());
        }
        self.release().await;
        Ok(())
    }

    /// Return the server to its pool after a finished transaction.
    pub(super) async fn release(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        tracing::trace!(client = self.handle.id, server = att.co.conn.id, "release");
        self.reset_server_state(&mut att).await;
        self.handle.server.store(None);
        let xact_us = att.since.elapsed().as_micros() as u64;
        let stats = &att.pool.stats;
        stats.xact_count.fetch_add(1, Ordering::Relaxed);
        stats.xact_time_us.fetch_add(xact_us, Ordering::Relaxed);
        crate::admin::metrics::record_transaction(&att.pool, xact_us, self.query_us, self.queries);
        let stats_queries = self.queries;
        stats.query_count.fetch_add(self.queries, Ordering::Relaxed);
        stats
            .query_time_us
            .fetch_add(self.query_us, Ordering::Relaxed);
        stats
            .bytes_received
            .fetch_add(self.bytes_in, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(self.bytes_out, Ordering::Relaxed);
        for (a, v) in [
            (&stats.client_parse_count, &mut self.client_parses),
            (&stats.server_parse_count, &mut self.server_parses),
            (&stats.bind_count, &mut self.binds),
        ] {
            if *v > 0 {
                a.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
        self.queries = 0;
        self.query_us = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.masquerade = false;
        self.unnamed.on_server = false;
        if let Some((tenant, _)) = self.tx_tenant.take() {
            let shard = &att.pool.key.shard;
            let queries = stats_queries;
            self.app.tenants.record_transaction(
                &self.db.name,
                tenant.as_str(),
                shard,
                xact_us,
                queries,
            );
        }
        att.pool.checkin(att.co);
        self.app.transaction_finished();
    }

    /// The server connection died under us: tell the client and end the session.
    pub(super) async fn server_lost(&mut self) -> Result<(), End> {
        if let Some(mut att) = self.server.take() {
            // Forward whatever the server said last (e.g. FATAL 57P01 from pg_terminate_backend).
            att.co.conn.broken = true;
            let rest = att.co.conn.rbuf.split().freeze();
            self.to_client.push(rest);
            self.handle.server.store(None);
            att.pool.discard(att.co);
            self.app.transaction_finished();
        }
        self.expect.clear();
        self.emit_fatal(
            sqlstate::CONNECTION_FAILURE,
            "server connection lost; the transaction was aborted",
        );
        Err("server connection lost".into())
    }

    /// The client is gone: return the server only if it is clean, else close it.
    pub(super) async fn detach_on_exit(&mut self) {
        let clean = self.server.as_ref().is_some_and(|a| !a.co.conn.broken)
            && self.expect.is_empty()
            && !self.ext_open
            && self.server_status == b'I'
            && self.s_stream_left == 0
            && self.c_stream_left == 0;
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.handle.server.store(None);
        let mut reset = false;
        if clean && self.mode() == PoolMode::Session {
            let q = att.pool.settings.load().server_reset_query.clone();
            if !q.is_empty() {
                let ok = att.co.conn.internal_row(&q).await.is_ok();
                att.co.conn.unreported = Default::default();
                if contains_ci(q.as_bytes(), b"discard all")
                    || contains_ci(q.as_bytes(), b"deallocate")
                {
                    att.co.conn.prepared.clear();
                }
                if !ok {
                    att.co.conn.broken = true;
                }
                reset = contains_ci(q.as_bytes(), b"discard all");
            }
        }
        if clean && !reset {
            self.reset_server_state(&mut att).await;
        }
        if clean && !att.co.conn.broken {
            att.pool.checkin(att.co);
        } else {
            att.pool.discard(att.co);
        }
        self.app.transaction_finished();
    }
}

impl Session {
    /// Before a server goes back to the pool: undo the session state this client's
    /// work may have left on it (cursors, LISTEN, advisory locks, temp objects,
    /// SQL-level prepared statements), and read back the settings it changed so
    /// they follow this client (and the next client's attach resets them). Costs
    /// one round trip, only after work that can leave such state.
    async fn reset_server_state(&mut self, att: &mut Attached) {
        let effects = std::mem::take(&mut att.effects);
        if effects.is_empty() {
            return;
        }
        let read_back = effects.any(Effects::SETTINGS.union(Effects::DYNAMIC));
        let login_user = att.pool.target.load().user.clone();
        match att
            .co
            .conn
            .reset_and_read_back(
                effects.resets(),
                read_back,
                &self.custom_settings,
                &login_user,
            )
            .await
        {
            Ok(Some(settings)) => self.login.unreported = settings,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    client = self.handle.id,
                    "resetting server state failed, closing the server: {e}"
                );
                att.co.conn.broken = true;
            }
        }
    }
}

/// Parameter type OIDs from a ParameterDescription body.
pub(super) fn param_description(body: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let n = protocol::get_i16(body)
        .map(|(n, _)| n.max(0) as usize)
        .unwrap_or(0);
    body.get(2..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(n)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}
