//! Server pools keyed by (database, user, shard): checkout with limits and timeouts,
//! reserve pool, idle/lifetime expiry, min_pool_size warm-up, pause and reconnect.

mod cap;
pub mod fair;
pub mod listen;

use crate::config::PoolSettings;
use crate::router::TenantKey;
use crate::server::{ServerConn, ServerError, Target};
use arc_swap::ArcSwap;
pub use cap::ConnCap;
use cap::Slots;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Checkouts that moved a server to the taking client's worker thread
    /// (`[limits] workers` above 1; each costs a few system calls).
    pub worker_moves: AtomicU64,
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
    /// Most clients waiting at once since the maintenance task last looked
    /// (a burst of transactions: memory to give back once it is over).
    pub waiting_peak: AtomicUsize,
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
    /// Boxed, as in [`Checkout`]: a server moves in and out by pointer.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// `default_pool_size`: servers handed out at once.
    main: Limit,
    /// `reserve_pool_size`: more servers, for clients that waited `reserve_pool_timeout`.
    reserve: Limit,
    /// Number of open server connections (idle + active + connecting).
    pub total: AtomicUsize,
    /// Bumped by RECONNECT or a target change: older servers are closed when released.
    pub generation: AtomicU64,
    /// Parameters of the first server seen, sent to clients at login. Shared:
    /// each client keeps what it was told (see `ServerState::sync_statement`).
    pub server_params: Mutex<Option<Arc<crate::server::ParamSet>>>,
    /// When the last connection attempt failed, and why (`None` once one
    /// succeeds): clients that were already waiting then get that error at
    /// once instead of each trying for `server_connect_timeout` in turn.
    connect_failed: Mutex<Option<(tokio::time::Instant, ServerError)>>,
    /// Counters.
    pub stats: PoolStats,
    /// PAUSE: no new checkouts while set.
    pub paused: AtomicBool,
    /// DISABLE / removed from config.
    pub disabled: AtomicBool,
    resume: Notify,
    /// Told when the generation moves on (a new target, RECONNECT): a
    /// connection attempt still at the old target gives up and tries the new.
    moved_on: Notify,
    /// Histogram handles, installed by the metrics exporter on the pool's first
    /// transaction (`admin::metrics`); the pool only keeps them.
    pub metrics: OnceLock<PoolMetrics>,
    /// The LISTEN relay of this pool, started by its first listening client.
    listener: OnceLock<listen::Listener>,
    /// The shared caps this pool's connections count against: its database's
    /// on this shard (`max_db_connections`) and its user's on this server
    /// (`max_user_connections`). Set by [`Pools`] when the pool is made.
    caps: OnceLock<[Arc<ConnCap>; 2]>,
    /// Who waits for a server, lane by lane, and each tenant's servers out
    /// (round-robin across tenants, per-tenant caps: see [`fair`]).
    pub fair: Arc<fair::Fair>,
}

/// Histogram handles of one pool, made by whoever exports metrics and kept here so
/// that recording a transaction does no registry lookup.
pub struct PoolMetrics {
    /// Transaction durations, in seconds.
    pub xact: metrics::Histogram,
    /// Query durations, in seconds.
    pub query: metrics::Histogram,
}

/// A server checked out of a pool. Give it back with [`Pool::checkin`].
pub struct Checkout {
    /// The connection. Boxed, here and in the idle list, because a checkout
    /// passes by value through half a dozen calls and futures each way: at
    /// 320 bytes, each of those moves was a `memcpy`, a tenth of the pooler's
    /// instructions per `pgbench -S` transaction (callgrind), against one
    /// allocation per server connection.
    pub conn: Box<ServerConn>,
    permit: OwnedSemaphorePermit,
    /// Whether `permit` is one of the reserve pool's.
    from_reserve: bool,
    /// The tenant it was checked out for (its count goes down at check-in).
    tenant: Option<TenantKey>,
}

/// What a wait under a full shared cap ends with.
enum Room<'a> {
    /// Slots for a new connection.
    Slots(Slots<'a>),
    /// A server of this pool that came back idle meanwhile.
    Idle(Box<ServerConn>),
}

/// A client counted as waiting for a server, and its wait timed, until dropped.
struct Waiting<'a> {
    stats: &'a PoolStats,
    start: Instant,
}

impl<'a> Waiting<'a> {
    fn start(stats: &'a PoolStats) -> Waiting<'a> {
        let n = stats.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        // A plain load first: the peak is rarely passed, and a read-modify-write
        // on every checkout would cost more than the bookkeeping is worth.
        if n > stats.waiting_peak.load(Ordering::Relaxed) {
            stats.waiting_peak.fetch_max(n, Ordering::Relaxed);
        }
        Waiting {
            stats,
            start: crate::net::clock::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats.wait_time_us.fetch_add(
            crate::net::clock::since(self.start).as_micros() as u64,
            Ordering::Relaxed,
        );
    }
}

/// A permit taken for a checkout in progress: handed to the [`Checkout`], or
/// given back to its pool if the checkout fails or is dropped.
struct Held<'a> {
    pool: &'a Pool,
    permit: Option<OwnedSemaphorePermit>,
    from_reserve: bool,
    tenant: Option<TenantKey>,
}

impl Held<'_> {
    fn hand_out(&mut self, conn: Box<ServerConn>) -> Checkout {
        Checkout {
            conn,
            permit: self
                .permit
                .take()
                .expect("a held permit is handed out once"),
            from_reserve: self.from_reserve,
            tenant: self.tenant,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.pool.release(p, self.from_reserve, self.tenant);
        }
    }
}

