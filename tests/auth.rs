//! Production auth: auth_file, auth_query with SCRAM pass-through, md5 hash reuse,
//! failed-login limiting (per user and address, and per address). Real Postgres
//! roles, real drivers.

mod support;

use std::time::{Duration, Instant};
use support::{Bouncer, PgCluster};

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| e.to_string())
}

/// One database `app` over `pg` without server_user/server_password, so every user
/// logs in to Postgres as itself with whatever secret shardbouncer has for it.
fn config(pg: &PgCluster, auth_extra: &str, users: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:{{PORT}}\"\n\n\
         [pool]\nmode = \"transaction\"\ndefault_pool_size = 3\n\n\
         [auth]\ntype = \"scram-sha-256\"\n{auth_extra}\n\n\
         {users}\n\n\
         [databases.app]\n\
         shards = [ {{ name = \"s0\", host = \"127.0.0.1\", port = {} }} ]\n",
        pg.port
    )
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    c.query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

fn verifier(pg: &PgCluster, role: &str) -> String {
    pg.psql(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_file_with_scram_verifier_and_md5_hash_and_reload() {
    let pg = PgCluster::start();
    let app_verifier = verifier(&pg, "app");
    assert!(app_verifier.starts_with("SCRAM-SHA-256$"), "{app_verifier}");
    let md5_hash = verifier(&pg, "md5user");
    assert!(md5_hash.starts_with("md5"), "{md5_hash}");
    let userlist = format!(
        ";; PgBouncer-style userlist\n\"app\" \"{app_verifier}\"\n\"md5user\" \"{md5_hash}\"\n"
    );
    let b = Bouncer::start_with_files(
        &config(&pg, "auth_file = \"userlist.txt\"", ""),
        &[("userlist.txt", &userlist)],
    );
    // SCRAM against the stored verifier; toward Postgres by SCRAM pass-through (no
    // plaintext password exists anywhere in the config).
    let c = b.connect("app", "secret", "app").await;
    assert_eq!(current_user(&c).await, "app");
    // md5 toward the client (the stored secret is an md5 hash) and hash reuse toward
    // the server (pg_hba uses md5 for md5user).
    let c2 = b.connect("md5user", "md5pass", "app").await;
    assert_eq!(current_user(&c2).await, "md5user");
    let e = b.try_connect("app", "wrong", "app").await.unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );
    let e = b
        .try_connect("plainuser", "plainpass", "app")
        .await
        .unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );

    // The file is re-read on SIGHUP.
    b.write_file(
        "userlist.txt",
        &format!("{userlist}\"plainuser\" \"plainpass\"\n"),
    );
    b.signal(libc::SIGHUP);
    b.wait_for_log("configuration reloaded").await;
    let c3 = b.connect("plainuser", "plainpass", "app").await;
    assert_eq!(current_user(&c3).await, "plainuser");
    // Connected clients are untouched.
    assert_eq!(current_user(&c).await, "app");
}

