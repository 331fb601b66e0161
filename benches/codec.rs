//! Criterion benchmarks for the wire codec on the hot path: finding frame
//! boundaries in server responses and client pipelines, the borrowed
//! `Parse`/`Bind` views, and the builders for messages shardbouncer writes
//! itself. (Tenant scanning and shard-map lookup are in `benches/router.rs`.)
//!
//! Run with `cargo bench --bench codec`; the whole file takes well under a minute.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardbouncer::protocol::{
    self, data_row, error_response, frame_header, parse_error, ready_for_query, Bind, Parse,
};

/// Same limit the client side uses by default (`max_message_size`).
const MAX: usize = 256 * 1024 * 1024;

// ---- message construction helpers (test data only) ---------------------------

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// RowDescription + `rows` DataRows shaped like `pgbench_accounts`
/// (aid, bid, abalance, 84-char filler) + CommandComplete + ReadyForQuery.
fn server_response(rows: usize) -> BytesMut {
    let mut b = BytesMut::new();
    protocol::row_description(
        &mut b,
        &[("aid", 23), ("bid", 23), ("abalance", 23), ("filler", 1042)],
    );
    let filler = " ".repeat(84);
    for i in 0..rows {
        let aid = (100_000 + i).to_string();
        data_row(
            &mut b,
            &[Some(aid.as_str()), Some("1"), Some("-4711"), Some(&filler)],
        );
    }
    protocol::command_complete(&mut b, &format!("SELECT {rows}"));
    ready_for_query(&mut b, shardbouncer::protocol::TxStatus::Idle);
    b
}

/// The reply to pgbench -S's `SELECT abalance FROM pgbench_accounts WHERE aid = $1`.
fn small_response() -> BytesMut {
    let mut b = BytesMut::new();
    protocol::row_description(&mut b, &[("abalance", 23)]);
    data_row(&mut b, &[Some("0")]);
    protocol::command_complete(&mut b, "SELECT 1");
    ready_for_query(&mut b, shardbouncer::protocol::TxStatus::Idle);
    b
}

fn parse_body(name: &[u8], query: &[u8], types: &[u32]) -> BytesMut {
    let mut b = BytesMut::new();
    cstr(&mut b, name);
    cstr(&mut b, query);
    b.put_i16(types.len() as i16);
    for t in types {
        b.put_u32(*t);
    }
    b
}

fn bind_body(stmt: &[u8], params: &[Option<&[u8]>]) -> BytesMut {
    let mut b = BytesMut::new();
    cstr(&mut b, b"");
    cstr(&mut b, stmt);
    b.put_i16(1);
    b.put_i16(0); // all text
    b.put_i16(params.len() as i16);
    for p in params {
        match p {
            None => b.put_i32(-1),
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
        }
    }
    b.put_i16(0); // result formats
    b
}

fn framed(tag: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    let at = begin(&mut b, tag);
    b.put_slice(body);
    finish(&mut b, at);
    b
}

