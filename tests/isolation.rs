//! Attack and isolation tests for tenant routing and pooled sessions.
//!
//! These are acceptance tests for the isolation fixes: they specify the behaviour
//! shardbouncer must have, and every one of them checks *data* (which shard's rows
//! came back, which shard a row landed on, read back over a direct connection to
//! each shard), not only error codes.
//!
//! The rule they enforce: a unit of work (a simple Query, or an extended batch up
//! to Sync) that names tenants on two shards is refused with 0A000 and nothing of
//! it runs on either shard; a transaction pinned to shard X refuses work naming a
//! tenant on Y with 0A000 and is then failed; with `no_tenant = "reject"` anything
//! that is not provably tenant-free fails closed with 42P17; a locked startup
//! tenant cannot be replaced by any source; and no session state (settings, role,
//! temp tables, locks, LISTEN, cursors, prepared statements) of one client is ever
//! seen by the next client of the same server connection.
//!
//! Fixture (one per test): two real PostgreSQL clusters (s0, s1) and one
//! shardbouncer (trust auth, so the raw protocol client works) with several
//! logical databases over the same `app` database of both clusters:
//!
//! | database               | shards | pool | routing                                        |
//! |------------------------|--------|------|------------------------------------------------|
//! | `app`                  | s0, s1 | 4    | defaults (`no_tenant = "reject"`)              |
//! | `app1`                 | s0, s1 | 1    | defaults; one server per shard, so consecutive clients share it |
//! | `locked`               | s0, s1 | 4    | `lock_startup_tenant = true`                   |
//! | `locked_comment_first` | s0, s1 | 4    | lock, `sources = ["comment", "startup", "set", "scan"]` |
//! | `locked_set_first`     | s0, s1 | 4    | lock, `sources = ["set", "comment", "startup", "scan"]` |
//! | `fn_default`           | s0, s1 | 4    | lock, `no_tenant = "default"`, `default_shard = "s0"` |
//! | `plain1`               | s0     | 1    | none (a plain pooler)                          |
//!
//! The shard map pins every tenant the tests use with `[tenants]` overrides, so
//! placement is certain: `alpha`, `alpha2`, `like`, `1001` on s0; `bravo`,
//! `bravo2`, `2002` on s1. Every shard holds `shard_marker(name)` = its own name,
//! `accounts(tenant_id text, name text)` with `'owner of <t>'` for its tenants,
//! `ledger(tenant_id bigint, note text)` with `'ledger of <n>'`, a role `r_other`
//! granted to `app`, and schemas `ta.t(v int)` = 1 / `tb.t(v text)` = 'b'.

mod support;

use shardbouncer::router::{ShardMap, TenantKey};
use std::future::Future;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::raw::{
    command_tags, error_codes, first_column, function_result, last_status, tags, Raw,
};
use support::{Bouncer, PgCluster};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Tenant on s0.
const A: &str = "alpha";
/// Another tenant on s0.
const A2: &str = "alpha2";
/// Tenant on s1.
const B: &str = "bravo";
/// Another tenant on s1.
const B2: &str = "bravo2";
/// A tenant on s0 whose name is an SQL keyword (for the standard_conforming_strings probe).
const LIKE_T: &str = "like";
/// Integer tenants of `ledger` (bigint column): on s0 and s1.
const IA: i64 = 1001;
const IB: i64 = 2002;

const MAP: &str = r#"version = 1
method = "citus"
[tenants]
alpha = "s0"
alpha2 = "s0"
like = "s0"
"1001" = "s0"
bravo = "s1"
bravo2 = "s1"
"2002" = "s1"
"#;

/// Tenants seeded into `accounts`, with their shard.
const TENANTS: &[(&str, usize)] = &[(A, 0), (A2, 0), (LIKE_T, 0), (B, 1), (B2, 1)];

/// Upper bound for any single wait on the bouncer.
const WAIT: Duration = Duration::from_secs(15);

struct Fixture {
    shards: Vec<PgCluster>,
    bouncer: Bouncer,
}

fn config(shards: &[PgCluster]) -> String {
    let both = support::shard_list(shards.iter());
    let s0 = support::shard_list(shards.iter().take(1));
    let db = |name: &str, list: &str, db_extra: &str, routing: Option<&str>| {
        let mut s = format!(
            "[databases.{name}]\ndbname = \"app\"\nserver_user = \"app\"\nserver_password = \"secret\"\nshards = [ {list} ]\n{db_extra}\n"
        );
        if let Some(r) = routing {
            s.push_str(&format!(
                "[databases.{name}.routing]\nkey = \"tenant_id\"\nshard_map = \"{{DIR}}/shardmap.toml\"\n{r}\n"
            ));
        }
        s
    };
    let lock = "lock_startup_tenant = true";
    [
        "[listen]\naddr = \"127.0.0.1:{PORT}\"\n[pool]\nmode = \"transaction\"\ndefault_pool_size = 4\nserver_connect_timeout = \"2s\"\nquery_wait_timeout = \"20s\"\n[auth]\ntype = \"trust\"\n[[users]]\nname = \"app\"\npassword = \"secret\"\n".to_string(),
        db("app", &both, "", Some("")),
        db("app1", &both, "default_pool_size = 1", Some("")),
        db("locked", &both, "", Some(lock)),
        db(
            "locked_comment_first",
            &both,
            "",
            Some(&format!("{lock}\nsources = [\"comment\", \"startup\", \"set\", \"scan\"]")),
        ),
        db(
            "locked_set_first",
            &both,
            "",
            Some(&format!("{lock}\nsources = [\"set\", \"comment\", \"startup\", \"scan\"]")),
        ),
        db(
            "fn_default",
            &both,
            "",
            Some(&format!("{lock}\nno_tenant = \"default\"\ndefault_shard = \"s0\"")),
        ),
        db("plain1", &s0, "default_pool_size = 1", None),
    ]
    .concat()
}

impl Fixture {
    fn start() -> Fixture {
        let shards: Vec<PgCluster> = (0..2).map(|_| PgCluster::start()).collect();
        for (i, c) in shards.iter().enumerate() {
            let mut sql = format!(
                "CREATE TABLE accounts (tenant_id text, name text);\n\
                 CREATE TABLE shard_marker (name text);\n\
                 INSERT INTO shard_marker VALUES ('s{i}');\n\
                 CREATE TABLE ledger (tenant_id bigint, note text);\n\
                 INSERT INTO ledger VALUES ({n}, 'ledger of {n}');\n\
                 GRANT ALL ON accounts, shard_marker, ledger TO app;\n\
                 CREATE ROLE r_other;\n\
                 GRANT r_other TO app;\n\
                 GRANT SELECT ON accounts, shard_marker, ledger TO r_other;\n\
                 CREATE SCHEMA ta;\nCREATE TABLE ta.t (v int);\nINSERT INTO ta.t VALUES (1);\n\
                 CREATE SCHEMA tb;\nCREATE TABLE tb.t (v text);\nINSERT INTO tb.t VALUES ('b');\n\
                 GRANT USAGE ON SCHEMA ta, tb TO app;\nGRANT SELECT ON ta.t, tb.t TO app;\n",
                n = if i == 0 { IA } else { IB },
            );
            for (t, s) in TENANTS {
                if *s == i {
                    sql.push_str(&format!(
                        "INSERT INTO accounts VALUES ('{t}', 'owner of {t}');\n"
                    ));
                }
            }
            c.psql("app", &sql);
        }
        let bouncer = Bouncer::start_with_files(&config(&shards), &[("shardmap.toml", MAP)]);
        Fixture { shards, bouncer }
    }

    /// A tokio-postgres client through the bouncer; `settings` go into the startup
    /// packet as `options=-c k=v ...` (e.g. the tenant, search_path).
    async fn client(&self, db: &str, settings: &[(&str, &str)]) -> Client {
        let mut cs = self.bouncer.conn_str("app", "secret", db);
        if !settings.is_empty() {
            let opts: Vec<String> = settings
                .iter()
                .map(|(k, v)| format!("-c {k}={v}"))
                .collect();
            cs.push_str(&format!(" options='{}'", opts.join(" ")));
        }
        let (c, conn) = within(
            &format!("connect to {db}"),
            tokio_postgres::connect(&cs, tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {db} with {settings:?}: {}", describe(&e)));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        c
    }

    /// A raw protocol client through the bouncer, with extra startup parameters.
    fn raw(&self, db: &str, params: &[(&str, &str)]) -> Raw {
        Raw::login_with(self.bouncer.port, "app", db, params)
    }

    /// SQL on a shard directly (superuser, psql), trimmed output.
    fn direct(&self, shard: usize, sql: &str) -> String {
        self.shards[shard].psql("app", sql)
    }

    /// `count(*)` of `accounts` rows matching `cond`, read on `shard` directly.
    fn count(&self, shard: usize, cond: &str) -> i64 {
        self.direct(
            shard,
            &format!("SELECT count(*) FROM accounts WHERE {cond}"),
        )
        .parse()
        .unwrap()
    }

    /// [`Fixture::count`] on each shard, as `[s0, s1]`.
    fn counts(&self, cond: &str) -> [i64; 2] {
        [self.count(0, cond), self.count(1, cond)]
    }

    fn port(&self, shard: usize) -> String {
        self.shards[shard].port.to_string()
    }
}

// ---------------------------------------------------------------- helpers

/// Await `f`, panicking if it takes longer than [`WAIT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Every value of every row of a simple query (NULL as "NULL").
async fn sq(c: &Client, sql: &str) -> PgResult<Vec<String>> {
    let msgs = within(sql, c.simple_query(sql)).await?;
    let mut out = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push(r.get(i).unwrap_or("NULL").to_string());
            }
        }
    }
    Ok(out)
}

