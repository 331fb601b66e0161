//! The server side of the core: the attached server ([`Attachment`]: what it
//! owes, its transaction status, its open extended batch), attaching and
//! releasing it, and matching its responses to what it owes.

use super::core::{Core, Need, Release, STREAM_THRESHOLD};
use super::expect::{Entry, Expectations, Mode};
use super::queue::OutQueue;
use crate::config::PoolMode;
use crate::protocol::{self, tag, TxStatus};
use crate::router::Effects;
use crate::server::prepared::{self, StmtDef};
use crate::server::ServerState;
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Instant;

/// The extended-protocol batch open on the server (messages since the last Sync).
#[derive(Debug, Default, Clone, Copy)]
struct Ext {
    /// Messages were sent since the last Sync.
    open: bool,
    /// The open batch did tenant work: it is pinned to its shard.
    pinned: bool,
    /// The open batch executed something.
    executed: bool,
    /// The server reported an error in the open batch and skips every message up
    /// to the next Sync: nothing sent meanwhile gets an answer.
    skipping: bool,
}

/// A server attached to the client, as the core sees it.
pub(super) struct Attachment {
    pub(super) shard: usize,
    since: Instant,
    conn: ServerState,
    to_server: OutQueue,
    /// Responses the server owes, in order.
    expect: Expectations,
    /// An ErrorResponse was seen for the entry at the head of `expect`.
    head_failed: bool,
    /// Transaction status of the server (last ReadyForQuery).
    status: TxStatus,
    ext: Ext,
    /// In COPY FROM STDIN: the server takes only CopyData/CopyDone/CopyFail and
    /// ignores Sync and Flush until the copy ends, so they pass through unanswered.
    copy_in: bool,
    /// Bytes of a large server frame still to pass through unparsed.
    s_stream_left: usize,
    /// The server's unnamed statement is the client's.
    unnamed_current: bool,
    /// Server-side state the work sent here may have created: what to reset or
    /// read back before the server goes to another client.
    effects: Effects,
}

impl Attachment {
    fn new(shard: usize, conn: ServerState) -> Attachment {
        Attachment {
            shard,
            since: Instant::now(),
            conn,
            to_server: OutQueue::default(),
            expect: Expectations::default(),
            head_failed: false,
            status: TxStatus::Idle,
            ext: Ext::default(),
            copy_in: false,
            s_stream_left: 0,
            unnamed_current: false,
            effects: Effects::none(),
        }
    }

    /// The server's transaction status.
    pub(super) fn status(&self) -> TxStatus {
        self.status
    }

    /// Nothing owed.
    pub(super) fn settled(&self) -> bool {
        self.expect.is_empty()
    }

    /// Work of the client's (not only shardbouncer's own statements) is owed an
    /// answer: it may yet open a transaction.
    pub(super) fn client_work_in_flight(&self) -> bool {
        self.expect.owes_client()
    }

    /// ReadyForQuery messages still owed.
    pub(super) fn ready_owed(&self) -> usize {
        self.expect.ready_owed()
    }

    pub(super) fn copy_in(&self) -> bool {
        self.copy_in
    }

    pub(super) fn end_copy_in(&mut self) {
        self.copy_in = false;
    }

    pub(super) fn to_server(&self) -> &OutQueue {
        &self.to_server
    }

    pub(super) fn io(&mut self) -> (&OutQueue, &mut BytesMut) {
        (&self.to_server, &mut self.conn.rbuf)
    }

    pub(super) fn take_to_server(&mut self) -> Vec<u8> {
        self.to_server.take_all()
    }

    pub(super) fn server_bytes(&mut self, b: &[u8]) {
        self.conn.rbuf.extend_from_slice(b);
    }

    pub(super) fn wrote(&mut self, n: usize) {
        self.to_server.advance(n);
    }

    pub(super) fn effects(&self) -> Effects {
        self.effects
    }

    pub(super) fn add_effects(&mut self, e: Effects) {
        self.effects.add(e);
    }

    /// Whether the server's prepared statements can no longer be trusted to be
    /// the ones shardbouncer prepared: SQL may have touched them.
    pub(super) fn statements_untrusted(&self) -> bool {
        self.effects.any(Effects::PREPARED.union(Effects::DYNAMIC))
    }

