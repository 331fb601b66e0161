//! The SHOW tables. Column names, order and types follow PgBouncer (1.24) exactly,
//! because exporters and dashboards read them by name; shardbouncer only appends
//! columns (a trailing `shard`) and adds its own router tables.

use super::routing::{RouteInfo, ShardMapInfo};
use crate::app::admin_state::DbTotals;
use crate::app::{App, ClientHandle};
use crate::config::{Config, PoolSettings, ADMIN_DBS};
use crate::pool::Pool;
use crate::router::TenantKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// text
pub const TEXT: u32 = 25;
/// int4
pub const INT4: u32 = 23;
/// int8
pub const INT8: u32 = 20;
/// numeric
pub const NUMERIC: u32 = 1700;

/// Window of SHOW STATS averages (PgBouncer's default `stats_period`).
pub const STATS_PERIOD_SECS: u64 = 60;

/// A result set: column (name, type OID) and text rows (`None` = NULL).
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Columns.
    pub cols: Vec<(&'static str, u32)>,
    /// Rows.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(cols: &[(&'static str, u32)]) -> Table {
        Table {
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.cols.len());
        self.rows.push(row);
    }

    /// Column names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.cols.iter().map(|c| c.0).collect()
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Text of SHOW HELP (sent as the DETAIL of a NOTICE "Console usage", as PgBouncer does).
pub const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW LISTS|STATE\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSHOW SHARDS|SHARD_MAP|TENANTS [<n>]|ROUTE [<db>] '<key>'\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tPAUSE TENANT '<key>' [<timeout_seconds>]\n\
\tMOVE TENANT [<db>] '<key>' TO <shard>\n\
\tRESUME TENANT '<key>'\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <client_id>\n\
\tSHUTDOWN\n\
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS";

