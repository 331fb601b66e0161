//! Bytes that all clients together may hold of one kind of per-client state
//! (statement text, session settings), so that many clients cannot do what
//! one may not.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A byte count shared by all clients, with its bound.
pub(super) struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes, none held.
    pub(super) const fn new(max: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Count `n` more bytes, or nothing and `false` when that would pass the
    /// bound.
    #[must_use]
    pub(super) fn hold(&self, n: usize) -> bool {
        let held = self.held.fetch_add(n, Ordering::Relaxed);
        if held + n > self.max {
            self.held.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Count `n` more bytes whatever the bound (what cannot be refused).
    pub(super) fn add(&self, n: usize) {
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes are no longer held.
    pub(super) fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn a_hold_past_the_bound_counts_nothing() {
        let b = Budget::new(10);
        assert!(b.hold(6));
        assert!(!b.hold(5));
        assert_eq!(b.held(), 6);
        assert!(b.hold(4));
        b.release(10);
        b.add(11);
        assert_eq!(b.held(), 11);
    }
}