    pub(super) fn mark_broken(&mut self) {
        self.conn.broken = true;
    }

    // --- the open extended batch ---

    /// An extended batch is open (messages since the last Sync).
    pub(super) fn ext_open(&self) -> bool {
        self.ext.open
    }

    /// The open batch is pinned to this shard: it did tenant work, executed
    /// something, or failed (the server skips to Sync).
    pub(super) fn ext_stays(&self) -> bool {
        self.ext.open
            && (self.ext.pinned || self.ext.executed || self.ext.skipping || self.head_failed)
    }

    /// The open batch (if any) did tenant work.
    pub(super) fn pin_batch(&mut self) {
        self.ext.pinned = self.ext.open;
    }

    pub(super) fn ext_executed(&mut self) {
        self.ext.executed = true;
    }

    /// The server skips everything up to the next Sync.
    pub(super) fn skipping(&self) -> bool {
        self.ext.skipping
    }

    // --- the unnamed statement ---

    pub(super) fn unnamed_current(&self) -> bool {
        self.unnamed_current
    }

    pub(super) fn set_unnamed_current(&mut self, yes: bool) {
        self.unnamed_current = yes;
    }

    // --- sending ---

    /// Send an extended-protocol message that the server answers.
    pub(super) fn send_ext(&mut self, e: Entry, frame: Bytes) {
        self.expect.push(e);
        self.to_server.push(frame);
        self.ext.open = true;
    }

    /// Send a Sync (the client's or ours) and its expectation.
    pub(super) fn send_sync(&mut self, e: Entry, frame: Bytes) {
        self.expect.push(e);
        self.to_server.push(frame);
        self.ext = Ext::default();
    }

    /// Send a simple Query / FunctionCall with its expectation.
    pub(super) fn send_simple(&mut self, e: Entry, frame: Bytes) {
        self.expect.push(e);
        self.to_server.push(frame);
    }

    /// Bytes the server does not answer (COPY data, Sync during COPY IN).
    pub(super) fn send_raw(&mut self, b: Bytes) {
        self.to_server.push(b);
    }

    /// A reply we produce ourselves, emitted when its turn comes.
    pub(super) fn synthetic(&mut self, client_tag: u8, b: Bytes, patch_status: bool) {
        let mut e = Entry::synthetic(client_tag, b);
        e.patch_status = patch_status;
        self.expect.push(e);
    }

    /// Flush a Flush-terminated batch the client left open with our own Sync,
    /// whose ReadyForQuery the client never sees.
    pub(super) fn end_open_batch(&mut self) {
        if self.ext.open {
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            self.send_sync(Entry::swallow(tag::frontend::SYNC), b.freeze());
        }
    }

    /// Whether this server already holds `def` (and mark it used).
    pub(super) fn has_prepared(&mut self, def: &StmtDef) -> bool {
        self.conn.prepared.touch(def)
    }

    /// Record `def` as prepared here (its Parse is being sent).
    pub(super) fn note_prepared(&mut self, def: Arc<StmtDef>) {
        self.conn.prepared.insert(def);
    }

    /// Emit the synthetic replies at the head of the queue. `txn` gives the
    /// client's status from the server's: a locally answered Query queued behind
    /// in-flight work reports the status as it is when its turn comes.
    pub(super) fn drain_synthetic(
        &mut self,
        to_client: &mut OutQueue,
        client_status: impl Fn(TxStatus) -> TxStatus,
    ) {
        while let Some(e) = self.expect.front() {
            if e.synthetic.is_none() {
                break;
            }
            let Some(e) = self.expect.pop() else { break };
            let Some(b) = e.synthetic else { continue };
            if e.patch_status && !b.is_empty() {
                let mut m = BytesMut::from(&b[..]);
                let last = m.len() - 1;
                m[last] = client_status(self.status).as_byte();
                to_client.push(m.freeze());
            } else {
                to_client.push(b);
            }
        }
    }

    /// The server is idle and owes nothing: it can be released.
    fn releasable(&self) -> bool {
        self.expect.is_empty()
            && !self.ext.open
            && self.to_server.is_empty()
            && self.s_stream_left == 0
            && self.conn.rbuf.is_empty()
            && self.status == TxStatus::Idle
            && !self.copy_in
    }

