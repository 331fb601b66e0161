//! The admin console, end to end: real Postgres, the real binary, psql and tokio-postgres.

mod support;

use std::time::Duration;
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

const ADMIN: (&str, &str) = ("admin", "adminpw");
const STATS: (&str, &str) = ("stats", "statspw");

/// `basic_config` plus an admin and a stats user.
fn config(pg: &PgCluster, pool_extra: &str) -> String {
    format!(
        "{}\n[[users]]\nname = \"admin\"\npassword = \"adminpw\"\n\n[[users]]\nname = \"stats\"\npassword = \"statspw\"\n\n\
         [admin]\nusers = [\"admin\"]\nstats_users = [\"stats\"]\n",
        basic_config(&[pg], pool_extra)
    )
}

struct Res {
    cols: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Res {
    fn col(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.cols))
    }
    /// Value of `col` in the first row whose column `key_col` equals `key`.
    fn get(&self, key_col: &str, key: &str, col: &str) -> Option<String> {
        let k = self.col(key_col);
        let c = self.col(col);
        self.rows
            .iter()
            .find(|r| r[k].as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no row with {key_col}={key}: {:?}", self.rows))[c]
            .clone()
    }
}

async fn q(c: &Client, sql: &str) -> Res {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                cols = d.iter().map(|c| c.name().to_string()).collect()
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => {}
        }
    }
    Res { cols, rows }
}