/// A simple query that must succeed; its values.
async fn ok(c: &Client, sql: &str) -> Vec<String> {
    sq(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
}

/// The single value of a simple query that must succeed.
async fn one(c: &Client, sql: &str) -> String {
    let v = ok(c, sql).await;
    assert_eq!(v.len(), 1, "{sql}: expected one value, got {v:?}");
    v.into_iter().next().unwrap()
}

/// Extended protocol (tokio-postgres prepares, binds, executes): first column of
/// each row as text.
async fn xq(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Vec<String>> {
    let rows = within(sql, c.query(sql, params)).await?;
    Ok(rows.iter().map(|r| cell(r, 0)).collect())
}

/// A column of a row as text, whatever its type.
fn cell(r: &tokio_postgres::Row, i: usize) -> String {
    if let Ok(v) = r.try_get::<_, Option<String>>(i) {
        return v.unwrap_or_else(|| "NULL".into());
    }
    if let Ok(v) = r.try_get::<_, Option<i64>>(i) {
        return v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into());
    }
    if let Ok(v) = r.try_get::<_, Option<i32>>(i) {
        return v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into());
    }
    format!("<{}>", r.columns()[i].type_())
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

fn outcome<T: std::fmt::Debug>(r: &PgResult<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {}", describe(e)),
    }
}

/// Problems found by a test, reported together at the end so one run shows every
/// hole a test probes, not only the first.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn push(&mut self, s: String) {
        eprintln!("FINDING: {s}");
        self.0.push(s);
    }

    fn check(&mut self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.push(what());
        }
    }

    /// `r` must be an error with SQLSTATE `want`.
    fn refused<T: std::fmt::Debug>(&mut self, what: &str, r: &PgResult<T>, want: &str) {
        match r {
            Err(e) if code(e) == want => {}
            other => self.push(format!(
                "{what}: expected SQLSTATE {want}, got {}",
                outcome(other)
            )),
        }
    }

    /// `r` must be an error with one of the SQLSTATEs in `want`.
    fn refused_any<T: std::fmt::Debug>(&mut self, what: &str, r: &PgResult<T>, want: &[&str]) {
        match r {
            Err(e) if want.contains(&code(e).as_str()) => {}
            other => self.push(format!(
                "{what}: expected SQLSTATE {want:?}, got {}",
                outcome(other)
            )),
        }
    }

    /// `r` must have succeeded with exactly `want`.
    fn returned(&mut self, what: &str, r: &PgResult<Vec<String>>, want: &[&str]) {
        match r {
            Ok(v) if v.iter().map(String::as_str).eq(want.iter().copied()) => {}
            other => self.push(format!(
                "{what}: expected ok {want:?}, got {}",
                outcome(other)
            )),
        }
    }

    /// Whatever `r` is, it must not carry any of `forbidden` (another shard's data).
    fn no_leak(&mut self, what: &str, r: &PgResult<Vec<String>>, forbidden: &[&str]) {
        if let Ok(v) = r {
            if let Some(x) = v.iter().find(|x| forbidden.contains(&x.as_str())) {
                self.push(format!("{what}: LEAK: returned {x:?} (all: {v:?})"));
            }
        }
    }

    fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// s1's data as the tests see it: a result holding any of these came from B's shard.
const S1_DATA: &[&str] = &["s1", "owner of bravo", "owner of bravo2"];

fn route(map: &ShardMap, t: &str) -> usize {
    map.route(&TenantKey::new(t.as_bytes()).unwrap())
        .unwrap()
        .shard
}

#[test]
fn tenants_are_placed_where_the_tests_assume() {
    let map = ShardMap::parse(MAP, &["s0".to_string(), "s1".to_string()]).unwrap();
    for (t, s) in TENANTS {
        assert_eq!(route(&map, t), *s, "{t}");
    }
    assert_eq!(route(&map, &IA.to_string()), 0);
    assert_eq!(route(&map, &IB.to_string()), 1);
}

// ------------------------------------------------ 1. the lock is absolute

/// `lock_startup_tenant`: a session that connected as tenant A can never run
/// anything for another tenant, whichever source names it and whatever the
/// configured source order: SET, SET LOCAL (in or out of a transaction), routing
/// comments, sqlcommenter, scanned literals, Bind parameters, INSERTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_startup_tenant_cannot_be_overridden_by_any_source_in_any_order() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    for db in ["locked", "locked_comment_first", "locked_set_first"] {
        let c = f.client(db, &[("tenant_id", A)]).await;
        let w = |s: &str| format!("[{db}] {s}");
        assert_eq!(one(&c, "SELECT name FROM shard_marker").await, "s0", "{db}");

        let r = sq(&c, "SET tenant_id = 'bravo'").await;
        bad.refused(&w("SET tenant_id = B"), &r, "42501");
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.returned(&w("after SET tenant_id = B"), &r, &["s0"]);

        let r = sq(&c, "SET LOCAL tenant_id = 'bravo'").await;
        bad.refused(
            &w("SET LOCAL tenant_id = B outside a transaction"),
            &r,
            "42501",
        );
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.returned(&w("after SET LOCAL outside a transaction"), &r, &["s0"]);

        // In a held BEGIN (no server yet).
        ok(&c, "BEGIN").await;
        let r = sq(&c, "SET LOCAL tenant_id = 'bravo'").await;
        bad.refused(&w("BEGIN; SET LOCAL tenant_id = B"), &r, "42501");
        for probe in [
            "SELECT name FROM shard_marker",
            "SELECT name FROM accounts ORDER BY name",
        ] {
            let r = sq(&c, probe).await;
            bad.no_leak(&w(&format!("BEGIN; SET LOCAL B; {probe}")), &r, S1_DATA);
        }
        let _ = sq(&c, "ROLLBACK").await;

        // In a transaction already pinned to A's shard.
        ok(&c, "BEGIN").await;
        assert_eq!(one(&c, "SELECT name FROM shard_marker").await, "s0");
        let r = sq(&c, "SET LOCAL tenant_id = 'bravo'").await;
        bad.refused(&w("pinned BEGIN; SET LOCAL tenant_id = B"), &r, "42501");
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.no_leak(&w("pinned BEGIN; SET LOCAL B; SELECT"), &r, S1_DATA);
        let _ = sq(&c, "ROLLBACK").await;

        // SET LOCAL to the locked tenant itself is fine.
        ok(&c, "BEGIN").await;
        let r = sq(&c, "SET LOCAL tenant_id = 'alpha'").await;
        bad.check(r.is_ok(), || {
            w(&format!("BEGIN; SET LOCAL tenant_id = A: {}", outcome(&r)))
        });
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.returned(&w("after SET LOCAL tenant_id = A"), &r, &["s0"]);
        let _ = sq(&c, "COMMIT").await;

        for (what, sql) in [
            (
                "routing comment naming B",
                "/* tenant_id=bravo */ SELECT name FROM shard_marker",
            ),
            (
                "trailing comment naming B",
                "SELECT name FROM shard_marker -- tenant_id: bravo\n",
            ),
            (
                "sqlcommenter naming B",
                "SELECT name FROM shard_marker /*controller='x',tenant_id='bravo'*/",
            ),
            (
                "scanned literal B",
                "SELECT name FROM accounts WHERE tenant_id = 'bravo'",
            ),
            (
                "scanned literal B joined to the marker",
                "SELECT m.name FROM shard_marker m, accounts a WHERE a.tenant_id = 'bravo'",
            ),
            (
                // As PgJDBC's simple query mode binds a value (probe CC).
                "scanned literal B in parentheses",
                "SELECT name FROM accounts WHERE tenant_id = (('bravo'::varchar))",
            ),
        ] {
            // B lives on another shard: a cross-shard statement, as without the lock.
            let r = sq(&c, sql).await;
            bad.refused(&w(what), &r, "0A000");
            bad.no_leak(&w(what), &r, S1_DATA);
        }
        // Another tenant on the locked tenant's own shard is refused by the lock.
        for (what, sql) in [
            (
                "routing comment naming A2 (same shard)",
                "/* tenant_id=alpha2 */ SELECT name FROM accounts",
            ),
            (
                "scanned literal A2 (same shard)",
                "SELECT name FROM accounts WHERE tenant_id = 'alpha2'",
            ),
        ] {
            let r = sq(&c, sql).await;
            bad.refused(&w(what), &r, "42501");
            bad.no_leak(&w(what), &r, &["owner of alpha2"]);
        }
        let r = xq(&c, "SELECT name FROM accounts WHERE tenant_id = $1", &[&A2]).await;
        bad.refused(&w("extended $1 = A2 (same shard)"), &r, "42501");
        // A SET hidden in a multi-statement query: refused one way or another, never run for B.
        let r = sq(&c, "SET tenant_id = 'bravo'; SELECT name FROM shard_marker").await;
        bad.check(r.is_err(), || {
            w(&format!("SET B; SELECT in one query: {}", outcome(&r)))
        });
        bad.no_leak(&w("SET B; SELECT in one query"), &r, S1_DATA);
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.returned(&w("after SET B; SELECT in one query"), &r, &["s0"]);

        // Extended protocol: the tenant as a Bind parameter.
        let r = xq(&c, "SELECT name FROM accounts WHERE tenant_id = $1", &[&B]).await;
        bad.refused(&w("extended $1 = B"), &r, "0A000");
        bad.no_leak(&w("extended $1 = B"), &r, S1_DATA);

        // Writes for B: refused, and the row exists on no shard (checked below).
        let r = sq(
            &c,
            &format!("INSERT INTO accounts (tenant_id, name) VALUES ('bravo', 'lock-{db}-simple')"),
        )
        .await;
        bad.refused(&w("simple INSERT for B"), &r, "0A000");
        let name = format!("lock-{db}-ext");
        let r = within(
            "extended insert",
            c.execute(
                "INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)",
                &[&B, &name],
            ),
        )
        .await;
        bad.refused(&w("extended INSERT for B"), &r, "0A000");

        // RESET does not unlock either.
        let _ = sq(&c, "RESET tenant_id").await;
        let r = sq(&c, "SELECT name FROM shard_marker").await;
        bad.returned(&w("after RESET tenant_id"), &r, &["s0"]);
        // The session still serves its own tenant.
        let r = sq(&c, "SELECT name FROM accounts WHERE tenant_id = 'alpha'").await;
        bad.returned(&w("own tenant afterwards"), &r, &["owner of alpha"]);
    }
    let n = f.counts("name LIKE 'lock-%'");
    bad.check(n == [0, 0], || {
        format!(
            "refused INSERTs for B left rows behind: s0 = {}, s1 = {}",
            n[0], n[1]
        )
    });

    // The tenant as a plain startup parameter (not options), comment source first.
    let mut r = f.raw("locked_comment_first", &[("tenant_id", A)]);
    let m = r
        .query("/* tenant_id=bravo */ SELECT name FROM shard_marker")
        .run(1);
    bad.check(error_codes(&m) == ["0A000"], || {
        format!(
            "raw startup param, comment naming B: errors {:?}, rows {:?}",
            error_codes(&m),
            first_column(&m)
        )
    });
    bad.check(!first_column(&m).iter().any(|v| v == "s1"), || {
        "raw startup param, comment naming B: LEAK: returned s1".into()
    });
    bad.finish("locked_startup_tenant_cannot_be_overridden_by_any_source_in_any_order");
}