/// A stored verifier is never taken for a plain password: one spelled as
/// Postgres's reader allows (`+4096`) works with the password, and one that
/// does not parse lets nobody in, its own text included (probe K: the hash
/// logged in as a password, the password did not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_verifier_is_never_a_password() {
    let pg = PgCluster::start();
    let real = verifier(&pg, "app");
    let spelled = real.replacen("$4096:", "$+4096:", 1);
    assert_ne!(spelled, real);
    let broken = real.replacen("$4096:", "$4096x:", 1);
    let b = Bouncer::start(&config(
        &pg,
        "",
        &format!(
            "[[users]]\nname = \"app\"\npassword = \"{spelled}\"\n\
             [[users]]\nname = \"other\"\npassword = \"{broken}\"\n"
        ),
    ));
    let c = b.connect("app", "secret", "app").await;
    assert_eq!(current_user(&c).await, "app");
    let e = b.try_connect("app", &spelled, "app").await.unwrap_err();
    assert!(msg(&e).contains("28P01"), "{}", msg(&e));
    let e = b.try_connect("other", &broken, "app").await.unwrap_err();
    assert!(msg(&e).contains("28P01"), "{}", msg(&e));
    assert!(b.log().contains("does not parse as one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_scram_pass_through_for_a_user_only_in_postgres() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE ROLE onlypg LOGIN PASSWORD 'pg-only-pass';\n\
         \\connect app\n\
         GRANT ALL ON SCHEMA public TO onlypg;",
    );
    // auth_user postgres: the harness's pg_hba trusts it from 127.0.0.1.
    let b = Bouncer::start(&config(
        &pg,
        "auth_user = \"postgres\"\nauth_cache_ttl = \"1s\"",
        "",
    ));
    let c = b.connect("onlypg", "pg-only-pass", "app").await;
    assert_eq!(current_user(&c).await, "onlypg");
    // Several transactions, a second client, so more server logins use the keys.
    let c2 = b.connect("onlypg", "pg-only-pass", "app").await;
    let (a, bb) = tokio::join!(
        c.query_one("SELECT pg_sleep(0.2)::text, 1", &[]),
        c2.query_one("SELECT pg_sleep(0.2)::text, 2", &[])
    );
    a.unwrap();
    bb.unwrap();
    // md5-hashed role through auth_query: md5 to the client, hash reuse to the server.
    let c3 = b.connect("md5user", "md5pass", "app").await;
    assert_eq!(current_user(&c3).await, "md5user");

    let e = b
        .try_connect("onlypg", "not-the-password", "app")
        .await
        .unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );
    let e = b.try_connect("nosuchrole", "x", "app").await.unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );

    // A changed password takes effect once the cache entry expires.
    pg.psql("postgres", "ALTER ROLE onlypg PASSWORD 'new-pass'");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c4 = b.connect("onlypg", "new-pass", "app").await;
    assert_eq!(current_user(&c4).await, "onlypg");
    // The password is never logged.
    let log = b.log();
    assert!(!log.contains("not-the-password") && !log.contains("pg-only-pass"));
}

/// auth_query opens a server connection as `auth_user` for a user name
/// nobody proved anything about yet: at most a few run at once, whatever
/// the number of logins (probe K: one each, unbounded, until the server
/// refused connections).
#[test]
fn auth_query_connections_are_bounded() {
    let pg = PgCluster::start();
    // Each lookup holds its connection for a while.
    let b = Bouncer::start(&config(
        &pg,
        "auth_user = \"postgres\"\n\
         auth_query = \"SELECT s.usename, s.passwd FROM (SELECT pg_catalog.pg_sleep(0.5)) z \
         LEFT JOIN pg_catalog.pg_shadow s ON s.usename = $1\"",
        "",
    ));
    let logins: Vec<std::net::TcpStream> = (0..12)
        .map(|i| raw_startup(b.port, &format!("stranger{i}")))
        .collect();
    let running = || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' \
             AND pid <> pg_backend_pid()",
        )
        .parse::<usize>()
        .unwrap()
    };
    // Sampled while the twelve lookups drain, four at a time (1.5 s).
    let mut most = 0;
    for _ in 0..10 {
        most = most.max(running());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most >= 1, "no lookup seen running");
    assert!(
        most <= 4,
        "{most} auth_query connections at once (at most 4)"
    );
    drop(logins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_trigger_a_cooldown_for_that_user_from_that_address() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        "auth_failure_limit = 3\nauth_failure_window = \"30s\"\nauth_failure_cooldown = \"1s\"",
        "[[users]]\nname = \"app\"\npassword = \"secret\"\n",
    ));
    // Below the limit nothing changes.
    for _ in 0..2 {
        let e = b.try_connect("app", "wrong", "app").await.unwrap_err();
        assert!(
            msg(&e).contains("password authentication failed"),
            "{}",
            msg(&e)
        );
    }
    b.connect("app", "secret", "app").await;
    let e = b.try_connect("app", "wrong", "app").await.unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );
    // Limit reached: even the right password is refused, before any check.
    let started = Instant::now();
    let e = b.try_connect("app", "secret", "app").await.unwrap_err();
    assert!(
        msg(&e).contains("too many failed login attempts for user \"app\"")
            && msg(&e).contains("28000"),
        "{}",
        msg(&e)
    );
    // Another user from the same address is still checked normally.
    let e = b.try_connect("someone", "else", "app").await.unwrap_err();
    assert!(
        msg(&e).contains("password authentication failed"),
        "{}",
        msg(&e)
    );
    // After the cooldown the user may log in again.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed())).await;
    let c = b.connect("app", "secret", "app").await;
    c.simple_query("SELECT 1").await.unwrap();
    // A user name with a newline cannot forge a log line (probe K).
    let e = b
        .try_connect("x\nFORGED admin logged in", "wrong", "app")
        .await
        .unwrap_err();
    assert!(msg(&e).contains("28P01"), "{}", msg(&e));
    let log = b.log();
    assert!(log.contains("login failed"), "{log}");
    assert!(log.contains("app"), "{log}");
    assert!(!log.contains("wrong\""), "password in log:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line:\n{log}"
    );
}

