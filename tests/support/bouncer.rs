//! A supervised `shardbouncer` process for integration tests.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::pg::PgCluster;
use super::util::{
    pg_error_text, pg_programs, read_lossy, says_address_in_use, tail, tcp_conn_str,
};

/// How long [`Bouncer::start`] waits for the listen port to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval while waiting for the port / for exit.
const POLL: Duration = Duration::from_millis(20);
/// Fresh ports tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;

/// A running shardbouncer binary on a free port, killed on Drop (SIGKILL if it
/// had not exited), with stdout+stderr captured to `<dir>/shardbouncer.log`.
/// When dropped during a panic, the log's tail is printed to stderr (which the
/// test runner shows for the failing test).
pub struct Bouncer {
    /// The port substituted for `{PORT}` (the port clients connect to).
    pub port: u16,
    /// Path of the config file written by the harness (`<dir>/shardbouncer.toml`).
    pub config_path: PathBuf,
    /// The bouncer's own temp dir (substituted for `{DIR}`), removed on Drop.
    pub dir: PathBuf,
    log_path: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
    _tmp: tempfile::TempDir,
}

/// The contents of a file given to [`Bouncer::start_with_files`] that make
/// it a symbolic link to what follows.
pub const SYMLINK: &str = "@symlink:";

impl Bouncer {
    /// The process's resident and peak resident memory in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in {status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the process has used so far, user and system, in clock ticks
    /// (`utime` + `stime` of /proc/<pid>/stat). For telling a process that
    /// waits from one that spins, never for timing.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // Fields after the parenthesised command name: state is field 3, so
        // utime (14) and stime (15) are the 12th and 13th after it.
        let (_, rest) = stat.rsplit_once(')').expect("a stat line");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// The sizes of the spool files the process holds open (large client
    /// messages waiting to be whole; the files are unlinked, so only the
    /// process's descriptors show them).
    pub fn spool_files(&self) -> Vec<u64> {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else {
            return Vec::new();
        };
        fds.flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("shardbouncer-spool-"))
            })
            .filter_map(|fd| std::fs::metadata(fd.path()).ok().map(|m| m.len()))
            .collect()
    }

    /// Start `shardbouncer --config <dir>/shardbouncer.toml`.
    ///
    /// `config_toml` may contain `{PORT}` (replaced by a free port, which
    /// becomes [`Bouncer::port`]) and `{DIR}` (replaced by the bouncer's temp
    /// dir). Waits up to 20 s, polling a TCP connect every 20 ms, until the
    /// port accepts connections on behalf of *this* process; panics with the
    /// log if the process exits or the wait times out. If the port was taken
    /// by someone else in the meantime, retries with a fresh one.
    pub fn start(config_toml: &str) -> Bouncer {
        Self::start_with_files(config_toml, &[])
    }

    /// Like [`Bouncer::start`], but first writes `files` (name relative to the
    /// bouncer's dir, contents with the same `{PORT}`/`{DIR}` substitution)
    /// into the temp dir, e.g. a shard map referenced as `{DIR}/shardmap.toml`.
    pub fn start_with_files(config_toml: &str, files: &[(&str, &str)]) -> Bouncer {
        Self::start_inner(config_toml, files, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Like [`Bouncer::start_with_files`], but waits for the listener on
    /// `ready_ip` instead of 127.0.0.1: for a `[listen] addr` such as
    /// `"[::1]:{PORT}"` (wait on `::1`) or `"[::]:{PORT}"`.
    pub fn start_listening_on(
        ready_ip: IpAddr,
        config_toml: &str,
        files: &[(&str, &str)],
    ) -> Bouncer {
        Self::start_inner(config_toml, files, ready_ip)
    }

    /// Start a second process on this one's port (`{PORT}` is replaced by
    /// it), as the new process of a rolling restart does: its config must set
    /// `[listen] so_reuseport` (and so must this one's). Ready once the new
    /// process has a listener of its own on the port.
    pub fn start_beside(&self, config_toml: &str) -> Bouncer {
        Self::start_at(
            config_toml,
            &[],
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(self.port),
        )
    }

    fn start_inner(config_toml: &str, files: &[(&str, &str)], ready_ip: IpAddr) -> Bouncer {
        Self::start_at(config_toml, files, ready_ip, None)
    }

    fn start_at(
        config_toml: &str,
        files: &[(&str, &str)],
        ready_ip: IpAddr,
        beside: Option<u16>,
    ) -> Bouncer {
        let tmp = tempfile::Builder::new()
            .prefix("sbbouncer-")
            .tempdir()
            .expect("create bouncer temp dir");
        let dir = tmp.path().to_path_buf();
        let config_path = dir.join("shardbouncer.toml");
        let log_path = dir.join("shardbouncer.log");
        let uses_placeholder = config_toml.contains("{PORT}");

        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = if let Some(p) = beside {
                p
            } else if uses_placeholder {
                super::free_port()
            } else {
                listen_port_from_toml(config_toml).unwrap_or_else(|| {
                    panic!("config has no {{PORT}} placeholder and no [listen] addr port:\n{config_toml}")
                })
            };
            let subst = |s: &str| substitute(s, port, &dir);
            for (name, contents) in files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("create a file's directory");
                }
                // `@symlink:<target>`: a symbolic link to `target`.
                if let Some(target) = contents.strip_prefix(SYMLINK) {
                    if !path.exists() {
                        std::os::unix::fs::symlink(target, &path)
                            .unwrap_or_else(|e| panic!("symlink {name}: {e}"));
                    }
                    continue;
                }
                std::fs::write(path, subst(contents))
                    .unwrap_or_else(|e| panic!("write {name}: {e}"));
            }
            std::fs::write(&config_path, subst(&hibernating(config_toml)))
                .expect("write shardbouncer.toml");

            let log = File::create(&log_path).expect("create shardbouncer.log");
            let log2 = log.try_clone().expect("dup log fd");
            let child = Command::new(env!("CARGO_BIN_EXE_shardbouncer"))
                .arg("--config")
                .arg(&config_path)
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .expect("spawn shardbouncer");
            let mut child = child;
            // Blocks while it polls: let a multi-threaded test runtime move its tasks.
            let ready = match beside {
                Some(_) => super::wait::blocking(|| wait_own_listener(&mut child, port, &log_path)),
                None => super::wait::blocking(|| wait_ready(&mut child, ready_ip, port, &log_path)),
            };
            match ready {
                Ready::Yes => {
                    return Bouncer {
                        port,
                        config_path,
                        dir,
                        log_path,
                        child,
                        status: None,
                        _tmp: tmp,
                    }
                }
                Ready::PortTaken(log) if uses_placeholder && beside.is_none() => {
                    kill_child(&mut child);
                    last_log = log;
                }
                Ready::PortTaken(log) => {
                    kill_child(&mut child);
                    panic!("shardbouncer could not bind its fixed port {port}; log:\n{log}")
                }
                Ready::Exited(status, log) => {
                    panic!("shardbouncer exited during startup ({status}); log:\n{log}")
                }
                Ready::TimedOut(log) => {
                    kill_child(&mut child);
                    panic!(
                        "shardbouncer did not accept connections on {} within {STARTUP_TIMEOUT:?}; log:\n{log}",
                        SocketAddr::new(ready_ip, port)
                    )
                }
            }
        }
        panic!("shardbouncer: no free port after {PORT_ATTEMPTS} attempts; last log:\n{last_log}")
    }

    /// Rewrite the config file (same `{PORT}`/`{DIR}` substitution). Does not
    /// signal the process; use [`Bouncer::signal`] with `libc::SIGHUP` to reload.
    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(
            &self.config_path,
            substitute(&hibernating(config_toml), self.port, &self.dir),
        )
        .expect("rewrite shardbouncer.toml");
    }

    /// Like [`Bouncer::write_config`], but atomically: the new text goes to a temp
    /// file that is renamed over the config, so a reload never reads it half written.
    pub fn write_config_atomic(&self, config_toml: &str) {
        let tmp = self.dir.join(".shardbouncer.toml.tmp");
        std::fs::write(
            &tmp,
            substitute(&hibernating(config_toml), self.port, &self.dir),
        )
        .expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename temp config");
    }

    /// Write (or overwrite) a file in the bouncer's dir, with the same
    /// placeholder substitution; e.g. a new shard map to be hot-reloaded.
    pub fn write_file(&self, name: &str, contents: &str) {
        std::fs::write(
            self.dir.join(name),
            substitute(contents, self.port, &self.dir),
        )
        .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    /// Send a signal (e.g. `libc::SIGHUP`, `libc::SIGTERM`) to the process.
    /// Does nothing once the exit has been observed (the pid may be reused).
    pub fn signal(&self, sig: i32) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: plain syscall on our own, not yet reaped, child pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.child.id(),
            std::io::Error::last_os_error()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether this process has a listener of its own on [`Bouncer::port`]
    /// (`None`: /proc/net cannot be read here).
    pub fn listens(&self) -> Option<bool> {
        listener_owned_by(self.child.id(), self.port)
    }

    /// Wait up to `timeout` for the process to exit; returns its exit status if it did.
    /// Polls with `tokio::time::sleep`, so the test's runtime keeps running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().expect("try_wait shardbouncer") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Wait (up to 10 s) until the log contains `needle`; panics with the log if it
    /// never does.
    pub async fn wait_for_log(&self, needle: &str) {
        super::eventually_ok(Duration::from_secs(10), || async {
            let log = self.log();
            if log.contains(needle) {
                Ok(())
            } else {
                Err(format!("no {needle:?} in log:\n{log}"))
            }
        })
        .await
    }

    /// Current contents of the log (stdout+stderr).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Connection string for tokio-postgres:
    /// `host=127.0.0.1 port=<port> user=.. password=.. dbname=..` (password
    /// left out when empty).
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        tcp_conn_str(self.port, user, password, db)
    }

    /// Connect through the bouncer with tokio-postgres (NoTls), spawning the
    /// connection task on the current runtime; panics (with the log tail) on error.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        match self.try_connect(user, password, db).await {
            Ok(c) => c,
            Err(e) => panic!(
                "connect through shardbouncer (port {}) as {user} db {db} failed: {}\n---- shardbouncer log tail ----\n{}",
                self.port,
                pg_error_text(&e),
                tail(&self.log(), 40)
            ),
        }
    }

    /// Connect as `app`/`secret` to database `app`, keeping the connection's
    /// task, to await the pooler closing it.
    pub async fn connect_watched(
        &self,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let (c, conn) = tokio_postgres::connect(
            &self.conn_str("app", "secret", "app"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        (c, tokio::spawn(conn))
    }

    /// Like [`Bouncer::connect`] but returns the error, for tests that expect failure.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Run psql through the bouncer (`PGPASSWORD`, `-h 127.0.0.1 -p <port> -U
    /// user -d db -X -A -t -q -v ON_ERROR_STOP=1 -c sql`). Returns the Output
    /// without judging it, so tests can assert on errors.
    pub fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        let mut cmd = Command::new(&pg_programs().psql);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", db])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null());
        if password.is_empty() {
            cmd.env_remove("PGPASSWORD");
        } else {
            cmd.env("PGPASSWORD", password);
        }
        cmd.output().unwrap_or_else(|e| panic!("spawn psql: {e}"))
    }

    /// psql reading its commands from a pipe (stdin and stdout piped), with
    /// unaligned, tuples-only output.
    pub fn psql_session(&self, user: &str, db: &str) -> std::process::Child {
        Command::new(&pg_programs().psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", db])
            .args(["-X", "-A", "-t", "-q"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn psql: {e}"))
    }

    fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill(); // SIGKILL
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- shardbouncer log (port {}, last 60 lines) ----\n{}\n---- end of shardbouncer log ----",
                self.port,
                tail(&self.log(), 60)
            );
        }
        self.kill();
    }
}

