//! Small helpers shared by the cluster and bouncer halves of the harness.

use std::collections::HashSet;
use std::ffi::CString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Return a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports come from just below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), never from inside it: a port inside it
/// can be taken as the local end of any outgoing connection, so a server
/// stopped and started again on the same port (a dead shard that comes back)
/// would find its port gone. Each candidate is checked by binding it, so a
/// port another process listens on is skipped; within one test process the
/// same port is never handed out twice. Where the ephemeral range leaves no
/// room (an unusual sysctl), the kernel picks the port as before.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut handed_out = handed_out.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((lo, hi)) = quiet_ports() {
        // Start at a place that differs between test processes, so two
        // harnesses running at once rarely try the same ports first.
        let span = u32::from(hi - lo) + 1;
        let start = (std::process::id().wrapping_mul(7919) + handed_out.len() as u32) % span;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A block of ports the kernel never hands out on its own: below the
/// ephemeral range when there is room there, else above it.
fn quiet_ports() -> Option<(u16, u16)> {
    const WANT: u32 = 8000;
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    if lo >= 10_000 + WANT {
        Some(((lo - WANT) as u16, (lo - 1) as u16))
    } else if hi + WANT <= 65_535 {
        Some(((hi + 1) as u16, (hi + WANT) as u16))
    } else {
        None
    }
}

/// True when the test process runs as root (PostgreSQL then has to run as `postgres`).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid/gid of the `postgres` OS user, looked up once.
pub(crate) fn postgres_ids() -> (libc::uid_t, libc::gid_t) {
    static IDS: OnceLock<(libc::uid_t, libc::gid_t)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let name = CString::new("postgres").unwrap();
        // SAFETY: getpwnam gets a valid NUL-terminated string; the returned
        // pointer is checked for NULL and only read immediately. Called once
        // (OnceLock), so the static buffer is not raced by this harness.
        unsafe {
            let pw = libc::getpwnam(name.as_ptr());
            assert!(
                !pw.is_null(),
                "running as root but there is no `postgres` OS user \
                 (PostgreSQL refuses to run as root); create it with `useradd -r postgres`"
            );
            ((*pw).pw_uid, (*pw).pw_gid)
        }
    })
}

/// chown a single path to the `postgres` user (only meaningful when root).
pub(crate) fn chown_to_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::chown(c.as_ptr(), uid, gid) };
    assert_eq!(
        rc,
        0,
        "chown {} to postgres: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `/usr/lib/postgresql/<ver>/bin` directories, highest version first.
fn versioned_pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ver: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((ver, e.path().join("bin")))
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// Locate a PostgreSQL program: first on `PATH`, then in the highest
/// `/usr/lib/postgresql/*/bin` (where Debian puts the server binaries), then in
/// `/usr/local/pgsql/bin`. Panics with a helpful message if it is nowhere.
pub(crate) fn find_pg_program(name: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(versioned_pg_bin_dirs())
        .chain(std::iter::once(PathBuf::from("/usr/local/pgsql/bin")));
    for dir in candidates {
        let p = dir.join(name);
        if is_executable(&p) {
            return p;
        }
    }
    panic!(
        "PostgreSQL program `{name}` not found on PATH nor in /usr/lib/postgresql/*/bin; \
         install PostgreSQL (e.g. `apt-get install postgresql`) or run .ci/run"
    )
}

/// Cached paths of the PostgreSQL programs the harness uses.
pub(crate) struct PgPrograms {
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
    pub psql: PathBuf,
}

/// The PostgreSQL programs, located once per process.
pub(crate) fn pg_programs() -> &'static PgPrograms {
    static PROGS: OnceLock<PgPrograms> = OnceLock::new();
    PROGS.get_or_init(|| PgPrograms {
        initdb: find_pg_program("initdb"),
        pg_ctl: find_pg_program("pg_ctl"),
        psql: find_pg_program("psql"),
    })
}

/// A command for a server-side PostgreSQL program: run directly, or through
/// `runuser -u postgres --` when we are root.
pub(crate) fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Run a command to completion with stdin closed, capturing its output.
pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
}

/// Lossy UTF-8 of a file, or a note saying why it could not be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quote a value for a libpq/tokio-postgres `key=value` connection string.
pub(crate) fn conn_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Build `host=127.0.0.1 port=.. user=.. [password=..] dbname=..`; the
/// password is left out when empty (for trust authentication).
pub(crate) fn tcp_conn_str(port: u16, user: &str, password: &str, db: &str) -> String {
    let mut s = format!("host=127.0.0.1 port={port} user={}", conn_value(user));
    if !password.is_empty() {
        s.push_str(&format!(" password={}", conn_value(password)));
    }
    s.push_str(&format!(" dbname={}", conn_value(db)));
    s
}

/// Render a tokio-postgres error with its server-side detail, if any.
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{e}: {} {} ({})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// Whether a startup log says the listen port was already taken.
pub(crate) fn says_address_in_use(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("address already in use")
        || log.contains("os error 98")
        || log.contains("could not create any TCP/IP sockets")
}

/// `cl_waiting` of database `db` in the console's SHOW POOLS, over all its
/// shards' pools (0 when it has no pool yet).
pub async fn clients_waiting(admin: &tokio_postgres::Client, db: &str) -> usize {
    let mut col = None;
    let mut waiting = 0;
    for m in admin.simple_query("SHOW POOLS").await.unwrap() {
        match m {
            tokio_postgres::SimpleQueryMessage::RowDescription(d) => {
                col = d.iter().position(|c| c.name() == "cl_waiting");
            }
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(db) => {
                waiting += r.get(col.unwrap()).unwrap().parse::<usize>().unwrap();
            }
            _ => {}
        }
    }
    waiting
}
