//! Logins under load: `auth_query` users and SCRAM pass-through users, many
//! concurrent clients logging in again and again, each running a transaction.
//!
//! One cluster; one bouncer whose database `app` has no `server_user`, so every
//! client reaches Postgres as itself:
//!
//! * `pt*` users are listed in `[[users]]` with their SCRAM verifier copied from
//!   `pg_authid` (no plaintext anywhere): the client does SCRAM against the
//!   verifier, and shardbouncer logs in to Postgres with SCRAM using the keys the
//!   client proved (pass-through);
//! * `aq*` users exist only in Postgres: with `auth_cache_ttl = "0s"` every login
//!   runs `auth_query` (as `auth_user = "postgres"`) to fetch the verifier, then
//!   the same SCRAM exchange and pass-through.
//!
//! Each role has `CONNECTION LIMIT` equal to the pool size, so Postgres itself
//! refuses a bouncer that opens more servers than its pool allows; a sampler of
//! `pg_stat_activity` also records the most backends each user ever had.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{eventually, Bouncer, PgCluster};
use tokio_postgres::NoTls;

/// Server connections per (database, user, shard) and each role's CONNECTION LIMIT.
const POOL_SIZE: usize = 2;
/// Concurrent clients.
const CLIENTS: usize = 50;
/// Logins per client (each followed by one transaction).
const LOGINS_EACH: usize = 8;
const TOTAL: usize = CLIENTS * LOGINS_EACH;

const AQ_USERS: &[&str] = &["aq0", "aq1", "aq2", "aq3"];
const PT_USERS: &[&str] = &["pt0", "pt1", "pt2", "pt3"];

fn password(user: &str) -> String {
    format!("{user}-load-pass")
}

/// What `CREATE ROLE .. PASSWORD` gets: for `*0` the plaintext (Postgres makes
/// its own verifier, 4096 iterations); for the others a verifier made client-side
/// (as psql's `\password` does) with 256 iterations, which Postgres stores as is.
/// The clients' PBKDF2 in this (unoptimized) test build is what costs most here,
/// and a different iteration count also checks it is taken from the verifier.
fn stored_password(user: &str) -> String {
    if user.ends_with('0') {
        password(user)
    } else {
        let salt = shardbouncer::protocol::scram::generate_salt();
        shardbouncer::protocol::scram::ScramVerifier::from_password(&password(user), &salt, 256)
            .to_string_form()
    }
}

fn all_users() -> Vec<&'static str> {
    AQ_USERS.iter().chain(PT_USERS).copied().collect()
}

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| format!("{e}: {:?}", std::error::Error::source(e)))
}

fn config(pg: &PgCluster, users: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:{{PORT}}"
[pool]
mode = "transaction"
default_pool_size = {POOL_SIZE}
server_connect_timeout = "10s"
query_wait_timeout = "60s"
[auth]
type = "scram-sha-256"
auth_user = "postgres"
auth_cache_ttl = "0s"
{users}
[databases.app]
shards = [ {{ name = "s0", host = "127.0.0.1", port = {} }} ]
"#,
        pg.port
    )
}

