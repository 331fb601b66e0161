//! Per-tenant statistics with bounded memory.
//!
//! The session calls [`TenantRegistry::record_transaction`] once per finished
//! transaction (and [`waiting_inc`](TenantRegistry::waiting_inc) around a wait
//! for a server). Entries are kept in a few independently locked shards so
//! concurrent sessions rarely contend; each shard holds at most `cap / SHARDS`
//! tenants and, when full, evicts the least recently seen tenth in one go, so
//! eviction costs O(1) amortised per insert.
//!
//! An entry's counters are atomics in a [`TenantCell`] that the registry shares
//! with the sessions counting into it: a wait that began with one lookup ends,
//! and the transaction after it is counted, without another (two locked lookups
//! of three fewer per transaction that waited for a server, on the routed
//! benchmark's hot path).

use super::clients::now_us;
use crate::router::keyed::KeyedMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default number of tenants tracked.
pub const DEFAULT_CAPACITY: usize = 100_000;
const SHARDS: usize = 16;

/// The counters of one (database, tenant), shared by the registry and the
/// sessions that count into it.
#[derive(Debug)]
pub struct TenantCell {
    /// The names, shared with the registry's keys (stored once).
    database: Arc<str>,
    tenant: Arc<str>,
    /// Shard of the last transaction (its own lock: a session that holds the
    /// cell writes it without the registry's).
    shard: Mutex<String>,
    xact_count: AtomicU64,
    query_count: AtomicU64,
    total_xact_time_us: AtomicU64,
    waiting: AtomicU64,
    wait_time_us: AtomicU64,
    /// Microseconds since the epoch of the last activity.
    last_seen_us: AtomicU64,
    /// Recency stamp for eviction (monotonic, cheaper to compare than time).
    tick: AtomicU64,
    /// Dropped from the registry: counts go to a new cell (looked up again).
    evicted: AtomicBool,
}

impl TenantCell {
    fn new(database: Arc<str>, tenant: Arc<str>, tick: u64) -> TenantCell {
        TenantCell {
            database,
            tenant,
            shard: Mutex::new(String::new()),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            total_xact_time_us: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            wait_time_us: AtomicU64::new(0),
            last_seen_us: AtomicU64::new(now_us()),
            tick: AtomicU64::new(tick),
            evicted: AtomicBool::new(false),
        }
    }

    /// Whether this is the live cell of `tenant` in `database`.
    fn is(&self, database: &str, tenant: &str) -> bool {
        !self.evicted.load(Ordering::Relaxed)
            && *self.tenant == *tenant
            && *self.database == *database
    }

    /// The wait for a server that began with [`TenantRegistry::waiting_inc`] is
    /// over; it lasted `waited_us`.
    pub fn waiting_dec(&self, waited_us: u64) {
        // Never below zero, whatever the order of events.
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.wait_time_us.fetch_add(waited_us, Ordering::Relaxed);
    }

    fn touch(&self, tick: u64) {
        self.tick.store(tick, Ordering::Relaxed);
        self.last_seen_us.store(now_us(), Ordering::Relaxed);
    }

    fn row(&self) -> TenantRow {
        TenantRow {
            database: self.database.to_string(),
            tenant: self.tenant.to_string(),
            shard: self
                .shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            xact_count: self.xact_count.load(Ordering::Relaxed),
            query_count: self.query_count.load(Ordering::Relaxed),
            total_xact_time_us: self.total_xact_time_us.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            wait_time_us: self.wait_time_us.load(Ordering::Relaxed),
            last_seen: UNIX_EPOCH
                + Duration::from_micros(self.last_seen_us.load(Ordering::Relaxed)),
        }
    }
}

/// One row of SHOW TENANTS / the tenant metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Database.
    pub database: String,
    /// Tenant key.
    pub tenant: String,
    /// Shard of the last transaction.
    pub shard: String,
    /// Transactions.
    pub xact_count: u64,
    /// Queries.
    pub query_count: u64,
    /// Microseconds in transactions.
    pub total_xact_time_us: u64,
    /// Clients waiting now.
    pub waiting: u64,
    /// Microseconds spent waiting for a server, in total.
    pub wait_time_us: u64,
    /// Last activity.
    pub last_seen: SystemTime,
}

impl TenantRow {
    /// Mean transaction time in microseconds.
    pub fn avg_xact_time_us(&self) -> u64 {
        self.total_xact_time_us
            .checked_div(self.xact_count)
            .unwrap_or(0)
    }
}

/// database -> tenant -> cell (nested so lookups by `&str` allocate nothing).
#[derive(Default)]
struct Shard {
    dbs: KeyedMap<Arc<str>, KeyedMap<Arc<str>, Arc<TenantCell>>>,
    len: usize,
}

