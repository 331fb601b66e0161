//! The fault suite: real Postgres shards, loopback only, bounded in time.
//!
//! Each test runs load through shardbouncer on a routed database over two shards
//! (a few tokio tasks per shard, each its own client and tenant, running short
//! transactions that insert one acknowledged row each, half of them through the
//! simple protocol and half through prepared statements) while a fault hits
//! shard `s1`:
//!
//! * the whole server is killed with SIGKILL and restarted (crash recovery);
//! * the whole server is frozen with SIGSTOP, then thawed with SIGCONT;
//! * its backends are terminated with `pg_terminate_backend` from a direct
//!   connection;
//! * (not a shard fault) SIGHUP and RELOAD are sent again and again, with a
//!   changing pool size;
//! * clients vanish (the socket reset, no Terminate) mid-pipeline, mid-COPY and
//!   mid-result.
//!
//! Asserted every time: no transaction of a tenant on the unaffected shard fails;
//! every failure on the affected shard reached its client as an error with a
//! connection-class SQLSTATE (08xxx, or 57Pxx as Postgres sends it); every
//! acknowledged write is in the shard afterwards; the pools refill to their size
//! with live servers (SHOW POOLS / SHOW SERVERS against the shard's own
//! `pg_stat_activity`).
//!
//! Every scenario runs twice: in plaintext, and with TLS on both sides (`_over_tls`):
//! clients (tokio-postgres with rustls, the raw vanishing clients with rustls) reach
//! shardbouncer with `client_mode = "require"`, and shardbouncer reaches the shards,
//! which run with `ssl = on`, with `server_mode = "verify-full"`. Then it is also
//! asserted that every client connection completed a TLS handshake, that a plaintext
//! login is refused, and that every server connection in the refilled pools is
//! encrypted (the shards' own `pg_stat_ssl`, and `pg_stat_ssl` of `pg_backend_pid()`
//! through shardbouncer).

mod support;

use shardbouncer::router::{ShardMap, TenantKey};
use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::raw::{read_msg, tags, Msg};
use support::{eventually, eventually_ok, Bouncer, PgCluster};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Workers (clients) per shard.
const WORKERS: usize = 3;
/// `default_pool_size`, `min_pool_size` of the shard pools.
const POOL: usize = 3;
const MIN_POOL: usize = 2;
/// Longest wait for one condition.
const WAIT: Duration = Duration::from_secs(30);

const MAP: &str = "version = 1\nmethod = \"citus\"\n";

/// Acknowledged writes need a durable commit: the harness turns it off for speed.
const PG_CONF: &str = "synchronous_commit = on";

/// Whether clients reach shardbouncer, and shardbouncer reaches the shards, over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    Off,
    On,
}

/// A CA and a certificate for `localhost` / `127.0.0.1` signed by it, as PEM files,
/// used by the shards and by shardbouncer alike (as in tests/tls.rs).
struct Certs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Certs {
    /// Generate into a fresh dir readable by the `postgres` user (Postgres needs the
    /// key owned by itself with mode 0600 when we run as root).
    fn new() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let tmp = tempfile::Builder::new()
            .prefix("sbcerts-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().to_path_buf();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shardbouncer faults test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        let key_path = dir.join("server.key");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let st = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&key_path)
                .status()
                .unwrap();
            assert!(st.success());
        }
        Certs { dir, _tmp: tmp }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// postgresql.conf lines enabling TLS with these files.
    fn pg_conf(&self) -> String {
        format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// `[tls]`: clients must use TLS, and the shards' certificates are verified
    /// against the CA and the shard host (127.0.0.1).
    fn bouncer_conf(&self) -> String {
        format!(
            "[tls]\nclient_mode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\n\
             server_mode = \"verify-full\"\nserver_ca = \"{}\"\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem")
        )
    }

    /// A client config trusting only the test CA.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(self.dir.join("ca.pem")).unwrap()
        {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

/// How the test's tokio-postgres clients reach shardbouncer.
#[derive(Clone)]
enum Connector {
    Plain,
    /// TLS with `sslmode=require`, the certificate verified against the test CA.
    Tls(CountingTls),
}

impl Connector {
    /// TLS handshakes completed through this connector (and its clones).
    fn handshakes(&self) -> usize {
        match self {
            Connector::Plain => 0,
            Connector::Tls(t) => t.done.load(Ordering::Relaxed),
        }
    }
}

/// tokio-postgres-rustls, counting the TLS handshakes that completed: a client
/// connection that completed no handshake was not encrypted.
#[derive(Clone)]
struct CountingTls {
    inner: MakeRustlsConnect,
    done: Arc<AtomicUsize>,
}

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;

struct CountingConnect {
    inner: RustlsConnect,
    done: Arc<AtomicUsize>,
}

impl MakeTlsConnect<Socket> for CountingTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = CountingConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<CountingConnect, Self::Error> {
        Ok(CountingConnect {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, domain)?,
            done: self.done.clone(),
        })
    }
}

