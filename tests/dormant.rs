//! Idle clients asleep in their worker's dormitory (`[limits]
//! client_hibernate_after`): what a client set up stays its own across sleeps,
//! and everything that must reach an idle client (its next query, a hang-up,
//! KILL, a cancel, `client_idle_timeout`, shutdown) still does.
//!
//! The harness puts every test bouncer's idle clients to sleep after
//! `TEST_HIBERNATE_AFTER` (tests/support/bouncer.rs); the tests here first wait until the
//! metrics say the clients are asleep, so each path below starts from a
//! sleeping client, not a task.

mod support;

use std::time::{Duration, Instant};
use support::metrics::{sample, scrape};
use support::*;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Clients asleep and clients connected, as `/metrics` says (refreshed once a
/// second): wait until they are `(asleep, connected)`.
async fn wait_asleep(mport: u16, asleep: usize, connected: usize) {
    eventually_ok(Duration::from_secs(15), || async {
        let body = scrape(mport).await;
        let seen = (
            sample(&body, "shardbouncer_client_connections_dormant "),
            sample(&body, "shardbouncer_client_connections "),
        );
        if seen == (Some(asleep as f64), Some(connected as f64)) {
            Ok(())
        } else {
            Err(format!(
                "(asleep, connected) = ({asleep}, {connected}) expected, saw {seen:?}"
            ))
        }
    })
    .await
}

/// The first column of the first row of `sql`.
async fn one(c: &Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A config with two workers, metrics, an admin user and `pool_extra`.
fn config(pg: &[&PgCluster], pool_extra: &str, mport: u16) -> String {
    format!(
        "[limits]\nworkers = 2\n{}\n[[users]]\nname = \"admin\"\npassword = \"admin\"\n\
         [admin]\nusers = [\"admin\"]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        basic_config(pg, pool_extra)
    )
}

/// Two shards behind a routed database (tenant 42 on s1, 7 on s0) with two
/// workers and metrics: the shards, the metrics port and the bouncer.
fn routed_bouncer() -> ([PgCluster; 2], u16, Bouncer) {
    let shards = [PgCluster::start(), PgCluster::start()];
    let mport = free_port();
    let map = "version = 1\nmethod = \"citus\"\n[tenants]\n\"42\" = \"s1\"\n\"7\" = \"s0\"\n";
    let cfg = format!(
        "[limits]\nworkers = 2\n{}",
        routed_config(shards.iter(), "default_pool_size = 2", "").replace(
            "[admin]\n",
            &format!("[admin]\nmetrics_addr = \"127.0.0.1:{mport}\"\n")
        )
    );
    let b = Bouncer::start_with_files(&cfg, &[("shardmap.toml", map)]);
    (shards, mport, b)
}

/// Sleeping clients on both workers keep their own settings and prepared
/// statements, answer their next query from the right server state, and a
/// client that hangs up while asleep is counted out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_clients_keep_their_state_and_wake_for_their_next_query() {
    let pg = PgCluster::start();
    let mport = free_port();
    let b = Bouncer::start(&config(&[&pg], "default_pool_size = 2", mport));
    let mut clients = Vec::new();
    for i in 0..6 {
        let c = b.connect(APP_USER, APP_PASSWORD, "app").await;
        // Each its own: a setting, and a named statement that echoes an offset.
        c.simple_query(&format!("SET work_mem = '{}MB'", i + 1))
            .await
            .unwrap();
        let stmt = c
            .prepare(&format!("SELECT $1::int + {}", 100 * i))
            .await
            .unwrap();
        clients.push((c, stmt));
    }
    for round in 0..3 {
        wait_asleep(mport, 6, 6).await;
        for (i, (c, stmt)) in clients.iter().enumerate() {
            assert_eq!(
                one(c, "SHOW work_mem").await,
                format!("{}MB", i + 1),
                "client {i}, round {round}"
            );
            let v: i32 = c.query_one(stmt, &[&7i32]).await.unwrap().get(0);
            assert_eq!(v, 7 + 100 * i as i32, "client {i}, round {round}");
        }
    }
    wait_asleep(mport, 6, 6).await;
    // Three hang up while asleep: woken by the hang-up, counted out.
    for (c, _) in clients.drain(..3) {
        drop(c);
    }
    wait_asleep(mport, 3, 3).await;
    for (i, (c, stmt)) in clients.iter().enumerate() {
        let v: i32 = c.query_one(stmt, &[&1i32]).await.unwrap().get(0);
        assert_eq!(v, 1 + 100 * (i as i32 + 3));
    }
}

/// Clients that ran explicit transactions still go to sleep after them. In a
/// routed database a BEGIN sent on its own (psycopg2's default, and
/// tokio-postgres's `transaction()`) is held here for the transaction's first
/// statement, and a session holding one cannot be parked; once the
/// transaction is over, it can. (A session refused a park once used to stay
/// awake for good, with an error in the log.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sleep_again_after_explicit_transactions() {
    let (shards, mport, b) = routed_bouncer();
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = b.connect(APP_USER, APP_PASSWORD, "app").await;
        let (tenant, shard) = if i % 2 == 0 { (42, 1) } else { (7, 0) };
        c.batch_execute(&format!("SET tenant_id = {tenant}"))
            .await
            .unwrap();
        clients.push((c, shards[shard].port.to_string()));
    }
    let port = "SELECT current_setting('port')";
    for round in 0..2 {
        for (i, (c, on)) in clients.iter_mut().enumerate() {
            match i {
                0 => {
                    c.batch_execute("BEGIN").await.unwrap();
                    assert_eq!(&one(c, port).await, on, "round {round}");
                    c.batch_execute("COMMIT").await.unwrap();
                }
                1 => {
                    c.batch_execute("START TRANSACTION").await.unwrap();
                    c.batch_execute("ROLLBACK").await.unwrap();
                }
                2 => {
                    c.batch_execute("BEGIN").await.unwrap();
                    assert!(c.batch_execute("SELECT 1/0").await.is_err());
                    c.batch_execute("ROLLBACK").await.unwrap();
                }
                _ => {
                    let t = c.transaction().await.unwrap();
                    let v: String = t.query_one(port, &[]).await.unwrap().get(0);
                    assert_eq!(&v, on, "round {round}");
                    t.commit().await.unwrap();
                }
            }
        }
        wait_asleep(mport, 4, 4).await;
        for (c, on) in &clients {
            assert_eq!(&one(c, port).await, on, "round {round}");
        }
    }
}