/// The SQLSTATE and message of a failing console command.
async fn q_err(c: &Client, sql: &str) -> (String, String) {
    let e = c
        .simple_query(sql)
        .await
        .expect_err(&format!("{sql} should fail"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

async fn admin(b: &Bouncer) -> Client {
    b.connect(ADMIN.0, ADMIN.1, "pgbouncer").await
}

async fn app(b: &Bouncer) -> Client {
    b.connect(APP_USER, APP_PASSWORD, "app").await
}

/// Poll `cond` (a console query) until it holds; for state the console reports
/// asynchronously (a client starting to wait), with a generous timeout.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(Duration::from_secs(15), what, cond).await
}

const POOLS_COLS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
    "shard",
];

const SOCKET_COLS: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

const STAT_NAMES: &[&str] = &[
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

#[tokio::test(flavor = "multi_thread")]
async fn show_commands_have_pgbouncer_columns() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    let c = app(&b).await;
    c.simple_query("SELECT 1").await.unwrap();

    let pools = q(&a, "SHOW POOLS").await;
    assert_eq!(pools.cols, POOLS_COLS);
    assert_eq!(pools.get("database", "app", "user").as_deref(), Some("app"));
    assert_eq!(pools.get("database", "app", "shard").as_deref(), Some("s0"));
    assert_eq!(
        pools.get("database", "app", "cl_active").as_deref(),
        Some("1")
    );
    assert_eq!(
        pools.get("database", "app", "sv_idle").as_deref(),
        Some("1")
    );
    assert_eq!(
        pools.get("database", "app", "pool_mode").as_deref(),
        Some("transaction")
    );

    let dbs = q(&a, "show databases;").await;
    assert_eq!(
        dbs.cols,
        [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
            "shard"
        ]
    );
    assert_eq!(dbs.get("name", "app", "port"), Some(pg.port.to_string()));
    assert_eq!(dbs.get("name", "app", "pool_size").as_deref(), Some("5"));
    assert_eq!(dbs.get("name", "app", "shard").as_deref(), Some("s0"));
    assert_eq!(
        dbs.get("name", "app", "current_connections").as_deref(),
        Some("1")
    );

    let clients = q(&a, "SHOW CLIENTS").await;
    assert_eq!(clients.cols, SOCKET_COLS);
    assert_eq!(clients.get("database", "app", "type").as_deref(), Some("C"));
    assert_eq!(
        clients.get("database", "app", "state").as_deref(),
        Some("idle")
    );
    // The console's own connection is listed too.
    assert_eq!(
        clients.get("user", "admin", "database").as_deref(),
        Some("pgbouncer")
    );
    let servers = q(&a, "SELECT SERVERS").await;
    assert_eq!(servers.cols, SOCKET_COLS);
    assert_eq!(
        servers.get("database", "app", "state").as_deref(),
        Some("idle")
    );
    assert_eq!(
        servers.get("database", "app", "port"),
        Some(pg.port.to_string())
    );
    // A server a client holds shows its local end and connect time as an
    // idle one does (probe SS: blank while its state was lent out).
    c.simple_query("BEGIN; SELECT 1").await.unwrap();
    let servers = q(&a, "SHOW SERVERS").await;
    assert_eq!(
        servers.get("database", "app", "state").as_deref(),
        Some("active")
    );
    for col in ["local_addr", "connect_time"] {
        let v = servers.get("database", "app", col);
        assert!(v.as_deref().is_some_and(|v| !v.is_empty()), "{col}: {v:?}");
    }
    assert_ne!(
        servers.get("database", "app", "local_port").as_deref(),
        Some("0")
    );
    c.simple_query("COMMIT").await.unwrap();

    let mut stats_cols = vec!["database".to_string()];
    stats_cols.extend(STAT_NAMES.iter().map(|n| format!("total_{n}")));
    stats_cols.extend(
        STAT_NAMES
            .iter()
            .map(|n| format!("avg_{}", if *n == "received" { "recv" } else { n })),
    );
    assert_eq!(q(&a, "SHOW STATS").await.cols, stats_cols);
    let mut short = vec!["database".to_string()];
    short.extend(STAT_NAMES.iter().map(|n| match *n {
        "received" => "bytes_received".to_string(),
        "sent" => "bytes_sent".to_string(),
        n => n.to_string(),
    }));
    assert_eq!(q(&a, "SHOW STATS_TOTALS").await.cols, short);
    assert_eq!(q(&a, "SHOW STATS_AVERAGES").await.cols, short);
    let totals = q(&a, "SHOW TOTALS").await;
    assert_eq!(totals.cols, ["name", "value"]);
    assert_eq!(totals.rows.len(), 24);
    assert_eq!(q(&a, "SHOW LISTS").await.cols, ["list", "items"]);
    assert_eq!(
        q(&a, "SHOW USERS").await.cols,
        [
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections"
        ]
    );
    let state = q(&a, "SHOW STATE").await;
    assert_eq!(state.get("key", "paused", "value").as_deref(), Some("no"));
    let version = q(&a, "SHOW VERSION").await;
    assert_eq!(version.cols, ["version"]);
    assert!(version.rows[0][0]
        .as_deref()
        .unwrap()
        .starts_with("shardbouncer "));
    let config = q(&a, "SHOW CONFIG").await;
    assert_eq!(config.cols, ["key", "value", "default", "changeable"]);
    assert_eq!(
        config.get("key", "default_pool_size", "value").as_deref(),
        Some("5")
    );

    // Router tables.
    let shards = q(&a, "SHOW SHARDS").await;
    assert_eq!(
        shards.cols,
        [
            "shard",
            "database",
            "host",
            "port",
            "pool_size",
            "active",
            "idle",
            "overrides",
            "state",
            "last_error"
        ]
    );
    assert_eq!(shards.get("shard", "s0", "state").as_deref(), Some("up"));
    assert_eq!(shards.get("shard", "s0", "idle").as_deref(), Some("1"));
    assert_eq!(shards.get("shard", "s0", "overrides").as_deref(), Some("0"));
    let map = q(&a, "SHOW SHARD_MAP").await;
    assert_eq!(
        map.cols,
        [
            "database",
            "version",
            "method",
            "loaded_at",
            "source",
            "overrides",
            "ranges"
        ]
    );
    assert_eq!(map.get("database", "app", "version").as_deref(), Some("0"));
    assert_eq!(
        map.get("database", "app", "source").as_deref(),
        Some("(none)")
    );
    let route = q(&a, "SHOW ROUTE 'acme'").await;
    assert_eq!(
        route.cols,
        ["database", "key", "shard", "reason", "map_version"]
    );
    assert_eq!(route.get("database", "app", "shard").as_deref(), Some("s0"));
    assert_eq!(
        route.get("database", "app", "reason").as_deref(),
        Some("single shard")
    );
    let tenants = q(&a, "SHOW TENANTS 10").await;
    assert_eq!(
        tenants.cols,
        [
            "database",
            "tenant",
            "shard",
            "xact_count",
            "query_count",
            "total_xact_time",
            "avg_xact_time",
            "waiting",
            "last_seen",
            "paused",
            "held",
            "active",
            "total_wait_time"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_sees_pgbouncer_output() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-U", "admin"])
            .args(["-d", "pgbouncer", "-X", "-A", "-F|", "-c", sql])
            .env("PGPASSWORD", "adminpw")
            .output()
            .unwrap()
    };
    let out = psql("SHOW POOLS");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next().unwrap(), POOLS_COLS.join("|"));
    // SHOW HELP answers with a NOTICE, as PgBouncer does.
    let out = psql("show help");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOTICE:  Console usage"), "{err}");
    assert!(err.contains("SHOW HELP|CONFIG|DATABASES"), "{err}");
    // The harness psql (tuples only) works as a stats user too.
    let out = b.psql(STATS.0, STATS.1, "shardbouncer", "SHOW STATE");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "active|yes\npaused|no\nsuspended|no\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_counters_are_exact() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let c = app(&b).await;
    for i in 0..7 {
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query(&format!("SELECT {i}")).await.unwrap();
        c.simple_query("COMMIT").await.unwrap();
    }
    let a = admin(&b).await;
    let s = q(&a, "SHOW STATS").await;
    let v = |col: &str| s.get("database", "app", col).unwrap();
    assert_eq!(v("total_xact_count"), "7");
    assert_eq!(v("total_query_count"), "21");
    assert_eq!(v("total_client_login_count"), "1");
    assert!(v("total_received").parse::<u64>().unwrap() > 0);
    assert!(v("total_sent").parse::<u64>().unwrap() > 0);
    assert!(
        v("total_xact_time").parse::<u64>().unwrap()
            >= v("total_query_time").parse::<u64>().unwrap()
    );
    let t = q(&a, "SHOW STATS_TOTALS").await;
    assert_eq!(t.get("database", "app", "xact_count").as_deref(), Some("7"));
    assert_eq!(
        t.get("database", "app", "query_count").as_deref(),
        Some("21")
    );
    let totals = q(&a, "SHOW TOTALS").await;
    assert_eq!(
        totals.get("name", "total_query_count", "value").as_deref(),
        Some("21")
    );

    // Each autocommit statement is one transaction and one query.
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let s = q(&a, "SHOW STATS").await;
    assert_eq!(
        s.get("database", "app", "total_xact_count").as_deref(),
        Some("10")
    );
    assert_eq!(
        s.get("database", "app", "total_query_count").as_deref(),
        Some("24")
    );
}

/// A RESUME while a PAUSE waits for a running transaction ends the pause:
/// that PAUSE fails (55000) when it would have answered, as PAUSE TENANT
/// does. It answered PAUSE with the database running (probe KK), to an
/// operator about to restart Postgres.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_resumed_while_it_waits_fails() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let a1 = admin(&b).await;
    let a2 = admin(&b).await;
    let busy = app(&b).await;
    busy.simple_query("BEGIN").await.unwrap();
    busy.simple_query("SELECT 1").await.unwrap();
    for target in ["PAUSE app", "PAUSE"] {
        let a = admin(&b).await;
        let cmd = target.to_string();
        let pause = tokio::spawn(async move { a.simple_query(&cmd).await });
        until("SHOW DATABASES says paused", || async {
            q(&a2, "SHOW DATABASES")
                .await
                .get("name", "app", "paused")
                .as_deref()
                == Some("1")
        })
        .await;
        let resume = target.replace("PAUSE", "RESUME");
        a1.simple_query(&resume).await.unwrap();
        // The transaction goes on, and ends: the PAUSE answers then.
        busy.simple_query("SELECT 2").await.unwrap();
        busy.simple_query("COMMIT").await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), pause)
            .await
            .expect("PAUSE answers")
            .unwrap();
        let e = r.expect_err("a PAUSE resumed while it waited succeeded");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{target}: {e}"
        );
        busy.simple_query("BEGIN").await.unwrap();
        busy.simple_query("SELECT 1").await.unwrap();
    }
    // Not paused: new transactions run.
    let c = app(&b).await;
    tokio::time::timeout(Duration::from_secs(10), c.simple_query("SELECT 1"))
        .await
        .expect("a new transaction waits: still paused")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_waits_for_running_transaction_and_holds_new_ones() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let a1 = admin(&b).await;
    let a2 = admin(&b).await;
    let busy = app(&b).await;
    let late = app(&b).await;
    busy.simple_query("BEGIN").await.unwrap();
    busy.simple_query("SELECT 1").await.unwrap();

    let pause = tokio::spawn(async move {
        a1.simple_query("PAUSE").await.unwrap();
        a1
    });
    until("SHOW STATE says paused", || async {
        q(&a2, "SHOW STATE")
            .await
            .get("key", "paused", "value")
            .as_deref()
            == Some("yes")
    })
    .await;
    // A transaction is still running, so PAUSE has not answered.
    assert!(!pause.is_finished());

    // A new transaction is held...
    let held = tokio::spawn(async move {
        let r = late.simple_query("SELECT 42").await.unwrap();
        match &r[1] {
            SimpleQueryMessage::Row(row) => row.get(0).unwrap().to_string(),
            m => panic!("{m:?}"),
        }
    });
    until("the new client waits", || async {
        q(&a2, "SHOW POOLS")
            .await
            .get("database", "app", "cl_waiting")
            .as_deref()
            == Some("1")
    })
    .await;
    let clients = q(&a2, "SHOW CLIENTS").await;
    assert!(
        clients
            .rows
            .iter()
            .any(|r| r[4].as_deref() == Some("waiting")),
        "{:?}",
        clients.rows
    );

    // ...and PAUSE answers once the running transaction ends.
    busy.simple_query("COMMIT").await.unwrap();
    let a1 = tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns after COMMIT")
        .unwrap();
    assert!(!held.is_finished(), "a held query ran during PAUSE");
    // PAUSE closed the servers (so the database could be restarted).
    let pools = q(&a2, "SHOW POOLS").await;
    assert_eq!(
        pools.get("database", "app", "sv_active").as_deref(),
        Some("0")
    );
    // (A server returned in the same instant may be closed by maintenance instead.)
    until("servers closed by PAUSE", || async {
        q(&a2, "SHOW POOLS")
            .await
            .get("database", "app", "sv_idle")
            .as_deref()
            == Some("0")
    })
    .await;
    assert_eq!(q_err(&a1, "PAUSE").await.1, "already suspended/paused");

    q(&a1, "RESUME").await;
    let v = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("held query completes after RESUME")
        .unwrap();
    assert_eq!(v, "42");
    assert_eq!(
        q_err(&a1, "RESUME").await.1,
        "pooler is not paused/suspended"
    );

    // PAUSE of one database, with nothing running, answers at once.
    q(&a1, "PAUSE app").await;
    let dbs = q(&a1, "SHOW DATABASES").await;
    assert_eq!(dbs.get("name", "app", "paused").as_deref(), Some("1"));
    q(&a1, "RESUME app").await;
    busy.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_with_a_broken_file_keeps_the_old_config() {
    let pg = PgCluster::start();
    let good = config(&pg, "");
    let b = Bouncer::start(&good);
    let a = admin(&b).await;
    b.write_config(&format!("{good}\n[pool]\nthis is not toml\n"));
    let (code, msg) = q_err(&a, "RELOAD").await;
    assert_eq!(code, "F0000", "{msg}");
    assert!(msg.contains("RELOAD failed"), "{msg}");
    let cfg = q(&a, "SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("5")
    );
    // The pooler still works.
    app(&b).await.simple_query("SELECT 1").await.unwrap();
    // An empty (truncated) file: every key has a default, but no database
    // and no user; taken, it locked out every client and the console too.
    b.write_config("");
    let (code, msg) = q_err(&a, "RELOAD").await;
    assert_eq!(code, "F0000", "{msg}");
    assert!(msg.contains("[databases."), "{msg}");
    app(&b).await.simple_query("SELECT 1").await.unwrap();
    admin(&b).await.simple_query("SHOW POOLS").await.unwrap();
    // A FIFO in the file's place is refused, never waited on (probe AB: the
    // file watcher's reload blocked the thread that takes logins for good,
    // and a console RELOAD never answered).
    std::fs::remove_file(&b.config_path).unwrap();
    let fifo = std::ffi::CString::new(b.config_path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (code, msg) = tokio::time::timeout(Duration::from_secs(20), q_err(&a, "RELOAD"))
        .await
        .expect("RELOAD answered");
    assert_eq!(code, "F0000", "{msg}");
    assert!(msg.contains("not a regular file"), "{msg}");
    tokio::time::timeout(Duration::from_secs(20), async {
        app(&b).await.simple_query("SELECT 1").await.unwrap()
    })
    .await
    .expect("a login answered");
    std::fs::remove_file(&b.config_path).unwrap();

    b.write_config(&config(&pg, "default_pool_size = 9"));
    q(&a, "RELOAD;").await;
    let cfg = q(&a, "SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("9")
    );
}

/// A database's PAUSE and DISABLE end with it: removed by a reload and added
/// back, it is neither paused nor disabled. They came back with it, and
/// RESUME and ENABLE could not name it while it was gone (probe KK).
#[tokio::test(flavor = "multi_thread")]
async fn a_database_removed_and_added_back_is_neither_paused_nor_disabled() {
    let pg = PgCluster::start();
    let good = config(&pg, "");
    let b = Bouncer::start(&good);
    let a = admin(&b).await;
    q(&a, "PAUSE app").await;
    q(&a, "DISABLE app").await;
    b.write_config(&good.replace("[databases.app]", "[databases.other]"));
    q(&a, "RELOAD").await;
    b.write_config(&good);
    q(&a, "RELOAD").await;
    let dbs = q(&a, "SHOW DATABASES").await;
    assert_eq!(dbs.get("name", "app", "paused").as_deref(), Some("0"));
    assert_eq!(dbs.get("name", "app", "disabled").as_deref(), Some("0"));
    let c = app(&b).await;
    tokio::time::timeout(Duration::from_secs(10), c.simple_query("SELECT 1"))
        .await
        .expect("still paused")
        .unwrap();
}

/// A malformed Query to the console gets 08P01 and the connection closes,
/// as on an application database: one without its NUL ran, and NULs inside
/// one were dropped, the pieces run together (probe).
#[test]
fn a_malformed_query_to_the_console_ends_the_connection() {
    use std::io::Write;
    let pg = PgCluster::start();
    let cfg = config(&pg, "").replace("type = \"scram-sha-256\"", "type = \"trust\"");
    let b = Bouncer::start(&cfg);
    for body in [&b"SHOW VERSION"[..], b"SHOW VERSION\0GARBAGE\0"] {
        let (mut c, login) = support::raw::Raw::startup(b.port, "admin", "pgbouncer", &[]);
        assert!(login.iter().any(|(t, _)| *t == b'Z'), "{login:?}");
        let mut m = vec![b'Q'];
        m.extend(((body.len() + 4) as i32).to_be_bytes());
        m.extend(body);
        c.s.write_all(&m).unwrap();
        let msgs: Vec<_> = std::iter::from_fn(|| c.read_msg()).collect();
        assert_eq!(
            support::raw::error_codes(&msgs),
            ["08P01"],
            "{body:?}: {msgs:?}"
        );
        assert!(!msgs.iter().any(|(t, _)| *t == b'D'), "{body:?}: {msgs:?}");
    }
    // A well-formed one runs.
    let mut c = support::raw::Raw::login(b.port, "admin", "pgbouncer");
    c.query("SHOW VERSION");
    let m = c.run(1);
    assert!(support::raw::error_codes(&m).is_empty(), "{m:?}");
}

/// A console query past the console's 64 KiB limit is refused with an error
/// the client can read (08P01), then the end of the stream: the connection
/// was reset with the query's rest unread, and the error lost (probe KK).
#[test]
fn a_console_query_past_its_limit_gets_its_error_before_the_end() {
    let pg = PgCluster::start();
    let cfg = config(&pg, "").replace("type = \"scram-sha-256\"", "type = \"trust\"");
    let b = Bouncer::start(&cfg);
    for size in [70_000usize, 200_000] {
        let (mut c, login) = support::raw::Raw::startup(b.port, "admin", "pgbouncer", &[]);
        assert!(login.iter().any(|(t, _)| *t == b'Z'), "{login:?}");
        let body = format!("SHOW ROUTE '{}'\0", "x".repeat(size));
        let mut m = vec![b'Q'];
        m.extend(((body.len() + 4) as i32).to_be_bytes());
        m.extend(body.as_bytes());
        let (msgs, end) = support::raw::send_and_read_to_close(&mut c.s, m);
        assert_eq!(
            support::raw::error_codes(&msgs),
            ["08P01"],
            "{size}: {msgs:?}"
        );
        assert!(end.is_ok(), "{size}: the connection was reset: {end:?}");
    }
}

/// KILL_CLIENT reaches clients that send nothing more: one in the middle of a
/// transaction (its server attached, so it neither lingers nor parks) and one
/// idle between transactions that never sleeps (`client_hibernate_after =
/// "0"`). The pooler closes each with no byte from its client: the KILL itself
/// wakes the session (its wake-ups are registered with its task once, then
/// polled only while their flag is up).
#[tokio::test(flavor = "multi_thread")]
async fn kill_client_closes_clients_that_send_nothing() {
    let pg = PgCluster::start();
    let cfg = config(&pg, "").replacen(
        "[pool]",
        "[limits]\nclient_hibernate_after = \"0\"\n[pool]",
        1,
    );
    let b = Bouncer::start(&cfg);
    let a = admin(&b).await;
    let (in_tx, in_tx_conn) = b.connect_watched().await;
    in_tx.simple_query("BEGIN; SELECT 1").await.unwrap();
    let (idle, idle_conn) = b.connect_watched().await;
    idle.simple_query("SELECT 1").await.unwrap();
    let clients = q(&a, "SHOW CLIENTS").await;
    let (id_col, db_col) = (clients.col("id"), clients.col("database"));
    let mut ids: Vec<i64> = clients
        .rows
        .iter()
        .filter(|r| r[db_col].as_deref() == Some("app"))
        .map(|r| r[id_col].as_deref().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 2);
    // In the order they connected: the one in a transaction first.
    for (id, conn) in [(ids[0], in_tx_conn), (ids[1], idle_conn)] {
        q(&a, &format!("KILL_CLIENT {id}")).await;
        let closed = tokio::time::timeout(Duration::from_secs(20), conn).await;
        assert!(
            closed.is_ok(),
            "client {id} was not closed after KILL_CLIENT"
        );
    }
    // The transaction's server went back (reset) for others.
    let other = app(&b).await;
    other.simple_query("SELECT 1").await.unwrap();
    drop((in_tx, idle));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_client_disable_enable_kill_reconnect() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    let victim = app(&b).await;
    let other = app(&b).await;
    victim.simple_query("SELECT 1").await.unwrap();
    let clients = q(&a, "SHOW CLIENTS").await;
    let (id_col, db_col) = (clients.col("id"), clients.col("database"));
    let ids: Vec<String> = clients
        .rows
        .iter()
        .filter(|r| r[db_col].as_deref() == Some("app"))
        .map(|r| r[id_col].clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    // The victim connected first, so it has the lower id.
    let victim_id = ids
        .iter()
        .min_by_key(|s| s.parse::<i32>().unwrap())
        .unwrap();
    q(&a, &format!("KILL_CLIENT {victim_id}")).await;
    let e = victim.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        victim.is_closed() || e.to_string().contains("killed") || e.as_db_error().is_some(),
        "{e:?}"
    );
    other.simple_query("SELECT 1").await.unwrap();
    let (code, msg) = q_err(&a, "KILL_CLIENT 999999").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42704", "client not found"));

    // DISABLE refuses new logins with a clear error; existing clients keep working.
    q(&a, "DISABLE app").await;
    let e = b
        .try_connect(APP_USER, APP_PASSWORD, "app")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert!(db.message().contains("disabled"), "{}", db.message());
    // Told only after the password, as Postgres tells an unknown database
    // (probe K: said first, it told anyone the database exists).
    let e = b.try_connect(APP_USER, "wrong", "app").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28P01", "{}", db.message());
    other.simple_query("SELECT 1").await.unwrap();
    let dbs = q(&a, "SHOW DATABASES").await;
    assert_eq!(dbs.get("name", "app", "disabled").as_deref(), Some("1"));
    q(&a, "ENABLE app").await;
    let again = app(&b).await;
    again.simple_query("SELECT 1").await.unwrap();

    // RECONNECT closes idle servers; the next query gets a fresh one.
    q(&a, "RECONNECT app").await;
    assert_eq!(
        q(&a, "SHOW POOLS")
            .await
            .get("database", "app", "sv_idle")
            .as_deref(),
        Some("0")
    );
    again.simple_query("SELECT 1").await.unwrap();

    // KILL app drops every client of the database and, as PgBouncer's does,
    // leaves it paused: a client that comes back waits for RESUME (a failover
    // script's KILL, switch, RESUME must not let clients reach the old
    // servers in between).
    q(&a, "KILL app").await;
    for c in [&other, &again] {
        assert!(c.simple_query("SELECT 1").await.is_err());
    }
    assert_eq!(
        q_err(&a, "KILL nosuchdb").await.1,
        "no such database: nosuchdb"
    );
    let dbs = q(&a, "SHOW DATABASES").await;
    assert_eq!(dbs.get("name", "app", "paused").as_deref(), Some("1"));
    let back = app(&b).await;
    let held = tokio::spawn(async move { back.simple_query("SELECT 1").await.map(|_| ()) });
    until("the returning client waits", || async {
        q(&a, "SHOW POOLS")
            .await
            .get("database", "app", "cl_waiting")
            .as_deref()
            == Some("1")
    })
    .await;
    assert!(!held.is_finished(), "a query ran on a killed database");
    assert_eq!(
        q_err(&a, "PAUSE app").await.1,
        "database app is already paused"
    );
    q(&a, "RESUME app").await;
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held query runs after RESUME")
        .unwrap()
        .unwrap();
    app(&b).await.simple_query("SELECT 1").await.unwrap();

    // KILL with no database kills and pauses them all, until RESUME.
    let c = app(&b).await;
    q(&a, "KILL").await;
    assert!(c.simple_query("SELECT 1").await.is_err());
    let state = q(&a, "SHOW STATE").await;
    assert_eq!(state.get("key", "paused", "value").as_deref(), Some("yes"));
    q(&a, "RESUME").await;
    app(&b).await.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn privileges_syntax_and_extended_protocol() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    // A plain user may not reach the console at all.
    let e = b
        .try_connect(APP_USER, APP_PASSWORD, "pgbouncer")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    // A stats user may SHOW but not control.
    let s = b.connect(STATS.0, STATS.1, "pgbouncer").await;
    q(&s, "SHOW POOLS").await;
    for cmd in [
        "PAUSE",
        "RELOAD",
        "KILL_CLIENT 1",
        "SET default_pool_size = 3",
        "SHUTDOWN",
    ] {
        assert_eq!(
            q_err(&s, cmd).await,
            ("42501".to_string(), "admin access needed".to_string()),
            "{cmd}"
        );
    }
    let a = admin(&b).await;
    let (code, msg) = q_err(&a, "FROBNICATE").await;
    assert_eq!(code, "42601");
    assert!(msg.contains("unknown command"), "{msg}");
    assert_eq!(q_err(&a, "SHOW NOTHING").await.0, "42601");
    // Extended protocol gets an error, and the connection stays usable.
    let e = a.query("SHOW POOLS", &[]).await.unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("extended query protocol not supported by admin console"),
        "{e:?}"
    );
    q(&a, "SHOW VERSION").await;
    // An empty query is fine.
    a.simple_query("").await.unwrap();

    // Rights follow the live config, not the one in force at login: a reload
    // that moves the admin to stats_users and drops the stats user takes their
    // rights from the sessions already open.
    let demoted = config(&pg, "").replace(
        "users = [\"admin\"]\nstats_users = [\"stats\"]",
        "users = []\nstats_users = [\"admin\"]",
    );
    assert_ne!(demoted, config(&pg, ""), "the test must change the lists");
    b.write_config(&demoted);
    q(&a, "RELOAD").await;
    assert_eq!(
        q_err(&a, "PAUSE").await,
        ("42501".to_string(), "admin access needed".to_string())
    );
    q(&a, "SHOW POOLS").await;
    let e = s.simple_query("SHOW POOLS").await.unwrap_err();
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(db.code().code(), "42501", "{db:?}");
    assert!(db.message().contains("no longer allowed"), "{db:?}");
    assert!(s.is_closed() || s.simple_query("SHOW POOLS").await.is_err());
}

