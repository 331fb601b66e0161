//! A rolling restart with `[listen] so_reuseport`: a second shardbouncer starts
//! on the same address, the first drains (SIGUSR2, as `SHUTDOWN
//! WAIT_FOR_CLIENTS`), and no client sees an error: the old process's clients
//! run on until they leave, cancels reach them through whichever process the
//! kernel gave the cancel's connection (`[listen] peer_dir`), new clients log in
//! at the new process, and the metrics address passes to it.

mod support;

use std::time::Duration;
use support::{basic_config, eventually, Bouncer, PgCluster};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Run `SELECT pg_sleep(30)` on `c` and cancel it through the shared port.
async fn cancel_through_the_port(
    pg: &PgCluster,
    c: tokio_postgres::Client,
) -> tokio_postgres::Client {
    let token = c.cancel_token();
    let slow = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r, c)
    });
    eventually(Duration::from_secs(10), "the query never started", || async {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
        ) == "1"
    })
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the cancel never reached the query")
        .unwrap();
    let e = r.expect_err("the query ran to its end");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_a_shared_address_loses_no_client() {
    let pg = PgCluster::start();
    let peers = tempfile::tempdir().unwrap();
    let metrics_port = support::free_port();
    let cfg = basic_config(&[&pg], "").replace(
        "addr = \"127.0.0.1:{PORT}\"\n",
        &format!(
            "addr = \"127.0.0.1:{{PORT}}\"\nso_reuseport = true\npeer_dir = \"{}\"\n\n\
             [admin]\nmetrics_addr = \"127.0.0.1:{metrics_port}\"\n",
            peers.path().display()
        ),
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
        staying = cancel_through_the_port(&pg, staying).await;
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
    staying = cancel_through_the_port(&pg, staying).await;
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
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    for c in &fresh {
        let v: i32 = c.query_one("SELECT 2", &[]).await.unwrap().get(0);
        assert_eq!(v, 2);
    }
}
