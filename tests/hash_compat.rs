//! Bit-for-bit comparison of `shardbouncer::router::hash` with a real
//! PostgreSQL 15 server.
//!
//! The test is self-contained: it runs `initdb` into a throwaway directory
//! under /tmp, starts `postgres` on a free loopback port, compares thousands of
//! keys (one round trip per batch) and stops the server in `Drop`. If the
//! Postgres binaries cannot be found the test fails rather than silently
//! passing, because these hashes decide where tenant data lives.

use shardbouncer::router::hash::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio_postgres::{Client, NoTls};

/// A throwaway Postgres cluster; stopped and deleted on drop.
struct TempPg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bin(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return d;
            }
        }
    }
    for v in ["17", "16", "15", "14"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join(name).is_file() {
            return d;
        }
    }
    panic!("{name} not found on PATH nor in /usr/lib/postgresql/*/bin");
}

impl TempPg {
    fn cmd(&self, prog: &str) -> Command {
        let exe = self.bin.join(prog);
        if self.as_postgres {
            // Postgres refuses to run as root.
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn start() -> TempPg {
        let bin = find_bin("initdb");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "sb-hash-compat-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if as_postgres {
            let st = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(st.success(), "chown failed");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = TempPg {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.dir.join("data");
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.display()
        );
        let out = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-w")
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(pg.dir.join("log"))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.dir.join("log")).unwrap_or_default()
        );
        pg
    }

    async fn connect(&self) -> Client {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&conn, NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TempPg {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

/// Deterministic pseudo-random generator (SplitMix64) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn int8_keys() -> Vec<i64> {
    let mut v = vec![
        0,
        1,
        -1,
        2,
        3,
        4,
        5,
        6,
        42,
        -7,
        i64::MIN,
        i64::MAX,
        i64::MIN + 1,
        i64::MAX - 1,
        i32::MIN as i64,
        i32::MAX as i64,
        i32::MIN as i64 - 1,
        i32::MAX as i64 + 1,
        u32::MAX as i64,
        1 << 32,
        -(1 << 32),
    ];
    for i in -1000..1000 {
        v.push(i);
    }
    let mut r = Rng(1);
    for _ in 0..3000 {
        v.push(r.next() as i64);
        v.push((r.next() as i64) >> (r.next() % 63));
    }
    v
}

fn text_keys() -> Vec<String> {
    let mut v: Vec<String> = vec![
        String::new(),
        "acme".into(),
        "42".into(),
        "tenant-ü-日本".into(),
        "🦀🦀🦀".into(),
        "Ünïcödé ☃".into(),
    ];
    // Every length 0..=40 hits every tail case several times over.
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_ éü日"
        .chars()
        .collect();
    let mut r = Rng(7);
    for len in 0..=40 {
        for _ in 0..20 {
            let s: String = (0..len)
                .map(|_| alphabet[(r.next() % alphabet.len() as u64) as usize])
                .collect();
            v.push(s);
        }
        v.push("x".repeat(len));
    }
    for _ in 0..1000 {
        let len = (r.next() % 200) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(r.next() % alphabet.len() as u64) as usize])
            .collect();
        v.push(s);
    }
    v
}

fn uuid_keys() -> Vec<[u8; 16]> {
    let mut r = Rng(99);
    let mut v = vec![[0u8; 16], [0xffu8; 16]];
    for _ in 0..1000 {
        let a = r.next().to_be_bytes();
        let b = r.next().to_be_bytes();
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&a);
        u[8..].copy_from_slice(&b);
        v.push(u);
    }
    v
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

const SEEDS: [i64; 5] = [0, 1, -1, 0x7A5B_2236_7996_DCFD, 123_456_789_012];

