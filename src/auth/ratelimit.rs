//! Failed-login limiting per source address.
//!
//! Each address may fail `limit` times within `window`; the next failure blocks it for
//! `cooldown`, during which its logins are refused before any password check (so a
//! guesser learns nothing and costs us no SCRAM work). The table is bounded: when it
//! grows large, entries that no longer matter are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Per-address failure counters.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    map: Mutex<HashMap<IpAddr, Entry>>,
}

/// Limits in force (from `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed within `window` (0 = unlimited).
    pub limit: u32,
    /// Counting window.
    pub window: Duration,
    /// Block duration once the limit is exceeded.
    pub cooldown: Duration,
}

impl FailureLimiter {
    /// If `ip` is blocked right now, how much longer.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let until = map.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Count a failure; returns true if `ip` is now blocked.
    pub fn record_failure(&self, ip: IpAddr, limits: Limits, now: Instant) -> bool {
        if limits.limit == 0 {
            return false;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            let keep = limits.window.max(limits.cooldown);
            map.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(e.window_start) < keep
            });
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.window_start) >= limits.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= limits.limit {
            e.blocked_until = Some(now + limits.cooldown);
            e.failures = 0;
            e.window_start = now;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_and_unblocks_after_cooldown() {
        let l = FailureLimiter::default();
        let lim = Limits {
            limit: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(!l.record_failure(ip, lim, t0));
        assert!(!l.record_failure(ip, lim, t0));
        assert!(l.blocked(ip, t0).is_none());
        assert!(l.record_failure(ip, lim, t0));
        assert!(l.blocked(ip, t0 + Duration::from_secs(1)).is_some());
        assert!(l.blocked(other, t0).is_none());
        assert!(l.blocked(ip, t0 + Duration::from_secs(6)).is_none());
    }

    #[test]
    fn window_expiry_resets_count_and_zero_disables() {
        let l = FailureLimiter::default();
        let lim = Limits {
            limit: 2,
            window: Duration::from_secs(1),
            cooldown: Duration::from_secs(5),
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!l.record_failure(ip, lim, t0));
        assert!(!l.record_failure(ip, lim, t0 + Duration::from_secs(2)));
        let off = Limits { limit: 0, ..lim };
        for _ in 0..10 {
            assert!(!l.record_failure(ip, off, t0));
        }
    }
}
