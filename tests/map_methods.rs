//! The `partition` and `range` shard-map methods end to end: real shards, real
//! data, the real binary.
//!
//! Every shard holds only the rows its tenants own, and its tables refuse rows
//! of other tenants by Postgres's own rules (a `PARTITION BY HASH` table with
//! only this shard's remainder attached; a CHECK constraint with this shard's
//! ranges). The rows are inserted *through shardbouncer*, so a placement that
//! disagrees with Postgres fails the INSERT, and every read checks both the port
//! that answered and that the tenant's row was there.

mod support;

use support::{Bouncer, PgCluster};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The config: database `app` routed over `shards` (named s0, s1, ...) with the
/// shard map `{DIR}/shardmap.toml`, and an admin user for the console.
fn config(shards: &[PgCluster]) -> String {
    support::routed_config(
        shards.iter(),
        "default_pool_size = 4\nserver_connect_timeout = \"2s\"",
        "",
    )
}

/// A tenant key: an integer (table `accounts`, bigint column) or a text key
/// (table `orgs`, text column).
#[derive(Clone, Copy, Debug)]
enum Key {
    Int(i64),
    Text(&'static str),
}

impl Key {
    fn table(self) -> &'static str {
        match self {
            Key::Int(_) => "accounts",
            Key::Text(_) => "orgs",
        }
    }

    /// As written in SQL.
    fn literal(self) -> String {
        match self {
            Key::Int(v) => v.to_string(),
            Key::Text(s) => format!("'{s}'"),
        }
    }

    /// As the tenant value (startup parameter, comment, console).
    fn raw(self) -> String {
        match self {
            Key::Int(v) => v.to_string(),
            Key::Text(s) => s.to_string(),
        }
    }
}

