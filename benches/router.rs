//! Criterion benchmarks for the pure routing path: analyzing a statement (its
//! forms, tenants and effects), the whole routing decision, and looking a tenant
//! up in a shard map.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardbouncer::router::bind::ParamValues;
use shardbouncer::router::keyed::KeyedState;
use shardbouncer::router::{
    analyze, decide, int_spans, same_shape, Facts, Item, NoTenant, Routing, SessionView,
    ShapeCache, ShardMap, Source, TenantKey, Tenants, Tx, Unit,
};
use std::sync::Arc;

const KEY: &[u8] = b"tenant_id";

fn bench_scanner(c: &mut Criterion) {
    let short = b"SELECT id, name, email FROM users WHERE tenant_id = $1 AND id = $2";
    // ~2 KB query with the key near the end.
    let mut long = String::from("SELECT ");
    while long.len() < 1900 {
        long.push_str("t.col_a, 'literal -- not a comment', \"Quoted\", /* c */ coalesce(x, 0), ");
    }
    long.push_str("1 FROM orders t JOIN items i ON i.order_id = t.id WHERE t.status = 'open' AND t.tenant_id = 4242 LIMIT 10");
    let commented = b"SELECT * FROM users WHERE id = $1 /*action='show',controller='users',framework='rails',tenant_id='acme%20corp'*/";

    let multi =
        b"SET statement_timeout = '5s'; SELECT * FROM t WHERE tenant_id IN (1, 2, 3); COMMIT";
    let mut f = Facts::default();
    c.bench_function("analyze/short_oltp", |b| {
        b.iter(|| analyze(black_box(short), KEY, true, &mut f))
    });
    c.bench_function("analyze/2kb_key_at_end", |b| {
        b.iter(|| analyze(black_box(long.as_bytes()), KEY, true, &mut f))
    });
    c.bench_function("analyze/sqlcommenter", |b| {
        b.iter(|| analyze(black_box(commented), KEY, true, &mut f))
    });
    c.bench_function("analyze/multi_statement", |b| {
        b.iter(|| analyze(black_box(multi), KEY, true, &mut f))
    });
    // An ORM's join with the tenant in a literal: every clause of it is
    // followed (select list, ON, WHERE, ORDER BY).
    let orm = b"SELECT accounts.id, accounts.name, CASE WHEN accounts.plan = 'pro' THEN 1 ELSE 0 END AS pro FROM accounts JOIN orders ON orders.account_id = accounts.id AND orders.tenant_id = accounts.tenant_id WHERE accounts.tenant_id = 42 AND orders.created_at > now() - interval '1 day' AND coalesce(orders.total, 0) > 10 ORDER BY accounts.id LIMIT 10";
    c.bench_function("analyze/orm_join", |b| {
        b.iter(|| analyze(black_box(orm), KEY, true, &mut f))
    });
    c.bench_function("analyze/unrouted", |b| {
        b.iter(|| analyze(black_box(short), b"", true, &mut f))
    });
    // A driver's catalog read (asyncpg's type lookup, PgJDBC's), walked
    // token by token at every depth to be taken as tenant-free.
    let catalog = b"SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t INNER JOIN pg_catalog.pg_namespace ns ON (ns.oid = t.typnamespace) WHERE t.typname = $1 AND ns.nspname = $2";
    c.bench_function("analyze/catalog_read", |b| {
        b.iter(|| analyze(black_box(catalog), KEY, true, &mut f))
    });
    // What `pgbench -S` sends, on a database without routing.
    let pgbench = b"SELECT abalance FROM pgbench_accounts WHERE aid = 4242;";
    c.bench_function("analyze/pgbench_select_unrouted", |b| {
        b.iter(|| analyze(black_box(pgbench), b"", true, &mut f))
    });
    // And one of its tpcb-like statements.
    let update = b"UPDATE pgbench_accounts SET abalance = abalance + -2331 WHERE aid = 4242;";
    c.bench_function("analyze/pgbench_update_unrouted", |b| {
        b.iter(|| analyze(black_box(update), b"", true, &mut f))
    });
    // The same statement with other literals, its shape known: a session
    // checks it against its last text, a worker's cache by hash and check.
    let mut ints = Vec::new();
    int_spans(update, true, &mut ints);
    let other = b"UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 99999;";
    c.bench_function("shape/same_shape_update", |b| {
        b.iter(|| same_shape(black_box(update), &ints, black_box(other)))
    });
    let mut cache = ShapeCache::new();
    analyze(update, b"", true, &mut f);
    let h = ShapeCache::hash(b"", true, update);
    cache.offer(h, b"", true, update, &f);
    cache.offer(h, b"", true, update, &f);
    let mut g = Facts::default();
    c.bench_function("shape/cache_hit_update", |b| {
        b.iter(|| {
            let h = ShapeCache::hash(b"", true, black_box(other));
            g.clone_from(cache.get(h, b"", true, other).expect("kept"));
        })
    });
}

