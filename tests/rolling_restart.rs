//! A rolling restart with `[listen] so_reuseport`: a second shardbouncer starts
//! on the same address, the first drains (SIGUSR2, as `SHUTDOWN
//! WAIT_FOR_CLIENTS`), and no client sees an error: the old process's clients
//! run on until they leave, cancels reach them through whichever process the
//! kernel gave the cancel's connection (`[listen] peer_dir`), new clients log in
//! at the new process, and the metrics address passes to it.

mod support;

use std::time::Duration;
use support::{basic_config, eventually, Bouncer, PgCluster};
use tokio::io::AsyncReadExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Run `SELECT pg_sleep(30)` on `c` and cancel it through the shared `port`,
/// waiting as libpq's `PQcancel` does for the cancel connection to close: the
/// cancel has then reached Postgres. (tokio-postgres does not wait: Postgres
/// signals a backend twice for one cancel, and the second signal, late on a
/// loaded machine, cancelled the next query.)
async fn cancel_through_the_port(
    pg: &PgCluster,
    port: u16,
    c: tokio_postgres::Client,
) -> tokio_postgres::Client {
    let token = c.cancel_token();
    let slow = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r, c)
    });
    pg.wait_running("SELECT pg_sleep(30)").await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    token.cancel_query_raw(&mut s, NoTls).await.unwrap();
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the cancel connection was not closed: {closed:?}"
    );
    let (r, c) = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the cancel never reached the query")
        .unwrap();
    let e = r.expect_err("the query ran to its end");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    c
}

/// `basic_config` on a shared address (`so_reuseport`) with `peers` as the
/// `peer_dir`, and `extra` after the `[listen]` table.
fn shared_config(pg: &PgCluster, peers: &std::path::Path, extra: &str) -> String {
    basic_config(&[pg], "").replace(
        "addr = \"127.0.0.1:{PORT}\"\n",
        &format!(
            "addr = \"127.0.0.1:{{PORT}}\"\nso_reuseport = true\npeer_dir = \"{}\"\n{extra}",
            peers.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_a_shared_address_loses_no_client() {
    let pg = PgCluster::start();
    let peers = tempfile::tempdir().unwrap();
    let metrics_port = support::free_port();
    let cfg = shared_config(
        &pg,
        peers.path(),
        &format!("\n[admin]\nmetrics_addr = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let mut old = Bouncer::start(&cfg);
    let mut staying = old.connect("app", "secret", "app").await;
    staying
        .simple_query("CREATE TEMP TABLE t (x int)")
        .await
        .ok();
    let new = old.start_beside(&cfg);
    assert_eq!(old.listens(), Some(true));
    assert_eq!(new.listens(), Some(true));
    new.wait_for_log("metrics address").await;

    // Both listen: a cancel reaches its client whichever process gets it.
    for _ in 0..3 {
        staying = cancel_through_the_port(&pg, old.port, staying).await;
    }

    // Files crashed processes left, sorting before the live peer's, do not
    // keep a cancel from it (probe Q: past 16 such files it never came).
    for i in 0..20 {
        let stale = peers.path().join(format!("shardbouncer-0{i:02}.sock"));
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    }
    // A peer's socket is its user's alone: cancel keys reach it.
    for p in [old.pid(), new.pid()] {
        let path = peers.path().join(format!("shardbouncer-{p}.sock"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{path:?}");
    }
    old.signal(libc::SIGUSR2);
    eventually(
        Duration::from_secs(10),
        "the old process kept its listener",
        || async { old.listens() == Some(false) },
    )
    .await;
    // New clients: all at the new process, none refused.
    let mut fresh = Vec::new();
    for _ in 0..6 {
        let c = old.connect("app", "secret", "app").await;
        let v: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(v, 1);
        fresh.push(c);
    }
    // The old process's client runs on, and its cancels (which can only reach
    // the new process now) are passed to the old one.
    staying = cancel_through_the_port(&pg, old.port, staying).await;
    let n: i64 = staying
        .query_one("SELECT count(*) FROM generate_series(1, 10)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    // The metrics address passes to the process that has the clients.
    new.wait_for_log(&format!(
        "metrics on http://127.0.0.1:{metrics_port}/metrics"
    ))
    .await;
    let body = support::metrics::scrape(metrics_port).await;
    assert!(body.contains("shardbouncer_client_connections"), "{body}");
    // Once its last client leaves, the old process exits, cleanly.
    assert!(
        old.wait_exit(Duration::from_millis(300)).await.is_none(),
        "left with a client"
    );
    drop(staying);
    let status = old
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the old process did not exit once its clients left");
    assert!(status.success(), "{status}");
    // Its peer socket is gone; the new process's is there.
    let names: Vec<String> = std::fs::read_dir(peers.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("shardbouncer-0"))
        .collect();
    assert_eq!(names, [format!("shardbouncer-{}.sock", new.pid())]);
    for c in &fresh {
        let v: i32 = c.query_one("SELECT 2", &[]).await.unwrap().get(0);
        assert_eq!(v, 2);
    }
}

/// A process alone on a shared address (`so_reuseport`) keeps serving
/// CancelRequests while its running transactions finish after SIGTERM, as
/// one with a listener of its own does (probe Q: the shared
/// listener went at once, and a running query could not be cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_alone_on_a_shared_address_serves_cancels_while_it_stops() {
    let pg = PgCluster::start();
    let peers = tempfile::tempdir().unwrap();
    let cfg = shared_config(&pg, peers.path(), "");
    let mut b = Bouncer::start(&cfg);
    let c = b.connect("app", "secret", "app").await;
    c.batch_execute("BEGIN").await.unwrap();
    b.signal(libc::SIGTERM);
    b.wait_for_log("shutting down").await;
    let c = cancel_through_the_port(&pg, b.port, c).await;
    drop(c);
    let status = b.wait_exit(Duration::from_secs(20)).await.expect("no exit");
    assert!(status.success(), "{status}");
}

/// Two processes on a shared address stopped together: each keeps its
/// listener while its clients finish, so their cancels are served (probe S:
/// each closed its listener for the other, and no one served cancels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_stopped_together_still_serve_cancels() {
    let pg = PgCluster::start();
    let peers = tempfile::tempdir().unwrap();
    let cfg = shared_config(&pg, peers.path(), "");
    let mut first = Bouncer::start(&cfg);
    let c = first.connect("app", "secret", "app").await;
    c.batch_execute("BEGIN").await.unwrap();
    let mut second = first.start_beside(&cfg);
    second.signal(libc::SIGTERM);
    first.signal(libc::SIGTERM);
    first.wait_for_log("shutting down").await;
    assert_eq!(
        first.listens(),
        Some(true),
        "the listener went while clients run"
    );
    let c = cancel_through_the_port(&pg, first.port, c).await;
    drop(c);
    for b in [&mut first, &mut second] {
        let status = b.wait_exit(Duration::from_secs(20)).await.expect("no exit");
        assert!(status.success(), "{status}");
    }
}