/// One pgbench tpcb transaction in extended protocol (-M extended): seven
/// Parse/Bind/Describe/Execute/Sync groups, as the client pipeline arrives.
fn client_pipeline() -> BytesMut {
    let stmts: [(&[u8], usize); 7] = [
        (b"BEGIN", 0),
        (
            b"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            2,
        ),
        (b"SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1),
        (
            b"UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
            2,
        ),
        (
            b"UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
            2,
        ),
        (
            b"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
            4,
        ),
        (b"END", 0),
    ];
    let mut out = BytesMut::new();
    for (sql, n) in stmts {
        out.extend_from_slice(&framed(b'P', &parse_body(b"", sql, &[])));
        let vals: Vec<Option<&[u8]>> = (0..n).map(|_| Some(&b"4242"[..])).collect();
        out.extend_from_slice(&framed(b'B', &bind_body(b"", &vals)));
        let mut d = BytesMut::new();
        d.put_u8(b'P');
        cstr(&mut d, b"");
        out.extend_from_slice(&framed(b'D', &d));
        let mut e = BytesMut::new();
        cstr(&mut e, b"");
        e.put_i32(0);
        out.extend_from_slice(&framed(b'E', &e));
        out.extend_from_slice(&framed(b'S', b""));
    }
    out
}

// ---- framing -------------------------------------------------------------------

/// Walk `buf` the way `Session::process_server` does: header, completeness check,
/// count ReadyForQuery, advance. Returns (frames, ready_for_query count).
#[inline]
fn walk(buf: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    let (mut frames, mut rfq) = (0, 0);
    while let Ok(Some((tag, len))) = frame_header(&buf[pos..], usize::MAX >> 1) {
        if buf.len() - pos < len {
            break;
        }
        frames += 1;
        if tag == b'Z' {
            rfq += 1;
        }
        pos += len;
    }
    (frames, rfq)
}

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    let big = server_response(100);
    assert_eq!(walk(&big), (103, 1));
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("walk/rowdesc+100rows+cc+rfq", |b| {
        b.iter(|| walk(black_box(&big)))
    });

    // 64 back-to-back small replies: what a busy pgbench -S connection sees.
    let one = small_response();
    let mut many = BytesMut::new();
    for _ in 0..64 {
        many.extend_from_slice(&one);
    }
    assert_eq!(walk(&many), (256, 64));
    g.throughput(Throughput::Bytes(many.len() as u64));
    g.bench_function("walk/64x_select1_reply", |b| {
        b.iter(|| walk(black_box(&many)))
    });

    // The session splits every client frame off its read buffer as `Bytes`
    // before handling it; measure that together with the header peek.
    let pipe = client_pipeline();
    g.throughput(Throughput::Bytes(pipe.len() as u64));
    g.bench_function("split_to/tpcb_extended_pipeline", |b| {
        b.iter_batched_ref(
            || pipe.clone(),
            |buf| {
                let mut n = 0;
                while let Ok(Some((tag, len))) = frame_header(buf, MAX) {
                    if buf.len() < len {
                        break;
                    }
                    let frame = buf.split_to(len).freeze();
                    n += frame.len() + tag as usize;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---- Parse / Bind views --------------------------------------------------------

fn bench_views(c: &mut Criterion) {
    let mut g = c.benchmark_group("views");

    let parse = parse_body(
        b"stmt_42",
        b"SELECT id, name, email FROM users WHERE tenant_id = $1 AND id = $2",
        &[20, 20],
    );
    g.throughput(Throughput::Bytes(parse.len() as u64));
    g.bench_function("parse/2_params", |b| {
        b.iter(|| {
            let p = Parse::parse(black_box(&parse)).unwrap();
            (p.query.len(), p.param_type(1))
        })
    });

    let vals: Vec<Vec<u8>> = (0..8).map(|i| format!("value-{i}").into_bytes()).collect();
    let refs: Vec<Option<&[u8]>> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| (i != 3).then_some(&v[..]))
        .collect();
    let bind = bind_body(b"stmt_42", &refs);
    g.throughput(Throughput::Bytes(bind.len() as u64));
    g.bench_function("bind/parse+param0", |b| {
        b.iter(|| {
            let v = Bind::parse(black_box(&bind)).unwrap();
            v.param(0).map(|p| p.map(<[u8]>::len))
        })
    });
    g.bench_function("bind/parse+param7_of_8", |b| {
        b.iter(|| {
            let v = Bind::parse(black_box(&bind)).unwrap();
            (v.param(7).map(|p| p.map(<[u8]>::len)), v.format(7))
        })
    });
    g.bench_function("bind/parse+all_8_params", |b| {
        b.iter(|| {
            let v = Bind::parse(black_box(&bind)).unwrap();
            let mut total = 0;
            for i in 0..v.param_count() {
                if let Some(Some(p)) = v.param(i) {
                    total += p.len();
                }
            }
            total
        })
    });

    let mut err = BytesMut::new();
    error_response(
        &mut err,
        "42P17",
        "no tenant_id found in statement; add /* tenant_id=... */",
    );
    let body = err.split_off(5);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_error", |b| b.iter(|| parse_error(black_box(&body))));
    g.finish();
}

// ---- builders ------------------------------------------------------------------

fn bench_builders(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    let mut buf = BytesMut::with_capacity(4096);

    error_response(&mut buf, "42P17", "no tenant_id found in statement");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("error_response", |b| {
        b.iter(|| {
            buf.clear();
            error_response(
                &mut buf,
                black_box("42P17"),
                black_box("no tenant_id found in statement"),
            );
            buf.len()
        })
    });

    buf.clear();
    let row = [Some("12345"), None, Some("tenant 42: alice"), Some("t")];
    data_row(&mut buf, &row);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("data_row/4_cols", |b| {
        b.iter(|| {
            buf.clear();
            data_row(&mut buf, black_box(&row));
            buf.len()
        })
    });

    g.throughput(Throughput::Bytes(6));
    g.bench_function("ready_for_query", |b| {
        b.iter(|| {
            buf.clear();
            ready_for_query(&mut buf, black_box(shardbouncer::protocol::TxStatus::Idle));
            buf.len()
        })
    });

    // A console reply: SHOW-style 20 rows of 6 columns appended to one buffer.
    let rows: Vec<[Option<String>; 6]> = (0..20)
        .map(|i| {
            [
                Some(format!("app{i}")),
                Some("app".into()),
                Some(i.to_string()),
                Some("0".into()),
                None,
                Some("transaction".into()),
            ]
        })
        .collect();
    buf.clear();
    for r in &rows {
        data_row(&mut buf, r);
    }
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("data_row/console_20x6", |b| {
        b.iter(|| {
            buf.clear();
            for r in black_box(&rows) {
                data_row(&mut buf, r);
            }
            buf.len()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_framing, bench_views, bench_builders
}
criterion_main!(benches);
