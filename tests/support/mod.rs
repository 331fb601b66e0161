//! Minimal integration-test harness: a throwaway real PostgreSQL cluster
//! ([`PgCluster`]) and a real shardbouncer process ([`Bouncer`]).
//!
//! Placeholder with the same API as the project's shared harness, so the console
//! and metrics tests can run on this branch; it is meant to be replaced by that
//! harness when the branches merge.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Role owning database `app`.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "secret";

const FIXTURES: &str = "CREATE ROLE app LOGIN PASSWORD 'secret';\nCREATE DATABASE app OWNER app;\n";
const PG_HBA: &str = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

/// A free TCP port on 127.0.0.1 (released before returning; a race is possible).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn pg_bin(name: &str) -> PathBuf {
    for dir in [
        "/usr/local/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/lib/postgresql/15/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Run a server program as the `postgres` OS user when we are root (initdb refuses root).
fn as_postgres(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

/// A throwaway PostgreSQL cluster, stopped and deleted on Drop.
pub struct PgCluster {
    /// TCP port (127.0.0.1).
    pub port: u16,
    /// Temp dir holding `data/`, the log and the unix socket.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl PgCluster {
    /// initdb, start, create role `app`/`secret` (SCRAM) and database `app`.
    pub fn start() -> PgCluster {
        let tmp = tempfile::Builder::new()
            .prefix("sbpg-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown {} failed", dir.display());
        }
        let data = dir.join("data");
        let out = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(data.join("pg_hba.conf"), PG_HBA).expect("pg_hba.conf");
        for _ in 0..8 {
            let port = free_port();
            let conf = format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
                 max_connections = 100\nfsync = off\nsynchronous_commit = off\n\
                 password_encryption = 'scram-sha-256'\nshared_buffers = 16MB\n",
                dir.display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).expect("auto.conf");
            let st = as_postgres(&pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "30", "start"])
                .stdout(Stdio::null())
                .status()
                .expect("pg_ctl start");
            if st.success() {
                let c = PgCluster {
                    port,
                    dir,
                    _tmp: tmp,
                };
                c.psql("postgres", FIXTURES);
                return c;
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
    }

    /// Run SQL as superuser over the unix socket; panics on error, returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running shardbouncer, killed on Drop; output goes to `<dir>/shardbouncer.log`.
pub struct Bouncer {
    /// Listen port (substituted for `{PORT}`).
    pub port: u16,
    /// The config file.
    pub config_path: PathBuf,
    /// Its temp dir.
    pub dir: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
    _tmp: tempfile::TempDir,
}

impl Bouncer {
    /// Write the config (`{PORT}` = a free port), start the binary, wait until the port accepts.
    pub fn start(config_toml: &str) -> Bouncer {
        let tmp = tempfile::Builder::new()
            .prefix("sbb-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        let config_path = dir.join("shardbouncer.toml");
        std::fs::write(
            &config_path,
            config_toml.replace("{PORT}", &port.to_string()),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("shardbouncer.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shardbouncer"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn shardbouncer");
        let mut b = Bouncer {
            port,
            config_path,
            dir,
            child,
            status: None,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(s) = b.child.try_wait().expect("try_wait") {
                panic!("shardbouncer exited at startup ({s}):\n{}", b.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "shardbouncer did not listen:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rewrite the config file (same `{PORT}` substitution); does not reload.
    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(
            &self.config_path,
            config_toml.replace("{PORT}", &self.port.to_string()),
        )
        .expect("rewrite config");
    }

    /// tokio-postgres connection string.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=10",
            self.port
        )
    }

    /// Connect with tokio-postgres (NoTls), driving the connection on the current runtime.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        match self.try_connect(user, password, db).await {
            Ok(c) => c,
            Err(e) => panic!("connect as {user} to {db} failed: {e:?}\n{}", self.log()),
        }
    }

    /// Like [`Bouncer::connect`] but returns the error.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (c, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(c)
    }

    /// psql through the bouncer (`-X -A -t -q -v ON_ERROR_STOP=1 -c sql`).
    pub fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
            ])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("spawn psql")
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// Wait up to `t` for the process to exit.
    pub fn wait_exit(&mut self, t: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shardbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- shardbouncer log ----\n{}", self.log());
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One database `app` with a shard per cluster (`s0`, `s1`, ...), transaction
/// pooling, `default_pool_size = 5`, SCRAM auth for `app`/`secret`; `pool_extra`
/// lines go into `[pool]` and replace the defaults of the same key.
pub fn basic_config(clusters: &[&PgCluster], pool_extra: &str) -> String {
    let keys: Vec<&str> = pool_extra
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut pool = String::new();
    for (k, line) in [
        ("mode", "mode = \"transaction\""),
        ("default_pool_size", "default_pool_size = 5"),
    ] {
        if !keys.contains(&k) {
            pool.push_str(line);
            pool.push('\n');
        }
    }
    pool.push_str(pool_extra.trim());
    let shards: Vec<String> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{{ name = \"s{i}\", host = \"127.0.0.1\", port = {} }}",
                c.port
            )
        })
        .collect();
    format!(
        "[listen]\naddr = \"127.0.0.1:{{PORT}}\"\n\n[pool]\n{pool}\n\n[auth]\ntype = \"scram-sha-256\"\n\n\
         [[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\n\
         [databases.app]\ndbname = \"app\"\nserver_user = \"{APP_USER}\"\nserver_password = \"{APP_PASSWORD}\"\n\
         shards = [ {} ]\n",
        shards.join(", ")
    )
}
