//! Named prepared statements in transaction mode (issue: prepared statements, TLS, auth).

mod support;

use shardbouncer::router::{ShardMap, TenantKey};
use std::time::Duration;
use support::raw::{first_column, first_error, tags, Raw};
use support::{basic_config, Bouncer, PgCluster};

fn trust(cfg: String) -> String {
    cfg.replace("type = \"scram-sha-256\"", "type = \"trust\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exact_errors_for_statement_names() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let mut c = Raw::login(b.port, "app", "app");
    // A name reused without Close: 42P05, and the pipeline skips to Sync.
    let m = c
        .parse("s1", "SELECT 1")
        .sync()
        .parse("s1", "SELECT 2")
        .bind("s1", &[])
        .execute()
        .sync()
        .run(2);
    assert_eq!(first_error(&m).as_deref(), Some("42P05"), "{}", tags(&m));
    assert_eq!(tags(&m), "1ZEZ");
    // The first definition is intact.
    let m = c.bind("s1", &[]).execute().sync().run(1);
    assert_eq!(first_column(&m), vec!["1"]);
    // An unknown name: 26000.
    let m = c.bind("nope", &[]).execute().sync().run(1);
    assert_eq!(first_error(&m).as_deref(), Some("26000"));
    let m = c.describe_stmt("nope").sync().run(1);
    assert_eq!(first_error(&m).as_deref(), Some("26000"));
    // Close frees the name for reuse.
    let m = c
        .close_stmt("s1")
        .sync()
        .parse("s1", "SELECT 3")
        .bind("s1", &[])
        .execute()
        .sync()
        .run(2);
    assert_eq!(tags(&m), "3Z12DCZ");
    assert_eq!(first_column(&m), vec!["3"]);
    // DEALLOCATE name / ALL and DISCARD ALL clear the client's names.
    let m = c.query("DEALLOCATE s1").run(1);
    assert_eq!(first_error(&m), None, "{m:?}");
    let m = c.bind("s1", &[]).execute().sync().run(1);
    assert_eq!(first_error(&m).as_deref(), Some("26000"));
    let m = c.query("DEALLOCATE s1").run(1);
    assert_eq!(first_error(&m).as_deref(), Some("26000"));
    c.parse("a", "SELECT 'a'")
        .parse("b", "SELECT 'b'")
        .sync()
        .run(1);
    let m = c.query("DEALLOCATE ALL").run(1);
    assert_eq!(first_error(&m), None);
    assert_eq!(
        first_error(&c.bind("a", &[]).execute().sync().run(1)).as_deref(),
        Some("26000")
    );
    c.parse("a", "SELECT 'a'").sync().run(1);
    let m = c.query("DISCARD ALL").run(1);
    assert_eq!(first_error(&m), None, "{m:?}");
    assert_eq!(
        first_error(&c.bind("a", &[]).execute().sync().run(1)).as_deref(),
        Some("26000")
    );
    // After DISCARD ALL the server's cache is empty too: preparing again works.
    let m = c
        .parse("a", "SELECT 'again'")
        .bind("a", &[])
        .execute()
        .sync()
        .run(1);
    assert_eq!(first_column(&m), vec!["again"]);
}

/// `DISCARD ALL` or `DEALLOCATE ALL` through Parse/Bind/Execute drops the
/// client's statement names, as the simple Query does and as Postgres does
/// (PgJDBC runs both so and then prepares its statements again: the names
/// stayed, and the new Parse got 42P05; probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_through_the_extended_protocol_drops_the_clients_names() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let mut c = Raw::login(b.port, "app", "app");
    for stmt in ["DISCARD ALL", "DEALLOCATE ALL"] {
        let m = c
            .parse("s1", "SELECT 1")
            .bind("s1", &[])
            .execute()
            .sync()
            .run(1);
        assert_eq!(first_column(&m), vec!["1"], "{stmt}");
        let m = c.parse("", stmt).bind("", &[]).execute().sync().run(1);
        assert_eq!(first_error(&m), None, "{stmt}: {}", tags(&m));
        // The name is gone: Bind gets 26000, and a new Parse of it works.
        let m = c.bind("s1", &[]).execute().sync().run(1);
        assert_eq!(first_error(&m).as_deref(), Some("26000"), "{stmt}");
        let m = c
            .parse("s1", "SELECT 2")
            .bind("s1", &[])
            .execute()
            .sync()
            .run(1);
        assert_eq!(first_error(&m), None, "{stmt}: {}", tags(&m));
        assert_eq!(first_column(&m), vec!["2"], "{stmt}");
        let m = c.close_stmt("s1").sync().run(1);
        assert_eq!(first_error(&m), None, "{stmt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_keep_order_and_skip_to_sync_after_errors() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let mut c = Raw::login(b.port, "app", "app");
    c.query("CREATE TABLE IF NOT EXISTS pipe(x int)").run(1);
    // Many statements before one Sync, an error in the middle: nothing after it runs,
    // and the implicit transaction (the first insert) is rolled back as in Postgres.
    let m = c
        .parse("ins", "INSERT INTO pipe VALUES ($1)")
        .bind("ins", &["1"])
        .execute()
        .parse("bad", "SELECT * FROM no_such_table")
        .bind("ins", &["2"])
        .execute()
        .sync()
        .run(1);
    assert_eq!(tags(&m), "12CEZ", "{m:?}");
    assert_eq!(first_error(&m).as_deref(), Some("42P01"));
    let m = c.query("SELECT count(*) FROM pipe").run(1);
    assert_eq!(first_column(&m), vec!["0"]);
    // The failed Parse created no statement.
    assert_eq!(
        first_error(&c.bind("bad", &[]).execute().sync().run(1)).as_deref(),
        Some("26000")
    );
    // Three syncs pipelined; each answers in order even when the pooler answers
    // some messages itself (Close) and prepares lazily on another server.
    let m = c
        .bind("ins", &["5"])
        .execute()
        .sync()
        .close_stmt("ins")
        .sync()
        .parse("q", "SELECT count(*) FROM pipe")
        .bind("q", &[])
        .execute()
        .sync()
        .run(3);
    assert_eq!(tags(&m), "2CZ3Z12DCZ", "{m:?}");
    assert_eq!(first_column(&m), vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_follow_clients_across_servers_and_shards() {
    let s0 = PgCluster::start();
    let s1 = PgCluster::start();
    let map = "version = 1\nmethod = \"citus\"\n";
    let names = vec!["s0".to_string(), "s1".to_string()];
    let parsed = ShardMap::parse(map, &names).unwrap();
    let ports = [s0.port.to_string(), s1.port.to_string()];
    let cfg = format!(
        "{}[databases.app.routing]\nshard_map = \"{{DIR}}/map.toml\"\n",
        basic_config(&[&s0, &s1], "default_pool_size = 2\n")
    );
    let b = Bouncer::start_with_files(&cfg, &[("map.toml", map)]);
    // 200 clients, pool of 2 per shard (4 servers): each prepares once and reuses
    // its statement for tenants on both shards.
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let cs = b.conn_str("app", "secret", "app");
        let ports = ports.clone();
        let parsed = parsed.clone();
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let st = c
                .prepare("SELECT current_setting('port'), $1::int8 FROM (SELECT $1::int8 AS tenant_id) t WHERE tenant_id = $1")
                .await
                .unwrap();
            for k in 0..6i64 {
                let t = i * 7 + k;
                let row = c.query_one(&st, &[&t]).await.unwrap();
                let want = parsed.route(&TenantKey::new(t.to_string().as_bytes()).unwrap()).unwrap().shard;
                assert_eq!(row.get::<_, String>(0), ports[want], "tenant {t}");
                assert_eq!(row.get::<_, i64>(1), t);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each server holds one copy of the statement, not one per client.
    let n = s0.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
    );
    assert!(n.parse::<i32>().unwrap() <= 2, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_between_uses() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&basic_config(&[&pg], "default_pool_size = 2\n"));
    let c = b.connect("app", "secret", "app").await;
    c.batch_execute("CREATE TABLE evolve(id int, a text); INSERT INTO evolve VALUES (1, 'one')")
        .await
        .unwrap();
    let st = c
        .prepare("SELECT a FROM evolve WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&st, &[&1i32])
            .await
            .unwrap()
            .get::<_, String>(0),
        "one"
    );
    // Another client changes the table; the statement's result type is unchanged,
    // so it keeps working (replanned) on whichever server runs it.
    let other = b.connect("app", "secret", "app").await;
    other
        .batch_execute("ALTER TABLE evolve ADD COLUMN b int; CREATE INDEX ON evolve(id)")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            c.query_one(&st, &[&1i32])
                .await
                .unwrap()
                .get::<_, String>(0),
            "one"
        );
    }
    // Dropping the table makes it fail cleanly, and recreating it heals it.
    other.batch_execute("DROP TABLE evolve").await.unwrap();
    let e = c.query_one(&st, &[&1i32]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42P01"), "{e:?}");
    other
        .batch_execute(
            "CREATE TABLE evolve(id int, a text); INSERT INTO evolve VALUES (1, 'reborn')",
        )
        .await
        .unwrap();
    // The statement was prepared on a server before the drop; re-prepare per PG rules.
    let st = c
        .prepare("SELECT a FROM evolve WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&st, &[&1i32])
            .await
            .unwrap()
            .get::<_, String>(0),
        "reborn"
    );
}

#[test]
fn pgbench_prepared_100_clients_pool_of_10() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&basic_config(&[&pg], "default_pool_size = 10\n"));
    let run = |extra: &[&str]| {
        std::process::Command::new("pgbench")
            .env("PGPASSWORD", "secret")
            .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-U", "app"])
            .args(extra)
            .arg("app")
            .output()
            .unwrap()
    };
    let init = run(&["-i", "-q", "-s", "1"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for script in [&["-S"][..], &[][..]] {
        let mut args = vec!["-c", "100", "-j", "2", "-t", "20", "-M", "prepared"];
        args.extend_from_slice(script);
        let out = run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of failed transactions: 0 (0.000%)"),
            "{stdout}"
        );
        assert!(stdout.contains("actually processed: 2000/2000"), "{stdout}");
    }
    let servers: i32 = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
        )
        .parse()
        .unwrap();
    assert!(servers <= 10, "{servers}");
    let _ = Duration::from_secs(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_and_bind_counters_are_exact() {
    let pg = PgCluster::start();
    let cfg = format!(
        "{}[[users]]\nname = \"admin\"\npassword = \"admin\"\n[admin]\nusers = [\"admin\"]\n",
        basic_config(&[&pg], "default_pool_size = 1\n")
    );
    let b = Bouncer::start(&cfg);
    let c = b.connect("app", "secret", "app").await;
    let st = c.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..3i32 {
        let v: i32 = c.query_one(&st, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i + 1);
    }
    let admin = b.connect("admin", "admin", "pgbouncer").await;
    let msgs = admin.simple_query("SHOW STATS_TOTALS").await.unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => {
                Some(r)
            }
            _ => None,
        })
        .expect("a row for app");
    // One client Parse, prepared once on the only server, bound three times.
    assert_eq!(row.get("client_parse_count"), Some("1"));
    assert_eq!(row.get("server_parse_count"), Some("1"));
    assert_eq!(row.get("bind_count"), Some("3"));
}

/// COPY FROM STDIN over the extended protocol, as libpq's PQexecParams sends it
/// (Parse/Bind/Execute/Sync in one go): Postgres ignores that Sync during COPY IN,
/// so the pooler must not wait for its ReadyForQuery, nor release the server before
/// the client's Sync after CopyDone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_through_the_extended_protocol() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let mut c = Raw::login(b.port, "app", "app");
    c.query("CREATE TABLE copy_ext(x int)").run(1);
    let m = c
        .parse("", "COPY copy_ext FROM STDIN")
        .bind("", &[])
        .execute()
        .sync()
        .run_until(b'G');
    assert_eq!(tags(&m), "12G", "{m:?}");
    let m = c.copy_data(b"1\n2\n3\n").copy_done().sync().run(1);
    assert_eq!(tags(&m), "CZ", "{m:?}");
    let m = c.query("SELECT count(*) FROM copy_ext").run(1);
    assert_eq!(first_column(&m), vec!["3"]);
    // The only server went back clean: another client gets it and sees the rows.
    let mut d = Raw::login(b.port, "app", "app");
    let m = d.query("SELECT count(*) FROM copy_ext").run(1);
    assert_eq!(first_column(&m), vec!["3"]);
}