/// Regression: shrinking `default_pool_size` while every server was busy never took
/// effect. Only free permits can be removed at once; the others came back with their
/// servers, and the servers stayed open. Now the pool converges to the new size as
/// the servers are returned.
#[tokio::test(flavor = "multi_thread")]
async fn shrinking_a_busy_pool_converges_to_the_new_size() {
    a_busy_pool_converges_to_a_lowered("default_pool_size").await;
}

/// Regression (stop-34 probe O, f6): a lowered `max_db_connections` or
/// `max_user_connections` held back new servers but left the busy ones open
/// above it until they aged out.
#[tokio::test(flavor = "multi_thread")]
async fn lowering_a_shared_cap_closes_the_busy_servers_above_it() {
    a_busy_pool_converges_to_a_lowered("max_db_connections").await;
    a_busy_pool_converges_to_a_lowered("max_user_connections").await;
}

/// Server connections of role `app` open on `pg`.
fn servers_of_app(pg: &PgCluster) -> usize {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
    )
    .parse::<usize>()
    .unwrap()
}

/// Idle servers above a lowered shared cap are closed at once, not when they
/// age out (probe X: four idle servers stayed above `max_db_connections = 1`).
#[tokio::test(flavor = "multi_thread")]
async fn lowering_a_shared_cap_closes_the_idle_servers_above_it() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, "default_pool_size = 10"));
    let a = admin(&b).await;
    let servers_on_shard = || servers_of_app(&pg);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = app(&b).await;
        c.simple_query("BEGIN; SELECT 1").await.unwrap();
        clients.push(c);
    }
    for c in &clients {
        c.simple_query("COMMIT").await.unwrap();
    }
    assert_eq!(servers_on_shard(), 4);
    q(&a, "SET max_db_connections = 1").await;
    eventually(
        Duration::from_secs(10),
        "the idle servers above the cap were not closed",
        || async { servers_on_shard() <= 1 },
    )
    .await;
    // And the pool still serves.
    clients[0].simple_query("SELECT 1").await.unwrap();
}

