//! What the server owes us, in order.
//!
//! Every message sent to the server that produces a response pushes one entry; the
//! server's responses complete entries front to back. An entry says what to do with
//! its responses: forward them to the client, swallow them (statements shardbouncer
//! injected: settings sync, a held BEGIN, a lazy re-prepare), or emit a synthetic
//! reply in its place (a Close or a Parse that shardbouncer answered itself). Because
//! synthetic replies wait for their turn in the queue, answers stay in protocol order
//! even in deep pipelines.
//!
//! After an ErrorResponse to an extended-protocol message, Postgres skips everything
//! up to the next Sync; [`Expectations::skip_to_sync`] drops the same entries.

use crate::protocol::tag::{backend as be, frontend as fe};
use crate::server::prepared::StmtDef;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// How to treat the responses of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The client's own message: forward its responses.
    Forward,
    /// Injected by us: drop its responses (errors become warnings).
    Swallow,
    /// Injected by us on the client's behalf (a lazy re-prepare): drop the success
    /// reply, forward an error, which then stands for the client's message.
    SwallowOk,
}

/// One expected response sequence.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The message tag that was sent (P, B, D, E, C, S, Q, F).
    pub tag: u8,
    /// What to do with its responses.
    pub mode: Mode,
    /// A reply to emit in place of a server response (nothing was sent for it).
    pub synthetic: Option<Bytes>,
    /// The synthetic reply ends with a ReadyForQuery whose status byte is set
    /// when it is emitted (the status then, not when it was queued).
    pub patch_status: bool,
    /// For Parse: the statement that becomes prepared on this server when it succeeds.
    /// For Describe of a statement: where to record the inferred parameter types.
    pub stmt: Option<Arc<StmtDef>>,
    /// A Describe of the unnamed statement (the number of the client's
    /// unnamed Parse it describes): its ParameterDescription goes to the
    /// session's unnamed-statement slot if that Parse is still the client's.
    pub describes_unnamed: Option<u32>,
    /// A Parse of `stmt`'s text into the unnamed statement, where the server's
    /// copy could not be used: failed or skipped, it says nothing of that
    /// copy, which the server still has (probe W: the copy was forgotten, and
    /// the next client's Parse of the text got 42P05 from the server).
    pub parses_unnamed: bool,
    /// A Describe of the unnamed statement, parsed by shardbouncer with the
    /// text of `stmt` (whose server copy could not be used): its result
    /// types are checked against what the client was told
    /// (`StmtDef::fresh_results`).
    pub verifies_unnamed: bool,
    /// A statement of the client's that shardbouncer held (inside a held
    /// BEGIN) and answered itself, sent now: its answers are swallowed, but
    /// an error is the client's own, reported with its next statement.
    pub replayed: bool,
    /// The client's Parse of its unnamed statement (the number the session gave
    /// it): if the server fails or skips it, the client has no such statement.
    pub sets_unnamed: Option<u32>,
    /// A simple Query that drops every prepared statement (DISCARD ALL, DEALLOCATE
    /// ALL): on success the client's own statement names are gone, as in Postgres.
    pub drops_statements: bool,
    /// The error this entry may get was raised by shardbouncer through the server
    /// (so the transaction fails as in Postgres): the PL/pgSQL context and source
    /// location fields are ours, not the client's, and are dropped.
    pub raised: bool,
    /// An ErrorResponse sent in place of the server's error to this message:
    /// the first message of an error shardbouncer raises through the server,
    /// which in a transaction the server already failed answers 25P02 (and
    /// skips the rest), where Postgres would give the client shardbouncer's
    /// error (probe J: the client got no error at all). Boxed: rare.
    pub instead: Option<Box<Bytes>>,
    /// The client's name for the statement this message names; the server knows it
    /// by its internal `sb_` name, which errors must not show.
    pub client_name: Option<Bytes>,
    /// For a simple Query or an Execute: CopyDone/CopyFail messages the client
    /// sent right behind it before the server said CopyInResponse (a client may
    /// pipeline its COPY data): each ends one COPY it starts, as Postgres reads
    /// them next.
    pub copy_ends: u8,
    /// Syncs the client sent between this Execute and its COPY's end (libpq's
    /// `PQexecParams` and tokio-postgres send one right behind the Execute):
    /// Postgres ignores them during COPY IN, so they get no answer.
    pub syncs_in_copy: u8,
    /// For an Execute: its portal is bound to a `ROLLBACK TO SAVEPOINT`,
    /// whose CommandComplete (`ROLLBACK`) is also a transaction's end's.
    pub rolls_back_to: bool,
    /// For a simple Query or an Execute on a routed database: how many
    /// `COPY .. FROM STDIN` the router read in its work (their rows are
    /// checked, or hold no key). A COPY the server starts beyond them is
    /// one the router did not read, and ends the session; the client's
    /// copy messages are passed on only while one that is read may run
    /// ([`Expectations::copy_message_passes`]; probe CO F1).
    pub copies: u8,
    /// Of [`Entry::copies`], how many the server started.
    pub copies_started: u8,
}

