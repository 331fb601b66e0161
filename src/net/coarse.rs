//! Coarse deadlines for a worker's client tasks: woken by one sweep per
//! [`TICK`], not by a timer each.
//!
//! A transaction armed three tokio timers and disarmed them again: the
//! linger before an idle session parks, the pool's `query_wait_timeout`, and
//! the watch for a client that hangs up while it waits for a server. Almost
//! none of them fire. Each cost a registration in the runtime's timer wheel
//! (a lock, the clock read and converted to ticks) and a locked removal: about
//! 2,000 of the 24,000 instructions of a `pgbench -S` transaction at 100
//! clients (callgrind). PgBouncer walks its waiting clients once per loop
//! instead. Here a [`Deadline`] puts its waker in this thread's table, which
//! costs a slot and no lock; the worker's sweep task wakes those whose time
//! has come, every [`TICK`] while any are armed, and sleeps while none are.
//!
//! A deadline fires at its time or up to one [`TICK`] (plus the sweep's own
//! scheduling) later, never earlier: the deadlines here are 100 ms or more,
//! for what a client waits or idles, not for protocol timing.
//!
//! A thread that runs no sweep (the control runtime, a test's runtime, a
//! blocking thread) falls back to a tokio timer per deadline, so the same
//! code is right everywhere.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the sweep looks at this worker's armed deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// One armed deadline.
struct Slot {
    at: Instant,
    /// `None`: the slot is free.
    waker: Option<Waker>,
    /// Bumped whenever the slot is freed, so a [`Deadline`] holding an old
    /// index cannot touch the slot's next user.
    generation: u32,
}

/// This thread's armed deadlines.
struct Table {
    /// Which table this is: a [`Deadline`] only ever touches the table it
    /// armed in (tasks on a worker stay on its thread, but a deadline could
    /// be dropped elsewhere, in a test or a runtime's shutdown).
    id: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    armed: usize,
    /// The sweep task, waiting for a first deadline.
    sweeper: Option<Waker>,
}

/// Table ids, unique in the process (0: none).
static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The sweep's table on a thread that runs one ([`start`]).
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// Start this worker's sweep task on the current runtime, and from now on
/// arm this thread's [`Deadline`]s in its table. Called once, at the start of
/// a worker thread; the task lives as long as the runtime.
pub fn start() {
    TABLE.with(|t| {
        *t.borrow_mut() = Some(Table {
            id: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            slots: Vec::new(),
            free: Vec::new(),
            armed: 0,
            sweeper: None,
        })
    });
    tokio::spawn(sweep_forever());
}

/// Deadlines armed in this thread's table now (tests, and the sweep's check
/// that it may sleep).
pub fn armed() -> usize {
    TABLE.with(|t| t.borrow().as_ref().map_or(0, |t| t.armed))
}

async fn sweep_forever() {
    let mut due = Vec::new();
    loop {
        // Asleep while nothing is armed: the first deadline wakes this task.
        std::future::poll_fn(|cx| {
            TABLE.with(|t| match t.borrow_mut().as_mut() {
                Some(t) if t.armed == 0 => {
                    t.sweeper = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            })
        })
        .await;
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        TABLE.with(|t| {
            if let Some(t) = t.borrow_mut().as_mut() {
                t.take_due(now, &mut due);
            }
        });
        // Woken outside the borrow: a waker may run code that arms another
        // deadline.
        for w in due.drain(..) {
            w.wake();
        }
    }
}

impl Table {
    fn arm(&mut self, at: Instant, waker: &Waker) -> (u32, u32) {
        let waker = Some(waker.clone());
        let i = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.at = at;
                s.waker = waker;
                i
            }
            None => {
                self.slots.push(Slot {
                    at,
                    waker,
                    generation: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.armed += 1;
        if self.armed == 1 {
            if let Some(w) = self.sweeper.take() {
                w.wake();
            }
        }
        (i, self.slots[i as usize].generation)
    }

    /// The slot `i` if it is still the one armed with `generation`.
    fn slot(&mut self, i: u32, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(i as usize)
            .filter(|s| s.generation == generation && s.waker.is_some())
    }

    fn disarm(&mut self, i: u32, generation: u32) {
        if let Some(s) = self.slot(i, generation) {
            s.waker = None;
            s.generation = s.generation.wrapping_add(1);
            self.free.push(i);
            self.armed -= 1;
        }
    }

    /// Free every slot due by `now` and collect its waker.
    fn take_due(&mut self, now: Instant, due: &mut Vec<Waker>) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.at <= now {
                if let Some(w) = s.waker.take() {
                    s.generation = s.generation.wrapping_add(1);
                    self.free.push(i as u32);
                    self.armed -= 1;
                    due.push(w);
                }
            }
        }
        // A burst of clients leaves a long table behind; once it is all free
        // again, it goes.
        if self.armed == 0 && self.slots.len() > 1024 {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }
}

/// Where a [`Deadline`] is armed.
enum Armed {
    No,
    /// In this table's slot, with this generation.
    Slot {
        table: u64,
        index: u32,
        generation: u32,
    },
    /// A tokio timer, on a thread with no sweep.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

/// A future that resolves at [`Self::at`] or up to a [`TICK`] after it (see
/// the module's doc). Armed on its first poll, disarmed when it resolves or is
/// dropped.
pub struct Deadline {
    at: Instant,
    armed: Armed,
}

/// A deadline `after` from now (the poll's cached time, [`super::clock::now`]).
pub fn after(after: Duration) -> Deadline {
    at(super::clock::now() + after)
}

/// A deadline at `at`.
pub fn at(at: Instant) -> Deadline {
    Deadline {
        at,
        armed: Armed::No,
    }
}

/// Sleep for `d` (see [`Deadline`]).
pub async fn sleep(d: Duration) {
    after(d).await
}

/// Run `f` for at most `d`: `None` if the deadline came first.
pub async fn timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut deadline = after(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| None)
    })
    .await
}