/// Ten servers busy, then `SET <setting> = 2`: once the work moves on, two
/// servers are left on the shard, and load does not open more.
async fn a_busy_pool_converges_to_a_lowered(setting: &str) {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, "default_pool_size = 10"));
    let a = admin(&b).await;
    let servers_on_shard = || servers_of_app(&pg);
    // Ten clients in transactions: all ten servers of the pool are busy.
    let mut clients = Vec::new();
    for _ in 0..10 {
        let c = app(&b).await;
        c.simple_query("BEGIN; SELECT 1").await.unwrap();
        clients.push(c);
    }
    assert_eq!(servers_on_shard(), 10);
    q(&a, &format!("SET {setting} = 2")).await;
    for c in &clients {
        c.simple_query("COMMIT").await.unwrap();
    }
    // Load again, more than two servers could take at once.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    c.simple_query("SELECT pg_sleep(0.02)").await.unwrap();
                }
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // Servers are closed in the background: wait for the count, bounded.
    eventually(
        Duration::from_secs(10),
        format!("{setting}: the pool never shrank to 2 servers on the shard"),
        || async { servers_on_shard() <= 2 },
    )
    .await;
    assert!(q(&a, "SHOW SERVERS").await.rows.len() <= 2);
    // And it stays there under load.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    c.simple_query("SELECT pg_sleep(0.02)").await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(servers_on_shard() <= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_changes_live_settings() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    let c = app(&b).await;
    c.simple_query("SELECT 1").await.unwrap();
    q(&a, "SET default_pool_size = 3").await;
    q(&a, "set query_wait_timeout to '7'").await;
    q(&a, "SET server_idle_timeout = 250ms").await;
    let cfg = q(&a, "SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("3")
    );
    assert_eq!(
        cfg.get("key", "query_wait_timeout", "value").as_deref(),
        Some("7")
    );
    assert_eq!(
        cfg.get("key", "server_idle_timeout", "value").as_deref(),
        Some("0.25")
    );
    assert_eq!(
        q(&a, "SHOW DATABASES")
            .await
            .get("name", "app", "pool_size")
            .as_deref(),
        Some("3")
    );
    // The live pool follows: its idle server expires after 250ms.
    until("idle server expired", || async {
        q(&a, "SHOW POOLS")
            .await
            .get("database", "app", "sv_idle")
            .as_deref()
            == Some("0")
    })
    .await;
    // A size past what a pool can hold is refused, not a crashed console.
    assert_eq!(
        q_err(&a, "SET default_pool_size = 18446744073709551615")
            .await
            .0,
        "22023"
    );
    q(&a, "SHOW VERSION").await;
    assert_eq!(q_err(&a, "SET min_pool_size = 10").await.0, "22023");
    assert_eq!(q_err(&a, "SET listen_addr = 'x'").await.0, "22023");
    assert_eq!(q_err(&a, "SET default_pool_size = lots").await.0, "22023");
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_exits_cleanly() {
    let pg = PgCluster::start();
    let mut b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    let c = app(&b).await;
    c.simple_query("SELECT 1").await.unwrap();
    let _ = a.simple_query("SHUTDOWN").await;
    let st = b
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("process exits after SHUTDOWN");
    assert!(st.success(), "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_wait_for_clients_waits_for_the_last_client() {
    let pg = PgCluster::start();
    let mut b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    let c = app(&b).await;
    c.simple_query("SELECT 1").await.unwrap();
    q(&a, "SHUTDOWN WAIT_FOR_CLIENTS").await;
    // New logins are refused while the existing client keeps working.
    let e = b
        .try_connect(APP_USER, APP_PASSWORD, "app")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "57P01");
    c.simple_query("SELECT 2").await.unwrap();
    assert!(b.wait_exit(Duration::from_millis(0)).await.is_none());
    drop(c);
    let st = b
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits once the last client left");
    assert!(st.success(), "{st}");
}

