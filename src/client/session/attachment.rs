//! The attached server ([`Attachment`]): what it owes, its transaction status,
//! its open extended batch and COPY state, and [`Attachment::scan`], which
//! matches what it sends to what it owes and forwards the rest to the client.
//! It knows the protocol; what the answers mean for the client (its settings,
//! statements, transaction) goes through a [`ScanCtx`] of the core's parts.

use super::counters::Counters;
use super::frames::execute_portal;
use super::settings::Settings;
use super::state::{Txn, TxnEvent};
use super::statements::Statements;
use super::tenancy::Tenancy;
use crate::client::expect::{Entry, Expectations, Mode};
use crate::client::queue::OutQueue;
use crate::config::PoolMode;
use crate::protocol::{self, tag, TxStatus};
use crate::router::Effects;
use crate::server::prepared::{self, Held, StmtDef};
use crate::server::ServerState;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Instant;

/// Most client messages the server may owe answers to before the client's
/// next messages wait (see [`Attachment::owes_enough`]). Far above what a
/// client that reads its answers keeps in flight.
pub(super) const MAX_OWED: usize = 10_000;

/// Most client messages with no Sync among them the server may owe answers
/// to (see [`Attachment::owes_too_much`]): as many as a batch may hold.
pub(super) const MAX_OWED_UNSYNCED: usize = super::batch::MAX_BATCH;

/// A Flush goes to the server behind every this many answered messages sent
/// with no Sync or Flush after them. Postgres sends what it has buffered only
/// at a Sync or Flush (or when 8 KB pile up): with the Flush, the answers to
/// all but the last few messages are sure to come without more client input,
/// so a client that pipelines a long batch with one Sync at the end (asyncpg's
/// `executemany`) can be made to wait for them, as behind a Sync. Far below
/// [`MAX_OWED`].
pub(super) const FLUSH_EVERY: u16 = 1024;

/// Frames bigger than this that may be streamed (DataRow, CopyData, and from
/// a server NoticeResponse and FunctionCallResponse) are forwarded piecemeal
/// instead of being buffered whole.
pub(super) const STREAM_THRESHOLD: usize = 64 * 1024;

/// Largest server message read whole (those the session looks into: an
/// ErrorResponse, a ParameterStatus, a RowDescription ...). Postgres sends
/// any size a client asks for (`RAISE EXCEPTION '%', repeat('x', 150000000)`),
/// and each was held whole, by one process for every tenant (probe V: three
/// clients took 440 MB). Past this the server is dropped and the client
/// told, as for a message that breaks the protocol.
pub(super) const MAX_SERVER_MESSAGE: usize = 1 << 20;

/// Most distinct parameters a server may report (Postgres reports about
/// fifteen): each is looked up by name in a list, and a server that reported
/// two hundred thousand stalled every client of its worker thread (probe V).
pub(super) const MAX_REPORTED_PARAMS: usize = 256;

/// Server messages the session only forwards, whatever their size.
fn streamable(t: u8) -> bool {
    matches!(
        t,
        tag::backend::DATA_ROW
            | tag::backend::COPY_DATA
            | tag::backend::NOTICE_RESPONSE
            | tag::backend::FUNCTION_CALL_RESPONSE
    )
}

/// The core's parts that the server's answers change.
pub(super) struct ScanCtx<'a> {
    pub(super) to_client: &'a mut OutQueue,
    pub(super) settings: &'a mut Settings,
    pub(super) stmts: &'a mut Statements,
    pub(super) txn: &'a mut Txn,
    pub(super) counters: &'a mut Counters,
    /// The session's tenant settings: a SET LOCAL tenant ends with the
    /// transaction, and a SET one changed in it stays only if it commits.
    pub(super) tenancy: &'a mut Tenancy,
    pub(super) pool_mode: PoolMode,
    pub(super) client_id: i32,
    /// The database routes by tenant (see [`Entry::copies`]).
    pub(super) routed: bool,
}

/// The reason of the CopyFail shardbouncer sends for a COPY whose row it
/// refused; the server quotes it in its 57014.
pub(super) const COPY_FAIL_REASON: &str = "a row was refused by shardbouncer";

/// Why a scan stopped early: the session must end.
pub(super) enum ScanStop {
    /// The server broke the protocol, or our picture of it.
    Protocol(String),
    /// A transaction block in statement pooling mode.
    StatementMode,
    /// The server started a `COPY .. FROM STDIN` the router did not read
    /// ([`Entry::copies`]).
    UnexpectedCopy,
}

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
    /// Answered messages sent since the last Sync or Flush.
    unflushed: u16,
    /// A simple Query or FunctionCall went behind the open batch: Postgres
    /// ends the batch's implicit transaction with it, so the batch holds the
    /// session on this shard no longer (probe: tenant-less work sent after
    /// such a Query ran on the shard of the batch before it, whose
    /// transaction had committed). The batch stays open until the client's
    /// Sync, as before: only where routing places the next work changes.
    ended_by_query: bool,
}