// --------------------------------------- 2. every tenant mention is checked

/// Extended protocol: every parameter that names a tenant counts, not only the
/// first. Tenants on two shards: 0A000 and nothing written anywhere; tenants on
/// one shard: runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_batches_check_every_tenant_parameter() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    let ins = "INSERT INTO accounts (tenant_id, name) VALUES ($1, $2), ($3, $4)";

    let r = within(
        "cross insert",
        c.execute(ins, &[&A, &"x2-cross-a", &B, &"x2-cross-b"]),
    )
    .await;
    bad.refused("multi-row INSERT (A, B)", &r, "0A000");
    let n = f.counts("name LIKE 'x2-cross%'");
    bad.check(n == [0, 0], || {
        format!(
            "multi-row INSERT (A, B) wrote rows: s0 = {}, s1 = {}",
            n[0], n[1]
        )
    });

    let r = within(
        "cross insert BA",
        c.execute(ins, &[&B, &"x2-crossba-b", &A, &"x2-crossba-a"]),
    )
    .await;
    bad.refused("multi-row INSERT (B, A)", &r, "0A000");
    let n = f.counts("name LIKE 'x2-crossba%'");
    bad.check(n == [0, 0], || {
        format!(
            "multi-row INSERT (B, A) wrote rows: s0 = {}, s1 = {}",
            n[0], n[1]
        )
    });

    let r = within(
        "same insert",
        c.execute(ins, &[&A, &"x2-same-a", &A2, &"x2-same-a2"]),
    )
    .await;
    bad.check(matches!(r, Ok(2)), || {
        format!("multi-row INSERT (A, A2) on one shard: {}", outcome(&r))
    });
    let n = f.counts("name LIKE 'x2-same%'");
    bad.check(n == [2, 0], || {
        format!(
            "multi-row INSERT (A, A2): rows s0 = {}, s1 = {} (want 2, 0)",
            n[0], n[1]
        )
    });

    // Only the seeded rows: rows written above (if any) must not blur the answer.
    let sel = "SELECT name FROM accounts WHERE (tenant_id = $1 OR tenant_id = $2) \
               AND name LIKE 'owner of %' ORDER BY name";
    let r = xq(&c, sel, &[&A, &B]).await;
    bad.refused("SELECT $1 OR $2 with (A, B)", &r, "0A000");
    bad.no_leak("SELECT $1 OR $2 with (A, B)", &r, S1_DATA);
    let r = xq(&c, sel, &[&B, &A]).await;
    bad.refused("SELECT $1 OR $2 with (B, A)", &r, "0A000");
    let r = xq(&c, sel, &[&A, &A2]).await;
    bad.returned(
        "SELECT $1 OR $2 with (A, A2)",
        &r,
        &["owner of alpha", "owner of alpha2"],
    );

    // A literal and a parameter naming different shards.
    let r = xq(
        &c,
        "SELECT name FROM accounts WHERE tenant_id = 'alpha' OR tenant_id = $1",
        &[&B],
    )
    .await;
    bad.refused("literal A OR $1 = B", &r, "0A000");
    bad.no_leak("literal A OR $1 = B", &r, S1_DATA);
    bad.finish("extended_batches_check_every_tenant_parameter");
}

/// Simple protocol `IN (...)` lists: two shards → 0A000; one shard → runs there and
/// returns every listed tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_in_lists_check_every_tenant() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    let r = sq(
        &c,
        "SELECT name FROM accounts WHERE tenant_id IN ('alpha', 'bravo') ORDER BY name",
    )
    .await;
    bad.refused("IN (A, B)", &r, "0A000");
    bad.no_leak("IN (A, B)", &r, S1_DATA);
    let r = sq(
        &c,
        "DELETE FROM accounts WHERE tenant_id IN ('alpha', 'bravo')",
    )
    .await;
    bad.refused("DELETE ... IN (A, B)", &r, "0A000");
    let n = f.counts("tenant_id IN ('alpha', 'bravo')");
    bad.check(n == [1, 1], || {
        format!(
            "DELETE IN (A, B) deleted rows: s0 = {}, s1 = {}",
            n[0], n[1]
        )
    });
    let r = sq(
        &c,
        "SELECT name FROM accounts WHERE tenant_id IN ('alpha', 'alpha2') ORDER BY name",
    )
    .await;
    bad.returned("IN (A, A2)", &r, &["owner of alpha", "owner of alpha2"]);
    let r = sq(&c, "SELECT m.name FROM shard_marker m WHERE EXISTS (SELECT 1 FROM accounts WHERE tenant_id IN ('bravo', 'bravo2'))").await;
    bad.returned("IN (B, B2) runs on s1", &r, &["s1"]);
    bad.finish("simple_in_lists_check_every_tenant");
}

// ------------------------------------------- 3. no_tenant = reject fails closed

/// Statements that only *start* like tenant-free ones (SET, SHOW, COMMIT, RESET,
/// a parenthesis, a semicolon, a CTE) are not tenant-free: with no tenant anywhere
/// they are refused with 42P17 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_fails_closed_for_statements_disguised_as_tenant_free() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    let before = f.counts("true");
    // Extended protocol: a parenthesised SELECT with no parameters.
    let r = xq(&c, "(SELECT name FROM accounts)", &[]).await;
    bad.refused("extended (SELECT name FROM accounts)", &r, "42P17");
    bad.no_leak(
        "extended (SELECT name FROM accounts)",
        &r,
        &["owner of alpha", "owner of alpha2", "owner of like"],
    );
    for sql in [
        "SET x.y = 1; SELECT * FROM accounts",
        "SHOW work_mem; SELECT * FROM accounts",
        "COMMIT; SELECT * FROM accounts",
        "(SELECT * FROM accounts)",
        ";SELECT * FROM accounts",
        "WITH x AS (SELECT 1) SELECT * FROM accounts",
        "/* hello */ (SELECT name FROM accounts)",
        "RESET ALL; DELETE FROM accounts",
        "SET x.y = 1; DELETE FROM accounts",
        "SHOW work_mem; UPDATE accounts SET name = 'clobbered'",
    ] {
        let r = sq(&c, sql).await;
        bad.refused(sql, &r, "42P17");
        bad.check(
            r.as_ref()
                .map_or(true, |v| v.iter().all(|x| !x.starts_with("owner of"))),
            || format!("{sql}: returned tenant rows {}", outcome(&r)),
        );
    }
    let after = f.counts("true");
    bad.check(before == after, || {
        format!("row counts changed: before {before:?}, after {after:?}")
    });
    let n = f.counts("name = 'clobbered'");
    bad.check(n == [0, 0], || format!("UPDATE ran: clobbered rows {n:?}"));
    bad.finish("reject_fails_closed_for_statements_disguised_as_tenant_free");
}

/// Genuinely tenant-free statements still work without any tenant, and take
/// effect for this client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_free_statements_run_without_a_tenant() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    let default_work_mem = f.direct(0, "SHOW work_mem");
    let default_timeout = f.direct(0, "SHOW statement_timeout");
    let r = sq(&c, "SET statement_timeout = '5s'; SHOW statement_timeout").await;
    bad.returned("SET statement_timeout; SHOW statement_timeout", &r, &["5s"]);
    let r = sq(&c, "SHOW work_mem").await;
    bad.returned("SHOW work_mem", &r, &[default_work_mem.as_str()]);
    let r = sq(&c, "RESET ALL").await;
    bad.check(r.is_ok(), || format!("RESET ALL: {}", outcome(&r)));
    let r = sq(&c, "SHOW statement_timeout").await;
    bad.returned(
        "SHOW statement_timeout after RESET ALL",
        &r,
        &[default_timeout.as_str()],
    );
    let r = sq(&c, "DISCARD ALL").await;
    bad.check(r.is_ok(), || format!("DISCARD ALL: {}", outcome(&r)));
    let r = sq(&c, "LISTEN foo; UNLISTEN foo").await;
    bad.check(r.is_ok(), || {
        format!("LISTEN foo; UNLISTEN foo: {}", outcome(&r))
    });
    // The empty query: EmptyQueryResponse then ReadyForQuery, as from Postgres.
    let mut raw = f.raw("app", &[]);
    let m = raw.query("").run(1);
    bad.check(tags(&m) == "IZ", || {
        format!("empty query: messages {} {:?}", tags(&m), error_codes(&m))
    });
    let m = raw.query(" ; ").run(1);
    bad.check(error_codes(&m).is_empty(), || {
        format!("' ; ': errors {:?}", error_codes(&m))
    });
    bad.finish("tenant_free_statements_run_without_a_tenant");
}