impl TlsConnect<Socket> for CountingConnect {
    type Stream = <RustlsConnect as TlsConnect<Socket>>::Stream;
    type Error = <RustlsConnect as TlsConnect<Socket>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let s = self.inner.connect(stream).await?;
            self.done.fetch_add(1, Ordering::Relaxed);
            Ok(s)
        })
    }
}

fn config(shards: &[PgCluster], auth: &str, pool_size: usize, certs: Option<&Certs>) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:{{PORT}}"
[pool]
default_pool_size = {pool_size}
min_pool_size = {MIN_POOL}
server_connect_timeout = "5s"
query_wait_timeout = "20s"
[auth]
type = "{auth}"
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
shard_map = "{{DIR}}/shardmap.toml"
{}"#,
        support::shard_list(shards.iter()),
        certs.map(Certs::bouncer_conf).unwrap_or_default()
    )
}

struct Fixture {
    shards: Vec<PgCluster>,
    bouncer: Bouncer,
    /// `WORKERS` tenants per shard, each living on that shard.
    tenants: Vec<Vec<String>>,
    /// With TLS on both sides: the certificates of the shards and of shardbouncer.
    certs: Option<Certs>,
}

impl Fixture {
    fn start(auth: &str, tls: Tls) -> Fixture {
        let certs = (tls == Tls::On).then(Certs::new);
        let pg_conf = match &certs {
            Some(c) => format!("{PG_CONF}\n{}", c.pg_conf()),
            None => PG_CONF.to_string(),
        };
        let shards: Vec<PgCluster> = (0..2).map(|_| PgCluster::start_with(&pg_conf)).collect();
        for c in &shards {
            c.psql(
                "app",
                "CREATE TABLE acks (tenant text NOT NULL, worker int NOT NULL, seq int NOT NULL, \
                 PRIMARY KEY (worker, seq));\n\
                 CREATE TABLE copied (tenant text, v int);\n\
                 GRANT ALL ON acks, copied TO app;",
            );
        }
        let map = ShardMap::parse(MAP, &["s0".to_string(), "s1".to_string()]).unwrap();
        let mut tenants = vec![Vec::new(), Vec::new()];
        for t in (1..1000).map(|i| format!("t{i}")) {
            let s = map
                .route(&TenantKey::new(t.as_bytes()).unwrap())
                .unwrap()
                .shard;
            if tenants[s].len() < WORKERS {
                tenants[s].push(t);
            }
        }
        let bouncer = Bouncer::start_with_files(
            &config(&shards, auth, POOL, certs.as_ref()),
            &[("shardmap.toml", MAP)],
        );
        Fixture {
            shards,
            bouncer,
            tenants,
            certs,
        }
    }

    fn config(&self, auth: &str, pool_size: usize) -> String {
        config(&self.shards, auth, pool_size, self.certs.as_ref())
    }

