//! TLS toward clients and toward Postgres, through real psql / tokio-postgres and
//! real Postgres clusters with `ssl = on`. Certificates are generated per test.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::{Bouncer, PgCluster};

/// A CA and a server certificate for `localhost` / `127.0.0.1`, written as PEM files.
struct Certs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Certs {
    /// Generate into a fresh dir readable by the `postgres` user (Postgres needs the
    /// key owned by itself with mode 0600 when we run as root).
    fn new() -> Certs {
        let tmp = tempfile::Builder::new()
            .prefix("sbcerts-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Certs {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        c.generate("");
        c
    }

    /// Write `{prefix}ca.pem`, `{prefix}server.pem`, `{prefix}server.key` for
    /// localhost / 127.0.0.1.
    fn generate(&self, prefix: &str) {
        self.generate_for(prefix, &["localhost", "127.0.0.1"]);
    }

    /// Same with the given subject alternative names.
    fn generate_for(&self, prefix: &str, sans: &[&str]) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("shardbouncer test CA {prefix}"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(self.dir.join(format!("{prefix}ca.pem")), ca.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{prefix}server.pem")), cert.pem()).unwrap();
        let key_path = self.dir.join(format!("{prefix}server.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let st = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&key_path)
                .status()
                .unwrap();
            assert!(st.success());
        }
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
}

/// One database over `pg`, SCRAM client auth for app/secret, plus extra TOML.
fn config(pg: &PgCluster, extra: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:{{PORT}}\"\n\n\
         [pool]\nmode = \"transaction\"\ndefault_pool_size = 5\n\n\
         [auth]\ntype = \"scram-sha-256\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"secret\"\n\n\
         [databases.app]\nserver_user = \"app\"\nserver_password = \"secret\"\n\
         shards = [ {{ name = \"s0\", host = \"127.0.0.1\", port = {} }} ]\n\n{extra}\n",
        pg.port
    )
}

fn client_tls(cert: &str, key: &str, mode: &str) -> String {
    format!("[tls]\nclient_mode = \"{mode}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n")
}

/// psql through the bouncer with a full conninfo string.
fn psql(b: &Bouncer, conninfo: &str, sql: &str) -> Output {
    Command::new("psql")
        .arg(format!(
            "port={} user=app dbname=app connect_timeout=10 {conninfo}",
            b.port
        ))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", "secret")
        .env_remove("PGSSLMODE")
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn rustls_config(ca_pem: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// tokio-postgres over TLS (sslmode=require; the connector verifies against `ca_pem`
/// and the host name `localhost`).
async fn tls_connect(
    b: &Bouncer,
    ca_pem: &Path,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(ca_pem));
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=app password=secret dbname=app sslmode=require",
            b.port
        ),
        connector,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[test]
fn psql_require_and_verify_full_through_client_tls() {
    let certs = Certs::new();
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        &client_tls(
            &certs.path("server.pem"),
            &certs.path("server.key"),
            "prefer",
        ),
    ));
    let out = psql(&b, "host=127.0.0.1 sslmode=require", "SELECT 40 + 2");
    assert_eq!(ok_stdout(&out), "42");
    for host in ["localhost", "127.0.0.1"] {
        let out = psql(
            &b,
            &format!(
                "host={host} sslmode=verify-full sslrootcert={}",
                certs.path("ca.pem")
            ),
            "SELECT 'verified'",
        );
        assert_eq!(ok_stdout(&out), "verified", "host {host}");
    }
    // prefer still lets plaintext clients in.
    let out = psql(&b, "host=127.0.0.1 sslmode=disable", "SELECT 1");
    assert_eq!(ok_stdout(&out), "1");
    // A CA that did not sign the certificate is refused by the client.
    certs.generate("other-");
    let out = psql(
        &b,
        &format!(
            "host=localhost sslmode=verify-full sslrootcert={}",
            certs.path("other-ca.pem")
        ),
        "SELECT 1",
    );
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_tls_moves_large_results() {
    // TLS on both sides, so both split paths of the session loop carry big data.
    let certs = Certs::new();
    let pg = PgCluster::start_with(&certs.pg_conf());
    let b = Bouncer::start(&config(
        &pg,
        &format!(
            "{}server_mode = \"require\"\n",
            client_tls(
                &certs.path("server.pem"),
                &certs.path("server.key"),
                "require",
            )
        ),
    ));
    let c = tls_connect(&b, &certs.dir.join("ca.pem")).await.unwrap();
    let row = c
        .query_one("SELECT $1::int + $2::int", &[&40i32, &2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // Big rows and many rows: exercises partial TLS writes in both directions.
    let big = "y".repeat(3_000_000);
    let row = c
        .query_one("SELECT length($1::text), repeat('x', 5000000)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3_000_000);
    assert_eq!(row.get::<_, &str>(1).len(), 5_000_000);
    let rows = c
        .query(
            "SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 50000);
    // Concurrent TLS clients.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = tls_connect(&b, &certs.dir.join("ca.pem")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            // Simple protocol: named prepared statements do not survive server
            // switches in transaction mode (a separate feature).
            for j in 0..50 {
                let msgs = c
                    .simple_query(&format!("SELECT {}", i * 1000 + j))
                    .await
                    .unwrap();
                let v = msgs.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                });
                assert_eq!(v, Some((i * 1000 + j).to_string()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn client_mode_require_refuses_plaintext() {
    let certs = Certs::new();
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        &client_tls(
            &certs.path("server.pem"),
            &certs.path("server.key"),
            "require",
        ),
    ));
    let out = psql(&b, "host=127.0.0.1 sslmode=disable", "SELECT 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SSL required"), "{err}");
    let out = psql(&b, "host=127.0.0.1 sslmode=require", "SELECT 1");
    assert_eq!(ok_stdout(&out), "1");
}

#[test]
fn unencrypted_bytes_after_ssl_request_are_refused() {
    let certs = Certs::new();
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        &client_tls(
            &certs.path("server.pem"),
            &certs.path("server.key"),
            "prefer",
        ),
    ));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // SSLRequest and a startup packet in one write: the injection of CVE-2021-23214.
    let mut pkt = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let body = b"\x00\x03\x00\x00user\x00app\x00\x00";
    pkt.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    pkt.extend_from_slice(body);
    s.write_all(&pkt).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert_eq!(resp.first(), Some(&b'E'), "{resp:?}");
    assert!(
        String::from_utf8_lossy(&resp).contains("unencrypted data after SSL request"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_without_dropping_clients() {
    let certs = Certs::new();
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        &client_tls(
            &certs.path("server.pem"),
            &certs.path("server.key"),
            "require",
        ),
    ));
    let old_ca = certs.dir.join("ca-old.pem");
    std::fs::copy(certs.dir.join("ca.pem"), &old_ca).unwrap();
    let old_client = tls_connect(&b, &old_ca).await.unwrap();
    old_client.simple_query("SELECT 1").await.unwrap();

    // A broken cert file makes the reload fail and keeps serving the old one.
    std::fs::write(certs.dir.join("server.pem"), "not a certificate").unwrap();
    b.signal(libc::SIGHUP);
    b.wait_for_log("reload rejected").await;
    assert!(b.log().contains("server.pem"), "{}", b.log());
    tls_connect(&b, &old_ca).await.unwrap();

    // New CA, new certificate: a reload switches new connections over.
    certs.generate("");
    b.signal(libc::SIGHUP);
    b.wait_for_log("configuration reloaded").await;
    let c = tls_connect(&b, &certs.dir.join("ca.pem")).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    let out = psql(
        &b,
        &format!(
            "host=localhost sslmode=verify-full sslrootcert={}",
            certs.path("ca.pem")
        ),
        "SELECT 'new'",
    );
    assert_eq!(ok_stdout(&out), "new");
    assert!(tls_connect(&b, &old_ca).await.is_err());
    // The client connected before the reload keeps working.
    let v: i32 = old_client.query_one("SELECT 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
}

fn server_ssl_through_bouncer(b: &Bouncer) -> String {
    let out = psql(
        b,
        "host=127.0.0.1 sslmode=disable",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    ok_stdout(&out)
}

#[test]
fn server_tls_require_and_verify_full() {
    let certs = Certs::new();
    let pg = PgCluster::start_with(&certs.pg_conf());
    let b = Bouncer::start(&config(&pg, "[tls]\nserver_mode = \"require\"\n"));
    assert_eq!(server_ssl_through_bouncer(&b), "t");
    drop(b);

    // verify-full: the shard host 127.0.0.1 is in the certificate's SANs.
    let b = Bouncer::start(&config(
        &pg,
        &format!(
            "[tls]\nserver_mode = \"verify-full\"\nserver_ca = \"{}\"\n",
            certs.path("ca.pem")
        ),
    ));
    assert_eq!(server_ssl_through_bouncer(&b), "t");
    drop(b);

    // verify-ca and verify-full against the wrong CA: refused with the reason.
    certs.generate("other-");
    for mode in ["verify-ca", "verify-full"] {
        let b = Bouncer::start(&config(
            &pg,
            &format!(
                "[tls]\nserver_mode = \"{mode}\"\nserver_ca = \"{}\"\n",
                certs.path("other-ca.pem")
            ),
        ));
        let out = psql(&b, "host=127.0.0.1 sslmode=disable", "SELECT 1");
        assert!(!out.status.success(), "{mode}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TLS handshake"), "{mode}: {err}");
    }
}

#[test]
fn server_tls_verify_ca_ignores_host_name_verify_full_does_not() {
    let certs = Certs::new();
    // A certificate for some other name, signed by the trusted CA.
    certs.generate_for("", &["db.invalid"]);
    let pg = PgCluster::start_with(&certs.pg_conf());
    let with = |mode: &str| {
        config(
            &pg,
            &format!(
                "[tls]\nserver_mode = \"{mode}\"\nserver_ca = \"{}\"\n",
                certs.path("ca.pem")
            ),
        )
    };
    let b = Bouncer::start(&with("verify-ca"));
    assert_eq!(server_ssl_through_bouncer(&b), "t");
    drop(b);
    let b = Bouncer::start(&with("verify-full"));
    let out = psql(&b, "host=127.0.0.1 sslmode=disable", "SELECT 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS handshake"), "{err}");
}

#[test]
fn server_tls_require_fails_against_plaintext_server_and_prefer_falls_back() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(&pg, "[tls]\nserver_mode = \"require\"\n"));
    let out = psql(&b, "host=127.0.0.1 sslmode=disable", "SELECT 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not support SSL"), "{err}");
    drop(b);
    let b = Bouncer::start(&config(&pg, "[tls]\nserver_mode = \"prefer\"\n"));
    assert_eq!(server_ssl_through_bouncer(&b), "f");
}

#[test]
fn bad_tls_config_is_refused_at_startup_with_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sb.toml");
    let bin = env!("CARGO_BIN_EXE_shardbouncer");
    for (extra, needle) in [
        ("[tls]\nclient_mode = \"require\"\n", "cert"),
        (
            "[tls]\nclient_mode = \"require\"\ncert = \"nope.pem\"\nkey = \"nope.key\"\n",
            "nope.pem",
        ),
        ("[tls]\nserver_mode = \"verify-full\"\n", "server_ca"),
        ("[tls]\nserver_mode = \"sometimes\"\n", "sometimes"),
    ] {
        std::fs::write(
            &cfg,
            format!("[databases.app]\nshards = [ {{ name = \"s0\", host = \"h\" }} ]\n{extra}"),
        )
        .unwrap();
        let out = Command::new(bin)
            .arg("--check")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

/// A TLS server connection moves between worker threads with its TLS session:
/// psql clients one after another are dealt to the two workers in turn, and
/// every one is answered over TLS by the one backend the first client opened
/// (a session broken by a move would have been replaced, with another pid).
#[test]
fn a_tls_server_connection_moves_between_workers() {
    let certs = Certs::new();
    let pg = PgCluster::start_with(&certs.pg_conf());
    let b = Bouncer::start(&config(
        &pg,
        "[tls]\nserver_mode = \"require\"\n\n[limits]\nworkers = 2\n",
    ));
    let sql = "SELECT ssl::text || ' ' || pid FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let first = ok_stdout(&psql(&b, "host=127.0.0.1 sslmode=disable", sql));
    assert!(first.starts_with("true "), "{first}");
    for i in 0..5 {
        let out = ok_stdout(&psql(&b, "host=127.0.0.1 sslmode=disable", sql));
        assert_eq!(out, first, "client {i} after the first");
    }
}

/// A TLS client that closes politely while its work waits for a server
/// (Terminate, then a close_notify alert, then its FIN, as libpq's PQfinish
/// does over TLS) is dropped from the queue, and its work never runs. The
/// queue used to see a close only when nothing was left unread, so a polite
/// close was seen only once a server came, and the work of a client that had
/// given up ran anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_leaves_while_queued_never_runs_its_work() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let pg = PgCluster::start_with(&certs.pg_conf());
    pg.psql(
        "app",
        "CREATE TABLE ghosts (who text); GRANT ALL ON ghosts TO app",
    );
    let cfg =
        config(
            &pg,
            &format!(
            "{}\n[admin]\nusers = [\"admin\"]\n[[users]]\nname = \"admin\"\npassword = \"admin\"\n",
            client_tls(&certs.path("server.pem"), &certs.path("server.key"), "allow")
        ),
        )
        .replace(
            "default_pool_size = 5",
            "default_pool_size = 1\nquery_wait_timeout = \"60s\"",
        )
        .replace("type = \"scram-sha-256\"", "type = \"trust\"");
    let b = Bouncer::start(&cfg);
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    let holder = b.connect("app", "", "app").await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    // The ghost: SSLRequest, TLS, a trust login, a query that queues.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", b.port))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(rustls_config(&certs.dir.join("ca.pem"))));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0database\0app\0\0");
    let len = (startup.len() as u32).to_be_bytes();
    startup[..4].copy_from_slice(&len);
    tls.write_all(&startup).await.unwrap();
    loop {
        let tag = tls.read_u8().await.unwrap();
        let len = tls.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        tls.read_exact(&mut body).await.unwrap();
        assert_ne!(tag, b'E', "login: {}", String::from_utf8_lossy(&body));
        if tag == b'Z' {
            break;
        }
    }
    let sql = b"INSERT INTO ghosts VALUES ('ghost')\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    q.extend_from_slice(sql);
    tls.write_all(&q).await.unwrap();
    tls.flush().await.unwrap();
    support::eventually(Duration::from_secs(15), "the TLS client queued", || async {
        support::clients_waiting(&admin, "app").await == 1
    })
    .await;
    // It gives up politely: Terminate, close_notify, FIN; unread by the pooler.
    tls.write_all(&[b'X', 0, 0, 0, 4]).await.unwrap();
    tls.shutdown().await.unwrap();
    drop(tls);
    support::eventually(Duration::from_secs(15), "the queue to empty", || async {
        support::clients_waiting(&admin, "app").await == 0
    })
    .await;
    holder.batch_execute("COMMIT").await.unwrap();
    holder.simple_query("SELECT 1").await.unwrap();
    assert_eq!(pg.psql("app", "SELECT count(*) FROM ghosts"), "0");
}
