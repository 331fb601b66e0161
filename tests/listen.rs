//! IPv6: shardbouncer listening on `[::1]` and on the dual-stack `[::]`, clients
//! connecting over IPv6 with tokio-postgres, and shards reached at an IPv6
//! address. `[listen] addr` is one socket address; a list is refused.
//!
//! A machine without an IPv6 loopback cannot run these: each test checks by
//! binding `[::1]:0` and, if that fails, says why and returns early.

mod support;

use std::net::{IpAddr, Ipv6Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{eventually, eventually_ok, Bouncer, PgCluster};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Whether this machine has `::1`; prints why not when it has not.
fn have_ipv6_loopback() -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: this machine has no IPv6 loopback (binding [::1]:0 failed: {e})");
            false
        }
    }
}

/// One plain database `app` over `shards` (TOML shard tables), listening on `listen`.
fn config(listen: &str, shards: &str, extra: &str) -> String {
    format!(
        r#"[listen]
addr = "{listen}"
[pool]
default_pool_size = 3
server_connect_timeout = "2s"
[auth]
type = "scram-sha-256"
[[users]]
name = "app"
password = "secret"
[[users]]
name = "admin"
password = "admin"
[admin]
users = ["admin"]
[databases.app]
server_user = "app"
server_password = "secret"
shards = [ {shards} ]
{extra}
"#
    )
}

fn v4_shard(name: &str, pg: &PgCluster) -> String {
    format!(
        "{{ name = \"{name}\", host = \"127.0.0.1\", port = {} }}",
        pg.port
    )
}

fn v6_shard(name: &str, pg: &PgCluster) -> String {
    format!(
        "{{ name = \"{name}\", host = \"::1\", port = {} }}",
        pg.port
    )
}

/// Connect with tokio-postgres to `host` (an IP literal, e.g. `::1`).
async fn connect_at(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    extra: &str,
) -> Result<Client, tokio_postgres::Error> {
    let cs = format!("host={host} port={port} user={user} password={password} dbname={db} {extra}");
    let (c, conn) = tokio_postgres::connect(&cs, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| format!("{e}: {:?}", std::error::Error::source(e)))
}

async fn text(c: &Client, sql: &str) -> String {
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", msg(&e)))
    {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or("").to_string();
        }
    }
    panic!("{sql}: no row")
}

/// Named columns of every row of a console SHOW.
async fn show(admin: &Client, cmd: &str, cols: &[&str]) -> Vec<Vec<String>> {
    admin
        .simple_query(cmd)
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {}", msg(&e)))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                cols.iter()
                    .map(|c| r.get(*c).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Run `SELECT pg_sleep(30)` on `victim`, wait until `pg` runs it, cancel it with
/// the client's cancel token (tokio-postgres sends the CancelRequest to the host
/// it connected to), and check the query ended with 57014 and the client lives.
async fn cancel_a_running_query(victim: Client, pg: &PgCluster, marker: &str) {
    let token = victim.cancel_token();
    let sql = format!("SELECT pg_sleep(30) /* {marker} */");
    let q = sql.clone();
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let r = victim.simple_query(&q).await.map(|_| ());
        (r, started.elapsed(), victim)
    });
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = '{}' AND state = 'active'",
        sql.replace('\'', "''")
    );
    eventually(
        Duration::from_secs(10),
        "the query never started",
        || async { pg.psql("postgres", &running) == "1" },
    )
    .await;
    token
        .cancel_query(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cancel request: {}", msg(&e)));
    let (r, took, victim) = slow.await.unwrap();
    let e = r.expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{}", msg(&e));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(text(&victim, "SELECT 'still usable'").await, "still usable");
}

