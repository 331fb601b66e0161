//! Real client drivers, at their default settings, through shardbouncer against
//! real PostgreSQL: psycopg 3, psycopg2 and asyncpg (Python), node-postgres
//! (Node) and PgJDBC (Java).
//!
//! Each test starts two clusters and one bouncer with two logical databases:
//!
//! * `app`: a plain transaction pooler over cluster 0 with `default_pool_size = 2`,
//!   so the driver's 8+ concurrent connections share and switch server connections
//!   between transactions;
//! * `sharded`: the same `app` database on both clusters, routed by `tenant_id`
//!   with the shard map `MAP`; each shard holds `accounts(tenant_id, name)` rows
//!   for the tenants it owns, so a wrong route shows up as a wrong port or
//!   missing row.
//!
//! The client programs live in `tests/drivers/` and take everything from the
//! environment (`SB_*`, see [`Fixture::env`]); they print `OK <n> checks` and
//! exit 0, or exit non-zero naming the failed check. A driver that is not
//! installed fails the test with a message saying what to install (`.ci/run`
//! installs all of them).

mod support;

use shardbouncer::router::{ShardMap, TenantKey};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Bouncer, PgCluster};

const MAP: &str = r#"
version = 1
method = "citus"
[tenants]
"42" = "s1"
acme = "s1"
"#;

/// Tenants seeded on the shards (each on the shard the map routes it to).
const TENANTS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "42", "acme"];

/// How long one driver program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(240);

const SEED_SINGLE: &str = "\
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, n bigint);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
GRANT ALL ON items TO app;
";

/// Every shard of the sharded database: a type and a table of the
/// application's (each tenant's row holds its shard's number in `tags`).
const SEED_SHARDED: &str = "\
CREATE TYPE grade AS ENUM ('low', 'high');
CREATE TABLE grades (tenant_id text, g grade, tags bigint[]);
GRANT ALL ON grades TO app;
";

struct Fixture {
    shards: Vec<PgCluster>,
    bouncer: Bouncer,
    map: ShardMap,
}

fn route(map: &ShardMap, t: &str) -> usize {
    map.route(&TenantKey::new(t.as_bytes()).unwrap())
        .unwrap()
        .shard
}

fn config(shards: &[PgCluster]) -> String {
    let list = support::shard_list(shards.iter());
    format!(
        r#"[listen]
addr = "127.0.0.1:{{PORT}}"
[pool]
mode = "transaction"
default_pool_size = 2
server_connect_timeout = "2s"
query_wait_timeout = "60s"
[auth]
type = "scram-sha-256"
[[users]]
name = "app"
password = "secret"
[databases.app]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [ {single} ]
[databases.sharded]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [ {all} ]
[databases.sharded.routing]
key = "tenant_id"
shard_map = "{{DIR}}/shardmap.toml"
"#,
        single = support::shard_list(shards.iter().take(1)),
        all = list,
    )
}

impl Fixture {
    fn start() -> Fixture {
        let shards: Vec<PgCluster> = (0..2).map(|_| PgCluster::start()).collect();
        let map = ShardMap::parse(MAP, &["s0".to_string(), "s1".to_string()]).unwrap();
        let on: Vec<usize> = TENANTS.iter().map(|t| route(&map, t)).collect();
        assert!(on.contains(&0) && on.contains(&1), "{on:?}");
        for (i, c) in shards.iter().enumerate() {
            let mut sql = String::from(
                "CREATE TABLE accounts (tenant_id text, name text);\nGRANT ALL ON accounts TO app;\n",
            );
            // A type of the application's on every shard: drivers look it up
            // in the catalog, with no tenant, before they can send a value.
            sql.push_str(SEED_SHARDED);
            if i == 0 {
                sql.push_str(SEED_SINGLE);
            }
            for t in TENANTS {
                if route(&map, t) == i {
                    sql.push_str(&format!(
                        "INSERT INTO accounts VALUES ('{t}', 'owner of {t}');\n\
                         INSERT INTO grades VALUES ('{t}', 'high', ARRAY[{i}, 7]);\n"
                    ));
                }
            }
            c.psql("app", &sql);
        }
        let bouncer = Bouncer::start_with_files(&config(&shards), &[("shardmap.toml", MAP)]);
        Fixture {
            shards,
            bouncer,
            map,
        }
    }

    /// What the programs read: where to connect, and which PostgreSQL port
    /// must answer for the single database and for each tenant.
    fn env(&self) -> Vec<(String, String)> {
        let tenants: Vec<String> = TENANTS
            .iter()
            .map(|t| format!("{t}={}", self.shards[route(&self.map, t)].port))
            .collect();
        vec![
            ("SB_HOST".into(), "127.0.0.1".into()),
            ("SB_PORT".into(), self.bouncer.port.to_string()),
            ("SB_USER".into(), "app".into()),
            ("SB_PASSWORD".into(), "secret".into()),
            ("SB_DB".into(), "app".into()),
            ("SB_SINGLE_PG_PORT".into(), self.shards[0].port.to_string()),
            ("SB_SHARDED_DB".into(), "sharded".into()),
            ("SB_TENANT_PORTS".into(), tenants.join(",")),
        ]
    }