#[tokio::test(flavor = "multi_thread")]
async fn hashes_match_postgres() {
    let pg = TempPg::start();
    let c = pg.connect().await;

    // hashint8 / hashint4 / hashint8extended
    let ints = int8_keys();
    let rows = c
        .query("SELECT x, hashint8(x) FROM unnest($1::int8[]) x", &[&ints])
        .await
        .unwrap();
    assert_eq!(rows.len(), ints.len());
    for r in &rows {
        let x: i64 = r.get(0);
        assert_eq!(hashint8(x), r.get::<_, i32>(1), "hashint8({x})");
    }
    let ints4: Vec<i32> = ints.iter().map(|&x| x as i32).collect();
    let rows = c
        .query("SELECT x, hashint4(x) FROM unnest($1::int4[]) x", &[&ints4])
        .await
        .unwrap();
    for r in &rows {
        let x: i32 = r.get(0);
        assert_eq!(hashint4(x), r.get::<_, i32>(1), "hashint4({x})");
    }
    for seed in SEEDS {
        let rows = c
            .query(
                "SELECT x, hashint8extended(x, $2) FROM unnest($1::int8[]) x",
                &[&ints, &seed],
            )
            .await
            .unwrap();
        for r in &rows {
            let x: i64 = r.get(0);
            assert_eq!(
                hashint8extended(x, seed as u64),
                r.get::<_, i64>(1),
                "hashint8extended({x}, {seed})"
            );
        }
    }

    // hashtext / hashtextextended
    let texts = text_keys();
    let rows = c
        .query("SELECT x, hashtext(x) FROM unnest($1::text[]) x", &[&texts])
        .await
        .unwrap();
    assert_eq!(rows.len(), texts.len());
    for r in &rows {
        let x: &str = r.get(0);
        assert_eq!(
            hashtext(x.as_bytes()),
            r.get::<_, i32>(1),
            "hashtext({x:?})"
        );
    }
    for seed in SEEDS {
        let rows = c
            .query(
                "SELECT x, hashtextextended(x, $2) FROM unnest($1::text[]) x",
                &[&texts, &seed],
            )
            .await
            .unwrap();
        for r in &rows {
            let x: &str = r.get(0);
            assert_eq!(
                hashtextextended(x.as_bytes(), seed as u64),
                r.get::<_, i64>(1),
                "hashtextextended({x:?}, {seed})"
            );
        }
    }

    // uuid_hash / uuid_hash_extended (sent as text to avoid needing the
    // tokio-postgres uuid feature).
    let uuids = uuid_keys();
    let utexts: Vec<String> = uuids.iter().map(uuid_text).collect();
    let rows = c
        .query(
            "SELECT x::text, uuid_hash(x::uuid), uuid_hash_extended(x::uuid, $2) \
             FROM unnest($1::text[]) x",
            &[&utexts, &SEEDS[3]],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), uuids.len());
    for (u, r) in uuids.iter().zip(&rows) {
        let x: &str = r.get(0);
        assert_eq!(x, uuid_text(u));
        assert_eq!(uuid_hash(u), r.get::<_, i32>(1), "uuid_hash({x})");
        assert_eq!(
            uuid_hash_extended(u, PARTITION_SEED),
            r.get::<_, i64>(2),
            "uuid_hash_extended({x})"
        );
    }

    // Citus regression output: hashint8 of 1..6 (documented in routing.md).
    let rows = c
        .query(
            "SELECT x, hashint8(x) FROM generate_series(1::int8, 6) x",
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        assert_eq!(hashint8(r.get(0)), r.get::<_, i32>(1));
    }

    // Real PARTITION BY HASH tables, several moduli.
    for modulus in [2u64, 3, 4, 7] {
        let mut ddl = String::from(
            "DROP TABLE IF EXISTS pi, pt; \
             CREATE TABLE pi (k bigint) PARTITION BY HASH (k); \
             CREATE TABLE pt (k text) PARTITION BY HASH (k);",
        );
        for r in 0..modulus {
            ddl.push_str(&format!(
                "CREATE TABLE pi_{r} PARTITION OF pi FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r});\
                 CREATE TABLE pt_{r} PARTITION OF pt FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r});"
            ));
        }
        c.batch_execute(&ddl).await.unwrap();
        c.execute("INSERT INTO pi SELECT unnest($1::int8[])", &[&ints])
            .await
            .unwrap();
        c.execute("INSERT INTO pt SELECT unnest($1::text[])", &[&texts])
            .await
            .unwrap();
        let rows = c
            .query("SELECT k, tableoid::regclass::text FROM pi", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), ints.len());
        for r in &rows {
            let k: i64 = r.get(0);
            let part: &str = r.get(1);
            assert_eq!(
                format!("pi_{}", partition_index_int8(k, modulus)),
                part,
                "int8 key {k} modulus {modulus}"
            );
        }
        let rows = c
            .query("SELECT k, tableoid::regclass::text FROM pt", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), texts.len());
        for r in &rows {
            let k: &str = r.get(0);
            let part: &str = r.get(1);
            assert_eq!(
                format!("pt_{}", partition_index_text(k.as_bytes(), modulus)),
                part,
                "text key {k:?} modulus {modulus}"
            );
        }
        // Cross-check with satisfies_hash_partition for a sample.
        let sample: Vec<i64> = ints.iter().copied().take(200).collect();
        for &k in &sample {
            let rem = partition_index_int8(k, modulus) as i32;
            let ok: bool = c
                .query_one(
                    "SELECT satisfies_hash_partition('pi'::regclass, $1::int4, $2::int4, $3::int8)",
                    &[&(modulus as i32), &rem, &k],
                )
                .await
                .unwrap()
                .get(0);
            assert!(ok, "satisfies_hash_partition({k})");
        }
    }
}
