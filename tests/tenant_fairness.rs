//! Noisy neighbours: one tenant with 200 clients of 50 ms transactions on a
//! pool of 10, and another tenant's single client on the same shard.
//!
//! Fairness is measured in turns, not in milliseconds: every transaction
//! takes a number from a Postgres sequence as its first statement, so the
//! numbers are the order in which transactions got a server. Between the
//! moment B asks and the moment B is served, first-in-first-out queueing
//! would serve the ~190 clients of A queued ahead of it; the fair queue serves
//! at most one turn of A (plus what was already on its way to a server).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, Bouncer, PgCluster};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const POOL: usize = 10;
const A_CLIENTS: usize = 200;

const MAP: &str = "version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"\n";

fn config(shard: &PgCluster) -> String {
    support::routed_config(
        std::iter::once(shard),
        &format!("default_pool_size = {POOL}\nquery_wait_timeout = \"120s\""),
        "[limits]\nmax_client_conn = 1000",
    )
}

async fn connect(b: &Bouncer, user: &str, password: &str, db: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(&b.conn_str(user, password, db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {user}@{db}: {e}"));
    tokio::spawn(conn);
    c
}

async fn one(c: &Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Tenant A's clients: transactions of 50 ms until `stop`.
fn start_a(b: &Bouncer, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..A_CLIENTS)
        .map(|_| {
            let conn = b.conn_str("app", "secret", "app");
            let stop = stop.clone();
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&conn, NoTls)
                    .await
                    .expect("A connect");
                tokio::spawn(conn);
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    c.simple_query(
                        "INSERT INTO turns (who, tenant_id) VALUES ('a', 1); SELECT pg_sleep(0.05)",
                    )
                    .await
                    .expect("A's transaction");
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// B's transactions: for each, how many of A's got a server while B waited,
/// and how long B waited.
async fn b_turns(b_client: &Client, direct: &Client, rounds: usize) -> Vec<(i64, Duration)> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let before: i64 = one(direct, "SELECT last_value FROM turns_id_seq")
            .await
            .parse()
            .unwrap();
        let t0 = Instant::now();
        let mine: i64 = one(
            b_client,
            "INSERT INTO turns (who, tenant_id) VALUES ('b', 2) RETURNING id",
        )
        .await
        .parse()
        .unwrap();
        let waited = t0.elapsed();
        let a_between: i64 = one(
            direct,
            &format!(
                "SELECT count(*) FROM turns WHERE who = 'a' AND id > {before} AND id < {mine}"
            ),
        )
        .await
        .parse()
        .unwrap();
        out.push((a_between, waited));
    }
    out
}

/// A's clients waiting in the pool's queue (SHOW TENANTS `waiting`).
async fn a_waiting(admin: &Client) -> usize {
    let msgs = admin.simple_query("SHOW TENANTS").await.unwrap();
    msgs.into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("tenant") == Some("1") => {
                r.get("waiting").and_then(|v| v.parse().ok())
            }
            _ => None,
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_noisy_tenant_cannot_starve_a_quiet_one_and_a_cap_holds_it() {
    let pg = PgCluster::start_with("max_connections = 100");
    pg.psql(
        "app",
        "CREATE TABLE turns (id bigserial PRIMARY KEY, who text NOT NULL, tenant_id bigint NOT NULL);
         ALTER TABLE turns OWNER TO app;",
    );
    let b = Bouncer::start_with_files(&config(&pg), &[("shardmap.toml", MAP)]);
    let admin = connect(&b, "admin", "admin", "pgbouncer").await;
    let direct = pg.connect("app", "secret", "app").await;
    let quiet = connect(&b, "app", "secret", "app").await;

    // B alone: no one else waits.
    let alone = b_turns(&quiet, &direct, 10).await;
    assert!(alone.iter().all(|(a, _)| *a == 0), "{alone:?}");

    // A floods the pool: 200 clients for 10 servers.
    let stop = Arc::new(AtomicBool::new(false));
    let a = start_a(&b, &stop);
    eventually(Duration::from_secs(60), "A's clients queue up", || async {
        a_waiting(&admin).await >= A_CLIENTS - 2 * POOL
    })
    .await;
    let flooded = b_turns(&quiet, &direct, 20).await;
    // First in, first out would serve ~190 of A's clients before each of B's
    // transactions; one turn of the lanes serves at most the transactions
    // already on their way to a server plus one.
    let worst = flooded.iter().map(|(a, _)| *a).max().unwrap();
    assert!(
        worst <= 2 * POOL as i64,
        "B waited behind {worst} of A's transactions: {flooded:?}"
    );

    // A cap, set online: A may hold at most 5 of the 10 servers; B and the
    // rest of the pool are untouched.
    admin
        .simple_query("SET app.tenant_limits.max_active = 5")
        .await
        .expect("SET cap");
    // Each of A's clients takes the new cap with its next transaction.
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.05)%' \
                AND state = 'active' AND pid <> pg_backend_pid()";
    eventually(Duration::from_secs(60), "A held to its cap", || async {
        let mut ok = 0;
        for _ in 0..20 {
            let n: usize = one(&direct, busy).await.parse().unwrap();
            if n <= 5 {
                ok += 1;
            }
        }
        ok == 20
    })
    .await;
    let mut most = 0;
    for _ in 0..50 {
        let n: usize = one(&direct, busy).await.parse().unwrap();
        most = most.max(n);
    }
    assert!(
        most <= 5,
        "A ran {most} transactions at once with a cap of 5"
    );
    assert!(most >= 1, "A stopped running");
    let capped = b_turns(&quiet, &direct, 10).await;
    eprintln!(
        "B's waits: alone {:?}, flooded {:?}, A capped {:?}",
        alone.iter().map(|x| x.1).max(),
        flooded.iter().map(|x| x.1).max(),
        capped.iter().map(|x| x.1).max()
    );
    stop.store(true, Ordering::Release);
    let mut done = 0;
    for t in a {
        done += t.await.unwrap();
    }
    assert!(done > A_CLIENTS, "A made progress: {done}");
}

/// A tenant at its cap whose next transaction waits while a reserve server is
/// free waits asleep. It used to spin: the reserve's timer, once elapsed, kept
/// reopening the reserve, whose permit the cap then refused, in a loop that
/// took a whole core (300 clock ticks in 3 s, by hand) until the tenant got a
/// server. The assertion allows a tenth of that, so a busy machine cannot
/// fail it; a spinning pooler cannot pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_tenant_waits_asleep_while_a_reserve_server_is_free() {
    let pg = PgCluster::start();
    let b = Bouncer::start_with_files(
        &support::routed_config(
            std::iter::once(&pg),
            "default_pool_size = 2\nreserve_pool_size = 1\nreserve_pool_timeout = \"50ms\"\n\
             query_wait_timeout = \"60s\"",
            "[databases.app.tenant_limits]\nmax_active = 1",
        ),
        &[("shardmap.toml", MAP)],
    );
    let admin = connect(&b, "admin", "admin", "pgbouncer").await;
    let holder = connect(&b, "app", "secret", "app").await;
    holder.batch_execute("SET tenant_id = 1").await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = connect(&b, "app", "secret", "app").await;
    let queued = tokio::spawn(async move { one(&waiter, "/* tenant_id=1 */ SELECT 7").await });
    eventually(
        Duration::from_secs(15),
        "tenant 1's second client waits",
        || async { a_waiting(&admin).await == 1 },
    )
    .await;
    // The reserve opens 50 ms into the wait; what does a second of it cost?
    let before = b.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = b.cpu_ticks() - before;
    assert!(
        used < 10,
        "the pooler used {used} ticks in 1 s while one client waited"
    );
    assert!(
        !queued.is_finished(),
        "the cap let a second transaction run"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(queued.await.unwrap(), "7");
}