/// `(user, database)` of every row of SHOW CLIENTS, sorted.
async fn client_list(c: &Client) -> Vec<(String, String)> {
    let r = q(c, "SHOW CLIENTS").await;
    let (u, d) = (r.col("user"), r.col("database"));
    let mut v: Vec<(String, String)> = r
        .rows
        .iter()
        .map(|row| (row[u].clone().unwrap(), row[d].clone().unwrap()))
        .collect();
    v.sort();
    v
}

/// `sql` fails with 42601 and the same connection still answers.
async fn syntax_error_then_usable(c: &Client, sql: &str) {
    let (code, msg) = q_err(c, sql).await;
    assert_eq!(code, "42601", "{sql:?}: {msg}");
    let v = q(c, "SHOW VERSION").await;
    assert_eq!(v.rows.len(), 1, "{sql:?}");
}

fn pair(user: &str, db: &str) -> (String, String) {
    (user.to_string(), db.to_string())
}

/// Regression: `SET x = =` panicked the console task. The parser runs before the
/// role check, so a stats user could do it, and every panic leaked a
/// max_client_conn slot and left a ghost in SHOW CLIENTS, until all logins got
/// 53300. Now it is a 42601 like any syntax error and the console stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_commands_are_syntax_errors_and_leak_no_client_slots() {
    const MAX_CLIENT_CONN: usize = 4;
    let pg = PgCluster::start();
    let b = Bouncer::start(&format!(
        "{}\n[limits]\nmax_client_conn = {MAX_CLIENT_CONN}\n",
        config(&pg, "")
    ));
    let s = b.connect(STATS.0, STATS.1, "pgbouncer").await;

    // Several on one connection, as a stats user (parsing comes before the role check).
    for _ in 0..4 {
        syntax_error_then_usable(&s, "SET x = =").await;
    }
    for sql in [
        "SET x = =;",
        "set x==",
        "SET = 1",
        "SET x TO =",
        "SHOW =",
        "=",
        "'",
        "\"",
        "SHOW ROUTE 'unterminated",
        "SET \"\" = 1",
        "SET ключ = =",
        "SHOW ROUTE '日本語",
        "😀",
    ] {
        syntax_error_then_usable(&s, sql).await;
    }

    // Twelve on fresh connections (three leaked slots used to lock everyone out
    // here). Each connection's slot and registry entry go when it closes.
    for i in 0..12 {
        let db = if i % 2 == 0 {
            "pgbouncer"
        } else {
            "shardbouncer"
        };
        let c = b.connect(STATS.0, STATS.1, db).await;
        syntax_error_then_usable(&c, "SET x = =").await;
        if i % 3 == 0 {
            syntax_error_then_usable(&c, "SET x = =").await;
        }
        let mut live = vec![pair("stats", "pgbouncer"), pair("stats", db)];
        live.sort();
        assert_eq!(client_list(&s).await, live);
        drop(c);
        until("the closed console client leaves SHOW CLIENTS", || async {
            client_list(&s).await == [pair("stats", "pgbouncer")]
        })
        .await;
    }
    syntax_error_then_usable(&s, "SET x = =").await;

    // Every slot is free again: applications connect (no 53300) ...
    let a1 = app(&b).await;
    a1.simple_query("SELECT 1").await.unwrap();
    let a2 = app(&b).await;
    let s2 = b.connect(STATS.0, STATS.1, "shardbouncer").await;
    a2.simple_query("SELECT 1").await.unwrap();
    // ... up to exactly max_client_conn, and not one more.
    let e = b
        .try_connect(APP_USER, APP_PASSWORD, "app")
        .await
        .expect_err("one client over max_client_conn");
    assert_eq!(e.as_db_error().unwrap().code().code(), "53300", "{e:?}");
    // SHOW CLIENTS lists exactly the live clients: no ghosts.
    let mut want = vec![
        pair(APP_USER, "app"),
        pair(APP_USER, "app"),
        pair("stats", "pgbouncer"),
        pair("stats", "shardbouncer"),
    ];
    want.sort();
    assert_eq!(want.len(), MAX_CLIENT_CONN);
    assert_eq!(client_list(&s2).await, want);
    a1.simple_query("SELECT 2").await.unwrap();
}

