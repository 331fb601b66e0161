//! Failed-login limiting per (source address, user), with a higher cap per address.
//!
//! Two counters see every failed login (wrong password or unknown user):
//!
//! * one per (address, user): `limit` failures within `window` block that user from
//!   that address for `cooldown`. Someone guessing `mallory`'s password from behind
//!   a NAT or a load balancer does not lock out `app` logging in from the same
//!   address;
//! * one per address, over all users: `address_limit` failures within `window`
//!   block the whole address for `cooldown`, so spraying guesses over many user
//!   names is stopped too.
//!
//! A blocked login is refused before any password check (a guesser learns nothing
//! and costs no SCRAM work). A successful login does not reset a counter: a
//! guesser sharing an address with a legitimate user must not get fresh attempts
//! every time that user logs in.
//!
//! Memory is bounded whatever an attacker does: user names are kept as keyed
//! 64-bit hashes (a startup packet may carry a 10 kB user name), and each table
//! holds at most [`MAX_ENTRIES`] entries. A full table first drops the entries that
//! no longer matter (window over, not blocked); if that is not enough, it drops
//! the least recently active quarter of the unblocked entries, and blocked ones only
//! when nothing else is left, soonest-to-expire first.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries each table (per user, per address) holds at most.
pub const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    last_seen: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            window_start: now,
            last_seen: now,
            blocked_until: None,
        }
    }

    fn blocked_at(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|u| u > now)
    }

    /// Count one failure; true if this one reaches `limit` (the entry is now blocked).
    fn fail(&mut self, limit: u32, window: Duration, cooldown: Duration, now: Instant) -> bool {
        self.last_seen = now;
        if now.saturating_duration_since(self.window_start) >= window {
            self.failures = 0;
            self.window_start = now;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= limit {
            self.blocked_until = Some(now + cooldown);
            self.failures = 0;
            self.window_start = now;
            true
        } else {
            false
        }
    }
}

/// A bounded map of counters.
#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Entry>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: usize) -> Self {
        Table {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn blocked(&self, k: &K, now: Instant) -> Option<Duration> {
        let until = self.map.get(k)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// The entry for `k`, making room first if the table is full.
    fn entry(&mut self, k: K, keep: Duration, now: Instant) -> &mut Entry {
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.make_room(keep, now);
        }
        self.map.entry(k).or_insert_with(|| Entry::new(now))
    }

    fn make_room(&mut self, keep: Duration, now: Instant) {
        // What no longer matters: not blocked, and its window is over.
        self.map.retain(|_, e| {
            e.blocked_at(now) || now.saturating_duration_since(e.window_start) < keep
        });
        if self.map.len() < self.cap {
            return;
        }
        // Still full (an attacker spraying keys): drop a quarter, so the sweep is
        // amortised. Unblocked entries go first, least recently active first; then
        // blocked ones, the soonest to expire first.
        let mut order: Vec<(bool, Instant, K)> = self
            .map
            .iter()
            .map(|(k, e)| match e.blocked_until.filter(|u| *u > now) {
                Some(u) => (true, u, k.clone()),
                None => (false, e.last_seen, k.clone()),
            })
            .collect();
        order.sort_unstable_by_key(|e| (e.0, e.1));
        let drop = (self.cap / 4).max(1).max(self.map.len() + 1 - self.cap);
        for (_, _, k) in order.into_iter().take(drop) {
            self.map.remove(&k);
        }
    }
}

#[derive(Debug)]
struct Tables {
    users: Table<(IpAddr, u64)>,
    addrs: Table<IpAddr>,
}

/// Failure counters per (address, user) and per address.
#[derive(Debug)]
pub struct FailureLimiter {
    tables: Mutex<Tables>,
    /// Keys the user-name hash, so nobody can pick names that collide.
    hasher: RandomState,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::with_capacity(MAX_ENTRIES)
    }
}

/// Limits in force (from `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures of one user from one address allowed within `window` (0 = unlimited).
    pub limit: u32,
    /// Failures of all users from one address allowed within `window` (0 = unlimited).
    pub address_limit: u32,
    /// Counting window.
    pub window: Duration,
    /// Block duration once a limit is reached.
    pub cooldown: Duration,
}