impl Deadline {
    /// When it resolves (at the earliest).
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Move the deadline to `at`; it is armed again on its next poll.
    pub fn reset(&mut self, at: Instant) {
        self.disarm();
        self.at = at;
    }

    fn disarm(&mut self) {
        if let Armed::Slot {
            table,
            index,
            generation,
        } = std::mem::replace(&mut self.armed, Armed::No)
        {
            // `try_with`: a deadline dropped while the thread's locals are
            // being torn down has nothing left to disarm.
            let _ = TABLE.try_with(|t| {
                if let Ok(mut t) = t.try_borrow_mut() {
                    if let Some(t) = t.as_mut().filter(|t| t.id == table) {
                        t.disarm(index, generation);
                    }
                }
            });
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Armed::Tokio(sleep) = &mut this.armed {
            return sleep.as_mut().poll(cx);
        }
        if super::clock::now() >= this.at {
            this.disarm();
            return Poll::Ready(());
        }
        let at = this.at;
        let armed = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let t = t.as_mut()?;
            if let Armed::Slot {
                table,
                index,
                generation,
            } = this.armed
            {
                if table == t.id {
                    if let Some(s) = t.slot(index, generation) {
                        if let Some(w) = s.waker.as_mut().filter(|w| !w.will_wake(cx.waker())) {
                            *w = cx.waker().clone();
                        }
                        return Some(Armed::Slot {
                            table,
                            index,
                            generation,
                        });
                    }
                }
                // Swept (its time came; the clock above is the poll's, read
                // before the sweep) or armed elsewhere: armed again.
            }
            let (index, generation) = t.arm(at, cx.waker());
            Some(Armed::Slot {
                table: t.id,
                index,
                generation,
            })
        });
        match armed {
            Some(a) => {
                this.armed = a;
                Poll::Pending
            }
            None => {
                let mut sleep = Box::pin(tokio::time::sleep_until(at.into()));
                let r = sleep.as_mut().poll(cx);
                this.armed = Armed::Tokio(sleep);
                r
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A deadline resolves, never before its time, and leaves nothing armed.
    #[test]
    fn a_deadline_resolves_not_before_its_time() {
        worker().block_on(async {
            start();
            let begun = Instant::now();
            let d = at(begun + Duration::from_millis(30));
            let want = d.at();
            d.await;
            assert!(Instant::now() >= want);
            assert_eq!(armed(), 0);
        });
    }

    /// Dropped deadlines give their slots back; the others still fire.
    #[test]
    fn dropped_deadlines_are_disarmed_and_the_rest_fire() {
        worker().block_on(async {
            start();
            let mut ds: Vec<_> = (0..100)
                .map(|i| Box::pin(after(Duration::from_millis(20 + i))))
                .collect();
            // Arm each with one poll.
            std::future::poll_fn(|cx| {
                for d in &mut ds {
                    assert!(d.as_mut().poll(cx).is_pending());
                }
                Poll::Ready(())
            })
            .await;
            assert_eq!(armed(), 100);
            let kept: Vec<_> = ds.drain(..).step_by(2).collect();
            assert_eq!(armed(), 50);
            for d in kept {
                d.await;
            }
            assert_eq!(armed(), 0);
        });
    }

    /// A deadline moved later does not fire at its old time.
    #[test]
    fn a_reset_deadline_waits_for_its_new_time() {
        worker().block_on(async {
            start();
            let first = Instant::now() + Duration::from_millis(10);
            let mut d = Box::pin(at(first));
            std::future::poll_fn(|cx| {
                assert!(d.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let later = first + Duration::from_millis(40);
            d.as_mut().reset(later);
            d.await;
            assert!(Instant::now() >= later);
            assert_eq!(armed(), 0);
        });
    }

    /// `timeout` gives the future's output when it comes first, `None` when
    /// the deadline does.
    #[test]
    fn timeout_is_the_sooner_of_the_two() {
        worker().block_on(async {
            start();
            assert_eq!(timeout(Duration::from_secs(60), async { 7 }).await, Some(7));
            assert_eq!(armed(), 0);
            let never = std::future::pending::<()>();
            assert_eq!(timeout(Duration::from_millis(20), never).await, None);
            assert_eq!(armed(), 0);
        });
    }

    /// With no sweep on the thread, a deadline is a tokio timer and still
    /// resolves at its time.
    #[test]
    fn without_a_sweep_a_deadline_is_a_tokio_timer() {
        worker().block_on(async {
            TABLE.with(|t| *t.borrow_mut() = None);
            let want = Instant::now() + Duration::from_millis(20);
            at(want).await;
            assert!(Instant::now() >= want);
            assert_eq!(armed(), 0);
        });
    }

    /// A deadline armed in one table and dropped where another table runs
    /// leaves the other table's slots alone.
    #[test]
    fn a_deadline_touches_only_its_own_table() {
        let first = std::thread::spawn(|| {
            worker().block_on(async {
                start();
                let mut d = Box::pin(after(Duration::from_secs(60)));
                std::future::poll_fn(|cx| {
                    assert!(d.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                assert_eq!(armed(), 1);
                // Handed out of `block_on` as data, not as a future to await.
                Some(d)
            })
        })
        .join()
        .unwrap();
        worker().block_on(async {
            start();
            let mut mine = Box::pin(after(Duration::from_secs(60)));
            std::future::poll_fn(|cx| {
                assert!(mine.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            // Same slot index and generation as `first`'s, in another table.
            drop(first);
            assert_eq!(armed(), 1);
            drop(mine);
            assert_eq!(armed(), 0);
        });
    }
}