/// SHOW VERSION's single value. It names the PgBouncer version whose console it
/// mirrors, so exporters that parse "PgBouncer x.y.z" keep working.
pub fn version_string() -> String {
    format!(
        "shardbouncer {} (PgBouncer 1.24.0 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

/// SHOW VERSION
pub fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    t.push(vec![s(version_string())]);
    t
}

/// `2024-05-01 12:34:56 UTC`, PgBouncer's timestamp format.
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration as PgBouncer shows it in SHOW CONFIG: seconds, fractional if needed.
fn secs(d: crate::config::Duration) -> String {
    let us = d.as_std().as_micros();
    if us % 1_000_000 == 0 {
        (us / 1_000_000).to_string()
    } else {
        let v = format!("{:.6}", us as f64 / 1e6);
        v.trim_end_matches('0').to_string()
    }
}

/// Console `SET [db.]tenant_limits.max_active = n`: every database's, or one's.
pub const TENANT_CAP_KEY: &str = "tenant_limits.max_active";

/// Whether SET may change `key` at run time: every `[pool]` key except `mode` (it
/// changes how sessions work), applied to the `[pool]` defaults, `[limits]
/// max_client_conn`, `max_buffered`, `spool_threshold`, `max_spooled` and
/// `client_hibernate_after`, and the per-tenant cap ([`TENANT_CAP_KEY`]).
/// Databases that override a key keep their own value.
pub fn changeable(key: &str) -> bool {
    key == "max_client_conn"
        || key == "max_buffered"
        || key == "spool_threshold"
        || key == "max_spooled"
        || key == "client_hibernate_after"
        || key.ends_with(TENANT_CAP_KEY)
        || (key != "mode" && crate::config::POOL_KEYS.contains(&key))
}

fn pool_values(p: &PoolSettings) -> Vec<(&'static str, String)> {
    vec![
        ("pool_mode", p.mode.as_str().to_string()),
        ("default_pool_size", p.default_pool_size.to_string()),
        ("min_pool_size", p.min_pool_size.to_string()),
        ("reserve_pool_size", p.reserve_pool_size.to_string()),
        ("reserve_pool_timeout", secs(p.reserve_pool_timeout)),
        ("server_connect_timeout", secs(p.server_connect_timeout)),
        ("query_wait_timeout", secs(p.query_wait_timeout)),
        ("idle_transaction_timeout", secs(p.idle_transaction_timeout)),
        ("client_idle_timeout", secs(p.client_idle_timeout)),
        ("client_login_timeout", secs(p.client_login_timeout)),
        ("server_idle_timeout", secs(p.server_idle_timeout)),
        ("server_lifetime", secs(p.server_lifetime)),
        ("server_reset_query", p.server_reset_query.clone()),
        (
            "max_prepared_statements",
            p.max_prepared_statements.to_string(),
        ),
        ("max_db_connections", p.max_db_connections.to_string()),
        ("max_user_connections", p.max_user_connections.to_string()),
    ]
}

/// SHOW CONFIG: key, value, default, changeable.
pub fn config(cfg: &Config) -> Table {
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    let dflt = Config::defaults();
    let auth = |c: &Config| match c.auth.kind {
        crate::config::AuthType::ScramSha256 => "scram-sha-256",
        crate::config::AuthType::Md5 => "md5",
        crate::config::AuthType::Trust => "trust",
    };
    let general = |c: &Config| -> Vec<(&'static str, String)> {
        vec![
            ("listen_addr", c.listen.addr.clone()),
            // PgBouncer's name and its 0/1.
            ("so_reuseport", u8::from(c.listen.so_reuseport).to_string()),
            (
                "peer_dir",
                c.peer_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            ("auth_type", auth(c).to_string()),
            ("max_client_conn", c.limits.max_client_conn.to_string()),
            ("max_message_size", c.limits.max_message_size.to_string()),
            ("max_buffered", c.limits.max_buffered.to_string()),
            ("spool_threshold", c.limits.spool_threshold.to_string()),
            ("spool_dir", c.spool_dir().display().to_string()),
            ("max_spooled", c.limits.max_spooled.to_string()),
            ("workers", c.workers().to_string()),
            ("shutdown_timeout", secs(c.limits.shutdown_timeout)),
            (
                "client_hibernate_after",
                secs(c.limits.client_hibernate_after),
            ),
            ("admin_users", c.admin.users.join(",")),
            ("stats_users", c.admin.stats_users.join(",")),
            (
                "metrics_addr",
                c.admin.metrics_addr.clone().unwrap_or_default(),
            ),
            ("stats_period", STATS_PERIOD_SECS.to_string()),
        ]
    };
    let mut cur = general(cfg);
    cur.extend(pool_values(&cfg.pool_defaults()));
    let mut def = general(&dflt);
    def.extend(pool_values(&dflt.pool_defaults()));
    for ((k, v), (_, d)) in cur.into_iter().zip(def) {
        let changeable = if changeable(k) { "yes" } else { "no" };
        t.push(vec![s(k), s(v), s(d), s(changeable)]);
    }
    t
}

/// Per-client facts gathered once per SHOW, keyed for the pool tables.
#[derive(Default, Clone, Copy)]
struct ClientCounts {
    active: u64,
    waiting: u64,
    maxwait_us: u64,
}

/// (database, user, shard name) -> client counts, plus the shard name of each client.
fn client_counts(
    app: &App,
    clients: &[Arc<ClientHandle>],
) -> HashMap<(String, String, String), ClientCounts> {
    let snap = app.snapshot.load();
    let mut m: HashMap<(String, String, String), ClientCounts> = HashMap::new();
    for c in clients {
        let Some(db) = snap.dbs.get(&*c.database) else {
            continue;
        };
        let Some(shard) = db.cfg.shards.get(c.activity.shard()) else {
            continue;
        };
        let e = m
            .entry((
                c.database.to_string(),
                c.user.to_string(),
                shard.name.clone(),
            ))
            .or_default();
        match c.activity.wait_time() {
            Some(w) => {
                e.waiting += 1;
                e.maxwait_us = e.maxwait_us.max(w.as_micros() as u64);
            }
            None => e.active += 1,
        }
    }
    m
}

/// SHOW POOLS: PgBouncer's columns, the database named as configured, plus `shard`.
pub fn pools(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("shard", TEXT),
    ]);
    let clients = app.clients.all();
    let counts = client_counts(app, &clients);
    for p in app.pools.all() {
        let k = &p.key;
        let c = counts
            .get(&(k.database.clone(), k.user.clone(), k.shard.clone()))
            .copied()
            .unwrap_or_default();
        // The pool's own waiting gauge is exact; per-client attribution may lag it.
        let waiting = (p.stats.waiting.load(Ordering::Relaxed) as u64).max(c.waiting);
        let st = &p.stats;
        t.push(vec![
            s(&k.database),
            s(&k.user),
            s(c.active.saturating_sub(waiting.saturating_sub(c.waiting))),
            s(waiting),
            s(0),
            s(0),
            s(st.active.load(Ordering::Relaxed)),
            s(0),
            s(0),
            s(p.idle_count()),
            s(0),
            s(0),
            s(st.connecting.load(Ordering::Relaxed)),
            s(c.maxwait_us / 1_000_000),
            s(c.maxwait_us % 1_000_000),
            s(p.settings.load().mode.as_str()),
            None,
            s(&k.shard),
        ]);
    }
    t
}

