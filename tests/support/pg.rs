//! Throwaway PostgreSQL clusters for integration tests.
//!
//! `initdb` costs over a second, so the first cluster of a test process is
//! built the slow way (initdb, configure, start, create fixtures) and then
//! frozen as a *template* (stopped cleanly and copied to
//! `$CARGO_TARGET_TMPDIR/pg-template/<key>`); every later cluster, in this or a
//! later test process, is a `cp -a` of that data directory followed by its own
//! configuration and start. The key hashes the PostgreSQL version, the
//! programs' location, whether we run as root and the fixture script, so a
//! change to any of them builds a new template. Set
//! `SHARDBOUNCER_TEST_NO_TEMPLATE=1` to force a fresh `initdb` per cluster.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::util::{
    chown_to_postgres, is_root, pg_error_text, pg_programs, read_lossy, run, says_address_in_use,
    server_command, tail, tcp_conn_str,
};

/// Name of the fixture role that owns database `app` (SCRAM password).
pub const APP_USER: &str = "app";
/// Password of [`APP_USER`].
pub const APP_PASSWORD: &str = "secret";

/// Bump when anything that ends up inside the template data directory changes.
const TEMPLATE_FORMAT: &str = "harness-template-1";

const INITDB_ARGS: &[&str] = &[
    "-U",
    "postgres",
    "-A",
    "trust",
    "--no-sync",
    "-E",
    "UTF8",
    "--locale=C",
];

/// Roles and database every cluster gets (run as superuser on database `postgres`).
const FIXTURES_SQL: &str = "\
CREATE ROLE app LOGIN PASSWORD 'secret';
CREATE ROLE plainuser LOGIN PASSWORD 'plainpass';
CREATE ROLE trustuser LOGIN;
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
RESET password_encryption;
CREATE DATABASE app OWNER app;
\\connect app
GRANT ALL ON SCHEMA public TO app, md5user, plainuser, trustuser;
";

const PG_HBA: &str = "\
# written by the shardbouncer test harness
local all all trust
host all postgres 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host all plainuser 127.0.0.1/32 password
host all trustuser 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
";

/// How many fresh ports to try when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;

/// A throwaway PostgreSQL cluster: temp dir, free port, stopped (immediate)
/// and deleted on Drop.
///
/// Fixtures: `postgresql.conf` gets `listen_addresses='127.0.0.1'`, the port,
/// `unix_socket_directories=<dir>`, `max_connections=300`, `fsync=off`,
/// `synchronous_commit=off`, `full_page_writes=off`,
/// `password_encryption='scram-sha-256'`, `log_min_messages=warning`,
/// `shared_buffers=32MB` (plus `dynamic_shared_memory_type=mmap`, so an
/// immediate stop leaves nothing behind in /dev/shm). `pg_hba.conf` trusts local sockets and `postgres`,
/// uses md5 for `md5user`, cleartext `password` for `plainuser`, trust for
/// `trustuser` and scram-sha-256 for everyone else on 127.0.0.1. Roles:
/// `app`/`secret` (SCRAM verifier), `md5user`/`md5pass` (MD5 hash stored),
/// `plainuser`/`plainpass`, `trustuser` (no password); database `app` owned
/// by `app`, with `ALL` on schema public granted to all four roles.
pub struct PgCluster {
    /// TCP port the server listens on (127.0.0.1 only).
    pub port: u16,
    /// The cluster's temp dir: holds `data/`, `postgres.log` and the unix socket.
    pub dir: PathBuf,
    data: PathBuf,
    log_path: PathBuf,
    /// postgresql.conf exactly as initdb wrote it (the harness appends to it).
    initdb_conf: String,
    conf_extra: String,
    /// Deleted after `Drop::drop` has stopped the server.
    _tmp: tempfile::TempDir,
}

impl PgCluster {
    /// initdb (`-U postgres -A trust --no-sync -E UTF8 --locale=C`),
    /// configure, start, wait until ready, create the fixtures.
    pub fn start() -> PgCluster {
        Self::start_with("")
    }

