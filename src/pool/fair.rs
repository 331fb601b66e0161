//! Fair hand-out of a pool's servers across tenants, and per-tenant caps.
//!
//! A full pool used to queue its waiting clients first in, first out, so one
//! tenant with 500 queued requests made a tenant with one wait behind all 500.
//! Here each tenant waits in its own lane (tenant-free work shares one lane),
//! and a server that comes free goes to the next lane in round-robin order:
//! a tenant with one waiting client waits for at most one turn of the lanes.
//!
//! A tenant may also be capped (`[databases.NAME.tenant_limits] max_active`,
//! or its shard map `[tenant_limits]` entry): at most that many of its
//! transactions hold a server of this pool at once. A tenant at its cap waits
//! even when servers are free, while other tenants take them.
//!
//! The permits of the pool's semaphore are the servers that may be out. A
//! client first tries to take one directly ([`Fair::admit`]); when none is free,
//! or its tenant is at its cap, it joins its lane and waits for a permit handed
//! to it. Every permit given back goes through [`Fair::release`], which hands it
//! to the next eligible waiter or, when there is none, returns it to the
//! semaphore, both under the lane lock, so a permit is never free while an
//! eligible client waits.

use crate::router::keyed::KeyedMap;
use crate::router::TenantKey;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// A waiting line: one tenant's, or all tenant-free work's.
type Lane = Option<TenantKey>;

/// Who a checkout is for: a tenant and its cap (0 = none), or nobody.
pub type For = Option<(TenantKey, usize)>;

struct Waiter {
    id: u64,
    /// The tenant's cap when this client asked (0 = none).
    cap: usize,
    tx: oneshot::Sender<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Inner {
    lanes: KeyedMap<Lane, VecDeque<Waiter>>,
    /// Lanes with waiters, in the order they are served.
    ring: VecDeque<Lane>,
    /// Transactions of each tenant holding a permit.
    active: KeyedMap<TenantKey, usize>,
    next_id: u64,
}

impl Inner {
    fn eligible(&self, lane: &Lane, cap: usize) -> bool {
        match lane {
            Some(t) if cap > 0 => self.active.get(t).copied().unwrap_or(0) < cap,
            _ => true,
        }
    }

    fn grant(&mut self, lane: &Lane) {
        if let Some(t) = lane {
            *self.active.entry(*t).or_insert(0) += 1;
        }
    }

    /// A permit of `sem` for `lane` now, if the lane is under its cap and
    /// one is free (a free permit means nobody eligible waits: every permit
    /// given back is offered to the waiters first).
    fn try_grant(
        &mut self,
        lane: &Lane,
        cap: usize,
        sem: &Arc<Semaphore>,
    ) -> Option<OwnedSemaphorePermit> {
        if !self.eligible(lane, cap) {
            return None;
        }
        let p = sem.clone().try_acquire_owned().ok()?;
        self.grant(lane);
        Some(p)
    }

    fn ungrant(&mut self, lane: &Lane) {
        if let Some(t) = lane {
            if let Some(n) = self.active.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    self.active.remove(t);
                }
            }
        }
    }

    /// The next eligible waiter in round-robin order, taken out of its lane.
    fn next(&mut self) -> Option<(Lane, Waiter)> {
        for _ in 0..self.ring.len() {
            let lane = self.ring.pop_front()?;
            let Some(cap) = self.lanes.get(&lane).and_then(|q| q.front()).map(|w| w.cap) else {
                // Its waiters all left.
                self.lanes.remove(&lane);
                continue;
            };
            if !self.eligible(&lane, cap) {
                self.ring.push_back(lane);
                continue;
            }
            let q = self.lanes.get_mut(&lane).expect("checked");
            let w = q.pop_front().expect("not empty");
            if q.is_empty() {
                self.lanes.remove(&lane);
            } else {
                // Served: to the back of the line of lanes.
                self.ring.push_back(lane);
            }
            return Some((lane, w));
        }
        None
    }

    /// Hand `permit` (else free permits of `sem`) to eligible waiters.
    fn dispatch(&mut self, mut permit: Option<OwnedSemaphorePermit>, sem: &Arc<Semaphore>) {
        loop {
            let p = match permit.take() {
                Some(p) => p,
                None => match self.has_eligible().then(|| sem.clone().try_acquire_owned()) {
                    Some(Ok(p)) => p,
                    _ => return,
                },
            };
            let Some((lane, w)) = self.next() else {
                // Back to the semaphore, under the lock (see the module notes).
                drop(p);
                return;
            };
            self.grant(&lane);
            if let Err(p) = w.tx.send(p) {
                // That client gave up meanwhile: the next one.
                self.ungrant(&lane);
                permit = Some(p);
            }
        }
    }

    fn has_eligible(&self) -> bool {
        self.lanes
            .iter()
            .any(|(lane, q)| q.front().is_some_and(|w| self.eligible(lane, w.cap)))
    }
}