/// Brute force against one user from an address does not lock out the other users
/// of that address (a NAT, a load balancer); spraying many user names from it hits
/// the per-address cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_one_user_does_not_lock_out_the_others_but_the_address_cap_holds() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE ROLE mallory LOGIN PASSWORD 'mallory-pass';\n\
         \\connect app\n\
         GRANT ALL ON SCHEMA public TO mallory;",
    );
    let b = Bouncer::start(&config(
        &pg,
        "auth_failure_limit = 5\nauth_failure_address_limit = 12\n\
         auth_failure_window = \"60s\"\nauth_failure_cooldown = \"3s\"",
        "[[users]]\nname = \"app\"\npassword = \"secret\"\n\n\
         [[users]]\nname = \"mallory\"\npassword = \"mallory-pass\"\n",
    ));
    // 8 wrong passwords for mallory: the first 5 are checked and fail, then mallory
    // is blocked from this address and the rest are refused unchecked.
    let mut refused_unchecked = 0;
    for i in 0..8 {
        let e = b
            .try_connect("mallory", &format!("guess-{i}-hunter2"), "app")
            .await
            .unwrap_err();
        let m = msg(&e);
        if i < 5 {
            assert!(
                m.contains("password authentication failed"),
                "attempt {i}: {m}"
            );
        } else {
            assert!(
                m.contains("too many failed login attempts for user \"mallory\"")
                    && m.contains("28000"),
                "attempt {i}: {m}"
            );
            refused_unchecked += 1;
        }
    }
    assert_eq!(refused_unchecked, 3);
    // app's correct password from the same address still logs in.
    let c = b.connect("app", "secret", "app").await;
    assert_eq!(current_user(&c).await, "app");
    // mallory's correct password is refused during the cooldown, with the same
    // SQLSTATE as before (28000).
    let e = b
        .try_connect("mallory", "mallory-pass", "app")
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("28000"),
        "{}",
        msg(&e)
    );
    assert!(
        msg(&e).contains("too many failed login attempts for user \"mallory\""),
        "{}",
        msg(&e)
    );
    // Spraying other user names: 5 failures so far, 7 more reach the address cap
    // of 12, after which every user of the address is refused, app included.
    for i in 0..7 {
        let user = format!("sprayed{i}");
        let e = b.try_connect(&user, "x", "app").await.unwrap_err();
        assert!(
            msg(&e).contains("password authentication failed"),
            "{user}: {}",
            msg(&e)
        );
    }
    let capped_at = Instant::now();
    for (user, password) in [("sprayed9", "x"), ("app", "secret")] {
        let e = b.try_connect(user, password, "app").await.unwrap_err();
        assert!(
            msg(&e).contains("too many failed login attempts from 127.0.0.1")
                && msg(&e).contains("28000"),
            "{user}: {}",
            msg(&e)
        );
    }
    // A connected client is untouched.
    assert_eq!(current_user(&c).await, "app");
    // Once the cooldown is over, both come back.
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(capped_at.elapsed())).await;
    let c2 = support::eventually_ok(Duration::from_secs(5), || async {
        b.try_connect("app", "secret", "app")
            .await
            .map_err(|e| msg(&e))
    })
    .await;
    assert_eq!(current_user(&c2).await, "app");
    let m = b.connect("mallory", "mallory-pass", "app").await;
    assert_eq!(current_user(&m).await, "mallory");
    let log = b.log();
    assert!(
        log.contains("refusing this user from this address"),
        "{log}"
    );
    assert!(log.contains("refusing logins from this address"), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains("mallory-pass"),
        "password in log:\n{log}"
    );
}

#[test]
fn bad_auth_file_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sb.toml");
    std::fs::write(
        &cfg,
        "[auth]\nauth_file = \"users.txt\"\n[databases.app]\nshards = [ { name = \"s0\", host = \"h\" } ]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("users.txt"), "\"app\" \"x\"\napp secret\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardbouncer"))
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("users.txt") && err.contains("line 2"), "{err}");
}