/// A resizable cap on the servers handed out at once: a semaphore whose size can
/// shrink while its permits are held. A shrink removes the free permits at once and
/// owes the rest; a permit given back while something is owed is removed instead of
/// freed (so no waiting client gets it), and the cap converges to the new size as
/// servers come back.
struct Limit {
    sem: Arc<Semaphore>,
    /// The size the permits represent once nothing is owed.
    size: AtomicUsize,
    /// Permits still to remove, from those held by clients now.
    owed: AtomicUsize,
}

impl Limit {
    fn new(size: usize) -> Limit {
        Limit {
            sem: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            owed: AtomicUsize::new(0),
        }
    }

    fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    fn resize(&self, new: usize) {
        let old = self.size.swap(new, Ordering::AcqRel);
        if new > old {
            let grow = new - old;
            // What is still owed has not been removed yet: cancel that first.
            let owed = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d - d.min(grow))
                })
                .unwrap_or(0);
            self.sem.add_permits(grow - owed.min(grow));
        } else if new < old {
            let shrink = old - new;
            // tokio removes only available permits: owe the rest.
            let removed = self.sem.forget_permits(shrink);
            self.owed.fetch_add(shrink - removed, Ordering::AcqRel);
            self.settle();
        }
    }

    /// Remove owed permits that are free now: one may have been given back while
    /// the debt was being recorded (called after a shrink and by maintenance).
    fn settle(&self) {
        let owed = self.owed.swap(0, Ordering::AcqRel);
        if owed > 0 {
            let removed = self.sem.forget_permits(owed);
            self.owed.fetch_add(owed - removed, Ordering::AcqRel);
        }
    }

    /// A permit given back: removed if a shrink is owed, else returned, for
    /// the caller to hand on.
    fn release(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let mut owed = self.owed.load(Ordering::Acquire);
        while owed > 0 {
            match self.owed.compare_exchange_weak(
                owed,
                owed - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    permit.forget();
                    return None;
                }
                Err(now) => owed = now,
            }
        }
        Some(permit)
    }
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
            main: Limit::new(size),
            reserve: Limit::new(rsize),
            total: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            server_params: Mutex::new(None),
            connect_failed: Mutex::new(None),
            stats: PoolStats::default(),
            paused: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            resume: Notify::new(),
            moved_on: Notify::new(),
            metrics: OnceLock::new(),
            listener: OnceLock::new(),
            caps: OnceLock::new(),
            fair: Arc::default(),
        })
    }

    /// Change a client's LISTEN registrations with this pool's relay (started
    /// on first use; see [`listen`]).
    pub fn listen(self: &Arc<Self>, cmd: listen::ListenCmd) {
        self.listener
            .get_or_init(|| listen::Listener::start(self))
            .send(cmd);
    }

    /// Set the limits of this pool's shared caps (reload, console SET).
    pub fn set_cap_limits(&self, db: usize, user: usize) {
        if let Some([d, u]) = self.caps.get() {
            d.set_limit(db);
            u.set_limit(user);
            self.shed_idle();
        }
    }

    /// Give up a server's slot in each shared cap above its lowered limit
    /// ([`ConnCap::shed`]): which caps gave one, `None` if none did (the
    /// server may stay).
    fn shed_slots(&self) -> Option<[bool; 2]> {
        let [d, u] = self.caps.get()?;
        Some([d.shed(), u.shed()]).filter(|g| g.contains(&true))
    }

    /// Close idle servers (coldest first) while a shared cap is above its
    /// limit: lowered, it left the idle ones open until they aged out (probe
    /// X); busy ones are shed as they come back (see [`Pool::checkin`]).
    fn shed_idle(&self) {
        let Some([d, u]) = self.caps.get() else {
            return;
        };
        loop {
            let conn = {
                let mut idle = self
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if idle.is_empty() || !(d.is_over() || u.is_over()) {
                    return;
                }
                idle.remove(0)
            };
            let Some(given) = self.shed_slots() else {
                // No longer over (another pool shed meanwhile): keep it.
                self.idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(0, conn);
                return;
            };
            self.close_with(conn, given, ServerConn::terminate);
        }
    }

    /// The shared caps: (database cap, user cap), if any.
    pub fn caps(&self) -> Option<(&ConnCap, &ConnCap)> {
        self.caps.get().map(|[d, u]| (d.as_ref(), u.as_ref()))
    }

    /// Take a slot of every cap now, if there is one in each.
    fn try_take_slots(&self) -> Option<Slots<'_>> {
        let Some(caps) = self.caps.get() else {
            return Some(Slots::none());
        };
        ConnCap::try_take_all(caps).then(|| Slots::taken(caps))
    }

    /// Reuse an idle server if a healthy one is there: the most recently used of
    /// those registered with the calling worker, else the most recently used of
    /// all, moved to this worker (LIFO keeps caches warm; the preference keeps a
    /// server's messages on one thread).
    fn pop_idle(&self, settings: &PoolSettings) -> Option<Box<ServerConn>> {
        loop {
            let candidate = {
                let mut idle = self
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let here = crate::net::worker();
                match idle.iter().rposition(|c| c.home == here) {
                    Some(i) => Some(idle.remove(i)),
                    None => idle.pop(),
                }
            };
            let mut conn = candidate?;
            // Checked before the move: a socket's readiness is known to the event
            // loop it is registered with, not yet to the new one.
            if self.is_reusable(&mut conn, settings) {
                if conn.is_home() {
                    return Some(conn);
                }
                match conn.rehome() {
                    Ok(()) => {
                        self.stats.worker_moves.fetch_add(1, Ordering::Relaxed);
                        return Some(conn);
                    }
                    Err(e) => {
                        tracing::warn!("server {}: cannot move it to this worker: {e}", conn.id)
                    }
                }
            }
            self.close(conn);
        }
    }

    /// Wait for a slot of every cap: close another pool's idle connection to
    /// make room, else wait for one to free (or for one of this pool's servers to
    /// come back idle: it is taken instead), until `deadline`.
    async fn wait_slots(
        &self,
        settings: &PoolSettings,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Room<'_>, PoolError> {
        let Some(caps) = self.caps.get() else {
            return Ok(Room::Slots(Slots::none()));
        };
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let timeout = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(timeout);
        loop {
            // Registered before looking, so a slot freed in between is not missed.
            let (a, b) = (caps[0].freed(), caps[1].freed());
            tokio::pin!(a, b);
            a.as_mut().enable();
            b.as_mut().enable();
            if let Some(conn) = self.pop_idle(settings) {
                return Ok(Room::Idle(conn));
            }
            if let Some(s) = self.try_take_slots() {
                return Ok(Room::Slots(s));
            }
            // An evicted server's slot comes back once its backend is gone
            // (see `close`): wait for that, as for any freed slot, rather than
            // evict another.
            let _evicted = caps.iter().any(|c| c.is_full() && c.evict_idle(self));
            if self.disabled.load(Ordering::Acquire) {
                return Err(PoolError::Closed);
            }
            tokio::select! {
                _ = a => {}
                _ = b => {}
                _ = &mut timeout => return Err(PoolError::WaitTimeout),
            }
        }
    }

    /// Close the longest-idle connection, if any (room for another pool under
    /// a shared cap); whether one was closed.
    pub fn close_one_idle(&self) -> bool {
        let conn = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.is_empty() {
                return false;
            }
            idle.remove(0)
        };
        self.close(conn);
        true
    }

    /// Apply new settings/target from a reload. A changed target closes old servers as
    /// they come back; size changes adjust the permits, and after a shrink the servers
    /// beyond the new size are closed (idle ones now, busy ones when they come back).
    pub fn update(&self, target: Target, settings: PoolSettings) {
        if **self.target.load() != target {
            self.target.store(Arc::new(target));
            // The last failure was the old target's: clients that come now
            // try the new one rather than get that error (probe O).
            *self
                .connect_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            self.reconnect();
        }
        self.main.resize(settings.default_pool_size);
        self.fair.grew(&self.main.sem);
        self.reserve.resize(settings.reserve_pool_size);
        self.settings.store(Arc::new(settings));
        self.trim_idle();
    }

    /// Servers this pool may keep open: its size plus its reserve.
    fn capacity(&self) -> usize {
        self.main.size() + self.reserve.size()
    }

    /// Close idle servers (oldest first) while more servers are open than the pool
    /// may keep (after a shrink).
    fn trim_idle(&self) {
        let surplus: Vec<Box<ServerConn>> = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let over = self
                .total
                .load(Ordering::Relaxed)
                .saturating_sub(self.capacity());
            let n = over.min(idle.len());
            // LIFO reuse takes from the end: the front has the coldest servers.
            idle.drain(..n).collect()
        };
        for s in surplus {
            self.close(s);
        }
    }

    /// Every permit given back comes here: the tenant's count goes down, and a
    /// main-pool permit goes to the next waiter in the fair order.
    fn release(&self, permit: OwnedSemaphorePermit, from_reserve: bool, tenant: Option<TenantKey>) {
        if from_reserve {
            drop(self.reserve.release(permit));
            self.fair.release(tenant, None, &self.main.sem);
        } else {
            let p = self.main.release(permit);
            self.fair.release(tenant, p, &self.main.sem);
        }
    }

    /// Close idle servers now and the active ones when they are released.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.moved_on.notify_waiters();
        if let Some(l) = self.listener.get() {
            // The LISTEN relay follows (a new target, console RECONNECT).
            l.send(listen::ListenCmd::Reconnect);
        }
        let drained: Vec<Box<ServerConn>> = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
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
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Visit the idle servers (console SHOW SERVERS); `f` runs under the idle lock.
    pub fn for_each_idle(&self, mut f: impl FnMut(&ServerConn)) {
        for c in self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            f(c);
        }
    }

    /// Take a server, waiting up to `query_wait_timeout`. Connects a new one when the
    /// pool has room, retrying until `server_connect_timeout`.
    ///
    /// Cancel-safe: a client whose query is cancelled while it waits drops this
    /// future, and nothing is left counted or held.
    ///
    /// `who`: the tenant the server is for, and its cap (see [`fair`]): a full
    /// pool serves its waiting tenants in turn, and a tenant at its cap waits.
    pub async fn checkout(&self, who: fair::For) -> Result<Checkout, PoolError> {
        let settings = self.settings.load_full();
        let waiting = Waiting::start(&self.stats);
        let res = self.checkout_inner(&settings, who).await;
        drop(waiting);
        if res.is_ok() {
            self.stats.assignments.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// An idle server at once, or `None` when [`Self::checkout`] would have to
    /// wait, connect, or refuse (PAUSE, a disabled pool): the caller then
    /// takes that path. No await, so the common checkout allocates no future;
    /// it took no place in line, so the slow path loses nothing by it.
    pub fn try_checkout(&self, who: fair::For) -> Option<Checkout> {
        if self.paused.load(Ordering::Acquire) || self.disabled.load(Ordering::Acquire) {
            return None;
        }
        let permit = self.fair.try_admit(&self.main.sem, who)?;
        // Given back (to the next waiter first) if no idle server is there.
        let mut held = Held {
            pool: self,
            permit: Some(permit),
            from_reserve: false,
            tenant: who.map(|(t, _)| t),
        };
        let conn = self.pop_idle(&self.settings.load())?;
        self.stats.assignments.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        Some(held.hand_out(conn))
    }

    async fn checkout_inner(
        &self,
        settings: &PoolSettings,
        who: fair::For,
    ) -> Result<Checkout, PoolError> {
        let started = tokio::time::Instant::from_std(crate::net::clock::now());
        let wait = settings.query_wait_timeout.non_zero();
        let deadline = wait.map(|w| started + w);
        // The slow paths (PAUSE, a full pool, a new connection) are boxed: their
        // futures are large, and inline they would make every client's task, idle
        // ones included, that much bigger.
        if self.paused.load(Ordering::Acquire) {
            Box::pin(self.wait_resumed(deadline)).await?;
        }
        if self.disabled.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        // (Not boxed: a client that waits here is in a boxed future already,
        // the session's `attach`, and a second allocation per wait cost about
        // 500 instructions per `pgbench -S` transaction at 100 clients.)
        let (permit, from_reserve) = match self.fair.admit(&self.main.sem, who) {
            fair::Admit::Now(p) => (p, false),
            fair::Admit::Wait(w) => self.acquire_permit(settings, deadline, w).await?,
        };
        // Given back through `release` (which honours a pending shrink and
        // serves the next waiter) however this future ends, dropped mid-connect
        // included.
        let mut held = Held {
            pool: self,
            permit: Some(permit),
            from_reserve,
            tenant: who.map(|(t, _)| t),
        };
        if let Some(conn) = self.pop_idle(settings) {
            return Ok(held.hand_out(conn));
        }
        let slots = match self.try_take_slots() {
            Some(s) => s,
            None => match Box::pin(self.wait_slots(settings, deadline)).await? {
                Room::Slots(s) => s,
                Room::Idle(conn) => return Ok(held.hand_out(conn)),
            },
        };
        // A connection attempt failed while this client waited (a dead
        // shard): it gets that answer now, as PgBouncer answers clients
        // queued behind a failed login. A client that comes later tries again.
        if let Some((at, e)) = &*self
            .connect_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            if *at > started {
                return Err(PoolError::Connect(e.clone()));
            }
        }
        match Box::pin(self.connect(settings)).await {
            Ok(conn) => {
                slots.keep();
                Ok(held.hand_out(Box::new(conn)))
            }
            Err(e) => Err(PoolError::Connect(e)),
        }
    }

    /// PAUSE holds new work here until RESUME (or the client's wait times out).
    async fn wait_resumed(&self, deadline: Option<tokio::time::Instant>) -> Result<(), PoolError> {
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
        Ok(())
    }

    /// Wait in line (`w`) for a permit; after `reserve_pool_timeout`, a reserve
    /// server may serve too, unless the tenant is at its cap.
    async fn acquire_permit(
        &self,
        settings: &PoolSettings,
        deadline: Option<tokio::time::Instant>,
        mut w: fair::Wait,
    ) -> Result<(OwnedSemaphorePermit, bool), PoolError> {
        // One timer at most, for whichever comes first, the reserve opening or
        // the deadline, and none when there is neither: each timer costs a
        // registration in the runtime's wheel and a locked removal, and most
        // pools have no reserve.
        let mut reserve_at = (settings.reserve_pool_size > 0)
            .then(|| tokio::time::Instant::now() + settings.reserve_pool_timeout.as_std());
        let next = |reserve_at: Option<tokio::time::Instant>| match (reserve_at, deadline) {
            (Some(r), Some(d)) if d < r => (Some(d), false),
            (Some(r), _) => (Some(r), true),
            (None, d) => (d, false),
        };
        let (at, mut for_reserve) = next(reserve_at);
        // A coarse deadline (`net::coarse`): armed without the runtime's timer
        // wheel, as most waits end long before it.
        let mut timer = at.map(|at| crate::net::coarse::at(at.into_std()));
        let mut reserve_open = false;
        loop {
            let reserve_acq = async {
                if reserve_open {
                    self.reserve.sem.clone().acquire_owned().await
                } else {
                    std::future::pending().await
                }
            };
            let tick = async {
                match timer.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                p = w.permit() => return p.map(|p| (p, false)).ok_or(PoolError::Closed),
                p = reserve_acq => {
                    let p = p.map_err(|_| PoolError::Closed)?;
                    if w.try_count() {
                        return Ok((p, true));
                    }
                    // At its cap: the reserve is no way around it. Not tried
                    // again in this wait (its turn in the main line comes);
                    // retrying at once is what made this loop spin.
                    drop(p);
                    reserve_open = false;
                }
                () = tick => {
                    if !for_reserve {
                        return Err(PoolError::WaitTimeout);
                    }
                    // The reserve opens (once); the timer now waits for the deadline.
                    reserve_open = true;
                    reserve_at = None;
                    let (at, r) = next(reserve_at);
                    for_reserve = r;
                    match (at, timer.as_mut()) {
                        (Some(at), Some(t)) => t.reset(at.into_std()),
                        _ => timer = None,
                    }
                }
            }
        }
    }

    fn is_reusable(&self, conn: &mut ServerConn, settings: &PoolSettings) -> bool {
        if conn.broken || conn.generation != self.generation.load(Ordering::Acquire) {
            return false;
        }
        if let Some(l) = settings.server_lifetime.non_zero() {
            if crate::net::clock::since(conn.created) > l {
                return false;
            }
        }
        // A server terminated while idle has sent a FATAL error and closed: skip it.
        !conn.has_unexpected_input()
    }

    async fn connect(&self, settings: &PoolSettings) -> Result<ServerConn, ServerError> {
        let limit = settings.server_connect_timeout.as_std();
        let deadline = Instant::now() + limit;
        self.stats.connecting.fetch_add(1, Ordering::Relaxed);
        // Counted down however this ends (a cancelled checkout drops it midway).
        struct Connecting<'a>(&'a AtomicUsize);
        impl Drop for Connecting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let connecting = Connecting(&self.stats.connecting);
        let mut backoff = Duration::from_millis(50);
        let res = loop {
            // The generation first, then the target it goes with: a reload
            // stores the new target, then moves the generation on. Each try
            // takes the target in force (probe O: a retry loop went on at a
            // shard's old address after a reload had given it a new one).
            let moved_on = self.moved_on.notified();
            tokio::pin!(moved_on);
            moved_on.as_mut().enable();
            let generation = self.generation.load(Ordering::Acquire);
            let target = self.target.load_full();
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::select! {
                r = ServerConn::connect(&target, left.max(Duration::from_millis(1))) => r,
                // A failover reload away from a primary that hangs: the
                // attempt there is given up at once (probe S: clients waited
                // out server_connect_timeout, then got the old address's
                // error).
                () = &mut moved_on => continue,
            };
            match attempt {
                Ok(_) if self.generation.load(Ordering::Acquire) != generation => {
                    // A reload (a failover's new address) or RECONNECT landed
                    // while it connected: no work goes to the old target (probe
                    // O: such a server was kept, stamped current, and served the
                    // shard's tenants at the old primary for server_lifetime).
                    continue;
                }
                Ok(mut c) => {
                    c.generation = generation;
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
        drop(connecting);
        *self
            .connect_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = res
            .as_ref()
            .err()
            .map(|e| (tokio::time::Instant::now(), e.clone()));
        match &res {
            Ok(c) => {
                self.total.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                let mut sp = self
                    .server_params
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if sp.is_none() {
                    *sp = Some(Arc::new(c.initial.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(pool = ?self.key, "server connection failed: {e}");
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
        }
        res
    }

    /// Return a server. Broken, expired or stale-generation servers are closed, and
    /// so are servers beyond the pool's size after a shrink.
    pub fn checkin(&self, mut c: Checkout) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let settings = self.settings.load();
        let now = crate::net::clock::now();
        c.conn.last_used = now;
        let keep = !c.conn.broken
            && !self.disabled.load(Ordering::Acquire)
            && c.conn.generation == self.generation.load(Ordering::Acquire)
            && settings
                .server_lifetime
                .non_zero()
                .is_none_or(|l| now.saturating_duration_since(c.conn.created) <= l)
            && c.conn.rbuf.is_empty()
            && self.total.load(Ordering::Relaxed) <= self.capacity();
        // A shared cap lowered below what is open: this server goes, its slot
        // given up now (a busy pool's servers would otherwise stay over the
        // new limit until they aged out).
        let shed = keep.then(|| self.shed_slots()).flatten();
        if let Some(given) = shed {
            self.close_with(c.conn, given, ServerConn::terminate);
        } else if keep {
            // A server that read one big message keeps no big buffer in the
            // pool (probe V: memory a client made it take stayed until the
            // server aged out).
            if c.conn.rbuf.capacity() > RBUF_KEPT {
                c.conn.rbuf = bytes::BytesMut::with_capacity(RBUF_KEPT);
            }
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(c.conn);
            if let Some(caps) = self.caps.get() {
                // Clients waiting under a full cap can now close it, or take it.
                for cap in caps.iter().filter(|c| c.is_full()) {
                    cap.wake();
                }
            }
        } else {
            self.close(c.conn);
        }
        self.release(c.permit, c.from_reserve, c.tenant);
    }

    /// Drop a server that is known bad (e.g. it died mid-transaction).
    pub fn discard(&self, c: Checkout) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.close(c.conn);
        self.release(c.permit, c.from_reserve, c.tenant);
    }

    /// Account for a checkout its session dropped without giving it back
    /// (the client's task panicked and unwound): the server's socket closes
    /// with it, unterminated, and the pool's counts of servers open and in
    /// use, the shared caps' slots and the permit come back as for a
    /// [`Self::discard`]. Else each such drop left the pool one server short
    /// and `SHOW POOLS` one active for good, and `PAUSE` waited for ever
    /// for it (probe HH).
    pub fn abandon(&self, c: Checkout) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(caps) = self.caps.get() {
            for cap in caps {
                cap.give();
            }
        }
        self.release(c.permit, c.from_reserve, c.tenant);
    }

    /// A pool of `size` servers that never connects: for tests.
    #[cfg(test)]
    pub(crate) fn unconnected(size: usize) -> Arc<Pool> {
        let key = PoolKey {
            database: "d".into(),
            user: "u".into(),
            shard: "s".into(),
        };
        let target = Target {
            host: "127.0.0.1".into(),
            port: 1,
            dbname: "d".into(),
            user: "u".into(),
            password: None,
            scram_keys: None,
            tls: Default::default(),
        };
        let settings = PoolSettings {
            default_pool_size: size,
            ..Default::default()
        };
        Pool::new(key, target, settings)
    }

    /// A checkout of a server that is not connected (its socket is
    /// [`crate::net::Stream::Closed`]), counted as an open one in use: for
    /// tests of what is done with a checkout.
    #[cfg(test)]
    pub(crate) fn unconnected_checkout(&self) -> Checkout {
        let permit = self
            .main
            .sem
            .clone()
            .try_acquire_owned()
            .expect("a free permit");
        self.total.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.target.load().port));
        Checkout {
            conn: Box::new(ServerConn {
                stream: crate::net::Stream::Closed,
                home: crate::net::worker(),
                state: Box::new(crate::server::ServerState::new(addr, None)),
            }),
            permit,
            from_reserve: false,
            tenant: None,
        }
    }

    /// Close a server its client left in the middle of work (a query may be
    /// running on it): cancel that first. Postgres notices a closed socket
    /// only when it next writes, so a long query would run on, a backend
    /// outside the pool's count, and clients that keep timing out would pile
    /// them up past `max_connections`.
    ///
    /// `hold` (the transaction's holds on its tenants) is dropped only once
    /// the backend is gone (see [`end_busy`]): one that ignores the cancel
    /// runs on and commits, and a `PAUSE TENANT` must not count the tenant
    /// drained before (probe X: a MOVE went ahead while it ran, and its row
    /// landed on the old shard).
    ///
    /// Its slot in the pool comes back only then too: without a cancel
    /// (work pipelined behind the running unit) the backend may run on for
    /// up to [`BUSY_CLOSE_WAIT`], and a slot given back at once let a loop
    /// of departing clients open a server each, past `max_connections`
    /// (probe UU: 470 in 20 s filled a shard's 200).
    pub fn discard_busy(self: &Arc<Self>, c: Checkout, hold: Box<dyn Send>, left: LeftWork) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let target = self.target.load_full();
        let pool = self.clone();
        let Checkout {
            conn,
            permit,
            from_reserve,
            tenant,
        } = c;
        self.close_with(conn, [false; 2], move |conn| async move {
            end_busy(conn, target, hold, left).await;
            pool.release(permit, from_reserve, tenant);
        });
    }

    fn close(&self, conn: Box<ServerConn>) {
        self.close_with(conn, [false; 2], ServerConn::terminate);
    }

    /// Close `conn` by `end` (a Terminate, or more for a busy server), on a
    /// task of its own; `given` says which of the shared caps (database,
    /// user) already had its slot back.
    fn close_with<F>(
        &self,
        conn: Box<ServerConn>,
        given: [bool; 2],
        end: impl FnOnce(ServerConn) -> F + Send + 'static,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.total.fetch_sub(1, Ordering::Relaxed);
        // The shared caps' slots come back once the backend is gone, so a cap
        // holds as Postgres counts connections (an evicted server is not still
        // exiting when its replacement logs in).
        let caps = self.caps.get().cloned();
        let closing = Closing::start();
        tokio::spawn(async move {
            end(*conn).await;
            for (c, given) in caps.iter().flatten().zip(given) {
                if !given {
                    c.give();
                }
            }
            drop(closing);
        });
    }

    /// Server connections being closed (a cancel first, for one left in the
    /// middle of work): shutdown waits for them before it stops the worker
    /// threads, whose runtimes would drop the closing tasks.
    pub fn closing() -> usize {
        CLOSING.load(Ordering::Acquire)
    }

    /// Shutdown: end the backends of servers closed in the middle of work now,
    /// without waiting for their statements.
    pub fn end_closing_now() {
        SHUTTING.store(true, Ordering::Release);
        SHUTTING_NOTIFY.notify_waiters();
    }

    /// Periodic maintenance: expire idle servers and keep `min_pool_size` warm.
    pub async fn maintain(&self) {
        let settings = self.settings.load_full();
        let now = Instant::now();
        let expired: Vec<Box<ServerConn>> = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        // A shrink that raced a returning permit is finished here.
        self.main.settle();
        self.reserve.settle();
        // Every permit comes back through `release`, which serves the waiters;
        // one that came back otherwise (a checkout dropped without check-in)
        // is offered to them here.
        self.fair.grew(&self.main.sem);
        self.trim_idle();
        if self.disabled.load(Ordering::Acquire) || self.paused.load(Ordering::Acquire) {
            return;
        }
        // Warm up to min_pool_size (expired servers above are replaced by fresh ones).
        while self.total.load(Ordering::Relaxed) < settings.min_pool_size {
            let Ok(permit) = self.main.sem.clone().try_acquire_owned() else {
                break;
            };
            // Warm-up never waits for, nor evicts for, a shared cap.
            let Some(slots) = self.try_take_slots() else {
                break;
            };
            match self.connect(&settings).await {
                Ok(conn) => {
                    slots.keep();
                    self.checkin_fresh(conn, permit)
                }
                Err(_) => break,
            }
        }
    }

    /// Add a logged-in server to the idle servers, as if this pool had opened
    /// it. For `benches/pool.rs`, which measures checkout and check-in without
    /// a Postgres behind them.
    #[doc(hidden)]
    pub fn adopt_idle(&self, conn: ServerConn) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(conn));
    }

    fn checkin_fresh(&self, conn: ServerConn, permit: OwnedSemaphorePermit) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(conn));
        self.release(permit, false, None);
    }

    /// Close everything (pool removed or disabled).
    pub fn close_all(&self) {
        self.disabled.store(true, Ordering::Release);
        self.reconnect();
    }
}