/// The fair queue of one pool.
#[derive(Default)]
pub struct Fair {
    inner: Mutex<Inner>,
}

/// What [`Fair::admit`] gives.
pub enum Admit {
    /// A permit, now.
    Now(OwnedSemaphorePermit),
    /// A place in line: await [`Wait::permit`].
    Wait(Wait),
}

/// A client waiting in its lane. Dropped before its permit came (a timeout, a
/// cancel, the reserve pool served it), it leaves the line; a permit handed to
/// it meanwhile is passed on.
pub struct Wait {
    fair: Arc<Fair>,
    sem: Arc<Semaphore>,
    lane: Lane,
    id: u64,
    rx: Option<oneshot::Receiver<OwnedSemaphorePermit>>,
}

impl Wait {
    /// The permit, when it is this client's turn.
    pub async fn permit(&mut self) -> Option<OwnedSemaphorePermit> {
        let rx = self.rx.as_mut()?;
        let p = rx.await.ok();
        self.rx = None;
        p
    }

    /// The tenant may take one more server now (for a reserve-pool server,
    /// which does not go through the lanes): counted if so.
    pub fn try_count(&self) -> bool {
        let mut inner = self.fair.lock();
        let cap = inner
            .lanes
            .get(&self.lane)
            .and_then(|q| q.iter().find(|w| w.id == self.id))
            .map_or(0, |w| w.cap);
        if !inner.eligible(&self.lane, cap) {
            return false;
        }
        inner.grant(&self.lane);
        true
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut inner = self.fair.lock();
        if let Some(q) = inner.lanes.get_mut(&self.lane) {
            q.retain(|w| w.id != self.id);
            if q.is_empty() {
                inner.lanes.remove(&self.lane);
                let lane = self.lane;
                inner.ring.retain(|l| *l != lane);
            }
        }
        rx.close();
        if let Ok(p) = rx.try_recv() {
            // Handed over as this client left: to the next one.
            inner.ungrant(&self.lane);
            inner.dispatch(Some(p), &self.sem);
        }
    }
}

impl Fair {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit at once, when [`Self::admit`] would give one without a wait;
    /// `None` (and no place in line) otherwise.
    pub fn try_admit(&self, sem: &Arc<Semaphore>, who: For) -> Option<OwnedSemaphorePermit> {
        match who {
            // As in `admit`: tenant-free work takes no lock.
            None => sem.clone().try_acquire_owned().ok(),
            Some((t, cap)) => self.lock().try_grant(&Some(t), cap, sem),
        }
    }

