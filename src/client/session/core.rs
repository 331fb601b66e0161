//! The session core: everything a client session decides, with no sockets.
//!
//! [`Core`] takes the client's bytes (in its read buffer) and the attached
//! server's bytes (in that server's [`ServerState`]), and produces the bytes each
//! side must receive (in [`OutQueue`]s) plus, when it needs something only I/O can
//! give, a [`Need`]: a server from the pool, a role restored and confirmed, a
//! server reset and given back. The driver (`super::Session`) performs the I/O and
//! reports back. Because nothing here awaits, the whole state machine can be
//! tested and fuzzed with a scripted server (see `super::tests`).

use super::attachment::Attachment;
use super::batch::Batch;
use super::counters::Counters;
pub(super) use super::inbound::Unit;
use super::inbound::{Inbound, Next};
use super::outbound::Outbound;
use super::settings::Settings;
use super::state::{Phase, Txn};
use super::statements::Statements;
use super::tenancy::Tenancy;
use super::wait::Wait;
use crate::app::gate::TenantGate;
use crate::app::DbRuntime;
use crate::client::queue::OutQueue;
use crate::protocol::{self, tag, TxStatus};
use crate::router::{Effects, ListenOp, TenantKey, Tenants};
use crate::server::{ParamSet, ServerState};
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// Stop taking client work while this much is queued for the server.
pub(super) const HIGH_WATER: usize = 512 * 1024;

/// Why the session ends (for logs); the client has already been told.
pub type End = String;

/// What the core needs from the driver before it can go on.
#[derive(Debug)]
pub enum Need {
    /// Nothing: wait for I/O.
    Io,
    /// Check a server out of the pool for this shard, then call
    /// [`Core::prepare_attach`] and [`Core::attached`] (or [`Core::attach_failed`]).
    Attach(usize),
    /// The transaction is over: reset and return this server, then call
    /// [`Core::released`].
    Release(Box<Release>),
    /// The work's tenant is paused (console `PAUSE TENANT`): wait until the
    /// pause of this (canonical) key ends, then call [`Core::resumed`] (or
    /// [`Core::attach_failed`] when the wait times out or is cancelled).
    Paused(TenantKey),
    /// Append these bytes (part of a large client message) to the session's
    /// spool file, then call [`Core::client_data`].
    Spill(Bytes),
    /// The rest of the spilled message has come: read the spool's first `n`
    /// bytes back, empty it, and hand them to [`Core::unspilled`].
    Unspill(usize),
    /// The server's FATAL error reached the client, which takes its
    /// connection as over (as on its own connection to Postgres): call
    /// [`Core::server_lost`], and end the session.
    ServerGone,
    /// The session must end; the client has been told why.
    Close(End),
}

/// A server being given back, with what the driver needs to reset it and account
/// for the transaction.
#[derive(Debug)]
pub struct Release {
    /// The server's state (to be put back with its socket).
    pub state: Box<ServerState>,
    /// Session state the client may have left on it: reset before reuse.
    pub effects: Effects,
    /// Settings must be read back (they follow the client).
    pub read_back: bool,
    /// The server carries the client's `idle_session_timeout`, lifted before
    /// it idles in the pool (see `ServerConn::has_idle_timeout`).
    pub idle_timeout: bool,
    /// The tenant that pinned the transaction, if any, in its canonical
    /// spelling (SHOW TENANTS).
    pub tenant: Option<TenantKey>,
    /// When the server was attached.
    pub since: std::time::Instant,
    /// The transaction's counters.
    pub counters: Counters,
}

impl Release {
    /// Whether the server needs work (a reset, a read-back) before it goes
    /// back to the pool.
    pub fn needs_reset(&self) -> bool {
        !self.effects.is_empty() || self.read_back || self.idle_timeout
    }
}

/// Everything a session decides, without I/O. Each concern is its own part,
/// with its own file and methods; this file moves work between them.
pub struct Core {
    pub(super) db: Arc<DbRuntime>,
    /// Process-unique client id (logs, statement identity).
    pub(super) client_id: i32,
    /// What the client sent and the session has not handled yet.
    inbound: Inbound,
    /// What goes to the client.
    pub(super) out: Outbound,
    /// The extended-protocol batch being collected.
    pub(super) batch: Batch,
    /// Work waiting, and what it waits for.
    pub(super) wait: Wait,
    /// Where the client's transaction lives.
    pub(super) txn: Txn,
    /// The attached server's side, while one is attached.
    /// Boxed: an idle client (most of them) has none, and should not carry its room.
    pub(super) att: Option<Box<Attachment>>,
    /// Tenant settings, the pinning tenant, and routing's analyses.
    pub(super) route: Tenancy,
    /// The client's prepared statements.
    pub(super) stmts: Statements,
    /// The client's session settings.
    pub(super) settings: Settings,
    /// This attachment's counters.
    pub(super) counters: Counters,
    /// Tenant pauses, shared by every session.
    pub(super) gate: Arc<TenantGate>,
    /// The client sent Terminate behind work still in flight: nothing more
    /// is read, and the session ends once that work is answered (as Postgres
    /// runs every message before a Terminate, then closes).
    pub(super) terminating: bool,
    /// The session cannot go on (its settings could not be read back after
    /// its last transaction): the error answers the client's next message,
    /// and the session ends. Sent at once, behind the ReadyForQuery the
    /// client already had, libpq takes such an error for a notice and
    /// reports its next statement failing with no SQLSTATE (probe JJ).
    pub(super) doomed: Option<Box<crate::sqlstate::PgError>>,
    /// A portal whose Bind shardbouncer answered (boxed: almost no client
    /// has one). See [`LocalPortal`].
    pub(super) local_portal: Option<Box<LocalPortal>>,
    /// The portal last bound to a named statement, and the statement: a
    /// Describe of that portal tells the client the statement's result
    /// types (PgJDBC describes the portal, not the statement; see
    /// `StmtDef::told`).
    pub(super) last_bound: Option<Box<(Bytes, Arc<crate::server::prepared::StmtDef>)>>,
}

