//! Smoke tests for the test harness itself (tests/support): real clusters come
//! up with the documented fixtures, stop/restart works, and clean-up happens.

mod support;

use support::*;

/// Connect directly (not through the bouncer) and return `current_setting('port')`.
async fn port_via(cluster: &PgCluster, user: &str, password: &str) -> String {
    let client = cluster.connect(user, password, "app").await;
    let row = client
        .query_one("SELECT current_setting('port')", &[])
        .await
        .expect("query port");
    row.get::<_, String>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_all_auth_methods() {
    // Start both at once, as parallel tests do.
    let (a, b) = tokio::task::spawn_blocking(|| {
        let t = std::thread::spawn(PgCluster::start);
        let a = PgCluster::start();
        (a, t.join().expect("second cluster"))
    })
    .await
    .unwrap();
    assert_ne!(a.port, b.port);

    for c in [&a, &b] {
        let want = c.port.to_string();
        assert_eq!(port_via(c, APP_USER, APP_PASSWORD).await, want, "scram");
        assert_eq!(port_via(c, "md5user", "md5pass").await, want, "md5");
        assert_eq!(
            port_via(c, "plainuser", "plainpass").await,
            want,
            "password"
        );
        assert_eq!(port_via(c, "trustuser", "").await, want, "trust");

        // The stored verifiers are what the auth tests rely on.
        let kinds = c.psql(
            "postgres",
            "SELECT rolname || '=' || left(rolpassword, 3) FROM pg_authid \
             WHERE rolname IN ('app', 'md5user') ORDER BY rolname",
        );
        assert_eq!(kinds, "app=SCR\nmd5user=md5");

        // Wrong password is rejected by the real server.
        let err =
            tokio_postgres::connect(&c.conn_str(APP_USER, "wrong", "app"), tokio_postgres::NoTls)
                .await
                .err()
                .expect("wrong password must fail");
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("28P01"),
            "{err:?}"
        );

        // The fixture roles can create tables in app's public schema.
        let client = c.connect("md5user", "md5pass", "app").await;
        client
            .batch_execute("CREATE TABLE t_md5 (id int); DROP TABLE t_md5;")
            .await
            .expect("md5user can create in public");
    }

    // Multi-statement scripts run statement by statement and return every result.
    assert_eq!(
        a.psql("postgres", "CREATE DATABASE extra; SELECT 1; SELECT 2;"),
        "1\n2"
    );
    assert_eq!(a.psql("postgres", "SHOW max_connections"), "300");
    assert_eq!(a.psql("postgres", "SHOW fsync"), "off");
}

#[tokio::test]
async fn stop_and_restart() {
    let c = PgCluster::start();
    c.psql(
        "app",
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7);",
    );
    c.stop();
    let err = tokio_postgres::connect(
        &c.conn_str(APP_USER, APP_PASSWORD, "app"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("connect to a stopped cluster must fail");
    assert!(
        err.as_db_error().is_none(),
        "expected an I/O error: {err:?}"
    );

    c.restart();
    assert_eq!(c.psql("app", "SELECT v FROM kept"), "7");
    assert_eq!(
        port_via(&c, APP_USER, APP_PASSWORD).await,
        c.port.to_string()
    );
}

#[test]
fn start_with_extra_conf_and_cleanup_on_drop() {
    let c = PgCluster::start_with("work_mem = '7MB'\napplication_name = 'from_harness'");
    assert_eq!(c.psql("postgres", "SHOW work_mem"), "7MB");
    let dir = c.dir.clone();
    let port = c.port;
    assert!(dir.join("data/PG_VERSION").exists());
    drop(c);
    assert!(!dir.exists(), "temp dir {} must be removed", dir.display());
    // Nothing listens on the port any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn panicking_test_still_stops_its_cluster() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let c = PgCluster::start();
        tx.send((c.port, c.dir.clone())).unwrap();
        panic!("deliberate panic while a cluster is running");
    })
    .join();
    assert!(result.is_err());
    let (port, dir) = rx.recv().unwrap();
    assert!(!dir.exists(), "temp dir must be removed while unwinding");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn basic_config_shape() {
    let a = PgCluster::start();
    let cfg = basic_config(&[&a], "default_pool_size = 2\nquery_wait_timeout = \"1s\"");
    assert!(cfg.contains("addr = \"127.0.0.1:{PORT}\""));
    assert!(cfg.contains("default_pool_size = 2"));
    assert!(
        !cfg.contains("default_pool_size = 5"),
        "override replaces default:\n{cfg}"
    );
    assert!(cfg.contains("mode = \"transaction\""));
    assert!(cfg.contains(&format!(
        "{{ name = \"s0\", host = \"127.0.0.1\", port = {} }}",
        a.port
    )));
    let p1 = free_port();
    let p2 = free_port();
    assert_ne!(p1, p2);
}

/// Bouncer lifecycle against the real binary (one shard: a plain pooler, so
/// tenant-less queries are fine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bouncer_lifecycle() {
    let a = PgCluster::start();
    let mut bouncer = Bouncer::start(&basic_config(&[&a], ""));
    let client = bouncer.connect(APP_USER, APP_PASSWORD, "app").await;
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    let out = bouncer.psql(APP_USER, APP_PASSWORD, "app", "SELECT 41 + 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    bouncer.signal(libc::SIGTERM);
    let status = bouncer
        .wait_exit(std::time::Duration::from_secs(30))
        .await
        .expect("shardbouncer exits on SIGTERM");
    assert!(
        status.success() || status.code().is_none(),
        "{status:?}\n{}",
        bouncer.log()
    );
}