/// A SASLInitialResponse whose length is not that of its data gets 08P01,
/// as on Postgres (the data there was was read, and the exchange went on:
/// probe); the right length goes on to the server's challenge.
#[test]
fn a_sasl_initial_response_of_the_wrong_length_is_refused() {
    use std::io::Write;
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        "",
        "[[users]]\nname = \"known\"\npassword = \"right\"\n",
    ));
    let first = b"n,,n=,r=clientnonceclientnonce";
    for (claimed, code) in [(first.len() + 10, Some("08P01")), (first.len(), None)] {
        let mut s = raw_startup(b.port, "known");
        let (t, _) = raw_read(&mut s);
        assert_eq!(t, b'R');
        s.write_all(&sasl_initial(first, claimed)).unwrap();
        let (t, body) = raw_read(&mut s);
        match code {
            Some(code) => {
                assert_eq!(t, b'E', "{body:?}");
                assert_eq!(shardbouncer::protocol::parse_error(&body).code, code);
            }
            None => assert_eq!((t, &body[..4]), (b'R', &11i32.to_be_bytes()[..])),
        }
    }
    // What Postgres does not support is 0A000, as from Postgres (probe K).
    for first in [
        &b"n,a=someone,n=,r=clientnonceclientnonce"[..],
        b"n,,m=ext,n=,r=clientnonceclientnonce",
    ] {
        let mut s = raw_startup(b.port, "known");
        raw_read(&mut s);
        s.write_all(&sasl_initial(first, first.len())).unwrap();
        let (t, body) = raw_read(&mut s);
        assert_eq!(t, b'E', "{body:?}");
        assert_eq!(shardbouncer::protocol::parse_error(&body).code, "0A000");
    }
}

/// An unknown user gets the same exchange as a known one with a wrong
/// password: a SCRAM challenge, with the same salt at every attempt (as a
/// user whose password is stored in plain text gets), and 28P01 only at the
/// end. Refused at once, a login told anyone which user names exist (probe).
#[test]
fn an_unknown_user_cannot_be_told_from_a_wrong_password() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        "",
        "[[users]]\nname = \"known\"\npassword = \"right\"\n",
    ));
    // Startup, the client-first message; returns the salt, then the error
    // code after a wrong proof.
    let attempt = |user: &str| {
        let mut login = ScramLogin::start(b.port, user);
        let salt = login.salt.clone();
        (salt, login.wrong_proof())
    };
    let (known_salt, known_code) = attempt("known");
    let (salt1, code1) = attempt("nobody");
    let (salt2, code2) = attempt("nobody");
    assert_eq!([known_code.as_str(), &code1, &code2], ["28P01"; 3]);
    assert_eq!(salt1, salt2, "the same salt at every attempt");
    assert_ne!(salt1, known_salt, "a salt of its own");
}

/// Under `type = "md5"`, a user whose secret is a SCRAM verifier cannot log in
/// (md5 cannot be checked against it), but is not told so at once: that
/// answer (28000) told a stranger the user exists (a re-probe). It gets the
/// md5 challenge and 28P01, as an unknown user does; the reason is logged.
#[test]
fn under_md5_a_scram_only_user_fails_as_an_unknown_user_does() {
    use std::io::Write;
    let pg = PgCluster::start();
    let scram = verifier(&pg, "app");
    assert!(scram.starts_with("SCRAM-SHA-256$"), "{scram}");
    let b = Bouncer::start(
        &config(
            &pg,
            "",
            &format!("[[users]]\nname = \"app\"\npassword = \"{scram}\"\n"),
        )
        .replace("scram-sha-256", "md5"),
    );
    for user in ["app", "nobody"] {
        let mut s = raw_startup(b.port, user);
        let (t, body) = raw_read(&mut s);
        assert_eq!(
            (t, &body[..4]),
            (b'R', &5i32.to_be_bytes()[..]),
            "{user}: {body:?}"
        );
        let pw = b"md500000000000000000000000000000000\0";
        let mut m = vec![b'p'];
        m.extend(((pw.len() + 4) as i32).to_be_bytes());
        m.extend(pw);
        s.write_all(&m).unwrap();
        let (t, body) = raw_read(&mut s);
        assert_eq!(t, b'E', "{user}");
        assert_eq!(
            shardbouncer::protocol::parse_error(&body).code,
            "28P01",
            "{user}"
        );
    }
    assert!(b.log().contains("md5 authentication is impossible"));
}