/// What of a [`Core`] lasts between transactions, and nothing else: an idle
/// client is kept in this form ([`Core::park`]), a few hundred bytes instead of
/// the whole core with its scratch and the room for every part of a
/// transaction in flight.
pub struct ParkedCore {
    db: Arc<DbRuntime>,
    client_id: i32,
    /// `max_message_size` and `spool_threshold` (see [`Inbound::park`]), at
    /// most `u32::MAX`: a frame's length is an `i32`, so a larger limit means
    /// the same, and every parked client keeps 8 bytes fewer. (The gate is
    /// the app's, given back at [`Core::unpark`], for 8 more.)
    limits: (u32, u32),
    /// Tenant settings, when there are any.
    tenants: Option<Box<Tenants>>,
    /// Prepared statements, when the client ever had any.
    stmts: Option<Box<Statements>>,
    settings: Settings,
    /// Requests answered over the session's life.
    answered: u64,
    /// Counters not yet added to a pool's, when there are any.
    counters: Option<Box<Counters>>,
}

impl ParkedCore {
    /// Give back unused capacity before a long sleep.
    pub fn compact(&mut self) {
        self.settings.shrink_to_fit();
    }

    /// The client's database, as the session last saw it.
    pub fn db(&self) -> &Arc<DbRuntime> {
        &self.db
    }
}

/// A portal whose Bind shardbouncer answered itself: a `SET` of the tenant
/// key or a held statement (`listen: None`), or a LISTEN/UNLISTEN statement
/// (see `listen_ext`). The server's portal of that name, if any, is an older
/// one and not the client's: until the client binds or closes the name
/// again, a batch that runs or describes it is answered here (a LISTEN
/// batch) or refused, never sent to the server.
pub(super) struct LocalPortal {
    /// The portal's name.
    pub(super) name: Bytes,
    /// What running it does, for a LISTEN/UNLISTEN portal.
    pub(super) listen: Option<Vec<crate::router::ListenOp>>,
    /// The transactions ended when it was bound: a portal ends with its
    /// transaction (probe L: one bound here outlived a ROLLBACK).
    pub(super) epoch: u32,
}

impl Core {
    /// Whether [`Core::park`] would succeed: nothing in flight, held or owed.
    /// A BEGIN answered here and held for the transaction's first statement,
    /// or an extended batch before its Sync, is not parked (the parked form
    /// keeps neither): such a client waits in the full form until it is over.
    pub fn parkable(&self) -> bool {
        self.inbound.park().is_some()
            && self.att.is_none()
            && matches!(self.txn, Txn::OnServer)
            && self.wait.is_clear()
            && self.batch.is_clear()
            && self.out.is_clear()
            && self.route.is_clear()
            && !self.terminating
            && self.doomed.is_none()
            // A LISTEN portal may be bound in a batch with no Sync yet: the
            // client may still run it. A SET's portal dies with the implicit
            // transaction, as on Postgres.
            && self.local_portal.as_ref().is_none_or(|p| p.listen.is_none())
    }

    /// Park the core between transactions: no server attached or wanted, no
    /// transaction (held ones included), no bytes held either way, no work
    /// waiting, nothing to carry out. `Err` gives the core back unchanged
    /// when any of that does not hold.
    ///
    /// Every field is named below, here and in the parts' `park`s: a field
    /// added later cannot be dropped by mistake, it must be placed on one
    /// side or the other. What is dropped is scratch that a new session
    /// starts without.
    #[allow(clippy::result_large_err)]
    pub fn park(self) -> Result<ParkedCore, Core> {
        let (Some(limits), true) = (self.inbound.park(), self.parkable()) else {
            return Err(self);
        };
        let Core {
            db,
            client_id,
            inbound: _,
            out: _,
            batch: _,
            wait: _,
            txn: _,
            att: _,
            route,
            stmts,
            settings,
            counters,
            gate: _,
            terminating: _,
            doomed: _,
            local_portal: _,
            last_bound: _,
        } = self;
        let tenants = route.park();
        let (answered, counters) = counters.park();
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(ParkedCore {
            db,
            client_id,
            limits: (narrow(limits.0), narrow(limits.1)),
            tenants: (tenants != Tenants::default()).then(|| Box::new(tenants)),
            stmts: (!stmts.is_default()).then(|| Box::new(stmts)),
            settings,
            answered,
            counters,
        })
    }

    /// The core of a [`ParkedCore`], with the client bytes read since, and
    /// the app's tenant gate.
    pub fn unpark(p: ParkedCore, client_bytes: BytesMut, gate: Arc<TenantGate>) -> Core {
        let ParkedCore {
            db,
            client_id,
            limits: (max_msg, spill_at),
            tenants,
            stmts,
            settings,
            answered,
            counters,
        } = p;
        Core {
            db,
            client_id,
            inbound: Inbound::unpark((max_msg as usize, spill_at as usize), client_bytes),
            out: Outbound::default(),
            batch: Batch::default(),
            wait: Wait::default(),
            txn: Txn::OnServer,
            att: None,
            route: Tenancy::unpark(tenants.map(|t| *t).unwrap_or_default()),
            stmts: stmts.map(|s| *s).unwrap_or_default(),
            settings,
            counters: Counters::unpark(answered, counters),
            gate,
            terminating: false,
            doomed: None,
            local_portal: None,
            last_bound: None,
        }
    }

    /// A core for a client of `db` that logged in with these settings.
    pub fn new(
        db: Arc<DbRuntime>,
        client_id: i32,
        max_msg: usize,
        reported: ParamSet,
        unreported: ParamSet,
        startup_tenant: Option<TenantKey>,
        gate: Arc<TenantGate>,
    ) -> Core {
        Core {
            db,
            client_id,
            inbound: Inbound::new(max_msg),
            out: Outbound::default(),
            batch: Batch::default(),
            wait: Wait::default(),
            txn: Txn::default(),
            att: None,
            route: Tenancy::new(startup_tenant),
            stmts: Statements::default(),
            settings: Settings::new(reported, unreported),
            counters: Counters::default(),
            gate,
            terminating: false,
            doomed: None,
            local_portal: None,
            last_bound: None,
        }
    }

    // ------------------------------------------------------------------
    // What the driver asks.
    // ------------------------------------------------------------------

    /// The phase (see [`super::state`]).
    pub fn phase(&self) -> Phase {
        if self.wait.releasing() {
            return Phase::Releasing;
        }
        if self.wait.awaiting().is_some() {
            return Phase::WaitingForServer;
        }
        if self.wait.paused().is_some() {
            return Phase::Paused;
        }
        match (&self.att, &self.txn) {
            (None, Txn::OnServer) => Phase::Idle,
            (None, Txn::Held(_)) => Phase::Held,
            (None, Txn::Failed(_)) => Phase::HeldFailed,
            (Some(a), _) if a.copy_in() => Phase::CopyIn,
            (Some(a), _) if !a.settled() => Phase::Draining,
            (Some(_), Txn::OnServer) => Phase::Attached,
            (Some(_), _) => Phase::OutsideHeld,
        }
    }