impl Entry {
    /// A client message whose responses are forwarded.
    pub fn forward(tag: u8) -> Entry {
        Entry {
            tag,
            mode: Mode::Forward,
            synthetic: None,
            stmt: None,
            drops_statements: false,
            patch_status: false,
            describes_unnamed: None,
            parses_unnamed: false,
            verifies_unnamed: false,
            replayed: false,
            sets_unnamed: None,
            raised: false,
            instead: None,
            client_name: None,
            copy_ends: 0,
            syncs_in_copy: 0,
            rolls_back_to: false,
            copies: 0,
            copies_started: 0,
        }
    }

    /// A held statement of the client's, replayed (see [`Entry::replayed`]).
    pub fn replayed(tag: u8) -> Entry {
        let mut e = Entry::swallow(tag);
        e.replayed = true;
        e
    }

    /// An injected message whose responses are dropped.
    pub fn swallow(tag: u8) -> Entry {
        Entry {
            mode: Mode::Swallow,
            ..Entry::forward(tag)
        }
    }

    /// A reply we produce ourselves, emitted when its turn comes. `tag` is the
    /// client message it answers (S for a locally answered Sync, and so on).
    pub fn synthetic(tag: u8, reply: Bytes) -> Entry {
        Entry {
            synthetic: Some(reply),
            ..Entry::forward(tag)
        }
    }

    /// Attach a statement.
    pub fn with_stmt(mut self, s: Arc<StmtDef>) -> Entry {
        self.stmt = Some(s);
        self
    }

    /// Whether `resp` (a server message tag) finishes this entry.
    pub fn completed_by(&self, resp: u8) -> bool {
        if resp == be::ERROR_RESPONSE {
            // An error ends an extended message; a Query/Sync still ends with
            // ReadyForQuery (a Sync can fail at commit time).
            return self.is_extended();
        }
        match self.tag {
            fe::PARSE => resp == be::PARSE_COMPLETE,
            fe::BIND => resp == be::BIND_COMPLETE,
            fe::DESCRIBE => resp == be::ROW_DESCRIPTION || resp == be::NO_DATA,
            fe::EXECUTE => matches!(
                resp,
                be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED
            ),
            fe::CLOSE => resp == be::CLOSE_COMPLETE,
            fe::SYNC | fe::QUERY | fe::FUNCTION_CALL => resp == be::READY_FOR_QUERY,
            _ => false,
        }
    }

    /// Whether an error in this entry makes the server skip to the next Sync.
    pub fn is_extended(&self) -> bool {
        matches!(
            self.tag,
            fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE
        )
    }

    /// Whether this entry ends with ReadyForQuery.
    pub fn ends_with_ready(&self) -> bool {
        matches!(self.tag, fe::SYNC | fe::QUERY | fe::FUNCTION_CALL)
    }
}

/// The queue of expectations for the attached server.
#[derive(Debug, Default)]
pub struct Expectations {
    q: VecDeque<Entry>,
    ready_owed: usize,
}

impl Expectations {
    /// Whether a copy message the client sends now, with no COPY running
    /// for it, goes to the server: it belongs to the next COPY the last
    /// Query or Execute sent starts (as [`Self::copy_end_ahead`] reads
    /// it), and that must be one the router read ([`Entry::copies`]).
    /// Otherwise Postgres ignores it, or it would feed a COPY whose rows
    /// nobody checks.
    pub fn copy_message_passes(&self) -> bool {
        self.last_request().is_some_and(|e| {
            u16::from(e.copies_started) + u16::from(e.copy_ends) < u16::from(e.copies)
        })
    }

    /// The oldest request started a COPY FROM STDIN: `false` when that is
    /// more COPYs than the router read in it ([`Entry::copies`]).
    pub fn start_copy(&mut self) -> bool {
        match self.q.front_mut() {
            Some(e) if e.copies_started < e.copies => {
                e.copies_started += 1;
                true
            }
            _ => false,
        }
    }

