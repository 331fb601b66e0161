//! Socket-free tests of the session core: client messages in, a scripted server's
//! answers in, and checks of what each side receives and how the state moves.

use super::fake::*;
use super::state::Phase;
use crate::protocol::{tag, TxStatus};

// ---------------------------------------------------------------------------
// The state machine, step by step
// ---------------------------------------------------------------------------

#[test]
fn a_held_begin_is_replayed_with_its_statements_on_the_tenants_shard() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!(h.core.phase(), Phase::Held);
    h.send(&[query("SET LOCAL statement_timeout = '1s'")]);
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!((h.core.phase(), h.attaches), (Phase::Held, 0));
    h.send(&[query("SELECT * FROM t WHERE tenant_id = 42")]);
    assert_eq!(h.attaches, 1);
    h.server_turn();
    // The server saw BEGIN, the held SET LOCAL, then the statement, in order.
    let sent = h.texts_sent();
    assert_eq!(
        sent,
        [
            "BEGIN",
            "SET LOCAL statement_timeout = '1s'",
            "SELECT * FROM t WHERE tenant_id = 42"
        ]
    );
    // The client sees only its statement's answer, still in its transaction.
    assert_eq!(h.client_tags(), "DCZT");
    assert_eq!((h.core.phase(), h.releases), (Phase::Attached, 0));
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    // Released only at ReadyForQuery 'I'.
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

#[test]
fn a_transaction_failed_by_shardbouncer_stays_failed_and_never_reaches_a_server() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SELECT * FROM t")]);
    assert_eq!(h.client_errors(), ["42P17"]);
    assert_eq!(h.client_tags(), "CZTEZE");
    assert_eq!(h.core.phase(), Phase::HeldFailed);
    h.send(&[query("INSERT INTO t VALUES (1) /* tenant_id=1 */")]);
    assert_eq!(h.client_errors(), ["25P02"]);
    h.client_tags();
    h.send(&[query("COMMIT")]);
    // COMMIT of a failed transaction answers ROLLBACK, as Postgres does.
    assert!(h.client.windows(8).any(|w| w == b"ROLLBACK"));
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!((h.core.phase(), h.attaches), (Phase::Idle, 0));
}