    /// `sslmode=require` with TLS: the client gives up rather than go plaintext.
    fn sslmode(&self) -> &'static str {
        match self.certs {
            Some(_) => " sslmode=require",
            None => "",
        }
    }

    fn conn_str(&self, tenant: &str) -> String {
        format!(
            "{} options='-c tenant_id={tenant}' connect_timeout=10{}",
            self.bouncer.conn_str("app", "secret", "app"),
            self.sslmode()
        )
    }

    /// A new connector (with its own handshake count).
    fn connector(&self) -> Connector {
        match &self.certs {
            None => Connector::Plain,
            Some(c) => Connector::Tls(CountingTls {
                inner: MakeRustlsConnect::new((*c.client_config()).clone()),
                done: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    async fn admin(&self) -> Client {
        let conn_str = format!(
            "{}{}",
            self.bouncer.conn_str("admin", "admin", "pgbouncer"),
            self.sslmode()
        );
        match connect(&conn_str, &self.connector()).await {
            Ok(c) => c.client,
            Err(e) => panic!("admin console: {e:?}"),
        }
    }

    /// Start `WORKERS` workers per shard.
    fn load(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let mut commits = Vec::new();
        for (shard, tenants) in self.tenants.iter().enumerate() {
            for (i, tenant) in tenants.iter().enumerate() {
                let id = (shard * WORKERS + i) as i32;
                let n = Arc::new(AtomicUsize::new(0));
                commits.push(n.clone());
                workers.push(tokio::spawn(worker(Worker {
                    conn_str: self.conn_str(tenant),
                    connector: self.connector(),
                    tenant: tenant.clone(),
                    shard,
                    id,
                    extended: i % 2 == 1,
                    stop: stop.clone(),
                    commits: n,
                })));
            }
        }
        Load {
            stop,
            workers,
            commits,
        }
    }
}

struct Worker {
    conn_str: String,
    connector: Connector,
    tenant: String,
    shard: usize,
    id: i32,
    /// Prepared statements (Parse/Bind/Execute) instead of simple queries.
    extended: bool,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Report {
    shard: usize,
    id: i32,
    acked: Vec<i32>,
    /// Every failed transaction or connection attempt: (SQLSTATE, message).
    failures: Vec<(Option<String>, String)>,
    /// Failures that did not reach the client as a connection-class error.
    unclear: Vec<String>,
    /// Connections established, and TLS handshakes completed (0 in plaintext).
    connects: usize,
    handshakes: usize,
}

struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Report>>,
    /// Commits per worker, shard 0's workers first.
    commits: Vec<Arc<AtomicUsize>>,
}

impl Load {
    fn snapshot(&self) -> Vec<usize> {
        self.commits
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Wait until every worker (of `shards`) committed `n` more transactions than
    /// in `since`.
    async fn progress(&self, since: &[usize], n: usize, shards: &[usize], what: &str) {
        eventually_ok(WAIT, || async {
            let now = self.snapshot();
            let behind: Vec<_> = (0..now.len())
                .filter(|i| shards.contains(&(i / WORKERS)) && now[*i] < since[*i] + n)
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("{what}: workers {behind:?} stalled at {now:?}"))
            }
        })
        .await
    }

    async fn stop(self) -> Vec<Report> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for w in self.workers {
            out.push(
                tokio::time::timeout(WAIT, w)
                    .await
                    .expect("a worker hung")
                    .expect("a worker panicked"),
            );
        }
        out
    }
}

/// A connection-class error: the client was told its connection or transaction
/// is gone (08xxx), or Postgres's own shutdown/termination codes (57Pxx).
fn clear_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

/// A client and its connection task, whose result says why the connection ended.
struct Conn {
    client: Client,
    task: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    /// The extended workers' statements, prepared once per connection and kept:
    /// tokio-postgres closes a dropped statement with a request whose answer it
    /// ignores, and a FATAL answering that request would reach nobody.
    statements: Option<(tokio_postgres::Statement, tokio_postgres::Statement)>,
}

async fn connect(conn_str: &str, connector: &Connector) -> Result<Conn, tokio_postgres::Error> {
    let (client, task) = match connector {
        Connector::Plain => {
            let (client, conn) = tokio_postgres::connect(conn_str, NoTls).await?;
            (client, tokio::spawn(conn))
        }
        Connector::Tls(tls) => {
            let (client, conn) = tokio_postgres::connect(conn_str, tls.clone()).await?;
            (client, tokio::spawn(conn))
        }
    };
    Ok(Conn {
        client,
        task,
        statements: None,
    })
}

impl Conn {
    /// The SQLSTATE the connection ended with. An ErrorResponse that arrives while
    /// no request is pending (a FATAL sent to a client idle in a transaction, as
    /// Postgres itself sends it) ends the connection task with that error, and the
    /// next request only sees "connection closed".
    async fn end_code(&mut self) -> Option<String> {
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(Err(e))) => e.code().map(|c| c.code().to_string()),
            _ => None,
        }
    }
}