/// Bounded registry of tenant statistics (a field of `App`).
pub struct TenantRegistry {
    shards: Vec<Mutex<Shard>>,
    per_shard_cap: usize,
    tick: AtomicU64,
    /// Picks a tenant's shard: keyed per process, so no client can crowd its
    /// tenants into one lock.
    spread: std::collections::hash_map::RandomState,
}

impl Default for TenantRegistry {
    fn default() -> Self {
        TenantRegistry::with_capacity(DEFAULT_CAPACITY)
    }
}

impl TenantRegistry {
    /// A registry tracking at most about `cap` tenants.
    pub fn with_capacity(cap: usize) -> TenantRegistry {
        TenantRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_cap: cap.div_ceil(SHARDS).max(1),
            tick: AtomicU64::new(1),
            spread: Default::default(),
        }
    }

    fn shard_of(&self, database: &str, tenant: &str) -> &Mutex<Shard> {
        let mut h = self.spread.build_hasher();
        h.write(database.as_bytes());
        h.write_u8(0xff);
        h.write(tenant.as_bytes());
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// The cell of `tenant` in `database` (created if new), stamped as seen
    /// now, after `f` ran on it under the shard's lock.
    fn with_cell(
        &self,
        database: &str,
        tenant: &str,
        f: impl FnOnce(&TenantCell),
    ) -> Arc<TenantCell> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut guard = self
            .shard_of(database, tenant)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &mut *guard;
        // The common case, a tenant already tracked: one lookup per level.
        let cell = match m.dbs.get(database).and_then(|t| t.get(tenant)) {
            Some(c) => c.clone(),
            None => {
                if m.len >= self.per_shard_cap {
                    evict_oldest(m, self.per_shard_cap / 10 + 1);
                }
                m.len += 1;
                let db: Arc<str> = match m.dbs.get_key_value(database) {
                    Some((k, _)) => k.clone(),
                    None => database.into(),
                };
                let tenant: Arc<str> = tenant.into();
                let c = Arc::new(TenantCell::new(db.clone(), tenant.clone(), tick));
                m.dbs.entry(db).or_default().insert(tenant, c.clone());
                c
            }
        };
        cell.touch(tick);
        f(&cell);
        cell
    }

    /// Count one finished transaction of `tenant` in `database`, run on
    /// `shard`. `known` is the tenant's cell if the session has it (from its
    /// wait for the server, or its last transaction): then there is no
    /// lookup. The cell used, for the session to keep.
    pub fn record_transaction(
        &self,
        known: Option<&Arc<TenantCell>>,
        database: &str,
        tenant: &str,
        shard: &str,
        xact_us: u64,
        queries: u64,
    ) -> Arc<TenantCell> {
        let count = |c: &TenantCell| {
            c.xact_count.fetch_add(1, Ordering::Relaxed);
            c.query_count.fetch_add(queries, Ordering::Relaxed);
            c.total_xact_time_us.fetch_add(xact_us, Ordering::Relaxed);
            let mut s = c
                .shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *s != shard {
                *s = shard.to_string();
            }
        };
        self.cell(known, database, tenant, count)
    }

    /// `known` if it is the live cell of `tenant` in `database` (no lookup),
    /// else the registry's; stamped as seen now, after `f` ran on it.
    fn cell(
        &self,
        known: Option<&Arc<TenantCell>>,
        database: &str,
        tenant: &str,
        f: impl FnOnce(&TenantCell),
    ) -> Arc<TenantCell> {
        match known {
            Some(c) if c.is(database, tenant) => {
                c.touch(self.tick.fetch_add(1, Ordering::Relaxed));
                f(c);
                c.clone()
            }
            _ => self.with_cell(database, tenant, f),
        }
    }

    /// A client of `tenant` starts waiting for a server: its cell, for
    /// [`TenantCell::waiting_dec`] when the wait is over. `known` as in
    /// [`TenantRegistry::record_transaction`].
    pub fn waiting_inc(
        &self,
        known: Option<&Arc<TenantCell>>,
        database: &str,
        tenant: &str,
    ) -> Arc<TenantCell> {
        self.cell(known, database, tenant, |c| {
            c.waiting.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Number of tenants tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len
            })
            .sum()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` busiest tenants: by transaction count, then total time, descending.
    pub fn top(&self, n: usize) -> Vec<TenantRow> {
        let mut rows: Vec<TenantRow> = Vec::new();
        for s in &self.shards {
            let m = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rows.extend(m.dbs.values().flat_map(|t| t.values()).map(|c| c.row()));
        }
        let by = |a: &TenantRow, b: &TenantRow| {
            b.xact_count
                .cmp(&a.xact_count)
                .then(b.total_xact_time_us.cmp(&a.total_xact_time_us))
                .then_with(|| (&a.database, &a.tenant).cmp(&(&b.database, &b.tenant)))
        };
        if rows.len() > n && n > 0 {
            rows.select_nth_unstable_by(n - 1, by);
            rows.truncate(n);
        } else if n == 0 {
            rows.clear();
        }
        rows.sort_by(by);
        rows
    }
}

/// Drop the `k` least recently seen entries (those with waiting clients last).
fn evict_oldest(m: &mut Shard, k: usize) {
    let key = |c: &TenantCell| {
        (
            c.waiting.load(Ordering::Relaxed) > 0,
            c.tick.load(Ordering::Relaxed),
        )
    };
    let mut ticks: Vec<(bool, u64)> = m
        .dbs
        .values()
        .flat_map(|t| t.values())
        .map(|c| key(c))
        .collect();
    let k = k.min(ticks.len());
    if k == 0 {
        return;
    }
    ticks.select_nth_unstable(k - 1);
    let cutoff = ticks[k - 1];
    let mut left = k;
    for t in m.dbs.values_mut() {
        t.retain(|_, c| {
            if left > 0 && key(c) <= cutoff {
                left -= 1;
                c.evicted.store(true, Ordering::Relaxed);
                false
            } else {
                true
            }
        });
    }
    m.dbs.retain(|_, t| !t.is_empty());
    m.len -= k - left;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_ranks() {
        let r = TenantRegistry::default();
        for _ in 0..3 {
            r.record_transaction(None, "app", "acme", "s1", 100, 2);
        }
        r.record_transaction(None, "app", "globex", "s0", 1000, 1);
        r.record_transaction(None, "other", "acme", "s0", 10, 1);
        let globex = r.waiting_inc(None, "app", "globex");
        let top = r.top(2);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].database.as_str(), top[0].tenant.as_str()),
            ("app", "acme")
        );
        assert_eq!(top[0].shard, "s1");
        assert_eq!(top[0].xact_count, 3);
        assert_eq!(top[0].query_count, 6);
        assert_eq!(top[0].total_xact_time_us, 300);
        assert_eq!(top[0].avg_xact_time_us(), 100);
        // Tie on count (1 each): more total time first.
        assert_eq!(top[1].tenant, "globex");
        assert_eq!(top[1].waiting, 1);
        globex.waiting_dec(250);
        globex.waiting_dec(0);
        assert_eq!(
            r.top(10)
                .iter()
                .find(|t| t.tenant == "globex")
                .unwrap()
                .waiting,
            0
        );
        assert_eq!(
            r.top(10)
                .iter()
                .find(|t| t.tenant == "globex")
                .unwrap()
                .wait_time_us,
            250
        );
        assert_eq!(r.top(10).len(), 3);
        assert!(r.top(0).is_empty());
    }

    #[test]
    fn memory_is_bounded_and_recent_tenants_survive() {
        let r = TenantRegistry::with_capacity(1600);
        for i in 0..20_000 {
            r.record_transaction(None, "app", &format!("t{i}"), "s0", 1, 1);
            // A hot tenant that keeps being seen must never be evicted.
            r.record_transaction(None, "app", "hot", "s0", 1, 1);
        }
        assert!(r.len() <= 1600, "{} tenants tracked", r.len());
        let top = r.top(1);
        assert_eq!(top[0].tenant, "hot");
        assert_eq!(top[0].xact_count, 20_000);
        // The most recent ordinary tenant is still there.
        assert!(r.top(2000).iter().any(|t| t.tenant == "t19999"));
    }

    #[test]
    fn a_known_cell_counts_without_a_lookup_until_it_is_evicted() {
        // Four tenants per shard: acme and globex both fit, wherever the
        // per-process key puts them.
        let r = TenantRegistry::with_capacity(64);
        let acme = r.waiting_inc(None, "app", "acme");
        acme.waiting_dec(5);
        r.record_transaction(Some(&acme), "app", "acme", "s0", 10, 1);
        // The cell of another tenant is not this one's.
        r.record_transaction(Some(&acme), "app", "globex", "s1", 10, 1);
        let row = |t: &str| r.top(100).into_iter().find(|x| x.tenant == t);
        assert_eq!(
            row("acme").map(|x| (x.xact_count, x.wait_time_us)),
            Some((1, 5))
        );
        assert_eq!(row("globex").map(|x| x.xact_count), Some(1));
        // Newer tenants push acme, the least recently seen, out.
        for i in 0..10_000 {
            r.record_transaction(None, "app", &format!("t{i}"), "s0", 1, 1);
        }
        assert!(row("acme").is_none(), "evicted");
        assert!(acme.evicted.load(Ordering::Relaxed));
        // What the session counts into its old cell is not lost.
        r.record_transaction(Some(&acme), "app", "acme", "s0", 10, 1);
        assert_eq!(row("acme").map(|x| x.xact_count), Some(1));
    }
}