/// After an error in the middle of a pipelined batch, Postgres skips everything up
/// to Sync and owes only ReadyForQuery, however late the rest of the batch
/// arrives: the client gets it, and the server goes back to the pool clean. The
/// pauses are the point of the test (the rest of the batch must arrive after the
/// error came back); nothing waits on them for an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_pipeline_owes_only_ready_for_query_whatever_the_timing() {
    let pg = PgCluster::start();
    pg.psql(
        "app",
        "CREATE TABLE dup(id int PRIMARY KEY); GRANT ALL ON dup TO app;",
    );
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    let mut c = Raw::login(b.port, "app", "app");
    let mut other = Raw::login(b.port, "app", "app");
    // A named statement whose Parse fails, then a Bind of it after the error.
    let m = c
        .parse("s1", "SELECT * FROM no_such_table")
        .bind("s1", &[])
        .msg_flush()
        .run_until(b'E');
    assert_eq!(first_error(&m).as_deref(), Some("42P01"));
    pause().await;
    c.bind("s1", &[]).execute().msg_flush().run(0);
    pause().await;
    let m = c.sync().run(1);
    assert_eq!(tags(&m), "Z", "only ReadyForQuery is owed: {m:?}");
    assert_eq!(m.last().map(|m| m.1.clone()), Some(b"I".to_vec()));
    // The pool of one is free again: another client gets the server.
    let m = other.query("SELECT 1").run(1);
    assert_eq!(first_column(&m), vec!["1"]);
    // executemany hitting a duplicate key on its first row, pieces sent apart.
    c.query("INSERT INTO dup VALUES (1)").run(1);
    let m = c
        .parse("", "INSERT INTO dup VALUES ($1)")
        .bind("", &["1"])
        .execute()
        .msg_flush()
        .run_until(b'E');
    assert_eq!(first_error(&m).as_deref(), Some("23505"));
    pause().await;
    c.bind("", &["2"]).execute().run(0);
    pause().await;
    c.bind("", &["3"]).execute().run(0);
    pause().await;
    let m = c.sync().run(1);
    assert_eq!(tags(&m), "Z", "{m:?}");
    // Idle outside a transaction: the client must not keep the server.
    let m = other.query("SELECT count(*) FROM dup").run(1);
    assert_eq!(first_column(&m), vec!["1"], "nothing after the error ran");
}