async fn transaction(c: &mut Conn, w: &Worker, seq: i32) -> Result<(), tokio_postgres::Error> {
    if w.extended {
        if c.statements.is_none() {
            let insert = c
                .client
                .prepare("INSERT INTO acks (tenant, worker, seq) VALUES ($1, $2, $3)")
                .await?;
            let count = c
                .client
                .prepare("SELECT count(*) FROM acks WHERE worker = $1")
                .await?;
            c.statements = Some((insert, count));
        }
        let (insert, count) = c.statements.clone().expect("prepared");
        let tx = c.client.transaction().await?;
        tx.execute(&insert, &[&w.tenant, &w.id, &seq]).await?;
        tx.query_one(&count, &[&w.id]).await?;
        tx.commit().await
    } else {
        let c = &c.client;
        c.simple_query("BEGIN").await?;
        c.simple_query(&format!(
            "INSERT INTO acks (tenant, worker, seq) VALUES ('{}', {}, {seq})",
            w.tenant, w.id
        ))
        .await?;
        c.simple_query(&format!(
            "SELECT count(*) FROM acks WHERE worker = {}",
            w.id
        ))
        .await?;
        c.simple_query("COMMIT").await?;
        Ok(())
    }
}

async fn worker(w: Worker) -> Report {
    let mut r = Report {
        shard: w.shard,
        id: w.id,
        acked: Vec::new(),
        failures: Vec::new(),
        unclear: Vec::new(),
        connects: 0,
        handshakes: 0,
    };
    let mut conn: Option<Conn> = None;
    // Whether this connection already delivered a connection-class error: a
    // later "connection closed" on it is the same failure, already told.
    let mut told = false;
    let mut seq = 0;
    while !w.stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            told = false;
            match tokio::time::timeout(WAIT, connect(&w.conn_str, &w.connector)).await {
                Ok(Ok(c)) => {
                    r.connects += 1;
                    conn = Some(c);
                }
                Ok(Err(e)) => {
                    let code = e.code().map(|c| c.code().to_string());
                    if !code.as_deref().is_some_and(clear_code) {
                        r.unclear.push(format!("connect: {e:?}"));
                    }
                    r.failures.push((code, e.to_string()));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(_) => {
                    r.unclear.push("connect timed out".into());
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        seq += 1;
        match tokio::time::timeout(WAIT, transaction(c, &w, seq)).await {
            Ok(Ok(())) => {
                r.acked.push(seq);
                w.commits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                let mut code = e.code().map(|c| c.code().to_string());
                if code.is_none() && !told && e.is_closed() {
                    code = c.end_code().await;
                }
                match code.as_deref() {
                    Some(c) if clear_code(c) => told = true,
                    None if told => {}
                    _ => r
                        .unclear
                        .push(format!("transaction {seq}: {e:?} ({code:?})")),
                }
                r.failures.push((code, format!("{e:?}")));
                if c.client.is_closed() {
                    conn = None;
                } else {
                    let _ = c.client.simple_query("ROLLBACK").await;
                }
            }
            Err(_) => {
                r.unclear.push(format!("transaction {seq} timed out"));
                conn = None;
            }
        }
    }
    r.handshakes = w.connector.handshakes();
    r
}

/// Check the reports: nothing failed on `healthy` shards, every failure elsewhere
/// was told clearly, and every acknowledged row is in its shard.
fn check_reports(f: &Fixture, reports: &[Report], healthy: &[usize]) -> usize {
    let mut affected_failures = 0;
    for r in reports {
        assert!(
            r.unclear.is_empty(),
            "worker {} (shard s{}): {:?}",
            r.id,
            r.shard,
            r.unclear
        );
        if healthy.contains(&r.shard) {
            assert!(
                r.failures.is_empty(),
                "worker {} on the unaffected shard s{} failed: {:?}",
                r.id,
                r.shard,
                r.failures
            );
        } else {
            affected_failures += r.failures.len();
        }
        assert!(!r.acked.is_empty(), "worker {} committed nothing", r.id);
        if f.certs.is_some() {
            // sslmode=require: a client connection without a handshake would be plaintext.
            assert!(
                r.connects > 0 && r.handshakes >= r.connects,
                "worker {} (s{}): {} connections but {} TLS handshakes",
                r.id,
                r.shard,
                r.connects,
                r.handshakes
            );
        }
        let rows = f.shards[r.shard].psql(
            "app",
            &format!("SELECT seq FROM acks WHERE worker = {} ORDER BY seq", r.id),
        );
        let present: BTreeSet<i32> = rows.lines().map(|l| l.parse().unwrap()).collect();
        let missing: Vec<_> = r.acked.iter().filter(|s| !present.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "worker {} (s{}): acknowledged writes missing: {missing:?}",
            r.id,
            r.shard
        );
    }
    affected_failures
}

/// Rows of a console SHOW command as (column name -> value) maps.
async fn show(admin: &Client, what: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut out = Vec::new();
    for m in admin.simple_query(what).await.expect(what) {
        if let SimpleQueryMessage::Row(r) = m {
            let mut row = std::collections::HashMap::new();
            for (i, c) in r.columns().iter().enumerate() {
                row.insert(c.name().to_string(), r.get(i).unwrap_or("").to_string());
            }
            out.push(row);
        }
    }
    out
}

/// Wait until each shard's pool holds at least `min_pool_size` servers, at most
/// `max`, and every server SHOW SERVERS lists for it is a live backend of that
/// shard (no server of a killed or terminated backend left behind).
async fn pools_refilled(f: &Fixture, max: usize) {
    let admin = f.admin().await;
    eventually_ok(WAIT, || async {
        let pools = show(&admin, "SHOW POOLS").await;
        let servers = show(&admin, "SHOW SERVERS").await;
        for (i, shard) in f.shards.iter().enumerate() {
            let name = format!("s{i}");
            let Some(p) = pools
                .iter()
                .find(|p| p["database"] == "app" && p["shard"] == name)
            else {
                return Err(format!("no pool for {name}: {pools:?}"));
            };
            let n: usize = ["sv_active", "sv_idle", "sv_login"]
                .iter()
                .map(|k| p[*k].parse::<usize>().unwrap())
                .sum();
            if n < MIN_POOL || n > max {
                return Err(format!("pool {name} holds {n} servers: {p:?}"));
            }
            let live: BTreeSet<String> = shard
                .psql(
                    "postgres",
                    "SELECT pid FROM pg_stat_activity WHERE usename = 'app'",
                )
                .lines()
                .map(str::to_string)
                .collect();
            let listed: Vec<&String> = servers
                .iter()
                .filter(|s| s["port"] == shard.port.to_string())
                .map(|s| &s["remote_pid"])
                .collect();
            if listed.len() < MIN_POOL {
                return Err(format!("{name}: SHOW SERVERS lists {listed:?}"));
            }
            if let Some(dead) = listed.iter().find(|p| !live.contains(**p)) {
                return Err(format!(
                    "{name}: server with backend pid {dead} is not a live backend ({live:?})"
                ));
            }
        }
        Ok(())
    })
    .await;
    if f.certs.is_some() {
        tls_everywhere(f).await;
    }
}

/// With TLS on both sides: a plaintext login is refused, every server connection
/// shardbouncer holds is encrypted (each shard's own `pg_stat_ssl`), and a query of
/// each shard's tenant through shardbouncer runs on an encrypted backend of that
/// shard, over a client connection that completed a TLS handshake.
async fn tls_everywhere(f: &Fixture) {
    let plain = format!(
        "{} options='-c tenant_id={}'",
        f.bouncer.conn_str("app", "secret", "app"),
        f.tenants[0][0]
    );
    match connect(&plain, &Connector::Plain).await {
        Ok(_) => panic!("a plaintext client logged in with client_mode = \"require\""),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("plaintext login: {e:?}"));
            assert_eq!(db.code().code(), "28000", "{e:?}");
            assert!(db.message().contains("SSL required"), "{e:?}");
        }
    }
    for (i, shard) in f.shards.iter().enumerate() {
        let counts = shard.psql(
            "postgres",
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app'",
        );
        let (all, tls) = counts.split_once('|').expect("two columns");
        assert!(
            all.parse::<usize>().unwrap() >= MIN_POOL && tls == all,
            "s{i}: {tls} of {all} server connections use TLS"
        );
        let connector = f.connector();
        let c = connect(&f.conn_str(&f.tenants[i][0]), &connector)
            .await
            .unwrap_or_else(|e| panic!("connect as a tenant of s{i}: {e:?}"));
        assert_eq!(
            connector.handshakes(),
            1,
            "no TLS handshake toward shardbouncer"
        );
        let row = c
            .client
            .query_one(
                "SELECT ssl, current_setting('port') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl through shardbouncer");
        assert!(
            row.get::<_, bool>(0),
            "s{i}: the server connection is not TLS"
        );
        assert_eq!(
            row.get::<_, String>(1),
            shard.port.to_string(),
            "tenant of s{i}"
        );
    }
}

