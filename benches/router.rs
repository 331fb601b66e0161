//! Criterion benchmarks for the pure routing path: scanning a statement for
//! its tenant and looking the tenant up in a shard map.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardbouncer::router::{scan, ShardMap, TenantKey};

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

    c.bench_function("scan/short_oltp", |b| {
        b.iter(|| scan(black_box(short), KEY))
    });
    c.bench_function("scan/2kb_key_at_end", |b| {
        b.iter(|| scan(black_box(long.as_bytes()), KEY))
    });
    c.bench_function("scan/sqlcommenter", |b| {
        b.iter(|| scan(black_box(commented), KEY))
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
}

criterion_group!(benches, bench_scanner, bench_shardmap);
criterion_main!(benches);