/// One login and one transaction as `user`: the transaction runs as that user
/// (not on another user's server), inside one backend.
async fn login_and_transact(port: u16, user: &str, client: usize, n: usize) -> Result<(), String> {
    let cs = format!(
        "host=127.0.0.1 port={port} user={user} password={} dbname=app connect_timeout=60",
        password(user)
    );
    let (mut c, conn) = tokio_postgres::connect(&cs, NoTls)
        .await
        .map_err(|e| format!("login as {user}: {}", msg(&e)))?;
    let conn = tokio::spawn(conn);
    let tx = c
        .transaction()
        .await
        .map_err(|e| format!("{user} BEGIN: {}", msg(&e)))?;
    tx.execute(
        "INSERT INTO load_log (usr, client, n, backend) VALUES (current_user, $1, $2, pg_backend_pid())",
        &[&(client as i32), &(n as i32)],
    )
    .await
    .map_err(|e| format!("{user} INSERT: {}", msg(&e)))?;
    // Hold the transaction a moment so transactions of one user overlap.
    let row = tx
        .query_one(
            "SELECT current_user::text, (SELECT backend FROM load_log WHERE client = $1 AND n = $2) = pg_backend_pid() FROM pg_sleep(0.02)",
            &[&(client as i32), &(n as i32)],
        )
        .await
        .map_err(|e| format!("{user} SELECT: {}", msg(&e)))?;
    let (who, same_backend): (String, bool) = (row.get(0), row.get(1));
    if who != user || !same_backend {
        return Err(format!(
            "{user}'s transaction ran as {who} (same backend: {same_backend})"
        ));
    }
    tx.commit()
        .await
        .map_err(|e| format!("{user} COMMIT: {}", msg(&e)))?;
    drop(c);
    let _ = conn.await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_and_scram_pass_through_logins_under_load() {
    let pg = PgCluster::start();
    let mut setup = String::new();
    for u in all_users() {
        setup.push_str(&format!(
            "CREATE ROLE {u} LOGIN PASSWORD '{}' CONNECTION LIMIT {POOL_SIZE};\n",
            stored_password(u)
        ));
    }
    setup.push_str("\\connect app\nCREATE TABLE load_log (usr text, client int, n int, backend int, PRIMARY KEY (client, n));\n");
    for u in all_users() {
        setup.push_str(&format!("GRANT ALL ON load_log TO {u};\n"));
    }
    pg.psql("postgres", &setup);

    // pt* users: their SCRAM verifiers, as pg_authid stores them.
    let mut users = String::new();
    for u in PT_USERS {
        let verifier = pg.psql(
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{u}'"),
        );
        let iterations = if u.ends_with('0') { "4096" } else { "256" };
        assert!(
            verifier.starts_with(&format!("SCRAM-SHA-256${iterations}:")),
            "{verifier}"
        );
        users.push_str(&format!(
            "[[users]]\nname = \"{u}\"\npassword = \"{verifier}\"\n"
        ));
    }
    let b = Bouncer::start(&config(&pg, &users));
    assert!(
        !std::fs::read_to_string(&b.config_path)
            .unwrap()
            .contains("-load-pass"),
        "no plaintext password may be configured"
    );

    // Sample pg_stat_activity while the load runs: the most backends per user.
    let stop = Arc::new(AtomicBool::new(false));
    let peak: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let direct = pg.connect("postgres", "", "postgres").await;
        let names: Vec<String> = all_users().iter().map(|u| u.to_string()).collect();
        tokio::spawn(async move {
            let mut samples = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let rows = direct
                    .query(
                        "SELECT usename::text, count(*) FROM pg_stat_activity \
                         WHERE datname = 'app' AND usename = ANY($1) GROUP BY 1",
                        &[&names],
                    )
                    .await
                    .expect("sample pg_stat_activity");
                samples += 1;
                let mut p = peak.lock().unwrap();
                for r in rows {
                    let (u, n): (String, i64) = (r.get(0), r.get(1));
                    let e = p.entry(u).or_insert(0);
                    *e = (*e).max(n);
                }
            }
            samples
        })
    };

    let done = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (done, failures, port) = (done.clone(), failures.clone(), b.port);
        clients.push(tokio::spawn(async move {
            let users = all_users();
            for n in 0..LOGINS_EACH {
                let user = users[(client + n) % users.len()];
                if let Err(e) = login_and_transact(port, user, client, n).await {
                    failures.lock().unwrap().push(e);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Wrong passwords (and an unknown user) while the load runs: refused with
    // 28P01 every time, for both kinds of users. Two per user stays under the
    // failed-login limit, so the load's own logins are not blocked.
    eventually(
        Duration::from_secs(60),
        "the load never got going",
        || async { done.load(Ordering::Relaxed) >= CLIENTS },
    )
    .await;
    for user in ["aq0", "aq1", "pt0", "pt1", "nosuchrole"] {
        let attempts = if user == "nosuchrole" { 1 } else { 2 };
        for i in 0..attempts {
            let cs = format!(
                "host=127.0.0.1 port={} user={user} password=wrong-{i} dbname=app",
                b.port
            );
            let e = tokio_postgres::connect(&cs, NoTls)
                .await
                .err()
                .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
            assert_eq!(
                e.code().map(|c| c.code()),
                Some("28P01"),
                "{user}: {}",
                msg(&e)
            );
            assert!(
                msg(&e).contains("password authentication failed"),
                "{user}: {}",
                msg(&e)
            );
        }
    }
    let done_at_refusals = done.load(Ordering::Relaxed);
    assert!(
        done_at_refusals < TOTAL,
        "the wrong passwords were tried after the load had finished"
    );

    for c in clients {
        c.await.expect("a client task panicked");
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {TOTAL} logins+transactions failed, e.g.:\n{}\n---- shardbouncer log tail ----\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        b.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(done.load(Ordering::Relaxed), TOTAL);
    eprintln!(
        "{TOTAL} logins in {took:?}; wrong passwords tried after {done_at_refusals}; {samples} samples"
    );

    // Every transaction committed, as its own user.
    let per_user = pg.psql(
        "app",
        "SELECT string_agg(usr || '=' || n, ',' ORDER BY usr) FROM (SELECT usr, count(*) AS n FROM load_log GROUP BY usr) s",
    );
    let mut want: HashMap<&str, usize> = HashMap::new();
    let users = all_users();
    for client in 0..CLIENTS {
        for n in 0..LOGINS_EACH {
            *want.entry(users[(client + n) % users.len()]).or_default() += 1;
        }
    }
    let mut want: Vec<String> = want.into_iter().map(|(u, n)| format!("{u}={n}")).collect();
    want.sort();
    assert_eq!(per_user, want.join(","));

    // With auth_cache_ttl = "0s" every aq* login ran auth_query: one more session
    // on database app each time (the pools' own servers are a handful).
    let users = &users;
    let aq_logins = (0..CLIENTS * LOGINS_EACH)
        .filter(|i| users[(i / LOGINS_EACH + i % LOGINS_EACH) % users.len()].starts_with("aq"))
        .count();
    eventually(
        Duration::from_secs(10),
        format!("fewer than {aq_logins} sessions on database app (auth_query not run per login?)"),
        || async {
            let n: usize = pg
                .psql(
                    "postgres",
                    "SELECT sessions FROM pg_stat_database WHERE datname = 'app'",
                )
                .parse()
                .unwrap();
            n >= aq_logins
        },
    )
    .await;

    // The pools never went past their size, and the load did fill them.
    let peak = peak.lock().unwrap().clone();
    assert!(samples >= 10, "only {samples} samples");
    for u in all_users() {
        let p = peak.get(u).copied().unwrap_or(0);
        assert!(
            (1..=POOL_SIZE as i64).contains(&p),
            "user {u}: peak {p} backends, pool size {POOL_SIZE} ({peak:?})"
        );
    }
    assert!(
        peak.values().any(|&p| p == POOL_SIZE as i64),
        "no pool ever filled: {peak:?}"
    );
    let now = pg.psql(
        "postgres",
        &format!(
            "SELECT usename, count(*) FROM pg_stat_activity WHERE datname = 'app' \
             AND usename <> 'postgres' GROUP BY 1 HAVING count(*) > {POOL_SIZE}"
        ),
    );
    assert_eq!(now, "", "users over their pool size");

    // The failures were logged with the user, never with the password.
    let log = b.log();
    assert!(log.contains("login failed"), "{log}");
    assert!(
        !log.contains("wrong-0") && !log.contains("-load-pass"),
        "{log}"
    );
}