fn pools_of<'a>(pools: &'a [Arc<Pool>], db: &'a str) -> impl Iterator<Item = &'a Arc<Pool>> {
    pools.iter().filter(move |p| p.key.database == db)
}

/// SHOW DATABASES: one row per (database, shard), PgBouncer's columns plus `shard`.
pub fn databases(app: &App) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT4),
        ("min_pool_size", INT4),
        ("reserve_pool_size", INT4),
        ("server_lifetime", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("max_connections", INT4),
        ("current_connections", INT4),
        ("max_client_connections", INT4),
        ("current_client_connections", INT4),
        ("paused", INT4),
        ("disabled", INT4),
        ("shard", TEXT),
    ]);
    let snap = app.snapshot.load();
    let pools = app.pools.all();
    let clients = app.clients.all();
    let all_paused = app.admin.paused_all.load(Ordering::Acquire);
    let mut names: Vec<&String> = snap.dbs.keys().collect();
    names.sort();
    for name in names {
        let db = &snap.dbs[name];
        let st = &db.settings;
        let n_clients = clients.iter().filter(|c| *c.database == **name).count();
        let paused = all_paused || app.admin.is_paused(name);
        for sh in &db.cfg.shards {
            let conns: usize = pools_of(&pools, name)
                .filter(|p| p.key.shard == sh.name)
                .map(|p| p.total.load(Ordering::Relaxed))
                .sum();
            t.push(vec![
                s(name),
                s(&sh.host),
                s(sh.port),
                s(db.dbname()),
                db.cfg.server_user.clone(),
                s(st.default_pool_size),
                s(st.min_pool_size),
                s(st.reserve_pool_size),
                s(st.server_lifetime.as_std().as_secs()),
                s(st.mode.as_str()),
                None,
                s(0),
                s(conns),
                s(st.max_db_connections),
                s(n_clients),
                s(i32::from(paused)),
                s(i32::from(app.admin.is_disabled(name))),
                s(&sh.name),
            ]);
        }
    }
    t
}

const SOCKET_COLS: &[(&str, u32)] = &[
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("replication", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT4),
    ("id", INT4),
];

fn client_ptr(id: i32) -> String {
    format!("c{id}")
}

fn server_ptr(pid: i32) -> String {
    format!("s{pid}")
}