/// End a server its client left in the middle of work: cancel its
/// statement, then Terminate, and wait for the backend to close its end.
/// One still running past its cancel after [`BUSY_CLOSE_WAIT`] (a statement
/// that catches it), or at shutdown at once, is ended with
/// `pg_terminate_backend` over a connection of `target`, tried again until
/// it is gone (probes Z and BB: after a bounded wait, or a refused
/// connection, or the exit, it committed on the old shard after PAUSE and
/// MOVE). `hold` goes last.
/// What a server closed in the middle of its departed client's work is
/// left to run ([`Pool::discard_busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftWork {
    /// One unit (a simple Query, or a batch up to its Sync): cancelled.
    One,
    /// Two: the running one and the next run, as Postgres runs them for a
    /// client that left (the backend notices only when it writes the
    /// answers, which fails once the first has gone), and a cancel that
    /// failed a `BEGIN` would let the next commit on its own (probe RR).
    Two,
    /// More: the backend is ended now. Postgres would run two of them;
    /// left to run, a probe's 300 pipelined statements all committed over
    /// 20 s after their client left, and 2,300 queries of 10 MB results
    /// kept a server for 54 s (probe CW F3).
    More,
}

impl LeftWork {
    /// The work of `owed` units, each owing its ReadyForQuery.
    pub fn of(owed: usize) -> LeftWork {
        match owed {
            0 | 1 => LeftWork::One,
            2 => LeftWork::Two,
            _ => LeftWork::More,
        }
    }
}