    /// Like [`PgCluster::start`] but with extra `postgresql.conf` lines
    /// appended after the harness's own settings (so they win), e.g. `"ssl = on"`.
    pub fn start_with(conf_extra: &str) -> PgCluster {
        match template() {
            Some(tpl) => Self::create(conf_extra, Some(tpl)),
            None => Self::create(conf_extra, None),
        }
    }

    /// Build a cluster, from the template data dir if given, else by initdb.
    fn create(conf_extra: &str, template: Option<&Path>) -> PgCluster {
        let tmp = make_temp_dir("sbpg-");
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        let progs = pg_programs();

        let initdb_conf = match template {
            Some(tpl) => {
                let out = run(Command::new("cp")
                    .arg("-a")
                    .arg(tpl.join("data"))
                    .arg(&data));
                assert!(
                    out.status.success(),
                    "copying template cluster {} failed: {}",
                    tpl.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::read_to_string(tpl.join("postgresql.conf.initdb"))
                    .expect("read template postgresql.conf.initdb")
            }
            None => {
                let out = run(server_command(&progs.initdb)
                    .current_dir(&dir)
                    .arg("-D")
                    .arg(&data)
                    .args(INITDB_ARGS));
                assert!(
                    out.status.success(),
                    "initdb failed ({}):\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::read_to_string(data.join("postgresql.conf"))
                    .expect("read postgresql.conf written by initdb")
            }
        };

        let mut cluster = PgCluster {
            port: 0,
            log_path: dir.join("postgres.log"),
            dir,
            data,
            initdb_conf,
            conf_extra: conf_extra.to_string(),
            _tmp: tmp,
        };
        std::fs::write(cluster.data.join("pg_hba.conf"), PG_HBA).expect("write pg_hba.conf");

        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = super::free_port();
            cluster.write_conf();
            match cluster.try_start() {
                Ok(()) => {
                    if template.is_none() {
                        cluster.psql("postgres", FIXTURES_SQL);
                    }
                    return cluster;
                }
                Err(log) if says_address_in_use(&log) => last_log = log,
                Err(log) => panic!(
                    "PostgreSQL failed to start in {} (port {}); server log:\n{log}",
                    cluster.dir.display(),
                    cluster.port
                ),
            }
        }
        panic!(
            "PostgreSQL could not find a free port after {PORT_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    fn write_conf(&self) {
        let conf = format!(
            "{initdb}\n\
             # ---- shardbouncer test harness ----\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             password_encryption = 'scram-sha-256'\n\
             log_min_messages = warning\n\
             shared_buffers = 32MB\n\
             # DSM segments inside the data dir, so an immediate stop cannot leak them in /dev/shm\n\
             dynamic_shared_memory_type = mmap\n\
             # ---- extra settings from the test ----\n\
             {extra}\n",
            initdb = self.initdb_conf.trim_end(),
            port = self.port,
            dir = self.dir.display(),
            extra = self.conf_extra,
        );
        std::fs::write(self.data.join("postgresql.conf"), conf).expect("write postgresql.conf");
    }

    /// `pg_ctl start -w`; on failure returns what the server logged during this attempt.
    fn try_start(&self) -> Result<(), String> {
        let log_before = std::fs::metadata(&self.log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let out = run(server_command(&pg_programs().pg_ctl)
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", "60", "-s", "start"]));
        if out.status.success() {
            return Ok(());
        }
        let log = read_lossy(&self.log_path);
        let new = log.get(log_before..).unwrap_or(&log);
        Err(format!(
            "pg_ctl start: {}\n{}{}\n{new}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> std::process::Output {
        run(server_command(&pg_programs().pg_ctl)
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "-s", "stop"]))
    }

    /// Run SQL as superuser `postgres` via psql over the unix socket
    /// (`-X -A -t -q -v ON_ERROR_STOP=1`) and return the trimmed stdout; panics
    /// with psql's stderr on failure. The SQL is fed as a script (`-f -`), so
    /// several statements each run in their own transaction (CREATE DATABASE
    /// works) and the output of every statement is returned, one row per line.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new(&pg_programs().psql)
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn psql: {e}"));
        let mut stdin = child.stdin.take().expect("psql stdin");
        let script = sql.to_string();
        // Write from a thread so a large result cannot deadlock against a large script.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
            let _ = stdin.write_all(b"\n");
        });
        let out = child.wait_with_output().expect("wait for psql");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "psql on cluster port {} db {db} failed ({}):\nSQL: {sql}\n{}",
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stop the server (`pg_ctl stop -m fast`), e.g. to simulate a dead shard.
    /// Wait (up to 10 s) until exactly `query` runs on this cluster (one
    /// backend active with that text): a query sent through the pooler has
    /// reached its server.
    pub async fn wait_running(&self, query: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE query = '{}' AND state = 'active'",
            query.replace('\'', "''")
        );
        super::eventually(
            std::time::Duration::from_secs(10),
            format!("{query} to run"),
            || async { self.psql("postgres", &sql) == "1" },
        )
        .await
    }

    pub fn stop(&self) {
        let out = self.pg_ctl_stop("fast");
        assert!(
            out.status.success(),
            "pg_ctl stop failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server again on the same port and data dir.
    pub fn restart(&self) {
        if let Err(log) = self.try_start() {
            panic!(
                "PostgreSQL failed to restart on port {}; server log:\n{log}",
                self.port
            );
        }
    }

    /// Like [`PgCluster::restart`], but returns the server log of a failed start
    /// instead of panicking (e.g. while a killed server's processes are exiting).
    pub fn try_restart(&self) -> Result<(), String> {
        self.try_start()
    }

    /// PID of the postmaster, from `postmaster.pid` (`None` when not running).
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// The postmaster and every live process it started (backends, checkpointer,
    /// walwriter, ...), postmaster first.
    pub fn server_pids(&self) -> Vec<i32> {
        let Some(pm) = self.postmaster_pid() else {
            return Vec::new();
        };
        let mut pids = vec![pm];
        pids.extend(children_of(pm));
        pids
    }

    /// Send `sig` to the postmaster and then to every process it started. With
    /// `libc::SIGSTOP` the whole server freezes (new connections wait in the
    /// listen backlog); `libc::SIGCONT` thaws it.
    pub fn signal_all(&self, sig: i32) {
        let Some(pm) = self.postmaster_pid() else {
            panic!("cluster on port {} is not running", self.port);
        };
        // The postmaster first, so it forks nothing new meanwhile.
        // SAFETY: plain kill(2) on processes of our own test cluster.
        unsafe { libc::kill(pm, sig) };
        for pid in children_of(pm) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Crash the server: SIGKILL the postmaster and all its processes at once (no
    /// shutdown, no checkpoint), wait until they are gone, and remove the stale
    /// `postmaster.pid` so that [`PgCluster::restart`] runs crash recovery.
    pub fn kill9(&self) {
        let pids = self.server_pids();
        assert!(
            !pids.is_empty(),
            "cluster on port {} is not running",
            self.port
        );
        for &pid in &pids {
            // SAFETY: plain kill(2) on processes of our own test cluster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pids.iter().any(|&p| process_alive(p)) {
            assert!(
                std::time::Instant::now() < deadline,
                "processes of cluster on port {} survived SIGKILL",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
    }

    /// tokio-postgres connection string for a direct (not pooled) TCP
    /// connection to this cluster as `user`/`password` (password left out when
    /// empty) to `db`.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        tcp_conn_str(self.port, user, password, db)
    }

    /// Connect directly to this cluster with tokio-postgres (NoTls), spawning
    /// the connection task on the current tokio runtime; panics on error.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "direct connect to cluster port {} as {user} db {db} failed: {}",
                        self.port,
                        pg_error_text(&e)
                    )
                });
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Current contents of the server log.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- PostgreSQL log (port {}, last 40 lines) ----\n{}\n---- end of PostgreSQL log ----",
                self.port,
                tail(&self.log(), 40)
            );
        }
        // Fails harmlessly when the test already stopped the server.
        let _ = self.pg_ctl_stop("immediate");
    }
}

