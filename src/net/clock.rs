//! The time, read once per poll of a client's task.
//!
//! A transaction's path reads the clock a dozen times: the client's last
//! activity, the pool's wait and the server's last use, the transaction's and
//! each query's time, the server's age against `server_lifetime`. Each read is
//! a vDSO call, and under a hypervisor a slow one: with 100 `pgbench -S`
//! clients, `clock_gettime` was 3% of the pooler's user time (`perf record`).
//! PgBouncer reads its clock once per turn of its event loop
//! (`get_cached_time`); here each poll of a [`Clocked`] task reads it at most
//! once, on first use. A poll is microseconds of work, so every time taken in
//! one is as good as the first: these times feed statistics and timeouts of
//! seconds. Deadlines the runtime sleeps to are `tokio::time` instants, which
//! this does not touch.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone, Copy)]
enum Clock {
    /// Not in a [`Clocked`] poll: every [`now`] reads the clock.
    Off,
    /// In a poll, the clock not read yet.
    Unread,
    /// In a poll that read the clock.
    Read(Instant),
}

thread_local! {
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Off) };
}

/// The time now: within a poll of a [`Clocked`] future, the time read first
/// in that poll; elsewhere, the clock.
pub fn now() -> Instant {
    CLOCK.with(|c| match c.get() {
        Clock::Off => Instant::now(),
        Clock::Unread => {
            let t = Instant::now();
            c.set(Clock::Read(t));
            t
        }
        Clock::Read(t) => t,
    })
}

/// The time since `t`, by [`now`] (zero if `t` is later).
pub fn since(t: Instant) -> std::time::Duration {
    now().saturating_duration_since(t)
}

/// A future whose every poll shares one reading of the clock (see [`now`]).
pub struct Clocked<F>(pub F);

impl<F: Future> Future for Clocked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the state back however the poll ends (a panic included), so
        /// no reading outlives the poll it was taken in.
        struct Restore(Clock);
        impl Drop for Restore {
            fn drop(&mut self) {
                CLOCK.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CLOCK.with(|c| c.replace(Clock::Unread)));
        // SAFETY: structural pinning of the only field: it is never moved out
        // of `self`, and `Clocked` has no `Drop` or `Unpin` of its own.
        unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within one poll, one reading; across polls, a new one; outside any
    /// poll, the clock itself.
    #[test]
    fn a_poll_reads_the_clock_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Clocked(async {
            let a = now();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(now(), a, "the same poll");
            assert_eq!(since(a), std::time::Duration::ZERO);
            // A new poll of the same task reads the clock again.
            tokio::task::yield_now().await;
            let b = now();
            assert!(b >= a + std::time::Duration::from_millis(2), "a new poll");
        }));
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() >= a + std::time::Duration::from_millis(2), "no poll");
    }

    /// A nested poll shares the outer one's reading, and the outer state is
    /// back when it ends.
    #[test]
    fn nested_polls_share_the_reading() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(Clocked(async {
            let a = now();
            let b = Clocked(async { now() }).await;
            assert!(b >= a);
            assert_eq!(now(), a);
        }));
    }
}