async fn end_busy(mut conn: ServerConn, target: Arc<Target>, hold: Box<dyn Send>, left: LeftWork) {
    // Without the cancel (work pipelined behind the running unit), the
    // backend runs what it was sent and then reads the Terminate, which
    // rolls back what is open, as Postgres does for a client that left;
    // past the wait, it is ended whole.
    if left == LeftWork::One {
        crate::server::send_cancel(*conn.cancel).await;
    }
    let closed = left != LeftWork::More
        && tokio::select! {
            closed = conn.terminate_within(BUSY_CLOSE_WAIT) => closed,
            () = shutdown_closing() => false,
        };
    if !closed {
        let pid = conn.cancel.pid;
        if left == LeftWork::More {
            tracing::debug!(
                pid,
                "a departed client's pipelined work: ending its backend"
            );
        } else {
            tracing::warn!(
                pid,
                "a server left mid-statement runs on past its cancel; terminating its backend"
            );
        }
        for attempt in 1u64.. {
            if let Ok(mut other) = ServerConn::connect(&target, Duration::from_secs(10)).await {
                let _ = other
                    .internal_row(&format!("SELECT pg_catalog.pg_terminate_backend({pid})"))
                    .await;
                other.terminate().await;
            }
            if conn.closed_within(TERMINATE_RETRY).await {
                break;
            }
            if attempt % 60 == 1 {
                tracing::warn!(
                    pid,
                    attempt,
                    "a backend left mid-statement is not ended yet; its tenants stay held"
                );
            }
        }
    }
    drop(hold);
}