/// PAUSE holds work on pools made after it too (a pooler that had no pool
/// for the database yet, a new user or shard): a probe's INSERT sent right
/// after PAUSE returned ran, because new pools were held only by a
/// once-a-second sweep. The same for KILL, which leaves the database paused.
/// (A pool's first login waits too, as in PgBouncer: it needs a server to
/// learn the parameters it announces.)
#[tokio::test(flavor = "multi_thread")]
async fn pause_and_kill_hold_pools_made_after_them() {
    let pg = PgCluster::start();
    pg.psql("app", "CREATE TABLE held (n int); GRANT ALL ON held TO app");
    let b = Bouncer::start(&config(&pg, ""));
    let a = admin(&b).await;
    // Round 1: no pool of app exists yet (fresh pooler). Round 2: KILL, with
    // the pool of round 1 there.
    for pause in ["PAUSE app", "KILL app"] {
        q(&a, pause).await;
        let conn = b.conn_str(APP_USER, APP_PASSWORD, "app");
        let run = tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.simple_query("INSERT INTO held VALUES (1)")
                .await
                .map(|_| ())
        });
        until("the client waits", || async {
            let pools = q(&a, "SHOW POOLS").await;
            let (db, w) = (pools.col("database"), pools.col("cl_waiting"));
            pools
                .rows
                .iter()
                .any(|r| r[db].as_deref() == Some("app") && r[w].as_deref() == Some("1"))
        })
        .await;
        assert_eq!(
            pg.psql("app", "SELECT count(*) FROM held"),
            "0",
            "{pause}: the insert ran"
        );
        q(&a, "RESUME app").await;
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the insert runs after RESUME")
            .unwrap()
            .unwrap();
        assert_eq!(pg.psql("app", "SELECT count(*) FROM held"), "1");
        pg.psql("app", "TRUNCATE held");
    }
}

