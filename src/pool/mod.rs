//! Server pools keyed by (database, user, shard): checkout with limits and timeouts,
//! reserve pool, idle/lifetime expiry, min_pool_size warm-up, pause and reconnect.

use crate::config::PoolSettings;
use crate::server::{ServerConn, ServerError, Target};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Identity of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Database name clients connect to.
    pub database: String,
    /// Client user name.
    pub user: String,
    /// Shard name.
    pub shard: String,
}

/// Why a checkout failed.
#[derive(Debug, Clone)]
pub enum PoolError {
    /// Waited `query_wait_timeout` without getting a server.
    WaitTimeout,
    /// Could not connect within `server_connect_timeout`, or the server refused us.
    Connect(ServerError),
    /// The database is disabled (console DISABLE) or the pool was closed.
    Closed,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::WaitTimeout => {
                f.write_str("query_wait_timeout: no server connection became available")
            }
            PoolError::Connect(e) => write!(f, "{e}"),
            PoolError::Closed => f.write_str("database is disabled"),
        }
    }
}

/// Counters of one pool (atomics: updated by client tasks without locks).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Server assignments (checkouts).
    pub assignments: AtomicU64,
    /// Transactions completed.
    pub xact_count: AtomicU64,
    /// Queries (simple queries and Sync-terminated extended batches).
    pub query_count: AtomicU64,
    /// Bytes received from clients.
    pub bytes_received: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_sent: AtomicU64,
    /// Microseconds spent in transactions.
    pub xact_time_us: AtomicU64,
    /// Microseconds spent in queries.
    pub query_time_us: AtomicU64,
    /// Microseconds clients waited for a server.
    pub wait_time_us: AtomicU64,
    /// Client logins.
    pub login_count: AtomicU64,
    /// Parse messages from clients.
    pub client_parse_count: AtomicU64,
    /// Parse messages sent to servers (lazy re-prepares included).
    pub server_parse_count: AtomicU64,
    /// Bind messages from clients.
    pub bind_count: AtomicU64,
    /// Clients currently waiting for a server.
    pub waiting: AtomicUsize,
    /// Servers currently handed out.
    pub active: AtomicUsize,
    /// Servers currently connecting/logging in.
    pub connecting: AtomicUsize,
    /// Last connection error (for SHOW SHARDS), if the last attempt failed.
    pub last_error: Mutex<Option<String>>,
}

/// A pool of server connections for one (database, user, shard).
pub struct Pool {
    /// Identity.
    pub key: PoolKey,
    /// Where servers are.
    pub target: ArcSwap<Target>,
    /// Effective settings (swapped on reload).
    pub settings: ArcSwap<PoolSettings>,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// Current size the permits represent (to grow/shrink on reload).
    size: AtomicUsize,
    reserve_size: AtomicUsize,
    /// Number of open server connections (idle + active + connecting).
    pub total: AtomicUsize,
    /// Bumped by RECONNECT or a target change: older servers are closed when released.
    pub generation: AtomicU64,
    /// Parameters of the first server seen, sent to clients at login.
    pub server_params: Mutex<Option<crate::server::ParamSet>>,
    /// Counters.
    pub stats: PoolStats,
    /// PAUSE: no new checkouts while set.
    pub paused: AtomicBool,
    /// DISABLE / removed from config.
    pub disabled: AtomicBool,
    resume: Notify,
    /// Histogram handles, created on the first transaction (admin::metrics).
    pub metrics: std::sync::OnceLock<crate::admin::metrics::PoolMetrics>,
}

/// A server checked out of a pool. Give it back with [`Pool::checkin`].
pub struct Checkout {
    /// The connection.
    pub conn: ServerConn,
    permit: OwnedSemaphorePermit,
}