/// How long a server closed in the middle of its client's work is waited
/// for: its backend ends its statement (cancelled first) before it reads the
/// Terminate.
const BUSY_CLOSE_WAIT: Duration = Duration::from_secs(30);

/// How long a backend being ended is waited for before it is tried again.
const TERMINATE_RETRY: Duration = Duration::from_secs(5);

/// Set at shutdown: servers closed in the middle of work have their backends
/// ended at once rather than after [`BUSY_CLOSE_WAIT`] (probe BB: a
/// statement that caught its cancel ran on after the exit, and committed on
/// the old shard after a restart, a pause and a move).
static SHUTTING: AtomicBool = AtomicBool::new(false);
static SHUTTING_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Ready once shutdown ended the wait for busy servers' backends.
async fn shutdown_closing() {
    loop {
        let n = SHUTTING_NOTIFY.notified();
        if SHUTTING.load(Ordering::Acquire) {
            return;
        }
        n.await;
    }
}

/// Read-buffer room an idle server keeps (what a new connection starts with).
const RBUF_KEPT: usize = 16 * 1024;

/// All pools of the process.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// `max_db_connections` caps, by (database, shard).
    db_caps: Mutex<HashMap<(String, String), Arc<ConnCap>>>,
    /// `max_user_connections` caps, by (user, server host, port).
    user_caps: Mutex<HashMap<(String, String, u16), Arc<ConnCap>>>,
}

