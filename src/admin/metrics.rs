//! Prometheus metrics (`/metrics` on `[admin] metrics_addr`).
//!
//! Nothing here runs per message. Pool counters already live in `PoolStats`
//! atomics; [`refresh`] copies them into the exporter once a second
//! (`counter.absolute`, `gauge.set`). The only per-transaction work is
//! [`record_transaction`], which feeds two histograms through handles cached in
//! the pool, and the router's counters ([`routing_decision`] and friends), which use
//! handles cached per database so the hot path does no registry lookup or allocation.
//!
//! Tenant series are bounded: only the top [`TOP_TENANTS`] tenants are exported,
//! refreshed every [`TENANT_REFRESH_SECS`], and gauges not refreshed for 25 s are
//! dropped by the exporter, so tenants that fall out of the top do not linger.

use crate::app::App;
use crate::pool::{Pool, PoolMetrics};
use crate::router::keyed::KeyedMap;
use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Tenants exported as series.
pub const TOP_TENANTS: usize = 20;
/// How often the tenant series are recomputed.
pub const TENANT_REFRESH_SECS: u64 = 10;
/// Gauges not set for this long disappear from `/metrics` (tenants that left the
/// top or were moved to another shard, pools that were removed). Every gauge
/// still in use is set at least every [`TENANT_REFRESH_SECS`].
const GAUGE_IDLE: Duration = Duration::from_secs(TENANT_REFRESH_SECS * 5 / 2);

/// Histogram buckets (seconds) for transaction and query durations.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Scrapes served at once; a connection past them is closed at once.
pub const MAX_SCRAPES: usize = 16;
/// A scrape's whole exchange (request in, answer out) must fit in this.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a request read (its head; a body is not read).
const MAX_REQUEST: usize = 8 * 1024;

/// Install the global recorder and the HTTP listener. Must run inside the runtime.
///
/// The listener is ours, not the exporter's: that one kept any connection
/// open for as long as its client wished, with no cap on how many, and a
/// few hundred idle ones used up the process's file descriptors, so clients
/// could no longer log in (probe K). Here at most [`MAX_SCRAPES`] are served
/// at once, each within [`SCRAPE_TIMEOUT`], one request per connection.
pub fn install(addr: &str, app: &std::sync::Arc<crate::app::App>) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("[admin] metrics_addr {addr:?}: {e}"))?;
    let bind = move || {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
    };
    // Beside another shardbouncer on a shared address (`[listen]
    // so_reuseport`, a rolling restart), the old process has the metrics
    // address until its drain starts: this one takes it then. Scrapes
    // never alternate between two processes' counters.
    let shared = app.snapshot.load().config.listen.so_reuseport;
    let first = match bind() {
        Ok(l) => {
            tracing::info!("metrics on http://{addr}/metrics");
            Some(l)
        }
        Err(e) if shared && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(
                "metrics address {addr} is in use (another shardbouncer on this address?): \
                 taking it once it is free"
            );
            None
        }
        Err(e) => return Err(format!("cannot start the metrics listener on {addr}: {e}")),
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    let app = app.clone();
    tokio::spawn(async move {
        let listener = match first {
            Some(l) => l,
            None => loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(l) = bind() {
                    tracing::info!("metrics on http://{addr}/metrics");
                    break l;
                }
            },
        };
        let drained = app.admin.drained();
        tokio::pin!(drained);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                // The process that takes the clients takes the scrapes.
                () = &mut drained, if shared => return,
            };
            let Ok((stream, _)) = accepted else {
                // (Out of descriptors, say: try again in a moment.)
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // Closed at once.
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(stream, &handle)).await;
                drop(slot);
            });
        }
    });
    Ok(())
}