impl Pool {
    /// Create a pool.
    pub fn new(key: PoolKey, target: Target, settings: PoolSettings) -> Arc<Pool> {
        let size = settings.default_pool_size;
        let rsize = settings.reserve_pool_size;
        Arc::new(Pool {
            key,
            target: ArcSwap::from_pointee(target),
            settings: ArcSwap::from_pointee(settings),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            reserve: Arc::new(Semaphore::new(rsize)),
            size: AtomicUsize::new(size),
            reserve_size: AtomicUsize::new(rsize),
            total: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            server_params: Mutex::new(None),
            stats: PoolStats::default(),
            paused: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            resume: Notify::new(),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Apply new settings/target from a reload. A changed target closes old servers as
    /// they come back; size changes adjust the permits.
    pub fn update(&self, target: Target, settings: PoolSettings) {
        if **self.target.load() != target {
            self.target.store(Arc::new(target));
            self.reconnect();
        }
        resize(&self.permits, &self.size, settings.default_pool_size);
        resize(
            &self.reserve,
            &self.reserve_size,
            settings.reserve_pool_size,
        );
        self.settings.store(Arc::new(settings));
    }

    /// Close idle servers now and the active ones when they are released.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let drained: Vec<ServerConn> = std::mem::take(&mut *self.idle.lock().unwrap());
        for s in drained {
            self.close(s);
        }
    }

    /// Pause: running transactions finish, new checkouts wait.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Resume after a pause.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resume.notify_waiters();
    }

    /// Number of idle servers.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Visit the idle servers (console SHOW SERVERS); `f` runs under the idle lock.
    pub fn for_each_idle(&self, mut f: impl FnMut(&ServerConn)) {
        for c in self.idle.lock().unwrap().iter() {
            f(c);
        }
    }

    /// Take a server, waiting up to `query_wait_timeout`. Connects a new one when the
    /// pool has room, retrying until `server_connect_timeout`.
    pub async fn checkout(&self) -> Result<Checkout, PoolError> {
        let settings = self.settings.load_full();
        let start = Instant::now();
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let res = self.checkout_inner(&settings).await;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .wait_time_us
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        if res.is_ok() {
            self.stats.assignments.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    async fn checkout_inner(&self, settings: &PoolSettings) -> Result<Checkout, PoolError> {
        let wait = settings.query_wait_timeout.non_zero();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        // PAUSE holds new work here until RESUME.
        while self.paused.load(Ordering::Acquire) {
            let notified = self.resume.notified();
            if !self.paused.load(Ordering::Acquire) {
                break;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(PoolError::WaitTimeout);
                    }
                }
                None => notified.await,
            }
        }
        if self.disabled.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        let permit = self.acquire_permit(settings, deadline).await?;
        // Reuse an idle server if a healthy one is there (LIFO keeps caches warm).
        loop {
            let candidate = self.idle.lock().unwrap().pop();
            let Some(mut conn) = candidate else { break };
            if self.is_reusable(&mut conn, settings) {
                return Ok(Checkout { conn, permit });
            }
            self.close(conn);
        }
        let conn = self.connect(settings).await.map_err(PoolError::Connect)?;
        Ok(Checkout { conn, permit })
    }

    async fn acquire_permit(
        &self,
        settings: &PoolSettings,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<OwnedSemaphorePermit, PoolError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let main = self.permits.clone().acquire_owned();
        tokio::pin!(main);
        // After reserve_pool_timeout, the reserve pool may also serve this client.
        let reserve_at = tokio::time::Instant::now() + settings.reserve_pool_timeout.as_std();
        let use_reserve = settings.reserve_pool_size > 0;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let deadline_sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(deadline_sleep);
        let reserve_sleep = tokio::time::sleep_until(if use_reserve { reserve_at } else { far });
        tokio::pin!(reserve_sleep);
        let mut reserve_open = false;
        loop {
            let reserve_acq = async {
                if reserve_open {
                    self.reserve.clone().acquire_owned().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                p = &mut main => return p.map_err(|_| PoolError::Closed),
                p = reserve_acq => return p.map_err(|_| PoolError::Closed),
                _ = &mut reserve_sleep, if !reserve_open && use_reserve => reserve_open = true,
                _ = &mut deadline_sleep => return Err(PoolError::WaitTimeout),
            }
        }
    }

    fn is_reusable(&self, conn: &mut ServerConn, settings: &PoolSettings) -> bool {
        if conn.broken || conn.generation != self.generation.load(Ordering::Acquire) {
            return false;
        }
        if let Some(l) = settings.server_lifetime.non_zero() {
            if conn.created.elapsed() > l {
                return false;
            }
        }
        // A server terminated while idle has sent a FATAL error and closed: skip it.
        !conn.has_unexpected_input()
    }

    async fn connect(&self, settings: &PoolSettings) -> Result<ServerConn, ServerError> {
        let target = self.target.load_full();
        let limit = settings.server_connect_timeout.as_std();
        let deadline = Instant::now() + limit;
        self.stats.connecting.fetch_add(1, Ordering::Relaxed);
        let mut backoff = Duration::from_millis(50);
        let res = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ServerConn::connect(&target, left.max(Duration::from_millis(1))).await {
                Ok(mut c) => {
                    c.generation = self.generation.load(Ordering::Acquire);
                    break Ok(c);
                }
                Err(e) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !e.is_retryable() || left.is_zero() {
                        break Err(e);
                    }
                    // Retry backoff while a shard is down (product behaviour, not test sync).
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        };
        self.stats.connecting.fetch_sub(1, Ordering::Relaxed);
        match &res {
            Ok(c) => {
                self.total.fetch_add(1, Ordering::Relaxed);
                *self.stats.last_error.lock().unwrap() = None;
                let mut sp = self.server_params.lock().unwrap();
                if sp.is_none() {
                    *sp = Some(c.initial.clone());
                }
            }
            Err(e) => {
                tracing::warn!(pool = ?self.key, "server connection failed: {e}");
                *self.stats.last_error.lock().unwrap() = Some(e.to_string());
            }
        }
        res
    }

    /// Return a server. Broken, expired or stale-generation servers are closed.
    pub fn checkin(&self, mut c: Checkout) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let settings = self.settings.load();
        c.conn.last_used = Instant::now();
        let keep = !c.conn.broken
            && !self.disabled.load(Ordering::Acquire)
            && c.conn.generation == self.generation.load(Ordering::Acquire)
            && settings
                .server_lifetime
                .non_zero()
                .is_none_or(|l| c.conn.created.elapsed() <= l)
            && c.conn.rbuf.is_empty();
        if keep {
            self.idle.lock().unwrap().push(c.conn);
        } else {
            self.close(c.conn);
        }
        drop(c.permit);
    }

    /// Drop a server that is known bad (e.g. it died mid-transaction).
    pub fn discard(&self, c: Checkout) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.close(c.conn);
        drop(c.permit);
    }

