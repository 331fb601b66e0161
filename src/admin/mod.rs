//! Admin console (PgBouncer-compatible, over psql) and Prometheus metrics.
//!
//! - [`console`]: the virtual database `pgbouncer` / `shardbouncer`.
//! - [`command`]: parsing of console commands (pure, unit-tested).
//! - [`show`]: the SHOW tables, built from the live [`App`] state.
//! - [`routing`]: what SHOW SHARD_MAP / ROUTE / SHARDS say about the shard maps.
//! - [`metrics`]: the Prometheus exporter and the counters the router calls.
//! - [`tenant_ops`]: PAUSE, MOVE and RESUME TENANT.
//!
//! The state the console controls ([`crate::app::AdminState`]), the client
//! registry and the tenant statistics live in [`crate::app`], below this module,
//! so that the client task can read them without importing the console.

pub mod command;
pub mod console;
pub mod metrics;
pub mod routing;
pub mod show;
pub mod tenant_ops;

use crate::app::App;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// SQLSTATE sent to a client logging in to a database that was DISABLEd
/// (cannot_connect_now, as Postgres uses while it refuses connections).
pub const DATABASE_DISABLED: &str = crate::sqlstate::CANNOT_CONNECT_NOW;

/// Start the admin background work: the Prometheus exporter (when `[admin]
/// metrics_addr` is set) and the once-a-second refresh of metrics and averages.
/// Must run inside the tokio runtime.
pub fn start(app: &Arc<App>) -> Result<(), String> {
    let snap = app.snapshot.load_full();
    let exporter = match &snap.config.admin.metrics_addr {
        Some(addr) => {
            metrics::install(addr, app)?;
            true
        }
        None => false,
    };
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