// ------------------------------ 4. shardbouncer's server statements are private

/// SQL-level PREPARE / EXECUTE / DEALLOCATE of a name in shardbouncer's reserved
/// `sb_` namespace is refused with 42939 (reserved_name), also inside a
/// multi-statement query and with a folded upper-case name; no such statement
/// appears on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_statements_cannot_use_reserved_sb_names() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    for (db, settings) in [("app1", vec![("tenant_id", A)]), ("plain1", vec![])] {
        let c = f.client(db, &settings).await;
        for sql in [
            "PREPARE sb_abc AS SELECT 1",
            "PREPARE SB_Abc AS SELECT 1",
            "PREPARE sb_0123456789abcdef (text) AS SELECT $1",
            "EXECUTE sb_abc",
            "DEALLOCATE sb_abc",
            "DEALLOCATE PREPARE \"sb_abc\"",
            "SELECT 1; DEALLOCATE sb_abc",
            "SELECT 1; PREPARE sb_abc AS SELECT 2",
            "SELECT 1; EXECUTE sb_abc",
        ] {
            let r = sq(&c, sql).await;
            bad.refused(&format!("[{db}] {sql}"), &r, "42939");
            // The pool has one server: this runs where the statement would be.
            let n = one(
                &c,
                "SELECT count(*) FROM pg_prepared_statements \
                 WHERE name IN ('s' || 'b_abc', 's' || 'b_0123456789abcdef')",
            )
            .await;
            bad.check(n == "0", || format!("[{db}] {sql}: the server now has {n} sb_ statement(s) of the client's own making"));
        }
        // The client's own (non-reserved) names still work.
        let r = sq(&c, "PREPARE mine AS SELECT 41 + 1; EXECUTE mine").await;
        bad.check(
            r.as_ref().is_ok_and(|v| v.contains(&"42".to_string())),
            || format!("[{db}] PREPARE mine; EXECUTE mine: {}", outcome(&r)),
        );
        let _ = sq(&c, "DEALLOCATE ALL").await;
    }
    bad.finish("sql_level_statements_cannot_use_reserved_sb_names");
}

/// Two clients share one server connection (pool size 1). The attacker can see the
/// victim's server-side statement names in pg_prepared_statements; whatever it does
/// with them (DEALLOCATE ALL / DISCARD ALL hidden in multi-statement queries, or a
/// DO block that re-prepares every sb_ name to return 'pwned'), the victim's
/// prepared statement keeps returning the victim's real row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_cannot_hijack_or_drop_server_statements() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let victim = f.client("app1", &[]).await;
    let attacker = f.client("app1", &[("tenant_id", A2)]).await;
    let run = |s: &tokio_postgres::Statement| {
        let victim = &victim;
        let s = s.clone();
        async move {
            within("victim", victim.query(&s, &[&A]))
                .await
                .map(|rows| rows.iter().map(|r| cell(r, 0)).collect::<Vec<_>>())
        }
    };

    // Round 1: DEALLOCATE ALL hidden behind a SELECT.
    let s1 = within(
        "prepare",
        victim.prepare("SELECT name FROM accounts WHERE tenant_id = $1"),
    )
    .await
    .unwrap();
    assert_eq!(run(&s1).await.unwrap(), ["owner of alpha"]);
    let names = ok(&attacker, "SELECT name FROM pg_prepared_statements").await;
    // Precondition: the attacker shares the victim's server and sees its statements
    // (shardbouncer names them sb_<16 hex>).
    assert!(
        !names.is_empty(),
        "precondition: the attacker shares the victim's server and sees its statements: {names:?}"
    );
    eprintln!("attacker sees prepared statements {names:?}");
    let r = sq(&attacker, "SELECT 1; DEALLOCATE ALL").await;
    eprintln!("attacker SELECT 1; DEALLOCATE ALL: {}", outcome(&r));
    let r = run(&s1).await;
    bad.returned(
        "victim after attacker's SELECT 1; DEALLOCATE ALL",
        &r,
        &["owner of alpha"],
    );

    // Round 2: DISCARD ALL hidden behind a SELECT. Postgres itself refuses DISCARD ALL
    // in a multi-statement query (implicit transaction block): 25001.
    let s2 = within(
        "prepare",
        victim.prepare("SELECT name AS n2 FROM accounts WHERE tenant_id = $1"),
    )
    .await
    .unwrap();
    assert_eq!(run(&s2).await.unwrap(), ["owner of alpha"]);
    let r = sq(&attacker, "SELECT 1; DISCARD ALL").await;
    bad.refused_any("attacker SELECT 1; DISCARD ALL", &r, &["25001", "42939"]);
    let r = run(&s2).await;
    bad.returned(
        "victim after attacker's SELECT 1; DISCARD ALL",
        &r,
        &["owner of alpha"],
    );

    // Round 3: plain DISCARD ALL / DEALLOCATE ALL clear the attacker's names only.
    let r = sq(&attacker, "DISCARD ALL").await;
    bad.check(r.is_ok(), || {
        format!("attacker DISCARD ALL: {}", outcome(&r))
    });
    let r = sq(&attacker, "DEALLOCATE ALL").await;
    bad.check(r.is_ok(), || {
        format!("attacker DEALLOCATE ALL: {}", outcome(&r))
    });
    for (what, s) in [("s1", &s1), ("s2", &s2)] {
        let r = run(s).await;
        bad.returned(
            &format!("victim {what} after attacker's DISCARD ALL + DEALLOCATE ALL"),
            &r,
            &["owner of alpha"],
        );
    }

    // Round 4: re-prepare every statement on the server from a DO block (so the
    // text holds no literal "sb_" and does not depend on the naming scheme).
    let s3 = within(
        "prepare",
        victim.prepare("SELECT name AS n3 FROM accounts WHERE tenant_id = $1"),
    )
    .await
    .unwrap();
    assert_eq!(run(&s3).await.unwrap(), ["owner of alpha"]);
    let names = ok(&attacker, "SELECT name FROM pg_prepared_statements").await;
    eprintln!("attacker sees prepared statements {names:?}");
    let r = sq(
        &attacker,
        "DO $$
         DECLARE r record;
         BEGIN
           FOR r IN SELECT name FROM pg_prepared_statements LOOP
             EXECUTE 'DEALLOCATE ' || quote_ident(r.name);
             EXECUTE 'PREPARE ' || quote_ident(r.name) || '(text) AS SELECT ''pwned''::text';
           END LOOP;
         END $$",
    )
    .await;
    eprintln!("attacker DO block: {}", outcome(&r));
    for (what, s) in [("s1", &s1), ("s2", &s2), ("s3", &s3)] {
        let r = run(s).await;
        bad.returned(
            &format!("victim {what} after the DO-block hijack"),
            &r,
            &["owner of alpha"],
        );
    }
    let r = within("victim B", victim.query(&s3, &[&B]))
        .await
        .map(|rows| rows.iter().map(|r| cell(r, 0)).collect::<Vec<_>>());
    bad.returned("victim s3 with B after the hijack", &r, &["owner of bravo"]);
    bad.finish("another_client_cannot_hijack_or_drop_server_statements");
}

// ------------------------------------------ 5. a failed transaction stays failed

/// Runs `sql` as one simple Query on a raw client; returns (errors, tags, status).
fn raw_step(c: &mut Raw, sql: &str) -> (Vec<String>, Vec<String>, Option<char>, Vec<String>) {
    let m = c.query(sql).run(1);
    (
        error_codes(&m),
        command_tags(&m),
        last_status(&m),
        first_column(&m),
    )
}