/// A SCRAM login over a raw connection, stopped before its proof.
struct ScramLogin {
    s: std::net::TcpStream,
    user: String,
    salt: String,
    nonce: String,
}

impl ScramLogin {
    /// Startup as `user`, the client-first message, the server-first answer.
    fn start(port: u16, user: &str) -> ScramLogin {
        use std::io::Write;
        let mut s = raw_startup(port, user);
        let (t, body) = raw_read(&mut s);
        assert_eq!(
            (t, &body[..4]),
            (b'R', &10i32.to_be_bytes()[..]),
            "{user}: {body:?}"
        );
        let first = b"n,,n=,r=clientnonceclientnonce";
        s.write_all(&sasl_initial(first, first.len())).unwrap();
        let (t, body) = raw_read(&mut s);
        assert_eq!((t, &body[..4]), (b'R', &11i32.to_be_bytes()[..]), "{user}");
        let text = String::from_utf8(body[4..].to_vec()).unwrap();
        let field = |p: &str| {
            text.split(',')
                .find_map(|f| f.strip_prefix(p))
                .unwrap()
                .to_string()
        };
        ScramLogin {
            s,
            user: user.to_string(),
            salt: field("s="),
            nonce: field("r="),
        }
    }

    /// Send a proof no password gives; the SQLSTATE of the answer.
    fn wrong_proof(&mut self) -> String {
        use std::io::Write;
        let fin = format!(
            "c=biws,r={},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            self.nonce
        );
        let mut m = vec![b'p'];
        m.extend(((fin.len() + 4) as i32).to_be_bytes());
        m.extend(fin.as_bytes());
        self.s.write_all(&m).unwrap();
        let (t, body) = raw_read(&mut self.s);
        assert_eq!(t, b'E', "{}", self.user);
        shardbouncer::protocol::parse_error(&body).code
    }
}

/// Logins opened together all pass the block check made before the
/// exchange; their answers, sent once the limit was reached, are refused
/// unverified (probe K: 59 guesses from one address in one window, and the
/// right password let in while the user and the address were blocked).
#[test]
fn logins_opened_together_get_no_more_guesses_than_the_limit() {
    let pg = PgCluster::start();
    let b = Bouncer::start(&config(
        &pg,
        "auth_failure_limit = 3
auth_failure_address_limit = 5
         auth_failure_window = \"60s\"
auth_failure_cooldown = \"60s\"",
        "[[users]]
name = \"app\"
password = \"secret\"
",
    ));
    let mut logins: Vec<ScramLogin> = (0..8).map(|_| ScramLogin::start(b.port, "app")).collect();
    let codes: Vec<String> = logins.iter_mut().map(ScramLogin::wrong_proof).collect();
    assert_eq!(codes[..3], ["28P01"; 3], "{codes:?}");
    assert_eq!(codes[3..], ["28000"; 5], "{codes:?}");
    // The address cap too, over other user names.
    let mut logins: Vec<ScramLogin> = ["u1", "u2", "u3", "u4"]
        .iter()
        .map(|u| ScramLogin::start(b.port, u))
        .collect();
    let codes: Vec<String> = logins.iter_mut().map(ScramLogin::wrong_proof).collect();
    assert_eq!(codes, ["28P01", "28P01", "28000", "28000"], "{codes:?}");
}

/// A raw connection's startup as `user` to database `app`.
fn raw_startup(port: u16, user: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut p = 196608i32.to_be_bytes().to_vec();
    for kv in ["user", user, "database", "app"] {
        p.extend(kv.as_bytes());
        p.push(0);
    }
    p.push(0);
    let mut m = ((p.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(p);
    s.write_all(&m).unwrap();
    s
}

/// A SASLInitialResponse for SCRAM-SHA-256 carrying `first`, whose length
/// field says `claimed`.
fn sasl_initial(first: &[u8], claimed: usize) -> Vec<u8> {
    let mut init = b"SCRAM-SHA-256\0".to_vec();
    init.extend((claimed as i32).to_be_bytes());
    init.extend(first);
    let mut m = vec![b'p'];
    m.extend(((init.len() + 4) as i32).to_be_bytes());
    m.extend(init);
    m
}

/// One backend message of a raw connection: (tag, body).
fn raw_read(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut h = [0u8; 5];
    s.read_exact(&mut h).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4];
    s.read_exact(&mut body).unwrap();
    (h[0], body)
}