    /// Clean enough to give back to the pool when the client leaves.
    pub(super) fn clean_to_return(&self) -> bool {
        !self.conn.broken
            && self.expect.is_empty()
            && !self.ext.open
            && self.status == TxStatus::Idle
            && self.s_stream_left == 0
            && !self.copy_in
    }

    pub(super) fn into_state(self) -> ServerState {
        self.conn
    }

    pub(super) fn check(&self) {
        debug_assert!(
            !self.ext.skipping || self.ext.open,
            "skipping to a Sync outside an extended batch"
        );
        debug_assert!(
            !self.ext.pinned || self.ext.open,
            "a pinned batch that is not open"
        );
    }
}

impl Core {
    /// Before handing a freshly checked-out server over: the statement that must
    /// restore this client's role (or session authorization) on it, to be run and
    /// confirmed by the driver before any of the client's work is sent (a client
    /// never runs as a role that is not its own). `None` when there is none.
    pub fn prepare_attach(&self, conn: &mut ServerState) -> Option<String> {
        let sync = conn.sync_statement(self.settings.reported(), self.settings.unreported())?;
        if !sync.privileged {
            return None;
        }
        conn.assume_synced(self.settings.unreported());
        Some(sync.sql)
    }

    /// The driver could not get a server (or restore the role on it).
    pub fn attach_failed(&mut self, e: PgError) -> Need {
        self.awaiting = None;
        if let Some(unit) = self.stalled.take() {
            self.unit_error(unit, &e);
        }
        self.check();
        Need::Io
    }

    /// The driver attached a server for `shard`: bring its settings in line with
    /// this client's (pipelined ahead of the client's work), keep its statement
    /// cache bounded, and go on with the work that asked for it.
    pub fn attached(&mut self, shard: usize, mut conn: ServerState) -> Need {
        self.awaiting = None;
        // Keep the server's statement cache bounded: close the least used first.
        // Done only when the server is idle, so no error elsewhere can skip it.
        let evicted = conn
            .prepared
            .evict_over(self.db.settings.max_prepared_statements);
        let sync = conn.sync_statement(self.settings.reported(), self.settings.unreported());
        if sync.is_some() {
            conn.assume_synced(self.settings.unreported());
        }
        let mut att = Attachment::new(shard, conn);
        if !evicted.is_empty() {
            for d in evicted {
                let c = prepared::close_message(&mut self.scratch, &d.server_name);
                att.send_ext(Entry::swallow(tag::frontend::CLOSE), c);
            }
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            att.send_sync(Entry::swallow(tag::frontend::SYNC), b.freeze());
        }
        if let Some(sync) = sync {
            let mut b = BytesMut::new();
            protocol::query(&mut b, &sync.sql);
            att.send_simple(Entry::swallow(tag::frontend::QUERY), b.freeze());
        }
        self.att = Some(att);
        self.check();
        // The work that asked for the server goes now, pipelined behind the
        // settings sync (which cannot open a transaction).
        if let Some(unit) = self.stalled.take() {
            if let Need::Close(e) = self.route_unit(unit) {
                return Need::Close(e);
            }
        }
        self.client_data()
    }

    /// Release the server if the transaction is over and nothing is in flight.
    pub(super) fn maybe_release(&mut self) -> Need {
        let Some(a) = self.att.as_ref() else {
            return Need::Io;
        };
        if !a.releasable() || self.db.settings.mode == PoolMode::Session {
            return Need::Io;
        }
        self.release()
    }

    /// Give the server back (the driver resets and returns it).
    pub(super) fn release(&mut self) -> Need {
        let Some(a) = self.att.take() else {
            return Need::Io;
        };
        let effects = a.effects;
        let since = a.since;
        self.releasing = true;
        let tenant = self.tx_tenant.take().map(|(t, _)| t);
        if !self.txn.is_local() {
            // A SET LOCAL tenant ends with the transaction.
            self.tenants.local = None;
        }
        let counters = std::mem::take(&mut self.counters);
        Need::Release(Box::new(Release {
            state: a.into_state(),
            read_back: effects.any(Effects::SETTINGS.union(Effects::DYNAMIC)),
            effects: effects.resets(),
            tenant,
            since,
            counters,
        }))
    }