/// After shardbouncer itself refuses a statement inside BEGIN (42P17 before any
/// server is attached, or 0A000 before or after the transaction was pinned), the
/// transaction is failed exactly as in Postgres: further statements get 25P02
/// and COMMIT answers ROLLBACK. Nothing the client sent in it is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_failed_by_a_routing_error_stays_failed() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let mut c = f.raw("app", &[]);
    let cases: [(&str, &[&str], &str); 3] = [
        // (label, statements up to and including the refused one, its SQLSTATE)
        ("no tenant (42P17)", &["SELECT * FROM accounts"], "42P17"),
        (
            "cross-shard after pinning (0A000)",
            &[
                "SELECT name FROM accounts WHERE tenant_id = 'alpha'",
                "INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'revived-before')",
                "SELECT name FROM accounts WHERE tenant_id = 'bravo'",
            ],
            "0A000",
        ),
        (
            "cross-shard before pinning (0A000)",
            &["SELECT name FROM accounts WHERE tenant_id = 'alpha' OR tenant_id = 'bravo'"],
            "0A000",
        ),
    ];
    for (label, stmts, want) in cases {
        let (e, t, s, _) = raw_step(&mut c, "BEGIN");
        assert!(
            e.is_empty() && t == ["BEGIN"] && s == Some('T'),
            "{label}: BEGIN: {e:?} {t:?} {s:?}"
        );
        let (last, first) = stmts.split_last().unwrap();
        for sql in first {
            let (e, _, s, _) = raw_step(&mut c, sql);
            assert!(
                e.is_empty() && s == Some('T'),
                "{label}: {sql}: {e:?} {s:?}"
            );
        }
        let (e, _, s, rows) = raw_step(&mut c, last);
        bad.check(e == [want] && s == Some('E'), || {
            format!("{label}: {last}: errors {e:?} status {s:?} (want [{want}] and 'E')")
        });
        bad.check(!rows.iter().any(|v| S1_DATA.contains(&v.as_str())), || {
            format!("{label}: {last}: LEAK {rows:?}")
        });
        let (e, t, s, _) = raw_step(
            &mut c,
            "INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'revived')",
        );
        bad.check(e == ["25P02"] && s == Some('E'), || {
            format!("{label}: INSERT after the refusal: errors {e:?} tags {t:?} status {s:?} (want [25P02], 'E')")
        });
        let (e, _, s, _) = raw_step(
            &mut c,
            "SELECT name FROM shard_marker /* tenant_id=bravo */",
        );
        bad.check(e == ["25P02"], || {
            format!("{label}: SELECT after the refusal: errors {e:?} status {s:?} (want [25P02])")
        });
        let (e, t, s, _) = raw_step(&mut c, "COMMIT");
        bad.check(e.is_empty() && t == ["ROLLBACK"] && s == Some('I'), || {
            format!(
                "{label}: COMMIT: errors {e:?} tags {t:?} status {s:?} (want tag ROLLBACK, 'I')"
            )
        });
        let n = f.counts("name LIKE 'revived%'");
        bad.check(n == [0, 0], || {
            format!("{label}: rows committed: s0 = {}, s1 = {}", n[0], n[1])
        });
        if s != Some('I') {
            let _ = raw_step(&mut c, "ROLLBACK");
        }
    }
    // The session is healthy afterwards.
    let (e, _, s, rows) = raw_step(
        &mut c,
        "SELECT name FROM shard_marker /* tenant_id=bravo */",
    );
    bad.check(e.is_empty() && s == Some('I') && rows == ["s1"], || {
        format!("afterwards: errors {e:?} status {s:?} rows {rows:?}")
    });
    bad.finish("a_transaction_failed_by_a_routing_error_stays_failed");
}

// --------------------------------------------------- 6. Python drivers route

/// Run tests/drivers/py_routing.py with `driver` against the routed database `app`.
async fn run_python_routing(f: &Fixture, driver: &str, module: &str, pip: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python module {module} is not available; install it: python3 -m pip install '{pip}'"
    );
    let tenants = [(B, 1), (A, 0), (B2, 1), (A2, 0)]
        .iter()
        .map(|(t, s)| format!("{t}=s{s}={}", f.port(*s)))
        .collect::<Vec<_>>()
        .join(",");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new("python3")
        .arg("tests/drivers/py_routing.py")
        .arg(driver)
        .current_dir(root)
        .env("SB_HOST", "127.0.0.1")
        .env("SB_PORT", f.bouncer.port.to_string())
        .env("SB_USER", "app")
        .env("SB_PASSWORD", "secret")
        .env("SB_DB", "app")
        .env("SB_TENANTS", tenants)
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = format!("{}{}", t1.join().unwrap(), t2.join().unwrap());
    assert!(
        status.is_some_and(|s| s.success()) && out.lines().any(|l| l.starts_with("OK ")),
        "{driver} routing failed ({status:?}):\n{out}"
    );
}

/// asyncpg at its defaults (named statements, statement cache): the tenant only as
/// a Bind parameter, alternating B (s1) and A (s0) on one connection, 5 rounds:
/// every fetch returns that tenant's row from its shard, never 0A000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_routes_parameter_tenants_to_their_shards_on_one_connection() {
    let f = Fixture::start();
    run_python_routing(&f, "asyncpg", "asyncpg", "asyncpg").await;
}

/// psycopg 3 at its defaults (server-side prepare after 5 executions; BEGIN before
/// the first statement when not in autocommit), the same alternation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_routes_parameter_tenants_to_their_shards_on_one_connection() {
    let f = Fixture::start();
    run_python_routing(&f, "psycopg", "psycopg", "psycopg[binary]").await;
}

// ----------------------------------------- 7. FunctionCall follows the tenant

/// A FunctionCall ('F') message runs on the session tenant's shard: with the
/// tenant locked to B and `no_tenant = "default"` (default shard s0) it still goes
/// to B's shard; with `reject` and a session tenant it goes to that tenant's
/// shard; with `reject` and no tenant at all it is refused with 42P17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_follows_the_session_tenant() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let oid: u32 = f
        .direct(
            0,
            "SELECT 'pg_catalog.current_setting(text)'::regprocedure::oid",
        )
        .parse()
        .unwrap();
    assert_eq!(
        f.direct(
            1,
            "SELECT 'pg_catalog.current_setting(text)'::regprocedure::oid"
        ),
        oid.to_string()
    );
    let call = |c: &mut Raw| {
        let m = c.function_call(oid, &[Some(b"port")], 0, 0).run(1);
        let v = function_result(&m)
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        (error_codes(&m), v, last_status(&m))
    };
    let s1 = f.port(1);
    for (db, params) in [
        ("fn_default", vec![("tenant_id", B)]),
        ("fn_default", vec![("options", "-c tenant_id=bravo")]),
        ("app", vec![("tenant_id", B)]),
    ] {
        let mut c = f.raw(db, &params);
        for i in 0..2 {
            let (e, v, s) = call(&mut c);
            bad.check(e.is_empty() && v.as_deref() == Some(s1.as_str()), || {
                format!("[{db} {params:?}] call {i}: current_setting('port') = {v:?}, errors {e:?}, status {s:?} (want B's shard port {s1})")
            });
        }
        // Inside a transaction pinned to B's shard too.
        let (e, _, _, rows) = raw_step(&mut c, "BEGIN");
        assert!(e.is_empty(), "{e:?} {rows:?}");
        let (e, _, _, rows) = raw_step(&mut c, "SELECT name FROM shard_marker");
        bad.check(e.is_empty() && rows == ["s1"], || {
            format!("[{db}] pinned select: {e:?} {rows:?}")
        });
        let (e, v, s) = call(&mut c);
        bad.check(
            e.is_empty() && v.as_deref() == Some(s1.as_str()) && s == Some('T'),
            || format!("[{db}] in a transaction: {v:?} {e:?} {s:?}"),
        );
        let _ = raw_step(&mut c, "COMMIT");
    }
    // reject, no tenant anywhere.
    let mut c = f.raw("app", &[]);
    let m = c.function_call(oid, &[Some(b"port")], 0, 0).run(1);
    bad.check(
        error_codes(&m) == ["42P17"] && function_result(&m).is_none(),
        || {
            format!(
                "[app, no tenant] FunctionCall: errors {:?}, result {:?}",
                error_codes(&m),
                function_result(&m)
            )
        },
    );
    let (e, _, s, rows) = raw_step(
        &mut c,
        "SELECT name FROM shard_marker /* tenant_id=alpha */",
    );
    bad.check(e.is_empty() && s == Some('I') && rows == ["s0"], || {
        format!("after the refused FunctionCall: {e:?} {s:?} {rows:?}")
    });
    bad.finish("function_call_follows_the_session_tenant");
}

// ---------------------------------- 8. SET LOCAL inside a held BEGIN applies

/// `BEGIN` is held until a tenant is known; a `SET LOCAL` sent meanwhile must apply
/// inside the transaction (so a 100ms statement_timeout cancels a 1s sleep), and
/// must not outlive it. A `SET` rolled back with its transaction does not persist,
/// neither for this client nor for the next client of the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_in_a_held_begin_applies_and_rolled_back_sets_do_not_persist() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let default_timeout = f.direct(0, "SHOW statement_timeout");
    let default_work_mem = f.direct(0, "SHOW work_mem");
    let c = f.client("app1", &[]).await;

    ok(&c, "BEGIN").await;
    let r = sq(&c, "SET LOCAL statement_timeout = '100ms'").await;
    bad.check(r.is_ok(), || {
        format!("SET LOCAL in a held BEGIN: {}", outcome(&r))
    });
    let t = Instant::now();
    let r = sq(
        &c,
        "SELECT pg_sleep(1) FROM accounts WHERE tenant_id = 'alpha'",
    )
    .await;
    let took = t.elapsed();
    bad.refused(
        &format!("pg_sleep(1) after SET LOCAL statement_timeout = 100ms (took {took:?})"),
        &r,
        "57014",
    );
    let _ = sq(&c, "ROLLBACK").await;
    let r = sq(&c, "SHOW statement_timeout").await;
    bad.returned(
        "statement_timeout after ROLLBACK",
        &r,
        &[default_timeout.as_str()],
    );
    let r = sq(
        &c,
        "SELECT current_setting('statement_timeout') FROM shard_marker /* tenant_id=alpha */",
    )
    .await;
    bad.returned(
        "statement_timeout on the tenant's shard after ROLLBACK",
        &r,
        &[default_timeout.as_str()],
    );

    // The same once the transaction is pinned (server attached): the reference.
    ok(&c, "BEGIN").await;
    ok(&c, "SELECT name FROM accounts WHERE tenant_id = 'alpha'").await;
    ok(&c, "SET LOCAL statement_timeout = '100ms'").await;
    let r = sq(
        &c,
        "SELECT pg_sleep(1) FROM accounts WHERE tenant_id = 'alpha'",
    )
    .await;
    bad.refused(
        "pinned: pg_sleep(1) after SET LOCAL statement_timeout = 100ms",
        &r,
        "57014",
    );
    let _ = sq(&c, "ROLLBACK").await;

    // A rolled-back SET.
    ok(&c, "BEGIN").await;
    let r = sq(&c, "SET work_mem = '7MB'").await;
    bad.check(r.is_ok(), || {
        format!("SET work_mem in a held BEGIN: {}", outcome(&r))
    });
    ok(&c, "ROLLBACK").await;
    let r = sq(&c, "SHOW work_mem").await;
    bad.returned(
        "work_mem after BEGIN; SET work_mem; ROLLBACK",
        &r,
        &[default_work_mem.as_str()],
    );
    let r = sq(
        &c,
        "SELECT current_setting('work_mem') FROM shard_marker /* tenant_id=alpha */",
    )
    .await;
    bad.returned(
        "work_mem on the tenant's shard after the rollback",
        &r,
        &[default_work_mem.as_str()],
    );
    let c2 = f.client("app1", &[]).await;
    let r = sq(&c2, "SHOW work_mem").await;
    bad.returned("second client's work_mem", &r, &[default_work_mem.as_str()]);
    let r = sq(
        &c2,
        "SELECT current_setting('work_mem') FROM shard_marker /* tenant_id=alpha2 */",
    )
    .await;
    bad.returned(
        "second client's work_mem on the shard",
        &r,
        &[default_work_mem.as_str()],
    );
    bad.finish("set_local_in_a_held_begin_applies_and_rolled_back_sets_do_not_persist");
}