/// A temp dir usable as a cluster dir: short path (unix socket names are
/// limited to ~107 bytes) and, when root, owned by `postgres`.
fn make_temp_dir(prefix: &str) -> tempfile::TempDir {
    let base = cluster_base_dir();
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("create temp dir in {}: {e}", base.display()));
    if is_root() {
        chown_to_postgres(tmp.path());
    }
    tmp
}

/// Where cluster dirs go: `$SHARDBOUNCER_TEST_PGDIR` if set; else `/dev/shm`
/// when it is a writable tmpfs with at least 2 GiB free (creating the ~1300
/// small files of a cluster is ~10x faster there than on a busy disk, and
/// Docker's default 64 MiB /dev/shm is skipped); else `$TMPDIR`, or `/tmp`
/// when running as root (postgres must be able to traverse the path) or when
/// `$TMPDIR` is too long for unix socket names.
fn cluster_base_dir() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        if let Some(d) = std::env::var_os("SHARDBOUNCER_TEST_PGDIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if free_bytes(Path::new("/dev/shm")).is_some_and(|b| b >= 2 << 30) {
            return PathBuf::from("/dev/shm");
        }
        let tmp = std::env::temp_dir();
        if is_root() || tmp.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            tmp
        }
    })
}

/// Bytes available to us on the filesystem holding `dir`, if it is a writable directory.
fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: c is NUL-terminated; access only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return None;
    }
    // SAFETY: statvfs writes into the zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The template cluster directory (containing `data/` and
