//! State the admin console controls and keeps across reloads: DISABLEd and PAUSEd
//! databases, the shutdown drain, and the SHOW STATS averages. Read at login by
//! the client task; written by the console and the admin task.

use crate::pool::PoolStats;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Console-controlled state that outlives pools and reloads.
pub struct AdminState {
    /// Databases refused at login (DISABLE / ENABLE).
    disabled: Mutex<HashSet<String>>,
    /// Databases paused by name (so SHOW DATABASES can say so even with no pool yet).
    paused: Mutex<HashSet<String>>,
    /// PAUSE without a database is in effect.
    pub paused_all: AtomicBool,
    /// SHUTDOWN WAIT_FOR_CLIENTS (or SIGUSR2): the process leaves once its
    /// clients have. New logins are refused, or, with `[listen] so_reuseport`,
    /// the listener is closed so that they reach the other process on the port.
    pub draining: AtomicBool,
    /// Told when a drain starts: the accept loop closes a shared listener, the
    /// metrics port lets its address go.
    pub drain_started: tokio::sync::Notify,
    /// PgBouncer-style averages over the last `stats_period`.
    averages: Mutex<Averages>,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            disabled: Mutex::default(),
            paused: Mutex::default(),
            paused_all: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            averages: Mutex::default(),
        }
    }
}

impl AdminState {
    /// Wait until a drain has started (registered before the flag is looked
    /// at, so a drain cannot slip between the two).
    pub async fn drained(&self) {
        super::until_raised(&self.drain_started, &self.draining).await
    }

    /// Whether new logins to `db` are refused.
    pub fn is_disabled(&self, db: &str) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(db)
    }

    /// DISABLE (true) / ENABLE (false) a database.
    pub fn set_disabled(&self, db: &str, on: bool) {
        let mut s = self
            .disabled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            s.insert(db.to_string());
        } else {
            s.remove(db);
        }
    }

    /// Whether `db` was paused by name.
    pub fn is_paused(&self, db: &str) -> bool {
        self.paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(db)
    }

    /// PAUSE (true) / RESUME (false) `db` by name.
    pub fn set_paused(&self, db: &str, on: bool) {
        let mut s = self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            s.insert(db.to_string());
        } else {
            s.remove(db);
        }
    }

    /// Forget the PAUSE and DISABLE of databases the configuration no longer
    /// has (`keep` says which it has): RESUME and ENABLE cannot name them,
    /// and one added back came back paused or refusing logins, with nothing
    /// to undo it while it was gone (probe KK). PgBouncer forgets them too.
    pub fn forget_databases(&self, keep: impl Fn(&str) -> bool) {
        for set in [&self.paused, &self.disabled] {
            set.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|db| keep(db));
        }
    }

    /// The SHOW STATS averages (updated once per `stats_period` by the admin task).
    pub fn averages(&self) -> MutexGuard<'_, Averages> {
        self.averages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters of one database (summed over its pools), in PgBouncer's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbTotals {
    /// server_assignment_count
    pub assignments: u64,
    /// xact_count
    pub xact: u64,
    /// query_count
    pub query: u64,
    /// bytes received from clients
    pub received: u64,
    /// bytes sent to clients
    pub sent: u64,
    /// xact_time (us)
    pub xact_time: u64,
    /// query_time (us)
    pub query_time: u64,
    /// wait_time (us)
    pub wait_time: u64,
    /// client_login_count
    pub logins: u64,
    /// client_parse_count
    pub client_parses: u64,
    /// server_parse_count
    pub server_parses: u64,
    /// bind_count
    pub binds: u64,
}

impl DbTotals {
    /// Add one pool's counters.
    pub fn add(&mut self, st: &PoolStats) {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        self.assignments += l(&st.assignments);
        self.xact += l(&st.xact_count);
        self.query += l(&st.query_count);
        self.received += l(&st.bytes_received);
        self.sent += l(&st.bytes_sent);
        self.xact_time += l(&st.xact_time_us);
        self.query_time += l(&st.query_time_us);
        self.wait_time += l(&st.wait_time_us);
        self.logins += l(&st.login_count);
        self.client_parses += l(&st.client_parse_count);
        self.server_parses += l(&st.server_parse_count);
        self.binds += l(&st.bind_count);
    }

    /// The 12 values in PgBouncer's column order.
    pub fn values(&self) -> [u64; 12] {
        [
            self.assignments,
            self.xact,
            self.query,
            self.received,
            self.sent,
            self.xact_time,
            self.query_time,
            self.wait_time,
            self.client_parses,
            self.server_parses,
            self.binds,
            self.logins,
        ]
    }
}

/// Averages over the last complete `stats_period` window, per database.
#[derive(Debug, Default)]
pub struct Averages {
    last: Option<(Instant, BTreeMap<String, DbTotals>)>,
    avg: BTreeMap<String, DbTotals>,
}

impl Averages {
    /// Take a sample of the totals `cur` at `now`: averages become per-second rates
    /// (counts, bytes, wait time) and per-transaction / per-query means (xact_time,
    /// query_time) since the previous sample, as PgBouncer computes.
    pub fn sample(&mut self, now: Instant, cur: BTreeMap<String, DbTotals>) {
        if let Some((t0, old)) = &self.last {
            let secs = now.duration_since(*t0).as_secs_f64().max(1e-3);
            let mut avg = BTreeMap::new();
            for (db, c) in &cur {
                let o = old.get(db).copied().unwrap_or_default();
                let rate = |x: u64, y: u64| (x.saturating_sub(y) as f64 / secs).round() as u64;
                let per = |x: u64, y: u64, n: u64| x.saturating_sub(y).checked_div(n).unwrap_or(0);
                let xacts = c.xact.saturating_sub(o.xact);
                let queries = c.query.saturating_sub(o.query);
                avg.insert(
                    db.clone(),
                    DbTotals {
                        assignments: rate(c.assignments, o.assignments),
                        xact: rate(c.xact, o.xact),
                        query: rate(c.query, o.query),
                        received: rate(c.received, o.received),
                        sent: rate(c.sent, o.sent),
                        xact_time: per(c.xact_time, o.xact_time, xacts),
                        query_time: per(c.query_time, o.query_time, queries),
                        wait_time: rate(c.wait_time, o.wait_time),
                        logins: rate(c.logins, o.logins),
                        client_parses: rate(c.client_parses, o.client_parses),
                        server_parses: rate(c.server_parses, o.server_parses),
                        binds: rate(c.binds, o.binds),
                    },
                );
            }
            self.avg = avg;
        }
        self.last = Some((now, cur));
    }

    /// The averages of `db` (zero until two samples were taken).
    pub fn get(&self, db: &str) -> DbTotals {
        self.avg.get(db).copied().unwrap_or_default()
    }
}
