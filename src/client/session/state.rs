//! The session's states, and the one function that moves between them.
//!
//! Two things describe a session between events:
//!
//! * [`Txn`]: where the client's transaction lives. Normally on its server (or
//!   nowhere); but a bare `BEGIN` is answered locally and *held* until a
//!   statement names the tenant, and a held transaction that shardbouncer itself
//!   failed stays *failed* until it ends. Every change goes through
//!   [`Txn::apply`]; a move the table does not allow is a bug, caught by a debug
//!   assertion.
//! * whether a server is attached, and what it owes ([`super::server`]).
//!
//! [`Phase`] names the combination for logs, tests and documentation:
//!
//! | phase | txn | server | client status |
//! |---|---|---|---|
//! | `Idle` | on server | none | `I` |
//! | `Held` | held | none | `T` |
//! | `HeldFailed` | failed | none | `E` |
//! | `WaitingForServer` | any | none, one requested | as before |
//! | `Paused` | any but on a server's | none; the tenant is paused | as before |
//! | `Attached` | on server | attached, nothing owed | the server's |
//! | `OutsideHeld` | held or failed | attached for tenant-free work | `T` or `E` |
//! | `Draining` | any | answers owed | as before |
//! | `CopyIn` | on server | in COPY FROM STDIN | `T`/`I` |
//! | `Releasing` | on server | being reset and returned | `I` |

use crate::protocol::TxStatus;
use crate::router::Effects;
use bytes::Bytes;

/// A BEGIN answered locally, with the statements that wait for it.
#[derive(Debug)]
pub(super) struct Held {
    /// The client's BEGIN (a Query frame), replayed first.
    pub(super) begin: Bytes,
    /// Transaction-scoped statements (SET LOCAL, SAVEPOINT, ...) answered locally
    /// and replayed inside the transaction, in order.
    pub(super) stmts: Vec<Bytes>,
    /// What the held statements may leave on the server.
    pub(super) effects: Effects,
}

/// Where the client's transaction lives.
#[derive(Debug, Default)]
pub(super) enum Txn {
    /// With its server (the client's status is the server's; `I` with none).
    #[default]
    OnServer,
    /// A BEGIN held locally: no shard yet.
    Held(Held),
    /// shardbouncer failed the held transaction: 25P02 until it ends, or
    /// until a `ROLLBACK TO` a savepoint it holds (kept here) recovers it.
    Failed(Option<Held>),
}

/// What happens to the transaction.
#[derive(Debug)]
pub(super) enum TxnEvent {
    /// A bare BEGIN with no transaction anywhere: hold it.
    HoldBegin(Bytes),
    /// A statement waits with the held BEGIN.
    Hold(Bytes, Effects),
    /// The tenant's shard is known: the held BEGIN and statements go to it.
    Replay,
    /// shardbouncer refused work inside the held transaction.
    Fail,
    /// `ROLLBACK TO` a savepoint of the failed held transaction: it is held
    /// again with its first `n` statements (up to that SAVEPOINT).
    RollbackTo(usize),
    /// COMMIT/ROLLBACK of a held or failed transaction.
    End,
}

impl Txn {
    /// The one state-change function. Returns the held transaction on
    /// [`TxnEvent::Replay`] (to be sent to the server).
    pub(super) fn apply(&mut self, ev: TxnEvent) -> Option<Held> {
        match (std::mem::take(self), ev) {
            (Txn::OnServer, TxnEvent::HoldBegin(begin)) => {
                *self = Txn::Held(Held {
                    begin,
                    stmts: Vec::new(),
                    effects: Effects::none(),
                });
                None
            }
            (Txn::Held(mut h), TxnEvent::Hold(stmt, effects)) => {
                h.stmts.push(stmt);
                h.effects.add(effects);
                *self = Txn::Held(h);
                None
            }
            (Txn::Held(h), TxnEvent::Replay) => Some(h),
            (Txn::Held(h), TxnEvent::Fail) => {
                *self = Txn::Failed(Some(h));
                None
            }
            (Txn::Failed(h), TxnEvent::Fail) => {
                *self = Txn::Failed(h);
                None
            }
            (Txn::Failed(Some(mut h)), TxnEvent::RollbackTo(n)) if n <= h.stmts.len() => {
                h.stmts.truncate(n);
                *self = Txn::Held(h);
                None
            }
            (Txn::Held(_) | Txn::Failed(_), TxnEvent::End) => None,
            // Failing work on the server fails the server's transaction, which
            // the server reports itself.
            (Txn::OnServer, TxnEvent::Fail) => None,
            (from, ev) => {
                debug_assert!(false, "invalid transaction move: {from:?} on {ev:?}");
                *self = from;
                None
            }
        }
    }

