//! The server side of the core: attaching a server, giving it back, and
//! scanning what it sends ([`super::attachment`] does the matching).

use super::attachment::{Attachment, ScanCtx, ScanStop};
use super::core::{Core, Need, Release};
use crate::app::DbRuntime;
use crate::client::expect::Entry;
use crate::protocol::{self, tag};
use crate::router::Effects;
use crate::server::prepared;
use crate::server::{ReadBack, ServerState};
use crate::sqlstate::{self, PgError};
use bytes::BytesMut;
use std::sync::Arc;

impl Core {
    /// Before handing a freshly checked-out server over: the statement that
    /// brings its settings (role and session authorization first) in line with
    /// this client's, to be run and confirmed by the driver before any of the
    /// client's work is sent. `None` when nothing differs (the common case).
    ///
    /// Why awaited: the statement is one implicit transaction, so one failing
    /// part undoes all of it, and a failure can be provoked (a client's own
    /// `temp_buffers` or reserved-prefix setting that this server refuses).
    /// Pipelined, the client's work then ran with the previous client's
    /// settings, an RLS tenant setting or `search_path` among them (probe).
    pub fn prepare_attach(&self, conn: &mut ServerState) -> Option<String> {
        let sync = conn.sync_statement(
            self.settings.reported(),
            self.settings.told(),
            self.settings.unreported(),
        )?;
        conn.assume_synced(self.settings.unreported());
        Some(sync.sql)
    }

    /// The transaction's holds on its tenants, for a server closed in the
    /// middle of its work to keep until the backend is done.
    pub fn take_tickets(&mut self) -> Vec<crate::app::gate::Ticket> {
        self.route.take_tickets()
    }

    /// The server asked for is not taken: a reload changed where the
    /// database's work goes while the unit waited for it. None of the unit
    /// reached a server, so its holds on tenants go; the driver takes up
    /// the configuration in force, and [`Core::client_data`] routes the
    /// unit again by it.
    pub fn route_again(&mut self) {
        self.wait.delivered();
        if self.att.is_none() {
            self.route.release_tickets();
        }
        self.check();
    }

    /// The driver could not get a server (or restore the role on it).
    pub fn attach_failed(&mut self, e: PgError) -> Need {
        self.wait.delivered();
        if let Some(unit) = self.wait.take_stalled() {
            self.unit_error(unit, &e);
        }
        if self.att.is_none() {
            // Nothing of the transaction reached a server: its tenants are free.
            self.route.release_tickets();
        }
        self.check();
        Need::Io
    }

    /// The pause the work waited for ended (see [`Need::Paused`]). `db` is the
    /// database as the configuration has it now: a `MOVE TENANT` may have put
    /// the tenant on another shard, and the held work, which has not reached
    /// any server (a held BEGIN included), is routed again with the new map.
    pub fn resumed(&mut self, db: Option<Arc<DbRuntime>>) -> Need {
        self.wait.unpause();
        if let Some(db) = db {
            if self.att.is_none() {
                self.db = db;
                // The configuration in force now: nothing left to wait for.
                self.wait.reload_taken();
            }
        }
        self.check();
        self.client_data()
    }

    /// The driver attached a server for `shard`: bring its settings in line with
    /// this client's (pipelined ahead of the client's work), keep its statement
    /// cache bounded, and go on with the work that asked for it.
    pub fn attached(&mut self, shard: usize, mut conn: Box<ServerState>) -> Need {
        self.wait.delivered();
        // Keep the server's statement cache bounded: close the least used first.
        // Done only when the server is idle, so no error elsewhere can skip it.
        let evicted = conn
            .prepared
            .evict_over(self.db.settings.max_prepared_statements);
        // The driver applied this client's settings already (`prepare_attach`).
        debug_assert!(conn
            .sync_statement(
                self.settings.reported(),
                self.settings.told(),
                self.settings.unreported()
            )
            .is_none());
        let discard_sequences = conn.take_foreign_sequences(self.client_id);
        let mut att = Attachment::boxed(shard, conn);
        if !evicted.is_empty() {
            for d in evicted {
                let c = prepared::close_message(self.out.build(), &d.server_name);
                att.send_ext(Entry::swallow(tag::frontend::CLOSE), c);
            }
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            att.send_sync(Entry::swallow(tag::frontend::SYNC), b.freeze());
        }
        if discard_sequences {
            // Another client's nextval is what currval/lastval would show.
            // Pipelined: it cannot fail (and if it did, the server is closed
            // after this transaction).
            let mut b = BytesMut::new();
            protocol::query(&mut b, "DISCARD SEQUENCES");
            att.send_simple(Entry::swallow(tag::frontend::QUERY), b.freeze());
        }
        self.att = Some(att);
        self.check();
        // The work that asked for the server goes now (pipelined behind any
        // statement above, which cannot open a transaction).
        if let Some(unit) = self.wait.take_stalled() {
            // (What it needs of the driver, it needs before anything else.)
            match self.route_unit(unit) {
                Need::Io => {}
                need => return need,
            }
        }
        self.client_data()
    }

    /// Release the server if the transaction is over and nothing is in flight.
    pub(super) fn maybe_release(&mut self) -> Need {
        let Some(a) = self.att.as_ref() else {
            return Need::Io;
        };
        if !a.releasable() {
            return Need::Io;
        }
        if self.owns_server() {
            // Session mode keeps its server, but the transaction is over.
            self.route.release_tickets();
            return Need::Io;
        }
        self.release()
    }

