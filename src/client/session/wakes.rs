//! The wake-ups a session waits on besides its sockets: KILL, shutdown and a
//! CancelRequest for it. Each has a flag its notifier raises before it
//! notifies (the kill flag, the shutdown flag, the count of cancel signals),
//! and a `Notify` the task registers with once, only to be woken: the session
//! reads the flags, and polls no `Notified` while it waits.
//!
//! Why: polling a waiting `Notified` takes its `Notify`'s lock, and a session
//! waits several times per transaction on wake-ups that almost never come
//! (about 750 instructions per `pgbench -S` transaction at 100 clients,
//! callgrind). A `Notified` polled once keeps the task's waker, so a signal
//! still wakes the task, and the poll after it reads the flag.
//!
//! Each wake-up fires as the `Notified` did, once per signal: KILL for good,
//! shutdown once, a cancel once for each signal since the session armed it
//! again ([`Wakes::rearm_cancel`]).

use crate::app::{App, ClientHandle};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::sync::futures::Notified;

/// The session's wake-ups, made and registered once per task (see the module
/// doc), and lent to each wait.
pub(super) struct Wakes<'a, 'n> {
    app: &'n App,
    handle: &'n ClientHandle,
    kill: Pin<&'a mut Notified<'n>>,
    shutdown: Pin<&'a mut Notified<'n>>,
    cancel: Pin<&'a mut Notified<'n>>,
    /// Shutdown had begun when its wake-up was last armed (it fires no more).
    shutdown_seen: bool,
    /// [`App::wake_epoch`] when the shutdown wake-up was last armed: it also
    /// fires once the epoch moves on (a reload changed the timeouts).
    epoch_seen: u64,
    /// [`ClientHandle::cancel_signals`] when the cancel wake-up was last armed.
    cancels_seen: u32,
}

/// A wake-up that is ready while `fired` says so.
pub(super) struct Flagged<F> {
    fired: F,
}

impl<F: Fn() -> bool + Unpin> Future for Flagged<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if (self.fired)() {
            Poll::Ready(())
        } else {
            // The task's waker is with the registered `Notified`.
            Poll::Pending
        }
    }
}

impl<'a, 'n> Wakes<'a, 'n> {
    /// The wake-ups of `handle`'s session, from `Notified`s of its KILL, of
    /// `app`'s shutdown and of its cancel wake, pinned by the caller for the
    /// task's life. [`Self::register`] must run before the first wait. A
    /// cancel already waiting for the session (one that woke it from a
    /// dormitory) fires at once.
    pub(super) fn new(
        app: &'n App,
        handle: &'n ClientHandle,
        kill: Pin<&'a mut Notified<'n>>,
        shutdown: Pin<&'a mut Notified<'n>>,
        cancel: Pin<&'a mut Notified<'n>>,
    ) -> Self {
        let mut cancels_seen = handle.cancel_signals.load(Ordering::SeqCst);
        if cancel_pending(handle) {
            cancels_seen = cancels_seen.wrapping_sub(1);
        }
        Wakes {
            app,
            handle,
            kill,
            shutdown,
            cancel,
            shutdown_seen: false,
            epoch_seen: app.wake_epoch.load(Ordering::SeqCst),
            cancels_seen,
        }
    }

    /// Put each wake-up among its `Notify`'s waiters with this task's waker:
    /// from then on a signal wakes the task.
    pub(super) async fn register(&mut self) {
        let (app, handle) = (self.app, self.handle);
        std::future::poll_fn(|cx| {
            wait_on(&mut self.kill, cx, || handle.wake.notified());
            wait_on(&mut self.shutdown, cx, || app.shutdown.notified());
            wait_on(&mut self.cancel, cx, || handle.wake.notified());
            Poll::Ready(())
        })
        .await
    }

    /// Whether shutdown has begun.
    pub(super) fn shutting_down(&self) -> bool {
        self.app.shutting_down.load(Ordering::SeqCst)
    }