    /// The status the client sees, given its server's (if one is attached).
    pub(super) fn client_status(&self, server: Option<TxStatus>) -> TxStatus {
        match self {
            Txn::OnServer => server.unwrap_or(TxStatus::Idle),
            Txn::Held(_) => TxStatus::InTransaction,
            Txn::Failed(_) => TxStatus::Failed,
        }
    }

    /// Held or failed: the transaction is shardbouncer's, not a server's.
    pub(super) fn is_local(&self) -> bool {
        !matches!(self, Txn::OnServer)
    }

    /// The held transaction shardbouncer failed, if it is kept.
    pub(super) fn failed_held(&self) -> Option<&Held> {
        match self {
            Txn::Failed(Some(h)) => Some(h),
            _ => None,
        }
    }

    /// The held transaction, if any.
    pub(super) fn held(&self) -> Option<&Held> {
        match self {
            Txn::Held(h) => Some(h),
            _ => None,
        }
    }
}

/// The session's phase (derived: see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing happening.
    Idle,
    /// BEGIN held locally.
    Held,
    /// The held transaction failed.
    HeldFailed,
    /// A server was requested from the pool.
    WaitingForServer,
    /// The work's tenant is paused (console `PAUSE TENANT`): it waits for
    /// RESUME, with no server.
    Paused,
    /// A server is attached and owes nothing.
    Attached,
    /// A server runs tenant-free work outside a held BEGIN.
    OutsideHeld,
    /// A server owes answers.
    Draining,
    /// COPY FROM STDIN runs through the extended protocol.
    CopyIn,
    /// The server is being reset and returned.
    Releasing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_moves() {
        let mut t = Txn::default();
        assert_eq!(t.client_status(None), TxStatus::Idle);
        t.apply(TxnEvent::HoldBegin(Bytes::from_static(b"BEGIN")));
        assert_eq!(t.client_status(None), TxStatus::InTransaction);
        t.apply(TxnEvent::Hold(
            Bytes::from_static(b"SET LOCAL"),
            Effects::SETTINGS,
        ));
        let held = t.apply(TxnEvent::Replay).expect("held");
        assert_eq!(held.stmts.len(), 1);
        assert!(held.effects.any(Effects::SETTINGS));
        assert!(!t.is_local());
        assert_eq!(
            t.client_status(Some(TxStatus::InTransaction)),
            TxStatus::InTransaction
        );
        t.apply(TxnEvent::HoldBegin(Bytes::new()));
        t.apply(TxnEvent::Fail);
        assert_eq!(t.client_status(Some(TxStatus::Idle)), TxStatus::Failed);
        t.apply(TxnEvent::Fail);
        t.apply(TxnEvent::End);
        assert_eq!(t.client_status(None), TxStatus::Idle);
    }

    #[test]
    fn a_failed_held_transaction_goes_back_to_a_savepoint() {
        let mut t = Txn::default();
        t.apply(TxnEvent::HoldBegin(Bytes::from_static(b"BEGIN")));
        for s in ["SAVEPOINT a", "SET LOCAL x = 1"] {
            t.apply(TxnEvent::Hold(
                Bytes::from_static(s.as_bytes()),
                Effects::none(),
            ));
        }
        t.apply(TxnEvent::Fail);
        assert_eq!(t.failed_held().map(|h| h.stmts.len()), Some(2));
        t.apply(TxnEvent::RollbackTo(1));
        assert_eq!(t.client_status(None), TxStatus::InTransaction);
        assert_eq!(t.held().map(|h| h.stmts.len()), Some(1));
        assert!(t.failed_held().is_none());
    }

    #[test]
    #[should_panic(expected = "invalid transaction move")]
    fn invalid_moves_are_caught() {
        let mut t = Txn::default();
        t.apply(TxnEvent::Replay);
    }
}