/// SHOW CLIENTS (the `id` column is what KILL_CLIENT takes).
pub fn clients(app: &App) -> Table {
    let mut t = Table::new(SOCKET_COLS);
    for c in app.clients.all() {
        let a = &c.activity;
        let wait = a.wait_time();
        let server = c.server.get();
        let state = match (wait, &server) {
            (Some(_), _) => "waiting",
            (None, Some(_)) => "active",
            (None, None) => "idle",
        };
        let wait_us = wait.map(|w| w.as_micros() as u64).unwrap_or(0);
        t.push(vec![
            s("C"),
            s(&c.user),
            s(&c.database),
            s("none"),
            s(state),
            c.addr.map(|a| a.ip().to_string()),
            s(c.addr.map(|a| a.port()).unwrap_or(0)),
            a.local_addr.map(|a| a.ip().to_string()),
            s(a.local_addr.map(|a| a.port()).unwrap_or(0)),
            s(format_time(c.connect_time())),
            s(format_time(a.request_time().unwrap_or(c.connect_time()))),
            s(wait_us / 1_000_000),
            s(wait_us % 1_000_000),
            s(i32::from(c.killed.load(Ordering::Relaxed))),
            s(client_ptr(c.id)),
            s(server.map(|k| server_ptr(k.pid)).unwrap_or_default()),
            s(0),
            s(""),
            s(&a.application_name),
            s(0),
            s(c.id),
        ]);
    }
    t
}

/// SHOW SERVERS: servers linked to a client (active) and idle ones in the pools.
pub fn servers(app: &App) -> Table {
    let mut t = Table::new(SOCKET_COLS);
    let now = Instant::now();
    let wall = SystemTime::now();
    for c in app.clients.all() {
        let Some(k) = c.server.get() else {
            continue;
        };
        t.push(vec![
            s("S"),
            s(&c.user),
            s(&c.database),
            s("none"),
            s("active"),
            s(k.addr.ip()),
            s(k.addr.port()),
            k.local_addr.map(|a| a.ip().to_string()),
            s(k.local_addr.map(|a| a.port()).unwrap_or(0)),
            s(format_time(wall - now.saturating_duration_since(k.created))),
            c.activity.request_time().map(format_time),
            s(0),
            s(0),
            s(0),
            s(server_ptr(k.pid)),
            s(client_ptr(c.id)),
            s(k.pid),
            s(""),
            s(""),
            s(0),
            s(k.pid),
        ]);
    }
    for p in app.pools.all() {
        p.for_each_idle(|conn| {
            let k = &conn.cancel;
            let ago = |i: Instant| wall - now.saturating_duration_since(i);
            t.push(vec![
                s("S"),
                s(&p.key.user),
                s(&p.key.database),
                s("none"),
                s("idle"),
                s(k.addr.ip()),
                s(k.addr.port()),
                conn.local_addr.map(|a| a.ip().to_string()),
                s(conn.local_addr.map(|a| a.port()).unwrap_or(0)),
                s(format_time(ago(conn.created))),
                s(format_time(ago(conn.last_used))),
                s(0),
                s(0),
                s(0),
                s(server_ptr(k.pid)),
                s(""),
                s(k.pid),
                s(""),
                s(""),
                s(0),
                s(k.pid),
            ]);
        });
    }
    t
}

/// Totals per configured database (sorted), summed over users and shards.
pub fn db_totals(app: &App) -> BTreeMap<String, DbTotals> {
    let snap = app.snapshot.load();
    let mut m: BTreeMap<String, DbTotals> = snap
        .dbs
        .keys()
        .map(|k| (k.clone(), DbTotals::default()))
        .collect();
    for p in app.pools.all() {
        m.entry(p.key.database.clone()).or_default().add(&p.stats);
    }
    m
}

const STAT_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

/// Column names of SHOW STATS (`total_*` then `avg_*`; PgBouncer says `avg_recv`).
pub const STATS_COLUMNS: [&str; 25] = [
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];

