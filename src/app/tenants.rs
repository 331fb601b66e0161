//! Per-tenant statistics with bounded memory.
//!
//! The session calls [`TenantRegistry::record_transaction`] once per finished
//! transaction (and [`waiting_inc`](TenantRegistry::waiting_inc) /
//! [`waiting_dec`](TenantRegistry::waiting_dec) around a wait for a server). Entries are
//! kept in a few independently locked shards so concurrent sessions rarely contend;
//! each shard holds at most `cap / SHARDS` tenants and, when full, evicts the least
//! recently seen tenth in one go, so eviction costs O(1) amortised per insert.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Default number of tenants tracked.
pub const DEFAULT_CAPACITY: usize = 100_000;
const SHARDS: usize = 16;

/// Counters of one (database, tenant).
#[derive(Debug, Clone)]
pub struct TenantStats {
    /// Shard of the last transaction.
    pub shard: String,
    /// Transactions.
    pub xact_count: u64,
    /// Queries.
    pub query_count: u64,
    /// Microseconds spent in transactions.
    pub total_xact_time_us: u64,
    /// Clients of this tenant waiting for a server now.
    pub waiting: u64,
    /// Microseconds its clients spent waiting for a server (a full pool, the
    /// tenant's cap), in total.
    pub wait_time_us: u64,
    /// Last activity.
    pub last_seen: SystemTime,
    /// Recency stamp for eviction (monotonic, cheaper to compare than time).
    tick: u64,
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

/// database -> tenant -> stats (nested so lookups by `&str` allocate nothing).
#[derive(Default)]
struct Shard {
    dbs: HashMap<String, HashMap<String, TenantStats>>,
    len: usize,
}

/// Bounded registry of tenant statistics (a field of `App`).
pub struct TenantRegistry {
    shards: Vec<Mutex<Shard>>,
    per_shard_cap: usize,
    tick: AtomicU64,
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
        }
    }

    fn shard_of(&self, database: &str, tenant: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        database.hash(&mut h);
        tenant.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    fn with_entry(
        &self,
        database: &str,
        tenant: &str,
        shard: Option<&str>,
        f: impl FnOnce(&mut TenantStats),
    ) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut guard = self
            .shard_of(database, tenant)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &mut *guard;
        let touch = |e: &mut TenantStats| {
            if let Some(s) = shard {
                if e.shard != s {
                    e.shard = s.to_string();
                }
            }
            e.tick = tick;
            e.last_seen = SystemTime::now();
            f(e);
        };
        // The common case, a tenant already tracked: one lookup per level.
        if let Some(e) = m.dbs.get_mut(database).and_then(|t| t.get_mut(tenant)) {
            touch(e);
            return;
        }
        if m.len >= self.per_shard_cap {
            evict_oldest(m, self.per_shard_cap / 10 + 1);
        }
        m.len += 1;
        let e = m
            .dbs
            .entry(database.to_string())
            .or_default()
            .entry(tenant.to_string())
            .or_insert(TenantStats {
                shard: String::new(),
                xact_count: 0,
                query_count: 0,
                total_xact_time_us: 0,
                waiting: 0,
                wait_time_us: 0,
                last_seen: SystemTime::now(),
                tick,
            });
        touch(e);
    }

    /// Count one finished transaction of `tenant` in `database`, run on `shard`.
    pub fn record_transaction(
        &self,
        database: &str,
        tenant: &str,
        shard: &str,
        xact_us: u64,
        queries: u64,
    ) {
        self.with_entry(database, tenant, Some(shard), |e| {
            e.xact_count += 1;
            e.query_count += queries;
            e.total_xact_time_us += xact_us;
        });
    }

    /// A client of `tenant` starts waiting for a server.
    pub fn waiting_inc(&self, database: &str, tenant: &str) {
        self.with_entry(database, tenant, None, |e| e.waiting += 1);
    }

    /// The wait is over; it lasted `waited_us`.
    pub fn waiting_dec(&self, database: &str, tenant: &str, waited_us: u64) {
        let mut m = self
            .shard_of(database, tenant)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = m.dbs.get_mut(database).and_then(|t| t.get_mut(tenant)) {
            e.waiting = e.waiting.saturating_sub(1);
            e.wait_time_us += waited_us;
        }
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
            let all = m
                .dbs
                .iter()
                .flat_map(|(db, ts)| ts.iter().map(move |(t, e)| (db, t, e)));
            rows.extend(all.map(|(db, t, e)| TenantRow {
                database: db.clone(),
                tenant: t.clone(),
                shard: e.shard.clone(),
                xact_count: e.xact_count,
                query_count: e.query_count,
                total_xact_time_us: e.total_xact_time_us,
                waiting: e.waiting,
                wait_time_us: e.wait_time_us,
                last_seen: e.last_seen,
            }));
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
    let mut ticks: Vec<(bool, u64)> = m
        .dbs
        .values()
        .flat_map(|t| t.values())
        .map(|e| (e.waiting > 0, e.tick))
        .collect();
    let k = k.min(ticks.len());
    if k == 0 {
        return;
    }
    ticks.select_nth_unstable(k - 1);
    let cutoff = ticks[k - 1];
    let mut left = k;
    for t in m.dbs.values_mut() {
        t.retain(|_, e| {
            if left > 0 && (e.waiting > 0, e.tick) <= cutoff {
                left -= 1;
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
            r.record_transaction("app", "acme", "s1", 100, 2);
        }
        r.record_transaction("app", "globex", "s0", 1000, 1);
        r.record_transaction("other", "acme", "s0", 10, 1);
        r.waiting_inc("app", "globex");
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
        r.waiting_dec("app", "globex", 250);
        r.waiting_dec("app", "globex", 0);
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
            r.record_transaction("app", &format!("t{i}"), "s0", 1, 1);
            // A hot tenant that keeps being seen must never be evicted.
            r.record_transaction("app", "hot", "s0", 1, 1);
        }
        assert!(r.len() <= 1600, "{} tenants tracked", r.len());
        let top = r.top(1);
        assert_eq!(top[0].tenant, "hot");
        assert_eq!(top[0].xact_count, 20_000);
        // The most recent ordinary tenant is still there.
        assert!(r.top(2000).iter().any(|t| t.tenant == "t19999"));
    }
}