    /// The three wake-ups as futures for one `select!`: KILL, shutdown, and a
    /// cancel for this client.
    #[allow(clippy::type_complexity)]
    pub(super) fn futures(
        &self,
    ) -> (
        Flagged<impl Fn() -> bool + Unpin + '_>,
        Flagged<impl Fn() -> bool + Unpin + '_>,
        Flagged<impl Fn() -> bool + Unpin + '_>,
    ) {
        let (app, handle) = (self.app, self.handle);
        let (shutdown_seen, cancels_seen) = (self.shutdown_seen, self.cancels_seen);
        let epoch_seen = self.epoch_seen;
        (
            Flagged {
                fired: move || handle.killed.load(Ordering::Acquire),
            },
            Flagged {
                fired: move || {
                    (!shutdown_seen && app.shutting_down.load(Ordering::Acquire))
                        || app.wake_epoch.load(Ordering::Acquire) != epoch_seen
                },
            },
            Flagged {
                fired: move || handle.cancel_signals.load(Ordering::Acquire) != cancels_seen,
            },
        )
    }

    /// Arm the shutdown wake-up again after it fired: it fires no more.
    pub(super) async fn rearm_shutdown(&mut self) {
        self.shutdown_seen = self.shutting_down();
        self.epoch_seen = self.app.wake_epoch.load(Ordering::SeqCst);
        self.shutdown.set(self.app.shutdown.notified());
        self.register().await;
    }

    /// Arm the cancel wake-up again after it fired: it fires at the next
    /// signal. The count is read before the new `Notified` waits, so a signal
    /// in between fires it.
    pub(super) async fn rearm_cancel(&mut self) {
        self.cancels_seen = self.handle.cancel_signals.load(Ordering::SeqCst);
        self.cancel.set(self.handle.wake.notified());
        self.register().await;
    }
}

/// Whether a cancel waits for the session: the states a cancel wakes it for
/// (`ClientHandle::request_cancel`).
fn cancel_pending(handle: &ClientHandle) -> bool {
    use crate::app::clients::cancel;
    matches!(
        handle.cancel.load(Ordering::SeqCst),
        cancel::CANCELED | cancel::UNREAD
    )
}

/// Make `n` wait among its `Notify`'s waiters with `cx`'s waker. A `Notified`
/// that is already done is no longer among them and would wake nobody: it is
/// made again until one waits. (A `Notify` keeps the permit of a `notify_one`
/// that found no waiter, and a `Notified` made after it is done at once; the
/// signal it stands for is in the flags, which the caller read first.)
fn wait_on<'n>(
    n: &mut Pin<&mut Notified<'n>>,
    cx: &mut Context<'_>,
    make: impl Fn() -> Notified<'n>,
) {
    n.as_mut().enable();
    while n.as_mut().poll(cx).is_ready() {
        n.set(make());
        n.as_mut().enable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// A wake-up made after a `notify_one` that found no waiter (a permit
    /// kept) is done at once; `wait_on` makes it again until one waits, and
    /// that one wakes the task at the next signal, never polled in between.
    #[tokio::test]
    async fn wait_on_leaves_a_waiting_wake_up_that_the_next_signal_wakes() {
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        let n = notify.notified();
        tokio::pin!(n);
        std::future::poll_fn(|cx| {
            wait_on(&mut n, cx, || notify.notified());
            Poll::Ready(())
        })
        .await;
        let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = signalled.clone();
        let fired = Flagged {
            fired: move || flag.load(Ordering::Acquire),
        };
        let (n2, f2) = (notify.clone(), signalled.clone());
        let notifier = tokio::spawn(async move {
            f2.store(true, Ordering::SeqCst);
            n2.notify_waiters();
        });
        // `fired` never registers a waker: only the one `wait_on` left can
        // wake this task for it.
        tokio::time::timeout(std::time::Duration::from_secs(10), fired)
            .await
            .expect("the waker left by wait_on was woken");
        notifier.await.unwrap();
        // The permit was used up: the one waiting is not done.
        std::future::poll_fn(|cx| {
            assert!(n.as_mut().poll(cx).is_ready(), "notified by notify_waiters");
            Poll::Ready(())
        })
        .await;
    }

    /// Without `wait_on`'s loop the wake-up would be done and out of the
    /// `Notify`'s waiters: the next signal would wake nobody (what the loop
    /// is for).
    #[tokio::test]
    async fn a_notified_made_after_a_kept_permit_is_done_at_once() {
        let notify = Notify::new();
        notify.notify_one();
        let n = notify.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        std::future::poll_fn(|cx| {
            assert!(n.as_mut().poll(cx).is_ready());
            Poll::Ready(())
        })
        .await;
    }
}
