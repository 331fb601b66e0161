//! Criterion benchmarks for a pool's per-transaction work: checking an idle
//! server out and back in, with no Postgres and no I/O on the path (the
//! servers are connected loopback sockets that never carry a byte).
//!
//! `checkout+checkin/*` is what every transaction pays in transaction mode:
//! the fair-queue admission and its semaphore permit, taking an idle server
//! (preferring one on the caller's worker thread) and its health check, and the
//! check-in with the permit's release. `rehome` adds moving the server's socket
//! to another worker's event loop, which a checkout pays when no idle server is
//! on the caller's worker. `try_checkout+checkin/*` is the same without a
//! future (`Pool::try_checkout`), the path a session takes when a server is
//! idle at once.

use criterion::{criterion_group, criterion_main, Criterion};
use shardbouncer::config::{PoolSettings, ServerTls};
use shardbouncer::net::{self, Stream};
use shardbouncer::pool::{Pool, PoolKey};
use shardbouncer::server::{ServerConn, ServerState, Target};
use std::sync::Arc;

/// A pool of `n` idle servers whose sockets lead to `peers` (kept open).
fn pool_with_idle(
    rt: &tokio::runtime::Runtime,
    n: usize,
) -> (Arc<Pool>, Vec<tokio::net::TcpStream>) {
    let target = Target {
        host: "127.0.0.1".into(),
        port: 1,
        dbname: "app".into(),
        user: "app".into(),
        password: None,
        scram_keys: None,
        tls: ServerTls::disabled(),
    };
    let key = PoolKey {
        database: "app".into(),
        user: "app".into(),
        shard: "s0".into(),
    };
    let pool = Pool::new(key, target, PoolSettings::default());
    let mut peers = Vec::new();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for _ in 0..n {
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (p, _) = l.accept().await.unwrap();
            peers.push(p);
            pool.adopt_idle(ServerConn {
                stream: Stream::from(c),
                home: net::worker(),
                state: Box::new(ServerState::new(addr, None)),
            });
        }
    });
    (pool, peers)
}

fn bench_checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in [1, 20] {
        let (pool, _peers) = pool_with_idle(&rt, n);
        c.bench_function(&format!("pool/checkout+checkin/{n}_idle"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let co = pool.checkout(None).await.expect("an idle server");
                    pool.checkin(co);
                })
            })
        });
        assert_eq!(pool.idle_count(), n, "no server was lost or opened");
        // The same without a future: what a session's attach tries first.
        c.bench_function(&format!("pool/try_checkout+checkin/{n}_idle"), |b| {
            b.iter(|| {
                let co = pool.try_checkout(None).expect("an idle server");
                pool.checkin(co);
            })
        });
        assert_eq!(pool.idle_count(), n, "no server was lost or opened");
    }
    // Every checkout finds the server on the other worker and moves it.
    let (pool, _peers) = pool_with_idle(&rt, 1);
    let mut worker = 0u16;
    c.bench_function("pool/checkout+checkin/rehome", |b| {
        b.iter(|| {
            worker ^= 1;
            net::set_worker(worker);
            rt.block_on(async {
                let co = pool.checkout(None).await.expect("an idle server");
                pool.checkin(co);
            })
        })
    });
    net::set_worker(net::NO_WORKER);
    assert_eq!(pool.idle_count(), 1);
}

/// What every attach compares: the client's settings against the server's
/// (`ServerState::sync_statement`), with the fourteen parameters Postgres 15
/// reports at login, the same on both sides (the common case: nothing to
/// send).
fn bench_settings(c: &mut Criterion) {
    use shardbouncer::server::ParamSet;
    const REPORTED: &[(&str, &str)] = &[
        ("application_name", "pgbench"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("default_transaction_read_only", "off"),
        ("in_hot_standby", "off"),
        ("integer_datetimes", "on"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "off"),
        ("server_encoding", "UTF8"),
        ("server_version", "15.18"),
        ("session_authorization", "app"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "Etc/UTC"),
        ("extra_float_digits", "1"),
    ];
    let mut state = ServerState::new("127.0.0.1:5432".parse().unwrap(), None);
    let mut want = ParamSet::default();
    for (k, v) in REPORTED {
        state.initial.set(k, v);
        state.current.set(k, v);
        want.set(k, v);
    }
    let unreported = ParamSet::default();
    c.bench_function("server/sync_statement/same_settings", |b| {
        b.iter(|| {
            assert!(state
                .sync_statement(criterion::black_box(&want), &want, &unreported)
                .is_none())
        })
    });
}

criterion_group!(benches, bench_checkout, bench_settings);
criterion_main!(benches);