/// The fields of an ErrorResponse body but the source location (F, L, R), which
/// tells where in Postgres's C code an error came from, not what the client sees.
fn visible_fields(body: &[u8]) -> Vec<(char, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&f, r)) = rest.split_first() {
        if f == 0 {
            break;
        }
        let end = r.iter().position(|&b| b == 0).unwrap_or(r.len());
        if !b"FLR".contains(&f) {
            out.push((f as char, String::from_utf8_lossy(&r[..end]).into_owned()));
        }
        rest = &r[(end + 1).min(r.len())..];
    }
    out
}

/// Every message of `msgs`, errors reduced to their visible fields.
fn visible(msgs: &[(u8, Vec<u8>)]) -> Vec<(char, Vec<(char, String)>)> {
    msgs.iter()
        .map(|(t, b)| match t {
            b'E' | b'N' => (*t as char, visible_fields(b)),
            _ => (
                *t as char,
                vec![('*', String::from_utf8_lossy(b).into_owned())],
            ),
        })
        .collect()
}

/// Error paths answer exactly as Postgres on the client's own connection: they
/// name the client's statement, never the internal `sb_` one, and carry no field
/// Postgres would not send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_match_postgres_field_for_field() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    type Script = fn(&mut Raw) -> Vec<(u8, Vec<u8>)>;
    let scripts: &[(&str, Script)] = &[
        ("too many bind parameters", |c| {
            c.parse("s1", "SELECT $1::int")
                .bind("s1", &["1", "2"])
                .execute()
                .sync()
                .run(1)
        }),
        ("too few bind parameters", |c| {
            c.parse("s2", "SELECT $1::int + $2::int")
                .bind("s2", &["1"])
                .execute()
                .sync()
                .run(1)
        }),
        ("bad text parameter", |c| {
            c.parse("s3", "SELECT $1::int")
                .bind("s3", &["abc"])
                .execute()
                .sync()
                .run(1)
        }),
        ("bad binary parameter", |c| {
            c.parse_typed("s4", "SELECT $1", &[23])
                .bind_raw("s4", &[Some(b"\x01\x02")], &[1])
                .execute()
                .sync()
                .run(1)
        }),
        ("unknown statement", |c| {
            c.bind("nope", &[]).execute().sync().run(1)
        }),
        ("describe unknown statement", |c| {
            c.describe_stmt("nope").sync().run(1)
        }),
        ("duplicate statement", |c| {
            c.parse("d", "SELECT 1")
                .sync()
                .parse("d", "SELECT 2")
                .sync()
                .run(2)
        }),
        // (A Parse + Sync alone is answered without a server, so its syntax error
        // comes at the first Bind: see `parse_locally` for the deadlock that avoids.)
        ("syntax error in parse", |c| {
            c.parse("x", "SELEC 1")
                .bind("x", &[])
                .execute()
                .sync()
                .run(1)
        }),
        ("syntax error in query", |c| {
            c.query("SELECT FROM WHERE").run(1)
        }),
        ("division by zero", |c| c.query("SELECT 1/0").run(1)),
        ("unknown column", |c| {
            c.query("SELECT nosuchcolumn FROM pg_class").run(1)
        }),
        ("raise in a DO block", |c| {
            c.query("DO $$BEGIN RAISE EXCEPTION 'mine' USING HINT = 'h'; END$$")
                .run(1)
        }),
        ("error in a transaction", |c| {
            c.query("BEGIN")
                .query("SELECT 1/0")
                .query("SELECT 1")
                .query("ROLLBACK")
                .run(4)
        }),
    ];
    let mut bad = Vec::new();
    for (what, script) in scripts {
        let mut direct = Raw::login(pg.port, "trustuser", "app");
        let mut pooled = Raw::login(b.port, "app", "app");
        let (want, got) = (visible(&script(&mut direct)), visible(&script(&mut pooled)));
        if want != got {
            bad.push(format!(
                "{what}:\n  postgres: {want:?}\n  pooled:   {got:?}"
            ));
        }
        if tags(&script(&mut pooled)).is_empty() {
            bad.push(format!("{what}: no answer on reuse"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// What a driver sees when the objects its prepared statements use change: each
/// step's rows or SQLSTATE. Run against Postgres directly and through
/// shardbouncer, the answers must match.
async fn ddl_between_statements(
    c: &tokio_postgres::Client,
    other: &tokio_postgres::Client,
) -> Vec<String> {
    async fn rows(c: &tokio_postgres::Client, st: &tokio_postgres::Statement, p: &str) -> String {
        match c.query(st, &[&p]).await {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect::<Vec<_>>()
                .join(";"),
            Err(e) => format!("error {}", e.code().map(|c| c.code()).unwrap_or("?")),
        }
    }
    let mut out = Vec::new();
    c.batch_execute(
        "DROP TABLE IF EXISTS feel; DROP TYPE IF EXISTS mood; DROP TABLE IF EXISTS wide;
         CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE feel(id int, m mood);
         INSERT INTO feel VALUES (1, 'ok'); CREATE TABLE wide(a text); INSERT INTO wide VALUES ('x')",
    )
    .await
    .unwrap();
    let enum_sql = "SELECT m::text, $1::text::mood::text FROM feel WHERE id = 1";
    let wide_sql = "SELECT *, $1::text FROM wide";
    // Both clients prepare both texts, so every server may hold copies.
    let mut kept = Vec::new();
    for cl in [c, other] {
        let st = cl.prepare(enum_sql).await.unwrap();
        out.push(rows(cl, &st, "sad").await);
        let st = cl.prepare(wide_sql).await.unwrap();
        out.push(rows(cl, &st, "p").await);
        kept.push(st);
    }
    let old = kept.swap_remove(0);
    drop(kept);
    // The type is dropped and created again (new OID); the table gets a column.
    other
        .batch_execute(
            "DROP TABLE feel; DROP TYPE mood; CREATE TYPE mood AS ENUM ('sad', 'ok', 'glad');
             CREATE TABLE feel(id int, m mood); INSERT INTO feel VALUES (1, 'glad');
             ALTER TABLE wide ADD COLUMN b text DEFAULT 'y'",
        )
        .await
        .unwrap();
    // A statement prepared before the change fails as Postgres fails it ...
    out.push(rows(c, &old, "q").await);
    drop(old);
    // ... and one prepared after it (the old one closed, as drivers do) works.
    let st = c.prepare(enum_sql).await.unwrap();
    out.push(rows(c, &st, "glad").await);
    let st = c.prepare(wide_sql).await.unwrap();
    out.push(rows(c, &st, "r").await);
    // psycopg's way: DEALLOCATE ALL after DDL, then prepare again.
    other
        .batch_execute("ALTER TABLE wide ADD COLUMN z text DEFAULT 'z'")
        .await
        .unwrap();
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let st = c.prepare(wide_sql).await.unwrap();
    out.push(rows(c, &st, "s").await);
    // The other client's statements, prepared before the changes, re-prepared.
    for _ in 0..3 {
        let st = other.prepare(enum_sql).await.unwrap();
        out.push(rows(other, &st, "ok").await);
        let st = other.prepare(wide_sql).await.unwrap();
        out.push(rows(other, &st, "t").await);
    }
    // SQL-level statements are Postgres's own: PREPARE, EXECUTE, DEALLOCATE.
    for sql in [
        "BEGIN",
        "PREPARE p AS SELECT 1::text",
        "EXECUTE p",
        "DEALLOCATE p",
        "PREPARE p AS SELECT 2::text",
        "DEALLOCATE ALL",
        "PREPARE p AS SELECT 3::text",
        "EXECUTE p",
        "DEALLOCATE PREPARE p",
        "DEALLOCATE nosuch",
        "ROLLBACK",
    ] {
        out.push(match c.simple_query(sql).await {
            Ok(msgs) => msgs
                .iter()
                .map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        r.get(0).unwrap_or("").to_string()
                    }
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => format!("ok {n}"),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("{sql}: error {}", e.code().map(|c| c.code()).unwrap_or("?")),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_server_statements_are_prepared_afresh_as_postgres_would() {
    let pg = PgCluster::start();
    let direct = ddl_between_statements(
        &pg.connect("app", "secret", "app").await,
        &pg.connect("app", "secret", "app").await,
    )
    .await;
    // Sanity: the scenario does exercise both a failure and the recovery.
    assert!(direct.iter().any(|r| r == "error 0A000"), "{direct:?}");
    assert!(direct.iter().any(|r| r == "glad,glad"), "{direct:?}");
    for mode in ["transaction", "session"] {
        let b = Bouncer::start(&basic_config(
            &[&pg],
            &format!("mode = \"{mode}\"\ndefault_pool_size = 2\n"),
        ));
        let via = ddl_between_statements(
            &b.connect("app", "secret", "app").await,
            &b.connect("app", "secret", "app").await,
        )
        .await;
        assert_eq!(via, direct, "{mode} mode");
    }
}

/// A fresh Parse never fails because of a schema change that came before it,
/// whichever server it lands on once one server has reported its copy stale
/// (probe: a new client's Parse + Describe of a text prepared before an ALTER
/// TABLE got 0A000 "cached plan must not change result type" from a second
/// server's old copy, so asyncpg's one retry failed too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_one_stale_report_no_server_serves_an_old_copy() {
    let pg = PgCluster::start();
    pg.psql(
        "app",
        "CREATE TABLE mig (a text); INSERT INTO mig VALUES ('x'); GRANT ALL ON mig TO app",
    );
    let b = Bouncer::start(&basic_config(&[&pg], "default_pool_size = 2\n"));
    let sql = "SELECT * FROM mig";
    // Two clients, each holding a server in a transaction: both servers
    // prepare the text.
    let mut pids = Vec::new();
    let mut old = Vec::new();
    for _ in 0..2 {
        let x = b.connect("app", "secret", "app").await;
        x.batch_execute("BEGIN").await.unwrap();
        let st = x.prepare(sql).await.unwrap();
        assert_eq!(x.query(&st, &[]).await.unwrap().len(), 1);
        pids.push(
            x.query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
        );
        old.push((x, st));
    }
    assert_ne!(pids[0], pids[1], "both servers hold a copy");
    for (x, _) in &old {
        x.batch_execute("COMMIT").await.unwrap();
    }
    pg.psql("app", "ALTER TABLE mig ADD COLUMN b int");
    // Two new clients, one server each, prepare the text fresh: the first may
    // meet its server's old copy (once), the second, on the other server,
    // must not.
    let d = b.connect("app", "secret", "app").await;
    let e = b.connect("app", "secret", "app").await;
    let mut pids2 = Vec::new();
    for x in [&d, &e] {
        x.batch_execute("BEGIN").await.unwrap();
        pids2.push(
            x.query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
        );
    }
    assert_ne!(pids2[0], pids2[1]);
    let first = async {
        let st = d.prepare(sql).await?;
        d.query(&st, &[]).await
    }
    .await;
    if let Err(err) = &first {
        assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    }
    let st = e
        .prepare(sql)
        .await
        .expect("a fresh Parse on the other server");
    let rows = e
        .query(&st, &[])
        .await
        .expect("a fresh statement on the other server runs");
    assert_eq!(rows[0].len(), 2, "the new column is there");
    for x in [&d, &e] {
        x.batch_execute("ROLLBACK").await.unwrap();
    }
    // And from now on every fresh Parse works, wherever it lands.
    for x in [&d, &e, &d, &e] {
        let st = x.prepare(sql).await.unwrap();
        assert_eq!(x.query(&st, &[]).await.unwrap()[0].len(), 2);
    }
    drop(old);
}

/// Fuzz regression (session target): an unnamed Parse that Postgres skips after
/// an earlier error in its batch must not become the client's unnamed
/// statement; shardbouncer had recorded it before the error came back and
/// re-created it on the next server, so a later Bind ran a text Postgres never
/// prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_parse_skipped_after_an_error_prepares_nothing() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let run = |port: u16, user: &str| {
        let mut c = Raw::login(port, user, "app");
        let mut out = Vec::new();
        // The Bind of an unknown statement fails; the Parse after it is skipped.
        let m = c
            .bind("nosuch", &[])
            .parse("", "SELECT 'skipped'")
            .msg_flush()
            .run_until(b'E');
        out.push(first_error(&m));
        out.push(Some(tags(&c.sync().run(1))));
        // No unnamed statement exists now.
        let m = c.bind("", &[]).execute().sync().run(1);
        out.push(first_error(&m));
        out.push(Some(first_column(&m).join(",")));
        // And one prepared now works.
        let m = c
            .parse("", "SELECT 'fresh'")
            .bind("", &[])
            .execute()
            .sync()
            .run(1);
        out.push(Some(first_column(&m).join(",")));
        out
    };
    let direct = run(pg.port, "trustuser");
    assert_eq!(direct[2].as_deref(), Some("26000"), "{direct:?}");
    assert_eq!(run(b.port, "app"), direct);
}

/// Session mode: the client owns its server, so its protocol reaches Postgres as
/// it sent it. Named statements keep the client's names (no `sb_` statements,
/// no LRU past `max_prepared_statements`), Close and DEALLOCATE are the
/// server's to answer, an SQL-level PREPARE can be bound by name, and a Parse
/// is validated when it is sent. Every answer equals Postgres's, byte for byte;
/// the next client of the server finds none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_passes_statements_through_under_the_clients_names() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(
        &[&pg],
        "mode = \"session\"\ndefault_pool_size = 1\nmax_prepared_statements = 5\n",
    )));
    const LIST: &str = "SELECT string_agg(name, ',' ORDER BY name) FROM pg_prepared_statements";
    let script = |c: &mut Raw| {
        let mut all = Vec::new();
        for i in 0..8 {
            all.extend(
                c.parse(&format!("S{i}"), &format!("SELECT {i}"))
                    .sync()
                    .run(1),
            );
        }
        all.extend(c.parse("bad", "SELEC 1").sync().run(1));
        all.extend(c.bind("S0", &[]).execute().sync().run(1));
        all.extend(c.query(LIST).run(1));
        all.extend(c.close_stmt("S1").close_stmt("nosuch").sync().run(1));
        all.extend(c.query("DEALLOCATE \"S2\"").run(1));
        all.extend(c.query("DEALLOCATE nosuch").run(1));
        all.extend(c.query("PREPARE q(int) AS SELECT $1 * 2").run(1));
        all.extend(c.bind("q", &["21"]).execute().sync().run(1));
        all.extend(c.describe_stmt("S3").sync().run(1));
        all.extend(c.query(LIST).run(1));
        all
    };
    let mut direct = Raw::login(pg.port, "trustuser", "app");
    let mut pooled = Raw::login(b.port, "app", "app");
    let want = script(&mut direct);
    let got = script(&mut pooled);
    assert_eq!(got, want, "through shardbouncer vs direct");
    let names = first_column(&pooled.query(LIST).run(1));
    assert_eq!(names, ["S0,S3,S4,S5,S6,S7,q"]);
    drop(pooled);
    // The next client of the (only) server finds none of it.
    let mut next = Raw::login(b.port, "app", "app");
    let m = next
        .query("SELECT count(*) FROM pg_prepared_statements")
        .run(1);
    assert_eq!(first_column(&m), ["0"]);
    let m = next
        .parse("S0", "SELECT 'mine'")
        .bind("S0", &[])
        .execute()
        .sync()
        .run(1);
    assert_eq!(first_column(&m), ["mine"]);
}