/// What a block applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This user from this address.
    User,
    /// Every user from this address.
    Address,
}

/// A refusal: what is blocked and for how much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// User or whole address.
    pub scope: Scope,
    /// Time left.
    pub left: Duration,
}

impl FailureLimiter {
    /// A limiter whose tables hold at most `cap` entries each.
    pub fn with_capacity(cap: usize) -> FailureLimiter {
        FailureLimiter {
            tables: Mutex::new(Tables {
                users: Table::new(cap),
                addrs: Table::new(cap),
            }),
            hasher: RandomState::new(),
        }
    }

    fn user_key(&self, ip: IpAddr, user: &str) -> (IpAddr, u64) {
        (ip, self.hasher.hash_one(user))
    }

    /// If `user` from `ip` may not log in right now, why and for how much longer
    /// (the address block first: it is the wider one).
    pub fn blocked(&self, ip: IpAddr, user: &str, now: Instant) -> Option<Block> {
        let key = self.user_key(ip, user);
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(left) = t.addrs.blocked(&ip, now) {
            return Some(Block {
                scope: Scope::Address,
                left,
            });
        }
        t.users.blocked(&key, now).map(|left| Block {
            scope: Scope::User,
            left,
        })
    }

    /// Count a failed login of `user` from `ip`; returns what it blocked, if it
    /// reached a limit (the address cap wins when both are reached at once).
    pub fn record_failure(
        &self,
        ip: IpAddr,
        user: &str,
        limits: Limits,
        now: Instant,
    ) -> Option<Scope> {
        if limits.limit == 0 && limits.address_limit == 0 {
            return None;
        }
        let key = self.user_key(ip, user);
        let keep = limits.window.max(limits.cooldown);
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut hit = None;
        if limits.limit > 0
            && t.users
                .entry(key, keep, now)
                .fail(limits.limit, limits.window, limits.cooldown, now)
        {
            hit = Some(Scope::User);
        }
        if limits.address_limit > 0
            && t.addrs.entry(ip, keep, now).fail(
                limits.address_limit,
                limits.window,
                limits.cooldown,
                now,
            )
        {
            hit = Some(Scope::Address);
        }
        hit
    }