    /// The last simple Query or Execute sent, looking past the Syncs sent
    /// after it (Postgres ignores them during a COPY it starts).
    fn last_request(&self) -> Option<&Entry> {
        use crate::protocol::tag::frontend as f;
        let syncs = self.syncs_at_end();
        let at = self.q.len().checked_sub(syncs + 1)?;
        let e = &self.q[at];
        (e.tag == f::QUERY || e.tag == f::EXECUTE).then_some(e)
    }

    /// Drop every entry and keep the room, unless it grew past `max_room`
    /// entries (then it is freed).
    pub fn clear_keeping_room(&mut self, max_room: usize) {
        self.q.clear();
        self.ready_owed = 0;
        if self.q.capacity() > max_room {
            self.q = VecDeque::new();
        }
    }

    /// Entries the queue has room for without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }

    /// Add an entry.
    #[inline]
    pub fn push(&mut self, e: Entry) {
        if e.ends_with_ready() && e.synthetic.is_none() {
            self.ready_owed += 1;
        }
        self.q.push_back(e);
    }

    /// The oldest entry.
    #[inline]
    pub fn front(&self) -> Option<&Entry> {
        self.q.front()
    }

    /// The client sent a CopyDone or CopyFail before any COPY was known to
    /// run: it belongs to the COPY the last message sent may start (a simple
    /// Query, or an Execute with no Sync after it yet), if any; otherwise
    /// Postgres ignores it, and so does this.
    ///
    /// Syncs sent between that message and the CopyDone are looked past: if
    /// the COPY starts, Postgres ignores them (a probe's Execute, Sync, data,
    /// CopyDone, Sync lost the client its connection, while the COPY committed).
    /// `true` when that message is an Execute.
    pub fn copy_end_ahead(&mut self) -> bool {
        use crate::protocol::tag::frontend as f;
        let syncs = self.syncs_at_end();
        let Some(at) = self.q.len().checked_sub(syncs + 1) else {
            return false;
        };
        let e = &mut self.q[at];
        if e.tag == f::QUERY || e.tag == f::EXECUTE {
            e.copy_ends = e.copy_ends.saturating_add(1);
            e.syncs_in_copy = u8::try_from(syncs).unwrap_or(u8::MAX);
        }
        e.tag == f::EXECUTE
    }

    /// Syncs (the client's, not answered here) at the end of the queue.
    fn syncs_at_end(&self) -> usize {
        use crate::protocol::tag::frontend as f;
        self.q
            .iter()
            .rev()
            .take_while(|e| e.tag == f::SYNC && e.synthetic.is_none())
            .count()
    }

    /// A COPY FROM STDIN of the oldest request started: whether the client
    /// already ended it (see [`Self::copy_end_ahead`]). If so, the Syncs it
    /// sent between the request and the end are dropped: the server ignores
    /// them.
    pub fn take_copy_end(&mut self) -> bool {
        let syncs = match self.q.front_mut() {
            Some(e) if e.copy_ends > 0 => {
                e.copy_ends -= 1;
                std::mem::take(&mut e.syncs_in_copy)
            }
            _ => return false,
        };
        for _ in 0..syncs {
            match self.q.get(1) {
                Some(e) if e.tag == fe::SYNC && e.synthetic.is_none() => {
                    self.remove(1);
                }
                _ => break,
            }
        }
        true
    }

    /// Remove the oldest entry.
    #[inline]
    pub fn pop(&mut self) -> Option<Entry> {
        let e = self.q.pop_front()?;
        self.gone(&e);
        Some(e)
    }

    /// Remove entry `i` (off the hot path: `pop` takes the oldest).
    fn remove(&mut self, i: usize) -> Option<Entry> {
        let e = self.q.remove(i)?;
        self.gone(&e);
        Some(e)
    }

    /// `e` left the queue: one ReadyForQuery fewer owed, if it ended with one.
    #[inline]
    fn gone(&mut self, e: &Entry) {
        if e.ends_with_ready() && e.synthetic.is_none() {
            self.ready_owed -= 1;
        }
    }

    /// Nothing owed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// ReadyForQuery messages the server still owes.
    #[inline]
    pub fn ready_owed(&self) -> usize {
        self.ready_owed
    }

    /// Entries pending.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// After an error in an extended-protocol message: drop what Postgres will skip,
    /// i.e. every entry before the next Sync (synthetic ones included: the server
    /// would not have answered them either).
    /// Returns the dropped entries (an error path, so allocating is fine).
    pub fn skip_to_sync(&mut self) -> Vec<Entry> {
        let mut dropped = Vec::new();
        while let Some(e) = self.q.front() {
            if e.tag == fe::SYNC {
                break;
            }
            if let Some(e) = self.pop() {
                dropped.push(e);
            }
        }
        dropped
    }