// ------------------ 9. the scanner lexes like Postgres (standard_conforming_strings)

/// With `standard_conforming_strings = off`, `'\''` is one string holding a quote.
/// Each statement below writes a row for B as Postgres parses it, while a lexer
/// that assumes standard strings sees a phantom tenant of s0 outside any string.
/// The row must never land on A's shard: the statement is routed to B's shard or
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_honours_standard_conforming_strings_off() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let crafted: [(&str, &str); 3] = [
        // phantom routing comment /* tenant_id=alpha */
        (
            "scs9a",
            r"INSERT INTO accounts (tenant_id, name) SELECT 'bravo', 'scs9a \' /* tenant_id=alpha */ -- '",
        ),
        // phantom predicate tenant_id = 1001 (s0)
        (
            "scs9b",
            r"INSERT INTO accounts (tenant_id, name) SELECT 'bravo', 'scs9b \' WHERE tenant_id = 1001 -- '",
        ),
        // phantom quoted predicate tenant_id = 'like' (s0): Postgres reads `'...' LIKE ' --'`
        (
            "scs9c",
            r"INSERT INTO accounts (tenant_id, name) SELECT 'bravo', 'scs9c:' || ('\' AND tenant_id = 'like' --')::text",
        ),
    ];
    // What Postgres really parses: on B's shard directly, rolled back.
    let d = f.shards[1].connect("app", "secret", "app").await;
    within(
        "direct",
        d.simple_query("BEGIN; SET LOCAL standard_conforming_strings = off"),
    )
    .await
    .unwrap();
    for (marker, sql) in crafted {
        within(sql, d.simple_query(sql))
            .await
            .unwrap_or_else(|e| panic!("direct {sql}: {}", describe(&e)));
        let got = ok(
            &d,
            &format!("SELECT tenant_id FROM accounts WHERE name LIKE '{marker}%'"),
        )
        .await;
        assert_eq!(got, [B], "{marker}: Postgres must read this as a row for B");
    }
    within("direct", d.simple_query("ROLLBACK")).await.unwrap();

    let c = f.client("app", &[]).await;
    ok(&c, "SET standard_conforming_strings = off").await;
    assert_eq!(one(&c, "SHOW standard_conforming_strings").await, "off");
    for (marker, sql) in crafted {
        let r = sq(&c, sql).await;
        let n = f.counts(&format!("name LIKE '{marker}%'"));
        bad.check(n[0] == 0, || {
            format!(
                "{marker}: B's row landed on A's shard s0 ({}); statement: {sql}",
                outcome(&r)
            )
        });
        if r.is_ok() {
            bad.check(n[1] == 1, || {
                format!("{marker}: accepted but s1 holds {} rows", n[1])
            });
        }
    }
    // With standard strings back on, the same text is a different statement to
    // Postgres too; the scanner must follow the change.
    ok(&c, "SET standard_conforming_strings = on").await;
    assert_eq!(one(&c, "SHOW standard_conforming_strings").await, "on");
    let r = sq(
        &c,
        r"SELECT name FROM shard_marker WHERE 'x\' /* tenant_id=bravo */ <> ''",
    )
    .await;
    bad.returned(
        "scs on: comment outside the literal routes to B",
        &r,
        &["s1"],
    );
    bad.finish("scanner_honours_standard_conforming_strings_off");
}

// ------------------------------- 10. statement identity includes search_path

/// Schema per tenant: the same statement text means different tables (with
/// different column types) under different search_paths. Two clients sharing one
/// server each get their own table's rows, never "cached plan must not change
/// result type".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_identity_includes_search_path() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f
        .client("app1", &[("tenant_id", A), ("search_path", "ta")])
        .await;
    let c2 = f
        .client("app1", &[("tenant_id", A2), ("search_path", "tb")])
        .await;
    let s1 = within("prepare 1", c1.prepare("SELECT * FROM t"))
        .await
        .unwrap();
    let r = within("query 1", c1.query(&s1, &[])).await.unwrap();
    assert_eq!(cell(&r[0], 0), "1");
    let r = async {
        let s2 = within("prepare 2", c2.prepare("SELECT * FROM t")).await?;
        let rows = within("query 2", c2.query(&s2, &[])).await?;
        Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| cell(r, 0)).collect::<Vec<_>>())
    }
    .await;
    bad.returned(
        "client 2 (search_path tb) prepared SELECT * FROM t",
        &r,
        &["b"],
    );
    let r = sq(&c2, "SELECT v FROM t").await;
    bad.returned("client 2 simple SELECT v FROM t", &r, &["b"]);
    let r = within("query 1 again", c1.query(&s1, &[]))
        .await
        .map(|rows| rows.iter().map(|r| cell(r, 0)).collect::<Vec<_>>());
    bad.returned("client 1 (search_path ta) again", &r, &["1"]);
    bad.finish("prepared_statement_identity_includes_search_path");
}

// ---------------------- 11. session state never leaks to the next client

/// Settings a client changes (plainly, custom, or with set_config and an escaped
/// name) are never seen by the next client of the same server, and still hold for
/// the client that set them in its later transactions.
async fn settings_do_not_leak(
    f: &Fixture,
    db: &str,
    t1: &[(&str, &str)],
    t2: &[(&str, &str)],
    bad: &mut Findings,
) {
    let default_timeout = f.direct(0, "SHOW statement_timeout");
    let default_work_mem = f.direct(0, "SHOW work_mem");
    let default_path = f.direct(0, "SHOW search_path");
    let c1 = f.client(db, t1).await;
    let c2 = f.client(db, t2).await;
    let cases = [
        (
            "SET statement_timeout = '4321ms'",
            "SELECT current_setting('statement_timeout')",
            "4321ms",
            default_timeout.as_str(),
        ),
        (
            "SET work_mem = '7777kB'",
            "SELECT current_setting('work_mem')",
            "7777kB",
            default_work_mem.as_str(),
        ),
        (
            "SET app.color = 'red'",
            "SELECT coalesce(current_setting('app.color', true), '')",
            "red",
            "",
        ),
        (
            r"SELECT set_config(E'search\x5fpath', 'x_schema', false)",
            "SELECT current_setting('search_path')",
            "x_schema",
            default_path.as_str(),
        ),
    ];
    for (set, probe, mine, default) in cases {
        ok(&c1, set).await;
        let r = sq(&c2, probe).await;
        bad.returned(&format!("[{db}] next client after `{set}`"), &r, &[default]);
        ok(&c1, "BEGIN").await;
        let r = sq(&c1, probe).await;
        let _ = sq(&c1, "COMMIT").await;
        bad.returned(
            &format!("[{db}] the setting client's later transaction after `{set}`"),
            &r,
            &[mine],
        );
        let r = sq(&c2, probe).await;
        bad.returned(
            &format!("[{db}] next client again after `{set}`"),
            &r,
            &[default],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_do_not_leak_to_the_next_client_on_a_routed_database() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    settings_do_not_leak(
        &f,
        "app1",
        &[("tenant_id", A)],
        &[("tenant_id", A2)],
        &mut bad,
    )
    .await;
    bad.finish("settings_do_not_leak_to_the_next_client_on_a_routed_database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_do_not_leak_to_the_next_client_on_a_plain_database() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    settings_do_not_leak(&f, "plain1", &[], &[], &mut bad).await;
    bad.finish("settings_do_not_leak_to_the_next_client_on_a_plain_database");
}

/// `SET ROLE` is session state: the next client of the server runs as the app
/// user, and the client that set it keeps its role in later transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_does_not_leak_and_follows_its_client() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f.client("app1", &[("tenant_id", A)]).await;
    let c2 = f.client("app1", &[("tenant_id", A2)]).await;
    ok(&c1, "SET ROLE r_other").await;
    let r = sq(&c2, "SELECT current_user").await;
    bad.returned("next client's current_user", &r, &["app"]);
    let r = sq(&c2, "SELECT current_user FROM shard_marker").await;
    bad.returned("next client's current_user (reading a table)", &r, &["app"]);
    ok(&c1, "BEGIN").await;
    let r = sq(&c1, "SELECT current_user FROM shard_marker").await;
    let _ = sq(&c1, "COMMIT").await;
    bad.returned("the client's own later transaction", &r, &["r_other"]);
    let r = sq(&c2, "SELECT current_user").await;
    bad.returned("next client's current_user again", &r, &["app"]);
    bad.finish("set_role_does_not_leak_and_follows_its_client");
}

/// A temp table created by one client is not visible to the next client of the
/// same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_do_not_leak_to_the_next_client() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f.client("app1", &[("tenant_id", A)]).await;
    let c2 = f.client("app1", &[("tenant_id", A2)]).await;
    let r = sq(
        &c1,
        "CREATE TEMP TABLE tt(x int); INSERT INTO tt VALUES (7)",
    )
    .await;
    eprintln!("client 1 CREATE TEMP TABLE: {}", outcome(&r));
    let r = sq(
        &c2,
        "SELECT coalesce(to_regclass('pg_temp.tt')::text, 'NULL')",
    )
    .await;
    bad.returned("next client's to_regclass('pg_temp.tt')", &r, &["NULL"]);
    bad.finish("temp_tables_do_not_leak_to_the_next_client");
}

/// A session-level advisory lock does not stay held on the pooled server after the
/// client's transaction ended (checked on the shard directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_do_not_outlive_the_transaction() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f.client("app1", &[("tenant_id", A)]).await;
    let c2 = f.client("app1", &[("tenant_id", A2)]).await;
    let r = sq(&c1, "SELECT pg_advisory_lock(4242)").await;
    eprintln!("client 1 pg_advisory_lock: {}", outcome(&r));
    // The pool has one server: the next client's statement runs only once client 1's
    // transaction has ended and the server was released.
    let r = sq(
        &c2,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .await;
    bad.returned(
        "advisory locks held by the next client's session",
        &r,
        &["0"],
    );
    // Directly on the shard (the server may also have been closed instead: wait
    // for its backend to exit, bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        let n = f.direct(
            0,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        );
        if n == "0" || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    bad.check(n == "0", || {
        format!("shard s0 still has {n} advisory lock(s) after client 1's transaction")
    });
    bad.finish("advisory_locks_do_not_outlive_the_transaction");
}