    /// The transaction status the client sees.
    pub fn client_status(&self) -> TxStatus {
        self.txn
            .client_status(self.att.as_deref().map(Attachment::status))
    }

    /// Session mode: the client owns its server for its whole connection, so
    /// what it creates there (named statements, LISTEN) is left to Postgres,
    /// under its own names; in the other modes shardbouncer keeps it.
    pub fn owns_server(&self) -> bool {
        self.db.settings.mode == crate::config::PoolMode::Session
    }

    /// Between transactions, where Postgres delivers notifications: no server
    /// attached, no transaction (held ones included), no batch open or waiting.
    pub fn between_transactions(&self) -> bool {
        self.att.is_none()
            && self.client_status() == TxStatus::Idle
            && self.batch.is_empty()
            && !self.wait.has_stalled()
            && !self.batch.skipping()
    }

    /// Whether a LISTEN/UNLISTEN was answered since the last
    /// [`Self::take_listen_ops`].
    pub fn has_listen_ops(&self) -> bool {
        self.route.has_listen_ops()
    }

    /// The LISTEN/UNLISTEN requests answered since the last call, in order.
    pub fn take_listen_ops(&mut self) -> Vec<ListenOp> {
        self.route.take_listen_ops()
    }

    /// Who the server being requested is for, as the pool's fair queue knows
    /// tenants (canonical key), with the tenant's cap.
    pub fn awaited_for(&self) -> Option<(TenantKey, usize)> {
        let t = self.wait.awaited_tenant()?;
        let key = self.gate_key(t);
        Some((key, self.db.tenant_cap(&key)))
    }

    /// A server is attached.
    pub fn has_server(&self) -> bool {
        self.att.is_some()
    }

    /// Nothing is owed by a server.
    pub fn nothing_owed(&self) -> bool {
        self.att.as_deref().is_none_or(Attachment::settled)
    }

    /// The client holds a server that waits for it: a COPY FROM STDIN
    /// waiting for data, or an extended batch with no Sync yet whose answers
    /// all came. Either is a transaction (an implicit one) the client keeps
    /// open, as idle as one inside `BEGIN` (probe ZZ: a Parse/Bind/Execute
    /// and Flush, or a COPY, then silence, held a shard's server for good,
    /// past `idle_transaction_timeout`).
    pub fn server_waits_for_client(&self) -> bool {
        self.att
            .as_deref()
            .is_some_and(|a| a.copy_in() || (a.ext_open() && a.settled()))
    }

    /// The database this session serves.
    pub fn db(&self) -> &Arc<DbRuntime> {
        &self.db
    }