/// Take a sample: averages become per-second rates (counts, bytes, wait time) and
/// per-transaction / per-query means (xact_time, query_time), as PgBouncer computes.
pub fn sample_averages(app: &App) {
    let cur = db_totals(app);
    app.admin.averages().sample(Instant::now(), cur);
}

/// SHOW STATS
pub fn stats(app: &App) -> Table {
    let cols: Vec<(&'static str, u32)> = STATS_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, if i == 0 { TEXT } else { NUMERIC }))
        .collect();
    let mut t = Table::new(&cols);
    let avg = app.admin.averages();
    for (db, tot) in db_totals(app) {
        let a = avg.get(&db);
        let mut row = vec![s(&db)];
        row.extend(tot.values().iter().map(s));
        row.extend(a.values().iter().map(s));
        t.push(row);
    }
    t
}

fn short_names() -> Vec<(&'static str, u32)> {
    let mut cols = vec![("database", TEXT)];
    for n in STAT_NAMES {
        let n = match n {
            "received" => "bytes_received",
            "sent" => "bytes_sent",
            n => n,
        };
        cols.push((n, NUMERIC));
    }
    cols
}

/// SHOW STATS_TOTALS
pub fn stats_totals(app: &App) -> Table {
    let mut t = Table::new(&short_names());
    for (db, tot) in db_totals(app) {
        let mut row = vec![s(&db)];
        row.extend(tot.values().iter().map(s));
        t.push(row);
    }
    t
}

/// SHOW STATS_AVERAGES
pub fn stats_averages(app: &App) -> Table {
    let mut t = Table::new(&short_names());
    let avg = app.admin.averages();
    for db in db_totals(app).keys() {
        let a = avg.get(db);
        let mut row = vec![s(db)];
        row.extend(a.values().iter().map(s));
        t.push(row);
    }
    t
}

/// SHOW TOTALS: the SHOW STATS columns summed over databases, as name/value rows.
pub fn totals(app: &App) -> Table {
    let mut t = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
    let mut tot = DbTotals::default();
    let mut avg = DbTotals::default();
    let a = app.admin.averages();
    for (db, d) in db_totals(app) {
        let x = a.get(&db);
        for (acc, v) in [(&mut tot, d), (&mut avg, x)] {
            acc.assignments += v.assignments;
            acc.xact += v.xact;
            acc.query += v.query;
            acc.received += v.received;
            acc.sent += v.sent;
            acc.xact_time += v.xact_time;
            acc.query_time += v.query_time;
            acc.wait_time += v.wait_time;
            acc.logins += v.logins;
        }
    }
    let vals: Vec<u64> = tot.values().into_iter().chain(avg.values()).collect();
    for (name, v) in STATS_COLUMNS[1..].iter().zip(vals) {
        t.push(vec![s(name), s(v)]);
    }
    t
}

/// SHOW LISTS
pub fn lists(app: &App) -> Table {
    let mut t = Table::new(&[("list", TEXT), ("items", INT4)]);
    let snap = app.snapshot.load();
    let pools = app.pools.all();
    let used_clients = app.clients.all().len();
    let connected = app.clients.connected();
    let servers: usize = pools.iter().map(|p| p.total.load(Ordering::Relaxed)).sum();
    for (name, n) in [
        ("databases", snap.dbs.len()),
        ("users", snap.config.users.len()),
        ("peers", 0),
        ("pools", pools.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", used_clients),
        ("login_clients", connected.saturating_sub(used_clients)),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
        ("tenants", app.tenants.len()),
    ] {
        t.push(vec![s(name), s(n)]);
    }
    t
}

/// SHOW USERS
pub fn users(app: &App) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("pool_size", TEXT),
        ("reserve_pool_size", TEXT),
        ("pool_mode", TEXT),
        ("max_user_connections", INT4),
        ("current_connections", INT4),
        ("max_user_client_connections", INT4),
        ("current_client_connections", INT4),
    ]);
    let snap = app.snapshot.load();
    let pools = app.pools.all();
    let clients = app.clients.all();
    for u in &snap.config.users {
        let servers: usize = pools
            .iter()
            .filter(|p| p.key.user == u.name)
            .map(|p| p.total.load(Ordering::Relaxed))
            .sum();
        let cl = clients.iter().filter(|c| *c.user == *u.name).count();
        t.push(vec![
            s(&u.name),
            s(""),
            s(""),
            None,
            s(0),
            s(servers),
            s(0),
            s(cl),
        ]);
    }
    t
}

