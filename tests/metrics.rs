//! `/metrics`, scraped with a plain HTTP GET while real traffic runs.

mod support;

use std::time::Duration;
use support::metrics::{sample, scrape};
use support::*;

/// Scrape until `prefix` has value `want` (the exporter is refreshed once a second).
async fn wait_for(port: u16, prefix: &str, want: f64) -> String {
    eventually_ok(Duration::from_secs(15), || async {
        let body = scrape(port).await;
        if sample(&body, prefix) == Some(want) {
            Ok(body)
        } else {
            Err(format!(
                "{prefix} never reached {want}; last scrape:\n{body}"
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_traffic() {
    let pg = PgCluster::start();
    let mport = free_port();
    let cfg = format!(
        "{}\n[[users]]\nname = \"admin\"\npassword = \"adminpw\"\n\n[admin]\nusers = [\"admin\"]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        basic_config(&[&pg], "")
    );
    let b = Bouncer::start(&cfg);
    let c = b.connect(APP_USER, APP_PASSWORD, "app").await;
    for _ in 0..5 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let pool = r#"{database="app",user="app",shard="s0"}"#;
    let body = wait_for(
        mport,
        &format!("shardbouncer_pool_transactions_total{pool}"),
        5.0,
    )
    .await;
    assert_eq!(
        sample(&body, &format!("shardbouncer_pool_queries_total{pool}")),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"shardbouncer_pool_servers{database="app",user="app",shard="s0",state="idle"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"shardbouncer_pool_clients{database="app",user="app",shard="s0",state="active"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, r#"shardbouncer_shard_up{database="app",shard="s0"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!("shardbouncer_transaction_duration_seconds_count{pool}")
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!("shardbouncer_query_duration_seconds_count{pool}")
        ),
        Some(5.0)
    );
    assert!(body.contains("shardbouncer_transaction_duration_seconds_bucket{"));
    assert!(sample(&body, &format!("shardbouncer_pool_bytes_sent_total{pool}")).unwrap() > 0.0);

    // The values move with more traffic.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    let body = wait_for(
        mport,
        r#"shardbouncer_pool_servers{database="app",user="app",shard="s0",state="active"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &body,
            &format!("shardbouncer_pool_transactions_total{pool}")
        ),
        Some(5.0)
    );
    c.simple_query("COMMIT").await.unwrap();
    let body = wait_for(
        mport,
        &format!("shardbouncer_pool_transactions_total{pool}"),
        6.0,
    )
    .await;
    assert_eq!(
        sample(&body, &format!("shardbouncer_pool_queries_total{pool}")),
        Some(8.0)
    );

    // Console reloads are counted.
    let a = b.connect("admin", "adminpw", "pgbouncer").await;
    a.simple_query("RELOAD").await.unwrap();
    wait_for(mport, r#"shardbouncer_reloads_total{result="ok"}"#, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_counters_move() {
    use shardbouncer::router::{ShardMap, TenantKey};
    let s0 = PgCluster::start();
    let s1 = PgCluster::start();
    let mport = free_port();
    let cfg = format!(
        "{}[databases.app.routing]\nkey = \"tenant_id\"\n[admin]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        basic_config(&[&s0, &s1], "")
    );
    let b = Bouncer::start(&cfg);
    let map = ShardMap::default_for(&["s0".to_string(), "s1".to_string()]);
    let on = |t: &i64| {
        map.route(&TenantKey::new(t.to_string().as_bytes()).unwrap())
            .unwrap()
            .shard
    };
    let a = (1..100).find(|t| on(t) == 0).unwrap();
    let z = (1..100).find(|t| on(t) == 1).unwrap();
    let c = b.connect("app", "secret", "app").await;
    c.simple_query(&format!("SELECT 1 /* tenant_id={a} */"))
        .await
        .unwrap();
    c.simple_query(&format!(
        "SELECT 1 FROM (SELECT {z} AS tenant_id) t WHERE tenant_id = {z}"
    ))
    .await
    .unwrap();
    // No tenant, and a table's rows: rejected (`SELECT 1` alone is a
    // catalog read, which needs none).
    assert!(c.simple_query("SELECT 1 FROM no_such_table").await.is_err());
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("SELECT 1 /* tenant_id={a} */"))
        .await
        .unwrap();
    assert!(c
        .simple_query(&format!("SELECT 1 /* tenant_id={z} */"))
        .await
        .is_err());
    c.simple_query("ROLLBACK").await.unwrap();
    let body = scrape(mport).await;
    let get = |p: &str| sample(&body, p).unwrap_or_else(|| panic!("{p} missing:\n{body}"));
    assert_eq!(
        get("shardbouncer_routing_decisions_total{database=\"app\",source=\"comment\"}"),
        2.0
    );
    assert_eq!(
        get("shardbouncer_routing_decisions_total{database=\"app\",source=\"scan\"}"),
        1.0
    );
    assert_eq!(
        get("shardbouncer_routing_rejected_total{database=\"app\"}"),
        1.0
    );
    assert_eq!(
        get("shardbouncer_cross_shard_refused_total{database=\"app\"}"),
        1.0
    );
    assert_eq!(get("shardbouncer_shard_map_version{database=\"app\"}"), 1.0);
}

/// Two worker threads, one server: the clients are dealt to different workers,
/// and the one server moves between them at every turn. Every query gets its
/// answer from the same backend (a server broken by a move would be replaced,
/// with another pid), and the moves are counted.
#[tokio::test(flavor = "multi_thread")]
async fn one_server_serves_clients_on_every_worker() {
    let pg = PgCluster::start();
    let mport = free_port();
    let cfg = format!(
        "[limits]\nworkers = 2\n{}\n[admin]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        basic_config(&[&pg], "default_pool_size = 1")
    );
    let b = Bouncer::start(&cfg);
    b.wait_for_log("with 2 workers").await;
    // Dealt in turn: the first client to worker 0, the second to worker 1.
    let c0 = b.connect(APP_USER, APP_PASSWORD, "app").await;
    let c1 = b.connect(APP_USER, APP_PASSWORD, "app").await;
    // One simple Query: one checkout each.
    async fn pid(c: &tokio_postgres::Client) -> String {
        let rows = c.simple_query("SELECT pg_backend_pid()").await.unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .expect("a row")
    }
    let first = pid(&c0).await;
    for i in 0..20 {
        assert_eq!(pid(&c1).await, first, "turn {i}, second client");
        assert_eq!(pid(&c0).await, first, "turn {i}, first client");
    }
    let pool = r#"{database="app",user="app",shard="s0"}"#;
    let body = eventually_ok(Duration::from_secs(15), || async {
        let body = scrape(mport).await;
        match sample(
            &body,
            &format!("shardbouncer_pool_server_worker_moves_total{pool}"),
        ) {
            Some(40.0) => Ok(body),
            other => Err(format!("40 moves expected, saw {other:?}:\n{body}")),
        }
    })
    .await;
    assert_eq!(
        sample(
            &body,
            &format!("shardbouncer_pool_server_assignments_total{pool}")
        ),
        // 41 queries, and the first login's checkout that learnt the server's
        // parameters (on worker 0, like the first query: no move).
        Some(42.0)
    );
}

/// A resumed tenant holds nobody: its `shardbouncer_tenant_held` series goes
/// to 0 at the next refresh (it showed the last count until it expired).
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_tenant_shows_nobody_held() {
    let s0 = PgCluster::start();
    let mport = free_port();
    let cfg = format!(
        "{}[databases.app.routing]\nkey = \"tenant_id\"\n[[users]]\nname = \"admin\"\npassword = \"adminpw\"\n\n[admin]\nusers = [\"admin\"]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        basic_config(&[&s0], "")
    );
    let b = Bouncer::start(&cfg);
    let admin = b.connect("admin", "adminpw", "pgbouncer").await;
    admin.simple_query("PAUSE TENANT '7'").await.unwrap();
    let c = b.connect("app", "secret", "app").await;
    let held = tokio::spawn(async move {
        c.simple_query("SELECT 1 /* tenant_id=7 */")
            .await
            .map(|_| ())
    });
    let series = r#"shardbouncer_tenant_held{tenant="7"}"#;
    wait_for(mport, series, 1.0).await;
    admin.simple_query("RESUME TENANT '7'").await.unwrap();
    held.await.unwrap().unwrap();
    wait_for(mport, series, 0.0).await;
}

/// The metrics port holds no connection for long and no more than a few at
/// once: idle connections past the cap are closed at once, the others once
/// the scrape timeout passes, and a scrape then works (probe K: idle ones
/// were kept for ever, without a cap, until the process ran out of file
/// descriptors and clients could no longer log in).
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_to_the_metrics_port_are_bounded() {
    use tokio::io::AsyncReadExt;
    let pg = PgCluster::start();
    let mport = support::free_port();
    let b = Bouncer::start(&format!(
        "{}\n[admin]\nmetrics_addr = \"127.0.0.1:{mport}\"\n",
        support::basic_config(&[&pg], "")
    ));
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", mport))
                .await
                .unwrap(),
        );
    }
    // Every one is closed by the pooler (read returns 0), within the
    // scrape timeout and a margin.
    for mut s in idle {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("an idle metrics connection was kept open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let body = support::metrics::scrape(mport).await;
    assert!(body.contains("shardbouncer_"), "{body}");
    drop(b);
}