    /// A client asks for a server of the pool whose permits are `sem`.
    pub fn admit(self: &Arc<Self>, sem: &Arc<Semaphore>, who: For) -> Admit {
        if who.is_none() {
            // Tenant-free work counts nothing, and a free permit means nobody
            // eligible waits (every permit given back is offered to the waiters
            // first): no lock on the common path.
            if let Ok(p) = sem.clone().try_acquire_owned() {
                return Admit::Now(p);
            }
        }
        let lane: Lane = who.map(|(t, _)| t);
        let cap = who.map_or(0, |(_, c)| c);
        // Tried and, if need be, queued under one lock: a permit given back
        // in between would otherwise miss this waiter.
        let mut inner = self.lock();
        if let Some(p) = inner.try_grant(&lane, cap, sem) {
            return Admit::Now(p);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = oneshot::channel();
        let q = inner.lanes.entry(lane).or_default();
        if q.is_empty() {
            inner.ring.push_back(lane);
        }
        inner
            .lanes
            .get_mut(&lane)
            .expect("just made")
            .push_back(Waiter { id, cap, tx });
        Admit::Wait(Wait {
            fair: self.clone(),
            sem: sem.clone(),
            lane,
            id,
            rx: Some(rx),
        })
    }

    /// A server comes back: the tenant it served (if any) has one transaction
    /// fewer, and `permit` (`None` when a shrink of the pool took it) goes to
    /// the next eligible waiter, or back to `sem`.
    pub fn release(
        &self,
        tenant: Option<TenantKey>,
        permit: Option<OwnedSemaphorePermit>,
        sem: &Arc<Semaphore>,
    ) {
        let mut inner = self.lock();
        inner.ungrant(&tenant);
        inner.dispatch(permit, sem);
    }

    /// Permits were added to `sem` (the pool grew): serve who waits.
    pub fn grew(&self, sem: &Arc<Semaphore>) {
        self.lock().dispatch(None, sem);
    }

    /// Clients waiting and transactions out, per tenant (tenant-free work
    /// under `None`).
    pub fn snapshot(&self) -> (HashMap<Lane, usize>, HashMap<TenantKey, usize>) {
        let inner = self.lock();
        let waiting = inner.lanes.iter().map(|(l, q)| (*l, q.len())).collect();
        (
            waiting,
            inner.active.iter().map(|(t, n)| (*t, *n)).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantKey {
        TenantKey::new(s.as_bytes()).unwrap()
    }

    fn now(a: Admit) -> OwnedSemaphorePermit {
        match a {
            Admit::Now(p) => p,
            Admit::Wait(_) => panic!("waited"),
        }
    }

    fn wait(a: Admit) -> Wait {
        match a {
            Admit::Wait(w) => w,
            Admit::Now(_) => panic!("did not wait"),
        }
    }

    #[tokio::test]
    async fn a_tenant_with_many_waiters_cannot_starve_one_with_few() {
        let sem = Arc::new(Semaphore::new(1));
        let f = Arc::new(Fair::default());
        let held = now(f.admit(&sem, Some((t("a"), 0))));
        let mut a: Vec<Wait> = (0..50)
            .map(|_| wait(f.admit(&sem, Some((t("a"), 0)))))
            .collect();
        let mut b = wait(f.admit(&sem, Some((t("b"), 0))));
        // The first permit back goes to a's first waiter (a's lane came first),
        // the next to b, not to a's 49 others.
        f.release(Some(t("a")), Some(held), &sem);
        let p = a[0].permit().await.expect("a's first");
        f.release(Some(t("a")), Some(p), &sem);
        let p = b.permit().await.expect("b's turn");
        f.release(Some(t("b")), Some(p), &sem);
        assert!(a[1].permit().await.is_some());
    }

    #[tokio::test]
    async fn a_tenant_at_its_cap_waits_while_others_take_free_servers() {
        let sem = Arc::new(Semaphore::new(4));
        let f = Arc::new(Fair::default());
        let p1 = now(f.admit(&sem, Some((t("a"), 2))));
        let _p2 = now(f.admit(&sem, Some((t("a"), 2))));
        let mut third = wait(f.admit(&sem, Some((t("a"), 2))));
        // b is not capped by a's cap; free servers are its.
        let _b = now(f.admit(&sem, Some((t("b"), 2))));
        let _free = now(f.admit(&sem, None));
        assert_eq!(sem.available_permits(), 0);
        // One of a's transactions ends: its permit goes to a's waiter.
        f.release(Some(t("a")), Some(p1), &sem);
        assert!(third.permit().await.is_some());
        let (waiting, active) = f.snapshot();
        assert!(waiting.is_empty());
        assert_eq!(active.get(&t("a")), Some(&2));
    }

    #[tokio::test]
    async fn a_capped_tenant_is_served_when_its_transaction_ends_with_servers_free() {
        let sem = Arc::new(Semaphore::new(3));
        let f = Arc::new(Fair::default());
        let p = now(f.admit(&sem, Some((t("a"), 1))));
        let mut w = wait(f.admit(&sem, Some((t("a"), 1))));
        // The permit goes back to a free pool (a shrink took it, say): a's end
        // of transaction must still wake a's waiter from the free permits.
        drop(p);
        f.release(Some(t("a")), None, &sem);
        assert!(w.permit().await.is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_passes_its_permit_on() {
        let sem = Arc::new(Semaphore::new(1));
        let f = Arc::new(Fair::default());
        let p = now(f.admit(&sem, None));
        let gone = wait(f.admit(&sem, None));
        let mut next = wait(f.admit(&sem, None));
        f.release(None, Some(p), &sem);
        // `gone` was handed the permit but never took it.
        drop(gone);
        assert!(next.permit().await.is_some());
        assert!(f.snapshot().0.is_empty());
    }

    #[test]
    fn a_permit_with_nobody_eligible_goes_back_to_the_semaphore() {
        let sem = Arc::new(Semaphore::new(2));
        let f = Arc::new(Fair::default());
        let p = now(f.admit(&sem, Some((t("a"), 1))));
        let _w = wait(f.admit(&sem, Some((t("a"), 1))));
        let q = now(f.admit(&sem, None));
        f.release(None, Some(q), &sem);
        assert_eq!(
            sem.available_permits(),
            1,
            "a is at its cap: the permit is free"
        );
        drop(p);
    }
}