/// Named statements are bounded in bytes as well as in number: a probe
/// prepared 558 distinct texts of 900 KB and took the process from 8 MB to
/// 488 MB with no error. Past 64 MiB of text on one connection a Parse gets
/// 53400 (the connection stays usable, and a Close makes room again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_text_is_bounded_per_connection() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let port = b.port;
    let (rss_before, _) = b.memory_kib();
    let refused_at = support::blocking(move || {
        let mut c = Raw::login(port, "app", "app");
        let filler = "x".repeat(1 << 20);
        let mut refused_at = None;
        for i in 0..80 {
            let m = c
                .parse(&format!("big{i}"), &format!("SELECT '{filler}' AS x{i}"))
                .sync()
                .run(1);
            if let Some(e) = first_error(&m) {
                assert_eq!(e, "53400", "statement {i}");
                refused_at = Some(i);
                break;
            }
        }
        // Still usable; a Close makes room for one more.
        let m = c.bind("big0", &[]).execute().sync().run(1);
        assert_eq!(first_column(&m).len(), 1);
        let m = c.close_stmt("big0").sync().run(1);
        assert_eq!(first_error(&m), None);
        let m = c
            .parse("again", &format!("SELECT '{filler}'"))
            .sync()
            .run(1);
        assert_eq!(first_error(&m), None, "a Close made room");
        refused_at
    });
    // 64 MiB of 1 MiB texts: the 64th (index 63) no longer fits.
    assert_eq!(refused_at, Some(63));
    let (rss, _) = b.memory_kib();
    assert!(
        rss < rss_before + 160 * 1024,
        "RSS {rss_before} -> {rss} KiB for 64 MiB of statement text"
    );
}