/// A server attached to the client, as the core sees it.
pub(super) struct Attachment {
    /// The shard the server belongs to.
    shard: usize,
    /// When it was attached.
    since: Instant,
    conn: Box<ServerState>,
    to_server: OutQueue,
    /// Responses the server owes, in order.
    expect: Expectations,
    /// An ErrorResponse was seen for the entry at the head of `expect`.
    head_failed: bool,
    /// The server sent a FATAL (or PANIC) error, passed on to the client:
    /// its connection ends, and the client has been told why (see
    /// [`super::core::Core::server_lost`]).
    server_fatal: bool,
    /// The portal last bound here to a statement that drops every prepared
    /// statement (`DISCARD ALL`, `DEALLOCATE ALL`): its Execute clears the
    /// client's own names too, as the simple Query does.
    dropping_portal: Option<Box<[u8]>>,
    /// The portal last bound to a `RESET ALL` or `DISCARD ALL`, whose run
    /// ends the client's SET tenant.
    resetting_portal: Option<Box<[u8]>>,
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
    /// Session mode: the client parsed statements under its own names here
    /// (reset as [`Effects::PREPARED`] before another client gets the
    /// server, but no reason to distrust those names: see
    /// [`Attachment::statements_untrusted`]).
    client_named: bool,
    /// The error of a held statement replayed here (see `Entry::replayed`),
    /// until the client's next statement reports it.
    replay_error: Option<Bytes>,
    /// shardbouncer ended the COPY running here for a row it refused (a
    /// CopyFail): the error the client gets in place of the server's for
    /// it, the one that quotes that CopyFail ([`COPY_FAIL_REASON`]; probe
    /// CP: the next ReadyForQuery, a pipelined request's, dropped it, and
    /// an error of a statement ahead of a COPY that never started was
    /// replaced by it).
    copy_refusal: Option<Bytes>,
    /// Work that may end the transaction went (see [`Self::end_in_flight`]).
    end_sent: bool,
    /// Work of the client's went here (see [`Self::carried_client_work`]).
    carried: bool,
    /// A COPY FROM STDIN began since the last ReadyForQuery: its answers may
    /// wait for the client's next Sync (see [`Self::end_in_flight`]).
    copied: bool,
    /// That COPY runs through an Execute (sent, or known to run): its
    /// implicit transaction goes on until the client's next Sync, and
    /// what the client sends before that Sync runs in it
    /// ([`Self::in_copy_batch`]).
    copied_ext: bool,
    /// Portals bound to a `ROLLBACK TO SAVEPOINT` in the transaction: an
    /// Execute of one is flagged ([`Entry::rolls_back_to`]), so its
    /// `ROLLBACK` is not taken for the transaction's end (probe PP: a portal
    /// bound in an earlier batch and run later undid the session's SET
    /// tenant as a ROLLBACK would). Portals end with their transaction.
    rollback_to_portals: Vec<Box<[u8]>>,
    /// The key of what this transaction on this server learned by parsing
    /// a client's statement afresh ([`Self::fresh_key`]); 0 until asked.
    fresh_epoch: std::cell::Cell<u64>,
}

/// Keys of [`Attachment::fresh_key`], process-wide.
static FRESH_EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What an attachment let go of leaves for the next one on its worker: a
/// transaction built a new attachment, and its queues grew from nothing,
/// four allocations of the six a `pgbench -S` transaction made (callgrind).
struct Spare {
    room: Box<std::mem::MaybeUninit<Attachment>>,
    to_server: OutQueue,
    expect: Expectations,
}