impl Pools {
    /// Get or create the pool for `key`; `make` gives its target, settings and
    /// its user's `max_user_connections`.
    pub fn get_or_create(
        &self,
        key: &PoolKey,
        make: impl FnOnce() -> (Target, PoolSettings, usize),
    ) -> Arc<Pool> {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = m.get(key) {
            return p.clone();
        }
        let (t, s, user_limit) = make();
        let db_limit = s.max_db_connections;
        let user_key = (key.user.clone(), t.host.clone(), t.port);
        let p = Pool::new(key.clone(), t, s);
        let db_cap: Arc<ConnCap> = self
            .db_caps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((key.database.clone(), key.shard.clone()))
            .or_insert_with(|| ConnCap::new(db_limit))
            .clone();
        let user_cap: Arc<ConnCap> = self
            .user_caps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(user_key)
            .or_insert_with(|| ConnCap::new(user_limit))
            .clone();
        db_cap.set_limit(db_limit);
        user_cap.set_limit(user_limit);
        db_cap.join(&p);
        user_cap.join(&p);
        let _ = p.caps.set([db_cap, user_cap]);
        m.insert(key.clone(), p.clone());
        p
    }

    /// Snapshot of all pools, sorted by key.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Remove pools for which `keep` is false, closing their servers.
    pub fn retain(&self, mut keep: impl FnMut(&PoolKey) -> bool) {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|k, p| {
            let k2 = keep(k);
            if !k2 {
                p.close_all();
            }
            k2
        });
    }
}