/// Statements a client closed stay prepared on their server for the next
/// client with the same text, but within a byte budget (16 MiB of text per
/// server): a probe that prepared, ran and closed 150 texts of 8 MiB took
/// the pooler to 1.2 GB and the backend to 2.4 GB, bounded only by
/// `max_prepared_statements`. The least recently used are closed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_kept_on_a_server_are_bounded_in_bytes() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&trust(basic_config(&[&pg], "default_pool_size = 1\n")));
    let port = b.port;
    let (rss_before, _) = b.memory_kib();
    let kept = support::blocking(move || {
        let mut c = Raw::login(port, "app", "app");
        let filler = "x".repeat(2 << 20);
        for i in 0..40 {
            let m = c
                .parse(
                    &format!("s{i}"),
                    &format!("SELECT length('{filler}') + {i}"),
                )
                .bind(&format!("s{i}"), &[])
                .execute()
                .close_stmt(&format!("s{i}"))
                .sync()
                .run(1);
            assert_eq!(first_error(&m), None, "statement {i}");
        }
        let m = c
            .parse("n", "SELECT count(*) FROM pg_prepared_statements")
            .bind("n", &[])
            .execute()
            .sync()
            .run(1);
        first_column(&m)[0].parse::<usize>().unwrap()
    });
    // 16 MiB of 2 MiB texts, the count query itself, and one over the budget
    // closed only at the next attach.
    assert!(kept <= 10, "{kept} statements still prepared on the server");
    let (rss, _) = b.memory_kib();
    assert!(
        rss < rss_before + 60 * 1024,
        "RSS {rss_before} -> {rss} KiB after 80 MiB of closed statements"
    );
}