/// `client_hibernate_after` changed with the console's SET reaches clients
/// already connected: read at each park, not once per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_set_of_the_hibernation_time_reaches_connected_clients() {
    let pg = PgCluster::start();
    let mport = free_port();
    let cfg = config(&[&pg], "default_pool_size = 2", mport).replacen(
        "[limits]\n",
        "[limits]\nclient_hibernate_after = \"0s\"\n",
        1,
    );
    let b = Bouncer::start(&cfg);
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = b.connect(APP_USER, APP_PASSWORD, "app").await;
        assert_eq!(one(&c, "SELECT 1").await, "1");
        clients.push(c);
    }
    // Off: all three (and the console) awake after their first transaction,
    // as the gauge says once it has counted them all.
    wait_asleep(mport, 0, 4).await;
    admin
        .simple_query("SET client_hibernate_after = '10ms'")
        .await
        .unwrap();
    for c in &clients {
        assert_eq!(one(c, "SELECT 2").await, "2");
    }
    wait_asleep(mport, 3, 4).await;
    for c in &clients {
        assert_eq!(one(c, "SELECT 3").await, "3");
    }
}

/// A routed client's session tenant survives its sleeps: after each, its
/// statements still run on the tenant's shard (each shard says its port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_client_keeps_its_tenant() {
    let (shards, mport, b) = routed_bouncer();
    let on_s1 = b.connect(APP_USER, APP_PASSWORD, "app").await;
    let on_s0 = b.connect(APP_USER, APP_PASSWORD, "app").await;
    on_s1.simple_query("SET tenant_id = 42").await.unwrap();
    on_s0.simple_query("SET tenant_id = 7").await.unwrap();
    for round in 0..3 {
        wait_asleep(mport, 2, 2).await;
        assert_eq!(
            one(&on_s1, "SELECT current_setting('port')").await,
            shards[1].port.to_string(),
            "round {round}"
        );
        assert_eq!(
            one(&on_s0, "SELECT current_setting('port')").await,
            shards[0].port.to_string(),
            "round {round}"
        );
    }
}

