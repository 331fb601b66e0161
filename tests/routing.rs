//! Tenant routing through real Postgres shards (issue: tenant-aware shard routing).
//!
//! Each shard holds `accounts(tenant_id, name)` rows for the tenants the shard map
//! places on it, so a wrong route shows up as missing data, and
//! `current_setting('port')` says which server answered.

mod support;

use shardbouncer::router::{ShardMap, TenantKey};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::raw::{first_error, tags, Raw};
use support::{eventually, eventually_ok, Bouncer, PgCluster};
use tokio_postgres::SimpleQueryMessage;

const MAP: &str = r#"
version = 1
method = "citus"
[tenants]
"42" = "s1"
acme = "s1"
"#;

/// Two shards and a bouncer routing `app` over them with `MAP`.
struct Fixture {
    shards: Vec<PgCluster>,
    bouncer: Bouncer,
    map: ShardMap,
}

fn config(shards: &[PgCluster], routing_extra: &str) -> String {
    support::routed_config(
        shards.iter(),
        "default_pool_size = 4\nserver_connect_timeout = \"1s\"",
        routing_extra,
    )
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

impl Fixture {
    fn start(n: usize, routing_extra: &str) -> Fixture {
        Fixture::start_auth(n, routing_extra, "scram-sha-256")
    }

    fn start_auth(n: usize, routing_extra: &str, auth: &str) -> Fixture {
        let shards: Vec<PgCluster> = (0..n).map(|_| PgCluster::start()).collect();
        let map = ShardMap::parse(MAP, &names(n)).unwrap();
        // Seed every shard with the rows of the tenants it owns.
        let tenants = [
            "1", "2", "3", "4", "5", "6", "7", "42", "acme", "globex", "-9",
        ];
        for (i, c) in shards.iter().enumerate() {
            let mut sql = String::from(
                "CREATE TABLE accounts (tenant_id text, name text);\nGRANT ALL ON accounts TO app;\n",
            );
            for t in tenants {
                if route(&map, t) == i {
                    sql.push_str(&format!(
                        "INSERT INTO accounts VALUES ('{t}', 'owner of {t}');\n"
                    ));
                }
            }
            c.psql("app", &sql);
        }
        let cfg =
            config(&shards, routing_extra).replace("\"scram-sha-256\"", &format!("\"{auth}\""));
        let bouncer = Bouncer::start_with_files(&cfg, &[("shardmap.toml", MAP)]);
        Fixture {
            shards,
            bouncer,
            map,
        }
    }

    fn port_of(&self, tenant: &str) -> String {
        self.shards[route(&self.map, tenant)].port.to_string()
    }

    async fn client(&self, extra: &str) -> tokio_postgres::Client {
        let cs = format!("{} {extra}", self.bouncer.conn_str("app", "secret", "app"));
        let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }
}

fn route(map: &ShardMap, t: &str) -> usize {
    map.route(&TenantKey::new(t.as_bytes()).unwrap())
        .unwrap()
        .shard
}

/// First column of the first row of a simple query.
async fn one(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("").to_string());
        }
    }
    Ok(String::new())
}

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_spreads_tenants_over_both_shards() {
    // Guard for the other tests: they need tenants on each shard.
    let map = ShardMap::parse(MAP, &names(2)).unwrap();
    let on: Vec<usize> = ["1", "2", "3", "4", "5", "6", "7"]
        .iter()
        .map(|t| route(&map, t))
        .collect();
    assert!(on.contains(&0) && on.contains(&1), "{on:?}");
    assert_eq!(route(&map, "42"), 1);
    assert_eq!(route(&map, "acme"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameter_routes_and_never_reaches_postgres() {
    let f = Fixture::start(2, "");
    for t in ["42", "1", "2", "3", "acme"] {
        let c = f.client(&format!("options='-c tenant_id={t}'")).await;
        assert_eq!(
            one(&c, "SELECT current_setting('port')").await.unwrap(),
            f.port_of(t),
            "tenant {t}"
        );
        let owner = one(&c, "SELECT name FROM accounts WHERE tenant_id = current_setting('app.dummy', true) OR true ORDER BY name LIMIT 1")
            .await
            .unwrap();
        assert!(!owner.is_empty());
        // The tenant key is stripped: Postgres never saw it as a setting.
        let seen = one(
            &c,
            "SELECT coalesce(current_setting('tenant_id', true), 'absent')",
        )
        .await
        .unwrap();
        assert_eq!(seen, "absent");
    }
    // psql with options=-ctenant_id=42, as in the README.
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app password=secret dbname=app options=-ctenant_id=42",
            f.bouncer.port
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_setting('port'), name FROM accounts ORDER BY 2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}|owner of 42", f.port_of("42"))),
        "{stdout}"
    );
    // Two different tenants at connect are refused, not resolved by order
    // (Postgres applies `options` before the other parameters).
    let cs = format!(
        "{} options='-c tenant_id=1 -c tenant_id=42'",
        f.bouncer.conn_str("app", "secret", "app")
    );
    let e = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .err()
        .expect("conflicting tenants at connect");
    assert_eq!(code(&e), "22023", "{}", msg(&e));
    // The same tenant twice is fine.
    let c = f.client("options='-c tenant_id=42 -c tenant_id=42'").await;
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.port_of("42")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_suffix_carries_the_tenant() {
    let f = Fixture::start(2, "user_suffix = \".\"");
    let cs = f.bouncer.conn_str("app.42", "secret", "app");
    let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.port_of("42")
    );
    assert_eq!(one(&c, "SELECT current_user").await.unwrap(), "app");
}

/// `user` given twice with different values carries two tenants: refused
/// (22023) as two tenants at connect are, not logged in as the last one
/// (re-probe).
#[test]
fn a_user_given_twice_with_a_suffix_is_refused() {
    let f = Fixture::start_auth(2, "user_suffix = \".\"", "trust");
    let (_, m) = support::raw::Raw::startup(f.bouncer.port, "app.42", "app", &[("user", "app.1")]);
    assert_eq!(support::raw::error_codes(&m), ["22023"], "{m:?}");
    let (_, m) = support::raw::Raw::startup(f.bouncer.port, "app.42", "app", &[("user", "app.42")]);
    assert!(
        support::raw::error_codes(&m).is_empty(),
        "the same user twice: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_route_including_sqlcommenter() {
    let f = Fixture::start(2, "");
    let c = f.client("").await;
    for t in ["1", "2", "3", "42"] {
        let got = one(
            &c,
            &format!("/* tenant_id={t} */ SELECT current_setting('port')"),
        )
        .await
        .unwrap();
        assert_eq!(got, f.port_of(t));
        let got = one(
            &c,
            &format!("SELECT current_setting('port') /* tenant_id: {t} */"),
        )
        .await
        .unwrap();
        assert_eq!(got, f.port_of(t));
        // sqlcommenter as Rails/Django/Spring emit it: sorted, URL-encoded, quoted.
        let got = one(
            &c,
            &format!("SELECT current_setting('port') /*controller='users',tenant_id='{t}',traceparent='00-abc'*/"),
        )
        .await
        .unwrap();
        assert_eq!(got, f.port_of(t));
    }
    let got = one(
        &c,
        "SELECT string_agg(name, ',') FROM accounts WHERE name LIKE '%acme' /*tenant_id='ac%6De'*/",
    )
    .await
    .unwrap();
    assert_eq!(got, "owner of acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_tenant_is_answered_by_the_pooler() {
    let f = Fixture::start(2, "");
    let c = f.client("").await;
    c.simple_query("SET tenant_id = 42").await.unwrap();
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.port_of("42")
    );
    c.simple_query("SET tenant_id TO 'acme'").await.unwrap();
    assert_eq!(
        one(
            &c,
            "SELECT string_agg(name, ',') FROM accounts WHERE name LIKE '%acme'"
        )
        .await
        .unwrap(),
        "owner of acme"
    );
    for t in ["1", "2", "3"] {
        c.simple_query(&format!("SET tenant_id = {t}"))
            .await
            .unwrap();
        assert_eq!(
            one(&c, "SELECT current_setting('port')").await.unwrap(),
            f.port_of(t)
        );
    }
    // SET LOCAL lasts for the transaction only.
    c.simple_query("RESET tenant_id").await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SET LOCAL tenant_id = 42").await.unwrap();
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.port_of("42")
    );
    c.simple_query("COMMIT").await.unwrap();
    // (A statement that needs a tenant: a SELECT of settings alone is
    // tenant-free.)
    let e = c
        .simple_query("SELECT current_setting('port') FROM accounts LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P17", "{}", msg(&e));
    assert!(msg(&e).contains("tenant_id"), "{}", msg(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_literals_and_bind_parameters() {
    let f = Fixture::start(2, "");
    let c = f.client("").await;
    for t in ["1", "2", "3", "42", "acme"] {
        let got = one(
            &c,
            &format!("SELECT name FROM accounts a WHERE a.tenant_id = '{t}'"),
        )
        .await
        .unwrap();
        assert_eq!(got, format!("owner of {t}"));
        let got = one(
            &c,
            &format!("SELECT name FROM accounts WHERE \"tenant_id\" IN ('{t}')"),
        )
        .await
        .unwrap();
        assert_eq!(got, format!("owner of {t}"));
        // Extended protocol: text parameter bound at Bind (named statement, tokio-postgres).
        let row = c
            .query_one("SELECT name FROM accounts WHERE tenant_id = $1", &[&t])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("owner of {t}"));
    }
    // Binary int8 parameter: tokio-postgres sends bigint in binary.
    for t in [1i64, 2, 3, 42] {
        let row = c
            .query_one(
                "SELECT current_setting('port') FROM accounts \
                 WHERE $1::int8 = $1 AND 'tenant_id' <> '' AND true LIMIT 1",
                &[&t],
            )
            .await;
        // No tenant_id = $n here: must be refused, not guessed.
        assert!(row.is_err());
        let row = c
            .query_one(
                "SELECT current_setting('port') FROM (SELECT $1::int8 AS tenant_id) s WHERE tenant_id = $1",
                &[&t],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            f.port_of(&t.to_string()),
            "tenant {t}"
        );
    }
    // Keys inside literals, dollar quotes and quoted identifiers are not scanned.
    let e = c
        .simple_query(
            "SELECT 'tenant_id = 42' AS \"tenant_id = 7\", $$ tenant_id = 9 $$ FROM accounts",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P17");
}

/// Messages larger than `[limits] spool_threshold` wait in a spool file while
/// they arrive, then are routed whole like any other: a tenant named only at
/// the end of 3 MB decides the shard, a second tenant there is still refused,
/// and a 3 MB Bind value does not hide the tenant parameter beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_wait_in_the_spool_and_are_routed_whole() {
    let f = Fixture::start_auth(
        2,
        "[limits]\nspool_threshold = 65536\nspool_dir = \"{DIR}\"\n",
        "trust",
    );
    let pad = "x".repeat(3 << 20);
    let other = ["1", "2", "3", "4", "5", "6", "7"]
        .into_iter()
        .find(|t| route(&f.map, t) != route(&f.map, "42"))
        .unwrap();
    // A raw client stops part-way: what it sent so far is in a spool file.
    let mut r = Raw::login(f.bouncer.port, "app", "app");
    r.query(&format!(
        "SELECT current_setting('port'), length('{pad}') /* tenant_id=42 */"
    ));
    let bytes = r.take_built();
    let (start, end) = bytes.split_at(2 << 20);
    r.s.write_all(start).unwrap();
    eventually(Duration::from_secs(20), "the start spooled", || async {
        f.bouncer.spool_files().iter().sum::<u64>() >= (1 << 20)
    })
    .await;
    r.s.write_all(end).unwrap();
    let got = r.read_until_ready();
    assert_eq!(first_error(&got), None, "{:?}", tags(&got));
    let row = support::raw::first_column(&got);
    assert_eq!(row, [f.port_of("42")], "tenant 42's shard");
    assert!(
        f.bouncer.spool_files().is_empty(),
        "the spool went with the message"
    );
    // The same through tokio-postgres, and a second tenant at the end.
    let c = f.client("").await;
    let sql =
        format!("SELECT current_setting('port') WHERE length('{pad}') > 0 /* tenant_id=42 */");
    assert_eq!(one(&c, &sql).await.unwrap(), f.port_of("42"));
    let e = c
        .simple_query(&format!(
            "SELECT name FROM accounts WHERE tenant_id = '42' AND name <> '{pad}' OR tenant_id = '{other}'"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
    // Extended: the tenant is a Bind value beside a 3 MB one.
    c.execute(
        "INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)",
        &[&"42", &pad],
    )
    .await
    .unwrap();
    for (i, shard) in f.shards.iter().enumerate() {
        let n = shard.psql(
            "app",
            "SELECT count(*) FROM accounts WHERE length(name) > 1000000",
        );
        let want = if i == route(&f.map, "42") { "1" } else { "0" };
        assert_eq!(n.trim(), want, "shard s{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_transactions_are_refused() {
    let f = Fixture::start(2, "");
    let (a, b) = pick_two_shards(&f);
    let c = f.client("").await;
    c.simple_query("BEGIN").await.unwrap();
    assert_eq!(
        one(
            &c,
            &format!("SELECT current_setting('port') /* tenant_id={a} */")
        )
        .await
        .unwrap(),
        f.port_of(&a)
    );
    let e = c
        .simple_query(&format!(
            "SELECT name FROM accounts WHERE tenant_id = '{b}'"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let m = msg(&e);
    assert!(
        m.contains(&format!("'{a}'")) && m.contains(&format!("'{b}'")),
        "{m}"
    );
    assert!(m.contains("s0") && m.contains("s1"), "{m}");
    // The transaction is failed like any error in Postgres.
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    c.simple_query("ROLLBACK").await.unwrap();
    // One statement naming tenants on two shards is refused too.
    let e = c
        .simple_query(&format!("SELECT * FROM accounts WHERE tenant_id = '{a}' UNION ALL SELECT * FROM accounts WHERE tenant_id = '{b}'"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    // And nothing ran on the second shard: its table is untouched by a refused write.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!(
        "INSERT INTO accounts (tenant_id, name) VALUES ('{a}', 'x')"
    ))
    .await
    .unwrap();
    assert!(c
        .simple_query(&format!(
            "INSERT INTO accounts (tenant_id, name) VALUES ('{b}', 'leak')"
        ))
        .await
        .is_err());
    c.simple_query("ROLLBACK").await.unwrap();
    let leaked = f.shards[route(&f.map, &b)]
        .psql("app", "SELECT count(*) FROM accounts WHERE name = 'leak'");
    assert_eq!(leaked, "0");
}

/// A transaction on one shard can always be ended, whatever its session's
/// tenant settings say (probe finding: after a `SET` naming another shard's
/// tenant, COMMIT and ROLLBACK were refused for good and the shard's server
/// stayed checked out in an aborted transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_one_shard_always_ends() {
    let f = Fixture::start(2, "sources = [\"scan\", \"comment\", \"set\", \"startup\"]");
    let (a, b) = pick_two_shards(&f);
    let c = f.client("").await;
    let rows = |tenant: &str, name: &str| {
        f.shards[route(&f.map, tenant)].psql(
            "app",
            &format!(
                "SELECT count(*) FROM accounts WHERE tenant_id = '{tenant}' AND name = '{name}'"
            ),
        )
    };
    // A session SET naming another shard's tenant inside the transaction is
    // refused like any cross-shard work, and the transaction still ends.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!(
        "INSERT INTO accounts (tenant_id, name) VALUES ('{a}', 'rolled back')"
    ))
    .await
    .unwrap();
    let e = c
        .simple_query(&format!("SET tenant_id = '{b}'"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(rows(&a, "rolled back"), "0");
    // The scan comes first here: the session's SET tenant (on the other shard)
    // does not place this transaction, nor its COMMIT.
    c.simple_query(&format!("SET tenant_id = '{b}'"))
        .await
        .unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!(
        "INSERT INTO accounts (tenant_id, name) VALUES ('{a}', 'committed')"
    ))
    .await
    .unwrap();
    assert_eq!(
        one(&c, "SHOW transaction_isolation").await.unwrap(),
        "read committed"
    );
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(rows(&a, "committed"), "1");
    // And the session goes on: its own tenant's work runs on its shard.
    assert_eq!(
        one(&c, "SELECT current_setting('port') FROM accounts LIMIT 1")
            .await
            .unwrap(),
        f.port_of(&b)
    );
}

/// Two integer tenants on different shards.
fn pick_two_shards(f: &Fixture) -> (String, String) {
    let a = (1..100)
        .map(|i| i.to_string())
        .find(|t| route(&f.map, t) == 0)
        .unwrap();
    let b = (1..100)
        .map(|i| i.to_string())
        .find(|t| route(&f.map, t) == 1)
        .unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tenant_reject_and_default() {
    let f = Fixture::start(2, "");
    let c = f.client("").await;
    let e = c
        .simple_query("SELECT count(*) FROM accounts")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P17");
    let m = msg(&e);
    assert!(
        m.contains("tenant_id") && m.contains("SET tenant_id"),
        "{m}"
    );
    // Tenant-free statements run anywhere and never fail for lack of a tenant.
    c.simple_query("SET statement_timeout = '5s'")
        .await
        .unwrap();
    assert_eq!(one(&c, "SHOW statement_timeout").await.unwrap(), "5s");
    drop(f);

    let f = Fixture::start(2, "no_tenant = \"default\"\ndefault_shard = \"s1\"");
    let c = f.client("").await;
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.shards[1].port.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_is_held_until_the_tenant_is_known() {
    let f = Fixture::start(2, "");
    let (a, b) = pick_two_shards(&f);
    for t in [&a, &b] {
        // tokio-postgres transaction(): BEGIN goes out as a simple query first.
        let mut c = f.client("").await;
        let tx = c.transaction().await.unwrap();
        let row = tx
            .query_one("SELECT current_setting('port'), now() = statement_timestamp() FROM accounts WHERE tenant_id = $1", &[t])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), f.port_of(t));
        tx.execute(
            "INSERT INTO accounts (tenant_id, name) VALUES ($1, 'rolled back')",
            &[t],
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let n = f.shards[route(&f.map, t)].psql(
            "app",
            "SELECT count(*) FROM accounts WHERE name = 'rolled back'",
        );
        assert_eq!(
            n, "0",
            "the held BEGIN must have been replayed: the insert was rolled back"
        );
    }
    // psql: BEGIN; ...; COMMIT as separate statements.
    let script = format!(
        "BEGIN;\nSELECT current_setting('port') FROM accounts WHERE tenant_id = '{b}';\nINSERT INTO accounts (tenant_id, name) VALUES ('{b}', 'committed');\nCOMMIT;\n"
    );
    let out = std::process::Command::new("psql")
        .arg(f.bouncer.conn_str("app", "secret", "app"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = f.shards[route(&f.map, &b)].psql(
        "app",
        "SELECT count(*) FROM accounts WHERE name = 'committed'",
    );
    assert_eq!(n, "1");
    // A BEGIN followed by COMMIT with nothing in between needs no server at all.
    let c = f.client("").await;
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_a_tenant_under_load_without_failures() {
    let f = Fixture::start(2, "");
    let (a, _) = pick_two_shards(&f);
    // Tenant `a` lives on s0; copy its row to s1 so reads succeed on both sides.
    f.shards[1].psql(
        "app",
        &format!("INSERT INTO accounts VALUES ('{a}', 'owner of {a}')"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let c = f.client(&format!("options='-c tenant_id={a}'")).await;
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut ports = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                c.simple_query("BEGIN").await.expect("begin");
                let p = one(&c, "SELECT current_setting('port') FROM accounts LIMIT 1")
                    .await
                    .expect("select");
                let p2 = one(&c, "SELECT current_setting('port')")
                    .await
                    .expect("select 2");
                assert_eq!(p, p2, "a transaction moved shards mid-way");
                c.simple_query("COMMIT").await.expect("commit");
                ports.push((started, p));
                done.fetch_add(1, Ordering::Relaxed);
            }
            ports
        }));
    }
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            eventually(Duration::from_secs(30), "workers stalled", || async {
                done.load(Ordering::Relaxed) >= n
            })
            .await
        }
    };
    wait_for(50).await;
    // Move tenant `a` to s1 by rewriting the map on disk (the file watcher reloads).
    let moved = format!("version = 2\nmethod = \"citus\"\n[tenants]\n\"42\" = \"s1\"\nacme = \"s1\"\n\"{a}\" = \"s1\"\n");
    f.bouncer.write_file("shardmap.toml", &moved);
    let s1 = f.shards[1].port.to_string();
    let probe = f.client(&format!("options='-c tenant_id={a}'")).await;
    eventually_ok(Duration::from_secs(20), || async {
        if one(&probe, "SELECT current_setting('port')").await.unwrap() == s1 {
            Ok(())
        } else {
            Err(format!("map change never applied:\n{}", f.bouncer.log()))
        }
    })
    .await;
    let switched = Instant::now();
    let after = done.load(Ordering::Relaxed);
    wait_for(after + 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("a worker failed a transaction"));
    }
    // Every transaction that began after the new map was seen is on the new shard.
    let late: Vec<_> = all.iter().filter(|(t, _)| *t > switched).collect();
    assert!(late.len() >= 40, "{}", late.len());
    assert!(late.iter().all(|(_, p)| *p == s1), "{late:?}");
    assert!(all.iter().any(|(_, p)| *p == f.shards[0].port.to_string()));
    // An invalid map is rejected with the reason and the old one stays.
    f.bouncer.write_file(
        "shardmap.toml",
        "version = 3\nmethod = \"citus\"\n[tenants]\nacme = \"s9\"\n",
    );
    eventually_ok(Duration::from_secs(20), || async {
        let log = f.bouncer.log();
        if log.contains("s9") {
            Ok(())
        } else {
            Err(format!("rejection not logged:\n{log}"))
        }
    })
    .await;
    assert_eq!(
        one(&probe, "SELECT current_setting('port')").await.unwrap(),
        s1
    );
    // SIGHUP reloads too: move it back (a higher version: an older one
    // is refused).
    f.bouncer
        .write_file("shardmap.toml", &MAP.replace("version = 1", "version = 4"));
    f.bouncer.signal(libc::SIGHUP);
    let s0 = f.shards[0].port.to_string();
    eventually(
        Duration::from_secs(20),
        "SIGHUP reload never applied",
        || async { one(&probe, "SELECT current_setting('port')").await.unwrap() == s0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_fails_only_its_tenants() {
    let f = Fixture::start(2, "");
    let (a, b) = pick_two_shards(&f);
    let c = f.client("").await;
    f.shards[1].stop();
    let e = c
        .simple_query(&format!(
            "SELECT name FROM accounts WHERE tenant_id = '{b}'"
        ))
        .await
        .unwrap_err();
    assert!(msg(&e).contains("s1"), "{}", msg(&e));
    for _ in 0..3 {
        let got = one(
            &c,
            &format!("SELECT name FROM accounts WHERE tenant_id = '{a}'"),
        )
        .await
        .unwrap();
        assert_eq!(got, format!("owner of {a}"));
    }
    // New clients whose tenant lives on the healthy shard log in and work.
    let c2 = f.client(&format!("options='-c tenant_id={a}'")).await;
    assert_eq!(
        one(&c2, "SELECT current_setting('port')").await.unwrap(),
        f.port_of(&a)
    );
    f.shards[1].restart();
    let got = one(
        &c,
        &format!("SELECT name FROM accounts WHERE tenant_id = '{b}'"),
    )
    .await
    .unwrap();
    assert_eq!(got, format!("owner of {b}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_routes_maps_and_tenants() {
    let f = Fixture::start(2, "");
    let c = f.client("").await;
    for _ in 0..3 {
        one(&c, "SELECT 1 /* tenant_id=42 */").await.unwrap();
    }
    one(&c, "SELECT 1 /* tenant_id=acme */").await.unwrap();
    let admin = f.bouncer.connect("admin", "admin", "pgbouncer").await;
    let rows = |msgs: Vec<SimpleQueryMessage>| -> Vec<Vec<String>> {
        msgs.into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    let r = rows(admin.simple_query("SHOW ROUTE '42'").await.unwrap());
    assert_eq!(r.len(), 1);
    assert!(
        r[0].contains(&"s1".to_string()) && r[0].iter().any(|v| v.contains("override")),
        "{r:?}"
    );
    let r = rows(admin.simple_query("SHOW ROUTE '1'").await.unwrap());
    let expected = format!("s{}", route(&f.map, "1"));
    assert!(
        r[0].contains(&expected) && r[0].iter().any(|v| v.contains("hashint8")),
        "{r:?}"
    );
    let r = rows(admin.simple_query("SHOW SHARD_MAP").await.unwrap());
    assert!(
        r[0].contains(&"citus".to_string()) && r[0].contains(&"1".to_string()),
        "{r:?}"
    );
    // Columns: database, tenant, shard, xact_count, query_count, total_xact_time,
    // avg_xact_time, waiting, last_seen. Counters are exact; hottest tenant first.
    let r = rows(admin.simple_query("SHOW TENANTS").await.unwrap());
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(&r[0][..5], &["app", "42", "s1", "3", "3"], "{r:?}");
    assert_eq!(&r[1][..5], &["app", "acme", "s1", "1", "1"], "{r:?}");
    assert_eq!(r[0][7], "0");
    let r = rows(admin.simple_query("SHOW TENANTS 1").await.unwrap());
    assert_eq!(r.len(), 1);
}

/// Regression: a statement prepared with Parse/Describe/Flush while BEGIN is held
/// runs on a server taken outside the transaction; the tenant's work that follows
/// on the same shard must still be inside the replayed BEGIN, so ROLLBACK undoes it
/// (asyncpg does exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_begin_survives_a_describe_only_batch() {
    let f = Fixture::start_auth(2, "", "trust");
    let (a, b) = pick_two_shards(&f);
    for t in [&a, &b] {
        let mut c = Raw::login(f.bouncer.port, "app", "app");
        let m = c.query("BEGIN").run(1);
        assert_eq!(tags(&m), "CZ");
        let name = format!("ins_{t}");
        c.parse(
            &name,
            "INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)",
        )
        .describe_stmt(&name);
        c.msg_flush();
        let m = c.run_until(b'n');
        assert_eq!(tags(&m), "1tn", "{m:?}");
        let m = c
            .bind(&name, &[t, "must roll back"])
            .execute()
            .sync()
            .run(1);
        assert_eq!(first_error(&m), None, "{m:?}");
        assert_eq!(m.last().unwrap().1, b"T", "still in the transaction: {m:?}");
        let m = c.query("ROLLBACK").run(1);
        assert_eq!(first_error(&m), None);
        let n = f.shards[route(&f.map, t)].psql(
            "app",
            "SELECT count(*) FROM accounts WHERE name = 'must roll back'",
        );
        assert_eq!(n, "0", "tenant {t}: the insert escaped the transaction");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_startup_tenant_refuses_a_different_set() {
    let f = Fixture::start(2, "lock_startup_tenant = true");
    let c = f.client("options='-c tenant_id=42'").await;
    let e = c.simple_query("SET tenant_id = 1").await.unwrap_err();
    assert_eq!(code(&e), "42501", "{}", msg(&e));
    c.simple_query("SET tenant_id = 42").await.unwrap();
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await.unwrap(),
        f.port_of("42")
    );
    // A statement naming another shard's tenant is refused (fail closed).
    let (a, _) = pick_two_shards(&f);
    let e = c
        .simple_query(&format!(
            "SELECT name FROM accounts WHERE tenant_id = '{a}'"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
}

/// SHOW TENANTS' `waiting` column counts a tenant's clients queued for a server
/// of its shard while the pool is full, and drops back to 0 once they got one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_tenants_counts_clients_waiting_for_a_server() {
    let f = Fixture::start(2, "");
    let (holders, waiters, admin) = two_waiting_for_tenant_42(&f).await;
    for c in &holders {
        c.simple_query("COMMIT").await.unwrap();
    }
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(waiting(&admin).await, "0");
}

/// Clients killed while they wait are counted out of their tenant's waiting
/// clients. (A probe saw a waiting count stay up with no client left; this
/// path was fine before too, the count is now also drop-safe.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_waiters_are_counted_out() {
    let f = Fixture::start(2, "");
    let (_holders, waiters, admin) = two_waiting_for_tenant_42(&f).await;
    admin.simple_query("KILL app").await.unwrap();
    for w in waiters {
        assert!(w.await.unwrap().is_err(), "a killed waiter's query ran");
    }
    eventually(
        Duration::from_secs(10),
        "no waiting client counted",
        || async { waiting(&admin).await == "0" },
    )
    .await;
}

/// Tenant 42 lives on s1, whose pool has 4 servers: hold all of them in
/// transactions, and queue two more clients of the tenant (SHOW TENANTS says
/// 2 waiting). Returns the holders, the waiters' queries and a console client.
async fn two_waiting_for_tenant_42(
    f: &Fixture,
) -> (
    Vec<tokio_postgres::Client>,
    Vec<tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>>,
    tokio_postgres::Client,
) {
    let mut holders = Vec::new();
    for _ in 0..4 {
        let c = f.client("options='-c tenant_id=42'").await;
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
        holders.push(c);
    }
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let c = f.client("options='-c tenant_id=42'").await;
        waiters.push(tokio::spawn(async move {
            c.simple_query("SELECT 2").await.map(|_| ())
        }));
    }
    let admin = f.bouncer.connect("admin", "admin", "pgbouncer").await;
    eventually(
        Duration::from_secs(10),
        "2 clients of tenant 42 waiting",
        || async { waiting(&admin).await == "2" },
    )
    .await;
    (holders, waiters, admin)
}

/// Tenant 42's `waiting` column in SHOW TENANTS.
async fn waiting(admin: &tokio_postgres::Client) -> String {
    admin
        .simple_query("SHOW TENANTS")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get(1) == Some("42") => r.get(7).map(str::to_string),
            _ => None,
        })
        .next()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_of_an_array_routes_when_every_element_lives_on_one_shard() {
    let f = Fixture::start_auth(2, "", "trust");
    let c = f.client("").await;
    let seeded = [
        "1", "2", "3", "4", "5", "6", "7", "42", "acme", "globex", "-9",
    ];
    let on = |shard: usize| -> Vec<String> {
        let mut v: Vec<String> = seeded
            .iter()
            .filter(|t| route(&f.map, t) == shard)
            .map(|t| t.to_string())
            .collect();
        v.sort();
        v
    };
    for shard in 0..2 {
        let mine = on(shard);
        assert!(mine.len() >= 2, "{mine:?}");
        let port = f.shards[shard].port.to_string();
        // A text[] parameter, sent in binary by tokio-postgres.
        let rows = c
            .query(
                "SELECT tenant_id, current_setting('port') FROM accounts WHERE tenant_id = ANY($1) ORDER BY 1",
                &[&mine],
            )
            .await
            .unwrap();
        let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, mine);
        assert!(rows.iter().all(|r| r.get::<_, String>(1) == port));
        // ARRAY[...] of literals through the simple protocol.
        let lits: Vec<String> = mine.iter().map(|t| format!("'{t}'")).collect();
        let got = one(
            &c,
            &format!(
                "SELECT count(*) || ' on ' || current_setting('port') FROM accounts WHERE tenant_id = ANY(ARRAY[{}])",
                lits.join(", ")
            ),
        )
        .await
        .unwrap();
        assert_eq!(got, format!("{} on {port}", mine.len()));
        // A text-format array parameter.
        let mut r = Raw::login(f.bouncer.port, "app", "app");
        let m = r
            .parse(
                "",
                "SELECT count(*) || ' on ' || current_setting('port') FROM accounts WHERE tenant_id = ANY($1::text[])",
            )
            .bind("", &[&format!("{{{}}}", mine.join(","))])
            .execute()
            .sync()
            .run(1);
        assert_eq!(
            support::raw::first_column(&m),
            vec![format!("{} on {port}", mine.len())]
        );
    }
    // Elements on two shards: refused, nothing runs.
    let across = vec![on(0)[0].clone(), on(1)[0].clone()];
    let e = c
        .query(
            "SELECT 1 FROM accounts WHERE tenant_id = ANY($1)",
            &[&across],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
    let e = one(
        &c,
        &format!(
            "SELECT 1 FROM accounts WHERE tenant_id = ANY(ARRAY['{}', '{}'])",
            across[0], across[1]
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
    // A NULL element or a NULL array names no tenant it could be checked against.
    let with_null: Vec<Option<String>> = vec![Some(on(0)[0].clone()), None];
    let e = c
        .query(
            "SELECT 1 FROM accounts WHERE tenant_id = ANY($1)",
            &[&with_null],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{}", msg(&e));
    let none: Option<Vec<String>> = None;
    let e = c
        .query("SELECT 1 FROM accounts WHERE tenant_id = ANY($1)", &[&none])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{}", msg(&e));
    // An empty array names no tenant.
    let empty: Vec<String> = vec![];
    let e = c
        .query(
            "SELECT 1 FROM accounts WHERE tenant_id = ANY($1)",
            &[&empty],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P17", "{}", msg(&e));
}

/// The file watcher applies a map only once its writer is done with it: not
/// half way through a write that pauses with the file open (probe H: a valid
/// first half was applied, and a tenant routed by hash to another shard until
/// the rest came). A map reached through symlinks, as a Kubernetes ConfigMap
/// mounts it (`shardmap.toml -> ..data/shardmap.toml`, `..data -> ..v3`), is
/// followed when `..data` is swapped (it was not, until a RELOAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watcher_applies_whole_maps_and_follows_symlink_swaps() {
    use std::io::Write;
    let f = Fixture::start(2, "");
    let admin = f.bouncer.connect("admin", "admin", "pgbouncer").await;
    let version = || {
        let admin = &admin;
        async move {
            let m = admin.simple_query("SHOW SHARD_MAP").await.unwrap();
            m.into_iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
                    _ => None,
                })
                .unwrap()
        }
    };
    let dir = &f.bouncer.dir;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("shardmap.toml"))
        .unwrap();
    // A valid map by itself, without the overrides.
    file.write_all(b"version = 2\nmethod = \"citus\"\n")
        .unwrap();
    // A writer's pause longer than the watcher's quiet period (there is no
    // event to await: what is checked is that nothing happens meanwhile).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(version().await, "1", "half a map was applied");
    file.write_all(b"[tenants]\n\"42\" = \"s1\"\nacme = \"s1\"\n")
        .unwrap();
    drop(file);
    eventually(Duration::from_secs(20), "the whole map applied", || async {
        version().await == "2"
    })
    .await;
    let c = f.client("").await;
    let port = one(&c, "SELECT current_setting('port') /* tenant_id=42 */")
        .await
        .unwrap();
    assert_eq!(port, f.shards[1].port.to_string(), "42's override was lost");

    // The ConfigMap layout, then a swap of `..data`.
    let with_version = |v: u32| MAP.replace("version = 1", &format!("version = {v}"));
    for (v, d) in [(3, "..v3"), (4, "..v4")] {
        std::fs::create_dir(dir.join(d)).unwrap();
        std::fs::write(dir.join(d).join("shardmap.toml"), with_version(v)).unwrap();
    }
    std::os::unix::fs::symlink("..v3", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/shardmap.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), dir.join("shardmap.toml")).unwrap();
    eventually(
        Duration::from_secs(20),
        "the linked map applied",
        || async { version().await == "3" },
    )
    .await;
    std::os::unix::fs::symlink("..v4", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually(
        Duration::from_secs(20),
        "the swapped map applied",
        || async { version().await == "4" },
    )
    .await;
    // Behind a second link, in another directory (probe L): the swap there
    // is seen too.
    let shared = dir.join("shared");
    for (v, d) in [(5, "..v5"), (6, "..v6")] {
        std::fs::create_dir_all(shared.join(d)).unwrap();
        std::fs::write(shared.join(d).join("shardmap.toml"), with_version(v)).unwrap();
    }
    std::os::unix::fs::symlink("..v5", shared.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/shardmap.toml", shared.join("shardmap.toml")).unwrap();
    std::os::unix::fs::symlink("shared/shardmap.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), dir.join("shardmap.toml")).unwrap();
    eventually(
        Duration::from_secs(20),
        "the map behind two links applied",
        || async { version().await == "5" },
    )
    .await;
    std::os::unix::fs::symlink("..v6", shared.join("..data_tmp")).unwrap();
    std::fs::rename(shared.join("..data_tmp"), shared.join("..data")).unwrap();
    eventually(
        Duration::from_secs(20),
        "the swap behind two links applied",
        || async { version().await == "6" },
    )
    .await;
}