    /// A reloaded configuration for this database: taken between transactions
    /// only ("the next transaction uses the new map").
    ///
    /// A session-mode client keeps its server between transactions: the new
    /// map applies from its next transaction too, as in transaction mode
    /// (probe: a tenant a reload moved stayed on its old shard for the rest
    /// of such a session, its writes included). That holds only while the
    /// server it keeps is still the same shard of the same database in the
    /// same mode; when the reload changed those, the session ends (`Err`:
    /// 57P01, so the client reconnects) rather than route by a map that no
    /// longer says where its tenants are.
    ///
    /// `generation`: the configuration's in force (nothing to take up if it
    /// is this session's).
    pub fn maybe_reload(
        &mut self,
        generation: u64,
        db: impl FnOnce(&DbRuntime) -> Option<Arc<DbRuntime>>,
    ) -> Result<(), End> {
        if generation == self.db.generation || self.wait.busy() {
            return Ok(());
        }
        let Some(a) = &self.att else {
            self.wait.reload_taken();
            // A BEGIN held here has reached no server either: its first
            // tenant statement is placed by the new map (probe: after a
            // reload that moved the tenant, it went to the old shard).
            if let Some(new) = db(&self.db) {
                let session = |d: &DbRuntime| d.settings.mode == crate::config::PoolMode::Session;
                if session(&new) != session(&self.db) {
                    if self.txn.is_local() || !self.batch.is_empty() {
                        // Told once its held transaction or batch is over.
                        return Ok(());
                    }
                    // What shardbouncer keeps for a client outside session
                    // mode (its named statements, its LISTENs) would be lost
                    // without a word in session mode, where Postgres keeps
                    // them (probe H): the client reconnects, as one that
                    // leaves session mode does.
                    return Err(self.fatal(
                        sqlstate::ADMIN_SHUTDOWN,
                        "the configuration reload changed this database's pool mode: reconnect",
                    ));
                }
                self.db = new;
            }
            return Ok(());
        };
        let between = self.owns_server()
            && a.settled()
            && a.to_server().is_empty()
            && a.status() == TxStatus::Idle
            && !a.ext_open()
            && self.batch.is_empty()
            && !self.wait.has_stalled();
        // Between two units of work with none of a transaction open as far
        // as the server has said (answers may still be owed): a client that
        // pipelines without letting its answers catch up never comes to the
        // point above, and its work was routed by the old map for as long as
        // it kept on (probe CW F1: a moved tenant's rows written on its old
        // shard). Its next unit is routed by the new map: one for another
        // shard waits for the work in flight, as a unit of another tenant
        // does, and is refused if that work turns out to have opened a
        // transaction. Tickets held stay checked against the configuration
        // they were taken with (`Tenancy::held_with`).
        let between_units = !between
            && a.status() == TxStatus::Idle
            && !a.ext_open()
            && !a.ext_stays()
            && !a.in_copy_batch()
            && !a.copy_in()
            && matches!(self.txn, Txn::OnServer);
        if !between && !between_units {
            return Ok(());
        }
        let Some(new) = db(&self.db) else {
            return Ok(());
        };
        if new.settings.mode == self.db.settings.mode
            && new.cfg.shards == self.db.cfg.shards
            && new.dbname() == self.db.dbname()
        {
            self.route.tickets_outlive(&self.db);
            self.db = new;
            return Ok(());
        }
        if between_units {
            // The server's shard may mean another one under the new
            // configuration: taken up once nothing is in flight and the
            // server is given back. Until then no more of the client's work
            // is read (probe DA F2: a client that kept 10,000 messages in
            // flight never came to that point, and wrote a moved tenant's
            // rows on its old shard for as long as it went on). If the work
            // in flight opens a transaction, reading goes on once it is
            // answered, by the old configuration, to the transaction's end.
            self.wait.hold_for_reload();
            return Ok(());
        }
        Err(self.fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "the configuration reload changed this database's shards or pool mode: reconnect",
        ))
    }

    /// Take up the idle timeouts of `new` (the database as a reload left
    /// it) now, in the middle of a transaction too, where the rest of the
    /// database's configuration waits for the transaction's end: a client
    /// idle in its transaction holds its server and locks until the timeout
    /// a reload turned on ends it (probe O).
    pub fn take_up_timeouts(&mut self, new: &DbRuntime) {
        let (old, s) = (&self.db.settings, &new.settings);
        if old.idle_transaction_timeout == s.idle_transaction_timeout
            && old.client_idle_timeout == s.client_idle_timeout
        {
            return;
        }
        let mut settings = old.clone();
        settings.idle_transaction_timeout = s.idle_transaction_timeout;
        settings.client_idle_timeout = s.client_idle_timeout;
        self.db = Arc::new(DbRuntime {
            name: self.db.name.clone(),
            cfg: self.db.cfg.clone(),
            settings,
            routing: self.db.routing.clone(),
            generation: self.db.generation,
            server_tls: self.db.server_tls.clone(),
        });
    }

    /// See [`Settings::announce_untracked`].
    pub fn announce_untracked(&self, announced: &mut ParamSet) {
        self.settings.announce_untracked(announced);
    }

    /// The client's settings, as the login greeting announced them, and the
    /// defaults it was told (see [`Settings::greeted`]).
    pub fn greeted(&mut self, announced: &ParamSet, told: Arc<ParamSet>) {
        self.settings.greeted(announced, told);
    }

    /// Reported parameters the client set at login.
    pub fn reported(&self) -> &ParamSet {
        self.settings.reported()
    }

    /// Custom setting names to read back at release.
    pub fn custom_settings(&self) -> &[String] {
        self.settings.custom()
    }

    /// The client has a `seed` among its settings (a startup option, or set
    /// in an earlier transaction): it is applied with them to each server it
    /// gets, and the next client's random() would follow it.
    pub fn seeded(&self) -> bool {
        self.settings.unreported().get("seed").is_some()
    }

    /// The home shard: where tenant-free work goes.
    pub fn home_shard(&self) -> usize {
        match &self.db.routing {
            Some(rt) => rt.home_shard(self.route.tenants()),
            None => 0,
        }
    }

    /// Route a batch without its Sync once it holds `n` messages, at its next
    /// Execute, instead of at 1,024 (the session fuzz target slices at a few,
    /// so that its invariants cover batches routed in slices).
    pub fn slice_batches_at(&mut self, n: usize) {
        self.batch.slice_at(n);
    }

    /// Spill client messages larger than `n` bytes to the driver's spool while
    /// they arrive (`[limits] spool_threshold`; see [`Need::Spill`]).
    pub fn spill_above(&mut self, n: usize) {
        self.inbound.spill_above(n);
    }

    /// The spilled bytes the driver was asked for ([`Need::Unspill`]): the
    /// message is whole again and is handled like any other.
    pub fn unspilled(&mut self, head: BytesMut) -> Need {
        self.inbound.unspilled(head);
        self.client_data()
    }

    /// Length of the whole message being spilled (what [`Need::Unspill`]
    /// makes whole again), if one is.
    pub fn spilled_len(&self) -> Option<usize> {
        self.inbound.spilled_len()
    }

    /// No message read back from the spool is held here or still on its
    /// way to a server: none waits to be handled, no batch is held, no unit
    /// waits, and the attached server has been sent everything (it is gone
    /// from memory, but for what a prepared statement keeps of it). What
    /// the read buffer and the spool hold of the next message is not that.
    pub fn holds_no_client_work(&self) -> bool {
        !self.inbound.has_ready()
            && self.batch.is_empty()
            && !self.wait.has_stalled()
            && self.att.as_ref().is_none_or(|a| a.to_server().is_empty())
    }

    /// The client read buffer (the driver reads into it).
    pub fn cbuf(&mut self) -> &mut BytesMut {
        self.inbound.buf_mut()
    }

    /// Bytes of client input held and not yet processed (an incomplete message,
    /// or work waiting for the server).
    pub fn client_buffered(&self) -> usize {
        self.inbound.len()
    }

    /// Bytes the client's read buffer takes (at least [`Self::client_buffered`]).
    pub fn client_buffer_size(&self) -> usize {
        self.inbound.capacity()
    }

    /// Between transactions, give back the buffers an idle client does not need
    /// (the driver then waits for the client's next bytes without a buffer, and
    /// allocates one when they come): most of a pooler's clients are idle, and an
    /// idle client should cost little more than its socket.
    pub fn trim_idle(&mut self) {
        if self.att.is_none()
            && self.inbound.is_empty()
            && !self.wait.has_stalled()
            && self.batch.is_empty()
            && self.out.is_empty()
        {
            self.inbound.trim();
            self.out.trim();
        }
    }

    /// Whether the driver should read from the client now.
    pub fn wants_client_bytes(&self) -> bool {
        // After a Terminate nothing is read: a client that closes its socket
        // right after sending one does not end the work before it.
        !self.terminating
            // Not while the client leaves its answers unread, as Postgres
            // stops reading once its writes block: answers given here (a
            // Sync, a `SET tenant_id` with no server) were queued for as
            // long as the client sent, and one client that never read grew
            // the pooler by 500 MB a second (probe DG F1).
            && self.out.len() < HIGH_WATER
            && !self.wait.has_stalled()
            && self.wait.awaiting().is_none()
            && !self.reload_holds_reading()
            && self
                .att
                .as_ref()
                .is_none_or(|a| a.to_server().len() < HIGH_WATER && !a.owes_enough())
    }

    /// Whether the driver should read from the server now.
    pub fn wants_server_bytes(&self) -> bool {
        self.out.len() < HIGH_WATER
    }

    /// The queues and buffer the driver's I/O works on: what goes to the client,
    /// and (with a server) what goes to it and where its bytes arrive.
    pub fn io(&mut self) -> (&mut BytesMut, &OutQueue, Option<(&OutQueue, &mut BytesMut)>) {
        let server = self.att.as_deref_mut().map(Attachment::io);
        (self.inbound.buf_mut(), self.out.queue(), server)
    }

    /// The client read `n` bytes.
    pub fn client_read(&mut self, n: usize) {
        self.counters.client_read(n);
    }

    /// `n` bytes were written to the client.
    pub fn client_wrote(&mut self, n: usize) {
        self.counters.client_wrote(n);
        self.out.queue().advance(n);
    }

    /// Requests servers have answered over the session's life.
    pub fn requests_answered(&self) -> u64 {
        self.counters.answered()
    }

    /// Bytes for the attached server are waiting to be written.
    pub fn sending_to_server(&self) -> bool {
        self.att.as_ref().is_some_and(|a| a.has_output())
    }

    /// Take every byte queued for the server (socket-free drivers: tests, fuzzing).
    pub fn take_to_server(&mut self) -> Vec<u8> {
        match self.att.as_mut() {
            Some(a) => a.take_to_server(),
            None => Vec::new(),
        }
    }

    /// Append bytes the server sent (socket-free drivers), then call
    /// [`Core::server_data`].
    pub fn server_bytes(&mut self, b: &[u8]) -> bool {
        match self.att.as_mut() {
            Some(a) => {
                a.server_bytes(b);
                true
            }
            None => false,
        }
    }

    /// Everything for the client (the driver flushes it before closing).
    pub fn to_client(&mut self) -> &mut OutQueue {
        self.out.queue()
    }

    /// `n` bytes were written to the server: the last write of a finished
    /// transaction may be what allows the release.
    pub fn server_wrote(&mut self, n: usize) -> Need {
        if let Some(a) = self.att.as_mut() {
            a.wrote(n);
        }
        self.maybe_release()
    }

    /// Queue a FATAL for the client; the driver then ends the session.
    pub fn fatal(&mut self, code: &'static str, msg: &str) -> End {
        protocol::pg_error(
            self.out.build(),
            tag::backend::ERROR_RESPONSE,
            &PgError::fatal(code, msg),
        );
        self.emit();
        msg.to_string()
    }

    // ------------------------------------------------------------------
    // Client bytes.
    // ------------------------------------------------------------------

    /// Handle stalled work (when it can go on) and every complete client frame in
    /// the read buffer, until the core needs something from the driver.
    pub fn client_data(&mut self) -> Need {
        if self.wait.busy() {
            return Need::Io;
        }
        if self.wait.reload_waits() && self.att.is_none() {
            // The reload waited for the server to go back: it is taken up
            // before anything more is routed (`maybe_reload`, which the
            // driver calls before it waits), never by the old shard list
            // (probe DD F1: work read here went by the old configuration,
            // and a COPY attached that way then waited for good for data
            // the hold kept unread).
            return Need::Io;
        }
        if self.doomed.is_some() && !self.terminating {
            if self.inbound.is_empty() && !self.wait.has_stalled() {
                return Need::Io;
            }
            let e = self.doomed.take().expect("doomed");
            return Need::Close(self.fatal(e.code, &e.message));
        }
        // Stalled work is decided once the server has answered everything in flight.
        if self.wait.has_stalled() && self.nothing_owed_and_sent() {
            if let Some(unit) = self.wait.take_stalled() {
                self.wait.set_waited(true);
                let need = self.route_unit(unit);
                if !matches!(need, Need::Attach(_)) {
                    self.wait.set_waited(false);
                }
                match need {
                    Need::Io => {}
                    need => return need,
                }
            }
        }
        if self.terminating {
            // Nothing after a Terminate is read; the end waits for the work
            // before it (this is where the core comes back as it is answered).
            return match (self.quiet(), self.doomed.take()) {
                (true, Some(e)) => Need::Close(self.fatal(e.code, &e.message)),
                (true, None) => Need::Close("client terminated".into()),
                (false, e) => {
                    self.doomed = e;
                    Need::Io
                }
            };
        }
        loop {
            if self.wait.has_stalled()
                || self
                    .att
                    .as_ref()
                    .is_some_and(|a| a.to_server().len() >= HIGH_WATER)
                || self.reload_holds_reading()
            {
                break;
            }
            let (att, routed, armed) = (
                &self.att,
                self.db.routing.is_some(),
                self.route.copy_armed(),
            );
            let can_stream = || !armed && copy_message_passes(att.as_deref(), routed);
            match self.inbound.next(can_stream) {
                Next::More => break,
                Next::Spill(chunk) => return Need::Spill(chunk),
                Next::Unspill(n) => return Need::Unspill(n),
                Next::Stream(chunk) => {
                    if !self.batch.skipping() {
                        if let Some(a) = self.att.as_mut() {
                            a.send_raw(chunk);
                        }
                    }
                }
                Next::Bad(msg) => return self.bad_message(&msg),
                Next::Frame(tag, frame) => match self.client_frame(tag, frame) {
                    // Nothing after a Terminate is read.
                    Need::Io if self.terminating => return Need::Io,
                    Need::Io => {}
                    need => return need,
                },
            }
        }
        self.drain_synthetic();
        // Work answered locally while a server was attached produces no server
        // traffic that would trigger the release: check here too.
        self.maybe_release()
    }

    /// No work in flight or waiting: every request answered, nothing left to
    /// send to a server, nothing stalled or being released. (A batch still
    /// collecting without its Sync does not count: Postgres, too, drops the
    /// implicit transaction of one when the client terminates.)
    fn quiet(&self) -> bool {
        !self.wait.has_stalled() && !self.wait.busy() && self.nothing_owed_and_sent()
    }

    /// A malformed message: the session ends with 08P01, once the work
    /// before it is answered. Postgres reads a message only once it is done
    /// with the one before, so work sent in the same write ahead of a bad
    /// message runs, and commits (probe DG F3: it was dropped unanswered).
    fn bad_message(&mut self, msg: &str) -> Need {
        if self.att.as_ref().is_some_and(|a| a.copy_in()) {
            // A COPY from the client would wait for good for the data that
            // will not come: Postgres fails it, and so does the end now.
            return Need::Close(self.fatal(sqlstate::PROTOCOL_VIOLATION, msg));
        }
        match self.terminate() {
            Need::Io => {
                self.doomed = Some(Box::new(PgError::new(sqlstate::PROTOCOL_VIOLATION, msg)));
                Need::Io
            }
            _ => Need::Close(self.fatal(sqlstate::PROTOCOL_VIOLATION, msg)),
        }
    }

    /// The client's Terminate: the session ends now, or once the work before
    /// it is answered.
    fn terminate(&mut self) -> Need {
        if let Some(a) = self.att.as_mut().filter(|a| a.ext_open()) {
            // A batch without its Sync: Postgres holds its answers until a
            // Sync or Flush that will never come, so the end would wait for
            // good, the server checked out (probe). A Flush brings them; the
            // server then goes away with the batch's implicit transaction, as
            // Postgres drops it when a client terminates.
            let mut b = BytesMut::new();
            protocol::flush(&mut b);
            a.send_raw(b.freeze());
        }
        if self.quiet() {
            Need::Close("client terminated".into())
        } else {
            self.terminating = true;
            Need::Io
        }
    }

    /// A row of the COPY the client is sending was refused (`e`): in place
    /// of the CopyData that holds it, the server gets a CopyFail (so it
    /// ends the COPY having written nothing), and the client gets `e` as
    /// the COPY's error; its copy messages after that are dropped, as
    /// Postgres drops them after a COPY failed.
    fn refuse_copy(&mut self, e: &PgError) -> Need {
        tracing::debug!(client = self.client_id, code = e.code, "COPY row refused");
        let mut err = BytesMut::new();
        protocol::pg_error(&mut err, tag::backend::ERROR_RESPONSE, e);
        let mut fail = BytesMut::new();
        protocol::copy_fail(&mut fail, super::attachment::COPY_FAIL_REASON);
        let need = match self.att.as_mut() {
            Some(a) => {
                a.copy_refused(err.freeze());
                self.client_frame(tag::frontend::COPY_FAIL, fail.freeze())
            }
            // (No server runs it: nothing to end.)
            None => Need::Io,
        };
        self.route.drop_copy_messages();
        need
    }

    /// Whether the client's copy messages go to its server now: one is
    /// attached and, on a routed database, a COPY the router read runs or
    /// may start there ([`Attachment::copies_expected`]).
    fn copy_message_passes(&self) -> bool {
        copy_message_passes(self.att.as_deref(), self.db.routing.is_some())
    }

    /// Whether the server asked for now is for a unit that waited for the
    /// work in flight first: no client byte was read meanwhile, so a client
    /// that closed its connection then is seen only now. `false` when the
    /// client said goodbye first ([`Self::said_goodbye`]): then its work
    /// runs, as Postgres runs everything before a Terminate.
    pub fn unit_waited(&self) -> bool {
        self.wait.waited() && !self.said_goodbye()
    }

    /// Whether a Terminate was read behind the work not yet run: read (the
    /// session is ending once that work is answered) or among the bytes
    /// held. Its socket closing then is the end it announced, not a client
    /// that gave up: work waiting for a server still runs once one comes,
    /// as Postgres runs the statement it read before its client left. (A
    /// Terminate still unread in the socket is a client that left while
    /// queued: its work is dropped, see `Session::attach`. And as in
    /// Postgres, once a write of an answer fails the session ends, and the
    /// rest of a long pipeline with it.)
    pub fn said_goodbye(&self) -> bool {
        // (Asked on the queue's paths only; the held frames are walked only
        // when there are some.)
        self.terminating || !self.inbound.is_empty() && self.inbound.holds_terminate()
    }

    /// A reload that changed the shards waits for the work in flight (no
    /// transaction open as far as the server has said): no client frame is
    /// read meanwhile. Once the work is answered, the server goes back (and
    /// the reload is taken up), or a transaction it opened goes on.
    fn reload_holds_reading(&self) -> bool {
        self.wait.reload_waits()
            && self
                .att
                .as_ref()
                .is_some_and(|a| a.status() == TxStatus::Idle)
            && !self.nothing_owed_and_sent()
    }

    fn nothing_owed_and_sent(&self) -> bool {
        self.att
            .as_ref()
            .is_none_or(|a| a.settled() && a.to_server().is_empty())
    }

    fn client_frame(&mut self, t: u8, frame: Bytes) -> Need {
        use tag::frontend as f;
        if let Err(what) = protocol::validate_frontend(t, &frame[5..]) {
            // As Postgres: a malformed message ends the connection.
            return self.bad_message(what);
        }
        if self.owns_server()
            && self.db.routing.is_some()
            && super::frames::long_name(t, &frame[5..])
        {
            // Session mode passes the client's names to the server, which
            // keeps 63 bytes of each: two longer names that start alike
            // would be one statement there and two here (probe CM F2: a
            // COPY ran where the router judged a SELECT).
            return Need::Close(self.fatal(
                sqlstate::NAME_TOO_LONG,
                "prepared statement and portal names are at most 63 bytes in session mode",
            ));
        }
        if self.db.routing.is_some()
            && super::frames::non_ascii_name(t, &frame[5..])
            && (self.settings.keys_ascii_only() || self.encoding_unsure())
        {
            // Postgres converts a name to its own encoding and then keeps
            // 63 bytes of it: names that differ past ASCII may be one there
            // and two here (probe CN F1: a COPY's portal ran unchecked
            // under a second name). Drivers name in ASCII.
            return Need::Close(self.fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "prepared statement and portal names past ASCII need client_encoding UTF8 \
                 on a routed database (Postgres converts a name before it keeps 63 bytes \
                 of it)",
            ));
        }
        if self.route.drops_copy_message(t) {
            return Need::Io;
        }
        if self.route.copy_armed() && self.batch.is_empty() {
            // The rows of a COPY whose work went (data held in a batch is
            // checked when the batch goes: `copy_of_unit`).
            let checked = match t {
                f::COPY_DATA | f::COPY_DONE => self.db.routing.clone().map(|rt| {
                    let v = self.view();
                    let data = (t == f::COPY_DATA).then(|| &frame[5..]);
                    self.route.copy_rows(&rt, v, data)
                }),
                f::COPY_FAIL => {
                    self.route.end_copy();
                    None
                }
                _ => None,
            };
            if let Some(Err(e)) = checked {
                return self.refuse_copy(&e);
            }
        }
        if matches!(t, f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL)
            && self.batch.is_empty()
            && !self.copy_message_passes()
        {
            // No COPY the router read runs or may start: Postgres ignores
            // copy messages then, and one it did not read must not get
            // them (see `Entry::copies`).
            return Need::Io;
        }
        // (A copy message of the COPY the server runs now is no end sent
        // ahead of one: `Attachment::copy_end_ahead`.)
        let in_copy = self.att.as_ref().is_some_and(|a| a.copy_in());
        if let Some(a) = self.att.as_mut() {
            if a.copy_in() {
                match t {
                    // Ignored by the server during COPY IN: no answer to expect.
                    f::SYNC | f::FLUSH => {
                        a.send_raw(frame);
                        return Need::Io;
                    }
                    f::COPY_DATA => {}
                    f::COPY_DONE | f::COPY_FAIL => a.end_copy_in(),
                    // Postgres fails the copy on anything else; a pooler that
                    // forwarded it would lose track of what the server owes.
                    other => {
                        a.mark_broken();
                        return Need::Close(self.fatal(
                            sqlstate::PROTOCOL_VIOLATION,
                            &format!(
                                "unexpected message type 0x{other:02X} during COPY from stdin"
                            ),
                        ));
                    }
                }
            }
            if t != f::SYNC && a.owes_too_much() {
                a.mark_broken();
                return Need::Close(self.fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "too many extended-protocol messages without Sync",
                ));
            }
        }
        if self.batch.skipping() {
            self.skipped(t, frame);
            return Need::Io;
        }
        match t {
            f::TERMINATE => self.terminate(),
            f::QUERY | f::FUNCTION_CALL if !self.batch.is_empty() => {
                // Extended messages held with no Sync yet, then a Query or
                // FunctionCall: Postgres runs them in order, in one implicit
                // transaction that the Query ends. Routed at once, the Query
                // overtook the batch (probe): it ran first, on its own
                // tenant's shard, and the batch ran at its Sync, on another
                // shard or with no tenant. The batch goes now, as at a Flush
                // (so its answers come), and the Query is read again after
                // it: it is decided with the batch's work in flight, as a
                // later unit of the same batch is (another shard's tenant is
                // refused, and an error skips it up to the Sync).
                let mut flush = BytesMut::new();
                protocol::flush(&mut flush);
                if let Err(e) = self.batch.push(f::FLUSH, flush.freeze()) {
                    let (code, msg) = e.error();
                    return Need::Close(self.fatal(code, msg));
                }
                let b = self.batch.take();
                self.inbound.unread(frame);
                self.route_unit(Unit::Batch(b))
            }
            f::QUERY | f::FUNCTION_CALL => self.route_unit(Unit::Simple(t, frame)),
            f::PARSE | f::BIND | f::DESCRIBE | f::EXECUTE | f::CLOSE | f::FLUSH | f::SYNC => {
                if self.db.routing.is_none() {
                    return self.plain_ext(t, frame);
                }
                if let Err(e) = self.batch.push(t, frame) {
                    let (code, msg) = e.error();
                    return Need::Close(self.fatal(code, msg));
                }
                if t == f::SYNC || t == f::FLUSH || self.batch.slice_ends_at(t) {
                    let b = self.batch.take();
                    return self.route_unit(Unit::Batch(b));
                }
                Need::Io
            }
            f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL if !self.batch.is_empty() => {
                // COPY data right behind the Execute that starts the COPY, with
                // no Sync or Flush before it (a client need not wait for
                // CopyInResponse): the batch goes now, as at a Flush, and the
                // data with it, in order (it was dropped, and the COPY hung
                // with its server: probe). What follows goes as it comes.
                if let Err(e) = self.batch.push(t, frame) {
                    let (code, msg) = e.error();
                    return Need::Close(self.fatal(code, msg));
                }
                let b = self.batch.take();
                self.route_unit(Unit::Batch(b))
            }
            f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL => {
                if let Some(a) = self.att.as_mut() {
                    if t != f::COPY_DATA && !in_copy {
                        a.copy_end_ahead();
                    }
                    a.send_raw(frame);
                }
                Need::Io
            }
            other => self.bad_message(&format!("invalid frontend message type {other}")),
        }
    }

    // ------------------------------------------------------------------
    // Replies we build.
    // ------------------------------------------------------------------

    /// Queue a message built in `scratch` for the client, now.
    pub(super) fn emit(&mut self) {
        self.out.emit();
    }

    /// Queue a reply built in `scratch` in protocol order: directly when nothing is
    /// owed by a server, else behind what is owed.
    pub(super) fn reply(&mut self, client_tag: u8) {
        self.queue_reply(client_tag, false);
    }

    /// The same for a reply that ends with ReadyForQuery: when it waits behind
    /// in-flight work, its status is the one when its turn comes.
    pub(super) fn reply_ready(&mut self, client_tag: u8) {
        self.queue_reply(client_tag, true);
    }

    fn queue_reply(&mut self, client_tag: u8, patch_status: bool) {
        let b = self.out.built();
        match self.att.as_mut() {
            Some(a) if !a.settled() => a.synthetic(client_tag, b, patch_status),
            _ => self.out.push(b),
        }
    }

    pub(super) fn emit_error(&mut self, e: &PgError) {
        protocol::pg_error(self.out.build(), tag::backend::ERROR_RESPONSE, e);
        self.emit();
    }

    pub(super) fn emit_rfq(&mut self) {
        let status = self.client_status();
        protocol::ready_for_query(self.out.build(), status);
        self.emit();
    }

    /// CommandComplete + ReadyForQuery for a locally answered simple Query.
    pub(super) fn simple_reply(&mut self, command_tag: &str) {
        protocol::command_complete(self.out.build(), command_tag);
        let status = self.client_status();
        protocol::ready_for_query(self.out.build(), status);
        self.reply_ready(tag::frontend::QUERY);
    }

    /// A WARNING/NOTICE before a local reply, in protocol order.
    pub(super) fn notice(&mut self, severity: &'static str, code: &'static str, msg: &str) {
        let e = PgError {
            severity,
            ..PgError::new(code, msg)
        };
        protocol::pg_error(self.out.build(), tag::backend::NOTICE_RESPONSE, &e);
        self.reply(tag::backend::NOTICE_RESPONSE);
    }

    /// A client message that arrives while the batch is skipped after an error
    /// raised here: dropped, but for the Sync, which ends the skip and is
    /// answered (by the server, if one is attached, so its answers stay in order).
    pub(super) fn skipped(&mut self, t: u8, frame: Bytes) {
        if t != tag::frontend::SYNC {
            return;
        }
        self.batch.synced();
        if self.att.is_some() {
            self.send_ext(t, frame);
        } else {
            self.emit_rfq();
        }
    }

    /// Report an error for work that has no server: a Query gets ReadyForQuery at
    /// once; an extended batch is skipped up to its Sync.
    pub(super) fn fail_unattached(&mut self, last_tag: u8, e: &PgError) {
        self.emit_error(e);
        match last_tag {
            tag::frontend::QUERY | tag::frontend::FUNCTION_CALL | tag::frontend::SYNC => {
                self.emit_rfq()
            }
            _ => self.batch.skip(),
        }
    }

    /// Emit synthetic replies that have reached the head of the queue.
    pub(super) fn drain_synthetic(&mut self) {
        if let Some(a) = self.att.as_mut() {
            let txn = &self.txn;
            a.drain_synthetic(self.out.queue(), |s| txn.client_status(Some(s)));
        }
    }

    /// What a statement's server-side identity depends on besides its text:
    /// the settings it is parsed under, and (once this transaction changed
    /// settings, which are read back only at its end) the client itself.
    /// Postgres reads literals when it parses (`'01/02/2024'::date` under
    /// DateStyle, a timestamptz under TimeZone, `'a\nb'` under
    /// standard_conforming_strings, names under search_path): a copy parsed
    /// under another client's settings would answer with its reading (probe
    /// N). So every setting the client changed counts, and the reported ones
    /// but application_name.
    pub(super) fn statement_context(&self) -> String {
        let mut ctx = String::new();
        for (k, v) in self
            .settings
            .reported()
            .iter()
            .filter(|(k, _)| *k != "application_name")
            .chain(self.settings.unreported().iter())
        {
            ctx.push_str(k);
            ctx.push('=');
            ctx.push_str(v);
            ctx.push('\0');
        }
        // A SET LOCAL too (probe P: one tenant's `SET LOCAL TimeZone` read
        // the literals of the copy other tenants then got), held behind a
        // BEGIN answered here as much as sent.
        let changing = |e: Effects| e.may_change_settings() || e.any(Effects::LOCAL_SETTINGS);
        if self.att.as_ref().is_some_and(|a| changing(a.effects()))
            || self.txn.held().is_some_and(|h| changing(h.effects))
        {
            ctx.push_str(&format!("\0client {}", self.client_id));
        }
        ctx
    }

    /// The routing key of this database ("" when it is not routed).
    pub(super) fn routing_key(&self) -> &[u8] {
        self.db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default()
    }

    /// The session must not go on after the server broke the protocol. The
    /// client is told its server connection failed (08006), as when the
    /// server goes away: 08P01 says the client broke the protocol, and
    /// drivers read it so (probe V).
    pub(super) fn server_protocol_error(&mut self, e: impl std::fmt::Display) -> Need {
        if let Some(a) = self.att.as_mut() {
            a.mark_broken();
        }
        Need::Close(self.fatal(
            sqlstate::CONNECTION_FAILURE,
            &format!("invalid message from server: {e}"),
        ))
    }

    /// The server connection died under us: the client is told and the session
    /// ends. Returns the server's state, if one was attached, to be discarded.
    pub fn server_lost(&mut self) -> (Option<Box<ServerState>>, End) {
        let mut told = false;
        let mut cut = false;
        let state = self.att.take().map(|a| {
            told = a.server_fatal();
            cut = a.mid_message();
            let mut st = a.into_state();
            st.broken = true;
            if cut {
                // The client has part of a message the server never
                // finished: nothing more can be read as a message by it, so
                // the connection just closes, as a broken one would.
                return st;
            }
            // Forward the whole messages the server sent last (e.g. FATAL
            // 57P01 from pg_terminate_backend); a message cut short would
            // leave the client reading our error as its rest.
            let mut whole = 0;
            while let Ok(Some((t, total))) =
                protocol::frame_header(&st.rbuf[whole..], usize::MAX >> 1)
            {
                let Some(frame) = st.rbuf.get(whole..whole + total) else {
                    // Its header only (probe HH: sliced past the end, a
                    // panic that left the pool's count of servers in use
                    // one too high).
                    break;
                };
                if t == tag::backend::ERROR_RESPONSE
                    && protocol::parse_error(&frame[5..]).ends_connection()
                {
                    told = true;
                }
                whole += total;
            }
            let rest = st.rbuf.split_to(whole).freeze();
            self.out.push(rest);
            st
        });
        if cut {
            self.emit();
            return (
                state,
                "server connection lost in the middle of a message".to_string(),
            );
        }
        if told {
            // The server's FATAL error is the client's answer, as on its own
            // connection: a second error for the same command made psycopg
            // 3 raise "received 2 results" with no SQLSTATE (probe GG).
            self.emit();
            return (state, "the server ended the connection".to_string());
        }
        // Nothing says how far the server got: a COMMIT under way may have
        // committed (probe GG: 40 of 41 such transactions had, and the
        // message said they were aborted).
        let end = self.fatal(
            sqlstate::CONNECTION_FAILURE,
            "server connection lost; work not yet answered may or may not have been done \
             (an open transaction is rolled back, unless its COMMIT had reached the server)",
        );
        (state, end)
    }

    /// The session is ending: what the client sent and nothing will read goes
    /// now, not after the client's last words are drained (see
    /// `Session::finish`).
    pub fn discard_client_input(&mut self) {
        self.inbound.discard_held();
    }

    /// What the attached server has left to run of a departed client's
    /// work ([`crate::pool::LeftWork`]): a cancel stops it without changing
    /// what the rest of it does only when one unit (simple Query, or batch
    /// up to its Sync) owes its ReadyForQuery. Behind a first one, a cancel
    /// that fails a `BEGIN` (a held one replayed, or the client's own)
    /// leaves the Queries pipelined behind it to run and commit one by one
    /// (probe RR: a client that sent `BEGIN; INSERT ..; ROLLBACK` as three
    /// Queries and closed had its INSERT committed). An error in a unit
    /// skips only the rest of that unit.
    pub fn left_work(&self) -> crate::pool::LeftWork {
        crate::pool::LeftWork::of(self.att.as_ref().map_or(0, |a| a.ready_owed()))
    }

    /// The client is gone: the server's state, and whether it is clean enough to go
    /// back to the pool (after the effects are reset).
    pub fn detach(&mut self) -> Option<(Box<ServerState>, bool, Effects)> {
        let a = self.att.take()?;
        let clean = a.clean_to_return() && !self.inbound.mid_frame();
        let effects = a.effects();
        Some((a.into_state(), clean, effects))
    }

    /// Debug-build checks of what must always hold between events.
    pub(super) fn check(&self) {
        if cfg!(debug_assertions) {
            self.wait.check(self.att.is_some());
            if let Some(a) = &self.att {
                a.check();
            }
        }
    }
}

/// [`Core::copy_message_passes`], of an attachment and whether the database
/// routes.
fn copy_message_passes(att: Option<&Attachment>, routed: bool) -> bool {
    att.is_some_and(|a| !routed || a.copies_expected())
}