    /// COPY FROM STDIN started by an extended-protocol Execute: Postgres ignores
    /// Sync (and Flush) until CopyDone/CopyFail, so Syncs already sent behind the
    /// Execute will never be answered. Drop their entries.
    pub fn drop_syncs_after_head(&mut self) {
        let mut i = 1;
        while i < self.q.len() {
            if self.q[i].tag == fe::SYNC && self.q[i].synthetic.is_none() {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Whether any entry answers the client's own work (not only statements
    /// shardbouncer injected, which never open a transaction).
    pub fn owes_client(&self) -> bool {
        self.q
            .iter()
            .any(|e| e.mode != Mode::Swallow && e.synthetic.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_messages_pass_only_for_the_copies_the_router_read() {
        // A Query in which the router read one COPY FROM STDIN.
        let mut q = Expectations::default();
        let mut e = Entry::forward(fe::QUERY);
        e.copies = 1;
        q.push(e);
        // Its data and end, pipelined: they pass; data behind them would
        // feed a second COPY the router did not read.
        assert!(q.copy_message_passes());
        q.copy_end_ahead();
        assert!(!q.copy_message_passes());
        // The server starts one COPY for it, not a second.
        assert!(q.start_copy());
        assert!(!q.start_copy());
        // Behind an Execute the router read no COPY in, none passes, even
        // with an earlier request's COPY still owed.
        let mut q = Expectations::default();
        let mut e = Entry::forward(fe::EXECUTE);
        e.copies = 1;
        q.push(e);
        q.push(Entry::forward(fe::EXECUTE));
        q.push(Entry::forward(fe::SYNC));
        assert!(!q.copy_message_passes());
        assert!(q.start_copy());
    }

    #[test]
    fn syncs_between_a_copy_and_its_early_end_get_no_answer() {
        let mut q = Expectations::default();
        q.push(Entry::forward(fe::EXECUTE));
        q.push(Entry::forward(fe::SYNC));
        q.push(Entry::forward(fe::SYNC));
        q.copy_end_ahead();
        q.push(Entry::forward(fe::SYNC));
        assert_eq!(q.ready_owed(), 3);
        // The COPY started: the two Syncs before its end are ignored by the
        // server, the one after it is answered.
        assert!(q.take_copy_end());
        assert_eq!((q.len(), q.ready_owed()), (2, 1));
        // No COPY end ahead: nothing is taken.
        let mut q = Expectations::default();
        q.push(Entry::forward(fe::EXECUTE));
        q.push(Entry::forward(fe::SYNC));
        assert!(!q.take_copy_end());
        assert_eq!(q.ready_owed(), 1);
    }

    #[test]
    fn completion_rules() {
        assert!(Entry::forward(b'P').completed_by(b'1'));
        assert!(!Entry::forward(b'P').completed_by(b'2'));
        assert!(Entry::forward(b'D').completed_by(b'n'));
        assert!(!Entry::forward(b'D').completed_by(b't'));
        assert!(Entry::forward(b'E').completed_by(b's'));
        assert!(Entry::forward(b'Q').completed_by(b'Z'));
        assert!(!Entry::forward(b'Q').completed_by(b'C'));
        assert!(Entry::forward(b'B').completed_by(b'E'));
        assert!(!Entry::forward(b'S').completed_by(b'E'));
    }

    #[test]
    fn copy_in_drops_unanswerable_syncs() {
        let mut x = Expectations::default();
        x.push(Entry::forward(b'E'));
        x.push(Entry::forward(b'S'));
        x.push(Entry::forward(b'S'));
        assert_eq!(x.ready_owed(), 2);
        x.drop_syncs_after_head();
        assert_eq!(x.ready_owed(), 0);
        assert_eq!(x.len(), 1);
    }

    #[test]
    fn skip_to_sync_keeps_the_sync() {
        let mut x = Expectations::default();
        x.push(Entry::forward(b'P'));
        x.push(Entry::forward(b'B'));
        x.push(Entry::synthetic(b'C', Bytes::from_static(b"3\0\0\0\x04")));
        x.push(Entry::forward(b'S'));
        x.push(Entry::forward(b'Q'));
        assert_eq!(x.ready_owed(), 2);
        x.pop();
        x.skip_to_sync();
        assert_eq!(x.front().unwrap().tag, b'S');
        assert_eq!(x.len(), 2);
        x.pop();
        assert_eq!(x.ready_owed(), 1);
    }
}