/// Two text-format Bind values.
struct Two;

impl ParamValues for Two {
    fn count(&self) -> usize {
        2
    }
    fn format(&self, _: usize) -> i16 {
        0
    }
    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>)) {
        f(0, Some(b"4242"));
        f(1, Some(b"17"));
    }
}

fn bench_decide(c: &mut Criterion) {
    let names: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    let r = Routing {
        key: "tenant_id".into(),
        sources: vec![Source::Startup, Source::Comment, Source::Set, Source::Scan],
        no_tenant: NoTenant::Reject,
        default_shard: None,
        lock_startup_tenant: false,
        user_suffix: None,
        map: Arc::new(ShardMap::default_for(&names)),
        map_source: None,
        loaded_at: std::time::SystemTime::now(),
    };
    let t = Tenants::default();
    let view = SessionView {
        tenants: &t,
        tx: Tx::Idle,
        pinned_by: None,
        std_strings: true,
        ascii_only: false,
        keys_ascii_only: false,
        lexing_unsure: false,
        owns_server: false,
        server_failed: false,
        types_untrusted: false,
        runs_rollback_to: false,
        held_state: false,
        server_copies: false,
    };
    let mut scratch = Vec::new();
    let mut f = Facts::default();
    analyze(
        b"SELECT * FROM t WHERE tenant_id = 4242 AND id = 1",
        KEY,
        true,
        &mut f,
    );
    c.bench_function("decide/simple_query", |b| {
        b.iter(|| decide(&r, &view, Unit::query(black_box(&f)), &mut scratch))
    });
    let mut p = Facts::default();
    analyze(
        b"SELECT * FROM t WHERE tenant_id = $1 AND id = $2",
        KEY,
        true,
        &mut p,
    );
    c.bench_function("decide/bind_batch", |b| {
        b.iter(|| {
            let items = [
                Item::Bind(black_box(&p), Default::default(), Two, b""),
                Item::Execute(b""),
            ];
            decide(&r, &view, Unit::batch(items.into_iter()), &mut scratch)
        })
    });
}

fn bench_shardmap(c: &mut Criterion) {
    let names: Vec<String> = (0..32).map(|i| format!("s{i}")).collect();
    let mut text = String::from("version = 1\nmethod = \"citus\"\n[tenants]\n");
    for i in 0..1000 {
        text.push_str(&format!("\"big{i}\" = \"s{}\"\n", i % 32));
    }
    let citus = ShardMap::parse(&text, &names).unwrap();
    let mut rtext = String::from("version = 1\nmethod = \"range\"\n");
    for i in 0..32 {
        rtext.push_str(&format!(
            "[[ranges]]\nfrom = {}\nto = {}\nshard = \"s{i}\"\n",
            i * 100_000,
            i * 100_000 + 99_999
        ));
    }
    let range = ShardMap::parse(&rtext, &names).unwrap();
    let int_key = TenantKey::new(b"123456").unwrap();
    let text_key = TenantKey::new(b"acme-corporation").unwrap();
    let override_key = TenantKey::new(b"big517").unwrap();

    c.bench_function("route/citus_int", |b| {
        b.iter(|| citus.route(black_box(&int_key)))
    });
    c.bench_function("route/citus_text", |b| {
        b.iter(|| citus.route(black_box(&text_key)))
    });
    c.bench_function("route/override_hit", |b| {
        b.iter(|| citus.route(black_box(&override_key)))
    });
    c.bench_function("route/range", |b| {
        b.iter(|| range.route(black_box(&int_key)))
    });
    c.bench_function("route/canonical_tenant_int", |b| {
        b.iter(|| citus.canonical_tenant(black_box(&int_key)))
    });
}

/// The hash of the maps a routed transaction looks its tenant up in, against
/// std's SipHash.
fn bench_tenant_hash(c: &mut Criterion) {
    use std::hash::BuildHasher;
    let key = TenantKey::new(b"acme-corporation").unwrap();
    let keyed = KeyedState::default();
    let sip = std::collections::hash_map::RandomState::new();
    c.bench_function("tenant_hash/keyed", |b| {
        b.iter(|| keyed.hash_one(black_box(&key)))
    });
    c.bench_function("tenant_hash/siphash", |b| {
        b.iter(|| sip.hash_one(black_box(&key)))
    });
}

criterion_group!(
    benches,
    bench_scanner,
    bench_decide,
    bench_shardmap,
    bench_tenant_hash
);
criterion_main!(benches);