    /// The driver reset and returned the server; `settings` is what was read back
    /// from it (the client's settings from now on), if anything was.
    pub fn released(&mut self, settings: Option<crate::server::ParamSet>) -> Need {
        self.releasing = false;
        if let Some(s) = settings {
            self.settings.read_back(s);
        }
        self.check();
        self.client_data()
    }

    /// Scan what the server sent: match responses to expectations, drop the answers
    /// to injected statements, forward the rest as zero-copy runs.
    pub fn server_data(&mut self) -> Need {
        let pool_mode = self.db.settings.mode;
        let Some(a) = self.att.as_mut() else {
            return Need::Io;
        };
        // `pos` = end of the run of complete frames to forward as one chunk.
        let mut pos = 0;
        loop {
            if a.s_stream_left > 0 {
                let n = a.s_stream_left.min(a.conn.rbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = a.conn.rbuf.split_to(n).freeze();
                a.s_stream_left -= n;
                self.to_client.push(chunk);
                continue;
            }
            // Synthetic replies whose turn has come go out before this frame.
            if a.expect.front().is_some_and(|e| e.synthetic.is_some()) {
                if pos > 0 {
                    self.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                let txn = &self.txn;
                a.drain_synthetic(&mut self.to_client, |s| txn.client_status(Some(s)));
            }
            let rest = &a.conn.rbuf[pos..];
            let (t, len) = match protocol::frame_header(rest, usize::MAX >> 1) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return self.server_protocol_error(e),
            };
            let mode = match t {
                // Asynchronous messages belong to no entry.
                tag::backend::NOTICE_RESPONSE | tag::backend::NOTIFICATION_RESPONSE => {
                    Mode::Forward
                }
                _ => a.expect.front().map(|e| e.mode).unwrap_or(Mode::Forward),
            };
            if rest.len() < len {
                if (t == tag::backend::DATA_ROW || t == tag::backend::COPY_DATA)
                    && len > STREAM_THRESHOLD
                    && mode == Mode::Forward
                {
                    // Forward what we have of a big row/copy chunk; stream the rest.
                    let total = a.conn.rbuf.len();
                    self.to_client.push(a.conn.rbuf.split_to(total).freeze());
                    a.s_stream_left = len - (total - pos);
                    pos = 0;
                    continue;
                }
                break;
            }
            let mut forward = match mode {
                Mode::Forward => true,
                Mode::Swallow => false,
                Mode::SwallowOk => t == tag::backend::ERROR_RESPONSE,
            };
            let mut replace: Option<Bytes> = None;
            let body = &rest[5..len];
            match t {
                tag::backend::PARAMETER_STATUS => {
                    if let Some((k, v)) = protocol::parse_parameter_status(body) {
                        a.conn.current.set(k, v);
                        // The client's own view follows what its server reports.
                        self.settings.reported_by_server(k, v);
                    }
                }
                tag::backend::PARAMETER_DESCRIPTION => {
                    if let Some(e) = a.expect.front() {
                        if e.describes_unnamed {
                            self.stmts
                                .describe_unnamed(protocol::parse_parameter_description(body));
                        } else if let Some(def) = &e.stmt {
                            let _ = def
                                .described
                                .set(protocol::parse_parameter_description(body).collect());
                        }
                    }
                }
                tag::backend::COPY_IN_RESPONSE => {
                    if a.expect
                        .front()
                        .is_some_and(|e| e.tag == tag::frontend::EXECUTE)
                    {
                        // COPY FROM STDIN via the extended protocol: Syncs sent
                        // behind the Execute are ignored by Postgres until the copy
                        // ends, and the server must stay ours until the client's own
                        // Sync after it.
                        a.expect.drop_syncs_after_head();
                        a.ext.open = true;
                    }
                    a.copy_in = true;
                }
                tag::backend::NOTICE_RESPONSE | tag::backend::NOTIFICATION_RESPONSE => {}
                _ => {
                    if t == tag::backend::ERROR_RESPONSE {
                        a.head_failed = true;
                        if self.txn.is_local() && mode != Mode::Swallow {
                            // Tenant-free work failed outside the held BEGIN: the
                            // client's transaction is failed, as it would be.
                            self.txn.apply(super::state::TxnEvent::Fail);
                        }
                        if mode == Mode::Swallow {
                            // A failed internal statement: tell the client as a warning.
                            let info = protocol::parse_error(body);
                            tracing::warn!(
                                client = self.client_id,
                                "internal statement failed on server: {}",
                                info.message
                            );
                            // The server's settings are no longer what we assume:
                            // it does not go back to the pool.
                            a.conn.broken = true;
                            let mut w = BytesMut::from(&rest[..len]);
                            w[0] = tag::backend::NOTICE_RESPONSE;
                            replace = Some(w.freeze());
                            forward = false;
                        }
                    }
                    if t == tag::backend::READY_FOR_QUERY
                        && !a.expect.front().is_some_and(|e| e.completed_by(t))
                    {
                        // A ReadyForQuery nothing asked for: our picture of what the
                        // server owes is wrong, and a server we do not understand
                        // must never go to another client.
                        return self.server_protocol_error("unexpected ReadyForQuery");
                    }
                    if a.expect.front().is_some_and(|e| e.completed_by(t)) {
                        let e = a.expect.pop().expect("front exists");
                        let failed = std::mem::take(&mut a.head_failed);
                        if e.tag == tag::frontend::PARSE && failed {
                            if let Some(def) = &e.stmt {
                                a.conn.prepared.remove(def);
                                if e.mode == Mode::Forward {
                                    // A failed Parse creates no statement, as in Postgres.
                                    self.stmts.forget(def);
                                }
                            }
                        }
                        if t == tag::backend::ERROR_RESPONSE && e.is_extended() {
                            // Postgres now skips to Sync; so do we, undoing
                            // prepares that will not happen.
                            for d in a.expect.skip_to_sync() {
                                if let (tag::frontend::PARSE, Some(def)) = (d.tag, &d.stmt) {
                                    a.conn.prepared.remove(def);
                                    if d.mode == Mode::Forward {
                                        self.stmts.forget(def);
                                    }
                                }
                            }
                            // Messages the client sends before its Sync are skipped
                            // too: they will get no answer.
                            if a.expect
                                .front()
                                .is_none_or(|f| f.tag != tag::frontend::SYNC)
                            {
                                a.ext.skipping = a.ext.open;
                            }
                        }
                        if e.drops_statements && !failed {
                            self.stmts.clear();
                        }
                        if t == tag::backend::READY_FOR_QUERY {
                            let status = TxStatus::from_byte(body.first().copied().unwrap_or(b'I'));
                            a.status = status;
                            if e.mode == Mode::Forward {
                                self.counters.query_done(a.expect.ready_owed());
                                if pool_mode == PoolMode::Statement && status != TxStatus::Idle {
                                    // Refuse before the client sees ReadyForQuery: the
                                    // server is inside a transaction block.
                                    if pos > 0 {
                                        self.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                                    }
                                    a.conn.broken = true;
                                    return Need::Close(self.fatal(
                                        sqlstate::FEATURE_NOT_SUPPORTED,
                                        "transaction blocks not allowed in statement pooling mode",
                                    ));
                                }
                                if self.txn.is_local() {
                                    // Work done outside a held BEGIN: the client is
                                    // still in its (virtual) transaction.
                                    let mut z = BytesMut::from(&rest[..len]);
                                    z[5] = self.txn.client_status(None).as_byte();
                                    replace = Some(z.freeze());
                                    forward = false;
                                } else if status == TxStatus::Idle {
                                    self.tenants.local = None;
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
                    self.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                let _ = a.conn.rbuf.split_to(len);
                if let Some(r) = replace {
                    self.to_client.push(r);
                }
            }
        }
        if pos > 0 {
            self.to_client.push(a.conn.rbuf.split_to(pos).freeze());
        }
        self.drain_synthetic();
        self.check();
        match self.maybe_release() {
            // A stalled unit may go on now that the server has answered.
            Need::Io => self.client_data(),
            need => need,
        }
    }
}