/// Poll until `child` accepts TCP connections on `ip`:`port`, exits, or times out.
fn wait_ready(child: &mut Child, ip: IpAddr, port: u16, log_path: &Path) -> Ready {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let addr = SocketAddr::new(ip, port);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait shardbouncer") {
            let log = read_lossy(log_path);
            return if says_address_in_use(&log) {
                Ready::PortTaken(log)
            } else {
                Ready::Exited(status, log)
            };
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return match listener_owned_by(child.id(), port) {
                Some(false) => Ready::PortTaken(format!(
                    "port {port} is held by another process\n{}",
                    read_lossy(log_path)
                )),
                Some(true) | None => Ready::Yes,
            };
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut(read_lossy(log_path));
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_ready`] for a process that shares its port with another: ready once
/// it has a listener of its own there.
fn wait_own_listener(child: &mut Child, port: u16, log_path: &Path) -> Ready {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait shardbouncer") {
            return Ready::Exited(status, read_lossy(log_path));
        }
        if listener_owned_by(child.id(), port) == Some(true) {
            return Ready::Yes;
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut(read_lossy(log_path));
        }
        std::thread::sleep(POLL);
    }
}

fn kill_child(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// Outcome of waiting for a freshly spawned bouncer.
enum Ready {
    Yes,
    PortTaken(String),
    Exited(ExitStatus, String),
    TimedOut(String),
}

/// How long an idle client waits in its task before it sleeps in its worker's
/// dormitory, in every test bouncer (the product's default is 1 s): the whole
/// suite then runs with clients going to sleep and waking between
/// transactions. A config that sets `client_hibernate_after` keeps its own.
pub const TEST_HIBERNATE_AFTER: &str = "10ms";

/// `config_toml` with [`TEST_HIBERNATE_AFTER`] in its `[limits]` table.
fn hibernating(config_toml: &str) -> String {
    if config_toml.contains("client_hibernate_after") {
        return config_toml.to_string();
    }
    let line = format!("client_hibernate_after = \"{TEST_HIBERNATE_AFTER}\"");
    let mut out = String::with_capacity(config_toml.len() + 64);
    let mut done = false;
    for l in config_toml.lines() {
        out.push_str(l);
        out.push('\n');
        if !done && l.trim_start().starts_with("[limits]") {
            out.push_str(&line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        out.push_str("\n[limits]\n");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn substitute(s: &str, port: u16, dir: &Path) -> String {
    s.replace("{PORT}", &port.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

/// The port of `addr = "host:port"` in the `[listen]` table, for configs
/// written without the `{PORT}` placeholder.
fn listen_port_from_toml(toml: &str) -> Option<u16> {
    let mut in_listen = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_listen = line == "[listen]";
            continue;
        }
        if in_listen {
            if let Some(rest) = line.strip_prefix("addr") {
                let value = rest.trim_start().strip_prefix('=')?.trim();
                let value = value.split('#').next()?.trim().trim_matches('"');
                return value.rsplit(':').next()?.parse().ok();
            }
        }
    }
    None
}

/// Whether the TCP socket listening on `port` belongs to process `pid`
/// (`None` when /proc cannot tell, e.g. not on Linux). This guards against
/// mistaking someone else's listener on a port we lost a race for as our bouncer.
fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if !readable {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| Path::new(i) == target))
            .unwrap_or(false)
    }))
}

/// The TOML array body of `shards = [ ... ]` for clusters named s0, s1, ...
pub fn shard_list<'a>(clusters: impl Iterator<Item = &'a PgCluster>) -> String {
    clusters
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{{ name = \"s{i}\", host = \"127.0.0.1\", port = {} }}",
                c.port
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A config for database `app` routed by `tenant_id` over `clusters` (shards
/// `s0`, `s1`, ...) with the shard map `{DIR}/shardmap.toml`, listening on
/// `127.0.0.1:{PORT}`, SCRAM users `app`/`secret` and `admin`/`admin` (the
/// console). `pool` holds the `[pool]` table's lines; `extra` is appended at
/// the end, so it may add keys to `[databases.app.routing]` or start new tables.
pub fn routed_config<'a>(
    clusters: impl Iterator<Item = &'a PgCluster>,
    pool: &str,
    extra: &str,
) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:{{PORT}}"
[pool]
{pool}
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
shards = [ {} ]
[databases.app.routing]
key = "tenant_id"
shard_map = "{{DIR}}/shardmap.toml"
{extra}
"#,
        shard_list(clusters)
    )
}

/// A config for one database `app` over `clusters` (one shard per cluster,
/// named `s0`, `s1`, ...), listening on `127.0.0.1:{PORT}`, transaction
/// pooling with `default_pool_size = 5`, SCRAM client auth for `app`/`secret`.
/// `pool_extra` is extra TOML lines for the `[pool]` table; a key given there
/// replaces the harness default of the same name (`mode`, `default_pool_size`).
pub fn basic_config(clusters: &[&PgCluster], pool_extra: &str) -> String {
    let extra_keys: Vec<&str> = pool_extra
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut pool = String::new();
    for (key, line) in [
        ("mode", "mode = \"transaction\""),
        ("default_pool_size", "default_pool_size = 5"),
    ] {
        if !extra_keys.contains(&key) {
            pool.push_str(line);
            pool.push('\n');
        }
    }
    pool.push_str(pool_extra.trim());
    let shards = shard_list(clusters.iter().copied());
    format!(
        "[listen]\n\
         addr = \"127.0.0.1:{{PORT}}\"\n\
         \n\
         [pool]\n\
         {pool}\n\
         \n\
         [auth]\n\
         type = \"scram-sha-256\"\n\
         \n\
         [[users]]\n\
         name = \"{user}\"\n\
         password = \"{password}\"\n\
         \n\
         [databases.app]\n\
         dbname = \"app\"\n\
         server_user = \"{user}\"\n\
         server_password = \"{password}\"\n\
         shards = [ {shards} ]\n",
        user = super::APP_USER,
        password = super::APP_PASSWORD,
        shards = shards,
    )
}