/// LISTEN registrations do not leak to the next client of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_does_not_leak_to_the_next_client() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f.client("app1", &[("tenant_id", A)]).await;
    let c2 = f.client("app1", &[("tenant_id", A2)]).await;
    let r = sq(&c1, "LISTEN chan1").await;
    eprintln!("client 1 LISTEN: {}", outcome(&r));
    let r = sq(&c2, "SELECT count(*) FROM pg_listening_channels()").await;
    bad.returned("next client's pg_listening_channels()", &r, &["0"]);
    bad.finish("listen_does_not_leak_to_the_next_client");
}

/// A WITH HOLD cursor does not leak to the next client of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cursors_do_not_leak_to_the_next_client() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c1 = f.client("app1", &[("tenant_id", A)]).await;
    let c2 = f.client("app1", &[("tenant_id", A2)]).await;
    let r = sq(
        &c1,
        "DECLARE c CURSOR WITH HOLD FOR SELECT name FROM accounts WHERE tenant_id = 'alpha'",
    )
    .await;
    eprintln!("client 1 DECLARE WITH HOLD: {}", outcome(&r));
    let r = sq(&c2, "SELECT count(*) FROM pg_cursors").await;
    bad.returned("next client's pg_cursors", &r, &["0"]);
    let r = sq(&c2, "FETCH ALL FROM c").await;
    bad.check(r.is_err(), || {
        format!("next client FETCH ALL FROM c: LEAK {}", outcome(&r))
    });
    bad.finish("held_cursors_do_not_leak_to_the_next_client");
}

// ------------------------------------------------ 12. further attack probes

/// Tenant mentions inside string literals, E'' strings with `\'`, dollar quotes,
/// quoted identifiers and nested comments are not mentions: with session tenant A
/// these run on A's shard (not refused as cross-shard, not sent to B's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_mentions_hidden_in_literals_and_comments_are_ignored() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[("tenant_id", A)]).await;
    for sql in [
        "SELECT name FROM shard_marker WHERE $q$ tenant_id = 'bravo' $q$ <> ''",
        "SELECT name FROM shard_marker WHERE $$ /* tenant_id=bravo */ $$ <> ''",
        r"SELECT name FROM shard_marker WHERE E'x\' /* tenant_id=bravo */ ' <> ''",
        r"SELECT name FROM shard_marker WHERE E'x\' AND tenant_id = 2002 --' <> ''",
        "SELECT name FROM shard_marker /* x /* y */ AND tenant_id IN ('bravo') */",
        "SELECT name AS \"tenant_id = 'bravo'\" FROM shard_marker",
        "SELECT name FROM shard_marker WHERE 'tenant_id = ''bravo''' <> ''",
        "SELECT name FROM shard_marker WHERE U&'tenant_id = ''bravo''' <> ''",
    ] {
        let r = sq(&c, sql).await;
        bad.returned(sql, &r, &["s0"]);
    }
    bad.finish("tenant_mentions_hidden_in_literals_and_comments_are_ignored");
}

/// OR-ed predicates, quoted and mixed-case key identifiers naming tenants on two
/// shards are refused (0A000) and change nothing; one mixed-case mention routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn or_predicates_and_quoted_or_mixed_case_keys_across_shards_are_refused() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    for sql in [
        "SELECT name FROM accounts WHERE tenant_id = 'alpha' OR tenant_id = 'bravo'",
        "SELECT name FROM accounts WHERE \"tenant_id\" = 'alpha' OR TENANT_ID = 'bravo'",
        "SELECT name FROM accounts a WHERE a.\"tenant_id\" = 'bravo' OR a.Tenant_Id = 'alpha'",
        "SELECT name FROM accounts WHERE 'bravo' = tenant_id OR tenant_id = 'alpha'",
        "UPDATE accounts SET name = name || '!' WHERE tenant_id = 'alpha' OR tenant_id = 'bravo'",
    ] {
        let r = sq(&c, sql).await;
        bad.refused(sql, &r, "0A000");
        bad.no_leak(sql, &r, S1_DATA);
    }
    let n = f.counts("name LIKE '%!'");
    bad.check(n == [0, 0], || {
        format!("refused UPDATE changed rows: {n:?}")
    });
    let r = sq(&c, "SELECT name FROM accounts WHERE Tenant_ID = 'bravo'").await;
    bad.returned("mixed-case key routes", &r, &["owner of bravo"]);
    bad.finish("or_predicates_and_quoted_or_mixed_case_keys_across_shards_are_refused");
}

/// A routing comment (plain or sqlcommenter, URL-encoded) naming one shard's tenant
/// and a scanned literal naming another's: refused, nothing written or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_and_a_literal_naming_different_shards_are_refused() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    for sql in [
        "SELECT name FROM accounts WHERE tenant_id = 'alpha' /*controller='x',tenant_id='bravo'*/",
        "SELECT name FROM accounts WHERE tenant_id = 'alpha' /*tenant_id='br%61vo'*/",
        "SELECT name FROM accounts WHERE tenant_id = 'alpha'\n-- tenant_id=bravo\n",
        "INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'p12c') /*tenant_id='bravo'*/",
        "/* tenant_id=bravo */ INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'p12c')",
        "/* tenant_id=bravo */ DELETE FROM accounts WHERE tenant_id = 'alpha'",
        "/* tenant_id=alpha */ DELETE FROM accounts WHERE tenant_id = 'bravo'",
    ] {
        let r = sq(&c, sql).await;
        bad.refused(sql, &r, "0A000");
        bad.no_leak(sql, &r, S1_DATA);
    }
    let n = f.counts("name = 'p12c'");
    bad.check(n == [0, 0], || format!("refused INSERTs wrote rows: {n:?}"));
    let n = f.counts("tenant_id IN ('alpha', 'bravo')");
    bad.check(n == [1, 1], || {
        format!("refused DELETEs deleted rows: {n:?}")
    });
    bad.finish("a_comment_and_a_literal_naming_different_shards_are_refused");
}

