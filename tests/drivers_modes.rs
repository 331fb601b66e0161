//! Session and statement pool modes through real drivers: psycopg 3 and asyncpg
//! (tests/drivers/py_pool_modes.py) and node-postgres
//! (tests/drivers/node_pool_modes.js), at their default settings.
//!
//! One cluster and one bouncer with two databases over the same Postgres database,
//! both with `default_pool_size = 2`:
//!
//! * `sess` (`mode = "session"`): a client keeps its server for the whole session,
//!   so session state (a temp table, `SET`, SQL `PREPARE`, a session advisory lock)
//!   lasts across its transactions; a second client has its own server; a third
//!   waits for one, gets the first client's server when it leaves, cleaned by
//!   `server_reset_query` (`DISCARD ALL`).
//! * `stmt` (`mode = "statement"`): single statements work (many clients over two
//!   servers, named prepared statements included), settings follow the client, a
//!   temp table lasts one statement; a transaction block is refused with FATAL
//!   `0A000` ("transaction blocks not allowed in statement pooling mode") and
//!   nothing of it stays.
//!
//! The programs print `OK <n> checks` and exit 0, or exit non-zero naming the
//! failed check. A missing driver fails the test saying what to install.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, Bouncer, PgCluster};

/// How long one driver program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

fn config(pg: &PgCluster) -> String {
    let shard = support::shard_list(std::iter::once(pg));
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
[databases.sess]
dbname = "app"
server_user = "app"
server_password = "secret"
mode = "session"
shards = [ {shard} ]
[databases.stmt]
dbname = "app"
server_user = "app"
server_password = "secret"
mode = "statement"
shards = [ {shard} ]
"#
    )
}

struct Fixture {
    pg: PgCluster,
    bouncer: Bouncer,
}

impl Fixture {
    fn start() -> Fixture {
        let pg = PgCluster::start();
        pg.psql(
            "app",
            "CREATE TABLE mode_items (id int PRIMARY KEY, note text);\nGRANT ALL ON mode_items TO app;",
        );
        let bouncer = Bouncer::start(&config(&pg));
        Fixture { pg, bouncer }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SB_HOST", "127.0.0.1".into()),
            ("SB_PORT", self.bouncer.port.to_string()),
            ("SB_USER", "app".into()),
            ("SB_PASSWORD", "secret".into()),
            ("SB_SESSION_DB", "sess".into()),
            ("SB_STATEMENT_DB", "stmt".into()),
            ("SB_PG_PORT", self.pg.port.to_string()),
        ]
    }

    /// Run a driver program; panics with its output and the bouncer log tail
    /// unless it exits 0 saying `OK`.
    fn run(&self, driver: &str, program: &str, args: &[&str]) {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
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
        match status {
            Some(s) if s.success() && last.starts_with("OK ") => println!("{driver}: {last}"),
            Some(s) => panic!(
                "{driver} failed ({s}); program output:\n{out}\n---- shardbouncer log tail ----\n{}",
                tail(&self.bouncer.log(), 60)
            ),
            None => panic!(
                "{driver} did not finish within {PROGRAM_TIMEOUT:?} (killed); program output:\n{out}\n---- shardbouncer log tail ----\n{}",
                tail(&self.bouncer.log(), 60)
            ),
        }
    }

    /// After a program: the server that ran a refused BEGIN was closed, not
    /// pooled (no backend is left inside a transaction), and both pools still serve.
    async fn after(&self) {
        let pg = &self.pg;
        eventually(
            Duration::from_secs(10),
            "a backend stayed idle in transaction",
            || async {
                pg.psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND state LIKE 'idle in transaction%'",
                ) == "0"
            },
        )
        .await;
        for db in ["sess", "stmt"] {
            let c = self.bouncer.connect("app", "secret", db).await;
            let n: i64 = c
                .query_one("SELECT count(*) FROM mode_items WHERE id < 0", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{db}: a refused transaction left rows");
        }
        // Each pool holds at most its 2 servers.
        let backends = pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND usename = 'app'",
        );
        let backends: usize = backends.parse().unwrap();
        assert!(backends <= 4, "{backends} backends for two pools of 2");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_psycopg3_session_and_statement_modes() {
    require_python_module("psycopg", "psycopg[binary]");
    let f = Fixture::start();
    support::blocking(|| {
        f.run(
            "psycopg",
            "python3",
            &["tests/drivers/py_pool_modes.py", "psycopg"],
        )
    });
    f.after().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_asyncpg_session_and_statement_modes() {
    require_python_module("asyncpg", "asyncpg");
    let f = Fixture::start();
    support::blocking(|| {
        f.run(
            "asyncpg",
            "python3",
            &["tests/drivers/py_pool_modes.py", "asyncpg"],
        )
    });
    f.after().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pg_session_and_statement_modes() {
    require("node", "node", &["--version"], "apt-get install nodejs");
    let pg =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/node_modules/pg/package.json");
    assert!(
        pg.exists(),
        "node module pg is not installed ({} missing); install it: (cd tests/drivers && npm ci) (bash .ci/run does this)",
        pg.display()
    );
    let f = Fixture::start();
    support::blocking(|| {
        f.run(
            "node-postgres",
            "node",
            &["tests/drivers/node_pool_modes.js"],
        )
    });
    f.after().await;
}