/// `[listen] addr = "[::1]:PORT"`: tokio-postgres over IPv6 logs in, runs simple
/// and extended queries and a transaction, the console sees the client at `::1`,
/// a cancel request over IPv6 cancels the query, and 127.0.0.1 is not listened on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_listener_serves_clients() {
    if !have_ipv6_loopback() {
        return;
    }
    let pg = PgCluster::start();
    pg.psql(
        "app",
        "CREATE TABLE v6_items (id int PRIMARY KEY, note text); GRANT ALL ON v6_items TO app;",
    );
    let b = Bouncer::start_listening_on(
        V6_LOOPBACK,
        &config("[::1]:{PORT}", &v4_shard("s0", &pg), ""),
        &[],
    );
    assert!(
        b.log().contains(&format!("listening on [::1]:{}", b.port)),
        "{}",
        b.log()
    );
    let mut c = connect_at("::1", b.port, "app", "secret", "app", "")
        .await
        .unwrap_or_else(|e| panic!("connect over IPv6: {}", msg(&e)));
    assert_eq!(
        text(&c, "SELECT current_setting('port')").await,
        pg.port.to_string()
    );
    let row = c.query_one("SELECT $1::int + 1", &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO v6_items VALUES ($1, $2)",
        &[&1i32, &"committed"],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO v6_items VALUES ($1, $2)",
        &[&2i32, &"rolled back"],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        pg.psql("app", "SELECT string_agg(note, ',') FROM v6_items"),
        "committed"
    );

    // The console (itself reached over IPv6) shows the client's IPv6 addresses.
    let admin = connect_at("::1", b.port, "admin", "admin", "pgbouncer", "")
        .await
        .unwrap_or_else(|e| panic!("console over IPv6: {}", msg(&e)));
    let clients = show(
        &admin,
        "SHOW CLIENTS",
        &["database", "addr", "local_addr", "local_port"],
    )
    .await;
    let app_clients: Vec<_> = clients.iter().filter(|r| r[0] == "app").collect();
    assert_eq!(app_clients.len(), 1, "{clients:?}");
    assert_eq!(
        app_clients[0][1..],
        ["::1".to_string(), "::1".to_string(), b.port.to_string()],
        "{clients:?}"
    );

    // Several clients at once over IPv6, sharing the pool of 3.
    let mut tasks = Vec::new();
    for i in 0..8i32 {
        let port = b.port;
        tasks.push(tokio::spawn(async move {
            let c = connect_at("::1", port, "app", "secret", "app", "")
                .await
                .unwrap();
            for j in 0..10i32 {
                let r = c.query_one("SELECT $1::int * 2", &[&(i * 100 + j)]).await;
                assert_eq!(r.unwrap().get::<_, i32>(0), (i * 100 + j) * 2);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    cancel_a_running_query(c, &pg, "v6 listener").await;

    // Only ::1 is listened on.
    let e = TcpStream::connect(("127.0.0.1", b.port))
        .expect_err("127.0.0.1 accepted a connection on the IPv6-only listener's port");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

/// `[listen] addr = "[::]:PORT"` (the dual-stack form): IPv6 clients connect, and
/// IPv4 clients too when the kernel maps them onto IPv6 sockets
/// (`net.ipv6.bindv6only = 0`, Linux's default); with `bindv6only = 1` IPv4 is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_listener_accepts_ipv6_and_mapped_ipv4() {
    if !have_ipv6_loopback() {
        return;
    }
    let pg = PgCluster::start();
    let b = Bouncer::start_listening_on(
        V6_LOOPBACK,
        &config("[::]:{PORT}", &v4_shard("s0", &pg), ""),
        &[],
    );
    let v6 = connect_at("::1", b.port, "app", "secret", "app", "")
        .await
        .unwrap_or_else(|e| panic!("connect over IPv6: {}", msg(&e)));
    assert_eq!(
        text(&v6, "SELECT current_setting('port')").await,
        pg.port.to_string()
    );
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    let v4 = connect_at("127.0.0.1", b.port, "app", "secret", "app", "").await;
    if v6only {
        let Err(e) = v4 else {
            panic!("IPv4 reached an [::] listener with bindv6only = 1");
        };
        eprintln!("net.ipv6.bindv6only = 1: IPv4 refused as expected ({e})");
        return;
    }
    let v4 = v4.unwrap_or_else(|e| panic!("connect over IPv4 to [::]: {}", msg(&e)));
    assert_eq!(
        text(&v4, "SELECT current_setting('port')").await,
        pg.port.to_string()
    );
    // Both at once, in transactions sharing the pool.
    let (t4, t6) = tokio::join!(
        v4.simple_query("BEGIN; SELECT pg_backend_pid(); COMMIT"),
        v6.simple_query("BEGIN; SELECT pg_backend_pid(); COMMIT")
    );
    t4.unwrap();
    t6.unwrap();
    let admin = connect_at("127.0.0.1", b.port, "admin", "admin", "pgbouncer", "")
        .await
        .unwrap();
    let mut addrs: Vec<String> = show(&admin, "SHOW CLIENTS", &["database", "addr"])
        .await
        .into_iter()
        .filter(|r| r[0] == "app")
        .map(|r| r[1].clone())
        .collect();
    addrs.sort();
    // An IPv4 client of an IPv6 socket is seen as its IPv4-mapped address.
    assert_eq!(addrs, ["::1", "::ffff:127.0.0.1"], "{addrs:?}");
}

/// `[listen] addr` takes one address: a list, or several addresses in one
/// string, is refused with the reason (`--check` exits 1), never half applied.
#[test]
fn several_listen_addresses_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (addr, why) in [
        (
            r#"["127.0.0.1:6432", "[::1]:6432"]"#,
            "invalid type: sequence, expected a string",
        ),
        (
            r#""127.0.0.1:6432,[::1]:6432""#,
            "invalid socket address syntax",
        ),
        (r#""::1:6432""#, "invalid socket address syntax"),
    ] {
        let path = dir.path().join("shardbouncer.toml");
        std::fs::write(
            &path,
            config("X", "{ name = \"s0\", host = \"::1\", port = 5432 }", "")
                .replace("addr = \"X\"", &format!("addr = {addr}")),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_shardbouncer"))
            .arg("--check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "addr = {addr}: {stderr}");
        assert!(stderr.contains(why), "addr = {addr}: {stderr}");
    }
    // The bracketed IPv6 forms are valid.
    for addr in ["[::1]:6432", "[::]:6432"] {
        let path = dir.path().join("shardbouncer.toml");
        std::fs::write(
            &path,
            config(addr, "{ name = \"s0\", host = \"::1\", port = 5432 }", ""),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_shardbouncer"))
            .arg("--check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "addr = {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Shards given by IPv6 address: a cluster listening only on `::1` (so nothing
/// but IPv6 can reach it) behind shardbouncer, as a plain pool and as one shard
/// of a routed database whose other shard is IPv4. The server sees the
/// connection come from `::1`, extended queries and transactions work, and a
/// cancel reaches the query on the IPv6 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_at_ipv6_addresses() {
    if !have_ipv6_loopback() {
        return;
    }
    let v4 = PgCluster::start();
    let v6 = PgCluster::start_with("listen_addresses = '::1'");
    // The harness's pg_hba.conf only has 127.0.0.1 lines: let ::1 in with SCRAM.
    {
        use std::io::Write;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(v6.dir.join("data").join("pg_hba.conf"))
            .unwrap();
        writeln!(hba, "host all all ::1/128 scram-sha-256").unwrap();
    }
    assert_eq!(v6.psql("postgres", "SELECT pg_reload_conf()"), "t");
    // The reload is asynchronous: wait until a direct IPv6 login works.
    eventually_ok(Duration::from_secs(10), || async {
        connect_at("::1", v6.port, "app", "secret", "app", "")
            .await
            .map(drop)
            .map_err(|e| format!("direct IPv6 login to the shard: {}", msg(&e)))
    })
    .await;
    // Nothing listens on its port over IPv4.
    assert!(TcpStream::connect(("127.0.0.1", v6.port)).is_err());
    for pg in [&v4, &v6] {
        pg.psql(
            "app",
            "CREATE TABLE accounts (tenant_id text, name text); GRANT ALL ON accounts TO app;",
        );
    }
    v4.psql("app", "INSERT INTO accounts VALUES ('1', 'owner of 1')");
    v6.psql("app", "INSERT INTO accounts VALUES ('2', 'owner of 2')");

    let map = "version = 1\nmethod = \"citus\"\n[tenants]\n\"1\" = \"s0\"\n\"2\" = \"s1\"\n";
    let extra = format!(
        r#"[databases.app.routing]
shard_map = "{{DIR}}/shardmap.toml"
[databases.plain6]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [ {} ]
"#,
        v6_shard("only", &v6)
    );
    let shards = format!("{}, {}", v4_shard("s0", &v4), v6_shard("s1", &v6));
    // The bouncer listens on ::1 as well: IPv6 end to end.
    let b = Bouncer::start_listening_on(
        V6_LOOPBACK,
        &config("[::1]:{PORT}", &shards, &extra),
        &[("shardmap.toml", map)],
    );

    // Plain pool over the IPv6 server.
    let mut c = connect_at("::1", b.port, "app", "secret", "plain6", "")
        .await
        .unwrap_or_else(|e| panic!("{}", msg(&e)));
    assert_eq!(
        text(
            &c,
            "SELECT host(inet_server_addr()) || ' ' || host(inet_client_addr()) || ' ' || current_setting('port')"
        )
        .await,
        format!("::1 ::1 {}", v6.port)
    );
    let row = c
        .query_one("SELECT name FROM accounts WHERE tenant_id = $1", &[&"2"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "owner of 2");
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO accounts VALUES ($1, $2)",
        &[&"2", &"rolled back"],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        v6.psql(
            "app",
            "SELECT count(*) FROM accounts WHERE name = 'rolled back'"
        ),
        "0"
    );

    // Routed: tenant 1 on the IPv4 shard, tenant 2 on the IPv6 one.
    let r = connect_at("::1", b.port, "app", "secret", "app", "")
        .await
        .unwrap();
    for (tenant, addr, pg) in [("1", "127.0.0.1", &v4), ("2", "::1", &v6)] {
        let got = r
            .query_one(
                "SELECT host(inet_server_addr()), current_setting('port'), name FROM accounts WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap_or_else(|e| panic!("tenant {tenant}: {}", msg(&e)));
        assert_eq!(
            (
                got.get::<_, String>(0),
                got.get::<_, String>(1),
                got.get::<_, String>(2)
            ),
            (
                addr.to_string(),
                pg.port.to_string(),
                format!("owner of {tenant}")
            ),
            "tenant {tenant}"
        );
    }
    let admin = connect_at("::1", b.port, "admin", "admin", "pgbouncer", "")
        .await
        .unwrap();
    let shards = show(
        &admin,
        "SHOW SHARDS",
        &["shard", "database", "host", "port", "state"],
    )
    .await;
    assert!(
        shards.contains(&vec![
            "s1".to_string(),
            "app".to_string(),
            "::1".to_string(),
            v6.port.to_string(),
            "up".to_string()
        ]),
        "{shards:?}"
    );

    // A cancel forwarded to the IPv6 server (the plain pool's client).
    cancel_a_running_query(c, &v6, "v6 shard").await;
    // And one on the routed database's IPv6 shard.
    let t2 = connect_at(
        "::1",
        b.port,
        "app",
        "secret",
        "app",
        "options='-c tenant_id=2'",
    )
    .await
    .unwrap();
    cancel_a_running_query(t2, &v6, "v6 routed shard").await;
    c = connect_at("::1", b.port, "app", "secret", "plain6", "")
        .await
        .unwrap();
    assert_eq!(text(&c, "SELECT 'ok'").await, "ok");
}