/// `postgresql.conf.initdb`), built on first use; `None` when disabled.
fn template() -> Option<&'static Path> {
    static TEMPLATE: OnceLock<Option<PathBuf>> = OnceLock::new();
    TEMPLATE.get_or_init(build_template).as_deref()
}

fn build_template() -> Option<PathBuf> {
    if std::env::var_os("SHARDBOUNCER_TEST_NO_TEMPLATE").is_some_and(|v| !v.is_empty() && v != "0")
    {
        return None;
    }
    let progs = pg_programs();
    let version = run(Command::new(&progs.pg_ctl).arg("--version"));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        TEMPLATE_FORMAT,
        INITDB_ARGS,
        FIXTURES_SQL,
        String::from_utf8_lossy(&version.stdout).into_owned(),
        &progs.initdb,
        is_root(),
    )
        .hash(&mut h);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg-template");
    let fin = base.join(format!("{:016x}", h.finish()));
    if fin.join("READY").exists() {
        return Some(fin);
    }
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!(
            "harness: cannot create {} ({e}); not using a template",
            base.display()
        );
        return None;
    }

    // Build it the slow way, exactly as a template-less cluster is built.
    let cluster = PgCluster::create("", None);
    cluster.stop();
    let staging = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&base)
        .expect("create template staging dir");
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(&cluster.data)
        .arg(staging.path().join("data")));
    assert!(
        out.status.success(),
        "copy template data dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        staging.path().join("postgresql.conf.initdb"),
        &cluster.initdb_conf,
    )
    .expect("write postgresql.conf.initdb");
    std::fs::write(staging.path().join("READY"), "").expect("write READY");
    drop(cluster);
    // Atomic publish; if a concurrent test process won the race, use theirs.
    let staged = staging.keep();
    if std::fs::rename(&staged, &fin).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
        if !fin.join("READY").exists() {
            return None;
        }
    }
    Some(fin)
}

/// Whether `pid` is a process that has not exited (a zombie counts as exited).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        // SAFETY: kill with signal 0 only checks for existence.
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}

/// Live processes whose parent is `parent` (from /proc).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    let mut f = rest.split_whitespace();
                    let state = f.next()?;
                    let ppid: i32 = f.next()?.parse().ok()?;
                    Some(ppid == parent && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}