#[test]
fn after_an_error_mid_pipeline_nothing_more_is_owed_until_sync() {
    // Parse s1 fails; the client's later Bind of s1 (sent after the error came
    // back) and its Sync must get exactly one ReadyForQuery, and the server must
    // go back to the pool.
    let mut h = Harness::new("plain");
    h.send(&[parse("s1", "SELECT fail"), bind("s1", &[]), flush()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["42P01"]);
    h.client_tags();
    assert_eq!(h.releases, 0, "the batch is still open");
    h.send(&[bind("s1", &[]), execute()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "", "skipped messages get no answer");
    h.send(&[sync()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "ZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
    // The failed Parse created no statement.
    h.send(&[bind("s1", &[]), execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["26000"]);
}

#[test]
fn an_unnamed_statement_follows_the_client_to_its_next_server() {
    // Parse "" and Describe with Flush run tenant-free on one shard; the Bind that
    // names the tenant goes where the tenant lives, and the statement is
    // re-created there first.
    let mut h = Harness::new("app");
    h.send(&[
        parse("", "SELECT * FROM t WHERE tenant_id = $1"),
        frame(tag::frontend::DESCRIBE, b"S\0"),
        flush(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "1tn");
    h.send(&[bind("", &["42"]), execute(), sync()]);
    h.server_turn();
    h.server_turn();
    assert_eq!(h.client_tags(), "2DCZI");
    let logs: Vec<String> = h
        .servers
        .iter()
        .map(|s| s.log.iter().map(|(t, _)| *t as char).collect())
        .collect();
    // One shard parsed and described (the client's Flush, then our Sync); the
    // tenant's shard got the Parse again, then the Bind.
    assert!(logs.iter().any(|l| l == "PDHS"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "PBES"), "{logs:?}");
}

#[test]
fn copy_in_through_the_extended_protocol_keeps_the_server_until_the_clients_sync() {
    let mut h = Harness::new("plain");
    h.send(&[
        parse("", "COPY t FROM STDIN"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "12G");
    assert_eq!(h.core.phase(), Phase::CopyIn);
    h.send(&[
        frame(tag::frontend::COPY_DATA, b"1\n"),
        frame(tag::frontend::COPY_DONE, b""),
        sync(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

#[test]
fn a_transaction_keeps_its_server_until_ready_for_query_idle() {
    let mut h = Harness::new("plain");
    h.send(&[query("BEGIN")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!((h.core.phase(), h.releases), (Phase::Attached, 0));
    h.send(&[query("SELECT 1")]);
    h.server_turn();
    assert_eq!(h.releases, 0);
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZTCZI");
    assert_eq!(h.releases, 1);
}

#[test]
fn a_malformed_message_ends_the_session_with_08p01() {
    let mut h = Harness::new("plain");
    h.send(&[frame(tag::frontend::BIND, b"\xff")]);
    assert!(h.closed.is_some());
    assert_eq!(h.client_errors(), ["08P01"]);
}

#[test]
fn a_local_answer_queued_behind_work_reports_the_status_of_its_turn() {
    // Fuzz regression: BEGIN (held), SELECT (replays BEGIN on the default shard),
    // then SET tenant_id pipelined before any answer came back. The SET is
    // answered locally behind the SELECT; its ReadyForQuery must say 'T' (the
    // transaction the server opened meanwhile), not the 'I' of when it was queued.
    let mut h = Harness::new("appd");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SELECT 1"), query("SET tenant_id = 1")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZTDCZTCZT");
    assert_eq!(h.core.client_status(), TxStatus::InTransaction);
}

#[test]
fn a_batch_refused_behind_a_failing_batch_still_gets_its_ready_for_query() {
    // Fuzz regression: Bind of an unknown statement + Flush (the server will
    // fail it and skip to Sync), then, before that error came back, a batch
    // shardbouncer refuses (SET tenant_id through Parse, which cannot be
    // answered locally behind messages not yet ended by Sync) ending with Sync.
    // The refusal must not be a simple Query the skipping server would never
    // answer.
    let mut h = Harness::new("app");
    h.send(&[bind("s2", &["2"]), flush()]);
    h.send(&[parse("s2", "SET tenant_id = 1"), sync()]);
    h.server_turn();
    let errors = h.client_errors();
    assert_eq!(errors, ["26000"], "the refusal is skipped like any message");
    assert!(h.client_tags().ends_with("ZI"));
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

#[test]
fn a_client_cannot_run_the_unnamed_statement_another_client_left_on_a_server() {
    // Fuzz regression: client A parses an unnamed statement and its transaction
    // ends; client B, on the same server, binds the unnamed statement without
    // parsing one. B must get 26000, not run A's statement.
    let mut a = Harness::new("plain");
    a.send(&[
        parse("", "SELECT secret FROM a_only"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    a.server_turn();
    assert!(a.client_tags().contains('D'));
    // B gets A's server (and its fake's state, unnamed statement included).
    let mut b = Harness::with_id("plain", 8);
    b.servers = std::mem::take(&mut a.servers);
    b.send(&[bind("", &[]), execute(), sync()]);
    b.server_turn();
    assert_eq!(b.client_errors(), ["26000"]);
    assert!(!b.client_tags().contains('D'), "B ran A's statement");
}

#[test]
fn set_tenant_through_parse_bind_execute_is_answered_locally_and_routes_what_follows() {
    // PgJDBC's form: Parse/Bind/Describe(portal)/Execute/Sync of the SET, then the
    // statement it routes; a named SET is bound again later without a Parse.
    let mut h = Harness::new("app");
    h.send(&described("SET tenant_id = 1"));
    assert_eq!(h.client_tags(), "12nCZI");
    assert_eq!(h.attaches, 0, "nothing of it reaches a server");
    h.send(&[parse("s1", "SET tenant_id = 2"), sync()]);
    assert_eq!(h.client_tags(), "1ZI");
    h.send(&[bind("s1", &[]), execute(), sync()]);
    assert_eq!(h.client_tags(), "2CZI");
    assert_eq!(h.attaches, 0);
    // What follows runs on tenant 2's shard.
    h.send(&[query("SELECT 1")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZI");
    let ran_on = h.servers.iter().position(|s| !s.log.is_empty());
    let rt = h.core.db().routing.clone().expect("routed");
    let want = rt.shard_of(&crate::router::TenantKey::new(b"2").unwrap());
    assert_eq!(ran_on, want.ok());
}

#[test]
fn a_simple_query_answered_locally_still_destroys_the_unnamed_statement() {
    // Fuzz regression: Parse of an unnamed COMMIT, then a simple Query answered
    // here and never sent (a held BEGIN, a SET tenant_id), then a Bind of the
    // unnamed statement. Postgres drops the unnamed statement at any simple
    // Query, so the Bind must fail rather than run the COMMIT parsed before.
    let mut h = Harness::new("app");
    h.send(&[parse("", "COMMIT"), sync()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "1ZI");
    h.send(&[query("SET tenant_id = 1")]);
    assert_eq!(h.client_tags(), "CZI");
    h.send(&[bind("", &[]), execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["26000"]);
    assert_eq!(
        h.client_tags(),
        "EZI",
        "the old unnamed COMMIT must not run"
    );

    // Inside a held BEGIN the Bind names no tenant and no statement: refused
    // (42P17) before any server sees it, and the COMMIT still does not run.
    let mut h = Harness::new("app");
    h.send(&[parse("", "COMMIT"), sync()]);
    h.server_turn();
    h.client_tags();
    h.send(&[query("BEGIN")]);
    assert_eq!(h.client_tags(), "CZT");
    h.send(&[bind("", &[]), execute(), sync()]);
    h.server_turn();
    assert_eq!(
        h.client_tags(),
        "EZE",
        "the old unnamed COMMIT must not run"
    );
}

#[test]
fn a_local_deallocate_all_behind_work_in_flight_still_destroys_the_unnamed_statement() {
    // Fuzz regression: BEGIN and an unnamed Parse in flight on the server, then
    // a simple `DEALLOCATE ALL` (answered here, after the server drains), then
    // a Bind of the unnamed statement: an error, not the statement the server
    // still holds. The BEGIN ran first and alone in its batch, so it is held
    // (the Parse went to a server outside it): the Bind, of a statement the
    // client no longer has, names no tenant, and gets Postgres's answer
    // (26000), and nothing runs.
    let mut h = Harness::new("app");
    h.send(&[
        parse("", "BEGIN"),
        bind("", &[]),
        execute(),
        parse("", "SELECT * FROM t WHERE tenant_id = $1"),
        sync(),
    ]);
    h.send(&[query("DEALLOCATE ALL")]);
    h.send(&[bind("", &["1"]), execute(), sync()]);
    for _ in 0..4 {
        h.server_turn();
    }
    assert_eq!(h.client_errors(), ["26000"]);
    let tags = h.client_tags();
    assert!(!tags.contains('D'), "the dropped statement ran: {tags}");
    assert!(tags.ends_with("ZE"), "{tags}");
}

#[test]
fn listen_and_unlisten_are_answered_here_and_handed_to_the_relay() {
    use crate::router::ListenOp;
    let mut h = Harness::new("plain");
    h.send(&[query("LISTEN Jobs")]);
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!(h.attaches, 0, "no server listens for the client");
    assert_eq!(h.core.take_listen_ops(), [ListenOp::Listen("jobs".into())]);
    assert!(h.core.between_transactions());
    // Inside a transaction: answered in turn, and no notification until it ends.
    h.send(&[query("BEGIN"), query("UNLISTEN *")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZTCZT");
    assert_eq!(h.core.take_listen_ops(), [ListenOp::UnlistenAll]);
    assert!(!h.core.between_transactions());
    // A failed transaction refuses it, as Postgres does.
    h.send(&[query("SELECT fail")]);
    h.server_turn();
    h.client_tags();
    h.send(&[query("LISTEN x")]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["25P02"]);
    h.client_tags();
    h.send(&[query("ROLLBACK")]);
    h.server_turn();
    h.client_tags();
    assert!(h.core.between_transactions());
    // Through Parse/Bind/Execute in a batch of its own (asyncpg's
    // add_listener): answered here too, and handed to the relay.
    let logged = h.servers[0].log.len();
    h.send(&[parse("", "LISTEN b"), bind("", &[]), execute(), sync()]);
    assert_eq!(h.client_tags(), "12CZI");
    assert_eq!(h.core.take_listen_ops(), [ListenOp::Listen("b".into())]);
    // Mixed with another statement in a Query: refused. In a batch of an
    // unrouted database each message goes as it comes: the LISTEN is relayed,
    // the rest runs on the server. Nothing LISTENs on the server either way.
    h.send(&[query("LISTEN a; SELECT 1")]);
    assert_eq!(h.client_errors(), ["0A000"]);
    h.client_tags();
    h.send(&[
        parse("", "LISTEN a"),
        bind("", &[]),
        execute(),
        parse("", "SELECT 1"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    h.server_turn();
    assert!(h.client_errors().is_empty());
    assert_eq!(h.core.take_listen_ops(), [ListenOp::Listen("a".into())]);
    assert!(
        h.servers[0].log[logged..].iter().all(|(t, b)| {
            let sql = if *t == tag::frontend::PARSE {
                cstr(cstr(b).1).0
            } else {
                cstr(b).0
            };
            !sql.starts_with(b"LISTEN")
        }),
        "a LISTEN reached the server"
    );
    assert!(h.core.take_listen_ops().is_empty());
}

/// Inside a transaction a portal outlives its batch. The Bind of a `SET` of
/// the tenant key is answered here, and the server's portal of that name is
/// an older one: an Execute of it in a later batch ran that one, and the
/// client got an earlier SELECT's rows (session fuzz). It is refused.
#[test]
fn an_execute_of_a_portal_bound_here_in_an_earlier_batch_is_refused() {
    // Bound here alone; then bound and executed here in one batch, and
    // executed again alone: the portal is still not the server's (session
    // fuzz, both).
    for bound_here in [
        vec![bind("", &[]), sync()],
        vec![bind("", &[]), execute(), sync()],
    ] {
        let mut h = Harness::new("app");
        h.send(&[query("BEGIN")]);
        h.send(&[parse("", "SET tenant_id = 1"), sync()]);
        h.send(&[
            parse("s1", "SELECT * FROM t WHERE tenant_id = $1"),
            bind("s1", &["1"]),
            sync(),
        ]);
        h.send(&bound_here);
        h.send(&[execute(), sync()]);
        for _ in 0..4 {
            h.server_turn();
        }
        assert_eq!(h.client_errors(), ["0A000"]);
        let tags = h.client_tags();
        assert!(!tags.contains('D'), "an older portal ran: {tags}");
    }
    // Outside a transaction the portal ends with its Sync, as on Postgres:
    // a later Execute of it finds none (34000).
    let mut h = Harness::new("app");
    h.send(&[
        parse("", "SET tenant_id = 1"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    assert_eq!(h.client_tags(), "12CZI");
    h.send(&[execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["34000"]);
    let tags = h.client_tags();
    assert!(!tags.contains('D'), "a portal ran: {tags}");
}

/// The same for a portal bound here to LISTEN: a later batch that does not
/// bind the name again leaves it the client's LISTEN portal (it used to
/// forget it, and so did a Sync inside the transaction), and a batch that
/// runs it among other work is refused rather than sent to the server,
/// whose portal of that name is an older SELECT.
#[test]
fn a_listen_portal_stays_the_clients_until_it_is_bound_again() {
    use crate::router::ListenOp;
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[
        parse("s1", "SELECT * FROM t WHERE tenant_id = $1"),
        bind("s1", &["1"]),
        sync(),
    ]);
    h.send(&[parse("", "LISTEN jobs"), bind("", &[]), sync()]);
    for _ in 0..4 {
        h.server_turn();
    }
    h.client_tags();
    // Other work that leaves the portal alone.
    h.send(&[parse("s2", "SELECT 1 FROM t WHERE tenant_id = 1"), sync()]);
    h.server_turn();
    assert!(h.client_errors().is_empty());
    h.client_tags();
    // Alone, it is still the LISTEN portal: answered here.
    h.send(&[execute(), sync()]);
    h.server_turn();
    assert_eq!(h.core.take_listen_ops(), [ListenOp::Listen("jobs".into())]);
    let tags = h.client_tags();
    assert!(!tags.contains('D'), "an older portal ran: {tags}");
    // Among other work: refused, and the older portal does not run.
    h.send(&[execute(), bind("s2", &[]), execute(), sync()]);
    for _ in 0..2 {
        h.server_turn();
    }
    assert_eq!(h.client_errors(), ["0A000"]);
    let tags = h.client_tags();
    assert!(!tags.contains('D'), "an older portal ran: {tags}");
    assert!(h.core.take_listen_ops().is_empty());
    // It ends with its transaction, as on Postgres (probe L: run again after
    // the ROLLBACK, it listened again). Alone, with no tenant, the Execute is
    // refused before any server (Postgres: 34000, no such portal).
    h.send(&[query("ROLLBACK")]);
    h.server_turn();
    h.client_tags();
    h.send(&[execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["42P17"]);
    assert!(h.core.take_listen_ops().is_empty(), "the ended portal ran");
}

/// On a routed database a batch goes whole: LISTEN through Parse/Bind/Execute
/// alone is answered here (prepared in one batch, run in the next, as asyncpg
/// does); mixed with other work it is refused, and never reaches a server.
#[test]
fn an_extended_listen_is_relayed_alone_and_refused_mixed_on_a_routed_database() {
    use crate::router::ListenOp;
    let mut h = Harness::new("app");
    let describe = frame(tag::frontend::DESCRIBE, b"Sl\0");
    h.send(&[parse("l", "LISTEN jobs"), describe, flush()]);
    assert_eq!(h.client_tags(), "1tn");
    h.send(&[sync()]);
    h.send(&[bind("l", &[]), execute(), sync()]);
    assert_eq!(h.client_tags(), "ZI2CZI");
    assert_eq!(h.core.take_listen_ops(), [ListenOp::Listen("jobs".into())]);
    h.send(&[
        parse("", "UNLISTEN jobs"),
        bind("", &[]),
        execute(),
        parse("", "SELECT 1 FROM accounts WHERE tenant_id = 1"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    for _ in 0..2 {
        h.server_turn();
    }
    assert_eq!(h.client_errors(), ["0A000"]);
    assert!(h.core.take_listen_ops().is_empty());
    let listened = h
        .servers
        .iter()
        .flat_map(|s| &s.log)
        .any(|(t, b)| *t == tag::frontend::PARSE && cstr(cstr(b).1).0.starts_with(b"UNLISTEN"));
    assert!(!listened, "an UNLISTEN reached a server");
}

#[test]
fn begin_then_set_tenant_in_one_batch_holds_the_begin_and_routes_the_transaction() {
    // PgJDBC with autocommit off sends a transaction's first statement behind
    // its BEGIN, in one batch up to Sync.
    let mut h = Harness::new("app");
    let describe_portal = frame(tag::frontend::DESCRIBE, b"P\0");
    h.send(&[
        parse("", "BEGIN"),
        bind("", &[]),
        execute(),
        parse("", "SET tenant_id = 2"),
        bind("", &[]),
        describe_portal,
        execute(),
        sync(),
    ]);
    assert_eq!(h.client_tags(), "12C12nCZT");
    assert_eq!((h.attaches, h.core.phase()), (0, Phase::Held));
    h.send(&[query("SELECT 1")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZT");
    // The BEGIN ran first, on tenant 2's shard.
    let rt = h.core.db().routing.clone().expect("routed");
    let want = rt
        .shard_of(&crate::router::TenantKey::new(b"2").unwrap())
        .unwrap();
    let first = &h.servers[want].log[0];
    assert_eq!(
        (first.0, cstr(&first.1).0),
        (tag::frontend::QUERY, &b"BEGIN"[..])
    );
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!(h.releases, 1);
}

// ---------------------------------------------------------------------------
// Tenant pauses (console PAUSE / MOVE / RESUME TENANT)
// ---------------------------------------------------------------------------

fn tenant(s: &str) -> crate::router::TenantKey {
    crate::router::TenantKey::new(s.as_bytes()).unwrap()
}

/// A tenant other than 42 that the map places on 42's shard.
fn another_tenant_on_42s_shard(h: &Harness) -> String {
    let rt = h.core.db().routing.clone().unwrap();
    let shard_of = |k: &str| rt.map.route(&tenant(k)).unwrap().shard;
    (1..1000)
        .map(|i| i.to_string())
        .find(|k| k != "42" && shard_of(k) == shard_of("42"))
        .unwrap()
}

#[test]
fn a_paused_tenants_work_waits_with_no_server_and_runs_after_resume() {
    let mut h = Harness::new("app");
    assert!(h.gate.pause(tenant("42")));
    h.send(&[query("SELECT * FROM t WHERE tenant_id = 42")]);
    assert_eq!(h.held, Some(tenant("42")));
    assert_eq!((h.core.phase(), h.attaches), (Phase::Paused, 0));
    assert_eq!(h.client_tags(), "", "nothing is answered while held");
    h.gate.resume(&tenant("42"));
    h.resume();
    assert_eq!(h.attaches, 1);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
    assert!(
        h.gate.holders(&tenant("42")).is_empty(),
        "released with the server"
    );
}

#[test]
fn a_held_begin_waits_for_the_pause_and_is_replayed_after_it() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    assert_eq!(h.client_tags(), "CZT");
    h.gate.pause(tenant("42"));
    h.send(&[query("INSERT INTO t VALUES (42)  /* tenant_id=42 */")]);
    assert_eq!((h.core.phase(), h.attaches), (Phase::Paused, 0));
    h.gate.resume(&tenant("42"));
    h.resume();
    h.server_turn();
    let sent = h.texts_sent();
    assert_eq!(sent[0], "BEGIN", "the held BEGIN runs first: {sent:?}");
    assert_eq!(h.client_tags(), "DCZT");
    // The transaction holds the tenant until it ends.
    assert_eq!(h.gate.holders(&tenant("42")), [7]);
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert!(h.gate.holders(&tenant("42")).is_empty());
}

#[test]
fn a_transaction_that_holds_the_tenant_runs_to_its_end_through_a_pause() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SELECT 1 FROM t WHERE tenant_id = 42")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZTDCZT");
    assert!(h.gate.pause(tenant("42")));
    assert_eq!(
        h.gate.holders(&tenant("42")),
        [7],
        "PAUSE waits for this one"
    );
    h.send(&[query("UPDATE t SET x = 1 WHERE tenant_id = 42")]);
    h.server_turn();
    assert_eq!(h.held, None);
    assert_eq!(h.client_tags(), "DCZT");
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert!(
        h.gate.holders(&tenant("42")).is_empty(),
        "PAUSE may return now"
    );
    // The next transaction waits.
    h.send(&[query("SELECT 1 FROM t WHERE tenant_id = 42")]);
    assert_eq!(h.held, Some(tenant("42")));
}

#[test]
fn an_open_transaction_cannot_reach_a_paused_tenant() {
    let mut h = Harness::new("app");
    // The router lets one transaction name both.
    let other = another_tenant_on_42s_shard(&h);
    h.send(&[query("BEGIN")]);
    h.send(&[query(&format!("SELECT 1 FROM t WHERE tenant_id = {other}"))]);
    h.server_turn();
    h.client_tags();
    h.gate.pause(tenant("42"));
    h.send(&[query("SELECT 1 FROM t WHERE tenant_id = 42")]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["55000"]);
    assert_eq!(h.held, None);
    // Failed as Postgres fails a statement: the transaction is aborted.
    assert_eq!(h.core.client_status(), TxStatus::Failed);
    h.send(&[query("ROLLBACK")]);
    h.server_turn();
    assert_eq!(h.core.phase(), Phase::Idle);
}

#[test]
fn an_extended_batch_of_a_paused_tenant_waits_whole() {
    let mut h = Harness::new("app");
    h.gate.pause(tenant("42"));
    h.send(&[
        parse("", "SELECT * FROM t WHERE tenant_id = $1"),
        bind("", &["42"]),
        execute(),
        sync(),
    ]);
    assert_eq!((h.core.phase(), h.attaches), (Phase::Paused, 0));
    assert_eq!(h.client_tags(), "");
    h.gate.resume(&tenant("42"));
    h.resume();
    h.server_turn();
    assert_eq!(h.client_tags(), "12DCZI");
}

#[test]
fn a_pause_holds_work_that_only_mentions_the_tenant() {
    // Routed by tenant `other` (a comment), but it writes a row of 42 on the
    // same shard: a pause of 42 holds it too.
    let mut h = Harness::new("app");
    let other = another_tenant_on_42s_shard(&h);
    h.gate.pause(tenant("42"));
    h.send(&[query(&format!(
        "/* tenant_id={other} */ INSERT INTO t (tenant_id) VALUES (42)"
    ))]);
    assert_eq!((h.core.phase(), h.attaches), (Phase::Paused, 0));
    // The other tenant's ticket was given back: pausing it does not wait.
    assert!(h.gate.holders(&tenant(&other)).is_empty());
    h.gate.resume(&tenant("42"));
    h.resume();
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZI");
}

#[test]
fn a_statement_prepared_again_after_deallocate_all_runs_in_a_later_transaction() {
    // From the session fuzz target: the server's old copy of the text is
    // closed as stale at the next attach, then prepared afresh under the same
    // name inside a transaction; the client sees only its own answers.
    let mut h = Harness::new("appd");
    let by_tenant = "SELECT * FROM t WHERE tenant_id = $1";
    h.send(&[parse("s1", by_tenant), frame(b'D', b"S\0"), sync()]);
    h.server_turn();
    assert_eq!(
        h.client_errors(),
        ["26000"],
        "Describe of a statement never parsed"
    );
    h.client_tags();
    h.send(&[query("DEALLOCATE ALL")]);
    h.send(&[parse("s1", "SELECT 1"), parse("s2", by_tenant), sync()]);
    h.server_turn();
    h.send(&[query("SELECT 1")]);
    h.server_turn();
    h.client_tags();
    h.send(&[query("BEGIN")]);
    h.send(&[bind("s1", &["1"]), bind("s2", &["1"]), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), Vec::<String>::new());
    assert_eq!(h.client_tags(), "CZT22ZT");
    h.send(&[execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZT");
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
}

// ---------------------------------------------------------------------------
// Large messages spilled while they arrive
// ---------------------------------------------------------------------------

/// A tenant the map places on the other shard than 42's.
fn a_tenant_off_42s_shard(h: &Harness) -> String {
    let rt = h.core.db().routing.clone().unwrap();
    let shard_of = |k: &str| rt.map.route(&tenant(k)).unwrap().shard;
    (1..1000)
        .map(|i| i.to_string())
        .find(|k| shard_of(k) != shard_of("42"))
        .unwrap()
}

/// Send `bytes` in reads of `step` bytes.
fn send_in_pieces(h: &mut Harness, bytes: &[u8], step: usize) {
    for piece in bytes.chunks(step) {
        h.send_bytes(piece);
    }
}

#[test]
fn a_large_message_waits_in_the_spool_and_is_routed_whole() {
    let mut h = Harness::new("app");
    h.core.spill_above(1024);
    let sql = format!(
        "SELECT * FROM t WHERE tenant_id = 42 AND note <> '{}'",
        "x".repeat(20_000)
    );
    let msg = query(&sql);
    let (start, rest) = msg.split_at(msg.len() - 10);
    send_in_pieces(&mut h, start, 700);
    // Never more than the threshold and one read in memory; the rest is spilled.
    assert!(h.core.client_buffered() <= 1024 + 700);
    assert!(
        h.spool.len() >= start.len() - 1024 - 700,
        "{}",
        h.spool.len()
    );
    assert_eq!((h.attaches, h.unspilled), (0, 0), "nothing routed yet");
    // The end comes with the next message in the same read.
    let mut end = rest.to_vec();
    end.extend_from_slice(&query("SELECT 1 /* tenant_id=42 */"));
    h.send_bytes(&end);
    assert_eq!((h.unspilled, h.attaches), (1, 1));
    assert!(h.spool.is_empty());
    h.server_turn();
    assert_eq!(
        h.texts_sent(),
        [sql.as_str(), "SELECT 1 /* tenant_id=42 */"]
    );
    assert_eq!(h.client_tags(), "DCZIDCZI");
}

#[test]
fn a_tenant_named_at_the_end_of_a_spilled_message_is_still_checked() {
    let mut h = Harness::new("app");
    h.core.spill_above(1024);
    let other = a_tenant_off_42s_shard(&h);
    let msg = query(&format!(
        "SELECT * FROM t WHERE tenant_id = 42 AND note <> '{}' OR tenant_id = {other}",
        "y".repeat(50_000)
    ));
    send_in_pieces(&mut h, &msg, 4096);
    assert_eq!(h.unspilled, 1);
    assert_eq!(h.client_errors(), ["0A000"], "cross-shard, seen whole");
    assert_eq!(h.attaches, 0, "no part of it reached a server");
    // The same for a Bind value at the end of a spilled extended batch.
    let mut b = vec![0u8, 0u8]; // portal "", statement ""
    b.extend_from_slice(&[0, 0, 0, 2]); // two parameters, text
    let pad = "z".repeat(30_000);
    b.extend_from_slice(&(pad.len() as i32).to_be_bytes());
    b.extend_from_slice(pad.as_bytes());
    b.extend_from_slice(&(other.len() as i32).to_be_bytes());
    b.extend_from_slice(other.as_bytes());
    b.extend_from_slice(&[0, 0]);
    let mut batch = frame(
        b'P',
        b"\0SELECT * FROM t WHERE note <> $1 AND tenant_id = $2 OR tenant_id = 42\0\0\0",
    );
    batch.extend(frame(b'B', &b));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', b""));
    h.client_tags();
    send_in_pieces(&mut h, &batch, 3000);
    assert_eq!(h.unspilled, 2);
    assert_eq!(h.client_errors(), ["0A000"]);
    assert_eq!(h.attaches, 0);
}

/// Found by the session fuzz target: tenant-free work runs on a server outside
/// a held BEGIN, but a BEGIN (or other transaction control) among it opened a
/// transaction there, and the server was released inside it.
#[test]
fn transaction_control_never_runs_outside_a_held_begin() {
    // Through the extended protocol.
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    assert_eq!(h.client_tags(), "CZT");
    h.send(&[parse("", "BEGIN"), bind("", &[]), execute(), sync()]);
    h.server_turn();
    assert_eq!(
        h.texts_sent()[0],
        "BEGIN",
        "the held BEGIN is replayed first"
    );
    assert_eq!(h.client_tags(), "12CZT");
    assert_eq!((h.core.phase(), h.releases), (Phase::Attached, 0));
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
    // In a simple Query beside other tenant-free statements.
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.client_tags();
    h.send(&[query("SHOW work_mem; BEGIN")]);
    h.server_turn();
    assert_eq!(
        h.texts_sent(),
        ["BEGIN", "SHOW work_mem; BEGIN"],
        "inside the client's transaction"
    );
    assert_eq!(h.core.client_status(), TxStatus::InTransaction);
    h.send(&[query("ROLLBACK")]);
    h.server_turn();
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

/// A client may pipeline its COPY data and CopyDone behind the Query, before
/// the server's CopyInResponse (Postgres reads them next). Found by the session
/// fuzz target: the session then believed a COPY was still open, and the next
/// Query closed the client with 08P01.
#[test]
fn copy_data_pipelined_behind_its_query_ends_the_copy() {
    let mut h = Harness::new("appd");
    let mut all = query("COPY t FROM STDIN /* tenant_id=1 */");
    all.extend(frame(b'd', b"row\n"));
    all.extend(frame(b'c', b""));
    all.extend(query("SELECT 1 /* tenant_id=1 */"));
    h.send_bytes(&all);
    h.server_turn();
    assert_eq!(h.client_tags(), "GCZIDCZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
    h.send(&[query("SELECT 2 /* tenant_id=1 */")]);
    h.server_turn();
    assert_eq!(
        (h.client_tags(), h.closed.clone()),
        ("DCZI".to_string(), None)
    );
    // A stray CopyDone behind a Query that starts no COPY is ignored, as
    // Postgres ignores it: a later COPY is still one.
    let mut all = query("SELECT 3 /* tenant_id=1 */");
    all.extend(frame(b'c', b""));
    all.extend(query("COPY t FROM STDIN /* tenant_id=1 */"));
    h.send_bytes(&all);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZIG");
    assert_eq!(h.core.phase(), Phase::CopyIn);
    h.send(&[frame(b'd', b"row\n"), frame(b'c', b"")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!(h.core.phase(), Phase::Idle);
}

// ---------------------------------------------------------------------------
// Parking between transactions
// ---------------------------------------------------------------------------

mod parking {
    use super::*;
    use proptest::prelude::*;

    const SQL: &[&str] = &[
        "SELECT 1",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SELECT fail",
        "SET x.y = 1",
        "SET TimeZone = 'UTC'",
        "RESET ALL",
        "SET LOCAL statement_timeout = 5",
        "SELECT * FROM t WHERE tenant_id = 1",
        "SELECT * FROM t WHERE tenant_id = 2",
        "SET tenant_id = 1",
        "SET LOCAL tenant_id = 2",
        "RESET tenant_id",
        "DISCARD ALL",
        "DEALLOCATE ALL",
        "DEALLOCATE s1",
        "/* tenant_id=3 */ SELECT 2",
        "SAVEPOINT a",
        "LISTEN ch",
        "",
    ];

    /// One step of a client and its server.
    #[derive(Debug, Clone)]
    enum Op {
        Query(usize),
        /// Parse (named `s0`..`s2`, or unnamed), Bind, Execute, Sync.
        Prepare(u8, usize),
        /// Bind and Execute a statement prepared before (or not), then Sync.
        Run(u8, &'static str),
        /// A Parse and Bind with no Sync yet.
        Open(u8, usize),
        Sync,
        Server,
    }

    fn name(n: u8) -> &'static str {
        ["", "s0", "s1", "s2"][n as usize % 4]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..SQL.len()).prop_map(Op::Query),
            2 => (0u8..4, 0..SQL.len()).prop_map(|(n, s)| Op::Prepare(n, s)),
            2 => (0u8..4, prop_oneof![Just("1"), Just("2")]).prop_map(|(n, v)| Op::Run(n, v)),
            1 => (0u8..4, 0..SQL.len()).prop_map(|(n, s)| Op::Open(n, s)),
            1 => Just(Op::Sync),
            6 => Just(Op::Server),
        ]
    }

    fn apply(h: &mut Harness, op: &Op) {
        match op {
            Op::Query(i) => h.send(&[query(SQL[*i])]),
            Op::Prepare(n, i) => h.send(&[
                parse(name(*n), SQL[*i]),
                bind(name(*n), &[]),
                execute(),
                sync(),
            ]),
            Op::Run(n, v) => h.send(&[bind(name(*n), &[v]), execute(), sync()]),
            Op::Open(n, i) => h.send(&[parse(name(*n), SQL[*i]), bind(name(*n), &[])]),
            Op::Sync => h.send(&[sync()]),
            Op::Server => h.server_turn(),
        }
    }

    /// What the client and the servers saw, and how the session stands.
    fn seen(h: &Harness) -> impl PartialEq + std::fmt::Debug {
        (
            h.client.clone(),
            h.servers.iter().map(|s| s.log.clone()).collect::<Vec<_>>(),
            (h.attaches, h.releases, h.closed.clone()),
            (
                h.core.phase(),
                h.core.client_status(),
                h.core.requests_answered(),
            ),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A session parked and woken at every idle moment (as the driver
        /// does between transactions) behaves exactly as one never parked:
        /// the same bytes to the client and to each server, step by step.
        #[test]
        fn a_parked_session_behaves_as_one_never_parked(
            db in prop_oneof![Just("app"), Just("appd"), Just("plain")],
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let mut plain = Harness::new(db);
            let mut parked = Harness::new(db);
            parked.park = true;
            for op in &ops {
                apply(&mut plain, op);
                apply(&mut parked, op);
                prop_assert_eq!(seen(&plain), seen(&parked), "after {:?}", op);
                if plain.closed.is_some() {
                    break;
                }
            }
            // Finish whatever is in flight, and compare once more.
            apply(&mut plain, &Op::Server);
            apply(&mut parked, &Op::Server);
            prop_assert_eq!(seen(&plain), seen(&parked));
        }
    }

    /// The property above is not vacuous: a session with settings, a tenant
    /// and prepared statements parks, and keeps them.
    #[test]
    fn a_session_with_state_parks_and_keeps_it() {
        let mut h = Harness::new("appd");
        h.park = true;
        h.send(&[query("SET tenant_id = 1")]);
        h.server_turn();
        h.send(&[query("SET x.y = 1 /* tenant_id=1 */")]);
        h.server_turn();
        h.send(&[
            parse("s0", "SELECT * FROM t WHERE tenant_id = $1"),
            bind("s0", &["1"]),
            execute(),
            sync(),
        ]);
        h.server_turn();
        assert_eq!(h.client_errors(), Vec::<String>::new());
        let parks = h.parks;
        assert!(parks >= 3, "parked {parks} times");
        h.client_tags();
        // Still known after parking: the statement (no 26000), and the SET
        // tenant (a Bind naming another shard's tenant is refused, 0A000).
        h.send(&[bind("s0", &["1"]), execute(), sync()]);
        h.server_turn();
        assert_eq!(h.client_errors(), Vec::<String>::new());
        assert_eq!(h.client_tags(), "2DCZI");
        assert!(h.core.route.tenants().set.is_some());
        assert!(h.parks > parks);
        h.send(&[bind("s0", &["2"]), execute(), sync()]);
        h.server_turn();
        assert_eq!(h.client_errors(), ["0A000"]);
    }
}

/// The spare session boxes: a value moved out keeps its allocation, which a
/// later value reuses; each value is dropped exactly once, and an emptied box
/// drops nothing.
#[test]
fn a_spare_box_is_reused_and_drops_each_value_once() {
    use std::cell::Cell;
    use std::rc::Rc;
    struct Counted(Rc<Cell<u32>>, u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let first = Box::new(Counted(drops.clone(), 7));
    let at = &*first as *const Counted as usize;
    let (value, spare) = super::take_out(first);
    assert_eq!(value.1, 7);
    assert_eq!(drops.get(), 0, "moving out drops nothing");
    drop(value);
    assert_eq!(drops.get(), 1);
    let second = super::put_in(spare, Counted(drops.clone(), 9));
    assert_eq!(
        &*second as *const Counted as usize, at,
        "the allocation is reused"
    );
    assert_eq!(second.1, 9);
    let (value, spare) = super::take_out(second);
    drop(spare);
    assert_eq!(drops.get(), 1, "an emptied box drops no value");
    drop(value);
    assert_eq!(drops.get(), 2);
}

/// Postgres undoes a session `SET` made in a transaction that rolls back;
/// so does the SET tenant (probe: `BEGIN; SET tenant_id = 42; ROLLBACK` left
/// the session on tenant 42, and its next statements went to 42's shard).
#[test]
fn a_set_tenant_in_a_transaction_that_rolls_back_is_undone() {
    // A held BEGIN (no server yet), then ROLLBACK: the statement that needs a
    // tenant after it has none again (42P17), as before the transaction.
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SET tenant_id = 1")]);
    h.send(&[query("ROLLBACK")]);
    h.client_tags();
    h.send(&[query("SELECT * FROM t")]);
    assert_eq!(
        h.client_errors(),
        ["42P17"],
        "the rolled-back SET still routes"
    );
    h.client_tags();
    // On a server: the transaction is pinned, the SET is answered here, the
    // server's ROLLBACK ends it (and a failed one's COMMIT answers ROLLBACK).
    for end in ["ROLLBACK", "COMMIT"] {
        let mut h = Harness::new("app");
        h.send(&[query("SET tenant_id = 1")]);
        h.send(&[query("BEGIN")]);
        h.send(&[query("SELECT * FROM t WHERE tenant_id = 1")]);
        h.server_turn();
        h.send(&[query("RESET tenant_id")]);
        if end == "COMMIT" {
            h.send(&[query("SELECT fail FROM t")]);
            h.server_turn();
        }
        h.send(&[query(end)]);
        h.server_turn();
        h.client_tags();
        h.send(&[query("SELECT * FROM t")]);
        h.server_turn();
        assert!(
            h.client_errors().iter().all(|e| e != "42P17"),
            "{end}: the RESET stayed"
        );
    }
    // Committed, it stays.
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SET tenant_id = 1")]);
    h.send(&[query("COMMIT")]);
    h.send(&[query("SELECT * FROM t")]);
    h.server_turn();
    assert!(h.client_errors().is_empty(), "{:?}", h.client_errors());
}

/// Whether `ROLLBACK TO SAVEPOINT` undoes a SET tenant made in the same
/// transaction depends on where the savepoint is, which is not followed: it
/// is refused, the transaction fails, and its ROLLBACK restores the tenant.
#[test]
fn rollback_to_a_savepoint_after_a_set_tenant_is_refused() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SELECT * FROM t WHERE tenant_id = 1")]);
    h.server_turn();
    h.send(&[query("SAVEPOINT a")]);
    h.server_turn();
    h.send(&[query("SET tenant_id = 1")]);
    h.client_tags();
    h.send(&[query("ROLLBACK TO SAVEPOINT a")]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["0A000"]);
    h.client_tags();
    h.send(&[query("ROLLBACK")]);
    h.server_turn();
    h.client_tags();
    h.send(&[query("SELECT * FROM t")]);
    assert_eq!(h.client_errors(), ["42P17"]);
}

#[test]
fn a_long_batch_goes_in_slices_that_stay_on_the_shard_of_the_first() {
    // asyncpg's executemany: a Bind and an Execute per row, one Sync at the
    // end. Past a slice's length the batch goes before its Sync (it was held
    // whole, and refused past 100,000 messages), with a Flush so the server
    // answers as it goes.
    let mut h = Harness::new("app");
    let mut msgs = vec![parse("s1", "INSERT INTO t (tenant_id) VALUES ($1)")];
    for _ in 0..super::batch::SLICE {
        msgs.push(bind("s1", &["42"]));
        msgs.push(execute());
    }
    h.send(&msgs);
    assert_eq!(h.attaches, 1, "the first slice went before the Sync");
    h.server_turn();
    let tags = h.client_tags();
    assert!(!tags.contains('Z'), "{tags}");
    assert!(
        tags.matches('C').count() > 500,
        "answers came before the Sync"
    );
    // A row of a tenant of the other shard, later in the same batch: refused,
    // and the whole batch with it (the server fails its implicit transaction).
    let other = a_tenant_off_42s_shard(&h);
    h.send(&[bind("s1", &[&other]), execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["0A000"]);
    let tags = h.client_tags();
    assert!(tags.ends_with("EZI"), "{tags}");
    assert_eq!(
        (h.core.phase(), h.attaches, h.releases),
        (Phase::Idle, 1, 1)
    );
}

#[test]
fn a_batch_sliced_right_at_a_held_begin_takes_no_server_until_its_work() {
    let mut h = Harness::new("app");
    h.core.slice_batches_at(2);
    h.send(&[parse("", "BEGIN"), bind("", &[]), execute()]);
    assert_eq!(h.client_tags(), "12C");
    assert_eq!((h.core.phase(), h.attaches), (Phase::Held, 0));
    h.send(&[
        parse("", "SELECT * FROM t WHERE tenant_id = 42"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    h.server_turn();
    assert_eq!(h.attaches, 1);
    let sent = h.texts_sent();
    assert_eq!(sent.first().map(String::as_str), Some("BEGIN"), "{sent:?}");
    let tags = h.client_tags();
    assert!(tags.ends_with("ZT"), "{tags}");
}

#[test]
fn a_transaction_failed_here_ends_by_an_extended_rollback() {
    // PgJDBC's rollback() after an error: Parse/Bind/Execute of ROLLBACK and a
    // Sync. It got 25P02, so the client could never leave the transaction.
    for end in ["ROLLBACK", "COMMIT"] {
        let mut h = Harness::new("app");
        h.send(&[query("BEGIN")]);
        h.send(&[query("SELECT * FROM t")]);
        assert_eq!(h.client_errors(), ["42P17"]);
        h.client_tags();
        assert_eq!(h.core.phase(), Phase::HeldFailed);
        // Anything else in the batch: 25P02, as Postgres answers it.
        h.send(&[
            parse("", end),
            bind("", &[]),
            execute(),
            parse("", "SELECT 1"),
            bind("", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(h.client_errors(), ["25P02"], "{end}");
        assert_eq!(h.client_tags(), "EZE", "{end}");
        h.send(&[parse("", end), bind("", &[]), execute(), sync()]);
        assert!(h.client.windows(8).any(|w| w == b"ROLLBACK"), "{end}");
        assert_eq!(h.client_tags(), "12CZI", "{end}");
        assert_eq!((h.core.phase(), h.attaches), (Phase::Idle, 0), "{end}");
        h.send(&[query("SELECT * FROM t WHERE tenant_id = 42")]);
        h.server_turn();
        assert_eq!(h.client_tags(), "DCZI", "{end}");
    }
}

#[test]
fn a_set_local_through_the_extended_protocol_is_held_with_the_begin() {
    // libpq's PQsendQueryParams for each: BEGIN, then SET LOCAL, each Parse,
    // Bind, Describe, Execute, Sync, and only then the tenant's statement. The
    // SET LOCAL replayed the BEGIN on the default shard and pinned it there.
    let mut h = Harness::new("app");
    h.send(&described("BEGIN"));
    assert_eq!(h.client_tags(), "12nCZT");
    let set = "SET LOCAL statement_timeout = '5s'";
    h.send(&described(set));
    assert_eq!((h.client_tags().as_str(), h.attaches), ("12nCZT", 0));
    let other = a_tenant_off_42s_shard(&h);
    for t in ["42".to_string(), other] {
        let rt = h.core.db().routing.clone().unwrap();
        let shard = rt.map.route(&tenant(&t)).unwrap().shard;
        let mut h = Harness::new("app");
        h.send(&described("BEGIN"));
        h.send(&described(set));
        h.client_tags();
        let stmt = format!("SELECT * FROM t WHERE tenant_id = {t}");
        h.send(&described(&stmt));
        h.server_turn();
        assert!(h.client_errors().is_empty(), "{t}: {:?}", h.client_errors());
        let sent: Vec<String> = h.servers[shard]
            .log
            .iter()
            .filter(|(m, _)| *m == tag::frontend::QUERY || *m == tag::frontend::PARSE)
            .map(|(m, b)| {
                let body = if *m == tag::frontend::PARSE {
                    cstr(b).1
                } else {
                    &b[..]
                };
                String::from_utf8_lossy(cstr(body).0).into_owned()
            })
            .collect();
        assert_eq!(sent, ["BEGIN", set, stmt.as_str()], "{t} on shard {shard}");
    }
}

#[test]
fn a_server_that_reports_too_many_parameters_is_dropped() {
    // Probe V: each reported parameter is looked up by name, and a server
    // that reported two hundred thousand stalled its worker thread for
    // seconds. Fifteen is what Postgres reports.
    let mut h = Harness::new("app");
    h.send(&[query("REPORT 100 WHERE tenant_id = 1")]);
    h.server_turn();
    assert!(h.client_errors().is_empty());
    h.send(&[query("REPORT 300 WHERE tenant_id = 1")]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["08006"]);
}

#[test]
fn a_server_that_ends_between_transactions_is_replaced_unseen() {
    // Probe II, then JJ: a backend terminated just as it went idle sent its
    // FATAL in the same read as the ReadyForQuery. Passed on, libpq took it
    // for a notice and the client's next statement failed with no SQLSTATE.
    // No work of the client's ran there: the server is closed at its
    // release, unseen, and the next transaction gets another.
    let mut h = Harness::new("app");
    h.send(&[query("SELECT GOODBYE WHERE tenant_id = 1")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZI");
    assert_eq!(h.releases, 1);
    assert!(h.closed.is_none(), "{:?}", h.closed);
    let shard = h
        .core
        .db()
        .routing
        .as_ref()
        .unwrap()
        .map
        .route(&tenant("1"))
        .unwrap()
        .shard;
    assert!(
        h.states[shard].as_ref().is_some_and(|s| s.broken),
        "a server that ended kept"
    );
    h.send(&[query("SELECT 2 WHERE tenant_id = 1")]);
    h.server_turn();
    assert_eq!((h.client_tags().as_str(), h.attaches), ("DCZI", 2));
}

#[test]
fn a_server_that_ends_inside_a_transaction_or_a_session_ends_the_session_with_its_error() {
    // Its FATAL is the client's one error (probe GG), and the session ends
    // at once (probe II: a release went on behind it).
    for (db, sql) in [
        ("app", "BEGIN; SELECT GOODBYE WHERE tenant_id = 1"),
        ("sess", "SELECT GOODBYE"),
    ] {
        let mut h = Harness::new(db);
        h.send(&[query(sql)]);
        h.server_turn();
        assert_eq!(h.client_errors(), ["57P01"], "{db}");
        assert_eq!(
            h.releases, 0,
            "{db}: a server that ended went back to the pool"
        );
        assert!(
            h.closed.is_some(),
            "{db}: the session went on after the server's FATAL"
        );
    }
}

#[test]
fn a_session_whose_settings_cannot_follow_it_is_told_at_its_next_message() {
    // Probe JJ: the 08006 sent behind the ReadyForQuery the client already
    // had was taken by libpq for a notice, and the client's next statement
    // failed with no SQLSTATE. It answers the next message instead.
    let mut h = Harness::new("app");
    h.read_back_fails = true;
    h.send(&[query("SET work_mem = '2MB'; SELECT 1 WHERE tenant_id = 1")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCDCZI");
    assert!(h.closed.is_none());
    h.send(&[query("SELECT 2 WHERE tenant_id = 1")]);
    assert_eq!(h.client_errors(), ["08006"]);
    assert!(h.closed.is_some());
    assert_eq!(h.attaches, 1, "the next statement reached a server");
}

#[test]
fn a_copy_the_router_did_not_read_gets_no_data_and_ends_the_session() {
    // The scripted server starts a COPY FROM STDIN for any text that begins
    // with COPY: `COPY (..) TO STDOUT` stands for a statement the router
    // reads as no COPY FROM STDIN (in Postgres: an SQL EXECUTE of a COPY
    // prepared through the protocol).
    let mut h = Harness::new("app");
    h.send(&[
        query("COPY (SELECT 1) TO STDOUT /* tenant_id=1 */"),
        frame(tag::frontend::COPY_DATA, b"42\n"),
        frame(tag::frontend::COPY_DONE, b""),
    ]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["0A000"]);
    assert!(h.closed.is_some());
    let kinds: Vec<u8> = h.servers.iter().flat_map(|s| &s.log).map(|m| m.0).collect();
    assert_eq!(kinds, [tag::frontend::QUERY], "the server got the data");
    // A COPY the router reads gets its data.
    let mut h = Harness::new("app");
    h.send(&[
        query("COPY t (a) FROM STDIN /* tenant_id=1 */"),
        frame(tag::frontend::COPY_DATA, b"42\n"),
        frame(tag::frontend::COPY_DONE, b""),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "GCZI");
}