thread_local! {
    static SPARE_ATTACHMENTS: std::cell::RefCell<Vec<Spare>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many spares a worker keeps (a few KiB; freed at each trim): about as
/// many as servers attached at once on it.
const SPARE_ATTACHMENTS_KEPT: usize = 64;

/// A spare queue that grew past this many entries is freed, not kept.
const SPARE_ROOM: usize = 64;

/// Free this worker's spare attachments (the maintenance trim).
pub(super) fn drop_spares() {
    SPARE_ATTACHMENTS.with_borrow_mut(|spares| *spares = Vec::new());
}

impl Attachment {
    /// The shard the server belongs to.
    pub(super) fn shard(&self) -> usize {
        self.shard
    }

    /// When the server was attached.
    pub(super) fn since(&self) -> Instant {
        self.since
    }

    /// A new attachment of `conn`, boxed: in the allocation and with the
    /// queues' room of one this worker let go of, when there is one.
    pub(super) fn boxed(shard: usize, conn: Box<ServerState>) -> Box<Attachment> {
        match SPARE_ATTACHMENTS.with_borrow_mut(Vec::pop) {
            Some(Spare {
                room,
                to_server,
                expect,
            }) => super::put_in(room, Attachment::new(shard, conn, to_server, expect)),
            None => Box::new(Attachment::new(
                shard,
                conn,
                OutQueue::default(),
                Expectations::default(),
            )),
        }
    }

    fn new(
        shard: usize,
        conn: Box<ServerState>,
        to_server: OutQueue,
        expect: Expectations,
    ) -> Attachment {
        debug_assert!(to_server.is_empty() && expect.is_empty());
        Attachment {
            shard,
            since: crate::net::clock::now(),
            conn,
            to_server,
            expect,
            head_failed: false,
            server_fatal: false,
            dropping_portal: None,
            resetting_portal: None,
            status: TxStatus::Idle,
            ext: Ext::default(),
            copy_in: false,
            s_stream_left: 0,
            unnamed_current: false,
            effects: Effects::none(),
            carried: false,
            client_named: false,
            replay_error: None,
            copy_refusal: None,
            end_sent: false,
            copied: false,
            copied_ext: false,
            rollback_to_portals: Vec::new(),
            fresh_epoch: std::cell::Cell::new(0),
        }
    }

    /// A BEGIN was sent (a held one, replayed): the server is in a
    /// transaction from now on, before its answer says so.
    pub(super) fn assume_in_transaction(&mut self) {
        if self.status == TxStatus::Idle {
            self.status = TxStatus::InTransaction;
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

    /// Work the client sent went (`ends`: it may end the transaction).
    pub(super) fn sent_work(&mut self, ends: bool) {
        self.end_sent = ends || (self.end_sent && self.client_work_in_flight());
        self.carried = true;
    }

    /// Work of the client's went to this server since it was attached: a
    /// tenant held now may have been held for that work, not for the unit
    /// that asked for the server (whose holds, taken before it waited for
    /// one, let it run through a pause).
    pub(super) fn carried_client_work(&self) -> bool {
        self.carried
    }

    /// Work that may end the transaction was sent and is not answered yet,
    /// and its answers will come without more from the client. After a COPY
    /// FROM STDIN through an Execute, Postgres holds the Execute's answer
    /// until the client's next Sync: work behind the end that waited for it
    /// would wait for good (probe PP: libpq's `PQexecParams` of a COMMIT,
    /// then of a COPY, hung).
    pub(super) fn end_in_flight(&self) -> bool {
        self.end_sent && !self.copied && self.client_work_in_flight()
    }

    /// ReadyForQuery messages still owed.
    pub(super) fn ready_owed(&self) -> usize {
        self.expect.ready_owed()
    }

    pub(super) fn copy_in(&self) -> bool {
        self.copy_in
    }

    /// A COPY the router read runs, or the client's next copy message is
    /// for one it read that the last request sent starts
    /// ([`crate::client::expect::Expectations::copy_message_passes`]).
    pub(super) fn copies_expected(&self) -> bool {
        self.copy_in || self.expect.copy_message_passes()
    }

    /// shardbouncer sends a CopyFail for a row it refused: `error` answers
    /// the client in place of the server's error for the COPY.
    pub(super) fn copy_refused(&mut self, error: Bytes) {
        self.copy_refusal = Some(error);
    }

    pub(super) fn end_copy_in(&mut self) {
        self.copy_in = false;
    }

    /// A CopyDone or CopyFail went to the server before any COPY was known to
    /// run (see [`crate::client::expect::Expectations::copy_end_ahead`]).
    pub(super) fn copy_end_ahead(&mut self) {
        if self.expect.copy_end_ahead() {
            self.copied = true;
            self.copied_ext = true;
        }
    }

    /// Work in flight ran (or will run) a COPY FROM STDIN through an
    /// Execute whose batch's Sync has not been answered: what comes before
    /// the client's next Sync runs in that batch's implicit transaction, on
    /// this server, and the COPY's answer waits for that Sync, so nothing
    /// may wait for it (probe TT: a BEGIN sent right behind the CopyDone
    /// waited for the COPY's answer, which waited for the Sync behind the
    /// BEGIN; once the COPY was answered, a BEGIN there was answered as if
    /// outside it).
    pub(super) fn in_copy_batch(&self) -> bool {
        self.copied_ext && (self.ext.open || self.client_work_in_flight())
    }

    pub(super) fn to_server(&self) -> &OutQueue {
        &self.to_server
    }

    /// The server owes answers to more than [`MAX_OWED`] messages and is not
    /// waiting for COPY data: the client's next messages can wait for those
    /// answers, because they are sure to come. All but fewer than
    /// [`FLUSH_EVERY`] of the messages owed have a Sync, Query, FunctionCall
    /// or Flush behind them. Postgres answers those, or, after an error, skips
    /// to the Sync, and the error drops the entries it skips. Each message
    /// owed costs an entry here (probe: a client that pipelined 1.5 million
    /// Syncs behind a large result and read nothing held 80 MB of them).
    pub(super) fn owes_enough(&self) -> bool {
        self.expect.len() >= MAX_OWED && !self.copy_in
    }

    /// The server owes answers to more than [`MAX_OWED_UNSYNCED`] messages
    /// with no Sync among them. [`Attachment::owes_enough`] makes the client
    /// wait long before that, so only a server that stopped answering gets
    /// here: the client's next message (but a Sync) is refused, as a batch of
    /// that many messages without a Sync is.
    pub(super) fn owes_too_much(&self) -> bool {
        self.expect.len() >= MAX_OWED_UNSYNCED && self.expect.ready_owed() == 0
    }

    pub(super) fn io(&mut self) -> (&OutQueue, &mut BytesMut) {
        (&self.to_server, &mut self.conn.rbuf)
    }

    /// Bytes queued for the server, not yet written.
    pub(super) fn has_output(&self) -> bool {
        !self.to_server.is_empty()
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
        if self.client_named {
            self.effects.union(Effects::PREPARED)
        } else {
            self.effects
        }
    }

    /// Session mode: the client parsed a statement under its own name.
    pub(super) fn client_named(&mut self) {
        self.client_named = true;
    }

    pub(super) fn add_effects(&mut self, e: Effects) {
        self.effects.add(e);
    }

    /// Portal `portal` was bound to a `ROLLBACK TO SAVEPOINT` (`rolls_back`),
    /// or to another statement.
    pub(super) fn bound_rollback_to(&mut self, portal: &[u8], rolls_back: bool) {
        let known = self.rollback_to_portals.iter().position(|p| **p == *portal);
        match (rolls_back, known) {
            (true, None) => self.rollback_to_portals.push(portal.into()),
            (false, Some(i)) => {
                self.rollback_to_portals.swap_remove(i);
            }
            _ => {}
        }
    }

    /// Whether `msgs` (a batch) runs a portal an earlier batch bound to a
    /// `ROLLBACK TO` (one bound in `msgs` is judged with its Bind).
    pub(super) fn runs_rollback_to_portal(&self, msgs: &[(u8, Bytes)]) -> bool {
        if self.rollback_to_portals.is_empty() {
            return false;
        }
        let mut bound_here: Vec<&[u8]> = Vec::new();
        for (t, frame) in msgs {
            match *t {
                tag::frontend::BIND => {
                    if let Some(b) = frame.get(5..).and_then(crate::protocol::Bind::parse) {
                        bound_here.push(b.portal);
                    }
                }
                tag::frontend::EXECUTE => {
                    let p = execute_portal(&frame[5..]);
                    if !bound_here.contains(&p) && self.is_rollback_to_portal(p) {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }

    fn is_rollback_to_portal(&self, portal: &[u8]) -> bool {
        self.rollback_to_portals.iter().any(|p| **p == *portal)
    }

    /// Whether a portal bound to a `ROLLBACK TO` may be run here (a Bind of
    /// one need not be parsed otherwise).
    pub(super) fn has_rollback_to_portals(&self) -> bool {
        !self.rollback_to_portals.is_empty()
    }

    /// Portal `portal` was bound to a statement that drops every prepared
    /// statement (`drops`), or to another one.
    pub(super) fn bound_portal(&mut self, portal: &[u8], drops: bool) {
        if drops {
            self.dropping_portal = Some(portal.into());
        } else if self.dropping_portal.as_deref() == Some(portal) {
            self.dropping_portal = None;
        }
    }

    /// Note that `portal` is bound to a statement that resets all settings
    /// (`resets`) or to another.
    pub(super) fn bound_resetting(&mut self, portal: &[u8], resets: bool) {
        if resets {
            self.resetting_portal = Some(portal.into());
        } else if self.resetting_portal.as_deref() == Some(portal) {
            self.resetting_portal = None;
        }
    }

    /// Whether running `portal` resets all settings.
    pub(super) fn portal_resets(&self, portal: &[u8]) -> bool {
        self.resetting_portal.as_deref() == Some(portal)
    }

    /// Some portal was bound to such a statement.
    pub(super) fn has_resetting_portal(&self) -> bool {
        self.resetting_portal.is_some()
    }

    /// Whether running `portal` drops every prepared statement.
    pub(super) fn portal_drops_statements(&self, portal: &[u8]) -> bool {
        self.dropping_portal.as_deref() == Some(portal)
    }

    /// Some portal was bound to such a statement.
    pub(super) fn has_dropping_portal(&self) -> bool {
        self.dropping_portal.is_some()
    }

    /// Whether the server's prepared statements can no longer be trusted to be
    /// the ones shardbouncer prepared: SQL may have touched them. Or whether
    /// a copy prepared or run now could be parsed against objects only this
    /// client sees: its temporary objects (a temp table or type shadowing a
    /// shared one), or DDL its transaction may roll back (probe T: a copy
    /// parsed against a temp `char(8)` column told the next client its
    /// parameter was `bpchar`, and matched rows Postgres would not; one
    /// parsed against a temp enum compared by the temp type's order). Named
    /// statements then run through the unnamed statement, parsed afresh for
    /// this client, until the server is released.
    pub(super) fn statements_untrusted(&self) -> bool {
        self.effects.any(
            Effects::PREPARED
                .union(Effects::DYNAMIC)
                .union(Effects::TEMP)
                .union(Effects::CATALOG),
        )
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
            && (self.ext.skipping
                || self.head_failed
                || (!self.ext.ended_by_query && (self.ext.pinned || self.ext.executed)))
    }

    /// The open batch (if any) did tenant work.
    pub(super) fn pin_batch(&mut self) {
        self.ext.pinned = self.ext.open;
    }

    pub(super) fn ext_executed(&mut self) {
        self.ext.executed = true;
    }

    /// The open batch executed something already.
    pub(super) fn ext_has_executed(&self) -> bool {
        self.ext.open && self.ext.executed
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
    pub(super) fn send_ext(&mut self, mut e: Entry, frame: Bytes) {
        if e.tag == tag::frontend::EXECUTE && !self.rollback_to_portals.is_empty() {
            e.rolls_back_to = self.is_rollback_to_portal(execute_portal(&frame[5..]));
        }
        self.expect.push(e);
        self.to_server.push(frame);
        if self.ext.ended_by_query && !self.ext.skipping {
            // The batch before the Query is over: this one is new.
            self.ext = Ext::default();
        }
        self.ext.open = true;
        self.count_unflushed();
    }

    /// One more entry owed with no Sync or Flush behind it; a Flush once
    /// there are [`FLUSH_EVERY`] (see [`Attachment::owes_enough`]).
    fn count_unflushed(&mut self) {
        self.ext.unflushed += 1;
        if self.ext.unflushed >= FLUSH_EVERY {
            // Unasked, but harmless: a Flush only sends what is buffered.
            let mut b = BytesMut::new();
            protocol::flush(&mut b);
            self.send_flush(b.freeze());
        }
    }

    /// Send a Flush (the client's or ours): the server sends every answer it
    /// has buffered, and owes none for the Flush itself.
    pub(super) fn send_flush(&mut self, frame: Bytes) {
        self.to_server.push(frame);
        self.ext.unflushed = 0;
    }

    /// Send a Sync (the client's or ours) and its expectation.
    pub(super) fn send_sync(&mut self, e: Entry, frame: Bytes) {
        self.expect.push(e);
        self.to_server.push(frame);
        self.ext = Ext::default();
    }

    /// Send a simple Query / FunctionCall with its expectation.
    pub(super) fn send_simple(&mut self, e: Entry, frame: Bytes) {
        if self.ext.skipping {
            // The server skips everything up to the Sync after an error, a
            // Query too: it owes no answer (probe J: one owed forever held
            // the server, and the pool, after the client left).
            self.to_server.push(frame);
            return;
        }
        self.expect.push(e);
        self.to_server.push(frame);
        // (Skipped, with the rest up to the Sync, after an error.)
        self.ext.ended_by_query |= self.ext.open && !self.ext.skipping;
        // Its ReadyForQuery sends everything buffered before it.
        self.ext.unflushed = 0;
    }

    /// Bytes the server does not answer (COPY data, Sync during COPY IN).
    pub(super) fn send_raw(&mut self, b: Bytes) {
        self.to_server.push(b);
    }

    /// The reply to a Parse or Close of the client's statement `def` answered
    /// here: if the server skips to Sync before its turn, the Parse made no
    /// statement, and the Close (of `name`) closed none.
    pub(super) fn synthetic_stmt(
        &mut self,
        client_tag: u8,
        b: Bytes,
        def: Arc<StmtDef>,
        name: Option<Bytes>,
    ) {
        let mut e = Entry::synthetic(client_tag, b).with_stmt(def);
        e.client_name = name;
        self.expect.push(e);
        self.count_unflushed();
    }

    /// A reply we produce ourselves, emitted when its turn comes.
    pub(super) fn synthetic(&mut self, client_tag: u8, b: Bytes, patch_status: bool) {
        let mut e = Entry::synthetic(client_tag, b);
        e.patch_status = patch_status;
        self.expect.push(e);
        // Emitted only once the answers ahead of it came: those need a Flush
        // as much as the entry's own message would have.
        self.count_unflushed();
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

    /// Whether this server can run `def` under its name (and mark it used).
    pub(super) fn has_prepared(&mut self, def: &StmtDef) -> Held {
        self.conn.prepared.touch(def)
    }

    /// The server's id (its statistics and logs name it so).
    /// What a statement's text was described as when parsed afresh here
    /// ([`prepared::StmtDef::fresh_results`]) holds for this transaction on
    /// this server only: a schema may change between transactions, and
    /// the types a later one gets must be described again (probe WW: after
    /// `ALTER COLUMN .. TYPE float4`, asyncpg read rows as the int4 it was
    /// told, and an UPDATE stored its int4 8 as 1.1e-44, where Postgres
    /// answers 0A000). A key no other transaction has, made when first
    /// asked (no cost for transactions that never parse afresh).
    pub(super) fn fresh_key(&self) -> u64 {
        if self.fresh_epoch.get() == 0 {
            self.fresh_epoch
                .set(FRESH_EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        self.fresh_epoch.get()
    }

    /// See [`prepared::ServerStatements::touch_and_compare`].
    pub(super) fn touch_and_compare(
        &mut self,
        def: &StmtDef,
        told: &[u32],
        told_params: Option<&[u32]>,
    ) -> (Held, Option<bool>) {
        self.conn.prepared.touch_and_compare(def, told, told_params)
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
    pub(super) fn releasable(&self) -> bool {
        self.pool_safe() && !self.copy_in
    }

    /// Safe to pool, whatever the session thinks of it: its last ReadyForQuery
    /// said idle, and nothing is owed, unread or unsent. (Unlike
    /// [`Self::releasable`], a COPY the session still thinks open does not
    /// count: a server in a real COPY still owes the COPY's answers.)
    pub(super) fn pool_safe(&self) -> bool {
        self.expect.is_empty()
            && !self.ext.open
            && self.to_server.is_empty()
            && self.s_stream_left == 0
            && self.conn.rbuf.is_empty()
            && self.status == TxStatus::Idle
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

    /// The server's state; the attachment's allocation and its queues' room
    /// are kept for this worker's next [`Attachment::boxed`].
    /// Whether a message is being streamed to the client and is not whole
    /// yet: the client has part of it.
    pub(super) fn mid_message(&self) -> bool {
        self.s_stream_left > 0
    }

    /// Whether the server's FATAL error reached the client (see
    /// [`Attachment::server_fatal`]'s field).
    pub(super) fn server_fatal(&self) -> bool {
        self.server_fatal
    }

    pub(super) fn into_state(self: Box<Self>) -> Box<ServerState> {
        let (
            Attachment {
                conn,
                mut to_server,
                mut expect,
                ..
            },
            room,
        ) = super::take_out(self);
        to_server.clear_keeping_room(SPARE_ROOM);
        expect.clear_keeping_room(SPARE_ROOM);
        SPARE_ATTACHMENTS.with_borrow_mut(|spares| {
            if spares.len() < SPARE_ATTACHMENTS_KEPT {
                spares.push(Spare {
                    room,
                    to_server,
                    expect,
                });
            }
        });
        conn
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

    /// Scan what the server sent: match responses to expectations, drop the answers
    /// to injected statements, forward the rest to the client as zero-copy runs.
    pub(super) fn scan(&mut self, ctx: &mut ScanCtx<'_>) -> Result<(), ScanStop> {
        let a = self;
        // `pos` = end of the run of complete frames to forward as one chunk.
        let mut pos = 0;
        // Where the answers to the oldest request still in `pos` begin (just
        // after the last ReadyForQuery in it).
        let mut request_start = 0;
        loop {
            if a.s_stream_left > 0 {
                let n = a.s_stream_left.min(a.conn.rbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = a.conn.rbuf.split_to(n).freeze();
                a.s_stream_left -= n;
                ctx.to_client.push(chunk);
                continue;
            }
            // Synthetic replies whose turn has come go out before this frame.
            if a.expect.front().is_some_and(|e| e.synthetic.is_some()) {
                if pos > 0 {
                    ctx.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                    (pos, request_start) = (0, 0);
                }
                let txn = &*ctx.txn;
                a.drain_synthetic(ctx.to_client, |s| txn.client_status(Some(s)));
            }
            let rest = &a.conn.rbuf[pos..];
            let (t, len) = match protocol::frame_header(rest, usize::MAX >> 1) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    a.conn.broken = true;
                    return Err(ScanStop::Protocol(e.to_string()));
                }
            };
            let mode = match t {
                // Asynchronous messages belong to no entry.
                tag::backend::NOTICE_RESPONSE | tag::backend::NOTIFICATION_RESPONSE => {
                    Mode::Forward
                }
                _ => a.expect.front().map(|e| e.mode).unwrap_or(Mode::Forward),
            };
            if len > MAX_SERVER_MESSAGE && !(streamable(t) && mode == Mode::Forward) {
                a.conn.broken = true;
                return Err(ScanStop::Protocol(format!(
                    "a message of type '{}' and {len} bytes (at most {MAX_SERVER_MESSAGE} are taken)",
                    t as char
                )));
            }
            if rest.len() < len {
                if streamable(t) && len > STREAM_THRESHOLD && mode == Mode::Forward {
                    // Forward what we have of a big row/copy chunk; stream the rest.
                    let total = a.conn.rbuf.len();
                    ctx.to_client.push(a.conn.rbuf.split_to(total).freeze());
                    a.s_stream_left = len - (total - pos);
                    (pos, request_start) = (0, 0);
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
            if t == tag::backend::ERROR_RESPONSE
                && mode == Mode::Forward
                && a.expect.is_empty()
                && a.status == TxStatus::Idle
                && !a.ext.open
                && !a.copy_in
                && ctx.pool_mode != PoolMode::Session
                && protocol::parse_error(body).ends_connection()
            {
                // The server ended between transactions (a backend
                // terminated as it went idle): no work of the client's ran
                // there, so nothing is told; the server is closed at its
                // release and the session goes on with another, as when an
                // idle server in the pool ends. Passed on, behind the
                // ReadyForQuery the client already had, libpq took the FATAL
                // for a notice and the client's next statement failed with no
                // SQLSTATE (probe JJ).
                a.conn.broken = true;
                if pos > 0 {
                    ctx.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                    (pos, request_start) = (0, 0);
                }
                let _ = a.conn.rbuf.split_to(len);
                continue;
            }
            if t == tag::backend::COMMAND_COMPLETE
                && mode == Mode::Forward
                && ctx.pool_mode == PoolMode::Statement
                && (body.starts_with(b"BEGIN\0") || body.starts_with(b"START TRANSACTION\0"))
            {
                // Statement mode: a block opened by a statement the scan of the
                // request did not see. Refuse before its CommandComplete goes out,
                // even if the ReadyForQuery ('T') is still in flight: the client
                // must never see a BEGIN succeed. (ReadyForQuery below catches
                // blocks opened any other way.)
                if request_start > 0 {
                    ctx.to_client
                        .push(a.conn.rbuf.split_to(request_start).freeze());
                }
                a.conn.broken = true;
                return Err(ScanStop::StatementMode);
            }
            if t == tag::backend::COMMAND_COMPLETE && mode == Mode::Forward {
                // How the client's transaction ended (tags as Postgres sends
                // them: a COMMIT of a failed transaction answers ROLLBACK).
                if body.starts_with(b"COMMIT\0") || body.starts_with(b"PREPARE TRANSACTION\0") {
                    ctx.tenancy.transaction_outcome(true);
                    // What placed it ends with it, before the ReadyForQuery
                    // a Flush leaves for later (re-probe P: `COMMIT`, Flush,
                    // `BEGIN`: the new transaction was the old tenant's).
                    if ctx.pool_mode != PoolMode::Session {
                        ctx.tenancy.take_pinned();
                    }
                } else if body.starts_with(b"ROLLBACK\0") {
                    // A ROLLBACK TO SAVEPOINT is tagged alike, and ends
                    // nothing. One run by an Execute is known by its portal;
                    // one in a Query is refused once the transaction changed
                    // the SET tenant, and its ReadyForQuery follows at once.
                    let head = a.expect.front();
                    let execute = head.is_some_and(|e| e.tag == tag::frontend::EXECUTE);
                    let rolls_back_to = head.is_some_and(|e| e.rolls_back_to);
                    if !rolls_back_to {
                        ctx.tenancy.transaction_outcome(false);
                    }
                    // What placed the transaction ends with a ROLLBACK (or
                    // ABORT, or the COMMIT of a failed transaction) an
                    // Execute ran, before the ReadyForQuery a Flush leaves for
                    // later (probe NN: ROLLBACK, Flush, then work naming no
                    // tenant ran on the ended transaction's shard).
                    if ctx.pool_mode != PoolMode::Session && execute && !rolls_back_to {
                        ctx.tenancy.take_pinned();
                    }
                    if let Some(e) = a.replay_error.take() {
                        // The COMMIT of a transaction a held statement
                        // failed: as on Postgres it answers ROLLBACK; the
                        // statement's error, never told, comes as a warning.
                        let info = protocol::parse_error(&e[5..]);
                        let mut w = warning(
                            &info.code,
                            &format!("the transaction was rolled back: {}", info.message),
                        );
                        w.extend_from_slice(&rest[..len]);
                        replace = Some(w.freeze());
                        forward = false;
                    }
                }
            }
            match t {
                tag::backend::PARAMETER_STATUS => {
                    if let Some((k, v)) = protocol::parse_parameter_status(body) {
                        if a.conn.current.len() >= MAX_REPORTED_PARAMS
                            && a.conn.current.get(k).is_none()
                        {
                            a.conn.broken = true;
                            return Err(ScanStop::Protocol(format!(
                                "more than {MAX_REPORTED_PARAMS} parameters reported"
                            )));
                        }
                        a.conn.current.set(k, v);
                        // The client's own view follows what its server reports.
                        ctx.settings.reported_by_server(k, v);
                    }
                    if !forward {
                        // The answer of a statement replayed for the client (a
                        // SET it sent inside a held BEGIN, answered then): the
                        // new value still reaches it, as it does on Postgres,
                        // or its driver goes on with the old one (probe: dates
                        // read with the old DateStyle, strings escaped for the
                        // old standard_conforming_strings).
                        replace = Some(Bytes::copy_from_slice(&rest[..len]));
                    }
                }
                tag::backend::PARAMETER_DESCRIPTION => {
                    if let Some(e) = a.expect.front() {
                        if let Some(seq) = e.describes_unnamed {
                            ctx.stmts
                                .describe_unnamed(seq, protocol::parse_parameter_description(body));
                        } else if let Some(def) = &e.stmt {
                            let params: prepared::Results =
                                protocol::parse_parameter_description(body).collect();
                            if e.verifies_unnamed {
                                *def.fresh_params.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some((a.fresh_key(), params));
                            } else {
                                if e.mode == Mode::Forward {
                                    *def.told_params.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some(params.clone());
                                }
                                a.conn.prepared.set_params(def, params.clone());
                                let _ = def.described.set(params.to_vec());
                            }
                        }
                    }
                }
                tag::backend::COPY_IN_RESPONSE if ctx.routed && !a.expect.start_copy() => {
                    // Its rows would go unchecked (a statement the router
                    // took for another: probe CN F2, an SQL EXECUTE of a
                    // COPY prepared through the protocol). The client's
                    // copy messages were not passed on; the server is
                    // closed, which ends the COPY having written nothing.
                    a.conn.broken = true;
                    return Err(ScanStop::UnexpectedCopy);
                }
                tag::backend::COPY_IN_RESPONSE if a.expect.take_copy_end() => {
                    // The client pipelined this COPY's data and its end right
                    // behind the Query or Execute: they are on their way, and
                    // the server reads them next. The session is not in COPY,
                    // and a Sync the client sent after them is answered.
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
                        a.copied_ext = true;
                    }
                    a.copy_in = true;
                    a.copied = true;
                }
                tag::backend::NOTICE_RESPONSE | tag::backend::NOTIFICATION_RESPONSE => {}
                _ => {
                    if t == tag::backend::ROW_DESCRIPTION || t == tag::backend::NO_DATA {
                        note_results(a, t, body);
                    }
                    if t == tag::backend::ERROR_RESPONSE {
                        a.head_failed = true;
                        if mode != Mode::Swallow && protocol::parse_error(body).ends_connection() {
                            a.server_fatal = true;
                        }
                        if let Some(def) = a.expect.front().and_then(|e| e.stmt.clone()) {
                            let info = protocol::parse_error(body);
                            if prepared::stale_error(&info.code, &info.message) {
                                // Its next user prepares it afresh, as it would
                                // on its own connection after this error.
                                a.conn.prepared.mark_stale(&def);
                                prepared::invalidate_all();
                            }
                        }
                        if mode != Mode::Swallow {
                            if let Some(r) =
                                a.expect.front().and_then(|e| client_error(e, &rest[..len]))
                            {
                                replace = Some(r);
                                forward = false;
                            }
                        }
                        if mode == Mode::Forward && a.copy_refusal.is_some() {
                            let info = protocol::parse_error(body);
                            if info.code == crate::sqlstate::QUERY_CANCELED
                                && info.message.contains(COPY_FAIL_REASON)
                            {
                                // The COPY ended by the CopyFail for a row
                                // shardbouncer refused: the client is told why.
                                replace = a.copy_refusal.take();
                                forward = false;
                            }
                        }
                        if ctx.txn.is_local() && mode != Mode::Swallow {
                            // Tenant-free work failed outside the held BEGIN: the
                            // client's transaction is failed, as it would be.
                            ctx.txn.apply(TxnEvent::Fail);
                        }
                        let replayed = a.expect.front().is_some_and(|e| e.replayed);
                        if mode == Mode::Forward && a.replay_error.is_some() {
                            // The 25P02 of the client's next statement after
                            // a held one failed here: the client gets that
                            // statement's error instead, the cause it was not
                            // told (probe: a bare 25P02, its transaction
                            // failed by a SET it had seen succeed).
                            if protocol::parse_error(body).code
                                == crate::sqlstate::IN_FAILED_SQL_TRANSACTION
                            {
                                replace = a.replay_error.take();
                                forward = false;
                            }
                        }
                        if mode == Mode::Swallow && replayed {
                            // The client's own statement, answered earlier:
                            // its error is reported with the next statement.
                            // The server is as Postgres leaves it.
                            // The first one is the cause: those after it get
                            // 25P02 (re-probe: a second held SET hid it).
                            if a.replay_error.is_none() {
                                a.replay_error = Some(Bytes::copy_from_slice(&rest[..len]));
                            }
                        } else if mode == Mode::Swallow {
                            // A failed internal statement: tell the client as a warning.
                            let info = protocol::parse_error(body);
                            tracing::warn!(
                                client = ctx.client_id,
                                "internal statement failed on server: {}",
                                info.message
                            );
                            // The server's settings are no longer what we assume:
                            // it does not go back to the pool.
                            a.conn.broken = true;
                            // A warning with the code only: the server's words
                            // may name what another client left on it.
                            let w = warning(
                                &info.code,
                                "an internal statement of shardbouncer failed on this server; \
                                 it is closed after this transaction",
                            );
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
                        a.conn.broken = true;
                        return Err(ScanStop::Protocol("unexpected ReadyForQuery".into()));
                    }
                    if a.expect.front().is_some_and(|e| e.completed_by(t)) {
                        let e = a.expect.pop().expect("front exists");
                        let failed = std::mem::take(&mut a.head_failed);
                        if e.tag == tag::frontend::PARSE && failed {
                            if let Some(seq) = e.sets_unnamed {
                                ctx.stmts.unnamed_failed(seq);
                            }
                            if let Some(def) = &e.stmt {
                                if !e.parses_unnamed {
                                    a.conn.prepared.remove(def);
                                }
                                if e.mode == Mode::Forward {
                                    // A failed Parse creates no statement, as in Postgres.
                                    ctx.stmts.forget(def);
                                }
                            }
                        }
                        if t == tag::backend::ERROR_RESPONSE && e.is_extended() {
                            // Postgres now skips to Sync; so do we, undoing
                            // prepares (and closes) that will not happen.
                            let mut reopened = Vec::new();
                            for d in a.expect.skip_to_sync() {
                                // (A Close of a client's statement, answered
                                // here or by its session-mode server.)
                                if let (tag::frontend::CLOSE, Some(def), Some(name)) =
                                    (d.tag, &d.stmt, &d.client_name)
                                {
                                    reopened.push((name.clone(), def.clone()));
                                }
                                if let Some(seq) = d.sets_unnamed {
                                    ctx.stmts.unnamed_failed(seq);
                                }
                                if let (tag::frontend::PARSE, Some(def)) = (d.tag, &d.stmt) {
                                    // One answered here did not prepare the
                                    // server's copy, which stays (probe J: the
                                    // client kept a statement Postgres never
                                    // made).
                                    if d.synthetic.is_none() && !d.parses_unnamed {
                                        a.conn.prepared.remove(def);
                                    }
                                    if d.mode == Mode::Forward {
                                        ctx.stmts.forget(def);
                                    }
                                }
                            }
                            // After the forgets: a name closed, then parsed
                            // again, in the skipped part is the old statement.
                            for (name, def) in reopened {
                                ctx.stmts.restore(&name, def);
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
                            ctx.stmts.clear();
                        }
                        if let (tag::frontend::QUERY, false, Some(def), Some(name)) =
                            (e.tag, failed, &e.stmt, &e.client_name)
                        {
                            // A session-mode `DEALLOCATE name` the server did.
                            if ctx.stmts.get(name).is_some_and(|d| Arc::ptr_eq(d, def)) {
                                ctx.stmts.remove(name);
                            }
                        }
                        if t == tag::backend::READY_FOR_QUERY {
                            let status = TxStatus::from_byte(body.first().copied().unwrap_or(b'I'));
                            a.status = status;
                            a.copied = false;
                            a.copied_ext = false;
                            if status == TxStatus::Idle {
                                // Its transaction is over: reported or not.
                                a.replay_error = None;
                                a.fresh_epoch.set(0);
                                // And its portals with it.
                                a.rollback_to_portals.clear();
                            }
                            if e.mode == Mode::Forward {
                                ctx.counters.query_done(a.expect.ready_owed());
                                if ctx.pool_mode == PoolMode::Statement && status != TxStatus::Idle
                                {
                                    // Refuse before the client sees ReadyForQuery: the
                                    // server is inside a transaction block. Answers
                                    // to earlier requests go out; this request's own
                                    // (its BEGIN's CommandComplete) do not.
                                    if request_start > 0 {
                                        ctx.to_client
                                            .push(a.conn.rbuf.split_to(request_start).freeze());
                                    }
                                    a.conn.broken = true;
                                    return Err(ScanStop::StatementMode);
                                }
                                if ctx.txn.is_local() {
                                    // Work done outside a held BEGIN: the client is
                                    // still in its (virtual) transaction.
                                    let mut z = BytesMut::from(&rest[..len]);
                                    z[5] = ctx.txn.client_status(None).as_byte();
                                    replace = Some(z.freeze());
                                    forward = false;
                                } else if status == TxStatus::Idle {
                                    ctx.tenancy.end_transaction();
                                }
                            }
                        }
                    }
                }
            }
            if forward {
                pos += len;
                if t == tag::backend::READY_FOR_QUERY {
                    request_start = pos;
                }
            } else {
                if pos > 0 {
                    ctx.to_client.push(a.conn.rbuf.split_to(pos).freeze());
                    (pos, request_start) = (0, 0);
                }
                let _ = a.conn.rbuf.split_to(len);
                if let Some(r) = replace {
                    ctx.to_client.push(r);
                }
            }
        }
        if pos > 0 {
            ctx.to_client.push(a.conn.rbuf.split_to(pos).freeze());
        }
        Ok(())
    }
}

/// The client's view of an ErrorResponse `frame` answering `e`, when it differs
/// from the server's: what Postgres would have said on the client's own connection.
fn client_error(e: &Entry, frame: &[u8]) -> Option<Bytes> {
    if let Some(instead) = e.instead.as_ref() {
        return Some(Bytes::clone(instead));
    }
    // Where (W) and the source location (F, L, R) of a RAISE we injected name our
    // DO block; Postgres raising the same error itself would send neither.
    const RAISED: &[u8] = b"WFLR";
    let internal = e.stmt.as_ref().map(|d| d.server_name.as_bytes());
    let rename = match (internal, &e.client_name) {
        (Some(i), Some(_)) => memchr::memmem::find(frame, i).is_some(),
        _ => false,
    };
    if !e.raised && !rename {
        return None;
    }
    // The routine Postgres names with `cached plan must not change result
    // type`: asyncpg and PgJDBC prepare their statement again only when they
    // see it (re-probe: asyncpg failed every call after ours).
    let revalidate: &[(u8, &[u8])] = match e.raised
        && memchr::memmem::find(frame, b"cached plan must not change result type").is_some()
    {
        true => &[(b'R', b"RevalidateCachedQuery")],
        false => &[],
    };
    let mut out = BytesMut::new();
    protocol::rewrite_error_adding(
        &mut out,
        frame[0],
        &frame[5..],
        if e.raised { RAISED } else { b"" },
        revalidate,
        |v| {
            let (i, c) = (internal?, e.client_name.as_ref()?);
            memchr::memmem::find(v, i)?;
            Some(replace_all(v, i, c))
        },
    );
    Some(out.freeze())
}

/// `v` with every `from` replaced by `to`.
fn replace_all(v: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut last = 0;
    for at in memchr::memmem::find_iter(v, from) {
        out.extend_from_slice(&v[last..at]);
        out.extend_from_slice(to);
        last = at + from.len();
    }
    out.extend_from_slice(&v[last..]);
    out
}

/// A NoticeResponse of severity WARNING.
fn warning(code: &str, message: &str) -> BytesMut {
    let mut w = BytesMut::new();
    protocol::error_fields(
        &mut w,
        tag::backend::NOTICE_RESPONSE,
        "WARNING",
        code,
        message,
    );
    w
}

/// A Describe of a named statement was answered (RowDescription or NoData):
/// the result types of the server's copy, and, when the client asked, what
/// it was told (see `prepared::Results`).
fn note_results(a: &Attachment, t: u8, body: &[u8]) {
    let Some(e) = a.expect.front() else { return };
    let (tag::frontend::DESCRIBE, Some(def), false) =
        (e.tag, &e.stmt, e.describes_unnamed.is_some())
    else {
        return;
    };
    if !e.verifies_unnamed && e.mode == Mode::Forward {
        // The same description again (a driver that describes each run):
        // nothing to record, and no allocation.
        let told = def.told.lock().unwrap_or_else(|p| p.into_inner());
        let same = match (&*told, t) {
            (Some(r), tag::backend::NO_DATA) => r.is_empty(),
            (Some(r), _) => prepared::row_types_are(body, r),
            (None, _) => false,
        };
        drop(told);
        if same {
            // (A server whose copy was described elsewhere has it described
            // once more, by the check, before it runs.)
            return;
        }
    }
    let results = match t {
        tag::backend::NO_DATA => Some(prepared::Results::from([])),
        _ => prepared::row_types(body),
    };
    if e.verifies_unnamed {
        let key = a.fresh_key();
        *def.fresh_results.lock().unwrap_or_else(|p| p.into_inner()) = results.map(|r| (key, r));
        return;
    }
    if let Some(r) = results {
        if e.mode == Mode::Forward {
            *def.told.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
        }
        a.conn.prepared.set_results(def, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::expect::Entry;
    use crate::protocol::tag;

    #[test]
    fn a_spare_attachment_starts_empty_and_keeps_only_bounded_room() {
        drop_spares();
        let state = || {
            Box::new(ServerState::new(
                std::net::SocketAddr::from(([127, 0, 0, 1], 5432)),
                None,
            ))
        };
        let mut a = Attachment::boxed(0, state());
        for _ in 0..4 {
            a.send_simple(
                Entry::swallow(tag::frontend::QUERY),
                Bytes::from_static(b"Q"),
            );
        }
        let room = &*a as *const Attachment;
        assert!(!a.to_server().is_empty() && !a.expect.is_empty());
        let _ = a.into_state();
        // The next one on this thread is built in that allocation, empty,
        // owing nothing.
        let b = Attachment::boxed(1, state());
        assert_eq!(&*b as *const Attachment, room, "the allocation is reused");
        assert!(b.to_server().is_empty() && b.expect.is_empty());
        assert_eq!(b.expect.ready_owed(), 0);
        assert!(b.expect.capacity() >= 4, "with the queues' room");
        assert_eq!(b.shard(), 1);
        // A queue that grew large is freed rather than kept.
        let mut c = b;
        for _ in 0..(SPARE_ROOM + 1) {
            c.send_simple(
                Entry::swallow(tag::frontend::QUERY),
                Bytes::from_static(b"Q"),
            );
        }
        let _ = c.into_state();
        let d = Attachment::boxed(0, state());
        assert_eq!(d.expect.capacity(), 0);
        drop_spares();
    }
}