    fn close(&self, conn: ServerConn) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        tokio::spawn(conn.terminate());
    }

    /// Periodic maintenance: expire idle servers and keep `min_pool_size` warm.
    pub async fn maintain(&self) {
        let settings = self.settings.load_full();
        let now = Instant::now();
        let expired: Vec<ServerConn> = {
            let mut idle = self.idle.lock().unwrap();
            let gen = self.generation.load(Ordering::Acquire);
            let mut keep = Vec::with_capacity(idle.len());
            let mut out = Vec::new();
            for mut c in idle.drain(..) {
                let idle_too_long = settings
                    .server_idle_timeout
                    .non_zero()
                    .is_some_and(|t| now.duration_since(c.last_used) > t);
                let too_old = settings
                    .server_lifetime
                    .non_zero()
                    .is_some_and(|t| c.created.elapsed() > t);
                let dead = c.broken || c.generation != gen || c.has_unexpected_input();
                if dead || too_old || idle_too_long {
                    out.push(c);
                } else {
                    keep.push(c);
                }
            }
            *idle = keep;
            out
        };
        for c in expired {
            self.close(c);
        }
        if self.disabled.load(Ordering::Acquire) || self.paused.load(Ordering::Acquire) {
            return;
        }
        // Warm up to min_pool_size (expired servers above are replaced by fresh ones).
        while self.total.load(Ordering::Relaxed) < settings.min_pool_size {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match self.connect(&settings).await {
                Ok(conn) => self.checkin_fresh(conn, permit),
                Err(_) => break,
            }
        }
    }

    fn checkin_fresh(&self, conn: ServerConn, permit: OwnedSemaphorePermit) {
        self.idle.lock().unwrap().push(conn);
        drop(permit);
    }

    /// Close everything (pool removed or disabled).
    pub fn close_all(&self) {
        self.disabled.store(true, Ordering::Release);
        self.reconnect();
    }
}

fn resize(sem: &Semaphore, size: &AtomicUsize, new: usize) {
    let old = size.swap(new, Ordering::AcqRel);
    if new > old {
        sem.add_permits(new - old);
    } else if new < old {
        // Shrinks what is free now; the rest shrinks as permits are returned... tokio
        // forgets only available permits, so the pool converges to the new size.
        sem.forget_permits(old - new);
    }
}

/// All pools of the process.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// Get or create the pool for `key`.
    pub fn get_or_create(
        &self,
        key: &PoolKey,
        make: impl FnOnce() -> (Target, PoolSettings),
    ) -> Arc<Pool> {
        let mut m = self.map.lock().unwrap();
        if let Some(p) = m.get(key) {
            return p.clone();
        }
        let (t, s) = make();
        let p = Pool::new(key.clone(), t, s);
        m.insert(key.clone(), p.clone());
        p
    }

    /// Snapshot of all pools, sorted by key.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let m = self.map.lock().unwrap();
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Remove pools for which `keep` is false, closing their servers.
    pub fn retain(&self, mut keep: impl FnMut(&PoolKey) -> bool) {
        let mut m = self.map.lock().unwrap();
        m.retain(|k, p| {
            let k2 = keep(k);
            if !k2 {
                p.close_all();
            }
            k2
        });
    }
}