/// The error `conn` (a watched connection) ended with, within 10 s.
async fn ended(
    conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    what: &str,
) -> tokio_postgres::Error {
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .unwrap_or_else(|_| panic!("{what} reaches a sleeping client"))
        .unwrap()
        .expect_err("closed with an error")
}

/// KILL_CLIENT and a cancel each reach a client that is asleep, and so does a
/// shutdown: the sleeping client is told (57P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cancel_and_shutdown_reach_sleeping_clients() {
    let pg = PgCluster::start();
    let mport = free_port();
    let b = Bouncer::start(&config(&[&pg], "", mport));
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    let (victim, victim_conn) = b.connect_watched().await;
    let (other, other_conn) = b.connect_watched().await;
    victim.simple_query("SELECT 1").await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
    // The console's own client counts as connected; it never sleeps.
    wait_asleep(mport, 2, 3).await;

    // KILL_CLIENT: the sleeping victim's connection ends at once (nothing
    // else would end it: there is no idle timeout).
    let mut id_col = None;
    let mut app_ids = Vec::new();
    for m in admin.simple_query("SHOW CLIENTS").await.unwrap() {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                id_col = d.iter().position(|c| c.name() == "id");
            }
            SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => {
                app_ids.push(r.get(id_col.unwrap()).unwrap().parse::<i32>().unwrap());
            }
            _ => {}
        }
    }
    app_ids.sort();
    assert_eq!(app_ids.len(), 2, "{app_ids:?}");
    admin
        .simple_query(&format!("KILL_CLIENT {}", app_ids[0]))
        .await
        .unwrap();
    ended(victim_conn, "KILL_CLIENT").await;
    wait_asleep(mport, 1, 2).await;

    // A cancel for a sleeping client with nothing running wakes it and ends
    // nothing. tokio-postgres's cancel_query returns once it has sent the
    // cancel, not when the pooler closes the cancel's connection (libpq's
    // PQcancel waits for that; tests/pooler.rs checks it), so a query sent
    // right after may still be taken for the one the cancel was for (they
    // race, as they do into Postgres): one may fail with 57014 (never the
    // client); the next one runs.
    // The cancel's connection and the queries race into the pooler: on a
    // busy machine the first query may run before the cancel is read, and
    // the cancel then counts for the next one the client had already sent
    // (a full test run under load saw the second fail). Whichever it is,
    // one cancel ends at most one query, and the client goes on.
    other.cancel_token().cancel_query(NoTls).await.unwrap();
    let mut canceled = 0;
    for _ in 0..3 {
        match other.simple_query("SELECT 41 + 1").await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e.as_db_error().map(|d| d.code().code()),
                    Some("57014"),
                    "{e:?}"
                );
                canceled += 1;
            }
        }
    }
    assert!(canceled < 2, "one cancel ended {canceled} queries");
    assert_eq!(one(&other, "SELECT 41 + 1").await, "42");
    wait_asleep(mport, 1, 2).await;

    // Shutdown: the sleeping client is told, and its connection ends.
    b.signal(libc::SIGTERM);
    let e = ended(other_conn, "shutdown").await;
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e:?}"
    );
}

/// `client_idle_timeout` ends a client that is asleep when it runs out, not
/// before, with the same error as one in its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_reaches_a_sleeping_client() {
    let pg = PgCluster::start();
    let mport = free_port();
    let b = Bouncer::start(&config(&[&pg], "client_idle_timeout = \"2s\"", mport));
    let (c, conn) = b.connect_watched().await;
    c.simple_query("SELECT 1").await.unwrap();
    let since = Instant::now();
    wait_asleep(mport, 1, 1).await;
    let e = ended(conn, "client_idle_timeout").await;
    assert!(
        since.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        since.elapsed()
    );
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "57P01", "{e:?}");
    assert!(db.message().contains("client_idle_timeout"), "{e:?}");
}