/// SHOW STATE
pub fn state(app: &App) -> Table {
    let mut t = Table::new(&[("key", TEXT), ("value", TEXT)]);
    let paused = app.admin.paused_all.load(Ordering::Acquire);
    let yn = |b: bool| if b { "yes" } else { "no" };
    t.push(vec![s("active"), s(yn(!paused))]);
    t.push(vec![s("paused"), s(yn(paused))]);
    t.push(vec![s("suspended"), s("no")]);
    t
}

/// SHOW SHARDS: one row per (database, shard), servers summed over users.
pub fn shards(app: &App) -> Table {
    let mut t = Table::new(&[
        ("shard", TEXT),
        ("database", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("pool_size", INT4),
        ("active", INT4),
        ("idle", INT4),
        ("overrides", INT4),
        ("state", TEXT),
        ("last_error", TEXT),
    ]);
    let snap = app.snapshot.load_full();
    let pools = app.pools.all();
    let mut names: Vec<&String> = snap.dbs.keys().collect();
    names.sort();
    for name in names {
        let db = &snap.dbs[name];
        for sh in &db.cfg.shards {
            let mine: Vec<&Arc<Pool>> = pools_of(&pools, name)
                .filter(|p| p.key.shard == sh.name)
                .collect();
            let active: usize = mine
                .iter()
                .map(|p| p.stats.active.load(Ordering::Relaxed))
                .sum();
            let idle: usize = mine.iter().map(|p| p.idle_count()).sum();
            let err = mine.iter().find_map(|p| {
                p.stats
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            });
            t.push(vec![
                s(&sh.name),
                s(name),
                s(&sh.host),
                s(sh.port),
                s(db.settings.default_pool_size),
                s(active),
                s(idle),
                s(super::routing::overrides(&snap, name, &sh.name)),
                s(if err.is_some() { "down" } else { "up" }),
                err,
            ]);
        }
    }
    t
}

/// SHOW SHARD_MAP
pub fn shard_map(maps: &[ShardMapInfo]) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("version", INT8),
        ("method", TEXT),
        ("loaded_at", TEXT),
        ("source", TEXT),
        ("overrides", INT8),
        ("ranges", INT8),
    ]);
    for m in maps {
        t.push(vec![
            s(&m.database),
            s(m.version),
            s(&m.method),
            m.loaded_at.map(format_time),
            s(&m.source),
            s(m.overrides),
            s(m.ranges),
        ]);
    }
    t
}

/// SHOW ROUTE: one row per (database, key) decision.
pub fn route(rows: &[(String, String, RouteInfo)]) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("key", TEXT),
        ("shard", TEXT),
        ("reason", TEXT),
        ("map_version", INT8),
    ]);
    for (db, key, r) in rows {
        t.push(vec![
            s(db),
            s(key),
            r.shard.clone(),
            s(&r.reason),
            s(r.map_version),
        ]);
    }
    t
}