/// Server connections being closed now (see [`Pool::closing`]).
static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// One server connection being closed, counted out however its task ends.
struct Closing;

impl Closing {
    fn start() -> Closing {
        CLOSING.fetch_add(1, Ordering::AcqRel);
        Closing
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        CLOSING.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::{Limit, Pool};
    use std::sync::atomic::Ordering;

    /// A checkout dropped by its session unaccounted (its task panicked) is
    /// counted back, and its slot serves the next checkout.
    #[test]
    fn an_abandoned_checkout_gives_its_server_and_slot_back() {
        let p = Pool::unconnected(1);
        let c = p.unconnected_checkout();
        assert_eq!(p.stats.active.load(Ordering::Relaxed), 1);
        assert_eq!(p.main.sem.available_permits(), 0);
        p.abandon(c);
        assert_eq!(p.stats.active.load(Ordering::Relaxed), 0);
        assert_eq!(p.total.load(Ordering::Relaxed), 0);
        assert_eq!(p.main.sem.available_permits(), 1);
    }

    fn take(l: &Limit) -> tokio::sync::OwnedSemaphorePermit {
        l.sem.clone().try_acquire_owned().expect("a free permit")
    }

    /// Regression: a shrink while every permit was held removed nothing, and the
    /// permits came back at the old size.
    #[test]
    fn a_shrink_while_permits_are_held_converges_as_they_come_back() {
        let l = Limit::new(4);
        let held: Vec<_> = (0..4).map(|_| take(&l)).collect();
        l.resize(1);
        assert_eq!(l.sem.available_permits(), 0);
        for p in held {
            l.release(p);
        }
        assert_eq!(l.sem.available_permits(), 1);
        assert_eq!(l.owed.load(Ordering::Acquire), 0);
    }

    #[test]
    fn growing_cancels_what_a_shrink_still_owes() {
        let l = Limit::new(1);
        let p = take(&l);
        l.resize(0); // owes the held permit
        l.resize(3); // cancels that debt, adds two
        l.release(p);
        assert_eq!(l.sem.available_permits(), 3);
        assert_eq!(l.size(), 3);
    }

    #[test]
    fn settle_removes_owed_permits_that_are_free() {
        let l = Limit::new(3);
        l.owed.store(2, Ordering::Release); // as if a permit raced the shrink
        l.settle();
        assert_eq!(l.sem.available_permits(), 1);
        assert_eq!(l.owed.load(Ordering::Acquire), 0);
    }
}
