//! Criterion benchmarks for parking an idle session between transactions
//! (`Core::park`) and waking it for the next one (`Core::unpark`): the part of
//! that round trip that does not depend on sockets, paid once per transaction.
//!
//! `park+wake/plain` is a client of an unrouted database with nothing set;
//! `park+wake/routed` has a startup tenant and two reported parameters, so its
//! tenant settings are boxed at each park.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use shardbouncer::app::gate::TenantGate;
use shardbouncer::app::Snapshot;
use shardbouncer::client::session::Core;
use shardbouncer::config::Config;
use shardbouncer::router::TenantKey;
use shardbouncer::server::ParamSet;
use std::hint::black_box;
use std::sync::Arc;

const CONFIG: &str = r#"
[databases.app]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 }, { name = "s1", host = "127.0.0.1", port = 2 } ]
[databases.app.routing]
no_tenant = "reject"
[databases.plain]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 } ]
"#;

fn core(db: &str) -> Core {
    let snap = Snapshot::build(Config::parse(CONFIG).expect("config"), 1).expect("snapshot");
    let db = snap.dbs.get(db).expect("db").clone();
    let routed = db.routing.is_some();
    let mut reported = ParamSet::default();
    let mut tenant = None;
    if routed {
        reported.set("application_name", "bench");
        reported.set("TimeZone", "UTC");
        tenant = TenantKey::new(b"42");
    }
    Core::new(
        db,
        1,
        1 << 20,
        reported,
        ParamSet::default(),
        tenant,
        Arc::new(TenantGate::default()),
    )
}

fn park_and_wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    for db in ["plain", "app"] {
        let name = if db == "app" { "routed" } else { "plain" };
        let mut slot = Some(core(db));
        let gate = Arc::new(TenantGate::default());
        g.bench_function(format!("park+wake/{name}"), |b| {
            b.iter(|| {
                let core = slot.take().expect("core");
                let parked = match core.park() {
                    Ok(p) => p,
                    Err(_) => panic!("an idle core parks"),
                };
                slot = Some(Core::unpark(
                    black_box(parked),
                    BytesMut::new(),
                    gate.clone(),
                ));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, park_and_wake);
criterion_main!(benches);
