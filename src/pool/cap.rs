//! Caps on server connections shared by several pools, as PgBouncer's
//! `max_db_connections` (one database's pools on one shard, all users) and
//! `max_user_connections` (one user's pools on one Postgres server, all
//! databases).
//!
//! A pool takes a slot of each of its caps before it opens a connection and
//! gives it back when the connection closes. When a cap is full, an idle
//! connection of another pool under it is closed to make room (PgBouncer does
//! the same); failing that, the client waits as for a full pool, until a slot
//! frees or its `query_wait_timeout` runs out.

use super::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// One shared cap.
#[derive(Default)]
pub struct ConnCap {
    /// Most connections open at once (0: no cap).
    limit: AtomicUsize,
    /// Connections open or being opened under this cap.
    open: AtomicUsize,
    /// Signalled when a slot frees or the limit grows.
    freed: Notify,
    /// The pools under this cap, for eviction of idle connections.
    members: Mutex<Vec<Weak<Pool>>>,
}

impl ConnCap {
    /// A cap of `limit` connections (0: none).
    pub fn new(limit: usize) -> Arc<ConnCap> {
        let c = ConnCap::default();
        c.limit.store(limit, Ordering::Release);
        Arc::new(c)
    }

    /// Change the limit (reload, console SET). Connections above a lowered
    /// limit are not closed at once: no new ones open until the count is below
    /// it, and the surplus is closed as it is checked in ([`ConnCap::shed`]).
    pub fn set_limit(&self, limit: usize) {
        if self.limit.swap(limit, Ordering::AcqRel) != limit {
            self.freed.notify_waiters();
        }
    }

    /// The limit (0: none).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Connections open under this cap.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// More connections are open than the limit allows (it was lowered).
    pub fn is_over(&self) -> bool {
        let limit = self.limit();
        limit > 0 && self.open() > limit
    }

    /// Every slot is taken.
    pub fn is_full(&self) -> bool {
        let limit = self.limit();
        limit > 0 && self.open() >= limit
    }

    /// Wake the clients waiting for room (a server went idle: it may be closed
    /// for them, or reused by its own pool's waiter).
    pub fn wake(&self) {
        self.freed.notify_waiters();
    }

    /// Count a pool as under this cap.
    pub fn join(&self, pool: &Arc<Pool>) {
        let mut m = self
            .members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(pool));
    }

    /// Room for one more connection.
    fn has_room(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.open() < limit
    }

    /// Take a slot of every cap in `caps` if each has one, else none.
    ///
    /// All or nothing under one lock, so no cap ever shows a slot taken for a
    /// moment and given back: that would wake, through [`ConnCap::give`], the
    /// waiters of a cap that never was full (the caller among them, which
    /// then spins).
    pub fn try_take_all(caps: &[Arc<ConnCap>]) -> bool {
        static TAKING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = TAKING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !caps.iter().all(|c| c.has_room()) {
            return false;
        }
        for c in caps {
            c.open.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Give up the slot of a connection above a lowered limit, if there is
    /// such a surplus: the caller closes the connection without giving its
    /// slot back again. The slot counts as free at once, not when the backend
    /// has gone (as [`ConnCap::give`] does): the count is still at the limit
    /// or above it, so nothing opens in its place meanwhile, and one surplus
    /// is shed once however many connections come back together.
    pub fn shed(&self) -> bool {
        let limit = self.limit();
        limit > 0
            && self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    (o > limit).then(|| o - 1)
                })
                .is_ok()
    }

    /// Give a slot back.
    pub fn give(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        // Everyone waiting looks again: a waiter may be held by another cap too.
        self.freed.notify_waiters();
    }

    /// Close an idle connection of a pool under this cap other than `except`;
    /// whether one was closed (its slot is then free).
    pub fn evict_idle(&self, except: &Pool) -> bool {
        let members: Vec<Arc<Pool>> = self
            .members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        members
            .iter()
            .filter(|p| !std::ptr::eq(p.as_ref(), except))
            .any(|p| p.close_one_idle())
    }

    /// Wait for a slot to free (register before checking, so none is missed).
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

/// Slots taken for a connection being opened: kept when it opens (the
/// connection gives them back when it closes), given back if it does not.
pub struct Slots<'a> {
    caps: Option<&'a [Arc<ConnCap>; 2]>,
}

impl<'a> Slots<'a> {
    /// No caps (a pool made outside [`super::Pools`]).
    pub fn none() -> Slots<'static> {
        Slots { caps: None }
    }

    /// Slots of both `caps`, already taken.
    pub fn taken(caps: &'a [Arc<ConnCap>; 2]) -> Slots<'a> {
        Slots { caps: Some(caps) }
    }

    /// The connection opened: its slots stay taken until it closes.
    pub fn keep(mut self) {
        self.caps = None;
    }
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        for c in self.caps.into_iter().flatten() {
            c.give();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_counts_slots_and_zero_means_none() {
        let c = [ConnCap::new(2)];
        let take = || ConnCap::try_take_all(&c);
        assert!(take() && take());
        assert!(!take());
        c[0].give();
        assert!(take());
        c[0].set_limit(0);
        assert!(take() && take());
        assert_eq!(c[0].open(), 4);
        c[0].set_limit(3);
        assert!(!take(), "above a lowered limit nothing new opens");
        // The surplus is shed one connection at a time, down to the limit.
        assert!(c[0].shed());
        assert_eq!(c[0].open(), 3);
        assert!(!c[0].shed(), "nothing above the limit is left");
        assert!(!take());
        c[0].set_limit(0);
        assert!(!c[0].shed(), "no limit: nothing to shed");
    }

    #[test]
    fn slots_are_taken_from_every_cap_or_from_none() {
        let caps = [ConnCap::new(0), ConnCap::new(1)];
        assert!(ConnCap::try_take_all(&caps));
        // The second cap is full: the first, which has no limit, is not touched.
        assert!(!ConnCap::try_take_all(&caps));
        assert_eq!((caps[0].open(), caps[1].open()), (1, 1));
        caps[1].give();
        assert!(ConnCap::try_take_all(&caps));
        assert_eq!((caps[0].open(), caps[1].open()), (2, 1));
    }
}