/// Load, fault on s1 (`fault` gets the running load), recovery, checks. Returns
/// the failures seen on s1.
async fn under_load(f: &Fixture, fault: impl AsyncFnOnce(&Load)) -> usize {
    let load = f.load();
    let start = vec![0; 2 * WORKERS];
    load.progress(&start, 3, &[0, 1], "warm-up").await;
    fault(&load).await;
    // Both shards make progress again, every worker of each.
    let after = load.snapshot();
    load.progress(&after, 5, &[0, 1], "after the fault").await;
    let reports = load.stop().await;
    let failures = check_reports(f, &reports, &[0]);
    pools_refilled(f, POOL).await;
    failures
}

/// A shard killed with SIGKILL and restarted while both shards are under load.
async fn shard_killed(tls: Tls) {
    let f = Fixture::start("scram-sha-256", tls);
    let s1 = &f.shards[1];
    let failures = under_load(&f, async |load: &Load| {
        support::blocking(|| s1.kill9());
        // s0's tenants keep committing while s1 is down.
        let down = load.snapshot();
        load.progress(&down, 3, &[0], "s0 while s1 is down").await;
        assert!(s1.postmaster_pid().is_none(), "s1 came back by itself");
        eventually(WAIT, "restart after SIGKILL", || async {
            support::blocking(|| s1.try_restart()).is_ok()
        })
        .await;
    })
    .await;
    // Transactions in flight on s1 when it died were told (08006/57P0x, checked
    // per failure in check_reports).
    eprintln!("s1 failures during the crash ({tls:?}): {failures}");
    let log = f.bouncer.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_killed_with_sigkill_and_restarted() {
    shard_killed(Tls::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_killed_with_sigkill_and_restarted_over_tls() {
    shard_killed(Tls::On).await;
}

/// A shard frozen with SIGSTOP, then thawed, while both shards are under load.
async fn shard_frozen(tls: Tls) {
    let f = Fixture::start("scram-sha-256", tls);
    let s1 = &f.shards[1];
    let failures = under_load(&f, async |load: &Load| {
        s1.signal_all(libc::SIGSTOP);
        let frozen = tokio::time::Instant::now();
        // While s1 is frozen, s0's workers go on committing...
        let at = load.snapshot();
        load.progress(&at, 5, &[0], "s0 while s1 is frozen").await;
        // ...and s1's do not.
        let s1_now = &load.snapshot()[WORKERS..];
        assert!(
            s1_now
                .iter()
                .zip(&at[WORKERS..])
                .all(|(a, b)| a <= &(b + 1)),
            "s1 committed while frozen: {at:?} -> {s1_now:?}"
        );
        // Frozen for at least 2 s in all.
        tokio::time::sleep_until(frozen + Duration::from_secs(2)).await;
        s1.signal_all(libc::SIGCONT);
    })
    .await;
    // Nothing was lost: a frozen server is slow, not gone.
    assert_eq!(failures, 0, "transactions failed on the frozen shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_frozen_with_sigstop_then_resumed() {
    shard_frozen(Tls::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_frozen_with_sigstop_then_resumed_over_tls() {
    shard_frozen(Tls::On).await;
}

/// A shard's backends terminated three times while both shards are under load.
async fn backends_terminated(tls: Tls) {
    let f = Fixture::start("scram-sha-256", tls);
    let s1 = &f.shards[1];
    let direct = s1.connect("postgres", "", "postgres").await;
    let mut terminated = 0i64;
    let failures = under_load(&f, async |load: &Load| {
        for round in 0..3 {
            let row = direct
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                     FROM pg_stat_activity WHERE usename = 'app'",
                    &[],
                )
                .await
                .unwrap();
            terminated += row.get::<_, i64>(0);
            // The pool reconnects and s1's workers commit again before the next round.
            let now = load.snapshot();
            load.progress(
                &now,
                2,
                &[0, 1],
                &format!("after termination round {round}"),
            )
            .await;
        }
    })
    .await;
    assert!(terminated > 0, "no backend was terminated");
    eprintln!("terminated {terminated} backends ({tls:?}); s1 failures: {failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_terminated_with_pg_terminate_backend() {
    backends_terminated(Tls::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_terminated_with_pg_terminate_backend_over_tls() {
    backends_terminated(Tls::On).await;
}

/// SIGHUP and RELOAD again and again, with a changing pool size, under load.
async fn reload_storm(tls: Tls) {
    let f = Fixture::start("scram-sha-256", tls);
    let admin = f.admin().await;
    let load = f.load();
    let start = vec![0; 2 * WORKERS];
    load.progress(&start, 3, &[0, 1], "warm-up").await;
    for i in 0..30 {
        // Alternate the pool size, so every reload really changes the pools.
        let size = POOL + i % 2;
        // Written atomically (rename), as config management does: a reload racing a
        // truncate-and-write could read a half-written file (see the fuzz README).
        f.bouncer
            .write_config_atomic(&f.config("scram-sha-256", size));
        if i % 3 == 0 {
            admin.simple_query("RELOAD").await.expect("RELOAD");
        } else {
            f.bouncer.signal(libc::SIGHUP);
        }
        // Interleave with the load instead of sleeping: one more commit anywhere.
        let now: usize = load.snapshot().iter().sum();
        eventually(WAIT, "load stalled during the reload storm", || async {
            load.snapshot().iter().sum::<usize>() > now
        })
        .await;
    }
    let after = load.snapshot();
    load.progress(&after, 3, &[0, 1], "after the storm").await;
    let reports = load.stop().await;
    let failures = check_reports(&f, &reports, &[0, 1]);
    assert_eq!(failures, 0);
    f.bouncer
        .write_config_atomic(&f.config("scram-sha-256", POOL));
    f.bouncer.signal(libc::SIGHUP);
    pools_refilled(&f, POOL + 1).await;
    let log = f.bouncer.log();
    assert!(log.matches("configuration reloaded").count() >= 10, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_load() {
    reload_storm(Tls::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_load_over_tls() {
    reload_storm(Tls::On).await;
}

/// SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The socket of a [`Wire`] client.
enum WireStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl WireStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            WireStream::Plain(s) => s,
            WireStream::Tls(t) => &t.sock,
        }
    }
}

impl Read for WireStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            WireStream::Plain(s) => s.read(buf),
            WireStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for WireStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            WireStream::Plain(s) => s.write(buf),
            WireStream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            WireStream::Plain(s) => s.flush(),
            WireStream::Tls(t) => t.flush(),
        }
    }
}

/// A blocking raw frontend connection (trust auth), in plaintext or over TLS, that
/// can vanish: the socket reset, no Terminate and, over TLS, no close_notify.
struct Wire {
    s: WireStream,
    out: Vec<u8>,
}

impl Wire {
    /// Connect (with TLS when `tls` is given: SSLRequest, then a handshake verifying
    /// the certificate for `localhost`) and log in as `app` to `app` with the tenant
    /// as a startup parameter; reads up to the first ReadyForQuery.
    fn login(port: u16, tenant: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Wire {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let s = match tls {
            None => WireStream::Plain(tcp),
            Some(config) => {
                tcp.write_all(&SSL_REQUEST).unwrap();
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).unwrap();
                assert_eq!(answer[0], b'S', "shardbouncer refused the SSLRequest");
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config, name).unwrap();
                let mut t = rustls::StreamOwned::new(conn, tcp);
                while t.conn.is_handshaking() {
                    t.conn
                        .complete_io(&mut t.sock)
                        .expect("TLS handshake with shardbouncer");
                }
                assert!(t.conn.negotiated_cipher_suite().is_some(), "no TLS session");
                WireStream::Tls(Box::new(t))
            }
        };
        let mut w = Wire { s, out: Vec::new() };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for kv in ["user", "app", "database", "app", "tenant_id", tenant] {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        body.push(0);
        w.out
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        w.out.extend_from_slice(&body);
        let msgs = w.run_until(b'Z');
        assert!(!tags(&msgs).contains('E'), "login failed: {msgs:?}");
        w
    }

    fn msg(&mut self, tag: u8, body: &[u8]) -> &mut Wire {
        self.out.push(tag);
        self.out
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.out.extend_from_slice(body);
        self
    }

    /// Parse(unnamed, sql) with no declared types.
    fn parse(&mut self, sql: &str) -> &mut Wire {
        let mut b = vec![0u8];
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        self.msg(b'P', &b)
    }

    /// Bind(unnamed portal, unnamed statement), no parameters, text results.
    fn bind(&mut self) -> &mut Wire {
        self.msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// Execute(unnamed portal, all rows).
    fn execute(&mut self) -> &mut Wire {
        self.msg(b'E', &[0, 0, 0, 0, 0])
    }

    fn sync(&mut self) -> &mut Wire {
        self.msg(b'S', b"")
    }

    /// Simple Query.
    fn query(&mut self, sql: &str) -> &mut Wire {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        self.msg(b'Q', &b)
    }

    fn copy_data(&mut self, data: &[u8]) -> &mut Wire {
        self.msg(b'd', data)
    }

    /// Send what was built.
    fn send(&mut self) {
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).unwrap();
        self.s.flush().unwrap();
    }

    /// Send what was built, then read until a message with tag `last` arrives.
    fn run_until(&mut self, last: u8) -> Vec<Msg> {
        self.send();
        let mut v = Vec::new();
        loop {
            let m = read_msg(&mut self.s).expect("connection closed");
            let done = m.0 == last;
            v.push(m);
            if done {
                return v;
            }
        }
    }

    /// Reset the connection (RST, no Terminate, no close_notify): the client vanishes.
    fn vanish(mut self) {
        let _ = self.s.flush();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
        unsafe {
            libc::setsockopt(
                self.s.tcp().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }
}

/// Clients of s1 vanish mid-pipeline, mid-COPY and mid-result while both shards
/// are under load.
async fn clients_vanishing(tls: Tls) {
    let f = Fixture::start("trust", tls);
    let port = f.bouncer.port;
    let t1 = f.tenants[1][0].clone();
    let load = f.load();
    let start = vec![0; 2 * WORKERS];
    load.progress(&start, 3, &[0, 1], "warm-up").await;

    let t = t1.clone();
    let client_tls = f.certs.as_ref().map(Certs::client_config);
    support::blocking(move || {
        let login = || Wire::login(port, &t, client_tls.clone());
        // Mid-pipeline: three units on the wire, the first one slow, then gone.
        let mut r = login();
        r.parse("SELECT pg_sleep(0.3)").bind().execute().sync();
        r.parse("INSERT INTO copied VALUES ('pipeline', 1)")
            .bind()
            .execute()
            .sync();
        r.query("SELECT 1");
        let _ = r.run_until(b'1'); // sent; ParseComplete of the first unit only
        r.vanish();

        // Mid-COPY: CopyData sent, no CopyDone.
        let mut r = login();
        r.query("COPY copied FROM STDIN");
        let msgs = r.run_until(b'G');
        assert_eq!(tags(&msgs).chars().last(), Some('G'));
        r.copy_data(b"copy\t1\n").copy_data(b"copy\t2\n").send();
        r.vanish();

        // Mid-result: a large result, a few rows read.
        let mut r = login();
        r.query("SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g");
        let msgs = r.run_until(b'D');
        assert!(tags(&msgs).ends_with('D'));
        let mut some = [0u8; 4096];
        let _ = r.s.read(&mut some);
        r.vanish();
    });

    // Everybody else goes on: both shards' workers commit more.
    let after = load.snapshot();
    load.progress(&after, 5, &[0, 1], "after the vanishing clients")
        .await;
    let reports = load.stop().await;
    let failures = check_reports(&f, &reports, &[0, 1]);
    assert_eq!(failures, 0);

    // A new client on s1 gets clean servers: no leftover result, COPY or
    // transaction from the vanished ones.
    let Conn { client: c, .. } =
        tokio::time::timeout(WAIT, connect(&f.conn_str(&t1), &f.connector()))
            .await
            .unwrap()
            .unwrap();
    for _ in 0..(2 * POOL) {
        let rows = c
            .query("SELECT 42::int, txid_current_if_assigned()", &[])
            .await
            .expect("query after the vanished clients");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), 42);
        assert_eq!(
            rows[0].get::<_, Option<i64>>(1),
            None,
            "left in a transaction"
        );
    }
    // The aborted COPY left nothing; the vanished clients are gone from the console
    // and Postgres runs nothing for them any more.
    let s1 = &f.shards[1];
    assert_eq!(
        s1.psql("app", "SELECT count(*) FROM copied WHERE tenant = 'copy'"),
        "0"
    );
    let admin = f.admin().await;
    eventually_ok(WAIT, || async {
        let clients = show(&admin, "SHOW CLIENTS").await;
        let app = clients.iter().filter(|c| c["database"] == "app").count();
        let busy = s1.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state <> 'idle'",
        );
        if app == 1 && busy == "0" {
            Ok(())
        } else {
            Err(format!(
                "{app} app clients, {busy} busy backends: {clients:?}"
            ))
        }
    })
    .await;
    drop(c);
    pools_refilled(&f, POOL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_pipeline_copy_and_result() {
    clients_vanishing(Tls::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_pipeline_copy_and_result_over_tls() {
    clients_vanishing(Tls::On).await;
}