/// SHOW TENANTS \[n\]
pub fn tenants(app: &App, n: usize) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("tenant", TEXT),
        ("shard", TEXT),
        ("xact_count", INT8),
        ("query_count", INT8),
        ("total_xact_time", INT8),
        ("avg_xact_time", INT8),
        ("waiting", INT4),
        ("last_seen", TEXT),
        ("paused", INT4),
        ("held", INT4),
        ("active", INT4),
        ("total_wait_time", INT8),
    ]);
    let paused = app.gate.paused();
    // Transactions holding a server now, per (database, canonical tenant).
    let mut active: HashMap<(String, TenantKey), usize> = HashMap::new();
    for p in app.pools.all() {
        for (t, n) in p.fair.snapshot().1 {
            *active.entry((p.key.database.clone(), t)).or_default() += n;
        }
    }
    let snap = app.snapshot.load();
    // Paused tenants are listed even when their statistics are not.
    let mut unlisted: Vec<(TenantKey, usize)> = paused.clone();
    for r in app.tenants.top(n) {
        // The gate knows tenants by their canonical spelling in the map.
        let key = TenantKey::new(r.tenant.as_bytes()).map(|k| {
            snap.dbs
                .get(&r.database)
                .and_then(|db| db.routing.as_ref())
                .and_then(|rt| rt.map.canonical_tenant(&k).ok())
                .unwrap_or(k)
        });
        let p = key.and_then(|k| paused.iter().find(|(pk, _)| *pk == k));
        unlisted.retain(|(pk, _)| Some(*pk) != key);
        t.push(vec![
            s(&r.database),
            s(&r.tenant),
            s(&r.shard),
            s(r.xact_count),
            s(r.query_count),
            s(r.total_xact_time_us),
            s(r.avg_xact_time_us()),
            s(r.waiting),
            s(format_time(r.last_seen)),
            s(u8::from(p.is_some())),
            s(p.map_or(0, |(_, held)| *held)),
            s(key
                .and_then(|k| active.get(&(r.database.clone(), k)))
                .copied()
                .unwrap_or(0)),
            s(r.wait_time_us),
        ]);
    }
    for (k, held) in unlisted {
        t.push(vec![
            s(""),
            s(k.as_str()),
            s(""),
            s(0),
            s(0),
            s(0),
            s(0),
            s(0),
            None,
            s(1),
            s(held),
            s(0),
            s(0),
        ]);
    }
    t
}

/// Whether `name` is one of the console's virtual databases.
pub fn is_admin_db(name: &str) -> bool {
    ADMIN_DBS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_matches_pgbouncer() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_714_566_896);
        assert_eq!(format_time(t), "2024-05-01 12:34:56 UTC");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(format_time(leap), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn durations_show_as_seconds() {
        assert_eq!(secs(crate::config::Duration::from_secs(120)), "120");
        assert_eq!(
            secs(crate::config::Duration::parse("250ms").unwrap()),
            "0.25"
        );
        assert_eq!(secs(crate::config::Duration::ZERO), "0");
    }

    #[test]
    fn stats_columns_follow_pgbouncer() {
        let names = short_names();
        assert_eq!(names.len(), 13);
        assert_eq!(names[4].0, "bytes_received");
        assert_eq!(names[5].0, "bytes_sent");
        assert!(names[1..].iter().all(|c| c.1 == NUMERIC));
        assert_eq!(STATS_COLUMNS.len(), 25);
        assert_eq!(STATS_COLUMNS[16], "avg_recv");
    }

    #[test]
    fn config_table_lists_changeable_keys() {
        let cfg = Config::parse(
            "[pool]\ndefault_pool_size = 7\n[databases.app]\nshards = [ { name = \"s0\", host = \"h\", port = 5432 } ]\n",
        )
        .unwrap();
        let t = config(&cfg);
        assert_eq!(t.names(), ["key", "value", "default", "changeable"]);
        let row = t
            .rows
            .iter()
            .find(|r| r[0].as_deref() == Some("default_pool_size"))
            .unwrap();
        assert_eq!(row[1].as_deref(), Some("7"));
        assert_eq!(row[2].as_deref(), Some("20"));
        assert_eq!(row[3].as_deref(), Some("yes"));
        for k in crate::config::POOL_KEYS.iter().filter(|k| changeable(k)) {
            assert!(
                t.rows.iter().any(|r| r[0].as_deref() == Some(k)),
                "{k} missing from SHOW CONFIG"
            );
        }
    }
}
