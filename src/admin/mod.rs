//! Admin console (PgBouncer-compatible, over psql) and Prometheus metrics.
//!
//! - [`console`]: the virtual database `pgbouncer` / `shardbouncer`.
//! - [`command`]: parsing of console commands (pure, unit-tested).
//! - [`show`]: the SHOW tables, built from the live [`App`] state.
//! - [`tenants`]: bounded per-tenant statistics (SHOW TENANTS, tenant metrics).
//! - [`routing`]: the hook through which the shard router feeds SHOW SHARD_MAP / ROUTE.
//! - [`metrics`]: the Prometheus exporter and the counters the router calls.

pub mod command;
pub mod console;
pub mod metrics;
pub mod routing;
pub mod show;
pub mod tenants;

use crate::app::App;
use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SQLSTATE sent to a client logging in to a database that was DISABLEd
/// (cannot_connect_now, as Postgres uses while it refuses connections).
pub const DATABASE_DISABLED: &str = "57P03";

/// Console-controlled state that outlives pools and reloads.
pub struct AdminState {
    /// Databases refused at login (DISABLE / ENABLE).
    disabled: Mutex<HashSet<String>>,
    /// Databases paused by name (so SHOW DATABASES can say so even with no pool yet).
    paused: Mutex<HashSet<String>>,
    /// PAUSE without a database is in effect.
    pub paused_all: AtomicBool,
    /// SHUTDOWN WAIT_FOR_CLIENTS: new logins are refused while existing clients finish.
    pub draining: AtomicBool,
    /// What the router tells the console (SHOW SHARD_MAP / ROUTE / SHARDS overrides).
    router: ArcSwap<Box<dyn routing::RouterView>>,
    /// PgBouncer-style averages over the last `stats_period`.
    pub averages: Mutex<show::Averages>,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            disabled: Mutex::default(),
            paused: Mutex::default(),
            paused_all: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            router: ArcSwap::from_pointee(
                Box::new(routing::SnapshotRouter) as Box<dyn routing::RouterView>
            ),
            averages: Mutex::default(),
        }
    }
}

impl AdminState {
    /// Whether new logins to `db` are refused.
    pub fn is_disabled(&self, db: &str) -> bool {
        self.disabled.lock().unwrap().contains(db)
    }

    /// DISABLE (true) / ENABLE (false) a database.
    pub fn set_disabled(&self, db: &str, on: bool) {
        let mut s = self.disabled.lock().unwrap();
        if on {
            s.insert(db.to_string());
        } else {
            s.remove(db);
        }
    }

    /// Whether `db` was paused by name.
    pub fn is_paused(&self, db: &str) -> bool {
        self.paused.lock().unwrap().contains(db)
    }

    fn set_paused(&self, db: &str, on: bool) {
        let mut s = self.paused.lock().unwrap();
        if on {
            s.insert(db.to_string());
        } else {
            s.remove(db);
        }
    }

    /// Install the router's view (called once the shard router is wired in).
    pub fn set_router_view(&self, view: Box<dyn routing::RouterView>) {
        self.router.store(Arc::new(view));
    }

    /// The router's current view.
    pub fn router_view(&self) -> Arc<Box<dyn routing::RouterView>> {
        self.router.load_full()
    }
}

/// What the console shows about one client beyond its identity; updated by the
/// session at the two moments that matter (waiting for a server, attached to one), so
/// the hot path pays two relaxed stores per transaction.
#[derive(Debug, Default)]
pub struct ClientActivity {
    /// application_name given at login.
    pub application_name: String,
    /// Local end of the client socket.
    pub local_addr: Option<SocketAddr>,
    /// Microseconds since the epoch when the client started waiting for a server (0 = not waiting).
    wait_start_us: AtomicU64,
    /// Microseconds since the epoch of the client's last server request.
    request_us: AtomicU64,
    /// Index of the shard of the last (or current) server request.
    shard: AtomicUsize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ClientActivity {
    /// Activity record of a client that just logged in.
    pub fn new(application_name: &str, local_addr: Option<SocketAddr>) -> ClientActivity {
        ClientActivity {
            application_name: application_name.to_string(),
            local_addr,
            ..Default::default()
        }
    }

    /// The client asks for a server of shard `shard` (it waits until [`Self::attached`]).
    pub fn waiting(&self, shard: usize) {
        let now = now_us();
        self.shard.store(shard, Ordering::Relaxed);
        self.request_us.store(now, Ordering::Relaxed);
        self.wait_start_us.store(now, Ordering::Relaxed);
    }

    /// The wait is over (a server was assigned, or the checkout failed).
    pub fn attached(&self) {
        self.wait_start_us.store(0, Ordering::Relaxed);
    }

    /// How long the client has been waiting, if it is.
    pub fn wait_time(&self) -> Option<Duration> {
        match self.wait_start_us.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_micros(now_us().saturating_sub(t))),
        }
    }

    /// Time of the last server request, if any.
    pub fn request_time(&self) -> Option<SystemTime> {
        match self.request_us.load(Ordering::Relaxed) {
            0 => None,
            t => Some(UNIX_EPOCH + Duration::from_micros(t)),
        }
    }

    /// Shard index of the last server request.
    pub fn shard(&self) -> usize {
        self.shard.load(Ordering::Relaxed)
    }
}

/// Start the admin background work: the Prometheus exporter (when `[admin]
/// metrics_addr` is set) and the once-a-second refresh of metrics and averages.
/// Must run inside the tokio runtime.
pub fn start(app: &Arc<App>) -> Result<(), String> {
    let snap = app.snapshot.load_full();
    let exporter = match &snap.config.admin.metrics_addr {
        Some(addr) => {
            metrics::install(addr)?;
            tracing::info!("metrics on http://{addr}/metrics");
            true
        }
        None => false,
    };
    for (name, db) in &snap.dbs {
        if let Some(rt) = &db.routing {
            metrics::map_version(name, rt.map.version.max(0) as u64);
        }
    }
    let app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if app.shutting_down.load(Ordering::Acquire) {
                return;
            }
            // Pools created after a PAUSE (a new user or shard) are held too.
            for p in app.pools.all() {
                if console::pause_applies(&app, &p.key.database)
                    && !p.paused.load(Ordering::Acquire)
                {
                    p.pause();
                }
            }
            if n % show::STATS_PERIOD_SECS == 0 {
                show::sample_averages(&app);
            }
            if exporter {
                metrics::refresh(&app, n % metrics::TENANT_REFRESH_SECS == 0);
            }
            n += 1;
        }
    });
    Ok(())
}