/// Answer one HTTP request: `GET` gets the metrics, anything else 405.
async fn scrape(
    mut s: tokio::net::TcpStream,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with(b"GET ") {
        ("200 OK", handle.render())
    } else {
        ("405 Method Not Allowed", String::new())
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(answer.as_bytes()).await?;
    s.shutdown().await
}

/// Histogram handles of one pool, created on its first transaction and kept in it.
fn pool_metrics(p: &Pool) -> PoolMetrics {
    let k = &p.key;
    let labels = [
        ("database", k.database.clone()),
        ("user", k.user.clone()),
        ("shard", k.shard.clone()),
    ];
    PoolMetrics {
        xact: histogram!("shardbouncer_transaction_duration_seconds", &labels),
        query: histogram!("shardbouncer_query_duration_seconds", &labels),
    }
}

/// Called by the session once per finished transaction: `xact_us` is the time the
/// server was held, `query_us` the summed time of its `queries` queries (the session
/// flushes per transaction, so each query is recorded at the transaction's mean).
pub fn record_transaction(pool: &Pool, xact_us: u64, query_us: u64, queries: u64) {
    let m = pool.metrics.get_or_init(|| pool_metrics(pool));
    m.xact.record(xact_us as f64 / 1e6);
    if queries > 0 {
        m.query
            .record_many(query_us as f64 / 1e6 / queries as f64, queries as usize);
    }
}

/// Where a routing decision found the tenant.
const SOURCES: [&str; 6] = ["startup", "comment", "set", "scan", "default", "other"];

struct DbRouting {
    decisions: [Counter; 6],
    rejected: Counter,
    cross_shard: Counter,
}

impl DbRouting {
    fn new(db: &str) -> DbRouting {
        let d = db.to_string();
        DbRouting {
            decisions: SOURCES.map(|s| {
                counter!("shardbouncer_routing_decisions_total", "database" => d.clone(), "source" => s)
            }),
            rejected: counter!("shardbouncer_routing_rejected_total", "database" => d.clone()),
            cross_shard: counter!("shardbouncer_cross_shard_refused_total", "database" => d),
        }
    }
}

fn routing(db: &str, f: impl FnOnce(&DbRouting)) {
    thread_local! {
        /// This thread's last database's handles: a routed transaction
        /// counts its decision without a lock or a hash (a worker's
        /// sessions are mostly of one database).
        static LAST: std::cell::RefCell<Option<(Box<str>, Arc<DbRouting>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let mut f = Some(f);
    LAST.with(|l| {
        if let Some((name, r)) = &*l.borrow() {
            if **name == *db {
                if let Some(f) = f.take() {
                    f(r);
                }
            }
        }
    });
    if let Some(f) = f {
        let r = shared_routing(db);
        f(&r);
        LAST.with(|l| *l.borrow_mut() = Some((db.into(), r)));
    }
}

/// The handles of `db`, made on its first use.
fn shared_routing(db: &str) -> Arc<DbRouting> {
    static CACHE: OnceLock<RwLock<KeyedMap<String, Arc<DbRouting>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(db)
    {
        return r.clone();
    }
    let mut w = cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    w.entry(db.to_string())
        .or_insert_with(|| Arc::new(DbRouting::new(db)))
        .clone()
}

/// A statement of `database` was routed using the tenant found in `source`
/// (startup, comment, set, scan or default).
pub fn routing_decision(database: &str, source: &str) {
    let i = SOURCES[..5].iter().position(|s| *s == source).unwrap_or(5);
    routing(database, |r| r.decisions[i].increment(1));
}

/// A transaction of `database` was held because its tenant is paused
/// (console `PAUSE TENANT`).
pub fn tenant_held(database: &str) {
    counter!("shardbouncer_tenant_held_transactions_total", "database" => database.to_string())
        .increment(1);
}

/// A statement of `database` was refused because no tenant could be found.
pub fn routing_rejected(database: &str) {
    routing(database, |r| r.rejected.increment(1));
}

/// A transaction of `database` was refused for touching a second shard.
pub fn cross_shard_refused(database: &str) {
    routing(database, |r| r.cross_shard.increment(1));
}

/// A client message larger than `[limits] spool_threshold` was spooled whole.
pub fn message_spooled() {
    counter!("shardbouncer_client_spooled_messages_total").increment(1);
}

/// A configuration (or shard map) reload finished.
pub fn reload(ok: bool) {
    counter!("shardbouncer_reloads_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
}

/// Copy the live state into the exporter (once a second, from the admin task).
pub fn refresh(app: &App, tenants: bool) {
    let snap = app.snapshot.load_full();
    gauge!("shardbouncer_config_generation").set(snap.generation as f64);
    // Against `[limits] max_buffered`: how close abuse is to closing clients.
    gauge!("shardbouncer_client_buffered_bytes").set(app.clients.buffered() as f64);
    // Against `[limits] max_spooled`: large messages waiting on disk.
    gauge!("shardbouncer_client_spooled_bytes").set(app.clients.spooled() as f64);
    for (name, db) in &snap.dbs {
        if let Some(rt) = &db.routing {
            gauge!("shardbouncer_shard_map_version", "database" => name.clone())
                .set(rt.map.version.max(0) as f64);
        }
    }
    let clients = app.clients.all();
    // Per (database, user, shard): clients active / waiting, oldest wait.
    let mut cl: HashMap<(&str, &str, usize), (u64, u64, f64)> = HashMap::new();
    for c in &clients {
        let e = cl
            .entry((&c.database, &c.user, c.activity.shard()))
            .or_default();
        match c.activity.wait_time() {
            Some(w) => {
                e.1 += 1;
                e.2 = e.2.max(w.as_secs_f64());
            }
            None => e.0 += 1,
        }
    }
    let mut shards: HashMap<(String, String), (usize, usize, usize, bool)> = HashMap::new();
    for p in app.pools.all() {
        let k = &p.key;
        let st = &p.stats;
        let idx = snap
            .dbs
            .get(&k.database)
            .and_then(|d| d.shard_index(&k.shard));
        let (active_cl, waiting_cl, maxwait) = idx
            .and_then(|i| cl.get(&(k.database.as_str(), k.user.as_str(), i)).copied())
            .unwrap_or_default();
        let waiting = st.waiting.load(Ordering::Relaxed) as u64;
        let l = |s: &'static str| {
            [
                ("database", k.database.clone()),
                ("user", k.user.clone()),
                ("shard", k.shard.clone()),
                ("state", s.to_string()),
            ]
        };
        let base = [
            ("database", k.database.clone()),
            ("user", k.user.clone()),
            ("shard", k.shard.clone()),
        ];
        gauge!("shardbouncer_pool_clients", &l("active"))
            .set(active_cl.saturating_sub(waiting.saturating_sub(waiting_cl)) as f64);
        gauge!("shardbouncer_pool_clients", &l("waiting")).set(waiting.max(waiting_cl) as f64);
        let active = st.active.load(Ordering::Relaxed);
        let idle = p.idle_count();
        let login = st.connecting.load(Ordering::Relaxed);
        gauge!("shardbouncer_pool_servers", &l("active")).set(active as f64);
        gauge!("shardbouncer_pool_servers", &l("idle")).set(idle as f64);
        gauge!("shardbouncer_pool_servers", &l("login")).set(login as f64);
        gauge!("shardbouncer_pool_maxwait_seconds", &base).set(maxwait);
        gauge!("shardbouncer_pool_paused", &base)
            .set(f64::from(u8::from(p.paused.load(Ordering::Relaxed))));
        let c = |name: &'static str, v: &std::sync::atomic::AtomicU64| {
            counter!(name, &base).absolute(v.load(Ordering::Relaxed));
        };
        c("shardbouncer_pool_transactions_total", &st.xact_count);
        c("shardbouncer_pool_queries_total", &st.query_count);
        c("shardbouncer_pool_bytes_received_total", &st.bytes_received);
        c("shardbouncer_pool_bytes_sent_total", &st.bytes_sent);
        c(
            "shardbouncer_pool_server_assignments_total",
            &st.assignments,
        );
        c(
            "shardbouncer_pool_server_worker_moves_total",
            &st.worker_moves,
        );
        c("shardbouncer_pool_client_logins_total", &st.login_count);
        c(
            "shardbouncer_pool_transaction_time_microseconds_total",
            &st.xact_time_us,
        );
        c(
            "shardbouncer_pool_query_time_microseconds_total",
            &st.query_time_us,
        );
        c(
            "shardbouncer_pool_wait_time_microseconds_total",
            &st.wait_time_us,
        );
        let e = shards
            .entry((k.database.clone(), k.shard.clone()))
            .or_default();
        e.0 += active;
        e.1 += idle;
        e.2 += login;
        e.3 |= st
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
    }
    for (name, db) in &snap.dbs {
        for sh in &db.cfg.shards {
            let (active, idle, login, down) = shards
                .get(&(name.clone(), sh.name.clone()))
                .copied()
                .unwrap_or_default();
            let l = |s: &'static str| {
                [
                    ("database", name.clone()),
                    ("shard", sh.name.clone()),
                    ("state", s.to_string()),
                ]
            };
            let base = [("database", name.clone()), ("shard", sh.name.clone())];
            gauge!("shardbouncer_shard_up", &base).set(if down { 0.0 } else { 1.0 });
            gauge!("shardbouncer_shard_servers", &l("active")).set(active as f64);
            gauge!("shardbouncer_shard_servers", &l("idle")).set(idle as f64);
            gauge!("shardbouncer_shard_servers", &l("login")).set(login as f64);
        }
        let n = clients.iter().filter(|c| *c.database == **name).count();
        gauge!("shardbouncer_database_clients", "database" => name.clone()).set(n as f64);
        gauge!("shardbouncer_database_disabled", "database" => name.clone())
            .set(f64::from(u8::from(app.admin.is_disabled(name))));
    }
    gauge!("shardbouncer_client_connections").set(app.clients.connected() as f64);
    // Of them, idle clients asleep in a worker's dormitory (no task of their own).
    gauge!("shardbouncer_client_connections_dormant").set(crate::net::dormant::asleep() as f64);
    let paused = app.gate.paused();
    gauge!("shardbouncer_tenants_paused").set(paused.len() as f64);
    // Tenants resumed since the last refresh hold nobody: 0 at once, then
    // the series expires (it showed the last count for a minute).
    static WAS_PAUSED: std::sync::Mutex<Vec<crate::router::TenantKey>> =
        std::sync::Mutex::new(Vec::new());
    let mut was = WAS_PAUSED.lock().unwrap_or_else(|e| e.into_inner());
    for key in was.iter().filter(|k| !paused.iter().any(|(p, _)| p == *k)) {
        gauge!("shardbouncer_tenant_held", "tenant" => key.as_str().to_string()).set(0.0);
    }
    was.clear();
    for (key, held) in paused {
        // Bounded by the number of tenants an operator paused.
        gauge!("shardbouncer_tenant_held", "tenant" => key.as_str().to_string()).set(held as f64);
        was.push(key);
    }
    drop(was);
    if tenants {
        gauge!("shardbouncer_tenants_tracked").set(app.tenants.len() as f64);
        for t in app.tenants.top(TOP_TENANTS) {
            let l = [
                ("database", t.database.clone()),
                ("tenant", t.tenant.clone()),
                ("shard", t.shard.clone()),
            ];
            gauge!("shardbouncer_tenant_transactions", &l).set(t.xact_count as f64);
            gauge!("shardbouncer_tenant_queries", &l).set(t.query_count as f64);
            gauge!("shardbouncer_tenant_transaction_time_seconds", &l)
                .set(t.total_xact_time_us as f64 / 1e6);
            gauge!("shardbouncer_tenant_waiting", &l).set(t.waiting as f64);
            gauge!("shardbouncer_tenant_wait_time_seconds", &l).set(t.wait_time_us as f64 / 1e6);
        }
    }
}