    /// Run a driver program to completion; panics with its output (and the
    /// bouncer log tail, via the harness) unless it exits 0 saying `OK`.
    fn run(&self, driver: &str, program: &str, args: &[&str]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(root)
            .envs(self.env())
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (status, out) = run_with_timeout(cmd, PROGRAM_TIMEOUT)
            .unwrap_or_else(|e| panic!("{driver}: cannot run {program}: {e}"));
        let last = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let passed = matches!(status, Some(s) if s.success()) && last.starts_with("OK ");
        if !passed {
            // The whole bouncer log (run with SHARDBOUNCER_LOG=shardbouncer=trace
            // to see every attach/release/route) outlives the test's temp dir.
            let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("drivers-{driver}.log"));
            if std::fs::write(&keep, self.bouncer.log()).is_ok() {
                eprintln!("{driver}: full shardbouncer log in {}", keep.display());
            }
        }
        match status {
            Some(s) if s.success() && last.starts_with("OK ") => {
                println!("{driver}: {last}");
            }
            Some(s) => panic!(
                "{driver} failed ({s}); program output:\n{out}\n---- shardbouncer log tail ----\n{}",
                tail(&self.bouncer.log(), 80)
            ),
            None => panic!(
                "{driver} did not finish within {PROGRAM_TIMEOUT:?} (killed); program output:\n{out}\n---- shardbouncer log tail ----\n{}",
                tail(&self.bouncer.log(), 80)
            ),
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Spawn `cmd`, collect stdout+stderr, kill it after `timeout`. Returns the exit
/// status (None when killed for the timeout) and the combined output.
fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> std::io::Result<(Option<std::process::ExitStatus>, String)> {
    let mut child = cmd.spawn()?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8_lossy(&t1.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
    Ok((status, format!("{out}{err}")))
}

/// Panic with `install` unless `program args..` runs and exits 0.
fn require(what: &str, program: &str, args: &[&str], install: &str) {
    let ok = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{what} is not available ({program} {}); install it: {install} (bash .ci/run does this)",
        args.join(" ")
    );
}

fn require_python_module(module: &str, pip_name: &str) {
    require(
        &format!("python module {module}"),
        "python3",
        &["-c", &format!("import {module}")],
        &format!("python3 -m pip install '{pip_name}'"),
    );
}

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn python_psycopg3() {
    require_python_module("psycopg", "psycopg[binary]");
    let f = Fixture::start();
    f.run("psycopg", "python3", &["tests/drivers/py_psycopg.py"]);
}

#[test]
fn python_psycopg2() {
    require_python_module("psycopg2", "psycopg2-binary");
    let f = Fixture::start();
    f.run("psycopg2", "python3", &["tests/drivers/py_psycopg2.py"]);
}

/// Schema objects psql's other meta-commands list, made on every shard.
const SEED_DESCRIBED: &str = "\
CREATE VIEW high_grades AS SELECT tenant_id FROM grades WHERE g = 'high';
CREATE FUNCTION grade_of(t text) RETURNS grade LANGUAGE sql AS $$ SELECT 'high'::grade $$;
CREATE STATISTICS grades_stats ON tenant_id, g FROM grades;
SELECT lo_create(4242);
";

/// psql's `\d` and its other meta-commands send catalog reads only: through
/// the sharded database with no tenant, they run on any shard, where the
/// schema is the same. Those that are not plain reads are known forms
/// (`router/testdata/catalog_reads.txt`). `\dl` lists large objects, which
/// are the application's data, and `\dd` reads `x.tableoid`, which after a
/// view's alias calls a function of that name: both need a tenant.
#[test]
fn psql_describes_a_table_of_the_sharded_database_without_a_tenant() {
    let f = Fixture::start();
    for c in &f.shards {
        c.psql("app", SEED_DESCRIBED);
    }
    for (cmd, want) in [
        ("\\d grades", "tags"),
        ("\\dT grade", "grade"),
        ("\\dt", "grades"),
        ("\\df+ grade_of", "SELECT 'high'::grade"),
        ("\\sv high_grades", "FROM grades"),
        ("\\l+", "template1"),
        ("\\dconfig+ work_mem", "work_mem"),
        ("\\dx+ plpgsql", "plpgsql_call_handler"),
        ("\\dF english", "english"),
        ("\\dAc btree int4", "int4_ops"),
        ("\\dX", "grades_stats"),
    ] {
        let out = f.bouncer.psql("app", "secret", "sharded", cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(want),
            "{cmd}: {}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Not the table's rows, the large objects or `x.tableoid`.
    for cmd in ["SELECT count(*) FROM grades", "\\dl", "\\dd"] {
        let out = f.bouncer.psql("app", "secret", "sharded", cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("tenant"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn python_asyncpg() {
    require_python_module("asyncpg", "asyncpg");
    let f = Fixture::start();
    f.run("asyncpg", "python3", &["tests/drivers/py_asyncpg.py"]);
}

#[test]
fn node_pg() {
    require("node", "node", &["--version"], "apt-get install nodejs");
    let pg = drivers_dir().join("node_modules/pg/package.json");
    assert!(
        pg.exists(),
        "node module pg is not installed ({} missing); install it: (cd tests/drivers && npm ci) (bash .ci/run does this)",
        pg.display()
    );
    let f = Fixture::start();
    f.run("node-postgres", "node", &["tests/drivers/node_pg.js"]);
}

#[test]
fn java_jdbc() {
    require(
        "java",
        "java",
        &["-version"],
        "apt-get install default-jdk-headless",
    );
    assert!(
        Path::new(JDBC_JAR).exists(),
        "PgJDBC is not installed ({JDBC_JAR} missing); install it: apt-get install libpostgresql-jdbc-java (bash .ci/run does this)"
    );
    let f = Fixture::start();
    f.run(
        "pgjdbc",
        "java",
        &["-cp", JDBC_JAR, "tests/drivers/Jdbc.java"],
    );
}