/// A transaction that wrote for A (s0) and then names B (s1): 0A000, the
/// transaction is failed, COMMIT rolls back, and A's write is gone. The same
/// statements in one simple Query, and with tokio-postgres's transaction API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_pinned_to_one_shard_refuses_another_and_rolls_back() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let mut c = f.raw("app", &[]);
    let (e, ..) = raw_step(&mut c, "BEGIN");
    assert!(e.is_empty());
    let (e, ..) = raw_step(
        &mut c,
        "INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'p12d')",
    );
    assert!(e.is_empty(), "{e:?}");
    let (e, _, s, _) = raw_step(
        &mut c,
        "INSERT INTO accounts (tenant_id, name) VALUES ('bravo', 'p12d')",
    );
    bad.check(e == ["0A000"] && s == Some('E'), || {
        format!("second shard's INSERT: {e:?} {s:?}")
    });
    let (e, ..) = raw_step(&mut c, "SELECT 1");
    bad.check(e == ["25P02"], || format!("SELECT 1 afterwards: {e:?}"));
    let (e, t, s, _) = raw_step(&mut c, "COMMIT");
    bad.check(e.is_empty() && t == ["ROLLBACK"] && s == Some('I'), || {
        format!("COMMIT: {e:?} {t:?} {s:?}")
    });
    let n = f.counts("name = 'p12d'");
    bad.check(n == [0, 0], || {
        format!("rows after the refused transaction: {n:?}")
    });

    let (e, ..) = raw_step(
        &mut c,
        "BEGIN; INSERT INTO accounts (tenant_id, name) VALUES ('alpha', 'p12d-q'); \
         INSERT INTO accounts (tenant_id, name) VALUES ('bravo', 'p12d-q'); COMMIT",
    );
    bad.check(e == ["0A000"], || {
        format!("one-query transaction over two shards: {e:?}")
    });
    let n = f.counts("name = 'p12d-q'");
    bad.check(n == [0, 0], || {
        format!("one-query transaction wrote rows: {n:?}")
    });

    let mut tc = f.client("app", &[]).await;
    let tx = within("begin", tc.transaction()).await.unwrap();
    let r = within(
        "a",
        tx.execute(
            "INSERT INTO accounts (tenant_id, name) VALUES ($1, 'p12d-t')",
            &[&A],
        ),
    )
    .await;
    assert!(r.is_ok(), "{}", outcome(&r));
    let r = within(
        "b",
        tx.execute(
            "INSERT INTO accounts (tenant_id, name) VALUES ($1, 'p12d-t')",
            &[&B],
        ),
    )
    .await;
    bad.refused("tokio-postgres transaction: B after A", &r, "0A000");
    let r = within("commit", tx.commit()).await;
    eprintln!("tokio-postgres commit after the refusal: {}", outcome(&r));
    let n = f.counts("name = 'p12d-t'");
    bad.check(n == [0, 0], || {
        format!("tokio-postgres transaction wrote rows: {n:?}")
    });
    bad.finish("a_transaction_pinned_to_one_shard_refuses_another_and_rolls_back");
}

/// Pipelined extended protocol: Binds of one batch (up to Sync) naming two shards
/// are refused as a whole and write nothing; batches separated by Sync each go to
/// their own tenant's shard even when sent in one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_are_routed_per_sync_and_refused_across_shards() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let ins = "INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)";
    let mut c = f.raw("app", &[]);
    let m = c
        .parse("", ins)
        .bind("", &[A, "p12e-x"])
        .execute()
        .bind("", &[B, "p12e-x"])
        .execute()
        .sync()
        .run(1);
    bad.check(error_codes(&m) == ["0A000"], || {
        format!(
            "unnamed, two Binds A then B: {} {:?}",
            tags(&m),
            error_codes(&m)
        )
    });
    let n = f.counts("name = 'p12e-x'");
    bad.check(n == [0, 0], || {
        format!("unnamed A+B batch wrote rows: {n:?}")
    });

    let m = c.parse("ins", ins).sync().run(1);
    assert_eq!(error_codes(&m), Vec::<String>::new());
    let m = c
        .bind("ins", &[B, "p12e-n"])
        .execute()
        .bind("ins", &[A, "p12e-n"])
        .execute()
        .sync()
        .run(1);
    bad.check(error_codes(&m) == ["0A000"], || {
        format!(
            "named, two Binds B then A: {} {:?}",
            tags(&m),
            error_codes(&m)
        )
    });
    let n = f.counts("name = 'p12e-n'");
    bad.check(n == [0, 0], || format!("named B+A batch wrote rows: {n:?}"));

    // Separate units sent in one write: each to its own shard.
    let m = c
        .bind("ins", &[A, "p12e-a"])
        .execute()
        .sync()
        .bind("ins", &[B, "p12e-b"])
        .execute()
        .sync()
        .parse(
            "",
            "SELECT m.name FROM shard_marker m, accounts a WHERE a.tenant_id = $1",
        )
        .bind("", &[B2])
        .execute()
        .sync()
        .run(3);
    bad.check(error_codes(&m).is_empty(), || {
        format!("three pipelined units: {:?}", error_codes(&m))
    });
    bad.check(first_column(&m) == ["s1"], || {
        format!("third unit read {:?}", first_column(&m))
    });
    let a = f.counts("name = 'p12e-a'");
    let b = f.counts("name = 'p12e-b'");
    bad.check(a == [1, 0] && b == [0, 1], || {
        format!("pipelined units landed: A's row {a:?}, B's row {b:?}")
    });
    bad.finish("pipelined_batches_are_routed_per_sync_and_refused_across_shards");
}

/// Binary-format integer Bind values (int8, int4, undeclared) route by value; a
/// multi-row INSERT with binary int8 tenants on two shards is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_integer_bind_values_route_by_value() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    for (t, shard) in [(IA, "s0"), (IB, "s1")] {
        let r = xq(&c, "SELECT note FROM ledger WHERE tenant_id = $1", &[&t]).await;
        bad.returned(
            &format!("int8 {t}"),
            &r,
            &[format!("ledger of {t}").as_str()],
        );
        let r = xq(
            &c,
            "SELECT m.name FROM shard_marker m, ledger l WHERE l.tenant_id = $1",
            &[&t],
        )
        .await;
        bad.returned(&format!("int8 {t} marker"), &r, &[shard]);
    }
    let r = within(
        "insert",
        c.execute(
            "INSERT INTO ledger (tenant_id, note) VALUES ($1, $2), ($3, $4)",
            &[&IA, &"p12f", &IB, &"p12f"],
        ),
    )
    .await;
    bad.refused("binary int8 multi-row INSERT over two shards", &r, "0A000");
    let n: Vec<String> = (0..2)
        .map(|s| f.direct(s, "SELECT count(*) FROM ledger WHERE note = 'p12f'"))
        .collect();
    bad.check(n == ["0", "0"], || {
        format!("refused ledger INSERT wrote rows: {n:?}")
    });

    let mut raw = f.raw("app", &[]);
    let be8 = IB.to_be_bytes();
    let be4 = (IB as i32).to_be_bytes();
    for (label, types, val) in [
        ("declared int8", vec![20u32], &be8[..]),
        ("declared int4", vec![23u32], &be4[..]),
    ] {
        let m = raw
            .parse_typed("", "SELECT note FROM ledger WHERE tenant_id = $1", &types)
            .bind_raw("", &[Some(val)], &[1])
            .execute()
            .sync()
            .run(1);
        bad.check(
            error_codes(&m).is_empty() && first_column(&m) == ["ledger of 2002"],
            || {
                format!(
                    "raw binary {label}: errors {:?} rows {:?}",
                    error_codes(&m),
                    first_column(&m)
                )
            },
        );
    }
    // Undeclared and not described, a binary value's type is whatever
    // Postgres infers from the statement, not its width: refused (22023).
    let m = raw
        .parse_typed("", "SELECT note FROM ledger WHERE tenant_id = $1", &[])
        .bind_raw("", &[Some(&be8[..])], &[1])
        .execute()
        .sync()
        .run(1);
    bad.check(error_codes(&m) == ["22023"], || {
        format!(
            "raw binary undeclared: errors {:?} rows {:?}",
            error_codes(&m),
            first_column(&m)
        )
    });
    bad.finish("binary_integer_bind_values_route_by_value");
}

/// A data-modifying CTE for a tenant of another shard than the main query's:
/// refused, and neither shard changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_modifying_ctes_for_another_shards_tenant_are_refused() {
    let f = Fixture::start();
    let mut bad = Findings::default();
    let c = f.client("app", &[]).await;
    for sql in [
        "WITH x AS (INSERT INTO accounts (tenant_id, name) VALUES ('bravo', 'p12g') RETURNING 1) \
         SELECT name FROM accounts WHERE tenant_id = 'alpha'",
        "WITH x AS (DELETE FROM accounts WHERE tenant_id = 'bravo' RETURNING 1) \
         SELECT name FROM accounts WHERE tenant_id = 'alpha'",
        "WITH x AS (SELECT name FROM accounts WHERE tenant_id = 'alpha') \
         UPDATE accounts SET name = 'p12g' WHERE tenant_id = 'bravo'",
    ] {
        let r = sq(&c, sql).await;
        bad.refused(sql, &r, "0A000");
    }
    let n = f.counts("name = 'p12g'");
    bad.check(n == [0, 0], || format!("refused CTEs wrote rows: {n:?}"));
    let n = f.counts("tenant_id = 'bravo'");
    bad.check(n == [0, 1], || {
        format!("bravo's row after refused CTEs: {n:?}")
    });
    bad.finish("data_modifying_ctes_for_another_shards_tenant_are_refused");
}

/// Under the lock, a key parameter of no declared type compared with two key
/// columns is refused: a temporary table's `"char"` tenant_id, met first,
/// types it, and the value 'bravo' becomes tenant 'b' (probe Y: a session
/// locked to one tenant wrote another's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_lock_a_key_parameter_typed_by_another_key_column_is_refused() {
    let f = Fixture::start();
    let mut c = f.raw("locked", &[("tenant_id", B)]);
    let (errs, ..) = raw_step(&mut c, "BEGIN");
    assert!(errs.is_empty(), "{errs:?}");
    let (errs, ..) = raw_step(&mut c, "CREATE TEMP TABLE chk (tenant_id \"char\")");
    assert!(errs.is_empty(), "{errs:?}");
    c.parse_typed(
        "",
        "WITH c AS (SELECT 1 FROM chk WHERE tenant_id = $1) \
         INSERT INTO accounts (tenant_id, name) VALUES ($1, 'probe')",
        &[0],
    )
    .bind_raw("", &[Some(B.as_bytes())], &[0])
    .execute()
    .sync();
    assert_eq!(error_codes(&c.run(1)), ["22023"]);
    raw_step(&mut c, "ROLLBACK");
    assert_eq!(f.counts("name = 'probe'"), [0, 0]);
}