/// KILL_CLIENT and KILL of its database end a client queued for a server at
/// once, with 57P01, and its work never runs (probe O: it stayed queued until
/// a server freed up, for ever behind a client idle in its transaction).
#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_a_client_queued_for_a_server() {
    let pg = PgCluster::start();
    pg.psql("app", "CREATE TABLE t (x int); GRANT ALL ON t TO app");
    let b = Bouncer::start(&config(
        &pg,
        "default_pool_size = 1\nquery_wait_timeout = \"60s\"",
    ));
    let a = admin(&b).await;
    let holder = app(&b).await;
    holder.simple_query("BEGIN; SELECT 1").await.unwrap();
    for kill in ["KILL_CLIENT", "KILL app"] {
        let queued = app(&b).await;
        let work =
            tokio::spawn(async move { queued.simple_query("INSERT INTO t VALUES (1)").await });
        until("the client to queue", || async {
            support::clients_waiting(&a, "app").await == 1
        })
        .await;
        let cmd = if kill == "KILL_CLIENT" {
            let clients = q(&a, "SHOW CLIENTS").await;
            let (id, state) = (clients.col("id"), clients.col("state"));
            let row = clients
                .rows
                .iter()
                .find(|r| r[state].as_deref() == Some("waiting"))
                .expect("a waiting client");
            format!("KILL_CLIENT {}", row[id].as_deref().unwrap())
        } else {
            kill.to_string()
        };
        q(&a, &cmd).await;
        let e = tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .unwrap_or_else(|_| panic!("{cmd} left the queued client waiting"))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("57P01"), "{cmd}: {e}");
        if kill != "KILL_CLIENT" {
            break;
        }
    }
    assert_eq!(pg.psql("app", "SELECT count(*) FROM t"), "0");
}