    /// Entries held (per user, per address), for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        (t.users.map.len(), t.addrs.map.len())
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn lim(limit: u32, address_limit: u32) -> Limits {
        Limits {
            limit,
            address_limit,
            window: 10 * SEC,
            cooldown: 5 * SEC,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_the_guessed_user_only_and_unblocks_after_cooldown() {
        let l = FailureLimiter::default();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        assert_eq!(l.record_failure(a, "mallory", lim(3, 30), t0), None);
        assert_eq!(l.record_failure(a, "mallory", lim(3, 30), t0), None);
        assert!(l.blocked(a, "mallory", t0).is_none());
        assert_eq!(
            l.record_failure(a, "mallory", lim(3, 30), t0),
            Some(Scope::User)
        );
        let b = l.blocked(a, "mallory", t0 + SEC).unwrap();
        assert_eq!(b.scope, Scope::User);
        assert_eq!(b.left, 4 * SEC);
        // Another user from the same address, and the same user from another
        // address, are not affected.
        assert!(l.blocked(a, "app", t0 + SEC).is_none());
        assert!(l.blocked(ip("10.0.0.2"), "mallory", t0 + SEC).is_none());
        // User names are compared exactly.
        assert!(l.blocked(a, "Mallory", t0 + SEC).is_none());
        assert!(l.blocked(a, "mallory", t0 + 6 * SEC).is_none());
    }

    #[test]
    fn address_cap_blocks_every_user_of_the_address() {
        let l = FailureLimiter::default();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        for i in 0..9 {
            assert_eq!(l.record_failure(a, &format!("u{i}"), lim(3, 10), t0), None);
        }
        assert!(l.blocked(a, "app", t0).is_none());
        assert_eq!(
            l.record_failure(a, "u9", lim(3, 10), t0),
            Some(Scope::Address)
        );
        for user in ["app", "u0", "admin"] {
            assert_eq!(l.blocked(a, user, t0).unwrap().scope, Scope::Address);
        }
        assert!(l.blocked(ip("10.0.0.2"), "app", t0).is_none());
        assert!(l.blocked(a, "app", t0 + 5 * SEC).is_none());
    }

    #[test]
    fn window_expiry_resets_counts_and_zero_disables() {
        let l = FailureLimiter::default();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        let short = Limits {
            window: SEC,
            ..lim(2, 2)
        };
        assert_eq!(l.record_failure(a, "x", short, t0), None);
        assert_eq!(l.record_failure(a, "x", short, t0 + 2 * SEC), None);
        assert!(l.blocked(a, "x", t0 + 2 * SEC).is_none());
        // limit 0: no per-user limit, the address cap still counts.
        let b = ip("10.0.0.2");
        for i in 0..4 {
            let hit = l.record_failure(b, "y", lim(0, 5), t0 + 3 * SEC);
            assert_eq!(hit, None, "failure {i}");
        }
        assert_eq!(
            l.record_failure(b, "y", lim(0, 5), t0 + 3 * SEC),
            Some(Scope::Address)
        );
        // Both 0: nothing is counted or kept.
        let l = FailureLimiter::default();
        for _ in 0..100 {
            assert_eq!(l.record_failure(a, "z", lim(0, 0), t0), None);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn blocked_attempts_are_not_needed_to_keep_a_block() {
        // The caller does not count refused attempts; a block still ends on time.
        let l = FailureLimiter::default();
        let a = ip("::1");
        let t0 = Instant::now();
        for _ in 0..3 {
            l.record_failure(a, "m", lim(3, 30), t0);
        }
        assert!(l.blocked(a, "m", t0 + 4 * SEC).is_some());
        assert!(l.blocked(a, "m", t0 + 5 * SEC).is_none());
        // Counting starts afresh after the block.
        assert_eq!(l.record_failure(a, "m", lim(3, 30), t0 + 5 * SEC), None);
    }

    #[test]
    fn tables_stay_bounded_under_spraying_and_keep_blocks() {
        let l = FailureLimiter::with_capacity(100);
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        // A blocked user first.
        for _ in 0..3 {
            l.record_failure(a, "victim-guessed", lim(3, 0), t0);
        }
        // Then 10,000 sprayed user names and 10,000 addresses, one failure each.
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_millis(i as u64 / 10);
            l.record_failure(a, &format!("spray{i}"), lim(3, 0), t);
            let other = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.record_failure(other, "app", lim(3, 1_000_000), t);
        }
        let (users, addrs) = l.len();
        assert!(users <= 100 && addrs <= 100, "{users} {addrs}");
        // Unblocked entries were evicted before the blocked one.
        assert_eq!(
            l.blocked(a, "victim-guessed", t0 + SEC).map(|b| b.scope),
            Some(Scope::User)
        );
    }

    #[test]
    fn stale_entries_are_swept_before_live_ones() {
        let l = FailureLimiter::with_capacity(10);
        let t0 = Instant::now();
        for i in 0..10u8 {
            l.record_failure(IpAddr::from([10, 0, 0, i]), "u", lim(5, 0), t0);
        }
        // An hour later every old entry is stale: all go, nothing live is lost.
        let later = t0 + Duration::from_secs(3600);
        l.record_failure(ip("10.0.1.1"), "u", lim(5, 0), later);
        assert_eq!(l.len().0, 1);
    }

    #[test]
    fn long_user_names_cost_no_memory() {
        let l = FailureLimiter::default();
        let long = "x".repeat(10_000);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.record_failure(ip("10.0.0.1"), &long, lim(3, 0), t0);
        }
        assert!(l.blocked(ip("10.0.0.1"), &long, t0).is_some());
        assert!(std::mem::size_of::<(IpAddr, u64)>() <= 32);
    }
}