async fn connect(b: &Bouncer, extra: &str) -> Client {
    let cs = format!("{} {extra}", b.conn_str("app", "secret", "app"));
    let (c, conn) = tokio_postgres::connect(&cs, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {extra:?}: {e}"));
    tokio::spawn(conn);
    c
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The rows of a simple query, every column as text (`None` for NULL).
async fn rows(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

/// First row's first two columns: (port that answered, the tenant's row if there).
async fn port_name(
    c: &Client,
    sql: &str,
) -> Result<(String, Option<String>), tokio_postgres::Error> {
    let r = rows(c, sql).await?;
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    Ok((r[0][0].clone().unwrap(), r[0][1].clone()))
}

/// Reach `key` through every routing source and check that the shard on `port`
/// answered and holds the tenant's row: startup parameter, SQL comment,
/// `SET tenant_id`, `WHERE tenant_id = <literal>`, and `tenant_id = $1` bound by
/// tokio-postgres (binary int8 or text).
async fn check_every_source(b: &Bouncer, key: Key, port: u16) {
    let want = (port.to_string(), Some(format!("owner of {}", key.raw())));
    let (t, raw, lit) = (key.table(), key.raw(), key.literal());
    // No tenant mention in this text: only the source under test can route it.
    let by_name = format!(
        "SELECT current_setting('port'), (SELECT name FROM {t} WHERE name = 'owner of {raw}')"
    );

    let c = connect(b, &format!("options='-c tenant_id={raw}'")).await;
    assert_eq!(
        port_name(&c, &by_name).await.unwrap(),
        want,
        "startup parameter, tenant {raw}"
    );
    drop(c);

    let c = connect(b, "").await;
    assert_eq!(
        port_name(&c, &format!("/* tenant_id={raw} */ {by_name}"))
            .await
            .unwrap(),
        want,
        "comment, tenant {raw}"
    );

    c.simple_query(&format!("SET tenant_id = {lit}"))
        .await
        .unwrap();
    assert_eq!(
        port_name(&c, &by_name).await.unwrap(),
        want,
        "SET tenant_id, tenant {raw}"
    );
    c.simple_query("RESET tenant_id").await.unwrap();
    // Without the SET the same text has no tenant: it was the SET that routed it.
    let e = port_name(&c, &by_name).await.unwrap_err();
    assert_eq!(code(&e), "42P17", "{}", msg(&e));

    assert_eq!(
        port_name(
            &c,
            &format!(
                "SELECT current_setting('port'), (SELECT name FROM {t} WHERE tenant_id = {lit})"
            )
        )
        .await
        .unwrap(),
        want,
        "WHERE tenant_id = literal, tenant {raw}"
    );

    let sql =
        format!("SELECT current_setting('port'), (SELECT name FROM {t} WHERE tenant_id = $1)");
    let row = match key {
        Key::Int(v) => c.query_one(&sql, &[&v]).await,
        Key::Text(s) => c.query_one(&sql, &[&s]).await,
    }
    .unwrap_or_else(|e| panic!("extended protocol, tenant {raw}: {}", msg(&e)));
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        want,
        "extended protocol tenant_id = $1, tenant {raw}"
    );
}

/// `SHOW ROUTE 'key'` on the console: (shard, reason).
async fn show_route(admin: &Client, key: &str) -> (String, String) {
    let r = rows(admin, &format!("SHOW ROUTE '{key}'")).await.unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    // database | key | shard | reason | map_version
    (
        r[0][2].clone().unwrap_or_default(),
        r[0][3].clone().unwrap_or_default(),
    )
}

/// Insert `key`'s row through the bouncer, routed by the INSERT's own values.
async fn insert_through_bouncer(c: &Client, key: Key) {
    let (t, raw, lit) = (key.table(), key.raw(), key.literal());
    c.simple_query(&format!(
        "INSERT INTO {t} (tenant_id, name) VALUES ({lit}, 'owner of {raw}')"
    ))
    .await
    .unwrap_or_else(|e| {
        panic!(
            "INSERT of tenant {raw} through shardbouncer refused by the shard ({}): {}",
            code(&e),
            msg(&e)
        )
    });
}

// ---------------------------------------------------------------- partition

const PARTITION_MAP: &str = "version = 1\nmethod = \"partition\"\n";

const PARTITION_INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    5,
    8,
    13,
    42,
    100,
    1000,
    65536,
    -1,
    -42,
    4_294_967_296,
    i64::MAX,
    i64::MIN,
];
const PARTITION_TEXTS: &[&str] = &["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// Postgres's own remainder (modulus `n`) of each key, from
/// `satisfies_hash_partition` on a parent table hashed like the shards' tables.
fn postgres_remainders(pg: &PgCluster, n: usize, keys: &[Key]) -> Vec<usize> {
    keys.iter()
        .map(|&k| {
            let (parent, value) = match k {
                Key::Int(v) => ("accounts", format!("'{v}'::bigint")),
                Key::Text(s) => ("orgs", format!("'{s}'::text")),
            };
            let out = pg.psql(
                "app",
                &format!(
                    "SELECT r FROM generate_series(0, {}) r \
                     WHERE satisfies_hash_partition('{parent}'::regclass, {n}, r, {value})",
                    n - 1
                ),
            );
            let rems: Vec<usize> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(rems.len(), 1, "key {k:?}: remainders {rems:?}");
            rems[0]
        })
        .collect()
}

/// method = "partition": three shards, shard i is `PARTITION BY HASH` remainder i
/// of modulus 3 (each shard has only its own partition attached, so Postgres
/// itself refuses a row of another remainder). Integer keys hash as bigint
/// (`hashint8extended`), text keys as text (`hashtextextended`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_method_places_tenants_by_postgres_hash_partition_remainder() {
    const N: usize = 3;
    let shards: Vec<PgCluster> = (0..N).map(|_| PgCluster::start()).collect();
    for (i, pg) in shards.iter().enumerate() {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE accounts (tenant_id bigint, name text) PARTITION BY HASH (tenant_id);\n\
                 CREATE TABLE accounts_r{i} PARTITION OF accounts FOR VALUES WITH (MODULUS {N}, REMAINDER {i});\n\
                 CREATE TABLE orgs (tenant_id text, name text) PARTITION BY HASH (tenant_id);\n\
                 CREATE TABLE orgs_r{i} PARTITION OF orgs FOR VALUES WITH (MODULUS {N}, REMAINDER {i});\n\
                 GRANT ALL ON accounts, accounts_r{i}, orgs, orgs_r{i} TO app;"
            ),
        );
    }
    let keys: Vec<Key> = PARTITION_INTS
        .iter()
        .map(|&v| Key::Int(v))
        .chain(PARTITION_TEXTS.iter().map(|&s| Key::Text(s)))
        .collect();
    let expected = postgres_remainders(&shards[0], N, &keys);
    for r in 0..N {
        assert!(
            keys.iter()
                .zip(&expected)
                .any(|(k, &e)| e == r && matches!(k, Key::Int(_))),
            "no integer key on remainder {r}: {expected:?}"
        );
        assert!(
            keys.iter()
                .zip(&expected)
                .any(|(k, &e)| e == r && matches!(k, Key::Text(_))),
            "no text key on remainder {r}: {expected:?}"
        );
    }

    let b = Bouncer::start_with_files(&config(&shards), &[("shardmap.toml", PARTITION_MAP)]);
    let c = connect(&b, "").await;
    // The shard tables only accept their own remainder: a routing that disagrees
    // with Postgres fails here with 23514.
    for &k in &keys {
        insert_through_bouncer(&c, k).await;
    }
    for (i, pg) in shards.iter().enumerate() {
        let want_ints = expected
            .iter()
            .zip(&keys)
            .filter(|(&e, k)| e == i && matches!(k, Key::Int(_)))
            .count();
        let want_texts = expected
            .iter()
            .zip(&keys)
            .filter(|(&e, k)| e == i && matches!(k, Key::Text(_)))
            .count();
        assert_eq!(
            pg.psql("app", "SELECT count(*) FROM accounts"),
            want_ints.to_string(),
            "integer tenants on s{i}"
        );
        assert_eq!(
            pg.psql("app", "SELECT count(*) FROM orgs"),
            want_texts.to_string(),
            "text tenants on s{i}"
        );
    }

    for (&k, &r) in keys.iter().zip(&expected) {
        check_every_source(&b, k, shards[r].port).await;
    }

    // The console explains each decision with the same remainder.
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    for (&k, &r) in keys.iter().zip(&expected) {
        let (shard, reason) = show_route(&admin, &k.raw()).await;
        assert_eq!(shard, format!("s{r}"), "SHOW ROUTE {k:?}: {reason}");
        let hash_fn = match k {
            Key::Int(_) => "hashint8extended",
            Key::Text(_) => "hashtextextended",
        };
        assert!(
            reason.contains(&format!("remainder {r}")) && reason.contains(hash_fn),
            "SHOW ROUTE {k:?}: {reason}"
        );
    }

    // A multi-row INSERT whose rows hash to two shards runs nowhere.
    let (a, z) = (
        keys.iter()
            .zip(&expected)
            .find(|(k, &e)| e == 0 && matches!(k, Key::Int(_))),
        keys.iter()
            .zip(&expected)
            .find(|(k, &e)| e == 1 && matches!(k, Key::Int(_))),
    );
    let (a, z) = (a.unwrap().0.raw(), z.unwrap().0.raw());
    let e = c
        .simple_query(&format!(
            "INSERT INTO accounts (tenant_id, name) VALUES ({a}, 'split'), ({z}, 'split')"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{}", msg(&e));
    for pg in &shards {
        assert_eq!(
            pg.psql("app", "SELECT count(*) FROM accounts WHERE name = 'split'"),
            "0"
        );
    }
}

// -------------------------------------------------------------------- range

/// Ranges over two shards (s0 owns two of them) and one override.
const RANGE_MAP: &str = r#"version = 1
method = "range"
[[ranges]]
from = 1
to = 1000
shard = "s0"
[[ranges]]
from = 1001
to = 5000
shard = "s1"
[[ranges]]
from = 5001
to = 9000
shard = "s0"
[tenants]
"7" = "s1"
"#;

/// Where `RANGE_MAP` puts `v`, written out independently of the product.
fn range_shard(v: i64) -> Option<usize> {
    match v {
        7 => Some(1),
        1..=1000 | 5001..=9000 => Some(0),
        1001..=5000 => Some(1),
        _ => None,
    }
}

/// The shard table for the range tests: a CHECK constraint admits only the keys
/// `RANGE_MAP` places on shard `i`, so Postgres refuses a misrouted INSERT.
fn range_table(i: usize) -> String {
    let check = if i == 0 {
        "(tenant_id BETWEEN 1 AND 1000 OR tenant_id BETWEEN 5001 AND 9000) AND tenant_id <> 7"
    } else {
        "tenant_id BETWEEN 1001 AND 5000 OR tenant_id = 7"
    };
    format!(
        "CREATE TABLE accounts (tenant_id bigint PRIMARY KEY, name text, CHECK ({check}));\n\
         GRANT ALL ON accounts TO app;"
    )
}

/// Keys at both ends of every range, one inside each, and the override.
const RANGE_KEYS: &[i64] = &[1, 500, 1000, 1001, 3000, 5000, 5001, 9000, 7, 6, 8];

fn start_range_fixture() -> (Vec<PgCluster>, Bouncer) {
    let shards: Vec<PgCluster> = (0..2).map(|_| PgCluster::start()).collect();
    for (i, pg) in shards.iter().enumerate() {
        pg.psql("app", &range_table(i));
    }
    let b = Bouncer::start_with_files(&config(&shards), &[("shardmap.toml", RANGE_MAP)]);
    (shards, b)
}

/// method = "range": inclusive boundaries, the first and last key of each range
/// reached by every source, an override beating its range, and keys outside every
/// range (or not integers) refused with 42P17 by every source, nothing run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_method_routes_inclusive_ranges_and_refuses_keys_outside_them() {
    let (shards, b) = start_range_fixture();
    let c = connect(&b, "").await;
    for &v in RANGE_KEYS {
        insert_through_bouncer(&c, Key::Int(v)).await;
    }
    for (i, pg) in shards.iter().enumerate() {
        let want: Vec<String> = RANGE_KEYS
            .iter()
            .filter(|&&v| range_shard(v) == Some(i))
            .map(|v| v.to_string())
            .collect();
        let mut want_sorted: Vec<i64> = want.iter().map(|v| v.parse().unwrap()).collect();
        want_sorted.sort();
        let got = pg.psql(
            "app",
            "SELECT string_agg(tenant_id::text, ',' ORDER BY tenant_id) FROM accounts",
        );
        assert_eq!(
            got,
            want_sorted
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "rows on s{i}"
        );
    }
    for &v in RANGE_KEYS {
        let shard = range_shard(v).unwrap();
        check_every_source(&b, Key::Int(v), shards[shard].port).await;
    }

    let admin = b.connect("admin", "admin", "pgbouncer").await;
    for (key, shard, reason) in [
        ("1", "s0", "range 1..=1000"),
        ("1000", "s0", "range 1..=1000"),
        ("1001", "s1", "range 1001..=5000"),
        ("5000", "s1", "range 1001..=5000"),
        ("5001", "s0", "range 5001..=9000"),
        ("9000", "s0", "range 5001..=9000"),
        ("7", "s1", "override"),
    ] {
        let (s, r) = show_route(&admin, key).await;
        assert_eq!(s, shard, "SHOW ROUTE '{key}': {r}");
        assert!(r.contains(reason), "SHOW ROUTE '{key}': {r}");
    }

    // Outside every range: 0 and 9001 (just past the ends), far away, negative;
    // and a key that is not an integer. Refused with 42P17 by every source.
    for bad in ["0", "9001", "-5", "9223372036854775807", "acme"] {
        let lit = if bad == "acme" {
            "'acme'".to_string()
        } else {
            bad.to_string()
        };
        let why = if bad == "acme" {
            "is not an integer".to_string()
        } else {
            format!("no range covers tenant key {bad}")
        };
        let refused = |what: &str, e: tokio_postgres::Error| {
            assert_eq!(code(&e), "42P17", "{what} {bad}: {}", msg(&e));
            assert!(msg(&e).contains(&why), "{what} {bad}: {}", msg(&e));
        };
        let e = rows(
            &c,
            &format!("/* tenant_id={bad} */ SELECT current_setting('port')"),
        )
        .await
        .unwrap_err();
        refused("comment", e);
        let e = rows(
            &c,
            &format!("SELECT current_setting('port') FROM accounts WHERE tenant_id = {lit}"),
        )
        .await
        .unwrap_err();
        refused("WHERE literal", e);
        let e = c
            .simple_query(&format!("SET tenant_id = {lit}"))
            .await
            .unwrap_err();
        refused("SET", e);
        if bad != "acme" {
            let v: i64 = bad.parse().unwrap();
            let e = c
                .query_one(
                    "SELECT current_setting('port') FROM accounts WHERE tenant_id = $1",
                    &[&v],
                )
                .await
                .unwrap_err();
            refused("extended tenant_id = $1", e);
        }
        // At connect: the login succeeds, the first statement needing the tenant
        // is refused.
        let s = connect(&b, &format!("options='-c tenant_id={bad}'")).await;
        let e = rows(&s, "SELECT current_setting('port')")
            .await
            .unwrap_err();
        refused("startup parameter", e);
        // The startup tenant outranks a comment, so it stays refused...
        let e = rows(&s, "/* tenant_id=1 */ SELECT current_setting('port')")
            .await
            .unwrap_err();
        refused("startup parameter (before a comment)", e);
        // ...but the refusal is an ERROR: the session goes on, and SET replaces
        // the startup tenant.
        s.simple_query("SET tenant_id = 1").await.unwrap();
        assert_eq!(
            port_name(&s, "SELECT current_setting('port'), 'alive'")
                .await
                .unwrap(),
            (shards[0].port.to_string(), Some("alive".to_string()))
        );
    }
    // One row out of range refuses the whole INSERT: nothing ran anywhere.
    let e = c
        .simple_query(
            "INSERT INTO accounts (tenant_id, name) VALUES (2, 'partial'), (9001, 'partial')",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P17", "{}", msg(&e));
    for pg in &shards {
        assert_eq!(
            pg.psql(
                "app",
                "SELECT count(*) FROM accounts WHERE name = 'partial'"
            ),
            "0"
        );
    }
    // The connection is still usable after the refusals.
    assert_eq!(
        port_name(
            &c,
            "SELECT current_setting('port'), (SELECT name FROM accounts WHERE tenant_id = 9000)"
        )
        .await
        .unwrap(),
        (
            shards[0].port.to_string(),
            Some("owner of 9000".to_string())
        )
    );
}

/// RANGE_MAP with the s0/s1 boundary moved from 1000/1001 to 1500/1501.
const RANGE_MAP_MOVED: &str = r#"version = 2
method = "range"
[[ranges]]
from = 1
to = 1500
shard = "s0"
[[ranges]]
from = 1501
to = 5000
shard = "s1"
[[ranges]]
from = 5001
to = 9000
shard = "s0"
[tenants]
"7" = "s1"
"#;

/// Replace the shard map the way deploys do (write a temp file, rename it over).
fn replace_map(b: &Bouncer, text: &str) {
    let tmp = b.dir.join(".shardmap.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, b.dir.join("shardmap.toml")).unwrap();
}

async fn port_of_tenant(c: &Client, tenant: i64) -> String {
    rows(
        c,
        &format!("/* tenant_id={tenant} */ SELECT current_setting('port')"),
    )
    .await
    .unwrap_or_else(|e| panic!("tenant {tenant}: {}", msg(&e)))[0][0]
        .clone()
        .unwrap()
}

/// A reload that moves a range boundary (console RELOAD, then SIGHUP) changes
/// where the next transaction goes; a transaction pinned before the reload
/// finishes on its shard when its tenant stays there, and fails at its next
/// statement when the reload moved it; a session whose tenant came at
/// connect follows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reload_moves_a_boundary_for_the_next_transaction() {
    let (shards, b) = start_range_fixture();
    let (p0, p1) = (shards[0].port.to_string(), shards[1].port.to_string());
    let c = connect(&b, "").await;
    for v in [1000, 1001, 1200, 1500, 1501] {
        insert_through_bouncer(&c, Key::Int(v)).await;
    }
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    let startup = connect(&b, "options='-c tenant_id=1200'").await;
    let in_tenant =
        "SELECT current_setting('port'), (SELECT name FROM accounts WHERE name = 'owner of 1200')";
    assert_eq!(
        port_name(&startup, in_tenant).await.unwrap(),
        (p1.clone(), Some("owner of 1200".into()))
    );
    for (t, p) in [
        (1000, &p0),
        (1001, &p1),
        (1200, &p1),
        (1500, &p1),
        (1501, &p1),
    ] {
        assert_eq!(
            &port_of_tenant(&c, t).await,
            p,
            "tenant {t} before the reload"
        );
    }

    // A transaction pinned to s1 by tenant 1200 before the reload (which
    // moves it), and one pinned there by tenant 4000 (which stays).
    let moved = connect(&b, "").await;
    moved.simple_query("BEGIN").await.unwrap();
    assert_eq!(
        port_name(
            &moved,
            "SELECT current_setting('port'), (SELECT name FROM accounts WHERE tenant_id = 1200)"
        )
        .await
        .unwrap(),
        (p1.clone(), Some("owner of 1200".into()))
    );
    let pinned = connect(&b, "").await;
    pinned.simple_query("BEGIN").await.unwrap();
    assert_eq!(
        port_name(
            &pinned,
            "SELECT current_setting('port'), (SELECT 'x' FROM accounts WHERE tenant_id = 4000 LIMIT 1)"
        )
        .await
        .unwrap()
        .0,
        p1
    );

    // Another, which will name 1500 after the reload: s1's tenant before
    // it, s0's after.
    let pinned2 = connect(&b, "").await;
    pinned2.simple_query("BEGIN").await.unwrap();
    port_name(
        &pinned2,
        "SELECT current_setting('port') /* tenant_id=1200 */, 'x'",
    )
    .await
    .unwrap();

    replace_map(&b, RANGE_MAP_MOVED);
    let m = admin.simple_query("RELOAD").await.unwrap();
    assert!(
        m.iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))),
        "{m:?}"
    );
    // No waiting: RELOAD answered, so the very next transaction uses the new map.
    for (t, p) in [
        (1000, &p0),
        (1001, &p0),
        (1200, &p0),
        (1500, &p0),
        (1501, &p1),
    ] {
        assert_eq!(&port_of_tenant(&c, t).await, p, "tenant {t} after RELOAD");
    }
    let r = rows(&admin, "SHOW SHARD_MAP").await.unwrap();
    assert_eq!(r[0][1].as_deref(), Some("2"), "{r:?}");
    assert_eq!(r[0][2].as_deref(), Some("range"), "{r:?}");
    let (s, reason) = show_route(&admin, "1200").await;
    assert_eq!((s.as_str(), reason.as_str()), ("s0", "range 1..=1500"));
    // Tenant 1200's data stayed on s1: its new shard has no row for it.
    assert_eq!(
        port_name(
            &c,
            "SELECT current_setting('port'), (SELECT name FROM accounts WHERE tenant_id = 1200)"
        )
        .await
        .unwrap(),
        (p0.clone(), None)
    );

    // A tenant the new ranges moved is refused in a transaction routed with
    // the old ones (it would write where the tenant no longer is).
    let e = pinned2
        .simple_query("INSERT INTO accounts (tenant_id, name) VALUES (1500, 'stale')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{}", msg(&e));
    pinned2.simple_query("ROLLBACK").await.unwrap();

    // The moved tenant's own transaction: its next statement, naming no
    // tenant, would run on the old shard (probe CW F2): refused. (One that
    // reads no table, a catalog read, would be tenant-free.)
    let e = moved
        .simple_query("SELECT current_setting('port'), (SELECT count(*) FROM accounts)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{}", msg(&e));
    moved.simple_query("ROLLBACK").await.unwrap();

    // A transaction that was pinned before the reload by a tenant that
    // stays finishes on s1.
    assert_eq!(
        port_name(&pinned, "SELECT current_setting('port'), 'pinned'")
            .await
            .unwrap(),
        (p1.clone(), Some("pinned".into()))
    );
    pinned
        .simple_query("INSERT INTO accounts (tenant_id, name) VALUES (4000, 'in the pinned tx')")
        .await
        .unwrap();
    pinned.simple_query("COMMIT").await.unwrap();
    assert_eq!(
        shards[1].psql(
            "app",
            "SELECT count(*) FROM accounts WHERE name = 'in the pinned tx'"
        ),
        "1"
    );
    // ...and its next transaction follows the new map.
    assert_eq!(port_of_tenant(&pinned, 1200).await, p0);
    // So does the session whose tenant came at connect.
    assert_eq!(
        port_name(&startup, in_tenant).await.unwrap(),
        (p0.clone(), None)
    );

    // SIGHUP: move the boundary back (version 3).
    replace_map(&b, &RANGE_MAP.replace("version = 1", "version = 3"));
    b.signal(libc::SIGHUP);
    b.wait_for_log("SIGHUP: configuration reloaded").await;
    for (t, p) in [
        (1000, &p0),
        (1001, &p1),
        (1200, &p1),
        (1500, &p1),
        (1501, &p1),
    ] {
        assert_eq!(&port_of_tenant(&c, t).await, p, "tenant {t} after SIGHUP");
    }
    assert_eq!(
        port_name(&startup, in_tenant).await.unwrap(),
        (p1.clone(), Some("owner of 1200".into()))
    );
    let r = rows(&admin, "SHOW SHARD_MAP").await.unwrap();
    assert_eq!(r[0][1].as_deref(), Some("3"), "{r:?}");

    // An invalid map (a gap) is rejected by RELOAD with F0000; the old one stays.
    replace_map(
        &b,
        "version = 4\nmethod = \"range\"\n[[ranges]]\nfrom = 1\nto = 10\nshard = \"s0\"\n\
         [[ranges]]\nfrom = 12\nto = 20\nshard = \"s1\"\n",
    );
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(&e), "F0000", "{}", msg(&e));
    assert!(msg(&e).contains("gap"), "{}", msg(&e));
    let r = rows(&admin, "SHOW SHARD_MAP").await.unwrap();
    assert_eq!(r[0][1].as_deref(), Some("3"), "{r:?}");
    assert_eq!(port_of_tenant(&c, 1200).await, p1);

    // An older map put back (version 2, which moved 1200 to s0) is refused:
    // it would undo what version 3 placed.
    replace_map(&b, RANGE_MAP_MOVED);
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(&e), "F0000", "{}", msg(&e));
    assert!(
        msg(&e).contains("lower than the live version 3"),
        "{}",
        msg(&e)
    );
    let r = rows(&admin, "SHOW SHARD_MAP").await.unwrap();
    assert_eq!(r[0][1].as_deref(), Some("3"), "{r:?}");
    assert_eq!(port_of_tenant(&c, 1200).await, p1);
}