/// KILL_CLIENT ends a client whose login waits for its pool's first server
/// (a shard that is down), at once, with 57P01 (probe Q: it waited out
/// `server_connect_timeout`, then logged in).
#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_a_login_waiting_for_the_first_server() {
    let pg = PgCluster::start();
    let down = support::free_port();
    let cfg = config(&pg, "server_connect_timeout = \"30s\"")
        .replace(&format!("port = {}", pg.port), &format!("port = {down}"));
    let b = Bouncer::start(&cfg);
    let a = admin(&b).await;
    let conn_str = b.conn_str(APP_USER, APP_PASSWORD, "app");
    let login = tokio::spawn(async move {
        tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .map(|_| ())
    });
    let id = support::eventually_ok(Duration::from_secs(15), || async {
        let clients = q(&a, "SHOW CLIENTS").await;
        let (id_col, db) = (clients.col("id"), clients.col("database"));
        clients
            .rows
            .iter()
            .find(|r| r[db].as_deref() == Some("app"))
            .map(|r| r[id_col].clone().unwrap())
            .ok_or_else(|| "the login does not show".to_string())
    })
    .await;
    q(&a, &format!("KILL_CLIENT {id}")).await;
    let r = tokio::time::timeout(Duration::from_secs(10), login)
        .await
        .expect("the login still waits")
        .unwrap();
    let e = r.expect_err("logged in after KILL_CLIENT");
    assert_eq!(e.code().map(|c| c.code()), Some("57P01"), "{e}");
}