    /// Give the server back (the driver resets and returns it).
    pub(super) fn release(&mut self) -> Need {
        let Some(a) = self.att.take() else {
            return Need::Io;
        };
        let effects = a.effects();
        let since = a.since();
        self.wait.begin_release();
        // Counted under its canonical spelling (SHOW TENANTS: probe DE F7).
        let tenant = self.route.take_pinned().map(|(t, _)| self.gate_key(t));
        self.route.release_tickets();
        if !self.txn.is_local() {
            // A SET LOCAL tenant ends with the transaction.
            self.route.end_transaction();
        }
        let counters = self.counters.take();
        // By construction, whatever path got here: a server goes back to the
        // pool only at ReadyForQuery 'I' with nothing owed or unread. Anything
        // else (a transaction open on it) is closed instead of pooled.
        let idle = a.pool_safe();
        debug_assert!(idle, "releasing a server that is not idle");
        let mut state = a.into_state();
        // State no statement resets: this server serves no one else.
        state.broken |= effects.any(Effects::UNRESETTABLE);
        if !idle {
            tracing::error!(
                client = self.client_id,
                "a server was given back while not idle; closing it instead"
            );
            state.broken = true;
        }
        let read_back = effects.may_change_settings();
        self.settings.expect_reset(effects.any(Effects::RESETS));
        let mut resets = effects.resets();
        if self.seeded() {
            // The client's seed (a startup option, or set in an earlier
            // transaction) was applied to this server with its settings: the
            // next client's random() would follow it (probe: `-c seed=0.5`
            // at login gave the next client setseed(0.5)'s sequence).
            resets.add(Effects::SEED);
        }
        if resets.any(Effects::SEQUENCES) {
            // The server remembers whose sequences it holds; a release with
            // nothing else to reset needs no round trip for them.
            state.sequences_of = Some(self.client_id);
            if resets == Effects::SEQUENCES && !read_back {
                resets = Effects::none();
            }
        }
        let idle_timeout = state.unreported.get("idle_session_timeout").is_some();
        Need::Release(Box::new(Release {
            state,
            read_back,
            idle_timeout,
            effects: resets,
            tenant,
            since,
            counters,
        }))
    }

    /// The driver reset and returned the server; `settings` is what was read back
    /// from it (the client's settings from now on), if anything was, or why
    /// the settings cannot follow the client (too large): the session ends
    /// then, since its next server could not be given them.
    pub fn released(&mut self, settings: Result<Option<ReadBack>, PgError>) -> Need {
        self.wait.end_release();
        let kept = match settings {
            Ok(Some(rb)) => self.settings.read_back(rb.settings, &rb.reported_set),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        self.settings.expect_reset(false);
        let told = match kept {
            Ok(told) => told,
            Err(e) => {
                // The answer to the client's next message (see `doomed`).
                self.doomed = Some(Box::new(e));
                self.check();
                return self.client_data();
            }
        };
        if !told.is_empty() {
            // Reported parameters back at the values the client connected
            // with: it was told the server's defaults when they were reset,
            // and a driver quotes and parses by them
            // (`standard_conforming_strings`, `client_encoding`, `DateStyle`).
            let mut out = BytesMut::new();
            for (k, v) in &told {
                protocol::parameter_status(&mut out, k, v);
            }
            self.out.push(out.freeze());
        }
        self.check();
        self.client_data()
    }

    /// Scan what the server sent (see [`Attachment::scan`]).
    pub fn server_data(&mut self) -> Need {
        let Some(a) = self.att.as_mut() else {
            return Need::Io;
        };
        let mut ctx = ScanCtx {
            to_client: self.out.queue(),
            settings: &mut self.settings,
            stmts: &mut self.stmts,
            txn: &mut self.txn,
            counters: &mut self.counters,
            tenancy: &mut self.route,
            pool_mode: self.db.settings.mode,
            client_id: self.client_id,
            routed: self.db.routing.is_some(),
        };
        match a.scan(&mut ctx) {
            Ok(()) => {}
            Err(ScanStop::Protocol(e)) => return self.server_protocol_error(e),
            Err(ScanStop::StatementMode) => return self.refuse_transaction_block(),
            Err(ScanStop::UnexpectedCopy) => {
                return Need::Close(self.fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the server started a COPY FROM STDIN that shardbouncer did not read \
                     (an SQL EXECUTE of a COPY prepared through the protocol, or a COPY it \
                     does not recognize): its rows cannot be checked, so the session ends",
                ))
            }
        }
        self.drain_synthetic();
        if self.att.as_ref().is_some_and(|a| a.server_fatal()) {
            // The server's FATAL reached the client (inside its transaction,
            // or in session mode; one between transactions is not passed on:
            // see `Attachment::scan`). Ended now, not at the server's close:
            // a release could go on behind it, whose read back failed, and the
            // client got the pooler's 08006 as a second error (probe II).
            return Need::ServerGone;
        }
        if self.terminating && self.att.as_ref().is_some_and(|a| a.copy_in()) {
            // The client sent a COPY FROM STDIN and its Terminate together:
            // the data can never come (nothing after a Terminate is read),
            // and waiting for the COPY held the server, and the client's
            // slot, for good (probe). Postgres ends such a connection (a
            // Terminate during COPY IN); the server is closed, which rolls
            // the COPY back.
            if let Some(a) = self.att.as_mut() {
                a.mark_broken();
            }
            return Need::Close(self.fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "unexpected message type 0x58 during COPY from stdin",
            ));
        }
        self.check();
        match self.maybe_release() {
            // A stalled unit may go on now that the server has answered.
            Need::Io => self.client_data(),
            need => need,
        }
    }
}

impl Core {
    /// Statement pooling mode: a transaction block ends the session (as PgBouncer).
    pub(super) fn refuse_transaction_block(&mut self) -> Need {
        Need::Close(self.fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "transaction blocks not allowed in statement pooling mode",
        ))
    }
}
